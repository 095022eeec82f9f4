//! Protocol contract: each fixture is what the wire carries. serialize(example)
//! must equal the fixture and parse(fixture) must equal the example. A changed
//! fixture is a protocol change: bump `PROTOCOL_VERSION` or make the field
//! additive (`Option` / `#[serde(default)]`).

use protocol::*;
use time::macros::datetime;
use uuid::uuid;

fn check<T>(name: &str, example: T, to_json: fn(&T) -> String, from_json: fn(&str) -> T)
where
    T: PartialEq + std::fmt::Debug,
{
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let fixture = std::fs::read_to_string(&path).expect("fixture file exists");
    let want: serde_json::Value = serde_json::from_str(&fixture).expect("fixture is JSON");
    let got: serde_json::Value =
        serde_json::from_str(&to_json(&example)).expect("our output is JSON");
    assert_eq!(got, want, "serialised {name} differs from {path}");
    assert_eq!(from_json(&fixture), example, "parsed {name}");
}

fn check_agent(name: &str, example: AgentToServer) {
    check(
        name,
        example,
        |m| m.to_json().expect("serialises"),
        |t| AgentToServer::from_json(t).expect("fixture parses"),
    );
}

fn check_server(name: &str, example: ServerToAgent) {
    check(
        name,
        example,
        |m| m.to_json().expect("serialises"),
        |t| ServerToAgent::from_json(t).expect("fixture parses"),
    );
}

const AGENT: uuid::Uuid = uuid!("01a1fee0-0000-7000-8000-000000000001");
const SITE: uuid::Uuid = uuid!("01a1fee0-0000-7000-8000-0000000000a1");

#[test]
fn hello_matches_its_fixture() {
    check_agent(
        "hello",
        AgentToServer::Hello(Hello {
            agent_id: AGENT,
            version: 1,
            capabilities: vec!["readings".into(), "device_status".into()],
            software: Some("homecontrol-agent 0.1.0".into()),
            devices: vec![DeviceInfo {
                key: "heatpump".into(),
                label: Some("Lämpöpumppu".into()),
                profile: Some("ouman_eh203_modbus200".into()),
                points: vec![
                    PointInfo {
                        key: "outdoor_temp".into(),
                        label: Some("M1 Ulkolämpötila / outdoor temperature".into()),
                        unit: "degC".into(),
                        kind: PointKind::Analog,
                        display_min: Some(-40.0),
                        display_max: Some(40.0),
                        alarm: false,
                    },
                    PointInfo {
                        key: "alarm_a".into(),
                        label: Some("Hälytys A / alarm A".into()),
                        unit: String::new(),
                        kind: PointKind::Binary,
                        display_min: None,
                        display_max: None,
                        alarm: true,
                    },
                ],
            }],
            envelope: None,
        }),
    );
}

#[test]
fn hello_with_an_envelope_matches_its_fixture() {
    check_agent(
        "hello_envelope",
        AgentToServer::Hello(Hello {
            agent_id: AGENT,
            version: 1,
            capabilities: vec!["readings".into(), "control".into()],
            software: None,
            devices: vec![],
            envelope: Some(Envelope {
                writables: vec![
                    WritableInfo {
                        device: "pop1".into(),
                        point: "room3_floor_setpoint".into(),
                        kind: ControlKind::Setpoint,
                        min: 18.0,
                        max: 27.0,
                        step: 0.1,
                        max_change_per_hour: Some(4.0),
                        max_override_s: 86_400,
                        schedulable: true,
                    },
                    WritableInfo {
                        device: "pop1".into(),
                        point: "car_heater".into(),
                        kind: ControlKind::Output,
                        min: 0.0,
                        max: 1.0,
                        step: 1.0,
                        max_change_per_hour: None,
                        max_override_s: 10_800,
                        schedulable: true,
                    },
                ],
                actions: vec![ActionInfo {
                    name: "boost_dhw".into(),
                    label: Some("Lämmin vesi tehostus / boost hot water".into()),
                    max_duration_s: 10_800,
                }],
            }),
        }),
    );
}

