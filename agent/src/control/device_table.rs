//! Schedules run in the devices' own clock tables (pure).
//!
//! Issue 5 asks for schedules to be "executed there (clock tables in the
//! device where the device has them, such as POP boards; otherwise by the
//! agent)": a table in the device keeps switching with the agent, the server
//! and the internet all gone. This module decides, per scheduled point,
//! where its schedule runs ([`Placement`]), turns a schedule into a device's
//! table ([`pack`]) and says in words what runs it ([`note`]). The I/O
//! (writing and checking tables, keeping device clocks right) is
//! [`super::device_keeper`]'s; who wins per point stays
//! [`super::Controller`]'s.
//!
//! # Packing
//!
//! A schedule fits a device table when it is for an **output** (a setpoint
//! has no table), switches between **1 inside its periods and 0 outside**,
//! and its weekly periods need no more entries than the table has
//! ([`crate::devices::timer::TimerCaps::slots`]). Otherwise the agent runs
//! it, as it does for devices without tables, and the control state says why
//! ("run by the agent: the schedule needs 11 entries, the device's table
//! holds 8").
//!
//! A [`TimerEntry`] is a day mask with an on and an off minute; an off time
//! before the on time runs past midnight into the next day; equal on and off
//! times are never on. So:
//!
//! - periods of one day that touch (06:00–08:00, 08:00–10:00) are one;
//! - a period ending at midnight (1440) is an entry with off 00:00, which
//!   ends exactly at midnight;
//! - a period ending at midnight followed by one starting at midnight the
//!   next day (22:00–24:00 Monday, 00:00–06:00 Tuesday) is one overnight
//!   entry (Monday 22:00–06:00) when that needs fewer entries in all;
//! - a **whole day** (00:00–24:00) is two entries, 00:00–12:00 and
//!   12:00–00:00: one entry cannot be on for 24 hours (its on and off times
//!   would be equal, which means never); represented exactly, not refused;
//! - entries with the same times on several days are one entry with those
//!   days in its mask.
//!
//! The result switches the output exactly as the schedule's weekly days do,
//! minute for minute, on the device's wall clock (a property test checks
//! every minute of the week). Exception days and the fall-back night are
//! dates a weekly table cannot express: the agent switches the output by hand
//! on those local dates and hands it back to the table when they end
//! ([`super::Schedule::by_hand`]).

use std::{collections::BTreeMap, fmt};

use protocol::{ControlKind, ControlSource, Period};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Schedule, Wanted, Writable};
use crate::devices::timer::{MINUTES_PER_DAY, TimerCaps, TimerEntry};

/// Why a schedule cannot run in a device's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoFit {
    /// The device has no clock table for this point.
    NoTable,
    /// The point is a setpoint, not an output.
    NotAnOutput,
    /// It does not switch 1 inside its periods and 0 outside.
    Values {
        /// Inside.
        on: String,
        /// Outside.
        off: String,
    },
    /// More entries than the table holds.
    TooMany {
        /// Entries the weekly periods need.
        needed: usize,
        /// Entries the table holds.
        slots: u8,
    },
    /// The device's clock already keeps another zone's time for another
    /// schedule.
    OtherZone {
        /// The point whose schedule set the clock's zone.
        other: String,
        /// Its zone.
        zone: String,
        /// This schedule's zone.
        ours: String,
    },
}

impl fmt::Display for NoFit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoFit::NoTable => f.write_str("the device has no clock table of its own for it"),
            NoFit::NotAnOutput => {
                f.write_str("a device's clock table switches outputs, not setpoints")
            }
            NoFit::Values { on, off } => write!(
                f,
                "the schedule sets {on} inside its periods and {off} outside; a device's clock table switches an output on (1) inside them and off (0) outside"
            ),
            NoFit::TooMany { needed, slots } => write!(
                f,
                "the schedule needs {needed} entries, the device's table holds {slots}"
            ),
            NoFit::OtherZone { other, zone, ours } => write!(
                f,
                "the device's clock keeps {zone} time for the schedule of `{other}`; this schedule is in {ours}"
            ),
        }
    }
}

