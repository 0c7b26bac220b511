//! What a session hands its driver to send, and the frame buffers reused
//! across messages once their sends are done.

use std::cell::RefCell;
use std::ops::Range;

/// One piece of output, sent in order with the others of the same batch.
#[derive(Debug)]
pub enum Out {
    /// A frame rewritten in place inside the receive buffer: the echo of a
    /// message that arrived whole in one buffer, sent from that memory.
    Recv(Range<usize>),
    /// A frame in a buffer of its own, sent from `.1` on: reassembled
    /// messages, pings and closes.
    Owned(Vec<u8>, usize),
}

/// At most this many bytes of sent frames are kept per worker for reuse.
const SPARE_BYTES: usize = 4 << 20;
/// Frames smaller than this (pings, closes) are not worth keeping.
const SPARE_MIN: usize = 1024;

thread_local! {
    /// Frames whose sends are done, kept for the next assembled message: a
    /// worker echoing messages larger than its receive buffer then allocates
    /// nothing per message, and does not fault in fresh pages for each (the
    /// allocator returns freed memory to the kernel at once).
    static SPARE: RefCell<(Vec<Vec<u8>>, usize)> = const { RefCell::new((Vec::new(), 0)) };
}

/// An empty buffer for a frame of about `capacity` bytes: a spare one if
/// the worker has one.
pub fn frame_buffer(capacity: usize) -> Vec<u8> {
    let spare = SPARE.with_borrow_mut(|(frames, bytes)| {
        let frame = frames.pop()?;
        *bytes -= frame.capacity();
        Some(frame)
    });
    match spare {
        Some(mut frame) => {
            frame.clear();
            frame.reserve(capacity);
            frame
        }
        None => Vec::with_capacity(capacity),
    }
}

/// Empties `out` after its frames were sent, keeping their buffers for
/// [`frame_buffer`].
pub(crate) fn recycle(out: &mut Vec<Out>) {
    SPARE.with_borrow_mut(|(frames, bytes)| {
        for piece in out.drain(..) {
            if let Out::Owned(frame, _) = piece {
                let size = frame.capacity();
                if size >= SPARE_MIN && *bytes + size <= SPARE_BYTES {
                    *bytes += size;
                    frames.push(frame);
                }
            }
        }
    });
}
