//! The durable on-disk buffer: every reading is written here before the agent
//! counts it as taken, and deleted only when the server acknowledged it.
//!
//! One SQLite file (rusqlite, WAL, `synchronous=FULL`; why: ADR 0004) with
//! three tables:
//!
//! - `readings`: one row per unacknowledged reading, in `id` (= arrival) order.
//!   `seq` is NULL until the row goes out in a batch; the server's ack deletes
//!   the rows of that seq. `bytes` is the row's accounted size.
//! - `meta`: durable counters (`next_seq`, `last_acked_seq`, `thinned_total`,
//!   `dropped_total`, `thinned_through_ms`).
//! - `ledger` (only with `ledger = true`, for fault tests): every reading ever
//!   appended, written in the same transaction as `readings` and never deleted.
//!
//! The bound is on accounted bytes (key strings + a fixed per-row overhead for
//! the numbers, row header and indexes), checked inside the append
//! transaction. When it is exceeded, [`WhenFull::Thin`] first thins the oldest
//! data to one value per point per `thin_interval` and only then drops the
//! oldest rows; [`WhenFull::DropOldest`] drops straight away. Both are counted.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use protocol::{MAX_READINGS_PER_BATCH, Quality, Reading, ReadingsBatch};
use rusqlite::{Connection, OptionalExtension as _, Transaction, params};
use time::OffsetDateTime;

use crate::uplink::queue::{Appended, BatchQueue, BufferStats, Part, QueueError};

/// Default buffer file (the systemd unit's `StateDirectory=homecontrol`).
pub const DEFAULT_PATH: &str = "/var/lib/homecontrol/agent-buffer.db";
/// Default bound: 256 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Default thinning interval.
pub const DEFAULT_THIN_INTERVAL: Duration = Duration::from_secs(60);
/// Accounted bytes of a row beyond its strings: id, ts, value, quality, seq,
/// the record header and the two index entries.
pub const ROW_OVERHEAD_BYTES: u64 = 64;
/// Raw rows considered by one thinning round (at least; more on big buffers).
const THIN_ROUND_ROWS: i64 = 4096;

/// What to do when an append would exceed `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Thin the oldest data to one value per point per interval, then drop.
    #[default]
    Thin,
    /// Drop the oldest readings.
    DropOldest,
}

/// The `[buffer]` table of the agent config.
#[derive(Debug, Clone, PartialEq)]
pub struct BufferConfig {
    /// The SQLite file; its directory is created if missing.
    pub path: PathBuf,
    /// Bound on accounted bytes of stored readings.
    pub max_bytes: u64,
    /// Policy when full.
    pub when_full: WhenFull,
    /// Thinning keeps one value per point per this interval.
    pub thin_interval: Duration,
    /// TESTS ONLY: also keep every reading forever in table `ledger`.
    pub ledger: bool,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            path: PathBuf::from(DEFAULT_PATH),
            max_bytes: DEFAULT_MAX_BYTES,
            when_full: WhenFull::Thin,
            thin_interval: DEFAULT_THIN_INTERVAL,
            ledger: false,
        }
    }
}

impl BufferConfig {
    /// Defaults with the file at `path` (tests, demo).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        BufferConfig {
            path: path.into(),
            ..BufferConfig::default()
        }
    }
}

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: a returned append survives power loss (production).
    Full,
    /// `synchronous=OFF`: benchmark baseline only.
    Off,
}

/// Why the buffer could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// The directory could not be created.
    #[error("cannot create the buffer directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// SQLite refused to open or set up the file.
    #[error("cannot open the buffer {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
}

impl From<rusqlite::Error> for QueueError {
    fn from(e: rusqlite::Error) -> Self {
        QueueError(e.to_string())
    }
}

/// In-memory mirror of durable state, replaced only after a commit.
#[derive(Debug, Clone, Default)]
struct State {
    rows: u64,
    bytes: u64,
    next_seq: u64,
    last_acked_seq: Option<u64>,
    thinned_total: u64,
    dropped_total: u64,
    thinned_through_ms: i64,
}

