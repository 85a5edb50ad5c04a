//! `echo_session`: any configuration and any input, cut into arbitrary reads, through
//! `tincan::protocol::echo::EchoSession` driven by hand (as its own unit tests do).
//!
//! Properties:
//! 1. no call panics;
//! 2. echo adds nothing and reorders nothing: without `prefix_peer` everything answered so far
//!    is a prefix of everything sent so far; with it, the answers are the sent messages each
//!    with the `"{peer}: "` prefix;
//! 3. while the session continues, what it leaves in the `ReadBuf` is bounded by `max_frame`
//!    plus the framing's own bytes (no unbounded buffering);
//! 4. after a closing `Next` the session is never called again (the harness stops, as drivers
//!    do), and the input it refused is not kept;
//! 5. null framing fed whole valid UTF-8 messages (each within `max_frame`) returns exactly the
//!    messages, however they were split;
//! 6. a UDP datagram (`EchoService::answer_datagram`) is answered with exactly its bytes (after
//!    the prefix, if asked) or not at all, and only when it is within the rules.

use std::time::Instant;

use tincan::protocol::echo::{EchoConfig, EchoService, EchoSession};
use tincan::protocol::framing::{Decoder, Framing};
use tincan::{Next, Outbox, PeerAddr, ReadBuf, Session};

use crate::{byte, cuts, pieces, raw_cuts, Unstructured};

const PEER: &str = "127.0.0.1:5555";

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let flags = byte(&mut u);
    let framing = crate::framing_decode::framing(&mut u);
    let max_frame = crate::framing_decode::max_frame(&mut u).max(1);
    let raw = raw_cuts(&mut u, 16);
    let shutdown_at = byte(&mut u) as usize;
    let payload = u.take_rest();
    let cfg = EchoConfig {
        framing,
        max_frame,
        prefix_peer: flags & 1 != 0,
        ..EchoConfig::default()
    };
    if flags & 16 != 0 {
        datagram(&cfg, payload);
        return;
    }
    if flags & 2 != 0 {
        // Whole valid messages: the answer must be exactly the input.
        let text = String::from_utf8_lossy(payload).replace('\0', "");
        let cfg = EchoConfig {
            framing: Framing::Null,
            max_frame: max_frame.max(text.len()),
            prefix_peer: false,
            ..EchoConfig::default()
        };
        let mut wire = Vec::new();
        for m in text.split('|') {
            Framing::Null.encode(m.as_bytes(), &mut wire);
        }
        let got = drive(&cfg, &wire, &cuts(&raw, wire.len()), None, true);
        assert_eq!(got.output, wire, "null echo of whole UTF-8 messages");
        assert!(!got.closed_early, "valid messages closed the connection");
        return;
    }
    let shutdown = (flags & 4 != 0).then_some(shutdown_at);
    let eof = flags & 8 != 0;
    let got = drive(&cfg, payload, &cuts(&raw, payload.len()), shutdown, eof);
    // An invalid configuration (prefixing raw or fixed frames, fixed frames over the limit) is
    // only required to be served without a panic.
    if cfg.validate().is_ok() {
        check_answers(&cfg, &got.fed, &got.output);
    }
}

/// What one hand-driven connection produced.
pub struct Driven {
    /// Every byte the session was handed, in order.
    pub fed: Vec<u8>,
    /// Every byte it queued, in order.
    pub output: Vec<u8>,
    /// It returned a closing `Next` before the peer half-closed.
    pub closed_early: bool,
}

