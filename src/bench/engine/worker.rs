//! One load thread: its share of the connections on its own epoll (mio, edge-triggered), each
//! connection's request cycle, the open loop's schedule and the deadlines.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::{Counts, LoadOptions, MAX_PENDING, READ_CHUNK};
use crate::bench::stats::{ErrorKind, Stats};
use crate::bench::{Exchange, Load, Reply};
use crate::error::{Error, Result};

/// What a read that starts a reply asks for (the read buffer is [`READ_CHUNK`]): enough for any
/// response head plus a small body in one call, and no more of a large body than that is
/// copied only to be counted (the rest is dropped unread, see [`SKIP_MIN`]); bench/README has
/// the measurement.
const FRESH_READ: usize = 16 * 1024;

/// Body bytes still to come from which the engine drops them unread (`MSG_TRUNC`) instead of
/// copying them: below this, the copy is cheaper than the extra system call.
const SKIP_MIN: u64 = 16 * 1024;

/// The most bytes dropped per call.
const SKIP_MAX: usize = 4 << 20;

/// How often in-flight requests are checked against their deadlines.
const SWEEP_EVERY: Duration = Duration::from_millis(20);

pub(super) struct WorkerSpec {
    pub(super) addr: SocketAddr,
    pub(super) first_conn: usize,
    pub(super) conns: usize,
    pub(super) quota: Option<u64>,
    pub(super) deadline: Option<Instant>,
    pub(super) start: Instant,
    pub(super) opts: LoadOptions,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No socket; no request.
    Closed,
    /// Connected, no request outstanding.
    Idle,
    /// A request began and its connection is being opened.
    Connecting,
    /// Connected; the request is partly written.
    Writing,
    /// The request is written; the reply is awaited.
    Awaiting,
}

impl State {
    fn in_flight(self) -> bool {
        matches!(self, State::Connecting | State::Writing | State::Awaiting)
    }
}

struct Conn<E> {
    stream: Option<TcpStream>,
    /// The connection's TLS state, with `opts.tls`; set up once the TCP connect completes.
    tls: Option<Box<rustls::ClientConnection>>,
    state: State,
    ex: E,
    /// Bytes of the current request already written.
    written: usize,
    /// Bytes of a reply whose end has not arrived yet (usually empty: no allocation).
    pending: Vec<u8>,
    /// When the current request began (its intended time, in the open loop).
    started: Instant,
    /// When the current request (or connect) times out.
    deadline: Instant,
    /// Open loop: the intended time of this connection's next request.
    next_send: Instant,
    /// Set while a timer entry for this connection is in the heap.
    scheduled: bool,
    /// Replies this connection got since counting started.
    replies: u64,
    /// Requests due on it since counting started (counting one in flight then): only a
    /// connection asked something can be starved. In a slow open loop some are never asked.
    asked: u32,
}

struct Worker<E> {
    conns: Vec<Conn<E>>,
    poll: Poll,
    addr: SocketAddr,
    opts: LoadOptions,
    stats: Stats,
    /// Requests this thread may still begin (`u64::MAX`: unbounded).
    quota: u64,
    in_flight: usize,
    /// Pending starts: (when, connection index).
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Open loop: time between two requests on one connection.
    interval: Option<Duration>,
    /// Open loop: wakes the poll at the next intended send.
    alarm: Option<Alarm>,
    /// The next of `opts.sources` to connect from.
    next_source: usize,
    /// The run-wide number of this thread's first connection (which server each goes to).
    first_conn: usize,
    /// Plaintext out of TLS, one buffer per thread (as the read buffer is).
    plain: Vec<u8>,
}

