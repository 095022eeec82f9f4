//! The executor's hands on devices' own clock tables: place each new
//! schedule, write the tables, look at them again, and keep the devices'
//! clocks on the schedules' local time.
//!
//! [`Keeper::keep`] runs in the executor before it writes anything (after
//! every command and at every wake-up). Everything goes through the bus
//! queues as protocol-neutral [`TimerOp`]s, so nothing here knows POP:
//!
//! 1. **Place** every new schedule ([`Placement::Undecided`]): ask the bus
//!    whether the point has a device timer ([`TimerOp::Describe`], once per
//!    point) and [`device_table::place`] it.
//! 2. **Write** a placed table ([`TimerOp::WriteTable`]: only slots that
//!    differ are written, each read back, leftovers cleared). Slots written
//!    count against the point's daily write budget (the tables live in
//!    EEPROM); a write needs room for a whole table. A failure in transit
//!    (device offline) is tried again after [`RETRY_AFTER`]; a device that
//!    refuses is not asked again until the schedule changes, and the agent
//!    runs the schedule meanwhile. A table of ours left from an earlier
//!    schedule the agent now runs itself is cleared.
//! 3. **Look again** at every table every [`CHECK_EVERY`], and at once when
//!    its device answers again after being offline (an unanswered look waits
//!    for that, rather than costing seconds of bus time every minute). A table that differs
//!    from what was written was changed at the device (the wall keypad): the
//!    agent does **not** fight the person there. It records what the table
//!    holds, reports it in the point's note, stops claiming the schedule,
//!    and leaves the table and the output alone (an override still ends by
//!    handing the output back to that table) until a schedule is sent again,
//!    which rewrites it. It never overwrites on a check.
//! 4. **Clocks**: a table is only as right as the device's clock. Each
//!    device running a table has its clock read when the table is written,
//!    when the device answers again after being offline, every
//!    [`CHECK_EVERY`], and right after each daylight-saving change of the
//!    zone; when it is more than [`CLOCK_TOLERANCE`] off the schedule's local
//!    time it is set (read back) and the drift is logged. A clock that is off
//!    and cannot be set makes the agent run the device's schedules itself
//!    until it can.
//!
//! Handing an output back to its table is a due write of the controller
//! ([`super::Write::follow_table`]), done by the executor like any write.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
};

use time::OffsetDateTime;
use tracing::{debug, info, warn};

use super::{
    Controller, PointKey,
    device_table::{self, Placement, describe},
    executor::{Clock, RETRY_AFTER},
};
use crate::{
    devices::timer::{LocalNow, TimerCaps, TimerOp, TimerReply, entries_of},
    poller::{WriteError, Writer},
};

/// How often tables and clocks are looked at.
pub const CHECK_EVERY: time::Duration = time::Duration::HOUR;
/// A device clock further than this from local time is set.
pub const CLOCK_TOLERANCE: time::Duration = time::Duration::seconds(30);

/// Devices that answered again after being offline, noted by
/// [`super::executor::forward`] from the pollers' status events.
pub type DevicesBack = Arc<Mutex<BTreeSet<String>>>;

/// What the keeper did for a point in one round: a sentence for the user,
/// or why it failed.
pub type Kept = BTreeMap<PointKey, Result<String, String>>;

/// The keeper's memory (what it must not forget across a restart is in the
/// controller's [`Placement`]s).
#[derive(Debug)]
pub struct Keeper {
    clock: Clock,
    /// Device timers by point, as the buses described them.
    caps: BTreeMap<PointKey, Option<TimerCaps>>,
    /// Next look at each point's table (written tables only).
    table_due: BTreeMap<PointKey, OffsetDateTime>,
    /// Next write or clear of a table, after a failure.
    retry_at: BTreeMap<PointKey, OffsetDateTime>,
    /// Next look at the clock of each device that runs tables, by device
    /// key (its zone is its schedules').
    clocks: BTreeMap<String, OffsetDateTime>,
    back: DevicesBack,
    /// A placement could not be decided (bus not running): try again then.
    undecided_retry: Option<OffsetDateTime>,
}

fn retryable(e: &WriteError) -> bool {
    matches!(
        e,
        WriteError::Transport(_) | WriteError::Unverified { .. } | WriteError::BusStopped(_)
    )
}

impl Keeper {
    /// A keeper on `clock`.
    pub fn new(clock: Clock) -> Self {
        Keeper {
            clock,
            caps: BTreeMap::new(),
            table_due: BTreeMap::new(),
            retry_at: BTreeMap::new(),
            clocks: BTreeMap::new(),
            back: DevicesBack::default(),
            undecided_retry: None,
        }
    }

    /// Take note of devices answering again from `back`.
    pub fn with_devices_back(mut self, back: DevicesBack) -> Self {
        self.back = back;
        self
    }

