//! The worker's own CPU use, sampled once per heartbeat as a percentage of its whole machine, so the coordinator can tell when a generator was the bottleneck.
//!
//! The process's CPU time (user + system, every thread, less the engine
//! threads' idle busy-polling) comes from `/proc/self/stat`; the machine is
//! the cores this process may run on
//! (`available_parallelism`, which follows CPU affinity and cgroup quotas, so
//! a container limited to 2 CPUs counts 2). 100 % means every one of them was
//! busy with this process for the whole interval. Where `/proc` is missing
//! (not Linux) the meter reads 0.

use std::time::{Duration, Instant};

/// Clock ticks per second in `/proc/*/stat` (`USER_HZ`): 100 on every Linux architecture.
const USER_HZ: u64 = 100;

/// CPU used between two heartbeats, as a share of every core the worker may use.
#[derive(Debug)]
pub(super) struct CpuMeter {
    cores: usize,
    /// The previous reading: when, and the process's CPU time then.
    last: Option<(Instant, Duration)>,
}

/// The cores this process may run on: what its CPU percentages are out of,
/// and what `Hello.cores` tells the coordinator.
pub(super) fn machine_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl CpuMeter {
    pub(super) fn new() -> Self {
        let mut meter = CpuMeter {
            cores: machine_cores(),
            last: None,
        };
        meter.sample();
        meter
    }

    /// The process's CPU use since the previous sample, in percent of the machine (0 to 100).
    pub(super) fn sample(&mut self) -> f32 {
        let now = Instant::now();
        let Some(cpu) = process_cpu_time() else {
            return 0.0;
        };
        let pct = match self.last {
            Some((then, before)) => percent(
                cpu.saturating_sub(before),
                now.saturating_duration_since(then),
                self.cores,
            ),
            None => 0.0,
        };
        self.last = Some((now, cpu));
        pct
    }
}

/// `cpu` spent over `wall` on a machine of `cores`, in percent of all of them,
/// within 0..=100 (tick rounding can push a busy interval a little over).
pub(super) fn percent(cpu: Duration, wall: Duration, cores: usize) -> f32 {
    let capacity = wall.as_secs_f64() * cores.max(1) as f64;
    if capacity <= 0.0 {
        return 0.0;
    }
    (cpu.as_secs_f64() / capacity * 100.0).clamp(0.0, 100.0) as f32
}

/// The process's user + system CPU time so far, less the engine threads'
/// idle busy-polling (`engine::idle_spin`): time a busy thread spent only to
/// stay awake is not load the generator carried.
fn process_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    Some(cpu_time_in_stat(&text)?.saturating_sub(crate::engine::idle_spin()))
}

/// utime + stime of a `/proc/PID/stat` line. The command name in parentheses
/// may hold spaces and parentheses, so fields are counted after its last `)`:
/// utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
fn cpu_time_in_stat(stat: &str) -> Option<Duration> {
    let (_, after) = stat.rsplit_once(')')?;
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime.saturating_add(stime);
    Some(Duration::from_millis(ticks.saturating_mul(1000 / USER_HZ)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_is_of_every_core() {
        let s = Duration::from_secs;
        // One core busy for a second on a 4-core machine: a quarter of it.
        assert_eq!(percent(s(1), s(1), 4), 25.0);
        // Every core busy.
        assert_eq!(percent(s(8), s(2), 4), 100.0);
        // Half a core over two seconds on one core.
        assert_eq!(percent(Duration::from_millis(1000), s(2), 1), 50.0);
        // Tick rounding past the machine is capped; no time passed means nothing measured.
        assert_eq!(percent(Duration::from_millis(1010), s(1), 1), 100.0);
        assert_eq!(percent(s(1), Duration::ZERO, 4), 0.0);
        // Zero cores cannot happen, but must not divide by zero.
        assert_eq!(percent(s(1), s(2), 0), 50.0);
    }

    #[test]
    fn reads_utime_and_stime_after_the_name() {
        let line = "4242 (squall (w) 1) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 130 0 0 20 0 9 0 100 0 0";
        assert_eq!(cpu_time_in_stat(line), Some(Duration::from_millis(3800)));
        assert_eq!(cpu_time_in_stat("4242 (w) S 1 2"), None);
        assert_eq!(cpu_time_in_stat("garbage"), None);
    }

    #[test]
    fn a_busy_thread_shows() {
        let Some(before) = process_cpu_time() else {
            return; // no /proc here: the meter reads 0
        };
        let mut meter = CpuMeter::new();
        // Spin until the process has used 200 ms of CPU (bounded: the machine may be busy).
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut x = 0u64;
        while process_cpu_time().is_some_and(|t| t < before + Duration::from_millis(200))
            && Instant::now() < deadline
        {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        let pct = meter.sample();
        assert!(pct > 0.0 && pct <= 100.0, "{pct}% on {} cores", meter.cores);
    }
}
