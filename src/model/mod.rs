//! The concurrency drivers: they own sockets, readiness, timers, buffers and shutdown, and know
//! nothing of any protocol. Each drives any [`Service`] through the same [`Session`] calls, so a
//! protocol is written once and runs under every model.
//!
//! - [`Model::Iterative`]: one connection at a time (the tutorials' first loop).
//! - [`Model::Threaded`]: a thread per connection, capped by `max_connections`.
//! - [`Model::Prefork`]: worker processes, each accepting on a socket of its own per TCP
//!   address (SO_REUSEPORT) under one shared connection cap; the parent supervises.
//! - [`Model::Event`]: event-loop threads, each with its own poller (epoll, poll or select).
//!
//! What every driver does the same way (one state machine, `connection.rs`, fed by all four):
//! - reads up to 16 KiB at a time into the session's [`ReadBuf`] and calls `on_input`; stops
//!   reading while the outbox holds more than `high_water` bytes;
//! - writes with `writev` over the leading in-memory chunks and `sendfile` for file regions; a
//!   file that ends early closes the connection (never a wrong length on the wire);
//! - the `wake_at` of the *last* [`Next`] is the session's deadline: every `Continue` replaces
//!   it, so a session re-states its deadline from whichever call returns;
//! - `CloseAfterFlush`: flush, `shutdown(SHUT_WR)`, read and discard until EOF or `linger`, then
//!   close (so the peer reads the answer, not a reset); `CloseAfterReply`: flush and close, with
//!   no lingering read unless the last read filled the buffer; `Close`: close now;
//! - no write progress for `send_timeout` while output is queued: close;
//! - graceful shutdown: stop accepting, [`Service::on_shutdown`] once, then
//!   [`Session::on_shutdown`] on each open session, then keep driving until they close or `grace`
//!   passes; a Unix socket file the server created is removed when [`serve`] returns;
//! - a session that panics loses its own connection only.
//! - with [`ServeOptions::tls`], every connection speaks TLS (`tls.rs`, rustls between the
//!   socket and the session): the session sees plaintext, file regions are read and
//!   encrypted in pieces, or, where the kernel has TLS, sent with `sendfile` after the
//!   records move into the kernel (`tls/kernel.rs`); SIGHUP rereads its certificates
//!   (`hangup.rs`; prefork's parent passes it on to the workers); background work on them
//!   (ACME, [`TlsSettings::background`]) starts once, on a thread, or under prefork in a child
//!   of its own;
//! - an outbound link to an https upstream speaks TLS (`link_tls.rs`, a rustls client around
//!   the link's socket), so sessions write and read plaintext there too.
//!
//! [`ReadBuf`]: crate::protocol::ReadBuf
//! [`Next`]: crate::protocol::Next
//! [`Session::on_shutdown`]: crate::protocol::Session::on_shutdown
//!
//! [`Service`]: crate::protocol::Service
//! [`Session`]: crate::protocol::Session

mod blocking;
mod cap;
mod connection;
mod event;
mod hangup;
mod io;
mod iterative;
mod link;
mod link_tls;
mod prefork;
mod shutdown;
mod threaded;
mod tls;
pub mod udp;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::Duration;

use crate::net::Listener;
use crate::protocol::{Needs, Service};

pub use shutdown::Shutdown;
pub use tls::{Background, Reload, TlsSettings, ACME_TLS_ALPN};

/// How connections are served. (The command line and the config file spell it by
/// [`name`](Model::name); parsing them is theirs, so the drivers depend on no CLI crate.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Model {
    /// One connection at a time.
    Iterative,
    /// A thread per connection.
    Threaded,
    /// Worker processes sharing the listening socket.
    Prefork,
    /// Event-loop threads (epoll, poll or select).
    Event,
}

impl Model {
    pub const ALL: [Model; 4] = [
        Model::Iterative,
        Model::Threaded,
        Model::Prefork,
        Model::Event,
    ];

