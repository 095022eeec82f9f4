//! Slave mode against our own PLC master simulator (`agent simulate
//! plc-master`, tokio-modbus's RTU client): the whole agent answers on one
//! end of a socat pty pair with the built-in `plc_cottage_exchange` area at
//! unit 10, the simulated PLC runs its fixed request list on the other, and a
//! fake server receives readings and the PLC's online state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeMap, time::Duration};

use agent::{registers::load_builtin, sim::plc_master::PlcMaster};
use common::{FakeServer, socat_pair, spawn_agent_then, within};
use protocol::AgentToServer;
use tokio_serial::SerialStream;

const UNIT: u8 = 10;
const DEVICE: &str = "cottage_plc";

fn agent_toml(server_url: &str, tty: &std::path::Path, round_ms: u64) -> String {
    format!(
        r#"[server]
url = "{server_url}"
agent_id = "{id}"
secret = "{secret}"

[[bus]]
name = "plc"
kind = "modbus_slave"
path = "{tty}"
baud = 9600
parity = "none"

[[device]]
key = "{DEVICE}"
bus = "plc"
unit_id = {UNIT}
profile = "plc_cottage_exchange"
poll_interval_ms = {round_ms}
"#,
        id = common::AGENT_ID,
        secret = common::SECRET,
        tty = tty.display()
    )
}

fn master() -> PlcMaster {
    let profile = load_builtin("plc_cottage_exchange").unwrap().unwrap();
    PlcMaster::new(&profile, Duration::from_millis(500)).unwrap()
}

fn open(tty: &std::path::Path) -> SerialStream {
    SerialStream::open(&tokio_serial::new(tty.to_string_lossy(), 9600)).unwrap()
}

