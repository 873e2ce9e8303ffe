//! `CoordinatorMessage` (coordinator -> worker) on the wire, with `Start` and `Adjust` checked on arrival.
//!
//! A worker sizes tables by `worker_count`, indexes them by `worker_index`
//! and adds the plan's durations to its clock, so these values are checked
//! here, once, before the engine sees them: a buggy or hostile coordinator
//! gets a refusal (`ConvertError::Start` / `Adjust`, which name the run so the
//! worker can report it FAILED) instead of a panic or an allocation it chose.

use std::time::Duration;

use squall_common::partition::largest_remainder;
use squall_common::protocol::{CoordinatorMessage, Start, Welcome};
use squall_common::{RunSpec, Share, duration};

use super::ConvertError;
use crate::pb;
use crate::pb::coordinator_message::Kind;

/// The most workers a run may have: per-worker tables on every worker are
/// this long at most (the design aims at 100 machines; this is 1,000 times that).
pub const MAX_WORKERS: u32 = 100_000;

/// What is wrong with a `Start` or `Adjust`; each names the field and the bound.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlaceError {
    #[error("worker_count {0} is outside 1..={MAX_WORKERS}")]
    WorkerCount(u32),
    #[error("worker_index {index} is not below worker_count {count}")]
    WorkerIndex { index: u32, count: u32 },
    #[error("the share has {got} user classes, the scenario {expected}")]
    ShareClasses { got: usize, expected: usize },
    #[error("the share gives user class {class} {got} users, more than the scenario's {max}")]
    ShareUsers { class: usize, got: u64, max: u64 },
    #[error("the share's users add up past {max}")]
    ShareTotal { max: u64 },
    #[error("the share's spawn rate {0} is not a finite number of at least 0")]
    SpawnRate(f64),
    #[error("plan_offset {0:?} is beyond the 30-day limit")]
    PlanOffset(Duration),
    #[error("the scenario is beyond Squall's limits: {0}")]
    Limits(#[from] squall_common::scenario::LimitError),
    #[error("the scenario JSON does not parse: {0}")]
    Scenario(String),
}

/// Index below count, count within [`MAX_WORKERS`].
fn check_place(index: u32, count: u32) -> Result<(), PlaceError> {
    if count == 0 || count > MAX_WORKERS {
        return Err(PlaceError::WorkerCount(count));
    }
    if index >= count {
        return Err(PlaceError::WorkerIndex { index, count });
    }
    Ok(())
}

/// A share whose counts can be summed and whose rate can be used: finite
/// rate, and a checked total no larger than `max_total`.
fn check_share(share: &Share, max_total: u64) -> Result<(), PlaceError> {
    if !(share.spawn_rate.is_finite() && share.spawn_rate >= 0.0) {
        return Err(PlaceError::SpawnRate(share.spawn_rate));
    }
    share
        .users_per_class
        .iter()
        .try_fold(0u64, |sum, &n| sum.checked_add(n))
        .filter(|&total| total <= max_total)
        .map(|_| ())
        .ok_or(PlaceError::ShareTotal { max: max_total })
}

/// Everything in a `Start` the worker relies on: its place, a plan within
/// the limits, and a share that fits the scenario (one count per class, none
/// above that class's part of the peak).
fn check_start(start: &Start) -> Result<(), PlaceError> {
    check_place(start.worker_index, start.worker_count)?;
    start.spec.load.check_limits()?;
    if start.plan_offset > duration::MAX {
        return Err(PlaceError::PlanOffset(start.plan_offset));
    }
    let per_class = largest_remainder(start.spec.load.peak_users(), &start.spec.class_weights());
    if start.share.users_per_class.len() != per_class.len() {
        return Err(PlaceError::ShareClasses {
            got: start.share.users_per_class.len(),
            expected: per_class.len(),
        });
    }
    for (class, (&got, &max)) in start
        .share
        .users_per_class
        .iter()
        .zip(&per_class)
        .enumerate()
    {
        if got > max {
            return Err(PlaceError::ShareUsers { class, got, max });
        }
    }
    check_share(&start.share, start.spec.load.peak_users())
}

/// A `Start` from the wire, checked; a refusal keeps the run id.
fn decode_start(s: pb::Start) -> Result<Start, ConvertError> {
    let refuse = |run_id: &str, problem| ConvertError::Start {
        run_id: run_id.to_owned(),
        problem,
    };
    let spec: RunSpec = serde_json::from_str(&s.scenario_json)
        .map_err(|e| refuse(&s.run_id, PlaceError::Scenario(e.to_string())))?;
    let start = Start {
        spec,
        share: s.share.ok_or(ConvertError::Missing("share"))?.into(),
        seed: s.seed,
        worker_index: s.worker_index,
        worker_count: s.worker_count,
        plan_offset: Duration::from_millis(s.plan_offset_ms),
        run_id: s.run_id,
    };
    check_start(&start).map_err(|problem| refuse(&start.run_id, problem))?;
    Ok(start)
}