    /// Can this model give a service what it `needs`?
    pub fn honours(self, needs: Needs) -> Result<(), Unfit> {
        let who = if needs.name.is_empty() {
            "this service"
        } else {
            needs.name
        };
        match self {
            Model::Iterative if needs.concurrent => Err(Unfit::OneAtATime(who)),
            Model::Prefork if needs.shared_memory => Err(Unfit::NoSharedMemory(who)),
            _ => Ok(()),
        }
    }

    /// The model `name` spells, if any.
    pub fn from_name(name: &str) -> Option<Model> {
        Model::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Model::Iterative => "iterative",
            Model::Threaded => "threaded",
            Model::Prefork => "prefork",
            Model::Event => "event",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The readiness API an event worker uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PollerKind {
    Epoll,
    Poll,
    Select,
}

impl PollerKind {
    pub const ALL: [PollerKind; 3] = [PollerKind::Epoll, PollerKind::Poll, PollerKind::Select];

    /// The poller `name` spells, if any.
    pub fn from_name(name: &str) -> Option<PollerKind> {
        PollerKind::ALL.into_iter().find(|p| p.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            PollerKind::Epoll => "epoll",
            PollerKind::Poll => "poll",
            PollerKind::Select => "select",
        }
    }
}

impl fmt::Display for PollerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The most worker processes or event-loop threads one server starts: beyond this, forking
/// or spawning only exhausts the machine (and a typo like `--workers 100000` should not).
pub const MAX_WORKERS: usize = 1024;

/// The longest `--busy-poll` window: a worker idle for longer than this should sleep.
pub const MAX_BUSY_POLL: Duration = Duration::from_millis(1);

/// Everything a driver needs to know, validated before any socket is touched.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub model: Model,
    /// Worker processes (prefork) or event-loop threads (event); ignored by the others.
    pub workers: usize,
    pub poller: PollerKind,
    /// Connections served at once by the whole server (threaded: threads; event and prefork:
    /// one count shared by the workers, see `cap`); more wait in the backlog.
    pub max_connections: usize,
    /// How long in-flight work may take to finish after SIGINT/SIGTERM.
    pub grace: Duration,
    /// A connection whose peer accepts no output for this long is closed.
    pub send_timeout: Duration,
    /// Reading from a connection pauses while its outbox holds more than this many bytes.
    pub high_water: usize,
    /// After a closing answer, how long input is read and discarded before the close.
    pub linger: Duration,
    /// Event and prefork workers: the longest an idle worker polls before it sleeps, while
    /// polling pays (see `event::spin`). Zero (the default): sleep at once.
    pub busy_poll: Duration,
    /// Descriptors a connection may hold besides its socket (HTTP: the file it is sending);
    /// counted where descriptors are scarce (under select, whose every socket must stay
    /// below FD_SETSIZE).
    pub files_per_connection: usize,
    /// Descriptors a connection may hold for its outbound streams at once (a proxied request:
    /// the upstream socket; a CGI request: the script's stdin and stdout pipes). Counted
    /// against the descriptor limit with the connection's own socket, as nginx counts upstream
    /// connections in `worker_connections`: past the limit an upstream could not be reached.
    pub links_per_connection: usize,
    /// Idle upstream connections one pool may keep (`--upstream-keepalive` × upstreams); there
    /// is a pool per event-loop thread (per process under threaded and prefork).
    pub kept_links: usize,
    /// Speak TLS on every listener (sessions still see plaintext): see `model::tls`.
    pub tls: Option<TlsSettings>,
}

impl From<ServeError> for crate::error::Error {
    fn from(e: ServeError) -> Self {
        crate::error::Error::Serve(Box::new(e))
    }
}

impl ServeOptions {
    /// Its event loops (event, or prefork's workers) wait with select(2), so every socket
    /// they watch must stay below FD_SETSIZE.
    pub fn watches_with_select(&self) -> bool {
        matches!(self.model, Model::Event | Model::Prefork) && self.poller == PollerKind::Select
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            model: Model::Event,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            poller: PollerKind::Epoll,
            max_connections: 10_000,
            grace: Duration::from_secs(10),
            send_timeout: Duration::from_secs(60),
            high_water: 256 * 1024,
            linger: Duration::from_secs(2),
            busy_poll: Duration::ZERO,
            files_per_connection: 0,
            links_per_connection: 0,
            kept_links: 0,
            tls: None,
        }
    }
}