/// The SQLite-backed [`BatchQueue`].
#[derive(Debug)]
pub struct Buffer {
    conn: Connection,
    cfg: BufferConfig,
    state: State,
    /// Rows with `id <= backlog_end` were stored before the current session.
    backlog_end: i64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS readings(
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    point TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    value REAL NOT NULL,
    unit TEXT NOT NULL,
    quality INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    seq INTEGER
);
CREATE INDEX IF NOT EXISTS readings_by_seq ON readings(seq) WHERE seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS readings_by_ts ON readings(ts_ms);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

const LEDGER_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ledger(
    device TEXT NOT NULL,
    point TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY(device, point, ts_ms)
);
";

fn ts_ms(ts: OffsetDateTime) -> i64 {
    i64::try_from(ts.unix_timestamp_nanos().div_euclid(1_000_000)).unwrap_or(i64::MAX)
}

fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn row_bytes(r: &Reading) -> u64 {
    (r.device.len() + r.point.len() + r.unit.len()) as u64 + ROW_OVERHEAD_BYTES
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn get_meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

fn set_meta(tx: &Transaction<'_>, key: &str, value: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")?
        .execute(params![key, value])?;
    Ok(())
}

/// Count and bytes of the rows matching `filter` (a WHERE clause), then delete them.
fn delete_counted(
    tx: &Transaction<'_>,
    filter: &str,
    p: impl rusqlite::Params + Clone,
) -> rusqlite::Result<(u64, u64)> {
    let (n, b): (i64, i64) = tx.query_row(
        &format!("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM readings WHERE {filter}"),
        p.clone(),
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if n > 0 {
        tx.execute(&format!("DELETE FROM readings WHERE {filter}"), p)?;
    }
    Ok((to_u64(n), to_u64(b)))
}

fn read_reading(r: &rusqlite::Row<'_>) -> rusqlite::Result<Reading> {
    Ok(Reading {
        device: r.get(0)?,
        point: r.get(1)?,
        ts: from_ms(r.get(2)?),
        value: r.get(3)?,
        unit: r.get(4)?,
        quality: Quality::from_i16(r.get(5)?),
    })
}

impl Buffer {
    /// Open (or create) the buffer at `cfg.path`, durable (`synchronous=FULL`).
    pub fn open(cfg: BufferConfig) -> Result<Buffer, BufferError> {
        Buffer::open_with(cfg, Durability::Full)
    }

    /// Open with an explicit durability (benchmarks compare the two).
    pub fn open_with(cfg: BufferConfig, durability: Durability) -> Result<Buffer, BufferError> {
        if let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| BufferError::Dir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let path = cfg.path.clone();
        let open = |path: &Path| -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(
                None,
                "synchronous",
                match durability {
                    Durability::Full => "FULL",
                    Durability::Off => "OFF",
                },
            )?;
            conn.busy_timeout(Duration::from_secs(5))?;
            Ok(conn)
        };
        let conn = open(&path).map_err(|source| BufferError::Open {
            path: path.clone(),
            source,
        })?;
        Buffer::init(conn, cfg).map_err(|source| BufferError::Open { path, source })
    }

    /// A buffer in memory (no durability at all): unit tests and the benchmark baseline.
    pub fn open_in_memory(cfg: BufferConfig) -> Result<Buffer, BufferError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| BufferError::Open {
            path: path.clone(),
            source,
        })?;
        Buffer::init(conn, cfg).map_err(|source| BufferError::Open { path, source })
    }

