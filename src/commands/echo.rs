//! `tincan echo`: the echo service (RFC 862, the socket tutorial's and the book's framings) under any model, over TCP and
//! Unix sockets, or over UDP with `--udp`.
//!
//! The protocol itself is [`crate::protocol::echo`]; this runner validates the flags, binds, and
//! hands the service to the drivers. UDP has no connections for the drivers to run, so the small
//! datagram loop (`recv_from`, answer, `send_to`) lives here.

use std::sync::Arc;

use clap::Args;

use crate::error::{Error, Result};
use crate::flags::ServerArgs;
use crate::model::Shutdown;
use crate::protocol::echo::{EchoConfig, EchoConfigError, EchoService};
use crate::protocol::framing::Framing;

/// Where `tincan echo` listens unless told otherwise (RFC 862's port 7 needs root; see README).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7007";
/// Its port, which `tincan send HOST` connects to.
pub const DEFAULT_PORT: u16 = 7007;

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
    #[arg(long, value_name = "SIZE", value_parser = crate::units::size::<usize>,
        default_value = crate::units::show_size(crate::protocol::echo::DEFAULT_MAX_FRAME as u64))]
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
        default_value_t = crate::protocol::echo::DEFAULT_IDLE_TIMEOUT.as_secs_f64(),
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
    let idle = crate::units::seconds("--idle-timeout", args.idle_timeout, true)?;
    let config = EchoConfig {
        framing: args.framing,
        max_frame: args.max_frame,
        prefix_peer: args.prefix_peer,
        idle_timeout: (!idle.is_zero()).then_some(idle),
    };
    config
        .validate_for(args.udp)
        .map_err(|e| Error::Usage(worded(&e)))?;
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
        crate::model::udp::serve(sockets, service, &opts, &shutdown)?;
        return Ok(());
    }
    let (listeners, opts) = args.server.setup(DEFAULT_LISTEN)?;
    crate::model::serve(listeners, service, &opts)?;
    Ok(())
}

/// The sentence for a configuration the echo service refuses, in terms of its flags.
fn worded(e: &EchoConfigError) -> String {
    match e {
        EchoConfigError::NoMaxFrame => "--max-frame must be at least 1 byte".into(),
        EchoConfigError::FramingOverUdp(f) => format!(
            "--framing {f} does not apply to --udp: each datagram is one message, answered \
             whole; use --framing raw (the default) or null (UTF-8 text ending in NUL)"
        ),
        EchoConfigError::PrefixWithoutBoundaries => "--prefix-peer needs message boundaries, \
             and raw framing has none; use --framing null, line, length or close"
            .into(),
        EchoConfigError::PrefixOverFixed => "--prefix-peer would make answers longer than \
             fixed:N frames; use --framing null, line, length or close"
            .into(),
        EchoConfigError::FixedOverMax { n, max } => {
            format!("fixed:{n} frames are longer than --max-frame {max}; raise --max-frame")
        }
    }
}
