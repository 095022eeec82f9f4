//! Homecontrol server (placeholder).

pub mod views;
