//! HTTP/2 (RFC 9113) as one more sans-I/O session on the seam: the same [`Handler`] answers, so
//! static files, conditionals, ranges, compression, listings and error pages behave as over
//! HTTP/1.1. [`super::HttpSession`] becomes this session when ALPN chose `h2` or when a plain
//! connection opens with the client preface (h2c with prior knowledge, §3.3); `Upgrade: h2c`
//! is not offered (RFC 9113 deprecates it).
//!
//! - Frames are parsed in place from the [`ReadBuf`]; a partial frame stays there, and no frame
//!   larger than SETTINGS_MAX_FRAME_SIZE (16 KiB, never raised) is accepted, so the input held
//!   per connection is bounded.
//! - A request is answered when its END_STREAM arrives: its fields become the same [`Request`]
//!   HTTP/1.1 builds (`:authority` as `Host`), a request body is counted and discarded (the
//!   static handler takes none; over `--max-body`, 413), streamed into the sink of a handler
//!   that takes it (an upload) as its DATA frames come, or kept for a proxy or CGI route.
//!   A body made as it is sent (a folder archive) leaves a piece per DATA frame. The response goes out as HEADERS
//!   (+ CONTINUATION) and DATA frames within the peer's windows, the streams taking turns a
//!   frame each; a file's DATA payload is a file region of the outbox (sent with `sendfile`
//!   where no TLS is in the way), and no more than the pause mark of output is built ahead of
//!   the socket.
//! - Flow control (§5.2, §6.9): the client's windows per stream and connection are opened again
//!   (WINDOW_UPDATE) as its data is consumed; ours follow its WINDOW_UPDATEs and
//!   SETTINGS_INITIAL_WINDOW_SIZE, overflow being a FLOW_CONTROL_ERROR.
//! - Priority signals are ignored (§5.3.2 allows it); server push is never used.
//! - Proxy and CGI routes are relayed ([`relay`]): each routed stream gets its own link to the
//!   HTTP/1.1 upstream or script, through the same gateway exchange HTTP/1.1 uses.
//!
//! Abuse is bounded per connection, each limit ending in the answer RFC 9113 names:
//! concurrent streams (`--h2-max-streams`, REFUSED_STREAM beyond), a header list over
//! `--max-head` or `--max-headers` (431 on that stream), a header block growing over
//! CONTINUATION frames past its cap (GOAWAY ENHANCE_YOUR_CALM: the CONTINUATION flood), client
//! resets of streams (GOAWAY ENHANCE_YOUR_CALM past [`RESETS_PER_SECOND`]: CVE-2023-44487,
//! rapid reset), and frames that ask work but carry no request (SETTINGS, PING, PRIORITY,
//! WINDOW_UPDATE, empty DATA, unknown types: GOAWAY ENHANCE_YOUR_CALM past
//! [`CHEAP_PER_SECOND`] beyond the frames we send).

mod frame;
pub mod hpack;
mod relay;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::access_log::Entry;
use super::message::{
    error_response, Body, BodySink, BodyUse, Part, Request, Response, Streamed, Version,
};
use super::session::{owned_by_session, safe_field, with_date, Shared};
use super::wire::status_has_body;
use crate::protocol::{LinkEvent, LinkId, Links, Next, Outbox, Peer, ReadBuf};
pub use frame::PREFACE;
use frame::{flag, kind, setting, ErrorCode, FrameHead, DEFAULT_WINDOW, MAX_WINDOW};

/// Client stream resets (and refused streams) allowed per second before the connection is
/// told to calm down; a browser cancelling a page's worth of requests stays far below.
pub const RESETS_PER_SECOND: u32 = 200;
/// Frames that carry no request allowed per second, beyond twice the frames the server sent.
pub const CHEAP_PER_SECOND: u32 = 1000;
/// CONTINUATION frames allowed in one header block (the cap on its bytes is `--max-head`).
const MAX_CONTINUATIONS: u32 = 64;
/// Stream ids remembered after they opened, to tell a frame on a closed stream (STREAM_CLOSED)
/// from one on an id never used (PROTOCOL_ERROR), §5.1.
const RECENT_STREAMS: usize = 128;
/// DATA payloads of files this large go as file regions (`sendfile`); smaller ones are copied.
const SENDFILE_MIN: usize = 16 * 1024;
/// The receive window given back once this much of it is used (half the default).
const REFILL_AT: i64 = DEFAULT_WINDOW / 2;

/// The HTTP/2 settings a server chooses (flags and config keys map to these).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2Options {
    /// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_streams: u32,
    /// HTTP/2 alone (`--http2 only`): every connection is HTTP/2, so one that does not open
    /// with the client preface is a connection error (§3.4), not an HTTP/1.1 request.
    pub only: bool,
}

impl Default for H2Options {
    fn default() -> Self {
        H2Options {
            max_streams: 128,
            only: false,
        }
    }
}

