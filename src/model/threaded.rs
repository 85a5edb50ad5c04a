//! The threaded model: a thread per connection, at most `max_connections` at once. At the cap
//! the acceptor stops accepting (further clients wait in the listen backlog) instead of creating
//! threads without bound. A new connection thread first accepts the next waiting connection, if
//! there is one, and starts its thread: on one core with a thousand busy connection threads, the
//! lone acceptor would get a thousandth of the CPU and leave a burst of clients unanswered.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{blocking, Ctx, ServeError};
use crate::net::Listener;
use crate::protocol::Service;

/// Stack for a connection thread: sessions are state machines, not deep recursions, so this is
/// plenty; it is virtual memory until touched.
const STACK_SIZE: usize = 256 * 1024;

/// How many connection threads are running, and a condition to wait for a free slot.
struct Slots {
    active: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    /// Take a slot if fewer than `max` are taken.
    fn take(self: &Arc<Slots>, max: usize) -> Option<SlotGuard> {
        let mut n = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SlotGuard(Arc::clone(self)))
    }
}

/// Held by a connection thread; frees its slot when dropped (even if the session panics).
struct SlotGuard(Arc<Slots>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut n = self.0.active.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        self.0.freed.notify_all();
    }
}

pub(crate) fn run<S: Service>(
    ctx: Arc<Ctx<S>>,
    listeners: Vec<Listener>,
) -> Result<(), ServeError> {
    let max = ctx.opts.max_connections.max(1);
    let slots = Arc::new(Slots {
        active: Mutex::new(0),
        freed: Condvar::new(),
    });
    let listeners = Arc::new(listeners);
    let mut backlog_check_at = Instant::now();
    'serve: loop {
        // Hold a free slot before accepting: at the cap, clients queue in the backlog.
        let guard = loop {
            if ctx.shutdown.is_triggered() {
                break 'serve;
            }
            if let Some(g) = slots.take(max) {
                break g;
            }
            let now = Instant::now();
            if now >= backlog_check_at {
                backlog_check_at = now + super::BACKLOG_CHECK;
                super::tell_backlog(&listeners, max);
            }
            let n = slots.active.lock().unwrap_or_else(|e| e.into_inner());
            drop(
                slots
                    .freed
                    .wait_timeout_while(n, Duration::from_millis(50), |n| *n >= max)
                    .unwrap_or_else(|e| e.into_inner()),
            );
        };
        let Some((sock, peer)) = blocking::accept_next(&ctx, &listeners)? else {
            break;
        };
        spawn(&ctx, &slots, &listeners, max, guard, sock, peer);
    }
    // Stop accepting at once: new clients are refused instead of waiting out the grace period.
    drop(listeners);
    ctx.begin_shutdown();
    // Each connection thread ends by itself within the grace period; wait for them.
    let limit = Instant::now() + ctx.opts.grace + Duration::from_secs(5);
    let mut n = slots.active.lock().unwrap_or_else(|e| e.into_inner());
    while *n > 0 {
        let left = limit.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::warn!(
                "{} connection threads did not finish after the grace period",
                *n
            );
            break;
        }
        n = slots
            .freed
            .wait_timeout(n, left.min(Duration::from_millis(100)))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    drop(n);
    ctx.report_cut_off();
    Ok(())
}

/// Start a thread for an accepted connection. Before it serves its own connection, the new
/// thread takes the next waiting one, if any, and starts a thread for that in turn: accepting
/// is passed along the chain of new threads, which the scheduler runs soon, instead of resting
/// on one acceptor that gets a thousandth of the core once a thousand connections are busy.
fn spawn<S: Service>(
    ctx: &Arc<Ctx<S>>,
    slots: &Arc<Slots>,
    listeners: &Arc<Vec<Listener>>,
    max: usize,
    guard: SlotGuard,
    sock: socket2::Socket,
    peer: crate::protocol::Peer,
) {
    let (ctx2, slots2, listeners2) = (Arc::clone(ctx), Arc::clone(slots), Arc::clone(listeners));
    let spawned = std::thread::Builder::new()
        .name("tincan-conn".into())
        .stack_size(STACK_SIZE)
        .spawn(move || {
            let _guard = guard;
            if let Some((next, next_peer, next_guard)) =
                take_waiting(&ctx2, &slots2, &listeners2, max)
            {
                spawn(
                    &ctx2,
                    &slots2,
                    &listeners2,
                    max,
                    next_guard,
                    next,
                    next_peer,
                );
            }
            drop((slots2, listeners2));
            blocking::run_connection(&ctx2, sock, peer, &|| {});
        });
    if let Err(e) = spawned {
        // The closure (socket and guard) was dropped: the client sees a close.
        tracing::warn!("cannot start a thread for a connection: {e}; closing it");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A connection already waiting on one of the listeners, with a slot for it; `None` when none
/// waits (the listeners are non-blocking), the cap is reached, or the server is stopping.
fn take_waiting<S: Service>(
    ctx: &Ctx<S>,
    slots: &Arc<Slots>,
    listeners: &[Listener],
    max: usize,
) -> Option<(socket2::Socket, crate::protocol::Peer, SlotGuard)> {
    if ctx.shutdown.is_triggered() {
        return None;
    }
    let guard = slots.take(max)?;
    for l in listeners {
        // Nothing waiting is the usual answer; any other failure the acceptor meets too, and
        // deals with.
        if let Ok((sock, peer)) = l.accept() {
            return Some((sock, peer, guard));
        }
    }
    None
}
