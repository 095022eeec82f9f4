//! POP framing (pure): `device, function, 0x80 | len, data (1..=123), checksum`
//! with `checksum = xor(every preceding byte) ^ 0x80`
//! (`shared/reference/pop-protocol.md`, "Frame").
//!
//! The frame has no start marker, so the decoder finds frames by shape: the
//! third byte must have its high bit set and announce 1..=123 data bytes, and
//! the last byte must be the checksum. Bytes that cannot start a frame (third
//! byte without the high bit) are line noise and dropped silently; a frame of
//! the right shape but with an impossible length or a wrong checksum is a
//! typed [`FrameError`], and only its first byte is consumed, so decoding
//! again resynchronises on whatever frame starts inside it.
//!
//! A candidate that claims more bytes than have arrived makes [`PopCodec::decode`]
//! wait. On a line that then falls silent (the rest would have arrived by
//! now), [`PopCodec::decode_idle`] treats such a truncated candidate as noise,
//! the way Modbus RTU ends a frame at a silent interval (Modbus over Serial
//! Line V1.02 §2.5.1.1); without it one stray byte with the high bit set
//! could hold a real reply hostage until more traffic arrived.

use tokio_util::bytes::{Buf as _, BytesMut};

/// Fewest data bytes a frame carries.
pub const MIN_DATA: usize = 1;
/// Most data bytes a frame carries: 127-byte messages less the 4 fixed bytes.
pub const MAX_DATA: usize = 123;
/// device, function, length and checksum.
pub const OVERHEAD: usize = 4;
/// The longest frame on the line, in bytes.
pub const MAX_FRAME: usize = MAX_DATA + OVERHEAD;
/// The length byte carries the data length with this bit set.
pub const LENGTH_FLAG: u8 = 0x80;

/// One POP message: whom it is for (requests) or from (replies), what it
/// asks, and its data. The checksum is added on encode and checked on decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Board number, 0..=255.
    pub device: u8,
    /// Function code (see [`super::message::Function`]).
    pub function: u8,
    /// 1..=123 bytes laid out per function ([`super::message`]).
    pub data: Vec<u8>,
}

/// Why bytes on the line are not a valid POP frame, or a frame cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A length byte with the high bit set but announcing 0 or more than 123
    /// data bytes.
    #[error("length byte 0x{byte:02X} announces {len} data bytes (1..={MAX_DATA} allowed)")]
    BadLength {
        /// The length byte as received.
        byte: u8,
        /// Its low seven bits.
        len: usize,
    },
    /// The checksum byte does not match the frame's bytes.
    #[error(
        "checksum mismatch in a frame for device {device} function 0x{function:02X}: \
         frame says 0x{received:02X}, bytes give 0x{computed:02X}"
    )]
    BadChecksum {
        /// The frame's device byte (whose frame it claims to be).
        device: u8,
        /// The frame's function byte.
        function: u8,
        /// The checksum byte received.
        received: u8,
        /// The checksum of the bytes received.
        computed: u8,
    },
    /// Data of a length that cannot be framed (encoding).
    #[error("{0} data bytes cannot be framed (1..={MAX_DATA})")]
    DataLength(usize),
}

/// XOR of `bytes`, then 0x80 flipped: what the last byte of a frame holds.
///
/// pop-protocol.md words it as "0x80 subtracted (mod 256)"; subtracting
/// 0x80 modulo 256 only flips the top bit, so it is the same as `^ 0x80`.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |x, &b| x ^ b) ^ 0x80
}

/// The bytes of `frame` on the wire.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, FrameError> {
    let n = frame.data.len();
    if !(MIN_DATA..=MAX_DATA).contains(&n) {
        return Err(FrameError::DataLength(n));
    }
    let mut wire = Vec::with_capacity(n + OVERHEAD);
    wire.push(frame.device);
    wire.push(frame.function);
    // `n` <= 123, so it fits the low seven bits.
    wire.push(LENGTH_FLAG | n as u8);
    wire.extend_from_slice(&frame.data);
    wire.push(checksum(&wire));
    Ok(wire)
}

/// The incremental POP frame decoder. Stateless: each call looks at the
/// buffer afresh, and every `Some` or `Err` consumes input.
#[derive(Debug, Clone, Copy, Default)]
pub struct PopCodec;

