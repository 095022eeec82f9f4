//! Homecontrol agent: reads a site's field devices and streams their values to
//! the central server.
//!
//! The pieces, from the wire inwards:
//!
//! - [`config`]: the typed `agent.toml` ([`config::AgentConfig`]), with errors
//!   that name the line and key;
//! - [`registers`]: pure register maps: profiles as TOML data, decode/encode,
//!   and the read plan that groups points into few requests;
//! - [`devices`]: the [`devices::DeviceClient`] trait and its tokio-modbus
//!   implementation over TCP and RTU (tokio-serial), Modbus ASCII, the
//!   Ouman EH-203 native serial protocol ([`devices::ouman`]), the POP
//!   room-heating boards' own protocol ([`devices::pop`]), and Modbus
//!   slave mode ([`devices::slave`]: a PLC master polls the agent's bank);
//! - [`poller`]: one task per bus, each device on its own interval, producing
//!   [`protocol::Reading`]s and [`protocol::DeviceStatus`] changes, and
//!   serving writes ([`poller::Writer`], from [`Agent::writer`]) ahead of polls;
//! - [`buffer`]: the durable on-disk buffer (SQLite) every reading is written
//!   to before it counts as taken, bounded in bytes, with persistent batch seqs;
//! - [`metrics`]: Prometheus text metrics on an optional local listener;
//! - [`uplink`]: the WebSocket link, a pure session state machine plus the I/O
//!   loop with jittered reconnects and resend of unacknowledged batches;
//! - [`control`]: the safety envelope from the local config and the pure
//!   decision core for remote commands, schedules, overrides and actions;
//! - [`sim`]: device simulators (an Ouman EH-203, a POP bus with a wall
//!   keypad) for demos and tests.
//!
//! [`Agent`] wires them together. The binary (`main.rs`) and the tests run the
//! same code:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let cfg = agent::config::AgentConfig::load(std::path::Path::new("/etc/homecontrol/agent.toml"))?;
//! let agent = agent::Agent::build(cfg);
//! agent.run_until_stopped(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod backoff;
pub mod buffer;
pub mod cli;
pub mod config;
pub mod control;
pub mod devices;
pub mod discover;
pub mod metrics;
pub mod poller;
pub mod registers;
pub mod sim;
pub mod telemetry;
pub mod tomlfile;
pub mod uplink;

use std::{collections::BTreeMap, future::Future};

use anyhow::Context as _;
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{
    buffer::Buffer,
    config::{AgentConfig, Transport},
    devices::{BusClient, ouman::OumanClient, slave},
    uplink::session::{Session, SessionConfig},
};

/// Feature flags announced in `Hello` (plus `control` when the agent's config
/// has a safety envelope).
pub const CAPABILITIES: &[&str] = &["readings", "device_status"];

/// A configured agent, ready to run.
#[derive(Debug)]
pub struct Agent {
    cfg: AgentConfig,
    session: SessionConfig,
    slave_banks: std::collections::BTreeMap<String, slave::Bank>,
    writer: poller::Writer,
    /// Each bus's command queue, handed to its task at run time.
    commands: BTreeMap<String, tokio::sync::mpsc::Receiver<poller::BusCommand>>,
    /// The clock schedules, overrides and actions run on.
    control_clock: control::executor::Clock,
}

impl Agent {
    /// Prepare an agent from a validated configuration. Does no I/O apart from
    /// installing rustls's `ring` crypto provider for the process (once; an
    /// already installed provider is kept).
    pub fn build(cfg: AgentConfig) -> Agent {
        let _already_installed = rustls::crypto::ring::default_provider().install_default();
        let mut writer = poller::Writer::new();
        let mut commands = BTreeMap::new();
        for bus in &cfg.buses {
            // Every bus has a queue. A slave bus serves it by offering the
            // value to the device's bank and waiting for the PLC to take it.
            let (handle, rx) = poller::BusHandle::new(&bus.name);
            for d in cfg.devices.iter().filter(|d| d.bus == bus.name) {
                writer.route(&d.key, handle.clone());
            }
            commands.insert(bus.name.clone(), rx);
        }
        Agent {
            slave_banks: slave::banks(&cfg),
            cfg,
            session: SessionConfig::default(),
            writer,
            commands,
            control_clock: control::executor::Clock::system(),
        }
    }

    /// Writes to the configured devices: each goes to its bus's queue and runs
    /// there before the next poll (on a `modbus_slave` bus: is offered to the
    /// device's bank and done once the PLC master has taken it, see
    /// [`slave::Bank::write`]). Take it before [`Agent::run_until_stopped`];
    /// writes are answered while the agent runs, and fail with
    /// [`poller::WriteError::BusStopped`] once it has stopped.
    pub fn writer(&self) -> poller::Writer {
        self.writer.clone()
    }

    /// Run schedules, overrides and actions on `clock` instead of the
    /// system clock (tests reach a schedule edge in seconds this way).
    pub fn with_control_clock(mut self, clock: control::executor::Clock) -> Agent {
        self.control_clock = clock;
        self
    }

    /// Override the uplink session tunables (batch window, timeouts); tests
    /// use short windows.
    pub fn with_session_config(mut self, session: SessionConfig) -> Agent {
        self.session = session;
        self
    }

    /// The configuration this agent runs.
    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    /// The register bank of `device` when it is a PLC exchange area on a
    /// `modbus_slave` bus: values are offered to the PLC and read from it here
    /// (clones share the bank the running agent serves).
    pub fn slave_bank(&self, device: &str) -> Option<slave::Bank> {
        self.slave_banks.get(device).cloned()
    }

