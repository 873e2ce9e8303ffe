//! Recommendations a performance engineer would write about a finished run, each with the figures that triggered it.
//!
//! Pure: a report in, recommendations out; the triggers and their limits are
//! listed in docs/report.md.

use std::collections::BTreeMap;

use squall_common::report::{Recommendation, Report, TimelinePoint};
use squall_common::threshold::{Metric, Op, Threshold};

/// p95 above this (ms) is slow for an interactive API.
const SLOW_P95_MS: f64 = 1000.0;
/// An error rate above this (fraction) makes every other figure doubtful.
const HIGH_ERROR_RATE: f64 = 0.05;
/// A worker using more of its machine than this (percent) may have been the bottleneck.
const CPU_SUSPECT_MEAN: f64 = 90.0;
const CPU_SUSPECT_MAX: f64 = 95.0;
/// Users must grow by this factor between two user counts for a trend to be read.
const USERS_GROWTH: f64 = 1.5;
/// Latency "rises with users" when p95 grows by this factor and by at least `RISE_MIN_MS`.
const RISE_FACTOR: f64 = 1.5;
const RISE_MIN_MS: f64 = 5.0;
/// Throughput within this share of its peak counts as "stopped growing".
const KNEE_SHARE: f64 = 0.9;

/// Every recommendation the report warrants, in a fixed order.
pub fn recommend(r: &Report) -> Vec<Recommendation> {
    let mut out = Vec::new();
    slow_p95(r, &mut out);
    high_errors(r, &mut out);
    below_target_rps(r, &mut out);
    arrival_rate_not_met(r, &mut out);
    if matches!(r.load_model.as_str(), "closed" | "stages") {
        let levels = levels(&r.timeline);
        latency_rises(&levels, &mut out);
        knee(&levels, &mut out);
    }
    generator_saturated(r, &mut out);
    out
}

fn rec(kind: &str, message: String, figures: &[(&str, f64)]) -> Recommendation {
    Recommendation {
        kind: kind.to_owned(),
        message,
        figures: figures
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (v * 1000.0).round() / 1000.0))
            .collect(),
    }
}

fn slow_p95(r: &Report, out: &mut Vec<Recommendation>) {
    let slow: Vec<_> = r
        .endpoints
        .iter()
        .filter(|e| e.requests > 0 && e.latency_ms.p95 > SLOW_P95_MS)
        .collect();
    for e in &slow {
        out.push(rec(
            "slow_p95",
            format!(
                "{} {}: p95 is {} ms, above 1 s: one request in twenty waits longer than users tolerate; profile this endpoint (database queries, downstream calls, locks) before adding load",
                e.method, e.name, e.latency_ms.p95
            ),
            &[("p95_ms", e.latency_ms.p95), ("requests", e.requests as f64)],
        ));
    }
    let t = &r.totals;
    if slow.is_empty() && t.requests > 0 && t.latency_ms.p95 > SLOW_P95_MS {
        out.push(rec(
            "slow_p95",
            format!(
                "p95 over all requests is {} ms, above 1 s; profile the slowest endpoints before adding load",
                t.latency_ms.p95
            ),
            &[("p95_ms", t.latency_ms.p95), ("requests", t.requests as f64)],
        ));
    }
}

fn high_errors(r: &Report, out: &mut Vec<Recommendation>) {
    let t = &r.totals;
    if t.requests == 0 || t.error_rate <= HIGH_ERROR_RATE {
        return;
    }
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &r.endpoints {
        for (kind, n) in &e.errors {
            *kinds.entry(kind).or_default() += n;
        }
    }
    let top = kinds
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(k, n)| format!("; the most common error is `{k}` ({n})"))
        .unwrap_or_default();
    out.push(rec(
        "high_errors",
        format!(
            "{:.2} % of requests failed ({} of {}), above 5 %{top}: fix the errors before trusting the latency figures (fast failures make latency look better)",
            t.error_rate * 100.0,
            t.failures,
            t.requests
        ),
        &[
            ("error_rate", t.error_rate),
            ("failures", t.failures as f64),
            ("requests", t.requests as f64),
        ],
    ));
}

