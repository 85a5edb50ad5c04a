//! The contract between the HTTP/1.1 session (framing, limits, keep-alive: [`super`]) and the
//! handlers that answer requests (static files, `hello`): a parsed [`Request`] borrowed from the
//! connection's buffer goes in, an owned [`Response`] comes out. Handlers never see the wire;
//! the session writes the status line, `Date`, `Server`, `Content-Length` or chunked framing and
//! `Connection`, and drops the body for HEAD.

use std::borrow::Cow;
use std::fs::File;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::protocol::Peer;

/// HTTP version of a request (HTTP/1.0 and 1.1 by the HTTP/1 session, others get 505; HTTP/2
/// by [`super::h2`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
    Http2,
}

impl Version {
    /// As written on the request line: `HTTP/1.0` or `HTTP/1.1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
            // As nginx and Apache write it in the access log.
            Version::Http2 => "HTTP/2.0",
        }
    }
}

/// One request head, borrowed from the connection's read buffer. The body (if any) has already
/// been read and discarded by the session when a handler sees this.
#[derive(Debug)]
pub struct Request<'a> {
    /// The method token as sent (case-sensitive, RFC 9110 §9.1).
    pub method: &'a str,
    /// The request-target exactly as sent (`/a%20b?x=1`).
    pub target: &'a str,
    /// The target's path part, still percent-encoded (before `?`).
    pub path: &'a str,
    /// The target's query, without the `?`.
    pub query: Option<&'a str>,
    pub version: Version,
    /// The header fields in order, names as sent.
    pub headers: &'a [httparse::Header<'a>],
}

impl<'a> Request<'a> {
    /// The first value of header `name` (case-insensitive), if it is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    }

    /// Every value of header `name`, in order (for list headers spread over several lines).
    pub fn header_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// The host (and port) the request is for: an absolute-form target's authority, which
    /// RFC 9112 §3.2.2 says wins over `Host`, else the `Host` field. `None` when neither names
    /// one.
    pub fn host(&self) -> Option<&'a str> {
        let t = self.target;
        let scheme = ["http://", "https://"]
            .into_iter()
            .find(|s| t.get(..s.len()).is_some_and(|p| p.eq_ignore_ascii_case(s)));
        let host = match scheme {
            // The authority exactly as the parser checked it (up to `/`, `?` or `#`), so the
            // host used is the host that passed `Host`'s grammar (no userinfo: refused there).
            Some(s) => {
                let rest = &t[s.len()..];
                &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())]
            }
            None => self.header("host")?,
        };
        (!host.is_empty()).then_some(host)
    }
}

/// A header name or value: static where it can be, owned where it must be.
pub type Text = Cow<'static, str>;

/// What a handler answers.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The reason phrase, when it is not the standard one for `status` (an upstream's or a
    /// script's own, passed on as nginx does).
    pub reason: Option<Text>,
    /// Headers the handler sets (`Content-Type`, `ETag`, ...). The session adds `Date`,
    /// `Server`, `Content-Length`/`Transfer-Encoding` and `Connection`; handlers must not.
    pub headers: Vec<(Text, Text)>,
    /// More header lines, already formatted (`Name: value\r\n` each), written after
    /// `headers`: how a cached answer is sent without building anything per request. The same
    /// rules as for `headers` apply (none of the session's own fields; no bare CR or LF).
    pub raw_headers: Option<bytes::Bytes>,
    pub body: Body,
    /// Close the connection after this response.
    pub close: bool,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            reason: None,
            headers: Vec::new(),
            raw_headers: None,
            body: Body::Empty,
            close: false,
        }
    }

    /// Add a header (builder style).
    pub fn header(mut self, name: impl Into<Text>, value: impl Into<Text>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn with_body(mut self, body: Body) -> Response {
        self.body = body;
        self
    }

    /// Every field the handler set, `(name, value)`: the text ones, then the raw lines (those
    /// that are UTF-8; a raw line that is not is relayed only by HTTP/1.1, byte for byte).
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        let raw = self
            .raw_headers
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .into_iter()
            .flat_map(|t| t.split("\r\n"))
            .filter_map(|line| line.split_once(": "));
        self.headers
            .iter()
            .map(|(n, v)| (n.as_ref(), v.as_ref()))
            .chain(raw)
    }

    /// The value of a header the handler set (case-insensitive).
    pub fn get_header(&self, name: &str) -> Option<&str> {
        self.fields()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// A response body. Its length is always known up front, so the session sends
/// `Content-Length` (never a guessed or wrong one).
#[derive(Debug)]
pub enum Body {
    Empty,
    Bytes(bytes::Bytes),
    /// A region of an open file, sent with `sendfile` by drivers that can.
    File {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
    /// Several pieces in order (a `multipart/byteranges` body).
    Parts(Vec<Part>),
    /// Made while it is sent (a folder archive), length unknown: chunked to HTTP/1.1 clients,
    /// ended by the close for HTTP/1.0 ones. The session asks for a piece whenever the client
    /// has taken the last, so memory stays bounded whatever the body's size.
    Stream(Streamed),
}

/// A body made piece by piece as the client takes it.
pub trait BodyStream: Send {
    /// The next piece, about `want` bytes (more or less); `None` once the body is complete.
    fn next_piece(&mut self, want: usize) -> Option<bytes::Bytes>;
}

/// A [`BodyStream`] in a [`Body`].
pub struct Streamed(pub Box<dyn BodyStream>);

impl std::fmt::Debug for Streamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Streamed")
    }
}

