//! The live hub: fans new readings and agent online/offline changes out to
//! every browser watching a site.
//!
//! Each site has a broadcast channel of pre-serialised JSON messages (one
//! serialisation per update, however many viewers) and a small state: the
//! newest value of each point and how many agent connections are open. A
//! viewer that falls behind gets a fresh snapshot instead of a backlog.
//!
//! The hub lives in one server process. With several replicas on one
//! PostgreSQL, a hub built with [`Hub::relayed`] also hands what it publishes
//! to the [`crate::relay`], which applies the other replicas' readings,
//! events and agent sessions here (`apply_remote_readings`, `fan_out`,
//! `set_remote_agents`): a site is online when an agent of it has a session
//! on this replica or on any live peer, each counted apart. On SQLite there
//! is no relay and nothing else changes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use protocol::Quality;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::{
    domain::SiteId,
    relay::{Relay, ReplicaId},
    store::readings::NewReading,
};

/// Messages buffered per site before a slow viewer is resynchronised.
const CHANNEL_CAPACITY: usize = 256;

#[derive(Debug, Default)]
struct SiteState {
    latest: HashMap<i64, NewReading>,
    /// Agent connections of the site on this replica.
    agent_connections: u32,
    /// Agent sessions of the site on other replicas, per replica.
    remote_agents: HashMap<ReplicaId, u32>,
    loaded_from_db: bool,
    subscriptions: u64,
}

impl SiteState {
    fn online(&self) -> bool {
        self.agent_connections > 0 || self.remote_agents.values().any(|n| *n > 0)
    }
}

const ONLINE: &str = r#"{"type":"agent_status","online":true}"#;
const OFFLINE: &str = r#"{"type":"agent_status","online":false}"#;

#[derive(Debug)]
struct SiteChannel {
    tx: broadcast::Sender<Arc<str>>,
    state: Mutex<SiteState>,
}

/// Shared by all requests; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Hub {
    sites: Arc<Mutex<HashMap<SiteId, Arc<SiteChannel>>>>,
    relay: Option<Relay>,
}

#[derive(Serialize)]
struct WireValue {
    point_id: String,
    value: f64,
    #[serde(with = "time::serde::rfc3339")]
    ts: time::OffsetDateTime,
    quality: Quality,
}

