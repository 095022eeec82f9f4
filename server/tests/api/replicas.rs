//! Several server replicas on one PostgreSQL database (behind one load
//! balancer): what an agent delivers to one replica reaches browsers on
//! another, a command posted on one reaches the agent on another, a dead
//! replica does not keep its sites online, and relaying resumes by itself
//! after PostgreSQL comes back. PostgreSQL only: SQLite is one process.
//!
//! Replica A is the test's [`TestApp`], replica B a second `Application` on
//! the same database in this process ([`spawn_replica`]), except where a
//! replica must die: that one is the real `server` binary, killed with
//! SIGKILL or stopped with SIGTERM.

use std::time::Duration;

use protocol::{AgentToServer, CommandOutcome, ControlRequest, ServerToAgent};
use server::domain::SiteId;
use testkit::faults::procs::Proc;

use crate::{
    controls::{SETPOINT, location, next_command, post, result},
    helpers::{
        Browser, LiveViewer, Outage, TestAgent, TestApp, WAIT, batch, eventually, postgres_only,
        reading, spawn_app, spawn_replica,
    },
};

/// Open a live feed and check its first message is a snapshot.
async fn viewer(b: &Browser, site: SiteId) -> (LiveViewer, serde_json::Value) {
    let mut v = b.live(site).await.expect("upgraded");
    let snapshot = v.next_json().await;
    assert_eq!(snapshot["type"], "snapshot");
    (v, snapshot)
}

/// The control state an agent reports after applying a setpoint, built from
/// JSON so the test does not depend on every field of the struct.
fn control_state(value: f64) -> AgentToServer {
    AgentToServer::from_json(&format!(
        r#"{{"type":"control_state","device":"pop1","point":"room3_floor_setpoint",
            "commanded":{value},"reported":{value},"source":"manual"}}"#
    ))
    .expect("a valid control_state")
}

#[tokio::test]
async fn a_viewer_on_one_replica_sees_readings_and_presence_of_an_agent_on_another() {
    if !postgres_only("a_viewer_on_one_replica_sees_readings_and_presence_of_an_agent_on_another") {
        return;
    }
    let a = spawn_app().await;
    let b = spawn_replica(&a).await;
    let seed = a.seed().await;
    let site = seed.site.site_id;
    b.login_ok(&seed.homeowner).await;
    a.login_ok(&seed.homeowner).await;
    let (mut on_b, snapshot) = viewer(&b, site).await;
    assert_eq!(snapshot["agent_online"], false);
    let (mut on_a, _) = viewer(&a, site).await;

    let mut agent = a.agent_with_hello(&seed.agent).await;
    let online = on_b.next_of_type("agent_status").await;
    assert_eq!(online["online"], true);
    assert!(b.state.hub.agent_online(site));
    assert!(b.state.links.is_connected(seed.agent.id));

    for seq in 1..=2 {
        let value = -3.5 - seq as f64;
        let reply = agent
            .request(&batch(
                seq,
                vec![
                    reading("outdoor_temp", seq as i64, value),
                    reading("compressor", seq as i64, 1.0),
                ],
            ))
            .await;
        assert_eq!(reply, ServerToAgent::Ack(protocol::Ack { seq }));
        for (who, feed) in [("b", &mut on_b), ("a", &mut on_a)] {
            let update = feed.next_of_type("readings").await;
            let values = update["values"].as_array().unwrap();
            assert_eq!(values.len(), 2, "replica {who}: {update}");
            assert!(
                values.iter().any(|v| v["value"] == value),
                "replica {who} got batch {seq} (and not a repeat): {update}"
            );
        }
    }
    // A page loaded on B shows what the agent delivered to A.
    let (_, late) = viewer(&b, site).await;
    assert_eq!(late["agent_online"], true);
    assert_eq!(late["values"].as_array().unwrap().len(), 2);

    agent.close().await;
    let offline = on_b.next_of_type("agent_status").await;
    assert_eq!(offline["online"], false);
    assert!(!b.state.links.is_connected(seed.agent.id));
}

