//! Modbus slave mode: a PLC is the master of the bus and the agent answers
//! it from a register bank, like any other slave on the line
//! (`shared/reference/plc-slave-mode.md`).
//!
//! - [`bank`]: the exchange area, pure: the four tables at the addresses a
//!   profile maps, each point `from_plc` (the master writes it: readings) or
//!   `to_plc` (the agent offers it: [`Bank::offer`] returns a [`Delivery`]
//!   that resolves once the master has read it, and echoed it back where the
//!   profile says so); unknown registers read as 0xFFFF.
//! - [`rtu`]: finds the master's requests among the bytes of a shared RTU
//!   line (other slaves' replies, noise, damaged frames), pure.
//! - [`server`]: the bus task: owns the serial port, answers requests for
//!   its unit ids, reports readings and the PLC's online state, and serves
//!   the bus's write queue ([`crate::poller::WriteCommand`]s from the
//!   agent's [`crate::poller::Writer`], as on every other bus) through
//!   [`Bank::write`]: offered, then done when the master took it.
//!
//! **Writes from the control executor.** A `[[writable]]` on a slave device
//! names a `to_plc` point marked `writable = true` (a `from_plc` point is
//! refused when the config loads). A write is offered to the bank and
//! answered once the master has read it (and echoed it, where the point has
//! an `echo`): `Ok`, the value the PLC now has. An echo holding another value
//! (the PLC applied its own limit) is a [`crate::poller::WriteError::Mismatch`]
//! with both values; a master that did not take it within three of its rounds
//! ([`server::delivery_limit`]) is
//! [`crate::poller::WriteError::Unverified`], the value staying offered (the
//! executor retries it later). The echo's readings are the point's reported
//! value, so a setpoint changed at the PLC itself shows as such; a `to_plc`
//! point without an echo needs a `value_when_idle`, since the agent would
//! never learn what the PLC uses.
//!
//! A `modbus_slave` bus in `agent.toml` names the line; each `[[device]]` on
//! it is one exchange area, answered at the device's `unit_id`:
//!
//! ```
//! let text = r#"
//! [server]
//! url = "ws://127.0.0.1:8080/agent/v1/ws"
//! agent_id = "0b6f3c1e-8a5b-4c1d-9e2f-3a4b5c6d7e8f"
//! secret = "s3cr3t-for-docs"
//! [[bus]]
//! name = "plc"
//! kind = "modbus_slave"
//! path = "/dev/ttyUSB1"
//! [[device]]
//! key = "cottage_plc"
//! bus = "plc"
//! unit_id = 10
//! profile = "plc_cottage_exchange"
//! "#;
//! let cfg = agent::config::AgentConfig::from_toml("agent.toml", text, std::path::Path::new(".")).unwrap();
//! let banks = agent::devices::slave::banks(&cfg);
//! let delivery = banks["cottage_plc"].offer("room_setpoint", 21.5).unwrap();
//! // `delivery.await` completes once the PLC has read the setpoint and echoed it.
//! # drop(delivery);
//! ```

pub mod bank;
pub mod rtu;
pub mod server;

use std::collections::BTreeMap;

use tracing::error;

pub use bank::{Bank, BankError, BankValue, Delivered, Delivery, DeliveryError, UNKNOWN_WORD};
pub use server::{SlaveUnit, run_slave_bus};

use crate::{
    config::{AgentConfig, DeviceConfig, Transport},
    registers::Point,
};

/// Check `points` of device `device` for the bus they hang on: on a
/// `modbus_slave` bus they must lay out as a bank; elsewhere `direction` and
/// `echo` are refused. The error is a sentence naming the point.
pub fn check_points(
    device: &str,
    on_slave_bus: bool,
    points: &[Point],
    round: std::time::Duration,
) -> Result<(), String> {
    if on_slave_bus {
        return bank::BankState::new(device, points, round).map(|_| ());
    }
    match points
        .iter()
        .find(|p| p.direction.is_some() || p.echo.is_some())
    {
        Some(p) => Err(format!(
            "point `{}` has `direction`/`echo`, which only apply on a `modbus_slave` bus",
            p.key
        )),
        None => Ok(()),
    }
}

/// The bank of `device` (on a `modbus_slave` bus; its round time is the
/// device's `poll_interval`).
pub fn bank_for(device: &DeviceConfig) -> Result<Bank, String> {
    let points: Vec<Point> = device.enabled_points().cloned().collect();
    Bank::new(&device.key, &points, device.poll_interval)
}

