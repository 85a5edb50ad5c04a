//! `framing_decode`: any framing × any `max_frame` × any input, decoded whole and decoded as it
//! would arrive in arbitrary reads.
//!
//! Properties:
//! 1. `Decoder::decode` / `finish` never panic, and every frame makes progress and lies inside
//!    the input (`payload.end <= consumed <= input.len()`, `consumed > 0`);
//! 2. no payload is longer than `max_frame` (raw framing with the invalid `max_frame` 0 takes one
//!    byte at a time: configurations refuse 0, see `EchoConfig::validate`);
//! 3. decoding the input split into reads gives the same frames, the same leftover bytes and
//!    the same verdict (error or not) as decoding it whole; for `raw` the frames' concatenation
//!    is the input;
//! 4. the whole-input result matches a reference decoder written from the framing table in
//!    `tincan::protocol::framing` (so a bug shared by both paths is still caught);
//! 5. while the decoder says "need more", what it leaves buffered is bounded by `max_frame` plus
//!    the framing's own bytes (the seam's "a session bounds what it leaves in the ReadBuf").

use tincan::protocol::framing::{Decoder, Framing};
use tincan::ReadBuf;

use crate::{byte, cuts, pieces, raw_cuts, u16_, Unstructured};

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let framing = framing(&mut u);
    let max_frame = max_frame(&mut u);
    let raw = raw_cuts(&mut u, 16);
    let payload = u.take_rest();
    check(framing, max_frame, payload, &cuts(&raw, payload.len()));
}

/// Any framing; `fixed:N` with N in 1..=64 (0 is refused by `Framing::from_str`).
pub fn framing(u: &mut Unstructured<'_>) -> Framing {
    match byte(u) % 6 {
        0 => Framing::Raw,
        1 => Framing::Close,
        2 => Framing::Null,
        3 => Framing::Line,
        4 => Framing::Length,
        _ => Framing::Fixed(1 + byte(u) as usize % 64),
    }
}

/// Mostly small limits (where the edges are), sometimes large or unbounded.
pub fn max_frame(u: &mut Unstructured<'_>) -> usize {
    match byte(u) % 4 {
        0 => byte(u) as usize % 9,
        1 => byte(u) as usize + 1,
        2 => u16_(u) as usize,
        _ => usize::MAX,
    }
}

/// What decoding a stream produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    pub frames: Vec<Vec<u8>>,
    pub error: bool,
    /// Bytes left buffered (meaningless after an error: the session clears them).
    pub rest: Vec<u8>,
}

/// Decode `pieces` as a session does: append each read to one `ReadBuf`, then cut frames until
/// the decoder wants more; at the end, `finish` (the peer's half-close).
pub fn decode_reads(framing: Framing, max_frame: usize, pieces: &[&[u8]]) -> Decoded {
    let mut d = Decoder::new(framing, max_frame);
    let mut input = ReadBuf::new();
    let mut frames = Vec::new();
    let bound = max_frame.max(1);
    for piece in pieces {
        input.extend(piece);
        loop {
            let data = input.data();
            match d.decode(data) {
                Ok(Some(f)) => {
                    assert_ne!(framing, Framing::Close, "close framing cut a frame early");
                    assert!(f.consumed > 0, "{framing}: a frame that consumes nothing");
                    assert!(
                        f.payload.start <= f.payload.end
                            && f.payload.end <= f.consumed
                            && f.consumed <= data.len(),
                        "{framing}: frame {f:?} outside {} buffered bytes",
                        data.len()
                    );
                    let payload = &data[f.payload.clone()];
                    assert!(
                        payload.len() <= bound,
                        "{framing}: a {}-byte frame passed max_frame {max_frame}",
                        payload.len()
                    );
                    if framing == Framing::Null {
                        assert!(std::str::from_utf8(payload).is_ok(), "null frame not UTF-8");
                    }
                    frames.push(payload.to_vec());
                    input.consume(f.consumed);
                }
                Ok(None) => break,
                Err(_) => {
                    return Decoded {
                        frames,
                        error: true,
                        rest: Vec::new(),
                    }
                }
            }
        }
        let overhead = match framing {
            Framing::Length => 4,
            Framing::Null | Framing::Line => 1,
            Framing::Fixed(n) => n,
            _ => 0,
        };
        assert!(
            input.len() <= max_frame.saturating_add(overhead),
            "{framing}: {} bytes left buffered with max_frame {max_frame}",
            input.len()
        );
    }
    match d.finish(input.data()) {
        Ok(Some(f)) => {
            assert!(
                framing == Framing::Close,
                "{framing}: finish found a frame decode did not"
            );
            assert_eq!(f.consumed, input.len(), "close framing takes everything");
            assert!(f.payload.len() <= max_frame);
            frames.push(input.data()[f.payload].to_vec());
            input.consume(f.consumed);
        }
        Ok(None) => {}
        Err(_) => {
            return Decoded {
                frames,
                error: true,
                rest: Vec::new(),
            }
        }
    }
    Decoded {
        frames,
        error: false,
        rest: input.data().to_vec(),
    }
}

