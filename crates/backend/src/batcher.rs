//! The batching decisions of the inference thread, as a plain struct with no I/O.
//!
//! Tiles from any number of studies wait in one queue. A batch leaves when it is full, or
//! when the oldest waiting tile has waited `max_wait`, whichever comes first; the thread
//! around this only moves tiles in and batches out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// When to cut a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Largest batch the device takes at once.
    pub max_batch: usize,
    /// Longest a tile waits for company before a partial batch leaves.
    pub max_wait: Duration,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy {
            max_batch: 4,
            max_wait: Duration::from_millis(5),
        }
    }
}

/// Waiting items, oldest first.
#[derive(Debug)]
pub struct BatchState<T> {
    policy: BatchPolicy,
    queue: VecDeque<(Instant, T)>,
}

impl<T> BatchState<T> {
    pub fn new(policy: BatchPolicy) -> Self {
        let max_batch = policy.max_batch.max(1);
        BatchState {
            policy: BatchPolicy {
                max_batch,
                ..policy
            },
            queue: VecDeque::new(),
        }
    }

    /// Queues an item that arrived at `now`.
    pub fn push(&mut self, item: T, now: Instant) {
        self.queue.push_back((now, item));
    }

    /// How many items wait.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// When the oldest item's wait runs out, if anything waits.
    pub fn deadline(&self) -> Option<Instant> {
        self.queue
            .front()
            .map(|(arrived, _)| *arrived + self.policy.max_wait)
    }

    /// The next batch, if one is due at `now`: a full one, or whatever waits once the
    /// oldest item has waited long enough.
    pub fn next_batch(&mut self, now: Instant) -> Option<Vec<T>> {
        let due = self.deadline().is_some_and(|deadline| now >= deadline);
        (self.queue.len() >= self.policy.max_batch || due).then(|| self.take())
    }

    /// Whatever waits, up to a full batch, regardless of time (used when the queue of
    /// incoming work is empty and the device would otherwise idle, and at shutdown).
    pub fn flush(&mut self) -> Option<Vec<T>> {
        (!self.queue.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Vec<T> {
        let n = self.queue.len().min(self.policy.max_batch);
        self.queue.drain(..n).map(|(_, item)| item).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(max_batch: usize, wait_ms: u64) -> BatchState<u32> {
        BatchState::new(BatchPolicy {
            max_batch,
            max_wait: Duration::from_millis(wait_ms),
        })
    }

    #[test]
    fn a_full_batch_leaves_at_once() {
        let mut s = state(3, 100);
        let t = Instant::now();
        for n in 0..4 {
            s.push(n, t);
        }
        assert_eq!(s.next_batch(t), Some(vec![0, 1, 2]));
        assert_eq!(s.next_batch(t), None, "one item left, not yet due");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_partial_batch_waits_until_the_oldest_is_due() {
        let mut s = state(4, 10);
        let t = Instant::now();
        s.push(7, t);
        s.push(8, t + Duration::from_millis(8));
        assert_eq!(s.deadline(), Some(t + Duration::from_millis(10)));
        assert_eq!(s.next_batch(t + Duration::from_millis(9)), None);
        assert_eq!(
            s.next_batch(t + Duration::from_millis(10)),
            Some(vec![7, 8])
        );
        assert!(s.is_empty() && s.deadline().is_none());
    }

    #[test]
    fn tiles_from_different_studies_share_a_batch_in_arrival_order() {
        let mut s: BatchState<(&str, u32)> = BatchState::new(BatchPolicy {
            max_batch: 4,
            max_wait: Duration::from_millis(5),
        });
        let t = Instant::now();
        for item in [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2)] {
            s.push(item, t);
        }
        let batch = s.next_batch(t).unwrap();
        assert_eq!(batch, vec![("a", 0), ("b", 0), ("a", 1), ("b", 1)]);
    }

    #[test]
    fn flush_takes_at_most_one_batch_and_zero_size_means_one() {
        let mut s = state(0, 1000);
        let t = Instant::now();
        s.push(1, t);
        s.push(2, t);
        assert_eq!(s.flush(), Some(vec![1]));
        assert_eq!(s.flush(), Some(vec![2]));
        assert_eq!(s.flush(), None);
    }
}
