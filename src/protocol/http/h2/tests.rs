//! The HTTP/2 session driven by hand: frames in, frames out, no sockets. Each limit from the
//! module doc has its case here; tests/h2.rs runs real clients against the binary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::frame::{self, flag, kind, setting, ErrorCode, FrameHead, PREFACE};
use super::hpack;
use crate::protocol::http::message::{Body, Handler, Request, Response};
use crate::protocol::http::{HttpOptions, HttpService, HttpSession, Limits};
use crate::protocol::test_peer as peer;
use crate::protocol::{Next, Outbox, Peer, ReadBuf, Session};

/// `/n/N` answers N bytes of `x`; anything else, `hi`.
struct Sized;

impl Handler for Sized {
    fn handle(&self, req: &Request<'_>, _peer: &Peer) -> Response {
        let n = req
            .path
            .strip_prefix("/n/")
            .and_then(|n| n.parse().ok())
            .unwrap_or(2);
        let body = if n == 2 {
            b"hi".to_vec()
        } else {
            vec![b'x'; n]
        };
        Response::new(200).with_body(Body::Bytes(body.into()))
    }
}

fn service(max_streams: u32) -> HttpService {
    let mut options = HttpOptions::default();
    options.h2.max_streams = max_streams;
    HttpService::new(Arc::new(Sized), Limits::default(), options)
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    frame::write_head(&mut b, payload.len(), kind, flags, stream);
    b.extend_from_slice(payload);
    b
}

fn request_block(path: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
    ] {
        hpack::encode_field(&mut b, n, v.as_bytes());
    }
    b
}

fn get(stream: u32, path: &str) -> Vec<u8> {
    frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        stream,
        &request_block(path),
    )
}

fn settings(items: &[(u16, u32)]) -> Vec<u8> {
    let mut b = Vec::new();
    frame::write_settings(&mut b, items);
    b
}

fn window_update(stream: u32, inc: u32) -> Vec<u8> {
    let mut b = Vec::new();
    frame::write_window_update(&mut b, stream, inc);
    b
}

/// A connection past its preface and SETTINGS exchange.
struct Conn {
    s: HttpSession,
    out: Outbox,
    now: Instant,
}

impl Conn {
    fn new(max_streams: u32) -> Conn {
        let now = Instant::now();
        let mut c = Conn {
            s: service(max_streams).session_at(&peer(), now),
            out: Outbox::new(),
            now,
        };
        let mut first = PREFACE.to_vec();
        first.extend(settings(&[]));
        let (frames, next) = c.send(&first);
        assert!(!next.is_close());
        assert_eq!(frames[0].0.kind, kind::SETTINGS, "the server's preface");
        assert!(frames
            .iter()
            .any(|(h, _)| h.kind == kind::SETTINGS && h.flags & flag::ACK != 0));
        c
    }

    fn send(&mut self, bytes: &[u8]) -> (Vec<(FrameHead, Vec<u8>)>, Next) {
        let mut input = ReadBuf::from_bytes(bytes);
        let next = self.s.on_input(&mut input, &mut self.out, self.now);
        (parse(&self.out.take_all()), next)
    }

    fn drain(&mut self) -> Vec<(FrameHead, Vec<u8>)> {
        self.s.on_drained(&mut self.out, self.now);
        parse(&self.out.take_all())
    }
}

fn parse(mut b: &[u8]) -> Vec<(FrameHead, Vec<u8>)> {
    let mut v = Vec::new();
    while let Some(h) = FrameHead::parse(b) {
        let end = frame::HEADER_LEN + h.len;
        v.push((h, b[frame::HEADER_LEN..end].to_vec()));
        b = &b[end..];
    }
    v
}

fn status_of(block: &[u8]) -> String {
    let f = hpack::Decoder::default()
        .decode(block, 1 << 16, 100)
        .unwrap();
    String::from_utf8(f.list[0].1.clone()).unwrap()
}

