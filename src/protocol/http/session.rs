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
//!    across reads ([`BodyReader`]), or collect it when the request goes to a proxy or CGI
//!    route (bounded by the same body limit);
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

use std::cell::RefCell;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::access_log::{AccessLog, Entry};
use super::gateway::{Failure, Gateway, Pending, Progress, Routed};
use super::message::{error_response, reason, Body, Handler, Part, Request, Response, Version};
use super::parse::{self, BodyReader, Head, HeadScanner, Limits, Reject};
use super::proxy::RequestBody;
use crate::protocol::{
    Dial, LinkError, LinkEvent, LinkId, Links, Next, Outbox, Peer, ReadBuf, Service, Session, Waker,
};

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
        }
    }
}

struct Shared {
    handler: Arc<dyn Handler>,
    limits: Limits,
    options: HttpOptions,
}

/// The HTTP/1.1 protocol: a handler plus the limits and options every connection shares.
#[derive(Clone)]
pub struct HttpService {
    shared: Arc<Shared>,
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
        }
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
            shared: self.shared.clone(),
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
    Body(BodyReader),
    /// Between requests on a kept-alive connection; the idle timer runs.
    Idle,
    /// A proxied or CGI answer is being relayed; later input waits in the stash.
    Deferred(Box<Deferred>),
    /// The upstream switched protocols (101): bytes go both ways between the client and the
    /// link until either side closes or the tunnel idles out.
    Tunnel(LinkId),
    /// A closing answer was queued; nothing more is read.
    Done,
}

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
    /// The chunked body of a CGI request, collected while it is read (a script needs its
    /// length first). Boxed: only those requests use it, and every idle connection would
    /// otherwise carry its 24 bytes.
    #[allow(clippy::box_collection)] // deliberately: 8 bytes per connection instead of 24
    collect: Option<Box<Vec<u8>>>,
}

/// An outbound exchange in progress, and what the connection decided about it.
struct Deferred {
    pending: Pending,
    link: LinkId,
    /// What the link was opened with, and which route and server it goes to.
    dial: Dial,
    route: usize,
    server: usize,
    /// The route's servers tried so far, a bit each.
    tried: u64,
    /// The request head as sent, kept while a retry or failover could resend it: no body byte
    /// has gone and no answer byte has come.
    resend: Option<Vec<u8>>,
    connected: bool,
    /// The link is a kept connection (one retry allowed if it fails before any answer).
    reused: bool,
    retried: bool,
    /// The request body still coming from the client.
    upload: Option<Upload>,
    /// The link ended (`None`: by its `Eof`) and `pending` has not been told yet: the input
    /// still in the link goes first.
    link_end: Option<Option<LinkError>>,
    /// The link's write side closes after the body (a script's stdin).
    finish_after_body: bool,
    /// The answer ended as it should (a script whose answer is complete may finish its work).
    answered: bool,
    /// How the body goes to the client, once the head is written.
    wire: Option<WireLen>,
    close: bool,
    keep_alive_10: bool,
    head_only: bool,
    /// The client speaks HTTP/1.1 (so a body of unknown length can be chunked).
    http11: bool,
    /// The request's Host, and the CGI local redirects followed so far (RFC 3875 §6.2.2).
    host: Option<String>,
    redirects: u8,
    /// The status sent (for the log), and body bytes sent.
    status: u16,
    bytes: u64,
    /// Request line, Referer, User-Agent (only when an access log is kept).
    log: Option<(String, Option<String>, Option<String>)>,
}

