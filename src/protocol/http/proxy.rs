//! The reverse proxy's byte logic (sans-I/O, like nginx's `proxy_pass`): parse an upstream URL,
//! build the request sent upstream, and parse the upstream's response head and body framing.
//! The bytes travel over a link the session's driver opens ([`crate::protocol::link`]);
//! [`super::gateway`] ties the two together.
//!
//! What goes upstream (RFC 9110 §7.6, RFC 7239):
//! - the method, the path with the matched prefix replaced by the upstream's path (or the whole
//!   path when the upstream URL names none, as nginx), and the query, untouched;
//! - the request's headers minus hop-by-hop ones (`Connection` and every header it names,
//!   `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-*`), `Expect` (this
//!   server already answered it) and the body's framing (`Content-Length` as the client gave
//!   it, or `Transfer-Encoding: chunked`, the body re-chunked as it streams);
//! - `Host` = the upstream's authority (nginx's `proxy_set_header Host $proxy_host` default);
//! - `X-Forwarded-For` (appended to), `X-Forwarded-Proto: http`, `X-Forwarded-Host`,
//!   `Forwarded` (appended to) and `Via: 1.1 tincan` (appended to);
//! - HTTP/1.1, persistent: the connection is kept for the next request when the answer ends
//!   by its framing and the upstream does not say `Connection: close`.

use std::mem::MaybeUninit;
use std::path::PathBuf;

use super::message::{Request, Text, Version};
use super::wire::fields::{is_hop_by_hop, is_tchar, ConnectionTokens};
use super::wire::{Decoder, Encoder};

/// Where an upstream listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `host:port`, resolved once at start.
    Tcp(String),
    /// A Unix-domain stream socket.
    Unix(PathBuf),
}

/// How a proxied request's body travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestBody {
    None,
    /// `Content-Length` bytes, forwarded as they come.
    Length(u64),
    /// A body of unknown length, re-chunked as it comes.
    Chunked,
}

/// A parsed `http://HOST[:PORT][/path]`, `https://HOST[:PORT][/path]` or
/// `http://unix:/socket/path[:/path]` upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub target: Target,
    /// `https`: TLS to the upstream, its certificate checked for the host of the URL.
    pub tls: bool,
    /// What `Host` says to the upstream (`host:port`, port omitted when 80).
    pub authority: String,
    /// The path that replaces the matched prefix; `None` when the URL named no path (the
    /// request's path is then forwarded whole).
    pub path: Option<String>,
}

impl Upstream {
    /// The upstream as a log line names it (`127.0.0.1:9000`, `unix:/run/app.sock`).
    pub fn display(&self) -> String {
        match &self.target {
            Target::Tcp(a) => a.clone(),
            Target::Unix(p) => format!("unix:{}", p.display()),
        }
    }

    /// Parse an upstream URL; the error is a sentence for the user.
    pub fn parse(url: &str) -> Result<Upstream, String> {
        let bad = |why: &str| format!("the upstream `{url}` {why}");
        let (rest, tls) = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (rest, false),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (rest, true),
            _ => return Err(bad("is not an http:// or https:// URL")),
        };
        let default_port = if tls { "443" } else { "80" };
        // nginx's spelling for a Unix socket: http://unix:/path/to.sock[:/uri]
        if let Some(sock) = rest.strip_prefix("unix:").filter(|_| !tls) {
            let (sock, path) = match sock.split_once(":/") {
                Some((s, p)) => (s, Some(format!("/{p}"))),
                None => (sock, None),
            };
            if !sock.starts_with('/') {
                return Err(bad("needs an absolute socket path after unix:"));
            }
            return Ok(Upstream {
                target: Target::Unix(PathBuf::from(sock)),
                tls: false,
                authority: "localhost".into(),
                path,
            });
        }
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], Some(rest[i..].to_string())),
            Some(_) => return Err(bad("may not carry a query or fragment")),
            None => (rest, None),
        };
        if let Some(p) = &path {
            if p.contains(['?', '#', ' ']) {
                return Err(bad("may not carry a query or fragment"));
            }
        }
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("needs a host (and no user info)"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("has an unclosed [IPv6] host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p,
                None if after.is_empty() => default_port,
                None => return Err(bad("has text after its [IPv6] host")),
            };
            (format!("[{h}]"), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p),
                None => (authority.to_string(), default_port),
            }
        };
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("has a port that is not 1-65535"))?;
        if host.is_empty()
            || !host.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':')
            })
        {
            return Err(bad("has a host name that is not valid"));
        }
        let authority = if port.to_string() == default_port {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        Ok(Upstream {
            target: Target::Tcp(format!("{host}:{port}")),
            tls,
            authority,
            path,
        })
    }

    /// The path sent upstream for a request whose path past the matched prefix is `rest`
    /// (empty, or starting with `/`) and whose whole path is `full`.
    pub fn upstream_path(&self, full: &str, rest: &str) -> String {
        match &self.path {
            None => full.to_string(),
            Some(p) => {
                let joined = format!("{}{rest}", p.trim_end_matches('/'));
                if joined.is_empty() {
                    "/".to_string()
                } else if rest.is_empty() && p.ends_with('/') {
                    // `/api=http://h/v1/` and a request for `/api` → `/v1/`.
                    format!("{joined}/")
                } else {
                    joined
                }
            }
        }
    }
}

