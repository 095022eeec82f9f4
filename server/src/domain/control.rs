//! Remote-control rules: who may operate which control, whether a requested
//! value fits the agent's envelope and the site's comfort band, and reading
//! the clock-table form into a [`WeeklySchedule`].
//!
//! Two sets of limits apply to a setpoint. The **envelope** is the agent's
//! own hard limits (announced in its hello; the agent enforces them whatever
//! the server says, so checking here only spares a round trip). The **comfort
//! band** is the installer's narrower range for everyday use. A homeowner
//! stays inside the band; an installer or technician may go outside it, up to
//! the envelope, but such a change is held until a homeowner confirms it
//! through an e-mailed link ([`Decision::Confirm`]).
//!
//! Everything here is pure: forms come in as text, decisions and protocol
//! requests go out, and so do refusals, as [`Refusal`]s that a page words
//! in its own language (see [`super::control_text`]).

use protocol::{ActionInfo, ControlKind, ExceptionDay, Period, WeeklySchedule, WritableInfo};

use super::{
    Lang,
    access::Role,
    control_text::{DayRef, NumberField, Refusal},
};

/// Most on-periods one day (or one exception day) may have.
pub const MAX_PERIODS_PER_DAY: usize = 8;
/// Most exception days one schedule may carry.
pub const MAX_EXCEPTIONS: usize = 32;
/// Longest text accepted in one form field of a control form.
pub const MAX_FIELD_LEN: usize = 200;
/// Labels an exception day may have.
pub const EXCEPTION_LABELS: [&str; 2] = ["holiday", "away"];
/// Tolerance for "on the step grid" and "within limits" (float noise from
/// decimal input such as 21.3 = 21.299999999999997).
const EPS: f64 = 1e-6;

/// The key of a writable point within a site: `<device>/<point>`.
pub fn point_key(device: &str, point: &str) -> String {
    format!("{device}/{point}")
}

/// The key of a named action within a site: `action:<name>`.
pub fn action_key(name: &str) -> String {
    format!("action:{name}")
}

/// A closed range of values, `min <= max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    /// Lowest value.
    pub min: f64,
    /// Highest value.
    pub max: f64,
}

impl Band {
    /// Whether `v` lies in the band (with float tolerance).
    pub fn contains(&self, v: f64) -> bool {
        v >= self.min - EPS && v <= self.max + EPS
    }
}

/// The installer's settings of one control at one site.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlSetting {
    /// The comfort band; `None` means the envelope's limits.
    pub band: Option<Band>,
    /// Whether homeowners see (and may operate) the control.
    pub homeowner_visible: bool,
}

impl Default for ControlSetting {
    /// Visible, band = the envelope.
    fn default() -> Self {
        Self {
            band: None,
            homeowner_visible: true,
        }
    }
}

/// The envelope's limits of a writable point.
pub fn envelope_band(w: &WritableInfo) -> Band {
    Band {
        min: w.min,
        max: w.max,
    }
}

/// The comfort band in force: the installer's band limited to the envelope
/// (an envelope narrowed at the agent after the band was set wins).
pub fn effective_band(w: &WritableInfo, s: &ControlSetting) -> Band {
    match s.band {
        Some(b) => {
            let min = b.min.max(w.min);
            let max = b.max.min(w.max);
            if min <= max {
                Band { min, max }
            } else {
                envelope_band(w)
            }
        }
        None => envelope_band(w),
    }
}

/// What a role may do on the Controls page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Sees state, changes nothing (viewer, wall tablet).
    ReadOnly,
    /// Operates the controls the installer left visible, inside the band.
    Homeowner,
    /// Operates every control within the envelope; outside the band needs
    /// the owner's confirmation (installer, technician).
    Staff,
}

/// The control access of a role.
pub fn access(role: Role) -> Access {
    match role {
        Role::Viewer => Access::ReadOnly,
        Role::Homeowner => Access::Homeowner,
        Role::Technician | Role::Installer => Access::Staff,
    }
}