/// A connection error: GOAWAY with this code, then close (§5.4.1).
#[derive(Debug, PartialEq, Eq)]
struct ConnError(ErrorCode, &'static str);

type Step = Result<(), ConnError>;

/// One request's fields, kept until its END_STREAM.
#[derive(Debug, Default)]
struct Head {
    method: String,
    path: String,
    /// Regular fields, `host` added from `:authority`.
    fields: Vec<(String, Vec<u8>)>,
    content_length: Option<u64>,
}

struct Stream {
    /// The client may still send DATA (not half-closed remote).
    recv_open: bool,
    /// Our window for the client's DATA on this stream.
    recv_window: i64,
    recv_used: i64,
    /// The peer's window for our DATA on this stream.
    send_window: i64,
    /// The request, until it is answered.
    head: Option<Head>,
    body_len: u64,
    /// The client's body crossed the limit: it is answered 413 and the rest discarded.
    discarding: bool,
    /// The response body still to send; `None` before the response.
    body: Option<VecDeque<Part>>,
    /// More of the body may still come (a relayed answer), so its end is not yet known.
    open: bool,
    /// In the send queue.
    queued: bool,
    /// The request goes to a proxy or CGI route: its body is kept to be sent on.
    collect: bool,
    collected: Vec<u8>,
    /// The exchange with the route's upstream or script.
    relay: Option<Box<relay::Relay>>,
    /// Where an upload's body goes as it comes (the handler took it).
    sink: Option<Box<dyn BodySink>>,
    /// A body made as it is sent (a folder archive): asked for a piece when the last is out.
    streamed: Option<Streamed>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("recv_open", &self.recv_open)
            .field("send_window", &self.send_window)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

/// What a stream received of its request body, handed to the answer.
enum Received {
    /// Counted and discarded (or there was none).
    Nothing,
    /// Kept for a proxy or CGI route.
    Collected(Vec<u8>),
    /// Written into the handler's sink, which answers.
    Taken(Box<dyn BodySink>),
}

impl Stream {
    fn new(recv_open: bool, send_window: i64) -> Stream {
        Stream {
            recv_open,
            recv_window: DEFAULT_WINDOW,
            recv_used: 0,
            send_window,
            head: None,
            body_len: 0,
            discarding: false,
            body: None,
            open: false,
            queued: false,
            collect: false,
            collected: Vec::new(),
            relay: None,
            sink: None,
            streamed: None,
        }
    }

    fn done_sending(&self) -> bool {
        !self.open && self.body.as_ref().is_some_and(|b| b.is_empty())
    }
}

/// A header block arriving over HEADERS and CONTINUATION frames (§6.10).
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    self_dependent: bool,
    buf: Vec<u8>,
    frames: u32,
}

/// Counts over the current one-second window, for the flood limits.
#[derive(Debug)]
struct Budget {
    since: Instant,
    resets: u32,
    cheap: u32,
    sent: u32,
}

/// One HTTP/2 connection.
pub struct H2Session {
    shared: Arc<Shared>,
    peer: Peer,
    decoder: hpack::Decoder,
    /// The client preface has been read.
    preface: bool,
    streams: HashMap<u32, Stream>,
    /// Streams with response data waiting for window or turn, in turn order.
    ready: VecDeque<u32>,
    /// The highest stream id the client opened (any lower one not in `streams` is closed).
    last_stream: u32,
    /// The last [`RECENT_STREAMS`] stream ids opened, oldest first.
    recent: VecDeque<u32>,
    block: Option<Block>,
    send_window: i64,
    recv_window: i64,
    recv_used: i64,
    peer_initial_window: i64,
    peer_max_frame: usize,
    /// GOAWAY sent: no new streams; the connection closes when the last one is done.
    going_away: bool,
    /// A connection error was answered: nothing more is read.
    failed: bool,
    served: u32,
    budget: Budget,
    /// When bytes last moved either way: the idle and stall timers count from it.
    last_activity: Instant,
    /// The links of relayed streams (made on the first, then kept).
    links: Option<Box<Links>>,
}

impl std::fmt::Debug for H2Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Session")
            .field("peer", &self.peer)
            .field("streams", &self.streams.len())
            .field("last_stream", &self.last_stream)
            .finish_non_exhaustive()
    }
}

impl H2Session {
    /// Start the session: the server's preface (its SETTINGS, §3.4) goes out at once.
    pub(crate) fn start(
        shared: Arc<Shared>,
        peer: Peer,
        out: &mut Outbox,
        now: Instant,
    ) -> H2Session {
        let l = &shared.limits;
        let max_list = u32::try_from(l.max_head).unwrap_or(u32::MAX);
        out.with_tail(|b| {
            frame::write_settings(
                b,
                &[
                    (
                        setting::MAX_CONCURRENT_STREAMS,
                        shared.options.h2.max_streams,
                    ),
                    (setting::ENABLE_PUSH, 0),
                    (setting::MAX_HEADER_LIST_SIZE, max_list),
                ],
            )
        });
        H2Session {
            shared,
            peer,
            decoder: hpack::Decoder::default(),
            preface: false,
            streams: HashMap::new(),
            ready: VecDeque::new(),
            last_stream: 0,
            recent: VecDeque::new(),
            block: None,
            send_window: DEFAULT_WINDOW,
            recv_window: DEFAULT_WINDOW,
            recv_used: 0,
            peer_initial_window: DEFAULT_WINDOW,
            peer_max_frame: frame::MIN_MAX_FRAME,
            going_away: false,
            failed: false,
            served: 0,
            budget: Budget {
                since: now,
                resets: 0,
                cheap: 0,
                sent: 0,
            },
            last_activity: now,
            links: None,
        }
    }

    pub(crate) fn links(&mut self) -> Option<&mut Links> {
        self.links.as_deref_mut()
    }

    pub(crate) fn on_link(
        &mut self,
        id: LinkId,
        ev: LinkEvent,
        out: &mut Outbox,
        now: Instant,
    ) -> Next {
        if self.failed {
            return Next::CloseAfterFlush;
        }
        self.on_link_event(id, ev, out, now);
        self.pump(out);
        self.next(out, now)
    }

    /// Forget stream `id`, closing its relay's link if it has one.
    fn forget(&mut self, id: u32) {
        if let Some(r) = self.streams.remove(&id).and_then(|s| s.relay) {
            self.drop_relay(*r);
        }
    }

    /// Forget every stream (the connection is ending).
    fn forget_all(&mut self) {
        for (_, s) in std::mem::take(&mut self.streams) {
            if let Some(r) = s.relay {
                self.drop_relay(*r);
            }
        }
        self.ready.clear();
    }

    /// Output is built ahead of the socket up to this much.
    fn pause_mark(&self) -> usize {
        self.shared.options.pipeline_pause
    }

    pub(crate) fn on_input(&mut self, input: &mut ReadBuf, out: &mut Outbox, now: Instant) -> Next {
        if self.failed {
            input.clear();
            return Next::CloseAfterFlush;
        }
        self.last_activity = now;
        if let Err(e) = self.read_frames(input, out, now) {
            input.clear();
            return self.fail(e, out);
        }
        self.pump(out);
        if !self.shared.options.keep_alive
            && self.served > 0
            && self.streams.is_empty()
            && input.is_empty()
        {
            // A model that serves one connection at a time (iterative) holds no idle client:
            // what the client sent is answered, then GOAWAY, as HTTP/1.1 closes there.
            self.go_away(ErrorCode::NoError, out);
        }
        self.next(out, now)
    }

    pub(crate) fn on_eof(&mut self, input: &mut ReadBuf, out: &mut Outbox, now: Instant) -> Next {
        let next = self.on_input(input, out, now);
        input.clear();
        if next.is_close() {
            return next;
        }
        // The client sends nothing more (no WINDOW_UPDATE either): what fits goes, then close.
        Next::CloseAfterFlush
    }

