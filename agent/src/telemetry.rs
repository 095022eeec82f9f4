//! Logging setup shared by the binary and the tests.
//!
//! Human-readable lines by default; JSON lines (for journald/log shippers) with
//! `AGENT_LOG_FORMAT=json`. `RUST_LOG` overrides the default filter.

use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

/// Install the global subscriber writing to `sink`, filtered by `RUST_LOG` or
/// else `default_filter` (e.g. `"info"`). A second call is a no-op, so tests
/// may call it freely.
pub fn init<W>(default_filter: &str, sink: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("AGENT_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink);
    let _already_set = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// For tests: log to stderr when `TEST_LOG=1`, else nowhere.
pub fn init_for_tests() {
    if std::env::var("TEST_LOG").is_ok_and(|v| v == "1") {
        init("info,agent=debug", std::io::stderr);
    } else {
        init("info", std::io::sink);
    }
}