/// Only installers set comfort bands and what homeowners see.
pub fn may_configure(role: Role) -> bool {
    role == Role::Installer
}

/// Who may read (and export) a site's audit log: everyone but viewers, whose
/// wall tablet should not list people's names and actions.
pub fn may_read_audit(role: Role) -> bool {
    role >= Role::Homeowner
}

/// What happens to an accepted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Decision {
    /// Send it to the agent now.
    Send,
    /// Outside the comfort band: hold it until a homeowner confirms.
    Confirm,
}

/// Why a control request was refused. The [`Refusal`] is shown to the
/// person in their page's language ([`ControlError::text`]); `Display` is
/// its English, for logs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlError {
    /// The input is malformed or outside the limits (422).
    #[error("{0}")]
    Invalid(Refusal),
    /// The person's role may not do this (403).
    #[error("{0}")]
    NotAllowed(Refusal),
}

impl ControlError {
    /// Why, with its facts.
    pub fn refusal(&self) -> &Refusal {
        match self {
            ControlError::Invalid(r) | ControlError::NotAllowed(r) => r,
        }
    }

    /// Why, as a sentence in `lang`.
    pub fn text(&self, lang: Lang) -> String {
        self.refusal().text(lang)
    }
}

fn invalid(r: Refusal) -> ControlError {
    ControlError::Invalid(r)
}

/// Digits after the decimal point that `step` needs (0.1 → 1, 0.25 → 2,
/// 1 → 0), at most 6.
pub fn step_decimals(step: f64) -> usize {
    if !(step.is_finite() && step > 0.0) {
        return 1;
    }
    (0..=6)
        .find(|d| {
            let scaled = step * 10f64.powi(*d);
            (scaled - scaled.round()).abs() < 1e-9 * scaled.max(1.0)
        })
        .unwrap_or(6) as usize
}

/// `v` rounded to the decimals of `step`, so 21.4 + 0.1 is exactly 21.5.
pub fn tidy(v: f64, step: f64) -> f64 {
    let d = step_decimals(step);
    format!("{v:.d$}").parse().unwrap_or(v)
}

/// `v` as text with the decimals of `step` (for forms, logs and the audit).
pub fn format_value(v: f64, step: f64) -> String {
    let d = step_decimals(step);
    let s = format!("{v:.d$}");
    // "-0.0" reads like an error.
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_owned()
    } else {
        s
    }
}

/// Parse a number typed by a person into `field`: optional spaces, `.` or
/// `,` as the decimal separator; refuses empty input, words, NaN and
/// infinities.
pub fn parse_number(raw: &str, field: NumberField) -> Result<f64, ControlError> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(invalid(Refusal::NumberMissing { field }));
    }
    if t.len() > 32 {
        return Err(invalid(Refusal::NumberTooLong { field }));
    }
    let normal = t.replace(',', ".");
    match normal.parse::<f64>() {
        Ok(v)
            if v.is_finite()
                && normal
                    .chars()
                    .all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) =>
        {
            Ok(v)
        }
        _ => Err(invalid(Refusal::NotANumber {
            field,
            typed: t.to_owned(),
        })),
    }
}

/// Whether `v` is `origin + k * step` for a whole `k` (float noise tolerated).
pub fn on_step(v: f64, origin: f64, step: f64) -> bool {
    if !(step.is_finite() && step > 0.0) {
        return true;
    }
    let k = (v - origin) / step;
    (k - k.round()).abs() < 1e-6
}

