//! A simulated POP bus: several room-heating boards and a wall keypad that
//! polls them all the time, on one serial line.
//!
//! The simulator owns one end of the line (a pty in tests, a real port with
//! `agent simulate pop --serial`). It transmits the keypad's requests and the
//! boards' replies to them, and answers the agent's requests with the same
//! boards. Transmission is modelled at the configured baud: each byte is
//! written when its last bit would have left the wire, so a listener sees
//! traffic arrive at line speed and its quiet-line timing means something.
//!
//! **Collisions.** A request from outside that starts while the line is busy
//! — during a simulated transmission or within [`QUIET_BEFORE_SEND`] after
//! one — is a collision ([`LineModel::busy`]): it is discarded unanswered
//! and counted ([`PopSimStats::collisions`]); a transmission it hit is
//! garbled from there on, as on a real bus. A client with bus manners (see
//! [`crate::devices::pop::client`]) keeps this near zero; one that sends at
//! once does not. The keypad itself waits [`KEYPAD_PAUSE`] after any
//! traffic, so a polite client always finds a gap.
//!
//! **Boards** ([`Board`]): rooms whose temperatures drift toward the higher
//! of their two setpoints, outputs that follow clock tables or are set by
//! hand, alarm inputs. Each board keeps its own clock, local civil time as
//! a real board's clock chip: the simulation's world clock
//! ([`PopSimOptions::clock`], the system's or a test's controllable
//! [`Clock`]) plus the board's offset. Boards start on the local time of
//! [`PopSimOptions::time_zone`] and stay on that offset (a board knows
//! nothing of daylight saving) until someone sets the clock (function
//! 0x14); their clock tables run on that clock. A board that is switched off ([`PopBusSim::set_powered`])
//! answers nobody. A board asked for rooms or outputs it does not have stays
//! silent: the protocol has no error reply.
//!
//! **Faults** for tests ([`PopFault`]): the next reply to the agent can be
//! preceded by a decoy from the wrong sender or with a bad checksum, each
//! carrying different values, so a client that skipped a check would return
//! wrong numbers.

use std::{
    collections::VecDeque,
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    task::JoinHandle,
    time::{Instant, sleep_until, timeout},
};
use tokio_util::bytes::BytesMut;
use tracing::{debug, warn};

use time::{OffsetDateTime, PrimitiveDateTime};

use crate::{
    config::{DataBits, Parity, SerialSettings, StopBits},
    control::executor::Clock,
    devices::pop::{
        FRAME_GAP, QUIET_BEFORE_SEND, char_time,
        client::read_ready,
        codec::{self, Frame, PopCodec},
        message::{
            AlarmInputs, BoardTime, CLOCK_SLOTS, ClockEntry, MAX_ROOMS_PER_READ, OutputCommand,
            OutputStates, Request, Response, RoomRecord, SetpointKind, Tenths,
        },
    },
};

/// The keypad waits this long after any traffic before its next request.
pub const KEYPAD_PAUSE: Duration = Duration::from_millis(30);
/// The keypad gives up on a board that does not answer after this long.
pub const KEYPAD_REPLY_TIMEOUT: Duration = Duration::from_millis(200);
/// A board starts its reply this long after the request ended (well inside
/// the 10 ms quiet time, so nobody takes the gap for a quiet line).
pub const BOARD_TURNAROUND: Duration = Duration::from_millis(3);
/// A write to the line that blocks this long means nobody is reading the
/// other end (a pty fills up); the rest of that transmission is dropped, as
/// a real line would not wait for its listeners.
const WRITE_LIMIT: Duration = Duration::from_millis(50);
/// How often room temperatures are advanced.
const DRIFT_STEP: Duration = Duration::from_millis(100);
/// Longest sleep of a line with nothing to do (no drift, no keypad).
const IDLE_WAKE: Duration = Duration::from_secs(60);

/// How to run the simulated bus.
#[derive(Debug, Clone)]
pub struct PopSimOptions {
    /// Board numbers on the bus.
    pub boards: Vec<u8>,
    /// Rooms per board (1..=32, as a keypad handles).
    pub rooms: u8,
    /// Outputs per board (1..=16).
    pub outputs: u8,
    /// Alarm inputs per board (1..=16): 1 fire, 2 burglary, 3 mains failure.
    pub alarm_inputs: u8,
    /// Run the wall keypad.
    pub keypad: bool,
    /// Line speed (8N1), for the transmission times.
    pub baud: u32,
    /// Time constant of room temperatures drifting toward their setpoints;
    /// `None` keeps them still (tests that compare exact values).
    pub drift: Option<Duration>,
    /// The world's clock the boards' clocks run on (tests: the same
    /// controllable clock as the agent's schedules).
    pub clock: Clock,
    /// IANA zone whose local time the boards' clocks start on (at the
    /// offset in force then; they do not follow daylight saving by
    /// themselves). An unknown zone starts them on UTC.
    pub time_zone: String,
}

impl Default for PopSimOptions {
    fn default() -> Self {
        PopSimOptions {
            boards: vec![1, 2],
            rooms: 8,
            outputs: 6,
            alarm_inputs: 3,
            keypad: true,
            baud: crate::devices::pop::DEFAULT_BAUD,
            drift: Some(Duration::from_secs(600)),
            clock: Clock::system(),
            time_zone: "Europe/Helsinki".into(),
        }
    }
}