/// A request body streaming from the client into the link.
#[derive(Debug)]
struct Upload {
    reader: BodyReader,
    /// Re-chunk it (the client sent it chunked).
    chunked: bool,
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred")
            .field("wire", &self.wire)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// How a response body is delimited on the wire to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WireLen {
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked` (HTTP/1.1 clients, length unknown).
    Chunked,
    /// Neither: the body ends when the connection closes (HTTP/1.0 clients, length unknown), or
    /// there is no body to delimit (HEAD).
    Unframed,
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
    f(parse::parse_head(buf, storage, limits))
}

/// The request line of a head, for the access log (lossy, bounded).
fn request_line(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
    String::from_utf8_lossy(&line[..line.len().min(1024)]).into_owned()
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

    /// Close the connection with its deferred answer unfinished: the request still gets its
    /// access-log line (with `unanswered` as the status if its answer had not begun), and
    /// dropping the job cancels the upstream request or the script.
    fn drop_deferred(&mut self, unanswered: u16) -> Next {
        if let Phase::Deferred(d) = &mut self.phase {
            if d.wire.is_none() {
                d.status = unanswered;
            }
            if let Some(links) = self.links.as_mut() {
                links.close(d.link);
            }
        }
        self.log_deferred();
        self.phase = Phase::Done;
        self.deadline = None;
        self.stash.clear();
        Next::Close
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
                // tunnel (see `run`).
                Phase::Deferred(_) | Phase::Tunnel(_) => break,
                Phase::Idle | Phase::Head => {
                    if !self.started {
                        let blank = parse::leading_empty_lines(input.data());
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
                    parse::lower_minor_version(&mut input.data_mut()[..len]);
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
                    let fed = reader.feed_into(input.data(), &self.shared.limits, |b| {
                        if let Some(c) = collect.as_mut() {
                            c.extend_from_slice(b);
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
                        Ok(h) => match self.collect.take() {
                            // The body of a proxied or CGI request is complete: hand it over.
                            // The chunked body of a CGI request is complete: start the script.
                            Some(body) => match shared
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
        // Proxy and CGI routes: one branch when none are configured, nothing else added.
        let routed = match &self.shared.options.gateway {
            None => None,
            Some(g) => g.route(&head.request),
        };
        match BodyReader::new(head.framing) {
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
                    (Some(r), Some(g)) => {
                        !(g.is_cgi(r) && matches!(reader, BodyReader::Chunked(_)))
                    }
                    _ => false,
                };
                if let (true, Some(r)) = (streams, &routed) {
                    let r = r.clone();
                    if head.expect_continue {
                        out.push_bytes(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    let body = match &reader {
                        BodyReader::Length(n) => RequestBody::Length(*n),
                        BodyReader::Chunked(_) => RequestBody::Chunked,
                    };
                    return self.defer(&head, r, body, Some(reader), None, out, now);
                }
                if routed.is_some() {
                    self.collect = Some(Box::default());
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
        let rest = &rest[parse::leading_empty_lines(rest)..];
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
        resp: Response,
        out: &mut Outbox,
        now: Instant,
    ) -> bool {
        let req = &head.request;
        let close = self.closes_after(head, resp.close);
        let opts = &self.shared.options;
        let keep_alive_10 = !close && req.version == Version::Http10;
        let status = resp.status;
        let bytes = write_response(out, opts, resp, req.is_head(), close, keep_alive_10);
        if let Some(log) = &opts.access_log {
            log.log(&Entry {
                client: self.peer.ip_addr(),
                request_line: &[req.method, req.target, req.version.as_str()],
                status,
                bytes,
                referer: req.header("referer"),
                user_agent: req.header("user-agent"),
            });
        }
        self.next_request(close, now)
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

    /// Start the exchange for a proxied or CGI request: ask the driver for its link, queue the
    /// head (and a collected body), and wait in [`Phase::Deferred`]; a streamed body follows
    /// through [`upload`](Self::upload).
    #[allow(clippy::too_many_arguments)]
    fn defer(
        &mut self,
        head: &Head<'_>,
        routed: Routed,
        body: RequestBody,
        reader: Option<BodyReader>,
        collected: Option<&[u8]>,
        out: &mut Outbox,
        now: Instant,
    ) -> bool {
        let Some(gateway) = self.shared.options.gateway.clone() else {
            return self.respond(head, out, now);
        };
        let req = &head.request;
        match gateway.start(routed, req, &self.peer, body) {
            Err(resp) => self.complete(head, *resp, out, now),
            Ok(ex) => {
                let close = self.closes_after(head, false);
                let log = self.shared.options.access_log.as_ref().map(|_| {
                    (
                        log_line(req),
                        req.header("referer").map(str::to_string),
                        req.header("user-agent").map(str::to_string),
                    )
                });
                let links = self.links.get_or_insert_with(Box::default);
                let link = links.open(ex.dial.clone());
                links.out(link).push_bytes(&ex.head);
                if let Some(b) = collected {
                    links.out(link).push_bytes(b);
                }
                if reader.is_none() && ex.finish_after_body {
                    links.finish(link);
                }
                // Only an upstream's head can be sent again, and only before any body.
                let resend = (!ex.head.is_empty() && collected.is_none()).then_some(ex.head);
                self.phase = Phase::Deferred(Box::new(Deferred {
                    pending: ex.pending,
                    link,
                    dial: ex.dial,
                    route: ex.route,
                    server: ex.server,
                    tried: 1u64.checked_shl(ex.server as u32).unwrap_or(0),
                    resend,
                    connected: false,
                    reused: false,
                    retried: false,
                    upload: reader.map(|reader| Upload {
                        reader,
                        chunked: ex.chunked,
                    }),
                    link_end: None,
                    finish_after_body: ex.finish_after_body,
                    answered: false,
                    wire: None,
                    close,
                    keep_alive_10: !close && req.version == Version::Http10,
                    head_only: req.is_head(),
                    http11: req.version == Version::Http11,
                    host: req.host().map(str::to_string),
                    redirects: 0,
                    status: 0,
                    bytes: 0,
                    log,
                }));
                // The upstream timeout governs from here (connect, then any silence).
                self.deadline = Some(now + gateway.config().timeout);
                false
            }
        }
    }

    /// Stream what the client has sent of the body (in the stash) into the link, as far as
    /// the link takes it: reading from the client pauses meanwhile ([`Session::reading_paused`]).
    fn upload(&mut self, out: &mut Outbox, now: Instant) -> Next {
        let cont = |s: &Self| Next::Continue {
            wake_at: s.deadline,
        };
        let high = self.shared.options.pipeline_pause;
        let (Phase::Deferred(d), Some(links)) = (&mut self.phase, self.links.as_mut()) else {
            return cont(self);
        };
        let Some(up) = d.upload.as_mut() else {
            return cont(self);
        };
        if !d.connected || self.stash.is_empty() {
            return cont(self);
        }
        let mut used = 0;
        let mut refused = None;
        let mut done = false;
        while used < self.stash.len() && links.out(d.link).len() < high {
            let lout = links.out(d.link);
            let chunked = up.chunked;
            let fed = up
                .reader
                .feed_into(&self.stash[used..], &self.shared.limits, |b| {
                    if chunked {
                        lout.with_tail(|t| {
                            let _ = write!(t, "{:x}\r\n", b.len());
                        });
                        lout.push_bytes(b);
                        lout.push_bytes(b"\r\n");
                    } else {
                        lout.push_bytes(b);
                    }
                });
            match fed {
                Ok((n, end)) => {
                    used += n;
                    if end {
                        done = true;
                        break;
                    }
                    if n == 0 {
                        break;
                    }
                }
                Err(r) => {
                    refused = Some(r);
                    break;
                }
            }
        }
        if used > 0 {
            // A body byte has gone: the head can no longer be sent again elsewhere.
            d.resend = None;
            self.deadline = Some(now + self.shared.limits.body_timeout);
        }
        self.stash.drain(..used);
        if done {
            if up.chunked {
                links.out(d.link).push_bytes(b"0\r\n\r\n");
            }
            if d.finish_after_body {
                links.finish(d.link);
            }
            d.upload = None;
            if let Some(g) = &self.shared.options.gateway {
                self.deadline = Some(now + g.config().timeout);
            }
        }
        if let Some(r) = refused {
            return self.upload_refused(r, out);
        }
        cont(self)
    }

    /// The client's body broke its framing or crossed the body limit mid-way: the upstream
    /// request is abandoned, and the client gets the refusal if its answer has not begun
    /// (else the connection closes and it sees a short answer).
    fn upload_refused(&mut self, r: Reject, out: &mut Outbox) -> Next {
        let Phase::Deferred(d) = &mut self.phase else {
            return Next::Close;
        };
        if d.wire.is_some() {
            return self.drop_deferred(r.status);
        }
        if let Some(links) = self.links.as_mut() {
            links.close(d.link);
        }
        let line = d.log.as_ref().map(|l| l.0.clone()).unwrap_or_default();
        self.stash.clear();
        // The access line is the refusal's (the exchange never answered).
        d.log = None;
        self.answer_error(r, &line, out);
        Next::CloseAfterFlush
    }

    /// Something happened on a link (see [`Session::on_link`]).
    fn link_event(&mut self, id: LinkId, ev: LinkEvent, out: &mut Outbox, now: Instant) -> Next {
        let cont = Next::Continue {
            wake_at: self.deadline,
        };
        let Some(gateway) = self.shared.options.gateway.clone() else {
            return cont;
        };
        let timeout = gateway.config().timeout;
        if let Phase::Tunnel(link) = self.phase {
            if link != id {
                return cont;
            }
            return match ev {
                LinkEvent::Data | LinkEvent::Drained | LinkEvent::Connected { .. } => {
                    self.tunnel(out, now)
                }
                // The upstream ended the tunnel: what it sent goes out, then the connection.
                LinkEvent::Eof => {
                    let next = self.tunnel(out, now);
                    if let Some(links) = self.links.as_mut() {
                        if !links.input(link).is_empty() {
                            return next;
                        }
                        links.close(link);
                    }
                    self.phase = Phase::Done;
                    self.deadline = None;
                    Next::CloseAfterFlush
                }
                LinkEvent::Failed(e) => {
                    tracing::debug!("a tunnel's upstream broke: {e}");
                    self.phase = Phase::Done;
                    Next::Close
                }
            };
        }
        let (Phase::Deferred(d), Some(links)) = (&mut self.phase, self.links.as_mut()) else {
            // A link from an exchange already over: it has nothing more to say.
            if let Some(links) = self.links.as_mut() {
                links.close(id);
            }
            return cont;
        };
        if d.link != id {
            links.close(id);
            return cont;
        }
        match ev {
            LinkEvent::Connected { reused } => {
                d.connected = true;
                d.reused = reused;
                self.deadline = Some(now + timeout);
                self.upload(out, now)
            }
            LinkEvent::Data => {
                self.deadline = Some(now + timeout);
                self.pump(out, now)
            }
            LinkEvent::Drained => {
                if d.upload.is_some() {
                    self.deadline = Some(now + timeout);
                }
                self.upload(out, now)
            }
            LinkEvent::Eof | LinkEvent::Failed(_) => {
                let quiet = !d.pending.started() && links.input(id).is_empty();
                let refused = matches!(ev, LinkEvent::Failed(LinkError::Connect(_)));
                if quiet && d.resend.is_some() {
                    if refused || !d.connected {
                        // Refused: the next upstream of the route, if one is left.
                        if let Some((s, dial, label)) = gateway.failover(d.route, d.server, d.tried)
                        {
                            d.server = s;
                            d.tried |= 1u64.checked_shl(s as u32).unwrap_or(0);
                            d.pending.relabel(label);
                            return self.redial(dial, now, timeout);
                        }
                    } else if d.reused && !d.retried {
                        // A kept connection the upstream had closed meanwhile: once more, on a
                        // fresh one (nginx and Go's transport do the same).
                        d.retried = true;
                        let dial = d.dial.fresh();
                        return self.redial(dial, now, timeout);
                    }
                }
                d.link_end = Some(match ev {
                    LinkEvent::Failed(e) => Some(e),
                    _ => None,
                });
                self.pump(out, now)
            }
        }
    }

    /// Send the kept request head again on a new link.
    fn redial(&mut self, dial: Dial, now: Instant, timeout: std::time::Duration) -> Next {
        let (Phase::Deferred(d), Some(links)) = (&mut self.phase, self.links.as_mut()) else {
            return Next::CONTINUE;
        };
        links.close(d.link);
        let link = links.open(dial.clone());
        if let Some(head) = &d.resend {
            links.out(link).push_bytes(head);
        }
        d.link = link;
        d.dial = dial;
        d.connected = false;
        d.reused = false;
        self.deadline = Some(now + timeout);
        Next::Continue {
            wake_at: self.deadline,
        }
    }

    /// Move what outbound work has produced to the client, as far as the output allows.
    fn pump(&mut self, out: &mut Outbox, now: Instant) -> Next {
        let pause = self.shared.options.pipeline_pause;
        loop {
            let Phase::Deferred(d) = &mut self.phase else {
                return Next::Continue {
                    wake_at: self.deadline,
                };
            };
            if out.len() >= pause {
                // on_drained comes back here once the client has taken some; meanwhile the
                // link's input fills and the driver stops reading the upstream.
                return Next::Continue {
                    wake_at: self.deadline,
                };
            }
            match d.pending.poll() {
                Progress::Wait => {
                    // Decide more from what the link has brought, then from its end.
                    let Some(links) = self.links.as_mut() else {
                        return Next::CONTINUE;
                    };
                    let input = links.input(d.link);
                    if !input.is_empty() {
                        d.pending.feed(input.data());
                        input.clear();
                        d.resend = None;
                        continue;
                    }
                    match d.link_end.take() {
                        Some(None) => d.pending.end(),
                        Some(Some(e)) => d.pending.fail(Failure::from(e)),
                        None => {
                            return Next::Continue {
                                wake_at: self.deadline,
                            }
                        }
                    }
                }
                Progress::Head {
                    response,
                    length,
                    bodiless,
                } => {
                    if d.upload.is_some() {
                        // Answered before the whole body came (a 413 from the upstream, say):
                        // the rest of the body is not read, so the connection ends with this.
                        d.close = true;
                        d.keep_alive_10 = false;
                        self.more_may_come = true;
                    }
                    let wire = match length {
                        Some(n) => WireLen::Length(n),
                        None if d.head_only || bodiless => WireLen::Unframed,
                        None if d.http11 => WireLen::Chunked,
                        None => {
                            // An HTTP/1.0 client learns where the body ends from the close.
                            d.close = true;
                            d.keep_alive_10 = false;
                            WireLen::Unframed
                        }
                    };
                    d.status = response.status;
                    d.wire = Some(wire);
                    write_head(
                        out,
                        &self.shared.options,
                        &response,
                        wire,
                        d.close,
                        d.keep_alive_10,
                    );
                    if d.head_only || bodiless {
                        d.answered = true;
                        return self.finish_deferred(out, now);
                    }
                }
                Progress::Data(data) => {
                    d.bytes += data.len() as u64;
                    if d.wire == Some(WireLen::Chunked) {
                        out.with_tail(|b| {
                            let _ = write!(b, "{:x}\r\n", data.len());
                        });
                        out.push_shared(bytes::Bytes::from(data));
                        out.push_bytes(b"\r\n");
                    } else {
                        out.push_shared(bytes::Bytes::from(data));
                    }
                }
                Progress::LocalRedirect(path) => return self.local_redirect(path, out, now),
                Progress::Switch {
                    mut response,
                    upgrade,
                    rest,
                } => {
                    // RFC 9110 §15.2.2: the 101 names the protocol; both fields are hop-by-hop,
                    // so written here for this hop.
                    response.headers.push(("Upgrade".into(), upgrade.into()));
                    response.raw_headers =
                        Some(bytes::Bytes::from_static(b"Connection: upgrade\r\n"));
                    write_head(
                        out,
                        &self.shared.options,
                        &response,
                        WireLen::Unframed,
                        false,
                        false,
                    );
                    out.push_bytes(&rest);
                    d.status = 101;
                    d.wire = Some(WireLen::Unframed);
                    let link = d.link;
                    self.log_deferred();
                    self.phase = Phase::Tunnel(link);
                    self.more_may_come = true;
                    return self.tunnel(out, now);
                }
                Progress::End => {
                    if d.wire == Some(WireLen::Chunked) {
                        out.push_bytes(b"0\r\n\r\n");
                    }
                    d.answered = true;
                    return self.finish_deferred(out, now);
                }
                Progress::Fail(resp) => {
                    if d.upload.is_some() {
                        d.close = true;
                        d.keep_alive_10 = false;
                        self.more_may_come = true;
                    }
                    d.status = resp.status;
                    d.bytes = resp.body.len();
                    let (close, ka10, head_only) = (d.close, d.keep_alive_10, d.head_only);
                    write_response(out, &self.shared.options, resp, head_only, close, ka10);
                    if head_only {
                        d.bytes = 0;
                    }
                    return self.finish_deferred(out, now);
                }
                Progress::Abort => {
                    // Mid-body: the client must see a short answer, never a complete-looking
                    // one, so no final chunk; the close ends it.
                    d.close = true;
                    let link = d.link;
                    self.log_deferred();
                    if let Some(links) = self.links.as_mut() {
                        links.close(link);
                    }
                    self.phase = Phase::Done;
                    self.deadline = None;
                    self.stash.clear();
                    return Next::CloseAfterFlush;
                }
            }
        }
    }

    /// Write the access-log line of the deferred answer.
    fn log_deferred(&self) {
        let (Some(log), Phase::Deferred(d)) = (&self.shared.options.access_log, &self.phase) else {
            return;
        };
        let Some((line, referer, ua)) = &d.log else {
            return;
        };
        log.log(&Entry {
            client: self.peer.ip_addr(),
            request_line: &[line.as_str()],
            status: d.status,
            bytes: d.bytes,
            referer: referer.as_deref(),
            user_agent: ua.as_deref(),
        });
    }

    /// The deferred answer is complete: go on with whatever was pipelined behind it.
    fn finish_deferred(&mut self, out: &mut Outbox, now: Instant) -> Next {
        self.log_deferred();
        let close = match &self.phase {
            Phase::Deferred(d) => {
                // A script whose answer is complete may finish its work; an upstream's
                // connection is kept if the whole exchange went by the rules.
                let script = d.finish_after_body;
                let keep = d.answered && (script || (d.upload.is_none() && d.pending.reusable()));
                let (link, close) = (d.link, d.close);
                self.end_link(link, keep);
                close
            }
            _ => true,
        };
        if self.next_request(close || self.shutting_down, now) {
            let next = self.closing(self.stash.is_empty());
            self.stash.clear();
            return next;
        }
        self.after_deferred(out, now)
    }

    /// The exchange on `link` is over: `keep` releases it (for reuse, or to let a script
    /// finish), else it is closed (a script is killed).
    fn end_link(&mut self, link: LinkId, keep: bool) {
        if let Some(links) = self.links.as_mut() {
            if keep {
                links.release(link);
            } else {
                links.close(link);
            }
        }
    }

    /// Answer for `path` instead, as RFC 3875 §6.2.2 asks of a CGI local redirect: the same
    /// request (GET, or HEAD for a HEAD) for the new path, through the routes and the handler.
    fn local_redirect(&mut self, path: String, out: &mut Outbox, now: Instant) -> Next {
        /// A script redirecting to itself must end somewhere.
        const MAX_LOCAL_REDIRECTS: u8 = 5;
        let Phase::Deferred(d) = &mut self.phase else {
            return Next::CONTINUE;
        };
        if d.redirects >= MAX_LOCAL_REDIRECTS || !path.bytes().all(|b| b.is_ascii_graphic()) {
            let resp = error_response(502, "The script's local redirect could not be followed.");
            d.status = resp.status;
            d.bytes = if d.head_only { 0 } else { resp.body.len() };
            let (close, ka10, head_only) = (d.close, d.keep_alive_10, d.head_only);
            write_response(out, &self.shared.options, resp, head_only, close, ka10);
            return self.finish_deferred(out, now);
        }
        let redirects = d.redirects + 1;
        let mut head = Vec::with_capacity(64 + path.len());
        let method = if d.head_only { "HEAD" } else { "GET" };
        let minor = u8::from(d.http11);
        let _ = write!(head, "{method} {path} HTTP/1.{minor}\r\n");
        if let Some(h) = &d.host {
            let _ = write!(head, "Host: {h}\r\n");
        }
        if d.close {
            head.extend_from_slice(b"Connection: close\r\n");
        } else if d.keep_alive_10 {
            head.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        head.extend_from_slice(b"\r\n");
        // Still the same request: it is counted once.
        self.served = self.served.saturating_sub(1);
        // The script's answer is complete: it may finish its work.
        let link = d.link;
        if let Some(links) = self.links.as_mut() {
            links.release(link);
        }
        self.phase = Phase::Head;
        let shared = self.shared.clone();
        let closing = with_head(&head, &shared.limits, |h| match h {
            Ok(h) => match shared
                .options
                .gateway
                .as_ref()
                .and_then(|g| g.route(&h.request))
            {
                Some(r) => self.defer(&h, r, RequestBody::None, None, None, out, now),
                None => self.respond(&h, out, now),
            },
            Err(r) => {
                self.answer_error(r, &request_line(&head), out);
                true
            }
        });
        if let Phase::Deferred(d) = &mut self.phase {
            d.redirects = redirects;
            return Next::CONTINUE;
        }
        if closing {
            self.stash.clear();
            return Next::CloseAfterFlush;
        }
        self.after_deferred(out, now)
    }

    /// A deferred answer is complete and the connection stays: answer what waited behind it.
    fn after_deferred(&mut self, out: &mut Outbox, now: Instant) -> Next {
        self.run(None, out, now, true)
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

    /// Queue the answer to a refused request; the connection closes after it.
    fn answer_error(&mut self, r: Reject, line: &str, out: &mut Outbox) {
        tracing::debug!(peer = %self.peer.remote, status = r.status, "refused: {}", r.detail);
        let mut resp = error_response(r.status, r.detail);
        resp.close = true;
        // A refused HEAD still gets no body (RFC 9110 §9.3.2).
        let head_only = line.starts_with("HEAD ");
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

    fn reject(&mut self, r: Reject, line: &str, input: &mut ReadBuf, out: &mut Outbox) -> Next {
        self.answer_error(r, line, out);
        input.clear();
        Next::CloseAfterFlush
    }
}

impl HttpSession {
    /// Move what each side of a tunnel sent to the other, as far as the other takes it: client
    /// input (in the stash) into the link, the link's input to the client. Each side's
    /// reading pauses while the other is behind.
    fn tunnel(&mut self, out: &mut Outbox, now: Instant) -> Next {
        let Phase::Tunnel(link) = self.phase else {
            return Next::CONTINUE;
        };
        let high = self.shared.options.pipeline_pause;
        let Some(links) = self.links.as_mut() else {
            return Next::Close;
        };
        let mut moved = false;
        if !self.stash.is_empty() && links.queued(link) < high {
            links.out(link).push_bytes(&self.stash);
            self.stash.clear();
            moved = true;
        }
        let input = links.input(link);
        if !input.is_empty() && out.len() < high {
            out.push_bytes(input.data());
            input.clear();
            moved = true;
        }
        links.pause(link, out.len() >= high);
        if moved {
            if let Some(g) = &self.shared.options.gateway {
                self.deadline = Some(now + g.config().tunnel_idle);
            }
        }
        Next::Continue {
            wake_at: self.deadline,
        }
    }

    /// The exchange's deadline passed: a connection that never completed goes to the next
    /// upstream (or 504); a body the client stopped sending is a 408; an upstream or script
    /// that went silent is a 504 (or a short answer if it had begun).
    fn exchange_timed_out(&mut self, out: &mut Outbox, now: Instant) -> Next {
        let Some(gateway) = self.shared.options.gateway.clone() else {
            return Next::CONTINUE;
        };
        let (Phase::Deferred(d), Some(links)) = (&mut self.phase, self.links.as_mut()) else {
            return Next::CONTINUE;
        };
        if !d.connected && d.resend.is_some() {
            if let Some((s, dial, label)) = gateway.failover(d.route, d.server, d.tried) {
                d.server = s;
                d.tried |= 1u64.checked_shl(s as u32).unwrap_or(0);
                d.pending.relabel(label);
                return self.redial(dial, now, gateway.config().timeout);
            }
        }
        let waiting_on_client = d.connected
            && d.upload.is_some()
            && links.queued(d.link) == 0
            && d.wire.is_none()
            && !d.pending.started();
        if waiting_on_client {
            return self.upload_refused(
                Reject {
                    status: 408,
                    detail: "The request body did not arrive in time.",
                },
                out,
            );
        }
        links.close(d.link);
        d.link_end = None;
        d.pending.fail(Failure::Timeout);
        self.pump(out, now)
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
        self.run(Some(input), out, now, true)
    }

    fn on_eof(&mut self, input: &mut ReadBuf, out: &mut Outbox, now: Instant) -> Next {
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

    fn links(&mut self) -> Option<&mut Links> {
        self.links.as_deref_mut()
    }

    fn on_link(&mut self, id: LinkId, ev: LinkEvent, out: &mut Outbox, now: Instant) -> Next {
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
            // An idle keep-alive connection (or one that never sent a byte) just closes.
            Phase::Idle | Phase::Done => Next::Close,
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
                    "",
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

    fn on_shutdown(&mut self, _out: &mut Outbox, _now: Instant) -> Next {
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

/// Headers the connection owns; a handler's copies are dropped so framing is never doubled.
pub(crate) fn owned_by_session(name: &str) -> bool {
    [
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "date",
        "server",
    ]
    .iter()
    .any(|n| n.eq_ignore_ascii_case(name))
}

/// A field a handler built from outside text must not split the head (CR/LF) or be empty.
fn safe_field(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        && !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

thread_local! {
    /// The formatted `Date` for the current second (RFC 9110 §6.6.1), per thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

fn with_date<R>(f: impl FnOnce(&str) -> R) -> R {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            d.0 = secs;
            d.1 = httpdate::fmt_http_date(now);
        }
        f(&d.1)
    })
}

/// The request line as the access log writes it.
fn log_line(req: &Request<'_>) -> String {
    format!("{} {} {}", req.method, req.target, req.version.as_str())
}

/// Queue `resp` on the wire. Returns the body bytes queued (0 for HEAD and bodiless statuses).
fn write_response(
    out: &mut Outbox,
    opts: &HttpOptions,
    resp: Response,
    head_only: bool,
    close: bool,
    keep_alive_10: bool,
) -> u64 {
    let status = resp.status;
    // RFC 9110 §6.4.1: 1xx, 204 and 304 never carry content.
    let bodiless = status < 200 || status == 204 || status == 304;
    let len = resp.body.len();
    write_head(out, opts, &resp, WireLen::Length(len), close, keep_alive_10);
    if bodiless || head_only {
        return 0;
    }
    match resp.body {
        Body::Empty => {}
        Body::Bytes(bytes) => out.push_shared(bytes),
        Body::File { file, offset, len } => out.push_file(file, offset, len),
        Body::Parts(parts) => {
            for p in parts {
                match p {
                    Part::Bytes(bytes) => out.push_shared(bytes),
                    Part::File { file, offset, len } => out.push_file(file, offset, len),
                }
            }
        }
    }
    len
}

/// Queue the status line and headers of `resp`, with the framing `wire` says.
fn write_head(
    out: &mut Outbox,
    opts: &HttpOptions,
    resp: &Response,
    wire: WireLen,
    close: bool,
    keep_alive_10: bool,
) {
    let status = resp.status;
    // RFC 9110 §6.4.1: 1xx, 204 and 304 never carry content.
    let bodiless = status < 200 || status == 204 || status == 304;
    out.with_tail(|b| {
        let phrase = resp.reason.as_deref().unwrap_or(reason(status));
        let _ = write!(b, "HTTP/1.1 {status} {phrase}\r\n");
        with_date(|d| {
            b.extend_from_slice(b"Date: ");
            b.extend_from_slice(d.as_bytes());
            b.extend_from_slice(b"\r\n");
        });
        if opts.server_tokens {
            b.extend_from_slice(b"Server: tincan\r\n");
        }
        let extra = opts
            .extra_headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()));
        let from_handler = resp.headers.iter().map(|(n, v)| (n.as_ref(), v.as_ref()));
        for (n, v) in from_handler.chain(extra) {
            if owned_by_session(n) || !safe_field(n, v) {
                continue;
            }
            let _ = write!(b, "{n}: {v}\r\n");
        }
        if let Some(raw) = &resp.raw_headers {
            b.extend_from_slice(raw);
        }
        // RFC 9110 §8.6: HEAD carries the length a GET would have had; 304's is omitted.
        if !bodiless {
            match wire {
                WireLen::Length(len) => {
                    let _ = write!(b, "Content-Length: {len}\r\n");
                }
                WireLen::Chunked => b.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
                WireLen::Unframed => {}
            }
        }
        if close {
            b.extend_from_slice(b"Connection: close\r\n");
        } else if keep_alive_10 {
            b.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        b.extend_from_slice(b"\r\n");
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http::message::Request;
    use crate::protocol::PeerAddr;
    use std::time::Duration;

    /// Answers `200` with the path as the body (and `close` for `/close`).
    struct Echo;
    impl Handler for Echo {
        fn handle(&self, req: &Request<'_>, _peer: &Peer) -> Response {
            let mut r = Response::new(200)
                .header("Content-Type", "text/plain")
                .header("Content-Length", "999")
                .with_body(Body::Bytes(bytes::Bytes::from(format!(
                    "{} {}",
                    req.method, req.path
                ))));
            r.close = req.path == "/close";
            r
        }
    }

    fn peer() -> Peer {
        Peer {
            remote: PeerAddr::Tcp("127.0.0.1:5000".parse().unwrap()),
            local: PeerAddr::Tcp("127.0.0.1:80".parse().unwrap()),
        }
    }

    fn service(limits: Limits, options: HttpOptions) -> HttpService {
        HttpService::new(Arc::new(Echo), limits, options)
    }

    /// Feed `raw` in one piece; (output, next).
    fn run(svc: &HttpService, raw: &[u8]) -> (String, Next) {
        let t0 = Instant::now();
        let mut s = svc.session_at(&peer(), t0);
        let mut input = ReadBuf::from_bytes(raw);
        let mut out = Outbox::new();
        let next = s.on_input(&mut input, &mut out, t0);
        (String::from_utf8_lossy(&out.take_all()).into_owned(), next)
    }

    fn statuses(out: &str) -> Vec<&str> {
        out.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect()
    }

    #[test]
    fn pipelined_requests_in_one_read_get_responses_in_order() {
        let svc = service(Limits::default(), HttpOptions::default());
        let (out, next) = run(
            &svc,
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        assert_eq!(statuses(&out), ["200", "200", "200"]);
        let a = out.find("GET /a").unwrap();
        let c = out.find("GET /c").unwrap();
        assert!(a < c);
        assert!(!out.contains("HEAD /b"), "HEAD sent a body: {out}");
        assert_eq!(out.matches("Content-Length: 6\r\n").count(), 2);
        assert_eq!(
            out.matches("Content-Length: 7\r\n").count(),
            1,
            "HEAD keeps GET's length"
        );
        assert!(
            !out.contains("999"),
            "the handler's Content-Length must not leak"
        );
        assert!(matches!(next, Next::Continue { wake_at: Some(_) }));
    }

    #[test]
    fn every_response_carries_date_server_and_length() {
        let svc = service(Limits::default(), HttpOptions::default());
        let (out, _) = run(&svc, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\nDate: "), "{out}");
        assert!(out.contains(" GMT\r\n"));
        assert!(out.contains("Server: tincan\r\n"));
        assert!(out.ends_with("\r\n\r\nGET /"));
        let hidden = service(
            Limits::default(),
            HttpOptions {
                server_tokens: false,
                extra_headers: vec![("X-Frame-Options".into(), "DENY".into())],
                ..HttpOptions::default()
            },
        );
        let (out, _) = run(&hidden, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(!out.contains("Server:"));
        assert!(out.contains("X-Frame-Options: DENY\r\n"));
    }

    #[test]
    fn http10_closes_unless_it_asks_for_keep_alive() {
        let svc = service(Limits::default(), HttpOptions::default());
        let (out, next) = run(&svc, b"GET / HTTP/1.0\r\n\r\n");
        assert!(out.contains("Connection: close\r\n"));
        // Read whole with nothing behind it: no lingering read is needed.
        assert_eq!(next, Next::CloseAfterReply);
        let (out, next) = run(&svc, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(out.contains("Connection: keep-alive\r\n"));
        assert!(!next.is_close());
        let (out, next) = run(&svc, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(statuses(&out), ["200"]);
        // A request pipelined behind the last one: the client may still be sending; linger.
        assert_eq!(next, Next::CloseAfterFlush);
    }

    #[test]
    fn keep_alive_off_closes_every_connection() {
        let svc = service(
            Limits::default(),
            HttpOptions {
                keep_alive: false,
                ..HttpOptions::default()
            },
        );
        let (out, next) = run(&svc, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(out.contains("Connection: close\r\n"));
        assert_eq!(next, Next::CloseAfterReply);
    }

    #[test]
    fn keep_alive_off_still_answers_what_was_pipelined_and_closes_after_the_last() {
        let svc = service(
            Limits::default(),
            HttpOptions {
                keep_alive: false,
                ..HttpOptions::default()
            },
        );
        let get = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        let post = b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\r\n";
        let (out, next) = run(&svc, &[&get[..], post, get].concat());
        assert_eq!(statuses(&out), ["200", "200", "200"]);
        assert_eq!(out.matches("Connection: close\r\n").count(), 1, "{out}");
        assert!(
            out.find("Connection: close").unwrap() > out.find("POST /b").unwrap(),
            "only the last answer closes: {out}"
        );
        assert_eq!(next, Next::CloseAfterReply);
        // A next request still arriving is not waited for: the answer before it closes.
        let (out, next) = run(&svc, &[&get[..], b"GET /b HTTP/1.1\r\nHo"].concat());
        assert_eq!(statuses(&out), ["200"]);
        assert!(out.contains("Connection: close\r\n"));
        assert_eq!(next, Next::CloseAfterFlush);
    }

    #[test]
    fn the_last_allowed_request_gets_connection_close() {
        let svc = service(
            Limits {
                max_requests_per_connection: 2,
                ..Limits::default()
            },
            HttpOptions::default(),
        );
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3);
        let (out, next) = run(&svc, &req);
        assert_eq!(statuses(&out), ["200", "200"]);
        assert_eq!(out.matches("Connection: close").count(), 1);
        assert_eq!(next, Next::CloseAfterFlush);
    }

    #[test]
    fn bodies_are_discarded_across_reads_and_the_connection_stays_usable() {
        let svc = service(Limits::default(), HttpOptions::default());
        let t0 = Instant::now();
        let mut s = svc.session_at(&peer(), t0);
        let mut out = Outbox::new();
        let mut input =
            ReadBuf::from_bytes(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234");
        s.on_input(&mut input, &mut out, t0);
        assert!(out.is_empty(), "no answer before the body ends");
        input.extend(
            b"56789POST /q HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        );
        s.on_input(&mut input, &mut out, t0);
        input.extend(b"0\r\n\r\nGET /r HTTP/1.1\r\nHost: x\r\n\r\n");
        let next = s.on_input(&mut input, &mut out, t0);
        let text = String::from_utf8(out.take_all()).unwrap();
        assert_eq!(statuses(&text), ["200", "200", "200"]);
        assert!(text.contains("POST /p") && text.contains("POST /q") && text.contains("GET /r"));
        assert!(!next.is_close());
        assert!(input.is_empty());
    }

    #[test]
    fn expect_100_continue_without_a_body_reader_gets_its_final_answer_at_once() {
        // No proxy or CGI route reads this body, so the answer is known without it: no 100
        // (RFC 9110 §10.1.1), the answer, and a lingering close (the body may still come).
        let svc = service(Limits::default(), HttpOptions::default());
        let t0 = Instant::now();
        let mut s = svc.session_at(&peer(), t0);
        let mut out = Outbox::new();
        let mut input = ReadBuf::from_bytes(
            b"PUT /u HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
        );
        let next = s.on_input(&mut input, &mut out, t0);
        let text = String::from_utf8(out.take_all()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(!text.contains("100 Continue"));
        assert_eq!(next, Next::CloseAfterFlush);
        // Without the expectation the body is read and discarded, then answered.
        let (text, next) = run(
            &svc,
            b"PUT /u HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        );
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(!next.is_close());
        let (out, next) = run(
            &svc,
            b"PUT /u HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\nExpect: 100-continue\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
        assert!(!out.contains("100 Continue"));
        assert_eq!(next, Next::CloseAfterFlush);
    }

    #[test]
    fn smuggling_attempts_get_400_and_close() {
        let svc = service(Limits::default(), HttpOptions::default());
        for raw in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let (out, next) = run(&svc, raw);
            assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
            assert!(out.contains("Connection: close\r\n"));
            assert!(out.contains("text/html"));
            assert_eq!(statuses(&out).len(), 1);
            assert_eq!(next, Next::CloseAfterFlush);
        }
    }

    #[test]
    fn a_chunked_body_over_the_limit_gets_413() {
        let svc = service(
            Limits {
                max_body: 4,
                ..Limits::default()
            },
            HttpOptions::default(),
        );
        let (out, next) = run(
            &svc,
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n1\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
        assert_eq!(next, Next::CloseAfterFlush);
    }

    #[test]
    fn timers_answer_408_for_a_slow_head_and_close_idle_connections_silently() {
        let limits = Limits {
            head_timeout: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(7),
            body_timeout: Duration::from_secs(3),
            ..Limits::default()
        };
        let svc = service(limits, HttpOptions::default());
        let t0 = Instant::now();
        let mut out = Outbox::new();

        // A partial head: 408 once the head timer (from the connection's start) expires.
        let mut s = svc.session_at(&peer(), t0);
        let mut input = ReadBuf::from_bytes(b"GET / HT");
        let next = s.on_input(&mut input, &mut out, t0 + Duration::from_secs(1));
        assert_eq!(next, Next::wake_at(t0 + Duration::from_secs(5)));
        assert_eq!(
            s.on_timer(&mut out, t0 + Duration::from_secs(4)),
            Next::wake_at(t0 + Duration::from_secs(5))
        );
        assert_eq!(
            s.on_timer(&mut out, t0 + Duration::from_secs(5)),
            Next::CloseAfterFlush
        );
        assert!(String::from_utf8(out.take_all())
            .unwrap()
            .starts_with("HTTP/1.1 408 "));

        // Idle after a response: silent close after the keep-alive timeout.
        let mut s = svc.session_at(&peer(), t0);
        let mut input = ReadBuf::from_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        s.on_input(&mut input, &mut out, t0);
        out.take_all();
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(
            s.on_drained(&mut out, t1),
            Next::wake_at(t1 + Duration::from_secs(7))
        );
        assert_eq!(
            s.on_timer(&mut out, t1 + Duration::from_secs(7)),
            Next::Close
        );
        assert!(out.is_empty());

        // A stalled body: 408.
        let mut s = svc.session_at(&peer(), t0);
        let mut input =
            ReadBuf::from_bytes(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nab");
        let next = s.on_input(&mut input, &mut out, t0);
        assert_eq!(next, Next::wake_at(t0 + Duration::from_secs(3)));
        assert_eq!(
            s.on_timer(&mut out, t0 + Duration::from_secs(3)),
            Next::CloseAfterFlush
        );
        assert!(String::from_utf8(out.take_all())
            .unwrap()
            .starts_with("HTTP/1.1 408 "));

        // Nothing sent at all: a silent close.
        let mut s = svc.session_at(&peer(), t0);
        assert_eq!(
            s.on_timer(&mut out, t0 + Duration::from_secs(5)),
            Next::Close
        );
    }

    #[test]
    fn shutdown_closes_idle_connections_and_finishes_a_request_in_flight() {
        let svc = service(Limits::default(), HttpOptions::default());
        let t0 = Instant::now();
        let mut out = Outbox::new();
        let mut s = svc.session_at(&peer(), t0);
        assert!(s.on_shutdown(&mut out, t0).is_close());

        let mut s = svc.session_at(&peer(), t0);
        let mut input = ReadBuf::from_bytes(b"GET / HTTP/1.1\r\nHo");
        s.on_input(&mut input, &mut out, t0);
        assert!(!s.on_shutdown(&mut out, t0).is_close());
        input.extend(b"st: x\r\n\r\n");
        assert_eq!(s.on_input(&mut input, &mut out, t0), Next::CloseAfterReply);
        let text = String::from_utf8(out.take_all()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 ") && text.contains("Connection: close\r\n"));
    }

    #[test]
    fn requests_before_a_half_close_are_answered() {
        let svc = service(Limits::default(), HttpOptions::default());
        let t0 = Instant::now();
        let mut s = svc.session_at(&peer(), t0);
        let mut out = Outbox::new();
        let mut input = ReadBuf::from_bytes(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c",
        );
        let next = s.on_eof(&mut input, &mut out, t0);
        assert_eq!(next, Next::CloseAfterFlush);
        assert_eq!(
            statuses(&String::from_utf8(out.take_all()).unwrap()),
            ["200", "200"]
        );
    }

    #[test]
    fn a_pipelining_flood_pauses_while_output_is_queued() {
        let svc = service(
            Limits::default(),
            HttpOptions {
                pipeline_pause: 300,
                ..HttpOptions::default()
            },
        );
        let t0 = Instant::now();
        let mut s = svc.session_at(&peer(), t0);
        let mut out = Outbox::new();
        let mut input = ReadBuf::from_bytes(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(10));
        s.on_input(&mut input, &mut out, t0);
        let mut text = String::from_utf8(out.take_all()).unwrap();
        let first = statuses(&text).len();
        assert!((1..10).contains(&first), "answered {first}");
        // The rest are answered as the output drains, without more input.
        let mut drains = 0;
        loop {
            s.on_drained(&mut out, t0);
            let more = String::from_utf8(out.take_all()).unwrap();
            if more.is_empty() {
                break;
            }
            text += &more;
            drains += 1;
        }
        assert!(drains > 0);
        assert_eq!(statuses(&text).len(), 10);
        // Input arriving while requests are set aside is answered after them, in order.
        let mut input = ReadBuf::from_bytes(&b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n".repeat(10));
        s.on_input(&mut input, &mut out, t0);
        let mut text = String::from_utf8(out.take_all()).unwrap();
        input.extend(b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n");
        s.on_input(&mut input, &mut out, t0);
        text += &String::from_utf8(out.take_all()).unwrap();
        loop {
            s.on_drained(&mut out, t0);
            let more = String::from_utf8(out.take_all()).unwrap();
            if more.is_empty() {
                break;
            }
            text += &more;
        }
        assert_eq!(statuses(&text).len(), 11);
        assert!(text.ends_with("GET /last"), "order kept");
    }

    #[test]
    fn bodiless_statuses_send_no_length_and_no_body() {
        struct NotModified;
        impl Handler for NotModified {
            fn handle(&self, _: &Request<'_>, _: &Peer) -> Response {
                Response::new(304).with_body(Body::Bytes(bytes::Bytes::from_static(b"oops")))
            }
        }
        let svc = HttpService::new(
            Arc::new(NotModified),
            Limits::default(),
            HttpOptions::default(),
        );
        let (out, _) = run(&svc, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 304 Not Modified\r\n"));
        assert!(!out.contains("Content-Length") && !out.contains("oops"));
    }

    /// xorshift64*: a deterministic stream for the mutation test.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Split a session's output into responses and check each is well formed: a status line,
    /// CRLF header lines, and exactly Content-Length body bytes.
    fn check_wire(out: &[u8]) -> usize {
        let mut rest = out;
        let mut n = 0;
        while !rest.is_empty() {
            let end = rest
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("a complete head");
            let head = std::str::from_utf8(&rest[..end]).expect("an ASCII head");
            assert!(head.starts_with("HTTP/1.1 "), "{head}");
            let status: u16 = head[9..12].parse().unwrap();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |v| v.parse::<usize>().unwrap());
            assert!(status == 100 || head.contains("Content-Length: "), "{head}");
            let after = &rest[end + 4..];
            // A HEAD answer has a length and no body: the next thing is a response or nothing.
            let head_answer = after.is_empty() || after.starts_with(b"HTTP/1.1 ");
            let body = if head_answer { 0 } else { len };
            assert!(after.len() >= body, "{head}: body cut short");
            rest = &after[body..];
            n += 1;
        }
        n
    }

    #[test]
    fn mutated_and_split_input_never_panics_and_never_garbles_the_wire() {
        let seeds: &[&[u8]] = &[
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcdeGET / HTTP/1.0\r\n\r\n",
            b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\nT: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
        ];
        let limits = Limits {
            max_request_line: 64,
            max_header: 64,
            max_head: 256,
            max_headers: 6,
            max_body: 64,
            ..Limits::default()
        };
        let svc = service(limits, HttpOptions::default());
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let alphabet = b"\r\n :;,0123456789abcdefGETHOSTPhttp/1.\x00\xff\t";
        let (mut answers, mut refusals) = (0, 0);
        for _ in 0..3000 {
            let mut input = seeds[rng.below(seeds.len())].to_vec();
            for _ in 0..rng.below(4) {
                let at = rng.below(input.len() + 1);
                let b = alphabet[rng.below(alphabet.len())];
                match rng.below(3) {
                    0 if at < input.len() => input[at] = b,
                    1 if at < input.len() => {
                        input.remove(at);
                    }
                    _ => input.insert(at, b),
                }
            }
            let t0 = Instant::now();
            let mut s = svc.session_at(&peer(), t0);
            let mut out = Outbox::new();
            let mut buf = ReadBuf::new();
            let mut pos = 0;
            let mut next = Next::CONTINUE;
            while pos < input.len() && !next.is_close() {
                let n = 1 + rng.below(input.len() - pos);
                buf.extend(&input[pos..pos + n]);
                pos += n;
                next = s.on_input(&mut buf, &mut out, t0);
            }
            if !next.is_close() {
                next = s.on_eof(&mut buf, &mut out, t0);
            }
            assert!(next.is_close());
            let wire = out.take_all();
            answers += check_wire(&wire);
            refusals += usize::from(wire.windows(11).any(|w| w.starts_with(b"HTTP/1.1 4")));
        }
        // The mutations must exercise both paths, or this test proves nothing.
        assert!(
            answers > 3000 && refusals > 300,
            "{answers} answers, {refusals} refusals"
        );
    }

    #[test]
    fn a_refused_head_request_gets_no_body() {
        let svc = service(Limits::default(), HttpOptions::default());
        let (out, _) = run(
            &svc,
            b"HEAD / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
        assert!(out.ends_with("\r\n\r\n"), "{out}");
    }

    #[test]
    fn unknown_methods_get_501_and_bad_versions_505() {
        let svc = service(Limits::default(), HttpOptions::default());
        assert!(run(&svc, b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n")
            .0
            .starts_with("HTTP/1.1 501 "));
        assert!(run(&svc, b"GET / HTTP/3.0\r\nHost: x\r\n\r\n")
            .0
            .starts_with("HTTP/1.1 505 "));
        assert!(run(&svc, b"GET / HTTP/1.1\r\n\r\n")
            .0
            .starts_with("HTTP/1.1 400 "));
    }

    #[test]
    fn a_higher_minor_version_is_answered_as_http_1_1() {
        // RFC 9110 §2.5: served, and kept alive as 1.1 is.
        let svc = service(Limits::default(), HttpOptions::default());
        let (out, next) = run(
            &svc,
            b"GET /v HTTP/1.2\r\nHost: x\r\n\r\nGET /w HTTP/1.9\r\nHost: x\r\n\r\n",
        );
        assert_eq!(statuses(&out), ["200", "200"], "{out}");
        assert!(out.contains("GET /v") && out.contains("GET /w"), "{out}");
        assert!(!out.contains("Connection: close"), "{out}");
        assert!(!next.is_close());
    }

    #[test]
    fn a_connect_is_answered_and_whatever_follows_it_is_never_read_as_a_request() {
        // RFC 9110 §9.3.6: a CONNECT has no content; the bytes after its head are a tunnel's.
        let svc = service(Limits::default(), HttpOptions::default());
        let (out, next) = run(
            &svc,
            b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\nContent-Length: 3\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        assert_eq!(statuses(&out).len(), 1, "{out}");
        assert!(out.contains("Connection: close\r\n"), "{out}");
        assert!(!out.contains("/smuggled"), "{out}");
        assert_eq!(next, Next::CloseAfterFlush);
    }
}
