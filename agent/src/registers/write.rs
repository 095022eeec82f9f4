//! A value for a point → the Modbus write request that sets it (pure).
//!
//! [`plan_write`] encodes the value with [`super::encode`] and picks the
//! function code from the point: coils take FC05 (or FC15 with one coil when
//! the profile says `write_function = "multiple"`), holding registers FC06 for
//! one register (or FC16 when the profile says so) and FC16 for two-register
//! values, which must change in one request. Input registers and discrete
//! inputs have no write function code at all.
//!
//! A `bool` kept in one bit of a holding register cannot be written alone:
//! the driver reads the register, sets or clears the bit
//! ([`WritePlan::with_current`]) and writes the whole word back. That is a
//! read-modify-write with a race: if the device (or another master) changes
//! another bit of that register between our read and our write, our write puts
//! the old value of that bit back. The window is one request/response on the
//! bus (tens of milliseconds on RS-485). FC22 Mask Write Register (V1.1b3
//! §6.16) would avoid it, but few field devices implement it; registers that
//! mix a commanded bit with bits the device changes by itself should not be
//! written this way.
//!
//! [`WriteRequest::check`] enforces the spec's limits (quantities, byte
//! counts, address range) so a bad request is refused before anything is
//! sent.

use super::{
    Function, PointSpec, WriteFunction,
    encode::{EncodeError, Encoded, encode_registers, merge_bit},
};

/// V1.1b3 §6.11: 1..=1968 (0x07B0) coils per FC15 request.
pub const MAX_WRITE_COILS: usize = 1968;
/// V1.1b3 §6.12: 1..=123 (0x7B) registers per FC16 request.
pub const MAX_WRITE_REGISTERS: usize = 123;

/// One Modbus write request (the PDU fields, no unit id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteRequest {
    /// FC05 Write Single Coil (§6.5): `0xFF00` on, `0x0000` off on the wire.
    SingleCoil {
        /// Coil address.
        addr: u16,
        /// New state.
        on: bool,
    },
    /// FC06 Write Single Register (§6.6).
    SingleRegister {
        /// Register address.
        addr: u16,
        /// New contents.
        value: u16,
    },
    /// FC15 (0x0F) Write Multiple Coils (§6.11).
    MultipleCoils {
        /// First coil.
        addr: u16,
        /// New states, from `addr` up.
        coils: Vec<bool>,
    },
    /// FC16 (0x10) Write Multiple Registers (§6.12).
    MultipleRegisters {
        /// First register.
        addr: u16,
        /// New contents, from `addr` up.
        values: Vec<u16>,
    },
}

/// A write request that breaks the spec's limits; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteLimitError {
    /// Quantity outside 1..=max for the function (§6.11 / §6.12).
    #[error("function 0x{function:02X}: quantity {count} outside 1..={max}")]
    Quantity {
        /// Function code.
        function: u8,
        /// Items in the request.
        count: usize,
        /// The spec's maximum.
        max: usize,
    },
    /// The items would run past address 65535.
    #[error("function 0x{function:02X}: {count} item(s) from address {addr} run past 65535")]
    AddressRange {
        /// Function code.
        function: u8,
        /// First address.
        addr: u16,
        /// Items in the request.
        count: usize,
    },
}

impl WriteRequest {
    /// The function code (5, 6, 15 or 16).
    pub fn function_code(&self) -> u8 {
        match self {
            WriteRequest::SingleCoil { .. } => 0x05,
            WriteRequest::SingleRegister { .. } => 0x06,
            WriteRequest::MultipleCoils { .. } => 0x0F,
            WriteRequest::MultipleRegisters { .. } => 0x10,
        }
    }

    /// First address written.
    pub fn address(&self) -> u16 {
        match self {
            WriteRequest::SingleCoil { addr, .. }
            | WriteRequest::SingleRegister { addr, .. }
            | WriteRequest::MultipleCoils { addr, .. }
            | WriteRequest::MultipleRegisters { addr, .. } => *addr,
        }
    }

