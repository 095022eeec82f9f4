//! A fresh, migrated database per test.
//!
//! `TEST_DB=sqlite` (default) gives a new SQLite file in a temporary
//! directory. `TEST_DB=postgres` clones a migrated template database on the
//! server named by `TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`): the template is created once
//! under an advisory lock (nextest runs tests as parallel processes), named after
//! the migration list so a schema change gets a new template; each test gets
//! `CREATE DATABASE t_<unix time>_<random> TEMPLATE …`, dropped by
//! [`TestDb::cleanup`] or, if a test died, by the reaper an hour later.

use std::hash::{Hash, Hasher};

use anyhow::Context;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Statement};
use sea_orm_migration::MigratorTrait;

/// Which backend the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file.
    Sqlite,
    /// PostgreSQL database.
    Postgres,
}

impl Backend {
    /// From `TEST_DB` (`sqlite` or `postgres`); anything else is an error.
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var("TEST_DB").as_deref() {
            Err(_) | Ok("sqlite") | Ok("") => Ok(Backend::Sqlite),
            Ok("postgres") => Ok(Backend::Postgres),
            Ok(other) => anyhow::bail!("TEST_DB must be sqlite or postgres, not '{other}'"),
        }
    }
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDb {
    /// Connection URL for the server under test.
    pub url: String,
    /// Backend.
    pub backend: Backend,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

/// Admin URL of the PostgreSQL server used by tests.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn with_db(admin_url: &str, db: &str) -> String {
    match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => format!("{admin_url}/{db}"),
    }
}

async fn single_connection(url: &str) -> anyhow::Result<DatabaseConnection> {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.max_connections(1)
        .min_connections(1)
        .sqlx_logging(false);
    Database::connect(opts)
        .await
        .with_context(|| format!("connecting to {url}"))
}

fn template_name() -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for m in migrations::Migrator::migrations() {
        m.name().hash(&mut h);
    }
    format!("hc_tpl_{:016x}", h.finish())
}

const TEMPLATE_LOCK: i64 = 0x4843_5450; // "HCTP"

async fn exec(db: &DatabaseConnection, sql: &str) -> anyhow::Result<()> {
    db.execute_unprepared(sql)
        .await
        .with_context(|| format!("running `{sql}`"))?;
    Ok(())
}

async fn ensure_template(admin: &DatabaseConnection, admin_url: &str) -> anyhow::Result<String> {
    let name = template_name();
    exec(admin, &format!("SELECT pg_advisory_lock({TEMPLATE_LOCK})")).await?;
    let result = async {
        let found = admin
            .query_one_raw(Statement::from_string(
                admin.get_database_backend(),
                format!("SELECT 1 AS one FROM pg_database WHERE datname = '{name}'"),
            ))
            .await?;
        if found.is_none() {
            exec(admin, &format!("CREATE DATABASE {name}")).await?;
            let tpl = single_connection(&with_db(admin_url, &name)).await?;
            migrations::Migrator::up(&tpl, None)
                .await
                .context("migrating the template database")?;
            tpl.close().await?;
        }
        anyhow::Ok(())
    }
    .await;
    exec(
        admin,
        &format!("SELECT pg_advisory_unlock({TEMPLATE_LOCK})"),
    )
    .await?;
    result.map(|()| name)
}

async fn reap(admin: &DatabaseConnection) -> anyhow::Result<()> {
    let cutoff = time_now() - 3600;
    let rows = admin
        .query_all_raw(Statement::from_string(
            admin.get_database_backend(),
            "SELECT datname FROM pg_database WHERE datname LIKE 't\\_%'".to_owned(),
        ))
        .await?;
    for row in rows {
        let name: String = row.try_get("", "datname")?;
        let born = name.split('_').nth(1).and_then(|s| s.parse::<u64>().ok());
        if born.is_some_and(|b| b < cutoff) {
            let _ = exec(
                admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            )
            .await;
        }
    }
    Ok(())
}

fn time_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TestDb {
    /// A fresh database on the backend `TEST_DB` names.
    pub async fn new() -> anyhow::Result<Self> {
        Self::on(Backend::from_env()?).await
    }

    /// A fresh database on the given backend.
    pub async fn on(backend: Backend) -> anyhow::Result<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                Ok(TestDb {
                    url,
                    backend,
                    pg_name: None,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let admin = single_connection(&admin_url)
                    .await
                    .context("PostgreSQL for tests is not reachable; set TEST_POSTGRES_URL or start it (.ci/run does)")?;
                let template = ensure_template(&admin, &admin_url).await?;
                let _ = reap(&admin).await;
                let name = format!(
                    "t_{}_{}",
                    time_now(),
                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                );
                exec(
                    &admin,
                    &format!("CREATE DATABASE {name} TEMPLATE {template}"),
                )
                .await?;
                admin.close().await?;
                Ok(TestDb {
                    url: with_db(&admin_url, &name),
                    backend,
                    pg_name: Some(name),
                    _dir: None,
                })
            }
        }
    }

    /// Drop the PostgreSQL database (SQLite files go with the temp dir).
    pub async fn cleanup(self) -> anyhow::Result<()> {
        if let Some(name) = &self.pg_name {
            let admin = single_connection(&postgres_admin_url()).await?;
            exec(
                &admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            )
            .await?;
            admin.close().await?;
        }
        Ok(())
    }
}
