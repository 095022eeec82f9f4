//! `GET /metrics`: hidden unless a token is configured and presented; reports
//! ingest counters, connected agents and the agents' own status reports.

use protocol::{AgentStatus, AgentToServer, ServerToAgent};
use server::{config::Settings, startup::Application};

use crate::helpers::{TestApp, TestDb, batch, eventually, reading, spawn_app, start};

const TOKEN: &str = "metrics-test-token-0123456789";

async fn spawn_app_with_metrics() -> TestApp {
    let db = TestDb::fresh().await;
    let mut settings = Settings::for_database(&db.url);
    settings.metrics.token = Some(TOKEN.into());
    let app = Application::build(settings).await.unwrap();
    start(app, db).await
}

async fn scrape(app: &TestApp, auth: Option<&str>) -> reqwest::Response {
    let mut req = app.client.get(app.url("/metrics"));
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn metrics_are_not_found_when_no_token_is_configured() {
    let app = spawn_app().await;
    assert_eq!(scrape(&app, None).await.status(), 404);
    assert_eq!(scrape(&app, Some("Bearer anything")).await.status(), 404);
}

#[tokio::test]
async fn metrics_without_the_right_bearer_token_are_not_found() {
    let app = spawn_app_with_metrics().await;
    assert_eq!(scrape(&app, None).await.status(), 404);
    assert_eq!(scrape(&app, Some("Bearer wrong")).await.status(), 404);
    assert_eq!(scrape(&app, Some(TOKEN)).await.status(), 404);
    let ok = scrape(&app, Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(ok.status(), 200);
    assert!(
        ok.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
}

#[tokio::test]
async fn metrics_report_committed_duplicate_and_rejected_readings_and_agent_status() {
    let app = spawn_app_with_metrics().await;
    let seed = app.seed().await;
    let mut agent = app.agent_with_hello(&seed.agent).await;
    let msg = batch(
        1,
        vec![
            reading("outdoor_temp", 0, 1.0),
            reading("supply_temp", 0, 2.0),
            reading("no_such_point", 0, 3.0),
        ],
    );
    for _ in 0..2 {
        assert!(matches!(agent.request(&msg).await, ServerToAgent::Ack(_)));
    }
    agent
        .send(&AgentToServer::AgentStatus(AgentStatus {
            buffered_readings: 1234,
            buffered_bytes: 56_789,
            oldest_unsent: Some(time::OffsetDateTime::now_utc() - time::Duration::minutes(5)),
            thinned_total: 0,
            dropped_total: 17,
            last_acked_seq: Some(1),
        }))
        .await;
    let auth = format!("Bearer {TOKEN}");
    let agent_label = format!("agent_id=\"{}\"", seed.agent.id);
    eventually("the agent's status shows in the metrics", || async {
        scrape(&app, Some(&auth))
            .await
            .text()
            .await
            .unwrap()
            .contains(&format!(
                "homecontrol_agent_buffered_readings{{{agent_label}}} 1234"
            ))
    })
    .await;
    let text = scrape(&app, Some(&auth)).await.text().await.unwrap();
    for line in [
        "homecontrol_ingest_batches_committed_total 2".to_owned(),
        "homecontrol_ingest_readings_committed_total 2".to_owned(),
        "homecontrol_ingest_readings_duplicate_total 2".to_owned(),
        "homecontrol_ingest_readings_rejected_total 2".to_owned(),
        "homecontrol_ingest_commit_seconds_count 2".to_owned(),
        "homecontrol_agents_connected 1".to_owned(),
        "homecontrol_database_up 1".to_owned(),
        format!("homecontrol_agent_buffered_bytes{{{agent_label}}} 56789"),
        format!("homecontrol_agent_dropped_readings{{{agent_label}}} 17"),
        format!("homecontrol_agent_last_acked_seq{{{agent_label}}} 1"),
    ] {
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }
    let age_line = text
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "homecontrol_agent_oldest_unsent_age_seconds{{{agent_label}}}"
            ))
        })
        .unwrap();
    let age: i64 = age_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((299..=400).contains(&age), "{age_line}");
    assert_eq!(
        app.state
            .metrics
            .agent_status(seed.agent.id)
            .unwrap()
            .status
            .dropped_total,
        17
    );
}
