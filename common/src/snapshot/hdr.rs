//! HDR histograms in Squall's one layout (µs, 1 µs to 60 s, 3 significant digits): encoding, bounded decoding and the coordinator's running sums.
//!
//! Histogram bytes arrive from workers, so nothing here trusts a length or an
//! index it reads: the header must describe Squall's own layout, the payload
//! must be exactly as long as the header says, and every count must land
//! inside the layout's index range. Nothing is allocated from a length read off
//! the wire (the hdrhistogram crate's own decoder resizes its buffer to the
//! header's payload length first, so 40 bytes could cost 4 GiB).

use std::io::Read;
use std::sync::OnceLock;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer, V2Serializer};

/// Highest trackable latency, in microseconds (60 s); longer values are clamped.
pub const MAX_MICROS: u64 = 60_000_000;
/// Significant digits of every Squall histogram.
const DIGITS: u32 = 3;

/// Why histogram bytes could not be encoded, decoded or merged.
#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    #[error("HDR histogram truncated: expected at least {expected} bytes, got {got}")]
    Truncated { expected: usize, got: usize },
    #[error(
        "not Squall's HDR layout: expected V2 cookie {V2_COOKIE:#x} (uncompressed), normalizing offset 0, \
         {DIGITS} significant digits, 1 to {MAX_MICROS} µs and ratio 1.0; got cookie {cookie:#x}, offset {offset}, \
         {digits} digits, {lowest} to {highest} µs"
    )]
    Layout {
        cookie: u32,
        offset: u32,
        digits: u32,
        lowest: u64,
        highest: u64,
    },
    #[error("HDR payload is {got} bytes but its header says {expected}")]
    Length { expected: usize, got: usize },
    #[error("HDR histogram larger than Squall's layout allows: more than {max} bytes")]
    TooLarge { max: usize },
    #[error("corrupt HDR counts: {0}")]
    Counts(&'static str),
    #[error("cannot inflate HDR histogram: {0}")]
    Inflate(String),
    #[error("cannot encode HDR histogram: {0}")]
    Encode(String),
    #[error("cannot merge HDR histograms: {0}")]
    Merge(String),
}

/// A new, empty latency histogram with Squall's bounds.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants known to be valid: 1 <= low, high >= 2 * low, sigfig <= 5.
    Histogram::new_with_bounds(1, MAX_MICROS, DIGITS as u8)
        .expect("constant histogram bounds are valid")
}

/// Records one value in microseconds, clamped into the trackable range.
pub fn record_micros(h: &mut Histogram<u64>, micros: u64) {
    // Clamped into [1, MAX_MICROS], which the histogram always accepts.
    let _ = h.record(micros.clamp(1, MAX_MICROS));
}

/// HDR V2 bytes (the compact wire form).
pub fn encode_v2(h: &Histogram<u64>) -> Result<Vec<u8>, HistogramError> {
    let mut out = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut out)
        .map_err(|e| HistogramError::Encode(format!("{e:?}")))?;
    Ok(out)
}

/// HDR V2 + deflate bytes (the report form, compatible with other HDR tools).
pub fn encode_v2_deflate(h: &Histogram<u64>) -> Result<Vec<u8>, HistogramError> {
    let mut out = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut out)
        .map_err(|e| HistogramError::Encode(format!("{e:?}")))?;
    Ok(out)
}

