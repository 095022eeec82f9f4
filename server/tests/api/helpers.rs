//! Shared plumbing of the integration suite: a fresh database per test, the
//! real `Application` on `127.0.0.1:0`, a browser-like HTTP client, seeding
//! through `services::admin`, a login helper, a test agent and a live viewer.
//!
//! The backend comes from `TEST_DB=sqlite|postgres` (default `sqlite`), so the
//! same tests run on both. PostgreSQL databases are cloned from a migrated
//! template whose name is derived from the migration list; the admin URL is
//! `TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use protocol::{
    ActionInfo, AgentToServer, ControlKind, DeviceInfo, Envelope, Hello, PointInfo, PointKind,
    Quality, Reading, ReadingsBatch, ServerToAgent, WritableInfo,
};
use reqwest::{
    Response,
    cookie::{CookieStore, Jar},
    header::HeaderValue,
};
use sea_orm::{DatabaseConnection, EntityTrait, PaginatorTrait};
use server::{
    config::Settings,
    domain::{AgentId, Role, SiteId, SiteRef, TenantId, UserId},
    services::admin,
    startup::Application,
    state::AppState,
    store,
};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{self, Message, client::IntoClientRequest, http},
};

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(15);

pub use testkit::db::{TestDb, postgres_only};

/// A running application and a browser-like client for it (the application
/// dereferences to its first [`Browser`]).
pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    /// The bound port.
    pub port: u16,
    /// The application's state (database, hub, session keys).
    pub state: AppState,
    /// The default browser.
    pub browser: Browser,
    /// The database; dropped (PostgreSQL) when the test ends.
    pub db: TestDb,
}

impl std::ops::Deref for TestApp {
    type Target = Browser;
    fn deref(&self) -> &Browser {
        &self.browser
    }
}

/// A cookie-keeping HTTP client that does not follow redirects, like a
/// browser tab of one person.
#[derive(Clone)]
pub struct Browser {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    /// The server's port.
    pub port: u16,
    /// The client.
    pub client: reqwest::Client,
    /// Its cookies.
    pub jar: Arc<Jar>,
}

impl Browser {
    /// A new browser with an empty cookie jar.
    pub fn new(port: u16) -> Self {
        Self::build(port, reqwest::header::HeaderMap::new())
    }

    /// A new browser set to language `lang` (it sends `Accept-Language`).
    pub fn with_language(port: u16, lang: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT_LANGUAGE,
            HeaderValue::from_str(lang).expect("a header value"),
        );
        Self::build(port, headers)
    }

    fn build(port: u16, headers: reqwest::header::HeaderMap) -> Self {
        let jar = Arc::new(Jar::default());
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("building the HTTP client");
        Self {
            address: format!("http://127.0.0.1:{port}"),
            port,
            client,
            jar,
        }
    }
}

/// Start the application on a fresh database of the configured backend.
pub async fn spawn_app() -> TestApp {
    spawn_app_on(TestDb::fresh().await).await
}

/// Start the application on a fresh database with settings changed by `tweak`.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let db = TestDb::fresh().await;
    let mut settings = Settings::for_database(&db.url);
    tweak(&mut settings);
    let app = Application::build(settings)
        .await
        .expect("building the application");
    start(app, db).await
}

/// Start the application on `db` with default test settings.
pub async fn spawn_app_on(db: TestDb) -> TestApp {
    let settings = Settings::for_database(&db.url);
    let app = Application::build(settings)
        .await
        .expect("building the application");
    start(app, db).await
}

/// Start an already built application and wait until it answers.
pub async fn start(app: Application, db: TestDb) -> TestApp {
    let (state, browser) = run(app);
    let app = TestApp {
        address: browser.address.clone(),
        port: browser.port,
        state,
        browser,
        db,
    };
    wait_healthy(&app.browser.client, &app.address).await;
    app
}

/// Run `app` in the background.
fn run(app: Application) -> (AppState, Browser) {
    server::telemetry::init_for_tests();
    let port = app.port();
    let state = app.state().clone();
    tokio::spawn(app.run_until_stopped());
    (state, Browser::new(port))
}

async fn wait_healthy(client: &reqwest::Client, address: &str) {
    let health = format!("{address}/health");
    eventually("the server answers /health", || {
        let (client, health) = (client.clone(), health.clone());
        async move { client.get(&health).send().await.is_ok() }
    })
    .await;
}

