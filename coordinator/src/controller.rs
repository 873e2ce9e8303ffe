//! The run controller: split a scenario over the attached workers, start them, merge what they send, stop them, report.

use std::time::{Duration, Instant};

use squall_common::protocol::{CoordinatorMessage, Start, WorkerMessage, WorkerState};
use squall_common::report::BreakPoint;
use squall_common::threshold::{Metric, Threshold};
use squall_common::{LoadModel, Report, RunSpec, partition};

use crate::aggregator::{Added, Aggregator};
use crate::cluster::Cluster;
use crate::error::CoordinatorError;
use crate::report::{LiveLine, ReportMeta, build, live};
use crate::service::ClusterEvent;

/// How a run ended.
#[derive(Debug)]
pub struct RunResult {
    pub report: Report,
    /// Every worker was lost before the run completed.
    pub all_lost: bool,
}

fn describe(load: &LoadModel) -> String {
    match load {
        LoadModel::Closed {
            users, spawn_rate, ..
        } => format!("{users} users at {spawn_rate}/s"),
        LoadModel::Stages { stages } => format!(
            "{} user stages up to {} users",
            stages.len(),
            load.peak_users()
        ),
        LoadModel::Open {
            rate, max_users, ..
        } => format!("{rate} arrivals, pool of {max_users} users"),
        LoadModel::RampingRate { stages, max_users } => {
            format!("{} rate stages, pool of {max_users} users", stages.len())
        }
    }
}

/// The value a stop condition looks at in one second's figures.
fn second_value(t: &Threshold, l: &LiveLine) -> f64 {
    match t.metric {
        Metric::Latency(stat) => stat.of(&l.latency),
        Metric::ErrorRate => squall_common::report::ratio(l.failures, l.requests),
        Metric::Rps => l.rps,
        Metric::Requests => l.requests as f64,
        Metric::Failures => l.failures as f64,
    }
}

