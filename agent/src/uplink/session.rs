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
    AgentToServer, DeviceStatus, ErrorCode, Hello, MAX_READINGS_PER_BATCH, Reading, ServerToAgent,
};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::queue::BatchQueue;

/// Tunables of a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Seal a batch once it holds this many readings.
    pub max_batch_readings: usize,
    /// Seal a batch at most this long after its first reading arrived.
    pub batch_window: Duration,
    /// Batches sent but not acknowledged; more wait for acks.
    pub max_in_flight: usize,
    /// Resend a batch not acknowledged within this time (the server dedupes).
    pub ack_timeout: Duration,
    /// After `temporarily_unavailable`, resend the batch after this long.
    pub unavailable_retry: Duration,
    /// Give up on a connection that sent no `Welcome` within this time.
    pub welcome_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_batch_readings: 500,
            batch_window: Duration::from_secs(1),
            max_in_flight: 16,
            ack_timeout: Duration::from_secs(30),
            unavailable_retry: Duration::from_secs(5),
            welcome_timeout: Duration::from_secs(10),
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

/// Session state; `Q` holds the unacknowledged batches.
#[derive(Debug)]
pub struct Session<Q> {
    cfg: SessionConfig,
    hello: Hello,
    queue: Q,
    link: Link,
    collecting: Vec<Reading>,
    collecting_since: Option<Instant>,
    statuses: BTreeMap<String, DeviceStatus>,
    /// In-flight batches: seq → when to resend if still unacknowledged.
    resend_at: HashMap<u64, Instant>,
}

impl<Q: BatchQueue> Session<Q> {
    /// A session that announces `hello` on every connect.
    pub fn new(cfg: SessionConfig, hello: Hello, queue: Q) -> Self {
        let mut cfg = cfg;
        cfg.max_batch_readings = cfg.max_batch_readings.clamp(1, MAX_READINGS_PER_BATCH);
        Session {
            cfg,
            hello,
            queue,
            link: Link::Down,
            collecting: Vec::new(),
            collecting_since: None,
            statuses: BTreeMap::new(),
            resend_at: HashMap::new(),
        }
    }

    /// True between `Welcome` and the disconnect.
    pub fn is_up(&self) -> bool {
        self.link == Link::Up
    }

    /// Batches waiting for an ack.
    pub fn queue(&self) -> &Q {
        &self.queue
    }

    /// Readings not yet sealed into a batch.
    pub fn collecting(&self) -> usize {
        self.collecting.len()
    }