/// A `Forwarded` parameter value: a token as is, anything else quoted (RFC 7239 §4), with any
/// `"` or `\\` left out.
fn forwarded_value(out: &mut Vec<u8>, v: &str) {
    if !v.is_empty() && v.bytes().all(is_tchar) {
        out.extend_from_slice(v.as_bytes());
    } else {
        out.push(b'"');
        out.extend(v.bytes().filter(|b| !matches!(b, b'"' | b'\\')));
        out.push(b'"');
    }
}

/// Dotted-quad IPv4 text, as `Ipv4Addr`'s parser takes it (without its cost per request).
fn is_ipv4(s: &str) -> bool {
    let mut parts = 0;
    for p in s.split('.') {
        parts += 1;
        let ok = (1..=3).contains(&p.len())
            && p.bytes().all(|b| b.is_ascii_digit())
            && (p.len() == 1 || !p.starts_with('0'))
            && p.parse::<u16>().is_ok_and(|n| n <= 255);
        if !ok {
            return false;
        }
    }
    parts == 4
}

/// The protocols a request asks to switch to (`Upgrade`, with `upgrade` among its `Connection`
/// tokens, RFC 9110 §7.8), when the proxy passes the request on: any but `h2c`, which RFC 9113
/// deprecates (and which this server would have to speak itself).
pub fn upgrade_request<'a>(req: &Request<'a>) -> Option<&'a str> {
    let value = req.header("upgrade")?;
    let asked =
        ConnectionTokens::of(req.headers.iter().map(|h| (h.name, h.value))).contains("upgrade");
    let h2c = value
        .split(',')
        .any(|p| p.trim().eq_ignore_ascii_case("h2c"));
    (asked && !h2c && !value.trim().is_empty()).then_some(value)
}

/// Everything about the client the forwarding headers report.
pub struct ClientInfo<'a> {
    /// The client's IP as text (`127.0.0.1`, `::1`, or `unix`).
    pub ip: &'a str,
}

