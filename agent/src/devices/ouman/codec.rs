//! Frames of the Ouman EH-203 native serial protocol (pure, no I/O).
//!
//! Layout (shared/reference/device-protocols.md §1.3; atoid/ouman `ouman.py`,
//! aalien/ouman `ouman.py`):
//!
//! ```text
//! 02  CMD  LEN  ID_hi ID_lo  data…  CK
//! CMD: 81 read request (LEN = 02, no data), 06 reply, 82 write
//! LEN: number of bytes of ID + data
//! CK:  (sum of every byte after the 02) & 0xFF
//! ```
//!
//! There is no end marker and no address: a reader finds the `02`, trusts `LEN`
//! and checks `CK`. [`FrameDecoder`] does that incrementally (bytes arrive in
//! pieces) and resynchronises after noise: bytes before a `02` are skipped, and
//! a `02` that starts no valid frame is dropped alone (so a real frame right
//! behind it is still found). [`FrameDecoder::resync_to`] handles the last
//! case: a `02` inside noise that claims a long length must not hide the
//! complete reply behind it.

use crate::registers::ouman::{DataId, MAX_DATA_LEN};

/// Start of every frame.
pub const STX: u8 = 0x02;
/// Longest frame on the wire: `02 CMD LEN` + 255 bytes of ID and data + `CK`.
pub const MAX_FRAME_LEN: usize = 3 + 255 + 1;

/// What a frame asks or answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// `81`: read the block of a data ID (no data).
    Read,
    /// `82`: write a whole block (atoid reads the block, patches it, sends it back).
    Write,
    /// `06`: the controller's reply carrying a block.
    Reply,
}

impl Command {
    /// The byte on the wire.
    pub fn byte(self) -> u8 {
        match self {
            Command::Read => 0x81,
            Command::Write => 0x82,
            Command::Reply => 0x06,
        }
    }

    /// The command of a wire byte, if it is one.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0x81 => Some(Command::Read),
            0x82 => Some(Command::Write),
            0x06 => Some(Command::Reply),
            _ => None,
        }
    }
}

/// One frame. A `Read` frame carries no data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What it is.
    pub command: Command,
    /// The data block it concerns.
    pub id: DataId,
    /// The block's bytes (after the two ID bytes); at most [`MAX_DATA_LEN`].
    pub data: Vec<u8>,
}

impl Frame {
    /// A read request for `id`.
    pub fn read(id: DataId) -> Self {
        Frame {
            command: Command::Read,
            id,
            data: Vec::new(),
        }
    }

    /// The bytes on the wire. Refuses data longer than [`MAX_DATA_LEN`] and
    /// a `Read` with data, which no decoder would accept back.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        if self.data.len() > MAX_DATA_LEN {
            return Err(CodecError::TooLong(self.data.len()));
        }
        if self.command == Command::Read && !self.data.is_empty() {
            return Err(CodecError::BadLength {
                command: self.command,
                len: (self.data.len() + 2) as u8,
            });
        }
        let [hi, lo] = self.id.0.to_be_bytes();
        let mut out = Vec::with_capacity(self.data.len() + 6);
        out.extend([
            STX,
            self.command.byte(),
            (self.data.len() + 2) as u8,
            hi,
            lo,
        ]);
        out.extend_from_slice(&self.data);
        out.push(checksum(&out[1..]));
        Ok(out)
    }
}

/// `(sum of bytes) & 0xFF`: the checksum over everything after the `02`.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

/// What is wrong with a frame (or with the frames around a request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The checksum byte disagrees with the sum of the frame.
    #[error("bad checksum for data ID {id}: frame says 0x{got:02X}, bytes sum to 0x{expected:02X}")]
    BadChecksum {
        /// The ID the frame claims.
        id: DataId,
        /// Checksum computed over the received bytes.
        expected: u8,
        /// Checksum byte received.
        got: u8,
    },
    /// `LEN` cannot be right: below 2 (no room for the ID), or not 2 on a read request.
    #[error("impossible length byte 0x{len:02X} in a {command:?} frame")]
    BadLength {
        /// The frame's command.
        command: Command,
        /// The length byte.
        len: u8,
    },
    /// Data too long for the one-byte length (encoding only).
    #[error("{0} data bytes do not fit a frame (at most {MAX_DATA_LEN})")]
    TooLong(usize),
    /// A well-formed frame that does not answer the request.
    #[error("expected a reply for data ID {expected}, got a {command:?} frame for data ID {got}")]
    UnexpectedFrame {
        /// The ID asked for.
        expected: DataId,
        /// The frame's command.
        command: Command,
        /// The ID it carried.
        got: DataId,
    },
}

