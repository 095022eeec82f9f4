//! Talking to field devices: the [`DeviceClient`] trait and its Modbus
//! implementation over TCP and RTU ([`modbus::ModbusClient`]), plus Modbus
//! ASCII ([`ascii::AsciiClient`]); [`BusClient`] picks one per bus. POP
//! room-heating boards speak their own protocol ([`pop`]).
//!
//! Results are nested like tokio-modbus's own: the outer `Result` is the
//! transport (I/O, timeout, bad frame: retry with back-off, mark the device
//! offline), the inner one a Modbus exception from a device that *did* answer
//! (a configuration error: report it, do not treat it as a link fault). See
//! STYLE.md §3.

pub mod ascii;
pub mod bus;
pub mod modbus;
pub mod pop;

use std::{fmt, future::Future, time::Duration};

use crate::registers::{Function, PlannedRead};

pub use ascii::AsciiClient;
pub use bus::BusClient;
pub use modbus::ModbusClient;

/// A Modbus exception reply (Modbus Application Protocol V1.1b3 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exception(pub tokio_modbus::ExceptionCode);

impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = u8::from(self.0);
        write!(f, "Modbus exception 0x{code:02X} ({:?})", self.0)
    }
}

/// The link to the device failed; the request may not have reached it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Opening the port or connection failed.
    #[error("cannot connect to {target}: {reason}")]
    Connect {
        /// Serial path or TCP address.
        target: String,
        /// Why.
        reason: String,
    },
    /// A previous connect failed and the bus is waiting before trying again.
    #[error("bus {target} is reconnecting (next attempt in {retry_in:?})")]
    Reconnecting {
        /// Serial path or TCP address.
        target: String,
        /// Time left before the next connect attempt.
        retry_in: Duration,
    },
    /// No reply within the bus timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// I/O or framing error on an open link.
    #[error("transport error: {0}")]
    Io(String),
}

/// Outer: transport; inner: Modbus exception.
pub type ModbusResult<T> = Result<Result<T, Exception>, TransportError>;

/// Raw data of one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawData {
    /// FC03/FC04 registers.
    Words(Vec<u16>),
    /// FC01/FC02 bits.
    Bits(Vec<bool>),
}

/// Reads from devices on one bus. Implementations handle connecting,
/// timeouts and reconnects themselves; callers only see [`ModbusResult`]s.
pub trait DeviceClient: Send {
    /// FC03.
    fn read_holding_registers(
        &mut self,
        unit: u8,
        addr: u16,
        count: u16,
    ) -> impl Future<Output = ModbusResult<Vec<u16>>> + Send;
    /// FC04.
    fn read_input_registers(
        &mut self,
        unit: u8,
        addr: u16,
        count: u16,
    ) -> impl Future<Output = ModbusResult<Vec<u16>>> + Send;
    /// FC01.
    fn read_coils(
        &mut self,
        unit: u8,
        addr: u16,
        count: u16,
    ) -> impl Future<Output = ModbusResult<Vec<bool>>> + Send;
    /// FC02.
    fn read_discrete_inputs(
        &mut self,
        unit: u8,
        addr: u16,
        count: u16,
    ) -> impl Future<Output = ModbusResult<Vec<bool>>> + Send;
}

/// Execute one planned read with the matching function code.
pub async fn execute<C: DeviceClient>(
    client: &mut C,
    unit: u8,
    read: &PlannedRead,
) -> ModbusResult<RawData> {
    let (a, n) = (read.address, read.count);
    Ok(match read.function {
        Function::Holding => client
            .read_holding_registers(unit, a, n)
            .await?
            .map(RawData::Words),
        Function::Input => client
            .read_input_registers(unit, a, n)
            .await?
            .map(RawData::Words),
        Function::Coil => client.read_coils(unit, a, n).await?.map(RawData::Bits),
        Function::Discrete => client
            .read_discrete_inputs(unit, a, n)
            .await?
            .map(RawData::Bits),
    })
}
