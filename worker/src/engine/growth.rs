//! How one engine thread's open-model pool grows: while its backlog of arrivals grows, not merely while it exists.
//!
//! The queue's head runs late at a rate of 1 - X/R seconds a second, where R
//! is the asked-for rate and X the rate the pool completes iterations at: a
//! backlog that holds steady or shrinks means the pool already keeps up
//! (X at least R), and more users would only sit on the target. Growing while the
//! head was merely late fed itself: past the target's capacity each user
//! added only lengthened its queue and the pool ran to `max_users` (1,000)
//! at 80 % of the closed model's maximum on one core, where 1,000
//! connections delivered less than 50 had (docs/benchmarks.md, "open model
//! at speed"); and a start-up backlog at 90 % of the maximum drains at only
//! X - R, so lateness alone kept asking for users long after the pool was
//! large enough.

use std::time::{Duration, Instant};

use super::arrivals::MAX_START_LAG;

/// How late the queue's head may be before the pool grows. Below it a user
/// finishing its request soon takes the arrival; a new user costs a
/// connection and adds one to the target's concurrency for the rest of the
/// run. Starting a user for every arrival that found none idle grew the pool
/// to 1,000 in the first second at 43,000/s (users still connecting made
/// every next arrival start another), and the target's latency with it:
/// 70 % of the asked rate delivered with 126,000 arrivals dropped
/// (docs/benchmarks.md, open model at speed). 0.5 ms, not the 2 ms it was
/// before steps were judged (`trial::Trials`): at 2 ms the pool settled
/// where arrivals waited about that long, a schedule-lag p99 of 2.6-3.0 ms
/// at half the closed maximum, against the goal of 1 ms.
const GROW_AFTER: Duration = Duration::from_micros(500);

/// How far the head's lateness must rise above its lowest point since the
/// backlog began (or the last step) before the pool grows: responses come
/// in batches (25 at once is 0.25 ms of arrivals at 100,000/s), and a rise
/// smaller than a batch is the batch, not a trend. Halved with
/// `GROW_AFTER`: a step the rise takes for a trend wrongly is undone.
const RISE: Duration = Duration::from_micros(250);

/// The least slope of that rise, as a share of the time it took: the pool
/// grows while it completes less than 99 % of the rate asked for. A rise
/// of 0.5 ms spread over a second is noise the bound alone would take for
/// a trend.
const RISE_SLOPE: f64 = 0.01;

/// While the pool has never yet kept up, a backlog slipping at least this
/// fast (the pool completes under half the rate asked for) doubles the pool
/// instead of adding a quarter: doubling at most doubles what it completes,
/// still no more than the rate, so it cannot overshoot what the rate needs,
/// and a start-up reaches 64 users in 6 steps instead of 18 (each at least
/// a connection's time apart), which is the start-up backlog every later
/// arrival waits behind. Only at the start: later, a slip that steep is a
/// stall of the target or of the machine, not a pool too small, and
/// doubling on each stall took a pool from 68 to 959 users in 4 s on the
/// loaded machine.
const STEEP: f64 = 0.5;

/// How late the queue's head is once arrivals are being dropped: the drop
/// bound (`MAX_START_LAG`) less a little for the wake-ups between drops.
/// There the backlog cannot rise any more, since arrivals past the bound are
/// dropped, so a rise no longer tells whether the pool keeps up: the drops
/// say it does not. Waiting for a rise there held a pool at 20 users for
/// 6 s at 90 % of the closed maximum on one core, its lag p50 at 0.9 s and
/// 146,000 arrivals dropped, after one step was undone by a stall.
const DROPPING: Duration = MAX_START_LAG.saturating_sub(Duration::from_millis(10));

/// How late a wake-up of the schedule may come and still be the thread
/// busy with its users rather than stalled: only a wake-up later than this
/// counts as a stall (`Backlog::step`). A thread near its core's limit wakes a few
/// hundred microseconds late at every wake-up (its users' responses are
/// handled first), and counting all of that explained any backlog away: at
/// 90 % of the closed maximum one run's 3,193 late wake-ups (p50 0.31 ms,
/// 940 ms in all) hid a backlog that rose to 0.78 s, and its pool stayed
/// at 25 users for 10 s, dropping 61,000 arrivals.
const STALL_SLACK: Duration = Duration::from_millis(1);

/// How the pool should grow at a wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Keep its size: no backlog, or one that holds or drains.
    Hold,
    /// Add a quarter (`grow_by`).
    Quarter,
    /// Double it: the start-up, far behind (`STEEP`).
    Double,
}

