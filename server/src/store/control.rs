//! Remote control rows: the agents' envelopes, the installer's per-control
//! settings, commands, the points' control state and confirmation tokens.
//!
//! SQLite note for callers: a transaction that reads and then writes can fail
//! with "database is locked" when another write committed in between (WAL
//! snapshots cannot be upgraded). Transactions here therefore start with a
//! write; functions that change a command's status do so with one conditional
//! `UPDATE` and report whether it matched.

use std::collections::{HashMap, HashSet};

use protocol::{ControlSource, ControlState, Envelope};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
    sea_query::{Expr, OnConflict},
};
use time::OffsetDateTime;

use super::{StoreError, entities::*, now, people::AgentRecord};
use crate::domain::{
    AgentId, SiteRef, UserId,
    control::{Band, ControlSetting},
};

/// A command's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandStatus {
    /// Outside the comfort band; waiting for a homeowner's confirmation.
    HeldForConfirmation,
    /// Handed to the agent (or waiting for the agent to connect, while
    /// `delivered_at` is empty).
    Sent,
    /// Written and read back by the agent.
    Applied,
    /// Refused by the agent's envelope.
    Rejected,
    /// Not applied in time (by the agent, or never delivered).
    Expired,
    /// The agent tried and failed.
    Failed,
    /// Declined by the owner, or abandoned (confirmation mail not sent).
    Cancelled,
}

impl CommandStatus {
    /// Every status.
    pub const ALL: [CommandStatus; 7] = [
        CommandStatus::HeldForConfirmation,
        CommandStatus::Sent,
        CommandStatus::Applied,
        CommandStatus::Rejected,
        CommandStatus::Expired,
        CommandStatus::Failed,
        CommandStatus::Cancelled,
    ];

    /// Stable name in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::HeldForConfirmation => "held_for_confirmation",
            CommandStatus::Sent => "sent",
            CommandStatus::Applied => "applied",
            CommandStatus::Rejected => "rejected",
            CommandStatus::Expired => "expired",
            CommandStatus::Failed => "failed",
            CommandStatus::Cancelled => "cancelled",
        }
    }

    /// Inverse of [`CommandStatus::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// A stored command.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRecord {
    /// Id (also the protocol command id).
    pub id: uuid::Uuid,
    /// Its site.
    pub site: SiteRef,
    /// The agent it goes to.
    pub agent_id: AgentId,
    /// The control (`device/point` or `action:name`).
    pub control_key: String,
    /// `set`, `release`, `start_action`, `stop_action` or `set_schedule`.
    pub op: String,
    /// The protocol request as JSON.
    pub request: String,
    /// Who asked.
    pub requested_by: Option<UserId>,
    /// Their name.
    pub requested_by_name: String,
    /// Sent to the agent as `issued_by` (their e-mail).
    pub issued_by: String,
    /// When they asked.
    pub issued_at: OffsetDateTime,
    /// After this the agent must not apply it.
    pub expires_at: OffsetDateTime,
    /// Where it is in its life.
    pub status: CommandStatus,
    /// Why it ended as it did: once the agent answered (`result_at` set),
    /// the agent's own words; before that, the server's reason as a stored
    /// [`crate::domain::control_text::CommandReason`].
    pub reason: Option<String>,
    /// It was outside the comfort band (and needed confirmation).
    pub outside_band: bool,
    /// The value read before the write.
    pub value_before: Option<f64>,
    /// The value read back after it.
    pub value_after: Option<f64>,
    /// When it was handed to a live session.
    pub delivered_at: Option<OffsetDateTime>,
    /// When the agent answered.
    pub result_at: Option<OffsetDateTime>,
}

