//! What this replica knows of the others: which agents have a session where,
//! and when each replica was last heard. Pure: payloads and the time go in,
//! [`Effect`]s for the hub and the agent-link registry come out.
//!
//! Presence is per replica: each replica announces its own sessions (a
//! [`Notice::Session`] per change, and its whole list in every heartbeat),
//! and a site is online here when this replica or any live peer holds a
//! session of one of its agents. So counts are never confused between
//! replicas, a missed change is repaired by the next heartbeat, and a replica
//! that dies without saying goodbye is dropped after [`MISSED_BEATS`] of its
//! heartbeat intervals, taking its sessions with it.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use super::notice::{self, Notice, NoticeError, ReplicaId};
use crate::{
    domain::{AgentId, SiteId},
    store::readings::NewReading,
};

/// Heartbeats a peer may miss before it counts as gone.
pub const MISSED_BEATS: u32 = 3;

/// Bounds on the heartbeat interval a peer announces, so a corrupt value can
/// neither expire everybody at once nor keep a dead peer forever.
const BEAT_BOUNDS: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(3600));

/// What the receiver should do with a notice.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// `replica` now holds `n` sessions of agents of `site`.
    SiteAgents {
        /// Site.
        site: SiteId,
        /// Peer.
        replica: ReplicaId,
        /// Sessions there.
        n: u32,
    },
    /// The agents with a session at `replica` (empty: none, or forgotten).
    Agents {
        /// Peer.
        replica: ReplicaId,
        /// Its agents.
        agents: HashSet<AgentId>,
    },
    /// Newly committed readings of a site.
    Readings {
        /// Site.
        site: SiteId,
        /// Values.
        values: Vec<NewReading>,
    },
    /// A control message for a site's viewers.
    Event {
        /// Site.
        site: SiteId,
        /// The message text.
        text: String,
    },
    /// Send the site's viewers a fresh snapshot.
    Snapshot {
        /// Site.
        site: SiteId,
    },
    /// Wake the agent's local session, if any.
    Poke {
        /// Agent.
        agent: AgentId,
    },
    /// Send this replica's heartbeat now (a peer asked).
    AnnounceSelf,
}

#[derive(Debug)]
struct Assembly {
    generation: u64,
    next: u32,
    of: u32,
    sessions: HashMap<AgentId, SiteId>,
}

#[derive(Debug)]
struct Peer {
    every: Duration,
    last_heard: Instant,
    sessions: HashMap<AgentId, SiteId>,
    assembling: Option<Assembly>,
}

/// The peer table.
#[derive(Debug)]
pub struct Peers {
    me: ReplicaId,
    default_every: Duration,
    peers: HashMap<ReplicaId, Peer>,
}

fn site_counts(sessions: &HashMap<AgentId, SiteId>) -> HashMap<SiteId, u32> {
    let mut counts = HashMap::new();
    for site in sessions.values() {
        *counts.entry(*site).or_insert(0) += 1;
    }
    counts
}

impl Peers {
    /// An empty table for replica `me`; a peer whose interval is not known
    /// yet is assumed to beat every `default_every`.
    pub fn new(me: ReplicaId, default_every: Duration) -> Self {
        Self {
            me,
            default_every,
            peers: HashMap::new(),
        }
    }

