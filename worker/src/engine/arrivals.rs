//! One engine thread's open-model arrivals waiting for a user: its slice of the schedule, read in order.
//!
//! The queue of arrivals that are due but not started is the thread's slice
//! of the schedule itself, read in order: its head is the next iteration not
//! yet taken, and everything from the head up to now is waiting. Users that
//! finish an iteration take the head themselves (no wake-up, no hand-over),
//! the scheduler hands it to an idle user or starts a new one. So the queue
//! is FIFO, holds no memory and allocates nothing; it is bounded by the late
//! bound (`MAX_START_LAG`): an arrival that has waited longer is dropped,
//! which caps the queue at the rate times that bound. A ring of due times
//! would hold exactly what the schedule recomputes, plus a capacity to tune.

use std::cell::Cell;
use std::time::{Duration, Instant};

use squall_common::plan::ArrivalCurve;

/// How late an open-model arrival may start before it is dropped instead:
/// past this the generator (not the target) is what delays it, the asked-for
/// rate is not being delivered, and sending it anyway would only add the
/// generator's own backlog to the latency percentiles. Dropped arrivals are
/// counted (`dropped_iterations`) and the coordinator warns within a second.
/// 1 s, not less: with 100 ms, the 500/s two-worker e2e run (far below
/// capacity) once counted outside its ±1 % on the shared 2-core machine at a
/// load average of 27 (a stalled worker drops what it cannot start in time),
/// and passed when run again.
pub(super) const MAX_START_LAG: Duration = Duration::from_secs(1);

/// What the queue's head holds for a user that asks for work at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Take {
    /// Start this arrival (its planned time; lag is measured from it).
    Start(Instant),
    /// Nothing due yet: the next arrival is due at this instant.
    Wait(Instant),
    /// The schedule is over (no more iterations, the budget spent, or stopped).
    End,
}

/// This thread's slice of the schedule: global iteration k goes to worker
/// k mod W; the worker's m-th iteration goes to thread m mod T.
pub(super) struct Arrivals {
    curve: ArrivalCurve,
    t0: Instant,
    worker_index: u64,
    worker_count: u64,
    thread_count: u64,
    /// The worker's iteration index of the head.
    m: u64,
    /// The head's planned time; `None` once the schedule is over.
    head: Option<Instant>,
    /// The first arrival past the head not yet taken in hand (`see`): those
    /// between the head and it are waiting, and their generator lag is
    /// recorded. At or behind the head, nothing past the head has been seen.
    seen: u64,
    /// `seen`'s planned time, kept only while `seen` is past the head.
    seen_at: Option<Instant>,
}

impl Arrivals {
    /// The schedule from iteration `first_m` of this worker on (which must be
    /// one of this thread's: `first_m mod thread_count` is its index).
    pub(super) fn new(
        curve: ArrivalCurve,
        t0: Instant,
        (worker_index, worker_count): (u64, u64),
        thread_count: u64,
        first_m: u64,
    ) -> Arrivals {
        let mut a = Arrivals {
            curve,
            t0,
            worker_index,
            worker_count: worker_count.max(1),
            thread_count: thread_count.max(1),
            m: first_m,
            head: None,
            seen: first_m,
            seen_at: None,
        };
        a.head = a.time_of(first_m);
        a
    }

    fn time_of(&self, m: u64) -> Option<Instant> {
        let k = m
            .checked_mul(self.worker_count)?
            .checked_add(self.worker_index)?;
        let at = self.curve.arrival_time(k)?;
        Some(self.t0 + Duration::from_secs_f64(at))
    }

    fn advance(&mut self) {
        self.m += self.thread_count;
        self.head = self.time_of(self.m);
    }

    /// Ends the schedule: every later `take` says `End`.
    pub(super) fn end(&mut self) {
        self.head = None;
        self.seen_at = None;
    }

    /// The head's planned time (`None`: the schedule is over).
    pub(super) fn head(&self) -> Option<Instant> {
        self.head
    }

    /// How late the head is at `now` (`None`: nothing is due, or the schedule is over).
    pub(super) fn head_late(&self, now: Instant) -> Option<Duration> {
        self.head.filter(|h| *h <= now).map(|h| now - h)
    }

