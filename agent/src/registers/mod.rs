//! Register maps as data: what a point is on the wire and how its raw words or
//! bits become an engineering value.
//!
//! Everything here is pure (no I/O, no clock). [`profile`] parses profile TOML
//! files into [`Point`]s, [`decode`] turns raw Modbus words/bits into `f64`,
//! [`encode`] goes the other way (used by writes and the simulators, kept
//! apart from the decode path so tests of one do not silently reuse the
//! other), [`write`](mod@write) turns a value for a point into the Modbus write request
//! that sets it, and [`plan`] groups a device's points into the fewest Modbus
//! read requests.

pub mod decode;
pub mod encode;
pub mod exchange;
pub mod ouman;
pub mod plan;
pub mod pop;
pub mod profile;
pub mod write;

use serde::Deserialize;

pub use decode::{DecodeError, decode_bits, decode_registers};
pub use encode::{EncodeError, encode_registers};
pub use exchange::Direction;
pub use plan::{PlannedRead, PointSlot, plan_reads};
pub use pop::{PopField, PopSpec};
pub use profile::{Point, Profile, ProfileError, builtin_profile_ids, load_builtin, parse_profile};
pub use write::{WritePlan, WritePlanError, WriteRequest, plan_write};

/// Most registers one FC03/FC04 request may read (Modbus Application Protocol
/// V1.1b3 §6.3: quantity 1..=125).
pub const MAX_REGISTERS_PER_READ: u16 = 125;
/// Most bits one FC01/FC02 request may read (V1.1b3 §6.1: quantity 1..=2000).
pub const MAX_BITS_PER_READ: u16 = 2000;

/// Which Modbus table a point lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    /// Holding registers: FC03 read (FC06/FC16 write).
    Holding,
    /// Input registers: FC04 read.
    Input,
    /// Coils: FC01 read (FC05/FC15 write).
    Coil,
    /// Discrete inputs: FC02 read.
    Discrete,
}

impl Function {
    /// True for the two 16-bit register tables, false for the bit tables.
    pub fn is_register(self) -> bool {
        matches!(self, Function::Holding | Function::Input)
    }

    /// Largest quantity one read request of this table may ask for.
    pub fn max_quantity(self) -> u16 {
        if self.is_register() {
            MAX_REGISTERS_PER_READ
        } else {
            MAX_BITS_PER_READ
        }
    }
}

impl std::fmt::Display for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Function::Holding => "holding",
            Function::Input => "input",
            Function::Coil => "coil",
            Function::Discrete => "discrete",
        })
    }
}

/// How the raw register contents are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// One register, two's complement.
    I16,
    /// One register, unsigned.
    U16,
    /// Two registers, two's complement (see [`WordOrder`]).
    I32,
    /// Two registers, unsigned.
    U32,
    /// Two registers, IEEE 754 single precision.
    F32,
    /// One bit: a coil/discrete input, or bit `bit` of a register.
    Bool,
    /// A whole register as a bit field, reported as its unsigned value.
    Bits16,
}

impl DataType {
    /// Number of registers (or bits, for coil/discrete) the type occupies.
    pub fn width(self) -> u16 {
        match self {
            DataType::I32 | DataType::U32 | DataType::F32 => 2,
            _ => 1,
        }
    }
}

/// Order of the two registers of a 32-bit value. Bytes inside each register
/// are always big-endian (Modbus Application Protocol V1.1b3 §4.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    /// The register at the lower address holds the high word (the spec's own
    /// convention and the common default).
    #[default]
    HighFirst,
    /// The register at the lower address holds the low word ("word swapped").
    LowFirst,
}

/// Which kind of write function code sets a point (Modbus Application
/// Protocol V1.1b3 §6.5, §6.6, §6.11, §6.12). Devices differ: some accept
/// only FC06 for a single register, others only FC16, so a profile can say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteFunction {
    /// FC06 Write Single Register, or FC05 Write Single Coil. The default for
    /// one-register values and coils.
    Single,
    /// FC16 (0x10) Write Multiple Registers, or FC15 (0x0F) Write Multiple
    /// Coils. The default, and the only choice, for two-register values, which
    /// must change in one request.
    Multiple,
}

