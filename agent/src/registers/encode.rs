//! Engineering values → raw Modbus words/bits.
//!
//! Used by the simulators to fill their register banks from the same profile the
//! agent decodes with (so both agree by construction), and later by writes. It
//! is written independently of [`super::decode`] so a bug in one cannot hide in
//! a round-trip test.

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

/// Encode `value` (engineering units) for `spec`.
pub fn encode_registers(spec: &PointSpec, value: f64) -> Result<Encoded, EncodeError> {
    if !value.is_finite() {
        return Err(EncodeError::NotFinite(value));
    }
    if spec.data_type == DataType::Bool {
        return Ok(Encoded::Bit {
            bit: spec.bit.unwrap_or(0),
            on: value != 0.0,
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
        DataType::F32 => split((raw as f32).to_bits()),
        DataType::Bool => unreachable!("handled above"),
    };
    Ok(Encoded::Words(words))
}

/// Set or clear one bit of a register word.
pub fn merge_bit(word: u16, bit: u8, on: bool) -> u16 {
    let mask = 1u16.checked_shl(u32::from(bit)).unwrap_or(0);
    if on { word | mask } else { word & !mask }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registers::{Function, RegisterAddress, decode_registers};
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
        }
    }

    #[test]
    fn minus_100_encodes_as_0xff9c() {
        let s = spec(DataType::I16, 1.0, WordOrder::HighFirst);
        assert_eq!(
            encode_registers(&s, -100.0).unwrap(),
            Encoded::Words(vec![0xFF9C])
        );
    }

    #[test]
    fn a_temperature_outside_i16_after_scaling_is_refused() {
        let s = spec(DataType::I16, 0.01, WordOrder::HighFirst);
        assert!(matches!(
            encode_registers(&s, 400.0),
            Err(EncodeError::OutOfRange { .. })
        ));
    }

    #[test]
    fn merge_bit_sets_and_clears_only_that_bit() {
        assert_eq!(merge_bit(0b1000, 1, true), 0b1010);
        assert_eq!(merge_bit(0b1010, 3, false), 0b0010);
    }

    fn word_order() -> impl Strategy<Value = WordOrder> {
        prop_oneof![Just(WordOrder::HighFirst), Just(WordOrder::LowFirst)]
    }

    fn words(e: Encoded) -> Vec<u16> {
        match e {
            Encoded::Words(w) => w,
            Encoded::Bit { .. } => panic!("expected words"),
        }
    }

    proptest! {
        #[test]
        fn i16_hundredths_round_trip(raw in any::<i16>()) {
            let s = spec(DataType::I16, 0.01, WordOrder::HighFirst);
            let value = f64::from(raw) / 100.0;
            let w = words(encode_registers(&s, value).unwrap());
            prop_assert_eq!(w.clone(), vec![raw as u16]);
            prop_assert_eq!(decode_registers(&s, &w).unwrap(), value);
        }

        #[test]
        fn i32_round_trips_in_both_word_orders(v in any::<i32>(), order in word_order()) {
            let s = spec(DataType::I32, 1.0, order);
            let w = words(encode_registers(&s, f64::from(v)).unwrap());
            prop_assert_eq!(decode_registers(&s, &w).unwrap(), f64::from(v));
        }

        #[test]
        fn u32_tenths_round_trip(v in any::<u32>(), order in word_order()) {
            let s = spec(DataType::U32, 0.1, order);
            let value = f64::from(v) / 10.0;
            let w = words(encode_registers(&s, value).unwrap());
            let back = decode_registers(&s, &w).unwrap();
            prop_assert!((back - value).abs() < 1e-6, "{back} != {value}");
        }

        #[test]
        fn f32_round_trips(v in -1.0e6f32..1.0e6, order in word_order()) {
            let s = spec(DataType::F32, 1.0, order);
            let w = words(encode_registers(&s, f64::from(v)).unwrap());
            prop_assert_eq!(decode_registers(&s, &w).unwrap(), f64::from(v));
        }

        #[test]
        fn u16_with_offset_round_trips(raw in any::<u16>()) {
            let mut s = spec(DataType::U16, 0.5, WordOrder::HighFirst);
            s.offset = -40.0;
            let value = f64::from(raw) * 0.5 - 40.0;
            let w = words(encode_registers(&s, value).unwrap());
            prop_assert_eq!(w, vec![raw]);
        }

        #[test]
        fn status_bits_round_trip(word in any::<u16>(), bit in 0u8..16, on in any::<bool>()) {
            let mut s = spec(DataType::Bool, 1.0, WordOrder::HighFirst);
            s.bit = Some(bit);
            let Encoded::Bit { bit: b, on: o } = encode_registers(&s, if on { 1.0 } else { 0.0 }).unwrap() else {
                panic!("expected a bit");
            };
            let merged = merge_bit(word, b, o);
            prop_assert_eq!(decode_registers(&s, &[merged]).unwrap(), if on { 1.0 } else { 0.0 });
        }
    }
}
