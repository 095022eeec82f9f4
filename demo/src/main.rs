//! `cargo run -p demo`: a complete Homecontrol site on one machine.
//!
//! It starts the server on the embedded default (a SQLite file under
//! `demo-data/`), a simulated Ouman EH-203 heat pump on a Modbus TCP port, and
//! an agent that polls the simulator and streams to the server, then prints the
//! URL and three demo logins. The agent carries the demo's remote-control
//! envelope ([`agent::sim::DEMO_CONTROLS`]: a hot-water setpoint, a car-heater
//! output and a boost on registers a real EH-203 leaves free), so the
//! homeowner's Controls page works. Set `DATABASE_URL=postgres://…` to run the same
//! demo on PostgreSQL.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use server::{config::Settings, services::admin, startup::Application, store, telemetry};

/// Run the demo site.
#[derive(Debug, Parser)]
#[command(name = "demo", about)]
struct Args {
    /// HTTP port of the server (0 picks a free one).
    #[arg(long, env = "DEMO_PORT", default_value_t = 8080)]
    port: u16,
    /// Interface to listen on; 0.0.0.0 lets a tablet on the LAN connect.
    #[arg(long, env = "DEMO_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Where the SQLite file and the demo agent's credentials live.
    #[arg(long, env = "DEMO_DATA_DIR", default_value = "demo-data")]
    data_dir: PathBuf,
    /// How often the simulated heat pump changes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    tick_ms: u64,
    /// How often the agent polls the heat pump, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    poll_ms: u64,
}

/// The demo agent's credentials, kept between runs so a restarted demo reuses
/// its agent instead of registering a new one each time.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedAgent {
    agent_id: uuid::Uuid,
    secret: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    let has_db = vars
        .iter()
        .any(|(k, _)| k == "DATABASE_URL" || k == "SERVER_DATABASE__URL");
    if !has_db {
        let file = args.data_dir.join("homecontrol.db");
        vars.push((
            "SERVER_DATABASE__URL".into(),
            format!("sqlite://{}?mode=rwc", file.display()),
        ));
    }
    vars.push(("SERVER_HTTP__PORT".into(), args.port.to_string()));
    vars.push(("SERVER_HTTP__HOST".into(), args.host.clone()));
    let settings = Settings::load_from(Path::new("config"), &vars)?;
    telemetry::init("warn,server=info,agent=info,demo=info", settings.log.format);

    let db = store::connect(&settings.database).await?;
    store::migrate(&db).await?;
    let seed = admin::seed_demo(&db)
        .await
        .context("creating the demo organisation")?;
    let (agent_id, agent_secret) = reuse_or_keep(&args.data_dir, &db, &seed).await?;

    let sim = agent::sim::Eh203Sim::new(agent::sim::SimOptions {
        tick: std::time::Duration::from_millis(args.tick_ms.max(50)),
        ..Default::default()
    });
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the simulator port")?;
    let sim_addr = sim_listener.local_addr()?;
    // The demo's controls live on registers a real EH-203 leaves free.
    sim.preset_demo_controls()
        .map_err(|e| anyhow::anyhow!("presetting the demo control registers: {e:?}"))?;
    let _sim_task = sim.serve_tcp(sim_listener);

    let app = Application::build_with_db(settings, db)
        .await
        .with_context(|| {
            format!(
                "starting the server on port {} (is it in use? try --port 0)",
                args.port
            )
        })?;
    let port = app.port();
    let server_task = tokio::spawn(app.run_until_stopped());

    let cfg = agent::sim::agent_config_with_controls_for(
        &format!("ws://127.0.0.1:{port}/agent/v1/ws"),
        agent_id,
        &agent_secret,
        sim_addr,
        std::time::Duration::from_millis(args.poll_ms.max(200)),
        &args.data_dir.join("agent-buffer.db"),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let agent_task = tokio::spawn(agent::Agent::build(cfg).run_until_stopped(async {
        let _ = tokio::signal::ctrl_c().await;
    }));

    let shown_host = if args.host == "0.0.0.0" {
        "<this machine's address>"
    } else {
        args.host.as_str()
    };
    println!();
    println!("  Homecontrol demo is running: http://{shown_host}:{port}/");
    println!(
        "  Simulated EH-203 heat pump on Modbus TCP {sim_addr}, polled every {} ms.",
        args.poll_ms
    );
    println!(
        "  Homeowner's Controls page: /sites/{}/controls (demo hot-water setpoint, car heater and boost on free simulator registers).",
        seed.site.site_id
    );
    println!();
    for l in &seed.logins {
        println!(
            "    {:<20} {:<32} password: {}",
            l.role.label(),
            l.email,
            l.password
        );
    }
    println!();
    println!("  Data: {}   Stop with Ctrl-C.", args.data_dir.display());
    println!();

    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        res = server_task => { res.context("server task")?.context("server")?; }
        res = agent_task => { res.context("agent task")??; }
    }
    Ok(())
}

/// Use the saved agent if the database still knows it; otherwise register a
/// new one for the demo house and save its credentials (mode 0600 would be
/// right for a real site; this is demo data).
async fn reuse_or_keep(
    dir: &Path,
    db: &sea_orm::DatabaseConnection,
    seed: &admin::DemoSeed,
) -> anyhow::Result<(uuid::Uuid, String)> {
    let path = dir.join("demo-agent.toml");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(saved) = toml::from_str::<SavedAgent>(&text)
        && let Some(found) =
            store::people::find_agent(db, server::domain::AgentId(saved.agent_id)).await?
        && server::services::secrets::agent_secret_matches(&saved.secret, &found.secret_hash)
    {
        return Ok((saved.agent_id, saved.secret));
    }
    let (id, secret) = admin::create_agent(db, seed.site.site_id, "demo agent").await?;
    let saved = SavedAgent {
        agent_id: id.0,
        secret,
    };
    std::fs::write(&path, toml::to_string(&saved)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok((saved.agent_id, saved.secret))
}
