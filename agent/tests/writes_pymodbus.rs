//! Writes against an independent Modbus implementation: the agent's
//! [`ModbusDriver`] writes points of a profile to unit 2 of the pymodbus
//! peer (`tests/peers/pymodbus_server.py --trace`), over Modbus TCP and over
//! RTU through a socat pty pair. The peer prints every request it receives,
//! so the tests see which function code went out and how often (FC06 vs
//! FC16 as the profile says, no retry after an exception, nothing at all for
//! a point that is not writable); the registers are then read raw, so word
//! order and sign are checked on the peer's side, not through our decoder.
//!
//! Python comes from `HOMECONTROL_PYTHON` (default `<workspace>/.venv/bin/python`).
//! When it, pymodbus or socat is missing these tests fail saying so; they never skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use agent::{
    config::{BusConfig, DataBits, DeviceConfig, Parity, SerialSettings, StopBits, Transport},
    devices::{DeviceClient as _, ModbusClient},
    poller::{BusDriver as _, ModbusDriver, PolledDevice, WriteError},
    registers::{Point, parse_profile},
};
use common::{Peer, socat_pair, start_pymodbus_peer, within};

/// Unit 2 of the peer: coils 0..15, holding 100..119 writable, 120..121
/// read-only, input registers 0..9.
const UNIT: u8 = 2;
const FC_READ_COILS: u8 = 1;
const FC_READ_HOLDING: u8 = 3;
const FC_READ_INPUT: u8 = 4;
const FC_WRITE_COIL: u8 = 5;
const FC_WRITE_REGISTER: u8 = 6;
const FC_WRITE_COILS: u8 = 15;
const FC_WRITE_REGISTERS: u8 = 16;

const PROFILE: &str = r#"
[[profile]]
id = "pymodbus_unit_2"

[[profile.point]]
name = "setpoint"              # FC06 by default
function = "holding"
address = 100
data_type = "i16"
scale = 0.1
writable = true

[[profile.point]]
name = "setpoint_fc16"         # a device that only takes FC16
function = "holding"
address = 101
data_type = "u16"
writable = true
write_function = "multiple"

[[profile.point]]
name = "counter_high_first"
function = "holding"
address = 102
data_type = "i32"
writable = true

[[profile.point]]
name = "counter_low_first"
function = "holding"
address = 104
data_type = "i32"
word_order = "low_first"
writable = true

[[profile.point]]
name = "flow"
function = "holding"
address = 106
data_type = "f32"
word_order = "low_first"
writable = true

[[profile.point]]
name = "mode_bit_2"            # read-modify-write of register 108
function = "holding"
address = 108
data_type = "bool"
bit = 2
writable = true

[[profile.point]]
name = "relay"                 # FC05
function = "coil"
address = 3
data_type = "bool"
writable = true

[[profile.point]]
name = "relay_fc15"            # FC15 with one coil
function = "coil"
address = 4
data_type = "bool"
writable = true
write_function = "multiple"

[[profile.point]]
name = "read_only_register"    # the profile is wrong: the device refuses writes
function = "holding"
address = 120
data_type = "u16"
writable = true

[[profile.point]]
name = "unmapped_register"     # the device has no register 99
function = "holding"
address = 99
data_type = "u16"
writable = true

[[profile.point]]
name = "measured"              # not writable: nothing may be sent
function = "holding"
address = 110
data_type = "u16"
"#;

fn device() -> DeviceConfig {
    let points = parse_profile("pymodbus_unit_2.toml", PROFILE)
        .unwrap()
        .remove(0)
        .points;
    DeviceConfig {
        key: "plc".into(),
        label: None,
        bus: "field".into(),
        unit_id: UNIT,
        profile_id: "pymodbus_unit_2".into(),
        poll_interval: Duration::from_secs(1),
        points,
    }
}

fn point<'a>(dev: &'a DeviceConfig, key: &str) -> &'a Point {
    dev.points.iter().find(|p| p.key == key).unwrap()
}