/// Check a value for writable `w` against its envelope and then `band`, for
/// someone with `access`. The step grid starts at the envelope's `min`.
pub fn check_value(
    w: &WritableInfo,
    band: Band,
    value: f64,
    access: Access,
    unit: &str,
) -> Result<Decision, ControlError> {
    if access == Access::ReadOnly {
        return Err(ControlError::NotAllowed(Refusal::ReadOnly));
    }
    if !envelope_band(w).contains(value) {
        return Err(invalid(Refusal::OutsideLimits {
            value,
            min: w.min,
            max: w.max,
            step: w.step,
            unit: unit.to_owned(),
        }));
    }
    if !on_step(value, w.min, w.step) {
        return Err(invalid(Refusal::OffStep {
            value,
            step: w.step,
            unit: unit.to_owned(),
        }));
    }
    if band.contains(value) {
        return Ok(Decision::Send);
    }
    match access {
        Access::Staff => Ok(Decision::Confirm),
        _ => Err(invalid(Refusal::OutsideBand {
            value,
            min: band.min,
            max: band.max,
            step: w.step,
            unit: unit.to_owned(),
        })),
    }
}

/// What an output should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputChoice {
    /// Switch on (manual override).
    On,
    /// Switch off (manual override).
    Off,
    /// End the override: back to the schedule.
    Auto,
}

/// Parse the output form's `state` field.
pub fn parse_output_choice(raw: &str) -> Result<OutputChoice, ControlError> {
    match raw.trim() {
        "on" => Ok(OutputChoice::On),
        "off" => Ok(OutputChoice::Off),
        "auto" => Ok(OutputChoice::Auto),
        other => Err(invalid(Refusal::NotAnOutputState {
            typed: truncate(other, 20),
        })),
    }
}

/// The value an output is set to (`On` = the envelope's max, `Off` = its min).
pub fn output_value(w: &WritableInfo, choice: OutputChoice) -> Option<f64> {
    match choice {
        OutputChoice::On => Some(w.max),
        OutputChoice::Off => Some(w.min),
        OutputChoice::Auto => None,
    }
}

/// Parse a duration in whole minutes for `action`: 1 ..= its longest run.
pub fn parse_action_minutes(action: &ActionInfo, raw: &str) -> Result<u64, ControlError> {
    let t = raw.trim();
    let max = action.max_duration_s / 60;
    let minutes: u64 = t.parse().map_err(|_| {
        invalid(Refusal::NotMinutes {
            typed: truncate(t, 20),
        })
    })?;
    if minutes == 0 || minutes > max {
        return Err(invalid(Refusal::MinutesRange {
            max,
            action: action.label.clone().unwrap_or_else(|| action.name.clone()),
        }));
    }
    Ok(minutes)
}

/// Durations offered for an action (minutes), those that fit its maximum.
pub fn action_duration_choices(action: &ActionInfo) -> Vec<u64> {
    let max = action.max_duration_s / 60;
    let mut out: Vec<u64> = [30, 60, 120, 180, 240, 360]
        .into_iter()
        .filter(|m| *m <= max)
        .collect();
    if out.is_empty() && max > 0 {
        out.push(max);
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Parse `HH:MM` (or `H:MM`, `HH.MM`) into minutes after midnight; `24:00` is
/// allowed as an end.
fn parse_clock(raw: &str) -> Option<u16> {
    let (h, m) = raw.trim().split_once([':', '.'])?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return None;
    }
    Some(h * 60 + m)
}

/// `HH:MM` of minutes after midnight.
pub fn format_clock(min: u16) -> String {
    format!("{:02}:{:02}", min / 60, min % 60)
}

/// Parse one day's periods: `06:00-08:00, 16:00-22:30` (comma, semicolon or
/// space separated; empty = off all day). Periods must not overlap; they are
/// returned sorted. `day` names the day in a refusal.
pub fn parse_periods(raw: &str, day: DayRef) -> Result<Vec<Period>, ControlError> {
    if raw.len() > MAX_FIELD_LEN {
        return Err(invalid(Refusal::DayTooLong { day }));
    }
    let mut out = Vec::new();
    for part in raw
        .split([',', ';', ' '])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let not_a_period = || {
            invalid(Refusal::NotAPeriod {
                day,
                typed: truncate(part, 40),
            })
        };
        let (a, b) = part.split_once(['-', '–']).ok_or_else(not_a_period)?;
        let (start, end) = match (parse_clock(a), parse_clock(b)) {
            (Some(s), Some(e)) => (s, e),
            _ => return Err(not_a_period()),
        };
        if start >= end {
            return Err(invalid(Refusal::EndsBeforeStart { day, start, end }));
        }
        out.push(Period {
            start_min: start,
            end_min: end,
        });
        if out.len() > MAX_PERIODS_PER_DAY {
            return Err(invalid(Refusal::TooManyPeriods { day }));
        }
    }
    out.sort_by_key(|p| p.start_min);
    for pair in out.windows(2) {
        if pair[1].start_min < pair[0].end_min {
            return Err(invalid(Refusal::Overlap {
                day,
                first: (pair[0].start_min, pair[0].end_min),
                second: (pair[1].start_min, pair[1].end_min),
            }));
        }
    }
    Ok(out)
}

