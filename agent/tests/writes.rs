//! Writes against our own simulators: the EH-203 card (holding registers,
//! FC06/FC16) over TCP and over RTU through a socat pty pair, and
//! [`BankSim`] (every table, several units on one line, a request log) for
//! read-back mismatches, bounded retries, exceptions, read-modify-write of a
//! register bit, the command queue in `run_bus` and the agent's [`Writer`].

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{sync::Arc, time::Duration};

use agent::{
    config::{
        AgentConfig, BusConfig, DataBits, DeviceConfig, Parity, SerialSettings, StopBits, Transport,
    },
    devices::{BusClient, ModbusClient, modbus::port_builder},
    metrics::Metrics,
    poller::{
        BusDriver as _, BusHandle, ModbusDriver, PollEvent, PolledDevice, WRITE_ATTEMPTS,
        WriteCommand, WriteError, run_bus,
    },
    registers::{Point, parse_profile},
    sim::{
        Eh203Sim, SimOptions,
        bank::{BankSim, Logged, Tables},
    },
};
use common::{FakeServer, agent_toml, socat_pair, spawn_agent_with_writer, within};
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
};
use tokio_util::sync::CancellationToken;

/// Points added to the EH-203's built-in profile: registers 52..59 of the
/// simulated card are mapped but hold no model value, so a write stays.
const EH203_WRITABLE: &str = r#"
[[device.point]]
name = "test_setpoint"
function = "holding"
address = 55
data_type = "i16"
scale = 0.01
unit = "degC"
writable = true
enabled = false

[[device.point]]
name = "test_counter"
function = "holding"
address = 56
data_type = "u32"
word_order = "low_first"
writable = true
enabled = false

[[device.point]]
name = "beyond_the_card"
function = "holding"
address = 60
data_type = "u16"
writable = true
enabled = false
"#;

fn eh203_device(bus: &str) -> DeviceConfig {
    let text = format!(
        "[server]\nurl = \"ws://127.0.0.1:1/agent/v1/ws\"\nagent_id = \"{}\"\nsecret = \"s3cret-for-test\"\n\n\
         [[bus]]\nname = \"field\"\n{bus}\n\n\
         [[device]]\nkey = \"heatpump\"\nbus = \"field\"\nunit_id = 1\nprofile = \"ouman_eh203_modbus200\"\n{EH203_WRITABLE}",
        common::AGENT_ID
    );
    AgentConfig::from_toml("writes.toml", &text, std::path::Path::new("."))
        .unwrap()
        .devices
        .remove(0)
}

fn point<'a>(dev: &'a DeviceConfig, key: &str) -> &'a Point {
    dev.points.iter().find(|p| p.key == key).unwrap()
}