fn goaway_code(frames: &[(FrameHead, Vec<u8>)]) -> Option<u32> {
    frames
        .iter()
        .find(|(h, _)| h.kind == kind::GOAWAY)
        .map(|(_, p)| u32::from_be_bytes([p[4], p[5], p[6], p[7]]))
}

fn rst_codes(frames: &[(FrameHead, Vec<u8>)]) -> Vec<(u32, u32)> {
    frames
        .iter()
        .filter(|(h, _)| h.kind == kind::RST_STREAM)
        .map(|(h, p)| (h.stream, u32::from_be_bytes([p[0], p[1], p[2], p[3]])))
        .collect()
}

fn data_len(frames: &[(FrameHead, Vec<u8>)], stream: u32) -> usize {
    frames
        .iter()
        .filter(|(h, _)| h.kind == kind::DATA && h.stream == stream)
        .map(|(h, _)| h.len)
        .sum()
}

#[test]
fn a_prior_knowledge_get_is_answered_with_headers_and_data() {
    let mut c = Conn::new(128);
    let (frames, next) = c.send(&get(1, "/"));
    assert!(!next.is_close());
    let (h, block) = &frames[0];
    assert_eq!((h.kind, h.stream), (kind::HEADERS, 1));
    assert_eq!(status_of(block), "200");
    let (d, body) = &frames[1];
    assert_eq!(
        (d.kind, d.flags & flag::END_STREAM),
        (kind::DATA, flag::END_STREAM)
    );
    assert_eq!(body, b"hi");
}

#[test]
fn a_preface_cut_in_two_reads_still_becomes_http2() {
    let now = Instant::now();
    let mut s = service(8).session_at(&peer(), now);
    let mut out = Outbox::new();
    let mut input = ReadBuf::from_bytes(&PREFACE[..10]);
    assert!(!s.on_input(&mut input, &mut out, now).is_close());
    assert!(out.is_empty());
    input.extend(&PREFACE[10..]);
    input.extend(&get(1, "/"));
    s.on_input(&mut input, &mut out, now);
    let frames = parse(&out.take_all());
    assert!(frames.iter().any(|(h, _)| h.kind == kind::HEADERS));
}

#[test]
fn a_body_larger_than_the_window_waits_for_window_updates() {
    let mut c = Conn::new(128);
    let (frames, _) = c.send(&get(1, "/n/200000"));
    // The default windows (65,535 bytes) allow that much and no more.
    assert_eq!(data_len(&frames, 1), 65_535);
    assert!(c.drain().is_empty());
    let (frames, _) = c.send(&[window_update(0, 200_000), window_update(1, 200_000)].concat());
    assert_eq!(data_len(&frames, 1), 200_000 - 65_535);
    assert_eq!(
        frames.last().unwrap().0.flags & flag::END_STREAM,
        flag::END_STREAM
    );
}

#[test]
fn an_initial_window_change_applies_to_open_streams() {
    let mut c = Conn::new(128);
    let (frames, _) = c.send(
        &[
            settings(&[(setting::INITIAL_WINDOW_SIZE, 0)]),
            get(1, "/n/1000"),
        ]
        .concat(),
    );
    assert_eq!(data_len(&frames, 1), 0, "a zero window holds the body back");
    let (frames, _) = c.send(&settings(&[(setting::INITIAL_WINDOW_SIZE, 600)]));
    assert_eq!(data_len(&frames, 1), 600);
    let (frames, _) = c.send(&window_update(1, 400));
    assert_eq!(data_len(&frames, 1), 400);
}

#[test]
fn streams_past_the_limit_are_refused() {
    let mut c = Conn::new(2);
    // Three requests whose bodies have not come: all three would be open at once.
    let open = |id| frame(kind::HEADERS, flag::END_HEADERS, id, &request_block("/"));
    let (frames, next) = c.send(&[open(1), open(3), open(5)].concat());
    assert!(!next.is_close());
    assert_eq!(rst_codes(&frames), [(5, ErrorCode::RefusedStream as u32)]);
}

