//! The Ouman EH-203 native serial protocol end to end: our simulator
//! ([`OumanSim`]) on one end of a socat pty pair opened at 4800 baud 8N1 (or
//! on raw TCP, as behind an RS-232 serial server), the agent's
//! [`OumanDriver`] polled through `run_bus` on the other.
//!
//! Proven here: every profile point read over the line equals the plant
//! model's value, one request per data block per poll; a power-cycled
//! controller goes offline and comes back by itself; an unplugged adapter is
//! reopened; noise and garbled replies give a clear error and the next poll
//! is fine; the same over TCP; the whole agent uploads the values; and the
//! `simulate eh203 --native` command serves the protocol.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeMap, path::Path, process::Stdio, sync::Arc, time::Duration};

use agent::{
    config::{AgentConfig, DeviceConfig},
    devices::ouman::{OumanClient, OumanDriver},
    metrics::Metrics,
    poller::{BusDriver as _, BusHandle, PollEvent, PolledDevice, WriteError, run_bus},
    registers::ouman::DataId,
    sim::{Alarm, Eh203Sim, OumanSim, PlantState, SimOptions},
};
use common::{AGENT_ID, FakeServer, WAIT, socat_pair, spawn_agent, within};
use protocol::{AgentToServer, DeviceStatus, Reading};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    net::TcpListener,
    process::{Child, Command},
    sync::mpsc,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

/// A plant whose values hold still (the ticker's next step is an hour away),
/// so what the agent reads can be compared with the model exactly.
fn still_plant() -> OumanSim {
    let plant = Eh203Sim::new(SimOptions {
        tick: Duration::from_secs(3600),
        alarm_b: true,
        ..SimOptions::default()
    });
    OumanSim::new(plant)
}

/// The device's end of the line, opened like the controller's port: 4800 8N1.
fn open_4800(path: &Path) -> tokio_serial::SerialStream {
    let builder = tokio_serial::new(path.display().to_string(), 4800)
        .data_bits(tokio_serial::DataBits::Eight)
        .parity(tokio_serial::Parity::None)
        .stop_bits(tokio_serial::StopBits::One);
    tokio_serial::SerialStream::open(&builder).unwrap()
}

fn config(bus: &str, poll_ms: u64) -> AgentConfig {
    let toml = format!(
        "[server]\nurl = \"ws://127.0.0.1:1/agent/v1/ws\"\nagent_id = \"{AGENT_ID}\"\nsecret = \"s3cret-for-test\"\n\n\
         [[bus]]\nname = \"eh203\"\nkind = \"ouman\"\n{bus}\ntimeout_ms = 300\n\n\
         [[device]]\nkey = \"heatpump\"\nbus = \"eh203\"\nprofile = \"ouman_eh203\"\npoll_interval_ms = {poll_ms}\n"
    );
    AgentConfig::from_toml("ouman.toml", &toml, Path::new(".")).unwrap()
}

fn serial_bus(path: &Path) -> String {
    format!("path = \"{}\"", path.display())
}

