//! Busy-polling a busy open-model engine thread's I/O instead of parking it, so that the target's responses find it awake and neither side pays a wake-up.
//!
//! An engine thread with nothing to run parks in `epoll_wait`. Every
//! response that arrives then has to wake it: the target's kernel, in the
//! target's own time slice, marks the thread runnable and interrupts its
//! core (an inter-processor interrupt, which on a virtual machine is a
//! hypervisor exit), and the thread starts late by however long that takes.
//! Measured on the 2-core benchmark machine (docs/benchmarks.md, "the target
//! pays for the generator's sleep"), demo target on CPU 0, one engine thread
//! on CPU 1, 58,000 arrivals/s for 8 s: the target's core sent 33,718-42,405
//! such interrupts and was 85-91 % busy serving Squall, against 780 and 75 %
//! serving oha at the same rate (whose runtime does not sleep while its rate
//! limiter is due). Spinning while busy: 38 interrupts, the target 76-83 %
//! busy, the engine thread's own work 53-63 % of its core against 69-73 %,
//! and a schedule-lag p99 of 2.2, 20 and 2.2 ms against 22, 102 and 55 ms
//! (3 rounds, alternating).
//!
//! A spinning thread holds its core, so it spins only while its own work
//! (its CPU time less its idle spinning) is at least half of its wall time,
//! where what is left of the core is short gaps between responses; it
//! parks again below a third. Each idle turn also yields the core to any
//! other thread the kernel has ready on it (`sched_yield`), so a target or
//! another engine thread sharing the core is not starved. It never spins
//! under `--realtime-priority` (SCHED_FIFO does not yield to ordinary
//! threads, and the kernel's real-time throttle would stop the thread for
//! 50 ms of every second) nor under a cgroup CPU limit (a container's quota
//! would be spent on spinning and the whole worker throttled). The idle
//! spinning is left out of the worker's reported CPU (`idle_spin`), so the
//! coordinator still sees how busy the generator really is.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The thread's work share from which it spins.
const SPIN_FROM: f64 = 0.5;
/// The work share under which a spinning thread parks again: between the
/// two it keeps what it was doing, so that a share near the threshold does
/// not switch every judgement.
const PARK_UNDER: f64 = 0.33;
/// How often the share is judged: long enough to hold a few hundred
/// requests at the rates where spinning matters, short enough that a rate
/// step is followed within a blink.
const JUDGE_EVERY: Duration = Duration::from_millis(10);
/// A spin turn that took less than this ran nothing but the poll and the
/// yield (two system calls): it counts as idle. A turn that ran a user
/// (a response read, the next request written: 10 µs and more on the
/// benchmark machine) counts as work.
const IDLE_TURN: Duration = Duration::from_micros(10);

/// Idle spinning of every engine thread of this process, in nanoseconds.
static IDLE_SPIN_NS: AtomicU64 = AtomicU64::new(0);

/// How long this process's engine threads have spun with nothing to do:
/// CPU time that was spent only to stay awake, which the worker's CPU meter
/// leaves out.
pub fn idle_spin() -> Duration {
    Duration::from_nanos(IDLE_SPIN_NS.load(Ordering::Relaxed))
}

/// One engine thread's choice between spinning and parking, and the task that spins.
pub(super) struct Spin {
    /// False under `--realtime-priority` or a CPU limit: never spins.
    allowed: bool,
    on: Cell<bool>,
    over: Cell<bool>,
    wake: Notify,
    /// Idle spinning not yet added to `IDLE_SPIN_NS`, and all of it since the last judgement.
    spun: Cell<Duration>,
    /// The last judgement: when, and the thread's CPU time then.
    judged: Cell<Option<(Instant, Duration)>>,
}

impl Spin {
    pub(super) fn new(allowed: bool) -> Spin {
        Spin {
            allowed,
            on: Cell::new(false),
            over: Cell::new(false),
            wake: Notify::new(),
            spun: Cell::new(Duration::ZERO),
            judged: Cell::new(None),
        }
    }

    /// Every `JUDGE_EVERY`, turns spinning on or off by the thread's work
    /// share since the previous judgement. Called at every wake-up of the
    /// schedule and every turn of the spinner: one monotonic clock read
    /// (vDSO) when it is not yet time.
    pub(super) fn judge(&self, now: Instant) {
        if !self.allowed {
            return;
        }
        // The thread's CPU clock is a system call (no vDSO): read it only
        // when a judgement is due, not at every turn.
        if let Some((then, _)) = self.judged.get()
            && now.saturating_duration_since(then) < JUDGE_EVERY
        {
            return;
        }
        if let Some(cpu) = thread_cpu_time() {
            self.judge_at(now, cpu);
        }
    }

