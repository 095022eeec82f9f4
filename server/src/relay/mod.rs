//! Several server replicas on one PostgreSQL: relaying live updates, agent
//! presence and command pokes between them with `LISTEN/NOTIFY`.
//!
//! Behind a load balancer, an agent's session, a browser's live feed and a
//! homeowner's form post may each land on a different replica. The
//! [`crate::hub::Hub`] and the [`crate::links::AgentLinks`] registry stay per
//! process; this module carries what they must share:
//!
//! - **readings**: per committed batch, the newest value of each point
//!   ([`notice::Notice::Readings`]), coalesced per site while a notice is in
//!   flight (see [`outbox`]), never one notice per reading;
//! - **control events** (`control_state`, `command`) verbatim, or a
//!   "resync this site" when one would not fit in a notice;
//! - **presence**: each replica announces its own agent sessions (a notice
//!   per change, its whole list in every heartbeat); [`peers`] keeps them per
//!   replica and expires a replica that stops beating, so a crashed replica
//!   cannot keep a site online;
//! - **pokes**: "a command for agent X may be waiting", so a session on
//!   another replica looks at once. As a safety net every session also
//!   re-reads its commands on each ping (30 s), so a lost notice delays a
//!   command by at most that.
//!
//! Two tasks do the I/O. The *sender* drains the outbox into one
//! `SELECT pg_notify(…) FROM unnest($2)` per flush (one round trip, delivered
//! in order and only on commit) and puts the changes back on failure, so an
//! outage loses no "something changed" signal. The *listener* holds its own
//! connection (`sqlx::postgres::PgListener`) and reconnects by itself with
//! back-off. Notices sent while it was away are gone, so every (re)connect
//! resynchronises: sites with viewers are re-read from the database and get
//! a fresh snapshot, local sessions re-check their commands, and a
//! [`notice::Notice::Sync`] asks every replica for a heartbeat. A replica
//! hears its own notices too (and skips them); hearing nothing at all, not
//! even its own heartbeat, for three intervals means the listener's
//! connection is dead, and it reconnects.
//!
//! SQLite is single-process by nature: there the relay is not created and
//! the hub and registry behave exactly as before.

pub mod notice;
pub mod outbox;
pub mod peers;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sea_orm::{
    DbBackend,
    sqlx::{
        self,
        postgres::{PgListener, PgPool, PgPoolOptions},
    },
};
use tokio::sync::{Notify, oneshot};

pub use notice::ReplicaId;
use outbox::Pending;
use peers::{Effect, Peers};

use crate::{
    domain::{AgentId, SiteId},
    state::AppState,
    store::{StoreError, catalogue, people, readings, readings::NewReading},
};

/// How long [`Relay::start`] waits for the listener's first attempt.
const FIRST_LISTEN_WAIT: Duration = Duration::from_secs(2);
/// How long a goodbye may take at shutdown.
const GOODBYE_WAIT: Duration = Duration::from_secs(2);
/// Reconnect and resend back-off.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(5));

