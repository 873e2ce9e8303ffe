//! The open-model pools' ceiling across workers: when the cluster's pools grow and its completions do not, every worker's pool is held where it was.
//!
//! Each worker judges its own pool's growth by its own completions
//! (`worker::engine::trial`), which is exact on one worker: a step that buys
//! nothing there is undone. Workers on other hosts share the target but not
//! those counts, so against one target at its capacity a worker's step takes
//! completions from the others and stands: four workers asked for 150,000
//! arrivals/s against the demo target (about 90,000/s) ran their pools to
//! `max_users` (2,000 together) within 7 s and completed 84,000/s, where one
//! worker held 50 users and completed 92,000/s (docs/benchmarks.md). Only
//! the coordinator sees every worker's pool and completions, a second at a
//! time: this module judges each whole second the same way a worker judges
//! a step, and answers a growth that bought nothing with a ceiling on every
//! pool at its size the second before.

use std::collections::BTreeMap;

/// How much the cluster's pools must grow in a second, as a share of their
/// size, before the growth is judged: less is a worker's own step, which
/// the worker judges itself.
const GROWTH: f64 = 0.10;
/// Nor is growth by fewer users than this judged: a handful of users on a
/// small pool is its start-up, not a run towards `max_users`.
const GROWTH_USERS: u64 = 4;
/// The share of its proportional gain a second's growth must buy, as for a
/// worker's step (`trial::GAIN_SHARE`): a tenth more users must complete at
/// least 3.3 % more.
const GAIN_SHARE: f64 = 1.0 / 3.0;
/// The cluster keeps up while it completes this share of the planned
/// arrivals: below it (or with arrivals dropped) growth is asked for and judged.
const KEEPS_UP: f64 = 0.95;
/// How long a ceiling holds before it is raised by a quarter to see
/// whether more users now buy more, in seconds; doubled, up to `HOLD_MAX`,
/// each time a raise buys nothing again, since a target's capacity rarely
/// changes within seconds.
const HOLD: u64 = 2;
const HOLD_MAX: u64 = 16;
/// The longest an iteration may take (the pools' users over the
/// completions a second, Little's law), in the second before the growth and
/// in the second of it, for the growth to be judged: users added in a
/// second on a target answering in a second complete their first iteration
/// only in the next, and a target that stalls completes next to nothing
/// while its backlog grows the pools; neither is a target at its capacity.
/// Against one at its capacity the pools' queue there is short (4 workers
/// at the demo target: 2,000 users at 70,000/s, 29 ms).
const LONGEST_ITERATION: f64 = 0.25;
/// Seconds still waiting for some worker's snapshot that are kept: a
/// worker that stalls or leaves must not make the table grow.
const PENDING: usize = 8;

/// One worker's figures for one second of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    /// Users at the second's end (the open model's pool).
    pub users: u64,
    /// Requests completed in the second.
    pub completions: u64,
    /// Arrivals dropped in the second.
    pub dropped: u64,
}

/// What the coordinator tells the workers.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Growth bought too little: hold each worker's pool to these users
    /// (its size the second before).
    Hold {
        per_worker: Vec<(String, u64)>,
        /// The cluster's pools before and after the growth that bought too
        /// little, and what its completions gained (0.01 for 1 %).
        from: u64,
        to: u64,
        gain: f64,
        hold_s: u64,
    },
    /// The hold is over, or the last raise bought its share: each pool may
    /// grow by a quarter, and the next second judges that. Lifting the
    /// ceiling whole let four pools double within the next second (282 to
    /// 565 users against a target serving one request at a time).
    Raise { per_worker: Vec<(String, u64)> },
    /// The cluster keeps up: no ceiling any more.
    Lift,
}

/// One whole second over the cluster.
#[derive(Debug, Clone)]
struct Second {
    seq: u64,
    users: BTreeMap<String, u64>,
    total: Figures,
}

/// The cluster's seconds as the workers' snapshots come in, and the ceiling in force.
#[derive(Debug, Default)]
pub struct Ceilings {
    /// Seconds not yet reported by every running worker.
    pending: BTreeMap<u64, BTreeMap<String, Figures>>,
    /// The latest whole second.
    last: Option<Second>,
    /// Each worker's ceiling in force, if any.
    caps: Option<BTreeMap<String, u64>>,
    /// The ceiling holds (is not raised) until this second.
    until: Option<u64>,
    /// The current hold's length, in seconds.
    hold: u64,
}

