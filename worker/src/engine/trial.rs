//! Whether a step of the open-model pool's growth bought anything: each step is a trial, judged by the completion rate after it against the rate before, and undone if it bought too little.
//!
//! A growing backlog (`growth::Backlog`) says the pool completes less than
//! the rate asked for; it cannot say why. When the pool is too small, a
//! quarter more users complete about a quarter more. When the target or the
//! generator's own thread is the limit, they complete the same, wait longer,
//! and the backlog keeps growing: the pool ran to `max_users` (1,000) from
//! 80 % of the closed model's maximum on one core, where 1,000 connections
//! deliver less than 50 do (docs/benchmarks.md, "open model at speed").
//! So every step is judged once enough iterations have completed after it,
//! and a step that bought less than a third of its share is undone (its
//! users leave after their current iteration) and growth waits a while
//! before it tries again.
//!
//! A worker's engine threads share one target, so a step is judged by the
//! whole worker's completions (`Completions`), one thread's step at a time:
//! judged by its own thread's rate, a step that only took completions from
//! the other thread stood, and two threads against a target that serves one
//! request at a time ran their pools to 461 users (e2e
//! `open_model::a_saturated_target_does_not_get_the_whole_pool`). Workers
//! on other hosts are not seen: against one saturated target a step can
//! still take completions from another worker and stand. The coordinator,
//! which sees them all a second at a time, holds the pools then
//! (`Completions::set_ceiling`, docs/scenarios.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Completions after a quarter step before it is judged, and in the window
/// the rate before it comes from: 512 at 30,000/s is 17 ms, long enough that
/// a response batch or a scheduling hiccup of a millisecond or two moves the
/// rate by a few percent, against the 8 % a step must buy. 10 ms windows
/// stalled a pool at 13 users at half the closed maximum on this 2-core
/// machine (an earlier attempt, not merged).
const QUARTER_COMPLETIONS: u64 = 512;

/// Completions after a doubling step before it is judged: it must buy a
/// third more, so fewer samples tell, and a pool far behind its rate is
/// judged in a quarter of the time.
const DOUBLE_COMPLETIONS: u64 = 128;

/// The shortest time a step is judged over, whatever the rate.
const JUDGE_MIN: Duration = Duration::from_millis(5);

/// The longest a judgement waits for its completions. A slow target (a
/// 100 ms endpoint at 500/s) would hold growth for seconds per step; there
/// the step stands unjudged, as before trials, and the pool grows on the
/// backlog alone.
const JUDGE_MAX: Duration = Duration::from_millis(200);

/// The pool size below which steps stand unjudged. One user is a large
/// share of a small pool and its gain is lost in the noise of a few
/// hundred completions: judged from the first user, pools at 80-90 % of
/// the closed maximum on one core stuck at 6-7 users (steps of one user
/// undone again and again) with the arrivals' lag p50 at 99 ms, where from
/// 16 they reached 22-63 users and delivered every arrival (same build,
/// same minutes, docs/benchmarks.md). Sixteen connections cost any target
/// next to nothing.
pub(super) const JUDGE_FROM: u64 = 16;

/// The share of its proportional gain a step must buy to stand: a quarter
/// more users must complete at least 8.3 % more, a doubling 33 % more.
const GAIN_SHARE: f64 = 1.0 / 3.0;

/// How long growth waits after a step that bought too little, doubling with
/// each such step in a row up to `HOLD_MAX`: the target's capacity does not
/// change from one millisecond to the next, but a judgement spoilt by a
/// stall must not stop a pool that is too small for long (the backlog meets
/// `MAX_START_LAG` after 1 s and drops).
const HOLD: Duration = Duration::from_millis(100);
const HOLD_MAX: Duration = Duration::from_millis(800);

