//! The link to the server: a WebSocket opened by the agent.
//!
//! [`session`] holds the protocol rules as a pure state machine; [`queue`] the
//! unacknowledged batches behind the [`queue::BatchQueue`] seam; this module is
//! the I/O loop around them. It connects with `Authorization: Bearer
//! <agent_id>.<secret>`, feeds socket messages, poller events and timer ticks
//! into the session, sends what the session asks for, and on any failure
//! reconnects with jittered exponential back-off (0.5 s doubling to 30 s). The
//! poller is never blocked by the link: events are consumed while connecting
//! and while waiting to reconnect.

pub mod queue;
pub mod session;

use std::{sync::Arc, time::Duration};

use futures_util::{SinkExt as _, StreamExt as _};
use protocol::ServerToAgent;
use secrecy::ExposeSecret as _;
use tokio::{sync::mpsc, time::Instant};
use tokio_tungstenite::tungstenite::{
    Message,
    client::IntoClientRequest as _,
    http::{HeaderValue, header::AUTHORIZATION},
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, info_span, warn};

use self::{
    queue::BatchQueue,
    session::{Action, Event, Session},
};
use crate::{backoff::Backoff, config::ServerConfig, metrics::Metrics, poller::PollEvent};

/// First reconnect delay.
pub const RECONNECT_BASE: Duration = Duration::from_millis(500);
/// Longest reconnect delay.
pub const RECONNECT_CAP: Duration = Duration::from_secs(30);
/// Time allowed for the TCP + TLS + WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection attempt failed (never contains the secret).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL or the header could not form a request.
    #[error("cannot build the upgrade request: {0}")]
    Request(String),
    /// The handshake failed (DNS, TCP, TLS, HTTP status such as 401).
    #[error("{0}")]
    Handshake(#[from] tokio_tungstenite::tungstenite::Error),
    /// The handshake took longer than 10 s.
    #[error("handshake timed out")]
    Timeout,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(server: &ServerConfig) -> Result<Ws, ConnectError> {
    let mut req = server.url.as_str().into_client_request()?;
    let token = format!(
        "Bearer {}.{}",
        server.agent_id,
        server.secret.expose_secret()
    );
    let mut value = HeaderValue::from_str(&token).map_err(|_| {
        ConnectError::Request("the secret holds characters not allowed in a header".into())
    })?;
    value.set_sensitive(true);
    req.headers_mut().insert(AUTHORIZATION, value);
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(req)).await {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(ConnectError::Timeout),
    }
}

/// Run the uplink until `cancel` fires. Consumes poller events from `events`.
pub async fn run<Q: BatchQueue>(
    server: ServerConfig,
    mut session: Session<Q>,
    mut events: mpsc::Receiver<PollEvent>,
    cancel: CancellationToken,
    metrics: Arc<Metrics>,
) {
    publish(&session, &metrics);
    let mut backoff = Backoff::new(RECONNECT_BASE, RECONNECT_CAP);
    let mut events_open = true;
    let mut session_no: u64 = 0;
    loop {
        // Connect, while still taking in poller events.
        let attempt = {
            let connecting = connect(&server);
            tokio::pin!(connecting);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    res = &mut connecting => break res,
                    ev = events.recv(), if events_open => feed_offline(&mut session, &metrics, ev, &mut events_open),
                    () = sleep_until_deadline(session.next_deadline()) => { step(&mut session, &metrics, Event::Tick); }
                }
            }
        };
        match attempt {
            Ok(ws) => {
                session_no += 1;
                let span = info_span!("uplink", agent_id = %server.agent_id, session = session_no);
                let welcomed = run_connection(
                    ws,
                    &mut session,
                    &metrics,
                    &mut events,
                    &mut events_open,
                    &cancel,
                )
                .instrument(span)
                .await;
                step(&mut session, &metrics, Event::Disconnected);
                if cancel.is_cancelled() {
                    return;
                }
                if welcomed {
                    backoff.reset();
                }
            }
            Err(e) => {
                let delay_hint = backoff.ceiling();
                warn!(url = %server.url, error = %e, retry_within = ?delay_hint, "uplink connect failed");
            }
        }
        // Wait before reconnecting, still taking in poller events.
        let delay = backoff.next_delay();
        let buffered = session.queue().stats().map(|s| s.readings).unwrap_or(0);
        info!(retry_in = ?delay, buffered, "uplink down; reconnecting later");
        let wake = Instant::now() + delay;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep_until(wake) => break,
                ev = events.recv(), if events_open => feed_offline(&mut session, &metrics, ev, &mut events_open),
                () = sleep_until_deadline(session.next_deadline()) => { step(&mut session, &metrics, Event::Tick); }
            }
        }
    }
}

