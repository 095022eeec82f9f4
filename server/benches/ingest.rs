//! Server ingest benchmark (a bench binary, `harness = false`): run through
//! `scripts/bench-ingest`, results go to `docs/BENCHMARKS.md`.
//!
//! Against a fresh PostgreSQL database (cloned from the migrated test
//! template, like the integration suite), one run measures:
//!
//! - **ws**: the whole path. The real `Application` in this process, N
//!   simulated agents on their own WebSocket links, each sending batches of
//!   `--batch` readings and waiting for the ack (a committed transaction)
//!   before the next, as the agent does.
//! - **store**: `store::readings::insert` alone, one transaction per batch,
//!   once for the PostgreSQL path (`unnest` arrays) and once for the portable
//!   multi-row `INSERT` (what SQLite uses), so the choice stays measured.
//! - **naive**: one autocommitted `INSERT` per reading.
//! - **copy**: binary `COPY readings FROM STDIN` of the same batches, one per
//!   transaction: the ceiling on this machine.
//!
//! store and copy run in alternating rounds so that both see the same table
//! size (a growing primary-key index slows every later insert). Afterwards the
//! table holds at least `--min-rows` readings and the run reports
//! `pg_total_relation_size('readings') / count(*)`. Finally the same store
//! function runs against a fresh SQLite file.
//!
//! Arguments (all optional): `--agents 1,4,16 --batch 2000 --ws-readings 200000
//! --store-readings 200000 --rounds 5 --naive-readings 20000 --min-rows 1000000`.

#![expect(
    clippy::unwrap_used,
    reason = "a benchmark binary; a panic is a failed run"
)]

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use protocol::{
    AgentToServer, DeviceInfo, Hello, PointInfo, PointKind, Quality, Reading, ReadingsBatch,
    ServerToAgent,
};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, TransactionTrait,
    sqlx::{self, Connection, Row, postgres::PgConnection},
};
use server::{
    config::Settings,
    domain::{AgentId, PointId},
    services::admin,
    startup::Application,
    store::{self, readings::NewReading},
};
use testkit::db::TestDb;
use tokio_tungstenite::{
    connect_async,
    tungstenite::{Message, client::IntoClientRequest, http},
};

/// Points per simulated agent (one device).
const POINTS_PER_AGENT: usize = 100;

struct Args {
    agents: Vec<usize>,
    batch: usize,
    ws_readings: usize,
    store_readings: usize,
    rounds: usize,
    naive_readings: usize,
    min_rows: usize,
}

fn args() -> Args {
    let mut a = Args {
        agents: vec![1, 4, 16],
        batch: 2_000,
        ws_readings: 200_000,
        store_readings: 200_000,
        rounds: 5,
        naive_readings: 20_000,
        min_rows: 1_000_000,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut num = || -> usize {
            it.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--agents" => {
                a.agents = it
                    .next()
                    .expect("--agents needs a list")
                    .split(',')
                    .map(|n| n.trim().parse().expect("--agents: numbers"))
                    .collect()
            }
            "--batch" => a.batch = num(),
            "--ws-readings" => a.ws_readings = num(),
            "--store-readings" => a.store_readings = num(),
            "--rounds" => a.rounds = num(),
            "--naive-readings" => a.naive_readings = num(),
            "--min-rows" => a.min_rows = num(),
            // `cargo bench` passes `--bench`; ignore what is not ours.
            _ => {}
        }
    }
    assert!(
        a.batch <= protocol::MAX_READINGS_PER_BATCH,
        "--batch at most {}",
        protocol::MAX_READINGS_PER_BATCH
    );
    a
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Milliseconds of 2026-01-01T00:00Z; each phase gets its own time range so
/// that no phase's rows collide with another's.
const EPOCH_MS: i64 = 1_767_225_600_000;

/// `n` distinct readings over `points`, starting at `start_ms`, one per
/// second per point, interleaved over points as an agent sends them.
fn rows(points: &[PointId], start_ms: i64, n: usize) -> Vec<NewReading> {
    (0..n)
        .map(|i| NewReading {
            point_id: points[i % points.len()],
            ts_ms: start_ms + (i / points.len()) as i64 * 1_000,
            value: 20.0 + (i % 97) as f64 * 0.25,
            quality: Quality::Good,
        })
        .collect()
}

