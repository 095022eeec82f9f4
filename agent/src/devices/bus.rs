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
            // An ouman bus gets an `OumanClient` and a pop bus a `PopClient`
            // (lib.rs), and a slave bus is served, not polled: a Modbus
            // client on them only reports connect errors.
            Transport::Rtu(_)
            | Transport::Tcp { .. }
            | Transport::Ouman(_)
            | Transport::ModbusSlave(_)
            | Transport::Pop(_) => BusClient::Modbus(ModbusClient::new(bus)),
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

    async fn write_single_coil(&mut self, unit: u8, addr: u16, on: bool) -> ModbusResult<()> {
        match self {
            BusClient::Modbus(c) => c.write_single_coil(unit, addr, on).await,
            BusClient::Ascii(c) => c.write_single_coil(unit, addr, on).await,
        }
    }

    async fn write_single_register(&mut self, unit: u8, addr: u16, value: u16) -> ModbusResult<()> {
        match self {
            BusClient::Modbus(c) => c.write_single_register(unit, addr, value).await,
            BusClient::Ascii(c) => c.write_single_register(unit, addr, value).await,
        }
    }

    async fn write_multiple_coils(
        &mut self,
        unit: u8,
        addr: u16,
        coils: &[bool],
    ) -> ModbusResult<()> {
        match self {
            BusClient::Modbus(c) => c.write_multiple_coils(unit, addr, coils).await,
            BusClient::Ascii(c) => c.write_multiple_coils(unit, addr, coils).await,
        }
    }

    async fn write_multiple_registers(
        &mut self,
        unit: u8,
        addr: u16,
        values: &[u16],
    ) -> ModbusResult<()> {
        match self {
            BusClient::Modbus(c) => c.write_multiple_registers(unit, addr, values).await,
            BusClient::Ascii(c) => c.write_multiple_registers(unit, addr, values).await,
        }
    }
}
