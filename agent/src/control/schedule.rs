//! Weekly clock tables run by the agent, in the schedule's own time zone.
//!
//! A [`protocol::WeeklySchedule`] names an IANA zone (`Europe/Helsinki`), a
//! value inside its periods and one outside, seven days of periods (Monday
//! first, local minutes `start_min..end_min`) and exception days that replace
//! a date's periods. [`Schedule::validate`] refuses a malformed one with a
//! sentence; [`Schedule::value_at`] and [`Schedule::next_edge_after`] evaluate
//! it at an instant.
//!
//! # Daylight-saving nights
//!
//! A period edge at local time `T` on date `D` happens at **the first instant
//! the wall clock of that date reads `T` or later**. A period is the real time
//! between its two edges, so it runs once and never flaps. In Europe/Helsinki:
//!
//! - Spring forward (last Sunday of March, 03:00 → 04:00): a period 02:00–04:00
//!   runs from 02:00 to the jump, one real hour; an edge inside the skipped
//!   hour (03:30) happens at the jump (04:00 on the clock); a period lying
//!   wholly inside the skipped hour does not run that night.
//! - Fall back (last Sunday of October, 04:00 → 03:00): an edge in the repeated
//!   hour happens at its first occurrence, so a period 02:00–04:00 runs three
//!   real hours (02:00 summer time to 04:00 winter time) and a period
//!   03:30–03:45 runs once, in summer time.
//!
//! The time zone comes from jiff's database: the system tzdb
//! (`/usr/share/zoneinfo`), or the copy bundled into the binary when the
//! system has none.
//!
//! # Dates a device's weekly table cannot run
//!
//! A schedule may run in a device's own weekly clock table
//! ([`super::device_table`]). Such a table repeats every week on the device's
//! wall clock, so some dates need the agent: [`Schedule::by_hand`] names
//! them, and the agent switches the point itself for that local date.
//!
//! - An **exception day** replaces the date's periods.
//! - The **fall-back night**, when a period starts or ends strictly inside
//!   the repeated hour (Helsinki: 03:00–04:00 on the last Sunday of
//!   October): a table reads the wall clock, so it would run such an edge
//!   twice, where the rule above runs it once. At spring forward a table
//!   agrees with the rule (an edge in the skipped hour happens when the clock
//!   is set forward), provided the device's clock is set at the jump
//!   ([`Schedule::next_transition_after`]).

use jiff::{
    Timestamp,
    civil::{Date, DateTime},
    tz::{AmbiguousOffset, TimeZone},
};
use protocol::{Period, WeeklySchedule};
use time::OffsetDateTime;

use super::Writable;
use crate::devices::timer::hhmm;

/// Most periods a day may have (the original keypads had six timed outputs).
pub const MAX_PERIODS_PER_DAY: usize = 8;
/// Most exception days a schedule may carry.
pub const MAX_EXCEPTION_DAYS: usize = 64;
/// Minutes in a day; a period may end at 1440 ("until midnight").
pub const MINUTES_PER_DAY: u16 = 1440;
/// [`Schedule::next_edge_after`] looks this many days ahead (two weeks: an
/// exception day can skip a weekly period); with no edge in
/// that window it returns the window's end so the caller looks again then.
pub const LOOKAHEAD_DAYS: i64 = 15;

/// A local date the agent switches by hand although the schedule runs in a
/// device's table (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct HandDay {
    /// Why, for people: `exception day (holiday)`, `daylight-saving night`.
    pub why: String,
    /// The end of the date: the next local midnight.
    pub until: OffsetDateTime,
}

/// A validated schedule, with its zone resolved and periods sorted.
#[derive(Debug, Clone)]
pub struct Schedule {
    wire: WeeklySchedule,
    tz: TimeZone,
    /// Exception dates, converted once.
    exceptions: Vec<(Date, Vec<Period>)>,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.wire == other.wire
    }
}

