//! The echo protocol (RFC 862 and the tutorials' framings) over any [`Framing`], as a sans-I/O session: bytes
//! in, the same bytes (or the same messages) out.
//!
//! - `raw` (RFC 862, TCP): whatever arrives goes straight back until the client closes.
//! - `close` (the socket tutorial's echo): everything up to the client's half-close goes back in one piece, then
//!   the connection closes.
//! - `null`, `line`, `length`, `fixed:N` (the book's tincanchat protocol and friends): each whole message
//!   goes back as a message, optionally prefixed with the client's address as the multithreaded
//!   server of the book's chapter does (`"{peer}: {msg}"`).
//!
//! Every framing is bounded by `max_frame`: a longer message closes that connection with a
//! logged reason, so no client can make the server buffer without end. The same rules answer
//! UDP datagrams ([`EchoService::answer_datagram`]), one datagram back per datagram in (RFC 862).

use std::time::{Duration, Instant};

use crate::protocol::framing::{Decoder, FrameError, Framing};
use crate::protocol::{Next, Outbox, Peer, PeerAddr, ReadBuf, Service, Session, Waker};

/// The default `--max-frame`: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

/// How the echo service cuts and answers messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EchoConfig {
    pub framing: Framing,
    /// The longest message (payload) accepted, in bytes.
    pub max_frame: usize,
    /// Answer `"{peer}: {msg}"` instead of `msg` (the book's multithreaded echo server).
    pub prefix_peer: bool,
    /// Close a connection that has sent nothing and had nothing to take for this long
    /// (`--idle-timeout`); `None`: never. A silent client otherwise holds its slot (and, under
    /// the iterative model, the whole service) for as long as it likes.
    pub idle_timeout: Option<Duration>,
}

/// The default `--idle-timeout`: five minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for EchoConfig {
    fn default() -> Self {
        EchoConfig {
            framing: Framing::Raw,
            max_frame: DEFAULT_MAX_FRAME,
            prefix_peer: false,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
        }
    }
}

/// A configuration the echo service cannot answer faithfully ([`EchoConfig::validate`]).
/// `tincan echo` words each with its flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EchoConfigError {
    #[error("the largest message must be at least 1 byte")]
    NoMaxFrame,
    /// Over UDP a datagram is one message: only raw and null framing mean anything.
    #[error("{0} framing does not apply to datagrams")]
    FramingOverUdp(Framing),
    /// Prefixing answers with the peer needs message boundaries, which raw framing has not.
    #[error("prefixing the peer needs message boundaries")]
    PrefixWithoutBoundaries,
    /// A prefix would make answers longer than their fixed frames.
    #[error("prefixing the peer would make answers longer than fixed frames")]
    PrefixOverFixed,
    #[error("fixed:{n} frames are longer than the largest message ({max} bytes)")]
    FixedOverMax { n: usize, max: usize },
}

impl EchoConfig {
    /// Refuse combinations that cannot be answered faithfully.
    pub fn validate(&self) -> Result<(), EchoConfigError> {
        self.validate_for(false)
    }

    /// As [`validate`](Self::validate), for TCP and Unix connections or (`udp`) datagrams:
    /// a datagram is one message, so only `raw` and `null` (its UTF-8 check) mean anything
    /// there, and a peer prefix needs no other boundary.
    pub fn validate_for(&self, udp: bool) -> Result<(), EchoConfigError> {
        if self.max_frame == 0 {
            return Err(EchoConfigError::NoMaxFrame);
        }
        if udp {
            if !matches!(self.framing, Framing::Raw | Framing::Null) {
                return Err(EchoConfigError::FramingOverUdp(self.framing));
            }
            return Ok(());
        }
        if self.prefix_peer {
            match self.framing {
                Framing::Raw => return Err(EchoConfigError::PrefixWithoutBoundaries),
                Framing::Fixed(_) => return Err(EchoConfigError::PrefixOverFixed),
                _ => {}
            }
        }
        if let Framing::Fixed(n) = self.framing {
            if n > self.max_frame {
                return Err(EchoConfigError::FixedOverMax {
                    n,
                    max: self.max_frame,
                });
            }
        }
        Ok(())
    }
}

