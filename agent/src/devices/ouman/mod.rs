//! The Ouman EH-203 native serial protocol: the controller's own RS-232 port,
//! 4800 baud 8N1, one request and one reply at a time
//! (shared/reference/device-protocols.md §1.3).
//!
//! Three layers: [`codec`] frames and checksums (pure), [`OumanClient`] runs
//! requests over a serial port or over TCP to an RS-232-to-Ethernet serial
//! server (timeouts, retries, stale-byte flushing, reopening after I/O errors
//! with back-off), and [`OumanDriver`] is the poller's [`crate::poller::BusDriver`]:
//! it reads each needed data block once per poll and decodes the profile's
//! points from it ([`crate::registers::ouman`]).
//!
//! Errors follow STYLE.md §3: a silent controller, a broken link or a reply
//! that never arrives intact is a transport problem (retried here, then the
//! device goes offline through `CommState`); a block too short for a point is
//! a configuration problem reported for that point.

pub mod codec;
pub mod driver;

use std::{fmt, io, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    time::{Instant, timeout},
};
use tracing::{debug, warn};

use self::codec::{CodecError, Command, Frame, FrameDecoder, expect_reply};
pub use self::driver::OumanDriver;
use super::{TransportError, ascii::discard_input, modbus::port_builder};
use crate::{
    config::{BusConfig, OumanLink, SerialSettings, Transport},
    devices::reconnect::ReconnectGate,
    registers::ouman::DataId,
};

/// Tries per read (the first and two retries): one garbled reply on a long
/// RS-232 cable should not cost a poll.
pub const ATTEMPTS: u32 = 3;
/// Shortest time allowed for a TCP connect, whatever the request timeout.
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A byte stream to the controller: a serial port, a TCP socket, or (tests)
/// anything else that reads and writes.
trait Link: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Link for T {}

/// Where the client's link comes from.
#[derive(Debug, Clone)]
enum Endpoint {
    Serial(SerialSettings),
    Tcp(String),
    /// A stream handed in by [`OumanClient::attach`]; never reopened.
    Attached,
    /// A bus of another kind (a wiring mistake): every request fails.
    Wrong,
}

/// Why a request got no usable answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OumanError {
    /// The link failed, could not be opened, or the controller stayed silent.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Bytes came back, but never the intact reply asked for.
    #[error("no valid reply for data ID {id} in {attempts} attempt(s): {last}")]
    BadReply {
        /// The data ID asked for.
        id: DataId,
        /// Attempts made.
        attempts: u32,
        /// The last thing wrong with what arrived.
        last: CodecError,
    },
    /// The request itself cannot be framed (data too long).
    #[error("request not sent: {0}")]
    Encode(CodecError),
}

/// How one attempt ended, when it did not bring the reply.
enum Miss {
    /// The stream failed: drop it.
    Io(io::Error),
    /// Nothing intact arrived in time; the last decode problem, if any.
    Silent(Option<CodecError>),
}

/// A client for one Ouman controller: one request at a time, each under the
/// bus timeout, input discarded before each request.
///
/// Built with [`OumanClient::new`] it opens the serial port or TCP connection
/// on first use and reopens it with jittered back-off after an I/O error (an
/// adapter unplugged and plugged back, a serial server rebooted). Built with
/// [`OumanClient::attach`] it uses the given stream and cannot reopen it.
pub struct OumanClient {
    bus: String,
    target: String,
    endpoint: Endpoint,
    timeout: Duration,
    io: Option<Box<dyn Link>>,
    decoder: FrameDecoder,
    reconnect: ReconnectGate,
}

impl fmt::Debug for OumanClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OumanClient")
            .field("bus", &self.bus)
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .field("connected", &self.io.is_some())
            .finish_non_exhaustive()
    }
}