impl WorkerSpec {
    pub(super) fn run<L: Load>(
        self,
        load: &L,
        counts: &Counts,
        launched: Instant,
    ) -> Result<(Stats, Instant)> {
        let poll = Poll::new().map_err(|e| Error::io("cannot create an epoll instance", e))?;
        let now = Instant::now();
        let interval = self
            .opts
            .rate
            .map(|r| Duration::from_secs_f64(self.opts.connections as f64 / r));
        let conns = (0..self.conns)
            .map(|i| {
                let global = self.first_conn + i;
                // Spread each connection's first intended send evenly over one interval, so the
                // open loop starts at the set rate instead of with a burst.
                let offset = interval.map_or(Duration::ZERO, |iv| {
                    iv.mul_f64(global as f64 / self.opts.connections as f64)
                });
                Conn {
                    stream: None,
                    tls: None,
                    state: State::Closed,
                    ex: load.exchange(global),
                    written: 0,
                    pending: Vec::new(),
                    started: now,
                    deadline: now,
                    next_send: launched + offset,
                    scheduled: false,
                    replies: 0,
                    asked: 0,
                }
            })
            .collect();
        // The open loop's schedule needs a finer clock than epoll's timeout.
        let alarm = match interval {
            Some(_) => Some(Alarm::new(&poll)?),
            None => None,
        };
        let mut w = Worker {
            conns,
            poll,
            addr: self.addr,
            opts: self.opts,
            stats: Stats::new(),
            quota: self.quota.unwrap_or(u64::MAX),
            in_flight: 0,
            timers: BinaryHeap::new(),
            interval,
            alarm,
            next_source: 0,
            first_conn: self.first_conn,
            plain: Vec::new(),
        };
        let finished = w.drive(self.deadline, self.start, counts)?;
        Ok((w.stats, finished))
    }
}

/// The open loop's clock: epoll's timeout is whole milliseconds, rounded up, and every
/// latency is timed from the intended send, so a late wake-up would show as server latency. A
/// timerfd watched by the same poll wakes it on time (no timer slack); the poll's own timeout
/// stays as the backstop.
struct Alarm {
    fd: crate::sys::TimerFd,
    /// When it is set to ring, if it is set.
    set: Option<Instant>,
}

/// The alarm's token: past any connection's index, so the event loop skips it.
const ALARM: Token = Token(usize::MAX);

impl Alarm {
    fn new(poll: &Poll) -> Result<Alarm> {
        let fd = crate::sys::TimerFd::new()
            .map_err(|e| Error::io("cannot create a timer for the open loop", e))?;
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        poll.registry()
            .register(&mut mio::unix::SourceFd(&raw), ALARM, Interest::READABLE)
            .map_err(|e| Error::io("cannot watch the open loop's timer", e))?;
        Ok(Alarm { fd, set: None })
    }

    /// Make sure the poll wakes by `wake`. An alarm already set for earlier (and still to
    /// come) is kept: it wakes the loop early, which then sets it again.
    fn ring_at(&mut self, wake: Instant, now: Instant) {
        if wake <= now || self.set.is_some_and(|s| s > now && s <= wake) {
            return;
        }
        // A timer that cannot be set leaves the poll's own (coarser) timeout in charge.
        if self.fd.arm(wake - now).is_ok() {
            self.set = Some(wake);
        }
    }
}

