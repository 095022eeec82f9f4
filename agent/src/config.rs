//! The agent's configuration file (`agent.toml`): servers, buses, devices.
//!
//! Loading happens in two steps. Serde parses the file into `Raw*` structs that
//! keep each value's byte span (`toml::Spanned`), so type errors and semantic
//! errors alike name the file, the line and the key (see [`crate::tomlfile`]).
//! Validation then builds the typed [`AgentConfig`]: buses resolved, profiles
//! loaded (built-in id or file path), secrets read and checked. Nothing is
//! connected or opened here; that is the job of [`crate::Agent`].
//!
//! ```
//! let text = r#"
//! [server]
//! url = "ws://127.0.0.1:8080/agent/v1/ws"
//! agent_id = "0b6f3c1e-8a5b-4c1d-9e2f-3a4b5c6d7e8f"
//! secret = "s3cr3t-for-docs"
//! [[bus]]
//! name = "lan"
//! kind = "tcp"
//! address = "127.0.0.1:502"
//! [[device]]
//! key = "heatpump"
//! bus = "lan"
//! unit_id = 1
//! profile = "ouman_eh203_modbus200"
//! "#;
//! let cfg = agent::config::AgentConfig::from_toml("agent.toml", text, std::path::Path::new(".")).unwrap();
//! assert_eq!(cfg.catalogue()[0].points.len(), 10);
//! ```

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use secrecy::SecretString;
use serde::Deserialize;
use toml::Spanned;

use crate::{
    buffer::{BufferConfig, WhenFull},
    registers::{
        Point, Protocol,
        profile::{self, RawPoint},
    },
    tomlfile::{self, TomlFileError},
};

mod ouman;

pub use self::ouman::OUMAN_DEFAULT_BAUD;

/// The placeholder secret of the example config; `run` refuses it.
pub const PLACEHOLDER_SECRET: &str = "CHANGE-ME";
/// Poll interval when a device does not set `poll_interval_ms`.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Per-request timeout when a bus does not set `timeout_ms`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest hole (registers/bits) bridged in one read when a bus does not set `max_gap`.
pub const DEFAULT_MAX_GAP: u16 = 8;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path we tried.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file (or a profile or secret file it names) has a mistake.
    #[error(transparent)]
    Invalid(#[from] TomlFileError),
}

/// The agent id the server issued, a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AgentId(pub uuid::Uuid);

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The whole, validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where and as whom to connect upstream.
    pub server: ServerConfig,
    /// Field buses, unique by name.
    pub buses: Vec<BusConfig>,
    /// Devices, unique by key; each names one of `buses`.
    pub devices: Vec<DeviceConfig>,
    /// The on-disk buffer (`[buffer]`; every key optional).
    pub buffer: BufferConfig,
    /// Where to serve Prometheus metrics (`[metrics] listen`); off when `None`.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// What remote commands may write (`[[writable]]`, `[[action]]`); empty = no remote control.
    pub envelope: crate::control::Envelope,
}

/// The `[server]` table.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `ws://` or `wss://` URL of the server's agent endpoint.
    pub url: url::Url,
    /// This agent's id.
    pub agent_id: AgentId,
    /// The agent's secret; `Debug` prints it redacted.
    pub secret: SecretString,
}

/// One `[[bus]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BusConfig {
    /// Unique name devices refer to.
    pub name: String,
    /// How to reach it.
    pub transport: Transport,
    /// Per-request timeout (tokio-modbus has none of its own).
    pub timeout: Duration,
    /// Largest hole bridged when grouping reads.
    pub max_gap: u16,
}

/// The physical side of a bus.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// Modbus RTU over a serial port.
    Rtu(SerialSettings),
    /// Modbus ASCII over a serial port (Serial Line V1.02 §2.5.2).
    Ascii(SerialSettings),
    /// Modbus TCP to `host:port`.
    Tcp {
        /// `host:port`, resolved at each connect.
        address: String,
    },
    /// The Ouman EH-203 native protocol to one controller (`kind = "ouman"`).
    Ouman(OumanLink),
    /// A serial line where a PLC is the Modbus master and the agent answers
    /// as a slave (`kind = "modbus_slave"`): served, not polled.
    ModbusSlave(SlaveLine),
    /// POP room-heating boards and their keypads on a serial bus
    /// (`kind = "pop"`, default 9600 8N1).
    Pop(SerialSettings),
}

/// How an Ouman controller's RS-232 port is reached.
#[derive(Debug, Clone, PartialEq)]
pub enum OumanLink {
    /// A local serial port (default 4800 baud 8N1).
    Serial(SerialSettings),
    /// An RS-232-to-Ethernet serial server passing raw bytes, `host:port`.
    Tcp {
        /// `host:port`, resolved at each connect.
        address: String,
    },
}

/// The line of a `modbus_slave` bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaveLine {
    /// Port and character format (default 19200 8E1, Serial Line V1.02 §2.5.1).
    pub serial: SerialSettings,
    /// RTU or ASCII frames.
    pub framing: SlaveFraming,
}

/// Frame format on a `modbus_slave` line (`framing = "rtu" | "ascii"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaveFraming {
    /// Modbus RTU (the default).
    #[default]
    Rtu,
    /// Modbus ASCII (default 7E1).
    Ascii,
}

impl Transport {
    /// Whether devices with a profile in `protocol` can hang on this bus.
    pub fn speaks(&self, protocol: Protocol) -> bool {
        match self {
            Transport::Rtu(_)
            | Transport::Ascii(_)
            | Transport::Tcp { .. }
            | Transport::ModbusSlave(_) => protocol == Protocol::Modbus,
            Transport::Ouman(_) => protocol == Protocol::OumanSerial,
            Transport::Pop(_) => protocol == Protocol::Pop,
        }
    }
}

