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
//! The parts: this file holds the session's state and its seam entry points; `receive` each
//! frame the client sends; `send` the answers and the frames that carry them; `relay` the
//! routed streams; `frame` and `hpack` the wire formats.
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
mod hpack_tables;
mod receive;
mod relay;
mod send;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::access_log::Entry;
use super::message::{
    error_response, Body, BodySink, BodyUse, Part, Request, Response, Streamed, Version,
};
use super::shared::{with_date, Shared};
use super::wire::fields::{owned_by_session, safe_field};
use super::wire::status_has_body;
use crate::protocol::{LinkEvent, LinkId, Links, Next, Outbox, Peer, ReadBuf};
pub use frame::PREFACE;
use frame::{flag, kind, setting, ErrorCode, Frame, FrameHead, DEFAULT_WINDOW, MAX_WINDOW};

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
    /// The request goes to a proxy or CGI route without a declared length: its body is kept
    /// to be sent on with one.
    collect: bool,
    collected: Vec<u8>,
    /// The request goes to a proxy or CGI route with a declared length: its body streams to
    /// the link as DATA comes.
    upload: Option<Upload>,
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

/// A routed request body on its way to the link. The stream's window is given back only for
/// bytes the link took, so a client can be at most a window ahead of the upstream (RFC 9113
/// §5.2): memory per stream stays bounded however long the body.
#[derive(Debug, Default)]
struct Upload {
    /// Received, not yet taken by the link (at most a window).
    pending: Vec<u8>,
    /// The `content-length` the body must match (§8.1.1).
    declared: u64,
    /// END_STREAM came.
    ended: bool,
}

/// What a stream received of its request body, handed to the answer.
enum Received {
    /// Counted and discarded (or there was none).
    Nothing,
    /// Kept for a proxy or CGI route.
    Collected(Vec<u8>),
    /// Coming, this long, for a proxy or CGI route ([`Upload`]).
    Streaming(u64),
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
            upload: None,
            relay: None,
            sink: None,
            streamed: None,
        }
    }

    /// Give the client back the window it used on this stream, once that is half of it.
    fn refill(&mut self, id: u32, out: &mut Outbox) {
        if self.recv_used >= REFILL_AT {
            let n = std::mem::take(&mut self.recv_used);
            self.recv_window += n;
            out.with_tail(|b| frame::write_window_update(b, id, n as u32));
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

    /// Something happened on `link`: the relay of the stream it serves moves on, and what it
    /// produced goes out as frames.
    pub(crate) fn on_link(
        &mut self,
        link: LinkId,
        ev: LinkEvent,
        out: &mut Outbox,
        now: Instant,
    ) -> Next {
        if self.failed {
            return Next::CloseAfterFlush;
        }
        self.on_link_event(link, ev, out, now);
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
            kind::DATA => self.data(
                Frame {
                    head: h,
                    payload: p,
                },
                out,
                now,
            ),
            kind::HEADERS => self.headers(
                Frame {
                    head: h,
                    payload: p,
                },
                out,
                now,
            ),
            kind::CONTINUATION => self.continuation(
                Frame {
                    head: h,
                    payload: p,
                },
                out,
                now,
            ),
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
            kind::SETTINGS => self.settings(
                Frame {
                    head: h,
                    payload: p,
                },
                out,
                now,
            ),
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
            kind::WINDOW_UPDATE => self.window_update(
                Frame {
                    head: h,
                    payload: p,
                },
                out,
                now,
            ),
            // §5.5: unknown frame types are ignored (and counted).
            _ => self.spend(now, false),
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
