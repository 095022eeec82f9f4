//! The task of a `modbus_slave` bus: answer the PLC master from the banks.
//!
//! It does not poll: the master paces the line and we only answer, as fast
//! as we can. One task owns the serial port (reopened with back-off after an
//! I/O error, e.g. an unplugged adapter) and serves one [`Bank`] per unit id
//! configured on the bus. Requests for other unit ids are another slave's
//! business and get no reply; damaged frames and noise are dropped without a
//! word (see [`super::rtu`]); broadcasts are ignored (see [`Slave::answer`]).
//!
//! A device's [`DeviceStatus`] follows the master: online at its first
//! request, offline after [`OFFLINE_AFTER_ROUNDS`] rounds (the device's
//! `poll_interval_ms`) without one, online again at the next request
//! ([`Liveness`], pure and tested without I/O).
//!
//! Writes arrive on the bus's command queue like on every other bus
//! ([`serve_writes`]): each is offered to its unit's bank and answered when
//! the master has taken it, or after [`delivery_limit`] (three rounds, 2 to
//! 60 s) with the reason, the value staying offered ([`Bank::write`]).
//!
//! Why not tokio-modbus's `rtu-server` (0.17, `src/server/rtu.rs`,
//! `src/codec/rtu.rs`): its `serve_forever` returns (ends the server) on a
//! CRC-valid frame whose PDU it cannot decode (e.g. FC05 with a value other
//! than 0xFF00/0x0000, which must get exception 0x03) and after 20 failed
//! decode attempts in a row, which another slave's replies on a shared line
//! produce; it reads every frame as a request, so a neighbour's reply is
//! parsed with a request's length; it sends service exceptions even for
//! broadcasts; and it only runs on a `SerialStream`. The frame loop here is
//! small, keeps serving whatever arrives, and reuses our own PDU codec
//! ([`crate::devices::ascii::pdu`]) and, for ASCII lines, our ASCII framing.

use std::{io, sync::Arc, time::Duration};

use protocol::DeviceStatus;
use time::OffsetDateTime;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    sync::mpsc,
    task::JoinSet,
    time::{Instant, sleep_until},
};
use tokio_modbus::ExceptionCode;
use tokio_serial::SerialStream;
use tokio_util::{
    bytes::BytesMut,
    codec::{Decoder as _, Encoder as _},
    sync::CancellationToken,
};
use tracing::{Instrument as _, debug, info, info_span, warn};

use super::{
    bank::Bank,
    rtu::{self, MAX_ADU},
};
use crate::{
    backoff::Backoff,
    config::{SlaveFraming, SlaveLine},
    devices::{
        ascii::{
            codec::{AsciiCodec, AsciiFrame},
            pdu::{ExceptionResponse, PduError, Request, Response},
        },
        modbus::port_builder,
    },
    metrics::Metrics,
    poller::{BusCommand, PollEvent, WriteCommand, WriteError},
};

/// Rounds of the master without a request after which its device is offline.
pub const OFFLINE_AFTER_ROUNDS: u32 = 3;

/// Whether the master is still talking to one unit: a pure state machine.
#[derive(Debug, Clone)]
pub struct Liveness {
    device: String,
    round: Duration,
    online: Option<bool>,
    since: Instant,
    last_request: Option<Instant>,
    last_ok: Option<OffsetDateTime>,
}

impl Liveness {
    /// A unit not heard from yet, expecting a request every `round`, counted from `now`.
    pub fn new(device: &str, round: Duration, now: Instant) -> Self {
        Liveness {
            device: device.to_owned(),
            round,
            online: None,
            since: now,
            last_request: None,
            last_ok: None,
        }
    }

    fn window(&self) -> Duration {
        self.round.saturating_mul(OFFLINE_AFTER_ROUNDS)
    }

    /// A request arrived: the status to announce when the device was not online.
    pub fn on_request(&mut self, now: Instant, wall: OffsetDateTime) -> Option<DeviceStatus> {
        self.last_request = Some(now);
        self.last_ok = Some(wall);
        if self.online == Some(true) {
            return None;
        }
        self.online = Some(true);
        Some(self.status(None))
    }

    /// When the device goes offline unless a request comes first; `None`
    /// while it is offline already.
    pub fn deadline(&self) -> Option<Instant> {
        (self.online != Some(false))
            .then(|| self.last_request.unwrap_or(self.since) + self.window())
    }

