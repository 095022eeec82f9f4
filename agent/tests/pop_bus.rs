//! POP boards over a real serial line: the simulated bus (`sim::pop`, boards
//! plus a wall keypad polling them all the time) on one end of a socat pty
//! pair, the agent's POP client, driver and poller on the other.
//!
//! Nothing here sleeps for readiness or asserts on elapsed time: every wait
//! is for a condition, with a generous limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    path::Path,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use agent::{
    config::{AgentConfig, DeviceConfig},
    devices::pop::{
        PopClient, PopDriver, PopError, PopTiming,
        message::{ClockEntry, OutputCommand, SetpointKind, Tenths},
    },
    metrics::Metrics,
    poller::{
        BusDriver as _, BusHandle, PollEvent, PollOutcome, PolledDevice, WriteError, run_bus,
    },
    sim::pop::{PopBusSim, PopFault, PopSimOptions},
};
use common::{AGENT_ID, PtyPair, WAIT, socat_pair, within};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

/// An agent config with a `pop` bus on `path` and one `pop_board` device per
/// board number.
fn config(path: &Path, boards: &[u8], poll_ms: u64) -> AgentConfig {
    let mut toml = format!(
        "[server]\nurl = \"ws://127.0.0.1:1/agent/v1/ws\"\nagent_id = \"{AGENT_ID}\"\nsecret = \"s3cret-for-test\"\n\n\
         [[bus]]\nname = \"heating\"\nkind = \"pop\"\npath = \"{}\"\n",
        path.display()
    );
    for b in boards {
        toml.push_str(&format!(
            "\n[[device]]\nkey = \"board{b}\"\nbus = \"heating\"\nunit_id = {b}\nprofile = \"pop_board\"\npoll_interval_ms = {poll_ms}\n"
        ));
    }
    AgentConfig::from_toml("pop.toml", &toml, Path::new(".")).unwrap()
}

fn open(path: &Path) -> tokio_serial::SerialStream {
    tokio_serial::SerialStream::open(&tokio_serial::new(path.display().to_string(), 9600)).unwrap()
}

/// A simulated bus serving end `a` of a fresh pty pair, values held still.
async fn bus(opts: PopSimOptions) -> (PtyPair, PopBusSim) {
    let pty = socat_pair().await;
    let sim = PopBusSim::new(PopSimOptions {
        drift: None,
        ..opts
    });
    // The task ends by itself when the pty goes away with the test.
    let _serving = sim.serve(open(&pty.a));
    (pty, sim)
}

