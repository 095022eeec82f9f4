//! Prometheus text metrics on an optional local listener (`[metrics] listen`).
//!
//! Hand-rolled on purpose: one `GET /metrics` answered with the text
//! exposition format (version 0.0.4) over a plain tokio socket is a few dozen
//! lines, where a metrics crate plus an HTTP server would add many dependencies
//! to an agent that runs on small boxes. The uplink and pollers publish into
//! [`Metrics`]; the listener only renders it.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::uplink::queue::BufferStats;

/// Longest request head read before answering.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

#[derive(Debug, Default)]
struct Inner {
    buffer: BufferStats,
    link_up: bool,
    /// device → (ok, error) poll counts.
    polls: BTreeMap<String, (u64, u64)>,
}

/// The agent's live state as metrics; shared by the tasks that update it.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A panic while holding the lock leaves plain counters; still usable.
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut g)
    }

    /// Count one poll of `device`.
    pub fn record_poll(&self, device: &str, ok: bool) {
        self.with(|i| {
            let e = i.polls.entry(device.to_owned()).or_default();
            if ok {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        });
    }

    /// Publish the uplink state.
    pub fn set_link_up(&self, up: bool) {
        self.with(|i| i.link_up = up);
    }

    /// Publish the buffer's depth and counters.
    pub fn set_buffer(&self, stats: BufferStats) {
        self.with(|i| i.buffer = stats);
    }

    /// The text exposition of every metric, with the oldest-unsent age taken at `now_ms`.
    pub fn render(&self, now_ms: i64) -> String {
        self.with(|i| {
            let mut out = String::new();
            let mut gauge = |name: &str, help: &str, kind: &str, value: String| {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
                );
            };
            let b = &i.buffer;
            gauge("homecontrol_agent_buffer_readings", "Readings in the on-disk buffer, not yet acknowledged.", "gauge", b.readings.to_string());
            gauge("homecontrol_agent_buffer_bytes", "Accounted bytes of the buffered readings (the bound applies to this).", "gauge", b.bytes.to_string());
            let age = b
                .oldest_ts_ms
                .map_or(0.0, |t| (now_ms.saturating_sub(t)).max(0) as f64 / 1000.0);
            gauge("homecontrol_agent_buffer_oldest_age_seconds", "Age of the oldest buffered reading (0 when empty).", "gauge", age.to_string());
            gauge("homecontrol_agent_buffer_thinned_total", "Readings thinned away because the buffer was full, since install.", "counter", b.thinned_total.to_string());
            gauge("homecontrol_agent_buffer_dropped_total", "Readings dropped because the buffer was full, since install.", "counter", b.dropped_total.to_string());
            gauge("homecontrol_agent_last_acked_seq", "Highest batch seq the server acknowledged (0 before any).", "gauge", b.last_acked_seq.unwrap_or(0).to_string());
            gauge("homecontrol_agent_link_up", "1 while the uplink session is established.", "gauge", u8::from(i.link_up).to_string());
            let _ = writeln!(out, "# HELP homecontrol_agent_polls_total Device polls by outcome since start.\n# TYPE homecontrol_agent_polls_total counter");
            for (dev, (ok, err)) in &i.polls {
                let dev = dev.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(out, "homecontrol_agent_polls_total{{device=\"{dev}\",outcome=\"ok\"}} {ok}");
                let _ = writeln!(out, "homecontrol_agent_polls_total{{device=\"{dev}\",outcome=\"error\"}} {err}");
            }
            out
        })
    }
}

fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// Answer `GET /metrics` on `listener` until `cancel` fires.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, cancel: CancellationToken) {
    loop {
        let (mut stream, peer) = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "metrics listener accept failed");
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(512);
            let mut chunk = [0u8; 512];
            // Read the request head; a slow or silent client gets 5 s.
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST_BYTES {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                true
            })
            .await;
            if !matches!(read, Ok(true)) {
                return;
            }
            let head = String::from_utf8_lossy(&buf);
            let target = head.split_whitespace().take(2).collect::<Vec<_>>();
            let (status, body) = match target.as_slice() {
                ["GET", "/metrics"] => ("200 OK", metrics.render(now_ms())),
                _ => ("404 Not Found", "not found; try GET /metrics\n".to_owned()),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if let Err(e) = stream.write_all(resp.as_bytes()).await {
                debug!(%peer, error = %e, "metrics response not delivered");
            }
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_holds_buffer_depth_counters_link_and_poll_counts() {
        let m = Metrics::default();
        m.set_buffer(BufferStats {
            readings: 12,
            bytes: 900,
            oldest_ts_ms: Some(1_000),
            thinned_total: 3,
            dropped_total: 4,
            last_acked_seq: Some(77),
        });
        m.set_link_up(true);
        m.record_poll("heatpump", true);
        m.record_poll("heatpump", true);
        m.record_poll("heatpump", false);
        let text = m.render(11_500);
        for line in [
            "homecontrol_agent_buffer_readings 12",
            "homecontrol_agent_buffer_bytes 900",
            "homecontrol_agent_buffer_oldest_age_seconds 10.5",
            "homecontrol_agent_buffer_thinned_total 3",
            "homecontrol_agent_buffer_dropped_total 4",
            "homecontrol_agent_last_acked_seq 77",
            "homecontrol_agent_link_up 1",
            "homecontrol_agent_polls_total{device=\"heatpump\",outcome=\"ok\"} 2",
            "homecontrol_agent_polls_total{device=\"heatpump\",outcome=\"error\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[tokio::test]
    async fn get_metrics_is_answered_over_tcp_and_other_paths_are_404() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let m = Arc::new(Metrics::default());
        m.set_link_up(true);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(listener, m, cancel.clone()));
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(ok.contains("\nhomecontrol_agent_link_up 1\n"));
        assert!(get("/other").await.starts_with("HTTP/1.1 404"));
        cancel.cancel();
        task.await.unwrap();
    }
}