impl Ceilings {
    /// Notes `worker`'s figures for second `seq`; once every one of
    /// `running` has reported that second, judges it (`planned`: the
    /// arrivals the plan had for it, all workers together).
    pub fn observe(
        &mut self,
        worker: &str,
        seq: u64,
        figures: Figures,
        running: &[String],
        planned: f64,
    ) -> Option<Verdict> {
        if self.last.as_ref().is_some_and(|l| seq <= l.seq) || !running.iter().any(|w| w == worker)
        {
            return None;
        }
        let second = self.pending.entry(seq).or_default();
        second.insert(worker.to_owned(), figures);
        // Only running workers are noted, and `reset` clears the table when
        // they change, so a count tells when the second is whole: checking
        // every worker at every snapshot cost the square of their number.
        if second.len() < running.len() {
            while self.pending.len() > PENDING {
                self.pending.pop_first();
            }
            return None;
        }
        let reports = self.pending.remove(&seq).unwrap_or_default();
        self.pending.retain(|s, _| *s > seq);
        let mut total = Figures::default();
        let mut users = BTreeMap::new();
        for w in running {
            let f = reports.get(w).copied().unwrap_or_default();
            // Saturating: the figures come from the workers.
            total.users = total.users.saturating_add(f.users);
            total.completions = total.completions.saturating_add(f.completions);
            total.dropped = total.dropped.saturating_add(f.dropped);
            users.insert(w.clone(), f.users);
        }
        let now = Second { seq, users, total };
        let prev = self.last.replace(now.clone());
        self.judge(prev, &now, planned)
    }

    fn judge(&mut self, prev: Option<Second>, now: &Second, planned: f64) -> Option<Verdict> {
        if let Some(until) = self.until {
            if now.seq < until {
                return None;
            }
            self.until = None;
            return self.raise();
        }
        let prev = prev.filter(|p| p.seq.checked_add(1) == Some(now.seq))?;
        let (before, after) = (prev.total.users, now.total.users);
        let behind = now.total.dropped > 0 || (now.total.completions as f64) < KEEPS_UP * planned;
        if !behind {
            // Keeping up: whatever the pools do is the workers' business.
            return self.caps.take().map(|_| Verdict::Lift);
        }
        let grew = after >= before.saturating_add(GROWTH_USERS)
            && after as f64 >= before as f64 * (1.0 + GROWTH);
        let iteration = |s: &Figures| s.users as f64 / s.completions.max(1) as f64;
        if !grew
            || before == 0
            || iteration(&prev.total) > LONGEST_ITERATION
            || iteration(&now.total) > LONGEST_ITERATION
        {
            return None;
        }
        let share = after as f64 / before as f64 - 1.0;
        let gain = now.total.completions as f64 / prev.total.completions as f64 - 1.0;
        if gain >= GAIN_SHARE * share {
            // It bought: under a ceiling, raise it again; without one, nothing to do.
            return if self.caps.is_some() {
                self.raise()
            } else {
                None
            };
        }
        // A raise that bought nothing again: the target has not changed,
        // so hold longer; growth without a ceiling starts from the shortest hold.
        self.hold = if self.caps.is_some() {
            (self.hold * 2).clamp(HOLD, HOLD_MAX)
        } else {
            HOLD
        };
        self.until = Some(now.seq.saturating_add(self.hold));
        let caps: BTreeMap<String, u64> = prev
            .users
            .iter()
            .map(|(w, u)| (w.clone(), (*u).max(1)))
            .collect();
        let per_worker = caps.iter().map(|(w, u)| (w.clone(), *u)).collect();
        self.caps = Some(caps);
        Some(Verdict::Hold {
            per_worker,
            from: before,
            to: after,
            gain,
            hold_s: self.hold,
        })
    }

    /// Every ceiling up by a quarter (at least one user).
    fn raise(&mut self) -> Option<Verdict> {
        let caps = self.caps.as_mut()?;
        for c in caps.values_mut() {
            *c = c.saturating_add((*c / 4).max(1));
        }
        Some(Verdict::Raise {
            per_worker: caps.iter().map(|(w, u)| (w.clone(), *u)).collect(),
        })
    }