    /// Time passed: the status to announce when the device just went offline.
    /// `port_error` says why, when our side of the line is down.
    pub fn on_tick(&mut self, now: Instant, port_error: Option<&str>) -> Option<DeviceStatus> {
        if self.deadline().is_none_or(|d| now < d) {
            return None;
        }
        self.online = Some(false);
        let mut why = format!(
            "no request from the PLC master for {:?} ({OFFLINE_AFTER_ROUNDS} rounds of {:?})",
            self.window(),
            self.round
        );
        if let Some(e) = port_error {
            why.push_str(&format!("; serial port: {e}"));
        }
        Some(self.status(Some(why)))
    }

    fn status(&self, last_error: Option<String>) -> DeviceStatus {
        DeviceStatus {
            device: self.device.clone(),
            online: self.online == Some(true),
            last_ok: self.last_ok,
            last_error,
            consecutive_failures: if self.online == Some(false) {
                OFFLINE_AFTER_ROUNDS
            } else {
                0
            },
        }
    }
}

/// One unit id the agent answers on a slave bus.
#[derive(Debug, Clone)]
pub struct SlaveUnit {
    /// The address the master uses for us (1..=247).
    pub unit_id: u8,
    /// Device key (readings and status are reported under it).
    pub device: String,
    /// Its exchange area.
    pub bank: Bank,
    /// The master's expected round time.
    pub round: Duration,
}

struct Unit {
    cfg: SlaveUnit,
    live: Liveness,
}

/// Why serving a port stopped.
enum Ended {
    Cancelled,
    UplinkGone,
    Io(String),
}

/// The served side of one slave bus (everything but the port).
pub struct Slave {
    bus: String,
    framing: SlaveFraming,
    idle_gap: Duration,
    units: Vec<Unit>,
    tx: mpsc::Sender<PollEvent>,
    metrics: Arc<Metrics>,
    port_error: Option<String>,
}

impl std::fmt::Debug for Slave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slave")
            .field("bus", &self.bus)
            .field("framing", &self.framing)
            .field("units", &self.units.len())
            .finish_non_exhaustive()
    }
}

impl Slave {
    /// Serve `units` with `framing`; events go to `tx`.
    pub fn new(
        bus: &str,
        framing: SlaveFraming,
        baud: u32,
        units: Vec<SlaveUnit>,
        tx: mpsc::Sender<PollEvent>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let now = Instant::now();
        Slave {
            bus: bus.to_owned(),
            framing,
            idle_gap: rtu::idle_gap(baud),
            units: units
                .into_iter()
                .map(|cfg| Unit {
                    live: Liveness::new(&cfg.device, cfg.round, now),
                    cfg,
                })
                .collect(),
            tx,
            metrics,
            port_error: None,
        }
    }

    /// The reply frame to a request frame (`None`: stay silent) and the
    /// events it produced.
    ///
    /// Broadcasts (address 0) are neither answered nor acted upon. Serial
    /// Line V1.02 §2.1 asks every slave to execute broadcast writes; we do not,
    /// like the original cottage system: our bank is the PLC's exchange area
    /// with this agent, not a device a broadcast configures, and a broadcast
    /// meant for the PLCs or meters on the line must not overwrite it.
    pub fn answer(&mut self, address: u8, pdu: &[u8]) -> (Option<Vec<u8>>, Vec<PollEvent>) {
        if address == 0 {
            debug!(bus = %self.bus, "broadcast ignored");
            return (None, Vec::new());
        }
        let Some(unit) = self.units.iter_mut().find(|u| u.cfg.unit_id == address) else {
            return (None, Vec::new());
        };
        let now = OffsetDateTime::now_utc();
        let mut events = Vec::new();
        if let Some(status) = unit.live.on_request(Instant::now(), now) {
            info!(bus = %self.bus, device = %unit.cfg.device, unit_id = address, "PLC master is polling us");
            events.push(PollEvent::Status(status));
        }
        self.metrics.record_poll(&unit.cfg.device, true);
        let (reply, readings) = respond(&unit.cfg.bank, pdu, now);
        if !readings.is_empty() {
            events.push(PollEvent::Readings(readings));
        }
        let frame = match self.framing {
            SlaveFraming::Rtu => Some(rtu::frame(address, &reply)),
            SlaveFraming::Ascii => {
                let mut out = BytesMut::new();
                let frame = AsciiFrame {
                    address,
                    pdu: reply,
                };
                match AsciiCodec.encode(&frame, &mut out) {
                    Ok(()) => Some(out.to_vec()),
                    Err(e) => {
                        warn!(bus = %self.bus, error = %e, "reply not encodable");
                        None
                    }
                }
            }
        };
        (frame, events)
    }

