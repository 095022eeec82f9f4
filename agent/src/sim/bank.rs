//! [`BankSim`]: a generic Modbus slave (or several, one per unit id, sharing
//! one line) over in-memory tables, as a tokio-modbus server
//! [`Service`](tokio_modbus::server::Service), for tests and benchmarks that
//! need every table (coils, discrete inputs, holding and input registers) and
//! every write function, which the EH-203 card does not have.
//!
//! It behaves as the spec asks of a slave on a shared line (Modbus
//! Application Protocol V1.1b3 §6, Serial Line V1.02 §2.1): a request for a
//! unit it does not play gets no reply; a broadcast (unit 0) write is
//! executed by every unit and answered by none; a quantity outside the
//! function's limits is exception 03; an address it does not map, or a holding
//! register marked read-only, is exception 02; a register with a range
//! stores a written value clamped to it (and answers as if it took it). Every request is logged in
//! arrival order, and replies can be held back ([`BankSim::hold_replies`]) so
//! a test can keep a request in flight for as long as it needs.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use agent::sim::bank::{BankSim, Tables};
//! let sim = BankSim::new();
//! let mut t = Tables::default();
//! t.holding.insert(100, 42);
//! sim.add_unit(1, t);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let _server = sim.serve_tcp(listener);
//! # Ok(()) }
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tracing::warn;

use crate::registers::{Function, Point};

/// V1.1b3 §6.1/§6.2: 1..=2000 bits per read.
const MAX_READ_BITS: u16 = 2000;
/// §6.3/§6.4: 1..=125 registers per read.
const MAX_READ_REGISTERS: u16 = 125;
/// §6.11: 1..=1968 coils per write.
const MAX_WRITE_COILS: usize = 1968;
/// §6.12: 1..=123 registers per write.
const MAX_WRITE_REGISTERS: usize = 123;

/// One unit's tables. An address absent from a map does not exist on the
/// device (exception 02).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tables {
    /// Coils (FC01 read, FC05/FC15 write).
    pub coils: BTreeMap<u16, bool>,
    /// Discrete inputs (FC02).
    pub discrete: BTreeMap<u16, bool>,
    /// Holding registers (FC03 read, FC06/FC16 write).
    pub holding: BTreeMap<u16, u16>,
    /// Input registers (FC04).
    pub input: BTreeMap<u16, u16>,
    /// Holding registers that can be read but refuse writes (exception 02).
    pub read_only: BTreeSet<u16>,
    /// Holding registers that accept any value but store it limited to
    /// `lo..=hi`, as devices with a setpoint range do.
    pub clamp: BTreeMap<u16, (u16, u16)>,
}

impl Tables {
    /// Every address the Modbus points occupy, mapped and zero. Points of
    /// other protocols are skipped.
    pub fn for_points<'a>(points: impl IntoIterator<Item = &'a Point>) -> Tables {
        let mut t = Tables::default();
        for p in points {
            let Some(spec) = p.spec.modbus() else {
                continue;
            };
            let (start, width) = (spec.address.0, spec.width());
            for a in (0..width).filter_map(|i| start.checked_add(i)) {
                match spec.function {
                    Function::Coil => {
                        t.coils.insert(a, false);
                    }
                    Function::Discrete => {
                        t.discrete.insert(a, false);
                    }
                    Function::Holding => {
                        t.holding.insert(a, 0);
                    }
                    Function::Input => {
                        t.input.insert(a, 0);
                    }
                }
            }
        }
        t
    }
}

/// A request as the simulator received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logged {
    /// Unit id it was addressed to (0 = broadcast).
    pub unit: u8,
    /// Function code.
    pub function: u8,
    /// First address.
    pub addr: u16,
    /// Quantity (1 for single writes).
    pub count: u16,
}

/// The simulated slaves. Cheap to clone; clones share the same tables.
#[derive(Debug, Clone)]
pub struct BankSim {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    units: Mutex<BTreeMap<u8, Tables>>,
    log: Mutex<Vec<Logged>>,
    held: watch::Sender<bool>,
    delay: Mutex<Duration>,
}

impl Default for BankSim {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A simulator keeps serving after a panicked test thread.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BankSim {
    /// A line with no units yet.
    pub fn new() -> Self {
        BankSim {
            inner: Arc::new(Inner {
                units: Mutex::new(BTreeMap::new()),
                log: Mutex::new(Vec::new()),
                held: watch::Sender::new(false),
                delay: Mutex::new(Duration::ZERO),
            }),
        }
    }

