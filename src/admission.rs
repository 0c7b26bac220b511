//! --max-connections: every TCP connection, on every core, counts against
//! one limit while it is open, so that a full engine answers 503 instead of
//! running out of descriptors. Touched on accept and close only.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The count of open TCP connections and its limit.
pub struct Admissions {
    open: AtomicUsize,
    max: usize,
}

/// A connection counted against the limit until dropped.
pub struct Admission(Arc<Admissions>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admissions {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Admissions {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Counts a new connection in, or says no when the limit is reached.
    pub fn admit(self: &Arc<Self>) -> Option<Admission> {
        let admitted = self.open.fetch_add(1, Ordering::Relaxed) < self.max;
        // Counted either way: a refused connection's admission is dropped
        // at once, and the count goes back.
        let admission = Admission(self.clone());
        admitted.then_some(admission)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_goes_back_when_admissions_are_dropped_or_refused() {
        let admissions = Admissions::new(2);
        let first = admissions.admit().expect("under the limit");
        let second = admissions.admit().expect("at the limit");
        assert!(admissions.admit().is_none(), "beyond the limit");
        assert_eq!(admissions.open.load(Ordering::Relaxed), 2);
        drop(first);
        let third = admissions.admit().expect("a place was freed");
        drop((second, third));
        assert_eq!(admissions.open.load(Ordering::Relaxed), 0);
    }
}