impl Schedule {
    /// Check `s` for `writable`: a known time zone, seven days, periods with
    /// `start < end <= 1440` that do not overlap, at most
    /// [`MAX_PERIODS_PER_DAY`] a day and [`MAX_EXCEPTION_DAYS`] exception
    /// days (unique dates), and on/off values within the writable's limits.
    /// Values are snapped to the grid and periods sorted.
    pub fn validate(s: &WeeklySchedule, writable: &Writable) -> Result<Schedule, String> {
        if s.time_zone.is_empty() || s.time_zone.len() > 64 {
            return Err(format!("unknown time zone `{}`", s.time_zone));
        }
        let tz = jiff::tz::db()
            .get(&s.time_zone)
            .map_err(|_| format!("unknown time zone `{}`", s.time_zone))?;
        if s.days.len() != 7 {
            return Err(format!(
                "a week has 7 days (Monday first), the schedule has {}",
                s.days.len()
            ));
        }
        let on_value = writable
            .check(s.on_value)
            .map_err(|e| format!("on_value: {e}"))?;
        let off_value = writable
            .check(s.off_value)
            .map_err(|e| format!("off_value: {e}"))?;
        const DAY_NAMES: [&str; 7] = [
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
            "Sunday",
        ];
        let mut days = Vec::with_capacity(7);
        for (name, periods) in DAY_NAMES.iter().zip(&s.days) {
            days.push(check_periods(name, periods)?);
        }
        if s.exceptions.len() > MAX_EXCEPTION_DAYS {
            return Err(format!(
                "{} exception days; at most {MAX_EXCEPTION_DAYS}",
                s.exceptions.len()
            ));
        }
        let mut wire_exceptions = Vec::with_capacity(s.exceptions.len());
        let mut exceptions: Vec<(Date, Vec<Period>)> = Vec::with_capacity(s.exceptions.len());
        for ex in &s.exceptions {
            let label = format!("exception day {}", ex.date);
            let periods = check_periods(&label, &ex.periods)?;
            let date = Date::new(
                i16::try_from(ex.date.year()).map_err(|_| format!("{label}: year out of range"))?,
                i8::try_from(u8::from(ex.date.month())).unwrap_or(1),
                i8::try_from(ex.date.day()).unwrap_or(1),
            )
            .map_err(|e| format!("{label}: {e}"))?;
            if exceptions.iter().any(|(d, _)| *d == date) {
                return Err(format!("{label} is listed twice"));
            }
            if ex.label.len() > 100 {
                return Err(format!("{label}: label longer than 100 characters"));
            }
            exceptions.push((date, periods.clone()));
            wire_exceptions.push(protocol::ExceptionDay {
                date: ex.date,
                label: ex.label.clone(),
                periods,
            });
        }
        Ok(Schedule {
            wire: WeeklySchedule {
                time_zone: s.time_zone.clone(),
                on_value,
                off_value,
                days,
                exceptions: wire_exceptions,
            },
            tz,
            exceptions,
        })
    }

    /// The schedule as it is on the wire (values snapped, periods sorted).
    pub fn wire(&self) -> &WeeklySchedule {
        &self.wire
    }

    /// The IANA name of its time zone.
    pub fn zone_name(&self) -> &str {
        &self.wire.time_zone
    }

    /// The local civil time at `now` in the schedule's zone (what a device's
    /// clock running this schedule should read).
    pub fn local_time(&self, now: OffsetDateTime) -> Option<time::PrimitiveDateTime> {
        local_time(&self.tz, now)
    }

    /// The date of `now` when a device's weekly table cannot run it and the
    /// agent must switch the point itself (an exception day, the fall-back
    /// night with an edge in the repeated hour), with the date's end.
    pub fn by_hand(&self, now: OffsetDateTime) -> Option<HandDay> {
        let ts = to_jiff(now)?;
        let date = ts.to_zoned(self.tz.clone()).date();
        let until = date
            .tomorrow()
            .ok()
            .and_then(|d| first_instant(&self.tz, d.at(0, 0, 0, 0)))
            .and_then(from_jiff)?;
        if let Some(i) = self.exceptions.iter().position(|(d, _)| *d == date) {
            let label = self.wire.exceptions.get(i).map_or("", |e| e.label.trim());
            let why = if label.is_empty() {
                "exception day".to_owned()
            } else {
                format!("exception day ({label})")
            };
            return Some(HandDay { why, until });
        }
        let (w0, w1) = self.fold_window(date)?;
        let inside = |m: u16| w0 < m && m < w1;
        self.periods_of(date)
            .iter()
            .any(|p| inside(p.start_min) || inside(p.end_min))
            .then(|| HandDay {
                why: format!(
                    "daylight-saving night (the clock repeats {}–{})",
                    hhmm(w0),
                    hhmm(w1)
                ),
                until,
            })
    }

