//! What POP frames carry (pure): the one function table and the data layout
//! of every request and reply, in one place.
//!
//! The function numbers and layouts of real boards are not published
//! (`shared/reference/pop-protocol.md`, "Function numbers"); everything here
//! is **[chosen]** so that a real board's numbers and layouts can be filled
//! in by editing this file alone: framing ([`super::codec`]), the client and
//! the driver only go through [`Function`], [`Request`] and [`Response`].
//!
//! Numbering: rooms, outputs, alarm inputs and clock-table slots are counted
//! from 1 on the wire, as on the keypad's display, and a profile point's
//! `index` is the same number. Temperatures are tenths of a degree Celsius,
//! two's complement, big-endian ([`Tenths`]).
//!
//! | function | request data | reply data |
//! |---|---|---|
//! | 0x01 read rooms | first room, count (1..=20) | first, count, count × (measured, floor setpoint, ceiling setpoint) as i16 BE |
//! | 0x02 read outputs | 0x00 | count (1..=16), on mask u16 BE, manual mask u16 BE (bit *i*−1 = output *i*; manual clear = follows its clock table) |
//! | 0x03 read clock table | output | output, count (0..=8), count × entry |
//! | 0x04 read alarm inputs **[chosen]** | 0x00 | count (1..=16), active mask u16 BE (input 1 fire, 2 burglary, 3 mains failure by convention) |
//! | 0x05 read board clock **[chosen]** | 0x00 | board time (6 bytes) |
//! | 0x11 set room setpoint | room, which (0 floor, 1 ceiling), value i16 BE | echo |
//! | 0x12 set output | output, command (0 off by hand, 1 on by hand, 2 back to the clock table) | echo |
//! | 0x13 set clock entry | output, slot (1..=8), entry | echo |
//! | 0x14 set board clock **[chosen]** | board time (6 bytes) | echo |
//!
//! A clock-table entry is five bytes: a day mask (bit 0 Monday … bit 6
//! Sunday; 0 = empty slot), then on hour, on minute, off hour, off minute.
//! An entry whose off time is earlier than its on time runs past midnight;
//! an entry whose on and off times are equal is never on (so a whole day
//! takes two entries, see `control::device_table`).
//!
//! **[chosen]** The board clock is the local civil date and time the clock
//! tables run on, to the second: year − 2000, month (1..=12), day, hour,
//! minute, second, one byte each ([`BoardTime`]). A date rather than a bare
//! weekday and time, as real-time-clock chips keep it: the weekday the tables
//! use follows from the date, and the agent can compare the board's clock
//! with its own exactly (across midnight and the week's end). The board knows
//! nothing of time zones or daylight saving: the agent sets it to the
//! schedule's local time and sets it again after each change of the offset.
//! 0x04 already reads the alarm inputs, so reading the clock is 0x05;
//! setting it is 0x14, next to the other set commands.
//!
//! **[chosen]** A set command's reply echoes the request's data. The
//! reference describes the acknowledgement as "device, length, function,
//! checksum" without data, but a frame carries 1..=123 data bytes; the echo
//! keeps that rule and lets the client check that the board accepted exactly
//! what was sent.

use std::ops::RangeInclusive;

/// The function table. The only place function numbers appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// Read a block of rooms: measured temperature and the two setpoints.
    ReadRooms,
    /// Read the on/off state and the manual/clock mode of every output.
    ReadOutputs,
    /// Read one output's weekly clock table.
    ReadClockTable,
    /// Read the alarm inputs. **[chosen]**: the reference lists alarm inputs
    /// among what boards hold but no function for them.
    ReadAlarms,
    /// Set a room's floor or ceiling setpoint.
    SetSetpoint,
    /// Set an output on or off by hand, or give it back to its clock table.
    SetOutput,
    /// Set one entry of an output's clock table.
    SetClockEntry,
    /// Read the board's clock. **[chosen]**
    ReadClock,
    /// Set the board's clock. **[chosen]**
    SetClock,
}

impl Function {
    /// Every function, in code order.
    pub const ALL: [Function; 9] = [
        Function::ReadRooms,
        Function::ReadOutputs,
        Function::ReadClockTable,
        Function::ReadAlarms,
        Function::ReadClock,
        Function::SetSetpoint,
        Function::SetOutput,
        Function::SetClockEntry,
        Function::SetClock,
    ];

    /// The function byte on the wire.
    pub fn code(self) -> u8 {
        match self {
            Function::ReadRooms => 0x01,
            Function::ReadOutputs => 0x02,
            Function::ReadClockTable => 0x03,
            Function::ReadAlarms => 0x04,
            Function::ReadClock => 0x05,
            Function::SetSetpoint => 0x11,
            Function::SetOutput => 0x12,
            Function::SetClockEntry => 0x13,
            Function::SetClock => 0x14,
        }
    }

    /// The function a byte names, if any.
    pub fn from_code(code: u8) -> Option<Function> {
        Function::ALL.into_iter().find(|f| f.code() == code)
    }

    /// True for set commands (their reply is an acknowledgement).
    pub fn is_set(self) -> bool {
        matches!(
            self,
            Function::SetSetpoint
                | Function::SetOutput
                | Function::SetClockEntry
                | Function::SetClock
        )
    }
}

/// Bytes of one room in a room-block reply.
pub const ROOM_RECORD: usize = 6;
/// Most rooms one read returns: (123 − 2 header bytes) / 6.
pub const MAX_ROOMS_PER_READ: u8 = 20;
/// Outputs a board reports (the width of the u16 masks).
pub const MAX_OUTPUTS: u8 = 16;
/// Alarm inputs a board reports (the width of the u16 mask).
pub const MAX_ALARM_INPUTS: u8 = 16;
/// Entries in one output's clock table.
pub const CLOCK_SLOTS: u8 = 8;
/// Bytes of one clock-table entry.
pub const CLOCK_ENTRY: usize = 5;