/// Feed `event` to the session and publish the resulting state.
fn step<Q: BatchQueue>(session: &mut Session<Q>, metrics: &Metrics, event: Event) -> Vec<Action> {
    let actions = session.handle(event, Instant::now());
    publish(session, metrics);
    actions
}

fn publish<Q: BatchQueue>(session: &Session<Q>, metrics: &Metrics) {
    metrics.set_link_up(session.is_up());
    if let Ok(stats) = session.queue().stats() {
        metrics.set_buffer(stats);
    }
}

fn feed_offline<Q: BatchQueue>(
    session: &mut Session<Q>,
    metrics: &Metrics,
    ev: Option<PollEvent>,
    events_open: &mut bool,
) {
    match ev {
        // While the link is down the session produces no actions.
        Some(ev) => drop(step(session, metrics, to_event(ev))),
        None => *events_open = false,
    }
}

fn to_event(ev: PollEvent) -> Event {
    match ev {
        PollEvent::Readings(r) => Event::Readings(r),
        PollEvent::Status(s) => Event::Status(s),
        PollEvent::Control(m) => Event::Outgoing(m),
    }
}

async fn sleep_until_deadline(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Drive one connection; returns whether the server welcomed us.
async fn run_connection<Q: BatchQueue>(
    ws: Ws,
    session: &mut Session<Q>,
    metrics: &Metrics,
    events: &mut mpsc::Receiver<PollEvent>,
    events_open: &mut bool,
    cancel: &CancellationToken,
) -> bool {
    info!("uplink connected");
    let (mut sink, mut stream) = ws.split();
    let mut actions = step(session, metrics, Event::Connected);
    let mut welcomed = false;
    loop {
        for action in actions.drain(..) {
            match action {
                Action::Send(msg) => {
                    let text = match msg.to_json() {
                        Ok(t) => t,
                        Err(e) => {
                            warn!(error = %e, "cannot serialize a message; skipped");
                            continue;
                        }
                    };
                    if let Err(e) = sink.send(Message::Text(text.into())).await {
                        warn!(error = %e, "uplink send failed");
                        return welcomed;
                    }
                }
                Action::Close(reason) => {
                    warn!(%reason, "closing the uplink");
                    let _ = sink.close().await;
                    return welcomed;
                }
            }
        }
        let event = tokio::select! {
            () = cancel.cancelled() => {
                let _ = sink.close().await;
                return welcomed;
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => match ServerToAgent::from_json(&text) {
                    Ok(m) => {
                        if matches!(m, ServerToAgent::Welcome(_)) {
                            welcomed = true;
                        }
                        Event::Received(m)
                    }
                    Err(e) => {
                        warn!(error = %e, "undecodable server message ignored");
                        continue;
                    }
                },
                Some(Ok(Message::Close(frame))) => {
                    info!(?frame, "server closed the uplink");
                    return welcomed;
                }
                // Pings are answered by tungstenite itself; binary frames are not part of the protocol.
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    warn!(error = %e, "uplink receive failed");
                    return welcomed;
                }
                None => {
                    info!("uplink closed");
                    return welcomed;
                }
            },
            ev = events.recv(), if *events_open => match ev {
                Some(ev) => to_event(ev),
                None => {
                    *events_open = false;
                    continue;
                }
            },
            () = sleep_until_deadline(session.next_deadline()) => Event::Tick,
        };
        actions = step(session, metrics, event);
    }
}
