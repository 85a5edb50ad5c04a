//! Property tests for the framing codecs and the echo and chat sessions: whatever the messages
//! and however the stream is cut into reads, the same frames come out. (The open-ended search
//! for panics on arbitrary bytes is `fuzz/`; these are the bounded, always-run versions.)

use std::time::Instant;

use proptest::prelude::*;

use super::chat::{ChatConfig, ChatService};
use super::echo::{EchoConfig, EchoSession};
use super::framing::{Decoder, Framing};
use super::{Next, Outbox, Peer, PeerAddr, ReadBuf, Service, Session, Waker};

fn any_framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        Just(Framing::Raw),
        Just(Framing::Close),
        Just(Framing::Null),
        Just(Framing::Line),
        Just(Framing::Length),
        (1usize..12).prop_map(Framing::Fixed),
    ]
}

/// Bytes that are mostly delimiters, ASCII and pieces of UTF-8 (valid and not): half of the
/// byte values map onto these, the other half stand for themselves. (A table lookup keeps the
/// strategy cheap enough for hundreds of cases in a debug build.)
fn stream_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    const SPECIAL: &[u8] = b"aaaa\0\0\0\n\n\r\xc3\xa9\xff";
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(|v| {
        v.into_iter()
            .map(|b| {
                if b < 128 {
                    SPECIAL[b as usize % SPECIAL.len()]
                } else {
                    b
                }
            })
            .collect()
    })
}

/// Cut points, as fractions of the stream's length (so they apply to any length).
fn cut_points() -> impl Strategy<Value = Vec<f64>> {
    proptest::collection::vec(0.0f64..=1.0, 0..8)
}

/// `bytes` cut at `cuts` into consecutive reads (empty reads included).
fn split<'a>(bytes: &'a [u8], cuts: &[f64]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|f| ((bytes.len() as f64) * f) as usize)
        .map(|c| c.min(bytes.len()))
        .collect();
    at.sort_unstable();
    let mut out = Vec::new();
    let mut from = 0;
    for c in at {
        out.push(&bytes[from..c]);
        from = c;
    }
    out.push(&bytes[from..]);
    out
}

/// Frames (payloads), whether decoding failed, and what was left, decoding `reads` as a session
/// does: append each read to one buffer, cut frames until the decoder wants more.
fn decode_reads(framing: Framing, max: usize, reads: &[&[u8]]) -> (Vec<Vec<u8>>, bool, Vec<u8>) {
    let mut d = Decoder::new(framing, max);
    let mut rb = ReadBuf::new();
    let mut frames = Vec::new();
    for r in reads {
        rb.extend(r);
        loop {
            match d.decode(rb.data()) {
                Ok(Some(f)) => {
                    assert!(f.consumed > 0 && f.consumed <= rb.len());
                    assert!(f.payload.len() <= max, "{framing}: frame over max_frame");
                    frames.push(rb.data()[f.payload].to_vec());
                    rb.consume(f.consumed);
                }
                Ok(None) => break,
                Err(_) => return (frames, true, Vec::new()),
            }
        }
    }
    (frames, false, rb.data().to_vec())
}

fn peer() -> PeerAddr {
    crate::protocol::test_peer().remote
}

/// Feed `reads` to an echo session; the answers, and whether it closed.
fn echo(cfg: &EchoConfig, reads: &[&[u8]]) -> (Vec<u8>, bool) {
    let mut s = EchoSession::new(cfg, peer());
    let mut rb = ReadBuf::new();
    let mut out = Outbox::new();
    let mut got = Vec::new();
    for r in reads {
        rb.extend(r);
        let next = s.on_input(&mut rb, &mut out, Instant::now());
        got.extend(out.take_all());
        if next.is_close() {
            return (got, true);
        }
    }
    (got, false)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decoding_split_input_gives_the_frames_of_decoding_it_whole(
        framing in any_framing(),
        max in 1usize..40,
        bytes in stream_bytes(128),
        cuts in cut_points(),
    ) {
        let whole = decode_reads(framing, max, &[&bytes]);
        let pieces = decode_reads(framing, max, &split(&bytes, &cuts));
        if framing == Framing::Raw {
            // Raw frames are whatever was buffered: only their concatenation is defined.
            prop_assert_eq!(whole.0.concat(), bytes.clone());
            prop_assert_eq!(pieces.0.concat(), bytes);
        } else {
            prop_assert_eq!(whole, pieces);
        }
    }

    #[test]
    fn encoded_messages_decode_back_to_themselves_however_they_are_split(
        framing in prop_oneof![
            Just(Framing::Null), Just(Framing::Line), Just(Framing::Length),
        ],
        msgs in proptest::collection::vec("[a-z\u{e9}\u{2603} \r]{0,12}", 0..8),
        cuts in cut_points(),
    ) {
        let mut wire = Vec::new();
        for m in &msgs {
            framing.encode(m.as_bytes(), &mut wire);
        }
        let (frames, failed, rest) = decode_reads(framing, 64, &split(&wire, &cuts));
        prop_assert!(!failed);
        prop_assert!(rest.is_empty());
        let want: Vec<Vec<u8>> = msgs.iter().map(|m| m.as_bytes().to_vec()).collect();
        prop_assert_eq!(frames, want);
    }

    #[test]
    fn null_echo_of_valid_utf8_messages_returns_exactly_the_messages(
        msgs in proptest::collection::vec("[^\u{0}]{0,16}", 0..8),
        cuts in cut_points(),
    ) {
        let cfg = EchoConfig { framing: Framing::Null, max_frame: 64, ..EchoConfig::default() };
        let mut wire = Vec::new();
        for m in &msgs {
            Framing::Null.encode(m.as_bytes(), &mut wire);
        }
        let (got, closed) = echo(&cfg, &split(&wire, &cuts));
        prop_assert!(!closed);
        prop_assert_eq!(got, wire);
    }

    #[test]
    fn echo_never_answers_a_byte_that_was_not_sent(
        framing in any_framing(),
        max in 1usize..40,
        bytes in stream_bytes(128),
        cuts in cut_points(),
    ) {
        let cfg = EchoConfig { framing, max_frame: max, ..EchoConfig::default() };
        let reads = split(&bytes, &cuts);
        let (got, _) = echo(&cfg, &reads);
        prop_assert!(bytes.starts_with(&got), "{} answered more than it was sent", framing);
    }

    #[test]
    fn a_lone_chat_client_hears_each_of_its_messages_once_in_order(
        msgs in proptest::collection::vec("[a-z\u{e9} ][^\u{0}]{0,15}", 0..8),
        cuts in cut_points(),
    ) {
        let svc = ChatService::new(ChatConfig {
            max_message: 64,
            max_queue: 64 * 1024,
            notices: false,
            ..ChatConfig::default()
        });
        let peer = Peer {
            remote: PeerAddr::Tcp("127.0.0.1:5001".parse().expect("literal address")),
            local: peer(),
        };
        let mut s = svc.open(&peer, Waker::noop());
        let mut wire = Vec::new();
        for m in &msgs {
            Framing::Null.encode(m.as_bytes(), &mut wire);
        }
        let mut rb = ReadBuf::new();
        let mut out = Outbox::new();
        let mut got = Vec::new();
        for r in split(&wire, &cuts) {
            rb.extend(r);
            prop_assert_eq!(s.on_input(&mut rb, &mut out, Instant::now()), Next::CONTINUE);
            got.extend(out.take_all());
        }
        let mut want = Vec::new();
        for m in &msgs {
            Framing::Null.encode(format!("127.0.0.1:5001: {m}").as_bytes(), &mut want);
        }
        prop_assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
    }
}
