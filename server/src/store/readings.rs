//! Time-series rows: `(point_id, ts_ms) → value, quality`.

use protocol::Quality;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, sea_query::OnConflict,
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

/// Rows per INSERT statement: 4 binds each stays far below SQLite's 32766
/// and PostgreSQL's 65535 bind limits.
const CHUNK: usize = 2_000;

/// Store readings; rows whose `(point_id, ts_ms)` already exist are skipped,
/// which makes a re-sent batch harmless. Returns how many were new.
pub async fn insert(db: &impl ConnectionTrait, rows: &[NewReading]) -> Result<u64, StoreError> {
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