    /// Handle one payload heard at `now`. Own notices only prove that the
    /// listener works: they change nothing.
    pub fn receive(&mut self, payload: &str, now: Instant) -> Result<Vec<Effect>, NoticeError> {
        let (from, notice) = notice::decode(payload)?;
        if from == self.me {
            return Ok(Vec::new());
        }
        let default_every = self.default_every;
        let peer = self.peers.entry(from).or_insert_with(|| Peer {
            every: default_every,
            last_heard: now,
            sessions: HashMap::new(),
            assembling: None,
        });
        peer.last_heard = now;
        Ok(match notice {
            Notice::Readings { s, v } => vec![Effect::Readings {
                site: s,
                values: v.into_iter().map(notice::from_wire).collect(),
            }],
            Notice::Event { s, m } => vec![Effect::Event {
                site: s,
                text: m.to_string(),
            }],
            Notice::Resync { s } => vec![Effect::Snapshot { site: s }],
            Notice::Poke { a } => vec![Effect::Poke { agent: a }],
            Notice::Sync => vec![Effect::AnnounceSelf],
            Notice::Session { a, s, on } => {
                let mut sessions = peer.sessions.clone();
                if on {
                    sessions.insert(a, s);
                } else {
                    sessions.remove(&a);
                }
                self.set_sessions(from, sessions)
            }
            Notice::Alive { ms, g, i, of, a } => {
                peer.every = Duration::from_millis(ms).clamp(BEAT_BOUNDS.0, BEAT_BOUNDS.1);
                if i == 0 {
                    peer.assembling = Some(Assembly {
                        generation: g,
                        next: 0,
                        of,
                        sessions: HashMap::new(),
                    });
                }
                let done = match &mut peer.assembling {
                    Some(asm) if asm.generation == g && asm.next == i && asm.of == of => {
                        asm.sessions.extend(a);
                        asm.next += 1;
                        (asm.next >= asm.of).then(|| std::mem::take(&mut asm.sessions))
                    }
                    // A part out of order (only after a notice was lost):
                    // wait for the next complete heartbeat.
                    _ => {
                        peer.assembling = None;
                        None
                    }
                };
                match done {
                    Some(sessions) => {
                        peer.assembling = None;
                        self.set_sessions(from, sessions)
                    }
                    None => Vec::new(),
                }
            }
            Notice::Bye => self.forget(from),
        })
    }

