//! Remote control through the real agent: a fake server that checks nothing
//! sends commands straight down the link, and the agent alone holds the line.
//! The device is the EH-203 simulator (Modbus TCP, or RTU over a socat pty
//! pair); its registers 52..59 hold no model value, so a write stays.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use agent::{
    control::executor::Clock,
    sim::{Eh203Sim, SimOptions},
};
use common::{FakeServer, Logs, agent_toml, socat_pair, within};
use protocol::{
    AgentToServer, Command, CommandOutcome, CommandResult, ControlRequest, ControlSource,
    ControlState, Period, ServerToAgent, WeeklySchedule,
};
use time::OffsetDateTime;
use tokio::net::TcpListener;

/// Two writable points on the EH-203's free registers and a 1-minute boost.
const CONTROL: &str = r#"
[[device.point]]
name = "dhw_setpoint"
function = "holding"
address = 52
data_type = "i16"
scale = 0.1
unit = "degC"
writable = true

[[device.point]]
name = "car_heater"
function = "holding"
address = 53
data_type = "u16"
writable = true

[[writable]]
device = "heatpump"
point = "dhw_setpoint"
kind = "setpoint"
min = 40.0
max = 55.0
step = 0.5
max_override_minutes = 60
daily_write_cap = 20

[[writable]]
device = "heatpump"
point = "car_heater"
kind = "output"
max_override_minutes = 60
schedulable = true
value_when_idle = 0

[[action]]
name = "boost_dhw"
label = "Boost hot water"
max_duration_minutes = 1
[[action.write]]
device = "heatpump"
point = "dhw_setpoint"
value = 55
"#;

fn command(request: ControlRequest) -> Command {
    let now = OffsetDateTime::now_utc();
    Command {
        id: uuid::Uuid::new_v4(),
        issued_at: now,
        expires_at: now + time::Duration::minutes(5),
        issued_by: "intruder@example.com".into(),
        request,
    }
}

fn set(point: &str, value: f64) -> ControlRequest {
    ControlRequest::Set {
        device: "heatpump".into(),
        point: point.into(),
        value,
        until: None,
    }
}

/// Send `cmd` and wait for its result.
async fn ask(server: &mut FakeServer, cmd: Command) -> CommandResult {
    let id = cmd.id;
    server.send(ServerToAgent::Command(cmd));
    server
        .next_matching("the command's result", |s| match &s.msg {
            AgentToServer::CommandResult(r) if r.id == id => Some(r.clone()),
            _ => None,
        })
        .await
}

/// Wait until the agent has read `dhw_setpoint` (it puts that value back
/// after an override).
async fn dhw_read(server: &mut FakeServer) {
    server
        .next_matching("a reading of dhw_setpoint", |s| match &s.msg {
            AgentToServer::Readings(b) => b
                .readings
                .iter()
                .any(|r| r.point == "dhw_setpoint" && r.quality == protocol::Quality::Good)
                .then_some(()),
            _ => None,
        })
        .await;
}

/// Wait until the agent is connected and its executor has announced the
/// points' control states (it does after every welcome).
async fn control_states_announced(server: &mut FakeServer) {
    server
        .next_matching("the control states after the welcome", |s| {
            matches!(s.msg, AgentToServer::ControlState(_)).then_some(())
        })
        .await;
}

async fn register(sim: &Eh203Sim, addr: u16) -> u16 {
    sim.read_holding(addr, 1).unwrap()[0]
}