fn command_record(m: commands::Model) -> CommandRecord {
    CommandRecord {
        id: m.id,
        site: SiteRef {
            tenant_id: crate::domain::TenantId(m.tenant_id),
            site_id: crate::domain::SiteId(m.site_id),
        },
        agent_id: AgentId(m.agent_id),
        control_key: m.control_key,
        op: m.op,
        request: m.request,
        requested_by: m.requested_by.map(UserId),
        requested_by_name: m.requested_by_name,
        issued_by: m.issued_by,
        issued_at: m.issued_at,
        expires_at: m.expires_at,
        status: CommandStatus::parse(&m.status).unwrap_or(CommandStatus::Failed),
        reason: m.reason,
        outside_band: m.outside_band,
        value_before: m.value_before,
        value_after: m.value_after,
        delivered_at: m.delivered_at,
        result_at: m.result_at,
    }
}

// ---- envelopes ---------------------------------------------------------------

/// Store the envelope an agent announced (replacing the previous one), or
/// forget it when the hello carried none.
pub async fn save_envelope(
    db: &impl ConnectionTrait,
    agent: &AgentRecord,
    envelope: Option<&Envelope>,
) -> Result<(), StoreError> {
    let Some(envelope) = envelope else {
        agent_envelopes::Entity::delete_by_id(agent.id.0)
            .exec(db)
            .await?;
        return Ok(());
    };
    let json = serde_json::to_string(envelope)
        .map_err(|e| StoreError::Db(sea_orm::DbErr::Custom(format!("envelope JSON: {e}"))))?;
    agent_envelopes::Entity::insert(agent_envelopes::ActiveModel {
        agent_id: Set(agent.id.0),
        tenant_id: Set(agent.site.tenant_id.0),
        site_id: Set(agent.site.site_id.0),
        envelope: Set(json),
        received_at: Set(now()),
    })
    .on_conflict(
        OnConflict::column(agent_envelopes::Column::AgentId)
            .update_columns([
                agent_envelopes::Column::Envelope,
                agent_envelopes::Column::ReceivedAt,
            ])
            .to_owned(),
    )
    .exec(db)
    .await?;
    Ok(())
}

/// The envelopes of a site's agents, oldest agent first. An envelope that no
/// longer parses is skipped with a warning.
pub async fn envelopes_of_site(
    db: &impl ConnectionTrait,
    site: SiteRef,
) -> Result<Vec<(AgentId, Envelope)>, StoreError> {
    let rows = agent_envelopes::Entity::find()
        .filter(agent_envelopes::Column::TenantId.eq(site.tenant_id.0))
        .filter(agent_envelopes::Column::SiteId.eq(site.site_id.0))
        .order_by_asc(agent_envelopes::Column::AgentId)
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| match serde_json::from_str::<Envelope>(&r.envelope) {
            Ok(e) => Some((AgentId(r.agent_id), e)),
            Err(e) => {
                tracing::warn!(agent_id = %r.agent_id, error = %e, "stored envelope does not parse");
                None
            }
        })
        .collect())
}

// ---- settings ----------------------------------------------------------------

/// The installer's settings of a site, by control key (absent = default).
pub async fn settings_of_site(
    db: &impl ConnectionTrait,
    site: SiteRef,
) -> Result<HashMap<String, ControlSetting>, StoreError> {
    let rows = control_settings::Entity::find()
        .filter(control_settings::Column::TenantId.eq(site.tenant_id.0))
        .filter(control_settings::Column::SiteId.eq(site.site_id.0))
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let band = match (r.band_min, r.band_max) {
                (Some(min), Some(max)) => Some(Band { min, max }),
                _ => None,
            };
            (
                r.control_key,
                ControlSetting {
                    band,
                    homeowner_visible: r.homeowner_visible,
                },
            )
        })
        .collect())
}

