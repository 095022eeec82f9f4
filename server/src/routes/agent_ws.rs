//! `GET /agent/v1/ws`: the agents' link, speaking [`protocol`].
//!
//! Authentication happens before the upgrade: `Authorization: Bearer
//! <agent_id>.<secret>`. A wrong or unknown secret gets 401 and a log line,
//! and no socket. After the upgrade the first message must be a `hello`
//! within [`HELLO_TIMEOUT`]. A malformed message gets an `error` reply and the
//! session goes on; a batch is acknowledged only after its transaction commits.
//!
//! Commands flow down the same socket: right after the welcome, whenever
//! the [`crate::links::AgentLinks`] registry pokes the session (also from
//! another replica, through the [`crate::relay`]), and on every ping as a
//! safety net, it sends every undelivered, unexpired command of its agent
//! (see [`crate::services::control`]). Command results and control states coming
//! up are stored, audited and pushed to the site's live feed.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use actix_ws::{AggregatedMessage, Session};
use futures_util::StreamExt;
use protocol::{AgentToServer, ErrorCode, ErrorReply, ServerToAgent};

use crate::{
    domain::AgentId,
    error::AppError,
    links::LinkHandle,
    services::{
        control,
        ingest::{self, IngestError},
        secrets,
    },
    state::AppState,
    store::{
        StoreError,
        catalogue::PointIndex,
        people::{self, AgentRecord},
    },
};

/// How long an agent may take to say hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(15);
/// An agent silent for this long (no data, no pong) is considered gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const PING_EVERY: Duration = Duration::from_secs(30);

fn bearer(req: &HttpRequest) -> Option<(AgentId, String)> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    let (id, secret) = token.split_once('.')?;
    Some((id.parse().ok()?, secret.to_owned()))
}

/// Authenticate and upgrade an agent connection.
pub async fn agent_link(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let peer = super::pages::client_address(&req, &state);
    let Some((agent_id, secret)) = bearer(&req) else {
        tracing::warn!(%peer, "agent connection refused: no or malformed bearer token");
        return Err(AppError::Unauthorized);
    };
    let agent = people::find_agent(&state.db, agent_id).await?;
    let Some(agent) = agent.filter(|a| secrets::agent_secret_matches(&secret, &a.secret_hash))
    else {
        tracing::warn!(%peer, %agent_id, "agent connection refused: unknown agent or wrong secret");
        return Err(AppError::Unauthorized);
    };
    let (resp, session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| AppError::Validation(format!("not a WebSocket request: {e}")))?;
    let stream = stream
        .max_frame_size(protocol::MAX_FRAME_BYTES)
        .aggregate_continuations()
        .max_continuation_size(protocol::MAX_FRAME_BYTES);
    tracing::info!(%agent_id, site_id = %agent.site.site_id, %peer, "agent connected");
    actix_web::rt::spawn(run_session(state.into_inner(), agent, session, stream));
    Ok(resp)
}

async fn send(session: &mut Session, msg: &ServerToAgent) -> bool {
    match msg.to_json() {
        Ok(text) => session.text(text).await.is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "serialising a message to an agent");
            false
        }
    }
}

fn error(code: ErrorCode, message: impl Into<String>, seq: Option<u64>) -> ServerToAgent {
    ServerToAgent::Error(ErrorReply {
        code,
        message: message.into(),
        seq,
    })
}

/// What the session loop should do after a message.
enum Next {
    Continue,
    Close,
}

struct Link {
    state: std::sync::Arc<AppState>,
    agent: AgentRecord,
    index: Option<PointIndex>,
    handle: Option<LinkHandle>,
}

