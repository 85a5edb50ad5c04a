//! One connection's life as every driver sees it: the socket, the session, its input buffer and
//! outbox, and the rules for calling the session (the contract in [`crate::protocol`]). Drivers
//! differ only in how they learn that the socket is ready; they all feed this state machine.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::io::{self as cio, ReadOutcome};
use super::link::PoolScope;
use super::tls::{TlsLayer, TlsRead, TlsSettings};
use super::ServeOptions;
use crate::protocol::{Next, Outbox, ReadBuf, Session};

mod links;

use links::LinkTable;

/// Reads per readiness event before other connections get a turn (16 × 16 KiB).
const READ_BUDGET: usize = 16;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The session is live.
    Open,
    /// The session asked to close after its output: flush, then half-close and linger
    /// (`linger`), or close at once (the peer's last message was read whole).
    Closing {
        linger: bool,
    },
    /// Output sent and write side shut: discard input until EOF or the deadline, so the peer
    /// reads our answer instead of a reset.
    Lingering {
        until: Instant,
    },
    Closed,
}

/// The limits a connection enforces, copied from [`ServeOptions`]. Every connection carries a
/// copy, so it is kept compact (12 bytes instead of 40): a high-water mark past 4 GiB and
/// timeouts past 49 days are clamped.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    high_water: u32,
    send_timeout_ms: u32,
    linger_ms: u32,
}

impl From<&ServeOptions> for Limits {
    fn from(o: &ServeOptions) -> Limits {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        Limits {
            high_water: u32::try_from(o.high_water).unwrap_or(u32::MAX),
            send_timeout_ms: ms(o.send_timeout),
            linger_ms: ms(o.linger),
        }
    }
}

impl Limits {
    fn high_water(&self) -> usize {
        self.high_water as usize
    }

    fn send_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.send_timeout_ms))
    }

    fn linger(&self) -> Duration {
        Duration::from_millis(u64::from(self.linger_ms))
    }
}

/// A lingering close ends early once the peer has been silent this long: it is there to read
/// away what a client was still sending when its answer went out, and a client that sends
/// nothing has nothing to lose to a reset. (nginx's `lingering_timeout` is 5 s; here a silent
/// slow client would otherwise hold the iterative model, which serves one connection at a
/// time, for the whole linger after every 408.)
const LINGER_QUIET: Duration = Duration::from_millis(500);

/// A connection and its session.
pub(crate) struct Conn<T: Session> {
    pub sock: Socket,
    session: T,
    input: ReadBuf,
    out: Outbox,
    state: State,
    read_eof: bool,
    /// The last read filled the buffer, so more input may be waiting in the socket.
    input_pending: bool,
    wake_at: Option<Instant>,
    /// When output last moved (or was first queued): the send timeout counts from here.
    last_progress: Instant,
    /// Output was queued since the last `on_drained`: call it when the outbox empties.
    owe_drained: bool,
    shutdown_told: bool,
    /// The socket takes `TCP_QUICKACK` (cleared after the first refusal: a Unix socket has no
    /// ACKs to hurry, so it is not asked again on every read).
    quickack: bool,
    /// The session paused its input with bytes of it still unconsumed: hand them back when
    /// it goes on ([`Session::reading_paused`]), or they would wait for bytes that may never
    /// come.
    input_held: bool,
    cork: cio::Cork,
    limits: Limits,
    /// The driver's half of the session's links, by slot (nothing for sessions with none).
    links: LinkTable,
    /// Inside [`sync_links`](Self::sync_links): a session call it makes must not start
    /// another.
    syncing: bool,
    /// Where kept upstream connections go ([`PoolScope`]; one byte, in the flags' padding).
    scope: PoolScope,
    /// TLS between the socket and the session (`None`: plaintext).
    tls: Option<Box<TlsLayer>>,
}

/// Which readiness the connection wants next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Interest {
    pub read: bool,
    pub write: bool,
}

