//! Modbus PDUs for the function codes the agent speaks (Modbus Application
//! Protocol V1.1b3 §6.1–6.6, §6.11, §6.12) and exception replies (§7).
//!
//! Pure and transport-neutral: the ASCII codec wraps these bytes in
//! `':' hex LRC CRLF`, but the same PDU is what RTU and TCP carry. Encoding
//! refuses requests outside the spec's quantity limits, so an out-of-range
//! read never reaches the wire; decoding checks byte counts against
//! quantities and refuses trailing bytes.

use tokio_modbus::ExceptionCode;

/// FC01 Read Coils.
pub const READ_COILS: u8 = 0x01;
/// FC02 Read Discrete Inputs.
pub const READ_DISCRETE_INPUTS: u8 = 0x02;
/// FC03 Read Holding Registers.
pub const READ_HOLDING_REGISTERS: u8 = 0x03;
/// FC04 Read Input Registers.
pub const READ_INPUT_REGISTERS: u8 = 0x04;
/// FC05 Write Single Coil.
pub const WRITE_SINGLE_COIL: u8 = 0x05;
/// FC06 Write Single Register.
pub const WRITE_SINGLE_REGISTER: u8 = 0x06;
/// FC0F Write Multiple Coils.
pub const WRITE_MULTIPLE_COILS: u8 = 0x0F;
/// FC10 Write Multiple Registers.
pub const WRITE_MULTIPLE_REGISTERS: u8 = 0x10;

/// §6.1/§6.2: 1..=2000 (0x07D0) bits per read.
pub const MAX_READ_BITS: u16 = 2000;
/// §6.3/§6.4: 1..=125 (0x7D) registers per read.
pub const MAX_READ_REGISTERS: u16 = 125;
/// §6.11: 1..=1968 (0x07B0) coils per write.
pub const MAX_WRITE_COILS: u16 = 1968;
/// §6.12: 1..=123 (0x7B) registers per write.
pub const MAX_WRITE_REGISTERS: u16 = 123;
/// §4.1: a PDU is at most 253 bytes (256-byte RTU ADU minus address and CRC).
pub const MAX_PDU_LEN: usize = 253;

/// §6.5: the only two values FC05 allows.
const COIL_ON: u16 = 0xFF00;
const COIL_OFF: u16 = 0x0000;

/// A request PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// FC01: `count` coils from `addr`.
    ReadCoils { addr: u16, count: u16 },
    /// FC02: `count` discrete inputs from `addr`.
    ReadDiscreteInputs { addr: u16, count: u16 },
    /// FC03: `count` holding registers from `addr`.
    ReadHoldingRegisters { addr: u16, count: u16 },
    /// FC04: `count` input registers from `addr`.
    ReadInputRegisters { addr: u16, count: u16 },
    /// FC05: one coil on (0xFF00) or off (0x0000).
    WriteSingleCoil { addr: u16, on: bool },
    /// FC06: one register.
    WriteSingleRegister { addr: u16, value: u16 },
    /// FC0F: consecutive coils from `addr`.
    WriteMultipleCoils { addr: u16, coils: Vec<bool> },
    /// FC10: consecutive registers from `addr`.
    WriteMultipleRegisters { addr: u16, values: Vec<u16> },
}

/// A response PDU, normal or exception.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// FC01 bits, padded by the device to whole bytes (callers truncate).
    ReadCoils(Vec<bool>),
    /// FC02 bits, padded to whole bytes.
    ReadDiscreteInputs(Vec<bool>),
    /// FC03 registers.
    ReadHoldingRegisters(Vec<u16>),
    /// FC04 registers.
    ReadInputRegisters(Vec<u16>),
    /// FC05 echo.
    WriteSingleCoil { addr: u16, on: bool },
    /// FC06 echo.
    WriteSingleRegister { addr: u16, value: u16 },
    /// FC0F: start address and quantity written.
    WriteMultipleCoils { addr: u16, count: u16 },
    /// FC10: start address and quantity written.
    WriteMultipleRegisters { addr: u16, count: u16 },
    /// `(FC | 0x80) code` (§7).
    Exception(ExceptionResponse),
}

/// An exception reply: the request's function code and the device's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExceptionResponse {
    /// The function code of the request (without the 0x80 bit).
    pub function: u8,
    /// The exception code (§7 table; unknown codes are kept as `Custom`).
    pub code: ExceptionCode,
}

