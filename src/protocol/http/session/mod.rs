//! One HTTP/1.x connection as a sans-I/O [`Session`]: find request heads in the input, refuse
//! what the limits or RFC 9112 forbid, read and discard bodies, ask the [`Handler`] for a
//! response, and write it with the headers the connection owns (`Date`, `Server`,
//! `Content-Length`, `Connection`). Keep-alive, pipelining (responses in request order), the
//! head/body/idle timers and graceful shutdown live here; the drivers only move bytes.
//!
//! Each request goes through these steps (the session loops over them while
//! complete requests are buffered and the output is below the pause mark):
//!
//! 1. skip empty lines before a request line (RFC 9112 §2.2);
//! 2. scan for the end of the head, enforcing the request-line, header-line and head limits as
//!    bytes arrive ([`HeadScanner`]: 414/431 before the whole head is buffered);
//! 3. parse it with httparse and check method (501), version (505), target, Host (400),
//!    `Expect` (417) and body framing (400 on anything a smuggler could use; 413 over the limit);
//! 4. a body: send `100 Continue` if asked, keep a copy of the head, read and discard the body
//!    across reads ([`Decoder`]), collect it when the request goes to a CGI route, or stream
//!    it into the handler's sink when the handler takes it (an upload: `Handler::body_use`),
//!    each bounded by the same body limit;
//! 5. ask the handler; decide keep-alive (version, `Connection`, the response, the request
//!    count, shutdown, the model);
//! 6. write the head and queue the body (bytes, or file regions for `sendfile`); nothing for
//!    HEAD, 1xx, 204 and 304;
//! 7. log the access line; go idle (keep-alive timer) or close after the output is flushed.
//!
//! A request for a proxy or CGI route ([`super::gateway`], configured only with `--proxy` or
//! `--cgi`) takes a detour at step 4: the session asks its driver for a link to the upstream
//! or script ([`crate::protocol::link`]), sends the request head, and waits in
//! `Phase::Deferred`, holding any pipelined input back. The request body streams into the link
//! as it is read (re-chunked when the client chunked it; a chunked body for a script, which
//! needs its length first, is collected within the body limit), and reading from the client
//! pauses while the link is backed up. The answer is written as it comes (`on_link`), as fast
//! as the client takes it (`on_drained`): `Content-Length` when the upstream gave one, else
//! chunked to HTTP/1.1 clients and close-delimited to HTTP/1.0 ones. An upstream failure
//! before the head is a 502/504 page; after it, the connection is closed so the client sees a
//! short answer. A kept upstream connection that closes before any answer is retried once on
//! a fresh one, and a connection refused or timed out goes to the route's next upstream, both
//! only while no body byte has gone.
//!
//! Every refusal is a small HTML page with `Connection: close`, then
//! [`Next::CloseAfterFlush`].

use std::sync::Arc;
use std::time::Instant;

use super::access::Guard;
use super::access_log::{AccessLog, Entry};
use super::gateway::Gateway;
use super::h2::{H2Options, H2Session, PREFACE};
use super::message::{
    error_response, Body, BodySink, BodyUse, Handler, Response, Streamed, Version,
};
use super::proxy::RequestBody;
use super::wire::{self, status_has_body, Decoder, Encoder, Head, HeadScanner, Limits, Reject};
use crate::protocol::{
    LinkEvent, LinkId, Links, Next, Outbox, Peer, ReadBuf, Service, Session, Waker,
};

mod relay;
#[cfg(test)]
mod tests;
mod write;

use relay::Deferred;
use write::{log_line, write_head, write_response};
pub(crate) use write::{owned_by_session, safe_field, with_date};

/// Connection-level choices that are not limits.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Send `Server: tincan` (`--hide-server` / `server_tokens = false` turns it off).
    pub server_tokens: bool,
    /// Allow persistent connections at all (off under the iterative model, which can hold only
    /// one connection at a time). Off, a connection still answers the requests a client had
    /// pipelined before an answer was made (their heads already read), the last one with
    /// `Connection: close`: only waiting for a next request is refused.
    pub keep_alive: bool,
    /// `--header "Name: value"`: added to every response.
    pub extra_headers: Vec<(String, String)>,
    pub access_log: Option<Arc<AccessLog>>,
    /// Stop answering pipelined requests while this much output is queued; the rest wait in the
    /// session's stash and are answered as the output drains. Keep it at or above the drivers'
    /// high-water mark, so reading is paused whenever answering is.
    pub pipeline_pause: usize,
    /// Proxy and CGI routes (`--proxy`, `--cgi`); `None` serves everything with the handler.
    pub gateway: Option<Arc<Gateway>>,
    /// CORS and authentication (`--cors`, `--auth-file`, `--auth`), asked before any route;
    /// `None` when neither is configured.
    pub guard: Option<Arc<Guard>>,
    /// Speak HTTP/2 (`--http2`): h2c with prior knowledge on plain connections, `h2` when
    /// ALPN chose it on TLS ones.
    pub http2: bool,
    pub h2: H2Options,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            server_tokens: true,
            keep_alive: true,
            extra_headers: Vec::new(),
            access_log: None,
            pipeline_pause: 256 * 1024,
            gateway: None,
            guard: None,
            http2: true,
            h2: H2Options::default(),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) limits: Limits,
    pub(crate) options: HttpOptions,
}

