//! The engine: `threads` event loops (mio, i.e. epoll, edge-triggered), each owning a fixed
//! share of the connections, so 10,000 connections cost 10,000 sockets and no threads more.
//!
//! - **Closed loop** (default): each connection sends a request, waits for the whole reply,
//!   and sends the next at once. Latency runs from the write (or the connect, when the request
//!   needs a new connection) to the reply's last byte.
//! - **Open loop** (`rate`): each connection owns an evenly spaced schedule of intended send
//!   times (`connections / rate` seconds apart). A request late because its connection was still
//!   busy goes out at once, and its latency still runs from the *intended* time: the wrk2
//!   correction for coordinated omission, so a stalled server shows as high latency instead of
//!   as fewer, faster samples.
//!
//! The non-blocking rules (mio `src/poll.rs`): drain until `WouldBlock`, retry `Interrupted`,
//! tolerate spurious wake-ups. A failed connection counts one error of its kind and is replaced;
//! a refused connect is retried after `retry_delay` so a dead server costs no spinning core.
//! Every request has a deadline, so nothing hangs: at most `duration` (or until `requests`
//! attempts have finished, each within `timeout`).
//!
//! With `tls` (an `https://` URL) a rustls `ClientConnection` sits between socket and exchange
//! on every connection: the request goes in as plaintext (held until the handshake is done),
//! records go out as the socket takes them, and what is read is handed to rustls a piece at a
//! time, its plaintext to the exchange as it comes. The handshake's time counts in the first
//! request's latency, as the connect's does.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::stats::Stats;
use super::Load;
use crate::error::{Error, Result};

mod worker;

use worker::WorkerSpec;

/// Bytes read from a socket per `read` call, into one buffer per thread (not per connection:
/// 10,000 connections do not each hold a read buffer).
pub const READ_CHUNK: usize = 64 * 1024;

/// The most bytes of one reply kept across reads while its end is sought (a response head, a
/// framed message). Past this the reply counts as a parse error.
pub const MAX_PENDING: usize = 4 * 1024 * 1024;

/// How to apply the load.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub connections: usize,
    pub threads: usize,
    /// Stop after this long (in-flight requests at that moment are not counted).
    pub duration: Option<Duration>,
    /// Stop after this many requests have been attempted and finished.
    pub requests: Option<u64>,
    /// Open loop: requests per second in total. `None` is closed loop.
    pub rate: Option<f64>,
    /// A request with no whole reply this long after it began counts as a timeout.
    pub timeout: Duration,
    /// A connect that has not completed in this long counts as a connect error.
    pub connect_timeout: Duration,
    /// Off: a new connection for every request.
    pub keepalive: bool,
    /// Keep the live [`Counts`] up to date, for a progress display.
    pub progress: bool,
    /// Set by whoever runs the load (`tincan bench` on SIGINT or SIGTERM) to end the run now,
    /// as if its duration were over: the figures so far are kept instead of lost.
    pub stop: Arc<AtomicBool>,
    /// Wait this long before reconnecting after a connect error.
    pub retry_delay: Duration,
    /// Load runs this long before counting starts (connections open, caches warm); the
    /// duration comes after it. In a closed loop the connections open over its first half,
    /// evenly spread.
    pub warmup: Duration,
    /// Also put the wait of every unanswered request (timed out, or still waiting at the end)
    /// into the latency histogram. Off, percentiles describe replies only, as wrk's do; on, a
    /// server that starves most connections (the iterative model) cannot hide it behind the
    /// few it serves quickly.
    pub count_unanswered: bool,
    /// Local addresses to connect from, in turn; empty: the kernel's choice. On loopback a
    /// client that closes first (an echo client, `Connection: close` read to the end) leaves
    /// each port in TIME_WAIT, and Linux gives `connect` only half the ephemeral range, so one
    /// address caps new connections at about 14,000 a second here; each address adds as many.
    pub sources: Vec<IpAddr>,
    /// More servers to spread the connections over (connection `k` goes to the `k`-th of
    /// the run's address and these, in turn): several instances serving one chat room.
    pub also: Vec<SocketAddr>,
    /// Speak TLS on every connection (`https://`).
    pub tls: Option<TlsTarget>,
}

/// TLS for every connection of a run: the client configuration (whose session cache lets a
/// new connection resume, as browsers and wrk's OpenSSL do) and the name to check.
#[derive(Clone, Debug)]
pub struct TlsTarget {
    pub config: Arc<rustls::ClientConfig>,
    pub name: rustls::pki_types::ServerName<'static>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            connections: 50,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            duration: Some(Duration::from_secs(10)),
            requests: None,
            rate: None,
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            keepalive: true,
            progress: false,
            stop: Arc::new(AtomicBool::new(false)),
            retry_delay: Duration::from_millis(20),
            warmup: Duration::ZERO,
            count_unanswered: false,
            sources: Vec::new(),
            also: Vec::new(),
            tls: None,
        }
    }
}

/// The result of a run: merged counts and how long the load ran.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub stats: Stats,
    pub elapsed: Duration,
    /// Threads actually used (never more than connections).
    pub threads: usize,
}

impl Outcome {
    pub fn replies_per_sec(&self) -> f64 {
        per_sec(self.stats.replies, self.elapsed)
    }

