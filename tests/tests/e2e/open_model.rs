//! The open model at and above capacity: every arrival is sent or counted as dropped, and a rate that cannot be met is reported while the run goes on.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use serde_json::Value;
use squall_tests::{CountingTarget, Proc, TestRun, has_event};

const WARNING: &str = "warning: arrival rate not met";

/// How many of `text`'s lines hold `needle`.
fn lines_with(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// A report's requests and dropped arrivals, once every request the target
/// saw is checked to be in it, and nothing else; asserts that sent plus
/// dropped is within `plan` (a few arrivals due in the last instant may be
/// left when the plan's end stops the run).
fn accounted(report: &Value, target: &CountingTarget, plan: RangeInclusive<u64>) -> (u64, u64) {
    let t = &report["totals"];
    let requests = t["requests"].as_u64().expect("requests");
    let dropped = t["dropped_iterations"].as_u64().expect("dropped");
    assert_eq!(requests, target.total(), "report against target");
    assert!(
        plan.contains(&(requests + dropped)),
        "{requests} sent + {dropped} dropped, want {plan:?}"
    );
    (requests, dropped)
}

/// The most users the open model's pools ran, summed over the workers.
fn pool(report: &Value) -> u64 {
    report["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| w["peak_users"].as_u64().expect("peak_users"))
        .sum()
}

/// `workers` workers asking for 20,000 arrivals/s for `secs` of a target
/// that serves one request at a time (at most 10,000/s), with the growth
/// log on: every arrival is accounted for and some are dropped. Returns the
/// run (which holds the coordinator's log file: keep it while reading the
/// log), the coordinator and the report.
async fn over_a_serial_target(
    target: &CountingTarget,
    workers: usize,
    secs: u64,
) -> (TestRun, Proc, Value) {
    let run = TestRun::new(&format!(
        "scenarios:\n  over: {{ arrival_rate: 20000/s, max_users: 1000, duration: {secs}s }}\nuser_classes:\n  u: {{ tasks: [ {{ get: /serial }} ] }}\n"
    ))
    .log("info,squall::growth=debug");
    let (coordinator, report) = run
        .local_ok(workers, &target.url(), Duration::from_secs(120))
        .await;
    let plan = 20_000 * secs;
    let (requests, dropped) = accounted(&report, target, plan - 1_000..=plan);
    assert!(
        dropped > 0,
        "{requests} sent: the target cannot take 20,000/s"
    );
    (run, coordinator, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_capacity_the_drops_are_counted_and_warned_about_while_the_run_goes_on() {
    let target = CountingTarget::start().await;
    // 200 arrivals a second, but 20 users that each wait 1 s for `/slow`:
    // about 20 a second can start, the rest find no idle user.
    let run = TestRun::new(
        "scenarios:\n  over: { arrival_rate: 200/s, max_users: 20, duration: 8s, graceful_stop: 5s }\nuser_classes:\n  u: { tasks: [ { get: /slow } ] }\n",
    );
    let mut c = run.local(1, &target.url());
    let started = c
        .announced("scenario `over` against ", Duration::from_secs(60))
        .await;
    let run_seen = Instant::now();
    // Each worker snapshot covers a second: the warning follows the first
    // second with drops. 5 s is generous for a loaded machine, and still
    // well before the 8 s run ends (a warning only in the report fails).
    let mut warned_after = None;
    while run_seen.elapsed() < Duration::from_secs(5) {
        if lines_with(&c.output(), WARNING) > 0 {
            warned_after = Some(run_seen.elapsed());
            break;
        }
        assert!(c.is_running(), "ended before warning\n{}", c.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        warned_after.is_some(),
        "no `{WARNING}` line within 5 s of the run against {started} starting\n{}",
        c.output()
    );
    assert_eq!(
        c.exit_code(Duration::from_secs(120)).await,
        0,
        "{}",
        c.output()
    );
    let out = c.output();
    assert_eq!(lines_with(&out, WARNING), 1, "once per worker\n{out}");
    let line = out.lines().find(|l| l.contains(WARNING)).unwrap_or("");
    assert!(
        line.contains("of 200/s") && line.contains("add workers or max_users"),
        "{line}"
    );
    let report = run.report();
    let t = &report["totals"];
    // Each of the 1,600 planned arrivals was either sent or dropped.
    let (requests, _) = accounted(&report, &target, 1_550..=1_600);
    // 20 users for 8 s at 1 s each: far below the 1,600 planned.
    assert!((10..=400).contains(&requests), "{requests} requests");
    let recs = report["recommendations"].as_array().expect("recs");
    assert!(
        recs.iter().any(|r| r["kind"] == "arrival_rate_not_met"),
        "{recs:?}"
    );
    assert!(has_event(&report, "dropped"), "timeline event");
    // Latency stays corrected: from the intended start, so at least the 1 s wait.
    let p50 = t["latency_ms"]["p50"].as_f64().expect("p50");
    assert!(p50 >= 990.0, "p50 {p50} ms");
    // The arrivals waited for a user, not for the generator: its schedule
    // took each in hand on time, and the report tells the two apart.
    let lag = t["schedule_lag_ms"]["p50"].as_f64().expect("schedule lag");
    assert!(lag >= 500.0, "schedule lag p50 {lag} ms: {t}");
    let own = t["generator_lag_ms"]["p99"]
        .as_f64()
        .expect("generator lag");
    assert!(
        own < 100.0,
        "generator lag p99 {own} ms while the users waited for /slow: {t}"
    );
    assert!(
        out.contains("of which the generator's own"),
        "summary splits the lag\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_capacity_every_arrival_is_sent_on_one_worker() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(
        "scenarios:\n  under: { arrival_rate: 300/s, max_users: 100, duration: 10s }\nuser_classes:\n  u: { tasks: [ { get: /ok } ] }\n",
    );
    let (c, report) = run
        .local_ok(1, &target.url(), Duration::from_secs(120))
        .await;
    let t = &report["totals"];
    // 3,000 planned. A worker may drop an arrival it could not start within
    // 1 s (a stalled CI machine), but it says so: sent + dropped is the plan.
    let (_, dropped) = accounted(&report, &target, 2_970..=3_000);
    assert!(dropped <= 30, "{dropped} dropped below capacity");
    if dropped == 0 {
        assert_eq!(lines_with(&c.output(), WARNING), 0, "{}", c.output());
    }
    let lag = t["schedule_lag_ms"]["p99"].as_f64();
    let own = t["generator_lag_ms"]["p99"].as_f64();
    assert!(lag.is_some() && own.is_some(), "lags recorded: {t}");
    // Each arrival's own lag is part of its schedule lag (it was taken in
    // hand before it started), so with every arrival sent, every quantile
    // of the one is at most the other's.
    if dropped == 0 {
        for q in ["p50", "p99", "max"] {
            let (own, lag) = (
                t["generator_lag_ms"][q].as_f64(),
                t["schedule_lag_ms"][q].as_f64(),
            );
            assert!(
                own <= lag,
                "generator lag {q} {own:?} over schedule lag {lag:?}: {t}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_capacity_a_small_pool_delivers_the_rate() {
    let target = CountingTarget::start().await;
    // 2,000/s against a target that answers at once: a handful of users
    // carry it. The pool may grow to 1,000 but should stay far below: it
    // grows only while arrivals wait more than 0.5 ms for a user and that
    // wait grows.
    let run = TestRun::new(
        "scenarios:\n  under: { arrival_rate: 2000/s, max_users: 1000, duration: 5s }\nuser_classes:\n  u: { tasks: [ { get: /ok } ] }\n",
    );
    let (_, report) = run
        .local_ok(1, &target.url(), Duration::from_secs(120))
        .await;
    // 10,000 planned: every one sent or counted as dropped, and within 1 %
    // of them sent.
    let (requests, dropped) = accounted(&report, &target, 9_900..=10_000);
    assert!(
        requests >= 9_900,
        "{requests} sent of 10,000 ({dropped} dropped)"
    );
    let pool = pool(&report);
    // A generous bound for a loaded machine (each stall of the worker's
    // thread lets arrivals wait and the pool grow a little); starting a
    // user for every arrival that found none idle reached hundreds.
    assert!(
        (1..=100).contains(&pool),
        "pool of {pool} users for 2,000/s against an instant target"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_holds_several_workers_pools_against_a_saturated_target() {
    let target = CountingTarget::start().await;
    // Four workers, 20,000/s against a target that serves one request at a
    // time. Each worker judges its pool's steps by its own completions, and
    // a step that only takes completions from the other workers stands
    // there: only the coordinator sees that the cluster's pools grew while
    // its completions did not, and holds every pool where it was.
    let (_run, coordinator, report) = over_a_serial_target(&target, 4, 6).await;
    let out = coordinator.output();
    assert_eq!(
        lines_with(&out, "the target is at its capacity; pools are held"),
        1,
        "said once: {out}"
    );
    assert!(has_event(&report, "pools held at"), "{report}");
    // Every ceiling sent is in the growth log: `pool ceiling worker=W
    // users=Some(N) second=S` (`None` lifts it). The ceilings judged on
    // second S reach the workers early in second S + 1; by that second's
    // end the users above them have left (each after its iteration, a few
    // milliseconds here), so the timeline's users then are at most their
    // sum, whatever the ceilings were.
    let log = coordinator.stderr();
    let mut sent: BTreeMap<u64, Option<u64>> = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("pool ceiling")) {
        let field = |name: &str| {
            line.split(&format!(" {name}="))
                .nth(1)
                .and_then(|v| v.split_whitespace().next())
                .unwrap_or_else(|| panic!("no {name} in {line}"))
        };
        let second: u64 = field("second").parse().expect("second");
        let users = field("users")
            .strip_prefix("Some(")
            .and_then(|v| v.strip_suffix(')'))
            .map(|v| v.parse::<u64>().expect("users"));
        let total = sent.entry(second).or_insert(Some(0));
        *total = total.zip(users).map(|(t, u)| t + u);
    }
    assert!(!sent.is_empty(), "no ceiling in the log: {log}");
    for p in report["timeline"].as_array().expect("timeline") {
        let t = p["t"].as_u64().expect("t");
        let users = p["users"].as_u64().expect("users");
        let in_force = t
            .checked_sub(1)
            .and_then(|s| sent.range(..=s).next_back())
            .and_then(|(_, c)| *c);
        if let Some(ceiling) = in_force {
            assert!(
                users <= ceiling + 4,
                "second {t}: {users} users under ceilings of {ceiling} ({sent:?}): {report}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_target_does_not_get_the_whole_pool() {
    let target = CountingTarget::start().await;
    // 20,000/s against a target that serves one request at a time (at most
    // 10,000/s): above its capacity whatever the pool. Each step of the
    // pool's growth past 16 users is judged by what it bought, and here
    // steps buy nothing: the pool stays small and the arrivals the target
    // cannot take are dropped and counted, not queued on 1,000 connections.
    let (_run, coordinator, report) = over_a_serial_target(&target, 1, 4).await;
    let pool = pool(&report);
    // Growing while the backlog grew (before steps were judged) ran the
    // pool to all 1,000.
    assert!(
        (1..=200).contains(&pool),
        "pool of {pool} users against a target that serves one at a time"
    );
    // The growth log (docs/scenarios.md) says why: steps were taken, and
    // the ones judged bought too little and were undone.
    let log = coordinator.stderr();
    assert!(lines_with(&log, "pool grows") > 0, "{log}");
    assert!(
        lines_with(&log, "step undone: it bought too little") > 0,
        "{log}"
    );
}
