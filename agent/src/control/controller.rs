//! The decision core: what a command may change, who wins per point, when the
//! next change is due, and which writes the devices need.
//!
//! Pure and deterministic: no I/O, no clock reads (`now` is passed in), so
//! every rule is unit-tested with a controllable clock. The executor feeds it
//! commands, asks [`Controller::due_writes`] after each change and at
//! [`Controller::next_deadline`], performs the writes and reports them back
//! with [`Controller::record_write`].
//!
//! # Rules
//!
//! - **Refusals** name the reason and change nothing: unknown point or action,
//!   value outside `min..=max` or off the `step` grid (float error of a
//!   millionth of a step tolerated, the value then snapped), a change faster
//!   than `max_change_per_hour`, a point held by a running action, a
//!   malformed schedule, a daily write cap reached. A command received after
//!   its `expires_at` is [`Decision::Expired`] and changes nothing.
//! - **Durations are capped, not refused**: an override longer than
//!   `max_override_minutes` (or without end) and an action longer than its
//!   `max_duration_minutes` are accepted for the longest allowed time, and the
//!   decision's note says so. The user gets most of what they asked for and
//!   sees the limit; the house is never left in a manual state indefinitely.
//! - **Rate of change** (`max_change_per_hour`): the changes made by `set`
//!   commands in the trailing hour, each measured from the value the point
//!   had, are summed with the new one. Releases, actions and schedule edges
//!   are not counted: they return to or follow what the envelope and the
//!   schedule (itself checked) allow.
//! - **Write budget**: a value equal to the last one written is not written
//!   again. `daily_write_cap` bounds writes in any 24 hours (a rolling window,
//!   so the cap cannot be doubled around midnight). A `set` or an action
//!   needs room for its write and its revert, so a temporary change can always
//!   be undone; reverts, releases and schedule edges are never blocked by the
//!   cap (they return the house to its plan) and a schedule whose busiest day
//!   needs more writes than the cap is refused.
//! - **Who wins** per point: a running action > a manual override > the
//!   schedule > `value_when_idle` > the device's own value from before the
//!   agent took over > nothing (the device keeps whatever it has).
//! - **Putting things back**: when an override or action takes over a point
//!   that nothing governed, the value the device reported just before
//!   (clamped into the envelope: the agent never writes outside it) is kept
//!   as the point's *resting* value and written back when the override or
//!   action ends. A takeover of a point the agent has not read yet is refused:
//!   it could not be undone.
//!   Overrides and actions end on the agent's clock: [`Controller::wanted`]
//!   ignores what has ended even before [`Controller::expire`] tidies up.
//! - **Local changes**: the agent writes when the wanted value changes, not
//!   continuously; a value changed at the device's own panel stays until the
//!   next change of the wanted value.
//! - **Device tables**: a schedule placed in a device's own clock table
//!   ([`super::device_table`], [`Placement::Device`]) is not written edge by
//!   edge: while it governs the point, [`Wanted::follow_table`] is set and
//!   the only write is handing the output back to its table (after an
//!   override, an action, an exception day), once; the device switches by
//!   itself. Until the table is in the device (or when it cannot run it) the
//!   agent switches the point itself, as for any schedule.

use std::collections::{BTreeMap, VecDeque};

use protocol::{Command, ControlRequest, ControlSource, ControlState};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing::warn;

use super::{
    Envelope, PointKey, Schedule, Writable,
    device_table::{self, Placement},
    store::{Snapshot, StoredAction, StoredPoint},
};

/// The trailing window of `max_change_per_hour`.
const RATE_WINDOW: time::Duration = time::Duration::HOUR;
/// The rolling window of `daily_write_cap`.
const BUDGET_WINDOW: time::Duration = time::Duration::DAY;

/// What [`Controller::decide`] made of a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// It arrived after its `expires_at`; nothing changed.
    Expired(String),
    /// Outside the envelope; nothing changed.
    Rejected(String),
    /// Accepted and recorded. The writes it needs are among
    /// [`Controller::due_writes`] for `points`.
    Accepted {
        /// What the user should know (a capped duration, an unchanged value).
        note: Option<String>,
        /// The points whose writes settle the command.
        points: Vec<PointKey>,
    },
}

/// The value a point should have now, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    /// `None`: the agent leaves the device alone.
    pub value: Option<f64>,
    /// Why it is this value.
    pub source: ControlSource,
    /// End of the override or action that sets it.
    pub until: Option<OffsetDateTime>,
    /// The action that sets it.
    pub action: Option<String>,
    /// The schedule governs the point and runs in the device's own clock
    /// table: the device switches it (`value` is what the table gives now);
    /// the agent only hands the output back to the table.
    pub follow_table: bool,
}

/// A write the executor should perform.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// The point.
    pub key: PointKey,
    /// The value, within the envelope.
    pub value: f64,
    /// Why.
    pub source: ControlSource,
    /// Not a value: hand the output back to its device clock table (which
    /// gives `value` now). Done with [`Controller::record_handback`].
    pub follow_table: bool,
}

/// A manual override.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Override {
    /// The value, within the envelope when accepted.
    pub value: f64,
    /// When the agent reverts it.
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
    /// Who asked.
    pub by: String,
    /// The command that set it.
    pub command: uuid::Uuid,
}

/// A running action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningAction {
    /// When the agent stops it.
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
    /// Who started it.
    pub by: String,
    /// The command that started it.
    pub command: uuid::Uuid,
}

#[derive(Debug, Clone, Default)]
struct PointCtl {
    schedule: Option<Schedule>,
    manual: Option<Override>,
    /// The value last written (and verified) by the agent.
    applied: Option<f64>,
    /// The value the device last reported.
    reported: Option<f64>,
    /// The device's own value from before an override or action took over a
    /// point nothing governed; written back when they end.
    resting: Option<f64>,
    /// Times of writes in the budget window.
    writes: VecDeque<OffsetDateTime>,
    /// Commanded changes (time, magnitude) in the rate window.
    changes: VecDeque<(OffsetDateTime, f64)>,
    /// Where the schedule runs (meaningful with a schedule).
    placement: Placement,
}

impl PointCtl {
    fn writes_since(&self, since: OffsetDateTime) -> usize {
        self.writes.iter().filter(|t| **t > since).count()
    }

    fn changed_since(&self, since: OffsetDateTime) -> f64 {
        self.changes
            .iter()
            .filter(|(t, _)| *t > since)
            .map(|(_, d)| d)
            .sum()
    }

    fn prune(&mut self, now: OffsetDateTime) {
        while self
            .writes
            .front()
            .is_some_and(|t| *t <= now - BUDGET_WINDOW)
        {
            self.writes.pop_front();
        }
        while self
            .changes
            .front()
            .is_some_and(|(t, _)| *t <= now - RATE_WINDOW)
        {
            self.changes.pop_front();
        }
    }
}

/// The decision core for one agent's envelope.
#[derive(Debug, Clone)]
pub struct Controller {
    envelope: Envelope,
    points: BTreeMap<PointKey, PointCtl>,
    actions: BTreeMap<String, RunningAction>,
}

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// RFC 3339 for messages.
fn stamp(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{t}"))
}