/// Serial line settings of an RTU bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialSettings {
    /// Device path; prefer stable `/dev/serial/by-id/...` names.
    pub path: String,
    /// Baud rate, > 0.
    pub baud: u32,
    /// Parity.
    pub parity: Parity,
    /// Data bits per character.
    pub data_bits: DataBits,
    /// Stop bits per character.
    pub stop_bits: StopBits,
}

/// Serial parity. Modbus over Serial Line V1.02 §2.5.1: even parity is the
/// required default (8E1 for RTU, 7E1 for ASCII), so a serial bus without a
/// `parity` key uses even. With `parity = "none"` and no `stop_bits` a Modbus
/// bus sends two stop bits as the spec asks (an 8N1 device takes the second
/// as idle line); `stop_bits = 1` gives plain 8N1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity bit.
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

/// Data bits per character (RTU needs 8; 7 is for Modbus ASCII devices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataBits {
    /// 7 data bits.
    Seven,
    /// 8 data bits.
    Eight,
}

/// Stop bits per character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopBits {
    /// One stop bit.
    One,
    /// Two stop bits.
    Two,
}

/// One `[[device]]`, with its profile resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    /// Unique key, e.g. `heatpump`.
    pub key: String,
    /// Human label.
    pub label: Option<String>,
    /// Name of the bus it hangs on.
    pub bus: String,
    /// Modbus unit (slave) id; 0 on an `ouman` bus (point to point, no
    /// address); on a `pop` bus the board number.
    pub unit_id: u8,
    /// Id of the profile it uses.
    pub profile_id: String,
    /// How often to read it.
    pub poll_interval: Duration,
    /// Profile points followed by inline points, enabled or not.
    pub points: Vec<Point>,
}

impl DeviceConfig {
    /// The points that are polled.
    pub fn enabled_points(&self) -> impl Iterator<Item = &Point> {
        self.points.iter().filter(|p| p.enabled)
    }

    /// The device's catalogue entry for `Hello`.
    pub fn info(&self) -> protocol::DeviceInfo {
        protocol::DeviceInfo {
            key: self.key.clone(),
            label: self.label.clone(),
            profile: Some(self.profile_id.clone()),
            points: self.enabled_points().map(Point::info).collect(),
        }
    }
}