    /// The repeated wall-clock minutes of `date` when its zone falls back
    /// that day: `(start, end)`, e.g. 03:00–04:00.
    fn fold_window(&self, date: Date) -> Option<(u16, u16)> {
        let start = first_instant(&self.tz, date.at(0, 0, 0, 0))?;
        let end = first_instant(&self.tz, date.tomorrow().ok()?.at(0, 0, 0, 0))?;
        let t = self.tz.following(start).next()?;
        let at = t.timestamp();
        if at >= end {
            return None;
        }
        let before = self
            .tz
            .to_offset(at.checked_sub(jiff::SignedDuration::from_secs(1)).ok()?);
        let after = t.offset();
        if after >= before {
            return None;
        }
        let minute = |dt: DateTime| {
            u16::try_from(i32::from(dt.hour()) * 60 + i32::from(dt.minute())).unwrap_or(0)
        };
        let w0 = minute(after.to_datetime(at));
        let w1 = match before.to_datetime(at) {
            // The clock reached midnight of the next date before falling back.
            dt if dt.date() != date => MINUTES_PER_DAY,
            dt => minute(dt),
        };
        Some((w0, w1))
    }

    /// The first local midnight after `now`.
    pub fn next_midnight_after(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let ts = to_jiff(now)?;
        let tomorrow = ts.to_zoned(self.tz.clone()).date().tomorrow().ok()?;
        from_jiff(first_instant(&self.tz, tomorrow.at(0, 0, 0, 0))?)
    }

    /// The zone's next change of UTC offset after `now` (daylight saving),
    /// if it has one.
    pub fn next_transition_after(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let ts = to_jiff(now)?;
        from_jiff(self.tz.following(ts).next()?.timestamp())
    }

    /// The most writes one calendar day of this schedule can cause: two per
    /// period (switch on, switch off), none when on and off values are equal.
    pub fn busiest_day_writes(&self) -> usize {
        if self.wire.on_value == self.wire.off_value {
            return 0;
        }
        self.wire
            .days
            .iter()
            .chain(self.wire.exceptions.iter().map(|e| &e.periods))
            .map(|p| 2 * p.len())
            .max()
            .unwrap_or(0)
    }

    /// The scheduled value at `now`: `on_value` inside a period, else
    /// `off_value`.
    pub fn value_at(&self, now: OffsetDateTime) -> f64 {
        if self.is_on(now) {
            self.wire.on_value
        } else {
            self.wire.off_value
        }
    }

    /// True when `now` lies inside a period.
    pub fn is_on(&self, now: OffsetDateTime) -> bool {
        let Some(ts) = to_jiff(now) else {
            return false;
        };
        let today = ts.to_zoned(self.tz.clone()).date();
        // A period belongs to its date, but with DST an instant's local date and
        // a period's real-time span need not agree near midnight: look at the
        // neighbours too.
        (-1..=1).any(|offset| {
            self.intervals(today, offset)
                .into_iter()
                .any(|(start, end)| start <= ts && ts < end)
        })
    }

    /// The first instant after `now` at which the value may change (a period
    /// edge). With no edge within [`LOOKAHEAD_DAYS`], the end of that window.
    pub fn next_edge_after(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let ts = to_jiff(now)?;
        let today = ts.to_zoned(self.tz.clone()).date();
        let mut best: Option<Timestamp> = None;
        for offset in -1..=LOOKAHEAD_DAYS {
            for (start, end) in self.intervals(today, offset) {
                for edge in [start, end] {
                    if edge > ts && best.is_none_or(|b| edge < b) {
                        best = Some(edge);
                    }
                }
            }
        }
        let fallback = today
            .checked_add(jiff::Span::new().days(LOOKAHEAD_DAYS))
            .ok()
            .and_then(|d| first_instant(&self.tz, d.at(0, 0, 0, 0)));
        from_jiff(best.or(fallback)?)
    }

