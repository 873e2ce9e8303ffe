//! Feeder rows on one worker: this worker's rows of each feeder and the lock-free cursor users draw them with.
//!
//! A row is drawn once per user, when it starts, so the cost is one atomic
//! operation per user, never per request.

use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;
use squall_common::scenario::{Exhausted, FeedMode, FeederSpec};

/// One feeder as this worker hands it out.
#[derive(Debug)]
pub struct Feed {
    pub name: String,
    /// `row.COLUMN` for each column: the variable names a row sets.
    pub keys: Vec<String>,
    mode: FeedMode,
    on_exhausted: Exhausted,
    /// Every row (random, cycle) or this worker's slice of them (unique).
    rows: Vec<Vec<String>>,
    cursor: AtomicUsize,
}

impl Feed {
    /// This worker's part of `spec`; a row of the wrong width (a `Start` is
    /// input like any other) is refused rather than indexed.
    pub fn new(spec: FeederSpec, worker_index: u32, worker_count: u32) -> Result<Feed, String> {
        if let Some(i) = spec.rows.iter().position(|r| r.len() != spec.columns.len()) {
            return Err(format!(
                "feeder `{}`: row {i} has {} cells for {} columns",
                spec.name,
                spec.rows[i].len(),
                spec.columns.len()
            ));
        }
        let slice = spec.slice(worker_index, worker_count);
        let mut rows = spec.rows;
        rows.truncate(slice.end);
        rows.drain(..slice.start.min(rows.len()));
        Ok(Feed {
            name: spec.name,
            keys: spec.columns.iter().map(|c| format!("row.{c}")).collect(),
            mode: spec.mode,
            on_exhausted: spec.on_exhausted,
            rows,
            cursor: AtomicUsize::new(0),
        })
    }

    /// The next row for a starting user; None when a `unique` feeder with
    /// `on_exhausted: stop_user` has none left (or this worker has no rows).
    pub fn draw<R: Rng>(&self, rng: &mut R) -> Option<&[String]> {
        let len = self.rows.len();
        if len == 0 {
            return None;
        }
        let i = match self.mode {
            FeedMode::Random => rng.random_range(0..len),
            FeedMode::Cycle => self.cursor.fetch_add(1, Ordering::Relaxed) % len,
            FeedMode::Unique => {
                // Stops counting once past the end, so the cursor cannot wrap
                // around to rows already handed out.
                let i = self
                    .cursor
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |i| {
                        (i < len || self.on_exhausted == Exhausted::Cycle)
                            .then(|| i.wrapping_add(1))
                    })
                    .ok()?;
                i % len
            }
        };
        self.rows.get(i).map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn spec(mode: FeedMode, on_exhausted: Exhausted, n: usize) -> FeederSpec {
        FeederSpec {
            name: "f".into(),
            mode,
            on_exhausted,
            columns: vec!["id".into()],
            rows: (0..n).map(|i| vec![i.to_string()]).collect(),
        }
    }

    fn drain(feed: &Feed, n: usize) -> Vec<Option<String>> {
        let mut rng = SmallRng::seed_from_u64(1);
        (0..n)
            .map(|_| feed.draw(&mut rng).map(|r| r[0].clone()))
            .collect()
    }

    #[test]
    fn unique_hands_out_this_workers_slice_once_then_stops_or_cycles() {
        let s = spec(FeedMode::Unique, Exhausted::StopUser, 10);
        let second = Feed::new(s.clone(), 1, 3).expect("fits");
        let got = drain(&second, 5);
        let want: Vec<Option<String>> = ["4", "5", "6"]
            .iter()
            .map(|v| Some((*v).to_owned()))
            .chain([None, None])
            .collect();
        assert_eq!(got, want);
        let cycling = Feed::new(spec(FeedMode::Unique, Exhausted::Cycle, 10), 2, 3).expect("fits");
        let got: Vec<String> = drain(&cycling, 5).into_iter().flatten().collect();
        assert_eq!(got, ["7", "8", "9", "7", "8"]);
        // A worker whose slice is empty hands out nothing.
        let none = Feed::new(spec(FeedMode::Unique, Exhausted::Cycle, 1), 1, 2).expect("fits");
        assert_eq!(drain(&none, 2), [None, None]);
    }

    #[test]
    fn unique_rows_are_drawn_once_across_threads() {
        let feed = std::sync::Arc::new(
            Feed::new(spec(FeedMode::Unique, Exhausted::StopUser, 4000), 0, 1).expect("fits"),
        );
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let feed = feed.clone();
                std::thread::spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(t);
                    let mut mine = Vec::new();
                    while let Some(r) = feed.draw(&mut rng) {
                        mine.push(r[0].clone());
                    }
                    mine
                })
            })
            .collect();
        let mut all: Vec<usize> = threads
            .into_iter()
            .flat_map(|t| t.join().expect("joins"))
            .map(|v| v.parse().expect("a number"))
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..4000).collect::<Vec<_>>());
    }

    #[test]
    fn cycle_and_random_share_every_row() {
        let cycle = Feed::new(spec(FeedMode::Cycle, Exhausted::StopUser, 3), 1, 3).expect("fits");
        let got: Vec<String> = drain(&cycle, 7).into_iter().flatten().collect();
        assert_eq!(got, ["0", "1", "2", "0", "1", "2", "0"]);
        let random = Feed::new(spec(FeedMode::Random, Exhausted::StopUser, 5), 2, 3).expect("fits");
        let got: Vec<String> = drain(&random, 200).into_iter().flatten().collect();
        assert_eq!(got.len(), 200);
        for v in ["0", "1", "2", "3", "4"] {
            assert!(got.iter().any(|g| g == v), "{v} never drawn");
        }
    }

    #[test]
    fn a_row_of_the_wrong_width_is_refused() {
        let mut s = spec(FeedMode::Cycle, Exhausted::StopUser, 3);
        s.rows[1].push("extra".into());
        let err = Feed::new(s.clone(), 0, 1).expect_err("refused");
        assert!(err.contains("row 1 has 2 cells"), "{err}");
    }
}