#[tokio::test]
async fn a_command_posted_on_one_replica_reaches_the_agent_on_another_and_its_result_shows_there() {
    if !postgres_only(
        "a_command_posted_on_one_replica_reaches_the_agent_on_another_and_its_result_shows_there",
    ) {
        return;
    }
    let a = spawn_app().await;
    let b = spawn_replica(&a).await;
    let seed = a.seed().await;
    let site = seed.site.site_id;
    let mut agent = a.controllable_agent(&seed.agent).await;
    b.login_ok(&seed.homeowner).await;
    let (mut feed, _) = viewer(&b, site).await;
    eventually("replica B knows the agent is connected to A", || async {
        b.state.links.is_connected(seed.agent.id)
    })
    .await;

    let res = post(
        &b,
        site,
        "controls/setpoint",
        &[("control", SETPOINT), ("value", "21,5")],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        location(&res),
        format!("/sites/{site}/controls?notice=sent"),
        "B knows the agent is online at A"
    );
    // Delivered through the poke relayed to A (the per-ping safety net would
    // take 30 s, longer than the test waits).
    let cmd = next_command(&mut agent).await;
    assert_eq!(
        cmd.request,
        ControlRequest::Set {
            device: "pop1".into(),
            point: "room3_floor_setpoint".into(),
            value: 21.5,
            until: None
        }
    );
    let sent = feed.next_of_type("command").await;
    assert_eq!(
        (sent["status"].as_str(), sent["command_id"].as_str()),
        (Some("sent"), Some(cmd.id.to_string().as_str()))
    );

    agent
        .send(&result(
            cmd.id,
            CommandOutcome::Applied,
            None,
            21.0,
            Some(21.5),
        ))
        .await;
    agent.send(&control_state(21.5)).await;
    // The next command message is the result: the replica's own "sent" is
    // not echoed back to it through the relay.
    let applied = feed.next_of_type("command").await;
    assert_eq!(applied["status"], "applied", "{applied}");
    assert_eq!(applied["after"], 21.5);
    let state = feed.next_of_type("control_state").await;
    assert_eq!(state["control"], SETPOINT);
    assert_eq!(state["reported"], 21.5);
    let page = b.get(&format!("/sites/{site}/controls")).await;
    assert_eq!(page.status(), 200);
}

#[tokio::test]
async fn relaying_resumes_by_itself_after_postgresql_comes_back() {
    if !postgres_only("relaying_resumes_by_itself_after_postgresql_comes_back") {
        return;
    }
    let a = spawn_app().await;
    let b = spawn_replica(&a).await;
    let seed = a.seed().await;
    let site = seed.site.site_id;
    let mut agent = a.controllable_agent(&seed.agent).await;
    b.login_ok(&seed.homeowner).await;
    let (mut feed, _) = viewer(&b, site).await;
    eventually("replica B sees the agent online", || async {
        b.state.hub.agent_online(site)
    })
    .await;
    let relays = [
        a.state.relay.clone().expect("PostgreSQL has a relay"),
        b.state.relay.clone().expect("PostgreSQL has a relay"),
    ];

    let outage = Outage::of(&a.db.url);
    outage.begin().await;
    eventually("both listeners noticed the outage", || async {
        relays.iter().all(|r| !r.is_listening())
    })
    .await;
    outage.end().await;
    eventually("both listeners are back", || async {
        relays.iter().all(|r| r.is_listening())
    })
    .await;

    // What was said while nobody listened is lost, so B's viewers get a
    // fresh snapshot (the Controls page re-reads itself on one).
    let snapshot = feed.next_of_type("snapshot").await;
    assert_eq!(snapshot["agent_online"], true, "{snapshot}");

    let reply = agent
        .request(&batch(1, vec![reading("outdoor_temp", 0, -7.25)]))
        .await;
    assert_eq!(reply, ServerToAgent::Ack(protocol::Ack { seq: 1 }));
    let update = feed.next_of_type("readings").await;
    assert_eq!(update["values"][0]["value"], -7.25);

    let res = post(
        &b,
        site,
        "controls/setpoint",
        &[("control", SETPOINT), ("value", "22")],
    )
    .await;
    assert_eq!(res.status(), 303);
    let cmd = next_command(&mut agent).await;
    assert!(matches!(cmd.request, ControlRequest::Set { value, .. } if value == 22.0));
}