impl<E: Exchange> Worker<E> {
    fn drive(
        &mut self,
        deadline: Option<Instant>,
        count_from: Instant,
        counts: &Counts,
    ) -> Result<Instant> {
        let mut events = Events::with_capacity(1024);
        let mut scratch = vec![0u8; READ_CHUNK];
        let now = Instant::now();
        // With a warm-up (closed loop), the connections open over its first half, evenly spread,
        // not in one burst: 10,000 SYNs at once overflow a listen backlog of 4096, and the
        // dropped ones come back a second later or as connect timeouts, which measures the
        // backlog rather than the server. Without a warm-up all start at once, as wrk's do.
        let spread = match self.interval {
            None => count_from.saturating_duration_since(now) / 2,
            Some(_) => Duration::ZERO,
        };
        let n = self.conns.len();
        for i in 0..n {
            let at = now + spread.mul_f64(i as f64 / n as f64);
            if at <= now {
                self.next_request(i, now);
            } else {
                self.conns[i].scheduled = true;
                self.timers.push(Reverse((at, i)));
            }
        }
        let mut next_sweep = now + SWEEP_EVERY;
        let (mut told_replies, mut told_errors) = (0, 0);
        let mut warming = count_from > now;
        loop {
            let now = Instant::now();
            if warming && now >= count_from {
                // Forget the warm-up; requests in flight now are counted when they finish.
                warming = false;
                self.stats = Stats::new();
                for c in &mut self.conns {
                    c.replies = 0;
                    c.asked = u32::from(c.state.in_flight());
                }
                (told_replies, told_errors) = (0, 0);
            }
            if deadline.is_some_and(|d| now >= d) || self.opts.stop.load(Ordering::Relaxed) {
                let end = deadline.map_or(now, |d| d.min(now));
                self.count_unfinished(end);
                return Ok(end);
            }
            if self.quota == 0 && self.in_flight == 0 && self.timers.is_empty() {
                return Ok(now);
            }
            let mut wake = next_sweep;
            if warming {
                wake = wake.min(count_from);
            }
            if let Some(Reverse((t, _))) = self.timers.peek() {
                wake = wake.min(*t);
            }
            if let Some(d) = deadline {
                wake = wake.min(d);
            }
            if let Some(alarm) = self.alarm.as_mut() {
                alarm.ring_at(wake, now);
            }
            let timeout = wake.saturating_duration_since(now);
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("epoll_wait failed", e)),
            }
            for ev in events.iter() {
                let i = ev.token().0;
                if i >= self.conns.len() {
                    continue;
                }
                self.on_event(i, ev, &mut scratch);
            }
            let now = Instant::now();
            while let Some(&Reverse((t, i))) = self.timers.peek() {
                if t > now {
                    break;
                }
                self.timers.pop();
                self.conns[i].scheduled = false;
                if !self.conns[i].state.in_flight() {
                    let intended = if self.interval.is_some() { t } else { now };
                    self.begin(i, now, intended);
                }
            }
            if now >= next_sweep {
                next_sweep = now + SWEEP_EVERY;
                self.sweep(now);
            }
            if self.opts.progress {
                let (r, e) = (self.stats.replies, self.stats.errors.total());
                counts.add(r - told_replies, e - told_errors);
                (told_replies, told_errors) = (r, e);
            }
        }
    }

    /// The run ended: count the requests still waiting (and, if asked, their wait so far).
    fn count_unfinished(&mut self, end: Instant) {
        // Starved: asked, and never answered, though it had the time (a connection whose only
        // request was sent in the run's last --timeout and is still in flight is only late).
        let timeout = self.opts.timeout;
        let only_late = |c: &Conn<E>| {
            c.asked == 1
                && c.state.in_flight()
                && end.saturating_duration_since(c.started) < timeout
        };
        self.stats.starved = self
            .conns
            .iter()
            .filter(|c| c.asked > 0 && c.replies == 0 && !only_late(c))
            .count() as u64;
        for c in &self.conns {
            if c.state.in_flight() {
                self.stats.unfinished += 1;
                if self.opts.count_unanswered {
                    self.stats
                        .record_wait(end.saturating_duration_since(c.started));
                }
            }
        }
    }

    /// Fail every in-flight request whose deadline has passed.
    fn sweep(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if c.state.in_flight() && now >= c.deadline {
                let kind = if c.state == State::Connecting {
                    ErrorKind::Connect
                } else {
                    ErrorKind::Timeout
                };
                if self.opts.count_unanswered {
                    self.stats
                        .record_wait(now.saturating_duration_since(c.started));
                }
                self.fail(i, kind, now);
            }
        }
    }

    /// Connection `i` is free: start its next request now (closed loop) or at its next intended
    /// time (open loop).
    fn next_request(&mut self, i: usize, now: Instant) {
        if self.quota == 0 || self.conns[i].scheduled {
            return;
        }
        match self.interval {
            None => self.begin(i, now, now),
            Some(iv) => {
                let c = &mut self.conns[i];
                let intended = c.next_send;
                c.next_send += iv;
                if intended <= now {
                    self.begin(i, now, intended);
                } else {
                    c.scheduled = true;
                    self.timers.push(Reverse((intended, i)));
                }
            }
        }
    }

    /// Retry connection `i` after `delay` (closed loop), or at its next intended time.
    fn retry_later(&mut self, i: usize, now: Instant, delay: Duration) {
        if self.interval.is_some() || delay.is_zero() {
            return self.next_request(i, now);
        }
        if self.quota == 0 || self.conns[i].scheduled {
            return;
        }
        self.conns[i].scheduled = true;
        self.timers.push(Reverse((now + delay, i)));
    }

    /// Begin a request on connection `i`, timed from `intended`.
    fn begin(&mut self, i: usize, now: Instant, intended: Instant) {
        if self.quota == 0 {
            return;
        }
        self.quota -= 1;
        self.in_flight += 1;
        let c = &mut self.conns[i];
        c.asked = c.asked.saturating_add(1);
        c.ex.begin();
        c.written = 0;
        c.started = intended;
        c.deadline = now + self.opts.timeout;
        if c.stream.is_some() {
            c.state = State::Writing;
            self.write(i, now);
            return;
        }
        c.state = State::Connecting;
        c.deadline = now + self.opts.connect_timeout.min(self.opts.timeout);
        let source = (!self.opts.sources.is_empty()).then(|| {
            self.next_source = self.next_source.wrapping_add(1);
            self.opts.sources[self.next_source % self.opts.sources.len()]
        });
        // With several servers, a connection always goes to the same one.
        let global = self.first_conn + i;
        let to = match global % (1 + self.opts.also.len()) {
            0 => self.addr,
            k => self.opts.also[k - 1],
        };
        let connected = match source {
            None => TcpStream::connect(to),
            Some(from) => connect_from(from, to),
        };
        match connected {
            Ok(mut s) => {
                match self.poll.registry().register(
                    &mut s,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    Ok(()) => self.conns[i].stream = Some(s),
                    Err(_) => self.fail(i, ErrorKind::Connect, now),
                }
            }
            Err(_) => self.fail(i, ErrorKind::Connect, now),
        }
    }

    fn on_event(&mut self, i: usize, ev: &mio::event::Event, scratch: &mut [u8]) {
        let now = Instant::now();
        match self.conns[i].state {
            State::Closed => {}
            State::Connecting => {
                let c = &mut self.conns[i];
                let Some(s) = c.stream.as_ref() else { return };
                // mio: a writable (or error) event on a connecting socket means the connect
                // finished; `take_error` says how, `peer_addr` confirms it (a spurious wake-up
                // leaves it `NotConnected`).
                match s.take_error() {
                    Ok(None) => {}
                    Ok(Some(_)) | Err(_) => return self.fail(i, ErrorKind::Connect, now),
                }
                match s.peer_addr() {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                        if ev.is_error() || ev.is_write_closed() {
                            self.fail(i, ErrorKind::Connect, now);
                        }
                        return;
                    }
                    Err(_) => return self.fail(i, ErrorKind::Connect, now),
                }
                let _ = s.set_nodelay(true);
                if let Some(t) = &self.opts.tls {
                    match rustls::ClientConnection::new(Arc::clone(&t.config), t.name.clone()) {
                        Ok(conn) => c.tls = Some(Box::new(conn)),
                        Err(_) => return self.fail(i, ErrorKind::Connect, now),
                    }
                }
                self.stats.connects += 1;
                // The connect had its own, shorter deadline; the request gets a whole timeout.
                c.deadline = now + self.opts.timeout;
                c.state = State::Writing;
                self.write(i, now);
            }
            State::Writing => {
                if ev.is_writable() || ev.is_error() {
                    self.write(i, now);
                }
                if ev.is_readable() || ev.is_read_closed() {
                    self.read(i, ev.is_read_closed(), scratch);
                }
            }
            State::Awaiting | State::Idle => {
                // TLS records that met a full socket before (a handshake's last flight).
                if ev.is_writable() && self.conns[i].tls.as_ref().is_some_and(|t| t.wants_write()) {
                    self.write_tls(i, now);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.read(i, ev.is_read_closed(), scratch);
                }
            }
        }
    }

    /// Write what is left of the request; on completion, await the reply.
    fn write(&mut self, i: usize, now: Instant) {
        if self.conns[i].tls.is_some() {
            return self.write_tls(i, now);
        }
        loop {
            let c = &mut self.conns[i];
            if c.state != State::Writing {
                return;
            }
            let Some(s) = c.stream.as_mut() else { return };
            let req = c.ex.request();
            if c.written >= req.len() {
                if c.ex.half_close() {
                    let _ = s.shutdown(std::net::Shutdown::Write);
                }
                c.state = State::Awaiting;
                return;
            }
            match s.write(&req[c.written..]) {
                Ok(0) => return self.fail(i, ErrorKind::Write, now),
                Ok(n) => {
                    c.written += n;
                    self.stats.bytes_written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(i, ErrorKind::Write, now),
            }
        }
    }

    /// Read until `WouldBlock` (or until a reply ended on a short read: then the socket is
    /// drained, and sparing the extra `read` that would say so is one syscall per request).
    /// [`write`](Self::write) through TLS: the request's plaintext goes to rustls (which holds
    /// it until the handshake is done), then every record it has goes to the socket.
    fn write_tls(&mut self, i: usize, now: Instant) {
        loop {
            let c = &mut self.conns[i];
            let (Some(s), Some(tls)) = (c.stream.as_mut(), c.tls.as_mut()) else {
                return;
            };
            let req = c.ex.request();
            let mut took = 0;
            if c.state == State::Writing && c.written < req.len() {
                match tls.writer().write(&req[c.written..]) {
                    Ok(n) => took = n,
                    Err(_) => return self.fail(i, ErrorKind::Write, now),
                }
                c.written += took;
                self.stats.bytes_written += took as u64;
            }
            let mut sent = 0;
            while tls.wants_write() {
                match tls.write_tls(s) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return self.fail(i, ErrorKind::Write, now),
                }
            }
            if c.state == State::Writing && c.written >= req.len() {
                if c.ex.half_close() {
                    tls.send_close_notify();
                    while tls.wants_write() {
                        if tls.write_tls(s).is_err() {
                            break;
                        }
                    }
                    let _ = s.shutdown(std::net::Shutdown::Write);
                }
                c.state = State::Awaiting;
                return;
            }
            if took == 0 && sent == 0 {
                // rustls holds all it will before the handshake ends; reads move it on.
                return;
            }
        }
    }

    /// [`read`](Self::read) through TLS: records from the socket go to rustls a piece at a
    /// time (it holds at most 16 KiB of plaintext unread), its answers (the handshake's) back
    /// out, and the plaintext to the exchange as it comes.
    fn read_tls(&mut self, i: usize, scratch: &mut [u8]) {
        let mut plain = std::mem::take(&mut self.plain);
        plain.resize(READ_CHUNK, 0);
        self.read_tls_with(i, scratch, &mut plain);
        self.plain = plain;
    }

    fn read_tls_with(&mut self, i: usize, scratch: &mut [u8], plain: &mut [u8]) {
        let now = Instant::now();
        loop {
            let c = &mut self.conns[i];
            let Some(s) = c.stream.as_mut() else { return };
            let n = match s.read(scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.fail(i, ErrorKind::Read, now),
            };
            let mut data = &scratch[..n];
            loop {
                let c = &mut self.conns[i];
                let Some(tls) = c.tls.as_mut() else { return };
                if n == 0 {
                    // rustls takes an empty read as the end of the transport.
                    let _ = tls.read_tls(&mut data);
                } else if !data.is_empty() {
                    let fed = matches!(tls.read_tls(&mut data), Ok(k) if k > 0);
                    if !fed || tls.process_new_packets().is_err() {
                        return self.fail(i, ErrorKind::Read, now);
                    }
                }
                if tls.wants_write() || (c.state == State::Writing && !tls.is_handshaking()) {
                    self.write_tls(i, now);
                }
                // The plaintext, as the exchange would have read it from a plain socket.
                loop {
                    let Some(tls) = self.conns[i].tls.as_mut() else {
                        return;
                    };
                    match tls.reader().read(plain) {
                        Ok(0) => return self.eof(i),
                        Ok(k) => {
                            self.stats.bytes_read += k as u64;
                            self.input(i, &plain[..k]);
                            // A finished reply may have closed the connection or begun
                            // another: what is left of this read was not for it.
                            let c = &self.conns[i];
                            if c.stream.is_none() || c.state == State::Connecting {
                                return;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => return self.eof(i),
                    }
                }
                if n == 0 {
                    return self.eof(i);
                }
                if data.is_empty() {
                    break;
                }
            }
        }
    }

    fn read(&mut self, i: usize, closed: bool, scratch: &mut [u8]) {
        if self.conns[i].tls.is_some() {
            return self.read_tls(i, scratch);
        }
        loop {
            let c = &mut self.conns[i];
            let Some(s) = c.stream.as_mut() else { return };
            let skip = if c.pending.is_empty() {
                c.ex.skippable()
            } else {
                0
            };
            // A large body that is only counted is dropped in the kernel rather than copied
            // here, so a big file measures the server, not this process's memcpy.
            let skipping = skip >= SKIP_MIN;
            let asked = if skipping {
                usize::try_from(skip).unwrap_or(usize::MAX).min(SKIP_MAX)
            } else if c.pending.is_empty() {
                FRESH_READ.min(scratch.len())
            } else {
                scratch.len()
            };
            let got = if skipping {
                crate::sys::recv_discard(std::os::fd::AsFd::as_fd(s), asked)
            } else {
                s.read(&mut scratch[..asked])
            };
            let n = match got {
                Ok(0) => return self.eof(i),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.fail(i, ErrorKind::Read, Instant::now()),
            };
            self.stats.bytes_read += n as u64;
            if skipping {
                self.stats.bytes_dropped += n as u64;
            }
            let replied = if skipping {
                match self.conns[i].ex.skipped(n as u64) {
                    Some(r) => {
                        self.complete(i, r, Instant::now());
                        true
                    }
                    None => false,
                }
            } else {
                self.input(i, &scratch[..n])
            };
            if replied && n < asked && !closed {
                return;
            }
            if self.conns[i].stream.is_none() {
                return;
            }
        }
    }

    /// Feed bytes to connection `i`'s exchange; true when a reply ended among them.
    fn input(&mut self, i: usize, data: &[u8]) -> bool {
        let c = &mut self.conns[i];
        let mut reply = None;
        let result = if c.pending.is_empty() {
            let r = feed(&mut c.ex, data, &mut reply);
            r.map(|used| {
                c.pending.extend_from_slice(&data[used..]);
            })
        } else {
            c.pending.extend_from_slice(data);
            let r = feed(&mut c.ex, &c.pending, &mut reply);
            r.map(|used| {
                c.pending.drain(..used);
            })
        };
        let now = Instant::now();
        if let Err(kind) = result {
            self.fail(i, kind, now);
            return false;
        }
        if self.conns[i].pending.len() > MAX_PENDING {
            self.fail(i, ErrorKind::Parse, now);
            return false;
        }
        match reply {
            Some(r) => {
                self.complete(i, r, now);
                true
            }
            None => false,
        }
    }

    fn eof(&mut self, i: usize) {
        let now = Instant::now();
        let c = &mut self.conns[i];
        match c.ex.eof() {
            Ok(Some(r)) => self.complete(i, r, now),
            Ok(None) if !c.state.in_flight() => {
                // The server closed an idle keep-alive connection: not an error. The next
                // request opens a new one.
                self.close(i);
            }
            Ok(None) | Err(ErrorKind::Read) => self.fail(i, ErrorKind::Read, now),
            Err(kind) => self.fail(i, kind, now),
        }
    }

    fn complete(&mut self, i: usize, reply: Reply, now: Instant) {
        let c = &mut self.conns[i];
        if !c.state.in_flight() {
            // A reply nobody awaited (an exchange should not produce one): a parse error.
            return self.fail(i, ErrorKind::Parse, now);
        }
        self.stats.record(now.saturating_duration_since(c.started));
        c.replies += 1;
        if !reply.ok {
            self.stats.errors.add(ErrorKind::Status);
        }
        self.in_flight -= 1;
        c.state = State::Idle;
        if !reply.reuse || !self.opts.keepalive {
            self.close(i);
        }
        self.next_request(i, now);
    }

    fn close(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        c.tls = None;
        if c.state.in_flight() {
            self.in_flight -= 1;
        }
        c.state = State::Closed;
        c.pending = Vec::new();
        c.ex.reset();
    }

    fn fail(&mut self, i: usize, kind: ErrorKind, now: Instant) {
        self.stats.errors.add(kind);
        self.close(i);
        let delay = if kind == ErrorKind::Connect {
            self.opts.retry_delay
        } else {
            Duration::ZERO
        };
        self.retry_later(i, now, delay);
    }
}

/// Offer `data` to the exchange until it needs more; returns the bytes used and sets `reply`
/// when one ended. Bytes after a reply are offered too (a chat broadcast; for HTTP they are an
/// error: nobody asked for them).
fn feed<E: Exchange>(
    ex: &mut E,
    data: &[u8],
    reply: &mut Option<Reply>,
) -> std::result::Result<usize, ErrorKind> {
    let mut used = 0;
    loop {
        let p = ex.input(&data[used..])?;
        used += p.consumed;
        match p.reply {
            Some(r) if reply.is_none() => *reply = Some(r),
            Some(_) => return Err(ErrorKind::Parse),
            None if p.consumed == 0 || used >= data.len() => return Ok(used),
            None => {}
        }
        if used >= data.len() {
            return Ok(used);
        }
    }
}

/// Start a non-blocking connect from `from` (any port) to `to`. The port is chosen at
/// `connect`, as without a bind (`IP_BIND_ADDRESS_NO_PORT`), so that a port in TIME_WAIT
/// towards another peer can serve again.
fn connect_from(from: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.set_nonblocking(true)?;
    // Best effort: without it the port is chosen at bind, from the other half of the range.
    let _ = crate::sys::bind_address_no_port(s.as_fd());
    s.bind(&SocketAddr::new(from, 0).into())?;
    match s.connect(&to.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(s.into()))
}