/// Store one control's settings.
pub async fn save_setting(
    db: &impl ConnectionTrait,
    site: SiteRef,
    control_key: &str,
    setting: &ControlSetting,
    by: UserId,
) -> Result<(), StoreError> {
    control_settings::Entity::insert(control_settings::ActiveModel {
        site_id: Set(site.site_id.0),
        control_key: Set(control_key.to_owned()),
        tenant_id: Set(site.tenant_id.0),
        band_min: Set(setting.band.map(|b| b.min)),
        band_max: Set(setting.band.map(|b| b.max)),
        homeowner_visible: Set(setting.homeowner_visible),
        updated_by: Set(Some(by.0)),
        updated_at: Set(now()),
    })
    .on_conflict(
        OnConflict::columns([
            control_settings::Column::SiteId,
            control_settings::Column::ControlKey,
        ])
        .update_columns([
            control_settings::Column::BandMin,
            control_settings::Column::BandMax,
            control_settings::Column::HomeownerVisible,
            control_settings::Column::UpdatedBy,
            control_settings::Column::UpdatedAt,
        ])
        .to_owned(),
    )
    .exec(db)
    .await?;
    Ok(())
}

// ---- commands ----------------------------------------------------------------

/// A command to store.
#[derive(Debug, Clone)]
pub struct NewCommand {
    /// Id.
    pub id: uuid::Uuid,
    /// Site.
    pub site: SiteRef,
    /// Target agent.
    pub agent_id: AgentId,
    /// Control key.
    pub control_key: String,
    /// Operation name.
    pub op: String,
    /// The protocol request as JSON.
    pub request: String,
    /// Who asked.
    pub requested_by: UserId,
    /// Their name.
    pub requested_by_name: String,
    /// Their e-mail (sent to the agent).
    pub issued_by: String,
    /// When.
    pub issued_at: OffsetDateTime,
    /// Valid until.
    pub expires_at: OffsetDateTime,
    /// Initial status (`Sent` or `HeldForConfirmation`).
    pub status: CommandStatus,
    /// Outside the comfort band.
    pub outside_band: bool,
    /// The last reported value, as "before".
    pub value_before: Option<f64>,
}

/// Insert a command.
pub async fn insert_command(db: &impl ConnectionTrait, c: &NewCommand) -> Result<(), StoreError> {
    commands::ActiveModel {
        id: Set(c.id),
        tenant_id: Set(c.site.tenant_id.0),
        site_id: Set(c.site.site_id.0),
        agent_id: Set(c.agent_id.0),
        control_key: Set(c.control_key.clone()),
        op: Set(c.op.clone()),
        request: Set(c.request.clone()),
        requested_by: Set(Some(c.requested_by.0)),
        requested_by_name: Set(c.requested_by_name.clone()),
        issued_by: Set(c.issued_by.clone()),
        issued_at: Set(c.issued_at),
        expires_at: Set(c.expires_at),
        status: Set(c.status.as_str().to_owned()),
        reason: Set(None),
        outside_band: Set(c.outside_band),
        value_before: Set(c.value_before),
        value_after: Set(None),
        delivered_at: Set(None),
        result_at: Set(None),
        updated_at: Set(now()),
    }
    .insert(db)
    .await?;
    Ok(())
}

/// A command by id (unscoped: the id comes from the agent link or a
/// confirmation token, never from a URL a person can edit).
pub async fn find_command(
    db: &impl ConnectionTrait,
    id: uuid::Uuid,
) -> Result<Option<CommandRecord>, StoreError> {
    Ok(commands::Entity::find_by_id(id)
        .one(db)
        .await?
        .map(command_record))
}

