//! Durations as users write them in a `DataPipeline`: Go-style strings such as `500ms`, `30s`,
//! `5m`, `1h30m`, and the bounds the runtime honours.
//!
//! The CRD checks the shape with a CEL regex ([`DURATION_CEL`]) and the bounds with CEL's own
//! `duration()` (Kubernetes CEL library, which parses the same strings); the operator and the
//! runner parse with [`parse_duration`] and check with the same bounds, so a value the apiserver
//! accepts is one the runtime can honour, and the other way round.

use std::time::Duration;

/// CEL rule for the shape of a duration field: one or more `<number><unit>` with units `ms`,
/// `s`, `m`, `h` (a subset of Go's `time.ParseDuration`, which CEL's `duration()` uses).
pub const DURATION_CEL: &str = "self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$')";
/// Message shown by `kubectl` when [`DURATION_CEL`] fails.
pub const DURATION_MESSAGE: &str = "must be a duration such as 500ms, 30s, 5m or 1h30m";
/// Longest string a duration field accepts; keeps the CEL cost estimate bounded.
pub const MAX_DURATION_LENGTH: usize = 32;

// The bound rules below only evaluate `duration()` on strings of the right shape (CEL's `||`
// absorbs the error on the right when the left is true), so a malformed value gets only the
// shape message. `cel_constants_match_the_rust_limits` keeps their literals equal to the Rust
// constants.

/// Longest duration any field accepts.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// CEL for [`MAX_DURATION`].
pub const MAX_DURATION_CEL: &str =
    "!self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') || duration(self) <= duration('168h')";
pub const MAX_DURATION_MESSAGE: &str = "must be at most 168h";

/// Shortest work lease: a worker renews it every third of it, and must be able to.
pub const MIN_LEASE_DURATION: Duration = Duration::from_secs(5);
pub const MIN_LEASE_DURATION_CEL: &str =
    "!self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') || duration(self) >= duration('5s')";
pub const MIN_LEASE_DURATION_MESSAGE: &str = "leaseDuration must be at least 5s";

/// A transform timeout must be positive: the runner kills the command after it.
pub const POSITIVE_CEL: &str =
    "!self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') || duration(self) > duration('0s')";
pub const POSITIVE_MESSAGE: &str = "timeout must be longer than 0s";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("invalid duration {0:?}: {DURATION_MESSAGE}")]
    Syntax(String),
    #[error("{0:?} is longer than the maximum of 168h")]
    TooLong(String),
    #[error("{0:?} must be longer than 0s")]
    NotPositive(String),
    #[error("{0:?} is shorter than the minimum of 5s")]
    TooShort(String),
}

/// Parses `1h30m`, `90s`, `1.5s`, `250ms`. Units: `ms`, `s`, `m`, `h`; an empty string is an
/// error. Exact to the nanosecond for the forms users write (no float rounding of integers).
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = || DurationError::Syntax(input.to_owned());
    if input.is_empty() || input.len() > MAX_DURATION_LENGTH {
        return Err(err());
    }
    let mut rest = input;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per_unit: u128 = match unit {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(err()),
        };
        let (whole, fraction) = match number.split_once('.') {
            Some((w, f)) if !w.is_empty() && !f.is_empty() && !f.contains('.') => (w, f),
            None if !number.is_empty() => (number, ""),
            _ => return Err(err()),
        };
        let whole: u128 = whole.parse().map_err(|_| err())?;
        // Digits beyond nanoseconds are dropped, as Go does.
        let mut nanos = whole.checked_mul(nanos_per_unit).ok_or_else(err)?;
        let mut scale = nanos_per_unit;
        for digit in fraction.bytes() {
            scale /= 10;
            nanos = nanos.checked_add(u128::from(digit - b'0') * scale).ok_or_else(err)?;
        }
        let part = Duration::from_nanos(u64::try_from(nanos).map_err(|_| err())?);
        total = total.checked_add(part).ok_or_else(err)?;
        rest = tail;
    }
    Ok(total)
}

