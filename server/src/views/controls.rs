//! Views of the remote-control pages: a site's Controls page, the weekly
//! schedule editor, the audit log and the e-mailed confirmation page.
//!
//! Builders here turn service data into prepared strings (numbers in the
//! viewer's notation, times as RFC 3339 plus a UTC fallback that
//! `static/js/localtime.js` re-renders locally), so the templates hold no
//! logic. `static/js/controls.js` keeps the cards current from the live feed,
//! and `static/js/schedule.js` gives the editor's days their copy buttons;
//! everything they need comes through `data-*` attributes.

use askama::Template;
use protocol::{ControlKind, ControlRequest, ControlSource, ControlState, WeeklySchedule};
use time::OffsetDateTime;

use super::{Chrome, translate, utc_fallback};
use crate::{
    domain::{
        Lang,
        audit::{ChainFault, ChainedEntry},
        control::{self, Access, EXCEPTION_LABELS, MAX_EXCEPTIONS, format_periods, format_value},
        control_text::CommandNote,
        dashboard::localized_label,
    },
    services::control::{ActionControl, SiteControls, WritableControl},
    store::control::{CommandRecord, CommandStatus},
};

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A number for people: the step's decimals, a decimal comma in Finnish.
pub fn shown(v: f64, step: f64, lang: &str) -> String {
    let s = format_value(v, step);
    if lang == "fi" { s.replace('.', ",") } else { s }
}

/// A moment shown on a page: machine time for JS, UTC text as fallback.
#[derive(Clone, Debug, PartialEq)]
pub struct Moment {
    /// RFC 3339 UTC.
    pub iso: String,
    /// "2026-11-21 12:00 UTC".
    pub text: String,
}

impl Moment {
    /// The moment `t`.
    pub fn of(t: OffsetDateTime) -> Self {
        let iso = rfc3339(t);
        Self {
            text: utc_fallback(&iso),
            iso,
        }
    }
}

/// The newest command of a control.
#[derive(Clone, Debug)]
pub struct LastCommandView {
    /// `held_for_confirmation`, `sent`, `queued` (sent, not yet delivered),
    /// `applied`, ... (the CSS and JS hook).
    pub status: String,
    /// Localised status.
    pub status_text: String,
    /// Why, in the page's language: the server's reason, or the agent's own
    /// words labelled as coming from the site ([`CommandNote`]); or empty.
    pub reason: String,
    /// When it was asked.
    pub at: Moment,
    /// Who asked.
    pub by: String,
}

/// `queued` only while the site is offline: a command stored a moment ago for
/// a connected agent is being handed over, and "waiting for the site to
/// connect" would be wrong.
fn status_key(c: &CommandRecord, agent_online: bool) -> &'static str {
    match c.status {
        CommandStatus::Sent if c.delivered_at.is_none() && !agent_online => "queued",
        s => s.as_str(),
    }
}

/// Localised text of a status key (see [`LastCommandView::status`]).
pub fn status_text(lang: &str, key: &str) -> &'static str {
    translate(
        lang,
        match key {
            "held_for_confirmation" => "st_held",
            "sent" => "st_sent",
            "queued" => "st_queued",
            "applied" => "st_applied",
            "rejected" => "st_rejected",
            "expired" => "st_expired",
            "failed" => "st_failed",
            "cancelled" => "st_cancelled",
            _ => "st_unknown",
        },
    )
}

fn last_view(c: &Option<CommandRecord>, lang: &str, agent_online: bool) -> Option<LastCommandView> {
    c.as_ref().map(|c| {
        let key = status_key(c, agent_online);
        let note = CommandNote::of_stored(
            c.reason.as_deref(),
            c.result_at.is_some(),
            c.status == CommandStatus::Rejected,
        );
        LastCommandView {
            status: key.to_owned(),
            status_text: status_text(lang, key).to_owned(),
            reason: note
                .map(|n| n.text(Lang::from_code(lang)))
                .unwrap_or_default(),
            at: Moment::of(c.issued_at),
            by: c.requested_by_name.clone(),
        }
    })
}

/// Why a point has its value, as a source key and a localised phrase.
fn why(state: Option<&ControlState>, lang: &str) -> (String, String, Option<Moment>) {
    let Some(s) = state else {
        return ("none".into(), translate(lang, "why_none").into(), None);
    };
    let until = s.until.map(Moment::of);
    let (key, text) = match s.source {
        ControlSource::Schedule => ("schedule", "why_schedule"),
        ControlSource::Manual => ("manual", "why_manual"),
        ControlSource::Action => ("action", "why_action"),
        ControlSource::Device => ("device", "why_device"),
        ControlSource::Clamped => ("clamped", "why_clamped"),
        ControlSource::Unknown => ("unknown", "why_none"),
    };
    (key.into(), translate(lang, text).into(), until)
}

