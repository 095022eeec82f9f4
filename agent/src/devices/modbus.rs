//! [`DeviceClient`] over tokio-modbus: Modbus TCP, and Modbus RTU on a serial
//! port through tokio-serial.
//!
//! tokio-modbus has no timeouts of its own (issues #12, #113), so every connect
//! and every request is wrapped in `tokio::time::timeout`. After a transport
//! error or a timeout the context (and with it the socket or serial port) is
//! dropped: a half-read RTU reply or a stale TCP stream must not be parsed as
//! the answer to the next request. The next request reconnects; a *failed*
//! connect waits with jittered back-off, so an unplugged USB adapter is retried
//! every few seconds rather than in a tight loop.
//!
//! On RTU the client also keeps the line discipline tokio-modbus leaves out
//! (its codec frames by length, with no timing at all):
//!
//! - **Inter-frame silence.** Frames are separated by at least t3.5, 3.5
//!   character times (Modbus over Serial Line V1.02 §2.5.1.1; a fixed 1.75 ms
//!   above 19200 baud). The port is wrapped so the client knows when the last
//!   byte arrived, and a request is sent no sooner than t3.5 after it: a slave
//!   that times frames would otherwise glue our request to its own reply.
//! - **Broadcast.** tokio-modbus awaits a reply even from unit 0 (issue #331),
//!   which never comes. Writes to unit 0 are therefore framed here (address 0,
//!   the PDU, CRC-16 low byte first) and written straight to the shared port;
//!   nothing is awaited, and the next request waits the frame's wire time plus
//!   the [`TURNAROUND_DELAY`] (§2.4.1). Reads to unit 0 are refused.

use std::{
    borrow::Cow,
    io,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    time::{Instant, sleep_until, timeout},
};
use tokio_modbus::{Request, Response, Slave, client::Context, prelude::*};
use tokio_serial::SerialStream;
use tracing::debug;

use super::{DeviceClient, Exception, ModbusResult, TURNAROUND_DELAY, TransportError, ascii::pdu};
use crate::{
    config::{BusConfig, DataBits, Parity, SerialSettings, StopBits, Transport},
    devices::reconnect::ReconnectGate,
    registers::WriteRequest,
};

/// Shortest time allowed for opening a connection, whatever the request timeout.
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Bits of one RTU character on the wire: start, 8 data, parity (or a second
/// stop bit without parity), stop (Serial Line V1.02 §2.5.1).
pub const RTU_CHAR_BITS: u32 = 11;

/// Wire time of `bytes` RTU characters at `baud` (11 bits each).
pub fn rtu_wire_time(bytes: usize, baud: u32) -> Duration {
    let bits = u64::try_from(bytes)
        .unwrap_or(u64::MAX)
        .saturating_mul(u64::from(RTU_CHAR_BITS));
    Duration::from_nanos(bits.saturating_mul(1_000_000_000) / u64::from(baud.max(1)))
}

/// t3.5, the silence that ends an RTU frame: 3.5 character times, or a fixed
/// 1.75 ms above 19200 baud (Serial Line V1.02 §2.5.1.1).
pub fn rtu_t35(baud: u32) -> Duration {
    if baud > 19200 {
        Duration::from_micros(1750)
    } else {
        // 3.5 × 11 bits = 38.5 bits, in tenths to stay in integers.
        Duration::from_nanos(385 * 100_000_000 / u64::from(baud.max(1)))
    }
}

/// A Modbus master for one bus: one connection, one request at a time.
#[derive(Debug)]
pub struct ModbusClient {
    bus: String,
    transport: Transport,
    timeout: Duration,
    ctx: Option<ContextBox>,
    /// The RTU port, also held (behind the same lock) by `ctx`.
    port: Option<SharedPort>,
    reconnect: ReconnectGate,
    /// After a broadcast: no request before this instant.
    quiet_until: Option<Instant>,
}

/// `Context` is not `Debug`; this wrapper keeps `ModbusClient` debuggable.
struct ContextBox(Context);

impl std::fmt::Debug for ContextBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Context")
    }
}

