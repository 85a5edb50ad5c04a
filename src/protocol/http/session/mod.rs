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
//!
//! The parts, each with one job:
//! - this file: the service, one connection's state ([`HttpSession`] and the phase of its
//!   request cycle), and the [`Session`] calls a driver makes, each sent on by phase (or to
//!   the HTTP/2 session the connection became);
//! - `cycle`: the request loop over buffered input (steps 1-2, and reading a body in step 4),
//!   pipelined input held back while answering is paused, and what follows an answer;
//! - `head`: a complete head parsed within the limits and sent where it goes (steps 3-4:
//!   guard, route, handler or body first), and the answer to a refused request;
//! - `answer`: keep-alive decided, the answer written and logged (steps 5-7), or a body made
//!   while it is sent streamed a piece at a time;
//! - `relay`: proxy and CGI exchanges, and the tunnel after a 101;
//! - `write`: the response head and body on the wire.

use std::sync::Arc;
use std::time::Instant;

use super::h2::{H2Session, PREFACE};
use super::message::{BodySink, Handler};
use super::shared::{HttpOptions, Shared};
use super::wire::{Decoder, HeadScanner, Limits, Reject};
use crate::protocol::{
    LinkEvent, LinkId, Links, Next, Outbox, Peer, ReadBuf, Service, Session, Waker,
};

mod answer;
mod cycle;
mod head;
mod relay;
#[cfg(test)]
mod tests;
mod write;

use answer::Streaming;
use head::request_line;
use relay::Deferred;

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

impl HttpSession {
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
                !d.attempt.connected
                    || links.queued(d.attempt.link) >= self.shared.options.pipeline_pause
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