/// Wait until register `addr` of `sim` holds `want`.
async fn wait_register(sim: &Eh203Sim, addr: u16, want: u16, what: &str) {
    within(what, async {
        while register(sim, addr).await != want {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

async fn sim_on_tcp() -> (Eh203Sim, String) {
    let sim = Eh203Sim::new(SimOptions::default());
    sim.set_holding(52, 450).unwrap(); // dhw setpoint 45.0 degC before anyone asks
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    sim.serve_tcp(listener);
    (sim, addr)
}

fn toml(server: &FakeServer, bus: &str) -> String {
    format!("{}{CONTROL}", agent_toml(&server.url, bus, 200))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breach_a_server_that_checks_nothing_cannot_write_outside_the_envelope() {
    let logs = Logs::install();
    let pty = socat_pair().await;
    let sim = Eh203Sim::new(SimOptions::default());
    sim.set_holding(52, 450).unwrap();
    let port = tokio_serial::SerialStream::open(&tokio_serial::new(pty.a.to_string_lossy(), 9600))
        .unwrap();
    let _serving = sim.serve_rtu(port);
    let mut server = FakeServer::start().await;
    let bus = format!(
        "kind = \"rtu\"\npath = \"{}\"\nbaud = 9600\nparity = \"none\"",
        pty.b.display()
    );
    let (stop, handle) = common::spawn_agent(&toml(&server, &bus));

    let hello = server
        .next_matching("hello", |s| match &s.msg {
            AgentToServer::Hello(h) => Some(h.clone()),
            _ => None,
        })
        .await;
    assert!(hello.capabilities.iter().any(|c| c == "control"));
    let envelope = hello.envelope.expect("the envelope copy");
    assert_eq!(envelope.writables.len(), 2);
    assert_eq!(envelope.actions[0].max_duration_s, 60);
    dhw_read(&mut server).await;

    // Straight down the link, no server-side check: every one refused.
    let breaches = [
        (set("dhw_setpoint", 80.0), "outside the limits"),
        (set("dhw_setpoint", 50.2), "multiple of the step"),
        (set("car_heater", 2.0), "output"),
        (set("outdoor_temp", -30.0), "not in this agent's envelope"),
        (
            ControlRequest::StartAction {
                action: "open_shunt_valve".into(),
                duration_s: 60,
            },
            "unknown action",
        ),
        (
            ControlRequest::SetSchedule {
                device: "heatpump".into(),
                point: "dhw_setpoint".into(),
                schedule: WeeklySchedule {
                    time_zone: "Europe/Helsinki".into(),
                    on_value: 55.0,
                    off_value: 40.0,
                    days: vec![vec![]; 7],
                    exceptions: vec![],
                },
            },
            "schedulable = false",
        ),
    ];
    let mut ids = Vec::new();
    for (request, why) in breaches {
        let cmd = command(request);
        ids.push(cmd.id);
        let r = ask(&mut server, cmd).await;
        assert_eq!(r.outcome, CommandOutcome::Rejected, "{r:?}");
        assert!(r.reason.as_deref().unwrap().contains(why), "{r:?}");
        assert_eq!(r.after, None);
    }
    assert_eq!(
        register(&sim, 52).await,
        450,
        "the dhw setpoint is untouched"
    );
    assert_eq!(register(&sim, 53).await, 0, "the car heater is untouched");
    let log = logs.text();
    for id in &ids {
        assert!(
            log.lines().any(
                |l| l.contains("refused by the safety envelope") && l.contains(&id.to_string())
            ),
            "refusal of {id} not logged:\n{log}"
        );
    }
    assert!(log.contains("intruder@example.com"));

    // A command that arrives after it expired: nothing written.
    let mut late = command(set("dhw_setpoint", 50.0));
    late.expires_at = OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let r = ask(&mut server, late).await;
    assert_eq!(r.outcome, CommandOutcome::Expired);
    assert_eq!(register(&sim, 52).await, 450);

    // Inside the envelope: written over RTU and read back.
    let r = ask(&mut server, command(set("dhw_setpoint", 50.0))).await;
    assert_eq!(r.outcome, CommandOutcome::Applied, "{r:?}");
    assert_eq!((r.before, r.after), (Some(45.0), Some(50.0)));
    assert_eq!(register(&sim, 52).await, 500);
    let state = server
        .next_matching("the control state", |s| match &s.msg {
            AgentToServer::ControlState(c)
                if c.point == "dhw_setpoint" && c.commanded == Some(50.0) =>
            {
                Some(c.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(state.source, ControlSource::Manual);
    assert!(state.until.is_some());

    stop.cancel();
    within("the agent to stop", handle).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_changed_at_the_device_reaches_the_server_at_once() {
    let (sim, addr) = sim_on_tcp().await;
    let mut server = FakeServer::start().await;
    let bus = format!("kind = \"tcp\"\naddress = \"{addr}\"");
    let (stop, handle) = common::spawn_agent(&toml(&server, &bus));
    let dhw_state = |want: f64| {
        move |s: &common::Seen| match &s.msg {
            AgentToServer::ControlState(c)
                if c.point == "dhw_setpoint" && c.reported == Some(want) =>
            {
                Some(c.clone())
            }
            _ => None,
        }
    };
    // The first reading is announced even when the welcome came before it
    // (no deadline is pending: without the wake-up it would wait a minute,
    // longer than `within` waits).
    server
        .next_matching("the first read value in a control state", dhw_state(45.0))
        .await;
    // Someone turns the setpoint at the heat pump's own panel.
    sim.set_holding(52, 470).unwrap();
    let state = server
        .next_matching("the panel's value in a control state", dhw_state(47.0))
        .await;
    assert_eq!(state.source, ControlSource::Device);
    stop.cancel();
    within("the agent to stop", handle).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boost_with_the_link_cut_reverts_by_itself() {
    let (sim, addr) = sim_on_tcp().await;
    let mut server = FakeServer::start().await;
    let bus = format!("kind = \"tcp\"\naddress = \"{addr}\"");
    let (stop, handle) = common::spawn_agent(&toml(&server, &bus));
    dhw_read(&mut server).await;

    let r = ask(
        &mut server,
        command(ControlRequest::StartAction {
            action: "boost_dhw".into(),
            duration_s: 4,
        }),
    )
    .await;
    assert_eq!(r.outcome, CommandOutcome::Applied, "{r:?}");
    assert_eq!(r.after, Some(55.0));
    assert_eq!(register(&sim, 52).await, 550);

    // Cut the link and keep the server away.
    server
        .accepting
        .store(false, std::sync::atomic::Ordering::SeqCst);
    server.drop_connection();
    wait_register(&sim, 52, 450, "the boost to end and 45.0 to be put back").await;

    // Back online: the server learns the state (no override, no action).
    server
        .accepting
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let state = server
        .next_matching("the control state after reconnecting", |s| match &s.msg {
            AgentToServer::ControlState(c) if c.point == "dhw_setpoint" && s.conn > 1 => {
                Some(c.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(state.action, None);
    assert_ne!(state.source, ControlSource::Action);
    stop.cancel();
    within("the agent to stop", handle).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_switches_the_output_at_the_minute_with_the_server_stopped() {
    let (sim, addr) = sim_on_tcp().await;
    let mut server = FakeServer::start().await;
    let bus = format!("kind = \"tcp\"\naddress = \"{addr}\"");
    // A clock at 05:58:00 Helsinki time (winter, UTC+2) running 30 times as
    // fast as real time: 06:00 comes in 4 real seconds, 06:01 in 6.
    let six = time::macros::datetime!(2026-01-15 04:00 UTC);
    let clock = Clock::starting_at(six - time::Duration::minutes(2), 30.0);
    let (stop, handle, _writer) =
        common::spawn_agent_configured(&toml(&server, &bus), |a| a.with_control_clock(clock));

    let mornings = WeeklySchedule {
        time_zone: "Europe/Helsinki".into(),
        on_value: 1.0,
        off_value: 0.0,
        days: vec![
            vec![Period {
                start_min: 360,
                end_min: 361
            }];
            7
        ],
        exceptions: vec![],
    };
    control_states_announced(&mut server).await;
    let mut cmd = command(ControlRequest::SetSchedule {
        device: "heatpump".into(),
        point: "car_heater".into(),
        schedule: mornings,
    });
    cmd.expires_at = OffsetDateTime::now_utc() + time::Duration::days(365 * 10);
    let r = ask(&mut server, cmd).await;
    assert_eq!(r.outcome, CommandOutcome::Applied, "{r:?}");
    // Before 06:00 the schedule says off (checked only while the agent's
    // clock is surely before it: the machine may be slow).
    let value = register(&sim, 53).await;
    if clock.now() < six - time::Duration::seconds(5) {
        assert_eq!(value, 0, "on before 06:00");
    }

    // The server goes away; the agent's clock table keeps running.
    server
        .accepting
        .store(false, std::sync::atomic::Ordering::SeqCst);
    server.drop_connection();
    wait_register(&sim, 53, 1, "the car heater to switch on at 06:00").await;
    let on_at = clock.now();
    wait_register(&sim, 53, 0, "the car heater to switch off at 06:01").await;
    let off_at = clock.now();
    assert!(on_at >= six, "switched on early: {on_at}");
    assert!(
        off_at >= six + time::Duration::minutes(1),
        "switched off early: {off_at}"
    );
    stop.cancel();
    within("the agent to stop", handle).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_and_its_end_survive_an_agent_restart() {
    let (sim, addr) = sim_on_tcp().await;
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bus = format!("kind = \"tcp\"\naddress = \"{addr}\"");
    let text = format!(
        "{}\n[buffer]\npath = \"{}\"\n",
        toml(&server, &bus),
        dir.path().join("buffer.db").display()
    );

    let (stop, handle) = common::spawn_agent(&text);
    dhw_read(&mut server).await;
    let until = OffsetDateTime::now_utc() + time::Duration::minutes(30);
    let mut cmd = command(set("dhw_setpoint", 52.5));
    if let ControlRequest::Set { until: u, .. } = &mut cmd.request {
        *u = Some(until);
    }
    let r = ask(&mut server, cmd).await;
    assert_eq!(r.outcome, CommandOutcome::Applied, "{r:?}");
    assert_eq!(register(&sim, 52).await, 525);
    stop.cancel();
    within("the first agent to stop", handle)
        .await
        .unwrap()
        .unwrap();
    assert!(dir.path().join("agent-control.json").exists());

    // The device forgets nothing, but the agent must not either: a second
    // agent announces the override with its original end.
    let (stop, handle) = common::spawn_agent(&text);
    let state: ControlState = server
        .next_matching("the restored control state", |s| match &s.msg {
            AgentToServer::ControlState(c) if c.point == "dhw_setpoint" && s.conn > 1 => {
                Some(c.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(state.source, ControlSource::Manual);
    assert_eq!(state.commanded, Some(52.5));
    assert_eq!(state.until, Some(until));
    assert_eq!(register(&sim, 52).await, 525);
    stop.cancel();
    within("the second agent to stop", handle)
        .await
        .unwrap()
        .unwrap();
}

/// A boiler controller (BankSim) whose own limits are narrower than the
/// installer's envelope, and a pump coil with a small write budget.
const BOILER_PROFILE: &str = r#"
[[profile]]
id = "boiler"
[[profile.point]]
name = "setpoint"
function = "holding"
address = 10
data_type = "i16"
scale = 0.1
writable = true
[[profile.point]]
name = "pump"
function = "coil"
address = 0
data_type = "bool"
writable = true
"#;

const BOILER_ENVELOPE: &str = r#"
[[writable]]
device = "boiler"
point = "setpoint"
kind = "setpoint"
min = 5.0
max = 35.0
step = 0.5
max_override_minutes = 60

[[writable]]
device = "boiler"
point = "pump"
kind = "output"
max_override_minutes = 60
daily_write_cap = 3
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_back_mismatch_is_failed_with_both_values_and_the_write_budget_holds() {
    use agent::sim::bank::{BankSim, Tables};
    let sim = BankSim::new();
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("boiler.toml");
    std::fs::write(&profile, BOILER_PROFILE).unwrap();
    let points = agent::registers::parse_profile("boiler.toml", BOILER_PROFILE)
        .unwrap()
        .remove(0)
        .points;
    sim.add_unit(1, Tables::for_points(&points));
    // The device keeps its setpoint within 5.0..=30.0 (raw 50..=300).
    sim.update(1, |t| {
        t.holding.insert(10, 200);
        t.clamp.insert(10, (50, 300));
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _serving = sim.serve_tcp(listener);
    let mut server = FakeServer::start().await;
    let text = format!(
        "[server]\nurl = \"{}\"\nagent_id = \"{}\"\nsecret = \"{}\"\n\n\
         [[bus]]\nname = \"lan\"\nkind = \"tcp\"\naddress = \"{addr}\"\ntimeout_ms = 500\n\n\
         [[device]]\nkey = \"boiler\"\nbus = \"lan\"\nunit_id = 1\nprofile = \"{}\"\npoll_interval_ms = 200\n{BOILER_ENVELOPE}",
        server.url,
        common::AGENT_ID,
        common::SECRET,
        profile.display()
    );
    let (stop, handle) = common::spawn_agent(&text);
    server
        .next_matching("readings of both points", |s| match &s.msg {
            AgentToServer::Readings(b) if b.readings.len() >= 2 => Some(()),
            _ => None,
        })
        .await;
    let writes = || {
        sim.requests()
            .iter()
            .filter(|r| matches!(r.function, 5 | 6 | 15 | 16))
            .count()
    };

    // 35.0 is inside the envelope but the device keeps 30.0: reported, not hidden.
    let r = ask(&mut server, command(set_on("boiler", "setpoint", 35.0))).await;
    assert_eq!(r.outcome, CommandOutcome::Failed, "{r:?}");
    let why = r.reason.unwrap();
    assert!(
        why.contains("wrote 35") && why.contains("reads back 30"),
        "{why}"
    );
    assert!(why.contains("does not repeat this write"), "{why}");
    assert_eq!((r.before, r.after), (Some(20.0), Some(30.0)));

    // The pump's budget: 3 writes a day, and each change keeps room for its revert.
    let before = writes();
    let r = ask(&mut server, command(set_on("boiler", "pump", 1.0))).await;
    assert_eq!(r.outcome, CommandOutcome::Applied, "{r:?}");
    let r = ask(&mut server, command(set_on("boiler", "pump", 0.0))).await;
    assert_eq!(r.outcome, CommandOutcome::Applied, "{r:?}");
    assert_eq!(writes(), before + 2);
    // An unchanged value is not written again (and costs nothing).
    let r = ask(&mut server, command(set_on("boiler", "pump", 0.0))).await;
    assert_eq!(r.outcome, CommandOutcome::Applied, "{r:?}");
    assert!(r.reason.unwrap().contains("not rewritten"));
    let r = ask(&mut server, command(set_on("boiler", "pump", 1.0))).await;
    assert_eq!(r.outcome, CommandOutcome::Rejected, "{r:?}");
    assert!(r.reason.unwrap().contains("daily write cap"));
    assert_eq!(writes(), before + 2, "nothing written after the refusal");
    assert!(!sim.tables(1).unwrap().coils[&0], "the pump stays off");

    stop.cancel();
    within("the agent to stop", handle).await.unwrap().unwrap();
}

fn set_on(device: &str, point: &str, value: f64) -> ControlRequest {
    ControlRequest::Set {
        device: device.into(),
        point: point.into(),
        value,
        until: None,
    }
}