/// Errors a driver reports; each reads as a sentence.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Options(#[from] OptionError),
    #[error(transparent)]
    Unfit(#[from] Unfit),
    #[error("{what} failed: {}", crate::sys::plain(source))]
    Sys {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A model that cannot give a service what it needs ([`Model::honours`]); each names the
/// service. The command line says which models to use instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unfit {
    /// The service needs every client connected at once; the iterative model serves one at a
    /// time.
    #[error(
        "{0} needs every client connected at once, and the iterative model serves one at a time"
    )]
    OneAtATime(&'static str),
    /// The service needs one memory for every connection; prefork's worker processes share
    /// none, so clients in different workers could not reach each other.
    #[error("{0} cannot run in prefork's worker processes: they share no memory, so clients in different workers could not reach each other")]
    NoSharedMemory(&'static str),
}

/// Options no driver can honour ([`ServeOptions::validate`]). The command line words them
/// with its flags' names; this layer knows none.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("at least 1 worker is needed")]
    NoWorkers,
    #[error("{0} workers is more than tincan runs ({MAX_WORKERS})")]
    TooManyWorkers(usize),
    #[error("at least 1 connection must be allowed")]
    NoConnections,
    #[error("the send timeout must be more than 0 seconds")]
    NoSendTimeout,
    /// Busy polling longer than [`MAX_BUSY_POLL`] (the value asked for, in µs).
    #[error("busy polling for {0} µs is more than {max} µs", max = MAX_BUSY_POLL.as_micros())]
    BusyPollTooLong(u128),
    #[error("the outbox high-water mark must be at least 1 byte")]
    NoHighWater,
}

impl ServeOptions {
    /// Refuse options no driver can honour.
    pub fn validate(&self) -> Result<(), OptionError> {
        if self.workers == 0 {
            return Err(OptionError::NoWorkers);
        }
        if self.workers > MAX_WORKERS {
            return Err(OptionError::TooManyWorkers(self.workers));
        }
        if self.max_connections == 0 {
            return Err(OptionError::NoConnections);
        }
        if self.send_timeout.is_zero() {
            return Err(OptionError::NoSendTimeout);
        }
        if self.busy_poll > MAX_BUSY_POLL {
            return Err(OptionError::BusyPollTooLong(self.busy_poll.as_micros()));
        }
        if self.high_water == 0 {
            return Err(OptionError::NoHighWater);
        }
        Ok(())
    }
}

/// What every driver shares: the service, the options, the shutdown signal, and the promise to
/// call [`Service::on_shutdown`] exactly once.
pub(crate) struct Ctx<S: Service> {
    pub service: Arc<S>,
    pub opts: ServeOptions,
    pub shutdown: Shutdown,
    service_told: Once,
    /// Say on stderr that a stop has begun (off in prefork workers: their parent says it).
    pub announce_stop: bool,
    /// Connections closed because the grace period ran out before they finished.
    cut_off: std::sync::atomic::AtomicUsize,
}

