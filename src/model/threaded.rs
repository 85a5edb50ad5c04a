//! The threaded model: a thread per connection, at most `max_connections` at once. At the cap
//! the acceptor stops accepting (further clients wait in the listen backlog) instead of creating
//! threads without bound.

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
    'serve: loop {
        // Wait for a free slot before accepting: at the cap, clients queue in the backlog.
        {
            let mut n = slots.active.lock().unwrap_or_else(|e| e.into_inner());
            while *n >= max {
                if ctx.shutdown.is_triggered() {
                    break 'serve;
                }
                n = slots
                    .freed
                    .wait_timeout(n, Duration::from_millis(50))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        if ctx.shutdown.is_triggered() {
            break;
        }
        let Some((sock, peer)) = blocking::accept_next(&ctx, &listeners)? else {
            break;
        };
        *slots.active.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let guard = SlotGuard(Arc::clone(&slots));
        let ctx2 = Arc::clone(&ctx);
        let spawned = std::thread::Builder::new()
            .name("tincan-conn".into())
            .stack_size(STACK_SIZE)
            .spawn(move || {
                let _guard = guard;
                blocking::run_connection(&ctx2, sock, peer, &|| {});
            });
        if let Err(e) = spawned {
            // The closure (socket and guard) was dropped: the client sees a close.
            tracing::warn!("cannot start a thread for a connection: {e}; closing it");
            std::thread::sleep(Duration::from_millis(10));
        }
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
    Ok(())
}
