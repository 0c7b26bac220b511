//! Deadlines: a min-heap of (instant, key). The loop sleeps until the
//! earliest; entries are never removed early. A state machine whose deadline
//! moved later simply finds nothing due when its old entry fires, and pushes
//! a new entry only when its deadline moves earlier than the one it has, so
//! the per-message path touches the heap not at all.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

pub struct Timers<K: Ord> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord + Copy> Timers<K> {
    pub fn add(&mut self, at: Instant, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    /// How long the loop may sleep: until the earliest deadline.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((at, _))| at.saturating_duration_since(now))
    }

    /// The next entry due at `now`, removed.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Gives back the heap's memory when it holds under half of what it
    /// once did, so a peak of connections does not stay resident.
    pub fn shrink(&mut self) {
        if self.heap.capacity() > 2 * self.heap.len().max(64) {
            self.heap.shrink_to_fit();
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_entries_come_out_earliest_first_and_only_when_due() {
        let now = Instant::now();
        let mut timers = Timers::default();
        timers.add(now + Duration::from_secs(3), 3u32);
        timers.add(now + Duration::from_secs(1), 1);
        timers.add(now + Duration::from_secs(2), 2);
        assert_eq!(timers.timeout(now), Some(Duration::from_secs(1)));
        assert_eq!(timers.pop_due(now), None);
        let later = now + Duration::from_secs(2);
        assert_eq!(timers.pop_due(later).map(|e| e.1), Some(1));
        assert_eq!(timers.pop_due(later).map(|e| e.1), Some(2));
        assert_eq!(timers.pop_due(later), None);
        assert_eq!(
            timers.timeout(later + Duration::from_secs(5)),
            Some(Duration::ZERO)
        );
    }
}