fn client(cfg: &AgentConfig) -> PopClient {
    PopClient::new(&cfg.buses[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_and_outputs_of_two_boards_are_read_while_the_keypad_talks() {
    let (pty, sim) = bus(PopSimOptions::default()).await;
    let cfg = config(&pty.b, &[1, 2], 1000);
    let mut c = client(&cfg);
    // Wait until the keypad has polled both boards at least once.
    within("the keypad's traffic", async {
        while sim.stats().keypad_replies < 6 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    sim.with_board(2, |b| b.rooms[4].floor = Tenths(237));
    for board in [1, 2] {
        let rooms = c.read_rooms(board, 1, 8).await.unwrap();
        let model = sim.board(board).unwrap();
        assert_eq!(rooms.len(), 8);
        for (r, m) in rooms.iter().zip(&model.rooms) {
            assert_eq!(r.measured, Ok(m.measured().celsius()), "board {board}");
            assert_eq!(r.floor, Ok(m.floor.celsius()));
            assert_eq!(r.ceiling, Ok(m.ceiling.celsius()));
        }
        let before = sim.board_clock(board).unwrap();
        let outputs = c.read_outputs(board).await.unwrap();
        let after = sim.board_clock(board).unwrap();
        assert_eq!(outputs.count, 6);
        for n in 1..=6 {
            // The read may straddle a minute where a clock table switches.
            let on = outputs.is_on(n);
            assert!(
                on == model.output_on(n, before) || on == model.output_on(n, after),
                "output {n}"
            );
            assert_eq!(outputs.is_manual(n), Some(false));
        }
    }
    assert_eq!(
        c.read_rooms(2, 5, 1).await.unwrap()[0].floor,
        Ok(23.7),
        "a value changed on the board is read as it is now"
    );
    let s = c.stats();
    assert!(s.foreign_frames > 0, "keypad traffic was heard and skipped");
    assert_eq!(s.gave_up, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setpoints_outputs_and_clock_entries_written_reach_the_board() {
    let (pty, sim) = bus(PopSimOptions::default()).await;
    let cfg = config(&pty.b, &[2], 1000);
    let mut driver = PopDriver::new(client(&cfg));
    let dev = PolledDevice::for_driver(&driver, &cfg.devices[0]);
    let point = |k: &str| dev.points.iter().find(|p| p.key == k).unwrap().clone();

    // room 3 floor setpoint 22.5 °C, read back by the driver and by the test
    driver
        .write(&dev, &point("room_3_floor_setpoint"), 22.5)
        .await
        .unwrap();
    assert_eq!(sim.board(2).unwrap().rooms[2].floor, Tenths(225));
    driver
        .write(&dev, &point("room_8_ceiling_setpoint"), 19.3)
        .await
        .unwrap();
    assert_eq!(sim.board(2).unwrap().rooms[7].ceiling, Tenths(193));
    let rooms = driver.client().read_rooms(2, 3, 1).await.unwrap();
    assert_eq!(rooms[0].floor, Ok(22.5));

    // off the 0.1 °C grid, outside the setpoint range, a measurement: refused unsent
    let sends = driver.client().stats().sends;
    for (key, value, expect) in [
        ("room_3_floor_setpoint", 22.55, "not a multiple of 0.1 °C"),
        ("room_3_floor_setpoint", 80.0, "setpoints are 0.0..=45.0 °C"),
        ("output_4", 0.5, "an output takes 1 (on) or 0 (off)"),
    ] {
        let err = driver.write(&dev, &point(key), value).await.unwrap_err();
        assert!(
            matches!(&err, WriteError::Encode { reason, .. } if reason.contains(expect)),
            "{key} = {value}: {err}"
        );
    }
    let err = driver.write(&dev, &point("room_3_temp"), 20.0).await;
    assert_eq!(err, Err(WriteError::NotWritable("room_3_temp".into())));
    assert_eq!(driver.client().stats().sends, sends, "nothing was sent");

    // output 4 on by hand, then back to its clock table (empty: off)
    driver.write(&dev, &point("output_4"), 1.0).await.unwrap();
    assert_eq!(sim.board(2).unwrap().outputs[3].manual, Some(true));
    driver
        .write(&dev, &point("output_4_manual"), 0.0)
        .await
        .unwrap();
    assert_eq!(sim.board(2).unwrap().outputs[3].manual, None);
    // output 1 kept as it is now, but by hand
    let on_now = driver.client().read_outputs(2).await.unwrap().is_on(1);
    driver
        .write(&dev, &point("output_1_manual"), 1.0)
        .await
        .unwrap();
    assert_eq!(sim.board(2).unwrap().outputs[0].manual, on_now);

    // clock table of output 4, slot 3: Mon-Fri 06:30-08:00
    let entry = ClockEntry {
        days: 0x1F,
        on: 6 * 60 + 30,
        off: 8 * 60,
    };
    driver.set_clock_entry(2, 4, 3, entry).await.unwrap();
    assert_eq!(sim.board(2).unwrap().outputs[3].clock[2], entry);
    let table = driver.read_clock_table(2, 4).await.unwrap();
    assert_eq!(table, [ClockEntry::EMPTY, ClockEntry::EMPTY, entry]);
    // through the client alone
    let c = driver.client();
    c.set_clock_entry(2, 4, 3, ClockEntry::EMPTY).await.unwrap();
    assert_eq!(c.read_clock_table(2, 4).await.unwrap(), []);
    c.set_output(2, 5, OutputCommand::Off).await.unwrap();
    c.set_setpoint(2, 1, SetpointKind::Ceiling, 17.0)
        .await
        .unwrap();
    let b = sim.board(2).unwrap();
    assert_eq!(
        (b.outputs[4].manual, b.rooms[0].ceiling),
        (Some(false), Tenths(170))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_that_is_off_is_a_device_connection_error_after_twenty_sends() {
    let (pty, sim) = bus(PopSimOptions::default()).await;
    sim.set_powered(2, false);
    let cfg = config(&pty.b, &[2], 1000);
    let mut c = client(&cfg);
    assert_eq!(c.timing(), PopTiming::default());
    let before = sim.stats();
    let err = c.read_outputs(2).await.unwrap_err();
    assert_eq!(
        err,
        PopError::NoReply {
            board: 2,
            attempts: 20
        }
    );
    let s = c.stats();
    assert_eq!((s.sends, s.unanswered, s.gave_up), (20, 20, 1));
    // every send reached the simulated line: heard unanswered, or lost in a collision
    let after = within("the simulator to settle the last request", async {
        loop {
            let after = sim.stats();
            let heard =
                (after.unanswered + after.collisions) - (before.unanswered + before.collisions);
            if heard >= 20 {
                return after;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        (after.unanswered + after.collisions) - (before.unanswered + before.collisions),
        20
    );
    assert_eq!(after.served, before.served);
    // board 1 on the same line answers at once
    assert!(c.read_outputs(1).await.is_ok());
}

async fn next_status(rx: &mut mpsc::Receiver<PollEvent>, device: &str, online: bool) -> String {
    tokio::time::timeout(WAIT * 2, async {
        loop {
            match rx.recv().await.expect("poller running") {
                PollEvent::Status(s) if s.device == device && s.online == online => {
                    return s.last_error.unwrap_or_default();
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{device} never reported online = {online}"))
}

async fn next_readings(rx: &mut mpsc::Receiver<PollEvent>, device: &str) -> Vec<protocol::Reading> {
    tokio::time::timeout(WAIT, async {
        loop {
            if let PollEvent::Readings(r) = rx.recv().await.expect("poller running")
                && r.first().is_some_and(|r| r.device == device)
            {
                return r;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no readings from {device}"))
}

struct Poller {
    rx: mpsc::Receiver<PollEvent>,
    writes: BusHandle,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Poller {
    fn spawn(cfg: &AgentConfig, driver: PopDriver, devices: Vec<DeviceConfig>) -> Poller {
        let (tx, rx) = mpsc::channel(1024);
        let cancel = CancellationToken::new();
        let bus = cfg.buses[0].name.clone();
        let (writes, commands) = BusHandle::new(&bus);
        let task = tokio::spawn(run_bus(
            bus,
            driver,
            devices,
            tx,
            commands,
            cancel.clone(),
            Arc::new(Metrics::default()),
        ));
        Poller {
            rx,
            writes,
            cancel,
            task,
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_powered_on_again_resumes_online_through_the_poller() {
    let (pty, sim) = bus(PopSimOptions::default()).await;
    sim.set_powered(2, false);
    let cfg = config(&pty.b, &[1, 2], 300);
    // 5 sends instead of 20 keeps the test short; the count of 20 is the test above's.
    let timing = PopTiming {
        attempts: 5,
        ..PopTiming::default()
    };
    let driver = PopDriver::new(client(&cfg).with_timing(timing));
    let mut p = Poller::spawn(&cfg, driver, cfg.devices.clone());

    let err = next_status(&mut p.rx, "board2", false).await;
    assert!(
        err.contains("device connection error: board 2 did not answer 5 attempts"),
        "{err}"
    );
    let r = next_readings(&mut p.rx, "board1").await;
    assert_eq!(
        r.len(),
        8 * 3 + 6 * 2 + 3,
        "board 1 is read in full meanwhile"
    );
    // A write to the silent board fails as a link fault, not silently.
    let err = p
        .writes
        .write("board2", "room_1_floor_setpoint", 23.4)
        .await;
    assert!(matches!(err, Err(WriteError::Transport(_))), "{err:?}");

    sim.set_powered(2, true);
    assert_eq!(next_status(&mut p.rx, "board2", true).await, "");
    let r = next_readings(&mut p.rx, "board2").await;
    let floor = r
        .iter()
        .find(|r| r.point == "room_1_floor_setpoint")
        .unwrap();
    let model = sim.board(2).unwrap();
    assert_eq!(floor.value, model.rooms[0].floor.celsius());
    assert_eq!(floor.unit, "degC");
    // Through the bus's command queue, between polls: written and read back.
    p.writes
        .write("board2", "room_1_floor_setpoint", 23.4)
        .await
        .unwrap();
    assert_eq!(sim.board(2).unwrap().rooms[0].floor, Tenths(234));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_sender_and_a_bad_checksum_are_skipped() {
    let (pty, sim) = bus(PopSimOptions::default()).await;
    let cfg = config(&pty.b, &[1], 1000);
    // A resend would collide with the decoy and garble it into noise; a long
    // reply timeout keeps a loaded machine from resending.
    let mut c = client(&cfg).with_timing(PopTiming {
        reply_timeout: Duration::from_secs(5),
        ..PopTiming::default()
    });
    let model = sim.board(1).unwrap();
    let expected: Vec<_> = model
        .rooms
        .iter()
        .map(|r| Ok(r.measured().celsius()))
        .collect();

    for fault in [PopFault::WrongSender, PopFault::BadChecksum] {
        let before = c.stats();
        sim.inject(fault);
        // The decoy carries every room 5 °C warmer: taking it would show here.
        let rooms = c.read_rooms(1, 1, 8).await.unwrap();
        let got: Vec<_> = rooms.iter().map(|r| r.measured.clone()).collect();
        assert_eq!(got, expected, "{fault:?}");
        let after = c.stats();
        match fault {
            PopFault::WrongSender => assert!(after.foreign_frames > before.foreign_frames),
            PopFault::BadChecksum => assert!(after.bad_frames > before.bad_frames),
        }
        assert_eq!(after.sends - before.sends, 1, "skipped, not resent");
    }
    assert_eq!(sim.stats().served, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_implausible_room_temperature_is_reported_not_stored() {
    let (pty, sim) = bus(PopSimOptions::default()).await;
    let cfg = config(&pty.b, &[1], 1000);
    let mut driver = PopDriver::new(client(&cfg));
    let dev = PolledDevice::for_driver(&driver, &cfg.devices[0]);
    sim.set_sensor_fault(1, 2, Some(Tenths(3000)));

    let (readings, outcome) = driver.poll(&dev).await;
    assert!(
        readings.iter().all(|r| r.point != "room_2_temp"),
        "not stored"
    );
    let room1 = readings.iter().find(|r| r.point == "room_1_temp").unwrap();
    assert_eq!(
        room1.value,
        sim.board(1).unwrap().rooms[0].measured().celsius()
    );
    assert_eq!(readings.len(), 8 * 3 + 6 * 2 + 3 - 1);
    assert_eq!(
        outcome,
        PollOutcome::Answered {
            exceptions: vec![
                "room_2_temp: implausible room temperature: 300.0 °C is outside -30.0..=60.0 °C"
                    .into()
            ]
        }
    );
    assert_eq!(driver.client().stats().implausible, 1);

    sim.set_sensor_fault(1, 2, None);
    let (readings, outcome) = driver.poll(&dev).await;
    assert_eq!(readings.len(), 8 * 3 + 6 * 2 + 3);
    assert_eq!(outcome, PollOutcome::Answered { exceptions: vec![] });
}

/// "Plug in" the adapter: a socat pty pair with links `a` (the bus) and `b` (ours).
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
async fn an_unplugged_adapter_is_reopened_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("bus"), dir.path().join("usb-rs485"));
    let sim = PopBusSim::new(PopSimOptions::default());
    let mut socat = plug(&a, &b).await;
    let serving = sim.serve(open(&a));
    let cfg = config(&b, &[1], 200);
    let driver = PopDriver::new(client(&cfg));
    let mut p = Poller::spawn(&cfg, driver, cfg.devices.clone());
    next_status(&mut p.rx, "board1", true).await;

    // Unplug: the device node vanishes (as udev removes the by-id link), then
    // the adapter. The links go first: socat cannot remove them when killed,
    // and a stale link could lead to a pty another test has just created.
    std::fs::remove_file(&b).unwrap();
    std::fs::remove_file(&a).unwrap();
    socat.kill().await.unwrap();
    let _ = within("the simulator to lose its line", serving).await;
    next_status(&mut p.rx, "board1", false).await;

    // Plug back in under the same name; nobody restarts anything.
    let _socat = plug(&a, &b).await;
    let _serving = sim.serve(open(&a));
    next_status(&mut p.rx, "board1", true).await;
    let r = next_readings(&mut p.rx, "board1").await;
    assert!(r.iter().any(|r| r.point == "room_1_temp"));
    p.stop().await;
}

/// Send `n` reads of a clock table to board 1 and return the collisions and
/// the answers the bus counted meanwhile. The keypad never asks for clock
/// tables, so an answer is the board's reply to *this* client: a room block
/// or outputs read could be satisfied by the board's reply to the keypad's
/// identical question (no request id on the wire), which hides collisions.
async fn collisions_of(c: &mut PopClient, sim: &PopBusSim, n: usize) -> (u64, u64) {
    let before = sim.stats();
    let sends_before = c.stats().sends;
    for _ in 0..n {
        // A read may still fail when every send of an impolite client collides.
        let _ = c.read_clock_table(1, 1).await;
    }
    // Our last request may still be on its way to the simulator.
    let sends = c.stats().sends - sends_before;
    let heard = |s: agent::sim::pop::PopSimStats| s.served + s.collisions + s.unanswered;
    within("the simulator to hear every send", async {
        loop {
            if heard(sim.stats()) - heard(before) >= sends {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let after = sim.stats();
    (
        after.collisions - before.collisions,
        after.served - before.served,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_quiet_line_avoids_collisions_and_sending_at_once_does_not() {
    let (pty, sim) = bus(PopSimOptions::default()).await;
    let cfg = config(&pty.b, &[1], 1000);
    const N: usize = 25;
    // The impolite client rarely gets through; fewer reads and sends keep the test short.
    const N_RUDE: usize = 8;

    let mut polite = client(&cfg);
    let t = Instant::now();
    let (polite_collisions, polite_served) = collisions_of(&mut polite, &sim, N).await;
    let polite_time = t.elapsed();
    let ps = polite.stats();
    drop(polite);

    let mut rude = client(&cfg).with_timing(PopTiming {
        quiet: Duration::ZERO,
        attempts: 5,
        ..PopTiming::default()
    });
    let t = Instant::now();
    let (rude_collisions, rude_served) = collisions_of(&mut rude, &sim, N_RUDE).await;
    let rude_time = t.elapsed();
    let rs = rude.stats();
    eprintln!(
        "POP bus with keypad, clock-table reads: quiet-wait client {N} reads, {} sends, \
         {polite_collisions} collisions, {polite_served} answered, {} gave up, {polite_time:?}; \
         send-at-once client {N_RUDE} reads, {} sends, {rude_collisions} collisions, \
         {rude_served} answered, {} gave up, {rude_time:?}",
        ps.sends, ps.gave_up, rs.sends, rs.gave_up
    );
    // Every send reached the simulator and was either answered or lost.
    assert_eq!(polite_collisions + polite_served, ps.sends);
    assert_eq!(rude_collisions + rude_served, rs.sends);
    assert_eq!(ps.gave_up, 0);
    // Rates, not counts, with room for a machine so loaded that the simulator
    // itself stalls: typically 0 of 25 with manners, nearly all without.
    let rate = |collisions: u64, sends: u64| collisions as f64 / sends.max(1) as f64;
    let polite_rate = rate(polite_collisions, ps.sends);
    let rude_rate = rate(rude_collisions, rs.sends);
    assert!(
        polite_rate < 0.2,
        "{polite_collisions} of {} sends collided with bus manners",
        ps.sends
    );
    assert!(
        rude_rate > 0.5,
        "only {rude_collisions} of {} sends collided without",
        rs.sends
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulate_pop_command_serves_boards_on_a_serial_port() {
    let pty = socat_pair().await;
    let mut sim = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["simulate", "pop", "--serial"])
        .arg(&pty.a)
        .args(["--boards", "3", "--no-keypad", "--baud", "9600"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sim.stdout.take().unwrap()).lines();
    let ready = within("the simulator's READY line", lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(ready.starts_with("READY pop simulator"), "{ready}");
    assert!(ready.contains("boards 1..=3, keypad off"), "{ready}");

    let cfg = config(&pty.b, &[3], 1000);
    let mut c = client(&cfg).with_timing(PopTiming {
        attempts: 3,
        ..PopTiming::default()
    });
    let rooms = c.read_rooms(3, 1, 8).await.unwrap();
    assert!(rooms.iter().all(|r| r.measured.is_ok() && r.floor.is_ok()));
    assert_eq!(c.read_alarms(3).await.unwrap().count, 3);
    assert!(matches!(
        c.read_outputs(4).await,
        Err(PopError::NoReply { board: 4, .. })
    ));
    assert_eq!(c.stats().foreign_frames, 0, "no keypad on this bus");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_streams_a_pop_boards_values_to_the_server() {
    let (pty, sim) = bus(PopSimOptions::default()).await;
    sim.set_alarm(1, 2, true);
    let mut server = common::FakeServer::start().await;
    let toml = format!(
        "[server]\nurl = \"{}\"\nagent_id = \"{AGENT_ID}\"\nsecret = \"{}\"\n\n\
         [[bus]]\nname = \"heating\"\nkind = \"pop\"\npath = \"{}\"\n\n\
         [[device]]\nkey = \"board1\"\nbus = \"heating\"\nunit_id = 1\nprofile = \"pop_board\"\npoll_interval_ms = 500\n",
        server.url,
        common::SECRET,
        pty.b.display()
    );
    let (stop, agent) = common::spawn_agent(&toml);
    let readings = server
        .next_matching("readings from the POP board", |s| match &s.msg {
            protocol::AgentToServer::Readings(b) => Some(b.readings.clone()),
            _ => None,
        })
        .await;
    let get = |k: &str| readings.iter().find(|r| r.point == k).unwrap().value;
    let model = sim.board(1).unwrap();
    assert_eq!(
        get("room_4_ceiling_setpoint"),
        model.rooms[3].ceiling.celsius()
    );
    assert_eq!(get("alarm_burglary"), 1.0);
    assert_eq!(get("alarm_fire"), 0.0);
    stop.cancel();
    agent.await.unwrap().unwrap();
}