/// A second server on the database of a [`TestApp`]: another
/// replica behind the same (imagined) load balancer. It dereferences to its
/// own [`Browser`].
pub struct TestReplica {
    /// The replica's state.
    pub state: AppState,
    /// A browser talking to this replica.
    pub browser: Browser,
}

impl std::ops::Deref for TestReplica {
    type Target = Browser;
    fn deref(&self) -> &Browser {
        &self.browser
    }
}

/// Start another replica of `app` on the same database (the database stays
/// owned by `app`).
pub async fn spawn_replica(app: &TestApp) -> TestReplica {
    let app = Application::build(Settings::for_database(&app.db.url))
        .await
        .expect("building the replica");
    let (state, browser) = run(app);
    wait_healthy(&browser.client, &browser.address).await;
    TestReplica { state, browser }
}

/// Take a PostgreSQL test database away from the servers (every session
/// ended, then renamed) and give it back: what an outage or a restart of
/// PostgreSQL followed by recovery looks like to the pools and listeners,
/// without touching the shared PostgreSQL server.
pub struct Outage {
    admin: String,
    name: String,
}

impl Outage {
    /// An outage of the database at `db_url`.
    pub fn of(db_url: &str) -> Self {
        let mut url = url::Url::parse(db_url).unwrap();
        let name = url.path().trim_start_matches('/').to_owned();
        url.set_path("/postgres");
        Self {
            admin: url.to_string(),
            name,
        }
    }

    async fn exec(&self, sql: &str) {
        use sea_orm::sqlx::{Connection, postgres::PgConnection};
        let mut conn = PgConnection::connect(&self.admin).await.unwrap();
        sea_orm::sqlx::raw_sql(sea_orm::sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.close().await;
    }

    /// End every session of the database and make it unreachable.
    pub async fn begin(&self) {
        // The server's pool reconnects at once, so end its sessions and rename
        // in one statement batch; retry if a reconnect slipped in between.
        let sql = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}'; \
             ALTER DATABASE \"{0}\" RENAME TO \"{0}_away\"",
            self.name
        );
        let mut tries = 0;
        loop {
            use sea_orm::sqlx::{Connection, postgres::PgConnection};
            let mut conn = PgConnection::connect(&self.admin).await.unwrap();
            let res = sea_orm::sqlx::raw_sql(sea_orm::sqlx::AssertSqlSafe(sql.clone()))
                .execute(&mut conn)
                .await;
            let _ = conn.close().await;
            match res {
                Ok(_) => return,
                Err(e) if tries < 50 => {
                    tries += 1;
                    eprintln!("starting the outage: {e}; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("starting the outage: {e}"),
            }
        }
    }

    /// Give the database back.
    pub async fn end(&self) {
        self.exec(&format!(
            "ALTER DATABASE \"{0}_away\" RENAME TO \"{0}\"",
            self.name
        ))
        .await;
    }
}

/// Poll `check` until it is true, failing the test after [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A login created for a test.
#[derive(Debug, Clone)]
pub struct Person {
    /// Id.
    pub id: UserId,
    /// E-mail (the login).
    pub email: String,
    /// Password.
    pub password: String,
}

/// An agent's credentials.
#[derive(Debug, Clone)]
pub struct AgentCreds {
    /// Id.
    pub id: AgentId,
    /// Secret, as the operator would receive it.
    pub secret: String,
    /// Its site.
    pub site: SiteId,
}

impl AgentCreds {
    /// The `Authorization` header value.
    pub fn bearer(&self) -> String {
        format!("Bearer {}.{}", self.id, self.secret)
    }
}

/// One organisation with one site, a homeowner of it, a technician of the
/// organisation and an agent for the site.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The organisation.
    pub org: TenantId,
    /// The site.
    pub site: SiteRef,
    /// Homeowner of the site.
    pub homeowner: Person,
    /// Technician of the organisation.
    pub technician: Person,
    /// The site's agent.
    pub agent: AgentCreds,
}

impl Browser {
    /// Absolute URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `GET path` with the client's cookies.
    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("GET failed")
    }

    /// `POST path` with a form body.
    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Response {
        self.client
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .expect("POST failed")
    }
}