    /// Statuses of units whose master fell silent by `now`.
    pub fn tick(&mut self, now: Instant) -> Vec<PollEvent> {
        let err = self.port_error.clone();
        self.units
            .iter_mut()
            .filter_map(|u| u.live.on_tick(now, err.as_deref()))
            .inspect(|s| warn!(device = %s.device, error = s.last_error.as_deref().unwrap_or(""), "PLC master silent"))
            .map(PollEvent::Status)
            .collect()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.units.iter().filter_map(|u| u.live.deadline()).min()
    }

    async fn emit(&self, events: Vec<PollEvent>) -> bool {
        for ev in events {
            if self.tx.send(ev).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Wait `delay` (before reopening the port), still announcing silence.
    async fn wait(&mut self, delay: Duration, cancel: &CancellationToken) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return false,
                () = sleep_until(until) => return true,
                () = at(self.next_deadline()) => {
                    let events = self.tick(Instant::now());
                    if !self.emit(events).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Answer requests on `io` until it fails or `cancel` fires.
    async fn serve_io<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut io: T,
        cancel: &CancellationToken,
    ) -> Ended {
        let mut buf = BytesMut::with_capacity(2 * MAX_ADU);
        let mut chunk = [0u8; 512];
        let mut idle = true;
        let mut last_byte = Instant::now();
        loop {
            while let Some((address, pdu)) = next_frame(self.framing, &mut buf, idle) {
                let (reply, events) = self.answer(address, &pdu);
                // The master is waiting: reply before anything else.
                if let Some(reply) = reply {
                    let sent = async {
                        io.write_all(&reply).await?;
                        io.flush().await
                    };
                    if let Err(e) = sent.await {
                        return Ended::Io(e.to_string());
                    }
                }
                if !self.emit(events).await {
                    return Ended::UplinkGone;
                }
            }
            let idle_at = (!idle && !buf.is_empty()).then(|| last_byte + self.idle_gap);
            tokio::select! {
                () = cancel.cancelled() => return Ended::Cancelled,
                read = io.read(&mut chunk) => match read {
                    Ok(0) => return Ended::Io("the port was closed".into()),
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        last_byte = Instant::now();
                        idle = false;
                    }
                    Err(e) => return Ended::Io(e.to_string()),
                },
                () = at(idle_at) => idle = true,
                () = at(self.next_deadline()) => {
                    let events = self.tick(Instant::now());
                    if !self.emit(events).await {
                        return Ended::UplinkGone;
                    }
                }
            }
        }
    }

    /// Serve `io` (a pty, a `tokio::io::duplex` in tests) until it fails or
    /// `cancel` fires; `Err` carries the I/O error.
    pub async fn serve_stream<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: T,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        match self.serve_io(io, cancel).await {
            Ended::Cancelled | Ended::UplinkGone => Ok(()),
            Ended::Io(e) => Err(e),
        }
    }
}

