//! [`PopClient`]: one POP request at a time on a bus shared with keypads.
//!
//! The bus manners are the original system's (pop-protocol.md, "Bus
//! manners"; the seeds' "Pop-ohjaus" chapter):
//!
//! 1. before sending, wait until nothing has arrived for
//!    [`QUIET_BEFORE_SEND`](super::QUIET_BEFORE_SEND) — everything heard
//!    meanwhile is other devices' traffic and is skipped — and never while
//!    a frame is half received (then [`FRAME_GAP`](super::FRAME_GAP));
//! 2. send, then wait up to [`REPLY_TIMEOUT`](super::REPLY_TIMEOUT) after the
//!    request has left the adapter;
//! 3. on silence send again, up to [`MAX_ATTEMPTS`](super::MAX_ATTEMPTS)
//!    sends, then report a device connection error;
//! 4. every frame heard is checked: first the sender must be the board
//!    asked, then the checksum (the decoder's; a damaged frame is skipped),
//!    then it must be the reply to *this* request (the keypad asking the same
//!    board looks alike), and finally the values must be plausible
//!    ([`message::check_temp`]): an implausible value is reported to the
//!    caller, never returned as a measurement.
//!
//! An I/O error drops the port; the next request reopens it, with jittered
//! back-off while it keeps failing (a USB adapter unplugged and plugged back).

use std::{fmt, future::poll_fn, io, pin::Pin, task::Poll, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    time::{Instant, sleep_until},
};
use tokio_serial::SerialStream;
use tokio_util::bytes::BytesMut;
use tracing::{debug, warn};

use super::{
    FRAME_GAP, PopError, PopTiming, char_time,
    codec::{self, Frame, FrameError, MAX_FRAME, PopCodec},
    message::{
        AlarmInputs, BoardTime, ClockEntry, Implausible, OutputCommand, OutputStates, Request,
        Response, SetpointKind, TempKind, Tenths, check_temp,
    },
};
use crate::{
    config::{BusConfig, DataBits, Parity, SerialSettings, StopBits, Transport},
    devices::reconnect::ReconnectGate,
    devices::{TransportError, modbus::port_builder},
};

type Opener<T> = Box<dyn Fn() -> io::Result<T> + Send>;

/// Counters of what the client saw on the line, since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineStats {
    /// Requests asked for (each may take several sends).
    pub requests: u64,
    /// Sends made, resends included.
    pub sends: u64,
    /// Attempts that ended without our reply (silence, or a line that never
    /// fell quiet).
    pub unanswered: u64,
    /// Good frames that were not our reply: keypad requests, boards' replies
    /// to keypads, other boards.
    pub foreign_frames: u64,
    /// Frames with a bad checksum or length, from anyone.
    pub bad_frames: u64,
    /// Values received that were not plausible (reported, not returned).
    pub implausible: u64,
    /// Requests given up on after every attempt.
    pub gave_up: u64,
}

/// One room as read: each value in °C, or why it is not believed.
#[derive(Debug, Clone, PartialEq)]
pub struct Room {
    /// Room number, from 1.
    pub number: u8,
    /// Measured temperature.
    pub measured: Result<f64, Implausible>,
    /// Floor-heating setpoint.
    pub floor: Result<f64, Implausible>,
    /// Ceiling-heating setpoint.
    pub ceiling: Result<f64, Implausible>,
}

impl Room {
    /// The value of one kind.
    pub fn get(&self, kind: TempKind) -> &Result<f64, Implausible> {
        match kind {
            TempKind::Measured => &self.measured,
            TempKind::Floor => &self.floor,
            TempKind::Ceiling => &self.ceiling,
        }
    }
}

/// An open line: the port, what has arrived but is not decoded yet, and
/// when the last byte arrived.
struct Line<T> {
    io: T,
    buf: BytesMut,
    last_rx: Instant,
}