/// Readings seen by the fake server until `done` holds for the latest values.
async fn readings_until(
    server: &mut FakeServer,
    mut done: impl FnMut(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let mut latest = BTreeMap::new();
    while !done(&latest) {
        let rs = server
            .next_matching("readings from the slave bus", |s| match &s.msg {
                AgentToServer::Readings(b) => Some(b.readings.clone()),
                _ => None,
            })
            .await;
        for r in rs {
            latest.insert(r.point, r.value);
        }
    }
    latest
}

async fn expect_status(server: &mut FakeServer, online: bool) -> protocol::DeviceStatus {
    server
        .next_matching("the PLC's device status", |s| match &s.msg {
            AgentToServer::DeviceStatus(st) if st.device == DEVICE && st.online == online => {
                Some(st.clone())
            }
            _ => None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_the_simulated_plc_and_delivers_offers_when_it_reads_them() {
    let pty = socat_pair().await;
    let mut server = FakeServer::start().await;
    let (stop, handle, bank) = spawn_agent_then(&agent_toml(&server.url, &pty.b, 300), |a| {
        a.slave_bank(DEVICE).unwrap()
    });
    let mut plc = master();
    let mut ctx = PlcMaster::connect(open(&pty.a), UNIT);

    // Rounds until the agent's port is open and every request is answered.
    let first = within("a round answered in full", async {
        loop {
            let r = plc.round(&mut ctx).await;
            if r.failed.is_empty() {
                return r;
            }
        }
    })
    .await;
    assert_eq!(first.ok, 6);
    assert!(
        first
            .read
            .iter()
            .all(|(_, v)| v.is_none() || v == &Some(0.0)),
        "nothing offered yet: registers unknown, bits off: {first}"
    );
    expect_status(&mut server, true).await;

    // What the PLC writes arrives as readings; the echo holds the PLC's default.
    let from_plc = [
        "indoor_temp",
        "outdoor_temp",
        "hot_water_temp",
        "energy_total",
        "room_setpoint_applied",
        "door_open",
        "burglar_alarm",
        "gsm_ok",
        "heating_on",
    ];
    let seen = readings_until(&mut server, |l| from_plc.iter().all(|k| l.contains_key(*k))).await;
    assert!((-10.0..=35.0).contains(&seen["indoor_temp"]), "{seen:?}");
    assert_eq!(seen["room_setpoint_applied"], 15.0);
    assert_eq!(seen["burglar_alarm"], 0.0);
    assert_eq!(
        bank.value("indoor_temp").unwrap().unwrap().value,
        seen["indoor_temp"]
    );

    // Offers wait for the PLC's next read (and its echo where it has one).
    let mut setpoint = bank.offer("room_setpoint", 21.5).unwrap();
    let mut mode = bank.offer("heating_mode", 2.0).unwrap();
    let mut heat = bank.offer("heating_request", 1.0).unwrap();
    for d in [&mut setpoint, &mut mode, &mut heat] {
        assert_eq!(d.try_outcome(), None, "the PLC has not read it yet");
    }
    let r = plc.round(&mut ctx).await;
    let read: BTreeMap<_, _> = r.read.iter().cloned().collect();
    assert_eq!(read["room_setpoint"], Some(21.5), "{r}");
    assert_eq!(read["heating_mode"], Some(2.0), "{r}");
    assert_eq!(read["heating_request"], Some(1.0), "{r}");
    assert!(within("setpoint delivered", setpoint).await.unwrap().echoed);
    assert!(!within("mode delivered", mode).await.unwrap().echoed);
    assert!(within("heating delivered", heat).await.unwrap().echoed);
    readings_until(&mut server, |l| {
        l.get("room_setpoint_applied") == Some(&21.5)
            && l.get("room_setpoint") == Some(&21.5)
            && l.get("heating_on") == Some(&1.0)
    })
    .await;

    // The PLC stops: offline after three silent rounds, online at its next request.
    let off = expect_status(&mut server, false).await;
    assert!(
        off.last_error
            .unwrap()
            .contains("no request from the PLC master"),
        "why offline"
    );
    plc.round(&mut ctx).await;
    expect_status(&mut server, true).await;

    stop.cancel();
    within("the agent to stop", handle).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plc_master_command_runs_its_rounds_against_the_agent() {
    let pty = socat_pair().await;
    let mut server = FakeServer::start().await;
    let (stop, handle, bank) = spawn_agent_then(&agent_toml(&server.url, &pty.b, 1000), |a| {
        a.slave_bank(DEVICE).unwrap()
    });
    // Wait until the agent answers (its port is open), with a master of our own.
    {
        let mut plc = master();
        let mut ctx = PlcMaster::connect(open(&pty.a), UNIT);
        within("the agent to answer", async {
            while !plc.round(&mut ctx).await.failed.is_empty() {}
        })
        .await;
    }
    let setpoint = bank.offer("room_setpoint", 21.5).unwrap();
    let out = within(
        "agent simulate plc-master to finish its rounds",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_agent"))
            .args(["simulate", "plc-master", "--serial"])
            .arg(&pty.a)
            .args(["--unit", "10", "--baud", "9600", "--parity", "none"])
            .args(["--rounds", "3", "--round-ms", "100", "--timeout-ms", "2000"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("READY plc-master: modbus rtu"),
        "{stdout}"
    );
    assert_eq!(lines.len(), 4, "READY and three rounds: {stdout}");
    for (i, line) in lines[1..].iter().enumerate() {
        assert!(
            line.starts_with(&format!("round {}: 6 ok, 0 failed;", i + 1)),
            "{stdout}"
        );
        assert!(line.contains(" room_setpoint=21.5 "), "{stdout}");
        assert!(line.contains(" heating_mode=unknown "), "{stdout}");
    }
    assert!(
        within("the echoed setpoint", setpoint)
            .await
            .unwrap()
            .echoed
    );
    readings_until(&mut server, |l| {
        l.get("room_setpoint_applied") == Some(&21.5)
    })
    .await;
    stop.cancel();
    within("the agent to stop", handle).await.unwrap().unwrap();
}

/// "Plug in" an adapter: a socat pty pair with links `a` (the PLC's end) and `b` (ours).
async fn plug(a: &std::path::Path, b: &std::path::Path) -> tokio::process::Child {
    let child = tokio::process::Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("socat is required (apt-get install socat)");
    within("the pty links", async {
        while !(a.exists() && b.exists()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplugged_slave_line_is_reopened_and_the_plc_is_served_again() {
    use agent::{
        config::AgentConfig,
        devices::slave::{self, SlaveUnit},
        metrics::Metrics,
        poller::PollEvent,
    };
    use tokio::sync::mpsc;

    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("plc"), dir.path().join("usb-rs485"));
    let mut socat = plug(&a, &b).await;
    let toml = format!(
        "{}\n[buffer]\npath = \"{}\"\n",
        agent_toml("ws://127.0.0.1:1/agent/v1/ws", &b, 200),
        dir.path().join("buf.db").display()
    );
    let cfg = AgentConfig::from_toml("replug.toml", &toml, std::path::Path::new(".")).unwrap();
    let agent::config::Transport::ModbusSlave(line) = cfg.buses[0].transport.clone() else {
        panic!("a slave line")
    };
    let bank = slave::bank_for(&cfg.devices[0]).unwrap();
    let unit = SlaveUnit {
        unit_id: UNIT,
        device: DEVICE.into(),
        bank: bank.clone(),
        round: Duration::from_millis(200),
    };
    let (tx, mut rx) = mpsc::channel(256);
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(slave::run_slave_bus(
        "plc".into(),
        line,
        vec![unit],
        agent::poller::BusHandle::new("plc").1,
        tx,
        cancel.clone(),
        std::sync::Arc::new(Metrics::default()),
    ));
    let mut next_status = async |online: bool| {
        within("a status change", async {
            loop {
                match rx.recv().await.expect("slave bus running") {
                    PollEvent::Status(s) if s.online == online => return s,
                    _ => {}
                }
            }
        })
        .await
    };
    let mut plc = master();
    {
        let mut ctx = PlcMaster::connect(open(&a), UNIT);
        within("the slave to answer", async {
            while !plc.round(&mut ctx).await.failed.is_empty() {}
        })
        .await;
    }
    next_status(true).await;

    // Unplug: the adapter and its device node vanish; the PLC goes unheard.
    // SIGKILL leaves socat no time to remove its links, and a dangling link
    // could come to point at another test's new pty: remove them as udev would.
    socat.kill().await.unwrap();
    for link in [&a, &b] {
        let _ = std::fs::remove_file(link);
    }
    let off = next_status(false).await;
    assert!(
        off.last_error.unwrap().contains("serial port"),
        "names the port"
    );

    // Plug back in under the same name; nobody restarts anything.
    let _socat = plug(&a, &b).await;
    // The new pty may reuse the number of one the slave has not closed yet.
    let port = within("the PLC's end of the new line to open", async {
        loop {
            match SerialStream::open(&tokio_serial::new(a.to_string_lossy(), 9600)) {
                Ok(p) => return p,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    let mut ctx = PlcMaster::connect(port, UNIT);
    within("the slave to answer after the replug", async {
        while !plc.round(&mut ctx).await.failed.is_empty() {}
    })
    .await;
    next_status(true).await;
    assert!(bank.value("indoor_temp").unwrap().is_some());
    cancel.cancel();
    task.await.unwrap();
}

/// The installer's envelope for the cottage PLC: wider than the PLC's own
/// 5..25 °C setpoint limits (the PLC clamps, the agent reports it).
const ENVELOPE: &str = r#"
[[writable]]
device = "cottage_plc"
point = "room_setpoint"
kind = "setpoint"
min = 5.0
max = 30.0
step = 0.5
max_override_minutes = 60

[[writable]]
device = "cottage_plc"
point = "heating_request"
kind = "output"
max_override_minutes = 60
"#;

fn set(point: &str, value: f64) -> protocol::Command {
    let now = time::OffsetDateTime::now_utc();
    protocol::Command {
        id: uuid::Uuid::new_v4(),
        issued_at: now,
        expires_at: now + time::Duration::minutes(5),
        issued_by: "owner@example.com".into(),
        request: protocol::ControlRequest::Set {
            device: DEVICE.into(),
            point: point.into(),
            value,
            until: None,
        },
    }
}

/// Send `cmd` down the link and wait for its result.
async fn ask(server: &mut FakeServer, cmd: protocol::Command) -> protocol::CommandResult {
    let id = cmd.id;
    server.send(protocol::ServerToAgent::Command(cmd));
    server
        .next_matching("the command's result", |s| match &s.msg {
            AgentToServer::CommandResult(r) if r.id == id => Some(r.clone()),
            _ => None,
        })
        .await
}

async fn control_state(
    server: &mut FakeServer,
    what: &str,
    want: impl Fn(&protocol::ControlState) -> bool,
) -> protocol::ControlState {
    server
        .next_matching(what, |s| match &s.msg {
            AgentToServer::ControlState(c) if want(c) => Some(c.clone()),
            _ => None,
        })
        .await
}

/// The simulated PLC running its rounds (paced 100 ms apart) until dropped;
/// `read` holds what its latest round read from the agent.
struct RunningPlc {
    read: std::sync::Arc<std::sync::Mutex<BTreeMap<String, Option<f64>>>>,
    /// Held by the PLC during each round; whoever else holds it stops the PLC.
    gate: std::sync::Arc<tokio::sync::Mutex<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningPlc {
    fn start(tty: &std::path::Path) -> RunningPlc {
        let read: std::sync::Arc<std::sync::Mutex<BTreeMap<String, Option<f64>>>> =
            std::sync::Arc::default();
        let gate: std::sync::Arc<tokio::sync::Mutex<()>> = std::sync::Arc::default();
        let (seen, turn) = (read.clone(), gate.clone());
        let mut ctx = PlcMaster::connect(open(tty), UNIT);
        let task = tokio::spawn(async move {
            let mut plc = master();
            loop {
                let round = turn.lock().await;
                let r = plc.round(&mut ctx).await;
                *seen.lock().unwrap() = r.read.into_iter().collect();
                drop(round);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        RunningPlc { read, gate, task }
    }

    /// Stop the PLC after its current round, until the guard is dropped.
    async fn pause(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.gate.clone().lock_owned().await
    }

    /// Wait until the PLC's latest round read `want` from `point`.
    async fn until_read(&self, point: &str, want: f64) {
        within(&format!("the PLC to read {point} = {want}"), async {
            while self.read.lock().unwrap().get(point) != Some(&Some(want)) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }
}

impl Drop for RunningPlc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_through_the_executor_reaches_the_plc_and_the_echo_is_the_result() {
    let pty = socat_pair().await;
    let mut server = FakeServer::start().await;
    let toml = format!("{}{ENVELOPE}", agent_toml(&server.url, &pty.b, 300));
    let (stop, handle) = common::spawn_agent(&toml);
    let plc = RunningPlc::start(&pty.a);
    // The agent knows the setpoint the PLC uses (its echo, the PLC's own
    // default until the agent offers one): the value to put back later.
    readings_until(&mut server, |l| {
        l.get("room_setpoint_applied") == Some(&15.0)
    })
    .await;

    // Inside the envelope and the PLC's own limits: offered, read, echoed.
    let r = ask(&mut server, set("room_setpoint", 21.5)).await;
    assert_eq!(r.outcome, protocol::CommandOutcome::Applied, "{r:?}");
    assert_eq!((r.before, r.after), (Some(15.0), Some(21.5)));
    plc.until_read("room_setpoint", 21.5).await;
    control_state(&mut server, "the applied state", |c| {
        c.point == "room_setpoint" && c.commanded == Some(21.5) && c.reported == Some(21.5)
    })
    .await;
    let r = ask(&mut server, set("heating_request", 1.0)).await;
    assert_eq!(r.outcome, protocol::CommandOutcome::Applied, "{r:?}");
    plc.until_read("heating_request", 1.0).await;

    // Inside the envelope but above the PLC's 25 °C: the echo says 25, the
    // agent reports a mismatch with both values and does not hide it.
    let r = ask(&mut server, set("room_setpoint", 28.0)).await;
    assert_eq!(r.outcome, protocol::CommandOutcome::Failed, "{r:?}");
    let reason = r.reason.unwrap();
    assert!(
        reason.contains("wrote 28, the device reads back 25"),
        "{reason}"
    );
    assert_eq!(r.after, Some(25.0));
    plc.until_read("room_setpoint", 28.0).await;

    drop(plc);
    stop.cancel();
    within("the agent to stop", handle).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_while_the_plc_is_silent_is_unverified_stays_offered_and_is_retried() {
    let logs = common::Logs::install();
    let pty = socat_pair().await;
    let mut server = FakeServer::start().await;
    let toml = format!("{}{ENVELOPE}", agent_toml(&server.url, &pty.b, 300));
    // The executor's clock runs 30 times as fast: its 60-s retry comes in 2 s.
    let clock = agent::control::executor::Clock::starting_at(time::OffsetDateTime::now_utc(), 30.0);
    let (stop, handle, bank) = common::spawn_agent_with(
        &toml,
        |a| a.with_control_clock(clock),
        |a| a.slave_bank(DEVICE).unwrap(),
    );
    let plc = RunningPlc::start(&pty.a);
    readings_until(&mut server, |l| {
        l.get("room_setpoint_applied") == Some(&15.0)
    })
    .await;

    // The PLC stops polling: nobody reads the offer.
    let silent = plc.pause().await;
    let r = ask(&mut server, set("room_setpoint", 22.0)).await;
    assert_eq!(r.outcome, protocol::CommandOutcome::Failed, "{r:?}");
    let reason = r.reason.unwrap();
    assert!(
        reason.contains("written, but the read-back failed")
            && reason.contains("did not read it within")
            && reason.contains("stays in the bank")
            && reason.contains("writes again in 60 s"),
        "{reason}"
    );
    let offered = bank.value("room_setpoint").unwrap().unwrap();
    assert_eq!((offered.value, offered.pending), (22.0, true));

    // The executor offers it again (a new offer, later than the first)...
    within("the executor to retry the write", async {
        while bank.value("room_setpoint").unwrap().unwrap().updated_at == offered.updated_at {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // ...and once the PLC is back, it takes the value and echoes it.
    drop(silent);
    plc.until_read("room_setpoint", 22.0).await;
    control_state(&mut server, "the delivered value reported", |c| {
        c.point == "room_setpoint" && c.reported == Some(22.0)
    })
    .await;
    // The retried write itself succeeds (the executor says so only on `Ok`).
    within("the retried write to be taken", async {
        while !logs
            .text()
            .lines()
            .any(|l| l.contains("written and read back") && l.contains("cottage_plc.room_setpoint"))
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(!bank.value("room_setpoint").unwrap().unwrap().pending);

    drop(plc);
    stop.cancel();
    within("the agent to stop", handle).await.unwrap().unwrap();
}