    /// Coils or registers written.
    pub fn quantity(&self) -> usize {
        match self {
            WriteRequest::SingleCoil { .. } | WriteRequest::SingleRegister { .. } => 1,
            WriteRequest::MultipleCoils { coils, .. } => coils.len(),
            WriteRequest::MultipleRegisters { values, .. } => values.len(),
        }
    }

    /// Check the spec's limits: FC15 1..=1968 coils (byte count ⌈n/8⌉ ≤ 246),
    /// FC16 1..=123 registers (byte count 2n ≤ 246), and no item past address
    /// 65535. Clients call this before sending anything.
    pub fn check(&self) -> Result<(), WriteLimitError> {
        Self::check_parts(self.function_code(), self.address(), self.quantity())
    }

    /// [`WriteRequest::check`] for a request given by its parts (function
    /// code, first address, item count), for clients whose API takes the
    /// parts. FC05/FC06 write exactly one item.
    pub fn check_parts(function: u8, addr: u16, count: usize) -> Result<(), WriteLimitError> {
        let max = match function {
            0x0F => MAX_WRITE_COILS,
            0x10 => MAX_WRITE_REGISTERS,
            _ => 1,
        };
        if !(1..=max).contains(&count) {
            return Err(WriteLimitError::Quantity {
                function,
                count,
                max,
            });
        }
        if usize::from(addr) + count > 0x1_0000 {
            return Err(WriteLimitError::AddressRange {
                function,
                addr,
                count,
            });
        }
        Ok(())
    }
}

/// What it takes to write a point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WritePlan {
    /// Send this request as it is.
    Direct(WriteRequest),
    /// Bit `bit` of holding register `addr`: read the register, merge the bit
    /// with [`WritePlan::with_current`], write the word back (see the module
    /// doc for the race this implies).
    RegisterBit {
        /// The holding register.
        addr: u16,
        /// Bit 0..=15 (0 = least significant).
        bit: u8,
        /// New state of the bit.
        on: bool,
        /// FC06 or FC16 for writing the word back.
        function: WriteFunction,
    },
}

impl WritePlan {
    /// The request that writes a register bit, given the register's current
    /// contents: every other bit stays as read.
    pub fn with_current(
        addr: u16,
        bit: u8,
        on: bool,
        function: WriteFunction,
        current: u16,
    ) -> WriteRequest {
        register_request(addr, vec![merge_bit(current, bit, on)], function)
    }
}

/// Why a value cannot be written to a point (nothing was sent).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WritePlanError {
    /// Input registers and discrete inputs have no write function code.
    #[error("{0} points are read-only in Modbus (no function code writes them)")]
    ReadOnlyTable(Function),
    /// The value does not fit the point's type.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// The write that sets `spec` to `value` (engineering units).
pub fn plan_write(spec: &PointSpec, value: f64) -> Result<WritePlan, WritePlanError> {
    let addr = spec.address.0;
    match spec.function {
        Function::Input | Function::Discrete => Err(WritePlanError::ReadOnlyTable(spec.function)),
        Function::Coil => match encode_registers(spec, value)? {
            Encoded::Bit { on, .. } => Ok(WritePlan::Direct(match spec.write_function {
                WriteFunction::Single => WriteRequest::SingleCoil { addr, on },
                WriteFunction::Multiple => WriteRequest::MultipleCoils {
                    addr,
                    coils: vec![on],
                },
            })),
            // Profiles only allow `bool` on coils; refuse rather than guess.
            Encoded::Words(_) => Err(EncodeError::NotBool(value).into()),
        },
        Function::Holding => match encode_registers(spec, value)? {
            Encoded::Bit { bit, on } => Ok(WritePlan::RegisterBit {
                addr,
                bit,
                on,
                function: spec.write_function,
            }),
            Encoded::Words(words) => {
                // Two-register values always go in one FC16 request: two FC06
                // writes would leave a torn value between them.
                let function = if words.len() > 1 || spec.data_type.width() > 1 {
                    WriteFunction::Multiple
                } else {
                    spec.write_function
                };
                Ok(WritePlan::Direct(register_request(addr, words, function)))
            }
        },
    }
}

