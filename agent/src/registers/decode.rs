//! Raw Modbus words/bits → engineering values.
//!
//! Register bytes arrive big-endian (Modbus Application Protocol V1.1b3 §4.2);
//! tokio-modbus already hands us `u16`s, so decoding is about sign, word order,
//! bit selection and scaling.

use super::{DataType, PointSpec, WordOrder};

/// Why raw data could not become a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer words/bits were supplied than the data type needs.
    #[error("need {needed} raw item(s) for {data_type:?}, got {got}")]
    TooShort {
        /// The point's data type.
        data_type: DataType,
        /// Items needed.
        needed: usize,
        /// Items supplied.
        got: usize,
    },
    /// A `Bool` point in a register has no bit index, or the index is above 15.
    #[error("bool point needs a bit index 0..=15, got {0:?}")]
    BadBit(Option<u8>),
    /// A float register pair holds NaN or infinity.
    #[error("register pair does not hold a finite number")]
    NotFinite,
}

/// Decode a register point from the words read at its address (`words[0]` is
/// the register at `spec.address`). Extra trailing words are ignored.
pub fn decode_registers(spec: &PointSpec, words: &[u16]) -> Result<f64, DecodeError> {
    let needed = usize::from(spec.data_type.width());
    if words.len() < needed {
        return Err(DecodeError::TooShort {
            data_type: spec.data_type,
            needed,
            got: words.len(),
        });
    }
    let pair = || -> u32 {
        let (hi, lo) = match spec.word_order {
            WordOrder::HighFirst => (words[0], words[1]),
            WordOrder::LowFirst => (words[1], words[0]),
        };
        (u32::from(hi) << 16) | u32::from(lo)
    };
    let raw = match spec.data_type {
        DataType::I16 => f64::from(words[0] as i16),
        DataType::U16 | DataType::Bits16 => f64::from(words[0]),
        DataType::I32 => f64::from(pair() as i32),
        DataType::U32 => f64::from(pair()),
        DataType::F32 => {
            let v = f32::from_bits(pair());
            if !v.is_finite() {
                return Err(DecodeError::NotFinite);
            }
            // A float carries its own precision; rounding is for scaled integers.
            return Ok(f64::from(v) * spec.scale + spec.offset);
        }
        DataType::Bool => {
            let bit = match spec.bit {
                Some(b) if b < 16 => b,
                other => return Err(DecodeError::BadBit(other)),
            };
            // A lamp is on/off: scale and offset do not apply.
            return Ok(if words[0] & (1 << bit) != 0 { 1.0 } else { 0.0 });
        }
    };
    Ok(apply_scale(spec, raw))
}

/// Decode a coil/discrete-input point from the bits read at its address.
pub fn decode_bits(spec: &PointSpec, bits: &[bool]) -> Result<f64, DecodeError> {
    match bits.first() {
        Some(&on) => Ok(if on { 1.0 } else { 0.0 }),
        None => Err(DecodeError::TooShort {
            data_type: spec.data_type,
            needed: 1,
            got: 0,
        }),
    }
}

fn apply_scale(spec: &PointSpec, raw: f64) -> f64 {
    let v = raw * spec.scale + spec.offset;
    // Scaling by 0.01 makes 2150 × 0.01 = 21.500000000000004; round to the
    // precision the scale implies (plus two digits) so the server and the UI see
    // what the controller display shows.
    round_to_scale(v, spec.scale)
}

