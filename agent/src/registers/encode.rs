//! Engineering values → raw Modbus words/bits.
//!
//! The production half of writes ([`super::write`] builds requests from it)
//! and the simulators' way of filling their register banks from the same
//! profile the agent decodes with. It is written independently of
//! [`super::decode`], and its tests check words against vectors and
//! independently computed byte layouts, never against the decoder, so a bug in
//! one cannot hide behind the other in a round trip.

use super::{DataType, PointSpec, WordOrder};

/// Why a value cannot be represented by a point's data type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// The scaled raw value does not fit the data type.
    #[error("value {value} is outside the range of {data_type:?} after scaling")]
    OutOfRange {
        /// The engineering value.
        value: f64,
        /// The point's data type.
        data_type: DataType,
    },
    /// NaN or infinity, or a zero scale.
    #[error("value {0} cannot be encoded")]
    NotFinite(f64),
    /// A `bool` point takes 0 (off) or 1 (on) and nothing else.
    #[error("value {0} is not 0 or 1 for an on/off point")]
    NotBool(f64),
}

/// What encoding a value produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// Whole registers starting at the point's address.
    Words(Vec<u16>),
    /// One bit: a coil/discrete input, or bit `bit` of the register at the
    /// point's address (the caller merges it into the existing word).
    Bit {
        /// Bit index inside the register; 0 for coils and discrete inputs.
        bit: u8,
        /// New state.
        on: bool,
    },
}

/// Encode `value` (engineering units) for `spec`: raw = (value − offset) /
/// scale, rounded to the nearest integer for integer types, split into
/// registers in the point's word order (bytes inside a register are always
/// big-endian, Modbus Application Protocol V1.1b3 §4.2). Never panics.
pub fn encode_registers(spec: &PointSpec, value: f64) -> Result<Encoded, EncodeError> {
    if !value.is_finite() {
        return Err(EncodeError::NotFinite(value));
    }
    if spec.data_type == DataType::Bool {
        // A lamp is on/off: scale and offset do not apply (as in decode).
        let on = match value {
            0.0 => false,
            1.0 => true,
            other => return Err(EncodeError::NotBool(other)),
        };
        return Ok(Encoded::Bit {
            bit: spec.bit.unwrap_or(0),
            on,
        });
    }
    if spec.scale == 0.0 || !spec.scale.is_finite() {
        return Err(EncodeError::NotFinite(spec.scale));
    }
    let raw = (value - spec.offset) / spec.scale;
    let out_of_range = || EncodeError::OutOfRange {
        value,
        data_type: spec.data_type,
    };
    // The rounded raw value when it lies in lo..=hi. Every bound used below is
    // exactly representable as f64, so the casts after this check are exact.
    let int_in = |lo: f64, hi: f64| -> Result<f64, EncodeError> {
        let r = raw.round();
        if (lo..=hi).contains(&r) {
            Ok(r)
        } else {
            Err(out_of_range())
        }
    };
    let split = |v: u32| -> Vec<u16> {
        let (hi, lo) = ((v >> 16) as u16, (v & 0xFFFF) as u16);
        match spec.word_order {
            WordOrder::HighFirst => vec![hi, lo],
            WordOrder::LowFirst => vec![lo, hi],
        }
    };
    let words = match spec.data_type {
        DataType::I16 => vec![int_in(f64::from(i16::MIN), f64::from(i16::MAX))? as i16 as u16],
        DataType::U16 | DataType::Bits16 => vec![int_in(0.0, f64::from(u16::MAX))? as u16],
        DataType::I32 => split(int_in(f64::from(i32::MIN), f64::from(i32::MAX))? as i32 as u32),
        DataType::U32 => split(int_in(0.0, f64::from(u32::MAX))? as u32),
        DataType::F32 => {
            // `as f32` saturates to infinity above f32::MAX; refuse that
            // rather than write an infinity the device never asked for.
            let f = raw as f32;
            if !f.is_finite() {
                return Err(out_of_range());
            }
            split(f.to_bits())
        }
        // Handled above; kept as an arm so the match stays exhaustive without a panic.
        DataType::Bool => return Err(EncodeError::NotBool(value)),
    };
    Ok(Encoded::Words(words))
}

