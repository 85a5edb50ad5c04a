//! Request heads: the scanner that finds a head's end as bytes arrive (enforcing the line and
//! size [`Limits`] before the whole head is buffered), and [`parse_head`] around httparse: the
//! method, version, target forms (RFC 9112 §3.2), `Host` (§3.2), `Connection`, `Expect`, and
//! the body's framing (RFC 9112 §6.3, strictly: no request smuggling).
//!
//! Partial input is never an error: the scanner keeps its place, so a head trickled in one
//! byte at a time is scanned once, not re-parsed per byte.

use super::body::Decoder;
use super::fields::{content_length, list_members};
use super::limits::{
    Limits, Reject, BAD_REQUEST, BODY_TOO_LARGE, HEADER_TOO_LONG, HEAD_TOO_LARGE, LINE_TOO_LONG,
    NO_VERSION, TOO_MANY_HEADERS,
};
use crate::protocol::http::message::{Request, Version};

/// The methods this server knows (RFC 9110 §9). Known methods go to the handler (which may
/// answer 405); any other token gets 501 (RFC 9110 §9.1).
pub const KNOWN_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Is `method` one of [`KNOWN_METHODS`]? (Methods are case-sensitive, RFC 9110 §9.1.)
pub fn is_known_method(method: &str) -> bool {
    KNOWN_METHODS.contains(&method)
}

/// Finds the end of a request head as bytes arrive, enforcing the line and size limits before
/// the whole head is buffered. Keeps its place between calls (the buffer only grows at the end
/// while a head is incomplete), so each byte is looked at once.
#[derive(Debug, Default, Clone)]
pub struct HeadScanner {
    /// Next index of the buffer to examine.
    pos: usize,
    /// Start of the line being scanned.
    line_start: usize,
    /// Complete lines seen (the request line is line 0).
    lines: usize,
}

impl HeadScanner {
    /// Forget the current head (after it was consumed).
    pub fn reset(&mut self) {
        *self = HeadScanner::default();
    }

    /// Look at `buf` (the unconsumed input, starting at the head's first byte). Returns the
    /// length of the head including its final empty line once it is complete, `None` while more
    /// is needed, or the limit it crosses.
    pub fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, Reject> {
        if self.lines == 0 {
            // A request line never holds control bytes (RFC 9112 §3: tokens, SP, a target of
            // visible characters). A TLS handshake or other binary traffic on this port is
            // refused at once, as nginx does, rather than held until the head timeout.
            let end = memchr::memchr(b'\n', &buf[self.pos..]).map_or(buf.len(), |n| self.pos + n);
            let cr_ok = |i: usize| buf[i] == b'\r' && (i + 1 == end || i + 1 == buf.len());
            if (self.pos..end).any(|i| (buf[i] < 0x20 || buf[i] == 0x7f) && !cr_ok(i)) {
                return Err(BAD_REQUEST);
            }
        }
        while self.pos < buf.len() {
            let Some(nl) = memchr::memchr(b'\n', &buf[self.pos..]) else {
                self.pos = buf.len();
                break;
            };
            let nl = self.pos + nl;
            let line = &buf[self.line_start..nl];
            // An empty line ("\r\n", or a bare "\n", which httparse accepts too) after the
            // request line ends the head.
            if self.lines > 0 && (line.is_empty() || line == b"\r") {
                return self.done(nl + 1, limits);
            }
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let request_line = self.lines == 0;
            self.end_line(line.len(), limits)?;
            // An HTTP/0.9 request (`GET /x`, RFC 1945 §4.1) has no version and no headers:
            // whatever follows would never end a head, so the client would wait out the head
            // timeout for a 408. Refuse it when its line ends, as nginx does.
            if request_line && !ends_in_a_version(line) {
                return Err(NO_VERSION);
            }
            self.line_start = nl + 1;
            self.pos = nl + 1;
        }
        // The line in progress already counts against its limit, so a client cannot make us
        // buffer an endless line.
        let partial = buf.len() - self.line_start;
        let line_limit = if self.lines == 0 {
            (limits.max_request_line, LINE_TOO_LONG)
        } else {
            (limits.max_header, HEADER_TOO_LONG)
        };
        // +1 for the CR it may end in (an LF would have ended it).
        if partial > line_limit.0 + 1 {
            return Err(line_limit.1);
        }
        if buf.len() > limits.max_head {
            return Err(HEAD_TOO_LARGE);
        }
        Ok(None)
    }

