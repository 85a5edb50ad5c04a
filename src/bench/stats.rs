//! What one load-generator thread counts: a latency histogram (HDR, so percentiles are exact to
//! three significant digits at any scale), completed replies, bytes each way and errors by kind.
//! Threads count alone, without sharing, and their [`Stats`] are merged at the end.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

/// The longest latency the histogram tells apart from "longer": one minute, in nanoseconds.
/// Anything slower is recorded as this value (saturating), never dropped.
pub const MAX_TRACKED_LATENCY_NS: u64 = 60_000_000_000;

/// Significant decimal digits kept for every recorded latency (HdrHistogram's precision knob):
/// three means a value is off by at most 0.1%.
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// Why a request did not get a good reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The connection could not be opened (refused, unreachable, connect timeout).
    Connect,
    /// Reading failed, or the peer closed before the whole reply arrived.
    Read,
    /// Writing the request failed (reset, broken pipe).
    Write,
    /// No whole reply within `--timeout`.
    Timeout,
    /// A whole HTTP reply arrived, but its status was not 2xx or 3xx.
    Status,
    /// The reply could not be parsed (malformed head, bad chunk, unexpected bytes).
    Parse,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Connect,
        ErrorKind::Read,
        ErrorKind::Write,
        ErrorKind::Timeout,
        ErrorKind::Status,
        ErrorKind::Parse,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Read => "read",
            ErrorKind::Write => "write",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Status => "status",
            ErrorKind::Parse => "parse",
        }
    }

    /// What the kind means, in a few words, for a one-line summary.
    pub fn meaning(self) -> &'static str {
        match self {
            ErrorKind::Connect => "the connection could not be opened",
            ErrorKind::Read => "the connection failed or closed before a whole reply",
            ErrorKind::Write => "the request could not be written",
            ErrorKind::Timeout => "no whole reply within --timeout",
            ErrorKind::Status => "a reply whose status was not 2xx or 3xx",
            ErrorKind::Parse => "a reply that could not be parsed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors counted by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorCounts([u64; 6]);

impl ErrorCounts {
    pub fn add(&mut self, kind: ErrorKind) {
        self.0[kind.index()] += 1;
    }

    pub fn get(&self, kind: ErrorKind) -> u64 {
        self.0[kind.index()]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn merge(&mut self, other: &ErrorCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }
}

/// One thread's (or, merged, the whole run's) counts.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Latency of every whole reply (good or bad status), in nanoseconds.
    pub latency: Histogram<u64>,
    /// Whole replies received, whatever their status.
    pub replies: u64,
    pub bytes_read: u64,
    /// Of `bytes_read`, the body bytes dropped in the kernel unread (`MSG_TRUNC`): counted,
    /// never copied into this process.
    pub bytes_dropped: u64,
    pub bytes_written: u64,
    pub errors: ErrorCounts,
    /// Connections opened (one per request without keep-alive).
    pub connects: u64,
    /// Requests still waiting for their reply when the run ended (not errors, not replies).
    pub unfinished: u64,
    /// Connections that got no reply at all while counting (a duration-bounded run): the
    /// ones a server starved, e.g. all but one under the iterative model with echo.
    pub starved: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            latency: Histogram::new_with_bounds(
                1,
                MAX_TRACKED_LATENCY_NS,
                LATENCY_SIGNIFICANT_DIGITS,
            )
            .expect("the histogram bounds are constants that hdrhistogram accepts"),
            replies: 0,
            bytes_read: 0,
            bytes_dropped: 0,
            bytes_written: 0,
            errors: ErrorCounts::default(),
            connects: 0,
            unfinished: 0,
            starved: 0,
        }
    }

    /// Was any latency recorded (a reply, or with `--count-unanswered` a wait)?
    pub fn has_samples(&self) -> bool {
        !self.latency.is_empty()
    }

    /// Record one whole reply that took `latency`.
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.latency.saturating_record(ns);
        self.replies += 1;
    }

    /// Record how long an unanswered request waited (see `LoadOptions::count_unanswered`): it
    /// goes into the latency histogram but is not a reply.
    pub fn record_wait(&mut self, waited: Duration) {
        let ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.latency.saturating_record(ns);
    }

    /// Add another thread's counts to these.
    pub fn merge(&mut self, other: &Stats) {
        // Both histograms share the same bounds, so adding cannot fail; saturate if it did.
        if self.latency.add(&other.latency).is_err() {
            for v in other.latency.iter_recorded() {
                self.latency
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        self.replies += other.replies;
        self.bytes_read += other.bytes_read;
        self.bytes_dropped += other.bytes_dropped;
        self.bytes_written += other.bytes_written;
        self.errors.merge(&other.errors);
        self.connects += other.connects;
        self.unfinished += other.unfinished;
        self.starved += other.starved;
    }

    /// The latency at percentile `p` (0..=100); zero when nothing was recorded.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latency.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.latency.value_at_percentile(p))
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.latency.max())
    }

    pub fn mean(&self) -> Duration {
        Duration::from_nanos(self.latency.mean() as u64)
    }
}
