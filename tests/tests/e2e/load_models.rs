//! Load models keep to their plan: arrival rates, ramps, and latency free of coordinated omission.

use std::time::Duration;

use squall_tests::{CountingTarget, TestRun};

/// Runs `yaml` on two worker processes against the target and returns the report.
async fn run_two_workers(target: &CountingTarget, yaml: &str) -> serde_json::Value {
    let run = TestRun::new(yaml);
    let mut c = run.coordinator(2, &target.url(), &[]).await;
    let _w1 = run.worker("w1", &["--threads", "1"]);
    let _w2 = run.worker("w2", &["--threads", "1"]);
    assert_eq!(
        c.exit_code(Duration::from_secs(120)).await,
        0,
        "{}",
        c.output()
    );
    run.report()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrival_rate_500_per_second_over_two_workers_for_20s() {
    let target = CountingTarget::start().await;
    let report = run_two_workers(
        &target,
        "scenarios:\n  open: { arrival_rate: 500/s, max_users: 200, duration: 20s }\nuser_classes:\n  u: { tasks: [ { get: /ok } ] }\n",
    )
    .await;
    let served = target.total();
    assert!(
        (9_900..=10_100).contains(&served),
        "target counted {served}, want 10,000 ± 1%"
    );
    assert_eq!(report["totals"]["requests"].as_u64(), Some(served));
    assert_eq!(report["load_model"], "open");
    // Both workers carried half the rate.
    for w in report["workers"].as_array().expect("workers") {
        let n = w["requests"].as_u64().unwrap_or(0);
        assert!((4_900..=5_100).contains(&n), "{w}");
    }
    // The plan is recorded beside what happened.
    let first = &report["timeline"][0];
    assert_eq!(first["planned_rps"].as_f64(), Some(500.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalling_target_shows_in_corrected_latency_not_in_service_time_median() {
    let target = CountingTarget::start().await;
    let report = run_two_workers(
        &target,
        "scenarios:\n  stall: { arrival_rate: 100/s, max_users: 400, duration: 12s }\nuser_classes:\n  u: { tasks: [ { get: /stall } ] }\n",
    )
    .await;
    let totals = &report["totals"];
    let p99 = totals["latency_ms"]["p99"].as_f64().expect("p99");
    let service_p50 = totals["service_ms"]["p50"].as_f64().expect("service p50");
    assert!(
        p99 >= 900.0,
        "corrected p99 {p99} ms should show the 1 s stalls"
    );
    assert!(
        service_p50 < 50.0,
        "raw service p50 {service_p50} ms should stay low"
    );
    assert_eq!(totals["dropped_iterations"], 0, "the pool was large enough");
    // Requests started on schedule: the latency came from the target, not from us.
    let lag_p50 = totals["schedule_lag_ms"]["p50"]
        .as_f64()
        .expect("schedule lag is reported");
    assert!(lag_p50 < 5.0, "schedule lag p50 {lag_p50} ms");
    let served = target.total();
    assert!((1_188..=1_212).contains(&served), "{served}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ramp_from_0_to_200_users_follows_the_plan_every_second() {
    let target = CountingTarget::start().await;
    let report = run_two_workers(
        &target,
        "scenarios:\n  ramp: { stages: [ { duration: 20s, users: 200 } ] }\nuser_classes:\n  u: { wait: { constant: 200ms }, tasks: [ { get: /ok } ] }\n",
    )
    .await;
    let timeline = report["timeline"].as_array().expect("timeline");
    assert!(timeline.len() >= 20, "{}", timeline.len());
    for p in timeline.iter().take(20) {
        let planned = p["planned_users"].as_u64().expect("planned users") as f64;
        let actual = p["users"].as_u64().expect("users") as f64;
        let tolerance = (planned * 0.05).max(1.0);
        assert!(
            (actual - planned).abs() <= tolerance,
            "second {}: {actual} users, plan {planned}",
            p["t"]
        );
    }
    assert_eq!(timeline[19]["planned_users"], 200);
    assert_eq!(report["load_model"], "stages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_iterations_end_the_run_early_and_exactly() {
    let target = CountingTarget::start().await;
    let report = run_two_workers(
        &target,
        "scenarios:\n  it: { users: 8, duration: 60s, iterations: 1001 }\nuser_classes:\n  u: { tasks: [ { get: /ok } ] }\n",
    )
    .await;
    assert_eq!(target.total(), 1001);
    assert_eq!(report["totals"]["requests"], 1001);
    assert!(report["duration_s"].as_f64().unwrap_or(99.0) < 30.0);
}

/// Fewer users than engine threads: the threads without a user must not hold
/// back part of the iteration limit (the run would then last its duration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iterations_end_the_run_when_threads_outnumber_users() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(
        "scenarios:\n  it: { users: 1, duration: 60s, iterations: 25 }\nuser_classes:\n  u: { tasks: [ { get: /ok } ] }\n",
    );
    let mut c = run.headless(&target.url(), &["--local-workers", "1", "--threads", "4"]);
    assert_eq!(
        c.exit_code(Duration::from_secs(40)).await,
        0,
        "{}",
        c.output()
    );
    let report = run.report();
    assert_eq!(target.total(), 25);
    assert_eq!(report["totals"]["requests"], 25);
    assert!(
        report["duration_s"].as_f64().unwrap_or(99.0) < 20.0,
        "{}",
        report["duration_s"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_stops_at_the_breaking_point() {
    let target = CountingTarget::start().await;
    // /slow takes 1 s and the timeout is 300 ms: every request fails, so the
    // error-rate condition trips within the first seconds of the ramp.
    let report = run_two_workers(
        &target,
        "defaults: { timeout: 300ms }\nscenarios:\n  stress: { stages: [ { duration: 30s, users: 100 } ], stop_when: [\"error_rate > 5%\"] }\nuser_classes:\n  u: { tasks: [ { get: /slow } ] }\n",
    )
    .await;
    let broke = &report["broke_at"];
    assert_eq!(broke["condition"], "error_rate > 5%", "{report}");
    assert!(broke["users"].as_u64().unwrap_or(0) > 0);
    assert!(report["duration_s"].as_f64().unwrap_or(99.0) < 20.0);
    assert!(
        report["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .any(|p| p["event"]
                .as_str()
                .is_some_and(|e| e.contains("stop condition")))
    );
}
