//! The uplink session as a pure state machine: events in, actions out.
//!
//! No sockets, no clock reads: the I/O loop feeds [`Event`]s with the current
//! `tokio::time::Instant` and performs the returned [`Action`]s. That keeps
//! every protocol rule (hello first, resend after reconnect, drop what the
//! server already has, keep a batch the server could not store) testable with
//! plain unit tests.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use protocol::{
    AgentStatus, AgentToServer, CommandOutcome, CommandResult, DeviceStatus, ErrorCode, Hello,
    MAX_READINGS_PER_BATCH, Reading, ReadingsBatch, ServerToAgent,
};
use tokio::{sync::mpsc, time::Instant};
use tracing::{debug, error, info, warn};

use crate::control::executor::ControlInput;

use super::queue::{BatchQueue, Part};

/// Tunables of a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Send a live batch once this many live readings wait.
    pub max_batch_readings: usize,
    /// Send a live batch at most this long after its first reading arrived.
    pub batch_window: Duration,
    /// Readings per backlog batch while draining after an outage.
    pub drain_batch_readings: usize,
    /// Batches sent but not acknowledged; more wait for acks.
    pub max_in_flight: usize,
    /// Of those, at most this many backlog batches, so live batches always find room.
    pub max_backlog_in_flight: usize,
    /// Give up on a batch not acknowledged within this time and send its
    /// readings again under a new seq (the server dedupes).
    pub ack_timeout: Duration,
    /// After `temporarily_unavailable`, send again after this long.
    pub unavailable_retry: Duration,
    /// Give up on a connection that sent no `Welcome` within this time.
    pub welcome_timeout: Duration,
    /// Send `AgentStatus` this often while up (and right after `Welcome`).
    pub status_interval: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_batch_readings: 500,
            batch_window: Duration::from_secs(1),
            drain_batch_readings: 2_000,
            max_in_flight: 16,
            max_backlog_in_flight: 4,
            ack_timeout: Duration::from_secs(30),
            unavailable_retry: Duration::from_secs(5),
            welcome_timeout: Duration::from_secs(10),
            status_interval: Duration::from_secs(30),
        }
    }
}

/// Something that happened to the session.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The WebSocket opened.
    Connected,
    /// The WebSocket closed or failed.
    Disconnected,
    /// A message from the server.
    Received(ServerToAgent),
    /// New readings from the poller.
    Readings(Vec<Reading>),
    /// A device's state changed.
    Status(DeviceStatus),
    /// Time passed (the loop wakes at [`Session::next_deadline`]).
    Tick,
    /// A message from the control executor: sent while the link is up.
    /// While it is down a command result waits (up to
    /// [`MAX_PENDING_RESULTS`]) and goes out after the next welcome; a
    /// control state is dropped (all states are sent again after a welcome).
    Outgoing(AgentToServer),
}

/// What the I/O loop must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this message.
    Send(AgentToServer),
    /// Close the connection (then reconnect with back-off).
    Close(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Down,
    AwaitingWelcome { since: Instant },
    Up,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    resend_at: Instant,
    backlog: bool,
}

/// Command results kept while the link is down; beyond this the oldest go.
pub const MAX_PENDING_RESULTS: usize = 256;

/// Session state; `Q` holds the unacknowledged readings.
#[derive(Debug)]
pub struct Session<Q> {
    cfg: SessionConfig,
    hello: Hello,
    queue: Q,
    link: Link,
    /// Arrival of the oldest live reading not yet sent.
    live_since: Option<Instant>,
    /// Live readings stored and not yet sent.
    live_waiting: usize,
    /// The backlog may still hold unsent readings.
    backlog_left: bool,
    statuses: BTreeMap<String, DeviceStatus>,
    /// Command results that could not be sent yet (link down).
    pending_results: std::collections::VecDeque<AgentToServer>,
    in_flight: HashMap<u64, InFlight>,
    /// After `temporarily_unavailable`: send nothing before this.
    hold_until: Option<Instant>,
    next_status_at: Option<Instant>,
    /// Where commands go when remote control is configured.
    control: Option<mpsc::Sender<ControlInput>>,
}

