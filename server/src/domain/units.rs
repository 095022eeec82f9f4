//! Engineering units as they are shown to people.

/// The display symbol for a unit code from a device profile.
pub fn symbol(unit: &str) -> &str {
    match unit {
        "degC" | "°C" | "C" => "°C",
        "degF" => "°F",
        "K" => "K",
        "pct" | "%" => "%",
        "kWh" => "kWh",
        "W" => "W",
        "kW" => "kW",
        "bar" => "bar",
        "h" => "h",
        other => other,
    }
}

/// Decimals worth showing for a unit.
pub fn decimals(unit: &str) -> u8 {
    match unit {
        "degC" | "°C" | "degF" | "K" | "bar" => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn celsius_code_is_shown_with_degree_sign() {
        assert_eq!(symbol("degC"), "°C");
        assert_eq!(decimals("degC"), 1);
        assert_eq!(symbol("m3/h"), "m3/h");
    }
}
