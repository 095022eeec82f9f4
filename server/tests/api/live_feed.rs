//! The browsers' live feed of a site.

use crate::helpers::{batch, reading, refused_status, spawn_app};

#[tokio::test]
async fn a_viewer_gets_a_snapshot_then_readings_then_agent_offline() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    app.login_ok(&seed.homeowner).await;
    let mut viewer = app.live(seed.site.site_id).await.expect("upgraded");

    let snapshot = viewer.next_json().await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["agent_online"], false);
    assert_eq!(snapshot["values"].as_array().unwrap().len(), 0);

    let mut agent = app.agent_with_hello(&seed.agent).await;
    let online = viewer.next_json().await;
    assert_eq!(online["type"], "agent_status");
    assert_eq!(online["online"], true);

    agent
        .request(&batch(
            1,
            vec![
                reading("outdoor_temp", 0, -3.5),
                reading("compressor", 0, 1.0),
            ],
        ))
        .await;
    let update = viewer.next_json().await;
    assert_eq!(update["type"], "readings");
    let values = update["values"].as_array().unwrap();
    assert_eq!(values.len(), 2);
    let outdoor = values.iter().find(|v| v["value"] == -3.5).unwrap();
    assert_eq!(outdoor["ts"], "2026-11-21T12:00:00Z");
    assert_eq!(outdoor["quality"], "good");

    agent.close().await;
    let offline = viewer.next_of_type("agent_status").await;
    assert_eq!(offline["online"], false);
}

#[tokio::test]
async fn a_late_viewer_gets_the_newest_values_in_its_snapshot() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.agent_with_hello(&seed.agent).await;
    agent
        .request(&batch(
            1,
            vec![
                reading("outdoor_temp", 0, -3.5),
                reading("outdoor_temp", 60, -4.0),
            ],
        ))
        .await;
    app.login_ok(&seed.technician).await;
    let mut viewer = app.live(seed.site.site_id).await.expect("upgraded");
    let snapshot = viewer.next_json().await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["agent_online"], true);
    let values = snapshot["values"].as_array().unwrap();
    assert_eq!(values.len(), 1);
    assert_eq!(values[0]["value"], -4.0);
    assert_eq!(snapshot["last_reading_at"], "2026-11-21T12:01:00Z");
}

#[tokio::test]
async fn every_viewer_receives_the_update() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let installer = app
        .create_person(seed.org, server::domain::Role::Installer, None)
        .await;
    let other = app.new_browser();
    app.login_ok(&seed.homeowner).await;
    other.login_ok(&installer).await;
    let mut viewers = Vec::new();
    for browser in [&app.browser, &app.browser, &other] {
        let mut v = browser.live(seed.site.site_id).await.expect("upgraded");
        assert_eq!(v.next_json().await["type"], "snapshot");
        viewers.push(v);
    }
    let mut agent = app.agent_with_hello(&seed.agent).await;
    agent
        .request(&batch(1, vec![reading("supply_temp", 0, 41.5)]))
        .await;
    for v in &mut viewers {
        let update = v.next_of_type("readings").await;
        assert_eq!(update["values"][0]["value"], 41.5);
    }
}

#[tokio::test]
async fn the_live_feed_without_a_session_is_refused_without_upgrade() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let err = app
        .live(seed.site.site_id)
        .await
        .err()
        .expect("no upgrade without a session");
    assert_eq!(refused_status(&err), Some(303), "{err}");
}

#[tokio::test]
async fn the_live_feed_ends_when_the_session_expires() {
    // Regression: the feed used to outlive the session that opened it (the
    // socket stayed open, streaming, for as long as the browser kept it).
    let app = spawn_app().await;
    let seed = app.seed().await;
    let ttl = i64::try_from(app.state.sessions.ttl().as_secs()).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let almost_expired = app
        .state
        .sessions
        .issue(seed.homeowner.id, now - ttl + 2)
        .unwrap();
    app.set_cookie("hc_session", &almost_expired);
    let mut viewer = app.live(seed.site.site_id).await.expect("upgraded");
    assert_eq!(viewer.next_json().await["type"], "snapshot");
    let started = std::time::Instant::now();
    viewer.closed().await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
}