/// Why a PDU could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    /// Zero bytes where a PDU was expected.
    #[error("empty PDU")]
    Empty,
    /// A function code this codec does not implement.
    #[error("unsupported function code 0x{0:02X}")]
    UnsupportedFunction(u8),
    /// A quantity outside the spec's range for the function.
    #[error("function 0x{function:02X}: quantity {count} outside 1..={max}")]
    QuantityOutOfRange {
        /// Function code.
        function: u8,
        /// The offending quantity.
        count: usize,
        /// The spec's maximum.
        max: u16,
    },
    /// The PDU is shorter or longer than its header says.
    #[error("function 0x{function:02X}: expected {expected} bytes, got {actual}")]
    Length {
        /// Function code.
        function: u8,
        /// Length implied by the function code and byte count.
        expected: usize,
        /// Length received.
        actual: usize,
    },
    /// A byte count that does not match the quantity (§6.11/§6.12) or is not
    /// a whole number of registers.
    #[error("function 0x{function:02X}: byte count {byte_count} does not fit quantity {count}")]
    ByteCount {
        /// Function code.
        function: u8,
        /// The byte count field.
        byte_count: u8,
        /// The quantity it should describe (0 when the PDU has none).
        count: u16,
    },
    /// FC05 with a value other than 0xFF00 or 0x0000 (§6.5).
    #[error("write single coil value 0x{0:04X} is neither 0xFF00 nor 0x0000")]
    CoilValue(u16),
}

impl Request {
    /// The function code.
    pub fn function(&self) -> u8 {
        match self {
            Request::ReadCoils { .. } => READ_COILS,
            Request::ReadDiscreteInputs { .. } => READ_DISCRETE_INPUTS,
            Request::ReadHoldingRegisters { .. } => READ_HOLDING_REGISTERS,
            Request::ReadInputRegisters { .. } => READ_INPUT_REGISTERS,
            Request::WriteSingleCoil { .. } => WRITE_SINGLE_COIL,
            Request::WriteSingleRegister { .. } => WRITE_SINGLE_REGISTER,
            Request::WriteMultipleCoils { .. } => WRITE_MULTIPLE_COILS,
            Request::WriteMultipleRegisters { .. } => WRITE_MULTIPLE_REGISTERS,
        }
    }

    /// Whether the request writes (only writes may be broadcast, Serial Line V1.02 §2.1).
    pub fn is_write(&self) -> bool {
        self.function() >= WRITE_SINGLE_COIL
    }

    /// The PDU bytes. Fails when a quantity is outside the spec's limits.
    pub fn encode(&self) -> Result<Vec<u8>, PduError> {
        let f = self.function();
        let mut out = vec![f];
        match self {
            Request::ReadCoils { addr, count } | Request::ReadDiscreteInputs { addr, count } => {
                check_qty(f, usize::from(*count), MAX_READ_BITS)?;
                put_u16s(&mut out, &[*addr, *count]);
            }
            Request::ReadHoldingRegisters { addr, count }
            | Request::ReadInputRegisters { addr, count } => {
                check_qty(f, usize::from(*count), MAX_READ_REGISTERS)?;
                put_u16s(&mut out, &[*addr, *count]);
            }
            Request::WriteSingleCoil { addr, on } => {
                put_u16s(&mut out, &[*addr, if *on { COIL_ON } else { COIL_OFF }]);
            }
            Request::WriteSingleRegister { addr, value } => put_u16s(&mut out, &[*addr, *value]),
            Request::WriteMultipleCoils { addr, coils } => {
                let count = check_qty(f, coils.len(), MAX_WRITE_COILS)?;
                put_u16s(&mut out, &[*addr, count]);
                let packed = pack_bits(coils);
                out.push(len_u8(packed.len()));
                out.extend_from_slice(&packed);
            }
            Request::WriteMultipleRegisters { addr, values } => {
                let count = check_qty(f, values.len(), MAX_WRITE_REGISTERS)?;
                put_u16s(&mut out, &[*addr, count]);
                out.push(len_u8(values.len() * 2));
                put_u16s(&mut out, values);
            }
        }
        Ok(out)
    }

