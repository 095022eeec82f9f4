//! Modbus ASCII framing (Modbus over Serial Line V1.02 §2.5.2) as a
//! `tokio_util::codec` pair, in the style of tokio-modbus's RTU codec.
//!
//! A frame is `':'`, then address, PDU and LRC each as two hex digits, then
//! CR LF; at most 513 characters (`':'` + 2 × (1 + 253 + 1) + CR LF). We send
//! uppercase hex and accept lowercase. The decoder drops anything before a
//! `':'` (line noise, a half frame) and, because a `':'` always starts a new
//! frame (§2.5.2.1), abandons an unterminated frame when another `':'` arrives.
//! A frame that is complete but wrong (bad hex, odd length, bad LRC, too long)
//! is consumed from the buffer *before* the error is returned, so calling
//! `decode` again resynchronises on the next `':'`. Note that a
//! `FramedRead` stops after the first error; the ASCII client therefore calls
//! [`AsciiCodec::decode`](Decoder::decode) itself.

use tokio_util::{
    bytes::{Buf as _, BufMut as _, BytesMut},
    codec::{Decoder, Encoder},
};

use super::pdu::MAX_PDU_LEN;

/// §2.5.2: the longest ASCII frame, in characters.
pub const MAX_FRAME_CHARS: usize = 513;

const START: u8 = b':';
const CR: u8 = b'\r';
const LF: u8 = b'\n';

/// One ASCII ADU, decoded from hex: the device address and the PDU bytes
/// (function code first). The LRC is checked on decode and added on encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsciiFrame {
    /// 0 = broadcast, 1..=247 a device (Serial Line V1.02 §2.2).
    pub address: u8,
    /// Function code and data, 1..=253 bytes.
    pub pdu: Vec<u8>,
}

/// Why bytes on the line are not a valid ASCII frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A character that is not a hex digit between `':'` and CR LF.
    #[error("non-hex character 0x{byte:02X} at offset {offset} of an ASCII frame")]
    BadHex {
        /// The character.
        byte: u8,
        /// Its offset from the `':'`.
        offset: usize,
    },
    /// An odd number of hex digits (half a byte).
    #[error("ASCII frame has an odd number ({0}) of hex digits")]
    OddLength(usize),
    /// The LF is not preceded by CR.
    #[error("ASCII frame ends in LF without CR")]
    MissingCr,
    /// Fewer than address + function + LRC.
    #[error("ASCII frame of {0} bytes is too short (address, function and LRC are needed)")]
    TooShort(usize),
    /// More than 513 characters without a complete frame.
    #[error("ASCII frame longer than {MAX_FRAME_CHARS} characters ({0} so far)")]
    TooLong(usize),
    /// The LRC does not match the bytes.
    #[error("LRC mismatch: frame says 0x{received:02X}, bytes give 0x{computed:02X}")]
    BadLrc {
        /// The LRC in the frame.
        received: u8,
        /// The LRC of its address and PDU.
        computed: u8,
    },
    /// A PDU that cannot be framed (empty or over 253 bytes).
    #[error("PDU of {0} bytes cannot be framed (1..=253)")]
    PduLength(usize),
    /// Reading or writing the line failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// LRC (§2.5.2.2): the two's complement of the 8-bit sum of the *binary*
/// bytes (address and PDU), not of their hex text.
pub fn lrc(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |s, &b| s.wrapping_add(b))
        .wrapping_neg()
}

/// The ASCII frame codec. Stateless: every call looks at the buffer afresh.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsciiCodec;

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

impl Decoder for AsciiCodec {
    type Item = AsciiFrame;
    type Error = FrameError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<AsciiFrame>, FrameError> {
        loop {
            // Skip to the start of a frame; without one everything is noise.
            match buf.iter().position(|&b| b == START) {
                Some(0) => {}
                Some(i) => buf.advance(i),
                None => {
                    buf.clear();
                    return Ok(None);
                }
            }
            // The frame ends at LF, or is abandoned at the next ':'.
            let end = buf[1..]
                .iter()
                .position(|&b| b == LF || b == START)
                .map(|i| i + 1);
            let Some(end) = end else {
                if buf.len() > MAX_FRAME_CHARS {
                    let n = buf.len();
                    // Drop this ':' so the next call looks for a fresh one.
                    buf.advance(1);
                    return Err(FrameError::TooLong(n));
                }
                return Ok(None);
            };
            if buf[end] == START {
                // §2.5.2.1: a ':' restarts reception; the partial frame is discarded.
                buf.advance(end);
                continue;
            }
            let frame = buf.split_to(end + 1);
            return parse(&frame).map(Some);
        }
    }
}