    /// `judge` with the thread's CPU time `cpu` read at `now`.
    fn judge_at(&self, now: Instant, cpu: Duration) {
        let Some((then, cpu_then)) = self.judged.get() else {
            self.judged.set(Some((now, cpu)));
            return;
        };
        let wall = now.saturating_duration_since(then);
        if wall < JUDGE_EVERY {
            return;
        }
        let spun = self.flush_spun();
        let work = cpu.saturating_sub(cpu_then).saturating_sub(spun);
        let share = work.as_secs_f64() / wall.as_secs_f64();
        self.judged.set(Some((now, cpu)));
        let on = if self.on.get() {
            share >= PARK_UNDER
        } else {
            share >= SPIN_FROM
        };
        if on != self.on.get() {
            self.on.set(on);
            tracing::trace!(target: "squall::spin", share, on, "engine thread spin");
            if on {
                self.wake.notify_one();
            }
        }
    }

    /// The schedule is over: the spinner returns.
    pub(super) fn end(&self) {
        self.over.set(true);
        self.wake.notify_one();
    }

    /// The spinner: while on, it yields to the runtime (which then polls
    /// its I/O driver without blocking, since a task is ready) and to the
    /// kernel, turn after turn; while off it waits to be turned on.
    pub(super) async fn run(&self) {
        loop {
            if self.over.get() {
                break;
            }
            if !self.on.get() {
                self.wake.notified().await;
                continue;
            }
            let start = Instant::now();
            tokio::task::yield_now().await;
            // Another thread ready on this core (a target sharing it)
            // gets it; alone, this returns at once.
            let _ = nix::sched::sched_yield();
            let end = Instant::now();
            let took = end.saturating_duration_since(start);
            if took < IDLE_TURN {
                self.spun.set(self.spun.get() + took);
            }
            self.judge(end);
        }
        // Whatever was spun since the last judgement still counts.
        self.flush_spun();
    }

