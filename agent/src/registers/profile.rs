//! Device profiles: register maps kept as TOML data, not code.
//!
//! The format is the research fixture's (`shared/reference/register-maps.toml`):
//! a file holds one or more `[[profile]]` tables, each with `[[profile.point]]`
//! entries, plus display hints (`display_min`, `display_max`, `alarm`). Fields
//! the agent does not use yet (`native_id`, `confidence`, `safe_min`, ...) are
//! accepted so a fixture profile loads unchanged; anything else is a typo and
//! refused. Built-in profiles are embedded in the binary with `include_str!`.

use serde::Deserialize;
use toml::Spanned;

use super::{
    DataType, Direction, Function, PointSpec, PopField, PopSpec, Protocol, RegisterAddress, Spec,
    WordOrder, WriteFunction,
    ouman::{DataId, OumanSpec, OumanType, SpecError},
};
use crate::tomlfile::{self, TomlFileError};

/// Error type of profile loading: a located mistake in a profile file.
pub type ProfileError = TomlFileError;

const BUILTINS: &[(&str, &str)] = &[
    (
        "ouman_eh203",
        include_str!("../../profiles/ouman_eh203.toml"),
    ),
    (
        "ouman_eh203_modbus200",
        include_str!("../../profiles/ouman_eh203_modbus200.toml"),
    ),
    (
        "generic_modbus",
        include_str!("../../profiles/generic_modbus.toml"),
    ),
    (
        "plc_cottage_exchange",
        include_str!("../../profiles/plc_cottage_exchange.toml"),
    ),
    ("pop_board", include_str!("../../profiles/pop_board.toml")),
];

/// Ids of the profiles compiled into the agent.
pub fn builtin_profile_ids() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|(id, _)| *id)
}

/// TOML text of a built-in profile.
pub fn builtin_profile_text(id: &str) -> Option<&'static str> {
    BUILTINS
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, text)| *text)
}

/// Load a built-in profile by id; `None` when no such built-in exists.
pub fn load_builtin(id: &str) -> Option<Result<Profile, ProfileError>> {
    let text = builtin_profile_text(id)?;
    let file = format!("builtin:{id}");
    Some(parse_profile(&file, text).and_then(|ps| pick(&file, ps, Some(id))))
}

/// Choose one profile of a file: by id when given, else the file's only one.
pub fn pick(file: &str, profiles: Vec<Profile>, id: Option<&str>) -> Result<Profile, ProfileError> {
    let err = |message: String| TomlFileError {
        file: file.to_owned(),
        line: 0,
        key: "profile".into(),
        message,
    };
    match id {
        Some(id) => {
            let ids: Vec<String> = profiles.iter().map(|p| p.id.clone()).collect();
            profiles.into_iter().find(|p| p.id == id).ok_or_else(|| {
                err(format!(
                    "no profile with id `{id}` (the file has: {})",
                    ids.join(", ")
                ))
            })
        }
        None if profiles.len() == 1 => Ok(profiles.into_iter().next().expect("length checked")),
        None => Err(err(format!(
            "the file holds {} profiles; name one as `path.toml#id`",
            profiles.len()
        ))),
    }
}

/// A device profile: an id and its points in display order.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Stable id, e.g. `ouman_eh203_modbus200`.
    pub id: String,
    /// What its points are addressed in; decides which buses it fits.
    pub protocol: Protocol,
    /// Human description (vendor and model).
    pub label: Option<String>,
    /// All points, enabled or not, in file order.
    pub points: Vec<Point>,
}

/// One point of a profile (or a device's inline point), validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Key unique within the device, e.g. `outdoor_temp`.
    pub key: String,
    /// Human label.
    pub label: Option<String>,
    /// Wire location and decoding.
    pub spec: Spec,
    /// Engineering unit, e.g. `degC`; empty for none.
    pub unit: String,
    /// The device accepts writes here (the agent's own config still decides).
    pub writable: bool,
    /// Polled by default.
    pub enabled: bool,
    /// The address is not from a source and must be verified on site.
    pub guessed: bool,
    /// Suggested gauge range (engineering units).
    pub display_min: Option<f64>,
    /// Suggested gauge range (engineering units).
    pub display_max: Option<f64>,
    /// An "on" value means an alarm (lamp shown red).
    pub alarm: bool,
    /// Who writes the point on a `modbus_slave` bus (refused elsewhere).
    pub direction: Option<Direction>,
    /// For a `to_plc` point: the `from_plc` point where the PLC echoes the
    /// value back; an offer is done only once the echo matches.
    pub echo: Option<String>,
}