#[test]
fn an_hpack_bomb_gets_431_and_the_connection_lives() {
    let mut c = Conn::new(128);
    let mut block = request_block("/");
    // One 4000-byte field into the dynamic table, then named again 100 times: 400 KB of
    // fields from a 4 KB block.
    block.push(0x40);
    block.push(6);
    block.extend_from_slice(b"x-bomb");
    block.extend_from_slice(&[0x7f, 0x80 | (3873 % 128) as u8, (3873 / 128) as u8]);
    block.extend(std::iter::repeat_n(b'z', 4000));
    block.extend(std::iter::repeat_n(0x80 | 62, 100));
    let (frames, next) = c.send(&frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &block,
    ));
    assert!(!next.is_close());
    assert_eq!(status_of(&frames[0].1), "431");
    let (frames, _) = c.send(&get(3, "/"));
    assert_eq!(status_of(&frames[0].1), "200");
}

#[test]
fn a_header_block_that_does_not_decode_is_a_compression_error() {
    let mut c = Conn::new(128);
    // Indexed field 70: past the static table, and the dynamic one is empty.
    let (frames, next) = c.send(&frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &[0x80 | 70],
    ));
    assert_eq!(next, Next::CloseAfterFlush);
    assert_eq!(
        goaway_code(&frames),
        Some(ErrorCode::CompressionError as u32)
    );
}

#[test]
fn a_continuation_flood_ends_in_goaway() {
    let mut c = Conn::new(128);
    let mut bytes = frame(kind::HEADERS, 0, 1, &request_block("/"));
    let filler = vec![0u8; 16_000];
    for _ in 0..10 {
        bytes.extend(frame(kind::CONTINUATION, 0, 1, &filler));
    }
    let (frames, next) = c.send(&bytes);
    assert_eq!(next, Next::CloseAfterFlush);
    assert_eq!(
        goaway_code(&frames),
        Some(ErrorCode::EnhanceYourCalm as u32)
    );
    // Empty CONTINUATION frames grow nothing, but they are counted too.
    let mut c = Conn::new(128);
    let mut bytes = frame(kind::HEADERS, 0, 1, &request_block("/"));
    for _ in 0..1000 {
        bytes.extend(frame(kind::CONTINUATION, 0, 1, &[]));
    }
    let (frames, _) = c.send(&bytes);
    assert_eq!(
        goaway_code(&frames),
        Some(ErrorCode::EnhanceYourCalm as u32)
    );
}

#[test]
fn rapid_reset_ends_in_enhance_your_calm() {
    let mut c = Conn::new(128);
    let mut bytes = Vec::new();
    let rst = |id| {
        let mut b = Vec::new();
        frame::write_rst(&mut b, id, ErrorCode::Cancel);
        b
    };
    for i in 0..300u32 {
        let id = 2 * i + 1;
        bytes.extend(frame(
            kind::HEADERS,
            flag::END_HEADERS,
            id,
            &request_block("/"),
        ));
        bytes.extend(rst(id));
    }
    let (frames, next) = c.send(&bytes);
    assert_eq!(next, Next::CloseAfterFlush);
    assert_eq!(
        goaway_code(&frames),
        Some(ErrorCode::EnhanceYourCalm as u32)
    );
    // The same resets spread over seconds are a client changing its mind, not an attack.
    let mut c = Conn::new(128);
    for i in 0..300u32 {
        let id = 2 * i + 1;
        if i % 100 == 0 {
            c.now += Duration::from_secs(1);
        }
        let (frames, next) = c.send(
            &[
                frame(kind::HEADERS, flag::END_HEADERS, id, &request_block("/")),
                rst(id),
            ]
            .concat(),
        );
        assert!(
            !next.is_close() && goaway_code(&frames).is_none(),
            "reset {i}"
        );
    }
}

