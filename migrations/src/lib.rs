//! Database schema for the Homecontrol server, as sea-orm migrations that run
//! unchanged on SQLite (the embedded default) and PostgreSQL (production).
//!
//! The server runs [`Migrator::up`] at start; tests run it on fresh databases
//! and check that `down` followed by `up` gives the same schema.
//!
//! ```no_run
//! # async fn f(db: &sea_orm_migration::sea_orm::DatabaseConnection) -> Result<(), sea_orm_migration::DbErr> {
//! use sea_orm_migration::MigratorTrait;
//! migrations::Migrator::up(db, None).await?;
//! # Ok(()) }
//! ```

use sea_orm_migration::prelude::*;

mod m0001_initial;
mod m0002_control;
mod m0003_control_note;

/// All migrations in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_initial::Migration),
            Box::new(m0002_control::Migration),
            Box::new(m0003_control_note::Migration),
        ]
    }
}
