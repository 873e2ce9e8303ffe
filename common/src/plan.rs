//! The planned shape of a run over time: target users, arrival rates and each iteration's due time.
//!
//! Workers and the coordinator evaluate the same functions, so every worker
//! derives its exact part of the global plan locally (as k6 execution
//! segments do) and the report can set the plan beside what happened.

use std::time::Duration;

use crate::scenario::LoadModel;

/// A piecewise-linear curve through (0, 0) and each stage's (end time, target value).
fn curve(stages: impl IntoIterator<Item = (Duration, f64)>) -> Vec<(f64, f64)> {
    let mut points = vec![(0.0, 0.0)];
    let mut t = 0.0;
    for (duration, value) in stages {
        t += duration.as_secs_f64();
        points.push((t, value));
    }
    points
}

/// Value of the curve at `t` (holding the last value past the end).
fn at(points: &[(f64, f64)], t: f64) -> f64 {
    for w in points.windows(2) {
        let ((t0, v0), (t1, v1)) = (w[0], w[1]);
        if t < t1 {
            if t1 <= t0 {
                return v1;
            }
            return v0 + (v1 - v0) * (t - t0) / (t1 - t0);
        }
    }
    points.last().map_or(0.0, |p| p.1)
}

/// Area under the curve from 0 to `t`.
fn area(points: &[(f64, f64)], t: f64) -> f64 {
    let mut total = 0.0;
    for w in points.windows(2) {
        let ((t0, v0), (t1, v1)) = (w[0], w[1]);
        if t <= t0 {
            break;
        }
        let end = t.min(t1);
        let v_end = if t1 > t0 {
            v0 + (v1 - v0) * (end - t0) / (t1 - t0)
        } else {
            v1
        };
        total += (v0 + v_end) / 2.0 * (end - t0);
    }
    total
}

/// The first time the area under the curve reaches `k`, within the curve.
fn time_of_area(points: &[(f64, f64)], k: f64) -> Option<f64> {
    let mut acc = 0.0;
    for w in points.windows(2) {
        let ((t0, v0), (t1, v1)) = (w[0], w[1]);
        let d = t1 - t0;
        if d <= 0.0 {
            continue;
        }
        let seg = (v0 + v1) / 2.0 * d;
        if acc + seg > k {
            let need = k - acc;
            let a = (v1 - v0) / (2.0 * d);
            let tau = if a.abs() < 1e-12 {
                need / v0
            } else {
                // a τ² + v0 τ − need = 0, the root in [0, d].
                (-v0 + (v0 * v0 + 4.0 * a * need).max(0.0).sqrt()) / (2.0 * a)
            };
            return Some(t0 + tau.clamp(0.0, d));
        }
        acc += seg;
    }
    None
}

/// An open model's rate curve, built once, so that finding iteration k's due
/// time allocates nothing: the engine asks once per arrival, and
/// `LoadModel::arrival_time` builds the curve (a `Vec`) on every call.
#[derive(Debug, Clone)]
pub struct ArrivalCurve {
    points: Vec<(f64, f64)>,
}

impl ArrivalCurve {
    /// When global iteration `k` (from 0) is due, in seconds since the start;
    /// `None` once the plan has no more iterations.
    pub fn arrival_time(&self, k: u64) -> Option<f64> {
        time_of_area(&self.points, k as f64)
    }

    /// Iterations due by `t` seconds (fractional).
    pub fn arrivals_until(&self, t: f64) -> f64 {
        area(&self.points, t)
    }

    /// The planned rate at `t` seconds, per second.
    pub fn rate_at(&self, t: f64) -> f64 {
        at(&self.points, t)
    }
}

impl LoadModel {
    /// True for arrival-rate models, where iterations are scheduled rather than looped.
    pub fn is_open(&self) -> bool {
        matches!(self, LoadModel::Open { .. } | LoadModel::RampingRate { .. })
    }

    fn rate_curve(&self) -> Option<Vec<(f64, f64)>> {
        match self {
            LoadModel::Open { rate, duration, .. } => {
                let d = duration.as_secs_f64();
                Some(vec![(0.0, rate.per_second), (d, rate.per_second)])
            }
            LoadModel::RampingRate { stages, .. } => Some(curve(
                stages.iter().map(|s| (s.duration, s.rate.per_second)),
            )),
            _ => None,
        }
    }

    /// Global target users at `t` seconds (closed models); `None` for open models.
    pub fn users_at(&self, t: f64) -> Option<u64> {
        match self {
            LoadModel::Closed {
                users, spawn_rate, ..
            } => {
                // User i starts at i / spawn_rate: user 0 at once.
                let started = (t * spawn_rate).floor() + 1.0;
                Some((started.max(0.0) as u64).min(*users))
            }
            LoadModel::Stages { stages } => {
                let points = curve(stages.iter().map(|s| (s.duration, s.users as f64)));
                Some((at(&points, t) + 1e-9).floor().max(0.0) as u64)
            }
            _ => None,
        }
    }

