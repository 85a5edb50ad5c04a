//! What an HTTP/1.1 connection and the HTTP/2 session it may become share: the options a
//! server chooses for both ([`HttpOptions`], [`H2Options`]), the handler, limits and options
//! every connection of a service holds ([`Shared`]), the access-log note of a relayed exchange,
//! and the `Date` field of every answer. Both sessions import this; neither is imported by it.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::access::Guard;
use super::access_log::AccessLog;
use super::gateway::Gateway;
use super::message::Handler;
use super::wire::Limits;

/// Connection-level choices that are not limits.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Send `Server: tincan` (`--hide-server` / `server_tokens = false` turns it off).
    pub server_tokens: bool,
    /// Allow persistent connections at all (off under the iterative model, which can hold only
    /// one connection at a time). Off, a connection still answers the requests a client had
    /// pipelined before an answer was made (their heads already read), the last one with
    /// `Connection: close`: only waiting for a next request is refused.
    pub keep_alive: bool,
    /// `--header "Name: value"`: added to every response.
    pub extra_headers: Vec<(String, String)>,
    pub access_log: Option<Arc<AccessLog>>,
    /// Stop answering pipelined requests while this much output is queued; the rest wait in the
    /// session's stash and are answered as the output drains. Keep it at or above the drivers'
    /// high-water mark, so reading is paused whenever answering is.
    pub pipeline_pause: usize,
    /// Proxy and CGI routes (`--proxy`, `--cgi`); `None` serves everything with the handler.
    pub gateway: Option<Arc<Gateway>>,
    /// CORS and authentication (`--cors`, `--auth-file`, `--auth`), asked before any route;
    /// `None` when neither is configured.
    pub guard: Option<Arc<Guard>>,
    /// Speak HTTP/2 (`--http2`): h2c with prior knowledge on plain connections, `h2` when
    /// ALPN chose it on TLS ones.
    pub http2: bool,
    pub h2: H2Options,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            server_tokens: true,
            keep_alive: true,
            extra_headers: Vec::new(),
            access_log: None,
            pipeline_pause: 256 * 1024,
            gateway: None,
            guard: None,
            http2: true,
            h2: H2Options::default(),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) limits: Limits,
    pub(crate) options: HttpOptions,
}

/// The access-log line of a relayed request with its Referer and User-Agent, kept until the
/// answer's status and size are known.
pub(crate) type LogNote = (String, Option<String>, Option<String>);

impl Shared {
    /// What a relayed exchange keeps for its answer, over HTTP/1.1 and HTTP/2 alike: its log
    /// note (when a log is kept; `line` is the request line as that protocol writes it) and
    /// the fields the guard adds to every answer (CORS).
    pub(crate) fn relay_notes(
        &self,
        req: &crate::protocol::http::message::Request<'_>,
        line: impl FnOnce() -> String,
    ) -> (
        Option<LogNote>,
        Vec<(
            crate::protocol::http::message::Text,
            crate::protocol::http::message::Text,
        )>,
    ) {
        let log = self.options.access_log.as_ref().map(|_| {
            (
                line(),
                req.header("referer").map(str::to_string),
                req.header("user-agent").map(str::to_string),
            )
        });
        let mut guard_headers = Vec::new();
        if let Some(g) = &self.options.guard {
            g.answer_headers(req, &mut guard_headers);
        }
        (log, guard_headers)
    }
}

/// The HTTP/2 settings a server chooses (flags and config keys map to these).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2Options {
    /// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_streams: u32,
    /// HTTP/2 alone (`--http2 only`): every connection is HTTP/2, so one that does not open
    /// with the client preface is a connection error (§3.4), not an HTTP/1.1 request.
    pub only: bool,
}

impl Default for H2Options {
    fn default() -> Self {
        H2Options {
            max_streams: 128,
            only: false,
        }
    }
}

thread_local! {
    /// The formatted `Date` for the current second (RFC 9110 §6.6.1), per thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Call `f` with the `Date` field's value for this second (RFC 9110 §6.6.1), formatted once a
/// second per thread.
pub(crate) fn with_date<R>(f: impl FnOnce(&str) -> R) -> R {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            d.0 = secs;
            d.1 = httpdate::fmt_http_date(now);
        }
        f(&d.1)
    })
}