/// A bank for every device on a `modbus_slave` bus of `cfg`, by device key.
/// Build it once and share it: the bus task serves these banks, and the rest
/// of the agent offers values and reads them through clones.
pub fn banks(cfg: &AgentConfig) -> BTreeMap<String, Bank> {
    let slave_buses: Vec<&str> = cfg
        .buses
        .iter()
        .filter(|b| matches!(b.transport, Transport::ModbusSlave(_)))
        .map(|b| b.name.as_str())
        .collect();
    cfg.devices
        .iter()
        .filter(|d| slave_buses.contains(&d.bus.as_str()))
        .filter_map(|d| match bank_for(d) {
            Ok(bank) => Some((d.key.clone(), bank)),
            Err(e) => {
                // Config validation builds the same layout, so this cannot happen.
                error!(device = %d.key, error = %e, "exchange area not served");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use super::*;
    use crate::{
        config::{ConfigError, DataBits, Parity, SlaveFraming, StopBits},
        tomlfile::TomlFileError,
    };

    const HEAD: &str = r#"[server]
url = "ws://127.0.0.1:8080/agent/v1/ws"
agent_id = "0b6f3c1e-8a5b-4c1d-9e2f-3a4b5c6d7e8f"
secret = "not-the-placeholder"
"#;

    const SLAVE: &str = r#"
[[bus]]
name = "plc"
kind = "modbus_slave"
path = "/dev/ttyUSB1"

[[device]]
key = "cottage_plc"
bus = "plc"
unit_id = 10
profile = "plc_cottage_exchange"
"#;

    fn load(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::from_toml(
            "agent.toml",
            &format!("{HEAD}{text}"),
            Path::new("/nonexistent"),
        )
    }

    fn invalid(text: &str) -> TomlFileError {
        match load(text) {
            Err(ConfigError::Invalid(e)) => e,
            other => panic!("expected a located error, got {other:?}"),
        }
    }

    #[test]
    fn a_slave_bus_defaults_to_19200_8e1_rtu_and_serves_the_builtin_exchange_area() {
        let cfg = load(SLAVE).unwrap();
        let Transport::ModbusSlave(line) = &cfg.buses[0].transport else {
            panic!("a slave line")
        };
        let s = &line.serial;
        assert_eq!(
            (line.framing, s.baud, s.parity, s.data_bits, s.stop_bits),
            (
                SlaveFraming::Rtu,
                19_200,
                Parity::Even,
                DataBits::Eight,
                StopBits::One
            )
        );
        let banks = banks(&cfg);
        let keys = banks["cottage_plc"].keys();
        assert!(keys.contains(&"room_setpoint".to_owned()), "{keys:?}");
        assert_eq!(banks["cottage_plc"].value("indoor_temp"), Ok(None));
        assert_eq!(cfg.devices[0].poll_interval, Duration::from_secs(5));
    }

    #[test]
    fn ascii_framing_on_a_slave_bus_defaults_to_7e1() {
        let cfg = load(&SLAVE.replace(
            "kind = \"modbus_slave\"",
            "kind = \"modbus_slave\"\nframing = \"ascii\"",
        ))
        .unwrap();
        let Transport::ModbusSlave(line) = &cfg.buses[0].transport else {
            panic!("a slave line")
        };
        assert_eq!(
            (line.framing, line.serial.parity, line.serial.data_bits),
            (SlaveFraming::Ascii, Parity::Even, DataBits::Seven)
        );
    }

    #[test]
    fn polling_keys_on_a_slave_bus_and_framing_elsewhere_are_refused() {
        let err = invalid(&SLAVE.replace("path =", "timeout_ms = 500\npath ="));
        assert_eq!(err.key, "bus[0].timeout_ms");
        assert!(err.message.contains("PLC master paces"), "{err}");
        let err = invalid(&SLAVE.replace("modbus_slave\"", "rtu\"\nframing = \"rtu\""));
        assert_eq!(err.key, "bus[0].framing");
        let err = invalid(&SLAVE.replace(
            "kind = \"modbus_slave\"",
            "kind = \"modbus_slave\"\nframing = \"tcp\"",
        ));
        assert!(err.to_string().contains("framing"), "{err}");
    }

    #[test]
    fn a_point_without_direction_on_a_slave_bus_names_the_file_line_and_point() {
        let dir = tempfile::tempdir().unwrap();
        let prof = "[[profile]]\nid = \"mine\"\n[[profile.point]]\nname = \"t\"\nfunction = \"holding\"\naddress = 0\ndata_type = \"i16\"\n";
        std::fs::write(dir.path().join("mine.toml"), prof).unwrap();
        let text = format!(
            "{HEAD}{}",
            SLAVE.replace("\"plc_cottage_exchange\"", "\"./mine.toml\"")
        );
        let Err(ConfigError::Invalid(err)) =
            AgentConfig::from_toml("agent.toml", &text, dir.path())
        else {
            panic!("refused")
        };
        assert_eq!((err.key.as_str(), err.line), ("device[0].profile", 15));
        assert!(
            err.message
                .contains("point `t` (holding 0) needs `direction"),
            "{err}"
        );
    }

    #[test]
    fn direction_on_a_polled_bus_is_refused() {
        let text = r#"
[[bus]]
name = "rs485"
kind = "rtu"
path = "/dev/ttyUSB0"

[[device]]
key = "x"
bus = "rs485"
unit_id = 1
profile = "plc_cottage_exchange"
"#;
        let err = invalid(text);
        assert_eq!(err.key, "device[0].profile");
        assert!(
            err.message.contains("only apply on a `modbus_slave` bus"),
            "{err}"
        );
    }

    #[test]
    fn two_exchange_areas_cannot_share_a_unit_id() {
        let second = "\n[[device]]\nkey = \"other\"\nbus = \"plc\"\nunit_id = 10\nprofile = \"plc_cottage_exchange\"\n";
        let err = invalid(&format!("{SLAVE}{second}"));
        assert_eq!(err.key, "device[1].unit_id");
        assert!(err.message.contains("already answers unit 10"), "{err}");
        // A different unit on the same line is a second exchange area.
        let cfg = load(&format!("{SLAVE}{}", second.replace("10", "11"))).unwrap();
        assert_eq!(banks(&cfg).len(), 2);
    }
}
