//! The safety envelope: `[[writable]]` and `[[action]]` tables of the agent's
//! local configuration file.
//!
//! ```toml
//! [[writable]]
//! device = "heatpump"
//! point = "dhw_setpoint"
//! kind = "setpoint"            # setpoint | output
//! min = 40.0                   # hard limits, engineering units
//! max = 55.0
//! step = 0.5                   # values are multiples of this
//! max_change_per_hour = 10.0   # optional: sum of commanded changes in any hour
//! max_override_minutes = 240   # longest manual override; the agent reverts after it
//! daily_write_cap = 24         # optional: writes in any 24 hours (EEPROM wear)
//! schedulable = false          # may follow a weekly schedule run by the agent
//! # value_when_idle = 45.0     # optional: written when nothing else asks
//!
//! [[action]]
//! name = "boost_dhw"
//! label = "Boost hot water"
//! max_duration_minutes = 180
//! [[action.write]]
//! device = "heatpump"
//! point = "dhw_setpoint"
//! value = 55.0
//! ```
//!
//! An output (`kind = "output"`) is 0 (off) or 1 (on) and takes no `min`,
//! `max` or `step`. Every point named must be a configured device's point that
//! its profile marks `writable = true`; every action write must name a
//! `[[writable]]` and lie within its limits. On a `modbus_slave` device (a
//! PLC's exchange area) the point must be an enabled `to_plc` point: the
//! agent offers the value to the PLC ([`crate::devices::slave`]); a
//! `from_plc` point, which the PLC writes, is refused. Its `echo` point, if
//! any, reports the value the PLC uses ([`Writable::echo`]); without one it
//! needs a `value_when_idle`. The server never changes any of
//! this: it only receives a copy ([`Envelope::info`]) for its UI.

use std::time::Duration;

use protocol::ControlKind;
use serde::Deserialize;
use toml::Spanned;

use super::PointKey;
use crate::{
    config::{BusConfig, DeviceConfig, Transport},
    registers::Direction,
    tomlfile::{self, TomlFileError},
};

/// Longest override or action an installer may configure (a year). Keeps
/// time arithmetic far from overflow.
pub const MAX_CONFIGURED_MINUTES: u64 = 366 * 24 * 60;

/// Two values closer than this many steps are the same grid point: commands
/// arrive as decimal text, so 21.3 is not an exact multiple of 0.1 in binary.
const GRID_TOLERANCE: f64 = 1e-6;

/// The envelope: everything a command may touch, with its limits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Envelope {
    /// Writable points, unique by device and point.
    pub writables: Vec<Writable>,
    /// Named safe actions, unique by name.
    pub actions: Vec<ActionDef>,
}

/// One `[[writable]]`: a point and its hard limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Writable {
    /// The point.
    pub key: PointKey,
    /// Setpoint (a number on a grid) or output (0/1).
    pub kind: ControlKind,
    /// Lowest value (0 for outputs).
    pub min: f64,
    /// Highest value (1 for outputs).
    pub max: f64,
    /// Grid: values are whole multiples of it (1 for outputs).
    pub step: f64,
    /// Largest sum of commanded changes within any hour, if limited.
    pub max_change_per_hour: Option<f64>,
    /// Longest manual override.
    pub max_override: Duration,
    /// Most writes within any 24 hours, if limited.
    pub daily_write_cap: Option<u32>,
    /// May follow a weekly schedule.
    pub schedulable: bool,
    /// Written when no action, override or schedule asks for anything.
    pub value_when_idle: Option<f64>,
    /// On a `modbus_slave` device: the `from_plc` point where the PLC writes
    /// back the value it applied (the profile's `echo`). Its readings are
    /// this point's reported value: what the PLC uses, including a change
    /// made at the PLC itself. `None`: the point's own readings.
    pub echo: Option<String>,
}

impl Writable {
    /// Check `value` against the limits. Returns the value snapped exactly
    /// onto the grid (21.3 + 1e-12 becomes 21.3) or a sentence saying
    /// why it is refused.
    pub fn check(&self, value: f64) -> Result<f64, String> {
        if !value.is_finite() {
            return Err(format!("{value} is not a number"));
        }
        match self.kind {
            ControlKind::Output => {
                if value.abs() < GRID_TOLERANCE {
                    Ok(0.0)
                } else if (value - 1.0).abs() < GRID_TOLERANCE {
                    Ok(1.0)
                } else {
                    Err(format!(
                        "`{}` is an output: 0 (off) or 1 (on), not {value}",
                        self.key
                    ))
                }
            }
            ControlKind::Setpoint => {
                let tolerance = self.step * GRID_TOLERANCE;
                if value < self.min - tolerance || value > self.max + tolerance {
                    return Err(format!(
                        "{value} is outside the limits of `{}` ({}..={})",
                        self.key, self.min, self.max
                    ));
                }
                let steps = value / self.step;
                if (steps - steps.round()).abs() > GRID_TOLERANCE {
                    return Err(format!(
                        "{value} is not a multiple of the step {} of `{}`",
                        self.step, self.key
                    ));
                }
                Ok(self.snap(value))
            }
        }
    }

