//! POP points (pure): which value of a room-heating board a point is.
//!
//! A POP point names a `field` and an `index` (from 1, as the keypad counts):
//!
//! | `field` | `index` | value | writable as |
//! |---|---|---|---|
//! | `room_temp` | room | measured °C | — |
//! | `floor_setpoint` | room | °C | a new setpoint, 0.1 °C steps |
//! | `ceiling_setpoint` | room | °C | a new setpoint, 0.1 °C steps |
//! | `output` | output 1..=16 | 1 on, 0 off | 1 / 0: on / off by hand |
//! | `output_manual` | output 1..=16 | 1 set by hand, 0 following its clock table | 0: back to the clock table; 1: keep the present state by hand |
//! | `alarm` | alarm input 1..=16 | 1 active | — |
//!
//! Values are in °C and on/off as the boards report them, so `scale` and
//! `offset` do not apply; Modbus fields are refused in a POP profile.

use serde::Deserialize;

use crate::devices::pop::message::{MAX_ALARM_INPUTS, MAX_OUTPUTS, TempKind};

/// What a POP point reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PopField {
    /// A room's measured temperature.
    RoomTemp,
    /// A room's floor-heating setpoint.
    FloorSetpoint,
    /// A room's ceiling-heating setpoint.
    CeilingSetpoint,
    /// An output's on/off state.
    Output,
    /// Whether an output is set by hand (1) or follows its clock table (0).
    OutputManual,
    /// An alarm input.
    Alarm,
}

impl PopField {
    /// The room temperature this field reads, for room fields.
    pub fn temp_kind(self) -> Option<TempKind> {
        match self {
            PopField::RoomTemp => Some(TempKind::Measured),
            PopField::FloorSetpoint => Some(TempKind::Floor),
            PopField::CeilingSetpoint => Some(TempKind::Ceiling),
            _ => None,
        }
    }

    /// On/off values (lamps) rather than temperatures.
    pub fn is_binary(self) -> bool {
        self.temp_kind().is_none()
    }

    /// The name used in profiles.
    pub fn name(self) -> &'static str {
        match self {
            PopField::RoomTemp => "room_temp",
            PopField::FloorSetpoint => "floor_setpoint",
            PopField::CeilingSetpoint => "ceiling_setpoint",
            PopField::Output => "output",
            PopField::OutputManual => "output_manual",
            PopField::Alarm => "alarm",
        }
    }

    /// The indices this field can have.
    pub fn index_range(self) -> std::ops::RangeInclusive<u16> {
        match self {
            PopField::RoomTemp | PopField::FloorSetpoint | PopField::CeilingSetpoint => 1..=255,
            PopField::Output | PopField::OutputManual => 1..=u16::from(MAX_OUTPUTS),
            PopField::Alarm => 1..=u16::from(MAX_ALARM_INPUTS),
        }
    }
}

/// Where a POP point lives on its board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PopSpec {
    /// What it reads.
    pub field: PopField,
    /// Room, output or alarm input number, from 1.
    pub index: u8,
}

impl PopSpec {
    /// Check `index` for `field`; the error is a sentence for the `index` key.
    pub fn new(field: PopField, index: u16) -> Result<PopSpec, String> {
        let range = field.index_range();
        if !range.contains(&index) {
            return Err(format!(
                "index {index} is outside {}..={} for a `{}` point",
                range.start(),
                range.end(),
                field.name()
            ));
        }
        // The range above lies within 1..=255.
        Ok(PopSpec {
            field,
            index: u8::try_from(index).unwrap_or(u8::MAX),
        })
    }

    /// e.g. `pop floor_setpoint 3`.
    pub fn describe(&self) -> String {
        format!("pop {} {}", self.field.name(), self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_checked_per_field() {
        assert_eq!(
            PopSpec::new(PopField::RoomTemp, 32),
            Ok(PopSpec {
                field: PopField::RoomTemp,
                index: 32
            })
        );
        assert!(PopSpec::new(PopField::RoomTemp, 0).is_err());
        assert!(PopSpec::new(PopField::FloorSetpoint, 256).is_err());
        assert!(PopSpec::new(PopField::Output, 16).is_ok());
        let e = PopSpec::new(PopField::Output, 17).unwrap_err();
        assert_eq!(e, "index 17 is outside 1..=16 for a `output` point");
        assert!(PopSpec::new(PopField::Alarm, 17).is_err());
    }

    #[test]
    fn outputs_and_alarms_are_lamps() {
        assert!(PopField::Alarm.is_binary() && PopField::OutputManual.is_binary());
        assert!(!PopField::CeilingSetpoint.is_binary());
        assert_eq!(PopField::RoomTemp.temp_kind(), Some(TempKind::Measured));
    }
}
