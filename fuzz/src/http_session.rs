//! `http_session`: arbitrary bytes, cut into arbitrary reads, through
//! `tincan::protocol::http::HttpSession` driven by hand (`ReadBuf::extend`, `Outbox::take_all`,
//! `on_drained` whenever the outbox emptied, as the drivers call it), in front of either a small
//! test handler or the real static-file handler over the fixture tree of [`crate::static_path`].
//!
//! Properties:
//! 1. no call panics;
//! 2. the output is a sequence of whole responses: each starts with a valid status line
//!    (`HTTP/1.1 NNN Reason` with the reason tincan gives that status), has `Name: value` header
//!    lines, a `Content-Length` unless the status forbids a body, and exactly that many body
//!    bytes (none for HEAD answers, 1xx, 204 and 304);
//! 3. input after a close is not processed: no response follows one that says
//!    `Connection: close`, and such a response ends the connection (the session returned a
//!    closing `Next`; the harness, like the drivers, then stops calling it);
//! 4. once the peer half-closes, or a timer long past every deadline fires, the session closes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tincan::protocol::http::message::reason;
use tincan::protocol::http::static_files::{StaticConfig, StaticFiles};
use tincan::protocol::http::{Body, Handler, HttpOptions, HttpService, Limits, Request, Response};
use tincan::{Next, Outbox, Peer, PeerAddr, ReadBuf, Session};

use crate::{byte, cuts, pieces, raw_cuts, Unstructured};

/// Request pieces, for inputs spelled from atoms rather than raw bytes.
const ATOMS: &[&[u8]] = &[
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"OPTIONS ",
    b"/",
    b"/close",
    b"/204",
    b"/304",
    b"/in/b.txt",
    b"/a/",
    b"/cfg",
    b"/out/secret.txt",
    b"%2e%2e/",
    b"?q=1",
    b" HTTP/1.1\r\n",
    b" HTTP/1.1\r\n",
    b" HTTP/1.0\r\n",
    b"Host: x\r\n",
    b"Host: x\r\n",
    b"Content-Length: 5\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive\r\n",
    b"Expect: 100-continue\r\n",
    b"Range: bytes=0-0,2-\r\n",
    b"Range: bytes=-1\r\n",
    b"Range: bytes\xc3\xa9=0-1\r\n",
    b"If-None-Match: *\r\n",
    b"If-Range: \"x\"\r\n",
    b"Accept-Encoding: gzip\r\n",
    b"\r\n",
    b"\r\n",
    b"\r\n",
    b"abcde",
    b"5\r\nhello\r\n0\r\n\r\n",
    b":",
    b" ",
    b"\n",
    b"\t",
    b"\x00",
    b"\xff",
    b"0",
    b"9",
];

/// A handler whose answers depend on the path: `/204` and `/304` have bodies the session must
/// drop, `/close` asks to close, anything else echoes the request in the body.
struct Probe;

impl Handler for Probe {
    fn handle(&self, req: &Request<'_>, _peer: &Peer) -> Response {
        let status = match req.path {
            "/204" => 204,
            "/304" => 304,
            _ => 200,
        };
        let mut r = Response::new(status)
            .header("Content-Type", "text/plain")
            .with_body(Body::Bytes(bytes::Bytes::from(format!(
                "body:{} {}",
                req.method, req.path
            ))));
        r.close = req.path == "/close";
        r
    }
}

fn peer() -> Peer {
    Peer {
        remote: PeerAddr::Tcp(([127, 0, 0, 1], 5000).into()),
        local: PeerAddr::Tcp(([127, 0, 0, 1], 80).into()),
    }
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let flags = byte(&mut u);
    let raw = raw_cuts(&mut u, 16);
    let extra = byte(&mut u);
    let payload = u.take_rest();
    let input: Vec<u8> = if flags & 16 != 0 {
        payload
            .iter()
            .flat_map(|&b| ATOMS[b as usize % ATOMS.len()].iter().copied())
            .collect()
    } else {
        payload.to_vec()
    };
    let handler: Arc<dyn Handler> = if flags & 1 != 0 {
        Arc::new(static_handler(extra & 1 != 0))
    } else {
        Arc::new(Probe)
    };
    let limits = if flags & 2 != 0 {
        Limits {
            max_request_line: 48,
            max_header: 48,
            max_head: 160,
            max_headers: 4,
            max_body: 16,
            max_requests_per_connection: 1 + u32::from(extra >> 4),
            ..Limits::default()
        }
    } else {
        Limits::default()
    };
    let options = HttpOptions {
        pipeline_pause: if flags & 8 != 0 { 64 } else { 256 * 1024 },
        keep_alive: extra & 2 == 0,
        ..HttpOptions::default()
    };
    let max_head = limits.max_head;
    let svc = HttpService::new(handler, limits, options);
    let cuts = cuts(&raw, input.len());
    let ending = match (flags >> 5) & 3 {
        0 => Ending::None,
        1 => Ending::Eof,
        2 => Ending::Timer,
        _ => Ending::Shutdown,
    };
    check(&svc, max_head, &pieces(&input, &cuts), ending);
}

