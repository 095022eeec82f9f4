//! Device simulators. [`pop::PopBusSim`] plays a bus of POP room-heating
//! boards with a wall keypad polling them. [`Eh203Sim`] plays an Ouman
//! EH-203 with a MODBUS-200 card: a tokio-modbus server [`Service`](tokio_modbus::server::Service) over
//! an in-memory holding-register bank laid out by the built-in
//! `ouman_eh203_modbus200` profile, driven by the plant [`model`].
//!
//! The bank is filled through [`crate::registers::encode`] from the same
//! profile the agent decodes with, so the two agree by construction, while the
//! decode path under test stays separate code. Fault hooks ([`Eh203Sim::set_silent`],
//! [`Eh203Sim::set_response_delay`]) let tests make the device stop answering
//! and come back.
//!
//! [`OumanSim`] serves the same plant over the EH-203's native serial
//! protocol ([`ouman`]), on a serial port or over TCP.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use agent::sim::{Eh203Sim, SimOptions, Alarm};
//! let sim = Eh203Sim::new(SimOptions::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let server = sim.serve_tcp(listener);
//! sim.set_alarm(Alarm::A, true);
//! println!("EH-203 on {addr}: outdoor {:.1} °C", sim.snapshot().outdoor_temp);
//! # Ok(()) }
//! ```

pub mod bank;
pub mod model;
pub mod ouman;
pub mod plc_master;
pub mod pop;

use std::{
    collections::BTreeMap,
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tracing::{debug, warn};

use self::model::Model;
pub use self::model::{Alarm, ModelOptions, PlantState};
pub use self::ouman::OumanSim;
use crate::registers::{
    DataType, Function, MAX_REGISTERS_PER_READ, Point,
    encode::{Encoded, encode_registers, merge_bit},
    load_builtin,
};

/// First holding register the simulated card answers for.
pub const BANK_START: u16 = 10;
/// Last holding register the simulated card answers for; reads outside
/// `BANK_START..=BANK_END` get exception 02 (illegal data address).
pub const BANK_END: u16 = 59;

/// How to run the simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Modbus unit id it answers to (others are ignored, like on a shared RS-485 line).
    pub unit_id: u8,
    /// How often the plant model advances and the registers change.
    pub tick: Duration,
    /// Plant model tunables (compressor period etc.).
    pub model: ModelOptions,
    /// Start with alarm A raised.
    pub alarm_a: bool,
    /// Start with alarm B raised.
    pub alarm_b: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            unit_id: 1,
            tick: Duration::from_secs(1),
            model: ModelOptions::default(),
            alarm_a: false,
            alarm_b: false,
        }
    }
}

/// A simulated EH-203. Cheap to clone; clones share one device.
#[derive(Debug, Clone)]
pub struct Eh203Sim {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    unit_id: u8,
    tick: Duration,
    points: Vec<Point>,
    model: Mutex<Model>,
    bank: Mutex<BTreeMap<u16, u16>>,
    silent: AtomicBool,
    delay_ms: AtomicU64,
    ticker_started: AtomicBool,
}

impl Eh203Sim {
    /// A device in its starting state; nothing runs until a `serve_*` call
    /// (or [`Eh203Sim::start_ticker`]).
    pub fn new(opts: SimOptions) -> Self {
        // The profile is compiled in and covered by unit tests.
        let profile = load_builtin("ouman_eh203_modbus200")
            .expect("built-in EH-203 profile exists")
            .expect("built-in EH-203 profile is valid");
        let mut model = Model::new(opts.model.clone());
        model.set_alarm(Alarm::A, opts.alarm_a);
        model.set_alarm(Alarm::B, opts.alarm_b);
        let bank = (BANK_START..=BANK_END).map(|a| (a, 0u16)).collect();
        let sim = Eh203Sim {
            inner: Arc::new(Inner {
                unit_id: opts.unit_id,
                tick: opts.tick,
                points: profile.points,
                model: Mutex::new(model),
                bank: Mutex::new(bank),
                silent: AtomicBool::new(false),
                delay_ms: AtomicU64::new(0),
                ticker_started: AtomicBool::new(false),
            }),
        };
        sim.publish();
        sim
    }