/// The echo service: one [`EchoSession`] per connection.
#[derive(Clone, Debug, Default)]
pub struct EchoService {
    config: EchoConfig,
}

impl EchoService {
    /// A service answering per `config` (call [`EchoConfig::validate`] first: an invalid one is
    /// served as well as it can be, never panics).
    pub fn new(config: EchoConfig) -> EchoService {
        EchoService { config }
    }

    pub fn config(&self) -> &EchoConfig {
        &self.config
    }

    /// RFC 862 over UDP: the answer to one datagram from `from`, appended to `out`. A datagram is
    /// one message: with `null` framing it must be UTF-8 (a trailing NUL is allowed and kept);
    /// longer than `max_frame` it gets no answer.
    pub fn answer_datagram(
        &self,
        from: &PeerAddr,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FrameError> {
        let cfg = &self.config;
        let body = match (cfg.framing, data.split_last()) {
            (Framing::Null, Some((0, rest))) => rest,
            _ => data,
        };
        if body.len() > cfg.max_frame {
            return Err(FrameError::TooLong {
                limit: cfg.max_frame,
            });
        }
        if cfg.framing == Framing::Null && std::str::from_utf8(body).is_err() {
            return Err(FrameError::InvalidUtf8);
        }
        if cfg.prefix_peer {
            push_prefix(from, out);
        }
        out.extend_from_slice(data);
        Ok(())
    }
}

impl super::DatagramService for EchoService {
    fn answer(&self, from: &PeerAddr, datagram: &[u8], out: &mut Vec<u8>) {
        if let Err(e) = self.answer_datagram(from, datagram, out) {
            out.clear();
            // One line a second for each reason, however fast bad datagrams come.
            static TOO_LONG: crate::logging::Throttle = crate::logging::Throttle::new();
            static NOT_UTF8: crate::logging::Throttle = crate::logging::Throttle::new();
            let throttle = match e {
                FrameError::TooLong { .. } => &TOO_LONG,
                FrameError::InvalidUtf8 => &NOT_UTF8,
            };
            if let Some(skipped) = throttle.admit() {
                tracing::warn!(
                    peer = %from,
                    "dropping echo datagram: {e}{}",
                    crate::logging::more_like_it(skipped)
                );
            }
        }
    }
}

impl Service for EchoService {
    type Session = EchoSession;

    fn open(&self, peer: &Peer, _waker: Waker) -> EchoSession {
        EchoSession::new(&self.config, peer.remote.clone())
    }
}

/// One connection's echo state: the decoder and what it takes to answer.
#[derive(Debug)]
pub struct EchoSession {
    decoder: Decoder,
    prefix_peer: bool,
    peer: PeerAddr,
    /// Reusable scratch for one answer (prefix + payload) before it is framed into the outbox.
    scratch: Vec<u8>,
    /// Bytes received so far (saturating); `close` framing uses it to decide about shutdown.
    received: usize,
    /// Input left over after the last call: a message has begun but not ended.
    partial: bool,
    /// The server is shutting down: close as soon as no message is half-received.
    shutting_down: bool,
    idle_timeout: Option<Duration>,
    /// When the client last sent something or took all its answers.
    last_activity: Instant,
}

impl EchoSession {
    pub fn new(config: &EchoConfig, peer: PeerAddr) -> EchoSession {
        EchoSession {
            decoder: Decoder::new(config.framing, config.max_frame),
            prefix_peer: config.prefix_peer,
            peer,
            scratch: Vec::new(),
            received: 0,
            partial: false,
            shutting_down: false,
            idle_timeout: config.idle_timeout,
            last_activity: Instant::now(),
        }
    }

    /// Go on, with the idle deadline counted from `now` (the timer is asked for again with
    /// every answer: a `Continue` without one would cancel it).
    fn active(&mut self, now: Instant) -> Next {
        self.last_activity = now;
        self.idle_deadline()
    }

    fn idle_deadline(&self) -> Next {
        match self.idle_timeout {
            Some(d) => Next::wake_at(self.last_activity + d),
            None => Next::CONTINUE,
        }
    }

