//! Prometheus metrics of this server process, served as text at `GET /metrics`
//! (see `routes::metrics`).
//!
//! Built on the `prometheus` crate (without its protobuf feature): it gives
//! typed counters, gauges and histograms with correct text exposition and
//! label escaping, and an explicit [`Registry`] per `Application`, so tests
//! that run several servers in one process do not share counters. (The
//! `metrics` facade would need a global recorder, which is exactly what those
//! tests cannot have.)
//!
//! Per-agent values come from the agents' `agent_status` reports: the latest
//! report of each agent is kept in memory ([`Metrics::agent_status`]) and turned
//! into labelled gauges at scrape time, so the age of the oldest unsent reading
//! is computed when it is read rather than when it was reported.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, SystemTime},
};

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use protocol::AgentStatus;

use crate::domain::AgentId;

/// The latest status report of an agent and when it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentStatusReport {
    /// What the agent said.
    pub status: AgentStatus,
    /// When the server received it.
    pub received_at: SystemTime,
}

/// Every metric of one server process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Batches committed (and acknowledged).
    pub batches_committed: IntCounter,
    /// Batches that could not be stored (the agent was told to resend).
    pub batches_failed: IntCounter,
    /// New reading rows committed.
    pub readings_committed: IntCounter,
    /// Readings that were already stored (a re-sent batch).
    pub readings_duplicate: IntCounter,
    /// Readings refused: unknown point or a non-finite value.
    pub readings_rejected: IntCounter,
    /// Time from `BEGIN` to a completed `COMMIT` of a batch.
    pub commit_seconds: Histogram,
    /// Agent links past their hello.
    pub agents_connected: IntGauge,
    /// 1 when the last database probe succeeded.
    pub database_up: IntGauge,
    agent_buffered_readings: IntGaugeVec,
    agent_buffered_bytes: IntGaugeVec,
    agent_oldest_unsent_age: IntGaugeVec,
    agent_dropped: IntGaugeVec,
    agent_thinned: IntGaugeVec,
    agent_last_acked_seq: IntGaugeVec,
    statuses: Mutex<HashMap<AgentId, AgentStatusReport>>,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("a valid metric name");
    registry
        .register(Box::new(c.clone()))
        .expect("each metric is registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("a valid metric name");
    registry
        .register(Box::new(g.clone()))
        .expect("each metric is registered once");
    g
}