/// One simulated room.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomModel {
    /// The temperature, unrounded (°C).
    pub temperature: f64,
    /// Floor-heating setpoint.
    pub floor: Tenths,
    /// Ceiling-heating setpoint.
    pub ceiling: Tenths,
    /// A broken sensor: the board reports this instead of the temperature.
    pub sensor_fault: Option<Tenths>,
}

impl RoomModel {
    /// The measured value the board reports.
    pub fn measured(&self) -> Tenths {
        self.sensor_fault
            .unwrap_or(Tenths((self.temperature * 10.0).round() as i16))
    }
}

/// One simulated output.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputModel {
    /// `Some(on)` while set by hand; `None` while following the clock table.
    pub manual: Option<bool>,
    /// The weekly clock table, slot 1 first.
    pub clock: [ClockEntry; CLOCK_SLOTS as usize],
}

/// A simulated board: its state and how it answers requests (pure).
#[derive(Debug, Clone, PartialEq)]
pub struct Board {
    /// Board number.
    pub number: u8,
    /// Switched on; a board that is off answers nobody.
    pub powered: bool,
    /// Rooms 1..
    pub rooms: Vec<RoomModel>,
    /// Outputs 1..
    pub outputs: Vec<OutputModel>,
    /// Alarm inputs, bit *i*−1 = input *i*.
    pub alarms: u16,
    /// How many alarm inputs it has.
    pub alarm_inputs: u8,
    /// The board's clock: world time (UTC) plus this.
    pub clock_offset: time::Duration,
}

/// Local time for clock tables: weekday (0 = Monday) and minute of day.
pub type ClockTime = (u8, u16);

/// The weekday and minute of day of a local time.
pub fn clock_time(local: PrimitiveDateTime) -> ClockTime {
    (
        local.weekday().number_days_from_monday(),
        u16::from(local.hour()) * 60 + u16::from(local.minute()),
    )
}

/// The UTC offset of `zone` at `at` (zero for an unknown zone).
fn zone_offset(zone: &str, at: OffsetDateTime) -> time::Duration {
    let Ok(tz) = jiff::tz::db().get(zone) else {
        return time::Duration::ZERO;
    };
    let Ok(ts) = jiff::Timestamp::from_second(at.unix_timestamp()) else {
        return time::Duration::ZERO;
    };
    time::Duration::seconds(i64::from(tz.to_offset(ts).seconds()))
}

impl Board {
    /// A board with `rooms` rooms (temperatures a little below their
    /// setpoints), `outputs` outputs following clock tables (output 1 on
    /// every day 06:00–22:00, output 2 on weekdays 17:00–19:00) and quiet
    /// alarm inputs.
    pub fn new(number: u8, rooms: u8, outputs: u8, alarm_inputs: u8) -> Board {
        let rooms = (1..=rooms)
            .map(|r| {
                let r = i16::from(r);
                RoomModel {
                    temperature: 19.0 + f64::from(r % 8) * 0.25 + f64::from(number % 5) * 0.1,
                    floor: Tenths(210 + 5 * (r % 6)),
                    ceiling: Tenths(180 + 5 * (r % 4)),
                    sensor_fault: None,
                }
            })
            .collect();
        let outputs = (1..=outputs)
            .map(|o| {
                let mut clock = [ClockEntry::EMPTY; CLOCK_SLOTS as usize];
                clock[0] = match o {
                    1 => ClockEntry {
                        days: 0x7F,
                        on: 6 * 60,
                        off: 22 * 60,
                    },
                    2 => ClockEntry {
                        days: 0x1F,
                        on: 17 * 60,
                        off: 19 * 60,
                    },
                    _ => ClockEntry::EMPTY,
                };
                OutputModel {
                    manual: None,
                    clock,
                }
            })
            .collect();
        Board {
            number,
            powered: true,
            rooms,
            outputs,
            alarms: 0,
            alarm_inputs,
            clock_offset: time::Duration::ZERO,
        }
    }

    /// What the board's clock reads when the world's (UTC) reads `world`.
    pub fn local_time(&self, world: OffsetDateTime) -> PrimitiveDateTime {
        let utc = PrimitiveDateTime::new(world.date(), world.time());
        utc.checked_add(self.clock_offset).unwrap_or(utc)
    }

    /// Set the board's clock to read `local` when the world's reads `world`.
    pub fn set_local_time(&mut self, local: PrimitiveDateTime, world: OffsetDateTime) {
        self.clock_offset = local - PrimitiveDateTime::new(world.date(), world.time());
    }

    /// Move every room's temperature toward the higher of its setpoints with
    /// time constant `tau`.
    pub fn step(&mut self, dt: Duration, tau: Duration) {
        let k = 1.0 - (-dt.as_secs_f64() / tau.as_secs_f64().max(1e-3)).exp();
        for r in &mut self.rooms {
            let target = r.floor.max(r.ceiling).celsius();
            r.temperature += (target - r.temperature) * k;
        }
    }

