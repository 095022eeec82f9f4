//! The agent polls our EH-203 simulator (Modbus TCP, and RTU through a socat
//! pty pair) and uploads to an in-test WebSocket server, which checks the
//! bearer token, the Hello catalogue and the values, acks, then drops the
//! connection: the agent must reconnect and resend what was not acked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeMap, time::Duration};

use agent::sim::{Alarm, Eh203Sim, SimOptions};
use common::{AGENT_ID, FakeServer, Seen, agent_toml, socat_pair, spawn_agent};
use protocol::{AgentToServer, PointKind};

fn sim() -> Eh203Sim {
    Eh203Sim::new(SimOptions {
        tick: Duration::from_millis(100),
        alarm_a: true,
        ..SimOptions::default()
    })
}

fn readings_of(s: &Seen) -> Option<(usize, u64, bool, Vec<protocol::Reading>)> {
    match &s.msg {
        AgentToServer::Readings(b) => Some((s.conn, b.seq, s.acked, b.readings.clone())),
        _ => None,
    }
}

/// Hello → values → unacked batch → server drops → reconnect → resend.
async fn upload_scenario(server: &mut FakeServer, sim: &Eh203Sim) {
    let hello = server
        .next_matching("hello", |s| match &s.msg {
            AgentToServer::Hello(h) => Some(h.clone()),
            _ => None,
        })
        .await;
    assert_eq!(hello.agent_id.to_string(), AGENT_ID);
    assert_eq!(hello.version, protocol::PROTOCOL_VERSION);
    let dev = &hello.devices[0];
    assert_eq!(
        (dev.key.as_str(), dev.profile.as_deref()),
        ("heatpump", Some("ouman_eh203_modbus200"))
    );
    assert_eq!(dev.points.len(), 10);
    let point = |k: &str| dev.points.iter().find(|p| p.key == k).unwrap();
    assert_eq!(
        (
            point("outdoor_temp").display_min,
            point("outdoor_temp").display_max
        ),
        (Some(-40.0), Some(40.0))
    );
    assert_eq!(point("compressor_running").kind, PointKind::Binary);
    assert!(point("alarm_a").alarm);

    // Every point arrives with a plausible value.
    let mut latest: BTreeMap<String, f64> = BTreeMap::new();
    while latest.len() < 10 {
        let (_, _, _, rs) = server.next_matching("readings", readings_of).await;
        for r in rs {
            assert_eq!(r.quality, protocol::Quality::Good);
            latest.insert(r.point, r.value);
        }
    }
    let snap = sim.snapshot();
    assert!(
        (latest["outdoor_temp"] - snap.outdoor_temp).abs() < 2.0,
        "{latest:?} vs {snap:?}"
    );
    assert!(
        (0.0..=70.0).contains(&latest["l1_supply_temp"])
            && latest["l1_supply_temp"] > latest["outdoor_temp"]
    );
    assert!(
        (60.0..=110.0).contains(&latest["hot_gas_temp"]) || latest["compressor_running"] == 0.0,
        "{latest:?}"
    );
    assert_eq!(latest["alarm_a"], 1.0);
    assert_eq!(latest["alarm_b"], 0.0);
    for k in ["compressor_running", "electric_heater_on"] {
        assert!(latest[k] == 0.0 || latest[k] == 1.0);
    }

    // A lamp change reaches the server.
    sim.set_alarm(Alarm::B, true);
    server
        .next_matching("alarm B on", |s| {
            readings_of(s).and_then(|(_, _, _, rs)| {
                rs.iter()
                    .find(|r| r.point == "alarm_b" && r.value == 1.0)
                    .map(|_| ())
            })
        })
        .await;

    // Stop acking; note the first batch left unacknowledged, then drop the link.
    server
        .acking
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let unacked = server
        .next_matching("an unacked batch", |s| {
            readings_of(s).filter(|r| !r.2).map(|r| r.3)
        })
        .await;
    server
        .acking
        .store(true, std::sync::atomic::Ordering::SeqCst);
    server.drop_connection();

    server
        .next_matching("a second hello after the reconnect", |s| {
            matches!(s.msg, AgentToServer::Hello(_)).then_some(s.conn)
        })
        .await;
    // Its readings go out again (under a new seq: seqs are handed out in send order).
    let mut missing: std::collections::BTreeSet<(String, time::OffsetDateTime)> =
        unacked.iter().map(|r| (r.point.clone(), r.ts)).collect();
    while !missing.is_empty() {
        let (conn, _, _, rs) = server
            .next_matching("the unacked readings resent", readings_of)
            .await;
        if conn >= 2 {
            for r in rs {
                missing.remove(&(r.point, r.ts));
            }
        }
    }
    assert!(server.rejected_auth.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_polls_the_simulator_over_tcp_uploads_and_resends_after_a_reconnect() {
    let sim = sim();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _server_task = sim.serve_tcp(listener);
    let mut server = FakeServer::start().await;
    let toml = agent_toml(
        &server.url,
        &format!("kind = \"tcp\"\naddress = \"{addr}\""),
        200,
    );
    let (stop, handle) = spawn_agent(&toml);

    upload_scenario(&mut server, &sim).await;

    stop.cancel();
    common::within("the agent to stop", handle)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_polls_the_simulator_over_rtu_through_socat_and_uploads() {
    let pty = socat_pair().await;
    let sim = sim();
    let port = tokio_serial::SerialStream::open(&tokio_serial::new(pty.a.to_string_lossy(), 9600))
        .unwrap();
    let _server_task = sim.serve_rtu(port);
    let mut server = FakeServer::start().await;
    let bus = format!(
        "kind = \"rtu\"\npath = \"{}\"\nbaud = 9600\nparity = \"none\"\ndata_bits = 8\nstop_bits = 1",
        pty.b.display()
    );
    let (stop, handle) = spawn_agent(&agent_toml(&server.url, &bus, 200));

    upload_scenario(&mut server, &sim).await;

    stop.cancel();
    common::within("the agent to stop", handle)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_stops_answering_goes_offline_and_comes_back_by_itself() {
    let sim = sim();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _server_task = sim.serve_tcp(listener);
    let mut server = FakeServer::start().await;
    let (stop, handle) = spawn_agent(&agent_toml(
        &server.url,
        &format!("kind = \"tcp\"\naddress = \"{addr}\""),
        200,
    ));

    let status = |online: bool| {
        move |s: &Seen| match &s.msg {
            AgentToServer::DeviceStatus(d)
                if d.online == online && d.last_error.is_none() == online =>
            {
                Some(d.clone())
            }
            _ => None,
        }
    };
    server.next_matching("device online", status(true)).await;
    sim.set_silent(true);
    let offline = server.next_matching("device offline", status(false)).await;
    assert_eq!(offline.device, "heatpump");
    assert!(offline.consecutive_failures >= 2);
    assert!(offline.last_error.unwrap().contains("no reply"));
    sim.set_silent(false);
    let back = server
        .next_matching("device back online", status(true))
        .await;
    assert!(back.last_ok.is_some());
    server
        .next_matching("readings after the comeback", readings_of)
        .await;

    stop.cancel();
    common::within("the agent to stop", handle)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_refused_by_the_server_and_never_logged_in_the_hello() {
    let mut server = FakeServer::start().await;
    let toml = agent_toml(
        &server.url,
        "kind = \"tcp\"\naddress = \"127.0.0.1:9\"",
        1000,
    )
    .replace(common::SECRET, "wrong-secret");
    let (stop, handle) = spawn_agent(&toml);
    common::within("a refused upgrade", async {
        while server.rejected_auth.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        server.rejected_auth.lock().unwrap()[0],
        format!("Bearer {AGENT_ID}.wrong-secret")
    );
    assert!(
        server.seen.try_recv().is_err(),
        "no message gets through without auth"
    );
    stop.cancel();
    common::within("the agent to stop", handle)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_taken_while_the_server_is_down_are_delivered_when_it_comes_back() {
    let sim = sim();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _server_task = sim.serve_tcp(listener);
    let mut server = FakeServer::start().await;
    server
        .accepting
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let started = time::OffsetDateTime::now_utc();
    let (stop, handle) = spawn_agent(&agent_toml(
        &server.url,
        &format!("kind = \"tcp\"\naddress = \"{addr}\""),
        200,
    ));

    // Let the agent poll for a while with no uplink (it retries with back-off meanwhile).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server
        .accepting
        .store(true, std::sync::atomic::Ordering::SeqCst);

    assert!(
        server.seen.try_recv().is_err(),
        "nothing got through while the server was down"
    );
    // Live first: the newest value of each point, in a batch of its own...
    let first = server
        .next_matching("the first batch after the server came back", readings_of)
        .await;
    let points: std::collections::BTreeSet<_> = first.3.iter().map(|r| &r.point).collect();
    assert_eq!(points.len(), first.3.len(), "one value per point");
    assert_eq!(points.len(), 10);
    // ...then the backlog, oldest first.
    let second = server
        .next_matching("the backlog after the live values", readings_of)
        .await;
    let oldest = second.3.iter().map(|r| r.ts).min().unwrap();
    assert!(
        oldest - started < time::Duration::milliseconds(700),
        "the oldest reading ({oldest}) dates from the outage, not from the reconnect"
    );
    assert!(oldest < first.3.iter().map(|r| r.ts).min().unwrap());
    stop.cancel();
    common::within("the agent to stop", handle)
        .await
        .unwrap()
        .unwrap();
}
