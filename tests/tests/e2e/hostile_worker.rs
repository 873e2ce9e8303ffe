//! Hostile workers: a fake worker (a real gRPC client) attached to a real run sends snapshots and statuses meant to exhaust, crash or deface the coordinator.

use std::collections::BTreeMap;
use std::time::Duration;

use squall_common::protocol::{Start, Status, WorkerMessage, WorkerState};
use squall_common::snapshot::{
    EndpointDelta, EndpointKey, EndpointStats, Snapshot, encode_v2, record_micros,
};
use squall_tests::{CountingTarget, FakeWorker, TestRun, peak_rss_bytes, worker_entry};

const SCENARIO: &str = "scenarios:\n  steady: { users: 4, spawn_rate: 100, duration: 6s }\nuser_classes:\n  u: { wait: { constant: 20ms }, tasks: [ { name: ok, get: /ok } ] }\n";

/// The coordinator's peak memory may not go past this, whatever a worker sends.
const MAX_RSS: u64 = 256 << 20;

fn snapshot(start: &Start, seq: u64, endpoints: Vec<(EndpointKey, EndpointDelta)>) -> Snapshot {
    Snapshot {
        run_id: start.run_id.clone(),
        seq,
        window_start_us: seq * 1_000_000,
        window_end_us: (seq + 1) * 1_000_000,
        active_users: 1,
        open_connections: None,
        dropped_iterations: 0,
        schedule_lag: Vec::new(),
        generator_lag: Vec::new(),
        endpoints,
    }
}

/// The scenario's one endpoint, as the Start names it.
fn real_key(start: &Start) -> EndpointKey {
    let (name, method) = start.spec.endpoints().remove(0);
    EndpointKey { name, method }
}

/// Counts at the top of their range: summing two of them overflows.
fn huge_delta() -> EndpointDelta {
    let mut s = EndpointStats::new();
    record_micros(&mut s.latency, 1000);
    let mut d = EndpointDelta::encode(&s).expect("encodes");
    d.requests = u64::MAX;
    d.failures = u64::MAX;
    d.bytes_received = u64::MAX;
    d.status = BTreeMap::from([(200, u64::MAX)]);
    d.errors = BTreeMap::from([("connect".to_owned(), u64::MAX)]);
    d
}

