//! The prefork model: `workers` processes forked after binding (and after dropping privileges),
//! each running the event loop of [`super::event`] on one thread; the parent only supervises.
//!
//! Each worker has a slot: a TCP listening socket of its own per address where the command
//! line bound one per worker with SO_REUSEPORT ([`Listener::for_worker`]), so the kernel spreads
//! new connections over the workers by a hash of the client's address, as nginx's `listen ...
//! reuseport` does, and a burst does not land on whichever worker woke first. Sockets passed by
//! systemd and Unix sockets (Linux spreads no AF_UNIX connections) stay shared by all workers.
//! The parent keeps every slot's sockets open, so a dead worker's clients wait in its backlog
//! for the replacement, which takes the same slot. `--max-connections` is one count for the
//! whole server, in a page the workers share ([`Cap`]): a worker at the cap stops accepting,
//! and the parent gives back the slots of a worker that died.
//!
//! This is nginx's shape (a master and N single-threaded event-loop workers), not Apache's
//! classic prefork (one connection per process at a time). With one connection per process, two
//! workers are two clients: a third keep-alive client, or a chat client that stays connected,
//! waits in the backlog until one of the first two hangs up, so an idle keep-alive connection
//! starves everyone else. An event loop per process serves thousands of connections each and
//! keeps what prefork is for: a crash (or a `kill -9`) takes down one worker's connections, not
//! the server, and the parent starts a replacement.
//!
//! The parent forks before it starts any thread (a child of a threaded process inherits locks
//! held by threads it does not have); [`sys::fork`] refuses otherwise. It forwards SIGTERM to
//! the workers when SIGINT/SIGTERM arrive, waits up to the grace period for them, kills what is
//! left and reaps everything before returning.
//!
//! Background work on the certificates (ACME, [`super::TlsSettings::background`]) runs in one
//! more child of its own, since the supervisor starts no thread: its new certificates reach
//! the workers as a SIGHUP to the supervisor, which rereads them and passes it on, as for a
//! reload asked by hand. It is restarted if it dies, and stopped with the workers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cap::Cap;
use super::event;
use super::hangup;
use super::{Ctx, ServeError, Shutdown};
use crate::net::Listener;
use crate::protocol::Service;
use crate::sys::{self, Fork};

/// A worker that dies sooner than this after starting is restarted only after this long, so a
/// worker that crashes at once cannot turn the supervisor into a fork loop.
const RESPAWN_BACKOFF: Duration = Duration::from_secs(1);

/// How often the supervisor looks for dead workers.
const TICK: Duration = Duration::from_millis(50);

pub(crate) fn run<S: Service>(
    ctx: Arc<Ctx<S>>,
    listeners: Vec<Listener>,
) -> Result<(), ServeError> {
    let n = ctx.opts.workers.max(1);
    let slots = Slots::new(&ctx, &listeners, n)?;
    let parent = sys::getpid();
    // pid → when it started, and its slot.
    let mut workers: HashMap<libc::pid_t, (Instant, usize)> = HashMap::new();
    // Restarts waiting out the backoff, with the slot of the worker they replace.
    let mut due: Vec<(Instant, usize)> = Vec::new();
    // SIGHUP (with TLS): reread here, then pass it on; see `hangup`.
    let hup = match ctx.opts.tls.as_ref().and_then(|t| t.reload.clone()) {
        Some(r) => Some((
            r,
            hangup::Flag::install().map_err(|e| ServeError::Sys {
                what: "installing the SIGHUP handler",
                source: e,
            })?,
        )),
        None => None,
    };
    let hup_flag = hup.as_ref().map(|(_, f)| f);
    let mut background = spawn_background(&ctx, parent)?;
    for i in 0..n {
        match spawn(&ctx, &slots, i, parent, hup_flag) {
            Ok(pid) => {
                workers.insert(pid, (Instant::now(), i));
            }
            Err(e) => {
                workers.extend(background.map(|pid| (pid, (Instant::now(), 0))));
                stop_all(&ctx, &mut workers);
                return Err(e);
            }
        }
    }
    tracing::info!(
        "prefork: {n} worker process{} started",
        if n == 1 { "" } else { "es" }
    );
    while !ctx.shutdown.wait_timeout(TICK) {
        if let Some((r, flag)) = &hup {
            // A reload that fails here is not passed on: the workers keep what they have.
            if flag.take() && hangup::reload(r, true) {
                for pid in workers.keys() {
                    let _ = sys::kill(*pid, libc::SIGHUP);
                }
            }
        }
        loop {
            match sys::try_reap() {
                Ok(Some((pid, how))) => {
                    if background == Some(pid) {
                        tracing::warn!(
                            "the certificate renewal process {pid} ended ({how}); starting another"
                        );
                        background = None;
                        if !ctx.shutdown.is_triggered() {
                            std::thread::sleep(RESPAWN_BACKOFF);
                            background = spawn_background(&ctx, parent).unwrap_or_else(|e| {
                                tracing::warn!("{e}; certificates will not be renewed");
                                None
                            });
                        }
                    }
                    if let Some((started, slot)) = workers.remove(&pid) {
                        // Its connections died with it: their slots are everyone's again.
                        slots.forget(slot);
                        let soon = started.elapsed() < RESPAWN_BACKOFF;
                        tracing::warn!(
                            "prefork worker {pid} ended ({how}); starting another{}",
                            if soon { " in a second" } else { "" }
                        );
                        let at = if soon {
                            Instant::now() + RESPAWN_BACKOFF
                        } else {
                            Instant::now()
                        };
                        due.push((at, slot));
                    }
                }
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("waitpid failed: {e}");
                    break;
                }
            }
        }
        let now = Instant::now();
        let mut still = Vec::new();
        for (t, slot) in due.drain(..) {
            if t > now || ctx.shutdown.is_triggered() {
                still.push((t, slot));
                continue;
            }
            match spawn(&ctx, &slots, slot, parent, hup_flag) {
                Ok(pid) => {
                    workers.insert(pid, (Instant::now(), slot));
                }
                Err(e) => {
                    tracing::warn!("cannot start a prefork worker: {e}; trying again shortly");
                    still.push((now + RESPAWN_BACKOFF, slot));
                }
            }
        }
        due = still;
    }
    // New clients are refused from now on; the workers finish what they have.
    for l in &listeners {
        l.stop();
    }
    workers.extend(background.map(|pid| (pid, (Instant::now(), 0))));
    stop_all(&ctx, &mut workers);
    ctx.begin_shutdown();
    Ok(())
}

