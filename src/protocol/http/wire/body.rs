//! Message bodies on the wire, both ways. [`Decoder`] removes the framing of a body as it
//! arrives (RFC 9112 §6: a length, the chunked coding, or the connection's close); it reads
//! request bodies for the session, upstream and CGI answers for the gateway, and responses
//! for `tincan bench`. [`Encoder`] frames a body this server writes (a length, chunked, or
//! neither), so a chunk is written in one place.
//!
//! Partial input is never an error: a decoder keeps its place between reads and says how much
//! it consumed, so bytes after a body (a pipelined request) stay with the caller.

use std::io::Write as _;

use super::fields::{content_length, is_tchar, list_members, status_has_body};
use super::limits::{Limits, Reject, BAD_CHUNKED, BODY_TOO_LARGE, CHUNK_OVERHEAD, HEAD_TOO_LARGE};
use crate::protocol::Outbox;

/// Removes a body's framing across any number of reads, counting chunked data against the
/// body limit (a declared length is checked against it where the head is read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoder {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Bytes still to come; 0 for no body, or one that has ended.
    Length(u64),
    Chunked(Chunked),
    /// Until the connection closes (RFC 9112 §6.3 (8); a response only).
    Close,
}

impl Decoder {
    /// No body at all.
    pub fn none() -> Decoder {
        Decoder::length(0)
    }

    /// A body of exactly `n` bytes (`Content-Length`).
    pub fn length(n: u64) -> Decoder {
        Decoder {
            kind: Kind::Length(n),
        }
    }

    /// A body in the chunked coding (RFC 9112 §7.1).
    pub fn chunked() -> Decoder {
        Decoder {
            kind: Kind::Chunked(Chunked::default()),
        }
    }

    /// A body that ends when the connection does.
    pub fn until_close() -> Decoder {
        Decoder { kind: Kind::Close }
    }

    /// The decoder for a response body, by RFC 9112 §6.3: none for an answer to HEAD or a
    /// status without content (whatever the fields say); chunked when `Transfer-Encoding` is
    /// `chunked`; else the `Content-Length`; else until the connection closes. Also returns
    /// the declared `Content-Length` (an answer to HEAD announces the length a GET would have).
    ///
    /// `Err` for a malformed or ambiguous `Content-Length`, or a transfer coding other than a
    /// lone `chunked`: any other could not be undone here, and passing it on would hand the
    /// coded bytes on as content (RFC 9112 §6.1 lets a recipient refuse it).
    pub fn for_response<'a>(
        status: u16,
        head_request: bool,
        fields: impl Iterator<Item = (&'a str, &'a [u8])> + Clone + 'a,
    ) -> Result<(Decoder, Option<u64>), BadFraming> {
        let length = content_length(
            fields
                .clone()
                .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v),
        )
        .map_err(|_| BadFraming)?;
        let has_te = fields
            .clone()
            .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
        if has_te {
            let mut members = list_members(fields, "transfer-encoding");
            match (members.next(), members.next()) {
                (Some(m), None) if m.eq_ignore_ascii_case(b"chunked") => {}
                _ => return Err(BadFraming),
            }
        }
        let decoder = if head_request || !status_has_body(status) {
            Decoder::none()
        } else if has_te {
            Decoder::chunked()
        } else {
            length.map_or_else(Decoder::until_close, Decoder::length)
        };
        Ok((decoder, length))
    }

    /// Nothing (more) to read: no body, or its end was decoded.
    pub fn is_finished(&self) -> bool {
        self.kind == Kind::Length(0)
    }

    /// A chunked body.
    pub fn is_chunked(&self) -> bool {
        matches!(self.kind, Kind::Chunked(_))
    }

    /// The bytes still to come of a body with a length.
    pub fn remaining(&self) -> Option<u64> {
        match self.kind {
            Kind::Length(n) => Some(n),
            _ => None,
        }
    }

    /// Is the connection's close a clean end of this body? Only of one delimited by the close,
    /// or one already complete; any other was cut short.
    pub fn ends_at_close(&self) -> bool {
        matches!(self.kind, Kind::Close | Kind::Length(0))
    }

    /// Consume from `buf` and discard: how many bytes were consumed, and whether the body
    /// ended. Bytes after the body stay unconsumed.
    pub fn discard(&mut self, buf: &[u8], limits: &Limits) -> Result<(usize, bool), Reject> {
        self.decode(buf, limits, |_| {})
    }

    /// As [`discard`](Self::discard), handing each run of body bytes (framing removed) to
    /// `sink`.
    pub fn decode(
        &mut self,
        buf: &[u8],
        limits: &Limits,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(usize, bool), Reject> {
        match &mut self.kind {
            Kind::Length(rem) => {
                let n = (*rem).min(buf.len() as u64);
                *rem -= n;
                if n > 0 {
                    sink(&buf[..n as usize]);
                }
                Ok((n as usize, *rem == 0))
            }
            Kind::Chunked(c) => {
                let (n, end) = c.feed_into(buf, limits, sink)?;
                if end {
                    self.kind = Kind::Length(0);
                }
                Ok((n, end))
            }
            Kind::Close => {
                if !buf.is_empty() {
                    sink(buf);
                }
                Ok((buf.len(), false))
            }
        }
    }

    /// Body data bytes that may go by unread (the engine of `tincan bench` drops them without
    /// copying): what is left of a length, or of the current chunk's data.
    pub fn skippable(&self) -> u64 {
        match &self.kind {
            Kind::Length(n) => *n,
            Kind::Chunked(c) => match c.state {
                ChunkState::Data(n) => n,
                _ => 0,
            },
            Kind::Close => 0,
        }
    }

    /// `n` (at most [`skippable`](Self::skippable)) data bytes went by unread; true if they
    /// ended the body.
    pub fn skip(&mut self, n: u64) -> bool {
        match &mut self.kind {
            Kind::Length(rem) => {
                *rem = rem.saturating_sub(n);
                *rem == 0
            }
            Kind::Chunked(c) => {
                if let ChunkState::Data(rem) = c.state {
                    c.state = if n >= rem {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(rem - n)
                    };
                }
                false
            }
            Kind::Close => false,
        }
    }
}