    /// Parse a request PDU (what a server would receive), with the same limits as [`Request::encode`].
    pub fn decode(pdu: &[u8]) -> Result<Request, PduError> {
        let (&f, body) = pdu.split_first().ok_or(PduError::Empty)?;
        let req = match f {
            READ_COILS | READ_DISCRETE_INPUTS | READ_HOLDING_REGISTERS | READ_INPUT_REGISTERS => {
                let [addr, count] = fixed_words(f, pdu)?;
                let max = if f <= READ_DISCRETE_INPUTS {
                    MAX_READ_BITS
                } else {
                    MAX_READ_REGISTERS
                };
                check_qty(f, usize::from(count), max)?;
                match f {
                    READ_COILS => Request::ReadCoils { addr, count },
                    READ_DISCRETE_INPUTS => Request::ReadDiscreteInputs { addr, count },
                    READ_HOLDING_REGISTERS => Request::ReadHoldingRegisters { addr, count },
                    _ => Request::ReadInputRegisters { addr, count },
                }
            }
            WRITE_SINGLE_COIL => {
                let [addr, value] = fixed_words(f, pdu)?;
                Request::WriteSingleCoil {
                    addr,
                    on: coil_value(value)?,
                }
            }
            WRITE_SINGLE_REGISTER => {
                let [addr, value] = fixed_words(f, pdu)?;
                Request::WriteSingleRegister { addr, value }
            }
            WRITE_MULTIPLE_COILS | WRITE_MULTIPLE_REGISTERS => {
                if body.len() < 5 {
                    return Err(length(f, 6, pdu.len()));
                }
                let addr = u16::from_be_bytes([body[0], body[1]]);
                let count = u16::from_be_bytes([body[2], body[3]]);
                let byte_count = body[4];
                let data = &body[5..];
                let (max, needed) = if f == WRITE_MULTIPLE_COILS {
                    (MAX_WRITE_COILS, usize::from(count).div_ceil(8))
                } else {
                    (MAX_WRITE_REGISTERS, usize::from(count) * 2)
                };
                check_qty(f, usize::from(count), max)?;
                if usize::from(byte_count) != needed {
                    return Err(PduError::ByteCount {
                        function: f,
                        byte_count,
                        count,
                    });
                }
                if data.len() != needed {
                    return Err(length(f, 6 + needed, pdu.len()));
                }
                if f == WRITE_MULTIPLE_COILS {
                    let mut coils = unpack_bits(data);
                    coils.truncate(usize::from(count));
                    Request::WriteMultipleCoils { addr, coils }
                } else {
                    Request::WriteMultipleRegisters {
                        addr,
                        values: words(data),
                    }
                }
            }
            other => return Err(PduError::UnsupportedFunction(other)),
        };
        Ok(req)
    }
}

impl Response {
    /// The function code as it appears on the wire (with 0x80 for exceptions).
    pub fn function(&self) -> u8 {
        match self {
            Response::ReadCoils(_) => READ_COILS,
            Response::ReadDiscreteInputs(_) => READ_DISCRETE_INPUTS,
            Response::ReadHoldingRegisters(_) => READ_HOLDING_REGISTERS,
            Response::ReadInputRegisters(_) => READ_INPUT_REGISTERS,
            Response::WriteSingleCoil { .. } => WRITE_SINGLE_COIL,
            Response::WriteSingleRegister { .. } => WRITE_SINGLE_REGISTER,
            Response::WriteMultipleCoils { .. } => WRITE_MULTIPLE_COILS,
            Response::WriteMultipleRegisters { .. } => WRITE_MULTIPLE_REGISTERS,
            Response::Exception(e) => e.function | 0x80,
        }
    }