impl OumanClient {
    /// A client for an `ouman` bus; nothing is opened until the first request.
    /// A bus of another kind gets a client that reports a connect error on
    /// every request.
    pub fn new(bus: &BusConfig) -> Self {
        let (endpoint, target) = match &bus.transport {
            Transport::Ouman(OumanLink::Serial(s)) => (Endpoint::Serial(s.clone()), s.path.clone()),
            Transport::Ouman(OumanLink::Tcp { address }) => {
                (Endpoint::Tcp(address.clone()), address.clone())
            }
            _ => (Endpoint::Wrong, bus.name.clone()),
        };
        OumanClient::with(bus.name.clone(), target, endpoint, bus.timeout, None)
    }

    /// A client over an already open stream (a `tokio::io::duplex` in tests).
    /// After an I/O error the stream is dropped and every later request
    /// fails with a connect error.
    pub fn attach<T>(io: T, timeout: Duration) -> Self
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let io: Box<dyn Link> = Box::new(io);
        OumanClient::with(
            "ouman".into(),
            "attached stream".into(),
            Endpoint::Attached,
            timeout,
            Some(io),
        )
    }

    fn with(
        bus: String,
        target: String,
        endpoint: Endpoint,
        timeout: Duration,
        io: Option<Box<dyn Link>>,
    ) -> Self {
        OumanClient {
            bus,
            target,
            endpoint,
            timeout,
            io,
            decoder: FrameDecoder::new(),
            reconnect: ReconnectGate::default(),
        }
    }

    /// Read the data block of `id`: up to [`ATTEMPTS`] tries, each within
    /// the bus timeout. Returns the block's data bytes (after the ID).
    pub async fn read(&mut self, id: DataId) -> Result<Vec<u8>, OumanError> {
        let wire = Frame::read(id).encode().map_err(OumanError::Encode)?;
        let mut last = None;
        for attempt in 1..=ATTEMPTS {
            match self.attempt(&wire, id).await? {
                Ok(frame) => return Ok(frame.data),
                Err(problem) => {
                    debug!(bus = %self.bus, %id, attempt, ?problem, "no valid reply");
                    last = problem;
                }
            }
        }
        Err(match last {
            Some(last) => OumanError::BadReply {
                id,
                attempts: ATTEMPTS,
                last,
            },
            None => TransportError::Timeout(self.timeout).into(),
        })
    }

    /// Send a whole block to `id` with a write (`82`) frame, once, and wait
    /// for the controller's reply. `Ok(true)` when it answered with a reply
    /// for `id`, `Ok(false)` when nothing intact came back in time: the
    /// protocol documents no acknowledgement, so the caller verifies by
    /// reading the block back either way.
    pub async fn write_block(&mut self, id: DataId, data: &[u8]) -> Result<bool, OumanError> {
        let frame = Frame {
            command: Command::Write,
            id,
            data: data.to_vec(),
        };
        let wire = frame.encode().map_err(OumanError::Encode)?;
        Ok(self.attempt(&wire, id).await?.is_ok())
    }

    /// One exchange: open if needed, flush stale input, send `wire`, wait for
    /// the reply for `id`. The outer error means the link is gone (or cannot
    /// be opened); the inner one that this attempt got no intact reply.
    async fn attempt(
        &mut self,
        wire: &[u8],
        id: DataId,
    ) -> Result<Result<Frame, Option<CodecError>>, TransportError> {
        self.ensure_open().await?;
        let limit = self.timeout;
        let Some(io) = self.io.as_mut() else {
            return Err(TransportError::Io("not connected".into()));
        };
        let outcome = exchange(io, &mut self.decoder, wire, id, limit, &self.bus).await;
        match outcome {
            Ok(frame) => Ok(Ok(frame)),
            Err(Miss::Silent(problem)) => Ok(Err(problem)),
            Err(Miss::Io(e)) => {
                // The port or socket itself failed: drop it; the next request
                // reopens it (after back-off if that fails).
                warn!(bus = %self.bus, target = %self.target, error = %e, "field bus link lost");
                self.io = None;
                Err(TransportError::Io(e.to_string()))
            }
        }
    }

    async fn ensure_open(&mut self) -> Result<(), TransportError> {
        if self.io.is_some() {
            return Ok(());
        }
        let target = self.target.clone();
        self.reconnect.check(&target)?;
        let opened: Result<Box<dyn Link>, String> = match &self.endpoint {
            // Opening a serial port does not wait for the line: no timeout needed.
            Endpoint::Serial(s) => tokio_serial::SerialStream::open(&port_builder(s))
                .map(|p| Box::new(p) as Box<dyn Link>)
                .map_err(|e| e.to_string()),
            Endpoint::Tcp(address) => {
                let limit = self.timeout.max(MIN_CONNECT_TIMEOUT);
                match timeout(limit, tokio::net::TcpStream::connect(address.as_str())).await {
                    Ok(Ok(s)) => {
                        // Frames are tiny and each waits for its reply: send at once.
                        let _ = s.set_nodelay(true);
                        Ok(Box::new(s) as Box<dyn Link>)
                    }
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("timed out after {limit:?}")),
                }
            }
            Endpoint::Attached => Err("the attached stream was closed after an error".into()),
            Endpoint::Wrong => Err("not an ouman bus".into()),
        };
        match opened {
            Ok(io) => {
                self.reconnect.opened(&self.bus, &target);
                self.io = Some(io);
                Ok(())
            }
            Err(reason) => Err(self.reconnect.failed(&self.bus, target, reason)),
        }
    }
}