/// Sleep until `t`, or forever when there is none.
async fn at(t: Option<Instant>) {
    match t {
        Some(t) => sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The next request frame in `buf`: `(address, pdu)`.
fn next_frame(framing: SlaveFraming, buf: &mut BytesMut, idle: bool) -> Option<(u8, Vec<u8>)> {
    match framing {
        SlaveFraming::Rtu => rtu::next_request(buf, idle).map(|r| (r.address, r.pdu)),
        SlaveFraming::Ascii => loop {
            // The codec consumes a bad frame before reporting it, so looping
            // resynchronises on the next ':'; a bad frame is never answered.
            match AsciiCodec.decode(buf) {
                Ok(Some(f)) => return Some((f.address, f.pdu)),
                Ok(None) => return None,
                Err(e) => debug!(error = %e, "ASCII frame dropped"),
            }
        },
    }
}

/// The reply PDU to request `pdu` from `bank`, and the readings it produced.
/// Check order of Application Protocol V1.1b3 §6: unsupported function 0x01,
/// bad quantity or byte count 0x03 (both from decoding), unmapped address 0x02
/// (from the bank).
fn respond(bank: &Bank, pdu: &[u8], now: OffsetDateTime) -> (Vec<u8>, Vec<protocol::Reading>) {
    let function = pdu.first().copied().unwrap_or(0);
    let exception = |function: u8, code: ExceptionCode| {
        Response::Exception(ExceptionResponse { function, code })
    };
    let (response, readings) = match Request::decode(pdu) {
        Ok(req) => match bank.handle(&req, now) {
            Ok(h) => (h.response, h.readings),
            Err(code) => (exception(function, code), Vec::new()),
        },
        Err(PduError::UnsupportedFunction(f)) => {
            (exception(f, ExceptionCode::IllegalFunction), Vec::new())
        }
        Err(_) => (
            exception(function, ExceptionCode::IllegalDataValue),
            Vec::new(),
        ),
    };
    match response.encode() {
        Ok(bytes) => (bytes, readings),
        Err(e) => {
            warn!(error = %e, "reply not encodable");
            (
                vec![
                    function | 0x80,
                    u8::from(ExceptionCode::ServerDeviceFailure),
                ],
                readings,
            )
        }
    }
}

/// A write to a slave device waits this many of the master's rounds (the
/// device's `poll_interval_ms`) for the master to read the value and, where
/// the point has one, write the echo back: a round to read it, one to echo
/// it, and one to spare. See [`delivery_limit`].
pub const DELIVERY_ROUNDS: u32 = 3;

/// Shortest wait for a delivery: a round time of a few hundred ms is the
/// configured expectation, but a busy master's round runs late.
pub const MIN_DELIVERY_WAIT: Duration = Duration::from_secs(2);

/// Longest wait for a delivery: the executor waits for the answer, and a
/// master with minute-long rounds must not hold up everything else for many
/// minutes. The value stays offered after it (see [`Bank::write`]).
pub const MAX_DELIVERY_WAIT: Duration = Duration::from_secs(60);

/// How long a write to a unit with master rounds of `round` waits for the
/// master to take the value: [`DELIVERY_ROUNDS`] rounds, within
/// [`MIN_DELIVERY_WAIT`]..=[`MAX_DELIVERY_WAIT`].
pub fn delivery_limit(round: Duration) -> Duration {
    round
        .saturating_mul(DELIVERY_ROUNDS)
        .clamp(MIN_DELIVERY_WAIT, MAX_DELIVERY_WAIT)
}

/// Serve the PLC master on a serial line until `cancel` fires (or the uplink
/// is gone). The port is opened here and reopened after I/O errors with
/// jittered back-off; statuses keep flowing while it is closed.
///
/// Writes for the units' devices arrive on `commands` (the bus's
/// [`crate::poller::BusHandle`] queue, like every other bus): each is offered
/// to the unit's bank and answered when the master has taken it or after
/// [`delivery_limit`] (see [`Bank::write`] for the outcomes). They are served
/// side by side, not one after another: each waits for the master, not for
/// the line, and a write the PLC never echoes must not hold up the others.
pub async fn run_slave_bus(
    bus: String,
    line: SlaveLine,
    units: Vec<SlaveUnit>,
    commands: mpsc::Receiver<BusCommand>,
    tx: mpsc::Sender<PollEvent>,
    cancel: CancellationToken,
    metrics: Arc<Metrics>,
) {
    if units.is_empty() {
        return;
    }
    let writes = serve_writes(bus.clone(), units.clone(), commands);
    tokio::select! {
        () = serve_line(bus, line, units, tx, &cancel, metrics) => {}
        // The agent's writer outlives the bus; should the queue close anyway,
        // keep answering the master.
        () = async { writes.await; std::future::pending::<()>().await } => {}
    }
}

async fn serve_line(
    bus: String,
    line: SlaveLine,
    units: Vec<SlaveUnit>,
    tx: mpsc::Sender<PollEvent>,
    cancel: &CancellationToken,
    metrics: Arc<Metrics>,
) {
    let mut slave = Slave::new(&bus, line.framing, line.serial.baud, units, tx, metrics);
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let path = line.serial.path.clone();
    loop {
        let failure = match SerialStream::open(&port_builder(&line.serial)) {
            Ok(port) => {
                info!(%bus, %path, units = slave.units.len(), "answering the PLC master");
                backoff.reset();
                slave.port_error = None;
                match slave.serve_io(port, cancel).await {
                    Ended::Cancelled | Ended::UplinkGone => return,
                    Ended::Io(e) => e,
                }
            }
            Err(e) => io::Error::from(e).to_string(),
        };
        let delay = backoff.next_delay();
        warn!(%bus, %path, error = %failure, retry_in = ?delay, "slave port failed");
        slave.port_error = Some(failure);
        if !slave.wait(delay, cancel).await {
            return;
        }
    }
}

/// Answer the write commands queued for `units` until the queue closes;
/// writes still waiting for the master are answered before it returns.
/// Dropping the future abandons them (their askers see the bus stopped).
pub async fn serve_writes(
    bus: String,
    units: Vec<SlaveUnit>,
    mut commands: mpsc::Receiver<BusCommand>,
) {
    let mut waiting = JoinSet::new();
    loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                Some(BusCommand::Write(cmd)) => {
                    let unit = units.iter().find(|u| u.device == cmd.device).cloned();
                    waiting.spawn(serve_write(bus.clone(), unit, cmd));
                }
                // An exchange area has no clock tables: the agent runs
                // schedules of its points itself.
                Some(BusCommand::Timer(cmd)) => {
                    let _ = cmd.reply.send(Err(WriteError::Unsupported(format!(
                        "`{}` is a PLC exchange area on a slave bus: it has no clock tables of its own (point `{}`)",
                        cmd.device, cmd.point
                    ))));
                }
                None => break,
            },
            Some(_) = waiting.join_next(), if !waiting.is_empty() => {}
        }
    }
    while waiting.join_next().await.is_some() {}
}

