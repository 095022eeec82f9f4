//! Throughput of the agent's on-disk buffer (`scripts/bench-agent-buffer`).
//!
//! Prints a Markdown table: durable appends (WAL, `synchronous=FULL`, the
//! production setting) at one poll (10 readings) and at one reading per
//! transaction, each next to a `synchronous=OFF` file and an in-memory
//! baseline measured in the same run, as a ratio; and the drain rate (take a
//! 2,000-reading batch + ack it) on a durable file. A plain binary rather than
//! criterion: fsync-bound numbers need few, long iterations, and the ratio to
//! the baseline is what carries across machines. Never used as an assertion.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use agent::{
    buffer::{Buffer, BufferConfig, Durability},
    uplink::queue::{BatchQueue as _, Part},
};
use protocol::{Quality, Reading};

const POINTS: usize = 10;

fn poll(i: usize, n: usize) -> Vec<Reading> {
    (0..n)
        .map(|p| Reading {
            device: "heatpump".into(),
            point: format!("point_{p}"),
            ts: time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(i as i64),
            value: i as f64,
            unit: "degC".into(),
            quality: Quality::Good,
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Store {
    Full,
    Off,
    Memory,
}

fn open(store: Store, dir: &tempfile::TempDir, name: &str) -> Buffer {
    let cfg = BufferConfig::at(dir.path().join(name));
    match store {
        Store::Full => Buffer::open_with(cfg, Durability::Full).unwrap(),
        Store::Off => Buffer::open_with(cfg, Durability::Off).unwrap(),
        Store::Memory => Buffer::open_in_memory(cfg).unwrap(),
    }
}

/// Readings per second appending `per_txn` readings per transaction for about `budget`.
fn appends(store: Store, per_txn: usize, budget: Duration) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut b = open(store, &dir, "append.db");
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < budget || i < 200 {
        b.append(&poll(i, per_txn)).unwrap();
        i += 1;
    }
    (i * per_txn) as f64 / start.elapsed().as_secs_f64()
}

/// Readings per second taken in batches of `batch` and acknowledged, durable.
fn drain(readings: usize, batch: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut fill = open(Store::Off, &dir, "drain.db");
        for i in 0..readings / 1000 {
            fill.append(&poll(i, 1000)).unwrap();
        }
    }
    let mut b = open(Store::Full, &dir, "drain.db");
    b.begin_session(None).unwrap();
    let start = Instant::now();
    let mut n = 0;
    while let Some(batch) = b.take(Part::Backlog, batch).unwrap() {
        n += batch.readings.len();
        b.ack(batch.seq).unwrap();
    }
    assert_eq!(n, readings);
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let budget = Duration::from_secs(
        std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3),
    );
    println!("| measurement | readings/s | vs synchronous=OFF file | vs in-memory |");
    println!("|---|---:|---:|---:|");
    for (label, per_txn) in [
        (
            "durable append, 1 poll (10 readings) per transaction",
            POINTS,
        ),
        ("durable append, 1 reading per transaction", 1),
    ] {
        let full = appends(Store::Full, per_txn, budget);
        let off = appends(Store::Off, per_txn, budget);
        let mem = appends(Store::Memory, per_txn, budget);
        println!(
            "| {label} | {full:.0} | {:.2} ({off:.0}/s) | {:.2} ({mem:.0}/s) |",
            full / off,
            full / mem
        );
    }
    let d = drain(200_000, 2_000);
    println!("| drain: take 2,000 + ack, durable, 200k backlog | {d:.0} | | |");
}
