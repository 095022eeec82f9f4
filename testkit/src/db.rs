//! A fresh, migrated database per test.
//!
//! The backend comes from `TEST_DB=sqlite|postgres` (default SQLite), so the
//! same tests run on both. SQLite gets a temporary file. PostgreSQL databases
//! are cloned from a migrated template whose name is derived from the
//! migration list, on the server named by `TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). nextest runs each test in
//! its own process, so the template is built under an advisory lock into a
//! scratch database that is renamed only when fully migrated. Each test's
//! database is dropped when its [`TestDb`] is dropped; a reaper removes the
//! leftovers of killed test processes after an hour.

use std::time::{Duration, Instant};

use sea_orm::sqlx::{self, Connection, Row, postgres::PgConnection};
use sha2::{Digest, Sha256};

/// How long a database operation in the harness may retry.
const WAIT: Duration = Duration::from_secs(15);

/// Which database the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A temporary SQLite file per test.
    Sqlite,
    /// A fresh PostgreSQL database per test, cloned from a migrated template.
    Postgres,
}

/// The backend named by `TEST_DB` (default SQLite).
pub fn backend() -> Backend {
    match std::env::var("TEST_DB").as_deref() {
        Ok("postgres") | Ok("postgresql") | Ok("pg") => Backend::Postgres,
        Ok("sqlite") | Ok("") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("TEST_DB must be sqlite or postgres, not '{other}'"),
    }
}

/// True when PostgreSQL-only tests should run; otherwise says why they do not.
pub fn postgres_only(test: &str) -> bool {
    let on = backend() == Backend::Postgres;
    if !on {
        eprintln!("{test}: PostgreSQL only; runs when TEST_DB=postgres");
    }
    on
}

fn admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `admin_url` with its database replaced by `db`.
fn url_for(admin: &str, db: &str) -> String {
    let mut url = url::Url::parse(admin).expect("TEST_POSTGRES_URL is a valid URL");
    url.set_path(&format!("/{db}"));
    url.to_string()
}

/// A database that exists for one test.
pub struct TestDb {
    /// Connection URL for the server.
    pub url: String,
    guard: Guard,
}

enum Guard {
    Sqlite { _dir: tempfile::TempDir },
    Postgres { admin: String, name: String },
}

impl TestDb {
    /// A fresh, migrated database of the configured backend.
    pub async fn fresh() -> Self {
        match backend() {
            Backend::Sqlite => Self::fresh_sqlite(),
            Backend::Postgres => Self::fresh_postgres().await,
        }
    }

    /// An empty SQLite file in its own temporary directory (the server migrates it).
    pub fn fresh_sqlite() -> Self {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
        Self {
            url,
            guard: Guard::Sqlite { _dir: dir },
        }
    }

    /// `CREATE DATABASE t_<uuid v7> TEMPLATE <migrated template>`.
    pub async fn fresh_postgres() -> Self {
        let admin = admin_url();
        let template = ensure_template(&admin).await;
        // A v7 uuid carries its creation time, which is what lets the reaper
        // tell an abandoned database from one a running test still uses.
        let name = format!("t_{}", uuid::Uuid::now_v7().simple());
        let mut conn = admin_conn(&admin).await;
        let sql = format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"");
        // Concurrent clones of one template are allowed, but PostgreSQL refuses
        // one while any session is connected to the template; that window is
        // short (the template builder's last disconnect), so retry briefly.
        let deadline = Instant::now() + WAIT;
        loop {
            match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&mut conn)
                .await
            {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline && e.to_string().contains("accessed by") => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{sql}: {e}"),
            }
        }
        let _ = conn.close().await;
        Self {
            url: url_for(&admin, &name),
            guard: Guard::Postgres { admin, name },
        }
    }

    /// Drop the PostgreSQL database now, disconnecting every session.
    pub async fn drop_now(&self) {
        if let Guard::Postgres { admin, name } = &self.guard {
            drop_database(admin, name).await;
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Guard::Postgres { admin, name } = &self.guard {
            let (admin, name) = (admin.clone(), name.clone());
            // Drop runs inside the test's runtime, which must not be blocked
            // on; a short-lived runtime on its own thread does the work.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(drop_database(&admin, &name));
                }
            })
            .join();
        }
    }
}