/// One setpoint or output card.
#[derive(Clone, Debug)]
pub struct ControlCard {
    /// `device/point` (the forms' `control` field, `data-control-key`).
    pub key: String,
    /// Element id.
    pub dom_id: String,
    /// Label.
    pub label: String,
    /// Unit symbol (setpoints).
    pub unit: String,
    /// `setpoint` or `output`.
    pub kind: &'static str,
    /// What the agent commands, shown.
    pub commanded: String,
    /// What the device reports, shown.
    pub reported: String,
    /// `schedule`, `manual`, `action`, `device`, `clamped` or `none`.
    pub source: String,
    /// Localised reason phrase.
    pub why: String,
    /// The agent's own words on who switches the point (its note), or empty.
    pub note: String,
    /// End of the override or action.
    pub until: Option<Moment>,
    /// Decimals of the step (for JS).
    pub decimals: usize,
    /// Number input: current value and limits for this person.
    pub value_input: String,
    /// Input `min`.
    pub input_min: String,
    /// Input `max`.
    pub input_max: String,
    /// Input `step`.
    pub input_step: String,
    /// One step down, if allowed.
    pub minus: Option<String>,
    /// One step up, if allowed.
    pub plus: Option<String>,
    /// "19.0–23.0 °C".
    pub band_text: String,
    /// "18.0–27.0 °C".
    pub limits_text: String,
    /// Installer form: band min (empty = envelope).
    pub band_min: String,
    /// Installer form: band max.
    pub band_max: String,
    /// Shown to homeowners.
    pub visible: bool,
    /// Can follow a schedule.
    pub schedulable: bool,
    /// The schedule editor.
    pub schedule_url: String,
    /// The newest command.
    pub last: Option<LastCommandView>,
    /// Output state now: `on`, `off` or `unknown`.
    pub output_state: &'static str,
    /// A weekly schedule is in force (`data-has-schedule`).
    pub has_schedule: bool,
    /// The output's On and Off buttons show which of them holds now
    /// (`aria-pressed`).
    pub on_pressed: bool,
    /// See [`ControlCard::on_pressed`].
    pub off_pressed: bool,
    /// The button that ends manual control, named by what it does: back to
    /// the schedule when there is one, else a plain release.
    pub release_text: &'static str,
    /// Whether releasing would change anything (not when the point already
    /// follows its schedule or the device).
    pub release_enabled: bool,
}

/// Whether ending manual control of a point whose value comes from
/// `source` would change anything. Unknown sources keep the button.
fn release_would_change(source: &str) -> bool {
    !matches!(source, "schedule" | "device")
}

/// A named action (boost) card.
#[derive(Clone, Debug)]
pub struct ActionCard {
    /// `action:name`.
    pub key: String,
    /// Action name (the form's `action` field).
    pub name: String,
    /// Element id.
    pub dom_id: String,
    /// Label in the viewer's language.
    pub label: String,
    /// Running now.
    pub running: bool,
    /// Until when.
    pub until: Option<Moment>,
    /// While running: the `device/point` it drives (`data-drives`, so the
    /// page's script can tell when the action ended), else empty.
    pub drives: String,
    /// Offered durations: minutes and their text.
    pub durations: Vec<(u64, String)>,
    /// The start button's text: start, or restart (from now, for the chosen
    /// time) while running.
    pub start_text: &'static str,
    /// The start button's style: the main one only while idle; while
    /// running, stop is.
    pub start_class: &'static str,
    /// The stop button's style (it is disabled while idle).
    pub stop_class: &'static str,
    /// Shown to homeowners.
    pub visible: bool,
    /// The newest command.
    pub last: Option<LastCommandView>,
}

/// `GET /sites/{id}/controls`.
#[derive(Template)]
#[template(path = "site/controls.html")]
pub struct ControlsPage {
    pub chrome: Chrome,
    pub site_id: String,
    pub site_name: String,
    pub organisation: String,
    pub live_url: String,
    pub agent_online: bool,
    /// May send commands.
    pub can_operate: bool,
    /// May edit comfort bands and visibility (installer).
    pub can_configure: bool,
    /// May open the audit log.
    pub can_audit: bool,
    /// A refusal to show above the controls.
    pub error: Option<String>,
    /// A neutral message ("sent", "waiting for confirmation").
    pub notice: Option<String>,
    pub setpoints: Vec<ControlCard>,
    pub outputs: Vec<ControlCard>,
    pub actions: Vec<ActionCard>,
}

/// Everything the Controls page builder needs besides the controls.
pub struct ControlsContext {
    pub chrome: Chrome,
    pub site_id: String,
    pub site_name: String,
    pub organisation: String,
    pub agent_online: bool,
    pub access: Access,
    pub can_configure: bool,
    pub can_audit: bool,
    pub error: Option<String>,
    pub notice: Option<String>,
}