/// `Ok(frame)` when `frame` is the controller's reply for `id`, else the
/// [`CodecError::UnexpectedFrame`] that says what came instead.
pub fn expect_reply(frame: Frame, id: DataId) -> Result<Frame, CodecError> {
    if frame.command == Command::Reply && frame.id == id {
        Ok(frame)
    } else {
        Err(CodecError::UnexpectedFrame {
            expected: id,
            command: frame.command,
            got: frame.id,
        })
    }
}

/// What the bytes at the start of a buffer hold.
enum Parse {
    /// Not enough bytes yet.
    Incomplete,
    /// A valid frame `len` bytes long.
    Frame(Frame, usize),
    /// Starts like a frame but is not one; the `02` is to be dropped.
    Invalid(CodecError),
    /// The byte after the `02` is not a command: noise, skip silently.
    NotAFrame,
}

/// Parse a frame at the start of `buf` (which begins with `02`).
fn parse(buf: &[u8]) -> Parse {
    let Some(&cmd) = buf.get(1) else {
        return Parse::Incomplete;
    };
    let Some(command) = Command::from_byte(cmd) else {
        return Parse::NotAFrame;
    };
    let Some(&len) = buf.get(2) else {
        return Parse::Incomplete;
    };
    if len < 2 || (command == Command::Read && len != 2) {
        return Parse::Invalid(CodecError::BadLength { command, len });
    }
    let total = 3 + usize::from(len) + 1;
    let Some(frame) = buf.get(..total) else {
        return Parse::Incomplete;
    };
    let id = DataId(u16::from_be_bytes([frame[3], frame[4]]));
    let expected = checksum(&frame[1..total - 1]);
    let got = frame[total - 1];
    if expected != got {
        return Parse::Invalid(CodecError::BadChecksum { id, expected, got });
    }
    let data = frame[5..total - 1].to_vec();
    Parse::Frame(Frame { command, id, data }, total)
}

/// Incremental frame decoder: [`FrameDecoder::extend`] with bytes as they
/// arrive, then call [`FrameDecoder::next_frame`] until it returns `Ok(None)`.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    skipped: usize,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Forget everything buffered (before a new request).
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Bytes waiting for more input.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Noise bytes skipped so far (not part of any frame or error).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The next frame, `Ok(None)` when more bytes are needed, or the error of
    /// one bad frame (the decoder has already moved past its `02`; call again).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, CodecError> {
        loop {
            // Drop noise in front of the next start byte.
            let start = self
                .buf
                .iter()
                .position(|&b| b == STX)
                .unwrap_or(self.buf.len());
            self.skip(start);
            if self.buf.is_empty() {
                return Ok(None);
            }
            match parse(&self.buf) {
                Parse::Frame(frame, len) => {
                    self.buf.drain(..len);
                    return Ok(Some(frame));
                }
                Parse::Invalid(err) => {
                    self.buf.drain(..1);
                    return Err(err);
                }
                Parse::NotAFrame => self.skip(1),
                Parse::Incomplete => return Ok(None),
            }
        }
    }

    /// When the buffer starts with what looks like an unfinished frame, look
    /// behind it for a complete, valid reply for `id`; if there is one, drop
    /// everything in front of it and return it.
    ///
    /// A `02` in line noise followed by a command byte and a large length
    /// would otherwise swallow the real reply and leave the caller waiting for
    /// bytes that never come. Only a reply for the ID just asked is taken,
    /// so a frame-shaped run of bytes inside a block still arriving is not
    /// mistaken for one (it would need the same five header bytes and a
    /// matching checksum).
    pub fn resync_to(&mut self, id: DataId) -> Option<Frame> {
        let (at, frame, len) = (1..self.buf.len()).find_map(|i| {
            if self.buf[i] != STX {
                return None;
            }
            match parse(&self.buf[i..]) {
                Parse::Frame(f, len) if f.command == Command::Reply && f.id == id => {
                    Some((i, f, len))
                }
                _ => None,
            }
        })?;
        self.skip(at);
        self.buf.drain(..len);
        Some(frame)
    }

    fn skip(&mut self, n: usize) {
        self.buf.drain(..n);
        self.skipped += n;
    }
}

/// The controller's own description (data ID 1), as atoid decodes it:
/// serial number (u32 little-endian), model (4 ASCII bytes), firmware version
/// (one byte, hundredths) and build date (9 ASCII bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Serial number.
    pub serial: u32,
    /// Model, e.g. `201L`.
    pub model: String,
    /// Firmware version × 100 (145 = 1.45).
    pub version_hundredths: u8,
    /// Build date as printed, e.g. `Aug  5 03`.
    pub build_date: String,
}

