//! Test harness shared by the end-to-end tests (and the server's integration
//! tests): a fresh database per test on SQLite or PostgreSQL, the real server
//! on a random port, simulated devices, the real agent, a live-feed client and
//! a real browser.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let stack = testkit::Stack::start().await?;          // DB + server + EH-203 sim + agent
//! let client = stack.login_homeowner().await?;
//! let page = client.get(stack.url(&stack.site_path())).send().await?;
//! assert!(page.status().is_success());
//! # Ok(()) }
//! ```

pub mod browser;
pub mod db;
pub mod faults;
pub mod live;
pub mod stack;

pub use db::TestDb;
pub use stack::{Stack, TestServer};

/// Poll `check` every 50 ms until it yields `Some`, or fail after `timeout`
/// with `what` in the message. Tests wait for conditions, never for time.
pub async fn eventually<T, F, Fut>(
    timeout: std::time::Duration,
    what: &str,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Log to stderr when `TEST_LOG=1`.
pub fn init_logs() {
    server::telemetry::init_for_tests();
}
