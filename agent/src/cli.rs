//! The `agent` command line: `run`, `check-config`, `profiles`, `simulate`.
//! `main.rs` only parses and dispatches here, so the commands are testable.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::{
    Agent,
    config::{AgentConfig, Transport},
    registers::{builtin_profile_ids, load_builtin},
    sim::{Eh203Sim, ModelOptions, SimOptions},
};

/// Homecontrol site agent.
#[derive(Debug, Parser)]
#[command(name = "agent", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Poll the configured devices and stream to the server.
    Run {
        /// Path of agent.toml.
        #[arg(long, env = "AGENT_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config and print the device/point catalogue.
    CheckConfig {
        /// Path of agent.toml.
        #[arg(long, env = "AGENT_CONFIG")]
        config: PathBuf,
    },
    /// List the built-in device profiles.
    Profiles,
    /// Look for devices on the serial adapters and print a config snippet.
    Discover(DiscoverArgs),
    /// Run a device simulator.
    Simulate {
        /// Which device.
        #[command(subcommand)]
        device: SimDevice,
    },
}

/// Options of `discover`.
#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// A port to scan (repeatable); default: every serial adapter found,
    /// named by its stable /dev/serial/by-id path.
    #[arg(long = "port")]
    pub ports: Vec<String>,
    /// Milliseconds to listen for a master's traffic before probing.
    #[arg(long, default_value_t = 3000)]
    pub listen_ms: u64,
    /// Unit ids to probe, e.g. `1-247`.
    #[arg(long, default_value = "1-10", value_parser = parse_units)]
    pub units: std::ops::RangeInclusive<u8>,
    /// Baud rates to try, in order (repeatable); default 9600, 19200, 38400, 4800, 115200.
    #[arg(long = "baud")]
    pub bauds: Vec<u32>,
    /// Reply timeout of one probe, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub timeout_ms: u64,
}

fn parse_units(s: &str) -> Result<std::ops::RangeInclusive<u8>, String> {
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let n = |v: &str| -> Result<u8, String> {
        match v.trim().parse::<u8>() {
            Ok(u @ 1..=247) => Ok(u),
            _ => Err(format!("`{v}` is not a unit id 1..=247")),
        }
    };
    let (lo, hi) = (n(lo)?, n(hi)?);
    if lo > hi {
        return Err(format!("{lo}-{hi} is an empty range"));
    }
    Ok(lo..=hi)
}

/// Simulated devices.
#[derive(Debug, Subcommand)]
pub enum SimDevice {
    /// Ouman EH-203 with a MODBUS-200 card.
    Eh203(SimArgs),
    /// A bus of POP room-heating boards with a wall keypad polling them.
    Pop(PopSimArgs),
}

/// Options of `simulate pop`.
#[derive(Debug, Args)]
pub struct PopSimArgs {
    /// The serial port (or pty) that is the bus.
    #[arg(long)]
    pub serial: PathBuf,
    /// Boards on the bus, numbered 1..=N.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..))]
    pub boards: u8,
    /// No wall keypad: the line is quiet apart from the agent's requests.
    #[arg(long)]
    pub no_keypad: bool,
    /// Line speed (8N1).
    #[arg(long, default_value_t = crate::devices::pop::DEFAULT_BAUD)]
    pub baud: u32,
}

/// Options of `simulate eh203`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Serve Modbus TCP on this address, e.g. 127.0.0.1:5020 (port 0 picks one).
    #[arg(long, required_unless_present = "serial", conflicts_with = "serial")]
    pub tcp: Option<String>,
    /// Serve Modbus RTU on this serial port (8N1).
    #[arg(long)]
    pub serial: Option<PathBuf>,
    /// Serial baud rate.
    #[arg(long, default_value_t = 9600)]
    pub baud: u32,
    /// Modbus unit id to answer to.
    #[arg(long, default_value_t = 1)]
    pub unit_id: u8,
    /// Milliseconds between model updates.
    #[arg(long, default_value_t = 1000)]
    pub tick_ms: u64,
    /// Seconds of one compressor on/off cycle.
    #[arg(long, default_value_t = 120)]
    pub compressor_period_s: u64,
    /// Start with alarm A raised.
    #[arg(long)]
    pub alarm_a: bool,
    /// Start with alarm B raised.
    #[arg(long)]
    pub alarm_b: bool,
}

