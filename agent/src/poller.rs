//! When to read what: one task per bus, one request at a time on it, each
//! device on its own poll interval, and users' writes ahead of the polls.
//!
//! The task owns the bus's [`BusDriver`], the protocol-specific half: for
//! Modbus, [`ModbusDriver`] runs the device's read plan over a
//! [`DeviceClient`] and decodes the words and bits, and writes a point (encode,
//! send, read back). The task sleeps until the earliest due device, has the
//! driver poll it and sends the [`protocol::Reading`]s to the uplink as
//! [`PollEvent`]s. Each device's communication state lives in a
//! [`CommState`], a small pure state machine (tested without I/O) that decides
//! when the device is offline, when to poll it again (back-off while it is
//! silent) and when a [`protocol::DeviceStatus`] must be announced.
//!
//! Writes arrive as [`WriteCommand`]s on the bus's queue ([`BusHandle`]; a
//! [`Writer`] routes by device key to the right bus), and so do operations
//! on a device's own weekly timer ([`TimerCommand`], see
//! [`crate::devices::timer`]: write or read a clock table, hand an output
//! to it, read or set the device's clock). A command that is
//! waiting runs before the next poll, even one that is overdue: a person who
//! changed a setpoint is waiting for the answer, a poll only for its next
//! turn. Nothing is ever interrupted: a Modbus line carries one request at a
//! time, and the poll in progress finishes all its requests first, so its
//! values stay one snapshot (one timestamp) from before the write rather than
//! half before and half after it.

use std::time::Duration;

use std::collections::BTreeMap;

use protocol::{DeviceStatus, Quality, Reading};
use time::OffsetDateTime;
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    backoff::Backoff,
    config::DeviceConfig,
    devices::{
        DeviceClient, ModbusResult, RawData, TransportError, execute, execute_write,
        timer::{TimerOp, TimerReply},
    },
    registers::{
        Function, PlannedRead, Point, PointSpec, WritePlan, WritePlanError, WriteRequest,
        decode_bits, decode_registers, plan_reads, plan_write,
    },
};

/// The protocol half of a bus's poller: talks to the devices, decodes values.
/// [`run_bus`] owns scheduling, online/offline state and events.
pub trait BusDriver: Send {
    /// What the driver works out once per device (for Modbus, the read plan).
    type Plan: Send;

    /// Prepare polling `points` (the device's enabled points) of `device`.
    fn plan(&self, device: &DeviceConfig, points: &[Point]) -> Self::Plan;

    /// Read `device` once. A transport failure ends the poll early
    /// ([`PollOutcome::Failed`]); values read before it are still returned.
    fn poll(
        &mut self,
        device: &PolledDevice<Self::Plan>,
    ) -> impl std::future::Future<Output = (Vec<Reading>, PollOutcome)> + Send;

    /// Write `value` (engineering units) to `point` of `device`. Safety
    /// limits are not the driver's business (the caller checked them); the
    /// driver encodes, sends, reads the value back and reports what the
    /// device said (a read-back that differs is an error, never hidden).
    /// `point` may be any point of the device, polled or not. Protocols
    /// without writes keep this default, which refuses.
    fn write(
        &mut self,
        device: &PolledDevice<Self::Plan>,
        point: &Point,
        value: f64,
    ) -> impl std::future::Future<Output = Result<(), WriteError>> + Send {
        let _ = (value, device);
        std::future::ready(Err(WriteError::Unsupported(format!(
            "the {} protocol has no writes (point `{}`)",
            point.spec.protocol(),
            point.key
        ))))
    }

    /// Run `op` on the weekly timer the device keeps for `point` (a clock
    /// table in the device's own memory, see [`crate::devices::timer`]).
    /// Like [`BusDriver::write`], every change is read back. Protocols whose
    /// devices have no timers keep this default, which refuses every op
    /// with [`WriteError::Unsupported`]: the agent then runs schedules
    /// itself.
    fn timer(
        &mut self,
        device: &PolledDevice<Self::Plan>,
        point: &Point,
        op: TimerOp,
    ) -> impl std::future::Future<Output = Result<TimerReply, WriteError>> + Send {
        let _ = (device, op);
        std::future::ready(Err(WriteError::Unsupported(format!(
            "{} devices have no clock tables of their own (point `{}`)",
            point.spec.protocol(),
            point.key
        ))))
    }
}

