//! Modbus ASCII master (Modbus over Serial Line V1.02 §2.5.2), which
//! tokio-modbus 0.17 does not implement.
//!
//! Three layers, pure to I/O: [`pdu`] encodes and decodes request and response
//! PDUs with the spec's limits, [`codec`] frames them as `':' hex LRC CRLF`
//! (a `tokio_util` codec), and [`AsciiClient`] runs one request at a time over
//! any `AsyncRead + AsyncWrite` (a `tokio_serial::SerialStream` in production)
//! and implements [`DeviceClient`].
//!
//! Errors split as in the RTU client: a timeout, I/O error, bad frame or a
//! reply from the wrong unit or for the wrong function is a
//! [`TransportError`]; an exception reply is the inner [`Exception`].

pub mod codec;
pub mod pdu;

use std::{fmt, future::poll_fn, io, pin::Pin, task::Poll, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    time::{Instant, sleep_until, timeout},
};
use tokio_serial::SerialStream;
use tokio_util::{
    bytes::BytesMut,
    codec::{Decoder as _, Encoder as _},
};
use tracing::debug;

use self::{
    codec::{AsciiCodec, AsciiFrame},
    pdu::{Request, Response},
};
use super::{DeviceClient, Exception, ModbusResult, TransportError, check_write};
use crate::{
    config::{BusConfig, Transport},
    devices::modbus::port_builder,
    devices::reconnect::ReconnectGate,
};

pub use super::TURNAROUND_DELAY;

type Opener<T> = Box<dyn Fn() -> io::Result<T> + Send>;

/// A Modbus ASCII master for one bus: one request at a time, every request
/// under the bus timeout, input discarded before each request.
///
/// Built with [`AsciiClient::new`] it opens the serial port on first use and
/// reopens it with jittered back-off after an I/O error. Built with
/// [`AsciiClient::attach`] it uses the given stream and cannot reopen it.
pub struct AsciiClient<T = SerialStream> {
    bus: String,
    target: String,
    timeout: Duration,
    open: Option<Opener<T>>,
    io: Option<T>,
    buf: BytesMut,
    reconnect: ReconnectGate,
    quiet_until: Option<Instant>,
}

impl<T> fmt::Debug for AsciiClient<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsciiClient")
            .field("bus", &self.bus)
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .field("connected", &self.io.is_some())
            .finish_non_exhaustive()
    }
}

impl AsciiClient<SerialStream> {
    /// A client for an ASCII serial bus; the port is opened on the first request.
    /// A bus of another kind gets a client that reports a connect error on every request.
    pub fn new(bus: &BusConfig) -> Self {
        let settings = match &bus.transport {
            Transport::Ascii(s) => Some(s.clone()),
            _ => None,
        };
        let target = settings
            .as_ref()
            .map_or_else(|| bus.name.clone(), |s| s.path.clone());
        let open: Opener<SerialStream> = Box::new(move || match &settings {
            Some(s) => SerialStream::open(&port_builder(s)).map_err(io::Error::from),
            None => Err(io::Error::other("not an ascii bus")),
        });
        AsciiClient {
            open: Some(open),
            ..AsciiClient::with(bus.name.clone(), target, bus.timeout)
        }
    }
}

impl<T> AsciiClient<T> {
    fn with(bus: String, target: String, timeout: Duration) -> Self {
        AsciiClient {
            bus,
            target,
            timeout,
            open: None,
            io: None,
            buf: BytesMut::with_capacity(codec::MAX_FRAME_CHARS),
            reconnect: ReconnectGate::default(),
            quiet_until: None,
        }
    }

