//! Remote control use-cases: what a site's Controls page shows, turning a
//! person's request into a command (sent, or held for the owner's
//! confirmation), confirmation links, delivering commands over the agent link
//! and recording what the agent answers. Every change lands in the site's
//! audit log in the same transaction as the change itself.
//!
//! The server is a convenience layer here, not the safety mechanism: the
//! agent checks every command against its own envelope. What the server adds
//! is the comfort band, the second confirmation and the audit trail.

use protocol::{
    ActionInfo, Command, CommandOutcome, CommandResult, ControlKind, ControlRequest, ControlSource,
    ControlState, WritableInfo,
};
use rand::RngCore;
use sea_orm::{ConnectionTrait, TransactionTrait};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use super::sites::OpenSite;
use crate::{
    domain::{
        AgentId, Role, SiteRef, UserId,
        control::{
            self, Access, Band, ControlError, ControlSetting, Decision, OutputChoice, action_key,
            format_value, point_key,
        },
        control_text::{CommandNote, CommandReason, NumberField, Refusal},
        units,
    },
    state::AppState,
    store::{
        StoreError,
        audit::{self, AuditDraft},
        catalogue,
        control::{self as cstore, CommandRecord, CommandStatus, NewCommand},
        people::{self, AgentRecord},
    },
};

/// Newest commands read per page load (the latest per control is shown).
const LATEST_COMMANDS: u64 = 500;

/// The person acting, with their role on the site.
#[derive(Debug, Clone)]
pub struct Actor {
    /// Id.
    pub id: UserId,
    /// Shown name (goes into the audit log).
    pub name: String,
    /// E-mail (sent to the agent as `issued_by`).
    pub email: String,
    /// Role on the site.
    pub role: Role,
}

/// A writable point as the Controls page shows it.
#[derive(Debug, Clone)]
pub struct WritableControl {
    /// The agent that announced it.
    pub agent_id: AgentId,
    /// `device/point`.
    pub key: String,
    /// The envelope's entry.
    pub info: WritableInfo,
    /// The installer's settings.
    pub setting: ControlSetting,
    /// The comfort band in force.
    pub band: Band,
    /// Label from the agent's catalogue, if the point is measured too.
    pub label: Option<String>,
    /// Display unit symbol ("°C"), empty for outputs.
    pub unit: String,
    /// What the agent last reported.
    pub state: Option<ControlState>,
    /// The newest command.
    pub last: Option<CommandRecord>,
    /// A weekly schedule is in force at the agent (it accepted one, or the
    /// point follows one now), so ending an override returns to it rather
    /// than to the device's own value.
    pub has_schedule: bool,
}

/// A named action as the Controls page shows it.
#[derive(Debug, Clone)]
pub struct ActionControl {
    /// The agent that announced it.
    pub agent_id: AgentId,
    /// `action:name`.
    pub key: String,
    /// The envelope's entry.
    pub info: ActionInfo,
    /// The installer's settings (visibility).
    pub setting: ControlSetting,
    /// The state of a point this action drives right now, if running.
    pub running: Option<ControlState>,
    /// The newest command.
    pub last: Option<CommandRecord>,
}

/// Every control of a site.
#[derive(Debug, Clone, Default)]
pub struct SiteControls {
    /// Writable points, setpoints first, in envelope order.
    pub writables: Vec<WritableControl>,
    /// Named actions.
    pub actions: Vec<ActionControl>,
}

impl SiteControls {
    /// Only what `access` may see (homeowners: what the installer left visible).
    pub fn visible_to(mut self, access: Access) -> Self {
        if access == Access::Homeowner {
            self.writables.retain(|w| w.setting.homeowner_visible);
            self.actions.retain(|a| a.setting.homeowner_visible);
        }
        self
    }

    /// The writable with this key.
    pub fn writable(&self, key: &str) -> Option<&WritableControl> {
        self.writables.iter().find(|w| w.key == key)
    }

    /// The action with this name.
    pub fn action(&self, name: &str) -> Option<&ActionControl> {
        self.actions.iter().find(|a| a.info.name == name)
    }
}