impl AgentConfig {
    /// Read and validate the file at `path`. Relative profile and secret paths
    /// are resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&path.display().to_string(), &text, base)
    }

    /// Validate config `text`; `file` names it in errors, `base_dir` anchors
    /// relative paths.
    pub fn from_toml(file: &str, text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = tomlfile::parse(file, text)?;
        Validator {
            file,
            text,
            base_dir,
        }
        .validate(raw)
    }

    /// Devices and enabled points as announced to the server.
    pub fn catalogue(&self) -> Vec<protocol::DeviceInfo> {
        self.devices.iter().map(DeviceConfig::info).collect()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: Spanned<RawServer>,
    #[serde(default)]
    bus: Vec<Spanned<RawBus>>,
    #[serde(default)]
    device: Vec<Spanned<RawDevice>>,
    buffer: Option<Spanned<RawBuffer>>,
    metrics: Option<RawMetrics>,
    // `[[writable]]` and `[[action]]` are read by `control::envelope::parse`.
    #[serde(default, rename = "writable")]
    _writable: serde::de::IgnoredAny,
    #[serde(default, rename = "action")]
    _action: serde::de::IgnoredAny,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuffer {
    path: Option<String>,
    max_bytes: Option<Spanned<u64>>,
    #[serde(default)]
    when_full: WhenFull,
    thin_interval_s: Option<Spanned<u64>>,
    #[serde(default)]
    ledger: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    url: Spanned<String>,
    agent_id: Spanned<String>,
    secret: Option<Spanned<String>>,
    secret_file: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum BusKind {
    Rtu,
    Ascii,
    Tcp,
    Ouman,
    ModbusSlave,
    Pop,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBus {
    name: Spanned<String>,
    kind: BusKind,
    path: Option<Spanned<String>>,
    baud: Option<Spanned<u32>>,
    parity: Option<Parity>,
    data_bits: Option<Spanned<u8>>,
    stop_bits: Option<Spanned<u8>>,
    address: Option<Spanned<String>>,
    timeout_ms: Option<Spanned<u64>>,
    max_gap: Option<u16>,
    framing: Option<SlaveFraming>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    key: Spanned<String>,
    label: Option<String>,
    bus: Spanned<String>,
    unit_id: Option<Spanned<i64>>,
    profile: Spanned<String>,
    poll_interval_ms: Option<Spanned<u64>>,
    #[serde(default)]
    point: Vec<Spanned<RawPoint>>,
}

struct Validator<'a> {
    file: &'a str,
    text: &'a str,
    base_dir: &'a Path,
}

impl Validator<'_> {
    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(TomlFileError::at(self.file, self.text, span, key, msg).into())
    }

    fn validate(&self, raw: RawConfig) -> Result<AgentConfig, ConfigError> {
        let server = self.server(raw.server)?;
        let mut buses: Vec<BusConfig> = Vec::new();
        for (i, b) in raw.bus.into_iter().enumerate() {
            let bus = self.bus(i, b)?;
            buses.push(bus);
        }
        let mut devices: Vec<DeviceConfig> = Vec::new();
        for (i, d) in raw.device.into_iter().enumerate() {
            let key_span = d.get_ref().key.span();
            let span = d.span();
            let unit_span = d
                .get_ref()
                .unit_id
                .as_ref()
                .map_or(span.clone(), |u| u.span());
            let dev = self.device(i, span, d.into_inner(), &buses)?;
            let slave_bus = buses
                .iter()
                .any(|b| b.name == dev.bus && matches!(b.transport, Transport::ModbusSlave(_)));
            if let Some(other) = devices
                .iter()
                .find(|x| slave_bus && x.bus == dev.bus && x.unit_id == dev.unit_id)
            {
                return self.err(
                    unit_span,
                    format!("device[{i}].unit_id"),
                    format!(
                        "the agent already answers unit {} on bus `{}` for device `{}`",
                        dev.unit_id, dev.bus, other.key
                    ),
                );
            }
            if devices.iter().any(|x| x.key == dev.key) {
                return self.err(
                    key_span,
                    format!("device[{i}].key"),
                    format!("duplicate device key `{}`", dev.key),
                );
            }
            devices.push(dev);
        }
        let buffer = self.buffer(raw.buffer)?;
        let metrics_listen = match raw.metrics.and_then(|m| m.listen) {
            None => None,
            Some(l) => match l.get_ref().parse() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    return self.err(
                        l.span(),
                        "metrics.listen",
                        "expected an address and port such as \"127.0.0.1:9464\"",
                    );
                }
            },
        };
        let envelope = crate::control::envelope::parse(self.file, self.text, &devices, &buses)?;
        Ok(AgentConfig {
            server,
            buses,
            devices,
            buffer,
            metrics_listen,
            envelope,
        })
    }

    fn buffer(&self, raw: Option<Spanned<RawBuffer>>) -> Result<BufferConfig, ConfigError> {
        let Some(raw) = raw else {
            return Ok(BufferConfig::default());
        };
        let raw = raw.into_inner();
        let mut cfg = BufferConfig::default();
        if let Some(p) = raw.path {
            // A relative path is relative to the config file, like profile paths.
            cfg.path = self.base_dir.join(p);
        }
        if let Some(m) = raw.max_bytes {
            if *m.get_ref() < 64 * 1024 {
                return self.err(
                    m.span(),
                    "buffer.max_bytes",
                    "must be at least 65536 (64 KiB)",
                );
            }
            cfg.max_bytes = *m.get_ref();
        }
        cfg.when_full = raw.when_full;
        if let Some(t) = raw.thin_interval_s {
            if *t.get_ref() == 0 {
                return self.err(
                    t.span(),
                    "buffer.thin_interval_s",
                    "must be at least 1 second",
                );
            }
            cfg.thin_interval = Duration::from_secs(*t.get_ref());
        }
        cfg.ledger = raw.ledger;
        Ok(cfg)
    }

    fn server(&self, raw: Spanned<RawServer>) -> Result<ServerConfig, ConfigError> {
        let table_span = raw.span();
        let raw = raw.into_inner();
        let url = match url::Url::parse(raw.url.get_ref()) {
            Ok(u) if matches!(u.scheme(), "ws" | "wss") => u,
            Ok(u) => {
                return self.err(
                    raw.url.span(),
                    "server.url",
                    format!("scheme must be ws or wss, not `{}`", u.scheme()),
                );
            }
            Err(e) => return self.err(raw.url.span(), "server.url", format!("not a URL: {e}")),
        };
        let agent_id = match uuid::Uuid::parse_str(raw.agent_id.get_ref()) {
            Ok(id) => AgentId(id),
            Err(e) => {
                return self.err(
                    raw.agent_id.span(),
                    "server.agent_id",
                    format!("not a UUID: {e}"),
                );
            }
        };
        let (secret, span, key) = match (raw.secret, raw.secret_file) {
            (Some(_), Some(f)) => {
                return self.err(
                    f.span(),
                    "server.secret_file",
                    "set either `secret` or `secret_file`, not both",
                );
            }
            (None, None) => {
                return self.err(
                    table_span,
                    "server.secret",
                    "missing: set `secret` or `secret_file`",
                );
            }
            (Some(s), None) => (s.get_ref().clone(), s.span(), "server.secret"),
            (None, Some(f)) => {
                let path = self.base_dir.join(f.get_ref());
                match std::fs::read_to_string(&path) {
                    Ok(s) => (
                        s.trim_end_matches(['\r', '\n']).to_owned(),
                        f.span(),
                        "server.secret_file",
                    ),
                    Err(e) => {
                        return self.err(
                            f.span(),
                            "server.secret_file",
                            format!("cannot read {}: {e}", path.display()),
                        );
                    }
                }
            }
        };
        if secret.trim().is_empty() {
            return self.err(span, key, "the secret is empty");
        }
        if secret.trim().eq_ignore_ascii_case(PLACEHOLDER_SECRET) {
            return self.err(span, key, format!("`{PLACEHOLDER_SECRET}` is the example placeholder; set the secret issued for this agent"));
        }
        Ok(ServerConfig {
            url,
            agent_id,
            secret: SecretString::from(secret),
        })
    }

    fn bus(&self, i: usize, raw: Spanned<RawBus>) -> Result<BusConfig, ConfigError> {
        let span = raw.span();
        let raw = raw.into_inner();
        let key = |f: &str| format!("bus[{i}].{f}");
        let name = raw.name.get_ref().clone();
        if name.is_empty() {
            return self.err(raw.name.span(), key("name"), "a bus needs a name");
        }
        let timeout = match &raw.timeout_ms {
            // POP boards answer within 200 ms or not at all (then resent).
            None if raw.kind == BusKind::Pop => crate::devices::pop::REPLY_TIMEOUT,
            None => DEFAULT_TIMEOUT,
            Some(t) if *t.get_ref() == 0 => {
                return self.err(t.span(), key("timeout_ms"), "timeout_ms must be above 0");
            }
            Some(t) => Duration::from_millis(*t.get_ref()),
        };
        if raw.kind == BusKind::ModbusSlave {
            // The master paces a slave line; our requests and timeouts do not exist there.
            for (field, present) in [
                ("timeout_ms", raw.timeout_ms.is_some()),
                ("max_gap", raw.max_gap.is_some()),
            ] {
                if present {
                    return self.err(
                        span,
                        key(field),
                        "does not apply to a `modbus_slave` bus: the PLC master paces it",
                    );
                }
            }
        } else if raw.framing.is_some() {
            return self.err(
                span,
                key("framing"),
                "only applies to `kind = \"modbus_slave\"` buses (rtu and ascii buses are named by kind)",
            );
        }
        let transport = match raw.kind {
            BusKind::Ouman => self.ouman_transport(i, span, &raw)?,
            BusKind::Tcp => {
                for (field, present) in [
                    ("path", raw.path.is_some()),
                    ("baud", raw.baud.is_some()),
                    ("data_bits", raw.data_bits.is_some()),
                    ("stop_bits", raw.stop_bits.is_some()),
                    ("parity", raw.parity.is_some()),
                ] {
                    if present {
                        return self.err(
                            span,
                            key(field),
                            "only applies to serial (`kind = \"rtu\"`, `\"ascii\"`, `\"modbus_slave\"` or `\"pop\"`) buses",
                        );
                    }
                }
                let Some(addr) = raw.address else {
                    return self.err(
                        span,
                        key("address"),
                        "missing: a tcp bus needs `address = \"host:port\"`",
                    );
                };
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
                Transport::Tcp {
                    address: addr.into_inner(),
                }
            }
            BusKind::Rtu | BusKind::Ascii | BusKind::ModbusSlave | BusKind::Pop => {
                // Serial Line V1.02 §2.5.2: ASCII characters are 7 data bits, even parity.
                let slave = raw.kind == BusKind::ModbusSlave;
                let pop = raw.kind == BusKind::Pop;
                let framing = raw.framing.unwrap_or_default();
                let ascii = raw.kind == BusKind::Ascii || (slave && framing == SlaveFraming::Ascii);
                if let Some(a) = &raw.address {
                    return self.err(
                        a.span(),
                        key("address"),
                        "only applies to `kind = \"tcp\"` buses",
                    );
                }
                let Some(path) = raw.path else {
                    return self.err(
                        span,
                        key("path"),
                        "missing: a serial (rtu, ascii, modbus_slave or pop) bus needs the serial port `path`",
                    );
                };
                let baud = match raw.baud {
                    // Serial Line V1.02 §2.5.1: 19200 is the default rate.
                    None if slave => 19_200,
                    None => 9600,
                    Some(b) if *b.get_ref() == 0 => {
                        return self.err(b.span(), key("baud"), "baud must be above 0");
                    }
                    Some(b) => b.into_inner(),
                };
                let data_bits = match raw.data_bits.as_ref().map(|d| (d.span(), *d.get_ref())) {
                    None if ascii => DataBits::Seven,
                    None | Some((_, 8)) => DataBits::Eight,
                    Some((_, 7)) => DataBits::Seven,
                    Some((s, n)) => {
                        return self.err(
                            s,
                            key("data_bits"),
                            format!("data_bits must be 7 or 8, got {n}"),
                        );
                    }
                };
                // Serial Line V1.02 §2.5.1: every character is 11 bits, so
                // no parity means two stop bits. A receiver set to one stop
                // bit takes the second as idle line, so this also talks to
                // devices that ship 8N1. POP keeps its 8N1 [chosen].
                let parity = raw
                    .parity
                    .unwrap_or(if pop { Parity::None } else { Parity::Even });
                let stop_bits = match raw.stop_bits.as_ref().map(|d| (d.span(), *d.get_ref())) {
                    None if parity == Parity::None && !pop => StopBits::Two,
                    None | Some((_, 1)) => StopBits::One,
                    Some((_, 2)) => StopBits::Two,
                    Some((s, n)) => {
                        return self.err(
                            s,
                            key("stop_bits"),
                            format!("stop_bits must be 1 or 2, got {n}"),
                        );
                    }
                };
                let settings = SerialSettings {
                    path: path.into_inner(),
                    baud,
                    // Serial Line V1.02 §2.5.1 (RTU) and §2.5.2 (ASCII): even
                    // parity is the default both modes must support. POP: 8N1
                    // [chosen] (pop-protocol.md).
                    parity,
                    data_bits,
                    stop_bits,
                };
                if slave {
                    Transport::ModbusSlave(SlaveLine {
                        serial: settings,
                        framing,
                    })
                } else if pop {
                    Transport::Pop(settings)
                } else if ascii {
                    Transport::Ascii(settings)
                } else {
                    Transport::Rtu(settings)
                }
            }
        };
        Ok(BusConfig {
            name,
            transport,
            timeout,
            max_gap: raw.max_gap.unwrap_or(DEFAULT_MAX_GAP),
        })
    }

    fn device(
        &self,
        i: usize,
        span: std::ops::Range<usize>,
        raw: RawDevice,
        buses: &[BusConfig],
    ) -> Result<DeviceConfig, ConfigError> {
        let key = |f: &str| format!("device[{i}].{f}");
        let dev_key = raw.key.get_ref().clone();
        if dev_key.is_empty() {
            return self.err(raw.key.span(), key("key"), "a device needs a key");
        }
        let Some(bus) = buses.iter().find(|b| &b.name == raw.bus.get_ref()) else {
            let known: Vec<&str> = buses.iter().map(|b| b.name.as_str()).collect();
            return self.err(
                raw.bus.span(),
                key("bus"),
                format!(
                    "unknown bus `{}` (known: {})",
                    raw.bus.get_ref(),
                    known.join(", ")
                ),
            );
        };
        let (unit, unit_span) = match (&bus.transport, &raw.unit_id) {
            (Transport::Ouman(_), u) => (self.ouman_unit_id(i, u)?, span.clone()),
            (_, Some(u)) => (*u.get_ref(), u.span()),
            (_, None) => {
                return self.err(
                    span,
                    key("unit_id"),
                    format!("missing: a device on bus `{}` needs `unit_id`", bus.name),
                );
            }
        };
        let unit_range = match bus.transport {
            // Serial Line V1.02 §2.2: 0 is broadcast, 248..=255 reserved.
            Transport::Rtu(_) | Transport::Ascii(_) | Transport::ModbusSlave(_) => 1..=247,
            // Modbus TCP: gateways route by unit id, and 0 or 255 address the device itself.
            Transport::Tcp { .. } => 0..=255,
            // `ouman_unit_id` answered 0 for it: the link has no address.
            Transport::Ouman(_) => 0..=0,
            // POP: the board number, 0..=255 (pop-protocol.md, "Frame").
            Transport::Pop(_) => 0..=255,
        };
        if !unit_range.contains(&unit) {
            return self.err(
                unit_span,
                key("unit_id"),
                format!(
                    "unit_id {unit} is outside {}..={} for a {} bus",
                    unit_range.start(),
                    unit_range.end(),
                    match bus.transport {
                        Transport::Rtu(_) => "rtu",
                        Transport::Ascii(_) => "ascii",
                        Transport::Tcp { .. } => "tcp",
                        Transport::Ouman(_) => "ouman",
                        Transport::ModbusSlave(_) => "modbus_slave",
                        Transport::Pop(_) => "pop",
                    }
                ),
            );
        }
        let poll_interval = match &raw.poll_interval_ms {
            None => DEFAULT_POLL_INTERVAL,
            Some(p) if *p.get_ref() < 100 => {
                return self.err(
                    p.span(),
                    key("poll_interval_ms"),
                    "poll_interval_ms must be at least 100",
                );
            }
            Some(p) => Duration::from_millis(*p.get_ref()),
        };
        let prof = self.profile(&raw.profile, &key("profile"))?;
        if !bus.transport.speaks(prof.protocol) {
            return self.err(
                raw.profile.span(),
                key("profile"),
                format!(
                    "profile `{}` is a {} profile; bus `{}` does not speak {}",
                    prof.id, prof.protocol, bus.name, prof.protocol
                ),
            );
        }
        let mut points = prof.points;
        for (pi, rp) in raw.point.into_iter().enumerate() {
            let span = rp.span();
            let pkey = |f: &str| format!("device[{i}].point[{pi}].{f}");
            let point = match rp.into_inner().resolve(prof.protocol) {
                Ok(p) => p,
                Err((field, msg)) => return self.err(span, pkey(field), msg),
            };
            if points.iter().any(|p| p.key == point.key) {
                return self.err(
                    span,
                    pkey("name"),
                    format!(
                        "point `{}` already exists in profile `{}`",
                        point.key, prof.id
                    ),
                );
            }
            points.push(point);
        }
        let on_slave_bus = matches!(bus.transport, Transport::ModbusSlave(_));
        if let Err(msg) =
            crate::devices::slave::check_points(&dev_key, on_slave_bus, &points, poll_interval)
        {
            return self.err(raw.profile.span(), key("profile"), msg);
        }
        Ok(DeviceConfig {
            key: dev_key,
            label: raw.label,
            bus: bus.name.clone(),
            unit_id: unit as u8,
            profile_id: prof.id,
            poll_interval,
            points,
        })
    }

    /// A built-in id, or a file path (optionally `path.toml#profile_id`).
    fn profile(&self, raw: &Spanned<String>, key: &str) -> Result<profile::Profile, ConfigError> {
        let value = raw.get_ref();
        if let Some(result) = profile::load_builtin(value) {
            return Ok(result?);
        }
        let looks_like_path = value.contains('/') || value.contains(".toml");
        if !looks_like_path {
            let ids: Vec<&str> = profile::builtin_profile_ids().collect();
            return self.err(
                raw.span(),
                key,
                format!(
                    "unknown profile `{value}`: not a built-in ({}) nor a .toml path",
                    ids.join(", ")
                ),
            );
        }
        let (path, id) = match value.rsplit_once('#') {
            Some((p, id)) => (p, Some(id)),
            None => (value.as_str(), None),
        };
        let path = self.base_dir.join(path);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                return self.err(
                    raw.span(),
                    key,
                    format!("cannot read profile {}: {e}", path.display()),
                );
            }
        };
        let file = path.display().to_string();
        let profiles = profile::parse_profile(&file, &text)?;
        Ok(profile::pick(&file, profiles, id)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const GOOD: &str = r#"[server]
url = "ws://127.0.0.1:8080/agent/v1/ws"
agent_id = "0b6f3c1e-8a5b-4c1d-9e2f-3a4b5c6d7e8f"
secret = "not-the-placeholder"

[[bus]]
name = "rs485"
kind = "rtu"
path = "/dev/ttyUSB0"
baud = 9600
parity = "even"
data_bits = 8
stop_bits = 1
timeout_ms = 1000

[[bus]]
name = "lan"
kind = "tcp"
address = "192.168.1.50:502"

[[device]]
key = "heatpump"
label = "Lämpöpumppu"
bus = "rs485"
unit_id = 1
profile = "ouman_eh203_modbus200"
poll_interval_ms = 5000
"#;

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
    fn the_documented_example_loads() {
        let cfg = load(GOOD).unwrap();
        assert_eq!(cfg.buses.len(), 2);
        let Transport::Rtu(s) = &cfg.buses[0].transport else {
            panic!()
        };
        assert_eq!(
            (s.baud, s.parity, s.data_bits, s.stop_bits),
            (9600, Parity::Even, DataBits::Eight, StopBits::One)
        );
        assert_eq!(cfg.devices[0].poll_interval, Duration::from_secs(5));
        assert_eq!(cfg.server.secret.expose_secret(), "not-the-placeholder");
        assert_eq!(
            cfg.catalogue()[0].profile.as_deref(),
            Some("ouman_eh203_modbus200")
        );
    }

    #[test]
    fn the_shipped_example_file_is_valid_apart_from_its_placeholder_secret() {
        let text = include_str!("../config/example.toml");
        let err = invalid(text);
        assert_eq!(err.key, "server.secret");
        let fixed = text.replace("\"CHANGE-ME\"", "\"a-real-secret\"");
        load(&fixed).unwrap();
    }

    #[test]
    fn a_wrong_type_names_the_line_and_the_key() {
        let text = GOOD.replace("baud = 9600", "baud = \"fast\"");
        let err = invalid(&text);
        assert_eq!(
            err.to_string(),
            "agent.toml line 10: key `bus[0].baud`: invalid type: string \"fast\", expected u32"
        );
    }

    #[test]
    fn an_unknown_bus_name_is_refused_and_the_known_ones_listed() {
        let err = invalid(&GOOD.replace("bus = \"rs485\"", "bus = \"rs458\""));
        assert_eq!((err.key.as_str(), err.line), ("device[0].bus", 24));
        assert!(err.message.contains("known: rs485, lan"), "{err}");
    }

    #[test]
    fn a_unit_id_outside_1_to_247_on_rtu_is_refused() {
        for bad in ["0", "248", "-1"] {
            let err = invalid(&GOOD.replace("unit_id = 1", &format!("unit_id = {bad}")));
            assert_eq!(
                (err.key.as_str(), err.line),
                ("device[0].unit_id", 25),
                "{err}"
            );
        }
    }

    #[test]
    fn the_buffer_defaults_to_var_lib_and_256_mib_with_thinning() {
        let cfg = load(GOOD).unwrap();
        assert_eq!(cfg.buffer, BufferConfig::default());
        assert_eq!(
            cfg.buffer.path,
            Path::new("/var/lib/homecontrol/agent-buffer.db")
        );
        assert_eq!(cfg.buffer.max_bytes, 268_435_456);
        assert_eq!(cfg.metrics_listen, None);
    }

    #[test]
    fn buffer_and_metrics_keys_are_read_and_relative_paths_follow_the_config_file() {
        let text = format!(
            "{GOOD}\n[buffer]\npath = \"state/buf.db\"\nmax_bytes = 1048576\nwhen_full = \"drop_oldest\"\nthin_interval_s = 300\nledger = true\n\n[metrics]\nlisten = \"127.0.0.1:9464\"\n"
        );
        let cfg = load(&text).unwrap();
        assert_eq!(cfg.buffer.path, Path::new("/nonexistent/state/buf.db"));
        assert_eq!(cfg.buffer.max_bytes, 1_048_576);
        assert_eq!(cfg.buffer.when_full, WhenFull::DropOldest);
        assert_eq!(cfg.buffer.thin_interval, Duration::from_secs(300));
        assert!(cfg.buffer.ledger);
        assert_eq!(cfg.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
    }

    #[test]
    fn an_unknown_when_full_policy_and_a_bad_metrics_address_are_refused() {
        let err = invalid(&format!("{GOOD}\n[buffer]\nwhen_full = \"panic\"\n"));
        assert!(err.to_string().contains("when_full"), "{err}");
        let err = invalid(&format!("{GOOD}\n[metrics]\nlisten = \"localhost\"\n"));
        assert_eq!(err.key, "metrics.listen");
    }

    #[test]
    fn an_rtu_bus_defaults_to_8e1_as_the_serial_line_spec_requires() {
        let bare = GOOD.replace("parity = \"even\"\ndata_bits = 8\nstop_bits = 1\n", "");
        let cfg = load(&bare).unwrap();
        let Transport::Rtu(s) = &cfg.buses[0].transport else {
            panic!("an rtu transport")
        };
        // Serial Line V1.02 §2.5.1: 8 data bits, even parity, 1 stop bit.
        assert_eq!(
            (s.parity, s.data_bits, s.stop_bits),
            (Parity::Even, DataBits::Eight, StopBits::One)
        );
        // An 8N1 device says so.
        let cfg = load(&GOOD.replace("parity = \"even\"", "parity = \"none\"")).unwrap();
        let Transport::Rtu(s) = &cfg.buses[0].transport else {
            panic!("an rtu transport")
        };
        assert_eq!((s.parity, s.stop_bits), (Parity::None, StopBits::One));
        // Without `stop_bits`, no parity means two stop bits (11-bit characters).
        let cfg = load(
            &GOOD
                .replace("parity = \"even\"", "parity = \"none\"")
                .replace("stop_bits = 1\n", ""),
        )
        .unwrap();
        let Transport::Rtu(s) = &cfg.buses[0].transport else {
            panic!("an rtu transport")
        };
        assert_eq!((s.parity, s.stop_bits), (Parity::None, StopBits::Two));
    }

    #[test]
    fn an_ascii_bus_defaults_to_seven_data_bits_even_parity() {
        let bare = GOOD
            .replace("kind = \"rtu\"", "kind = \"ascii\"")
            .replace("parity = \"even\"\ndata_bits = 8\nstop_bits = 1\n", "");
        let cfg = load(&bare).unwrap();
        let Transport::Ascii(s) = &cfg.buses[0].transport else {
            panic!("an ascii transport")
        };
        // Serial Line V1.02 §2.5.2: 7 data bits, even parity, 1 stop bit.
        assert_eq!(
            (s.parity, s.data_bits, s.stop_bits),
            (Parity::Even, DataBits::Seven, StopBits::One)
        );
        // 8N1 stays possible for devices that use it.
        let eight = GOOD
            .replace("kind = \"rtu\"", "kind = \"ascii\"")
            .replace("parity = \"even\"", "parity = \"none\"");
        let cfg = load(&eight).unwrap();
        let Transport::Ascii(s) = &cfg.buses[0].transport else {
            panic!("an ascii transport")
        };
        assert_eq!((s.parity, s.data_bits), (Parity::None, DataBits::Eight));
        // Like RTU, an ASCII bus addresses units 1..=247 and has no `address`.
        let err = invalid(
            &GOOD
                .replace("kind = \"rtu\"", "kind = \"ascii\"")
                .replace("unit_id = 1", "unit_id = 0"),
        );
        assert!(err.message.contains("ascii bus"), "{err}");
        let err = invalid(
            &GOOD
                .replace("kind = \"rtu\"", "kind = \"ascii\"")
                .replace("path = \"/dev/ttyUSB0\"", "address = \"10.0.0.1:502\""),
        );
        assert_eq!(err.key, "bus[0].address");
    }

    #[test]
    fn a_baud_of_zero_is_refused() {
        let err = invalid(&GOOD.replace("baud = 9600", "baud = 0"));
        assert_eq!((err.key.as_str(), err.line), ("bus[0].baud", 10));
    }

    #[test]
    fn an_unknown_profile_is_refused_and_the_builtins_listed() {
        let err = invalid(&GOOD.replace("\"ouman_eh203_modbus200\"", "\"ouman_eh999\""));
        assert_eq!(err.key, "device[0].profile");
        assert!(err.message.contains("generic_modbus"), "{err}");
    }

    #[test]
    fn a_duplicate_device_key_is_refused() {
        let dev = "\n[[device]]\nkey = \"heatpump\"\nbus = \"lan\"\nunit_id = 2\nprofile = \"generic_modbus\"\n";
        let err = invalid(&format!("{GOOD}{dev}"));
        assert_eq!((err.key.as_str(), err.line), ("device[1].key", 30));
        assert!(err.message.contains("duplicate"));
    }

    #[test]
    fn a_missing_secret_is_refused() {
        let err = invalid(&GOOD.replace("secret = \"not-the-placeholder\"\n", ""));
        assert_eq!(err.key, "server.secret");
        assert!(err.message.contains("missing"));
    }

    #[test]
    fn the_placeholder_secret_is_refused() {
        let err = invalid(&GOOD.replace("not-the-placeholder", "CHANGE-ME"));
        assert_eq!((err.key.as_str(), err.line), ("server.secret", 4));
        assert!(!err.to_string().contains("not-the-placeholder"));
    }

    #[test]
    fn a_secret_file_is_read_and_its_trailing_newline_dropped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent.secret"), "from-file\n").unwrap();
        let text = GOOD.replace(
            "secret = \"not-the-placeholder\"",
            "secret_file = \"agent.secret\"",
        );
        let cfg = AgentConfig::from_toml("agent.toml", &text, dir.path()).unwrap();
        assert_eq!(cfg.server.secret.expose_secret(), "from-file");
    }

    #[test]
    fn the_secret_never_appears_in_debug_output() {
        let cfg = load(GOOD).unwrap();
        assert!(!format!("{cfg:?}").contains("not-the-placeholder"));
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_path() {
        let err = invalid(&GOOD.replace("timeout_ms = 1000", "timeout = 1000"));
        assert_eq!((err.key.as_str(), err.line), ("bus[0].timeout", 14));
        assert!(err.message.contains("timeout"), "{err}");
    }

    #[test]
    fn a_non_websocket_url_is_refused() {
        let err = invalid(&GOOD.replace("ws://127.0.0.1", "http://127.0.0.1"));
        assert_eq!((err.key.as_str(), err.line), ("server.url", 2));
    }

    #[test]
    fn inline_points_are_added_after_the_profile_points() {
        let text = format!(
            "{GOOD}\n[[device.point]]\nname = \"extra\"\nfunction = \"input\"\naddress = 7\ndata_type = \"u16\"\n"
        );
        let cfg = load(&text).unwrap();
        assert_eq!(cfg.catalogue()[0].points.last().unwrap().key, "extra");
    }

    #[test]
    fn an_inline_point_clashing_with_the_profile_is_refused() {
        let text = format!(
            "{GOOD}\n[[device.point]]\nname = \"outdoor_temp\"\nfunction = \"input\"\naddress = 7\ndata_type = \"u16\"\n"
        );
        assert_eq!(invalid(&text).key, "device[0].point[0].name");
    }

    #[test]
    fn a_profile_file_path_is_resolved_against_the_config_directory() {
        let dir = tempfile::tempdir().unwrap();
        let prof = "[[profile]]\nid = \"mine\"\n[[profile.point]]\nname = \"t\"\nfunction = \"holding\"\naddress = 0\ndata_type = \"i16\"\n";
        std::fs::write(dir.path().join("mine.toml"), prof).unwrap();
        let text = GOOD.replace("\"ouman_eh203_modbus200\"", "\"./mine.toml\"");
        let cfg = AgentConfig::from_toml("agent.toml", &text, dir.path()).unwrap();
        assert_eq!(cfg.devices[0].profile_id, "mine");
    }

    const POP: &str = "
[[bus]]
name = \"heating\"
kind = \"pop\"
path = \"/dev/ttyUSB1\"

[[device]]
key = \"board0\"
bus = \"heating\"
unit_id = 0
profile = \"pop_board\"
";

    /// 1-based line of `text` where `needle` first appears.
    fn line_of(text: &str, needle: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).unwrap() + 1
    }

    #[test]
    fn a_pop_bus_defaults_to_9600_8n1_with_200_ms_replies_and_takes_boards_0_to_255() {
        let text = format!("{GOOD}{POP}");
        let cfg = load(&text).unwrap();
        let bus = &cfg.buses[2];
        let Transport::Pop(s) = &bus.transport else {
            panic!("a pop transport")
        };
        assert_eq!(
            (s.path.as_str(), s.baud, s.parity, s.data_bits, s.stop_bits),
            (
                "/dev/ttyUSB1",
                9600,
                Parity::None,
                DataBits::Eight,
                StopBits::One
            )
        );
        assert_eq!(bus.timeout, Duration::from_millis(200));
        assert!(bus.transport.speaks(Protocol::Pop) && !bus.transport.speaks(Protocol::Modbus));
        let dev = &cfg.devices[1];
        assert_eq!((dev.unit_id, dev.profile_id.as_str()), (0, "pop_board"));
        assert_eq!(cfg.catalogue()[1].points.len(), 8 * 3 + 6 * 2 + 3);
        // every serial key is honoured; 255 is a board number too
        let tuned = text
            .replace(
                "path = \"/dev/ttyUSB1\"",
                "path = \"/dev/ttyUSB1\"\nbaud = 19200\nstop_bits = 2\ntimeout_ms = 300",
            )
            .replace("unit_id = 0", "unit_id = 255");
        let cfg = load(&tuned).unwrap();
        let Transport::Pop(s) = &cfg.buses[2].transport else {
            panic!()
        };
        assert_eq!((s.baud, s.stop_bits), (19200, StopBits::Two));
        assert_eq!(cfg.buses[2].timeout, Duration::from_millis(300));
        assert_eq!(cfg.devices[1].unit_id, 255);
        let err = invalid(&text.replace("unit_id = 0", "unit_id = 256"));
        assert_eq!(
            (err.key.as_str(), err.line),
            ("device[1].unit_id", line_of(&text, "unit_id = 0"))
        );
        assert!(err.message.contains("0..=255 for a pop bus"), "{err}");
        let err = invalid(&text.replace(
            "kind = \"pop\"",
            "kind = \"pop\"\naddress = \"10.0.0.1:502\"",
        ));
        assert_eq!(err.key, "bus[2].address");
    }

    #[test]
    fn a_profile_must_speak_its_bus_protocol() {
        let text = format!("{GOOD}{POP}");
        let err = invalid(&text.replace("profile = \"pop_board\"", "profile = \"generic_modbus\""));
        assert_eq!(err.key, "device[1].profile");
        assert_eq!(
            err.message,
            "profile `generic_modbus` is a modbus profile; bus `heating` does not speak modbus"
        );
        let err = invalid(&GOOD.replace("\"ouman_eh203_modbus200\"", "\"pop_board\""));
        assert_eq!(
            (err.key.as_str(), err.line),
            ("device[0].profile", line_of(GOOD, "profile = "))
        );
        assert!(
            err.message
                .contains("is a pop profile; bus `rs485` does not speak pop"),
            "{err}"
        );
    }

    #[test]
    fn inline_pop_points_are_checked_with_their_line_and_key() {
        let base = format!("{GOOD}{POP}");
        let point =
            |body: &str| format!("{base}\n[[device.point]]\nname = \"room_9_temp\"\n{body}\n");
        let cfg = load(&point("field = \"room_temp\"\nindex = 9\nunit = \"degC\"")).unwrap();
        let p = cfg.devices[1].points.last().unwrap();
        assert_eq!(p.spec.describe(), "pop room_temp 9");
        let text = point("field = \"room_temp\"\nindex = 9\naddress = 3");
        let err = invalid(&text);
        assert_eq!(err.key, "device[1].point[0].address");
        assert_eq!(err.message, "`address` does not apply to pop points");
        assert_eq!(err.line, line_of(&text, "[[device.point]]"));
        let err = invalid(&point("field = \"room_temp\""));
        assert_eq!(
            (err.key.as_str(), err.message.as_str()),
            (
                "device[1].point[0].index",
                "missing: a pop point needs `index`"
            )
        );
        let err = invalid(&point("field = \"output\"\nindex = 17"));
        assert_eq!(err.key, "device[1].point[0].index");
        let err = invalid(&point("field = \"humidity\"\nindex = 1"));
        assert!(err.message.contains("unknown variant `humidity`"), "{err}");
        let err = invalid(&point("field = \"room_temp\"\nindex = 1\nscale = 0.1"));
        assert_eq!(err.key, "device[1].point[0].scale");
    }

    #[test]
    fn a_tcp_bus_without_an_address_is_refused() {
        let err = invalid(&GOOD.replace("address = \"192.168.1.50:502\"", ""));
        assert_eq!(err.key, "bus[1].address");
    }
}