impl TestApp {
    /// The database the application uses.
    pub fn db(&self) -> &DatabaseConnection {
        &self.state.db
    }

    /// Another browser with its own cookies.
    pub fn new_browser(&self) -> Browser {
        Browser::new(self.port)
    }

    /// Another browser with its own cookies, set to language `lang`.
    pub fn new_browser_in(&self, lang: &str) -> Browser {
        Browser::with_language(self.port, lang)
    }

    /// Create an organisation with a unique name.
    pub async fn create_org(&self, name: &str) -> TenantId {
        let name = format!("{name} {}", uuid::Uuid::new_v4().simple());
        store::people::create_organisation(self.db(), &name)
            .await
            .expect("creating an organisation")
            .id
    }

    /// Create a site in an organisation.
    pub async fn create_site(&self, org: TenantId, name: &str) -> SiteRef {
        store::people::create_site(self.db(), org, name, "Europe/Helsinki")
            .await
            .expect("creating a site")
    }

    /// Create a user with a unique e-mail and grant `role` (on `site` for site roles).
    pub async fn create_person(&self, org: TenantId, role: Role, site: Option<SiteId>) -> Person {
        let email = format!(
            "{}-{}@example.test",
            role.as_str(),
            uuid::Uuid::new_v4().simple()
        );
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let id = admin::create_user(self.db(), &email, "Test person", &password)
            .await
            .expect("creating a user");
        admin::add_member(self.db(), org, &email, role, site)
            .await
            .expect("adding a membership");
        Person {
            id,
            email,
            password,
        }
    }

    /// Register an agent for a site.
    pub async fn create_agent(&self, site: SiteId) -> AgentCreds {
        let (id, secret) = admin::create_agent(self.db(), site, "test agent")
            .await
            .expect("creating an agent");
        AgentCreds { id, secret, site }
    }

    /// Seed one organisation, site, homeowner, technician and agent.
    pub async fn seed(&self) -> Seed {
        let org = self.create_org("Lämpö Oy").await;
        let site = self.create_site(org, "Mäkelä").await;
        let homeowner = self
            .create_person(org, Role::Homeowner, Some(site.site_id))
            .await;
        let technician = self.create_person(org, Role::Technician, None).await;
        let agent = self.create_agent(site.site_id).await;
        Seed {
            org,
            site,
            homeowner,
            technician,
            agent,
        }
    }

    /// Every stored reading row.
    pub async fn readings_count(&self) -> u64 {
        server::store::entities::readings::Entity::find()
            .count(self.db())
            .await
            .expect("counting readings")
    }

    /// Connect a test agent with its credentials.
    pub async fn agent(&self, creds: &AgentCreds) -> TestAgent {
        TestAgent::connect(self, Some(&creds.bearer()))
            .await
            .expect("the agent connects")
    }

