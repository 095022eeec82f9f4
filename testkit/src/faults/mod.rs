//! The fault suite's harness (issue 4): the **real binaries** as child
//! processes, so they can be SIGKILLed and restarted, with cut-able TCP proxies
//! in between, an optional private PostgreSQL that can be stopped, and the
//! ledger check that compares what every agent took with what the server
//! stored.
//!
//! The pieces:
//! - [`procs`]: [`procs::ServerProc`] (`server serve` on a port fixed for the
//!   run), [`procs::AgentProc`] (`agent run --config` with `[buffer] ledger =
//!   true`) and [`procs::SimProc`] (`agent simulate eh203 --tcp`), each with
//!   `kill` (SIGKILL) and `restart`;
//! - [`proxy`]: [`proxy::Proxy`], a TCP proxy with modes pass, reset (drop every
//!   connection) and black hole (hold everything, forward nothing);
//! - [`postgres`]: [`postgres::PrivatePostgres`], an `initdb`'d cluster of its
//!   own for the test that stops the database;
//! - [`ledger`]: stored == produced, per agent;
//! - [`harness`]: [`harness::FaultStack`], all of the above wired together for
//!   one or more sites.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use testkit::faults::harness::{FaultStack, Options};
//! let mut stack = FaultStack::start(Options::default()).await?;
//! stack.wait_for_readings(0, 5).await?;
//! stack.sites[0].agent.kill().await?;
//! stack.sites[0].agent.restart().await?;
//! stack.stop_and_check_ledgers().await?;
//! # Ok(()) }
//! ```

pub mod harness;
pub mod ledger;
pub mod postgres;
pub mod procs;
pub mod proxy;

use std::path::PathBuf;

use anyhow::Context;

/// Path of a workspace binary (`server`, `agent`) built next to the running
/// test executable (`target/<profile>/deps/<test>` → `target/<profile>/<name>`).
/// `env!("CARGO_BIN_EXE_…")` only exists inside the package that defines the
/// binary, and testkit is not that package; `cargo nextest run --workspace`
/// (or `cargo build --workspace`) builds them.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("HOMECONTROL_BIN_DIR") {
        let p = PathBuf::from(dir).join(name);
        anyhow::ensure!(
            p.is_file(),
            "HOMECONTROL_BIN_DIR has no `{name}` ({})",
            p.display()
        );
        return Ok(p);
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    let mut candidates = Vec::new();
    for dir in exe.ancestors().skip(1).take(3) {
        candidates.push(dir.join(name));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "the `{name}` binary is not built (looked at {}); run `cargo build --workspace` \
                 or `cargo nextest run --workspace` first, or set HOMECONTROL_BIN_DIR",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// A port that was free a moment ago on 127.0.0.1. Processes that restart keep
/// it for the whole run (SO_REUSEADDR lets them bind it again at once).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
