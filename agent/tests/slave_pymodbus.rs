//! Slave mode against an independent master: pymodbus 3.16's serial client
//! (`tests/peers/pymodbus_master.py`) plays the PLC on one end of a socat pty
//! pair, the whole agent (with a `modbus_slave` bus and the built-in
//! `plc_cottage_exchange` area at unit 10) answers on the other, and a fake
//! server receives what the agent reports.
//!
//! The line is 8N1: pymodbus cannot set parity or 7 data bits on a pty
//! (stack-notes pitfall 12); the 8E1/7E1 defaults are covered by config tests.
//! Python comes from `HOMECONTROL_PYTHON` (default `<workspace>/.venv/bin/python`);
//! when it, pymodbus or socat is missing these tests fail saying so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use agent::devices::slave::{Bank, Delivered};
use common::{FakeServer, PyMaster, socat_pair, spawn_agent_then, within};
use protocol::AgentToServer;
use serde_json::{Value, json};

const UNIT: u8 = 10;
const DEVICE: &str = "cottage_plc";

fn agent_toml(server_url: &str, tty: &std::path::Path, framing: &str) -> String {
    format!(
        r#"[server]
url = "{server_url}"
agent_id = "{id}"
secret = "{secret}"

[[bus]]
name = "plc"
kind = "modbus_slave"
framing = "{framing}"
path = "{tty}"
baud = 9600
parity = "none"
data_bits = 8
stop_bits = 1

[[device]]
key = "{DEVICE}"
bus = "plc"
unit_id = {UNIT}
profile = "plc_cottage_exchange"
poll_interval_ms = 1000
"#,
        id = common::AGENT_ID,
        secret = common::SECRET,
        tty = tty.display()
    )
}