/// Set or clear one bit of a register word (bits above 15 change nothing).
pub fn merge_bit(word: u16, bit: u8, on: bool) -> u16 {
    let mask = 1u16.checked_shl(u32::from(bit)).unwrap_or(0);
    if on { word | mask } else { word & !mask }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registers::{Function, RegisterAddress, WriteFunction};
    use proptest::prelude::*;

    fn spec(data_type: DataType, scale: f64, word_order: WordOrder) -> PointSpec {
        PointSpec {
            function: Function::Holding,
            address: RegisterAddress(0),
            data_type,
            bit: None,
            word_order,
            scale,
            offset: 0.0,
            write_function: WriteFunction::Single,
        }
    }

    fn words(e: Encoded) -> Vec<u16> {
        match e {
            Encoded::Words(w) => w,
            Encoded::Bit { .. } => panic!("expected words"),
        }
    }

    /// Words of a big-endian byte string, written out independently of `split`.
    fn be_words(bytes: &[u8]) -> Vec<u16> {
        bytes
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn encoding_vectors() {
        use DataType::*;
        use WordOrder::*;
        let cases: &[(DataType, f64, WordOrder, f64, &[u16])] = &[
            // -100 as i16 two's complement (device-protocols.md §2.7: 0xFF9C = -100)
            (I16, 1.0, HighFirst, -100.0, &[0xFF9C]),
            // 21.5 degC in hundredths = 2150 = 0x0866
            (I16, 0.01, HighFirst, 21.5, &[0x0866]),
            // -5.12 degC in hundredths = -512 = 0xFE00
            (I16, 0.01, HighFirst, -5.12, &[0xFE00]),
            // u16 maximum
            (U16, 1.0, HighFirst, 65535.0, &[0xFFFF]),
            // i32 -123456 = 0xFFFE1DC0: high word first, then swapped
            (I32, 1.0, HighFirst, -123456.0, &[0xFFFE, 0x1DC0]),
            (I32, 1.0, LowFirst, -123456.0, &[0x1DC0, 0xFFFE]),
            // u32 0x12345678 in tenths: 30541989.6 -> 305419896
            (U32, 0.1, HighFirst, 30_541_989.6, &[0x1234, 0x5678]),
            (U32, 0.1, LowFirst, 30_541_989.6, &[0x5678, 0x1234]),
            // f32 1.5 = 0x3FC00000; -2.0 = 0xC0000000
            (F32, 1.0, HighFirst, 1.5, &[0x3FC0, 0x0000]),
            (F32, 1.0, LowFirst, -2.0, &[0x0000, 0xC000]),
            // a bit field written whole
            (Bits16, 1.0, HighFirst, 5.0, &[0x0005]),
        ];
        for &(dt, scale, order, value, expected) in cases {
            let got = words(encode_registers(&spec(dt, scale, order), value).unwrap());
            assert_eq!(got, expected, "{dt:?} {order:?} {value}");
        }
    }

    #[test]
    fn an_offset_is_removed_before_scaling() {
        // raw 100 × 0.5 − 40 = 10 degC
        let mut s = spec(DataType::U16, 0.5, WordOrder::HighFirst);
        s.offset = -40.0;
        assert_eq!(words(encode_registers(&s, 10.0).unwrap()), [100]);
    }

    #[test]
    fn a_temperature_outside_i16_after_scaling_is_refused() {
        let s = spec(DataType::I16, 0.01, WordOrder::HighFirst);
        assert!(matches!(
            encode_registers(&s, 400.0),
            Err(EncodeError::OutOfRange { .. })
        ));
        // -1 is outside every unsigned type
        for dt in [DataType::U16, DataType::U32, DataType::Bits16] {
            assert!(matches!(
                encode_registers(&spec(dt, 1.0, WordOrder::HighFirst), -1.0),
                Err(EncodeError::OutOfRange { .. })
            ));
        }
        // 2^31 does not fit i32
        assert!(matches!(
            encode_registers(
                &spec(DataType::I32, 1.0, WordOrder::HighFirst),
                2_147_483_648.0
            ),
            Err(EncodeError::OutOfRange { .. })
        ));
        // above f32::MAX would become infinity
        assert!(matches!(
            encode_registers(&spec(DataType::F32, 1.0, WordOrder::HighFirst), 1e39),
            Err(EncodeError::OutOfRange { .. })
        ));
    }

    #[test]
    fn nan_infinity_and_non_binary_lamp_values_are_refused() {
        let s = spec(DataType::I16, 1.0, WordOrder::HighFirst);
        assert!(matches!(
            encode_registers(&s, f64::NAN),
            Err(EncodeError::NotFinite(_))
        ));
        assert!(matches!(
            encode_registers(&s, f64::INFINITY),
            Err(EncodeError::NotFinite(_))
        ));
        let mut lamp = spec(DataType::Bool, 1.0, WordOrder::HighFirst);
        lamp.bit = Some(3);
        assert_eq!(
            encode_registers(&lamp, 1.0),
            Ok(Encoded::Bit { bit: 3, on: true })
        );
        assert_eq!(
            encode_registers(&lamp, 0.0),
            Ok(Encoded::Bit { bit: 3, on: false })
        );
        assert_eq!(encode_registers(&lamp, 0.5), Err(EncodeError::NotBool(0.5)));
        assert_eq!(encode_registers(&lamp, 2.0), Err(EncodeError::NotBool(2.0)));
    }

    #[test]
    fn merge_bit_sets_and_clears_only_that_bit() {
        assert_eq!(merge_bit(0b1000, 1, true), 0b1010);
        assert_eq!(merge_bit(0b1010, 3, false), 0b0010);
        assert_eq!(merge_bit(0xFFFF, 16, false), 0xFFFF, "no bit 16");
    }

    fn word_order() -> impl Strategy<Value = WordOrder> {
        prop_oneof![Just(WordOrder::HighFirst), Just(WordOrder::LowFirst)]
    }

    fn ordered(mut w: Vec<u16>, order: WordOrder) -> Vec<u16> {
        if order == WordOrder::LowFirst {
            w.reverse();
        }
        w
    }

    fn data_type() -> impl Strategy<Value = DataType> {
        prop_oneof![
            Just(DataType::I16),
            Just(DataType::U16),
            Just(DataType::I32),
            Just(DataType::U32),
            Just(DataType::F32),
            Just(DataType::Bool),
            Just(DataType::Bits16),
        ]
    }

    proptest! {
        #[test]
        fn i16_hundredths_are_the_twos_complement_word(raw in any::<i16>()) {
            let s = spec(DataType::I16, 0.01, WordOrder::HighFirst);
            let w = words(encode_registers(&s, f64::from(raw) / 100.0).unwrap());
            prop_assert_eq!(w, be_words(&raw.to_be_bytes()));
        }

        #[test]
        fn i32_is_its_big_endian_bytes_in_either_word_order(v in any::<i32>(), order in word_order()) {
            let s = spec(DataType::I32, 1.0, order);
            let w = words(encode_registers(&s, f64::from(v)).unwrap());
            prop_assert_eq!(w, ordered(be_words(&v.to_be_bytes()), order));
        }

        #[test]
        fn u32_tenths_are_its_big_endian_bytes(v in any::<u32>(), order in word_order()) {
            let s = spec(DataType::U32, 0.1, order);
            let w = words(encode_registers(&s, f64::from(v) / 10.0).unwrap());
            prop_assert_eq!(w, ordered(be_words(&v.to_be_bytes()), order));
        }

        #[test]
        fn f32_is_its_ieee_bytes(v in -1.0e6f32..1.0e6, order in word_order()) {
            let s = spec(DataType::F32, 1.0, order);
            let w = words(encode_registers(&s, f64::from(v)).unwrap());
            prop_assert_eq!(w, ordered(be_words(&v.to_be_bytes()), order));
        }

        #[test]
        fn u16_with_offset_is_the_raw_word(raw in any::<u16>()) {
            let mut s = spec(DataType::U16, 0.5, WordOrder::HighFirst);
            s.offset = -40.0;
            let value = f64::from(raw) * 0.5 - 40.0;
            prop_assert_eq!(words(encode_registers(&s, value).unwrap()), vec![raw]);
        }

        #[test]
        fn merging_a_bit_changes_exactly_that_bit(word in any::<u16>(), bit in 0u8..16, on in any::<bool>()) {
            let merged = merge_bit(word, bit, on);
            prop_assert_eq!(merged & (1 << bit) != 0, on);
            prop_assert_eq!(merged & !(1 << bit), word & !(1 << bit));
        }

        #[test]
        fn encoding_any_value_for_any_spec_never_panics(
            dt in data_type(),
            order in word_order(),
            value in any::<f64>(),
            scale in any::<f64>(),
            offset in any::<f64>(),
            bit in any::<Option<u8>>(),
        ) {
            let mut s = spec(dt, scale, order);
            s.offset = offset;
            s.bit = bit;
            if let Ok(Encoded::Words(w)) = encode_registers(&s, value) {
                prop_assert_eq!(w.len(), usize::from(dt.width()));
            }
        }
    }
}
