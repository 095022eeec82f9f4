//! [`BusClient`]: the client for a bus, picked by its transport, so the
//! poller needs one type whatever the bus speaks.

use super::{AsciiClient, DeviceClient, ModbusClient, ModbusResult};
use crate::config::{BusConfig, Transport};

/// tokio-modbus for TCP and RTU, our own [`AsciiClient`] for ASCII.
#[derive(Debug)]
pub enum BusClient {
    /// Modbus TCP or RTU.
    Modbus(ModbusClient),
    /// Modbus ASCII on a serial port.
    Ascii(AsciiClient),
}

impl BusClient {
    /// The client for `bus`; nothing is opened until the first request.
    pub fn new(bus: &BusConfig) -> Self {
        match bus.transport {
            Transport::Ascii(_) => BusClient::Ascii(AsciiClient::new(bus)),
            // A pop bus is driven by `pop::PopDriver`; a Modbus client on it
            // reports a connect error on every request.
            Transport::Rtu(_) | Transport::Tcp { .. } | Transport::Pop(_) => {
                BusClient::Modbus(ModbusClient::new(bus))
            }
        }
    }
}

impl DeviceClient for BusClient {
    async fn read_holding_registers(
        &mut self,
        unit: u8,
        addr: u16,
        count: u16,
    ) -> ModbusResult<Vec<u16>> {
        match self {
            BusClient::Modbus(c) => c.read_holding_registers(unit, addr, count).await,
            BusClient::Ascii(c) => c.read_holding_registers(unit, addr, count).await,
        }
    }

    async fn read_input_registers(
        &mut self,
        unit: u8,
        addr: u16,
        count: u16,
    ) -> ModbusResult<Vec<u16>> {
        match self {
            BusClient::Modbus(c) => c.read_input_registers(unit, addr, count).await,
            BusClient::Ascii(c) => c.read_input_registers(unit, addr, count).await,
        }
    }

    async fn read_coils(&mut self, unit: u8, addr: u16, count: u16) -> ModbusResult<Vec<bool>> {
        match self {
            BusClient::Modbus(c) => c.read_coils(unit, addr, count).await,
            BusClient::Ascii(c) => c.read_coils(unit, addr, count).await,
        }
    }

    async fn read_discrete_inputs(
        &mut self,
        unit: u8,
        addr: u16,
        count: u16,
    ) -> ModbusResult<Vec<bool>> {
        match self {
            BusClient::Modbus(c) => c.read_discrete_inputs(unit, addr, count).await,
            BusClient::Ascii(c) => c.read_discrete_inputs(unit, addr, count).await,
        }
    }
}
