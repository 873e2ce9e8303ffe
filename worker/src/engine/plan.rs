//! This worker's part of the plan: which users of each class it runs now, how fast it may start them, their cluster-wide ids, and its slice of an open model's schedule.

use squall_common::LoadModel;
use squall_common::partition::{equal_part, split};
use squall_common::plan::Roster;

use super::threads::{Engine, OpenPlan};

/// This worker's users per class at every user count of the plan: the split
/// of the peak every worker computes alike, so together they run it exactly.
pub(super) fn roster_for(load: &LoadModel, weights: &[u64], index: u64, count: u64) -> Roster {
    let peak_shares: Vec<Vec<u64>> = split(load.peak_users(), weights, count as usize, 0.0)
        .into_iter()
        .map(|s| s.users_per_class)
        .collect();
    Roster::new(&peak_shares, index as usize)
}

/// This worker's slice of an open model's iteration schedule, and its part of the user pool.
pub(super) fn open_plan(
    load: &LoadModel,
    index: u64,
    count: u64,
    t0: tokio::time::Instant,
) -> OpenPlan {
    let pool = load.max_users().unwrap_or(0);
    OpenPlan {
        load: load.clone(),
        worker_index: index,
        worker_count: count,
        max_users: equal_part(pool, count, index),
        t0: t0.into_std(),
    }
}

/// Where `follow_plan` left this worker.
pub(super) struct Followed {
    /// The plan has reached its peak user count.
    pub(super) peak: bool,
    /// Every class runs exactly its part of the plan (the spawn pace held nothing back).
    pub(super) caught_up: bool,
}

/// Moves this worker's users per class to its part of the plan's current user count.
pub(super) fn follow_plan(
    engine: &mut Engine,
    load: &LoadModel,
    roster: &Roster,
    ids: &mut UserIds,
    t0: tokio::time::Instant,
    pace: &mut SpawnPace,
) -> Followed {
    let global = load.users_at(t0.elapsed().as_secs_f64()).unwrap_or(0);
    let want = roster.users_per_class(global);
    let mut current = engine.users_per_class(want.len());
    let mut allowed = pace.allowance();
    // Interleave classes so the mix stays right within a step.
    loop {
        let mut changed = false;
        for (c, cur) in current.iter_mut().enumerate() {
            if *cur < want[c] && allowed > 0 {
                allowed -= 1;
                pace.spent(1);
                engine.spawn_user(c, ids.next());
                *cur += 1;
                changed = true;
            } else if *cur > want[c] {
                engine.retire_user(c);
                *cur -= 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    Followed {
        peak: global >= load.peak_users(),
        caught_up: current == want,
    }
}

/// Starts users no faster than this worker's part of the spawn rate, so a
/// rebalance moves a lost worker's users over at the spawn rate rather than
/// in one burst. The plan's own ramp fits within it (10 % headroom).
pub(super) struct SpawnPace {
    per_second: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl SpawnPace {
    pub(super) fn new(load: &LoadModel, count: u64) -> SpawnPace {
        let per_second = match load {
            LoadModel::Closed { spawn_rate, .. } => spawn_rate * 1.1 / count.max(1) as f64,
            // Stages set their own pace: follow them exactly.
            _ => f64::INFINITY,
        };
        SpawnPace {
            per_second,
            tokens: 1.0,
            last: tokio::time::Instant::now(),
        }
    }

    /// Users that may start now.
    fn allowance(&mut self) -> u64 {
        if self.per_second.is_infinite() {
            return u64::MAX;
        }
        let now = tokio::time::Instant::now();
        let burst = (self.per_second * 0.25).max(1.0);
        self.tokens = (self.tokens + self.per_second * (now - self.last).as_secs_f64()).min(burst);
        self.last = now;
        self.tokens.floor().max(0.0) as u64
    }

    fn spent(&mut self, n: u64) {
        if self.per_second.is_finite() {
            self.tokens -= n as f64;
        }
    }
}

/// User ids unique across the cluster: worker i of W numbers i+1, i+1+W, …
pub(super) struct UserIds {
    pub(super) next: u64,
    pub(super) index: u64,
    pub(super) count: u64,
}

impl UserIds {
    pub(super) fn next(&mut self) -> u64 {
        let id = self.next * self.count + self.index + 1;
        self.next += 1;
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_unique_across_workers() {
        let mut first = UserIds {
            next: 0,
            index: 0,
            count: 3,
        };
        let mut last = UserIds {
            next: 0,
            index: 2,
            count: 3,
        };
        assert_eq!([first.next(), first.next(), first.next()], [1, 4, 7]);
        assert_eq!([last.next(), last.next(), last.next()], [3, 6, 9]);
    }

    #[test]
    fn a_closed_model_starts_users_at_its_share_of_the_spawn_rate() {
        let closed = LoadModel::Closed {
            users: 100,
            spawn_rate: 10.0,
            duration: std::time::Duration::from_secs(60),
        };
        // 5.5 users a second on each of 2 workers, in bursts of at most 1.375.
        let mut pace = SpawnPace::new(&closed, 2);
        assert_eq!(pace.allowance(), 1);
        pace.spent(1);
        assert_eq!(pace.allowance(), 0, "the burst is spent");
        // Stages set their own pace.
        let mut stages = SpawnPace::new(&LoadModel::Stages { stages: Vec::new() }, 2);
        assert_eq!(stages.allowance(), u64::MAX);
    }
}