/// CRC-16/MODBUS written here, independently of the agent's, for raw frames.
fn with_crc(bytes: &[u8]) -> Vec<u8> {
    let mut crc: u16 = 0xFFFF;
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    let mut v = bytes.to_vec();
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read(table: &str, addr: u16, count: u16) -> Value {
    json!({"op": "read", "table": table, "addr": addr, "count": count, "unit": UNIT})
}

/// Wait until the fake server has seen every `(point, value)` as the latest value.
async fn expect_readings(server: &mut FakeServer, wants: &[(&str, f64)]) {
    let mut latest: BTreeMap<String, f64> = BTreeMap::new();
    while !wants.iter().all(|(k, v)| latest.get(*k) == Some(v)) {
        let rs = server
            .next_matching("readings from the slave bus", |s| match &s.msg {
                AgentToServer::Readings(b) => Some(b.readings.clone()),
                _ => None,
            })
            .await;
        for r in rs {
            assert_eq!(r.device, DEVICE);
            latest.insert(r.point, r.value);
        }
    }
}

async fn expect_status(server: &mut FakeServer, online: bool) {
    server
        .next_matching("the PLC's device status", |s| match &s.msg {
            AgentToServer::DeviceStatus(st) if st.device == DEVICE && st.online == online => {
                Some(())
            }
            _ => None,
        })
        .await;
}

/// Start the agent and the master on a fresh line; the first request is
/// repeated until the agent's port is open and it answers.
async fn setup(framing: &str) -> (FakeServer, PyMaster, Bank, common::PtyPair, Stop) {
    let pty = socat_pair().await;
    let server = FakeServer::start().await;
    let (stop, handle, bank) = spawn_agent_then(&agent_toml(&server.url, &pty.b, framing), |a| {
        a.slave_bank(DEVICE).expect("a slave bank")
    });
    let mut master = PyMaster::start(framing, &pty.a).await;
    within("the agent to answer its first request", async {
        while master
            .call(read("holding", 0, 1))
            .await
            .get("registers")
            .is_none()
        {}
    })
    .await;
    (server, master, bank, pty, Stop(stop, handle))
}

/// Stops the agent when the test ends, however it ends.
struct Stop(
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.cancel();
        self.1.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pymodbus_master_reads_and_writes_every_table_over_rtu() {
    let (mut server, mut m, bank, _pty, _stop) = setup("rtu").await;
    expect_status(&mut server, true).await;

    // Nothing learned yet: registers read 0xFFFF, bits off, and no value for users.
    assert_eq!(
        m.call(read("holding", 0, 6)).await,
        json!({"registers": vec![65535u16; 6]})
    );
    assert_eq!(
        m.call(read("holding", 10, 2)).await,
        json!({"registers": vec![65535u16; 2]})
    );
    assert_eq!(
        m.call(read("input", 0, 1)).await,
        json!({"registers": [65535]})
    );
    assert_eq!(
        m.call(read("coil", 0, 4)).await,
        json!({"bits": vec![false; 4]})
    );
    assert_eq!(
        m.call(read("discrete", 0, 1)).await,
        json!({"bits": [false]})
    );
    assert_eq!(bank.value("indoor_temp"), Ok(None));

    // The master's writes (FC10, FC06, FC0F, FC05) become readings.
    let ok = json!({"ok": true});
    let minus_5_2 = (-52i16) as u16;
    let w = json!({"op": "write_registers", "addr": 0, "values": [215, minus_5_2, 480, 0, 1234], "unit": UNIT});
    assert_eq!(m.call(w).await, ok);
    let w = json!({"op": "write_register", "addr": 5, "value": 150, "unit": UNIT});
    assert_eq!(m.call(w).await, ok);
    let w =
        json!({"op": "write_coils", "addr": 0, "values": [true, false, true, false], "unit": UNIT});
    assert_eq!(m.call(w).await, ok);
    let w = json!({"op": "write_coil", "addr": 3, "value": true, "unit": UNIT});
    assert_eq!(m.call(w).await, ok);
    expect_readings(
        &mut server,
        &[
            ("indoor_temp", 21.5),
            ("outdoor_temp", -5.2),
            ("hot_water_temp", 48.0),
            ("energy_total", 123.4),
            ("room_setpoint_applied", 15.0),
            ("door_open", 1.0),
            ("burglar_alarm", 0.0),
            ("gsm_ok", 1.0),
            ("heating_on", 1.0),
        ],
    )
    .await;
    // Users read the bank at once; the master reads its own writes back.
    assert_eq!(bank.value("indoor_temp").unwrap().unwrap().value, 21.5);
    assert_eq!(
        m.call(read("holding", 0, 6)).await,
        json!({"registers": [215, minus_5_2, 480, 0, 1234, 150]})
    );

    // An offered value is done only once the master has read it.
    let mut mode = bank.offer("heating_mode", 2.0).unwrap();
    assert_eq!(mode.try_outcome(), None);
    assert!(bank.value("heating_mode").unwrap().unwrap().pending);
    assert_eq!(
        m.call(read("holding", 11, 1)).await,
        json!({"registers": [2]})
    );
    let done: Delivered = within("the heating_mode delivery", mode).await.unwrap();
    assert!(!done.echoed);

    // With an echo: read is not enough, the PLC must write the value back.
    let mut setpoint = bank.offer("room_setpoint", 21.0).unwrap();
    assert_eq!(
        m.call(read("holding", 10, 2)).await,
        json!({"registers": [210, 2]})
    );
    assert_eq!(setpoint.try_outcome(), None, "read but not echoed");
    let echo = json!({"op": "write_register", "addr": 5, "value": 210, "unit": UNIT});
    assert_eq!(m.call(echo).await, ok);
    assert!(
        within("the setpoint delivery", setpoint)
            .await
            .unwrap()
            .echoed
    );
    expect_readings(
        &mut server,
        &[("room_setpoint", 21.0), ("room_setpoint_applied", 21.0)],
    )
    .await;

    // Coils, input registers and discrete inputs offered to the PLC.
    let car = bank.offer("car_heater_request", 1.0).unwrap();
    bank.offer("electricity_price", 12.34).unwrap();
    bank.offer("server_link_up", 1.0).unwrap();
    assert_eq!(
        m.call(read("coil", 10, 2)).await,
        json!({"bits": [false, true]})
    );
    within("the car heater delivery", car).await.unwrap();
    assert_eq!(
        m.call(read("input", 0, 1)).await,
        json!({"registers": [1234]})
    );
    assert_eq!(
        m.call(read("discrete", 0, 1)).await,
        json!({"bits": [true]})
    );

    // Unmapped addresses and writes into what the agent offers: exception 02.
    assert_eq!(m.call(read("holding", 6, 1)).await, json!({"exception": 2}));
    assert_eq!(m.call(read("coil", 4, 1)).await, json!({"exception": 2}));
    let w = json!({"op": "write_register", "addr": 10, "value": 5, "unit": UNIT});
    assert_eq!(m.call(w).await, json!({"exception": 2}));

    // Another unit id: pymodbus gets no answer, and nothing changes.
    let other = json!({"op": "read", "table": "holding", "addr": 0, "count": 1, "unit": 11});
    assert!(m.call(other).await.get("no_answer").is_some());
    let w = json!({"op": "write_register", "addr": 0, "value": 999, "unit": 11});
    assert!(m.call(w).await.get("no_answer").is_some());

    // Raw frames: a broadcast write, a damaged CRC, a bad quantity, an
    // unsupported function.
    let raw = |frame: Vec<u8>| json!({"op": "raw", "hex": hex(&frame), "wait": 0.5});
    let broadcast = with_crc(&[0x00, 0x06, 0x00, 0x00, 0x03, 0xE7]); // reg 0 = 999, to all
    assert_eq!(
        m.call(raw(broadcast)).await,
        json!({"rx": ""}),
        "no reply to a broadcast"
    );
    let mut damaged = with_crc(&[UNIT, 0x06, 0x00, 0x00, 0x03, 0xE7]);
    *damaged.last_mut().unwrap() ^= 0x01;
    assert_eq!(
        m.call(raw(damaged)).await,
        json!({"rx": ""}),
        "silence on a bad CRC"
    );
    assert_eq!(
        bank.value("indoor_temp").unwrap().unwrap().value,
        21.5,
        "nothing changed"
    );
    assert_eq!(
        m.call(read("holding", 0, 1)).await,
        json!({"registers": [215]})
    );
    // FC03 for 126 registers: ILLEGAL DATA VALUE (Application Protocol §6.3).
    let too_many = with_crc(&[UNIT, 0x03, 0x00, 0x00, 0x00, 0x7E]);
    assert_eq!(
        m.call(raw(too_many)).await,
        json!({"rx": hex(&with_crc(&[UNIT, 0x83, 0x03]))})
    );
    // FC11 report server id: ILLEGAL FUNCTION.
    assert_eq!(
        m.call(raw(with_crc(&[UNIT, 0x11]))).await,
        json!({"rx": hex(&with_crc(&[UNIT, 0x91, 0x01]))})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pymodbus_master_talks_to_the_agent_in_modbus_ascii() {
    let (mut server, mut m, bank, _pty, _stop) = setup("ascii").await;
    expect_status(&mut server, true).await;
    assert_eq!(
        m.call(read("holding", 10, 2)).await,
        json!({"registers": vec![65535u16; 2]})
    );
    let w = json!({"op": "write_registers", "addr": 0, "values": [199, 10], "unit": UNIT});
    assert_eq!(m.call(w).await, json!({"ok": true}));
    expect_readings(&mut server, &[("indoor_temp", 19.9), ("outdoor_temp", 1.0)]).await;
    let mut d = bank.offer("heating_mode", 1.0).unwrap();
    assert_eq!(d.try_outcome(), None);
    assert_eq!(
        m.call(read("holding", 11, 1)).await,
        json!({"registers": [1]})
    );
    within("the delivery", d).await.unwrap();
    assert_eq!(m.call(read("holding", 6, 1)).await, json!({"exception": 2}));
    let other = json!({"op": "read", "table": "holding", "addr": 0, "count": 1, "unit": 11});
    assert!(m.call(other).await.get("no_answer").is_some());
    // ':' 0A 03 0000 0001 LRC CR LF with a wrong LRC: silence.
    let bad_lrc = hex(b":0A0300000001F1\r\n");
    let reply = m
        .call(json!({"op": "raw", "hex": bad_lrc, "wait": 0.5}))
        .await;
    assert_eq!(reply, json!({"rx": ""}));
    let good_lrc = hex(b":0A0300000001F2\r\n");
    let reply = m
        .call(json!({"op": "raw", "hex": good_lrc, "wait": 0.5}))
        .await;
    // 0A 03 02 00C7 (19.9 °C) LRC = -(0A+03+02+00+C7) = 0x2A
    assert_eq!(reply, json!({"rx": hex(b":0A030200C72A\r\n")}));
}