/// An RTU serial port shared by tokio-modbus's context (one handle) and the
/// client (another, for broadcasts and for the time the last byte arrived).
/// Only one task uses the bus at a time and no lock is held across an
/// `.await`, so a plain mutex is enough.
#[derive(Clone)]
struct SharedPort(Arc<Mutex<PortState>>);

struct PortState {
    port: SerialStream,
    last_rx: Option<Instant>,
}

impl std::fmt::Debug for SharedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedPort")
    }
}

impl SharedPort {
    fn new(port: SerialStream) -> Self {
        SharedPort(Arc::new(Mutex::new(PortState {
            port,
            last_rx: None,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PortState> {
        // Nothing can panic while the lock is held (plain delegation), and a
        // port left mid-operation is dropped by the client on the error anyway.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the last byte was received, if ever.
    fn last_rx(&self) -> Option<Instant> {
        self.state().last_rx
    }
}

impl AsyncRead for SharedPort {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut state = self.state();
        let before = buf.filled().len();
        let result = Pin::new(&mut state.port).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            state.last_rx = Some(Instant::now());
        }
        result
    }
}

impl AsyncWrite for SharedPort {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.state().port).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.state().port).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.state().port).poll_shutdown(cx)
    }
}

impl ModbusClient {
    /// A client for `bus`; nothing is opened until the first request.
    pub fn new(bus: &BusConfig) -> Self {
        ModbusClient {
            bus: bus.name.clone(),
            transport: bus.transport.clone(),
            timeout: bus.timeout,
            ctx: None,
            port: None,
            reconnect: ReconnectGate::default(),
            quiet_until: None,
        }
    }

    fn target(&self) -> String {
        match &self.transport {
            Transport::Tcp { address } => address.clone(),
            Transport::Rtu(s) | Transport::Ascii(s) | Transport::Pop(s) => s.path.clone(),
            Transport::Ouman(_) => self.bus.clone(),
            Transport::ModbusSlave(l) => l.serial.path.clone(),
        }
    }

    /// Baud rate of a serial bus; `None` on TCP (no broadcast, no line timing).
    fn serial_baud(&self) -> Option<u32> {
        match &self.transport {
            Transport::Rtu(s) | Transport::Ascii(s) => Some(s.baud),
            Transport::ModbusSlave(l) => Some(l.serial.baud),
            // Ouman and pop buses get their own clients; this one never opens them.
            Transport::Tcp { .. } | Transport::Ouman(_) | Transport::Pop(_) => None,
        }
    }
}

/// Open the transport. A free function over an owned `Transport` so the future
/// does not borrow the client (whose `Context` is `Send` but not `Sync`).
async fn connect(transport: Transport) -> Result<(Context, Option<SharedPort>), String> {
    match &transport {
        Transport::Tcp { address } => {
            let addr = tokio::net::lookup_host(address.as_str())
                .await
                .map_err(|e| e.to_string())?
                .next()
                .ok_or_else(|| format!("{address} resolves to no address"))?;
            let ctx = tokio_modbus::client::tcp::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            Ok((ctx, None))
        }
        // tokio-modbus has no ASCII; `BusClient` gives those buses an `AsciiClient`.
        Transport::Ascii(_) => Err("an ascii bus needs the ASCII client".into()),
        Transport::Ouman(_) => Err("an ouman bus needs the Ouman client".into()),
        Transport::ModbusSlave(_) => Err("a modbus_slave bus is served, not polled".into()),
        Transport::Pop(_) => Err("a pop bus needs the POP client".into()),
        Transport::Rtu(settings) => {
            let port = SerialStream::open(&port_builder(settings)).map_err(|e| e.to_string())?;
            let shared = SharedPort::new(port);
            Ok((
                tokio_modbus::client::rtu::attach(shared.clone()),
                Some(shared),
            ))
        }
    }
}