impl<Q: BatchQueue> Session<Q> {
    /// A session that announces `hello` on every connect.
    pub fn new(cfg: SessionConfig, hello: Hello, queue: Q) -> Self {
        let mut cfg = cfg;
        cfg.max_batch_readings = cfg.max_batch_readings.clamp(1, MAX_READINGS_PER_BATCH);
        cfg.drain_batch_readings = cfg.drain_batch_readings.clamp(1, MAX_READINGS_PER_BATCH);
        cfg.max_in_flight = cfg.max_in_flight.max(1);
        cfg.max_backlog_in_flight = cfg.max_backlog_in_flight.clamp(1, cfg.max_in_flight);
        Session {
            cfg,
            hello,
            queue,
            link: Link::Down,
            live_since: None,
            live_waiting: 0,
            backlog_left: false,
            statuses: BTreeMap::new(),
            pending_results: std::collections::VecDeque::new(),
            in_flight: HashMap::new(),
            hold_until: None,
            next_status_at: None,
            control: None,
        }
    }

    /// Hand commands to a control executor (and tell it about each
    /// `Welcome`) instead of refusing them. `try_send` only: the session
    /// never waits.
    pub fn with_control(mut self, control: mpsc::Sender<ControlInput>) -> Self {
        self.control = Some(control);
        self
    }

    /// True between `Welcome` and the disconnect.
    pub fn is_up(&self) -> bool {
        self.link == Link::Up
    }

    /// The buffer.
    pub fn queue(&self) -> &Q {
        &self.queue
    }

    /// Batches sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The `AgentStatus` message describing the buffer now.
    pub fn agent_status(&self) -> Option<AgentStatus> {
        match self.queue.stats() {
            Ok(st) => Some(AgentStatus {
                buffered_readings: st.readings,
                buffered_bytes: st.bytes,
                oldest_unsent: st.oldest_ts_ms.and_then(|ms| {
                    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
                }),
                thinned_total: st.thinned_total,
                dropped_total: st.dropped_total,
                last_acked_seq: st.last_acked_seq,
            }),
            Err(e) => {
                warn!(error = %e, "cannot read the buffer statistics");
                None
            }
        }
    }