fn wire(r: &NewReading) -> WireValue {
    WireValue {
        point_id: r.point_id.0.to_string(),
        value: r.value,
        ts: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.ts_ms) * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        quality: r.quality,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// A hub whose readings and control events also go to the other
    /// replicas through `relay`.
    pub fn relayed(relay: Relay) -> Self {
        Self {
            sites: Arc::default(),
            relay: Some(relay),
        }
    }

    fn channel(&self, site: SiteId) -> Arc<SiteChannel> {
        lock(&self.sites)
            .entry(site)
            .or_insert_with(|| {
                Arc::new(SiteChannel {
                    tx: broadcast::channel(CHANNEL_CAPACITY).0,
                    state: Mutex::new(SiteState::default()),
                })
            })
            .clone()
    }

    /// True once [`Hub::load`] ran for the site since this process started.
    pub fn is_loaded(&self, site: SiteId) -> bool {
        lock(&self.channel(site).state).loaded_from_db
    }

    /// Fill the newest values from the database (after a server restart).
    /// Values already newer in memory are kept.
    pub fn load(&self, site: SiteId, values: &[NewReading]) {
        let ch = self.channel(site);
        let mut st = lock(&ch.state);
        for v in values {
            let _ = merge(&mut st.latest, v);
        }
        st.loaded_from_db = true;
    }

    /// Record newly stored readings and fan out those that are the newest of
    /// their point. Older ones (a backlog draining after an outage) only fill
    /// history: a dashboard must never jump back in time. The fanned-out
    /// values also go to the other replicas, if any.
    pub fn publish_readings(&self, site: SiteId, values: &[NewReading]) {
        let sent = self.merge_and_fan_out(site, values);
        if let Some(relay) = &self.relay
            && !sent.is_empty()
        {
            relay.readings(site, &sent);
        }
    }

    /// Readings another replica committed: like [`Hub::publish_readings`],
    /// without relaying them back.
    pub fn apply_remote_readings(&self, site: SiteId, values: &[NewReading]) {
        self.merge_and_fan_out(site, values);
    }

    /// Merge, fan out the values that are news; returns them.
    fn merge_and_fan_out(&self, site: SiteId, values: &[NewReading]) -> Vec<NewReading> {
        if values.is_empty() {
            return Vec::new();
        }
        let ch = self.channel(site);
        let fresh: Vec<NewReading> = {
            let mut st = lock(&ch.state);
            values
                .iter()
                .filter(|v| merge(&mut st.latest, v))
                .copied()
                .collect()
        };
        // Within one batch a point may appear several times; send only its newest.
        let mut newest: HashMap<i64, NewReading> = HashMap::new();
        for v in fresh {
            merge(&mut newest, &v);
        }
        if newest.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<NewReading> = newest.into_values().collect();
        out.sort_by_key(|v| v.point_id.0);
        let msg = serde_json::json!({
            "type": "readings",
            "values": out.iter().map(wire).collect::<Vec<_>>(),
        });
        // No receivers is normal (nobody watching).
        let _ = ch.tx.send(Arc::from(msg.to_string()));
        out
    }

    /// Fan out a control message (a point's control state, a command's
    /// status) to the site's viewers here and on the other replicas. These
    /// are events, not part of the snapshot: a page loaded later reads the
    /// same facts from the database.
    pub fn publish_event(&self, site: SiteId, msg: &serde_json::Value) {
        self.fan_out(site, Arc::from(msg.to_string()));
        if let Some(relay) = &self.relay {
            relay.event(site, msg);
        }
    }

    /// Send a ready message to this replica's viewers of the site only.
    pub fn fan_out(&self, site: SiteId, msg: Arc<str>) {
        // No receivers is normal (nobody watching).
        let _ = self.channel(site).tx.send(msg);
    }

    /// Change the site's presence and tell its viewers when it went online
    /// or offline.
    fn update_presence(&self, site: SiteId, change: impl FnOnce(&mut SiteState)) {
        let ch = self.channel(site);
        let (before, after) = {
            let mut st = lock(&ch.state);
            let before = st.online();
            change(&mut st);
            (before, st.online())
        };
        if before != after {
            let _ = ch.tx.send(Arc::from(if after { ONLINE } else { OFFLINE }));
        }
    }

    /// An agent connection for the site opened.
    pub fn agent_connected(&self, site: SiteId) {
        self.update_presence(site, |st| st.agent_connections += 1);
    }

    /// An agent connection for the site closed.
    pub fn agent_disconnected(&self, site: SiteId) {
        self.update_presence(site, |st| {
            st.agent_connections = st.agent_connections.saturating_sub(1);
        });
    }

    /// Replica `replica` now holds `n` sessions of the site's agents.
    pub fn set_remote_agents(&self, site: SiteId, replica: ReplicaId, n: u32) {
        self.update_presence(site, |st| {
            if n == 0 {
                st.remote_agents.remove(&replica);
            } else {
                st.remote_agents.insert(replica, n);
            }
        });
    }

    /// Mark every site as needing a fresh read from the database (after the
    /// relay missed notices) and return those somebody is watching now.
    pub fn unload_all(&self) -> Vec<SiteId> {
        let sites: Vec<(SiteId, Arc<SiteChannel>)> = lock(&self.sites)
            .iter()
            .map(|(id, ch)| (*id, ch.clone()))
            .collect();
        sites
            .into_iter()
            .filter(|(_, ch)| {
                lock(&ch.state).loaded_from_db = false;
                ch.tx.receiver_count() > 0
            })
            .map(|(id, _)| id)
            .collect()
    }

    /// [`Hub::load`] values re-read from the database, then send the site's
    /// viewers a fresh snapshot.
    pub fn reload(&self, site: SiteId, values: &[NewReading]) {
        self.load(site, values);
        self.push_snapshot(site);
    }

    /// Send the site's viewers here a fresh snapshot (the Controls page
    /// re-reads itself on one).
    pub fn push_snapshot(&self, site: SiteId) {
        let snapshot = self.snapshot(site);
        self.fan_out(site, Arc::from(snapshot));
    }

    /// Whether any agent of the site is connected, to this replica or to
    /// another one that is alive.
    pub fn agent_online(&self, site: SiteId) -> bool {
        lock(&self.channel(site).state).online()
    }

    /// The newest value per point and the newest reading time.
    pub fn latest(&self, site: SiteId) -> (Vec<NewReading>, Option<i64>) {
        let ch = self.channel(site);
        let st = lock(&ch.state);
        let vals: Vec<NewReading> = st.latest.values().copied().collect();
        let newest = vals.iter().map(|v| v.ts_ms).max();
        (vals, newest)
    }

    /// A snapshot message and a receiver for what follows it. Subscribing
    /// before reading the state means no update can fall between the two.
    pub fn subscribe(&self, site: SiteId) -> (String, broadcast::Receiver<Arc<str>>) {
        let ch = self.channel(site);
        let rx = ch.tx.subscribe();
        lock(&ch.state).subscriptions += 1;
        (self.snapshot(site), rx)
    }

    /// How many live feeds of the site were opened since this process
    /// started (a page that reloaded counts again). Tests wait on it to know
    /// a freshly loaded page is listening.
    pub fn subscriptions(&self, site: SiteId) -> u64 {
        lock(&self.channel(site).state).subscriptions
    }

    /// The full current state as one `snapshot` message.
    pub fn snapshot(&self, site: SiteId) -> String {
        let ch = self.channel(site);
        let st = lock(&ch.state);
        let values: Vec<WireValue> = st.latest.values().map(wire).collect();
        let newest = st.latest.values().map(|v| v.ts_ms).max().map(|ms| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
        });
        serde_json::json!({
            "type": "snapshot",
            "agent_online": st.online(),
            "last_reading_at": newest.flatten(),
            "values": values,
        })
        .to_string()
    }
}

