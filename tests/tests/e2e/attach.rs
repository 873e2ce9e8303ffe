//! Attaching: whatever the coordinator sends a newly attached worker, its Welcome comes first.

use std::time::Duration;

use squall_common::protocol::CoordinatorMessage;
use squall_tests::{CountingTarget, FakeWorker, TestRun};

const SCENARIO: &str = "scenarios:\n  steady: { users: 4, spawn_rate: 100, duration: 2s }\nuser_classes:\n  u: { tasks: [ { name: ok, get: /ok } ] }\n";

/// Attaches, each a fresh stream. Before the fix a forwarder whose first
/// poll came a millisecond late could send its first Ping ahead of the
/// Welcome (an unbiased `select!` over a queued Welcome and an immediate
/// first tick); that needed a coordinator as slow as one under valgrind,
/// which this test does not make, so it checks the order as a contract.
const ATTACHES: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_welcome_comes_before_any_ping() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(SCENARIO);
    // More workers than will ever attach: the run never starts, and the
    // coordinator only welcomes and pings.
    let _coord = run
        .coordinator(ATTACHES + 1, &target.url(), &["--wait-timeout", "60s"])
        .await;
    let mut fakes = Vec::new();
    for i in 0..ATTACHES {
        let mut fake = FakeWorker::attach(&run.master(), &format!("fake-{i}")).await;
        let first = fake.first(Duration::from_secs(10)).await;
        assert!(
            matches!(first, CoordinatorMessage::Welcome(_)),
            "attach {i}: the first message was {first:?}, not the Welcome"
        );
        // Keep it attached: a second attach under a live id is refused.
        fakes.push(fake);
    }
    drop(fakes);
}