    /// When the loop must deliver the next [`Event::Tick`], if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        let seal = self.collecting_since.map(|t| t + self.cfg.batch_window);
        let resend = if self.is_up() {
            self.resend_at.values().min().copied()
        } else {
            None
        };
        let welcome = match self.link {
            Link::AwaitingWelcome { since } => Some(since + self.cfg.welcome_timeout),
            _ => None,
        };
        [seal, resend, welcome].into_iter().flatten().min()
    }

    /// Apply `event` at time `now`.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Connected => {
                self.link = Link::AwaitingWelcome { since: now };
                self.resend_at.clear();
                out.push(Action::Send(AgentToServer::Hello(self.hello.clone())));
            }
            Event::Disconnected => {
                self.link = Link::Down;
                // Everything unacknowledged is resent after the next Welcome.
                self.resend_at.clear();
            }
            Event::Received(msg) => self.on_message(msg, now, &mut out),
            Event::Readings(readings) => {
                if self.collecting_since.is_none() && !readings.is_empty() {
                    self.collecting_since = Some(now);
                }
                self.collecting.extend(readings);
                while self.collecting.len() >= self.cfg.max_batch_readings {
                    self.seal(now);
                }
                self.fill_window(now, &mut out);
            }
            Event::Status(status) => {
                if self.is_up() {
                    out.push(Action::Send(AgentToServer::DeviceStatus(status.clone())));
                }
                self.statuses.insert(status.device.clone(), status);
            }
            Event::Tick => {
                if let Link::AwaitingWelcome { since } = self.link
                    && now >= since + self.cfg.welcome_timeout
                {
                    out.push(Action::Close("no welcome from the server".into()));
                    return out;
                }
                if self
                    .collecting_since
                    .is_some_and(|t| now >= t + self.cfg.batch_window)
                {
                    self.seal(now);
                }
                if self.is_up() {
                    // Overdue batches leave the in-flight set so fill_window sends them again.
                    self.resend_at.retain(|_, at| *at > now);
                }
                self.fill_window(now, &mut out);
            }
        }
        out
    }

    fn on_message(&mut self, msg: ServerToAgent, now: Instant, out: &mut Vec<Action>) {
        match msg {
            ServerToAgent::Welcome(w) => {
                if !matches!(self.link, Link::AwaitingWelcome { .. }) {
                    warn!("unexpected welcome ignored");
                    return;
                }
                info!(site_id = %w.site_id, version = w.version, last_acked_seq = ?w.last_acked_seq, pending = self.queue.len(), "uplink session established");
                if let Some(seq) = w.last_acked_seq {
                    self.queue.ack_up_to(seq);
                }
                self.link = Link::Up;
                for s in self.statuses.values() {
                    out.push(Action::Send(AgentToServer::DeviceStatus(s.clone())));
                }
                self.fill_window(now, out);
            }
            ServerToAgent::Ack(ack) => {
                debug!(seq = ack.seq, "batch acknowledged");
                self.queue.ack(ack.seq);
                self.resend_at.remove(&ack.seq);
                self.fill_window(now, out);
            }
            ServerToAgent::Error(e) => match e.code {
                ErrorCode::TemporarilyUnavailable => {
                    warn!(seq = ?e.seq, message = %e.message, "server temporarily unavailable; keeping the batch");
                    let retry = now + self.cfg.unavailable_retry;
                    match e.seq {
                        Some(seq) => {
                            if let Some(at) = self.resend_at.get_mut(&seq) {
                                *at = retry;
                            }
                        }
                        None => self.resend_at.values_mut().for_each(|at| *at = retry),
                    }
                }
                ErrorCode::InvalidBatch => {
                    // The server will never take it; resending would loop forever.
                    error!(seq = ?e.seq, message = %e.message, "server refused a batch as invalid; dropping it");
                    if let Some(seq) = e.seq {
                        self.queue.ack(seq);
                        self.resend_at.remove(&seq);
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

    fn seal(&mut self, now: Instant) {
        if self.collecting.is_empty() {
            self.collecting_since = None;
            return;
        }
        let n = self.collecting.len().min(self.cfg.max_batch_readings);
        let batch: Vec<Reading> = self.collecting.drain(..n).collect();
        self.collecting_since = if self.collecting.is_empty() {
            None
        } else {
            Some(now)
        };
        match self.queue.push(batch) {
            Ok(p) if p.dropped_readings > 0 => warn!(
                dropped = p.dropped_readings,
                "buffer full: oldest readings dropped"
            ),
            Ok(_) => {}
            Err(e) => error!(error = %e, "could not buffer readings; they are lost"),
        }
    }

    fn fill_window(&mut self, now: Instant, out: &mut Vec<Action>) {
        if !self.is_up() {
            return;
        }
        for batch in self.queue.oldest(self.cfg.max_in_flight) {
            if self.resend_at.len() >= self.cfg.max_in_flight {
                break;
            }
            if self.resend_at.contains_key(&batch.seq) {
                continue;
            }
            self.resend_at.insert(batch.seq, now + self.cfg.ack_timeout);
            out.push(Action::Send(AgentToServer::Readings(batch)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uplink::queue::MemoryQueue;
    use protocol::{Ack, ErrorReply, Quality, Welcome};

    fn hello() -> Hello {
        Hello {
            agent_id: uuid::Uuid::nil(),
            version: protocol::PROTOCOL_VERSION,
            capabilities: vec![],
            software: None,
            devices: vec![],
        }
    }

    fn session() -> Session<MemoryQueue> {
        Session::new(
            SessionConfig {
                max_batch_readings: 3,
                ..SessionConfig::default()
            },
            hello(),
            MemoryQueue::new(1000, 1),
        )
    }

    fn r(v: f64) -> Reading {
        Reading {
            device: "hp".into(),
            point: "t".into(),
            ts: time::OffsetDateTime::UNIX_EPOCH,
            value: v,
            unit: "degC".into(),
            quality: Quality::Good,
        }
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

    fn sent_seqs(actions: &[Action]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(AgentToServer::Readings(b)) => Some(b.seq),
                _ => None,
            })
            .collect()
    }

    fn up(s: &mut Session<MemoryQueue>, now: Instant) {
        s.handle(Event::Connected, now);
        s.handle(welcome(None), now);
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
        assert!(
            sent_seqs(&s.handle(Event::Readings(vec![r(1.0), r(2.0), r(3.0)]), now)).is_empty()
        );
        assert_eq!(
            s.queue().len(),
            1,
            "a full batch is sealed even before welcome"
        );
        assert_eq!(sent_seqs(&s.handle(welcome(None), now)), vec![1]);
    }

    #[test]
    fn readings_are_batched_for_up_to_the_window() {
        let mut s = session();
        let t0 = Instant::now();
        up(&mut s, t0);
        assert!(s.handle(Event::Readings(vec![r(1.0)]), t0).is_empty());
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(sent_seqs(&s.handle(Event::Tick, t0 + Duration::from_millis(500))).is_empty());
        let a = s.handle(Event::Tick, t0 + Duration::from_secs(1));
        assert_eq!(sent_seqs(&a), vec![1]);
    }

    #[test]
    fn each_batch_gets_a_new_seq_and_acks_remove_them() {
        let mut s = session();
        let now = Instant::now();
        up(&mut s, now);
        let a = s.handle(Event::Readings((0..7).map(f64::from).map(r).collect()), now);
        assert_eq!(sent_seqs(&a), vec![1, 2]);
        assert_eq!(s.collecting(), 1);
        s.handle(ack(1), now);
        s.handle(ack(2), now);
        assert!(s.queue().is_empty());
    }

    #[test]
    fn unacked_batches_are_resent_after_a_reconnect() {
        let mut s = session();
        let now = Instant::now();
        up(&mut s, now);
        s.handle(Event::Readings((0..9).map(f64::from).map(r).collect()), now);
        s.handle(ack(2), now);
        s.handle(Event::Disconnected, now);
        s.handle(Event::Connected, now);
        assert_eq!(sent_seqs(&s.handle(welcome(None), now)), vec![1, 3]);
    }

    #[test]
    fn welcome_last_acked_seq_drops_what_the_server_already_has() {
        let mut s = session();
        let now = Instant::now();
        up(&mut s, now);
        s.handle(Event::Readings((0..9).map(f64::from).map(r).collect()), now);
        s.handle(Event::Disconnected, now);
        s.handle(Event::Connected, now);
        assert_eq!(sent_seqs(&s.handle(welcome(Some(2)), now)), vec![3]);
    }

    #[test]
    fn temporarily_unavailable_keeps_the_batch_and_resends_it_later() {
        let mut s = session();
        let t0 = Instant::now();
        up(&mut s, t0);
        s.handle(Event::Readings(vec![r(1.0), r(2.0), r(3.0)]), t0);
        let err = ServerToAgent::Error(ErrorReply {
            code: ErrorCode::TemporarilyUnavailable,
            message: "db down".into(),
            seq: Some(1),
        });
        assert!(s.handle(Event::Received(err), t0).is_empty());
        assert_eq!(s.queue().len(), 1);
        assert!(sent_seqs(&s.handle(Event::Tick, t0 + Duration::from_secs(4))).is_empty());
        assert_eq!(
            sent_seqs(&s.handle(Event::Tick, t0 + Duration::from_secs(5))),
            vec![1]
        );
    }

    #[test]
    fn an_unacknowledged_batch_is_resent_after_the_ack_timeout() {
        let mut s = session();
        let t0 = Instant::now();
        up(&mut s, t0);
        s.handle(Event::Readings(vec![r(1.0), r(2.0), r(3.0)]), t0);
        assert_eq!(
            sent_seqs(&s.handle(Event::Tick, t0 + Duration::from_secs(30))),
            vec![1]
        );
    }

    #[test]
    fn an_invalid_batch_is_dropped_not_resent_forever() {
        let mut s = session();
        let now = Instant::now();
        up(&mut s, now);
        s.handle(Event::Readings(vec![r(1.0), r(2.0), r(3.0)]), now);
        let err = ServerToAgent::Error(ErrorReply {
            code: ErrorCode::InvalidBatch,
            message: "x".into(),
            seq: Some(1),
        });
        s.handle(Event::Received(err), now);
        assert!(s.queue().is_empty());
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
        assert_eq!(a, vec![Action::Send(AgentToServer::DeviceStatus(st))]);
    }

    #[test]
    fn at_most_max_in_flight_batches_are_outstanding() {
        let mut s = Session::new(
            SessionConfig {
                max_batch_readings: 1,
                max_in_flight: 2,
                ..SessionConfig::default()
            },
            hello(),
            MemoryQueue::new(1000, 1),
        );
        let now = Instant::now();
        up(&mut s, now);
        assert_eq!(
            sent_seqs(&s.handle(Event::Readings(vec![r(1.0), r(2.0), r(3.0)]), now)),
            vec![1, 2]
        );
        assert_eq!(sent_seqs(&s.handle(ack(1), now)), vec![3]);
    }
}