/// The newest command of each control of a site (by control key).
pub async fn latest_commands_of_site(
    db: &impl ConnectionTrait,
    site: SiteRef,
    limit: u64,
) -> Result<HashMap<String, CommandRecord>, StoreError> {
    let rows = commands::Entity::find()
        .filter(commands::Column::TenantId.eq(site.tenant_id.0))
        .filter(commands::Column::SiteId.eq(site.site_id.0))
        .order_by_desc(commands::Column::IssuedAt)
        .order_by_desc(commands::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    let mut out = HashMap::new();
    for r in rows {
        out.entry(r.control_key.clone())
            .or_insert_with(|| command_record(r));
    }
    Ok(out)
}

/// The controls of a site that the agent has accepted a weekly schedule
/// for (one is in force there: a schedule is replaced, never removed).
pub async fn scheduled_controls_of_site(
    db: &impl ConnectionTrait,
    site: SiteRef,
) -> Result<HashSet<String>, StoreError> {
    let keys: Vec<String> = commands::Entity::find()
        .select_only()
        .column(commands::Column::ControlKey)
        .distinct()
        .filter(commands::Column::TenantId.eq(site.tenant_id.0))
        .filter(commands::Column::SiteId.eq(site.site_id.0))
        .filter(commands::Column::Op.eq("set_schedule"))
        .filter(commands::Column::Status.eq(CommandStatus::Applied.as_str()))
        .into_tuple()
        .all(db)
        .await?;
    Ok(keys.into_iter().collect())
}

/// The request of the newest schedule sent for a control (applied or on
/// its way), to pre-fill the editor.
pub async fn latest_schedule_request(
    db: &impl ConnectionTrait,
    site: SiteRef,
    control_key: &str,
) -> Result<Option<String>, StoreError> {
    Ok(commands::Entity::find()
        .filter(commands::Column::TenantId.eq(site.tenant_id.0))
        .filter(commands::Column::SiteId.eq(site.site_id.0))
        .filter(commands::Column::ControlKey.eq(control_key))
        .filter(commands::Column::Op.eq("set_schedule"))
        .filter(commands::Column::Status.is_in([
            CommandStatus::Applied.as_str(),
            CommandStatus::Sent.as_str(),
        ]))
        .order_by_desc(commands::Column::IssuedAt)
        .one(db)
        .await?
        .map(|c| c.request))
}

/// Commands of an agent that wait to be delivered (status `sent`, not yet
/// handed to a session), oldest first.
pub async fn undelivered(
    db: &impl ConnectionTrait,
    agent: AgentId,
) -> Result<Vec<CommandRecord>, StoreError> {
    Ok(commands::Entity::find()
        .filter(commands::Column::AgentId.eq(agent.0))
        .filter(commands::Column::Status.eq(CommandStatus::Sent.as_str()))
        .filter(commands::Column::DeliveredAt.is_null())
        .order_by_asc(commands::Column::IssuedAt)
        .order_by_asc(commands::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(command_record)
        .collect())
}

/// Mark a command delivered, if nobody else did; true when this call did.
pub async fn claim_command(
    db: &impl ConnectionTrait,
    id: uuid::Uuid,
    at: OffsetDateTime,
) -> Result<bool, StoreError> {
    let res = commands::Entity::update_many()
        .col_expr(commands::Column::DeliveredAt, Expr::value(at))
        .col_expr(commands::Column::UpdatedAt, Expr::value(now()))
        .filter(commands::Column::Id.eq(id))
        .filter(commands::Column::Status.eq(CommandStatus::Sent.as_str()))
        .filter(commands::Column::DeliveredAt.is_null())
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

/// Undo [`claim_command`] when the frame could not be written to the agent.
pub async fn unclaim_command(db: &impl ConnectionTrait, id: uuid::Uuid) -> Result<(), StoreError> {
    commands::Entity::update_many()
        .col_expr(
            commands::Column::DeliveredAt,
            Expr::value(Option::<OffsetDateTime>::None),
        )
        .filter(commands::Column::Id.eq(id))
        .filter(commands::Column::Status.eq(CommandStatus::Sent.as_str()))
        .filter(commands::Column::ResultAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Move a command from one of `from` to `to` with a reason; true when it
/// was in one of `from`. Optionally reset its validity (a confirmed command
/// gets a fresh expiry from the moment of confirmation).
pub async fn transition(
    db: &impl ConnectionTrait,
    id: uuid::Uuid,
    from: &[CommandStatus],
    to: CommandStatus,
    reason: Option<&str>,
    expires_at: Option<OffsetDateTime>,
) -> Result<bool, StoreError> {
    let mut q = commands::Entity::update_many()
        .col_expr(commands::Column::Status, Expr::value(to.as_str()))
        .col_expr(
            commands::Column::Reason,
            Expr::value(reason.map(str::to_owned)),
        )
        .col_expr(commands::Column::UpdatedAt, Expr::value(now()));
    if let Some(exp) = expires_at {
        q = q.col_expr(commands::Column::ExpiresAt, Expr::value(exp));
    }
    let res = q
        .filter(commands::Column::Id.eq(id))
        .filter(commands::Column::Status.is_in(from.iter().map(|s| s.as_str())))
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

/// Undelivered `sent` commands whose validity ended at or before `at`, of
/// one agent and/or one site (callers expire them with [`transition`]).
pub async fn overdue_undelivered(
    db: &impl ConnectionTrait,
    agent: Option<AgentId>,
    site: Option<SiteRef>,
    at: OffsetDateTime,
) -> Result<Vec<CommandRecord>, StoreError> {
    let mut q = commands::Entity::find()
        .filter(commands::Column::Status.eq(CommandStatus::Sent.as_str()))
        .filter(commands::Column::DeliveredAt.is_null())
        .filter(commands::Column::ExpiresAt.lte(at));
    if let Some(a) = agent {
        q = q.filter(commands::Column::AgentId.eq(a.0));
    }
    if let Some(s) = site {
        q = q
            .filter(commands::Column::TenantId.eq(s.tenant_id.0))
            .filter(commands::Column::SiteId.eq(s.site_id.0));
    }
    Ok(q.all(db).await?.into_iter().map(command_record).collect())
}

/// Held commands of a site whose every confirmation link has expired unused.
pub async fn held_without_live_link(
    db: &impl ConnectionTrait,
    site: SiteRef,
    at: OffsetDateTime,
) -> Result<Vec<CommandRecord>, StoreError> {
    let held = commands::Entity::find()
        .filter(commands::Column::TenantId.eq(site.tenant_id.0))
        .filter(commands::Column::SiteId.eq(site.site_id.0))
        .filter(commands::Column::Status.eq(CommandStatus::HeldForConfirmation.as_str()))
        .all(db)
        .await?;
    let mut out = Vec::new();
    for c in held {
        let live = confirmations::Entity::find()
            .filter(confirmations::Column::CommandId.eq(c.id))
            .filter(confirmations::Column::ExpiresAt.gt(at))
            .filter(confirmations::Column::UsedAt.is_null())
            .one(db)
            .await?;
        if live.is_none() {
            out.push(command_record(c));
        }
    }
    Ok(out)
}

/// Store the agent's answer for a delivered command of that agent; `None`
/// when the id is unknown, belongs to another agent or already has a result.
pub async fn record_result(
    db: &impl ConnectionTrait,
    agent: AgentId,
    result: &protocol::CommandResult,
    status: CommandStatus,
) -> Result<Option<CommandRecord>, StoreError> {
    let id = result.id;
    let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
    let res = commands::Entity::update_many()
        .col_expr(commands::Column::Status, Expr::value(status.as_str()))
        .col_expr(commands::Column::Reason, Expr::value(result.reason.clone()))
        .col_expr(
            commands::Column::ValueBefore,
            Expr::value(finite(result.before)),
        )
        .col_expr(
            commands::Column::ValueAfter,
            Expr::value(finite(result.after)),
        )
        .col_expr(commands::Column::ResultAt, Expr::value(result.at))
        .col_expr(commands::Column::UpdatedAt, Expr::value(now()))
        .filter(commands::Column::Id.eq(id))
        .filter(commands::Column::AgentId.eq(agent.0))
        .filter(commands::Column::Status.eq(CommandStatus::Sent.as_str()))
        .filter(commands::Column::ResultAt.is_null())
        .exec(db)
        .await?;
    if res.rows_affected != 1 {
        return Ok(None);
    }
    find_command(db, id).await
}

// ---- control state -----------------------------------------------------------

/// The stored control state of one point.
#[derive(Debug, Clone, PartialEq)]
pub struct StateRecord {
    /// The reporting agent.
    pub agent_id: AgentId,
    /// What the agent said.
    pub state: ControlState,
    /// When it said it.
    pub updated_at: OffsetDateTime,
}

fn source_str(s: ControlSource) -> &'static str {
    match s {
        ControlSource::Schedule => "schedule",
        ControlSource::Manual => "manual",
        ControlSource::Action => "action",
        ControlSource::Device => "device",
        ControlSource::Clamped => "clamped",
        ControlSource::Unknown => "unknown",
    }
}

fn parse_source(s: &str) -> ControlSource {
    match s {
        "schedule" => ControlSource::Schedule,
        "manual" => ControlSource::Manual,
        "action" => ControlSource::Action,
        "device" => ControlSource::Device,
        "clamped" => ControlSource::Clamped,
        _ => ControlSource::Unknown,
    }
}

/// Longest note kept, in characters: a sentence or two. An agent is not
/// trusted to send short text; a longer one is cut (with an ellipsis).
pub const MAX_NOTE_CHARS: usize = 400;

/// `note` trimmed, empty as none, cut to [`MAX_NOTE_CHARS`].
pub fn tidy_note(note: Option<&str>) -> Option<String> {
    let n = note?.trim();
    if n.is_empty() {
        return None;
    }
    if n.chars().count() <= MAX_NOTE_CHARS {
        return Some(n.to_owned());
    }
    let mut cut: String = n.chars().take(MAX_NOTE_CHARS - 1).collect();
    cut.push('…');
    Some(cut)
}

/// Store the newest control state of a point (one row per agent + point).
pub async fn upsert_state(
    db: &impl ConnectionTrait,
    agent: &AgentRecord,
    s: &ControlState,
) -> Result<(), StoreError> {
    control_states::Entity::insert(control_states::ActiveModel {
        agent_id: Set(agent.id.0),
        device: Set(s.device.clone()),
        point: Set(s.point.clone()),
        tenant_id: Set(agent.site.tenant_id.0),
        site_id: Set(agent.site.site_id.0),
        commanded: Set(s.commanded.filter(|v| v.is_finite())),
        reported: Set(s.reported.filter(|v| v.is_finite())),
        source: Set(source_str(s.source).to_owned()),
        until: Set(s.until),
        action: Set(s.action.clone()),
        updated_at: Set(now()),
        note: Set(tidy_note(s.note.as_deref())),
    })
    .on_conflict(
        OnConflict::columns([
            control_states::Column::AgentId,
            control_states::Column::Device,
            control_states::Column::Point,
        ])
        .update_columns([
            control_states::Column::Commanded,
            control_states::Column::Reported,
            control_states::Column::Source,
            control_states::Column::Until,
            control_states::Column::Action,
            control_states::Column::UpdatedAt,
            control_states::Column::Note,
        ])
        .to_owned(),
    )
    .exec(db)
    .await?;
    Ok(())
}

/// The control states of a site's points.
pub async fn states_of_site(
    db: &impl ConnectionTrait,
    site: SiteRef,
) -> Result<Vec<StateRecord>, StoreError> {
    let rows = control_states::Entity::find()
        .filter(control_states::Column::TenantId.eq(site.tenant_id.0))
        .filter(control_states::Column::SiteId.eq(site.site_id.0))
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| StateRecord {
            agent_id: AgentId(r.agent_id),
            state: ControlState {
                device: r.device,
                point: r.point,
                commanded: r.commanded,
                reported: r.reported,
                source: parse_source(&r.source),
                until: r.until,
                action: r.action,
                note: r.note,
            },
            updated_at: r.updated_at,
        })
        .collect())
}

// ---- confirmations -----------------------------------------------------------

/// A confirmation link as stored (the token itself is never stored).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfirmationRecord {
    /// Id.
    pub id: uuid::Uuid,
    /// Site.
    pub site: SiteRef,
    /// The held command.
    pub command_id: uuid::Uuid,
    /// The homeowner it was sent to.
    pub user_id: Option<UserId>,
    /// Their address.
    pub recipient_email: String,
    /// End of validity.
    pub expires_at: OffsetDateTime,
    /// When it was used, if it was.
    pub used_at: Option<OffsetDateTime>,
}

/// Store a confirmation link by the hash of its token.
pub async fn insert_confirmation(
    db: &impl ConnectionTrait,
    site: SiteRef,
    command_id: uuid::Uuid,
    user_id: UserId,
    recipient_email: &str,
    token_hash: &str,
    expires_at: OffsetDateTime,
) -> Result<(), StoreError> {
    confirmations::ActiveModel {
        id: Set(uuid::Uuid::now_v7()),
        tenant_id: Set(site.tenant_id.0),
        site_id: Set(site.site_id.0),
        command_id: Set(command_id),
        user_id: Set(Some(user_id.0)),
        recipient_email: Set(recipient_email.to_owned()),
        token_hash: Set(token_hash.to_owned()),
        expires_at: Set(expires_at),
        used_at: Set(None),
        created_at: Set(now()),
    }
    .insert(db)
    .await?;
    Ok(())
}

/// The confirmation whose token hashes to `token_hash`.
pub async fn find_confirmation(
    db: &impl ConnectionTrait,
    token_hash: &str,
) -> Result<Option<ConfirmationRecord>, StoreError> {
    Ok(confirmations::Entity::find()
        .filter(confirmations::Column::TokenHash.eq(token_hash))
        .one(db)
        .await?
        .map(|m| ConfirmationRecord {
            id: m.id,
            site: SiteRef {
                tenant_id: crate::domain::TenantId(m.tenant_id),
                site_id: crate::domain::SiteId(m.site_id),
            },
            command_id: m.command_id,
            user_id: m.user_id.map(UserId),
            recipient_email: m.recipient_email,
            expires_at: m.expires_at,
            used_at: m.used_at,
        }))
}

/// Use a confirmation once: true when it was unused and unexpired at `at`.
pub async fn use_confirmation(
    db: &impl ConnectionTrait,
    id: uuid::Uuid,
    at: OffsetDateTime,
) -> Result<bool, StoreError> {
    let res = confirmations::Entity::update_many()
        .col_expr(confirmations::Column::UsedAt, Expr::value(at))
        .filter(confirmations::Column::Id.eq(id))
        .filter(confirmations::Column::UsedAt.is_null())
        .filter(confirmations::Column::ExpiresAt.gt(at))
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for s in CommandStatus::ALL {
            assert_eq!(CommandStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(CommandStatus::parse("pending"), None);
    }

    #[test]
    fn notes_are_trimmed_and_cut() {
        assert_eq!(tidy_note(None), None);
        assert_eq!(tidy_note(Some("  ")), None);
        assert_eq!(tidy_note(Some(" ok ")).as_deref(), Some("ok"));
        let long = "ä".repeat(MAX_NOTE_CHARS + 10);
        let cut = tidy_note(Some(&long)).unwrap();
        assert_eq!(cut.chars().count(), MAX_NOTE_CHARS);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn control_sources_round_trip() {
        for s in [
            ControlSource::Schedule,
            ControlSource::Manual,
            ControlSource::Action,
            ControlSource::Device,
            ControlSource::Clamped,
        ] {
            assert_eq!(parse_source(source_str(s)), s);
        }
    }
}