/// What each worker slot is given: its listening sockets, and its cell in the shared count.
struct Slots {
    /// Per slot, one socket per listener: its own where the listener was bound once per
    /// worker, a duplicate of the shared one elsewhere.
    listeners: Vec<Vec<Listener>>,
    /// Per listener: every worker watches the same socket.
    shared: Vec<bool>,
    /// One cell per slot: the connections its worker holds (see [`Cap`]).
    counts: sys::SharedCounters,
    /// `--max-connections`, for the whole server.
    max: usize,
    /// The most one worker can hold: what a process's descriptors hold.
    own_max: usize,
}

impl Slots {
    fn new<S: Service>(
        ctx: &Ctx<S>,
        listeners: &[Listener],
        n: usize,
    ) -> Result<Slots, ServeError> {
        let fail = |what| move |e| ServeError::Sys { what, source: e };
        let max = ctx.opts.max_connections;
        let own_max = sys::fd_limit().map_or(max, |l| super::process_room(&ctx.opts, l));
        let sets = (0..n)
            .map(|i| listeners.iter().map(|l| l.for_worker(i)).collect())
            .collect::<std::io::Result<Vec<Vec<Listener>>>>()
            .map_err(fail("duplicating a listening socket for a prefork worker"))?;
        Ok(Slots {
            listeners: sets,
            shared: listeners.iter().map(|l| l.spread_over() < n).collect(),
            counts: sys::SharedCounters::new(n)
                .map_err(fail("mapping the prefork workers' shared connection count"))?,
            max,
            own_max,
        })
    }