/// A reference decoder for a whole stream followed by a half-close, written from the framing
/// table rather than from the decoder's code.
pub fn reference(framing: Framing, max_frame: usize, input: &[u8]) -> Decoded {
    let mut frames = Vec::new();
    let fail = |frames| Decoded {
        frames,
        error: true,
        rest: Vec::new(),
    };
    let mut at = 0;
    match framing {
        Framing::Raw => {
            // Any cut is correct for raw; only the concatenation is compared.
            if !input.is_empty() {
                frames.push(input.to_vec());
            }
            at = input.len();
        }
        Framing::Close => {
            if input.len() > max_frame {
                return fail(frames);
            }
            frames.push(input.to_vec());
            at = input.len();
        }
        Framing::Null | Framing::Line => {
            let delim = if framing == Framing::Null { 0 } else { b'\n' };
            let null = framing == Framing::Null;
            while let Some(i) = input[at..].iter().position(|&b| b == delim) {
                let msg = &input[at..at + i];
                if msg.len() > max_frame || (null && std::str::from_utf8(msg).is_err()) {
                    return fail(frames);
                }
                frames.push(msg.to_vec());
                at += i + 1;
            }
            // The unfinished tail is refused as soon as it cannot become a valid message.
            let tail = &input[at..];
            let broken = null && std::str::from_utf8(tail).is_err_and(|e| e.error_len().is_some());
            if tail.len() > max_frame || broken {
                return fail(frames);
            }
        }
        Framing::Length => {
            while input.len() - at >= 4 {
                let len = u32::from_be_bytes(input[at..at + 4].try_into().expect("4 bytes"));
                let len = len as usize;
                if len > max_frame {
                    return fail(frames);
                }
                if input.len() - at - 4 < len {
                    break;
                }
                frames.push(input[at + 4..at + 4 + len].to_vec());
                at += 4 + len;
            }
        }
        Framing::Fixed(n) => {
            if n > max_frame {
                return fail(frames);
            }
            while input.len() - at >= n {
                frames.push(input[at..at + n].to_vec());
                at += n;
            }
        }
    }
    Decoded {
        frames,
        error: false,
        rest: input[at..].to_vec(),
    }
}

/// All the properties for one input; panics on a violation.
pub fn check(framing: Framing, max_frame: usize, payload: &[u8], cuts: &[usize]) {
    let whole = decode_reads(framing, max_frame, &[payload]);
    let split = decode_reads(framing, max_frame, &pieces(payload, cuts));
    let want = reference(framing, max_frame, payload);
    if framing == Framing::Raw {
        assert!(!whole.error && !split.error, "raw framing never fails");
        assert_eq!(
            whole.frames.concat(),
            payload,
            "raw frames are the input, whole"
        );
        assert_eq!(
            split.frames.concat(),
            payload,
            "raw frames are the input, split"
        );
        return;
    }
    // The error *kind* may differ (a split stream can show invalid UTF-8 before the length
    // passes the limit); that there is one, and the frames before it, may not.
    assert_eq!(
        whole, split,
        "{framing} max {max_frame}: whole and split decoding differ (cuts {cuts:?})"
    );
    assert_eq!(
        whole, want,
        "{framing} max {max_frame}: the decoder differs from the reference"
    );
}