/// Decodes V2 or V2+deflate bytes in Squall's layout; empty input is an empty histogram.
///
/// Inflating stops at the largest V2 encoding the layout allows
/// ([`max_v2_bytes`]), so a small deflate bomb costs at most that much.
pub fn decode(bytes: &[u8]) -> Result<Histogram<u64>, HistogramError> {
    let mut h = new_histogram();
    if bytes.is_empty() {
        return Ok(h);
    }
    let inflated;
    let v2 = if read_u32(bytes, 0)? == V2_DEFLATE_COOKIE {
        let len = read_u32(bytes, 4)? as usize;
        let compressed =
            bytes
                .get(8..)
                .filter(|rest| rest.len() == len)
                .ok_or(HistogramError::Length {
                    expected: len,
                    got: bytes.len().saturating_sub(8),
                })?;
        let max = max_v2_bytes();
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(compressed)
            .take(max as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| HistogramError::Inflate(e.to_string()))?;
        if out.len() > max {
            return Err(HistogramError::TooLarge { max });
        }
        inflated = out;
        &inflated[..]
    } else {
        bytes
    };
    V2Counts::parse(v2)?.for_each(|index, n| {
        // Every index is inside the layout (checked by `parse`), and the
        // histogram saturates counts, so recording cannot fail.
        let _ = h.record_n(value_of(index).clamp(1, MAX_MICROS), n);
    });
    Ok(h)
}

/// Indexes in a Squall histogram (computed once).
pub fn layout_len() -> usize {
    static LEN: OnceLock<usize> = OnceLock::new();
    *LEN.get_or_init(|| new_histogram().distinct_values())
}

/// The largest V2 encoding of a Squall histogram: its header and a 9-byte varint for every index.
pub fn max_v2_bytes() -> usize {
    V2_HEADER_SIZE + layout_len() * MAX_VARINT
}

/// The V2 cookie (uncompressed, as `V2Serializer` writes it).
const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
/// The V2 + deflate cookie (as `V2DeflateSerializer` writes it).
const V2_DEFLATE_COOKIE: u32 = 0x1c84_9304 | 0x10;
const V2_HEADER_SIZE: usize = 40;
const MAX_VARINT: usize = 9;

fn read_u32(bytes: &[u8], at: usize) -> Result<u32, HistogramError> {
    bytes
        .get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_be_bytes)
        .ok_or(HistogramError::Truncated {
            expected: V2_HEADER_SIZE,
            got: bytes.len(),
        })
}

fn read_u64(bytes: &[u8], at: usize) -> Result<u64, HistogramError> {
    bytes
        .get(at..at + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
        .ok_or(HistogramError::Truncated {
            expected: V2_HEADER_SIZE,
            got: bytes.len(),
        })
}

/// The counts of a V2 histogram that has been checked to be in Squall's
/// layout with every count inside its index range; adding it cannot fail.
#[derive(Debug, Clone, Copy, Default)]
pub struct V2Counts<'a> {
    payload: &'a [u8],
}

impl<'a> V2Counts<'a> {
    /// Checks the header and walks the whole payload (without allocating);
    /// empty bytes are an empty histogram.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, HistogramError> {
        if bytes.is_empty() {
            return Ok(V2Counts { payload: &[] });
        }
        if bytes.len() < V2_HEADER_SIZE {
            return Err(HistogramError::Truncated {
                expected: V2_HEADER_SIZE,
                got: bytes.len(),
            });
        }
        let max = max_v2_bytes();
        if bytes.len() > max {
            return Err(HistogramError::TooLarge { max });
        }
        let cookie = read_u32(bytes, 0)?;
        let offset = read_u32(bytes, 8)?;
        let digits = read_u32(bytes, 12)?;
        let lowest = read_u64(bytes, 16)?;
        let highest = read_u64(bytes, 24)?;
        let ratio = f64::from_bits(read_u64(bytes, 32)?);
        if cookie != V2_COOKIE
            || offset != 0
            || digits != DIGITS
            || lowest != 1
            || highest != MAX_MICROS
            || ratio.to_bits() != 1.0f64.to_bits()
        {
            return Err(HistogramError::Layout {
                cookie,
                offset,
                digits,
                lowest,
                highest,
            });
        }
        let len = read_u32(bytes, 4)? as usize;
        let payload = &bytes[V2_HEADER_SIZE..];
        if payload.len() != len {
            return Err(HistogramError::Length {
                expected: len,
                got: payload.len(),
            });
        }
        let limit = layout_len() as u64;
        let mut index: u64 = 0;
        walk(payload, |step| {
            match step {
                Step::Zeros(run) => index = index.saturating_add(run),
                Step::Count(_) => {
                    if index >= limit {
                        return Err(HistogramError::Counts("a count beyond 60 s"));
                    }
                    index += 1;
                }
            }
            if index > limit {
                return Err(HistogramError::Counts("a run of zeros beyond 60 s"));
            }
            Ok(())
        })?;
        Ok(V2Counts { payload })
    }

    /// Calls `f(index, count)` for every non-zero count.
    fn for_each(&self, mut f: impl FnMut(u64, u64)) {
        let mut index: u64 = 0;
        // Checked by `parse`: the walk cannot fail and indexes stay in range.
        let _ = walk(self.payload, |step| {
            match step {
                Step::Zeros(run) => index = index.saturating_add(run),
                Step::Count(n) => {
                    f(index, n);
                    index += 1;
                }
            }
            Ok(())
        });
    }
}