fn minutes(d: std::time::Duration) -> u64 {
    d.as_secs() / 60
}

impl Controller {
    /// A controller with nothing scheduled, overridden or running.
    pub fn new(envelope: Envelope) -> Self {
        let points = envelope
            .writables
            .iter()
            .map(|w| (w.key.clone(), PointCtl::default()))
            .collect();
        Controller {
            envelope,
            points,
            actions: BTreeMap::new(),
        }
    }

    /// The envelope it enforces.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// Accept or refuse `cmd` at `now`. A refusal changes nothing.
    pub fn decide(&mut self, cmd: &Command, now: OffsetDateTime) -> Decision {
        if cmd.expires_at <= now {
            return Decision::Expired(format!(
                "the command expired at {} and arrived at {}; nothing was written",
                stamp(cmd.expires_at),
                stamp(now)
            ));
        }
        let result = match &cmd.request {
            ControlRequest::Set {
                device,
                point,
                value,
                until,
            } => self.set(cmd, &PointKey::new(device, point), *value, *until, now),
            ControlRequest::Release { device, point } => {
                self.release(&PointKey::new(device, point))
            }
            ControlRequest::StartAction { action, duration_s } => {
                self.start_action(cmd, action, *duration_s, now)
            }
            ControlRequest::StopAction { action } => self.stop_action(action, now),
            ControlRequest::SetSchedule {
                device,
                point,
                schedule,
            } => self.set_schedule(&PointKey::new(device, point), schedule),
        };
        result.unwrap_or_else(Decision::Rejected)
    }

    fn writable(&self, key: &PointKey) -> Result<&Writable, String> {
        self.envelope.writable(key).ok_or_else(|| {
            format!("`{key}` is not in this agent's envelope: the agent never writes it")
        })
    }

    /// The running action (not ended at `now`) that writes `key`, if any.
    fn holder(&self, key: &PointKey, now: OffsetDateTime) -> Option<(&str, &RunningAction)> {
        self.actions
            .iter()
            .filter(|(_, run)| run.until > now)
            .find(|(name, _)| {
                self.envelope
                    .action(name)
                    .is_some_and(|a| a.writes.iter().any(|w| &w.key == key))
            })
            .map(|(name, run)| (name.as_str(), run))
    }

    /// Refuse when a write of `key` now would leave no room in its daily
    /// budget for `needed` writes (a change and its revert).
    fn check_budget(
        &self,
        w: &Writable,
        new_value: f64,
        needed: usize,
        now: OffsetDateTime,
    ) -> Result<(), String> {
        let Some(cap) = w.daily_write_cap else {
            return Ok(());
        };
        let Some(ctl) = self.points.get(&w.key) else {
            return Ok(());
        };
        if ctl.applied.is_some_and(|a| same(a, new_value)) {
            return Ok(()); // nothing to write
        }
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        let used = ctl.writes_since(now - BUDGET_WINDOW);
        if used + needed > cap {
            let next = ctl
                .writes
                .iter()
                .filter(|t| **t > now - BUDGET_WINDOW)
                .nth((used + needed).saturating_sub(cap).saturating_sub(1))
                .and_then(|t| t.checked_add(BUDGET_WINDOW))
                .map(stamp)
                .unwrap_or_else(|| "later".into());
            return Err(format!(
                "daily write cap of `{}` reached: {used} of {cap} writes used in the last 24 hours \
                 (a change needs room for its write and its revert); possible again from {next}",
                w.key
            ));
        }
        Ok(())
    }

    /// Before an override or action takes over `key`: when nothing governs
    /// it now, the value to put back afterwards (the device's, clamped), or a
    /// refusal when the agent has not read it yet. `Ok(None)`: nothing to
    /// keep (something governs it already, or a resting value is kept).
    fn resting_for(&self, key: &PointKey, now: OffsetDateTime) -> Result<Option<f64>, String> {
        let (Some(w), Some(ctl)) = (self.envelope.writable(key), self.points.get(key)) else {
            return Ok(None);
        };
        if self.wanted(key, now).value.is_some() {
            return Ok(None);
        }
        match ctl.reported.or(ctl.applied) {
            Some(v) => Ok(Some(w.clamp(v))),
            None => Err(format!(
                "the agent has not read `{key}` from the device yet, so it could not put it back \
                 afterwards; try again once the device has been polled"
            )),
        }
    }