/// What the buffer holds at its start.
enum Head {
    /// Fewer than three bytes, or a candidate still missing bytes.
    Incomplete,
    /// The first byte cannot start a frame.
    Noise,
    /// A well-shaped candidate with an impossible length.
    BadLength(FrameError),
    /// A complete candidate of `total` bytes.
    Complete(usize),
}

fn head(buf: &[u8]) -> Head {
    let Some(&len_byte) = buf.get(2) else {
        return Head::Incomplete;
    };
    if len_byte & LENGTH_FLAG == 0 {
        return Head::Noise;
    }
    let len = usize::from(len_byte & !LENGTH_FLAG);
    if !(MIN_DATA..=MAX_DATA).contains(&len) {
        return Head::BadLength(FrameError::BadLength {
            byte: len_byte,
            len,
        });
    }
    let total = len + OVERHEAD;
    if buf.len() < total {
        Head::Incomplete
    } else {
        Head::Complete(total)
    }
}

impl PopCodec {
    /// The next frame at the start of `buf`, dropping noise before it.
    /// `Ok(None)`: more bytes are needed (nothing useful is consumed).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        self.next(buf, false)
    }

    /// Like [`PopCodec::decode`], for a line that has fallen silent: a
    /// candidate still missing bytes will never complete, so it is dropped
    /// as noise (one byte at a time) and a frame starting inside it is still
    /// found. `Ok(None)` here means the buffer is empty.
    pub fn decode_idle(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        self.next(buf, true)
    }

    fn next(&mut self, buf: &mut BytesMut, idle: bool) -> Result<Option<Frame>, FrameError> {
        loop {
            match head(buf) {
                Head::Incomplete if idle && !buf.is_empty() => buf.advance(1),
                Head::Incomplete => return Ok(None),
                Head::Noise => buf.advance(1),
                Head::BadLength(e) => {
                    buf.advance(1);
                    return Err(e);
                }
                Head::Complete(total) => {
                    let (content, last) = (&buf[..total - 1], buf[total - 1]);
                    let computed = checksum(content);
                    if computed != last {
                        let e = FrameError::BadChecksum {
                            device: buf[0],
                            function: buf[1],
                            received: last,
                            computed,
                        };
                        buf.advance(1);
                        return Err(e);
                    }
                    let frame = buf.split_to(total);
                    return Ok(Some(Frame {
                        device: frame[0],
                        function: frame[1],
                        data: frame[3..total - 1].to_vec(),
                    }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tokio_util::bytes::BufMut as _;

    use super::*;

    fn frame(device: u8, function: u8, data: &[u8]) -> Frame {
        Frame {
            device,
            function,
            data: data.to_vec(),
        }
    }

    fn decode_all(bytes: &[u8], idle: bool) -> Vec<Result<Frame, FrameError>> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            let got = if idle {
                PopCodec.decode_idle(&mut buf)
            } else {
                PopCodec.decode(&mut buf)
            };
            match got {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => return out,
                Err(e) => out.push(Err(e)),
            }
        }
    }

    /// Hand-computed frames: the XOR is worked out byte by byte in the comment.
    const VECTORS: [(&[u8], u8, u8, &[u8]); 5] = [
        // board 1, fn 0x01 read rooms, len 0x82 (2), data 01 08 (rooms 1..=8):
        // 01^01=00, ^82=82, ^01=83, ^08=8B; ^80 -> 0B
        (
            &[0x01, 0x01, 0x82, 0x01, 0x08, 0x0B],
            0x01,
            0x01,
            &[0x01, 0x08],
        ),
        // board 2, fn 0x02 read outputs, len 0x81, data 00:
        // 02^02=00, ^81=81, ^00=81; ^80 -> 01
        (&[0x02, 0x02, 0x81, 0x00, 0x01], 0x02, 0x02, &[0x00]),
        // board 1, fn 0x11 set setpoint, len 0x84, data 03 00 00 E1 (room 3 floor 22.5 °C):
        // 01^11=10, ^84=94, ^03=97, ^00=97, ^00=97, ^E1=76; ^80 -> F6
        (
            &[0x01, 0x11, 0x84, 0x03, 0x00, 0x00, 0xE1, 0xF6],
            0x01,
            0x11,
            &[0x03, 0x00, 0x00, 0xE1],
        ),
        // board 0, fn 0x12 set output, len 0x82, data 02 01 (output 2 on by hand):
        // 00^12=12, ^82=90, ^02=92, ^01=93; ^80 -> 13
        (
            &[0x00, 0x12, 0x82, 0x02, 0x01, 0x13],
            0x00,
            0x12,
            &[0x02, 0x01],
        ),
        // board 255, fn 0x04 read alarms, len 0x81, data 00:
        // FF^04=FB, ^81=7A, ^00=7A; ^80 -> FA
        (&[0xFF, 0x04, 0x81, 0x00, 0xFA], 0xFF, 0x04, &[0x00]),
    ];

    #[test]
    fn checksum_is_the_xor_with_the_top_bit_flipped() {
        // 01 01 82 01 08: xor 0x8B -> 0x0B
        assert_eq!(checksum(&[0x01, 0x01, 0x82, 0x01, 0x08]), 0x0B);
        // nothing: xor 0 -> 0x80
        assert_eq!(checksum(&[]), 0x80);
        // "xor minus 0x80 mod 256" is the same number for every xor value
        for x in 0..=255u8 {
            assert_eq!(checksum(&[x]), x.wrapping_sub(0x80));
        }
    }

    #[test]
    fn hand_computed_vectors_encode_and_decode() {
        for (wire, device, function, data) in VECTORS {
            let f = frame(device, function, data);
            assert_eq!(encode(&f).unwrap(), wire, "{f:?}");
            let mut buf = BytesMut::from(wire);
            assert_eq!(PopCodec.decode(&mut buf), Ok(Some(f)));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn bytes_arriving_one_at_a_time_wait_for_the_whole_frame() {
        let (wire, device, function, data) = VECTORS[2];
        let mut buf = BytesMut::new();
        for (i, &b) in wire.iter().enumerate() {
            buf.put_u8(b);
            let got = PopCodec.decode(&mut buf).unwrap();
            if i + 1 < wire.len() {
                assert_eq!(got, None, "after {} bytes", i + 1);
                assert_eq!(buf.len(), i + 1, "nothing consumed while waiting");
            } else {
                assert_eq!(got, Some(frame(device, function, data)));
            }
        }
    }

    #[test]
    fn decode_skips_leading_garbage() {
        // 13 37 05: no high bit in a third position, dropped; then board 2 read outputs
        let wire = [0x13, 0x37, 0x05, 0x02, 0x02, 0x81, 0x00, 0x01];
        assert_eq!(decode_all(&wire, false), [Ok(frame(2, 2, &[0]))]);
    }

    #[test]
    fn two_frames_back_to_back_both_decode() {
        // a keypad request to board 1 then board 2's read-outputs request
        let mut wire = VECTORS[0].0.to_vec();
        wire.extend_from_slice(VECTORS[1].0);
        assert_eq!(
            decode_all(&wire, false),
            [Ok(frame(1, 1, &[1, 8])), Ok(frame(2, 2, &[0]))]
        );
    }

    #[test]
    fn a_bad_checksum_is_a_typed_error_and_the_next_frame_still_decodes() {
        // board 1 read rooms 1..=8 with checksum 0C instead of 0B, then the good frame
        let mut wire = vec![0x01, 0x01, 0x82, 0x01, 0x08, 0x0C];
        wire.extend_from_slice(VECTORS[0].0);
        let out = decode_all(&wire, false);
        assert_eq!(
            out.first(),
            Some(&Err(FrameError::BadChecksum {
                device: 1,
                function: 1,
                received: 0x0C,
                computed: 0x0B
            }))
        );
        assert_eq!(out.last(), Some(&Ok(frame(1, 1, &[1, 8]))));
    }

    #[test]
    fn impossible_lengths_are_typed_errors() {
        // len byte 0x80: no data
        let out = decode_all(&[0x01, 0x01, 0x80, 0x00, 0x00], false);
        assert_eq!(
            out.first(),
            Some(&Err(FrameError::BadLength { byte: 0x80, len: 0 }))
        );
        // len byte 0xFC: 124 data bytes, one more than a 127-byte message holds
        let out = decode_all(&[0x01, 0x01, 0xFC], false);
        assert_eq!(
            out.first(),
            Some(&Err(FrameError::BadLength {
                byte: 0xFC,
                len: 124
            }))
        );
    }

    #[test]
    fn the_longest_frame_is_127_bytes_and_longer_data_is_refused() {
        let f = frame(7, 0x01, &[0x55; MAX_DATA]);
        let wire = encode(&f).unwrap();
        assert_eq!(wire.len(), 127);
        assert_eq!(wire[2], 0xFB, "0x80 | 123");
        assert_eq!(decode_all(&wire, false), [Ok(f)]);
        assert_eq!(
            encode(&frame(7, 1, &[0; MAX_DATA + 1])),
            Err(FrameError::DataLength(124))
        );
        assert_eq!(encode(&frame(7, 1, &[])), Err(FrameError::DataLength(0)));
    }

    #[test]
    fn a_truncated_frame_holds_the_decoder_until_the_line_falls_silent() {
        // a stray 0xC0 claims 64 data bytes: 00 00 C0 ..., then board 2's short frame
        let mut wire = vec![0x00, 0x00, 0xC0];
        wire.extend_from_slice(VECTORS[1].0);
        assert_eq!(decode_all(&wire, false), []);
        // silence: the claim cannot be true; the real frame inside it is found
        assert_eq!(decode_all(&wire, true), [Ok(frame(2, 2, &[0]))]);
        // and the idle decoder leaves nothing behind
        let mut buf = BytesMut::from(&wire[..]);
        while PopCodec.decode_idle(&mut buf).unwrap().is_some() {}
        assert!(buf.is_empty());
    }

    fn frames() -> impl Strategy<Value = Frame> {
        (
            any::<u8>(),
            any::<u8>(),
            prop::collection::vec(any::<u8>(), MIN_DATA..=MAX_DATA),
        )
            .prop_map(|(device, function, data)| Frame {
                device,
                function,
                data,
            })
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips_in_any_split(f in frames(), cut in any::<prop::sample::Index>()) {
            let wire = encode(&f).unwrap();
            prop_assert_eq!(wire.len(), f.data.len() + OVERHEAD);
            prop_assert_eq!(wire[2], 0x80 | f.data.len() as u8);
            let cut = cut.index(wire.len());
            let mut buf = BytesMut::from(&wire[..cut]);
            prop_assert_eq!(PopCodec.decode(&mut buf), Ok(None));
            buf.extend_from_slice(&wire[cut..]);
            prop_assert_eq!(PopCodec.decode(&mut buf), Ok(Some(f)));
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn a_frame_after_noise_without_high_bits_is_found(
            noise in prop::collection::vec(0u8..0x80, 0..40),
            device in 0u8..0x80,
            function in 0u8..0x80,
            data in prop::collection::vec(any::<u8>(), MIN_DATA..=MAX_DATA),
        ) {
            // Without high bits before the length byte nothing in front can pose as a frame.
            let f = Frame { device, function, data };
            let mut wire = noise;
            wire.extend(encode(&f).unwrap());
            prop_assert_eq!(decode_all(&wire, false), vec![Ok(f)]);
        }

        #[test]
        fn any_flipped_bit_outside_the_length_byte_is_caught(f in frames(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut wire = encode(&f).unwrap();
            let i = at.index(wire.len());
            prop_assume!(i != 2);
            wire[i] ^= 1 << bit;
            let mut buf = BytesMut::from(&wire[..]);
            let got = PopCodec.decode(&mut buf);
            prop_assert!(matches!(got, Err(FrameError::BadChecksum { .. })), "{:?}", got);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics_and_always_progresses(bytes in prop::collection::vec(any::<u8>(), 0..600), idle in any::<bool>()) {
            let mut buf = BytesMut::from(&bytes[..]);
            for _ in 0..=bytes.len() {
                let before = buf.len();
                let got = if idle { PopCodec.decode_idle(&mut buf) } else { PopCodec.decode(&mut buf) };
                match got {
                    Ok(None) => break,
                    _ => prop_assert!(buf.len() < before),
                }
            }
            if idle {
                prop_assert!(buf.is_empty(), "an idle line leaves nothing undecided");
            }
        }
    }
}
