//! Is the database reachable? Answered cheaply for pages that can render
//! without data (the login page shows a notice instead of failing) and for the
//! `homecontrol_database_up` metric.
//!
//! A probe (`SELECT 1`, bounded by [`PROBE_TIMEOUT`]) runs at most once per
//! [`CACHE_FOR`]; requests in between get the cached answer, so a burst of
//! login page views while PostgreSQL is down costs one probe, not one pool
//! acquire timeout each. Nothing here keeps the outage going: the pool
//! reconnects by itself, and the next probe after it does says so.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, DatabaseConnection};

/// How long an answer is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(3);
/// How long a probe may take before the database counts as down.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Cached database reachability; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct DbHealth {
    last: Arc<Mutex<Option<(Instant, bool)>>>,
}

/// The cached answer if it is still fresh at `now` (pure, for tests).
pub fn cached(last: Option<(Instant, bool)>, now: Instant, ttl: Duration) -> Option<bool> {
    match last {
        Some((at, up)) if now.saturating_duration_since(at) < ttl => Some(up),
        _ => None,
    }
}

impl DbHealth {
    /// Whether the database answered a probe within the last [`CACHE_FOR`]
    /// (probing now if the answer is older).
    pub async fn is_up(&self, db: &DatabaseConnection) -> bool {
        let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(up) = cached(last, Instant::now(), CACHE_FOR) {
            return up;
        }
        let up = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, db.execute_unprepared("SELECT 1")).await,
            Ok(Ok(_))
        );
        self.record(up);
        up
    }

    /// Record what a real query just found out (a failed commit, a probe).
    pub fn record(&self, up: bool) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), up));
    }

    /// The last answer, without probing (`None` before the first probe).
    pub fn last_known(&self) -> Option<bool> {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|(_, up)| up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_answer_is_reused_and_a_stale_one_is_not() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(3);
        assert_eq!(cached(None, t0, ttl), None);
        assert_eq!(
            cached(Some((t0, false)), t0 + Duration::from_secs(2), ttl),
            Some(false)
        );
        assert_eq!(
            cached(Some((t0, true)), t0 + Duration::from_secs(3), ttl),
            None
        );
    }
}
