//! A schedule of a POP output runs in the board's own clock table: the real
//! agent (uplink to a fake server that checks nothing, poller, executor) on
//! one end of a socat pty pair, the simulated bus with its wall keypad
//! talking on the other. The agent and the boards share one controllable
//! clock running faster than real time, so the morning's edge comes in
//! seconds.
//!
//! The proof that the board runs it: the agent is stopped before the edge,
//! and the output still switches on at 06:00 and off at 06:01, by the
//! board's clock, which the agent set to Helsinki time (the board started on
//! UTC). Nothing waits on elapsed time: every wait is for a condition, with a
//! generous limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use agent::{
    control::executor::Clock,
    sim::pop::{PopBusSim, PopSimOptions},
};
use common::{AGENT_ID, FakeServer, SECRET, socat_pair, within};
use protocol::{
    AgentToServer, Command, CommandOutcome, ControlRequest, ControlSource, Period, ServerToAgent,
    WeeklySchedule,
};
use time::{OffsetDateTime, macros::datetime};

fn toml(server: &FakeServer, path: &std::path::Path) -> String {
    format!(
        r#"[server]
url = "{url}"
agent_id = "{AGENT_ID}"
secret = "{SECRET}"

[[bus]]
name = "heating"
kind = "pop"
path = "{path}"

[[device]]
key = "board1"
bus = "heating"
unit_id = 1
profile = "pop_board"
poll_interval_ms = 1000

[[writable]]
device = "board1"
point = "output_1"
kind = "output"
max_override_minutes = 60
schedulable = true
"#,
        url = server.url,
        path = path.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_switches_at_the_scheduled_minute_after_the_agent_has_stopped() {
    // Monday 2026-01-12 05:58:30 in Helsinki (UTC+2), 6 times real time:
    // the 06:00 edge is 15 real seconds away, plenty for the writes, and the
    // 06:01 edge 10 more. (Faster would blur the clock the agent sets: the
    // exchange itself takes bus time.)
    let six = datetime!(2026-01-12 04:00 UTC);
    let clock = Clock::starting_at(six - time::Duration::seconds(90), 6.0);
    let sim = PopBusSim::new(PopSimOptions {
        boards: vec![1],
        drift: None,
        clock,
        time_zone: "UTC".into(),
        ..PopSimOptions::default()
    });
    // Someone switched it off by hand at the keypad: the agent must hand it
    // to the table.
    sim.with_board(1, |b| b.outputs[0].manual = Some(false));
    let pty = socat_pair().await;
    let port = tokio_serial::SerialStream::open(&tokio_serial::new(pty.a.to_string_lossy(), 9600))
        .unwrap();
    let _serving = sim.serve(port);
    let mut server = FakeServer::start().await;
    let (stop, handle, _writer) =
        common::spawn_agent_configured(&toml(&server, &pty.b), |a| a.with_control_clock(clock));
    server
        .next_matching("the control states after the welcome", |s| {
            matches!(s.msg, AgentToServer::ControlState(_)).then_some(())
        })
        .await;

    let now = OffsetDateTime::now_utc();
    let cmd = Command {
        id: uuid::Uuid::new_v4(),
        issued_at: now,
        expires_at: now + time::Duration::days(1),
        issued_by: "homeowner@example.com".into(),
        request: ControlRequest::SetSchedule {
            device: "board1".into(),
            point: "output_1".into(),
            schedule: WeeklySchedule {
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
            },
        },
    };
    let id = cmd.id;
    server.send(ServerToAgent::Command(cmd));
    let result = server
        .next_matching("the schedule's result", |s| match &s.msg {
            AgentToServer::CommandResult(r) if r.id == id => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!(result.outcome, CommandOutcome::Applied, "{result:?}");
    assert!(
        result
            .reason
            .as_deref()
            .unwrap()
            .contains("runs in the device's own clock table (1 of 8 entries; 1 written)"),
        "{result:?}"
    );
    let state = server
        .next_matching("the control state naming the board's table", |s| {
            match &s.msg {
                AgentToServer::ControlState(c)
                    if c.point == "output_1"
                        && c.note.as_deref().is_some_and(|n| {
                            n.starts_with("switched by the device's own clock table")
                        }) =>
                {
                    Some(c.clone())
                }
                _ => None,
            }
        })
        .await;
    assert_eq!(state.source, ControlSource::Schedule);
    let board = sim.board(1).unwrap();
    assert_eq!(board.outputs[0].manual, None, "handed to its clock table");
    let local = board.local_time(clock.now());
    assert_eq!(
        (local.date(), local.hour()),
        (time::macros::date!(2026 - 01 - 12), 5),
        "the board's clock was set to Helsinki time: {local}"
    );

    // The agent goes away (and with it the link to the server). Whatever
    // happens from here is the board's doing; at the latest the 06:01 edge
    // comes after this.
    stop.cancel();
    within("the agent to stop", handle).await.unwrap().unwrap();
    let stopped_at = clock.now();
    if stopped_at < six - time::Duration::seconds(20) {
        assert_eq!(sim.output_on(1, 1), Some(false), "on before 06:00");
    }
    let on_at = within("the board to switch the output on at 06:00", async {
        while sim.output_on(1, 1) != Some(true) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sim.board_time(1).unwrap()
    })
    .await;
    assert!(
        on_at >= datetime!(2026-01-12 06:00),
        "on early by the board's clock: {on_at}"
    );
    assert!(
        clock.now() >= six - time::Duration::seconds(30),
        "on early by the world's clock"
    );
    let off_at = within("the board to switch it off at 06:01", async {
        while sim.output_on(1, 1) != Some(false) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sim.board_time(1).unwrap()
    })
    .await;
    assert!(off_at >= datetime!(2026-01-12 06:01), "{off_at}");
    assert!(
        stopped_at < six + time::Duration::minutes(1),
        "the agent ran past 06:01 ({stopped_at}): the machine is too slow for this test's clock"
    );
    // Nobody spoke to the board meanwhile but the keypad.
    assert!(sim.stats().keypad_polls > 0);
}