async fn admin_conn(admin: &str) -> PgConnection {
    PgConnection::connect(admin)
        .await
        .unwrap_or_else(|e| panic!("connecting to TEST_POSTGRES_URL ({admin}): {e}"))
}

/// Best effort: a leftover is removed later by the reaper.
async fn drop_database(admin: &str, name: &str) {
    if let Ok(mut conn) = PgConnection::connect(admin).await {
        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }
}

/// Template name: a hash of the migration list, so a new migration gets a
/// new template and an old one is never reused.
fn template_name() -> String {
    use sea_orm_migration::MigratorTrait;
    let mut hash = Sha256::new();
    for m in migrations::Migrator::migrations() {
        hash.update(m.name().as_bytes());
        hash.update(b"\n");
    }
    format!("hc_api_tpl_{}", &hex::encode(hash.finalize())[..16])
}

/// Make sure the migrated template exists; returns its name. Safe when many
/// test processes start at once: creation happens under an advisory lock,
/// into a scratch database that is renamed only when fully migrated.
async fn ensure_template(admin: &str) -> String {
    let template = template_name();
    let mut conn = admin_conn(admin).await;
    if database_exists(&mut conn, &template).await {
        let _ = conn.close().await;
        return template;
    }
    sqlx::query("SELECT pg_advisory_lock(hashtext('homecontrol-api-test-template'))")
        .execute(&mut conn)
        .await
        .expect("taking the template advisory lock");
    if !database_exists(&mut conn, &template).await {
        reap_old_databases(&mut conn).await;
        build_template(admin, &mut conn, &template).await;
    }
    let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext('homecontrol-api-test-template'))")
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    template
}

async fn database_exists(conn: &mut PgConnection, name: &str) -> bool {
    sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .expect("querying pg_database")
        .is_some()
}

async fn exec(conn: &mut PgConnection, sql: String) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

async fn build_template(admin: &str, conn: &mut PgConnection, template: &str) {
    let scratch = format!("{template}_build");
    let _ = exec(
        conn,
        format!("DROP DATABASE IF EXISTS \"{scratch}\" WITH (FORCE)"),
    )
    .await;
    // "already exists" here means a crashed builder left it; it was dropped above,
    // so any error now is real.
    exec(conn, format!("CREATE DATABASE \"{scratch}\""))
        .await
        .unwrap_or_else(|e| panic!("creating {scratch}: {e}"));
    let db = sea_orm::Database::connect(url_for(admin, &scratch))
        .await
        .expect("connecting to the template under construction");
    server::store::migrate(&db)
        .await
        .expect("migrating the template");
    db.close().await.expect("closing the template pool");
    let deadline = Instant::now() + WAIT;
    loop {
        let _ = sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
        )
        .bind(&scratch)
        .execute(&mut *conn)
        .await;
        match exec(
            conn,
            format!("ALTER DATABASE \"{scratch}\" RENAME TO \"{template}\""),
        )
        .await
        {
            Ok(()) => break,
            // Another process won a race we should not have (e.g. no lock support):
            Err(e) if e.to_string().contains("already exists") => {
                let _ = exec(
                    conn,
                    format!("DROP DATABASE IF EXISTS \"{scratch}\" WITH (FORCE)"),
                )
                .await;
                break;
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("renaming the template: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("renaming {scratch} to {template}: {e}"),
        }
    }
}

/// Drop `t_<uuid v7>` databases created more than an hour ago: leftovers of
/// killed test processes.
async fn reap_old_databases(conn: &mut PgConnection) {
    let rows = sqlx::query(r"SELECT datname FROM pg_database WHERE datname LIKE 't\_%'")
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    for row in rows {
        let Ok(name) = row.try_get::<String, _>(0) else {
            continue;
        };
        let Some(created) = name
            .strip_prefix("t_")
            .and_then(|id| uuid::Uuid::parse_str(id).ok())
            .and_then(|id| id.get_timestamp())
            .map(|ts| ts.to_unix().0)
        else {
            continue;
        };
        if now.saturating_sub(created) > 3600 {
            let _ = exec(
                conn,
                format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            )
            .await;
        }
    }
}