/// The backlog's trend: the lowest lateness of the queue's head since the
/// backlog began or the pool last grew, and when; how late the schedule's
/// own wake-ups have been since; and whether the pool has ever kept up
/// (cleared a backlog).
#[derive(Debug, Default)]
pub(super) struct Backlog {
    low: Option<(Instant, Duration)>,
    stalled: Duration,
    kept_up: bool,
}

impl Backlog {
    /// Notes the head's lateness at a wake-up (`None`: nothing is due) that
    /// came `woke_late` after the time the schedule asked for, and says how
    /// the pool should grow. It grows while the backlog grows: the head at
    /// least `GROW_AFTER` late and later than at its lowest by `RISE` and by
    /// `RISE_SLOPE` of the time since, not counting the time the schedule's
    /// thread was stalled meanwhile (a wake-up that came late). A stall of
    /// the whole thread (descheduled, or busy with its users) makes the head
    /// jump by its length, which the users clear as soon as they run: not a
    /// pool too small. Ignoring late wake-ups instead stopped all growth on
    /// a starved machine (2,000/s then dropped a third of its arrivals), and
    /// requiring a slip at two wake-ups in a row missed real backlogs, whose
    /// lateness zigzags by one arrival per completion. A growing backlog is
    /// taken as answered (the low point moves to now), so every step is
    /// judged afresh.
    pub(super) fn step(
        &mut self,
        now: Instant,
        late: Option<Duration>,
        woke_late: Duration,
    ) -> Step {
        let Some(late) = late.filter(|l| *l >= GROW_AFTER) else {
            // A backlog that cleared: the pool has kept up.
            self.kept_up |= self.low.is_some();
            self.low = None;
            return Step::Hold;
        };
        if late >= DROPPING {
            // Arrivals are being dropped: the pool does not keep up. Its
            // steps are still judged (`trial::Trials`), so against a target
            // at its capacity this only probes again after each hold.
            self.mark(now, late);
            return Step::Quarter;
        }
        let Some((at, low)) = self.low else {
            self.mark(now, late);
            return Step::Hold;
        };
        if late <= low {
            self.mark(now, late);
            return Step::Hold;
        }
        if woke_late > STALL_SLACK {
            self.stalled += woke_late;
        }
        let rise = (late - low).saturating_sub(self.stalled).as_secs_f64();
        let span = now.saturating_duration_since(at).as_secs_f64();
        if rise < RISE.as_secs_f64() || rise < RISE_SLOPE * span {
            return Step::Hold;
        }
        self.mark(now, late);
        let slope = if span > 0.0 { rise / span } else { 1.0 };
        if !self.kept_up && slope >= STEEP {
            Step::Double
        } else {
            Step::Quarter
        }
    }

    fn mark(&mut self, now: Instant, late: Duration) {
        self.low = Some((now, late));
        self.stalled = Duration::ZERO;
    }
}

/// How long users still in their first iteration hold the pool's growth
/// back. On a fast target their first iteration is their connection (well
/// under a millisecond on loopback); on a slow one it is its latency, and
/// waiting for it would grow the pool by a quarter per response time (a 1 s
/// target needing 200 users would take 20 s to get them). After this long
/// they no longer count, so the pool grows by at most a quarter per 50 ms:
/// a 300 ms stall of the target (seen on the shared machine) took a pool of
/// 15 users to 222 when growth was held back only by the queue's lateness.
const GROW_PATIENCE: Duration = Duration::from_millis(50);