    pub(crate) fn on_drained(&mut self, out: &mut Outbox, now: Instant) -> Next {
        if self.failed {
            return Next::CloseAfterFlush;
        }
        // Idle and stall time count from when the output left, not when it was queued.
        self.last_activity = now;
        self.pump(out);
        if self.links.is_some() {
            // Relayed answers that were held at the pause mark have room again.
            self.relay_poll_all(out, now);
            self.pump(out);
        }
        self.next(out, now)
    }

    /// When the connection is closed if nothing moves: `--keepalive-timeout` with no stream
    /// open, `--body-timeout` with some (a client that opens streams and sends nothing more,
    /// or never opens its window again, does not hold them for ever).
    fn deadline(&self) -> Instant {
        let l = &self.shared.limits;
        let wait = if self.streams.is_empty() {
            l.keepalive_timeout
        } else {
            l.body_timeout
        };
        self.last_activity + wait
    }

    pub(crate) fn on_timer(&mut self, out: &mut Outbox, now: Instant) -> Next {
        if self.links.is_some() {
            self.relay_timers(out, now);
            self.pump(out);
        }
        if out.is_empty() && now >= self.deadline() {
            // Say so, then close (§6.8); streams still open are abandoned.
            self.go_away(ErrorCode::NoError, out);
            self.forget_all();
            return Next::CloseAfterFlush;
        }
        self.next(out, now)
    }

    /// Graceful shutdown (§6.8): GOAWAY with the last stream id taken; those streams finish,
    /// later ones are refused, and the connection closes when the last answer is out.
    pub(crate) fn on_shutdown(&mut self, out: &mut Outbox, now: Instant) -> Next {
        self.go_away(ErrorCode::NoError, out);
        self.next(out, now)
    }

    fn next(&mut self, out: &Outbox, _now: Instant) -> Next {
        if self.failed {
            return Next::CloseAfterFlush;
        }
        if self.going_away && self.streams.is_empty() {
            return Next::CloseAfterFlush;
        }
        let relay = self.relay_deadline();
        if !out.is_empty() {
            // Output is waiting on the peer: the driver's send timeout governs, and
            // `on_drained` comes back here.
            return match relay {
                Some(at) => Next::wake_at(at),
                None => Next::CONTINUE,
            };
        }
        let idle = self.deadline();
        Next::wake_at(relay.map_or(idle, |r| r.min(idle)))
    }

    fn go_away(&mut self, code: ErrorCode, out: &mut Outbox) {
        if !self.going_away {
            self.going_away = true;
            out.with_tail(|b| frame::write_goaway(b, self.last_stream, code));
        }
    }

    fn fail(&mut self, e: ConnError, out: &mut Outbox) -> Next {
        tracing::debug!(peer = %self.peer.remote, code = ?e.0, "HTTP/2 connection error: {}", e.1);
        // A GOAWAY already sent (graceful) is followed by the one with the error (§6.8).
        self.going_away = false;
        self.go_away(e.0, out);
        self.failed = true;
        self.forget_all();
        Next::CloseAfterFlush
    }

    /// Count a frame against a flood limit (per one-second window).
    fn spend(&mut self, now: Instant, reset: bool) -> Step {
        if now.duration_since(self.budget.since) >= Duration::from_secs(1) {
            self.budget = Budget {
                since: now,
                resets: 0,
                cheap: 0,
                sent: 0,
            };
        }
        if reset {
            self.budget.resets += 1;
            if self.budget.resets > RESETS_PER_SECOND {
                return Err(ConnError(
                    ErrorCode::EnhanceYourCalm,
                    "too many streams reset (rapid reset)",
                ));
            }
        } else {
            self.budget.cheap += 1;
            if self.budget.cheap > CHEAP_PER_SECOND.saturating_add(2 * self.budget.sent) {
                return Err(ConnError(
                    ErrorCode::EnhanceYourCalm,
                    "too many frames that carry no request",
                ));
            }
        }
        Ok(())
    }

    fn read_frames(&mut self, input: &mut ReadBuf, out: &mut Outbox, now: Instant) -> Step {
        if !self.preface {
            let d = input.data();
            let n = d.len().min(PREFACE.len());
            if d[..n] != PREFACE[..n] {
                return Err(ConnError(ErrorCode::ProtocolError, "no client preface"));
            }
            if n < PREFACE.len() {
                return Ok(());
            }
            input.consume(PREFACE.len());
            self.preface = true;
        }
        loop {
            if self.failed {
                return Ok(());
            }
            let Some(h) = FrameHead::parse(input.data()) else {
                return Ok(());
            };
            // §4.2: we never raise SETTINGS_MAX_FRAME_SIZE from its default.
            if h.len > frame::MIN_MAX_FRAME {
                return Err(ConnError(ErrorCode::FrameSizeError, "a frame over 16 KiB"));
            }
            let total = frame::HEADER_LEN + h.len;
            if input.len() < total {
                return Ok(());
            }
            let payload = &input.data()[frame::HEADER_LEN..total];
            let r = self.frame(h, payload, out, now);
            input.consume(total);
            r?;
        }
    }

    fn frame(&mut self, h: FrameHead, p: &[u8], out: &mut Outbox, now: Instant) -> Step {
        // §6.10: nothing may come between HEADERS and its last CONTINUATION.
        if self.block.is_some() && h.kind != kind::CONTINUATION {
            return Err(ConnError(
                ErrorCode::ProtocolError,
                "a frame inside a header block",
            ));
        }
        match h.kind {
            kind::DATA => self.data(h, p, out, now),
            kind::HEADERS => self.headers(h, p, out, now),
            kind::CONTINUATION => self.continuation(h, p, out, now),
            kind::PRIORITY => {
                if h.stream == 0 {
                    return Err(ConnError(ErrorCode::ProtocolError, "PRIORITY on stream 0"));
                }
                if p.len() != 5 {
                    self.reset(h.stream, ErrorCode::FrameSizeError, out);
                }
                self.spend(now, false)
            }
            kind::RST_STREAM => self.rst(h, p, now),
            kind::SETTINGS => self.settings(h, p, out, now),
            kind::PUSH_PROMISE => Err(ConnError(
                ErrorCode::ProtocolError,
                "PUSH_PROMISE from a client",
            )),
            kind::PING => {
                if h.stream != 0 {
                    return Err(ConnError(ErrorCode::ProtocolError, "PING on a stream"));
                }
                if p.len() != 8 {
                    return Err(ConnError(ErrorCode::FrameSizeError, "PING not 8 bytes"));
                }
                self.spend(now, false)?;
                if h.flags & flag::ACK == 0 {
                    out.with_tail(|b| frame::write_ping_ack(b, p));
                }
                Ok(())
            }
            kind::GOAWAY => {
                if h.stream != 0 {
                    return Err(ConnError(ErrorCode::ProtocolError, "GOAWAY on a stream"));
                }
                // §6.8: a GOAWAY limits the streams its receiver may open, and we open none
                // (no push); the client closes when it is done, and its open streams finish.
                Ok(())
            }
            kind::WINDOW_UPDATE => self.window_update(h, p, out, now),
            // §5.5: unknown frame types are ignored (and counted).
            _ => self.spend(now, false),
        }
    }