/// The request bytes sent upstream: head and body.
pub fn build_request(
    req: &Request<'_>,
    up: &Upstream,
    path: &str,
    body: RequestBody,
    client: &ClientInfo<'_>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let line = super::wire::write::field;
    super::wire::write::request_line(&mut out, req.method, path, req.query, 1);
    line(&mut out, "Host", up.authority.as_bytes());
    let named = ConnectionTokens::of(req.headers.iter().map(|h| (h.name, h.value)));
    // Earlier proxies' values, appended to below (slices of the request: nothing copied).
    let mut xff: Vec<&[u8]> = Vec::new();
    let mut fwd: Vec<&[u8]> = Vec::new();
    let mut via: Vec<&[u8]> = Vec::new();
    for h in req.headers {
        let n = h.name;
        let is = |name: &str| n.eq_ignore_ascii_case(name);
        if [
            "host",
            "content-length",
            "expect",
            "x-forwarded-proto",
            "x-forwarded-host",
        ]
        .iter()
        .any(|x| is(x))
        {
            continue;
        }
        if is("x-forwarded-for") {
            xff.push(h.value);
        } else if is("forwarded") {
            fwd.push(h.value);
        } else if is("via") {
            via.push(h.value);
        } else if is_hop_by_hop(n) || named.contains(n) {
            // Not for the next hop (RFC 9110 §7.6.1).
        } else if n.as_bytes().contains(&b'_') {
            // A name with `_` could pose as one with `-` behind a server that treats them
            // alike (CGI's HTTP_X_USER is both): dropped, as nginx does by default.
        } else {
            line(&mut out, n, h.value);
        }
    }
    // `NAME: earlier, earlier, ours`.
    let appended = |out: &mut Vec<u8>, name: &str, earlier: &[&[u8]], ours: &[&[u8]]| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        for v in earlier {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
        for part in ours {
            out.extend_from_slice(part);
        }
        out.extend_from_slice(b"\r\n");
    };
    let ip = client.ip;
    appended(&mut out, "X-Forwarded-For", &xff, &[ip.as_bytes()]);
    out.extend_from_slice(b"X-Forwarded-Proto: http\r\n");
    let host = req.host().unwrap_or("");
    if !host.is_empty() {
        line(&mut out, "X-Forwarded-Host", host.as_bytes());
    }
    // RFC 7239 §6: an IPv6 address is bracketed and then quoted; a client with no IP (a Unix
    // socket's) is `unknown`. Written where it goes, after the earlier proxies' values.
    out.extend_from_slice(b"Forwarded: ");
    for v in &fwd {
        out.extend_from_slice(v);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(b"for=");
    if ip.as_bytes().contains(&b':') {
        out.extend_from_slice(b"\"[");
        out.extend_from_slice(ip.as_bytes());
        out.extend_from_slice(b"]\"");
    } else if !is_ipv4(ip) {
        out.extend_from_slice(b"unknown");
    } else {
        out.extend_from_slice(ip.as_bytes());
    }
    if !host.is_empty() {
        out.extend_from_slice(b";host=");
        forwarded_value(&mut out, host);
    }
    out.extend_from_slice(b";proto=http\r\n");
    let version: &[u8] = match req.version {
        Version::Http10 => b"1.0 tincan",
        Version::Http11 => b"1.1 tincan",
        Version::Http2 => b"2 tincan",
    };
    appended(&mut out, "Via", &via, &[version]);
    match body {
        RequestBody::Length(n) => Encoder::Length(n).write_field(&mut out),
        RequestBody::Chunked => Encoder::Chunked.write_field(&mut out),
        // Methods that usually carry a body say 0 explicitly.
        RequestBody::None if matches!(req.method, "POST" | "PUT" | "PATCH") => {
            Encoder::Length(0).write_field(&mut out)
        }
        RequestBody::None => {}
    }
    if let Some(protocols) = upgrade_request(req) {
        // Hop-by-hop, so dropped above: an upgrade is asked of the upstream anew.
        line(&mut out, "Upgrade", protocols.as_bytes());
        line(&mut out, "Connection", b"upgrade");
    }
    // HTTP/1.1 connections persist unless one side says otherwise (RFC 9112 §9.3): nothing
    // to add for the connection to be kept.
    super::wire::write::end(&mut out);
    out
}

/// A parsed upstream response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    /// The upstream's (or script's) own reason phrase, when it differs from the standard one.
    pub reason: Option<Text>,
    pub headers: Vec<(Text, Text)>,
    /// Fields whose values are not UTF-8 (RFC 9110 §5.5 allows obs-text), already formatted
    /// (`Name: value\r\n`): relayed byte for byte, as nginx does, not with U+FFFD in them.
    pub raw_headers: Vec<u8>,
    /// The body's decoder ([`Decoder::none`] for HEAD, 1xx, 204, 304 or an empty body).
    pub framing: Decoder,
    /// The length to announce to the client, when known.
    pub length: Option<u64>,
    /// A CGI local redirect (RFC 3875 §6.2.2): the server answers for this path instead.
    pub local_redirect: Option<String>,
    /// The upstream keeps the connection after this answer (HTTP/1.1 without `Connection:
    /// close`, or HTTP/1.0 with `keep-alive`; RFC 9112 §9.3).
    pub keep_alive: bool,
    /// A 101 to an upgrade the request asked for: the protocol switched to (its `Upgrade`).
    pub upgrade: Option<String>,
}

/// Why an upstream's answer is unusable (a 502 when nothing was sent yet).
pub const BAD_RESPONSE: &str = "The upstream server sent a response this server cannot read.";