/// Where a point's schedule runs. Kept in the control state file, so after
/// a restart the agent knows what it put into which device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "runs", rename_all = "snake_case")]
pub enum Placement {
    /// A new schedule, not placed yet (the device is asked first).
    Undecided {
        /// The device may hold a table of ours from the previous schedule.
        #[serde(default)]
        old_table: bool,
    },
    /// The agent switches the point itself, on its own clock.
    Agent {
        /// Why not the device.
        why: String,
        /// The device still holds a table of ours from an earlier schedule:
        /// it is cleared, so that nothing runs there that the agent does not
        /// stand behind (a hand at the keypad giving the output back to its
        /// table must not revive an old schedule).
        #[serde(default)]
        clear_table: bool,
    },
    /// In the device's own clock table.
    Device(DeviceTable),
}

impl Default for Placement {
    fn default() -> Self {
        Placement::Undecided { old_table: false }
    }
}

impl Placement {
    /// The device may hold a table the agent wrote.
    pub fn holds_table(&self) -> bool {
        match self {
            Placement::Undecided { old_table } => *old_table,
            Placement::Agent { clear_table, .. } => *clear_table,
            // A failed write may have written some slots.
            Placement::Device(t) => t.written || t.problem.is_some(),
        }
    }

    /// The device table, when the schedule runs there.
    pub fn device(&self) -> Option<&DeviceTable> {
        match self {
            Placement::Device(t) => Some(t),
            _ => None,
        }
    }
}

/// A schedule placed in a device's table, and what the agent knows of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceTable {
    /// The entries the table must hold ([`pack`]ed, sorted).
    pub entries: Vec<TimerEntry>,
    /// Entries the table holds at most.
    pub slots: u8,
    /// The zone the device's clock keeps (the schedule's).
    pub zone: String,
    /// The device holds `entries` (written and read back, or found there).
    #[serde(default)]
    pub written: bool,
    /// The output follows its table (handed back and read back). Any write
    /// by hand clears it.
    #[serde(default)]
    pub following: bool,
    /// The table was found changed at the device (a keypad): what it holds.
    /// The agent leaves it be and stops claiming the schedule; a new
    /// schedule rewrites it.
    #[serde(default)]
    pub changed_at_device: Option<String>,
    /// Why the last write of the table failed.
    #[serde(default)]
    pub problem: Option<String>,
    /// The device refused the table: not tried again until the schedule
    /// changes; the agent runs it.
    #[serde(default)]
    pub gave_up: bool,
    /// The device's clock is wrong and could not be set: the agent runs the
    /// schedule until it can.
    #[serde(default)]
    pub clock_problem: Option<String>,
}

impl DeviceTable {
    /// A table to write: nothing known of the device yet.
    pub fn new(entries: Vec<TimerEntry>, slots: u8, zone: &str) -> Self {
        DeviceTable {
            entries,
            slots,
            zone: zone.to_owned(),
            written: false,
            following: false,
            changed_at_device: None,
            problem: None,
            gave_up: false,
            clock_problem: None,
        }
    }

    /// The table switches the output (written, on a right clock).
    pub fn runs(&self) -> bool {
        self.written && self.clock_problem.is_none()
    }

    /// Still to be written (not refused).
    pub fn to_write(&self) -> bool {
        !self.written && !self.gave_up
    }
}

/// One day's periods with touching ones joined: `(start, end)` minutes.
fn joined(periods: &[Period]) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    for p in periods {
        match out.last_mut() {
            Some(last) if last.1 >= p.start_min => last.1 = last.1.max(p.end_min),
            _ => out.push((p.start_min, p.end_min)),
        }
    }
    out
}