/// Offer one command's value to its unit's bank and answer it.
async fn serve_write(bus: String, unit: Option<SlaveUnit>, cmd: WriteCommand) {
    let WriteCommand {
        device,
        point,
        value,
        reply,
    } = cmd;
    let result = match &unit {
        None => Err(WriteError::UnknownPoint {
            device: device.clone(),
            point: point.clone(),
        }),
        Some(u) => {
            let span = info_span!("write", %bus, device = %u.device, unit_id = u.unit_id, %point);
            u.bank
                .write(&point, value, delivery_limit(u.round))
                .instrument(span)
                .await
        }
    };
    match &result {
        Ok(done) => {
            info!(%bus, %device, %point, value, echoed = done.echoed, "write taken by the PLC master")
        }
        Err(e) => warn!(%bus, %device, %point, value, error = %e, "write failed"),
    }
    // The asker may have given up waiting; the offer stands either way.
    let _ = reply.send(result.map(|_| ()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registers::parse_profile;
    use tokio::io::duplex;

    const ROUND: Duration = Duration::from_secs(2);

    #[test]
    fn a_master_that_keeps_polling_keeps_the_device_online() {
        let t0 = Instant::now();
        let wall = OffsetDateTime::UNIX_EPOCH;
        let mut l = Liveness::new("plc", ROUND, t0);
        assert_eq!(l.on_tick(t0 + ROUND, None), None, "not yet a verdict");
        let s = l
            .on_request(t0 + ROUND, wall)
            .expect("first request: online");
        assert!(s.online && s.last_error.is_none());
        for i in 2..10 {
            assert_eq!(l.on_request(t0 + ROUND * i, wall), None, "no news");
            assert_eq!(l.on_tick(t0 + ROUND * i + ROUND * 2, None), None);
        }
    }

    #[test]
    fn three_silent_rounds_mark_it_offline_and_the_next_request_online() {
        let t0 = Instant::now();
        let wall = OffsetDateTime::UNIX_EPOCH;
        let mut l = Liveness::new("plc", ROUND, t0);
        l.on_request(t0, wall);
        assert_eq!(l.deadline(), Some(t0 + ROUND * 3));
        assert_eq!(
            l.on_tick(t0 + ROUND * 3 - Duration::from_millis(1), None),
            None
        );
        let s = l.on_tick(t0 + ROUND * 3, Some("gone")).expect("offline");
        assert!(!s.online);
        assert_eq!(s.last_ok, Some(wall));
        let e = s.last_error.unwrap();
        assert!(
            e.contains("3 rounds of 2s") && e.contains("serial port: gone"),
            "{e}"
        );
        assert_eq!(l.deadline(), None, "nothing more to wait for");
        assert_eq!(l.on_tick(t0 + ROUND * 10, None), None, "announced once");
        assert!(l.on_request(t0 + ROUND * 11, wall).unwrap().online);
    }

    #[test]
    fn a_master_that_never_comes_is_reported_offline_after_three_rounds() {
        let t0 = Instant::now();
        let mut l = Liveness::new("plc", ROUND, t0);
        let s = l.on_tick(t0 + ROUND * 3, None).unwrap();
        assert!(!s.online && s.last_ok.is_none());
    }

    fn unit() -> SlaveUnit {
        let text = "[[profile]]\nid = \"x\"\n[[profile.point]]\nname = \"t\"\nfunction = \"holding\"\naddress = 0\ndata_type = \"i16\"\nscale = 0.1\ndirection = \"from_plc\"\n";
        let points = parse_profile("t.toml", text).unwrap().remove(0).points;
        SlaveUnit {
            unit_id: 7,
            device: "plc".into(),
            bank: Bank::new("plc", &points, ROUND).unwrap(),
            round: ROUND,
        }
    }

    fn slave(framing: SlaveFraming) -> (Slave, mpsc::Receiver<PollEvent>) {
        let (tx, rx) = mpsc::channel(16);
        (
            Slave::new("field", framing, 9600, vec![unit()], tx, Arc::default()),
            rx,
        )
    }

    #[tokio::test]
    async fn over_a_duplex_stream_a_write_is_echoed_and_becomes_a_reading() {
        let (mut s, mut rx) = slave(SlaveFraming::Rtu);
        let (mut master, ours) = duplex(1024);
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let server = tokio::spawn(async move { s.serve_stream(ours, &stop).await });
        // unit 7, FC06 register 0 = 215 (21.5 °C), in two pieces
        let req = rtu::frame(7, &[0x06, 0x00, 0x00, 0x00, 0xD7]);
        master.write_all(&req[..3]).await.unwrap();
        master.write_all(&req[3..]).await.unwrap();
        let mut reply = vec![0u8; req.len()];
        master.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, req, "FC06 is answered with its echo");
        let PollEvent::Status(s) = rx.recv().await.unwrap() else {
            panic!("a status first")
        };
        assert!(s.online);
        let PollEvent::Readings(r) = rx.recv().await.unwrap() else {
            panic!("then readings")
        };
        assert_eq!((r[0].point.as_str(), r[0].value), ("t", 21.5));
        cancel.cancel();
        assert_eq!(server.await.unwrap(), Ok(()));
    }

    #[test]
    fn exceptions_follow_the_spec_check_order() {
        let (mut s, _rx) = slave(SlaveFraming::Rtu);
        let reply = |s: &mut Slave, pdu: &[u8]| s.answer(7, pdu).0.unwrap();
        // FC03 from 5: not mapped -> 0x02
        assert_eq!(
            reply(&mut s, &[0x03, 0x00, 0x05, 0x00, 0x01]),
            rtu::frame(7, &[0x83, 0x02])
        );
        // FC03 for 126 registers -> 0x03, even though 0 is mapped
        assert_eq!(
            reply(&mut s, &[0x03, 0x00, 0x00, 0x00, 0x7E]),
            rtu::frame(7, &[0x83, 0x03])
        );
        // FC05 with 0x1234 -> 0x03
        assert_eq!(
            reply(&mut s, &[0x05, 0x00, 0x00, 0x12, 0x34]),
            rtu::frame(7, &[0x85, 0x03])
        );
        // FC11 report server id -> 0x01
        assert_eq!(reply(&mut s, &[0x11]), rtu::frame(7, &[0x91, 0x01]));
    }

    #[test]
    fn other_units_and_broadcasts_get_no_reply_and_change_nothing() {
        let (mut s, _rx) = slave(SlaveFraming::Rtu);
        let write = [0x06, 0x00, 0x00, 0x00, 0x01];
        assert_eq!(s.answer(8, &write), (None, vec![]));
        assert_eq!(s.answer(0, &write), (None, vec![]));
        assert_eq!(s.units[0].cfg.bank.value("t"), Ok(None));
    }

    #[test]
    fn ascii_framing_answers_in_ascii() {
        let (mut s, _rx) = slave(SlaveFraming::Ascii);
        let (reply, _) = s.answer(7, &[0x03, 0x00, 0x00, 0x00, 0x01]);
        // unit 7, FC03, 2 bytes, 0xFFFF (unknown), LRC = -(07+03+02+FF+FF) = 0xF6
        assert_eq!(reply.unwrap(), b":070302FFFFF6\r\n");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_request_pdus_never_panic_and_get_a_reply(pdu in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..260)) {
            let (mut s, _rx) = slave(SlaveFraming::Rtu);
            let (reply, _) = s.answer(7, &pdu);
            let reply = reply.unwrap();
            proptest::prop_assert!(rtu::crc_ok(&reply) && reply.len() <= MAX_ADU);
        }
    }
}
