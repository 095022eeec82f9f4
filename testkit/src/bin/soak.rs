//! `soak`: the fault suite's long variant (issue 4). Several agents stream
//! while random faults hit them for `SOAK_MINUTES` (default 5); at the end
//! every agent's ledger must match what the server stored. Not part of CI:
//! run it with `scripts/soak [minutes] [agents]`.
//!
//! Environment: `SOAK_MINUTES`, `SOAK_AGENTS` (default 4), `SOAK_SEED` (to
//! replay a run's fault sequence), `TEST_DB` / `TEST_POSTGRES_URL` as for the
//! tests. With PostgreSQL binaries installed the soak runs on a private
//! cluster, so "database stopped" is one of the faults.

use std::time::{Duration, Instant};

use testkit::faults::{
    harness::{FaultStack, Options},
    proxy::Mode,
};

/// A small deterministic generator (xorshift64*): the seed replays a run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
    fn secs(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo * 1000 + self.below((hi - lo) * 1000 + 1))
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let minutes = env_u64("SOAK_MINUTES", 5);
    let agents = env_u64("SOAK_AGENTS", 4).max(1) as usize;
    let seed = env_u64("SOAK_SEED", testkit::faults::now_ms() as u64).max(1);
    let private_postgres = testkit::faults::postgres::available();
    eprintln!(
        "soak: {minutes} min, {agents} agents, seed {seed}, database: {}",
        if private_postgres {
            "private PostgreSQL (stoppable)".to_owned()
        } else {
            format!(
                "{:?} from TEST_DB (no database fault)",
                testkit::db::backend()
            )
        }
    );
    let mut rng = Rng(seed);
    let mut stack = FaultStack::start(Options {
        sites: agents,
        private_postgres,
        ..Options::default()
    })
    .await?;
    for i in 0..agents {
        stack.wait_for_readings(i, 10).await?;
    }
    let end = Instant::now() + Duration::from_secs(minutes * 60);
    let mut faults = 0;
    while Instant::now() < end {
        let site = rng.below(agents as u64) as usize;
        let kinds = if private_postgres { 6 } else { 5 };
        let t = Instant::now();
        let what = match rng.below(kinds) {
            0 => {
                stack.sites[site].agent.kill().await?;
                tokio::time::sleep(rng.secs(0, 3)).await;
                stack.sites[site].agent.restart().await?;
                format!("agent {site} SIGKILL")
            }
            1 => {
                stack.server.kill().await?;
                tokio::time::sleep(rng.secs(0, 5)).await;
                stack.server.restart().await?;
                "server SIGKILL".to_owned()
            }
            2 => {
                stack.uplink.set(Mode::Reset);
                tokio::time::sleep(rng.secs(0, 1)).await;
                stack.uplink.set(Mode::BlackHole);
                tokio::time::sleep(rng.secs(1, 8)).await;
                stack.uplink.set(Mode::Pass);
                "network cut".to_owned()
            }
            3 => {
                stack.uplink.set(Mode::Reset);
                tokio::time::sleep(rng.secs(0, 2)).await;
                stack.uplink.set(Mode::Pass);
                "connections reset".to_owned()
            }
            4 => {
                stack.sites[site].sim.power_off().await?;
                tokio::time::sleep(rng.secs(1, 6)).await;
                stack.sites[site].sim.power_on().await?;
                format!("heat pump {site} power cycle")
            }
            _ => {
                if let Some(pg) = stack.private_postgres() {
                    pg.stop_server().await?;
                    tokio::time::sleep(rng.secs(1, 6)).await;
                    let pg = stack.private_postgres().expect("checked above");
                    pg.start_server().await?;
                }
                "PostgreSQL stop/start".to_owned()
            }
        };
        faults += 1;
        // Recovery: every agent's readings flow again.
        for i in 0..agents {
            stack.wait_for_readings(i, 1).await?;
        }
        eprintln!(
            "soak: fault {faults}: {what}; recovered in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        tokio::time::sleep(rng.secs(2, 10)).await; // run normally for a while
    }
    let reports = stack.stop_and_check_ledgers().await?;
    let produced: usize = reports.iter().map(|r| r.produced).sum();
    eprintln!(
        "soak: PASSED: {faults} faults, {produced} readings, stored == produced (seed {seed})"
    );
    Ok(())
}