    /// Output `n` (1-based) is on at `clock`.
    pub fn output_on(&self, n: u8, clock: ClockTime) -> Option<bool> {
        let o = self.outputs.get(usize::from(n).checked_sub(1)?)?;
        Some(
            o.manual
                .unwrap_or_else(|| o.clock.iter().any(|e| e.is_active(clock.0, clock.1))),
        )
    }

    fn room_mut(&mut self, n: u8) -> Option<&mut RoomModel> {
        self.rooms.get_mut(usize::from(n).checked_sub(1)?)
    }

    fn output_mut(&mut self, n: u8) -> Option<&mut OutputModel> {
        self.outputs.get_mut(usize::from(n).checked_sub(1)?)
    }

    /// The board's reply to `req` when the world's clock reads `world`;
    /// `None` when it cannot serve it (a room or output it does not have, a
    /// clock outside the years it can tell) and stays silent.
    pub fn handle(&mut self, req: &Request, world: OffsetDateTime) -> Option<Response> {
        let clock = clock_time(self.local_time(world));
        match *req {
            Request::ReadRooms { first, count } => {
                let start = usize::from(first).checked_sub(1)?;
                let rooms = self.rooms.get(start..start + usize::from(count))?;
                Some(Response::Rooms {
                    first,
                    rooms: rooms
                        .iter()
                        .map(|r| RoomRecord {
                            measured: r.measured(),
                            floor: r.floor,
                            ceiling: r.ceiling,
                        })
                        .collect(),
                })
            }
            Request::ReadOutputs => {
                let count = u8::try_from(self.outputs.len()).ok()?;
                let mut states = OutputStates {
                    count,
                    on: 0,
                    manual: 0,
                };
                for n in 1..=count {
                    let bit = 1u16 << (n - 1);
                    if self.output_on(n, clock) == Some(true) {
                        states.on |= bit;
                    }
                    if self.outputs[usize::from(n - 1)].manual.is_some() {
                        states.manual |= bit;
                    }
                }
                Some(Response::Outputs(states))
            }
            Request::ReadAlarms => Some(Response::Alarms(AlarmInputs {
                count: self.alarm_inputs,
                active: self.alarms,
            })),
            Request::ReadClockTable { output } => {
                let o = self.outputs.get(usize::from(output).checked_sub(1)?)?;
                // Trailing empty slots are not sent.
                let used = o
                    .clock
                    .iter()
                    .rposition(|e| e.days != 0)
                    .map_or(0, |i| i + 1);
                Some(Response::ClockTable {
                    output,
                    entries: o.clock[..used].to_vec(),
                })
            }
            Request::SetSetpoint { room, kind, value } => {
                let r = self.room_mut(room)?;
                match kind {
                    SetpointKind::Floor => r.floor = value,
                    SetpointKind::Ceiling => r.ceiling = value,
                }
                Some(Response::Ack(req.clone()))
            }
            Request::SetOutput { output, command } => {
                self.output_mut(output)?.manual = match command {
                    OutputCommand::Off => Some(false),
                    OutputCommand::On => Some(true),
                    OutputCommand::Clock => None,
                };
                Some(Response::Ack(req.clone()))
            }
            Request::SetClockEntry {
                output,
                slot,
                entry,
            } => {
                let o = self.output_mut(output)?;
                *o.clock.get_mut(usize::from(slot).checked_sub(1)?)? = entry;
                Some(Response::Ack(req.clone()))
            }
            Request::ReadClock => BoardTime::new(self.local_time(world))
                .ok()
                .map(Response::Clock),
            Request::SetClock { time } => {
                self.set_local_time(time.datetime(), world);
                Some(Response::Ack(req.clone()))
            }
        }
    }
}

/// What a reply to the agent is preceded by, once ([`PopBusSim::inject`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopFault {
    /// A reply-shaped frame with other values from another board number.
    WrongSender,
    /// A frame from the right board with other values and a bad checksum.
    BadChecksum,
}

/// Counters of the simulated line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PopSimStats {
    /// Requests from outside that hit a busy line and were discarded.
    pub collisions: u64,
    /// Requests from outside answered.
    pub served: u64,
    /// Requests from outside that got no answer (board off or absent, or
    /// nothing it can serve).
    pub unanswered: u64,
    /// Damaged frames from outside (bad checksum or length).
    pub bad_frames: u64,
    /// Requests the keypad sent.
    pub keypad_polls: u64,
    /// Of those, answered by a board.
    pub keypad_replies: u64,
    /// Transmissions cut short because nobody read the line.
    pub overruns: u64,
    /// Clock-table slots set from outside (each an EEPROM write on a real
    /// board).
    pub clock_entries_set: u64,
}

/// Who is busy on the line and when it fell quiet (pure; instants passed in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineModel {
    /// The simulator is transmitting.
    pub transmitting: bool,
    /// When the simulator's last transmission ended (its last byte written).
    pub tx_end: Option<Instant>,
    /// When the last byte from outside arrived.
    pub rx_end: Option<Instant>,
}