    fn init(conn: Connection, cfg: BufferConfig) -> rusqlite::Result<Buffer> {
        conn.execute_batch(SCHEMA)?;
        if cfg.ledger {
            conn.execute_batch(LEDGER_SCHEMA)?;
        }
        let (rows, bytes): (i64, i64) = conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM readings",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let state = State {
            rows: to_u64(rows),
            bytes: to_u64(bytes),
            next_seq: get_meta(&conn, "next_seq")?.map_or(1, to_u64).max(1),
            last_acked_seq: get_meta(&conn, "last_acked_seq")?.map(to_u64),
            thinned_total: get_meta(&conn, "thinned_total")?.map_or(0, to_u64),
            dropped_total: get_meta(&conn, "dropped_total")?.map_or(0, to_u64),
            thinned_through_ms: get_meta(&conn, "thinned_through_ms")?.unwrap_or(i64::MIN),
        };
        Ok(Buffer {
            conn,
            cfg,
            state,
            backlog_end: i64::MAX,
        })
    }

    /// The configuration this buffer runs with.
    pub fn config(&self) -> &BufferConfig {
        &self.cfg
    }

    /// Every stored reading in queue order (tests and tools; reads the whole table).
    pub fn all(&self) -> Result<Vec<Reading>, QueueError> {
        let mut stmt = self.conn.prepare(
            "SELECT device, point, ts_ms, value, unit, quality FROM readings ORDER BY id",
        )?;
        let rows = stmt.query_map([], read_reading)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Thin (then drop) until the accounted bytes fit; counts into `st`.
    fn enforce_bound(
        tx: &Transaction<'_>,
        cfg: &BufferConfig,
        st: &mut State,
    ) -> rusqlite::Result<(u64, u64)> {
        let (mut thinned, mut dropped) = (0, 0);
        let interval = i64::try_from(cfg.thin_interval.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let mut thinning = cfg.when_full == WhenFull::Thin;
        while st.bytes > cfg.max_bytes && st.rows > 0 {
            if thinning {
                match Self::thin_round(tx, st, interval)? {
                    Some((n, b)) => {
                        thinned += n;
                        st.rows -= n;
                        st.bytes -= b;
                        continue;
                    }
                    None => thinning = false,
                }
            }
            let excess = st.bytes - cfg.max_bytes;
            let avg = (st.bytes / st.rows).max(1);
            let n = to_i64(excess.div_ceil(avg).max(1));
            let (n, b) = delete_counted(
                tx,
                "id IN (SELECT id FROM readings ORDER BY id LIMIT ?1)",
                [n],
            )?;
            if n == 0 {
                break;
            }
            dropped += n;
            st.rows -= n;
            st.bytes -= b;
        }
        if thinned > 0 {
            st.thinned_total += thinned;
            set_meta(tx, "thinned_total", to_i64(st.thinned_total))?;
            set_meta(tx, "thinned_through_ms", st.thinned_through_ms)?;
        }
        if dropped > 0 {
            st.dropped_total += dropped;
            set_meta(tx, "dropped_total", to_i64(st.dropped_total))?;
        }
        Ok((thinned, dropped))
    }

    /// Thin the oldest not-yet-thinned time range (whole intervals, so a
    /// bucket is never split between rounds). `None` when nothing is left.
    fn thin_round(
        tx: &Transaction<'_>,
        st: &mut State,
        interval: i64,
    ) -> rusqlite::Result<Option<(u64, u64)>> {
        let from = st.thinned_through_ms;
        let k = THIN_ROUND_ROWS.max(to_i64(st.rows / 8));
        let kth: Option<i64> = tx
            .query_row(
                "SELECT ts_ms FROM readings WHERE ts_ms >= ?1 ORDER BY ts_ms LIMIT 1 OFFSET ?2",
                params![from, k - 1],
                |r| r.get(0),
            )
            .optional()?;
        let last = match kth {
            Some(t) => Some(t),
            None => tx.query_row(
                "SELECT MAX(ts_ms) FROM readings WHERE ts_ms >= ?1",
                [from],
                |r| r.get::<_, Option<i64>>(0),
            )?,
        };
        let Some(last) = last else {
            return Ok(None);
        };
        let cut = (last.div_euclid(interval) + 1).saturating_mul(interval);
        let freed = delete_counted(
            tx,
            "ts_ms >= ?1 AND ts_ms < ?2 AND id NOT IN (
                SELECT MIN(id) FROM readings WHERE ts_ms >= ?1 AND ts_ms < ?2
                GROUP BY device, point, ts_ms / ?3)",
            params![from, cut, interval],
        )?;
        st.thinned_through_ms = cut;
        Ok(Some(freed))
    }

    fn bump_seq(tx: &Transaction<'_>, st: &mut State) -> rusqlite::Result<u64> {
        let seq = st.next_seq;
        st.next_seq += 1;
        set_meta(tx, "next_seq", to_i64(st.next_seq))?;
        Ok(seq)
    }
}