/// Feed `payload` in the reads given by `cuts`; optionally signal shutdown before read number
/// `shutdown`, and the peer's half-close at the end.
pub fn drive(
    cfg: &EchoConfig,
    payload: &[u8],
    cuts: &[usize],
    shutdown: Option<usize>,
    eof: bool,
) -> Driven {
    let mut s = EchoSession::new(cfg, PeerAddr::Tcp(PEER.parse().expect("literal address")));
    let mut input = ReadBuf::new();
    let mut out = Outbox::new();
    let mut got = Driven {
        fed: Vec::new(),
        output: Vec::new(),
        closed_early: false,
    };
    let now = Instant::now();
    let overhead = match cfg.framing {
        Framing::Length => 4,
        Framing::Null | Framing::Line => 1,
        Framing::Fixed(n) => n,
        _ => 0,
    };
    for (i, piece) in pieces(payload, cuts).into_iter().enumerate() {
        if shutdown == Some(i) {
            let next = s.on_shutdown(&mut out, now);
            got.output.extend(out.take_all());
            if next.is_close() {
                got.closed_early = true;
                return got;
            }
        }
        input.extend(piece);
        got.fed.extend_from_slice(piece);
        let next = s.on_input(&mut input, &mut out, now);
        got.output.extend(out.take_all());
        if next.is_close() {
            assert!(
                next == Next::CloseAfterFlush,
                "echo closes after flushing its answers"
            );
            got.closed_early = true;
            return got;
        }
        assert!(
            input.len() <= cfg.max_frame.saturating_add(overhead),
            "{}: {} bytes left buffered with max_frame {}",
            cfg.framing,
            input.len(),
            cfg.max_frame
        );
    }
    if eof {
        let next = s.on_eof(&mut input, &mut out, now);
        got.output.extend(out.take_all());
        assert!(next.is_close(), "a half-closed echo connection closes");
        assert!(input.is_empty(), "on_eof leaves nothing behind");
    }
    got
}

/// Property 2: the answers are the messages sent (prefixed if asked), in order, nothing more.
pub fn check_answers(cfg: &EchoConfig, fed: &[u8], output: &[u8]) {
    if !cfg.prefix_peer {
        assert!(
            fed.starts_with(output),
            "{}: echo answered bytes that were not sent ({} of {})",
            cfg.framing,
            output.len(),
            fed.len()
        );
        return;
    }
    let prefix = format!("{PEER}: ");
    if cfg.framing == Framing::Close {
        if !output.is_empty() {
            let msg = output
                .strip_prefix(prefix.as_bytes())
                .expect("a prefixed close-framed answer");
            assert_eq!(msg, fed, "close framing answers everything sent");
        }
        return;
    }
    // Cut the answers with an unlimited decoder, strip each prefix, frame them again: that must
    // be what was sent (a prefix of it).
    let mut d = Decoder::new(cfg.framing, usize::MAX);
    let mut rest = output;
    let mut again = Vec::new();
    while let Ok(Some(f)) = d.decode(rest) {
        let msg = rest[f.payload.clone()]
            .strip_prefix(prefix.as_bytes())
            .unwrap_or_else(|| panic!("{}: an answer without the peer prefix", cfg.framing));
        cfg.framing.encode(msg, &mut again);
        rest = &rest[f.consumed..];
    }
    assert!(rest.is_empty(), "{}: a partial answer", cfg.framing);
    assert!(
        fed.starts_with(&again),
        "{}: prefixed answers are not the messages sent",
        cfg.framing
    );
}

/// Property 6: one datagram in, the same bytes (maybe prefixed) or nothing out.
pub fn datagram(cfg: &EchoConfig, data: &[u8]) {
    let svc = EchoService::new(cfg.clone());
    let from = PeerAddr::Tcp(PEER.parse().expect("literal address"));
    let mut out = Vec::new();
    let body = match (cfg.framing, data.split_last()) {
        (Framing::Null, Some((0, rest))) => rest,
        _ => data,
    };
    let allowed = body.len() <= cfg.max_frame
        && (cfg.framing != Framing::Null || std::str::from_utf8(body).is_ok());
    match svc.answer_datagram(&from, data, &mut out) {
        Ok(()) => {
            assert!(allowed, "a datagram outside the rules was answered");
            let prefix = if cfg.prefix_peer {
                format!("{PEER}: ")
            } else {
                String::new()
            };
            assert_eq!(out, [prefix.as_bytes(), data].concat(), "datagram answer");
        }
        Err(_) => {
            assert!(!allowed, "a datagram within the rules was refused");
            assert!(out.is_empty(), "a refused datagram got an answer");
        }
    }
}
