//! What every handler can reach.

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::{
    config::Settings,
    hub::Hub,
    links::AgentLinks,
    metrics::Metrics,
    relay::Relay,
    services::{auth::SessionKeys, db_health::DbHealth, mail::Mailer, throttle::LoginThrottle},
    views::AssetTable,
};

/// Shared application state; a bundle of `Arc`s, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Database pool.
    pub db: DatabaseConnection,
    /// Loaded settings.
    pub settings: Arc<Settings>,
    /// Session token keys.
    pub sessions: SessionKeys,
    /// Failed-login throttle.
    pub throttle: Arc<LoginThrottle>,
    /// Live fan-out to browsers.
    pub hub: Hub,
    /// Embedded static files.
    pub assets: Arc<AssetTable>,
    /// Counters, gauges and the agents' latest status reports.
    pub metrics: Arc<Metrics>,
    /// Cached "does the database answer?".
    pub db_health: DbHealth,
    /// Agents with a live session on this server.
    pub links: AgentLinks,
    /// Outgoing e-mail.
    pub mailer: Mailer,
    /// Base of links in e-mails, without a trailing slash.
    pub public_url: Arc<str>,
    /// The relay to the other replicas (PostgreSQL only; `None` on SQLite).
    pub relay: Option<Relay>,
}