    fn settings(&mut self, h: FrameHead, p: &[u8], out: &mut Outbox, now: Instant) -> Step {
        if h.stream != 0 {
            return Err(ConnError(ErrorCode::ProtocolError, "SETTINGS on a stream"));
        }
        self.spend(now, false)?;
        if h.flags & flag::ACK != 0 {
            if !p.is_empty() {
                return Err(ConnError(
                    ErrorCode::FrameSizeError,
                    "SETTINGS ACK with data",
                ));
            }
            return Ok(());
        }
        if p.len() % 6 != 0 {
            return Err(ConnError(
                ErrorCode::FrameSizeError,
                "SETTINGS not 6-byte items",
            ));
        }
        for item in p.chunks_exact(6) {
            let id = u16::from_be_bytes([item[0], item[1]]);
            let v = u32::from_be_bytes([item[2], item[3], item[4], item[5]]);
            match id {
                setting::ENABLE_PUSH if v > 1 => {
                    return Err(ConnError(
                        ErrorCode::ProtocolError,
                        "ENABLE_PUSH not 0 or 1",
                    ))
                }
                setting::INITIAL_WINDOW_SIZE => {
                    let v = i64::from(v);
                    if v > MAX_WINDOW {
                        return Err(ConnError(
                            ErrorCode::FlowControlError,
                            "INITIAL_WINDOW_SIZE over 2^31-1",
                        ));
                    }
                    // §6.9.2: the change applies to every open stream's window.
                    let delta = v - self.peer_initial_window;
                    self.peer_initial_window = v;
                    for s in self.streams.values_mut() {
                        s.send_window += delta;
                        if s.send_window > MAX_WINDOW {
                            return Err(ConnError(
                                ErrorCode::FlowControlError,
                                "a stream window over 2^31-1",
                            ));
                        }
                    }
                    self.requeue_all();
                }
                setting::MAX_FRAME_SIZE => {
                    let v = v as usize;
                    if !(frame::MIN_MAX_FRAME..=frame::MAX_MAX_FRAME).contains(&v) {
                        return Err(ConnError(
                            ErrorCode::ProtocolError,
                            "MAX_FRAME_SIZE out of range",
                        ));
                    }
                    self.peer_max_frame = v;
                }
                // HEADER_TABLE_SIZE: our encoder uses no dynamic table. MAX_CONCURRENT_STREAMS
                // bounds pushes, which we never make. MAX_HEADER_LIST_SIZE is advisory.
                _ => {}
            }
        }
        out.with_tail(frame::write_settings_ack);
        Ok(())
    }

    fn window_update(&mut self, h: FrameHead, p: &[u8], out: &mut Outbox, now: Instant) -> Step {
        if p.len() != 4 {
            return Err(ConnError(
                ErrorCode::FrameSizeError,
                "WINDOW_UPDATE not 4 bytes",
            ));
        }
        self.spend(now, false)?;
        let inc = i64::from(u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff);
        if h.stream == 0 {
            if inc == 0 {
                return Err(ConnError(
                    ErrorCode::ProtocolError,
                    "a zero window increment",
                ));
            }
            self.send_window += inc;
            if self.send_window > MAX_WINDOW {
                return Err(ConnError(
                    ErrorCode::FlowControlError,
                    "the connection window over 2^31-1",
                ));
            }
            return Ok(());
        }
        if h.stream > self.last_stream {
            return Err(ConnError(
                ErrorCode::ProtocolError,
                "WINDOW_UPDATE on an idle stream",
            ));
        }
        let Some(s) = self.streams.get_mut(&h.stream) else {
            // §5.1: a closed stream's late WINDOW_UPDATE is ignored.
            return Ok(());
        };
        if inc == 0 {
            self.reset(h.stream, ErrorCode::ProtocolError, out);
            return Ok(());
        }
        s.send_window += inc;
        if s.send_window > MAX_WINDOW {
            self.reset(h.stream, ErrorCode::FlowControlError, out);
            return Ok(());
        }
        self.requeue(h.stream);
        Ok(())
    }

    fn rst(&mut self, h: FrameHead, p: &[u8], now: Instant) -> Step {
        if h.stream == 0 {
            return Err(ConnError(
                ErrorCode::ProtocolError,
                "RST_STREAM on stream 0",
            ));
        }
        if p.len() != 4 {
            return Err(ConnError(
                ErrorCode::FrameSizeError,
                "RST_STREAM not 4 bytes",
            ));
        }
        if h.stream > self.last_stream {
            return Err(ConnError(
                ErrorCode::ProtocolError,
                "RST_STREAM on an idle stream",
            ));
        }
        if self.streams.contains_key(&h.stream) {
            self.forget(h.stream);
            self.spend(now, true)?;
        }
        Ok(())
    }

    /// Answer a stream error with RST_STREAM and forget the stream (§5.4.2).
    fn reset(&mut self, id: u32, code: ErrorCode, out: &mut Outbox) {
        self.forget(id);
        out.with_tail(|b| frame::write_rst(b, id, code));
    }