fn catalogue() -> Vec<DeviceInfo> {
    vec![DeviceInfo {
        key: "hp".into(),
        label: None,
        profile: None,
        points: (0..POINTS_PER_AGENT)
            .map(|i| PointInfo {
                key: format!("p{i}"),
                label: None,
                unit: "degC".into(),
                kind: PointKind::Analog,
                display_min: None,
                display_max: None,
                alarm: false,
            })
            .collect(),
    }]
}

struct SimAgent {
    id: AgentId,
    secret: String,
}

async fn create_agents(db: &DatabaseConnection, n: usize) -> Vec<SimAgent> {
    let org = store::people::create_organisation(db, &format!("bench {}", uuid::Uuid::new_v4()))
        .await
        .unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let site = store::people::create_site(db, org.id, &format!("site {i}"), "UTC")
            .await
            .unwrap();
        let (id, secret) = admin::create_agent(db, site.site_id, "bench agent")
            .await
            .unwrap();
        out.push(SimAgent { id, secret });
    }
    out
}

/// One agent: connect, hello, then send each frame and wait for its ack.
/// Returns the commit latencies seen by the agent.
async fn run_agent(port: u16, agent: &SimAgent, frames: Vec<String>) -> Vec<Duration> {
    let mut req = format!("ws://127.0.0.1:{port}/agent/v1/ws")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        http::header::AUTHORIZATION,
        format!("Bearer {}.{}", agent.id, agent.secret)
            .parse()
            .unwrap(),
    );
    let (mut ws, _) = connect_async(req).await.unwrap();
    let hello = AgentToServer::Hello(Hello {
        agent_id: agent.id.0,
        version: protocol::PROTOCOL_VERSION,
        capabilities: vec!["readings".into()],
        software: Some("bench".into()),
        devices: catalogue(),
        envelope: None,
    });
    ws.send(Message::Text(hello.to_json().unwrap().into()))
        .await
        .unwrap();
    expect_reply(&mut ws, |m| matches!(m, ServerToAgent::Welcome(_))).await;
    let mut latencies = Vec::with_capacity(frames.len());
    for frame in frames {
        let t = Instant::now();
        ws.send(Message::Text(frame.into())).await.unwrap();
        expect_reply(&mut ws, |m| matches!(m, ServerToAgent::Ack(_))).await;
        latencies.push(t.elapsed());
    }
    let _ = ws.close(None).await;
    latencies
}

async fn expect_reply<S>(ws: &mut S, ok: impl Fn(&ServerToAgent) -> bool)
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let msg = ServerToAgent::from_json(t.as_str()).unwrap();
                assert!(ok(&msg), "unexpected reply {msg:?}");
                return;
            }
            Some(Ok(_)) => continue,
            other => panic!("link closed: {other:?}"),
        }
    }
}

