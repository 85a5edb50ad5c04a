//! Diagnostics on stderr via `tracing`; `TINCAN_LOG` (e.g. `debug`, `tincan=trace`) sets the level.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Install the stderr subscriber once; later calls do nothing.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TINCAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only where a person reads them, never into a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// A warning that any peer can cause at will (a datagram too long, a message breaking the
/// framing) is written at most once a second from each place that keeps one of these; the
/// ones left out are counted in the next. Without it, a flood of bad datagrams wrote a log
/// line each: about 7 MB of stderr a second.
pub struct Throttle {
    /// Milliseconds since `EPOCH` at which the last line was let through, plus one (0: none).
    last: AtomicU64,
    skipped: AtomicU64,
    /// The shortest time between two lines, in milliseconds.
    every_ms: u64,
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

impl Throttle {
    /// The shortest time between two lines.
    pub const EVERY: Duration = Duration::from_secs(1);

    pub const fn new() -> Throttle {
        Throttle::every(Self::EVERY)
    }

    /// At most one line each `every`: for a state that lasts (a full backlog), not a flood.
    pub const fn every(every: Duration) -> Throttle {
        Throttle {
            last: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            every_ms: every.as_millis() as u64,
        }
    }

    /// `Some(n)`: log this one, saying that `n` were left out since the last; `None`: skip it.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let epoch = *EPOCH.get_or_init(|| now);
        let ms = u64::try_from(now.saturating_duration_since(epoch).as_millis())
            .unwrap_or(u64::MAX - 1)
            + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || ms.saturating_sub(last) >= self.every_ms;
        if due
            && self
                .last
                .compare_exchange(last, ms, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.skipped.swap(0, Ordering::AcqRel));
        }
        self.skipped.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle::new()
    }
}

/// " (N more like it since the last such line)", or nothing when none were left out.
pub fn more_like_it(skipped: u64) -> String {
    if skipped == 0 {
        String::new()
    } else {
        format!(" ({skipped} more like it since the last such line)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_lets_one_line_a_second_through_and_counts_the_rest() {
        let t = Throttle::new();
        let t0 = Instant::now();
        assert_eq!(t.admit_at(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(t.admit_at(t0 + Duration::from_millis(100 * i)), None);
        }
        assert_eq!(t.admit_at(t0 + Duration::from_millis(1000)), Some(5));
        assert_eq!(t.admit_at(t0 + Duration::from_millis(1500)), None);
        assert_eq!(t.admit_at(t0 + Duration::from_millis(2100)), Some(1));
        assert_eq!(more_like_it(0), "");
        assert!(more_like_it(3).contains("3 more"));
    }
}
