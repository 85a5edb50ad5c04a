//! The per-connection loop of the blocking models (iterative, threaded): one thread owns one
//! connection and sleeps in poll(2) on its descriptors (the socket, the session's wake eventfd,
//! the server's shutdown descriptor, and the session's outbound links) with the timeout set by
//! the nearest deadline.
//!
//! Polling rather than blocking in read(2) is what lets a thread-per-connection server honour
//! timers, wakes (chat broadcasts) and graceful shutdown; the socket itself is non-blocking so a
//! peer that stops reading can never wedge the thread in write(2): the send timeout closes it.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use socket2::Socket;

use super::connection::{Conn, Limits};
use super::Ctx;
use crate::protocol::{Peer, Service, Waker};
use crate::sys::{self, EventFd};

/// Serve one accepted (non-blocking) connection until it closes, or until the grace period
/// after shutdown ends.
///
/// `stopping` runs when this connection is the first to see the shutdown (the iterative model
/// stops its listeners there, since it is busy here rather than in its accept loop).
pub(crate) fn run_connection<S: Service>(
    ctx: &Ctx<S>,
    sock: Socket,
    peer: Peer,
    stopping: &dyn Fn(),
) {
    let wake = match EventFd::new() {
        Ok(w) => Arc::new(w),
        Err(e) => {
            tracing::warn!(
                "dropping a connection from {}: cannot create its eventfd: {e}",
                peer.remote
            );
            return;
        }
    };
    let waker = {
        let wake = Arc::clone(&wake);
        Waker::new(move || wake.notify())
    };
    let session = ctx.service.open(&peer, waker);
    let now = Instant::now();
    let mut conn = Conn::new(sock, session, Limits::from(&ctx.opts), now);
    if let Some(tls) = ctx.opts.tls.as_ref().and_then(|t| t.for_peer(&peer)) {
        conn.use_tls(tls);
    }
    conn.open(now);
    let mut grace_until = None;
    if ctx.shutdown.is_triggered() {
        stopping();
        ctx.begin_shutdown();
        grace_until = Some(now + ctx.opts.grace);
        conn.shutdown(now);
    }
    // Most clients speak at once: read before the first poll(2) (as the event loop does).
    conn.ready(now, true, false, false);
    let sock_fd = conn.sock.as_raw_fd();
    let mut subs: Vec<usize> = Vec::new();
    while !conn.is_closed() {
        let want = conn.interest();
        let mut events = 0;
        if want.read {
            events |= libc::POLLIN;
        }
        if want.write {
            events |= libc::POLLOUT;
        }
        // A negative fd is ignored by poll(2): once shutdown is seen it stops being watched.
        let shutdown_fd = if grace_until.is_some() {
            -1
        } else {
            ctx.shutdown.fd()
        };
        let mut fds = vec![
            sys::pollfd(sock_fd, events),
            sys::pollfd(wake.as_raw_fd(), libc::POLLIN),
            sys::pollfd(shutdown_fd, libc::POLLIN),
        ];
        // The session's links are watched here too, beside the socket (see `protocol::link`).
        subs.clear();
        let _ = conn.link_watches(|w| -> Result<_, ()> {
            let mut ev = 0;
            if w.want.read {
                ev |= libc::POLLIN;
            }
            if w.want.write {
                ev |= libc::POLLOUT;
            }
            // Nothing wanted: not watched at all (poll would still report a hang-up).
            fds.push(sys::pollfd(if ev == 0 { -1 } else { w.fd }, ev));
            subs.push(w.sub);
            Ok(w.registered)
        });
        let deadline = match (conn.deadline(), grace_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match sys::poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!("poll failed on a connection from {}: {e}", peer.remote);
                break;
            }
        }
        let now = Instant::now();
        if fds[2].revents != 0 {
            ctx.shutdown.mark();
            stopping();
            ctx.begin_shutdown();
            grace_until = Some(now + ctx.opts.grace);
            conn.shutdown(now);
        }
        if fds[1].revents != 0 {
            wake.drain();
            conn.wake(now);
        }
        for (f, &sub) in fds[3..].iter().zip(&subs) {
            let rev = f.revents;
            if rev != 0 {
                conn.link_ready(
                    sub,
                    now,
                    rev & libc::POLLIN != 0,
                    rev & libc::POLLOUT != 0,
                    rev & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0,
                );
            }
        }
        let rev = fds[0].revents;
        if rev != 0 {
            conn.ready(
                now,
                rev & libc::POLLIN != 0,
                rev & libc::POLLOUT != 0,
                rev & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0,
            );
        }
        conn.timers(now);
        if grace_until.is_some_and(|g| now >= g) && !conn.is_closed() {
            tracing::debug!(
                "grace period over; closing a connection from {}",
                peer.remote
            );
            ctx.cut_off(1);
            break;
        }
    }
}

/// The blocking models' accept: sleep in poll(2) on the listeners and the shutdown descriptor,
/// and return the next connection, or `None` once shutdown is triggered. Accept errors that mean
/// "someone else took it" are skipped; resource exhaustion backs off briefly instead of spinning.
pub(crate) fn accept_next<S: Service>(
    ctx: &Ctx<S>,
    listeners: &[crate::net::Listener],
) -> Result<Option<(Socket, Peer)>, super::ServeError> {
    loop {
        if ctx.shutdown.is_triggered() {
            return Ok(None);
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
                return Err(super::ServeError::Sys {
                    what: "poll",
                    source: e,
                })
            }
        }
        if fds[listeners.len()].revents != 0 {
            ctx.shutdown.mark();
            return Ok(None);
        }
        for (l, fd) in listeners.iter().zip(&fds) {
            if fd.revents == 0 {
                continue;
            }
            match l.accept() {
                Ok(conn) => return Ok(Some(conn)),
                Err(e) => {
                    if let Some(pause) = super::accept_failed(ctx, &e) {
                        std::thread::sleep(pause.min(std::time::Duration::from_millis(100)));
                    }
                }
            }
        }
    }
}