/// A 40-byte HDR V2 header in another layout (2 significant digits) announcing a 1 GiB payload.
fn lying_histogram() -> Vec<u8> {
    let mut h = encode_v2(&squall_common::snapshot::new_histogram()).expect("encodes");
    h.truncate(40);
    h[4..8].copy_from_slice(&(1u32 << 30).to_be_bytes());
    h[12..16].copy_from_slice(&2u32.to_be_bytes());
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_snapshots_and_statuses_neither_exhaust_nor_deface_the_coordinator() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(SCENARIO);
    let mut coord = run
        .coordinator(2, &target.url(), &["--wait-timeout", "30s"])
        .await;
    let pid = coord.child.id().expect("coordinator running");
    let _real = run.worker("real", &["--threads", "1"]);
    let mut fake = FakeWorker::attach(&run.master(), "fake").await;
    let start = fake.start(Duration::from_secs(30)).await;
    let key = real_key(&start);

    // Accepted: counts that overflow when summed, and thousands of invented error kinds.
    fake.send(&WorkerMessage::Snapshot(Snapshot {
        active_users: u64::MAX,
        open_connections: Some(u64::MAX),
        dropped_iterations: u64::MAX,
        ..snapshot(&start, 0, vec![(key.clone(), huge_delta())])
    }))
    .await;
    let mut flood = huge_delta();
    for i in 0..5_000 {
        flood
            .errors
            .insert(format!("invented_{i}\x1b[31m{}", "e".repeat(100)), 1);
    }
    fake.send(&WorkerMessage::Snapshot(Snapshot {
        active_users: u64::MAX,
        dropped_iterations: u64::MAX,
        ..snapshot(&start, 1, vec![(key.clone(), flood)])
    }))
    .await;
    // Refused whole: another histogram layout announcing 1 GiB, invented
    // endpoints, a seq far in the future, a window past the end of time.
    let mut lying = huge_delta();
    lying.latency = lying_histogram();
    fake.send(&WorkerMessage::Snapshot(snapshot(
        &start,
        2,
        vec![
            (key.clone(), EndpointDelta::default()),
            (key.clone(), lying),
        ],
    )))
    .await;
    let invented = (0..2_000)
        .map(|i| {
            (
                EndpointKey {
                    name: format!("invented endpoint {i}"),
                    method: "GET".into(),
                },
                EndpointDelta::default(),
            )
        })
        .collect();
    fake.send(&WorkerMessage::Snapshot(snapshot(&start, 2, invented)))
        .await;
    fake.send(&WorkerMessage::Snapshot(snapshot(
        &start,
        100_000,
        Vec::new(),
    )))
    .await;
    fake.send(&WorkerMessage::Snapshot(Snapshot {
        window_end_us: u64::MAX,
        ..snapshot(&start, 2, Vec::new())
    }))
    .await;
    // A well-formed seq 2: once it is acknowledged, everything before it was handled.
    fake.send(&WorkerMessage::Snapshot(snapshot(&start, 2, Vec::new())))
        .await;
    fake.acked(3, Duration::from_secs(20)).await;
    let peak = peak_rss_bytes(pid).expect("coordinator still running");
    eprintln!(
        "coordinator peak RSS after the hostile snapshots: {} MiB",
        peak >> 20
    );
    assert!(
        peak < MAX_RSS,
        "coordinator peak RSS {} MiB after the hostile snapshots",
        peak >> 20
    );

    // The same failure, many times, with terminal escapes and a huge reason.
    let reason = format!("\x1b]0;pwned\x07\x1b[2J{}", "A".repeat(100_000));
    for _ in 0..20 {
        fake.send(&WorkerMessage::Status(Status {
            run_id: start.run_id.clone(),
            state: WorkerState::Failed,
            reason: reason.clone(),
            snapshots_sent: 0,
        }))
        .await;
    }

    let code = coord.exit_code(Duration::from_secs(60)).await;
    drop(fake);
    let stderr = coord.stderr();
    assert_eq!(code, 0, "{}", coord.output());
    // (The log's own colours are escapes too: look for the worker's.)
    for escape in ["\x1b]0;", "\x1b[2J", "\x1b[31minvented"] {
        assert!(!stderr.contains(escape), "{escape:?} reached stderr");
    }
    assert_eq!(
        stderr.matches("worker fake failed").count(),
        1,
        "a repeated failure is handled once\n{stderr}"
    );
    assert!(
        stderr.lines().all(|l| l.len() < 2_000),
        "a worker's reason is printed unbounded"
    );

    let text = std::fs::read_to_string(run.out.join("report.json")).expect("report.json");
    assert!(
        !text.contains("invented"),
        "invented names reached the report"
    );
    assert!(!text.contains("\\u001b"), "escapes reached the report");
    let report = run.report();
    // Every request the real worker made is counted, in its own entry.
    let real = worker_entry(&report, "real")["requests"]
        .as_u64()
        .expect("requests");
    assert!(real > 50, "too little traffic to mean anything: {real}");
    assert_eq!(real, target.total(), "{}", coord.output());
    assert_eq!(report["totals"]["requests"].as_u64(), Some(u64::MAX));
    let endpoints = report["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1, "{endpoints:?}");
    let errors = endpoints[0]["errors"].as_object().expect("errors");
    assert!(errors.len() <= 33, "{} error kinds kept", errors.len());
    let timeline = report["timeline"].as_array().expect("timeline");
    assert!(
        timeline.len() < 40,
        "{} seconds of timeline",
        timeline.len()
    );
    assert!(report["duration_s"].as_f64().expect("duration") < 60.0);
    let failures: Vec<&str> = timeline
        .iter()
        .filter_map(|p| p["event"].as_str())
        .filter(|e| e.contains("worker fake failed"))
        .collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].len() < 1_000, "{}", failures[0].len());
    assert_eq!(worker_entry(&report, "fake")["lost"], true);
    assert!(peak_rss_bytes(pid).is_none_or(|p| p < MAX_RSS));
}
