//! Real-time scheduling for the engine threads (`--realtime-priority`): SCHED_FIFO, so that other work on their cores cannot delay the open model's arrivals.
//!
//! On a shared machine the engine thread is the one that starts arrivals on
//! time, and whatever else the kernel runs on its core (kernel workers,
//! other daemons, a noisy neighbour) delays it by whole milliseconds at a
//! time. At half the closed model's maximum on one core of the 2-core
//! benchmark machine, an ordinary engine thread's schedule woke more than
//! 0.5 ms late 36-93 times in 10 s (64-187 ms in all) and the schedule-lag
//! p99 was under 1 ms in 1 run of 9; under SCHED_FIFO 10-31 times (13-46
//! ms) and in 6 runs of 8 (docs/benchmarks.md, "real-time engine threads").

use thread_priority::{
    RealtimeThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
};

use crate::error::WorkerError;

/// Where Linux says how much of each second real-time threads may take.
const RT_RUNTIME: &str = "/proc/sys/kernel/sched_rt_runtime_us";

/// A SCHED_FIFO priority for the engine threads, 1 to 99 (higher runs first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Realtime(u8);

impl Realtime {
    /// Checks the priority's range and that this process may use it, by
    /// trying it on a thread of its own: a worker that cannot get it fails at
    /// its start (exit 2), before any run, instead of running slower than
    /// asked for.
    pub fn new(priority: u8) -> Result<Realtime, WorkerError> {
        if !(1..=99).contains(&priority) {
            return Err(WorkerError::Usage(format!(
                "--realtime-priority {priority}: expected 1 to 99"
            )));
        }
        // Without the kernel's throttle (-1) a real-time thread at full load
        // holds its core for good: nothing else (the worker's own link to the
        // coordinator, a shell to stop it) runs there again.
        if std::fs::read_to_string(RT_RUNTIME).is_ok_and(|v| v.trim() == "-1") {
            return Err(WorkerError::Usage(format!(
                "--realtime-priority: {RT_RUNTIME} is -1 (real-time threads unthrottled), so an engine thread \
                 at full load would lock its core; set it to 950000 (the default) first"
            )));
        }
        let rt = Realtime(priority);
        std::thread::spawn(move || rt.apply())
            .join()
            .map_err(|_| WorkerError::Usage("--realtime-priority: the check panicked".into()))?
            .map_err(|reason| {
                WorkerError::Usage(format!("--realtime-priority {priority}: {reason}"))
            })?;
        Ok(rt)
    }

    /// Puts the calling thread under SCHED_FIFO at this priority.
    pub(crate) fn apply(self) -> Result<(), String> {
        let value = ThreadPriorityValue::try_from(self.0).map_err(|e| e.to_string())?;
        thread_priority::set_thread_priority_and_policy(
            thread_priority::thread_native_id(),
            ThreadPriority::Crossplatform(value),
            ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
        )
        .map_err(|e| match e {
            // EPERM
            thread_priority::Error::OS(1) => format!(
                "not permitted: SCHED_FIFO needs root or CAP_SYS_NICE (docker: --cap-add SYS_NICE; \
                 Kubernetes: securityContext.capabilities.add [SYS_NICE]) or an RLIMIT_RTPRIO of at least {} \
                 (ulimit -r)",
                self.0
            ),
            e => e.to_string(),
        })
    }

    pub fn priority(self) -> u8 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_outside_1_to_99_are_refused_before_any_system_call() {
        for p in [0, 100, 255] {
            let e = Realtime::new(p).expect_err("out of range").to_string();
            assert!(e.contains("expected 1 to 99"), "{e}");
        }
    }
}
