//! Turning a site's point catalogue into what the dashboard shows.

use protocol::PointKind;

use super::{ids::PointId, units};

/// A point as the dashboard needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PointMeta {
    /// Point id.
    pub id: PointId,
    /// Device key the point belongs to.
    pub device_key: String,
    /// Point key within its device.
    pub key: String,
    /// Human label (falls back to the key).
    pub label: Option<String>,
    /// Unit code from the profile.
    pub unit: String,
    /// Analog or binary.
    pub kind: PointKind,
    /// Suggested gauge range.
    pub display_min: Option<f64>,
    /// Suggested gauge range.
    pub display_max: Option<f64>,
    /// Binary point that means trouble when on.
    pub alarm: bool,
}

/// A gauge on the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct Gauge {
    /// Point shown.
    pub point_id: PointId,
    /// Label.
    pub label: String,
    /// Display symbol, e.g. `°C`.
    pub unit: String,
    /// Scale start.
    pub min: f64,
    /// Scale end (always greater than `min`).
    pub max: f64,
    /// Decimals to show.
    pub decimals: u8,
}

/// A lamp on the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct Lamp {
    /// Point shown.
    pub point_id: PointId,
    /// Label.
    pub label: String,
    /// Lit means alarm (red) rather than a normal state.
    pub alarm: bool,
}

/// Gauges for analog points and lamps for binary ones, in catalogue order.
pub fn layout(points: &[PointMeta]) -> (Vec<Gauge>, Vec<Lamp>) {
    let mut gauges = Vec::new();
    let mut lamps = Vec::new();
    for p in points {
        let label = p
            .label
            .clone()
            .filter(|l| !l.trim().is_empty())
            .unwrap_or_else(|| p.key.replace('_', " "));
        match p.kind {
            PointKind::Analog => {
                let (dmin, dmax) = default_range(&p.unit);
                let min = p.display_min.unwrap_or(dmin);
                let mut max = p.display_max.unwrap_or(dmax);
                if max.partial_cmp(&min) != Some(std::cmp::Ordering::Greater) {
                    max = min + 1.0;
                }
                gauges.push(Gauge {
                    point_id: p.id,
                    label,
                    unit: units::symbol(&p.unit).to_owned(),
                    min,
                    max,
                    decimals: units::decimals(&p.unit),
                });
            }
            PointKind::Binary => lamps.push(Lamp {
                point_id: p.id,
                label,
                alarm: p.alarm,
            }),
        }
    }
    (gauges, lamps)
}

/// The part of a bilingual profile label for `lang`.
///
/// Profiles label points as `"Finnish / English"` (the field's language
/// conventions of Finnish heat-pump documentation); a label without ` / ` is
/// shown as it is. Finnish viewers get the first half, everyone else the second.
pub fn localized_label<'a>(label: &'a str, lang: &str) -> &'a str {
    match label.split_once(" / ") {
        Some((fi, en)) => {
            let pick = if lang == "fi" { fi } else { en };
            let pick = pick.trim();
            if pick.is_empty() { label } else { pick }
        }
        None => label,
    }
}

fn default_range(unit: &str) -> (f64, f64) {
    match unit {
        "degC" | "°C" => (-20.0, 100.0),
        "%" | "pct" => (0.0, 100.0),
        _ => (0.0, 100.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(id: i64, key: &str, kind: PointKind) -> PointMeta {
        PointMeta {
            id: PointId(id),
            device_key: "hp".into(),
            key: key.into(),
            label: None,
            unit: if kind == PointKind::Analog {
                "degC".into()
            } else {
                String::new()
            },
            kind,
            display_min: None,
            display_max: None,
            alarm: false,
        }
    }

    #[test]
    fn analog_points_become_gauges_and_binary_points_lamps_in_order() {
        let pts = [
            point(1, "outdoor_temp", PointKind::Analog),
            point(2, "compressor_running", PointKind::Binary),
            point(3, "l1_supply_temp", PointKind::Analog),
        ];
        let (g, l) = layout(&pts);
        assert_eq!(
            g.iter().map(|g| g.point_id.0).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(l.len(), 1);
        assert_eq!(g[0].label, "outdoor temp");
        assert_eq!(g[0].unit, "°C");
    }

    #[test]
    fn a_bilingual_label_shows_the_viewers_language() {
        assert_eq!(
            localized_label("M1 Ulkolämpötila / outdoor temperature", "fi"),
            "M1 Ulkolämpötila"
        );
        assert_eq!(
            localized_label("M1 Ulkolämpötila / outdoor temperature", "en"),
            "outdoor temperature"
        );
        assert_eq!(localized_label("Heat pump", "fi"), "Heat pump");
        assert_eq!(localized_label(" / ", "fi"), " / ");
    }

    #[test]
    fn an_inverted_display_range_is_repaired() {
        let mut p = point(1, "t", PointKind::Analog);
        p.display_min = Some(50.0);
        p.display_max = Some(10.0);
        let (g, _) = layout(&[p]);
        assert!(g[0].max > g[0].min);
    }
}