    /// Planned arrival rate (iterations per second) at `t`; `None` for closed models.
    pub fn rate_at(&self, t: f64) -> Option<f64> {
        self.rate_curve().map(|c| at(&c, t))
    }

    /// Planned iterations started in `[0, t)`; `None` for closed models.
    pub fn arrivals_until(&self, t: f64) -> Option<f64> {
        self.rate_curve().map(|c| area(&c, t))
    }

    /// The rate curve of an open model (`None` for closed models), for many
    /// `arrival_time` look-ups without rebuilding it.
    pub fn arrival_curve(&self) -> Option<ArrivalCurve> {
        self.rate_curve().map(|points| ArrivalCurve { points })
    }

    /// When global iteration `k` (from 0) is due, in seconds since the start;
    /// `None` once the plan has no more iterations (or for closed models).
    pub fn arrival_time(&self, k: u64) -> Option<f64> {
        let c = self.rate_curve()?;
        time_of_area(&c, k as f64)
    }

    /// The most users the plan ever runs at once (the pool size for open models).
    pub fn peak_users(&self) -> u64 {
        match self {
            LoadModel::Closed { users, .. } => *users,
            LoadModel::Stages { stages } => stages.iter().map(|s| s.users).max().unwrap_or(0),
            LoadModel::Open { max_users, .. } | LoadModel::RampingRate { max_users, .. } => {
                *max_users
            }
        }
    }

    /// The open models' pool size.
    pub fn max_users(&self) -> Option<u64> {
        match self {
            LoadModel::Open { max_users, .. } | LoadModel::RampingRate { max_users, .. } => {
                Some(*max_users)
            }
            _ => None,
        }
    }
}

/// Which of the plan's users a worker runs, so that user counts can follow a
/// ramp up and down without ever swapping one user for another.
///
/// Every (worker, class) slot holds a fixed number of users: its part of the
/// exact split at the plan's peak. The slots' users are interleaved into one
/// global order by when each is "due" (user k of a slot of n at (k + ½) / n,
/// ties to the lower slot), and the first N users of that order run whenever
/// the plan asks for N. Prefixes stay proportional, growing N only adds users
/// and shrinking it only removes the latest ones, and at the peak every slot
/// is exactly full.
#[derive(Debug, Clone)]
pub struct Roster {
    /// For each class, the global positions of this worker's users, ascending.
    positions: Vec<Vec<u64>>,
}

impl Roster {
    /// `shares[w][c]` is worker `w`'s users of class `c` at the peak.
    pub fn new(shares: &[Vec<u64>], worker: usize) -> Roster {
        let classes = shares.first().map_or(0, Vec::len);
        let slots: Vec<u64> = shares.iter().flat_map(|w| w.iter().copied()).collect();
        let mut positions = vec![Vec::new(); classes];
        for (c, out) in positions.iter_mut().enumerate() {
            let s = worker * classes + c;
            let n = slots.get(s).copied().unwrap_or(0);
            for k in 0..n {
                let mut rank = k;
                for (other, &m) in slots.iter().enumerate() {
                    if other != s && m > 0 {
                        rank += due_before(m, n, k, other < s);
                    }
                }
                out.push(rank);
            }
            out.sort_unstable();
        }
        Roster { positions }
    }

    /// This worker's users per class when the whole plan runs `global` users.
    pub fn users_per_class(&self, global: u64) -> Vec<u64> {
        self.positions
            .iter()
            .map(|p| p.partition_point(|&r| r < global) as u64)
            .collect()
    }
}