#[test]
fn control_frame_floods_end_in_enhance_your_calm() {
    let ping = frame(kind::PING, 0, 0, &[0; 8]);
    let set = settings(&[]);
    let empty = frame(kind::DATA, 0, 1, &[]);
    let wu = window_update(0, 1);
    for (name, f, open) in [
        ("PING", &ping, false),
        ("SETTINGS", &set, false),
        ("empty DATA", &empty, true),
        ("WINDOW_UPDATE", &wu, false),
    ] {
        let mut c = Conn::new(128);
        let mut bytes = Vec::new();
        if open {
            bytes.extend(frame(
                kind::HEADERS,
                flag::END_HEADERS,
                1,
                &request_block("/"),
            ));
        }
        for _ in 0..5000 {
            bytes.extend_from_slice(f);
        }
        let (frames, next) = c.send(&bytes);
        assert_eq!(next, Next::CloseAfterFlush, "{name}");
        assert_eq!(
            goaway_code(&frames),
            Some(ErrorCode::EnhanceYourCalm as u32),
            "{name}"
        );
        // The acknowledgements queued before the limit are bounded by it.
        assert!(
            frames.len() <= super::CHEAP_PER_SECOND as usize + 10,
            "{name}"
        );
    }
}

#[test]
fn window_overflow_is_a_flow_control_error() {
    let mut c = Conn::new(128);
    let (frames, next) = c.send(&window_update(0, 0x7fff_ffff));
    assert_eq!(next, Next::CloseAfterFlush);
    assert_eq!(
        goaway_code(&frames),
        Some(ErrorCode::FlowControlError as u32)
    );
    // On a stream it is a stream error.
    let mut c = Conn::new(128);
    let open = frame(kind::HEADERS, flag::END_HEADERS, 1, &request_block("/"));
    let (frames, next) = c.send(&[open, window_update(1, 0x7fff_ffff)].concat());
    assert!(!next.is_close());
    assert_eq!(
        rst_codes(&frames),
        [(1, ErrorCode::FlowControlError as u32)]
    );
}

#[test]
fn shutdown_finishes_open_streams_and_refuses_new_ones() {
    let mut c = Conn::new(128);
    let (frames, _) = c.send(
        &[
            settings(&[(setting::INITIAL_WINDOW_SIZE, 10)]),
            get(1, "/n/100"),
        ]
        .concat(),
    );
    assert_eq!(data_len(&frames, 1), 10);
    let next = c.s.on_shutdown(&mut c.out, c.now);
    assert!(!next.is_close(), "stream 1 is still being answered");
    let frames = parse(&c.out.take_all());
    let (_, p) = frames.iter().find(|(h, _)| h.kind == kind::GOAWAY).unwrap();
    assert_eq!(
        u32::from_be_bytes([p[0], p[1], p[2], p[3]]),
        1,
        "the last stream id"
    );
    let (frames, next) = c.send(&get(3, "/"));
    assert_eq!(rst_codes(&frames), [(3, ErrorCode::RefusedStream as u32)]);
    assert!(!next.is_close());
    let (frames, next) = c.send(&window_update(1, 90));
    assert_eq!(data_len(&frames, 1), 90);
    assert_eq!(next, Next::CloseAfterFlush);
}

#[test]
fn malformed_requests_are_stream_errors() {
    let mut c = Conn::new(128);
    let mut block = request_block("/");
    hpack::encode_field(&mut block, "Upper-Case", b"x");
    let mut conn_hdr = request_block("/");
    hpack::encode_field(&mut conn_hdr, "connection", b"close");
    let mut no_path = Vec::new();
    hpack::encode_field(&mut no_path, ":method", b"GET");
    hpack::encode_field(&mut no_path, ":scheme", b"http");
    let f = |id, b: &[u8]| frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, id, b);
    let (frames, next) =
        c.send(&[f(1, &block), f(3, &conn_hdr), f(5, &no_path), get(7, "/")].concat());
    assert!(!next.is_close());
    let p = ErrorCode::ProtocolError as u32;
    assert_eq!(rst_codes(&frames), [(1, p), (3, p), (5, p)]);
    assert!(frames
        .iter()
        .any(|(h, _)| h.kind == kind::HEADERS && h.stream == 7));
}

