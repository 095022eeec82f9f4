//! Weekly timers that run inside a device (clock tables), seen through one
//! protocol-neutral interface.
//!
//! Some devices switch their outputs by themselves from a weekly table held
//! in their own memory (POP boards: 8 entries per output). When a schedule
//! runs there, the house keeps its timers with the agent, the server and the
//! internet all gone. The control layer asks a bus for such a timer through
//! [`TimerOp`]s on the bus's command queue ([`crate::poller::BusHandle::timer`]);
//! a [`crate::poller::BusDriver`] that has no device timers keeps the trait's
//! default, which answers [`crate::poller::WriteError::Unsupported`], and the
//! agent then runs the schedule itself.
//!
//! A [`TimerEntry`] is what weekly timers of this kind hold: a day mask and
//! an on and an off minute of the day; an off time before the on time runs
//! past midnight into the next day, and an entry whose on and off times are
//! equal is never on. The device's clock is local civil time (the device
//! knows nothing of time zones): [`TimerOp::ReadClock`] and
//! [`TimerOp::SetClock`] carry a [`LocalNow`] that the driver asks for the
//! local time at the moment it talks to the device, so a request that waited
//! in the queue behind a poll neither reads nor sets a stale time.

use std::{fmt, sync::Arc};

use time::PrimitiveDateTime;

/// A minute of the day, 0..1440.
pub type Minute = u16;

/// Minutes in a day.
pub const MINUTES_PER_DAY: Minute = 1440;

/// One entry of a weekly table.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct TimerEntry {
    /// Bit 0 Monday … bit 6 Sunday; 0 = an empty slot.
    pub days: u8,
    /// When the output turns on, minute of the day (0..1440).
    pub on: Minute,
    /// When it turns off (0..1440); before `on` = past midnight into the next
    /// day; equal to `on` = never on.
    pub off: Minute,
}

impl TimerEntry {
    /// An empty slot.
    pub const EMPTY: TimerEntry = TimerEntry {
        days: 0,
        on: 0,
        off: 0,
    };

    /// True for an empty slot (no day).
    pub fn is_empty(&self) -> bool {
        self.days & 0x7F == 0
    }

    /// Days within the week's seven bits, times within the day.
    pub fn is_valid(&self) -> bool {
        self.days <= 0x7F && self.on < MINUTES_PER_DAY && self.off < MINUTES_PER_DAY
    }

    /// Whether the entry keeps its output on at `minute` of `weekday`
    /// (0 = Monday). An overnight entry belongs to the day it starts.
    pub fn is_active(&self, weekday: u8, minute: Minute) -> bool {
        let day = |d: u8| self.days & (1 << (d % 7)) != 0;
        if self.on <= self.off {
            day(weekday) && (self.on..self.off).contains(&minute)
        } else {
            (day(weekday) && minute >= self.on) || (day(weekday + 6) && minute < self.off)
        }
    }

    /// For people: `Mon–Fri 22:00–06:00`.
    pub fn describe(&self) -> String {
        if self.is_empty() {
            return "empty".into();
        }
        format!(
            "{} {}–{}",
            days_text(self.days),
            hhmm(self.on),
            hhmm(self.off)
        )
    }
}

impl fmt::Display for TimerEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// `HH:MM` of a minute of the day.
pub fn hhmm(min: Minute) -> String {
    format!("{:02}:{:02}", min / 60, min % 60)
}

/// `Mon–Fri, Sun` for a day mask (bit 0 Monday).
pub fn days_text(days: u8) -> String {
    const NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let on = |d: usize| days & (1 << d) != 0;
    let mut parts = Vec::new();
    let mut d = 0;
    while d < 7 {
        if !on(d) {
            d += 1;
            continue;
        }
        let start = d;
        while d + 1 < 7 && on(d + 1) {
            d += 1;
        }
        parts.push(match d - start {
            0 => NAMES[start].to_owned(),
            1 => format!("{}, {}", NAMES[start], NAMES[d]),
            _ => format!("{}–{}", NAMES[start], NAMES[d]),
        });
        d += 1;
    }
    parts.join(", ")
}

/// What a device's timer offers for one output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerCaps {
    /// Entries the output's table holds.
    pub slots: u8,
}

/// The local time now, asked at the moment the driver talks to the device.
#[derive(Clone)]
pub struct LocalNow(Arc<dyn Fn() -> PrimitiveDateTime + Send + Sync>);

impl LocalNow {
    /// Local time from `f`.
    pub fn new(f: impl Fn() -> PrimitiveDateTime + Send + Sync + 'static) -> Self {
        LocalNow(Arc::new(f))
    }

    /// The local time now.
    pub fn now(&self) -> PrimitiveDateTime {
        (self.0)()
    }
}

impl fmt::Debug for LocalNow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalNow({})", self.now())
    }
}

/// What the control layer asks of a device timer. Each names an output
/// point (the clock ops: any point of the device).
#[derive(Debug, Clone)]
pub enum TimerOp {
    /// Does the point have a timer of its own, and how large? No bus traffic.
    Describe,
    /// The point's table, every slot (slot 1 first, empty ones included).
    ReadTable,
    /// Make the table hold these entries: slots already holding one of them
    /// keep it, only slots that differ are written (each read back), and
    /// slots not needed are cleared. At most [`TimerCaps::slots`] entries.
    WriteTable(Vec<TimerEntry>),
    /// Hand the output to its table (end of a manual state), read back.
    FollowTable,
    /// The device's clock, and the local time when it answered.
    ReadClock(LocalNow),
    /// Set the device's clock to the local time at the moment of sending,
    /// read back.
    SetClock(LocalNow),
}

