//! Remote control: what the server may ask an agent to change, and what the
//! agent reports back.
//!
//! The agent is the authority. Its **local** configuration holds the safety
//! envelope (which points are writable, their hard limits, the named actions
//! such as "boost hot water" and their longest duration) and it announces a
//! copy in [`crate::Hello::envelope`] so the server can offer only sensible
//! controls. The server's copy is a convenience for the UI: whatever a
//! [`Command`] asks, the agent checks it against its own envelope and answers
//! with a [`CommandResult`].
//!
//! - Every command has an `id` (the server's audit-log key) and an
//!   `expires_at`: an agent that receives it later drops it and answers
//!   [`CommandOutcome::Expired`] (a car heater meant for 07:00 must not start
//!   at 11:00).
//! - Manual overrides and actions carry an end time the agent enforces on its
//!   own clock, link or no link.
//! - Schedules are executed by the agent (or by the device where it has clock
//!   tables), in the site's time zone.
//! - [`ControlState`] tells the server, per writable point, what is commanded,
//!   why (a [`ControlSource`] and, optionally, a note in words), and until
//!   when; sent on change and after every (re)connect.

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

// ISO dates ("2026-12-24") on the wire, without changing how `time` types
// serialise elsewhere.
time::serde::format_description!(iso_date, Date, "[year]-[month]-[day]");

/// The safety envelope as the agent enforces it (a copy, for the UI).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Every point a command may write.
    #[serde(default)]
    pub writables: Vec<WritableInfo>,
    /// Named safe actions.
    #[serde(default)]
    pub actions: Vec<ActionInfo>,
}

/// What kind of control a writable point is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlKind {
    /// A number within `min..=max` in `step`s (a room setpoint).
    Setpoint,
    /// On/off (car heater, yard lights, ventilation): 0.0 or 1.0.
    Output,
}

/// One writable point and its hard limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WritableInfo {
    /// Device key.
    pub device: String,
    /// Point key.
    pub point: String,
    /// Setpoint or output.
    pub kind: ControlKind,
    /// Lowest value accepted (engineering units).
    pub min: f64,
    /// Highest value accepted.
    pub max: f64,
    /// Values must be multiples of this (0.1 °C for room setpoints).
    pub step: f64,
    /// Largest total change accepted per hour, if limited.
    #[serde(default)]
    pub max_change_per_hour: Option<f64>,
    /// Longest manual override, in seconds; the agent reverts after it.
    pub max_override_s: u64,
    /// The point can follow a weekly schedule run by the agent or device.
    #[serde(default)]
    pub schedulable: bool,
}

/// A named safe action, e.g. `boost_dhw`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionInfo {
    /// Name used in [`ControlRequest::StartAction`].
    pub name: String,
    /// Human label.
    #[serde(default)]
    pub label: Option<String>,
    /// Longest run, in seconds; the agent stops the action after it.
    pub max_duration_s: u64,
}

/// A command from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Unique id; the result carries it back.
    pub id: uuid::Uuid,
    /// When the user asked.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// After this the agent must not apply it.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Who asked (for the agent's log), e.g. `homeowner@example.com`.
    pub issued_by: String,
    /// What to do.
    pub request: ControlRequest,
}

/// What a command asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Manual override: write `value` until `until` (at most the point's
    /// `max_override_s`; `None` means that maximum), then back to schedule.
    Set {
        /// Device key.
        device: String,
        /// Point key.
        point: String,
        /// Engineering value (0.0/1.0 for outputs).
        value: f64,
        /// End of the override.
        #[serde(default, with = "time::serde::rfc3339::option")]
        until: Option<OffsetDateTime>,
    },
    /// End a manual override now: the point follows its schedule again.
    Release {
        /// Device key.
        device: String,
        /// Point key.
        point: String,
    },
    /// Start a named action for `duration_s` seconds (capped by the envelope).
    StartAction {
        /// Action name.
        action: String,
        /// Requested run time.
        duration_s: u64,
    },
    /// Stop a running action early.
    StopAction {
        /// Action name.
        action: String,
    },
    /// Replace a point's weekly schedule.
    SetSchedule {
        /// Device key.
        device: String,
        /// Point key.
        point: String,
        /// The new schedule.
        schedule: WeeklySchedule,
    },
}

/// A weekly clock table in the site's local time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeeklySchedule {
    /// IANA zone the times are in, e.g. `Europe/Helsinki`.
    pub time_zone: String,
    /// Value inside a period (1.0 = on, or a comfort setpoint).
    pub on_value: f64,
    /// Value outside the periods.
    pub off_value: f64,
    /// Periods per weekday, Monday first (7 entries).
    pub days: Vec<Vec<Period>>,
    /// Dates that do not follow the weekly plan.
    #[serde(default)]
    pub exceptions: Vec<ExceptionDay>,
}

/// A period of one day, local time, `start < end`, minutes after midnight
/// (`end` may be 1440 for "until midnight").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// First minute of the period.
    pub start_min: u16,
    /// Minute the period ends (exclusive).
    pub end_min: u16,
}

/// A date that overrides the weekly plan (holiday, away).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExceptionDay {
    /// The local date.
    #[serde(with = "iso_date")]
    pub date: Date,
    /// Why, shown to people: "holiday", "away".
    pub label: String,
    /// The periods of that date (empty = off all day).
    #[serde(default)]
    pub periods: Vec<Period>,
}

/// The agent's answer to a [`Command`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command's id.
    pub id: uuid::Uuid,
    /// When the agent decided.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What happened.
    pub outcome: CommandOutcome,
    /// Why (refusal reason, error, or the envelope's decision).
    #[serde(default)]
    pub reason: Option<String>,
    /// The point's value read before the write, when there was one.
    #[serde(default)]
    pub before: Option<f64>,
    /// The value read back after the write.
    #[serde(default)]
    pub after: Option<f64>,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandOutcome {
    /// Written and verified by reading back (or accepted, for schedules).
    Applied,
    /// Refused by the agent's envelope; nothing was written.
    Rejected,
    /// Reached the agent after `expires_at`; nothing was written.
    Expired,
    /// Tried and failed (device silent, read-back mismatch, ...).
    Failed,
    /// A newer version of this type of outcome.
    #[serde(other)]
    Unknown,
}

/// Why a writable point has the value it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlSource {
    /// Following its weekly schedule.
    Schedule,
    /// A manual override until `until`.
    Manual,
    /// A named action (boost) until `until`.
    Action,
    /// No schedule and no override: the device's own value.
    Device,
    /// The wanted value was outside the limits and was limited.
    Clamped,
    /// A newer reason.
    #[serde(other)]
    Unknown,
}

/// The control state of one writable point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlState {
    /// Device key.
    pub device: String,
    /// Point key.
    pub point: String,
    /// What the agent currently commands, if anything.
    #[serde(default)]
    pub commanded: Option<f64>,
    /// What the device last reported.
    #[serde(default)]
    pub reported: Option<f64>,
    /// Why.
    pub source: ControlSource,
    /// When the current override or action ends.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
    /// The active action's name when `source` is `action`.
    #[serde(default)]
    pub action: Option<String>,
    /// Why, in the agent's words, beyond `source`: who switches the point
    /// ("switched by the device's own clock table"), why the agent runs a
    /// schedule itself, an exception day taken by hand, a clock table
    /// changed at the device. Additive: absent from older agents, and not
    /// sent when there is nothing to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}
