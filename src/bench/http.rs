//! HTTP/1.1 for the load generator: the target URL, the one request every connection repeats,
//! and an incremental response parser that finds where each response ends without buffering
//! bodies, so a 10 MiB file costs no more memory than a 1 KiB one. Where a body ends is the
//! server's own wire core's decision ([`Decoder::for_response`], RFC 9112 §6.3), so the client
//! and the server it measures read framing by the same rules.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use super::stats::ErrorKind;
use super::{Exchange, Load, Parsed, Reply};
use crate::protocol::http::wire::fields::connection_tokens;
use crate::protocol::http::wire::{write as head, Decoder, Limits};

/// The most response-head bytes accepted before the response counts as malformed.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// The most headers one response may carry.
pub const MAX_RESPONSE_HEADERS: usize = 64;

/// A parsed `http://host[:port]/path` (or `https://`) target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// The `Host` header value: host, and port when it is not 80.
    pub authority: String,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub target: String,
    /// `https://`: TLS on every connection.
    pub tls: bool,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        // The scheme is case-insensitive (RFC 3986 §3.1); compared as bytes, so a multi-byte
        // character cannot be cut.
        let scheme = |p: &str| {
            s.as_bytes()
                .get(..p.len())
                .is_some_and(|b| b.eq_ignore_ascii_case(p.as_bytes()))
        };
        let tls = scheme("https://");
        if !tls && !scheme("http://") {
            return Err(format!(
                "'{s}' is not an http:// or https:// URL, e.g. http://127.0.0.1:8080/"
            ));
        }
        let rest = &s[if tls { "https://" } else { "http://" }.len()..];
        // RFC 9110 §4.2.1, §4.2.2.
        let default_port = if tls { 443 } else { 80 };
        // A fragment is the client's own; it is never part of a request target (RFC 9112 §3.2).
        let rest = rest.split('#').next().unwrap_or("");
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(format!(
                "'{s}': user information in the URL is not sent; give credentials with \
                 -H 'Authorization: ...'"
            ));
        }
        let target = encode_target(&target);
        if authority.is_empty() || authority.starts_with(':') {
            return Err(format!("'{s}' names no host"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6
                .find(']')
                .ok_or_else(|| format!("'{s}': an IPv6 host needs a closing ']'"))?;
            let port = match &v6[end + 1..] {
                "" => default_port,
                p => parse_port(p.strip_prefix(':').unwrap_or(p), s)?,
            };
            (v6[..end].to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), parse_port(p, s)?),
                None => (authority.to_string(), default_port),
            }
        };
        Ok(Url {
            authority: authority.to_string(),
            host,
            port,
            target,
            tls,
        })
    }

    /// The first address the host resolves to.
    pub fn resolve(&self) -> Result<SocketAddr, String> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| {
                let why = crate::net::lookup_failure(&e);
                format!("cannot resolve host '{}': {why}", self.host)
            })?
            .next()
            .ok_or_else(|| format!("'{}' resolves to no address", self.host))
    }
}

/// A request target as it may go on the wire: bytes a request line cannot carry (spaces,
/// controls, non-ASCII) percent-encoded, as a browser does; what is already encoded stays.
fn encode_target(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    for &b in t.as_bytes() {
        if b.is_ascii_graphic() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_port(p: &str, url: &str) -> Result<u16, String> {
    p.parse()
        .map_err(|_| format!("'{url}': '{p}' is not a port number"))
}

/// Build the one request every connection sends: `METHOD target HTTP/1.1`, `Host`, the extra
/// headers (each `Name: value`), and `Connection: close` when keep-alive is off. A `Host` or
/// `Connection` among the extra headers replaces the one this would send (testing a virtual
/// host is the usual reason), so a request never carries two.
pub fn build_request(
    method: &str,
    url: &Url,
    headers: &[String],
    keepalive: bool,
) -> Result<Vec<u8>, String> {
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(format!("'{method}' is not an HTTP method"));
    }
    let mut fields = Vec::with_capacity(headers.len());
    for h in headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("header '{h}' needs the form 'Name: value'"))?;
        if name.trim().is_empty() || h.contains('\r') || h.contains('\n') {
            return Err(format!(
                "header '{h}' needs the form 'Name: value' on one line"
            ));
        }
        fields.push((name.trim(), value.trim()));
    }
    let given = |n: &str| fields.iter().any(|(name, _)| name.eq_ignore_ascii_case(n));
    let mut req = Vec::with_capacity(128);
    head::request_line(&mut req, method, &url.target, None, 1);
    if !given("host") {
        head::field(&mut req, "Host", url.authority.as_bytes());
    }
    for (name, value) in &fields {
        head::field(&mut req, name, value.as_bytes());
    }
    if !keepalive && !given("connection") {
        head::field(&mut req, "Connection", b"close");
    }
    head::end(&mut req);
    Ok(req)
}