    /// The periods of `today + offset` days as real-time intervals (empty
    /// ones, wholly inside a skipped hour, left out).
    fn intervals(&self, today: Date, offset: i64) -> Vec<(Timestamp, Timestamp)> {
        let Ok(date) = today.checked_add(jiff::Span::new().days(offset)) else {
            return Vec::new();
        };
        self.periods_of(date)
            .iter()
            .filter_map(|p| {
                let start = first_instant(&self.tz, at_minute(date, p.start_min)?)?;
                let end = first_instant(&self.tz, at_minute(date, p.end_min)?)?;
                (start < end).then_some((start, end))
            })
            .collect()
    }

    /// An exception day's periods, else the weekday's.
    fn periods_of(&self, date: Date) -> &[Period] {
        if let Some((_, p)) = self.exceptions.iter().find(|(d, _)| *d == date) {
            return p;
        }
        let weekday = usize::try_from(date.weekday().to_monday_zero_offset()).unwrap_or(0);
        self.wire.days.get(weekday).map_or(&[], Vec::as_slice)
    }
}

/// Sort one day's periods and check them.
fn check_periods(day: &str, periods: &[Period]) -> Result<Vec<Period>, String> {
    if periods.len() > MAX_PERIODS_PER_DAY {
        return Err(format!(
            "{day} has {} periods; at most {MAX_PERIODS_PER_DAY}",
            periods.len()
        ));
    }
    for p in periods {
        if p.start_min >= p.end_min || p.end_min > MINUTES_PER_DAY {
            return Err(format!(
                "{day}: period {}–{} must start before it ends, within 0..=1440 minutes",
                p.start_min, p.end_min
            ));
        }
    }
    let mut sorted = periods.to_vec();
    sorted.sort_by_key(|p| p.start_min);
    for pair in sorted.windows(2) {
        if let [a, b] = pair
            && a.end_min > b.start_min
        {
            return Err(format!(
                "{day}: periods {}–{} and {}–{} overlap",
                hhmm(a.start_min),
                hhmm(a.end_min),
                hhmm(b.start_min),
                hhmm(b.end_min)
            ));
        }
    }
    Ok(sorted)
}

/// Local date-time of minute `min` (0..=1440) of `date`; 1440 is the next
/// day's midnight.
fn at_minute(date: Date, min: u16) -> Option<DateTime> {
    if min >= MINUTES_PER_DAY {
        return date.tomorrow().ok().map(|d| d.at(0, 0, 0, 0));
    }
    let hour = i8::try_from(min / 60).ok()?;
    let minute = i8::try_from(min % 60).ok()?;
    Some(date.at(hour, minute, 0, 0))
}

/// The first instant at which the wall clock of `tz` reads `dt` or later: the
/// instant itself; in a repeated hour its first occurrence; in a skipped hour
/// the jump.
fn first_instant(tz: &TimeZone, dt: DateTime) -> Option<Timestamp> {
    match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok(),
        // `before` is the offset in force before the fall back (summer time):
        // with it the wall time comes first.
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(dt).ok(),
        // Read with the later offset the wall time lies before the jump; the
        // next transition after that is the jump itself.
        AmbiguousOffset::Gap { after, .. } => {
            let early = after.to_timestamp(dt).ok()?;
            tz.following(early).next().map(|t| t.timestamp())
        }
    }
}

/// The local civil time of `tz` at `now`.
pub(crate) fn local_time(tz: &TimeZone, now: OffsetDateTime) -> Option<time::PrimitiveDateTime> {
    let dt = tz.to_datetime(to_jiff(now)?);
    let month = time::Month::try_from(u8::try_from(dt.month()).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::from(dt.year()), month, u8::try_from(dt.day()).ok()?)
            .ok()?;
    let t = time::Time::from_hms(
        u8::try_from(dt.hour()).ok()?,
        u8::try_from(dt.minute()).ok()?,
        u8::try_from(dt.second()).ok()?,
    )
    .ok()?;
    Some(time::PrimitiveDateTime::new(date, t))
}