/// Poll the configured device through `run_bus` with an [`OumanDriver`].
struct Poller {
    rx: mpsc::Receiver<PollEvent>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Poller {
    fn start(cfg: &AgentConfig, devices: Vec<DeviceConfig>) -> Poller {
        let bus = &cfg.buses[0];
        let (tx, rx) = mpsc::channel(256);
        let cancel = CancellationToken::new();
        // No writes in these tests: a queue whose sender is dropped at once.
        let (_, commands) = BusHandle::new(&bus.name);
        let task = tokio::spawn(run_bus(
            bus.name.clone(),
            OumanDriver::new(OumanClient::new(bus)),
            devices,
            tx,
            commands,
            cancel.clone(),
            Arc::new(Metrics::default()),
        ));
        Poller { rx, cancel, task }
    }

    /// The next status matching `f` (other events are skipped).
    async fn status(&mut self, what: &str, f: impl Fn(&DeviceStatus) -> bool) -> DeviceStatus {
        tokio::time::timeout(WAIT * 2, async {
            loop {
                match self.rx.recv().await.expect("poller running") {
                    PollEvent::Status(s) if f(&s) => return s,
                    _ => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("never saw a status: {what}"))
    }

    /// The next batch of readings with `n` values (one whole poll).
    async fn whole_poll(&mut self, n: usize) -> Vec<Reading> {
        within("a whole poll's readings", async {
            loop {
                if let PollEvent::Readings(r) = self.rx.recv().await.expect("poller running")
                    && r.len() == n
                {
                    return r;
                }
            }
        })
        .await
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }
}

/// What the controller's display shows for each profile point, worked out
/// from the plant model here (not through the agent's or the simulator's
/// encoders): temperatures, the simulator's valve positions and ID 45 bits,
/// and atoid's captured heating-curve bytes.
fn expected(s: &PlantState) -> BTreeMap<&'static str, f64> {
    let b = |v: bool| f64::from(u8::from(v));
    BTreeMap::from([
        ("outdoor_temp", s.outdoor_temp),
        ("l1_supply_temp", s.l1_supply_temp),
        ("l1_room_temp", s.l1_room_temp),
        ("l1_return_temp", s.l1_return_temp),
        ("l2_supply_temp", s.l2_supply_temp),
        ("dhw_tank_top_temp", s.dhw_tank_top_temp),
        ("dhw_tank_bottom_temp", s.dhw_tank_bottom_temp),
        ("hot_gas_temp", s.hot_gas_temp),
        ("l1_valve_position", 40.0),
        ("l2_valve_position", 25.0),
        ("dhw_valve_position", 0.0),
        ("dig1", b(s.alarm_a)),
        ("dig2", b(s.alarm_b)),
        ("dig3", 0.0),
        ("relay1", b(s.compressor_running)),
        ("relay2", b(s.electric_heater_on)),
        ("dhw_supply_temp", s.dhw_tank_top_temp - 2.0),
        ("dhw_circulation_temp", s.dhw_tank_top_temp - 8.0),
        ("meas_6", s.l1_room_temp - 1.0),
        ("l1_curve_minus20", 32.0),
        ("l1_curve_0", 25.0),
        ("l1_curve_plus20", 20.0),
        ("l1_supply_min", 20.0),
        ("l1_supply_max", 35.0),
    ])
}

fn assert_matches_model(readings: &[Reading], state: &PlantState) {
    let expected = expected(state);
    assert_eq!(readings.len(), expected.len(), "{readings:?}");
    for r in readings {
        let want = expected[r.point.as_str()];
        // Hundredths on the wire: the model's value rounded to 0.01.
        assert!(
            (r.value - want).abs() <= 0.005 + 1e-9,
            "{}: read {} but the model shows {want}",
            r.point,
            r.value
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_reads_every_profile_point_over_a_4800_baud_pty_in_one_request_per_block() {
    let pty = socat_pair().await;
    let sim = still_plant();
    let _serving = sim.serve_serial(open_4800(&pty.a));
    let cfg = config(&serial_bus(&pty.b), 60_000);
    let Some(agent::config::Transport::Ouman(agent::config::OumanLink::Serial(line))) =
        cfg.buses.first().map(|b| b.transport.clone())
    else {
        panic!("an ouman serial bus")
    };
    assert_eq!(line.baud, 4800, "the default speed");

    // Every point of the profile, the disabled ones too.
    let mut device = cfg.devices[0].clone();
    device.points.iter_mut().for_each(|p| p.enabled = true);
    let n = device.points.len();
    let mut poller = Poller::start(&cfg, vec![device]);
    let online = poller.status("online", |s| s.online).await;
    assert_eq!(online.last_error, None);
    let readings = poller.whole_poll(n).await;
    assert_matches_model(&readings, &sim.plant().snapshot());
    assert!(
        readings.iter().all(|r| r.ts == readings[0].ts),
        "one timestamp per poll"
    );

    // Fewest transactions: each of the 16 data blocks was asked for once.
    let ids = [
        12, 18, 20, 21, 23, 24, 25, 26, 27, 33, 34, 41, 45, 49, 50, 51,
    ];
    for id in ids {
        assert_eq!(sim.requests(DataId(id)), 1, "data ID {id}");
    }
    assert_eq!(sim.total_requests(), ids.len() as u64);
    poller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cycled_controller_goes_offline_and_comes_back_online_by_itself() {
    let pty = socat_pair().await;
    let sim = still_plant();
    let serving = sim.serve_serial(open_4800(&pty.a));
    let cfg = config(&serial_bus(&pty.b), 200);
    let mut poller = Poller::start(&cfg, cfg.devices.clone());
    poller.status("online", |s| s.online).await;

    // Power off: the controller's port closes; the line stays, silent.
    serving.abort();
    let _ = serving.await;
    let off = poller.status("offline", |s| !s.online).await;
    assert!(
        off.last_error.as_deref().unwrap_or("").contains("no reply"),
        "{off:?}"
    );

    // Power on: nobody restarts the agent.
    let _serving = sim.serve_serial(open_4800(&pty.a));
    let on = poller.status("online again", |s| s.online).await;
    assert_eq!(on.last_error, None);
    poller.whole_poll(11).await;
    poller.stop().await;
}

/// "Plug in" the adapter: a socat pty pair with links `a` (the controller's
/// end) and `b` (ours).
async fn plug(a: &Path, b: &Path) -> Child {
    let child = Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
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
async fn an_unplugged_serial_adapter_is_reopened_when_it_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("eh203"), dir.path().join("usb-rs232"));
    let sim = still_plant();
    let mut socat = plug(&a, &b).await;
    let serving = sim.serve_serial(open_4800(&a));
    let cfg = config(&serial_bus(&b), 200);
    let mut poller = Poller::start(&cfg, cfg.devices.clone());
    poller.status("online", |s| s.online).await;

    // Unplug: the adapter and its device node vanish.
    // SIGKILL leaves socat no time to remove its links, and a dangling link
    // could come to point at another test's new pty: remove them as udev would.
    socat.kill().await.unwrap();
    serving.abort();
    for link in [&a, &b] {
        let _ = std::fs::remove_file(link);
    }
    poller.status("offline", |s| !s.online).await;

    // Plug back in under the same name.
    let _socat = plug(&a, &b).await;
    let _serving = sim.serve_serial(open_4800(&a));
    poller.status("online after the replug", |s| s.online).await;
    let readings = poller.whole_poll(11).await;
    assert!(readings.iter().any(|r| r.point == "outdoor_temp"));
    poller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_replies_give_a_clear_error_and_noise_does_not_stop_the_next_poll() {
    let pty = socat_pair().await;
    let sim = still_plant();
    let _serving = sim.serve_serial(open_4800(&pty.a));
    let cfg = config(&serial_bus(&pty.b), 200);
    let mut poller = Poller::start(&cfg, cfg.devices.clone());
    poller.status("online", |s| s.online).await;

    // Every attempt at the next block comes back with a wrong checksum.
    sim.corrupt_next_replies(agent::devices::ouman::ATTEMPTS);
    let bad = poller
        .status("the checksum error", |s| s.last_error.is_some())
        .await;
    let err = bad.last_error.unwrap();
    assert!(
        err.contains("no valid reply for data ID") && err.contains("bad checksum"),
        "{err}"
    );
    assert!(
        bad.online,
        "one garbled poll does not take the device offline"
    );
    let fine = poller
        .status("the error cleared", |s| s.last_error.is_none())
        .await;
    assert!(fine.online);

    // Noise before every reply, with a false start that claims 240 bytes.
    sim.set_noise_before_replies(vec![0xFF, 0x00, 0x02, 0x06, 0xF0, 0x55, 0x02, 0x13]);
    let noisy_from = time::OffsetDateTime::now_utc();
    let readings = loop {
        // A poll already under way when the noise started does not count.
        let r = poller.whole_poll(11).await;
        if r[0].ts > noisy_from {
            break r;
        }
    };
    let state = sim.plant().snapshot();
    for r in &readings {
        let want = expected(&state)[r.point.as_str()];
        assert!(
            (r.value - want).abs() <= 0.005 + 1e-9,
            "{}: {} vs {want}",
            r.point,
            r.value
        );
    }
    poller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_the_driver_reads_the_profile_and_survives_a_power_cycle() {
    let sim = still_plant();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = sim.serve_tcp(listener);
    let cfg = config(&format!("address = \"{addr}\""), 200);
    let mut poller = Poller::start(&cfg, cfg.devices.clone());
    poller.status("online", |s| s.online).await;
    let readings = poller.whole_poll(11).await;
    let state = sim.plant().snapshot();
    let r = |k: &str| readings.iter().find(|r| r.point == k).unwrap().value;
    assert!((r("outdoor_temp") - state.outdoor_temp).abs() <= 0.005 + 1e-9);
    assert_eq!(r("l2_valve_position"), 25.0);

    // The serial server loses power: connections and listener are gone.
    serving.abort();
    let _ = serving.await;
    poller.status("offline", |s| !s.online).await;

    let listener = TcpListener::bind(addr).await.unwrap();
    let _serving = sim.serve_tcp(listener);
    poller.status("online again", |s| s.online).await;
    poller.whole_poll(11).await;
    poller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_agent_uploads_native_readings_with_the_profile_catalogue() {
    let sim = still_plant();
    sim.plant().set_alarm(Alarm::A, true);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _serving = sim.serve_tcp(listener);
    let mut server = FakeServer::start().await;
    let toml = format!(
        "[server]\nurl = \"{}\"\nagent_id = \"{AGENT_ID}\"\nsecret = \"{}\"\n\n\
         [[bus]]\nname = \"eh203\"\nkind = \"ouman\"\naddress = \"{addr}\"\ntimeout_ms = 500\n\n\
         [[device]]\nkey = \"heatpump\"\nbus = \"eh203\"\nprofile = \"ouman_eh203\"\npoll_interval_ms = 300\n",
        server.url,
        common::SECRET
    );
    let (stop, agent) = spawn_agent(&toml);
    let hello = server
        .next_matching("hello", |s| match &s.msg {
            AgentToServer::Hello(h) => Some(h.clone()),
            _ => None,
        })
        .await;
    let dev = &hello.devices[0];
    assert_eq!(dev.profile.as_deref(), Some("ouman_eh203"));
    assert_eq!(dev.points.len(), 11);
    let readings = server
        .next_matching("readings", |s| match &s.msg {
            AgentToServer::Readings(b) if b.readings.len() >= 11 => Some(b.readings.clone()),
            _ => None,
        })
        .await;
    let state = sim.plant().snapshot();
    let outdoor = readings.iter().find(|r| r.point == "outdoor_temp").unwrap();
    assert_eq!(outdoor.unit, "degC");
    assert!((outdoor.value - state.outdoor_temp).abs() <= 0.005 + 1e-9);
    stop.cancel();
    agent.await.unwrap().unwrap();
}

/// `agent simulate eh203 --native ...`, waiting for its READY line.
async fn simulate(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["simulate", "eh203", "--native"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = within("the simulator's READY line", async {
        loop {
            match lines.next_line().await.unwrap() {
                Some(l) if l.starts_with("READY ") => return l,
                Some(_) => continue,
                None => panic!("the simulator exited before READY"),
            }
        }
    })
    .await;
    (child, ready)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulate_command_serves_the_native_protocol_on_tcp_and_serial() {
    let (_tcp_sim, ready) = simulate(&["--tcp", "127.0.0.1:0"]).await;
    let addr = ready.rsplit(' ').next().unwrap().to_owned();
    assert!(ready.contains("ouman native tcp"), "{ready}");
    let bus = config(&format!("address = \"{addr}\""), 1000).buses[0].clone();
    let mut client = OumanClient::new(&bus);
    let outdoor = client.read(DataId(18)).await.unwrap();
    let celsius = f64::from(i16::from_be_bytes([outdoor[0], outdoor[1]])) / 100.0;
    assert!((-40.0..=40.0).contains(&celsius), "{celsius}");

    let pty = socat_pair().await;
    let (_serial_sim, ready) = simulate(&["--serial", &pty.a.display().to_string()]).await;
    assert!(ready.ends_with("4800 8N1"), "{ready}");
    let bus = config(&serial_bus(&pty.b), 1000).buses[0].clone();
    let mut client = OumanClient::new(&bus);
    let valve = client.read(DataId(49)).await.unwrap();
    assert_eq!(valve, [40], "the simulator's L1 valve position");
    assert!(
        client.read(DataId(999)).await.is_err(),
        "an unknown ID gets no reply"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_patches_only_a_documented_block_and_is_read_back() {
    let pty = socat_pair().await;
    let sim = still_plant();
    let _serving = sim.serve_serial(open_4800(&pty.a));
    // A site that has verified the ID 12 layout adds a writable point of its own.
    let extra = "\n[[device.point]]\nname = \"curve_at_0\"\ndata_id = 12\nbyte = 1\ndata_type = \"u8\"\nunit = \"degC\"\nwritable = true\n\n\
                 [[device.point]]\nname = \"outdoor_setter\"\ndata_id = 18\nscale = 0.01\nwritable = true\n";
    let toml = format!(
        "[server]\nurl = \"ws://127.0.0.1:1/agent/v1/ws\"\nagent_id = \"{AGENT_ID}\"\nsecret = \"s3cret-for-test\"\n\n\
         [[bus]]\nname = \"eh203\"\nkind = \"ouman\"\n{}\ntimeout_ms = 300\n\n\
         [[device]]\nkey = \"heatpump\"\nbus = \"eh203\"\nprofile = \"ouman_eh203\"\n{extra}",
        serial_bus(&pty.b)
    );
    let cfg = AgentConfig::from_toml("write.toml", &toml, Path::new(".")).unwrap();
    let device = cfg.devices[0].clone();
    let point = |k: &str| device.points.iter().find(|p| p.key == k).unwrap().clone();
    let mut driver = OumanDriver::new(OumanClient::new(&cfg.buses[0]));
    let dev = PolledDevice::new(&device, Vec::new(), Vec::new());

    let before = sim.block(DataId(12)).unwrap();
    driver
        .write(&dev, &point("curve_at_0"), 30.0)
        .await
        .unwrap();
    let after = sim.block(DataId(12)).unwrap();
    assert_eq!(after[1], 30);
    assert_eq!(
        (&after[..1], &after[2..]),
        (&before[..1], &before[2..]),
        "only byte 1 changed"
    );

    // The profile's own ID 12 points stay read-only on an EH-203.
    let err = driver
        .write(&dev, &point("l1_curve_0"), 31.0)
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Unsupported(_)), "{err}");
    // A measurement block has no documented write layout, writable or not.
    let err = driver
        .write(&dev, &point("outdoor_setter"), 5.0)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no public source documents writing data ID 18"),
        "{err}"
    );
    // A value the byte cannot hold is refused before anything is sent.
    let sent = sim.total_requests();
    let err = driver
        .write(&dev, &point("curve_at_0"), 300.0)
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Encode { .. }), "{err}");
    assert_eq!(sim.total_requests(), sent, "nothing went out");
    assert_eq!(sim.block(DataId(12)).unwrap()[1], 30);
}

#[test]
fn the_profiles_command_lists_the_native_eh203_profile() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("profiles")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("ouman_eh203\t")),
        "{text}"
    );
}
