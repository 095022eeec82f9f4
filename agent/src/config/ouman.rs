//! The `ouman` bus kind: the Ouman EH-203's own RS-232 port, reached through a
//! local serial port (`path`, default 4800 baud 8N1, shared/reference/
//! device-protocols.md §1.3) or an RS-232-to-Ethernet serial server
//! (`address = "host:port"`, raw bytes). The link is point to point, so its
//! devices carry no `unit_id`. Kept apart from the Modbus bus kinds so each
//! protocol's defaults live in one place.

use std::ops::Range;

use toml::Spanned;

use super::{
    ConfigError, DataBits, OumanLink, Parity, RawBus, SerialSettings, StopBits, Transport,
    Validator,
};

/// The controller's line speed (atoid/ouman and aalien/ouman both open 4800).
pub const OUMAN_DEFAULT_BAUD: u32 = 4800;

impl Validator<'_> {
    /// The transport of an `ouman` bus: serial `path` or TCP `address`.
    pub(super) fn ouman_transport(
        &self,
        i: usize,
        span: Range<usize>,
        raw: &RawBus,
    ) -> Result<Transport, ConfigError> {
        let key = |f: &str| format!("bus[{i}].{f}");
        if raw.max_gap.is_some() {
            return self.err(
                span,
                key("max_gap"),
                "only applies to Modbus buses (an ouman bus reads whole data blocks)",
            );
        }
        match (&raw.path, &raw.address) {
            (Some(_), Some(a)) => self.err(
                a.span(),
                key("address"),
                "an ouman bus has either a serial `path` or a serial server `address`, not both",
            ),
            (None, None) => self.err(
                span,
                key("path"),
                "missing: an ouman bus needs the serial port `path` or a serial server `address = \"host:port\"`",
            ),
            (None, Some(addr)) => {
                for (field, present) in [
                    ("baud", raw.baud.is_some()),
                    ("data_bits", raw.data_bits.is_some()),
                    ("stop_bits", raw.stop_bits.is_some()),
                    ("parity", raw.parity.is_some()),
                ] {
                    if present {
                        return self.err(
                            span,
                            key(field),
                            "set the line settings on the serial server; with `address` the agent sends raw bytes",
                        );
                    }
                }
                let valid = addr
                    .get_ref()
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                if !valid {
                    return self.err(
                        addr.span(),
                        key("address"),
                        format!("`{}` is not host:port", addr.get_ref()),
                    );
                }
                Ok(Transport::Ouman(OumanLink::Tcp {
                    address: addr.get_ref().clone(),
                }))
            }
            (Some(path), None) => {
                let baud = match &raw.baud {
                    None => OUMAN_DEFAULT_BAUD,
                    Some(b) if *b.get_ref() == 0 => {
                        return self.err(b.span(), key("baud"), "baud must be above 0");
                    }
                    Some(b) => *b.get_ref(),
                };
                let data_bits = match pick(&raw.data_bits, 8, &[7, 8]) {
                    Ok(7) => DataBits::Seven,
                    Ok(_) => DataBits::Eight,
                    Err((s, n)) => {
                        return self.err(
                            s,
                            key("data_bits"),
                            format!("data_bits must be 7 or 8, got {n}"),
                        );
                    }
                };
                let stop_bits = match pick(&raw.stop_bits, 1, &[1, 2]) {
                    Ok(2) => StopBits::Two,
                    Ok(_) => StopBits::One,
                    Err((s, n)) => {
                        return self.err(
                            s,
                            key("stop_bits"),
                            format!("stop_bits must be 1 or 2, got {n}"),
                        );
                    }
                };
                Ok(Transport::Ouman(OumanLink::Serial(SerialSettings {
                    path: path.get_ref().clone(),
                    baud,
                    parity: raw.parity.unwrap_or(Parity::None),
                    data_bits,
                    stop_bits,
                })))
            }
        }
    }

    /// A device on an `ouman` bus has no unit id; one that sets it is told so.
    pub(super) fn ouman_unit_id(
        &self,
        i: usize,
        unit_id: &Option<Spanned<i64>>,
    ) -> Result<i64, ConfigError> {
        match unit_id {
            None => Ok(0),
            Some(u) => self.err(
                u.span(),
                format!("device[{i}].unit_id"),
                "an ouman bus is a point-to-point link to one controller: remove `unit_id`",
            ),
        }
    }
}