impl BatchQueue for Buffer {
    fn append(&mut self, readings: &[Reading]) -> Result<Appended, QueueError> {
        // SQLite stores NaN as NULL, which would fail the whole poll's
        // transaction; the server skips non-finite values anyway.
        let finite: Vec<&Reading> = readings.iter().filter(|r| r.value.is_finite()).collect();
        if finite.len() < readings.len() {
            tracing::debug!(
                skipped = readings.len() - finite.len(),
                "non-finite readings not buffered"
            );
        }
        if finite.is_empty() {
            return Ok(Appended::default());
        }
        let mut st = self.state.clone();
        let tx = self.conn.transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO readings(device, point, ts_ms, value, unit, quality, bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut ledger = if self.cfg.ledger {
                Some(tx.prepare_cached(
                    "INSERT OR IGNORE INTO ledger(device, point, ts_ms, value) VALUES (?1, ?2, ?3, ?4)",
                )?)
            } else {
                None
            };
            for r in &finite {
                let ts = ts_ms(r.ts);
                let bytes = row_bytes(r);
                ins.execute(params![
                    r.device,
                    r.point,
                    ts,
                    r.value,
                    r.unit,
                    r.quality.as_i16(),
                    to_i64(bytes)
                ])?;
                if let Some(l) = ledger.as_mut() {
                    l.execute(params![r.device, r.point, ts, r.value])?;
                }
                st.rows += 1;
                st.bytes += bytes;
            }
        }
        let (thinned, dropped) = Self::enforce_bound(&tx, &self.cfg, &mut st)?;
        tx.commit()?;
        self.state = st;
        Ok(Appended {
            stored: finite.len(),
            thinned,
            dropped,
        })
    }

    fn begin_session(&mut self, last_acked: Option<u64>) -> Result<u64, QueueError> {
        let mut st = self.state.clone();
        let tx = self.conn.transaction()?;
        if let Some(up_to) = last_acked {
            let (n, b) = delete_counted(&tx, "seq IS NOT NULL AND seq <= ?1", [to_i64(up_to)])?;
            st.rows -= n;
            st.bytes -= b;
            if st.last_acked_seq.is_none_or(|s| s < up_to) {
                st.last_acked_seq = Some(up_to);
                set_meta(&tx, "last_acked_seq", to_i64(up_to))?;
            }
            // Never hand out a seq the server has already seen as committed.
            if st.next_seq <= up_to {
                st.next_seq = up_to + 1;
                set_meta(&tx, "next_seq", to_i64(st.next_seq))?;
            }
        }
        tx.execute("UPDATE readings SET seq = NULL WHERE seq IS NOT NULL", [])?;
        let end: Option<i64> = tx.query_row("SELECT MAX(id) FROM readings", [], |r| r.get(0))?;
        tx.commit()?;
        self.state = st;
        self.backlog_end = end.unwrap_or(0);
        Ok(self.state.rows)
    }