impl<T: Session> Conn<T> {
    pub fn new(sock: Socket, session: T, limits: Limits, now: Instant) -> Conn<T> {
        Conn {
            sock,
            session,
            input: ReadBuf::new(),
            out: Outbox::new(),
            state: State::Open,
            read_eof: false,
            input_pending: false,
            wake_at: None,
            last_progress: now,
            owe_drained: false,
            shutdown_told: false,
            quickack: true,
            input_held: false,
            cork: cio::Cork::Off,
            limits,
            links: LinkTable::default(),
            syncing: false,
            scope: PoolScope::Shared,
            tls: None,
        }
    }

    /// Speak TLS on this connection: call before [`open`](Self::open). A connection rustls
    /// refuses to start is closed.
    pub fn use_tls(&mut self, settings: &TlsSettings) {
        match TlsLayer::new(settings) {
            Ok(t) => self.tls = Some(Box::new(t)),
            Err(e) => {
                tracing::warn!("cannot start TLS on a connection: {e}");
                self.close();
            }
        }
    }

    /// Output waits to be sent: in the outbox, or encrypted in the TLS layer.
    fn output_pending(&self) -> bool {
        !self.out.is_empty() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// The outbox can go out now (under TLS, once the handshake is done).
    fn outbox_sendable(&self) -> bool {
        !self.out.is_empty() && !self.tls.as_ref().is_some_and(|t| t.handshaking())
    }

    /// For an event worker: kept upstream connections stay in its own pool, registered with
    /// its poller ([`PoolScope::Worker`]).
    pub fn use_worker_pool(&mut self) {
        self.scope = PoolScope::Worker;
    }

    /// Start the session ([`Session::on_open`]): before the first read, so its timer runs
    /// even if the peer never sends a byte.
    pub fn open(&mut self, now: Instant) {
        let next = self.session.on_open(&mut self.out, now);
        self.apply(next, true, now);
    }

    /// Run `f` on this connection; if the session panics, close this connection only (the
    /// panic message has gone to stderr) instead of taking the worker and every other
    /// connection down with it.
    pub fn guarded(&mut self, f: impl FnOnce(&mut Conn<T>)) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        if r.is_err() {
            tracing::error!("a session panicked; closing its connection");
            self.close();
        }
    }

    /// Its TLS client has not been read from yet: its first read is a ClientHello.
    pub fn tls_awaiting_hello(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.awaiting_hello())
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Bytes queued for this connection (tests and accounting).
    #[allow(dead_code)]
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Close now: the driver drops the socket (and the session) after this.
    pub fn close(&mut self) {
        self.state = State::Closed;
        self.out.clear();
    }

    /// Record what the session asked for. Only an open session's answer counts: after a closing
    /// `Next` the session is not called again.
    fn apply(&mut self, next: Next, was_empty: bool, now: Instant) {
        if was_empty && !self.out.is_empty() {
            self.last_progress = now;
        }
        if !self.out.is_empty() {
            self.owe_drained = true;
        }
        match next {
            Next::Continue { wake_at } => self.wake_at = wake_at,
            Next::CloseAfterFlush => {
                self.state = State::Closing { linger: true };
                self.wake_at = None;
            }
            Next::CloseAfterReply => {
                let linger = self.input_pending || !self.input.is_empty();
                self.state = State::Closing { linger };
                self.wake_at = None;
            }
            Next::Close => self.close(),
        }
        if matches!(self.state, State::Closing { .. })
            && self.tls.as_ref().is_some_and(|t| t.handshaking())
        {
            // Nothing the session queued can be sent before the handshake is done (a head
            // timeout that fell during it, or the peer's EOF): there is nobody to tell.
            self.close();
        }
        self.sync_links(now);
    }

