//! The concurrency drivers: they own sockets, readiness, timers, buffers and shutdown, and know
//! nothing of any protocol. Each drives any [`Service`] through the same [`Session`] calls, so a
//! protocol is written once and runs under every model.
//!
//! - [`Model::Iterative`]: one connection at a time (the first seeds' loop).
//! - [`Model::Threaded`]: a thread per connection, capped by `max_connections`.
//! - [`Model::Prefork`]: worker processes sharing the listening sockets; the parent supervises.
//! - [`Model::Event`]: event-loop threads, each with its own poller (epoll, poll or select).
//!
//! [`Service`]: crate::protocol::Service
//! [`Session`]: crate::protocol::Session

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::net::Listener;
use crate::protocol::Service;

/// How connections are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// One connection at a time.
    Iterative,
    /// A thread per connection.
    Threaded,
    /// Worker processes sharing the listening socket.
    Prefork,
    /// Event-loop threads (epoll, poll or select).
    Event,
}

impl Model {
    pub const ALL: [Model; 4] = [
        Model::Iterative,
        Model::Threaded,
        Model::Prefork,
        Model::Event,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Model::Iterative => "iterative",
            Model::Threaded => "threaded",
            Model::Prefork => "prefork",
            Model::Event => "event",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The readiness API an event worker uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PollerKind {
    Epoll,
    Poll,
    Select,
}

impl PollerKind {
    pub const ALL: [PollerKind; 3] = [PollerKind::Epoll, PollerKind::Poll, PollerKind::Select];

    pub fn name(self) -> &'static str {
        match self {
            PollerKind::Epoll => "epoll",
            PollerKind::Poll => "poll",
            PollerKind::Select => "select",
        }
    }
}

impl fmt::Display for PollerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything a driver needs to know, validated before any socket is touched.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub model: Model,
    /// Worker processes (prefork) or event-loop threads (event); ignored by the others.
    pub workers: usize,
    pub poller: PollerKind,
    /// Connections served at once (threaded: threads; event: per server); more wait in the backlog.
    pub max_connections: usize,
    /// How long in-flight work may take to finish after SIGINT/SIGTERM.
    pub grace: Duration,
    /// A connection whose peer accepts no output for this long is closed.
    pub send_timeout: Duration,
    /// Reading from a connection pauses while its outbox holds more than this many bytes.
    pub high_water: usize,
    /// After a closing answer, how long input is read and discarded before the close.
    pub linger: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            model: Model::Event,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            poller: PollerKind::Epoll,
            max_connections: 10_000,
            grace: Duration::from_secs(10),
            send_timeout: Duration::from_secs(60),
            high_water: 256 * 1024,
            linger: Duration::from_secs(2),
        }
    }
}

/// Errors a driver reports; each reads as a sentence.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Refused(String),
    #[error("{what} failed: {source}")]
    Sys {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Serve `service` on `listeners` under `opts.model` until SIGINT or SIGTERM, then shut down
/// gracefully. Returns once every worker has finished.
pub fn serve<S: Service>(
    listeners: Vec<Listener>,
    service: Arc<S>,
    opts: &ServeOptions,
) -> Result<(), ServeError> {
    service
        .check_model(opts.model)
        .map_err(ServeError::Refused)?;
    let _ = (listeners, opts);
    Err(ServeError::Refused(
        "the drivers are not written yet".into(),
    ))
}