    /// When the keeper wants to run next, if it has anything pending.
    pub fn next_due(&self, ctl: &Controller) -> Option<OffsetDateTime> {
        let mut next: Option<OffsetDateTime> = self.undecided_retry;
        let mut at = |t: OffsetDateTime| next = Some(next.map_or(t, |n| n.min(t)));
        for key in ctl.scheduled_points() {
            match ctl.placement(&key) {
                Some(Placement::Device(t)) if t.written => {
                    if let Some(d) = self.table_due.get(&key) {
                        at(*d);
                    }
                }
                Some(Placement::Device(t)) if t.to_write() => {
                    at(self
                        .retry_at
                        .get(&key)
                        .copied()
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH));
                }
                Some(Placement::Agent {
                    clear_table: true, ..
                }) => at(self
                    .retry_at
                    .get(&key)
                    .copied()
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH)),
                _ => {}
            }
        }
        for due in self.clocks.values() {
            at(*due);
        }
        next
    }

    fn take_back(&self) -> Vec<String> {
        match self.back.lock() {
            Ok(mut b) => std::mem::take(&mut *b).into_iter().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// One round: place, write, look again, keep clocks (see the module
    /// doc). Returns, per point whose table was written or placed now, what
    /// happened.
    pub async fn keep(
        &mut self,
        ctl: &mut Controller,
        writer: &Writer,
        now: OffsetDateTime,
    ) -> Kept {
        let mut kept = Kept::new();
        for device in self.take_back() {
            debug!(%device, "device answers again: its clock tables and clock are looked at now");
            for key in self
                .table_due
                .keys()
                .filter(|k| k.device == device)
                .cloned()
                .collect::<Vec<_>>()
            {
                self.table_due.insert(key, now);
            }
            if let Some(due) = self.clocks.get_mut(&device) {
                *due = now;
            }
        }
        let keys = ctl.scheduled_points();
        self.undecided_retry = None;
        for key in &keys {
            if matches!(ctl.placement(key), Some(Placement::Undecided { .. })) {
                self.place(ctl, writer, key, now, &mut kept).await;
            }
        }
        for key in &keys {
            let due = |m: &BTreeMap<PointKey, OffsetDateTime>| m.get(key).is_none_or(|t| *t <= now);
            match ctl.placement(key) {
                Some(Placement::Device(t)) if t.to_write() && due(&self.retry_at) => {
                    self.write(ctl, writer, key, now, &mut kept).await;
                }
                Some(Placement::Device(t)) if t.written && due(&self.table_due) => {
                    self.check(ctl, writer, key, now).await;
                }
                Some(Placement::Agent {
                    clear_table: true, ..
                }) if due(&self.retry_at) => self.clear(ctl, writer, key, now).await,
                _ => {}
            }
        }
        self.keep_clocks(ctl, writer, now).await;
        kept
    }

    async fn place(
        &mut self,
        ctl: &mut Controller,
        writer: &Writer,
        key: &PointKey,
        now: OffsetDateTime,
        kept: &mut Kept,
    ) {
        let caps = match self.caps.get(key) {
            Some(c) => *c,
            None => match writer
                .timer(&key.device, &key.point, TimerOp::Describe)
                .await
            {
                Ok(TimerReply::Caps(c)) => {
                    self.caps.insert(key.clone(), Some(c));
                    Some(c)
                }
                Err(WriteError::BusStopped(bus)) => {
                    debug!(point = %key, %bus, "bus not running: the schedule is placed later");
                    self.undecided_retry = Some(now + RETRY_AFTER);
                    return;
                }
                other => {
                    if let Err(e) = &other
                        && !matches!(e, WriteError::Unsupported(_))
                    {
                        debug!(point = %key, error = %e, "no device timer");
                    }
                    self.caps.insert(key.clone(), None);
                    None
                }
            },
        };
        // Other schedules in this device's tables keep its clock on their zone.
        let zones: Vec<(String, String)> = ctl
            .scheduled_points()
            .into_iter()
            .filter(|k| k.device == key.device && k != key)
            .filter_map(|k| match ctl.placement(&k) {
                Some(Placement::Device(t)) if !t.gave_up => Some((k.point.clone(), t.zone.clone())),
                _ => None,
            })
            .collect();
        let (Some(schedule), Some(writable)) = (
            ctl.schedule(key).cloned(),
            ctl.envelope().writable(key).cloned(),
        ) else {
            return;
        };
        let old_table = ctl.placement(key).is_some_and(Placement::holds_table);
        let placed = device_table::place(&schedule, &writable, caps, &zones, old_table);
        match &placed {
            Placement::Device(t) => {
                info!(point = %key, entries = t.entries.len(), slots = t.slots, table = %describe(&t.entries), "the schedule runs in the device's own clock table");
            }
            Placement::Agent { why, .. } => {
                info!(point = %key, %why, "the schedule is run by the agent");
                // A device with no timer at all is the ordinary case, not news
                // for the command's result (the control state's note still says it).
                if caps.is_some() {
                    kept.insert(key.clone(), Ok(format!("run by the agent: {why}")));
                }
            }
            Placement::Undecided { .. } => {}
        }
        self.retry_at.remove(key);
        self.table_due.remove(key);
        if let Some(p) = ctl.placement_mut(key) {
            *p = placed;
        }
    }

    async fn write(
        &mut self,
        ctl: &mut Controller,
        writer: &Writer,
        key: &PointKey,
        now: OffsetDateTime,
        kept: &mut Kept,
    ) {
        let Some(Placement::Device(t)) = ctl.placement(key) else {
            return;
        };
        let (entries, slots) = (t.entries.clone(), t.slots);
        if let Some(left) = ctl.budget_left(key, now)
            && left < usize::from(slots)
        {
            let why = format!(
                "the daily write cap of `{key}` leaves {left} writes, and writing the device's table may take {slots}"
            );
            self.retry_at.insert(key.clone(), now + RETRY_AFTER);
            if let Some(Placement::Device(t)) = ctl.placement_mut(key) {
                t.problem = Some(why.clone());
            }
            // The schedule runs meanwhile, at the agent.
            kept.insert(
                key.clone(),
                Ok(format!(
                    "run by the agent until the device's clock table can be written: {why}"
                )),
            );
            return;
        }
        let result = writer
            .timer(
                &key.device,
                &key.point,
                TimerOp::WriteTable(entries.clone()),
            )
            .await;
        match result {
            Ok(TimerReply::Written {
                table,
                slots_written,
            }) => {
                for _ in 0..slots_written {
                    ctl.record_attempt(key, now);
                }
                let held = entries_of(&table) == entries_of(&entries);
                if let Some(Placement::Device(t)) = ctl.placement_mut(key) {
                    t.written = held;
                    t.problem = (!held).then(|| format!("the device holds {}", describe(&table)));
                    t.gave_up = !held;
                    t.changed_at_device = None;
                }
                if held {
                    info!(point = %key, slots_written, table = %describe(&entries), "device clock table written and read back");
                    self.retry_at.remove(key);
                    self.table_due.insert(key.clone(), now + CHECK_EVERY);
                    self.clock_due_now(key, now);
                    kept.insert(
                        key.clone(),
                        Ok(format!(
                            "runs in the device's own clock table ({} of {} entries; {slots_written} written)",
                            entries.len(),
                            slots
                        )),
                    );
                } else {
                    warn!(point = %key, held = %describe(&table), wanted = %describe(&entries), "the device holds another clock table than the one written; the agent runs the schedule");
                    kept.insert(
                        key.clone(),
                        Ok(format!(
                            "run by the agent: the device holds {} after writing {}",
                            describe(&table),
                            describe(&entries)
                        )),
                    );
                }
            }
            Ok(other) => {
                warn!(point = %key, reply = ?other, "unexpected answer to a clock table write");
                self.retry_at.insert(key.clone(), now + RETRY_AFTER);
            }
            Err(e) => {
                let again = retryable(&e);
                warn!(point = %key, error = %e, retry = again, "writing the device's clock table failed; the agent switches the output meanwhile");
                if let Some(Placement::Device(t)) = ctl.placement_mut(key) {
                    t.problem = Some(e.to_string());
                    t.gave_up = !again;
                }
                if again {
                    self.retry_at.insert(key.clone(), now + RETRY_AFTER);
                }
                // A refusal is final: the schedule runs at the agent, as for
                // a device without a table. A failure in transit is the
                // command's failure until the retry succeeds.
                kept.insert(
                    key.clone(),
                    if again {
                        Err(format!(
                            "writing the device's clock table: {e}; tried again in {} s, \
                             the agent switches the output meanwhile",
                            RETRY_AFTER.as_secs()
                        ))
                    } else {
                        Ok(format!(
                            "run by the agent: the device did not take the clock table ({e})"
                        ))
                    },
                );
            }
        }
    }

    /// Look at a written table again; note a change made at the device,
    /// never overwrite it.
    async fn check(
        &mut self,
        ctl: &mut Controller,
        writer: &Writer,
        key: &PointKey,
        now: OffsetDateTime,
    ) {
        let Some(Placement::Device(t)) = ctl.placement(key) else {
            return;
        };
        let wanted = t.entries.clone();
        match writer
            .timer(&key.device, &key.point, TimerOp::ReadTable)
            .await
        {
            Ok(TimerReply::Table(table)) => {
                self.table_due.insert(key.clone(), now + CHECK_EVERY);
                let same = entries_of(&table) == entries_of(&wanted);
                let found = describe(&table);
                if let Some(Placement::Device(t)) = ctl.placement_mut(key) {
                    match (&t.changed_at_device, same) {
                        (None, false) => {
                            warn!(point = %key, holds = %found, wanted = %describe(&wanted), "the clock table was changed at the device; the agent leaves it be and no longer claims the schedule");
                            t.changed_at_device = Some(found);
                        }
                        (Some(_), true) => {
                            info!(point = %key, "the device's clock table is as the schedule wants again");
                            t.changed_at_device = None;
                        }
                        (Some(old), false) if *old != found => {
                            info!(point = %key, holds = %found, "the clock table changed at the device again");
                            t.changed_at_device = Some(found);
                        }
                        _ => {}
                    }
                }
            }
            // An unanswered look waits for the next regular one, or for the
            // device to answer again (the poller notices): an offline board
            // is not asked every minute, each time for seconds of bus time.
            Ok(other) => {
                warn!(point = %key, reply = ?other, "unexpected answer to a clock table read");
                self.table_due.insert(key.clone(), now + CHECK_EVERY);
            }
            Err(e) => {
                debug!(point = %key, error = %e, "the device's clock table could not be read; looked at again when it answers");
                self.table_due.insert(key.clone(), now + CHECK_EVERY);
            }
        }
    }

    /// Empty a table of ours the agent no longer stands behind.
    async fn clear(
        &mut self,
        ctl: &mut Controller,
        writer: &Writer,
        key: &PointKey,
        now: OffsetDateTime,
    ) {
        match writer
            .timer(&key.device, &key.point, TimerOp::WriteTable(Vec::new()))
            .await
        {
            Ok(TimerReply::Written { slots_written, .. }) => {
                for _ in 0..slots_written {
                    ctl.record_attempt(key, now);
                }
                info!(point = %key, slots_written, "the device's clock table from the earlier schedule cleared");
                self.done_clearing(ctl, key);
            }
            Err(e) if retryable(&e) => {
                debug!(point = %key, error = %e, "clearing the device's clock table failed; tried again later");
                self.retry_at.insert(key.clone(), now + RETRY_AFTER);
            }
            other => {
                warn!(point = %key, outcome = ?other, "the device's clock table from the earlier schedule could not be cleared");
                self.done_clearing(ctl, key);
            }
        }
    }

    fn done_clearing(&mut self, ctl: &mut Controller, key: &PointKey) {
        self.retry_at.remove(key);
        if let Some(Placement::Agent { clear_table, .. }) = ctl.placement_mut(key) {
            *clear_table = false;
        }
    }

    fn clock_due_now(&mut self, key: &PointKey, now: OffsetDateTime) {
        self.clocks.insert(key.device.clone(), now);
    }

    /// Devices whose tables run schedules: device → (a point, its schedule).
    fn table_devices(ctl: &Controller) -> BTreeMap<String, PointKey> {
        let mut out = BTreeMap::new();
        for key in ctl.scheduled_points() {
            if let Some(Placement::Device(t)) = ctl.placement(&key)
                && t.written
            {
                out.entry(key.device.clone()).or_insert(key);
            }
        }
        out
    }

    async fn keep_clocks(&mut self, ctl: &mut Controller, writer: &Writer, now: OffsetDateTime) {
        let devices = Self::table_devices(ctl);
        self.clocks.retain(|d, _| devices.contains_key(d));
        for (device, key) in devices {
            let Some(schedule) = ctl.schedule(&key).cloned() else {
                continue;
            };
            if *self.clocks.entry(device.clone()).or_insert(now) > now {
                continue;
            }
            let clock = self.clock;
            let s = schedule.clone();
            let local = LocalNow::new(move || {
                let now = clock.now();
                s.local_time(now)
                    .unwrap_or_else(|| time::PrimitiveDateTime::new(now.date(), now.time()))
            });
            let problem = self.keep_clock(writer, &key, &local).await;
            // Next look: the regular one, or the zone's next offset change,
            // whichever comes first; sooner after a failure.
            let regular = schedule
                .next_transition_after(now)
                .map_or(now + CHECK_EVERY, |t| t.min(now + CHECK_EVERY));
            let due = match &problem {
                Err(ClockTrouble::Wrong { again: true, .. }) => now + RETRY_AFTER,
                _ => regular,
            };
            self.clocks.insert(device.clone(), due);
            let clock_problem = match problem {
                Ok(()) => None,
                Err(ClockTrouble::Unknown) => continue,
                Err(ClockTrouble::Wrong { why, .. }) => Some(why),
            };
            for k in ctl
                .scheduled_points()
                .into_iter()
                .filter(|k| k.device == device)
            {
                if let Some(Placement::Device(t)) = ctl.placement_mut(&k)
                    && t.clock_problem != clock_problem
                {
                    t.clock_problem = clock_problem.clone();
                }
            }
        }
    }

    /// Read the clock of `key`'s device, set it when it is off.
    async fn keep_clock(
        &mut self,
        writer: &Writer,
        key: &PointKey,
        local: &LocalNow,
    ) -> Result<(), ClockTrouble> {
        let (device, now_local) = match writer
            .timer(&key.device, &key.point, TimerOp::ReadClock(local.clone()))
            .await
        {
            Ok(TimerReply::Clock { device, local }) => (device, local),
            Ok(other) => {
                warn!(device = %key.device, reply = ?other, "unexpected answer to a clock read");
                return Err(ClockTrouble::Unknown);
            }
            Err(e) => {
                debug!(device = %key.device, error = %e, "the device's clock could not be read; looked at again later");
                return Err(ClockTrouble::Unknown);
            }
        };
        let drift = device - now_local;
        if drift.abs() <= CLOCK_TOLERANCE {
            debug!(device = %key.device, drift_s = drift.whole_seconds(), "device clock right");
            return Ok(());
        }
        match writer
            .timer(&key.device, &key.point, TimerOp::SetClock(local.clone()))
            .await
        {
            Ok(_) => {
                info!(device = %key.device, was = %device, drift_s = drift.whole_seconds(), "device clock set to local time");
                Ok(())
            }
            Err(e) => {
                let why = format!(
                    "the device's clock is {} s off ({device}) and could not be set: {e}",
                    drift.whole_seconds()
                );
                warn!(device = %key.device, %why, "device clock wrong");
                Err(ClockTrouble::Wrong {
                    why,
                    again: retryable(&e),
                })
            }
        }
    }
}

/// Why a clock could not be kept.
enum ClockTrouble {
    /// It could not be read: nothing known (offline).
    Unknown,
    /// It is off and could not be set.
    Wrong {
        /// For people.
        why: String,
        /// The failure was in transit: try again soon.
        again: bool,
    },
}

#[cfg(test)]
mod tests {
    //! The executor with the real POP driver and poller against the
    //! simulated bus (over an in-memory line), on tokio's paused clock: the
    //! schedule, the simulated boards' clocks and the agent all run on the
    //! same controllable [`Clock`], so hours pass in an instant and every
    //! instant is exact.

    use std::{path::Path, time::Duration};

    use protocol::{
        AgentToServer, Command, CommandOutcome, CommandResult, ControlRequest, ControlSource,
        ControlState, ExceptionDay, Period, WeeklySchedule,
    };
    use time::macros::{date, datetime};
    use tokio::{sync::mpsc, task::JoinHandle};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::{
        config::AgentConfig,
        control::executor::{ControlInput, Executor, Reported, forward},
        devices::pop::{PopClient, PopDriver, PopTiming},
        devices::timer::TimerEntry,
        poller::{BusHandle, PollEvent, run_bus},
        sim::pop::{PopBusSim, PopSimOptions},
    };

    const H: u16 = 60;

    fn config(poll_ms: u64) -> AgentConfig {
        let toml = r#"
[server]
url = "ws://127.0.0.1:1/agent/v1/ws"
agent_id = "0b6f3c1e-8a5b-4c1d-9e2f-3a4b5c6d7e8f"
secret = "s3cret-for-test"

[[bus]]
name = "heating"
kind = "pop"
path = "/dev/null"

[[device]]
key = "board1"
bus = "heating"
unit_id = 1
profile = "pop_board"
poll_interval_ms = POLL_MS

[[writable]]
device = "board1"
point = "output_1"
kind = "output"
max_override_minutes = 60
schedulable = true

[[writable]]
device = "board1"
point = "room_1_floor_setpoint"
kind = "setpoint"
min = 15.0
max = 25.0
step = 0.5
max_override_minutes = 60
schedulable = true

[[action]]
name = "boost_heater"
max_duration_minutes = 30
[[action.write]]
device = "board1"
point = "output_1"
value = 1
"#;
        let toml = toml.replace("POLL_MS", &poll_ms.to_string());
        AgentConfig::from_toml("agent.toml", &toml, Path::new(".")).unwrap()
    }

    /// The simulated bus, the agent's bus task and executor, and the
    /// executor's messages.
    struct Rig {
        sim: PopBusSim,
        clock: Clock,
        inputs: mpsc::Sender<ControlInput>,
        out: mpsc::Receiver<PollEvent>,
        agent: CancellationToken,
        tasks: Vec<JoinHandle<()>>,
        dir: std::sync::Arc<tempfile::TempDir>,
        /// Control states seen, latest per point.
        states: BTreeMap<String, ControlState>,
    }

    /// Boards start on UTC: the agent has to set their clocks.
    fn sim(clock: Clock) -> PopBusSim {
        PopBusSim::new(PopSimOptions {
            boards: vec![1],
            keypad: false,
            drift: None,
            clock,
            time_zone: "UTC".into(),
            ..PopSimOptions::default()
        })
    }

    /// The board is polled hourly: the tests here are about the executor.
    const POLL_MS: u64 = 3_600_000;

    fn start(sim: PopBusSim, clock: Clock, dir: std::sync::Arc<tempfile::TempDir>) -> Rig {
        start_polling(sim, clock, dir, POLL_MS)
    }

    fn start_polling(
        sim: PopBusSim,
        clock: Clock,
        dir: std::sync::Arc<tempfile::TempDir>,
        poll_ms: u64,
    ) -> Rig {
        let cfg = config(poll_ms);
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let _serving = sim.serve(theirs);
        let driver = PopDriver::new(PopClient::attach(ours, 9600, PopTiming::default()));
        let (handle, commands) = BusHandle::new("heating");
        let mut writer = Writer::new();
        writer.route("board1", handle);
        let agent = CancellationToken::new();
        let (ev_tx, ev_rx) = mpsc::channel(64);
        let (out_tx, out) = mpsc::channel(1024);
        let reported = Reported::default();
        let back = DevicesBack::default();
        let bus = tokio::spawn(run_bus(
            "heating".into(),
            driver,
            cfg.devices.clone(),
            ev_tx,
            commands,
            agent.clone(),
            std::sync::Arc::new(crate::metrics::Metrics::default()),
        ));
        let fwd = tokio::spawn(forward(
            cfg.envelope.clone(),
            reported.clone(),
            back.clone(),
            ev_rx,
            out_tx.clone(),
        ));
        let exec = Executor::new(
            cfg.envelope.clone(),
            writer,
            dir.path().join("agent-control.json"),
            clock,
            reported,
        )
        .with_devices_back(back);
        let (inputs, in_rx) = mpsc::channel(8);
        let exec = tokio::spawn(exec.run(in_rx, out_tx, agent.clone()));
        Rig {
            sim,
            clock,
            inputs,
            out,
            agent,
            tasks: vec![bus, fwd, exec],
            dir,
            states: BTreeMap::new(),
        }
    }

    fn rig(at: OffsetDateTime) -> Rig {
        let clock = Clock::starting_at(at, 1.0);
        start(
            sim(clock),
            clock,
            std::sync::Arc::new(tempfile::tempdir().unwrap()),
        )
    }

    impl Rig {
        /// Stop the agent's tasks (the simulated boards stay).
        async fn stop(mut self) -> (PopBusSim, Clock, std::sync::Arc<tempfile::TempDir>) {
            self.agent.cancel();
            for t in self.tasks.drain(..) {
                t.await.unwrap();
            }
            (self.sim, self.clock, self.dir)
        }

        async fn ask(&mut self, request: ControlRequest) -> CommandResult {
            let now = self.clock.now();
            let cmd = Command {
                id: uuid::Uuid::new_v4(),
                issued_at: now,
                expires_at: now + time::Duration::days(30),
                issued_by: "homeowner@example.com".into(),
                request,
            };
            let id = cmd.id;
            self.inputs
                .send(ControlInput::Command(Box::new(cmd)))
                .await
                .unwrap();
            // A virtual hour: an executor that never answers fails the
            // test instead of hanging it.
            let answer = async {
                loop {
                    match self.out.recv().await.unwrap() {
                        PollEvent::Control(AgentToServer::CommandResult(r)) if r.id == id => {
                            return r;
                        }
                        ev => self.note(ev),
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(3600), answer)
                .await
                .expect("the command's result")
        }

        fn note(&mut self, ev: PollEvent) {
            if let PollEvent::Control(AgentToServer::ControlState(s)) = ev {
                self.states.insert(s.point.clone(), s);
            }
        }

        /// Let `d` of (virtual) time pass, reading the agent's messages.
        async fn pass(&mut self, d: time::Duration) {
            let until = tokio::time::Instant::now() + self.clock.real(d);
            loop {
                tokio::select! {
                    ev = self.out.recv() => match ev {
                        Some(ev) => self.note(ev),
                        None => { tokio::time::sleep_until(until).await; return; }
                    },
                    () = tokio::time::sleep_until(until) => return,
                }
            }
        }

        /// Let time pass until the clock reads `at`.
        async fn until(&mut self, at: OffsetDateTime) {
            let d = at - self.clock.now();
            if d.is_positive() {
                self.pass(d).await;
            }
        }

        fn state(&self, point: &str) -> &ControlState {
            self.states.get(point).expect("a control state")
        }

        fn output(&self) -> crate::sim::pop::OutputModel {
            self.sim.board(1).unwrap().outputs[0].clone()
        }

        fn table(&self) -> Vec<TimerEntry> {
            let clock = self.output().clock;
            clock
                .iter()
                .map(|e| TimerEntry {
                    days: e.days,
                    on: e.on,
                    off: e.off,
                })
                .collect()
        }

        fn on(&self) -> bool {
            self.sim.output_on(1, 1).unwrap()
        }

        /// The board's clock minus Helsinki time now.
        fn board_drift(&self) -> time::Duration {
            let tz = jiff::tz::db().get("Europe/Helsinki").unwrap();
            let local = super::super::schedule::local_time(&tz, self.clock.now()).unwrap();
            self.sim.board_time(1).unwrap() - local
        }
    }

    fn schedule(days: [Vec<Period>; 7]) -> ControlRequest {
        ControlRequest::SetSchedule {
            device: "board1".into(),
            point: "output_1".into(),
            schedule: WeeklySchedule {
                time_zone: "Europe/Helsinki".into(),
                on_value: 1.0,
                off_value: 0.0,
                days: days.to_vec(),
                exceptions: vec![],
            },
        }
    }

    fn p(start_min: u16, end_min: u16) -> Period {
        Period { start_min, end_min }
    }

    fn every_day(periods: Vec<Period>) -> [Vec<Period>; 7] {
        std::array::from_fn(|_| periods.clone())
    }

    fn e(days: u8, on: u16, off: u16) -> TimerEntry {
        TimerEntry { days, on, off }
    }

    /// Monday 2026-01-12 05:00 in Helsinki (UTC+2).
    const MONDAY_5: OffsetDateTime = datetime!(2026-01-12 03:00 UTC);

    #[tokio::test(start_paused = true)]
    async fn the_board_runs_the_schedule_in_its_own_table_with_the_agent_gone() {
        let mut r = rig(MONDAY_5);
        assert!(
            r.board_drift().abs() > time::Duration::HOUR,
            "starts on UTC"
        );
        // Someone had switched it off by hand at the keypad.
        r.sim.with_board(1, |b| b.outputs[0].manual = Some(false));
        let res = r.ask(schedule(every_day(vec![p(6 * H, 7 * H)]))).await;
        assert_eq!(res.outcome, CommandOutcome::Applied, "{res:?}");
        let why = res.reason.unwrap();
        assert!(
            why.contains("runs in the device's own clock table (1 of 8 entries; 1 written)"),
            "{why}"
        );
        // Written, handed to the table, the clock on Helsinki time.
        assert_eq!(&r.table()[..2], &[e(0x7F, 6 * H, 7 * H), TimerEntry::EMPTY]);
        assert_eq!(r.output().manual, None);
        assert!(
            r.board_drift().abs() <= CLOCK_TOLERANCE,
            "{}",
            r.board_drift()
        );
        r.pass(time::Duration::seconds(1)).await;
        let s = r.state("output_1");
        assert_eq!(s.source, ControlSource::Schedule);
        assert_eq!(
            s.note.as_deref(),
            Some("switched by the device's own clock table (1 of 8 entries: Mon–Sun 06:00–07:00)")
        );

        // The agent goes away entirely (and with it the server link).
        let (sim, clock, _dir) = r.stop().await;
        let at = |t: OffsetDateTime| {
            let sim = sim.clone();
            async move {
                tokio::time::sleep(clock.real(t - clock.now())).await;
                sim.output_on(1, 1).unwrap()
            }
        };
        // 06:00 Helsinki = 04:00 UTC.
        assert!(!at(datetime!(2026-01-12 03:59:59 UTC)).await);
        assert!(at(datetime!(2026-01-12 04:00:01 UTC)).await, "on at 06:00");
        assert!(at(datetime!(2026-01-12 04:59:59 UTC)).await);
        assert!(
            !at(datetime!(2026-01-12 05:00:01 UTC)).await,
            "off at 07:00"
        );
        // And the next morning too.
        assert!(at(datetime!(2026-01-13 04:30 UTC)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_slots_that_differ_are_rewritten() {
        let mut r = rig(MONDAY_5);
        let week = |weekend: Period| {
            let mut d: [Vec<Period>; 7] = std::array::from_fn(|_| vec![p(6 * H, 7 * H)]);
            d[5] = vec![weekend];
            d[6] = vec![weekend];
            for day in &mut d {
                day.push(p(17 * H, 19 * H));
            }
            d
        };
        let res = r.ask(schedule(week(p(8 * H, 9 * H)))).await;
        assert_eq!(res.outcome, CommandOutcome::Applied, "{res:?}");
        assert_eq!(r.sim.stats().clock_entries_set, 3);
        // A later weekend morning: one entry differs, one slot is written.
        let res = r.ask(schedule(week(p(8 * H + 30, 9 * H + 30)))).await;
        assert!(res.reason.unwrap().contains("1 written"));
        assert_eq!(r.sim.stats().clock_entries_set, 4);
        assert_eq!(
            entries_of(&r.table()),
            [
                e(0x1F, 6 * H, 7 * H),
                e(0x60, 8 * H + 30, 9 * H + 30),
                e(0x7F, 17 * H, 19 * H)
            ]
        );
        // The same schedule again: nothing written.
        let res = r.ask(schedule(week(p(8 * H + 30, 9 * H + 30)))).await;
        assert!(res.reason.unwrap().contains("0 written"));
        assert_eq!(r.sim.stats().clock_entries_set, 4);
        // Fewer entries: the leftover slot is cleared.
        let res = r.ask(schedule(every_day(vec![p(6 * H, 7 * H)]))).await;
        assert_eq!(res.outcome, CommandOutcome::Applied, "{res:?}");
        assert_eq!(entries_of(&r.table()), [e(0x7F, 6 * H, 7 * H)]);
        r.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_exception_day_is_switched_by_hand_and_handed_back_at_midnight() {
        // Tuesday 2026-01-13 22:00 Helsinki.
        let mut r = rig(datetime!(2026-01-13 20:00 UTC));
        let ControlRequest::SetSchedule { mut schedule, .. } =
            schedule(every_day(vec![p(6 * H, 7 * H)]))
        else {
            unreachable!()
        };
        schedule.exceptions = vec![ExceptionDay {
            date: date!(2026 - 01 - 14),
            label: "holiday".into(),
            periods: vec![],
        }];
        let res = r
            .ask(ControlRequest::SetSchedule {
                device: "board1".into(),
                point: "output_1".into(),
                schedule,
            })
            .await;
        assert_eq!(res.outcome, CommandOutcome::Applied, "{res:?}");
        assert_eq!(r.output().manual, None);
        // Wednesday 00:00 Helsinki = 22:00 UTC: taken by hand, off.
        r.until(datetime!(2026-01-13 22:00:30 UTC)).await;
        assert_eq!(r.output().manual, Some(false));
        assert!(
            r.state("output_1")
                .note
                .as_deref()
                .unwrap()
                .starts_with("exception day (holiday): switched by the agent until midnight"),
            "{:?}",
            r.state("output_1")
        );
        // 06:30 on the holiday: the table would switch it on; it stays off.
        r.until(datetime!(2026-01-14 04:30 UTC)).await;
        assert!(!r.on());
        // Thursday 00:00: back to the table, which switches it at 06:00.
        r.until(datetime!(2026-01-14 22:00:30 UTC)).await;
        assert_eq!(r.output().manual, None);
        r.until(datetime!(2026-01-15 04:30 UTC)).await;
        assert!(r.on());
        assert!(
            r.state("output_1")
                .note
                .as_deref()
                .unwrap()
                .starts_with("switched by the device's own clock table")
        );
        r.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_end_of_an_override_or_a_boost_hands_the_output_back_to_its_table() {
        let mut r = rig(MONDAY_5);
        r.ask(schedule(every_day(vec![p(6 * H, 7 * H)]))).await;
        // 05:00: the table says off. On by hand for ten minutes.
        let res = r
            .ask(ControlRequest::Set {
                device: "board1".into(),
                point: "output_1".into(),
                value: 1.0,
                until: Some(r.clock.now() + time::Duration::minutes(10)),
            })
            .await;
        assert_eq!(res.outcome, CommandOutcome::Applied, "{res:?}");
        assert_eq!((r.output().manual, r.on()), (Some(true), true));
        r.pass(time::Duration::seconds(1)).await;
        assert!(
            r.state("output_1")
                .note
                .as_deref()
                .unwrap()
                .contains("the device's own clock table takes over again")
        );
        // At the end it is not written 0: it follows its table again.
        r.pass(time::Duration::minutes(10)).await;
        assert_eq!((r.output().manual, r.on()), (None, false));
        // A boost the same way.
        let res = r
            .ask(ControlRequest::StartAction {
                action: "boost_heater".into(),
                duration_s: 15 * 60,
            })
            .await;
        assert_eq!(res.outcome, CommandOutcome::Applied, "{res:?}");
        assert_eq!(r.output().manual, Some(true));
        r.pass(time::Duration::minutes(16)).await;
        assert_eq!(r.output().manual, None);
        // And the table still switches it at 06:00 (04:00 UTC).
        r.until(datetime!(2026-01-12 04:00:30 UTC)).await;
        assert!(r.on());
        r.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_drifted_board_clock_is_set_at_the_periodic_check_a_small_drift_is_left() {
        let mut r = rig(MONDAY_5);
        r.ask(schedule(every_day(vec![p(6 * H, 7 * H)]))).await;
        assert!(r.board_drift().abs() <= CLOCK_TOLERANCE);
        // Within the tolerance: not touched.
        let now_local = r.sim.board_time(1).unwrap() - r.board_drift();
        r.sim
            .set_board_time(1, now_local + time::Duration::seconds(20));
        r.pass(CHECK_EVERY + time::Duration::minutes(1)).await;
        assert_eq!(r.board_drift(), time::Duration::seconds(20));
        // Five minutes fast: set at the next check.
        let now_local = r.sim.board_time(1).unwrap() - r.board_drift();
        r.sim
            .set_board_time(1, now_local + time::Duration::minutes(5));
        r.pass(CHECK_EVERY + time::Duration::minutes(1)).await;
        assert!(
            r.board_drift().abs() <= CLOCK_TOLERANCE,
            "{}",
            r.board_drift()
        );
        r.stop().await;
    }

    /// The board's clock follows Helsinki across a 2026 daylight-saving
    /// night: right after the change, not at the next hourly check.
    async fn board_clock_follows_the_change_at(transition: OffsetDateTime) {
        let mut r = rig(transition - time::Duration::minutes(30));
        let res = r.ask(schedule(every_day(vec![p(6 * H, 7 * H)]))).await;
        assert_eq!(res.outcome, CommandOutcome::Applied, "{res:?}");
        r.until(transition - time::Duration::seconds(10)).await;
        assert!(
            r.board_drift().abs() <= CLOCK_TOLERANCE,
            "{}",
            r.board_drift()
        );
        r.until(transition + time::Duration::seconds(10)).await;
        assert!(
            r.board_drift().abs() <= CLOCK_TOLERANCE,
            "{}",
            r.board_drift()
        );
        r.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_board_clock_is_set_forward_right_after_spring_forward() {
        // 03:00 EET -> 04:00 EEST
        board_clock_follows_the_change_at(datetime!(2026-03-29 01:00 UTC)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_board_clock_is_set_back_right_after_fall_back() {
        // 04:00 EEST -> 03:00 EET
        board_clock_follows_the_change_at(datetime!(2026-10-25 01:00 UTC)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_schedule_that_does_not_fit_is_run_by_the_agent_and_says_so() {
        let mut r = rig(MONDAY_5);
        // Nine different mornings: nine entries for an eight-slot table.
        let days: [Vec<Period>; 7] = std::array::from_fn(|d| {
            let d = d as u16;
            vec![
                p(5 * H + 50 + d, 6 * H + d),
                p(20 * H, 20 * H + 10 + d.min(1)),
            ]
        });
        let res = r.ask(schedule(days)).await;
        assert_eq!(res.outcome, CommandOutcome::Applied, "{res:?}");
        let why = res.reason.unwrap();
        assert!(
            why.contains(
                "run by the agent: the schedule needs 9 entries, the device's table holds 8"
            ),
            "{why}"
        );
        assert_eq!(r.sim.stats().clock_entries_set, 0);
        r.pass(time::Duration::seconds(1)).await;
        assert!(
            r.state("output_1")
                .note
                .as_deref()
                .unwrap()
                .starts_with("run by the agent: the schedule needs 9 entries")
        );
        // The agent switches the edges itself, by hand: Monday 05:50 Helsinki.
        r.until(datetime!(2026-01-12 03:50:30 UTC)).await;
        assert_eq!((r.output().manual, r.on()), (Some(true), true));
        r.until(datetime!(2026-01-12 04:00:30 UTC)).await;
        assert_eq!((r.output().manual, r.on()), (Some(false), false));
        // A setpoint's schedule has no table either.
        let res = r
            .ask(ControlRequest::SetSchedule {
                device: "board1".into(),
                point: "room_1_floor_setpoint".into(),
                schedule: WeeklySchedule {
                    time_zone: "Europe/Helsinki".into(),
                    on_value: 21.0,
                    off_value: 18.0,
                    days: vec![vec![p(6 * H, 22 * H)]; 7],
                    exceptions: vec![],
                },
            })
            .await;
        // Setpoints run at the agent as a matter of course: applied, no remark.
        assert_eq!(
            (res.outcome, res.reason),
            (protocol::CommandOutcome::Applied, None),
            "setpoints run at the agent"
        );
        r.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_restart_the_agent_knows_the_table_and_does_not_fight_a_keypad_edit() {
        let mut r = rig(MONDAY_5);
        r.ask(schedule(every_day(vec![p(6 * H, 7 * H)]))).await;
        assert_eq!(r.sim.stats().clock_entries_set, 1);
        let (sim, clock, dir) = r.stop().await;
        // A restart: the state file says what is in the board; nothing is rewritten.
        let mut r = start(sim, clock, dir);
        r.pass(time::Duration::minutes(2)).await;
        assert_eq!(r.sim.stats().clock_entries_set, 1);
        assert!(
            r.state("output_1")
                .note
                .as_deref()
                .unwrap()
                .starts_with("switched by the device's own clock table")
        );
        // Someone at the keypad moves the morning to 05:00-08:00.
        r.sim.with_board(1, |b| {
            b.outputs[0].clock[0] = crate::devices::pop::message::ClockEntry {
                days: 0x7F,
                on: 5 * H,
                off: 8 * H,
            };
        });
        r.pass(CHECK_EVERY + time::Duration::minutes(1)).await;
        let s = r.state("output_1").clone();
        assert_eq!((s.commanded, s.source), (None, ControlSource::Device));
        assert!(
            s.note
                .as_deref()
                .unwrap()
                .contains("changed at the device (it holds Mon–Sun 05:00–08:00)"),
            "{s:?}"
        );
        // Not overwritten, now or at later checks.
        r.pass(CHECK_EVERY * 3).await;
        assert_eq!(r.sim.stats().clock_entries_set, 1);
        assert_eq!(r.table()[0], e(0x7F, 5 * H, 8 * H));
        // Sending the schedule again restores it (one slot).
        let res = r.ask(schedule(every_day(vec![p(6 * H, 7 * H)]))).await;
        assert_eq!(res.outcome, CommandOutcome::Applied, "{res:?}");
        assert_eq!(r.sim.stats().clock_entries_set, 2);
        assert_eq!(r.table()[0], e(0x7F, 6 * H, 7 * H));
        r.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_board_that_comes_back_with_its_clock_reset_is_set_at_once() {
        let clock = Clock::starting_at(MONDAY_5, 1.0);
        let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
        let mut r = start_polling(sim(clock), clock, dir, 10_000);
        r.ask(schedule(every_day(vec![p(6 * H, 7 * H)]))).await;
        assert!(r.board_drift().abs() <= CLOCK_TOLERANCE);
        // A power cut: the poller marks the board offline; it comes back with
        // its clock chip reset.
        r.sim.set_powered(1, false);
        r.pass(time::Duration::minutes(3)).await;
        r.sim
            .set_board_time(1, time::macros::datetime!(2000-01-01 00:00));
        r.sim.set_powered(1, true);
        // Well before the hourly look: the poller hears it again, the
        // executor looks at the next wake (within a minute) and sets it.
        r.pass(time::Duration::minutes(2)).await;
        assert!(
            r.board_drift().abs() <= CLOCK_TOLERANCE,
            "{}",
            r.board_drift()
        );
        r.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_board_offline_gets_its_table_when_it_answers_again() {
        let mut r = rig(MONDAY_5);
        r.sim.set_powered(1, false);
        let res = r.ask(schedule(every_day(vec![p(6 * H, 7 * H)]))).await;
        assert_eq!(res.outcome, CommandOutcome::Failed, "{res:?}");
        let why = res.reason.unwrap();
        assert!(why.contains("writing the device's clock table"), "{why}");
        assert!(why.contains("tried again in 60 s"), "{why}");
        r.sim.set_powered(1, true);
        r.pass(time::Duration::minutes(2)).await;
        assert_eq!(entries_of(&r.table()), [e(0x7F, 6 * H, 7 * H)]);
        assert_eq!(r.output().manual, None);
        assert!(r.board_drift().abs() <= CLOCK_TOLERANCE);
        r.stop().await;
    }
}
