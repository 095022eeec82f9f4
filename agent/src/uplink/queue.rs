//! Store-and-forward of readings batches until the server acknowledges them.
//!
//! [`BatchQueue`] is the seam: this milestone ships the bounded in-memory
//! [`MemoryQueue`]; a durable on-disk queue (rusqlite, see stack-notes §6)
//! replaces it later without touching the session. Implementations assign the
//! batch `seq` themselves because only a durable store can keep it monotonic
//! across restarts.

use std::collections::VecDeque;

use protocol::{Reading, ReadingsBatch};

/// A queue failure (only durable implementations can fail).
#[derive(Debug, thiserror::Error)]
#[error("batch queue: {0}")]
pub struct QueueError(pub String);

/// What [`BatchQueue::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The new batch's sequence number.
    pub seq: u64,
    /// Readings of older batches dropped to stay within the bound.
    pub dropped_readings: usize,
}

/// Unacknowledged readings batches, oldest first.
pub trait BatchQueue: Send {
    /// Store `readings` as a new batch with the next `seq`.
    fn push(&mut self, readings: Vec<Reading>) -> Result<Pushed, QueueError>;
    /// The server committed `seq`; forget it. Unknown seqs are ignored (acks are idempotent).
    fn ack(&mut self, seq: u64);
    /// Forget every batch with `seq <= up_to` (from `Welcome.last_acked_seq`).
    fn ack_up_to(&mut self, up_to: u64);
    /// Up to `limit` of the oldest unacknowledged batches, in `seq` order.
    fn oldest(&self, limit: usize) -> Vec<ReadingsBatch>;
    /// Number of unacknowledged batches.
    fn len(&self) -> usize;
    /// True when nothing waits for an ack.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bounded in-memory queue; loses its content on restart.
#[derive(Debug)]
pub struct MemoryQueue {
    batches: VecDeque<ReadingsBatch>,
    held_readings: usize,
    max_readings: usize,
    next_seq: u64,
}

impl MemoryQueue {
    /// A queue holding at most `max_readings` readings. When full, the oldest
    /// batches are dropped: recent values matter more on a live dashboard.
    /// Sequence numbers start at `first_seq`.
    pub fn new(max_readings: usize, first_seq: u64) -> Self {
        MemoryQueue {
            batches: VecDeque::new(),
            held_readings: 0,
            max_readings: max_readings.max(1),
            next_seq: first_seq.max(1),
        }
    }

    /// A first `seq` that is above any this agent used before a restart, as
    /// long as the clock is sane: milliseconds since the Unix epoch. Without a
    /// durable counter, restarting at 1 would make the server's
    /// `last_acked_seq` swallow fresh batches.
    pub fn clock_seeded_first_seq() -> u64 {
        let ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        u64::try_from(ms).unwrap_or(1)
    }
}

impl BatchQueue for MemoryQueue {
    fn push(&mut self, readings: Vec<Reading>) -> Result<Pushed, QueueError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.held_readings += readings.len();
        self.batches.push_back(ReadingsBatch { seq, readings });
        let mut dropped_readings = 0;
        while self.held_readings > self.max_readings && self.batches.len() > 1 {
            if let Some(old) = self.batches.pop_front() {
                self.held_readings -= old.readings.len();
                dropped_readings += old.readings.len();
            }
        }
        Ok(Pushed {
            seq,
            dropped_readings,
        })
    }

    fn ack(&mut self, seq: u64) {
        if let Some(i) = self.batches.iter().position(|b| b.seq == seq)
            && let Some(b) = self.batches.remove(i)
        {
            self.held_readings -= b.readings.len();
        }
    }

    fn ack_up_to(&mut self, up_to: u64) {
        while self.batches.front().is_some_and(|b| b.seq <= up_to) {
            if let Some(b) = self.batches.pop_front() {
                self.held_readings -= b.readings.len();
            }
        }
    }

    fn oldest(&self, limit: usize) -> Vec<ReadingsBatch> {
        self.batches.iter().take(limit).cloned().collect()
    }

    fn len(&self) -> usize {
        self.batches.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Quality;

    fn readings(n: usize) -> Vec<Reading> {
        (0..n)
            .map(|i| Reading {
                device: "hp".into(),
                point: format!("p{i}"),
                ts: time::OffsetDateTime::UNIX_EPOCH,
                value: 1.0,
                unit: String::new(),
                quality: Quality::Good,
            })
            .collect()
    }

    #[test]
    fn seqs_increase_and_acks_remove_exactly_their_batch() {
        let mut q = MemoryQueue::new(100, 10);
        let a = q.push(readings(1)).unwrap().seq;
        let b = q.push(readings(1)).unwrap().seq;
        assert_eq!((a, b), (10, 11));
        q.ack(a);
        q.ack(a);
        assert_eq!(
            q.oldest(10).iter().map(|b| b.seq).collect::<Vec<_>>(),
            vec![11]
        );
    }

    #[test]
    fn ack_up_to_drops_everything_at_or_below() {
        let mut q = MemoryQueue::new(100, 1);
        for _ in 0..5 {
            q.push(readings(2)).unwrap();
        }
        q.ack_up_to(3);
        assert_eq!(
            q.oldest(10).iter().map(|b| b.seq).collect::<Vec<_>>(),
            vec![4, 5]
        );
    }

    #[test]
    fn a_full_queue_drops_the_oldest_batches_first() {
        let mut q = MemoryQueue::new(5, 1);
        q.push(readings(2)).unwrap();
        q.push(readings(2)).unwrap();
        let p = q.push(readings(2)).unwrap();
        assert_eq!(p.dropped_readings, 2);
        assert_eq!(
            q.oldest(10).iter().map(|b| b.seq).collect::<Vec<_>>(),
            vec![2, 3]
        );
    }

    #[test]
    fn the_clock_seeded_seq_is_far_above_small_counters() {
        assert!(MemoryQueue::clock_seeded_first_seq() > 1_700_000_000_000);
    }
}
