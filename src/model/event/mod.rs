//! The event model: `workers` threads, each an event loop with its own poller (epoll, poll or
//! select) over non-blocking sockets. Every worker watches every listener (EPOLLEXCLUSIVE under
//! epoll, so a new connection wakes one worker, not all) and keeps the connections it accepted.
//! Where workers share the listeners they take turns: a few accepts per wake, and the woken
//! worker goes to the back of the listener's wait queue (see `Worker::accept`).
//!
//! Per worker: a slab of connections indexed by token (index + generation, so a stale wake or a
//! readiness report for a reused slot is recognised and ignored); an eventfd plus a queue of
//! tokens for wakes from other threads (each connection is queued at most once until handled);
//! a min-heap of deadlines for timers. The same loop runs inside each prefork worker process,
//! on the sockets its slot was given (its own where SO_REUSEPORT spreads an address, shared
//! otherwise). The threads, or the prefork workers, count connections against one cap (`cap`).

pub(crate) mod poller;
mod spin;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::Socket;

use self::poller::{Event, Poller};
use self::spin::Spin;
use super::cap::Cap;
use super::connection::{Conn, Interest, Limits};
use super::link;
use super::{accept_failed, Ctx, ServeError};
use crate::net::Listener;
use crate::protocol::{Peer, Service, Waker};
use crate::sys::EventFd;

/// Tokens at and above this are not connections.
const LISTENER_BASE: u64 = 1 << 63;
/// Tokens from here (below `LISTENER_BASE`) name a link's descriptor: `LINK_BASE + fd`. The
/// owner is looked up in the worker's table, so a kept upstream connection can pass from the
/// pool to a connection, and back, without its registration changing.
const LINK_BASE: u64 = 1 << 62;
const WAKE_TOKEN: u64 = u64::MAX;
const SHUTDOWN_TOKEN: u64 = u64::MAX - 1;

/// Connections accepted per listener readiness before the loop looks at other work. Large:
/// while clients wait in a full backlog the kernel drops their SYNs, and each one dropped
/// costs its client a one-second retransmission (bench/README, "The accept budget").
const ACCEPT_BUDGET: usize = 1024;
/// ClientHellos answered per round of the loop: each costs a key exchange and a signature
/// (some 150 µs with ECDSA P-256), so a burst of new TLS clients is taken a few at a time and a
/// request on a connection under way waits for at most this many, not for the whole burst.
const HELLOS_PER_ROUND: usize = 4;
/// How often a worker paused at the cap looks at the listeners' backlog.
const BACKLOG_CHECK: Duration = super::BACKLOG_CHECK;
/// How soon a worker paused at the cap looks whether a slot has freed. Its own connections
/// ending wake it anyway; this is for a slot freed by another worker (a thread, or under
/// prefork another process, whose clients may be queued on a socket of their own). A timer,
/// as nginx's `accept_mutex_delay`, rather than a wake-up from the worker that frees a slot:
/// it costs nothing below the cap (an eventfd would cost every close at the cap a write and
/// wake every paused worker for one slot), and a paused worker wakes 50 times a second only
/// while the server is full. A client waits at most this long past a freed slot.
const CAP_RECHECK: Duration = Duration::from_millis(20);

/// Connections accepted per listener readiness while other workers (threads or prefork
/// processes) watch the same listeners. Few, as nginx accepts one per readiness by default
/// (`multi_accept off`): the backlog a burst leaves is then taken in turns by the workers
/// awake, not all by the first. The listener stays ready while its backlog is not empty, so
/// the loop comes back to it at once.
const SHARED_ACCEPT_BUDGET: usize = 8;

const READ: Interest = Interest {
    read: true,
    write: false,
};

/// Slot generations wrap within this mask (22 bits: the token also carries the descriptor).
const GEN_MASK: u32 = 0x3f_ffff;

