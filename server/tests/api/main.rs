//! Integration tests of the server over HTTP and WebSocket, against a fresh
//! database per test (`TEST_DB=sqlite|postgres`). See `helpers.rs`.

// Helper functions of tests are test code too: a panic there is a failed test
// with its message, which is what we want (clippy only exempts `#[test]` fns).
#![expect(clippy::unwrap_used, reason = "test code; a panic is a test failure")]

mod admin_cli;
mod agent_link;
mod audit;
mod auth;
mod confirmation;
mod controls;
mod database_down;
mod health;
mod helpers;
mod ingest;
mod live_feed;
mod metrics;
mod replicas;
mod smtp;
mod tenant_isolation;