/// A POP master for one bus. Built with [`PopClient::new`] it opens the
/// serial port on first use and reopens it after errors; built with
/// [`PopClient::attach`] it uses the given stream and cannot reopen it.
pub struct PopClient<T = SerialStream> {
    bus: String,
    target: String,
    timing: PopTiming,
    char_time: Duration,
    open: Option<Opener<T>>,
    line: Option<Line<T>>,
    reconnect: ReconnectGate,
    stats: LineStats,
}

impl<T> fmt::Debug for PopClient<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PopClient")
            .field("bus", &self.bus)
            .field("target", &self.target)
            .field("timing", &self.timing)
            .field("connected", &self.line.is_some())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn default_settings(path: &str) -> SerialSettings {
    SerialSettings {
        path: path.into(),
        baud: super::DEFAULT_BAUD,
        parity: Parity::None,
        data_bits: DataBits::Eight,
        stop_bits: StopBits::One,
    }
}

impl PopClient<SerialStream> {
    /// A client for a `pop` bus; the port is opened on the first request.
    /// The reply timeout is the bus's `timeout`. A bus of another kind gets a
    /// client that reports a connect error on every request.
    pub fn new(bus: &BusConfig) -> Self {
        let settings = match &bus.transport {
            Transport::Pop(s) => Some(s.clone()),
            _ => None,
        };
        let target = settings
            .as_ref()
            .map_or_else(|| bus.name.clone(), |s| s.path.clone());
        let ct = char_time(settings.as_ref().unwrap_or(&default_settings(&target)));
        let open: Opener<SerialStream> = Box::new(move || match &settings {
            Some(s) => SerialStream::open(&port_builder(s)).map_err(io::Error::from),
            None => Err(io::Error::other("not a pop bus")),
        });
        let timing = PopTiming {
            reply_timeout: bus.timeout,
            ..PopTiming::default()
        };
        PopClient {
            open: Some(open),
            ..PopClient::with(bus.name.clone(), target, timing, ct)
        }
    }
}

impl<T> PopClient<T> {
    fn with(bus: String, target: String, timing: PopTiming, char_time: Duration) -> Self {
        PopClient {
            bus,
            target,
            timing,
            char_time,
            open: None,
            line: None,
            reconnect: ReconnectGate::default(),
            stats: LineStats::default(),
        }
    }

    /// A client over an already open stream (a pty, a `tokio::io::duplex`),
    /// at `baud` 8N1 for the transmission-time sums. After an I/O error every
    /// later request fails with a connect error.
    pub fn attach(io: T, baud: u32, timing: PopTiming) -> Self {
        let ct = char_time(&SerialSettings {
            baud,
            ..default_settings("attached")
        });
        PopClient {
            line: Some(Line {
                io,
                buf: BytesMut::with_capacity(4 * MAX_FRAME),
                last_rx: Instant::now(),
            }),
            ..PopClient::with("pop".into(), "attached stream".into(), timing, ct)
        }
    }

    /// Replace the timing (tests; buses with unusual boards).
    pub fn with_timing(mut self, timing: PopTiming) -> Self {
        self.timing = timing;
        self
    }

    /// The timing in use.
    pub fn timing(&self) -> PopTiming {
        self.timing
    }

    /// What the client has seen so far.
    pub fn stats(&self) -> LineStats {
        self.stats
    }

    /// True while a port is open.
    pub fn is_open(&self) -> bool {
        self.line.is_some()
    }
}

/// Read what is already waiting on `io` into `buf` without waiting for more.
/// An ended stream is an error.
pub(crate) async fn read_ready<T: AsyncRead + Unpin>(
    io: &mut T,
    buf: &mut BytesMut,
) -> io::Result<usize> {
    let mut scratch = [0u8; 512];
    let mut total = 0;
    loop {
        let n = poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()))
                }
                Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Ready(Ok(0)),
            }
        })
        .await?;
        if n == 0 {
            return Ok(total);
        }
        buf.extend_from_slice(&scratch[..n]);
        total += n;
    }
}