/// Table entries (day, on, off) for the week, overnight pairs joined when
/// `fuse`.
fn items(days: &[Vec<(u16, u16)>], fuse: bool) -> Vec<(u8, u16, u16)> {
    let mut days: Vec<Vec<(u16, u16)>> = days.to_vec();
    let mut out = Vec::new();
    if fuse {
        for d in 0..7 {
            let next = (d + 1) % 7;
            let evening = days[d].last().copied();
            let morning = days[next].first().copied();
            if let (Some((s, MINUTES_PER_DAY)), Some((0, e))) = (evening, morning)
                && s > 0
                && e < s
            {
                out.push((d as u8, s, e));
                days[d].pop();
                days[next].remove(0);
            }
        }
    }
    for (d, periods) in days.iter().enumerate() {
        for &(s, e) in periods {
            let d = d as u8;
            if s == 0 && e == MINUTES_PER_DAY {
                out.push((d, 0, MINUTES_PER_DAY / 2));
                out.push((d, MINUTES_PER_DAY / 2, 0));
            } else {
                out.push((d, s, e % MINUTES_PER_DAY));
            }
        }
    }
    out
}

/// Entries with the same times joined into one day mask, sorted.
fn grouped(items: &[(u8, u16, u16)]) -> Vec<TimerEntry> {
    let mut masks: BTreeMap<(u16, u16), u8> = BTreeMap::new();
    for &(d, on, off) in items {
        *masks.entry((on, off)).or_default() |= 1 << d;
    }
    let mut v: Vec<TimerEntry> = masks
        .into_iter()
        .map(|((on, off), days)| TimerEntry { days, on, off })
        .collect();
    v.sort();
    v
}

/// The weekly periods of `schedule` for `writable` as the entries of a
/// device table of `slots` entries (see the module doc), or why it does not
/// fit. Exception days are not in the table.
pub fn pack(schedule: &Schedule, writable: &Writable, slots: u8) -> Result<Vec<TimerEntry>, NoFit> {
    if writable.kind != ControlKind::Output {
        return Err(NoFit::NotAnOutput);
    }
    let w = schedule.wire();
    if w.on_value != 1.0 || w.off_value != 0.0 {
        return Err(NoFit::Values {
            on: w.on_value.to_string(),
            off: w.off_value.to_string(),
        });
    }
    let days: Vec<Vec<(u16, u16)>> = w.days.iter().map(|d| joined(d)).collect();
    let plain = grouped(&items(&days, false));
    let fused = grouped(&items(&days, true));
    // Fewer entries wins; on a tie the overnight form, which reads as a
    // person would set it at the keypad.
    let best = if fused.len() <= plain.len() {
        fused
    } else {
        plain
    };
    if best.len() > usize::from(slots) {
        return Err(NoFit::TooMany {
            needed: best.len(),
            slots,
        });
    }
    Ok(best)
}

/// Where a new schedule runs: in the device's table when the device has one
/// (`caps`) and [`pack`] fits it, and no other schedule of the same device
/// keeps its clock on another zone (`zones`: other points' device-run
/// schedules on the device, as `(point, zone)`). `old_table`: the device may
/// still hold a table of ours from before.
pub fn place(
    schedule: &Schedule,
    writable: &Writable,
    caps: Option<TimerCaps>,
    zones: &[(String, String)],
    old_table: bool,
) -> Placement {
    let agent = |why: NoFit| Placement::Agent {
        why: why.to_string(),
        clear_table: old_table,
    };
    let Some(caps) = caps else {
        return agent(NoFit::NoTable);
    };
    if let Some((other, zone)) = zones.iter().find(|(_, z)| z != schedule.zone_name()) {
        return agent(NoFit::OtherZone {
            other: other.clone(),
            zone: zone.clone(),
            ours: schedule.zone_name().to_owned(),
        });
    }
    match pack(schedule, writable, caps.slots) {
        Ok(entries) => {
            Placement::Device(DeviceTable::new(entries, caps.slots, schedule.zone_name()))
        }
        Err(why) => agent(why),
    }
}

/// `Mon–Fri 06:00–08:00, Sat, Sun 09:00–10:00` (or `nothing`).
pub fn describe(entries: &[TimerEntry]) -> String {
    let v: Vec<String> = entries
        .iter()
        .filter(|e| !e.is_empty())
        .map(TimerEntry::describe)
        .collect();
    if v.is_empty() {
        "nothing".into()
    } else {
        v.join(", ")
    }
}