/// An `Adjust` from the wire, checked: its place, and a share that can be summed.
fn decode_adjust(a: pb::Adjust) -> Result<CoordinatorMessage, ConvertError> {
    let share: Share = a.share.ok_or(ConvertError::Missing("share"))?.into();
    check_place(a.worker_index, a.worker_count)
        .and_then(|()| check_share(&share, u64::MAX))
        .map_err(|problem| ConvertError::Adjust {
            run_id: a.run_id.clone(),
            problem,
        })?;
    Ok(CoordinatorMessage::Adjust {
        run_id: a.run_id,
        share,
        worker_index: a.worker_index,
        worker_count: a.worker_count,
    })
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl TryFrom<&CoordinatorMessage> for pb::CoordinatorMessage {
    type Error = ConvertError;

    fn try_from(m: &CoordinatorMessage) -> Result<Self, ConvertError> {
        let kind = match m {
            CoordinatorMessage::Welcome(w) => Kind::Welcome(pb::Welcome {
                index: w.index,
                heartbeat_interval_ms: millis(w.heartbeat_interval),
                heartbeat_timeout_ms: millis(w.heartbeat_timeout),
            }),
            CoordinatorMessage::Start(s) => Kind::Start(pb::Start {
                run_id: s.run_id.clone(),
                scenario_json: serde_json::to_string(&s.spec)?,
                share: Some((&s.share).into()),
                seed: s.seed,
                worker_index: s.worker_index,
                worker_count: s.worker_count,
                plan_offset_ms: u64::try_from(s.plan_offset.as_millis()).unwrap_or(u64::MAX),
            }),
            CoordinatorMessage::Adjust {
                run_id,
                share,
                worker_index,
                worker_count,
            } => Kind::Adjust(pb::Adjust {
                run_id: run_id.clone(),
                share: Some(share.into()),
                worker_index: *worker_index,
                worker_count: *worker_count,
            }),
            CoordinatorMessage::Stop { run_id, graceful } => Kind::Stop(pb::Stop {
                run_id: run_id.clone(),
                graceful_timeout_ms: millis(*graceful),
            }),
            CoordinatorMessage::Ack { run_id, seq } => Kind::Ack(pb::Ack {
                run_id: run_id.clone(),
                seq: *seq,
            }),
            CoordinatorMessage::Shutdown { reason } => Kind::Shutdown(pb::Shutdown {
                reason: reason.clone(),
            }),
            CoordinatorMessage::Ping => Kind::Ping(pb::Ping {}),
            CoordinatorMessage::PoolCeiling { run_id, users } => {
                Kind::PoolCeiling(pb::PoolCeiling {
                    run_id: run_id.clone(),
                    users: *users,
                })
            }
        };
        Ok(pb::CoordinatorMessage { kind: Some(kind) })
    }
}

/// Turns a received wire message into the domain message.
pub fn decode_coordinator_message(
    m: pb::CoordinatorMessage,
) -> Result<CoordinatorMessage, ConvertError> {
    Ok(match m.kind.ok_or(ConvertError::Empty("coordinator"))? {
        Kind::Welcome(w) => CoordinatorMessage::Welcome(Welcome {
            index: w.index,
            heartbeat_interval: Duration::from_millis(w.heartbeat_interval_ms.into()),
            heartbeat_timeout: Duration::from_millis(w.heartbeat_timeout_ms.into()),
        }),
        Kind::Start(s) => CoordinatorMessage::Start(Box::new(decode_start(s)?)),
        Kind::Adjust(a) => decode_adjust(a)?,
        Kind::Stop(s) => CoordinatorMessage::Stop {
            run_id: s.run_id,
            graceful: Duration::from_millis(s.graceful_timeout_ms.into()),
        },
        Kind::Ack(a) => CoordinatorMessage::Ack {
            run_id: a.run_id,
            seq: a.seq,
        },
        Kind::Shutdown(s) => CoordinatorMessage::Shutdown { reason: s.reason },
        Kind::Ping(_) => CoordinatorMessage::Ping,
        // Any value is safe: the pool only ever takes the lesser of it and
        // its own ceiling (`max_users`), and keeps at least one user.
        Kind::PoolCeiling(c) => CoordinatorMessage::PoolCeiling {
            run_id: c.run_id,
            users: c.users,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_common::scenario::{Loaded, Overrides};

    const FILE: &str = "host: http://127.0.0.1:1\nscenarios:\n  s: { users: 10, duration: 5s }\nuser_classes:\n  a: { weight: 3, tasks: [ { get: / } ] }\n  b: { tasks: [ { get: / } ] }\n";

    /// A valid Start for worker 1 of 2 (users 10 = a 8 + b 2, so 4 + 1 each), as on the wire.
    fn wire_start() -> pb::Start {
        let spec = Loaded::from_str("t.yaml", FILE)
            .and_then(|l| l.resolve("s", &Overrides::default(), false))
            .expect("valid scenario");
        let start = CoordinatorMessage::Start(Box::new(Start {
            run_id: "r1".into(),
            spec,
            share: Share {
                users_per_class: vec![4, 1],
                spawn_rate: 5.0,
            },
            seed: 7,
            worker_index: 1,
            worker_count: 2,
            plan_offset: Duration::ZERO,
        }));
        match pb::CoordinatorMessage::try_from(&start).map(|m| m.kind) {
            Ok(Some(Kind::Start(s))) => s,
            other => panic!("encodes a Start: {other:?}"),
        }
    }

    fn decode(kind: Kind) -> Result<CoordinatorMessage, ConvertError> {
        decode_coordinator_message(pb::CoordinatorMessage { kind: Some(kind) })
    }

    /// Decodes a changed Start and returns its refusal's text, checking it names the run.
    fn refused(change: impl FnOnce(&mut pb::Start)) -> String {
        let mut s = wire_start();
        change(&mut s);
        let err = decode(Kind::Start(s)).expect_err("refused");
        assert_eq!(err.run_id(), Some("r1"), "{err}");
        err.to_string()
    }

    #[test]
    fn a_pool_ceiling_and_its_lifting_cross_the_wire() {
        for users in [Some(37), None] {
            let m = CoordinatorMessage::PoolCeiling {
                run_id: "r1".into(),
                users,
            };
            let wire = pb::CoordinatorMessage::try_from(&m).expect("encodes");
            assert_eq!(decode_coordinator_message(wire).expect("decodes"), m);
        }
    }

    #[test]
    fn a_valid_start_passes() {
        let m = decode(Kind::Start(wire_start())).expect("valid");
        assert!(matches!(m, CoordinatorMessage::Start(s) if s.worker_index == 1));
    }

    #[test]
    fn a_start_with_an_impossible_place_is_refused() {
        let e = refused(|s| s.worker_index = 2);
        assert!(
            e.contains("worker_index 2 is not below worker_count 2"),
            "{e}"
        );
        let e = refused(|s| s.worker_index = u32::MAX);
        assert!(e.contains("not below"), "{e}");
        let e = refused(|s| s.worker_count = 0);
        assert!(e.contains("worker_count 0 is outside 1..=100000"), "{e}");
        // Would make the worker allocate per-worker tables of 4 billion entries.
        let e = refused(|s| {
            s.worker_count = u32::MAX;
            s.worker_index = 0;
        });
        assert!(e.contains("worker_count 4294967295"), "{e}");
    }

    #[test]
    fn a_start_whose_share_does_not_fit_the_scenario_is_refused() {
        let e = refused(|s| {
            if let Some(share) = &mut s.share {
                share.users_per_class = vec![4];
            }
        });
        assert!(e.contains("1 user classes, the scenario 2"), "{e}");
        let e = refused(|s| {
            if let Some(share) = &mut s.share {
                share.users_per_class = vec![u64::MAX, 1];
            }
        });
        assert!(e.contains("more than the scenario's 8"), "{e}");
        let e = refused(|s| {
            if let Some(share) = &mut s.share {
                share.spawn_rate = f64::NAN;
            }
        });
        assert!(e.contains("spawn rate NaN"), "{e}");
    }

    #[test]
    fn a_start_with_clock_breaking_durations_is_refused() {
        let e = refused(|s| s.plan_offset_ms = u64::MAX);
        assert!(e.contains("plan_offset") && e.contains("30-day"), "{e}");
        let e = refused(|s| s.scenario_json = s.scenario_json.replace("\"5s\"", "\"1e19\""));
        assert!(e.contains("30-day limit"), "{e}");
        // Stages each within the cap whose sum is not.
        let e = refused(|s| {
            s.scenario_json = s.scenario_json.replace(
                r#"{"model":"closed","users":10,"spawn_rate":10.0,"duration":"5s"}"#,
                r#"{"model":"stages","stages":[{"duration":"30d","users":10},{"duration":"30d","users":0}]}"#,
            );
        });
        assert!(e.contains("stages") && e.contains("30-day limit"), "{e}");
        let e = refused(|s| {
            s.scenario_json = s
                .scenario_json
                .replace("\"users\":10", "\"users\":18446744073709551615")
        });
        assert!(e.contains("above the limit"), "{e}");
    }

    #[test]
    fn an_adjust_with_an_impossible_place_is_refused() {
        let adjust = |worker_index, worker_count, users_per_class| {
            decode(Kind::Adjust(pb::Adjust {
                run_id: "r1".into(),
                share: Some(pb::Share {
                    users_per_class,
                    spawn_rate: 1.0,
                }),
                worker_index,
                worker_count,
            }))
        };
        assert!(adjust(0, 1, vec![1]).is_ok());
        for (index, count, users) in [
            (1, 1, vec![1]),
            (0, 0, vec![1]),
            (0, MAX_WORKERS + 1, vec![1]),
            (0, 1, vec![u64::MAX, 1]),
        ] {
            let err = adjust(index, count, users).expect_err("refused");
            assert_eq!(err.run_id(), Some("r1"), "{err}");
            assert!(
                err.to_string().starts_with("refused Adjust for run `r1`"),
                "{err}"
            );
        }
    }
}