/// Why a write did not happen (or did not take).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    /// The protocol or driver cannot write this kind of point.
    #[error("{0}")]
    Unsupported(String),
    /// The value cannot be encoded for the point (range, type).
    #[error("cannot encode {value} for `{point}`: {reason}")]
    Encode {
        /// Point key.
        point: String,
        /// Requested value.
        value: f64,
        /// Why.
        reason: String,
    },
    /// The device answered and refused (e.g. a Modbus exception): a
    /// configuration matter, not retried.
    #[error("the device refused: {0}")]
    Refused(String),
    /// The link failed; the write may or may not have reached the device.
    #[error("transport error: {0}")]
    Transport(String),
    /// The device or point is not configured on this bus.
    #[error("no point `{point}` on device `{device}` here")]
    UnknownPoint {
        /// Device key.
        device: String,
        /// Point key.
        point: String,
    },
    /// The profile does not mark the point writable; nothing was sent.
    #[error("point `{0}` is not writable")]
    NotWritable(String),
    /// The device accepted the write but reads back another value.
    #[error("point `{point}`: wrote {wrote}, the device reads back {read_back}")]
    Mismatch {
        /// Point key.
        point: String,
        /// The value written (after rounding to the point's resolution).
        wrote: f64,
        /// The value the device reports now.
        read_back: f64,
    },
    /// The device accepted the write but reading it back failed.
    #[error("point `{point}`: written, but the read-back failed: {reason}")]
    Unverified {
        /// Point key.
        point: String,
        /// Why the read-back failed.
        reason: String,
    },
    /// The bus task is not running (the agent is stopping).
    #[error("bus `{0}` is not running")]
    BusStopped(String),
}

/// Modbus (TCP, RTU or ASCII) through a [`DeviceClient`].
#[derive(Debug)]
pub struct ModbusDriver<C> {
    client: C,
    max_gap: u16,
}

impl<C: DeviceClient> ModbusDriver<C> {
    /// Read through `client`, bridging holes of up to `max_gap` registers.
    pub fn new(client: C, max_gap: u16) -> Self {
        ModbusDriver { client, max_gap }
    }
}

impl<C: DeviceClient> BusDriver for ModbusDriver<C> {
    type Plan = Vec<PlannedRead>;

    fn plan(&self, _device: &DeviceConfig, points: &[Point]) -> Vec<PlannedRead> {
        // Non-Modbus points cannot reach a Modbus bus (config checks), so the
        // indices of `specs` are those of `points`.
        let specs: Vec<_> = points
            .iter()
            .filter_map(|p| p.spec.modbus().cloned())
            .collect();
        debug_assert_eq!(specs.len(), points.len());
        plan_reads(&specs, self.max_gap)
    }

    async fn poll(&mut self, dev: &PolledDevice<Vec<PlannedRead>>) -> (Vec<Reading>, PollOutcome) {
        let mut readings = Vec::new();
        let mut exceptions = Vec::new();
        for read in &dev.plan {
            match execute(&mut self.client, dev.unit_id, read).await {
                Ok(Ok(data)) => {
                    let ts = OffsetDateTime::now_utc();
                    readings.extend(decode_response(&dev.key, &dev.points, read, &data, ts));
                }
                Ok(Err(exc)) => exceptions.push(format!(
                    "{} {}+{}: {exc}",
                    read.function, read.address, read.count
                )),
                // The rest of the plan would fail the same way; stop here.
                Err(e) => return (readings, PollOutcome::Failed(e.to_string())),
            }
        }
        (readings, PollOutcome::Answered { exceptions })
    }