    pub fn read_bytes_per_sec(&self) -> f64 {
        per_sec(self.stats.bytes_read, self.elapsed)
    }
}

fn per_sec(n: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

/// Live totals every load thread adds to as it goes (with `opts.progress`), for a progress
/// display; the run's result does not depend on them.
#[derive(Default)]
pub struct Counts {
    replies: AtomicU64,
    errors: AtomicU64,
}

impl Counts {
    /// Replies and errors so far, warm-up included.
    pub fn get(&self) -> (u64, u64) {
        (
            self.replies.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }

    fn add(&self, replies: u64, errors: u64) {
        self.replies.fetch_add(replies, Ordering::Relaxed);
        self.errors.fetch_add(errors, Ordering::Relaxed);
    }
}

/// A run under way: its load threads, their live [`Counts`] and its clock.
pub struct Running {
    handles: Vec<std::thread::JoinHandle<Result<(Stats, Instant)>>>,
    counts: Arc<Counts>,
    /// When the threads were started.
    pub launched: Instant,
    /// When counting begins (after the warm-up).
    pub start: Instant,
    /// When the run ends by its duration, if it has one.
    pub deadline: Option<Instant>,
    threads: usize,
}

impl Running {
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Every load thread has ended.
    pub fn is_finished(&self) -> bool {
        self.handles.iter().all(|h| h.is_finished())
    }

    /// Wait for every thread and merge their counts.
    pub fn join(self) -> Result<Outcome> {
        let mut stats = Stats::new();
        let mut end = self.start;
        let mut failure = None;
        for h in self.handles {
            match h.join() {
                Ok(Ok((s, finished))) => {
                    stats.merge(&s);
                    end = end.max(finished);
                }
                Ok(Err(e)) => failure = Some(e),
                Err(_) => failure = Some(Error::Client("a load thread panicked".into())),
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(Outcome {
            stats,
            elapsed: end.saturating_duration_since(self.start),
            threads: self.threads,
        })
    }
}

/// Apply `load` to `addr` as `opts` says and return the merged counts.
pub fn run<L: Load>(addr: SocketAddr, load: Arc<L>, opts: &LoadOptions) -> Result<Outcome> {
    start(addr, load, opts)?.join()
}

/// Start applying `load` to `addr` as `opts` says; [`Running::join`] gives the result.
pub fn start<L: Load>(addr: SocketAddr, load: Arc<L>, opts: &LoadOptions) -> Result<Running> {
    if opts.connections == 0 {
        return Err(Error::Usage("--connections must be at least 1".into()));
    }
    if opts.duration.is_none() && opts.requests.is_none() {
        return Err(Error::Usage(
            "give --duration or --requests (or both) so the run ends".into(),
        ));
    }
    if let Some(r) = opts.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(Error::Usage("--rate must be a positive number".into()));
        }
    }
    if let Some(s) = opts.sources.iter().find(|s| s.is_ipv4() != addr.is_ipv4()) {
        return Err(Error::Usage(format!(
            "--source {s} cannot reach {addr}: give source addresses of the target's family"
        )));
    }
    let threads = opts.threads.clamp(1, opts.connections);
    let counts = Arc::new(Counts::default());
    let launched = Instant::now();
    // Counting starts after the warm-up; the duration runs from there.
    let start = launched + opts.warmup;
    let deadline = opts.duration.map(|d| start + d);

    let mut handles = Vec::with_capacity(threads);
    let mut first_conn = 0;
    for t in 0..threads {
        let conns = share(opts.connections as u64, threads, t) as usize;
        let quota = opts
            .requests
            .map(|n| share_by(n, opts.connections as u64, first_conn as u64, conns as u64));
        let worker = WorkerSpec {
            addr,
            first_conn,
            conns,
            quota,
            deadline,
            start,
            opts: opts.clone(),
        };
        first_conn += conns;
        let load = load.clone();
        let counts = counts.clone();
        let h = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || worker.run(&*load, &counts, launched))
            .map_err(|e| Error::io("cannot start a load thread", e))?;
        handles.push(h);
    }
    Ok(Running {
        handles,
        counts,
        launched,
        start,
        deadline,
        threads,
    })
}

/// Thread `t`'s share of `n` items spread over `parts` (the first ones get the remainder).
fn share(n: u64, parts: usize, t: usize) -> u64 {
    let parts = parts as u64;
    let t = t as u64;
    n / parts + u64::from(t < n % parts)
}

/// The part of `n` requests owed to connections `first..first+count` of `total`, spread evenly.
fn share_by(n: u64, total: u64, first: u64, count: u64) -> u64 {
    let upto = |k: u64| (n as u128 * k as u128 / total as u128) as u64;
    upto(first + count) - upto(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_whole() {
        for (n, parts) in [(10u64, 3usize), (0, 2), (7, 7), (5, 9)] {
            let sum: u64 = (0..parts).map(|t| share(n, parts, t)).sum();
            assert_eq!(sum, n);
        }
        let conns = [3u64, 3, 2];
        let mut first = 0;
        let mut total = 0;
        for c in conns {
            total += share_by(1000, 8, first, c);
            first += c;
        }
        assert_eq!(total, 1000);
    }
}
