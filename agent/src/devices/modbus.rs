//! [`DeviceClient`] over tokio-modbus: Modbus TCP, and Modbus RTU on a serial
//! port through tokio-serial.
//!
//! tokio-modbus has no timeouts of its own (issues #12, #113), so every connect
//! and every request is wrapped in `tokio::time::timeout`. After a transport
//! error or a timeout the context (and with it the socket or serial port) is
//! dropped: a half-read RTU reply or a stale TCP stream must not be parsed as
//! the answer to the next request. The next request reconnects; a *failed*
//! connect waits with jittered back-off, so an unplugged USB adapter is retried
//! every few seconds rather than in a tight loop.

use std::time::Duration;

use tokio::time::{Instant, timeout};
use tokio_modbus::{Request, Response, Slave, client::Context, prelude::*};
use tracing::{info, warn};

use super::{DeviceClient, Exception, ModbusResult, TransportError};
use crate::{
    backoff::Backoff,
    config::{BusConfig, DataBits, Parity, SerialSettings, StopBits, Transport},
};

/// Shortest time allowed for opening a connection, whatever the request timeout.
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A Modbus master for one bus: one connection, one request at a time.
#[derive(Debug)]
pub struct ModbusClient {
    bus: String,
    transport: Transport,
    timeout: Duration,
    ctx: Option<ContextBox>,
    reconnect: Backoff,
    next_connect_at: Option<Instant>,
}

/// `Context` is not `Debug`; this wrapper keeps `ModbusClient` debuggable.
struct ContextBox(Context);

impl std::fmt::Debug for ContextBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Context")
    }
}

impl ModbusClient {
    /// A client for `bus`; nothing is opened until the first request.
    pub fn new(bus: &BusConfig) -> Self {
        ModbusClient {
            bus: bus.name.clone(),
            transport: bus.transport.clone(),
            timeout: bus.timeout,
            ctx: None,
            reconnect: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
            next_connect_at: None,
        }
    }

    fn target(&self) -> String {
        match &self.transport {
            Transport::Tcp { address } => address.clone(),
            Transport::Rtu(s) | Transport::Ascii(s) | Transport::Pop(s) => s.path.clone(),
        }
    }
}

/// Open the transport. A free function over an owned `Transport` so the future
/// does not borrow the client (whose `Context` is `Send` but not `Sync`).
async fn connect(transport: Transport) -> Result<Context, String> {
    {
        match &transport {
            Transport::Tcp { address } => {
                let addr = tokio::net::lookup_host(address.as_str())
                    .await
                    .map_err(|e| e.to_string())?
                    .next()
                    .ok_or_else(|| format!("{address} resolves to no address"))?;
                tokio_modbus::client::tcp::connect(addr)
                    .await
                    .map_err(|e| e.to_string())
            }
            // tokio-modbus has no ASCII; `BusClient` gives those buses an `AsciiClient`.
            Transport::Ascii(_) => Err("an ascii bus needs the ASCII client".into()),
            Transport::Pop(_) => Err("a pop bus needs the POP client".into()),
            Transport::Rtu(settings) => {
                let port = tokio_serial::SerialStream::open(&port_builder(settings))
                    .map_err(|e| e.to_string())?;
                Ok(tokio_modbus::client::rtu::attach(port))
            }
        }
    }
}

impl ModbusClient {
    async fn ensure_connected(&mut self) -> Result<&mut Context, TransportError> {
        if self.ctx.is_none() {
            let target = self.target();
            if let Some(at) = self.next_connect_at {
                let now = Instant::now();
                if now < at {
                    return Err(TransportError::Reconnecting {
                        target,
                        retry_in: at - now,
                    });
                }
            }
            let result = timeout(
                self.timeout.max(MIN_CONNECT_TIMEOUT),
                connect(self.transport.clone()),
            )
            .await;
            match result {
                Ok(Ok(ctx)) => {
                    info!(bus = %self.bus, %target, "field bus connected");
                    self.ctx = Some(ContextBox(ctx));
                    self.reconnect.reset();
                    self.next_connect_at = None;
                }
                Ok(Err(reason)) => return Err(self.connect_failed(target, reason)),
                Err(_) => return Err(self.connect_failed(target, "timed out".into())),
            }
        }
        match self.ctx.as_mut() {
            Some(ContextBox(ctx)) => Ok(ctx),
            None => Err(TransportError::Io("not connected".into())),
        }
    }

