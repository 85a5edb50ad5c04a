//! Property tests for the HTTP session: pipelined requests, however the stream is cut into reads
//! and however low the pipelining pause, get exactly one response each, in order. (Arbitrary
//! bytes are `fuzz/`'s `http_session` target.)

use std::sync::Arc;
use std::time::Instant;

use proptest::prelude::*;

use super::{Body, Handler, HttpOptions, HttpService, Limits, Request, Response};
use crate::protocol::test_peer as peer;
use crate::protocol::{Outbox, Peer, ReadBuf, Session};

/// Answers 200 with `"<method> <path>"` as the body.
struct Echo;

impl Handler for Echo {
    fn handle(&self, req: &Request<'_>, _peer: &Peer) -> Response {
        Response::new(200).with_body(Body::Bytes(bytes::Bytes::from(format!(
            "{} {}",
            req.method, req.path
        ))))
    }
}

/// One valid GET for `/r{i}`, with optional padding headers.
fn request(i: usize, pad: usize) -> String {
    let mut r = format!("GET /r{i} HTTP/1.1\r\nHost: x\r\n");
    for p in 0..pad {
        r.push_str(&format!("X-Pad-{p}: {}\r\n", "a".repeat(p * 7)));
    }
    r.push_str("\r\n");
    r
}

/// The bodies of the responses in `wire`, in order (each response has a Content-Length).
fn bodies(wire: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(wire);
    let mut rest: &str = &text;
    let mut out = Vec::new();
    while let Some(end) = rest.find("\r\n\r\n") {
        let head = &rest[..end];
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.parse().ok())
            .expect("a Content-Length");
        let body_start = end + 4;
        out.push(rest[body_start..body_start + len].to_string());
        rest = &rest[body_start + len..];
    }
    assert!(rest.is_empty(), "trailing bytes: {rest:?}");
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn pipelined_gets_split_anywhere_get_one_response_each_in_order(
        pads in proptest::collection::vec(0usize..4, 1..10),
        cuts in proptest::collection::vec(0.0f64..=1.0, 0..10),
        pause in prop_oneof![Just(1usize), Just(64), Just(256 * 1024)],
    ) {
        let wire: String = pads.iter().enumerate().map(|(i, &p)| request(i, p)).collect();
        let wire = wire.as_bytes();
        let mut at: Vec<usize> = cuts.iter().map(|f| (wire.len() as f64 * f) as usize).collect();
        at.push(wire.len());
        at.sort_unstable();

        let svc = HttpService::new(
            Arc::new(Echo),
            Limits::default(),
            HttpOptions { pipeline_pause: pause, ..HttpOptions::default() },
        );
        let t0 = Instant::now();
        let mut s = svc.session_at(&peer(), t0);
        let mut input = ReadBuf::new();
        let mut out = Outbox::new();
        let mut got = Vec::new();
        let mut from = 0;
        for to in at {
            input.extend(&wire[from..to]);
            from = to;
            let mut next = s.on_input(&mut input, &mut out, t0);
            // The driver writes everything and calls on_drained when the outbox empties.
            while !next.is_close() && !out.is_empty() {
                got.extend(out.take_all());
                next = s.on_drained(&mut out, t0);
            }
            prop_assert!(!next.is_close());
        }
        let want: Vec<String> = (0..pads.len()).map(|i| format!("GET /r{i}")).collect();
        prop_assert_eq!(bodies(&got), want);
    }
}