/// Open models: arrivals the workers could not start on time were dropped,
/// so the rate asked for was not delivered and the run measured less load.
fn arrival_rate_not_met(r: &Report, out: &mut Vec<Recommendation>) {
    let dropped = r.totals.dropped_iterations;
    if dropped == 0 {
        return;
    }
    let planned: f64 = r.timeline.iter().filter_map(|p| p.planned_rps).sum();
    let share = if planned > 0.0 {
        format!(
            " of {planned:.0} planned ({:.2} %)",
            dropped as f64 / planned * 100.0
        )
    } else {
        String::new()
    };
    out.push(rec(
        "arrival_rate_not_met",
        format!(
            "{dropped} arrivals{share} were dropped: every pool user was busy, or a worker fell more than 1 s behind its schedule, so the arrival rate asked for was not delivered; raise max_users if the target is slow (rate x latency above max_users), or add workers if their CPU is high"
        ),
        &[("dropped_iterations", dropped as f64), ("planned_iterations", planned)],
    ));
}

fn below_target_rps(r: &Report, out: &mut Vec<Recommendation>) {
    for res in &r.thresholds {
        let Ok(t) = Threshold::parse(&res.expr) else {
            continue;
        };
        if t.metric != Metric::Rps || !matches!(t.op, Op::Gt | Op::Ge) || res.passed {
            continue;
        }
        let whose = t
            .endpoint
            .as_deref()
            .map_or_else(|| "throughput".to_owned(), |e| format!("{e}: throughput"));
        out.push(rec(
            "below_target_rps",
            format!(
                "{whose} was {} req/s, below the target of {} req/s (`{}`): either the target saturated (see the latency and knee figures) or the load was too small to reach it (add users, shorten waits, or use an arrival rate)",
                res.actual, t.value, res.expr
            ),
            &[("rps", res.actual), ("target_rps", t.value)],
        ));
    }
}

/// The timeline grouped by user count: (users, mean rps, mean p95), ascending.
/// Seconds without requests and the last one (the final snapshot, not a
/// whole second) are left out.
fn levels(timeline: &[TimelinePoint]) -> Vec<(u64, f64, f64)> {
    let mut by_users: BTreeMap<u64, (f64, f64, u32)> = BTreeMap::new();
    let whole = timeline.len().saturating_sub(1);
    for p in timeline.iter().take(whole) {
        if p.requests == 0 || p.users == 0 {
            continue;
        }
        let e = by_users.entry(p.users).or_default();
        e.0 += p.rps;
        e.1 += p.p95_ms;
        e.2 += 1;
    }
    by_users
        .into_iter()
        .map(|(u, (rps, p95, n))| (u, rps / f64::from(n), p95 / f64::from(n)))
        .collect()
}

/// Latency at light load against latency at the most users. "Light load" is
/// the lowest p95 among the levels with at most 1/`USERS_GROWTH` of the top
/// user count, not simply the first level: the first seconds carry the
/// connection set-up and the first requests to a cold target (a clean-clone
/// CI run saw 109.5 ms at 4 users, 43.5 ms at 12 and 163 ms at 32).
fn latency_rises(levels: &[(u64, f64, f64)], out: &mut Vec<Recommendation>) {
    let Some(high) = levels.last() else {
        return;
    };
    let Some(low) = levels
        .iter()
        .filter(|l| l.0 as f64 * USERS_GROWTH <= high.0 as f64)
        .min_by(|a, b| a.2.total_cmp(&b.2))
    else {
        return;
    };
    if high.2 < low.2 * RISE_FACTOR || high.2 - low.2 < RISE_MIN_MS {
        return;
    }
    out.push(rec(
        "latency_rises_with_users",
        format!(
            "p95 rose from {:.1} ms at {} users to {:.1} ms at {} users: requests queue as load grows; find the saturated resource (CPU, connection pool, database) on the target",
            low.2, low.0, high.2, high.0
        ),
        &[
            ("users_low", low.0 as f64),
            ("p95_ms_low", low.2),
            ("users_high", high.0 as f64),
            ("p95_ms_high", high.2),
        ],
    ));
}