/// What a device timer answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerReply {
    /// The point's timer.
    Caps(TimerCaps),
    /// The table, every slot.
    Table(Vec<TimerEntry>),
    /// The table now held (every slot) and how many slots were written.
    Written {
        /// The table as read back.
        table: Vec<TimerEntry>,
        /// Slots written (0: it held them already).
        slots_written: usize,
    },
    /// The output follows its table.
    Following,
    /// The device's clock.
    Clock {
        /// What the device's clock read.
        device: PrimitiveDateTime,
        /// The local time when it answered.
        local: PrimitiveDateTime,
    },
    /// The clock was set to `to` and read back.
    ClockSet {
        /// The time sent.
        to: PrimitiveDateTime,
    },
}

/// The table a device should hold so that it has the `wanted` entries,
/// changing as few of its `current` slots as possible: an entry already in
/// a slot stays there, new entries go first into slots holding something no
/// longer wanted (one write instead of a write and a clear), then into empty
/// slots, lowest first. `None` when `wanted` has more entries than `slots`.
/// The result has `slots` slots; empty wanted entries are ignored.
pub fn assign_slots(
    current: &[TimerEntry],
    wanted: &[TimerEntry],
    slots: usize,
) -> Option<Vec<TimerEntry>> {
    let mut todo: Vec<TimerEntry> = wanted.iter().copied().filter(|e| !e.is_empty()).collect();
    if todo.len() > slots {
        return None;
    }
    let slot_of = |i: usize| current.get(i).copied().unwrap_or(TimerEntry::EMPTY);
    let mut table = vec![None; slots];
    for (i, place) in table.iter_mut().enumerate() {
        let have = slot_of(i);
        if let Some(k) = todo.iter().position(|w| *w == have) {
            *place = Some(todo.swap_remove(k));
        }
    }
    todo.sort();
    let mut todo = todo.into_iter();
    // Slots with an unwanted entry first, then empty ones.
    for pass_empty in [false, true] {
        for (i, place) in table.iter_mut().enumerate() {
            if place.is_none() && slot_of(i).is_empty() == pass_empty {
                match todo.next() {
                    Some(e) => *place = Some(e),
                    None => break,
                }
            }
        }
    }
    Some(
        table
            .into_iter()
            .map(|e| e.unwrap_or(TimerEntry::EMPTY))
            .collect(),
    )
}

/// The non-empty entries of `table`, sorted: two tables with the same such
/// entries switch their output alike, whatever slots they sit in.
pub fn entries_of(table: &[TimerEntry]) -> Vec<TimerEntry> {
    let mut v: Vec<TimerEntry> = table.iter().copied().filter(|e| !e.is_empty()).collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(days: u8, on: Minute, off: Minute) -> TimerEntry {
        TimerEntry { days, on, off }
    }

    #[test]
    fn entries_already_in_place_stay_and_new_ones_replace_unwanted_ones_first() {
        let a = e(0x1F, 360, 480);
        let b = e(0x60, 600, 720);
        let c = e(0x7F, 1320, 0);
        // [a, b, -, ...] wanted {a, c}: c goes where b was (one write).
        let current = [a, b];
        let t = assign_slots(&current, &[c, a], 8).unwrap();
        assert_eq!(t.len(), 8);
        assert_eq!(&t[..3], &[a, c, TimerEntry::EMPTY]);
        // Nothing wanted: every slot empty.
        assert!(
            assign_slots(&current, &[], 8)
                .unwrap()
                .iter()
                .all(TimerEntry::is_empty)
        );
        // More than fits.
        assert_eq!(assign_slots(&[], &[a, b, c], 2), None);
        // A table the keypad reordered is kept as it is.
        let t = assign_slots(&[TimerEntry::EMPTY, b, a], &[a, b], 8).unwrap();
        assert_eq!(&t[..3], &[TimerEntry::EMPTY, b, a]);
        assert_eq!(entries_of(&t), entries_of(&[a, b]));
    }

    #[test]
    fn days_are_named_as_a_person_reads_them() {
        assert_eq!(days_text(0x1F), "Mon–Fri");
        assert_eq!(days_text(0x60), "Sat, Sun");
        assert_eq!(days_text(0b101_0101), "Mon, Wed, Fri, Sun");
        assert_eq!(e(0x7F, 1320, 360).describe(), "Mon–Sun 22:00–06:00");
        assert_eq!(TimerEntry::EMPTY.describe(), "empty");
    }

    #[test]
    fn an_entry_with_equal_times_is_never_on_and_an_overnight_one_runs_into_the_next_day() {
        let never = e(0x7F, 600, 600);
        assert!((0..7).all(|d| (0..1440).all(|m| !never.is_active(d, m))));
        // Sunday 22:00 -> Monday 06:00
        let night = e(1 << 6, 1320, 360);
        assert!(night.is_active(6, 1320) && night.is_active(0, 359));
        assert!(!night.is_active(0, 360) && !night.is_active(6, 100));
        // 12:00 -> 00:00 is the rest of the day, nothing of the next
        let evening = e(1, 720, 0);
        assert!(evening.is_active(0, 1439) && !evening.is_active(1, 0));
    }
}
