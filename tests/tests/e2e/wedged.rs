//! Workers that hold the coordinator's resources: one that stops reading its stream, and idle connections that never attach.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use squall_tests::{CountingTarget, FakeWorker, Reading, TestRun, wait_until, worker_entry};

const STEADY: &str = "scenarios:\n  steady: { users: 10, spawn_rate: 100, duration: 8s }\nuser_classes:\n  u: { wait: { constant: 20ms }, tasks: [ { get: /ok } ] }\n";
const LONG: &str = "scenarios:\n  long: { users: 10, spawn_rate: 100, duration: 60s }\nuser_classes:\n  u: { wait: { constant: 20ms }, tasks: [ { get: /ok } ] }\n";

/// More snapshots than the coordinator's queues and the fake's HTTP/2 window hold in Acks.
const FLOOD: u64 = 100_000;

/// What the live view prints every second.
const LIVE_LINE: &str = "] users ";

/// Attaches `stuck`, a fake that reads up to its Start (returned with it)
/// and, once told to flood, never reads again.
async fn attach_stuck(run: &TestRun) -> (FakeWorker, String) {
    let mut stuck = FakeWorker::attach_with(&run.master(), "stuck", Reading::UntilStart).await;
    let run_id = stuck.start(Duration::from_secs(30)).await.run_id;
    (stuck, run_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stops_reading_and_floods_is_dropped_and_the_run_goes_on() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(STEADY).live_view();
    let mut c = run.coordinator(2, &target.url(), &[]).await;
    let real = run.worker("real", &[]);
    let (stuck, run_id) = attach_stuck(&run).await;
    let started = Instant::now();
    let flood = tokio::spawn(async move { stuck.flood(&run_id, FLOOD).await });

    // The live line keeps coming while the flood goes on and after.
    let before = c.stderr_lines(LIVE_LINE);
    assert!(
        wait_until(Duration::from_secs(8), || c.stderr_lines(LIVE_LINE)
            >= before + 4)
        .await,
        "the live line stopped\n{}",
        c.output()
    );
    assert_eq!(
        c.exit_code(Duration::from_secs(30)).await,
        0,
        "{}\n{}",
        c.output(),
        real.output()
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "an 8 s run took {took:?}\n{}",
        c.output()
    );
    flood.abort();

    let report = run.report();
    assert_eq!(worker_entry(&report, "stuck")["lost"], true);
    // Its flood is refused (seq numbers ahead of the run, issue 12 item 1), so
    // the coordinator has nothing to acknowledge and never backs up on it: the
    // full-queue disconnect itself is `cluster::tests::a_worker_that_stops_reading_is_disconnected`.
    assert!(
        c.stderr().contains("worker stuck lost"),
        "no word on why `stuck` was dropped\n{}",
        c.output()
    );
    // Every request the real worker made reached the report.
    assert_eq!(report["totals"]["requests"].as_u64(), Some(target.total()));
    assert_eq!(
        worker_entry(&report, "real")["requests"].as_u64(),
        Some(target.total())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_run_beside_a_worker_that_stops_reading() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(LONG);
    let mut c = run.coordinator(2, &target.url(), &[]).await;
    let _real = run.worker("real", &[]);
    let (stuck, run_id) = attach_stuck(&run).await;
    let flood = tokio::spawn(async move { stuck.flood(&run_id, FLOOD).await });
    assert!(
        wait_until(Duration::from_secs(20), || target.total() > 200).await,
        "no traffic"
    );
    // Give the flood its chance to wedge the coordinator (it ends once the
    // coordinator drops the fake; a wedged coordinator stops reading it).
    wait_until(Duration::from_secs(10), || flood.is_finished()).await;

    c.signal("TERM");
    let signalled = Instant::now();
    c.wait(Duration::from_secs(5)).await;
    assert!(signalled.elapsed() < Duration::from_secs(5));
    flood.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_lock_a_worker_out() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(STEADY).fd_limit(256);
    let mut c = run
        .coordinator(1, &target.url(), &["--duration", "2s"])
        .await;
    let cpu_before = c.cpu_time();
    let opened = Instant::now();
    // More idle sockets than the coordinator has file descriptors.
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(run.master()).expect("connect an idle socket"))
        .collect();
    let w = run.worker("w1", &[]);
    let attached = wait_until(Duration::from_secs(10), || {
        c.stderr().contains("worker w1 attached")
    })
    .await;
    eprintln!(
        "worker attached {:?} after the idle sockets",
        opened.elapsed()
    );
    assert!(
        attached,
        "the worker did not attach within 10 s\n{}\n{}",
        c.output(),
        w.output()
    );
    // The measurement window: 5 s from the first idle socket.
    wait_until(Duration::from_secs(6), || {
        opened.elapsed() >= Duration::from_secs(5)
    })
    .await;
    let cpu = c.cpu_time().saturating_sub(cpu_before);
    eprintln!("coordinator CPU over {:?}: {cpu:?}", opened.elapsed());
    assert!(
        cpu < Duration::from_millis(500),
        "the coordinator used {cpu:?} of CPU in 5 s with {} idle sockets open",
        idle.len()
    );
    assert_eq!(
        c.exit_code(Duration::from_secs(30)).await,
        0,
        "{}",
        c.output()
    );
    drop(idle);
}