/// Load a site's controls: envelopes, settings, states and newest commands.
pub async fn load(db: &impl ConnectionTrait, site: SiteRef) -> Result<SiteControls, StoreError> {
    let envelopes = cstore::envelopes_of_site(db, site).await?;
    let settings = cstore::settings_of_site(db, site).await?;
    let states = cstore::states_of_site(db, site).await?;
    let mut latest = cstore::latest_commands_of_site(db, site, LATEST_COMMANDS).await?;
    let points = catalogue::points_of_site(db, site).await?;
    let scheduled = cstore::scheduled_controls_of_site(db, site).await?;
    let mut out = SiteControls::default();
    for (agent_id, env) in envelopes {
        for w in env.writables {
            let key = point_key(&w.device, &w.point);
            if out.writable(&key).is_some() {
                continue; // a second agent naming the same point: the first wins
            }
            let setting = settings.get(&key).cloned().unwrap_or_default();
            let meta = points
                .iter()
                .find(|p| p.device_key == w.device && p.key == w.point);
            let unit = match (w.kind, meta) {
                (ControlKind::Output, _) => String::new(),
                (_, Some(m)) => units::symbol(&m.unit).to_owned(),
                (_, None) => "°C".to_owned(),
            };
            let state = states
                .iter()
                .find(|s| {
                    s.agent_id == agent_id && s.state.device == w.device && s.state.point == w.point
                })
                .map(|s| s.state.clone());
            let has_schedule = scheduled.contains(&key)
                || state
                    .as_ref()
                    .is_some_and(|s| s.source == ControlSource::Schedule);
            out.writables.push(WritableControl {
                agent_id,
                has_schedule,
                band: control::effective_band(&w, &setting),
                last: latest.remove(&key),
                label: meta.and_then(|m| m.label.clone()),
                unit,
                state,
                setting,
                key,
                info: w,
            });
        }
        for a in env.actions {
            let key = action_key(&a.name);
            if out.actions.iter().any(|x| x.key == key) {
                continue;
            }
            let running = states
                .iter()
                .find(|s| {
                    s.agent_id == agent_id
                        && s.state.source == ControlSource::Action
                        && s.state.action.as_deref() == Some(a.name.as_str())
                })
                .map(|s| s.state.clone());
            out.actions.push(ActionControl {
                agent_id,
                setting: settings.get(&key).cloned().unwrap_or_default(),
                last: latest.remove(&key),
                running,
                key,
                info: a,
            });
        }
    }
    // Setpoints first, then outputs; the envelope's order within each.
    out.writables
        .sort_by_key(|w| matches!(w.info.kind, ControlKind::Output));
    Ok(out)
}

/// A request from the Controls page.
#[derive(Debug, Clone)]
pub enum ControlForm {
    /// Set a setpoint.
    Setpoint {
        /// `device/point`.
        control: String,
        /// The value as typed.
        value: String,
    },
    /// Switch an output on, off, or back to its schedule.
    Output {
        /// `device/point`.
        control: String,
        /// `on`, `off` or `auto`.
        state: String,
    },
    /// Start or stop a named action.
    Action {
        /// Action name.
        action: String,
        /// `start` or `stop`.
        op: String,
        /// Minutes to run (start only).
        minutes: String,
    },
    /// Replace a point's weekly schedule.
    Schedule {
        /// `device/point`.
        control: String,
        /// The posted form fields.
        fields: Vec<(String, String)>,
    },
}

/// What became of an accepted request.
#[derive(Debug, Clone, PartialEq)]
pub enum Requested {
    /// Stored and handed to the agent (now, or when it next connects).
    Sent {
        /// The command.
        command_id: uuid::Uuid,
        /// Whether the agent has a live session right now.
        agent_online: bool,
    },
    /// Outside the comfort band: waiting for a homeowner's confirmation.
    Held {
        /// The command.
        command_id: uuid::Uuid,
        /// Who got a confirmation link.
        recipients: Vec<String>,
    },
}

/// Why a request was not accepted. `Display` is English (logs); a page
/// shows [`RequestError::refusal`] in its own language.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Refused by the rules (bad input, outside limits, not allowed).
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A confirmation is needed but the site has no homeowner to ask.
    #[error("{}", Refusal::NoOwnerToAsk)]
    NoOwner,
    /// A confirmation is needed but e-mail is not configured.
    #[error("{}", Refusal::MailOff)]
    MailOff,
    /// The confirmation e-mail could not be sent; nothing was held.
    #[error("{}", Refusal::MailFailed)]
    MailFailed,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RequestError {
    /// What to tell the person; `None` for a store failure, which is the
    /// server's problem and never shown as such.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            RequestError::Control(e) => Some(e.refusal().clone()),
            RequestError::NoOwner => Some(Refusal::NoOwnerToAsk),
            RequestError::MailOff => Some(Refusal::MailOff),
            RequestError::MailFailed => Some(Refusal::MailFailed),
            RequestError::Store(_) => None,
        }
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn secs(n: u64) -> Duration {
    Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 2))
}

fn unknown_control(raw: &str) -> ControlError {
    ControlError::Invalid(Refusal::UnknownControl {
        name: raw.chars().take(60).collect(),
    })
}

fn value_text(v: f64, w: &WritableInfo, unit: &str) -> String {
    match w.kind {
        ControlKind::Output => if v >= 0.5 { "on" } else { "off" }.to_owned(),
        ControlKind::Setpoint if unit.is_empty() => format_value(v, w.step),
        ControlKind::Setpoint => format!("{} {unit}", format_value(v, w.step)),
    }
}

fn band_text(b: Band, w: &WritableInfo, unit: &str) -> String {
    format!(
        "{}–{}{}",
        format_value(b.min, w.step),
        format_value(b.max, w.step),
        if unit.is_empty() {
            String::new()
        } else {
            format!(" {unit}")
        }
    )
}

/// What one accepted form turns into, before it is stored.
struct Plan {
    agent_id: AgentId,
    key: String,
    op: &'static str,
    request: ControlRequest,
    decision: Decision,
    before: Option<f64>,
    before_text: Option<String>,
    after_text: String,
    decision_text: String,
    /// For the e-mail: "set Room 3 floor to 25.0 °C".
    what: String,
    ttl: Duration,
}

