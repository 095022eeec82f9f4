//! Remote control inside a safety envelope the server cannot change.
//!
//! A breached server must not be able to hurt the house (50 °C water into a
//! floor-heating loop, a shunt valve in its summer position in January). So the
//! agent, not the server, decides what may be written:
//!
//! - [`envelope`]: the envelope itself, read from the agent's **local**
//!   configuration (`[[writable]]` and `[[action]]` tables of `agent.toml`, a
//!   root-owned file): which points may be written, their hard limits (min,
//!   max, step, change per hour, longest override, writes per day) and the
//!   named safe actions such as "boost hot water". Mistakes name the file, line
//!   and key like the rest of the configuration.
//! - [`schedule`]: weekly clock tables with exception days, validated and
//!   evaluated in their IANA time zone (jiff, system tzdb with a bundled
//!   fallback), with a documented rule for the daylight-saving nights.
//! - [`controller`]: the pure decision core. [`Controller::decide`] accepts or
//!   refuses a [`protocol::Command`] with a reason; [`Controller::wanted`]
//!   says per point who wins (running action > manual override > schedule >
//!   idle value > leave the device alone); [`Controller::next_deadline`] is
//!   the next instant anything changes (so overrides and boosts end on the
//!   agent's clock, link or no link); [`Controller::due_writes`] lists the
//!   writes needed, never rewriting an unchanged value and counting each
//!   point's daily write budget. No I/O and no clock reads: `now` is passed in.
//! - [`store`]: schedules, overrides, running actions and write budgets
//!   survive a restart in a small JSON file written atomically; a missing or
//!   corrupt file starts empty with a loud log line, never a crash.
//! - [`device_table`]: where a schedule runs: in a device's own clock table
//!   (POP boards) when it fits, else at the agent; packing a schedule into
//!   table entries; the note that says so. Pure.
//! - [`device_keeper`]: the I/O of it, through protocol-neutral timer ops on
//!   the bus queues: writes tables (only differing slots), looks at them
//!   again (a keypad change is reported, never fought), keeps the devices'
//!   clocks on the schedule's local time, also right after DST changes.
//! - [`executor`]: the task that runs it: commands from the uplink in,
//!   writes to the devices' bus queues (read back), results and control
//!   states out, and deadlines kept on the agent's own clock.
//!
//! ```
//! use agent::control::{Controller, PointKey};
//! use time::macros::datetime;
//!
//! let envelope = agent::control::Envelope::default();
//! let ctl = Controller::new(envelope);
//! let now = datetime!(2026-01-15 12:00 UTC);
//! let w = ctl.wanted(&PointKey::new("heatpump", "dhw_setpoint"), now);
//! assert_eq!(w.value, None); // not in the envelope: the agent never writes it
//! ```

pub mod controller;
pub mod device_keeper;
pub mod device_table;
pub mod envelope;
pub mod executor;
pub mod schedule;
pub mod store;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use controller::{Controller, Decision, Wanted, Write};
pub use envelope::{ActionDef, ActionWrite, Envelope, Writable};
pub use schedule::Schedule;

/// A point of a device: `device.point` in messages and logs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PointKey {
    /// Device key.
    pub device: String,
    /// Point key within the device.
    pub point: String,
}

impl PointKey {
    /// The point `point` of device `device`.
    pub fn new(device: impl Into<String>, point: impl Into<String>) -> Self {
        PointKey {
            device: device.into(),
            point: point.into(),
        }
    }
}

impl fmt::Display for PointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.device, self.point)
    }
}