/// How many users to start now, given how late the queue's head is, the
/// users this thread has started (`live`, those still `starting` included:
/// started and not yet through their first iteration), how long ago the
/// pool last grew, and its part of `max_users`.
///
/// The first arrival starts the first user at once. After that the pool
/// grows only while the backlog grows (`head_late` is zero otherwise, see
/// `Backlog`), and by at most a quarter of its size at a time counting
/// the users still starting (for up to `GROW_PATIENCE`), so users that are
/// still connecting hold growth back instead of each arrival starting
/// another: the pool grows geometrically (x1.25 per round of connections)
/// for as long as the queue stays late, and stops as soon as it catches up.
pub(super) fn grow_by(
    head_late: Duration,
    live: u64,
    starting: u64,
    since_growth: Duration,
    max: u64,
    double: bool,
) -> u64 {
    if live >= max {
        return 0;
    }
    if live == 0 {
        return 1;
    }
    if head_late < GROW_AFTER {
        return 0;
    }
    let starting = if since_growth >= GROW_PATIENCE {
        0
    } else {
        starting
    };
    let in_flight = if double { live } else { (live / 4).max(1) };
    in_flight.saturating_sub(starting).min(max - live)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool grew just now.
    const NOW: Duration = Duration::ZERO;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn the_first_arrival_starts_a_user_at_once() {
        assert_eq!(grow_by(Duration::ZERO, 0, 0, NOW, 1000, false), 1);
        assert_eq!(
            grow_by(Duration::ZERO, 0, 0, NOW, 0, false),
            0,
            "no pool on this thread"
        );
    }

    #[test]
    fn the_pool_grows_only_while_the_queue_is_late() {
        assert_eq!(
            grow_by(
                GROW_AFTER - Duration::from_micros(1),
                40,
                0,
                NOW,
                1000,
                false
            ),
            0
        );
        assert_eq!(grow_by(GROW_AFTER, 40, 0, NOW, 1000, false), 10);
        assert_eq!(grow_by(ms(500), 3, 0, NOW, 1000, false), 1);
    }

    #[test]
    fn users_still_starting_hold_growth_back() {
        // A quarter of the pool may be connecting at once, no more: arrivals
        // that find users connecting do not each start another.
        assert_eq!(grow_by(ms(50), 40, 10, NOW, 1000, false), 0);
        assert_eq!(grow_by(ms(50), 40, 7, NOW, 1000, false), 3);
        assert_eq!(grow_by(ms(50), 1, 1, NOW, 1000, false), 0);
    }

    #[test]
    fn users_slow_to_finish_their_first_iteration_hold_growth_back_only_for_a_while() {
        // A slow target: the users started are waiting on it, not connecting.
        assert_eq!(
            grow_by(ms(50), 40, 10, GROW_PATIENCE - ms(1), 1000, false),
            0
        );
        assert_eq!(grow_by(ms(50), 40, 10, GROW_PATIENCE, 1000, false), 10);
    }

    #[test]
    fn the_pool_never_passes_max_users() {
        assert_eq!(grow_by(ms(900), 998, 0, NOW, 1000, false), 2);
        assert_eq!(grow_by(ms(900), 1000, 0, NOW, 1000, false), 0);
        assert_eq!(grow_by(ms(900), 1200, 0, NOW, 1000, false), 0);
    }

    #[test]
    fn growth_is_geometric_while_the_queue_stays_late() {
        // Every round of connections completes before the next check.
        let mut live = 1;
        let mut rounds = 0;
        while live < 50 {
            live += grow_by(ms(5), live, 0, NOW, 1000, false);
            rounds += 1;
        }
        assert!(rounds <= 20, "{rounds} rounds to 50 users");
    }

    /// Feeds `late_at(ms)` to a `Backlog` once a millisecond for `n` ms, on
    /// time: the steps it asks for.
    fn steps(n: u64, late_at: impl Fn(u64) -> Option<Duration>) -> Vec<(u64, Step)> {
        let t0 = Instant::now();
        let mut b = Backlog::default();
        (0..n)
            .map(|i| (i, b.step(t0 + ms(i), late_at(i), Duration::ZERO)))
            .filter(|(_, s)| *s != Step::Hold)
            .collect()
    }

    #[test]
    fn a_start_up_backlog_doubles_the_pool_at_every_rise() {
        // The pool completes almost nothing: the head slips 1 ms a ms.
        let got = steps(6, |i| Some(ms(i) + us(300)));
        // Under GROW_AFTER at 0 ms; 1.3 ms marks; every later wake-up rises.
        assert_eq!(
            got,
            vec![
                (2, Step::Double),
                (3, Step::Double),
                (4, Step::Double),
                (5, Step::Double)
            ]
        );
    }

    #[test]
    fn once_the_pool_has_kept_up_it_grows_by_quarters() {
        // A backlog (0-2 ms) that cleared (3-4 ms), then one that grows.
        let got = steps(12, |i| match i {
            0..3 => Some(ms(5)),
            3..5 => None,
            _ => Some(ms(i - 3)),
        });
        assert_eq!(got.first(), Some(&(6, Step::Quarter)));
        assert!(got.iter().all(|(_, s)| *s == Step::Quarter), "{got:?}");
    }

    #[test]
    fn a_backlog_that_holds_or_drains_asks_for_none() {
        // 90 % of the maximum: the pool keeps up, and a 30 ms start-up
        // backlog drains slowly, with batches of responses as jitter (under
        // `RISE`; larger jitter is taken for a trend, and a step it causes is
        // undone by its trial, `trial::Trials`).
        let got = steps(2_000, |i| {
            let jitter = [0, 200, 75, 150][(i % 4) as usize];
            Some(us(30_000 + jitter).saturating_sub(us(i * 20)))
        });
        assert_eq!(got, vec![]);
    }

    #[test]
    fn a_backlog_held_at_the_drop_bound_still_asks_for_users() {
        // Arrivals past `MAX_START_LAG` are dropped, so the head stays just
        // under it: flat, yet the pool does not keep up.
        let got = steps(5, |i| Some(MAX_START_LAG - us(100 + 50 * (i % 2))));
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(got.iter().all(|(_, s)| *s == Step::Quarter), "{got:?}");
        // Just short of the bound, a flat backlog is still kept up with.
        let got = steps(50, |_| Some(MAX_START_LAG - ms(20)));
        assert_eq!(got, vec![]);
    }

    #[test]
    fn a_slow_slip_still_counts_once_it_is_clear() {
        // The pool completes 97 % of the rate: 30 µs of lateness a ms.
        let got = steps(100, |i| Some(ms(5) + us(30 * i)));
        assert_eq!(
            got.first(),
            Some(&(9, Step::Quarter)),
            "0.27 ms of rise over 9 ms"
        );
    }

    #[test]
    fn a_stall_of_the_whole_thread_is_not_a_trend() {
        // The thread sleeps 40 ms (its wake-up 40 ms late); its users then
        // clear the backlog.
        let t0 = Instant::now();
        let mut b = Backlog::default();
        for i in 0..10 {
            assert_eq!(b.step(t0 + ms(i), Some(ms(3)), Duration::ZERO), Step::Hold);
        }
        assert_eq!(b.step(t0 + ms(50), Some(ms(43)), ms(40)), Step::Hold);
        assert_eq!(b.step(t0 + ms(51), Some(ms(3)), Duration::ZERO), Step::Hold);
        // The same jump at a wake-up on time is a backlog the users did not clear.
        assert_eq!(
            b.step(t0 + ms(52), Some(ms(43)), Duration::ZERO),
            Step::Double
        );
    }

    #[test]
    fn a_starved_thread_still_grows_a_backlog_its_stalls_do_not_explain() {
        // Every wake-up 3 ms late, the head 10 ms later each time.
        let t0 = Instant::now();
        let mut b = Backlog::default();
        assert_eq!(b.step(t0, Some(ms(5)), ms(3)), Step::Hold, "marks");
        assert_eq!(b.step(t0 + ms(4), Some(ms(15)), ms(3)), Step::Double);
        // Slipping only by the stalls: nothing to grow for.
        assert_eq!(b.step(t0 + ms(8), Some(ms(18)), ms(3)), Step::Hold);
    }

    #[test]
    fn a_busy_thread_waking_a_little_late_still_grows_a_rising_backlog() {
        // Near its core's limit every wake-up comes 0.4 ms late, while the
        // head slips 70 µs a ms (the pool completes 93 % of the rate).
        let t0 = Instant::now();
        let mut b = Backlog::default();
        let got: Vec<(u64, Step)> = (0..20)
            .map(|i| (i, b.step(t0 + ms(i), Some(ms(5) + us(70 * i)), us(400))))
            .filter(|(_, s)| *s != Step::Hold)
            .collect();
        assert_eq!(got.first(), Some(&(4, Step::Quarter)), "{got:?}");
    }

    #[test]
    fn a_backlog_that_zigzags_still_grows() {
        // 2,000/s with the pool completing 75 % of it: the head slips 1 ms
        // a ms and each completion takes it back 0.5 ms, one or two a ms.
        let got = steps(20, |i| {
            let completions = (i * 3).div_ceil(2);
            Some(ms(3) + ms(i) - us(500 * completions))
        });
        assert!(!got.is_empty() && got[0].0 <= 4, "{got:?}");
    }

    #[test]
    fn the_trend_needs_both_the_bound_and_the_slope() {
        // 0.6 ms above its low over 100 ms: 0.6 %, under the 1 % slope;
        // then 1.1 ms over 101 ms: both.
        let got = steps(103, |i| {
            Some(ms(10) + us(6 * i) + if i >= 101 { us(500) } else { us(0) })
        });
        assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![101]);
    }

    #[test]
    fn a_doubling_step_is_still_held_back_by_users_starting_and_max_users() {
        assert_eq!(grow_by(ms(5), 8, 0, NOW, 1000, true), 8);
        assert_eq!(
            grow_by(ms(5), 8, 3, NOW, 1000, true),
            5,
            "less the users still starting"
        );
        assert_eq!(
            grow_by(ms(5), 8, 0, NOW, 12, true),
            4,
            "never past max_users"
        );
        assert_eq!(grow_by(ms(5), 8, 0, NOW, 1000, false), 2);
    }
}
