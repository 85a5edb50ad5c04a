//! The threaded model: a thread per connection, at most `max_connections` at once. At the cap
//! the acceptor stops accepting (further clients wait in the listen backlog) instead of creating
//! threads without bound.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{accept_failed, blocking, Ctx, ServeError};
use crate::net::Listener;
use crate::protocol::Service;
use crate::sys;

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
    for l in &listeners {
        l.set_nonblocking(true).map_err(|e| ServeError::Sys {
            what: "making a listener non-blocking",
            source: e,
        })?;
    }
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
        let mut fds: Vec<libc::pollfd> = listeners
            .iter()
            .map(|l| sys::pollfd(l.as_raw_fd(), libc::POLLIN))
            .collect();
        fds.push(sys::pollfd(ctx.shutdown.fd(), libc::POLLIN));
        match sys::poll(&mut fds, None) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(ServeError::Sys {
                    what: "poll",
                    source: e,
                })
            }
        }
        if fds[listeners.len()].revents != 0 {
            ctx.shutdown.mark();
            break;
        }
        for (l, fd) in listeners.iter().zip(&fds) {
            if fd.revents == 0 {
                continue;
            }
            let (sock, peer) = match l.accept() {
                Ok(c) => c,
                Err(e) => {
                    if let Some(pause) = accept_failed(&e) {
                        std::thread::sleep(pause);
                    }
                    continue;
                }
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
            // Re-check the cap before the next accept.
            continue 'serve;
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
