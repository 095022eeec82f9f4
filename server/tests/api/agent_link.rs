//! The agents' WebSocket link: authentication, handshake, batches.

use protocol::{Ack, AgentToServer, ErrorCode, ErrorReply, ServerToAgent};
use server::domain::AgentId;

use crate::helpers::{TestAgent, batch, reading, refused_status, spawn_app};

fn error_code(msg: &ServerToAgent) -> Option<ErrorCode> {
    match msg {
        ServerToAgent::Error(ErrorReply { code, .. }) => Some(*code),
        _ => None,
    }
}

fn ack(seq: u64) -> ServerToAgent {
    ServerToAgent::Ack(Ack { seq })
}

#[tokio::test]
async fn a_connection_without_a_valid_bearer_token_gets_401_and_no_upgrade() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let other = app.create_agent(seed.site.site_id).await;
    let cases = [
        None,
        Some("Bearer".to_owned()),
        Some("Bearer garbage".to_owned()),
        Some(format!("Basic {}", seed.agent.secret)),
        Some(format!("Bearer not-a-uuid.{}", seed.agent.secret)),
        // Right id, wrong secret; and another agent's secret.
        Some(format!("Bearer {}.{}", seed.agent.id, "x".repeat(43))),
        Some(format!("Bearer {}.{}", seed.agent.id, other.secret)),
        // Unknown agent.
        Some(format!("Bearer {}.{}", AgentId::new(), seed.agent.secret)),
    ];
    for auth in cases {
        let err = TestAgent::connect(&app, auth.as_deref())
            .await
            .err()
            .unwrap_or_else(|| panic!("{auth:?} was upgraded"));
        assert_eq!(refused_status(&err), Some(401), "{auth:?}: {err}");
    }
}

#[tokio::test]
async fn hello_gets_a_welcome_naming_the_site() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.agent(&seed.agent).await;
    match agent.hello(seed.agent.id).await {
        ServerToAgent::Welcome(w) => {
            assert_eq!(w.version, protocol::PROTOCOL_VERSION);
            assert_eq!(w.site_id, seed.site.site_id.0);
            assert_eq!(w.site_id, seed.agent.site.0);
            assert_eq!(w.last_acked_seq, None);
        }
        other => panic!("expected welcome, got {other:?}"),
    }
}

#[tokio::test]
async fn hello_with_an_unsupported_version_is_refused_and_the_link_closed() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.agent(&seed.agent).await;
    let reply = agent
        .hello_version(seed.agent.id, protocol::PROTOCOL_VERSION + 1)
        .await;
    assert_eq!(error_code(&reply), Some(ErrorCode::UnsupportedVersion));
    assert_eq!(agent.recv().await, None, "the server closes the link");
}

#[tokio::test]
async fn hello_naming_another_agent_is_refused() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.agent(&seed.agent).await;
    let reply = agent.hello(AgentId::new()).await;
    assert_eq!(error_code(&reply), Some(ErrorCode::AgentMismatch));
}

#[tokio::test]
async fn readings_before_hello_get_hello_required() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.agent(&seed.agent).await;
    let reply = agent
        .request(&batch(1, vec![reading("outdoor_temp", 0, -3.5)]))
        .await;
    assert_eq!(error_code(&reply), Some(ErrorCode::HelloRequired));
    assert_eq!(app.readings_count().await, 0);
    // The session goes on: hello still works.
    assert!(matches!(
        agent.hello(seed.agent.id).await,
        ServerToAgent::Welcome(_)
    ));
}

#[tokio::test]
async fn a_malformed_message_gets_an_error_and_the_session_keeps_working() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.agent_with_hello(&seed.agent).await;
    for junk in [
        "{not json",
        r#"{"seq":1}"#,
        r#"{"type":"readings","seq":"one"}"#,
    ] {
        agent.send_text(junk).await;
        let reply = agent.reply().await;
        assert_eq!(
            error_code(&reply),
            Some(ErrorCode::MalformedMessage),
            "{junk}"
        );
    }
    let reply = agent
        .request(&batch(1, vec![reading("outdoor_temp", 0, -3.5)]))
        .await;
    assert_eq!(reply, ack(1));
    assert_eq!(app.readings_count().await, 1);
}

#[tokio::test]
async fn an_unknown_message_type_is_ignored() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.agent_with_hello(&seed.agent).await;
    agent.send_text(r#"{"type":"telemetry_v9","x":1}"#).await;
    let reply = agent
        .request(&batch(1, vec![reading("outdoor_temp", 0, 1.0)]))
        .await;
    assert_eq!(
        reply,
        ack(1),
        "no reply to the unknown message, then the ack"
    );
}

