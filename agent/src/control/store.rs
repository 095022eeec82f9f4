//! Control state that survives a restart: schedules (and where they run: the
//! agent, or a device's clock table with what was written there), manual
//! overrides, running actions, the last value written per point and the
//! write/change history the budgets count.
//!
//! The agent may restart while the internet is down, so it cannot ask the
//! server again: it keeps the state in a small JSON file next to its buffer
//! (default `/var/lib/homecontrol/agent-control.json`). [`save`] writes it
//! atomically (temporary file, fsync, rename, fsync of the directory), so a
//! crash or power loss leaves either the old or the new file. [`load`] never
//! fails: a missing file starts empty; an unreadable or corrupt one starts
//! empty with an error in the log and is kept aside as `*.corrupt` for a
//! person to look at.

use std::{
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use protocol::WeeklySchedule;
use serde::{Deserialize, Serialize};
use tracing::{error, info};

use super::{
    controller::{Override, RunningAction},
    device_table::Placement,
};

/// Everything that survives a restart (the file's content).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version, [`Snapshot::VERSION`].
    pub version: u32,
    /// Per writable point.
    #[serde(default)]
    pub points: Vec<StoredPoint>,
    /// Actions running when it was written.
    #[serde(default)]
    pub actions: Vec<StoredAction>,
}

impl Snapshot {
    /// The format this agent writes and reads.
    pub const VERSION: u32 = 1;
}

/// One point's stored state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredPoint {
    /// Device key.
    pub device: String,
    /// Point key.
    pub point: String,
    /// Its weekly schedule.
    #[serde(default)]
    pub schedule: Option<WeeklySchedule>,
    /// Where the schedule runs and, when in a device's clock table, what
    /// the agent put there (so a restart knows what is in which device).
    #[serde(default)]
    pub placement: Option<Placement>,
    /// Its manual override.
    #[serde(default)]
    pub manual: Option<Override>,
    /// The value last written by the agent.
    #[serde(default)]
    pub applied: Option<f64>,
    /// The device's own value to put back when an override or action ends.
    #[serde(default)]
    pub resting: Option<f64>,
    /// Unix seconds of the writes within the budget window.
    #[serde(default)]
    pub write_times: Vec<i64>,
    /// (unix seconds, magnitude) of commanded changes within the rate window.
    #[serde(default)]
    pub changes: Vec<(i64, f64)>,
}

/// A running action's stored state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAction {
    /// Action name.
    pub name: String,
    /// End, starter, command.
    #[serde(flatten)]
    pub run: RunningAction,
}

/// Where the control state lives: next to the buffer file, named
/// `agent-control.json`.
pub fn default_path(buffer_path: &Path) -> PathBuf {
    buffer_path.with_file_name("agent-control.json")
}

/// Read the state at `path`. Never fails: missing → empty; unreadable,
/// corrupt or of an unknown version → empty, logged as an error, and the bad
/// file moved to `<path>.corrupt`.
pub fn load(path: &Path) -> Snapshot {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            info!(path = %path.display(), "no stored control state: starting without schedules or overrides");
            return Snapshot::default();
        }
        Err(e) => {
            error!(path = %path.display(), error = %e, "CANNOT READ the stored control state: starting WITHOUT schedules, overrides or running actions");
            return Snapshot::default();
        }
    };
    match parse(&bytes) {
        Ok(s) => s,
        Err(why) => {
            let aside = path.with_extension("json.corrupt");
            let kept = fs::rename(path, &aside).is_ok();
            error!(
                path = %path.display(),
                %why,
                kept_as = %if kept { aside.display().to_string() } else { "(could not move it)".into() },
                "CORRUPT control state: starting WITHOUT schedules, overrides or running actions"
            );
            Snapshot::default()
        }
    }
}

/// Parse the file's bytes.
pub fn parse(bytes: &[u8]) -> Result<Snapshot, String> {
    let s: Snapshot = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if s.version != Snapshot::VERSION {
        return Err(format!(
            "format version {} (this agent reads {})",
            s.version,
            Snapshot::VERSION
        ));
    }
    Ok(s)
}