    /// A client over an already open stream (a pty, a `tokio::io::duplex` in
    /// tests). After an I/O error the stream is dropped and every later
    /// request fails with a connect error.
    pub fn attach(io: T, timeout: Duration) -> Self {
        AsciiClient {
            io: Some(io),
            ..AsciiClient::with("ascii".into(), "attached stream".into(), timeout)
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsciiClient<T> {
    fn ensure_open(&mut self) -> Result<(), TransportError> {
        if self.io.is_some() {
            return Ok(());
        }
        let target = self.target.clone();
        let Some(open) = &self.open else {
            return Err(TransportError::Connect {
                target,
                reason: "the attached stream was closed after an error".into(),
            });
        };
        self.reconnect.check(&target)?;
        // Opening a serial port is a synchronous syscall that does not wait
        // for the line, so unlike a TCP connect it needs no timeout of its own.
        match open() {
            Ok(io) => {
                self.reconnect.opened(&self.bus, &target);
                self.io = Some(io);
                Ok(())
            }
            Err(e) => Err(self.reconnect.failed(&self.bus, target, e.to_string())),
        }
    }

    /// Send `req` to `unit` and wait for its reply. Unit 0 is a broadcast:
    /// only writes are allowed, nothing is awaited, and `Ok(None)` comes back.
    pub async fn call(&mut self, unit: u8, req: &Request) -> ModbusResult<Option<Response>> {
        if unit == 0 && !req.is_write() {
            return Err(TransportError::InvalidRequest(format!(
                "function 0x{:02X} cannot be broadcast (unit 0 takes writes only)",
                req.function()
            )));
        }
        let pdu = req
            .encode()
            .map_err(|e| TransportError::InvalidRequest(e.to_string()))?;
        let mut wire = BytesMut::new();
        AsciiCodec
            .encode(&AsciiFrame { address: unit, pdu }, &mut wire)
            .map_err(|e| TransportError::InvalidRequest(e.to_string()))?;
        self.ensure_open()?;
        if let Some(at) = self.quiet_until.take() {
            sleep_until(at).await;
        }
        let limit = self.timeout;
        let outcome = timeout(limit, self.exchange(unit, req.function(), &wire)).await;
        match outcome {
            Ok(Ok(Some(frame))) => match Response::decode(&frame.pdu) {
                Ok(Response::Exception(e)) => Ok(Err(Exception(e.code))),
                Ok(rsp) => Ok(Ok(Some(rsp))),
                Err(e) => Err(TransportError::Io(format!("bad reply: {e}"))),
            },
            Ok(Ok(None)) => {
                self.quiet_until = Some(Instant::now() + TURNAROUND_DELAY);
                Ok(Ok(None))
            }
            Ok(Err(Failure::Io(e))) => {
                // The port itself failed: drop it; a serial bus reopens it on
                // the next request (after back-off if that fails).
                self.io = None;
                Err(TransportError::Io(e.to_string()))
            }
            // A bad or mismatched frame: the port stays open and the next
            // request discards what is left of it.
            Ok(Err(Failure::Protocol(msg))) => Err(TransportError::Io(msg)),
            // The port stays open: the next request discards whatever
            // arrives late, so a stale reply cannot answer it.
            Err(_) => Err(TransportError::Timeout(limit)),
        }
    }

    /// Discard input, write `wire`, and (unless broadcast) read one frame
    /// and check it comes from `unit` for `function`.
    async fn exchange(
        &mut self,
        unit: u8,
        function: u8,
        wire: &[u8],
    ) -> Result<Option<AsciiFrame>, Failure> {
        let io_err = Failure::Io;
        let Some(io) = self.io.as_mut() else {
            return Err(Failure::Protocol("not connected".into()));
        };
        self.buf.clear();
        let dropped = discard_input(io).await.map_err(io_err)?;
        if dropped > 0 {
            debug!(bus = %self.bus, dropped, "discarded stale input before a request");
        }
        io.write_all(wire).await.map_err(io_err)?;
        io.flush().await.map_err(io_err)?;
        if unit == 0 {
            return Ok(None);
        }
        loop {
            match AsciiCodec.decode(&mut self.buf) {
                Ok(Some(frame)) => {
                    if frame.address != unit {
                        return Err(Failure::Protocol(format!(
                            "reply from unit {} to a request for unit {unit}",
                            frame.address
                        )));
                    }
                    if frame.pdu.first().map(|f| f & 0x7F) != Some(function) {
                        return Err(Failure::Protocol(format!(
                            "reply for function {:02X?} to a request for 0x{function:02X}",
                            frame.pdu.first()
                        )));
                    }
                    return Ok(Some(frame));
                }
                Ok(None) => {}
                Err(e) => return Err(Failure::Protocol(e.to_string())),
            }
            let n = io.read_buf(&mut self.buf).await.map_err(io_err)?;
            if n == 0 {
                return Err(Failure::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    async fn write(&mut self, unit: u8, req: &Request, expect: Response) -> ModbusResult<()> {
        match self.call(unit, req).await? {
            Ok(None) => Ok(Ok(())),
            Ok(Some(rsp)) if rsp == expect => Ok(Ok(())),
            Ok(Some(rsp)) => Err(TransportError::Io(format!(
                "write reply {rsp:?} does not echo the request"
            ))),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn read_words(&mut self, unit: u8, req: Request, count: u16) -> ModbusResult<Vec<u16>> {
        match self.call(unit, &req).await? {
            Ok(Some(Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w)))
                if w.len() == usize::from(count) =>
            {
                Ok(Ok(w))
            }
            Ok(other) => Err(TransportError::Io(format!(
                "unexpected reply {other:?} to {req:?}"
            ))),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn read_bits(&mut self, unit: u8, req: Request, count: u16) -> ModbusResult<Vec<bool>> {
        match self.call(unit, &req).await? {
            // The reply is padded to whole bytes; keep only what was asked for.
            Ok(Some(Response::ReadCoils(mut b) | Response::ReadDiscreteInputs(mut b)))
                if b.len() == usize::from(count).div_ceil(8) * 8 =>
            {
                b.truncate(usize::from(count));
                Ok(Ok(b))
            }
            Ok(other) => Err(TransportError::Io(format!(
                "unexpected reply {other:?} to {req:?}"
            ))),
            Err(e) => Ok(Err(e)),
        }
    }
}

/// How one exchange failed: the stream itself, or what came over it.
enum Failure {
    Io(io::Error),
    Protocol(String),
}

/// Read and drop whatever is already buffered, without waiting for more.
pub(crate) async fn discard_input<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<usize> {
    let mut scratch = [0u8; 256];
    let mut total = 0;
    loop {
        let n = poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Ready(Ok(0)),
            }
        })
        .await?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> DeviceClient for AsciiClient<T> {
    async fn read_holding_registers(
        &mut self,
        unit: u8,
        addr: u16,
        count: u16,
    ) -> ModbusResult<Vec<u16>> {
        self.read_words(unit, Request::ReadHoldingRegisters { addr, count }, count)
            .await
    }

    async fn read_input_registers(
        &mut self,
        unit: u8,
        addr: u16,
        count: u16,
    ) -> ModbusResult<Vec<u16>> {
        self.read_words(unit, Request::ReadInputRegisters { addr, count }, count)
            .await
    }

    async fn read_coils(&mut self, unit: u8, addr: u16, count: u16) -> ModbusResult<Vec<bool>> {
        self.read_bits(unit, Request::ReadCoils { addr, count }, count)
            .await
    }

    async fn read_discrete_inputs(
        &mut self,
        unit: u8,
        addr: u16,
        count: u16,
    ) -> ModbusResult<Vec<bool>> {
        self.read_bits(unit, Request::ReadDiscreteInputs { addr, count }, count)
            .await
    }

    /// FC05 (unit 0 broadcasts and returns `Ok(Ok(()))` without waiting).
    async fn write_single_coil(&mut self, unit: u8, addr: u16, on: bool) -> ModbusResult<()> {
        let req = Request::WriteSingleCoil { addr, on };
        let expect = Response::WriteSingleCoil { addr, on };
        self.write(unit, &req, expect).await
    }

    /// FC06 (unit 0 broadcasts).
    async fn write_single_register(&mut self, unit: u8, addr: u16, value: u16) -> ModbusResult<()> {
        let req = Request::WriteSingleRegister { addr, value };
        let expect = Response::WriteSingleRegister { addr, value };
        self.write(unit, &req, expect).await
    }

    /// FC0F (unit 0 broadcasts).
    async fn write_multiple_coils(
        &mut self,
        unit: u8,
        addr: u16,
        coils: &[bool],
    ) -> ModbusResult<()> {
        check_write(0x0F, addr, coils.len())?;
        let count = u16::try_from(coils.len()).unwrap_or(u16::MAX);
        let req = Request::WriteMultipleCoils {
            addr,
            coils: coils.to_vec(),
        };
        self.write(unit, &req, Response::WriteMultipleCoils { addr, count })
            .await
    }

    /// FC10 (unit 0 broadcasts).
    async fn write_multiple_registers(
        &mut self,
        unit: u8,
        addr: u16,
        values: &[u16],
    ) -> ModbusResult<()> {
        check_write(0x10, addr, values.len())?;
        let count = u16::try_from(values.len()).unwrap_or(u16::MAX);
        let req = Request::WriteMultipleRegisters {
            addr,
            values: values.to_vec(),
        };
        self.write(unit, &req, Response::WriteMultipleRegisters { addr, count })
            .await
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{DuplexStream, duplex};
    use tokio_modbus::ExceptionCode;

    use super::*;

    /// The slave end of a duplex line: reads one request frame at a time.
    struct Slave {
        io: DuplexStream,
        buf: BytesMut,
    }

    impl Slave {
        async fn request(&mut self) -> AsciiFrame {
            loop {
                if let Some(f) = AsciiCodec.decode(&mut self.buf).unwrap() {
                    return f;
                }
                assert!(self.io.read_buf(&mut self.buf).await.unwrap() > 0);
            }
        }

        async fn send(&mut self, wire: &[u8]) {
            self.io.write_all(wire).await.unwrap();
        }

        async fn reply(&mut self, address: u8, rsp: &Response) {
            let mut wire = BytesMut::new();
            AsciiCodec
                .encode(
                    &AsciiFrame {
                        address,
                        pdu: rsp.encode().unwrap(),
                    },
                    &mut wire,
                )
                .unwrap();
            self.send(&wire).await;
        }
    }

    fn line(timeout: Duration) -> (AsciiClient<DuplexStream>, Slave) {
        let (a, b) = duplex(1024);
        (
            AsciiClient::attach(a, timeout),
            Slave {
                io: b,
                buf: BytesMut::new(),
            },
        )
    }

    #[tokio::test]
    async fn a_read_sends_the_spec_frame_and_returns_the_registers() {
        let (mut c, mut s) = line(Duration::from_secs(1));
        let slave = tokio::spawn(async move {
            let mut raw = BytesMut::new();
            // unit 17, FC03 read 3 from 0x006B, LRC 7E: byte for byte
            while raw.len() < 17 {
                s.io.read_buf(&mut raw).await.unwrap();
            }
            assert_eq!(&raw[..], b":1103006B00037E\r\n");
            // unit 17, FC03, 6 bytes: 0xAE41 0x5652 0x4340 (§6.3 example)
            s.reply(
                0x11,
                &Response::ReadHoldingRegisters(vec![0xAE41, 0x5652, 0x4340]),
            )
            .await;
            s
        });
        let words = c
            .read_holding_registers(0x11, 0x6B, 3)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(words, [0xAE41, 0x5652, 0x4340]);
        slave.await.unwrap();
    }

    #[tokio::test]
    async fn coil_reads_are_truncated_to_the_requested_count() {
        let (mut c, mut s) = line(Duration::from_secs(1));
        tokio::spawn(async move {
            s.request().await;
            // FC01 19 coils from 0x13: CD 6B 05 (§6.1)
            s.reply(
                1,
                &Response::ReadCoils(pdu::unpack_bits(&[0xCD, 0x6B, 0x05])),
            )
            .await;
        });
        let bits = c.read_coils(1, 0x13, 19).await.unwrap().unwrap();
        let expect: Vec<bool> = "1011001111010110101".chars().map(|c| c == '1').collect();
        assert_eq!(bits, expect);
    }

    #[tokio::test]
    async fn an_exception_reply_is_a_device_exception_not_a_transport_error() {
        let (mut c, mut s) = line(Duration::from_secs(1));
        tokio::spawn(async move {
            s.request().await;
            // unit 1, 0x83 02: FC03 ILLEGAL DATA ADDRESS, LRC 7A
            s.send(b":0183027A\r\n").await;
        });
        let got = c.read_holding_registers(1, 0, 5).await;
        assert_eq!(got, Ok(Err(Exception(ExceptionCode::IllegalDataAddress))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_unit_times_out_and_the_line_still_works_afterwards() {
        let (mut c, mut s) = line(Duration::from_millis(300));
        let slave = tokio::spawn(async move {
            s.request().await; // unit 9: nobody answers
            let req = s.request().await;
            assert_eq!(req.address, 1);
            s.reply(1, &Response::ReadInputRegisters(vec![10])).await;
            s
        });
        assert_eq!(
            c.read_input_registers(9, 8, 1).await,
            Err(TransportError::Timeout(Duration::from_millis(300)))
        );
        assert_eq!(c.read_input_registers(1, 8, 1).await, Ok(Ok(vec![10])));
        slave.await.unwrap();
    }

    #[tokio::test]
    async fn a_reply_from_another_unit_or_function_is_a_transport_error() {
        let (mut c, mut s) = line(Duration::from_secs(1));
        tokio::spawn(async move {
            s.request().await;
            // unit 2 answers a request for unit 1
            s.reply(2, &Response::ReadHoldingRegisters(vec![1])).await;
            s.request().await;
            // FC04 reply to an FC03 request
            s.reply(1, &Response::ReadInputRegisters(vec![1])).await;
            s.request().await;
            // FC03 reply with 2 registers to a request for 1
            s.reply(1, &Response::ReadHoldingRegisters(vec![1, 2]))
                .await;
            s.request().await;
            // wrong LRC (FC instead of FB)
            s.send(b":010300000001FC\r\n").await;
            s
        });
        for _ in 0..4 {
            let got = c.read_holding_registers(1, 0, 1).await;
            assert!(matches!(got, Err(TransportError::Io(_))), "{got:?}");
        }
    }

    #[tokio::test]
    async fn stale_input_is_discarded_before_a_request() {
        let (mut c, mut s) = line(Duration::from_secs(1));
        // a late reply to an earlier request is already waiting on the line
        s.reply(1, &Response::ReadHoldingRegisters(vec![0xDEAD]))
            .await;
        tokio::task::yield_now().await;
        let slave = tokio::spawn(async move {
            s.request().await;
            s.reply(1, &Response::ReadHoldingRegisters(vec![42])).await;
            s
        });
        assert_eq!(c.read_holding_registers(1, 0, 1).await, Ok(Ok(vec![42])));
        slave.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_broadcast_write_is_not_awaited_and_reads_cannot_be_broadcast() {
        let (mut c, mut s) = line(Duration::from_secs(1));
        // unit 0 FC06 register 1 = 3; nobody will ever answer
        assert_eq!(c.write_single_register(0, 1, 3).await, Ok(Ok(())));
        let req = s.request().await;
        assert_eq!(
            (req.address, req.pdu),
            (0, vec![0x06, 0x00, 0x01, 0x00, 0x03])
        );
        assert!(matches!(
            c.read_holding_registers(0, 0, 1).await,
            Err(TransportError::InvalidRequest(_))
        ));
    }

    #[tokio::test]
    async fn writes_check_the_echo() {
        let (mut c, mut s) = line(Duration::from_secs(1));
        tokio::spawn(async move {
            let req = s.request().await;
            // FC05 coil 0xAC ON, echoed
            assert_eq!(req.pdu, [0x05, 0x00, 0xAC, 0xFF, 0x00]);
            s.reply(
                1,
                &Response::WriteSingleCoil {
                    addr: 0xAC,
                    on: true,
                },
            )
            .await;
            s.request().await;
            // FC10 reply naming 1 register where 2 were written
            s.reply(1, &Response::WriteMultipleRegisters { addr: 1, count: 1 })
                .await;
        });
        assert_eq!(c.write_single_coil(1, 0xAC, true).await, Ok(Ok(())));
        assert!(matches!(
            c.write_multiple_registers(1, 1, &[10, 258]).await,
            Err(TransportError::Io(_))
        ));
    }

    #[tokio::test]
    async fn writes_beyond_the_spec_limits_are_refused_and_nothing_is_sent() {
        let (mut c, mut s) = line(Duration::from_secs(1));
        let refused = |r: ModbusResult<()>| matches!(r, Err(TransportError::InvalidRequest(_)));
        // §6.12: at most 123 registers; §6.11: at most 1968 coils; none past 65535
        assert!(refused(c.write_multiple_registers(1, 0, &[7; 124]).await));
        assert!(refused(c.write_multiple_coils(1, 0, &[true; 1969]).await));
        assert!(refused(c.write_multiple_coils(1, 0, &[]).await));
        assert!(refused(c.write_multiple_registers(1, 65535, &[1, 2]).await));
        let slave = tokio::spawn(async move {
            // The first frame on the line is the valid write that follows.
            let req = s.request().await;
            assert_eq!(req.pdu, [0x06, 0x00, 0x01, 0x00, 0x03]);
            s.reply(1, &Response::WriteSingleRegister { addr: 1, value: 3 })
                .await;
        });
        assert_eq!(c.write_single_register(1, 1, 3).await, Ok(Ok(())));
        slave.await.unwrap();
    }

    #[tokio::test]
    async fn a_closed_line_is_an_io_error_and_an_attached_stream_is_not_reopened() {
        let (mut c, s) = line(Duration::from_secs(1));
        drop(s);
        assert!(matches!(
            c.read_coils(1, 0, 1).await,
            Err(TransportError::Io(_))
        ));
        assert!(matches!(
            c.read_coils(1, 0, 1).await,
            Err(TransportError::Connect { .. })
        ));
    }

    #[test]
    fn an_ascii_bus_opens_its_port_7e1_by_default() {
        // A pty cannot carry parity (stack-notes pitfall 12), so the line
        // settings are checked on the builder the client opens the port with.
        let text = r#"[server]
url = "ws://127.0.0.1:8080/agent/v1/ws"
agent_id = "0b6f3c1e-8a5b-4c1d-9e2f-3a4b5c6d7e8f"
secret = "not-the-placeholder"
[[bus]]
name = "ascii"
kind = "ascii"
path = "/dev/ttyUSB1"
baud = 19200
"#;
        let cfg = crate::config::AgentConfig::from_toml("a.toml", text, std::path::Path::new("."))
            .unwrap();
        let Transport::Ascii(s) = &cfg.buses[0].transport else {
            panic!("an ascii bus")
        };
        let expected = tokio_serial::new("/dev/ttyUSB1", 19200)
            .data_bits(tokio_serial::DataBits::Seven)
            .parity(tokio_serial::Parity::Even)
            .stop_bits(tokio_serial::StopBits::One)
            .flow_control(tokio_serial::FlowControl::None);
        assert_eq!(port_builder(s), expected);
    }

    #[tokio::test]
    async fn a_missing_serial_port_is_a_connect_error_then_waits_before_retrying() {
        let bus = BusConfig {
            name: "ascii".into(),
            transport: Transport::Ascii(crate::config::SerialSettings {
                path: "/nonexistent/ttyUSB9".into(),
                baud: 9600,
                parity: crate::config::Parity::Even,
                data_bits: crate::config::DataBits::Seven,
                stop_bits: crate::config::StopBits::One,
            }),
            timeout: Duration::from_millis(100),
            max_gap: 0,
        };
        let mut c = AsciiClient::new(&bus);
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
