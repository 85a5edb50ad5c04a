//! The iterative model: one connection at a time, as in the first seeds' `while True: accept`.
//! Others wait in the listen backlog. Simple and fair only to the patient; here for teaching and
//! for comparison.

use std::time::Duration;

use super::{accept_failed, blocking, Ctx};
use crate::net::Listener;
use crate::protocol::Service;
use crate::sys;
use std::os::fd::AsRawFd;

use super::ServeError;

pub(crate) fn run<S: Service>(ctx: &Ctx<S>, listeners: Vec<Listener>) -> Result<(), ServeError> {
    for l in &listeners {
        l.set_nonblocking(true).map_err(|e| ServeError::Sys {
            what: "making a listener non-blocking",
            source: e,
        })?;
    }
    'serve: while !ctx.shutdown.is_triggered() {
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
            match l.accept() {
                Ok((sock, peer)) => {
                    // A session that panics loses its own connection, not the server.
                    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        blocking::run_connection(ctx, sock, peer, &|| {
                            for l in &listeners {
                                l.stop();
                            }
                        })
                    }));
                    if served.is_err() {
                        tracing::error!("a session panicked; its connection was closed");
                    }
                    // One at a time: go back to poll, which also notices a shutdown.
                    continue 'serve;
                }
                Err(e) => {
                    if let Some(pause) = accept_failed(&e) {
                        std::thread::sleep(pause.min(Duration::from_millis(100)));
                    }
                }
            }
        }
    }
    drop(listeners);
    ctx.begin_shutdown();
    Ok(())
}