    async fn write(
        &mut self,
        dev: &PolledDevice<Vec<PlannedRead>>,
        point: &Point,
        value: f64,
    ) -> Result<(), WriteError> {
        let key = point.key.as_str();
        let Some(spec) = point.spec.modbus() else {
            return Err(WriteError::Unsupported(format!(
                "point `{key}` is a {} point on a Modbus bus",
                point.spec.protocol()
            )));
        };
        if !point.writable {
            return Err(WriteError::NotWritable(key.to_owned()));
        }
        let plan = plan_write(spec, value).map_err(|e| match e {
            WritePlanError::ReadOnlyTable(_) => WriteError::NotWritable(key.to_owned()),
            WritePlanError::Encode(e) => WriteError::Encode {
                point: key.to_owned(),
                value,
                reason: e.to_string(),
            },
        })?;
        // The point's normal read: its table, its address, its width.
        let read_back = PlannedRead {
            function: spec.function,
            address: spec.address.0,
            count: spec.width(),
            slots: Vec::new(),
        };
        let unit = dev.unit_id;
        let request = match plan {
            WritePlan::Direct(req) => req,
            WritePlan::RegisterBit {
                addr,
                bit,
                on,
                function,
            } => {
                // Read-modify-write (see `registers::write` for the race).
                let current = match self.read_with_retries(unit, &read_back).await {
                    Ok(Ok(RawData::Words(w))) if !w.is_empty() => w[0],
                    Ok(Ok(_)) => {
                        return Err(WriteError::Transport(format!(
                            "point `{key}`: reading register {addr} before changing bit {bit} returned no word"
                        )));
                    }
                    Ok(Err(exc)) => {
                        return Err(WriteError::Refused(format!(
                            "point `{key}`: reading {} {addr} before changing bit {bit}: {exc}",
                            spec.function
                        )));
                    }
                    Err(e) => return Err(transport(key, "reading before the write", &e)),
                };
                WritePlan::with_current(addr, bit, on, function, current)
            }
        };
        match self.write_with_retries(unit, &request).await {
            Ok(Ok(())) => {}
            Ok(Err(exc)) => {
                return Err(WriteError::Refused(format!(
                    "point `{key}`: function 0x{:02X} to {} {}: {exc}",
                    request.function_code(),
                    spec.function,
                    request.address()
                )));
            }
            Err(e) => return Err(transport(key, "writing", &e)),
        }
        let data = match self.read_with_retries(unit, &read_back).await {
            Ok(Ok(data)) => data,
            Ok(Err(exc)) => {
                return Err(WriteError::Unverified {
                    point: key.to_owned(),
                    reason: exc.to_string(),
                });
            }
            Err(e) => {
                return Err(WriteError::Unverified {
                    point: key.to_owned(),
                    reason: e.to_string(),
                });
            }
        };
        verify(key, spec, &request, &data)
    }
}

/// Attempts of one step of a write (the write, or a read before or after
/// it) before a transport error is given up on. Writes of absolute values
/// are idempotent, so sending one again after a lost reply is safe.
pub const WRITE_ATTEMPTS: u32 = 3;