/// Write `snapshot` to `path` atomically: a temporary file in the same
/// directory, fsync, rename over `path`, fsync of the directory.
pub fn save(path: &Path, snapshot: &Snapshot) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(snapshot).map_err(io::Error::other)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    // The rename itself must reach the disk: fsync the directory.
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::control::{Controller, PointKey, controller::Decision, envelope::tests::envelope};
    use protocol::{Command, ControlRequest, ControlSource, Period};

    const T0: time::OffsetDateTime = datetime!(2026-01-15 10:00 UTC);

    fn command(request: ControlRequest) -> Command {
        Command {
            id: uuid::Uuid::new_v4(),
            issued_at: T0,
            expires_at: T0 + time::Duration::hours(1),
            issued_by: "tech@example.com".into(),
            request,
        }
    }

    fn busy_controller() -> Controller {
        let mut c = Controller::new(envelope());
        c.record_reported(&PointKey::new("heatpump", "dhw_setpoint"), 45.0);
        c.record_reported(&PointKey::new("heatpump", "room_setpoint"), 21.0);
        let schedule = WeeklySchedule {
            time_zone: "Europe/Helsinki".into(),
            on_value: 1.0,
            off_value: 0.0,
            days: vec![
                vec![Period {
                    start_min: 360,
                    end_min: 480
                }];
                7
            ],
            exceptions: vec![],
        };
        for req in [
            ControlRequest::SetSchedule {
                device: "heatpump".into(),
                point: "car_heater".into(),
                schedule,
            },
            ControlRequest::Set {
                device: "heatpump".into(),
                point: "room_setpoint".into(),
                value: 21.5,
                until: Some(T0 + time::Duration::minutes(90)),
            },
            ControlRequest::StartAction {
                action: "boost_dhw".into(),
                duration_s: 3600,
            },
        ] {
            assert!(matches!(
                c.decide(&command(req), T0),
                Decision::Accepted { .. }
            ));
        }
        for w in c.due_writes(T0) {
            c.record_write(&w.key, w.value, T0);
        }
        c
    }

    #[test]
    fn schedules_overrides_and_actions_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent-control.json");
        let c = busy_controller();
        save(&path, &c.snapshot()).unwrap();
        assert!(!path.with_extension("json.tmp").exists());

        let later = T0 + time::Duration::minutes(5);
        let back = Controller::restore(envelope(), load(&path), later);
        assert_eq!(back.snapshot(), c.snapshot());
        let room = back.wanted(&PointKey::new("heatpump", "room_setpoint"), later);
        assert_eq!(
            (room.value, room.source, room.until),
            (
                Some(21.5),
                ControlSource::Manual,
                Some(T0 + time::Duration::minutes(90))
            )
        );
        let dhw = back.wanted(&PointKey::new("heatpump", "dhw_setpoint"), later);
        assert_eq!(dhw.until, Some(T0 + time::Duration::hours(1)));
        assert_eq!(dhw.action.as_deref(), Some("boost_dhw"));
        assert!(
            back.schedule(&PointKey::new("heatpump", "car_heater"))
                .is_some()
        );
        // What was written is not written again after the restart.
        assert!(back.due_writes(later).is_empty());
        assert_eq!(
            back.writes_in_last_day(&PointKey::new("heatpump", "dhw_setpoint"), later),
            1
        );
    }

    #[test]
    fn what_was_put_into_a_device_table_survives_a_restart() {
        use crate::{
            control::device_table::{DeviceTable, Placement},
            devices::timer::TimerEntry,
        };
        let car = PointKey::new("heatpump", "car_heater");
        let mut c = busy_controller();
        let mut t = DeviceTable::new(
            vec![TimerEntry {
                days: 0x7F,
                on: 360,
                off: 480,
            }],
            8,
            "Europe/Helsinki",
        );
        t.written = true;
        t.following = true;
        *c.placement_mut(&car).unwrap() = Placement::Device(t.clone());
        let json = serde_json::to_vec(&c.snapshot()).unwrap();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"runs\":\"device\""), "{text}");
        let back = Controller::restore(envelope(), parse(&json).unwrap(), T0);
        assert_eq!(back.placement(&car), Some(&Placement::Device(t)));
        // A damaged entry: placed again, the device maybe holding a table of ours.
        let damaged = text.replace("\"off\":480", "\"off\":5000");
        let back = Controller::restore(envelope(), parse(damaged.as_bytes()).unwrap(), T0);
        assert_eq!(
            back.placement(&car),
            Some(&Placement::Undecided { old_table: true })
        );
    }

    #[test]
    fn a_missing_file_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(&dir.path().join("none.json")), Snapshot::default());
    }

    #[test]
    fn a_corrupt_file_starts_empty_and_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent-control.json");
        fs::write(&path, b"{\"version\":1,\"points\":[{\"device\":").unwrap();
        assert_eq!(load(&path), Snapshot::default());
        assert!(!path.exists());
        assert!(dir.path().join("agent-control.json.corrupt").exists());
        // And an unknown version is not guessed at.
        fs::write(&path, b"{\"version\":99}").unwrap();
        assert_eq!(load(&path), Snapshot::default());
        // A controller restored from nothing has nothing pending.
        let c = Controller::restore(envelope(), load(&path), T0);
        assert_eq!(c.next_deadline(T0), None);
    }

    #[test]
    fn stored_entries_the_envelope_no_longer_has_are_dropped() {
        let mut snap = busy_controller().snapshot();
        snap.points[0].device = "gone".into();
        snap.actions[0].name = "gone".into();
        let c = Controller::restore(envelope(), snap, T0);
        assert!(c.snapshot().actions.is_empty());
        assert_eq!(c.snapshot().points.len(), 3);
    }

    #[test]
    fn write_times_in_the_future_are_not_trusted() {
        // A damaged file (or a clock set back) must not eat the budget forever
        // nor overflow when the agent says when room comes back.
        let mut snap = busy_controller().snapshot();
        let far = time::macros::datetime!(9999-12-31 23:00 UTC).unix_timestamp();
        for p in &mut snap.points {
            p.write_times = vec![far; 30];
            p.changes = vec![(far, 1.0)];
        }
        let c = Controller::restore(envelope(), snap, T0);
        assert_eq!(
            c.writes_in_last_day(&PointKey::new("heatpump", "dhw_setpoint"), T0),
            0
        );
    }

    #[test]
    fn the_file_is_plain_json_a_person_can_read() {
        let text = serde_json::to_string(&busy_controller().snapshot()).unwrap();
        assert!(text.contains("\"name\":\"boost_dhw\""), "{text}");
        assert!(
            text.contains("\"until\":\"2026-01-15T11:00:00Z\""),
            "{text}"
        );
        assert!(text.contains("\"time_zone\":\"Europe/Helsinki\""), "{text}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            if let Ok(s) = parse(&bytes) {
                let _ = Controller::restore(envelope(), s, T0);
            }
        }

        #[test]
        fn arbitrary_json_snapshots_never_panic_on_restore(
            applied in proptest::option::of(proptest::num::f64::ANY),
            // Any i64, and valid times up to the year 9999 (future ones must not be trusted).
            write_times in proptest::collection::vec(
                proptest::prop_oneof![proptest::num::i64::ANY, 0i64..253_402_300_799], 0..5),
            changes in proptest::collection::vec(
                (proptest::prop_oneof![proptest::num::i64::ANY, 0i64..253_402_300_799], proptest::num::f64::ANY), 0..5),
            until_s in -100_000_000_000i64..100_000_000_000,
        ) {
            let mut snap = busy_controller().snapshot();
            for p in &mut snap.points {
                p.applied = applied;
                p.write_times = write_times.clone();
                p.changes = changes.clone();
            }
            if let Ok(t) = time::OffsetDateTime::from_unix_timestamp(until_s) {
                snap.actions[0].run.until = t;
            }
            let mut c = Controller::restore(envelope(), snap, T0);
            let _ = c.due_writes(T0);
            let _ = c.next_deadline(T0);
            let _ = c.control_states(T0);
            for request in [
                ControlRequest::Set {
                    device: "heatpump".into(),
                    point: "dhw_setpoint".into(),
                    value: 50.0,
                    until: None,
                },
                ControlRequest::StartAction { action: "boost_dhw".into(), duration_s: 60 },
            ] {
                let _ = c.decide(&command(request), T0);
            }
            let _ = c.expire(T0 + time::Duration::days(1));
        }
    }
}