    /// The worker in `slot` is gone, and its connections with it.
    fn forget(&self, slot: usize) {
        self.counts.cells()[slot].store(0, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Fork one worker for `slot`; in the child, run the event loop and exit (never return).
fn spawn<S: Service>(
    ctx: &Ctx<S>,
    slots: &Slots,
    slot: usize,
    parent: libc::pid_t,
    hup: Option<&hangup::Flag>,
) -> Result<libc::pid_t, ServeError> {
    fork_child("forking a prefork worker", || {
        worker(ctx, slots, slot, parent, hup)
    })
}

/// Fork; the child runs `child` and exits with its code (never returns).
fn fork_child(what: &'static str, child: impl FnOnce() -> i32) -> Result<libc::pid_t, ServeError> {
    // The child starts with SIGINT/SIGTERM (and SIGHUP) blocked and unblocks them only once its own handlers
    // are in place: a SIGTERM the parent forwards in between stays pending instead of reaching
    // the parent's inherited handlers (which would lose it) or the default action.
    let _ = sys::block_stop_signals(true);
    let forked = sys::fork();
    if !matches!(forked, Ok(Fork::Child)) {
        let _ = sys::block_stop_signals(false);
    }
    match forked {
        Err(e) => Err(ServeError::Sys { what, source: e }),
        Ok(Fork::Parent(pid)) => Ok(pid),
        Ok(Fork::Child) => sys::exit_child(child()),
    }
}

/// Fork the process for [`super::TlsSettings::background`], if there is such work: it runs
/// it (a thread of its own may start there) until told to stop, and makes new certificates
/// serve with a SIGHUP to the supervisor.
fn spawn_background<S: Service>(
    ctx: &Ctx<S>,
    parent: libc::pid_t,
) -> Result<Option<libc::pid_t>, ServeError> {
    let Some(start) = ctx.opts.tls.as_ref().and_then(|t| t.background.clone()) else {
        return Ok(None);
    };
    fork_child("forking the certificate renewal process", || {
        ctx.shutdown.forget_signals();
        match Shutdown::try_new() {
            Ok(shutdown) if shutdown.on_signals().is_ok() => {
                let _ = sys::block_stop_signals(false);
                match sys::die_with_parent(libc::SIGTERM, parent) {
                    Ok(false) => 0,
                    _ if ctx.shutdown.is_triggered() => 0,
                    _ => {
                        let notify: super::Reload = Arc::new(move || {
                            sys::kill(parent, libc::SIGHUP)
                                .map(|()| 1)
                                .map_err(|e| e.to_string())
                        });
                        match start(notify) {
                            Ok(()) => {
                                while !shutdown.wait_timeout(Duration::from_secs(3600)) {}
                                0
                            }
                            Err(why) => {
                                tracing::error!("cannot start the certificate renewal: {why}");
                                1
                            }
                        }
                    }
                }
            }
            _ => {
                tracing::error!("the certificate renewal process cannot handle signals");
                1
            }
        }
    })
    .map(Some)
}

/// The child's life: its own shutdown signal and handlers, one event loop, an exit code.
fn worker<S: Service>(
    ctx: &Ctx<S>,
    slots: &Slots,
    slot: usize,
    parent: libc::pid_t,
    hup: Option<&hangup::Flag>,
) -> i32 {
    // The parent's handlers write to the parent's shutdown pipe; a worker's SIGTERM is its own.
    ctx.shutdown.forget_signals();
    let shutdown = match Shutdown::try_new() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("prefork worker cannot create its shutdown signal: {e}");
            return 1;
        }
    };
    if let Err(e) = shutdown.on_signals() {
        tracing::error!("prefork worker cannot install its signal handlers: {e}");
        return 1;
    }
    // The parent's SIGHUP flag is no use here: a thread of ours rereads on SIGHUP.
    let _rereads = match (hup, ctx.opts.tls.as_ref().and_then(|t| t.reload.as_ref())) {
        (Some(flag), Some(r)) => {
            flag.forget();
            match hangup::Watcher::start(r, false) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::error!("prefork worker cannot watch for SIGHUP: {e}");
                    return 1;
                }
            }
        }
        _ => None,
    };
    // Signals blocked across the fork (see `spawn`) are delivered to our handlers now.
    let _ = sys::block_stop_signals(false);
    if ctx.shutdown.is_triggered() {
        // The supervisor was already stopping when it forked us.
        return 0;
    }
    // A supervisor killed with SIGKILL cannot forward anything: have the kernel tell us.
    match sys::die_with_parent(libc::SIGTERM, parent) {
        Ok(true) => {}
        Ok(false) => return 0,
        Err(e) => tracing::warn!("prefork worker cannot watch its parent: {e}"),
    }
    let mut opts = ctx.opts.clone();
    opts.workers = 1;
    let mut child = Ctx::new(Arc::clone(&ctx.service), &opts, shutdown);
    child.announce_stop = false;
    let cap = Cap::new(slots.counts.cells(), slot, slots.max, slots.own_max);
    let listeners = &slots.listeners[slot];
    let code = match event::run_worker(&child, listeners, &slots.shared, cap, false) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("prefork worker {} failed: {e}", sys::getpid());
            1
        }
    };
    child.report_cut_off();
    // A worker exits without returning to `serve`: the service's last work is done here.
    child.service.on_stopped();
    code
}

/// Forward SIGTERM, wait up to the grace period (and a little) for the workers, then SIGKILL
/// whatever is left, and reap everything.
fn stop_all<S: Service>(ctx: &Ctx<S>, workers: &mut HashMap<libc::pid_t, (Instant, usize)>) {
    for pid in workers.keys() {
        let _ = sys::kill(*pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + ctx.opts.grace + Duration::from_secs(2);
    while !workers.is_empty() {
        match sys::try_reap() {
            Ok(Some((pid, _))) => {
                workers.remove(&pid);
                continue;
            }
            Ok(None) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break, // ECHILD: nothing left to reap
        }
        if Instant::now() >= deadline {
            for pid in workers.keys() {
                tracing::warn!(
                    "prefork worker {pid} did not stop within the grace period; killing it"
                );
                let _ = sys::kill(*pid, libc::SIGKILL);
            }
            // SIGKILL cannot be ignored: reap them all (blocking briefly).
            let until = Instant::now() + Duration::from_secs(2);
            while !workers.is_empty() && Instant::now() < until {
                match sys::try_reap() {
                    Ok(Some((pid, _))) => {
                        workers.remove(&pid);
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                    Err(_) => break,
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
