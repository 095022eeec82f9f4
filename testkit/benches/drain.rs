//! Drain after a one-hour outage (issue 4): how fast a reconnecting agent
//! empties an hour of buffered readings into PostgreSQL, end to end through
//! the real `agent` and `server` binaries, while its live values keep flowing.
//!
//! For each nominal rate (points per second produced by the site) the bench
//! starts the fault harness's stack (server, simulated EH-203, agent), lets
//! the pipeline prove itself with live values, stops the agent, fills its
//! on-disk buffer with exactly one hour of readings at that rate (timestamps
//! in the hour before the restart, through the agent's own [`Buffer`]), starts
//! the agent again and measures:
//!
//! - **first live value**: restart → the first reading sampled after the
//!   restart is stored (a reconnecting site shows its current values at once);
//! - **drain**: restart → every backlog reading is stored (counted in the
//!   database, not taken from the agent's word);
//! - **× real time**: 3600 s / drain time (goal ≥ 10).
//!
//! Run with `scripts/bench-drain` (release binaries, `TEST_DB=postgres`).
//! Arguments: `--rates 10,200` (points/s), `--hours 1`.

use std::time::{Duration, Instant};

use agent::{
    buffer::{Buffer, BufferConfig},
    registers::load_builtin,
    uplink::queue::BatchQueue,
};
use anyhow::{Context as _, bail};
use protocol::{Quality, Reading};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use testkit::faults::harness::{FaultStack, Options};
use time::OffsetDateTime;

/// Readings per buffer transaction while filling (the agent's own appends are
/// one poll each; bigger here only to fill quickly).
const FILL_BATCH: usize = 5_000;

struct Args {
    rates: Vec<u64>,
    hours: f64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        rates: vec![10, 200],
        hours: 1.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rates" => {
                let v = it.next().context("--rates needs a list, e.g. 10,200")?;
                a.rates = v
                    .split(',')
                    .map(|r| r.trim().parse::<u64>().context("--rates: whole numbers"))
                    .collect::<Result<_, _>>()?;
                if a.rates.iter().any(|&r| r == 0 || r > 2_000) {
                    bail!("--rates: each rate must be 1..=2000 points/s");
                }
            }
            "--hours" => {
                let v = it.next().context("--hours needs a number")?;
                a.hours = v.parse().context("--hours: a number")?;
                if !(a.hours > 0.0 && a.hours <= 4.0) {
                    bail!("--hours must be in (0, 4]");
                }
            }
            // cargo bench passes --bench; ignore flags we do not know.
            _ => {}
        }
    }
    Ok(a)
}

/// Readings of `agent`'s devices stored with a timestamp in `[from, to)`.
async fn stored_between(
    db: &DatabaseConnection,
    agent: uuid::Uuid,
    from_ms: i64,
    to_ms: i64,
) -> anyhow::Result<i64> {
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DatabaseBackend::Postgres => {
            "SELECT count(*) FROM readings r JOIN points p ON p.id = r.point_id \
             JOIN devices d ON d.id = p.device_id \
             WHERE d.agent_id = $1 AND r.ts_ms >= $2 AND r.ts_ms < $3"
        }
        _ => {
            "SELECT count(*) FROM readings r JOIN points p ON p.id = r.point_id \
             JOIN devices d ON d.id = p.device_id \
             WHERE d.agent_id = ? AND r.ts_ms >= ? AND r.ts_ms < ?"
        }
    };
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [agent.into(), from_ms.into(), to_ms.into()],
        ))
        .await?
        .context("count(*) returns a row")?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