impl Link {
    /// Send the agent's waiting commands, each claimed first so that two
    /// sessions of one agent never both send it. A database error leaves them
    /// waiting for the next poke or hello.
    async fn deliver(&mut self, session: &mut Session) -> Next {
        let commands = match control::deliverable(&self.state, &self.agent).await {
            Ok(c) => c,
            Err(e) => {
                log_store_error(&self.agent, &e);
                return Next::Continue;
            }
        };
        for cmd in commands {
            match control::claim(&self.state, cmd.id).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    log_store_error(&self.agent, &e);
                    return Next::Continue;
                }
            }
            let id = cmd.id;
            if !send(session, &ServerToAgent::Command(cmd)).await {
                if let Err(e) = control::unclaim(&self.state, id).await {
                    log_store_error(&self.agent, &e);
                }
                return Next::Close;
            }
            tracing::info!(agent_id = %self.agent.id, command_id = %id, "command delivered");
        }
        Next::Continue
    }

    async fn on_text(&mut self, session: &mut Session, text: &str) -> Next {
        let msg = match AgentToServer::from_json(text) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(agent_id = %self.agent.id, error = %e, "malformed agent message");
                let reply = error(
                    ErrorCode::MalformedMessage,
                    "the message could not be parsed",
                    None,
                );
                return if send(session, &reply).await {
                    Next::Continue
                } else {
                    Next::Close
                };
            }
        };
        let reply = match (msg, &self.index) {
            (AgentToServer::Hello(h), _) => {
                if h.version < protocol::MIN_SUPPORTED_VERSION
                    || h.version > protocol::PROTOCOL_VERSION
                {
                    let m = format!(
                        "protocol version {} is not supported; this server speaks {}..={}",
                        h.version,
                        protocol::MIN_SUPPORTED_VERSION,
                        protocol::PROTOCOL_VERSION
                    );
                    send(session, &error(ErrorCode::UnsupportedVersion, m, None)).await;
                    return Next::Close;
                }
                if h.agent_id != self.agent.id.0 {
                    send(
                        session,
                        &error(ErrorCode::AgentMismatch, "hello names another agent", None),
                    )
                    .await;
                    return Next::Close;
                }
                match ingest::hello(&self.state.db, &self.agent, &h).await {
                    Ok((welcome, index)) => {
                        if self.index.is_none() {
                            self.state.hub.agent_connected(self.agent.site.site_id);
                            self.state.metrics.agents_connected.inc();
                        }
                        self.index = Some(index);
                        // Registered before the welcome, so the agent counts as
                        // connected once it has its welcome. A poke can only be
                        // handled after this function returns, so the welcome
                        // still goes first and commands follow it.
                        if self.handle.is_none() {
                            self.handle = Some(
                                self.state
                                    .links
                                    .register(self.agent.id, self.agent.site.site_id),
                            );
                        }
                        if !send(session, &ServerToAgent::Welcome(welcome)).await {
                            return Next::Close;
                        }
                        return self.deliver(session).await;
                    }
                    Err(e) => {
                        tracing::warn!(agent_id = %self.agent.id, error = %e, "storing agent catalogue failed");
                        send(
                            session,
                            &error(ErrorCode::TemporarilyUnavailable, "try again later", None),
                        )
                        .await;
                        return Next::Close;
                    }
                }
            }
            (_, None) => error(ErrorCode::HelloRequired, "send hello first", None),
            (AgentToServer::Readings(batch), Some(index)) => {
                let started = std::time::Instant::now();
                match ingest::store_batch(&self.state.db, &self.agent, index, &batch).await {
                    Ok(stored) => {
                        let new = stored.inserted;
                        let duplicate = (stored.values.len() as u64).saturating_sub(new);
                        self.state.metrics.batch_committed(
                            new,
                            duplicate,
                            stored.skipped as u64,
                            started.elapsed(),
                        );
                        self.state.db_health.record(true);
                        if stored.skipped > 0 {
                            tracing::warn!(agent_id = %self.agent.id, seq = batch.seq, skipped = stored.skipped,
                                "readings for unknown points or with non-finite values were skipped");
                        }
                        self.state
                            .hub
                            .publish_readings(self.agent.site.site_id, &stored.values);
                        ServerToAgent::Ack(protocol::Ack { seq: batch.seq })
                    }
                    Err(IngestError::TooLarge(n)) => error(
                        ErrorCode::InvalidBatch,
                        format!("{n} readings; at most {}", protocol::MAX_READINGS_PER_BATCH),
                        Some(batch.seq),
                    ),
                    Err(IngestError::Store(e)) => {
                        log_store_error(&self.agent, &e);
                        self.state.metrics.batches_failed.inc();
                        // Close after refusing: `last_acked_seq` is the highest
                        // committed seq, so committing a later batch of this
                        // session would make the agent forget this one on its
                        // next welcome. The agent reconnects and resends every
                        // unacked reading under new seqs.
                        let reply = error(
                            ErrorCode::TemporarilyUnavailable,
                            "not stored; send again later",
                            Some(batch.seq),
                        );
                        send(session, &reply).await;
                        return Next::Close;
                    }
                }
            }
            (AgentToServer::DeviceStatus(status), Some(_)) => {
                if let Err(e) = ingest::device_status(&self.state.db, &self.agent, &status).await {
                    log_store_error(&self.agent, &e);
                }
                return Next::Continue;
            }
            (AgentToServer::AgentStatus(status), Some(_)) => {
                tracing::debug!(agent_id = %self.agent.id, buffered = status.buffered_readings,
                    dropped = status.dropped_total, "agent status");
                self.state.metrics.record_agent_status(
                    self.agent.id,
                    status,
                    std::time::SystemTime::now(),
                );
                return Next::Continue;
            }
            (AgentToServer::CommandResult(result), Some(_)) => {
                tracing::info!(agent_id = %self.agent.id, command_id = %result.id,
                    outcome = ?result.outcome, reason = result.reason.as_deref().unwrap_or(""), "command result");
                if let Err(e) = control::record_result(&self.state, &self.agent, &result).await {
                    log_store_error(&self.agent, &e);
                }
                return Next::Continue;
            }
            (AgentToServer::ControlState(state), Some(_)) => {
                tracing::debug!(agent_id = %self.agent.id, device = %state.device,
                    point = %state.point, source = ?state.source, "control state");
                if let Err(e) = control::record_state(&self.state, &self.agent, &state).await {
                    log_store_error(&self.agent, &e);
                }
                return Next::Continue;
            }
            (AgentToServer::Unknown, Some(_)) => return Next::Continue,
        };
        if send(session, &reply).await {
            Next::Continue
        } else {
            Next::Close
        }
    }
}