/// The protocol a profile's points are addressed in. A device's profile must
/// match its bus: Modbus profiles on `rtu`, `ascii`, `tcp` and `modbus_slave`
/// buses, `ouman_serial` profiles on `ouman` buses, `pop` profiles on `pop`
/// buses.
///
/// Adding a protocol: a variant here, its point fields in
/// [`profile`]'s `RawPoint::resolve`, a [`Spec`] variant, a bus kind in
/// `config`, and a [`crate::poller::BusDriver`] for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Modbus registers and bits ([`PointSpec`]).
    #[default]
    Modbus,
    /// The Ouman EH-203 native serial protocol ([`ouman::OumanSpec`]).
    OumanSerial,
    /// POP room-heating boards ([`PopSpec`]).
    Pop,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Modbus => "modbus",
            Protocol::OumanSerial => "ouman_serial",
            Protocol::Pop => "pop",
        })
    }
}

/// Where a point lives on the wire and how to decode it, per protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    /// A Modbus register or bit.
    Modbus(PointSpec),
    /// Bytes of an Ouman data block.
    Ouman(ouman::OumanSpec),
    /// A value of a POP board.
    Pop(PopSpec),
}

impl Spec {
    /// The protocol this spec belongs to.
    pub fn protocol(&self) -> Protocol {
        match self {
            Spec::Modbus(_) => Protocol::Modbus,
            Spec::Ouman(_) => Protocol::OumanSerial,
            Spec::Pop(_) => Protocol::Pop,
        }
    }

    /// The Modbus half, when the point is a Modbus point.
    pub fn modbus(&self) -> Option<&PointSpec> {
        match self {
            Spec::Modbus(s) => Some(s),
            _ => None,
        }
    }

    /// The Ouman half, when the point is an Ouman native point.
    pub fn ouman(&self) -> Option<&ouman::OumanSpec> {
        match self {
            Spec::Ouman(s) => Some(s),
            _ => None,
        }
    }

    /// The POP half, when the point is a POP point.
    pub fn pop(&self) -> Option<&PopSpec> {
        match self {
            Spec::Pop(s) => Some(s),
            _ => None,
        }
    }

    /// True when the value is on/off (shown as a lamp).
    pub fn is_binary(&self) -> bool {
        match self {
            Spec::Modbus(s) => s.data_type == DataType::Bool,
            Spec::Ouman(s) => s.data_type == ouman::OumanType::Bool,
            Spec::Pop(s) => s.field.is_binary(),
        }
    }

    /// A short human description of the wire location, e.g. `holding 18 bit 2`.
    pub fn describe(&self) -> String {
        match self {
            Spec::Modbus(s) => {
                let bit = s.bit.map(|b| format!(" bit {b}")).unwrap_or_default();
                format!("{} {}{bit} {:?}", s.function, s.address.0, s.data_type)
            }
            Spec::Ouman(s) => {
                let bit = s.bit.map(|b| format!(" bit {b}")).unwrap_or_default();
                format!("data ID {} byte {}{bit} {:?}", s.id, s.byte, s.data_type)
            }
            Spec::Pop(s) => s.describe(),
        }
    }
}

/// A Modbus PDU address (0-based, exactly what goes on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(transparent)]
pub struct RegisterAddress(pub u16);

/// Where a point lives and how to decode it; the wire-facing half of a [`Point`].
#[derive(Debug, Clone, PartialEq)]
pub struct PointSpec {
    /// Modbus table.
    pub function: Function,
    /// First register or bit.
    pub address: RegisterAddress,
    /// Raw interpretation.
    pub data_type: DataType,
    /// Bit index (0 = least significant) for `Bool` points in a register.
    pub bit: Option<u8>,
    /// Register order for 32-bit types.
    pub word_order: WordOrder,
    /// Engineering value = raw × scale + offset.
    pub scale: f64,
    /// See `scale`.
    pub offset: f64,
    /// How writes reach it (only meaningful for holding registers and coils).
    pub write_function: WriteFunction,
}

impl PointSpec {
    /// Registers (or bits) this point occupies on the wire.
    pub fn width(&self) -> u16 {
        self.data_type.width()
    }
}
