//! Giving freed memory back to the OS: mimalloc (the engine's allocator)
//! keeps what a thread frees until that thread allocates or collects
//! again, which an idle worker never does.

use std::time::Duration;

/// `mi_option_purge_delay` in mimalloc.h: 15 in both v2 and v3 (v3 is what
/// libmimalloc-sys builds by default; the crate names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps a page freed inside its segments before giving
/// it back to the OS, ms (mimalloc's own default, set here so that it is a
/// choice). Not 0: the hub answers each message from a buffer it frees once
/// sent, and when that buffer sits alone on a page, purging at once gives
/// the page back (madvise) on every free and faults it in again on the next
/// message. Measured on one worker, 30 connections of 1 KiB MessagePack
/// invocations after a run of 16 KiB ones: 284 000 → 245 000 msgs/s with 0,
/// a tenth of the engine's CPU in page faults and madvise; 300 000 before
/// and after with 10. The collections below return idle memory all the
/// same: 445–787 B per idle io-uring connection (median 472, 10 000
/// connections) with 10, against 623–755 B (median 675) with 0.
const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// Keeps this process off transparent huge pages unless `allowed`
/// (--transparent-huge-pages). mimalloc madvises MADV_HUGEPAGE on its
/// arenas, so even under the kernel's "madvise" mode a 2 MiB page stays
/// resident for a few live bytes, and khugepaged collapses sparse ranges
/// back into huge pages: resident memory then says more about the kernel's
/// timing than about the engine (the soak's memory after 10 000 connections
/// closed: 44 MiB in one run, 60 MiB in the next). The prctl covers every
/// mapping, those made before it included, at their next fault.
pub fn transparent_huge_pages(allowed: bool) {
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(!allowed) {
        tracing::warn!("could not set transparent huge pages for the engine: {e}");
    }
}

/// Sets mimalloc's purge delay ([`PURGE_DELAY_MS`]), once at start.
pub fn set_purge_delay() {
    // SAFETY: sets a process-wide mimalloc option; any thread may.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

/// mimalloc returns freed memory to the OS lazily, during the same thread's
/// later allocations; a worker whose connections all closed makes none, and
/// its resident memory would stay at its peak. A collection once a second
/// (nothing to do costs next to nothing) lets it fall back: the soak test saw
/// 46.7 MiB stay resident after 2 000 connections closed without this.
pub async fn return_free_memory() {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        collect_freed_memory();
    }
}

/// Lets mimalloc return what this thread freed (see return_free_memory).
pub fn collect_freed_memory() {
    // SAFETY: collects this thread's own mimalloc heap.
    unsafe { libmimalloc_sys::mi_collect(false) };
}
