//! A client for a site's live feed, as a browser would open it.

use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

/// An open live feed.
pub struct LiveFeed {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

/// Why the upgrade was refused.
#[derive(Debug)]
pub struct Refused(pub u16);

impl LiveFeed {
    /// Open `/sites/<id>/live` with the session cookie. `Err(Refused(status))`
    /// when the server answers the upgrade with an HTTP status instead.
    pub async fn open(
        port: u16,
        path: &str,
        cookie: &str,
    ) -> anyhow::Result<Result<Self, Refused>> {
        let mut req = format!("ws://127.0.0.1:{port}{path}").into_client_request()?;
        req.headers_mut()
            .insert("Cookie", HeaderValue::from_str(cookie)?);
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(Ok(LiveFeed { ws })),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                Ok(Err(Refused(resp.status().as_u16())))
            }
            Err(e) => Err(e).context("opening the live feed"),
        }
    }

    /// The next JSON message, within `timeout`.
    pub async fn next_json(&mut self, timeout: Duration) -> anyhow::Result<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = tokio::time::timeout(left, self.ws.next())
                .await
                .context("no live message in time")?
                .context("the live feed closed")??;
            if let Message::Text(t) = msg {
                return Ok(serde_json::from_str(&t)?);
            }
        }
    }

    /// Skip messages until one of `kind` arrives (within `timeout`).
    pub async fn next_of(
        &mut self,
        kind: &str,
        timeout: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self
                .next_json(left)
                .await
                .with_context(|| format!("waiting for a {kind} message"))?;
            if v["type"] == kind {
                return Ok(v);
            }
        }
    }
}