#[test]
fn protocol_violations_are_connection_errors() {
    let cases: [(&str, Vec<u8>, ErrorCode); 5] = [
        ("an even stream id", get(2, "/"), ErrorCode::ProtocolError),
        (
            "DATA on an idle stream",
            frame(kind::DATA, 0, 9, b"x"),
            ErrorCode::ProtocolError,
        ),
        (
            "a PING of 7 bytes",
            frame(kind::PING, 0, 0, &[0; 7]),
            ErrorCode::FrameSizeError,
        ),
        (
            "a frame over 16 KiB",
            frame(kind::DATA, 0, 1, &[0; 16_385]),
            ErrorCode::FrameSizeError,
        ),
        (
            "PUSH_PROMISE",
            frame(kind::PUSH_PROMISE, flag::END_HEADERS, 1, &[0, 0, 0, 2]),
            ErrorCode::ProtocolError,
        ),
    ];
    for (name, bytes, code) in cases {
        let mut c = Conn::new(128);
        let (frames, next) = c.send(&bytes);
        assert_eq!(next, Next::CloseAfterFlush, "{name}");
        assert_eq!(goaway_code(&frames), Some(code as u32), "{name}");
    }
}

#[test]
fn an_http1_request_still_gets_http1() {
    let now = Instant::now();
    let mut s = service(8).session_at(&peer(), now);
    let mut out = Outbox::new();
    let mut input = ReadBuf::from_bytes(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    s.on_input(&mut input, &mut out, now);
    assert!(out.take_all().starts_with(b"HTTP/1.1 200 OK\r\n"));
}

#[test]
fn idle_and_stalled_connections_are_closed_with_goaway() {
    // No stream: closed at the keep-alive timeout.
    let mut c = Conn::new(128);
    c.s.on_drained(&mut c.out, c.now);
    let later = c.now + Limits::default().keepalive_timeout;
    assert_eq!(c.s.on_timer(&mut c.out, later), Next::CloseAfterFlush);
    assert_eq!(goaway_code(&parse(&c.out.take_all())), Some(0));
    // A stream whose body never comes: closed at the body timeout, not kept for ever.
    let mut c = Conn::new(128);
    c.send(&frame(
        kind::HEADERS,
        flag::END_HEADERS,
        1,
        &request_block("/"),
    ));
    let early = c.now + Duration::from_secs(1);
    assert!(!c.s.on_timer(&mut c.out, early).is_close());
    let later = c.now + Limits::default().body_timeout;
    assert_eq!(c.s.on_timer(&mut c.out, later), Next::CloseAfterFlush);
}

#[test]
fn without_keep_alive_the_connection_goes_away_once_answered() {
    let options = HttpOptions {
        keep_alive: false,
        ..HttpOptions::default()
    };
    let svc = HttpService::new(Arc::new(Sized), Limits::default(), options);
    let now = Instant::now();
    let mut s = svc.session_at(&peer(), now);
    let mut out = Outbox::new();
    let mut input = ReadBuf::from_bytes(&[&PREFACE[..], &get(1, "/"), &get(3, "/")].concat());
    let next = s.on_input(&mut input, &mut out, now);
    assert_eq!(next, Next::CloseAfterFlush);
    let frames = parse(&out.take_all());
    assert_eq!(
        data_len(&frames, 1) + data_len(&frames, 3),
        4,
        "both answered"
    );
    assert_eq!(goaway_code(&frames), Some(0));
}

#[test]
fn a_stream_that_depends_on_itself_is_reset_and_not_answered() {
    let mut c = Conn::new(128);
    let mut payload = vec![0, 0, 0, 1, 16];
    payload.extend(request_block("/"));
    let f = frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM | flag::PRIORITY,
        1,
        &payload,
    );
    let (frames, next) = c.send(&[f, get(3, "/")].concat());
    assert!(!next.is_close());
    assert_eq!(rst_codes(&frames), [(1, ErrorCode::ProtocolError as u32)]);
    assert!(!frames
        .iter()
        .any(|(h, _)| h.kind == kind::HEADERS && h.stream == 1));
    assert!(frames
        .iter()
        .any(|(h, _)| h.kind == kind::HEADERS && h.stream == 3));
}