    fn set(
        &mut self,
        cmd: &Command,
        key: &PointKey,
        value: f64,
        until: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<Decision, String> {
        let w = self.writable(key)?;
        let value = w.check(value)?;
        let longest = now + w.max_override;
        let mut notes = Vec::new();
        let until = match until {
            None => longest,
            Some(u) if u <= now => {
                return Err(format!(
                    "the override would end at {}, which is not after now ({})",
                    stamp(u),
                    stamp(now)
                ));
            }
            Some(u) if u > longest => {
                notes.push(format!(
                    "override capped at {} minutes (max_override_minutes of `{key}`): ends at {}",
                    minutes(w.max_override),
                    stamp(longest)
                ));
                longest
            }
            Some(u) => u,
        };
        if let Some((name, run)) = self.holder(key, now) {
            return Err(format!(
                "`{key}` is held by the running action `{name}` until {}; stop the action first",
                stamp(run.until)
            ));
        }
        let ctl = self.points.get(key).cloned().unwrap_or_default();
        let before = self.wanted(key, now).value.or(ctl.applied).or(ctl.reported);
        let delta = before.map_or(0.0, |b| (value - b).abs());
        if let (Some(limit), Some(b)) = (w.max_change_per_hour, before) {
            let used = ctl.changed_since(now - RATE_WINDOW);
            if used + delta > limit + w.step * 1e-6 {
                return Err(format!(
                    "changing `{key}` from {b} to {value} ({delta:.3}) would make {:.3} within the last hour; \
                     max_change_per_hour is {limit}",
                    used + delta
                ));
            }
        }
        self.check_budget(w, value, 2, now)?;
        let resting = self.resting_for(key, now)?;
        if ctl.applied.is_some_and(|a| same(a, value)) {
            notes.push("the device already has this value: not rewritten".into());
        }
        let ctl = self.points.entry(key.clone()).or_default();
        if resting.is_some() {
            ctl.resting = resting;
        }
        ctl.manual = Some(Override {
            value,
            until,
            by: cmd.issued_by.clone(),
            command: cmd.id,
        });
        if delta > 0.0 {
            ctl.changes.push_back((now, delta));
        }
        Ok(Decision::Accepted {
            note: (!notes.is_empty()).then(|| notes.join("; ")),
            points: vec![key.clone()],
        })
    }

    fn release(&mut self, key: &PointKey) -> Result<Decision, String> {
        self.writable(key)?;
        let ctl = self.points.entry(key.clone()).or_default();
        let note = if ctl.manual.take().is_some() {
            None
        } else {
            Some("no override was active".into())
        };
        Ok(Decision::Accepted {
            note,
            points: vec![key.clone()],
        })
    }

    fn start_action(
        &mut self,
        cmd: &Command,
        name: &str,
        duration_s: u64,
        now: OffsetDateTime,
    ) -> Result<Decision, String> {
        let Some(action) = self.envelope.action(name) else {
            let known: Vec<&str> = self
                .envelope
                .actions
                .iter()
                .map(|a| a.name.as_str())
                .collect();
            return Err(format!(
                "unknown action `{name}` (this agent has: {})",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ));
        };
        if duration_s == 0 {
            return Err("an action needs a duration above 0 seconds".into());
        }
        let mut note = None;
        let duration = if duration_s > action.max_duration.as_secs() {
            note = Some(format!(
                "action `{name}` capped at {} minutes (its max_duration_minutes)",
                minutes(action.max_duration)
            ));
            action.max_duration
        } else {
            std::time::Duration::from_secs(duration_s)
        };
        for write in &action.writes {
            if let Some((other, run)) = self.holder(&write.key, now)
                && other != name
            {
                return Err(format!(
                    "`{}` is held by the running action `{other}` until {}",
                    write.key,
                    stamp(run.until)
                ));
            }
            let w = self.writable(&write.key)?;
            self.check_budget(w, write.value, 2, now)?;
        }
        let mut resting = Vec::new();
        for write in &action.writes {
            if let Some(r) = self.resting_for(&write.key, now)? {
                resting.push((write.key.clone(), r));
            }
        }
        let points = action.writes.iter().map(|w| w.key.clone()).collect();
        for (key, r) in resting {
            self.points.entry(key).or_default().resting = Some(r);
        }
        self.actions.insert(
            name.to_owned(),
            RunningAction {
                until: now + duration,
                by: cmd.issued_by.clone(),
                command: cmd.id,
            },
        );
        Ok(Decision::Accepted { note, points })
    }

    fn stop_action(&mut self, name: &str, now: OffsetDateTime) -> Result<Decision, String> {
        let Some(action) = self.envelope.action(name) else {
            return Err(format!("unknown action `{name}`"));
        };
        let points = action.writes.iter().map(|w| w.key.clone()).collect();
        let note = match self.actions.remove(name) {
            Some(run) if run.until > now => None,
            _ => Some(format!("action `{name}` was not running")),
        };
        Ok(Decision::Accepted { note, points })
    }

    fn set_schedule(
        &mut self,
        key: &PointKey,
        schedule: &protocol::WeeklySchedule,
    ) -> Result<Decision, String> {
        let w = self.writable(key)?;
        if !w.schedulable {
            return Err(format!(
                "`{key}` does not follow schedules (schedulable = false in the agent's envelope)"
            ));
        }
        let s = Schedule::validate(schedule, w)?;
        if let Some(cap) = w.daily_write_cap {
            let busiest = s.busiest_day_writes();
            if busiest > usize::try_from(cap).unwrap_or(usize::MAX) {
                return Err(format!(
                    "the schedule needs up to {busiest} writes a day; daily_write_cap of `{key}` is {cap}"
                ));
            }
        }
        let ctl = self.points.entry(key.clone()).or_default();
        ctl.schedule = Some(s);
        // Placed anew (in the device or not) by the executor's keeper; a
        // schedule sent again also rewrites a table changed at the device.
        ctl.placement = Placement::Undecided {
            old_table: ctl.placement.holds_table(),
        };
        Ok(Decision::Accepted {
            note: None,
            points: vec![key.clone()],
        })
    }

    /// The value `key` should have at `now` and why: running action > manual
    /// override > schedule > `value_when_idle` > nothing. A stored value the
    /// envelope no longer allows (the installer tightened it) is clamped and
    /// reported as [`ControlSource::Clamped`].
    pub fn wanted(&self, key: &PointKey, now: OffsetDateTime) -> Wanted {
        let none = Wanted {
            value: None,
            source: ControlSource::Device,
            until: None,
            action: None,
            follow_table: false,
        };
        let (Some(w), Some(ctl)) = (self.envelope.writable(key), self.points.get(key)) else {
            return none;
        };
        let clamped = |v: f64, source| {
            let c = w.clamp(v);
            let source = if same(c, v) {
                source
            } else {
                ControlSource::Clamped
            };
            (c, source)
        };
        if let Some((name, run)) = self.holder(key, now)
            && let Some(write) = self
                .envelope
                .action(name)
                .and_then(|a| a.writes.iter().find(|x| &x.key == key))
        {
            return Wanted {
                value: Some(write.value),
                source: ControlSource::Action,
                until: Some(run.until),
                action: Some(name.to_owned()),
                follow_table: false,
            };
        }
        if let Some(m) = ctl.manual.as_ref().filter(|m| m.until > now) {
            let (v, source) = clamped(m.value, ControlSource::Manual);
            return Wanted {
                value: Some(v),
                source,
                until: Some(m.until),
                action: None,
                follow_table: false,
            };
        }
        if let Some(s) = &ctl.schedule {
            let (v, source) = clamped(s.value_at(now), ControlSource::Schedule);
            // A table changed at the device is left alone on every date; a
            // table of ours leaves the dates it cannot run to the agent.
            let follow_table = match &ctl.placement {
                Placement::Device(t) if t.runs() => {
                    t.changed_at_device.is_some() || s.by_hand(now).is_none()
                }
                _ => false,
            };
            return Wanted {
                value: Some(v),
                source,
                until: None,
                action: None,
                follow_table,
            };
        }
        if let Some(v) = w.value_when_idle.or(ctl.resting) {
            return Wanted {
                value: Some(v),
                ..none
            };
        }
        none
    }

    /// The next instant after `now` at which a wanted value may change: an
    /// override or action ending, a schedule edge. `None` when nothing is
    /// pending (the controller then changes only on a command).
    pub fn next_deadline(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let actions = self.actions.values().map(|a| a.until);
        let overrides = self
            .points
            .values()
            .filter_map(|c| c.manual.as_ref().map(|m| m.until));
        let edges = self
            .points
            .values()
            .filter_map(|c| c.schedule.as_ref().and_then(|s| s.next_edge_after(now)));
        // A schedule in a device's table: dates by hand begin and end at midnight.
        let midnights = self.points.values().filter_map(|c| {
            c.placement
                .device()
                .and(c.schedule.as_ref())
                .and_then(|s| s.next_midnight_after(now))
        });
        actions
            .chain(overrides)
            .chain(edges)
            .chain(midnights)
            .filter(|t| *t > now)
            .min()
    }

    /// Drop overrides and actions that ended by `now` and forget history
    /// older than the rate and budget windows. Returns what ended, in words,
    /// for the log.
    pub fn expire(&mut self, now: OffsetDateTime) -> Vec<String> {
        let mut ended = Vec::new();
        self.actions.retain(|name, run| {
            let keep = run.until > now;
            if !keep {
                ended.push(format!(
                    "action `{name}` (started by {}) ended at {}",
                    run.by,
                    stamp(run.until)
                ));
            }
            keep
        });
        for (key, ctl) in &mut self.points {
            if let Some(m) = ctl.manual.take_if(|m| m.until <= now) {
                ended.push(format!(
                    "override of `{key}` to {} (by {}) ended at {}",
                    m.value,
                    m.by,
                    stamp(m.until)
                ));
            }
            ctl.prune(now);
        }
        ended
    }

    /// The writes needed at `now`: every point whose wanted value differs
    /// from the value last written. An unchanged value is never rewritten.
    pub fn due_writes(&self, now: OffsetDateTime) -> Vec<Write> {
        self.points
            .iter()
            .filter_map(|(key, ctl)| {
                let w = self.wanted(key, now);
                let value = w.value?;
                if w.follow_table {
                    // The device switches it; hand it back once.
                    let following = ctl.placement.device().is_some_and(|t| t.following);
                    return (!following).then(|| Write {
                        key: key.clone(),
                        value,
                        source: w.source,
                        follow_table: true,
                    });
                }
                if ctl.applied.is_some_and(|a| same(a, value)) {
                    return None;
                }
                Some(Write {
                    key: key.clone(),
                    value,
                    source: w.source,
                    follow_table: false,
                })
            })
            .collect()
    }

    /// Record that `value` was written to `key` at `now` (it counts against
    /// the daily budget and is not written again while wanted).
    pub fn record_write(&mut self, key: &PointKey, value: f64, now: OffsetDateTime) {
        let wanted = self.wanted(key, now);
        if let Some(ctl) = self.points.get_mut(key) {
            ctl.applied = Some(value);
            ctl.writes.push_back(now);
            // Set by hand: it no longer follows a device table.
            if let Placement::Device(t) = &mut ctl.placement {
                t.following = false;
            }
            // The resting value is back on the device: the point is free again.
            if wanted.source == ControlSource::Device
                && wanted.value.is_some_and(|v| same(v, value))
                && ctl.resting.is_some_and(|r| same(r, value))
            {
                ctl.resting = None;
            }
        }
    }

    /// Record that `key` was handed back to its device clock table at `now`
    /// (it counts against the daily budget like a write). The device
    /// switches it from now on; the agent writes it again only when someone
    /// takes it by hand.
    pub fn record_handback(&mut self, key: &PointKey, now: OffsetDateTime) {
        if let Some(ctl) = self.points.get_mut(key) {
            ctl.applied = None;
            ctl.writes.push_back(now);
            if let Placement::Device(t) = &mut ctl.placement {
                t.following = true;
            }
        }
    }

    /// The points that follow a schedule.
    pub fn scheduled_points(&self) -> Vec<PointKey> {
        self.points
            .iter()
            .filter(|(_, c)| c.schedule.is_some())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Where the schedule of `key` runs (`None` without a schedule).
    pub fn placement(&self, key: &PointKey) -> Option<&Placement> {
        self.points
            .get(key)
            .filter(|c| c.schedule.is_some())
            .map(|c| &c.placement)
    }

    /// The same, to change (the executor's keeper places schedules and
    /// records what it finds in the devices).
    pub fn placement_mut(&mut self, key: &PointKey) -> Option<&mut Placement> {
        self.points
            .get_mut(key)
            .filter(|c| c.schedule.is_some())
            .map(|c| &mut c.placement)
    }

    /// Record a write of `key` at `now` that failed after it may have reached
    /// the device (timeout, mismatch): it counts against the daily budget,
    /// but the value is not taken as written.
    pub fn record_attempt(&mut self, key: &PointKey, now: OffsetDateTime) {
        if let Some(ctl) = self.points.get_mut(key) {
            ctl.writes.push_back(now);
        }
    }

    /// Writes of `key` still allowed in the 24 hours before `now`; `None`
    /// when the point has no daily cap.
    pub fn budget_left(&self, key: &PointKey, now: OffsetDateTime) -> Option<usize> {
        let cap = usize::try_from(self.envelope.writable(key)?.daily_write_cap?).ok()?;
        Some(cap.saturating_sub(self.writes_in_last_day(key, now)))
    }

    /// Record the value the device reports for `key` (a reading or a
    /// read-back). It serves as the "before" value of the first change.
    pub fn record_reported(&mut self, key: &PointKey, value: f64) {
        if let Some(ctl) = self.points.get_mut(key) {
            ctl.reported = Some(value);
        }
    }

    /// Writes of `key` counted in the 24 hours before `now`.
    pub fn writes_in_last_day(&self, key: &PointKey, now: OffsetDateTime) -> usize {
        self.points
            .get(key)
            .map_or(0, |c| c.writes_since(now - BUDGET_WINDOW))
    }

    /// The schedule `key` follows, if any.
    pub fn schedule(&self, key: &PointKey) -> Option<&Schedule> {
        self.points.get(key).and_then(|c| c.schedule.as_ref())
    }

    /// The control state of every writable point, for the server.
    pub fn control_states(&self, now: OffsetDateTime) -> Vec<ControlState> {
        self.points
            .iter()
            .map(|(key, ctl)| {
                let w = self.wanted(key, now);
                let note = ctl
                    .schedule
                    .as_ref()
                    .and_then(|s| device_table::note(&ctl.placement, s, &w, now));
                // A table changed at the device: the agent claims nothing.
                let disowned = w.follow_table
                    && ctl
                        .placement
                        .device()
                        .is_some_and(|t| t.changed_at_device.is_some());
                ControlState {
                    device: key.device.clone(),
                    point: key.point.clone(),
                    commanded: if disowned { None } else { w.value },
                    reported: ctl.reported,
                    source: if disowned {
                        ControlSource::Device
                    } else {
                        w.source
                    },
                    until: w.until,
                    action: w.action,
                    note,
                }
            })
            .collect()
    }

    /// What must survive a restart.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: Snapshot::VERSION,
            points: self
                .points
                .iter()
                .map(|(key, ctl)| StoredPoint {
                    device: key.device.clone(),
                    point: key.point.clone(),
                    schedule: ctl.schedule.as_ref().map(|s| s.wire().clone()),
                    placement: ctl.schedule.as_ref().map(|_| ctl.placement.clone()),
                    manual: ctl.manual.clone(),
                    applied: ctl.applied,
                    resting: ctl.resting,
                    write_times: ctl.writes.iter().map(|t| t.unix_timestamp()).collect(),
                    changes: ctl
                        .changes
                        .iter()
                        .map(|(t, d)| (t.unix_timestamp(), *d))
                        .collect(),
                })
                .collect(),
            actions: self
                .actions
                .iter()
                .map(|(name, run)| StoredAction {
                    name: name.clone(),
                    run: run.clone(),
                })
                .collect(),
        }
    }