    /// The nearest allowed value: clamped to the limits and snapped onto the
    /// grid. Used for values stored before the envelope was tightened.
    pub fn clamp(&self, value: f64) -> f64 {
        if !value.is_finite() {
            return self.min;
        }
        match self.kind {
            ControlKind::Output => {
                if value >= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            ControlKind::Setpoint => self.snap(value.clamp(self.min, self.max)),
        }
    }

    /// Round onto the grid, with as many decimals as the step has, and keep
    /// the result within the limits (which are on the grid, checked at load).
    fn snap(&self, value: f64) -> f64 {
        let snapped = (value / self.step).round() * self.step;
        let decimals = decimals_of(self.step);
        let scale = 10f64.powi(decimals);
        let tidy = (snapped * scale).round() / scale;
        tidy.clamp(self.min, self.max)
    }

    /// The copy announced to the server.
    pub fn info(&self) -> protocol::WritableInfo {
        protocol::WritableInfo {
            device: self.key.device.clone(),
            point: self.key.point.clone(),
            kind: self.kind,
            min: self.min,
            max: self.max,
            step: self.step,
            max_change_per_hour: self.max_change_per_hour,
            max_override_s: self.max_override.as_secs(),
            schedulable: self.schedulable,
        }
    }
}

/// Decimal places needed to write `step` (0.1 → 1, 0.25 → 2, 5 → 0), at most 9.
fn decimals_of(step: f64) -> i32 {
    let mut d = 0;
    while d < 9 {
        let scaled = step * 10f64.powi(d);
        if (scaled - scaled.round()).abs() < 1e-9 * scaled.abs().max(1.0) {
            break;
        }
        d += 1;
    }
    d
}

/// A named safe action (`[[action]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ActionDef {
    /// Name a command uses, e.g. `boost_dhw`.
    pub name: String,
    /// Human label.
    pub label: Option<String>,
    /// Longest run; longer requests are capped to it.
    pub max_duration: Duration,
    /// What it writes while it runs (each within its writable's limits).
    pub writes: Vec<ActionWrite>,
}

impl ActionDef {
    /// The copy announced to the server.
    pub fn info(&self) -> protocol::ActionInfo {
        protocol::ActionInfo {
            name: self.name.clone(),
            label: self.label.clone(),
            max_duration_s: self.max_duration.as_secs(),
        }
    }
}

/// One write of an action (`[[action.write]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ActionWrite {
    /// The point, one of the envelope's writables.
    pub key: PointKey,
    /// Its value while the action runs (on the grid, within limits).
    pub value: f64,
}

impl Envelope {
    /// True when nothing may be written: remote control is off.
    pub fn is_empty(&self) -> bool {
        self.writables.is_empty() && self.actions.is_empty()
    }

    /// The writable entry of `key`, if the envelope has one.
    pub fn writable(&self, key: &PointKey) -> Option<&Writable> {
        self.writables.iter().find(|w| &w.key == key)
    }

    /// The action called `name`, if any.
    pub fn action(&self, name: &str) -> Option<&ActionDef> {
        self.actions.iter().find(|a| a.name == name)
    }

    /// What `agent check-config` prints: every writable with its limits and
    /// every action with its writes, one per line.
    pub fn describe(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        if self.is_empty() {
            s.push_str("remote control: off (no [[writable]] or [[action]] in the config)\n");
            return s;
        }
        s.push_str("remote control, within this file's safety envelope:\n");
        for w in &self.writables {
            let limits = match w.kind {
                ControlKind::Output => "output 0/1".to_owned(),
                ControlKind::Setpoint => {
                    format!("setpoint {}..={} step {}", w.min, w.max, w.step)
                }
            };
            let _ = write!(
                s,
                "  writable {:<32} {limits}, overrides <= {} min",
                w.key.to_string(),
                w.max_override.as_secs() / 60
            );
            if let Some(c) = w.max_change_per_hour {
                let _ = write!(s, ", <= {c}/h");
            }
            if let Some(c) = w.daily_write_cap {
                let _ = write!(s, ", <= {c} writes/24 h");
            }
            if w.schedulable {
                s.push_str(", schedulable");
            }
            if let Some(v) = w.value_when_idle {
                let _ = write!(s, ", idle {v}");
            }
            s.push('\n');
        }
        for a in &self.actions {
            let writes: Vec<String> = a
                .writes
                .iter()
                .map(|w| format!("{} = {}", w.key, w.value))
                .collect();
            let _ = writeln!(
                s,
                "  action   {:<32} <= {} min: {}",
                a.name,
                a.max_duration.as_secs() / 60,
                writes.join(", ")
            );
        }
        s
    }

    /// The copy for `Hello.envelope`.
    pub fn info(&self) -> protocol::Envelope {
        protocol::Envelope {
            writables: self.writables.iter().map(Writable::info).collect(),
            actions: self.actions.iter().map(ActionDef::info).collect(),
        }
    }
}

