//! The hash-chained audit log (see [`crate::domain::audit`] for the chain).
//!
//! Appending serialises per site: the first statement of [`append`] updates
//! the chain's head row, which takes SQLite's write lock or PostgreSQL's row
//! lock, so two appends to one site cannot both chain after the same entry.
//! Callers append inside the transaction that makes the change the entry
//! records, so the change and its audit entry commit together or not at all.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, sea_query::Expr,
};

use super::{StoreError, entities::*, now};
use crate::domain::{
    SiteId, SiteRef,
    audit::{self, AuditEntry, ChainHead, ChainedEntry, GENESIS},
};

/// An entry to append; the store assigns `seq` and the time.
#[derive(Debug, Clone, Default)]
pub struct AuditDraft {
    /// The person who acted (`None`: the system).
    pub actor_user_id: Option<uuid::Uuid>,
    /// Their shown name.
    pub actor_name: String,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// Value before.
    pub before: Option<String>,
    /// Value after.
    pub after: Option<String>,
    /// The envelope's decision.
    pub decision: Option<String>,
    /// How it ended.
    pub result: String,
    /// The command concerned.
    pub command_id: Option<uuid::Uuid>,
}

/// Append `draft` to the site's chain. Call inside a transaction.
pub async fn append(
    db: &impl ConnectionTrait,
    site: SiteRef,
    draft: AuditDraft,
) -> Result<ChainedEntry, StoreError> {
    audit_heads::Entity::insert(audit_heads::ActiveModel {
        site_id: Set(site.site_id.0),
        tenant_id: Set(site.tenant_id.0),
        seq: Set(0),
        hash: Set(GENESIS.to_owned()),
    })
    .on_conflict_do_nothing_on([audit_heads::Column::SiteId])
    .exec(db)
    .await?;
    // Take the lock before reading the head (see the module comment).
    audit_heads::Entity::update_many()
        .col_expr(
            audit_heads::Column::Seq,
            Expr::col(audit_heads::Column::Seq),
        )
        .filter(audit_heads::Column::SiteId.eq(site.site_id.0))
        .exec(db)
        .await?;
    let head = audit_heads::Entity::find_by_id(site.site_id.0)
        .one(db)
        .await?
        .ok_or_else(|| StoreError::Missing(format!("audit head of site {}", site.site_id)))?;
    let entry = AuditEntry {
        seq: head.seq + 1,
        at: audit::truncate_to_ms(now()),
        actor_user_id: draft.actor_user_id,
        actor_name: draft.actor_name,
        action: draft.action,
        target: draft.target,
        before: draft.before,
        after: draft.after,
        decision: draft.decision,
        result: draft.result,
        command_id: draft.command_id,
    };
    let chained = audit::chain(
        site.site_id,
        entry,
        Some(&ChainHead {
            seq: head.seq,
            hash: head.hash,
        }),
    );
    let e = &chained.entry;
    audit_log::ActiveModel {
        site_id: Set(site.site_id.0),
        seq: Set(e.seq),
        tenant_id: Set(site.tenant_id.0),
        at: Set(e.at),
        actor_user_id: Set(e.actor_user_id),
        actor_name: Set(e.actor_name.clone()),
        action: Set(e.action.clone()),
        target: Set(e.target.clone()),
        value_before: Set(e.before.clone()),
        value_after: Set(e.after.clone()),
        decision: Set(e.decision.clone()),
        result: Set(e.result.clone()),
        command_id: Set(e.command_id),
        prev_hash: Set(chained.prev_hash.clone()),
        hash: Set(chained.hash.clone()),
    }
    .insert(db)
    .await?;
    audit_heads::Entity::update_many()
        .col_expr(audit_heads::Column::Seq, Expr::value(e.seq))
        .col_expr(audit_heads::Column::Hash, Expr::value(chained.hash.clone()))
        .filter(audit_heads::Column::SiteId.eq(site.site_id.0))
        .exec(db)
        .await?;
    Ok(chained)
}

fn chained(m: audit_log::Model) -> ChainedEntry {
    ChainedEntry {
        entry: AuditEntry {
            seq: m.seq,
            at: m.at,
            actor_user_id: m.actor_user_id,
            actor_name: m.actor_name,
            action: m.action,
            target: m.target,
            before: m.value_before,
            after: m.value_after,
            decision: m.decision,
            result: m.result,
            command_id: m.command_id,
        },
        prev_hash: m.prev_hash,
        hash: m.hash,
    }
}

/// The whole chain of a site in `seq` order, and its head.
pub async fn chain_of_site(
    db: &impl ConnectionTrait,
    site: SiteRef,
) -> Result<(Vec<ChainedEntry>, Option<ChainHead>), StoreError> {
    let rows = audit_log::Entity::find()
        .filter(audit_log::Column::TenantId.eq(site.tenant_id.0))
        .filter(audit_log::Column::SiteId.eq(site.site_id.0))
        .order_by_asc(audit_log::Column::Seq)
        .all(db)
        .await?;
    let head = audit_heads::Entity::find_by_id(site.site_id.0)
        .filter(audit_heads::Column::TenantId.eq(site.tenant_id.0))
        .one(db)
        .await?
        .map(|h| ChainHead {
            seq: h.seq,
            hash: h.hash,
        });
    Ok((rows.into_iter().map(chained).collect(), head))
}

/// The newest `limit` entries of a site, newest first.
pub async fn recent(
    db: &impl ConnectionTrait,
    site: SiteRef,
    limit: u64,
) -> Result<Vec<ChainedEntry>, StoreError> {
    Ok(audit_log::Entity::find()
        .filter(audit_log::Column::TenantId.eq(site.tenant_id.0))
        .filter(audit_log::Column::SiteId.eq(site.site_id.0))
        .order_by_desc(audit_log::Column::Seq)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(chained)
        .collect())
}

/// Verify a site's chain as stored.
pub async fn verify_site(
    db: &impl ConnectionTrait,
    site: SiteRef,
) -> Result<Result<usize, audit::ChainFault>, StoreError> {
    let (entries, head) = chain_of_site(db, site).await?;
    Ok(audit::verify(site.site_id, &entries, head.as_ref()))
}

/// The entries that name a command, oldest first.
pub async fn entries_of_command(
    db: &impl ConnectionTrait,
    site: SiteId,
    command: uuid::Uuid,
) -> Result<Vec<ChainedEntry>, StoreError> {
    Ok(audit_log::Entity::find()
        .filter(audit_log::Column::SiteId.eq(site.0))
        .filter(audit_log::Column::CommandId.eq(command))
        .order_by_asc(audit_log::Column::Seq)
        .all(db)
        .await?
        .into_iter()
        .map(chained)
        .collect())
}
