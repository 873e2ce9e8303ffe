//! Criterion benchmark: the coordinator's cost to merge one worker snapshot (20 endpoints) into the run totals.

use criterion::{Criterion, criterion_group, criterion_main};
use squall_common::snapshot::{EndpointDelta, EndpointStats, EndpointSum, HdrSum, record_micros};
use std::hint::black_box;

/// One endpoint's interval: `requests` latencies spread over 0.5–100 ms.
fn delta(requests: u64, seed: u64) -> EndpointDelta {
    let mut s = EndpointStats::new();
    s.requests = requests;
    s.status.insert(200, requests);
    let mut x = seed;
    for _ in 0..requests {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let us = 500 + (x >> 33) % 100_000;
        record_micros(&mut s.latency, us);
        record_micros(&mut s.service, us);
        record_micros(&mut s.ttfb, us / 2);
    }
    EndpointDelta::encode(&s).expect("encodes")
}

fn merge(c: &mut Criterion) {
    for requests in [50u64, 500] {
        let snapshot: Vec<EndpointDelta> = (0..20).map(|e| delta(requests, e)).collect();
        let mut totals: Vec<EndpointSum> = (0..20).map(|_| EndpointSum::default()).collect();
        let mut interval = HdrSum::default();
        c.bench_function(
            &format!("merge one snapshot: 20 endpoints x {requests} requests"),
            |b| {
                b.iter(|| {
                    for (t, d) in totals.iter_mut().zip(&snapshot) {
                        t.add(black_box(d)).expect("merges");
                        interval.add_v2(&d.latency).expect("merges");
                    }
                })
            },
        );
    }
}

criterion_group!(benches, merge);
criterion_main!(benches);