/// The HTTP/1.1 protocol: a handler plus the limits and options every connection shares.
#[derive(Clone)]
pub struct HttpService {
    shared: Arc<Shared>,
    /// Listeners whose connections get another handler and options (`serve
    /// --redirect-http`: every answer a redirect to https), and those.
    other: Option<(Vec<std::net::SocketAddr>, Arc<Shared>)>,
}

impl std::fmt::Debug for HttpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpService")
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

impl HttpService {
    pub fn new(handler: Arc<dyn Handler>, limits: Limits, options: HttpOptions) -> HttpService {
        HttpService {
            shared: Arc::new(Shared {
                handler,
                limits,
                options,
            }),
            other: None,
        }
    }

    /// Serve connections accepted on `listeners` with `handler` and `options` instead (the
    /// limits stay): one service for a server's two kinds of listener, as a model runs one.
    pub fn with_listeners(
        mut self,
        listeners: Vec<std::net::SocketAddr>,
        handler: Arc<dyn Handler>,
        options: HttpOptions,
    ) -> HttpService {
        let limits = self.shared.limits.clone();
        let shared = Arc::new(Shared {
            handler,
            limits,
            options,
        });
        self.other = Some((listeners, shared));
        self
    }

    /// A session for `peer`, started at `now` (the head timer runs from the connection's start).
    pub fn session_at(&self, peer: &Peer, now: Instant) -> HttpSession {
        self.session_with(peer, Waker::noop(), now)
    }

    /// As [`session_at`](Self::session_at); HTTP sessions are never woken from outside (their
    /// outbound work comes through their links), so the waker is not kept.
    pub fn session_with(&self, peer: &Peer, _waker: Waker, now: Instant) -> HttpSession {
        HttpSession {
            links: None,
            collect: None,
            shared: match &self.other {
                Some((on, other)) if peer.accepted_on(on) => Arc::clone(other),
                _ => Arc::clone(&self.shared),
            },
            peer: peer.clone(),
            phase: Phase::Head,
            scanner: HeadScanner::default(),
            started: false,
            head_copy: Vec::new(),
            stash: Vec::new(),
            deadline: Some(now + self.shared.limits.head_timeout),
            served: 0,
            shutting_down: false,
            more_may_come: false,
            next_in_hand: false,
        }
    }
}

impl Service for HttpService {
    type Session = HttpSession;

    fn open(&self, peer: &Peer, waker: Waker) -> HttpSession {
        self.session_with(peer, waker, Instant::now())
    }

    fn on_out_of_descriptors(&self) {
        self.shared.handler.release_descriptors();
    }

    fn on_shutdown(&self) {
        if let Some(log) = &self.shared.options.access_log {
            log.flush();
        }
    }
}

/// Where a connection is in its request cycle.
#[derive(Debug)]
enum Phase {
    /// Waiting for (or reading) a request head; the head timer runs.
    Head,
    /// Reading and discarding a request body; the head is kept in `head_copy`.
    Body(Decoder),
    /// Between requests on a kept-alive connection; the idle timer runs.
    Idle,
    /// A proxied or CGI answer is being relayed; later input waits in the stash.
    Deferred(Box<Deferred>),
    /// The upstream switched protocols (101): bytes go both ways between the client and the
    /// link until either side closes or the tunnel idles out.
    Tunnel(LinkId),
    /// A body made while it is sent (a folder archive) is going out, a piece each time the
    /// client has taken the last; later input waits in the stash.
    Streaming(Box<Streaming>),
    /// A closing answer was queued; nothing more is read.
    Done,
    /// The connection speaks HTTP/2 (RFC 9113): every call goes to this session. A phase
    /// rather than a field, so an HTTP/1 connection carries no extra byte for it.
    H2(Box<H2Session>),
}

/// A [`Body::Stream`] answer in progress.
struct Streaming {
    body: Streamed,
    wire: Encoder,
    close: bool,
    status: u16,
    bytes: u64,
    /// Request line, Referer, User-Agent (only when an access log is kept).
    log: Option<(String, Option<String>, Option<String>)>,
}

impl std::fmt::Debug for Streaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// The piece of a streamed body asked for at a time.
const STREAM_PIECE: usize = 64 * 1024;