    /// Drop every peer not heard for [`MISSED_BEATS`] of its intervals.
    pub fn expire(&mut self, now: Instant) -> Vec<Effect> {
        let gone: Vec<ReplicaId> = self
            .peers
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_heard) > p.every * MISSED_BEATS)
            .map(|(id, _)| *id)
            .collect();
        gone.into_iter().flat_map(|id| self.forget(id)).collect()
    }

    /// After this replica's listener was away, every peer gets a fresh
    /// allowance: silence while nobody listened proves nothing.
    pub fn restart_clocks(&mut self, now: Instant) {
        for p in self.peers.values_mut() {
            p.last_heard = now;
        }
    }

    /// The peers currently known (diagnostics and tests).
    pub fn known(&self) -> usize {
        self.peers.len()
    }

    fn forget(&mut self, replica: ReplicaId) -> Vec<Effect> {
        let effects = self.set_sessions(replica, HashMap::new());
        self.peers.remove(&replica);
        effects
    }

    /// Replace a peer's sessions and report what changed.
    fn set_sessions(
        &mut self,
        replica: ReplicaId,
        sessions: HashMap<AgentId, SiteId>,
    ) -> Vec<Effect> {
        let Some(peer) = self.peers.get_mut(&replica) else {
            return Vec::new();
        };
        let (before, after) = (site_counts(&peer.sessions), site_counts(&sessions));
        let mut effects: Vec<Effect> = before
            .keys()
            .chain(after.keys())
            .collect::<HashSet<_>>()
            .into_iter()
            .filter(|site| before.get(site) != after.get(site))
            .map(|site| Effect::SiteAgents {
                site: *site,
                replica,
                n: after.get(site).copied().unwrap_or(0),
            })
            .collect();
        effects.sort_by_key(|e| match e {
            Effect::SiteAgents { site, .. } => *site,
            _ => SiteId(uuid::Uuid::nil()),
        });
        let agents_changed = peer.sessions.len() != sessions.len()
            || peer.sessions.keys().any(|a| !sessions.contains_key(a));
        if agents_changed {
            effects.push(Effect::Agents {
                replica,
                agents: sessions.keys().copied().collect(),
            });
        }
        peer.sessions = sessions;
        effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::notice::encode;

    const BEAT: Duration = Duration::from_secs(1);

    fn alive(from: ReplicaId, g: u64, i: u32, of: u32, a: &[(AgentId, SiteId)]) -> String {
        encode(
            from,
            &Notice::Alive {
                ms: 1_000,
                g,
                i,
                of,
                a: a.to_vec(),
            },
        )
    }

    fn session(from: ReplicaId, a: AgentId, s: SiteId, on: bool) -> String {
        encode(from, &Notice::Session { a, s, on })
    }

    #[test]
    fn own_notices_change_nothing() {
        let me = ReplicaId::new();
        let mut peers = Peers::new(me, BEAT);
        let fx = peers
            .receive(
                &session(me, AgentId::new(), SiteId::new(), true),
                Instant::now(),
            )
            .unwrap();
        assert!(fx.is_empty());
        assert_eq!(peers.known(), 0);
    }

    #[test]
    fn sessions_of_two_peers_for_one_site_are_counted_apart() {
        let mut peers = Peers::new(ReplicaId::new(), BEAT);
        let (a, b) = (ReplicaId::new(), ReplicaId::new());
        let site = SiteId::new();
        let (x, y) = (AgentId::new(), AgentId::new());
        let now = Instant::now();
        let fx = peers.receive(&session(a, x, site, true), now).unwrap();
        assert_eq!(
            fx[0],
            Effect::SiteAgents {
                site,
                replica: a,
                n: 1
            }
        );
        let fx = peers.receive(&session(b, y, site, true), now).unwrap();
        assert_eq!(
            fx[0],
            Effect::SiteAgents {
                site,
                replica: b,
                n: 1
            }
        );
        // Replica a saying its session ended leaves b's alone.
        let fx = peers.receive(&session(a, x, site, false), now).unwrap();
        assert_eq!(
            fx[0],
            Effect::SiteAgents {
                site,
                replica: a,
                n: 0
            }
        );
        assert_eq!(
            fx[1],
            Effect::Agents {
                replica: a,
                agents: HashSet::new()
            }
        );
        // A repeated announcement changes nothing.
        let fx = peers.receive(&session(b, y, site, true), now).unwrap();
        assert!(fx.is_empty(), "{fx:?}");
    }

    #[test]
    fn a_heartbeat_replaces_what_was_known_only_once_all_its_parts_arrived() {
        let mut peers = Peers::new(ReplicaId::new(), BEAT);
        let r = ReplicaId::new();
        let (s1, s2) = (SiteId::new(), SiteId::new());
        let (x, y, z) = (AgentId::new(), AgentId::new(), AgentId::new());
        let now = Instant::now();
        peers.receive(&session(r, z, s2, true), now).unwrap();
        assert!(
            peers
                .receive(&alive(r, 5, 0, 2, &[(x, s1)]), now)
                .unwrap()
                .is_empty()
        );
        let fx = peers.receive(&alive(r, 5, 1, 2, &[(y, s1)]), now).unwrap();
        assert!(fx.contains(&Effect::SiteAgents {
            site: s1,
            replica: r,
            n: 2
        }));
        assert!(
            fx.contains(&Effect::SiteAgents {
                site: s2,
                replica: r,
                n: 0
            }),
            "the missed goodbye of z is repaired"
        );
        assert!(fx.contains(&Effect::Agents {
            replica: r,
            agents: HashSet::from([x, y])
        }));
    }

    #[test]
    fn a_heartbeat_with_a_missing_part_is_ignored() {
        let mut peers = Peers::new(ReplicaId::new(), BEAT);
        let r = ReplicaId::new();
        let now = Instant::now();
        let s = SiteId::new();
        peers
            .receive(&alive(r, 1, 0, 3, &[(AgentId::new(), s)]), now)
            .unwrap();
        assert!(
            peers
                .receive(&alive(r, 1, 2, 3, &[(AgentId::new(), s)]), now)
                .unwrap()
                .is_empty()
        );
        let fx = peers.receive(&alive(r, 2, 0, 1, &[]), now).unwrap();
        assert!(
            fx.is_empty(),
            "nothing was ever applied, so nothing changes: {fx:?}"
        );
    }

    #[test]
    fn a_silent_peer_expires_with_its_sessions_and_a_goodbye_is_immediate() {
        let mut peers = Peers::new(ReplicaId::new(), BEAT);
        let (quiet, polite) = (ReplicaId::new(), ReplicaId::new());
        let (s1, s2) = (SiteId::new(), SiteId::new());
        let t0 = Instant::now();
        peers
            .receive(&alive(quiet, 1, 0, 1, &[(AgentId::new(), s1)]), t0)
            .unwrap();
        peers
            .receive(&alive(polite, 1, 0, 1, &[(AgentId::new(), s2)]), t0)
            .unwrap();
        assert!(peers.expire(t0 + BEAT * MISSED_BEATS).is_empty(), "not yet");
        let fx = peers
            .receive(&encode(polite, &Notice::Bye), t0 + BEAT)
            .unwrap();
        assert_eq!(
            fx[0],
            Effect::SiteAgents {
                site: s2,
                replica: polite,
                n: 0
            }
        );
        let fx = peers.expire(t0 + BEAT * MISSED_BEATS + Duration::from_millis(1));
        assert_eq!(
            fx[0],
            Effect::SiteAgents {
                site: s1,
                replica: quiet,
                n: 0
            }
        );
        assert_eq!(peers.known(), 0);
    }

    #[test]
    fn a_peer_is_judged_by_its_own_announced_interval() {
        let mut peers = Peers::new(ReplicaId::new(), Duration::from_millis(100));
        let slow = ReplicaId::new();
        let t0 = Instant::now();
        peers.receive(&alive(slow, 1, 0, 1, &[]), t0).unwrap();
        assert!(peers.expire(t0 + Duration::from_secs(2)).is_empty());
        assert_eq!(peers.known(), 1);
    }

    #[test]
    fn clocks_restart_after_this_replica_was_not_listening() {
        let mut peers = Peers::new(ReplicaId::new(), BEAT);
        let r = ReplicaId::new();
        let t0 = Instant::now();
        peers
            .receive(&alive(r, 1, 0, 1, &[(AgentId::new(), SiteId::new())]), t0)
            .unwrap();
        let back = t0 + BEAT * 10;
        peers.restart_clocks(back);
        assert!(peers.expire(back + BEAT).is_empty());
    }

    #[test]
    fn data_notices_become_effects() {
        let mut peers = Peers::new(ReplicaId::new(), BEAT);
        let r = ReplicaId::new();
        let (site, agent) = (SiteId::new(), AgentId::new());
        let now = Instant::now();
        let fx = |n: Notice, p: &mut Peers| p.receive(&encode(r, &n), now).unwrap();
        assert_eq!(
            fx(Notice::Poke { a: agent }, &mut peers),
            vec![Effect::Poke { agent }]
        );
        assert_eq!(fx(Notice::Sync, &mut peers), vec![Effect::AnnounceSelf]);
        assert_eq!(
            fx(Notice::Resync { s: site }, &mut peers),
            vec![Effect::Snapshot { site }]
        );
        let ev = fx(
            Notice::Event {
                s: site,
                m: serde_json::json!({"type": "command"}),
            },
            &mut peers,
        );
        assert_eq!(
            ev,
            vec![Effect::Event {
                site,
                text: r#"{"type":"command"}"#.into()
            }]
        );
        let rd = fx(
            Notice::Readings {
                s: site,
                v: vec![(7, 1_000, 2.5, 1)],
            },
            &mut peers,
        );
        match &rd[0] {
            Effect::Readings { site: s, values } => {
                assert_eq!(*s, site);
                assert_eq!(
                    (values[0].point_id.0, values[0].ts_ms, values[0].value),
                    (7, 1_000, 2.5)
                );
                assert_eq!(values[0].quality, protocol::Quality::Stale);
            }
            other => panic!("{other:?}"),
        }
    }
}
