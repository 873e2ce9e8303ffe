//! Users are split exactly per class and per worker (largest remainder), seen from real processes.

use std::time::Duration;

use squall_tests::{CountingTarget, coordinator, free_port, read_report, worker, write_file};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_users_three_to_one_over_three_workers() {
    let target = CountingTarget::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    // Each user announces its class once in on_start, then idles, so the
    // target's per-path counts are the per-class user counts.
    let file = write_file(
        tmp.path(),
        "split.yaml",
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
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let out = tmp.path().join("out");
    let mut c = coordinator(
        &[
            "-f",
            file.to_str().expect("utf8"),
            "--workers",
            "3",
            "--bind",
            &bind,
            "--host",
            &target.url(),
            "--out",
            out.to_str().expect("utf8"),
            "--headless",
        ],
        tmp.path(),
    );
    let _workers: Vec<_> = (1..=3)
        .map(|i| {
            worker(
                &[
                    "--master",
                    &bind,
                    "--id",
                    &format!("w{i}"),
                    "--threads",
                    "1",
                ],
                tmp.path(),
            )
        })
        .collect();
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
    assert_eq!(target.path("/start/a"), 750);
    assert_eq!(target.path("/start/b"), 250);

    let report = read_report(&out);
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