    /// A controller for `envelope` carrying on from `snapshot` (read at
    /// start-up). What the envelope no longer allows is dropped with a
    /// warning: points and actions no longer listed, schedules that no longer
    /// validate. Overrides and actions keep their end time, shortened to the
    /// envelope's current maximum from `now` if it was lowered.
    pub fn restore(envelope: Envelope, snapshot: Snapshot, now: OffsetDateTime) -> Self {
        let mut ctl = Controller::new(envelope);
        for sp in snapshot.points {
            let key = PointKey::new(&sp.device, &sp.point);
            let Some(w) = ctl.envelope.writable(&key).cloned() else {
                warn!(point = %key, "stored control state for a point no longer in the envelope: dropped");
                continue;
            };
            let Some(pc) = ctl.points.get_mut(&key) else {
                continue;
            };
            if let Some(s) = sp.schedule {
                match Schedule::validate(&s, &w) {
                    Ok(s) if w.schedulable => {
                        pc.schedule = Some(s);
                        // A damaged entry: place the schedule again (the
                        // device may hold what was written before).
                        pc.placement = match sp.placement {
                            Some(Placement::Device(t))
                                if !t.entries.iter().all(|e| e.is_valid()) =>
                            {
                                Placement::Undecided { old_table: true }
                            }
                            other => other.unwrap_or_default(),
                        };
                    }
                    Ok(_) => {
                        warn!(point = %key, "stored schedule dropped: the point is no longer schedulable")
                    }
                    Err(why) => warn!(point = %key, %why, "stored schedule dropped"),
                }
            }
            pc.manual = sp.manual.map(|mut m| {
                m.until = m.until.min(now + w.max_override);
                m
            });
            pc.applied = sp.applied.filter(|v| v.is_finite());
            pc.resting = sp.resting.filter(|v| v.is_finite()).map(|v| w.clamp(v));
            // Times after `now` cannot be real (a clock set back, a damaged
            // file): they are dropped rather than trusted.
            pc.writes = sp
                .write_times
                .into_iter()
                .filter_map(|t| OffsetDateTime::from_unix_timestamp(t).ok())
                .filter(|t| *t <= now)
                .collect();
            pc.changes = sp
                .changes
                .into_iter()
                .filter(|(_, d)| d.is_finite() && *d >= 0.0)
                .filter_map(|(t, d)| OffsetDateTime::from_unix_timestamp(t).ok().map(|t| (t, d)))
                .filter(|(t, _)| *t <= now)
                .collect();
            pc.prune(now);
        }
        for sa in snapshot.actions {
            let Some(max) = ctl.envelope.action(&sa.name).map(|a| a.max_duration) else {
                warn!(action = %sa.name, "stored running action no longer in the envelope: dropped");
                continue;
            };
            let mut run = sa.run;
            run.until = run.until.min(now + max);
            ctl.actions.insert(sa.name, run);
        }
        ctl
    }
}