    pub fn interest(&self) -> Interest {
        match self.state {
            State::Open => Interest {
                read: !self.read_eof
                    && self.out.len() <= self.limits.high_water()
                    && !self.session.reading_paused(),
                write: self.outbox_sendable() || self.tls.as_ref().is_some_and(|t| t.wants_write()),
            },
            State::Closing { .. } => Interest {
                read: false,
                write: self.output_pending(),
            },
            State::Lingering { .. } => Interest {
                read: true,
                write: false,
            },
            State::Closed => Interest::default(),
        }
    }

    /// When a lingering close ends: at `until`, or once the peer has sent nothing for
    /// [`LINGER_QUIET`] (nginx's `lingering_timeout`), whichever comes first.
    fn linger_end(&self, until: Instant) -> Instant {
        until.min(self.last_progress + LINGER_QUIET)
    }

    /// The next instant [`timers`](Self::timers) has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        let send = self
            .output_pending()
            .then(|| self.last_progress + self.limits.send_timeout());
        let own = match self.state {
            State::Open => self.wake_at,
            State::Lingering { until } => Some(self.linger_end(until)),
            _ => None,
        };
        let links = self
            .links
            .iter()
            .flatten()
            .filter(|l| l.exit_wait)
            .filter_map(|l| l.io.deadline())
            .min();
        [send, own, links].into_iter().flatten().min()
    }

    /// The socket is ready (`hup`: the poller reported hang-up or error).
    pub fn ready(&mut self, now: Instant, readable: bool, writable: bool, hup: bool) {
        let want = self.interest();
        if readable || (hup && want.read) {
            self.on_readable(now);
        }
        if writable || hup {
            self.progress(now);
        }
        // A hang-up nobody is reading for would be reported again at once by a level-triggered
        // poller: the connection is gone, so close it rather than spin.
        if hup && !self.is_closed() && !self.interest().read {
            tracing::debug!("peer hung up");
            self.close();
        }
    }

    fn on_readable(&mut self, now: Instant) {
        if let State::Lingering { .. } = self.state {
            for _ in 0..READ_BUDGET {
                match cio::discard(&self.sock) {
                    Ok(ReadOutcome::Data { .. }) => {
                        // Still sending: the quiet period starts again.
                        self.last_progress = now;
                        continue;
                    }
                    Ok(ReadOutcome::WouldBlock) => return,
                    Ok(ReadOutcome::Eof) | Err(_) => {
                        self.state = State::Closed;
                        return;
                    }
                }
            }
            return;
        }
        for _ in 0..READ_BUDGET {
            if self.state != State::Open || !self.interest().read {
                break;
            }
            match self.read_some() {
                Ok(None) => return,
                Ok(Some(ReadOutcome::Data { drained, .. })) => {
                    self.input_pending = !drained;
                    let (was_empty, queued) = (self.out.is_empty(), self.out.len());
                    let next = self.session.on_input(&mut self.input, &mut self.out, now);
                    self.apply(next, was_empty, now);
                    self.input_held = !self.input.is_empty() && self.session.reading_paused();
                    if self.quickack
                        && self.state == State::Open
                        && self.out.len() == queued
                        && self.session.mid_message()
                    {
                        // No answer to carry the ACK (a request still arriving, or one that
                        // waits on something else): send it now, or a peer holding its next
                        // bytes for that ACK (Nagle) would wait out the delayed-ACK timer.
                        self.quickack = crate::sys::ack_now(self.sock.as_fd()).is_ok();
                    }
                    // Send as we go, so a fast sender's echo leaves while we still read.
                    self.progress(now);
                    if drained {
                        // Level-triggered pollers report more input if it comes; skip the read
                        // that would only say WouldBlock. An idle connection keeps no buffer.
                        self.input.shrink_if_empty();
                        self.out.shrink_if_empty();
                        break;
                    }
                }
                Ok(Some(ReadOutcome::Eof)) => {
                    self.read_eof = true;
                    self.input_pending = false;
                    let was_empty = self.out.is_empty();
                    let next = self.session.on_eof(&mut self.input, &mut self.out, now);
                    self.apply(next, was_empty, now);
                    break;
                }
                Ok(Some(ReadOutcome::WouldBlock)) => {
                    self.input_pending = false;
                    // Going idle: an idle connection keeps no input buffer.
                    self.input.shrink_if_empty();
                    self.out.shrink_if_empty();
                    break;
                }
                Err(e) => {
                    tracing::debug!("read failed: {e}");
                    self.close();
                    return;
                }
            }
        }
        self.progress(now);
    }

    /// One read: from the socket, or through the TLS layer. `None`: the peer is not speaking
    /// TLS to a TLS port, and the connection is answered (the service's plain reply) and
    /// closing, or closed.
    fn read_some(&mut self) -> std::io::Result<Option<ReadOutcome>> {
        let Some(tls) = self.tls.as_mut() else {
            return cio::read_into(&self.sock, &mut self.input).map(Some);
        };
        match tls.read_into(&self.sock, &mut self.input)? {
            TlsRead::Io(r) => {
                if let Some(proto) = tls.alpn_once() {
                    let now = Instant::now();
                    let was_empty = self.out.is_empty();
                    // RFC 8737 §3: a TLS-ALPN-01 validation carries no application data; the
                    // handshake was all it came for.
                    let next = if proto == super::ACME_TLS_ALPN {
                        Next::CloseAfterFlush
                    } else {
                        self.session.on_alpn(&proto, &mut self.out, now)
                    };
                    self.apply(next, was_empty, now);
                    if self.state != State::Open {
                        self.progress(now);
                        return Ok(None);
                    }
                }
                Ok(Some(r))
            }
            TlsRead::NotTls { letter } => {
                let reply = tls.plain_reply().filter(|_| letter);
                self.tls = None;
                match reply {
                    Some(r) => {
                        tracing::debug!("plaintext on a TLS port; answering in plaintext");
                        self.out.clear();
                        self.out.push_shared(r);
                        self.state = State::Closing { linger: true };
                        self.wake_at = None;
                        self.progress(Instant::now());
                    }
                    None => {
                        tracing::debug!("closing a connection that does not speak TLS");
                        self.close();
                    }
                }
                Ok(None)
            }
        }
    }

    /// Flush what can go now; call `on_drained` when the outbox empties; finish a closing
    /// connection once its output is out.
    pub fn progress(&mut self, now: Instant) {
        loop {
            if self.is_closed() {
                return;
            }
            if self.output_pending() {
                let closing = matches!(self.state, State::Closing { .. });
                let flushed = match self.tls.as_mut() {
                    Some(tls) => tls.flush(
                        &self.sock,
                        &mut self.out,
                        cio::TURN,
                        &mut self.cork,
                        closing,
                    ),
                    None => cio::flush(&self.sock, &mut self.out, closing, &mut self.cork),
                };
                match flushed {
                    Ok(f) => {
                        if f.wrote > 0 {
                            self.last_progress = now;
                        }
                        if f.paused {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!("write failed: {e}");
                        self.close();
                        return;
                    }
                }
            }
            // The outbox is empty here.
            match self.state {
                State::Open if self.owe_drained => {
                    self.owe_drained = false;
                    let next = self.session.on_drained(&mut self.out, now);
                    self.apply(next, true, now);
                    self.resume_held_input(now);
                    if self.out.is_empty() && self.state == State::Open {
                        return;
                    }
                }
                State::Closing { .. } if self.tls.as_mut().is_some_and(|t| t.notify_close()) => {
                    // The last bytes out are the TLS close_notify (RFC 8446 §6.1).
                    continue;
                }
                State::Closing { linger: false } => {
                    // Dropping the socket closes it; the kernel sends what is queued, then FIN.
                    self.state = State::Closed;
                    return;
                }
                State::Closing { linger: true } => {
                    let _ = self.sock.shutdown(std::net::Shutdown::Write);
                    if self.limits.linger().is_zero() || self.read_eof {
                        self.state = State::Closed;
                    } else {
                        self.state = State::Lingering {
                            until: now + self.limits.linger(),
                        };
                        // The output is out, so the send timeout's anchor is free: it marks
                        // when the peer last sent something (see LINGER_QUIET).
                        self.last_progress = now;
                        self.on_readable(now);
                    }
                    return;
                }
                _ => return,
            }
        }
    }

    /// Deadlines: the send timeout, the lingering close, the session's own `wake_at`, a
    /// child's exit awaited.
    pub fn timers(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        for i in 0..self.links.len() {
            if self.links[i].as_ref().is_some_and(|l| l.exit_wait) {
                self.child_ending(i, now);
                // The answer may have ended here: send it (and close, if that was decided).
                self.progress(now);
            }
        }
        if self.is_closed() {
            return;
        }
        if self.output_pending() && now >= self.last_progress + self.limits.send_timeout() {
            tracing::debug!(
                "closing a connection whose peer took no output for {:?}",
                self.limits.send_timeout()
            );
            self.close();
            return;
        }
        match self.state {
            State::Lingering { until } if now >= self.linger_end(until) => {
                self.state = State::Closed
            }
            State::Open if self.wake_at.is_some_and(|t| now >= t) => {
                self.wake_at = None;
                let was_empty = self.out.is_empty();
                let next = self.session.on_timer(&mut self.out, now);
                self.apply(next, was_empty, now);
                self.resume_held_input(now);
                self.progress(now);
            }
            _ => {}
        }
    }

    /// The session's waker fired.
    pub fn wake(&mut self, now: Instant) {
        if self.state == State::Open {
            let was_empty = self.out.is_empty();
            let next = self.session.on_wake(&mut self.out, now);
            self.apply(next, was_empty, now);
            self.resume_held_input(now);
            self.progress(now);
        }
    }

    /// The session paused with input unconsumed and has now gone on: give it that input
    /// again, since the peer may have nothing more to send that would bring it back.
    fn resume_held_input(&mut self, now: Instant) {
        if !self.input_held || self.state != State::Open || self.session.reading_paused() {
            return;
        }
        let was_empty = self.out.is_empty();
        let next = self.session.on_input(&mut self.input, &mut self.out, now);
        self.apply(next, was_empty, now);
        self.input_held = !self.input.is_empty() && self.session.reading_paused();
    }

    /// Graceful shutdown began: tell the session once.
    pub fn shutdown(&mut self, now: Instant) {
        if self.state == State::Open && !self.shutdown_told {
            self.shutdown_told = true;
            let was_empty = self.out.is_empty();
            let next = self.session.on_shutdown(&mut self.out, now);
            self.apply(next, was_empty, now);
            self.progress(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Next, Outbox, ReadBuf, Session};
    use std::io::Write;

    /// Consumes everything and never answers: every read leaves an ACK to hurry.
    struct Sink;

    impl Session for Sink {
        fn on_input(&mut self, input: &mut ReadBuf, _out: &mut Outbox, _now: Instant) -> Next {
            let n = input.len();
            input.consume(n);
            Next::CONTINUE
        }

        fn on_eof(&mut self, _input: &mut ReadBuf, _out: &mut Outbox, _now: Instant) -> Next {
            Next::Close
        }
    }

    fn limits() -> Limits {
        Limits::from(&ServeOptions::default())
    }

    /// Feed one message to a connection over `ours` (the peer writes on `theirs`).
    fn feed(conn: &mut Conn<Sink>, theirs: &mut impl Write) {
        theirs.write_all(b"part of a message").unwrap();
        conn.ready(Instant::now(), true, false, false);
        assert!(!conn.is_closed());
    }

    #[test]
    fn a_unix_socket_is_not_asked_to_hurry_acks_again_after_refusing() {
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut conn = Conn::new(
            Socket::from(std::os::fd::OwnedFd::from(ours)),
            Sink,
            limits(),
            Instant::now(),
        );
        feed(&mut conn, &mut theirs);
        assert!(!conn.quickack, "a Unix socket accepted TCP_QUICKACK");
    }

    #[test]
    fn a_tcp_socket_keeps_hurrying_acks() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut theirs = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (ours, _) = l.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut conn = Conn::new(Socket::from(ours), Sink, limits(), Instant::now());
        for _ in 0..2 {
            feed(&mut conn, &mut theirs);
            assert!(conn.quickack);
        }
    }

    /// The steady state: a keep-alive connection asking again and again for a small
    /// file the cache holds is answered from the read to the write without allocating (the
    /// cached head and body are shared, the buffers are the connection's own). The few
    /// allowed rounds cover what happens once a second (the cache entry's revalidation, the
    /// `Date` line).
    #[test]
    fn a_repeated_get_of_a_cached_small_file_allocates_nothing() {
        repeated_gets_allocate_nothing(false);
    }

    /// The same with an access log (to a file): its line is formatted into a kept buffer.
    #[test]
    fn a_logged_repeated_get_allocates_nothing() {
        repeated_gets_allocate_nothing(true);
    }

    fn repeated_gets_allocate_nothing(logged: bool) {
        use crate::protocol::http::static_files::{StaticConfig, StaticFiles};
        use crate::protocol::http::{HttpOptions, HttpService, Limits as HttpLimits};
        use crate::protocol::{Peer, PeerAddr};
        use crate::sys::counting_alloc::allocations;
        use std::io::Read;

        let root =
            std::env::temp_dir().join(format!("tincan-alloc-{}-{logged}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let log_path = root.join("access.log");
        let access_log = logged
            .then(|| crate::protocol::http::AccessLog::open(log_path.to_str().unwrap()).unwrap());
        std::fs::write(root.join("small.txt"), "x".repeat(1024)).unwrap();
        let files = StaticFiles::new(StaticConfig {
            root: root.clone(),
            ..StaticConfig::default()
        })
        .unwrap();
        let svc = HttpService::new(
            std::sync::Arc::new(files),
            HttpLimits::default(),
            HttpOptions {
                access_log: access_log.clone(),
                ..HttpOptions::default()
            },
        );
        let peer = Peer {
            remote: PeerAddr::Tcp("127.0.0.1:40000".parse().unwrap()),
            local: PeerAddr::Tcp("127.0.0.1:8080".parse().unwrap()),
        };
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let now = Instant::now();
        let mut conn = Conn::new(
            Socket::from(std::os::fd::OwnedFd::from(ours)),
            svc.session_at(&peer, now),
            limits(),
            now,
        );
        let mut answer = [0u8; 4096];
        let mut round = |conn: &mut Conn<_>, answer: &mut [u8]| -> usize {
            theirs
                .write_all(b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            conn.ready(Instant::now(), true, false, false);
            theirs.read(answer).unwrap()
        };
        for _ in 0..3 {
            assert!(round(&mut conn, &mut answer) > 1024);
        }
        assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
        let before = allocations();
        drop(std::hint::black_box(vec![0u8; 1]));
        assert!(
            allocations() > before,
            "the counting allocator is not in use"
        );
        let (rounds, mut allocating) = (500, 0);
        for _ in 0..rounds {
            let before = allocations();
            assert!(round(&mut conn, &mut answer) > 1024);
            if allocations() > before {
                allocating += 1;
            }
        }
        if let Some(log) = &access_log {
            log.flush();
            let lines = std::fs::read_to_string(&log_path).unwrap();
            assert_eq!(lines.lines().count(), rounds + 3, "lines logged");
            assert!(
                lines.ends_with("\"GET /small.txt HTTP/1.1\" 200 1024 \"-\" \"-\"\n"),
                "{lines}"
            );
        }
        let _ = std::fs::remove_dir_all(&root);
        assert!(
            allocating <= 4,
            "{allocating} of {rounds} requests for a cached file allocated (logged: {logged})"
        );
    }
}