fn card(
    w: &WritableControl,
    n: usize,
    access: Access,
    site_id: &str,
    lang: &str,
    agent_online: bool,
) -> ControlCard {
    let step = w.info.step;
    let s = w.state.as_ref();
    let dash = || "—".to_string();
    let show = |v: Option<f64>| match (w.info.kind, v) {
        (_, None) => dash(),
        (ControlKind::Output, Some(v)) => {
            translate(lang, if v >= 0.5 { "state_on" } else { "state_off" }).to_owned()
        }
        (ControlKind::Setpoint, Some(v)) => shown(v, step, lang),
    };
    let (source, why_text, until) = why(s, lang);
    let range = match access {
        Access::Homeowner => w.band,
        _ => control::envelope_band(&w.info),
    };
    let current = s
        .and_then(|s| s.commanded.or(s.reported))
        .filter(|v| v.is_finite());
    let nudge = |dir: f64| {
        current
            .map(|v| control::tidy(v + dir * step, step))
            .filter(|v| range.contains(*v))
            .map(|v| format_value(v, step))
    };
    let unit_suffix = if w.unit.is_empty() {
        String::new()
    } else {
        format!(" {}", w.unit)
    };
    let band_text = format!(
        "{}–{}{unit_suffix}",
        shown(w.band.min, step, lang),
        shown(w.band.max, step, lang)
    );
    let limits_text = format!(
        "{}–{}{unit_suffix}",
        shown(w.info.min, step, lang),
        shown(w.info.max, step, lang)
    );
    let label = w
        .label
        .as_deref()
        .map(|l| localized_label(l, lang).to_owned())
        .unwrap_or_else(|| w.info.point.replace('_', " "));
    let output_state = match s.and_then(|s| s.reported.or(s.commanded)) {
        Some(v) if v >= 0.5 => "on",
        Some(_) => "off",
        None => "unknown",
    };
    ControlCard {
        key: w.key.clone(),
        dom_id: format!("ctl-{n}"),
        label,
        unit: w.unit.clone(),
        kind: match w.info.kind {
            ControlKind::Setpoint => "setpoint",
            ControlKind::Output => "output",
        },
        commanded: show(s.and_then(|s| s.commanded)),
        reported: show(s.and_then(|s| s.reported)),
        why: why_text,
        note: s.and_then(|s| s.note.clone()).unwrap_or_default(),
        until,
        decimals: control::step_decimals(step),
        value_input: current
            .map(|v| format_value(v, step))
            .unwrap_or_else(|| format_value(range.min.max(range.max.min(21.0)), step)),
        input_min: format_value(range.min, step),
        input_max: format_value(range.max, step),
        input_step: format_value(step, step),
        minus: nudge(-1.0),
        plus: nudge(1.0),
        band_text,
        limits_text,
        band_min: w
            .setting
            .band
            .map(|b| format_value(b.min, step))
            .unwrap_or_default(),
        band_max: w
            .setting
            .band
            .map(|b| format_value(b.max, step))
            .unwrap_or_default(),
        visible: w.setting.homeowner_visible,
        schedulable: w.info.schedulable,
        schedule_url: format!(
            "/sites/{site_id}/schedule?control={}",
            url::form_urlencoded::byte_serialize(w.key.as_bytes()).collect::<String>()
        ),
        last: last_view(&w.last, lang, agent_online),
        output_state,
        has_schedule: w.has_schedule,
        on_pressed: output_state == "on",
        off_pressed: output_state == "off",
        release_text: translate(
            lang,
            if w.has_schedule {
                "to_schedule"
            } else {
                "release_manual"
            },
        ),
        release_enabled: release_would_change(&source),
        source,
    }
}

fn action_card(a: &ActionControl, n: usize, lang: &str, agent_online: bool) -> ActionCard {
    let now = OffsetDateTime::now_utc();
    let running = a
        .running
        .as_ref()
        .filter(|s| s.until.is_none_or(|u| u > now));
    let label = a
        .info
        .label
        .as_deref()
        .map(|l| localized_label(l, lang).to_owned())
        .unwrap_or_else(|| a.info.name.replace('_', " "));
    let is_running = running.is_some();
    ActionCard {
        key: a.key.clone(),
        name: a.info.name.clone(),
        dom_id: format!("act-{n}"),
        label,
        running: is_running,
        until: running.and_then(|s| s.until).map(Moment::of),
        drives: running
            .map(|s| control::point_key(&s.device, &s.point))
            .unwrap_or_default(),
        durations: control::action_duration_choices(&a.info)
            .into_iter()
            .map(|m| {
                let text = if m % 60 == 0 {
                    format!("{} h", m / 60)
                } else {
                    format!("{m} min")
                };
                (m, text)
            })
            .collect(),
        visible: a.setting.homeowner_visible,
        last: last_view(&a.last, lang, agent_online),
        start_text: translate(lang, if is_running { "restart" } else { "start" }),
        start_class: if is_running {
            "btn-quiet"
        } else {
            "btn-primary"
        },
        stop_class: if is_running {
            "btn-primary"
        } else {
            "btn-quiet"
        },
    }
}

