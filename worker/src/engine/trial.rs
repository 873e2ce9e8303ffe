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

use std::time::{Duration, Instant};

/// Completions after a quarter step before it is judged, and in the window
/// the rate before it comes from: 512 at 30,000/s is 17 ms, long enough that
/// a response batch or a scheduling hiccup of a millisecond or two moves the
/// rate by a few percent, against the 8 % a step must buy. 10 ms windows
/// stalled a pool at 13 users at half the closed maximum on this 2-core
/// machine (an earlier attempt, not merged).
const QUARTER_COMPLETIONS: u64 = 512;

/// Completions after a doubling step before it is judged: it must buy a
/// third more, so fewer samples tell; a start-up doubles 4 times from 1
/// user in about 25 ms at 10,000/s instead of 100 ms.
const DOUBLE_COMPLETIONS: u64 = 128;

/// The shortest time a step is judged over, whatever the rate.
const JUDGE_MIN: Duration = Duration::from_millis(5);

/// The longest a judgement waits for its completions. A slow target (a
/// 100 ms endpoint at 500/s) would hold growth for seconds per step; there
/// the step stands unjudged, as before trials, and the pool grows on the
/// backlog alone.
const JUDGE_MAX: Duration = Duration::from_millis(200);

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

/// The pool's steps and their verdicts, fed the thread's count of completed
/// iterations at every wake-up of the schedule.
#[derive(Debug)]
pub(super) struct Trials {
    /// Where the current window of the completion rate began.
    mark: Option<(Instant, u64)>,
    /// The last full window's rate, per second.
    rate: Option<f64>,
    step: Option<Step>,
    hold_until: Option<Instant>,
    hold: Duration,
}

impl Default for Trials {
    fn default() -> Trials {
        Trials {
            mark: None,
            rate: None,
            step: None,
            hold_until: None,
            hold: HOLD,
        }
    }
}

impl Trials {
    /// Notes `done` (iterations completed so far) at `now`, whether the
    /// backlog is still there (`late`), and judges the pending step.
    pub(super) fn tick(&mut self, now: Instant, done: u64, late: bool) -> Verdict {
        match self.mark {
            None => self.mark = Some((now, done)),
            Some((at, d)) => {
                let span = now.saturating_duration_since(at);
                if (done - d >= QUARTER_COMPLETIONS && span >= JUDGE_MIN) || span >= JUDGE_MAX {
                    self.rate = Some(per_second(done - d, span));
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
            self.step = None;
            return self.stands();
        }
        if completed < step.need || span < JUDGE_MIN {
            return Verdict::Pending;
        }
        let after = per_second(completed, span);
        let bought = step.caught_up || after >= step.before * (1.0 + step.share * GAIN_SHARE);
        let added = step.added;
        self.step = None;
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

    fn stands(&mut self) -> Verdict {
        self.hold = HOLD;
        Verdict::Stands
    }

    /// Whether the pool may take a step now: none is being judged, and the
    /// hold after one that bought too little is over.
    pub(super) fn may_step(&self, now: Instant) -> bool {
        self.step.is_none() && self.hold_until.is_none_or(|h| now >= h)
    }

    /// Notes a step from `from` users to `from + added` at `now`, with
    /// `done` iterations completed, to be judged; `double` is a doubling.
    /// The first steps of a pool, before any rate is known, stand unjudged.
    pub(super) fn stepped(&mut self, now: Instant, done: u64, from: u64, added: u64, double: bool) {
        let partial = self.mark.and_then(|(at, d)| {
            let span = now.saturating_duration_since(at);
            (done - d >= DOUBLE_COMPLETIONS && span >= JUDGE_MIN)
                .then(|| per_second(done - d, span))
        });
        let Some(before) = partial.or(self.rate) else {
            return;
        };
        if from == 0 || added == 0 {
            return;
        }
        self.step = Some(Step {
            at: now,
            done,
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

    /// The verdict on a step from `from` users by `added`, for a pool
    /// completing `rate(users)` iterations a second, with the backlog never
    /// clearing; ticks once a millisecond.
    fn judge(from: u64, added: u64, double: bool, rate: impl Fn(u64) -> f64) -> (Verdict, u64) {
        let t0 = Instant::now();
        let mut t = Trials::default();
        let mut done = 0.0;
        for i in 0..50 {
            assert_eq!(t.tick(t0 + ms(i), done as u64, true), Verdict::Pending);
            done += rate(from) / 1000.0;
        }
        assert!(t.may_step(t0 + ms(50)));
        t.stepped(t0 + ms(50), done as u64, from, added, double);
        assert!(!t.may_step(t0 + ms(50)), "one step at a time");
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
        let t0 = Instant::now();
        let (v, _) = judge(40, 10, false, |_| 30_000.0);
        assert_eq!(v, Verdict::Undo(10));
        let mut t = Trials::default();
        t.tick(t0, 0, true);
        t.tick(t0 + ms(20), 600, true);
        t.stepped(t0 + ms(20), 600, 40, 10, false);
        let v = t.tick(t0 + ms(40), 1_200, true);
        assert_eq!(v, Verdict::Undo(10));
        assert!(!t.may_step(t0 + ms(40) + HOLD - ms(1)));
        assert!(t.may_step(t0 + ms(40) + HOLD));
        // A second in a row waits twice as long.
        t.stepped(t0 + ms(200), 6_000, 40, 10, false);
        let v = t.tick(t0 + ms(220), 6_600, true);
        assert_eq!(v, Verdict::Undo(10));
        assert!(!t.may_step(t0 + ms(220) + 2 * HOLD - ms(1)));
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
        let (v, after) = judge(8, 8, true, |n| n as f64 * 1000.0);
        assert_eq!(v, Verdict::Stands);
        assert!(after <= 10, "judged after {after} ms at 16,000/s");
        let (v, _) = judge(8, 8, true, |n| if n > 8 { 10_000.0 } else { 8_000.0 });
        assert_eq!(v, Verdict::Undo(8), "25 % more for twice the users");
    }

    #[test]
    fn a_step_after_which_the_backlog_clears_stands() {
        // The backlog was small: clearing it needs only a few percent more.
        let t0 = Instant::now();
        let mut t = Trials::default();
        t.tick(t0, 0, true);
        t.tick(t0 + ms(20), 600, true);
        t.stepped(t0 + ms(20), 600, 40, 10, false);
        assert_eq!(t.tick(t0 + ms(22), 660, false), Verdict::Pending);
        assert_eq!(t.tick(t0 + ms(40), 1_220, true), Verdict::Stands);
    }

    #[test]
    fn a_slow_pool_is_not_held_for_long() {
        // 500/s: 512 completions would take a second.
        let t0 = Instant::now();
        let mut t = Trials::default();
        t.tick(t0, 0, true);
        t.tick(t0 + JUDGE_MAX, 100, true);
        t.stepped(t0 + JUDGE_MAX, 100, 10, 2, false);
        assert_eq!(t.tick(t0 + ms(300), 150, true), Verdict::Pending);
        assert_eq!(t.tick(t0 + 2 * JUDGE_MAX, 200, true), Verdict::Stands);
    }

    #[test]
    fn the_first_steps_stand_unjudged() {
        let t0 = Instant::now();
        let mut t = Trials::default();
        t.tick(t0, 0, true);
        t.stepped(t0 + ms(1), 3, 1, 1, true);
        assert!(t.may_step(t0 + ms(1)), "no rate yet: nothing to judge by");
    }
}