    /// Adds the idle spinning since the last call to the process's count
    /// (`idle_spin`) and returns it: one atomic add per judgement, not per turn.
    fn flush_spun(&self) -> Duration {
        let spun = self.spun.replace(Duration::ZERO);
        IDLE_SPIN_NS.fetch_add(
            u64::try_from(spun.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        spun
    }
}

/// Whether engine threads may spin at all: not under SCHED_FIFO, and not
/// under a cgroup CPU limit, whose quota spinning would spend.
pub(super) fn allowed(realtime: bool) -> bool {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    !realtime && !cpu_limited(&own, |path| std::fs::read_to_string(path).ok())
}

/// Whether this process's cgroup (from `/proc/self/cgroup`'s text `own`),
/// or the cgroup root a container sees as its own, has a CPU quota:
/// cgroup v2's `cpu.max` other than `max`, or v1's `cpu.cfs_quota_us`
/// above zero. `read` reads a file.
fn cpu_limited(own: &str, read: impl Fn(&str) -> Option<String>) -> bool {
    let v2_quota = |dir: &str| {
        read(&format!("{dir}/cpu.max"))
            .is_some_and(|s| s.split_whitespace().next().is_some_and(|q| q != "max"))
    };
    let v1_quota = |dir: &str| {
        read(&format!("{dir}/cpu.cfs_quota_us"))
            .is_some_and(|s| s.trim().parse::<i64>().is_ok_and(|q| q > 0))
    };
    let mut dirs = vec![
        "/sys/fs/cgroup".to_string(),
        "/sys/fs/cgroup/cpu".to_string(),
        "/sys/fs/cgroup/cpu,cpuacct".to_string(),
    ];
    // Lines are `hierarchy:controllers:path`; v2's is `0::path`.
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_end_matches('/');
        if path.is_empty() || path.contains("..") {
            continue;
        }
        if controllers.is_empty() {
            dirs.push(format!("/sys/fs/cgroup{path}"));
        } else if controllers.split(',').any(|c| c == "cpu") {
            dirs.push(format!("/sys/fs/cgroup/cpu{path}"));
            dirs.push(format!("/sys/fs/cgroup/cpu,cpuacct{path}"));
        }
    }
    dirs.iter().any(|d| v2_quota(d) || v1_quota(d))
}

/// This thread's CPU time (user and system).
fn thread_cpu_time() -> Option<Duration> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    Some(Duration::from(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A spin allowed, judged first at `t0` with no CPU time used.
    fn judged(t0: Instant) -> Spin {
        let spin = Spin::new(true);
        spin.judge_at(t0, Duration::ZERO);
        spin
    }

    #[test]
    fn a_thread_mostly_idle_does_not_spin() {
        let t0 = Instant::now();
        let spin = judged(t0);
        spin.judge_at(t0 + 10 * MS, 4 * MS);
        assert!(!spin.on.get());
    }

    #[test]
    fn a_busy_thread_spins_and_parks_again_when_idle() {
        let t0 = Instant::now();
        let spin = judged(t0);
        spin.judge_at(t0 + 10 * MS, 6 * MS);
        assert!(spin.on.get(), "60 % work spins");
        // Between the thresholds it keeps spinning.
        spin.judge_at(t0 + 20 * MS, 10 * MS);
        assert!(spin.on.get(), "40 % work keeps spinning");
        spin.judge_at(t0 + 30 * MS, 12 * MS);
        assert!(!spin.on.get(), "20 % work parks");
        spin.judge_at(t0 + 40 * MS, 16 * MS);
        assert!(!spin.on.get(), "40 % work does not start spinning again");
    }

    #[test]
    fn judged_only_once_a_period_has_passed() {
        let t0 = Instant::now();
        let spin = judged(t0);
        // All busy, but only 5 ms: not judged yet.
        spin.judge_at(t0 + 5 * MS, 5 * MS);
        assert!(!spin.on.get());
        spin.judge_at(t0 + 10 * MS, 10 * MS);
        assert!(spin.on.get());
    }

    #[test]
    fn idle_spinning_is_not_work() {
        let t0 = Instant::now();
        let spin = judged(t0);
        // The thread held its core for the whole period, 8 ms of it spinning idle.
        spin.spun.set(8 * MS);
        let before = idle_spin();
        spin.judge_at(t0 + 10 * MS, 10 * MS);
        assert!(!spin.on.get(), "2 ms of work in 10 ms does not spin");
        assert!(
            idle_spin() >= before + 8 * MS,
            "the idle spin is counted for the CPU meter"
        );
        assert_eq!(spin.spun.get(), Duration::ZERO);
    }

    #[test]
    fn a_thread_not_allowed_never_spins() {
        let t0 = Instant::now();
        let spin = Spin::new(false);
        spin.judge(t0);
        spin.judge(t0 + 10 * MS);
        assert!(!spin.on.get());
        assert!(spin.judged.get().is_none());
    }

    #[test]
    fn a_cgroup_cpu_quota_forbids_spinning() {
        let files = |found: &'static [(&'static str, &'static str)]| {
            move |path: &str| {
                found
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, v)| v.to_string())
            }
        };
        // No quota anywhere (v1 root says -1, v2 root has no cpu.max).
        let none = files(&[("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n")]);
        assert!(!cpu_limited("4:cpu,cpuacct:/\n0::/\n", none));
        // A container's own root (cgroup namespace), v2.
        let v2 = files(&[("/sys/fs/cgroup/cpu.max", "200000 100000\n")]);
        assert!(cpu_limited("0::/\n", v2));
        let v2_unlimited = files(&[("/sys/fs/cgroup/cpu.max", "max 100000\n")]);
        assert!(!cpu_limited("0::/\n", v2_unlimited));
        // The process's own v1 cgroup, seen from the host.
        let v1 = files(&[
            ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n"),
            ("/sys/fs/cgroup/cpu/bench/cpu.cfs_quota_us", "2000\n"),
        ]);
        assert!(cpu_limited("5:cpu,cpuacct:/bench\n", v1));
        // The same quota on a controller line without cpu is not ours.
        let v1_other = files(&[("/sys/fs/cgroup/cpu/bench/cpu.cfs_quota_us", "2000\n")]);
        assert!(!cpu_limited("5:memory:/bench\n", v1_other));
    }

    #[test]
    fn the_thread_clock_advances_with_work() {
        let Some(before) = thread_cpu_time() else {
            panic!("CLOCK_THREAD_CPUTIME_ID unreadable");
        };
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < 3 * MS {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = thread_cpu_time().unwrap_or(before);
        assert!(after > before);
    }
}