/// A measured room temperature outside this range (°C) is a bad read, not a
/// measurement: a room at 300 °C is a broken sensor or a garbled frame.
pub const ROOM_TEMP_PLAUSIBLE: RangeInclusive<f64> = -30.0..=60.0;
/// Setpoints a board can hold (°C). Read outside it: a bad read. Writes
/// outside it are refused before sending.
pub const SETPOINT_RANGE: RangeInclusive<f64> = 0.0..=45.0;

/// A temperature in tenths of a degree Celsius, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tenths(pub i16);

impl Tenths {
    /// Degrees Celsius.
    pub fn celsius(self) -> f64 {
        f64::from(self.0) / 10.0
    }

    /// `celsius` as tenths, refusing values off the 0.1 °C grid (float error
    /// of a decimal such as 22.3 is tolerated) or outside the i16 range.
    pub fn from_celsius(celsius: f64) -> Result<Tenths, String> {
        let scaled = celsius * 10.0;
        let rounded = scaled.round();
        if !scaled.is_finite() || (scaled - rounded).abs() > 1e-6 {
            return Err(format!("{celsius} °C is not a multiple of 0.1 °C"));
        }
        if rounded < f64::from(i16::MIN) || rounded > f64::from(i16::MAX) {
            return Err(format!("{celsius} °C is out of range"));
        }
        Ok(Tenths(rounded as i16))
    }
}

/// Which temperature of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TempKind {
    /// The measured room temperature.
    Measured,
    /// Floor-heating setpoint.
    Floor,
    /// Ceiling-heating setpoint.
    Ceiling,
}

impl TempKind {
    /// The values a read of this kind may plausibly hold.
    pub fn plausible(self) -> RangeInclusive<f64> {
        match self {
            TempKind::Measured => ROOM_TEMP_PLAUSIBLE,
            TempKind::Floor | TempKind::Ceiling => SETPOINT_RANGE,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            TempKind::Measured => "room temperature",
            TempKind::Floor => "floor setpoint",
            TempKind::Ceiling => "ceiling setpoint",
        }
    }
}

/// A value a board sent that cannot be true: reported, never stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "implausible {}: {:.1} °C is outside {:.1}..={:.1} °C",
    kind.describe(), value.celsius(), kind.plausible().start(), kind.plausible().end()
)]
pub struct Implausible {
    /// Which temperature.
    pub kind: TempKind,
    /// The raw value received.
    pub value: Tenths,
}

/// `value` in °C when plausible for `kind`.
pub fn check_temp(kind: TempKind, value: Tenths) -> Result<f64, Implausible> {
    let c = value.celsius();
    if kind.plausible().contains(&c) {
        Ok(c)
    } else {
        Err(Implausible { kind, value })
    }
}

/// Which setpoint a set command changes (wire byte 0 or 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetpointKind {
    /// Floor heating (0).
    Floor,
    /// Ceiling heating (1).
    Ceiling,
}

/// What a set-output command does (wire byte 0, 1 or 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputCommand {
    /// Off, by hand (0).
    Off,
    /// On, by hand (1).
    On,
    /// Back to following the output's clock table (2).
    Clock,
}

/// One room of a room-block reply, raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomRecord {
    /// Measured temperature.
    pub measured: Tenths,
    /// Floor-heating setpoint.
    pub floor: Tenths,
    /// Ceiling-heating setpoint.
    pub ceiling: Tenths,
}

impl RoomRecord {
    /// The value of one kind.
    pub fn get(&self, kind: TempKind) -> Tenths {
        match kind {
            TempKind::Measured => self.measured,
            TempKind::Floor => self.floor,
            TempKind::Ceiling => self.ceiling,
        }
    }
}

/// The outputs of a board: bit *i*−1 of each mask is output *i*.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputStates {
    /// How many outputs the board has (1..=16).
    pub count: u8,
    /// Set bits: output on.
    pub on: u16,
    /// Set bits: set by hand; clear: following its clock table.
    pub manual: u16,
}

impl OutputStates {
    /// Output `n` (1-based) is on; `None` when the board has no such output.
    pub fn is_on(&self, n: u8) -> Option<bool> {
        bit(self.on, n, self.count)
    }

    /// Output `n` (1-based) is set by hand.
    pub fn is_manual(&self, n: u8) -> Option<bool> {
        bit(self.manual, n, self.count)
    }
}

/// The alarm inputs of a board: bit *i*−1 is input *i*.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmInputs {
    /// How many inputs the board has (1..=16).
    pub count: u8,
    /// Set bits: input active.
    pub active: u16,
}

impl AlarmInputs {
    /// Input `n` (1-based) is active; `None` when the board has no such input.
    pub fn is_active(&self, n: u8) -> Option<bool> {
        bit(self.active, n, self.count)
    }
}

fn bit(mask: u16, n: u8, count: u8) -> Option<bool> {
    (1..=count.min(16))
        .contains(&n)
        .then(|| mask & (1 << (n - 1)) != 0)
}

/// A minute of the day, 0..1440.
pub type MinuteOfDay = u16;

/// One weekly period of a clock table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClockEntry {
    /// Bit 0 Monday … bit 6 Sunday; 0 = an empty slot.
    pub days: u8,
    /// When the output turns on.
    pub on: MinuteOfDay,
    /// When it turns off; before `on` = past midnight into the next day.
    pub off: MinuteOfDay,
}

impl ClockEntry {
    /// An empty slot.
    pub const EMPTY: ClockEntry = ClockEntry {
        days: 0,
        on: 0,
        off: 0,
    };

