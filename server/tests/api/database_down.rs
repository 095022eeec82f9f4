//! When PostgreSQL goes away, people see a calm "data temporarily
//! unavailable" page, `/health` keeps answering, and agents are told to send
//! again later instead of being acknowledged (or told their secret is wrong).

use protocol::{ErrorCode, ServerToAgent};
use server::{config::Settings, domain::UserId, startup::Application, store};

use crate::helpers::{
    Outage, TestAgent, TestApp, TestDb, batch, eventually, postgres_only, reading, refused_status,
    spawn_app_on, start,
};

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn assert_unavailable_page(app: &TestApp, path: &str) {
    let res = app.get(path).await;
    assert_eq!(res.status(), 503, "{path}");
    let ctype = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ctype.starts_with("text/html"), "{path}: {ctype}");
    let html = res.text().await.unwrap();
    assert!(
        html.to_lowercase().contains("temporarily unavailable"),
        "{path}: {html}"
    );
    for leak in [
        "sqlx",
        "SQLSTATE",
        "does not exist",
        "Connection refused",
        "postgres://",
    ] {
        assert!(!html.contains(leak), "{path} leaks {leak}: {html}");
    }
}

async fn assert_health_says_unavailable(app: &TestApp) {
    let (health, ready) = tokio::join!(app.get("/health"), app.get("/health/ready"));
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["database"], "unavailable");
    assert_eq!(ready.status(), 503);
}

#[tokio::test]
async fn when_the_database_is_dropped_pages_health_and_agents_degrade_calmly() {
    if !postgres_only("when_the_database_is_dropped_pages_health_and_agents_degrade_calmly") {
        return;
    }
    let app = spawn_app_on(TestDb::fresh_postgres().await).await;
    let seed = app.seed().await;
    app.login_ok(&seed.homeowner).await;
    let mut agent = app.agent_with_hello(&seed.agent).await;
    let dashboard = format!("/sites/{}", seed.site.site_id);
    assert_eq!(app.get(&dashboard).await.status(), 200);

    app.db.drop_now().await;

    assert_unavailable_page(&app, &dashboard).await;
    assert_unavailable_page(&app, "/sites").await;
    assert_health_says_unavailable(&app).await;
    // The login form needs no database.
    assert_eq!(app.get("/login").await.status(), 200);

    let reply = agent
        .request(&batch(1, vec![reading("outdoor_temp", 0, 1.0)]))
        .await;
    match reply {
        ServerToAgent::Error(e) => {
            assert_eq!(e.code, ErrorCode::TemporarilyUnavailable);
            assert_eq!(e.seq, Some(1));
        }
        other => panic!("expected temporarily_unavailable, got {other:?}"),
    }
    // A new agent connection is not told that its secret is wrong.
    let err = TestAgent::connect(&app, Some(&seed.agent.bearer()))
        .await
        .err()
        .expect("no upgrade while the database is down");
    assert_eq!(refused_status(&err), Some(503), "{err}");
}

#[tokio::test]
async fn a_server_whose_postgresql_is_unreachable_starts_and_says_so() {
    // Needs no PostgreSQL server: the point is that there is none.
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("postgres://postgres@127.0.0.1:{closed_port}/nowhere");
    let settings = Settings::for_database(&url);
    let db = store::connect(&settings.database)
        .await
        .expect("opening the pool does not need the database");
    let built = Application::build_with_db(settings, db).await.unwrap();
    let app = start(built, TestDb::fresh_sqlite()).await;

    let session = app.state.sessions.issue(UserId::new(), now_unix()).unwrap();
    let agent_browser = app.new_browser();
    let login_browser = app.new_browser();
    app.set_cookie("hc_session", &session);
    let token = login_browser.csrf_token().await;

    let bogus_agent = format!("Bearer {}.x", UserId::new());
    let login_form = [
        ("email", "someone@example.test"),
        ("password", "whatever-password"),
        ("csrf_token", token.as_str()),
    ];
    // Each request waits for the pool's acquire timeout, so run them together.
    let ((), (), agent, login) = tokio::join!(
        assert_unavailable_page(&app, "/sites"),
        assert_health_says_unavailable(&app),
        TestAgent::connect(&agent_browser, Some(&bogus_agent)),
        login_browser.post_form("/login", &login_form),
    );
    let err = agent.err().expect("no upgrade while the database is down");
    assert_eq!(refused_status(&err), Some(503), "{err}");
    // A login attempt is not answered with "wrong password".
    assert_eq!(login.status(), 503);
    assert!(
        !login
            .text()
            .await
            .unwrap()
            .contains("Wrong e-mail or password")
    );
}

async fn login_notice_shown(app: &TestApp) -> bool {
    let res = app.get("/login").await;
    assert_eq!(
        res.status(),
        200,
        "the login page renders without a database"
    );
    res.text()
        .await
        .unwrap()
        .contains("Data temporarily unavailable")
}

#[tokio::test]
async fn the_login_page_shows_no_outage_notice_while_the_database_answers() {
    let app = crate::helpers::spawn_app().await;
    assert!(!login_notice_shown(&app).await);
}

#[tokio::test]
async fn after_an_outage_login_pages_and_agents_resume_by_themselves() {
    if !postgres_only("after_an_outage_login_pages_and_agents_resume_by_themselves") {
        return;
    }
    let app = spawn_app_on(TestDb::fresh_postgres().await).await;
    let seed = app.seed().await;
    app.login_ok(&seed.homeowner).await;
    let mut agent = app.agent_with_hello(&seed.agent).await;
    let dashboard = format!("/sites/{}", seed.site.site_id);
    let outage = Outage::of(&app.db.url);

    outage.begin().await;

    // The health answer is cached for a few seconds, so the notice may lag.
    eventually("the login page warns that data is unavailable", || {
        login_notice_shown(&app)
    })
    .await;
    assert_unavailable_page(&app, &dashboard).await;
    let first = batch(1, vec![reading("outdoor_temp", 0, 1.0)]);
    match agent.request(&first).await {
        ServerToAgent::Error(e) => assert_eq!(e.code, ErrorCode::TemporarilyUnavailable),
        other => panic!("expected temporarily_unavailable, got {other:?}"),
    }
    // Regression: the link must end after a refused batch. `last_acked_seq` is
    // the highest committed seq, so a later batch committing on this link would
    // make the agent forget the refused one at its next welcome.
    assert_eq!(
        agent.recv().await,
        None,
        "the server closes the link after refusing a batch"
    );

    outage.end().await;

    eventually("the login page drops the notice", || async {
        !login_notice_shown(&app).await
    })
    .await;
    eventually("the dashboard renders again", || async {
        app.get(&dashboard).await.status() == 200
    })
    .await;
    // The server closed that link after refusing the batch (so no later batch
    // could commit past it); the agent reconnects and resends.
    drop(agent);
    let mut agent = app.agent_with_hello(&seed.agent).await;
    match agent.request(&first).await {
        ServerToAgent::Ack(a) => assert_eq!(a.seq, 1),
        other => panic!("expected an ack after the outage, got {other:?}"),
    }
    assert_eq!(app.readings_count().await, 1);
}
