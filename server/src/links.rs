//! Which agents have a live session on this server, and a way to wake a
//! session up when a command for its agent is waiting.
//!
//! Commands are not pushed through this registry; they are rows in the
//! `commands` table. A session delivers every undelivered, unexpired command
//! of its agent right after its hello and again whenever it is *poked*. A
//! request handler stores the command first and pokes second, and a session
//! registers first and reads second, so a command is never stranded between
//! the two: either the session's read sees it or the poke reaches the
//! session. Claiming a row before sending it (see
//! `store::control::claim_command`) keeps two sessions of one agent from both
//! sending it.
//!
//! The registry lives in one server process, like the [`crate::hub::Hub`].
//! With several replicas on one PostgreSQL, a registry built with
//! [`AgentLinks::relayed`] announces its sessions and pokes through the
//! [`crate::relay`]: a command stored on one replica wakes the agent's session
//! on another at once, and [`AgentLinks::is_connected`] also knows the agents
//! connected elsewhere. A poke that is lost on the way (the relay's listener
//! was reconnecting) is covered twice: every (re)connect of the listener
//! pokes all local sessions, and each session re-reads its commands on every
//! ping anyway (`routes::agent_ws`).

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::Notify;

use crate::{
    domain::{AgentId, SiteId},
    relay::{Relay, ReplicaId},
};

#[derive(Debug)]
struct Entry {
    session: u64,
    site: SiteId,
    wake: Arc<Notify>,
}

/// The registry; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct AgentLinks {
    sessions: Arc<Mutex<HashMap<AgentId, Entry>>>,
    next_session: Arc<AtomicU64>,
    /// Agents with a session on another replica, per replica.
    remote: Arc<Mutex<HashMap<ReplicaId, HashSet<AgentId>>>>,
    relay: Option<Relay>,
}

/// A session's registration; the session awaits [`LinkHandle::woken`].
#[derive(Debug)]
pub struct LinkHandle {
    agent: AgentId,
    site: SiteId,
    session: u64,
    wake: Arc<Notify>,
}

impl LinkHandle {
    /// Resolves when a command for this agent may be waiting. A poke that
    /// arrives while nobody awaits is kept, so none is lost between awaits.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// The notifier itself, for a `select!` that must not borrow the handle.
    pub fn notifier(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AgentLinks {
    /// A registry that announces its sessions and pokes to the other
    /// replicas through `relay`.
    pub fn relayed(relay: Relay) -> Self {
        Self {
            relay: Some(relay),
            ..Self::default()
        }
    }

    /// Register a session of `agent` of `site` (after its hello). A newer
    /// session of the same agent replaces an older one that has not noticed
    /// it is gone yet.
    pub fn register(&self, agent: AgentId, site: SiteId) -> LinkHandle {
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let wake = Arc::new(Notify::new());
        lock(&self.sessions).insert(
            agent,
            Entry {
                session,
                site,
                wake: wake.clone(),
            },
        );
        if let Some(relay) = &self.relay {
            relay.session_changed(agent, site);
        }
        LinkHandle {
            agent,
            site,
            session,
            wake,
        }
    }

    /// Remove a session's registration (only if it is still the current one).
    pub fn unregister(&self, handle: &LinkHandle) {
        let removed = {
            let mut map = lock(&self.sessions);
            let current = map
                .get(&handle.agent)
                .is_some_and(|e| e.session == handle.session);
            if current {
                map.remove(&handle.agent);
            }
            current
        };
        if removed && let Some(relay) = &self.relay {
            relay.session_changed(handle.agent, handle.site);
        }
    }

    /// Wake the agent's session, wherever it is; true when it has one here
    /// or on another replica.
    pub fn poke(&self, agent: AgentId) -> bool {
        let here = self.poke_local(agent);
        // Always relayed, even with a session here: after a reconnect to
        // another replica, the one here may be a half-open leftover.
        if let Some(relay) = &self.relay {
            relay.poke(agent);
        }
        here || self.is_remote(agent)
    }

    /// Wake the agent's session on this replica, if it has one; true when it has.
    pub fn poke_local(&self, agent: AgentId) -> bool {
        match lock(&self.sessions).get(&agent) {
            Some(e) => {
                e.wake.notify_one();
                true
            }
            None => false,
        }
    }

    /// Wake every session on this replica (each re-checks its commands).
    pub fn poke_all_local(&self) {
        for e in lock(&self.sessions).values() {
            e.wake.notify_one();
        }
    }

    /// Whether the agent has a session on this replica or another one.
    pub fn is_connected(&self, agent: AgentId) -> bool {
        lock(&self.sessions).contains_key(&agent) || self.is_remote(agent)
    }

    fn is_remote(&self, agent: AgentId) -> bool {
        lock(&self.remote).values().any(|a| a.contains(&agent))
    }

    /// The agents with a session on this replica, and their sites.
    pub fn local_sessions(&self) -> HashMap<AgentId, SiteId> {
        lock(&self.sessions)
            .iter()
            .map(|(agent, e)| (*agent, e.site))
            .collect()
    }

    /// Replica `replica` now holds sessions of exactly `agents` (empty: it
    /// holds none, or it is gone).
    pub fn set_remote(&self, replica: ReplicaId, agents: HashSet<AgentId>) {
        let mut remote = lock(&self.remote);
        if agents.is_empty() {
            remote.remove(&replica);
        } else {
            remote.insert(replica, agents);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_poke_before_the_session_waits_is_not_lost() {
        let links = AgentLinks::default();
        let agent = AgentId::new();
        assert!(!links.poke(agent), "no session yet");
        let h = links.register(agent, SiteId::new());
        assert!(links.poke(agent));
        tokio::time::timeout(std::time::Duration::from_secs(5), h.woken())
            .await
            .expect("the stored poke wakes the session");
    }

    #[test]
    fn an_old_session_ending_does_not_remove_its_replacement() {
        let links = AgentLinks::default();
        let agent = AgentId::new();
        let site = SiteId::new();
        let old = links.register(agent, site);
        let new = links.register(agent, site);
        links.unregister(&old);
        assert!(links.is_connected(agent));
        links.unregister(&new);
        assert!(!links.is_connected(agent));
    }

    #[test]
    fn agents_on_other_replicas_count_as_connected_until_their_replica_says_otherwise() {
        let links = AgentLinks::default();
        let (agent, other) = (AgentId::new(), AgentId::new());
        let replica = ReplicaId::new();
        links.set_remote(replica, HashSet::from([agent]));
        assert!(links.is_connected(agent) && !links.is_connected(other));
        assert!(links.poke(agent), "known to have a session elsewhere");
        assert!(!links.poke_local(agent), "but not here");
        assert!(links.local_sessions().is_empty());
        links.set_remote(replica, HashSet::new());
        assert!(!links.is_connected(agent));
    }

    #[tokio::test]
    async fn poking_all_local_sessions_wakes_each() {
        let links = AgentLinks::default();
        let (a, b) = (AgentId::new(), AgentId::new());
        let site = SiteId::new();
        let (ha, hb) = (links.register(a, site), links.register(b, site));
        assert_eq!(
            links.local_sessions(),
            HashMap::from([(a, site), (b, site)])
        );
        links.poke_all_local();
        for h in [ha, hb] {
            tokio::time::timeout(std::time::Duration::from_secs(5), h.woken())
                .await
                .expect("woken");
        }
    }
}
