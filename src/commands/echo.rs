//! `tincan echo`: the echo service (RFC 862, the socket tutorial's and the book's framings) under any model, over TCP and
//! Unix sockets, or over UDP with `--udp`.
//!
//! The protocol itself is [`crate::protocol::echo`]; this runner validates the flags, binds, and
//! hands the service to the drivers. UDP has no connections for the drivers to run, so the small
//! datagram loop (`recv_from`, answer, `send_to`) lives here.

use std::io;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::cli::ServerArgs;
use crate::error::{Error, Result};
use crate::logging::{more_like_it, Throttle};
use crate::model::{ServeOptions, Shutdown};
use crate::protocol::echo::{EchoConfig, EchoService};
use crate::protocol::framing::{FrameError, Framing};
use crate::protocol::PeerAddr;

/// Where `tincan echo` listens unless told otherwise (RFC 862's port 7 needs root; see README).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7007";

/// How often a UDP worker blocked in `recv_from` looks at the shutdown flag.
const UDP_SHUTDOWN_CHECK: Duration = Duration::from_millis(200);

/// Room for the largest possible UDP datagram.
const UDP_BUFFER: usize = 65_536;

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  tincan echo                               RFC 862 echo on 127.0.0.1:7007
  tincan echo -l :7 --user nobody           the real port 7 (as root), then drop to nobody
  tincan echo --framing null --prefix-peer  the book's tincanchat echo server
  tincan echo --udp                         answer each datagram with the same bytes")]
pub struct EchoArgs {
    /// How messages are cut: raw (RFC 862: bytes back as they arrive), close (all back after the
    /// client half-closes), null (tincanchat: UTF-8 ending in NUL), line, length (4-byte
    /// big-endian prefix) or fixed:N.
    #[arg(long, default_value = "raw", value_name = "FRAMING")]
    pub framing: Framing,

    /// The longest message accepted (bytes; K/M suffixes: 4M = 4 MiB); a longer one closes
    /// that connection. Give `tincan send` the same to send or receive larger messages.
    #[arg(long, default_value = "1M", value_name = "SIZE", value_parser = crate::commands::chat::parse_size)]
    pub max_frame: usize,

    /// Answer "{ip:port}: {message}", as the book's multithreaded server does (it writes the
    /// address as Python prints a tuple, "('ip', port)"; clients only print the label).
    #[arg(long)]
    pub prefix_peer: bool,

    /// Close a TCP or Unix connection that has sent nothing (and had no answer left to take)
    /// for this many seconds; 0 never closes one.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value = "300",
        allow_negative_numbers = true
    )]
    pub idle_timeout: f64,

    /// Serve UDP: each datagram is answered by one datagram with the same bytes.
    #[arg(long)]
    pub udp: bool,

    #[command(flatten)]
    pub server: ServerArgs,
}

pub fn run(args: EchoArgs) -> Result<()> {
    let idle = crate::cli::seconds("--idle-timeout", args.idle_timeout, true)?;
    let config = EchoConfig {
        framing: args.framing,
        max_frame: args.max_frame,
        prefix_peer: args.prefix_peer,
        idle_timeout: (!idle.is_zero()).then_some(idle),
    };
    config.validate_for(args.udp).map_err(Error::Usage)?;
    let service = Arc::new(EchoService::new(config));
    if args.udp {
        // setup_udp installs the process's signal handlers before it announces the address.
        let (sockets, opts) = args.server.setup_udp(DEFAULT_LISTEN)?;
        let shutdown = Shutdown::for_process()
            .map_err(|e| Error::io("could not install the SIGINT/SIGTERM handlers", e))?;
        if args.server.model.is_some() || args.server.poller.is_some() {
            // Datagrams need no connections to drive; say so rather than ignore a flag silently.
            tracing::warn!(
                "--model and --poller do not apply to --udp; {} threads per socket answer datagrams",
                opts.workers.max(1)
            );
        }
        return serve_udp(sockets, service, &opts, &shutdown);
    }
    let (listeners, opts) = args.server.setup(DEFAULT_LISTEN)?;
    crate::model::serve(listeners, service, &opts)?;
    Ok(())
}

/// RFC 862 over UDP: `opts.workers` threads per socket answer datagrams until SIGINT/SIGTERM.
/// A datagram is answered in one `send_to` or not at all, so stopping never leaves anything
/// half-sent and needs no grace period.
fn serve_udp(
    sockets: Vec<UdpSocket>,
    service: Arc<EchoService>,
    opts: &ServeOptions,
    shutdown: &Shutdown,
) -> Result<()> {
    let mut workers = Vec::new();
    for socket in &sockets {
        socket
            .set_read_timeout(Some(UDP_SHUTDOWN_CHECK))
            .map_err(|e| Error::io("could not set the UDP socket's read timeout", e))?;
        for _ in 0..opts.workers.max(1) {
            let socket = socket
                .try_clone()
                .map_err(|e| Error::io("could not share the UDP socket with a worker", e))?;
            let service = Arc::clone(&service);
            let shutdown = shutdown.clone();
            workers.push(std::thread::spawn(move || {
                udp_worker(&socket, &service, &shutdown)
            }));
        }
    }
    for w in workers {
        // A worker only ends by returning; a panic would be a bug, reported but not re-raised.
        if w.join().is_err() {
            tracing::error!("a UDP echo worker panicked");
        }
    }
    Ok(())
}

fn udp_worker(socket: &UdpSocket, service: &EchoService, shutdown: &Shutdown) {
    let mut buf = vec![0; UDP_BUFFER];
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
        let peer = PeerAddr::Tcp(from);
        match service.answer_datagram(&peer, &buf[..n], &mut answer) {
            Ok(()) => {
                if let Err(e) = socket.send_to(&answer, from) {
                    tracing::debug!(peer = %from, "UDP answer not sent: {e}");
                }
            }
            Err(e) => {
                // One line a second for each reason, however fast bad datagrams come.
                static TOO_LONG: Throttle = Throttle::new();
                static NOT_UTF8: Throttle = Throttle::new();
                let throttle = match e {
                    FrameError::TooLong { .. } => &TOO_LONG,
                    FrameError::InvalidUtf8 => &NOT_UTF8,
                };
                if let Some(skipped) = throttle.admit() {
                    tracing::warn!(
                        peer = %from,
                        "dropping echo datagram: {e}{}",
                        more_like_it(skipped)
                    );
                }
            }
        }
    }
}