/// The data ID of the device-information block.
pub const DEVICE_INFO_ID: DataId = DataId(1);
/// Bytes of the device-information block that carry fields (the rest is padding).
const DEVICE_INFO_FIELDS: usize = 4 + 4 + 1 + 9;

impl DeviceInfo {
    /// Decode the data of an ID 1 reply; `None` when it is too short.
    /// Non-ASCII bytes in the text fields are replaced, not refused.
    pub fn decode(data: &[u8]) -> Option<Self> {
        let d = data.get(..DEVICE_INFO_FIELDS)?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim_end_matches('\0').to_owned();
        Some(DeviceInfo {
            serial: u32::from_le_bytes([d[0], d[1], d[2], d[3]]),
            model: text(&d[4..8]),
            version_hundredths: d[8],
            build_date: text(&d[9..18]),
        })
    }

    /// The block as the controller sends it: the fields, then zeros up to
    /// `len` bytes (the captured EH-201L block is 31 bytes).
    pub fn encode(&self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len.max(DEVICE_INFO_FIELDS));
        out.extend(self.serial.to_le_bytes());
        let mut fixed = |s: &str, n: usize| {
            let mut b: Vec<u8> = s.bytes().take(n).collect();
            b.resize(n, 0);
            out.extend(b);
        };
        fixed(&self.model, 4);
        out.push(self.version_hundredths);
        let mut date: Vec<u8> = self.build_date.bytes().take(9).collect();
        date.resize(9, 0);
        out.extend(date);
        out.resize(len.max(DEVICE_INFO_FIELDS), 0);
        out
    }

    /// The version as a number, e.g. 1.45.
    pub fn version(&self) -> f64 {
        f64::from(self.version_hundredths) / 100.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn decode_all(bytes: &[u8]) -> (Vec<Frame>, Vec<CodecError>) {
        let mut d = FrameDecoder::new();
        d.extend(bytes);
        let (mut frames, mut errors) = (Vec::new(), Vec::new());
        loop {
            match d.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => return (frames, errors),
                Err(e) => errors.push(e),
            }
        }
    }

    /// atoid README, read of ID 20 (EH-201L); the request is computed.
    const REQ_20: [u8; 6] = [
        0x02, // STX
        0x81, // read
        0x02, // LEN: the two ID bytes
        0x00, 0x14, // data ID 20
        0x97, // 81 + 02 + 00 + 14 = 0x97
    ];
    const REPLY_20: [u8; 8] = [
        0x02, // STX
        0x06, // reply
        0x04, // LEN: ID + 2 data bytes
        0x00, 0x14, // data ID 20
        0x08, 0x34, // 0x0834 = 2100 -> 21.00 °C
        0x5A, // 06 + 04 + 00 + 14 + 08 + 34 = 0x5A
    ];

    /// atoid README, read of ID 1 (device info), the whole capture: 37 bytes.
    const REPLY_1: [u8; 37] = [
        0x02, // STX
        0x06, // reply
        0x21, // LEN 33: ID + 31 data bytes
        0x00, 0x01, // data ID 1
        0x1A, 0x16, 0x22, 0x00, // serial 0x0022161A = 2233882, little-endian
        0x32, 0x30, 0x31, 0x4C, // "201L"
        0x91, // version 145 -> 1.45
        0x41, 0x75, 0x67, 0x20, 0x20, 0x35, 0x20, 0x30, 0x33, // "Aug  5 03"
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // padding
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // padding (13 bytes in all)
        0xFF, // checksum: the sum of 06..33 and the zeros is 0x3FF -> 0xFF
    ];

    /// §1.3 write of ID 2 (date/time, atoid's test-only mode).
    const WRITE_2: [u8; 13] = [
        0x02, // STX
        0x82, // write
        0x09, // LEN: ID + 7 data bytes
        0x00, 0x02, // data ID 2
        0x07, 0xE6, // year 2022 (big-endian, atoid `>HBBBBB`)
        0x0A, // month 10
        0x05, // day 5
        0x16, // hour 22
        0x00, // minute 0
        0x26, // second 38
        0xC5, // checksum
    ];

    /// atoid README, read of ID 12 (L1 heating curve settings, EH-201L).
    const REPLY_12: [u8; 37] = [
        0x02, 0x06, 0x21, // STX, reply, LEN 33
        0x00, 0x0C, // data ID 12
        0x20, 0x19, 0x14, 0x14,
        0x23, // curve: 32 °C at -20, 25 at 0, 20 at +20; min 20, max 35
        0x00, 0x00, 0x28, 0x0A, 0x1E, 0x05, 0x0F, 0x46, 0xFA, 0x00, 0x00, 0x64, 0x00, 0x64, 0x02,
        0x05, 0x02, // byte 21 = 0x02: motor type
        0x01, 0x00, 0x00, 0x00, 0x4B, 0x00, 0x00, 0x00, 0x00, // rest of the block
        0x78, // checksum
    ];

    #[test]
    fn captured_read_request_for_id_20_is_encoded_byte_for_byte() {
        assert_eq!(Frame::read(DataId(20)).encode().unwrap(), REQ_20);
        let (frames, errors) = decode_all(&REQ_20);
        assert_eq!((frames, errors), (vec![Frame::read(DataId(20))], vec![]));
    }

    #[test]
    fn captured_reply_for_id_20_decodes_to_21_degrees() {
        let (frames, errors) = decode_all(&REPLY_20);
        assert!(errors.is_empty());
        let f = expect_reply(frames[0].clone(), DataId(20)).unwrap();
        assert_eq!(f.data, [0x08, 0x34]);
        assert_eq!(i16::from_be_bytes([f.data[0], f.data[1]]), 2100);
        assert_eq!(f.encode().unwrap(), REPLY_20);
    }

    #[test]
    fn captured_device_info_decodes_serial_model_version_and_date() {
        let (frames, errors) = decode_all(&REPLY_1);
        assert!(errors.is_empty(), "{errors:?}");
        let f = expect_reply(frames[0].clone(), DEVICE_INFO_ID).unwrap();
        assert_eq!(f.data.len(), 31);
        let info = DeviceInfo::decode(&f.data).unwrap();
        assert_eq!(
            info,
            DeviceInfo {
                serial: 2_233_882,
                model: "201L".into(),
                version_hundredths: 145,
                build_date: "Aug  5 03".into(),
            }
        );
        assert_eq!(info.version(), 1.45);
        assert_eq!(info.encode(31), f.data, "the block re-encodes exactly");
        assert_eq!(f.encode().unwrap(), REPLY_1);
    }

    #[test]
    fn captured_date_time_write_for_id_2_is_encoded_byte_for_byte() {
        let frame = Frame {
            command: Command::Write,
            id: DataId(2),
            data: vec![0x07, 0xE6, 10, 5, 22, 0, 38],
        };
        assert_eq!(frame.encode().unwrap(), WRITE_2);
        assert_eq!(decode_all(&WRITE_2).0, vec![frame]);
    }

    #[test]
    fn captured_heating_curve_block_decodes_with_its_checksum() {
        let (frames, errors) = decode_all(&REPLY_12);
        assert!(errors.is_empty(), "{errors:?}");
        let f = &frames[0];
        assert_eq!((f.id, f.data.len()), (DataId(12), 31));
        assert_eq!(&f.data[..5], [32, 25, 20, 20, 35]);
        assert_eq!(f.data[21], 2, "motor type");
    }

    #[test]
    fn a_frame_arriving_one_byte_at_a_time_decodes_once_complete() {
        let mut d = FrameDecoder::new();
        for (i, b) in REPLY_20.iter().enumerate() {
            assert_eq!(d.next_frame(), Ok(None), "after {i} bytes");
            d.extend(&[*b]);
        }
        assert_eq!(d.next_frame().unwrap().unwrap().data, [0x08, 0x34]);
        assert_eq!((d.next_frame(), d.buffered()), (Ok(None), 0));
    }

    #[test]
    fn decode_skips_leading_garbage() {
        let mut bytes = vec![0xFF, 0x00, 0x55, 0x97];
        bytes.extend(REPLY_20);
        let mut d = FrameDecoder::new();
        d.extend(&bytes);
        assert_eq!(d.next_frame().unwrap().unwrap().id, DataId(20));
        assert_eq!(d.skipped(), 4);
    }

    #[test]
    fn a_bad_checksum_is_a_typed_error_and_the_next_frame_still_decodes() {
        let mut bad = REPLY_20;
        bad[7] = 0x5B; // checksum off by one
        let mut bytes = bad.to_vec();
        bytes.extend(REPLY_20);
        let (frames, errors) = decode_all(&bytes);
        assert_eq!(
            errors,
            vec![CodecError::BadChecksum {
                id: DataId(20),
                expected: 0x5A,
                got: 0x5B
            }]
        );
        assert_eq!(frames.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "bad checksum for data ID 20: frame says 0x5B, bytes sum to 0x5A"
        );
    }

    #[test]
    fn impossible_lengths_are_typed_errors() {
        // LEN 01 leaves no room for the ID
        let (_, errors) = decode_all(&[0x02, 0x06, 0x01, 0x00, 0x07]);
        assert_eq!(
            errors,
            vec![CodecError::BadLength {
                command: Command::Reply,
                len: 1
            }]
        );
        // a read request with data: LEN 03
        let (_, errors) = decode_all(&[0x02, 0x81, 0x03, 0x00, 0x14, 0x01, 0x99]);
        assert_eq!(
            errors,
            vec![CodecError::BadLength {
                command: Command::Read,
                len: 3
            }]
        );
    }

    #[test]
    fn a_start_byte_without_a_command_is_skipped_as_noise() {
        let mut bytes = vec![0x02, 0x33, 0x02];
        bytes.extend(REPLY_20);
        let mut d = FrameDecoder::new();
        d.extend(&bytes);
        assert_eq!(d.next_frame().unwrap().unwrap().id, DataId(20));
        assert_eq!(d.skipped(), 3);
    }

    #[test]
    fn a_false_start_claiming_a_long_frame_does_not_hide_the_real_reply() {
        // noise "02 06 F0" promises 240 more bytes that never come
        let mut bytes = vec![0x02, 0x06, 0xF0, 0x11];
        bytes.extend(REPLY_20);
        let mut d = FrameDecoder::new();
        d.extend(&bytes);
        assert_eq!(d.next_frame(), Ok(None), "on its own the decoder waits");
        assert_eq!(
            d.resync_to(DataId(21)),
            None,
            "only the reply asked for is taken"
        );
        let f = d.resync_to(DataId(20)).unwrap();
        assert_eq!(f.data, [0x08, 0x34]);
        assert_eq!((d.buffered(), d.skipped()), (0, 4));
    }

    #[test]
    fn a_reply_for_another_id_or_a_request_is_not_the_expected_reply() {
        let f = decode_all(&REPLY_20).0.remove(0);
        assert_eq!(
            expect_reply(f, DataId(21)),
            Err(CodecError::UnexpectedFrame {
                expected: DataId(21),
                command: Command::Reply,
                got: DataId(20)
            })
        );
        let echo = Frame::read(DataId(20));
        assert!(
            expect_reply(echo, DataId(20)).is_err(),
            "our own echo is not a reply"
        );
    }

    #[test]
    fn encoding_refuses_what_cannot_be_framed() {
        let long = Frame {
            command: Command::Write,
            id: DataId(12),
            data: vec![0; MAX_DATA_LEN + 1],
        };
        assert_eq!(long.encode(), Err(CodecError::TooLong(254)));
        let max = Frame {
            data: vec![0xAB; MAX_DATA_LEN],
            ..long
        };
        let wire = max.encode().unwrap();
        assert_eq!((wire.len(), wire[2]), (MAX_FRAME_LEN, 0xFF));
        let read_with_data = Frame {
            data: vec![1],
            ..Frame::read(DataId(1))
        };
        assert!(read_with_data.encode().is_err());
    }

    fn frame_strategy() -> impl Strategy<Value = Frame> {
        (
            0usize..3,
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..=MAX_DATA_LEN),
        )
            .prop_map(|(c, id, data)| {
                let command = [Command::Read, Command::Write, Command::Reply][c];
                let data = if command == Command::Read {
                    Vec::new()
                } else {
                    data
                };
                Frame {
                    command,
                    id: DataId(id),
                    data,
                }
            })
    }

    proptest! {
        #[test]
        fn frames_round_trip_in_any_split_behind_noise(
            frames in proptest::collection::vec(frame_strategy(), 1..4),
            noise in proptest::collection::vec(any::<u8>().prop_filter("no STX", |b| *b != STX), 0..16),
            chunk in 1usize..64,
        ) {
            let mut wire = noise.clone();
            for f in &frames {
                wire.extend(f.encode().unwrap());
            }
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                d.extend(piece);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            prop_assert_eq!(got, frames);
            prop_assert_eq!(d.skipped(), noise.len());
            prop_assert_eq!(d.buffered(), 0);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_only_yield_frames_that_were_sent(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            chunk in 1usize..32,
        ) {
            let mut d = FrameDecoder::new();
            for piece in bytes.chunks(chunk) {
                d.extend(piece);
                loop {
                    match d.next_frame() {
                        Ok(Some(f)) => {
                            // Whatever it returns is a valid frame present in the input.
                            let wire = f.encode().unwrap();
                            prop_assert!(bytes.windows(wire.len()).any(|w| w == wire.as_slice()));
                        }
                        Ok(None) => break,
                        Err(_) => {}
                    }
                }
            }
            prop_assert!(d.buffered() < MAX_FRAME_LEN);
        }
    }
}
