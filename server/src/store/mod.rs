//! The only place that builds queries. Every function takes
//! `&impl ConnectionTrait` (so it works inside a transaction) and returns
//! domain types. Tenant-owned lookups take the ids that scope them.

pub mod audit;
pub mod catalogue;
pub mod control;
pub mod entities;
pub mod people;
pub mod readings;

use std::time::Duration;

use anyhow::Context;
use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use sea_orm_migration::MigratorTrait;
use secrecy::ExposeSecret;

use crate::config::{Backend, DatabaseSettings};

/// Errors from the store that callers handle differently.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key already exists (e.g. the e-mail address is taken).
    #[error("{0} already exists")]
    Duplicate(String),
    /// A referenced row does not exist.
    #[error("{0} not found")]
    Missing(String),
    /// Anything the database reported.
    #[error(transparent)]
    Db(#[from] sea_orm::DbErr),
}

impl From<StoreError> for crate::error::AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Duplicate(what) => {
                crate::error::AppError::Conflict(format!("{what} already exists"))
            }
            StoreError::Missing(_) => crate::error::AppError::NotFound,
            StoreError::Db(db) => db.into(),
        }
    }
}

/// Open the pool. Does not fail when PostgreSQL is down: the pool connects
/// lazily, so a server built on it (see `Application::build_with_db`) comes
/// up, serves its pages and says the data is temporarily unavailable until the
/// database returns. (`Application::build` still needs the database once, to
/// run migrations.)
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<DatabaseConnection> {
    let backend = settings.backend()?;
    let mut opts = ConnectOptions::new(settings.url.expose_secret().to_owned());
    opts.max_connections(settings.max_connections)
        .min_connections(0)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    if backend == Backend::Postgres {
        // Regression (tests branch): without this, `Database::connect` opened a
        // connection eagerly and failed with "pool timed out" when PostgreSQL
        // was down, contradicting the promise above.
        opts.connect_lazy(true);
    }
    if backend == Backend::Sqlite {
        // SQLite allows one writer; a small pool avoids "database is locked"
        // storms, and WAL lets readers proceed while a batch commits.
        opts.max_connections(settings.max_connections.min(4));
        opts.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    }
    Database::connect(opts)
        .await
        .context("opening the database")
}

/// Bring the schema up to date.
pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    migrations::Migrator::up(db, None)
        .await
        .context("running database migrations")
}

/// Now, in UTC, as stored in `*_at` columns.
pub(crate) fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}