    /// Connect a test agent that announces [`envelope`] and expect a welcome.
    pub async fn controllable_agent(&self, creds: &AgentCreds) -> TestAgent {
        let mut agent = self.agent(creds).await;
        match agent.hello_with_envelope(creds.id, Some(envelope())).await {
            ServerToAgent::Welcome(_) => agent,
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// Connect a test agent, say hello with the standard catalogue and
    /// expect a welcome.
    pub async fn agent_with_hello(&self, creds: &AgentCreds) -> TestAgent {
        let mut agent = self.agent(creds).await;
        match agent.hello(creds.id).await {
            ServerToAgent::Welcome(_) => agent,
            other => panic!("expected welcome, got {other:?}"),
        }
    }
}

impl Browser {
    /// `GET /login`, read the CSRF token, `POST /login` with the credentials.
    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.login_with_next(email, password, "").await
    }

    /// Like [`TestApp::login`] with a `next` field.
    pub async fn login_with_next(&self, email: &str, password: &str, next: &str) -> Response {
        let token = self.csrf_token().await;
        self.post_form(
            "/login",
            &[
                ("email", email),
                ("password", password),
                ("csrf_token", &token),
                ("next", next),
            ],
        )
        .await
    }

    /// Log in and check that it worked.
    pub async fn login_ok(&self, who: &Person) {
        let res = self.login(&who.email, &who.password).await;
        assert_eq!(res.status(), 303, "login of {} failed", who.email);
    }

    /// The CSRF token of the login form (sets the CSRF cookie).
    pub async fn csrf_token(&self) -> String {
        let page = self.get("/login").await;
        assert_eq!(page.status(), 200, "GET /login");
        let html = page.text().await.expect("reading the login page");
        hidden_input(&html, "csrf_token").expect("the login form has a csrf_token input")
    }

    /// Set a cookie in the client's jar.
    pub fn set_cookie(&self, name: &str, value: &str) {
        let url = reqwest::Url::parse(&self.address).expect("valid address");
        self.jar
            .add_cookie_str(&format!("{name}={value}; Path=/"), &url);
    }

    /// The `Cookie` header the client would send.
    pub fn cookie_header(&self) -> Option<HeaderValue> {
        let url = reqwest::Url::parse(&self.address).expect("valid address");
        self.jar.cookies(&url)
    }

    /// A WebSocket URL of a path.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// Open a site's live feed with the client's cookies.
    pub async fn live(&self, site: SiteId) -> Result<LiveViewer, tungstenite::Error> {
        let mut req = self
            .ws_url(&format!("/sites/{site}/live"))
            .into_client_request()?;
        if let Some(cookie) = self.cookie_header() {
            req.headers_mut().insert(http::header::COOKIE, cookie);
        }
        let (ws, _) = connect_async(req).await?;
        Ok(LiveViewer { ws })
    }
}

/// The value of `<input ... name="NAME" ... value="...">`, whatever the
/// attribute order.
pub fn hidden_input(html: &str, name: &str) -> Option<String> {
    let needle = format!("name=\"{name}\"");
    let at = html.find(&needle)?;
    let start = html[..at].rfind('<')?;
    let end = at + html[at..].find('>')?;
    let tag = &html[start..end];
    let v = tag.find("value=\"")? + "value=\"".len();
    let len = tag[v..].find('"')?;
    Some(tag[v..v + len].to_owned())
}

/// The HTTP status of a refused WebSocket handshake.
pub fn refused_status(err: &tungstenite::Error) -> Option<u16> {
    match err {
        tungstenite::Error::Http(res) => Some(res.status().as_u16()),
        _ => None,
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn next_text(ws: &mut Ws) -> Option<String> {
    let msg = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return Some(t.as_str().to_owned()),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Binary(_))) => panic!("unexpected binary frame"),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            }
        }
    })
    .await;
    msg.expect("timed out waiting for a WebSocket message")
}

/// A WebSocket client speaking the agent protocol.
pub struct TestAgent {
    ws: Ws,
}

/// The device catalogue every test agent announces.
pub fn catalogue() -> Vec<DeviceInfo> {
    let point = |key: &str, unit: &str, kind, alarm| PointInfo {
        key: key.into(),
        label: Some(key.replace('_', " ")),
        unit: unit.into(),
        kind,
        display_min: None,
        display_max: None,
        alarm,
    };
    vec![DeviceInfo {
        key: "heatpump".into(),
        label: Some("Lämpöpumppu".into()),
        profile: Some("test_profile".into()),
        points: vec![
            point("outdoor_temp", "degC", PointKind::Analog, false),
            point("supply_temp", "degC", PointKind::Analog, false),
            point("compressor", "", PointKind::Binary, false),
            point("alarm", "", PointKind::Binary, true),
        ],
    }]
}

/// The envelope every controllable test agent announces: a room setpoint
/// (18–27 °C in 0.1 steps), a car-heater output and a 3-hour hot-water boost.
pub fn envelope() -> Envelope {
    Envelope {
        writables: vec![
            WritableInfo {
                device: "pop1".into(),
                point: "room3_floor_setpoint".into(),
                kind: ControlKind::Setpoint,
                min: 18.0,
                max: 27.0,
                step: 0.1,
                max_change_per_hour: Some(4.0),
                max_override_s: 86_400,
                schedulable: true,
            },
            WritableInfo {
                device: "pop1".into(),
                point: "car_heater".into(),
                kind: ControlKind::Output,
                min: 0.0,
                max: 1.0,
                step: 1.0,
                max_change_per_hour: None,
                max_override_s: 10_800,
                schedulable: true,
            },
        ],
        actions: vec![ActionInfo {
            name: "boost_dhw".into(),
            label: Some("Lämmin vesi tehostus / boost hot water".into()),
            max_duration_s: 10_800,
        }],
    }
}