    /// Whether the entry keeps its output on at `minute` of `weekday`
    /// (0 = Monday). An overnight period belongs to the day it starts.
    pub fn is_active(&self, weekday: u8, minute: MinuteOfDay) -> bool {
        let day = |d: u8| self.days & (1 << (d % 7)) != 0;
        if self.on <= self.off {
            day(weekday) && (self.on..self.off).contains(&minute)
        } else {
            (day(weekday) && minute >= self.on) || (day(weekday + 6) && minute < self.off)
        }
    }

    fn validate(&self) -> Result<(), LayoutError> {
        check("clock entry days", self.days, 0..=0x7F)?;
        check("clock entry on time (minute of day)", self.on, 0..=1439)?;
        check("clock entry off time (minute of day)", self.off, 0..=1439)?;
        Ok(())
    }

    fn encode(&self, out: &mut Vec<u8>) {
        // validate() bounds on/off below 1440, so hours and minutes fit a byte.
        let hm = |m: MinuteOfDay| [(m / 60) as u8, (m % 60) as u8];
        out.push(self.days);
        out.extend_from_slice(&hm(self.on));
        out.extend_from_slice(&hm(self.off));
    }

    fn decode(b: &[u8]) -> Result<ClockEntry, LayoutError> {
        let [days, on_h, on_m, off_h, off_m] = *b else {
            return Err(LayoutError::Length {
                what: "clock entry",
                expected: CLOCK_ENTRY,
                got: b.len(),
            });
        };
        for (what, v, max) in [
            ("clock entry on hour", on_h, 23),
            ("clock entry on minute", on_m, 59),
            ("clock entry off hour", off_h, 23),
            ("clock entry off minute", off_m, 59),
        ] {
            check(what, v, 0..=max)?;
        }
        let e = ClockEntry {
            days,
            on: u16::from(on_h) * 60 + u16::from(on_m),
            off: u16::from(off_h) * 60 + u16::from(off_m),
        };
        e.validate()?;
        Ok(e)
    }
}

/// Bytes of a board time.
pub const BOARD_TIME: usize = 6;

/// A board's clock: the local date and time its clock tables run on, to the
/// second, as on the wire (see the module doc). Always a real date in
/// 2000..=2255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BoardTime(time::PrimitiveDateTime);

impl BoardTime {
    /// `at`, when its year is one a board can hold (2000..=2255); sub-second
    /// parts are dropped.
    pub fn new(at: time::PrimitiveDateTime) -> Result<BoardTime, LayoutError> {
        check("board clock year", i64::from(at.year()), 2000..=2255)?;
        Ok(BoardTime(at.replace_nanosecond(0).unwrap_or(at)))
    }

    /// The date and time.
    pub fn datetime(self) -> time::PrimitiveDateTime {
        self.0
    }

    /// Day of the week, 0 = Monday, as clock-table day masks count.
    pub fn weekday(self) -> u8 {
        self.0.weekday().number_days_from_monday()
    }

    /// Minute of the day, 0..1440.
    pub fn minute_of_day(self) -> MinuteOfDay {
        u16::from(self.0.hour()) * 60 + u16::from(self.0.minute())
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let t = self.0;
        // `new` keeps the year within 2000..=2255, so it fits a byte.
        let year = u8::try_from(t.year() - 2000).unwrap_or(u8::MAX);
        out.extend_from_slice(&[
            year,
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
        ]);
    }

    fn decode(b: &[u8]) -> Result<BoardTime, LayoutError> {
        let [year, month, day, hour, minute, second] = exact::<BOARD_TIME>("board time", b)?;
        check("board clock month", month, 1..=12)?;
        check("board clock hour", hour, 0..=23)?;
        check("board clock minute", minute, 0..=59)?;
        check("board clock second", second, 0..=59)?;
        let month = time::Month::try_from(month).map_err(|_| LayoutError::OutOfRange {
            what: "board clock month",
            value: month.into(),
            range: "1..=12".into(),
        })?;
        let date =
            time::Date::from_calendar_date(2000 + i32::from(year), month, day).map_err(|_| {
                LayoutError::OutOfRange {
                    what: "board clock day of month",
                    value: day.into(),
                    range: format!(
                        "1..={}",
                        time::util::days_in_month(month, 2000 + i32::from(year))
                    ),
                }
            })?;
        let time =
            time::Time::from_hms(hour, minute, second).map_err(|_| LayoutError::OutOfRange {
                what: "board clock time",
                value: hour.into(),
                range: "00:00:00..=23:59:59".into(),
            })?;
        Ok(BoardTime(time::PrimitiveDateTime::new(date, time)))
    }
}

/// Why data bytes do not fit a function's layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A function byte that is not in the table.
    #[error("unknown function 0x{0:02X}")]
    UnknownFunction(u8),
    /// The data has the wrong number of bytes.
    #[error("{what}: expected {expected} data bytes, got {got}")]
    Length {
        /// Which layout.
        what: &'static str,
        /// Bytes the layout needs.
        expected: usize,
        /// Bytes present.
        got: usize,
    },
    /// A field holds a value outside its range.
    #[error("{what} {value} is outside {range}")]
    OutOfRange {
        /// Which field.
        what: &'static str,
        /// The value.
        value: i64,
        /// The allowed range, as text.
        range: String,
    },
}

fn check<T: Copy + PartialOrd + Into<i64> + std::fmt::Debug>(
    what: &'static str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<(), LayoutError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(LayoutError::OutOfRange {
            what,
            value: value.into(),
            range: format!("{:?}..={:?}", range.start(), range.end()),
        })
    }
}

fn exact<const N: usize>(what: &'static str, data: &[u8]) -> Result<[u8; N], LayoutError> {
    <[u8; N]>::try_from(data).map_err(|_| LayoutError::Length {
        what,
        expected: N,
        got: data.len(),
    })
}