fn register_request(addr: u16, words: Vec<u16>, function: WriteFunction) -> WriteRequest {
    match (function, words.as_slice()) {
        (WriteFunction::Single, [value]) => WriteRequest::SingleRegister {
            addr,
            value: *value,
        },
        _ => WriteRequest::MultipleRegisters {
            addr,
            values: words,
        },
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::registers::{DataType, RegisterAddress, WordOrder};

    fn spec(function: Function, address: u16, data_type: DataType) -> PointSpec {
        PointSpec {
            function,
            address: RegisterAddress(address),
            data_type,
            bit: None,
            word_order: WordOrder::HighFirst,
            scale: 1.0,
            offset: 0.0,
            write_function: if data_type.width() > 1 {
                WriteFunction::Multiple
            } else {
                WriteFunction::Single
            },
        }
    }

    #[test]
    fn a_one_register_value_goes_by_fc06_unless_the_profile_says_fc16() {
        let mut s = spec(Function::Holding, 13, DataType::I16);
        s.scale = 0.01;
        // 21.5 degC -> 2150 (0x0866) by FC06
        assert_eq!(
            plan_write(&s, 21.5),
            Ok(WritePlan::Direct(WriteRequest::SingleRegister {
                addr: 13,
                value: 0x0866
            }))
        );
        s.write_function = WriteFunction::Multiple;
        // the same value by FC16 with one register
        assert_eq!(
            plan_write(&s, 21.5),
            Ok(WritePlan::Direct(WriteRequest::MultipleRegisters {
                addr: 13,
                values: vec![0x0866]
            }))
        );
    }

    #[test]
    fn a_two_register_value_always_goes_by_fc16_in_its_word_order() {
        let mut s = spec(Function::Holding, 100, DataType::I32);
        // -123456 = 0xFFFE1DC0
        assert_eq!(
            plan_write(&s, -123456.0),
            Ok(WritePlan::Direct(WriteRequest::MultipleRegisters {
                addr: 100,
                values: vec![0xFFFE, 0x1DC0]
            }))
        );
        s.word_order = WordOrder::LowFirst;
        // even if a spec says single (profiles refuse that), never two FC06
        s.write_function = WriteFunction::Single;
        assert_eq!(
            plan_write(&s, -123456.0),
            Ok(WritePlan::Direct(WriteRequest::MultipleRegisters {
                addr: 100,
                values: vec![0x1DC0, 0xFFFE]
            }))
        );
    }

    #[test]
    fn coils_go_by_fc05_or_fc15() {
        let mut s = spec(Function::Coil, 0xAC, DataType::Bool);
        assert_eq!(
            plan_write(&s, 1.0),
            Ok(WritePlan::Direct(WriteRequest::SingleCoil {
                addr: 0xAC,
                on: true
            }))
        );
        s.write_function = WriteFunction::Multiple;
        assert_eq!(
            plan_write(&s, 0.0),
            Ok(WritePlan::Direct(WriteRequest::MultipleCoils {
                addr: 0xAC,
                coils: vec![false]
            }))
        );
        assert!(matches!(
            plan_write(&s, 0.5),
            Err(WritePlanError::Encode(EncodeError::NotBool(_)))
        ));
    }

    #[test]
    fn a_register_bit_is_a_read_modify_write_that_keeps_the_other_bits() {
        let mut s = spec(Function::Holding, 45, DataType::Bool);
        s.bit = Some(2);
        let plan = plan_write(&s, 1.0).unwrap();
        assert_eq!(
            plan,
            WritePlan::RegisterBit {
                addr: 45,
                bit: 2,
                on: true,
                function: WriteFunction::Single
            }
        );
        // current 0b1001 -> 0b1101, by FC06
        assert_eq!(
            WritePlan::with_current(45, 2, true, WriteFunction::Single, 0b1001),
            WriteRequest::SingleRegister {
                addr: 45,
                value: 0b1101
            }
        );
        // clearing bit 3 of 0xFFFF by FC16
        assert_eq!(
            WritePlan::with_current(45, 3, false, WriteFunction::Multiple, 0xFFFF),
            WriteRequest::MultipleRegisters {
                addr: 45,
                values: vec![0xFFF7]
            }
        );
    }

    #[test]
    fn input_registers_and_discrete_inputs_cannot_be_written() {
        for f in [Function::Input, Function::Discrete] {
            let dt = if f == Function::Input {
                DataType::U16
            } else {
                DataType::Bool
            };
            assert_eq!(
                plan_write(&spec(f, 0, dt), 1.0),
                Err(WritePlanError::ReadOnlyTable(f))
            );
        }
    }

    #[test]
    fn a_value_out_of_range_is_refused_before_anything_is_built() {
        let mut s = spec(Function::Holding, 0, DataType::I16);
        s.scale = 0.01;
        assert!(matches!(
            plan_write(&s, 400.0),
            Err(WritePlanError::Encode(EncodeError::OutOfRange { .. }))
        ));
    }

    #[test]
    fn the_spec_limits_are_checked() {
        let regs = |n: usize| WriteRequest::MultipleRegisters {
            addr: 0,
            values: vec![0; n],
        };
        let coils = |addr: u16, n: usize| WriteRequest::MultipleCoils {
            addr,
            coils: vec![true; n],
        };
        assert_eq!(regs(123).check(), Ok(()));
        assert_eq!(
            regs(124).check(),
            Err(WriteLimitError::Quantity {
                function: 0x10,
                count: 124,
                max: 123
            })
        );
        assert!(matches!(
            regs(0).check(),
            Err(WriteLimitError::Quantity { count: 0, .. })
        ));
        assert_eq!(coils(0, 1968).check(), Ok(()));
        assert!(matches!(
            coils(0, 1969).check(),
            Err(WriteLimitError::Quantity { max: 1968, .. })
        ));
        // 2 coils from 65535 would need address 65536
        assert_eq!(coils(65534, 2).check(), Ok(()));
        assert!(matches!(
            coils(65535, 2).check(),
            Err(WriteLimitError::AddressRange { .. })
        ));
        assert_eq!(
            WriteRequest::SingleRegister {
                addr: 65535,
                value: 1
            }
            .check(),
            Ok(())
        );
        assert!(WriteRequest::check_parts(0x10, 0, 124).is_err());
        assert!(WriteRequest::check_parts(0x0F, 65000, 600).is_err());
        assert!(WriteRequest::check_parts(0x0F, 0, 1968).is_ok());
    }

    fn any_spec() -> impl Strategy<Value = PointSpec> {
        let dt = prop_oneof![
            Just(DataType::I16),
            Just(DataType::U16),
            Just(DataType::I32),
            Just(DataType::U32),
            Just(DataType::F32),
            Just(DataType::Bool),
            Just(DataType::Bits16),
        ];
        let f = prop_oneof![
            Just(Function::Holding),
            Just(Function::Input),
            Just(Function::Coil),
            Just(Function::Discrete),
        ];
        let wf = prop_oneof![Just(WriteFunction::Single), Just(WriteFunction::Multiple)];
        (f, any::<u16>(), dt, 0u8..16, wf, any::<f64>()).prop_map(|(f, a, dt, bit, wf, scale)| {
            let mut s = spec(f, a, dt);
            s.bit = (dt == DataType::Bool && f.is_register()).then_some(bit);
            s.write_function = wf;
            s.scale = scale;
            s
        })
    }

    proptest! {
        #[test]
        fn every_planned_request_is_within_the_spec_limits(s in any_spec(), value in any::<f64>()) {
            match plan_write(&s, value) {
                Ok(WritePlan::Direct(req)) => {
                    prop_assert_eq!(req.address(), s.address.0);
                    if u32::from(s.address.0) + u32::from(s.data_type.width()) <= 0x1_0000 {
                        prop_assert_eq!(req.check(), Ok(()));
                    }
                    prop_assert_eq!(req.quantity(), usize::from(s.width()));
                }
                Ok(WritePlan::RegisterBit { addr, bit, .. }) => {
                    prop_assert_eq!(addr, s.address.0);
                    prop_assert!(bit < 16);
                }
                Err(_) => {}
            }
        }
    }
}
