//! The chat load: each connection sends a NUL-terminated tincanchat message carrying a token of
//! its own (`#conn.seq;`), and the round trip ends when the server's broadcast of that message
//! (`"{addr}: {msg}\0"`, sent to every client including the sender) comes back. Everybody
//! else's broadcasts are read and counted as bytes but are not replies: with N connections each
//! message costs the server N writes, which is what a chat benchmark measures.

use super::stats::ErrorKind;
use super::{Exchange, Load, Parsed, Reply};
use crate::protocol::framing::{Decoder, Framing};

/// The chat load.
#[derive(Debug)]
pub struct ChatLoad {
    size: usize,
    max_frame: usize,
}

impl ChatLoad {
    /// Messages of `size` bytes (at least the token); broadcasts longer than `max_frame` are a
    /// parse error.
    pub fn new(size: usize, max_frame: usize) -> ChatLoad {
        ChatLoad { size, max_frame }
    }
}

impl Load for ChatLoad {
    type Exchange = ChatExchange;

    fn exchange(&self, conn: usize) -> ChatExchange {
        ChatExchange {
            conn,
            seq: 0,
            size: self.size,
            wire: Vec::with_capacity(self.size + 24),
            decoder: Decoder::new(Framing::Null, self.max_frame),
            awaiting: false,
        }
    }
}

/// One connection's side of the chat load.
#[derive(Debug)]
pub struct ChatExchange {
    conn: usize,
    seq: u64,
    size: usize,
    /// The current message, NUL included.
    wire: Vec<u8>,
    decoder: Decoder,
    awaiting: bool,
}

impl ChatExchange {
    /// The current message without its NUL.
    fn message(&self) -> &[u8] {
        &self.wire[..self.wire.len().saturating_sub(1)]
    }
}

impl Exchange for ChatExchange {
    fn begin(&mut self) {
        use std::io::Write;
        self.seq += 1;
        self.wire.clear();
        // The leading '#' makes the token end-anchored: "#17.3;" is never the tail of another
        // connection's "#117.3;".
        let _ = write!(self.wire, "#{}.{};", self.conn, self.seq);
        while self.wire.len() < self.size {
            self.wire.push(b'x');
        }
        self.wire.push(0);
        self.awaiting = true;
    }

    fn request(&self) -> &[u8] {
        &self.wire
    }

    fn input(&mut self, buf: &[u8]) -> Result<Parsed, ErrorKind> {
        let mut used = 0;
        loop {
            match self.decoder.decode(&buf[used..]) {
                Ok(Some(frame)) => {
                    let payload = &buf[used..][frame.payload];
                    used += frame.consumed;
                    if self.awaiting && payload.ends_with(self.message()) {
                        self.awaiting = false;
                        return Ok(Parsed::reply(
                            used,
                            Reply {
                                reuse: true,
                                ok: true,
                            },
                        ));
                    }
                }
                Ok(None) => return Ok(Parsed::need(used)),
                Err(_) => return Err(ErrorKind::Parse),
            }
        }
    }

    fn eof(&mut self) -> Result<Option<Reply>, ErrorKind> {
        if self.awaiting {
            Err(ErrorKind::Read)
        } else {
            Ok(None)
        }
    }

    fn reset(&mut self) {
        self.awaiting = false;
        self.decoder = Decoder::new(Framing::Null, self.decoder.max_frame());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_broadcast_of_its_own_message_ends_the_round_trip() {
        let load = ChatLoad::new(16, 1024);
        let mut ex = load.exchange(17);
        ex.begin();
        assert_eq!(ex.request(), b"#17.1;xxxxxxxxxx\0");
        let others = b"1.2.3.4:5: #117.1;xxxxxxxxx\0hello\0";
        assert_eq!(ex.input(others).unwrap(), Parsed::need(others.len()));
        let mine = b"1.2.3.4:6: #17.1;xxxxxxxxxx\0";
        assert!(ex.input(mine).unwrap().reply.is_some());
        ex.begin();
        assert_eq!(&ex.request()[..6], b"#17.2;");
    }
}
