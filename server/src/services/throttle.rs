//! Slowing down repeated failed logins.
//!
//! Failures are counted per e-mail address and per client address, whether or
//! not the account exists (so the answer reveals nothing). After
//! [`FREE_ATTEMPTS`] failures a key must wait before its next attempt; the wait
//! doubles with each further failure up to [`MAX_LOCK`]. A success clears the
//! e-mail's counter. State is in memory: a restart forgets it, which is an
//! acceptable trade for a single server; replicas would move it to the database.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Failures allowed before waits begin.
pub const FREE_ATTEMPTS: u32 = 3;
/// The longest wait.
pub const MAX_LOCK: Duration = Duration::from_secs(300);
/// A key with no failures for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
}

/// Per-key failure counts.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    entries: Mutex<HashMap<String, Entry>>,
}

/// Pure rule: how long a key with `failures` must wait after its last failure.
pub fn lock_for(failures: u32) -> Duration {
    if failures < FREE_ATTEMPTS {
        return Duration::ZERO;
    }
    let exp = (failures - FREE_ATTEMPTS).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_LOCK)
}

impl LoginThrottle {
    /// If any key is locked at `now`, the remaining wait.
    pub fn check(&self, keys: &[&str], now: Instant) -> Option<Duration> {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter_map(|k| map.get(*k))
            .filter_map(|e| {
                let until = e.last + lock_for(e.failures);
                (until > now).then(|| until - now)
            })
            .max()
    }

    /// Count a failure for every key.
    pub fn fail(&self, keys: &[&str], now: Instant) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, e| now.duration_since(e.last) < FORGET_AFTER);
        }
        for k in keys {
            let e = map.entry((*k).to_owned()).or_insert(Entry {
                failures: 0,
                last: now,
            });
            if now.duration_since(e.last) > FORGET_AFTER {
                e.failures = 0;
            }
            e.failures += 1;
            e.last = now;
        }
    }

    /// Forget a key (after a successful login).
    pub fn clear(&self, key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_failures_are_free_then_waits_double_up_to_the_cap() {
        assert_eq!(lock_for(0), Duration::ZERO);
        assert_eq!(lock_for(2), Duration::ZERO);
        assert_eq!(lock_for(3), Duration::from_secs(1));
        assert_eq!(lock_for(4), Duration::from_secs(2));
        assert_eq!(lock_for(40), MAX_LOCK);
    }

    #[test]
    fn a_locked_key_reports_the_remaining_wait_and_success_clears_it() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..4 {
            t.fail(&["email:a@x"], now);
        }
        let wait = t.check(&["email:a@x", "ip:1"], now).unwrap();
        assert_eq!(wait, Duration::from_secs(2));
        assert!(
            t.check(&["email:a@x"], now + Duration::from_secs(3))
                .is_none()
        );
        t.clear("email:a@x");
        assert!(t.check(&["email:a@x"], now).is_none());
    }
}
