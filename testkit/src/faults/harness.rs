//! [`FaultStack`]: a database, the `server` binary behind a cut-able proxy,
//! and per site a simulated EH-203 process and an `agent` process with a
//! ledger, ready for one fault to be injected and the ledgers checked.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use server::{
    domain::{Role, SiteRef},
    services::admin,
    store,
};

use super::{
    ledger::{self, LedgerReport},
    postgres::PrivatePostgres,
    procs::{AgentProc, ServerProc, SimProc},
    proxy::Proxy,
};
use crate::{TestDb, stack::Login};

/// How long to wait for the system to settle after a fault.
pub const SETTLE: Duration = Duration::from_secs(40);
/// How long an agent's ledger must stop growing after the devices are
/// powered off before its count is final (many poll intervals).
pub const LEDGER_QUIET: Duration = Duration::from_secs(2);

/// How to build the stack.
#[derive(Debug, Clone)]
pub struct Options {
    /// Sites, each with its own simulator and agent.
    pub sites: usize,
    /// Device poll interval.
    pub poll: Duration,
    /// Simulator model tick.
    pub sim_tick: Duration,
    /// Run PostgreSQL privately (initdb) so the test may stop it, instead of
    /// a fresh database of the backend `TEST_DB` names.
    pub private_postgres: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sites: 1,
            poll: Duration::from_millis(300),
            sim_tick: Duration::from_millis(200),
            private_postgres: false,
        }
    }
}

/// The database the server runs on.
pub enum Database {
    /// A fresh database of the `TEST_DB` backend.
    Shared(TestDb),
    /// A private cluster that can be stopped.
    Private(PrivatePostgres),
}

/// One site: its simulated heat pump and its agent.
pub struct Site {
    /// The site.
    pub site: SiteRef,
    /// Its agent's id.
    pub agent_id: uuid::Uuid,
    /// The heat pump.
    pub sim: SimProc,
    /// The agent.
    pub agent: AgentProc,
}

/// Everything for a fault test.
pub struct FaultStack {
    /// Where logs, configs and buffers live.
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// The database.
    pub database: Database,
    /// Its URL.
    pub db_url: String,
    /// The server process.
    pub server: ServerProc,
    /// Between every agent and the server.
    pub uplink: Proxy,
    /// The sites.
    pub sites: Vec<Site>,
    /// The demo homeowner of site 0.
    pub homeowner: Login,
    /// Whether this agent build keeps a ledger (`[buffer]` is accepted).
    pub ledger_supported: bool,
}

impl FaultStack {
    /// Start it all and wait until the server answers.
    pub async fn start(opts: Options) -> anyhow::Result<Self> {
        crate::init_logs();
        let tmp = tempfile::Builder::new().prefix("hc-faults-").tempdir()?;
        let dir = tmp.path().to_owned();
        // FAULTS_KEEP=1 keeps logs, configs and buffers for a post-mortem.
        let keep = std::env::var("FAULTS_KEEP").is_ok_and(|v| v == "1");
        let (database, db_url) = if opts.private_postgres {
            let pg = PrivatePostgres::start().await?;
            let url = pg.create_database("homecontrol").await?;
            (Database::Private(pg), url)
        } else {
            let db = TestDb::fresh().await;
            let url = db.url.clone();
            (Database::Shared(db), url)
        };
        let conn = sea_orm::Database::connect(&db_url)
            .await
            .context("connecting to the test database")?;
        store::migrate(&conn).await?;
        let seed = admin::seed_demo(&conn).await?;
        let homeowner = seed
            .logins
            .iter()
            .find(|l| l.role == Role::Homeowner)
            .map(|l| Login {
                email: l.email.clone(),
                password: l.password.clone(),
            })
            .context("seed_demo creates a homeowner")?;
        let mut site_refs = vec![seed.site];
        for i in 1..opts.sites {
            site_refs.push(
                store::people::create_site(
                    &conn,
                    seed.site.tenant_id,
                    &format!("Site {i}"),
                    "Europe/Helsinki",
                )
                .await?,
            );
        }
        let mut creds = Vec::new();
        for (i, s) in site_refs.iter().enumerate() {
            creds.push(admin::create_agent(&conn, s.site_id, &format!("agent {i}")).await?);
        }
        conn.close().await.ok();

        let server =
            ServerProc::start(&db_url, super::free_port()?, dir.join("server.log")).await?;
        let uplink = Proxy::start(([127, 0, 0, 1], server.port).into()).await?;
        let ws_url = format!("ws://{}/agent/v1/ws", uplink.addr);
        let mut ledger_supported = true;
        let mut sites = Vec::new();
        for (i, (site, (agent_id, secret))) in site_refs.into_iter().zip(creds).enumerate() {
            let sim = SimProc::start(
                super::free_port()?,
                opts.sim_tick,
                dir.join(format!("sim{i}.log")),
            )
            .await?;
            let config = dir.join(format!("agent{i}.toml"));
            let buffer_db = dir.join(format!("agent{i}-buffer.db"));
            let text = agent_config(
                &ws_url, agent_id.0, &secret, sim.port, opts.poll, &buffer_db,
            );
            std::fs::write(&config, &text)?;
            if i == 0 {
                ledger_supported = check_config(&config).await?;
            }
            if !ledger_supported {
                let plain = text.split("\n[buffer]").next().unwrap_or(&text).to_owned();
                std::fs::write(&config, plain)?;
            }
            let agent = AgentProc::start(config, buffer_db, dir.join(format!("agent{i}.log")))?;
            sites.push(Site {
                site,
                agent_id: agent_id.0,
                sim,
                agent,
            });
        }
        let tmp = if keep {
            eprintln!("FAULTS_KEEP=1: logs and buffers stay in {}", dir.display());
            let _ = tmp.keep();
            None
        } else {
            Some(tmp)
        };
        Ok(FaultStack {
            dir,
            _tmp: tmp,
            database,
            db_url,
            server,
            uplink,
            sites,
            homeowner,
            ledger_supported,
        })
    }