    /// A line of `len` bytes (its CR and LF not counted) has ended.
    fn end_line(&mut self, len: usize, limits: &Limits) -> Result<(), Reject> {
        if self.lines == 0 {
            if len > limits.max_request_line {
                return Err(LINE_TOO_LONG);
            }
        } else {
            if len > limits.max_header {
                return Err(HEADER_TOO_LONG);
            }
            if self.lines > limits.max_headers {
                return Err(TOO_MANY_HEADERS);
            }
        }
        self.lines += 1;
        Ok(())
    }

    fn done(&mut self, len: usize, limits: &Limits) -> Result<Option<usize>, Reject> {
        if len > limits.max_head {
            return Err(HEAD_TOO_LARGE);
        }
        Ok(Some(len))
    }
}

/// Does a request line (without its CR LF) end in a version word after a method and a target
/// (`method SP target SP HTTP/...`, RFC 9112 §3)? Lines that do not are 400 whatever else they
/// hold; the version itself is checked by [`parse_head`] (505 for one not served).
fn ends_in_a_version(line: &[u8]) -> bool {
    let mut words = line.rsplitn(2, |&b| b == b' ');
    let version = words.next().unwrap_or_default();
    let before = words.next().unwrap_or_default();
    version.starts_with(b"HTTP/") && before.contains(&b' ')
}

/// How many bytes of leading empty lines `buf` starts with (RFC 9112 §2.2: a server SHOULD
/// ignore at least one empty line before a request line; some clients send a CRLF after a body).
pub fn leading_empty_lines(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

#[derive(Debug)]
pub struct Head<'a> {
    pub request: Request<'a>,
    /// The body's decoder ([`Decoder::none`] for a request without one).
    pub body: Decoder,
    /// The client asked to keep the connection (1.1 without `close`, 1.0 with `keep-alive`).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on a 1.1 request.
    pub expect_continue: bool,
}