/// Write every kind of point through `driver`, checking what the peer
/// received (`peer` traces) after each. Returns with the peer's state set up
/// for [`check_registers`].
async fn write_every_kind(bus: &BusConfig, peer: &mut Peer) {
    let cfg = device();
    let mut driver = ModbusDriver::new(ModbusClient::new(bus), bus.max_gap);
    let dev = PolledDevice::for_driver(&driver, &cfg);
    let mut write = async |key: &str, value: f64| {
        within("a write", driver.write(&dev, point(&cfg, key), value)).await
    };

    // FC06, then the read-back (FC03)
    assert_eq!(write("setpoint", -12.3).await, Ok(()));
    assert_eq!(peer.next_rx().await, (UNIT, FC_WRITE_REGISTER));
    assert_eq!(peer.next_rx().await, (UNIT, FC_READ_HOLDING));
    // FC16 as the profile says, though one register would fit FC06
    assert_eq!(write("setpoint_fc16", 4242.0).await, Ok(()));
    assert_eq!(peer.next_rx().await, (UNIT, FC_WRITE_REGISTERS));
    assert_eq!(peer.next_rx().await, (UNIT, FC_READ_HOLDING));
    // 32-bit values: FC16, in both word orders, negative
    for key in ["counter_high_first", "counter_low_first"] {
        assert_eq!(write(key, -123_456.0).await, Ok(()));
        assert_eq!(peer.next_rx().await, (UNIT, FC_WRITE_REGISTERS));
        assert_eq!(peer.next_rx().await, (UNIT, FC_READ_HOLDING));
    }
    assert_eq!(write("flow", -2.5).await, Ok(()));
    assert_eq!(peer.next_rx().await, (UNIT, FC_WRITE_REGISTERS));
    assert_eq!(peer.next_rx().await, (UNIT, FC_READ_HOLDING));
    // A register bit: read, write the merged word (FC06), read back
    assert_eq!(write("mode_bit_2", 1.0).await, Ok(()));
    for fc in [FC_READ_HOLDING, FC_WRITE_REGISTER, FC_READ_HOLDING] {
        assert_eq!(peer.next_rx().await, (UNIT, fc));
    }
    // Coils: FC05 and FC15, each read back with FC01
    assert_eq!(write("relay", 1.0).await, Ok(()));
    assert_eq!(peer.next_rx().await, (UNIT, FC_WRITE_COIL));
    assert_eq!(peer.next_rx().await, (UNIT, FC_READ_COILS));
    assert_eq!(write("relay_fc15", 1.0).await, Ok(()));
    assert_eq!(peer.next_rx().await, (UNIT, FC_WRITE_COILS));
    assert_eq!(peer.next_rx().await, (UNIT, FC_READ_COILS));

    // The device refuses: an exception, reported, sent once (never retried),
    // and no read-back.
    for key in ["read_only_register", "unmapped_register"] {
        let refused = write(key, 7.0).await;
        assert!(
            matches!(&refused, Err(WriteError::Refused(m)) if m.contains("0x02")),
            "{key}: {refused:?}"
        );
        assert_eq!(peer.next_rx().await, (UNIT, FC_WRITE_REGISTER));
    }
    // Not writable in the profile, or out of the type's range: nothing is sent.
    assert_eq!(
        write("measured", 1.0).await,
        Err(WriteError::NotWritable("measured".into()))
    );
    assert!(matches!(
        write("setpoint", 4000.0).await,
        Err(WriteError::Encode { .. })
    ));
    // The next request the peer sees is this read (FC04), so the refusals
    // above sent nothing more than traced.
    let mut client = ModbusClient::new(bus);
    drop(driver);
    assert_eq!(
        within("a read", client.read_input_registers(UNIT, 0, 3)).await,
        Ok(Ok(vec![0, 1, 2]))
    );
    assert_eq!(peer.next_rx().await, (UNIT, FC_READ_INPUT));
}

