//! Pure types and rules: no I/O, no database, no clock reads.

pub mod access;
pub mod audit;
pub mod control;
pub mod control_text;
pub mod dashboard;
pub mod ids;
pub mod lang;
pub mod units;

pub use access::{Membership, Role, SiteRef};
pub use ids::*;
pub use lang::Lang;