/// Build the Controls page.
pub fn controls_page(ctx: ControlsContext, controls: &SiteControls) -> ControlsPage {
    let lang = ctx.chrome.lang.clone();
    let mut setpoints = Vec::new();
    let mut outputs = Vec::new();
    for (n, w) in controls.writables.iter().enumerate() {
        let c = card(w, n, ctx.access, &ctx.site_id, &lang, ctx.agent_online);
        match w.info.kind {
            ControlKind::Setpoint => setpoints.push(c),
            ControlKind::Output => outputs.push(c),
        }
    }
    ControlsPage {
        live_url: format!("/sites/{}/live", ctx.site_id),
        can_operate: ctx.access != Access::ReadOnly,
        actions: controls
            .actions
            .iter()
            .enumerate()
            .map(|(n, a)| action_card(a, n, &lang, ctx.agent_online))
            .collect(),
        setpoints,
        outputs,
        chrome: ctx.chrome,
        site_id: ctx.site_id,
        site_name: ctx.site_name,
        organisation: ctx.organisation,
        agent_online: ctx.agent_online,
        can_configure: ctx.can_configure,
        can_audit: ctx.can_audit,
        error: ctx.error,
        notice: ctx.notice,
    }
}

impl ControlsPage {
    /// Whether the site offers any control at all.
    pub fn is_empty(&self) -> bool {
        self.setpoints.is_empty() && self.outputs.is_empty() && self.actions.is_empty()
    }
}

/// One weekday row of the schedule editor.
#[derive(Clone, Debug)]
pub struct DayRow {
    /// Field name, `day0` … `day6`.
    pub field: String,
    /// Localised weekday.
    pub name: String,
    /// Periods as typed.
    pub periods: String,
    /// The row's copy button (`static/js/schedule.js`): its text, and the
    /// fields it fills with this row's periods (Monday–Friday from a
    /// weekday, Saturday–Sunday from a weekend day), space-separated.
    pub copy_text: String,
    /// See [`DayRow::copy_text`].
    pub copy_to: String,
}

fn day_row(lang: &str, i: usize, periods: String) -> DayRow {
    let (text, days) = if i < 5 {
        ("copy_weekdays", 0..5)
    } else {
        ("copy_weekend", 5..7)
    };
    DayRow {
        field: format!("day{i}"),
        name: translate(lang, WEEKDAY_KEYS[i]).to_owned(),
        periods,
        copy_text: translate(lang, text).to_owned(),
        copy_to: days
            .map(|d| format!("day{d}"))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// One exception row of the schedule editor.
#[derive(Clone, Debug)]
pub struct ExceptionRow {
    /// Row index (field suffix).
    pub index: usize,
    /// `YYYY-MM-DD` or empty.
    pub date: String,
    /// `holiday` or `away`.
    pub label: String,
    /// Periods as typed.
    pub periods: String,
}

/// `GET /sites/{id}/schedule?control=…`.
#[derive(Template)]
#[template(path = "site/schedule.html")]
pub struct SchedulePage {
    pub chrome: Chrome,
    pub site_id: String,
    pub site_name: String,
    pub control: String,
    pub label: String,
    pub unit: String,
    pub time_zone: String,
    /// Setpoints have on/off values; outputs switch on and off.
    pub is_setpoint: bool,
    pub on_value: String,
    pub off_value: String,
    pub days: Vec<DayRow>,
    pub exceptions: Vec<ExceptionRow>,
    pub error: Option<String>,
    pub band_text: String,
    pub max_exceptions: usize,
}

const WEEKDAY_KEYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Blank exception rows offered below the filled ones.
const BLANK_EXCEPTION_ROWS: usize = 3;

/// The editor's rows from a schedule (or empty rows).
pub fn schedule_rows(
    lang: &str,
    schedule: Option<&WeeklySchedule>,
) -> (Vec<DayRow>, Vec<ExceptionRow>) {
    let days = (0..7)
        .map(|i| {
            let periods = schedule
                .and_then(|s| s.days.get(i))
                .map(|p| format_periods(p))
                .unwrap_or_default();
            day_row(lang, i, periods)
        })
        .collect();
    let mut exceptions: Vec<ExceptionRow> = schedule
        .map(|s| {
            s.exceptions
                .iter()
                .enumerate()
                .map(|(i, e)| ExceptionRow {
                    index: i,
                    date: e.date.to_string(),
                    label: e.label.clone(),
                    periods: format_periods(&e.periods),
                })
                .collect()
        })
        .unwrap_or_default();
    pad_exceptions(&mut exceptions);
    (days, exceptions)
}

fn pad_exceptions(rows: &mut Vec<ExceptionRow>) {
    let want = (rows.len() + BLANK_EXCEPTION_ROWS).min(MAX_EXCEPTIONS);
    while rows.len() < want {
        rows.push(ExceptionRow {
            index: rows.len(),
            date: String::new(),
            label: EXCEPTION_LABELS[0].to_owned(),
            periods: String::new(),
        });
    }
}

/// The editor's rows as posted (re-shown with an error).
pub fn posted_rows(lang: &str, form: &[(String, String)]) -> (Vec<DayRow>, Vec<ExceptionRow>) {
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.chars().take(control::MAX_FIELD_LEN).collect::<String>())
            .unwrap_or_default()
    };
    let days = (0..7)
        .map(|i| day_row(lang, i, get(&format!("day{i}"))))
        .collect();
    let mut exceptions: Vec<ExceptionRow> = (0..MAX_EXCEPTIONS)
        .filter(|i| !get(&format!("ex_date_{i}")).trim().is_empty())
        .enumerate()
        .map(|(row, i)| ExceptionRow {
            index: row,
            date: get(&format!("ex_date_{i}")),
            label: get(&format!("ex_label_{i}")),
            periods: get(&format!("ex_periods_{i}")),
        })
        .collect();
    pad_exceptions(&mut exceptions);
    (days, exceptions)
}

