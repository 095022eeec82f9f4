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

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::Notify;

use crate::domain::AgentId;

#[derive(Debug)]
struct Entry {
    session: u64,
    wake: Arc<Notify>,
}

/// The registry; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct AgentLinks {
    sessions: Arc<Mutex<HashMap<AgentId, Entry>>>,
    next_session: Arc<AtomicU64>,
}

/// A session's registration; the session awaits [`LinkHandle::woken`].
#[derive(Debug)]
pub struct LinkHandle {
    agent: AgentId,
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
    /// Register a session of `agent` (after its hello). A newer session of the
    /// same agent replaces an older one that has not noticed it is gone yet.
    pub fn register(&self, agent: AgentId) -> LinkHandle {
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let wake = Arc::new(Notify::new());
        lock(&self.sessions).insert(
            agent,
            Entry {
                session,
                wake: wake.clone(),
            },
        );
        LinkHandle {
            agent,
            session,
            wake,
        }
    }

    /// Remove a session's registration (only if it is still the current one).
    pub fn unregister(&self, handle: &LinkHandle) {
        let mut map = lock(&self.sessions);
        if map
            .get(&handle.agent)
            .is_some_and(|e| e.session == handle.session)
        {
            map.remove(&handle.agent);
        }
    }

    /// Wake the agent's session, if it has one; true when it has.
    pub fn poke(&self, agent: AgentId) -> bool {
        match lock(&self.sessions).get(&agent) {
            Some(e) => {
                e.wake.notify_one();
                true
            }
            None => false,
        }
    }

    /// Whether the agent has a session on this server.
    pub fn is_connected(&self, agent: AgentId) -> bool {
        lock(&self.sessions).contains_key(&agent)
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
        let h = links.register(agent);
        assert!(links.poke(agent));
        tokio::time::timeout(std::time::Duration::from_secs(5), h.woken())
            .await
            .expect("the stored poke wakes the session");
    }

    #[test]
    fn an_old_session_ending_does_not_remove_its_replacement() {
        let links = AgentLinks::default();
        let agent = AgentId::new();
        let old = links.register(agent);
        let new = links.register(agent);
        links.unregister(&old);
        assert!(links.is_connected(agent));
        links.unregister(&new);
        assert!(!links.is_connected(agent));
    }
}