struct Inner {
    me: ReplicaId,
    heartbeat: Duration,
    pending: Mutex<Pending>,
    wake: Notify,
    listening: AtomicBool,
    pool: Mutex<Option<PgPool>>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// This replica's end of the relay; cheap to clone. The hub and the
/// agent-link registry record changes through it; [`Relay::start`] runs the
/// tasks that send and receive.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("replica", &self.inner.me)
            .field("listening", &self.is_listening())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Relay {
    /// A relay for a new replica that beats every `heartbeat` (at least
    /// every 10 ms). Nothing is sent before [`Relay::start`].
    pub fn new(heartbeat: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                me: ReplicaId::new(),
                heartbeat: heartbeat.max(Duration::from_millis(10)),
                pending: Mutex::new(Pending::default()),
                wake: Notify::new(),
                listening: AtomicBool::new(false),
                pool: Mutex::new(None),
                tasks: Mutex::new(Vec::new()),
            }),
        }
    }

    /// This replica's id.
    pub fn replica(&self) -> ReplicaId {
        self.inner.me
    }

    /// Whether the listener is connected and subscribed right now.
    pub fn is_listening(&self) -> bool {
        self.inner.listening.load(Ordering::Relaxed)
    }

    fn record(&self, f: impl FnOnce(&mut Pending)) {
        f(&mut lock(&self.inner.pending));
        self.inner.wake.notify_one();
    }

    /// Newly committed newest values of a site's points.
    pub(crate) fn readings<'a>(
        &self,
        site: SiteId,
        values: impl IntoIterator<Item = &'a NewReading>,
    ) {
        self.record(|p| p.add_readings(site, values));
    }

    /// A control message for a site's viewers.
    pub(crate) fn event(&self, site: SiteId, msg: &serde_json::Value) {
        self.record(|p| p.add_event(site, msg));
    }

    /// Agent `agent` of `site` opened or closed a session on this replica.
    pub(crate) fn session_changed(&self, agent: AgentId, site: SiteId) {
        self.record(|p| p.session_changed(agent, site));
    }

    /// A command for `agent` may be waiting.
    pub(crate) fn poke(&self, agent: AgentId) {
        self.record(|p| p.poke(agent));
    }

    fn announce(&self, sync: bool) {
        self.record(|p| {
            p.heartbeat = true;
            p.sync |= sync;
        });
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut lock(&self.inner.pending))
    }

    fn put_back(&self, older: Pending) {
        lock(&self.inner.pending).put_back(older);
    }

    /// Start the sender and the listener on the state's PostgreSQL pool, and
    /// wait (at most a few seconds) for the listener's first attempt, so a
    /// replica usually hears its peers before it serves its first page.
    pub async fn start(&self, state: AppState) {
        if state.db.get_database_backend() != DbBackend::Postgres {
            tracing::warn!("the relay between replicas needs PostgreSQL; not started");
            return;
        }
        let pool = state.db.get_postgres_connection_pool().clone();
        // The listener gets a connection of its own, outside the request
        // pool: it is held for good, and its reconnects must not wait behind
        // requests (nor requests behind it).
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with((*pool.connect_options()).clone());
        *lock(&self.inner.pool) = Some(pool.clone());
        let (first_tx, first_rx) = oneshot::channel();
        let sender = tokio::spawn(send_loop(self.clone(), state.clone(), pool));
        let listener = tokio::spawn(listen_loop(self.clone(), state, listen_pool, first_tx));
        lock(&self.inner.tasks).extend([sender.abort_handle(), listener.abort_handle()]);
        let _ = tokio::time::timeout(FIRST_LISTEN_WAIT, first_rx).await;
    }

    /// Stop relaying and tell the peers this replica is gone (bounded; a
    /// replica that cannot say goodbye expires at its peers instead).
    pub async fn goodbye(&self) {
        self.halt();
        let pool = lock(&self.inner.pool).clone();
        if let Some(pool) = pool {
            let bye = vec![notice::encode(self.inner.me, &notice::Notice::Bye)];
            match tokio::time::timeout(GOODBYE_WAIT, notify(&pool, &bye)).await {
                Ok(Ok(())) => {
                    tracing::info!(replica = %self.inner.me, "said goodbye to the other replicas")
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not say goodbye to the other replicas")
                }
                Err(_) => tracing::warn!("saying goodbye to the other replicas timed out"),
            }
        }
    }

    /// Stop both tasks at once, without a goodbye: what a crash looks like
    /// to the peers.
    pub fn halt(&self) {
        for t in lock(&self.inner.tasks).drain(..) {
            t.abort();
        }
        self.inner.listening.store(false, Ordering::Relaxed);
    }
}

/// One statement per flush: the payloads are delivered in array order, all
/// or none, when it commits.
async fn notify(pool: &PgPool, payloads: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .bind(notice::CHANNEL)
        .bind(payloads)
        .execute(pool)
        .await
        .map(|_| ())
}

struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self { next: BACKOFF.0 }
    }
    fn reset(&mut self) {
        self.next = BACKOFF.0;
    }
    /// The wait before the next attempt; the first failure of a series is
    /// the one worth a warning.
    fn step(&mut self) -> (Duration, bool) {
        let wait = self.next;
        self.next = (self.next * 2).min(BACKOFF.1);
        (wait, wait == BACKOFF.0)
    }
}