/// Parse a complete head (`buf` is exactly what [`HeadScanner::scan`] measured) into
/// `storage` (its length is the header-count limit). Checks the method, version, target,
/// Host and body framing; the answer to a bad request is the returned [`Reject`].
pub fn parse_head<'a>(
    buf: &'a [u8],
    storage: &'a mut [httparse::Header<'a>],
    limits: &Limits,
) -> Result<Head<'a>, Reject> {
    let mut req = httparse::Request::new(storage);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        // The scanner saw the empty line, so httparse can only lack bytes if the head is
        // malformed in a way it reads as unfinished (e.g. only empty lines).
        Ok(httparse::Status::Partial) => return Err(BAD_REQUEST),
        Err(httparse::Error::TooManyHeaders) => return Err(TOO_MANY_HEADERS),
        Err(httparse::Error::Version) => {
            return Err(if version_token_looks_like_http(buf) {
                Reject::new(505, "Only HTTP/1.0 and HTTP/1.1 are served here.")
            } else {
                BAD_REQUEST
            })
        }
        Err(_) => return Err(BAD_REQUEST),
    }
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => {
            return Err(Reject::new(
                505,
                "Only HTTP/1.0 and HTTP/1.1 are served here.",
            ))
        }
    };
    let headers: &'a [httparse::Header<'a>] = req.headers;
    if headers.len() > limits.max_headers {
        return Err(TOO_MANY_HEADERS);
    }
    if !is_known_method(method) {
        return Err(Reject::new(
            501,
            "This server does not implement that method.",
        ));
    }
    let (path, query) = split_target(method, target)?;
    let request = Request {
        method,
        target,
        path,
        query,
        version,
        headers,
    };

    // RFC 9112 §3.2: a 1.1 request without exactly one (valid) Host gets 400.
    let mut hosts = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    match (hosts.next(), hosts.next()) {
        (None, _) if version == Version::Http11 => {
            return Err(Reject::new(400, "An HTTP/1.1 request needs a Host header."))
        }
        (None, _) => {}
        // The target URI is `http://` + Host + path (RFC 9112 §3.3), and an `http` URI with an
        // empty host MUST be refused (RFC 9110 §4.2.1); an absolute-form target names its own.
        (Some(h), None) if h.value.is_empty() && absolute_form(target) => {}
        (Some(h), None) if h.value.is_empty() => {
            return Err(Reject::new(400, "The Host header is empty."))
        }
        (Some(h), None) if valid_host(h.value) => {}
        (Some(_), None) => return Err(Reject::new(400, "The Host header is not a valid host.")),
        (Some(_), Some(_)) => {
            return Err(Reject::new(
                400,
                "The request has more than one Host header.",
            ))
        }
    }

    // A CONNECT request has no content (RFC 9110 §9.3.6): what follows its head would be
    // tunnel data, never a body or a next request. It is answered (405 here), and the
    // connection closes after the answer.
    let body = if method == "CONNECT" {
        Decoder::none()
    } else {
        framing(&request, limits)?
    };
    let has = |t: &str| tokens(headers, "connection").any(|c| c.eq_ignore_ascii_case(t.as_bytes()));
    let keep_alive = match version {
        // An HTTP/1 head never parses as HTTP/2 (that session builds its own requests).
        Version::Http11 | Version::Http2 => !has("close"),
        Version::Http10 => has("keep-alive") && !has("close"),
    };
    // RFC 9110 §10.1.1: `Expect` is a list (empty members ignored, lines taken together);
    // 100-continue is the one expectation defined, and any other is one we cannot meet. A
    // 1.0 request's expectations are ignored (a 1.0 client cannot read a 100).
    let (mut expect_continue, mut expect_other) = (false, false);
    if version == Version::Http11 {
        for m in tokens(headers, "expect") {
            if m.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                expect_other = true;
            }
        }
    }
    if expect_other {
        return Err(Reject::new(
            417,
            "The only expectation this server meets is 100-continue.",
        ));
    }
    Ok(Head {
        request,
        body,
        keep_alive,
        expect_continue,
    })
}

/// RFC 9110 §2.5: a message in a higher minor version of HTTP/1 (`HTTP/1.2` .. `HTTP/1.9`) is
/// processed as the highest minor version implemented, 1.1 here, as nginx does. Rewrites the
/// version digit of a well-formed request line in place, before [`parse_head`] (httparse knows
/// only 1.0 and 1.1); other versions are left for `parse_head` to refuse (505 or 400).
pub fn lower_minor_version(head: &mut [u8]) {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line_len = if line_end > 0 && head[line_end - 1] == b'\r' {
        line_end - 1
    } else {
        line_end
    };
    // The usual `HTTP/1.1` is told apart by its last byte, before any further look.
    let Some(v) = line_len.checked_sub(8).map(|start| &head[start..line_len]) else {
        return;
    };
    if matches!(v[7], b'2'..=b'9')
        && v.starts_with(b"HTTP/1.")
        && version_token_looks_like_http(head)
    {
        head[line_len - 1] = b'1';
    }
}

/// Is the request line well formed (`method SP target SP version`, RFC 9112 §3) with a version
/// shaped like `HTTP/d.d`, so that only the version is wrong and deserves 505? A malformed
/// line (a space inside the target, two spaces) is a 400 whatever it ends in.
fn version_token_looks_like_http(buf: &[u8]) -> bool {
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let line = buf[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..line_end]);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && !target.is_empty()
        && matches!(version, [b'H', b'T', b'T', b'P', b'/', a, b'.', b]
            if a.is_ascii_digit() && b.is_ascii_digit())
}

