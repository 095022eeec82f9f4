//! An independent Modbus implementation as the peer: the agent reads a
//! pymodbus 3.16 server (`tests/peers/pymodbus_server.py`) over Modbus TCP and
//! over RTU through a socat pty pair, and must decode its fixed values exactly.
//!
//! Python comes from `HOMECONTROL_PYTHON` (default `<workspace>/.venv/bin/python`,
//! created with `pip install pymodbus pyserial`). When it, pymodbus or socat is
//! missing these tests fail with a message saying so; they never skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeMap, time::Duration};

use agent::{
    config::{BusConfig, Transport},
    devices::{DeviceClient as _, Exception, ModbusClient},
};
use common::{FakeServer, agent_toml, socat_pair, spawn_agent, start_pymodbus};
use protocol::AgentToServer;

/// The values the peer serves, decoded as the EH-203 profile says.
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

async fn expect_exact_values(server: &mut FakeServer) {
    let mut latest: BTreeMap<String, f64> = BTreeMap::new();
    while latest.len() < EXPECTED.len() {
        let rs = server
            .next_matching("readings from the pymodbus peer", |s| match &s.msg {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reads_a_pymodbus_server_over_tcp() {
    let (_peer, ready) = start_pymodbus(&["tcp"]).await;
    let port: u16 = ready.strip_prefix("tcp ").unwrap().trim().parse().unwrap();
    let addr = format!("127.0.0.1:{port}");

    // The client on its own: values, and an exception as the inner Result.
    let bus = BusConfig {
        name: "lan".into(),
        transport: Transport::Tcp {
            address: addr.clone(),
        },
        timeout: Duration::from_secs(2),
        max_gap: 8,
    };
    let mut client = ModbusClient::new(&bus);
    let words = client
        .read_holding_registers(1, 18, 3)
        .await
        .expect("transport ok")
        .expect("no exception");
    assert_eq!(words, vec![(-512i16) as u16, 0, 3550]);
    let outside = client
        .read_holding_registers(1, 0, 5)
        .await
        .expect("an exception is not a transport error");
    assert!(matches!(outside, Err(Exception(_))), "{outside:?}");

    let mut server = FakeServer::start().await;
    let (stop, handle) = spawn_agent(&agent_toml(
        &server.url,
        &format!("kind = \"tcp\"\naddress = \"{addr}\""),
        200,
    ));
    expect_exact_values(&mut server).await;
    stop.cancel();
    common::within("the agent to stop", handle)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reads_a_pymodbus_server_over_rtu_through_socat() {
    let pty = socat_pair().await;
    let (_peer, _ready) = start_pymodbus(&["rtu", &pty.a.to_string_lossy()]).await;
    let mut server = FakeServer::start().await;
    // 8N1: pymodbus cannot set parity on a pty (stack-notes pitfall 12).
    let bus = format!(
        "kind = \"rtu\"\npath = \"{}\"\nbaud = 9600\nparity = \"none\"\ndata_bits = 8\nstop_bits = 1",
        pty.b.display()
    );
    let (stop, handle) = spawn_agent(&agent_toml(&server.url, &bus, 200));
    expect_exact_values(&mut server).await;
    stop.cancel();
    common::within("the agent to stop", handle)
        .await
        .unwrap()
        .unwrap();
}
