//! The agent with its on-disk buffer against the in-test WebSocket server:
//! an outage, an agent restart in the middle of it, and the drain afterwards.
//! The buffer's test ledger (`[buffer] ledger = true`) tells what the agent
//! counted as taken; all of it must reach the server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeSet, path::Path, sync::atomic::Ordering, time::Duration};

use agent::sim::{Eh203Sim, SimOptions};
use common::{FakeServer, Seen, agent_toml, spawn_agent, within};
use protocol::AgentToServer;

type Key = (String, String, i64);

fn key(r: &protocol::Reading) -> Key {
    (
        r.device.clone(),
        r.point.clone(),
        (r.ts.unix_timestamp_nanos() / 1_000_000) as i64,
    )
}

fn ledger(path: &Path) -> BTreeSet<Key> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT device, point, ts_ms FROM ledger")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Wait (polling, with a timeout) until the ledger holds more than `n` readings.
async fn ledger_grows_past(path: &Path, n: usize) {
    within("the ledger to grow", async {
        while ledger(path).len() <= n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

fn batch(s: &Seen) -> Option<(usize, u64, Vec<protocol::Reading>)> {
    match &s.msg {
        AgentToServer::Readings(b) => Some((s.conn, b.seq, b.readings.clone())),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_and_a_restart_lose_nothing_send_live_values_first_and_keep_seqs_increasing() {
    let sim = Eh203Sim::new(SimOptions {
        tick: Duration::from_millis(100),
        ..SimOptions::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _sim_task = sim.serve_tcp(listener);
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("buffer.db");
    let toml = format!(
        "{}\n[buffer]\npath = \"{}\"\nledger = true\n",
        agent_toml(
            &server.url,
            &format!("kind = \"tcp\"\naddress = \"{addr}\""),
            100
        ),
        db.display()
    );
    let mut delivered: BTreeSet<Key> = BTreeSet::new();

    // Connected: a few batches go through and are acknowledged.
    let (stop, handle) = spawn_agent(&toml);
    let mut last_seq = 0;
    for _ in 0..3 {
        let (_, seq, rs) = server.next_matching("a batch", batch).await;
        assert!(seq > last_seq);
        last_seq = seq;
        delivered.extend(rs.iter().map(key));
    }

    // The server goes down; the agent keeps polling into its buffer.
    server.accepting.store(false, Ordering::SeqCst);
    server.drop_connection();
    let before_outage = ledger(&db).len();
    ledger_grows_past(&db, before_outage + 30).await;

    // The agent restarts in the middle of the outage, on the same buffer file.
    stop.cancel();
    within("the first agent to stop", handle)
        .await
        .unwrap()
        .unwrap();
    while let Ok(s) = server.seen.try_recv() {
        if let Some((_, seq, rs)) = batch(&s) {
            last_seq = last_seq.max(seq);
            delivered.extend(rs.iter().map(key));
        }
    }
    let (stop, handle) = spawn_agent(&toml);
    let after_restart = ledger(&db).len();
    ledger_grows_past(&db, after_restart + 20).await;

    // The server comes back.
    let first_conn_after = {
        server.accepting.store(true, Ordering::SeqCst);
        server
            .next_matching("a hello after the outage", |s| {
                matches!(s.msg, AgentToServer::Hello(_)).then_some(s.conn)
            })
            .await
    };
    let (conn, seq, live) = server.next_matching("the live-first batch", batch).await;
    assert_eq!(conn, first_conn_after);
    assert!(
        seq > last_seq,
        "seq {seq} continues after {last_seq} across the restart"
    );
    let points: BTreeSet<_> = live.iter().map(|r| r.point.clone()).collect();
    assert_eq!(
        (points.len(), live.len()),
        (10, 10),
        "one newest value per point"
    );
    let newest_live = live.iter().map(|r| r.ts).min().unwrap();
    last_seq = seq;
    delivered.extend(live.iter().map(key));

    // Then the backlog, oldest first, and everything taken is delivered.
    let (_, seq, backlog) = server.next_matching("the backlog", batch).await;
    assert!(seq > last_seq);
    assert!(
        backlog[0].ts < newest_live,
        "the backlog starts in the outage"
    );
    last_seq = seq;
    delivered.extend(backlog.iter().map(key));
    let taken = ledger(&db);
    let mut missing: BTreeSet<Key> = taken.difference(&delivered).cloned().collect();
    while !missing.is_empty() {
        let (_, seq, rs) = server
            .next_matching(&format!("{} readings still missing", missing.len()), batch)
            .await;
        assert!(seq > last_seq, "seqs increase in send order");
        last_seq = seq;
        for r in &rs {
            missing.remove(&key(r));
        }
    }

    stop.cancel();
    within("the second agent to stop", handle)
        .await
        .unwrap()
        .unwrap();
}