/// A token names a slot, its generation, and which of its descriptors: 0 for the client
/// socket, `1 + 2 * link + side` for a link's (the connection's `LinkWatch`).
fn token(index: usize, gen: u32, sub: usize) -> u64 {
    (u64::from(gen & GEN_MASK) << 40) | ((sub as u64 & 0xff) << 32) | (index as u64 & 0xffff_ffff)
}

fn split(token: u64) -> (usize, u32, usize) {
    (
        (token & 0xffff_ffff) as usize,
        ((token >> 40) as u32) & GEN_MASK,
        ((token >> 32) & 0xff) as usize,
    )
}

/// Run `opts.workers` event loops on threads until shutdown. Returns the first worker error.
pub(crate) fn run<S: Service>(
    ctx: Arc<Ctx<S>>,
    listeners: Vec<Listener>,
) -> Result<(), ServeError> {
    let workers = ctx.opts.workers.max(1);
    let max = ctx.opts.max_connections;
    // The threads count their connections in cells of one cap (see `cap`).
    let cells: Vec<AtomicUsize> = (0..workers).map(|_| AtomicUsize::new(0)).collect();
    // Every thread watches every listener.
    let shared = vec![workers > 1; listeners.len()];
    let results: Vec<Result<(), ServeError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|i| {
                let (ctx, listeners, cells, shared) = (&*ctx, &listeners, &cells, &shared);
                std::thread::Builder::new()
                    .name(format!("tincan-event-{i}"))
                    .spawn_scoped(s, move || {
                        let cap = Cap::new(cells, i, max, max);
                        let r = run_worker(ctx, listeners, shared, cap, true);
                        if let Err(e) = &r {
                            tracing::error!("event worker {i} stopped: {e}; shutting down");
                            // One worker down means the server cannot keep its promises.
                            ctx.shutdown.trigger();
                        }
                        r
                    })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h.join().unwrap_or_else(|_| {
                    ctx.shutdown.trigger();
                    Err(ServeError::Refused("an event worker panicked".into()))
                }),
                Err(e) => {
                    ctx.shutdown.trigger();
                    Err(ServeError::Sys {
                        what: "starting an event worker thread",
                        source: e,
                    })
                }
            })
            .collect()
    });
    ctx.report_cut_off();
    results.into_iter().find(|r| r.is_err()).unwrap_or(Ok(()))
}

/// One event loop, on the calling thread, until shutdown and its grace period are over.
/// `shared[i]`: other workers (threads, or prefork processes) watch listener `i` too.
/// `cap`: this worker's share in the server's connection cap.
/// `owns_listeners`: this process decides when the listeners stop (false in a prefork worker,
/// whose listening sockets are stopped by the parent).
pub(crate) fn run_worker<S: Service>(
    ctx: &Ctx<S>,
    listeners: &[Listener],
    shared: &[bool],
    cap: Cap<'_>,
    owns_listeners: bool,
) -> Result<(), ServeError> {
    let mut w = Worker::new(ctx, listeners, shared, cap)?;
    w.owns_listeners = owns_listeners;
    w.run()
}

/// The owner of a registered link descriptor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum LinkOwner {
    #[default]
    None,
    /// A connection (its token) and which of its descriptors (`sub`), since which round of
    /// the loop (`since`): reports gathered in that round came before it was this link's, and
    /// are for a descriptor that had the number before (level-triggered, a real one comes
    /// again next round).
    Conn { token: u64, sub: usize, since: u32 },
    /// The worker's pool of kept upstream connections.
    Pooled,
}

/// Wakes addressed to this worker's connections.
struct WakeQueue {
    fd: EventFd,
    pending: Mutex<Vec<u64>>,
}

struct Entry<T: crate::protocol::Session> {
    conn: Conn<T>,
    interest: Interest,
    /// The earliest deadline this connection has in the heap.
    scheduled: Option<Instant>,
    /// Set by the waker, cleared when the wake is delivered: one queue entry per connection.
    wake_queued: Arc<AtomicBool>,
}