/// A request as the board sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Rooms `first..first + count`.
    ReadRooms {
        /// First room, from 1.
        first: u8,
        /// How many, 1..=20.
        count: u8,
    },
    /// Every output's state and mode.
    ReadOutputs,
    /// One output's clock table.
    ReadClockTable {
        /// Output, 1..=16.
        output: u8,
    },
    /// Every alarm input.
    ReadAlarms,
    /// Set a room's setpoint.
    SetSetpoint {
        /// Room, from 1.
        room: u8,
        /// Floor or ceiling.
        kind: SetpointKind,
        /// The new setpoint.
        value: Tenths,
    },
    /// Set an output by hand or hand it back to its clock.
    SetOutput {
        /// Output, 1..=16.
        output: u8,
        /// What to do.
        command: OutputCommand,
    },
    /// Set one clock-table entry.
    SetClockEntry {
        /// Output, 1..=16.
        output: u8,
        /// Slot, 1..=8.
        slot: u8,
        /// The entry (`ClockEntry::EMPTY` clears the slot).
        entry: ClockEntry,
    },
    /// The board's clock.
    ReadClock,
    /// Set the board's clock.
    SetClock {
        /// The local date and time to run on.
        time: BoardTime,
    },
}

/// Placeholder data byte of requests that need no parameters (a frame
/// carries at least one data byte).
const NO_PARAMETERS: u8 = 0x00;

impl Request {
    /// The function it calls.
    pub fn function(&self) -> Function {
        match self {
            Request::ReadRooms { .. } => Function::ReadRooms,
            Request::ReadOutputs => Function::ReadOutputs,
            Request::ReadClockTable { .. } => Function::ReadClockTable,
            Request::ReadAlarms => Function::ReadAlarms,
            Request::SetSetpoint { .. } => Function::SetSetpoint,
            Request::SetOutput { .. } => Function::SetOutput,
            Request::SetClockEntry { .. } => Function::SetClockEntry,
            Request::ReadClock => Function::ReadClock,
            Request::SetClock { .. } => Function::SetClock,
        }
    }

    /// Check every field against its range.
    pub fn validate(&self) -> Result<(), LayoutError> {
        match *self {
            Request::ReadRooms { first, count } => {
                check("first room", first, 1..=255)?;
                check("room count", count, 1..=MAX_ROOMS_PER_READ)?;
                check(
                    "last room",
                    u16::from(first) + u16::from(count) - 1,
                    1..=255,
                )
            }
            Request::ReadOutputs | Request::ReadAlarms | Request::ReadClock => Ok(()),
            Request::SetClock { time } => BoardTime::new(time.0).map(drop),
            Request::ReadClockTable { output } | Request::SetOutput { output, .. } => {
                check("output", output, 1..=MAX_OUTPUTS)
            }
            Request::SetSetpoint { room, .. } => check("room", room, 1..=255),
            Request::SetClockEntry {
                output,
                slot,
                entry,
            } => {
                check("output", output, 1..=MAX_OUTPUTS)?;
                check("clock slot", slot, 1..=CLOCK_SLOTS)?;
                entry.validate()
            }
        }
    }

    /// The frame data of this request.
    pub fn encode(&self) -> Result<Vec<u8>, LayoutError> {
        self.validate()?;
        Ok(match *self {
            Request::ReadRooms { first, count } => vec![first, count],
            Request::ReadOutputs | Request::ReadAlarms | Request::ReadClock => {
                vec![NO_PARAMETERS]
            }
            Request::SetClock { time } => {
                let mut d = Vec::with_capacity(BOARD_TIME);
                time.encode(&mut d);
                d
            }
            Request::ReadClockTable { output } => vec![output],
            Request::SetSetpoint { room, kind, value } => {
                let [hi, lo] = value.0.to_be_bytes();
                let which = match kind {
                    SetpointKind::Floor => 0,
                    SetpointKind::Ceiling => 1,
                };
                vec![room, which, hi, lo]
            }
            Request::SetOutput { output, command } => {
                let c = match command {
                    OutputCommand::Off => 0,
                    OutputCommand::On => 1,
                    OutputCommand::Clock => 2,
                };
                vec![output, c]
            }
            Request::SetClockEntry {
                output,
                slot,
                entry,
            } => {
                let mut d = vec![output, slot];
                entry.encode(&mut d);
                d
            }
        })
    }

    /// A request of `function` (its wire byte) from frame `data`.
    pub fn decode(function: u8, data: &[u8]) -> Result<Request, LayoutError> {
        let f = Function::from_code(function).ok_or(LayoutError::UnknownFunction(function))?;
        let req = match f {
            Function::ReadRooms => {
                let [first, count] = exact("read rooms request", data)?;
                Request::ReadRooms { first, count }
            }
            Function::ReadOutputs | Function::ReadAlarms | Function::ReadClock => {
                let [p] = exact("request without parameters", data)?;
                check("parameter byte", p, NO_PARAMETERS..=NO_PARAMETERS)?;
                match f {
                    Function::ReadOutputs => Request::ReadOutputs,
                    Function::ReadAlarms => Request::ReadAlarms,
                    _ => Request::ReadClock,
                }
            }
            Function::SetClock => Request::SetClock {
                time: BoardTime::decode(data)?,
            },
            Function::ReadClockTable => {
                let [output] = exact("read clock table request", data)?;
                Request::ReadClockTable { output }
            }
            Function::SetSetpoint => {
                let [room, which, hi, lo] = exact("set setpoint request", data)?;
                let kind = match which {
                    0 => SetpointKind::Floor,
                    1 => SetpointKind::Ceiling,
                    _ => {
                        return Err(LayoutError::OutOfRange {
                            what: "setpoint kind",
                            value: which.into(),
                            range: "0..=1".into(),
                        });
                    }
                };
                Request::SetSetpoint {
                    room,
                    kind,
                    value: Tenths(i16::from_be_bytes([hi, lo])),
                }
            }
            Function::SetOutput => {
                let [output, c] = exact("set output request", data)?;
                let command = match c {
                    0 => OutputCommand::Off,
                    1 => OutputCommand::On,
                    2 => OutputCommand::Clock,
                    _ => {
                        return Err(LayoutError::OutOfRange {
                            what: "output command",
                            value: c.into(),
                            range: "0..=2".into(),
                        });
                    }
                };
                Request::SetOutput { output, command }
            }
            Function::SetClockEntry => {
                let [output, slot, rest @ ..] = exact::<7>("set clock entry request", data)?;
                Request::SetClockEntry {
                    output,
                    slot,
                    entry: ClockEntry::decode(&rest)?,
                }
            }
        };
        req.validate()?;
        Ok(req)
    }
}