impl LineModel {
    /// A request from outside starting at `now` collides: the simulator is
    /// transmitting, or stopped less than [`QUIET_BEFORE_SEND`] ago.
    pub fn busy(&self, now: Instant) -> bool {
        self.transmitting || self.tx_end.is_some_and(|t| now < t + QUIET_BEFORE_SEND)
    }

    /// When the last traffic of anyone ended.
    pub fn traffic_end(&self) -> Option<Instant> {
        match (self.tx_end, self.rx_end) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// The keypad may start at `now`: nobody is talking and the line has
    /// been quiet for [`KEYPAD_PAUSE`].
    pub fn keypad_may_start(&self, now: Instant) -> bool {
        !self.transmitting && self.traffic_end().is_none_or(|t| now >= t + KEYPAD_PAUSE)
    }
}

/// A simulated bus. Cheap to clone; clones share the boards.
#[derive(Debug, Clone)]
pub struct PopBusSim {
    opts: PopSimOptions,
    state: Arc<Mutex<SimState>>,
}

#[derive(Debug)]
struct SimState {
    boards: Vec<Board>,
    stats: PopSimStats,
    faults: VecDeque<PopFault>,
}

fn lock(m: &Mutex<SimState>) -> std::sync::MutexGuard<'_, SimState> {
    // A simulator keeps serving after a panic elsewhere held the lock.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PopBusSim {
    /// Boards in their starting state; nothing runs until [`PopBusSim::serve`].
    pub fn new(opts: PopSimOptions) -> Self {
        let offset = zone_offset(&opts.time_zone, opts.clock.now());
        let boards = opts
            .boards
            .iter()
            .map(|&n| Board {
                clock_offset: offset,
                ..Board::new(n, opts.rooms, opts.outputs, opts.alarm_inputs)
            })
            .collect();
        PopBusSim {
            opts,
            state: Arc::new(Mutex::new(SimState {
                boards,
                stats: PopSimStats::default(),
                faults: VecDeque::new(),
            })),
        }
    }

    /// A copy of board `n`.
    pub fn board(&self, n: u8) -> Option<Board> {
        lock(&self.state)
            .boards
            .iter()
            .find(|b| b.number == n)
            .cloned()
    }

    /// Change board `n` in place; `None` when there is no such board.
    pub fn with_board<R>(&self, n: u8, f: impl FnOnce(&mut Board) -> R) -> Option<R> {
        lock(&self.state)
            .boards
            .iter_mut()
            .find(|b| b.number == n)
            .map(f)
    }

    /// What board `n`'s clock reads now.
    pub fn board_time(&self, n: u8) -> Option<PrimitiveDateTime> {
        let world = self.opts.clock.now();
        self.with_board(n, |b| b.local_time(world))
    }

    /// Set board `n`'s clock to read `local` now (as a person at the keypad
    /// would, or a clock chip that drifted).
    pub fn set_board_time(&self, n: u8, local: PrimitiveDateTime) {
        let world = self.opts.clock.now();
        self.with_board(n, |b| b.set_local_time(local, world));
    }

    /// Weekday and minute of board `n`'s clock now.
    pub fn board_clock(&self, n: u8) -> Option<ClockTime> {
        self.board_time(n).map(clock_time)
    }

    /// Output `output` of board `n` is on now, by its own clock.
    pub fn output_on(&self, n: u8, output: u8) -> Option<bool> {
        let world = self.opts.clock.now();
        self.with_board(n, |b| b.output_on(output, clock_time(b.local_time(world))))
            .flatten()
    }

    /// Switch board `n` on or off.
    pub fn set_powered(&self, n: u8, on: bool) {
        self.with_board(n, |b| b.powered = on);
    }

    /// Break (`Some(value)`) or mend (`None`) room `room`'s sensor on board `n`.
    pub fn set_sensor_fault(&self, n: u8, room: u8, value: Option<Tenths>) {
        self.with_board(n, |b| {
            if let Some(r) = b.room_mut(room) {
                r.sensor_fault = value;
            }
        });
    }

    /// Raise or clear alarm input `input` (1-based) of board `n`.
    pub fn set_alarm(&self, n: u8, input: u8, on: bool) {
        self.with_board(n, |b| {
            if (1..=16).contains(&input) {
                let bit = 1u16 << (input - 1);
                b.alarms = if on { b.alarms | bit } else { b.alarms & !bit };
            }
        });
    }

    /// Precede the next reply to a request from outside with `fault`.
    pub fn inject(&self, fault: PopFault) {
        lock(&self.state).faults.push_back(fault);
    }

    /// The line's counters so far.
    pub fn stats(&self) -> PopSimStats {
        lock(&self.state).stats
    }

    /// Serve the line `io` until it fails (the pty or port went away).
    pub fn serve<T>(&self, io: T) -> JoinHandle<io::Result<()>>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let settings = SerialSettings {
            path: String::new(),
            baud: self.opts.baud,
            parity: Parity::None,
            data_bits: DataBits::Eight,
            stop_bits: StopBits::One,
        };
        let task = LineTask {
            sim: self.clone(),
            io,
            char_time: char_time(&settings),
            line: LineModel {
                transmitting: false,
                tx_end: None,
                rx_end: None,
            },
            tx: None,
            queue: VecDeque::new(),
            rx: BytesMut::new(),
            rx_collided: false,
            keypad_cursor: 0,
            keypad_hold_until: None,
            last_step: Instant::now(),
        };
        tokio::spawn(task.run())
    }
}

