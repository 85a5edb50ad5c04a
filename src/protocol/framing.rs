//! Message framing codecs: how a byte stream is cut into messages and how a message is put back
//! on the wire. Shared by echo, chat, `send`, `talk` and the load generator.
//!
//! | framing | a message on the wire | where it comes from |
//! |---|---|---|
//! | `raw` | whatever bytes arrived (no boundaries) | RFC 862 |
//! | `close` | everything up to the peer's half-close | the socket tutorial's echo |
//! | `null` | UTF-8 text ending in a NUL byte | the book's tincanchat |
//! | `line` | bytes ending in `\n` (a preceding `\r` is kept) | |
//! | `length` | a 4-byte big-endian length, then that many bytes | |
//! | `fixed:N` | exactly N bytes | |
//!
//! Decoding follows the httparse rule: partial input is not an error. [`Decoder::decode`] returns
//! `Ok(Some(frame))` for a whole frame, `Ok(None)` for "need more bytes", and an error only when
//! the input can never become a valid frame (too long, invalid UTF-8).

use std::fmt;
use std::str::FromStr;

/// How a stream is cut into messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Raw,
    Close,
    Null,
    Line,
    Length,
    Fixed(usize),
}

impl Framing {
    /// The delimiter byte of a delimited framing.
    pub fn delimiter(self) -> Option<u8> {
        match self {
            Framing::Null => Some(0),
            Framing::Line => Some(b'\n'),
            _ => None,
        }
    }

    /// Put `msg` on the wire in this framing, appending to `out`. `raw` and `close` add nothing.
    pub fn encode(self, msg: &[u8], out: &mut Vec<u8>) {
        match self {
            Framing::Raw | Framing::Close | Framing::Fixed(_) => out.extend_from_slice(msg),
            Framing::Null => {
                out.extend_from_slice(msg);
                out.push(0);
            }
            Framing::Line => {
                out.extend_from_slice(msg);
                out.push(b'\n');
            }
            Framing::Length => {
                out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
                out.extend_from_slice(msg);
            }
        }
    }
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Framing::Raw => f.write_str("raw"),
            Framing::Close => f.write_str("close"),
            Framing::Null => f.write_str("null"),
            Framing::Line => f.write_str("line"),
            Framing::Length => f.write_str("length"),
            Framing::Fixed(n) => write!(f, "fixed:{n}"),
        }
    }
}

impl FromStr for Framing {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = "use raw, close, null, line, length or fixed:N";
        match s {
            "raw" => Ok(Framing::Raw),
            "close" => Ok(Framing::Close),
            "null" => Ok(Framing::Null),
            "line" => Ok(Framing::Line),
            "length" => Ok(Framing::Length),
            _ => match s.strip_prefix("fixed:").map(str::parse::<usize>) {
                Some(Ok(n)) if n > 0 => Ok(Framing::Fixed(n)),
                // All digits yet no usize: a size no --max-frame could allow.
                Some(Err(_)) if s[6..].bytes().all(|b| b.is_ascii_digit()) => {
                    Err(format!("'{s}' is too large a frame size"))
                }
                Some(Ok(_)) => Err(format!(
                    "'{s}' needs a frame size of at least 1 byte, e.g. fixed:64"
                )),
                Some(Err(_)) => Err(format!(
                    "'{s}' needs a frame size in bytes after 'fixed:', e.g. fixed:64"
                )),
                None => Err(format!("'{s}' is not a framing; {usage}")),
            },
        }
    }
}

/// Why a stream cannot be decoded any further. The connection closes with this as its reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a message exceeded the {limit}-byte limit (--max-frame)")]
    TooLong { limit: usize },
    #[error("a message was not valid UTF-8")]
    InvalidUtf8,
}

/// A whole frame found at the front of the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Where the message's payload lies in the input (delimiter and length prefix excluded).
    pub payload: std::ops::Range<usize>,
    /// How many input bytes the frame occupies: consume this many.
    pub consumed: usize,
}

/// Cuts frames off the front of a buffer, remembering how far it already looked so that a
/// message arriving one byte at a time is scanned once, not once per byte.
#[derive(Clone, Debug)]
pub struct Decoder {
    framing: Framing,
    max_frame: usize,
    /// Bytes at the front already known to hold no delimiter.
    scanned: usize,
}