#[test]
fn commands_match_their_fixtures() {
    let cmd = |request| {
        ServerToAgent::Command(Command {
            id: uuid!("01a1fee0-0000-7000-8000-0000000000c1"),
            issued_at: datetime!(2026-11-21 06:40 UTC),
            expires_at: datetime!(2026-11-21 06:45 UTC),
            issued_by: "homeowner@example.com".into(),
            request,
        })
    };
    check_server(
        "command_set",
        cmd(ControlRequest::Set {
            device: "pop1".into(),
            point: "room3_floor_setpoint".into(),
            value: 22.5,
            until: Some(datetime!(2026-11-21 22:00 UTC)),
        }),
    );
    check_server(
        "command_action",
        cmd(ControlRequest::StartAction {
            action: "boost_dhw".into(),
            duration_s: 7_200,
        }),
    );
    check_server(
        "command_schedule",
        cmd(ControlRequest::SetSchedule {
            device: "pop1".into(),
            point: "car_heater".into(),
            schedule: WeeklySchedule {
                time_zone: "Europe/Helsinki".into(),
                on_value: 1.0,
                off_value: 0.0,
                days: (0..7)
                    .map(|d| {
                        if d < 5 {
                            vec![Period {
                                start_min: 5 * 60,
                                end_min: 7 * 60,
                            }]
                        } else {
                            vec![]
                        }
                    })
                    .collect(),
                exceptions: vec![ExceptionDay {
                    date: time::macros::date!(2026 - 12 - 24),
                    label: "holiday".into(),
                    periods: vec![],
                }],
            },
        }),
    );
}

#[test]
fn command_result_and_control_state_match_their_fixtures() {
    check_agent(
        "command_result",
        AgentToServer::CommandResult(CommandResult {
            id: uuid!("01a1fee0-0000-7000-8000-0000000000c1"),
            at: datetime!(2026-11-21 06:40:02 UTC),
            outcome: CommandOutcome::Rejected,
            reason: Some("22.5 is above the limit 21.0 of room3_floor_setpoint".into()),
            before: Some(20.0),
            after: None,
        }),
    );
    check_agent(
        "control_state",
        AgentToServer::ControlState(ControlState {
            device: "heatpump".into(),
            point: "dhw_setpoint".into(),
            commanded: Some(55.0),
            reported: Some(54.9),
            source: ControlSource::Action,
            until: Some(datetime!(2026-11-21 09:40 UTC)),
            action: Some("boost_dhw".into()),
            note: None,
        }),
    );
    // The note is additive: sent only when there is one.
    check_agent(
        "control_state_note",
        AgentToServer::ControlState(ControlState {
            device: "pop1".into(),
            point: "output_3".into(),
            commanded: Some(1.0),
            reported: Some(1.0),
            source: ControlSource::Schedule,
            until: None,
            action: None,
            note: Some("switched by the device's own clock table (3 of 8 entries)".into()),
        }),
    );
}

#[test]
fn readings_batch_matches_its_fixture() {
    check_agent(
        "readings",
        AgentToServer::Readings(ReadingsBatch {
            seq: 1_764_000_000_042,
            readings: vec![
                Reading {
                    device: "heatpump".into(),
                    point: "outdoor_temp".into(),
                    ts: datetime!(2026-11-21 12:00:01.250 UTC),
                    value: -7.13,
                    unit: "degC".into(),
                    quality: Quality::Good,
                },
                Reading {
                    device: "heatpump".into(),
                    point: "alarm_a".into(),
                    ts: datetime!(2026-11-21 12:00:01.250 UTC),
                    value: 0.0,
                    unit: String::new(),
                    quality: Quality::CommError,
                },
            ],
        }),
    );
}

#[test]
fn device_status_matches_its_fixture() {
    check_agent(
        "device_status",
        AgentToServer::DeviceStatus(DeviceStatus {
            device: "heatpump".into(),
            online: false,
            last_ok: Some(datetime!(2026-11-21 11:59:55 UTC)),
            last_error: Some("timeout after 1000 ms".into()),
            consecutive_failures: 3,
        }),
    );
}

#[test]
fn agent_status_matches_its_fixture() {
    check_agent(
        "agent_status",
        AgentToServer::AgentStatus(AgentStatus {
            buffered_readings: 43_200,
            buffered_bytes: 3_145_728,
            oldest_unsent: Some(datetime!(2026-11-20 12:00:00 UTC)),
            thinned_total: 0,
            dropped_total: 0,
            last_acked_seq: Some(1_764_000_000_041),
        }),
    );
}

#[test]
fn welcome_ack_and_error_match_their_fixtures() {
    check_server(
        "welcome",
        ServerToAgent::Welcome(Welcome {
            version: 1,
            site_id: SITE,
            last_acked_seq: Some(1_764_000_000_041),
        }),
    );
    check_server(
        "ack",
        ServerToAgent::Ack(Ack {
            seq: 1_764_000_000_042,
        }),
    );
    check_server(
        "error",
        ServerToAgent::Error(ErrorReply {
            code: ErrorCode::TemporarilyUnavailable,
            message: "not stored; send again later".into(),
            seq: Some(1_764_000_000_042),
        }),
    );
}

#[test]
fn an_older_hello_without_optional_fields_still_parses() {
    let old = r#"{"type":"hello","agent_id":"01a1fee0-0000-7000-8000-000000000001","version":1}"#;
    let AgentToServer::Hello(h) = AgentToServer::from_json(old).unwrap() else {
        panic!("hello")
    };
    assert!(h.devices.is_empty() && h.capabilities.is_empty() && h.software.is_none());
}