/// One connection's HTTP state.
pub struct HttpSession {
    shared: Arc<Shared>,
    peer: Peer,
    phase: Phase,
    scanner: HeadScanner,
    /// Bytes of the current head have arrived (a timeout then deserves a 408, not silence).
    started: bool,
    /// The head of a request whose body is being read (the buffer moves on under it).
    head_copy: Vec<u8>,
    /// Pipelined input set aside while answering was paused (the drivers hand input only to
    /// `on_input`; this is answered from `on_drained`). While it holds bytes, new input is
    /// appended to it so order is kept.
    stash: Vec<u8>,
    /// When the running timer (head, body or idle) expires.
    deadline: Option<Instant>,
    served: u32,
    shutting_down: bool,
    /// The client may still be sending (a refused request's body, a body answered before it
    /// came, a CONNECT's tunnel data), so closing lingers.
    more_may_come: bool,
    /// With keep-alive off: the next request's whole head is already read, so the answer being
    /// made does not end the connection.
    next_in_hand: bool,
    /// The links to upstreams and scripts (made on the first routed request, then kept: a
    /// released link must still be seen by the driver after its exchange is over).
    links: Option<Box<Links>>,
    /// Where the body being read goes, when it is not discarded: collected (the chunked body
    /// of a CGI request: a script needs its length first) or into the handler's sink (an
    /// upload). Boxed: only those requests use it, and every idle connection would otherwise
    /// carry its 24 bytes.
    collect: Option<Box<BodyTo>>,
}

/// The destination of a request body that is not discarded.
enum BodyTo {
    Collect(Vec<u8>),
    Sink(Box<dyn BodySink>),
}

impl std::fmt::Debug for HttpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSession")
            .field("peer", &self.peer)
            .field("phase", &self.phase)
            .field("served", &self.served)
            .finish_non_exhaustive()
    }
}

/// Header storage on the stack for the usual header-count limits.
const STACK_HEADERS: usize = 128;