impl Decoder {
    /// A decoder refusing payloads longer than `max_frame` bytes.
    pub fn new(framing: Framing, max_frame: usize) -> Decoder {
        Decoder {
            framing,
            max_frame,
            scanned: 0,
        }
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Find the next whole frame at the front of `input`. After `Ok(Some(f))` the caller consumes
    /// `f.consumed` bytes before calling again. `raw` returns everything buffered (up to the
    /// limit) as one frame; `close` never returns a frame here (see [`finish`](Self::finish)).
    pub fn decode(&mut self, input: &[u8]) -> Result<Option<Frame>, FrameError> {
        let limit = self.max_frame;
        match self.framing {
            Framing::Raw => {
                if input.is_empty() {
                    return Ok(None);
                }
                let n = input.len().min(limit.max(1));
                Ok(Some(Frame {
                    payload: 0..n,
                    consumed: n,
                }))
            }
            Framing::Close => {
                if input.len() > limit {
                    return Err(FrameError::TooLong { limit });
                }
                Ok(None)
            }
            Framing::Null | Framing::Line => {
                let delim = self.framing.delimiter().expect("delimited framing");
                let from = self.scanned.min(input.len());
                match memchr(delim, &input[from..]) {
                    Some(i) => {
                        let end = from + i;
                        self.scanned = 0;
                        if end > limit {
                            return Err(FrameError::TooLong { limit });
                        }
                        if self.framing == Framing::Null
                            && std::str::from_utf8(&input[..end]).is_err()
                        {
                            return Err(FrameError::InvalidUtf8);
                        }
                        Ok(Some(Frame {
                            payload: 0..end,
                            consumed: end + 1,
                        }))
                    }
                    None => {
                        self.scanned = input.len();
                        if input.len() > limit {
                            return Err(FrameError::TooLong { limit });
                        }
                        // A null-framed message that is already invalid UTF-8 (not merely cut
                        // in the middle of a character) can be refused before its end arrives.
                        if self.framing == Framing::Null {
                            if let Err(e) = std::str::from_utf8(input) {
                                if e.error_len().is_some() {
                                    return Err(FrameError::InvalidUtf8);
                                }
                            }
                        }
                        Ok(None)
                    }
                }
            }
            Framing::Length => {
                if input.len() < 4 {
                    return Ok(None);
                }
                let len = u32::from_be_bytes([input[0], input[1], input[2], input[3]]) as usize;
                if len > limit {
                    return Err(FrameError::TooLong { limit });
                }
                if input.len() < 4 + len {
                    return Ok(None);
                }
                Ok(Some(Frame {
                    payload: 4..4 + len,
                    consumed: 4 + len,
                }))
            }
            Framing::Fixed(0) => {
                // No frame is zero bytes long (`fixed:0` is refused when parsed; this guards the
                // library API): never yield empty frames, and still bound what is buffered.
                if input.len() > limit {
                    return Err(FrameError::TooLong { limit });
                }
                Ok(None)
            }
            Framing::Fixed(n) => {
                if n > limit {
                    return Err(FrameError::TooLong { limit });
                }
                if input.len() < n {
                    return Ok(None);
                }
                Ok(Some(Frame {
                    payload: 0..n,
                    consumed: n,
                }))
            }
        }
    }

    /// The peer half-closed: for `close` framing everything buffered is the message; for the
    /// others, leftover bytes are an incomplete final frame (returned as `Ok(None)`: the caller
    /// decides whether to report it).
    pub fn finish(&mut self, input: &[u8]) -> Result<Option<Frame>, FrameError> {
        match self.framing {
            Framing::Close => {
                if input.len() > self.max_frame {
                    return Err(FrameError::TooLong {
                        limit: self.max_frame,
                    });
                }
                Ok(Some(Frame {
                    payload: 0..input.len(),
                    consumed: input.len(),
                }))
            }
            _ => self.decode(input),
        }
    }
}

/// Position of the first `b` in `hay` (SIMD where the CPU has it).
fn memchr(b: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(b, hay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(framing: Framing, max: usize, input: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut d = Decoder::new(framing, max);
        let mut buf = input.to_vec();
        let mut got = Vec::new();
        while let Some(f) = d.decode(&buf)? {
            got.push(buf[f.payload.clone()].to_vec());
            buf.drain(..f.consumed);
        }
        Ok(got)
    }

    #[test]
    fn framings_parse_from_their_names_and_print_back() {
        for s in ["raw", "close", "null", "line", "length", "fixed:8"] {
            assert_eq!(s.parse::<Framing>().unwrap().to_string(), s);
        }
        assert!("fixed:0".parse::<Framing>().is_err());
        assert!("nul"
            .parse::<Framing>()
            .unwrap_err()
            .contains("use raw, close"));
    }

    #[test]
    fn many_null_messages_in_one_read_come_out_one_by_one() {
        let got = frames(Framing::Null, 100, b"one\0two\0thr").unwrap();
        assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn a_message_split_across_reads_is_found_once_whole() {
        let mut d = Decoder::new(Framing::Line, 100);
        let mut buf = Vec::new();
        for &b in b"hello\n".iter() {
            buf.push(b);
            let r = d.decode(&buf).unwrap();
            if b == b'\n' {
                assert_eq!(r.unwrap().payload, 0..5);
            } else {
                assert!(r.is_none());
            }
        }
    }

    #[test]
    fn a_frame_of_exactly_the_limit_passes_and_one_byte_more_fails() {
        for framing in [Framing::Null, Framing::Line] {
            let mut ok = vec![b'a'; 10];
            ok.push(framing.delimiter().unwrap());
            assert_eq!(frames(framing, 10, &ok).unwrap().len(), 1);
            let mut long = vec![b'a'; 11];
            long.push(framing.delimiter().unwrap());
            assert_eq!(
                frames(framing, 10, &long),
                Err(FrameError::TooLong { limit: 10 })
            );
            // Refused before the delimiter arrives, so nothing unbounded is buffered.
            assert_eq!(
                frames(framing, 10, &[b'a'; 11]),
                Err(FrameError::TooLong { limit: 10 })
            );
        }
        let mut at = 10u32.to_be_bytes().to_vec();
        at.extend_from_slice(&[7; 10]);
        assert_eq!(frames(Framing::Length, 10, &at).unwrap(), vec![vec![7; 10]]);
        let over = 11u32.to_be_bytes();
        assert_eq!(
            frames(Framing::Length, 10, &over),
            Err(FrameError::TooLong { limit: 10 })
        );
    }

    #[test]
    fn invalid_utf8_in_null_framing_is_refused_even_before_the_nul() {
        assert_eq!(
            frames(Framing::Null, 100, b"ok\xff\0"),
            Err(FrameError::InvalidUtf8)
        );
        assert_eq!(
            frames(Framing::Null, 100, b"ok\xff"),
            Err(FrameError::InvalidUtf8)
        );
        // A character cut in half by a read boundary is not an error yet.
        assert_eq!(
            frames(Framing::Null, 100, "é".as_bytes().split_at(1).0),
            Ok(vec![])
        );
        // Line framing carries arbitrary bytes.
        assert_eq!(
            frames(Framing::Line, 100, b"\xff\n").unwrap(),
            vec![vec![0xff]]
        );
    }

    #[test]
    fn an_overflowing_fixed_size_is_called_too_large() {
        let e = "fixed:99999999999999999999999"
            .parse::<Framing>()
            .unwrap_err();
        assert!(e.contains("too large"), "{e}");
        let e = "fixed:0".parse::<Framing>().unwrap_err();
        assert!(e.contains("at least 1 byte"), "{e}");
        assert!("fixed:x".parse::<Framing>().is_err());
    }

    #[test]
    fn fixed_zero_built_by_hand_yields_no_empty_frames_and_stays_bounded() {
        assert_eq!(frames(Framing::Fixed(0), 4, b"abcd"), Ok(vec![]));
        assert_eq!(
            frames(Framing::Fixed(0), 4, b"abcde"),
            Err(FrameError::TooLong { limit: 4 })
        );
    }

    #[test]
    fn fixed_and_length_frames_wait_for_all_their_bytes() {
        assert_eq!(
            frames(Framing::Fixed(3), 10, b"abcde").unwrap(),
            vec![b"abc".to_vec()]
        );
        let mut buf = 3u32.to_be_bytes().to_vec();
        buf.extend_from_slice(b"ab");
        assert!(frames(Framing::Length, 10, &buf).unwrap().is_empty());
    }

    #[test]
    fn close_framing_yields_everything_at_eof_within_the_limit() {
        let mut d = Decoder::new(Framing::Close, 5);
        assert_eq!(d.decode(b"abc").unwrap(), None);
        assert_eq!(d.finish(b"abc").unwrap().unwrap().payload, 0..3);
        assert_eq!(d.decode(b"abcdef"), Err(FrameError::TooLong { limit: 5 }));
    }

    #[test]
    fn encode_adds_each_framings_boundary() {
        let mut v = Vec::new();
        Framing::Null.encode(b"hi", &mut v);
        Framing::Line.encode(b"hi", &mut v);
        Framing::Length.encode(b"hi", &mut v);
        assert_eq!(v, b"hi\0hi\n\0\0\0\x02hi");
    }
}
