//! Workers measure their own CPU: a busy worker shows it in the report, as a share of its machine's cores.

use std::path::Path;
use std::time::Duration;

use squall_tests::{CountingTarget, Proc, TestRun, bin, worker_entry};

/// No waits: the worker sends as fast as the target answers.
const SCENARIO: &str = r#"
scenarios:
  busy: { users: 8, spawn_rate: 100, duration: 4s }
user_classes:
  u: { tasks: [ { name: ok, get: /ok } ] }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_reports_its_cpu() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(SCENARIO);
    let mut coord = run.coordinator(1, &target.url(), &[]).await;
    // Pinned to one core, so that core is its whole machine and its load shows plainly.
    let master = run.master();
    let w = Proc::spawn(
        "worker",
        Path::new("taskset"),
        &[
            "-c",
            "0",
            bin("worker").to_str().expect("utf8"),
            "--master",
            &master,
            "--id",
            "w1",
            "--threads",
            "1",
        ],
        run.dir(),
    );
    let code = coord.exit_code(Duration::from_secs(60)).await;
    // What the kernel says the worker used (taskset execs it: same pid), read before it idles longer.
    let used = w.cpu_time();
    assert_eq!(code, 0, "{}\n{}", coord.output(), w.output());
    let report = run.report();
    let w1 = worker_entry(&report, "w1");
    assert_eq!(w1["cores"], 1, "{w1}");
    let mean = w1["cpu_percent_mean"].as_f64().expect("cpu_percent_mean");
    let max = w1["cpu_percent_max"].as_f64().expect("cpu_percent_max");
    let duration = report["duration_s"].as_f64().expect("duration_s");
    let kernel = used.as_secs_f64() / duration * 100.0;
    eprintln!(
        "worker w1 on one core: CPU mean {mean}%, max {max}%; the kernel counted {used:?} in {duration} s ({kernel:.1}%)"
    );
    assert!(
        mean > 5.0,
        "a worker sending flat out used {mean}% of its core"
    );
    assert!(mean <= max && max <= 100.0, "{w1}");
    // The heartbeats' mean agrees with the kernel's count over the run (its
    // seconds before Start and after the end are idle, hence the margin).
    assert!(
        (mean - kernel).abs() <= kernel * 0.5 + 3.0,
        "reported {mean}% against the kernel's {kernel:.1}%"
    );
    // The worker stays attached to wait for the next coordinator; dropping it kills it.
    drop(w);
}
