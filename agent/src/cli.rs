//! The `agent` command line: `run`, `check-config`, `profiles`, `simulate`.
//! `main.rs` only parses and dispatches here, so the commands are testable.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::{
    Agent,
    config::{AgentConfig, DataBits, Parity, SerialSettings, StopBits, Transport},
    devices::modbus::port_builder,
    registers::{builtin_profile_ids, load_builtin},
    sim::{Eh203Sim, ModelOptions, OumanSim, SimOptions},
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
    /// Ouman EH-203: with a MODBUS-200 card, or (`--native`) on its own serial port.
    Eh203(SimArgs),
    /// A PLC master running a fixed request list every round against the
    /// agent's `modbus_slave` bus (reads the to_plc blocks, writes the from_plc ones).
    PlcMaster(PlcMasterArgs),
    /// A bus of POP room-heating boards with a wall keypad polling them.
    Pop(PopSimArgs),
}

/// Options of `simulate plc-master`.
#[derive(Debug, Args)]
pub struct PlcMasterArgs {
    /// Serial port of the line (Modbus RTU, 8 data bits, 1 stop bit).
    #[arg(long)]
    pub serial: PathBuf,
    /// Unit id of the agent's exchange area.
    #[arg(long, default_value_t = 1)]
    pub unit: u8,
    /// Serial baud rate.
    #[arg(long, default_value_t = 19_200)]
    pub baud: u32,
    /// Parity: none, even or odd.
    #[arg(long, default_value = "even", value_parser = parse_parity)]
    pub parity: crate::config::Parity,
    /// Exchange-area profile: a built-in id or a .toml path (`path.toml#id`).
    #[arg(long, default_value = "plc_cottage_exchange")]
    pub profile: String,
    /// Milliseconds from the start of one round to the next.
    #[arg(long, default_value_t = 1000)]
    pub round_ms: u64,
    /// Milliseconds to wait for each reply.
    #[arg(long, default_value_t = 500)]
    pub timeout_ms: u64,
    /// Stop after this many rounds (default: run until stopped).
    #[arg(long)]
    pub rounds: Option<u64>,
}

