//! `agent discover` on socat pty pairs: the real binary finds a simulated
//! EH-203 on Modbus RTU and prints a snippet the agent accepts as config; on a
//! bus that an independent master (pymodbus) is already running it reports the
//! master and sends nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{path::Path, process::Stdio, time::Duration};

use agent::{
    config::AgentConfig,
    sim::{Eh203Sim, OumanSim, SimOptions},
};
use common::{WAIT, python, socat_pair};
use tokio::process::Command;

async fn discover(args: &[&str]) -> (String, String) {
    let out = tokio::time::timeout(
        WAIT * 3,
        Command::new(env!("CARGO_BIN_EXE_agent"))
            .arg("discover")
            .args(args)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("discover finishes")
    .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "discover failed: {stderr}");
    (stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_finds_a_modbus_rtu_device_and_its_snippet_is_valid_config() {
    let pty = socat_pair().await;
    let sim = Eh203Sim::new(SimOptions {
        unit_id: 3,
        tick: Duration::from_millis(200),
        ..SimOptions::default()
    });
    let port =
        tokio_serial::SerialStream::open(&tokio_serial::new(pty.a.display().to_string(), 9600))
            .unwrap();
    let _serve = sim.serve_rtu(port);

    let b = pty.b.display().to_string();
    let (snippet, progress) = discover(&[
        "--port",
        &b,
        "--listen-ms",
        "300",
        "--units",
        "1-5",
        "--baud",
        "9600",
        "--timeout-ms",
        "150",
    ])
    .await;
    assert!(
        progress.contains("listening"),
        "progress is shown: {progress}"
    );
    assert!(progress.contains("unit 3 answers"), "{progress}");
    assert!(snippet.contains("unit_id = 3"), "{snippet}");
    assert_eq!(
        snippet.matches("[[device]]").count(),
        1,
        "only unit 3 is there: {snippet}"
    );
    assert!(snippet.contains(&format!("path = \"{b}\"")), "{snippet}");

    // The snippet, under a [server] table, is a config the agent accepts.
    let config = format!(
        "[server]\nurl = \"ws://127.0.0.1:1/agent/v1/ws\"\nagent_id = \"{}\"\nsecret = \"s3cret-for-test\"\n\n{snippet}",
        common::AGENT_ID
    );
    let cfg = AgentConfig::from_toml("snippet.toml", &config, Path::new("."))
        .unwrap_or_else(|e| panic!("{e}\n{config}"));
    assert_eq!(cfg.devices[0].unit_id, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_finds_an_ouman_controller_on_its_native_protocol() {
    let pty = socat_pair().await;
    let sim = OumanSim::new(Eh203Sim::new(SimOptions::default()));
    let port =
        tokio_serial::SerialStream::open(&tokio_serial::new(pty.a.display().to_string(), 4800))
            .unwrap();
    let _serve = sim.serve_serial(port);

    let b = pty.b.display().to_string();
    let (snippet, progress) = discover(&["--port", &b, "--listen-ms", "300"]).await;
    assert!(
        progress.contains("Ouman EH-203G firmware 1.45"),
        "{progress}"
    );
    assert!(
        !progress.contains("trying Modbus RTU"),
        "an answering Ouman ends the scan: {progress}"
    );
    assert!(snippet.contains("kind = \"ouman\""), "{snippet}");
    assert!(snippet.contains("profile = \"ouman_eh203\""), "{snippet}");
    let config = format!(
        "[server]\nurl = \"ws://127.0.0.1:1/agent/v1/ws\"\nagent_id = \"{}\"\nsecret = \"s3cret-for-test\"\n\n{snippet}",
        common::AGENT_ID
    );
    AgentConfig::from_toml("snippet.toml", &config, Path::new("."))
        .unwrap_or_else(|e| panic!("{e}\n{config}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_reports_a_running_master_and_does_not_probe_its_bus() {
    let pty = socat_pair().await;
    // pymodbus as the PLC master: polls unit 7 over and over on its end.
    // (pymodbus 3.16 refuses to open a pty with parity E; the pty ignores it.)
    let master = r#"
import sys, time
from pymodbus.client import ModbusSerialClient
c = ModbusSerialClient(port=sys.argv[1], baudrate=9600, bytesize=8, parity="N", stopbits=2, timeout=0.05, retries=0)
c.connect()
print("READY", flush=True)
end = time.time() + float(sys.argv[2])
while time.time() < end:
    try:
        c.read_holding_registers(0, count=2, device_id=7)
    except Exception:
        pass
"#;
    let mut child = Command::new(python())
        .arg("-c")
        .arg(master)
        .arg(&pty.a)
        .arg("20")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("python with pymodbus (see tests/pymodbus_peer.rs)");
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line)
        .await
        .unwrap();
    assert!(
        line.starts_with("READY"),
        "pymodbus master did not start: {line}"
    );

    let b = pty.b.display().to_string();
    let (snippet, progress) = discover(&[
        "--port",
        &b,
        "--listen-ms",
        "1500",
        "--units",
        "1-3",
        "--baud",
        "9600",
    ])
    .await;
    assert!(progress.contains("a Modbus master is active"), "{progress}");
    assert!(
        !progress.contains("trying Modbus RTU"),
        "a mastered bus is not probed: {progress}"
    );
    assert!(snippet.contains("units 7"), "{snippet}");
    assert!(
        snippet.lines().all(|l| l.is_empty() || l.starts_with('#')),
        "only commented suggestions for a mastered bus: {snippet}"
    );
    assert!(snippet.contains("# kind = \"modbus_slave\""), "{snippet}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_on_a_missing_port_says_so_and_still_exits_cleanly() {
    let (snippet, progress) = discover(&[
        "--port",
        "/dev/serial/by-id/no-such-adapter",
        "--listen-ms",
        "100",
    ])
    .await;
    assert!(progress.contains("cannot open"), "{progress}");
    assert!(snippet.contains("nothing found"), "{snippet}");
}
