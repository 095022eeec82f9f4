//! Time-series rows: `(point_id, ts_ms) → value, quality`.

use protocol::Quality;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement, Value, sea_query::OnConflict,
};

use super::{StoreError, entities::readings};
use crate::domain::PointId;

/// One reading ready to store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NewReading {
    /// Point.
    pub point_id: PointId,
    /// Milliseconds since the Unix epoch, UTC.
    pub ts_ms: i64,
    /// Engineering value.
    pub value: f64,
    /// Quality.
    pub quality: Quality,
}

/// Rows per multi-row INSERT statement (the portable path): 4 binds each
/// stays far below SQLite's 32766 and PostgreSQL's 65535 bind limits.
const CHUNK: usize = 2_000;

/// The PostgreSQL fast path: four array parameters, whatever the row count.
/// Measured in `server/benches/ingest.rs` (see `docs/BENCHMARKS.md`): one
/// statement with four binds is parsed and planned once per batch instead of
/// binding 8,000 scalars per 2,000 rows, which is what made the multi-row
/// INSERT the slow part of a commit.
const UNNEST_INSERT: &str = "INSERT INTO readings (point_id, ts_ms, value, quality) \
     SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::float8[], $4::int2[]) \
     ON CONFLICT (point_id, ts_ms) DO NOTHING";

/// Store readings; rows whose `(point_id, ts_ms)` already exist are skipped,
/// which makes a re-sent batch harmless. Returns how many were new.
///
/// PostgreSQL gets one `INSERT … SELECT FROM unnest(arrays)` statement; SQLite
/// (which has no arrays) gets multi-row `INSERT`s of [`CHUNK`] rows. Both are
/// insert-or-ignore on the primary key and run on the caller's connection, so
/// inside the caller's transaction.
pub async fn insert(db: &impl ConnectionTrait, rows: &[NewReading]) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    match db.get_database_backend() {
        DbBackend::Postgres => insert_unnest(db, rows).await,
        _ => insert_multi_row(db, rows).await,
    }
}

async fn insert_unnest(db: &impl ConnectionTrait, rows: &[NewReading]) -> Result<u64, StoreError> {
    let mut point_ids = Vec::with_capacity(rows.len());
    let mut ts = Vec::with_capacity(rows.len());
    let mut values = Vec::with_capacity(rows.len());
    let mut qualities = Vec::with_capacity(rows.len());
    for r in rows {
        point_ids.push(r.point_id.0);
        ts.push(r.ts_ms);
        values.push(r.value);
        qualities.push(r.quality.as_i16());
    }
    let stmt = Statement::from_sql_and_values(
        DbBackend::Postgres,
        UNNEST_INSERT,
        [
            Value::from(point_ids),
            Value::from(ts),
            Value::from(values),
            Value::from(qualities),
        ],
    );
    Ok(db.execute_raw(stmt).await?.rows_affected())
}

/// The portable path (and the SQLite one).
pub async fn insert_multi_row(
    db: &impl ConnectionTrait,
    rows: &[NewReading],
) -> Result<u64, StoreError> {
    let mut inserted = 0;
    for chunk in rows.chunks(CHUNK) {
        let models = chunk.iter().map(|r| readings::ActiveModel {
            point_id: sea_orm::Set(r.point_id.0),
            ts_ms: sea_orm::Set(r.ts_ms),
            value: sea_orm::Set(r.value),
            quality: sea_orm::Set(r.quality.as_i16()),
        });
        let res = readings::Entity::insert_many(models)
            .on_conflict(
                OnConflict::columns([readings::Column::PointId, readings::Column::TsMs])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
        inserted += res;
    }
    Ok(inserted)
}

/// The newest reading of a point.
pub async fn latest(
    db: &impl ConnectionTrait,
    point: PointId,
) -> Result<Option<NewReading>, StoreError> {
    Ok(readings::Entity::find()
        .filter(readings::Column::PointId.eq(point.0))
        .order_by_desc(readings::Column::TsMs)
        .limit(1)
        .one(db)
        .await?
        .map(|m| NewReading {
            point_id: PointId(m.point_id),
            ts_ms: m.ts_ms,
            value: m.value,
            quality: Quality::from_i16(m.quality),
        }))
}

/// How many readings a point has (tests and diagnostics).
pub async fn count(db: &impl ConnectionTrait, point: PointId) -> Result<u64, StoreError> {
    Ok(readings::Entity::find()
        .filter(readings::Column::PointId.eq(point.0))
        .count(db)
        .await?)
}
