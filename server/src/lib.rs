//! The Homecontrol server: logins, tenants, sites, the agents' link, live
//! dashboards and history.
//!
//! Layout: [`config`] loads [`config::Settings`]; [`startup::Application`]
//! opens the database ([`store`]), runs [`migrations`], and wires every route
//! in [`routes`]. Handlers call [`services`], which combine the [`store`] with
//! the pure rules in [`domain`]. Agents stream readings over
//! `/agent/v1/ws` ([`routes::agent_ws`]); each committed batch is fanned out
//! to browsers by the [`hub::Hub`]. Several replicas on one PostgreSQL share
//! live updates, agent presence and command pokes through the [`relay`].
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let settings = server::config::Settings::for_database("sqlite::memory:");
//! let app = server::startup::Application::build(settings).await?;
//! println!("listening on port {}", app.port());
//! app.run_until_stopped().await?;
//! # Ok(()) }
//! ```

pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod hub;
pub mod links;
pub mod metrics;
pub mod relay;
pub mod routes;
pub mod services;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod views;