/// Periods as the form shows them: `06:00-08:00, 16:00-22:00`.
pub fn format_periods(periods: &[Period]) -> String {
    periods
        .iter()
        .map(|p| format!("{}-{}", format_clock(p.start_min), format_clock(p.end_min)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// English weekday names, Monday first (the schedule's day order).
pub const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

fn parse_date(raw: &str) -> Result<time::Date, ControlError> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(raw.trim(), &fmt).map_err(|_| {
        invalid(Refusal::NotADate {
            typed: truncate(raw.trim(), 20),
        })
    })
}

/// A schedule form: field name → value, as posted. Names: `day0` … `day6`
/// (Monday first), `on_value`/`off_value` (setpoints only), and per exception
/// row `N` in `0..MAX_EXCEPTIONS`: `ex_date_N`, `ex_label_N`, `ex_periods_N`
/// (a row with an empty date is unused).
pub fn parse_schedule(
    form: &[(String, String)],
    w: &WritableInfo,
    band: Band,
    access: Access,
    unit: &str,
    time_zone: &str,
) -> Result<(WeeklySchedule, Decision), ControlError> {
    if access == Access::ReadOnly {
        return Err(ControlError::NotAllowed(Refusal::ReadOnly));
    }
    if !w.schedulable {
        return Err(invalid(Refusal::NotSchedulable {
            control: point_key(&w.device, &w.point),
        }));
    }
    let mut seen = std::collections::HashSet::new();
    for (name, value) in form {
        if !seen.insert(name.as_str()) {
            return Err(invalid(Refusal::FieldTwice {
                field: truncate(name, 40),
            }));
        }
        if value.len() > MAX_FIELD_LEN {
            return Err(invalid(Refusal::FieldTooLong {
                field: truncate(name, 40),
            }));
        }
        if let Some(n) = name
            .strip_prefix("ex_date_")
            .or_else(|| name.strip_prefix("ex_label_"))
            .or_else(|| name.strip_prefix("ex_periods_"))
        {
            match n.parse::<usize>() {
                Ok(i) if i < MAX_EXCEPTIONS => {}
                _ => return Err(invalid(Refusal::TooManyExceptions)),
            }
        }
    }
    let get = |name: &str| {
        form.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let mut days = Vec::with_capacity(7);
    for i in 0..WEEKDAYS.len() {
        days.push(parse_periods(
            get(&format!("day{i}")).unwrap_or(""),
            DayRef::Weekday(i),
        )?);
    }
    let mut exceptions: Vec<ExceptionDay> = Vec::new();
    for i in 0..MAX_EXCEPTIONS {
        let raw_date = get(&format!("ex_date_{i}")).unwrap_or("").trim();
        if raw_date.is_empty() {
            continue;
        }
        let date = parse_date(raw_date)?;
        let day = DayRef::Date(date);
        let label = get(&format!("ex_label_{i}")).unwrap_or("holiday").trim();
        if !EXCEPTION_LABELS.contains(&label) {
            return Err(invalid(Refusal::NotAnExceptionKind {
                day,
                typed: truncate(label, 20),
            }));
        }
        let periods = parse_periods(get(&format!("ex_periods_{i}")).unwrap_or(""), day)?;
        if exceptions.iter().any(|e| e.date == date) {
            return Err(invalid(Refusal::DateTwice { day }));
        }
        exceptions.push(ExceptionDay {
            date,
            label: label.to_owned(),
            periods,
        });
    }
    exceptions.sort_by_key(|e| e.date);
    let (on_value, off_value, decision) = match w.kind {
        ControlKind::Output => (w.max, w.min, Decision::Send),
        ControlKind::Setpoint => {
            let on = parse_number(get("on_value").unwrap_or(""), NumberField::ScheduleOn)?;
            let off = parse_number(get("off_value").unwrap_or(""), NumberField::ScheduleOff)?;
            // Checked as typed (21.05 is off the grid), then tidied for the wire.
            let d = check_value(w, band, on, access, unit)?
                .max(check_value(w, band, off, access, unit)?);
            (tidy(on, w.step), tidy(off, w.step), d)
        }
    };
    Ok((
        WeeklySchedule {
            time_zone: time_zone.to_owned(),
            on_value,
            off_value,
            days,
            exceptions,
        },
        decision,
    ))
}

/// A one-line summary of a schedule for the audit log.
pub fn describe_schedule(s: &WeeklySchedule) -> String {
    let mut parts: Vec<String> = s
        .days
        .iter()
        .zip(WEEKDAYS)
        .map(|(p, d)| {
            let p = format_periods(p);
            format!("{} {}", &d[..3], if p.is_empty() { "-".into() } else { p })
        })
        .collect();
    for e in &s.exceptions {
        let p = format_periods(&e.periods);
        parts.push(format!(
            "{} {} {}",
            e.date,
            e.label,
            if p.is_empty() { "-".into() } else { p }
        ));
    }
    format!(
        "on {} / off {}: {}",
        s.on_value,
        s.off_value,
        parts.join("; ")
    )
}

/// Parse the installer's comfort band form (`band_min`, `band_max`; both
/// empty = the envelope). The band must lie within the envelope and on its
/// step grid.
pub fn parse_band(
    w: &WritableInfo,
    raw_min: &str,
    raw_max: &str,
) -> Result<Option<Band>, ControlError> {
    if raw_min.trim().is_empty() && raw_max.trim().is_empty() {
        return Ok(None);
    }
    let min = parse_number(raw_min, NumberField::BandMin)?;
    let max = parse_number(raw_max, NumberField::BandMax)?;
    let env = envelope_band(w);
    for v in [min, max] {
        if !env.contains(v) {
            return Err(invalid(Refusal::BandOutsideLimits {
                min: w.min,
                max: w.max,
                step: w.step,
            }));
        }
        if !on_step(v, w.min, w.step) {
            return Err(invalid(Refusal::OffStep {
                value: v,
                step: w.step,
                unit: String::new(),
            }));
        }
    }
    if min > max {
        return Err(invalid(Refusal::BandReversed));
    }
    Ok(Some(Band {
        min: tidy(min, w.step),
        max: tidy(max, w.step),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn setpoint() -> WritableInfo {
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
        }
    }

    fn output() -> WritableInfo {
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
        }
    }

    fn band() -> Band {
        Band {
            min: 19.0,
            max: 23.0,
        }
    }

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_homeowner_inside_the_band_sends_and_outside_is_refused() {
        let w = setpoint();
        assert_eq!(
            check_value(&w, band(), 21.5, Access::Homeowner, "°C"),
            Ok(Decision::Send)
        );
        let err = check_value(&w, band(), 24.0, Access::Homeowner, "°C").unwrap_err();
        assert!(matches!(
            err,
            ControlError::Invalid(Refusal::OutsideBand { .. })
        ));
        assert_eq!(
            err.to_string(),
            "24.0 °C is outside the comfort band 19.0–23.0 °C set by your installer."
        );
        assert_eq!(
            err.text(Lang::Fi),
            "24,0 °C on asentajan asettaman mukavuusalueen 19,0–23,0 °C ulkopuolella."
        );
    }

    #[test]
    fn staff_outside_the_band_needs_confirmation_but_never_passes_the_envelope() {
        let w = setpoint();
        assert_eq!(
            check_value(&w, band(), 25.0, Access::Staff, "°C"),
            Ok(Decision::Confirm)
        );
        assert_eq!(
            check_value(&w, band(), 21.0, Access::Staff, "°C"),
            Ok(Decision::Send)
        );
        let err = check_value(&w, band(), 27.5, Access::Staff, "°C").unwrap_err();
        assert!(
            err.to_string().contains("device's limits 18.0–27.0"),
            "{err}"
        );
    }

    #[test]
    fn a_viewer_may_not_change_anything() {
        assert!(matches!(
            check_value(&setpoint(), band(), 21.0, Access::ReadOnly, ""),
            Err(ControlError::NotAllowed(_))
        ));
    }

    #[test]
    fn values_off_the_step_grid_are_refused_and_float_noise_is_not() {
        let w = setpoint();
        assert!(check_value(&w, band(), 21.05, Access::Staff, "").is_err());
        assert!(check_value(&w, band(), 21.4 + 0.1, Access::Staff, "").is_ok());
        assert!(check_value(&w, band(), 0.1 * 213.0, Access::Staff, "").is_ok());
    }

    #[test]
    fn numbers_are_read_in_either_notation_and_junk_is_refused() {
        assert_eq!(parse_number(" 21,5 ", NumberField::Setpoint), Ok(21.5));
        assert_eq!(parse_number("21.5", NumberField::Setpoint), Ok(21.5));
        for junk in [
            "", "abc", "NaN", "nan", "inf", "-inf", "1e400", "0x10", "21.5°", "1 000",
        ] {
            assert!(parse_number(junk, NumberField::Setpoint).is_err(), "{junk}");
        }
        assert!(parse_number(&"1".repeat(40), NumberField::Setpoint).is_err());
    }

    #[test]
    fn step_decimals_follow_the_step() {
        assert_eq!(step_decimals(0.1), 1);
        assert_eq!(step_decimals(0.5), 1);
        assert_eq!(step_decimals(0.25), 2);
        assert_eq!(step_decimals(1.0), 0);
        assert_eq!(tidy(21.4 + 0.1, 0.1), 21.5);
        assert_eq!(format_value(-0.01, 0.1), "0.0");
    }

    #[test]
    fn the_comfort_band_in_force_is_limited_to_the_envelope() {
        let w = setpoint();
        let s = ControlSetting {
            band: Some(Band {
                min: 10.0,
                max: 22.0,
            }),
            homeowner_visible: true,
        };
        assert_eq!(
            effective_band(&w, &s),
            Band {
                min: 18.0,
                max: 22.0
            }
        );
        assert_eq!(
            effective_band(&w, &ControlSetting::default()),
            envelope_band(&w)
        );
    }

    #[test]
    fn a_band_form_must_fit_the_envelope_and_be_ordered() {
        let w = setpoint();
        assert_eq!(parse_band(&w, "", ""), Ok(None));
        assert_eq!(
            parse_band(&w, "19", "23,5"),
            Ok(Some(Band {
                min: 19.0,
                max: 23.5
            }))
        );
        assert!(parse_band(&w, "17", "23").is_err());
        assert!(parse_band(&w, "23", "19").is_err());
        assert!(parse_band(&w, "19.05", "23").is_err());
        assert!(parse_band(&w, "19", "").is_err());
    }

    #[test]
    fn periods_parse_sort_and_refuse_overlaps() {
        assert_eq!(
            parse_periods("16:00-22:30, 6.00-8:00", DayRef::Weekday(0)).unwrap(),
            vec![
                Period {
                    start_min: 360,
                    end_min: 480
                },
                Period {
                    start_min: 960,
                    end_min: 1350
                }
            ]
        );
        assert_eq!(parse_periods("  ", DayRef::Weekday(0)).unwrap(), vec![]);
        assert_eq!(
            parse_periods("22:00-24:00", DayRef::Weekday(0)).unwrap()[0].end_min,
            1440
        );
        for bad in [
            "06:00",
            "08:00-06:00",
            "06:00-06:00",
            "25:00-26:00",
            "06:60-07:00",
            "24:30-24:40",
            "6-8",
            "06:00-08:00, 07:00-09:00",
            "aa:bb-cc:dd",
        ] {
            assert!(parse_periods(bad, DayRef::Weekday(0)).is_err(), "{bad}");
        }
        let many = (0..9)
            .map(|h| format!("{:02}:00-{:02}:30", h, h))
            .collect::<Vec<_>>()
            .join(",");
        let err = parse_periods(&many, DayRef::Weekday(0)).unwrap_err();
        assert!(err.to_string().contains("at most 8"), "{err}");
    }

    #[test]
    fn an_output_schedule_form_becomes_a_weekly_schedule() {
        let f = form(&[
            ("csrf_token", "x"),
            ("control", "pop1/car_heater"),
            ("day0", "05:00-07:00"),
            ("day4", "05:00-07:00, 16:00-17:00"),
            ("ex_date_0", "2026-12-24"),
            ("ex_label_0", "holiday"),
            ("ex_periods_0", ""),
            ("ex_date_1", ""),
        ]);
        let (s, d) = parse_schedule(
            &f,
            &output(),
            envelope_band(&output()),
            Access::Homeowner,
            "",
            "Europe/Helsinki",
        )
        .unwrap();
        assert_eq!(d, Decision::Send);
        assert_eq!(s.days.len(), 7);
        assert_eq!(s.days[4].len(), 2);
        assert!(s.days[1].is_empty());
        assert_eq!((s.on_value, s.off_value), (1.0, 0.0));
        assert_eq!(s.exceptions.len(), 1);
        assert_eq!(s.exceptions[0].date, time::macros::date!(2026 - 12 - 24));
        assert_eq!(s.time_zone, "Europe/Helsinki");
        assert!(describe_schedule(&s).contains("Fri 05:00-07:00, 16:00-17:00"));
    }

    #[test]
    fn a_setpoint_schedule_checks_both_values_against_the_band() {
        let w = setpoint();
        let f = form(&[
            ("on_value", "21"),
            ("off_value", "18,5"),
            ("day0", "06:00-22:00"),
        ]);
        let (s, d) =
            parse_schedule(&f, &w, band(), Access::Staff, "°C", "Europe/Helsinki").unwrap();
        assert_eq!(d, Decision::Confirm, "18.5 is below the band");
        assert_eq!(s.off_value, 18.5);
        assert!(
            parse_schedule(&f, &w, band(), Access::Homeowner, "°C", "Europe/Helsinki").is_err()
        );
        let f = form(&[("on_value", "NaN"), ("off_value", "19")]);
        assert!(parse_schedule(&f, &w, band(), Access::Staff, "°C", "Europe/Helsinki").is_err());
    }

    #[test]
    fn bad_schedule_forms_are_refused_with_a_reason() {
        let w = output();
        let b = envelope_band(&w);
        let cases: Vec<(Vec<(String, String)>, &str)> = vec![
            (form(&[("ex_date_0", "2026-02-30")]), "not a date"),
            (form(&[("ex_date_0", "24.12.2026")]), "not a date"),
            (
                form(&[("ex_date_0", "2026-12-24"), ("ex_label_0", "party")]),
                "not an exception kind",
            ),
            (
                form(&[("ex_date_0", "2026-12-24"), ("ex_date_1", "2026-12-24")]),
                "listed twice",
            ),
            (form(&[("ex_date_32", "2026-12-24")]), "At most 32"),
            (form(&[("ex_date_x", "2026-12-24")]), "At most 32"),
            (form(&[("day0", "06:00-07:00"), ("day0", "")]), "sent twice"),
            (form(&[("day3", &"06:00-07:00,".repeat(30))]), "too long"),
            (form(&[("day2", "09:00-08:00")]), "Wednesday"),
        ];
        for (f, want) in cases {
            let err = parse_schedule(&f, &w, b, Access::Staff, "", "Europe/Helsinki").unwrap_err();
            assert!(err.to_string().contains(want), "{want}: {err}");
        }
        let mut not_schedulable = output();
        not_schedulable.schedulable = false;
        assert!(parse_schedule(&[], &not_schedulable, b, Access::Staff, "", "UTC").is_err());
        assert!(matches!(
            parse_schedule(&[], &w, b, Access::ReadOnly, "", "UTC"),
            Err(ControlError::NotAllowed(_))
        ));
    }

    #[test]
    fn action_minutes_are_whole_and_within_the_maximum() {
        let boost = ActionInfo {
            name: "boost_dhw".into(),
            label: Some("Boost".into()),
            max_duration_s: 10_800,
        };
        assert_eq!(parse_action_minutes(&boost, "120"), Ok(120));
        for bad in ["0", "181", "1.5", "x", "-5", ""] {
            assert!(parse_action_minutes(&boost, bad).is_err(), "{bad}");
        }
        assert_eq!(action_duration_choices(&boost), vec![30, 60, 120, 180]);
    }

    #[test]
    fn roles_map_to_control_access() {
        assert_eq!(access(Role::Viewer), Access::ReadOnly);
        assert_eq!(access(Role::Homeowner), Access::Homeowner);
        assert_eq!(access(Role::Technician), Access::Staff);
        assert!(may_configure(Role::Installer));
        assert!(!may_configure(Role::Technician));
        assert!(!may_read_audit(Role::Viewer));
        assert!(may_read_audit(Role::Homeowner));
    }

    proptest! {
        #[test]
        fn an_accepted_value_always_lies_within_the_envelope_and_on_its_grid(raw in "[-+]?[0-9]{0,3}([.,][0-9]{0,3})?", staff in any::<bool>()) {
            let w = setpoint();
            let access = if staff { Access::Staff } else { Access::Homeowner };
            if let Ok(v) = parse_number(&raw, NumberField::Setpoint)
                && let Ok(d) = check_value(&w, band(), v, access, "")
            {
                prop_assert!(envelope_band(&w).contains(v));
                prop_assert!(on_step(v, w.min, w.step));
                if !staff { prop_assert_eq!(d, Decision::Send); prop_assert!(band().contains(v)); }
            }
        }

        #[test]
        fn arbitrary_schedule_forms_never_panic(fields in proptest::collection::vec(("(day[0-9]|ex_(date|label|periods)_[0-9]{1,2}|on_value|off_value)", ".{0,40}"), 0..12)) {
            let f: Vec<(String, String)> = fields;
            let _ = parse_schedule(&f, &setpoint(), band(), Access::Staff, "°C", "Europe/Helsinki");
            let _ = parse_schedule(&f, &output(), envelope_band(&output()), Access::Homeowner, "", "Europe/Helsinki");
        }

        #[test]
        fn formatted_periods_parse_back(starts in proptest::collection::btree_set(0u16..1439, 0..6)) {
            // Build non-overlapping one-minute periods from distinct starts.
            let periods: Vec<Period> = starts.iter().map(|s| Period { start_min: *s, end_min: s + 1 }).collect();
            let text = format_periods(&periods);
            prop_assert_eq!(parse_periods(&text, DayRef::Weekday(6)).unwrap(), periods);
        }
    }
}