#[cfg(test)]
mod tests {
    use protocol::{Period, WeeklySchedule};
    use time::macros::datetime;

    use super::*;
    use crate::control::envelope::tests::envelope;

    const T0: OffsetDateTime = datetime!(2026-01-15 10:00 UTC);

    fn dhw() -> PointKey {
        PointKey::new("heatpump", "dhw_setpoint")
    }
    fn room() -> PointKey {
        PointKey::new("heatpump", "room_setpoint")
    }
    fn car() -> PointKey {
        PointKey::new("heatpump", "car_heater")
    }

    fn cmd(request: ControlRequest) -> Command {
        Command {
            id: uuid::Uuid::new_v4(),
            issued_at: T0,
            expires_at: T0 + time::Duration::days(30),
            issued_by: "homeowner@example.com".into(),
            request,
        }
    }

    fn set(key: &PointKey, value: f64, until: Option<OffsetDateTime>) -> Command {
        cmd(ControlRequest::Set {
            device: key.device.clone(),
            point: key.point.clone(),
            value,
            until,
        })
    }

    fn start(action: &str, duration_s: u64) -> Command {
        cmd(ControlRequest::StartAction {
            action: action.into(),
            duration_s,
        })
    }

    fn release(key: &PointKey) -> Command {
        cmd(ControlRequest::Release {
            device: key.device.clone(),
            point: key.point.clone(),
        })
    }

    fn schedule_cmd(key: &PointKey, s: WeeklySchedule) -> Command {
        cmd(ControlRequest::SetSchedule {
            device: key.device.clone(),
            point: key.point.clone(),
            schedule: s,
        })
    }

    /// Car heater on 06:00–08:00 local every day.
    fn mornings() -> WeeklySchedule {
        WeeklySchedule {
            time_zone: "Europe/Helsinki".into(),
            on_value: 1.0,
            off_value: 0.0,
            days: vec![
                vec![Period {
                    start_min: 360,
                    end_min: 480
                }];
                7
            ],
            exceptions: vec![],
        }
    }

    /// A controller that has read the setpoints once (dhw 45, room 20).
    fn ctl() -> Controller {
        let mut c = Controller::new(envelope());
        c.record_reported(&dhw(), 45.0);
        c.record_reported(&room(), 20.0);
        c
    }