    /// Takes the head if it is due by `now`. Each arrival taken or dropped
    /// spends one iteration of the budget (`take_iteration`; false once it is
    /// spent, which ends the schedule); arrivals more than `MAX_START_LAG`
    /// late are dropped on the way and counted in `dropped`. An arrival no
    /// wake-up of the schedule has seen yet is taken in hand now: `seen`
    /// gets its planned time (for its generator lag).
    pub(super) fn take(
        &mut self,
        now: Instant,
        mut take_iteration: impl FnMut() -> bool,
        dropped: &Cell<u64>,
        mut seen: impl FnMut(Instant),
    ) -> Take {
        loop {
            let Some(head) = self.head else {
                return Take::End;
            };
            if head > now {
                return Take::Wait(head);
            }
            if !take_iteration() {
                self.end();
                return Take::End;
            }
            if self.m >= self.seen {
                seen(head);
            }
            self.advance();
            if now - head > MAX_START_LAG {
                dropped.set(dropped.get() + 1);
                continue;
            }
            return Take::Start(head);
        }
    }

    /// Takes every arrival due by `now` in hand, those no user could take
    /// included (they wait for one): `seen` gets each one's planned time,
    /// once, for its generator lag (`OpenPool::generator_lag`). Amortised
    /// O(1) per arrival.
    pub(super) fn see(&mut self, now: Instant, mut seen: impl FnMut(Instant)) {
        if self.seen <= self.m {
            self.seen = self.m;
            self.seen_at = self.head;
        }
        while let Some(at) = self.seen_at.filter(|at| *at <= now) {
            seen(at);
            self.seen += self.thread_count;
            self.seen_at = self.time_of(self.seen);
        }
    }

