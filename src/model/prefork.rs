//! The prefork model: `workers` processes forked after binding (and after dropping privileges),
//! each running the event loop of [`super::event`] on one thread over the shared listening
//! sockets; the parent only supervises.
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

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    // The connection cap is per server; each process enforces its share, and the shares add
    // up to the cap exactly (10 over 4 workers: 3, 3, 2, 2), one at least.
    let (cap, shares) = (ctx.opts.max_connections, n);
    let share = |i: usize| (cap / shares + usize::from(i < cap % shares)).max(1);
    let parent = sys::getpid();
    // pid → when it started, and its share of the cap.
    let mut workers: HashMap<libc::pid_t, (Instant, usize)> = HashMap::new();
    // Restarts waiting out the backoff, with the share of the worker they replace.
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
    for i in 0..n {
        match spawn(&ctx, &listeners, share(i), parent, hup_flag) {
            Ok(pid) => {
                workers.insert(pid, (Instant::now(), share(i)));
            }
            Err(e) => {
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
                    if let Some((started, max)) = workers.remove(&pid) {
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
                        due.push((at, max));
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
        for (t, max) in due.drain(..) {
            if t > now || ctx.shutdown.is_triggered() {
                still.push((t, max));
                continue;
            }
            match spawn(&ctx, &listeners, max, parent, hup_flag) {
                Ok(pid) => {
                    workers.insert(pid, (Instant::now(), max));
                }
                Err(e) => {
                    tracing::warn!("cannot start a prefork worker: {e}; trying again shortly");
                    still.push((now + RESPAWN_BACKOFF, max));
                }
            }
        }
        due = still;
    }
    // New clients are refused from now on; the workers finish what they have.
    for l in &listeners {
        l.stop();
    }
    stop_all(&ctx, &mut workers);
    ctx.begin_shutdown();
    Ok(())
}

/// Fork one worker; in the child, run the event loop and exit (never return).
fn spawn<S: Service>(
    ctx: &Ctx<S>,
    listeners: &[Listener],
    max: usize,
    parent: libc::pid_t,
    hup: Option<&hangup::Flag>,
) -> Result<libc::pid_t, ServeError> {
    // The child starts with SIGINT/SIGTERM (and SIGHUP) blocked and unblocks them only once its own handlers
    // are in place: a SIGTERM the parent forwards in between stays pending instead of reaching
    // the parent's inherited handlers (which would lose it) or the default action.
    let _ = sys::block_stop_signals(true);
    let forked = sys::fork();
    if !matches!(forked, Ok(Fork::Child)) {
        let _ = sys::block_stop_signals(false);
    }
    match forked {
        Err(e) => Err(ServeError::Sys {
            what: "forking a prefork worker",
            source: e,
        }),
        Ok(Fork::Parent(pid)) => Ok(pid),
        Ok(Fork::Child) => {
            let code = worker(ctx, listeners, max, parent, hup);
            sys::exit_child(code)
        }
    }
}

/// The child's life: its own shutdown signal and handlers, one event loop, an exit code.
fn worker<S: Service>(
    ctx: &Ctx<S>,
    listeners: &[Listener],
    max: usize,
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
    let code = match event::run_worker(&child, listeners, &AtomicUsize::new(0), max, false) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("prefork worker {} failed: {e}", sys::getpid());
            1
        }
    };
    // A worker exits without returning to `serve`: the service's last work is done here.
    child.report_cut_off();
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