fn parse_parity(s: &str) -> Result<crate::config::Parity, String> {
    use crate::config::Parity;
    match s {
        "none" => Ok(Parity::None),
        "even" => Ok(Parity::Even),
        "odd" => Ok(Parity::Odd),
        other => Err(format!("`{other}` is not none, even or odd")),
    }
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
    /// Serve Modbus TCP on this address, e.g. 127.0.0.1:5020 (port 0 picks one);
    /// with `--native`, the native protocol as raw TCP (a serial server).
    #[arg(long, required_unless_present = "serial", conflicts_with = "serial")]
    pub tcp: Option<String>,
    /// Serve Modbus RTU on this serial port (8 data bits, `--parity`, 1 stop
    /// bit); with `--native`, the native protocol (8N1).
    #[arg(long)]
    pub serial: Option<PathBuf>,
    /// Speak the EH-203's native serial protocol (profile `ouman_eh203`)
    /// instead of Modbus.
    #[arg(long)]
    pub native: bool,
    /// Serial baud rate [default: 9600, or 4800 with --native].
    #[arg(long)]
    pub baud: Option<u32>,
    /// Modbus RTU parity: even (the Serial Line V1.02 default, like the
    /// agent's own default), none or odd. The native protocol is always 8N1.
    #[arg(long, default_value = "even", value_parser = parse_parity)]
    pub parity: Parity,
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
            device: SimDevice::PlcMaster(args),
        } => simulate_plc_master(args).await,
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
            Transport::Ouman(crate::config::OumanLink::Tcp { address }) => {
                format!("ouman serial server {address}")
            }
            Transport::Ouman(crate::config::OumanLink::Serial(r)) => format!(
                "ouman {} {} baud {:?} parity, {:?} data bits, {:?} stop bits",
                r.path, r.baud, r.parity, r.data_bits, r.stop_bits
            ),
            Transport::ModbusSlave(l) => format!(
                "modbus_slave ({:?} framing; the PLC is the master) {} {} baud {:?} parity, {:?} data bits, {:?} stop bits",
                l.framing,
                l.serial.path,
                l.serial.baud,
                l.serial.parity,
                l.serial.data_bits,
                l.serial.stop_bits
            ),
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
        // An ouman bus is point to point: its devices have no unit id to show.
        let point_to_point = cfg
            .buses
            .iter()
            .any(|b| b.name == d.bus && matches!(b.transport, Transport::Ouman(_)));
        let unit = if point_to_point {
            String::new()
        } else {
            format!(" unit {}", d.unit_id)
        };
        let _ = writeln!(
            s,
            "device {} ({}) on {}{unit} profile {} every {:?}",
            d.key,
            d.label.as_deref().unwrap_or("-"),
            d.bus,
            d.profile_id,
            d.poll_interval
        );
        for p in d.enabled_points() {
            let guess = if p.guessed {
                "  (address guessed: verify on site)"
            } else {
                ""
            };
            let dir = p.direction.map(|d| format!(" {d}")).unwrap_or_default();
            let _ = writeln!(
                s,
                "  {:<24} {} {}{dir}{guess}",
                p.key,
                p.spec.describe(),
                p.unit
            );
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
    if args.native {
        return simulate_eh203_native(OumanSim::new(sim), args.tcp, args.serial, args.baud).await;
    }
    let baud = args.baud.unwrap_or(9600);
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
        let settings = SerialSettings {
            path: path.to_string_lossy().into_owned(),
            baud,
            parity: args.parity,
            data_bits: DataBits::Eight,
            stop_bits: StopBits::One,
        };
        let port = tokio_serial::SerialStream::open(&port_builder(&settings))
            .with_context(|| format!("opening {}", path.display()))?;
        let letter = match args.parity {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        };
        println!(
            "READY eh203 simulator: modbus rtu {} {} 8{letter}1 unit {}",
            path.display(),
            baud,
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

/// `simulate eh203 --native`: the native protocol on a serial port or raw TCP.
async fn simulate_eh203_native(
    sim: OumanSim,
    tcp: Option<String>,
    serial: Option<PathBuf>,
    baud: Option<u32>,
) -> anyhow::Result<()> {
    let server = if let Some(addr) = tcp {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr().context("reading the bound address")?;
        println!("READY eh203 simulator: ouman native tcp {local}");
        sim.serve_tcp(listener)
    } else if let Some(path) = serial {
        let baud = baud.unwrap_or(crate::config::OUMAN_DEFAULT_BAUD);
        let builder = tokio_serial::new(path.to_string_lossy(), baud)
            .data_bits(tokio_serial::DataBits::Eight)
            .parity(tokio_serial::Parity::None)
            .stop_bits(tokio_serial::StopBits::One);
        let port = tokio_serial::SerialStream::open(&builder)
            .with_context(|| format!("opening {}", path.display()))?;
        println!(
            "READY eh203 simulator: ouman native serial {} {baud} 8N1",
            path.display()
        );
        sim.serve_serial(port)
    } else {
        anyhow::bail!("give --tcp ADDR or --serial PATH");
    };
    tokio::select! {
        () = shutdown_signal() => Ok(()),
        res = server => res.context("simulator task")?.context("simulator server"),
    }
}

async fn simulate_plc_master(args: PlcMasterArgs) -> anyhow::Result<()> {
    use crate::{
        config::{DataBits, SerialSettings, StopBits},
        registers::{parse_profile, profile::pick},
        sim::plc_master::PlcMaster,
    };
    let profile = match load_builtin(&args.profile) {
        Some(p) => p?,
        None => {
            let (path, id) = match args.profile.rsplit_once('#') {
                Some((p, id)) => (p, Some(id)),
                None => (args.profile.as_str(), None),
            };
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the profile {path}"))?;
            pick(path, parse_profile(path, &text)?, id)?
        }
    };
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let mut master = PlcMaster::new(&profile, timeout)
        .map_err(|e| anyhow::anyhow!("profile `{}` is not an exchange area: {e}", profile.id))?;
    let settings = SerialSettings {
        path: args.serial.to_string_lossy().into_owned(),
        baud: args.baud,
        parity: args.parity,
        data_bits: DataBits::Eight,
        stop_bits: StopBits::One,
    };
    let port = tokio_serial::SerialStream::open(&crate::devices::modbus::port_builder(&settings))
        .with_context(|| format!("opening {}", settings.path))?;
    let mut ctx = PlcMaster::connect(port, args.unit);
    println!(
        "READY plc-master: modbus rtu {} {} baud {:?} parity, unit {}, {} requests every {} ms",
        settings.path,
        settings.baud,
        settings.parity,
        args.unit,
        master.requests_per_round(),
        args.round_ms
    );
    let mut every = tokio::time::interval(Duration::from_millis(args.round_ms.max(10)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut done = 0u64;
    loop {
        tokio::select! {
            () = shutdown_signal() => return Ok(()),
            _ = every.tick() => {
                println!("{}", master.round(&mut ctx).await);
                done += 1;
                if args.rounds.is_some_and(|n| done >= n) {
                    return Ok(());
                }
            }
        }
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
