//! What the server does with an agent's messages.

use protocol::{DeviceStatus, Hello, ReadingsBatch, Welcome};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, TransactionSession, TransactionTrait,
    sea_query::Expr,
};

use crate::{
    domain::PointId,
    store::{
        StoreError,
        catalogue::{self, PointIndex},
        entities::agents,
        people::{self, AgentRecord},
        readings::{self, NewReading},
    },
};

/// Why a batch was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// More readings than the protocol allows.
    #[error("batch has {0} readings; the limit is {max}", max = protocol::MAX_READINGS_PER_BATCH)]
    TooLarge(usize),
    /// The store failed; nothing of the batch was kept.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Outcome of storing one batch.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// Values to push to live viewers (the accepted readings).
    pub values: Vec<NewReading>,
    /// Readings skipped because their point is not in the catalogue or the
    /// value is not a finite number.
    pub skipped: usize,
    /// Rows that were new (the rest were duplicates of a re-sent batch).
    pub inserted: u64,
}

/// Register the agent's catalogue and answer its hello.
pub async fn hello<C>(
    db: &C,
    agent: &AgentRecord,
    hello: &Hello,
) -> Result<(Welcome, PointIndex), StoreError>
where
    C: ConnectionTrait + TransactionTrait,
{
    let txn = db.begin().await?;
    let index = catalogue::upsert(&txn, agent, &hello.devices).await?;
    // The envelope copy is replaced on every hello (the agent's local
    // configuration may have changed while it was away).
    crate::store::control::save_envelope(&txn, agent, hello.envelope.as_ref()).await?;
    people::touch_agent(&txn, agent.id, hello.software.as_deref()).await?;
    txn.commit().await?;
    let welcome = Welcome {
        version: protocol::PROTOCOL_VERSION,
        site_id: agent.site.site_id.0,
        last_acked_seq: agent.last_acked_seq,
    };
    Ok((welcome, index))
}

/// Store a batch in one transaction (readings and the agent's last acked
/// seq), so that an acknowledgement always means "committed".
pub async fn store_batch<C>(
    db: &C,
    agent: &AgentRecord,
    index: &PointIndex,
    batch: &ReadingsBatch,
) -> Result<Stored, IngestError>
where
    C: ConnectionTrait + TransactionTrait,
{
    if batch.readings.len() > protocol::MAX_READINGS_PER_BATCH {
        return Err(IngestError::TooLarge(batch.readings.len()));
    }
    let mut out = Stored::default();
    for r in &batch.readings {
        let key = (r.device.clone(), r.point.clone());
        match index.get(&key) {
            Some(&point_id) if r.value.is_finite() => out.values.push(NewReading {
                point_id,
                ts_ms: i64::try_from(r.ts.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX),
                value: r.value,
                quality: r.quality,
            }),
            _ => out.skipped += 1,
        }
    }
    let txn = db.begin().await.map_err(StoreError::from)?;
    out.inserted = readings::insert(&txn, &out.values).await?;
    let seq = i64::try_from(batch.seq).unwrap_or(i64::MAX);
    agents::Entity::update_many()
        .col_expr(agents::Column::LastAckedSeq, Expr::value(seq))
        .filter(agents::Column::Id.eq(agent.id.0))
        .filter(
            sea_orm::Condition::any()
                .add(agents::Column::LastAckedSeq.is_null())
                .add(agents::Column::LastAckedSeq.lt(seq)),
        )
        .exec(&txn)
        .await
        .map_err(StoreError::from)?;
    txn.commit().await.map_err(StoreError::from)?;
    Ok(out)
}

/// Record a device status report.
pub async fn device_status(
    db: &impl ConnectionTrait,
    agent: &AgentRecord,
    status: &DeviceStatus,
) -> Result<(), StoreError> {
    catalogue::set_device_status(db, agent, status).await
}

/// The point ids of an index (for tests).
pub fn point_ids(index: &PointIndex) -> Vec<PointId> {
    index.values().copied().collect()
}