    fn connect_failed(&mut self, target: String, reason: String) -> TransportError {
        let delay = self.reconnect.next_delay();
        // Log each back-off step once, not every poll that hits the closed bus.
        warn!(bus = %self.bus, %target, %reason, retry_in = ?delay, "field bus connect failed");
        self.next_connect_at = Some(Instant::now() + delay);
        TransportError::Connect { target, reason }
    }

    async fn request(&mut self, unit: u8, req: Request<'static>) -> ModbusResult<Response> {
        let limit = self.timeout;
        let ctx = self.ensure_connected().await?;
        ctx.set_slave(Slave(unit));
        let outcome = timeout(limit, ctx.call(req)).await;
        match outcome {
            Ok(Ok(Ok(rsp))) => Ok(Ok(rsp)),
            Ok(Ok(Err(code))) => Ok(Err(Exception(code))),
            Ok(Err(e)) => {
                self.ctx = None;
                Err(TransportError::Io(e.to_string()))
            }
            Err(_) => {
                self.ctx = None;
                Err(TransportError::Timeout(limit))
            }
        }
    }
}

fn mismatch(rsp: &Response) -> TransportError {
    TransportError::Io(format!("unexpected response {:?}", rsp.function_code()))
}

impl DeviceClient for ModbusClient {
    async fn read_holding_registers(
        &mut self,
        unit: u8,
        addr: u16,
        count: u16,
    ) -> ModbusResult<Vec<u16>> {
        match self
            .request(unit, Request::ReadHoldingRegisters(addr, count))
            .await?
        {
            Ok(Response::ReadHoldingRegisters(w)) => Ok(Ok(w)),
            Ok(other) => Err(mismatch(&other)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn read_input_registers(
        &mut self,
        unit: u8,
        addr: u16,
        count: u16,
    ) -> ModbusResult<Vec<u16>> {
        match self
            .request(unit, Request::ReadInputRegisters(addr, count))
            .await?
        {
            Ok(Response::ReadInputRegisters(w)) => Ok(Ok(w)),
            Ok(other) => Err(mismatch(&other)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn read_coils(&mut self, unit: u8, addr: u16, count: u16) -> ModbusResult<Vec<bool>> {
        match self.request(unit, Request::ReadCoils(addr, count)).await? {
            // The reply is padded to whole bytes; keep only what was asked for.
            Ok(Response::ReadCoils(mut b)) => {
                b.truncate(usize::from(count));
                Ok(Ok(b))
            }
            Ok(other) => Err(mismatch(&other)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn read_discrete_inputs(
        &mut self,
        unit: u8,
        addr: u16,
        count: u16,
    ) -> ModbusResult<Vec<bool>> {
        match self
            .request(unit, Request::ReadDiscreteInputs(addr, count))
            .await?
        {
            Ok(Response::ReadDiscreteInputs(mut b)) => {
                b.truncate(usize::from(count));
                Ok(Ok(b))
            }
            Ok(other) => Err(mismatch(&other)),
            Err(e) => Ok(Err(e)),
        }
    }
}

/// The tokio-serial builder for an RTU bus's line settings.
pub fn port_builder(s: &SerialSettings) -> tokio_serial::SerialPortBuilder {
    tokio_serial::new(s.path.as_str(), s.baud)
        .parity(serial_parity(s.parity))
        .data_bits(serial_data_bits(s.data_bits))
        .stop_bits(serial_stop_bits(s.stop_bits))
        .flow_control(tokio_serial::FlowControl::None)
}

/// Our parity setting in tokio-serial's terms.
pub fn serial_parity(p: Parity) -> tokio_serial::Parity {
    match p {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    }
}

/// Our data-bits setting in tokio-serial's terms.
pub fn serial_data_bits(d: DataBits) -> tokio_serial::DataBits {
    match d {
        DataBits::Seven => tokio_serial::DataBits::Seven,
        DataBits::Eight => tokio_serial::DataBits::Eight,
    }
}

/// Our stop-bits setting in tokio-serial's terms.
pub fn serial_stop_bits(s: StopBits) -> tokio_serial::StopBits {
    match s {
        StopBits::One => tokio_serial::StopBits::One,
        StopBits::Two => tokio_serial::StopBits::Two,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parity_maps_to_the_same_serial_parity() {
        assert_eq!(serial_parity(Parity::None), tokio_serial::Parity::None);
        assert_eq!(serial_parity(Parity::Even), tokio_serial::Parity::Even);
        assert_eq!(serial_parity(Parity::Odd), tokio_serial::Parity::Odd);
        assert_eq!(
            serial_data_bits(DataBits::Seven),
            tokio_serial::DataBits::Seven
        );
        assert_eq!(serial_stop_bits(StopBits::Two), tokio_serial::StopBits::Two);
    }

    #[test]
    fn the_port_builder_carries_every_line_setting() {
        // A pty ignores parity (the kernel clears PARENB on it; pymodbus even
        // fails there), so the settings are checked on the builder itself.
        for (parity, data_bits, stop_bits) in [
            (Parity::Even, DataBits::Eight, StopBits::One),
            (Parity::Odd, DataBits::Seven, StopBits::Two),
            (Parity::None, DataBits::Eight, StopBits::Two),
        ] {
            let s = SerialSettings {
                path: "/dev/ttyUSB0".into(),
                baud: 19200,
                parity,
                data_bits,
                stop_bits,
            };
            let expected = tokio_serial::new("/dev/ttyUSB0", 19200)
                .parity(serial_parity(parity))
                .data_bits(serial_data_bits(data_bits))
                .stop_bits(serial_stop_bits(stop_bits))
                .flow_control(tokio_serial::FlowControl::None);
            assert_eq!(port_builder(&s), expected);
            let other = tokio_serial::new("/dev/ttyUSB0", 19200)
                .parity(tokio_serial::Parity::Even)
                .stop_bits(tokio_serial::StopBits::One);
            assert_eq!(
                port_builder(&s) == other,
                parity == Parity::Even
                    && stop_bits == StopBits::One
                    && data_bits == DataBits::Eight
            );
        }
    }

    fn missing_port_bus() -> BusConfig {
        BusConfig {
            name: "rs485".into(),
            transport: Transport::Rtu(SerialSettings {
                path: "/nonexistent/ttyUSB9".into(),
                baud: 9600,
                parity: Parity::Even,
                data_bits: DataBits::Eight,
                stop_bits: StopBits::One,
            }),
            timeout: Duration::from_millis(100),
            max_gap: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reconnect_attempts_back_off_from_half_a_second_to_thirty() {
        let mut c = ModbusClient::new(&missing_port_bus());
        let mut waits = Vec::new();
        for _ in 0..9 {
            assert!(matches!(
                c.read_holding_registers(1, 0, 1).await,
                Err(TransportError::Connect { .. })
            ));
            let Err(TransportError::Reconnecting { retry_in, .. }) =
                c.read_holding_registers(1, 0, 1).await
            else {
                panic!("expected to wait before reconnecting")
            };
            waits.push(retry_in);
            tokio::time::advance(retry_in).await;
        }
        let ceilings = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
        for (w, c) in waits.iter().zip(ceilings) {
            let c = Duration::from_millis(c);
            assert!(
                *w >= c / 2 && *w <= c,
                "{w:?} not within [{:?}, {c:?}]",
                c / 2
            );
        }
    }

    #[tokio::test]
    async fn a_missing_serial_port_is_a_connect_error_then_waits_before_retrying() {
        let bus = missing_port_bus();
        let mut c = ModbusClient::new(&bus);
        assert!(matches!(
            c.read_holding_registers(1, 0, 1).await,
            Err(TransportError::Connect { .. })
        ));
        assert!(matches!(
            c.read_holding_registers(1, 0, 1).await,
            Err(TransportError::Reconnecting { .. })
        ));
    }
}
