//! Remote control in a real browser: the homeowner raises a room setpoint on
//! the Controls page of the real server and sees the site's answer arrive
//! live. The site is a fake agent speaking the real protocol over the real
//! WebSocket (the agent's own control half is built separately): it holds a
//! setpoint "register", applies commands that fit its envelope, and reports
//! the value it reads back.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use protocol::{
    AgentToServer, CommandOutcome, CommandResult, ControlKind, ControlRequest, ControlSource,
    ControlState, DeviceInfo, Envelope, Hello, PointInfo, PointKind, ServerToAgent, WritableInfo,
};
use server::{
    domain::{AgentId, Role, SiteId},
    hub::Hub,
    services::admin,
    store::{self, control::CommandStatus},
};
use testkit::{TestDb, TestServer, browser, eventually};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

const T: Duration = Duration::from_secs(20);
const KEY: &str = "pop1/room3_floor_setpoint";

fn envelope() -> Envelope {
    Envelope {
        writables: vec![WritableInfo {
            device: "pop1".into(),
            point: "room3_floor_setpoint".into(),
            kind: ControlKind::Setpoint,
            min: 18.0,
            max: 27.0,
            step: 0.1,
            max_change_per_hour: None,
            max_override_s: 3600,
            schedulable: true,
        }],
        actions: vec![],
    }
}

fn catalogue() -> Vec<DeviceInfo> {
    vec![DeviceInfo {
        key: "pop1".into(),
        label: Some("POP".into()),
        profile: None,
        points: vec![PointInfo {
            key: "room3_floor_setpoint".into(),
            label: Some("Huone 3 lattia / Room 3 floor".into()),
            unit: "degC".into(),
            kind: PointKind::Analog,
            display_min: Some(15.0),
            display_max: Some(30.0),
            alarm: false,
        }],
    }]
}

fn text(msg: &AgentToServer) -> anyhow::Result<Message> {
    Ok(Message::Text(msg.to_json()?.into()))
}

/// The agent's note with the manual state (the page shows it next to the why).
const MANUAL_NOTE: &str = "by hand; at the end the device's own clock table takes over again";

