//! The control executor: the task that turns accepted commands, schedule
//! edges and expiring overrides into device writes, by itself.
//!
//! It receives [`ControlInput`]s from the uplink session (commands, and a
//! note after every `Welcome`), asks the [`Controller`], sends the resulting
//! writes to the device's bus queue through the [`Writer`] (the bus driver
//! writes and reads back; a read-back that differs comes back as
//! [`WriteError::Mismatch`] and is reported as `failed` with both values), and
//! answers every command with a [`protocol::CommandResult`]. It wakes at
//! [`Controller::next_deadline`] (at least once a minute, in case the wall
//! clock was stepped) to switch schedule edges and revert overrides and
//! actions **with or without a server**. Every change of a point's control
//! state goes to the server as a [`protocol::ControlState`], and all of them
//! after each (re)connect. That includes a value changed at the device itself
//! (its keypad, a PLC's panel): [`forward`] wakes the executor when a
//! writable point's reported value changes ([`Reported::changed`]), so the
//! Controls page shows it at once; the unchanged values every poll repeats
//! wake nothing. The state is saved ([`store`]) after every change.
//!
//! Schedules that run in a device's own clock table are the
//! [`Keeper`]'s to place, write and watch (with the device's clock); it runs
//! before the writes of every round. Such a schedule's edges are not
//! written: the executor only hands the output back to its table when an
//! override, an action or a date the table cannot run ends.
//!
//! A write that failed in transit (timeout, no read-back) is retried after
//! [`RETRY_AFTER`] while the wanted value stays the same and the point's
//! daily write cap has room. A write the device refused (a Modbus exception,
//! a configuration matter) or answered with another value (it clamps to its
//! own limits) is not repeated until the wanted value changes: the same write
//! would get the same answer, and wear the device.
//!
//! A command whose id was answered before (a server re-sending after a
//! reconnect) gets its first result again and is not run twice.
//!
//! Messages to the server travel as [`PollEvent::Control`] on the uplink's
//! event channel; when the link is down they are dropped (the server learns
//! the states again after the next `Welcome`, and a command whose result was
//! lost shows as unanswered there).

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use protocol::{AgentToServer, Command, CommandOutcome, CommandResult, ControlState, Reading};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{
    Controller, Decision, Envelope, PointKey,
    device_keeper::{DevicesBack, Keeper},
    store,
};
use crate::{
    devices::timer::TimerOp,
    poller::{PollEvent, WriteError, Writer},
};

/// Wait before writing again a value whose write failed.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);
/// Longest sleep between two looks at the clock.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Commands queued for the executor before the session refuses more.
pub const INPUT_QUEUE: usize = 64;
/// Results remembered by command id: a command received again (a server
/// that re-sends after a reconnect) gets its first answer, not a second run.
pub const REMEMBERED_RESULTS: usize = 256;

/// The executor's wall clock: the system's, or (tests, demos) one that
/// starts at a chosen instant and may run faster than real time, so a
/// schedule edge at 06:00 can be reached in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// `None`: the system clock.
    start: Option<(OffsetDateTime, tokio::time::Instant)>,
    speed: f64,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    /// The system's UTC clock.
    pub fn system() -> Self {
        Clock {
            start: None,
            speed: 1.0,
        }
    }

    /// A clock that reads `at` now and advances `speed` times as fast as
    /// real time (`speed` below 1 is taken as 1). It follows tokio's clock,
    /// so it also stands still and jumps with a paused test runtime.
    pub fn starting_at(at: OffsetDateTime, speed: f64) -> Self {
        Clock {
            start: Some((at, tokio::time::Instant::now())),
            speed: if speed.is_finite() {
                speed.max(1.0)
            } else {
                1.0
            },
        }
    }

    /// The current wall time.
    pub fn now(&self) -> OffsetDateTime {
        match self.start {
            None => OffsetDateTime::now_utc(),
            Some((at, origin)) => {
                let real = origin.elapsed().as_secs_f64() * self.speed;
                at + time::Duration::seconds_f64(real)
            }
        }
    }

    /// Real time that passes while this clock advances by `wall`.
    pub fn real(&self, wall: time::Duration) -> Duration {
        let secs = wall.as_seconds_f64() / self.speed;
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO)
    }
}