/// Split a request target into its path and query (RFC 9112 §3.2: origin-form, absolute-form,
/// authority-form for CONNECT, asterisk-form for OPTIONS).
fn split_target<'a>(method: &str, target: &'a str) -> Result<(&'a str, Option<&'a str>), Reject> {
    const BAD_TARGET: Reject = Reject::new(400, "The request target is not valid.");
    let rest = if method == "CONNECT" {
        // CONNECT names a host and a port and nothing else (RFC 9112 §3.2.3): a path or a
        // URI in its place is not a CONNECT at all.
        let has_port = target
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if !has_port || absolute_form(target) || !valid_host(target.as_bytes()) {
            return Err(BAD_TARGET);
        }
        return Ok((target, None));
    } else if target.starts_with('/') {
        target
    } else if target == "*" {
        if method != "OPTIONS" {
            return Err(BAD_TARGET);
        }
        return Ok(("*", None));
    } else if let Some(after) = strip_scheme(target) {
        // absolute-form: the authority takes the place of Host (RFC 9112 §3.2.2), so it is held
        // to Host's grammar; an `http` URI with an empty host MUST be refused and userinfo
        // SHOULD be (RFC 9110 §4.2.1, §4.2.4). The path starts at the next '/'.
        let authority = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
        if !valid_host(authority.as_bytes()) {
            return Err(Reject::new(
                400,
                "The host in the request target is not a valid host.",
            ));
        }
        match after.find(['/', '?', '#']) {
            Some(i) if after.as_bytes()[i] == b'/' => &after[i..],
            Some(i) => {
                // "http://host?q": the path is empty, which means "/".
                let (_, query) = split_query(&after[i..]);
                return Ok(("/", query));
            }
            None => "/",
        }
    } else {
        return Err(BAD_TARGET);
    };
    Ok(split_query(rest))
}

/// Is `target` in absolute-form (`http://...`, `https://...`)?
fn absolute_form(target: &str) -> bool {
    strip_scheme(target).is_some()
}

fn strip_scheme(target: &str) -> Option<&str> {
    for scheme in ["http://", "https://"] {
        // Compared as bytes: httparse lets non-ASCII UTF-8 into a target, and `target[..7]`
        // would panic inside a multi-byte character. A match is ASCII, so the slice below is
        // on a char boundary.
        let prefix = target.as_bytes().get(..scheme.len());
        if prefix.is_some_and(|p| p.eq_ignore_ascii_case(scheme.as_bytes())) {
            return Some(&target[scheme.len()..]);
        }
    }
    None
}

fn split_query(s: &str) -> (&str, Option<&str>) {
    // A fragment is never part of a request target (RFC 9112 §3.2); cut it if a client sent one.
    let s = s.split('#').next().unwrap_or("");
    match s.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (s, None),
    }
}

/// `Host = uri-host [ ":" port ]` (RFC 9110 §7.2): reg-name or IP-literal characters only, and
/// a host that is not empty (an `http` URI's host never is, RFC 9110 §4.2.1).
fn valid_host(v: &[u8]) -> bool {
    if v.len() > 255 {
        return false;
    }
    let (host, port) = if let Some(rest) = v.strip_prefix(b"[") {
        // IP-literal: hex digits, colons and dots (IPv6, with an embedded IPv4), or IPvFuture.
        let Some(close) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let lit = &rest[..close];
        let ok = !lit.is_empty()
            && lit.iter().all(|&b| {
                b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'-' | b'_' | b'~')
            });
        if !ok {
            return false;
        }
        match &rest[close + 1..] {
            [] => (&b""[..], None),
            [b':', port @ ..] => (&b""[..], Some(port)),
            _ => return false,
        }
    } else {
        match v.iter().rposition(|&b| b == b':') {
            Some(i) => (&v[..i], Some(&v[i + 1..])),
            None => (v, None),
        }
    };
    let reg_name = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b);
    let pct_ok = host
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'%')
        .all(|(i, _)| {
            host.get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
        });
    (!host.is_empty() || v.starts_with(b"["))
        && host.iter().all(|&b| reg_name(b) || b == b'%')
        && pct_ok
        && port.is_none_or(|p| p.iter().all(u8::is_ascii_digit))
}

