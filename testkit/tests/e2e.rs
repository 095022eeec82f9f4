//! End to end: the real server, agent and simulated EH-203 on random ports,
//! against the database `TEST_DB` names (SQLite or PostgreSQL), watched through
//! the live feed and through a real headless Chromium.

use std::time::Duration;

use server::store::{catalogue, readings};
use testkit::{Stack, browser, eventually, stack::RunningAgent};

const T: Duration = Duration::from_secs(20);

async fn point_id(stack: &Stack, key: &str) -> anyhow::Result<String> {
    let points = catalogue::points_of_site(&stack.server.state.db, stack.site).await?;
    let p = points
        .iter()
        .find(|p| p.key == key)
        .ok_or_else(|| anyhow::anyhow!("no point {key}"))?;
    Ok(p.id.to_string())
}

fn value_of(msg: &serde_json::Value, point: &str) -> Option<f64> {
    msg["values"]
        .as_array()?
        .iter()
        .find(|v| v["point_id"] == point)?["value"]
        .as_f64()
}

#[tokio::test]
async fn readings_from_the_simulated_heat_pump_are_stored_and_reach_a_subscribed_live_client()
-> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let user = stack.login_homeowner().await?;
    let page = user.get(stack.url(&stack.site_path())).send().await?;
    assert_eq!(page.status(), 200);
    let html = page.text().await?;
    assert!(html.contains("data-live-url"), "dashboard markup");

    let mut feed = stack.open_live_feed(&user).await?;
    let snapshot = feed.next_json(T).await?;
    assert_eq!(snapshot["type"], "snapshot");
    let outdoor = point_id(&stack, "outdoor_temp").await?;
    let deadline = tokio::time::Instant::now() + T;
    let first = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Some(v) = value_of(&feed.next_of("readings", left).await?, &outdoor) {
            break v;
        }
    };
    assert!(
        (-40.0..=40.0).contains(&first),
        "outdoor temperature {first} is plausible"
    );

    // Every enabled point of the profile is stored.
    let points = catalogue::points_of_site(&stack.server.state.db, stack.site).await?;
    assert_eq!(points.len(), 10, "6 temperatures and 4 lamps");
    for p in &points {
        let db = stack.server.state.db.clone();
        let id = p.id;
        eventually(T, &format!("a stored reading of {}", p.key), || {
            let db = db.clone();
            async move { readings::count(&db, id).await.ok().filter(|n| *n > 0) }
        })
        .await?;
    }
    stack.cleanup().await
}

#[tokio::test]
async fn an_alarm_raised_at_the_heat_pump_reaches_the_live_feed() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let user = stack.login_homeowner().await?;
    let mut feed = stack.open_live_feed(&user).await?;
    feed.next_of("snapshot", T).await?;
    // Wait until the catalogue exists (the agent's hello), then raise the alarm.
    let alarm = eventually(T, "the alarm_a point", || {
        let s = &stack;
        async move { point_id(s, "alarm_a").await.ok() }
    })
    .await?;
    stack.sim.set_alarm(agent::sim::Alarm::A, true);
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let msg = feed
            .next_of(
                "readings",
                deadline.saturating_duration_since(tokio::time::Instant::now()),
            )
            .await?;
        if value_of(&msg, &alarm) == Some(1.0) {
            break;
        }
    }
    stack.cleanup().await
}

#[tokio::test]
async fn a_stopped_agent_is_shown_offline_and_a_restarted_one_resumes_the_feed()
-> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    let user = stack.login_homeowner().await?;
    let mut feed = stack.open_live_feed(&user).await?;
    feed.next_of("readings", T).await?;
    if let Some(a) = stack.agent.take() {
        a.stop().await?;
    }
    let offline = feed.next_of("agent_status", T).await?;
    assert_eq!(offline["online"], false);
    stack.agent = Some(RunningAgent::start(
        &stack.server.agent_ws_url(),
        &stack.agent_creds,
        stack.sim_addr,
        Duration::from_millis(300),
    )?);
    let online = feed.next_of("agent_status", T).await?;
    assert_eq!(online["online"], true);
    feed.next_of("readings", T).await?;
    stack.cleanup().await
}

#[tokio::test]
async fn a_heat_pump_that_stops_answering_is_marked_offline_and_resumes_by_itself()
-> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let user = stack.login_homeowner().await?;
    let mut feed = stack.open_live_feed(&user).await?;
    feed.next_of("readings", T).await?;
    stack.sim.set_silent(true); // power cut
    let db = stack.server.state.db.clone();
    let site = stack.site;
    let offline = || {
        let db = db.clone();
        async move {
            use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
            server::store::entities::devices::Entity::find()
                .filter(server::store::entities::devices::Column::SiteId.eq(site.site_id.0))
                .one(&db)
                .await
                .ok()
                .flatten()
                .and_then(|d| d.online)
        }
    };
    eventually(
        Duration::from_secs(30),
        "the device to be reported offline",
        || {
            let f = offline();
            async move { f.await.filter(|online| !online) }
        },
    )
    .await?;
    stack.sim.set_silent(false); // power back
    eventually(
        Duration::from_secs(30),
        "the device to be reported online again",
        || {
            let f = offline();
            async move { f.await.filter(|online| *online) }
        },
    )
    .await?;
    feed.next_of("readings", T).await?;
    stack.cleanup().await
}

#[tokio::test]
async fn the_homeowner_sees_a_value_appear_and_change_live_in_a_real_browser() -> anyhow::Result<()>
{
    let stack = Stack::start().await?;
    let out = tempfile::tempdir()?;
    let report = browser::run(
        "live_dashboard.mjs",
        &[
            ("BASE_URL", stack.server.base.clone()),
            ("EMAIL", stack.homeowner.email.clone()),
            ("PASSWORD", stack.homeowner.password.clone()),
            ("SITE_PATH", stack.site_path()),
            ("OUT_DIR", out.path().display().to_string()),
        ],
        Duration::from_secs(90),
    )
    .await?;
    assert!(report["updates"].as_u64().unwrap_or(0) >= 1, "{report}");
    assert_ne!(report["first"], serde_json::Value::Null);
    stack.cleanup().await
}

#[tokio::test]
async fn a_homeowner_gets_404_for_another_organisations_site_in_a_real_browser()
-> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let report = browser::run(
        "tenant_isolation.mjs",
        &[
            ("BASE_URL", stack.server.base.clone()),
            ("EMAIL", stack.foreign_homeowner.email.clone()),
            ("PASSWORD", stack.foreign_homeowner.password.clone()),
            ("FOREIGN_SITE_PATH", stack.site_path()),
        ],
        Duration::from_secs(90),
    )
    .await?;
    assert_eq!(report["status"], 404, "{report}");
    stack.cleanup().await
}
