//! Exact splits of users and rates across user classes and workers (largest remainder).

/// Splits `total` in proportion to `weights` so the parts sum to exactly `total`.
/// Remainders go to the largest fractional parts, ties to the earlier index.
pub fn largest_remainder(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let mut parts = Vec::with_capacity(weights.len());
    let mut rems = Vec::with_capacity(weights.len());
    let mut given: u64 = 0;
    for (i, &w) in weights.iter().enumerate() {
        let exact = u128::from(total) * u128::from(w);
        let base = (exact / sum) as u64;
        parts.push(base);
        rems.push((exact % sum, i));
        given += base;
    }
    // Largest remainder first; on equal remainders the earlier index wins.
    rems.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in rems.iter().take((total - given) as usize) {
        parts[i] += 1;
    }
    parts
}

/// Part `index` of `total` split into `parts` equal shares, as
/// [`largest_remainder`] with equal weights gives it (the remainder to the
/// first parts), without building the whole split: engine threads and
/// workers each need only their own part. 0 past the last part.
pub fn equal_part(total: u64, parts: u64, index: u64) -> u64 {
    if index >= parts {
        return 0;
    }
    total / parts + u64::from(index < total % parts)
}

/// One worker's part of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    /// Users per user class, in the scenario's class order.
    pub users_per_class: Vec<u64>,
    /// Users per second this worker starts.
    pub spawn_rate: f64,
}

impl Share {
    pub fn users(&self) -> u64 {
        self.users_per_class.iter().sum()
    }
}

/// Splits `users` over user classes (by weight) and then over `workers`,
/// so the global class mix is exact and worker totals differ by at most one.
///
/// Each class is divided evenly over the workers; the leftover users of each
/// class are handed out round-robin, continuing where the previous class's
/// leftovers stopped, so no worker collects every class's extra user.
pub fn split(users: u64, class_weights: &[u64], workers: usize, spawn_rate: f64) -> Vec<Share> {
    let per_class = largest_remainder(users, class_weights);
    let mut shares: Vec<Share> = (0..workers)
        .map(|_| Share {
            users_per_class: vec![0; class_weights.len()],
            spawn_rate: 0.0,
        })
        .collect();
    if workers == 0 {
        return shares;
    }
    let w = workers as u64;
    let mut next = 0usize;
    for (c, &n) in per_class.iter().enumerate() {
        for share in shares.iter_mut() {
            share.users_per_class[c] = n / w;
        }
        for _ in 0..(n % w) {
            shares[next].users_per_class[c] += 1;
            next = (next + 1) % workers;
        }
    }
    for share in shares.iter_mut() {
        share.spawn_rate = if users == 0 {
            0.0
        } else {
            spawn_rate * share.users() as f64 / users as f64
        };
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn design_example_1000_users_3_to_1_over_3_workers() {
        let shares = split(1000, &[3, 1], 3, 30.0);
        let a: Vec<u64> = shares.iter().map(|s| s.users_per_class[0]).collect();
        let b: Vec<u64> = shares.iter().map(|s| s.users_per_class[1]).collect();
        assert_eq!(a, vec![250, 250, 250]);
        assert_eq!(b, vec![84, 83, 83]);
        let totals: Vec<u64> = shares.iter().map(Share::users).collect();
        assert_eq!(totals, vec![334, 333, 333]);
        let rate: f64 = shares.iter().map(|s| s.spawn_rate).sum();
        assert!((rate - 30.0).abs() < 1e-9);
    }

    #[test]
    fn sums_are_exact_and_balanced() {
        for users in [0u64, 1, 2, 7, 99, 100, 1001, 12345] {
            for weights in [
                vec![1],
                vec![3, 1],
                vec![1, 1, 1],
                vec![5, 0, 2],
                vec![7, 3, 2, 1],
            ] {
                for workers in 1..=7 {
                    let shares = split(users, &weights, workers, 10.0);
                    let total: u64 = shares.iter().map(Share::users).sum();
                    assert_eq!(total, users);
                    let class_totals = largest_remainder(users, &weights);
                    for (c, want) in class_totals.iter().enumerate() {
                        let got: u64 = shares.iter().map(|s| s.users_per_class[c]).sum();
                        assert_eq!(got, *want);
                    }
                    let max = shares.iter().map(Share::users).max().unwrap_or(0);
                    let min = shares.iter().map(Share::users).min().unwrap_or(0);
                    assert!(max - min <= 1, "{users} {weights:?} {workers}: {shares:?}");
                }
            }
        }
    }

    #[test]
    fn an_equal_part_is_that_part_of_the_largest_remainder_split() {
        for total in [0, 1, 2, 7, 10, 999, 1000, u64::MAX] {
            for parts in 1..=9u64 {
                let split = largest_remainder(total, &vec![1; parts as usize]);
                for index in 0..parts {
                    assert_eq!(equal_part(total, parts, index), split[index as usize]);
                }
                assert_eq!(equal_part(total, parts, parts), 0);
            }
        }
        assert_eq!(equal_part(10, 0, 0), 0);
    }

    #[test]
    fn largest_remainder_breaks_ties_to_earlier() {
        assert_eq!(largest_remainder(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(largest_remainder(5, &[0, 0]), vec![0, 0]);
        assert_eq!(largest_remainder(100, &[1, 2]), vec![33, 67]);
    }
}