/// Parse `buf` (a complete head) with header storage sized to the limit, and hand the result
/// to `f`.
fn with_head<R>(buf: &[u8], limits: &Limits, f: impl FnOnce(Result<Head<'_>, Reject>) -> R) -> R {
    let n = limits.max_headers;
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut heap = Vec::new();
    let storage: &mut [httparse::Header<'_>] = if n <= STACK_HEADERS {
        &mut stack[..n]
    } else {
        heap.resize(n, httparse::EMPTY_HEADER);
        &mut heap[..]
    };
    f(wire::parse_head(buf, storage, limits))
}

/// The request line of a head, for the access log (lossy, bounded).
fn request_line(buf: &[u8]) -> Vec<u8> {
    let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
    // The bytes as they came, whatever they are: the log escapes them.
    line[..line.len().min(1024)].to_vec()
}

impl HttpSession {
    /// Answer from the stash (if any) and then `input`, keeping their order; set aside what a
    /// pause leaves.
    fn run(
        &mut self,
        input: Option<&mut ReadBuf>,
        out: &mut Outbox,
        now: Instant,
        bounded: bool,
    ) -> Next {
        if matches!(self.phase, Phase::Tunnel(_)) {
            if let Some(input) = input {
                self.stash.extend_from_slice(input.data());
                input.clear();
            }
            return self.tunnel(out, now);
        }
        if matches!(self.phase, Phase::Streaming(_)) {
            // Requests pipelined behind a streamed answer wait their turn.
            if let Some(input) = input {
                if !self.hold(input) {
                    return Next::Close;
                }
            }
            return Next::Continue {
                wake_at: self.deadline,
            };
        }
        if matches!(self.phase, Phase::Deferred(_)) {
            // The body of the request in flight goes to its link; requests pipelined behind it
            // wait their turn (answers go in order).
            if let Some(input) = input {
                if !self.hold(input) {
                    return self.drop_deferred(400);
                }
            }
            return self.upload(out, now);
        }
        if self.stash.is_empty() {
            let Some(input) = input else {
                return Next::Continue {
                    wake_at: self.deadline,
                };
            };
            let next = self.process(input, out, now, bounded);
            if matches!(self.phase, Phase::Streaming(_)) && !next.is_close() {
                if !self.hold(input) {
                    return Next::Close;
                }
                return self.stream_pump(out, now);
            }
            if matches!(self.phase, Phase::Deferred(_)) && !next.is_close() {
                if !self.hold(input) {
                    return self.drop_deferred(400);
                }
                return self.upload(out, now);
            }
            if !next.is_close()
                && out.len() >= self.shared.options.pipeline_pause
                && !input.is_empty()
            {
                self.stash.extend_from_slice(input.data());
                input.clear();
            }
            return next;
        }
        let mut buf = ReadBuf::from_bytes(&self.stash);
        self.stash.clear();
        if let Some(input) = input {
            buf.extend(input.data());
            input.clear();
        }
        let next = self.process(&mut buf, out, now, bounded);
        if !next.is_close() {
            self.stash.extend_from_slice(buf.data());
            if matches!(self.phase, Phase::Streaming(_)) {
                return self.stream_pump(out, now);
            }
            if matches!(self.phase, Phase::Deferred(_)) {
                if self.stash.len() > self.hold_limit() {
                    return self.drop_deferred(400);
                }
                return self.upload(out, now);
            }
        }
        next
    }

    /// Input pipelined behind a deferred answer is held back, up to one request's worth
    /// (head and body limits): a client that sends more without reading is dropped rather
    /// than buffered without end. False when over that.
    fn hold(&mut self, input: &mut ReadBuf) -> bool {
        if input.is_empty() {
            return true;
        }
        if self.stash.len() + input.len() > self.hold_limit() {
            tracing::debug!(peer = %self.peer.remote, "too much input pipelined behind a proxied request; closing");
            return false;
        }
        self.stash.extend_from_slice(input.data());
        input.clear();
        true
    }

    fn hold_limit(&self) -> usize {
        let l = &self.shared.limits;
        l.max_head
            .saturating_add(usize::try_from(l.max_body).unwrap_or(usize::MAX))
            .max(self.shared.options.pipeline_pause)
    }

    /// The request loop: answer every complete request in `input`, in order.
    fn process(
        &mut self,
        input: &mut ReadBuf,
        out: &mut Outbox,
        now: Instant,
        bounded: bool,
    ) -> Next {
        loop {
            if bounded && out.len() >= self.shared.options.pipeline_pause {
                // The rest stays in `input` until the driver has sent some of this.
                break;
            }
            match &mut self.phase {
                Phase::Done => {
                    input.clear();
                    return Next::CloseAfterFlush;
                }
                // The rest waits until the deferred answer is complete, or goes through the
                // tunnel (see `run`); an HTTP/2 connection never comes here.
                Phase::Deferred(_) | Phase::Tunnel(_) | Phase::Streaming(_) | Phase::H2(_) => break,
                Phase::Idle | Phase::Head => {
                    if !self.started {
                        let blank = wire::leading_empty_lines(input.data());
                        input.consume(blank);
                    }
                    if input.is_empty() {
                        break;
                    }
                    if matches!(self.phase, Phase::Idle) {
                        self.phase = Phase::Head;
                        self.deadline = Some(now + self.shared.limits.head_timeout);
                    }
                    self.started = true;
                    let len = match self.scanner.scan(input.data(), &self.shared.limits) {
                        Err(r) => {
                            let line = request_line(input.data());
                            return self.reject(r, &line, input, out);
                        }
                        Ok(None) => break,
                        Ok(Some(len)) => len,
                    };
                    wire::lower_minor_version(&mut input.data_mut()[..len]);
                    self.next_in_hand = self.head_in_hand(&input.data()[len..]);
                    let shared = self.shared.clone();
                    let closing = with_head(&input.data()[..len], &shared.limits, |head| {
                        self.on_head(head, &input.data()[..len], out, now)
                    });
                    input.consume(len);
                    if closing {
                        return self.close_after(input);
                    }
                }
                Phase::Body(reader) => {
                    if input.is_empty() {
                        break;
                    }
                    let collect = &mut self.collect;
                    let fed = reader.decode(input.data(), &self.shared.limits, |b| {
                        match collect.as_deref_mut() {
                            Some(BodyTo::Collect(c)) => c.extend_from_slice(b),
                            Some(BodyTo::Sink(s)) => s.write(b),
                            None => {}
                        }
                    });
                    let (used, done) = match fed {
                        Ok(r) => r,
                        Err(r) => {
                            let line = request_line(&self.head_copy);
                            return self.reject(r, &line, input, out);
                        }
                    };
                    input.consume(used);
                    self.next_in_hand = self.head_in_hand(input.data());
                    if !done {
                        // As nginx's client_body_timeout: the body timer runs between reads.
                        self.deadline = Some(now + self.shared.limits.body_timeout);
                        break;
                    }
                    let head = std::mem::take(&mut self.head_copy);
                    let shared = self.shared.clone();
                    let closing = with_head(&head, &shared.limits, |h| match h {
                        Ok(h) => match self.collect.take().map(|b| *b) {
                            // An upload is complete: its sink answers.
                            Some(BodyTo::Sink(sink)) => {
                                let resp = sink.finish();
                                self.complete(&h, resp, out, now)
                            }
                            // The chunked body of a CGI request is complete: start the script.
                            Some(BodyTo::Collect(body)) => match shared
                                .options
                                .gateway
                                .as_ref()
                                .and_then(|g| g.route(&h.request))
                            {
                                Some(routed) => {
                                    let len = RequestBody::Length(body.len() as u64);
                                    self.defer(&h, routed, len, None, Some(&body), out, now)
                                }
                                None => self.respond(&h, out, now),
                            },
                            None => self.respond(&h, out, now),
                        },
                        // The same bytes parsed a moment ago; never expected.
                        Err(r) => {
                            self.answer_error(r, &request_line(&head), out);
                            true
                        }
                    });
                    self.head_copy = head;
                    self.head_copy.clear();
                    if closing {
                        return self.close_after(input);
                    }
                }
            }
        }
        Next::Continue {
            wake_at: self.deadline,
        }
    }

    /// A complete head arrived. Returns true when the connection closes after what is queued.
    fn on_head(
        &mut self,
        head: Result<Head<'_>, Reject>,
        raw: &[u8],
        out: &mut Outbox,
        now: Instant,
    ) -> bool {
        let head = match head {
            Ok(h) => h,
            Err(r) => {
                self.answer_error(r, &request_line(raw), out);
                return true;
            }
        };
        // CORS preflights and authentication come before any route (and before a body is read).
        if let Some(guard) = self.shared.options.guard.clone() {
            if let Some(mut resp) = guard.gate(&head.request, &self.peer) {
                if !head.body.is_finished() {
                    // The body is not read: the connection ends after the answer, lingering.
                    resp.close = true;
                    self.more_may_come = true;
                }
                return self.complete(&head, resp, out, now);
            }
        }
        // Proxy and CGI routes: one branch when none are configured, nothing else added.
        let routed = match &self.shared.options.gateway {
            None => None,
            Some(g) => g.route(&head.request),
        };
        let reader = (!head.body.is_finished()).then(|| head.body.clone());
        if let (Some(reader), None) = (&reader, &routed) {
            match self.shared.handler.body_use(&head.request, &self.peer) {
                BodyUse::Discard => {}
                BodyUse::Refuse(mut resp) => {
                    // Refused before the body: it is not read, so the connection ends here.
                    self.more_may_come = true;
                    resp.close = true;
                    return self.complete(&head, resp, out, now);
                }
                BodyUse::Take(sink) => {
                    self.collect = Some(Box::new(BodyTo::Sink(sink)));
                    // RFC 9110 §10.1.1: the client waits for this before sending the body.
                    if head.expect_continue {
                        out.push_bytes(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    self.head_copy.clear();
                    self.head_copy.extend_from_slice(raw);
                    self.phase = Phase::Body(reader.clone());
                    self.deadline = Some(now + self.shared.limits.body_timeout);
                    return false;
                }
            }
        }
        match reader {
            None => match routed {
                Some(r) => self.defer(&head, r, RequestBody::None, None, None, out, now),
                None => self.respond(&head, out, now),
            },
            // RFC 9110 §10.1.1: a client that asked `Expect: 100-continue` waits before it
            // sends the body, and a server that already knows its final status may answer
            // without the 100. Only proxy and CGI routes read a body, so any other answer is
            // known now: it goes at once (a 405 for an upload, as nginx), instead of a 100 that
            // invites a body only to throw it away. The body may still follow, so the
            // connection closes after the answer, lingering.
            Some(_) if head.expect_continue && routed.is_none() => {
                self.more_may_come = true;
                let mut resp = self.shared.handler.handle(&head.request, &self.peer);
                resp.close = true;
                self.complete(&head, resp, out, now)
            }
            Some(reader) => {
                // A routed body streams to its link as it comes, except a chunked one for a
                // script: RFC 3875 gives a script its input's length first.
                let streams = match (&routed, &self.shared.options.gateway) {
                    (Some(r), Some(g)) => !(g.is_cgi(r) && reader.is_chunked()),
                    _ => false,
                };
                if let (true, Some(r)) = (streams, &routed) {
                    let r = r.clone();
                    if head.expect_continue {
                        out.push_bytes(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    let body = match reader.remaining() {
                        Some(n) => RequestBody::Length(n),
                        None => RequestBody::Chunked,
                    };
                    return self.defer(&head, r, body, Some(reader), None, out, now);
                }
                if routed.is_some() {
                    self.collect = Some(Box::new(BodyTo::Collect(Vec::new())));
                }
                // RFC 9110 §10.1.1: the client waits for this before sending the body. (A body
                // over the limit was already refused by its Content-Length, without a 100.)
                if head.expect_continue {
                    out.push_bytes(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
                self.head_copy.clear();
                self.head_copy.extend_from_slice(raw);
                self.phase = Phase::Body(reader);
                self.deadline = Some(now + self.shared.limits.body_timeout);
                false
            }
        }
    }

    /// Ask the handler, write its answer. Returns true when the connection closes after it.
    fn respond(&mut self, head: &Head<'_>, out: &mut Outbox, now: Instant) -> bool {
        let req = &head.request;
        let resp = self.shared.handler.handle(req, &self.peer);
        self.complete(head, resp, out, now)
    }

    /// With keep-alive off, is a next request's whole head in `rest` (the input behind the
    /// request being answered)? A client that pipelined it gets its answer, not a close it
    /// would have to retry after (RFC 9112 §9.3.2); one still arriving is not waited for, so an
    /// idle client holds no connection.
    fn head_in_hand(&self, rest: &[u8]) -> bool {
        if self.shared.options.keep_alive {
            return false;
        }
        let rest = &rest[wire::leading_empty_lines(rest)..];
        !rest.is_empty()
            && matches!(
                HeadScanner::default().scan(rest, &self.shared.limits),
                Ok(Some(_))
            )
    }

    /// Count the request and decide whether the connection closes after its answer.
    fn closes_after(&mut self, head: &Head<'_>, resp_close: bool) -> bool {
        self.served = self.served.saturating_add(1);
        // What follows a CONNECT head is tunnel data, never a next request (RFC 9110 §9.3.6);
        // no tunnel is opened here, so the connection ends with the answer.
        let connect = head.request.method == "CONNECT";
        self.more_may_come |= connect;
        resp_close
            || connect
            || !head.keep_alive
            || (!self.shared.options.keep_alive && !std::mem::take(&mut self.next_in_hand))
            || self.shutting_down
            || self.served >= self.shared.limits.max_requests_per_connection
    }

    /// Write `resp` as the answer to `head`, log it, and move on.
    fn complete(
        &mut self,
        head: &Head<'_>,
        mut resp: Response,
        out: &mut Outbox,
        now: Instant,
    ) -> bool {
        let req = &head.request;
        let close = self.closes_after(head, resp.close);
        let opts = &self.shared.options;
        if let Some(g) = &opts.guard {
            g.answer_headers(req, &mut resp.headers);
        }
        let keep_alive_10 = !close && req.version == Version::Http10;
        let status = resp.status;
        if matches!(resp.body, Body::Stream(_)) && status_has_body(status) && !req.is_head() {
            return self.start_stream(head, resp, close, out);
        }
        let bytes = write_response(out, opts, resp, req.is_head(), close, keep_alive_10);
        if let Some(log) = &opts.access_log {
            log.log(&Entry {
                client: self.peer.ip_addr(),
                request_line: &[
                    req.method.as_bytes(),
                    req.target.as_bytes(),
                    req.version.as_str().as_bytes(),
                ],
                status,
                bytes,
                referer: req.header("referer"),
                user_agent: req.header("user-agent"),
            });
        }
        self.next_request(close, now)
    }

    /// Write the head of an answer whose body is made while it is sent, and go on sending it
    /// from `pump`: chunked to an HTTP/1.1 client, ended by the close for an HTTP/1.0 one.
    fn start_stream(
        &mut self,
        head: &Head<'_>,
        mut resp: Response,
        close: bool,
        out: &mut Outbox,
    ) -> bool {
        let Body::Stream(body) = std::mem::replace(&mut resp.body, Body::Empty) else {
            return false;
        };
        let req = &head.request;
        let (wire, close) = if req.version == Version::Http11 {
            (Encoder::Chunked, close)
        } else {
            (Encoder::Unframed, true)
        };
        let opts = &self.shared.options;
        write_head(out, opts, &resp, wire, close, false);
        let log = opts.access_log.as_ref().map(|_| {
            (
                log_line(req),
                req.header("referer").map(str::to_string),
                req.header("user-agent").map(str::to_string),
            )
        });
        self.phase = Phase::Streaming(Box::new(Streaming {
            body,
            wire,
            close,
            status: resp.status,
            bytes: 0,
            log,
        }));
        // The send timeout governs a stream: there is no request timer.
        self.deadline = None;
        false
    }

    /// Queue pieces of a streamed body while the output is below the pause mark; at its end,
    /// log it and go on with the next request.
    fn stream_pump(&mut self, out: &mut Outbox, now: Instant) -> Next {
        let high = self.shared.options.pipeline_pause;
        let Phase::Streaming(s) = &mut self.phase else {
            return Next::CONTINUE;
        };
        while out.len() < high {
            match s.body.0.next_piece(STREAM_PIECE) {
                Some(piece) if piece.is_empty() => {}
                Some(piece) => {
                    s.bytes += piece.len() as u64;
                    s.wire.encode_shared(out, piece);
                }
                None => {
                    s.wire.finish(out);
                    if let (Some(log), Some((line, referer, agent))) =
                        (&self.shared.options.access_log, &s.log)
                    {
                        log.log(&Entry {
                            client: self.peer.ip_addr(),
                            request_line: &[line.as_bytes()],
                            status: s.status,
                            bytes: s.bytes,
                            referer: referer.as_deref(),
                            user_agent: agent.as_deref(),
                        });
                    }
                    let close = s.close;
                    if self.next_request(close || self.shutting_down, now) {
                        let next = self.closing(self.stash.is_empty());
                        self.stash.clear();
                        return next;
                    }
                    return self.run(None, out, now, true);
                }
            }
        }
        Next::Continue {
            wake_at: self.deadline,
        }
    }

    /// The answer is complete (or queued whole): go idle, or close after it.
    fn next_request(&mut self, close: bool, now: Instant) -> bool {
        if close {
            self.phase = Phase::Done;
            self.deadline = None;
        } else {
            self.phase = Phase::Idle;
            self.scanner.reset();
            self.started = false;
            // Idle keep-alive connections keep no large buffers (a big head with a body, a
            // pipelining flood set aside).
            if self.head_copy.capacity() > 8 * 1024 {
                self.head_copy = Vec::new();
            }
            if self.stash.is_empty() && self.stash.capacity() > 64 * 1024 {
                self.stash = Vec::new();
            }
            self.deadline = Some(now + self.shared.limits.keepalive_timeout);
        }
        close
    }

    /// The connection closes after what is queued; `input` holds what followed the last request.
    fn close_after(&mut self, input: &mut ReadBuf) -> Next {
        let next = self.closing(input.is_empty());
        input.clear();
        next
    }

    /// How to close: a request read whole with nothing behind it needs no lingering read
    /// (nginx's rule: the client said its last word). After a refusal, or with bytes already
    /// pipelined behind, the client may still be sending, and closing over unread input would
    /// reset the connection before it read the answer.
    fn closing(&self, nothing_behind: bool) -> Next {
        if nothing_behind && !self.more_may_come {
            Next::CloseAfterReply
        } else {
            Next::CloseAfterFlush
        }
    }

    /// Does this fresh connection open with (the start of) the HTTP/2 client preface (RFC 9113
    /// §3.3, prior knowledge)? An HTTP/1 request line never starts `PRI * HTTP/2.0`. With
    /// `--http2 only` every connection is HTTP/2, and a wrong preface is its error to answer.
    fn prior_knowledge(&self, input: &ReadBuf) -> bool {
        let opts = &self.shared.options;
        if !opts.http2 || self.served > 0 || self.started || !self.stash.is_empty() {
            return false;
        }
        let d = input.data();
        let n = d.len().min(PREFACE.len());
        n > 0 && (opts.h2.only || d[..n] == PREFACE[..n])
    }

    /// Hand the connection to an HTTP/2 session (which sends its SETTINGS at once).
    fn become_h2(&mut self, out: &mut Outbox, now: Instant) -> &mut H2Session {
        self.deadline = None;
        let h2 = H2Session::start(self.shared.clone(), self.peer.clone(), out, now);
        self.phase = Phase::H2(Box::new(h2));
        self.h2_mut().expect("just set")
    }

    fn h2_mut(&mut self) -> Option<&mut H2Session> {
        match &mut self.phase {
            Phase::H2(h2) => Some(h2),
            _ => None,
        }
    }

    /// Queue the answer to a refused request; the connection closes after it.
    fn answer_error(&mut self, r: Reject, line: &[u8], out: &mut Outbox) {
        tracing::debug!(peer = %self.peer.remote, status = r.status, "refused: {}", r.detail);
        // An upload cut short is abandoned now (its sink removes what it wrote).
        self.collect = None;
        let mut resp = error_response(r.status, r.detail);
        resp.close = true;
        // A refused HEAD still gets no body (RFC 9110 §9.3.2).
        let head_only = line.starts_with(b"HEAD ");
        let bytes = write_response(out, &self.shared.options, resp, head_only, true, false);
        if let Some(log) = &self.shared.options.access_log {
            log.log(&Entry {
                client: self.peer.ip_addr(),
                request_line: &[line],
                status: r.status,
                bytes,
                referer: None,
                user_agent: None,
            });
        }
        self.phase = Phase::Done;
        self.deadline = None;
        self.more_may_come = true;
    }

    fn reject(&mut self, r: Reject, line: &[u8], input: &mut ReadBuf, out: &mut Outbox) -> Next {
        self.answer_error(r, line, out);
        input.clear();
        Next::CloseAfterFlush
    }
}

impl Session for HttpSession {
    /// The head timer runs from the accept: a client that connects and never sends a byte is
    /// closed when it expires, as nginx's `client_header_timeout` does (silently, since no
    /// request began).
    fn on_open(&mut self, _out: &mut Outbox, _now: Instant) -> Next {
        Next::Continue {
            wake_at: self.deadline,
        }
    }

    fn on_input(&mut self, input: &mut ReadBuf, out: &mut Outbox, now: Instant) -> Next {
        if let Some(h2) = self.h2_mut() {
            return h2.on_input(input, out, now);
        }
        if self.prior_knowledge(input) {
            let d = input.data();
            let so_far = d.len() < PREFACE.len() && d[..] == PREFACE[..d.len()];
            if so_far {
                return Next::Continue {
                    wake_at: self.deadline,
                };
            }
            return self.become_h2(out, now).on_input(input, out, now);
        }
        self.run(Some(input), out, now, true)
    }

    /// ALPN chose `h2` (RFC 9113 §3.2): the connection speaks HTTP/2 from its first byte.
    fn on_alpn(&mut self, protocol: &[u8], out: &mut Outbox, now: Instant) -> Next {
        if protocol == super::ALPN_H2
            && self.shared.options.http2
            && !matches!(self.phase, Phase::H2(_))
        {
            self.become_h2(out, now);
        }
        Next::Continue {
            wake_at: self.deadline,
        }
    }

    fn on_eof(&mut self, input: &mut ReadBuf, out: &mut Outbox, now: Instant) -> Next {
        if let Some(h2) = self.h2_mut() {
            return h2.on_eof(input, out, now);
        }
        if let (Phase::Tunnel(link), Some(links)) = (&self.phase, self.links.as_mut()) {
            // The client is done sending: so is the tunnel's upstream side, once what it sent
            // is through; the upstream's answer may still come.
            let link = *link;
            links.out(link).push_bytes(&self.stash);
            links.out(link).push_bytes(input.data());
            links.finish(link);
            self.stash.clear();
            input.clear();
            return self.tunnel(out, now);
        }
        // Requests sent before the half-close still get their answers; a partial one is dropped.
        let next = self.run(Some(input), out, now, false);
        if next.is_close() {
            return next;
        }
        if matches!(self.phase, Phase::Deferred(_)) {
            // As nginx (`proxy_ignore_client_abort off`): a client that closes while its answer
            // is being made has gone away (TCP cannot tell a half-close from a hang-up without
            // writing). Dropping the job closes the upstream connection or kills the script,
            // instead of keeping both until the timeout. Logged as 499, nginx's status for it.
            input.clear();
            out.clear();
            return self.drop_deferred(499);
        }
        input.clear();
        Next::CloseAfterFlush
    }

    /// A request whose exchange has begun and whose body has all come waits on the upstream,
    /// not on the client: its answer carries the ACK.
    fn mid_message(&self) -> bool {
        matches!(self.phase, Phase::H2(_))
            || !matches!(&self.phase, Phase::Deferred(d) if d.upload.is_none())
    }

    fn links(&mut self) -> Option<&mut Links> {
        if let Phase::H2(h2) = &mut self.phase {
            return h2.links();
        }
        self.links.as_deref_mut()
    }

    fn on_link(&mut self, id: LinkId, ev: LinkEvent, out: &mut Outbox, now: Instant) -> Next {
        if let Some(h2) = self.h2_mut() {
            return h2.on_link(id, ev, out, now);
        }
        self.link_event(id, ev, out, now)
    }

    /// While a streamed body waits for its link (connecting, or backed up past the pause
    /// mark), the client is not read: its TCP window carries the backpressure.
    fn reading_paused(&self) -> bool {
        match (&self.phase, &self.links) {
            (Phase::Deferred(d), Some(links)) if d.upload.is_some() => {
                !d.connected || links.queued(d.link) >= self.shared.options.pipeline_pause
            }
            (Phase::Tunnel(link), Some(links)) => {
                !self.stash.is_empty() || links.queued(*link) >= self.shared.options.pipeline_pause
            }
            _ => false,
        }
    }

    fn on_drained(&mut self, out: &mut Outbox, now: Instant) -> Next {
        if let Some(h2) = self.h2_mut() {
            return h2.on_drained(out, now);
        }
        if matches!(self.phase, Phase::Streaming(_)) {
            return self.stream_pump(out, now);
        }
        if matches!(self.phase, Phase::Deferred(_)) {
            return self.pump(out, now);
        }
        if matches!(self.phase, Phase::Tunnel(_)) {
            return self.tunnel(out, now);
        }
        if !self.stash.is_empty() && !matches!(self.phase, Phase::Done) {
            // Pipelined requests set aside during a pause: answer the next ones now.
            let next = self.run(None, out, now, true);
            if next.is_close() || !out.is_empty() {
                return next;
            }
        }
        match self.phase {
            Phase::Done => Next::CloseAfterFlush,
            Phase::Idle => {
                // Idle time counts from when the last response left, not when it was queued.
                if out.is_empty() {
                    self.deadline = Some(now + self.shared.limits.keepalive_timeout);
                }
                if self.shutting_down {
                    return Next::CloseAfterFlush;
                }
                Next::Continue {
                    wake_at: self.deadline,
                }
            }
            _ => Next::Continue {
                wake_at: self.deadline,
            },
        }
    }

    fn on_timer(&mut self, out: &mut Outbox, now: Instant) -> Next {
        if let Some(h2) = self.h2_mut() {
            return h2.on_timer(out, now);
        }
        let Some(deadline) = self.deadline else {
            return Next::CONTINUE;
        };
        if !out.is_empty() {
            // Output is waiting on the peer: the driver's send timeout governs; on_drained
            // re-arms this timer.
            return Next::CONTINUE;
        }
        if now < deadline {
            return Next::wake_at(deadline);
        }
        match self.phase {
            // An idle keep-alive connection (or one that never sent a byte) just closes. (An
            // HTTP/2 connection's timers are its own session's.)
            Phase::Idle | Phase::Done | Phase::H2(_) => Next::Close,
            // No timer runs while a stream is sent (the send timeout does): a stale wake-up.
            Phase::Streaming(_) => Next::CONTINUE,
            Phase::Deferred(_) => self.exchange_timed_out(out, now),
            Phase::Tunnel(_) => {
                tracing::debug!(peer = %self.peer.remote, "closing a tunnel idle past --tunnel-idle-timeout");
                Next::Close
            }
            Phase::Head if !self.started => Next::Close,
            Phase::Head => {
                self.answer_error(
                    Reject {
                        status: 408,
                        detail: "The request head did not arrive in time.",
                    },
                    b"",
                    out,
                );
                Next::CloseAfterFlush
            }
            Phase::Body(_) => {
                let line = request_line(&self.head_copy);
                self.answer_error(
                    Reject {
                        status: 408,
                        detail: "The request body did not arrive in time.",
                    },
                    &line,
                    out,
                );
                Next::CloseAfterFlush
            }
        }
    }

    fn on_shutdown(&mut self, out: &mut Outbox, now: Instant) -> Next {
        if let Some(h2) = self.h2_mut() {
            return h2.on_shutdown(out, now);
        }
        self.shutting_down = true;
        match self.phase {
            // Between requests: go now (after any response still being sent).
            Phase::Idle | Phase::Done => Next::CloseAfterFlush,
            Phase::Head if !self.started => Next::CloseAfterFlush,
            // Mid-request: that response is finished with `Connection: close`.
            _ => Next::Continue {
                wake_at: self.deadline,
            },
        }
    }
}