/// Flush, send, and read until the reply for `id` arrives or `limit` passes.
async fn exchange(
    io: &mut Box<dyn Link>,
    decoder: &mut FrameDecoder,
    wire: &[u8],
    id: DataId,
    limit: Duration,
    bus: &str,
) -> Result<Frame, Miss> {
    // A late reply to an earlier request must not answer this one.
    decoder.clear();
    let dropped = discard_input(io).await.map_err(Miss::Io)?;
    if dropped > 0 {
        debug!(bus, dropped, "discarded stale input before a request");
    }
    io.write_all(wire).await.map_err(Miss::Io)?;
    io.flush().await.map_err(Miss::Io)?;
    let mut problem = None;
    let deadline = Instant::now() + limit;
    let mut chunk = [0u8; 256];
    loop {
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => match expect_reply(frame, id) {
                    Ok(frame) => return Ok(frame),
                    // Our own request echoed by a loop-back adapter, or a stray
                    // frame: keep listening, remember it for the error.
                    Err(e) => problem = Some(e),
                },
                Ok(None) => break,
                Err(e) => problem = Some(e),
            }
        }
        if let Some(frame) = decoder.resync_to(id) {
            return Ok(frame);
        }
        let n = match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            Ok(read) => read.map_err(Miss::Io)?,
            Err(_) => return Err(Miss::Silent(problem)),
        };
        if n == 0 {
            return Err(Miss::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        decoder.extend(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{DuplexStream, duplex};

    use super::*;

    /// The controller's end of a duplex line.
    struct Controller {
        io: DuplexStream,
        decoder: FrameDecoder,
    }

    impl Controller {
        async fn request(&mut self) -> Frame {
            let mut buf = [0u8; 64];
            loop {
                if let Some(f) = self.decoder.next_frame().unwrap() {
                    return f;
                }
                let n = self.io.read(&mut buf).await.unwrap();
                assert!(n > 0, "line closed");
                self.decoder.extend(&buf[..n]);
            }
        }

        async fn send(&mut self, bytes: &[u8]) {
            self.io.write_all(bytes).await.unwrap();
        }

        async fn reply(&mut self, id: u16, data: &[u8]) {
            let f = Frame {
                command: Command::Reply,
                id: DataId(id),
                data: data.to_vec(),
            };
            self.send(&f.encode().unwrap()).await;
        }
    }

    fn line(timeout: Duration) -> (OumanClient, Controller) {
        let (a, b) = duplex(1024);
        (
            OumanClient::attach(a, timeout),
            Controller {
                io: b,
                decoder: FrameDecoder::new(),
            },
        )
    }

    #[tokio::test]
    async fn a_read_sends_the_captured_request_and_returns_the_block() {
        let (mut c, mut ctl) = line(Duration::from_secs(1));
        let controller = tokio::spawn(async move {
            let mut raw = vec![0u8; 6];
            ctl.io.read_exact(&mut raw).await.unwrap();
            assert_eq!(raw, [0x02, 0x81, 0x02, 0x00, 0x14, 0x97]);
            ctl.send(&[0x02, 0x06, 0x04, 0x00, 0x14, 0x08, 0x34, 0x5A])
                .await;
            ctl
        });
        assert_eq!(c.read(DataId(20)).await, Ok(vec![0x08, 0x34]));
        controller.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_reply_is_retried_and_the_retry_answers() {
        let (mut c, mut ctl) = line(Duration::from_millis(300));
        let controller = tokio::spawn(async move {
            assert_eq!(ctl.request().await, Frame::read(DataId(18)));
            // first request unanswered; the retry gets its reply
            assert_eq!(ctl.request().await, Frame::read(DataId(18)));
            ctl.reply(18, &[0xFE, 0x00]).await;
            ctl
        });
        assert_eq!(c.read(DataId(18)).await, Ok(vec![0xFE, 0x00]));
        controller.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_controller_times_out_after_every_attempt() {
        let (mut c, mut ctl) = line(Duration::from_millis(300));
        let controller = tokio::spawn(async move {
            for _ in 0..ATTEMPTS {
                ctl.request().await;
            }
            ctl
        });
        assert_eq!(
            c.read(DataId(20)).await,
            Err(OumanError::Transport(TransportError::Timeout(
                Duration::from_millis(300)
            )))
        );
        controller.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn garbled_replies_end_in_a_clear_error_naming_the_checksum() {
        let (mut c, mut ctl) = line(Duration::from_millis(300));
        // The controller's end is returned, not dropped: a closed line would
        // end the last attempt early with an I/O error.
        let controller = tokio::spawn(async move {
            for _ in 0..ATTEMPTS {
                ctl.request().await;
                // checksum 5B instead of 5A
                ctl.send(&[0x02, 0x06, 0x04, 0x00, 0x14, 0x08, 0x34, 0x5B])
                    .await;
            }
            ctl
        });
        let err = c.read(DataId(20)).await.unwrap_err();
        assert_eq!(
            err,
            OumanError::BadReply {
                id: DataId(20),
                attempts: ATTEMPTS,
                last: CodecError::BadChecksum {
                    id: DataId(20),
                    expected: 0x5A,
                    got: 0x5B
                }
            }
        );
        assert!(err.to_string().contains("bad checksum"), "{err}");
        controller.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_for_another_id_is_not_taken_for_the_answer() {
        let (mut c, mut ctl) = line(Duration::from_millis(300));
        let controller = tokio::spawn(async move {
            for _ in 0..ATTEMPTS {
                ctl.request().await;
                ctl.reply(21, &[0x08, 0x34]).await;
            }
            ctl
        });
        let err = c.read(DataId(20)).await.unwrap_err();
        assert!(
            matches!(
                err,
                OumanError::BadReply {
                    last: CodecError::UnexpectedFrame {
                        got: DataId(21),
                        ..
                    },
                    ..
                }
            ),
            "{err:?}"
        );
        controller.await.unwrap();
    }

    #[tokio::test]
    async fn noise_and_an_echo_of_the_request_before_the_reply_are_skipped() {
        let (mut c, mut ctl) = line(Duration::from_secs(1));
        tokio::spawn(async move {
            ctl.request().await;
            // line noise with a false start, our own request echoed, then the reply
            ctl.send(&[0xFF, 0x02, 0x06, 0xF0, 0x00]).await;
            ctl.send(&Frame::read(DataId(20)).encode().unwrap()).await;
            ctl.reply(20, &[0x08, 0x34]).await;
            ctl
        });
        assert_eq!(c.read(DataId(20)).await, Ok(vec![0x08, 0x34]));
    }

    #[tokio::test]
    async fn stale_bytes_are_flushed_before_each_request() {
        let (mut c, mut ctl) = line(Duration::from_secs(1));
        // a late reply from an earlier exchange already waits on the line
        ctl.reply(20, &[0xDE, 0xAD]).await;
        tokio::task::yield_now().await;
        let controller = tokio::spawn(async move {
            ctl.request().await;
            ctl.reply(20, &[0x08, 0x34]).await;
            ctl
        });
        assert_eq!(c.read(DataId(20)).await, Ok(vec![0x08, 0x34]));
        controller.await.unwrap();
    }

    #[tokio::test]
    async fn a_block_write_sends_82_and_reports_the_acknowledgement() {
        let (mut c, mut ctl) = line(Duration::from_secs(1));
        tokio::spawn(async move {
            let f = ctl.request().await;
            assert_eq!(
                (f.command, f.id, f.data.as_slice()),
                (Command::Write, DataId(12), &[30u8, 25][..])
            );
            ctl.reply(12, &f.data).await;
        });
        assert_eq!(c.write_block(DataId(12), &[30, 25]).await, Ok(true));
    }

    #[tokio::test]
    async fn a_closed_line_is_an_io_error_and_an_attached_stream_is_not_reopened() {
        let (mut c, ctl) = line(Duration::from_secs(1));
        drop(ctl);
        assert!(matches!(
            c.read(DataId(20)).await,
            Err(OumanError::Transport(TransportError::Io(_)))
        ));
        assert!(matches!(
            c.read(DataId(20)).await,
            Err(OumanError::Transport(TransportError::Connect { .. }))
        ));
    }

    fn serial_bus(path: &str) -> BusConfig {
        BusConfig {
            name: "ouman".into(),
            transport: Transport::Ouman(OumanLink::Serial(SerialSettings {
                path: path.into(),
                baud: 4800,
                parity: crate::config::Parity::None,
                data_bits: crate::config::DataBits::Eight,
                stop_bits: crate::config::StopBits::One,
            })),
            timeout: Duration::from_millis(100),
            max_gap: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_port_is_a_connect_error_then_waits_with_back_off() {
        let mut c = OumanClient::new(&serial_bus("/nonexistent/ttyS9"));
        let mut waits = Vec::new();
        for _ in 0..4 {
            assert!(matches!(
                c.read(DataId(20)).await,
                Err(OumanError::Transport(TransportError::Connect { .. }))
            ));
            let Err(OumanError::Transport(TransportError::Reconnecting { retry_in, .. })) =
                c.read(DataId(20)).await
            else {
                panic!("expected to wait before reopening")
            };
            waits.push(retry_in);
            tokio::time::advance(retry_in).await;
        }
        for (w, ceiling_ms) in waits.iter().zip([500u64, 1000, 2000, 4000]) {
            let ceiling = Duration::from_millis(ceiling_ms);
            assert!(*w >= ceiling / 2 && *w <= ceiling, "{w:?} vs {ceiling:?}");
        }
    }

    #[test]
    fn an_ouman_serial_bus_opens_its_port_4800_8n1() {
        // A pty cannot show line settings, so check the builder the client uses.
        let Transport::Ouman(OumanLink::Serial(s)) = serial_bus("/dev/ttyS0").transport else {
            unreachable!()
        };
        let expected = tokio_serial::new("/dev/ttyS0", 4800)
            .data_bits(tokio_serial::DataBits::Eight)
            .parity(tokio_serial::Parity::None)
            .stop_bits(tokio_serial::StopBits::One)
            .flow_control(tokio_serial::FlowControl::None);
        assert_eq!(port_builder(&s), expected);
    }
}