    /// Answer every whole frame at the front of `input`; an error closes the connection.
    fn answer_frames(&mut self, input: &mut ReadBuf, out: &mut Outbox) -> Result<(), FrameError> {
        let framing = self.decoder.framing();
        while let Some(frame) = self.decoder.decode(input.data())? {
            let payload = &input.data()[frame.payload.clone()];
            if self.prefix_peer {
                self.scratch.clear();
                push_prefix(&self.peer, &mut self.scratch);
                self.scratch.extend_from_slice(payload);
                let msg = &self.scratch;
                out.with_tail(|b| framing.encode(msg, b));
            } else {
                out.with_tail(|b| framing.encode(payload, b));
            }
            input.consume(frame.consumed);
        }
        Ok(())
    }

    /// Log why this connection is being closed (the peer controls this, so it is a warning, not
    /// an error of ours) and close it, delivering the answers already queued.
    fn refuse(&self, e: FrameError) -> Next {
        tracing::warn!(peer = %self.peer, "closing echo connection: {e}");
        Next::CloseAfterFlush
    }
}

impl Session for EchoSession {
    fn on_open(&mut self, _out: &mut Outbox, now: Instant) -> Next {
        self.active(now)
    }

    fn on_input(&mut self, input: &mut ReadBuf, out: &mut Outbox, now: Instant) -> Next {
        self.received = self.received.saturating_add(input.len());
        if let Err(e) = self.answer_frames(input, out) {
            input.clear();
            return self.refuse(e);
        }
        self.partial = !input.is_empty();
        // A graceful shutdown waited for this message to end (see `on_shutdown`).
        if self.shutting_down && !self.partial && self.decoder.framing() != Framing::Close {
            return Next::CloseAfterFlush;
        }
        if self.shutting_down {
            // The grace period bounds it now.
            return Next::CONTINUE;
        }
        self.active(now)
    }

    fn on_drained(&mut self, _out: &mut Outbox, now: Instant) -> Next {
        if self.shutting_down {
            return Next::CONTINUE;
        }
        self.active(now)
    }

    fn on_timer(&mut self, out: &mut Outbox, now: Instant) -> Next {
        if !out.is_empty() {
            // Answers are still leaving (a slow reader, paused at the high-water mark): that
            // is not idleness, and the send timeout watches a reader that takes nothing.
            return self.active(now);
        }
        match self.idle_timeout {
            Some(d) if !self.shutting_down && now >= self.last_activity + d => {
                tracing::debug!(
                    peer = %self.peer,
                    "closing an echo connection idle for {:?} (--idle-timeout)",
                    d
                );
                Next::CloseAfterFlush
            }
            _ if self.shutting_down => Next::CONTINUE,
            _ => self.idle_deadline(),
        }
    }

    fn on_eof(&mut self, input: &mut ReadBuf, out: &mut Outbox, _now: Instant) -> Next {
        if self.decoder.framing() == Framing::Close {
            // The socket tutorial's framing: the half-close ends the message; send it all back, then close.
            match self.decoder.finish(input.data()) {
                Ok(Some(frame)) => {
                    let payload = &input.data()[frame.payload.clone()];
                    if self.prefix_peer && !payload.is_empty() {
                        self.scratch.clear();
                        push_prefix(&self.peer, &mut self.scratch);
                        out.push_bytes(&self.scratch);
                    }
                    out.push_bytes(payload);
                    input.consume(frame.consumed);
                }
                Ok(None) => {}
                Err(e) => {
                    input.clear();
                    return self.refuse(e);
                }
            }
            return Next::CloseAfterFlush;
        }
        if let Err(e) = self.answer_frames(input, out) {
            input.clear();
            return self.refuse(e);
        }
        if !input.is_empty() {
            tracing::debug!(
                peer = %self.peer,
                "echo client closed in the middle of a message ({} bytes unanswered)",
                input.len()
            );
            input.clear();
        }
        // Nothing more can arrive: deliver the answers, then close (RFC 862: until the caller
        // closes).
        Next::CloseAfterFlush
    }