/// One worker's count of completed open-model iterations, a slot per
/// engine thread, whether one of its threads has a step being judged, and
/// the ceiling the coordinator set on the whole pool (`u64::MAX`: none).
/// Each thread writes its slot at its schedule's wake-ups (at most one every
/// 0.25 ms), not per iteration: a shared counter bumped by every completion
/// would move one cache line between the cores 100,000 times a second.
#[derive(Debug)]
pub struct Completions {
    slots: Box<[Slot]>,
    judging: AtomicBool,
    ceiling: AtomicU64,
}

/// A slot on a cache line of its own, so that two threads' writes do not
/// contend.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Slot(AtomicU64);

impl Completions {
    pub fn new(threads: usize) -> Completions {
        Completions {
            slots: (0..threads.max(1)).map(|_| Slot::default()).collect(),
            judging: AtomicBool::new(false),
            ceiling: AtomicU64::new(u64::MAX),
        }
    }

    /// Sets the worker's pool ceiling (`None` lifts it). Workers on other
    /// hosts share the target but not these counts: only the coordinator
    /// sees that their pools grew while the cluster's completions did not
    /// (`coordinator::ceiling`), and it says so with this.
    pub fn set_ceiling(&self, users: Option<u64>) {
        self.ceiling
            .store(users.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Engine thread `thread`'s part of the ceiling, split over `threads`
    /// as `max_users` is (largest remainder), and never below one user
    /// (`None`: no ceiling).
    pub(super) fn ceiling_for(&self, thread: u64, threads: u64) -> Option<u64> {
        let c = self.ceiling.load(Ordering::Relaxed);
        if c == u64::MAX {
            return None;
        }
        Some(squall_common::partition::equal_part(c, threads.max(1), thread).max(1))
    }

    fn publish(&self, thread: usize, done: u64) {
        if let Some(s) = self.slots.get(thread) {
            s.0.store(done, Ordering::Relaxed);
        }
    }

    fn total(&self) -> u64 {
        self.slots.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }

    fn claim(&self) -> bool {
        self.judging
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    fn release(&self) {
        self.judging.store(false, Ordering::Release);
    }
}

/// What became of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// No step pending, or it is still being judged.
    Pending,
    /// It bought enough (or could not be judged in time): it stands.
    Stands,
    /// It bought too little: this many users should leave.
    Undo(u64),
}

#[derive(Debug)]
struct Step {
    at: Instant,
    /// Iterations completed when it was taken.
    done: u64,
    /// The completion rate before it, per second.
    before: f64,
    added: u64,
    /// `added` over the pool before it.
    share: f64,
    need: u64,
    /// The backlog cleared while it was judged: the step caught up.
    caught_up: bool,
}

/// One engine thread's steps and their verdicts, fed its count of
/// completed iterations at every wake-up of its schedule.
#[derive(Debug)]
pub(super) struct Trials {
    shared: Arc<Completions>,
    thread: usize,
    /// This thread holds the worker's one judgement (`Completions::claim`).
    claimed: bool,
    /// Where the current window of the worker's completion rate began.
    mark: Option<(Instant, u64)>,
    /// The last full window's rate, per second.
    rate: Option<f64>,
    step: Option<Step>,
    hold_until: Option<Instant>,
    hold: Duration,
}

impl Drop for Trials {
    /// A schedule that ends with a step being judged frees the worker's judgement.
    fn drop(&mut self) {
        self.end_step();
    }
}

impl Trials {
    pub(super) fn new(shared: Arc<Completions>, thread: usize) -> Trials {
        Trials {
            shared,
            thread,
            claimed: false,
            mark: None,
            rate: None,
            step: None,
            hold_until: None,
            hold: HOLD,
        }
    }

    /// Notes `own` (iterations this thread has completed so far) at `now`,
    /// whether its backlog is still there (`late`), and judges its pending
    /// step by the whole worker's completions.
    pub(super) fn tick(&mut self, now: Instant, own: u64, late: bool) -> Verdict {
        self.shared.publish(self.thread, own);
        let done = self.shared.total();
        match self.mark {
            None => self.mark = Some((now, done)),
            Some((at, d)) => {
                let span = now.saturating_duration_since(at);
                if (done.saturating_sub(d) >= QUARTER_COMPLETIONS && span >= JUDGE_MIN)
                    || span >= JUDGE_MAX
                {
                    self.rate = Some(per_second(done.saturating_sub(d), span));
                    self.mark = Some((now, done));
                }
            }
        }
        let Some(step) = self.step.as_mut() else {
            return Verdict::Pending;
        };
        step.caught_up |= !late;
        let span = now.saturating_duration_since(step.at);
        let completed = done.saturating_sub(step.done);
        if span >= JUDGE_MAX {
            self.end_step();
            return self.stands();
        }
        if completed < step.need || span < JUDGE_MIN {
            return Verdict::Pending;
        }
        let after = per_second(completed, span);
        let bought = step.caught_up || after >= step.before * (1.0 + step.share * GAIN_SHARE);
        let added = step.added;
        self.end_step();
        // The next step's rate before is the pool as it is now.
        self.mark = Some((now, done));
        self.rate = Some(after);
        if bought {
            self.stands()
        } else {
            self.hold_until = Some(now + self.hold);
            self.hold = (self.hold * 2).min(HOLD_MAX);
            Verdict::Undo(added)
        }
    }

    fn end_step(&mut self) {
        self.step = None;
        if std::mem::take(&mut self.claimed) {
            self.shared.release();
        }
    }

    fn stands(&mut self) -> Verdict {
        self.hold = HOLD;
        Verdict::Stands
    }

    /// Whether a pool of `live` users may take a step now: none of this
    /// thread's is being judged, the hold after one that bought too little
    /// is over, and, from `JUDGE_FROM` users on, the worker's rate is known
    /// and no other thread's step is being judged (this thread then holds
    /// the judgement until its step's verdict, or until `stepped` finds
    /// nothing to judge).
    pub(super) fn may_step(&mut self, now: Instant, live: u64) -> bool {
        if self.step.is_some() || self.hold_until.is_some_and(|h| now < h) {
            return false;
        }
        if live < JUDGE_FROM {
            return true;
        }
        if self.before(now).is_none() {
            return false;
        }
        self.claimed = self.claimed || self.shared.claim();
        self.claimed
    }

    /// The worker's completion rate before a step at `now`: the window
    /// under way when it holds enough, else the last full one.
    fn before(&self, now: Instant) -> Option<f64> {
        let done = self.shared.total();
        let partial = self.mark.and_then(|(at, d)| {
            let span = now.saturating_duration_since(at);
            let n = done.saturating_sub(d);
            (n >= DOUBLE_COMPLETIONS && span >= JUDGE_MIN).then(|| per_second(n, span))
        });
        partial.or(self.rate)
    }

    /// Notes a step from `from` users to `from + added` at `now` (after
    /// `may_step`), to be judged; `double` is a doubling. Steps of a pool
    /// under `JUDGE_FROM` users stand unjudged.
    pub(super) fn stepped(&mut self, now: Instant, from: u64, added: u64, double: bool) {
        let before = self.before(now);
        match before {
            Some(before) if from >= JUDGE_FROM && added > 0 && self.claimed => {
                self.step = Some(Step {
                    at: now,
                    done: self.shared.total(),
                    before,
                    added,
                    share: added as f64 / from as f64,
                    need: if double {
                        DOUBLE_COMPLETIONS
                    } else {
                        QUARTER_COMPLETIONS
                    },
                    caught_up: false,
                });
            }
            _ => self.end_step(),
        }
    }
}

fn per_second(n: u64, span: Duration) -> f64 {
    n as f64 / span.as_secs_f64().max(1e-6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn alone() -> Trials {
        Trials::new(Arc::new(Completions::new(1)), 0)
    }

    #[test]
    fn the_coordinators_ceiling_is_split_over_the_threads_as_max_users_is() {
        let c = Completions::new(3);
        assert_eq!(c.ceiling_for(0, 3), None, "none until set");
        c.set_ceiling(Some(10));
        let parts: Vec<_> = (0..3).map(|t| c.ceiling_for(t, 3)).collect();
        assert_eq!(parts, vec![Some(4), Some(3), Some(3)]);
        assert_eq!(
            squall_common::partition::largest_remainder(10, &[1, 1, 1]),
            vec![4, 3, 3]
        );
        // A thread keeps one user whatever the ceiling.
        c.set_ceiling(Some(1));
        assert_eq!(c.ceiling_for(2, 3), Some(1));
        c.set_ceiling(None);
        assert_eq!(c.ceiling_for(1, 3), None, "lifted");
    }

    /// A step of `t` at `at` from `from` users by `added`, with `done` completed.
    fn step(t: &mut Trials, at: Instant, done: u64, from: u64, added: u64) {
        t.tick(at, done, true);
        assert!(t.may_step(at, from), "may step at {from} users");
        t.stepped(at, from, added, false);
    }

    /// The verdict on a step from `from` users by `added`, for a pool
    /// completing `rate(users)` iterations a second, with the backlog never
    /// clearing; ticks once a millisecond.
    fn judge(from: u64, added: u64, double: bool, rate: impl Fn(u64) -> f64) -> (Verdict, u64) {
        let t0 = Instant::now();
        let mut t = alone();
        let mut done = 0.0;
        for i in 0..50 {
            assert_eq!(t.tick(t0 + ms(i), done as u64, true), Verdict::Pending);
            done += rate(from) / 1000.0;
        }
        t.tick(t0 + ms(50), done as u64, true);
        assert!(t.may_step(t0 + ms(50), from));
        t.stepped(t0 + ms(50), from, added, double);
        assert!(!t.may_step(t0 + ms(50), from), "one step at a time");
        for i in 50..300 {
            match t.tick(t0 + ms(i), done as u64, true) {
                Verdict::Pending => {}
                v => return (v, i - 50),
            }
            done += rate(from + added) / 1000.0;
        }
        panic!("no verdict in 250 ms");
    }

    #[test]
    fn a_step_that_completes_more_stands() {
        // The pool is the limit: each user completes 1,000/s.
        let (v, after) = judge(40, 10, false, |n| n as f64 * 1000.0);
        assert_eq!(v, Verdict::Stands);
        assert!(after <= 15, "judged after {after} ms at 50,000/s");
    }

    #[test]
    fn a_step_that_completes_the_same_is_undone_and_growth_waits() {
        // The target is the limit: 30,000/s whatever the pool.
        let (v, _) = judge(40, 10, false, |_| 30_000.0);
        assert_eq!(v, Verdict::Undo(10));
        let t0 = Instant::now();
        let mut t = alone();
        t.tick(t0, 0, true);
        step(&mut t, t0 + ms(20), 600, 40, 10);
        let v = t.tick(t0 + ms(40), 1_200, true);
        assert_eq!(v, Verdict::Undo(10));
        assert!(!t.may_step(t0 + ms(40) + HOLD - ms(1), 40));
        // A second in a row waits twice as long.
        step(&mut t, t0 + ms(40) + HOLD, 4_200, 40, 10);
        let v = t.tick(t0 + ms(160), 4_800, true);
        assert_eq!(v, Verdict::Undo(10));
        assert!(!t.may_step(t0 + ms(160) + 2 * HOLD - ms(1), 40));
        assert!(t.may_step(t0 + ms(160) + 2 * HOLD, 40));
    }

    #[test]
    fn a_step_that_buys_a_little_is_undone() {
        // 4 % more for a quarter more users: under a third of 25 %.
        let (v, _) = judge(40, 10, false, |n| if n > 40 { 31_200.0 } else { 30_000.0 });
        assert_eq!(v, Verdict::Undo(10));
        // 10 % more: enough.
        let (v, _) = judge(40, 10, false, |n| if n > 40 { 33_000.0 } else { 30_000.0 });
        assert_eq!(v, Verdict::Stands);
    }

    #[test]
    fn a_doubling_must_buy_a_third_and_is_judged_sooner() {
        let (v, after) = judge(16, 16, true, |n| n as f64 * 1000.0);
        assert_eq!(v, Verdict::Stands);
        assert!(after <= 10, "judged after {after} ms at 32,000/s");
        let (v, _) = judge(16, 16, true, |n| if n > 16 { 20_000.0 } else { 16_000.0 });
        assert_eq!(v, Verdict::Undo(16), "25 % more for twice the users");
    }

    #[test]
    fn a_step_after_which_the_backlog_clears_stands() {
        // The backlog was small: clearing it needs only a few percent more.
        let t0 = Instant::now();
        let mut t = alone();
        t.tick(t0, 0, true);
        step(&mut t, t0 + ms(20), 600, 40, 10);
        assert_eq!(t.tick(t0 + ms(22), 660, false), Verdict::Pending);
        assert_eq!(t.tick(t0 + ms(40), 1_220, true), Verdict::Stands);
    }

    #[test]
    fn a_slow_pool_is_not_held_for_long() {
        // 500/s: 512 completions would take a second.
        let t0 = Instant::now();
        let mut t = alone();
        t.tick(t0, 0, true);
        step(&mut t, t0 + JUDGE_MAX, 100, 20, 5);
        assert_eq!(t.tick(t0 + ms(300), 150, true), Verdict::Pending);
        assert_eq!(t.tick(t0 + 2 * JUDGE_MAX, 200, true), Verdict::Stands);
    }

    #[test]
    fn small_pools_step_freely_and_large_ones_wait_for_a_rate() {
        let t0 = Instant::now();
        let mut t = alone();
        t.tick(t0, 0, true);
        assert!(t.may_step(t0, JUDGE_FROM - 1), "a small pool: unjudged");
        t.stepped(t0, JUDGE_FROM - 1, 3, false);
        assert!(
            !t.may_step(t0 + ms(1), JUDGE_FROM),
            "no rate yet: nothing to judge by, so no step"
        );
        t.tick(t0 + ms(20), 1_000, true);
        assert!(t.may_step(t0 + ms(20), JUDGE_FROM));
        t.stepped(t0 + ms(20), JUDGE_FROM, 4, false);
        assert!(!t.may_step(t0 + ms(20), JUDGE_FROM), "being judged");
    }

    #[test]
    fn one_step_at_a_time_per_worker_judged_by_its_total() {
        // Two threads against one target that completes 30,000/s in all:
        // thread 0's step takes completions from thread 1, and buys the
        // worker nothing.
        let shared = Arc::new(Completions::new(2));
        let (mut a, mut b) = (Trials::new(shared.clone(), 0), Trials::new(shared, 1));
        let t0 = Instant::now();
        let (mut da, mut db) = (0u64, 0u64);
        for i in 1..=40 {
            da += 15;
            db += 15;
            a.tick(t0 + ms(i), da, true);
            b.tick(t0 + ms(i), db, true);
        }
        assert!(a.may_step(t0 + ms(40), 40));
        a.stepped(t0 + ms(40), 40, 10, false);
        assert!(
            !b.may_step(t0 + ms(40), 40),
            "thread 0's step is being judged"
        );
        let mut verdict = Verdict::Pending;
        for i in 41..80 {
            // Thread 0 now completes 18 a ms, thread 1 only 12.
            da += 18;
            db += 12;
            b.tick(t0 + ms(i), db, true);
            verdict = a.tick(t0 + ms(i), da, true);
            if verdict != Verdict::Pending {
                break;
            }
        }
        assert_eq!(verdict, Verdict::Undo(10), "judged by the worker's total");
        assert!(b.may_step(t0 + ms(80), 40), "the judgement is free again");
    }
}
