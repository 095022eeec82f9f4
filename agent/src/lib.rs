//! Homecontrol agent (placeholder).