async fn write_to_eh203(bus: &BusConfig, dev: &DeviceConfig, sim: &Eh203Sim) {
    let mut driver = ModbusDriver::new(ModbusClient::new(bus), bus.max_gap);
    let polled = PolledDevice::for_driver(&driver, dev);
    // 21.5 degC in hundredths = 2150, by FC06, read back
    let w = driver.write(&polled, point(dev, "test_setpoint"), 21.5);
    assert_eq!(within("a write", w).await, Ok(()));
    assert_eq!(sim.read_holding(55, 1), Ok(vec![2150]));
    // -3.25 degC = -325 = 0xFEBB
    let w = driver.write(&polled, point(dev, "test_setpoint"), -3.25);
    assert_eq!(within("a write", w).await, Ok(()));
    assert_eq!(sim.read_holding(55, 1), Ok(vec![0xFEBB]));
    // 0x00012345 low word first, by FC16
    let w = driver.write(&polled, point(dev, "test_counter"), f64::from(0x0001_2345));
    assert_eq!(within("a write", w).await, Ok(()));
    assert_eq!(sim.read_holding(56, 2), Ok(vec![0x2345, 0x0001]));
    // Register 60 is outside the card: exception 02, reported, nothing changed
    let w = driver.write(&polled, point(dev, "beyond_the_card"), 1.0);
    let refused = within("a refused write", w).await;
    assert!(
        matches!(&refused, Err(WriteError::Refused(m)) if m.contains("0x02")),
        "{refused:?}"
    );
    // The profile's own points are not writable: refused before sending
    let w = driver.write(&polled, point(dev, "outdoor_temp"), 1.0);
    assert_eq!(
        within("a refused write", w).await,
        Err(WriteError::NotWritable("outdoor_temp".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_the_eh203_simulator_over_tcp() {
    let sim = Eh203Sim::new(SimOptions::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _serving = sim.serve_tcp(listener);
    let bus = BusConfig {
        name: "field".into(),
        transport: Transport::Tcp {
            address: addr.to_string(),
        },
        timeout: Duration::from_secs(2),
        max_gap: 8,
    };
    let dev = eh203_device(&format!("kind = \"tcp\"\naddress = \"{addr}\""));
    write_to_eh203(&bus, &dev, &sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_the_eh203_simulator_over_rtu() {
    let pty = socat_pair().await;
    let serial = |path: &std::path::Path| SerialSettings {
        path: path.to_string_lossy().into_owned(),
        baud: 9600,
        parity: Parity::Even,
        data_bits: DataBits::Eight,
        stop_bits: StopBits::One,
    };
    let sim = Eh203Sim::new(SimOptions::default());
    let port = tokio_serial::SerialStream::open(&port_builder(&serial(&pty.a))).unwrap();
    let _serving = sim.serve_rtu(port);
    let bus = BusConfig {
        name: "field".into(),
        transport: Transport::Rtu(serial(&pty.b)),
        timeout: Duration::from_secs(2),
        max_gap: 8,
    };
    let dev = eh203_device(&format!("kind = \"rtu\"\npath = \"{}\"", pty.b.display()));
    write_to_eh203(&bus, &dev, &sim).await;
}

/// A profile for [`BankSim`] units: a setpoint, a status word with a
/// commanded bit, a coil and a measured value.
const BANK_PROFILE: &str = r#"
[[profile]]
id = "bank"

[[profile.point]]
name = "setpoint"
function = "holding"
address = 10
data_type = "i16"
scale = 0.1
writable = true

[[profile.point]]
name = "command_bit_2"
function = "holding"
address = 11
data_type = "bool"
bit = 2
writable = true

[[profile.point]]
name = "pump"
function = "coil"
address = 0
data_type = "bool"
writable = true

[[profile.point]]
name = "measured"
function = "input"
address = 0
data_type = "u16"
"#;

fn bank_device(key: &str, unit: u8) -> DeviceConfig {
    DeviceConfig {
        key: key.into(),
        label: None,
        bus: "field".into(),
        unit_id: unit,
        profile_id: "bank".into(),
        poll_interval: Duration::from_millis(100),
        points: parse_profile("bank.toml", BANK_PROFILE)
            .unwrap()
            .remove(0)
            .points,
    }
}

async fn bank_on_tcp(units: &[u8]) -> (BankSim, BusConfig) {
    let sim = BankSim::new();
    let dev = bank_device("x", 1);
    for &u in units {
        sim.add_unit(u, Tables::for_points(&dev.points));
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _serving = sim.serve_tcp(listener);
    let bus = BusConfig {
        name: "field".into(),
        transport: Transport::Tcp {
            address: addr.to_string(),
        },
        timeout: Duration::from_millis(300),
        max_gap: 8,
    };
    (sim, bus)
}

fn writes_logged(sim: &BankSim, unit: u8) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.unit == unit && matches!(r.function, 5 | 6 | 15 | 16))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_stores_another_value_is_a_mismatch_not_a_success() {
    let (sim, bus) = bank_on_tcp(&[1]).await;
    // The device limits its setpoint to 5.0..=30.0 (raw 50..=300)
    sim.update(1, |t| {
        t.clamp.insert(10, (50, 300));
    });
    let cfg = bank_device("boiler", 1);
    let mut driver = ModbusDriver::new(ModbusClient::new(&bus), bus.max_gap);
    let dev = PolledDevice::for_driver(&driver, &cfg);
    let got = within("a write", driver.write(&dev, point(&cfg, "setpoint"), 35.0)).await;
    assert_eq!(
        got,
        Err(WriteError::Mismatch {
            point: "setpoint".into(),
            wrote: 35.0,
            read_back: 30.0
        })
    );
    // Inside the range it is a success
    let got = within("a write", driver.write(&dev, point(&cfg, "setpoint"), 21.5)).await;
    assert_eq!(got, Ok(()));
    assert_eq!(sim.tables(1).unwrap().holding[&10], 215);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_errors_are_retried_a_bounded_number_of_times_and_exceptions_never() {
    let (sim, bus) = bank_on_tcp(&[1]).await;
    // Unit 9 is not on the line: every attempt times out.
    let mut driver = ModbusDriver::new(ModbusClient::new(&bus), bus.max_gap);
    let absent = PolledDevice::for_driver(&driver, &bank_device("absent", 9));
    let cfg = bank_device("boiler", 1);
    let got = within(
        "a write that times out",
        driver.write(&absent, point(&cfg, "setpoint"), 20.0),
    )
    .await;
    assert!(
        matches!(&got, Err(WriteError::Transport(m)) if m.contains("3 attempts")),
        "{got:?}"
    );
    assert_eq!(writes_logged(&sim, 9), WRITE_ATTEMPTS as usize);

    // Register 10 refuses writes: exception 02, sent once, no read-back.
    sim.update(1, |t| {
        t.read_only.insert(10);
    });
    let present = PolledDevice::for_driver(&driver, &cfg);
    let before = sim.requests().len();
    let got = within(
        "a refused write",
        driver.write(&present, point(&cfg, "setpoint"), 20.0),
    )
    .await;
    assert!(
        matches!(&got, Err(WriteError::Refused(m)) if m.contains("0x02")),
        "{got:?}"
    );
    assert_eq!(
        sim.requests()[before..],
        [Logged {
            unit: 1,
            function: 6,
            addr: 10,
            count: 1
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_bit_is_written_by_read_modify_write_and_a_coil_by_fc05() {
    let (sim, bus) = bank_on_tcp(&[1]).await;
    sim.update(1, |t| {
        t.holding.insert(11, 0b1001_0000);
    });
    let cfg = bank_device("boiler", 1);
    let mut driver = ModbusDriver::new(ModbusClient::new(&bus), bus.max_gap);
    let dev = PolledDevice::for_driver(&driver, &cfg);
    let got = within(
        "a bit write",
        driver.write(&dev, point(&cfg, "command_bit_2"), 1.0),
    )
    .await;
    assert_eq!(got, Ok(()));
    assert_eq!(
        sim.tables(1).unwrap().holding[&11],
        0b1001_0100,
        "other bits kept"
    );
    let got = within("a coil write", driver.write(&dev, point(&cfg, "pump"), 1.0)).await;
    assert_eq!(got, Ok(()));
    assert!(sim.tables(1).unwrap().coils[&0]);
    let fcs: Vec<u8> = sim.requests().iter().map(|r| r.function).collect();
    // read 11, write 11 (FC06), read back; FC05, read back (FC01)
    assert_eq!(fcs, [3, 6, 3, 5, 1]);
    // input registers cannot be written whatever a caller asks
    assert_eq!(
        driver.write(&dev, point(&cfg, "measured"), 1.0).await,
        Err(WriteError::NotWritable("measured".into()))
    );
    assert_eq!(sim.requests().len(), 5, "nothing sent for the refusal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_on_a_busy_bus_is_served_before_the_polls_that_were_due() {
    // Three devices on one line, every one due at once, polled back to back.
    let (sim, bus) = bank_on_tcp(&[1, 2, 3]).await;
    let devices = vec![
        bank_device("boiler_1", 1),
        bank_device("boiler_2", 2),
        bank_device("boiler_3", 3),
    ];
    // Keep the first poll in flight until the command is queued.
    sim.hold_replies(true);
    let (handle, commands) = BusHandle::new(&bus.name);
    let (tx, mut rx) = mpsc::channel(256);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_bus(
        bus.name.clone(),
        ModbusDriver::new(BusClient::new(&bus), bus.max_gap),
        devices,
        tx,
        commands,
        cancel.clone(),
        Arc::new(Metrics::default()),
    ));
    within("the first poll to reach the line", async {
        while sim.requests().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let (reply, outcome) = oneshot::channel();
    handle
        .submit(WriteCommand {
            device: "boiler_3".into(),
            point: "setpoint".into(),
            value: 21.5,
            reply,
        })
        .await
        .unwrap();
    // Boilers 2 and 3 have been due since the start; now let the line go.
    sim.hold_replies(false);
    assert_eq!(
        within("the write's outcome", outcome).await.unwrap(),
        Ok(())
    );
    within("the polls after the write", async {
        while sim.requests().len() < 8 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let log: Vec<(u8, u8)> = sim
        .requests()
        .iter()
        .map(|r| (r.unit, r.function))
        .collect();
    assert_eq!(
        log[..8],
        [
            // boiler 1's poll (holding, input, coil), in flight when the
            // command came: finished, not split
            (1, 3),
            (1, 4),
            (1, 1),
            // the command: FC06 to boiler 3, and its read-back
            (3, 6),
            (3, 3),
            // only then the polls that were due all along
            (2, 3),
            (2, 4),
            (2, 1),
        ],
        "{log:?}"
    );
    assert_eq!(sim.tables(3).unwrap().holding[&10], 215);
    // The polls carry on and see the new value.
    let seen = within("boiler 3's setpoint in a reading", async {
        loop {
            if let Some(PollEvent::Readings(rs)) = rx.recv().await
                && let Some(r) = rs
                    .iter()
                    .find(|r| r.device == "boiler_3" && r.point == "setpoint")
            {
                return r.value;
            }
        }
    })
    .await;
    assert_eq!(seen, 21.5);
    // Unknown points and non-writable ones are refused without a request.
    let before = sim
        .requests()
        .iter()
        .filter(|r| matches!(r.function, 5 | 6 | 15 | 16))
        .count();
    assert!(matches!(
        handle.write("boiler_3", "nonexistent", 1.0).await,
        Err(WriteError::UnknownPoint { .. })
    ));
    assert!(matches!(
        handle.write("boiler_9", "setpoint", 1.0).await,
        Err(WriteError::UnknownPoint { .. })
    ));
    assert_eq!(
        handle.write("boiler_3", "measured", 1.0).await,
        Err(WriteError::NotWritable("measured".into()))
    );
    let after = sim
        .requests()
        .iter()
        .filter(|r| matches!(r.function, 5 | 6 | 15 | 16))
        .count();
    assert_eq!(before, after);
    cancel.cancel();
    task.await.unwrap();
    assert_eq!(
        handle.write("boiler_3", "setpoint", 1.0).await,
        Err(WriteError::BusStopped("field".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_routes_writes_to_the_devices_bus() {
    let sim = Eh203Sim::new(SimOptions::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _serving = sim.serve_tcp(listener);
    let server = FakeServer::start().await;
    let toml = format!(
        "{}{EH203_WRITABLE}",
        agent_toml(
            &server.url,
            &format!("kind = \"tcp\"\naddress = \"{addr}\""),
            200
        )
    );
    let (stop, handle, writer) = spawn_agent_with_writer(&toml);
    assert_eq!(
        within(
            "a write through the agent",
            writer.write("heatpump", "test_setpoint", 22.25)
        )
        .await,
        Ok(())
    );
    assert_eq!(sim.read_holding(55, 1), Ok(vec![2225]));
    assert!(matches!(
        writer.write("garage", "test_setpoint", 1.0).await,
        Err(WriteError::UnknownPoint { .. })
    ));
    assert_eq!(
        writer.write("heatpump", "outdoor_temp", 1.0).await,
        Err(WriteError::NotWritable("outdoor_temp".into()))
    );
    stop.cancel();
    within("the agent to stop", handle).await.unwrap().unwrap();
    assert!(matches!(
        writer.write("heatpump", "test_setpoint", 1.0).await,
        Err(WriteError::BusStopped(_))
    ));
}
