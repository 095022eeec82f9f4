//! The live hub: fans new readings and agent online/offline changes out to
//! every browser watching a site.
//!
//! Each site has a broadcast channel of pre-serialised JSON messages (one
//! serialisation per update, however many viewers) and a small state: the
//! newest value of each point and how many agent connections are open. A
//! viewer that falls behind gets a fresh snapshot instead of a backlog.
//!
//! The hub lives in one server process. Several replicas would relay updates
//! through PostgreSQL `LISTEN/NOTIFY`; that is future work.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use protocol::Quality;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::{domain::SiteId, store::readings::NewReading};

/// Messages buffered per site before a slow viewer is resynchronised.
const CHANNEL_CAPACITY: usize = 256;

#[derive(Debug, Default)]
struct SiteState {
    latest: HashMap<i64, NewReading>,
    agent_connections: u32,
    loaded_from_db: bool,
    subscriptions: u64,
}

#[derive(Debug)]
struct SiteChannel {
    tx: broadcast::Sender<Arc<str>>,
    state: Mutex<SiteState>,
}

/// Shared by all requests; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Hub {
    sites: Arc<Mutex<HashMap<SiteId, Arc<SiteChannel>>>>,
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
    /// history: a dashboard must never jump back in time.
    pub fn publish_readings(&self, site: SiteId, values: &[NewReading]) {
        if values.is_empty() {
            return;
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
            return;
        }
        let mut out: Vec<&NewReading> = newest.values().collect();
        out.sort_by_key(|v| v.point_id.0);
        let msg = serde_json::json!({
            "type": "readings",
            "values": out.into_iter().map(wire).collect::<Vec<_>>(),
        });
        // No receivers is normal (nobody watching).
        let _ = ch.tx.send(Arc::from(msg.to_string()));
    }

    /// Fan out a control message (a point's control state, a command's
    /// status) to the site's viewers. These are events, not part of the
    /// snapshot: a page loaded later reads the same facts from the database.
    pub fn publish_event(&self, site: SiteId, msg: &serde_json::Value) {
        let ch = self.channel(site);
        // No receivers is normal (nobody watching).
        let _ = ch.tx.send(Arc::from(msg.to_string()));
    }

    /// An agent connection for the site opened.
    pub fn agent_connected(&self, site: SiteId) {
        let ch = self.channel(site);
        let became_online = {
            let mut st = lock(&ch.state);
            st.agent_connections += 1;
            st.agent_connections == 1
        };
        if became_online {
            let _ = ch
                .tx
                .send(Arc::from(r#"{"type":"agent_status","online":true}"#));
        }
    }

    /// An agent connection for the site closed.
    pub fn agent_disconnected(&self, site: SiteId) {
        let ch = self.channel(site);
        let became_offline = {
            let mut st = lock(&ch.state);
            st.agent_connections = st.agent_connections.saturating_sub(1);
            st.agent_connections == 0
        };
        if became_offline {
            let _ = ch
                .tx
                .send(Arc::from(r#"{"type":"agent_status","online":false}"#));
        }
    }

    /// Whether any agent of the site is connected to this server.
    pub fn agent_online(&self, site: SiteId) -> bool {
        lock(&self.channel(site).state).agent_connections > 0
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
            "agent_online": st.agent_connections > 0,
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
    fn sites_do_not_see_each_others_updates() {
        let hub = Hub::default();
        let (a, b) = (SiteId::new(), SiteId::new());
        let (_, mut rx_b) = hub.subscribe(b);
        hub.publish_readings(a, &[r(1, 1, 1.0)]);
        assert!(rx_b.try_recv().is_err());
    }
}
