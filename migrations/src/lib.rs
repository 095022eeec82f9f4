//! Database schema migrations (placeholder, filled in next).
