//! Store-and-forward of readings until the server acknowledges them.
//!
//! [`BatchQueue`] is the seam between the session and the storage; the
//! production implementation is the durable [`crate::buffer::Buffer`]
//! (SQLite). Readings are stored one by one as they are taken; a batch `seq` is
//! assigned only when a batch is *sent*, so seqs go out in increasing order on
//! every connection. That matters because the server's `last_acked_seq` is the
//! highest seq it committed: with seqs handed out in send order, every lower seq
//! of the same connection was processed before it, and [`BatchQueue::begin_session`]
//! may safely forget everything at or below it and hand the rest out again
//! under fresh seqs (the server dedupes by `(point, ts)`, so a resend is
//! harmless).

use protocol::{Reading, ReadingsBatch};

/// A queue failure: the storage could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("buffer: {0}")]
pub struct QueueError(pub String);

/// What [`BatchQueue::append`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Appended {
    /// Readings stored.
    pub stored: usize,
    /// Older readings thinned away to stay within the byte bound.
    pub thinned: u64,
    /// Older readings dropped to stay within the byte bound.
    pub dropped: u64,
}

/// Which unsent readings [`BatchQueue::take`] draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Readings stored before the current session began (the outage backlog).
    Backlog,
    /// Readings stored since the current session began.
    Live,
}

/// Counters and depth of the buffer, for `AgentStatus` and metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BufferStats {
    /// Readings stored and not yet acknowledged.
    pub readings: u64,
    /// Accounted bytes of those readings (the bound applies to this).
    pub bytes: u64,
    /// Sample time of the oldest stored reading, in ms since the Unix epoch.
    pub oldest_ts_ms: Option<i64>,
    /// Readings thinned away since the buffer was created.
    pub thinned_total: u64,
    /// Readings dropped since the buffer was created.
    pub dropped_total: u64,
    /// Highest seq the server acknowledged, ever.
    pub last_acked_seq: Option<u64>,
}

/// Unacknowledged readings, oldest first, with durable batch sequence numbers.
pub trait BatchQueue: Send {
    /// Store `readings` durably; when this returns `Ok`, they survive a crash.
    fn append(&mut self, readings: &[Reading]) -> Result<Appended, QueueError>;
    /// A new session was welcomed: forget batches with `seq <= last_acked`,
    /// release every other sent-but-unacknowledged batch for resending, and
    /// mark everything stored so far as backlog. Returns the backlog size.
    fn begin_session(&mut self, last_acked: Option<u64>) -> Result<u64, QueueError>;
    /// The newest reading of every point, as a batch with a fresh seq that
    /// owns no stored rows (its readings stay queued and go out again with the
    /// backlog). `None` when nothing is stored.
    fn latest_per_point(&mut self) -> Result<Option<ReadingsBatch>, QueueError>;
    /// Up to `limit` of the oldest unsent readings of `part`, as a batch with
    /// the next seq. `None` when that part has nothing unsent.
    fn take(&mut self, part: Part, limit: usize) -> Result<Option<ReadingsBatch>, QueueError>;
    /// The server committed `seq`: delete its readings. Unknown seqs are ignored.
    fn ack(&mut self, seq: u64) -> Result<(), QueueError>;
    /// `seq` was not committed: its readings become unsent again.
    fn release(&mut self, seq: u64) -> Result<(), QueueError>;
    /// Current depth and counters.
    fn stats(&self) -> Result<BufferStats, QueueError>;
}