/// The HTTP load: every connection repeats one request.
#[derive(Debug)]
pub struct HttpLoad {
    request: Arc<[u8]>,
    head_only: bool,
}

impl HttpLoad {
    pub fn new(request: Vec<u8>, method: &str) -> HttpLoad {
        HttpLoad {
            request: request.into(),
            head_only: method.eq_ignore_ascii_case("HEAD"),
        }
    }
}

impl Load for HttpLoad {
    type Exchange = HttpExchange;

    fn exchange(&self, _conn: usize) -> HttpExchange {
        HttpExchange {
            request: self.request.clone(),
            parser: ResponseParser::new(self.head_only),
        }
    }
}

/// One connection's side of the HTTP load.
#[derive(Debug)]
pub struct HttpExchange {
    request: Arc<[u8]>,
    parser: ResponseParser,
}

impl Exchange for HttpExchange {
    fn begin(&mut self) {
        self.parser.start();
    }

    fn request(&self) -> &[u8] {
        &self.request
    }

    fn input(&mut self, buf: &[u8]) -> Result<Parsed, ErrorKind> {
        self.parser.feed(buf)
    }

    fn eof(&mut self) -> Result<Option<Reply>, ErrorKind> {
        self.parser.eof()
    }

    fn reset(&mut self) {
        self.parser.state = State::Idle;
    }

    fn skippable(&self) -> u64 {
        self.parser.body_left()
    }

    fn skipped(&mut self, n: u64) -> Option<Reply> {
        self.parser.skip(n)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// No request outstanding: any byte is unexpected.
    Idle,
    Head,
    /// In the body, whatever delimits it.
    Body(Decoder),
}

/// Finds where one HTTP/1.x response ends, fed the bytes as they arrive.
#[derive(Clone, Debug)]
pub struct ResponseParser {
    state: State,
    head_only: bool,
    /// Whether the connection may carry another request after this response.
    reuse: bool,
    ok: bool,
    /// Chunk lines as long as the server's own header lines; no body ceiling.
    limits: Limits,
}

impl ResponseParser {
    /// A parser for the responses to requests with this method (`HEAD` responses carry no body).
    pub fn new(head_only: bool) -> ResponseParser {
        ResponseParser {
            state: State::Idle,
            head_only,
            reuse: true,
            ok: true,
            limits: Limits::streaming(),
        }
    }

    /// A request went out: expect its response.
    pub fn start(&mut self) {
        self.state = State::Head;
    }

    fn done(&mut self) -> Reply {
        self.state = State::Idle;
        Reply {
            reuse: self.reuse,
            ok: self.ok,
        }
    }

