//! Docker's units: durations (`1m30s`, `500ms`), byte sizes (`512m`, `1g`), CPU counts
//! (`1.5`), and `KEY=VALUE` environment entries.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("invalid duration {0:?}: use a number with a unit, e.g. 30s, 1m30s, 500ms, 2h")]
    Duration(String),
    #[error("invalid size {0:?}: use a number with an optional unit b, k, m or g, e.g. 512m")]
    Size(String),
    #[error("invalid CPU count {0:?}: use a positive number such as 0.5 or 2")]
    Cpus(String),
}

/// Parses a Go-style duration: a sequence of number+unit (`h`, `m`, `s`, `ms`, `us`, `ns`).
/// A bare number is seconds, as docker's CLI accepts for `--stop-timeout`-like flags.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let err = || UnitError::Duration(s.to_owned());
    let t = s.trim();
    if t.is_empty() {
        return Err(err());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
        let (num, after) = rest.split_at(num_end);
        let value: f64 = num.parse().map_err(|_| err())?;
        let unit_end = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let nanos_per = match unit {
            "h" => 3_600e9,
            "m" => 60e9,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" => 1e3,
            "ns" => 1.0,
            _ => return Err(err()),
        };
        let nanos = value * nanos_per;
        if !nanos.is_finite() || !(0.0..=1e18).contains(&nanos) {
            return Err(err());
        }
        total = total.checked_add(Duration::from_nanos(nanos as u64)).ok_or_else(err)?;
        rest = next;
    }
    Ok(total)
}

/// Parses a size with docker's binary units: `512m` = 512 MiB. Case-insensitive, optional `b`
/// after the unit (`512mb`).
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let err = || UnitError::Size(s.to_owned());
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').filter(|r| r.ends_with(['k', 'm', 'g', 't'])).map(str::to_owned).unwrap_or(t);
    let (num, mult) = match t.chars().last().ok_or_else(err)? {
        'b' => (&t[..t.len() - 1], 1u64),
        'k' => (&t[..t.len() - 1], 1 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        't' => (&t[..t.len() - 1], 1 << 40),
        c if c.is_ascii_digit() => (&t[..], 1),
        _ => return Err(err()),
    };
    let value: f64 = num.parse().map_err(|_| err())?;
    if !value.is_finite() || value < 0.0 {
        return Err(err());
    }
    let bytes = value * mult as f64;
    if bytes > u64::MAX as f64 / 2.0 {
        return Err(err());
    }
    Ok(bytes as u64)
}

/// Parses `--cpus`: a positive decimal, kept as millicpus.
pub fn parse_cpus(s: &str) -> Result<u64, UnitError> {
    let v: f64 = s.trim().parse().map_err(|_| UnitError::Cpus(s.to_owned()))?;
    if !v.is_finite() || v <= 0.0 || v > 1024.0 {
        return Err(UnitError::Cpus(s.to_owned()));
    }
    Ok((v * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        for bad in ["", "s", "10x", "-1s", "1e400s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("64mb").unwrap(), 64 << 20);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("10b").unwrap(), 10);
        for bad in ["", "m", "12q", "-5m"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("1.5").unwrap(), 1500);
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("abc").is_err());
    }

    proptest! {
        #[test]
        fn duration_roundtrip(s in 0u64..100_000, ms in 0u64..1000) {
            let text = format!("{s}s{ms}ms");
            prop_assert_eq!(parse_duration(&text).unwrap(), Duration::from_secs(s) + Duration::from_millis(ms));
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,20}") {
            let _ = parse_duration(&s);
            let _ = parse_size(&s);
            let _ = parse_cpus(&s);
        }
    }
}