/// Runs one scenario on every currently attached worker.
pub async fn run_scenario(
    cluster: &mut Cluster,
    spec: &RunSpec,
    headless: bool,
    rebalance: bool,
) -> Result<RunResult, CoordinatorError> {
    let links = cluster.links();
    if links.is_empty() {
        return Err(CoordinatorError::NoWorkers {
            wanted: 1,
            attached: 0,
            waited: Duration::ZERO,
        });
    }
    let stop_when: Vec<Threshold> = spec
        .stop_when
        .iter()
        .filter_map(|e| Threshold::parse(e).ok())
        .collect();
    let duration = spec.load.duration();
    // Each worker derives its exact part of the plan at every moment; the
    // share sent here is its part at the plan's peak (shown and reported).
    let spawn_rate = match spec.load {
        LoadModel::Closed { spawn_rate, .. } => spawn_rate,
        _ => 0.0,
    };
    let shares = partition::split(
        spec.load.peak_users(),
        &spec.class_weights(),
        links.len(),
        spawn_rate,
    );
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let members: Vec<(String, Vec<u64>)> = links
        .iter()
        .zip(&shares)
        .map(|(l, s)| (l.id.clone(), s.users_per_class.clone()))
        .collect();
    let mut agg = Aggregator::new(&run_id, spec, &members);
    eprintln!(
        "run {run_id}: scenario `{}` against {}: {} for {} on {} worker(s)",
        spec.scenario,
        spec.host,
        describe(&spec.load),
        squall_common::duration::format(duration),
        links.len()
    );
    let seed: u64 = rand::random();
    for (i, (link, share)) in links.iter().zip(&shares).enumerate() {
        eprintln!(
            "  worker {}: up to {} users {:?}",
            link.id,
            share.users(),
            share.users_per_class
        );
        let start = Start {
            run_id: run_id.clone(),
            spec: spec.clone(),
            share: share.clone(),
            seed,
            worker_index: u32::try_from(i).unwrap_or(u32::MAX),
            worker_count: u32::try_from(links.len()).unwrap_or(u32::MAX),
            plan_offset: Duration::ZERO,
        };
        cluster
            .send(&link.id, CoordinatorMessage::Start(Box::new(start)))
            .await;
    }

    let t0 = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop_deadline: Option<tokio::time::Instant> = None;
    let mut partial = false;
    let mut broke_at: Option<BreakPoint> = None;
    let mut checked_second: Option<u64> = None;
    let grace = spec.graceful_stop;
    // Every worker that took part (Stop goes to all), and those still running, in plan order.
    let mut member_ids: Vec<String> = members.iter().map(|(id, _)| id.clone()).collect();
    let mut running: Vec<String> = member_ids.clone();
    let ctrl_c = squall_worker::signal::interrupted();
    tokio::pin!(ctrl_c);

    loop {
        if agg.complete() {
            break;
        }
        if stop_deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            eprintln!(
                "warning: stopped waiting for the final snapshots of {}",
                agg.missing().join(", ")
            );
            partial = true;
            break;
        }
        tokio::select! {
            ev = cluster.next() => match ev {
                None => return Err(CoordinatorError::Internal("event channel closed".into())),
                Some(ClusterEvent::Joined(link)) => {
                    if !rebalance || stop_deadline.is_some() || agg.is_member(&link.id) {
                        eprintln!("worker {} attached mid-run; it will take part in the next run", link.id);
                    } else {
                        // Give the newcomer a share: it starts part-way through the plan.
                        let elapsed = t0.elapsed();
                        running.push(link.id.clone());
                        member_ids.push(link.id.clone());
                        let n = running.len();
                        let shares = partition::split(spec.load.peak_users(), &spec.class_weights(), n, spawn_rate);
                        agg.add_member(&link.id, shares[n - 1].users_per_class.clone(), elapsed.as_secs());
                        let start = Start {
                            run_id: run_id.clone(),
                            spec: spec.clone(),
                            share: shares[n - 1].clone(),
                            seed,
                            worker_index: u32::try_from(n - 1).unwrap_or(u32::MAX),
                            worker_count: u32::try_from(n).unwrap_or(u32::MAX),
                            plan_offset: elapsed,
                        };
                        cluster.send(&link.id, CoordinatorMessage::Start(Box::new(start))).await;
                        adjust_all(cluster, &running[..n - 1], &run_id, &shares, n).await;
                        let text = format!("worker {} joined; load rebalanced over {n} workers", link.id);
                        eprintln!("{text}");
                        agg.event(elapsed.as_secs(), text);
                    }
                }
                Some(ClusterEvent::Left { worker, reason }) => {
                    if agg.is_member(&worker) {
                        eprintln!("warning: worker {worker} lost: {reason}");
                        let moving = rebalance && stop_deadline.is_none();
                        drop_worker(cluster, &mut agg, &mut running, (&run_id, spec, spawn_rate), t0.elapsed(), moving, &worker, "lost").await;
                    }
                }
                Some(ClusterEvent::Message { worker, msg }) => match msg {
                    WorkerMessage::Snapshot(s) => match agg.add(&worker, &s) {
                        Ok(Added::Ack(seq)) => {
                            cluster.send(&worker, CoordinatorMessage::Ack { run_id: run_id.clone(), seq }).await;
                        }
                        Ok(Added::Duplicate | Added::Foreign) => {}
                        Err(e) => tracing::warn!("worker {worker}: bad snapshot {}: {e}", s.seq),
                    },
                    WorkerMessage::Status(st) if st.run_id == run_id => {
                        agg.set_state(&worker, st.state.as_str(), t0.elapsed().as_secs_f64());
                        match st.state {
                        WorkerState::Stopped => agg.expect(&worker, st.snapshots_sent),
                        WorkerState::Failed => {
                            eprintln!("error: worker {worker} failed: {}", st.reason);
                            let moving = rebalance && stop_deadline.is_none();
                            let what = format!("failed ({})", st.reason);
                            drop_worker(cluster, &mut agg, &mut running, (&run_id, spec, spawn_rate), t0.elapsed(), moving, &worker, &what).await;
                        }
                        _ => {}
                    }},
                    _ => {}
                },
            },
            _ = tick.tick() => {
                let elapsed = t0.elapsed();
                let line = live::latest(&agg);
                if !headless && stop_deadline.is_none() && let Some(l) = &line {
                    eprintln!("{}  workers: {}", live::line(elapsed, duration, l), agg.states_summary());
                }
                // Stress runs: check each newly completed second against the stop conditions.
                if stop_deadline.is_none() && let Some(l) = line.filter(|l| l.complete && Some(l.t) != checked_second) {
                    checked_second = Some(l.t);
                    if let Some((cond, actual)) = stop_when.iter().map(|c| (c, second_value(c, &l))).find(|(c, v)| c.check(*v)) {
                        let text = format!(
                            "stop condition `{}` met at {}s ({actual:.3}): broke at {} users, {:.1} rps",
                            cond.expr, l.t, l.users, l.rps
                        );
                        eprintln!("{text}");
                        agg.event(l.t, text);
                        broke_at = Some(BreakPoint { t: l.t, users: l.users, rps: l.rps, condition: cond.expr.clone(), actual });
                        stop_all(cluster, &member_ids, &run_id, grace).await;
                        stop_deadline = Some(tokio::time::Instant::now() + grace + Duration::from_secs(5));
                    }
                }
                // Workers end the plan on their own clocks; this Stop is the fallback.
                if stop_deadline.is_none() && elapsed >= duration + Duration::from_secs(3) {
                    stop_all(cluster, &member_ids, &run_id, grace).await;
                    stop_deadline = Some(tokio::time::Instant::now() + grace + Duration::from_secs(5));
                }
            }
            _ = &mut ctrl_c => {
                if stop_deadline.is_some() {
                    eprintln!("interrupted again: not waiting for the last snapshots");
                    partial = true;
                    break;
                }
                eprintln!("interrupted: stopping the run and collecting the last snapshots (interrupt again to stop waiting)");
                partial = true;
                agg.event(t0.elapsed().as_secs(), "interrupted".into());
                stop_all(cluster, &member_ids, &run_id, grace).await;
                stop_deadline = Some(tokio::time::Instant::now() + grace + Duration::from_secs(5));
                ctrl_c.set(squall_worker::signal::interrupted());
            }
        }
        if agg.all_lost() {
            partial = true;
            break;
        }
    }
    let all_lost = agg.all_lost();
    let report = build(
        &agg,
        ReportMeta {
            spec,
            started_at,
            partial,
            broke_at,
        },
    )
    .map_err(|e| CoordinatorError::Internal(e.to_string()))?;
    Ok(RunResult { report, all_lost })
}