/// The schedule a stored `set_schedule` request carries.
pub fn schedule_of(request_json: &str) -> Option<WeeklySchedule> {
    match serde_json::from_str::<ControlRequest>(request_json).ok()? {
        ControlRequest::SetSchedule { schedule, .. } => Some(schedule),
        _ => None,
    }
}

/// One row of the audit page.
#[derive(Clone, Debug)]
pub struct AuditRow {
    pub seq: i64,
    pub at: Moment,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: String,
    pub after: String,
    pub decision: String,
    pub result: String,
}

/// `GET /sites/{id}/audit`.
#[derive(Template)]
#[template(path = "site/audit.html")]
pub struct AuditPage {
    pub chrome: Chrome,
    pub site_id: String,
    pub site_name: String,
    /// The chain verified.
    pub chain_ok: bool,
    /// "42 entries, chain intact" or the fault.
    pub chain_text: String,
    pub rows: Vec<AuditRow>,
    /// Only the newest entries are listed; the CSV has them all.
    pub truncated: bool,
}

/// Rows of the audit page.
pub fn audit_rows(entries: &[ChainedEntry]) -> Vec<AuditRow> {
    entries
        .iter()
        .map(|c| {
            let e = &c.entry;
            AuditRow {
                seq: e.seq,
                at: Moment::of(e.at),
                actor: e.actor_name.clone(),
                action: e.action.clone(),
                target: e.target.clone(),
                before: e.before.clone().unwrap_or_default(),
                after: e.after.clone().unwrap_or_default(),
                decision: e.decision.clone().unwrap_or_default(),
                result: e.result.clone(),
            }
        })
        .collect()
}

/// The chain status line.
pub fn chain_text(lang: &str, verified: &Result<usize, ChainFault>) -> (bool, String) {
    match verified {
        Ok(n) => (true, format!("{} {n}", translate(lang, "chain_ok"))),
        Err(fault) => (
            false,
            format!("{} {fault}", translate(lang, "chain_broken")),
        ),
    }
}

/// What the confirmation page shows.
#[derive(Clone, Debug, PartialEq)]
pub enum ConfirmState {
    /// The link works: show the change and the two buttons.
    Ready,
    /// Confirmed just now.
    Confirmed,
    /// Declined just now.
    Declined,
    /// The link expired.
    Expired,
    /// The link was used already.
    Used,
    /// No such link.
    Unknown,
}

/// `GET|POST /confirm/{token}`.
#[derive(Template)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    pub chrome: Chrome,
    pub state: ConfirmState,
    pub site_name: String,
    pub requested_by: String,
    pub requested_at: Option<Moment>,
    pub target: String,
    pub value: String,
    pub reason: String,
    pub expires_at: Option<Moment>,
    /// The form's action (`/confirm/<token>`).
    pub action: String,
}