/// `value` (or `default`) when it is one of `allowed`, else its span and value.
fn pick(
    value: &Option<Spanned<u8>>,
    default: u8,
    allowed: &[u8],
) -> Result<u8, (Range<usize>, u8)> {
    match value {
        None => Ok(default),
        Some(v) if allowed.contains(v.get_ref()) => Ok(*v.get_ref()),
        Some(v) => Err((v.span(), *v.get_ref())),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{
        AgentConfig, ConfigError, DataBits, OumanLink, Parity, StopBits, Transport,
    };
    use crate::tomlfile::TomlFileError;

    const HEAD: &str = r#"[server]
url = "ws://127.0.0.1:8080/agent/v1/ws"
agent_id = "0b6f3c1e-8a5b-4c1d-9e2f-3a4b5c6d7e8f"
secret = "not-the-placeholder"
"#;

    /// A config with one ouman bus whose body is `bus` and one EH-203 on it.
    fn config(bus: &str, device_extra: &str) -> String {
        format!(
            "{HEAD}\n[[bus]]\nname = \"eh203\"\nkind = \"ouman\"\n{bus}\n\n[[device]]\nkey = \"heatpump\"\nbus = \"eh203\"\nprofile = \"ouman_eh203\"\n{device_extra}"
        )
    }

    fn load(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::from_toml("agent.toml", text, Path::new("/nonexistent"))
    }

    fn invalid(text: &str) -> TomlFileError {
        match load(text) {
            Err(ConfigError::Invalid(e)) => e,
            other => panic!("expected a located error, got {other:?}"),
        }
    }

    #[test]
    fn a_serial_ouman_bus_defaults_to_4800_8n1_and_needs_no_unit_id() {
        let cfg = load(&config("path = \"/dev/ttyS0\"", "")).unwrap();
        let Transport::Ouman(OumanLink::Serial(s)) = &cfg.buses[0].transport else {
            panic!("an ouman serial bus: {:?}", cfg.buses[0].transport)
        };
        assert_eq!(
            (s.path.as_str(), s.baud, s.parity, s.data_bits, s.stop_bits),
            (
                "/dev/ttyS0",
                4800,
                Parity::None,
                DataBits::Eight,
                StopBits::One
            )
        );
        assert_eq!(cfg.devices[0].unit_id, 0);
        assert_eq!(cfg.devices[0].profile_id, "ouman_eh203");
        assert_eq!(cfg.catalogue()[0].points.len(), 11);
    }

    #[test]
    fn serial_settings_can_be_changed() {
        let cfg = load(&config(
            "path = \"/dev/ttyS0\"\nbaud = 9600\nparity = \"even\"\ndata_bits = 7\nstop_bits = 2",
            "",
        ))
        .unwrap();
        let Transport::Ouman(OumanLink::Serial(s)) = &cfg.buses[0].transport else {
            panic!()
        };
        assert_eq!(
            (s.baud, s.parity, s.data_bits, s.stop_bits),
            (9600, Parity::Even, DataBits::Seven, StopBits::Two)
        );
    }

    #[test]
    fn a_serial_server_address_is_accepted() {
        let cfg = load(&config("address = \"192.168.1.60:4001\"", "")).unwrap();
        assert_eq!(
            cfg.buses[0].transport,
            Transport::Ouman(OumanLink::Tcp {
                address: "192.168.1.60:4001".into()
            })
        );
    }

    #[test]
    fn both_path_and_address_are_refused_at_the_address_line() {
        let err = invalid(&config(
            "path = \"/dev/ttyS0\"\naddress = \"10.0.0.1:4001\"",
            "",
        ));
        assert_eq!(
            (err.key.as_str(), err.line),
            ("bus[0].address", 10),
            "{err}"
        );
        assert!(err.message.contains("not both"), "{err}");
    }

    #[test]
    fn neither_path_nor_address_is_refused() {
        let err = invalid(&config("timeout_ms = 800", ""));
        assert_eq!(err.key, "bus[0].path");
        assert!(err.message.contains("`address"), "{err}");
    }

    #[test]
    fn serial_keys_with_a_serial_server_address_are_refused() {
        let err = invalid(&config("address = \"10.0.0.1:4001\"\nbaud = 4800", ""));
        assert_eq!(err.key, "bus[0].baud");
        assert!(err.message.contains("serial server"), "{err}");
    }

    #[test]
    fn a_bad_address_baud_or_data_bits_is_refused_at_its_line() {
        let err = invalid(&config("address = \"eh203\"", ""));
        assert_eq!((err.key.as_str(), err.line), ("bus[0].address", 9));
        let err = invalid(&config("path = \"/dev/ttyS0\"\nbaud = 0", ""));
        assert_eq!((err.key.as_str(), err.line), ("bus[0].baud", 10));
        let err = invalid(&config("path = \"/dev/ttyS0\"\ndata_bits = 9", ""));
        assert_eq!((err.key.as_str(), err.line), ("bus[0].data_bits", 10));
        assert_eq!(err.message, "data_bits must be 7 or 8, got 9");
    }

    #[test]
    fn max_gap_is_refused_on_an_ouman_bus() {
        let err = invalid(&config("path = \"/dev/ttyS0\"\nmax_gap = 4", ""));
        assert_eq!(err.key, "bus[0].max_gap");
    }

    #[test]
    fn a_unit_id_on_an_ouman_device_is_refused_at_its_line() {
        let err = invalid(&config("path = \"/dev/ttyS0\"", "unit_id = 1\n"));
        assert_eq!(
            (err.key.as_str(), err.line),
            ("device[0].unit_id", 15),
            "{err}"
        );
        assert!(err.message.contains("point-to-point"), "{err}");
    }

    #[test]
    fn a_modbus_device_without_a_unit_id_is_refused() {
        let text = format!(
            "{HEAD}\n[[bus]]\nname = \"lan\"\nkind = \"tcp\"\naddress = \"10.0.0.1:502\"\n\n[[device]]\nkey = \"hp\"\nbus = \"lan\"\nprofile = \"generic_modbus\"\n"
        );
        let err = invalid(&text);
        assert_eq!(err.key, "device[0].unit_id");
        assert!(err.message.contains("missing"), "{err}");
        assert!((11..=14).contains(&err.line), "{err}");
    }

    #[test]
    fn profiles_and_buses_of_different_protocols_do_not_mix() {
        let err = invalid(&config("path = \"/dev/ttyS0\"", "").replace(
            "profile = \"ouman_eh203\"",
            "profile = \"ouman_eh203_modbus200\"",
        ));
        assert_eq!((err.key.as_str(), err.line), ("device[0].profile", 14));
        assert!(err.message.contains("does not speak modbus"), "{err}");
        let text = format!(
            "{HEAD}\n[[bus]]\nname = \"lan\"\nkind = \"tcp\"\naddress = \"10.0.0.1:502\"\n\n[[device]]\nkey = \"hp\"\nbus = \"lan\"\nunit_id = 1\nprofile = \"ouman_eh203\"\n"
        );
        let err = invalid(&text);
        assert!(err.message.contains("does not speak ouman_serial"), "{err}");
    }

    #[test]
    fn an_inline_point_uses_data_id_and_byte_and_modbus_fields_are_refused() {
        let good = config(
            "path = \"/dev/ttyS0\"",
            "\n[[device.point]]\nname = \"meas_6\"\ndata_id = 27\nscale = 0.01\nunit = \"degC\"\n",
        );
        // the profile already has a disabled meas_6
        assert_eq!(invalid(&good).key, "device[0].point[0].name");
        let good = good.replace("\"meas_6\"", "\"m6\"");
        let cfg = load(&good).unwrap();
        let p = cfg.devices[0].points.last().unwrap();
        assert_eq!(p.spec.describe(), "data ID 27 byte 0 I16");
        let err = invalid(&good.replace("data_id = 27", "data_id = 27\naddress = 27"));
        assert_eq!(
            (err.key.as_str(), err.line),
            ("device[0].point[0].address", 16)
        );
        assert!(
            err.message
                .contains("does not apply to ouman_serial points"),
            "{err}"
        );
    }
}
