//! Points of the Ouman EH-203 native serial protocol: a point is a byte range
//! inside the data block the controller returns for one data ID.
//!
//! Pure like the rest of [`crate::registers`]: [`OumanSpec`] says where a value
//! sits and how to read it, [`decode_value`] turns block bytes into an
//! engineering value and [`encode_value`] goes the other way (used by the
//! simulator and by writes, which patch a block read from the controller).
//!
//! Facts (shared/reference/device-protocols.md §1.3): values in IDs 18..=34 are
//! big-endian signed 16-bit hundredths of a degree (atoid/ouman `ouman.py`
//! "18-34 = mittaukset", taloLogger "temp100"); ID 41 (Mittaus 11) is outside
//! that range and is assumed to be the same (a guess, flagged in the profile);
//! valve positions are one unsigned byte (alatalo/ouman-collector `TYPE_UINT8`
//! for ID 51).

use std::ops::RangeInclusive;

use super::profile::TypeName;

/// Longest data part of a frame: the length byte counts the two ID bytes plus
/// the data, and is one byte (§1.3 frame layout).
pub const MAX_DATA_LEN: usize = 255 - 2;

/// An Ouman data ID: which block of controller data a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DataId(pub u16);

impl std::fmt::Display for DataId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The measurement IDs whose values are signed 16-bit (`i16` is their default
/// type): 18..=34 per atoid/ouman, plus 41 (Mittaus 11, assumed alike).
pub const MEASUREMENT_IDS: RangeInclusive<u16> = 18..=34;
/// Mittaus 11: outside [`MEASUREMENT_IDS`], decoded the same way (a guess).
pub const M11_ID: u16 = 41;

/// How the bytes of a point are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OumanType {
    /// Two bytes, big-endian, two's complement (temperatures ×100).
    I16,
    /// Two bytes, big-endian, unsigned.
    U16,
    /// One byte, unsigned (valve positions %, curve settings °C).
    U8,
    /// One bit of one byte (the digital input / relay bit field).
    Bool,
}

impl OumanType {
    /// Bytes the value occupies.
    pub fn width(self) -> usize {
        match self {
            OumanType::I16 | OumanType::U16 => 2,
            OumanType::U8 | OumanType::Bool => 1,
        }
    }

    /// The Ouman meaning of a profile's `data_type`; `None` for names that
    /// only exist in other protocols.
    pub(crate) fn from_name(name: TypeName) -> Option<Self> {
        match name {
            TypeName::I16 => Some(OumanType::I16),
            TypeName::U16 => Some(OumanType::U16),
            TypeName::U8 => Some(OumanType::U8),
            TypeName::Bool => Some(OumanType::Bool),
            TypeName::I32 | TypeName::U32 | TypeName::F32 | TypeName::Bits16 => None,
        }
    }

    /// The type a point of `id` gets when its profile names none.
    pub fn default_for(id: DataId) -> Option<Self> {
        (MEASUREMENT_IDS.contains(&id.0) || id.0 == M11_ID).then_some(OumanType::I16)
    }
}

/// Where an Ouman point lives and how to decode it.
#[derive(Debug, Clone, PartialEq)]
pub struct OumanSpec {
    /// The data block to request.
    pub id: DataId,
    /// Offset of the value's first byte inside the block's data.
    pub byte: u8,
    /// Interpretation of the bytes.
    pub data_type: OumanType,
    /// Bit 0..=7 of the byte, for `Bool` points.
    pub bit: Option<u8>,
    /// Engineering value = raw × scale + offset (not applied to `Bool`).
    pub scale: f64,
    /// See `scale`.
    pub offset: f64,
}

/// A point's definition does not hold together (the profile loader turns it
/// into a located error).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// No `data_type`, and the data ID has no known default.
    #[error("data ID {0} has no known value type; set `data_type` (i16, u16, u8 or bool)")]
    NoType(DataId),
    /// `data_type` names a type of another protocol.
    #[error("`{0}` is not an ouman_serial type (use i16, u16, u8 or bool)")]
    ForeignType(String),
    /// A bool point without `bit`, or a bit above 7.
    #[error("a bool point needs `bit` 0..=7 (a bit of the byte at `byte`), got {0:?}")]
    BadBit(Option<u8>),
    /// `bit` on a non-bool point.
    #[error("`bit` only applies to bool points")]
    BitOnNumber,
    /// The value would run past the longest data block.
    #[error("byte {byte} + {width} runs past the {MAX_DATA_LEN}-byte data limit")]
    TooFar {
        /// Offset given.
        byte: u8,
        /// Width of the type.
        width: usize,
    },
}