/// The fake site: says hello with its envelope, reports its setpoint, and
/// answers each command. Before answering it waits until a new live feed of
/// the site opened (the page the browser lands on after the form's
/// redirect), so the answer is seen arriving live rather than rendered.
async fn fake_agent(
    ws_url: String,
    agent_id: AgentId,
    secret: String,
    hub: Hub,
    site: SiteId,
    register: Arc<Mutex<f64>>,
) -> anyhow::Result<()> {
    let mut req = ws_url.into_client_request()?;
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {agent_id}.{secret}").parse()?,
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    ws.send(text(&AgentToServer::Hello(Hello {
        agent_id: agent_id.0,
        version: protocol::PROTOCOL_VERSION,
        capabilities: vec!["readings".into(), "control".into()],
        software: Some("fake-control-agent".into()),
        devices: catalogue(),
        envelope: Some(envelope()),
    }))?)
    .await?;
    let state = |value: f64, source| {
        AgentToServer::ControlState(ControlState {
            device: "pop1".into(),
            point: "room3_floor_setpoint".into(),
            commanded: Some(value),
            reported: Some(value),
            source,
            until: (source == ControlSource::Manual)
                .then(|| time::OffsetDateTime::now_utc() + time::Duration::hours(1)),
            action: None,
            note: Some(
                if source == ControlSource::Manual {
                    MANUAL_NOTE
                } else {
                    "run by the agent: the device has no clock table of its own for it"
                }
                .into(),
            ),
        })
    };
    let lock = |r: &Mutex<f64>| *r.lock().unwrap_or_else(|p| p.into_inner());
    while let Some(frame) = ws.next().await {
        let Message::Text(t) = frame? else { continue };
        match ServerToAgent::from_json(&t)? {
            ServerToAgent::Welcome(_) => {
                let v = lock(&register);
                ws.send(text(&state(v, ControlSource::Schedule))?).await?;
            }
            ServerToAgent::Command(cmd) => {
                let seen = hub.subscriptions(site);
                eventually(T, "the redirected page to open its live feed", || {
                    let hub = hub.clone();
                    async move { (hub.subscriptions(site) > seen).then_some(()) }
                })
                .await?;
                let before = lock(&register);
                let (outcome, reason, after) = match cmd.request {
                    ControlRequest::Set { value, .. } if (18.0..=27.0).contains(&value) => {
                        *register.lock().unwrap_or_else(|p| p.into_inner()) = value;
                        (CommandOutcome::Applied, None, Some(value))
                    }
                    other => (
                        CommandOutcome::Rejected,
                        Some(format!("not in this agent's envelope: {other:?}")),
                        None,
                    ),
                };
                ws.send(text(&AgentToServer::CommandResult(CommandResult {
                    id: cmd.id,
                    at: time::OffsetDateTime::now_utc(),
                    outcome,
                    reason,
                    before: Some(before),
                    after,
                }))?)
                .await?;
                if let Some(v) = after {
                    ws.send(text(&state(v, ControlSource::Manual))?).await?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_homeowner_raises_a_setpoint_on_the_controls_page_and_sees_the_read_back_value_live()
-> anyhow::Result<()> {
    let db = TestDb::fresh().await;
    let server = TestServer::start(&db.url).await?;
    let conn = server.state.db.clone();
    let seed = admin::seed_demo(&conn).await?;
    let homeowner = seed
        .logins
        .iter()
        .find(|l| l.role == Role::Homeowner)
        .context("the demo has a homeowner")?
        .clone();
    let (agent_id, secret) = admin::create_agent(&conn, seed.site.site_id, "fake agent").await?;
    let register = Arc::new(Mutex::new(21.0));
    let agent = tokio::spawn(fake_agent(
        server.agent_ws_url(),
        agent_id,
        secret,
        server.state.hub.clone(),
        seed.site.site_id,
        register.clone(),
    ));
    eventually(T, "the fake agent's first control state", || {
        let conn = conn.clone();
        async move {
            store::control::states_of_site(&conn, seed.site)
                .await
                .ok()
                .filter(|s| !s.is_empty())
        }
    })
    .await?;

    let out = tempfile::tempdir()?;
    let controls_path = format!("/sites/{}/controls", seed.site.site_id);
    let report = browser::run(
        "controls.mjs",
        &[
            ("BASE_URL", server.base.clone()),
            ("EMAIL", homeowner.email.clone()),
            ("PASSWORD", homeowner.password.clone()),
            ("CONTROLS_PATH", controls_path),
            ("CONTROL_KEY", KEY.to_owned()),
            ("OUT_DIR", out.path().display().to_string()),
        ],
        Duration::from_secs(90),
    )
    .await?;
    assert_eq!(report["before"], 21.0, "{report}");
    assert_eq!(report["requested"], 21.1, "{report}");
    assert_eq!(report["reported"], 21.1, "{report}");
    assert_eq!(report["commanded"], 21.1, "{report}");
    assert_eq!(report["status_text"], "Toteutettu", "{report}");
    // The page was rendered before the site answered (the fake agent waits
    // for the page's live feed), so "applied" can only have come live.
    assert!(
        ["sent", "applied"].contains(&report["status_after_post"].as_str().unwrap_or("")),
        "{report}"
    );
    assert!(report["events"].as_u64().unwrap_or(0) >= 2, "{report}");
    assert_eq!(
        report["next_plus"], 21.2,
        "the next step follows the new value: {report}"
    );
    assert!(
        report["why"]
            .as_str()
            .unwrap_or("")
            .starts_with("Käsiohjaus"),
        "{report}"
    );
    // The agent's own note came with the new state and replaced the old one.
    assert_eq!(report["note"], MANUAL_NOTE, "{report}");
    assert_eq!(report["note_hidden"], false, "{report}");

    // The fake device holds the new value, and the server recorded it all.
    assert_eq!(*register.lock().unwrap_or_else(|p| p.into_inner()), 21.1);
    let (chain, head) = store::audit::chain_of_site(&conn, seed.site).await?;
    let actions: Vec<&str> = chain.iter().map(|c| c.entry.action.as_str()).collect();
    assert_eq!(actions, ["set", "result"]);
    assert_eq!(chain[0].entry.actor_name, "Demo homeowner");
    assert_eq!(
        server::domain::audit::verify(seed.site.site_id, &chain, head.as_ref()),
        Ok(2)
    );
    let id = chain[0]
        .entry
        .command_id
        .context("the entry names its command")?;
    let cmd = store::control::find_command(&conn, id)
        .await?
        .context("stored")?;
    assert_eq!(cmd.status, CommandStatus::Applied);
    assert_eq!(cmd.value_after, Some(21.1));

    agent.abort();
    server.stop();
    db.drop_now().await;
    Ok(())
}