    /// A new connection to the server's database (for checks).
    pub async fn db(&self) -> anyhow::Result<DatabaseConnection> {
        let mut opts = sea_orm::ConnectOptions::new(self.db_url.clone());
        opts.max_connections(2)
            .connect_timeout(Duration::from_secs(5))
            .sqlx_logging(false);
        sea_orm::Database::connect(opts)
            .await
            .context("connecting to the server's database")
    }

    /// The private PostgreSQL, when the stack runs on one.
    pub fn private_postgres(&self) -> Option<&PrivatePostgres> {
        match &self.database {
            Database::Private(pg) => Some(pg),
            Database::Shared(_) => None,
        }
    }

    /// Readings stored so far for site `i`'s agent.
    pub async fn stored(&self, i: usize) -> anyhow::Result<usize> {
        let db = self.db().await?;
        let n = ledger::stored_count(&db, self.sites[i].agent_id).await;
        db.close().await.ok();
        n
    }

    /// Wait until the server has stored at least `n` more readings of site
    /// `i` than it had when called, within [`SETTLE`].
    pub async fn wait_for_readings(&mut self, i: usize, n: usize) -> anyhow::Result<()> {
        let base = self.stored(i).await.unwrap_or(0);
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            self.ensure_alive()?;
            let now = self.stored(i).await.unwrap_or(0);
            if now >= base + n {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "site {i}: only {} new readings stored within {SETTLE:?} (wanted {n}); {}",
                    now - base,
                    self.logs_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ledger rows of site `i` so far (0 when there is no ledger yet).
    pub async fn produced(&self, i: usize) -> usize {
        ledger::read_ledger(&self.sites[i].agent.buffer_db)
            .await
            .map(|l| l.len())
            .unwrap_or(0)
    }

    /// Whether the device of site `i` is marked online in the server's database.
    pub async fn device_online(&self, i: usize) -> anyhow::Result<Option<bool>> {
        use server::store::entities::devices;
        let db = self.db().await?;
        let d = devices::Entity::find()
            .filter(devices::Column::AgentId.eq(self.sites[i].agent_id))
            .one(&db)
            .await?;
        db.close().await.ok();
        Ok(d.and_then(|d| d.online))
    }

    /// Fail, with log tails, if a process that should run has died.
    pub fn ensure_alive(&mut self) -> anyhow::Result<()> {
        self.server.proc.ensure_alive()?;
        for s in &mut self.sites {
            s.agent.proc.ensure_alive()?;
        }
        Ok(())
    }

    /// The ends of every log, for failure messages.
    pub fn logs_tail(&self) -> String {
        let mut s = format!("\n--- server log ---\n{}", self.server.proc.log_tail(15));
        for (i, site) in self.sites.iter().enumerate() {
            s.push_str(&format!(
                "\n--- agent {i} log ---\n{}",
                site.agent.proc.log_tail(15)
            ));
        }
        s
    }

    /// End of a fault test: restore the network, power the devices off so no
    /// new readings are taken, wait until every agent's backlog has been
    /// stored, stop the agents, and compare each ledger with the server.
    /// Fails with the details of any loss, duplicate or changed value.
    pub async fn stop_and_check_ledgers(mut self) -> anyhow::Result<Vec<LedgerReport>> {
        self.uplink.set(super::proxy::Mode::Pass);
        for s in &mut self.sites {
            s.sim.power_off().await?;
        }
        anyhow::ensure!(
            self.ledger_supported,
            "LEDGER CHECK IMPOSSIBLE: this agent build refuses `[buffer] ledger = true` \
             (the `buffer` branch adds it), so what the devices produced is unknown"
        );
        // Let the backlog drain: stored catches up with the ledger. A poll
        // that finished just before the power-off may reach the ledger a
        // moment after a first look (a loaded machine), so the ledger must
        // also have stopped growing for a while, not only match once.
        let deadline = tokio::time::Instant::now() + SETTLE;
        let db = self.db().await?;
        let mut reports = Vec::new();
        for s in &self.sites {
            let mut last_produced = None;
            let mut unchanged_since = tokio::time::Instant::now();
            loop {
                let ledger = ledger::read_ledger(&s.agent.buffer_db).await?;
                let stored = ledger::read_stored(&db, s.agent_id).await?;
                let rep = ledger::compare(&ledger, &stored);
                let now = tokio::time::Instant::now();
                if last_produced != Some(rep.produced) {
                    last_produced = Some(rep.produced);
                    unchanged_since = now;
                }
                let quiet = now - unchanged_since >= LEDGER_QUIET;
                if (rep.missing.is_empty() && quiet) || now >= deadline {
                    reports.push(rep);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        for s in &mut self.sites {
            s.agent.stop().await?;
        }
        // Final word after the agents stopped: nothing may arrive late.
        let mut failures = Vec::new();
        for (i, s) in self.sites.iter().enumerate() {
            let ledger = ledger::read_ledger(&s.agent.buffer_db).await?;
            let stored = ledger::read_stored(&db, s.agent_id).await?;
            let rep = ledger::compare(&ledger, &stored);
            eprintln!("ledger site {i}: {}", rep.summary());
            if !rep.is_clean() {
                failures.push(format!("site {i}: {}", rep.summary()));
            }
            reports[i] = rep;
        }
        db.close().await.ok();
        anyhow::ensure!(
            failures.is_empty(),
            "stored != produced:\n{}\n(logs in {}){}",
            failures.join("\n"),
            self.dir.display(),
            self.logs_tail()
        );
        for r in &reports {
            anyhow::ensure!(r.produced > 0, "an agent took no readings at all");
        }
        self.server.proc.terminate(Duration::from_secs(5)).await?;
        if let Database::Shared(db) = &self.database {
            db.drop_now().await;
        }
        Ok(reports)
    }
}

/// The agent's config: one EH-203 over Modbus TCP, a ledger-keeping buffer.
fn agent_config(
    ws_url: &str,
    agent_id: uuid::Uuid,
    secret: &str,
    sim_port: u16,
    poll: Duration,
    buffer_db: &std::path::Path,
) -> String {
    format!(
        r#"[server]
url = "{ws_url}"
agent_id = "{agent_id}"
secret = "{secret}"

[[bus]]
name = "lan"
kind = "tcp"
address = "127.0.0.1:{sim_port}"
timeout_ms = 500

[[device]]
key = "heatpump"
label = "Heat pump"
bus = "lan"
unit_id = 1
profile = "ouman_eh203_modbus200"
poll_interval_ms = {poll_ms}

[buffer]
path = "{buffer}"
ledger = true
"#,
        poll_ms = poll.as_millis().max(100),
        buffer = buffer_db.display(),
    )
}

/// `agent check-config`: `Ok(false)` when only the `[buffer]` table is refused
/// (an agent build without the durable buffer).
async fn check_config(config: &std::path::Path) -> anyhow::Result<bool> {
    let out = tokio::process::Command::new(super::binary("agent")?)
        .args(["check-config", "--config"])
        .arg(config)
        .output()
        .await
        .context("running agent check-config")?;
    if out.status.success() {
        return Ok(true);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("buffer") {
        eprintln!(
            "WARNING: this agent build refuses the [buffer] table ({}); the ledger check will fail",
            err.trim()
        );
        return Ok(false);
    }
    anyhow::bail!("agent check-config refused the generated config: {err}")
}