impl<S: Service> Ctx<S> {
    pub(crate) fn new(service: Arc<S>, opts: &ServeOptions, shutdown: Shutdown) -> Ctx<S> {
        Ctx {
            service,
            opts: opts.clone(),
            shutdown,
            service_told: Once::new(),
            announce_stop: true,
            cut_off: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// `n` connections were closed unfinished when the grace period ran out.
    pub fn cut_off(&self, n: usize) {
        self.cut_off
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Say in one line how many connections the grace period cut off, if any: a stop that
    /// drops clients mid-answer must not be silent.
    pub fn report_cut_off(&self) {
        let n = self.cut_off.swap(0, std::sync::atomic::Ordering::Relaxed);
        if n > 0 {
            let s = if n == 1 { "" } else { "s" };
            tracing::warn!(
                "the grace period ({} s, --grace) ran out: closed {n} connection{s} that had not \
                 finished",
                self.opts.grace.as_secs_f64()
            );
        }
    }

    /// Graceful shutdown has begun: tell the service, once, before any session hears of it
    /// (callers on other threads block here until it has returned).
    pub fn begin_shutdown(&self) {
        self.service_told.call_once(|| {
            // A stop that waits on a connection mid-request should not look like a hang.
            if self.announce_stop {
                tracing::info!(
                    "stopping: open connections have up to {} s (--grace) to finish; a second \
                 Ctrl-C stops at once",
                    self.opts.grace.as_secs_f64()
                );
            }
            self.service.on_shutdown()
        });
    }
}

/// How often a driver paused at the connection cap looks at the listeners' backlog.
pub(crate) const BACKLOG_CHECK: Duration = Duration::from_secs(1);
/// The least time between two "waiting in the backlog" lines of one process.
const BACKLOG_NOTICE: Duration = Duration::from_secs(10);

/// At the connection cap `max`: say (at most every [`BACKLOG_NOTICE`]) how many clients wait in
/// the listeners' backlog, as nginx logs its refused accepts, so a saturated server is not
/// mistaken for a slow one.
pub(crate) fn tell_backlog(listeners: &[Listener], max: usize) {
    static AT_CAP: crate::logging::Throttle = crate::logging::Throttle::every(BACKLOG_NOTICE);
    let waiting: u32 = listeners
        .iter()
        .filter_map(|l| {
            crate::sys::accept_queue_len(std::os::fd::AsFd::as_fd(l))
                .ok()
                .flatten()
        })
        .sum();
    if waiting == 0 {
        return;
    }
    if let Some(skipped) = AT_CAP.admit() {
        let s = if waiting == 1 { "" } else { "s" };
        tracing::warn!(
            "{waiting} client{s} waiting in the backlog: all {max} connections \
             (--max-connections) are open; raise it (and `ulimit -n`) to serve more at once{}",
            crate::logging::more_like_it(skipped)
        );
    }
}

/// Decide what an accept(2) failure means. `None`: nothing to do (the connection went away
/// before we took it, or another worker took it). `Some(pause)`: out of descriptors or memory;
/// logged, and the caller backs off instead of spinning on a listener that stays readable. Out
/// of descriptors, the service is asked to close those it keeps only for speed.
pub(crate) fn accept_failed<S: Service>(ctx: &Ctx<S>, e: &std::io::Error) -> Option<Duration> {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::Interrupted | ErrorKind::ConnectionAborted => None,
        _ => match e.raw_os_error() {
            Some(libc::ECONNABORTED) | Some(libc::EPROTO) | Some(libc::EPERM) => None,
            code => {
                if matches!(code, Some(libc::EMFILE) | Some(libc::ENFILE)) {
                    ctx.service.on_out_of_descriptors();
                    // Kept upstream connections are kept only for speed too.
                    link::pool_clear();
                }
                // Once a second at most: a server out of descriptors fails every accept.
                static ACCEPT_FAILED: crate::logging::Throttle = crate::logging::Throttle::new();
                if let Some(skipped) = ACCEPT_FAILED.admit() {
                    let hint = match code {
                        Some(libc::EMFILE) | Some(libc::ENFILE) => {
                            "; clients wait in the backlog until a connection closes (raise \
                             `ulimit -n`, or lower --max-connections)"
                        }
                        _ => "; pausing new connections briefly",
                    };
                    tracing::warn!(
                        "cannot accept a connection: {}{hint}{}",
                        crate::sys::plain(e),
                        crate::logging::more_like_it(skipped)
                    );
                }
                Some(Duration::from_millis(50))
            }
        },
    }
}

/// Serve `service` on `listeners` under `opts.model` until SIGINT or SIGTERM, then shut down
/// gracefully. Returns once every worker has finished.
pub fn serve<S: Service>(
    listeners: Vec<Listener>,
    service: Arc<S>,
    opts: &ServeOptions,
) -> Result<(), ServeError> {
    opts.model.honours(service.needs())?;
    let shutdown = Shutdown::for_process().map_err(|e| ServeError::Sys {
        what: "installing the SIGINT/SIGTERM handlers",
        source: e,
    })?;
    serve_until(listeners, service, opts, shutdown)
}

/// Descriptors kept free for everything that is not a connection: listeners, pollers, open
/// files being served, log files, upstream sockets, a CGI child's pipes.
const FD_RESERVE: u64 = 64;

/// `opts` with `max_connections` lowered to what `fd_limit` descriptors can hold (a connection
/// costs its socket, its outbound streams, and under the threaded model also its wake
/// descriptor; the upstream pools come off the top; prefork's limit is per worker process), or
/// `None` when it already fits. Past the limit, accepted connections would be dropped, files
/// could not be opened and upstreams not reached; below it, extra clients wait in the backlog.
fn fit_to_descriptors(opts: &ServeOptions, fd_limit: u64) -> Option<ServeOptions> {
    let processes = if opts.model == Model::Prefork {
        opts.workers.max(1)
    } else {
        1
    };
    let room = descriptor_room(opts, fd_limit).saturating_mul(processes);
    let select_room = select_connections(opts).map(|n| n * processes);
    if let Some(sel) = select_room.filter(|&sel| sel < room && opts.max_connections > sel) {
        // select(2) cannot watch a descriptor at or past FD_SETSIZE: a connection given one
        // would be accepted only to be closed unanswered. Past the cap, clients wait in the
        // backlog instead.
        tracing::warn!(
            "--poller select watches descriptors below {} only; serving at most {sel} \
             connections at once (use --poller epoll or poll for more)",
            crate::sys::FD_SETSIZE
        );
        return Some(ServeOptions {
            max_connections: sel,
            ..opts.clone()
        });
    }
    if opts.max_connections <= room {
        return None;
    }
    let held = match opts.links_per_connection {
        0 => "",
        1 => ", and a proxied connection holds its upstream's too",
        _ => ", and a proxied or CGI connection holds its upstream's or script's too",
    };
    if opts.max_connections == ServeOptions::default().max_connections {
        // The default asked for more than fits: lowering it is the default's job, but the
        // operator learns the cap at start, not from clients left waiting.
        tracing::info!(
            "serving at most {room} connections at once: the descriptor limit is \
             {fd_limit}{held} (raise `ulimit -n` for more)"
        );
    } else {
        tracing::warn!(
            "--max-connections {} does not fit in the descriptor limit of {fd_limit}{held}; \
             serving at most {room} connections at once (raise `ulimit -n` to serve more)",
            opts.max_connections
        );
    }
    Some(ServeOptions {
        max_connections: room,
        ..opts.clone()
    })
}

/// Connections one process's `fd_limit` descriptors hold, after the reserve and the upstream
/// pools: a connection costs its socket, its outbound streams, and under the threaded model
/// also its wake descriptor.
fn descriptor_room(opts: &ServeOptions, fd_limit: u64) -> usize {
    let per_conn = 1 + opts.links_per_connection as u64 + u64::from(opts.model == Model::Threaded);
    let room = fd_limit.saturating_sub(descriptor_reserve(opts)) / per_conn;
    usize::try_from(room).unwrap_or(usize::MAX).max(1)
}

/// The most connections one process can hold at once (its descriptors, and under select what
/// stays below FD_SETSIZE): a prefork worker's own ceiling under the server's shared cap.
pub(crate) fn process_room(opts: &ServeOptions, fd_limit: u64) -> usize {
    let room = descriptor_room(opts, fd_limit);
    select_connections(opts).map_or(room, |sel| sel.min(room))
}

/// Descriptors a select(2) event loop leaves to a file cache (HTTP keeps large files open):
/// a quarter of FD_SETSIZE, as the cache takes a quarter of the descriptor limit elsewhere.
pub const SELECT_FILE_CACHE_FDS: usize = crate::sys::FD_SETSIZE / 4;

/// Connections one process can serve with a select(2) event loop (`None`: not select): every
/// socket it opens must stay below FD_SETSIZE, so after the reserve and the file cache's
/// share, and with the files connections hold (704 of 1024 for echo or chat, 352 for HTTP).
fn select_connections(opts: &ServeOptions) -> Option<usize> {
    opts.watches_with_select().then(|| {
        // A connection sends a file or waits on an upstream, not both at once.
        let held = opts.files_per_connection.max(opts.links_per_connection);
        crate::sys::FD_SETSIZE
            .saturating_sub(descriptor_reserve(opts) as usize + SELECT_FILE_CACHE_FDS)
            .max(1 + held)
            / (1 + held)
    })
}

/// Descriptors one process keeps for what is not a connection: [`FD_RESERVE`] and the idle
/// upstream connections of its pools (one per event-loop thread; one per process otherwise).
fn descriptor_reserve(opts: &ServeOptions) -> u64 {
    let pools = if opts.model == Model::Event {
        opts.workers.max(1)
    } else {
        1
    };
    FD_RESERVE + (opts.kept_links * pools) as u64
}

/// [`serve`] without signal handlers: runs until `shutdown` is triggered (tests, embedding).
pub fn serve_until<S: Service>(
    mut listeners: Vec<Listener>,
    service: Arc<S>,
    opts: &ServeOptions,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    opts.model.honours(service.needs())?;
    opts.validate()?;
    if listeners.is_empty() {
        return Err(ServeError::Refused("there is nothing to listen on".into()));
    }
    // Every connection costs a descriptor or two; the default soft limit (1024) is far below
    // what the hard limit allows.
    let fitted = crate::sys::raise_fd_limit()
        .ok()
        .and_then(|l| fit_to_descriptors(opts, l));
    let opts = fitted.as_ref().unwrap_or(opts);
    let unix_paths: Vec<PathBuf> = listeners
        .iter()
        .filter_map(|l| l.unix_path().map(PathBuf::from))
        .collect();
    // Sockets bound once per prefork worker (`net::bind_per_worker`) serve only prefork with
    // that many workers: any other driver watches one socket per address.
    let workers = if opts.model == Model::Prefork {
        opts.workers.max(1)
    } else {
        1
    };
    for l in listeners.iter_mut().filter(|l| l.spread_over() != workers) {
        l.unspread();
    }
    // Every model accepts without blocking: a listener that poll called readable may have lost
    // its connection to another worker (or to a reset) by the time accept runs.
    for l in &listeners {
        l.set_nonblocking(true).map_err(|e| ServeError::Sys {
            what: "making a listener non-blocking",
            source: e,
        })?;
    }
    let ctx = Arc::new(Ctx::new(service, opts, shutdown));
    // SIGHUP rereads the certificates (prefork's parent sees to its own; see `hangup`).
    let reload = opts.tls.as_ref().and_then(|t| t.reload.as_ref());
    let _rereads = match reload.filter(|_| opts.model != Model::Prefork) {
        Some(r) => Some(
            hangup::Watcher::start(r, true).map_err(|e| ServeError::Sys {
                what: "installing the SIGHUP handler",
                source: e,
            })?,
        ),
        None => None,
    };
    // Certificates kept fresh in the background (ACME): on a thread here, or under prefork in
    // a process of its own (see `prefork`).
    if let (Some(tls), true) = (opts.tls.as_ref(), opts.model != Model::Prefork) {
        if let (Some(start), Some(reload)) = (&tls.background, &tls.reload) {
            start(Arc::clone(reload)).map_err(|why| ServeError::Sys {
                what: "starting the certificate renewal",
                source: std::io::Error::other(why),
            })?;
        }
    }
    let r = match opts.model {
        Model::Iterative => iterative::run(&ctx, listeners),
        Model::Threaded => threaded::run(Arc::clone(&ctx), listeners),
        Model::Event => event::run(Arc::clone(&ctx), listeners),
        Model::Prefork => prefork::run(Arc::clone(&ctx), listeners),
    };
    ctx.service.on_stopped();
    // The socket files we created go with us (a forked worker never gets here).
    for p in unix_paths {
        let _ = std::fs::remove_file(p);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service's needs are refused by the models that cannot give them, in a sentence that
    /// names the service and what to use instead; everything else runs anywhere.
    #[test]
    fn models_refuse_what_they_cannot_honour_with_a_reason() {
        let room = Needs {
            name: "the chat room",
            concurrent: true,
            shared_memory: true,
        };
        assert_eq!(
            Model::Iterative.honours(room),
            Err(Unfit::OneAtATime("the chat room"))
        );
        assert_eq!(
            Model::Prefork.honours(room),
            Err(Unfit::NoSharedMemory("the chat room"))
        );
        assert!(Model::Event.honours(room).is_ok() && Model::Threaded.honours(room).is_ok());
        for m in Model::ALL {
            assert!(m.honours(Needs::default()).is_ok(), "{m}");
        }
    }

    fn with(model: Model, workers: usize, max: usize) -> ServeOptions {
        ServeOptions {
            model,
            workers,
            max_connections: max,
            ..ServeOptions::default()
        }
    }

    #[test]
    fn max_connections_is_lowered_to_what_the_descriptor_limit_holds() {
        let cap = |model, workers, max, limit| {
            fit_to_descriptors(&with(model, workers, max), limit).map(|o| o.max_connections)
        };
        // A thread per connection costs two descriptors: 20,000 hold 9,968 of them.
        assert_eq!(
            cap(Model::Threaded, 1, 10_000, 20_000),
            Some((20_000 - 64) / 2)
        );
        // An event loop costs one: 10,000 fit in 20,000.
        assert_eq!(cap(Model::Event, 4, 10_000, 20_000), None);
        assert_eq!(cap(Model::Event, 4, 10_000, 1024), Some(960));
        // Prefork's limit is per worker process.
        assert_eq!(cap(Model::Prefork, 2, 1_900, 1024), None);
        assert_eq!(cap(Model::Prefork, 2, 3_000, 1024), Some(1_920));
        // A proxied connection holds its upstream's socket too, and each event thread's pool
        // keeps its idle upstream connections: 20,000 hold (20,000 - 64 - 2 × 32) / 2.
        let proxy = |model, workers| ServeOptions {
            links_per_connection: 1,
            kept_links: 32,
            ..with(model, workers, 10_000)
        };
        let fit = |o: &ServeOptions| fit_to_descriptors(o, 20_000).map(|o| o.max_connections);
        assert_eq!(fit(&proxy(Model::Event, 2)), Some((20_000 - 64 - 64) / 2));
        assert_eq!(fit(&proxy(Model::Prefork, 2)), None);
        assert_eq!(
            fit(&proxy(Model::Threaded, 2)),
            Some((20_000 - 64 - 32) / 3)
        );
        // A CGI request holds the script's stdin and stdout.
        let cgi = ServeOptions {
            links_per_connection: 2,
            ..with(Model::Event, 1, 10_000)
        };
        assert_eq!(fit(&cgi), Some((20_000 - 64) / 3));
    }

    /// Under select, a connection past FD_SETSIZE would be accepted and closed unanswered:
    /// the cap keeps every descriptor below it (the reserve and the file cache's share
    /// aside), per process.
    #[test]
    fn select_caps_connections_below_fd_setsize_per_process() {
        let cap = |model, workers, max| {
            let o = ServeOptions {
                poller: PollerKind::Select,
                ..with(model, workers, max)
            };
            fit_to_descriptors(&o, 20_000).map(|o| o.max_connections)
        };
        assert_eq!(cap(Model::Event, 2, 10_000), Some(704));
        // An HTTP connection may hold the file it sends, too.
        let http = ServeOptions {
            poller: PollerKind::Select,
            files_per_connection: 1,
            ..with(Model::Event, 2, 10_000)
        };
        assert_eq!(
            fit_to_descriptors(&http, 20_000).map(|o| o.max_connections),
            Some(352)
        );
        assert_eq!(cap(Model::Event, 2, 704), None);
        assert_eq!(cap(Model::Prefork, 2, 10_000), Some(1_408));
        assert_eq!(
            cap(Model::Threaded, 2, 5_000),
            None,
            "select is not used there"
        );
    }
}