impl ModbusClient {
    async fn ensure_connected(&mut self) -> Result<(), TransportError> {
        if self.ctx.is_some() {
            return Ok(());
        }
        let target = self.target();
        self.reconnect.check(&target)?;
        let result = timeout(
            self.timeout.max(MIN_CONNECT_TIMEOUT),
            connect(self.transport.clone()),
        )
        .await;
        match result {
            Ok(Ok((ctx, port))) => {
                self.reconnect.opened(&self.bus, &target);
                self.ctx = Some(ContextBox(ctx));
                self.port = port;
                Ok(())
            }
            Ok(Err(reason)) => Err(self.reconnect.failed(&self.bus, target, reason)),
            Err(_) => Err(self.reconnect.failed(&self.bus, target, "timed out".into())),
        }
    }

    /// Drop the connection (and the port); the next request reconnects.
    fn drop_link(&mut self) {
        self.ctx = None;
        self.port = None;
    }

    /// On RTU, wait until the line has been silent for t3.5 since the last
    /// byte received, and past any turnaround delay after a broadcast.
    async fn wait_for_quiet_line(&mut self) {
        let Some(baud) = self.serial_baud() else {
            return;
        };
        let mut at = self.quiet_until.take();
        if let Some(rx) = self.port.as_ref().and_then(SharedPort::last_rx) {
            let gap_end = rx + rtu_t35(baud);
            at = Some(at.map_or(gap_end, |a| a.max(gap_end)));
        }
        if let Some(at) = at {
            sleep_until(at).await;
        }
    }

    async fn request(&mut self, unit: u8, req: Request<'static>) -> ModbusResult<Response> {
        if unit == 0 && self.serial_baud().is_some() {
            return Err(TransportError::InvalidRequest(format!(
                "{:?} cannot be broadcast: unit 0 takes writes only and never replies",
                req.function_code()
            )));
        }
        let limit = self.timeout;
        self.ensure_connected().await?;
        self.wait_for_quiet_line().await;
        let Some(ContextBox(ctx)) = self.ctx.as_mut() else {
            return Err(TransportError::Io("not connected".into()));
        };
        ctx.set_slave(Slave(unit));
        let outcome = timeout(limit, ctx.call(req)).await;
        match outcome {
            Ok(Ok(Ok(rsp))) => Ok(Ok(rsp)),
            Ok(Ok(Err(code))) => Ok(Err(Exception(code))),
            Ok(Err(e)) => {
                self.drop_link();
                Err(TransportError::Io(e.to_string()))
            }
            Err(_) => {
                self.drop_link();
                Err(TransportError::Timeout(limit))
            }
        }
    }