/// Parse one response head at the start of `buf`. `Ok(None)`: need more bytes. `Ok(Some((n,
/// head)))`: the head took `n` bytes; an interim (1xx) head has `status < 200` and the caller
/// skips it. `head_request`: the request was HEAD, so the response has no body whatever it says.
pub fn parse_response_head(
    buf: &[u8],
    head_request: bool,
    upgrading: bool,
    max_headers: usize,
) -> Result<Option<(usize, ResponseHead)>, &'static str> {
    // On the stack for the usual limit, and left uninitialised: httparse writes the fields it
    // finds and hands back only those (zeroing 100 of them cost more than parsing the head).
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 100];
    let mut heap = Vec::new();
    let storage: &mut [MaybeUninit<httparse::Header<'_>>] = if max_headers <= stack.len() {
        &mut stack[..max_headers]
    } else {
        heap.resize_with(max_headers, MaybeUninit::uninit);
        &mut heap
    };
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, storage);
    let n = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(BAD_RESPONSE),
    };
    let status = resp.code.unwrap_or(0);
    let upgrade = if status == 101 {
        // A switch nobody asked for cannot be relayed (RFC 9110 §15.2.2); one that was asked
        // for must say to what.
        let to = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .filter(|v| !v.trim().is_empty());
        match (upgrading, to) {
            (true, Some(v)) => Some(v.trim().to_string()),
            _ => return Err(BAD_RESPONSE),
        }
    } else {
        None
    };
    if !(100..=599).contains(&status) {
        return Err(BAD_RESPONSE);
    }
    let named = ConnectionTokens::of(resp.headers.iter().map(|h| (h.name, h.value)));
    let keep_alive = if named.contains("close") {
        false
    } else {
        resp.version == Some(1) || named.contains("keep-alive")
    };
    let mut headers = Vec::new();
    // The head's own length bounds its fields (`buf` may hold the body too: a block over
    // 1 KiB would miss the allocator's per-thread cache).
    let mut raw_headers = Vec::with_capacity(n);
    for h in resp.headers.iter() {
        // The framing fields describe this hop's bytes: the decoder removes that framing, and
        // the session frames the body anew for its client.
        if h.name.eq_ignore_ascii_case("content-length")
            || is_hop_by_hop(h.name)
            || named.contains(h.name)
        {
            continue;
        }
        push_field(&mut headers, &mut raw_headers, h.name, h.value);
    }
    let fields = resp.headers.iter().map(|h| (h.name, h.value));
    let (framing, length) =
        Decoder::for_response(status, head_request, fields).map_err(|_| BAD_RESPONSE)?;
    // A chunked or close-delimited answer's length is unknown; an answer to HEAD (or a 304)
    // keeps the upstream's, to announce the length a GET would have had.
    let chunked = resp
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    let length = if chunked || (!framing.is_finished() && framing.remaining().is_none()) {
        None
    } else {
        length
    };
    Ok(Some((
        n,
        ResponseHead {
            status,
            reason: resp
                .reason
                .and_then(|r| super::message::foreign_reason(status, r)),
            headers,
            raw_headers,
            framing,
            length,
            local_redirect: None,
            keep_alive,
            upgrade,
        },
    )))
}