struct Slot<T: crate::protocol::Session> {
    gen: u32,
    entry: Option<Entry<T>>,
}

struct Worker<'a, S: Service> {
    ctx: &'a Ctx<S>,
    listeners: &'a [Listener],
    /// Where this worker's connections are counted against `--max-connections`.
    cap: Cap<'a>,
    poller: Poller,
    /// How long to poll before sleeping (`--busy-poll`).
    spin: Spin,
    slots: Vec<Slot<S::Session>>,
    free: Vec<usize>,
    live: usize,
    wakes: Arc<WakeQueue>,
    wake_batch: Vec<u64>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Listeners are registered with the poller.
    listening: bool,
    /// Accepting paused after an accept error until then.
    resume_at: Option<Instant>,
    grace_until: Option<Instant>,
    limits: Limits,
    /// Who owns each link descriptor this worker has registered, by descriptor.
    link_owner: Vec<LinkOwner>,
    /// Rounds of the loop (one per wait), to tell a link's reports from its number's
    /// previous holder's (see [`LinkOwner::Conn`]).
    round: u32,
    /// Scratch for [`Worker::close_kept`].
    kept_closed: Vec<RawFd>,
    owns_listeners: bool,
    /// Per listener: other workers watch it too (more than one event thread, or a prefork
    /// worker on a socket its siblings share): accept in small batches and let the others go
    /// first.
    shared_listeners: &'a [bool],
    /// accept(2) said the listeners no longer listen.
    listeners_stopped: bool,
    /// While paused at the cap: when to look at the listeners' backlog next.
    backlog_check_at: Instant,
}

impl<'a, S: Service> Worker<'a, S> {
    fn new(
        ctx: &'a Ctx<S>,
        listeners: &'a [Listener],
        shared_listeners: &'a [bool],
        cap: Cap<'a>,
    ) -> Result<Self, ServeError> {
        let sys = |what| move |e| ServeError::Sys { what, source: e };
        let poller = Poller::new(ctx.opts.poller).map_err(sys("creating the poller"))?;
        let wakes = Arc::new(WakeQueue {
            fd: EventFd::new().map_err(sys("creating the wake eventfd"))?,
            pending: Mutex::new(Vec::new()),
        });
        let mut w = Worker {
            ctx,
            listeners,
            cap,
            poller,
            spin: Spin::new(ctx.opts.busy_poll),
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            wakes,
            wake_batch: Vec::new(),
            timers: BinaryHeap::new(),
            listening: false,
            resume_at: None,
            grace_until: None,
            limits: Limits::from(&ctx.opts),
            link_owner: Vec::new(),
            round: 0,
            kept_closed: Vec::new(),
            owns_listeners: false,
            shared_listeners,
            listeners_stopped: false,
            backlog_check_at: Instant::now(),
        };
        let wake_fd = w.wakes.fd.as_raw_fd();
        w.poller
            .add(wake_fd, WAKE_TOKEN, READ, false)
            .map_err(sys("watching the wake eventfd"))?;
        w.poller
            .add(ctx.shutdown.fd(), SHUTDOWN_TOKEN, READ, false)
            .map_err(sys("watching the shutdown signal"))?;
        w.listen(true).map_err(sys("watching the listeners"))?;
        Ok(w)
    }

    /// Register (or deregister) the listeners with this worker's poller.
    fn listen(&mut self, on: bool) -> std::io::Result<()> {
        if on == self.listening {
            return Ok(());
        }
        for (i, l) in self.listeners.iter().enumerate() {
            let fd = l.as_raw_fd();
            if on {
                self.poller.add(fd, LISTENER_BASE + i as u64, READ, true)?;
            } else {
                let _ = self.poller.delete(fd);
            }
        }
        self.listening = on;
        Ok(())
    }