/// A worker left the run (lost or failed): record it and, when `moving`, give its share to the others.
#[allow(clippy::too_many_arguments)]
async fn drop_worker(
    cluster: &Cluster,
    agg: &mut Aggregator,
    running: &mut Vec<String>,
    (run_id, spec, spawn_rate): (&str, &RunSpec, f64),
    elapsed: Duration,
    moving: bool,
    worker: &str,
    what: &str,
) {
    agg.mark_lost(worker, elapsed.as_secs_f64());
    running.retain(|id| id != worker);
    let t = elapsed.as_secs();
    if moving && !running.is_empty() {
        let n = running.len();
        let shares = partition::split(spec.load.peak_users(), &spec.class_weights(), n, spawn_rate);
        adjust_all(cluster, running, run_id, &shares, n).await;
        agg.event(
            t,
            format!("worker {worker} {what}; its load moved to {n} survivor(s)"),
        );
    } else {
        agg.event(t, format!("worker {worker} {what}"));
    }
}

/// Tells each running worker its new place after the set of workers changed.
async fn adjust_all(
    cluster: &Cluster,
    running: &[String],
    run_id: &str,
    shares: &[partition::Share],
    count: usize,
) {
    for (i, id) in running.iter().enumerate() {
        let adjust = CoordinatorMessage::Adjust {
            run_id: run_id.to_owned(),
            share: shares[i].clone(),
            worker_index: u32::try_from(i).unwrap_or(u32::MAX),
            worker_count: u32::try_from(count).unwrap_or(u32::MAX),
        };
        cluster.send(id, adjust).await;
    }
}

async fn stop_all(cluster: &Cluster, ids: &[String], run_id: &str, graceful: Duration) {
    for id in ids {
        let stop = CoordinatorMessage::Stop {
            run_id: run_id.to_owned(),
            graceful,
        };
        cluster.send(id, stop).await;
    }
}