/// The real server binary as replica A, on the test's database, beating
/// every `heartbeat_ms`.
async fn server_process(
    app: &TestApp,
    heartbeat_ms: u64,
    log: &std::path::Path,
) -> (Proc, Browser) {
    let port = testkit::faults::free_port().unwrap();
    let env = vec![
        ("SERVER_DATABASE__URL".to_owned(), app.db.url.clone()),
        ("SERVER_HTTP__HOST".to_owned(), "127.0.0.1".to_owned()),
        ("SERVER_HTTP__PORT".to_owned(), port.to_string()),
        ("SERVER_HTTP__WORKERS".to_owned(), "1".to_owned()),
        (
            "SERVER_REPLICAS__HEARTBEAT_MS".to_owned(),
            heartbeat_ms.to_string(),
        ),
        (
            "SERVER_CONFIG_DIR".to_owned(),
            "/nonexistent-homecontrol-config".to_owned(),
        ),
        ("SERVER_LOG__FILTER".to_owned(), "info".to_owned()),
    ];
    let mut proc = Proc::new(
        "server",
        env!("CARGO_BIN_EXE_server").into(),
        &["serve"],
        env,
        log.to_owned(),
    );
    proc.spawn().unwrap();
    let browser = Browser::new(port);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while browser
        .client
        .get(browser.url("/health"))
        .send()
        .await
        .is_err()
    {
        proc.ensure_alive().unwrap();
        assert!(
            std::time::Instant::now() < deadline,
            "the server process did not answer /health; log:\n{}",
            proc.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (proc, browser)
}

/// An agent connected to the replica behind `b`, after its welcome.
async fn agent_at(b: &Browser, creds: &crate::helpers::AgentCreds) -> TestAgent {
    let mut agent = TestAgent::connect(b, Some(&creds.bearer()))
        .await
        .expect("the agent connects");
    match agent.hello(creds.id).await {
        ServerToAgent::Welcome(_) => agent,
        other => panic!("expected welcome, got {other:?}"),
    }
}

#[tokio::test]
async fn a_replica_killed_without_a_goodbye_stops_counting_its_agents_online() {
    if !postgres_only("a_replica_killed_without_a_goodbye_stops_counting_its_agents_online") {
        return;
    }
    let b = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut a, a_browser) = server_process(&b, 200, &dir.path().join("a.log")).await;
    let seed = b.seed().await;
    let site = seed.site.site_id;
    b.login_ok(&seed.homeowner).await;
    let (mut feed, _) = viewer(&b, site).await;
    let _agent = agent_at(&a_browser, &seed.agent).await;
    let online = feed.next_of_type("agent_status").await;
    assert_eq!(online["online"], true);

    a.kill().await.unwrap();

    // A announced a 200 ms heartbeat; three missed ones and it is gone.
    let offline = feed.next_of_type("agent_status").await;
    assert_eq!(offline["online"], false);
    assert!(!b.state.links.is_connected(seed.agent.id));
}

#[tokio::test]
async fn a_replica_that_shuts_down_says_goodbye_and_its_agents_go_offline_at_once() {
    if !postgres_only("a_replica_that_shuts_down_says_goodbye_and_its_agents_go_offline_at_once") {
        return;
    }
    let b = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    // A heartbeat this long would expire the replica only after three
    // minutes, far beyond the test's wait: only the goodbye can pass it.
    let (mut a, a_browser) = server_process(&b, 60_000, &dir.path().join("a.log")).await;
    let seed = b.seed().await;
    let site = seed.site.site_id;
    b.login_ok(&seed.homeowner).await;
    let (mut feed, _) = viewer(&b, site).await;
    let _agent = agent_at(&a_browser, &seed.agent).await;
    assert_eq!(feed.next_of_type("agent_status").await["online"], true);

    // SIGTERM: the server stops (closing its agent links after its shutdown
    // timeout) and says goodbye.
    a.terminate(WAIT).await.unwrap();
    let log = a.log_tail(20);
    assert!(log.contains("said goodbye"), "{log}");
    let offline = feed.next_of_type("agent_status").await;
    assert_eq!(offline["online"], false);
}
