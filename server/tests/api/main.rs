//! Integration tests of the server over HTTP and WebSocket, against a fresh
//! database per test (`TEST_DB=sqlite|postgres`). See `helpers.rs`.

mod admin_cli;
mod agent_link;
mod auth;
mod database_down;
mod health;
mod helpers;
mod live_feed;
mod tenant_isolation;
