//! Users are split exactly per class and per worker (largest remainder), seen from real processes.

use std::time::Duration;

use squall_tests::{CountingTarget, TestRun};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_users_three_to_one_over_three_workers() {
    let target = CountingTarget::start().await;
    // Each user announces its class once in on_start, then idles, so the
    // target's per-path counts are the per-class user counts.
    let run = TestRun::new(
        r#"
scenarios:
  split: { users: 1000, spawn_rate: 2000, duration: 2s }
user_classes:
  a:
    weight: 3
    wait: { constant: 10s }
    on_start: [ { get: /start/a } ]
    tasks: [ { get: /ok } ]
  b:
    weight: 1
    wait: { constant: 10s }
    on_start: [ { get: /start/b } ]
    tasks: [ { get: /ok } ]
"#,
    );
    let mut c = run.coordinator(3, &target.url(), &[]).await;
    let _workers: Vec<_> = (1..=3)
        .map(|i| run.worker(&format!("w{i}"), &["--threads", "1"]))
        .collect();
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
    assert_eq!(target.path("/start/a"), 750);
    assert_eq!(target.path("/start/b"), 250);

    let report = run.report();
    let mut shares: Vec<(u64, u64, u64)> = report["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| {
            (
                w["users_per_class"][0].as_u64().unwrap_or(0),
                w["users_per_class"][1].as_u64().unwrap_or(0),
                w["peak_users"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    shares.sort();
    assert_eq!(shares, vec![(250, 83, 333), (250, 83, 333), (250, 84, 334)]);
}