/// One item of a V2 counts payload.
enum Step {
    /// A run of empty buckets.
    Zeros(u64),
    /// One bucket's count (possibly 0).
    Count(u64),
}

fn walk(
    payload: &[u8],
    mut f: impl FnMut(Step) -> Result<(), HistogramError>,
) -> Result<(), HistogramError> {
    let mut at = 0;
    while at < payload.len() {
        let (raw, used) = read_varint(&payload[at..])
            .ok_or(HistogramError::Counts("a varint cut off at the end"))?;
        at += used;
        let n = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
        if n < 0 {
            f(Step::Zeros(n.unsigned_abs()))?;
        } else {
            f(Step::Count(n.unsigned_abs()))?;
        }
    }
    Ok(())
}

/// A running sum of HDR histograms kept as raw counts per bucket index.
///
/// Adding V2 bytes is then an indexed add per non-zero bucket. Going through
/// `Histogram::record_n` instead (index → value → index again) took 60% of
/// the coordinator's CPU with 1,000 workers sending 20 endpoints a second.
/// It never holds more than [`layout_len`] counts, and counts saturate.
#[derive(Debug, Clone, Default)]
pub struct HdrSum {
    counts: Vec<u64>,
}

/// Buckets of a 1 µs–60 s, 3-digit histogram: half-buckets of 1,024 indexes.
const HALF_MAGNITUDE: u32 = 10;
const HALF: u64 = 1 << HALF_MAGNITUDE;

/// The value (lowest of its bucket) at `index` in Squall's histogram layout.
fn value_of(index: u64) -> u64 {
    let bucket = (index >> HALF_MAGNITUDE) as i64 - 1;
    let sub = (index & (HALF - 1)) + HALF;
    if bucket < 0 {
        sub - HALF
    } else {
        sub.checked_shl(bucket as u32).unwrap_or(MAX_MICROS)
    }
}

impl HdrSum {
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|&c| c == 0)
    }

    /// Adds HDR V2 bytes in Squall's layout; anything else is refused and nothing is added.
    pub fn add_v2(&mut self, bytes: &[u8]) -> Result<(), HistogramError> {
        self.add(V2Counts::parse(bytes)?);
        Ok(())
    }

    /// Adds checked counts.
    pub fn add(&mut self, counts: V2Counts<'_>) {
        counts.for_each(|index, n| {
            let i = index as usize;
            if i >= self.counts.len() {
                self.counts.resize(i + 1, 0);
            }
            self.counts[i] = self.counts[i].saturating_add(n);
        });
    }

    /// Buckets held (at most [`layout_len`]), to check the bound.
    pub fn buckets(&self) -> usize {
        self.counts.len()
    }

    pub fn to_histogram(&self) -> Histogram<u64> {
        let mut h = new_histogram();
        for (i, &n) in self.counts.iter().enumerate() {
            if n > 0 {
                let _ = h.record_n(value_of(i as u64).clamp(1, MAX_MICROS), n);
            }
        }
        h
    }
}

