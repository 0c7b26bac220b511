//! Provided buffers: one pool per ring that multishot receives fill, so a
//! connection holds receive memory only between a completion and the moment
//! its data was handled.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

use crate::Ring;

/// A ring of `count` buffers of `size` bytes registered as one buffer group.
///
/// Ownership: a buffer is the kernel's while it sits in the ring; a
/// completion naming it hands it to the caller ([`BufRing::take`]); the
/// caller hands it back with [`BufRing::recycle`], once.
pub struct BufRing {
    entries: *mut BufRingEntry,
    memory: *mut u8,
    count: u16,
    size: usize,
    group: u16,
    tail: Cell<u16>,
    /// Where each buffer was last published: a bundle's buffers are those in
    /// the ring slots after its first one's.
    slot_of: Box<[Cell<u16>]>,
    /// Buffers handed out by completions and not recycled yet.
    held: Cell<usize>,
}

impl BufRing {
    /// Allocates, touches and registers `count` (a power of two, at most
    /// 2^15) buffers of `size` bytes as group `group` of `ring`.
    ///
    /// The memory must outlive the kernel's use of it: call
    /// [`BufRing::unregister`] before dropping the pool while the ring lives.
    pub fn new(ring: &Ring, group: u16, count: u16, size: usize) -> io::Result<BufRing> {
        assert!(count.is_power_of_two() && count <= 1 << 15, "count {count}");
        assert!(size > 0 && size <= u32::MAX as usize);
        let entries_layout = Self::entries_layout(count);
        let memory_layout = Self::memory_layout(count, size);
        // SAFETY: non-zero sizes; freed in Drop with the same layouts.
        let (entries, memory) = unsafe {
            (
                std::alloc::alloc_zeroed(entries_layout).cast::<BufRingEntry>(),
                std::alloc::alloc(memory_layout),
            )
        };
        if entries.is_null() || memory.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        // Touched now: the pool is a fixed cost of the core, resident from
        // the start rather than faulted in page by page inside receives.
        // SAFETY: `memory` holds memory_layout.size() writable bytes.
        unsafe { std::ptr::write_bytes(memory, 0, memory_layout.size()) };
        let pool = BufRing {
            entries,
            memory,
            count,
            size,
            group,
            tail: Cell::new(0),
            slot_of: (0..count).map(|_| Cell::new(0)).collect(),
            held: Cell::new(0),
        };
        // SAFETY: page-aligned entries that live until unregister or drop.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, count, group, 0)?;
        }
        for bid in 0..count {
            pool.publish(bid);
        }
        Ok(pool)
    }

    /// Stops the kernel from picking buffers of this pool.
    pub fn unregister(&self, ring: &Ring) {
        let _ = ring.submitter().unregister_buf_ring(self.group);
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn count(&self) -> u16 {
        self.count
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    /// Buffers the kernel can still fill.
    pub fn free(&self) -> usize {
        self.count as usize - self.held.get()
    }

    /// The whole pool, for registering it as a fixed buffer.
    pub fn memory(&self) -> (*mut u8, usize) {
        (self.memory, self.count as usize * self.size)
    }

    /// Whether `len` bytes at `base` lie inside the pool.
    pub fn holds(&self, base: *const u8, len: usize) -> bool {
        let start = self.memory as usize;
        let end = start + self.count as usize * self.size;
        (start..end).contains(&(base as usize)) && base as usize + len <= end
    }

    fn entries_layout(count: u16) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(count as usize * size_of::<BufRingEntry>(), 4096)
            .expect("buffer ring layout")
    }

    fn memory_layout(count: u16, size: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(count as usize * size, 4096).expect("buffer layout")
    }

    /// Buffer `bid`'s memory.
    pub fn ptr(&self, bid: u16) -> *mut u8 {
        assert!(bid < self.count);
        self.memory.wrapping_add(bid as usize * self.size)
    }

    /// Buffer `bid` as a slice.
    ///
    /// # Safety
    /// The caller holds `bid` (a completion handed it over and it was not
    /// recycled), and no other reference to it is alive.
    #[allow(clippy::mut_from_ref)] // the caller's ownership of bid is the exclusivity
    pub unsafe fn slice(&self, bid: u16) -> &mut [u8] {
        // SAFETY: in the pool; exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(bid), self.size) }
    }

    /// Takes over the buffers of a completion that filled `len` bytes
    /// starting with buffer `first`: one, or several for a bundle. Calls `f`
    /// with each buffer and the bytes in it. Must be called once per
    /// completion that names a buffer, before any of its buffers is recycled.
    pub fn take(&self, first: u16, len: usize, mut f: impl FnMut(u16, usize)) {
        let n = len.div_ceil(self.size).max(1);
        let slot = self.slot_of[first as usize].get();
        let mut left = len;
        for i in 0..n as u16 {
            let at = slot.wrapping_add(i) & (self.count - 1);
            // SAFETY: a slot of the ring, inside its allocation.
            let bid = unsafe { (*self.entries.add(at as usize)).bid() };
            let here = left.min(self.size);
            left -= here;
            self.held.set(self.held.get() + 1);
            f(bid, here);
        }
    }

    /// Gives buffer `bid` back to the kernel. The caller must hold it.
    pub fn recycle(&self, bid: u16) {
        debug_assert!(self.held.get() > 0);
        self.held.set(self.held.get() - 1);
        self.publish(bid);
    }

    fn publish(&self, bid: u16) {
        let tail = self.tail.get();
        self.slot_of[bid as usize].set(tail);
        // SAFETY: the slot at the tail is ours until the tail is published.
        unsafe {
            let entry = &mut *self.entries.add((tail & (self.count - 1)) as usize);
            entry.set_addr(self.ptr(bid) as u64);
            entry.set_len(self.size as u32);
            entry.set_bid(bid);
            let shared = BufRingEntry::tail(self.entries) as *mut u16;
            AtomicU16::from_ptr(shared).store(tail.wrapping_add(1), Ordering::Release);
        }
        self.tail.set(tail.wrapping_add(1));
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in new with these layouts.
        unsafe {
            std::alloc::dealloc(self.entries.cast(), Self::entries_layout(self.count));
            std::alloc::dealloc(self.memory, Self::memory_layout(self.count, self.size));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cqe;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    /// A receive into the pool hands over exactly the buffers the kernel
    /// filled, bundled or not, and `free` counts them until recycled.
    #[test]
    fn receives_take_buffers_and_recycling_returns_them() {
        let mut ring = Ring::new(8).unwrap();
        let pool = BufRing::new(&ring, 0, 8, 16).unwrap();
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let sent: Vec<u8> = (0..40u8).collect();
        a.write_all(&sent).unwrap();
        let recv = ring.recv_multi(b.as_raw_fd(), 0, 0).user_data(1);
        // SAFETY: the pool outlives the receive (cancelled below).
        unsafe { ring.push(&recv).unwrap() };
        let mut got = Vec::new();
        let mut held = Vec::new();
        let mut batch = [Cqe::default(); 8];
        while got.len() < sent.len() {
            ring.wait(Some(std::time::Duration::from_secs(5))).unwrap();
            let n = ring.reap(&mut batch);
            for cqe in &batch[..n] {
                let first = cqe.buffer().expect("a buffer");
                pool.take(first, cqe.result as usize, |bid, len| {
                    // SAFETY: just handed over.
                    got.extend_from_slice(&unsafe { pool.slice(bid) }[..len]);
                    held.push(bid);
                });
            }
        }
        assert_eq!(got, sent);
        assert_eq!(pool.free(), 8 - held.len());
        assert!(held.len() >= 3, "40 bytes in 16-byte buffers");
        held.into_iter().for_each(|bid| pool.recycle(bid));
        assert_eq!(pool.free(), 8);
        // SAFETY: a cancel names no memory.
        unsafe { ring.push(&ring.cancel(1, 2)).unwrap() };
        ring.wait(Some(std::time::Duration::from_secs(5))).unwrap();
        pool.unregister(&ring);
    }

    /// A capped multishot receive never fills more than its cap per
    /// completion, bundled or not, and loses nothing.
    #[test]
    fn a_capped_receive_takes_at_most_its_cap_per_completion() {
        let mut ring = Ring::new(8).unwrap();
        let pool = BufRing::new(&ring, 0, 32, 16).unwrap();
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let sent: Vec<u8> = (0..200u8).collect();
        a.write_all(&sent).unwrap();
        let recv = ring.recv_multi(b.as_raw_fd(), 0, 32).user_data(1);
        // SAFETY: the pool outlives the receive (cancelled below).
        unsafe { ring.push(&recv).unwrap() };
        let mut got = Vec::new();
        let mut batch = [Cqe::default(); 8];
        while got.len() < sent.len() {
            ring.wait(Some(std::time::Duration::from_secs(5))).unwrap();
            let n = ring.reap(&mut batch);
            for cqe in &batch[..n] {
                assert!(cqe.result > 0 && cqe.result <= 32, "{cqe:?}");
                assert!(cqe.more(), "still armed: {cqe:?}");
                pool.take(cqe.buffer().unwrap(), cqe.result as usize, |bid, len| {
                    // SAFETY: just handed over.
                    got.extend_from_slice(&unsafe { pool.slice(bid) }[..len]);
                    pool.recycle(bid);
                });
            }
        }
        assert_eq!(got, sent);
        // SAFETY: a cancel names no memory.
        unsafe { ring.push(&ring.cancel(1, 2)).unwrap() };
        ring.wait(Some(std::time::Duration::from_secs(5))).unwrap();
        pool.unregister(&ring);
    }
}