/// A board's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Rooms from `first`, in order.
    Rooms {
        /// First room, from 1.
        first: u8,
        /// One record per room, 1..=20.
        rooms: Vec<RoomRecord>,
    },
    /// The outputs.
    Outputs(OutputStates),
    /// One output's clock table.
    ClockTable {
        /// Output, 1..=16.
        output: u8,
        /// Entries by slot (slot 1 first), 0..=8 of them.
        entries: Vec<ClockEntry>,
    },
    /// The alarm inputs.
    Alarms(AlarmInputs),
    /// The board's clock.
    Clock(BoardTime),
    /// A set command was accepted: its request, echoed.
    Ack(Request),
}

impl Response {
    /// The function it answers.
    pub fn function(&self) -> Function {
        match self {
            Response::Rooms { .. } => Function::ReadRooms,
            Response::Outputs(_) => Function::ReadOutputs,
            Response::ClockTable { .. } => Function::ReadClockTable,
            Response::Alarms(_) => Function::ReadAlarms,
            Response::Clock(_) => Function::ReadClock,
            Response::Ack(r) => r.function(),
        }
    }

    /// Whether this is the reply to `req` (the same rooms, the same output,
    /// the exact echo of a set).
    pub fn answers(&self, req: &Request) -> bool {
        match (self, req) {
            (Response::Rooms { first, rooms }, Request::ReadRooms { first: f, count }) => {
                first == f && rooms.len() == usize::from(*count)
            }
            (Response::Outputs(_), Request::ReadOutputs)
            | (Response::Alarms(_), Request::ReadAlarms)
            | (Response::Clock(_), Request::ReadClock) => true,
            (Response::ClockTable { output, .. }, Request::ReadClockTable { output: o }) => {
                output == o
            }
            (Response::Ack(echo), req) => req.function().is_set() && echo == req,
            _ => false,
        }
    }

    /// The frame data of this reply.
    pub fn encode(&self) -> Result<Vec<u8>, LayoutError> {
        Ok(match self {
            Response::Rooms { first, rooms } => {
                let count = u8::try_from(rooms.len()).unwrap_or(u8::MAX);
                Request::ReadRooms {
                    first: *first,
                    count,
                }
                .validate()?;
                let mut d = vec![*first, count];
                for r in rooms {
                    for t in [r.measured, r.floor, r.ceiling] {
                        d.extend_from_slice(&t.0.to_be_bytes());
                    }
                }
                d
            }
            Response::Outputs(o) => {
                check("output count", o.count, 1..=MAX_OUTPUTS)?;
                let mut d = vec![o.count];
                d.extend_from_slice(&o.on.to_be_bytes());
                d.extend_from_slice(&o.manual.to_be_bytes());
                d
            }
            Response::ClockTable { output, entries } => {
                check("output", *output, 1..=MAX_OUTPUTS)?;
                let count = u8::try_from(entries.len()).unwrap_or(u8::MAX);
                check("clock entry count", count, 0..=CLOCK_SLOTS)?;
                let mut d = vec![*output, count];
                for e in entries {
                    e.validate()?;
                    e.encode(&mut d);
                }
                d
            }
            Response::Alarms(a) => {
                check("alarm input count", a.count, 1..=MAX_ALARM_INPUTS)?;
                let mut d = vec![a.count];
                d.extend_from_slice(&a.active.to_be_bytes());
                d
            }
            Response::Clock(t) => {
                let mut d = Vec::with_capacity(BOARD_TIME);
                t.encode(&mut d);
                d
            }
            Response::Ack(req) => req.encode()?,
        })
    }

    /// A reply of `function` (its wire byte) from frame `data`.
    pub fn decode(function: u8, data: &[u8]) -> Result<Response, LayoutError> {
        let f = Function::from_code(function).ok_or(LayoutError::UnknownFunction(function))?;
        Ok(match f {
            Function::ReadRooms => {
                let (first, count, records) = header("read rooms reply", data)?;
                Request::ReadRooms { first, count }.validate()?;
                if records.len() != usize::from(count) * ROOM_RECORD {
                    return Err(LayoutError::Length {
                        what: "read rooms reply",
                        expected: 2 + usize::from(count) * ROOM_RECORD,
                        got: data.len(),
                    });
                }
                let t = |b: &[u8]| Tenths(i16::from_be_bytes([b[0], b[1]]));
                let rooms = records
                    .chunks_exact(ROOM_RECORD)
                    .map(|r| RoomRecord {
                        measured: t(&r[0..2]),
                        floor: t(&r[2..4]),
                        ceiling: t(&r[4..6]),
                    })
                    .collect();
                Response::Rooms { first, rooms }
            }
            Function::ReadOutputs => {
                let [count, on_hi, on_lo, m_hi, m_lo] = exact("read outputs reply", data)?;
                check("output count", count, 1..=MAX_OUTPUTS)?;
                Response::Outputs(OutputStates {
                    count,
                    on: u16::from_be_bytes([on_hi, on_lo]),
                    manual: u16::from_be_bytes([m_hi, m_lo]),
                })
            }
            Function::ReadClockTable => {
                let (output, count, entries) = header("read clock table reply", data)?;
                check("output", output, 1..=MAX_OUTPUTS)?;
                check("clock entry count", count, 0..=CLOCK_SLOTS)?;
                if entries.len() != usize::from(count) * CLOCK_ENTRY {
                    return Err(LayoutError::Length {
                        what: "read clock table reply",
                        expected: 2 + usize::from(count) * CLOCK_ENTRY,
                        got: data.len(),
                    });
                }
                let entries = entries
                    .chunks_exact(CLOCK_ENTRY)
                    .map(ClockEntry::decode)
                    .collect::<Result<_, _>>()?;
                Response::ClockTable { output, entries }
            }
            Function::ReadAlarms => {
                let [count, hi, lo] = exact("read alarms reply", data)?;
                check("alarm input count", count, 1..=MAX_ALARM_INPUTS)?;
                Response::Alarms(AlarmInputs {
                    count,
                    active: u16::from_be_bytes([hi, lo]),
                })
            }
            Function::ReadClock => Response::Clock(BoardTime::decode(data)?),
            Function::SetSetpoint
            | Function::SetOutput
            | Function::SetClockEntry
            | Function::SetClock => Response::Ack(Request::decode(function, data)?),
        })
    }
}

