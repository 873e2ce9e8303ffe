//! Byte sizes as written in scenario files: `16MiB`, `512KiB`, `1GiB`, `4096B` or a bare number of bytes.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The default `defaults.max_capture_body`: far above any JSON a request
/// captures from, small enough that a few hundred users stay within memory.
pub const DEFAULT_MAX_CAPTURE_BODY: u64 = 16 * MIB;

/// The largest size accepted: every user capturing at once keeps one body of
/// this size, so more than this would let one scenario exhaust a worker.
pub const MAX_SIZE: u64 = GIB;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// A number of bytes between 1 and [`MAX_SIZE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// Why a size was refused; shown to the user with the file, line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid size `{input}`: {reason} (expected e.g. 16MiB, 512KiB, 1GiB or a number of bytes)"
)]
pub struct SizeError {
    pub input: String,
    pub reason: &'static str,
}

impl ByteSize {
    /// Parses `<digits>[B|KiB|MiB|GiB]` (units case-insensitive, spaces allowed before the unit).
    pub fn parse(input: &str) -> Result<ByteSize, SizeError> {
        let err = |reason| SizeError {
            input: input.to_owned(),
            reason,
        };
        let s = input.trim();
        let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        if digits == 0 {
            return Err(err("expected a whole number first"));
        }
        let value: u64 = s[..digits].parse().map_err(|_| err("number too large"))?;
        let unit = s[digits..].trim();
        let scale = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" => KIB,
            "mib" => MIB,
            "gib" => GIB,
            _ => return Err(err("unknown unit (use B, KiB, MiB or GiB)")),
        };
        ByteSize::bytes(value.checked_mul(scale).ok_or_else(|| err("too large"))?).map_err(err)
    }

    /// Checks the range: at least one byte, at most [`MAX_SIZE`].
    pub fn bytes(n: u64) -> Result<ByteSize, &'static str> {
        match n {
            0 => Err("must be at least 1 byte"),
            n if n > MAX_SIZE => Err("must be at most 1GiB"),
            n => Ok(ByteSize(n)),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 16MiB, 512KiB or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ByteSize, E> {
                ByteSize::bytes(n).map_err(|reason| {
                    E::custom(SizeError {
                        input: n.to_string(),
                        reason,
                    })
                })
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
                let n = u64::try_from(n).map_err(|_| {
                    E::custom(SizeError {
                        input: n.to_string(),
                        reason: "must be at least 1 byte",
                    })
                })?;
                self.visit_u64(n)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_bytes() {
        assert_eq!(ByteSize::parse("16MiB"), Ok(ByteSize(16 * MIB)));
        assert_eq!(ByteSize::parse("512 kib"), Ok(ByteSize(512 * KIB)));
        assert_eq!(ByteSize::parse("1GiB"), Ok(ByteSize(GIB)));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        assert_eq!(ByteSize::parse("10B"), Ok(ByteSize(10)));
    }

    #[test]
    fn refusals_name_what_was_expected() {
        for bad in [
            "",
            "MiB",
            "-1",
            "1.5MiB",
            "16MB",
            "0",
            "2GiB",
            "99999999999999999999",
        ] {
            let e = ByteSize::parse(bad).expect_err(bad);
            assert!(e.to_string().contains("expected e.g. 16MiB"), "{e}");
        }
    }
}