/// Pre-serialised readings frames for one agent (serialising is the agent's
/// work, not the server's, so it stays out of the timing).
fn frames_for(batches: usize, batch: usize, phase_ms: i64) -> Vec<String> {
    let base =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(phase_ms) * 1_000_000).unwrap();
    (0..batches)
        .map(|b| {
            let readings = (0..batch)
                .map(|i| {
                    let k = b * batch + i;
                    Reading {
                        device: "hp".into(),
                        point: format!("p{}", k % POINTS_PER_AGENT),
                        ts: base + time::Duration::seconds((k / POINTS_PER_AGENT) as i64),
                        value: 20.0 + (k % 97) as f64 * 0.25,
                        unit: "degC".into(),
                        quality: Quality::Good,
                    }
                })
                .collect();
            AgentToServer::Readings(ReadingsBatch {
                seq: b as u64 + 1,
                readings,
            })
            .to_json()
            .unwrap()
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// PGCOPY binary file for `(point_id int8, ts_ms int8, value float8, quality int2)`.
/// PostgreSQL docs, "COPY — Binary Format": 11-byte signature, flags, header
/// extension length, then per tuple a field count and length-prefixed fields.
fn copy_binary(rows: &[NewReading]) -> Vec<u8> {
    let mut b = Vec::with_capacity(19 + rows.len() * 46 + 2);
    b.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    for r in rows {
        b.extend_from_slice(&4i16.to_be_bytes());
        b.extend_from_slice(&8i32.to_be_bytes());
        b.extend_from_slice(&r.point_id.0.to_be_bytes());
        b.extend_from_slice(&8i32.to_be_bytes());
        b.extend_from_slice(&r.ts_ms.to_be_bytes());
        b.extend_from_slice(&8i32.to_be_bytes());
        b.extend_from_slice(&r.value.to_be_bytes());
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(&r.quality.as_i16().to_be_bytes());
    }
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b
}

async fn copy_batches(conn: &mut PgConnection, batches: &[Vec<NewReading>]) -> Duration {
    let bufs: Vec<Vec<u8>> = batches.iter().map(|b| copy_binary(b)).collect();
    let t = Instant::now();
    for buf in bufs {
        let mut copy = conn
            .copy_in_raw(
                "COPY readings (point_id, ts_ms, value, quality) FROM STDIN (FORMAT binary)",
            )
            .await
            .unwrap();
        copy.send(buf).await.unwrap();
        copy.finish().await.unwrap();
    }
    t.elapsed()
}

async fn store_batches(
    db: &DatabaseConnection,
    batches: &[Vec<NewReading>],
    portable: bool,
) -> Duration {
    let t = Instant::now();
    for b in batches {
        let txn = db.begin().await.unwrap();
        let n = if portable {
            store::readings::insert_multi_row(&txn, b).await.unwrap()
        } else {
            store::readings::insert(&txn, b).await.unwrap()
        };
        assert_eq!(n as usize, b.len(), "every row is new");
        txn.commit().await.unwrap();
    }
    t.elapsed()
}

fn chunked(rows: Vec<NewReading>, batch: usize) -> Vec<Vec<NewReading>> {
    rows.chunks(batch).map(<[NewReading]>::to_vec).collect()
}

async fn count_rows(db: &DatabaseConnection) -> i64 {
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT count(*) AS n FROM readings",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

#[tokio::main]
async fn main() {
    let a = args();
    let machine = format!(
        "{} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_owned())
            )
            .unwrap_or_else(|| "unknown CPU".into())
    );
    println!("# Server ingest benchmark\nmachine: {machine}");
    let pg = TestDb::fresh_postgres().await;
    let settings = Settings::for_database(&pg.url);
    let app = Application::build(settings).await.unwrap();
    let port = app.port();
    let db = app.state().db.clone();
    tokio::spawn(app.run_until_stopped());
    let version: String = {
        let mut c = PgConnection::connect(&pg.url).await.unwrap();
        sqlx::query("SHOW server_version")
            .fetch_one(&mut c)
            .await
            .unwrap()
            .get(0)
    };
    println!("postgresql: {version}; batch: {} readings\n", a.batch);

    // (a) end to end through the WebSocket.
    let max_agents = a.agents.iter().copied().max().unwrap_or(1);
    let agents = create_agents(&db, max_agents).await;
    let mut phase_ms = EPOCH_MS;
    let mut best_ws = 0.0f64;
    println!("| path | agents | readings | seconds | readings/s | commit latency p50 / p99 (ms) |");
    println!("|---|---:|---:|---:|---:|---|");
    for &n in &a.agents {
        let per_agent_batches = (a.ws_readings / a.batch / n).max(1);
        let frames: Vec<Vec<String>> = (0..n)
            .map(|_| frames_for(per_agent_batches, a.batch, phase_ms))
            .collect();
        let total = n * per_agent_batches * a.batch;
        let t = Instant::now();
        let runs = futures_util::future::join_all(
            agents
                .iter()
                .zip(frames)
                .map(|(agent, f)| run_agent(port, agent, f)),
        )
        .await;
        let elapsed = t.elapsed();
        let mut lat: Vec<Duration> = runs.into_iter().flatten().collect();
        lat.sort();
        let r = rate(total, elapsed);
        best_ws = best_ws.max(r);
        println!(
            "| ws (end to end) | {n} | {total} | {:.2} | {r:.0} | {:.1} / {:.1} |",
            elapsed.as_secs_f64(),
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
        );
        phase_ms += 10 * 365 * 86_400_000;
    }

    // Point ids for the direct phases: those the agents' hellos created.
    let points: Vec<PointId> = db
        .query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT id FROM points ORDER BY id",
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| PointId(r.try_get::<i64>("", "id").unwrap()))
        .collect();

    // (b) and (d): alternating rounds of our store function, the portable
    // multi-row path and binary COPY.
    let mut copy_conn = PgConnection::connect(&pg.url).await.unwrap();
    let per_round = (a.store_readings / a.rounds).max(a.batch);
    let (mut ours, mut portable, mut copy) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..a.rounds {
        let b = chunked(rows(&points, phase_ms, per_round), a.batch);
        ours += store_batches(&db, &b, false).await;
        phase_ms += 10 * 365 * 86_400_000;
        let b = chunked(rows(&points, phase_ms, per_round), a.batch);
        portable += store_batches(&db, &b, true).await;
        phase_ms += 10 * 365 * 86_400_000;
        let b = chunked(rows(&points, phase_ms, per_round), a.batch);
        copy += copy_batches(&mut copy_conn, &b).await;
        phase_ms += 10 * 365 * 86_400_000;
    }
    let n = per_round * a.rounds;
    let (r_ours, r_portable, r_copy) = (rate(n, ours), rate(n, portable), rate(n, copy));
    let line = |name: &str, d: Duration, r: f64| {
        println!("| {name} | 1 | {n} | {:.2} | {r:.0} | |", d.as_secs_f64())
    };
    line("store: unnest arrays (ours on PostgreSQL)", ours, r_ours);
    line(
        "store: multi-row INSERT (portable path)",
        portable,
        r_portable,
    );
    line("binary COPY", copy, r_copy);

    // (c) naive: one autocommitted INSERT per reading.
    let naive_rows = rows(&points, phase_ms, a.naive_readings);
    phase_ms += 10 * 365 * 86_400_000;
    let t = Instant::now();
    for r in &naive_rows {
        sqlx::query(
            "INSERT INTO readings (point_id, ts_ms, value, quality) VALUES ($1, $2, $3, $4)",
        )
        .bind(r.point_id.0)
        .bind(r.ts_ms)
        .bind(r.value)
        .bind(r.quality.as_i16())
        .execute(&mut copy_conn)
        .await
        .unwrap();
    }
    let naive = t.elapsed();
    println!(
        "| naive INSERT per reading, autocommit | 1 | {} | {:.2} | {:.0} | |",
        a.naive_readings,
        naive.as_secs_f64(),
        rate(a.naive_readings, naive)
    );

    println!();
    println!(
        "ratios: store(unnest)/COPY = {:.0} %, ws best/COPY = {:.0} %, multi-row/COPY = {:.0} %, unnest/multi-row = {:.2}x",
        100.0 * r_ours / r_copy,
        100.0 * best_ws / r_copy,
        100.0 * r_portable / r_copy,
        r_ours / r_portable
    );

    // Size per stored reading, after at least `min_rows` rows.
    let have = count_rows(&db).await as usize;
    if have < a.min_rows {
        let b = chunked(rows(&points, phase_ms, a.min_rows - have), 5_000);
        store_batches(&db, &b, false).await;
    }
    sqlx::query("VACUUM ANALYZE readings")
        .execute(&mut copy_conn)
        .await
        .unwrap();
    let row = sqlx::query(
        "SELECT pg_total_relation_size('readings')::bigint, pg_relation_size('readings')::bigint, \
         pg_indexes_size('readings')::bigint, (SELECT count(*) FROM readings)",
    )
    .fetch_one(&mut copy_conn)
    .await
    .unwrap();
    let (total, heap, idx, count): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    println!(
        "size: {count} rows, {:.1} B/row total ({:.1} heap + {:.1} indexes; {:.0} MiB)",
        total as f64 / count as f64,
        heap as f64 / count as f64,
        idx as f64 / count as f64,
        total as f64 / 1_048_576.0
    );
    copy_conn.close().await.unwrap();
    db.close().await.unwrap();
    drop(pg);

    // SQLite: the same store function on a fresh file.
    let lite = TestDb::fresh_sqlite();
    let db = store::connect(&Settings::for_database(&lite.url).database)
        .await
        .unwrap();
    store::migrate(&db).await.unwrap();
    let agents = create_agents(&db, 1).await;
    let site_catalogue = server::store::people::find_agent(&db, agents[0].id)
        .await
        .unwrap()
        .unwrap();
    let index = store::catalogue::upsert(&db, &site_catalogue, &catalogue())
        .await
        .unwrap();
    let lite_points: Vec<PointId> = server::services::ingest::point_ids(&index);
    let b = chunked(rows(&lite_points, EPOCH_MS, a.store_readings), a.batch);
    let d = store_batches(&db, &b, false).await;
    println!(
        "sqlite: store, 1 writer, {} readings in {:.2} s = {:.0} readings/s",
        a.store_readings,
        d.as_secs_f64(),
        rate(a.store_readings, d)
    );
}
