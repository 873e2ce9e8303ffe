//! Arrival and spawn rates as written by users: `500/s`, `30/m`, `2/h` or a bare number per second.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};

/// Iterations per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
}

/// Why a rate string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate `{0}` (expected e.g. 500/s, 30/m, 2/h or a number per second)")]
pub struct RateError(pub String);

impl Rate {
    pub fn parse(input: &str) -> Result<Rate, RateError> {
        let err = || RateError(input.to_owned());
        let s = input.trim();
        let (num, per) = match s.split_once('/') {
            Some((n, unit)) => {
                let per = match unit.trim() {
                    "s" | "sec" | "second" => 1.0,
                    "m" | "min" | "minute" => 60.0,
                    "h" | "hour" => 3600.0,
                    _ => return Err(err()),
                };
                (n.trim(), per)
            }
            None => (s, 1.0),
        };
        let n: f64 = num.parse().map_err(|_| err())?;
        if !(n.is_finite() && n > 0.0) {
            return Err(err());
        }
        Ok(Rate {
            per_second: n / per,
        })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/s", self.per_second)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Rate::parse(&n.to_string()).map_err(D::Error::custom),
            Raw::Text(t) => Rate::parse(&t).map_err(D::Error::custom),
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        assert_eq!(Rate::parse("500/s").map(|r| r.per_second), Ok(500.0));
        assert_eq!(Rate::parse("30/m").map(|r| r.per_second), Ok(0.5));
        assert_eq!(Rate::parse("7200/h").map(|r| r.per_second), Ok(2.0));
        assert_eq!(Rate::parse("12").map(|r| r.per_second), Ok(12.0));
        assert!(Rate::parse("0/s").is_err());
        assert!(Rate::parse("5/fortnight").is_err());
        assert!(Rate::parse("abc").is_err());
    }
}