fn round_to_scale(v: f64, scale: f64) -> f64 {
    if scale == 0.0 || !scale.is_finite() {
        return v;
    }
    let decimals = (-scale.abs().log10()).ceil().clamp(0.0, 9.0) as i32 + 2;
    let factor = 10f64.powi(decimals);
    (v * factor).round() / factor
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registers::{Function, RegisterAddress};

    fn spec(data_type: DataType, scale: f64) -> PointSpec {
        PointSpec {
            function: Function::Holding,
            address: RegisterAddress(0),
            data_type,
            bit: None,
            word_order: WordOrder::HighFirst,
            scale,
            offset: 0.0,
            write_function: crate::registers::WriteFunction::Single,
        }
    }

    /// Pull the register words out of an FC03/FC04 RTU response ADU.
    fn words_of_response(adu: &[u8]) -> Vec<u16> {
        let byte_count = usize::from(adu[2]);
        adu[3..3 + byte_count]
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn spec_vector_fc03_response_decodes_250_and_minus_100_as_i16() {
        let adu = [
            0x01, // slave 1
            0x03, // FC03 read holding registers
            0x04, // byte count: 2 registers
            0x00, 0xFA, // 0x00FA = 250
            0xFF, 0x9C, // 0xFF9C = -100 as i16
            0x9B, 0x9B, // CRC lo, hi
        ];
        let words = words_of_response(&adu);
        assert_eq!(
            decode_registers(&spec(DataType::I16, 1.0), &words[0..]).unwrap(),
            250.0
        );
        assert_eq!(
            decode_registers(&spec(DataType::I16, 1.0), &words[1..]).unwrap(),
            -100.0
        );
        assert_eq!(
            decode_registers(&spec(DataType::U16, 1.0), &words[1..]).unwrap(),
            65436.0
        );
    }

    #[test]
    fn spec_vector_modicon_response_decodes_as_u16_and_i32() {
        let adu = [
            0x11, // slave 17
            0x03, // FC03
            0x06, // byte count: 3 registers
            0xAE, 0x41, // 0xAE41
            0x56, 0x52, // 0x5652
            0x43, 0x40, // 0x4340
            0x49, 0xAD, // CRC lo, hi
        ];
        let words = words_of_response(&adu);
        assert_eq!(words, vec![0xAE41, 0x5652, 0x4340]);
        assert_eq!(
            decode_registers(&spec(DataType::U16, 1.0), &words).unwrap(),
            44609.0
        );
        assert_eq!(
            decode_registers(&spec(DataType::I16, 1.0), &words).unwrap(),
            -20927.0
        );
        let v = decode_registers(&spec(DataType::I32, 1.0), &words).unwrap();
        assert_eq!(v, f64::from(0xAE41_5652u32 as i32));
    }

    #[test]
    fn spec_vector_fc04_input_register_scales_by_a_tenth() {
        let adu = [
            0x01, // slave 1
            0x04, // FC04 read input registers
            0x02, // byte count
            0x00, 0x0A, // 10
            0x39, 0x37, // CRC
        ];
        let words = words_of_response(&adu);
        assert_eq!(
            decode_registers(&spec(DataType::I16, 0.1), &words).unwrap(),
            1.0
        );
    }

    #[test]
    fn temperature_in_hundredths_rounds_to_what_the_display_shows() {
        let s = spec(DataType::I16, 0.01);
        assert_eq!(decode_registers(&s, &[2150]).unwrap(), 21.5);
        assert_eq!(decode_registers(&s, &[(-1234i16) as u16]).unwrap(), -12.34);
        assert_eq!(decode_registers(&s, &[0x8000]).unwrap(), -327.68);
    }

    #[test]
    fn word_order_low_first_swaps_the_registers() {
        let mut s = spec(DataType::U32, 1.0);
        assert_eq!(decode_registers(&s, &[0x0001, 0x0002]).unwrap(), 65538.0);
        s.word_order = WordOrder::LowFirst;
        assert_eq!(decode_registers(&s, &[0x0002, 0x0001]).unwrap(), 65538.0);
    }

    #[test]
    fn f32_decodes_ieee754_and_refuses_nan() {
        let s = spec(DataType::F32, 1.0);
        let bits = 21.5f32.to_bits();
        assert_eq!(
            decode_registers(&s, &[(bits >> 16) as u16, bits as u16]).unwrap(),
            21.5
        );
        assert_eq!(
            decode_registers(&s, &[0x7FC0, 0x0000]),
            Err(DecodeError::NotFinite)
        );
    }

    #[test]
    fn offset_is_added_after_scaling() {
        let mut s = spec(DataType::U16, 0.5);
        s.offset = -40.0;
        assert_eq!(decode_registers(&s, &[100]).unwrap(), 10.0);
    }

    #[test]
    fn bool_selects_one_bit_of_the_status_word_and_ignores_scale() {
        let mut s = spec(DataType::Bool, 0.01);
        s.bit = Some(2);
        assert_eq!(decode_registers(&s, &[0b0100]).unwrap(), 1.0);
        assert_eq!(decode_registers(&s, &[0b1011]).unwrap(), 0.0);
        s.bit = None;
        assert_eq!(decode_registers(&s, &[1]), Err(DecodeError::BadBit(None)));
    }

    #[test]
    fn too_few_words_for_a_32_bit_point_is_an_error() {
        let s = spec(DataType::I32, 1.0);
        assert!(matches!(
            decode_registers(&s, &[1]),
            Err(DecodeError::TooShort {
                needed: 2,
                got: 1,
                ..
            })
        ));
    }

    #[test]
    fn spec_vector_fc01_coil_bits_decode_lsb_first() {
        let adu = [
            0x01, // slave 1
            0x01, // FC01 read coils (19 from 0x13)
            0x03, // byte count
            0xCD, 0x6B, 0x05, // coils 0x13.. LSB first
            0x42, 0x82, // CRC
        ];
        let bits: Vec<bool> = adu[3..6]
            .iter()
            .flat_map(|b| (0..8).map(move |i| b & (1 << i) != 0))
            .collect();
        let mut s = spec(DataType::Bool, 1.0);
        s.function = Function::Coil;
        // 0xCD = 1100_1101: coil 0x13 on, 0x14 off, 0x15 on.
        assert_eq!(decode_bits(&s, &bits[0..]).unwrap(), 1.0);
        assert_eq!(decode_bits(&s, &bits[1..]).unwrap(), 0.0);
        assert_eq!(decode_bits(&s, &bits[2..]).unwrap(), 1.0);
    }
}