impl OumanSpec {
    /// Validate a point: `data_type` falls back to [`OumanType::default_for`].
    pub fn new(
        id: DataId,
        byte: u8,
        data_type: Option<OumanType>,
        bit: Option<u8>,
        (scale, offset): (f64, f64),
    ) -> Result<Self, SpecError> {
        let data_type = data_type
            .or_else(|| OumanType::default_for(id))
            .ok_or(SpecError::NoType(id))?;
        match (data_type, bit) {
            (OumanType::Bool, Some(b)) if b < 8 => {}
            (OumanType::Bool, b) => return Err(SpecError::BadBit(b)),
            (_, Some(_)) => return Err(SpecError::BitOnNumber),
            (_, None) => {}
        }
        let width = data_type.width();
        if usize::from(byte) + width > MAX_DATA_LEN {
            return Err(SpecError::TooFar { byte, width });
        }
        Ok(OumanSpec {
            id,
            byte,
            data_type,
            bit,
            scale,
            offset,
        })
    }

    /// Bytes of the block this point needs: `byte..byte + width`.
    pub fn bytes(&self) -> std::ops::Range<usize> {
        let start = usize::from(self.byte);
        start..start + self.data_type.width()
    }
}

/// Why block bytes could not become a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    /// The block is shorter than the point's bytes.
    #[error("data ID {id} has {got} data byte(s); the point needs bytes {start}..{end}")]
    Short {
        /// The block.
        id: DataId,
        /// Bytes the controller sent.
        got: usize,
        /// First byte needed.
        start: usize,
        /// One past the last byte needed.
        end: usize,
    },
    /// The value does not fit the point's type.
    #[error("{value} is outside what {data_type:?} can carry ({min}..={max} after scaling)")]
    OutOfRange {
        /// Requested engineering value.
        value: f64,
        /// The point's type.
        data_type: OumanType,
        /// Smallest raw value.
        min: f64,
        /// Largest raw value.
        max: f64,
    },
}

/// Decode a point from the data bytes of its block (the frame's data, after
/// the two ID bytes). Bytes beyond the point are ignored.
pub fn decode_value(spec: &OumanSpec, data: &[u8]) -> Result<f64, ValueError> {
    let range = spec.bytes();
    let Some(b) = data.get(range.clone()) else {
        return Err(ValueError::Short {
            id: spec.id,
            got: data.len(),
            start: range.start,
            end: range.end,
        });
    };
    let raw = match (spec.data_type, b) {
        (OumanType::I16, [hi, lo]) => f64::from(i16::from_be_bytes([*hi, *lo])),
        (OumanType::U16, [hi, lo]) => f64::from(u16::from_be_bytes([*hi, *lo])),
        (OumanType::U8, [v]) => f64::from(*v),
        (OumanType::Bool, [v]) => {
            // A lamp is on/off: scale and offset do not apply.
            let bit = spec.bit.unwrap_or(0) & 7;
            return Ok(if v & (1 << bit) != 0 { 1.0 } else { 0.0 });
        }
        // `bytes()` has the type's width, so the slice always matches one arm.
        _ => {
            return Err(ValueError::Short {
                id: spec.id,
                got: data.len(),
                start: range.start,
                end: range.end,
            });
        }
    };
    Ok(round_to_scale(raw * spec.scale + spec.offset, spec.scale))
}

/// Write `value` (engineering units) into `data` at the point's bytes,
/// leaving every other byte alone (for a bool, every other bit too). `data`
/// is grown with zeros when shorter than the point.
pub fn encode_value(spec: &OumanSpec, value: f64, data: &mut Vec<u8>) -> Result<(), ValueError> {
    let range = spec.bytes();
    if data.len() < range.end {
        data.resize(range.end, 0);
    }
    if spec.data_type == OumanType::Bool {
        let mask = 1u8 << (spec.bit.unwrap_or(0) & 7);
        if value != 0.0 {
            data[range.start] |= mask;
        } else {
            data[range.start] &= !mask;
        }
        return Ok(());
    }
    let raw = ((value - spec.offset) / spec.scale).round();
    let (min, max) = match spec.data_type {
        OumanType::I16 => (f64::from(i16::MIN), f64::from(i16::MAX)),
        OumanType::U16 => (0.0, f64::from(u16::MAX)),
        OumanType::U8 | OumanType::Bool => (0.0, f64::from(u8::MAX)),
    };
    if !(min..=max).contains(&raw) {
        return Err(ValueError::OutOfRange {
            value,
            data_type: spec.data_type,
            min,
            max,
        });
    }
    // In range (checked above), so the casts are exact.
    let bytes: Vec<u8> = match spec.data_type {
        OumanType::I16 => (raw as i16).to_be_bytes().to_vec(),
        OumanType::U16 => (raw as u16).to_be_bytes().to_vec(),
        OumanType::U8 | OumanType::Bool => vec![raw as u8],
    };
    data[range].copy_from_slice(&bytes);
    Ok(())
}