/// What the uplink hands the executor.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlInput {
    /// A command from the server, unchecked (boxed: it is large, `LinkUp` is not).
    Command(Box<Command>),
    /// The server welcomed the agent: send it every point's control state.
    LinkUp,
}

/// Latest values the devices reported for the envelope's points, filled by
/// [`forward`] from the pollers' readings (for a point offered to a PLC with
/// an `echo`, from the echo's readings as well), and a wake-up for the
/// executor when one of them changed. Clones share both.
#[derive(Debug, Clone, Default)]
pub struct Reported {
    values: Arc<Mutex<HashMap<PointKey, f64>>>,
    changed: Arc<tokio::sync::Notify>,
}

impl Reported {
    /// The values, by point.
    pub fn lock(&self) -> std::sync::LockResult<std::sync::MutexGuard<'_, HashMap<PointKey, f64>>> {
        self.values.lock()
    }

    /// Completes once a value noted by [`forward`] differs from the one
    /// before it. Changes that come while nobody waits are kept as one
    /// wake-up, so a burst (a poll's readings, a few polls in a row) wakes the
    /// executor once, and none is lost.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// Pass the pollers' events on to the uplink (`out`), noting the values of
/// the envelope's points in `reported` and the devices that answer again
/// after being offline in `back` (their clock tables and clocks are looked
/// at). Runs until `events` closes or `out` is gone. Kept apart from the
/// executor so a slow write never holds up readings.
pub async fn forward(
    envelope: Envelope,
    reported: Reported,
    back: DevicesBack,
    mut events: mpsc::Receiver<PollEvent>,
    out: mpsc::Sender<PollEvent>,
) {
    while let Some(ev) = events.recv().await {
        if let PollEvent::Readings(readings) = &ev {
            note_reported(&envelope, &reported, readings);
        }
        if let PollEvent::Status(s) = &ev
            && s.online
            && s.consecutive_failures == 0
            && let Ok(mut b) = back.lock()
        {
            b.insert(s.device.clone());
        }
        if out.send(ev).await.is_err() {
            return;
        }
    }
}

fn note_reported(envelope: &Envelope, reported: &Reported, readings: &[Reading]) {
    let Ok(mut map) = reported.lock() else {
        return;
    };
    let mut changed = false;
    for r in readings {
        if r.quality != protocol::Quality::Good || !r.value.is_finite() {
            continue;
        }
        let v = r.value;
        // A PLC's echo of a point offered to it is that point's read-back.
        if let Some(w) = envelope.writables.iter().find(|w| {
            w.key.device == r.device
                && (w.key.point == r.point || w.echo.as_deref() == Some(r.point.as_str()))
        }) {
            // Polls repeat unchanged values; only a change is news.
            changed |= map.insert(w.key.clone(), v) != Some(v);
        }
    }
    drop(map);
    if changed {
        reported.changed.notify_one();
    }
}

/// A failed write and when (if ever) to try the same value again.
#[derive(Debug, Clone)]
struct Failure {
    value: f64,
    /// It was a hand-back to the device's clock table.
    follow_table: bool,
    retry_at: Option<OffsetDateTime>,
}

