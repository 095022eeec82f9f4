//! Wire types spoken between a site's agent and the central server.
//!
//! The agent opens a WebSocket to the server (`GET /agent/v1/ws`) and
//! authenticates in the upgrade request with `Authorization: Bearer
//! <agent_id>.<secret>`. Every WebSocket text frame carries one JSON message:
//! [`AgentToServer`] upward, [`ServerToAgent`] downward. Both are tagged with a
//! `type` field in snake_case.
//!
//! A session goes like this:
//!
//! 1. agent → [`AgentToServer::Hello`]: protocol version and the catalogue of
//!    devices and points the agent measures (from its local configuration);
//! 2. server → [`ServerToAgent::Welcome`] (or [`ServerToAgent::Error`] with
//!    [`ErrorCode::UnsupportedVersion`] and the connection is closed);
//! 3. agent → [`AgentToServer::Readings`] batches, each with a per-agent `seq`;
//!    server → [`ServerToAgent::Ack`] once that batch is committed. Re-sending a
//!    batch is safe: the server stores each `(point, ts)` once.
//!
//! Evolution is additive: new fields are `Option`/`#[serde(default)]`, and
//! receivers map unknown message types to `Unknown` so an old agent survives a
//! newer server and vice versa.
//!
//! ```
//! use protocol::{AgentToServer, Quality, Reading, ReadingsBatch};
//! let msg = AgentToServer::Readings(ReadingsBatch {
//!     seq: 7,
//!     readings: vec![Reading {
//!         device: "heatpump".into(),
//!         point: "outdoor_temp".into(),
//!         ts: time::macros::datetime!(2026-11-21 12:00 UTC),
//!         value: -3.5,
//!         unit: "degC".into(),
//!         quality: Quality::Good,
//!     }],
//! });
//! let json = msg.to_json().unwrap();
//! assert_eq!(AgentToServer::from_json(&json).unwrap(), msg);
//! ```

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub mod control;

pub use control::{
    ActionInfo, Command, CommandOutcome, CommandResult, ControlKind, ControlRequest, ControlSource,
    ControlState, Envelope, ExceptionDay, Period, WeeklySchedule, WritableInfo,
};

/// The protocol version this crate speaks. A server accepts agents whose
/// version is in [`MIN_SUPPORTED_VERSION`]`..=`[`PROTOCOL_VERSION`].
pub const PROTOCOL_VERSION: u32 = 1;
/// The oldest agent protocol version the server still accepts.
pub const MIN_SUPPORTED_VERSION: u32 = 1;
/// Largest text frame either side accepts, in bytes. A batch is split by the
/// agent well below this.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Most readings one [`ReadingsBatch`] may carry.
pub const MAX_READINGS_PER_BATCH: usize = 5_000;

/// Messages from the agent to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentToServer {
    /// First message of every session.
    Hello(Hello),
    /// A batch of readings that must be acknowledged.
    Readings(ReadingsBatch),
    /// The communication state of one device changed (or a periodic refresh).
    DeviceStatus(DeviceStatus),
    /// The agent's own state: its buffer and link (sent periodically).
    AgentStatus(AgentStatus),
    /// The agent's answer to a [`Command`].
    CommandResult(CommandResult),
    /// The control state of one writable point (on change, and after hello).
    ControlState(ControlState),
    /// Anything this version does not know; ignored by the receiver.
    #[serde(other)]
    Unknown,
}

/// Messages from the server to the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerToAgent {
    /// The handshake was accepted.
    Welcome(Welcome),
    /// The batch with this `seq` is committed; the agent may forget it.
    Ack(Ack),
    /// Something the agent sent was refused.
    Error(ErrorReply),
    /// Change something at the site; the agent answers with a
    /// [`AgentToServer::CommandResult`].
    Command(Command),
    /// Anything this version does not know; ignored by the receiver.
    #[serde(other)]
    Unknown,
}

/// The agent's opening message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The agent id the server issued (also present in the bearer token).
    pub agent_id: uuid::Uuid,
    /// Protocol version the agent speaks.
    pub version: u32,
    /// Feature flags, e.g. `"readings"`, `"device_status"`.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Free-form software version of the agent, for the fleet view.
    #[serde(default)]
    pub software: Option<String>,
    /// Devices and points this agent measures, from its local configuration.
    #[serde(default)]
    pub devices: Vec<DeviceInfo>,
    /// What commands the agent accepts (its local safety envelope); `None`
    /// from agents without remote control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<Envelope>,
}

