//! The register bank a PLC master reads and writes: pure state, no I/O.
//!
//! The bank holds the four Modbus tables at the addresses a profile maps, each
//! address with one [`Direction`]: `from_plc` cells are written by the master
//! and become [`Reading`]s, `to_plc` cells are filled by the agent through
//! [`Bank::offer`] and delivered when the master reads them.
//!
//! **Unknown values.** A cell nobody has written yet is *unknown*. The
//! original cottage system filled its shared memory with -1 (`memset` to
//! 0xFF) so that a reader could tell unread values apart; we keep that for
//! registers: an unknown register reads as [`UNKNOWN_WORD`] (0xFFFF, -1 as
//! i16). A bit has no spare value, so an unknown coil or discrete input reads
//! as 0 (off): the safe state of an output request, and what a PLC program
//! must treat as "nothing asked". Inside the agent, unknown is never a value:
//! no reading is emitted and [`Bank::value`] answers `None` until the point
//! was written (from_plc) or offered (to_plc). An offer whose encoding is
//! 0xFFFF in every register is refused ([`BankError::Marker`]): the PLC could
//! not tell it from unknown. Once one bit point of a `to_plc` register is
//! offered, the register's other (still unknown) bits read as 0.
//!
//! **Readings from the PLC.** The master rewrites its whole request list
//! every round, so most writes repeat the last value. A `from_plc` point
//! produces a reading when its value changes, and an unchanged value again
//! once `repeat_every` (the device's round time) has passed since the last
//! reading of it: as many readings as polling the PLC would give, without one
//! per write of a round that may run every second. A value wider than one
//! register (i32, u32, f32) is decoded after each write that touches it; write
//! both registers in one FC10, as two FC06 requests would show a torn value in
//! between.
//!
//! **Deliveries.** [`Bank::offer`] puts a value in the bank at once (so the
//! next read sees it) and returns a [`Delivery`] that resolves only when the
//! master has read all of the point's registers or bits in one request after
//! the offer, and, when the point names an `echo` point, once that `from_plc`
//! point holds the same value (within half its scale step). A newer offer for
//! the same point supersedes an older one, which resolves as
//! [`DeliveryError::Superseded`]. [`Bank::write`] is the same offer with the
//! semantics of a bus write (the agent's write queue on a slave bus uses it):
//! writable `to_plc` points only, a time limit, and a reason when the PLC did
//! not take the value in time (not read, read but not echoed, or echoed with
//! another value: a mismatch).
//!
//! **Exceptions** (Modbus Application Protocol V1.1b3 §7): a request that
//! touches an address the profile does not map, or a write that touches a
//! `to_plc` address, gets 0x02 ILLEGAL DATA ADDRESS. Quantity checks (0x03)
//! happen earlier, when the PDU is decoded.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use protocol::{Quality, Reading};
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tokio_modbus::ExceptionCode;
use tracing::debug;

use crate::{
    devices::ascii::pdu::{Request, Response},
    poller::WriteError,
    registers::{
        DataType, Direction, Function, Point, PointSpec, decode_bits, decode_registers,
        encode::{Encoded, encode_registers, merge_bit},
    },
};

/// What an unknown register reads as on the wire: 0xFFFF, the original
/// system's -1.
pub const UNKNOWN_WORD: u16 = 0xFFFF;

/// Why an offer or a user's read was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BankError {
    /// No enabled point of that key in the bank.
    #[error("no point `{0}` in the bank")]
    UnknownPoint(String),
    /// The point is `from_plc`: the PLC writes it, the agent does not.
    #[error("point `{0}` is written by the PLC (`from_plc`); the agent cannot offer it")]
    FromPlc(String),
    /// The value does not fit the point's data type.
    #[error("cannot encode {value} for `{point}`: {reason}")]
    Encode {
        /// Point key.
        point: String,
        /// The offered value.
        value: f64,
        /// Why.
        reason: String,
    },
    /// The value encodes to the unknown marker in every register.
    #[error(
        "{value} encodes to 0xFFFF in every register of `{point}`, the bank's \"unknown\" \
         marker: the PLC could not tell it from unknown"
    )]
    Marker {
        /// Point key.
        point: String,
        /// The offered value.
        value: f64,
    },
}

/// A point's value as users see it, served from the bank at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BankValue {
    /// Engineering value, decoded from the bank's words or bits (what the PLC sees).
    pub value: f64,
    /// When the PLC wrote it (`from_plc`) or the agent offered it (`to_plc`).
    pub updated_at: OffsetDateTime,
    /// A `to_plc` value the PLC has not taken yet (not read, or not echoed).
    pub pending: bool,
}

/// A delivered offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// When the master read the value.
    pub read_at: OffsetDateTime,
    /// True when an echo point confirmed it as well.
    pub echoed: bool,
}

/// Why an offer will never be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// A newer offer for the same point replaced it before the PLC took it.
    #[error("superseded by a newer value before the PLC took it")]
    Superseded,
    /// The bank is gone (the agent is stopping).
    #[error("the slave bus stopped")]
    Closed,
}

/// Resolves when an offered value has been read by the master (and echoed,
/// where the point has an echo). Dropping it does not withdraw the value.
#[derive(Debug)]
pub struct Delivery {
    rx: oneshot::Receiver<Result<Delivered, DeliveryError>>,
}

impl Delivery {
    /// The outcome if it is already known, without waiting.
    pub fn try_outcome(&mut self) -> Option<Result<Delivered, DeliveryError>> {
        match self.rx.try_recv() {
            Ok(outcome) => Some(outcome),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(DeliveryError::Closed)),
        }
    }
}

impl Future for Delivery {
    type Output = Result<Delivered, DeliveryError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(DeliveryError::Closed)))
    }
}

/// The answer to one request: the response PDU and what it produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    /// The normal response (exceptions are the `Err` of [`BankState::handle`]).
    pub response: Response,
    /// Readings: `from_plc` values the request wrote, `to_plc` values it delivered.
    pub readings: Vec<Reading>,
}

#[derive(Debug, Clone)]
struct BankPoint {
    key: String,
    unit: String,
    spec: PointSpec,
    direction: Direction,
    echo: Option<usize>,
    /// The profile marks it `writable = true`: what [`Bank::write`] (the
    /// executor's route) requires; [`Bank::offer`] does not ask.
    writable: bool,
}