fn knee(levels: &[(u64, f64, f64)], out: &mut Vec<Recommendation>) {
    let peak = levels.iter().map(|l| l.1).fold(0.0, f64::max);
    let Some(top) = levels.last() else {
        return;
    };
    if peak <= 0.0 {
        return;
    }
    let Some(knee) = levels.iter().find(|l| l.1 >= peak * KNEE_SHARE) else {
        return;
    };
    if (top.0 as f64) < knee.0 as f64 * USERS_GROWTH {
        return;
    }
    out.push(rec(
        "throughput_knee",
        format!(
            "throughput stopped growing at about {} users ({:.1} req/s); at {} users it was {:.1} req/s: users beyond the knee only add waiting. Capacity is about {:.0} req/s; size for that or scale the target",
            knee.0, knee.1, top.0, top.1, peak
        ),
        &[
            ("users_at_knee", knee.0 as f64),
            ("rps_at_knee", knee.1),
            ("users_max", top.0 as f64),
            ("rps_at_max_users", top.1),
            ("rps_peak", peak),
        ],
    ));
}

fn generator_saturated(r: &Report, out: &mut Vec<Recommendation>) {
    for w in &r.workers {
        if w.cpu_percent_mean < CPU_SUSPECT_MEAN && w.cpu_percent_max < CPU_SUSPECT_MAX {
            continue;
        }
        out.push(rec(
            "generator_saturated",
            format!(
                "worker {} used {:.0} % of its {} cores on average ({:.0} % at peak): the load generator itself may have been the bottleneck, so latency and throughput figures are suspect; add workers or cores and run again",
                w.id, w.cpu_percent_mean, w.cores, w.cpu_percent_max
            ),
            &[
                ("cpu_percent_mean", w.cpu_percent_mean),
                ("cpu_percent_max", w.cpu_percent_max),
                ("cores", f64::from(w.cores)),
            ],
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::render::fixture;
    use squall_common::report::ThresholdResult;

    fn kinds(r: &Report) -> Vec<String> {
        recommend(r).into_iter().map(|x| x.kind).collect()
    }

    fn point(t: u64, users: u64, rps: f64, p95: f64) -> TimelinePoint {
        TimelinePoint {
            t,
            users,
            requests: rps as u64,
            rps,
            p95_ms: p95,
            ..Default::default()
        }
    }

    #[test]
    fn a_healthy_run_gets_none() {
        let mut r = fixture::sample();
        // The sample's timeline grows users and rps together with flat latency.
        r.timeline = (0..10)
            .map(|t| point(t, (t + 1) * 10, (t + 1) as f64 * 100.0, 20.0))
            .collect();
        assert!(kinds(&r).is_empty(), "{:?}", recommend(&r));
    }

    #[test]
    fn dropped_arrivals_say_the_rate_was_not_met() {
        let mut r = fixture::sample();
        r.load_model = "open".into();
        r.timeline = (0..10)
            .map(|t| TimelinePoint {
                planned_rps: Some(100.0),
                ..point(t, 10, 90.0, 20.0)
            })
            .collect();
        r.totals.dropped_iterations = 100;
        let recs = recommend(&r);
        let d = recs
            .iter()
            .find(|x| x.kind == "arrival_rate_not_met")
            .expect("arrival_rate_not_met");
        assert_eq!(d.figures["dropped_iterations"], 100.0);
        assert_eq!(d.figures["planned_iterations"], 1000.0);
        assert!(d.message.contains("(10.00 %)"), "{}", d.message);
        r.totals.dropped_iterations = 0;
        assert!(!kinds(&r).contains(&"arrival_rate_not_met".to_owned()));
    }

    #[test]
    fn slow_p95_names_the_endpoint_and_its_figure() {
        let mut r = fixture::sample();
        r.endpoints[1].latency_ms.p95 = 1500.0;
        let recs = recommend(&r);
        let slow: Vec<_> = recs.iter().filter(|x| x.kind == "slow_p95").collect();
        assert_eq!(slow.len(), 1);
        assert!(
            slow[0].message.contains("POST /login"),
            "{}",
            slow[0].message
        );
        assert_eq!(slow[0].figures["p95_ms"], 1500.0);
    }

    #[test]
    fn high_error_rate_names_the_most_common_error() {
        let mut r = fixture::sample();
        r.totals.failures = 600;
        r.totals.error_rate = 0.06;
        let recs = recommend(&r);
        let e = recs
            .iter()
            .find(|x| x.kind == "high_errors")
            .expect("high_errors");
        assert!(e.message.contains("6.00 %"), "{}", e.message);
        assert!(e.message.contains("unexpected status 500"), "{}", e.message);
        assert_eq!(e.figures["error_rate"], 0.06);
        r.totals.error_rate = 0.05;
        assert!(
            !kinds(&r).contains(&"high_errors".to_owned()),
            "5 % exactly is not above 5 %"
        );
    }

    #[test]
    fn throughput_below_an_rps_target() {
        let mut r = fixture::sample();
        r.thresholds.push(ThresholdResult {
            expr: "rps > 500".into(),
            passed: false,
            actual: 140.0,
            level: "critical".into(),
            target: 500.0,
            deviation: Some(-0.72),
        });
        let recs = recommend(&r);
        let e = recs
            .iter()
            .find(|x| x.kind == "below_target_rps")
            .expect("rec");
        assert_eq!((e.figures["rps"], e.figures["target_rps"]), (140.0, 500.0));
    }

    #[test]
    fn saturating_target_gives_the_knee_and_rising_latency() {
        let mut r = fixture::sample();
        // 10 to 100 users; throughput flat from 30 users on, latency climbing.
        r.timeline = (0..10)
            .map(|t| {
                let users = (t + 1) * 10;
                let rps = (users as f64 * 10.0).min(300.0);
                point(t, users, rps, 10.0 + users as f64)
            })
            .collect();
        r.timeline.push(point(10, 200, 5.0, 500.0)); // the final snapshot: ignored
        let recs = recommend(&r);
        let k = recs
            .iter()
            .find(|x| x.kind == "throughput_knee")
            .expect("knee");
        assert_eq!(k.figures["users_at_knee"], 30.0);
        assert_eq!(k.figures["rps_peak"], 300.0);
        assert_eq!(k.figures["users_max"], 100.0, "the last point is left out");
        let l = recs
            .iter()
            .find(|x| x.kind == "latency_rises_with_users")
            .expect("latency");
        assert_eq!(
            (l.figures["p95_ms_low"], l.figures["p95_ms_high"]),
            (20.0, 110.0)
        );
        // Open models: users follow latency, so neither is read.
        r.load_model = "open".into();
        assert!(kinds(&r).is_empty(), "{:?}", kinds(&r));
    }

    #[test]
    fn a_slow_first_second_does_not_hide_rising_latency() {
        let mut r = fixture::sample();
        // The timeline a clean-clone CI run produced: the first second's p95
        // (connection set-up) is above 2/3 of the top level's.
        let p95 = [109.5, 64.0, 43.5, 79.6, 84.7, 106.8, 136.4, 165.0, 160.8];
        r.timeline = p95
            .iter()
            .enumerate()
            .map(|(t, &p)| point(t as u64, (4 * (t as u64 + 1)).min(32), 185.0, p))
            .collect();
        r.timeline.push(point(9, 32, 186.0, 166.0));
        let recs = recommend(&r);
        let l = recs
            .iter()
            .find(|x| x.kind == "latency_rises_with_users")
            .expect("latency");
        assert_eq!(
            (l.figures["users_low"], l.figures["p95_ms_low"]),
            (12.0, 43.5)
        );
    }

    #[test]
    fn a_saturated_worker_is_named() {
        let mut r = fixture::sample();
        r.workers[1].cores = 4;
        r.workers[1].cpu_percent_mean = 93.0;
        r.workers[1].cpu_percent_max = 99.0;
        let recs = recommend(&r);
        let g: Vec<_> = recs
            .iter()
            .filter(|x| x.kind == "generator_saturated")
            .collect();
        assert_eq!(g.len(), 1);
        assert!(g[0].message.contains("worker-b"), "{}", g[0].message);
        assert_eq!(g[0].figures["cores"], 4.0);
    }
}