    fn on_shutdown(&mut self, _out: &mut Outbox, _now: Instant) -> Next {
        self.shutting_down = true;
        let waiting = match self.decoder.framing() {
            // The socket tutorial's client sends, then half-closes: let it finish within the grace period.
            Framing::Close => self.received > 0,
            // No message boundaries: everything received has been answered already.
            Framing::Raw => false,
            // Let a half-received message finish; `on_input` closes once it has.
            _ => self.partial,
        };
        if waiting {
            Next::CONTINUE
        } else {
            Next::CloseAfterFlush
        }
    }
}

/// Append `"{peer}: "`, the prefix of the book's multithreaded echo server (with `ip:port`
/// rather than Python's tuple repr).
fn push_prefix(peer: &PeerAddr, out: &mut Vec<u8>) {
    use std::io::Write;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{peer}: ");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerAddr {
        crate::protocol::test_peer().remote
    }

    fn session(framing: Framing, max_frame: usize, prefix_peer: bool) -> EchoSession {
        let cfg = EchoConfig {
            framing,
            max_frame,
            prefix_peer,
            // The idle deadline has tests of its own; here every answer is a plain CONTINUE.
            idle_timeout: None,
        };
        cfg.validate().expect("valid test config");
        EchoSession::new(&cfg, peer())
    }

    /// Feed `chunks` one at a time, as separate reads; the output and the last `Next`.
    fn feed(s: &mut EchoSession, chunks: &[&[u8]]) -> (Vec<u8>, Next, ReadBuf) {
        let mut input = ReadBuf::new();
        let mut out = Outbox::new();
        let mut got = Vec::new();
        let mut next = Next::CONTINUE;
        for c in chunks {
            input.extend(c);
            next = s.on_input(&mut input, &mut out, Instant::now());
            got.extend(out.take_all());
            if next.is_close() {
                break;
            }
        }
        (got, next, input)
    }

    fn eof(s: &mut EchoSession, input: &mut ReadBuf) -> (Vec<u8>, Next) {
        let mut out = Outbox::new();
        let next = s.on_eof(input, &mut out, Instant::now());
        (out.take_all(), next)
    }

    #[test]
    fn raw_bytes_go_back_as_they_arrive() {
        let mut s = session(Framing::Raw, 1024, false);
        let (got, next, mut rest) = feed(&mut s, &[b"hel", b"lo"]);
        assert_eq!(got, b"hello");
        assert_eq!(next, Next::CONTINUE);
        assert!(rest.is_empty());
        assert_eq!(eof(&mut s, &mut rest), (vec![], Next::CloseAfterFlush));
    }

    #[test]
    fn raw_input_larger_than_max_frame_is_echoed_in_pieces_not_refused() {
        let mut s = session(Framing::Raw, 4, false);
        let (got, next, _) = feed(&mut s, &[b"0123456789"]);
        assert_eq!(got, b"0123456789");
        assert_eq!(next, Next::CONTINUE);
    }

    #[test]
    fn close_framing_answers_everything_at_the_half_close_and_closes() {
        let mut s = session(Framing::Close, 1024, false);
        let (got, next, mut rest) = feed(&mut s, &[b"Hello, ", b"world"]);
        assert!(got.is_empty(), "nothing goes back before the half-close");
        assert_eq!(next, Next::CONTINUE);
        assert_eq!(
            eof(&mut s, &mut rest),
            (b"Hello, world".to_vec(), Next::CloseAfterFlush)
        );
    }

    #[test]
    fn close_framing_of_exactly_max_frame_passes_and_one_more_byte_closes() {
        let mut s = session(Framing::Close, 8, false);
        let (_, next, mut rest) = feed(&mut s, &[b"1234", b"5678"]);
        assert_eq!(next, Next::CONTINUE);
        assert_eq!(eof(&mut s, &mut rest).0, b"12345678");

        let mut s = session(Framing::Close, 8, false);
        let (got, next, rest) = feed(&mut s, &[b"1234", b"56789"]);
        assert!(got.is_empty());
        assert_eq!(next, Next::CloseAfterFlush);
        assert!(rest.is_empty(), "the refused input is not kept");
    }