/// Run a parsed command line to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            // No extra context: the config error already names file, line and key.
            let cfg = AgentConfig::load(&config)?;
            Agent::build(cfg).run_until_stopped(shutdown_signal()).await
        }
        Command::CheckConfig { config } => {
            let cfg = AgentConfig::load(&config)?;
            print!("{}", describe(&cfg));
            Ok(())
        }
        Command::Profiles => {
            for id in builtin_profile_ids() {
                let p = load_builtin(id)
                    .context("built-in profile")?
                    .with_context(|| format!("built-in profile {id}"))?;
                let enabled = p.points.iter().filter(|p| p.enabled).count();
                println!(
                    "{id}\t{}\t{} points ({enabled} enabled)",
                    p.label.unwrap_or_default(),
                    p.points.len()
                );
            }
            Ok(())
        }
        Command::Discover(args) => {
            let mut opts = crate::discover::Options {
                ports: args.ports,
                listen: Duration::from_millis(args.listen_ms),
                units: args.units,
                probe_timeout: Duration::from_millis(args.timeout_ms.max(1)),
                ..crate::discover::Options::default()
            };
            if !args.bauds.is_empty() {
                opts.bauds = args.bauds;
            }
            let found =
                crate::discover::discover(&opts, |line| eprintln!("discover: {line}")).await;
            print!("{}", crate::discover::config_snippet(&found));
            Ok(())
        }
        Command::Simulate {
            device: SimDevice::Eh203(args),
        } => simulate_eh203(args).await,
        Command::Simulate {
            device: SimDevice::Pop(args),
        } => simulate_pop(args).await,
    }
}

/// The catalogue of a config as the `check-config` text.
pub fn describe(cfg: &AgentConfig) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "config OK: agent {} -> {}",
        cfg.server.agent_id, cfg.server.url
    );
    for bus in &cfg.buses {
        let how = match &bus.transport {
            Transport::Tcp { address } => format!("tcp {address}"),
            Transport::Rtu(r) | Transport::Ascii(r) | Transport::Pop(r) => format!(
                "{} {} {} baud {:?} parity, {:?} data bits, {:?} stop bits",
                match bus.transport {
                    Transport::Ascii(_) => "ascii",
                    Transport::Pop(_) => "pop",
                    _ => "rtu",
                },
                r.path,
                r.baud,
                r.parity,
                r.data_bits,
                r.stop_bits
            ),
        };
        let _ = writeln!(s, "bus {}: {how}, timeout {:?}", bus.name, bus.timeout);
    }
    for d in &cfg.devices {
        let _ = writeln!(
            s,
            "device {} ({}) on {} unit {} profile {} every {:?}",
            d.key,
            d.label.as_deref().unwrap_or("-"),
            d.bus,
            d.unit_id,
            d.profile_id,
            d.poll_interval
        );
        for p in d.enabled_points() {
            let guess = if p.guessed {
                "  (address guessed: verify on site)"
            } else {
                ""
            };
            let _ = writeln!(s, "  {:<24} {} {}{guess}", p.key, p.spec.describe(), p.unit);
        }
    }
    s
}

async fn simulate_eh203(args: SimArgs) -> anyhow::Result<()> {
    let opts = SimOptions {
        unit_id: args.unit_id,
        tick: Duration::from_millis(args.tick_ms.max(10)),
        model: ModelOptions {
            compressor_period: Duration::from_secs(args.compressor_period_s.max(1)),
            ..ModelOptions::default()
        },
        alarm_a: args.alarm_a,
        alarm_b: args.alarm_b,
    };
    let sim = Eh203Sim::new(opts);
    let server = if let Some(addr) = args.tcp {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr().context("reading the bound address")?;
        println!(
            "READY eh203 simulator: modbus tcp {local} unit {}",
            args.unit_id
        );
        sim.serve_tcp(listener)
    } else if let Some(path) = args.serial {
        let builder = tokio_serial::new(path.to_string_lossy(), args.baud);
        let port = tokio_serial::SerialStream::open(&builder)
            .with_context(|| format!("opening {}", path.display()))?;
        println!(
            "READY eh203 simulator: modbus rtu {} {} 8N1 unit {}",
            path.display(),
            args.baud,
            args.unit_id
        );
        sim.serve_rtu(port)
    } else {
        anyhow::bail!("give --tcp ADDR or --serial PATH");
    };
    tokio::select! {
        () = shutdown_signal() => Ok(()),
        res = server => res.context("simulator task")?.context("simulator server"),
    }
}

async fn simulate_pop(args: PopSimArgs) -> anyhow::Result<()> {
    use crate::sim::pop::{PopBusSim, PopSimOptions};
    if args.baud == 0 {
        anyhow::bail!("--baud must be above 0");
    }
    let opts = PopSimOptions {
        boards: (1..=args.boards).collect(),
        keypad: !args.no_keypad,
        baud: args.baud,
        ..PopSimOptions::default()
    };
    let sim = PopBusSim::new(opts);
    let port = tokio_serial::SerialStream::open(&tokio_serial::new(
        args.serial.to_string_lossy(),
        args.baud,
    ))
    .with_context(|| format!("opening {}", args.serial.display()))?;
    println!(
        "READY pop simulator: {} {} 8N1, boards 1..={}, keypad {}",
        args.serial.display(),
        args.baud,
        args.boards,
        if args.no_keypad { "off" } else { "on" }
    );
    let server = sim.serve(port);
    let result = tokio::select! {
        () = shutdown_signal() => Ok(()),
        res = server => res.context("simulator task")?.context("simulated line"),
    };
    let s = sim.stats();
    println!(
        "pop simulator: served {} requests, {} collisions, keypad polls {}",
        s.served, s.collisions, s.keypad_polls
    );
    result
}

/// Completes on Ctrl-C or SIGTERM (what systemd sends).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