fn plan(
    state: &AppState,
    site: &OpenSite,
    controls: &SiteControls,
    access: Access,
    form: ControlForm,
) -> Result<Plan, ControlError> {
    let cmd_ttl = secs(state.settings.control.command_ttl_seconds);
    match form {
        ControlForm::Setpoint { control, value } => {
            let w = controls
                .writable(&control)
                .filter(|w| w.info.kind == ControlKind::Setpoint)
                .ok_or_else(|| unknown_control(&control))?;
            let v = control::parse_number(&value, NumberField::Setpoint)?;
            let decision = control::check_value(&w.info, w.band, v, access, &w.unit)?;
            let v = control::tidy(v, w.info.step);
            let before = w.state.as_ref().and_then(|s| s.reported);
            let label = w.label.clone().unwrap_or_else(|| w.key.clone());
            Ok(Plan {
                agent_id: w.agent_id,
                key: w.key.clone(),
                op: "set",
                request: ControlRequest::Set {
                    device: w.info.device.clone(),
                    point: w.info.point.clone(),
                    value: v,
                    until: None,
                },
                decision,
                before,
                before_text: before.map(|b| value_text(b, &w.info, &w.unit)),
                after_text: value_text(v, &w.info, &w.unit),
                decision_text: decision_text(decision, w),
                what: format!("set {label} to {}", value_text(v, &w.info, &w.unit)),
                ttl: cmd_ttl,
            })
        }
        ControlForm::Output {
            control,
            state: choice,
        } => {
            let w = controls
                .writable(&control)
                .filter(|w| w.info.kind == ControlKind::Output)
                .ok_or_else(|| unknown_control(&control))?;
            let choice = control::parse_output_choice(&choice)?;
            let before = w.state.as_ref().and_then(|s| s.reported);
            let label = w.label.clone().unwrap_or_else(|| w.key.clone());
            let (op, request, after_text) = match control::output_value(&w.info, choice) {
                Some(v) => {
                    control::check_value(&w.info, control::envelope_band(&w.info), v, access, "")?;
                    (
                        "set",
                        ControlRequest::Set {
                            device: w.info.device.clone(),
                            point: w.info.point.clone(),
                            value: v,
                            until: None,
                        },
                        value_text(v, &w.info, ""),
                    )
                }
                None => (
                    "release",
                    ControlRequest::Release {
                        device: w.info.device.clone(),
                        point: w.info.point.clone(),
                    },
                    "schedule".to_owned(),
                ),
            };
            let what = match choice {
                OutputChoice::On => format!("switch {label} on"),
                OutputChoice::Off => format!("switch {label} off"),
                OutputChoice::Auto => format!("return {label} to its schedule"),
            };
            Ok(Plan {
                agent_id: w.agent_id,
                key: w.key.clone(),
                op,
                request,
                decision: Decision::Send,
                before,
                before_text: before.map(|b| value_text(b, &w.info, "")),
                after_text,
                decision_text: "within the envelope".into(),
                what,
                ttl: cmd_ttl,
            })
        }
        ControlForm::Action {
            action,
            op,
            minutes,
        } => {
            let a = controls
                .action(&action)
                .ok_or_else(|| unknown_control(&action))?;
            let label = a.info.label.clone().unwrap_or_else(|| a.info.name.clone());
            let (op, request, after_text, what) = match op.as_str() {
                "start" => {
                    let m = control::parse_action_minutes(&a.info, &minutes)?;
                    (
                        "start_action",
                        ControlRequest::StartAction {
                            action: a.info.name.clone(),
                            duration_s: m * 60,
                        },
                        format!("running for {m} min"),
                        format!("start {label} for {m} minutes"),
                    )
                }
                "stop" => (
                    "stop_action",
                    ControlRequest::StopAction {
                        action: a.info.name.clone(),
                    },
                    "stopped".to_owned(),
                    format!("stop {label}"),
                ),
                other => {
                    return Err(ControlError::Invalid(Refusal::NotAnActionOp {
                        typed: other.chars().take(20).collect(),
                    }));
                }
            };
            Ok(Plan {
                agent_id: a.agent_id,
                key: a.key.clone(),
                op,
                request,
                decision: Decision::Send,
                before: None,
                before_text: Some(
                    if a.running.is_some() {
                        "running"
                    } else {
                        "idle"
                    }
                    .into(),
                ),
                after_text,
                decision_text: format!(
                    "within the envelope (at most {} min)",
                    a.info.max_duration_s / 60
                ),
                what,
                ttl: cmd_ttl,
            })
        }
        ControlForm::Schedule { control, fields } => {
            let w = controls
                .writable(&control)
                .ok_or_else(|| unknown_control(&control))?;
            let (schedule, decision) = control::parse_schedule(
                &fields,
                &w.info,
                w.band,
                access,
                &w.unit,
                &site.summary.timezone,
            )?;
            let label = w.label.clone().unwrap_or_else(|| w.key.clone());
            Ok(Plan {
                agent_id: w.agent_id,
                key: w.key.clone(),
                op: "set_schedule",
                after_text: control::describe_schedule(&schedule),
                request: ControlRequest::SetSchedule {
                    device: w.info.device.clone(),
                    point: w.info.point.clone(),
                    schedule,
                },
                decision,
                before: None,
                before_text: None,
                decision_text: decision_text(decision, w),
                what: format!("change the weekly schedule of {label}"),
                ttl: secs(state.settings.control.schedule_ttl_seconds),
            })
        }
    }
}