/// `frame` runs from ':' to LF inclusive.
fn parse(frame: &[u8]) -> Result<AsciiFrame, FrameError> {
    if frame.len() > MAX_FRAME_CHARS {
        return Err(FrameError::TooLong(frame.len()));
    }
    let body = match frame {
        [START, body @ .., CR, LF] => body,
        _ => return Err(FrameError::MissingCr),
    };
    if body.len() % 2 != 0 {
        return Err(FrameError::OddLength(body.len()));
    }
    let mut bytes = Vec::with_capacity(body.len() / 2);
    for (i, pair) in body.chunks_exact(2).enumerate() {
        let digit = |k: usize| {
            hex_value(pair[k]).ok_or(FrameError::BadHex {
                byte: pair[k],
                offset: 1 + 2 * i + k,
            })
        };
        bytes.push((digit(0)? << 4) | digit(1)?);
    }
    // address, function, LRC at least
    if bytes.len() < 3 {
        return Err(FrameError::TooShort(bytes.len()));
    }
    let (received, content) = match bytes.split_last() {
        Some((l, c)) => (*l, c),
        None => return Err(FrameError::TooShort(0)),
    };
    let computed = lrc(content);
    if received != computed {
        return Err(FrameError::BadLrc { received, computed });
    }
    Ok(AsciiFrame {
        address: content[0],
        pdu: content[1..].to_vec(),
    })
}

impl Encoder<&AsciiFrame> for AsciiCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: &AsciiFrame, dst: &mut BytesMut) -> Result<(), FrameError> {
        if frame.pdu.is_empty() || frame.pdu.len() > MAX_PDU_LEN {
            return Err(FrameError::PduLength(frame.pdu.len()));
        }
        let mut check = lrc(&frame.pdu);
        check = check.wrapping_sub(frame.address);
        dst.reserve(1 + 2 * (frame.pdu.len() + 2) + 2);
        dst.put_u8(START);
        for b in std::iter::once(frame.address)
            .chain(frame.pdu.iter().copied())
            .chain(std::iter::once(check))
        {
            dst.put_u8(HEX[usize::from(b >> 4)]);
            dst.put_u8(HEX[usize::from(b & 0x0F)]);
        }
        dst.put_slice(&[CR, LF]);
        Ok(())
    }
}

