//! Homecontrol server (placeholder).