/// Round to the precision the scale implies plus two digits, so 2100 × 0.01
/// reads 21.0, not 21.000000000000004 (as the Modbus decoder does).
fn round_to_scale(v: f64, scale: f64) -> f64 {
    let decimals = (-scale.abs().log10()).ceil().clamp(0.0, 9.0) as i32 + 2;
    let factor = 10f64.powi(decimals);
    (v * factor).round() / factor
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn spec(id: u16, byte: u8, t: Option<OumanType>, bit: Option<u8>, scale: f64) -> OumanSpec {
        OumanSpec::new(DataId(id), byte, t, bit, (scale, 0.0)).unwrap()
    }

    #[test]
    fn captured_id_20_data_reads_21_degrees() {
        // atoid README: 02 06 04 00 14 | 08 34 | 5A -> data 08 34 = 2100
        let s = spec(20, 0, None, None, 0.01);
        assert_eq!(s.data_type, OumanType::I16, "IDs 18..=34 default to i16");
        assert_eq!(decode_value(&s, &[0x08, 0x34]).unwrap(), 21.0);
    }

    #[test]
    fn negative_temperatures_are_twos_complement() {
        let s = spec(18, 0, None, None, 0.01);
        // 0xFE00 = -512 -> -5.12 °C
        assert_eq!(decode_value(&s, &[0xFE, 0x00]).unwrap(), -5.12);
        assert_eq!(decode_value(&s, &[0x80, 0x00]).unwrap(), -327.68);
    }

    #[test]
    fn mittaus_11_defaults_to_i16_but_other_ids_need_a_type() {
        assert_eq!(spec(41, 0, None, None, 0.01).data_type, OumanType::I16);
        let err = OumanSpec::new(DataId(49), 0, None, None, (1.0, 0.0)).unwrap_err();
        assert_eq!(err, SpecError::NoType(DataId(49)));
        assert!(err.to_string().contains("data ID 49"));
    }

    #[test]
    fn a_valve_byte_and_a_curve_byte_decode_as_u8() {
        let s = spec(51, 0, Some(OumanType::U8), None, 1.0);
        assert_eq!(decode_value(&s, &[0x64]).unwrap(), 100.0);
        // atoid README ID 12 data starts 20 19 14 14 23: curve at 0 °C is byte 1 = 25
        let s = spec(12, 1, Some(OumanType::U8), None, 1.0);
        assert_eq!(
            decode_value(&s, &[0x20, 0x19, 0x14, 0x14, 0x23]).unwrap(),
            25.0
        );
    }

    #[test]
    fn a_bool_reads_one_bit_and_ignores_scale() {
        let s = spec(45, 1, Some(OumanType::Bool), Some(3), 1.0);
        assert_eq!(decode_value(&s, &[0xFF, 0b0000_1000]).unwrap(), 1.0);
        assert_eq!(decode_value(&s, &[0xFF, 0b1111_0111]).unwrap(), 0.0);
    }

    #[test]
    fn bits_must_be_0_to_7_and_only_on_bools() {
        let bad = |t, bit| OumanSpec::new(DataId(45), 0, Some(t), bit, (1.0, 0.0)).unwrap_err();
        assert_eq!(bad(OumanType::Bool, Some(8)), SpecError::BadBit(Some(8)));
        assert_eq!(bad(OumanType::Bool, None), SpecError::BadBit(None));
        assert_eq!(bad(OumanType::U8, Some(1)), SpecError::BitOnNumber);
    }

    #[test]
    fn a_point_past_the_data_limit_is_refused() {
        let e = OumanSpec::new(DataId(1), 252, Some(OumanType::I16), None, (1.0, 0.0));
        assert_eq!(
            e,
            Err(SpecError::TooFar {
                byte: 252,
                width: 2
            })
        );
        assert!(OumanSpec::new(DataId(1), 252, Some(OumanType::U8), None, (1.0, 0.0)).is_ok());
    }

    #[test]
    fn a_short_block_is_an_error_naming_the_bytes() {
        let s = spec(45, 1, Some(OumanType::Bool), Some(0), 1.0);
        let e = decode_value(&s, &[0x01]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "data ID 45 has 1 data byte(s); the point needs bytes 1..2"
        );
    }

    #[test]
    fn encoding_patches_only_the_points_bytes() {
        let mut block = vec![0x20, 0x19, 0x14, 0x14, 0x23];
        encode_value(
            &spec(12, 1, Some(OumanType::U8), None, 1.0),
            30.0,
            &mut block,
        )
        .unwrap();
        assert_eq!(block, [0x20, 30, 0x14, 0x14, 0x23]);
        let bit = spec(45, 0, Some(OumanType::Bool), Some(2), 1.0);
        encode_value(&bit, 1.0, &mut block).unwrap();
        assert_eq!(block[0], 0x24);
        encode_value(&bit, 0.0, &mut block).unwrap();
        assert_eq!(block[0], 0x20);
        let e = encode_value(
            &spec(12, 0, Some(OumanType::U8), None, 1.0),
            256.0,
            &mut block,
        );
        assert!(matches!(e, Err(ValueError::OutOfRange { .. })));
    }

    fn eh203() -> crate::registers::Profile {
        crate::registers::load_builtin("ouman_eh203")
            .unwrap()
            .unwrap()
    }

    #[test]
    fn the_default_eh203_profile_polls_the_published_ids() {
        let p = eh203();
        assert_eq!(p.protocol, crate::registers::Protocol::OumanSerial);
        let enabled: Vec<(String, u16)> = p
            .points
            .iter()
            .filter(|p| p.enabled)
            .map(|p| (p.key.clone(), p.spec.ouman().unwrap().id.0))
            .collect();
        let expected = [
            ("outdoor_temp", 18),
            ("l1_supply_temp", 20),
            ("l1_room_temp", 21),
            ("l1_return_temp", 23),
            ("l2_supply_temp", 26),
            ("dhw_tank_top_temp", 33),
            ("dhw_tank_bottom_temp", 34),
            ("hot_gas_temp", 41),
            ("l1_valve_position", 49),
            ("l2_valve_position", 50),
            ("dhw_valve_position", 51),
        ];
        let expected: Vec<(String, u16)> = expected
            .iter()
            .map(|(k, id)| (k.to_string(), *id))
            .collect();
        assert_eq!(enabled, expected);
    }

    #[test]
    fn eh203_guesses_are_flagged_and_kept_off_or_read_only() {
        let p = eh203();
        let get = |k: &str| p.points.iter().find(|p| p.key == k).unwrap();
        // M11's scale is a guess; the ID 45 masks and the ID 12 layout on an EH-203 too.
        assert!(get("hot_gas_temp").guessed);
        for k in ["dig1", "dig2", "dig3", "relay1", "relay2"] {
            let pt = get(k);
            assert!(pt.guessed && !pt.enabled, "{k}");
            assert_eq!(pt.kind(), protocol::PointKind::Binary);
            assert_eq!(pt.spec.ouman().unwrap().id, DataId(45));
        }
        for k in [
            "l1_curve_minus20",
            "l1_curve_0",
            "l1_curve_plus20",
            "l1_supply_min",
            "l1_supply_max",
        ] {
            assert!(get(k).guessed && !get(k).enabled && !get(k).writable, "{k}");
        }
        assert!(
            p.points.iter().all(|p| !p.writable),
            "no write on an unverified layout"
        );
        assert!(
            !get("outdoor_temp").guessed,
            "published IDs are not guesses"
        );
        let t = get("outdoor_temp").info();
        assert_eq!(
            (t.unit.as_str(), t.display_min, t.display_max),
            ("degC", Some(-40.0), Some(40.0))
        );
        assert!(t.label.unwrap().contains(" / "), "Suomeksi / In English");
        let v = get("l1_valve_position").spec.ouman().unwrap().clone();
        assert_eq!((v.data_type, v.scale), (OumanType::U8, 1.0));
    }

    fn point_err(point: &str) -> crate::tomlfile::TomlFileError {
        let text = format!(
            "[[profile]]\nid = \"x\"\nprotocol = \"ouman_serial\"\n\n[[profile.point]]\nname = \"p\"\n{point}\n"
        );
        crate::registers::parse_profile("t.toml", &text).unwrap_err()
    }

    #[test]
    fn ouman_point_mistakes_name_the_field_and_line() {
        let e = point_err("scale = 0.01");
        assert_eq!((e.key.as_str(), e.line), ("profile[0].point[0].data_id", 5));
        assert!(
            e.message.contains("ouman_serial point needs `data_id`"),
            "{e}"
        );
        let e = point_err("data_id = 20\nfunction = \"holding\"");
        assert_eq!(e.key, "profile[0].point[0].function");
        assert_eq!(
            e.message,
            "`function` does not apply to ouman_serial points"
        );
        let e = point_err("data_id = 49");
        assert_eq!(e.key, "profile[0].point[0].data_type");
        assert!(
            e.message.contains("data ID 49 has no known value type"),
            "{e}"
        );
        let e = point_err("data_id = 20\ndata_type = \"f32\"");
        assert_eq!(
            e.message,
            "`f32` is not an ouman_serial type (use i16, u16, u8 or bool)"
        );
        let e = point_err("data_id = 45\ndata_type = \"bool\"\nbit = 9");
        assert_eq!(e.key, "profile[0].point[0].bit");
        let e = point_err("data_id = 45\ndata_type = \"bool\"\nbit = 1\nscale = 0.5");
        assert_eq!(e.key, "profile[0].point[0].scale");
        let e = point_err("data_id = 12\nbyte = 253\ndata_type = \"u8\"");
        assert_eq!(e.key, "profile[0].point[0].byte");
        let e = point_err("data_id = 12\nbyte = 1\ndata_type = \"u8\"\nscale = 0");
        assert_eq!(e.key, "profile[0].point[0].scale");
    }

    #[test]
    fn modbus_points_refuse_ouman_fields_and_u8() {
        let text = "[[profile]]\nid = \"x\"\n[[profile.point]]\nname = \"a\"\nfunction = \"holding\"\naddress = 1\ndata_type = \"u8\"\n";
        let e = crate::registers::parse_profile("t.toml", text).unwrap_err();
        assert_eq!(e.key, "profile[0].point[0].data_type");
        assert!(e.message.contains("not a Modbus type"), "{e}");
        let text = text.replace("\"u8\"", "\"u16\"\ndata_id = 20");
        let e = crate::registers::parse_profile("t.toml", &text).unwrap_err();
        assert_eq!(e.message, "`data_id` does not apply to modbus points");
    }

    proptest! {
        #[test]
        fn i16_hundredths_round_trip(raw in any::<i16>(), byte in 0u8..8) {
            let s = spec(20, byte, None, None, 0.01);
            let value = f64::from(raw) / 100.0;
            let mut block = vec![0xAA; 3];
            encode_value(&s, value, &mut block).unwrap();
            prop_assert_eq!(decode_value(&s, &block).unwrap(), value);
            prop_assert!(block.len() >= usize::from(byte) + 2);
        }

        #[test]
        fn every_type_round_trips_its_raw_range(raw in any::<u16>(), t in 0usize..4, bit in 0u8..8) {
            let types = [OumanType::I16, OumanType::U16, OumanType::U8, OumanType::Bool];
            let t = types[t];
            let s = spec(60, 1, Some(t), (t == OumanType::Bool).then_some(bit), 1.0);
            let value = match t {
                OumanType::I16 => f64::from(raw as i16),
                OumanType::U16 => f64::from(raw),
                OumanType::U8 => f64::from(raw as u8),
                OumanType::Bool => f64::from(raw & 1),
            };
            let mut block = Vec::new();
            encode_value(&s, value, &mut block).unwrap();
            prop_assert_eq!(decode_value(&s, &block).unwrap(), value);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..8), byte in 0u8..8, t in 0usize..4) {
            let types = [OumanType::I16, OumanType::U16, OumanType::U8, OumanType::Bool];
            let t = types[t];
            let s = spec(45, byte, Some(t), (t == OumanType::Bool).then_some(byte % 8), 0.01);
            let got = decode_value(&s, &data);
            prop_assert_eq!(got.is_ok(), data.len() >= usize::from(byte) + t.width());
        }
    }
}