    fn data(&mut self, h: FrameHead, p: &[u8], out: &mut Outbox, now: Instant) -> Step {
        if h.stream == 0 {
            return Err(ConnError(ErrorCode::ProtocolError, "DATA on stream 0"));
        }
        if h.stream > self.last_stream {
            return Err(ConnError(
                ErrorCode::ProtocolError,
                "DATA on an idle stream",
            ));
        }
        let len = p.len() as i64;
        // §6.9: all of a DATA frame, padding included, counts against the connection window,
        // even on a stream already closed.
        if len > self.recv_window {
            return Err(ConnError(
                ErrorCode::FlowControlError,
                "DATA past the connection window",
            ));
        }
        self.recv_window -= len;
        self.recv_used += len;
        if self.recv_used >= REFILL_AT {
            let n = std::mem::take(&mut self.recv_used);
            self.recv_window += n;
            out.with_tail(|b| frame::write_window_update(b, 0, n as u32));
        }
        let Some(data) = frame::unpad(h.flags, p, 0) else {
            return Err(ConnError(
                ErrorCode::ProtocolError,
                "padding longer than DATA",
            ));
        };
        let end = h.flags & flag::END_STREAM != 0;
        if data.is_empty() && !end {
            self.spend(now, false)?;
        }
        let max_body = self.shared.limits.max_body;
        let Some(s) = self.streams.get_mut(&h.stream) else {
            // Each of these costs a RST_STREAM in answer: counted as a flood would be.
            self.spend(now, false)?;
            out.with_tail(|b| frame::write_rst(b, h.stream, ErrorCode::StreamClosed));
            return Ok(());
        };
        if !s.recv_open {
            self.reset(h.stream, ErrorCode::StreamClosed, out);
            return Ok(());
        }
        if len > s.recv_window {
            self.reset(h.stream, ErrorCode::FlowControlError, out);
            return Ok(());
        }
        s.recv_window -= len;
        s.recv_used += len;
        s.body_len += data.len() as u64;
        if s.body_len <= max_body {
            if s.collect {
                s.collected.extend_from_slice(data);
            } else if let Some(sink) = s.sink.as_mut() {
                sink.write(data);
            }
        }
        if end {
            s.recv_open = false;
        } else if s.recv_used >= REFILL_AT {
            let n = std::mem::take(&mut s.recv_used);
            s.recv_window += n;
            out.with_tail(|b| frame::write_window_update(b, h.stream, n as u32));
        }
        if s.discarding {
            if end {
                self.maybe_close(h.stream);
            }
            return Ok(());
        }
        if s.body_len > max_body {
            s.discarding = true;
            s.head = None;
            s.collected = Vec::new();
            // An upload cut short leaves nothing behind (the sink's Drop).
            s.sink = None;
            let resp = error_response(413, "The request body is larger than this server accepts.");
            self.send_response(h.stream, resp, false, out);
            return Ok(());
        }
        if end {
            // §8.1.1: a body that does not match its Content-Length is malformed.
            if let Some(cl) = s.head.as_ref().and_then(|h| h.content_length) {
                if cl != s.body_len {
                    self.reset(h.stream, ErrorCode::ProtocolError, out);
                    return Ok(());
                }
            }
            self.answer(h.stream, out, now);
        }
        Ok(())
    }