fn agent_gauge(registry: &Registry, name: &str, help: &str) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), &["agent_id"]).expect("a valid metric name");
    registry
        .register(Box::new(g.clone()))
        .expect("each metric is registered once");
    g
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics in its own registry.
    pub fn new() -> Self {
        let r = Registry::new();
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "homecontrol_ingest_commit_seconds",
                "Time to store and commit one readings batch.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("valid histogram options");
        r.register(Box::new(commit_seconds.clone()))
            .expect("each metric is registered once");
        Self {
            batches_committed: counter(
                &r,
                "homecontrol_ingest_batches_committed_total",
                "Readings batches committed and acknowledged.",
            ),
            batches_failed: counter(
                &r,
                "homecontrol_ingest_batches_failed_total",
                "Readings batches not stored because the database failed (the agent resends).",
            ),
            readings_committed: counter(
                &r,
                "homecontrol_ingest_readings_committed_total",
                "New reading rows committed.",
            ),
            readings_duplicate: counter(
                &r,
                "homecontrol_ingest_readings_duplicate_total",
                "Readings already stored (re-sent batches), ignored.",
            ),
            readings_rejected: counter(
                &r,
                "homecontrol_ingest_readings_rejected_total",
                "Readings refused: unknown point or a value that is not a finite number.",
            ),
            commit_seconds,
            agents_connected: gauge(
                &r,
                "homecontrol_agents_connected",
                "Agent links open on this server (past their hello).",
            ),
            database_up: gauge(
                &r,
                "homecontrol_database_up",
                "1 when the database answered the last probe, else 0.",
            ),
            agent_buffered_readings: agent_gauge(
                &r,
                "homecontrol_agent_buffered_readings",
                "Readings waiting in the agent's buffer, as last reported.",
            ),
            agent_buffered_bytes: agent_gauge(
                &r,
                "homecontrol_agent_buffered_bytes",
                "Bytes the agent's buffer occupies, as last reported.",
            ),
            agent_oldest_unsent_age: agent_gauge(
                &r,
                "homecontrol_agent_oldest_unsent_age_seconds",
                "Age of the agent's oldest unacknowledged reading (0 when none).",
            ),
            agent_dropped: agent_gauge(
                &r,
                "homecontrol_agent_dropped_readings",
                "Readings the agent dropped because its buffer was full, since install.",
            ),
            agent_thinned: agent_gauge(
                &r,
                "homecontrol_agent_thinned_readings",
                "Readings the agent thinned away because its buffer was full, since install.",
            ),
            agent_last_acked_seq: agent_gauge(
                &r,
                "homecontrol_agent_last_acked_seq",
                "Highest batch seq the agent reports as acknowledged (-1 when none).",
            ),
            statuses: Mutex::new(HashMap::new()),
            registry: r,
        }
    }

    /// Record one stored batch: `new` rows inserted, `duplicate` already
    /// present, `rejected` refused, committed after `took`.
    pub fn batch_committed(&self, new: u64, duplicate: u64, rejected: u64, took: Duration) {
        self.batches_committed.inc();
        self.readings_committed.inc_by(new);
        self.readings_duplicate.inc_by(duplicate);
        self.readings_rejected.inc_by(rejected);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// Keep the latest status report of an agent.
    pub fn record_agent_status(&self, agent: AgentId, status: AgentStatus, now: SystemTime) {
        self.statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                agent,
                AgentStatusReport {
                    status,
                    received_at: now,
                },
            );
    }

    /// The latest status report of an agent, if it sent one since this
    /// process started.
    pub fn agent_status(&self, agent: AgentId) -> Option<AgentStatusReport> {
        self.statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&agent)
            .cloned()
    }

    /// Everything in the Prometheus text format (version 0.0.4), with
    /// per-agent ages computed at `now`.
    pub fn render(&self, now: SystemTime) -> String {
        let statuses = self
            .statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (agent, report) in statuses {
            let id = agent.to_string();
            let l = [id.as_str()];
            let s = &report.status;
            self.agent_buffered_readings
                .with_label_values(&l)
                .set(saturating_i64(s.buffered_readings));
            self.agent_buffered_bytes
                .with_label_values(&l)
                .set(saturating_i64(s.buffered_bytes));
            self.agent_oldest_unsent_age
                .with_label_values(&l)
                .set(oldest_unsent_age_seconds(s, now));
            self.agent_dropped
                .with_label_values(&l)
                .set(saturating_i64(s.dropped_total));
            self.agent_thinned
                .with_label_values(&l)
                .set(saturating_i64(s.thinned_total));
            self.agent_last_acked_seq
                .with_label_values(&l)
                .set(s.last_acked_seq.map_or(-1, saturating_i64));
        }
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for these metric types.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Whole seconds between the oldest unsent reading and `now` (0 when the
/// buffer is empty or the agent's clock is ahead).
pub fn oldest_unsent_age_seconds(status: &AgentStatus, now: SystemTime) -> i64 {
    status.oldest_unsent.map_or(0, |t| {
        let now = time::OffsetDateTime::from(now);
        (now - t).whole_seconds().max(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> AgentStatus {
        AgentStatus {
            buffered_readings: 1200,
            buffered_bytes: 65_536,
            oldest_unsent: Some(time::macros::datetime!(2026-11-21 12:00 UTC)),
            thinned_total: 3,
            dropped_total: 7,
            last_acked_seq: Some(42),
        }
    }

    #[test]
    fn the_age_of_the_oldest_unsent_reading_is_taken_at_scrape_time() {
        let now: SystemTime = (time::macros::datetime!(2026-11-21 12:01:30 UTC)).into();
        assert_eq!(oldest_unsent_age_seconds(&status(), now), 90);
        let empty = AgentStatus {
            oldest_unsent: None,
            ..status()
        };
        assert_eq!(oldest_unsent_age_seconds(&empty, now), 0);
        let early: SystemTime = (time::macros::datetime!(2026-11-21 11:00 UTC)).into();
        assert_eq!(oldest_unsent_age_seconds(&status(), early), 0);
    }

    #[test]
    fn rendered_text_carries_ingest_counters_and_per_agent_gauges() {
        let m = Metrics::new();
        m.batch_committed(10, 2, 1, Duration::from_millis(4));
        let agent = AgentId(uuid::Uuid::nil());
        m.record_agent_status(agent, status(), SystemTime::now());
        let text = m.render((time::macros::datetime!(2026-11-21 12:00:10 UTC)).into());
        for line in [
            "homecontrol_ingest_batches_committed_total 1",
            "homecontrol_ingest_readings_committed_total 10",
            "homecontrol_ingest_readings_duplicate_total 2",
            "homecontrol_ingest_readings_rejected_total 1",
            "homecontrol_ingest_commit_seconds_count 1",
            r#"homecontrol_agent_buffered_readings{agent_id="00000000-0000-0000-0000-000000000000"} 1200"#,
            r#"homecontrol_agent_oldest_unsent_age_seconds{agent_id="00000000-0000-0000-0000-000000000000"} 10"#,
            r#"homecontrol_agent_last_acked_seq{agent_id="00000000-0000-0000-0000-000000000000"} 42"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
