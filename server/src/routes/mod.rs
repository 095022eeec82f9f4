//! HTTP handlers: extract → parse → call one service or store function →
//! respond. Also the request-level plumbing they share (current user, page
//! rendering, error pages).

pub mod agent_ws;
pub mod assets;
pub mod audit;
pub mod auth;
pub mod confirm;
pub mod controls;
pub mod health;
pub mod live;
pub mod metrics;
pub mod pages;
pub mod sites;

pub use pages::CurrentUser;