#[tokio::test]
async fn a_batch_is_acked_and_stored_and_a_resent_batch_stores_nothing_twice() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.agent_with_hello(&seed.agent).await;
    let readings = vec![
        reading("outdoor_temp", 0, -3.5),
        reading("supply_temp", 0, 35.25),
        reading("compressor", 0, 1.0),
        reading("outdoor_temp", 60, -3.75),
    ];
    assert_eq!(agent.request(&batch(7, readings.clone())).await, ack(7));
    assert_eq!(app.readings_count().await, 4);

    assert_eq!(agent.request(&batch(7, readings.clone())).await, ack(7));
    assert_eq!(
        app.readings_count().await,
        4,
        "a re-sent batch is stored once"
    );

    // After a reconnect the server tells which batch it has, and a resend
    // under the same seq is still harmless.
    agent.close().await;
    let mut again = app.agent(&seed.agent).await;
    match again.hello(seed.agent.id).await {
        ServerToAgent::Welcome(w) => assert_eq!(w.last_acked_seq, Some(7)),
        other => panic!("expected welcome, got {other:?}"),
    }
    assert_eq!(again.request(&batch(7, readings)).await, ack(7));
    assert_eq!(app.readings_count().await, 4);
}

#[tokio::test]
async fn stored_values_are_the_ones_sent() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.agent_with_hello(&seed.agent).await;
    assert_eq!(
        agent
            .request(&batch(
                1,
                vec![
                    reading("supply_temp", 0, 35.25),
                    reading("supply_temp", 10, 36.5)
                ]
            ))
            .await,
        ack(1)
    );
    let points = server::store::catalogue::points_of_site(app.db(), seed.site)
        .await
        .unwrap();
    let supply = points.iter().find(|p| p.key == "supply_temp").unwrap();
    assert_eq!(supply.unit, "degC");
    let latest = server::store::readings::latest(app.db(), supply.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.value, 36.5);
    assert_eq!(
        latest.ts_ms,
        (time::macros::datetime!(2026-11-21 12:00:10 UTC).unix_timestamp()) * 1000
    );
}

#[tokio::test]
async fn readings_for_unknown_points_are_skipped_and_the_rest_stored() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.agent_with_hello(&seed.agent).await;
    let mut foreign_device = reading("outdoor_temp", 0, 1.0);
    foreign_device.device = "boiler".into();
    let readings = vec![
        reading("outdoor_temp", 0, -3.5),
        reading("no_such_point", 0, 1.0),
        foreign_device,
        reading("supply_temp", 1, 35.0),
    ];
    assert_eq!(agent.request(&batch(1, readings)).await, ack(1));
    assert_eq!(app.readings_count().await, 2);
}

#[tokio::test]
async fn a_batch_larger_than_the_limit_is_refused_as_invalid() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.agent_with_hello(&seed.agent).await;
    let too_many = (0..=protocol::MAX_READINGS_PER_BATCH)
        .map(|i| reading("outdoor_temp", i64::try_from(i).unwrap(), 1.0))
        .collect();
    let reply = agent.request(&batch(3, too_many)).await;
    match reply {
        ServerToAgent::Error(e) => {
            assert_eq!(e.code, ErrorCode::InvalidBatch);
            assert_eq!(e.seq, Some(3));
        }
        other => panic!("expected invalid_batch, got {other:?}"),
    }
    assert_eq!(app.readings_count().await, 0);
    // A batch of exactly the limit is fine.
    let at_limit = (0..protocol::MAX_READINGS_PER_BATCH)
        .map(|i| reading("outdoor_temp", i64::try_from(i).unwrap(), 1.0))
        .collect();
    assert_eq!(agent.request(&batch(4, at_limit)).await, ack(4));
    assert_eq!(
        app.readings_count().await,
        u64::try_from(protocol::MAX_READINGS_PER_BATCH).unwrap()
    );
}

#[tokio::test]
async fn device_status_is_recorded_without_a_reply() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.agent_with_hello(&seed.agent).await;
    agent
        .send(&AgentToServer::DeviceStatus(protocol::DeviceStatus {
            device: "heatpump".into(),
            online: false,
            last_ok: None,
            last_error: Some("timeout".into()),
            consecutive_failures: 3,
        }))
        .await;
    assert_eq!(
        agent
            .request(&batch(1, vec![reading("outdoor_temp", 0, 1.0)]))
            .await,
        ack(1)
    );
}

#[tokio::test]
async fn a_reading_repeated_within_one_batch_is_stored_once() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.agent_with_hello(&seed.agent).await;
    let twice = vec![
        reading("outdoor_temp", 0, -3.5),
        reading("outdoor_temp", 0, -3.5),
    ];
    assert_eq!(agent.request(&batch(1, twice)).await, ack(1));
    assert_eq!(app.readings_count().await, 1);
}

#[tokio::test]
async fn a_hello_naming_a_point_twice_is_welcomed_and_keeps_the_first() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.agent(&seed.agent).await;
    let mut devices = crate::helpers::catalogue();
    let dup = devices[0].points[0].clone();
    devices[0].points.push(dup);
    let hello = protocol::AgentToServer::Hello(protocol::Hello {
        agent_id: seed.agent.id.0,
        version: protocol::PROTOCOL_VERSION,
        capabilities: vec![],
        software: None,
        devices,
        envelope: None,
    });
    match agent.request(&hello).await {
        protocol::ServerToAgent::Welcome(_) => {}
        other => panic!("expected welcome, got {other:?}"),
    }
}
