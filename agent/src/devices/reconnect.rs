//! [`ReconnectGate`]: when a field-bus client may try to open its closed link
//! again. Every client (Modbus, ASCII, Ouman, POP) drops its link after an
//! I/O error and reopens it on the next request; a *failed* open waits with
//! jittered back-off, so an unplugged USB adapter is retried every few
//! seconds rather than in a tight loop, and each step is logged once.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::TransportError;
use crate::backoff::Backoff;

/// First wait after a failed open.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Longest wait between opens.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Back-off state of one bus's reconnects.
#[derive(Debug)]
pub struct ReconnectGate {
    backoff: Backoff,
    next_at: Option<Instant>,
}

impl Default for ReconnectGate {
    fn default() -> Self {
        ReconnectGate {
            backoff: Backoff::new(FIRST_RETRY, MAX_RETRY),
            next_at: None,
        }
    }
}

impl ReconnectGate {
    /// `Err(Reconnecting)` while the back-off after a failed open lasts.
    pub fn check(&self, target: &str) -> Result<(), TransportError> {
        match self.next_at {
            Some(at) if Instant::now() < at => Err(TransportError::Reconnecting {
                target: target.to_owned(),
                retry_in: at - Instant::now(),
            }),
            _ => Ok(()),
        }
    }

    /// The link opened: the next failure starts the back-off afresh.
    pub fn opened(&mut self, bus: &str, target: &str) {
        info!(%bus, %target, "field bus connected");
        self.backoff.reset();
        self.next_at = None;
    }

    /// Opening failed: schedule the next try and return the error to report.
    pub fn failed(&mut self, bus: &str, target: String, reason: String) -> TransportError {
        let delay = self.backoff.next_delay();
        warn!(%bus, %target, %reason, retry_in = ?delay, "field bus connect failed");
        self.next_at = Some(Instant::now() + delay);
        TransportError::Connect { target, reason }
    }
}