    fn headers(&mut self, h: FrameHead, p: &[u8], out: &mut Outbox, now: Instant) -> Step {
        if h.stream == 0 {
            return Err(ConnError(ErrorCode::ProtocolError, "HEADERS on stream 0"));
        }
        let Some(fragment) = frame::unpad(h.flags, p, 5) else {
            return Err(ConnError(
                ErrorCode::ProtocolError,
                "padding longer than HEADERS",
            ));
        };
        // §5.3.1: a stream cannot depend on itself (a stream error, answered once the block is
        // decoded, since the HPACK table must stay in step).
        let self_dependent = h.flags & flag::PRIORITY != 0 && {
            let at = usize::from(h.flags & flag::PADDED != 0);
            u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]) & 0x7fff_ffff == h.stream
        };
        let end_stream = h.flags & flag::END_STREAM != 0;
        if h.flags & flag::END_HEADERS != 0 {
            return self.header_block(h.stream, end_stream, self_dependent, fragment, out, now);
        }
        if fragment.len() > self.shared.limits.max_head {
            return Err(ConnError(
                ErrorCode::EnhanceYourCalm,
                "a header block too large",
            ));
        }
        self.block = Some(Block {
            stream: h.stream,
            end_stream,
            self_dependent,
            buf: fragment.to_vec(),
            frames: 1,
        });
        Ok(())
    }

    fn continuation(&mut self, h: FrameHead, p: &[u8], out: &mut Outbox, now: Instant) -> Step {
        let max_head = self.shared.limits.max_head;
        let Some(b) = self.block.as_mut() else {
            return Err(ConnError(
                ErrorCode::ProtocolError,
                "CONTINUATION without HEADERS",
            ));
        };
        if b.stream != h.stream {
            return Err(ConnError(
                ErrorCode::ProtocolError,
                "CONTINUATION on another stream",
            ));
        }
        b.frames += 1;
        // The CONTINUATION flood: a block that never ends, or ends only after too many
        // frames, is refused before it costs memory or time.
        if b.buf.len() + p.len() > max_head || b.frames > MAX_CONTINUATIONS {
            return Err(ConnError(
                ErrorCode::EnhanceYourCalm,
                "a header block too large",
            ));
        }
        b.buf.extend_from_slice(p);
        if h.flags & flag::END_HEADERS == 0 {
            return Ok(());
        }
        let b = self.block.take().expect("checked above");
        self.header_block(b.stream, b.end_stream, b.self_dependent, &b.buf, out, now)
    }

    /// A complete header block for `id`: a new request, or trailers.
    fn header_block(
        &mut self,
        id: u32,
        end_stream: bool,
        self_dependent: bool,
        block: &[u8],
        out: &mut Outbox,
        now: Instant,
    ) -> Step {
        let l = &self.shared.limits;
        let fields = self
            .decoder
            .decode(block, l.max_head, l.max_headers)
            .map_err(|_| {
                ConnError(
                    ErrorCode::CompressionError,
                    "an HPACK block that does not decode",
                )
            })?;
        if self_dependent {
            self.last_stream = self.last_stream.max(id);
            self.reset(id, ErrorCode::ProtocolError, out);
            return Ok(());
        }
        if let Some(s) = self.streams.get_mut(&id) {
            // Trailers (§8.1): they must end the stream; their fields are not used.
            if !s.recv_open {
                self.reset(id, ErrorCode::StreamClosed, out);
                return Ok(());
            }
            // §8.1: trailers end the stream and carry no pseudo-header (§8.3).
            if !end_stream || fields.bad_name || fields.list.iter().any(|(n, _)| n.starts_with(':'))
            {
                self.reset(id, ErrorCode::ProtocolError, out);
                return Ok(());
            }
            s.recv_open = false;
            if s.discarding {
                self.maybe_close(id);
            } else {
                self.answer(id, out, now);
            }
            return Ok(());
        }
        if self.recent.contains(&id) {
            // §5.1: frames after a stream's END_STREAM (or its reset) on a stream that is
            // closed now.
            return Err(ConnError(
                ErrorCode::StreamClosed,
                "HEADERS on a closed stream",
            ));
        }
        if id % 2 == 0 || id <= self.last_stream {
            // §5.1.1: client streams are odd and increasing; a lower id is not a new stream.
            return Err(ConnError(
                ErrorCode::ProtocolError,
                "HEADERS on a lower or server stream id",
            ));
        }
        self.last_stream = id;
        if self.recent.len() == RECENT_STREAMS {
            self.recent.pop_front();
        }
        self.recent.push_back(id);
        if self.going_away {
            // §6.8: streams after the GOAWAY's last id are not processed.
            out.with_tail(|b| frame::write_rst(b, id, ErrorCode::RefusedStream));
            return Ok(());
        }
        if self.streams.len() >= self.shared.options.h2.max_streams as usize {
            // §5.1.2: past SETTINGS_MAX_CONCURRENT_STREAMS.
            out.with_tail(|b| frame::write_rst(b, id, ErrorCode::RefusedStream));
            return self.spend(now, true);
        }
        let mut s = Stream::new(!end_stream, self.peer_initial_window);
        if fields.too_large {
            s.discarding = true;
            self.streams.insert(id, s);
            let resp = error_response(
                431,
                "The request header fields are larger than this server accepts.",
            );
            self.send_response(id, resp, false, out);
            return Ok(());
        }
        match request_head(fields) {
            Some(head) => {
                let refused = if end_stream {
                    None
                } else {
                    self.body_use(&head, &mut s)
                };
                s.head = Some(head);
                self.streams.insert(id, s);
                if let Some((resp, line)) = refused {
                    self.refuse_body(id, resp, &line, out);
                } else if end_stream {
                    self.answer(id, out, now);
                }
            }
            // §8.1.1: a malformed request is a stream error.
            None => out.with_tail(|b| frame::write_rst(b, id, ErrorCode::ProtocolError)),
        }
        Ok(())
    }

    /// A request whose body is coming: decide where it goes before a byte of it is read. A
    /// request the guard stops (401, a preflight) is answered at its end and its body
    /// discarded; a routed one's is kept for its upstream or script; a handler may take it (an
    /// upload) or refuse it, whose answer goes at once (with the request line to log).
    fn body_use(&self, head: &Head, s: &mut Stream) -> Option<(Response, String)> {
        let shared = &self.shared;
        with_request(head, |req| {
            if shared
                .options
                .guard
                .as_ref()
                .is_some_and(|g| g.gate(req, &self.peer).is_some())
            {
                return None;
            }
            if shared
                .options
                .gateway
                .as_ref()
                .is_some_and(|g| g.route(req).is_some())
            {
                s.collect = true;
                return None;
            }
            if !matches!(req.method, "PUT" | "POST" | "PATCH") {
                return None;
            }
            match shared.handler.body_use(req, &self.peer) {
                BodyUse::Take(sink) => s.sink = Some(sink),
                BodyUse::Refuse(mut resp) => {
                    if let Some(g) = &shared.options.guard {
                        g.answer_headers(req, &mut resp.headers);
                    }
                    return Some((resp, format!("{} {}", req.method, req.target)));
                }
                BodyUse::Discard => {}
            }
            None
        })
    }

    /// Answer a refused body at once; the rest of it is discarded as it comes.
    fn refuse_body(&mut self, id: u32, resp: Response, line: &str, out: &mut Outbox) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.discarding = true;
            s.head = None;
        }
        let status = resp.status;
        let bytes = self.send_response(id, resp, false, out);
        self.served = self.served.saturating_add(1);
        if let Some(log) = &self.shared.options.access_log {
            log.log(&Entry {
                client: self.peer.ip_addr(),
                request_line: &[line.as_bytes(), Version::Http2.as_str().as_bytes()],
                status,
                bytes,
                referer: None,
                user_agent: None,
            });
        }
    }

    /// The request on `id` is complete: answer it.
    fn answer(&mut self, id: u32, out: &mut Outbox, now: Instant) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let Some(head) = s.head.take() else {
            return;
        };
        let got = match s.sink.take() {
            Some(sink) => Received::Taken(sink),
            None if s.collect => Received::Collected(std::mem::take(&mut s.collected)),
            None => Received::Nothing,
        };
        self.dispatch(id, head, got, 0, out, now);
    }

    /// Ask the guard, then the routes (a relay), then the handler; log and send.
    fn dispatch(
        &mut self,
        id: u32,
        head: Head,
        got: Received,
        redirects: u8,
        out: &mut Outbox,
        now: Instant,
    ) {
        let shared = self.shared.clone();
        with_request(&head, |req| {
            let routed = shared.options.gateway.as_ref().and_then(|g| g.route(req));
            // CORS preflights and authentication come first, as over HTTP/1.1.
            let gated = shared
                .options
                .guard
                .as_ref()
                .and_then(|g| g.gate(req, &self.peer));
            self.served = self.served.saturating_add(1);
            if self.served >= shared.limits.max_requests_per_connection {
                // As HTTP/1.1's `Connection: close` after the last request a connection may
                // carry.
                self.go_away(ErrorCode::NoError, out);
            }
            let mut resp = match (gated, routed, got) {
                (Some(resp), _, _) => resp,
                (None, Some(routed), got) => {
                    let body = match got {
                        Received::Collected(b) => b,
                        _ => Vec::new(),
                    };
                    self.start_relay(id, req, routed, body, redirects, out, now);
                    return;
                }
                (None, None, Received::Taken(sink)) => sink.finish(),
                (None, None, _) => {
                    // A body that ended with its HEADERS (an empty upload) is offered now.
                    let takes_body = matches!(req.method, "PUT" | "POST" | "PATCH");
                    match takes_body.then(|| shared.handler.body_use(req, &self.peer)) {
                        Some(BodyUse::Take(sink)) => sink.finish(),
                        Some(BodyUse::Refuse(resp)) => resp,
                        _ => shared.handler.handle(req, &self.peer),
                    }
                }
            };
            if let Some(g) = &shared.options.guard {
                g.answer_headers(req, &mut resp.headers);
            }
            let status = resp.status;
            let bytes = self.send_response(id, resp, req.is_head(), out);
            self.log_request(req, status, bytes);
        });
    }

    /// The access-log line of a request answered at once.
    fn log_request(&self, req: &Request<'_>, status: u16, bytes: u64) {
        if let Some(log) = &self.shared.options.access_log {
            log.log(&Entry {
                client: self.peer.ip_addr(),
                request_line: &[
                    req.method.as_bytes(),
                    req.target.as_bytes(),
                    Version::Http2.as_str().as_bytes(),
                ],
                status,
                bytes,
                referer: req.header("referer"),
                user_agent: req.header("user-agent"),
            });
        }
    }

    /// Queue the HEADERS of `resp` on `id` and keep its body for [`pump`](Self::pump).
    /// Returns the body bytes that will be sent.
    fn send_response(&mut self, id: u32, resp: Response, head_only: bool, out: &mut Outbox) -> u64 {
        let has_body = status_has_body(resp.status);
        let len = resp.body.len();
        // A body made while it is sent (a folder's archive) has no length: DATA frames carry
        // it as it is made, and an empty one with END_STREAM ends it.
        let streamed = matches!(resp.body, Body::Stream(_));
        let body_goes = has_body && !head_only && (len > 0 || streamed);
        self.write_head(id, &resp, (!streamed).then_some(len), !body_goes, out);
        let Some(s) = self.streams.get_mut(&id) else {
            return 0;
        };
        let mut pieces = VecDeque::new();
        if body_goes {
            match resp.body {
                Body::Empty => {}
                Body::Bytes(b) => pieces.push_back(Part::Bytes(b)),
                Body::File { file, offset, len } => {
                    pieces.push_back(Part::File { file, offset, len })
                }
                Body::Parts(parts) => pieces.extend(parts),
                Body::Stream(st) => {
                    s.streamed = Some(st);
                    s.open = true;
                }
            }
        }
        s.body = Some(pieces);
        if body_goes {
            self.requeue(id);
            len
        } else {
            self.maybe_close(id);
            0
        }
    }

    /// The HEADERS of `resp` on `id`, announcing `length` when it is known and the status has
    /// a body; `end_stream` when no DATA follows.
    fn write_head(
        &mut self,
        id: u32,
        resp: &Response,
        length: Option<u64>,
        end_stream: bool,
        out: &mut Outbox,
    ) {
        let opts = &self.shared.options;
        let mut block = Vec::with_capacity(256);
        hpack::encode_status(&mut block, resp.status);
        with_date(|d| hpack::encode_field(&mut block, "date", d.as_bytes()));
        if opts.server_tokens {
            hpack::encode_field(&mut block, "server", b"tincan");
        }
        let extra = opts
            .extra_headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()));
        for (n, v) in resp.fields().chain(extra) {
            // §8.2.2: connection-specific fields have no meaning in HTTP/2.
            if owned_by_session(n) || !safe_field(n, v) || connection_specific(n) {
                continue;
            }
            hpack::encode_field(&mut block, &n.to_ascii_lowercase(), v.as_bytes());
        }
        if let Some(len) = length.filter(|_| status_has_body(resp.status)) {
            hpack::encode_field(&mut block, "content-length", len.to_string().as_bytes());
        }
        self.write_header_block(id, &block, end_stream, out);
        self.budget.sent += 1;
    }

    /// HEADERS, and CONTINUATION frames for what does not fit one frame (§6.10).
    fn write_header_block(&self, id: u32, block: &[u8], end_stream: bool, out: &mut Outbox) {
        let max = self.peer_max_frame;
        let mut chunks = block.chunks(max).peekable();
        let mut first = true;
        out.with_tail(|b| loop {
            let piece = chunks.next().unwrap_or(&[]);
            let last = chunks.peek().is_none();
            let mut flags = if last { flag::END_HEADERS } else { 0 };
            let kind = if first {
                if end_stream {
                    flags |= flag::END_STREAM;
                }
                kind::HEADERS
            } else {
                kind::CONTINUATION
            };
            first = false;
            frame::write_head(b, piece.len(), kind, flags, id);
            b.extend_from_slice(piece);
            if last {
                break;
            }
        });
    }

    /// Forget a stream both sides are done with. A response complete while the client is
    /// still sending ends the stream with RST_STREAM NO_ERROR (§8.1), which asks it to stop.
    fn maybe_close(&mut self, id: u32) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        if s.done_sending() && !s.recv_open && s.relay.is_none() {
            self.streams.remove(&id);
        }
    }

    fn requeue(&mut self, id: u32) {
        if let Some(s) = self.streams.get_mut(&id) {
            let more = s.body.as_ref().is_some_and(|b| !b.is_empty()) || s.streamed.is_some();
            if !s.queued && more {
                s.queued = true;
                self.ready.push_back(id);
            }
        }
    }

    fn requeue_all(&mut self) {
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            self.requeue(id);
        }
    }

    /// Send DATA frames, a frame per stream in turn, while the windows and the pause mark
    /// allow.
    fn pump(&mut self, out: &mut Outbox) {
        let mark = self.pause_mark();
        while out.len() < mark && self.send_window > 0 {
            let Some(id) = self.ready.pop_front() else {
                return;
            };
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            s.queued = false;
            if s.send_window <= 0 {
                // Stalled until the client's WINDOW_UPDATE requeues it.
                continue;
            }
            let Some(body) = s.body.as_mut() else {
                continue;
            };
            if body.is_empty() {
                // A made body: its next piece, or its end. (A relayed one waits for its link.)
                let Some(st) = s.streamed.as_mut() else {
                    continue;
                };
                match st.0.next_piece(self.peer_max_frame) {
                    Some(piece) => body.push_back(Part::Bytes(piece)),
                    None => {
                        s.streamed = None;
                        s.open = false;
                        out.with_tail(|b| {
                            frame::write_head(b, 0, kind::DATA, flag::END_STREAM, id)
                        });
                        self.maybe_close(id);
                        continue;
                    }
                }
            }
            let single = body.len() == 1;
            let Some(front) = body.front_mut() else {
                continue;
            };
            let room = (s.send_window.min(self.send_window) as usize).min(self.peer_max_frame);
            let n;
            let mut failed = false;
            match front {
                Part::Bytes(b) => {
                    n = room.min(b.len());
                    let piece = b.split_to(n);
                    let end = b.is_empty() && single && !s.open;
                    out.with_tail(|w| {
                        frame::write_head(
                            w,
                            n,
                            kind::DATA,
                            if end { flag::END_STREAM } else { 0 },
                            id,
                        )
                    });
                    out.push_shared(piece);
                    if b.is_empty() {
                        body.pop_front();
                    }
                }
                Part::File { file, offset, len } => {
                    n = room.min(usize::try_from(*len).unwrap_or(usize::MAX));
                    let end = *len == n as u64 && single && !s.open;
                    out.with_tail(|w| {
                        frame::write_head(
                            w,
                            n,
                            kind::DATA,
                            if end { flag::END_STREAM } else { 0 },
                            id,
                        )
                    });
                    if n >= SENDFILE_MIN {
                        // The payload is a file region: the driver sends it with `sendfile`
                        // where no TLS is in the way (and reads and encrypts it in pieces
                        // under TLS). A file that shrank meanwhile is the driver's error, which
                        // closes the connection rather than send a frame shorter than its head.
                        out.push_file(file.clone(), *offset, n as u64);
                    } else {
                        // A small payload is copied: a sendfile call per small frame, between
                        // the writes of the frame heads, costs more than the copy.
                        let ok = out.with_tail(|w| {
                            let start = w.len();
                            w.resize(start + n, 0);
                            let ok = read_exact_at(file, &mut w[start..], *offset);
                            if !ok {
                                w.truncate(start - frame::HEADER_LEN);
                            }
                            ok
                        });
                        if !ok {
                            failed = true;
                        }
                    }
                    *offset += n as u64;
                    *len -= n as u64;
                    if *len == 0 {
                        body.pop_front();
                    }
                }
            }
            if failed {
                // Never a frame with the wrong bytes: the stream is cut.
                tracing::debug!(
                    stream = id,
                    "a file shrank while it was sent; resetting the stream"
                );
                self.reset(id, ErrorCode::InternalError, out);
                continue;
            }
            s.send_window -= n as i64;
            self.send_window -= n as i64;
            self.budget.sent += 1;
            if s.done_sending() {
                if s.recv_open {
                    out.with_tail(|b| frame::write_rst(b, id, ErrorCode::NoError));
                    self.forget(id);
                } else {
                    self.maybe_close(id);
                }
            } else {
                self.requeue(id);
            }
        }
    }
}

