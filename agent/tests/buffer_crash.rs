//! Crash safety of the on-disk buffer: a child process (this test binary,
//! re-executed with `BUFFER_CRASH_CHILD` set) appends readings in a loop and
//! prints each index once its append has returned; the parent `kill -9`s it at
//! a random moment, five times. After each kill the reopened buffer must hold
//! every reading whose append returned, in order, without gaps or duplicates,
//! and the test ledger must agree with it.
//!
//! This covers a process crash, not power loss (that needs a VM or
//! dm-flakey); `synchronous=FULL` is what covers the latter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use agent::{
    buffer::{Buffer, BufferConfig},
    uplink::queue::BatchQueue as _,
};
use protocol::{Quality, Reading};

const CHILD_ENV: &str = "BUFFER_CRASH_CHILD";
const TEST_NAME: &str = "every_append_that_returned_survives_kill_9_in_order_without_gaps";

fn reading(i: u64) -> Reading {
    Reading {
        device: "hp".into(),
        point: "counter".into(),
        ts: time::OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(i as i64),
        value: i as f64,
        unit: String::new(),
        quality: Quality::Good,
    }
}

fn config(path: &Path) -> BufferConfig {
    BufferConfig {
        ledger: true,
        ..BufferConfig::at(path)
    }
}

/// The child: continue after the last stored value, forever.
fn child(path: &Path) -> ! {
    let mut b = Buffer::open(config(path)).unwrap();
    let mut next = b.all().unwrap().last().map_or(0, |r| r.value as u64 + 1);
    let mut out = std::io::stdout().lock();
    loop {
        b.append(&[reading(next)]).unwrap();
        writeln!(out, "appended {next}").unwrap();
        out.flush().unwrap();
        next += 1;
    }
}

#[test]
fn every_append_that_returned_survives_kill_9_in_order_without_gaps() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(Path::new(&path));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("buffer.db");
    let mut confirmed: Option<u64> = None;
    for round in 0..5 {
        let mut proc = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = proc.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("appended ") {
                    let _ = tx.send(n.parse::<u64>().unwrap());
                }
            }
        });
        // Wait for the first append of this round (not a guess at readiness),
        // then let it run for a random while before the kill.
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("child appends");
        if let Some(c) = confirmed {
            assert!(
                first > c,
                "round {round}: the child continued after {c}, at {first}"
            );
        }
        std::thread::sleep(Duration::from_millis(rand::random_range(100..900)));
        proc.kill().unwrap(); // SIGKILL on Unix
        proc.wait().unwrap();
        reader.join().unwrap();
        let last_returned = rx.try_iter().last().unwrap_or(first);
        confirmed = Some(last_returned);

        let b = Buffer::open(config(&path)).unwrap();
        let stored: Vec<u64> = b.all().unwrap().iter().map(|r| r.value as u64).collect();
        let expected: Vec<u64> = (0..stored.len() as u64).collect();
        assert_eq!(
            stored, expected,
            "round {round}: in order, no gaps, no duplicates"
        );
        assert!(
            stored.len() as u64 > last_returned,
            "round {round}: append {last_returned} returned but only {} readings are stored",
            stored.len()
        );
        // At most the one append in progress at the kill may be extra.
        assert!(stored.len() as u64 <= last_returned + 2);
        assert_eq!(b.stats().unwrap().readings, stored.len() as u64);
        eprintln!(
            "round {round}: killed after append {last_returned}; {} stored",
            stored.len()
        );
        drop(b);
        let ledger: i64 = rusqlite::Connection::open(&path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM ledger", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            ledger as usize,
            stored.len(),
            "round {round}: ledger == buffer"
        );
    }
}
