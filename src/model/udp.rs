//! The datagram driver: `workers` threads per UDP socket answer datagrams with a
//! [`DatagramService`] until shutdown. A datagram is answered in one `send_to` or not at all,
//! so stopping never leaves anything half-sent and needs no grace period: each thread looks at
//! the shutdown flag between datagrams, and at least every [`SHUTDOWN_CHECK`].

use std::io;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use super::{ServeError, ServeOptions, Shutdown};
use crate::protocol::{DatagramService, PeerAddr};

/// How long a thread waits for a datagram before it looks whether the server is stopping.
const SHUTDOWN_CHECK: Duration = Duration::from_millis(200);

/// The largest datagram (UDP's 16-bit length).
const BUFFER: usize = 65_536;

/// Serve `sockets` with `service` until `shutdown` triggers.
pub fn serve<S: DatagramService>(
    sockets: Vec<UdpSocket>,
    service: Arc<S>,
    opts: &ServeOptions,
    shutdown: &Shutdown,
) -> Result<(), ServeError> {
    let sys = |what| move |e| ServeError::Sys { what, source: e };
    let mut workers = Vec::new();
    for socket in &sockets {
        socket
            .set_read_timeout(Some(SHUTDOWN_CHECK))
            .map_err(sys("setting the UDP socket's read timeout"))?;
        for _ in 0..opts.workers.max(1) {
            let socket = socket
                .try_clone()
                .map_err(sys("sharing the UDP socket with a worker"))?;
            let service = Arc::clone(&service);
            let shutdown = shutdown.clone();
            workers.push(std::thread::spawn(move || {
                worker(&socket, &*service, &shutdown)
            }));
        }
    }
    for w in workers {
        // A worker only ends by returning; a panic would be a bug, reported but not re-raised.
        if w.join().is_err() {
            tracing::error!("a UDP worker panicked");
        }
    }
    Ok(())
}

fn worker<S: DatagramService>(socket: &UdpSocket, service: &S, shutdown: &Shutdown) {
    let mut buf = vec![0; BUFFER];
    let mut answer = Vec::new();
    while !shutdown.is_triggered() {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                // E.g. an ICMP error left over from an earlier answer: not fatal to the service.
                tracing::debug!("UDP receive failed: {e}");
                continue;
            }
        };
        answer.clear();
        service.answer(&PeerAddr::Tcp(from), &buf[..n], &mut answer);
        if !answer.is_empty() {
            if let Err(e) = socket.send_to(&answer, from) {
                tracing::debug!(peer = %from, "UDP answer not sent: {e}");
            }
        }
    }
}
