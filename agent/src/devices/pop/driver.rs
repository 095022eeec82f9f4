//! [`PopDriver`]: the poller's [`BusDriver`] for POP boards.
//!
//! A device is one board (`unit_id` = board number). Its plan reads every
//! room its points need in as few room-block requests as possible (the span
//! from the lowest to the highest room, 20 rooms a request), plus one outputs
//! request and one alarms request when points need them. An implausible
//! value is left out of the readings and reported in the poll's outcome
//! (the device answered, so it stays online, with the problem shown).
//!
//! Writes: setpoints in 0.1 °C steps, outputs on/off by hand, and
//! `output_manual` = 0 to hand an output back to its clock table. Every
//! write is read back: a board that reports another value is a
//! [`WriteError::Mismatch`], a failed read-back [`WriteError::Unverified`].
//!
//! Device timers ([`BusDriver::timer`]): every `output` point has a clock
//! table of [`CLOCK_SLOTS`] entries. A table is written slot by slot, only
//! the slots that differ (the boards keep their tables in EEPROM), each read
//! back; handing an output to its table is `set output` 2; the board's clock
//! is read and set with functions 0x05 and 0x14, the set read back.

use protocol::{Quality, Reading};
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_serial::SerialStream;
use tracing::warn;

use super::{
    PopClient, PopError,
    message::{
        BoardTime, CLOCK_SLOTS, ClockEntry, MAX_ROOMS_PER_READ, OutputCommand, SETPOINT_RANGE,
        SetpointKind, Tenths,
    },
};
use crate::{
    config::DeviceConfig,
    devices::timer::{TimerCaps, TimerEntry, TimerOp, TimerReply, assign_slots},
    poller::{BusDriver, PollOutcome, PolledDevice, WriteError},
    registers::{Point, PopField, PopSpec},
};

/// A clock read back after setting it may be this far from the time it
/// should read (the exchange itself takes bus time).
pub const CLOCK_READ_BACK_TOLERANCE: time::Duration = time::Duration::seconds(5);

fn to_clock(e: TimerEntry) -> ClockEntry {
    ClockEntry {
        days: e.days,
        on: e.on,
        off: e.off,
    }
}

fn from_clock(e: ClockEntry) -> TimerEntry {
    TimerEntry {
        days: e.days,
        on: e.on,
        off: e.off,
    }
}

/// POP points of one board, as the driver reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopPlan {
    /// Room blocks to read: (first room, count).
    pub room_blocks: Vec<(u8, u8)>,
    /// Read the outputs.
    pub outputs: bool,
    /// Read the alarm inputs.
    pub alarms: bool,
}

impl PopPlan {
    /// The fewest requests that cover `specs`.
    pub fn for_specs<'a>(specs: impl IntoIterator<Item = &'a PopSpec>) -> PopPlan {
        let mut rooms: Option<(u8, u8)> = None;
        let mut plan = PopPlan {
            room_blocks: Vec::new(),
            outputs: false,
            alarms: false,
        };
        for s in specs {
            match s.field {
                PopField::RoomTemp | PopField::FloorSetpoint | PopField::CeilingSetpoint => {
                    rooms = Some(rooms.map_or((s.index, s.index), |(lo, hi)| {
                        (lo.min(s.index), hi.max(s.index))
                    }));
                }
                PopField::Output | PopField::OutputManual => plan.outputs = true,
                PopField::Alarm => plan.alarms = true,
            }
        }
        if let Some((lo, hi)) = rooms {
            let mut first = u16::from(lo);
            while first <= u16::from(hi) {
                let count = (u16::from(hi) - first + 1).min(u16::from(MAX_ROOMS_PER_READ));
                // Both are within 1..=255 (room indices are u8, count <= 20).
                plan.room_blocks.push((first as u8, count as u8));
                first += count;
            }
        }
        plan
    }

    /// Requests one poll makes.
    pub fn requests(&self) -> usize {
        self.room_blocks.len() + usize::from(self.outputs) + usize::from(self.alarms)
    }
}

/// The POP driver of one bus.
#[derive(Debug)]
pub struct PopDriver<T = SerialStream> {
    client: PopClient<T>,
}