/// One hour (or `hours`) of readings at `rate` points/s for the EH-203's
/// enabled points, ending just before `end`, appended to the buffer at `path`.
fn fill_buffer(
    path: &std::path::Path,
    rate: u64,
    hours: f64,
    end: OffsetDateTime,
) -> anyhow::Result<(usize, i64)> {
    let profile = load_builtin("ouman_eh203_modbus200").context("built-in profile")??;
    let points: Vec<_> = profile.points.into_iter().filter(|p| p.enabled).collect();
    let seconds = (3600.0 * hours) as u64;
    let total = rate * seconds;
    // Spread the readings evenly: reading k belongs to point k % n at time
    // start + k / rate seconds (distinct (point, ms) keys as long as each
    // point is sampled at most once per millisecond).
    let start = end - time::Duration::seconds(seconds as i64);
    let mut cfg = BufferConfig::at(path);
    // An hour at the highest rate must fit without thinning.
    cfg.max_bytes = cfg.max_bytes.max(total * 200);
    let mut buf = Buffer::open(cfg)?;
    let mut batch = Vec::with_capacity(FILL_BATCH);
    for k in 0..total {
        let p = &points[(k % points.len() as u64) as usize];
        let ts =
            start + time::Duration::nanoseconds((k as i128 * 1_000_000_000 / rate as i128) as i64);
        batch.push(Reading {
            device: "heatpump".into(),
            point: p.key.clone(),
            ts,
            value: (k % 1000) as f64 / 10.0,
            unit: p.unit.clone(),
            quality: Quality::Good,
        });
        if batch.len() == FILL_BATCH {
            buf.append(&batch)?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        buf.append(&batch)?;
    }
    let start_ms = (start.unix_timestamp_nanos() / 1_000_000) as i64;
    Ok((total as usize, start_ms))
}

struct Row {
    rate: u64,
    readings: usize,
    fill: Duration,
    first_live: Duration,
    drain: Duration,
    window: Duration,
}

async fn run_one(rate: u64, hours: f64) -> anyhow::Result<Row> {
    let mut stack = FaultStack::start(Options {
        sites: 1,
        poll: Duration::from_secs(1),
        ..Options::default()
    })
    .await?;
    stack.wait_for_readings(0, 10).await?;
    stack.sites[0].agent.stop().await?;
    let agent_id = stack.sites[0].agent_id;
    let buffer_db = stack.sites[0].agent.buffer_db.clone();
    let db = stack.db().await?;

    // The outage ends now: the hour before is the backlog. Leave a margin so
    // the backlog never collides with readings taken before the stop.
    let end = OffsetDateTime::now_utc();
    let end_ms = (end.unix_timestamp_nanos() / 1_000_000) as i64;
    let t = Instant::now();
    let fill_end = end - time::Duration::seconds(5);
    let (n, start_ms) =
        tokio::task::spawn_blocking(move || fill_buffer(&buffer_db, rate, hours, fill_end))
            .await??;
    let fill = t.elapsed();
    let already = stored_between(&db, agent_id, start_ms, end_ms).await?;

    let restart_ms = testkit::faults::now_ms();
    let t0 = Instant::now();
    stack.sites[0].agent.restart().await?;
    let mut first_live = None;
    let deadline = t0 + Duration::from_secs(1800);
    let drain = loop {
        stack.ensure_alive()?;
        if first_live.is_none() && stored_between(&db, agent_id, restart_ms, i64::MAX).await? > 0 {
            first_live = Some(t0.elapsed());
        }
        let done = stored_between(&db, agent_id, start_ms, end_ms).await? - already;
        if done >= n as i64 {
            break t0.elapsed();
        }
        if Instant::now() > deadline {
            bail!("rate {rate}: only {done} of {n} backlog readings stored after 30 min");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let first_live = match first_live {
        Some(d) => d,
        None => loop {
            if stored_between(&db, agent_id, restart_ms, i64::MAX).await? > 0 {
                break t0.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        },
    };
    db.close().await.ok();
    // The prefilled backlog is not in the ledger (it was never polled), so
    // there is nothing to check here; the processes stop with the stack.
    drop(stack);
    Ok(Row {
        rate,
        readings: n,
        fill,
        first_live,
        drain,
        window: Duration::from_secs_f64(3600.0 * hours),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    if std::env::var("TEST_DB").as_deref() != Ok("postgres") {
        eprintln!("note: TEST_DB is not `postgres`; the figure asked for is PostgreSQL's");
    }
    let mut rows = Vec::new();
    for &rate in &a.rates {
        eprintln!("rate {rate} points/s: filling {} h of backlog ...", a.hours);
        rows.push(run_one(rate, a.hours).await?);
    }
    println!(
        "| nominal rate | backlog readings | fill (agent buffer) | first live value stored | backlog drained | × real time |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} points/s | {} | {:.1} s | {:.2} s | {:.1} s | {:.0}× |",
            r.rate,
            r.readings,
            r.fill.as_secs_f64(),
            r.first_live.as_secs_f64(),
            r.drain.as_secs_f64(),
            r.window.as_secs_f64() / r.drain.as_secs_f64()
        );
    }
    Ok(())
}
