//! Polling briefly before sleeping, when it pays (`--busy-poll`).
//!
//! A worker that sleeps in the poller is woken by whoever makes a socket ready. On loopback
//! that is the client's own system call, and waking a sleeping thread on another CPU costs the
//! waker an interprocessor interrupt (on a virtual machine, an exit to the hypervisor). When
//! readiness comes every few microseconds, a worker that keeps polling for a moment before it
//! sleeps is found awake and nobody pays. When it comes rarely, polling only burns CPU.
//!
//! So the window adapts, the way KVM's halt polling does: a sleep that ended within the
//! longest window means a poll would have caught the event, and the window doubles (from
//! [`START`] up to the maximum); a longer sleep, or a wake with nothing to do, closes it. A
//! worker serving requests milliseconds apart never polls; one under load polls for at most
//! the maximum after each burst.
//!
//! It is off by default: it buys one busy connection's latency with CPU time and system calls
//! (the polls that find nothing), and buys nothing for many connections (bench/README.md,
//! "Busy-poll").

use std::time::Duration;

/// The first window after it was closed.
const START: Duration = Duration::from_micros(10);

/// The polling window of one worker.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spin {
    max: Duration,
    window: Duration,
}

impl Spin {
    /// A window of at most `max` (zero: never poll). It starts closed.
    pub fn new(max: Duration) -> Spin {
        Spin {
            max,
            window: Duration::ZERO,
        }
    }

    /// Polling is on (`--busy-poll` above zero).
    pub fn enabled(&self) -> bool {
        !self.max.is_zero()
    }

    /// How long to poll before sleeping.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The worker slept for `slept` and then found work (`work`), or woke for a timer only.
    pub fn slept(&mut self, slept: Duration, work: bool) {
        self.window = if work && slept <= self.max && !self.max.is_zero() {
            (self.window * 2).clamp(START.min(self.max), self.max)
        } else {
            Duration::ZERO
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn short_sleeps_open_the_window_up_to_the_maximum() {
        let mut s = Spin::new(50 * US);
        assert_eq!(s.window(), Duration::ZERO, "closed at first");
        let mut seen = Vec::new();
        for _ in 0..5 {
            s.slept(3 * US, true);
            seen.push(s.window().as_micros());
        }
        assert_eq!(seen, [10, 20, 40, 50, 50]);
        // A sleep as long as the maximum is still one a poll would have caught.
        s.slept(50 * US, true);
        assert_eq!(s.window(), 50 * US);
    }

    #[test]
    fn a_long_sleep_or_a_wake_without_work_closes_it() {
        let mut s = Spin::new(50 * US);
        s.slept(US, true);
        s.slept(US, true);
        s.slept(51 * US, true);
        assert_eq!(s.window(), Duration::ZERO, "a long sleep");
        s.slept(US, true);
        s.slept(US, false);
        assert_eq!(s.window(), Duration::ZERO, "a timer's wake");
    }

    #[test]
    fn a_zero_or_small_maximum_is_honoured() {
        let mut off = Spin::new(Duration::ZERO);
        off.slept(Duration::ZERO, true);
        assert_eq!(off.window(), Duration::ZERO);
        let mut small = Spin::new(4 * US);
        small.slept(US, true);
        small.slept(US, true);
        assert_eq!(small.window(), 4 * US);
    }
}