    fn rejected(d: Decision) -> String {
        match d {
            Decision::Rejected(r) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn accepted(d: Decision) -> Option<String> {
        match d {
            Decision::Accepted { note, .. } => note,
            other => panic!("expected acceptance, got {other:?}"),
        }
    }

    /// Perform every due write, as a faultless executor would.
    fn apply(c: &mut Controller, now: OffsetDateTime) -> Vec<Write> {
        let writes = c.due_writes(now);
        for w in &writes {
            c.record_write(&w.key, w.value, now);
        }
        writes
    }

    #[test]
    fn an_expired_command_changes_nothing() {
        let mut c = ctl();
        let mut late = set(&dhw(), 50.0, None);
        late.expires_at = T0 - time::Duration::minutes(1);
        let d = c.decide(&late, T0);
        let Decision::Expired(why) = d else {
            panic!("{d:?}")
        };
        assert!(why.contains("expired at 2026-01-15T09:59:00Z"), "{why}");
        // Only the car heater's idle value is due; nothing for the dhw setpoint.
        assert!(c.due_writes(T0).iter().all(|w| w.key != dhw()));
        assert_eq!(c.wanted(&dhw(), T0).value, None);
        // Exactly at the expiry is too late as well.
        late.expires_at = T0;
        assert!(matches!(c.decide(&late, T0), Decision::Expired(_)));
    }

    #[test]
    fn values_outside_the_envelope_are_refused_with_the_reason() {
        let mut c = ctl();
        let why = rejected(c.decide(&set(&dhw(), 60.0, None), T0));
        assert!(why.contains("outside the limits"), "{why}");
        let why = rejected(c.decide(&set(&dhw(), 50.2, None), T0));
        assert!(why.contains("multiple of the step 0.5"), "{why}");
        let why = rejected(c.decide(&set(&dhw(), f64::NAN, None), T0));
        assert!(why.contains("not a number"), "{why}");
        let why = rejected(c.decide(&set(&car(), 0.5, None), T0));
        assert!(why.contains("output"), "{why}");
        let why = rejected(c.decide(
            &set(&PointKey::new("heatpump", "outdoor_temp"), 1.0, None),
            T0,
        ));
        assert!(why.contains("not in this agent's envelope"), "{why}");
        let why = rejected(c.decide(&set(&PointKey::new("boiler", "x"), 1.0, None), T0));
        assert!(why.contains("`boiler.x`"), "{why}");
        assert!(c.due_writes(T0).iter().all(|w| w.key == car()));
    }

    #[test]
    fn float_error_is_tolerated_and_snapped() {
        let mut c = ctl();
        accepted(c.decide(&set(&room(), 0.1 + 0.2 + 20.0, None), T0));
        let w = c.due_writes(T0);
        let w = w.iter().find(|w| w.key == room()).unwrap();
        assert_eq!(w.value, 20.3);
        assert_eq!(w.source, ControlSource::Manual);
    }

    #[test]
    fn an_override_is_capped_at_its_maximum_and_reverts_on_the_agents_clock() {
        let mut c = ctl();
        let note = accepted(c.decide(&set(&dhw(), 50.0, Some(T0 + time::Duration::hours(10))), T0))
            .unwrap();
        assert!(note.contains("capped at 240 minutes"), "{note}");
        let end = T0 + time::Duration::hours(4);
        let w = c.wanted(&dhw(), T0);
        assert_eq!(
            (w.value, w.source, w.until),
            (Some(50.0), ControlSource::Manual, Some(end))
        );
        assert_eq!(c.next_deadline(T0), Some(end));
        assert_eq!(apply(&mut c, T0).len(), 2); // dhw override + car heater idle value
        // One second before the end it holds; at the end the device is left
        // alone again (no schedule, no idle value for dhw).
        assert_eq!(
            c.wanted(&dhw(), end - time::Duration::SECOND).value,
            Some(50.0)
        );
        // At the end the device's own value from before (45) is put back.
        let w = c.wanted(&dhw(), end);
        assert_eq!((w.value, w.source), (Some(45.0), ControlSource::Device));
        let ended = c.expire(end);
        assert_eq!(ended.len(), 1, "{ended:?}");
        assert!(ended[0].contains("homeowner@example.com"));
    }

    #[test]
    fn an_override_without_end_gets_the_maximum_and_one_in_the_past_is_refused() {
        let mut c = ctl();
        assert_eq!(accepted(c.decide(&set(&car(), 1.0, None), T0)), None);
        assert_eq!(
            c.wanted(&car(), T0).until,
            Some(T0 + time::Duration::hours(3))
        );
        let why = rejected(c.decide(&set(&car(), 1.0, Some(T0)), T0));
        assert!(why.contains("not after now"), "{why}");
    }

    #[test]
    fn an_override_ends_back_on_the_schedule() {
        let mut c = ctl();
        accepted(c.decide(&schedule_cmd(&car(), mornings()), T0));
        // 10:00 UTC = 12:00 local: outside the morning period.
        assert_eq!(c.wanted(&car(), T0).value, Some(0.0));
        assert_eq!(c.wanted(&car(), T0).source, ControlSource::Schedule);
        accepted(c.decide(
            &set(&car(), 1.0, Some(T0 + time::Duration::minutes(30))),
            T0,
        ));
        assert_eq!(c.wanted(&car(), T0).value, Some(1.0));
        let end = T0 + time::Duration::minutes(30);
        assert_eq!(c.next_deadline(T0), Some(end));
        assert_eq!(c.wanted(&car(), end).value, Some(0.0));
        assert_eq!(c.wanted(&car(), end).source, ControlSource::Schedule);
        // Release ends it early.
        accepted(c.decide(&release(&car()), T0));
        assert_eq!(c.wanted(&car(), T0).source, ControlSource::Schedule);
        assert_eq!(
            accepted(c.decide(&release(&car()), T0)).as_deref(),
            Some("no override was active")
        );
    }

    #[test]
    fn precedence_is_action_then_override_then_schedule_then_idle() {
        let mut c = ctl();
        // Idle value first.
        assert_eq!(c.wanted(&car(), T0).value, Some(0.0));
        assert_eq!(c.wanted(&car(), T0).source, ControlSource::Device);
        // Nothing at all for dhw.
        assert_eq!(c.wanted(&dhw(), T0).value, None);
        accepted(c.decide(&set(&dhw(), 45.0, None), T0));
        assert_eq!(c.wanted(&dhw(), T0).value, Some(45.0));
        // A boost wins over the override while it runs.
        accepted(c.decide(&start("boost_dhw", 3600), T0));
        let w = c.wanted(&dhw(), T0);
        assert_eq!(
            (w.value, w.source, w.action.as_deref()),
            (Some(55.0), ControlSource::Action, Some("boost_dhw"))
        );
        // Then the override again.
        let after = T0 + time::Duration::hours(1);
        assert_eq!(c.wanted(&dhw(), after).value, Some(45.0));
        assert_eq!(c.wanted(&dhw(), after).source, ControlSource::Manual);
        // A set on a point held by the action is refused.
        let why = rejected(c.decide(&set(&dhw(), 50.0, None), T0));
        assert!(
            why.contains("held by the running action `boost_dhw`"),
            "{why}"
        );
    }

    #[test]
    fn a_boost_is_capped_reverts_by_itself_and_can_be_stopped() {
        let mut c = ctl();
        let note = accepted(c.decide(&start("boost_dhw", 24 * 3600), T0)).unwrap();
        assert!(note.contains("capped at 180 minutes"), "{note}");
        let end = T0 + time::Duration::hours(3);
        assert_eq!(c.next_deadline(T0), Some(end));
        let writes = apply(&mut c, T0);
        assert!(writes.contains(&Write {
            key: dhw(),
            value: 55.0,
            source: ControlSource::Action,
            follow_table: false,
        }));
        // At the end (no server needed) the value from before comes back.
        assert_eq!(c.wanted(&dhw(), end).value, Some(45.0));
        // Starting again restarts it; stopping ends it.
        accepted(c.decide(&start("boost_dhw", 60), T0));
        assert_eq!(
            c.wanted(&dhw(), T0).until,
            Some(T0 + time::Duration::minutes(1))
        );
        assert_eq!(
            accepted(c.decide(
                &cmd(ControlRequest::StopAction {
                    action: "boost_dhw".into()
                }),
                T0
            )),
            None
        );
        assert_eq!(c.wanted(&dhw(), T0).value, Some(45.0));
        let note = accepted(c.decide(
            &cmd(ControlRequest::StopAction {
                action: "boost_dhw".into(),
            }),
            T0,
        ));
        assert!(note.unwrap().contains("was not running"));
    }

    #[test]
    fn unknown_and_zero_length_actions_are_refused() {
        let mut c = ctl();
        let why = rejected(c.decide(&start("open_valve", 60), T0));
        assert!(
            why.contains("unknown action `open_valve` (this agent has: boost_dhw)"),
            "{why}"
        );
        let why = rejected(c.decide(&start("boost_dhw", 0), T0));
        assert!(why.contains("above 0"), "{why}");
        let why = rejected(c.decide(&cmd(ControlRequest::StopAction { action: "x".into() }), T0));
        assert!(why.contains("unknown action"), "{why}");
    }

    #[test]
    fn changes_faster_than_max_change_per_hour_are_refused() {
        let mut c = ctl();
        c.record_reported(&room(), 20.0);
        // 20.0 -> 21.5: 1.5 of 2.0 per hour.
        accepted(c.decide(&set(&room(), 21.5, None), T0));
        // -> 20.9: another 0.6, total 2.1 > 2.0.
        let why = rejected(c.decide(&set(&room(), 20.9, None), T0 + time::Duration::minutes(10)));
        assert!(why.contains("max_change_per_hour is 2"), "{why}");
        // -> 21.0: 0.5 more, exactly 2.0: fine.
        accepted(c.decide(&set(&room(), 21.0, None), T0 + time::Duration::minutes(20)));
        // An hour after the first change, only the second counts.
        accepted(c.decide(&set(&room(), 22.0, None), T0 + time::Duration::minutes(61)));
    }

    #[test]
    fn an_unchanged_value_is_not_rewritten() {
        let mut c = ctl();
        accepted(c.decide(&set(&dhw(), 50.0, None), T0));
        assert_eq!(apply(&mut c, T0).len(), 2);
        assert!(c.due_writes(T0).is_empty());
        let note = accepted(c.decide(&set(&dhw(), 50.0, None), T0)).unwrap();
        assert!(note.contains("not rewritten"), "{note}");
        assert!(c.due_writes(T0).is_empty());
        assert_eq!(c.writes_in_last_day(&dhw(), T0), 1);
    }

    #[test]
    fn a_takeover_puts_the_devices_value_back_and_frees_the_point() {
        let mut c = ctl();
        c.record_reported(&dhw(), 47.0);
        let end = T0 + time::Duration::minutes(5);
        accepted(c.decide(&set(&dhw(), 50.0, Some(end)), T0));
        apply(&mut c, T0);
        let writes = apply(&mut c, end);
        assert!(writes.contains(&Write {
            key: dhw(),
            value: 47.0,
            source: ControlSource::Device,
            follow_table: false,
        }));
        // Put back: the agent leaves the point alone from now on.
        assert_eq!(c.wanted(&dhw(), end).value, None);
        assert!(c.due_writes(end).is_empty());
    }

    #[test]
    fn a_resting_value_outside_the_envelope_is_clamped_into_it() {
        let mut c = ctl();
        // Someone set 60 at the panel: the agent will not write 60 back, but 55.
        c.record_reported(&dhw(), 60.0);
        accepted(c.decide(&start("boost_dhw", 60), T0));
        let w = c.wanted(&dhw(), T0 + time::Duration::minutes(1));
        assert_eq!(w.value, Some(55.0));
    }

    #[test]
    fn a_takeover_of_a_point_never_read_is_refused() {
        let mut c = Controller::new(envelope());
        let why = rejected(c.decide(&set(&dhw(), 50.0, None), T0));
        assert!(
            why.contains("has not read `heatpump.dhw_setpoint`"),
            "{why}"
        );
        let why = rejected(c.decide(&start("boost_dhw", 60), T0));
        assert!(why.contains("has not read"), "{why}");
        // An output with an idle value needs no reading: the idle value is what comes back.
        accepted(c.decide(&set(&car(), 1.0, None), T0));
    }

    #[test]
    fn a_failed_attempt_counts_against_the_budget_but_stays_due() {
        let mut c = ctl();
        accepted(c.decide(&set(&dhw(), 50.0, None), T0));
        assert_eq!(c.budget_left(&dhw(), T0), Some(24));
        c.record_attempt(&dhw(), T0);
        assert_eq!(c.budget_left(&dhw(), T0), Some(23));
        assert!(c.due_writes(T0).iter().any(|w| w.key == dhw()));
        assert_eq!(c.budget_left(&room(), T0), None);
    }

    #[test]
    fn the_daily_write_cap_refuses_commands_but_never_a_revert() {
        let mut c = ctl();
        let mut t = T0;
        // dhw has a cap of 24; alternate 45/46 so every set writes.
        for i in 0..22 {
            let v = if i % 2 == 0 { 45.0 } else { 46.0 };
            accepted(c.decide(&set(&dhw(), v, None), t));
            apply(&mut c, t);
            t += time::Duration::minutes(1);
        }
        assert_eq!(c.writes_in_last_day(&dhw(), t), 22);
        // 22 used: a set needs 2 (write + revert): 24 is still possible once...
        accepted(c.decide(&set(&dhw(), 47.0, None), t));
        apply(&mut c, t);
        // ...then 23 used: no room for a change and its revert.
        let why = rejected(c.decide(&set(&dhw(), 48.0, None), t));
        assert!(why.contains("daily write cap"), "{why}");
        assert!(why.contains("23 of 24"), "{why}");
        let why = rejected(c.decide(&start("boost_dhw", 60), t));
        assert!(why.contains("daily write cap"), "{why}");
        // The same value needs no write, so it is not refused.
        accepted(c.decide(&set(&dhw(), 47.0, None), t));
        // The revert is never blocked: release, then the point is left alone
        // (dhw has no idle value); with a schedule it would follow it.
        accepted(c.decide(&release(&dhw()), t));
        // 24 hours after the first writes, room comes back.
        let later = T0 + time::Duration::hours(24) + time::Duration::minutes(1);
        accepted(c.decide(&set(&dhw(), 48.0, None), later));
    }

    #[test]
    fn schedules_are_checked_against_the_point_and_its_budget() {
        let mut c = ctl();
        let why = rejected(c.decide(&schedule_cmd(&dhw(), mornings()), T0));
        assert!(why.contains("schedulable = false"), "{why}");
        let mut s = mornings();
        s.time_zone = "Mars/Olympus".into();
        let why = rejected(c.decide(&schedule_cmd(&car(), s), T0));
        assert!(why.contains("unknown time zone"), "{why}");
        let mut s = mornings();
        s.on_value = 25.0;
        s.off_value = 18.0;
        let why = rejected(c.decide(&schedule_cmd(&room(), s.clone()), T0));
        assert!(why.starts_with("on_value:"), "{why}");
        s.on_value = 21.0;
        accepted(c.decide(&schedule_cmd(&room(), s), T0));
        // 06:00 local = 04:00 UTC in January.
        assert_eq!(
            c.wanted(&room(), datetime!(2026-01-16 04:00 UTC)).value,
            Some(21.0)
        );
        // A budget too small for the schedule: tighten the cap to 2 and ask
        // for two periods a day.
        let mut env = envelope();
        env.writables[1].daily_write_cap = Some(2);
        let mut c = Controller::new(env);
        let mut s = mornings();
        s.on_value = 21.0;
        s.off_value = 18.0;
        s.days[0].push(Period {
            start_min: 1000,
            end_min: 1100,
        });
        let why = rejected(c.decide(&schedule_cmd(&room(), s), T0));
        assert!(why.contains("up to 4 writes a day"), "{why}");
    }

    #[test]
    fn a_refusal_changes_nothing() {
        let mut c = ctl();
        accepted(c.decide(&schedule_cmd(&car(), mornings()), T0));
        let before = c.snapshot();
        for bad in [
            set(&car(), 2.0, None),
            set(&dhw(), 80.0, None),
            start("nope", 60),
            schedule_cmd(&dhw(), mornings()),
        ] {
            rejected(c.decide(&bad, T0));
        }
        assert_eq!(c.snapshot(), before);
    }

    #[test]
    fn a_schedule_in_a_device_table_is_handed_back_once_not_written_edge_by_edge() {
        use crate::devices::timer::TimerEntry;
        let mut c = ctl();
        accepted(c.decide(&schedule_cmd(&car(), mornings()), T0));
        assert!(matches!(
            c.placement(&car()),
            Some(Placement::Undecided { old_table: false })
        ));
        // Until the table is in the device the agent switches it itself.
        let mut t = device_table::DeviceTable::new(
            vec![TimerEntry {
                days: 0x7F,
                on: 360,
                off: 480,
            }],
            8,
            "Europe/Helsinki",
        );
        *c.placement_mut(&car()).unwrap() = Placement::Device(t.clone());
        let w = c.due_writes(T0);
        assert_eq!((w.len(), w[0].follow_table, w[0].value), (1, false, 0.0));
        // Written: one hand-back, then nothing at any edge.
        t.written = true;
        *c.placement_mut(&car()).unwrap() = Placement::Device(t);
        let w = c.due_writes(T0);
        assert_eq!((w.len(), w[0].follow_table), (1, true));
        c.record_handback(&car(), T0);
        let six = datetime!(2026-01-16 04:00 UTC);
        assert!(c.due_writes(six).is_empty());
        assert!(c.due_writes(six + time::Duration::hours(2)).is_empty());
        let s = &c.control_states(six)[0];
        assert_eq!(
            (s.commanded, s.source),
            (Some(1.0), ControlSource::Schedule)
        );
        assert!(
            s.note
                .as_deref()
                .unwrap()
                .starts_with("switched by the device's own clock table")
        );
        // An override is written by hand; its end hands the output back again.
        accepted(c.decide(&set(&car(), 1.0, Some(T0 + time::Duration::minutes(5))), T0));
        let w = c.due_writes(T0);
        assert_eq!((w[0].follow_table, w[0].value), (false, 1.0));
        c.record_write(&car(), 1.0, T0);
        let end = T0 + time::Duration::minutes(5);
        let w = c.due_writes(end);
        assert_eq!((w.len(), w[0].follow_table), (1, true));
        // A new schedule is placed anew; the table of ours may still be there.
        accepted(c.decide(&schedule_cmd(&car(), mornings()), T0));
        assert!(matches!(
            c.placement(&car()),
            Some(Placement::Undecided { old_table: true })
        ));
    }

    #[test]
    fn next_deadline_is_the_earliest_of_edges_and_ends() {
        let mut c = ctl();
        assert_eq!(c.next_deadline(T0), None);
        accepted(c.decide(&schedule_cmd(&car(), mornings()), T0));
        // Next morning 06:00 local = 04:00 UTC.
        assert_eq!(c.next_deadline(T0), Some(datetime!(2026-01-16 04:00 UTC)));
        accepted(c.decide(&start("boost_dhw", 600), T0));
        assert_eq!(c.next_deadline(T0), Some(T0 + time::Duration::minutes(10)));
    }

    #[test]
    fn a_stored_state_outside_a_tightened_envelope_is_clamped_and_says_so() {
        let mut c = ctl();
        c.record_reported(&room(), 23.0);
        accepted(c.decide(&set(&room(), 23.5, None), T0));
        let snap = c.snapshot();
        let mut env = envelope();
        env.writables[1].max = 22.0;
        env.writables[1].max_override = std::time::Duration::from_secs(600);
        let c = Controller::restore(env, snap, T0);
        let w = c.wanted(&room(), T0);
        assert_eq!((w.value, w.source), (Some(22.0), ControlSource::Clamped));
        // The end time was shortened to the new maximum.
        assert_eq!(w.until, Some(T0 + time::Duration::minutes(10)));
    }

    #[test]
    fn control_states_report_commanded_reported_source_and_until() {
        let mut c = ctl();
        c.record_reported(&dhw(), 47.5);
        accepted(c.decide(&start("boost_dhw", 600), T0));
        let states = c.control_states(T0);
        assert_eq!(states.len(), 3);
        let s = states.iter().find(|s| s.point == "dhw_setpoint").unwrap();
        assert_eq!(s.commanded, Some(55.0));
        assert_eq!(s.reported, Some(47.5));
        assert_eq!(s.source, ControlSource::Action);
        assert_eq!(s.action.as_deref(), Some("boost_dhw"));
        assert_eq!(s.until, Some(T0 + time::Duration::minutes(10)));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Set(usize, f64, Option<i64>),
            Release(usize),
            Boost(u64),
            Stop,
            Schedule(usize, f64, f64, u16, u16),
            Wait(i64),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (
                    0usize..3,
                    prop_oneof![
                        -100.0..200.0f64,
                        (0i32..600).prop_map(|x| f64::from(x) / 10.0)
                    ],
                    proptest::option::of(-600i64..100_000)
                )
                    .prop_map(|(p, v, u)| Op::Set(p, v, u)),
                (0usize..3).prop_map(Op::Release),
                (0u64..100_000).prop_map(Op::Boost),
                Just(Op::Stop),
                (
                    0usize..3,
                    (0i32..600).prop_map(|x| f64::from(x) / 10.0),
                    -1.0..60.0f64,
                    0u16..1500,
                    0u16..1500
                )
                    .prop_map(|(p, a, b, s, e)| Op::Schedule(p, a, b, s, e)),
                (0i64..20_000).prop_map(Op::Wait),
            ]
        }

        fn in_envelope(w: &Writable, v: f64) -> bool {
            let steps = v / w.step;
            w.min <= v && v <= w.max && (steps - steps.round()).abs() < 1e-6
        }

        proptest! {
            #[test]
            fn no_accepted_command_ever_yields_a_write_outside_min_max_step(
                ops in proptest::collection::vec(op(), 1..40)
            ) {
                let mut c = ctl();
                let keys = [dhw(), room(), car()];
                let mut now = T0;
                for op in ops {
                    let command = match op {
                        Op::Set(p, v, u) => Some(set(&keys[p], v, u.map(|s| now + time::Duration::seconds(s)))),
                        Op::Release(p) => Some(release(&keys[p])),
                        Op::Boost(d) => Some(start("boost_dhw", d)),
                        Op::Stop => Some(cmd(ControlRequest::StopAction { action: "boost_dhw".into() })),
                        Op::Schedule(p, on, off, s, e) => {
                            let mut sch = mornings();
                            sch.on_value = on;
                            sch.off_value = off;
                            sch.days[2] = vec![Period { start_min: s, end_min: e }];
                            Some(schedule_cmd(&keys[p], sch))
                        }
                        Op::Wait(s) => {
                            now += time::Duration::seconds(s);
                            c.expire(now);
                            None
                        }
                    };
                    if let Some(command) = command {
                        let _ = c.decide(&command, now);
                    }
                    for w in apply(&mut c, now) {
                        let limits = c.envelope().writable(&w.key).unwrap();
                        prop_assert!(in_envelope(limits, w.value), "{w:?} outside {limits:?}");
                    }
                    for k in &keys {
                        if let Some(v) = c.wanted(k, now).value {
                            let limits = c.envelope().writable(k).unwrap();
                            prop_assert!(in_envelope(limits, v), "{k} wanted {v}");
                        }
                    }
                }
            }
        }
    }
}
