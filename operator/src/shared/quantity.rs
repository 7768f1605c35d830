//! Kubernetes resource quantities (`512Mi`, `1.5Gi`, `250m`, `2e3`) read as numbers.
//!
//! Why here: a TradingBot's `resources` and `storage.size` are free strings in the CRD
//! schema (int-or-string), so a typo such as `1Gb` passes admission and then makes
//! every StatefulSet apply fail. The operator parses them first and reports a clear
//! `InvalidSpec` instead; the storage step compares sizes with the same parser.

/// Parses a quantity into its value in base units (bytes, cores). `None` when the text
/// is not a valid Kubernetes quantity.
pub fn parse(text: &str) -> Option<f64> {
    let t = text.trim();
    if t.is_empty() || t != text {
        return None;
    }
    let (sign, rest) = match t.as_bytes()[0] {
        b'+' => (1.0, &t[1..]),
        b'-' => (-1.0, &t[1..]),
        _ => (1.0, t),
    };
    let split = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(split);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exp if exp.starts_with(['e', 'E']) => {
            let digits = &exp[1..];
            let digits_only = digits.strip_prefix(['+', '-']).unwrap_or(digits);
            if digits_only.is_empty() || !digits_only.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            10f64.powi(digits.parse().ok()?)
        }
        _ => return None,
    };
    Some(sign * value * multiplier)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn valid_quantities() {
        assert_eq!(parse("1Gi"), Some(1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse("1024Mi"), parse("1Gi"));
        assert_eq!(parse("250m"), Some(0.25));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("1.5k"), Some(1500.0));
        assert_eq!(parse("2e3"), Some(2000.0));
    }

    #[test]
    fn typos_are_rejected() {
        for bad in [
            "", "1Gb", "abc", "1 Gi", "Gi", "1..5", "1e", "--1", " 1Gi", "1GiB",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
