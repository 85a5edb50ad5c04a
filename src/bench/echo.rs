//! The echo load: send one framed message, wait for one framed message back. The reply is
//! found by the same [`Decoder`] the server uses, and its content is not compared: "one line
//! back" is what makes the same load fit `tincan echo --framing line` and Redis's inline `PING`
//! (which answers `+PONG\r\n`). `raw` waits for as many bytes as were sent; `close` half-closes
//! after the message and takes everything up to the server's close as the reply.

use std::sync::Arc;

use super::stats::ErrorKind;
use super::{Exchange, Load, Parsed, Reply};
use crate::protocol::framing::{Decoder, Framing};

/// The echo load: every connection repeats one message.
#[derive(Debug)]
pub struct EchoLoad {
    framing: Framing,
    wire: Arc<[u8]>,
    max_frame: usize,
}

impl EchoLoad {
    /// `message` is sent in `framing`; a reply longer than `max_frame` is a parse error.
    pub fn new(framing: Framing, message: &[u8], max_frame: usize) -> EchoLoad {
        let mut wire = Vec::with_capacity(message.len() + 4);
        framing.encode(message, &mut wire);
        EchoLoad {
            framing,
            wire: wire.into(),
            max_frame,
        }
    }

    /// The message a `--size N` run sends: N bytes of `x` (legal in every framing).
    pub fn filler(size: usize) -> Vec<u8> {
        vec![b'x'; size]
    }
}

impl Load for EchoLoad {
    type Exchange = EchoExchange;

    fn exchange(&self, _conn: usize) -> EchoExchange {
        EchoExchange {
            wire: self.wire.clone(),
            decoder: Decoder::new(self.framing, self.max_frame),
            awaiting: false,
            received: 0,
        }
    }
}

/// One connection's side of the echo load.
#[derive(Debug)]
pub struct EchoExchange {
    wire: Arc<[u8]>,
    decoder: Decoder,
    awaiting: bool,
    /// `raw` and `close`: bytes of the reply so far.
    received: usize,
}

impl EchoExchange {
    fn done(&mut self) -> Reply {
        self.awaiting = false;
        self.received = 0;
        Reply {
            reuse: self.decoder.framing() != Framing::Close,
            ok: true,
        }
    }
}

impl Exchange for EchoExchange {
    fn begin(&mut self) {
        self.awaiting = true;
        self.received = 0;
    }

    fn request(&self) -> &[u8] {
        &self.wire
    }

    fn half_close(&self) -> bool {
        self.decoder.framing() == Framing::Close
    }

    fn input(&mut self, buf: &[u8]) -> Result<Parsed, ErrorKind> {
        if buf.is_empty() {
            return Ok(Parsed::need(0));
        }
        if !self.awaiting {
            return Err(ErrorKind::Parse);
        }
        match self.decoder.framing() {
            Framing::Raw => {
                // The echo of a raw message may come back in any number of pieces.
                let take = (self.wire.len() - self.received).min(buf.len());
                self.received += take;
                if self.received == self.wire.len() {
                    return Ok(Parsed::reply(take, self.done()));
                }
                Ok(Parsed::need(take))
            }
            Framing::Close => {
                self.received += buf.len();
                if self.received > self.decoder.max_frame() {
                    return Err(ErrorKind::Parse);
                }
                Ok(Parsed::need(buf.len()))
            }
            _ => match self.decoder.decode(buf) {
                Ok(Some(frame)) => Ok(Parsed::reply(frame.consumed, self.done())),
                Ok(None) => Ok(Parsed::need(0)),
                Err(_) => Err(ErrorKind::Parse),
            },
        }
    }

    fn eof(&mut self) -> Result<Option<Reply>, ErrorKind> {
        if !self.awaiting {
            return Ok(None);
        }
        if self.decoder.framing() == Framing::Close {
            return Ok(Some(self.done()));
        }
        Err(ErrorKind::Read)
    }

    fn reset(&mut self) {
        self.awaiting = false;
        self.received = 0;
        self.decoder = Decoder::new(self.decoder.framing(), self.decoder.max_frame());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(framing: Framing, msg: &[u8]) -> EchoExchange {
        let mut ex = EchoLoad::new(framing, msg, 1024).exchange(0);
        ex.begin();
        ex
    }

    #[test]
    fn a_line_framed_ping_accepts_any_one_line_back() {
        let mut ex = exchange(Framing::Line, b"PING");
        assert_eq!(ex.request(), b"PING\n");
        assert_eq!(ex.input(b"+PO").unwrap(), Parsed::need(0));
        let p = ex.input(b"+PONG\r\n").unwrap();
        assert_eq!(p.consumed, 7);
        assert!(p.reply.unwrap().reuse);
        assert_eq!(ex.input(b"x").unwrap_err(), ErrorKind::Parse);
    }

    #[test]
    fn raw_waits_for_as_many_bytes_as_were_sent() {
        let mut ex = exchange(Framing::Raw, b"abcdef");
        assert_eq!(ex.input(b"abc").unwrap(), Parsed::need(3));
        assert!(ex.input(b"def").unwrap().reply.is_some());
    }

    #[test]
    fn close_framing_half_closes_and_takes_the_reply_at_eof() {
        let mut ex = exchange(Framing::Close, b"abc");
        assert!(ex.half_close());
        assert_eq!(ex.input(b"abc").unwrap(), Parsed::need(3));
        let r = ex.eof().unwrap().unwrap();
        assert!(!r.reuse);
    }

    #[test]
    fn a_close_before_the_reply_is_a_read_error() {
        let mut ex = exchange(Framing::Null, b"abc");
        assert_eq!(ex.eof().unwrap_err(), ErrorKind::Read);
    }
}