/// The executor task's state.
pub struct Executor {
    ctl: Controller,
    writer: Writer,
    state_path: PathBuf,
    clock: Clock,
    reported: Reported,
    sent: BTreeMap<PointKey, ControlState>,
    failures: BTreeMap<PointKey, Failure>,
    /// What the state file holds, to write it only when something changed
    /// (an SD card in a Raspberry Pi wears with every write).
    saved: Option<store::Snapshot>,
    /// The latest results, oldest first, at most [`REMEMBERED_RESULTS`].
    answered: std::collections::VecDeque<CommandResult>,
    /// Schedules in devices' own clock tables.
    keeper: Keeper,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("state_path", &self.state_path)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// An executor for `envelope`, carrying on from the state saved at
    /// `state_path` (missing or corrupt: empty, logged).
    pub fn new(
        envelope: Envelope,
        writer: Writer,
        state_path: PathBuf,
        clock: Clock,
        reported: Reported,
    ) -> Self {
        let now = clock.now();
        let ctl = Controller::restore(envelope, store::load(&state_path), now);
        Executor {
            ctl,
            writer,
            state_path,
            clock,
            reported,
            sent: BTreeMap::new(),
            failures: BTreeMap::new(),
            saved: None,
            answered: std::collections::VecDeque::new(),
            keeper: Keeper::new(clock),
        }
    }

    /// Look at device clock tables and clocks of the devices in `back`
    /// (filled by [`forward`]) when they answer again after being offline.
    pub fn with_devices_back(mut self, back: DevicesBack) -> Self {
        self.keeper = self.keeper.with_devices_back(back);
        self
    }