/// Keep `v` if it is at least as new as what is held; true when kept.
fn merge(latest: &mut HashMap<i64, NewReading>, v: &NewReading) -> bool {
    match latest.get(&v.point_id.0) {
        Some(old) if old.ts_ms > v.ts_ms => false,
        _ => {
            latest.insert(v.point_id.0, *v);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PointId;

    fn r(point: i64, ts_ms: i64, value: f64) -> NewReading {
        NewReading {
            point_id: PointId(point),
            ts_ms,
            value,
            quality: Quality::Good,
        }
    }

    #[test]
    fn every_subscriber_receives_each_update() {
        let hub = Hub::default();
        let site = SiteId::new();
        let (_, mut a) = hub.subscribe(site);
        let (_, mut b) = hub.subscribe(site);
        hub.publish_readings(site, &[r(1, 1000, 21.5)]);
        for rx in [&mut a, &mut b] {
            let msg = rx.try_recv().unwrap();
            assert!(
                msg.contains(r#""type":"readings""#) && msg.contains("21.5"),
                "{msg}"
            );
        }
    }

    #[test]
    fn an_older_value_never_replaces_a_newer_one() {
        let hub = Hub::default();
        let site = SiteId::new();
        hub.publish_readings(site, &[r(1, 2000, 2.0)]);
        hub.load(site, &[r(1, 1000, 1.0)]);
        let (vals, newest) = hub.latest(site);
        assert_eq!(vals[0].value, 2.0);
        assert_eq!(newest, Some(2000));
    }

    #[test]
    fn a_draining_backlog_is_not_broadcast_as_live_values() {
        let hub = Hub::default();
        let site = SiteId::new();
        hub.publish_readings(site, &[r(1, 5000, 5.0)]);
        let (_, mut rx) = hub.subscribe(site);
        hub.publish_readings(site, &[r(1, 1000, 1.0), r(1, 2000, 2.0)]);
        assert!(rx.try_recv().is_err(), "old values must not reach viewers");
        hub.publish_readings(site, &[r(1, 6000, 6.0), r(1, 7000, 7.0), r(2, 100, 0.5)]);
        let msg = rx.try_recv().unwrap();
        assert!(
            msg.contains("7.0") && !msg.contains("6.0") && msg.contains("0.5"),
            "{msg}"
        );
    }

    #[test]
    fn agent_status_is_announced_on_first_connect_and_last_disconnect_only() {
        let hub = Hub::default();
        let site = SiteId::new();
        let (snap, mut rx) = hub.subscribe(site);
        assert!(snap.contains(r#""agent_online":false"#));
        hub.agent_connected(site);
        hub.agent_connected(site);
        hub.agent_disconnected(site);
        assert!(hub.agent_online(site));
        hub.agent_disconnected(site);
        assert!(!hub.agent_online(site));
        assert!(rx.try_recv().unwrap().contains("true"));
        assert!(rx.try_recv().unwrap().contains("false"));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn control_events_reach_the_sites_viewers_only() {
        let hub = Hub::default();
        let (a, b) = (SiteId::new(), SiteId::new());
        let (_, mut rx_a) = hub.subscribe(a);
        let (_, mut rx_b) = hub.subscribe(b);
        hub.publish_event(
            a,
            &serde_json::json!({"type": "control_state", "control": "x/y"}),
        );
        assert!(rx_a.try_recv().unwrap().contains("control_state"));
        assert!(rx_b.try_recv().is_err());
    }

    #[test]
    fn a_site_stays_online_while_any_replica_holds_a_session_of_it() {
        let hub = Hub::default();
        let site = SiteId::new();
        let (a, b) = (ReplicaId::new(), ReplicaId::new());
        let (_, mut rx) = hub.subscribe(site);
        hub.set_remote_agents(site, a, 1);
        hub.agent_connected(site);
        hub.set_remote_agents(site, b, 2);
        hub.set_remote_agents(site, a, 0);
        hub.agent_disconnected(site);
        assert!(hub.agent_online(site), "replica b still holds two");
        assert!(hub.snapshot(site).contains(r#""agent_online":true"#));
        hub.set_remote_agents(site, b, 0);
        assert!(!hub.agent_online(site));
        assert_eq!(&*rx.try_recv().unwrap(), ONLINE);
        assert_eq!(&*rx.try_recv().unwrap(), OFFLINE);
        assert!(rx.try_recv().is_err(), "one message per change of state");
    }

    #[test]
    fn remote_readings_reach_viewers_but_never_replace_newer_values() {
        let hub = Hub::default();
        let site = SiteId::new();
        hub.publish_readings(site, &[r(1, 5000, 5.0)]);
        let (_, mut rx) = hub.subscribe(site);
        hub.apply_remote_readings(site, &[r(1, 4000, 4.0)]);
        assert!(rx.try_recv().is_err());
        hub.apply_remote_readings(site, &[r(1, 6000, 6.0)]);
        assert!(rx.try_recv().unwrap().contains("6.0"));
        assert_eq!(hub.latest(site).1, Some(6000));
    }

    #[test]
    fn after_a_gap_watched_sites_are_reloaded_with_a_snapshot_and_others_later() {
        let hub = Hub::default();
        let (watched, idle) = (SiteId::new(), SiteId::new());
        hub.load(watched, &[]);
        hub.load(idle, &[]);
        let (_, mut rx) = hub.subscribe(watched);
        assert_eq!(hub.unload_all(), vec![watched]);
        assert!(!hub.is_loaded(watched) && !hub.is_loaded(idle));
        hub.reload(watched, &[r(1, 1000, 1.5)]);
        assert!(hub.is_loaded(watched));
        let snap = rx.try_recv().unwrap();
        assert!(
            snap.contains(r#""type":"snapshot""#) && snap.contains("1.5"),
            "{snap}"
        );
    }

    #[test]
    fn sites_do_not_see_each_others_updates() {
        let hub = Hub::default();
        let (a, b) = (SiteId::new(), SiteId::new());
        let (_, mut rx_b) = hub.subscribe(b);
        hub.publish_readings(a, &[r(1, 1, 1.0)]);
        assert!(rx_b.try_recv().is_err());
    }
}