impl ConfirmPage {
    /// `data-state` of the page (tests and CSS read it).
    pub fn state_key(&self) -> &'static str {
        match self.state {
            ConfirmState::Ready => "ready",
            ConfirmState::Confirmed => "confirmed",
            ConfirmState::Declined => "declined",
            ConfirmState::Expired => "expired",
            ConfirmState::Used => "used",
            ConfirmState::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::control::ControlSetting;
    use crate::views::{AssetTable, UserView};
    use protocol::{ActionInfo, WritableInfo};
    use std::sync::Arc;

    fn chrome(lang: &str) -> Chrome {
        Chrome {
            user: Some(UserView {
                display_name: "Maija".into(),
                email: "maija@example.com".into(),
                role_label: "Homeowner".into(),
            }),
            csrf_token: "csrf-123".into(),
            lang: lang.into(),
            assets: Arc::new(AssetTable::embedded()),
        }
    }

    fn controls() -> SiteControls {
        let w = WritableInfo {
            device: "pop1".into(),
            point: "room3_floor_setpoint".into(),
            kind: ControlKind::Setpoint,
            min: 18.0,
            max: 27.0,
            step: 0.1,
            max_change_per_hour: None,
            max_override_s: 3600,
            schedulable: true,
        };
        let setting = ControlSetting {
            band: Some(control::Band {
                min: 19.0,
                max: 23.0,
            }),
            homeowner_visible: true,
        };
        SiteControls {
            writables: vec![WritableControl {
                agent_id: crate::domain::AgentId::new(),
                key: "pop1/room3_floor_setpoint".into(),
                band: control::effective_band(&w, &setting),
                info: w,
                setting,
                label: Some("Huone 3 lattia / Room 3 floor <b>".into()),
                unit: "°C".into(),
                state: Some(ControlState {
                    device: "pop1".into(),
                    point: "room3_floor_setpoint".into(),
                    commanded: Some(21.5),
                    reported: Some(21.4),
                    source: ControlSource::Manual,
                    until: Some(time::macros::datetime!(2026-11-21 20:00 UTC)),
                    action: None,
                    note: None,
                }),
                last: None,
                has_schedule: false,
            }],
            actions: vec![ActionControl {
                agent_id: crate::domain::AgentId::new(),
                key: "action:boost_dhw".into(),
                info: ActionInfo {
                    name: "boost_dhw".into(),
                    label: Some("Lämmin vesi tehostus / boost hot water".into()),
                    max_duration_s: 10_800,
                },
                setting: ControlSetting::default(),
                running: None,
                last: None,
            }],
        }
    }

    fn page_context(lang: &str, access: Access) -> ControlsContext {
        ControlsContext {
            chrome: chrome(lang),
            site_id: "s1".into(),
            site_name: "Koivula".into(),
            organisation: "Org".into(),
            agent_online: true,
            access,
            can_configure: false,
            can_audit: true,
            error: Some("24,0 <script>".into()),
            notice: None,
        }
    }

    fn page(lang: &str, access: Access) -> ControlsPage {
        controls_page(page_context(lang, access), &controls())
    }

    /// A car-heater output whose value comes from `source`.
    fn output(source: ControlSource, value: f64, has_schedule: bool) -> WritableControl {
        let info = WritableInfo {
            device: "pop1".into(),
            point: "car_heater".into(),
            kind: ControlKind::Output,
            min: 0.0,
            max: 1.0,
            step: 1.0,
            max_change_per_hour: None,
            max_override_s: 10_800,
            schedulable: true,
        };
        WritableControl {
            agent_id: crate::domain::AgentId::new(),
            key: "pop1/car_heater".into(),
            band: control::envelope_band(&info),
            info,
            setting: ControlSetting::default(),
            label: Some("Autolämmitin / Car heater".into()),
            unit: String::new(),
            state: Some(ControlState {
                device: "pop1".into(),
                point: "car_heater".into(),
                commanded: Some(value),
                reported: Some(value),
                source,
                until: None,
                action: None,
                note: None,
            }),
            last: None,
            has_schedule,
        }
    }

    /// The output form's buttons in `html`: (value, text, aria-pressed, disabled).
    fn output_buttons(html: &str) -> Vec<(String, String, String, bool)> {
        let form = &html[html.find(r#"class="output-form""#).expect("an output form")..];
        let form = &form[..form.find("</form>").expect("closed")];
        form.split("<button ")
            .skip(1)
            .map(|b| {
                let attr = |name: &str| {
                    b.split_once(&format!("{name}=\""))
                        .and_then(|(_, rest)| rest.split_once('"'))
                        .map(|(v, _)| v.to_owned())
                        .unwrap_or_default()
                };
                let tag = &b[..b.find('>').expect("tag")];
                let text = &b[b.find('>').expect("tag") + 1..b.find("</button>").expect("closed")];
                (
                    attr("value"),
                    text.to_owned(),
                    attr("aria-pressed"),
                    tag.contains(" disabled"),
                )
            })
            .collect()
    }

    #[test]
    fn output_buttons_show_the_state_and_name_the_release_by_what_it_does() {
        let b = |v: &str, t: &str, pressed: &str, disabled: bool| {
            (v.to_owned(), t.to_owned(), pressed.to_owned(), disabled)
        };
        let with = |w: WritableControl, lang: &str| {
            let c = SiteControls {
                writables: vec![w],
                actions: vec![],
            };
            controls_page(page_context(lang, Access::Homeowner), &c)
                .render()
                .expect("renders")
        };
        // No schedule, the device decides: nothing to release; the state
        // text says so plainly.
        let html = with(output(ControlSource::Device, 0.0, false), "fi");
        assert_eq!(
            output_buttons(&html),
            [
                b("on", "Päälle", "false", false),
                b("off", "Pois", "true", false),
                b("auto", "Vapauta käsiohjaus", "", true),
            ]
        );
        assert!(html.contains(r#"data-has-schedule="false""#), "{html}");
        assert!(
            html.contains("Ei aikaohjelmaa eikä käsiohjausta: laitteen oma asetus"),
            "{html}"
        );
        // Switched on by hand, with a schedule to go back to.
        let html = with(output(ControlSource::Manual, 1.0, true), "en");
        assert_eq!(
            output_buttons(&html),
            [
                b("on", "On", "true", false),
                b("off", "Off", "false", false),
                b("auto", "Back to schedule", "", false),
            ]
        );
        assert!(html.contains(r#"data-has-schedule="true""#), "{html}");
        // Following the schedule already: no going back to it.
        let html = with(output(ControlSource::Schedule, 1.0, true), "fi");
        assert_eq!(
            output_buttons(&html)[2],
            b("auto", "Takaisin aikaohjelmaan", "", true)
        );
        // Manual without a schedule: the release is offered as a release.
        let html = with(output(ControlSource::Manual, 0.0, false), "en");
        assert_eq!(
            output_buttons(&html)[2],
            b("auto", "Release manual control", "", false)
        );
    }

    #[test]
    fn a_running_action_makes_stop_the_main_button_and_start_a_restart() {
        let idle = page("fi", Access::Homeowner).render().expect("renders");
        assert!(
            idle.contains(r#"value="start" class="btn btn-primary">Käynnistä<"#),
            "{idle}"
        );
        assert!(
            idle.contains(r#"value="stop" class="btn btn-quiet" disabled>Pysäytä<"#),
            "{idle}"
        );
        let mut c = controls();
        c.actions[0].running = Some(ControlState {
            device: "heatpump".into(),
            point: "dhw_setpoint".into(),
            commanded: Some(55.0),
            reported: Some(55.0),
            source: ControlSource::Action,
            until: Some(OffsetDateTime::now_utc() + time::Duration::minutes(30)),
            action: Some("boost_dhw".into()),
            note: None,
        });
        let running = controls_page(page_context("en", Access::Homeowner), &c)
            .render()
            .expect("renders");
        assert!(
            running.contains(r#"value="start" class="btn btn-quiet">Restart<"#),
            "{running}"
        );
        assert!(
            running.contains(r#"value="stop" class="btn btn-primary">Stop<"#),
            "{running}"
        );
    }

    #[test]
    fn a_last_command_says_why_in_the_page_language_and_who_said_it() {
        use crate::domain::control_text::CommandReason;
        let record = |status: CommandStatus, reason: &str, answered: bool| CommandRecord {
            id: uuid::Uuid::now_v7(),
            site: crate::domain::SiteRef {
                tenant_id: crate::domain::TenantId(uuid::Uuid::nil()),
                site_id: crate::domain::SiteId(uuid::Uuid::nil()),
            },
            agent_id: crate::domain::AgentId::new(),
            control_key: "pop1/car_heater".into(),
            op: "set".into(),
            request: "{}".into(),
            requested_by: None,
            requested_by_name: "Maija".into(),
            issued_by: "maija@example.com".into(),
            issued_at: time::macros::datetime!(2026-11-21 12:00 UTC),
            expires_at: time::macros::datetime!(2026-11-21 12:10 UTC),
            status,
            reason: Some(reason.into()),
            outside_band: false,
            value_before: None,
            value_after: None,
            delivered_at: None,
            result_at: answered.then_some(time::macros::datetime!(2026-11-21 12:00 UTC)),
        };
        let view =
            |c: CommandRecord, lang: &str| last_view(&Some(c), lang, true).expect("a view").reason;
        let expired = CommandReason::OfflineUntilExpiry.to_stored();
        assert_eq!(
            view(record(CommandStatus::Expired, &expired, false), "fi"),
            "kohde oli poissa yhteydestä, kunnes komento vanheni; sitä ei lähetetty"
        );
        assert_eq!(
            view(record(CommandStatus::Rejected, "outside 0–1", true), "fi"),
            "kohteen ohjauslaite kieltäytyi: outside 0–1"
        );
        assert_eq!(
            view(record(CommandStatus::Failed, "read back 0", true), "en"),
            "the site's controller reported: read back 0"
        );
    }

    #[test]
    fn a_setpoint_card_shows_state_reason_and_one_step_nudges() {
        let html = page("fi", Access::Homeowner).render().expect("renders");
        assert!(
            html.contains(r#"data-control-key="pop1/room3_floor_setpoint""#),
            "{html}"
        );
        assert!(html.contains("Huone 3 lattia"));
        assert!(!html.contains("<b>"), "labels are escaped");
        assert!(html.contains(">21,5<"), "commanded in Finnish notation");
        assert!(html.contains(">21,4<"), "reported");
        assert!(html.contains(r#"name="value" value="21.4""#), "minus nudge");
        assert!(html.contains(r#"name="value" value="21.6""#), "plus nudge");
        assert!(html.contains(r#"datetime="2026-11-21T20:00:00Z""#));
        assert!(html.contains(r#"data-source="manual""#));
        assert!(html.contains("19,0–23,0 °C"), "band for the homeowner");
        assert!(html.contains(r#"max="23.0""#), "input limited to the band");
        assert!(html.contains(r#"action="/sites/s1/controls/action""#));
        assert!(html.contains("Lämmin vesi tehostus"));
        assert!(html.contains(r#"<option value="180">3 h</option>"#));
        assert!(!html.contains("<script>"), "the error is escaped");
        assert!(html.contains(r#"name="csrf_token" value="csrf-123""#));
    }

    #[test]
    fn only_an_installer_gets_the_settings_forms_with_each_controls_key_and_visibility() {
        let mut c = controls();
        c.actions[0].setting.homeowner_visible = false;
        let homeowner = controls_page(page_context("fi", Access::Homeowner), &c)
            .render()
            .expect("renders");
        assert!(!homeowner.contains("/controls/settings"));
        let mut ctx = page_context("fi", Access::Staff);
        ctx.can_configure = true;
        let installer = controls_page(ctx, &c).render().expect("renders");
        assert_eq!(installer.matches("/controls/settings").count(), 2);
        let action_form = &installer[installer
            .find(r#"name="control" value="action:boost_dhw""#)
            .expect("the action's settings form")..];
        let checkbox = &action_form[action_form.find("homeowner_visible").unwrap()..];
        assert!(
            !checkbox[..checkbox.find('>').unwrap()].contains("checked"),
            "the hidden action is unchecked: {action_form}"
        );
        assert!(installer.contains(r#"name="csrf_token" value="csrf-123""#));
    }

    #[test]
    fn a_running_action_names_the_point_it_drives_for_the_script() {
        let mut c = controls();
        c.actions[0].running = Some(ControlState {
            device: "heatpump".into(),
            point: "dhw_setpoint".into(),
            commanded: Some(55.0),
            reported: Some(55.0),
            source: ControlSource::Action,
            until: Some(OffsetDateTime::now_utc() + time::Duration::minutes(30)),
            action: Some("boost_dhw".into()),
            note: None,
        });
        let running = controls_page(page_context("fi", Access::Homeowner), &c);
        assert!(running.actions[0].running);
        let html = running.render().expect("renders");
        assert!(
            html.contains(r#"data-running="true" data-drives="heatpump/dhw_setpoint""#),
            "{html}"
        );
        let idle = page("fi", Access::Homeowner).render().expect("renders");
        assert!(
            idle.contains(r#"data-running="false" data-drives="""#),
            "{idle}"
        );
    }

    #[test]
    fn staff_get_the_envelope_as_input_range() {
        let html = page("en", Access::Staff).render().expect("renders");
        assert!(html.contains(r#"max="27.0""#));
        assert!(html.contains("18.0–27.0 °C"));
    }

    #[test]
    fn a_viewer_gets_no_forms() {
        let html = page("en", Access::ReadOnly).render().expect("renders");
        assert!(!html.contains("/controls/setpoint"));
        assert!(!html.contains("/controls/action"));
        assert!(html.contains(">21.5<"));
    }

    #[test]
    fn control_pages_have_no_inline_scripts_or_styles() {
        let html = page("en", Access::Staff).render().expect("renders");
        assert!(!html.contains(" style="));
        assert!(!html.contains(" onclick="));
        for tag in html.split("<script").skip(1) {
            let head = &tag[..tag.find('>').expect("closed tag")];
            assert!(head.contains("src=\"/static/"), "inline script: {head}");
        }
    }

    #[test]
    fn posted_schedule_rows_are_kept_and_padded() {
        let form = vec![
            ("day1".to_string(), "06:00-08:00".to_string()),
            ("ex_date_5".to_string(), "2026-12-24".to_string()),
            ("ex_label_5".to_string(), "away".to_string()),
        ];
        let (days, ex) = posted_rows("en", &form);
        assert_eq!(days[1].periods, "06:00-08:00");
        assert_eq!(days[1].name, "Tuesday");
        assert_eq!(
            (days[1].copy_text.as_str(), days[1].copy_to.as_str()),
            ("Copy to Mon–Fri", "day0 day1 day2 day3 day4")
        );
        assert_eq!(
            (days[6].copy_text.as_str(), days[6].copy_to.as_str()),
            ("Copy to Sat–Sun", "day5 day6")
        );
        assert_eq!(ex[0].date, "2026-12-24");
        assert_eq!(ex[0].label, "away");
        assert_eq!(ex.len(), 1 + BLANK_EXCEPTION_ROWS);
    }
}