/// The static handler over the fixture tree (built once per process).
fn static_handler(compress: bool) -> StaticFiles {
    let root = crate::static_path::fixture();
    StaticFiles::new(StaticConfig {
        root: root.to_path_buf(),
        compress,
        ..StaticConfig::default()
    })
    .expect("the fixture root is a valid document root")
}

/// How the connection ends after the last read, if it is still open.
#[derive(Clone, Copy, Debug)]
pub enum Ending {
    /// The test just stops (the connection would stay open).
    None,
    /// The peer half-closes.
    Eof,
    /// A timer fires long after every deadline.
    Timer,
    /// The server shuts down gracefully.
    Shutdown,
}

/// Drive one connection; the whole wire and whether it ended closed. Between reads, once the
/// output has drained, at most an unfinished head (`max_head` bytes) may wait in the `ReadBuf`.
pub fn drive(
    svc: &HttpService,
    max_head: usize,
    reads: &[&[u8]],
    ending: Ending,
) -> (Vec<u8>, bool) {
    let t0 = Instant::now();
    let mut s = svc.session_at(&peer(), t0);
    let mut input = ReadBuf::new();
    let mut out = Outbox::new();
    let mut wire = Vec::new();
    // The driver writes everything queued; when the outbox empties after holding something it
    // calls `on_drained`, which may queue more (pipelined requests set aside during a pause).
    let settle = |s: &mut tincan::protocol::http::HttpSession,
                  out: &mut Outbox,
                  wire: &mut Vec<u8>,
                  mut next: Next| {
        let mut rounds = 0;
        while !next.is_close() && !out.is_empty() {
            wire.extend(out.take_all());
            next = s.on_drained(out, t0);
            rounds += 1;
            assert!(rounds < 100_000, "on_drained keeps producing output");
        }
        wire.extend(out.take_all());
        next
    };
    for r in reads {
        input.extend(r);
        let next = s.on_input(&mut input, &mut out, t0);
        if settle(&mut s, &mut out, &mut wire, next).is_close() {
            return (wire, true);
        }
        assert!(
            input.len() <= max_head,
            "{} bytes left buffered with max_head {max_head}",
            input.len()
        );
    }
    let next = match ending {
        Ending::None => return (wire, false),
        Ending::Eof => s.on_eof(&mut input, &mut out, t0),
        Ending::Timer => s.on_timer(&mut out, t0 + Duration::from_secs(24 * 3600)),
        Ending::Shutdown => s.on_shutdown(&mut out, t0),
    };
    let next = settle(&mut s, &mut out, &mut wire, next);
    match ending {
        Ending::Eof | Ending::Timer => assert!(next.is_close(), "{ending:?} did not close"),
        _ => {}
    }
    (wire, next.is_close())
}

/// One response found on the wire.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub close: bool,
}

/// Split `wire` into responses, checking each (property 2).
pub fn responses(wire: &[u8]) -> Vec<Answer> {
    let mut rest = wire;
    let mut found = Vec::new();
    while !rest.is_empty() {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| {
                panic!(
                    "a response head cut short: {:?}",
                    String::from_utf8_lossy(rest)
                )
            });
        let head = std::str::from_utf8(&rest[..end]).expect("a response head is UTF-8");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a bad status line: {status_line:?}"));
        assert_eq!(
            status_line,
            format!("HTTP/1.1 {status} {}", reason(status)),
            "status line"
        );
        let mut length = None;
        let mut close = false;
        for line in lines {
            let (name, value) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("a bad header line {line:?} in {head:?}"));
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)),
                "a bad header name {name:?}"
            );
            assert!(
                !value.contains(['\r', '\n']),
                "a header value with a line break"
            );
            if name.eq_ignore_ascii_case("content-length") {
                assert!(length.is_none(), "two Content-Length fields: {head:?}");
                length = Some(value.parse::<usize>().expect("a numeric Content-Length"));
            }
            if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
        let bodiless = status < 200 || status == 204 || status == 304;
        if bodiless {
            assert!(length.is_none(), "{status} with a Content-Length: {head:?}");
        } else {
            assert!(
                length.is_some(),
                "{status} without a Content-Length: {head:?}"
            );
        }
        let after = &rest[end + 4..];
        // A HEAD answer carries the length and no body: what follows is the next response or
        // nothing. (No body this harness can produce starts with a status line.)
        let head_answer = after.is_empty() || after.starts_with(b"HTTP/1.1 ");
        let body = if bodiless || head_answer {
            0
        } else {
            length.unwrap_or(0)
        };
        assert!(after.len() >= body, "{head:?}: body cut short");
        rest = &after[body..];
        found.push(Answer { status, close });
    }
    found
}

/// All the properties for one connection.
pub fn check(svc: &HttpService, max_head: usize, reads: &[&[u8]], ending: Ending) {
    let (wire, closed) = drive(svc, max_head, reads, ending);
    let answers = responses(&wire);
    if let Some(i) = answers.iter().position(|a| a.close) {
        assert_eq!(
            i + 1,
            answers.len(),
            "a response after `Connection: close`: {:?}",
            answers
        );
        assert!(closed, "`Connection: close` sent but the session went on");
    }
}
