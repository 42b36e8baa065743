//! How figures are written: for people (a few significant digits with a
//! k/M/G/T suffix, in a width known before anything is measured) and for
//! scripts (JSON and CSV, rounded to [`SIGNIFICANT`] digits).

/// The most characters [`number`] ever writes. The table's columns are
/// sized from this before the first workload is measured, so that rows
/// printed as each workload ends stay aligned.
pub const NUMBER_WIDTH: usize = 8;

/// Significant digits kept in JSON and CSV. A figure's run-to-run noise is
/// far larger than one part in ten thousand, so more digits would be noise
/// (and binary fractions such as `0.30999899999999997` are not written).
pub const SIGNIFICANT: i32 = 4;

/// A number with three significant digits or so, with k/M/G/T suffixes;
/// never wider than [`NUMBER_WIDTH`] for a figure (figures are never
/// negative).
pub fn number(value: f64) -> String {
    let a = value.abs();
    if !a.is_finite() {
        return format!("{value}");
    }
    if a >= 1e15 {
        format!("{value:.1e}")
    } else if a >= 1e12 {
        format!("{:.2}T", value / 1e12)
    } else if a >= 1e9 {
        format!("{:.2}G", value / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", value / 1e3)
    } else if a >= 100.0 {
        format!("{value:.0}")
    } else if a >= 10.0 {
        format!("{value:.1}")
    } else if a >= 0.1 || a == 0.0 {
        format!("{value:.2}")
    } else if a >= 0.001 {
        format!("{value:.3}")
    } else if a >= 0.0001 {
        format!("{value:.4}")
    } else {
        format!("{value:.1e}")
    }
}

/// A number with its unit: `41.2 ms`, `1.25M msg/s`, `1.97×`, `yes`.
pub fn human(value: f64, unit: &str) -> String {
    let n = number(value);
    match unit {
        "×" => format!("{n}×"),
        "%" => format!("{n}%"),
        "0/1" => {
            if value >= 0.5 {
                "yes".into()
            } else {
                "no".into()
            }
        }
        _ => format!("{n} {unit}"),
    }
}

/// The most characters [`human`] writes for a figure in `unit`.
pub fn human_width(unit: &str) -> usize {
    match unit {
        "×" | "%" => NUMBER_WIDTH + 1,
        "0/1" => "yes".len(),
        _ => NUMBER_WIDTH + 1 + unit.chars().count(),
    }
}

/// `value` rounded to [`SIGNIFICANT`] significant digits, so that its
/// shortest decimal form (what JSON and CSV carry) has no more digits.
pub fn round(value: f64) -> f64 {
    if value == 0.0 || !value.is_finite() {
        return value;
    }
    let magnitude = value.abs().log10().floor() as i32;
    let shift = SIGNIFICANT - 1 - magnitude;
    // Multiplying or dividing by an exact power of ten, then dividing or
    // multiplying back, gives the double nearest the rounded decimal.
    let scale = 10f64.powi(shift.abs());
    if !scale.is_finite() {
        return value;
    }
    let rounded = if shift >= 0 {
        (value * scale).round() / scale
    } else {
        (value / scale).round() * scale
    };
    if rounded.is_finite() {
        rounded
    } else {
        value
    }
}

/// Serializes a figure rounded by [`round`] (a serde `serialize_with`).
///
/// # Errors
/// As the serializer.
pub fn serialize_rounded<S: serde::Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(round(*value))
}

/// Serializes an optional figure rounded by [`round`].
///
/// # Errors
/// As the serializer.
pub fn serialize_rounded_opt<S: serde::Serializer>(
    value: &Option<f64>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.serialize_some(&round(*v)),
        None => s.serialize_none(),
    }
}

/// Serializes figures rounded by [`round`].
///
/// # Errors
/// As the serializer.
pub fn serialize_rounded_all<S: serde::Serializer>(
    values: &[f64],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(values.iter().map(|v| round(*v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Significant digits in a decimal written by `{}`.
    fn significant(text: &str) -> usize {
        let digits: String = text.chars().filter(char::is_ascii_digit).collect();
        digits.trim_start_matches('0').trim_end_matches('0').len()
    }

    #[test]
    fn numbers_are_readable() {
        assert_eq!(number(1_234_567.0), "1.23M");
        assert_eq!(number(45_600.0), "45.6k");
        assert_eq!(number(41.23), "41.2");
        assert_eq!(number(0.5), "0.50");
        assert_eq!(number(0.0271), "0.027");
        assert_eq!(number(0.000_694), "0.0007");
        assert_eq!(number(0.000_012), "1.2e-5");
        assert_eq!(number(3.2e9), "3.20G");
        assert_eq!(human(1.0, "0/1"), "yes");
        assert_eq!(human(2.04, "µs"), "2.04 µs");
    }

    #[test]
    fn numbers_never_exceed_their_width() {
        // Every decade from 1e-12 to 1e30, with the values that round up
        // to the next format (999.5, 9999.5, …) in between.
        let mut values = vec![0.0];
        for e in -12..=30 {
            let p = 10f64.powi(e);
            for m in [1.0, 1.5, 9.99, 9.995, 9.9995, 9.99995, 9.999_999] {
                values.push(m * p);
            }
        }
        for v in values {
            let n = number(v);
            assert!(n.chars().count() <= NUMBER_WIDTH, "{v} -> {n:?}");
            for unit in ["ms", "µs", "tasks/s", "msg/s", "×", "%", "0/1"] {
                let h = human(v, unit);
                assert!(
                    h.chars().count() <= human_width(unit),
                    "{v} {unit} -> {h:?}"
                );
            }
        }
    }

    #[test]
    fn round_keeps_four_significant_digits_and_no_binary_noise() {
        assert_eq!(round(0.309_998_999_999_999_97).to_string(), "0.31");
        assert_eq!(round(77_543_210.123).to_string(), "77540000");
        assert_eq!(round(0.027_123_4).to_string(), "0.02712");
        assert_eq!(round(1.0 / 3.0).to_string(), "0.3333");
        assert_eq!(round(0.0), 0.0);
        for i in 1..2_000 {
            let v = i as f64 * 1.234_567_891 / 7.0;
            let text = round(v).to_string();
            assert!(significant(&text) <= 4, "{v} -> {text}");
        }
    }

    #[test]
    fn serialized_figures_are_rounded() {
        #[derive(serde::Serialize)]
        struct Figures {
            #[serde(serialize_with = "serialize_rounded_all")]
            samples: Vec<f64>,
            #[serde(serialize_with = "serialize_rounded_opt")]
            median: Option<f64>,
            #[serde(serialize_with = "serialize_rounded")]
            one: f64,
        }
        let json = serde_json::to_string(&Figures {
            samples: vec![0.309_998_999_999_999_97, 2.0],
            median: Some(1.0 / 3.0),
            one: 40.000_000_000_001,
        })
        .unwrap();
        assert_eq!(json, r#"{"samples":[0.31,2.0],"median":0.3333,"one":40.0}"#);
    }
}