    #[test]
    fn close_framing_with_prefix_peer_prefixes_the_whole_message_once() {
        let mut s = session(Framing::Close, 64, true);
        let (_, _, mut rest) = feed(&mut s, &[b"a", b"b"]);
        assert_eq!(eof(&mut s, &mut rest).0, b"127.0.0.1:5000: ab");
    }

    #[test]
    fn null_messages_split_byte_by_byte_come_back_whole() {
        let mut s = session(Framing::Null, 64, false);
        let msg = b"hello world\0";
        let chunks: Vec<&[u8]> = msg.chunks(1).collect();
        let (got, next, rest) = feed(&mut s, &chunks);
        assert_eq!(got, msg);
        assert_eq!(next, Next::CONTINUE);
        assert!(rest.is_empty());
    }

    #[test]
    fn many_messages_in_one_read_get_one_answer_each_in_order() {
        for framing in [Framing::Null, Framing::Line, Framing::Length] {
            let mut wire = Vec::new();
            for m in ["one", "two", "three"] {
                framing.encode(m.as_bytes(), &mut wire);
            }
            let mut s = session(framing, 64, false);
            let (got, next, rest) = feed(&mut s, &[&wire]);
            assert_eq!(got, wire, "{framing}");
            assert_eq!(next, Next::CONTINUE);
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn prefix_peer_answers_with_the_clients_address() {
        let mut s = session(Framing::Null, 64, true);
        let (got, _, _) = feed(&mut s, &[b"hi\0yo\0"]);
        assert_eq!(got, b"127.0.0.1:5000: hi\x00127.0.0.1:5000: yo\x00");

        let mut s = session(Framing::Length, 64, true);
        let mut wire = Vec::new();
        Framing::Length.encode(b"hi", &mut wire);
        let (got, _, _) = feed(&mut s, &[&wire]);
        let mut want = Vec::new();
        Framing::Length.encode(b"127.0.0.1:5000: hi", &mut want);
        assert_eq!(got, want, "the length prefix covers the prefixed answer");
    }

    #[test]
    fn invalid_utf8_in_null_framing_closes_after_earlier_answers() {
        let mut s = session(Framing::Null, 64, false);
        let (got, next, rest) = feed(&mut s, &[b"good\0bad\xff\xfe\0"]);
        assert_eq!(got, b"good\0");
        assert_eq!(next, Next::CloseAfterFlush);
        assert!(rest.is_empty());
    }

    #[test]
    fn frames_of_exactly_max_frame_pass_and_one_byte_more_closes() {
        for framing in [Framing::Null, Framing::Line, Framing::Length] {
            let mut ok = Vec::new();
            framing.encode(&[b'x'; 16], &mut ok);
            let mut s = session(framing, 16, false);
            let (got, next, _) = feed(&mut s, &[&ok]);
            assert_eq!(got, ok, "{framing}");
            assert_eq!(next, Next::CONTINUE);

            let mut over = Vec::new();
            framing.encode(&[b'x'; 17], &mut over);
            let mut s = session(framing, 16, false);
            let (got, next, _) = feed(&mut s, &[&over]);
            assert!(got.is_empty(), "{framing}");
            assert_eq!(next, Next::CloseAfterFlush, "{framing}");
        }
    }

    #[test]
    fn an_endless_line_is_refused_before_its_end_arrives() {
        let mut s = session(Framing::Line, 16, false);
        let (_, next, rest) = feed(&mut s, &[&[b'a'; 10], &[b'a'; 10]]);
        assert_eq!(next, Next::CloseAfterFlush);
        assert!(rest.is_empty());
    }

    #[test]
    fn fixed_frames_go_back_whole_and_a_short_tail_is_dropped_at_eof() {
        let mut s = session(Framing::Fixed(3), 16, false);
        let (got, _, mut rest) = feed(&mut s, &[b"ab", b"cde", b"f", b"g"]);
        assert_eq!(got, b"abcdef");
        assert_eq!(rest.data(), b"g");
        assert_eq!(eof(&mut s, &mut rest), (vec![], Next::CloseAfterFlush));
        assert!(rest.is_empty());
    }

    #[test]
    fn eof_after_whole_messages_closes_after_the_answers() {
        let mut s = session(Framing::Line, 16, false);
        let mut input = ReadBuf::from_bytes(b"last\n");
        assert_eq!(
            eof(&mut s, &mut input),
            (b"last\n".to_vec(), Next::CloseAfterFlush)
        );
    }

    #[test]
    fn shutdown_waits_for_a_half_received_message_then_closes() {
        let mut s = session(Framing::Null, 64, false);
        let (_, _, mut input) = feed(&mut s, &[b"hal"]);
        let mut out = Outbox::new();
        assert_eq!(
            s.on_shutdown(&mut out, Instant::now()),
            Next::CONTINUE,
            "a message is in flight"
        );
        input.extend(b"f\0");
        assert_eq!(
            s.on_input(&mut input, &mut out, Instant::now()),
            Next::CloseAfterFlush
        );
        assert_eq!(out.take_all(), b"half\0");

        let mut idle = session(Framing::Null, 64, false);
        assert_eq!(
            idle.on_shutdown(&mut out, Instant::now()),
            Next::CloseAfterFlush
        );
    }

    #[test]
    fn shutdown_lets_a_close_framed_client_finish_only_if_it_started() {
        let mut idle = session(Framing::Close, 64, false);
        let mut out = Outbox::new();
        assert_eq!(
            idle.on_shutdown(&mut out, Instant::now()),
            Next::CloseAfterFlush
        );

        let mut s = session(Framing::Close, 64, false);
        let (_, _, mut input) = feed(&mut s, &[b"par"]);
        assert_eq!(s.on_shutdown(&mut out, Instant::now()), Next::CONTINUE);
        input.extend(b"tial");
        assert_eq!(
            s.on_input(&mut input, &mut out, Instant::now()),
            Next::CONTINUE,
            "close framing waits for the half-close, not a delimiter"
        );
        assert_eq!(eof(&mut s, &mut input).0, b"partial");
    }

    #[test]
    fn prefix_peer_is_refused_where_it_cannot_be_framed() {
        for framing in [Framing::Raw, Framing::Fixed(4)] {
            let cfg = EchoConfig {
                framing,
                max_frame: 16,
                prefix_peer: true,
                ..EchoConfig::default()
            };
            assert!(matches!(
                cfg.validate(),
                Err(EchoConfigError::PrefixWithoutBoundaries | EchoConfigError::PrefixOverFixed)
            ));
        }
        let too_big = EchoConfig {
            framing: Framing::Fixed(32),
            max_frame: 16,
            prefix_peer: false,
            ..EchoConfig::default()
        };
        assert_eq!(
            too_big.validate(),
            Err(EchoConfigError::FixedOverMax { n: 32, max: 16 })
        );
    }

    #[test]
    fn datagrams_are_answered_with_the_same_bytes_within_the_rules() {
        let from = peer();
        let svc = |framing, prefix_peer| {
            EchoService::new(EchoConfig {
                framing,
                max_frame: 8,
                prefix_peer,
                ..EchoConfig::default()
            })
        };
        let mut out = Vec::new();
        svc(Framing::Raw, false)
            .answer_datagram(&from, b"\xffbytes", &mut out)
            .expect("raw takes any bytes");
        assert_eq!(out, b"\xffbytes");

        out.clear();
        svc(Framing::Null, true)
            .answer_datagram(&from, b"hi\0", &mut out)
            .expect("valid message");
        assert_eq!(out, b"127.0.0.1:5000: hi\0");

        out.clear();
        assert_eq!(
            svc(Framing::Null, false).answer_datagram(&from, b"\xff\0", &mut out),
            Err(FrameError::InvalidUtf8)
        );
        assert_eq!(
            svc(Framing::Raw, false).answer_datagram(&from, b"123456789", &mut out),
            Err(FrameError::TooLong { limit: 8 })
        );
        assert!(out.is_empty(), "a refused datagram gets no answer");
        svc(Framing::Raw, false)
            .answer_datagram(&from, b"12345678", &mut out)
            .expect("exactly max_frame passes");
        assert_eq!(out, b"12345678");
    }
}