fn decision_text(d: Decision, w: &WritableControl) -> String {
    match d {
        Decision::Send => "within the envelope and the comfort band".into(),
        Decision::Confirm => format!(
            "outside the comfort band {}; within the envelope {}; needs the owner's confirmation",
            band_text(w.band, &w.info, &w.unit),
            band_text(control::envelope_band(&w.info), &w.info, &w.unit)
        ),
    }
}

/// Turn a person's request into a command: checked, stored with its audit
/// entry, and handed to the agent, or held and mailed to the owners.
pub async fn request(
    state: &AppState,
    site: &OpenSite,
    actor: &Actor,
    form: ControlForm,
) -> Result<Requested, RequestError> {
    let access = control::access(actor.role);
    if access == Access::ReadOnly {
        return Err(ControlError::NotAllowed(Refusal::ReadOnly).into());
    }
    let site_ref = site.summary.site;
    let controls = load(&state.db, site_ref).await?.visible_to(access);
    let plan = plan(state, site, &controls, access, form)?;
    let request_json = serde_json::to_string(&plan.request)
        .map_err(|e| StoreError::Db(sea_orm::DbErr::Custom(format!("request JSON: {e}"))))?;
    let issued_at = now();
    let id = uuid::Uuid::now_v7();
    let mut cmd = NewCommand {
        id,
        site: site_ref,
        agent_id: plan.agent_id,
        control_key: plan.key.clone(),
        op: plan.op.to_owned(),
        request: request_json,
        requested_by: actor.id,
        requested_by_name: actor.name.clone(),
        issued_by: actor.email.clone(),
        issued_at,
        expires_at: issued_at + plan.ttl,
        status: CommandStatus::Sent,
        outside_band: plan.decision == Decision::Confirm,
        value_before: plan.before,
    };
    let draft = |result: &str| AuditDraft {
        actor_user_id: Some(actor.id.0),
        actor_name: actor.name.clone(),
        action: plan.op.to_owned(),
        target: plan.key.clone(),
        before: plan.before_text.clone(),
        after: Some(plan.after_text.clone()),
        decision: Some(plan.decision_text.clone()),
        result: result.to_owned(),
        command_id: Some(id),
    };
    if plan.decision == Decision::Send {
        let online = state.links.is_connected(plan.agent_id);
        let txn = state.db.begin().await.map_err(StoreError::from)?;
        cstore::insert_command(&txn, &cmd).await?;
        audit::append(
            &txn,
            site_ref,
            draft(if online {
                "sent"
            } else {
                "sent; waits for the agent to connect"
            }),
        )
        .await?;
        txn.commit().await.map_err(StoreError::from)?;
        tracing::info!(command_id = %id, site_id = %site_ref.site_id, op = plan.op, control = %plan.key, "command stored");
        state.links.poke(plan.agent_id);
        publish_command_status(state, site_ref, &plan.key, id, CommandStatus::Sent, None);
        return Ok(Requested::Sent {
            command_id: id,
            agent_online: online,
        });
    }
    // Outside the comfort band: hold it and ask the owners.
    if !state.mailer.is_configured() {
        return Err(RequestError::MailOff);
    }
    let owners = people::homeowners_of_site(&state.db, site_ref).await?;
    if owners.is_empty() {
        return Err(RequestError::NoOwner);
    }
    let link_expires = issued_at
        + Duration::minutes(
            i64::try_from(state.settings.control.confirmation_ttl_minutes).unwrap_or(60),
        );
    cmd.status = CommandStatus::HeldForConfirmation;
    cmd.expires_at = link_expires;
    let mut links = Vec::with_capacity(owners.len());
    let txn = state.db.begin().await.map_err(StoreError::from)?;
    cstore::insert_command(&txn, &cmd).await?;
    for owner in &owners {
        let token = new_token();
        cstore::insert_confirmation(
            &txn,
            site_ref,
            id,
            owner.id,
            &owner.email,
            &hash_token(&token),
            link_expires,
        )
        .await?;
        links.push((owner.clone(), token));
    }
    audit::append(
        &txn,
        site_ref,
        draft(&format!(
            "held for confirmation by {}",
            owners
                .iter()
                .map(|o| o.display_name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    )
    .await?;
    txn.commit().await.map_err(StoreError::from)?;
    let mut recipients = Vec::new();
    for (owner, token) in &links {
        let (subject, body) = confirmation_mail(
            state,
            &site.summary.name,
            actor,
            &plan.what,
            &plan.decision_text,
            token,
            link_expires,
        );
        match state.mailer.send(&owner.email, &subject, &body).await {
            Ok(()) => recipients.push(owner.email.clone()),
            Err(e) => {
                tracing::warn!(command_id = %id, error = %e, "confirmation e-mail not sent");
            }
        }
    }
    if recipients.is_empty() {
        cancel(state, site_ref, id, &plan.key, &CommandReason::MailNotSent).await?;
        return Err(RequestError::MailFailed);
    }
    publish_command_status(
        state,
        site_ref,
        &plan.key,
        id,
        CommandStatus::HeldForConfirmation,
        None,
    );
    Ok(Requested::Held {
        command_id: id,
        recipients,
    })
}

async fn cancel(
    state: &AppState,
    site: SiteRef,
    id: uuid::Uuid,
    key: &str,
    reason: &CommandReason,
) -> Result<(), StoreError> {
    let txn = state.db.begin().await?;
    if cstore::transition(
        &txn,
        id,
        &[CommandStatus::HeldForConfirmation],
        CommandStatus::Cancelled,
        Some(&reason.to_stored()),
        None,
    )
    .await?
    {
        audit::append(
            &txn,
            site,
            AuditDraft {
                actor_user_id: None,
                actor_name: "system".into(),
                action: "cancel".into(),
                target: key.to_owned(),
                result: format!("cancelled: {reason}"),
                command_id: Some(id),
                ..Default::default()
            },
        )
        .await?;
    }
    txn.commit().await?;
    publish_command_status(state, site, key, id, CommandStatus::Cancelled, Some(reason));
    Ok(())
}

fn new_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of a confirmation token (hex SHA-256).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn utc_text(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

fn confirmation_mail(
    state: &AppState,
    site_name: &str,
    actor: &Actor,
    what: &str,
    why: &str,
    token: &str,
    expires: OffsetDateTime,
) -> (String, String) {
    let link = format!("{}/confirm/{token}", state.public_url.trim_end_matches('/'));
    let minutes = state.settings.control.confirmation_ttl_minutes;
    let until = utc_text(expires);
    let subject = format!("Confirm a change at {site_name} / Vahvista muutos: {site_name}");
    let body = format!(
        "{name} ({role}) wants to {what} at {site_name}.\n\
         This is {why}.\n\
         Nothing changes unless you confirm.\n\n\
         Confirm or decline: {link}\n\n\
         The link works once and expires at {until} ({minutes} minutes).\n\
         If you did not expect this, decline it and tell your installer.\n\n\
         --\n\n\
         {name} ({role}) pyytää muutosta kohteessa {site_name}: {what}.\n\
         Muutos on mukavuusalueen ulkopuolella, joten se odottaa vahvistustasi.\n\
         Mikään ei muutu, ellet vahvista.\n\n\
         Vahvista tai hylkää: {link}\n\n\
         Linkki toimii kerran ja vanhenee {until} ({minutes} min).\n",
        name = actor.name,
        role = actor.role.label(),
    );
    (subject, body)
}

/// What a confirmation link leads to.
#[derive(Debug, Clone)]
pub enum ConfirmLookup {
    /// The link is valid and its command waits.
    Valid(PendingConfirmation),
    /// The link's time is up.
    Expired,
    /// The link was used, or the command was already decided.
    Used,
    /// No such link.
    Unknown,
}

/// A held command as its confirmation page shows it.
#[derive(Debug, Clone)]
pub struct PendingConfirmation {
    /// The site's name.
    pub site_name: String,
    /// Who asked.
    pub requested_by: String,
    /// When.
    pub requested_at: OffsetDateTime,
    /// The control.
    pub target: String,
    /// The requested value or schedule, as in the audit log.
    pub value: String,
    /// Why it needs confirmation.
    pub reason: String,
    /// When the link stops working.
    pub expires_at: OffsetDateTime,
}

/// Look a confirmation token up without using it.
pub async fn lookup_confirmation(
    state: &AppState,
    token: &str,
) -> Result<ConfirmLookup, StoreError> {
    let Some(conf) = cstore::find_confirmation(&state.db, &hash_token(token)).await? else {
        return Ok(ConfirmLookup::Unknown);
    };
    if conf.used_at.is_some() {
        return Ok(ConfirmLookup::Used);
    }
    if conf.expires_at <= now() {
        expire_held(state, conf.site, conf.command_id).await?;
        return Ok(ConfirmLookup::Expired);
    }
    let Some(cmd) = cstore::find_command(&state.db, conf.command_id).await? else {
        return Ok(ConfirmLookup::Unknown);
    };
    if cmd.status != CommandStatus::HeldForConfirmation {
        return Ok(ConfirmLookup::Used);
    }
    let site_name = people::find_site(&state.db, conf.site.site_id)
        .await?
        .map(|s| s.name)
        .unwrap_or_default();
    let requested = audit::entries_of_command(&state.db, conf.site.site_id, cmd.id)
        .await?
        .into_iter()
        .next();
    Ok(ConfirmLookup::Valid(PendingConfirmation {
        site_name,
        requested_by: cmd.requested_by_name.clone(),
        requested_at: cmd.issued_at,
        target: cmd.control_key.clone(),
        value: requested
            .as_ref()
            .and_then(|e| e.entry.after.clone())
            .unwrap_or_default(),
        reason: requested.and_then(|e| e.entry.decision).unwrap_or_default(),
        expires_at: conf.expires_at,
    }))
}

/// The outcome of using a confirmation link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    /// Confirmed: the command is on its way to the agent.
    Confirmed,
    /// Declined: the command was cancelled.
    Declined,
    /// The link's time was up; nothing was sent.
    Expired,
    /// The link was used before, or the command was already decided.
    Used,
    /// No such link.
    Unknown,
}

/// Use a confirmation link once: confirm (send the command) or decline it.
pub async fn decide(state: &AppState, token: &str, confirm: bool) -> Result<Decided, StoreError> {
    let Some(conf) = cstore::find_confirmation(&state.db, &hash_token(token)).await? else {
        return Ok(Decided::Unknown);
    };
    let at = now();
    if conf.used_at.is_some() {
        return Ok(Decided::Used);
    }
    if conf.expires_at <= at {
        expire_held(state, conf.site, conf.command_id).await?;
        return Ok(Decided::Expired);
    }
    let confirmer = match conf.user_id {
        Some(u) => people::find_user(&state.db, u).await?,
        None => None,
    };
    let (actor_id, actor_name) = match &confirmer {
        Some(u) => (Some(u.id.0), u.display_name.clone()),
        None => (None, conf.recipient_email.clone()),
    };
    let Some(cmd) = cstore::find_command(&state.db, conf.command_id).await? else {
        return Ok(Decided::Unknown);
    };
    let ttl = if cmd.op == "set_schedule" {
        secs(state.settings.control.schedule_ttl_seconds)
    } else {
        secs(state.settings.control.command_ttl_seconds)
    };
    let txn = state.db.begin().await?;
    if !cstore::use_confirmation(&txn, conf.id, at).await? {
        txn.rollback().await?;
        return Ok(Decided::Used);
    }
    let (to, reason, expires, action, result) = if confirm {
        (
            CommandStatus::Sent,
            None,
            Some(at + ttl),
            "confirm",
            "confirmed; sent".to_owned(),
        )
    } else {
        (
            CommandStatus::Cancelled,
            Some(CommandReason::Declined {
                by: actor_name.clone(),
            }),
            None,
            "decline",
            "declined; cancelled".to_owned(),
        )
    };
    if !cstore::transition(
        &txn,
        cmd.id,
        &[CommandStatus::HeldForConfirmation],
        to,
        reason.as_ref().map(CommandReason::to_stored).as_deref(),
        expires,
    )
    .await?
    {
        // Another owner decided first (or the command expired meanwhile).
        txn.rollback().await?;
        return Ok(Decided::Used);
    }
    let requested = audit::entries_of_command(&txn, conf.site.site_id, cmd.id)
        .await?
        .into_iter()
        .next();
    audit::append(
        &txn,
        conf.site,
        AuditDraft {
            actor_user_id: actor_id,
            actor_name: format!("{actor_name} (e-mail link)"),
            action: action.into(),
            target: cmd.control_key.clone(),
            before: requested.as_ref().and_then(|e| e.entry.before.clone()),
            after: requested.and_then(|e| e.entry.after),
            decision: Some(format!("requested by {}", cmd.requested_by_name)),
            result,
            command_id: Some(cmd.id),
        },
    )
    .await?;
    txn.commit().await?;
    tracing::info!(command_id = %cmd.id, confirm, "confirmation link used");
    if confirm {
        state.links.poke(cmd.agent_id);
    }
    publish_command_status(
        state,
        conf.site,
        &cmd.control_key,
        cmd.id,
        to,
        reason.as_ref(),
    );
    Ok(if confirm {
        Decided::Confirmed
    } else {
        Decided::Declined
    })
}

/// A held command whose links all expired becomes `expired`.
async fn expire_held(state: &AppState, site: SiteRef, id: uuid::Uuid) -> Result<(), StoreError> {
    let Some(cmd) = cstore::find_command(&state.db, id).await? else {
        return Ok(());
    };
    let live = cstore::held_without_live_link(&state.db, site, now())
        .await?
        .into_iter()
        .any(|c| c.id == id);
    if live {
        expire(
            state,
            &cmd,
            &CommandReason::NotConfirmedInTime,
            CommandStatus::HeldForConfirmation,
        )
        .await?;
    }
    Ok(())
}

async fn expire(
    state: &AppState,
    cmd: &CommandRecord,
    reason: &CommandReason,
    from: CommandStatus,
) -> Result<(), StoreError> {
    let txn = state.db.begin().await?;
    if cstore::transition(
        &txn,
        cmd.id,
        &[from],
        CommandStatus::Expired,
        Some(&reason.to_stored()),
        None,
    )
    .await?
    {
        audit::append(
            &txn,
            cmd.site,
            AuditDraft {
                actor_user_id: None,
                actor_name: "system".into(),
                action: "expire".into(),
                target: cmd.control_key.clone(),
                result: format!("expired: {reason}"),
                command_id: Some(cmd.id),
                ..Default::default()
            },
        )
        .await?;
        txn.commit().await?;
        publish_command_status(
            state,
            cmd.site,
            &cmd.control_key,
            cmd.id,
            CommandStatus::Expired,
            Some(reason),
        );
    } else {
        txn.rollback().await?;
    }
    Ok(())
}

/// Expire what can no longer happen at a site: undelivered commands past
/// their validity, held commands whose links all expired. Run when the
/// Controls page is shown, so it never shows a stale "waiting".
pub async fn sweep_site(state: &AppState, site: SiteRef) -> Result<(), StoreError> {
    let at = now();
    for c in cstore::overdue_undelivered(&state.db, None, Some(site), at).await? {
        expire(
            state,
            &c,
            &CommandReason::OfflineUntilExpiry,
            CommandStatus::Sent,
        )
        .await?;
    }
    for c in cstore::held_without_live_link(&state.db, site, at).await? {
        expire(
            state,
            &c,
            &CommandReason::NotConfirmedInTime,
            CommandStatus::HeldForConfirmation,
        )
        .await?;
    }
    Ok(())
}

/// The commands an agent's session should send now, oldest first. Overdue
/// ones are expired (and audited) instead. The session claims each with
/// [`claim`] right before sending it.
pub async fn deliverable(
    state: &AppState,
    agent: &AgentRecord,
) -> Result<Vec<Command>, StoreError> {
    let at = now();
    for c in cstore::overdue_undelivered(&state.db, Some(agent.id), None, at).await? {
        expire(
            state,
            &c,
            &CommandReason::OfflineUntilExpiry,
            CommandStatus::Sent,
        )
        .await?;
    }
    let pending = cstore::undelivered(&state.db, agent.id).await?;
    Ok(pending
        .into_iter()
        .filter(|c| c.expires_at > at)
        .filter_map(|c| match serde_json::from_str::<ControlRequest>(&c.request) {
            Ok(request) => Some(Command {
                id: c.id,
                issued_at: c.issued_at,
                expires_at: c.expires_at,
                issued_by: c.issued_by,
                request,
            }),
            Err(e) => {
                tracing::error!(command_id = %c.id, error = %e, "stored command request does not parse");
                None
            }
        })
        .collect())
}

/// Mark a command as handed to a session; false when another session did.
pub async fn claim(state: &AppState, id: uuid::Uuid) -> Result<bool, StoreError> {
    cstore::claim_command(&state.db, id, now()).await
}

/// Undo [`claim`] when the frame could not be written.
pub async fn unclaim(state: &AppState, id: uuid::Uuid) -> Result<(), StoreError> {
    cstore::unclaim_command(&state.db, id).await
}

fn fmt_opt(v: Option<f64>) -> Option<String> {
    v.filter(|v| v.is_finite()).map(|v| {
        let s = format!("{v}");
        if s.contains('.') || s.contains('e') {
            s
        } else {
            format!("{s}.0")
        }
    })
}

/// Store an agent's answer, audit it and tell the site's viewers. Answers
/// for unknown commands, or commands of another agent, are logged and
/// dropped.
pub async fn record_result(
    state: &AppState,
    agent: &AgentRecord,
    result: &CommandResult,
) -> Result<(), StoreError> {
    let status = match result.outcome {
        CommandOutcome::Applied => CommandStatus::Applied,
        CommandOutcome::Rejected => CommandStatus::Rejected,
        CommandOutcome::Expired => CommandStatus::Expired,
        CommandOutcome::Failed | CommandOutcome::Unknown => CommandStatus::Failed,
    };
    let reason = result.reason.as_deref().unwrap_or("");
    let decision = match result.outcome {
        CommandOutcome::Applied => "accepted by the agent's envelope".to_owned(),
        CommandOutcome::Rejected => format!("refused by the agent: {reason}"),
        CommandOutcome::Expired => "not applied: it reached the agent after it expired".to_owned(),
        CommandOutcome::Failed => format!("accepted by the agent; the write failed: {reason}"),
        CommandOutcome::Unknown => "the agent answered with an unknown outcome".to_owned(),
    };
    let txn = state.db.begin().await?;
    let Some(cmd) = cstore::record_result(&txn, agent.id, result, status).await? else {
        txn.rollback().await?;
        tracing::warn!(agent_id = %agent.id, command_id = %result.id,
            "result for an unknown, foreign or already answered command ignored");
        return Ok(());
    };
    audit::append(
        &txn,
        cmd.site,
        AuditDraft {
            actor_user_id: cmd.requested_by.map(|u| u.0),
            actor_name: cmd.requested_by_name.clone(),
            action: "result".into(),
            target: cmd.control_key.clone(),
            before: fmt_opt(result.before),
            after: fmt_opt(result.after),
            decision: Some(decision),
            result: if reason.is_empty() {
                status.as_str().to_owned()
            } else {
                format!("{}: {reason}", status.as_str())
            },
            command_id: Some(cmd.id),
        },
    )
    .await?;
    txn.commit().await?;
    tracing::info!(agent_id = %agent.id, command_id = %cmd.id, status = status.as_str(), "command result stored");
    let note = CommandNote::of_stored(
        result.reason.as_deref(),
        true,
        status == CommandStatus::Rejected,
    );
    let msg = serde_json::json!({
        "type": "command",
        "control": cmd.control_key,
        "command_id": cmd.id.to_string(),
        "status": status.as_str(),
        "reason": result.reason,
        "reason_text": note.as_ref().map(CommandNote::texts),
        "before": result.before.filter(|v| v.is_finite()),
        "after": result.after.filter(|v| v.is_finite()),
        "at": rfc3339(result.at),
    });
    state.hub.publish_event(cmd.site.site_id, &msg);
    Ok(())
}

/// Store a point's control state and tell the site's viewers.
pub async fn record_state(
    state: &AppState,
    agent: &AgentRecord,
    s: &ControlState,
) -> Result<(), StoreError> {
    cstore::upsert_state(&state.db, agent, s).await?;
    let msg = serde_json::json!({
        "type": "control_state",
        "control": point_key(&s.device, &s.point),
        "commanded": s.commanded.filter(|v| v.is_finite()),
        "reported": s.reported.filter(|v| v.is_finite()),
        "source": cstore_source(s.source),
        "until": s.until.map(rfc3339),
        "action": s.action,
        "note": cstore::tidy_note(s.note.as_deref()),
    });
    state.hub.publish_event(agent.site.site_id, &msg);
    Ok(())
}

fn cstore_source(s: ControlSource) -> &'static str {
    match s {
        ControlSource::Schedule => "schedule",
        ControlSource::Manual => "manual",
        ControlSource::Action => "action",
        ControlSource::Device => "device",
        ControlSource::Clamped => "clamped",
        ControlSource::Unknown => "unknown",
    }
}

/// Tell the site's viewers a command's new status. The reason goes out in
/// English (`reason`) and in every page language (`reason_text`), since one
/// message serves viewers of any language.
fn publish_command_status(
    state: &AppState,
    site: SiteRef,
    key: &str,
    id: uuid::Uuid,
    status: CommandStatus,
    reason: Option<&CommandReason>,
) {
    let note = reason.map(|r| CommandNote::Server(r.clone()));
    let msg = serde_json::json!({
        "type": "command",
        "control": key,
        "command_id": id.to_string(),
        "status": status.as_str(),
        "reason": reason.map(CommandReason::to_string),
        "reason_text": note.as_ref().map(CommandNote::texts),
        "at": rfc3339(now()),
    });
    state.hub.publish_event(site.site_id, &msg);
}

/// The installer's settings form for one control.
#[derive(Debug, Clone)]
pub struct SettingsForm {
    /// The control key.
    pub control: String,
    /// Lowest comfort value (setpoints; empty = envelope).
    pub band_min: String,
    /// Highest comfort value.
    pub band_max: String,
    /// Homeowners see the control.
    pub homeowner_visible: bool,
}

/// Save a control's comfort band and visibility (installers only).
pub async fn update_settings(
    state: &AppState,
    site: &OpenSite,
    actor: &Actor,
    form: SettingsForm,
) -> Result<(), RequestError> {
    if !control::may_configure(actor.role) {
        return Err(ControlError::NotAllowed(Refusal::OnlyInstaller).into());
    }
    let site_ref = site.summary.site;
    let controls = load(&state.db, site_ref).await?;
    let describe = |s: &ControlSetting, w: Option<&WritableControl>| {
        let band = match (s.band, w) {
            (Some(b), Some(w)) => band_text(b, &w.info, &w.unit),
            _ => "envelope".to_owned(),
        };
        format!(
            "band {band}; {}",
            if s.homeowner_visible {
                "visible to homeowners"
            } else {
                "hidden from homeowners"
            }
        )
    };
    let (key, old, new, w) = if let Some(w) = controls.writable(&form.control) {
        let band = if w.info.kind == ControlKind::Setpoint {
            control::parse_band(&w.info, &form.band_min, &form.band_max)?
        } else if form.band_min.trim().is_empty() && form.band_max.trim().is_empty() {
            None
        } else {
            return Err(ControlError::Invalid(Refusal::NoBandForOutputs).into());
        };
        let new = ControlSetting {
            band,
            homeowner_visible: form.homeowner_visible,
        };
        (w.key.clone(), w.setting.clone(), new, Some(w))
    } else if let Some(a) = controls.actions.iter().find(|a| a.key == form.control) {
        if !(form.band_min.trim().is_empty() && form.band_max.trim().is_empty()) {
            return Err(ControlError::Invalid(Refusal::NoBandForActions).into());
        }
        let new = ControlSetting {
            band: None,
            homeowner_visible: form.homeowner_visible,
        };
        (a.key.clone(), a.setting.clone(), new, None)
    } else {
        return Err(unknown_control(&form.control).into());
    };
    let txn = state.db.begin().await.map_err(StoreError::from)?;
    cstore::save_setting(&txn, site_ref, &key, &new, actor.id).await?;
    audit::append(
        &txn,
        site_ref,
        AuditDraft {
            actor_user_id: Some(actor.id.0),
            actor_name: actor.name.clone(),
            action: "control_settings".into(),
            target: key,
            before: Some(describe(&old, w)),
            after: Some(describe(&new, w)),
            decision: None,
            result: "saved".into(),
            command_id: None,
        },
    )
    .await?;
    txn.commit().await.map_err(StoreError::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_stored_only_as_hashes() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 bytes, base64url without padding");
        let h = hash_token(&a);
        assert_eq!(h.len(), 64);
        assert!(!h.contains(&a));
        assert_eq!(h, hash_token(&a));
    }

    #[test]
    fn result_values_keep_a_decimal_point() {
        assert_eq!(fmt_opt(Some(21.0)), Some("21.0".into()));
        assert_eq!(fmt_opt(Some(21.5)), Some("21.5".into()));
        assert_eq!(fmt_opt(Some(f64::NAN)), None);
        assert_eq!(fmt_opt(None), None);
    }
}