/// A reading of `heatpump/<point>` at `2026-11-21 12:00 UTC + secs`.
pub fn reading(point: &str, secs: i64, value: f64) -> Reading {
    Reading {
        device: "heatpump".into(),
        point: point.into(),
        ts: time::macros::datetime!(2026-11-21 12:00 UTC) + time::Duration::seconds(secs),
        value,
        unit: String::new(),
        quality: Quality::Good,
    }
}

/// A readings batch message.
pub fn batch(seq: u64, readings: Vec<Reading>) -> AgentToServer {
    AgentToServer::Readings(ReadingsBatch { seq, readings })
}

impl TestAgent {
    /// Connect to `/agent/v1/ws` with an optional `Authorization` header.
    pub async fn connect(
        app: &Browser,
        authorization: Option<&str>,
    ) -> Result<Self, tungstenite::Error> {
        let mut req = app.ws_url("/agent/v1/ws").into_client_request()?;
        if let Some(value) = authorization {
            req.headers_mut().insert(
                http::header::AUTHORIZATION,
                value.parse().expect("a valid header value"),
            );
        }
        let (ws, _) = connect_async(req).await?;
        Ok(Self { ws })
    }

    /// Send a raw text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("sending to the server");
    }

    /// Send a message.
    pub async fn send(&mut self, msg: &AgentToServer) {
        self.send_text(&msg.to_json().expect("serialising")).await;
    }

    /// The next message, or `None` when the server closed the link.
    pub async fn recv(&mut self) -> Option<ServerToAgent> {
        next_text(&mut self.ws)
            .await
            .map(|t| ServerToAgent::from_json(&t).expect("the server sent valid JSON"))
    }

    /// The next message; fails the test when the link closed instead.
    pub async fn reply(&mut self) -> ServerToAgent {
        self.recv().await.expect("the server closed the link")
    }

    /// Send a message and return the reply.
    pub async fn request(&mut self, msg: &AgentToServer) -> ServerToAgent {
        self.send(msg).await;
        self.reply().await
    }

    /// Say hello as `agent_id` with protocol `version` and the standard catalogue.
    pub async fn hello_version(&mut self, agent_id: AgentId, version: u32) -> ServerToAgent {
        self.request(&AgentToServer::Hello(Hello {
            agent_id: agent_id.0,
            version,
            capabilities: vec!["readings".into()],
            software: Some("test-agent".into()),
            devices: catalogue(),
            envelope: None,
        }))
        .await
    }

    /// Say hello with the standard catalogue and `envelope`.
    pub async fn hello_with_envelope(
        &mut self,
        agent_id: AgentId,
        envelope: Option<Envelope>,
    ) -> ServerToAgent {
        self.request(&AgentToServer::Hello(Hello {
            agent_id: agent_id.0,
            version: protocol::PROTOCOL_VERSION,
            capabilities: vec!["readings".into(), "control".into()],
            software: Some("test-agent".into()),
            devices: catalogue(),
            envelope,
        }))
        .await
    }

    /// Say hello with the current protocol version.
    pub async fn hello(&mut self, agent_id: AgentId) -> ServerToAgent {
        self.hello_version(agent_id, protocol::PROTOCOL_VERSION)
            .await
    }

    /// Close the link politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Drain until the server's close frame so the server has seen it.
        let _ = tokio::time::timeout(WAIT, async { while self.ws.next().await.is_some() {} }).await;
    }
}

/// A browser's view of a site's live feed.
pub struct LiveViewer {
    ws: Ws,
}

impl LiveViewer {
    /// The next message as JSON.
    pub async fn next_json(&mut self) -> serde_json::Value {
        let text = next_text(&mut self.ws).await.expect("the live feed closed");
        serde_json::from_str(&text).expect("the live feed sends JSON")
    }

    /// Wait until the server closes the feed (messages before that are skipped).
    pub async fn closed(&mut self) {
        while next_text(&mut self.ws).await.is_some() {}
    }

    /// The next message whose `type` is `kind`, skipping others.
    pub async fn next_of_type(&mut self, kind: &str) -> serde_json::Value {
        loop {
            let msg = self.next_json().await;
            if msg["type"] == kind {
                return msg;
            }
        }
    }
}