/// [`parse_duration`] within `[0, MAX_DURATION]`.
pub fn parse_bounded(input: &str) -> Result<Duration, DurationError> {
    let parsed = parse_duration(input)?;
    if parsed > MAX_DURATION {
        return Err(DurationError::TooLong(input.to_owned()));
    }
    Ok(parsed)
}

/// A transform timeout: within `(0, MAX_DURATION]`.
pub fn parse_timeout(input: &str) -> Result<Duration, DurationError> {
    let parsed = parse_bounded(input)?;
    if parsed.is_zero() {
        return Err(DurationError::NotPositive(input.to_owned()));
    }
    Ok(parsed)
}

/// A work lease duration: within `[MIN_LEASE_DURATION, MAX_DURATION]`.
pub fn parse_lease_duration(input: &str) -> Result<Duration, DurationError> {
    let parsed = parse_bounded(input)?;
    if parsed < MIN_LEASE_DURATION {
        return Err(DurationError::TooShort(input.to_owned()));
    }
    Ok(parsed)
}

/// Formats a duration the way users write it (`90s` -> `1m30s`, `1500ms` -> `1.5s`), exactly:
/// `parse_duration(&format_duration(d)) == d` for every whole number of milliseconds.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    let millis = d.subsec_millis();
    if secs == 0 {
        return format!("{millis}ms");
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    match (secs, millis) {
        (0, 0) => {}
        (s, 0) => out.push_str(&format!("{s}s")),
        (s, ms) => out.push_str(&format!("{s}.{}s", format!("{ms:03}").trim_end_matches('0'))),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_forms_users_write() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.1s"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_what_the_crd_refuses() {
        for bad in ["", "5", "s", "5x", "1.s", ".5s", "1..5s", "-5s", "5 s", "1d", "5mm", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse_duration(&"1s".repeat(17)).is_err(), "longer than the CRD's maxLength");
    }

    #[test]
    fn bounds_are_the_runtimes() {
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)), "sub-second timeouts are honoured");
        assert_eq!(parse_timeout("0s"), Err(DurationError::NotPositive("0s".into())));
        assert_eq!(parse_timeout("0ms"), Err(DurationError::NotPositive("0ms".into())));
        assert_eq!(parse_timeout("169h"), Err(DurationError::TooLong("169h".into())));
        assert_eq!(parse_bounded("168h"), Ok(MAX_DURATION));
        assert_eq!(parse_lease_duration("4.9s"), Err(DurationError::TooShort("4.9s".into())));
        assert_eq!(parse_lease_duration("5s"), Ok(MIN_LEASE_DURATION));
    }

    #[test]
    fn cel_bounds_check_only_well_formed_values() {
        for rule in [MAX_DURATION_CEL, MIN_LEASE_DURATION_CEL, POSITIVE_CEL] {
            let shape = DURATION_CEL.to_owned();
            assert!(rule.starts_with(&format!("!{shape} || ")), "{rule}");
        }
    }

    #[test]
    fn cel_constants_match_the_rust_limits() {
        let quoted = |cel: &str| {
            let start = cel.rfind("duration('").map(|i| i + "duration('".len()).expect("a literal");
            let end = cel[start..].find('\'').expect("closing quote") + start;
            parse_duration(&cel[start..end]).expect("the literal parses")
        };
        assert_eq!(quoted(MAX_DURATION_CEL), MAX_DURATION);
        assert_eq!(quoted(MIN_LEASE_DURATION_CEL), MIN_LEASE_DURATION);
        assert_eq!(quoted(POSITIVE_CEL), Duration::ZERO);
    }

    #[test]
    fn formats_the_way_users_write() {
        for s in ["1h30m", "45s", "2m", "250ms", "1h1m1s", "1.5s", "2m0.25s"] {
            assert_eq!(format_duration(parse_duration(s).expect("parses")), s);
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }

    proptest! {
        #[test]
        fn formatting_round_trips_milliseconds(ms in 0u64..(7 * 24 * 3600 * 1000)) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_duration(&s);
        }
    }
}