    /// Run until `cancel` fires: serve `inputs`, apply deadlines, send
    /// messages for the server to `out`.
    pub async fn run(
        mut self,
        mut inputs: mpsc::Receiver<ControlInput>,
        out: mpsc::Sender<PollEvent>,
        cancel: CancellationToken,
    ) {
        info!(
            writables = self.ctl.envelope().writables.len(),
            actions = self.ctl.envelope().actions.len(),
            "remote control on, within the local safety envelope"
        );
        // After a restart: finish what the stored state asks for.
        self.settle(&out).await;
        let mut inputs_open = true;
        loop {
            let now = self.clock.now();
            let sleep = self.sleep_for(now);
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                input = inputs.recv(), if inputs_open => match input {
                    Some(ControlInput::Command(cmd)) => self.on_command(*cmd, &out).await,
                    Some(ControlInput::LinkUp) => {
                        self.sent.clear();
                        self.send_states(&out).await;
                    }
                    None => inputs_open = false,
                },
                () = tokio::time::sleep(sleep) => self.settle(&out).await,
                // A value changed at the device (its keypad, a PLC's panel): tell the server now.
                () = self.reported.changed() => self.send_states(&out).await,
            }
        }
        self.save();
    }

    /// Real time to sleep until the next deadline or retry, at most
    /// [`MAX_SLEEP`].
    fn sleep_for(&self, now: OffsetDateTime) -> Duration {
        let retry = self.failures.values().filter_map(|f| f.retry_at).min();
        let next = [
            self.ctl.next_deadline(now),
            retry,
            self.keeper.next_due(&self.ctl),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(t) if t <= now => Duration::ZERO,
            Some(t) => self.clock.real(t - now).min(MAX_SLEEP),
            None => MAX_SLEEP,
        }
    }

    /// Hand the latest readings to the controller (the value to put back
    /// after an override is the one read just before it).
    fn sync_reported(&mut self) {
        let latest: Vec<(PointKey, f64)> = match self.reported.lock() {
            Ok(m) => m.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            Err(_) => return,
        };
        for (k, v) in latest {
            self.ctl.record_reported(&k, v);
        }
    }

    fn reported_of(&self, key: &PointKey) -> Option<f64> {
        self.reported.lock().ok().and_then(|m| m.get(key).copied())
    }

    fn save(&mut self) {
        let snapshot = self.ctl.snapshot();
        if self.saved.as_ref() == Some(&snapshot) {
            return;
        }
        match store::save(&self.state_path, &snapshot) {
            Ok(()) => self.saved = Some(snapshot),
            Err(e) => {
                error!(path = %self.state_path.display(), error = %e, "cannot save the control state; a restart now would forget recent commands")
            }
        }
    }

    /// End what has ended, write what is due, tell the server what changed.
    async fn settle(&mut self, out: &mpsc::Sender<PollEvent>) {
        let now = self.clock.now();
        self.sync_reported();
        for ended in self.ctl.expire(now) {
            info!("{ended}; reverting");
        }
        self.keeper.keep(&mut self.ctl, &self.writer, now).await;
        self.apply_due(now).await;
        self.save();
        self.send_states(out).await;
    }

    /// Perform the due writes; returns each attempted point's outcome.
    async fn apply_due(
        &mut self,
        now: OffsetDateTime,
    ) -> BTreeMap<PointKey, Result<f64, WriteError>> {
        let mut outcomes = BTreeMap::new();
        let due = self.ctl.due_writes(now);
        // A failure matters while its point still has a write due: kept
        // longer, its past retry time would wake the executor at once,
        // forever (a point whose table took over, an override gone).
        self.failures.retain(|k, _| due.iter().any(|w| &w.key == k));
        for w in due {
            if let Some(f) = self.failures.get(&w.key)
                && f.value == w.value
                && f.follow_table == w.follow_table
                && f.retry_at.is_none_or(|t| now < t)
            {
                continue;
            }
            let result = if w.follow_table {
                self.writer
                    .timer(&w.key.device, &w.key.point, TimerOp::FollowTable)
                    .await
                    .map(drop)
            } else {
                self.writer
                    .write(&w.key.device, &w.key.point, w.value)
                    .await
            };
            match &result {
                Ok(()) if w.follow_table => {
                    info!(point = %w.key, "handed back to the device's own clock table");
                    self.ctl.record_handback(&w.key, now);
                    self.failures.remove(&w.key);
                }
                Ok(()) => {
                    info!(point = %w.key, value = w.value, source = ?w.source, "written and read back");
                    self.ctl.record_write(&w.key, w.value, now);
                    self.failures.remove(&w.key);
                    if let Ok(mut m) = self.reported.lock() {
                        m.insert(w.key.clone(), w.value);
                    }
                }
                Err(e) => {
                    let sent = !matches!(
                        e,
                        WriteError::Unsupported(_)
                            | WriteError::Encode { .. }
                            | WriteError::UnknownPoint { .. }
                            | WriteError::NotWritable(_)
                            | WriteError::BusStopped(_)
                    );
                    if sent {
                        // It may have reached the device: it counts against the budget.
                        self.ctl.record_attempt(&w.key, now);
                    }
                    if let WriteError::Mismatch { read_back, .. } = e
                        && let Ok(mut m) = self.reported.lock()
                    {
                        m.insert(w.key.clone(), *read_back);
                    }
                    let room = self.ctl.budget_left(&w.key, now).is_none_or(|n| n > 0);
                    let retry = matches!(
                        e,
                        WriteError::Transport(_)
                            | WriteError::Unverified { .. }
                            | WriteError::BusStopped(_)
                    ) && room;
                    let retry_at = retry.then(|| now + RETRY_AFTER);
                    warn!(point = %w.key, value = w.value, error = %e, retry = ?retry_at, "control write failed");
                    self.failures.insert(
                        w.key.clone(),
                        Failure {
                            value: w.value,
                            follow_table: w.follow_table,
                            retry_at,
                        },
                    );
                }
            }
            outcomes.insert(w.key, result.map(|()| w.value));
        }
        outcomes
    }

    async fn on_command(&mut self, cmd: Command, out: &mpsc::Sender<PollEvent>) {
        if let Some(first) = self.answered.iter().find(|r| r.id == cmd.id).cloned() {
            info!(id = %cmd.id, by = %cmd.issued_by, "command received again: its first result is sent, nothing is done twice");
            send(out, AgentToServer::CommandResult(first)).await;
            return;
        }
        let now = self.clock.now();
        self.sync_reported();
        let named = named_point(&cmd, self.ctl.envelope());
        let before = named.as_ref().and_then(|k| self.reported_of(k));
        let (outcome, reason, after) = match self.ctl.decide(&cmd, now) {
            Decision::Expired(why) => {
                warn!(id = %cmd.id, by = %cmd.issued_by, reason = %why, "command expired; nothing written");
                (CommandOutcome::Expired, Some(why), None)
            }
            Decision::Rejected(why) => {
                warn!(id = %cmd.id, by = %cmd.issued_by, request = ?cmd.request, reason = %why, "command refused by the safety envelope");
                (CommandOutcome::Rejected, Some(why), None)
            }
            Decision::Accepted { note, points } => {
                self.save();
                // A command replaces what failed before on its points.
                for p in &points {
                    self.failures.remove(p);
                }
                let kept = self.keeper.keep(&mut self.ctl, &self.writer, now).await;
                let outcomes = self.apply_due(now).await;
                self.save();
                let mut failed = Vec::new();
                let mut after = None;
                let mut placed = Vec::new();
                for p in &points {
                    match kept.get(p) {
                        Some(Ok(what)) => placed.push(what.clone()),
                        Some(Err(why)) => failed.push(format!("`{p}`: {why}")),
                        None => {}
                    }
                }
                for p in &points {
                    match outcomes.get(p) {
                        Some(Ok(v)) => after = after.or(Some(*v)),
                        Some(Err(e)) => {
                            if let WriteError::Mismatch { read_back, .. } = e {
                                after = after.or(Some(*read_back));
                            }
                            failed.push(format!("`{p}`: {e}"));
                        }
                        None => after = after.or_else(|| self.reported_of(p)),
                    }
                }
                let mut reasons: Vec<String> = note.into_iter().chain(placed).collect();
                if failed.is_empty() {
                    info!(id = %cmd.id, by = %cmd.issued_by, request = ?cmd.request, "command applied");
                    let reason = (!reasons.is_empty()).then(|| reasons.join("; "));
                    (CommandOutcome::Applied, reason, after)
                } else {
                    reasons.extend(failed);
                    let retrying = points
                        .iter()
                        .any(|p| self.failures.get(p).is_some_and(|f| f.retry_at.is_some()));
                    reasons.push(if retrying {
                        format!(
                            "the agent keeps the request and writes again in {} s; release or stop it to cancel",
                            RETRY_AFTER.as_secs()
                        )
                    } else {
                        "the agent keeps the request but does not repeat this write; release or stop it to cancel"
                            .into()
                    });
                    let reason = reasons.join("; ");
                    warn!(id = %cmd.id, by = %cmd.issued_by, %reason, "command failed at the device");
                    (CommandOutcome::Failed, Some(reason), after)
                }
            }
        };
        let result = CommandResult {
            id: cmd.id,
            at: now,
            outcome,
            reason,
            before,
            after,
        };
        if self.answered.len() >= REMEMBERED_RESULTS {
            self.answered.pop_front();
        }
        self.answered.push_back(result.clone());
        send(out, AgentToServer::CommandResult(result)).await;
        self.send_states(out).await;
    }

    /// Send the states that changed since last sent.
    async fn send_states(&mut self, out: &mpsc::Sender<PollEvent>) {
        let now = self.clock.now();
        let states = self.ctl.control_states(now);
        for mut s in states {
            let key = PointKey::new(&s.device, &s.point);
            s.reported = self.reported_of(&key).or(s.reported);
            if self.sent.get(&key) == Some(&s) {
                continue;
            }
            self.sent.insert(key, s.clone());
            send(out, AgentToServer::ControlState(s)).await;
        }
    }
}

