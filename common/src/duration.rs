//! Human durations as written in scenario files and on the command line: `500ms`, `10s`, `1m30s`, `2h`.

use std::time::Duration;

/// The longest duration Squall accepts anywhere (30 days): far beyond any load
/// test, and small enough that adding it to a clock reading, to another
/// capped duration or to a sum of a few million stages can never overflow.
pub const MAX: Duration = Duration::from_secs(30 * 86_400);

/// Why a duration string was refused; the message is shown to the user as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{input}`: {reason} (expected e.g. 500ms, 10s, 1m30s, 2h)")]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

/// Parses `1h2m3s4ms`-style durations; a bare number is seconds.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_owned(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    if let Ok(secs) = s.parse::<f64>() {
        return if secs.is_finite() && secs >= 0.0 {
            capped(secs).ok_or_else(|| err(TOO_LONG))
        } else {
            Err(err("must be a non-negative number"))
        };
    }
    let mut total = 0.0_f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("missing unit"))?;
        if num_len == 0 {
            return Err(err("expected a number"));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| err("expected a number"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return Err(err("unknown unit (use us, ms, s, m, h or d)")),
        };
        total += value * scale;
        // Checked per part, so a long list of parts cannot grow past the cap either.
        if !(total.is_finite() && total <= MAX.as_secs_f64()) {
            return Err(err(TOO_LONG));
        }
    }
    capped(total).ok_or_else(|| err(TOO_LONG))
}

const TOO_LONG: &str = "longer than the 30-day limit (30d)";

/// `secs` as a duration, if it is a number of seconds within [`MAX`];
/// checked before converting, because `Duration::from_secs_f64` panics past `u64::MAX` seconds.
fn capped(secs: f64) -> Option<Duration> {
    (secs.is_finite() && (0.0..=MAX.as_secs_f64()).contains(&secs))
        .then(|| Duration::from_secs_f64(secs))
}

/// Formats a duration the way a user would write it (`1m30s`, `250ms`).
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return format!("{}us", d.as_micros());
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if secs > 0 || out.is_empty() {
        out.push_str(&format!("{secs}s"));
    }
    out
}

/// serde adapter: durations in YAML as human strings (or bare seconds).
pub mod human {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => super::parse(&s.to_string()).map_err(D::Error::custom),
            Raw::Text(t) => super::parse(&t).map_err(D::Error::custom),
        }
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*d))
    }
}

/// serde adapter for `Option<Duration>`.
pub mod human_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::human")] Duration);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::human::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("1.5"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse("").is_err());
        assert!(parse("10x").is_err());
        assert!(parse("s").is_err());
        assert!(parse("-1").is_err());
    }

    #[test]
    fn refuses_durations_past_the_cap_without_panicking() {
        for s in [
            "1e20",
            "10000000000000000000",
            "18000000000000000000s",
            "200000000h",
            "31d",
            "30d1s",
            "1e308",
            "999999999999999999999999999999999999999d",
        ] {
            let e = parse(s).expect_err(s);
            assert!(e.to_string().contains("30-day limit"), "{s}: {e}");
        }
        assert_eq!(parse("30d"), Ok(MAX));
        assert_eq!(parse("720h"), Ok(MAX));
    }

    #[test]
    fn formats_round_trip() {
        for s in ["250ms", "1m30s", "2h", "10s", "1h1m1s"] {
            assert_eq!(format(parse(s).expect("valid")), s);
        }
    }
}