/// The members of every list field named `name` (RFC 9110 §5.6.1): split on commas, trimmed of
/// whitespace, empty members dropped, and the field lines taken together (§5.3). Bytes, not
/// [`list_members`] of a request's fields.
fn tokens<'a>(
    headers: &'a [httparse::Header<'a>],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    list_members(headers.iter().map(|h| (h.name, h.value)), name)
}

/// RFC 9112 §6.3, strictly: Transfer-Encoding with Content-Length, more than one (or a
/// malformed) Content-Length, or a Transfer-Encoding that does not end in a single `chunked`
/// are all refused, so no front end and this server can disagree on where the body ends.
fn framing(req: &Request<'_>, limits: &Limits) -> Result<Decoder, Reject> {
    let named = |n: &'static str| {
        req.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(n))
    };
    let has_te = named("transfer-encoding").next().is_some();
    let mut cls = named("content-length");
    let (cl, cl2) = (cls.next(), cls.next());
    if has_te {
        if cl.is_some() {
            return Err(Reject::new(
                400,
                "A request may not carry both Content-Length and Transfer-Encoding.",
            ));
        }
        // §6.1: a 1.0 request with Transfer-Encoding has faulty framing.
        if req.version == Version::Http10 {
            return Err(Reject::new(
                400,
                "HTTP/1.0 requests may not use Transfer-Encoding.",
            ));
        }
        let (mut count, mut chunked, mut last_chunked) = (0, 0, false);
        for t in tokens(req.headers, "transfer-encoding") {
            count += 1;
            last_chunked = t.eq_ignore_ascii_case(b"chunked");
            chunked += usize::from(last_chunked);
        }
        if count == 0 || !last_chunked || chunked != 1 {
            return Err(Reject::new(
                400,
                "The request's Transfer-Encoding must end in a single chunked.",
            ));
        }
        // The framing is sound, but a coding under `chunked` (`gzip, chunked`) would have to
        // be undone to read the body, and no coding but chunked is implemented: RFC 9112
        // §6.1 says 501, as nginx answers.
        if count > 1 {
            return Err(Reject::new(
                501,
                "Only the chunked transfer coding is accepted here.",
            ));
        }
        return Ok(Decoder::chunked());
    }
    // RFC 9110 §8.6 lets a recipient take identical repeated lengths as one; a request is held
    // stricter, as nginx holds it: any repeat is refused, so no front end can have read
    // another line than this server.
    if cl2.is_some() {
        return Err(Reject::new(
            400,
            "The request has more than one Content-Length header.",
        ));
    }
    let n = content_length(cl.map(|h| h.value))
        .map_err(|_| Reject::new(400, "The Content-Length header is not a number."))?
        .unwrap_or(0);
    if n > limits.max_body {
        return Err(BODY_TOO_LARGE);
    }
    Ok(Decoder::length(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    /// Scan then parse `raw` as the session does; the status it would answer, or 0 for a good
    /// request.
    fn status_of(raw: &[u8], limits: &Limits) -> u16 {
        let mut sc = HeadScanner::default();
        let len = match sc.scan(raw, limits) {
            Err(r) => return r.status,
            Ok(None) => return 1, // partial
            Ok(Some(n)) => n,
        };
        let mut raw = raw[..len].to_vec();
        lower_minor_version(&mut raw);
        let mut storage = vec![httparse::EMPTY_HEADER; limits.max_headers];
        match parse_head(&raw, &mut storage, limits) {
            Ok(_) => 0,
            Err(r) => r.status,
        }
    }

    #[test]
    fn binary_bytes_in_a_request_line_are_refused_before_the_line_ends() {
        // A TLS ClientHello sent to the plain-HTTP port: no newline ever comes.
        let hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
        assert_eq!(status_of(hello, &limits()), 400);
        assert_eq!(status_of(b"GET /\x00", &limits()), 400);
        assert_eq!(status_of(b"GET / HT\rTP/1.1", &limits()), 400);
        // Byte by byte, the scanner refuses as soon as the bad byte arrives.
        let mut sc = HeadScanner::default();
        assert_eq!(sc.scan(b"GET /a", &limits()), Ok(None));
        assert_eq!(sc.scan(b"GET /a\x1b", &limits()), Err(BAD_REQUEST));
        // A request line still waiting for its LF after the CR is fine.
        let mut sc = HeadScanner::default();
        assert_eq!(sc.scan(b"GET / HTTP/1.1\r", &limits()), Ok(None));
        assert_eq!(
            status_of(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &limits()),
            0
        );
    }

    #[test]
    fn a_request_line_without_a_version_is_refused_when_it_ends() {
        // HTTP/0.9 sends `GET /x` and no headers: refused at its LF, not held for a 408.
        let lines =
            crate::protocol::test_cases(include_str!("../testdata/versionless-request-lines.txt"));
        assert_eq!(lines.len(), 8);
        for line in &lines {
            let mut sc = HeadScanner::default();
            assert_eq!(
                sc.scan(line, &limits()),
                Err(NO_VERSION),
                "for {:?}",
                String::from_utf8_lossy(line)
            );
        }
        // Until the line ends, a version may still come.
        let mut sc = HeadScanner::default();
        assert_eq!(sc.scan(b"GET /x", &limits()), Ok(None));
        assert_eq!(sc.scan(b"GET /x HTTP/1.1\r\n", &limits()), Ok(None));
        // A version that is there but not served is still a 505, from `parse_head`.
        assert_eq!(
            status_of(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", &limits()),
            505
        );
    }

    #[test]
    fn heads_get_the_status_their_defect_deserves() {
        let l = limits();
        let cases: &[(&[u8], u16)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0),
            (b"GET / HTTP/1.0\r\n\r\n", 0),
            (b"GET / HTTP/1.1\nHost: a\n\n", 0),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", 1),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
            // RFC 9110 §4.2.1: an `http` URI with an empty host is refused, from Host or
            // from an absolute-form target (whose authority wins, §3.2.2 of RFC 9112).
            (b"GET / HTTP/1.1\r\nHost:\r\n\r\n", 400),
            (b"GET / HTTP/1.0\r\nHost:\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 400),
            (b"GET http://a/x HTTP/1.1\r\nHost:\r\n\r\n", 0),
            (b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET http://:80/x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET http://u:p@evil.example/x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET http://a,b;c=d/x HTTP/1.1\r\nHost: a\r\n\r\n", 0),
            (b"GET http://evil.example:abc/x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET http://[::1]:8080/x HTTP/1.1\r\nHost: a\r\n\r\n", 0),
            (b"GET https://a.example?q HTTP/1.1\r\nHost: a\r\n\r\n", 0),
            (b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 0),
            (b"GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n", 0),
            (b"GET / HTTP/1.1\r\nHost: a.b-c_d:8080\r\n\r\n", 0),
            (b"GET / HTTP/1.1\r\nHost: a%41:\r\n\r\n", 0),
            // RFC 9112 §3.2: a Host that is not `uri-host [":" port]` gets 400.
            (b"GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a]b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: %zz\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            (b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505),
            (b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
            // A higher minor version of 1 is served as 1.1 (RFC 9110 §2.5; see
            // `lower_minor_version`, applied before parsing).
            (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 0),
            (b"GET / HTTP/1.9\nHost: a\n\n", 0),
            (b"GET /a b HTTP/1.2\r\nHost: a\r\n\r\n", 400),
            (b"GET / FOO\r\nHost: a\r\n\r\n", 400),
            // A malformed request line is a 400 even when it ends in a version.
            (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET /a b HTTP/2.0\r\nHost: a\r\n\r\n", 400),
            // Leading zeros are digits: RFC 9110 §8.6, RFC 9112 §7.1.
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 00000000000000000005\r\n\r\n", 0),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 000\r\n\r\n", 0),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n", 400),
            (b"BREW / HTTP/1.1\r\nHost: a\r\n\r\n", 501),
            (b"get / HTTP/1.1\r\nHost: a\r\n\r\n", 501),
            (b"DELETE / HTTP/1.1\r\nHost: a\r\n\r\n", 0),
            (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 0),
            (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET foo HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET http://x/y HTTP/1.1\r\nHost: a\r\n\r\n", 0),
            (b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", 0),
            (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n", 417),
            // Expect is a list: empty members are ignored, lines are taken together.
            (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue,\r\n\r\n", 0),
            (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: , 100-continue\r\n\r\n", 0),
            (b"GET / HTTP/1.1\r\nHost: a\r\nExpect:\r\n\r\n", 0),
            (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nExpect: foo\r\n\r\n", 417),
            (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, foo\r\n\r\n", 417),
            (b"GET / HTTP/1.0\r\nExpect: foo\r\n\r\n", 0),
            // Framing: RFC 9112 §6.1, §6.3.
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", 0),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 0),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
            // A line the parser cannot read as text still counts (it was once skipped).
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: \xffgzip\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1048577\r\n\r\n", 413),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n", 0),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ];
        for (raw, want) in cases {
            assert_eq!(
                status_of(raw, &l),
                *want,
                "for {:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    /// `Connection: close` is honoured whatever else shares its list, bytes that are not text
    /// included (RFC 9112 §9.6: the server MUST close).
    #[test]
    fn a_close_option_counts_beside_any_other_member() {
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, \xff\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: \xff, close\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x\r\nConnection: ,Close\r\n\r\n",
        ] {
            let mut storage = vec![httparse::EMPTY_HEADER; 10];
            let head = parse_head(raw, &mut storage, &limits()).unwrap();
            assert!(!head.keep_alive, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn each_head_limit_holds_at_its_edge_and_refuses_one_over() {
        let l = Limits {
            max_request_line: 100,
            max_header: 200,
            max_head: 1000,
            max_headers: 5,
            ..Limits::default()
        };
        let line = |n: usize| format!("GET /{} HTTP/1.1", "a".repeat(n - 14));
        assert_eq!(line(100).len(), 100);
        let hdr = |n: usize| format!("X: {}", "v".repeat(n - 3));
        let req = |first: String, hdrs: &[String]| {
            let mut s = first + "\r\nHost: h\r\n";
            for h in hdrs {
                s += h;
                s += "\r\n";
            }
            s + "\r\n"
        };
        assert_eq!(status_of(req(line(100), &[]).as_bytes(), &l), 0);
        assert_eq!(status_of(req(line(101), &[]).as_bytes(), &l), 414);
        // The same edges with bare LF line ends: the limit counts the line, not its ending.
        let lf = |r: String| r.replace("\r\n", "\n");
        assert_eq!(status_of(lf(req(line(100), &[])).as_bytes(), &l), 0);
        assert_eq!(status_of(lf(req(line(101), &[])).as_bytes(), &l), 414);
        assert_eq!(status_of(lf(req(line(20), &[hdr(200)])).as_bytes(), &l), 0);
        assert_eq!(
            status_of(lf(req(line(20), &[hdr(201)])).as_bytes(), &l),
            431
        );
        assert_eq!(status_of(req(line(20), &[hdr(200)]).as_bytes(), &l), 0);
        assert_eq!(status_of(req(line(20), &[hdr(201)]).as_bytes(), &l), 431);
        let four: Vec<String> = (0..4).map(|i| format!("X{i}: y")).collect();
        let five: Vec<String> = (0..5).map(|i| format!("X{i}: y")).collect();
        assert_eq!(status_of(req(line(20), &four).as_bytes(), &l), 0);
        assert_eq!(status_of(req(line(20), &five).as_bytes(), &l), 431);
        // Whole head: exactly 1000 bytes passes, 1001 does not.
        let l2 = Limits {
            max_head: 1000,
            ..Limits::default()
        };
        let base = req(line(20), &[hdr(10)]).len();
        let exact = req(line(20), &[hdr(10 + 1000 - base)]);
        assert_eq!(exact.len(), 1000);
        assert_eq!(status_of(exact.as_bytes(), &l2), 0);
        let over = req(line(20), &[hdr(10 + 1001 - base)]);
        assert_eq!(status_of(over.as_bytes(), &l2), 431);
    }

    #[test]
    fn an_endless_line_is_refused_before_it_ends() {
        let l = Limits::default();
        let mut sc = HeadScanner::default();
        let mut buf = b"GET /".to_vec();
        buf.extend(std::iter::repeat_n(b'a', 9000));
        assert_eq!(sc.scan(&buf, &l).unwrap_err().status, 414);
        let mut sc = HeadScanner::default();
        let mut buf = b"GET / HTTP/1.1\r\nCookie: ".to_vec();
        buf.extend(std::iter::repeat_n(b'a', 17000));
        assert_eq!(sc.scan(&buf, &l).unwrap_err().status, 431);
    }

    #[test]
    fn a_head_trickled_byte_by_byte_is_found_once_complete() {
        let raw = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y";
        let mut sc = HeadScanner::default();
        let l = limits();
        let mut found = None;
        for n in 1..=raw.len() {
            if let Some(len) = sc.scan(&raw[..n], &l).unwrap() {
                found = Some((n, len));
                break;
            }
        }
        assert_eq!(found, Some((28, 28)));
    }

    #[test]
    fn large_cookies_pass_by_default() {
        let cookie = format!("Cookie: {}", "c".repeat(8 * 1024));
        let mut raw = format!("GET / HTTP/1.1\r\nHost: a\r\n{cookie}\r\n");
        for i in 0..4 {
            raw += &format!("X-Big-{i}: {}\r\n", "v".repeat(8 * 1024));
        }
        raw += "\r\n";
        assert!(raw.len() > 40 * 1024);
        assert_eq!(status_of(raw.as_bytes(), &limits()), 0);
    }

    #[test]
    fn targets_split_into_path_and_query() {
        let cases = [
            ("GET", "/a/b?x=1", ("/a/b", Some("x=1"))),
            ("GET", "/a#frag", ("/a", None)),
            ("GET", "http://example.com/p?q", ("/p", Some("q"))),
            ("GET", "HTTP://example.com", ("/", None)),
            ("GET", "http://example.com?q", ("/", Some("q"))),
            ("OPTIONS", "*", ("*", None)),
            ("CONNECT", "example.com:443", ("example.com:443", None)),
        ];
        for (m, t, want) in cases {
            assert_eq!(split_target(m, t).unwrap(), want, "{m} {t}");
        }
        // CONNECT takes the authority-form only (RFC 9112 §3.2.3), and only it takes that.
        for (m, t) in [
            ("CONNECT", "/api/echo"),
            ("CONNECT", "http://example.com/"),
            ("CONNECT", "*"),
            ("CONNECT", "a b:1"),
            ("GET", "example.com:443"),
        ] {
            assert!(split_target(m, t).is_err(), "{m} {t}");
        }
    }

    #[test]
    fn a_target_with_a_multibyte_character_where_a_scheme_would_end_is_refused_not_a_panic() {
        // Found by fuzz/http_session: "GET up/ni@\u{21d}t.xt HTTP/1.1" panicked slicing
        // target[..7] inside the two-byte character.
        for t in ["up/ni@\u{21d}t.xt", "http:/\u{e9}", "https:/\u{1f600}x"] {
            assert_eq!(
                split_target("GET", t),
                Err(Reject::new(400, "The request target is not valid.")),
                "{t}"
            );
        }
        let raw = "GET up/ni@\u{21d}t.xt HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(status_of(raw.as_bytes(), &limits()), 400);
    }
}