async fn send(out: &mpsc::Sender<PollEvent>, msg: AgentToServer) {
    // The uplink drops it while the link is down; nothing to do here if the
    // uplink is gone (the agent is stopping).
    let _ = out.send(PollEvent::Control(msg)).await;
}

/// The point a command is about (an action's first write), for `before`.
fn named_point(cmd: &Command, envelope: &Envelope) -> Option<PointKey> {
    use protocol::ControlRequest as R;
    match &cmd.request {
        R::Set { device, point, .. }
        | R::Release { device, point }
        | R::SetSchedule { device, point, .. } => Some(PointKey::new(device, point)),
        R::StartAction { action, .. } | R::StopAction { action } => envelope
            .action(action)
            .and_then(|a| a.writes.first())
            .map(|w| w.key.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use protocol::{ControlRequest, ControlSource};
    use time::macros::datetime;

    use super::*;
    use crate::{
        control::envelope::tests::envelope,
        poller::{BusCommand, BusHandle},
    };

    const T0: OffsetDateTime = datetime!(2026-01-15 10:00 UTC);

    /// (point, value) of every write the bus received.
    type WriteLog = Arc<Mutex<Vec<(String, f64)>>>;

    /// A bus that answers writes from a script (then `Ok`) and logs them.
    fn scripted_bus(script: Vec<Result<(), WriteError>>) -> (Writer, WriteLog) {
        let (handle, mut rx) = BusHandle::new("field");
        let mut writer = Writer::new();
        writer.route("heatpump", handle);
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = log.clone();
        let mut script: VecDeque<_> = script.into();
        tokio::spawn(async move {
            while let Some(cmd) = rx.recv().await {
                let cmd = match cmd {
                    BusCommand::Write(cmd) => cmd,
                    // The scripted devices have no clock tables.
                    BusCommand::Timer(t) => {
                        let _ = t
                            .reply
                            .send(Err(WriteError::Unsupported("no timers".into())));
                        continue;
                    }
                };
                seen.lock().unwrap().push((cmd.point.clone(), cmd.value));
                let _ = cmd.reply.send(script.pop_front().unwrap_or(Ok(())));
            }
        });
        (writer, log)
    }

    struct Running {
        inputs: mpsc::Sender<ControlInput>,
        /// The pollers' side of [`forward`], as the agent wires it.
        events: mpsc::Sender<PollEvent>,
        out: mpsc::Receiver<PollEvent>,
        cancel: CancellationToken,
        _dir: tempfile::TempDir,
    }

    fn start(writer: Writer) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let reported = Reported::default();
        {
            let mut m = reported.lock().unwrap();
            m.insert(PointKey::new("heatpump", "dhw_setpoint"), 45.0);
            m.insert(PointKey::new("heatpump", "room_setpoint"), 20.0);
        }
        let (events, events_rx) = mpsc::channel(8);
        let (out_tx, out) = mpsc::channel(64);
        tokio::spawn(forward(
            envelope(),
            reported.clone(),
            DevicesBack::default(),
            events_rx,
            out_tx.clone(),
        ));
        let exec = Executor::new(
            envelope(),
            writer,
            dir.path().join("agent-control.json"),
            Clock::starting_at(T0, 1.0),
            reported,
        );
        let (inputs, in_rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        tokio::spawn(exec.run(in_rx, out_tx, cancel.clone()));
        Running {
            inputs,
            events,
            out,
            cancel,
            _dir: dir,
        }
    }

    fn command(request: ControlRequest) -> ControlInput {
        ControlInput::Command(Box::new(Command {
            id: uuid::Uuid::new_v4(),
            issued_at: T0,
            expires_at: T0 + time::Duration::days(1),
            issued_by: "test@example.com".into(),
            request,
        }))
    }

    fn set_dhw(value: f64) -> ControlInput {
        command(ControlRequest::Set {
            device: "heatpump".into(),
            point: "dhw_setpoint".into(),
            value,
            until: None,
        })
    }

    async fn result(r: &mut Running) -> CommandResult {
        loop {
            match r.out.recv().await.unwrap() {
                PollEvent::Control(AgentToServer::CommandResult(c)) => return c,
                _ => continue,
            }
        }
    }

    fn dhw_writes(log: &WriteLog) -> Vec<f64> {
        log.lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == "dhw_setpoint")
            .map(|(_, v)| *v)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_transport_failure_is_retried_after_a_minute() {
        let (writer, log) = scripted_bus(vec![
            Ok(()), // car heater idle value at start
            Err(WriteError::Transport("timeout".into())),
        ]);
        let mut r = start(writer);
        r.inputs.send(set_dhw(50.0)).await.unwrap();
        let res = result(&mut r).await;
        assert_eq!(res.outcome, CommandOutcome::Failed);
        assert!(res.reason.unwrap().contains("writes again in 60 s"));
        assert_eq!(dhw_writes(&log), vec![50.0]);
        tokio::time::sleep(RETRY_AFTER + Duration::from_secs(1)).await;
        assert_eq!(dhw_writes(&log), vec![50.0, 50.0]);
        r.cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_by_the_device_is_not_repeated() {
        let (writer, log) = scripted_bus(vec![
            Ok(()),
            Err(WriteError::Refused("exception 0x02".into())),
        ]);
        let mut r = start(writer);
        r.inputs.send(set_dhw(50.0)).await.unwrap();
        let res = result(&mut r).await;
        assert_eq!(res.outcome, CommandOutcome::Failed);
        assert!(res.reason.unwrap().contains("does not repeat"));
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(dhw_writes(&log), vec![50.0]);
        r.cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_boost_ends_on_the_agents_clock_and_the_old_value_is_put_back() {
        let (writer, log) = scripted_bus(vec![]);
        let mut r = start(writer);
        r.inputs
            .send(command(ControlRequest::StartAction {
                action: "boost_dhw".into(),
                duration_s: 600,
            }))
            .await
            .unwrap();
        let res = result(&mut r).await;
        assert_eq!(res.outcome, CommandOutcome::Applied);
        assert_eq!((res.before, res.after), (Some(45.0), Some(55.0)));
        tokio::time::sleep(Duration::from_secs(599)).await;
        assert_eq!(dhw_writes(&log), vec![55.0]);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(dhw_writes(&log), vec![55.0, 45.0]);
        // The server is told: the point is the device's own again.
        let mut last = None;
        while let Ok(ev) = r.out.try_recv() {
            if let PollEvent::Control(AgentToServer::ControlState(s)) = ev
                && s.point == "dhw_setpoint"
            {
                last = Some(s);
            }
        }
        let last = last.expect("a control state after the revert");
        assert_eq!((last.source, last.action), (ControlSource::Device, None));
        r.cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_command_received_twice_is_answered_twice_but_run_once() {
        let (writer, log) = scripted_bus(vec![]);
        let mut r = start(writer);
        let boost = command(ControlRequest::StartAction {
            action: "boost_dhw".into(),
            duration_s: 600,
        });
        r.inputs.send(boost.clone()).await.unwrap();
        let first = result(&mut r).await;
        tokio::time::sleep(Duration::from_secs(300)).await;
        // Re-sent five minutes later: same answer, and the boost is not restarted.
        r.inputs.send(boost).await.unwrap();
        assert_eq!(result(&mut r).await, first);
        tokio::time::sleep(Duration::from_secs(301)).await;
        assert_eq!(dhw_writes(&log), vec![55.0, 45.0]);
        r.cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn every_state_is_sent_again_after_a_welcome() {
        let (writer, _log) = scripted_bus(vec![]);
        let mut r = start(writer);
        async fn three_states(r: &mut Running) -> Vec<String> {
            let mut points = Vec::new();
            while points.len() < 3 {
                if let PollEvent::Control(AgentToServer::ControlState(s)) =
                    r.out.recv().await.unwrap()
                {
                    points.push(s.point);
                }
            }
            points.sort();
            points
        }
        // At start every state is new; unchanged ones are not sent again...
        assert_eq!(three_states(&mut r).await.len(), 3);
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(r.out.try_recv().is_err());
        // ...until the server welcomes the agent again.
        r.inputs.send(ControlInput::LinkUp).await.unwrap();
        assert_eq!(
            three_states(&mut r).await,
            ["car_heater", "dhw_setpoint", "room_setpoint"]
        );
        r.cancel.cancel();
    }

    fn reading(point: &str, value: f64) -> Reading {
        Reading {
            device: "heatpump".into(),
            point: point.into(),
            ts: T0,
            value,
            unit: "degC".into(),
            quality: protocol::Quality::Good,
        }
    }

    /// Control states sent so far, without waiting.
    fn states_sent(r: &mut Running) -> Vec<ControlState> {
        let mut states = Vec::new();
        while let Ok(ev) = r.out.try_recv() {
            if let PollEvent::Control(AgentToServer::ControlState(s)) = ev {
                states.push(s);
            }
        }
        states
    }

    #[tokio::test(start_paused = true)]
    async fn a_value_changed_at_the_device_is_sent_at_once_and_an_unchanged_one_not_at_all() {
        let (writer, _log) = scripted_bus(vec![]);
        let mut r = start(writer);
        // The states at start, then quiet.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(states_sent(&mut r).len(), 3);

        // Someone turns the DHW setpoint to 47 at the heat pump's keypad.
        let asked = tokio::time::Instant::now();
        r.events
            .send(PollEvent::Readings(vec![
                reading("dhw_setpoint", 47.0),
                reading("outdoor_temp", -3.0),
            ]))
            .await
            .unwrap();
        let state = loop {
            if let PollEvent::Control(AgentToServer::ControlState(s)) = r.out.recv().await.unwrap()
            {
                break s;
            }
        };
        assert_eq!(
            (state.point.as_str(), state.reported),
            ("dhw_setpoint", Some(47.0))
        );
        // Paused time moves only when every task waits for a timer: the state
        // came without waiting for the executor's next deadline (MAX_SLEEP).
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{:?}",
            asked.elapsed()
        );

        // Polls that repeat the values send nothing, however long they go on.
        for _ in 0..30 {
            r.events
                .send(PollEvent::Readings(vec![
                    reading("dhw_setpoint", 47.0),
                    reading("room_setpoint", 20.0),
                ]))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        assert_eq!(states_sent(&mut r), vec![]);
        r.cancel.cancel();
    }

    #[tokio::test]
    async fn only_a_changed_value_wakes_the_executor_and_a_burst_wakes_it_once() {
        let env = envelope();
        let reported = Reported::default();
        let woken = |reported: &Reported| {
            let mut wake = std::pin::pin!(reported.changed());
            std::future::Future::poll(
                wake.as_mut(),
                &mut std::task::Context::from_waker(std::task::Waker::noop()),
            )
            .is_ready()
        };
        note_reported(&env, &reported, &[reading("dhw_setpoint", 45.0)]);
        assert!(woken(&reported), "a first value is news");
        note_reported(&env, &reported, &[reading("dhw_setpoint", 45.0)]);
        assert!(!woken(&reported), "the same value again is not");
        note_reported(&env, &reported, &[reading("outdoor_temp", 3.0)]);
        assert!(!woken(&reported), "a point outside the envelope is not");
        note_reported(&env, &reported, &[reading("dhw_setpoint", 46.0)]);
        note_reported(&env, &reported, &[reading("room_setpoint", 21.0)]);
        assert!(woken(&reported), "two changes in a row...");
        assert!(!woken(&reported), "...wake it once");
        assert_eq!(
            reported.lock().unwrap()[&PointKey::new("heatpump", "room_setpoint")],
            21.0
        );
    }

    #[test]
    fn a_fast_clock_runs_faster_and_converts_back_to_real_time() {
        let c = Clock::starting_at(T0, 60.0);
        assert!(c.now() >= T0);
        assert_eq!(c.real(time::Duration::minutes(1)), Duration::from_secs(1));
        assert_eq!(
            Clock::system().real(time::Duration::SECOND),
            Duration::from_secs(1)
        );
    }
}