    /// When the loop must deliver the next [`Event::Tick`], if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut at: Vec<Option<Instant>> = Vec::new();
        match self.link {
            Link::AwaitingWelcome { since } => at.push(Some(since + self.cfg.welcome_timeout)),
            Link::Up => {
                at.push(self.in_flight.values().map(|f| f.resend_at).min());
                at.push(self.next_status_at);
                match self.hold_until {
                    Some(h) => at.push(Some(h)),
                    None => at.push(self.live_since.map(|t| t + self.cfg.batch_window)),
                }
            }
            Link::Down => {}
        }
        at.into_iter().flatten().min()
    }

    /// Apply `event` at time `now`.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Connected => {
                self.link = Link::AwaitingWelcome { since: now };
                self.in_flight.clear();
                self.hold_until = None;
                out.push(Action::Send(AgentToServer::Hello(self.hello.clone())));
            }
            Event::Disconnected => {
                self.link = Link::Down;
                // Everything unacknowledged is sent again after the next Welcome.
                self.in_flight.clear();
                self.next_status_at = None;
            }
            Event::Received(msg) => self.on_message(msg, now, &mut out),
            Event::Readings(readings) => {
                // Stored before anything else: from here on the readings are "taken".
                match self.queue.append(&readings) {
                    Ok(a) => {
                        if a.thinned > 0 || a.dropped > 0 {
                            warn!(
                                thinned = a.thinned,
                                dropped = a.dropped,
                                "buffer full: oldest readings thinned or dropped"
                            );
                        }
                        if self.is_up() && a.stored > 0 {
                            self.live_waiting += a.stored;
                            self.live_since.get_or_insert(now);
                        }
                    }
                    Err(e) => {
                        error!(error = %e, lost = readings.len(), "could not buffer readings; they are lost")
                    }
                }
                self.fill_window(now, &mut out);
            }
            Event::Status(status) => {
                if self.is_up() {
                    out.push(Action::Send(AgentToServer::DeviceStatus(status.clone())));
                }
                self.statuses.insert(status.device.clone(), status);
            }
            Event::Outgoing(msg) => {
                if self.is_up() {
                    out.push(Action::Send(msg));
                } else if matches!(msg, AgentToServer::CommandResult(_)) {
                    if self.pending_results.len() >= MAX_PENDING_RESULTS {
                        warn!("link down too long: the oldest unsent command result is dropped");
                        self.pending_results.pop_front();
                    }
                    self.pending_results.push_back(msg);
                } else {
                    debug!(
                        "link down: control state dropped (states are sent again after the next welcome)"
                    );
                }
            }
            Event::Tick => {
                if let Link::AwaitingWelcome { since } = self.link
                    && now >= since + self.cfg.welcome_timeout
                {
                    out.push(Action::Close("no welcome from the server".into()));
                    return out;
                }
                if !self.is_up() {
                    return out;
                }
                if self.hold_until.is_some_and(|h| now >= h) {
                    self.hold_until = None;
                }
                let overdue: Vec<u64> = self
                    .in_flight
                    .iter()
                    .filter(|(_, f)| f.resend_at <= now)
                    .map(|(s, _)| *s)
                    .collect();
                for seq in overdue {
                    warn!(
                        seq,
                        "batch not acknowledged in time; sending its readings again"
                    );
                    self.give_back(seq, now);
                }
                if self.next_status_at.is_some_and(|t| now >= t) {
                    self.send_status(now, &mut out);
                }
                self.fill_window(now, &mut out);
            }
        }
        out
    }

    /// Put an unacknowledged batch's readings back into the unsent pool.
    fn give_back(&mut self, seq: u64, now: Instant) {
        if let Some(f) = self.in_flight.remove(&seq) {
            if let Err(e) = self.queue.release(seq) {
                error!(seq, error = %e, "cannot release a batch in the buffer");
            }
            if f.backlog {
                self.backlog_left = true;
            } else {
                // Its readings are due at once.
                self.live_waiting += 1;
                let due = now.checked_sub(self.cfg.batch_window).unwrap_or(now);
                self.live_since = Some(self.live_since.map_or(due, |t| t.min(due)));
            }
        }
    }

    fn send_status(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Some(st) = self.agent_status() {
            out.push(Action::Send(AgentToServer::AgentStatus(st)));
        }
        self.next_status_at = Some(now + self.cfg.status_interval);
    }

    fn on_message(&mut self, msg: ServerToAgent, now: Instant, out: &mut Vec<Action>) {
        match msg {
            ServerToAgent::Welcome(w) => {
                if !matches!(self.link, Link::AwaitingWelcome { .. }) {
                    warn!("unexpected welcome ignored");
                    return;
                }
                let backlog = match self.queue.begin_session(w.last_acked_seq) {
                    Ok(n) => n,
                    Err(e) => {
                        error!(error = %e, "cannot read the buffer");
                        0
                    }
                };
                info!(site_id = %w.site_id, version = w.version, last_acked_seq = ?w.last_acked_seq, backlog, "uplink session established");
                self.link = Link::Up;
                if let Some(c) = &self.control
                    && c.try_send(ControlInput::LinkUp).is_err()
                {
                    warn!("the control executor is not taking input; control states not re-sent");
                }
                self.backlog_left = backlog > 0;
                self.live_waiting = 0;
                self.live_since = None;
                for s in self.statuses.values() {
                    out.push(Action::Send(AgentToServer::DeviceStatus(s.clone())));
                }
                // Results decided while the link was down: the users who
                // asked are still waiting for them.
                out.extend(self.pending_results.drain(..).map(Action::Send));
                self.send_status(now, out);
                if backlog > 0 {
                    // Live first: the newest value of every point, so dashboards
                    // are current before the backlog drains.
                    match self.queue.latest_per_point() {
                        Ok(Some(batch)) => self.send_batch(batch, false, now, out),
                        Ok(None) => {}
                        Err(e) => error!(error = %e, "cannot read the newest values"),
                    }
                }
                self.fill_window(now, out);
            }
            ServerToAgent::Command(cmd) => {
                // The executor decides; the session only hands over.
                let cmd = match &self.control {
                    Some(c) => match c.try_send(ControlInput::Command(Box::new(cmd))) {
                        Ok(()) => return,
                        Err(e) => {
                            let ControlInput::Command(cmd) = e.into_inner() else {
                                return;
                            };
                            warn!(id = %cmd.id, "the control executor is busy or stopped");
                            *cmd
                        }
                    },
                    None => cmd,
                };
                // No control path (or none taking input): refuse, so the user
                // who asked sees why instead of waiting.
                let at = time::OffsetDateTime::now_utc();
                let reason = if self.control.is_some() {
                    "the agent's control executor is busy or stopped; try again"
                } else {
                    "remote control is not configured on this agent"
                };
                let (outcome, reason) = if cmd.expires_at <= at {
                    (
                        CommandOutcome::Expired,
                        "the command arrived after it expired",
                    )
                } else {
                    (CommandOutcome::Rejected, reason)
                };
                warn!(id = %cmd.id, by = %cmd.issued_by, ?outcome, reason, "command refused");
                out.push(Action::Send(AgentToServer::CommandResult(CommandResult {
                    id: cmd.id,
                    at,
                    outcome,
                    reason: Some(reason.into()),
                    before: None,
                    after: None,
                })));
            }
            ServerToAgent::Ack(ack) => {
                debug!(seq = ack.seq, "batch acknowledged");
                if let Err(e) = self.queue.ack(ack.seq) {
                    error!(seq = ack.seq, error = %e, "cannot delete an acknowledged batch; it will be sent again");
                }
                self.in_flight.remove(&ack.seq);
                self.fill_window(now, out);
            }
            ServerToAgent::Error(e) => match e.code {
                ErrorCode::TemporarilyUnavailable => {
                    warn!(seq = ?e.seq, message = %e.message, "server temporarily unavailable; keeping the readings");
                    // Release so the readings go out again under a new, higher
                    // seq: a later commit must never make last_acked_seq cover them.
                    let seqs: Vec<u64> = match e.seq {
                        Some(seq) => vec![seq],
                        None => self.in_flight.keys().copied().collect(),
                    };
                    for seq in seqs {
                        self.give_back(seq, now);
                    }
                    self.hold_until = Some(now + self.cfg.unavailable_retry);
                }
                ErrorCode::InvalidBatch => {
                    // The server will never take it; resending would loop forever.
                    error!(seq = ?e.seq, message = %e.message, "server refused a batch as invalid; dropping it");
                    if let Some(seq) = e.seq {
                        if let Err(err) = self.queue.ack(seq) {
                            error!(seq, error = %err, "cannot delete a refused batch");
                        }
                        self.in_flight.remove(&seq);
                        self.fill_window(now, out);
                    }
                }
                ErrorCode::UnsupportedVersion
                | ErrorCode::AgentMismatch
                | ErrorCode::HelloRequired => {
                    error!(code = ?e.code, message = %e.message, "server refused the session");
                    out.push(Action::Close(format!(
                        "server refused the session: {:?}",
                        e.code
                    )));
                }
                ErrorCode::MalformedMessage | ErrorCode::Unknown => {
                    warn!(code = ?e.code, seq = ?e.seq, message = %e.message, "server reported an error");
                }
            },
            ServerToAgent::Unknown => debug!("unknown server message ignored"),
        }
    }

    fn send_batch(
        &mut self,
        batch: ReadingsBatch,
        backlog: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.in_flight.insert(
            batch.seq,
            InFlight {
                resend_at: now + self.cfg.ack_timeout,
                backlog,
            },
        );
        out.push(Action::Send(AgentToServer::Readings(batch)));
    }

    fn live_due(&self, now: Instant) -> bool {
        self.live_since.is_some()
            && (self.live_waiting >= self.cfg.max_batch_readings
                || self
                    .live_since
                    .is_some_and(|t| now >= t + self.cfg.batch_window))
    }

    /// Send what the window allows: a live batch whenever live readings are
    /// due, backlog batches (oldest first, large) in the remaining room.
    fn fill_window(&mut self, now: Instant, out: &mut Vec<Action>) {
        if !self.is_up() || self.hold_until.is_some() {
            return;
        }
        while self.in_flight.len() < self.cfg.max_in_flight {
            if self.live_due(now) {
                match self.queue.take(Part::Live, self.cfg.max_batch_readings) {
                    Ok(Some(batch)) => {
                        let n = batch.readings.len();
                        self.send_batch(batch, false, now, out);
                        if n >= self.live_waiting {
                            self.live_waiting = 0;
                            self.live_since = None;
                        } else {
                            self.live_waiting -= n;
                        }
                    }
                    Ok(None) => {
                        self.live_waiting = 0;
                        self.live_since = None;
                    }
                    Err(e) => {
                        error!(error = %e, "cannot read the buffer");
                        return;
                    }
                }
                continue;
            }
            let backlog_in_flight = self.in_flight.values().filter(|f| f.backlog).count();
            if self.backlog_left && backlog_in_flight < self.cfg.max_backlog_in_flight {
                match self
                    .queue
                    .take(Part::Backlog, self.cfg.drain_batch_readings)
                {
                    Ok(Some(batch)) => self.send_batch(batch, true, now, out),
                    Ok(None) => self.backlog_left = false,
                    Err(e) => {
                        error!(error = %e, "cannot read the buffer");
                        return;
                    }
                }
                continue;
            }
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{Buffer, BufferConfig};
    use protocol::{Ack, ErrorReply, Quality, Welcome};

    fn hello() -> Hello {
        Hello {
            agent_id: uuid::Uuid::nil(),
            version: protocol::PROTOCOL_VERSION,
            capabilities: vec![],
            software: None,
            devices: vec![],
            envelope: None,
        }
    }

    fn cfg() -> SessionConfig {
        SessionConfig {
            max_batch_readings: 3,
            drain_batch_readings: 4,
            ..SessionConfig::default()
        }
    }

    fn session_with(cfg: SessionConfig) -> Session<Buffer> {
        let buffer = Buffer::open_in_memory(BufferConfig::default()).unwrap();
        Session::new(cfg, hello(), buffer)
    }

    fn session() -> Session<Buffer> {
        session_with(cfg())
    }

    fn rp(point: &str, v: f64) -> Reading {
        Reading {
            device: "hp".into(),
            point: point.into(),
            ts: time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(v as i64),
            value: v,
            unit: "degC".into(),
            quality: Quality::Good,
        }
    }

    fn r(v: f64) -> Reading {
        rp("t", v)
    }

    fn rs(range: std::ops::Range<i32>) -> Vec<Reading> {
        range.map(f64::from).map(r).collect()
    }

    fn welcome(last: Option<u64>) -> Event {
        Event::Received(ServerToAgent::Welcome(Welcome {
            version: 1,
            site_id: uuid::Uuid::nil(),
            last_acked_seq: last,
        }))
    }

    fn ack(seq: u64) -> Event {
        Event::Received(ServerToAgent::Ack(Ack { seq }))
    }

    fn batches(actions: &[Action]) -> Vec<(u64, Vec<f64>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(AgentToServer::Readings(b)) => {
                    Some((b.seq, b.readings.iter().map(|r| r.value).collect()))
                }
                _ => None,
            })
            .collect()
    }

    fn sent_seqs(actions: &[Action]) -> Vec<u64> {
        batches(actions).into_iter().map(|b| b.0).collect()
    }

    fn up(s: &mut Session<Buffer>, now: Instant) -> Vec<Action> {
        s.handle(Event::Connected, now);
        s.handle(welcome(None), now)
    }

    fn stored(s: &Session<Buffer>) -> u64 {
        s.queue().stats().unwrap().readings
    }

    #[test]
    fn connecting_sends_hello_first_and_nothing_else_before_welcome() {
        let mut s = session();
        let now = Instant::now();
        let a = s.handle(Event::Connected, now);
        assert!(matches!(
            a.as_slice(),
            [Action::Send(AgentToServer::Hello(_))]
        ));
        assert!(sent_seqs(&s.handle(Event::Readings(rs(0..3)), now)).is_empty());
        assert_eq!(stored(&s), 3, "readings are stored even before welcome");
        // Live first (the newest value of the point), then the backlog.
        assert_eq!(
            batches(&s.handle(welcome(None), now)),
            vec![(1, vec![2.0]), (2, vec![0.0, 1.0, 2.0])]
        );
    }

    #[test]
    fn a_command_to_an_agent_without_control_is_refused_and_an_expired_one_is_reported_expired() {
        let mut s = session();
        let now = Instant::now();
        up(&mut s, now);
        let wall = time::OffsetDateTime::now_utc();
        let cmd = |expires_at| {
            Event::Received(ServerToAgent::Command(protocol::Command {
                id: uuid::Uuid::new_v4(),
                issued_at: wall,
                expires_at,
                issued_by: "x@example.com".into(),
                request: protocol::ControlRequest::Release {
                    device: "hp".into(),
                    point: "p".into(),
                },
            }))
        };
        let outcome = |a: Vec<Action>| match a.as_slice() {
            [Action::Send(AgentToServer::CommandResult(r))] => (r.outcome, r.reason.clone()),
            other => panic!("expected one command result, got {other:?}"),
        };
        let (o, why) = outcome(s.handle(cmd(wall + time::Duration::minutes(5)), now));
        assert_eq!(o, CommandOutcome::Rejected);
        assert!(why.unwrap().contains("not configured"));
        let (o, _) = outcome(s.handle(cmd(wall - time::Duration::seconds(1)), now));
        assert_eq!(o, CommandOutcome::Expired);
    }

    #[test]
    fn with_control_commands_are_handed_over_and_each_welcome_announced() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut s = session().with_control(tx);
        let now = Instant::now();
        up(&mut s, now);
        assert_eq!(rx.try_recv().unwrap(), ControlInput::LinkUp);
        let wall = time::OffsetDateTime::now_utc();
        let cmd = protocol::Command {
            id: uuid::Uuid::new_v4(),
            issued_at: wall,
            expires_at: wall + time::Duration::minutes(5),
            issued_by: "x@example.com".into(),
            request: protocol::ControlRequest::Release {
                device: "hp".into(),
                point: "p".into(),
            },
        };
        let a = s.handle(Event::Received(ServerToAgent::Command(cmd.clone())), now);
        assert!(a.is_empty(), "{a:?}");
        // The queue (capacity 1) is full now: the next one is refused, not lost silently.
        let a = s.handle(Event::Received(ServerToAgent::Command(cmd.clone())), now);
        match a.as_slice() {
            [Action::Send(AgentToServer::CommandResult(r))] => {
                assert_eq!(r.outcome, CommandOutcome::Rejected);
                assert!(r.reason.as_deref().unwrap().contains("busy"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(rx.try_recv().unwrap(), ControlInput::Command(Box::new(cmd)));
    }

    #[test]
    fn control_states_are_sent_while_up_and_dropped_while_down() {
        let mut s = session();
        let now = Instant::now();
        let msg = AgentToServer::ControlState(protocol::ControlState {
            device: "hp".into(),
            point: "p".into(),
            commanded: Some(1.0),
            reported: None,
            source: protocol::ControlSource::Manual,
            until: None,
            action: None,
            note: None,
        });
        assert!(s.handle(Event::Outgoing(msg.clone()), now).is_empty());
        up(&mut s, now);
        assert_eq!(
            s.handle(Event::Outgoing(msg.clone()), now),
            vec![Action::Send(msg)]
        );
    }

    #[test]
    fn command_results_decided_while_the_link_is_down_go_out_after_the_welcome() {
        let mut s = session();
        let now = Instant::now();
        let result = |n: u128| {
            AgentToServer::CommandResult(CommandResult {
                id: uuid::Uuid::from_u128(n),
                at: time::OffsetDateTime::UNIX_EPOCH,
                outcome: CommandOutcome::Applied,
                reason: None,
                before: Some(20.0),
                after: Some(21.0),
            })
        };
        for n in 0..(MAX_PENDING_RESULTS as u128 + 2) {
            assert!(s.handle(Event::Outgoing(result(n)), now).is_empty());
        }
        let sent: Vec<_> = up(&mut s, now)
            .into_iter()
            .filter_map(|a| match a {
                Action::Send(AgentToServer::CommandResult(r)) => Some(r.id.as_u128()),
                _ => None,
            })
            .collect();
        let expected: Vec<u128> = (2..MAX_PENDING_RESULTS as u128 + 2).collect();
        assert_eq!(sent, expected, "oldest two dropped, the rest in order");
        let again = s.handle(welcome(None), now);
        assert!(
            !again
                .iter()
                .any(|a| matches!(a, Action::Send(AgentToServer::CommandResult(_)))),
            "sent once"
        );
    }

    #[test]
    fn welcome_sends_an_agent_status_with_the_buffer_depth() {
        let mut s = session();
        let now = Instant::now();
        s.handle(Event::Readings(rs(0..5)), now);
        s.handle(Event::Connected, now);
        let a = s.handle(welcome(None), now);
        let st = a
            .iter()
            .find_map(|a| match a {
                Action::Send(AgentToServer::AgentStatus(st)) => Some(st.clone()),
                _ => None,
            })
            .expect("an agent status");
        assert_eq!(st.buffered_readings, 5);
        assert_eq!(st.oldest_unsent, Some(time::OffsetDateTime::UNIX_EPOCH));
        let later = now + Duration::from_secs(30);
        assert!(s.next_deadline().unwrap() <= later);
        assert!(
            s.handle(Event::Tick, later)
                .iter()
                .any(|a| matches!(a, Action::Send(AgentToServer::AgentStatus(_))))
        );
    }

    #[test]
    fn live_readings_are_batched_for_up_to_the_window() {
        let mut s = session();
        let t0 = Instant::now();
        up(&mut s, t0);
        assert!(s.handle(Event::Readings(vec![r(1.0)]), t0).is_empty());
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(sent_seqs(&s.handle(Event::Tick, t0 + Duration::from_millis(500))).is_empty());
        let a = s.handle(Event::Tick, t0 + Duration::from_secs(1));
        assert_eq!(batches(&a), vec![(1, vec![1.0])]);
    }

    #[test]
    fn each_batch_gets_a_new_seq_and_acks_delete_only_their_readings() {
        let mut s = session();
        let now = Instant::now();
        up(&mut s, now);
        let a = s.handle(Event::Readings(rs(0..7)), now);
        assert_eq!(
            batches(&a),
            vec![(1, vec![0.0, 1.0, 2.0]), (2, vec![3.0, 4.0, 5.0])]
        );
        s.handle(ack(2), now);
        assert_eq!(stored(&s), 4);
        s.handle(ack(1), now);
        assert_eq!(stored(&s), 1);
    }

    #[test]
    fn unacked_readings_are_resent_in_order_after_a_reconnect() {
        let mut s = session();
        let now = Instant::now();
        up(&mut s, now);
        s.handle(Event::Readings(rs(0..9)), now);
        s.handle(ack(2), now);
        s.handle(Event::Disconnected, now);
        s.handle(Event::Connected, now);
        // Live-first (seq 4), then the backlog oldest first under fresh seqs.
        assert_eq!(
            batches(&s.handle(welcome(None), now)),
            vec![
                (4, vec![8.0]),
                (5, vec![0.0, 1.0, 2.0, 6.0]),
                (6, vec![7.0, 8.0])
            ]
        );
    }

    #[test]
    fn welcome_last_acked_seq_drops_what_the_server_already_has() {
        let mut s = session();
        let now = Instant::now();
        up(&mut s, now);
        s.handle(Event::Readings(rs(0..9)), now);
        s.handle(Event::Disconnected, now);
        s.handle(Event::Connected, now);
        let a = s.handle(welcome(Some(2)), now);
        assert_eq!(batches(&a), vec![(4, vec![8.0]), (5, vec![6.0, 7.0, 8.0])]);
    }

    #[test]
    fn the_backlog_drains_in_large_batches_while_live_batches_keep_going_out() {
        let mut s = session_with(SessionConfig {
            max_batch_readings: 2,
            drain_batch_readings: 3,
            max_in_flight: 4,
            max_backlog_in_flight: 2,
            ..SessionConfig::default()
        });
        let now = Instant::now();
        s.handle(
            Event::Readings(vec![rp("a", 1.0), rp("b", 2.0), rp("a", 3.0)]),
            now,
        );
        s.handle(Event::Readings(rs(10..16)), now);
        s.handle(Event::Connected, now);
        let a = s.handle(welcome(None), now);
        // Newest of each point first; then only two backlog batches in flight.
        assert_eq!(
            batches(&a),
            vec![
                (1, vec![2.0, 3.0, 15.0]),
                (2, vec![1.0, 2.0, 3.0]),
                (3, vec![10.0, 11.0, 12.0])
            ]
        );
        // Live readings go out although the backlog is not drained yet.
        let a = s.handle(Event::Readings(vec![r(100.0), r(101.0)]), now);
        assert_eq!(batches(&a), vec![(4, vec![100.0, 101.0])]);
        // Acks of backlog batches let more backlog out.
        assert_eq!(
            batches(&s.handle(ack(2), now)),
            vec![(5, vec![13.0, 14.0, 15.0])]
        );
        s.handle(ack(1), now);
        s.handle(ack(3), now);
        s.handle(ack(4), now);
        s.handle(ack(5), now);
        assert_eq!(stored(&s), 0);
    }

    #[test]
    fn temporarily_unavailable_keeps_the_readings_and_sends_them_again_later() {
        let mut s = session();
        let t0 = Instant::now();
        up(&mut s, t0);
        s.handle(Event::Readings(rs(1..4)), t0);
        let err = ServerToAgent::Error(ErrorReply {
            code: ErrorCode::TemporarilyUnavailable,
            message: "db down".into(),
            seq: Some(1),
        });
        assert!(s.handle(Event::Received(err), t0).is_empty());
        assert_eq!(stored(&s), 3);
        assert!(sent_seqs(&s.handle(Event::Tick, t0 + Duration::from_secs(4))).is_empty());
        assert_eq!(
            batches(&s.handle(Event::Tick, t0 + Duration::from_secs(5))),
            vec![(2, vec![1.0, 2.0, 3.0])],
            "under a new seq, above anything a later commit could acknowledge"
        );
    }

    #[test]
    fn an_unacknowledged_batch_is_sent_again_after_the_ack_timeout() {
        let mut s = session();
        let t0 = Instant::now();
        up(&mut s, t0);
        s.handle(Event::Readings(rs(1..4)), t0);
        assert_eq!(
            batches(&s.handle(Event::Tick, t0 + Duration::from_secs(30))),
            vec![(2, vec![1.0, 2.0, 3.0])]
        );
    }

    #[test]
    fn an_invalid_batch_is_dropped_not_resent_forever() {
        let mut s = session();
        let now = Instant::now();
        up(&mut s, now);
        s.handle(Event::Readings(rs(1..4)), now);
        let err = ServerToAgent::Error(ErrorReply {
            code: ErrorCode::InvalidBatch,
            message: "x".into(),
            seq: Some(1),
        });
        s.handle(Event::Received(err), now);
        assert_eq!(stored(&s), 0);
    }

    #[test]
    fn an_unsupported_version_closes_the_session() {
        let mut s = session();
        let now = Instant::now();
        s.handle(Event::Connected, now);
        let err = ServerToAgent::Error(ErrorReply {
            code: ErrorCode::UnsupportedVersion,
            message: "x".into(),
            seq: None,
        });
        assert!(matches!(
            s.handle(Event::Received(err), now).as_slice(),
            [Action::Close(_)]
        ));
    }

    #[test]
    fn a_missing_welcome_closes_the_connection() {
        let mut s = session();
        let t0 = Instant::now();
        s.handle(Event::Connected, t0);
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(10)));
        assert!(matches!(
            s.handle(Event::Tick, t0 + Duration::from_secs(10))
                .as_slice(),
            [Action::Close(_)]
        ));
    }

    #[test]
    fn device_statuses_are_sent_when_up_and_replayed_after_welcome() {
        let mut s = session();
        let now = Instant::now();
        let st = DeviceStatus {
            device: "hp".into(),
            online: false,
            last_ok: None,
            last_error: Some("timeout".into()),
            consecutive_failures: 2,
        };
        assert!(s.handle(Event::Status(st.clone()), now).is_empty());
        s.handle(Event::Connected, now);
        let a = s.handle(welcome(None), now);
        assert_eq!(a[0], Action::Send(AgentToServer::DeviceStatus(st)));
    }

    #[test]
    fn at_most_max_in_flight_batches_are_outstanding() {
        let mut s = session_with(SessionConfig {
            max_batch_readings: 1,
            max_in_flight: 2,
            ..SessionConfig::default()
        });
        let now = Instant::now();
        up(&mut s, now);
        assert_eq!(
            sent_seqs(&s.handle(Event::Readings(rs(1..4)), now)),
            vec![1, 2]
        );
        assert_eq!(sent_seqs(&s.handle(ack(1), now)), vec![3]);
    }
}