    fn run(&mut self) -> Result<(), ServeError> {
        let mut events: Vec<Event> = Vec::with_capacity(256);
        if self.ctx.shutdown.is_triggered() {
            self.begin_shutdown(Instant::now());
        }
        loop {
            let now = Instant::now();
            if let Some(g) = self.grace_until {
                if self.live == 0 {
                    break;
                }
                if now >= g {
                    self.ctx.cut_off(self.live);
                    break;
                }
            } else if !self.listening
                && !self.listeners_stopped
                && self.resume_at.is_none_or(|t| now >= t)
            {
                if self.cap.has_room() {
                    self.resume_at = None;
                    if let Err(e) = self.listen(true) {
                        tracing::warn!("cannot watch the listeners again: {e}");
                        self.resume_at = Some(now + Duration::from_millis(100));
                    }
                } else if now >= self.backlog_check_at {
                    self.backlog_check_at = now + BACKLOG_CHECK;
                    super::tell_backlog(self.listeners, self.ctx.opts.max_connections);
                }
            }
            let mut deadline = self.timers.peek().map(|Reverse((t, _))| *t);
            for d in [self.grace_until, self.resume_at].into_iter().flatten() {
                deadline = Some(deadline.map_or(d, |x| x.min(d)));
            }
            // A worker paused at the cap looks again soon: a slot may have freed in another
            // worker (the cap is per server, the pause per worker). See `CAP_RECHECK`.
            if !self.listening && !self.listeners_stopped && self.grace_until.is_none() {
                let soon = now + CAP_RECHECK;
                deadline = Some(deadline.map_or(soon, |x| x.min(soon)));
            }
            let timeout = deadline.map(|d| d.saturating_duration_since(now));
            match self.wait(&mut events, now, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(ServeError::Sys {
                        what: "waiting for readiness",
                        source: e,
                    })
                }
            }
            let now = Instant::now();
            self.round = self.round.wrapping_add(1);
            // Links first: an upstream answer that completes frees its kept connection for the
            // requests gathered in the same round, which would otherwise open new ones.
            for ev in events.iter() {
                if (LINK_BASE..LISTENER_BASE).contains(&ev.token) {
                    self.link_ready(ev.token - LINK_BASE, ev, now);
                }
            }
            let tls = self.ctx.opts.tls.is_some();
            for ev in events.iter() {
                match ev.token {
                    SHUTDOWN_TOKEN => self.begin_shutdown(now),
                    WAKE_TOKEN => self.deliver_wakes(now),
                    t if t >= LISTENER_BASE => self.accept((t - LISTENER_BASE) as usize, now),
                    t if t >= LINK_BASE => {}
                    t if tls && self.awaiting_hello(t) => {}
                    t => self.ready(t, ev, now),
                }
            }
            // New TLS clients last: answering a ClientHello costs a key exchange and a
            // signature (some 150 µs), a request or a handshake's last flight a few µs; the
            // connections already under way are served first, so a burst of new clients (or
            // of garbage handshakes) delays no one already served.
            if tls {
                let mut hellos = 0;
                for ev in events.iter() {
                    if ev.token < LINK_BASE && self.awaiting_hello(ev.token) {
                        if hellos == HELLOS_PER_ROUND {
                            // Still readable: reported again at once, after what arrives
                            // meanwhile on the connections under way.
                            break;
                        }
                        hellos += 1;
                        self.ready(ev.token, ev, now);
                    }
                }
            }
            self.fire_timers(now);
            self.close_kept(link::worker_trim);
        }
        // Whatever is left after the grace period is closed by dropping it.
        self.slots.clear();
        self.cap.give_back(self.live);
        self.live = 0;
        Ok(())
    }

    /// Wait for readiness until `timeout` from `now`: poll for the spin window first, then
    /// sleep, and let the window learn from how long the sleep was (see [`spin`]).
    fn wait(
        &mut self,
        events: &mut Vec<Event>,
        now: Instant,
        timeout: Option<Duration>,
    ) -> std::io::Result<()> {
        if !self.spin.enabled() {
            return self.poller.wait(events, timeout);
        }
        let window = self.spin.window().min(timeout.unwrap_or(Duration::MAX));
        let mut asleep = now;
        if !window.is_zero() {
            loop {
                self.poller.wait(events, Some(Duration::ZERO))?;
                if !events.is_empty() {
                    return Ok(());
                }
                asleep = Instant::now();
                if asleep >= now + window {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        let timeout = timeout.map(|t| t.saturating_sub(asleep - now));
        self.poller.wait(events, timeout)?;
        self.spin.slept(asleep.elapsed(), !events.is_empty());
        Ok(())
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if self.grace_until.is_some() {
            return;
        }
        self.ctx.shutdown.mark();
        self.grace_until = Some(now + self.ctx.opts.grace);
        let _ = self.listen(false);
        if self.owns_listeners {
            // Refuse new clients now rather than leave them in the backlog until we exit.
            for l in self.listeners {
                l.stop();
            }
        }
        let _ = self.poller.delete(self.ctx.shutdown.fd());
        self.ctx.begin_shutdown();
        for i in 0..self.slots.len() {
            if let Some(e) = self.slots[i].entry.as_mut() {
                e.conn.guarded(|c| c.shutdown(now));
                self.update(i);
            }
        }
    }

    fn accept(&mut self, which: usize, now: Instant) {
        if which >= self.listeners.len() {
            return;
        }
        let shared = self.shared_listeners.get(which).copied().unwrap_or(true);
        let budget = if shared {
            SHARED_ACCEPT_BUDGET
        } else {
            ACCEPT_BUDGET
        };
        if shared && self.poller.is_epoll() {
            // EPOLLEXCLUSIVE wakes the first idle worker in the listener's wait queue, so the
            // same one would take every connection it is idle for. Registering again puts this
            // worker at the back: a round robin among the idle ones (two epoll_ctl calls a
            // wake, only where workers share the listener).
            self.requeue_listener(which);
        }
        let Some(l) = self.listeners.get(which) else {
            return;
        };
        for _ in 0..budget {
            if self.ctx.shutdown.is_triggered() {
                // The listeners are being stopped; the shutdown event is next in line.
                return;
            }
            // The slot is taken before accept(2), so that workers accepting at the same
            // moment cannot together pass the cap; an accept that brings nothing gives it back.
            if !self.cap.try_take() {
                // At the cap: stop watching the listeners; new clients wait in the backlog.
                let _ = self.listen(false);
                return;
            }
            let accepted = l.accept();
            if accepted.is_err() {
                self.cap.give_back(1);
            }
            match accepted {
                Ok((sock, peer)) => {
                    self.open(sock, peer, now);
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // The listening socket was stopped (shutdown has begun elsewhere): stop
                    // watching it for good.
                    let _ = self.listen(false);
                    self.listeners_stopped = true;
                    return;
                }
                Err(e) => {
                    if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
                        // Kept upstream connections are kept only for speed.
                        self.close_kept(link::worker_clear);
                    }
                    if let Some(pause) = accept_failed(self.ctx, &e) {
                        let _ = self.listen(false);
                        self.resume_at = Some(now + pause);
                    }
                    return;
                }
            }
        }
    }

    /// Register listener `which` again (its wait-queue entry goes to the back): see `accept`.
    fn requeue_listener(&mut self, which: usize) {
        if !self.listening {
            return;
        }
        let fd = self.listeners[which].as_raw_fd();
        let _ = self.poller.delete(fd);
        if let Err(e) = self
            .poller
            .add(fd, LISTENER_BASE + which as u64, READ, true)
        {
            tracing::warn!("cannot watch the listener again: {e}; accepting stops");
            self.listening = false;
        }
    }

    fn open(&mut self, sock: Socket, peer: Peer, now: Instant) {
        let fd = sock.as_raw_fd();
        if !self.poller.fits(fd) {
            tracing::warn!(
                "closing the connection from {}: its descriptor {fd} is beyond what select can \
                 watch ({}); use --poller epoll or poll for this many connections",
                peer.remote,
                crate::sys::FD_SETSIZE
            );
            let _ = sock.shutdown(std::net::Shutdown::Both);
            self.cap.give_back(1);
            return;
        }
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot {
                gen: 0,
                entry: None,
            });
            self.slots.len() - 1
        });
        let tok = token(index, self.slots[index].gen, 0);
        let wake_queued = Arc::new(AtomicBool::new(false));
        let waker = {
            let (q, flag) = (Arc::clone(&self.wakes), Arc::clone(&wake_queued));
            Waker::new(move || {
                if !flag.swap(true, Ordering::AcqRel) {
                    let mut p = q.pending.lock().unwrap_or_else(|e| e.into_inner());
                    let first = p.is_empty();
                    p.push(tok);
                    drop(p);
                    if first {
                        q.fd.notify();
                    }
                }
            })
        };
        let service = &self.ctx.service;
        let opened =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| service.open(&peer, waker)));
        let Ok(session) = opened else {
            tracing::error!("opening a session for {} panicked; closing it", peer.remote);
            self.retire_unregistered(index);
            return;
        };
        let mut conn = Conn::new(sock, session, self.limits, now);
        conn.use_worker_pool();
        let tls = self.ctx.opts.tls.as_ref().and_then(|t| t.for_peer(&peer));
        if let Some(tls) = tls {
            conn.use_tls(tls);
        }
        conn.guarded(|c| c.open(now));
        if self.grace_until.is_some() {
            conn.guarded(|c| c.shutdown(now));
        }
        // Most clients speak at once (an HTTP request follows the handshake's last ACK): read
        // now instead of after a trip through the poller. A connection answered and closed by
        // this read is never registered at all. Not a TLS one: its first read is a handshake
        // (a signature, some 150 µs), and a burst of them done here, in the accept loop, would
        // keep every request already in flight waiting; the poller gives them turns.
        if tls.is_none() {
            conn.guarded(|c| c.ready(now, true, false, false));
        }
        if conn.is_closed() {
            self.retire_unregistered(index);
            return;
        }
        let interest = conn.interest();
        if let Err(e) = self.poller.add(fd, tok, interest, false) {
            tracing::warn!(
                "dropping the connection from {}: cannot watch it: {e}",
                peer.remote
            );
            // The session (and any waker it handed out) is gone: retire the token.
            self.retire_unregistered(index);
            return;
        }
        self.slots[index].entry = Some(Entry {
            conn,
            interest,
            scheduled: None,
            wake_queued,
        });
        self.live += 1;
        self.update(index);
    }

    /// Give back a slot whose connection ended before it was registered with the poller; its
    /// token is retired, so a waker the session handed out names nothing.
    fn retire_unregistered(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        slot.gen = (slot.gen + 1) & GEN_MASK;
        self.free.push(index);
        self.cap.give_back(1);
    }

    /// The entry a token names, if it is still the same connection.
    fn lookup(&mut self, tok: u64) -> Option<usize> {
        let (index, gen, _) = split(tok);
        match self.slots.get(index) {
            Some(s) if s.gen == gen && s.entry.is_some() => Some(index),
            _ => None,
        }
    }

    /// The connection `tok` names is a TLS one not yet read from (see [`Worker::run`]).
    fn awaiting_hello(&self, tok: u64) -> bool {
        let (index, gen, _) = split(tok);
        self.slots
            .get(index)
            .filter(|s| s.gen == gen)
            .and_then(|s| s.entry.as_ref())
            .is_some_and(|e| e.conn.tls_awaiting_hello())
    }

    fn ready(&mut self, tok: u64, ev: &Event, now: Instant) {
        let Some(i) = self.lookup(tok) else {
            return;
        };
        if let Some(e) = self.slots[i].entry.as_mut() {
            e.conn
                .guarded(|c| c.ready(now, ev.readable, ev.writable, ev.hup));
        }
        self.update(i);
    }

    /// A link descriptor is ready: its connection's, or a kept one in the pool that stirred
    /// (the upstream closed it, or sent what nobody asked for), which is closed.
    fn link_ready(&mut self, fd: u64, ev: &Event, now: Instant) {
        let fd = fd as RawFd;
        match self
            .link_owner
            .get(fd as usize)
            .copied()
            .unwrap_or_default()
        {
            LinkOwner::Conn { since, .. } if since == self.round => {}
            LinkOwner::Conn { token, sub, .. } => {
                let Some(i) = self.lookup(token) else {
                    return;
                };
                if let Some(e) = self.slots[i].entry.as_mut() {
                    e.conn
                        .guarded(|c| c.link_ready(sub, now, ev.readable, ev.writable, ev.hup));
                }
                self.update(i);
            }
            LinkOwner::Pooled => {
                // Forgotten as it is closed: the number may be reused at once.
                let _ = if link::worker_discard(fd) {
                    self.poller.forget_closing(fd)
                } else {
                    self.poller.delete(fd)
                };
                self.set_owner(fd, LinkOwner::None);
            }
            LinkOwner::None => {
                // A report queued before the descriptor was forgotten: nothing to do.
            }
        }
    }

    /// Close kept upstream connections with `close` (which names the descriptors it closed
    /// that the poller watches) and forget them.
    fn close_kept(&mut self, close: fn(&mut Vec<RawFd>)) {
        let mut closed = std::mem::take(&mut self.kept_closed);
        close(&mut closed);
        for fd in closed.drain(..) {
            let _ = self.poller.forget_closing(fd);
            self.set_owner(fd, LinkOwner::None);
        }
        self.kept_closed = closed;
    }

    fn set_owner(&mut self, fd: RawFd, owner: LinkOwner) {
        let Ok(i) = usize::try_from(fd) else { return };
        if i >= self.link_owner.len() {
            if owner == LinkOwner::None {
                return;
            }
            self.link_owner.resize(i + 1, LinkOwner::None);
        }
        self.link_owner[i] = owner;
    }

    fn deliver_wakes(&mut self, now: Instant) {
        self.wakes.fd.drain();
        let mut batch = std::mem::take(&mut self.wake_batch);
        std::mem::swap(
            &mut batch,
            &mut *self.wakes.pending.lock().unwrap_or_else(|e| e.into_inner()),
        );
        for tok in batch.drain(..) {
            let Some(i) = self.lookup(tok) else {
                continue;
            };
            if let Some(e) = self.slots[i].entry.as_mut() {
                e.wake_queued.store(false, Ordering::Release);
                e.conn.guarded(|c| c.wake(now));
            }
            self.update(i);
        }
        self.wake_batch = batch;
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((t, tok))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(i) = self.lookup(tok) else {
                continue;
            };
            let Some(e) = self.slots[i].entry.as_mut() else {
                continue;
            };
            if e.scheduled != Some(t) {
                continue; // superseded by an earlier deadline that already ran
            }
            e.scheduled = None;
            e.conn.guarded(|c| c.timers(now));
            self.update(i);
        }
    }

    /// After anything happened to connection `i`: close it if it is done, else bring the
    /// poller's interest and the timer heap up to date.
    fn update(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let Some(e) = slot.entry.as_mut() else {
            return;
        };
        let tok = token(i, slot.gen, 0);
        let fd = e.conn.sock.as_raw_fd();
        if !e.conn.is_closed() {
            let want = e.conn.interest();
            if want != e.interest {
                match self.poller.modify(fd, tok, want) {
                    Ok(()) => e.interest = want,
                    Err(err) => {
                        tracing::warn!("closing a connection the poller refused: {err}");
                        e.conn.close();
                    }
                }
            }
        }
        if e.conn.has_links() {
            let round = self.round;
            Self::update_links(
                &mut self.poller,
                &mut self.link_owner,
                &mut e.conn,
                tok,
                round,
            );
        }
        if e.conn.is_closed() {
            for lfd in e.conn.registered_link_fds() {
                let _ = self.poller.delete(lfd);
                if let Some(o) = self.link_owner.get_mut(lfd as usize) {
                    *o = LinkOwner::None;
                }
            }
            // The slot's socket is closed right below, when the entry is dropped.
            let _ = self.poller.forget_closing(fd);
            slot.entry = None;
            slot.gen = (slot.gen + 1) & GEN_MASK;
            self.free.push(i);
            self.live -= 1;
            self.cap.give_back(1);
            return;
        }
        if let Some(d) = e.conn.deadline() {
            if e.scheduled.is_none_or(|s| d < s) {
                e.scheduled = Some(d);
                self.timers.push(Reverse((d, tok)));
            }
        }
    }

    /// Bring the poller up to date with a connection's links: forget the ended ones (a kept
    /// connection is still open, so it must leave this poller before another worker takes
    /// it), register new ones, change what changed. A descriptor with nothing wanted is not
    /// watched at all, so a hang-up nobody reads cannot spin the loop.
    fn update_links(
        poller: &mut Poller,
        owners: &mut Vec<LinkOwner>,
        conn: &mut Conn<S::Session>,
        conn_token: u64,
        round: u32,
    ) {
        let mut own = |fd: RawFd, owner: LinkOwner| {
            let Ok(i) = usize::try_from(fd) else { return };
            if i >= owners.len() {
                owners.resize(i + 1, LinkOwner::None);
            }
            owners[i] = match (owners[i], owner) {
                // The same link as before: it keeps its round.
                (
                    old @ LinkOwner::Conn { token, sub, .. },
                    LinkOwner::Conn {
                        token: t, sub: u, ..
                    },
                ) if token == t && sub == u => old,
                (_, new) => new,
            };
        };
        conn.drain_closed_fds(|fd, open| {
            let _ = if open {
                poller.delete(fd)
            } else {
                poller.forget_closing(fd)
            };
            own(fd, LinkOwner::None);
        });
        conn.drain_pooled_fds(|fd| own(fd, LinkOwner::Pooled));
        let walked = conn.link_watches(|w| {
            let empty = !w.want.read && !w.want.write;
            let tok = LINK_BASE + w.fd as u64;
            let reg = match (w.registered, empty) {
                (None, true) => Ok(None),
                (Some(_), true) => poller.delete(w.fd).map(|()| None),
                (None, false) => poller.add(w.fd, tok, w.want, false).map(|()| Some(w.want)),
                (Some(r), false) if r == w.want => Ok(Some(r)),
                (Some(_), false) => poller.modify(w.fd, tok, w.want).map(|()| Some(w.want)),
            };
            if let Ok(r) = &reg {
                own(
                    w.fd,
                    match r {
                        Some(_) => LinkOwner::Conn {
                            token: conn_token,
                            sub: w.sub,
                            since: round,
                        },
                        None => LinkOwner::None,
                    },
                );
            }
            reg
        });
        if let Err(err) = walked {
            tracing::warn!("closing a connection whose upstream link the poller refused: {err}");
            conn.close();
        }
    }
}
#[cfg(test)]
mod tests {
    /// 15,000 idle keep-alive connections cost their slab slots plus nothing else (buffers are
    /// released when idle): keep a slot within what nginx spends per idle connection (about
    /// 0.5 KiB), so a field added here has to be worth it. (456: the TLS layer's pointer and
    /// the kept-connection pool's scope, which saves two epoll_ctl calls per proxied request.)
    #[test]
    fn an_http_connection_slot_stays_within_nginx_idle_cost() {
        use crate::protocol::http::HttpSession;
        let slot = std::mem::size_of::<super::Slot<HttpSession>>();
        assert!(slot <= 456, "a slot is {slot} bytes");
    }
}
