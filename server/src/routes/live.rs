//! `GET /sites/{id}/live`: the browser's WebSocket for live values.
//!
//! The same access rule as the dashboard page applies before the upgrade: a
//! user who may not see the site gets 404 and no socket. After the upgrade the
//! server sends a `snapshot`, then every `readings` and `agent_status`
//! message of that site, whichever replica the agent is connected to. A
//! viewer that falls behind gets a new snapshot, and so does every viewer
//! after the relay between replicas had to reconnect (see [`crate::relay`]).

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::AggregatedMessage;
use futures_util::StreamExt;
use tokio::sync::broadcast::error::RecvError;

use super::pages::CurrentUser;
use crate::{
    error::AppError,
    services::{auth::SESSION_COOKIE, sites},
    state::AppState,
};

/// Browsers send nothing but pings and close frames; anything large is abuse.
const MAX_BROWSER_FRAME: usize = 4 * 1024;
/// Server ping interval.
const PING_EVERY: Duration = Duration::from_secs(25);

/// Upgrade to the live feed of one site.
pub async fn site_live_feed(
    req: HttpRequest,
    body: web::Payload,
    user: CurrentUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let (site, _points) =
        sites::open_for_viewing(&state.db, &state.hub, &user.memberships, &path).await?;
    let site_id = site.summary.site.site_id;
    let (resp, mut session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| AppError::Validation(format!("not a WebSocket request: {e}")))?;
    let mut stream = stream
        .max_frame_size(MAX_BROWSER_FRAME)
        .aggregate_continuations()
        .max_continuation_size(MAX_BROWSER_FRAME);
    // Regression (tests branch): the feed used to outlive the session that
    // opened it; now it ends when the session cookie expires.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let session_left = req
        .cookie(SESSION_COOKIE)
        .and_then(|c| state.sessions.expires_at(c.value()))
        .map(|exp| Duration::from_secs(u64::try_from(exp - now).unwrap_or(0)))
        .unwrap_or(Duration::ZERO);
    let hub = state.hub.clone();
    actix_web::rt::spawn(async move {
        let session_expired = tokio::time::sleep(session_left);
        tokio::pin!(session_expired);
        let (snapshot, mut rx) = hub.subscribe(site_id);
        if session.text(snapshot).await.is_err() {
            return;
        }
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Ok(text) => if session.text(text.to_string()).await.is_err() { break },
                    Err(RecvError::Lagged(_)) => if session.text(hub.snapshot(site_id)).await.is_err() { break },
                    Err(RecvError::Closed) => break,
                },
                incoming = stream.next() => match incoming {
                    Some(Ok(AggregatedMessage::Ping(b))) => if session.pong(&b).await.is_err() { break },
                    Some(Ok(AggregatedMessage::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
                _ = ping.tick() => if session.ping(b"").await.is_err() { break },
                _ = &mut session_expired => break,
            }
        }
        let _ = session.close(None).await;
    });
    Ok(resp)
}