impl Point {
    /// Analog for numbers, binary for `bool` points.
    pub fn kind(&self) -> protocol::PointKind {
        if self.spec.is_binary() {
            protocol::PointKind::Binary
        } else {
            protocol::PointKind::Analog
        }
    }

    /// The catalogue entry announced to the server in `Hello`.
    pub fn info(&self) -> protocol::PointInfo {
        protocol::PointInfo {
            key: self.key.clone(),
            label: self.label.clone(),
            unit: self.unit.clone(),
            kind: self.kind(),
            display_min: self.display_min,
            display_max: self.display_max,
            alarm: self.alarm,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // descriptive fields are accepted for fixture compatibility
struct ProfileFile {
    format: Option<String>,
    format_version: Option<u32>,
    #[serde(default)]
    profile: Vec<Spanned<RawProfile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // descriptive fields are accepted for fixture compatibility
struct RawProfile {
    id: String,
    #[serde(default)]
    protocol: Protocol,
    label: Option<String>,
    description: Option<String>,
    vendor: Option<String>,
    model: Option<String>,
    transport: Option<String>,
    default_unit_id: Option<u8>,
    default_baud: Option<u32>,
    default_parity: Option<String>,
    startup_silence_s: Option<u32>,
    address_hypothesis: Option<String>,
    source: Option<String>,
    #[serde(default)]
    point: Vec<Spanned<RawPoint>>,
    #[serde(default)]
    unresolved: Vec<Unresolved>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Unresolved {
    name: String,
    note: Option<String>,
}

/// A point as written in TOML, before validation. Shared by profile files and
/// a device's inline `[[device.point]]` entries in the agent config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // descriptive fields are accepted for fixture compatibility
pub(crate) struct RawPoint {
    name: String,
    label: Option<String>,
    // Modbus
    function: Option<Function>,
    address: Option<u16>,
    count: Option<u16>,
    data_type: Option<TypeName>,
    bit: Option<u8>,
    word_order: Option<WordOrder>,
    write_function: Option<WriteFunction>,
    // Ouman native serial: data ID and byte offset inside its data
    data_id: Option<u16>,
    byte: Option<u8>,
    scale: Option<f64>,
    offset: Option<f64>,
    // POP (see `registers::pop`)
    field: Option<PopField>,
    index: Option<u16>,
    #[serde(default)]
    unit: String,
    #[serde(default)]
    writable: bool,
    enabled: Option<bool>,
    #[serde(default)]
    guessed: bool,
    source: Option<String>,
    display_min: Option<f64>,
    display_max: Option<f64>,
    #[serde(default)]
    alarm: bool,
    direction: Option<Direction>,
    echo: Option<String>,
    native_id: Option<u32>,
    confidence: Option<String>,
    safe_min: Option<f64>,
    safe_max: Option<f64>,
}

impl RawPoint {
    /// Check the point's internal consistency for a profile of `protocol`. On
    /// failure returns the offending field name (relative to the point) and a
    /// sentence.
    pub(crate) fn resolve(self, protocol: Protocol) -> Result<Point, (&'static str, String)> {
        if self.name.is_empty() {
            return Err(("name", "a point needs a non-empty name".into()));
        }
        if let (Some(lo), Some(hi)) = (self.display_min, self.display_max)
            && lo >= hi
        {
            return Err((
                "display_max",
                format!("display_max {hi} must be above display_min {lo}"),
            ));
        }
        let spec = match protocol {
            Protocol::Modbus => Spec::Modbus(self.modbus_spec()?),
            Protocol::OumanSerial => Spec::Ouman(self.ouman_spec()?),
            Protocol::Pop => Spec::Pop(self.pop_spec()?),
        };
        Ok(Point {
            key: self.name,
            label: self.label,
            spec,
            unit: self.unit,
            writable: self.writable,
            enabled: self.enabled.unwrap_or(true),
            guessed: self.guessed,
            display_min: self.display_min,
            display_max: self.display_max,
            alarm: self.alarm,
            direction: self.direction,
            echo: self.echo,
        })
    }

    /// A field of the point that `protocol` needs, or an error naming it.
    fn required<T: Copy>(
        value: Option<T>,
        field: &'static str,
        protocol: Protocol,
    ) -> Result<T, (&'static str, String)> {
        value.ok_or_else(|| {
            (
                field,
                format!("missing: a {protocol} point needs `{field}`"),
            )
        })
    }

    /// `scale` and `offset` (defaults 1 and 0), checked: engineering value =
    /// raw × scale + offset, for every protocol.
    fn scaling(&self) -> Result<(f64, f64), (&'static str, String)> {
        let scale = self.scale.unwrap_or(1.0);
        if scale == 0.0 || !scale.is_finite() {
            return Err((
                "scale",
                format!("scale must be a non-zero finite number, got {scale}"),
            ));
        }
        let offset = self.offset.unwrap_or(0.0);
        if !offset.is_finite() {
            return Err(("offset", "offset must be finite".into()));
        }
        Ok((scale, offset))
    }

    /// The POP half: field and index; other protocols' fields and scaling refused.
    fn pop_spec(&self) -> Result<PopSpec, (&'static str, String)> {
        let protocol = Protocol::Pop;
        refuse_foreign(
            protocol,
            &[
                ("function", self.function.is_some()),
                ("address", self.address.is_some()),
                ("count", self.count.is_some()),
                ("data_type", self.data_type.is_some()),
                ("bit", self.bit.is_some()),
                ("word_order", self.word_order.is_some()),
                ("write_function", self.write_function.is_some()),
                ("data_id", self.data_id.is_some()),
                ("byte", self.byte.is_some()),
                // Boards report °C and on/off; writes could not undo a scaling.
                ("scale", self.scale.is_some()),
                ("offset", self.offset.is_some()),
            ],
        )?;
        let field = Self::required(self.field, "field", protocol)?;
        let index = Self::required(self.index, "index", protocol)?;
        PopSpec::new(field, index).map_err(|msg| ("index", msg))
    }

    /// The Modbus half: table, address, type, scaling.
    fn modbus_spec(&self) -> Result<PointSpec, (&'static str, String)> {
        let protocol = Protocol::Modbus;
        refuse_foreign(
            protocol,
            &[
                ("data_id", self.data_id.is_some()),
                ("byte", self.byte.is_some()),
                ("field", self.field.is_some()),
                ("index", self.index.is_some()),
            ],
        )?;
        let function = Self::required(self.function, "function", protocol)?;
        let address = Self::required(self.address, "address", protocol)?;
        let data_type = match Self::required(self.data_type, "data_type", protocol)?.modbus() {
            Some(t) => t,
            None => {
                return Err((
                    "data_type",
                    "`u8` is not a Modbus type (a register is 16 bits; use u16)".into(),
                ));
            }
        };
        let width = data_type.width();
        if !function.is_register() && data_type != DataType::Bool {
            return Err(("data_type", format!("a {} point must be `bool`", function)));
        }
        if let Some(count) = self.count
            && count != width
        {
            return Err((
                "count",
                format!("{data_type:?} occupies {width} item(s), not {count}"),
            ));
        }
        let bit = match (function.is_register(), data_type, self.bit) {
            (true, DataType::Bool, Some(b)) if b < 16 => Some(b),
            (true, DataType::Bool, Some(b)) => {
                return Err(("bit", format!("bit {b} is outside 0..=15")));
            }
            (true, DataType::Bool, None) => {
                return Err((
                    "bit",
                    "a bool point in a register needs `bit` (0..=15)".into(),
                ));
            }
            (_, _, Some(_)) => {
                return Err((
                    "bit",
                    "`bit` only applies to bool points in a register".into(),
                ));
            }
            (_, _, None) => None,
        };
        if u32::from(address) + u32::from(width) > 0x1_0000 {
            return Err((
                "address",
                format!("address {address} + {width} runs past 65535"),
            ));
        }
        let write_function = self.write_function(function, width)?;
        let (scale, offset) = self.scaling()?;
        Ok(PointSpec {
            function,
            address: RegisterAddress(address),
            data_type,
            bit,
            word_order: self.word_order.unwrap_or_default(),
            scale,
            offset,
            write_function,
        })
    }

    /// `write_function`: only holding registers and coils are written by a
    /// master (V1.1b3 has no write for input registers or discrete inputs); the
    /// default is `single` (FC06/FC05) for one item and `multiple` (FC16) for
    /// a two-register value, which must never be split into two FC06 writes.
    fn write_function(
        &self,
        function: Function,
        width: u16,
    ) -> Result<WriteFunction, (&'static str, String)> {
        // `writable` on an input register or discrete input is not refused
        // here: in slave mode the agent itself fills those for the PLC. On a
        // polled bus the driver refuses such a write before sending anything.
        let read_only = matches!(function, Function::Input | Function::Discrete);
        if read_only && self.write_function.is_some() {
            return Err((
                "write_function",
                format!("only applies to holding and coil points, not {function}"),
            ));
        }
        match (self.write_function, width) {
            (Some(WriteFunction::Single), 2) => Err((
                "write_function",
                "a two-register value is written with FC16 (`multiple`) so both halves change together; `single` (FC06) would tear it".into(),
            )),
            (Some(wf), _) => Ok(wf),
            (None, 2) => Ok(WriteFunction::Multiple),
            (None, _) => Ok(WriteFunction::Single),
        }
    }

    /// The Ouman native half: data ID, byte offset, type, bit, scaling.
    fn ouman_spec(&self) -> Result<OumanSpec, (&'static str, String)> {
        let protocol = Protocol::OumanSerial;
        refuse_foreign(
            protocol,
            &[
                ("function", self.function.is_some()),
                ("address", self.address.is_some()),
                ("count", self.count.is_some()),
                ("word_order", self.word_order.is_some()),
                ("write_function", self.write_function.is_some()),
                ("field", self.field.is_some()),
                ("index", self.index.is_some()),
            ],
        )?;
        let id = DataId(Self::required(self.data_id, "data_id", protocol)?);
        let data_type = match self.data_type {
            None => None,
            Some(name) => Some(OumanType::from_name(name).ok_or_else(|| {
                let err = SpecError::ForeignType(name.to_string());
                ("data_type", err.to_string())
            })?),
        };
        if data_type == Some(OumanType::Bool) {
            for (field, set) in [
                ("scale", self.scale.is_some()),
                ("offset", self.offset.is_some()),
            ] {
                if set {
                    return Err((field, format!("`{field}` does not apply to a bool point")));
                }
            }
        }
        let scaling = self.scaling()?;
        OumanSpec::new(id, self.byte.unwrap_or(0), data_type, self.bit, scaling).map_err(|e| {
            let field = match e {
                SpecError::BadBit(_) | SpecError::BitOnNumber => "bit",
                SpecError::TooFar { .. } => "byte",
                _ => "data_type",
            };
            (field, e.to_string())
        })
    }
}

/// Refuse the first of `fields` (name, present) that is set: it belongs to
/// another protocol's points.
fn refuse_foreign(
    protocol: Protocol,
    fields: &[(&'static str, bool)],
) -> Result<(), (&'static str, String)> {
    match fields.iter().find(|(_, set)| *set) {
        Some((field, _)) => Err((
            field,
            format!("`{field}` does not apply to {protocol} points"),
        )),
        None => Ok(()),
    }
}

/// Every `data_type` name a profile may use; each protocol accepts its own
/// subset (Modbus: all but `u8`; ouman_serial: i16, u16, u8, bool).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TypeName {
    I16,
    U16,
    I32,
    U32,
    F32,
    Bool,
    Bits16,
    U8,
}

impl TypeName {
    /// The Modbus data type of this name; `None` for `u8`.
    fn modbus(self) -> Option<DataType> {
        Some(match self {
            TypeName::I16 => DataType::I16,
            TypeName::U16 => DataType::U16,
            TypeName::I32 => DataType::I32,
            TypeName::U32 => DataType::U32,
            TypeName::F32 => DataType::F32,
            TypeName::Bool => DataType::Bool,
            TypeName::Bits16 => DataType::Bits16,
            TypeName::U8 => return None,
        })
    }
}

impl std::fmt::Display for TypeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format!("{self:?}").to_lowercase())
    }
}

/// Parse every `[[profile]]` of a profile file. `file` names it in errors.
pub fn parse_profile(file: &str, text: &str) -> Result<Vec<Profile>, ProfileError> {
    let doc: ProfileFile = tomlfile::parse(file, text)?;
    let mut out = Vec::new();
    for (pi, raw) in doc.profile.into_iter().enumerate() {
        let span = raw.span();
        let raw = raw.into_inner();
        if raw.id.is_empty() {
            return Err(TomlFileError::at(
                file,
                text,
                span,
                format!("profile[{pi}].id"),
                "a profile needs an id",
            ));
        }
        let mut points: Vec<Point> = Vec::new();
        for (i, rp) in raw.point.into_iter().enumerate() {
            let span = rp.span();
            let key = |field: &str| format!("profile[{pi}].point[{i}].{field}");
            let point = rp
                .into_inner()
                .resolve(raw.protocol)
                .map_err(|(field, msg)| {
                    TomlFileError::at(file, text, span.clone(), key(field), msg)
                })?;
            if points.iter().any(|p| p.key == point.key) {
                return Err(TomlFileError::at(
                    file,
                    text,
                    span,
                    key("name"),
                    format!("duplicate point name `{}`", point.key),
                ));
            }
            points.push(point);
        }
        let label = raw.label.or(match (raw.vendor, raw.model) {
            (Some(v), Some(m)) => Some(format!("{v} {m}")),
            (v, m) => v.or(m),
        });
        out.push(Profile {
            id: raw.id,
            protocol: raw.protocol,
            label,
            points,
        });
    }
    if out.is_empty() {
        return Err(TomlFileError {
            file: file.to_owned(),
            line: 0,
            key: "profile".into(),
            message: "the file holds no [[profile]]".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eh203() -> Profile {
        load_builtin("ouman_eh203_modbus200")
            .expect("built in")
            .expect("valid")
    }

    #[test]
    fn every_builtin_profile_parses() {
        for id in builtin_profile_ids() {
            let p = load_builtin(id).unwrap().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(p.id, id);
            assert!(!p.points.is_empty());
        }
    }

    #[test]
    fn eh203_enables_exactly_the_dashboard_points() {
        let enabled: Vec<_> = eh203()
            .points
            .into_iter()
            .filter(|p| p.enabled)
            .map(|p| (p.key, p.spec.modbus().unwrap().address.0))
            .collect();
        let expected = [
            ("outdoor_temp", 18),
            ("l1_supply_temp", 20),
            ("l2_supply_temp", 26),
            ("dhw_tank_top_temp", 33),
            ("dhw_tank_bottom_temp", 34),
            ("hot_gas_temp", 41),
            ("compressor_running", 45),
            ("electric_heater_on", 45),
            ("alarm_a", 45),
            ("alarm_b", 45),
        ];
        let expected: Vec<_> = expected.iter().map(|(k, a)| (k.to_string(), *a)).collect();
        assert_eq!(enabled, expected);
    }

    #[test]
    fn every_eh203_address_is_flagged_as_a_guess() {
        assert!(eh203().points.iter().all(|p| p.guessed));
    }

    #[test]
    fn eh203_lamps_are_binary_and_alarms_are_flagged() {
        let p = eh203();
        let get = |k: &str| p.points.iter().find(|p| p.key == k).unwrap().info();
        assert_eq!(get("compressor_running").kind, protocol::PointKind::Binary);
        assert!(!get("compressor_running").alarm);
        assert!(get("alarm_a").alarm && get("alarm_b").alarm);
        let t = get("outdoor_temp");
        assert_eq!(
            (t.kind, t.unit.as_str(), t.display_min, t.display_max),
            (protocol::PointKind::Analog, "degC", Some(-40.0), Some(40.0))
        );
    }

    #[test]
    fn a_fixture_style_point_with_research_fields_is_accepted() {
        let text = r#"
format = "homecontrol-register-map"
format_version = 0
[[profile]]
id = "x"
vendor = "Ouman"
model = "EH-203"
[[profile.point]]
name = "l1_room_setpoint"
function = "holding"
address = 13
count = 1
data_type = "i16"
scale = 0.01
unit = "degC"
writable = true
safe_min = 15.0
safe_max = 25.0
native_id = 13
confidence = "guess"
guessed = true
enabled = false
source = "x"
[[profile.unresolved]]
name = "alarm_status"
note = "none"
"#;
        let p = parse_profile("t.toml", text).unwrap();
        assert_eq!(p[0].label.as_deref(), Some("Ouman EH-203"));
        assert!(!p[0].points[0].enabled);
    }

    #[test]
    fn a_misspelt_point_field_is_refused_with_its_line() {
        let text = "[[profile]]\nid = \"x\"\n[[profile.point]]\nname = \"a\"\nfunction = \"holding\"\naddress = 1\ndata_type = \"u16\"\nscael = 0.1\n";
        let err = parse_profile("t.toml", text).unwrap_err();
        assert_eq!(err.key, "profile[0].point[0].scael");
        assert!(err.message.contains("scael"), "{err}");
        assert!(err.line >= 3, "{err}");
    }

    #[test]
    fn a_bool_register_point_without_bit_is_refused() {
        let text = "[[profile]]\nid = \"x\"\n\n[[profile.point]]\nname = \"a\"\nfunction = \"holding\"\naddress = 1\ndata_type = \"bool\"\n";
        let err = parse_profile("t.toml", text).unwrap_err();
        assert_eq!(err.key, "profile[0].point[0].bit");
        assert_eq!(err.line, 4, "{err}");
    }

    #[test]
    fn a_coil_point_must_be_bool() {
        let text = "[[profile]]\nid = \"x\"\n[[profile.point]]\nname = \"a\"\nfunction = \"coil\"\naddress = 1\ndata_type = \"i16\"\n";
        assert_eq!(
            parse_profile("t.toml", text).unwrap_err().key,
            "profile[0].point[0].data_type"
        );
    }

    #[test]
    fn a_modbus_point_without_an_address_names_the_missing_field() {
        let text = "[[profile]]\nid = \"x\"\n[[profile.point]]\nname = \"a\"\nfunction = \"holding\"\ndata_type = \"i16\"\n";
        let err = parse_profile("t.toml", text).unwrap_err();
        assert_eq!(err.key, "profile[0].point[0].address");
        assert!(
            err.message.contains("a modbus point needs `address`"),
            "{err}"
        );
        let p = &parse_profile(
            "t.toml",
            &text.replace("data_type", "address = 3\ndata_type"),
        )
        .unwrap()[0];
        assert_eq!(p.protocol, Protocol::Modbus, "modbus is the default");
    }

    #[test]
    fn a_count_that_disagrees_with_the_data_type_is_refused() {
        let text = "[[profile]]\nid = \"x\"\n[[profile.point]]\nname = \"a\"\nfunction = \"input\"\naddress = 1\ncount = 1\ndata_type = \"f32\"\n";
        assert_eq!(
            parse_profile("t.toml", text).unwrap_err().key,
            "profile[0].point[0].count"
        );
    }

    fn point(fields: &str) -> Result<Point, ProfileError> {
        let text = format!("[[profile]]\nid = \"x\"\n[[profile.point]]\nname = \"a\"\n{fields}");
        parse_profile("t.toml", &text).map(|mut ps| ps.remove(0).points.remove(0))
    }

    fn write_function(p: &Point) -> WriteFunction {
        p.spec.modbus().unwrap().write_function
    }

    #[test]
    fn write_function_defaults_to_single_for_one_item_and_multiple_for_two_registers() {
        let one =
            point("function = \"holding\"\naddress = 1\ndata_type = \"i16\"\nwritable = true\n");
        assert_eq!(write_function(&one.unwrap()), WriteFunction::Single);
        let two =
            point("function = \"holding\"\naddress = 1\ndata_type = \"u32\"\nwritable = true\n");
        assert_eq!(write_function(&two.unwrap()), WriteFunction::Multiple);
        let coil =
            point("function = \"coil\"\naddress = 1\ndata_type = \"bool\"\nwritable = true\n");
        assert_eq!(write_function(&coil.unwrap()), WriteFunction::Single);
        let fc16 = point(
            "function = \"holding\"\naddress = 1\ndata_type = \"u16\"\nwritable = true\nwrite_function = \"multiple\"\n",
        );
        assert_eq!(write_function(&fc16.unwrap()), WriteFunction::Multiple);
    }

    #[test]
    fn a_two_register_value_cannot_be_written_by_fc06() {
        let err = point("function = \"holding\"\naddress = 1\ndata_type = \"f32\"\nwritable = true\nwrite_function = \"single\"\n").unwrap_err();
        assert_eq!(err.key, "profile[0].point[0].write_function");
        assert!(err.message.contains("FC16"), "{err}");
        assert_eq!(err.line, 3, "{err}");
    }

    #[test]
    fn write_function_only_applies_to_holding_and_coil_points() {
        let err = point("function = \"discrete\"\naddress = 1\ndata_type = \"bool\"\nwrite_function = \"single\"\n").unwrap_err();
        assert_eq!(err.key, "profile[0].point[0].write_function");
        assert!(err.message.contains("holding and coil"), "{err}");
        let err = point("function = \"holding\"\naddress = 1\ndata_type = \"u16\"\nwrite_function = \"double\"\n").unwrap_err();
        assert!(err.to_string().contains("write_function"), "{err}");
        // Not an ouman_serial field
        let text = "[[profile]]\nid = \"x\"\nprotocol = \"ouman_serial\"\n[[profile.point]]\nname = \"a\"\ndata_id = 18\nwrite_function = \"single\"\n";
        let err = parse_profile("t.toml", text).unwrap_err();
        assert_eq!(err.key, "profile[0].point[0].write_function", "{err}");
        // The agent fills its own input registers in slave mode: accepted here,
        // refused by the polling driver before sending.
        let p = point("function = \"input\"\naddress = 1\ndata_type = \"u16\"\nwritable = true\n")
            .unwrap();
        assert!(p.writable);
    }

    #[test]
    fn duplicate_point_names_are_refused() {
        let pt = "[[profile.point]]\nname = \"a\"\nfunction = \"input\"\naddress = 1\ndata_type = \"u16\"\n";
        let text = format!("[[profile]]\nid = \"x\"\n{pt}{pt}");
        assert!(
            parse_profile("t.toml", &text)
                .unwrap_err()
                .message
                .contains("duplicate")
        );
    }

    #[test]
    fn the_pop_board_profile_has_rooms_outputs_and_alarms() {
        let p = load_builtin("pop_board").unwrap().unwrap();
        assert_eq!(p.protocol, Protocol::Pop);
        assert_eq!(p.points.len(), 8 * 3 + 6 * 2 + 3);
        let get = |k: &str| p.points.iter().find(|p| p.key == k).unwrap();
        let t = get("room_8_ceiling_setpoint");
        assert_eq!(
            t.spec,
            Spec::Pop(PopSpec {
                field: PopField::CeilingSetpoint,
                index: 8
            })
        );
        assert!(t.writable && t.unit == "degC");
        assert_eq!(t.info().kind, protocol::PointKind::Analog);
        assert!(!get("room_1_temp").writable);
        let o = get("output_6_manual");
        assert!(o.writable && o.info().kind == protocol::PointKind::Binary);
        let alarms: Vec<_> = p
            .points
            .iter()
            .filter(|p| p.alarm)
            .map(|p| p.key.as_str())
            .collect();
        assert_eq!(
            alarms,
            ["alarm_fire", "alarm_burglary", "alarm_mains_failure"]
        );
        assert!(
            p.points.iter().all(|p| p.guessed),
            "the layouts are chosen, not known"
        );
    }

    #[test]
    fn fields_of_another_protocol_are_refused() {
        // a POP field in a Modbus profile
        let text = "[[profile]]\nid = \"x\"\n[[profile.point]]\nname = \"a\"\nfunction = \"holding\"\naddress = 1\ndata_type = \"u16\"\nindex = 3\n";
        let err = parse_profile("t.toml", text).unwrap_err();
        assert_eq!(err.key, "profile[0].point[0].index");
        assert_eq!(err.message, "`index` does not apply to modbus points");
        // a Modbus field in a POP profile
        let text = "[[profile]]\nid = \"x\"\nprotocol = \"pop\"\n[[profile.point]]\nname = \"a\"\nfield = \"alarm\"\nindex = 1\ndata_type = \"bool\"\n";
        let err = parse_profile("t.toml", text).unwrap_err();
        assert_eq!(err.key, "profile[0].point[0].data_type");
        assert_eq!(err.line, 4);
        let ok = text.replace("data_type = \"bool\"\n", "");
        assert_eq!(
            parse_profile("t.toml", &ok).unwrap()[0].protocol,
            Protocol::Pop
        );
    }

    #[test]
    fn pick_by_id_names_the_available_profiles_when_missing() {
        let text = "[[profile]]\nid = \"a\"\n[[profile]]\nid = \"b\"\n";
        let ps = parse_profile("t.toml", text).unwrap();
        let err = pick("t.toml", ps.clone(), Some("c")).unwrap_err();
        assert!(err.message.contains("a, b"), "{err}");
        assert!(pick("t.toml", ps.clone(), None).is_err());
        assert_eq!(pick("t.toml", ps, Some("b")).unwrap().id, "b");
    }
}