    /// Play unit `unit` (1..=247) with `tables`, replacing any earlier one.
    pub fn add_unit(&self, unit: u8, tables: Tables) {
        lock(&self.inner.units).insert(unit, tables);
    }

    /// A copy of unit `unit`'s tables.
    pub fn tables(&self, unit: u8) -> Option<Tables> {
        lock(&self.inner.units).get(&unit).cloned()
    }

    /// Change unit `unit`'s tables in place (no-op for an absent unit).
    pub fn update(&self, unit: u8, f: impl FnOnce(&mut Tables)) {
        if let Some(t) = lock(&self.inner.units).get_mut(&unit) {
            f(t);
        }
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Logged> {
        lock(&self.inner.log).clone()
    }

    /// While `true`, requests are logged but not answered; `false` lets the
    /// waiting ones (and later ones) through.
    pub fn hold_replies(&self, held: bool) {
        self.inner.held.send_replace(held);
    }

    /// Answer every request this much later. The wait is a thread sleep,
    /// precise to tens of microseconds (tokio's timer rounds up to whole
    /// milliseconds), so a benchmark can model a slave's t3.5 exactly.
    pub fn set_response_delay(&self, delay: Duration) {
        *lock(&self.inner.delay) = delay;
    }

    /// The tokio-modbus service, for serving over a transport of your own.
    pub fn service(&self) -> BankService {
        BankService { sim: self.clone() }
    }

    /// Serve Modbus TCP on `listener` until the listener fails.
    pub fn serve_tcp(&self, listener: TcpListener) -> JoinHandle<io::Result<()>> {
        let service = self.service();
        tokio::spawn(async move {
            let server = tokio_modbus::server::tcp::Server::new(listener);
            let new_service = move |_peer| Ok(Some(service.clone()));
            let on_connected = |stream, peer| {
                let new_service = new_service.clone();
                async move {
                    tokio_modbus::server::tcp::accept_tcp_connection(stream, peer, new_service)
                }
            };
            server
                .serve(
                    &on_connected,
                    |err| warn!(error = %err, "simulator connection failed"),
                )
                .await
        })
    }

    /// Serve Modbus RTU on an opened serial port.
    pub fn serve_rtu(&self, port: tokio_serial::SerialStream) -> JoinHandle<io::Result<()>> {
        let service = self.service();
        tokio::spawn(async move {
            tokio_modbus::server::rtu::Server::new(port)
                .serve_forever(service)
                .await
        })
    }

    /// Execute `req` for `unit` against the tables (no logging, no delay).
    /// `Ok(None)`: no reply (absent unit, or broadcast).
    pub fn execute(&self, unit: u8, req: &Request<'_>) -> Result<Option<Response>, ExceptionCode> {
        let mut units = lock(&self.inner.units);
        if unit == 0 {
            // Serial Line V1.02 §2.1: every slave executes a broadcast write
            // and none replies, not even with an exception.
            if is_write(req) {
                for t in units.values_mut() {
                    let _ = apply(t, req);
                }
            }
            return Ok(None);
        }
        match units.get_mut(&unit) {
            Some(t) => apply(t, req).map(Some),
            None => Ok(None),
        }
    }
}

fn is_write(req: &Request<'_>) -> bool {
    matches!(
        req,
        Request::WriteSingleCoil(..)
            | Request::WriteSingleRegister(..)
            | Request::WriteMultipleCoils(..)
            | Request::WriteMultipleRegisters(..)
    )
}

fn log_entry(unit: u8, req: &Request<'_>) -> Logged {
    let count = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
    let (addr, count) = match req {
        Request::ReadCoils(a, n)
        | Request::ReadDiscreteInputs(a, n)
        | Request::ReadHoldingRegisters(a, n)
        | Request::ReadInputRegisters(a, n) => (*a, *n),
        Request::WriteSingleCoil(a, _) | Request::WriteSingleRegister(a, _) => (*a, 1),
        Request::WriteMultipleCoils(a, c) => (*a, count(c.len())),
        Request::WriteMultipleRegisters(a, w) => (*a, count(w.len())),
        _ => (0, 0),
    };
    Logged {
        unit,
        function: req.function_code().value(),
        addr,
        count,
    }
}

/// The addresses `addr..addr+n`, or exception 02 when they run past 65535.
fn span(addr: u16, n: usize) -> Result<impl Iterator<Item = u16>, ExceptionCode> {
    if usize::from(addr) + n > 0x1_0000 {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    Ok((0..n).map(move |i| addr.wrapping_add(i as u16)))
}

fn read<T: Copy>(
    map: &BTreeMap<u16, T>,
    addr: u16,
    n: u16,
    max: u16,
) -> Result<Vec<T>, ExceptionCode> {
    // §6: quantity is checked (03) before the addresses (02).
    if n == 0 || n > max {
        return Err(ExceptionCode::IllegalDataValue);
    }
    span(addr, usize::from(n))?
        .map(|a| {
            map.get(&a)
                .copied()
                .ok_or(ExceptionCode::IllegalDataAddress)
        })
        .collect()
}

fn write<T: Copy>(
    map: &mut BTreeMap<u16, T>,
    read_only: &BTreeSet<u16>,
    addr: u16,
    values: &[T],
    max: usize,
) -> Result<(), ExceptionCode> {
    if values.is_empty() || values.len() > max {
        return Err(ExceptionCode::IllegalDataValue);
    }
    let addrs: Vec<u16> = span(addr, values.len())?.collect();
    if addrs
        .iter()
        .any(|a| !map.contains_key(a) || read_only.contains(a))
    {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    for (a, v) in addrs.into_iter().zip(values) {
        map.insert(a, *v);
    }
    Ok(())
}

/// Limit the `n` holding registers from `addr` to their ranges, if any.
fn clamp(t: &mut Tables, addr: u16, n: usize) {
    for a in (0..n).filter_map(|i| u16::try_from(i).ok().and_then(|i| addr.checked_add(i))) {
        if let (Some(&(lo, hi)), Some(v)) = (t.clamp.get(&a), t.holding.get_mut(&a)) {
            *v = (*v).clamp(lo, hi);
        }
    }
}

fn apply(t: &mut Tables, req: &Request<'_>) -> Result<Response, ExceptionCode> {
    let none = BTreeSet::new();
    let n16 = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
    Ok(match req {
        Request::ReadCoils(a, n) => Response::ReadCoils(read(&t.coils, *a, *n, MAX_READ_BITS)?),
        Request::ReadDiscreteInputs(a, n) => {
            Response::ReadDiscreteInputs(read(&t.discrete, *a, *n, MAX_READ_BITS)?)
        }
        Request::ReadHoldingRegisters(a, n) => {
            Response::ReadHoldingRegisters(read(&t.holding, *a, *n, MAX_READ_REGISTERS)?)
        }
        Request::ReadInputRegisters(a, n) => {
            Response::ReadInputRegisters(read(&t.input, *a, *n, MAX_READ_REGISTERS)?)
        }
        Request::WriteSingleCoil(a, on) => {
            write(&mut t.coils, &none, *a, &[*on], 1)?;
            Response::WriteSingleCoil(*a, *on)
        }
        Request::WriteSingleRegister(a, v) => {
            write(&mut t.holding, &t.read_only, *a, &[*v], 1)?;
            clamp(t, *a, 1);
            Response::WriteSingleRegister(*a, *v)
        }
        Request::WriteMultipleCoils(a, c) => {
            write(&mut t.coils, &none, *a, c, MAX_WRITE_COILS)?;
            Response::WriteMultipleCoils(*a, n16(c.len()))
        }
        Request::WriteMultipleRegisters(a, w) => {
            write(&mut t.holding, &t.read_only, *a, w, MAX_WRITE_REGISTERS)?;
            clamp(t, *a, w.len());
            Response::WriteMultipleRegisters(*a, n16(w.len()))
        }
        _ => return Err(ExceptionCode::IllegalFunction),
    })
}

/// [`BankSim`] as a tokio-modbus server service.
#[derive(Debug, Clone)]
pub struct BankService {
    sim: BankSim,
}

type BankFuture = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

impl tokio_modbus::server::Service for BankService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = BankFuture;

    fn call(&self, req: Self::Request) -> Self::Future {
        let sim = self.sim.clone();
        Box::pin(async move {
            lock(&sim.inner.log).push(log_entry(req.slave, &req.request));
            let mut held = sim.inner.held.subscribe();
            // The sender lives in `sim`, so the channel cannot close here.
            let _ = held.wait_for(|h| !*h).await;
            let delay = *lock(&sim.inner.delay);
            if !delay.is_zero() {
                let _ = tokio::task::spawn_blocking(move || std::thread::sleep(delay)).await;
            }
            sim.execute(req.slave, &req.request)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn sim() -> BankSim {
        let s = BankSim::new();
        let mut t = Tables::default();
        for a in 0..4 {
            t.holding.insert(100 + a, a);
            t.coils.insert(a, false);
        }
        t.input.insert(7, 70);
        t.discrete.insert(3, true);
        t.read_only.insert(103);
        t.clamp.insert(101, (10, 20));
        s.add_unit(1, t.clone());
        s.add_unit(2, t);
        s
    }

    #[test]
    fn reads_and_writes_follow_the_tables() {
        let s = sim();
        assert_eq!(
            s.execute(1, &Request::ReadHoldingRegisters(100, 3)),
            Ok(Some(Response::ReadHoldingRegisters(vec![0, 1, 2])))
        );
        assert_eq!(
            s.execute(
                1,
                &Request::WriteMultipleRegisters(101, Cow::Owned(vec![9, 8]))
            ),
            Ok(Some(Response::WriteMultipleRegisters(101, 2)))
        );
        assert_eq!(s.tables(1).unwrap().holding[&102], 8);
        assert_eq!(s.tables(2).unwrap().holding[&102], 2, "unit 2 untouched");
        assert_eq!(
            s.execute(1, &Request::WriteSingleCoil(2, true)),
            Ok(Some(Response::WriteSingleCoil(2, true)))
        );
        assert_eq!(
            s.execute(1, &Request::ReadCoils(0, 4)),
            Ok(Some(Response::ReadCoils(vec![false, false, true, false])))
        );
        assert_eq!(
            s.execute(1, &Request::ReadInputRegisters(7, 1)),
            Ok(Some(Response::ReadInputRegisters(vec![70])))
        );
    }

    #[test]
    fn unmapped_read_only_and_oversized_requests_are_exceptions() {
        let s = sim();
        // 99 is not mapped, 103 is read-only: both 02
        assert_eq!(
            s.execute(1, &Request::WriteSingleRegister(99, 1)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            s.execute(1, &Request::WriteSingleRegister(103, 1)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            s.execute(1, &Request::ReadHoldingRegisters(103, 1)),
            Ok(Some(Response::ReadHoldingRegisters(vec![3])))
        );
        // a read spanning an unmapped register: 02; 126 registers: 03
        assert_eq!(
            s.execute(1, &Request::ReadHoldingRegisters(102, 3)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            s.execute(1, &Request::ReadHoldingRegisters(100, 126)),
            Err(ExceptionCode::IllegalDataValue)
        );
        // nothing of a refused multiple write is applied
        assert_eq!(
            s.execute(
                1,
                &Request::WriteMultipleRegisters(102, Cow::Owned(vec![5, 5]))
            ),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(s.tables(1).unwrap().holding[&102], 2);
    }

    #[test]
    fn a_broadcast_write_reaches_every_unit_and_gets_no_reply() {
        let s = sim();
        assert_eq!(
            s.execute(0, &Request::WriteSingleRegister(100, 77)),
            Ok(None)
        );
        assert_eq!(s.tables(1).unwrap().holding[&100], 77);
        assert_eq!(s.tables(2).unwrap().holding[&100], 77);
        // a broadcast read is neither executed nor answered; an absent unit is silent
        assert_eq!(
            s.execute(0, &Request::ReadHoldingRegisters(100, 1)),
            Ok(None)
        );
        assert_eq!(
            s.execute(9, &Request::ReadHoldingRegisters(100, 1)),
            Ok(None)
        );
    }

    #[tokio::test]
    async fn held_replies_wait_and_every_request_is_logged_first() {
        use tokio_modbus::server::Service as _;
        let s = sim();
        s.hold_replies(true);
        let svc = s.service();
        let pending = tokio::spawn(svc.call(SlaveRequest {
            slave: 1,
            request: Request::ReadHoldingRegisters(100, 1),
        }));
        while s.requests().is_empty() {
            tokio::task::yield_now().await;
        }
        assert!(!pending.is_finished());
        s.hold_replies(false);
        assert_eq!(
            pending.await.unwrap(),
            Ok(Some(Response::ReadHoldingRegisters(vec![0])))
        );
        assert_eq!(
            s.requests(),
            vec![Logged {
                unit: 1,
                function: 3,
                addr: 100,
                count: 1
            }]
        );
    }
}
