//! Property test: the snapshot histogram decoder never panics and never allocates past its bound, whatever bytes a worker sends.
//!
//! A counting global allocator measures every byte allocated while one input
//! is decoded and summed. `PROPTEST_CASES` sets how many inputs are tried
//! (default 256, well under a second; run it long with e.g. 200000).

use std::alloc::System;

use proptest::prelude::*;
use squall_common::snapshot::{
    EndpointDelta, EndpointStats, EndpointSum, HdrSum, V2Counts, decode, encode_v2,
    encode_v2_deflate, layout_len, max_v2_bytes, new_histogram, record_micros,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The most one input may cost in all: the inflated V2 bytes (grown by
/// doubling, so under twice the bound), a few histograms and sums of
/// Squall's layout, and copies of the input itself.
fn allocation_bound(input: usize) -> usize {
    let histogram = std::mem::size_of::<u64>() * layout_len();
    4 * max_v2_bytes() + 8 * histogram + 4 * input + 64 * 1024
}

/// Valid histograms in both wire forms, from a few recorded values.
fn encoded() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec((1u64..=70_000_000, 1u64..1_000), 0..64),
        any::<bool>(),
    )
        .prop_map(|(values, deflate)| {
            let mut h = new_histogram();
            for (v, n) in values {
                record_micros(&mut h, v);
                let _ = h.record_n(v.min(60_000_000), n);
            }
            if deflate {
                encode_v2_deflate(&h).expect("encodes")
            } else {
                encode_v2(&h).expect("encodes")
            }
        })
}

/// A valid encoding with some bytes overwritten, inserted, removed or cut;
/// half of the edits land in the 40-byte header, where the lengths are.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        encoded(),
        proptest::collection::vec(
            (
                any::<prop::sample::Index>(),
                any::<bool>(),
                any::<u8>(),
                0u8..4,
            ),
            1..8,
        ),
    )
        .prop_map(|(mut bytes, edits)| {
            for (at, in_header, byte, kind) in edits {
                if bytes.is_empty() {
                    bytes.push(byte);
                    continue;
                }
                let span = if in_header {
                    bytes.len().min(40)
                } else {
                    bytes.len()
                };
                let i = at.index(span);
                match kind {
                    0 => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    2 => {
                        bytes.remove(i);
                    }
                    _ => bytes.truncate(i),
                }
            }
            bytes
        })
}

/// A valid encoding with one whole header field (cookie, payload length,
/// offset, significant digits, or a word of the bounds) set to any value:
/// byte edits rarely produce the large lengths that once cost gigabytes.
fn forged_header() -> impl Strategy<Value = Vec<u8>> {
    (encoded(), 0usize..10, any::<u32>()).prop_map(|(mut bytes, field, value)| {
        let at = field * 4;
        if bytes.len() >= at + 4 {
            bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
        }
        bytes
    })
}

/// Arbitrary bytes, valid encodings, and mutations of valid encodings.
fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        encoded(),
        mutated(),
        forged_header(),
    ]
}

/// Everything the coordinator does with histogram bytes from a worker.
fn decode_everywhere(bytes: &[u8]) {
    let _ = decode(bytes);
    let mut sum = HdrSum::default();
    if let Ok(counts) = V2Counts::parse(bytes) {
        sum.add(counts);
        sum.add(counts);
        assert!(sum.buckets() <= layout_len());
        let _ = sum.to_histogram();
    }
    let delta = EndpointDelta {
        requests: u64::MAX,
        latency: bytes.to_vec(),
        ..EndpointDelta::default()
    };
    let mut endpoint = EndpointSum::default();
    if endpoint.add(&delta).is_err() {
        assert_eq!(endpoint.requests, 0, "a refused delta changed the sum");
    }
    let _ = endpoint.add(&delta);
    let _ = endpoint.to_stats().merge(&EndpointStats::new());
}

proptest! {
    // No regressions file: the test lives outside `src/`, where proptest looks for one.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_and_allocates_within_the_bound(bytes in input()) {
        let region = Region::new(GLOBAL);
        decode_everywhere(&bytes);
        let allocated = region.change().bytes_allocated;
        prop_assert!(
            allocated <= allocation_bound(bytes.len()),
            "{allocated} bytes allocated for {} input bytes (bound {})",
            bytes.len(),
            allocation_bound(bytes.len())
        );
    }
}