    /// The PDU bytes (what a server sends). Bits are packed LSB first and the
    /// last byte zero-padded (§6.1); quantities are checked against the read limits.
    pub fn encode(&self) -> Result<Vec<u8>, PduError> {
        let f = self.function();
        let mut out = vec![f];
        match self {
            Response::ReadCoils(bits) | Response::ReadDiscreteInputs(bits) => {
                check_qty(f, bits.len(), MAX_READ_BITS)?;
                let packed = pack_bits(bits);
                out.push(len_u8(packed.len()));
                out.extend_from_slice(&packed);
            }
            Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w) => {
                check_qty(f, w.len(), MAX_READ_REGISTERS)?;
                out.push(len_u8(w.len() * 2));
                put_u16s(&mut out, w);
            }
            Response::WriteSingleCoil { addr, on } => {
                put_u16s(&mut out, &[*addr, if *on { COIL_ON } else { COIL_OFF }]);
            }
            Response::WriteSingleRegister { addr, value } => put_u16s(&mut out, &[*addr, *value]),
            Response::WriteMultipleCoils { addr, count } => {
                check_qty(f, usize::from(*count), MAX_WRITE_COILS)?;
                put_u16s(&mut out, &[*addr, *count]);
            }
            Response::WriteMultipleRegisters { addr, count } => {
                check_qty(f, usize::from(*count), MAX_WRITE_REGISTERS)?;
                put_u16s(&mut out, &[*addr, *count]);
            }
            Response::Exception(e) => out.push(u8::from(e.code)),
        }
        Ok(out)
    }

    /// Parse a response PDU. The reply alone determines its length (byte
    /// counts for reads, fixed sizes otherwise), so no request is needed;
    /// matching it to the request is the client's job.
    pub fn decode(pdu: &[u8]) -> Result<Response, PduError> {
        let (&f, body) = pdu.split_first().ok_or(PduError::Empty)?;
        if f & 0x80 != 0 {
            let function = f & 0x7F;
            if !is_supported(function) {
                return Err(PduError::UnsupportedFunction(f));
            }
            let [code] = body else {
                return Err(length(f, 2, pdu.len()));
            };
            return Ok(Response::Exception(ExceptionResponse {
                function,
                code: ExceptionCode::new(*code),
            }));
        }
        let rsp = match f {
            READ_COILS | READ_DISCRETE_INPUTS | READ_HOLDING_REGISTERS | READ_INPUT_REGISTERS => {
                let (&byte_count, data) = body.split_first().ok_or(length(f, 2, pdu.len()))?;
                if data.len() != usize::from(byte_count) {
                    return Err(length(f, 2 + usize::from(byte_count), pdu.len()));
                }
                let registers = f >= READ_HOLDING_REGISTERS;
                let max_bytes = if registers {
                    usize::from(MAX_READ_REGISTERS) * 2
                } else {
                    usize::from(MAX_READ_BITS).div_ceil(8)
                };
                if byte_count == 0
                    || usize::from(byte_count) > max_bytes
                    || (registers && byte_count % 2 != 0)
                {
                    return Err(PduError::ByteCount {
                        function: f,
                        byte_count,
                        count: 0,
                    });
                }
                match f {
                    READ_COILS => Response::ReadCoils(unpack_bits(data)),
                    READ_DISCRETE_INPUTS => Response::ReadDiscreteInputs(unpack_bits(data)),
                    READ_HOLDING_REGISTERS => Response::ReadHoldingRegisters(words(data)),
                    _ => Response::ReadInputRegisters(words(data)),
                }
            }
            WRITE_SINGLE_COIL => {
                let [addr, value] = fixed_words(f, pdu)?;
                Response::WriteSingleCoil {
                    addr,
                    on: coil_value(value)?,
                }
            }
            WRITE_SINGLE_REGISTER => {
                let [addr, value] = fixed_words(f, pdu)?;
                Response::WriteSingleRegister { addr, value }
            }
            WRITE_MULTIPLE_COILS | WRITE_MULTIPLE_REGISTERS => {
                let [addr, count] = fixed_words(f, pdu)?;
                let max = if f == WRITE_MULTIPLE_COILS {
                    MAX_WRITE_COILS
                } else {
                    MAX_WRITE_REGISTERS
                };
                check_qty(f, usize::from(count), max)?;
                if f == WRITE_MULTIPLE_COILS {
                    Response::WriteMultipleCoils { addr, count }
                } else {
                    Response::WriteMultipleRegisters { addr, count }
                }
            }
            other => return Err(PduError::UnsupportedFunction(other)),
        };
        Ok(rsp)
    }
}

fn is_supported(f: u8) -> bool {
    matches!(
        f,
        READ_COILS
            | READ_DISCRETE_INPUTS
            | READ_HOLDING_REGISTERS
            | READ_INPUT_REGISTERS
            | WRITE_SINGLE_COIL
            | WRITE_SINGLE_REGISTER
            | WRITE_MULTIPLE_COILS
            | WRITE_MULTIPLE_REGISTERS
    )
}

fn check_qty(function: u8, count: usize, max: u16) -> Result<u16, PduError> {
    match u16::try_from(count) {
        Ok(c) if (1..=max).contains(&c) => Ok(c),
        _ => Err(PduError::QuantityOutOfRange {
            function,
            count,
            max,
        }),
    }
}

fn coil_value(value: u16) -> Result<bool, PduError> {
    match value {
        COIL_ON => Ok(true),
        COIL_OFF => Ok(false),
        other => Err(PduError::CoilValue(other)),
    }
}