/// The tables of the agent's configuration this module reads; everything
/// else in the file is the configuration loader's.
#[derive(Debug, Deserialize)]
struct RawDoc {
    #[serde(default)]
    writable: Vec<Spanned<RawWritable>>,
    #[serde(default)]
    action: Vec<Spanned<RawAction>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWritable {
    device: Spanned<String>,
    point: Spanned<String>,
    kind: ControlKind,
    min: Option<Spanned<f64>>,
    max: Option<Spanned<f64>>,
    step: Option<Spanned<f64>>,
    max_change_per_hour: Option<Spanned<f64>>,
    max_override_minutes: Spanned<u64>,
    daily_write_cap: Option<Spanned<u32>>,
    #[serde(default)]
    schedulable: bool,
    value_when_idle: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    name: Spanned<String>,
    label: Option<String>,
    max_duration_minutes: Spanned<u64>,
    #[serde(default)]
    write: Vec<Spanned<RawActionWrite>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActionWrite {
    device: Spanned<String>,
    point: Spanned<String>,
    value: Spanned<f64>,
}

/// Read the envelope from the configuration file `text` (named `file` in
/// errors), checking every point against the configured `devices` and the
/// `buses` they hang on (a device on a `modbus_slave` bus is written by
/// offering values to its PLC: only its `to_plc` points can be writable).
///
/// Errors name the line and key, e.g.
/// ``agent.toml line 40: key `writable[0].max`: max 80 is not above min 90``.
pub fn parse(
    file: &str,
    text: &str,
    devices: &[DeviceConfig],
    buses: &[BusConfig],
) -> Result<Envelope, TomlFileError> {
    let raw: RawDoc = tomlfile::parse(file, text)?;
    let p = Parser {
        file,
        text,
        devices,
        buses,
    };
    let mut writables: Vec<Writable> = Vec::new();
    for (i, w) in raw.writable.into_iter().enumerate() {
        let span = w.span();
        let w = p.writable(i, w.into_inner())?;
        if writables.iter().any(|x| x.key == w.key) {
            return p.err(
                span,
                format!("writable[{i}].point"),
                format!("`{}` is listed twice", w.key),
            );
        }
        writables.push(w);
    }
    let mut actions: Vec<ActionDef> = Vec::new();
    for (i, a) in raw.action.into_iter().enumerate() {
        let a = p.action(i, a.into_inner(), &writables, &actions)?;
        actions.push(a);
    }
    Ok(Envelope { writables, actions })
}

struct Parser<'a> {
    file: &'a str,
    text: &'a str,
    devices: &'a [DeviceConfig],
    buses: &'a [BusConfig],
}

impl Parser<'_> {
    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        key: String,
        msg: impl Into<String>,
    ) -> Result<T, TomlFileError> {
        Err(TomlFileError::at(self.file, self.text, span, key, msg))
    }

    /// A point that exists on a configured device and may be written.
    fn point(
        &self,
        device: &Spanned<String>,
        point: &Spanned<String>,
        key: impl Fn(&str) -> String,
    ) -> Result<(PointKey, &crate::registers::Point), TomlFileError> {
        let Some(dev) = self.devices.iter().find(|d| &d.key == device.get_ref()) else {
            let known: Vec<&str> = self.devices.iter().map(|d| d.key.as_str()).collect();
            return self.err(
                device.span(),
                key("device"),
                format!(
                    "unknown device `{}` (known: {})",
                    device.get_ref(),
                    known.join(", ")
                ),
            );
        };
        let Some(pt) = dev.points.iter().find(|p| &p.key == point.get_ref()) else {
            return self.err(
                point.span(),
                key("point"),
                format!(
                    "device `{}` (profile `{}`) has no point `{}`",
                    dev.key,
                    dev.profile_id,
                    point.get_ref()
                ),
            );
        };
        if self.on_slave_bus(dev) {
            return self.slave_point(dev, pt, point, key);
        }
        if !pt.writable {
            return self.err(
                point.span(),
                key("point"),
                format!(
                    "point `{}.{}` is not writable: its profile does not mark it `writable = true` \
                     (verify the address on site, then add it as an inline [[device.point]] with writable = true)",
                    dev.key, pt.key
                ),
            );
        }
        match &pt.spec {
            crate::registers::Spec::Modbus(m)
                if matches!(
                    m.function,
                    crate::registers::Function::Holding | crate::registers::Function::Coil
                ) => {}
            crate::registers::Spec::Modbus(m) => {
                return self.err(
                    point.span(),
                    key("point"),
                    format!(
                        "point `{}.{}` is a {} point: no Modbus function writes it",
                        dev.key, pt.key, m.function
                    ),
                );
            }
            // The Ouman serial protocol is read-only in this agent.
            other @ crate::registers::Spec::Ouman(_) => {
                return self.err(
                    point.span(),
                    key("point"),
                    format!(
                        "point `{}.{}`: the agent does not write {} points",
                        dev.key,
                        pt.key,
                        other.protocol()
                    ),
                );
            }
            // Other protocols (POP) write through their bus driver.
            _ => {}
        }
        Ok((PointKey::new(&dev.key, &pt.key), pt))
    }

    fn on_slave_bus(&self, dev: &DeviceConfig) -> bool {
        self.buses
            .iter()
            .any(|b| b.name == dev.bus && matches!(b.transport, Transport::ModbusSlave(_)))
    }

    /// A point of a device on a `modbus_slave` bus: the agent writes it by
    /// offering the value to the PLC, so it must be `to_plc` (input
    /// registers and discrete inputs always are) and marked writable.
    fn slave_point<'d>(
        &self,
        dev: &'d DeviceConfig,
        pt: &'d crate::registers::Point,
        point: &Spanned<String>,
        key: impl Fn(&str) -> String,
    ) -> Result<(PointKey, &'d crate::registers::Point), TomlFileError> {
        if pt.direction == Some(Direction::FromPlc) {
            return self.err(
                point.span(),
                key("point"),
                format!(
                    "point `{}.{}` is `from_plc`: the PLC writes it and the agent only reads it; \
                     on a `modbus_slave` device only `to_plc` points (values offered to the PLC) \
                     can be writable",
                    dev.key, pt.key
                ),
            );
        }
        if !pt.writable {
            return self.err(
                point.span(),
                key("point"),
                format!(
                    "point `{}.{}` is not writable: its profile does not mark it `writable = true`",
                    dev.key, pt.key
                ),
            );
        }
        if !pt.enabled {
            return self.err(
                point.span(),
                key("point"),
                format!(
                    "point `{}.{}` is disabled (`enabled = false`), so it is not in the PLC's \
                     exchange area and cannot be offered",
                    dev.key, pt.key
                ),
            );
        }
        Ok((PointKey::new(&dev.key, &pt.key), pt))
    }

    fn minutes(&self, m: &Spanned<u64>, key: String) -> Result<Duration, TomlFileError> {
        let v = *m.get_ref();
        if v == 0 || v > MAX_CONFIGURED_MINUTES {
            return self.err(
                m.span(),
                key,
                format!("must be 1..={MAX_CONFIGURED_MINUTES} minutes, got {v}"),
            );
        }
        Ok(Duration::from_secs(v * 60))
    }

    fn finite(&self, v: &Spanned<f64>, key: String) -> Result<f64, TomlFileError> {
        if v.get_ref().is_finite() {
            Ok(*v.get_ref())
        } else {
            self.err(v.span(), key, "must be a finite number")
        }
    }

    fn writable(&self, i: usize, raw: RawWritable) -> Result<Writable, TomlFileError> {
        let key = |f: &str| format!("writable[{i}].{f}");
        let (pkey, pt) = self.point(&raw.device, &raw.point, key)?;
        let (min, max, step) = match raw.kind {
            ControlKind::Output => {
                if let Some(s) = raw.min.as_ref().or(raw.max.as_ref()).or(raw.step.as_ref()) {
                    let field = if raw.min.is_some() {
                        "min"
                    } else if raw.max.is_some() {
                        "max"
                    } else {
                        "step"
                    };
                    return self.err(
                        s.span(),
                        key(field),
                        "an output is 0 (off) or 1 (on): min, max and step do not apply",
                    );
                }
                (0.0, 1.0, 1.0)
            }
            ControlKind::Setpoint => {
                if pt.spec.is_binary() {
                    return self.err(
                        raw.point.span(),
                        key("point"),
                        format!("`{pkey}` is an on/off point: use kind = \"output\""),
                    );
                }
                let need = |v: &Option<Spanned<f64>>, f: &str| match v {
                    Some(v) => self.finite(v, key(f)),
                    None => self.err(
                        raw.point.span(),
                        key(f),
                        format!("missing: a setpoint needs `{f}`"),
                    ),
                };
                let (min, max, step) = (
                    need(&raw.min, "min")?,
                    need(&raw.max, "max")?,
                    need(&raw.step, "step")?,
                );
                let (max_span, step_span) = match (&raw.max, &raw.step) {
                    (Some(m), Some(s)) => (m.span(), s.span()),
                    _ => (raw.point.span(), raw.point.span()),
                };
                if step <= 0.0 {
                    return self.err(step_span, key("step"), "step must be above 0");
                }
                if max <= min {
                    return self.err(
                        max_span,
                        key("max"),
                        format!("max {max} is not above min {min}"),
                    );
                }
                for (v, f) in [(min, "min"), (max, "max")] {
                    let steps = v / step;
                    if (steps - steps.round()).abs() > GRID_TOLERANCE {
                        let span = if f == "min" {
                            raw.min.as_ref().map(Spanned::span)
                        } else {
                            raw.max.as_ref().map(Spanned::span)
                        };
                        return self.err(
                            span.unwrap_or(raw.point.span()),
                            key(f),
                            format!("{f} {v} is not a multiple of step {step}"),
                        );
                    }
                }
                (min, max, step)
            }
        };
        let max_change_per_hour = match &raw.max_change_per_hour {
            None => None,
            Some(c) => {
                let v = self.finite(c, key("max_change_per_hour"))?;
                if v <= 0.0 {
                    return self.err(c.span(), key("max_change_per_hour"), "must be above 0");
                }
                Some(v)
            }
        };
        let max_override = self.minutes(&raw.max_override_minutes, key("max_override_minutes"))?;
        let daily_write_cap = match &raw.daily_write_cap {
            None => None,
            // A temporary change needs room for its write and its revert.
            Some(c) if *c.get_ref() < 2 => {
                return self.err(
                    c.span(),
                    key("daily_write_cap"),
                    "must be at least 2 (a change and its revert)",
                );
            }
            Some(c) => Some(*c.get_ref()),
        };
        let mut w = Writable {
            key: pkey,
            kind: raw.kind,
            min,
            max,
            step,
            max_change_per_hour,
            max_override,
            daily_write_cap,
            schedulable: raw.schedulable,
            value_when_idle: None,
            echo: pt.echo.clone(),
        };
        let on_slave_bus = self
            .devices
            .iter()
            .any(|d| d.key == w.key.device && self.on_slave_bus(d));
        if let Some(v) = &raw.value_when_idle {
            match w.check(*v.get_ref()) {
                Ok(v) => w.value_when_idle = Some(v),
                Err(msg) => return self.err(v.span(), key("value_when_idle"), msg),
            }
        } else if !pt.enabled {
            // After an override the agent puts back the value it last read.
            return self.err(
                raw.point.span(),
                key("point"),
                format!(
                    "`{}` is not polled (enabled = false) and has no value_when_idle: \
                     the agent could not know what to put back after an override",
                    w.key
                ),
            );
        } else if on_slave_bus && w.echo.is_none() {
            // The PLC reads "unknown" until the agent offers something, and
            // without an echo never says what it uses instead.
            return self.err(
                raw.point.span(),
                key("point"),
                format!(
                    "`{}` is offered to the PLC without an `echo` point and has no \
                     value_when_idle: the agent never learns the value the PLC uses, so it \
                     could not know what to put back after an override (give it a \
                     value_when_idle, offered whenever nothing else asks)",
                    w.key
                ),
            );
        }
        Ok(w)
    }

    fn action(
        &self,
        i: usize,
        raw: RawAction,
        writables: &[Writable],
        earlier: &[ActionDef],
    ) -> Result<ActionDef, TomlFileError> {
        let key = |f: &str| format!("action[{i}].{f}");
        let name = raw.name.get_ref();
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !name_ok {
            return self.err(
                raw.name.span(),
                key("name"),
                format!("`{name}`: a name is 1 to 64 of a-z, 0-9 and _"),
            );
        }
        if earlier.iter().any(|a| &a.name == name) {
            return self.err(
                raw.name.span(),
                key("name"),
                format!("action `{name}` is defined twice"),
            );
        }
        let max_duration = self.minutes(&raw.max_duration_minutes, key("max_duration_minutes"))?;
        if raw.write.is_empty() {
            return self.err(
                raw.name.span(),
                key("write"),
                format!("action `{name}` writes nothing: add [[action.write]] entries"),
            );
        }
        let mut writes: Vec<ActionWrite> = Vec::new();
        for (wi, w) in raw.write.into_iter().enumerate() {
            let wkey = |f: &str| format!("action[{i}].write[{wi}].{f}");
            let w = w.into_inner();
            let (pkey, _) = self.point(&w.device, &w.point, wkey)?;
            let Some(writable) = writables.iter().find(|x| x.key == pkey) else {
                return self.err(
                    w.point.span(),
                    wkey("point"),
                    format!("`{pkey}` has no [[writable]] entry, so no action may write it"),
                );
            };
            if writes.iter().any(|x| x.key == pkey) {
                return self.err(
                    w.point.span(),
                    wkey("point"),
                    format!("action `{name}` writes `{pkey}` twice"),
                );
            }
            let value = match writable.check(*w.value.get_ref()) {
                Ok(v) => v,
                Err(msg) => return self.err(w.value.span(), wkey("value"), msg),
            };
            writes.push(ActionWrite { key: pkey, value });
        }
        Ok(ActionDef {
            name: name.clone(),
            label: raw.label,
            max_duration,
            writes,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::AgentConfig;
    use std::path::Path;

    /// A configuration with a heat pump whose DHW setpoint, room setpoint and
    /// car-heater relay are writable inline points.
    pub(crate) const BASE: &str = r#"[server]
url = "ws://127.0.0.1:8080/agent/v1/ws"
agent_id = "0b6f3c1e-8a5b-4c1d-9e2f-3a4b5c6d7e8f"
secret = "not-the-placeholder"

[[bus]]
name = "lan"
kind = "tcp"
address = "127.0.0.1:502"

[[device]]
key = "heatpump"
bus = "lan"
unit_id = 1
profile = "ouman_eh203_modbus200"

[[device.point]]
name = "dhw_setpoint"
function = "holding"
address = 52
data_type = "i16"
scale = 0.1
unit = "degC"
writable = true

[[device.point]]
name = "room_setpoint"
function = "holding"
address = 53
data_type = "i16"
scale = 0.1
unit = "degC"
writable = true

[[device.point]]
name = "car_heater"
function = "coil"
address = 0
data_type = "bool"
writable = true
"#;

    pub(crate) const ENVELOPE: &str = r#"
[[writable]]
device = "heatpump"
point = "dhw_setpoint"
kind = "setpoint"
min = 40.0
max = 55.0
step = 0.5
max_override_minutes = 240
daily_write_cap = 24

[[writable]]
device = "heatpump"
point = "room_setpoint"
kind = "setpoint"
min = 18
max = 24
step = 0.1
max_change_per_hour = 2.0
max_override_minutes = 120
schedulable = true

[[writable]]
device = "heatpump"
point = "car_heater"
kind = "output"
max_override_minutes = 180
schedulable = true
value_when_idle = 0

[[action]]
name = "boost_dhw"
label = "Boost hot water"
max_duration_minutes = 180
[[action.write]]
device = "heatpump"
point = "dhw_setpoint"
value = 55
"#;

    pub(crate) fn devices() -> Vec<DeviceConfig> {
        AgentConfig::from_toml("agent.toml", BASE, Path::new("/nonexistent"))
            .unwrap()
            .devices
    }

    pub(crate) fn envelope() -> Envelope {
        let text = format!("{BASE}{ENVELOPE}");
        parse("agent.toml", &text, &devices(), &[]).unwrap()
    }

    fn invalid(envelope: &str) -> TomlFileError {
        let text = format!("{BASE}{envelope}");
        parse("agent.toml", &text, &devices(), &[]).unwrap_err()
    }

    /// Line of the first occurrence of `needle` in BASE + ENVELOPE-like text.
    fn line_of(text: &str, needle: &str) -> usize {
        let full = format!("{BASE}{text}");
        tomlfile::line_of(&full, full.find(needle).unwrap())
    }

    #[test]
    fn the_documented_envelope_loads_with_its_limits() {
        let env = envelope();
        assert_eq!(env.writables.len(), 3);
        let dhw = env
            .writable(&PointKey::new("heatpump", "dhw_setpoint"))
            .unwrap();
        assert_eq!((dhw.min, dhw.max, dhw.step), (40.0, 55.0, 0.5));
        assert_eq!(dhw.max_override, Duration::from_secs(240 * 60));
        assert_eq!(dhw.daily_write_cap, Some(24));
        let room = env
            .writable(&PointKey::new("heatpump", "room_setpoint"))
            .unwrap();
        assert_eq!(room.max_change_per_hour, Some(2.0));
        assert!(room.schedulable);
        let car = env
            .writable(&PointKey::new("heatpump", "car_heater"))
            .unwrap();
        assert_eq!(
            (car.kind, car.min, car.max, car.step),
            (ControlKind::Output, 0.0, 1.0, 1.0)
        );
        assert_eq!(car.value_when_idle, Some(0.0));
        let boost = env.action("boost_dhw").unwrap();
        assert_eq!(boost.max_duration, Duration::from_secs(3 * 3600));
        assert_eq!(boost.writes[0].value, 55.0);
        let info = env.info();
        assert_eq!(info.writables[0].max_override_s, 240 * 60);
        assert_eq!(info.actions[0].max_duration_s, 3 * 3600);
    }

    #[test]
    fn the_config_loader_reads_the_envelope_and_locates_its_mistakes() {
        let text = format!("{BASE}{ENVELOPE}");
        let cfg = AgentConfig::from_toml("agent.toml", &text, Path::new("/x")).unwrap();
        assert_eq!(cfg.envelope, envelope());
        let bad = text.replacen("max = 55.0", "max = 95.0\nmaxx = 1", 1);
        let err = match AgentConfig::from_toml("agent.toml", &bad, Path::new("/x")) {
            Err(crate::config::ConfigError::Invalid(e)) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(err.key, "writable[0].maxx");
        assert_eq!(err.line, tomlfile::line_of(&bad, bad.find("maxx").unwrap()));
        assert!(err.to_string().starts_with("agent.toml line "), "{err}");
    }

    #[test]
    fn the_commented_example_in_example_toml_is_a_valid_envelope() {
        let text =
            include_str!("../../config/example.toml").replace("\"CHANGE-ME\"", "\"a-real-secret\"");
        let start = text.find("# ---- Remote control").unwrap();
        let end = text.find("# The on-disk buffer").unwrap();
        let (head, block, tail) = (&text[..start], &text[start..end], &text[end..]);
        let uncommented: Vec<&str> = block
            .lines()
            .map(|l| {
                let body = l.strip_prefix("# ").unwrap_or(l);
                let is_toml = body.starts_with("[[")
                    || body.split_once(" = ").is_some_and(|(k, _)| {
                        k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    });
                if is_toml { body } else { l }
            })
            .collect();
        let text = format!("{head}{}\n{tail}", uncommented.join("\n"));
        let cfg = AgentConfig::from_toml("example.toml", &text, Path::new("/x")).unwrap();
        assert_eq!(cfg.envelope.writables.len(), 1);
        assert_eq!(cfg.envelope.writables[0].value_when_idle, Some(45.0));
        assert_eq!(cfg.envelope.actions[0].writes[0].value, 55.0);
    }

    #[test]
    fn check_config_lists_the_envelope() {
        let text = envelope().describe();
        assert!(
            text.contains("writable heatpump.dhw_setpoint")
                && text
                    .contains("setpoint 40..=55 step 0.5, overrides <= 240 min, <= 24 writes/24 h"),
            "{text}"
        );
        assert!(
            text.contains("output 0/1, overrides <= 180 min, schedulable, idle 0"),
            "{text}"
        );
        assert!(
            text.contains("action   boost_dhw")
                && text.contains("<= 180 min: heatpump.dhw_setpoint = 55"),
            "{text}"
        );
        assert!(
            Envelope::default()
                .describe()
                .contains("remote control: off")
        );
    }

    #[test]
    fn an_agent_toml_without_tables_has_an_empty_envelope() {
        let env = parse("agent.toml", BASE, &devices(), &[]).unwrap();
        assert!(env.is_empty());
    }

    #[test]
    fn a_point_not_writable_in_its_profile_is_refused_with_its_line() {
        let text = ENVELOPE.replacen("point = \"dhw_setpoint\"", "point = \"outdoor_temp\"", 1);
        let err = invalid(&text);
        assert_eq!(err.key, "writable[0].point");
        assert_eq!(err.line, line_of(&text, "point = \"outdoor_temp\""));
        assert!(err.message.contains("not writable"), "{err}");
    }

    #[test]
    fn an_unknown_device_or_point_is_refused() {
        let err = invalid(&ENVELOPE.replacen("device = \"heatpump\"", "device = \"hp\"", 1));
        assert_eq!(err.key, "writable[0].device");
        assert!(err.message.contains("known: heatpump"), "{err}");
        let err = invalid(&ENVELOPE.replacen("\"dhw_setpoint\"", "\"dhw_set\"", 1));
        assert_eq!(err.key, "writable[0].point");
        assert!(err.message.contains("has no point `dhw_set`"), "{err}");
    }

    #[test]
    fn limits_that_make_no_sense_are_refused() {
        for (from, to, key) in [
            ("max = 55.0", "max = 40.0", "writable[0].max"),
            ("step = 0.5", "step = 0.0", "writable[0].step"),
            ("step = 0.5", "step = -1.0", "writable[0].step"),
            ("min = 40.0", "min = 40.2", "writable[0].min"),
            ("min = 40.0", "min = nan", "writable[0].min"),
            (
                "max_override_minutes = 240",
                "max_override_minutes = 0",
                "writable[0].max_override_minutes",
            ),
            (
                "daily_write_cap = 24",
                "daily_write_cap = 1",
                "writable[0].daily_write_cap",
            ),
            (
                "max_change_per_hour = 2.0",
                "max_change_per_hour = 0",
                "writable[1].max_change_per_hour",
            ),
            (
                "value_when_idle = 0",
                "value_when_idle = 0.5",
                "writable[2].value_when_idle",
            ),
        ] {
            let text = ENVELOPE.replacen(from, to, 1);
            let err = invalid(&text);
            assert_eq!(err.key, key, "{from} -> {to}: {err}");
            assert_eq!(err.line, line_of(&text, to), "{err}");
        }
    }

    #[test]
    fn a_setpoint_without_limits_and_an_output_with_them_are_refused() {
        let err = invalid(&ENVELOPE.replacen("min = 40.0\n", "", 1));
        assert_eq!(err.key, "writable[0].min");
        assert!(err.message.contains("missing"), "{err}");
        let text = ENVELOPE.replacen("kind = \"output\"\n", "kind = \"output\"\nmax = 5.0\n", 1);
        let err = invalid(&text);
        assert_eq!(err.key, "writable[2].max");
        let err = invalid(&ENVELOPE.replacen(
            "kind = \"output\"",
            "kind = \"setpoint\"\nmin = 0\nmax = 1\nstep = 1",
            1,
        ));
        assert!(err.message.contains("use kind = \"output\""), "{err}");
        let err = invalid(&ENVELOPE.replacen("kind = \"output\"", "kind = \"valve\"", 1));
        assert_eq!(err.key, "writable[2].kind");
        assert!(err.message.contains("setpoint"), "{err}");
    }

    #[test]
    fn an_input_register_is_refused_even_when_marked_writable() {
        let base = BASE.replacen(
            "function = \"holding\"\naddress = 52",
            "function = \"input\"\naddress = 52",
            1,
        );
        let devices = AgentConfig::from_toml("agent.toml", &base, Path::new("/x"))
            .unwrap()
            .devices;
        let err = parse("agent.toml", &format!("{base}{ENVELOPE}"), &devices, &[]).unwrap_err();
        assert_eq!(err.key, "writable[0].point");
        assert!(
            err.message.contains("no Modbus function writes it"),
            "{err}"
        );
    }

    #[test]
    fn a_pop_room_setpoint_can_be_a_writable_in_tenths() {
        let text = format!(
            "{BASE}\n[[bus]]\nname = \"heating\"\nkind = \"pop\"\npath = \"/dev/ttyUSB1\"\n\n\
             [[device]]\nkey = \"board0\"\nbus = \"heating\"\nunit_id = 0\nprofile = \"pop_board\"\n\n\
             [[writable]]\ndevice = \"board0\"\npoint = \"room_1_floor_setpoint\"\nkind = \"setpoint\"\n\
             min = 18.0\nmax = 26.0\nstep = 0.1\nmax_override_minutes = 240\nschedulable = true\n"
        );
        let cfg = AgentConfig::from_toml("agent.toml", &text, Path::new("/x")).unwrap();
        let w = &cfg.envelope.writables[0];
        assert_eq!(w.key, PointKey::new("board0", "room_1_floor_setpoint"));
        assert_eq!(w.check(21.7), Ok(21.7));
        assert!(w.check(21.75).is_err());
    }

    /// A PLC exchange area on a `modbus_slave` bus (built-in profile).
    const SLAVE: &str = "\n[[bus]]\nname = \"plc\"\nkind = \"modbus_slave\"\npath = \"/dev/ttyUSB1\"\n\n\
        [[device]]\nkey = \"cottage\"\nbus = \"plc\"\nunit_id = 10\nprofile = \"plc_cottage_exchange\"\n";

    fn slave_writable(point: &str, kind: &str) -> String {
        let limits = if kind == "setpoint" {
            "min = 5.0\nmax = 25.0\nstep = 0.5\n"
        } else {
            ""
        };
        format!(
            "\n[[writable]]\ndevice = \"cottage\"\npoint = \"{point}\"\nkind = \"{kind}\"\n{limits}max_override_minutes = 60\n"
        )
    }

    #[test]
    fn a_writable_on_a_slave_device_must_be_a_point_offered_to_the_plc() {
        // to_plc points: a holding register and a coil the PLC echoes, and a
        // discrete input (which a master cannot write, but the agent fills
        // for the PLC) with the value offered when nothing else asks.
        let ok = format!(
            "{BASE}{SLAVE}{}{}{}value_when_idle = 1\n",
            slave_writable("room_setpoint", "setpoint"),
            slave_writable("heating_request", "output"),
            slave_writable("server_link_up", "output"),
        );
        let cfg = AgentConfig::from_toml("agent.toml", &ok, Path::new("/x")).unwrap();
        let w = &cfg.envelope.writables;
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].echo.as_deref(), Some("room_setpoint_applied"));
        assert_eq!(w[1].echo.as_deref(), Some("heating_on"));
        assert_eq!(
            (w[2].echo.as_deref(), w[2].value_when_idle),
            (None, Some(1.0))
        );

        // Without an echo the agent never learns what the PLC uses: it needs
        // a value to offer when nothing else asks.
        let text = format!(
            "{BASE}{SLAVE}{}",
            slave_writable("car_heater_request", "output")
        );
        let err = match AgentConfig::from_toml("agent.toml", &text, Path::new("/x")) {
            Err(crate::config::ConfigError::Invalid(e)) => e,
            other => panic!("refused, got {other:?}"),
        };
        assert_eq!(err.key, "writable[0].point");
        assert!(
            err.message
                .contains("without an `echo` point and has no value_when_idle"),
            "{err}"
        );

        // from_plc: what the PLC writes is refused at load, with file and line.
        let text = format!(
            "{BASE}{SLAVE}{}",
            slave_writable("room_setpoint_applied", "setpoint")
        );
        let err = match AgentConfig::from_toml("agent.toml", &text, Path::new("/x")) {
            Err(crate::config::ConfigError::Invalid(e)) => e,
            other => panic!("refused, got {other:?}"),
        };
        assert_eq!(err.key, "writable[0].point");
        assert_eq!(
            err.line,
            tomlfile::line_of(&text, text.find("point = \"room_setpoint_applied").unwrap())
        );
        assert!(
            err.to_string().starts_with("agent.toml line ")
                && err
                    .message
                    .contains("`cottage.room_setpoint_applied` is `from_plc`")
                && err.message.contains("only `to_plc` points"),
            "{err}"
        );

        // A disabled to_plc point is not in the bank.
        let text = format!(
            "{BASE}{SLAVE}\n[[device.point]]\nname = \"spare\"\nfunction = \"holding\"\naddress = 40\n\
             data_type = \"u16\"\ndirection = \"to_plc\"\nwritable = true\nenabled = false\n{}",
            slave_writable("spare", "output") + "value_when_idle = 0\n"
        );
        let err = match AgentConfig::from_toml("agent.toml", &text, Path::new("/x")) {
            Err(crate::config::ConfigError::Invalid(e)) => e,
            other => panic!("refused, got {other:?}"),
        };
        assert!(
            err.message.contains("not in the PLC's exchange area"),
            "{err}"
        );
    }

    #[test]
    fn a_point_not_polled_needs_a_value_when_idle() {
        let base = BASE.replacen(
            "scale = 0.1\nunit = \"degC\"\nwritable = true\n",
            "scale = 0.1\nunit = \"degC\"\nwritable = true\nenabled = false\n",
            1,
        );
        let devices = AgentConfig::from_toml("agent.toml", &base, Path::new("/x"))
            .unwrap()
            .devices;
        let err = parse("agent.toml", &format!("{base}{ENVELOPE}"), &devices, &[]).unwrap_err();
        assert_eq!(err.key, "writable[0].point");
        assert!(err.message.contains("not polled"), "{err}");
        let fixed = ENVELOPE.replacen(
            "daily_write_cap = 24",
            "daily_write_cap = 24\nvalue_when_idle = 45",
            1,
        );
        parse("agent.toml", &format!("{base}{fixed}"), &devices, &[]).unwrap();
    }

    #[test]
    fn a_point_listed_twice_and_an_unknown_key_are_refused() {
        let twice = format!(
            "{ENVELOPE}\n[[writable]]\ndevice = \"heatpump\"\npoint = \"car_heater\"\nkind = \"output\"\nmax_override_minutes = 5\n"
        );
        let err = invalid(&twice);
        assert_eq!(err.key, "writable[3].point");
        let err = invalid(&ENVELOPE.replacen("schedulable = true", "schedule = true", 1));
        assert_eq!(err.key, "writable[1].schedule");
    }

    #[test]
    fn an_action_outside_its_writables_limits_is_refused() {
        let text = ENVELOPE.replacen("value = 55", "value = 60", 1);
        let err = invalid(&text);
        assert_eq!(err.key, "action[0].write[0].value");
        assert_eq!(err.line, line_of(&text, "value = 60"));
        assert!(err.message.contains("outside the limits"), "{err}");
        let err = invalid(&ENVELOPE.replacen("value = 55", "value = 54.2", 1));
        assert!(err.message.contains("multiple of the step"), "{err}");
    }

    #[test]
    fn an_action_on_a_point_without_writable_entry_or_without_writes_is_refused() {
        let no_writes = "\n[[action]]\nname = \"boost\"\nmax_duration_minutes = 5\n";
        let err = invalid(no_writes);
        assert_eq!(err.key, "action[0].write");
        let orphan = "\n[[action]]\nname = \"boost\"\nmax_duration_minutes = 5\n[[action.write]]\ndevice = \"heatpump\"\npoint = \"dhw_setpoint\"\nvalue = 50\n";
        let err = invalid(orphan);
        assert_eq!(err.key, "action[0].write[0].point");
        assert!(err.message.contains("no [[writable]] entry"), "{err}");
    }

    #[test]
    fn action_names_are_checked_and_unique() {
        let err = invalid(&ENVELOPE.replacen("name = \"boost_dhw\"", "name = \"Boost DHW\"", 1));
        assert_eq!(err.key, "action[0].name");
        let again = ENVELOPE.find("[[action]]").map(|i| &ENVELOPE[i..]).unwrap();
        let err = invalid(&format!("{ENVELOPE}{again}"));
        assert_eq!(err.key, "action[1].name");
        assert!(err.message.contains("twice"), "{err}");
    }

    #[test]
    fn check_snaps_to_the_grid_and_refuses_what_is_outside() {
        let env = envelope();
        let room = env
            .writable(&PointKey::new("heatpump", "room_setpoint"))
            .unwrap();
        assert_eq!(room.check(21.3), Ok(21.3));
        assert_eq!(room.check(21.3 + 1e-12), Ok(21.3));
        assert_eq!(room.check(0.1 + 0.2 + 20.0), Ok(20.3));
        assert!(room.check(21.35).is_err());
        assert!(room.check(24.1).is_err());
        assert!(room.check(17.9).is_err());
        assert!(room.check(f64::NAN).is_err());
        assert!(room.check(f64::INFINITY).is_err());
        assert_eq!(room.check(24.0), Ok(24.0));
        let car = env
            .writable(&PointKey::new("heatpump", "car_heater"))
            .unwrap();
        assert_eq!(car.check(1.0), Ok(1.0));
        assert!(car.check(2.0).is_err());
        assert_eq!(room.clamp(30.0), 24.0);
        assert_eq!(room.clamp(21.349), 21.3);
        assert_eq!(room.clamp(f64::NAN), 18.0);
    }

    #[test]
    fn decimals_of_common_steps() {
        assert_eq!(decimals_of(0.1), 1);
        assert_eq!(decimals_of(0.5), 1);
        assert_eq!(decimals_of(0.25), 2);
        assert_eq!(decimals_of(1.0), 0);
        assert_eq!(decimals_of(5.0), 0);
    }
}
