//! A wake-up at an exact instant for the open-model schedule, finer than tokio's millisecond timer.
//!
//! Tokio's timer rounds every deadline up to the next millisecond, and its
//! park rounds the wait up to a whole millisecond again, so an arrival woken
//! by `sleep_until` starts 0 to 2 ms after it was due even on an idle thread.
//! On Linux a timerfd, registered with the thread's own I/O driver, wakes the
//! schedule within tens of microseconds of the instant instead; elsewhere (or
//! when no timerfd can be made) the schedule falls back to tokio's timer.

use tokio::time::Instant;

/// One engine thread's schedule alarm: armed for one instant at a time.
pub(super) struct Alarm {
    #[cfg(target_os = "linux")]
    timer: Option<tokio::io::unix::AsyncFd<linux::Timer>>,
}

impl Alarm {
    /// Makes the alarm; must run inside the engine thread's runtime (it
    /// registers with that runtime's I/O driver).
    pub(super) fn new() -> Alarm {
        Alarm {
            // `with_interest` is deprecated for an `AsRawFd` whose fd could
            // change or close under it; the safe replacement is `unsafe`,
            // which the workspace forbids. `Timer` owns its fd (an
            // `OwnedFd` inside `TimerFd`) and never replaces it, so the fd
            // stays the same and open for as long as the `AsyncFd` lives.
            #[cfg(target_os = "linux")]
            #[allow(deprecated)]
            timer: linux::Timer::new()
                .and_then(|t| {
                    tokio::io::unix::AsyncFd::with_interest(t, tokio::io::Interest::READABLE)
                })
                .map_err(|e| tracing::debug!("no timerfd ({e}): the schedule uses tokio's timer"))
                .ok(),
        }
    }

    /// Waits until `at` (returns at once when it has passed).
    pub(super) async fn until(&mut self, at: Instant) {
        let now = Instant::now();
        if at <= now {
            return;
        }
        #[cfg(target_os = "linux")]
        if let Some(timer) = &self.timer
            && timer.get_ref().arm(at - now)
        {
            loop {
                let Ok(mut ready) = timer.readable().await else {
                    break;
                };
                if ready.get_inner().fired() {
                    return;
                }
                // Readiness left over from an alarm that was re-armed before
                // it was read: wait for the current one.
                ready.clear_ready();
            }
        }
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::os::fd::{AsFd, AsRawFd, RawFd};
    use std::time::Duration;

    use nix::sys::time::TimeSpec;
    use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

    /// A non-blocking one-shot timerfd on the monotonic clock (`Instant`'s clock).
    pub(super) struct Timer(TimerFd);

    impl Timer {
        pub(super) fn new() -> std::io::Result<Timer> {
            TimerFd::new(
                ClockId::CLOCK_MONOTONIC,
                TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
            )
            .map(Timer)
            .map_err(std::io::Error::from)
        }

        /// Arms the timer `after` from now (replacing any earlier alarm and
        /// resetting its expiry count); false if the kernel refused.
        pub(super) fn arm(&self, after: Duration) -> bool {
            // A zero `TimeSpec` would disarm the timer instead.
            let after = after.max(Duration::from_nanos(1));
            self.0
                .set(
                    Expiration::OneShot(TimeSpec::from_duration(after)),
                    TimerSetTimeFlags::empty(),
                )
                .is_ok()
        }

        /// Whether the alarm went off (reads its expiry count; `EAGAIN` means not yet).
        pub(super) fn fired(&self) -> bool {
            self.0.wait().is_ok()
        }
    }

    impl AsRawFd for Timer {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_fd().as_raw_fd()
        }
    }
}