impl BankPoint {
    fn addresses(&self) -> impl Iterator<Item = (Function, u16)> + '_ {
        addresses(self.spec.address.0, usize::from(self.spec.width()))
            .map(|a| (self.spec.function, a))
    }

    /// Whether the request range `[addr, end)` of `table` covers the whole point.
    fn within(&self, table: Function, addr: u16, end: u32) -> bool {
        let start = u32::from(self.spec.address.0);
        self.spec.function == table
            && start >= u32::from(addr)
            && start + u32::from(self.spec.width()) <= end
    }

    /// Whether the range `[addr, end)` of `table` touches the point.
    fn overlaps(&self, table: Function, addr: u16, end: u32) -> bool {
        let start = u32::from(self.spec.address.0);
        self.spec.function == table
            && start < end
            && start + u32::from(self.spec.width()) > u32::from(addr)
    }
}

/// One mapped register or bit.
#[derive(Debug, Clone, Copy)]
struct Cell {
    /// The word; 0 or 1 in the bit tables.
    raw: u16,
    known: bool,
    direction: Direction,
}

#[derive(Debug)]
struct Pending {
    read_at: Option<OffsetDateTime>,
    reply: oneshot::Sender<Result<Delivered, DeliveryError>>,
}

#[derive(Debug, Default)]
struct PointState {
    /// Last write (from_plc, when complete) or offer (to_plc).
    updated_at: Option<OffsetDateTime>,
    /// from_plc: the last reading emitted.
    reported: Option<(f64, OffsetDateTime)>,
    /// to_plc: the offer not yet delivered.
    offer: Option<Pending>,
}

/// The bank of one exchange area, without locking: what [`Bank`] shares.
#[derive(Debug)]
pub struct BankState {
    device: String,
    repeat_every: Duration,
    points: Vec<BankPoint>,
    state: Vec<PointState>,
    cells: BTreeMap<(Function, u16), Cell>,
}

impl BankState {
    /// Lay out the enabled `points` of `device`. Fails with a sentence naming
    /// the point when a direction is missing or impossible, two points overlap,
    /// an address carries both directions, or an `echo` is wrong.
    pub fn new(device: &str, points: &[Point], repeat_every: Duration) -> Result<Self, String> {
        let mut out: Vec<BankPoint> = Vec::new();
        let mut cells: BTreeMap<(Function, u16), Cell> = BTreeMap::new();
        let mut owners: BTreeMap<(Function, u16), Vec<usize>> = BTreeMap::new();
        for p in points.iter().filter(|p| p.enabled) {
            let Some(spec) = p.spec.modbus() else {
                return Err(format!("point `{}` is not a Modbus point", p.key));
            };
            let place = format!("point `{}` ({} {})", p.key, spec.function, spec.address.0);
            let direction = match (spec.function, p.direction) {
                (Function::Input | Function::Discrete, None | Some(Direction::ToPlc)) => {
                    Direction::ToPlc
                }
                (Function::Input | Function::Discrete, Some(Direction::FromPlc)) => {
                    return Err(format!(
                        "{place} cannot be `from_plc`: the master can only read the {} table",
                        spec.function
                    ));
                }
                (Function::Holding | Function::Coil, Some(d)) => d,
                (Function::Holding | Function::Coil, None) => {
                    return Err(format!(
                        "{place} needs `direction = \"from_plc\"` (the PLC writes it) or \
                         `direction = \"to_plc\"` (the agent offers it to the PLC)"
                    ));
                }
            };
            let bp = BankPoint {
                key: p.key.clone(),
                unit: p.unit.clone(),
                spec: spec.clone(),
                direction,
                echo: None,
                writable: p.writable,
            };
            let index = out.len();
            for at in bp.addresses() {
                if let Some(cell) = cells.get(&at)
                    && cell.direction != direction
                {
                    return Err(format!(
                        "{place}: {} {} is both `{}` and `{direction}`; one address has one direction",
                        at.0, at.1, cell.direction
                    ));
                }
                let sharing = owners.entry(at).or_default();
                // Only bool points on different bits may share a register.
                if let Some(&other) = sharing.iter().find(|&&o| {
                    let o = &out[o].spec;
                    o.bit.is_none() || spec.bit.is_none() || o.bit == spec.bit
                }) {
                    return Err(format!(
                        "{place} overlaps point `{}` at {} {}",
                        out[other].key, at.0, at.1
                    ));
                }
                sharing.push(index);
                cells.insert(
                    at,
                    Cell {
                        raw: 0,
                        known: false,
                        direction,
                    },
                );
            }
            out.push(bp);
        }
        for p in points.iter().filter(|p| p.enabled) {
            let Some(echo) = &p.echo else { continue };
            let find = |k: &str| out.iter().position(|b| b.key == k);
            let (Some(i), Some(j)) = (find(&p.key), find(echo)) else {
                return Err(format!(
                    "point `{}`: echo point `{echo}` is not an enabled point of the profile",
                    p.key
                ));
            };
            if out[i].direction != Direction::ToPlc {
                return Err(format!(
                    "point `{}`: only a `to_plc` point can have an `echo`",
                    p.key
                ));
            }
            if out[j].direction != Direction::FromPlc {
                return Err(format!(
                    "point `{}`: echo point `{echo}` must be `from_plc` (the PLC writes the echo)",
                    p.key
                ));
            }
            out[i].echo = Some(j);
        }
        let state = out.iter().map(|_| PointState::default()).collect();
        Ok(BankState {
            device: device.to_owned(),
            repeat_every,
            points: out,
            state,
            cells,
        })
    }

    /// Answer one request addressed to this bank at wall time `now`. An `Err`
    /// is the exception code to send.
    pub fn handle(&mut self, req: &Request, now: OffsetDateTime) -> Result<Handled, ExceptionCode> {
        let mut readings = Vec::new();
        let response = match req {
            Request::ReadCoils { addr, count } => Response::ReadCoils(bits(self.read(
                Function::Coil,
                *addr,
                *count,
                now,
                &mut readings,
            )?)),
            Request::ReadDiscreteInputs { addr, count } => Response::ReadDiscreteInputs(bits(
                self.read(Function::Discrete, *addr, *count, now, &mut readings)?,
            )),
            Request::ReadHoldingRegisters { addr, count } => Response::ReadHoldingRegisters(
                self.read(Function::Holding, *addr, *count, now, &mut readings)?,
            ),
            Request::ReadInputRegisters { addr, count } => Response::ReadInputRegisters(
                self.read(Function::Input, *addr, *count, now, &mut readings)?,
            ),
            Request::WriteSingleCoil { addr, on } => {
                self.write(Function::Coil, *addr, &[u16::from(*on)], now, &mut readings)?;
                Response::WriteSingleCoil {
                    addr: *addr,
                    on: *on,
                }
            }
            Request::WriteSingleRegister { addr, value } => {
                self.write(Function::Holding, *addr, &[*value], now, &mut readings)?;
                Response::WriteSingleRegister {
                    addr: *addr,
                    value: *value,
                }
            }
            Request::WriteMultipleCoils { addr, coils } => {
                let raw: Vec<u16> = coils.iter().map(|&c| u16::from(c)).collect();
                self.write(Function::Coil, *addr, &raw, now, &mut readings)?;
                Response::WriteMultipleCoils {
                    addr: *addr,
                    count: count_of(raw.len()),
                }
            }
            Request::WriteMultipleRegisters { addr, values } => {
                self.write(Function::Holding, *addr, values, now, &mut readings)?;
                Response::WriteMultipleRegisters {
                    addr: *addr,
                    count: count_of(values.len()),
                }
            }
        };
        Ok(Handled { response, readings })
    }