    /// Consume what can be consumed of `buf`; stop at the end of a whole response.
    /// `consumed == 0` with no reply means "need more bytes".
    pub fn feed(&mut self, buf: &[u8]) -> Result<Parsed, ErrorKind> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match &mut self.state {
                State::Idle => {
                    return if rest.is_empty() {
                        Ok(Parsed::need(pos))
                    } else {
                        // Bytes nobody asked for: a server answering twice, or garbage.
                        Err(ErrorKind::Parse)
                    };
                }
                State::Head => {
                    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
                    let mut resp = httparse::Response::new(&mut headers);
                    let n = match resp.parse(rest) {
                        Ok(httparse::Status::Complete(n)) => n,
                        Ok(httparse::Status::Partial) => {
                            if rest.len() > MAX_RESPONSE_HEAD {
                                return Err(ErrorKind::Parse);
                            }
                            return Ok(Parsed::need(pos));
                        }
                        Err(_) => return Err(ErrorKind::Parse),
                    };
                    pos += n;
                    let code = resp.code.unwrap_or(0);
                    if (100..200).contains(&code) && code != 101 {
                        // An interim response (100 Continue): the real one follows.
                        continue;
                    }
                    let fields = resp.headers.iter().map(|h| (h.name, h.value));
                    let (body, _) = Decoder::for_response(code, self.head_only, fields.clone())
                        .map_err(|_| ErrorKind::Parse)?;
                    let options = connection_tokens(fields);
                    let close = options.iter().any(|t| t == "close");
                    let keep_alive = options.iter().any(|t| t == "keep-alive");
                    self.ok = (200..400).contains(&code);
                    // HTTP/1.0 closes unless it asked to keep alive; 1.1 keeps alive unless told.
                    // After a 101 the connection speaks another protocol, and a body that ends
                    // at the close leaves nothing to reuse.
                    self.reuse = !close
                        && (resp.version == Some(1) || keep_alive)
                        && code != 101
                        && (body.is_finished() || !body.ends_at_close());
                    if body.is_finished() {
                        return Ok(Parsed::reply(pos, self.done()));
                    }
                    self.state = State::Body(body);
                }
                State::Body(body) => {
                    let (n, end) = body
                        .discard(rest, &self.limits)
                        .map_err(|_| ErrorKind::Parse)?;
                    pos += n;
                    if end {
                        return Ok(Parsed::reply(pos, self.done()));
                    }
                    return Ok(Parsed::need(pos));
                }
            }
        }
    }

    /// Body bytes still to come whose only use is to be counted (a Content-Length body, or
    /// the data of the current chunk).
    pub fn body_left(&self) -> u64 {
        match &self.state {
            State::Body(body) => body.skippable(),
            _ => 0,
        }
    }

    /// `n` body bytes (at most [`body_left`](Self::body_left)) went by unread; the reply if
    /// they ended it.
    pub fn skip(&mut self, n: u64) -> Option<Reply> {
        let ended = match &mut self.state {
            State::Body(body) => body.skip(n),
            _ => false,
        };
        ended.then(|| self.done())
    }

    /// The server closed: a close-delimited body ends here; anything else was cut short.
    pub fn eof(&mut self) -> Result<Option<Reply>, ErrorKind> {
        match &self.state {
            State::Body(body) if body.ends_at_close() => Ok(Some(self.done())),
            State::Idle => Ok(None),
            _ => Err(ErrorKind::Read),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `input` in pieces of `step` bytes (keeping unconsumed bytes, as the engine does);
    /// return the replies and the bytes left over.
    fn run(head_only: bool, input: &[u8], step: usize) -> Result<(Vec<Reply>, usize), ErrorKind> {
        let mut p = ResponseParser::new(head_only);
        p.start();
        let mut pending = Vec::new();
        let mut replies = Vec::new();
        for piece in input.chunks(step) {
            pending.extend_from_slice(piece);
            loop {
                let r = p.feed(&pending)?;
                pending.drain(..r.consumed);
                match r.reply {
                    Some(rep) => {
                        replies.push(rep);
                        p.start();
                    }
                    None => break,
                }
            }
        }
        Ok((replies, pending.len()))
    }

    #[test]
    fn skipped_body_bytes_end_a_reply_exactly_where_read_ones_would() {
        let mut p = ResponseParser::new(false);
        p.start();
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nabc";
        let r = p.feed(head).unwrap();
        assert_eq!((r.consumed, r.reply), (head.len(), None));
        assert_eq!(p.body_left(), 99_997);
        assert_eq!(p.skip(99_996), None);
        assert_eq!(p.body_left(), 1);
        assert!(p.skip(1).is_some_and(|r| r.ok && r.reuse));
        assert_eq!(p.body_left(), 0);
        // Chunked: only a chunk's data is skippable; sizes and the last chunk are parsed.
        p.start();
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n186a0\r\n";
        assert_eq!(p.feed(head).unwrap().consumed, head.len());
        assert_eq!(p.body_left(), 100_000);
        assert_eq!(p.skip(100_000), None);
        assert_eq!(p.body_left(), 0);
        let tail = b"\r\n0\r\n\r\n";
        let r = p.feed(tail).unwrap();
        assert_eq!(r.consumed, tail.len());
        assert!(r.reply.is_some());
    }

    #[test]
    fn content_length_and_chunked_bodies_end_where_they_say_at_any_read_size() {
        let cl = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
        for step in [1, 2, 3, 7, 1000] {
            let mut two = cl.to_vec();
            two.extend_from_slice(chunked);
            let (replies, left) = run(false, &two, step).unwrap();
            assert_eq!(replies.len(), 2, "step {step}");
            assert!(replies.iter().all(|r| r.ok && r.reuse));
            assert_eq!(left, 0);
        }
    }

    #[test]
    fn status_connection_and_version_decide_ok_and_reuse() {
        let (r, _) = run(
            false,
            b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
            100,
        )
        .unwrap();
        assert!(!r[0].ok && r[0].reuse);
        let (r, _) = run(
            false,
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            100,
        )
        .unwrap();
        assert!(r[0].ok && !r[0].reuse);
        let (r, _) = run(false, b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 100).unwrap();
        assert!(!r[0].reuse);
        let (r, _) = run(
            false,
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            100,
        )
        .unwrap();
        assert_eq!(r.len(), 1, "304 has no body whatever Content-Length says");
        let (r, _) = run(true, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", 100).unwrap();
        assert_eq!(r.len(), 1, "a HEAD response has no body");
    }

    #[test]
    fn an_interim_100_continue_is_skipped() {
        let (r, _) = run(
            false,
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
            4,
        )
        .unwrap();
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn a_body_without_length_ends_at_close() {
        let mut p = ResponseParser::new(false);
        p.start();
        let r = p.feed(b"HTTP/1.1 200 OK\r\n\r\nsome body").unwrap();
        assert!(r.reply.is_none());
        let rep = p.eof().unwrap().unwrap();
        assert!(rep.ok && !rep.reuse);
    }

    #[test]
    fn malformed_or_cut_responses_are_errors_of_the_right_kind() {
        assert_eq!(
            run(false, b"HTTP/1.1 abc\r\n\r\n", 100).unwrap_err(),
            ErrorKind::Parse
        );
        assert_eq!(
            run(
                false,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                100
            )
            .unwrap_err(),
            ErrorKind::Parse
        );
        assert_eq!(
            run(
                false,
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                100
            )
            .unwrap_err(),
            ErrorKind::Parse
        );
        // The server's own framing rules: a length is digits only, and a coding other than
        // chunked could not be removed, so where the body ends is unknown.
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        ] {
            assert_eq!(run(false, bad, 100).unwrap_err(), ErrorKind::Parse);
        }
        let mut huge = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        huge.resize(MAX_RESPONSE_HEAD + 10, b'a');
        assert_eq!(run(false, &huge, 4096).unwrap_err(), ErrorKind::Parse);
        let mut p = ResponseParser::new(false);
        p.start();
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            .unwrap();
        assert_eq!(p.eof().unwrap_err(), ErrorKind::Read);
    }

    #[test]
    fn urls_split_into_host_port_and_target() {
        let u = Url::parse("http://127.0.0.1:8080/a/b?c=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("127.0.0.1", 8080, "/a/b?c=1")
        );
        let u = Url::parse("http://[::1]:9/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        let u = Url::parse("http://localhost").unwrap();
        assert_eq!((u.port, u.target.as_str()), (80, "/"));
        let u = Url::parse("HTTPS://x/").unwrap();
        assert!(u.tls && u.port == 443 && u.host == "x");
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("http://x:99999/").is_err());
        // Found by an outside pass: these were sent as they came, or misread.
        assert_eq!(Url::parse("http://h:1/a#frag").unwrap().target, "/a");
        assert_eq!(
            Url::parse("http://h:1/a b/\u{e9}").unwrap().target,
            "/a%20b/%C3%A9"
        );
        assert_eq!(Url::parse("http://h:1/%20x").unwrap().target, "/%20x");
        let u = Url::parse("http://h:81?x=1").unwrap();
        assert_eq!((u.port, u.target.as_str()), (81, "/?x=1"));
        assert_eq!(Url::parse("HTTP://h/").unwrap().host, "h");
        assert!(Url::parse("http://:80/")
            .unwrap_err()
            .contains("names no host"));
        assert!(Url::parse("http://u:p@h/")
            .unwrap_err()
            .contains("Authorization"));
    }

    #[test]
    fn a_host_or_connection_header_given_replaces_the_default() {
        let u = Url::parse("http://127.0.0.1:8080/x").unwrap();
        let r = build_request("GET", &u, &["Host: vhost.test".into()], true).unwrap();
        assert_eq!(r, b"GET /x HTTP/1.1\r\nHost: vhost.test\r\n\r\n");
        let r = build_request("GET", &u, &["connection: keep-alive".into()], false).unwrap();
        assert_eq!(
            r,
            b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nconnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn the_request_carries_host_headers_and_close_when_keepalive_is_off() {
        let u = Url::parse("http://127.0.0.1:8080/x").unwrap();
        let r = build_request("GET", &u, &["Accept: */*".into()], false).unwrap();
        assert_eq!(
            r,
            b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        assert!(build_request("G T", &u, &[], true).is_err());
        assert!(build_request("GET", &u, &["nocolon".into()], true).is_err());
    }
}