impl Encoder<AsciiFrame> for AsciiCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: AsciiFrame, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(&frame, dst)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn frame(address: u8, pdu: &[u8]) -> AsciiFrame {
        AsciiFrame {
            address,
            pdu: pdu.to_vec(),
        }
    }

    fn encode(f: &AsciiFrame) -> Vec<u8> {
        let mut b = BytesMut::new();
        AsciiCodec.encode(f, &mut b).unwrap();
        b.to_vec()
    }

    /// Decode everything in `bytes`, collecting frames and errors in order.
    fn decode_all(bytes: &[u8]) -> Vec<Result<AsciiFrame, String>> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match AsciiCodec.decode(&mut buf) {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => return out,
                Err(e) => out.push(Err(e.to_string())),
            }
        }
    }

    /// Serial Line V1.02 §2.5.2 / device-protocols.md §2.7 ASCII vectors.
    const VECTORS: [(&[u8], u8, &[u8]); 5] = [
        // unit 1, FC03 read 1 HR from 0x0000; sum 0x05 -> LRC 0xFB
        (
            b":010300000001FB\r\n",
            0x01,
            &[0x03, 0x00, 0x00, 0x00, 0x01],
        ),
        // unit 17, FC03 read 3 HR from 0x006B; sum 0x82 -> LRC 0x7E (classic Modicon example)
        (
            b":1103006B00037E\r\n",
            0x11,
            &[0x03, 0x00, 0x6B, 0x00, 0x03],
        ),
        // unit 1, FC01 read 16 coils from 0x0002; LRC 0xEC (stm8ef-modbus issue #7 capture)
        (
            b":010100020010EC\r\n",
            0x01,
            &[0x01, 0x00, 0x02, 0x00, 0x10],
        ),
        // unit 1, FC03 read 2 HR from 0x0258; LRC 0xA0 (Raycast Modbus toolkit)
        (
            b":010302580002A0\r\n",
            0x01,
            &[0x03, 0x02, 0x58, 0x00, 0x02],
        ),
        // unit 247, FC03 read 10 HR from 0x1389; LRC 0x60
        (
            b":F7031389000A60\r\n",
            0xF7,
            &[0x03, 0x13, 0x89, 0x00, 0x0A],
        ),
    ];

    #[test]
    fn lrc_is_the_twos_complement_of_the_binary_byte_sum() {
        // 01 03 00 00 00 01 -> sum 0x05 -> 0xFB
        assert_eq!(lrc(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x01]), 0xFB);
        // 11 03 00 6B 00 03 -> sum 0x82 -> 0x7E
        assert_eq!(lrc(&[0x11, 0x03, 0x00, 0x6B, 0x00, 0x03]), 0x7E);
        // sum with carries discarded: FF FF -> 0xFE -> 0x02
        assert_eq!(lrc(&[0xFF, 0xFF]), 0x02);
        // empty sum -> 0x00
        assert_eq!(lrc(&[]), 0x00);
    }

    #[test]
    fn spec_vectors_encode_and_decode() {
        for (wire, address, pdu) in VECTORS {
            let f = frame(address, pdu);
            assert_eq!(encode(&f), wire, "{}", String::from_utf8_lossy(wire));
            let mut buf = BytesMut::from(wire);
            assert_eq!(AsciiCodec.decode(&mut buf).unwrap(), Some(f));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn exception_replies_decode() {
        // unit 1, 0x83 = FC03 exception, code 02 ILLEGAL DATA ADDRESS; sum 0x86 -> LRC 0x7A
        assert_eq!(decode_all(b":0183027A\r\n"), [Ok(frame(1, &[0x83, 0x02]))]);
        // unit 1, 0x81 = FC01 exception, code 01 ILLEGAL FUNCTION; sum 0x83 -> LRC 0x7D
        assert_eq!(decode_all(b":0181017D\r\n"), [Ok(frame(1, &[0x81, 0x01]))]);
    }

    #[test]
    fn lowercase_hex_is_accepted() {
        // unit 17, FC03 read 3 from 0x006b, lrc 7e, all lowercase
        assert_eq!(
            decode_all(b":1103006b00037e\r\n"),
            [Ok(frame(0x11, &[0x03, 0x00, 0x6B, 0x00, 0x03]))]
        );
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let wire = b":1103006B00037E\r\n";
        let mut buf = BytesMut::new();
        for (i, &b) in wire.iter().enumerate() {
            buf.put_u8(b);
            let got = AsciiCodec.decode(&mut buf).unwrap();
            if i + 1 < wire.len() {
                assert_eq!(got, None, "after {} bytes", i + 1);
            } else {
                assert_eq!(got, Some(frame(0x11, &[0x03, 0x00, 0x6B, 0x00, 0x03])));
            }
        }
        // CR received, LF not yet: still incomplete.
        let mut buf = BytesMut::from(&b":010300000001FB\r"[..]);
        assert_eq!(AsciiCodec.decode(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), 16, "nothing consumed while waiting");
    }

    #[test]
    fn decode_skips_leading_garbage() {
        // noise bytes, then unit 1 FC03 read 1 from 0
        assert_eq!(
            decode_all(b"\x00\xFFnoise\r\n:010300000001FB\r\n"),
            [Ok(frame(1, &[0x03, 0x00, 0x00, 0x00, 0x01]))]
        );
        // noise alone is dropped without an error
        let mut buf = BytesMut::from(&b"\x13\x37 line noise"[..]);
        assert_eq!(AsciiCodec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_new_colon_abandons_an_unterminated_frame() {
        // half a frame, then unit 17 FC03 read 3 from 0x6B
        assert_eq!(
            decode_all(b":0103000:1103006B00037E\r\n"),
            [Ok(frame(0x11, &[0x03, 0x00, 0x6B, 0x00, 0x03]))]
        );
    }

    #[test]
    fn wrong_lrc_is_an_error_and_the_next_frame_still_decodes() {
        // unit 1 FC03 read 1 from 0 with LRC FC instead of FB, then the good frame
        let out = decode_all(b":010300000001FC\r\n:010300000001FB\r\n");
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0],
            Err("LRC mismatch: frame says 0xFC, bytes give 0xFB".into())
        );
        assert_eq!(out[1], Ok(frame(1, &[0x03, 0x00, 0x00, 0x00, 0x01])));
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        let first_err = |wire: &[u8]| {
            let mut buf = BytesMut::from(wire);
            AsciiCodec.decode(&mut buf).unwrap_err()
        };
        // 'G' is not hex
        assert!(matches!(
            first_err(b":01030000000GFB\r\n"),
            FrameError::BadHex {
                byte: b'G',
                offset: 12
            }
        ));
        // 13 hex digits
        assert!(matches!(
            first_err(b":010300000001F\r\n"),
            FrameError::OddLength(13)
        ));
        // LF without CR
        assert!(matches!(
            first_err(b":010300000001FB\n"),
            FrameError::MissingCr
        ));
        // address and LRC only
        assert!(matches!(first_err(b":01FF\r\n"), FrameError::TooShort(2)));
        // 514 characters without CR LF
        let mut long = vec![b':'];
        long.extend(std::iter::repeat_n(b'0', 513));
        assert!(matches!(first_err(&long), FrameError::TooLong(514)));
        // complete but 515 characters
        let mut long = vec![b':'];
        long.extend(std::iter::repeat_n(b'0', 512));
        long.extend_from_slice(b"\r\n");
        assert!(matches!(first_err(&long), FrameError::TooLong(515)));
    }

    #[test]
    fn the_longest_frame_is_513_characters() {
        let f = frame(1, &[0x10; MAX_PDU_LEN]);
        let wire = encode(&f);
        assert_eq!(wire.len(), MAX_FRAME_CHARS);
        assert_eq!(decode_all(&wire), [Ok(f)]);
        let mut b = BytesMut::new();
        assert!(matches!(
            AsciiCodec.encode(&frame(1, &[0; MAX_PDU_LEN + 1]), &mut b),
            Err(FrameError::PduLength(254))
        ));
        assert!(matches!(
            AsciiCodec.encode(&frame(1, &[]), &mut b),
            Err(FrameError::PduLength(0))
        ));
    }

    #[test]
    fn a_too_long_frame_resynchronises_on_the_next_colon() {
        let mut wire = vec![b':'];
        wire.extend(std::iter::repeat_n(b'A', 600));
        wire.extend_from_slice(b"\r\n:010300000001FB\r\n");
        let out = decode_all(&wire);
        assert!(matches!(out.first(), Some(Err(e)) if e.contains("longer than")));
        assert_eq!(
            out.last(),
            Some(&Ok(frame(1, &[0x03, 0x00, 0x00, 0x00, 0x01])))
        );
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(address in any::<u8>(), pdu in prop::collection::vec(any::<u8>(), 1..=MAX_PDU_LEN)) {
            let f = AsciiFrame { address, pdu };
            let wire = encode(&f);
            prop_assert!(wire.len() <= MAX_FRAME_CHARS);
            prop_assert!(wire[1..wire.len() - 2].iter().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c)));
            // split anywhere: the first half is incomplete, the whole decodes
            let mut buf = BytesMut::from(&wire[..wire.len() / 2]);
            prop_assert_eq!(AsciiCodec.decode(&mut buf).unwrap(), None);
            buf.extend_from_slice(&wire[wire.len() / 2..]);
            prop_assert_eq!(AsciiCodec.decode(&mut buf).unwrap(), Some(f));
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics_and_always_progresses(bytes in prop::collection::vec(any::<u8>(), 0..1200)) {
            let mut buf = BytesMut::from(&bytes[..]);
            // every Some/Err consumes input, so this ends
            for _ in 0..=bytes.len() {
                let before = buf.len();
                match AsciiCodec.decode(&mut buf) {
                    Ok(None) => break,
                    _ => prop_assert!(buf.len() < before),
                }
            }
        }

        #[test]
        fn lowercase_wire_decodes_like_uppercase(address in any::<u8>(), pdu in prop::collection::vec(any::<u8>(), 1..=20)) {
            let f = AsciiFrame { address, pdu };
            let wire = encode(&f).to_ascii_lowercase();
            prop_assert_eq!(decode_all(&wire), vec![Ok(f)]);
        }
    }
}