fn log_store_error(agent: &AgentRecord, e: &StoreError) {
    tracing::warn!(agent_id = %agent.id, error = %e, "database error while handling an agent message");
}

async fn run_session(
    state: std::sync::Arc<AppState>,
    agent: AgentRecord,
    mut session: Session,
    mut stream: actix_ws::AggregatedMessageStream,
) {
    let site = agent.site.site_id;
    let agent_id = agent.id;
    let mut link = Link {
        state: state.clone(),
        agent,
        index: None,
        handle: None,
    };
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let hello_deadline = tokio::time::sleep(HELLO_TIMEOUT);
    tokio::pin!(hello_deadline);
    let mut last_heard = tokio::time::Instant::now();
    let reason = loop {
        let wake = link.handle.as_ref().map(LinkHandle::notifier);
        tokio::select! {
            incoming = stream.next() => {
                last_heard = tokio::time::Instant::now();
                match incoming {
                    Some(Ok(AggregatedMessage::Text(text))) => {
                        if let Next::Close = link.on_text(&mut session, &text).await { break "refused"; }
                    }
                    Some(Ok(AggregatedMessage::Binary(_))) => {
                        let reply = error(ErrorCode::MalformedMessage, "binary frames are not part of the protocol", None);
                        if !send(&mut session, &reply).await { break "send failed"; }
                    }
                    Some(Ok(AggregatedMessage::Ping(b))) => if session.pong(&b).await.is_err() { break "send failed" },
                    Some(Ok(AggregatedMessage::Pong(_))) => {}
                    Some(Ok(AggregatedMessage::Close(_))) | None => break "closed by agent",
                    Some(Err(e)) => {
                        tracing::warn!(%agent_id, error = %e, "agent link protocol error");
                        break "protocol error";
                    }
                }
            }
            _ = &mut hello_deadline, if link.index.is_none() => break "no hello in time",
            _ = async { match &wake { Some(n) => n.notified().await, None => std::future::pending().await } } => {
                if let Next::Close = link.deliver(&mut session).await { break "send failed"; }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > IDLE_TIMEOUT { break "idle timeout"; }
                if session.ping(b"").await.is_err() { break "send failed"; }
                // Safety net: a command whose poke was lost (the relay between
                // replicas was reconnecting) or left after a database error is
                // delivered within one ping interval.
                if link.handle.is_some() && matches!(link.deliver(&mut session).await, Next::Close) {
                    break "send failed";
                }
            }
        }
    };
    if let Some(h) = &link.handle {
        state.links.unregister(h);
    }
    if link.index.is_some() {
        state.hub.agent_disconnected(site);
        state.metrics.agents_connected.dec();
    }
    tracing::info!(%agent_id, reason, "agent disconnected");
    let _ = session.close(None).await;
}
