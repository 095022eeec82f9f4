//! Modbus ASCII against an independent implementation: pymodbus 3.16's ASCII
//! framer (`tests/peers/pymodbus_server.py ascii`) on one end of a socat pty
//! pair, the agent's [`AsciiClient`] (and the whole agent) on the other.
//!
//! The line is 8N1, not ASCII's usual 7E1: pymodbus cannot set parity or 7
//! data bits on a pty (stack-notes pitfall 12); the 7E1 defaults are covered
//! by the config and port-builder unit tests.
//!
//! Python comes from `HOMECONTROL_PYTHON` (default `<workspace>/.venv/bin/python`).
//! When it, pymodbus or socat is missing these tests fail saying so; they never skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeMap, time::Duration};

use agent::{
    config::{BusConfig, DataBits, Parity, SerialSettings, StopBits, Transport},
    devices::{AsciiClient, DeviceClient as _, Exception, TransportError},
};
use common::{FakeServer, PtyPair, agent_toml, socat_pair, spawn_agent, start_pymodbus};
use protocol::AgentToServer;
use tokio_modbus::ExceptionCode;

/// The unit serving the Application Protocol §6.1–6.4 examples.
const SPEC_UNIT: u8 = 17;

fn bits(s: &str) -> Vec<bool> {
    s.chars().map(|c| c == '1').collect()
}

