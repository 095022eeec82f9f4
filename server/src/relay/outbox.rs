//! What this replica still has to tell the others, coalesced.
//!
//! Request handlers and agent sessions record changes here without waiting
//! (a mutex held for a few map inserts); the relay's sender drains it. Pending
//! changes are kept as *state*, not as a queue of messages: the newest value
//! per point per site, the set of agents whose session changed, the set of
//! agents to poke. So a burst (a site's agent flushing its buffer after an
//! outage, thousands of batches) costs one notice per site per flush, and a
//! database outage costs bounded memory: the pending state grows with the
//! number of points, not with time. Only control events are a queue (their
//! order matters to a viewer); past [`MAX_EVENTS`] a site's events are
//! replaced by one resync of that site.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use super::notice::{self, Notice, ReplicaId};
use crate::{
    domain::{AgentId, SiteId},
    store::readings::NewReading,
};

/// Control events kept while the database does not take notices.
pub const MAX_EVENTS: usize = 1_024;

/// Changes not yet announced.
#[derive(Debug, Default)]
pub struct Pending {
    readings: HashMap<SiteId, HashMap<i64, NewReading>>,
    events: VecDeque<(SiteId, serde_json::Value)>,
    resync: BTreeSet<SiteId>,
    sessions: BTreeMap<AgentId, SiteId>,
    pokes: BTreeSet<AgentId>,
    /// Ask every other replica for a heartbeat.
    pub sync: bool,
    /// Send this replica's heartbeat.
    pub heartbeat: bool,
}

impl Pending {
    /// Nothing to send.
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
            && self.events.is_empty()
            && self.resync.is_empty()
            && self.sessions.is_empty()
            && self.pokes.is_empty()
            && !self.sync
            && !self.heartbeat
    }

    /// Newly committed newest values of a site's points.
    pub fn add_readings<'a>(
        &mut self,
        site: SiteId,
        values: impl IntoIterator<Item = &'a NewReading>,
    ) {
        let held = self.readings.entry(site).or_default();
        for v in values {
            keep_newer(held, *v);
        }
    }

    /// A control event for a site's viewers.
    pub fn add_event(&mut self, site: SiteId, msg: &serde_json::Value) {
        if self.events.len() >= MAX_EVENTS {
            self.resync.insert(site);
        } else {
            self.events.push_back((site, msg.clone()));
        }
    }

    /// Agent `agent` of `site` opened or closed a session here.
    pub fn session_changed(&mut self, agent: AgentId, site: SiteId) {
        self.sessions.insert(agent, site);
    }

    /// A command for `agent` may be waiting.
    pub fn poke(&mut self, agent: AgentId) {
        self.pokes.insert(agent);
    }

    /// Put back what a failed send took out; `self` holds what came in
    /// meanwhile, which is newer, so `older`'s events go first.
    pub fn put_back(&mut self, older: Pending) {
        for (site, values) in older.readings {
            let held = self.readings.entry(site).or_default();
            for v in values.into_values() {
                keep_newer(held, v);
            }
        }
        let newer = std::mem::take(&mut self.events);
        self.events = older.events;
        for (site, msg) in newer {
            self.add_event(site, &msg);
        }
        self.resync.extend(older.resync);
        for (agent, site) in older.sessions {
            self.sessions.entry(agent).or_insert(site);
        }
        self.pokes.extend(older.pokes);
        self.sync |= older.sync;
        self.heartbeat |= older.heartbeat;
    }

    /// The payloads announcing all of this, in the order they should be
    /// delivered: a sync request, session changes and the heartbeat first
    /// (presence), then events, resyncs and readings, and pokes last.
    /// `local` is this replica's current sessions (what session changes and
    /// heartbeats report); `generation` numbers the heartbeat.
    pub fn payloads(
        &self,
        me: ReplicaId,
        local: &HashMap<AgentId, SiteId>,
        every: std::time::Duration,
        generation: u64,
    ) -> Vec<String> {
        let mut out = Vec::new();
        if self.sync {
            out.push(notice::encode(me, &Notice::Sync));
        }
        for (agent, site) in &self.sessions {
            let on = local.contains_key(agent);
            let site = local.get(agent).copied().unwrap_or(*site);
            out.push(notice::encode(
                me,
                &Notice::Session {
                    a: *agent,
                    s: site,
                    on,
                },
            ));
        }
        if self.heartbeat {
            out.extend(notice::heartbeat(me, every, generation, local));
        }
        for (site, msg) in &self.events {
            out.push(notice::event(me, *site, msg));
        }
        for site in &self.resync {
            out.push(notice::encode(me, &Notice::Resync { s: *site }));
        }
        for (site, values) in &self.readings {
            out.extend(notice::readings(me, *site, values));
        }
        for agent in &self.pokes {
            out.push(notice::encode(me, &Notice::Poke { a: *agent }));
        }
        out
    }
}

