//! Point fields of a PLC exchange area: which way a value travels when the
//! agent is a Modbus *slave* and a PLC is the master of the bus (see
//! [`crate::devices::slave`]).
//!
//! On a polled bus the agent reads devices and these fields are refused; on a
//! `modbus_slave` bus every point of the bank says who writes it.

use serde::Deserialize;

/// Who puts a point's value into the agent's register bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The PLC master writes it (FC05/06/0F/10): its measurements and states.
    /// Every write becomes a [`protocol::Reading`] stamped with its arrival.
    FromPlc,
    /// The agent places it in the bank for the PLC to read (setpoints, output
    /// requests). Only coils and holding registers can be `from_plc`; input
    /// registers and discrete inputs are always `to_plc`, since the master
    /// cannot write them.
    ToPlc,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::FromPlc => "from_plc",
            Direction::ToPlc => "to_plc",
        })
    }
}