    fn latest_per_point(&mut self) -> Result<Option<ReadingsBatch>, QueueError> {
        let readings: Vec<Reading> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT device, point, ts_ms, value, unit, quality FROM readings
                 WHERE id IN (SELECT MAX(id) FROM readings GROUP BY device, point)
                 ORDER BY id LIMIT ?1",
            )?;
            stmt.query_map([to_i64(MAX_READINGS_PER_BATCH as u64)], read_reading)?
                .collect::<Result<_, _>>()?
        };
        if readings.is_empty() {
            return Ok(None);
        }
        let mut st = self.state.clone();
        let tx = self.conn.transaction()?;
        let seq = Self::bump_seq(&tx, &mut st)?;
        tx.commit()?;
        self.state = st;
        Ok(Some(ReadingsBatch { seq, readings }))
    }

    fn take(&mut self, part: Part, limit: usize) -> Result<Option<ReadingsBatch>, QueueError> {
        let limit = to_i64(limit.clamp(1, MAX_READINGS_PER_BATCH) as u64);
        let range = match part {
            Part::Backlog => "id <= ?2",
            Part::Live => "id > ?2",
        };
        let mut st = self.state.clone();
        let tx = self.conn.transaction()?;
        let seq = Self::bump_seq(&tx, &mut st)?;
        let n = tx.execute(
            &format!(
                "UPDATE readings SET seq = ?1 WHERE id IN (
                    SELECT id FROM readings WHERE seq IS NULL AND {range} ORDER BY id LIMIT ?3)"
            ),
            params![to_i64(seq), self.backlog_end, limit],
        )?;
        if n == 0 {
            // Nothing to send: roll back, the seq stays unused.
            return Ok(None);
        }
        let readings: Vec<Reading> = {
            let mut stmt = tx.prepare_cached(
                "SELECT device, point, ts_ms, value, unit, quality FROM readings WHERE seq = ?1 ORDER BY id",
            )?;
            stmt.query_map([to_i64(seq)], read_reading)?
                .collect::<Result<_, _>>()?
        };
        tx.commit()?;
        self.state = st;
        Ok(Some(ReadingsBatch { seq, readings }))
    }

    fn ack(&mut self, seq: u64) -> Result<(), QueueError> {
        let mut st = self.state.clone();
        let tx = self.conn.transaction()?;
        let (n, b) = delete_counted(&tx, "seq = ?1", [to_i64(seq)])?;
        st.rows -= n;
        st.bytes -= b;
        if st.last_acked_seq.is_none_or(|s| s < seq) {
            st.last_acked_seq = Some(seq);
            set_meta(&tx, "last_acked_seq", to_i64(seq))?;
        }
        tx.commit()?;
        self.state = st;
        Ok(())
    }

    fn release(&mut self, seq: u64) -> Result<(), QueueError> {
        self.conn.execute(
            "UPDATE readings SET seq = NULL WHERE seq = ?1",
            [to_i64(seq)],
        )?;
        Ok(())
    }

    fn stats(&self) -> Result<BufferStats, QueueError> {
        let oldest: Option<i64> =
            self.conn
                .query_row("SELECT MIN(ts_ms) FROM readings", [], |r| r.get(0))?;
        Ok(BufferStats {
            readings: self.state.rows,
            bytes: self.state.bytes,
            oldest_ts_ms: oldest,
            thinned_total: self.state.thinned_total,
            dropped_total: self.state.dropped_total,
            last_acked_seq: self.state.last_acked_seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rd(device: &str, point: &str, ts_s: i64, value: f64) -> Reading {
        Reading {
            device: device.into(),
            point: point.into(),
            ts: from_ms(ts_s * 1000),
            value,
            unit: "degC".into(),
            quality: Quality::Good,
        }
    }

    fn r(v: i64) -> Reading {
        rd("hp", "t", v, v as f64)
    }

    fn values(b: &ReadingsBatch) -> Vec<f64> {
        b.readings.iter().map(|r| r.value).collect()
    }

    fn all_values(b: &Buffer) -> Vec<f64> {
        b.all().unwrap().iter().map(|r| r.value).collect()
    }

    fn file_buffer(dir: &tempfile::TempDir) -> BufferConfig {
        BufferConfig::at(dir.path().join("buffer.db"))
    }

    #[test]
    fn appended_readings_come_back_in_order_and_round_trip_exactly() {
        let mut b = Buffer::open_in_memory(BufferConfig::default()).unwrap();
        let mut x = rd("hp", "p", 1_700_000_000, -12.5);
        x.ts = from_ms(1_700_000_000_123);
        x.quality = Quality::Stale;
        b.append(&[x.clone(), r(2)]).unwrap();
        b.append(&[r(3)]).unwrap();
        let batch = b.take(Part::Backlog, 10).unwrap().unwrap();
        assert_eq!(batch.readings[0], x);
        assert_eq!(values(&batch), vec![-12.5, 2.0, 3.0]);
        assert!(b.take(Part::Backlog, 10).unwrap().is_none(), "all taken");
    }

    #[test]
    fn an_ack_deletes_only_the_readings_of_that_batch() {
        let mut b = Buffer::open_in_memory(BufferConfig::default()).unwrap();
        b.append(&(0..6).map(r).collect::<Vec<_>>()).unwrap();
        let one = b.take(Part::Backlog, 2).unwrap().unwrap();
        let two = b.take(Part::Backlog, 2).unwrap().unwrap();
        assert_eq!((one.seq, two.seq), (1, 2));
        b.ack(two.seq).unwrap();
        b.ack(two.seq).unwrap();
        b.ack(99).unwrap();
        assert_eq!(all_values(&b), vec![0.0, 1.0, 4.0, 5.0]);
        assert_eq!(b.stats().unwrap().readings, 4);
        assert_eq!(b.stats().unwrap().last_acked_seq, Some(99));
    }

    #[test]
    fn released_readings_are_sent_again_first_under_a_new_seq() {
        let mut b = Buffer::open_in_memory(BufferConfig::default()).unwrap();
        b.append(&(0..4).map(r).collect::<Vec<_>>()).unwrap();
        let one = b.take(Part::Backlog, 2).unwrap().unwrap();
        b.take(Part::Backlog, 2).unwrap().unwrap();
        b.release(one.seq).unwrap();
        let again = b.take(Part::Backlog, 10).unwrap().unwrap();
        assert_eq!((again.seq, values(&again)), (3, vec![0.0, 1.0]));
    }

    #[test]
    fn seqs_and_unacked_readings_survive_a_reopen_and_resend_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut b = Buffer::open(file_buffer(&dir)).unwrap();
            b.append(&(0..6).map(r).collect::<Vec<_>>()).unwrap();
            let one = b.take(Part::Backlog, 2).unwrap().unwrap();
            b.take(Part::Backlog, 2).unwrap().unwrap();
            b.ack(one.seq).unwrap();
        }
        let mut b = Buffer::open(file_buffer(&dir)).unwrap();
        assert_eq!(b.begin_session(None).unwrap(), 4);
        let next = b.take(Part::Backlog, 10).unwrap().unwrap();
        assert_eq!(next.seq, 3, "the counter continues after a restart");
        assert_eq!(values(&next), vec![2.0, 3.0, 4.0, 5.0]);
        assert_eq!(b.stats().unwrap().last_acked_seq, Some(1));
    }

    #[test]
    fn begin_session_prunes_what_the_server_has_and_releases_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut b = Buffer::open(file_buffer(&dir)).unwrap();
            b.append(&(0..6).map(r).collect::<Vec<_>>()).unwrap();
            for _ in 0..3 {
                b.take(Part::Backlog, 2).unwrap().unwrap();
            }
        }
        let mut b = Buffer::open(file_buffer(&dir)).unwrap();
        assert_eq!(b.begin_session(Some(2)).unwrap(), 2);
        b.append(&[r(6)]).unwrap();
        let backlog = b.take(Part::Backlog, 10).unwrap().unwrap();
        assert_eq!((backlog.seq, values(&backlog)), (4, vec![4.0, 5.0]));
        let live = b.take(Part::Live, 10).unwrap().unwrap();
        assert_eq!(values(&live), vec![6.0]);
    }

    #[test]
    fn a_server_ahead_of_the_local_counter_pushes_the_next_seq_above_it() {
        let mut b = Buffer::open_in_memory(BufferConfig::default()).unwrap();
        b.begin_session(Some(41)).unwrap();
        b.append(&[r(1)]).unwrap();
        assert_eq!(b.take(Part::Live, 1).unwrap().unwrap().seq, 42);
    }

    #[test]
    fn latest_per_point_holds_the_newest_value_of_each_point_and_keeps_the_rows() {
        let mut b = Buffer::open_in_memory(BufferConfig::default()).unwrap();
        b.append(&[rd("hp", "a", 1, 1.0), rd("hp", "b", 1, 2.0)])
            .unwrap();
        b.append(&[rd("hp", "a", 2, 3.0), rd("gw", "a", 2, 4.0)])
            .unwrap();
        let latest = b.latest_per_point().unwrap().unwrap();
        assert_eq!(values(&latest), vec![2.0, 3.0, 4.0]);
        b.ack(latest.seq).unwrap();
        assert_eq!(b.stats().unwrap().readings, 4);
    }

    /// 10 points polled every 5 s for `minutes`, timestamps from 0.
    fn polls(minutes: i64) -> Vec<Vec<Reading>> {
        (0..minutes * 12)
            .map(|i| {
                (0..10)
                    .map(|p| rd("hp", &format!("p{p}"), i * 5, (i * 5) as f64))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_full_buffer_thins_the_oldest_data_to_one_value_per_point_per_interval() {
        let row = row_bytes(&rd("hp", "p0", 0, 0.0));
        let mut b = Buffer::open_in_memory(BufferConfig {
            max_bytes: 5_000 * row,
            ..BufferConfig::default()
        })
        .unwrap();
        let mut thinned = 0;
        for poll in polls(60) {
            let a = b.append(&poll).unwrap();
            thinned += a.thinned;
            assert_eq!(a.dropped, 0);
        }
        let st = b.stats().unwrap();
        assert!(st.bytes <= 5_000 * row);
        assert_eq!(st.thinned_total, thinned);
        assert_eq!(
            st.readings + thinned,
            60 * 12 * 10,
            "every reading is either kept or counted"
        );
        assert!(thinned > 0);
        // Thinned minutes hold exactly one value per point; nothing is lost in between.
        let all = b.all().unwrap();
        let mut per: std::collections::BTreeMap<(String, i64), usize> = Default::default();
        for x in &all {
            *per.entry((x.point.clone(), x.ts.unix_timestamp() / 60))
                .or_default() += 1;
        }
        for minute in 0..60 {
            let counts: Vec<usize> = (0..10).map(|p| per[&(format!("p{p}"), minute)]).collect();
            assert!(
                counts.iter().all(|&c| c == 1) || counts.iter().all(|&c| c == 12),
                "minute {minute}: {counts:?}"
            );
        }
        assert_eq!(
            per[&("p0".to_owned(), 0)],
            1,
            "the oldest minute is thinned"
        );
        assert_eq!(per[&("p0".to_owned(), 59)], 12, "the newest minute is raw");
    }

    #[test]
    fn thinning_gives_way_to_dropping_the_oldest_when_thin_is_not_enough() {
        let row = row_bytes(&rd("hp", "p0", 0, 0.0));
        let mut b = Buffer::open_in_memory(BufferConfig {
            max_bytes: 200 * row,
            ..BufferConfig::default()
        })
        .unwrap();
        for poll in polls(60) {
            b.append(&poll).unwrap();
        }
        let st = b.stats().unwrap();
        assert!(st.thinned_total > 0 && st.dropped_total > 0, "{st:?}");
        assert_eq!(st.readings + st.thinned_total + st.dropped_total, 7_200);
        assert!(st.bytes <= 200 * row);
        let newest = b.all().unwrap().last().unwrap().value;
        assert_eq!(newest, 59.0 * 60.0 + 55.0, "the newest reading is kept");
    }

    #[test]
    fn drop_oldest_drops_and_counts_and_the_counters_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let row = row_bytes(&r(0));
        let cfg = BufferConfig {
            max_bytes: 100 * row,
            when_full: WhenFull::DropOldest,
            ..file_buffer(&dir)
        };
        {
            let mut b = Buffer::open(cfg.clone()).unwrap();
            for i in 0..150 {
                b.append(&[r(i)]).unwrap();
            }
            let st = b.stats().unwrap();
            assert_eq!(
                (st.readings, st.dropped_total, st.thinned_total),
                (100, 50, 0)
            );
        }
        let b = Buffer::open(cfg).unwrap();
        let st = b.stats().unwrap();
        assert_eq!((st.readings, st.dropped_total), (100, 50));
        assert_eq!(all_values(&b)[0], 50.0);
    }

    #[test]
    fn the_ledger_keeps_every_reading_even_after_acks_and_thinning() {
        let row = row_bytes(&rd("hp", "p0", 0, 0.0));
        let mut b = Buffer::open_in_memory(BufferConfig {
            max_bytes: 300 * row,
            ledger: true,
            ..BufferConfig::default()
        })
        .unwrap();
        for poll in polls(10) {
            b.append(&poll).unwrap();
        }
        let batch = b.take(Part::Backlog, 50).unwrap().unwrap();
        b.ack(batch.seq).unwrap();
        let n: i64 = b
            .conn
            .query_row("SELECT COUNT(*) FROM ledger", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1_200);
    }

    #[test]
    fn the_ledger_is_written_in_the_same_transaction_as_the_buffer() {
        let mut b = Buffer::open_in_memory(BufferConfig {
            ledger: true,
            ..BufferConfig::default()
        })
        .unwrap();
        // Make the buffer insert fail on the second reading of an append.
        b.conn
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON readings WHEN NEW.value = 13
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        b.append(&[r(1)]).unwrap();
        assert!(b.append(&[r(2), r(13)]).is_err());
        let ledger: Vec<f64> = b
            .conn
            .prepare("SELECT value FROM ledger ORDER BY ts_ms")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ledger, vec![1.0], "the failed append left no ledger rows");
        assert_eq!(all_values(&b), vec![1.0]);
        assert_eq!(b.stats().unwrap().readings, 1);
    }

    #[test]
    fn non_finite_values_are_skipped_not_allowed_to_fail_the_poll() {
        let mut b = Buffer::open_in_memory(BufferConfig::default()).unwrap();
        let a = b.append(&[r(1), rd("hp", "t", 2, f64::NAN)]).unwrap();
        assert_eq!(a.stored, 1);
        assert_eq!(all_values(&b), vec![1.0]);
    }
}
