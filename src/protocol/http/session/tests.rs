//! The HTTP/1 session driven by hand: bytes in, bytes out, no sockets.

use super::*;
use crate::protocol::http::message::{Body, Request, Response};
use crate::protocol::test_peer as peer;
use std::time::Duration;

/// Answers `200` with the path as the body (and `close` for `/close`).
struct Echo;
impl Handler for Echo {
    fn handle(&self, req: &Request<'_>, _peer: &Peer) -> Response {
        let mut r = Response::new(200)
            .header("Content-Type", "text/plain")
            .header("Content-Length", "999")
            .with_body(Body::Bytes(bytes::Bytes::from(format!(
                "{} {}",
                req.method, req.path
            ))));
        r.close = req.path == "/close";
        r
    }
}

fn service(limits: Limits, options: HttpOptions) -> HttpService {
    HttpService::new(Arc::new(Echo), limits, options)
}

/// Feed `raw` in one piece; (output, next).
fn run(svc: &HttpService, raw: &[u8]) -> (String, Next) {
    let t0 = Instant::now();
    let mut s = svc.session_at(&peer(), t0);
    let mut input = ReadBuf::from_bytes(raw);
    let mut out = Outbox::new();
    let next = s.on_input(&mut input, &mut out, t0);
    (String::from_utf8_lossy(&out.take_all()).into_owned(), next)
}

fn statuses(out: &str) -> Vec<&str> {
    out.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect()
}