/// LEB128-64b9B as HdrHistogram writes it: up to 8 groups of 7 bits, then a whole 9th byte.
fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for i in 0..8 {
        let byte = *b.get(i)?;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    let last = *b.get(8)?;
    Some((value | (u64::from(last) << 56), 9))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread() -> Histogram<u64> {
        let mut h = new_histogram();
        let mut x: u64 = 7;
        for _ in 0..50_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Values across many buckets, 1 µs to 60 s.
            let v = 1 + (x >> 20) % (1 << ((x >> 58) % 26));
            record_micros(&mut h, v);
        }
        record_micros(&mut h, MAX_MICROS);
        h
    }

    fn recorded(h: &Histogram<u64>) -> Vec<(u64, u64)> {
        h.iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    #[test]
    fn hdr_sum_equals_the_histogram_it_was_given() {
        let h = spread();
        let mut twice = h.clone();
        twice.add(&h).expect("adds");
        let bytes = encode_v2(&h).expect("encodes");
        let mut sum = HdrSum::default();
        sum.add_v2(&bytes).expect("adds");
        sum.add_v2(&bytes).expect("adds");
        assert_eq!(recorded(&sum.to_histogram()), recorded(&twice));
        assert!(sum.buckets() <= layout_len());
        // The report's deflated form decodes to the same histogram.
        let back = decode(&encode_v2_deflate(&h).expect("encodes")).expect("decodes");
        assert_eq!(recorded(&back), recorded(&h));
        assert!(HdrSum::default().is_empty());
    }

    /// A 40-byte header announcing 4 GiB, other layouts and the deflate
    /// cookie are refused before anything is allocated from them.
    #[test]
    fn foreign_layouts_and_lying_lengths_are_refused() {
        let bytes = encode_v2(&spread()).expect("encodes");
        let mut sum = HdrSum::default();
        let mut header = bytes[..V2_HEADER_SIZE].to_vec();
        header[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            sum.add_v2(&header),
            Err(HistogramError::Length { .. })
        ));
        assert!(matches!(
            decode(&header),
            Err(HistogramError::Length { .. })
        ));
        assert!(matches!(
            sum.add_v2(&bytes[..20]),
            Err(HistogramError::Truncated { .. })
        ));
        let deflated = encode_v2_deflate(&spread()).expect("encodes");
        assert!(matches!(
            sum.add_v2(&deflated),
            Err(HistogramError::Layout { .. })
        ));
        let five_digits = Histogram::<u64>::new_with_bounds(1, 1_000_000, 5).expect("valid");
        let err = sum
            .add_v2(&encode_v2(&five_digits).expect("encodes"))
            .expect_err("5 digits is not Squall's layout");
        assert!(err.to_string().contains("3 significant digits"), "{err}");
        let mut far = bytes[..V2_HEADER_SIZE].to_vec();
        // Zeros up to the end of the layout, then one count: a valid varint in the wrong place.
        let zigzag = |n: i64| ((n << 1) ^ (n >> 63)) as u64;
        let mut run = zigzag(-(layout_len() as i64));
        while run >= 0x80 {
            far.push((run as u8) | 0x80);
            run >>= 7;
        }
        far.push(run as u8);
        far.push(0x02);
        let len = (far.len() - V2_HEADER_SIZE) as u32;
        far[4..8].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(sum.add_v2(&far), Err(HistogramError::Counts(_))));
        assert!(sum.is_empty() && sum.buckets() == 0, "nothing half-added");
    }

    #[test]
    fn counts_saturate() {
        let mut h = new_histogram();
        h.record_n(1000, i64::MAX as u64).expect("records");
        let bytes = encode_v2(&h).expect("encodes");
        let mut sum = HdrSum::default();
        for _ in 0..3 {
            sum.add_v2(&bytes).expect("adds");
        }
        assert_eq!(sum.to_histogram().len(), u64::MAX);
    }

    #[test]
    fn deflate_round_trip_and_clamping() {
        let mut h = new_histogram();
        record_micros(&mut h, 0);
        record_micros(&mut h, 120_000_000);
        let back = decode(&encode_v2_deflate(&h).expect("encodes")).expect("decodes");
        assert_eq!(back.len(), 2);
        assert_eq!(back.min(), 1);
        assert!(back.max() >= MAX_MICROS);
    }
}