/// Keep a relayed field. A redirect (`Location`, `Refresh`) is kept as text, to be rewritten
/// to this server's URL (its non-ASCII bytes percent-encoded: a URI has no other way to carry
/// them); every other field is copied byte for byte into `raw`, one line, without a string
/// per name and value (httparse let no CR, LF or NUL into a value, so the line cannot be
/// split, and obs-text goes on unchanged, as nginx relays it). A field the session writes
/// itself is left to it.
pub fn push_field(headers: &mut Vec<(Text, Text)>, raw: &mut Vec<u8>, name: &str, value: &[u8]) {
    if super::wire::fields::owned_by_session(name) {
        return;
    }
    if ["location", "refresh"]
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name))
    {
        let v = match std::str::from_utf8(value) {
            Ok(v) => v.to_string(),
            Err(_) => {
                percent_encoding::percent_encode(value, percent_encoding::CONTROLS).to_string()
            }
        };
        headers.push((Text::Owned(name.to_string()), Text::Owned(v)));
        return;
    }
    raw.extend_from_slice(name.as_bytes());
    raw.extend_from_slice(b": ");
    raw.extend_from_slice(value);
    raw.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values that are not UTF-8: a redirect is percent-encoded (so it can still be rewritten),
    /// the session's own fields are dropped (it writes them), the rest go as raw lines.
    #[test]
    fn fields_that_are_not_utf8_keep_their_bytes_but_not_the_sessions_fields() {
        let (mut headers, mut raw) = (Vec::new(), Vec::new());
        push_field(&mut headers, &mut raw, "Location", b"http://up/caf\xe9");
        push_field(&mut headers, &mut raw, "Date", b"today\xff");
        push_field(&mut headers, &mut raw, "Server", b"evil\xe9");
        push_field(&mut headers, &mut raw, "X-Latin", b"caf\xe9");
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].1, "http://up/caf%E9");
        assert_eq!(raw, b"X-Latin: caf\xe9\r\n");
    }

    #[test]
    fn upstream_urls_parse_like_nginx_proxy_pass() {
        let u = Upstream::parse("http://127.0.0.1:9000/v1").unwrap();
        assert_eq!(u.target, Target::Tcp("127.0.0.1:9000".into()));
        assert_eq!(u.authority, "127.0.0.1:9000");
        assert_eq!(u.path.as_deref(), Some("/v1"));
        let u = Upstream::parse("http://example.com").unwrap();
        assert_eq!(u.target, Target::Tcp("example.com:80".into()));
        assert_eq!(u.authority, "example.com");
        assert_eq!(u.path, None);
        let u = Upstream::parse("http://[::1]:81/").unwrap();
        assert_eq!(u.target, Target::Tcp("[::1]:81".into()));
        let u = Upstream::parse("http://unix:/run/app.sock:/api").unwrap();
        assert_eq!(u.target, Target::Unix("/run/app.sock".into()));
        assert_eq!(u.path.as_deref(), Some("/api"));
        assert!(!u.tls);
        let u = Upstream::parse("https://api.example:8443/v2").unwrap();
        assert_eq!(u.target, Target::Tcp("api.example:8443".into()));
        assert_eq!(u.authority, "api.example:8443");
        assert!(u.tls);
        let u = Upstream::parse("https://api.example").unwrap();
        assert_eq!(u.target, Target::Tcp("api.example:443".into()));
        assert_eq!(u.authority, "api.example");
        for bad in [
            "https://unix:/run/app.sock",
            "ftp://x",
            "x:80",
            "http://",
            "http://h:0",
            "http://h:99999",
            "http://u@h",
            "http://h/?q",
            "http://unix:rel.sock",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_matched_prefix_is_replaced_by_the_upstream_path() {
        let with = |p: Option<&str>| Upstream {
            tls: false,
            target: Target::Tcp("h:80".into()),
            authority: "h".into(),
            path: p.map(String::from),
        };
        assert_eq!(with(Some("/v1")).upstream_path("/api/x", "/x"), "/v1/x");
        assert_eq!(with(Some("/v1")).upstream_path("/api", ""), "/v1");
        assert_eq!(with(Some("/v1/")).upstream_path("/api", ""), "/v1/");
        assert_eq!(with(Some("/")).upstream_path("/api/x/", "/x/"), "/x/");
        assert_eq!(with(Some("/")).upstream_path("/api", ""), "/");
        assert_eq!(with(None).upstream_path("/api/x", "/x"), "/api/x");
    }

    fn request_bytes(raw: &[u8], body: RequestBody) -> String {
        let mut storage = [httparse::EMPTY_HEADER; 32];
        let head = super::super::wire::parse_head(raw, &mut storage, &Default::default()).unwrap();
        let up = Upstream::parse("http://10.0.0.1:8080/base").unwrap();
        let out = build_request(
            &head.request,
            &up,
            "/base/x",
            body,
            &ClientInfo { ip: "192.0.2.7" },
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_and_forwarding_headers_added() {
        let s = request_bytes(
            b"POST /api/x?a=1 HTTP/1.1\r\nHost: front.example\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Authorization: x\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 203.0.113.1\r\nAccept: */*\r\n\r\n",
            RequestBody::Chunked,
        );
        assert!(
            s.starts_with("POST /base/x?a=1 HTTP/1.1\r\nHost: 10.0.0.1:8080\r\n"),
            "{s}"
        );
        for gone in [
            "X-Secret",
            "Keep-Alive",
            "TE:",
            "Upgrade",
            "Proxy-",
            "front.example\r\nConnection",
        ] {
            assert!(!s.contains(gone), "{gone} leaked: {s}");
        }
        // The client's own framing is never relayed; ours says how the body comes.
        assert_eq!(s.matches("Transfer-Encoding").count(), 1, "{s}");
        assert!(s.contains("Accept: */*\r\n"));
        assert!(s.contains("X-Forwarded-For: 203.0.113.1, 192.0.2.7\r\n"));
        assert!(s.contains("X-Forwarded-Proto: http\r\n"));
        assert!(s.contains("X-Forwarded-Host: front.example\r\n"));
        assert!(s.contains("Forwarded: for=192.0.2.7;host=front.example;proto=http\r\n"));
        assert!(s.contains("Via: 1.1 tincan\r\n"));
        // The body is re-chunked as it streams; the connection is left to persist.
        assert!(
            s.ends_with("Via: 1.1 tincan\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "{s}"
        );
        assert!(!s.contains("Connection"), "{s}");
        let s = request_bytes(
            b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n",
            RequestBody::Length(5),
        );
        assert!(s.ends_with("Content-Length: 5\r\n\r\n"), "{s}");
        let s = request_bytes(b"POST /x HTTP/1.1\r\nHost: h\r\n\r\n", RequestBody::None);
        assert!(s.ends_with("Content-Length: 0\r\n\r\n"), "{s}");
    }

    #[test]
    fn response_heads_decide_the_body_framing() {
        let p = |raw: &[u8], head: bool| parse_response_head(raw, head, false, 64);
        let (n, h) = p(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close, X-A\r\nX-A: 1\r\nServer: up\r\n\r\nhello", false)
            .unwrap()
            .unwrap();
        assert_eq!(n, 82);
        assert!(h.framing.remaining() == Some(5));
        assert_eq!(h.length, Some(5));
        assert!(h
            .headers
            .iter()
            .all(|(k, _)| k != "X-A" && k != "Connection"));
        let (_, h) = p(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(h.framing.is_chunked());
        assert_eq!(h.length, None);
        let (_, h) = p(b"HTTP/1.0 200 OK\r\n\r\n", false).unwrap().unwrap();
        assert!(h.framing == Decoder::until_close());
        let (_, h) = p(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert!(h.framing.is_finished());
        assert_eq!(h.length, Some(7));
        let (_, h) = p(b"HTTP/1.1 100 Continue\r\n\r\n", false).unwrap().unwrap();
        assert_eq!(h.status, 100);
        assert!(p(b"HTTP/1.1 200 OK\r\nContent-Le", false)
            .unwrap()
            .is_none());
        let bad = crate::protocol::test_cases(include_str!("testdata/upstream-bad-heads.txt"));
        assert_eq!(bad.len(), 8);
        for bad in &bad {
            assert!(p(bad, false).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    /// The upstream's own reason phrase reaches the client (as nginx relays it); the standard
    /// one and a missing one leave the server's.
    #[test]
    fn an_upstream_reason_phrase_is_kept() {
        let reason = |raw: &[u8]| {
            parse_response_head(raw, false, false, 8)
                .unwrap()
                .unwrap()
                .1
                .reason
        };
        assert_eq!(
            reason(b"HTTP/1.1 401 Whatever Reason\r\n\r\n").as_deref(),
            Some("Whatever Reason")
        );
        assert_eq!(reason(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        assert_eq!(reason(b"HTTP/1.1 429 \r\n\r\n"), None);
    }

    /// An absolute-form target's authority is the request's host (RFC 9112 §3.2.2), a name
    /// with `_` is not forwarded, and a client with no IP is `for=unknown` (RFC 7239 §6).
    #[test]
    fn forwarding_uses_the_targets_authority_and_drops_underscored_names() {
        let s = request_bytes(
            b"GET http://a.example/api/x HTTP/1.1\r\nHost: b.example\r\nX_Auth_User: admin\r\nX-Auth-User: real\r\n\r\n",
            RequestBody::None,
        );
        assert!(s.contains("X-Forwarded-Host: a.example\r\n"), "{s}");
        assert!(s.contains(";host=a.example;"), "{s}");
        assert!(!s.contains("X_Auth_User"), "{s}");
        assert!(s.contains("X-Auth-User: real\r\n"), "{s}");
        let mut storage = [httparse::EMPTY_HEADER; 8];
        let raw = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        let head = super::super::wire::parse_head(raw, &mut storage, &Default::default()).unwrap();
        let up = Upstream::parse("http://10.0.0.1:8080").unwrap();
        let out = build_request(
            &head.request,
            &up,
            "/",
            RequestBody::None,
            &ClientInfo { ip: "unix" },
        );
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("Forwarded: for=unknown;host=h;proto=http\r\n"),
            "{out}"
        );
    }
}
