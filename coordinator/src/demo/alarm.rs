//! Precise wake-ups for the demo target's `/api/delay/{ms}`: tokio's timer
//! rounds every sleep up to the next whole millisecond, which would add 0–1 ms
//! of noise to the very service time benchmarks compare generators against.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Instant;

use tokio::sync::oneshot;

/// One thread that sleeps (with the kernel's precision) until the earliest
/// pending deadline and wakes whoever asked for it.
#[derive(Debug)]
pub struct AlarmClock {
    requests: mpsc::Sender<Alarm>,
}

#[derive(Debug)]
struct Alarm {
    at: Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Alarm {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Alarm {}

impl PartialOrd for Alarm {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Alarm {
    /// Reversed, so the max-heap yields the earliest deadline first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl AlarmClock {
    /// Starts the clock's thread; it ends when the clock is dropped.
    pub fn start() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Alarm>();
        std::thread::Builder::new()
            .name("squall-alarm".into())
            .spawn(move || {
                let mut pending: BinaryHeap<Alarm> = BinaryHeap::new();
                loop {
                    let next = match pending.peek() {
                        None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                        Some(a) => rx.recv_timeout(a.at.saturating_duration_since(Instant::now())),
                    };
                    match next {
                        Ok(alarm) => pending.push(alarm),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    let now = Instant::now();
                    while pending.peek().is_some_and(|a| a.at <= now) {
                        if let Some(a) = pending.pop() {
                            let _ = a.wake.send(());
                        }
                    }
                }
            })?;
        Ok(AlarmClock { requests: tx })
    }

    /// Waits until `at`, to within the kernel's timer slack (about 50 µs).
    pub async fn sleep_until(&self, at: Instant, seq: u64) {
        let (wake, woken) = oneshot::channel();
        if self.requests.send(Alarm { at, seq, wake }).is_err() {
            tokio::time::sleep_until(at.into()).await;
            return;
        }
        let _ = woken.await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn wakes_in_deadline_order_and_on_time() {
        let clock = std::sync::Arc::new(AlarmClock::start().expect("thread"));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (i, ms) in [30u64, 10, 20].into_iter().enumerate() {
            let clock = clock.clone();
            tasks.push(tokio::spawn(async move {
                clock
                    .sleep_until(start + Duration::from_millis(ms), i as u64)
                    .await;
                (ms, start.elapsed())
            }));
        }
        for t in tasks {
            let (ms, took) = t.await.expect("task");
            assert!(
                took >= Duration::from_millis(ms),
                "{ms} ms alarm woke after {took:?}"
            );
            assert!(
                took < Duration::from_millis(ms + 20),
                "{ms} ms alarm woke after {took:?}"
            );
        }
    }
}