    /// Every cell of `[addr, addr + count)` must be mapped.
    fn range(&self, table: Function, addr: u16, count: usize) -> Result<u32, ExceptionCode> {
        let end = u32::from(addr) + u32::try_from(count).unwrap_or(u32::MAX);
        if end > 0x1_0000 {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let mut keys = self.cells.range((table, addr)..).map(|(k, _)| *k);
        let mapped = addresses(addr, count).all(|want| keys.next() == Some((table, want)));
        if mapped {
            Ok(end)
        } else {
            Err(ExceptionCode::IllegalDataAddress)
        }
    }

    fn read(
        &mut self,
        table: Function,
        addr: u16,
        count: u16,
        now: OffsetDateTime,
        readings: &mut Vec<Reading>,
    ) -> Result<Vec<u16>, ExceptionCode> {
        let end = self.range(table, addr, usize::from(count))?;
        let unknown = if table.is_register() { UNKNOWN_WORD } else { 0 };
        let words = self
            .cells
            .range((table, addr)..)
            .take(usize::from(count))
            .map(|(_, c)| if c.known { c.raw } else { unknown })
            .collect();
        for i in 0..self.points.len() {
            if !self.points[i].within(table, addr, end) {
                continue;
            }
            if let Some(p) = self.state[i].offer.as_mut() {
                p.read_at.get_or_insert(now);
                self.try_deliver(i, readings);
            }
        }
        Ok(words)
    }

    fn write(
        &mut self,
        table: Function,
        addr: u16,
        raw: &[u16],
        now: OffsetDateTime,
        readings: &mut Vec<Reading>,
    ) -> Result<(), ExceptionCode> {
        let end = self.range(table, addr, raw.len())?;
        let writable = self
            .cells
            .range((table, addr)..)
            .take(raw.len())
            .all(|(_, c)| c.direction == Direction::FromPlc);
        if !writable {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        for (a, &w) in addresses(addr, raw.len()).zip(raw) {
            if let Some(c) = self.cells.get_mut(&(table, a)) {
                c.raw = w;
                c.known = true;
            }
        }
        let touched: Vec<usize> = (0..self.points.len())
            .filter(|&i| self.points[i].overlaps(table, addr, end))
            .collect();
        for &i in &touched {
            let Some(value) = self.current(i) else {
                continue;
            };
            let st = &mut self.state[i];
            st.updated_at = Some(now);
            let due = match st.reported {
                None => true,
                Some((last, at)) => last != value || now - at >= self.repeat_every,
            };
            if due {
                st.reported = Some((value, now));
                readings.push(self.reading(i, value, now));
            }
        }
        for i in 0..self.points.len() {
            let echoes = self.points[i].echo.is_some_and(|e| touched.contains(&e));
            if echoes && self.state[i].offer.is_some() {
                self.try_deliver(i, readings);
            }
        }
        Ok(())
    }

    /// Resolve point `i`'s offer when it was read and, if it has an echo, echoed.
    fn try_deliver(&mut self, i: usize, readings: &mut Vec<Reading>) {
        let Some(read_at) = self.state[i].offer.as_ref().and_then(|p| p.read_at) else {
            return;
        };
        let Some(value) = self.current(i) else {
            return;
        };
        let echoed = match self.points[i].echo {
            None => false,
            Some(j) => match self.current(j) {
                Some(echo) if same_value(&self.points[j].spec, echo, value) => true,
                _ => return,
            },
        };
        if let Some(p) = self.state[i].offer.take() {
            readings.push(self.reading(i, value, read_at));
            let _ = p.reply.send(Ok(Delivered { read_at, echoed }));
        }
    }

    /// Place `value` for the PLC; see [`Bank::offer`].
    pub fn offer(
        &mut self,
        key: &str,
        value: f64,
        now: OffsetDateTime,
    ) -> Result<Delivery, BankError> {
        let i = self.index(key)?;
        let p = &self.points[i];
        if p.direction != Direction::ToPlc {
            return Err(BankError::FromPlc(key.to_owned()));
        }
        let encoded = encode_registers(&p.spec, value).map_err(|e| BankError::Encode {
            point: key.to_owned(),
            value,
            reason: e.to_string(),
        })?;
        let table = p.spec.function;
        let addr = p.spec.address.0;
        match encoded {
            Encoded::Words(words) => {
                if words.iter().all(|&w| w == UNKNOWN_WORD) {
                    return Err(BankError::Marker {
                        point: key.to_owned(),
                        value,
                    });
                }
                for (a, w) in addresses(addr, words.len()).zip(words) {
                    if let Some(c) = self.cells.get_mut(&(table, a)) {
                        c.raw = w;
                        c.known = true;
                    }
                }
            }
            Encoded::Bit { bit, on } => {
                if let Some(c) = self.cells.get_mut(&(table, addr)) {
                    c.raw = if table.is_register() {
                        // The other bits of a register nobody set read as 0, not as the marker.
                        merge_bit(if c.known { c.raw } else { 0 }, bit, on)
                    } else {
                        u16::from(on)
                    };
                    c.known = true;
                }
            }
        }
        let (reply, rx) = oneshot::channel();
        let st = &mut self.state[i];
        st.updated_at = Some(now);
        if let Some(old) = st.offer.replace(Pending {
            read_at: None,
            reply,
        }) {
            let _ = old.reply.send(Err(DeliveryError::Superseded));
        }
        Ok(Delivery { rx })
    }

    /// The point's value as users see it; `Ok(None)` while unknown.
    pub fn value(&self, key: &str) -> Result<Option<BankValue>, BankError> {
        let i = self.index(key)?;
        let st = &self.state[i];
        let (Some(value), Some(updated_at)) = (self.current(i), st.updated_at) else {
            return Ok(None);
        };
        Ok(Some(BankValue {
            value,
            updated_at,
            pending: st.offer.is_some(),
        }))
    }

    /// Keys of the bank's points, in profile order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.points.iter().map(|p| p.key.as_str())
    }

    fn index(&self, key: &str) -> Result<usize, BankError> {
        self.points
            .iter()
            .position(|p| p.key == key)
            .ok_or_else(|| BankError::UnknownPoint(key.to_owned()))
    }

    /// The decoded value of point `i`, `None` while unknown.
    fn current(&self, i: usize) -> Option<f64> {
        let p = &self.points[i];
        if p.direction == Direction::ToPlc && self.state[i].updated_at.is_none() {
            return None;
        }
        let mut raw = Vec::with_capacity(usize::from(p.spec.width()));
        for at in p.addresses() {
            let c = self.cells.get(&at)?;
            if !c.known {
                return None;
            }
            raw.push(c.raw);
        }
        let decoded = if p.spec.function.is_register() {
            decode_registers(&p.spec, &raw)
        } else {
            decode_bits(&p.spec, &[raw.first().is_some_and(|&b| b != 0)])
        };
        match decoded {
            Ok(v) => Some(v),
            Err(e) => {
                debug!(device = %self.device, point = %p.key, error = %e, "bank value not decodable");
                None
            }
        }
    }

    fn reading(&self, i: usize, value: f64, ts: OffsetDateTime) -> Reading {
        Reading {
            device: self.device.clone(),
            point: self.points[i].key.clone(),
            ts,
            value,
            unit: self.points[i].unit.clone(),
            quality: Quality::Good,
        }
    }
}

/// Whether an echoed value confirms an offered one: equal within half the
/// echo point's scale step (a relative 1e-6 for floats).
fn same_value(echo: &PointSpec, echoed: f64, offered: f64) -> bool {
    let tolerance = match echo.data_type {
        DataType::F32 => 1e-6 * offered.abs().max(1.0),
        DataType::Bool => 0.5,
        _ => echo.scale.abs() / 2.0,
    };
    (echoed - offered).abs() < tolerance
}

/// `n` addresses from `start`, stopping at 65535 (a `u16` range would
/// overflow computing the address after the last).
fn addresses(start: u16, n: usize) -> impl Iterator<Item = u16> {
    (u32::from(start)..)
        .take(n)
        .map_while(|a| u16::try_from(a).ok())
}

fn bits(raw: Vec<u16>) -> Vec<bool> {
    raw.into_iter().map(|b| b != 0).collect()
}

/// A quantity the PDU decoder already limited to 1..=1968.
fn count_of(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// A bank shared between the bus task that serves the master and the rest of
/// the agent (users' reads, offers). Cheap to clone; clones share one bank.
#[derive(Debug, Clone)]
pub struct Bank {
    inner: Arc<Mutex<BankState>>,
}

impl Bank {
    /// A bank for `device`'s enabled points (see [`BankState::new`]).
    pub fn new(device: &str, points: &[Point], repeat_every: Duration) -> Result<Bank, String> {
        Ok(Bank {
            inner: Arc::new(Mutex::new(BankState::new(device, points, repeat_every)?)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BankState> {
        // Every method leaves the state consistent before it could panic, so
        // a poisoned lock still guards a usable bank.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Place `value` (engineering units) in the bank for the PLC: the next
    /// read of the point returns it. The returned [`Delivery`] resolves once
    /// the master has read it (and echoed it, where the point has an echo).
    pub fn offer(&self, point: &str, value: f64) -> Result<Delivery, BankError> {
        self.lock().offer(point, value, OffsetDateTime::now_utc())
    }

    /// The point's current value, at once; `Ok(None)` while it is unknown.
    pub fn value(&self, point: &str) -> Result<Option<BankValue>, BankError> {
        self.lock().value(point)
    }

    /// Keys of the bank's points, in profile order.
    pub fn keys(&self) -> Vec<String> {
        self.lock().keys().map(str::to_owned).collect()
    }

    /// Answer a request from the master (see [`BankState::handle`]).
    pub fn handle(&self, req: &Request, now: OffsetDateTime) -> Result<Handled, ExceptionCode> {
        self.lock().handle(req, now)
    }

    /// A write with the semantics of [`crate::poller::BusDriver::write`], the
    /// route of the agent's write queue on a slave bus: the point must be a
    /// `to_plc` point the profile marks `writable = true`; the value is
    /// offered, and the write is done only when the master has read it (and
    /// echoed it, where the point has an echo) within `within`.
    ///
    /// Errors: a point not in the bank is [`WriteError::UnknownPoint`]; a
    /// point the profile does not mark writable is
    /// [`WriteError::NotWritable`]; a `from_plc` point is
    /// [`WriteError::Unsupported`] with the reason (the PLC writes it); a value
    /// the point cannot carry is [`WriteError::Encode`]. Nothing is offered
    /// in those cases. When `within` passes first, the value **stays in the
    /// bank** and is still delivered when the PLC next reads it: an echo that
    /// holds another value is [`WriteError::Mismatch`] (the PLC applied
    /// something else, e.g. clamped to its own limits); a PLC that did not
    /// read it, or read it but did not echo it, is [`WriteError::Unverified`]
    /// with a sentence saying so. A newer offer for the same point that
    /// replaced this one before the PLC took it is [`WriteError::Refused`].
    pub async fn write(
        &self,
        point: &str,
        value: f64,
        within: Duration,
    ) -> Result<Delivered, WriteError> {
        let mut delivery = {
            let mut state = self.lock();
            state.check_writable(point)?;
            state
                .offer(point, value, OffsetDateTime::now_utc())
                .map_err(|e| state.write_error(e))?
        };
        let outcome = match tokio::time::timeout(within, &mut delivery).await {
            Ok(outcome) => outcome,
            Err(_elapsed) => {
                // Deliveries resolve under the lock: holding it, the outcome
                // and the bank's state agree.
                let state = self.lock();
                match delivery.try_outcome() {
                    Some(outcome) => outcome,
                    None => return Err(state.not_taken(point, within)),
                }
            }
        };
        match outcome {
            Ok(done) => Ok(done),
            Err(DeliveryError::Superseded) => Err(WriteError::Refused(format!(
                "`{point}` = {value} was superseded by a newer value before the PLC took it"
            ))),
            Err(DeliveryError::Closed) => {
                Err(WriteError::Transport(DeliveryError::Closed.to_string()))
            }
        }
    }
}

impl BankState {
    /// Refuse, before offering anything, a write the profile does not allow:
    /// unknown point, `from_plc` point, point not marked `writable`.
    fn check_writable(&self, key: &str) -> Result<(), WriteError> {
        let i = self.index(key).map_err(|e| self.write_error(e))?;
        let p = &self.points[i];
        if p.direction != Direction::ToPlc {
            return Err(self.write_error(BankError::FromPlc(key.to_owned())));
        }
        if !p.writable {
            return Err(WriteError::NotWritable(key.to_owned()));
        }
        Ok(())
    }

    /// An offer refused by the bank, as a write error.
    fn write_error(&self, e: BankError) -> WriteError {
        match e {
            BankError::UnknownPoint(point) => WriteError::UnknownPoint {
                device: self.device.clone(),
                point,
            },
            BankError::FromPlc(_) => WriteError::Unsupported(e.to_string()),
            BankError::Encode {
                point,
                value,
                reason,
            } => WriteError::Encode {
                point,
                value,
                reason,
            },
            BankError::Marker { ref point, value } => WriteError::Encode {
                point: point.clone(),
                value,
                reason: e.to_string(),
            },
        }
    }

    /// Why the offer of `key` is still pending after `within`: read but
    /// echoed with another value (a mismatch), read but not echoed, or not
    /// read at all. The offer stays; the sentence says so.
    fn not_taken(&self, key: &str, within: Duration) -> WriteError {
        let stays = "the value stays in the bank and is delivered when the PLC next reads it";
        let unverified = |reason: String| WriteError::Unverified {
            point: key.to_owned(),
            reason,
        };
        let Ok(i) = self.index(key) else {
            return unverified(format!("not taken by the PLC within {within:?}"));
        };
        let read_at = self.state[i].offer.as_ref().and_then(|p| p.read_at);
        let echo = self.points[i].echo;
        match (read_at, echo) {
            (None, _) => unverified(format!(
                "the PLC did not read it within {within:?} (is the master polling?); {stays}"
            )),
            (Some(_), Some(j)) => match (self.current(i), self.current(j)) {
                (Some(wrote), Some(read_back)) => WriteError::Mismatch {
                    point: key.to_owned(),
                    wrote,
                    read_back,
                },
                _ => unverified(format!(
                    "the PLC read it but did not echo it in `{}` within {within:?}; {stays}",
                    self.points[j].key
                )),
            },
            // Without an echo a read delivers at once; kept for completeness.
            (Some(_), None) => unverified(format!("not taken by the PLC within {within:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registers::parse_profile;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-21 12:00 UTC);
    const ROUND: Duration = Duration::from_secs(5);

    /// A small exchange area with every table and both directions.
    const PROFILE: &str = r#"
[[profile]]
id = "exchange"
[[profile.point]]
name = "room_temp"          # holding 0, the PLC writes
function = "holding"
address = 0
data_type = "i16"
scale = 0.1
unit = "degC"
direction = "from_plc"
[[profile.point]]
name = "energy"             # holding 1-2, the PLC writes (u32)
function = "holding"
address = 1
data_type = "u32"
unit = "kWh"
direction = "from_plc"
[[profile.point]]
name = "setpoint_echo"      # holding 3, the PLC writes back what it applied
function = "holding"
address = 3
data_type = "i16"
scale = 0.1
direction = "from_plc"
[[profile.point]]
name = "setpoint"           # holding 10, the agent offers, echoed at 3
function = "holding"
address = 10
data_type = "i16"
scale = 0.1
unit = "degC"
direction = "to_plc"
echo = "setpoint_echo"
writable = true
[[profile.point]]
name = "mode"               # holding 11, the agent offers, no echo
function = "holding"
address = 11
data_type = "u16"
direction = "to_plc"
writable = true
[[profile.point]]
name = "door_open"          # coil 0, the PLC writes
function = "coil"
address = 0
data_type = "bool"
direction = "from_plc"
[[profile.point]]
name = "sauna_request"      # coil 8, the agent offers
function = "coil"
address = 8
data_type = "bool"
direction = "to_plc"
[[profile.point]]
name = "price"              # input 0, the agent offers (default direction)
function = "input"
address = 0
data_type = "u16"
scale = 0.01
[[profile.point]]
name = "link_up"            # discrete 0
function = "discrete"
address = 0
data_type = "bool"
[[profile.point]]
name = "flag_a"             # holding 20 bit 0, the agent offers
function = "holding"
address = 20
data_type = "bool"
bit = 0
direction = "to_plc"
[[profile.point]]
name = "flag_b"             # holding 20 bit 3
function = "holding"
address = 20
data_type = "bool"
bit = 3
direction = "to_plc"
"#;

    fn points(text: &str) -> Vec<Point> {
        parse_profile("t.toml", text).unwrap().remove(0).points
    }

    fn bank() -> BankState {
        BankState::new("plc", &points(PROFILE), ROUND).unwrap()
    }

    fn layout_error(extra: &str) -> String {
        BankState::new("plc", &points(&format!("{PROFILE}{extra}")), ROUND).unwrap_err()
    }

    fn at(s: u64) -> OffsetDateTime {
        T0 + Duration::from_secs(s)
    }

    fn read_holding(b: &mut BankState, addr: u16, count: u16, now: OffsetDateTime) -> Vec<u16> {
        match b
            .handle(&Request::ReadHoldingRegisters { addr, count }, now)
            .unwrap()
            .response
        {
            Response::ReadHoldingRegisters(w) => w,
            other => panic!("{other:?}"),
        }
    }

    fn write_regs(b: &mut BankState, addr: u16, values: &[u16], now: OffsetDateTime) -> Handled {
        b.handle(
            &Request::WriteMultipleRegisters {
                addr,
                values: values.to_vec(),
            },
            now,
        )
        .unwrap()
    }

    #[test]
    fn registers_nobody_wrote_read_as_0xffff_and_bits_as_off() {
        let mut b = bank();
        assert_eq!(read_holding(&mut b, 0, 4, T0), vec![0xFFFF; 4]);
        assert_eq!(read_holding(&mut b, 10, 2, T0), vec![0xFFFF; 2]);
        let coils = b
            .handle(&Request::ReadCoils { addr: 8, count: 1 }, T0)
            .unwrap();
        assert_eq!(coils.response, Response::ReadCoils(vec![false]));
        let inputs = b
            .handle(&Request::ReadInputRegisters { addr: 0, count: 1 }, T0)
            .unwrap();
        assert_eq!(inputs.response, Response::ReadInputRegisters(vec![0xFFFF]));
        assert_eq!(b.value("room_temp"), Ok(None), "unknown is not a value");
        assert_eq!(b.value("setpoint"), Ok(None));
    }

    #[test]
    fn a_write_from_the_plc_becomes_a_reading_stamped_with_its_arrival() {
        let mut b = bank();
        let h = write_regs(&mut b, 0, &[215, 0x0001, 0x0002], at(1));
        assert_eq!(
            h.response,
            Response::WriteMultipleRegisters { addr: 0, count: 3 }
        );
        let got: Vec<_> = h
            .readings
            .iter()
            .map(|r| (r.point.as_str(), r.value, r.ts, r.unit.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("room_temp", 21.5, at(1), "degC"),
                ("energy", 65538.0, at(1), "kWh")
            ]
        );
        let v = b.value("room_temp").unwrap().unwrap();
        assert_eq!((v.value, v.updated_at, v.pending), (21.5, at(1), false));
        // -1 written by the PLC is a value, not "unknown".
        let h = write_regs(&mut b, 0, &[0xFFFF], at(2));
        assert_eq!(h.readings[0].value, -0.1);
    }

    #[test]
    fn an_unchanged_value_is_reported_again_only_after_a_round() {
        let mut b = bank();
        assert_eq!(write_regs(&mut b, 0, &[215], at(0)).readings.len(), 1);
        assert!(write_regs(&mut b, 0, &[215], at(1)).readings.is_empty());
        assert!(write_regs(&mut b, 0, &[215], at(4)).readings.is_empty());
        assert_eq!(
            write_regs(&mut b, 0, &[216], at(4)).readings.len(),
            1,
            "changed"
        );
        assert_eq!(
            write_regs(&mut b, 0, &[216], at(9)).readings.len(),
            1,
            "a round later"
        );
    }

    #[test]
    fn half_of_a_32_bit_value_is_not_yet_a_reading() {
        let mut b = bank();
        let h = b
            .handle(&Request::WriteSingleRegister { addr: 1, value: 0 }, T0)
            .unwrap();
        assert!(h.readings.is_empty());
        assert_eq!(b.value("energy"), Ok(None));
        let h = b
            .handle(&Request::WriteSingleRegister { addr: 2, value: 7 }, T0)
            .unwrap();
        assert_eq!(h.readings[0].value, 7.0);
    }

    #[test]
    fn coil_writes_from_the_plc_are_binary_readings() {
        let mut b = bank();
        let h = b
            .handle(&Request::WriteSingleCoil { addr: 0, on: true }, T0)
            .unwrap();
        assert_eq!(h.response, Response::WriteSingleCoil { addr: 0, on: true });
        assert_eq!(h.readings[0].value, 1.0);
        let h = b
            .handle(
                &Request::WriteMultipleCoils {
                    addr: 0,
                    coils: vec![false],
                },
                at(1),
            )
            .unwrap();
        assert_eq!(h.readings[0].value, 0.0);
    }

    #[test]
    fn unmapped_addresses_and_writes_to_to_plc_cells_are_illegal_addresses() {
        let mut b = bank();
        let exc = |b: &mut BankState, r: Request| b.handle(&r, T0).unwrap_err();
        // 4..=9 are a hole in the holding table.
        assert_eq!(
            exc(&mut b, Request::ReadHoldingRegisters { addr: 0, count: 5 }),
            ExceptionCode::IllegalDataAddress
        );
        assert_eq!(
            exc(&mut b, Request::ReadHoldingRegisters { addr: 12, count: 1 }),
            ExceptionCode::IllegalDataAddress
        );
        assert_eq!(
            exc(
                &mut b,
                Request::ReadHoldingRegisters {
                    addr: 0xFFFF,
                    count: 2
                }
            ),
            ExceptionCode::IllegalDataAddress,
            "past the end of the address space"
        );
        assert_eq!(
            exc(&mut b, Request::ReadCoils { addr: 1, count: 1 }),
            ExceptionCode::IllegalDataAddress
        );
        // The master may not overwrite what the agent offers.
        assert_eq!(
            exc(&mut b, Request::WriteSingleRegister { addr: 10, value: 1 }),
            ExceptionCode::IllegalDataAddress
        );
        assert_eq!(
            exc(&mut b, Request::WriteSingleCoil { addr: 8, on: true }),
            ExceptionCode::IllegalDataAddress
        );
        // A refused request changes nothing.
        assert_eq!(
            exc(
                &mut b,
                Request::WriteMultipleRegisters {
                    addr: 3,
                    values: vec![1; 8]
                }
            ),
            ExceptionCode::IllegalDataAddress
        );
        assert_eq!(read_holding(&mut b, 3, 1, T0), vec![0xFFFF]);
    }

    #[test]
    fn an_offer_is_in_the_bank_at_once_and_done_only_after_the_master_read_it() {
        let mut b = bank();
        let mut d = b.offer("mode", 2.0, at(0)).unwrap();
        let v = b.value("mode").unwrap().unwrap();
        assert_eq!((v.value, v.pending), (2.0, true));
        assert_eq!(d.try_outcome(), None, "not read yet");
        // A read of something else does not deliver it.
        read_holding(&mut b, 10, 1, at(1));
        assert_eq!(d.try_outcome(), None);
        let h = b
            .handle(&Request::ReadHoldingRegisters { addr: 10, count: 2 }, at(2))
            .unwrap();
        assert_eq!(h.response, Response::ReadHoldingRegisters(vec![0xFFFF, 2]));
        assert_eq!(
            d.try_outcome(),
            Some(Ok(Delivered {
                read_at: at(2),
                echoed: false
            }))
        );
        assert_eq!(h.readings[0].point, "mode");
        assert_eq!(h.readings[0].ts, at(2));
        assert!(!b.value("mode").unwrap().unwrap().pending);
    }

    #[test]
    fn an_echoed_offer_is_done_when_the_read_back_value_matches() {
        let mut b = bank();
        let mut d = b.offer("setpoint", 21.5, at(0)).unwrap();
        assert_eq!(read_holding(&mut b, 10, 1, at(1)), vec![215]);
        assert_eq!(d.try_outcome(), None, "read, but not echoed yet");
        write_regs(&mut b, 3, &[200], at(2));
        assert_eq!(d.try_outcome(), None, "the echo holds another value");
        let h = write_regs(&mut b, 3, &[215], at(3));
        assert_eq!(
            d.try_outcome(),
            Some(Ok(Delivered {
                read_at: at(1),
                echoed: true
            }))
        );
        let points: Vec<_> = h.readings.iter().map(|r| r.point.as_str()).collect();
        assert_eq!(points, vec!["setpoint_echo", "setpoint"]);
    }

    #[test]
    fn an_echo_that_already_matches_completes_at_the_read() {
        let mut b = bank();
        write_regs(&mut b, 3, &[190], at(0));
        let mut d = b.offer("setpoint", 19.0, at(1)).unwrap();
        assert_eq!(d.try_outcome(), None, "not read since the offer");
        read_holding(&mut b, 10, 1, at(2));
        assert_eq!(d.try_outcome().unwrap().unwrap().read_at, at(2));
    }

    #[test]
    fn a_newer_offer_supersedes_the_older_one() {
        let mut b = bank();
        let mut first = b.offer("mode", 1.0, at(0)).unwrap();
        let mut second = b.offer("mode", 3.0, at(1)).unwrap();
        assert_eq!(first.try_outcome(), Some(Err(DeliveryError::Superseded)));
        assert_eq!(read_holding(&mut b, 11, 1, at(2)), vec![3]);
        assert!(second.try_outcome().unwrap().is_ok());
    }

    #[test]
    fn offers_the_agent_cannot_make_are_refused_with_reasons() {
        let mut b = bank();
        assert_eq!(
            b.offer("room_temp", 1.0, T0).unwrap_err(),
            BankError::FromPlc("room_temp".into())
        );
        assert_eq!(
            b.offer("nope", 1.0, T0).unwrap_err(),
            BankError::UnknownPoint("nope".into())
        );
        assert!(matches!(
            b.offer("setpoint", 9999.0, T0),
            Err(BankError::Encode { .. })
        ));
        // -0.1 °C is 0xFFFF as i16 tenths: the PLC would read "unknown".
        assert_eq!(
            b.offer("setpoint", -0.1, T0).unwrap_err(),
            BankError::Marker {
                point: "setpoint".into(),
                value: -0.1
            }
        );
        assert_eq!(
            b.value("setpoint"),
            Ok(None),
            "a refused offer leaves no value"
        );
    }

    #[test]
    fn offered_bits_land_in_coils_inputs_and_register_bits() {
        let mut b = bank();
        b.offer("sauna_request", 1.0, T0).unwrap();
        b.offer("link_up", 1.0, T0).unwrap();
        b.offer("price", 12.34, T0).unwrap();
        let coils = b
            .handle(&Request::ReadCoils { addr: 8, count: 1 }, T0)
            .unwrap();
        assert_eq!(coils.response, Response::ReadCoils(vec![true]));
        let di = b
            .handle(&Request::ReadDiscreteInputs { addr: 0, count: 1 }, T0)
            .unwrap();
        assert_eq!(di.response, Response::ReadDiscreteInputs(vec![true]));
        let ir = b
            .handle(&Request::ReadInputRegisters { addr: 0, count: 1 }, T0)
            .unwrap();
        assert_eq!(ir.response, Response::ReadInputRegisters(vec![1234]));
        // The first bit offered into an unknown register clears the marker.
        assert_eq!(read_holding(&mut b, 20, 1, T0), vec![0xFFFF]);
        b.offer("flag_b", 1.0, T0).unwrap();
        assert_eq!(read_holding(&mut b, 20, 1, T0), vec![0b1000]);
        assert_eq!(b.value("flag_a"), Ok(None), "flag_a was never offered");
        b.offer("flag_a", 1.0, T0).unwrap();
        assert_eq!(read_holding(&mut b, 20, 1, T0), vec![0b1001]);
    }

    #[test]
    fn layout_mistakes_name_the_point() {
        let e = BankState::new(
            "plc",
            &points(&PROFILE.replace(
                "direction = \"from_plc\"\n[[profile.point]]\nname = \"energy\"",
                "[[profile.point]]\nname = \"energy\"",
            )),
            ROUND,
        )
        .unwrap_err();
        assert!(
            e.contains("`room_temp` (holding 0) needs `direction"),
            "{e}"
        );
        let e = layout_error(
            "[[profile.point]]\nname = \"x\"\nfunction = \"input\"\naddress = 5\ndata_type = \"u16\"\ndirection = \"from_plc\"\n",
        );
        assert!(e.contains("cannot be `from_plc`"), "{e}");
        let e = layout_error(
            "[[profile.point]]\nname = \"x\"\nfunction = \"holding\"\naddress = 2\ndata_type = \"u16\"\ndirection = \"from_plc\"\n",
        );
        assert!(e.contains("`x` (holding 2) overlaps point `energy`"), "{e}");
        let e = layout_error(
            "[[profile.point]]\nname = \"x\"\nfunction = \"holding\"\naddress = 20\ndata_type = \"bool\"\nbit = 5\ndirection = \"from_plc\"\n",
        );
        assert!(e.contains("is both `to_plc` and `from_plc`"), "{e}");
        let e = layout_error(
            "[[profile.point]]\nname = \"x\"\nfunction = \"holding\"\naddress = 30\ndata_type = \"u16\"\ndirection = \"to_plc\"\necho = \"mode\"\n",
        );
        assert!(e.contains("echo point `mode` must be `from_plc`"), "{e}");
        let e = layout_error(
            "[[profile.point]]\nname = \"x\"\nfunction = \"holding\"\naddress = 30\ndata_type = \"u16\"\ndirection = \"to_plc\"\necho = \"gone\"\n",
        );
        assert!(e.contains("`gone` is not an enabled point"), "{e}");
    }

    /// Registers 65530..=65535 written by the PLC, 0..=3 offered to it.
    const EDGE: &str = r#"
[[profile]]
id = "edge"
[[profile.point]]
name = "top"
function = "holding"
address = 65530
data_type = "u16"
direction = "from_plc"
[[profile.point]]
name = "top32"
function = "holding"
address = 65531
data_type = "i32"
direction = "from_plc"
[[profile.point]]
name = "tail"
function = "holding"
address = 65533
data_type = "u32"
word_order = "low_first"
direction = "from_plc"
[[profile.point]]
name = "last"
function = "holding"
address = 65535
data_type = "i16"
direction = "from_plc"
[[profile.point]]
name = "low"
function = "holding"
address = 0
data_type = "f32"
direction = "to_plc"
[[profile.point]]
name = "coil_top"
function = "coil"
address = 65535
data_type = "bool"
direction = "from_plc"
"#;

    fn request() -> impl proptest::strategy::Strategy<Value = Request> {
        use proptest::prelude::*;
        let addr = prop_oneof![0u16..8, 65528u16..=65535];
        prop_oneof![
            (addr.clone(), 1u16..=125)
                .prop_map(|(addr, count)| Request::ReadHoldingRegisters { addr, count }),
            (addr.clone(), 1u16..=2000)
                .prop_map(|(addr, count)| Request::ReadCoils { addr, count }),
            (addr.clone(), any::<u16>())
                .prop_map(|(addr, value)| Request::WriteSingleRegister { addr, value }),
            (addr.clone(), prop::collection::vec(any::<u16>(), 1..=8))
                .prop_map(|(addr, values)| Request::WriteMultipleRegisters { addr, values }),
            (addr.clone(), prop::collection::vec(any::<bool>(), 1..=8))
                .prop_map(|(addr, coils)| Request::WriteMultipleCoils { addr, coils }),
            (addr, any::<bool>()).prop_map(|(addr, on)| Request::WriteSingleCoil { addr, on }),
        ]
    }

    proptest::proptest! {
        #[test]
        fn any_request_sequence_is_answered_or_refused_without_panicking(
            reqs in proptest::collection::vec(request(), 1..20),
            offer in proptest::num::f64::ANY,
        ) {
            let mut b = BankState::new("edge", &points(EDGE), ROUND).unwrap();
            let _ = b.offer("low", offer, T0);
            for (i, r) in reqs.iter().enumerate() {
                match b.handle(r, at(i as u64)) {
                    Ok(h) => proptest::prop_assert!(h.readings.iter().all(|r| r.value.is_finite())),
                    Err(code) => proptest::prop_assert_eq!(code, ExceptionCode::IllegalDataAddress),
                }
            }
        }

        #[test]
        fn what_the_plc_writes_it_reads_back_and_users_see_decoded(words in proptest::collection::vec(proptest::prelude::any::<u16>(), 6)) {
            let mut b = BankState::new("edge", &points(EDGE), ROUND).unwrap();
            let h = write_regs(&mut b, 65530, &words, T0);
            proptest::prop_assert_eq!(h.readings.len(), 4);
            proptest::prop_assert_eq!(read_holding(&mut b, 65530, 6, T0), words.clone());
            let top32 = (u32::from(words[1]) << 16 | u32::from(words[2])) as i32;
            proptest::prop_assert_eq!(b.value("top32").unwrap().unwrap().value, f64::from(top32));
            let tail = u32::from(words[4]) << 16 | u32::from(words[3]);
            proptest::prop_assert_eq!(b.value("tail").unwrap().unwrap().value, f64::from(tail));
            proptest::prop_assert_eq!(b.value("last").unwrap().unwrap().value, f64::from(words[5] as i16));
        }

        #[test]
        fn an_offered_value_reads_back_as_itself(v in -1.0e6f32..1.0e6) {
            let mut b = BankState::new("edge", &points(EDGE), ROUND).unwrap();
            let mut d = b.offer("low", f64::from(v), T0).unwrap();
            let words = read_holding(&mut b, 0, 2, T0);
            let back = f32::from_bits(u32::from(words[0]) << 16 | u32::from(words[1]));
            proptest::prop_assert_eq!(back, v);
            proptest::prop_assert!(d.try_outcome().is_some_and(|o| o.is_ok()));
        }
    }

    #[tokio::test]
    async fn write_is_done_only_when_the_master_took_the_value() {
        let b = Bank::new("plc", &points(PROFILE), ROUND).unwrap();
        let master = b.clone();
        let writer =
            tokio::spawn(async move { b.write("mode", 4.0, Duration::from_secs(30)).await });
        // Wait (without sleeping for a fixed time) until the offer is in the bank.
        while master.value("mode").unwrap().is_none() {
            tokio::task::yield_now().await;
        }
        assert!(!writer.is_finished());
        master
            .handle(&Request::ReadHoldingRegisters { addr: 11, count: 1 }, T0)
            .unwrap();
        let done = writer.await.unwrap().unwrap();
        assert_eq!(done.read_at, T0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_plc_never_reads_is_unverified_but_stays_offered() {
        let b = Bank::new("plc", &points(PROFILE), ROUND).unwrap();
        let err = b
            .write("mode", 4.0, Duration::from_secs(30))
            .await
            .unwrap_err();
        let WriteError::Unverified { point, reason } = &err else {
            panic!("unverified, got {err:?}")
        };
        assert_eq!(point, "mode");
        assert!(
            reason.contains("did not read it within 30s") && reason.contains("stays in the bank"),
            "{reason}"
        );
        let v = b.value("mode").unwrap().unwrap();
        assert_eq!((v.value, v.pending), (4.0, true), "still offered");
        // The PLC's next read still delivers it.
        let h = b
            .handle(&Request::ReadHoldingRegisters { addr: 11, count: 1 }, T0)
            .unwrap();
        assert_eq!(h.response, Response::ReadHoldingRegisters(vec![4]));
        assert!(!b.value("mode").unwrap().unwrap().pending);
    }

    #[tokio::test(start_paused = true)]
    async fn an_echo_with_another_value_is_a_mismatch_with_both_values() {
        let b = Bank::new("plc", &points(PROFILE), ROUND).unwrap();
        let plc = b.clone();
        let writer =
            tokio::spawn(async move { b.write("setpoint", 28.0, Duration::from_secs(15)).await });
        while plc.value("setpoint").unwrap().is_none() {
            tokio::task::yield_now().await;
        }
        // The PLC reads 28.0 and echoes 25.0: its own limit.
        plc.handle(&Request::ReadHoldingRegisters { addr: 10, count: 1 }, T0)
            .unwrap();
        plc.handle(
            &Request::WriteSingleRegister {
                addr: 3,
                value: 250,
            },
            T0,
        )
        .unwrap();
        assert_eq!(
            writer.await.unwrap(),
            Err(WriteError::Mismatch {
                point: "setpoint".into(),
                wrote: 28.0,
                read_back: 25.0
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_without_the_echo_is_unverified_and_names_the_echo_point() {
        let b = Bank::new("plc", &points(PROFILE), ROUND).unwrap();
        let plc = b.clone();
        let writer =
            tokio::spawn(async move { b.write("setpoint", 21.0, Duration::from_secs(15)).await });
        while plc.value("setpoint").unwrap().is_none() {
            tokio::task::yield_now().await;
        }
        plc.handle(&Request::ReadHoldingRegisters { addr: 10, count: 1 }, T0)
            .unwrap();
        let err = writer.await.unwrap().unwrap_err();
        assert!(
            matches!(&err, WriteError::Unverified { reason, .. }
                if reason.contains("did not echo it in `setpoint_echo`")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn writes_the_profile_does_not_allow_are_refused_before_anything_is_offered() {
        let b = Bank::new("plc", &points(PROFILE), ROUND).unwrap();
        let within = Duration::from_secs(1);
        let err = b.write("room_temp", 1.0, within).await.unwrap_err();
        assert!(
            matches!(&err, WriteError::Unsupported(m) if m.contains("written by the PLC (`from_plc`)")),
            "{err}"
        );
        // A to_plc point the profile does not mark writable.
        assert_eq!(
            b.write("sauna_request", 1.0, within).await,
            Err(WriteError::NotWritable("sauna_request".into()))
        );
        assert_eq!(
            b.write("nope", 1.0, within).await,
            Err(WriteError::UnknownPoint {
                device: "plc".into(),
                point: "nope".into()
            })
        );
        assert!(matches!(
            b.write("setpoint", -0.1, within).await,
            Err(WriteError::Encode { reason, .. }) if reason.contains("unknown")
        ));
        assert!(matches!(
            b.write("setpoint", 9999.0, within).await,
            Err(WriteError::Encode { .. })
        ));
        for p in ["room_temp", "sauna_request", "setpoint"] {
            assert_eq!(b.value(p), Ok(None), "`{p}`: nothing offered");
        }
    }
}
