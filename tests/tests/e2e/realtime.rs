//! `--realtime-priority`: the engine threads, and only they, run under SCHED_FIFO; a priority the process may not use is refused at start.

use std::path::Path;
use std::time::Duration;

use squall_tests::{CountingTarget, Proc, TestRun, bin, wait_until, worker};

/// An open model for 3 s: long enough to read the threads while it runs.
const OPEN: &str = r#"
scenarios:
  open: { arrival_rate: 300/s, max_users: 20, duration: 3s }
user_classes:
  u: { tasks: [ { name: ok, get: /ok } ] }
"#;

/// Each thread of `pid`: its name, its scheduling policy (0 SCHED_OTHER,
/// 1 SCHED_FIFO) and its real-time priority, from /proc (fields 41 and 40
/// of `stat`, counted after the name, which may hold spaces).
fn threads(pid: u32) -> Vec<(String, u32, u32)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|t| {
        let path = t.ok()?.path();
        let stat = std::fs::read_to_string(path.join("stat")).ok()?;
        let name = stat.split_once('(')?.1.rsplit_once(')')?.0.to_owned();
        let after: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // After the name, field 3 (state) is index 0: field N is index N - 3.
        let rt_priority = after.get(40 - 3)?.parse().ok()?;
        let policy = after.get(41 - 3)?.parse().ok()?;
        Some((name, policy, rt_priority))
    })
    .collect()
}

/// Waits until `pid` has `n` engine threads, and returns all its threads then.
async fn engine_threads(pid: u32, n: usize) -> Vec<(String, u32, u32)> {
    let mut seen = Vec::new();
    let ok = wait_until(Duration::from_secs(20), || {
        seen = threads(pid);
        seen.iter()
            .filter(|(name, ..)| name.starts_with("squall-engine"))
            .count()
            >= n
    })
    .await;
    assert!(ok, "no {n} engine threads in {pid}: {seen:?}");
    seen
}

fn check_fifo(seen: &[(String, u32, u32)], priority: u32) {
    for (name, policy, rt) in seen {
        if name.starts_with("squall-engine") {
            assert_eq!((*policy, *rt), (1, priority), "{name}: {seen:?}");
        } else {
            // The link to the coordinator, the coordinator's own runtime.
            assert_eq!((*policy, *rt), (0, 0), "{name}: {seen:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_threads_run_under_sched_fifo_and_nothing_else_does() {
    let target = CountingTarget::start().await;
    // In-process workers: the coordinator's flag.
    let run = TestRun::new(OPEN);
    let mut c = run.headless(
        &target.url(),
        &[
            "--local-workers",
            "1",
            "--threads",
            "2",
            "--realtime-priority",
            "7",
        ],
    );
    let pid = c.child.id().expect("coordinator running");
    runs_under_fifo(&mut c, pid, (2, 7), &run, &target).await;

    // A remote worker: its own flag.
    let target = CountingTarget::start().await;
    let run = TestRun::new(OPEN);
    let mut c = run.coordinator(1, &target.url(), &[]).await;
    let w = run.worker("w1", &["--threads", "1", "--realtime-priority", "5"]);
    let pid = w.child.id().expect("worker running");
    runs_under_fifo(&mut c, pid, (1, 5), &run, &target).await;
    drop(w);
}

/// Checks that process `pid`'s `engines` engine threads, and only they, run
/// under SCHED_FIFO at `priority` while coordinator `c` runs, and that the
/// run then ends well with every request counted once.
async fn runs_under_fifo(
    c: &mut Proc,
    pid: u32,
    (engines, priority): (usize, u32),
    run: &TestRun,
    target: &CountingTarget,
) {
    let seen = engine_threads(pid, engines).await;
    check_fifo(&seen, priority);
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
    assert_eq!(
        run.report()["totals"]["requests"].as_u64(),
        Some(target.total()),
        "every request counted once under SCHED_FIFO too"
    );
}

/// Whether this process runs as root (uid 0), from /proc.
fn root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_that_cannot_be_had_is_refused_before_any_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    for p in ["0", "100"] {
        let mut w = worker(&["--realtime-priority", p, "--give-up-after", "1s"], dir);
        exits_2_saying(&mut w, "expected 1 to 99").await;
    }
    // Without CAP_SYS_NICE and with no real-time allowance (RLIMIT_RTPRIO
    // 0), SCHED_FIFO is not permitted: the worker says what it needs.
    // prlimit and setpriv exec the worker in turn (same pid).
    let worker_bin = bin("worker");
    let mut args = vec!["--rtprio=0:0"];
    if root() {
        args.extend([
            "setpriv",
            "--bounding-set",
            "-sys_nice",
            "--inh-caps",
            "-sys_nice",
        ]);
    }
    args.extend([
        worker_bin.to_str().expect("utf8"),
        "--realtime-priority",
        "5",
        "--give-up-after",
        "1s",
    ]);
    let mut w = Proc::spawn("worker", Path::new("prlimit"), &args, dir);
    let err = exits_2_saying(&mut w, "--realtime-priority 5: not permitted").await;
    assert!(err.contains("CAP_SYS_NICE"), "{err}");
    // The coordinator's flag is for its in-process workers only.
    let target = CountingTarget::start().await;
    let run = TestRun::new(OPEN);
    let mut c = run.start_coordinator(1, &target.url(), &["--realtime-priority", "3"]);
    exits_2_saying(&mut c, "in-process workers").await;
    assert_eq!(target.total(), 0);
}

/// Waits for `p` to exit, which must be with 2 (bad input) and `needle` in
/// its stderr; returns the stderr.
async fn exits_2_saying(p: &mut Proc, needle: &str) -> String {
    assert_eq!(
        p.exit_code(Duration::from_secs(20)).await,
        2,
        "{}",
        p.output()
    );
    let err = p.stderr();
    assert!(err.contains(needle), "{}", p.output());
    err
}