#[test]
fn pipelined_requests_in_one_read_get_responses_in_order() {
    let svc = service(Limits::default(), HttpOptions::default());
    let (out, next) = run(
        &svc,
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(statuses(&out), ["200", "200", "200"]);
    let a = out.find("GET /a").unwrap();
    let c = out.find("GET /c").unwrap();
    assert!(a < c);
    assert!(!out.contains("HEAD /b"), "HEAD sent a body: {out}");
    assert_eq!(out.matches("Content-Length: 6\r\n").count(), 2);
    assert_eq!(
        out.matches("Content-Length: 7\r\n").count(),
        1,
        "HEAD keeps GET's length"
    );
    assert!(
        !out.contains("999"),
        "the handler's Content-Length must not leak"
    );
    assert!(matches!(next, Next::Continue { wake_at: Some(_) }));
}

#[test]
fn every_response_carries_date_server_and_length() {
    let svc = service(Limits::default(), HttpOptions::default());
    let (out, _) = run(&svc, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 200 OK\r\nDate: "), "{out}");
    assert!(out.contains(" GMT\r\n"));
    assert!(out.contains("Server: tincan\r\n"));
    assert!(out.ends_with("\r\n\r\nGET /"));
    let hidden = service(
        Limits::default(),
        HttpOptions {
            server_tokens: false,
            extra_headers: vec![("X-Frame-Options".into(), "DENY".into())],
            ..HttpOptions::default()
        },
    );
    let (out, _) = run(&hidden, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(!out.contains("Server:"));
    assert!(out.contains("X-Frame-Options: DENY\r\n"));
}

#[test]
fn http10_closes_unless_it_asks_for_keep_alive() {
    let svc = service(Limits::default(), HttpOptions::default());
    let (out, next) = run(&svc, b"GET / HTTP/1.0\r\n\r\n");
    assert!(out.contains("Connection: close\r\n"));
    // Read whole with nothing behind it: no lingering read is needed.
    assert_eq!(next, Next::CloseAfterReply);
    let (out, next) = run(&svc, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert!(out.contains("Connection: keep-alive\r\n"));
    assert!(!next.is_close());
    let (out, next) = run(
        &svc,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(statuses(&out), ["200"]);
    // A request pipelined behind the last one: the client may still be sending; linger.
    assert_eq!(next, Next::CloseAfterFlush);
}

#[test]
fn keep_alive_off_closes_every_connection() {
    let svc = service(
        Limits::default(),
        HttpOptions {
            keep_alive: false,
            ..HttpOptions::default()
        },
    );
    let (out, next) = run(&svc, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.contains("Connection: close\r\n"));
    assert_eq!(next, Next::CloseAfterReply);
}

#[test]
fn keep_alive_off_still_answers_what_was_pipelined_and_closes_after_the_last() {
    let svc = service(
        Limits::default(),
        HttpOptions {
            keep_alive: false,
            ..HttpOptions::default()
        },
    );
    let get = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    let post = b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\r\n";
    let (out, next) = run(&svc, &[&get[..], post, get].concat());
    assert_eq!(statuses(&out), ["200", "200", "200"]);
    assert_eq!(out.matches("Connection: close\r\n").count(), 1, "{out}");
    assert!(
        out.find("Connection: close").unwrap() > out.find("POST /b").unwrap(),
        "only the last answer closes: {out}"
    );
    assert_eq!(next, Next::CloseAfterReply);
    // A next request still arriving is not waited for: the answer before it closes.
    let (out, next) = run(&svc, &[&get[..], b"GET /b HTTP/1.1\r\nHo"].concat());
    assert_eq!(statuses(&out), ["200"]);
    assert!(out.contains("Connection: close\r\n"));
    assert_eq!(next, Next::CloseAfterFlush);
}

#[test]
fn the_last_allowed_request_gets_connection_close() {
    let svc = service(
        Limits {
            max_requests_per_connection: 2,
            ..Limits::default()
        },
        HttpOptions::default(),
    );
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3);
    let (out, next) = run(&svc, &req);
    assert_eq!(statuses(&out), ["200", "200"]);
    assert_eq!(out.matches("Connection: close").count(), 1);
    assert_eq!(next, Next::CloseAfterFlush);
}

#[test]
fn bodies_are_discarded_across_reads_and_the_connection_stays_usable() {
    let svc = service(Limits::default(), HttpOptions::default());
    let t0 = Instant::now();
    let mut s = svc.session_at(&peer(), t0);
    let mut out = Outbox::new();
    let mut input =
        ReadBuf::from_bytes(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234");
    s.on_input(&mut input, &mut out, t0);
    assert!(out.is_empty(), "no answer before the body ends");
    input.extend(
        b"56789POST /q HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    );
    s.on_input(&mut input, &mut out, t0);
    input.extend(b"0\r\n\r\nGET /r HTTP/1.1\r\nHost: x\r\n\r\n");
    let next = s.on_input(&mut input, &mut out, t0);
    let text = String::from_utf8(out.take_all()).unwrap();
    assert_eq!(statuses(&text), ["200", "200", "200"]);
    assert!(text.contains("POST /p") && text.contains("POST /q") && text.contains("GET /r"));
    assert!(!next.is_close());
    assert!(input.is_empty());
}

#[test]
fn expect_100_continue_without_a_body_reader_gets_its_final_answer_at_once() {
    // No proxy or CGI route reads this body, so the answer is known without it: no 100
    // (RFC 9110 §10.1.1), the answer, and a lingering close (the body may still come).
    let svc = service(Limits::default(), HttpOptions::default());
    let t0 = Instant::now();
    let mut s = svc.session_at(&peer(), t0);
    let mut out = Outbox::new();
    let mut input = ReadBuf::from_bytes(
        b"PUT /u HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    );
    let next = s.on_input(&mut input, &mut out, t0);
    let text = String::from_utf8(out.take_all()).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Connection: close\r\n"), "{text}");
    assert!(!text.contains("100 Continue"));
    assert_eq!(next, Next::CloseAfterFlush);
    // Without the expectation the body is read and discarded, then answered.
    let (text, next) = run(
        &svc,
        b"PUT /u HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(!next.is_close());
    let (out, next) = run(
        &svc,
        b"PUT /u HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\nExpect: 100-continue\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
    assert!(!out.contains("100 Continue"));
    assert_eq!(next, Next::CloseAfterFlush);
}

#[test]
fn smuggling_attempts_get_400_and_close() {
    let svc = service(Limits::default(), HttpOptions::default());
    for raw in [
        &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        let (out, next) = run(&svc, raw);
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        assert!(out.contains("Connection: close\r\n"));
        assert!(out.contains("text/html"));
        assert_eq!(statuses(&out).len(), 1);
        assert_eq!(next, Next::CloseAfterFlush);
    }
}

#[test]
fn a_chunked_body_over_the_limit_gets_413() {
    let svc = service(
        Limits {
            max_body: 4,
            ..Limits::default()
        },
        HttpOptions::default(),
    );
    let (out, next) = run(
        &svc,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n1\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
    assert_eq!(next, Next::CloseAfterFlush);
}

#[test]
fn timers_answer_408_for_a_slow_head_and_close_idle_connections_silently() {
    let limits = Limits {
        head_timeout: Duration::from_secs(5),
        keepalive_timeout: Duration::from_secs(7),
        body_timeout: Duration::from_secs(3),
        ..Limits::default()
    };
    let svc = service(limits, HttpOptions::default());
    let t0 = Instant::now();
    let mut out = Outbox::new();

    // A partial head: 408 once the head timer (from the connection's start) expires.
    let mut s = svc.session_at(&peer(), t0);
    let mut input = ReadBuf::from_bytes(b"GET / HT");
    let next = s.on_input(&mut input, &mut out, t0 + Duration::from_secs(1));
    assert_eq!(next, Next::wake_at(t0 + Duration::from_secs(5)));
    assert_eq!(
        s.on_timer(&mut out, t0 + Duration::from_secs(4)),
        Next::wake_at(t0 + Duration::from_secs(5))
    );
    assert_eq!(
        s.on_timer(&mut out, t0 + Duration::from_secs(5)),
        Next::CloseAfterFlush
    );
    assert!(String::from_utf8(out.take_all())
        .unwrap()
        .starts_with("HTTP/1.1 408 "));

    // Idle after a response: silent close after the keep-alive timeout.
    let mut s = svc.session_at(&peer(), t0);
    let mut input = ReadBuf::from_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    s.on_input(&mut input, &mut out, t0);
    out.take_all();
    let t1 = t0 + Duration::from_secs(2);
    assert_eq!(
        s.on_drained(&mut out, t1),
        Next::wake_at(t1 + Duration::from_secs(7))
    );
    assert_eq!(
        s.on_timer(&mut out, t1 + Duration::from_secs(7)),
        Next::Close
    );
    assert!(out.is_empty());

    // A stalled body: 408.
    let mut s = svc.session_at(&peer(), t0);
    let mut input =
        ReadBuf::from_bytes(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nab");
    let next = s.on_input(&mut input, &mut out, t0);
    assert_eq!(next, Next::wake_at(t0 + Duration::from_secs(3)));
    assert_eq!(
        s.on_timer(&mut out, t0 + Duration::from_secs(3)),
        Next::CloseAfterFlush
    );
    assert!(String::from_utf8(out.take_all())
        .unwrap()
        .starts_with("HTTP/1.1 408 "));

    // Nothing sent at all: a silent close.
    let mut s = svc.session_at(&peer(), t0);
    assert_eq!(
        s.on_timer(&mut out, t0 + Duration::from_secs(5)),
        Next::Close
    );
}

#[test]
fn shutdown_closes_idle_connections_and_finishes_a_request_in_flight() {
    let svc = service(Limits::default(), HttpOptions::default());
    let t0 = Instant::now();
    let mut out = Outbox::new();
    let mut s = svc.session_at(&peer(), t0);
    assert!(s.on_shutdown(&mut out, t0).is_close());

    let mut s = svc.session_at(&peer(), t0);
    let mut input = ReadBuf::from_bytes(b"GET / HTTP/1.1\r\nHo");
    s.on_input(&mut input, &mut out, t0);
    assert!(!s.on_shutdown(&mut out, t0).is_close());
    input.extend(b"st: x\r\n\r\n");
    assert_eq!(s.on_input(&mut input, &mut out, t0), Next::CloseAfterReply);
    let text = String::from_utf8(out.take_all()).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 ") && text.contains("Connection: close\r\n"));
}

#[test]
fn requests_before_a_half_close_are_answered() {
    let svc = service(Limits::default(), HttpOptions::default());
    let t0 = Instant::now();
    let mut s = svc.session_at(&peer(), t0);
    let mut out = Outbox::new();
    let mut input = ReadBuf::from_bytes(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c",
    );
    let next = s.on_eof(&mut input, &mut out, t0);
    assert_eq!(next, Next::CloseAfterFlush);
    assert_eq!(
        statuses(&String::from_utf8(out.take_all()).unwrap()),
        ["200", "200"]
    );
}

#[test]
fn a_pipelining_flood_pauses_while_output_is_queued() {
    let svc = service(
        Limits::default(),
        HttpOptions {
            pipeline_pause: 300,
            ..HttpOptions::default()
        },
    );
    let t0 = Instant::now();
    let mut s = svc.session_at(&peer(), t0);
    let mut out = Outbox::new();
    let mut input = ReadBuf::from_bytes(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(10));
    s.on_input(&mut input, &mut out, t0);
    let mut text = String::from_utf8(out.take_all()).unwrap();
    let first = statuses(&text).len();
    assert!((1..10).contains(&first), "answered {first}");
    // The rest are answered as the output drains, without more input.
    let mut drains = 0;
    loop {
        s.on_drained(&mut out, t0);
        let more = String::from_utf8(out.take_all()).unwrap();
        if more.is_empty() {
            break;
        }
        text += &more;
        drains += 1;
    }
    assert!(drains > 0);
    assert_eq!(statuses(&text).len(), 10);
    // Input arriving while requests are set aside is answered after them, in order.
    let mut input = ReadBuf::from_bytes(&b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n".repeat(10));
    s.on_input(&mut input, &mut out, t0);
    let mut text = String::from_utf8(out.take_all()).unwrap();
    input.extend(b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n");
    s.on_input(&mut input, &mut out, t0);
    text += &String::from_utf8(out.take_all()).unwrap();
    loop {
        s.on_drained(&mut out, t0);
        let more = String::from_utf8(out.take_all()).unwrap();
        if more.is_empty() {
            break;
        }
        text += &more;
    }
    assert_eq!(statuses(&text).len(), 11);
    assert!(text.ends_with("GET /last"), "order kept");
}

#[test]
fn bodiless_statuses_send_no_length_and_no_body() {
    struct NotModified;
    impl Handler for NotModified {
        fn handle(&self, _: &Request<'_>, _: &Peer) -> Response {
            Response::new(304).with_body(Body::Bytes(bytes::Bytes::from_static(b"oops")))
        }
    }
    let svc = HttpService::new(
        Arc::new(NotModified),
        Limits::default(),
        HttpOptions::default(),
    );
    let (out, _) = run(&svc, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 304 Not Modified\r\n"));
    assert!(!out.contains("Content-Length") && !out.contains("oops"));
}

/// xorshift64*: a deterministic stream for the mutation test.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Split a session's output into responses and check each is well formed: a status line,
/// CRLF header lines, and exactly Content-Length body bytes.
fn check_wire(out: &[u8]) -> usize {
    let mut rest = out;
    let mut n = 0;
    while !rest.is_empty() {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete head");
        let head = std::str::from_utf8(&rest[..end]).expect("an ASCII head");
        assert!(head.starts_with("HTTP/1.1 "), "{head}");
        let status: u16 = head[9..12].parse().unwrap();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |v| v.parse::<usize>().unwrap());
        assert!(status == 100 || head.contains("Content-Length: "), "{head}");
        let after = &rest[end + 4..];
        // A HEAD answer has a length and no body: the next thing is a response or nothing.
        let head_answer = after.is_empty() || after.starts_with(b"HTTP/1.1 ");
        let body = if head_answer { 0 } else { len };
        assert!(after.len() >= body, "{head}: body cut short");
        rest = &after[body..];
        n += 1;
    }
    n
}

#[test]
fn mutated_and_split_input_never_panics_and_never_garbles_the_wire() {
    let seeds: &[&[u8]] = &[
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcdeGET / HTTP/1.0\r\n\r\n",
        b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\nT: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    ];
    let limits = Limits {
        max_request_line: 64,
        max_header: 64,
        max_head: 256,
        max_headers: 6,
        max_body: 64,
        ..Limits::default()
    };
    let svc = service(limits, HttpOptions::default());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let alphabet = b"\r\n :;,0123456789abcdefGETHOSTPhttp/1.\x00\xff\t";
    let (mut answers, mut refusals) = (0, 0);
    for _ in 0..3000 {
        let mut input = seeds[rng.below(seeds.len())].to_vec();
        for _ in 0..rng.below(4) {
            let at = rng.below(input.len() + 1);
            let b = alphabet[rng.below(alphabet.len())];
            match rng.below(3) {
                0 if at < input.len() => input[at] = b,
                1 if at < input.len() => {
                    input.remove(at);
                }
                _ => input.insert(at, b),
            }
        }
        let t0 = Instant::now();
        let mut s = svc.session_at(&peer(), t0);
        let mut out = Outbox::new();
        let mut buf = ReadBuf::new();
        let mut pos = 0;
        let mut next = Next::CONTINUE;
        while pos < input.len() && !next.is_close() {
            let n = 1 + rng.below(input.len() - pos);
            buf.extend(&input[pos..pos + n]);
            pos += n;
            next = s.on_input(&mut buf, &mut out, t0);
        }
        if !next.is_close() {
            next = s.on_eof(&mut buf, &mut out, t0);
        }
        assert!(next.is_close());
        let wire = out.take_all();
        answers += check_wire(&wire);
        refusals += usize::from(wire.windows(11).any(|w| w.starts_with(b"HTTP/1.1 4")));
    }
    // The mutations must exercise both paths, or this test proves nothing.
    assert!(
        answers > 3000 && refusals > 300,
        "{answers} answers, {refusals} refusals"
    );
}

#[test]
fn a_refused_head_request_gets_no_body() {
    let svc = service(Limits::default(), HttpOptions::default());
    let (out, _) = run(
        &svc,
        b"HEAD / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
    assert!(out.ends_with("\r\n\r\n"), "{out}");
}

#[test]
fn unknown_methods_get_501_and_bad_versions_505() {
    let svc = service(Limits::default(), HttpOptions::default());
    assert!(run(&svc, b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n")
        .0
        .starts_with("HTTP/1.1 501 "));
    assert!(run(&svc, b"GET / HTTP/3.0\r\nHost: x\r\n\r\n")
        .0
        .starts_with("HTTP/1.1 505 "));
    assert!(run(&svc, b"GET / HTTP/1.1\r\n\r\n")
        .0
        .starts_with("HTTP/1.1 400 "));
}

#[test]
fn a_higher_minor_version_is_answered_as_http_1_1() {
    // RFC 9110 §2.5: served, and kept alive as 1.1 is.
    let svc = service(Limits::default(), HttpOptions::default());
    let (out, next) = run(
        &svc,
        b"GET /v HTTP/1.2\r\nHost: x\r\n\r\nGET /w HTTP/1.9\r\nHost: x\r\n\r\n",
    );
    assert_eq!(statuses(&out), ["200", "200"], "{out}");
    assert!(out.contains("GET /v") && out.contains("GET /w"), "{out}");
    assert!(!out.contains("Connection: close"), "{out}");
    assert!(!next.is_close());
}

#[test]
fn a_connect_is_answered_and_whatever_follows_it_is_never_read_as_a_request() {
    // RFC 9110 §9.3.6: a CONNECT has no content; the bytes after its head are a tunnel's.
    let svc = service(Limits::default(), HttpOptions::default());
    let (out, next) = run(
        &svc,
        b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\nContent-Length: 3\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(statuses(&out).len(), 1, "{out}");
    assert!(out.contains("Connection: close\r\n"), "{out}");
    assert!(!out.contains("/smuggled"), "{out}");
    assert_eq!(next, Next::CloseAfterFlush);
}
