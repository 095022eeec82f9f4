//! A USB RS-485 adapter unplugged and plugged back: the serial device vanishes
//! (socat exits, its pty and link disappear) and comes back under the same
//! name. The Modbus RTU poller marks the device offline, keeps retrying with
//! back-off, reopens the port by itself and the device is online again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{path::Path, process::Stdio, sync::Arc, time::Duration};

use agent::{
    config::AgentConfig,
    devices::BusClient,
    metrics::Metrics,
    poller::{BusHandle, ModbusDriver, PollEvent, run_bus},
    sim::{Eh203Sim, SimOptions},
};
use common::{AGENT_ID, WAIT};
use tokio::{
    process::{Child, Command},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

/// "Plug in" the adapter: a socat pty pair with links `a` (the device's end)
/// and `b` (ours).
async fn plug(a: &Path, b: &Path) -> Child {
    let child = Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("socat is required (apt-get install socat)");
    common::within("the pty links", async {
        while !(a.exists() && b.exists()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    child
}

async fn next_status(rx: &mut mpsc::Receiver<PollEvent>, online: bool) {
    tokio::time::timeout(WAIT * 2, async {
        loop {
            match rx.recv().await.expect("poller running") {
                PollEvent::Status(s) if s.online == online => return,
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("device never reported online = {online}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplugged_adapter_is_reopened_when_it_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("device"), dir.path().join("usb-rs485"));
    let sim = Eh203Sim::new(SimOptions {
        tick: Duration::from_millis(100),
        ..SimOptions::default()
    });
    let mut socat = plug(&a, &b).await;
    let open_sim = |a: &Path| {
        tokio_serial::SerialStream::open(&tokio_serial::new(a.display().to_string(), 9600)).unwrap()
    };
    let serving = sim.serve_rtu(open_sim(&a));

    let toml = format!(
        "[server]\nurl = \"ws://127.0.0.1:1/agent/v1/ws\"\nagent_id = \"{AGENT_ID}\"\nsecret = \"s3cret-for-test\"\n\n\
         [[bus]]\nname = \"rs485\"\nkind = \"rtu\"\npath = \"{}\"\ntimeout_ms = 200\n\n\
         [[device]]\nkey = \"heatpump\"\nbus = \"rs485\"\nunit_id = 1\nprofile = \"ouman_eh203_modbus200\"\npoll_interval_ms = 200\n",
        b.display()
    );
    let cfg = AgentConfig::from_toml("replug.toml", &toml, Path::new(".")).unwrap();
    let bus = &cfg.buses[0];
    let (tx, mut rx) = mpsc::channel(256);
    let cancel = CancellationToken::new();
    let (_writes, commands) = BusHandle::new(&bus.name);
    let poller = tokio::spawn(run_bus(
        bus.name.clone(),
        ModbusDriver::new(BusClient::new(bus), bus.max_gap),
        cfg.devices.clone(),
        tx,
        commands,
        cancel.clone(),
        Arc::new(Metrics::default()),
    ));
    next_status(&mut rx, true).await;

    // Unplug: the adapter and its device node vanish. SIGKILL leaves socat
    // no time to remove its links, and a dangling link could come to point
    // at another test's new pty, so remove them as udev would.
    socat.kill().await.unwrap();
    serving.abort();
    for link in [&a, &b] {
        let _ = std::fs::remove_file(link);
    }
    next_status(&mut rx, false).await;

    // Plug back in under the same name; nobody restarts the agent.
    let _socat = plug(&a, &b).await;
    let _serving = sim.serve_rtu(open_sim(&a));
    next_status(&mut rx, true).await;
    let readings = tokio::time::timeout(WAIT, async {
        loop {
            if let PollEvent::Readings(r) = rx.recv().await.unwrap() {
                return r;
            }
        }
    })
    .await
    .expect("values flow again after the replug");
    assert!(readings.iter().any(|r| r.point == "outdoor_temp"));
    cancel.cancel();
    poller.await.unwrap();
}