/// One field device as configured at the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Stable key from the agent config (`[[device]] key = "heatpump"`).
    pub key: String,
    /// Human label, e.g. "Lämpöpumppu".
    #[serde(default)]
    pub label: Option<String>,
    /// Profile id the device uses, e.g. `ouman_eh203_modbus200`.
    #[serde(default)]
    pub profile: Option<String>,
    /// Points in the order they should be shown.
    #[serde(default)]
    pub points: Vec<PointInfo>,
}

/// One measured point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointInfo {
    /// Key unique within the device, e.g. `outdoor_temp`.
    pub key: String,
    /// Human label.
    #[serde(default)]
    pub label: Option<String>,
    /// Engineering unit, e.g. `degC`, `%`, `` (empty for none).
    #[serde(default)]
    pub unit: String,
    /// Analog value or on/off state.
    pub kind: PointKind,
    /// Suggested display range for a gauge (engineering units).
    #[serde(default)]
    pub display_min: Option<f64>,
    /// Suggested display range for a gauge (engineering units).
    #[serde(default)]
    pub display_max: Option<f64>,
    /// True when this point signals an alarm when on (lamp shown red).
    #[serde(default)]
    pub alarm: bool,
}

/// Whether a point is a number or a two-state value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointKind {
    /// A measured number (temperature, percentage, counter).
    Analog,
    /// On/off; carried as `0.0` or `1.0` in [`Reading::value`].
    Binary,
}

/// The server accepted the handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// Protocol version the server will speak in this session.
    pub version: u32,
    /// The site this agent belongs to.
    pub site_id: uuid::Uuid,
    /// The highest batch `seq` the server has committed for this agent, if any.
    /// The agent may drop buffered batches up to and including it.
    #[serde(default)]
    pub last_acked_seq: Option<u64>,
}

/// A batch of readings with its per-agent sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingsBatch {
    /// Monotonic per agent; survives agent restarts.
    pub seq: u64,
    /// At most [`MAX_READINGS_PER_BATCH`] readings.
    pub readings: Vec<Reading>,
}

/// One sampled value of one point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Device key.
    pub device: String,
    /// Point key within the device.
    pub point: String,
    /// Sample time, UTC, RFC 3339 on the wire.
    #[serde(with = "time::serde::rfc3339")]
    pub ts: OffsetDateTime,
    /// Engineering value; binary points carry 0.0 or 1.0.
    pub value: f64,
    /// Unit of `value` (same as the catalogue's).
    #[serde(default)]
    pub unit: String,
    /// How much the value can be trusted.
    #[serde(default)]
    pub quality: Quality,
}

/// Quality of a reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Freshly read from the device.
    #[default]
    Good,
    /// The last good value repeated; the device did not answer this time.
    Stale,
    /// The device could not be read; `value` is meaningless.
    CommError,
}

impl Quality {
    /// Stable small integer for storage.
    pub fn as_i16(self) -> i16 {
        match self {
            Quality::Good => 0,
            Quality::Stale => 1,
            Quality::CommError => 2,
        }
    }

    /// Inverse of [`Quality::as_i16`]; unknown codes read as `CommError`.
    pub fn from_i16(code: i16) -> Self {
        match code {
            0 => Quality::Good,
            1 => Quality::Stale,
            _ => Quality::CommError,
        }
    }
}

/// Communication state of one device, as the agent's poller sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// Device key.
    pub device: String,
    /// True when the last poll succeeded.
    pub online: bool,
    /// Time of the last successful read.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_ok: Option<OffsetDateTime>,
    /// Last error, human readable (no secrets).
    #[serde(default)]
    pub last_error: Option<String>,
    /// Consecutive failed polls.
    #[serde(default)]
    pub consecutive_failures: u32,
}

/// The agent's store-and-forward state, for the fleet view and metrics.
/// Additive in protocol version 1: older servers ignore it as `Unknown`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Readings waiting in the on-disk buffer (not yet acknowledged).
    pub buffered_readings: u64,
    /// Bytes the buffer occupies on disk.
    pub buffered_bytes: u64,
    /// Sample time of the oldest unacknowledged reading.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub oldest_unsent: Option<OffsetDateTime>,
    /// Readings thinned away (kept one per interval) because the buffer was full, since install.
    #[serde(default)]
    pub thinned_total: u64,
    /// Readings dropped because the buffer was full, since install.
    #[serde(default)]
    pub dropped_total: u64,
    /// Highest batch seq the server acknowledged.
    #[serde(default)]
    pub last_acked_seq: Option<u64>,
}