fn ascii_bus(pty: &PtyPair, timeout: Duration) -> BusConfig {
    BusConfig {
        name: "ascii".into(),
        transport: Transport::Ascii(SerialSettings {
            path: pty.b.to_string_lossy().into_owned(),
            baud: 9600,
            parity: Parity::None,
            data_bits: DataBits::Eight,
            stop_bits: StopBits::One,
        }),
        timeout,
        max_gap: 8,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ascii_client_reads_exact_values_and_exceptions_from_pymodbus() {
    let pty = socat_pair().await;
    let (_peer, _ready) = start_pymodbus(&["ascii", &pty.a.to_string_lossy()]).await;
    let mut c = AsciiClient::new(&ascii_bus(&pty, Duration::from_secs(2)));

    // FC03 unit 17, 3 registers from 0x006B: 0xAE41 0x5652 0x4340 (§6.3)
    let hr = c.read_holding_registers(SPEC_UNIT, 0x6B, 3).await;
    assert_eq!(hr, Ok(Ok(vec![0xAE41, 0x5652, 0x4340])));
    // FC04 unit 17, input register 8: 0x000A (§6.4)
    let ir = c.read_input_registers(SPEC_UNIT, 0x08, 1).await;
    assert_eq!(ir, Ok(Ok(vec![0x000A])));
    // FC01 unit 17, 19 coils from 0x0013: CD 6B 05 (§6.1)
    let coils = c.read_coils(SPEC_UNIT, 0x13, 19).await;
    assert_eq!(coils, Ok(Ok(bits("1011001111010110101"))));
    // FC02 unit 17, 22 inputs from 0x00C4: AC DB 35 (§6.2)
    let di = c.read_discrete_inputs(SPEC_UNIT, 0xC4, 22).await;
    assert_eq!(di, Ok(Ok(bits("0011010111011011101011"))));
    // FC03 unit 1 (the EH-203 layout): outdoor -5.12 degC, then 0, then 35.50 degC
    let eh = c.read_holding_registers(1, 18, 3).await;
    assert_eq!(eh, Ok(Ok(vec![(-512i16) as u16, 0, 3550])));

    // An address the device does not have: exception 02, inside the Ok.
    let outside = c.read_holding_registers(SPEC_UNIT, 0x0000, 1).await;
    assert_eq!(
        outside,
        Ok(Err(Exception(ExceptionCode::IllegalDataAddress))),
        "an exception is a device answer, not a transport error"
    );

    // And the line is still in step afterwards.
    let again = c.read_input_registers(SPEC_UNIT, 0x08, 1).await;
    assert_eq!(again, Ok(Ok(vec![0x000A])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_an_absent_ascii_unit_times_out_as_a_transport_error() {
    let pty = socat_pair().await;
    let (_peer, _ready) = start_pymodbus(&["ascii", &pty.a.to_string_lossy()]).await;
    let limit = Duration::from_millis(500);
    let mut c = AsciiClient::new(&ascii_bus(&pty, limit));

    // unit 5 is not on the line: nobody answers
    let absent = c.read_holding_registers(5, 0x6B, 1).await;
    assert_eq!(absent, Err(TransportError::Timeout(limit)));
    // the next request to a present unit works on the same port
    let present = c.read_holding_registers(SPEC_UNIT, 0x6B, 1).await;
    assert_eq!(present, Ok(Ok(vec![0xAE41])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_pymodbus_and_a_broadcast_is_not_awaited() {
    let pty = socat_pair().await;
    let (_peer, _ready) = start_pymodbus(&["ascii", &pty.a.to_string_lossy()]).await;
    let mut c = AsciiClient::new(&ascii_bus(&pty, Duration::from_secs(2)));

    // FC06 unit 17, register 0x006C = 0x1234, echoed
    assert_eq!(
        c.write_single_register(SPEC_UNIT, 0x6C, 0x1234).await,
        Ok(Ok(()))
    );
    // FC10 unit 17, registers 0x006B..0x006C = 1, 2
    assert_eq!(
        c.write_multiple_registers(SPEC_UNIT, 0x6B, &[1, 2]).await,
        Ok(Ok(()))
    );
    // FC05 unit 17, coil 0x0014 ON; FC0F coils 0x0013..0x0015 = 0 0 1
    assert_eq!(c.write_single_coil(SPEC_UNIT, 0x14, true).await, Ok(Ok(())));
    assert_eq!(
        c.write_multiple_coils(SPEC_UNIT, 0x13, &[false, false, true])
            .await,
        Ok(Ok(()))
    );
    let regs = c.read_holding_registers(SPEC_UNIT, 0x6B, 3).await;
    assert_eq!(regs, Ok(Ok(vec![1, 2, 0x4340])));
    let coils = c.read_coils(SPEC_UNIT, 0x13, 3).await;
    assert_eq!(coils, Ok(Ok(bits("001"))));

    // FC06 broadcast (unit 0), register 0x006D = 7: returns without a reply
    let started = std::time::Instant::now();
    assert_eq!(c.write_single_register(0, 0x6D, 7).await, Ok(Ok(())));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a broadcast must not wait for the 2 s timeout"
    );
    let after = c.read_holding_registers(SPEC_UNIT, 0x6D, 1).await;
    assert_eq!(after, Ok(Ok(vec![7])), "unit 17 executed the broadcast");
}

/// The values unit 1 serves, decoded as the EH-203 profile says.
const EXPECTED: [(&str, f64); 10] = [
    ("outdoor_temp", -5.12),
    ("l1_supply_temp", 35.5),
    ("l2_supply_temp", 28.0),
    ("dhw_tank_top_temp", 50.0),
    ("dhw_tank_bottom_temp", 42.1),
    ("hot_gas_temp", 85.25),
    ("compressor_running", 1.0),
    ("electric_heater_on", 0.0),
    ("alarm_a", 1.0),
    ("alarm_b", 0.0),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_polls_a_pymodbus_ascii_server_on_a_kind_ascii_bus() {
    let pty = socat_pair().await;
    let (_peer, _ready) = start_pymodbus(&["ascii", &pty.a.to_string_lossy()]).await;
    let mut server = FakeServer::start().await;
    let bus = format!(
        "kind = \"ascii\"\npath = \"{}\"\nbaud = 9600\nparity = \"none\"\ndata_bits = 8\nstop_bits = 1",
        pty.b.display()
    );
    let (stop, handle) = spawn_agent(&agent_toml(&server.url, &bus, 200));
    let mut latest: BTreeMap<String, f64> = BTreeMap::new();
    while latest.len() < EXPECTED.len() {
        let rs = server
            .next_matching("readings from the pymodbus ASCII peer", |s| match &s.msg {
                AgentToServer::Readings(b) => Some(b.readings.clone()),
                _ => None,
            })
            .await;
        for r in rs {
            latest.insert(r.point, r.value);
        }
    }
    for (k, v) in EXPECTED {
        assert_eq!(latest[k], v, "{k}");
    }
    stop.cancel();
    common::within("the agent to stop", handle)
        .await
        .unwrap()
        .unwrap();
}