/// `time` → jiff, `None` out of jiff's range.
pub(crate) fn to_jiff(t: OffsetDateTime) -> Option<Timestamp> {
    Timestamp::from_nanosecond(t.unix_timestamp_nanos()).ok()
}

/// jiff → `time` (UTC).
pub(crate) fn from_jiff(t: Timestamp) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(t.as_nanosecond()).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use protocol::{ControlKind, ExceptionDay};
    use time::macros::{date, datetime};

    use super::*;
    use crate::control::PointKey;

    pub(crate) fn output() -> Writable {
        Writable {
            key: PointKey::new("heatpump", "car_heater"),
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

    fn every_day(periods: Vec<Period>) -> WeeklySchedule {
        WeeklySchedule {
            time_zone: "Europe/Helsinki".into(),
            on_value: 1.0,
            off_value: 0.0,
            days: vec![periods; 7],
            exceptions: vec![],
        }
    }

    fn valid(s: &WeeklySchedule) -> Schedule {
        Schedule::validate(s, &output()).unwrap()
    }

    fn refused(s: &WeeklySchedule) -> String {
        Schedule::validate(s, &output()).unwrap_err()
    }

    #[test]
    fn a_period_switches_at_its_local_minutes_in_winter_and_summer() {
        let s = valid(&every_day(vec![p(6 * 60, 8 * 60)]));
        // January: UTC+2. 06:00 local = 04:00 UTC.
        assert!(!s.is_on(datetime!(2026-01-15 03:59:59 UTC)));
        assert!(s.is_on(datetime!(2026-01-15 04:00 UTC)));
        assert!(s.is_on(datetime!(2026-01-15 05:59:59 UTC)));
        assert!(!s.is_on(datetime!(2026-01-15 06:00 UTC)));
        // July: UTC+3. 06:00 local = 03:00 UTC.
        assert!(s.is_on(datetime!(2026-07-15 03:00 UTC)));
        assert!(!s.is_on(datetime!(2026-07-15 05:00 UTC)));
        assert_eq!(
            s.next_edge_after(datetime!(2026-01-15 12:00 UTC)),
            Some(datetime!(2026-01-16 04:00 UTC))
        );
    }

    // Regression guard for the documented DST rule, spring forward: Helsinki
    // jumps from 03:00 EET (01:00 UTC) to 04:00 EEST on 2026-03-29.
    #[test]
    fn spring_forward_a_period_0200_0400_runs_one_real_hour() {
        let s = valid(&every_day(vec![p(120, 240)]));
        // 02:00 EET = 00:00 UTC.
        assert_eq!(
            s.next_edge_after(datetime!(2026-03-28 22:00 UTC)),
            Some(datetime!(2026-03-29 00:00 UTC))
        );
        assert!(!s.is_on(datetime!(2026-03-28 23:59 UTC)));
        assert!(s.is_on(datetime!(2026-03-29 00:00 UTC)));
        assert!(s.is_on(datetime!(2026-03-29 00:59:59 UTC)));
        // The clock jumps to 04:00: the period's end.
        assert_eq!(
            s.next_edge_after(datetime!(2026-03-29 00:00 UTC)),
            Some(datetime!(2026-03-29 01:00 UTC))
        );
        assert!(!s.is_on(datetime!(2026-03-29 01:00 UTC)));
        // The next night is normal summer time: 02:00 EEST = 23:00 UTC.
        assert_eq!(
            s.next_edge_after(datetime!(2026-03-29 01:00 UTC)),
            Some(datetime!(2026-03-29 23:00 UTC))
        );
    }

    #[test]
    fn spring_forward_an_edge_in_the_skipped_hour_happens_at_the_jump() {
        // 03:30–05:00: starts when the clock jumps to 04:00 (01:00 UTC).
        let s = valid(&every_day(vec![p(210, 300)]));
        assert!(!s.is_on(datetime!(2026-03-29 00:59 UTC)));
        assert_eq!(
            s.next_edge_after(datetime!(2026-03-29 00:30 UTC)),
            Some(datetime!(2026-03-29 01:00 UTC))
        );
        assert!(s.is_on(datetime!(2026-03-29 01:00 UTC)));
        // 05:00 EEST = 02:00 UTC.
        assert!(!s.is_on(datetime!(2026-03-29 02:00 UTC)));
        // 03:15–03:45 lies wholly in the skipped hour: it does not run that night,
        // and runs the night after (03:15 EEST = 00:15 UTC).
        let s = valid(&every_day(vec![p(195, 225)]));
        assert!(
            !(0..180)
                .any(|m| s.is_on(datetime!(2026-03-29 00:00 UTC) + time::Duration::minutes(m)))
        );
        assert_eq!(
            s.next_edge_after(datetime!(2026-03-28 23:00 UTC)),
            Some(datetime!(2026-03-30 00:15 UTC))
        );
    }

    // Fall back: Helsinki goes from 04:00 EEST (01:00 UTC) back to 03:00 EET on
    // 2026-10-25; 03:00–03:59 happens twice.
    #[test]
    fn fall_back_a_period_0200_0400_runs_three_real_hours_without_flapping() {
        let s = valid(&every_day(vec![p(120, 240)]));
        // 02:00 EEST = 23:00 UTC the day before.
        assert!(!s.is_on(datetime!(2026-10-24 22:59 UTC)));
        assert!(s.is_on(datetime!(2026-10-24 23:00 UTC)));
        // Through both 03:xx hours (00:00–00:59 UTC EEST, 01:00–01:59 UTC EET).
        for m in 0..180 {
            assert!(
                s.is_on(datetime!(2026-10-24 23:00 UTC) + time::Duration::minutes(m)),
                "minute {m}"
            );
        }
        // 04:00 EET = 02:00 UTC.
        assert!(!s.is_on(datetime!(2026-10-25 02:00 UTC)));
        assert_eq!(
            s.next_edge_after(datetime!(2026-10-24 23:00 UTC)),
            Some(datetime!(2026-10-25 02:00 UTC))
        );
    }

    #[test]
    fn fall_back_a_period_in_the_repeated_hour_runs_once() {
        // 03:30–03:45 runs in summer time only (00:30–00:45 UTC), not again at
        // 03:30 EET (01:30 UTC).
        let s = valid(&every_day(vec![p(210, 225)]));
        assert!(s.is_on(datetime!(2026-10-25 00:30 UTC)));
        assert!(!s.is_on(datetime!(2026-10-25 00:45 UTC)));
        assert!(!s.is_on(datetime!(2026-10-25 01:30 UTC)));
        assert_eq!(
            s.next_edge_after(datetime!(2026-10-25 00:45 UTC)),
            // The next night, 03:30 EET = 01:30 UTC on the 26th.
            Some(datetime!(2026-10-26 01:30 UTC))
        );
        // 03:30–05:00 on the fall-back night stays on across the repeat.
        let s = valid(&every_day(vec![p(210, 300)]));
        for m in 0..150 {
            assert!(
                s.is_on(datetime!(2026-10-25 00:30 UTC) + time::Duration::minutes(m)),
                "minute {m}"
            );
        }
        assert!(!s.is_on(datetime!(2026-10-25 03:00 UTC)));
    }

    #[test]
    fn weekdays_are_monday_first_and_exception_days_replace_the_plan() {
        let mut w = every_day(vec![]);
        // Saturday only, 10:00–12:00.
        w.days[5] = vec![p(600, 720)];
        w.exceptions = vec![
            // Saturday 2026-12-26: away, nothing.
            ExceptionDay {
                date: date!(2026 - 12 - 26),
                label: "away".into(),
                periods: vec![],
            },
            // Thursday 2026-12-24: holiday, 08:00–09:00.
            ExceptionDay {
                date: date!(2026 - 12 - 24),
                label: "holiday".into(),
                periods: vec![p(480, 540)],
            },
        ];
        let s = valid(&w);
        // Saturday 2026-12-19 11:00 EET = 09:00 UTC.
        assert!(s.is_on(datetime!(2026-12-19 09:00 UTC)));
        assert!(!s.is_on(datetime!(2026-12-18 09:00 UTC)));
        assert!(!s.is_on(datetime!(2026-12-26 09:00 UTC)));
        assert!(s.is_on(datetime!(2026-12-24 06:30 UTC)));
        // From Wednesday evening: the holiday morning comes first, then not the
        // Saturday of the away day, but the Saturday after.
        let mut t = datetime!(2026-12-23 18:00 UTC);
        let mut edges = vec![];
        for _ in 0..4 {
            t = s.next_edge_after(t).unwrap();
            edges.push(t);
        }
        assert_eq!(
            edges,
            vec![
                datetime!(2026-12-24 06:00 UTC),
                datetime!(2026-12-24 07:00 UTC),
                datetime!(2027-01-02 08:00 UTC),
                datetime!(2027-01-02 10:00 UTC),
            ]
        );
    }

    #[test]
    fn a_schedule_without_edges_asks_to_be_looked_at_again_within_the_window() {
        let s = valid(&every_day(vec![]));
        let now = datetime!(2026-01-15 12:00 UTC);
        let next = s.next_edge_after(now).unwrap();
        assert!(next > now && next <= now + time::Duration::days(LOOKAHEAD_DAYS + 1));
        assert!(!s.is_on(now));
    }

    #[test]
    fn a_period_until_midnight_ends_at_the_next_days_start() {
        let s = valid(&every_day(vec![p(22 * 60, 1440)]));
        // 22:00 EET = 20:00 UTC; midnight = 22:00 UTC.
        assert!(s.is_on(datetime!(2026-01-15 21:59 UTC)));
        assert!(!s.is_on(datetime!(2026-01-15 22:00 UTC)));
    }

    #[test]
    fn malformed_schedules_are_refused_with_a_reason() {
        let ok = every_day(vec![p(60, 120)]);
        let mut s = ok.clone();
        s.time_zone = "Europe/Helsinky".into();
        assert!(refused(&s).contains("unknown time zone `Europe/Helsinky`"));
        let mut s = ok.clone();
        s.days.pop();
        assert!(refused(&s).contains("7 days"));
        let mut s = ok.clone();
        s.days[2] = vec![p(120, 120)];
        assert!(refused(&s).contains("Wednesday"));
        let mut s = ok.clone();
        s.days[0] = vec![p(1400, 1441)];
        assert!(refused(&s).contains("1440"));
        let mut s = ok.clone();
        s.days[0] = vec![p(600, 700), p(360, 480), p(450, 500)];
        let why = refused(&s);
        assert!(why.contains("06:00–08:00 and 07:30–08:20 overlap"), "{why}");
        let mut s = ok.clone();
        s.days[0] = (0..9).map(|i| p(i * 100, i * 100 + 50)).collect();
        assert!(refused(&s).contains("at most 8"));
        let mut s = ok.clone();
        s.on_value = 2.0;
        assert!(refused(&s).starts_with("on_value:"));
        let mut s = ok.clone();
        s.off_value = f64::NAN;
        assert!(refused(&s).starts_with("off_value:"));
        let mut s = ok.clone();
        let day = ExceptionDay {
            date: date!(2026 - 12 - 24),
            label: "x".into(),
            periods: vec![],
        };
        s.exceptions = vec![day.clone(), day.clone()];
        assert!(refused(&s).contains("twice"));
        s.exceptions = vec![day; MAX_EXCEPTION_DAYS + 1];
        assert!(refused(&s).contains("at most 64"));
    }

    #[test]
    fn exception_days_and_the_fall_back_night_with_an_edge_in_the_repeat_are_by_hand() {
        let mut w = every_day(vec![p(6 * 60, 8 * 60)]);
        w.exceptions = vec![ExceptionDay {
            date: date!(2026 - 12 - 24),
            label: "holiday".into(),
            periods: vec![],
        }];
        let s = valid(&w);
        // 2026-12-24 00:00 EET = 12-23 22:00 UTC; the date ends 12-24 22:00 UTC.
        assert_eq!(s.by_hand(datetime!(2026-12-23 21:59 UTC)), None);
        let h = s.by_hand(datetime!(2026-12-23 22:00 UTC)).unwrap();
        assert_eq!(h.why, "exception day (holiday)");
        assert_eq!(h.until, datetime!(2026-12-24 22:00 UTC));
        assert_eq!(s.by_hand(datetime!(2026-12-24 22:00 UTC)), None);
        // 06:00–08:00 has no edge in 03:00–04:00: the fall-back night is the
        // table's like any other.
        assert_eq!(s.by_hand(datetime!(2026-10-25 00:30 UTC)), None);
        // 03:30–03:45 would run twice on a wall clock: that night is by hand.
        let s = valid(&every_day(vec![p(210, 225)]));
        let h = s.by_hand(datetime!(2026-10-25 00:30 UTC)).unwrap();
        assert_eq!(
            h.why,
            "daylight-saving night (the clock repeats 03:00–04:00)"
        );
        // The date ends at midnight EET = 22:00 UTC.
        assert_eq!(h.until, datetime!(2026-10-25 22:00 UTC));
        assert_eq!(s.by_hand(datetime!(2026-10-24 12:00 UTC)), None);
        // An edge on the window's boundary runs once either way.
        let s = valid(&every_day(vec![p(120, 180), p(240, 300)]));
        assert_eq!(s.by_hand(datetime!(2026-10-25 00:30 UTC)), None);
        // Spring forward needs nothing: the edge happens at the jump.
        let s = valid(&every_day(vec![p(210, 225)]));
        assert_eq!(s.by_hand(datetime!(2026-03-29 00:30 UTC)), None);
    }

    #[test]
    fn local_time_midnights_and_transitions_are_in_the_schedules_zone() {
        let s = valid(&every_day(vec![]));
        assert_eq!(
            s.local_time(datetime!(2026-03-29 00:59:59 UTC)),
            Some(time::macros::datetime!(2026-03-29 02:59:59))
        );
        assert_eq!(
            s.local_time(datetime!(2026-03-29 01:00 UTC)),
            Some(time::macros::datetime!(2026-03-29 04:00))
        );
        assert_eq!(
            s.next_transition_after(datetime!(2026-01-15 12:00 UTC)),
            Some(datetime!(2026-03-29 01:00 UTC))
        );
        assert_eq!(
            s.next_transition_after(datetime!(2026-03-29 01:00 UTC)),
            Some(datetime!(2026-10-25 01:00 UTC))
        );
        assert_eq!(
            s.next_midnight_after(datetime!(2026-01-15 12:00 UTC)),
            Some(datetime!(2026-01-15 22:00 UTC))
        );
        assert_eq!(
            s.next_midnight_after(datetime!(2026-07-15 21:00 UTC)),
            Some(datetime!(2026-07-16 21:00 UTC))
        );
    }

    #[test]
    fn validation_sorts_periods_and_counts_the_busiest_day() {
        let mut w = every_day(vec![p(600, 700), p(60, 120)]);
        w.days[3] = vec![p(0, 10), p(20, 30), p(40, 50)];
        let s = valid(&w);
        assert_eq!(s.wire().days[0], vec![p(60, 120), p(600, 700)]);
        assert_eq!(s.busiest_day_writes(), 6);
        w.on_value = 0.0;
        assert_eq!(valid(&w).busiest_day_writes(), 0);
    }

    proptest::proptest! {
        #[test]
        fn evaluation_never_panics_and_edges_move_forward(
            secs in -2_000_000_000i64..4_000_000_000i64,
            starts in proptest::collection::vec(0u16..1439, 0..4),
        ) {
            let mut periods: Vec<Period> = starts.iter().map(|s| p(*s, s + 1)).collect();
            periods.sort_by_key(|x| x.start_min);
            periods.dedup_by_key(|x| x.start_min);
            let s = valid(&every_day(periods));
            let now = OffsetDateTime::from_unix_timestamp(secs).unwrap();
            let _ = s.is_on(now);
            if let Some(next) = s.next_edge_after(now) {
                proptest::prop_assert!(next > now);
            }
        }
    }
}