    /// The workers changed (one joined, one was lost): their pools and
    /// shares are new, so the judging starts afresh. True when a ceiling was
    /// in force and must be lifted.
    pub fn reset(&mut self) -> bool {
        let held = self.caps.is_some();
        *self = Ceilings::default();
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("w{i}")).collect()
    }

    /// Feeds one second in which every worker has `users` and completes `each`.
    fn second(
        c: &mut Ceilings,
        seq: u64,
        users: &[u64],
        each: u64,
        dropped: u64,
        planned: f64,
    ) -> Option<Verdict> {
        let ws = workers(users.len());
        let mut out = None;
        for (w, u) in ws.iter().zip(users) {
            let f = Figures {
                users: *u,
                completions: each,
                dropped,
            };
            out = c.observe(w, seq, f, &ws, planned);
        }
        out
    }

    #[test]
    fn growth_that_buys_nothing_is_held_at_the_size_before_then_raised_by_quarters() {
        let mut c = Ceilings::default();
        let caps = |n: u64| workers(4).into_iter().map(|w| (w, n)).collect::<Vec<_>>();
        // Four workers at the target's capacity (90,000/s of 150,000 asked).
        assert_eq!(second(&mut c, 0, &[34; 4], 22_500, 0, 150e3), None);
        let v = second(&mut c, 1, &[61; 4], 22_600, 900, 150e3);
        let Some(Verdict::Hold {
            per_worker,
            from,
            to,
            hold_s,
            ..
        }) = v
        else {
            panic!("held: {v:?}");
        };
        assert_eq!((from, to, hold_s), (136, 244, HOLD));
        assert_eq!(per_worker, caps(34));
        // Held for 2 s, then raised by a quarter.
        assert_eq!(second(&mut c, 2, &[34; 4], 22_500, 900, 150e3), None);
        let v = second(&mut c, 3, &[34; 4], 22_500, 900, 150e3);
        assert_eq!(
            v,
            Some(Verdict::Raise {
                per_worker: caps(42)
            })
        );
        // The raise bought nothing: held where it was, twice as long.
        let v = second(&mut c, 4, &[42; 4], 22_500, 900, 150e3);
        assert!(
            matches!(&v, Some(Verdict::Hold { hold_s: 4, per_worker, .. }) if *per_worker == caps(34)),
            "{v:?}"
        );
        for seq in 5..8 {
            assert_eq!(second(&mut c, seq, &[34; 4], 22_500, 900, 150e3), None);
        }
        let v = second(&mut c, 8, &[34; 4], 22_500, 900, 150e3);
        assert_eq!(
            v,
            Some(Verdict::Raise {
                per_worker: caps(42)
            })
        );
        // This time it bought a tenth more completions for a quarter more
        // users (the target got faster): raised again.
        let v = second(&mut c, 9, &[42; 4], 24_750, 900, 150e3);
        assert_eq!(
            v,
            Some(Verdict::Raise {
                per_worker: caps(52)
            })
        );
        // The cluster keeps up: the ceiling goes.
        assert_eq!(
            second(&mut c, 10, &[52; 4], 37_500, 0, 150e3),
            Some(Verdict::Lift)
        );
        assert!(!c.reset(), "nothing in force");
    }

    #[test]
    fn growth_that_buys_completions_or_a_cluster_that_keeps_up_is_left_alone() {
        let mut c = Ceilings::default();
        // The pools grow by a quarter and complete a fifth more: they were too small.
        assert_eq!(second(&mut c, 0, &[40, 40], 10_000, 500, 30e3), None);
        assert_eq!(second(&mut c, 1, &[50, 50], 12_000, 500, 30e3), None);
        // Keeping up (all the planned arrivals completed, none dropped):
        // growth there is the workers' own business.
        let mut c = Ceilings::default();
        assert_eq!(second(&mut c, 0, &[40, 40], 10_000, 0, 20e3), None);
        assert_eq!(second(&mut c, 1, &[80, 80], 10_000, 0, 20e3), None);
        // A target that stalls for a second: completions fall, the backlog
        // grows the pools; and one that answers in a second, whose new users
        // complete nothing within the second they were added.
        let mut c = Ceilings::default();
        assert_eq!(second(&mut c, 0, &[2, 2], 50, 0, 100.0), None);
        assert_eq!(second(&mut c, 1, &[50, 50], 1, 0, 100.0), None);
        let mut c = Ceilings::default();
        assert_eq!(second(&mut c, 0, &[40, 40], 40, 20, 200.0), None);
        assert_eq!(second(&mut c, 1, &[80, 80], 40, 20, 200.0), None);
        // Growth too small to judge.
        let mut c = Ceilings::default();
        assert_eq!(second(&mut c, 0, &[2, 2], 10_000, 9, 30e3), None);
        assert_eq!(second(&mut c, 1, &[3, 3], 10_000, 9, 30e3), None);
    }

    #[test]
    fn a_second_is_judged_only_once_every_running_worker_reported_it() {
        let mut c = Ceilings::default();
        let ws = workers(2);
        let f = |users| Figures {
            users,
            completions: 1000,
            dropped: 5,
        };
        assert_eq!(c.observe("w0", 0, f(10), &ws, 9e3), None);
        // A worker no longer running does not complete a second.
        assert_eq!(c.observe("gone", 0, f(10), &ws, 9e3), None);
        assert_eq!(c.pending[&0].len(), 1);
        assert_eq!(c.observe("w1", 0, f(10), &ws, 9e3), None);
        // Second 1 from w0 only: not judged yet, however it grew.
        assert_eq!(c.observe("w0", 1, f(100), &ws, 9e3), None);
        let v = c.observe("w1", 1, f(100), &ws, 9e3);
        assert!(
            matches!(
                v,
                Some(Verdict::Hold {
                    from: 20,
                    to: 200,
                    ..
                })
            ),
            "{v:?}"
        );
        // A late duplicate of a judged second changes nothing.
        assert_eq!(c.observe("w1", 1, f(500), &ws, 9e3), None);
        // A worker that never reports leaves at most `PENDING` seconds waiting.
        for seq in 2..100 {
            c.observe("w0", seq, f(10), &ws, 9e3);
        }
        assert!(c.pending.len() <= PENDING);
        assert!(c.reset(), "a ceiling was in force");
        assert!(!c.reset());
    }
}
