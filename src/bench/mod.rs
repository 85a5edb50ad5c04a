//! The load generator behind `tincan bench`.
//!
//! | module | its one job |
//! |---|---|
//! | [`engine`] | N threads, each a mio (epoll) loop over its share of the connections: connect, write, read (large bodies dropped in the kernel, uncopied), time, retry; closed or open loop |
//! | [`http`] | the HTTP request and an incremental response parser (Content-Length, chunked, close) |
//! | [`echo`] | one framed message out, one framed message back (line, null, length, fixed, raw, close) |
//! | [`chat`] | a tincanchat message out, wait for its own broadcast back |
//! | [`stats`] | per-thread HDR latency histogram, counts, errors by kind; merged at the end |
//! | [`report`] | the table on stdout, or one JSON object |
//! | [`responder`] | a trivial in-process HTTP responder: proof the generator is not the bottleneck |
//! | [`svg`] | the chart: throughput and p99 against connections |
//!
//! A protocol plugs into the engine as a [`Load`] (shared, makes one [`Exchange`] per
//! connection). An exchange is sans-I/O like the server's sessions: it hands out the request
//! bytes and is fed reply bytes; the engine owns every socket.

pub mod chat;
pub mod echo;
pub mod engine;
pub mod http;
pub mod report;
pub mod responder;
pub mod stats;
pub mod svg;

pub use engine::{run, LoadOptions, Outcome};
pub use stats::{ErrorKind, Stats};

/// A whole reply arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The connection may carry the next request (HTTP keep-alive).
    pub reuse: bool,
    /// The reply is a success (HTTP 2xx/3xx); a bad one counts as a `status` error.
    pub ok: bool,
}

/// What one call to [`Exchange::input`] made of the bytes it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Bytes used from the front of the input; the rest is offered again with more.
    pub consumed: usize,
    /// Set when the reply ended inside those bytes.
    pub reply: Option<Reply>,
}

impl Parsed {
    pub fn need(consumed: usize) -> Parsed {
        Parsed {
            consumed,
            reply: None,
        }
    }

    pub fn reply(consumed: usize, reply: Reply) -> Parsed {
        Parsed {
            consumed,
            reply: Some(reply),
        }
    }
}

/// One connection's protocol side of the load: the request to send and where its reply ends.
pub trait Exchange: Send + 'static {
    /// A new request starts: prepare its bytes (then read by [`request`](Self::request)) and
    /// expect its reply.
    fn begin(&mut self);
    /// The bytes of the current request.
    fn request(&self) -> &[u8];
    /// Shut the write side down after the request (the `close` framing's end of message).
    fn half_close(&self) -> bool {
        false
    }
    /// Bytes arrived (while a reply is awaited, or not: then they are unexpected unless the
    /// protocol pushes messages, as chat does). Consume what can be used; stop at a reply's end.
    fn input(&mut self, buf: &[u8]) -> Result<Parsed, ErrorKind>;
    /// The peer closed. A reply delimited by the close ends here; `Ok(None)` when no reply was
    /// awaited; an error when one was cut short.
    fn eof(&mut self) -> Result<Option<Reply>, ErrorKind>;
    /// The connection was replaced by a new one: forget any half-parsed reply.
    fn reset(&mut self);
    /// Bytes coming next that nobody needs to look at (the rest of a body of known length).
    /// The engine may drop up to this many in the kernel, without copying them, and report
    /// how many with [`skipped`](Self::skipped).
    fn skippable(&self) -> u64 {
        0
    }
    /// `n` (at most [`skippable`](Self::skippable)) bytes were dropped unread; the reply if
    /// it ended with them.
    fn skipped(&mut self, _n: u64) -> Option<Reply> {
        None
    }
}

/// A protocol's load: shared by every thread, makes each connection's [`Exchange`].
pub trait Load: Send + Sync + 'static {
    type Exchange: Exchange;
    /// The exchange of connection number `conn` (0-based, unique across threads).
    fn exchange(&self, conn: usize) -> Self::Exchange;
}

/// Raise the open-file limit to its hard limit, so 10,000 connections fit. Returns the limit in
/// force afterwards (the old one if it could not be raised).
pub fn raise_fd_limit() -> u64 {
    crate::sys::raise_fd_limit().unwrap_or(1024)
}