/// What a person should know about who switches a scheduled point, for the
/// control state's note; `None` when nothing needs saying. `wanted` is the
/// controller's answer for the point at `now`.
pub fn note(
    placement: &Placement,
    schedule: &Schedule,
    wanted: &Wanted,
    now: OffsetDateTime,
) -> Option<String> {
    let table = placement.device().filter(|t| t.runs());
    match wanted.source {
        ControlSource::Manual | ControlSource::Action => table
            .map(|_| "by hand; at the end the device's own clock table takes over again".into()),
        ControlSource::Schedule | ControlSource::Clamped => Some(match placement {
            Placement::Undecided { .. } => {
                "run by the agent while it asks whether the device can run it".into()
            }
            Placement::Agent { why, .. } => format!("run by the agent: {why}"),
            Placement::Device(t) => {
                if let Some(found) = &t.changed_at_device
                    && t.written
                {
                    return Some(format!(
                        "the device's clock table was changed at the device (it holds {found}); \
                         the agent leaves it be and the schedule does not run as sent; send the \
                         schedule again to restore it"
                    ));
                }
                if let Some(why) = &t.clock_problem {
                    format!("run by the agent: {why}")
                } else if t.gave_up {
                    format!(
                        "run by the agent: the device did not take the clock table ({})",
                        t.problem.as_deref().unwrap_or("refused")
                    )
                } else if !t.written {
                    format!(
                        "run by the agent until the device's clock table is written{}",
                        t.problem
                            .as_deref()
                            .map(|p| format!(" (last try: {p})"))
                            .unwrap_or_default()
                    )
                } else if let Some(day) = schedule.by_hand(now) {
                    format!(
                        "{}: switched by the agent until midnight, then by the device's own clock table again",
                        day.why
                    )
                } else {
                    format!(
                        "switched by the device's own clock table ({} of {} entries: {})",
                        t.entries.len(),
                        t.slots,
                        describe(&t.entries)
                    )
                }
            }
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use protocol::{ExceptionDay, WeeklySchedule};
    use time::macros::{date, datetime};

    use super::*;
    use crate::control::PointKey;

    fn output() -> Writable {
        Writable {
            key: PointKey::new("board1", "output_1"),
            kind: ControlKind::Output,
            min: 0.0,
            max: 1.0,
            step: 1.0,
            max_change_per_hour: None,
            max_override: Duration::from_secs(3600),
            daily_write_cap: None,
            schedulable: true,
            value_when_idle: None,
            echo: None,
        }
    }

    fn p(start_min: u16, end_min: u16) -> Period {
        Period { start_min, end_min }
    }

    fn week(days: [Vec<Period>; 7]) -> WeeklySchedule {
        WeeklySchedule {
            time_zone: "Europe/Helsinki".into(),
            on_value: 1.0,
            off_value: 0.0,
            days: days.to_vec(),
            exceptions: vec![],
        }
    }

    fn schedule(w: &WeeklySchedule) -> Schedule {
        Schedule::validate(w, &output()).unwrap()
    }

    fn packed(w: &WeeklySchedule) -> Vec<TimerEntry> {
        pack(&schedule(w), &output(), 8).unwrap()
    }

    fn e(days: u8, on: u16, off: u16) -> TimerEntry {
        TimerEntry { days, on, off }
    }

    const H: u16 = 60;

    #[test]
    fn identical_days_are_one_entry_with_a_day_mask() {
        let wd = vec![p(6 * H, 8 * H), p(17 * H, 22 * H)];
        let we = vec![p(9 * H, 23 * H)];
        let w = week([
            wd.clone(),
            wd.clone(),
            wd.clone(),
            wd.clone(),
            wd,
            we.clone(),
            we,
        ]);
        assert_eq!(
            packed(&w),
            [
                e(0x1F, 6 * H, 8 * H),
                e(0x1F, 17 * H, 22 * H),
                e(0x60, 9 * H, 23 * H)
            ]
        );
    }

    #[test]
    fn a_period_until_midnight_ends_at_off_0000() {
        let mut days: [Vec<Period>; 7] = Default::default();
        days[2] = vec![p(20 * H, 1440)];
        assert_eq!(packed(&week(days)), [e(1 << 2, 20 * H, 0)]);
    }

    #[test]
    fn an_overnight_period_is_one_entry_past_midnight() {
        // Friday 22:00-24:00 and Saturday 00:00-06:00: Friday 22:00 -> 06:00.
        let mut days: [Vec<Period>; 7] = Default::default();
        days[4] = vec![p(22 * H, 1440)];
        days[5] = vec![p(0, 6 * H)];
        assert_eq!(packed(&week(days)), [e(1 << 4, 22 * H, 6 * H)]);
        // Every night: one entry for the whole week.
        let w = week(std::array::from_fn(|_| vec![p(0, 6 * H), p(22 * H, 1440)]));
        assert_eq!(packed(&w), [e(0x7F, 22 * H, 6 * H)]);
        // An evening until midnight and a morning later than it started do
        // not make an overnight entry (it would be a same-day one).
        let mut days: [Vec<Period>; 7] = Default::default();
        days[0] = vec![p(10 * H, 1440)];
        days[1] = vec![p(0, 12 * H)];
        let t = packed(&week(days));
        assert_eq!(t, [e(1, 10 * H, 0), e(2, 0, 12 * H)]);
    }

    #[test]
    fn a_whole_day_is_two_entries_and_touching_periods_are_joined() {
        let mut days: [Vec<Period>; 7] = Default::default();
        days[6] = vec![p(0, 12 * H), p(12 * H, 1440)];
        days[0] = vec![p(6 * H, 7 * H), p(7 * H, 8 * H)];
        assert_eq!(
            packed(&week(days)),
            [
                e(1, 6 * H, 8 * H),
                e(1 << 6, 0, 12 * H),
                e(1 << 6, 12 * H, 0)
            ]
        );
        // Always on: the same two entries every day.
        let w = week(std::array::from_fn(|_| vec![p(0, 1440)]));
        assert_eq!(packed(&w), [e(0x7F, 0, 12 * H), e(0x7F, 12 * H, 0)]);
        // Never on: an empty table.
        assert_eq!(packed(&week(Default::default())), []);
    }

    #[test]
    fn more_entries_than_slots_do_not_fit_and_say_how_many() {
        // Nine different periods on Monday, one a day on the others.
        let mut days: [Vec<Period>; 7] = Default::default();
        days[0] = (0..8).map(|i| p(i * 100, i * 100 + 30)).collect();
        for (d, day) in days.iter_mut().enumerate().skip(1) {
            *day = vec![p(d as u16 * 10, d as u16 * 10 + 5)];
        }
        let why = pack(&schedule(&week(days)), &output(), 8).unwrap_err();
        assert_eq!(
            why,
            NoFit::TooMany {
                needed: 14,
                slots: 8
            }
        );
        assert_eq!(
            why.to_string(),
            "the schedule needs 14 entries, the device's table holds 8"
        );
    }

    #[test]
    fn inverted_values_and_setpoints_do_not_fit() {
        let mut w = week(std::array::from_fn(|_| vec![p(6 * H, 8 * H)]));
        w.on_value = 0.0;
        w.off_value = 1.0;
        let why = pack(&schedule(&w), &output(), 8).unwrap_err();
        assert!(
            why.to_string()
                .contains("sets 0 inside its periods and 1 outside")
        );
        let setpoint = Writable {
            kind: ControlKind::Setpoint,
            min: 15.0,
            max: 25.0,
            step: 0.5,
            ..output()
        };
        w.on_value = 21.0;
        w.off_value = 18.0;
        let s = Schedule::validate(&w, &setpoint).unwrap();
        assert_eq!(pack(&s, &setpoint, 8), Err(NoFit::NotAnOutput));
    }

    #[test]
    fn placement_falls_back_to_the_agent_and_says_why() {
        let w = week(std::array::from_fn(|_| vec![p(6 * H, 8 * H)]));
        let s = schedule(&w);
        let caps = Some(TimerCaps { slots: 8 });
        let Placement::Device(t) = place(&s, &output(), caps, &[], false) else {
            panic!()
        };
        assert_eq!(t.entries, [e(0x7F, 6 * H, 8 * H)]);
        assert!(!t.written && t.to_write());
        assert_eq!(
            place(&s, &output(), None, &[], true),
            Placement::Agent {
                why: "the device has no clock table of its own for it".into(),
                clear_table: true
            }
        );
        let zones = [("output_2".to_owned(), "Europe/Stockholm".to_owned())];
        let Placement::Agent { why, .. } = place(&s, &output(), caps, &zones, false) else {
            panic!()
        };
        assert!(why.contains("keeps Europe/Stockholm time"), "{why}");
        let zones = [("output_2".to_owned(), "Europe/Helsinki".to_owned())];
        assert!(matches!(
            place(&s, &output(), caps, &zones, false),
            Placement::Device(_)
        ));
    }

    #[test]
    fn the_note_says_who_switches_the_output() {
        let mut w = week(std::array::from_fn(|_| vec![p(6 * H, 8 * H)]));
        w.exceptions = vec![ExceptionDay {
            date: date!(2026 - 12 - 24),
            label: "holiday".into(),
            periods: vec![],
        }];
        let s = schedule(&w);
        let mut t = DeviceTable::new(vec![e(0x7F, 6 * H, 8 * H)], 8, "Europe/Helsinki");
        let wanted = Wanted {
            value: Some(0.0),
            source: ControlSource::Schedule,
            until: None,
            action: None,
            follow_table: false,
        };
        let now = datetime!(2026-12-20 12:00 UTC);
        let say =
            |t: &DeviceTable, now| note(&Placement::Device(t.clone()), &s, &wanted, now).unwrap();
        assert!(
            say(&t, now).starts_with("run by the agent until the device's clock table is written")
        );
        t.written = true;
        assert_eq!(
            say(&t, now),
            "switched by the device's own clock table (1 of 8 entries: Mon–Sun 06:00–08:00)"
        );
        assert_eq!(
            say(&t, datetime!(2026-12-24 12:00 UTC)),
            "exception day (holiday): switched by the agent until midnight, then by the device's own clock table again"
        );
        t.changed_at_device = Some("Mon–Fri 05:00–08:00".into());
        assert!(say(&t, now).contains("changed at the device (it holds Mon–Fri 05:00–08:00)"));
        let agent = Placement::Agent {
            why: "the schedule needs 11 entries, the device's table holds 8".into(),
            clear_table: false,
        };
        assert_eq!(
            note(&agent, &s, &wanted, now).unwrap(),
            "run by the agent: the schedule needs 11 entries, the device's table holds 8"
        );
    }

    proptest::proptest! {
        /// Whatever fits switches exactly as the weekly days do, every
        /// minute of the week, on the device's wall clock.
        #[test]
        fn a_packed_table_switches_exactly_as_the_weekly_periods(
            raw in proptest::collection::vec(
                proptest::collection::vec((0u16..=1440, 0u16..=1440), 0..4), 7),
        ) {
            let days: Vec<Vec<Period>> = raw
                .iter()
                .map(|d| {
                    // Turn random pairs into sorted, non-overlapping periods.
                    let mut cuts: Vec<u16> = d.iter().flat_map(|(a, b)| [*a, *b]).collect();
                    cuts.sort_unstable();
                    cuts.dedup();
                    cuts.chunks_exact(2).map(|c| p(c[0], c[1])).collect()
                })
                .collect();
            let w = WeeklySchedule { days, ..week(Default::default()) };
            let s = schedule(&w);
            if let Ok(entries) = pack(&s, &output(), 8) {
                proptest::prop_assert!(entries.len() <= 8);
                for d in 0..7u8 {
                    for m in 0..1440u16 {
                        let want = w.days[usize::from(d)]
                            .iter()
                            .any(|p| p.start_min <= m && m < p.end_min);
                        let got = entries.iter().any(|e| e.is_active(d, m));
                        proptest::prop_assert_eq!(got, want, "day {} minute {}: {:?}", d, m, entries);
                    }
                }
            }
        }
    }
}