    /// Send a write and check that the reply echoes it (§6.5, §6.6: the
    /// request itself; §6.11, §6.12: its address and quantity). Unit 0 on a
    /// serial bus is a broadcast.
    async fn write(&mut self, unit: u8, req: WriteRequest) -> ModbusResult<()> {
        req.check()
            .map_err(|e| TransportError::InvalidRequest(e.to_string()))?;
        if unit == 0 && self.serial_baud().is_some() {
            return self.broadcast(&req).await;
        }
        let (request, expect) = match req {
            WriteRequest::SingleCoil { addr, on } => (
                Request::WriteSingleCoil(addr, on),
                Response::WriteSingleCoil(addr, on),
            ),
            WriteRequest::SingleRegister { addr, value } => (
                Request::WriteSingleRegister(addr, value),
                Response::WriteSingleRegister(addr, value),
            ),
            WriteRequest::MultipleCoils { addr, coils } => {
                let n = u16::try_from(coils.len()).unwrap_or(u16::MAX);
                (
                    Request::WriteMultipleCoils(addr, Cow::Owned(coils)),
                    Response::WriteMultipleCoils(addr, n),
                )
            }
            WriteRequest::MultipleRegisters { addr, values } => {
                let n = u16::try_from(values.len()).unwrap_or(u16::MAX);
                (
                    Request::WriteMultipleRegisters(addr, Cow::Owned(values)),
                    Response::WriteMultipleRegisters(addr, n),
                )
            }
        };
        match self.request(unit, request).await? {
            Ok(rsp) if rsp == expect => Ok(Ok(())),
            Ok(rsp) => Err(TransportError::Io(format!(
                "write reply {rsp:?} does not echo the request ({expect:?})"
            ))),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Frame a write for unit 0 ourselves and send it without awaiting a
    /// reply (see the module doc).
    async fn broadcast(&mut self, req: &WriteRequest) -> ModbusResult<()> {
        let baud = self.serial_baud().unwrap_or(9600);
        let adu = rtu_adu(0, &pdu_request(req))?;
        self.ensure_connected().await?;
        self.wait_for_quiet_line().await;
        let Some(mut port) = self.port.clone() else {
            return Err(TransportError::Io("not connected".into()));
        };
        let limit = self.timeout;
        let sent = timeout(limit, async {
            port.write_all(&adu).await?;
            port.flush().await
        })
        .await;
        match sent {
            Ok(Ok(())) => {
                debug!(bus = %self.bus, frame = ?adu, "broadcast sent");
                self.quiet_until =
                    Some(Instant::now() + rtu_wire_time(adu.len(), baud) + TURNAROUND_DELAY);
                Ok(Ok(()))
            }
            Ok(Err(e)) => {
                self.drop_link();
                Err(TransportError::Io(e.to_string()))
            }
            Err(_) => {
                self.drop_link();
                Err(TransportError::Timeout(limit))
            }
        }
    }
}

/// Our write request as the transport-neutral PDU type of [`pdu`].
fn pdu_request(req: &WriteRequest) -> pdu::Request {
    match req.clone() {
        WriteRequest::SingleCoil { addr, on } => pdu::Request::WriteSingleCoil { addr, on },
        WriteRequest::SingleRegister { addr, value } => {
            pdu::Request::WriteSingleRegister { addr, value }
        }
        WriteRequest::MultipleCoils { addr, coils } => {
            pdu::Request::WriteMultipleCoils { addr, coils }
        }
        WriteRequest::MultipleRegisters { addr, values } => {
            pdu::Request::WriteMultipleRegisters { addr, values }
        }
    }
}

/// An RTU ADU: address, PDU, CRC-16/MODBUS low byte first (Serial Line
/// V1.02 §2.5.1.2).
pub fn rtu_adu(address: u8, req: &pdu::Request) -> Result<Vec<u8>, TransportError> {
    let pdu = req
        .encode()
        .map_err(|e| TransportError::InvalidRequest(e.to_string()))?;
    Ok(super::slave::rtu::frame(address, &pdu))
}

fn mismatch(rsp: &Response) -> TransportError {
    TransportError::Io(format!("unexpected response {:?}", rsp.function_code()))
}

impl DeviceClient for ModbusClient {
    async fn read_holding_registers(
        &mut self,
        unit: u8,
        addr: u16,
        count: u16,
    ) -> ModbusResult<Vec<u16>> {
        match self
            .request(unit, Request::ReadHoldingRegisters(addr, count))
            .await?
        {
            Ok(Response::ReadHoldingRegisters(w)) => Ok(Ok(w)),
            Ok(other) => Err(mismatch(&other)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn read_input_registers(
        &mut self,
        unit: u8,
        addr: u16,
        count: u16,
    ) -> ModbusResult<Vec<u16>> {
        match self
            .request(unit, Request::ReadInputRegisters(addr, count))
            .await?
        {
            Ok(Response::ReadInputRegisters(w)) => Ok(Ok(w)),
            Ok(other) => Err(mismatch(&other)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn read_coils(&mut self, unit: u8, addr: u16, count: u16) -> ModbusResult<Vec<bool>> {
        match self.request(unit, Request::ReadCoils(addr, count)).await? {
            // The reply is padded to whole bytes; keep only what was asked for.
            Ok(Response::ReadCoils(mut b)) => {
                b.truncate(usize::from(count));
                Ok(Ok(b))
            }
            Ok(other) => Err(mismatch(&other)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn read_discrete_inputs(
        &mut self,
        unit: u8,
        addr: u16,
        count: u16,
    ) -> ModbusResult<Vec<bool>> {
        match self
            .request(unit, Request::ReadDiscreteInputs(addr, count))
            .await?
        {
            Ok(Response::ReadDiscreteInputs(mut b)) => {
                b.truncate(usize::from(count));
                Ok(Ok(b))
            }
            Ok(other) => Err(mismatch(&other)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn write_single_coil(&mut self, unit: u8, addr: u16, on: bool) -> ModbusResult<()> {
        self.write(unit, WriteRequest::SingleCoil { addr, on })
            .await
    }

    async fn write_single_register(&mut self, unit: u8, addr: u16, value: u16) -> ModbusResult<()> {
        self.write(unit, WriteRequest::SingleRegister { addr, value })
            .await
    }

    async fn write_multiple_coils(
        &mut self,
        unit: u8,
        addr: u16,
        coils: &[bool],
    ) -> ModbusResult<()> {
        let coils = coils.to_vec();
        self.write(unit, WriteRequest::MultipleCoils { addr, coils })
            .await
    }

    async fn write_multiple_registers(
        &mut self,
        unit: u8,
        addr: u16,
        values: &[u16],
    ) -> ModbusResult<()> {
        let values = values.to_vec();
        self.write(unit, WriteRequest::MultipleRegisters { addr, values })
            .await
    }
}

/// The tokio-serial builder for an RTU bus's line settings.
pub fn port_builder(s: &SerialSettings) -> tokio_serial::SerialPortBuilder {
    tokio_serial::new(s.path.as_str(), s.baud)
        .parity(serial_parity(s.parity))
        .data_bits(serial_data_bits(s.data_bits))
        .stop_bits(serial_stop_bits(s.stop_bits))
        .flow_control(tokio_serial::FlowControl::None)
}

/// Our parity setting in tokio-serial's terms.
pub fn serial_parity(p: Parity) -> tokio_serial::Parity {
    match p {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    }
}

/// Our data-bits setting in tokio-serial's terms.
pub fn serial_data_bits(d: DataBits) -> tokio_serial::DataBits {
    match d {
        DataBits::Seven => tokio_serial::DataBits::Seven,
        DataBits::Eight => tokio_serial::DataBits::Eight,
    }
}

/// Our stop-bits setting in tokio-serial's terms.
pub fn serial_stop_bits(s: StopBits) -> tokio_serial::StopBits {
    match s {
        StopBits::One => tokio_serial::StopBits::One,
        StopBits::Two => tokio_serial::StopBits::Two,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ADU of a write to `unit`, hex-free for comparing with the vectors.
    fn adu(unit: u8, req: &WriteRequest) -> Vec<u8> {
        rtu_adu(unit, &pdu_request(req)).unwrap()
    }

    #[test]
    fn write_frames_match_the_spec_vectors() {
        // device-protocols.md §2.7, CRCs low byte first
        // unit 1, FC05 coil 0x00AC ON (0xFF00), CRC 4C 1B
        assert_eq!(
            adu(
                1,
                &WriteRequest::SingleCoil {
                    addr: 0xAC,
                    on: true
                }
            ),
            [0x01, 0x05, 0x00, 0xAC, 0xFF, 0x00, 0x4C, 0x1B]
        );
        // unit 1, FC06 register 1 = 3, CRC 98 0B
        assert_eq!(
            adu(1, &WriteRequest::SingleRegister { addr: 1, value: 3 }),
            [0x01, 0x06, 0x00, 0x01, 0x00, 0x03, 0x98, 0x0B]
        );
        // unit 16, FC06 register 0x0202 = 3, CRC 6A F2 (a public capture)
        assert_eq!(
            adu(
                16,
                &WriteRequest::SingleRegister {
                    addr: 0x0202,
                    value: 3
                }
            ),
            [0x10, 0x06, 0x02, 0x02, 0x00, 0x03, 0x6A, 0xF2]
        );
        // unit 1, FC0F 10 coils from 0x13, 2 bytes CD 01, CRC 72 CB
        let coils: Vec<bool> = "1011001110".chars().map(|c| c == '1').collect();
        assert_eq!(
            adu(1, &WriteRequest::MultipleCoils { addr: 0x13, coils }),
            [
                0x01, 0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01, 0x72, 0xCB
            ]
        );
        // unit 1, FC10 registers 1..2 = 0x000A 0x0102, 4 bytes, CRC 92 30
        assert_eq!(
            adu(
                1,
                &WriteRequest::MultipleRegisters {
                    addr: 1,
                    values: vec![0x000A, 0x0102]
                }
            ),
            [
                0x01, 0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02, 0x92, 0x30
            ]
        );
        // broadcast (unit 0), FC06 register 1 = 3, CRC 99 DA: expect no reply
        assert_eq!(
            adu(0, &WriteRequest::SingleRegister { addr: 1, value: 3 }),
            [0x00, 0x06, 0x00, 0x01, 0x00, 0x03, 0x99, 0xDA]
        );
    }

    /// CRC-16/MODBUS bit by bit (Serial Line V1.02 Appendix B), written here
    /// independently of the `crc` crate the client uses.
    fn crc16(bytes: &[u8]) -> u16 {
        let mut crc: u16 = 0xFFFF;
        for &b in bytes {
            crc ^= u16::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xA001
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    fn write_request() -> impl proptest::strategy::Strategy<Value = WriteRequest> {
        use proptest::prelude::*;
        prop_oneof![
            (any::<u16>(), any::<bool>())
                .prop_map(|(addr, on)| WriteRequest::SingleCoil { addr, on }),
            (any::<u16>(), any::<u16>())
                .prop_map(|(addr, value)| WriteRequest::SingleRegister { addr, value }),
            (
                any::<u16>(),
                proptest::collection::vec(any::<bool>(), 1..=1968)
            )
                .prop_map(|(addr, coils)| WriteRequest::MultipleCoils { addr, coils }),
            (
                any::<u16>(),
                proptest::collection::vec(any::<u16>(), 1..=123)
            )
                .prop_map(|(addr, values)| WriteRequest::MultipleRegisters { addr, values }),
        ]
    }

    proptest::proptest! {
        #[test]
        fn every_write_frame_carries_its_request_and_a_valid_crc(
            unit in proptest::prelude::any::<u8>(),
            req in write_request(),
        ) {
            let adu = adu(unit, &req);
            // §2.5.1: at most 256 bytes; CRC low byte first
            proptest::prop_assert!(adu.len() <= 256);
            let (body, crc) = adu.split_at(adu.len() - 2);
            proptest::prop_assert_eq!(u16::from_le_bytes([crc[0], crc[1]]), crc16(body));
            proptest::prop_assert_eq!(body[0], unit);
            proptest::prop_assert_eq!(pdu::Request::decode(&body[1..]).unwrap(), pdu_request(&req));
        }
    }

    #[test]
    fn rtu_timing_follows_the_serial_line_spec() {
        // §2.5.1.1 table: one 11-bit character at 9600 baud is 1.146 ms, t3.5 4.010 ms
        assert_eq!(rtu_wire_time(1, 9600), Duration::from_nanos(1_145_833));
        assert_eq!(rtu_t35(9600), Duration::from_nanos(4_010_416));
        assert_eq!(rtu_t35(19200), Duration::from_nanos(2_005_208));
        assert_eq!(rtu_t35(1200), Duration::from_nanos(32_083_333));
        // above 19200 baud a fixed 1.75 ms
        assert_eq!(rtu_t35(38400), Duration::from_micros(1750));
        assert_eq!(rtu_t35(115_200), Duration::from_micros(1750));
        // an 8-byte request + 61-byte reply: 69 × 11 / 9600 s
        assert_eq!(rtu_wire_time(69, 9600), Duration::from_nanos(79_062_500));
    }

    #[tokio::test]
    async fn writes_beyond_the_spec_limits_are_refused_before_connecting() {
        // The port does not exist: an attempt to send would be a connect error.
        let mut c = ModbusClient::new(&missing_port_bus());
        let refused = |r: ModbusResult<()>| matches!(r, Err(TransportError::InvalidRequest(_)));
        assert!(refused(c.write_multiple_registers(1, 0, &[0; 124]).await));
        assert!(refused(c.write_multiple_registers(1, 0, &[]).await));
        assert!(refused(c.write_multiple_coils(1, 0, &[true; 1969]).await));
        assert!(refused(c.write_multiple_registers(1, 65535, &[1, 2]).await));
        // reads to the broadcast address never get a reply: refused too
        assert!(matches!(
            c.read_holding_registers(0, 0, 1).await,
            Err(TransportError::InvalidRequest(_))
        ));
        // and none of that touched the port
        assert!(matches!(
            c.write_single_register(1, 0, 1).await,
            Err(TransportError::Connect { .. })
        ));
    }

    #[test]
    fn every_parity_maps_to_the_same_serial_parity() {
        assert_eq!(serial_parity(Parity::None), tokio_serial::Parity::None);
        assert_eq!(serial_parity(Parity::Even), tokio_serial::Parity::Even);
        assert_eq!(serial_parity(Parity::Odd), tokio_serial::Parity::Odd);
        assert_eq!(
            serial_data_bits(DataBits::Seven),
            tokio_serial::DataBits::Seven
        );
        assert_eq!(serial_stop_bits(StopBits::Two), tokio_serial::StopBits::Two);
    }

    #[test]
    fn the_port_builder_carries_every_line_setting() {
        // A pty ignores parity (the kernel clears PARENB on it; pymodbus even
        // fails there), so the settings are checked on the builder itself.
        for (parity, data_bits, stop_bits) in [
            (Parity::Even, DataBits::Eight, StopBits::One),
            (Parity::Odd, DataBits::Seven, StopBits::Two),
            (Parity::None, DataBits::Eight, StopBits::Two),
        ] {
            let s = SerialSettings {
                path: "/dev/ttyUSB0".into(),
                baud: 19200,
                parity,
                data_bits,
                stop_bits,
            };
            let expected = tokio_serial::new("/dev/ttyUSB0", 19200)
                .parity(serial_parity(parity))
                .data_bits(serial_data_bits(data_bits))
                .stop_bits(serial_stop_bits(stop_bits))
                .flow_control(tokio_serial::FlowControl::None);
            assert_eq!(port_builder(&s), expected);
            let other = tokio_serial::new("/dev/ttyUSB0", 19200)
                .parity(tokio_serial::Parity::Even)
                .stop_bits(tokio_serial::StopBits::One);
            assert_eq!(
                port_builder(&s) == other,
                parity == Parity::Even
                    && stop_bits == StopBits::One
                    && data_bits == DataBits::Eight
            );
        }
    }

    fn missing_port_bus() -> BusConfig {
        BusConfig {
            name: "rs485".into(),
            transport: Transport::Rtu(SerialSettings {
                path: "/nonexistent/ttyUSB9".into(),
                baud: 9600,
                parity: Parity::Even,
                data_bits: DataBits::Eight,
                stop_bits: StopBits::One,
            }),
            timeout: Duration::from_millis(100),
            max_gap: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reconnect_attempts_back_off_from_half_a_second_to_thirty() {
        let mut c = ModbusClient::new(&missing_port_bus());
        let mut waits = Vec::new();
        for _ in 0..9 {
            assert!(matches!(
                c.read_holding_registers(1, 0, 1).await,
                Err(TransportError::Connect { .. })
            ));
            let Err(TransportError::Reconnecting { retry_in, .. }) =
                c.read_holding_registers(1, 0, 1).await
            else {
                panic!("expected to wait before reconnecting")
            };
            waits.push(retry_in);
            tokio::time::advance(retry_in).await;
        }
        let ceilings = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
        for (w, c) in waits.iter().zip(ceilings) {
            let c = Duration::from_millis(c);
            assert!(
                *w >= c / 2 && *w <= c,
                "{w:?} not within [{:?}, {c:?}]",
                c / 2
            );
        }
    }

    #[tokio::test]
    async fn a_missing_serial_port_is_a_connect_error_then_waits_before_retrying() {
        let bus = missing_port_bus();
        let mut c = ModbusClient::new(&bus);
        assert!(matches!(
            c.read_holding_registers(1, 0, 1).await,
            Err(TransportError::Connect { .. })
        ));
        assert!(matches!(
            c.read_holding_registers(1, 0, 1).await,
            Err(TransportError::Reconnecting { .. })
        ));
    }
}
