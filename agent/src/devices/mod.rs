//! Talking to field devices: the [`DeviceClient`] trait and its Modbus
//! implementation over TCP and RTU ([`modbus::ModbusClient`]), plus Modbus
//! ASCII ([`ascii::AsciiClient`]); [`BusClient`] picks one per bus. The Ouman
//! EH-203 native protocol ([`ouman`]) and the POP room-heating boards
//! ([`pop`]) are not Modbus and have their own clients and drivers.
//!
//! Results are nested like tokio-modbus's own: the outer `Result` is the
//! transport (I/O, timeout, bad frame: retry with back-off, mark the device
//! offline), the inner one a Modbus exception from a device that *did* answer
//! (a configuration error: report it, do not treat it as a link fault). See
//! STYLE.md §3. A request that breaks the spec's limits is refused before
//! anything is sent ([`TransportError::InvalidRequest`], never worth a retry).
//!
//! Writes (FC05, FC06, FC15, FC16) to unit 0 on a serial bus are broadcasts
//! (Modbus over Serial Line V1.02 §2.1): every slave executes them and none
//! replies, so the client sends the frame, awaits nothing, and keeps the line
//! quiet for [`TURNAROUND_DELAY`] before its next request. Modbus TCP has no
//! broadcast: there unit 0 is an ordinary unit behind a gateway.

pub mod ascii;
pub mod bus;
pub mod modbus;
pub mod ouman;
pub mod pop;
pub mod reconnect;
pub mod slave;
pub mod timer;

use std::{fmt, future::Future, time::Duration};

use crate::registers::{Function, PlannedRead, WriteRequest};

/// Serial Line V1.02 §2.4.1: after a broadcast the master waits a
/// "turnaround delay" so slow slaves can finish the write before the next
/// request (the spec's typical range is 100–200 ms; we take the top).
pub const TURNAROUND_DELAY: Duration = Duration::from_millis(200);

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
    /// The request breaks the spec's limits (quantity, byte count, address
    /// range, a read to broadcast unit 0) and was not sent.
    #[error("request not sent: {0}")]
    InvalidRequest(String),
}

impl TransportError {
    /// Whether trying the same request again could succeed: true for link
    /// failures, false for a request refused before sending.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, TransportError::InvalidRequest(_))
    }
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

/// Reads from and writes to devices on one bus. Implementations handle
/// connecting, timeouts and reconnects themselves; callers only see
/// [`ModbusResult`]s.
///
/// Every write checks the spec's limits first (V1.1b3 §6.11: 1..=1968 coils,
/// §6.12: 1..=123 registers, no item past address 65535) and returns
/// [`TransportError::InvalidRequest`] without sending when they are broken. A
/// reply that does not echo the request is a [`TransportError::Io`]. On a
/// serial bus unit 0 broadcasts (see the module doc).
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
    /// FC05: one coil on or off.
    fn write_single_coil(
        &mut self,
        unit: u8,
        addr: u16,
        on: bool,
    ) -> impl Future<Output = ModbusResult<()>> + Send;
    /// FC06: one holding register.
    fn write_single_register(
        &mut self,
        unit: u8,
        addr: u16,
        value: u16,
    ) -> impl Future<Output = ModbusResult<()>> + Send;
    /// FC15 (0x0F): consecutive coils from `addr`.
    fn write_multiple_coils(
        &mut self,
        unit: u8,
        addr: u16,
        coils: &[bool],
    ) -> impl Future<Output = ModbusResult<()>> + Send;
    /// FC16 (0x10): consecutive holding registers from `addr`.
    fn write_multiple_registers(
        &mut self,
        unit: u8,
        addr: u16,
        values: &[u16],
    ) -> impl Future<Output = ModbusResult<()>> + Send;
}

/// Send one write request with the matching function code.
pub async fn execute_write<C: DeviceClient>(
    client: &mut C,
    unit: u8,
    req: &WriteRequest,
) -> ModbusResult<()> {
    match req {
        WriteRequest::SingleCoil { addr, on } => client.write_single_coil(unit, *addr, *on).await,
        WriteRequest::SingleRegister { addr, value } => {
            client.write_single_register(unit, *addr, *value).await
        }
        WriteRequest::MultipleCoils { addr, coils } => {
            client.write_multiple_coils(unit, *addr, coils).await
        }
        WriteRequest::MultipleRegisters { addr, values } => {
            client.write_multiple_registers(unit, *addr, values).await
        }
    }
}

/// [`WriteRequest::check_parts`] as a transport error: what every client
/// calls before it sends a write.
pub fn check_write(function: u8, addr: u16, count: usize) -> Result<(), TransportError> {
    WriteRequest::check_parts(function, addr, count)
        .map_err(|e| TransportError::InvalidRequest(e.to_string()))
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