async fn send_loop(relay: Relay, state: AppState, pool: PgPool) {
    let mut beat = tokio::time::interval(relay.inner.heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut generation = 0_u64;
    let mut backoff = Backoff::new();
    loop {
        tokio::select! {
            _ = relay.inner.wake.notified() => {}
            _ = beat.tick() => relay.announce(false),
        }
        loop {
            let pending = relay.take();
            if pending.is_empty() {
                break;
            }
            if pending.heartbeat {
                generation += 1;
            }
            let local = state.links.local_sessions();
            let payloads =
                pending.payloads(relay.inner.me, &local, relay.inner.heartbeat, generation);
            match notify(&pool, &payloads).await {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    relay.put_back(pending);
                    let (wait, first) = backoff.step();
                    if first {
                        tracing::warn!(error = %e, "relaying to the other replicas failed; retrying");
                    } else {
                        tracing::debug!(error = %e, ?wait, "relaying to the other replicas failed again");
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

async fn connect_listener(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection is reported (`Ok(None)`) before anything else
    // happens, so the loop below can resynchronise after the reconnect.
    listener.eager_reconnect(false);
    listener.listen(notice::CHANNEL).await?;
    Ok(listener)
}

async fn listen_loop(relay: Relay, state: AppState, pool: PgPool, first: oneshot::Sender<()>) {
    let mut first = Some(first);
    let mut peers = Peers::new(relay.inner.me, relay.inner.heartbeat);
    let mut backoff = Backoff::new();
    // Even this replica's own heartbeat arrives every interval; silence for
    // longer than this means the connection is dead without having said so.
    let silence = relay.inner.heartbeat * peers::MISSED_BEATS + Duration::from_secs(1);
    loop {
        let mut listener = match connect_listener(&pool).await {
            Ok(l) => l,
            Err(e) => {
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
                let (wait, warn) = backoff.step();
                if warn {
                    tracing::warn!(error = %e, "listening for the other replicas failed; retrying");
                } else {
                    tracing::debug!(error = %e, ?wait, "listening for the other replicas failed again");
                }
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        backoff.reset();
        relay.inner.listening.store(true, Ordering::Relaxed);
        tracing::info!(replica = %relay.inner.me, "listening for the other replicas");
        peers.restart_clocks(std::time::Instant::now());
        relay.announce(true);
        tokio::spawn(resync(state.clone()));
        if let Some(tx) = first.take() {
            let _ = tx.send(());
        }
        let why = loop {
            match tokio::time::timeout(silence, listener.try_recv()).await {
                Err(_) => break "nothing heard, not even this replica's own heartbeat".to_owned(),
                Ok(Err(e)) => break e.to_string(),
                Ok(Ok(None)) => break "connection lost".to_owned(),
                Ok(Ok(Some(n))) => {
                    let now = std::time::Instant::now();
                    match peers.receive(n.payload(), now) {
                        Ok(effects) => apply(&relay, &state, effects),
                        Err(e) => {
                            tracing::warn!(error = %e, "ignoring a notice on the relay channel")
                        }
                    }
                    apply(&relay, &state, peers.expire(now));
                }
            }
        };
        relay.inner.listening.store(false, Ordering::Relaxed);
        tracing::warn!(reason = %why, "stopped listening for the other replicas; reconnecting");
    }
}

fn apply(relay: &Relay, state: &AppState, effects: Vec<Effect>) {
    for effect in effects {
        match effect {
            Effect::SiteAgents { site, replica, n } => {
                state.hub.set_remote_agents(site, replica, n)
            }
            Effect::Agents { replica, agents } => state.links.set_remote(replica, agents),
            Effect::Readings { site, values } => state.hub.apply_remote_readings(site, &values),
            Effect::Event { site, text } => state.hub.fan_out(site, Arc::from(text)),
            Effect::Snapshot { site } => state.hub.push_snapshot(site),
            Effect::Poke { agent } => {
                state.links.poke_local(agent);
            }
            Effect::AnnounceSelf => relay.announce(false),
        }
    }
}

/// After (re)connecting: whatever was said meanwhile is lost, so local
/// sessions re-check their commands and every site's viewers get values
/// re-read from the database (other sites re-read on their next page).
async fn resync(state: AppState) {
    state.links.poke_all_local();
    for site in state.hub.unload_all() {
        match latest_of_site(&state, site).await {
            Ok(values) => state.hub.reload(site, &values),
            Err(e) => {
                tracing::warn!(site_id = %site, error = %e, "re-reading a site's newest values failed");
                state.hub.push_snapshot(site);
            }
        }
    }
}

async fn latest_of_site(state: &AppState, site: SiteId) -> Result<Vec<NewReading>, StoreError> {
    let Some(summary) = people::find_site(&state.db, site).await? else {
        return Ok(Vec::new());
    };
    let points = catalogue::points_of_site(&state.db, summary.site).await?;
    let mut out = Vec::with_capacity(points.len());
    for p in points {
        if let Some(r) = readings::latest(&state.db, p.id).await? {
            out.push(r);
        }
    }
    Ok(out)
}