    /// Drops every arrival more than `bound` late at `now`: with
    /// `MAX_START_LAG`, so that drops are counted (and warned about) within
    /// a second even while no user asks for work (every user stuck on a
    /// slow target); with zero when the run stops, so that every planned
    /// arrival is either sent or counted as dropped. False when the budget
    /// ran out on the way (the schedule is over).
    pub(super) fn drop_late(
        &mut self,
        now: Instant,
        bound: Duration,
        mut take_iteration: impl FnMut() -> bool,
        dropped: &Cell<u64>,
    ) -> bool {
        while let Some(head) = self.head {
            if head > now || (!bound.is_zero() && now - head <= bound) {
                break;
            }
            if !take_iteration() {
                self.end();
                return false;
            }
            dropped.set(dropped.get() + 1);
            self.advance();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_common::LoadModel;

    fn curve(per_second: f64, secs: u64) -> ArrivalCurve {
        LoadModel::Open {
            rate: squall_common::rate::Rate { per_second },
            max_users: 10,
            duration: Duration::from_secs(secs),
        }
        .arrival_curve()
        .expect("open model")
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn arrivals_wait_in_order_and_are_taken_first_in_first_out() {
        let t0 = Instant::now();
        // 1,000/s: iteration k at k ms.
        let mut a = Arrivals::new(curve(1000.0, 10), t0, (0, 1), 1, 0);
        let dropped = Cell::new(0);
        let now = t0 + ms(3) + Duration::from_micros(500);
        // 0, 1, 2 and 3 ms are due, in order; 4 ms is not.
        for k in 0..4 {
            assert_eq!(
                a.take(now, || true, &dropped, |_| {}),
                Take::Start(t0 + ms(k))
            );
        }
        assert_eq!(
            a.take(now, || true, &dropped, |_| {}),
            Take::Wait(t0 + ms(4))
        );
        assert_eq!(dropped.get(), 0);
        assert_eq!(a.head_late(now), None);
        assert_eq!(a.head_late(t0 + ms(6)), Some(ms(2)));
    }

    #[test]
    fn a_thread_takes_only_its_own_slice_of_the_workers_schedule() {
        let t0 = Instant::now();
        // Worker 1 of 2, thread 1 of 2 (first_m 1): global k = 2m + 1, m = 1, 3, 5...
        let mut a = Arrivals::new(curve(1000.0, 10), t0, (1, 2), 2, 1);
        let dropped = Cell::new(0);
        let now = t0 + ms(100);
        let got: Vec<Take> = (0..3)
            .map(|_| a.take(now, || true, &dropped, |_| {}))
            .collect();
        assert_eq!(
            got,
            vec![
                Take::Start(t0 + ms(3)),
                Take::Start(t0 + ms(7)),
                Take::Start(t0 + ms(11))
            ]
        );
    }

    #[test]
    fn an_arrival_waits_up_to_the_late_bound_and_is_dropped_after() {
        let t0 = Instant::now();
        let mut a = Arrivals::new(curve(1000.0, 10), t0, (0, 1), 1, 0);
        let dropped = Cell::new(0);
        // At 1.0025 s: arrivals 0, 1 and 2 ms are more than 1 s late.
        let now = t0 + MAX_START_LAG + Duration::from_micros(2500);
        assert_eq!(
            a.take(now, || true, &dropped, |_| {}),
            Take::Start(t0 + ms(3))
        );
        assert_eq!(dropped.get(), 3);
        // The scheduler's sweep drops what no user asked for.
        let later = now + ms(10);
        assert!(a.drop_late(later, MAX_START_LAG, || true, &dropped));
        assert_eq!(dropped.get(), 3 + 9);
        assert_eq!(
            a.take(later, || true, &dropped, |_| {}),
            Take::Start(t0 + ms(13))
        );
        // When the run stops, everything due and not started is dropped.
        assert!(a.drop_late(later, Duration::ZERO, || true, &dropped));
        assert_eq!(dropped.get(), 3 + 9 + 999, "14 to 1012 ms");
        assert_eq!(a.head(), Some(t0 + ms(1013)));
    }

    #[test]
    fn the_budget_and_the_plan_end_the_schedule() {
        let t0 = Instant::now();
        let mut a = Arrivals::new(curve(1000.0, 10), t0, (0, 1), 1, 0);
        let dropped = Cell::new(0);
        let left = Cell::new(2u64);
        let budget = || {
            let l = left.get();
            left.set(l.saturating_sub(1));
            l > 0
        };
        let now = t0 + ms(50);
        assert!(matches!(
            a.take(now, budget, &dropped, |_| {}),
            Take::Start(_)
        ));
        assert!(matches!(
            a.take(now, budget, &dropped, |_| {}),
            Take::Start(_)
        ));
        assert_eq!(a.take(now, budget, &dropped, |_| {}), Take::End);
        assert_eq!(
            a.take(now, || true, &dropped, |_| {}),
            Take::End,
            "stays over"
        );
        // 10 s at 10/s: 100 iterations, then the plan is over.
        let mut b = Arrivals::new(curve(10.0, 10), t0, (0, 1), 1, 0);
        let end = t0 + Duration::from_secs(20);
        let mut started = 0;
        loop {
            match b.take(end, || true, &dropped, |_| {}) {
                Take::Start(_) => started += 1,
                Take::End => break,
                Take::Wait(w) => panic!("waiting for {w:?} past the end"),
            }
        }
        // Everything was more than 1 s late by then: all dropped.
        assert_eq!(started, 0);
        assert_eq!(dropped.get(), 100);
    }

    #[test]
    fn each_arrival_is_taken_in_hand_once_by_a_user_or_by_the_schedule() {
        let t0 = Instant::now();
        // 1,000/s: iteration k at k ms.
        let mut a = Arrivals::new(curve(1000.0, 10), t0, (0, 1), 1, 0);
        let dropped = Cell::new(0);
        let mut late = Vec::new();
        // A user asks at 0.2 ms: arrival 0 is taken in hand then.
        let now = t0 + Duration::from_micros(200);
        assert_eq!(
            a.take(now, || true, &dropped, |at| late.push(now - at)),
            Take::Start(t0)
        );
        // The schedule wakes at 3.5 ms with no user idle: 1, 2 and 3 ms wait,
        // and were in hand 2.5, 1.5 and 0.5 ms late.
        let wake = t0 + Duration::from_micros(3500);
        a.see(wake, |at| late.push(wake - at));
        // Seen once: neither a second wake-up nor the users taking them later
        // record them again.
        let next = wake + ms(1);
        a.see(next, |at| late.push(next - at));
        let later = wake + ms(2);
        for k in 1..4 {
            assert_eq!(
                a.take(later, || true, &dropped, |at| late.push(later - at)),
                Take::Start(t0 + ms(k))
            );
        }
        let us = |n| Duration::from_micros(n);
        // 4 ms was due at the second wake-up (4.5 ms); 5 ms was not yet, and a
        // user took it first, at 5.5 ms.
        assert_eq!(late, vec![us(200), us(2500), us(1500), us(500), us(500)]);
        assert_eq!(
            a.take(later, || true, &dropped, |at| late.push(later - at)),
            Take::Start(t0 + ms(4))
        );
        assert_eq!(
            a.take(later, || true, &dropped, |at| late.push(later - at)),
            Take::Start(t0 + ms(5))
        );
        assert_eq!(late.len(), 6);
        assert_eq!(late[5], us(500));
        assert_eq!(dropped.get(), 0);
    }
}
