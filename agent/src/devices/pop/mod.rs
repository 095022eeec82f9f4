//! POP room-heating boards on a shared RS-485 bus
//! (`shared/reference/pop-protocol.md`).
//!
//! - [`codec`]: framing, `device, function, 0x80|len, data, xor checksum`,
//!   with an incremental decoder that resynchronises after noise;
//! - [`message`]: the one function table and every data layout (room blocks,
//!   outputs, clock tables, alarm inputs), with plausibility limits.

pub mod codec;
pub mod message;