/// Acknowledgement of a committed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The `seq` of the committed batch.
    pub seq: u64,
}

/// A refusal with a stable, machine-readable code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What went wrong.
    pub code: ErrorCode,
    /// A sentence for the log; never contains server internals.
    pub message: String,
    /// The batch this refers to, when it refers to one.
    #[serde(default)]
    pub seq: Option<u64>,
}

/// Stable error codes of the agent link and the JSON API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The agent speaks a protocol version the server cannot.
    UnsupportedVersion,
    /// The message was not valid JSON or not a known shape.
    MalformedMessage,
    /// A message other than `hello` came before the handshake.
    HelloRequired,
    /// The batch was too large or had an invalid field.
    InvalidBatch,
    /// The server could not store the batch now (e.g. database down); resend later.
    TemporarilyUnavailable,
    /// The agent id in the hello does not match the authenticated agent.
    AgentMismatch,
    /// Any code this version does not know.
    #[serde(other)]
    Unknown,
}

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The frame is larger than [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not JSON, or JSON of the wrong shape.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
}

macro_rules! json_codec {
    ($t:ty) => {
        impl $t {
            /// Serialize to one JSON text frame.
            pub fn to_json(&self) -> Result<String, serde_json::Error> {
                serde_json::to_string(self)
            }

            /// Parse one JSON text frame, refusing frames over [`MAX_FRAME_BYTES`].
            pub fn from_json(text: &str) -> Result<Self, DecodeError> {
                if text.len() > MAX_FRAME_BYTES {
                    return Err(DecodeError::TooLarge(text.len()));
                }
                Ok(serde_json::from_str(text)?)
            }
        }
    };
}
json_codec!(AgentToServer);
json_codec!(ServerToAgent);

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn unknown_message_type_parses_as_unknown() {
        let m = AgentToServer::from_json(r#"{"type":"telemetry_v9","x":1}"#).unwrap();
        assert_eq!(m, AgentToServer::Unknown);
        let m = ServerToAgent::from_json(r#"{"type":"reboot_now"}"#).unwrap();
        assert_eq!(m, ServerToAgent::Unknown);
    }

    #[test]
    fn unknown_error_code_parses_as_unknown() {
        let m =
            ServerToAgent::from_json(r#"{"type":"error","code":"quota_exceeded","message":"x"}"#)
                .unwrap();
        assert!(matches!(
            m,
            ServerToAgent::Error(ErrorReply {
                code: ErrorCode::Unknown,
                ..
            })
        ));
    }

    #[test]
    fn missing_type_is_malformed() {
        assert!(matches!(
            AgentToServer::from_json(r#"{"seq":1}"#),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_frame_is_refused_before_parsing() {
        let big = "x".repeat(MAX_FRAME_BYTES + 1);
        assert!(matches!(
            AgentToServer::from_json(&big),
            Err(DecodeError::TooLarge(_))
        ));
    }

    #[test]
    fn quality_code_round_trips() {
        for q in [Quality::Good, Quality::Stale, Quality::CommError] {
            assert_eq!(Quality::from_i16(q.as_i16()), q);
        }
    }

    #[test]
    fn reading_timestamps_are_rfc3339_utc() {
        let r = Reading {
            device: "d".into(),
            point: "p".into(),
            ts: datetime!(2026-03-29 01:00:00.5 UTC),
            value: 1.0,
            unit: String::new(),
            quality: Quality::Good,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""ts":"2026-03-29T01:00:00.5Z""#), "{json}");
    }

    proptest::proptest! {
        #[test]
        fn readings_batch_round_trips(seq in proptest::num::u64::ANY, v in -1e9f64..1e9, secs in 0i64..4_000_000_000) {
            let msg = AgentToServer::Readings(ReadingsBatch { seq, readings: vec![Reading {
                device: "hp".into(), point: "t".into(),
                ts: OffsetDateTime::from_unix_timestamp(secs).unwrap(),
                value: v, unit: "degC".into(), quality: Quality::Stale }]});
            let back = AgentToServer::from_json(&msg.to_json().unwrap()).unwrap();
            proptest::prop_assert_eq!(back, msg);
        }

        #[test]
        fn arbitrary_text_never_panics(s in ".{0,200}") {
            let _ = AgentToServer::from_json(&s);
            let _ = ServerToAgent::from_json(&s);
        }
    }
}