/// Who a transmission is from (for the keypad's bookkeeping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Keypad,
    Board,
}

#[derive(Debug)]
struct Queued {
    bytes: Vec<u8>,
    /// Start this long after the line's last traffic.
    gap: Duration,
    origin: Origin,
}

#[derive(Debug)]
struct Transmission {
    bytes: Vec<u8>,
    started: Instant,
    sent: usize,
}

struct LineTask<T> {
    sim: PopBusSim,
    io: T,
    char_time: Duration,
    line: LineModel,
    tx: Option<Transmission>,
    queue: VecDeque<Queued>,
    rx: BytesMut,
    /// The frame now arriving started on a busy line.
    rx_collided: bool,
    keypad_cursor: usize,
    /// The keypad waits for a board that may never answer.
    keypad_hold_until: Option<Instant>,
    last_step: Instant,
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> LineTask<T> {
    async fn run(mut self) -> io::Result<()> {
        let mut scratch = [0u8; 256];
        let mut ready = BytesMut::new();
        loop {
            // What has already arrived is heard before anything new starts:
            // a busy simulator must not start the keypad over a request that
            // came in while it was not looking.
            if read_ready(&mut self.io, &mut ready).await? > 0 {
                self.receive(&ready);
                ready.clear();
            }
            self.transmit().await?;
            self.start_next();
            self.keypad();
            self.drift();
            let wake = self.next_wake();
            tokio::select! {
                n = self.io.read(&mut scratch) => {
                    let n = n?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    self.receive(&scratch[..n]);
                }
                () = sleep_until(wake) => self.rx_gap(),
            }
        }
    }

    /// Write the bytes whose transmission time has passed.
    async fn transmit(&mut self) -> io::Result<()> {
        let Some(tx) = &mut self.tx else {
            return Ok(());
        };
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(tx.started);
        let due = (elapsed.as_nanos() / self.char_time.as_nanos().max(1)) as usize;
        let due = due.min(tx.bytes.len());
        if due > tx.sent {
            let chunk = &tx.bytes[tx.sent..due];
            // Stamped before writing: nobody can hear the bytes earlier.
            let written_at = Instant::now();
            match timeout(WRITE_LIMIT, self.io.write_all(chunk)).await {
                Ok(r) => r?,
                Err(_) => {
                    debug!("nobody reads the line; transmission dropped");
                    lock(&self.sim.state).stats.overruns += 1;
                    tx.sent = tx.bytes.len();
                }
            }
            tx.sent = tx.sent.max(due);
            self.line.tx_end = Some(written_at);
        }
        if tx.sent >= tx.bytes.len() {
            self.tx = None;
            self.line.transmitting = false;
        }
        Ok(())
    }

    /// Start the next queued transmission when its gap has passed.
    fn start_next(&mut self) {
        if self.tx.is_some() {
            return;
        }
        let Some(next) = self.queue.front() else {
            return;
        };
        let now = Instant::now();
        let ready = self.line.traffic_end().map_or(now, |t| t + next.gap);
        if now < ready || !self.rx.is_empty() {
            return;
        }
        let Some(q) = self.queue.pop_front() else {
            return;
        };
        if q.origin == Origin::Keypad {
            lock(&self.sim.state).stats.keypad_polls += 1;
        }
        self.tx = Some(Transmission {
            bytes: q.bytes,
            started: now,
            sent: 0,
        });
        self.line.transmitting = true;
    }

    /// The keypad's next poll, when the line allows it.
    fn keypad(&mut self) {
        let now = Instant::now();
        if !self.sim.opts.keypad
            || self.tx.is_some()
            || !self.queue.is_empty()
            || !self.rx.is_empty()
            || self.keypad_hold_until.is_some_and(|t| now < t)
            || !self.line.keypad_may_start(now)
        {
            return;
        }
        let mut state = lock(&self.sim.state);
        if state.boards.is_empty() {
            return;
        }
        let rooms = self.sim.opts.rooms.clamp(1, MAX_ROOMS_PER_READ);
        let polls = [
            Request::ReadRooms {
                first: 1,
                count: rooms,
            },
            Request::ReadOutputs,
            Request::ReadAlarms,
        ];
        let i = self.keypad_cursor % (state.boards.len() * polls.len());
        self.keypad_cursor = i + 1;
        let board = &mut state.boards[i / polls.len()];
        let req = &polls[i % polls.len()];
        let Some(request) = frame_bytes(board.number, req.function().code(), req.encode()) else {
            return;
        };
        let reply = if board.powered {
            board.handle(req, self.sim.opts.clock.now())
        } else {
            None
        };
        let number = board.number;
        self.queue.push_back(Queued {
            bytes: request,
            gap: KEYPAD_PAUSE,
            origin: Origin::Keypad,
        });
        match reply.and_then(|r| frame_bytes(number, r.function().code(), r.encode())) {
            Some(bytes) => {
                state.stats.keypad_replies += 1;
                self.queue.push_back(Queued {
                    bytes,
                    gap: BOARD_TURNAROUND,
                    origin: Origin::Board,
                });
            }
            None => {
                let tx_time = self.char_time * 8;
                self.keypad_hold_until = Some(now + tx_time + KEYPAD_REPLY_TIMEOUT);
            }
        }
    }

    fn drift(&mut self) {
        let Some(tau) = self.sim.opts.drift else {
            return;
        };
        let now = Instant::now();
        let dt = now.saturating_duration_since(self.last_step);
        if dt >= DRIFT_STEP {
            self.last_step = now;
            for b in &mut lock(&self.sim.state).boards {
                b.step(dt, tau);
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        // Without drift (and keypad) nothing happens until someone talks.
        let mut wake = now
            + if self.sim.opts.drift.is_some() {
                DRIFT_STEP
            } else {
                IDLE_WAKE
            };
        if let Some(tx) = &self.tx {
            let n = u32::try_from(tx.sent + 1).unwrap_or(u32::MAX);
            wake = wake.min(tx.started + self.char_time * n);
        } else if let Some(q) = self.queue.front() {
            wake = wake.min(self.line.traffic_end().map_or(now, |t| t + q.gap));
        } else if self.sim.opts.keypad {
            let quiet = self.line.traffic_end().map_or(now, |t| t + KEYPAD_PAUSE);
            wake = wake.min(quiet.max(self.keypad_hold_until.unwrap_or(now)));
        }
        if !self.rx.is_empty() {
            wake = wake.min(self.line.rx_end.map_or(now, |t| t + FRAME_GAP));
        }
        wake
    }

    /// Bytes from outside.
    fn receive(&mut self, bytes: &[u8]) {
        let now = Instant::now();
        if self.rx.is_empty() {
            self.rx_collided = self.line.busy(now);
            if self.rx_collided
                && let Some(tx) = &mut self.tx
                && let Some(b) = tx.bytes.get_mut(tx.sent)
            {
                // Two senders at once: what is still to come is garbage.
                *b ^= 0x5A;
            }
        }
        self.line.rx_end = Some(now);
        self.rx.extend_from_slice(bytes);
        self.decode_rx(false);
    }

    /// The line fell silent after bytes from outside: settle what they were.
    fn rx_gap(&mut self) {
        let settled = self
            .line
            .rx_end
            .is_some_and(|t| Instant::now() >= t + FRAME_GAP);
        if !self.rx.is_empty() && settled {
            self.decode_rx(true);
        }
    }

    fn decode_rx(&mut self, idle: bool) {
        loop {
            let item = if idle {
                PopCodec.decode_idle(&mut self.rx)
            } else {
                PopCodec.decode(&mut self.rx)
            };
            match item {
                Ok(None) => break,
                Ok(Some(_)) | Err(_) if self.rx_collided => {
                    lock(&self.sim.state).stats.collisions += 1;
                }
                Ok(Some(frame)) => self.serve(frame),
                Err(e) => {
                    debug!(error = %e, "damaged frame from outside");
                    lock(&self.sim.state).stats.bad_frames += 1;
                }
            }
        }
        if self.rx.is_empty() {
            self.rx_collided = false;
        }
    }

    /// A request from outside, on a free line.
    fn serve(&mut self, frame: Frame) {
        let world = self.sim.opts.clock.now();
        let mut state = lock(&self.sim.state);
        let reply = Request::decode(frame.function, &frame.data)
            .ok()
            .and_then(|req| {
                let board = state
                    .boards
                    .iter_mut()
                    .find(|b| b.number == frame.device && b.powered)?;
                board.handle(&req, world)
            });
        let Some(reply) = reply else {
            state.stats.unanswered += 1;
            return;
        };
        let Some(bytes) = frame_bytes(frame.device, frame.function, reply.encode()) else {
            state.stats.unanswered += 1;
            return;
        };
        state.stats.served += 1;
        if matches!(reply, Response::Ack(Request::SetClockEntry { .. })) {
            state.stats.clock_entries_set += 1;
        }
        // The keypad's exchange that had not started yet is abandoned.
        self.queue.clear();
        let decoy = state.faults.pop_front().and_then(|fault| {
            let data = decoy(&reply).encode().ok()?;
            let device = match fault {
                PopFault::WrongSender => frame.device.wrapping_add(100),
                PopFault::BadChecksum => frame.device,
            };
            let mut bytes = codec::encode(&Frame {
                device,
                function: frame.function,
                data,
            })
            .ok()?;
            if fault == PopFault::BadChecksum
                && let Some(last) = bytes.last_mut()
            {
                *last ^= 0x01;
            }
            Some(bytes)
        });
        for bytes in decoy.into_iter().chain([bytes]) {
            self.queue.push_back(Queued {
                bytes,
                gap: BOARD_TURNAROUND,
                origin: Origin::Board,
            });
        }
    }
}

/// A reply like `r` with other values.
fn decoy(r: &Response) -> Response {
    match r {
        Response::Rooms { first, rooms } => Response::Rooms {
            first: *first,
            rooms: rooms
                .iter()
                .map(|x| RoomRecord {
                    measured: Tenths(x.measured.0.wrapping_add(50)),
                    floor: Tenths(x.floor.0.wrapping_add(10)),
                    ceiling: Tenths(x.ceiling.0.wrapping_add(10)),
                })
                .collect(),
        },
        Response::Outputs(o) => Response::Outputs(OutputStates {
            on: !o.on & mask(o.count),
            ..*o
        }),
        Response::Alarms(a) => Response::Alarms(AlarmInputs {
            active: !a.active & mask(a.count),
            ..*a
        }),
        Response::ClockTable { output, entries } => Response::ClockTable {
            output: *output,
            entries: entries
                .iter()
                .map(|e| ClockEntry {
                    days: !e.days & 0x7F,
                    ..*e
                })
                .collect(),
        },
        Response::Clock(t) => Response::Clock(
            t.datetime()
                .checked_sub(time::Duration::HOUR)
                .and_then(|d| BoardTime::new(d).ok())
                .unwrap_or(*t),
        ),
        Response::Ack(req) => Response::Ack(req.clone()),
    }
}

fn mask(count: u8) -> u16 {
    if count >= 16 {
        u16::MAX
    } else {
        (1u16 << count) - 1
    }
}

fn frame_bytes(
    device: u8,
    function: u8,
    data: Result<Vec<u8>, crate::devices::pop::message::LayoutError>,
) -> Option<Vec<u8>> {
    match data {
        Ok(data) => codec::encode(&Frame {
            device,
            function,
            data,
        })
        .ok(),
        Err(e) => {
            warn!(error = %e, "simulated frame not encodable");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::duplex;

    use super::*;
    use crate::devices::pop::{PopClient, PopTiming, message::Function};

    use time::macros::datetime;

    /// 2026-01-12 is a Monday; `Board::new` boards run on UTC.
    const MONDAY_NOON: OffsetDateTime = datetime!(2026-01-12 12:00 UTC);
    const SATURDAY_1800: ClockTime = (5, 18 * 60);

    #[test]
    fn a_board_serves_its_rooms_and_stays_silent_for_rooms_it_lacks() {
        let mut b = Board::new(1, 8, 6, 3);
        let Some(Response::Rooms { first, rooms }) =
            b.handle(&Request::ReadRooms { first: 7, count: 2 }, MONDAY_NOON)
        else {
            panic!("rooms 7..=8 exist")
        };
        assert_eq!((first, rooms.len()), (7, 2));
        assert_eq!(rooms[1].floor, b.rooms[7].floor);
        assert_eq!(rooms[0].measured, b.rooms[6].measured());
        assert_eq!(
            b.handle(&Request::ReadRooms { first: 8, count: 2 }, MONDAY_NOON),
            None
        );
        assert_eq!(
            b.handle(&Request::ReadClockTable { output: 7 }, MONDAY_NOON),
            None
        );
    }

    #[test]
    fn setpoints_and_outputs_are_set_and_acknowledged_with_an_echo() {
        let mut b = Board::new(2, 8, 6, 3);
        let set = Request::SetSetpoint {
            room: 3,
            kind: SetpointKind::Ceiling,
            value: Tenths(235),
        };
        assert_eq!(b.handle(&set, MONDAY_NOON), Some(Response::Ack(set)));
        assert_eq!(b.rooms[2].ceiling, Tenths(235));
        // output 2 follows its clock (weekdays 17-19): off on Monday noon
        assert_eq!(b.output_on(2, (0, 12 * 60)), Some(false));
        let on = Request::SetOutput {
            output: 2,
            command: OutputCommand::On,
        };
        b.handle(&on, MONDAY_NOON);
        let Some(Response::Outputs(o)) = b.handle(&Request::ReadOutputs, MONDAY_NOON) else {
            panic!()
        };
        assert_eq!((o.is_on(2), o.is_manual(2)), (Some(true), Some(true)));
        // back to the clock: output 1 (daily 06-22) is on at noon, output 2 off
        b.handle(
            &Request::SetOutput {
                output: 2,
                command: OutputCommand::Clock,
            },
            MONDAY_NOON,
        );
        let Some(Response::Outputs(o)) = b.handle(&Request::ReadOutputs, MONDAY_NOON) else {
            panic!()
        };
        assert_eq!(o.on, 0b01);
        assert_eq!(o.manual, 0);
    }

    #[test]
    fn a_clock_entry_set_is_served_and_drives_its_output() {
        let mut b = Board::new(1, 8, 6, 3);
        // output 3, slot 2: Saturday (bit 5) 17:30-18:30
        let entry = ClockEntry {
            days: 1 << 5,
            on: 17 * 60 + 30,
            off: 18 * 60 + 30,
        };
        let set = Request::SetClockEntry {
            output: 3,
            slot: 2,
            entry,
        };
        assert!(b.handle(&set, MONDAY_NOON).is_some());
        assert_eq!(
            b.handle(&Request::ReadClockTable { output: 3 }, MONDAY_NOON),
            Some(Response::ClockTable {
                output: 3,
                entries: vec![ClockEntry::EMPTY, entry]
            })
        );
        assert_eq!(b.output_on(3, SATURDAY_1800), Some(true));
        assert_eq!(b.output_on(3, (0, 12 * 60)), Some(false));
    }

    #[test]
    fn a_board_keeps_its_own_clock_and_its_tables_follow_it() {
        let mut b = Board::new(1, 8, 6, 3);
        // output 1 runs every day 06:00-22:00 on the board's clock
        let Some(Response::Clock(t)) = b.handle(&Request::ReadClock, MONDAY_NOON) else {
            panic!()
        };
        assert_eq!(t.datetime(), datetime!(2026-01-12 12:00));
        // Set it to 23:30 local: output 1 is off by the board's clock, though
        // the world's is at noon.
        let set = Request::SetClock {
            time: BoardTime::new(datetime!(2026-01-12 23:30)).unwrap(),
        };
        assert_eq!(b.handle(&set, MONDAY_NOON), Some(Response::Ack(set)));
        assert_eq!(b.clock_offset, time::Duration::minutes(11 * 60 + 30));
        let Some(Response::Outputs(o)) = b.handle(&Request::ReadOutputs, MONDAY_NOON) else {
            panic!()
        };
        assert_eq!(o.is_on(1), Some(false));
        // The clock runs on with the world's.
        let later = MONDAY_NOON + time::Duration::hours(7);
        assert_eq!(b.local_time(later), datetime!(2026-01-13 06:30));
        let Some(Response::Outputs(o)) = b.handle(&Request::ReadOutputs, later) else {
            panic!()
        };
        assert_eq!(o.is_on(1), Some(true));
    }

    #[test]
    fn boards_start_on_the_zones_local_time() {
        let clock = Clock::starting_at(datetime!(2026-07-01 09:00 UTC), 1.0);
        let sim = PopBusSim::new(PopSimOptions {
            clock,
            ..PopSimOptions::default()
        });
        let t = sim.board_time(1).unwrap();
        // Helsinki summer time, UTC+3 (the clock may have moved a little)
        assert_eq!(
            (t.date(), t.hour()),
            (time::macros::date!(2026 - 07 - 01), 12)
        );
        sim.set_board_time(2, datetime!(2026-07-01 06:00));
        assert_eq!(sim.board_clock(2).map(|c| c.1 / 60), Some(6));
    }

    #[test]
    fn rooms_drift_toward_the_higher_setpoint_and_a_broken_sensor_reports_its_value() {
        let mut b = Board::new(1, 2, 1, 1);
        b.rooms[0].floor = Tenths(220);
        b.rooms[0].ceiling = Tenths(150);
        let before = b.rooms[0].temperature;
        assert!(before < 22.0);
        b.step(Duration::from_secs(600), Duration::from_secs(600));
        let after = b.rooms[0].temperature;
        // one time constant: 63 % of the way
        assert!((after - (22.0 - (22.0 - before) * (-1.0f64).exp())).abs() < 1e-9);
        b.rooms[1].sensor_fault = Some(Tenths(3000));
        assert_eq!(b.rooms[1].measured(), Tenths(3000));
    }

    #[test]
    fn the_line_is_busy_while_transmitting_and_ten_ms_after() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut line = LineModel {
            transmitting: true,
            tx_end: None,
            rx_end: None,
        };
        assert!(line.busy(t0));
        line.transmitting = false;
        line.tx_end = Some(t0);
        assert!(line.busy(t0 + ms(9)));
        assert!(!line.busy(t0 + ms(10)));
        // the keypad waits its pause after anyone's traffic, ours included
        line.rx_end = Some(t0 + ms(15));
        assert!(!line.keypad_may_start(t0 + ms(40)));
        assert!(line.keypad_may_start(t0 + ms(45)));
    }

    /// Read the line until a frame from the simulator begins to arrive.
    async fn until_traffic(io: &mut tokio::io::DuplexStream) {
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_into_keypad_traffic_collides_and_a_polite_one_is_answered() {
        let sim = PopBusSim::new(PopSimOptions {
            drift: None,
            ..PopSimOptions::default()
        });
        let (mut ours, theirs) = duplex(1 << 16);
        let _task = sim.serve(theirs);
        // Barge in as soon as the keypad starts talking.
        until_traffic(&mut ours).await;
        let wire = codec::encode(&Frame {
            device: 1,
            function: Function::ReadOutputs.code(),
            data: vec![0],
        })
        .unwrap();
        ours.write_all(&wire).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let s = sim.stats();
        assert_eq!((s.collisions, s.served), (1, 0));
        assert!(s.keypad_polls >= 2 && s.keypad_replies >= 2, "{s:?}");

        // A client with bus manners on the same line gets its answers.
        let mut client = PopClient::attach(ours, 9600, PopTiming::default());
        for board in [1, 2] {
            let rooms = client.read_rooms(board, 1, 8).await.unwrap();
            let model = sim.board(board).unwrap();
            for (r, m) in rooms.iter().zip(&model.rooms) {
                assert_eq!(r.measured, Ok(m.measured().celsius()));
                assert_eq!(r.floor, Ok(m.floor.celsius()));
            }
        }
        let s = sim.stats();
        assert_eq!((s.collisions, s.served), (1, 2), "{s:?}");
        assert_eq!(client.stats().sends, 2);
        assert!(client.stats().foreign_frames > 0, "the keypad was heard");
    }
}