impl<C: DeviceClient> ModbusDriver<C> {
    /// `execute`, retrying transport errors with back-off; a device
    /// exception or a request refused before sending is returned at once.
    async fn read_with_retries(&mut self, unit: u8, read: &PlannedRead) -> ModbusResult<RawData> {
        let mut backoff = write_backoff();
        let mut attempt = 1;
        loop {
            match execute(&mut self.client, unit, read).await {
                Err(e) if e.is_retryable() && attempt < WRITE_ATTEMPTS => {
                    let delay = backoff.next_delay();
                    debug!(%e, attempt, retry_in = ?delay, "read for a write failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// `execute_write`, retrying transport errors with back-off.
    async fn write_with_retries(&mut self, unit: u8, req: &WriteRequest) -> ModbusResult<()> {
        let mut backoff = write_backoff();
        let mut attempt = 1;
        loop {
            match execute_write(&mut self.client, unit, req).await {
                Err(e) if e.is_retryable() && attempt < WRITE_ATTEMPTS => {
                    let delay = backoff.next_delay();
                    debug!(%e, attempt, retry_in = ?delay, "write failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// 100 ms, then up to 200 ms between attempts: long enough for a noisy line
/// to settle, short enough that the person waiting hardly notices.
fn write_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
}

fn transport(point: &str, doing: &str, e: &TransportError) -> WriteError {
    match e {
        TransportError::InvalidRequest(msg) => {
            WriteError::Unsupported(format!("point `{point}`: {msg}"))
        }
        other => WriteError::Transport(format!(
            "point `{point}`: {doing} failed after {WRITE_ATTEMPTS} attempts: {other}"
        )),
    }
}

/// Compare the read-back with what was written: every register written, or
/// the one bit that was set or cleared. Values in the error are engineering
/// units, decoded as the point's normal read decodes them.
fn verify(
    key: &str,
    spec: &PointSpec,
    req: &WriteRequest,
    data: &RawData,
) -> Result<(), WriteError> {
    let unverified = |reason: String| WriteError::Unverified {
        point: key.to_owned(),
        reason,
    };
    let value_of = |d: &RawData| -> Option<f64> {
        match d {
            RawData::Words(w) => decode_registers(spec, w).ok(),
            RawData::Bits(b) => decode_bits(spec, b).ok(),
        }
    };
    let written = match req {
        WriteRequest::SingleCoil { on, .. } => RawData::Bits(vec![*on]),
        WriteRequest::MultipleCoils { coils, .. } => RawData::Bits(coils.clone()),
        WriteRequest::SingleRegister { value, .. } => RawData::Words(vec![*value]),
        WriteRequest::MultipleRegisters { values, .. } => RawData::Words(values.clone()),
    };
    let same = match (&written, data, spec.function, spec.bit) {
        // A bit of a register: only that bit is ours to compare.
        (RawData::Words(w), RawData::Words(r), Function::Holding, Some(bit)) => {
            match (w.first(), r.first()) {
                (Some(w), Some(r)) => {
                    let at = |x: u16| x.checked_shr(u32::from(bit)).unwrap_or(0) & 1;
                    at(*w) == at(*r)
                }
                _ => false,
            }
        }
        (RawData::Words(w), RawData::Words(r), _, _) => r.get(..w.len()) == Some(w.as_slice()),
        (RawData::Bits(w), RawData::Bits(r), _, _) => r.get(..w.len()) == Some(w.as_slice()),
        _ => return Err(unverified(format!("the read-back returned {data:?}"))),
    };
    if same {
        return Ok(());
    }
    match (value_of(&written), value_of(data)) {
        (Some(wrote), Some(read_back)) => Err(WriteError::Mismatch {
            point: key.to_owned(),
            wrote,
            read_back,
        }),
        _ => Err(unverified(format!(
            "wrote {written:?}, the device reads back {data:?}"
        ))),
    }
}

/// Consecutive failed polls after which a device is reported offline. One
/// lost frame on a noisy RS-485 line should not flap the dashboard.
pub const OFFLINE_AFTER_FAILURES: u32 = 2;
/// Longest wait between polls of an offline device.
pub const MAX_OFFLINE_RETRY: Duration = Duration::from_secs(60);

/// What the poller reports to the uplink.
#[derive(Debug, Clone, PartialEq)]
pub enum PollEvent {
    /// Values of one poll of one device (all with the same timestamp).
    Readings(Vec<Reading>),
    /// A device's communication state changed.
    Status(DeviceStatus),
    /// A message of the control executor for the server (a command result,
    /// a control state); it shares this channel so the uplink has one input.
    Control(protocol::AgentToServer),
}

/// Outcome of one poll, as far as communication goes.
#[derive(Debug, Clone, PartialEq)]
pub enum PollOutcome {
    /// Every request was answered (possibly with Modbus exceptions, listed).
    Answered {
        /// Exceptions met, e.g. "holding 18+28: Modbus exception 0x02 ...".
        exceptions: Vec<String>,
    },
    /// The device did not answer or the link failed.
    Failed(String),
}

/// Communication state of one device: a pure state machine.
#[derive(Debug, Clone, PartialEq)]
pub struct CommState {
    device: String,
    interval: Duration,
    online: Option<bool>,
    failures: u32,
    last_ok: Option<OffsetDateTime>,
    last_error: Option<String>,
}

impl CommState {
    /// A device never polled yet (neither online nor offline).
    pub fn new(device: &str, interval: Duration) -> Self {
        CommState {
            device: device.into(),
            interval,
            online: None,
            failures: 0,
            last_ok: None,
            last_error: None,
        }
    }

    /// True when the last verdict was "online".
    pub fn is_online(&self) -> bool {
        self.online == Some(true)
    }

    /// Feed one poll's outcome at wall time `now`. Returns the delay until the
    /// next poll and a status to announce when the state changed.
    pub fn record(
        &mut self,
        outcome: PollOutcome,
        now: OffsetDateTime,
    ) -> (Duration, Option<DeviceStatus>) {
        let before = (self.online, self.last_error.clone());
        let delay = match outcome {
            PollOutcome::Answered { exceptions } => {
                self.online = Some(true);
                self.failures = 0;
                self.last_ok = Some(now);
                self.last_error = if exceptions.is_empty() {
                    None
                } else {
                    Some(exceptions.join("; "))
                };
                self.interval
            }
            PollOutcome::Failed(err) => {
                self.failures = self.failures.saturating_add(1);
                self.last_error = Some(err);
                if self.failures >= OFFLINE_AFTER_FAILURES {
                    self.online = Some(false);
                }
                self.retry_delay()
            }
        };
        let changed = (self.online, self.last_error.clone()) != before;
        // Before the first verdict there is nothing to announce.
        let status = (changed && self.online.is_some()).then(|| self.status());
        (delay, status)
    }

    /// Polls of a silent device back off: interval × 2^(failures − threshold),
    /// capped by [`MAX_OFFLINE_RETRY`] (or the interval, when that is longer).
    fn retry_delay(&self) -> Duration {
        if self.failures < OFFLINE_AFTER_FAILURES {
            return self.interval;
        }
        let exp = (self.failures - OFFLINE_AFTER_FAILURES).min(16);
        let cap = MAX_OFFLINE_RETRY.max(self.interval);
        self.interval.saturating_mul(1u32 << exp).min(cap)
    }

    /// The current state as a protocol message.
    pub fn status(&self) -> DeviceStatus {
        DeviceStatus {
            device: self.device.clone(),
            online: self.is_online(),
            last_ok: self.last_ok,
            last_error: self.last_error.clone(),
            consecutive_failures: self.failures,
        }
    }
}

/// Decode one response into readings for the points it serves.
pub fn decode_response(
    device: &str,
    points: &[Point],
    read: &PlannedRead,
    data: &RawData,
    ts: OffsetDateTime,
) -> Vec<Reading> {
    let mut out = Vec::with_capacity(read.slots.len());
    for slot in &read.slots {
        let point = &points[slot.point];
        let Some(spec) = point.spec.modbus() else {
            continue;
        };
        let off = usize::from(slot.offset);
        let value = match data {
            RawData::Words(w) => w.get(off..).map(|w| decode_registers(spec, w)),
            RawData::Bits(b) => b.get(off..).map(|b| decode_bits(spec, b)),
        };
        match value {
            Some(Ok(value)) => out.push(Reading {
                device: device.to_owned(),
                point: point.key.clone(),
                ts,
                value,
                unit: point.unit.clone(),
                quality: Quality::Good,
            }),
            Some(Err(e)) => debug!(device, point = %point.key, error = %e, "value not decodable"),
            None => debug!(device, point = %point.key, "short response"),
        }
    }
    out
}

/// One device as the poller keeps it.
#[derive(Debug)]
pub struct PolledDevice<P> {
    /// Device key.
    pub key: String,
    /// Bus address (Modbus unit id, POP board number, ...).
    pub unit_id: u8,
    /// Enabled points, in profile order.
    pub points: Vec<Point>,
    /// What the driver prepared for it.
    pub plan: P,
    /// Every point of the device, polled or not: what a write may name.
    catalogue: Vec<Point>,
    next_due: Instant,
    comm: CommState,
}

impl<P> PolledDevice<P> {
    /// `device` with its polled `points` and the driver's `plan`, as
    /// [`run_bus`] keeps it: due at once, never polled yet. For driving a
    /// [`BusDriver`] directly (tests, tools). Writes may name any point of
    /// `device`, polled or not.
    pub fn new(device: &DeviceConfig, points: Vec<Point>, plan: P) -> Self {
        PolledDevice {
            comm: CommState::new(&device.key, device.poll_interval),
            key: device.key.clone(),
            unit_id: device.unit_id,
            points,
            plan,
            catalogue: device.points.clone(),
            next_due: Instant::now(),
        }
    }

    /// [`PolledDevice::new`] with `device`'s enabled points and the plan
    /// `driver` makes for them.
    pub fn for_driver<D: BusDriver<Plan = P>>(driver: &D, device: &DeviceConfig) -> Self {
        let points: Vec<Point> = device.enabled_points().cloned().collect();
        let plan = driver.plan(device, &points);
        PolledDevice::new(device, points, plan)
    }

    /// Any point of the device (polled or not) by key.
    pub fn point(&self, key: &str) -> Option<&Point> {
        self.catalogue.iter().find(|p| p.key == key)
    }
}

/// Write `value` (engineering units) to `point` of `device`; the bus task
/// answers on `reply` once the device has been written and read back.
#[derive(Debug)]
pub struct WriteCommand {
    /// Device key.
    pub device: String,
    /// Point key (any point of the device, polled or not).
    pub point: String,
    /// Engineering value.
    pub value: f64,
    /// Where the outcome goes. A dropped receiver does not cancel the write.
    pub reply: oneshot::Sender<Result<(), WriteError>>,
}

/// Run `op` on the device timer of `point` of `device`; the bus task answers
/// on `reply`.
#[derive(Debug)]
pub struct TimerCommand {
    /// Device key.
    pub device: String,
    /// Point key (an output with a timer; for the clock ops any point of the
    /// device).
    pub point: String,
    /// What to do.
    pub op: TimerOp,
    /// Where the outcome goes. A dropped receiver does not cancel the op.
    pub reply: oneshot::Sender<Result<TimerReply, WriteError>>,
}

/// What a bus's command queue carries.
#[derive(Debug)]
pub enum BusCommand {
    /// Write a point's value.
    Write(WriteCommand),
    /// An operation on a device's own timer.
    Timer(TimerCommand),
}

impl From<WriteCommand> for BusCommand {
    fn from(c: WriteCommand) -> Self {
        BusCommand::Write(c)
    }
}

impl From<TimerCommand> for BusCommand {
    fn from(c: TimerCommand) -> Self {
        BusCommand::Timer(c)
    }
}

/// Commands a bus queues before senders have to wait.
pub const COMMAND_QUEUE: usize = 32;

/// The sending end of one bus's command queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BusHandle {
    bus: String,
    tx: mpsc::Sender<BusCommand>,
}

impl BusHandle {
    /// A queue for bus `bus`: the handle, and the receiver [`run_bus`] takes.
    pub fn new(bus: &str) -> (BusHandle, mpsc::Receiver<BusCommand>) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        (
            BusHandle {
                bus: bus.to_owned(),
                tx,
            },
            rx,
        )
    }

    /// The bus's name.
    pub fn bus(&self) -> &str {
        &self.bus
    }

    /// Queue `cmd`. Fails (and drops the command) when the bus task is gone.
    pub async fn submit(&self, cmd: impl Into<BusCommand>) -> Result<(), WriteError> {
        self.tx
            .send(cmd.into())
            .await
            .map_err(|_| WriteError::BusStopped(self.bus.clone()))
    }

    /// Queue a timer op and wait for its outcome.
    pub async fn timer(
        &self,
        device: &str,
        point: &str,
        op: TimerOp,
    ) -> Result<TimerReply, WriteError> {
        let (reply, outcome) = oneshot::channel();
        self.submit(TimerCommand {
            device: device.to_owned(),
            point: point.to_owned(),
            op,
            reply,
        })
        .await?;
        outcome
            .await
            .map_err(|_| WriteError::BusStopped(self.bus.clone()))?
    }

    /// Queue a write and wait for its outcome.
    pub async fn write(&self, device: &str, point: &str, value: f64) -> Result<(), WriteError> {
        let (reply, outcome) = oneshot::channel();
        self.submit(WriteCommand {
            device: device.to_owned(),
            point: point.to_owned(),
            value,
            reply,
        })
        .await?;
        outcome
            .await
            .map_err(|_| WriteError::BusStopped(self.bus.clone()))?
    }
}

/// Routes writes by device key to the queue of the device's bus.
#[derive(Debug, Clone, Default)]
pub struct Writer {
    routes: BTreeMap<String, BusHandle>,
}

impl Writer {
    /// A writer that knows nothing yet.
    pub fn new() -> Self {
        Writer::default()
    }

    /// Send writes for `device` to `bus`.
    pub fn route(&mut self, device: &str, bus: BusHandle) {
        self.routes.insert(device.to_owned(), bus);
    }

    /// The queue of `device`'s bus.
    pub fn bus_of(&self, device: &str) -> Option<&BusHandle> {
        self.routes.get(device)
    }

    /// Write `value` to `point` of `device` and wait for the outcome
    /// (written and read back, or why not).
    pub async fn write(&self, device: &str, point: &str, value: f64) -> Result<(), WriteError> {
        match self.routes.get(device) {
            Some(bus) => bus.write(device, point, value).await,
            None => Err(WriteError::UnknownPoint {
                device: device.to_owned(),
                point: point.to_owned(),
            }),
        }
    }

    /// Run `op` on the timer `device` keeps for `point` and wait for the
    /// outcome.
    pub async fn timer(
        &self,
        device: &str,
        point: &str,
        op: TimerOp,
    ) -> Result<TimerReply, WriteError> {
        match self.routes.get(device) {
            Some(bus) => bus.timer(device, point, op).await,
            None => Err(WriteError::UnknownPoint {
                device: device.to_owned(),
                point: point.to_owned(),
            }),
        }
    }
}

/// Poll every device of one bus, and serve the write commands queued on
/// `commands`, until `cancel` fires. Events go to `tx`; if the receiver is
/// gone the task ends. A waiting command runs before the next poll.
pub async fn run_bus<D: BusDriver>(
    bus: String,
    mut driver: D,
    devices: Vec<DeviceConfig>,
    tx: mpsc::Sender<PollEvent>,
    mut commands: mpsc::Receiver<BusCommand>,
    cancel: CancellationToken,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) {
    let mut devices: Vec<PolledDevice<D::Plan>> = devices
        .iter()
        .map(|d| {
            info!(%bus, device = %d.key, points = d.enabled_points().count(), "polling device");
            PolledDevice::for_driver(&driver, d)
        })
        .collect();
    if devices.is_empty() {
        return;
    }
    let mut commands_open = true;
    loop {
        // Commands already waiting go first, however overdue the polls are.
        while commands_open {
            match commands.try_recv() {
                Ok(cmd) => serve_command(&bus, &mut driver, &devices, cmd).await,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => commands_open = false,
            }
        }
        let Some((i, due)) = devices
            .iter()
            .enumerate()
            .min_by_key(|(_, d)| d.next_due)
            .map(|(i, d)| (i, d.next_due))
        else {
            return;
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            cmd = commands.recv(), if commands_open => {
                match cmd {
                    Some(cmd) => serve_command(&bus, &mut driver, &devices, cmd).await,
                    None => commands_open = false,
                }
                continue;
            }
            () = tokio::time::sleep_until(due) => {}
        }
        let dev = &mut devices[i];
        let span = info_span!("poll", device = %dev.key, unit_id = dev.unit_id);
        let events = poll_once(&mut driver, dev).instrument(span).await;
        // `failures` is reset by every answered poll, so 0 means this one answered.
        metrics.record_poll(&dev.key, dev.comm.status().consecutive_failures == 0);
        for ev in events {
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    }
}

/// Run one command and answer it.
async fn serve_command<D: BusDriver>(
    bus: &str,
    driver: &mut D,
    devices: &[PolledDevice<D::Plan>],
    cmd: BusCommand,
) {
    match cmd {
        BusCommand::Write(cmd) => serve_write(bus, driver, devices, cmd).await,
        BusCommand::Timer(cmd) => serve_timer(bus, driver, devices, cmd).await,
    }
}

/// Run one timer op and answer it. The point must exist on the device; an
/// op that changes something needs a point its profile marks writable.
async fn serve_timer<D: BusDriver>(
    bus: &str,
    driver: &mut D,
    devices: &[PolledDevice<D::Plan>],
    cmd: TimerCommand,
) {
    let TimerCommand {
        device,
        point,
        op,
        reply,
    } = cmd;
    let changes = matches!(
        op,
        TimerOp::WriteTable(_) | TimerOp::FollowTable | TimerOp::SetClock(_)
    );
    let target = devices
        .iter()
        .find(|d| d.key == device)
        .and_then(|d| d.point(&point).map(|p| (d, p)));
    let what = format!("{op:?}");
    let result = match target {
        None => Err(WriteError::UnknownPoint {
            device: device.clone(),
            point: point.clone(),
        }),
        Some((_, p)) if changes && !p.writable => Err(WriteError::NotWritable(point.clone())),
        Some((dev, p)) => {
            let span =
                info_span!("timer", %bus, device = %dev.key, unit_id = dev.unit_id, point = %p.key);
            driver.timer(dev, p, op).instrument(span).await
        }
    };
    match &result {
        Ok(r) => debug!(%bus, %device, %point, op = %what, reply = ?r, "device timer op done"),
        Err(WriteError::Unsupported(_)) => {}
        Err(e) => warn!(%bus, %device, %point, op = %what, error = %e, "device timer op failed"),
    }
    let _ = reply.send(result);
}

/// Run one write command and answer it. The point must exist on the device
/// and be writable in its profile; otherwise nothing is sent.
async fn serve_write<D: BusDriver>(
    bus: &str,
    driver: &mut D,
    devices: &[PolledDevice<D::Plan>],
    cmd: WriteCommand,
) {
    let WriteCommand {
        device,
        point,
        value,
        reply,
    } = cmd;
    let target = devices
        .iter()
        .find(|d| d.key == device)
        .and_then(|d| d.point(&point).map(|p| (d, p)));
    let result = match target {
        None => Err(WriteError::UnknownPoint {
            device: device.clone(),
            point: point.clone(),
        }),
        Some((_, p)) if !p.writable => Err(WriteError::NotWritable(point.clone())),
        Some((dev, p)) => {
            let span =
                info_span!("write", %bus, device = %dev.key, unit_id = dev.unit_id, point = %p.key);
            driver.write(dev, p, value).instrument(span).await
        }
    };
    match &result {
        Ok(()) => info!(%bus, %device, %point, value, "write done and read back"),
        Err(e) => warn!(%bus, %device, %point, value, error = %e, "write failed"),
    }
    // The asker may have given up waiting; the write stands either way.
    let _ = reply.send(result);
}

async fn poll_once<D: BusDriver>(
    driver: &mut D,
    dev: &mut PolledDevice<D::Plan>,
) -> Vec<PollEvent> {
    let (mut readings, outcome) = driver.poll(dev).await;
    // One timestamp per poll keeps a device's values aligned on the server.
    if let Some(first) = readings.first().map(|r| r.ts) {
        for r in &mut readings {
            r.ts = first;
        }
    }
    debug!(readings = readings.len(), ?outcome, "polled");
    let (delay, status) = dev.comm.record(outcome, OffsetDateTime::now_utc());
    dev.next_due = Instant::now() + delay;
    let mut events = Vec::new();
    if let Some(status) = status {
        if status.online {
            match &status.last_error {
                None => info!("device online"),
                Some(e) => {
                    warn!(error = %e, "device answers with exceptions (check the profile addresses)")
                }
            }
        } else {
            warn!(error = status.last_error.as_deref().unwrap_or(""), retry_in = ?delay, "device offline");
        }
        events.push(PollEvent::Status(status));
    }
    if !readings.is_empty() {
        events.push(PollEvent::Readings(readings));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registers::load_builtin;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-21 12:00 UTC);
    const SEC: Duration = Duration::from_secs(1);

    fn ok() -> PollOutcome {
        PollOutcome::Answered { exceptions: vec![] }
    }

    #[test]
    fn the_first_good_poll_announces_the_device_online() {
        let mut s = CommState::new("hp", SEC);
        let (delay, status) = s.record(ok(), NOW);
        assert_eq!(delay, SEC);
        let status = status.unwrap();
        assert!(status.online && status.last_error.is_none());
        assert_eq!(status.last_ok, Some(NOW));
        assert_eq!(s.record(ok(), NOW).1, None, "no change, no announcement");
    }

    #[test]
    fn one_lost_reply_does_not_mark_the_device_offline() {
        let mut s = CommState::new("hp", SEC);
        s.record(ok(), NOW);
        let (delay, status) = s.record(PollOutcome::Failed("timeout".into()), NOW);
        assert_eq!(delay, SEC);
        let status = status.expect("the error is news");
        assert!(status.online);
    }

    #[test]
    fn a_silent_device_goes_offline_and_is_polled_with_growing_back_off() {
        let mut s = CommState::new("hp", SEC);
        s.record(ok(), NOW);
        let fail = || PollOutcome::Failed("no reply within 1s".into());
        s.record(fail(), NOW);
        let (d2, st) = s.record(fail(), NOW);
        let st = st.unwrap();
        assert!(!st.online);
        assert_eq!(st.consecutive_failures, 2);
        let delays: Vec<_> = std::iter::once(d2)
            .chain((0..8).map(|_| s.record(fail(), NOW).0))
            .collect();
        assert_eq!(
            delays.iter().map(|d| d.as_secs()).collect::<Vec<_>>(),
            vec![1, 2, 4, 8, 16, 32, 60, 60, 60]
        );
    }

    #[test]
    fn a_device_that_answers_again_is_back_online_at_its_normal_interval() {
        let mut s = CommState::new("hp", SEC);
        for _ in 0..5 {
            s.record(PollOutcome::Failed("x".into()), NOW);
        }
        let (delay, status) = s.record(ok(), NOW);
        assert_eq!(delay, SEC);
        assert!(status.unwrap().online);
    }

    #[test]
    fn a_modbus_exception_keeps_the_device_online_but_reports_the_error() {
        let mut s = CommState::new("hp", SEC);
        let (delay, status) = s.record(
            PollOutcome::Answered {
                exceptions: vec!["holding 18+28: exception 0x02".into()],
            },
            NOW,
        );
        assert_eq!(delay, SEC, "exceptions are not retried as link faults");
        let status = status.unwrap();
        assert!(status.online);
        assert!(status.last_error.unwrap().contains("0x02"));
    }

    #[test]
    fn eh203_registers_decode_into_readings_with_units() {
        let profile = load_builtin("ouman_eh203_modbus200").unwrap().unwrap();
        let points: Vec<Point> = profile.points.into_iter().filter(|p| p.enabled).collect();
        let specs: Vec<_> = points
            .iter()
            .map(|p| p.spec.modbus().unwrap().clone())
            .collect();
        let plan = plan_reads(&specs, 8);
        assert_eq!(plan.len(), 1, "18..=45 fits one request with gaps up to 8");
        assert_eq!((plan[0].address, plan[0].count), (18, 28));
        let mut words = vec![0u16; 28];
        words[0] = (-512i16) as u16; // outdoor 18: -5.12
        words[2] = 3550; // L1 supply 20
        words[45 - 18] = 0b0101; // compressor on, heater off, alarm A on
        let r = decode_response("hp", &points, &plan[0], &RawData::Words(words), NOW);
        let get = |k: &str| r.iter().find(|r| r.point == k).unwrap();
        assert_eq!(get("outdoor_temp").value, -5.12);
        assert_eq!(get("outdoor_temp").unit, "degC");
        assert_eq!(get("l1_supply_temp").value, 35.5);
        assert_eq!(
            (
                get("compressor_running").value,
                get("electric_heater_on").value
            ),
            (1.0, 0.0)
        );
        assert_eq!((get("alarm_a").value, get("alarm_b").value), (1.0, 0.0));
        assert_eq!(r.len(), 10);
    }
}