fn keep_newer(held: &mut HashMap<i64, NewReading>, v: NewReading) {
    match held.get(&v.point_id.0) {
        Some(old) if old.ts_ms > v.ts_ms => {}
        _ => {
            held.insert(v.point_id.0, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PointId;
    use protocol::Quality;

    fn r(point: i64, ts_ms: i64, value: f64) -> NewReading {
        NewReading {
            point_id: PointId(point),
            ts_ms,
            value,
            quality: Quality::Good,
        }
    }

    fn decoded(p: &Pending, local: &HashMap<AgentId, SiteId>) -> Vec<Notice> {
        p.payloads(
            ReplicaId::new(),
            local,
            std::time::Duration::from_secs(1),
            1,
        )
        .iter()
        .map(|s| notice::decode(s).unwrap().1)
        .collect()
    }

    #[test]
    fn a_burst_of_batches_becomes_one_notice_with_the_newest_value_per_point() {
        let site = SiteId::new();
        let mut p = Pending::default();
        for i in 0..10_000 {
            p.add_readings(site, &[r(1, i, i as f64), r(2, 10_000 - i, 0.5)]);
        }
        assert_eq!(
            decoded(&p, &HashMap::new()),
            vec![Notice::Readings {
                s: site,
                v: vec![(1, 9_999, 9_999.0, 0), (2, 10_000, 0.5, 0)]
            }]
        );
    }

    #[test]
    fn a_session_change_reports_the_state_at_sending_time() {
        let (agent, site) = (AgentId::new(), SiteId::new());
        let mut p = Pending::default();
        p.session_changed(agent, site);
        let off = decoded(&p, &HashMap::new());
        assert_eq!(
            off,
            vec![Notice::Session {
                a: agent,
                s: site,
                on: false
            }]
        );
        let on = decoded(&p, &HashMap::from([(agent, site)]));
        assert_eq!(
            on,
            vec![Notice::Session {
                a: agent,
                s: site,
                on: true
            }]
        );
    }

    #[test]
    fn what_a_failed_send_took_goes_back_before_what_came_meanwhile() {
        let site = SiteId::new();
        let agent = AgentId::new();
        let mut older = Pending::default();
        older.add_event(site, &serde_json::json!({"n": 1}));
        older.add_readings(site, &[r(1, 5, 5.0)]);
        older.poke(agent);
        older.heartbeat = true;
        let mut now = Pending::default();
        now.add_event(site, &serde_json::json!({"n": 2}));
        now.add_readings(site, &[r(1, 3, 3.0)]);
        now.put_back(older);
        let events: Vec<_> = now.events.iter().map(|(_, m)| m["n"].clone()).collect();
        assert_eq!(events, vec![serde_json::json!(1), serde_json::json!(2)]);
        assert_eq!(now.readings[&site][&1].value, 5.0, "the newer reading wins");
        assert!(now.pokes.contains(&agent) && now.heartbeat);
    }

    #[test]
    fn too_many_waiting_events_turn_into_one_resync_of_the_site() {
        let (a, b) = (SiteId::new(), SiteId::new());
        let mut p = Pending::default();
        for _ in 0..MAX_EVENTS {
            p.add_event(a, &serde_json::json!({}));
        }
        p.add_event(b, &serde_json::json!({}));
        p.add_event(b, &serde_json::json!({}));
        let notices = decoded(&p, &HashMap::new());
        assert_eq!(notices.len(), MAX_EVENTS + 1);
        assert_eq!(notices.last(), Some(&Notice::Resync { s: b }));
    }

    #[test]
    fn pokes_come_after_everything_else() {
        let mut p = Pending::default();
        let site = SiteId::new();
        p.poke(AgentId::new());
        p.add_event(site, &serde_json::json!({"type": "command"}));
        p.sync = true;
        let notices = decoded(&p, &HashMap::new());
        assert!(matches!(notices.first(), Some(Notice::Sync)));
        assert!(matches!(notices.last(), Some(Notice::Poke { .. })));
        assert!(!p.is_empty() && Pending::default().is_empty());
    }
}