/// Wait for more bytes; `Ok(0)` never comes back: an ended stream is an error.
async fn read_more<T: AsyncRead + Unpin>(io: &mut T, buf: &mut BytesMut) -> io::Result<usize> {
    match io.read_buf(buf).await? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        n => Ok(n),
    }
}

/// What one decoded item on the line means for the request in flight.
enum Heard {
    /// The reply.
    Ours(Response),
    /// Someone else's frame, or not the reply to this request.
    Foreign,
    /// A damaged frame.
    Bad,
}

fn skip(stats: &mut LineStats, heard: Heard) {
    match heard {
        Heard::Bad => stats.bad_frames += 1,
        Heard::Foreign | Heard::Ours(_) => stats.foreign_frames += 1,
    }
}

fn judge(item: Result<Frame, FrameError>, board: u8, req: &Request) -> Heard {
    match item {
        Err(e) => {
            debug!(error = %e, "damaged frame on the line skipped");
            Heard::Bad
        }
        // Sender first: most traffic is the keypads' with other boards.
        Ok(f) if f.device != board => Heard::Foreign,
        Ok(f) if f.function != req.function().code() => Heard::Foreign,
        Ok(f) => match Response::decode(f.function, &f.data) {
            Ok(rsp) if rsp.answers(req) => Heard::Ours(rsp),
            // The keypad's request to the same board, or the board's reply to it.
            _ => Heard::Foreign,
        },
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> PopClient<T> {
    fn ensure_open(&mut self) -> Result<(), TransportError> {
        if self.line.is_some() {
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
        match open() {
            Ok(io) => {
                self.reconnect.opened(&self.bus, &target);
                self.line = Some(Line {
                    io,
                    buf: BytesMut::with_capacity(4 * MAX_FRAME),
                    last_rx: Instant::now(),
                });
                Ok(())
            }
            Err(e) => Err(self.reconnect.failed(&self.bus, target, e.to_string())),
        }
    }

    /// Send `req` to `board` with the bus manners and return its reply.
    pub async fn transact(&mut self, board: u8, req: &Request) -> Result<Response, PopError> {
        let data = req.encode().map_err(|e| PopError::Invalid(e.to_string()))?;
        let frame = Frame {
            device: board,
            function: req.function().code(),
            data,
        };
        let wire = codec::encode(&frame).map_err(|e| PopError::Invalid(e.to_string()))?;
        self.ensure_open()?;
        self.stats.requests += 1;
        let attempts = self.timing.attempts.max(1);
        for attempt in 1..=attempts {
            match self.attempt(board, req, &wire, attempt > 1).await {
                Ok(Some(rsp)) => {
                    if attempt > 1 {
                        debug!(board, attempt, "answered after resending");
                    }
                    return Ok(rsp);
                }
                Ok(None) => self.stats.unanswered += 1,
                Err(e) => {
                    // The port itself failed: drop it; the next request reopens it.
                    self.line = None;
                    return Err(TransportError::Io(e.to_string()).into());
                }
            }
        }
        self.stats.gave_up += 1;
        Err(PopError::NoReply { board, attempts })
    }

    /// One send: wait for a quiet line, send, wait for the reply.
    /// `Ok(None)`: no reply this time (or the line never fell quiet).
    /// `resend`: an earlier send of the same request may still be answered
    /// late, while we wait for the quiet line; that answer is taken.
    async fn attempt(
        &mut self,
        board: u8,
        req: &Request,
        wire: &[u8],
        resend: bool,
    ) -> io::Result<Option<Response>> {
        let timing = self.timing;
        let tx_time = self.char_time * u32::try_from(wire.len()).unwrap_or(u32::MAX);
        let Some(line) = self.line.as_mut() else {
            return Err(io::Error::other("not connected"));
        };
        let stats = &mut self.stats;

        // 1. Wait for a quiet line; everything heard now is other traffic
        //    (or a late answer to our previous send).
        let give_up_at = Instant::now() + timing.busy_limit;
        loop {
            if read_ready(&mut line.io, &mut line.buf).await? > 0 {
                line.last_rx = Instant::now();
            }
            while let Some(item) = next_item(&mut line.buf, false) {
                match judge(item, board, req) {
                    Heard::Ours(rsp) if resend => return Ok(Some(rsp)),
                    other => skip(stats, other),
                }
            }
            // Half a frame in hand means someone is still talking (or
            // stalled mid-frame): the line is not quiet until the frame ends
            // or is given up.
            let quiet = if line.buf.is_empty() {
                timing.quiet
            } else {
                timing.quiet.max(FRAME_GAP)
            };
            let quiet_at = line.last_rx + quiet;
            let now = Instant::now();
            if now >= quiet_at {
                break;
            }
            if now >= give_up_at {
                debug!(board, "the line did not fall quiet; attempt abandoned");
                return Ok(None);
            }
            tokio::select! {
                n = read_more(&mut line.io, &mut line.buf) => {
                    n?;
                    line.last_rx = Instant::now();
                }
                () = sleep_until(quiet_at.min(give_up_at)) => {}
            }
        }
        // A partial frame cut off by the quiet time is dead; it must not
        // prefix the reply.
        while let Some(item) = next_item(&mut line.buf, true) {
            skip(stats, judge(item, board, req));
        }

        // 2. Send.
        line.io.write_all(wire).await?;
        line.io.flush().await?;
        stats.sends += 1;
        let deadline = Instant::now() + tx_time + timing.reply_timeout;

        // 3. Wait for the reply, skipping everything else.
        loop {
            while let Some(item) = next_item(&mut line.buf, false) {
                match judge(item, board, req) {
                    Heard::Ours(rsp) => return Ok(Some(rsp)),
                    other => skip(stats, other),
                }
            }
            let gap_at = (!line.buf.is_empty()).then(|| line.last_rx + FRAME_GAP);
            let wake = gap_at.map_or(deadline, |g| g.min(deadline));
            tokio::select! {
                n = read_more(&mut line.io, &mut line.buf) => {
                    n?;
                    line.last_rx = Instant::now();
                }
                () = sleep_until(wake) => {
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                    // The line fell silent inside a "frame": find what is real in it.
                    while let Some(item) = next_item(&mut line.buf, true) {
                        match judge(item, board, req) {
                            Heard::Ours(rsp) => return Ok(Some(rsp)),
                            other => skip(stats, other),
                        }
                    }
                }
            }
        }
    }

    /// Rooms `first..first + count` (at most 20) of `board`.
    pub async fn read_rooms(
        &mut self,
        board: u8,
        first: u8,
        count: u8,
    ) -> Result<Vec<Room>, PopError> {
        let req = Request::ReadRooms { first, count };
        let Response::Rooms { first, rooms } = self.transact(board, &req).await? else {
            return Err(unexpected(&req));
        };
        let mut out = Vec::with_capacity(rooms.len());
        for (number, r) in (first..).zip(rooms) {
            let mut value = |kind: TempKind| {
                let v = check_temp(kind, r.get(kind));
                if let Err(e) = &v {
                    self.stats.implausible += 1;
                    warn!(bus = %self.bus, board, room = number, error = %e, "bad read");
                }
                v
            };
            out.push(Room {
                number,
                measured: value(TempKind::Measured),
                floor: value(TempKind::Floor),
                ceiling: value(TempKind::Ceiling),
            });
        }
        Ok(out)
    }

    /// The outputs of `board`.
    pub async fn read_outputs(&mut self, board: u8) -> Result<OutputStates, PopError> {
        match self.transact(board, &Request::ReadOutputs).await? {
            Response::Outputs(o) => Ok(o),
            _ => Err(unexpected(&Request::ReadOutputs)),
        }
    }

    /// The alarm inputs of `board`.
    pub async fn read_alarms(&mut self, board: u8) -> Result<AlarmInputs, PopError> {
        match self.transact(board, &Request::ReadAlarms).await? {
            Response::Alarms(a) => Ok(a),
            _ => Err(unexpected(&Request::ReadAlarms)),
        }
    }

    /// The clock table of `output` (1..=16) of `board`, slot 1 first.
    pub async fn read_clock_table(
        &mut self,
        board: u8,
        output: u8,
    ) -> Result<Vec<ClockEntry>, PopError> {
        let req = Request::ReadClockTable { output };
        match self.transact(board, &req).await? {
            Response::ClockTable { entries, .. } => Ok(entries),
            _ => Err(unexpected(&req)),
        }
    }

    /// The clock of `board`: the local date and time its clock tables run on.
    pub async fn read_clock(&mut self, board: u8) -> Result<BoardTime, PopError> {
        match self.transact(board, &Request::ReadClock).await? {
            Response::Clock(t) => Ok(t),
            _ => Err(unexpected(&Request::ReadClock)),
        }
    }

    /// Set the clock of `board`. `Ok` means the board acknowledged exactly
    /// this time.
    pub async fn set_clock(&mut self, board: u8, time: BoardTime) -> Result<(), PopError> {
        self.transact(board, &Request::SetClock { time })
            .await
            .map(drop)
    }

    /// Set a room's floor or ceiling setpoint to `celsius` (0.1 °C steps).
    /// `Ok` means the board acknowledged exactly this value.
    pub async fn set_setpoint(
        &mut self,
        board: u8,
        room: u8,
        kind: SetpointKind,
        celsius: f64,
    ) -> Result<(), PopError> {
        let value = Tenths::from_celsius(celsius).map_err(PopError::Invalid)?;
        self.transact(board, &Request::SetSetpoint { room, kind, value })
            .await
            .map(drop)
    }

    /// Set `output` on or off by hand, or back to its clock table.
    pub async fn set_output(
        &mut self,
        board: u8,
        output: u8,
        command: OutputCommand,
    ) -> Result<(), PopError> {
        self.transact(board, &Request::SetOutput { output, command })
            .await
            .map(drop)
    }

    /// Set `slot` (1..=8) of `output`'s clock table.
    pub async fn set_clock_entry(
        &mut self,
        board: u8,
        output: u8,
        slot: u8,
        entry: ClockEntry,
    ) -> Result<(), PopError> {
        self.transact(
            board,
            &Request::SetClockEntry {
                output,
                slot,
                entry,
            },
        )
        .await
        .map(drop)
    }
}

/// `transact` only returns a reply that [`Response::answers`] the request,
/// so this is a reply of another kind than the request's: a bug, reported.
fn unexpected(req: &Request) -> PopError {
    PopError::Invalid(format!("reply of the wrong kind to {req:?}"))
}

fn next_item(buf: &mut BytesMut, idle: bool) -> Option<Result<Frame, FrameError>> {
    let got = if idle {
        PopCodec.decode_idle(buf)
    } else {
        PopCodec.decode(buf)
    };
    got.transpose()
}

#[cfg(test)]
mod tests {
    use tokio::io::{DuplexStream, duplex};

    use super::*;
    use crate::devices::pop::{
        MAX_ATTEMPTS, QUIET_BEFORE_SEND, REPLY_TIMEOUT,
        message::{Function, RoomRecord},
    };

    /// The boards' end of an in-memory line.
    struct Peer {
        io: DuplexStream,
        buf: BytesMut,
    }

    impl Peer {
        /// The next frame the client sends.
        async fn request(&mut self) -> Frame {
            loop {
                if let Some(f) = PopCodec.decode(&mut self.buf).unwrap() {
                    return f;
                }
                assert!(self.io.read_buf(&mut self.buf).await.unwrap() > 0);
            }
        }

        async fn send(&mut self, device: u8, function: Function, data: Vec<u8>) {
            let wire = codec::encode(&Frame {
                device,
                function: function.code(),
                data,
            })
            .unwrap();
            self.io.write_all(&wire).await.unwrap();
        }

        async fn reply(&mut self, device: u8, rsp: &Response) {
            self.send(device, rsp.function(), rsp.encode().unwrap())
                .await;
        }
    }

    fn line() -> (PopClient<DuplexStream>, Peer) {
        let (a, b) = duplex(4096);
        (
            PopClient::attach(a, 9600, PopTiming::default()),
            Peer {
                io: b,
                buf: BytesMut::new(),
            },
        )
    }

    fn outputs(on: u16) -> Response {
        Response::Outputs(OutputStates {
            count: 6,
            on,
            manual: 0,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_for_a_quiet_line_and_keypad_frames_are_skipped() {
        let (mut c, mut p) = line();
        let started = Instant::now();
        let peer = tokio::spawn(async move {
            // the keypad asks board 1 for its outputs at 0, 6 and 12 ms
            for _ in 0..3 {
                p.send(1, Function::ReadOutputs, vec![0]).await;
                tokio::time::sleep(Duration::from_millis(6)).await;
            }
            let last_keypad = Instant::now() - Duration::from_millis(6);
            let req = p.request().await;
            let heard_at = Instant::now();
            // board 2, fn 0x02, len 0x81, data 00, checksum 02^02^81^00^80 = 01
            assert_eq!(codec::encode(&req).unwrap(), [0x02, 0x02, 0x81, 0x00, 0x01]);
            p.reply(2, &outputs(0b101)).await;
            (last_keypad, heard_at, p)
        });
        let got = c.read_outputs(2).await.unwrap();
        assert_eq!((got.is_on(1), got.is_on(2)), (Some(true), Some(false)));
        let (last_keypad, heard_at, _p) = peer.await.unwrap();
        assert!(
            heard_at >= last_keypad + QUIET_BEFORE_SEND,
            "sent {:?} after the last keypad frame",
            heard_at - last_keypad
        );
        assert!(heard_at >= started + Duration::from_millis(22));
        let s = c.stats();
        assert_eq!((s.requests, s.sends, s.foreign_frames), (1, 1, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_stalled_mid_frame_is_not_talked_over() {
        let (mut c, mut p) = line();
        let peer = tokio::spawn(async move {
            // the keypad's request to board 1 for rooms 1..=8, stalled 15 ms after 3 bytes
            let wire = [0x01, 0x01, 0x82, 0x01, 0x08, 0x0B];
            p.io.write_all(&wire[..3]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(15)).await;
            p.io.write_all(&wire[3..]).await.unwrap();
            let done = Instant::now();
            let req = p.request().await;
            let heard_at = Instant::now();
            assert_eq!(req.device, 2);
            p.reply(2, &outputs(1)).await;
            (done, heard_at, p)
        });
        assert_eq!(c.read_outputs(2).await.unwrap().on, 1);
        let (done, heard_at, _p) = peer.await.unwrap();
        assert!(
            heard_at >= done + QUIET_BEFORE_SEND,
            "{:?}",
            heard_at - done
        );
        assert_eq!(c.stats().foreign_frames, 1, "the keypad frame was whole");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_board_is_given_up_after_twenty_sends() {
        let (mut c, mut p) = line();
        let peer = tokio::spawn(async move {
            let mut heard = 0;
            while tokio::time::timeout(Duration::from_secs(5), p.request())
                .await
                .is_ok()
            {
                heard += 1;
            }
            heard
        });
        let started = Instant::now();
        let err = c.read_alarms(7).await.unwrap_err();
        assert_eq!(
            err,
            PopError::NoReply {
                board: 7,
                attempts: MAX_ATTEMPTS
            }
        );
        assert_eq!(
            err.to_string(),
            "device connection error: board 7 did not answer 20 attempts"
        );
        // each send waits 200 ms after the frame's 5.2 ms on the wire (the
        // line was quiet all along, so resends need no extra quiet wait)
        assert!(Instant::now() - started >= (REPLY_TIMEOUT + Duration::from_millis(5)) * 20);
        assert_eq!(peer.await.unwrap(), 20);
        let s = c.stats();
        assert_eq!((s.sends, s.unanswered, s.gave_up), (20, 20, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn replies_from_another_board_or_with_a_bad_checksum_are_skipped() {
        let (mut c, mut p) = line();
        // The handle keeps the peer's end open until the test ends.
        let _peer = tokio::spawn(async move {
            p.request().await;
            // board 9 answers a question put to board 3, with other values
            p.reply(9, &outputs(0b111)).await;
            // board 3's reply damaged: 03 02 85 06 00 05 00 00 with checksum+1
            let good = codec::encode(&Frame {
                device: 3,
                function: 0x02,
                data: vec![6, 0, 0b111, 0, 0],
            })
            .unwrap();
            let mut bad = good.clone();
            *bad.last_mut().unwrap() ^= 0x01;
            p.io.write_all(&bad).await.unwrap();
            // the keypad's own request to board 3
            p.send(3, Function::ReadOutputs, vec![0]).await;
            p.reply(3, &outputs(0b010)).await;
            p
        });
        let got = c.read_outputs(3).await.unwrap();
        assert_eq!(got.on, 0b010, "the values of the real reply");
        let s = c.stats();
        assert_eq!((s.sends, s.foreign_frames, s.bad_frames), (1, 2, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_reply_to_the_previous_send_is_taken_while_waiting_for_quiet() {
        let (mut c, mut p) = line();
        let peer = tokio::spawn(async move {
            p.request().await;
            let sent = Instant::now();
            // ReadAlarms is 5 bytes: 5.2 ms on the wire; the client gives up at 205.2 ms
            tokio::time::sleep_until(sent + Duration::from_millis(203)).await;
            p.send(1, Function::ReadRooms, vec![1, 8]).await; // keypad: the line is busy again
            tokio::time::sleep_until(sent + Duration::from_millis(209)).await;
            let rsp = Response::Alarms(AlarmInputs {
                count: 3,
                active: 0b100,
            });
            p.reply(4, &rsp).await;
            let again = tokio::time::timeout(Duration::from_secs(1), p.request()).await;
            again.is_ok()
        });
        let got = c.read_alarms(4).await.unwrap();
        assert_eq!(got.is_active(3), Some(true));
        assert!(!peer.await.unwrap(), "no second send reached the line");
        assert_eq!(c.stats().unanswered, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_implausible_room_is_reported_not_returned() {
        let (mut c, mut p) = line();
        // The handle keeps the peer's end open until the test ends.
        let _peer = tokio::spawn(async move {
            let req = p.request().await;
            assert_eq!(req.data, [1, 2]);
            let rsp = Response::Rooms {
                first: 1,
                rooms: vec![
                    RoomRecord {
                        measured: Tenths(3000), // 300.0 °C
                        floor: Tenths(215),
                        ceiling: Tenths(200),
                    },
                    RoomRecord {
                        measured: Tenths(-12),
                        floor: Tenths(220),
                        ceiling: Tenths(-50), // -5.0 °C setpoint
                    },
                ],
            };
            p.reply(1, &rsp).await;
            p
        });
        let rooms = c.read_rooms(1, 1, 2).await.unwrap();
        assert_eq!(rooms[0].number, 1);
        let e = rooms[0].measured.as_ref().unwrap_err();
        assert_eq!(e.value, Tenths(3000));
        assert_eq!(rooms[0].floor, Ok(21.5));
        assert_eq!(rooms[1].measured, Ok(-1.2));
        assert!(rooms[1].ceiling.is_err());
        assert_eq!(c.stats().implausible, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stray_byte_before_the_reply_is_shaken_off_when_the_line_falls_silent() {
        let (mut c, mut p) = line();
        // The handle keeps the peer's end open until the test ends.
        let _peer = tokio::spawn(async move {
            p.request().await;
            // a stray C0 claims a 64-byte frame; the reply follows in the same burst
            let mut wire = vec![0x00, 0x00, 0xC0];
            wire.extend(
                codec::encode(&Frame {
                    device: 5,
                    function: 0x02,
                    data: outputs(1).encode().unwrap(),
                })
                .unwrap(),
            );
            p.io.write_all(&wire).await.unwrap();
            p
        });
        assert_eq!(c.read_outputs(5).await.unwrap().on, 1);
        assert_eq!(c.stats().sends, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_set_is_acknowledged_only_by_its_exact_echo() {
        let (mut c, mut p) = line();
        // The handle keeps the peer's end open until the test ends.
        let _peer = tokio::spawn(async move {
            let req = p.request().await;
            // room 3 floor 22.5 °C: 03 00 00 E1
            assert_eq!(
                (req.function, req.data.clone()),
                (0x11, vec![3, 0, 0, 0xE1])
            );
            // an echo of another value (the keypad's set) is not ours
            p.send(1, Function::SetSetpoint, vec![3, 0, 0, 0xDC]).await;
            p.send(1, Function::SetSetpoint, req.data).await;
            p
        });
        c.set_setpoint(1, 3, SetpointKind::Floor, 22.5)
            .await
            .unwrap();
        assert_eq!(c.stats().foreign_frames, 1);
        // off the 0.1 °C grid: refused before anything is sent
        assert!(matches!(
            c.set_setpoint(1, 3, SetpointKind::Floor, 22.55).await,
            Err(PopError::Invalid(_))
        ));
        assert_eq!(c.stats().requests, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_line_is_an_io_error_and_an_attached_stream_is_not_reopened() {
        let (mut c, p) = line();
        drop(p);
        assert!(matches!(
            c.read_outputs(1).await,
            Err(PopError::Transport(TransportError::Io(_)))
        ));
        assert!(!c.is_open());
        assert!(matches!(
            c.read_outputs(1).await,
            Err(PopError::Transport(TransportError::Connect { .. }))
        ));
    }

    #[test]
    fn a_pop_bus_opens_its_port_9600_8n1_by_default() {
        // A pty cannot carry parity (stack-notes pitfall 12): the settings
        // are checked on the builder the client opens the port with.
        let text = r#"[server]
url = "ws://127.0.0.1:8080/agent/v1/ws"
agent_id = "0b6f3c1e-8a5b-4c1d-9e2f-3a4b5c6d7e8f"
secret = "not-the-placeholder"
[[bus]]
name = "heating"
kind = "pop"
path = "/dev/ttyUSB2"
"#;
        let cfg = crate::config::AgentConfig::from_toml("a.toml", text, std::path::Path::new("."))
            .unwrap();
        let bus = &cfg.buses[0];
        let Transport::Pop(s) = &bus.transport else {
            panic!("a pop bus")
        };
        let expected = tokio_serial::new("/dev/ttyUSB2", 9600)
            .data_bits(tokio_serial::DataBits::Eight)
            .parity(tokio_serial::Parity::None)
            .stop_bits(tokio_serial::StopBits::One)
            .flow_control(tokio_serial::FlowControl::None);
        assert_eq!(port_builder(s), expected);
        let c = PopClient::new(bus);
        assert_eq!(c.timing().reply_timeout, REPLY_TIMEOUT);
        assert_eq!(c.char_time, Duration::from_nanos(1_041_666));
    }

    #[tokio::test]
    async fn a_missing_port_is_a_connect_error_then_waits_before_retrying() {
        let bus = BusConfig {
            name: "heating".into(),
            transport: Transport::Pop(default_settings("/nonexistent/ttyUSB9")),
            timeout: REPLY_TIMEOUT,
            max_gap: 0,
        };
        let mut c = PopClient::new(&bus);
        assert!(matches!(
            c.read_outputs(1).await,
            Err(PopError::Transport(TransportError::Connect { .. }))
        ));
        assert!(matches!(
            c.read_outputs(1).await,
            Err(PopError::Transport(TransportError::Reconnecting { .. }))
        ));
    }
}