impl<T> PopDriver<T> {
    /// Drive the boards through `client`.
    pub fn new(client: PopClient<T>) -> Self {
        PopDriver { client }
    }

    /// The client, for what the poller does not do (clock tables, stats).
    pub fn client(&mut self) -> &mut PopClient<T> {
        &mut self.client
    }
}

fn transport(e: PopError) -> WriteError {
    match e {
        PopError::Invalid(reason) => WriteError::Unsupported(reason),
        other => WriteError::Transport(other.to_string()),
    }
}

fn reading(dev_key: &str, point: &Point, value: f64, ts: OffsetDateTime) -> Reading {
    Reading {
        device: dev_key.to_owned(),
        point: point.key.clone(),
        ts,
        value,
        unit: point.unit.clone(),
        quality: Quality::Good,
    }
}

fn b(v: bool) -> f64 {
    if v { 1.0 } else { 0.0 }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> PopDriver<T> {
    /// The clock table of `output` of `board` (slot 1 first).
    pub async fn read_clock_table(
        &mut self,
        board: u8,
        output: u8,
    ) -> Result<Vec<ClockEntry>, PopError> {
        self.client.read_clock_table(board, output).await
    }

    /// Set `slot` of `output`'s clock table on `board`, then read the table
    /// back; a board that kept something else is an error.
    pub async fn set_clock_entry(
        &mut self,
        board: u8,
        output: u8,
        slot: u8,
        entry: ClockEntry,
    ) -> Result<(), WriteError> {
        self.client
            .set_clock_entry(board, output, slot, entry)
            .await
            .map_err(transport)?;
        let table = self
            .client
            .read_clock_table(board, output)
            .await
            .map_err(|e| WriteError::Unverified {
                point: format!("board {board} output {output} clock slot {slot}"),
                reason: e.to_string(),
            })?;
        let kept = table
            .get(usize::from(slot.max(1) - 1))
            .copied()
            .unwrap_or(ClockEntry::EMPTY);
        if kept == entry {
            Ok(())
        } else {
            Err(WriteError::Refused(format!(
                "board {board} output {output} slot {slot} holds {kept:?} after writing {entry:?}"
            )))
        }
    }

    /// Every slot of `output`'s table on `board` (empty ones included).
    async fn full_table(&mut self, board: u8, output: u8) -> Result<Vec<TimerEntry>, PopError> {
        let mut t: Vec<TimerEntry> = self
            .client
            .read_clock_table(board, output)
            .await?
            .into_iter()
            .map(from_clock)
            .collect();
        t.resize(usize::from(CLOCK_SLOTS), TimerEntry::EMPTY);
        Ok(t)
    }

    async fn write_table(
        &mut self,
        board: u8,
        output: u8,
        wanted: &[TimerEntry],
    ) -> Result<TimerReply, WriteError> {
        let current = self
            .full_table(board, output)
            .await
            .map_err(|e| WriteError::Transport(format!("reading the clock table first: {e}")))?;
        let Some(table) = assign_slots(&current, wanted, usize::from(CLOCK_SLOTS)) else {
            return Err(WriteError::Unsupported(format!(
                "{} entries do not fit the {CLOCK_SLOTS} slots of board {board} output {output}",
                wanted.len()
            )));
        };
        let mut slots_written = 0;
        for (slot, (want, have)) in (1u8..).zip(table.iter().zip(&current)) {
            if want == have {
                continue;
            }
            self.set_clock_entry(board, output, slot, to_clock(*want))
                .await?;
            slots_written += 1;
        }
        Ok(TimerReply::Written {
            table,
            slots_written,
        })
    }

    async fn set_board_clock(
        &mut self,
        board: u8,
        local: &crate::devices::timer::LocalNow,
    ) -> Result<TimerReply, WriteError> {
        let to = BoardTime::new(local.now())
            .map_err(|e| WriteError::Unsupported(format!("board {board}: {e}")))?;
        self.client.set_clock(board, to).await.map_err(transport)?;
        let back = self
            .client
            .read_clock(board)
            .await
            .map_err(|e| WriteError::Unverified {
                point: format!("board {board} clock"),
                reason: e.to_string(),
            })?;
        let off = back.datetime() - local.now();
        if off.abs() <= CLOCK_READ_BACK_TOLERANCE {
            Ok(TimerReply::ClockSet { to: to.datetime() })
        } else {
            Err(WriteError::Refused(format!(
                "board {board}'s clock reads {} after being set to {}",
                back.datetime(),
                to.datetime()
            )))
        }
    }

    async fn write_setpoint(
        &mut self,
        board: u8,
        spec: PopSpec,
        kind: SetpointKind,
        point: &Point,
        value: f64,
    ) -> Result<(), WriteError> {
        let encode_err = |reason: String| WriteError::Encode {
            point: point.key.clone(),
            value,
            reason,
        };
        if !SETPOINT_RANGE.contains(&value) {
            return Err(encode_err(format!(
                "setpoints are {:.1}..={:.1} °C",
                SETPOINT_RANGE.start(),
                SETPOINT_RANGE.end()
            )));
        }
        let tenths = Tenths::from_celsius(value).map_err(encode_err)?;
        self.client
            .set_setpoint(board, spec.index, kind, tenths.celsius())
            .await
            .map_err(transport)?;
        let unverified = |reason: String| WriteError::Unverified {
            point: point.key.clone(),
            reason,
        };
        let rooms = self
            .client
            .read_rooms(board, spec.index, 1)
            .await
            .map_err(|e| unverified(e.to_string()))?;
        let now = rooms
            .first()
            .zip(spec.field.temp_kind())
            .map(|(r, k)| r.get(k).clone());
        match now {
            Some(Ok(v)) if Tenths::from_celsius(v) == Ok(tenths) => Ok(()),
            Some(Ok(v)) => Err(WriteError::Mismatch {
                point: point.key.clone(),
                wrote: tenths.celsius(),
                read_back: v,
            }),
            Some(Err(e)) => Err(unverified(e.to_string())),
            None => Err(unverified(format!(
                "board {board} sent no room {}",
                spec.index
            ))),
        }
    }

    async fn write_output(
        &mut self,
        board: u8,
        spec: PopSpec,
        point: &Point,
        value: f64,
    ) -> Result<(), WriteError> {
        let on = match value {
            0.0 => false,
            1.0 => true,
            _ => {
                return Err(WriteError::Encode {
                    point: point.key.clone(),
                    value,
                    reason: "an output takes 1 (on) or 0 (off)".into(),
                });
            }
        };
        let (command, expect_manual) = match (spec.field, on) {
            (PopField::Output, true) => (OutputCommand::On, true),
            (PopField::Output, false) => (OutputCommand::Off, true),
            (_, false) => (OutputCommand::Clock, false),
            (_, true) => {
                // Keep the present state, by hand.
                let now = self.client.read_outputs(board).await.map_err(transport)?;
                match now.is_on(spec.index) {
                    Some(true) => (OutputCommand::On, true),
                    Some(false) => (OutputCommand::Off, true),
                    None => {
                        return Err(WriteError::Refused(format!(
                            "board {board} has no output {}",
                            spec.index
                        )));
                    }
                }
            }
        };
        self.client
            .set_output(board, spec.index, command)
            .await
            .map_err(transport)?;
        let after = self
            .client
            .read_outputs(board)
            .await
            .map_err(|e| WriteError::Unverified {
                point: point.key.clone(),
                reason: e.to_string(),
            })?;
        let (Some(is_on), Some(manual)) = (after.is_on(spec.index), after.is_manual(spec.index))
        else {
            return Err(WriteError::Refused(format!(
                "board {board} reports {} outputs, not {}",
                after.count, spec.index
            )));
        };
        // What the point itself reads now, against what was written.
        let read_back = match spec.field {
            PopField::Output => is_on,
            _ => manual,
        };
        // Back to the clock, its table decides the state; by hand it must be the one asked.
        let state_ok = match command {
            OutputCommand::On => is_on,
            OutputCommand::Off => !is_on,
            OutputCommand::Clock => true,
        };
        if state_ok && manual == expect_manual {
            Ok(())
        } else {
            Err(WriteError::Mismatch {
                point: point.key.clone(),
                wrote: value,
                read_back: b(read_back),
            })
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> BusDriver for PopDriver<T> {
    type Plan = PopPlan;

    fn plan(&self, _device: &DeviceConfig, points: &[Point]) -> PopPlan {
        // Only POP points reach a pop bus (config checks profile protocols).
        PopPlan::for_specs(points.iter().filter_map(|p| p.spec.pop()))
    }

    async fn poll(&mut self, dev: &PolledDevice<PopPlan>) -> (Vec<Reading>, PollOutcome) {
        let board = dev.unit_id;
        let mut readings = Vec::new();
        let mut problems = Vec::new();
        let with_spec = || {
            dev.points
                .iter()
                .filter_map(|p| p.spec.pop().map(|s| (p, *s)))
        };
        for &(first, count) in &dev.plan.room_blocks {
            let rooms = match self.client.read_rooms(board, first, count).await {
                Ok(r) => r,
                Err(e) => return (readings, PollOutcome::Failed(e.to_string())),
            };
            let ts = OffsetDateTime::now_utc();
            for (point, spec) in with_spec() {
                let (Some(kind), Some(room)) = (
                    spec.field.temp_kind(),
                    rooms.iter().find(|r| r.number == spec.index),
                ) else {
                    continue;
                };
                match room.get(kind) {
                    Ok(v) => readings.push(reading(&dev.key, point, *v, ts)),
                    // A bad read is reported, never stored.
                    Err(e) => problems.push(format!("{}: {e}", point.key)),
                }
            }
        }
        if dev.plan.outputs {
            let outputs = match self.client.read_outputs(board).await {
                Ok(o) => o,
                Err(e) => return (readings, PollOutcome::Failed(e.to_string())),
            };
            let ts = OffsetDateTime::now_utc();
            for (point, spec) in with_spec() {
                let v = match spec.field {
                    PopField::Output => outputs.is_on(spec.index),
                    PopField::OutputManual => outputs.is_manual(spec.index),
                    _ => continue,
                };
                match v {
                    Some(v) => readings.push(reading(&dev.key, point, b(v), ts)),
                    None => problems.push(format!(
                        "{}: the board has {} outputs, not {}",
                        point.key, outputs.count, spec.index
                    )),
                }
            }
        }
        if dev.plan.alarms {
            let alarms = match self.client.read_alarms(board).await {
                Ok(a) => a,
                Err(e) => return (readings, PollOutcome::Failed(e.to_string())),
            };
            let ts = OffsetDateTime::now_utc();
            for (point, spec) in with_spec() {
                if spec.field != PopField::Alarm {
                    continue;
                }
                match alarms.is_active(spec.index) {
                    Some(v) => readings.push(reading(&dev.key, point, b(v), ts)),
                    None => problems.push(format!(
                        "{}: the board has {} alarm inputs, not {}",
                        point.key, alarms.count, spec.index
                    )),
                }
            }
        }
        if !problems.is_empty() {
            warn!(device = %dev.key, board, problems = %problems.join("; "), "values not stored");
        }
        (
            readings,
            PollOutcome::Answered {
                exceptions: problems,
            },
        )
    }

    async fn write(
        &mut self,
        dev: &PolledDevice<PopPlan>,
        point: &Point,
        value: f64,
    ) -> Result<(), WriteError> {
        let Some(spec) = point.spec.pop().copied() else {
            return Err(WriteError::Unsupported(format!(
                "`{}` is not a POP point",
                point.key
            )));
        };
        if !point.writable {
            return Err(WriteError::NotWritable(point.key.clone()));
        }
        let board = dev.unit_id;
        match spec.field {
            PopField::FloorSetpoint => {
                self.write_setpoint(board, spec, SetpointKind::Floor, point, value)
                    .await
            }
            PopField::CeilingSetpoint => {
                self.write_setpoint(board, spec, SetpointKind::Ceiling, point, value)
                    .await
            }
            PopField::Output | PopField::OutputManual => {
                self.write_output(board, spec, point, value).await
            }
            PopField::RoomTemp | PopField::Alarm => Err(WriteError::Unsupported(format!(
                "`{}` is a measurement ({}); it cannot be written",
                point.key,
                spec.field.name()
            ))),
        }
    }

    async fn timer(
        &mut self,
        dev: &PolledDevice<PopPlan>,
        point: &Point,
        op: TimerOp,
    ) -> Result<TimerReply, WriteError> {
        let board = dev.unit_id;
        // The clock is the board's: any of its points names it.
        match &op {
            TimerOp::ReadClock(local) => {
                let t = self.client.read_clock(board).await.map_err(transport)?;
                return Ok(TimerReply::Clock {
                    device: t.datetime(),
                    local: local.now(),
                });
            }
            TimerOp::SetClock(local) => return self.set_board_clock(board, local).await,
            _ => {}
        }
        let output = match point.spec.pop() {
            Some(s) if s.field == PopField::Output => s.index,
            // The manual flag names the same output, but only `output` is
            // switched by the table (what a schedule is for).
            Some(s) if s.field == PopField::OutputManual && !matches!(op, TimerOp::Describe) => {
                s.index
            }
            _ => {
                return Err(WriteError::Unsupported(format!(
                    "`{}` is not a POP output: only outputs have clock tables",
                    point.key
                )));
            }
        };
        match op {
            TimerOp::Describe => Ok(TimerReply::Caps(TimerCaps { slots: CLOCK_SLOTS })),
            TimerOp::ReadTable => self
                .full_table(board, output)
                .await
                .map(TimerReply::Table)
                .map_err(transport),
            TimerOp::WriteTable(wanted) => self.write_table(board, output, &wanted).await,
            TimerOp::FollowTable => {
                self.client
                    .set_output(board, output, OutputCommand::Clock)
                    .await
                    .map_err(transport)?;
                let after =
                    self.client
                        .read_outputs(board)
                        .await
                        .map_err(|e| WriteError::Unverified {
                            point: point.key.clone(),
                            reason: e.to_string(),
                        })?;
                match after.is_manual(output) {
                    Some(false) => Ok(TimerReply::Following),
                    Some(true) => Err(WriteError::Refused(format!(
                        "board {board} keeps output {output} by hand after being handed back to its clock table"
                    ))),
                    None => Err(WriteError::Refused(format!(
                        "board {board} reports {} outputs, not {output}",
                        after.count
                    ))),
                }
            }
            TimerOp::ReadClock(_) | TimerOp::SetClock(_) => {
                Err(WriteError::Unsupported("clock ops are served above".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registers::load_builtin;

    fn spec(field: PopField, index: u8) -> PopSpec {
        PopSpec { field, index }
    }

    #[test]
    fn the_pop_board_profile_is_read_in_three_requests() {
        let p = load_builtin("pop_board").unwrap().unwrap();
        let plan = PopPlan::for_specs(p.points.iter().filter_map(|p| p.spec.pop()));
        assert_eq!(
            plan,
            PopPlan {
                room_blocks: vec![(1, 8)],
                outputs: true,
                alarms: true
            }
        );
        assert_eq!(plan.requests(), 3);
    }

    #[test]
    fn rooms_beyond_twenty_take_more_blocks_and_unused_kinds_none() {
        let specs = [
            spec(PopField::RoomTemp, 3),
            spec(PopField::CeilingSetpoint, 44),
            spec(PopField::FloorSetpoint, 10),
        ];
        let plan = PopPlan::for_specs(&specs);
        assert_eq!(plan.room_blocks, [(3, 20), (23, 20), (43, 2)]);
        assert!(!plan.outputs && !plan.alarms);
        let plan = PopPlan::for_specs(&[spec(PopField::Alarm, 2)]);
        assert_eq!((plan.room_blocks.len(), plan.alarms), (0, true));
        // the last room there is
        let plan = PopPlan::for_specs(&[spec(PopField::RoomTemp, 255)]);
        assert_eq!(plan.room_blocks, [(255, 1)]);
    }
}