/// The [`Request`] the handler and the routes see, borrowed from a stream's `head`.
fn with_request<R>(head: &Head, f: impl FnOnce(&Request<'_>) -> R) -> R {
    let headers: Vec<httparse::Header<'_>> = head
        .fields
        .iter()
        .map(|(n, v)| httparse::Header {
            name: n.as_str(),
            value: v,
        })
        .collect();
    let (path, query) = match head.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (head.path.as_str(), None),
    };
    f(&Request {
        method: &head.method,
        target: &head.path,
        path,
        query,
        version: Version::Http2,
        headers: &headers,
    })
}

/// Read all of `buf` from `file` at `offset`; false if the file ended first or failed.
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => return false,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Fields that belong to one HTTP/1 connection and are malformed in HTTP/2 (§8.2.2).
fn connection_specific(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ]
    .iter()
    .any(|n| n.eq_ignore_ascii_case(name))
}

/// A token character (RFC 9110 §5.6.2) that may appear in an HTTP/2 field name: no uppercase
/// (§8.2.1).
fn name_char(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*'
        | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// Check a decoded field list as a request (§8.3.1) and keep what the handler needs; `None`
/// when it is malformed.
fn request_head(fields: hpack::Fields) -> Option<Head> {
    if fields.bad_name {
        return None;
    }
    let mut head = Head::default();
    let (mut method, mut scheme, mut path, mut authority) = (None, None, None, None);
    let mut regular = false;
    let mut host = false;
    for (name, value) in fields.list {
        // §8.2.1: no NUL, CR or LF, and no whitespace at either end of a value.
        if value.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n')
            || value.first().is_some_and(|b| *b == b' ' || *b == b'\t')
            || value.last().is_some_and(|b| *b == b' ' || *b == b'\t')
        {
            return None;
        }
        if let Some(pseudo) = name.strip_prefix(':') {
            if regular {
                return None;
            }
            let slot = match pseudo {
                "method" => &mut method,
                "scheme" => &mut scheme,
                "path" => &mut path,
                "authority" => &mut authority,
                _ => return None,
            };
            if slot.is_some() {
                return None;
            }
            *slot = Some(String::from_utf8(value).ok()?);
            continue;
        }
        regular = true;
        if name.is_empty() || !name.bytes().all(name_char) || connection_specific(&name) {
            return None;
        }
        if name == "te" && value != b"trailers" {
            return None;
        }
        if name == "content-length" {
            let v = std::str::from_utf8(&value).ok()?;
            let n: u64 = v.parse().ok()?;
            if head.content_length.is_some_and(|c| c != n) {
                return None;
            }
            head.content_length = Some(n);
        }
        host |= name == "host";
        head.fields.push((name, value));
    }
    let method = method?;
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    if method == "CONNECT" {
        // §8.5: only :method and :authority.
        if scheme.is_some() || path.is_some() {
            return None;
        }
        path = Some(authority.clone()?);
    } else {
        scheme?;
        let p = path.as_deref()?;
        let ok = p.starts_with('/') || (p == "*" && method == "OPTIONS");
        if !ok || p.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return None;
        }
    }
    if let Some(a) = authority {
        // §8.3.1: a Host that names another entity than `:authority` makes it malformed.
        let other = head
            .fields
            .iter()
            .any(|(n, v)| n == "host" && !v.eq_ignore_ascii_case(a.as_bytes()));
        if other {
            return None;
        }
        if !host {
            // §8.3.1: `:authority` stands for Host; the handler reads `Host`.
            head.fields.insert(0, ("host".to_string(), a.into_bytes()));
        }
    }
    head.method = method;
    head.path = path?;
    Some(head)
}