/// How many of a slot of `m` users are due before user `k` of a slot of `n`:
/// user j is due at (2j + 1) / 2m, so count j with (2j + 1)·n < (2k + 1)·m,
/// plus the tie when `earlier` (the other slot wins ties).
fn due_before(m: u64, n: u64, k: u64, earlier: bool) -> u64 {
    let x = u128::from(2 * k + 1) * u128::from(m);
    let n = u128::from(n);
    let (q, r) = (x / n, x % n);
    // Largest odd 2j + 1 strictly below x / n.
    let bound = if r > 0 { q } else { q.saturating_sub(1) };
    let mut count = if r == 0 && q == 0 {
        0
    } else {
        bound.div_ceil(2)
    };
    if r == 0 && q % 2 == 1 && earlier {
        count += 1;
    }
    u64::try_from(count).unwrap_or(u64::MAX).min(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::Rate;
    use crate::scenario::{RateStage, UserStage};

    fn users(secs: u64, users: u64) -> UserStage {
        UserStage {
            duration: Duration::from_secs(secs),
            users,
        }
    }

    fn rate(secs: u64, per_second: f64) -> RateStage {
        RateStage {
            duration: Duration::from_secs(secs),
            rate: Rate { per_second },
        }
    }

    #[test]
    fn roster_orders_every_user_once_and_fills_each_slot_exactly() {
        for (users, weights, workers) in [
            (1000u64, vec![3u64, 1], 3usize),
            (7, vec![1, 1, 1], 2),
            (100, vec![5, 0, 2], 4),
            (1, vec![1, 1], 3),
            (12345, vec![7, 3, 2, 1], 5),
        ] {
            let shares: Vec<Vec<u64>> = crate::partition::split(users, &weights, workers, 1.0)
                .into_iter()
                .map(|s| s.users_per_class)
                .collect();
            let rosters: Vec<Roster> = (0..workers).map(|w| Roster::new(&shares, w)).collect();
            // The positions of all users form exactly 0..users.
            let mut all: Vec<u64> = rosters
                .iter()
                .flat_map(|r| r.positions.iter().flatten().copied())
                .collect();
            all.sort_unstable();
            assert_eq!(
                all,
                (0..users).collect::<Vec<_>>(),
                "{users} {weights:?} {workers}"
            );
            // At the peak each slot is full; along the way counts only grow and stay proportional.
            for (w, r) in rosters.iter().enumerate() {
                assert_eq!(r.users_per_class(users), shares[w]);
                let mut last = vec![0; weights.len()];
                for n in 0..=users.min(2000) {
                    let now = r.users_per_class(n);
                    assert!(now.iter().zip(&last).all(|(a, b)| a >= b));
                    for (c, &have) in now.iter().enumerate() {
                        let exact = shares[w][c] as f64 * n as f64 / users.max(1) as f64;
                        assert!(
                            (have as f64 - exact).abs() <= 2.0,
                            "w{w} c{c} n{n}: {have} vs {exact}"
                        );
                    }
                    last = now;
                }
            }
        }
    }

    #[test]
    fn closed_ramp_follows_the_spawn_rate() {
        let m = LoadModel::Closed {
            users: 100,
            spawn_rate: 10.0,
            duration: Duration::from_secs(30),
        };
        assert_eq!(m.users_at(0.0), Some(1));
        assert_eq!(m.users_at(0.95), Some(10));
        assert_eq!(m.users_at(5.0), Some(51));
        assert_eq!(m.users_at(100.0), Some(100));
        assert_eq!(m.arrival_time(0), None);
    }

    #[test]
    fn stages_interpolate_up_and_down() {
        let m = LoadModel::Stages {
            stages: vec![users(20, 200), users(10, 200), users(10, 0)],
        };
        assert_eq!(m.users_at(0.0), Some(0));
        assert_eq!(m.users_at(1.0), Some(10));
        assert_eq!(m.users_at(10.0), Some(100));
        assert_eq!(m.users_at(25.0), Some(200));
        assert_eq!(m.users_at(35.0), Some(100));
        assert_eq!(m.users_at(45.0), Some(0));
        // A zero-length stage jumps.
        let jump = LoadModel::Stages {
            stages: vec![users(0, 50), users(10, 50)],
        };
        assert_eq!(jump.users_at(0.0), Some(50));
    }

    #[test]
    fn constant_rate_schedules_exactly() {
        let m = LoadModel::Open {
            rate: Rate { per_second: 500.0 },
            max_users: 10,
            duration: Duration::from_secs(20),
        };
        assert_eq!(m.arrival_time(0), Some(0.0));
        assert!((m.arrival_time(250).unwrap_or(0.0) - 0.5).abs() < 1e-9);
        assert!(m.arrival_time(9_999).is_some());
        assert_eq!(m.arrival_time(10_000), None);
        assert!((m.arrivals_until(20.0).unwrap_or(0.0) - 10_000.0).abs() < 1e-6);
    }

    #[test]
    fn ramping_rate_integrates() {
        // 0 → 100/s over 10 s: 500 iterations, then 100/s for 10 s: 1000 more.
        let m = LoadModel::RampingRate {
            stages: vec![rate(10, 100.0), rate(10, 100.0)],
            max_users: 100,
        };
        assert!((m.arrivals_until(10.0).unwrap_or(0.0) - 500.0).abs() < 1e-6);
        assert!((m.arrivals_until(20.0).unwrap_or(0.0) - 1500.0).abs() < 1e-6);
        assert_eq!(m.rate_at(5.0), Some(50.0));
        let mut n = 0;
        let mut last = -1.0;
        while let Some(t) = m.arrival_time(n) {
            assert!(t >= last, "monotonic");
            // Iteration n is due when the area reaches n.
            assert!((m.arrivals_until(t).unwrap_or(0.0) - n as f64).abs() < 1e-6);
            last = t;
            n += 1;
        }
        assert_eq!(n, 1500);
    }
}
