//! The whole system on one machine: database, server, simulated heat pump and
//! agent, each on a random port, all real code.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use server::{
    config::Settings,
    domain::{AgentId, Role, SiteRef},
    services::admin,
    startup::Application,
    state::AppState,
    store,
};
use tokio_util::sync::CancellationToken;

use crate::db::TestDb;

/// A running server.
pub struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The bound port.
    pub port: u16,
    /// Its state (database, hub).
    pub state: AppState,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// Build and start the real application on a random port.
    pub async fn start(database_url: &str) -> anyhow::Result<Self> {
        crate::init_logs();
        let app = Application::build(Settings::for_database(database_url)).await?;
        let port = app.port();
        let state = app.state().clone();
        let task = tokio::spawn(app.run_until_stopped());
        let server = TestServer {
            base: format!("http://127.0.0.1:{port}"),
            port,
            state,
            task,
        };
        let client = reqwest::Client::new();
        let url = server.url("/health");
        crate::eventually(
            Duration::from_secs(20),
            "the server to answer /health",
            || {
                let client = client.clone();
                let url = url.clone();
                async move {
                    client
                        .get(url)
                        .send()
                        .await
                        .ok()
                        .filter(|r| r.status().is_success())
                }
            },
        )
        .await?;
        Ok(server)
    }

    /// Absolute URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// WebSocket URL of the agent link.
    pub fn agent_ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/agent/v1/ws", self.port)
    }

    /// Stop serving (new connections are refused) and stop relaying to
    /// other replicas (PostgreSQL), as a crash would.
    pub fn stop(&self) {
        self.task.abort();
        if let Some(relay) = &self.state.relay {
            relay.halt();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Credentials of an agent.
#[derive(Debug, Clone)]
pub struct AgentCreds {
    /// Id.
    pub id: AgentId,
    /// Secret.
    pub secret: String,
}

/// A running agent; stopped when dropped.
pub struct RunningAgent {
    /// Holds the agent's buffer file; removed after the agent stops.
    _buffer_dir: tempfile::TempDir,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl RunningAgent {
    /// Start the real agent polling `sim_addr` (Modbus TCP, EH-203 profile)
    /// and streaming to `server`.
    pub fn start(
        server_ws_url: &str,
        creds: &AgentCreds,
        sim_addr: SocketAddr,
        poll: Duration,
    ) -> anyhow::Result<Self> {
        Self::start_with(server_ws_url, creds, sim_addr, poll, false)
    }

    /// [`RunningAgent::start`], with the demo's remote-control envelope
    /// ([`agent::sim::DEMO_CONTROLS`]) when `controls` is set.
    pub fn start_with(
        server_ws_url: &str,
        creds: &AgentCreds,
        sim_addr: SocketAddr,
        poll: Duration,
        controls: bool,
    ) -> anyhow::Result<Self> {
        Self::start_configured(server_ws_url, creds, sim_addr, poll, controls, None)
    }

    /// [`RunningAgent::start_with`] with the demo's control envelope, its
    /// schedules, overrides and actions running on `clock` (tests start it
    /// just before a schedule edge and speed it up).
    pub fn start_with_control_clock(
        server_ws_url: &str,
        creds: &AgentCreds,
        sim_addr: SocketAddr,
        poll: Duration,
        clock: agent::control::executor::Clock,
    ) -> anyhow::Result<Self> {
        Self::start_configured(server_ws_url, creds, sim_addr, poll, true, Some(clock))
    }

    fn start_configured(
        server_ws_url: &str,
        creds: &AgentCreds,
        sim_addr: SocketAddr,
        poll: Duration,
        controls: bool,
        clock: Option<agent::control::executor::Clock>,
    ) -> anyhow::Result<Self> {
        let buffer_dir = tempfile::tempdir()?;
        let build = if controls {
            agent::sim::agent_config_with_controls_for
        } else {
            agent::sim::agent_config_for
        };
        let cfg = build(
            server_ws_url,
            creds.id.0,
            &creds.secret,
            sim_addr,
            poll,
            &buffer_dir.path().join("agent-buffer.db"),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let session = agent::uplink::session::SessionConfig {
            batch_window: Duration::from_millis(100),
            ..Default::default()
        };
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let mut built = agent::Agent::build(cfg).with_session_config(session);
        if let Some(clock) = clock {
            built = built.with_control_clock(clock);
        }
        let task = tokio::spawn(built.run_until_stopped(async move { stop.cancelled().await }));
        Ok(RunningAgent {
            _buffer_dir: buffer_dir,
            cancel,
            task: Some(task),
        })
    }

    /// Stop the agent and wait for it to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.cancel.cancel();
        match self.task.take() {
            Some(task) => task.await.context("agent task panicked")?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A login to print or use.
#[derive(Debug, Clone)]
pub struct Login {
    /// E-mail.
    pub email: String,
    /// Password.
    pub password: String,
}

/// Database + server + simulated EH-203 + agent, with the demo organisation's
/// people, plus a second organisation with its own house for isolation tests.
pub struct Stack {
    /// The database (dropped by [`Stack::cleanup`]).
    pub db: Option<TestDb>,
    /// The server.
    pub server: TestServer,
    /// The simulated heat pump.
    pub sim: agent::sim::Eh203Sim,
    /// Its Modbus TCP address.
    pub sim_addr: SocketAddr,
    /// The demo house.
    pub site: SiteRef,
    /// The other organisation's house (no agent).
    pub foreign_site: SiteRef,
    /// Demo homeowner.
    pub homeowner: Login,
    /// Demo service technician.
    pub technician: Login,
    /// Homeowner of the foreign house.
    pub foreign_homeowner: Login,
    /// The demo agent's credentials.
    pub agent_creds: AgentCreds,
    /// The running agent, if started.
    pub agent: Option<RunningAgent>,
    sim_task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Stack {
    /// Everything running, agent polling every 300 ms and the simulator ticking every 200 ms.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(false).await
    }

    /// [`Stack::start`] with the demo's remote-control envelope on the
    /// simulator's free registers ([`agent::sim::DEMO_CONTROLS`]), preset
    /// before the agent starts.
    pub async fn start_with_controls() -> anyhow::Result<Self> {
        Self::start_with(true).await
    }

    async fn start_with(controls: bool) -> anyhow::Result<Self> {
        let db = TestDb::fresh().await;
        let server = TestServer::start(&db.url).await?;
        let conn = &server.state.db;
        let seed = admin::seed_demo(conn).await?;
        let (agent_id, secret) = admin::create_agent(conn, seed.site.site_id, "test agent").await?;
        let login = |role: Role| {
            seed.logins
                .iter()
                .find(|l| l.role == role)
                .map(|l| Login {
                    email: l.email.clone(),
                    password: l.password.clone(),
                })
                .context("seed_demo creates this role")
        };
        let other_org = store::people::create_organisation(conn, "Other Company Oy").await?;
        let foreign_site =
            store::people::create_site(conn, other_org.id, "Neighbour's house", "Europe/Helsinki")
                .await?;
        let foreign_homeowner = Login {
            email: "neighbour@example.test".into(),
            password: "neighbour-pass".into(),
        };
        admin::create_user(
            conn,
            &foreign_homeowner.email,
            "Neighbour",
            &foreign_homeowner.password,
        )
        .await?;
        admin::add_member(
            conn,
            other_org.id,
            &foreign_homeowner.email,
            Role::Homeowner,
            Some(foreign_site.site_id),
        )
        .await?;

        let sim = agent::sim::Eh203Sim::new(agent::sim::SimOptions {
            tick: Duration::from_millis(200),
            ..Default::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let sim_addr = listener.local_addr()?;
        let sim_task = sim.serve_tcp(listener);
        if controls {
            sim.preset_demo_controls()
                .map_err(|e| anyhow::anyhow!("presetting the demo registers: {e:?}"))?;
        }
        let agent_creds = AgentCreds {
            id: agent_id,
            secret,
        };
        let agent = RunningAgent::start_with(
            &server.agent_ws_url(),
            &agent_creds,
            sim_addr,
            Duration::from_millis(300),
            controls,
        )?;
        Ok(Stack {
            db: Some(db),
            site: seed.site,
            foreign_site,
            homeowner: login(Role::Homeowner)?,
            technician: login(Role::Technician)?,
            foreign_homeowner,
            sim,
            sim_addr,
            agent_creds,
            agent: Some(agent),
            sim_task,
            server,
        })
    }

    /// Absolute URL of a path on the server.
    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// Path of the demo house's dashboard.
    pub fn site_path(&self) -> String {
        format!("/sites/{}", self.site.site_id)
    }

    /// Path of the foreign house's dashboard.
    pub fn foreign_site_path(&self) -> String {
        format!("/sites/{}", self.foreign_site.site_id)
    }

    /// A cookie-keeping HTTP client logged in as `login`.
    pub async fn login(&self, login: &Login) -> anyhow::Result<UserSession> {
        login_client(&self.server, &login.email, &login.password).await
    }

    /// Logged in as the demo homeowner.
    pub async fn login_homeowner(&self) -> anyhow::Result<UserSession> {
        self.login(&self.homeowner).await
    }

    /// The demo house's live feed, opened as `user` would from the dashboard.
    pub async fn open_live_feed(
        &self,
        user: &UserSession,
    ) -> anyhow::Result<crate::live::LiveFeed> {
        crate::live::LiveFeed::open(
            self.server.port,
            &format!("{}/live", self.site_path()),
            &user.cookie,
        )
        .await?
        .map_err(|r| anyhow::anyhow!("the live feed was refused with HTTP {}", r.0))
    }

    /// Stop the running agent and wait until the server has seen it go (its
    /// live feed then says offline, and commands wait for the next agent).
    pub async fn stop_agent(&mut self) -> anyhow::Result<()> {
        if let Some(a) = self.agent.take() {
            a.stop().await?;
        }
        let hub = self.server.state.hub.clone();
        let site = self.site.site_id;
        crate::eventually(
            Duration::from_secs(20),
            "the server to see the agent disconnect",
            || {
                let hub = hub.clone();
                async move { (!hub.agent_online(site)).then_some(()) }
            },
        )
        .await
    }

    /// Start the demo agent again (after [`Stack::stop_agent`]) with the
    /// demo's control envelope, running its schedules, overrides and actions
    /// on `clock`. It starts with an empty control state, as a new box would.
    pub fn start_agent_with_control_clock(
        &mut self,
        clock: agent::control::executor::Clock,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(self.agent.is_none(), "the agent is still running");
        self.agent = Some(RunningAgent::start_with_control_clock(
            &self.server.agent_ws_url(),
            &self.agent_creds,
            self.sim_addr,
            Duration::from_millis(300),
            clock,
        )?);
        Ok(())
    }

    /// Add a read-only member (a wall tablet's account) to the demo house.
    pub async fn add_viewer(&self) -> anyhow::Result<Login> {
        let viewer = Login {
            email: "tablet@demo.homecontrol".into(),
            password: "tablet-pass".into(),
        };
        let conn = &self.server.state.db;
        admin::create_user(conn, &viewer.email, "Hall tablet", &viewer.password).await?;
        admin::add_member(
            conn,
            self.site.tenant_id,
            &viewer.email,
            Role::Viewer,
            Some(self.site.site_id),
        )
        .await?;
        Ok(viewer)
    }

    /// Stop the agent, then drop the database.
    pub async fn cleanup(mut self) -> anyhow::Result<()> {
        if let Some(a) = self.agent.take() {
            a.stop().await?;
        }
        self.server.stop();
        self.sim_task.abort();
        if let Some(db) = self.db.take() {
            db.drop_now().await;
        }
        Ok(())
    }
}

/// A logged-in HTTP client and its session cookie (for WebSocket upgrades).
#[derive(Debug, Clone)]
pub struct UserSession {
    /// Keeps cookies, does not follow redirects.
    pub client: reqwest::Client,
    /// `hc_session=…`, ready for a `Cookie` header.
    pub cookie: String,
}

impl std::ops::Deref for UserSession {
    type Target = reqwest::Client;
    fn deref(&self) -> &reqwest::Client {
        &self.client
    }
}

/// Log in through the real form (GET for the CSRF token, then POST).
pub async fn login_client(
    server: &TestServer,
    email: &str,
    password: &str,
) -> anyhow::Result<UserSession> {
    login_at(&server.base, email, password).await
}

/// Log in through the real form of the server at `base` (`http://host:port`).
pub async fn login_at(base: &str, email: &str, password: &str) -> anyhow::Result<UserSession> {
    let url = |path: &str| format!("{base}{path}");
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let page = client.get(url("/login")).send().await?.text().await?;
    let token = csrf_token(&page).context("the login page has a csrf_token field")?;
    let res = client
        .post(url("/login"))
        .form(&[
            ("email", email),
            ("password", password),
            ("csrf_token", &token),
            ("next", "/"),
        ])
        .send()
        .await?;
    anyhow::ensure!(
        res.status() == reqwest::StatusCode::SEE_OTHER,
        "login as {email} failed: {}",
        res.status()
    );
    let cookie = res
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("hc_session="))
        .and_then(|v| v.split(';').next())
        .context("login sets the session cookie")?
        .to_owned();
    Ok(UserSession { client, cookie })
}

/// The value of the hidden `csrf_token` input of a page.
pub fn csrf_token(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf_token\"")?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let v = tag.find("value=\"")? + 7;
    let rest = &tag[v..];
    Some(rest[..rest.find('"')?].to_owned())
}