/// The two header bytes of a variable-length reply and the rest.
fn header<'a>(what: &'static str, data: &'a [u8]) -> Result<(u8, u8, &'a [u8]), LayoutError> {
    match data {
        [a, b, rest @ ..] => Ok((*a, *b, rest)),
        _ => Err(LayoutError::Length {
            what,
            expected: 2,
            got: data.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use time::macros::datetime;

    use super::*;

    #[test]
    fn the_function_table_round_trips_and_has_no_duplicates() {
        let codes: Vec<u8> = Function::ALL.iter().map(|f| f.code()).collect();
        assert_eq!(
            codes,
            [0x01, 0x02, 0x03, 0x04, 0x05, 0x11, 0x12, 0x13, 0x14]
        );
        for f in Function::ALL {
            assert_eq!(Function::from_code(f.code()), Some(f));
        }
        assert_eq!(Function::from_code(0x06), None);
        assert!(Function::SetOutput.is_set() && !Function::ReadOutputs.is_set());
        assert!(Function::SetClock.is_set() && !Function::ReadClock.is_set());
    }

    /// Request layouts: (function, data, request), data commented field by field.
    fn request_vectors() -> Vec<(u8, Vec<u8>, Request)> {
        let entry = ClockEntry {
            days: 0b001_1111,
            on: 6 * 60 + 30,
            off: 22 * 60,
        };
        vec![
            // read rooms: first 1, count 8
            (
                0x01,
                vec![0x01, 0x08],
                Request::ReadRooms { first: 1, count: 8 },
            ),
            // read outputs: placeholder 00
            (0x02, vec![0x00], Request::ReadOutputs),
            // read clock table of output 3
            (0x03, vec![0x03], Request::ReadClockTable { output: 3 }),
            // read alarms: placeholder 00
            (0x04, vec![0x00], Request::ReadAlarms),
            // room 3, floor (0), 22.5 °C = 225 = 00 E1
            (
                0x11,
                vec![0x03, 0x00, 0x00, 0xE1],
                Request::SetSetpoint {
                    room: 3,
                    kind: SetpointKind::Floor,
                    value: Tenths(225),
                },
            ),
            // room 12, ceiling (1), -0.5 °C = -5 = FF FB
            (
                0x11,
                vec![0x0C, 0x01, 0xFF, 0xFB],
                Request::SetSetpoint {
                    room: 12,
                    kind: SetpointKind::Ceiling,
                    value: Tenths(-5),
                },
            ),
            // output 2, back to clock (2)
            (
                0x12,
                vec![0x02, 0x02],
                Request::SetOutput {
                    output: 2,
                    command: OutputCommand::Clock,
                },
            ),
            // output 1, slot 4, Mon-Fri (1F), on 06:30, off 22:00
            (
                0x13,
                vec![0x01, 0x04, 0x1F, 6, 30, 22, 0],
                Request::SetClockEntry {
                    output: 1,
                    slot: 4,
                    entry,
                },
            ),
            // read clock: placeholder 00
            (0x05, vec![0x00], Request::ReadClock),
            // set clock: 2026 (26 = 0x1A), March 29, 04:00:05
            (
                0x14,
                vec![0x1A, 3, 29, 4, 0, 5],
                Request::SetClock {
                    time: board_time(datetime!(2026-03-29 04:00:05)),
                },
            ),
        ]
    }

    fn board_time(at: time::PrimitiveDateTime) -> BoardTime {
        BoardTime::new(at).unwrap()
    }

    #[test]
    fn a_board_time_is_a_real_date_in_the_boards_years() {
        // the clock reply: 2026-10-25 (a Sunday) 03:59:59
        let t = Response::decode(0x05, &[26, 10, 25, 3, 59, 59]).unwrap();
        let Response::Clock(t) = t else {
            panic!("{t:?}")
        };
        assert_eq!(t.datetime(), datetime!(2026-10-25 03:59:59));
        assert_eq!((t.weekday(), t.minute_of_day()), (6, 3 * 60 + 59));
        assert!(
            t == board_time(datetime!(2026-10-25 03:59:59.750)),
            "sub-seconds are dropped"
        );
        // February 29 only in a leap year; month 13, hour 24, second 60 never
        assert!(Response::decode(0x05, &[28, 2, 29, 0, 0, 0]).is_ok());
        for bad in [
            [27, 2, 29, 0, 0, 0],
            [26, 13, 1, 0, 0, 0],
            [26, 0, 1, 0, 0, 0],
            [26, 4, 31, 0, 0, 0],
            [26, 4, 1, 24, 0, 0],
            [26, 4, 1, 0, 60, 0],
            [26, 4, 1, 0, 0, 60],
        ] {
            assert!(Response::decode(0x05, &bad).is_err(), "{bad:?}");
            assert!(Request::decode(0x14, &bad).is_err(), "{bad:?}");
        }
        // a keypad asking for the clock is not the board's answer
        assert!(Response::decode(0x05, &[0x00]).is_err());
        // years a board cannot hold are refused before sending
        assert!(BoardTime::new(datetime!(1999-12-31 23:59)).is_err());
        assert!(BoardTime::new(datetime!(2256-01-01 00:00)).is_err());
        assert!(BoardTime::new(datetime!(2255-12-31 23:59:59)).is_ok());
    }

    #[test]
    fn request_vectors_encode_and_decode() {
        for (function, data, req) in request_vectors() {
            assert_eq!(req.function().code(), function);
            assert_eq!(req.encode().unwrap(), data, "{req:?}");
            assert_eq!(Request::decode(function, &data), Ok(req));
        }
    }

    #[test]
    fn reply_vectors_decode() {
        // rooms from 2, count 2: (21.5, 22.0, 18.0), (-3.2, 5.0, 0.0)
        let data = [
            0x02, 0x02, // first 2, count 2
            0x00, 0xD7, 0x00, 0xDC, 0x00, 0xB4, // 215, 220, 180
            0xFF, 0xE0, 0x00, 0x32, 0x00, 0x00, // -32, 50, 0
        ];
        let rooms = Response::decode(0x01, &data).unwrap();
        assert_eq!(
            rooms,
            Response::Rooms {
                first: 2,
                rooms: vec![
                    RoomRecord {
                        measured: Tenths(215),
                        floor: Tenths(220),
                        ceiling: Tenths(180)
                    },
                    RoomRecord {
                        measured: Tenths(-32),
                        floor: Tenths(50),
                        ceiling: Tenths(0)
                    },
                ]
            }
        );
        assert!(rooms.answers(&Request::ReadRooms { first: 2, count: 2 }));
        assert!(!rooms.answers(&Request::ReadRooms { first: 1, count: 2 }));
        assert_eq!(rooms.encode().unwrap(), data);

        // 6 outputs, on 0b100101 (1, 3, 6), manual 0b000100 (3)
        let outputs = Response::decode(0x02, &[0x06, 0x00, 0x25, 0x00, 0x04]).unwrap();
        let Response::Outputs(o) = outputs else {
            panic!("{outputs:?}")
        };
        let on: Vec<_> = (1..=7).map(|n| o.is_on(n)).collect();
        let t = Some(true);
        let f = Some(false);
        assert_eq!(on, [t, f, t, f, f, t, None]);
        assert_eq!((o.is_manual(3), o.is_manual(1)), (t, f));

        // 3 alarm inputs, active 0b010: burglary
        let alarms = Response::decode(0x04, &[0x03, 0x00, 0x02]).unwrap();
        let Response::Alarms(a) = alarms else {
            panic!()
        };
        assert_eq!(
            (a.is_active(1), a.is_active(2), a.is_active(4)),
            (f, t, None)
        );

        // output 5's table, 1 entry: Sat+Sun (0x60) 22:30 -> 06:00
        let table = Response::decode(0x03, &[0x05, 0x01, 0x60, 22, 30, 6, 0]).unwrap();
        assert_eq!(
            table,
            Response::ClockTable {
                output: 5,
                entries: vec![ClockEntry {
                    days: 0x60,
                    on: 1350,
                    off: 360
                }]
            }
        );

        // set output 2 on: the ack echoes 02 01
        let ack = Response::decode(0x12, &[0x02, 0x01]).unwrap();
        let req = Request::SetOutput {
            output: 2,
            command: OutputCommand::On,
        };
        assert!(ack.answers(&req));
        assert!(!ack.answers(&Request::SetOutput {
            output: 2,
            command: OutputCommand::Off
        }));
    }

    #[test]
    fn a_keypad_request_is_not_mistaken_for_the_reply() {
        // the keypad asking board 1 for rooms 1..=8 looks like a frame from board 1
        assert!(Response::decode(0x01, &[0x01, 0x08]).is_err());
        assert!(Response::decode(0x02, &[0x00]).is_err());
    }

    #[test]
    fn malformed_data_is_a_typed_error() {
        // count 3 rooms but only one record
        assert_eq!(
            Response::decode(0x01, &[1, 3, 0, 0, 0, 0, 0, 0]),
            Err(LayoutError::Length {
                what: "read rooms reply",
                expected: 20,
                got: 8
            })
        );
        // 21 rooms do not fit a frame
        assert!(matches!(
            Request::decode(0x01, &[1, 21]),
            Err(LayoutError::OutOfRange {
                what: "room count",
                ..
            })
        ));
        // rooms 250..=259 do not exist
        assert!(
            Request::ReadRooms {
                first: 250,
                count: 10
            }
            .encode()
            .is_err()
        );
        // setpoint kind 2, output command 3, minute 60, function 0x7F
        assert!(Request::decode(0x11, &[1, 2, 0, 0]).is_err());
        assert!(Request::decode(0x12, &[1, 3]).is_err());
        assert!(Request::decode(0x13, &[1, 1, 1, 6, 60, 7, 0]).is_err());
        assert_eq!(
            Response::decode(0x7F, &[0]),
            Err(LayoutError::UnknownFunction(0x7F))
        );
        // output 17, slot 9
        assert!(Request::ReadClockTable { output: 17 }.encode().is_err());
        assert!(
            Request::SetClockEntry {
                output: 1,
                slot: 9,
                entry: ClockEntry::EMPTY
            }
            .encode()
            .is_err()
        );
    }

    #[test]
    fn tenths_are_checked_against_the_grid() {
        assert_eq!(Tenths::from_celsius(22.3), Ok(Tenths(223)));
        assert_eq!(Tenths::from_celsius(-0.1), Ok(Tenths(-1)));
        assert!(Tenths::from_celsius(22.25).is_err());
        assert!(Tenths::from_celsius(f64::NAN).is_err());
        assert!(Tenths::from_celsius(4000.0).is_err());
        assert_eq!(Tenths(-55).celsius(), -5.5);
    }

    #[test]
    fn a_room_at_300_degrees_is_implausible() {
        assert_eq!(check_temp(TempKind::Measured, Tenths(215)), Ok(21.5));
        let e = check_temp(TempKind::Measured, Tenths(3000)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "implausible room temperature: 300.0 °C is outside -30.0..=60.0 °C"
        );
        assert!(check_temp(TempKind::Floor, Tenths(-10)).is_err());
        assert!(check_temp(TempKind::Ceiling, Tenths(450)).is_ok());
    }

    #[test]
    fn clock_entries_cover_their_days_and_overnight_periods() {
        // Mon-Fri 06:30-22:00
        let day = ClockEntry {
            days: 0x1F,
            on: 390,
            off: 1320,
        };
        assert!(day.is_active(0, 390) && day.is_active(4, 1319));
        assert!(!day.is_active(0, 389) && !day.is_active(0, 1320) && !day.is_active(5, 600));
        // Friday 22:00 -> 06:00: runs into Saturday morning, not Friday morning
        let night = ClockEntry {
            days: 1 << 4,
            on: 1320,
            off: 360,
        };
        assert!(night.is_active(4, 1400) && night.is_active(5, 100));
        assert!(!night.is_active(4, 100) && !night.is_active(5, 1400));
        assert!(!ClockEntry::EMPTY.is_active(0, 0));
    }

    fn entries() -> impl Strategy<Value = ClockEntry> {
        (0u8..0x80, 0u16..1440, 0u16..1440).prop_map(|(days, on, off)| ClockEntry { days, on, off })
    }

    fn board_times() -> impl Strategy<Value = BoardTime> {
        // Every second from 2000-01-01 to the end of 2255.
        (0i64..8_078_572_800).prop_map(|s| {
            let at = datetime!(2000-01-01 00:00) + time::Duration::seconds(s);
            BoardTime::new(at).unwrap()
        })
    }

    fn requests() -> impl Strategy<Value = Request> {
        prop_oneof![
            Just(Request::ReadClock),
            board_times().prop_map(|time| Request::SetClock { time }),
            (1u8..=200, 1u8..=MAX_ROOMS_PER_READ)
                .prop_map(|(first, count)| Request::ReadRooms { first, count }),
            Just(Request::ReadOutputs),
            Just(Request::ReadAlarms),
            (1u8..=MAX_OUTPUTS).prop_map(|output| Request::ReadClockTable { output }),
            (1u8..=255, any::<bool>(), any::<i16>()).prop_map(|(room, c, v)| {
                Request::SetSetpoint {
                    room,
                    kind: if c {
                        SetpointKind::Ceiling
                    } else {
                        SetpointKind::Floor
                    },
                    value: Tenths(v),
                }
            }),
            (1u8..=MAX_OUTPUTS, 0u8..3).prop_map(|(output, c)| Request::SetOutput {
                output,
                command: [OutputCommand::Off, OutputCommand::On, OutputCommand::Clock]
                    [usize::from(c)],
            }),
            (1u8..=MAX_OUTPUTS, 1u8..=CLOCK_SLOTS, entries()).prop_map(|(output, slot, entry)| {
                Request::SetClockEntry {
                    output,
                    slot,
                    entry,
                }
            }),
        ]
    }

    fn responses() -> impl Strategy<Value = Response> {
        let record = (any::<i16>(), any::<i16>(), any::<i16>()).prop_map(|(m, f, c)| RoomRecord {
            measured: Tenths(m),
            floor: Tenths(f),
            ceiling: Tenths(c),
        });
        prop_oneof![
            (
                1u8..=200,
                prop::collection::vec(record, 1..=usize::from(MAX_ROOMS_PER_READ))
            )
                .prop_map(|(first, rooms)| Response::Rooms { first, rooms }),
            (1u8..=MAX_OUTPUTS, any::<u16>(), any::<u16>()).prop_map(|(count, on, manual)| {
                Response::Outputs(OutputStates { count, on, manual })
            }),
            (
                1u8..=MAX_OUTPUTS,
                prop::collection::vec(entries(), 0..=usize::from(CLOCK_SLOTS))
            )
                .prop_map(|(output, entries)| Response::ClockTable { output, entries }),
            (1u8..=MAX_ALARM_INPUTS, any::<u16>())
                .prop_map(|(count, active)| Response::Alarms(AlarmInputs { count, active })),
            board_times().prop_map(Response::Clock),
            requests()
                .prop_filter("sets only", |r| r.function().is_set())
                .prop_map(Response::Ack),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(req in requests()) {
            let data = req.encode().unwrap();
            prop_assert!((1..=crate::devices::pop::codec::MAX_DATA).contains(&data.len()));
            prop_assert_eq!(Request::decode(req.function().code(), &data), Ok(req));
        }

        #[test]
        fn responses_round_trip(rsp in responses()) {
            let data = rsp.encode().unwrap();
            prop_assert!((1..=crate::devices::pop::codec::MAX_DATA).contains(&data.len()));
            prop_assert_eq!(Response::decode(rsp.function().code(), &data), Ok(rsp));
        }

        #[test]
        fn decoding_arbitrary_data_never_panics(function in any::<u8>(), data in prop::collection::vec(any::<u8>(), 0..130)) {
            let _ = Request::decode(function, &data);
            if let Ok(rsp) = Response::decode(function, &data) {
                // whatever decodes encodes back to the same bytes
                prop_assert_eq!(rsp.encode().unwrap(), data);
            }
        }
    }
}
