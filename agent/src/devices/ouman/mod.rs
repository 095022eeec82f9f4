//! The Ouman EH-203 native serial protocol: the controller's own RS-232 port,
//! 4800 baud 8N1, one request and one reply at a time
//! (shared/reference/device-protocols.md §1.3).
//!
//! [`codec`] frames and checksums requests and replies (pure, no I/O); the
//! points they carry are described in [`crate::registers::ouman`].

pub mod codec;