    /// Serve Modbus TCP on `listener` (and start the ticker). The task ends
    /// only when the listener fails.
    pub fn serve_tcp(&self, listener: TcpListener) -> JoinHandle<io::Result<()>> {
        self.start_ticker();
        let service = self.service();
        tokio::spawn(async move {
            let server = tokio_modbus::server::tcp::Server::new(listener);
            let new_service = move |_peer| Ok(Some(service.clone()));
            let on_connected = |stream, peer| {
                let new_service = new_service.clone();
                async move {
                    tokio_modbus::server::tcp::accept_tcp_connection(stream, peer, new_service)
                }
            };
            server
                .serve(
                    &on_connected,
                    |err| warn!(error = %err, "simulator connection failed"),
                )
                .await
        })
    }

    /// Serve Modbus RTU on an opened serial port (and start the ticker).
    pub fn serve_rtu(&self, port: tokio_serial::SerialStream) -> JoinHandle<io::Result<()>> {
        self.start_ticker();
        let service = self.service();
        tokio::spawn(async move {
            tokio_modbus::server::rtu::Server::new(port)
                .serve_forever(service)
                .await
        })
    }

    /// Advance the model every `tick` in a background task; idempotent. The
    /// task stops once every clone of the simulator is dropped.
    pub fn start_ticker(&self) {
        if self.inner.ticker_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let tick = self.inner.tick;
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            loop {
                interval.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                Eh203Sim { inner }.step(tick);
            }
        });
    }

    /// Advance the plant by `dt` and update the registers.
    pub fn step(&self, dt: Duration) {
        lock(&self.inner.model).step(dt);
        self.publish();
    }

    /// Raise or clear an alarm lamp.
    pub fn set_alarm(&self, which: Alarm, on: bool) {
        lock(&self.inner.model).set_alarm(which, on);
        self.publish();
    }

    /// The plant's current (unencoded) state.
    pub fn snapshot(&self) -> PlantState {
        lock(&self.inner.model).state().clone()
    }

    /// Fault hook: `true` makes the device ignore every request (as if its
    /// power or cable were gone); `false` makes it answer again.
    pub fn set_silent(&self, silent: bool) {
        self.inner.silent.store(silent, Ordering::SeqCst);
    }

    /// Fault hook: answer every request this much later.
    pub fn set_response_delay(&self, delay: Duration) {
        self.inner.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// The unit id the simulator answers to.
    pub fn unit_id(&self) -> u8 {
        self.inner.unit_id
    }

    /// The tokio-modbus service, for serving over a transport of your own.
    pub fn service(&self) -> SimService {
        SimService { sim: self.clone() }
    }

    /// Read holding registers directly, with the same checks as over the wire.
    pub fn read_holding(&self, addr: u16, count: u16) -> Result<Vec<u16>, ExceptionCode> {
        // Modbus Application Protocol V1.1b3 §6.3: quantity is checked
        // (exception 03) before the address range (exception 02).
        if count == 0 || count > MAX_REGISTERS_PER_READ {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let end = u32::from(addr) + u32::from(count) - 1;
        if addr < BANK_START || end > u32::from(BANK_END) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let bank = lock(&self.inner.bank);
        Ok((addr..=end as u16)
            .map(|a| bank.get(&a).copied().unwrap_or(0))
            .collect())
    }

    /// Put [`DEMO_CONTROLS`]'s registers where a newcomer expects them: the
    /// hot-water setpoint at 48.0 °C, the car heater off.
    pub fn preset_demo_controls(&self) -> Result<(), ExceptionCode> {
        self.set_holding(DEMO_DHW_SETPOINT_REGISTER, 480)?;
        self.set_holding(DEMO_CAR_HEATER_REGISTER, 0)
    }

    /// Set holding register `addr` as if the device's own panel had (tests:
    /// a value before anyone writes through Modbus). Only the bank's
    /// registers exist.
    pub fn set_holding(&self, addr: u16, value: u16) -> Result<(), ExceptionCode> {
        self.write_holding(addr, &[value])
    }

    fn write_holding(&self, addr: u16, words: &[u16]) -> Result<(), ExceptionCode> {
        let end = u32::from(addr) + words.len() as u32;
        if words.is_empty() || addr < BANK_START || end > u32::from(BANK_END) + 1 {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let mut bank = lock(&self.inner.bank);
        for (a, w) in (addr..).zip(words) {
            bank.insert(a, *w);
        }
        Ok(())
    }

    /// Encode the model's state into the register bank.
    fn publish(&self) {
        let state = self.snapshot();
        let mut bank = lock(&self.inner.bank);
        for point in &self.inner.points {
            let Some(value) = value_of(&point.key, &state) else {
                continue;
            };
            let Some(spec) = point.spec.modbus() else {
                continue;
            };
            if spec.function != Function::Holding || spec.data_type == DataType::Bits16 {
                continue;
            }
            match encode_registers(spec, value) {
                Ok(Encoded::Words(words)) => {
                    for (a, w) in (spec.address.0..).zip(words) {
                        bank.insert(a, w);
                    }
                }
                Ok(Encoded::Bit { bit, on }) => {
                    let word = bank.entry(spec.address.0).or_insert(0);
                    *word = merge_bit(*word, bit, on);
                }
                Err(e) => debug!(point = %point.key, error = %e, "simulated value not encodable"),
            }
        }
    }
}

/// The value the simulated controller shows for a profile point.
fn value_of(key: &str, s: &PlantState) -> Option<f64> {
    let b = |v: bool| if v { 1.0 } else { 0.0 };
    Some(match key {
        "outdoor_temp" => s.outdoor_temp,
        "l1_supply_temp" => s.l1_supply_temp,
        "l2_supply_temp" => s.l2_supply_temp,
        "l1_room_temp" => s.l1_room_temp,
        "l1_return_temp" => s.l1_return_temp,
        "dhw_tank_top_temp" => s.dhw_tank_top_temp,
        "dhw_tank_bottom_temp" => s.dhw_tank_bottom_temp,
        "dhw_supply_temp" => s.dhw_tank_top_temp - 2.0,
        "dhw_circulation_temp" => s.dhw_tank_top_temp - 8.0,
        "hot_gas_temp" => s.hot_gas_temp,
        "compressor_running" => b(s.compressor_running),
        "electric_heater_on" => b(s.electric_heater_on),
        "alarm_a" => b(s.alarm_a),
        "alarm_b" => b(s.alarm_b),
        "l1_supply_setpoint_calc" => s.l1_supply_temp.round(),
        "l1_room_setpoint" => 21.5,
        "l1_valve_position" => 40.0,
        "l2_valve_position" => 25.0,
        "dhw_valve_position" => 0.0,
        _ => return None,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a register bank half-valid
    // in a way that matters for a simulator; keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The simulator as a tokio-modbus server service.
#[derive(Debug, Clone)]
pub struct SimService {
    sim: Eh203Sim,
}

type SimFuture = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

impl tokio_modbus::server::Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = SimFuture;

    fn call(&self, req: Self::Request) -> Self::Future {
        let sim = self.sim.clone();
        Box::pin(async move {
            // Another unit's request, a broadcast (never answered, Serial Line
            // V1.02 §2.1), or a device that is "unplugged": stay silent.
            if req.slave != sim.inner.unit_id || sim.inner.silent.load(Ordering::SeqCst) {
                return Ok(None);
            }
            let delay = sim.inner.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            match req.request {
                Request::ReadHoldingRegisters(addr, count) => sim
                    .read_holding(addr, count)
                    .map(|w| Some(Response::ReadHoldingRegisters(w))),
                Request::WriteSingleRegister(addr, word) => sim
                    .write_holding(addr, &[word])
                    .map(|()| Some(Response::WriteSingleRegister(addr, word))),
                Request::WriteMultipleRegisters(addr, words) => sim
                    .write_holding(addr, &words)
                    .map(|()| Some(Response::WriteMultipleRegisters(addr, words.len() as u16))),
                // The MODBUS-200 card maps the controller to holding registers only.
                _ => Err(ExceptionCode::IllegalFunction),
            }
        })
    }
}

/// An agent configuration that polls one simulated EH-203 over Modbus TCP at
/// `sim_addr` and streams to `server_url`, buffering in `buffer_path`: what the demo and the end-to-end
/// tests run. Built from TOML text so it goes through the same validation as
/// an installer's file.
pub fn agent_config_for(
    server_url: &str,
    agent_id: uuid::Uuid,
    secret: &str,
    sim_addr: std::net::SocketAddr,
    poll: Duration,
    buffer_path: &std::path::Path,
) -> Result<crate::config::AgentConfig, crate::config::ConfigError> {
    let text = config_text(server_url, agent_id, secret, sim_addr, poll, buffer_path);
    crate::config::AgentConfig::from_toml("simulated-site.toml", &text, std::path::Path::new("."))
}

/// The demo's remote-control envelope on the EH-203 simulator's free holding
/// registers (52..59 hold no model value, so a write stays): a hot-water
/// setpoint (register 52, 0.1 °C), a car-heater output (register 53) and a
/// one-hour hot-water boost. The points are labelled as demo points: a real
/// EH-203 has nothing at these addresses.
pub const DEMO_CONTROLS: &str = r#"
[[device.point]]
name = "dhw_setpoint"
label = "Käyttövesi, asetusarvo (demo) / Hot water setpoint (demo)"
function = "holding"
address = 52
data_type = "i16"
scale = 0.1
unit = "degC"
writable = true

[[device.point]]
name = "car_heater"
label = "Autolämmitin (demo) / Car heater (demo)"
function = "holding"
address = 53
data_type = "u16"
writable = true

[[writable]]
device = "heatpump"
point = "dhw_setpoint"
kind = "setpoint"
min = 40.0
max = 55.0
step = 0.5
max_override_minutes = 240
daily_write_cap = 50

[[writable]]
device = "heatpump"
point = "car_heater"
kind = "output"
max_override_minutes = 180
schedulable = true
value_when_idle = 0

[[action]]
name = "boost_dhw"
label = "Lämmitä käyttövesi / Boost hot water (demo)"
max_duration_minutes = 60
[[action.write]]
device = "heatpump"
point = "dhw_setpoint"
value = 55
"#;

/// The register of [`DEMO_CONTROLS`]'s hot-water setpoint (0.1 °C, signed).
pub const DEMO_DHW_SETPOINT_REGISTER: u16 = 52;
/// The register of [`DEMO_CONTROLS`]'s car-heater output (0 off, 1 on).
pub const DEMO_CAR_HEATER_REGISTER: u16 = 53;

/// [`agent_config_for`] plus [`DEMO_CONTROLS`]: the demo site with working
/// controls. Call [`Eh203Sim::preset_demo_controls`] first so the setpoint
/// starts inside its envelope.
pub fn agent_config_with_controls_for(
    server_url: &str,
    agent_id: uuid::Uuid,
    secret: &str,
    sim_addr: std::net::SocketAddr,
    poll: Duration,
    buffer_path: &std::path::Path,
) -> Result<crate::config::AgentConfig, crate::config::ConfigError> {
    let mut text = config_text(server_url, agent_id, secret, sim_addr, poll, buffer_path);
    text.push_str(DEMO_CONTROLS);
    crate::config::AgentConfig::from_toml("simulated-site.toml", &text, std::path::Path::new("."))
}

fn config_text(
    server_url: &str,
    agent_id: uuid::Uuid,
    secret: &str,
    sim_addr: std::net::SocketAddr,
    poll: Duration,
    buffer_path: &std::path::Path,
) -> String {
    format!(
        r#"
[server]
url = "{server_url}"
agent_id = "{agent_id}"
secret = "{secret}"

[[bus]]
name = "lan"
kind = "tcp"
address = "{sim_addr}"
timeout_ms = 1000

[[device]]
key = "heatpump"
label = "Lämpöpumppu / Heat pump"
bus = "lan"
unit_id = 1
profile = "ouman_eh203_modbus200"
poll_interval_ms = {poll_ms}

[buffer]
path = "{buffer}"
"#,
        poll_ms = poll.as_millis().max(100),
        // TOML basic strings need backslashes escaped (Windows-style paths).
        buffer = buffer_path.display().to_string().replace('\\', "\\\\"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registers::decode_registers;

    #[test]
    fn the_bank_holds_the_model_values_at_the_profile_addresses() {
        let sim = Eh203Sim::new(SimOptions {
            alarm_b: true,
            ..SimOptions::default()
        });
        let s = sim.snapshot();
        let words = sim.read_holding(18, 28).unwrap();
        assert_eq!(words[0] as i16, (s.outdoor_temp * 100.0).round() as i16);
        assert_eq!(words[45 - 18] & 0b1000, 0b1000, "alarm B is bit 3");
        assert_eq!(words[45 - 18] & 0b0100, 0, "alarm A is off");
    }

    #[test]
    fn the_demo_controls_validate_and_start_inside_their_envelope() {
        let cfg = agent_config_with_controls_for(
            "ws://127.0.0.1:9/agent/v1/ws",
            uuid::Uuid::nil(),
            "secret",
            "127.0.0.1:502".parse().unwrap(),
            Duration::from_secs(1),
            std::path::Path::new("buffer.db"),
        )
        .unwrap();
        let points: Vec<&str> = cfg
            .envelope
            .writables
            .iter()
            .map(|w| w.key.point.as_str())
            .collect();
        assert_eq!(points, ["dhw_setpoint", "car_heater"]);
        assert_eq!(cfg.envelope.actions.len(), 1);
        let sim = Eh203Sim::new(SimOptions::default());
        sim.preset_demo_controls().unwrap();
        assert_eq!(
            sim.read_holding(DEMO_DHW_SETPOINT_REGISTER, 2).unwrap(),
            [480, 0]
        );
    }

    #[test]
    fn set_alarm_changes_the_status_word_immediately() {
        let sim = Eh203Sim::new(SimOptions::default());
        sim.set_alarm(Alarm::A, true);
        assert_eq!(sim.read_holding(45, 1).unwrap()[0] & 0b0100, 0b0100);
        sim.set_alarm(Alarm::A, false);
        assert_eq!(sim.read_holding(45, 1).unwrap()[0] & 0b0100, 0);
    }

    #[test]
    fn reads_outside_the_bank_are_illegal_addresses_and_bad_counts_illegal_values() {
        let sim = Eh203Sim::new(SimOptions::default());
        assert_eq!(
            sim.read_holding(0, 10),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            sim.read_holding(55, 10),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            sim.read_holding(18, 0),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            sim.read_holding(18, 126),
            Err(ExceptionCode::IllegalDataValue)
        );
    }

    #[test]
    fn a_step_changes_the_registers() {
        let sim = Eh203Sim::new(SimOptions::default());
        let before = sim.read_holding(18, 28).unwrap();
        sim.step(Duration::from_secs(1));
        assert_ne!(before, sim.read_holding(18, 28).unwrap());
    }

    #[test]
    fn every_enabled_profile_point_reads_back_close_to_the_model() {
        let sim = Eh203Sim::new(SimOptions::default());
        let s = sim.snapshot();
        for p in sim.inner.points.iter().filter(|p| p.enabled) {
            let spec = p.spec.modbus().unwrap();
            let words = sim.read_holding(spec.address.0, 1).unwrap();
            let v = decode_registers(spec, &words).unwrap();
            let expected = value_of(&p.key, &s).unwrap();
            assert!((v - expected).abs() < 0.006, "{}: {v} vs {expected}", p.key);
        }
    }

    #[tokio::test]
    async fn a_silent_device_and_other_unit_ids_get_no_reply() {
        use tokio_modbus::server::Service as _;
        let sim = Eh203Sim::new(SimOptions::default());
        let svc = sim.service();
        let req = |slave| SlaveRequest {
            slave,
            request: Request::ReadHoldingRegisters(18, 1),
        };
        assert!(svc.call(req(1)).await.unwrap().is_some());
        assert!(svc.call(req(2)).await.unwrap().is_none());
        assert!(svc.call(req(0)).await.unwrap().is_none());
        sim.set_silent(true);
        assert!(svc.call(req(1)).await.unwrap().is_none());
        sim.set_silent(false);
        assert!(svc.call(req(1)).await.unwrap().is_some());
    }
}
