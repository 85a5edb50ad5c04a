//! The ceilings of an HTTP/1 message: each a named field of [`Limits`], and each crossing a
//! [`Reject`] that carries the precise status to answer (414, 431, 413, 400).

use std::time::Duration;

/// Every ceiling the HTTP session enforces. Defaults are no lower than nginx's, so real browsers
/// (large cookies) pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Longest request line (method, target, version), in bytes; longer → 414.
    pub max_request_line: usize,
    /// Longest single header line, in bytes; longer → 431.
    pub max_header: usize,
    /// Longest whole request head (request line + headers), in bytes; longer → 431.
    pub max_head: usize,
    /// Most header fields in one request; more → 431.
    pub max_headers: usize,
    /// Largest request body, in bytes; larger → 413 and close.
    pub max_body: u64,
    /// Time a client has to send a whole request head; then 408 and close.
    pub head_timeout: Duration,
    /// Time allowed between two reads of a request body; then 408 and close.
    pub body_timeout: Duration,
    /// Time an idle keep-alive connection is kept open; then closed silently.
    pub keepalive_timeout: Duration,
    /// Requests served on one connection; the last response carries `Connection: close`.
    pub max_requests_per_connection: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // nginx: large_client_header_buffers 4 8k (one line ≤ 8 KiB, head ≤ 32 KiB).
            max_request_line: 8 * 1024,
            max_header: 16 * 1024,
            max_head: 64 * 1024,
            max_headers: 100,
            // nginx: client_max_body_size 1m.
            max_body: 1024 * 1024,
            head_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            max_requests_per_connection: 1000,
        }
    }
}

impl Limits {
    /// For a body that streams through rather than being taken in (an upstream's or a
    /// script's answer, a response to `tincan bench`): no body ceiling, bounded chunk lines.
    pub fn streaming() -> Limits {
        Limits {
            max_body: u64::MAX,
            ..Limits::default()
        }
    }
}

/// A request the session refuses: the status to answer and the sentence for the error page.
/// Every reject closes the connection after the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub detail: &'static str,
}

impl Reject {
    pub(crate) const fn new(status: u16, detail: &'static str) -> Reject {
        Reject { status, detail }
    }
}

pub(crate) const LINE_TOO_LONG: Reject =
    Reject::new(414, "The request line is longer than this server accepts.");
pub(crate) const HEADER_TOO_LONG: Reject = Reject::new(
    431,
    "A request header line is longer than this server accepts.",
);
pub(crate) const HEAD_TOO_LARGE: Reject = Reject::new(
    431,
    "The request headers are larger than this server accepts.",
);
pub(crate) const TOO_MANY_HEADERS: Reject = Reject::new(
    431,
    "The request has more header fields than this server accepts.",
);
pub(crate) const BAD_REQUEST: Reject = Reject::new(400, "The request could not be parsed.");
pub(crate) const NO_VERSION: Reject = Reject::new(
    400,
    "The request line has no HTTP version; HTTP/0.9 is not served here.",
);
pub(crate) const BODY_TOO_LARGE: Reject =
    Reject::new(413, "The request body is larger than this server accepts.");
pub(crate) const BAD_CHUNKED: Reject = Reject::new(400, "The chunked request body is malformed.");
/// Chunked framing beyond the data (extensions, whitespace, leading zeros) crossed its share.
pub(crate) const CHUNK_OVERHEAD: Reject = Reject::new(
    400,
    "The chunked request body's extensions are longer than this server accepts.",
);