    /// The `Hello` sent at the start of every uplink session.
    pub fn hello(&self) -> protocol::Hello {
        protocol::Hello {
            agent_id: self.cfg.server.agent_id.0,
            version: protocol::PROTOCOL_VERSION,
            capabilities: CAPABILITIES
                .iter()
                .map(|c| (*c).to_owned())
                .chain((!self.cfg.envelope.is_empty()).then(|| "control".to_owned()))
                .collect(),
            software: Some(format!("homecontrol-agent {}", env!("CARGO_PKG_VERSION"))),
            devices: self.cfg.catalogue(),
            envelope: (!self.cfg.envelope.is_empty()).then(|| self.cfg.envelope.info()),
        }
    }

    /// Poll the devices and stream to the server until `shutdown` completes.
    /// Returns an error only if a task failed unexpectedly.
    pub async fn run_until_stopped(
        mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        // Opened before polling starts: no reading is taken without a place to keep it.
        let buffer = Buffer::open(self.cfg.buffer.clone()).context("opening the on-disk buffer")?;
        let cancel = CancellationToken::new();
        let metrics = std::sync::Arc::new(metrics::Metrics::default());
        let mut tasks = JoinSet::new();
        if let Some(addr) = self.cfg.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics listener on {addr}"))?;
            info!(%addr, "serving metrics on /metrics");
            tasks.spawn(metrics::serve(listener, metrics.clone(), cancel.clone()));
        }
        let (tx, rx) = mpsc::channel(1024);
        let mut commands = std::mem::take(&mut self.commands);
        for bus in &self.cfg.buses {
            let devices: Vec<_> = self
                .cfg
                .devices
                .iter()
                .filter(|d| d.bus == bus.name)
                .cloned()
                .collect();
            if devices.is_empty() {
                continue;
            }
            let (name, tx, cancel, metrics) = (
                bus.name.clone(),
                tx.clone(),
                cancel.clone(),
                metrics.clone(),
            );
            // A bus without a queue (impossible: build made one per bus) gets a closed one.
            let cmds = commands
                .remove(&bus.name)
                .unwrap_or_else(|| poller::BusHandle::new(&bus.name).1);
            match &bus.transport {
                Transport::Rtu(_) | Transport::Ascii(_) | Transport::Tcp { .. } => {
                    let driver = poller::ModbusDriver::new(BusClient::new(bus), bus.max_gap);
                    tasks.spawn(poller::run_bus(
                        name, driver, devices, tx, cmds, cancel, metrics,
                    ));
                }
                Transport::Ouman(_) => {
                    let driver = devices::ouman::OumanDriver::new(OumanClient::new(bus));
                    tasks.spawn(poller::run_bus(
                        name, driver, devices, tx, cmds, cancel, metrics,
                    ));
                }
                Transport::ModbusSlave(line) => {
                    let units = devices
                        .iter()
                        .filter_map(|d| {
                            let bank = self.slave_banks.get(&d.key)?.clone();
                            Some(slave::SlaveUnit {
                                unit_id: d.unit_id,
                                device: d.key.clone(),
                                bank,
                                round: d.poll_interval,
                            })
                        })
                        .collect();
                    let line = line.clone();
                    tasks.spawn(slave::run_slave_bus(
                        name, line, units, cmds, tx, cancel, metrics,
                    ));
                }
                Transport::Pop(_) => {
                    let driver = devices::pop::PopDriver::new(devices::pop::PopClient::new(bus));
                    tasks.spawn(poller::run_bus(
                        name, driver, devices, tx, cmds, cancel, metrics,
                    ));
                }
            }
        }
        drop(tx);
        let mut session = Session::new(self.session.clone(), self.hello(), buffer);
        let rx = if self.cfg.envelope.is_empty() {
            rx
        } else {
            // Remote control: readings pass the executor's forwarder (it notes
            // the writable points' values) and the executor's messages join them.
            let (up_tx, up_rx) = mpsc::channel(1024);
            let (ctl_tx, ctl_rx) = mpsc::channel(control::executor::INPUT_QUEUE);
            let reported = control::executor::Reported::default();
            let back = control::device_keeper::DevicesBack::default();
            let envelope = self.cfg.envelope.clone();
            tasks.spawn(control::executor::forward(
                envelope.clone(),
                reported.clone(),
                back.clone(),
                rx,
                up_tx.clone(),
            ));
            let executor = control::executor::Executor::new(
                envelope,
                self.writer.clone(),
                control::store::default_path(&self.cfg.buffer.path),
                self.control_clock,
                reported,
            )
            .with_devices_back(back);
            tasks.spawn(executor.run(ctl_rx, up_tx, cancel.clone()));
            session = session.with_control(ctl_tx);
            up_rx
        };
        tasks.spawn(uplink::run(
            self.cfg.server.clone(),
            session,
            rx,
            cancel.clone(),
            metrics,
        ));
        info!(agent_id = %self.cfg.server.agent_id, buses = self.cfg.buses.len(), devices = self.cfg.devices.len(), "agent running");

        tokio::pin!(shutdown);
        let result = loop {
            tokio::select! {
                () = &mut shutdown => break Ok(()),
                Some(done) = tasks.join_next() => {
                    // Pollers end early only when the uplink is gone, and the uplink only when cancelled.
                    if let Err(e) = done {
                        break Err(e).context("an agent task failed");
                    }
                }
            }
        };
        cancel.cancel();
        while tasks.join_next().await.is_some() {}
        info!("agent stopped");
        result
    }
}