/// Read the peer's registers raw and compare with the words the writes must
/// have produced, computed here by hand.
async fn check_registers(client: &mut ModbusClient) {
    let regs = within(
        "raw holding registers",
        client.read_holding_registers(UNIT, 100, 9),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        regs,
        vec![
            0xFF85, // 100: -12.3 in tenths = -123
            4242,   // 101
            0xFFFE, 0x1DC0, // 102..103: -123456 = 0xFFFE1DC0, high word first
            0x1DC0, 0xFFFE, // 104..105: the same, low word first
            0x0000, 0xC020, // 106..107: -2.5f32 = 0xC0200000, low word first
            0b100,  // 108: bit 2 set, the other bits as they were (0)
        ]
    );
    let coils = within("raw coils", client.read_coils(UNIT, 0, 6))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(coils, [false, false, false, true, true, false]);
    // the read-only registers kept their values
    let ro = client.read_holding_registers(UNIT, 120, 2).await;
    assert_eq!(ro, Ok(Ok(vec![0x1111, 0x2222])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_function_reaches_pymodbus_over_tcp() {
    let mut peer = start_pymodbus_peer(&["tcp", "--trace"]).await;
    let port: u16 = peer
        .ready
        .strip_prefix("tcp ")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let bus = BusConfig {
        name: "field".into(),
        transport: Transport::Tcp {
            address: format!("127.0.0.1:{port}"),
        },
        timeout: Duration::from_secs(2),
        max_gap: 8,
    };
    write_every_kind(&bus, &mut peer).await;
    check_registers(&mut ModbusClient::new(&bus)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_function_reaches_pymodbus_over_rtu_and_a_broadcast_is_applied_unanswered() {
    let pty = socat_pair().await;
    let mut peer = start_pymodbus_peer(&["rtu", &pty.a.to_string_lossy(), "--trace"]).await;
    // 8N1: pymodbus cannot set parity on a pty (stack-notes pitfall 12).
    let bus = BusConfig {
        name: "field".into(),
        transport: Transport::Rtu(SerialSettings {
            path: pty.b.to_string_lossy().into_owned(),
            baud: 9600,
            parity: Parity::None,
            data_bits: DataBits::Eight,
            stop_bits: StopBits::One,
        }),
        timeout: Duration::from_secs(2),
        max_gap: 8,
    };
    write_every_kind(&bus, &mut peer).await;
    let mut client = ModbusClient::new(&bus);
    check_registers(&mut client).await;
    assert_eq!(peer.next_rx().await, (UNIT, FC_READ_HOLDING));
    assert_eq!(peer.next_rx().await, (UNIT, FC_READ_COILS));
    assert_eq!(peer.next_rx().await, (UNIT, FC_READ_HOLDING));

    // Broadcast: FC06 to unit 0, register 111 = 0x0BCD. pymodbus executes it
    // on every unit and answers nothing; the client waits for nothing (its
    // timeout is 2 s, this limit 20 s, and a reply never comes).
    within("a broadcast", client.write_single_register(0, 111, 0x0BCD))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(peer.next_rx().await, (0, FC_WRITE_REGISTER));
    let after = within(
        "reading the broadcast back",
        client.read_holding_registers(UNIT, 111, 1),
    )
    .await;
    assert_eq!(after, Ok(Ok(vec![0x0BCD])), "unit 2 applied the broadcast");
    // The read was the next thing on the line: no reply to the broadcast was
    // awaited, nor any retry sent.
    assert_eq!(peer.next_rx().await, (UNIT, FC_READ_HOLDING));
    // FC16 broadcast too
    within(
        "an FC16 broadcast",
        client.write_multiple_registers(0, 112, &[1, 2]),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(peer.next_rx().await, (0, FC_WRITE_REGISTERS));
    let after = within(
        "reading it back",
        client.read_holding_registers(UNIT, 112, 2),
    )
    .await;
    assert_eq!(after, Ok(Ok(vec![1, 2])));
}