/// A response whose framing fields cannot be trusted (see [`Decoder::for_response`]): where
/// its body ends is not known, so nothing of it may be passed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadFraming;

/// How this server frames a body it writes (RFC 9112 §6): the field that says so in the head,
/// then each piece of data, then the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoder {
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked` (a length not known in advance, to an HTTP/1.1 peer).
    Chunked,
    /// Neither: the body ends when the connection closes (an HTTP/1.0 client, a tunnel), or
    /// there is no body to delimit (HEAD, a status without content).
    Unframed,
}

impl Encoder {
    /// Append the framing field to a head being written.
    pub fn write_field(self, head: &mut Vec<u8>) {
        match self {
            Encoder::Length(len) => {
                head.extend_from_slice(b"Content-Length: ");
                super::write::decimal(head, len);
                head.extend_from_slice(b"\r\n");
            }
            Encoder::Chunked => head.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            Encoder::Unframed => {}
        }
    }

    /// Queue `data` as part of the body: as it is, or as one chunk (size line, data, CRLF;
    /// RFC 9112 §7.1). Empty data queues nothing: an empty chunk would be the last one.
    pub fn encode(self, out: &mut Outbox, data: &[u8]) {
        self.frame(out, data.len(), |out| out.push_bytes(data));
    }

    /// As [`encode`](Self::encode), for data that is already shared (queued without a copy).
    pub fn encode_shared(self, out: &mut Outbox, data: bytes::Bytes) {
        self.frame(out, data.len(), |out| out.push_shared(data));
    }

    fn frame(self, out: &mut Outbox, len: usize, push: impl FnOnce(&mut Outbox)) {
        if len == 0 {
            return;
        }
        if self == Encoder::Chunked {
            out.with_tail(|b| {
                let _ = write!(b, "{len:x}\r\n");
            });
            push(out);
            out.push_bytes(b"\r\n");
        } else {
            push(out);
        }
    }

    /// Queue the end of the body: the last chunk, with no trailer fields, when chunked. (A
    /// body cut short must not get it: the peer would take the short body for a whole one.)
    pub fn finish(self, out: &mut Outbox) {
        if self == Encoder::Chunked {
            out.push_bytes(b"0\r\n\r\n");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ChunkState {
    /// Reading the hex chunk size.
    #[default]
    Size,
    /// Whitespace after the size (BWS), before `;` or the line's end.
    SizeWs,
    /// Skipping a chunk extension up to CR.
    Ext,
    /// Expecting the LF after the size line's CR.
    SizeLf,
    /// Skipping chunk data; bytes left.
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// In a trailer field's name, up to its colon.
    TrailerName,
    /// In a trailer field's value, up to CR.
    TrailerValue,
    TrailerLf,
    EndLf,
}

/// The chunked transfer coding (RFC 9112 §7.1), decoded strictly (CRLF line ends, hex sizes
/// that fit in 64 bits, trailer fields held to the header grammar); its data is handed on and
/// its trailer fields are dropped.
///
/// What the framing may cost beyond the data is bounded too, or a body under the body limit
/// could take gigabytes of reading (Node.js's CVE-2024-22019): the chunk extensions, the
/// whitespace after sizes and the leading zeros of sizes of one size line may be as long as one
/// header line (`max_header`), and of a whole request body as long as one header line or an
/// eighth of the data, whichever is more (a body with no limit, an upstream's streamed answer,
/// is bounded per line only); the trailer section may be as long as a head (`max_head`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Chunked {
    state: ChunkState,
    size: u64,
    digits: u32,
    /// Length of the size line or trailer line in progress.
    line: usize,
    /// Extension, whitespace and leading-zero bytes of this body's size lines (saturating;
    /// 32 bits, beside `digits`, so a body reader, and so every HTTP connection's slot, keeps
    /// its size).
    overhead: u32,
    /// Bytes of trailer section seen.
    trailer: usize,
    /// Chunk data bytes declared so far.
    total: u64,
}

impl Chunked {
    /// One more byte of size-line overhead (see the type's doc).
    fn overhead_byte(&mut self, limits: &Limits) -> Result<(), Reject> {
        self.overhead = self.overhead.saturating_add(1);
        self.line += 1;
        // One size line is at most a header line long, always.
        if self.line > limits.max_header {
            return Err(BAD_CHUNKED);
        }
        // Taken together: a request body under a body limit gets one header line's worth, or
        // an eighth of its data if that is more. A body without a limit (an upstream's answer,
        // streamed) is bounded per line only: its framing cannot outgrow a limit it has not.
        let allowed = usize::try_from(self.total / 8)
            .unwrap_or(usize::MAX)
            .max(limits.max_header);
        if limits.max_body != u64::MAX && self.overhead as usize > allowed {
            return Err(CHUNK_OVERHEAD);
        }
        Ok(())
    }

    /// One more byte of a trailer line.
    fn trailer_byte(&mut self, limits: &Limits) -> Result<(), Reject> {
        self.line += 1;
        self.trailer += 1;
        if self.line > limits.max_header || self.trailer > limits.max_head {
            return Err(HEAD_TOO_LARGE);
        }
        Ok(())
    }

    /// Consume from `buf`; `(consumed, finished)`. Bytes after the body stay unconsumed.
    #[cfg(test)]
    fn feed(&mut self, buf: &[u8], limits: &Limits) -> Result<(usize, bool), Reject> {
        self.feed_into(buf, limits, |_| {})
    }

    /// Consume from `buf`, handing each run of chunk data to `sink`; `(consumed, finished)`.
    fn feed_into(
        &mut self,
        buf: &[u8],
        limits: &Limits,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(usize, bool), Reject> {
        use ChunkState::*;
        let mut i = 0;
        while i < buf.len() {
            if let Data(rem) = self.state {
                let n = rem.min((buf.len() - i) as u64);
                sink(&buf[i..i + n as usize]);
                i += n as usize;
                self.state = if rem == n { DataCr } else { Data(rem - n) };
                continue;
            }
            let b = buf[i];
            i += 1;
            self.state = match (self.state, b) {
                (Size, b) if b.is_ascii_hexdigit() => {
                    // `chunk-size = 1*HEXDIG`: leading zeros are valid, so the value, not the
                    // digit count, must fit in 64 bits; the overhead limit bounds the zeros.
                    if self.digits > 0 && self.size == 0 {
                        self.overhead_byte(limits)?;
                    }
                    self.digits = self.digits.saturating_add(1);
                    if self.size > u64::MAX >> 4 {
                        return Err(BAD_CHUNKED);
                    }
                    let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                    self.size = self.size << 4 | d;
                    Size
                }
                // `chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )`: after the
                // size, only whitespace, then `;` or the line's end.
                (Size, b' ' | b'\t') if self.digits > 0 => {
                    self.overhead_byte(limits)?;
                    SizeWs
                }
                (SizeWs, b' ' | b'\t') => {
                    self.overhead_byte(limits)?;
                    SizeWs
                }
                (Size | SizeWs, b';') if self.digits > 0 => {
                    self.overhead_byte(limits)?;
                    Ext
                }
                (Size | SizeWs, b'\r') if self.digits > 0 => SizeLf,
                (Ext, b'\r') => SizeLf,
                (Ext, b'\n' | 0) => return Err(BAD_CHUNKED),
                (Ext, _) => {
                    self.overhead_byte(limits)?;
                    Ext
                }
                (SizeLf, b'\n') => {
                    let size = self.size;
                    self.size = 0;
                    self.digits = 0;
                    self.line = 0;
                    if size == 0 {
                        TrailerStart
                    } else {
                        self.total = self.total.saturating_add(size);
                        if self.total > limits.max_body {
                            return Err(BODY_TOO_LARGE);
                        }
                        Data(size)
                    }
                }
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => Size,
                (TrailerStart, b'\r') => EndLf,
                // A trailer field is held to the header section's grammar (RFC 9112 §7.1.2,
                // §5): a token name with no whitespace before its colon, no obs-fold (a line
                // starting with whitespace), no control bytes in the value.
                (TrailerStart | TrailerName, b) if is_tchar(b) => {
                    self.trailer_byte(limits)?;
                    TrailerName
                }
                (TrailerName, b':') => {
                    self.trailer_byte(limits)?;
                    TrailerValue
                }
                (TrailerValue, b'\r') => TrailerLf,
                (TrailerValue, b) if b == b'\t' || (b >= 0x20 && b != 0x7f) => {
                    self.trailer_byte(limits)?;
                    TrailerValue
                }
                (TrailerLf, b'\n') => {
                    self.line = 0;
                    TrailerStart
                }
                (EndLf, b'\n') => {
                    *self = Chunked::default();
                    return Ok((i, true));
                }
                _ => return Err(BAD_CHUNKED),
            };
        }
        Ok((i, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn chunked_bodies_are_discarded_across_any_split() {
        let l = limits();
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for split in 0..body.len() {
            let mut c = Chunked::default();
            let (n1, done1) = c.feed(&body[..split], &l).unwrap();
            assert!(!done1 || n1 == body.len() - 4);
            let (n2, done2) = if done1 {
                (0, true)
            } else {
                c.feed(&body[split..], &l).unwrap()
            };
            assert!(done2, "split at {split}");
            assert_eq!(n1 + n2, body.len() - 4, "split at {split}");
        }
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        let l = Limits {
            max_body: 100,
            ..limits()
        };
        let bad: &[&[u8]] = &[
            b"x\r\n",
            b"\r\n",
            b"4\nWiki\r\n",
            b"4\r\nWikiXX\r\n",
            b"4\r\nWiki\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"-1\r\n",
            b"0\r\n\n",
            // After the size only whitespace, then `;` or the line's end.
            b"5 xyz\r\n",
            b"5\tx\r\n",
            // Trailer fields follow the header grammar: no obs-fold, a colon, a token name.
            b"0\r\nT: a\r\n b\r\n\r\n",
            b"0\r\nT v\r\n\r\n",
            b"0\r\n: v\r\n\r\n",
            b"0\r\nT : v\r\n\r\n",
            b"0\r\nT: a\x00b\r\n\r\n",
            b"0\r\nT: a\rb\r\n\r\n",
        ];
        for b in bad {
            let mut c = Chunked::default();
            assert_eq!(
                c.feed(b, &l).unwrap_err().status,
                400,
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        let mut c = Chunked::default();
        assert_eq!(c.feed(b"65\r\n", &l).unwrap_err().status, 413);
        let mut c = Chunked::default();
        assert!(c.feed(b"64\r\n", &l).is_ok());
        // Leading zeros are hex digits like any other; the value must fit, not the digits.
        let mut c = Chunked::default();
        assert_eq!(
            c.feed(b"00000000000000005\r\nhello\r\n0\r\n\r\n", &l),
            Ok((31, true))
        );
        let mut c = Chunked::default();
        let zeros = "0".repeat(l.max_header + 1) + "5\r\n";
        assert_eq!(c.feed(zeros.as_bytes(), &l).unwrap_err().status, 400);
        // Whitespace before `;` or the line's end is BWS; a trailer with obs-text is fine.
        for good in [
            &b"5 \r\nhello\r\n0\r\n\r\n"[..],
            b"5 \t;a=b\r\nhello\r\n0\r\n\r\n",
            b"0\r\nX-T: a \xe9\tb\r\nY:\r\n\r\n",
        ] {
            let mut c = Chunked::default();
            assert_eq!(
                c.feed(good, &l),
                Ok((good.len(), true)),
                "{:?}",
                String::from_utf8_lossy(good)
            );
        }
    }

    /// The framing around a body's data is bounded across the whole body, not per line: a
    /// body under the body limit cannot cost gigabytes of extensions (CVE-2024-22019).
    #[test]
    fn a_bodys_chunk_extensions_together_stop_at_one_header_lines_length() {
        let l = Limits {
            max_header: 100,
            ..limits()
        };
        // Ten chunks with 10 bytes of extension each (`;` and nine more): exactly 100.
        let body = |ext_total: usize| {
            let mut b = Vec::new();
            for i in 0..10 {
                let n = if i < 9 { 10 } else { ext_total - 90 };
                b.extend_from_slice(format!("1;{}\r\nx\r\n", "e".repeat(n - 1)).as_bytes());
            }
            b.extend_from_slice(b"0\r\n\r\n");
            b
        };
        let ok = body(100);
        assert_eq!(Chunked::default().feed(&ok, &l), Ok((ok.len(), true)));
        let over = body(101);
        assert_eq!(Chunked::default().feed(&over, &l), Err(CHUNK_OVERHEAD));
        // Leading zeros and whitespace count too; the one digit a size needs does not.
        let zeros = format!("{}1\r\nx\r\n", "0".repeat(100)) + &"1\r\nx\r\n".repeat(50);
        let zeros = zeros + "0\r\n\r\n";
        assert_eq!(
            Chunked::default().feed(zeros.as_bytes(), &l),
            Ok((zeros.len(), true))
        );
        let more = format!("{}1\r\nx\r\n1 \r\nx\r\n0\r\n\r\n", "0".repeat(100));
        assert_eq!(
            Chunked::default().feed(more.as_bytes(), &l),
            Err(CHUNK_OVERHEAD)
        );
        // One line alone may not pass a header line's length.
        let long = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(100));
        assert_eq!(
            Chunked::default().feed(long.as_bytes(), &l),
            Err(BAD_CHUNKED)
        );
        // A body with more data may have more framing: an eighth of the data so far.
        let chunk = format!("{:x};{}\r\n{}\r\n", 800, "e".repeat(49), "d".repeat(800));
        let big = chunk.repeat(20) + "0\r\n\r\n";
        assert_eq!(
            Chunked::default().feed(big.as_bytes(), &l),
            Ok((big.len(), true)),
            "1,000 bytes of extensions over 16,000 of data"
        );
        // An upstream's answer (no body limit) is bounded per line only: a long stream with
        // an extension on every chunk is relayed whole.
        let stream = Limits {
            max_body: u64::MAX,
            ..l.clone()
        };
        let sse = "1;e\r\nx\r\n".repeat(10_000) + "0\r\n\r\n";
        assert_eq!(
            Chunked::default().feed(sse.as_bytes(), &stream),
            Ok((sse.len(), true))
        );
    }

    #[test]
    fn content_length_bodies_stop_at_their_length() {
        let mut r = Decoder::length(5);
        assert_eq!(r.discard(b"abc", &limits()).unwrap(), (3, false));
        assert_eq!(r.discard(b"deGET", &limits()).unwrap(), (2, true));
        assert!(r.is_finished());
    }
}
