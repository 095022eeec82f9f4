//! POP room-heating boards on a shared RS-485 bus
//! (`shared/reference/pop-protocol.md`).
//!
//! Four layers, pure to I/O:
//!
//! - [`codec`]: framing, `device, function, 0x80|len, data, xor checksum`,
//!   with an incremental decoder that resynchronises after noise;
//! - [`message`]: the one function table and every data layout (room blocks,
//!   outputs, clock tables, alarm inputs), with plausibility limits;
//! - [`client`]: [`PopClient`], the bus manners over a serial port: wait for
//!   a quiet line, send, wait for the reply, resend on silence, skip the
//!   keypads' traffic, reopen an unplugged adapter;
//! - [`driver`]: [`PopDriver`], the poller's [`crate::poller::BusDriver`] for
//!   POP points (`field` + `index` in a profile) with writes of setpoints and
//!   outputs, and the boards' clock tables and clocks as device timers
//!   ([`crate::devices::timer`]), so schedules can run in the boards.
//!
//! The boards share the line with wall keypads that poll them all the time,
//! so a request sent into their traffic is lost in a collision; the timing
//! rules the original system used are kept as named constants below.
//!
//! ```no_run
//! # async fn demo(bus: &agent::config::BusConfig) -> Result<(), agent::devices::pop::PopError> {
//! use agent::devices::pop::PopClient;
//! let mut client = PopClient::new(bus);
//! for room in client.read_rooms(1, 1, 8).await? {
//!     println!("room {}: {:?} °C", room.number, room.measured);
//! }
//! # Ok(()) }
//! ```

pub mod client;
pub mod codec;
pub mod driver;
pub mod message;

use std::time::Duration;

pub use client::{LineStats, PopClient, Room};
pub use driver::PopDriver;

use super::TransportError;
use crate::config::{DataBits, Parity, SerialSettings, StopBits};

/// Before sending, the line must have been quiet this long: the keypads talk
/// constantly, and a request sent into their traffic garbles both.
pub const QUIET_BEFORE_SEND: Duration = Duration::from_millis(10);
/// How long to wait for a reply after our request has left the adapter.
pub const REPLY_TIMEOUT: Duration = Duration::from_millis(200);
/// Sends of one request before giving up with a device connection error.
/// The original used 20 because collisions with keypad traffic are normal.
pub const MAX_ATTEMPTS: u32 = 20;
/// The longest one attempt waits for a quiet line. A line never quiet for
/// 10 ms in a whole second is jammed (or a device babbles); the attempt then
/// counts as failed, so a jammed bus ends in an error rather than a hang.
pub const BUSY_LIMIT: Duration = Duration::from_secs(1);
/// Silence after which a partly received frame is given up on. Much longer
/// than the 3.5 characters Modbus RTU uses, because a pty or a USB adapter
/// under load delivers bytes in bursts; it only matters when a stray byte
/// has to be shaken off the front of a reply.
pub const FRAME_GAP: Duration = Duration::from_millis(20);
/// Default line settings: 9600 baud 8N1 **[chosen]**.
pub const DEFAULT_BAUD: u32 = 9600;

/// The timing of one client, normally [`PopTiming::default`] (the constants
/// above); tests and unusual buses may change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PopTiming {
    /// See [`QUIET_BEFORE_SEND`]. Zero sends at once (no bus manners; tests use
    /// it to show what collisions look like).
    pub quiet: Duration,
    /// See [`REPLY_TIMEOUT`].
    pub reply_timeout: Duration,
    /// See [`MAX_ATTEMPTS`]; at least 1.
    pub attempts: u32,
    /// See [`BUSY_LIMIT`].
    pub busy_limit: Duration,
}

impl Default for PopTiming {
    fn default() -> Self {
        PopTiming {
            quiet: QUIET_BEFORE_SEND,
            reply_timeout: REPLY_TIMEOUT,
            attempts: MAX_ATTEMPTS,
            busy_limit: BUSY_LIMIT,
        }
    }
}

/// How a POP exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PopError {
    /// The port could not be opened, is waiting to be reopened, or failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The board never answered: the original's "Virhe laiteyhteydessä".
    #[error("device connection error: board {board} did not answer {attempts} attempts")]
    NoReply {
        /// The board asked.
        board: u8,
        /// Sends made.
        attempts: u32,
    },
    /// The request cannot be encoded (a field out of range); nothing was sent.
    #[error("request not sent: {0}")]
    Invalid(String),
}

/// Time one character takes on the line: start bit, data bits, parity bit,
/// stop bits, at `baud`.
pub fn char_time(settings: &SerialSettings) -> Duration {
    let data = match settings.data_bits {
        DataBits::Seven => 7,
        DataBits::Eight => 8,
    };
    let parity = u32::from(settings.parity != Parity::None);
    let stop = match settings.stop_bits {
        StopBits::One => 1,
        StopBits::Two => 2,
    };
    let bits = 1 + data + parity + stop;
    Duration::from_secs(u64::from(bits)) / settings.baud.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_at_9600_8n1_takes_ten_bit_times() {
        let s = SerialSettings {
            path: "x".into(),
            baud: 9600,
            parity: Parity::None,
            data_bits: DataBits::Eight,
            stop_bits: StopBits::One,
        };
        // 10 bits / 9600 baud = 1.0417 ms
        assert_eq!(char_time(&s), Duration::from_nanos(1_041_666));
        let e72 = SerialSettings {
            baud: 19200,
            parity: Parity::Even,
            data_bits: DataBits::Seven,
            stop_bits: StopBits::Two,
            ..s
        };
        // 1 + 7 + 1 + 2 = 11 bits / 19200
        assert_eq!(char_time(&e72), Duration::from_nanos(572_916));
    }
}
