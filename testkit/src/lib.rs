//! Test kit (placeholder).
