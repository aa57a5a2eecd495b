//! Durations as users write them in a DataPipeline: Go-style strings such as `30s`, `5m`, `1h30m`.
//!
//! The CRD validates the shape with a CEL regex ([`DURATION_CEL`]); this parser is the
//! operator-side reading of the same grammar, so both always agree.

use std::time::Duration;

/// CEL rule the apiserver uses to refuse malformed durations before they reach the operator.
pub const DURATION_CEL: &str = "self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$')";
/// Message shown by `kubectl` when [`DURATION_CEL`] fails.
pub const DURATION_MESSAGE: &str = "must be a duration such as 500ms, 30s, 5m or 1h30m";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {input:?}: {DURATION_MESSAGE}")]
pub struct ParseDurationError {
    input: String,
}

/// Parses `1h30m`, `90s`, `1.5s`, `250ms`. Units: `ms`, `s`, `m`, `h`; an empty string is an error.
pub fn parse_duration(input: &str) -> Result<Duration, ParseDurationError> {
    let err = || ParseDurationError { input: input.to_owned() };
    let mut rest = input;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds_per_unit = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        if number.is_empty() || number.starts_with('.') || number.ends_with('.') || number.matches('.').count() > 1 {
            return Err(err());
        }
        let value: f64 = number.parse().map_err(|_| err())?;
        total = total
            .checked_add(Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|_| err())?)
            .ok_or_else(err)?;
        rest = tail;
    }
    Ok(total)
}

/// Formats a duration the way users write it (`90s` -> `1m30s`), for status and Events.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.subsec_millis());
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_users_write() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_what_the_crd_refuses() {
        for bad in ["", "5", "s", "5x", "1.s", ".5s", "1..5s", "-5s", "5 s", "1d", "5mm"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in ["1h30m", "45s", "2m", "250ms", "1h1m1s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