/// One piece of a [`Body::Parts`].
#[derive(Debug)]
pub enum Part {
    Bytes(bytes::Bytes),
    File {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
}

impl Body {
    /// Bytes the body will put on the wire (0 for a stream, whose length is not known).
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty | Body::Stream(_) => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
            Body::Parts(parts) => parts
                .iter()
                .map(|p| match p {
                    Part::Bytes(b) => b.len() as u64,
                    Part::File { len, .. } => *len,
                })
                .sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where the body of a request a handler takes goes, piece by piece as the session decodes
/// it (bounded by the body limit: a body over it is refused mid-way and the sink dropped).
pub trait BodySink: Send {
    /// More of the body. A failure (a full disk) is kept by the sink and answered by
    /// [`finish`](Self::finish); the rest of the body is still read.
    fn write(&mut self, data: &[u8]);
    /// The whole body has come: the answer.
    fn finish(self: Box<Self>) -> Response;
}
// A sink dropped unfinished (the client went away, a timeout, a body over the limit) must
// leave nothing behind: that is its Drop's job.

/// What a handler does with the body of a request it is asked about before the body is read.
pub enum BodyUse {
    /// Not wanted: the session reads and discards it, then calls [`Handler::handle`].
    Discard,
    /// Streamed into this sink, whose `finish` answers.
    Take(Box<dyn BodySink>),
    /// Refused before a byte of it is read (the connection closes after the answer).
    Refuse(Response),
}

/// Answers requests. Shared by all connections; must not block for long (it may open and stat
/// files, which the drivers accept as the cost of serving files).
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: &Request<'_>, peer: &Peer) -> Response;

    /// A request with a body, before the body is read: take it, refuse it, or let the session
    /// discard it (the default: bodies mean nothing to a file server but an upload).
    fn body_use(&self, _req: &Request<'_>, _peer: &Peer) -> BodyUse {
        BodyUse::Discard
    }

    /// The server ran out of descriptors: close those kept only for speed (see
    /// [`Service::on_out_of_descriptors`](crate::protocol::Service::on_out_of_descriptors)).
    fn release_descriptors(&self) {}
}

/// The reason phrase for a status code (RFC 9110 §15, and the IANA registry's others); empty
/// for a code without one (RFC 9112 §4 allows an empty reason).
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        511 => "Network Authentication Required",
        _ => "",
    }
}

/// A reason phrase someone else wrote, if it may go on our status line as it is: `reason-phrase
/// = 1*( HTAB / SP / VCHAR / obs-text )` (RFC 9112 §4), kept to printable ASCII, and different
/// from the standard one (which needs no copy).
pub fn foreign_reason(status: u16, phrase: &str) -> Option<Text> {
    let phrase = phrase.trim();
    let printable = phrase
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
    (printable && !phrase.is_empty() && phrase != reason(status))
        .then(|| Text::Owned(phrase.to_string()))
}

/// Escape text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> Cow<'_, str> {
    if !s
        .bytes()
        .any(|b| matches!(b, b'<' | b'>' | b'&' | b'"' | b'\''))
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A small HTML error page for `status` (what every error answer carries unless a custom page
/// is configured): no internals, just the status and one sentence.
pub fn error_page(status: u16, detail: &str) -> bytes::Bytes {
    let reason = reason(status);
    let detail = html_escape(detail);
    bytes::Bytes::from(format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{status} {reason}</title>\n<style>{PAGE_STYLE}</style></head>\n<body><h1>{status} {reason}</h1>\n<p>{detail}</p>\n<p><a href=\"/\">Go to the home page</a></p>\n</body></html>\n"
    ))
}

/// The look every page the server writes itself shares (listings and error pages): readable
/// type, a measure that fits a phone, long words wrapped, a dark scheme when asked for.
pub const PAGE_STYLE: &str = "body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222;background:#fdfdfd}\
h1{font-size:1.3rem;font-weight:600;overflow-wrap:anywhere}p{overflow-wrap:anywhere}\
a{color:#0b5cad;text-decoration:none}a:hover{text-decoration:underline}\
footer{margin-top:1rem;color:#777;font-size:.85rem}\
@media (prefers-color-scheme:dark){body{background:#1b1b1b;color:#ddd}a{color:#7ab7ff}}";

/// An error response with the default HTML page.
pub fn error_response(status: u16, detail: &str) -> Response {
    Response::new(status)
        .header("Content-Type", "text/html; charset=utf-8")
        .with_body(Body::Bytes(error_page(status, detail)))
}

/// (year, month, day, hour, minute, second) in UTC: the one calendar the access log, the
/// listing and the JSON listing write dates with.
pub fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32) {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `Host` field, or none, as the parser hands them over (for tests).
    pub(crate) fn host_field(host: Option<&str>) -> Vec<httparse::Header<'_>> {
        host.map(|h| httparse::Header {
            name: "Host",
            value: h.as_bytes(),
        })
        .into_iter()
        .collect()
    }

    fn host_of(target: &str, host_header: Option<&str>) -> Option<String> {
        let headers = host_field(host_header);
        let req = Request {
            method: "GET",
            target,
            path: "/",
            query: None,
            version: Version::Http11,
            headers: &headers,
        };
        req.host().map(str::to_string)
    }

    /// The host is the authority the parser checked: up to `/`, `?` or `#`. A review found
    /// `http://a#@evil:abc/` passing the check as `a` and used as `evil:abc`.
    #[test]
    fn the_host_is_the_authority_the_parser_checked() {
        assert_eq!(host_of("http://a#@evil:abc/", Some("f")), Some("a".into()));
        assert_eq!(
            host_of("http://a.example:81/x?q", Some("f")),
            Some("a.example:81".into())
        );
        assert_eq!(host_of("HTTPS://b?x", None), Some("b".into()));
        assert_eq!(host_of("/x", Some("front")), Some("front".into()));
        assert_eq!(host_of("/x", None), None);
    }
}
