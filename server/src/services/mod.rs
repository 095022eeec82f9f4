//! Use-cases that combine the store, the domain rules and crypto.

pub mod admin;
pub mod auth;
pub mod control;
pub mod db_health;
pub mod ingest;
pub mod mail;
pub mod secrets;
pub mod sites;
pub mod throttle;
