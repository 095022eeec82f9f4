//! up → down → up gives the same schema, on SQLite and on PostgreSQL.
//!
//! The schema is dumped from the catalogue (`sqlite_master`;
//! `information_schema` + `pg_indexes` + `pg_constraint`) as sorted lines, so a
//! `down` that forgets a table, index or constraint, or an `up` that is not
//! repeatable, shows up as a readable diff. The PostgreSQL half runs when
//! `TEST_DB=postgres` (admin URL from `TEST_POSTGRES_URL`).

use migrations::Migrator;
use sea_orm_migration::{
    MigratorTrait,
    sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement},
};

const SQLITE_DUMP: &str = "SELECT type || ' ' || name || ' on ' || tbl_name || ': ' || coalesce(sql, '') \
     AS line FROM sqlite_master";

const PG_DUMP: &str = "\
    SELECT 'table ' || table_name || ' ' || table_type AS line FROM information_schema.tables \
      WHERE table_schema = 'public' \
    UNION ALL \
    SELECT 'column ' || table_name || '.' || column_name || ' #' || ordinal_position || ' ' || data_type \
      || ' nullable=' || is_nullable || ' default=' || coalesce(column_default, '-') \
      FROM information_schema.columns WHERE table_schema = 'public' \
    UNION ALL \
    SELECT 'index ' || tablename || ' ' || indexname || ': ' || indexdef FROM pg_indexes \
      WHERE schemaname = 'public' \
    UNION ALL \
    SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ': ' || pg_get_constraintdef(oid) \
      FROM pg_constraint WHERE connamespace = 'public'::regnamespace \
    UNION ALL \
    SELECT 'sequence ' || sequence_name || ' ' || data_type FROM information_schema.sequences \
      WHERE sequence_schema = 'public'";

async fn dump(db: &DatabaseConnection) -> Vec<String> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Sqlite => SQLITE_DUMP,
        DbBackend::Postgres => PG_DUMP,
        other => panic!("no schema dump for {other:?}"),
    };
    let rows = db
        .query_all_raw(Statement::from_string(backend, sql))
        .await
        .expect("dumping the schema");
    let mut lines: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String>("", "line").expect("a text line"))
        .collect();
    lines.sort();
    lines
}

/// What may remain after every migration is rolled back: the migrator's own
/// bookkeeping and SQLite's internal tables.
fn is_bookkeeping(line: &str) -> bool {
    line.contains("seaql_migrations") || line.contains("sqlite_sequence")
}

async fn round_trip(db: &DatabaseConnection) {
    Migrator::up(db, None).await.expect("first up");
    let first = dump(db).await;
    for table in [
        "organisations",
        "users",
        "sites",
        "memberships",
        "agents",
        "devices",
        "points",
        "readings",
        "agent_envelopes",
        "control_settings",
        "commands",
        "control_states",
        "confirmations",
        "audit_log",
        "audit_heads",
    ] {
        assert!(
            first
                .iter()
                .any(|l| l.contains(table) && !is_bookkeeping(l)),
            "{table} missing after up:\n{}",
            first.join("\n")
        );
    }

    Migrator::down(db, None).await.expect("down");
    let left: Vec<String> = dump(db)
        .await
        .into_iter()
        .filter(|l| !is_bookkeeping(l))
        .collect();
    assert!(left.is_empty(), "down left schema behind:\n{left:#?}");

    Migrator::up(db, None).await.expect("second up");
    let second = dump(db).await;
    if first != second {
        let only_first: Vec<_> = first.iter().filter(|l| !second.contains(l)).collect();
        let only_second: Vec<_> = second.iter().filter(|l| !first.contains(l)).collect();
        panic!(
            "schema differs after up → down → up\nonly first: {only_first:#?}\nonly second: {only_second:#?}"
        );
    }
    assert!(
        Migrator::get_pending_migrations(db)
            .await
            .expect("status")
            .is_empty()
    );
}

#[tokio::test]
async fn up_down_up_gives_the_same_schema_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("rt.db").display());
    let db = Database::connect(url).await.unwrap();
    round_trip(&db).await;
}

#[tokio::test]
async fn up_down_up_gives_the_same_schema_on_postgresql() {
    if std::env::var("TEST_DB").as_deref() != Ok("postgres") {
        eprintln!("PostgreSQL half runs when TEST_DB=postgres");
        return;
    }
    let admin_url = std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let admin = Database::connect(&admin_url)
        .await
        .expect("connecting to TEST_POSTGRES_URL");
    // `t_<uuid v7>`: the API suite's reaper removes it if this test dies midway.
    let name = format!("t_{}", uuid::Uuid::now_v7().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap();
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("the URL names a database");
    let db = Database::connect(format!("{base}/{name}")).await.unwrap();
    round_trip(&db).await;
    db.close().await.unwrap();
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
}