fn length(function: u8, expected: usize, actual: usize) -> PduError {
    PduError::Length {
        function,
        expected,
        actual,
    }
}

/// `f addr(2) x(2)`: exactly five bytes.
fn fixed_words(function: u8, pdu: &[u8]) -> Result<[u16; 2], PduError> {
    match pdu {
        [_, a, b, c, d] => Ok([u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d])]),
        _ => Err(length(function, 5, pdu.len())),
    }
}

/// A byte count that the quantity checks above keep at or below 250.
fn len_u8(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

fn put_u16s(out: &mut Vec<u8>, words: &[u16]) {
    for w in words {
        out.extend_from_slice(&w.to_be_bytes());
    }
}

fn words(data: &[u8]) -> Vec<u16> {
    data.chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

/// §6.1: the first bit goes into bit 0 of the first byte; unused high bits are 0.
pub fn pack_bits(bits: &[bool]) -> Vec<u8> {
    bits.chunks(8)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |acc, (i, &b)| acc | (u8::from(b) << i))
        })
        .collect()
}

/// The inverse of [`pack_bits`]: eight bits per byte, LSB first.
pub fn unpack_bits(bytes: &[u8]) -> Vec<bool> {
    bytes
        .iter()
        .flat_map(|&b| (0..8).map(move |i| b & (1 << i) != 0))
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn bits(s: &str) -> Vec<bool> {
        s.chars().map(|c| c == '1').collect()
    }

    #[test]
    fn requests_encode_to_the_spec_examples() {
        let cases: [(Request, &[u8]); 8] = [
            // FC01 read 19 coils from 0x0013 (V1.1b3 §6.1 example)
            (
                Request::ReadCoils {
                    addr: 0x13,
                    count: 19,
                },
                &[0x01, 0x00, 0x13, 0x00, 0x13],
            ),
            // FC02 read 22 inputs from 0x00C4 (§6.2)
            (
                Request::ReadDiscreteInputs {
                    addr: 0xC4,
                    count: 22,
                },
                &[0x02, 0x00, 0xC4, 0x00, 0x16],
            ),
            // FC03 read 3 registers from 0x006B (§6.3)
            (
                Request::ReadHoldingRegisters {
                    addr: 0x6B,
                    count: 3,
                },
                &[0x03, 0x00, 0x6B, 0x00, 0x03],
            ),
            // FC04 read input register 8 (§6.4)
            (
                Request::ReadInputRegisters { addr: 8, count: 1 },
                &[0x04, 0x00, 0x08, 0x00, 0x01],
            ),
            // FC05 coil 0x00AC ON = 0xFF00 (§6.5)
            (
                Request::WriteSingleCoil {
                    addr: 0xAC,
                    on: true,
                },
                &[0x05, 0x00, 0xAC, 0xFF, 0x00],
            ),
            // FC06 register 1 = 3 (§6.6)
            (
                Request::WriteSingleRegister { addr: 1, value: 3 },
                &[0x06, 0x00, 0x01, 0x00, 0x03],
            ),
            // FC0F 10 coils from 0x13: 1011 0011 / 10 -> CD 01 (§6.11)
            (
                Request::WriteMultipleCoils {
                    addr: 0x13,
                    coils: bits("1011001110"),
                },
                &[0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01],
            ),
            // FC10 registers 1..2 = 0x000A, 0x0102 (§6.12)
            (
                Request::WriteMultipleRegisters {
                    addr: 1,
                    values: vec![0x000A, 0x0102],
                },
                &[0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02],
            ),
        ];
        for (req, bytes) in cases {
            assert_eq!(req.encode().unwrap(), bytes, "{req:?}");
            assert_eq!(Request::decode(bytes).unwrap(), req);
        }
    }

    #[test]
    fn responses_decode_from_the_spec_examples() {
        let cases: [(&[u8], Response); 10] = [
            // FC01 3 bytes: CD 6B 05 = coils 0x13..0x25 (§6.1), padded to 24 bits
            (
                &[0x01, 0x03, 0xCD, 0x6B, 0x05],
                Response::ReadCoils(bits("101100111101011010100000")),
            ),
            // FC02 3 bytes: AC DB 35 (§6.2)
            (
                &[0x02, 0x03, 0xAC, 0xDB, 0x35],
                Response::ReadDiscreteInputs(bits("001101011101101110101100")),
            ),
            // FC03 6 bytes: 0xAE41 0x5652 0x4340 (§6.3, slave 17 example)
            (
                &[0x03, 0x06, 0xAE, 0x41, 0x56, 0x52, 0x43, 0x40],
                Response::ReadHoldingRegisters(vec![0xAE41, 0x5652, 0x4340]),
            ),
            // FC04 2 bytes: 0x000A (§6.4)
            (
                &[0x04, 0x02, 0x00, 0x0A],
                Response::ReadInputRegisters(vec![10]),
            ),
            // FC05 echo: coil 0xAC ON
            (
                &[0x05, 0x00, 0xAC, 0xFF, 0x00],
                Response::WriteSingleCoil {
                    addr: 0xAC,
                    on: true,
                },
            ),
            // FC06 echo: register 1 = 3
            (
                &[0x06, 0x00, 0x01, 0x00, 0x03],
                Response::WriteSingleRegister { addr: 1, value: 3 },
            ),
            // FC0F: 10 coils written from 0x13
            (
                &[0x0F, 0x00, 0x13, 0x00, 0x0A],
                Response::WriteMultipleCoils {
                    addr: 0x13,
                    count: 10,
                },
            ),
            // FC10: 2 registers written from 1
            (
                &[0x10, 0x00, 0x01, 0x00, 0x02],
                Response::WriteMultipleRegisters { addr: 1, count: 2 },
            ),
            // 0x83 02: FC03 ILLEGAL DATA ADDRESS (§7)
            (
                &[0x83, 0x02],
                Response::Exception(ExceptionResponse {
                    function: 3,
                    code: ExceptionCode::IllegalDataAddress,
                }),
            ),
            // 0x90 02: FC10 ILLEGAL DATA ADDRESS
            (
                &[0x90, 0x02],
                Response::Exception(ExceptionResponse {
                    function: 0x10,
                    code: ExceptionCode::IllegalDataAddress,
                }),
            ),
        ];
        for (bytes, rsp) in cases {
            assert_eq!(Response::decode(bytes).unwrap(), rsp, "{bytes:02X?}");
            assert_eq!(rsp.encode().unwrap(), bytes);
        }
    }

    #[test]
    fn quantities_outside_the_spec_limits_are_refused() {
        let too_many = |r: Request| matches!(r.encode(), Err(PduError::QuantityOutOfRange { .. }));
        assert!(too_many(Request::ReadCoils { addr: 0, count: 0 }));
        assert!(too_many(Request::ReadCoils {
            addr: 0,
            count: 2001
        }));
        assert!(
            Request::ReadCoils {
                addr: 0,
                count: 2000
            }
            .encode()
            .is_ok()
        );
        assert!(too_many(Request::ReadDiscreteInputs {
            addr: 0,
            count: 2001
        }));
        assert!(too_many(Request::ReadHoldingRegisters {
            addr: 0,
            count: 126
        }));
        assert!(
            Request::ReadHoldingRegisters {
                addr: 0,
                count: 125
            }
            .encode()
            .is_ok()
        );
        assert!(too_many(Request::ReadInputRegisters { addr: 0, count: 0 }));
        assert!(too_many(Request::WriteMultipleCoils {
            addr: 0,
            coils: vec![true; 1969]
        }));
        assert!(
            Request::WriteMultipleCoils {
                addr: 0,
                coils: vec![true; 1968]
            }
            .encode()
            .is_ok()
        );
        assert!(too_many(Request::WriteMultipleRegisters {
            addr: 0,
            values: vec![1; 124]
        }));
        assert!(too_many(Request::WriteMultipleRegisters {
            addr: 0,
            values: vec![]
        }));
        assert!(
            Request::WriteMultipleRegisters {
                addr: 0,
                values: vec![1; 123]
            }
            .encode()
            .is_ok()
        );
        // On the way in too: FC03 asking for 0x7E registers.
        assert!(matches!(
            Request::decode(&[0x03, 0x00, 0x00, 0x00, 0x7E]),
            Err(PduError::QuantityOutOfRange {
                function: 3,
                count: 126,
                max: 125
            })
        ));
    }

    #[test]
    fn malformed_pdus_are_typed_errors() {
        // nothing at all
        assert_eq!(Response::decode(&[]), Err(PduError::Empty));
        // FC2B (encapsulated interface) is not implemented
        assert_eq!(
            Response::decode(&[0x2B, 0x0E]),
            Err(PduError::UnsupportedFunction(0x2B))
        );
        // FC03, byte count 4 but only 2 data bytes
        assert!(matches!(
            Response::decode(&[0x03, 0x04, 0x00, 0x01]),
            Err(PduError::Length { .. })
        ));
        // FC03, odd byte count 3
        assert!(matches!(
            Response::decode(&[0x03, 0x03, 0, 1, 2]),
            Err(PduError::ByteCount { .. })
        ));
        // FC05 value 0x1234 (§6.5 allows only FF00/0000)
        assert_eq!(
            Response::decode(&[0x05, 0x00, 0x01, 0x12, 0x34]),
            Err(PduError::CoilValue(0x1234))
        );
        // FC0F request: 10 coils need 2 bytes, byte count says 3
        assert!(matches!(
            Request::decode(&[0x0F, 0x00, 0x13, 0x00, 0x0A, 0x03, 0xCD, 0x01, 0x00]),
            Err(PduError::ByteCount {
                byte_count: 3,
                count: 10,
                ..
            })
        ));
        // exception reply without its code
        assert!(matches!(
            Response::decode(&[0x83]),
            Err(PduError::Length { .. })
        ));
        // FC06 with a trailing byte
        assert!(matches!(
            Response::decode(&[0x06, 0, 1, 0, 3, 9]),
            Err(PduError::Length { .. })
        ));
    }

    #[test]
    fn unknown_exception_codes_are_kept() {
        // 0x81 0x0C: a code the V1.1b3 table does not define
        let Ok(Response::Exception(e)) = Response::decode(&[0x81, 0x0C]) else {
            panic!("an exception reply");
        };
        assert_eq!((e.function, u8::from(e.code)), (1, 0x0C));
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            (any::<u16>(), 1..=MAX_READ_BITS)
                .prop_map(|(addr, count)| Request::ReadCoils { addr, count }),
            (any::<u16>(), 1..=MAX_READ_BITS)
                .prop_map(|(addr, count)| Request::ReadDiscreteInputs { addr, count }),
            (any::<u16>(), 1..=MAX_READ_REGISTERS)
                .prop_map(|(addr, count)| Request::ReadHoldingRegisters { addr, count }),
            (any::<u16>(), 1..=MAX_READ_REGISTERS)
                .prop_map(|(addr, count)| Request::ReadInputRegisters { addr, count }),
            (any::<u16>(), any::<bool>())
                .prop_map(|(addr, on)| Request::WriteSingleCoil { addr, on }),
            (any::<u16>(), any::<u16>())
                .prop_map(|(addr, value)| Request::WriteSingleRegister { addr, value }),
            (
                any::<u16>(),
                prop::collection::vec(any::<bool>(), 1..=usize::from(MAX_WRITE_COILS))
            )
                .prop_map(|(addr, coils)| Request::WriteMultipleCoils { addr, coils }),
            (
                any::<u16>(),
                prop::collection::vec(any::<u16>(), 1..=usize::from(MAX_WRITE_REGISTERS))
            )
                .prop_map(|(addr, values)| Request::WriteMultipleRegisters { addr, values }),
        ]
    }

    proptest! {
        #[test]
        fn every_valid_request_round_trips(req in request()) {
            let pdu = req.encode().unwrap();
            prop_assert!(pdu.len() <= MAX_PDU_LEN);
            prop_assert_eq!(Request::decode(&pdu).unwrap(), req);
        }

        #[test]
        fn register_responses_round_trip(w in prop::collection::vec(any::<u16>(), 1..=usize::from(MAX_READ_REGISTERS))) {
            let rsp = Response::ReadInputRegisters(w);
            prop_assert_eq!(Response::decode(&rsp.encode().unwrap()).unwrap(), rsp);
        }

        #[test]
        fn bit_responses_round_trip_up_to_padding(b in prop::collection::vec(any::<bool>(), 1..=usize::from(MAX_READ_BITS))) {
            let Response::ReadCoils(back) = Response::decode(&Response::ReadCoils(b.clone()).encode().unwrap()).unwrap() else {
                panic!("FC01");
            };
            prop_assert_eq!(back.len(), b.len().div_ceil(8) * 8);
            prop_assert_eq!(&back[..b.len()], &b[..]);
            prop_assert!(back[b.len()..].iter().all(|x| !x));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = Request::decode(&bytes);
            let _ = Response::decode(&bytes);
        }
    }
}
