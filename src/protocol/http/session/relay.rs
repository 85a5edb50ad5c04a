//! Relaying an exchange with an upstream or a script: the request's link is opened and its
//! head sent ([`HttpSession::defer`]), the body streamed into it ([`HttpSession::upload`]),
//! the answer parsed and written as it comes ([`HttpSession::pump`]), a kept connection that
//! failed retried or a refusing upstream failed over ([`HttpSession::link_event`]), and an
//! upgraded connection tunnelled ([`HttpSession::tunnel`]).

use std::time::Instant;

use super::head::{request_line, with_head};
use super::write::{log_line, write_head, write_response};
use super::{HttpSession, Phase};
use crate::protocol::http::access_log::Entry;
use crate::protocol::http::gateway::{Attempt, Progress, Routed};
use crate::protocol::http::message::{error_response, Text, Version};
use crate::protocol::http::proxy::RequestBody;
use crate::protocol::http::wire::{self, Decoder, Encoder, Head, Reject};
use crate::protocol::{LinkEvent, LinkId, Next, Outbox};

/// An outbound exchange in progress, and what the connection decided about it.
pub(super) struct Deferred {
    /// The link, and what a retry or failover needs.
    pub(super) attempt: Attempt,
    /// The request body still coming from the client.
    pub(super) upload: Option<Upload>,
    /// The link's write side closes after the body (a script's stdin).
    pub(super) finish_after_body: bool,
    /// The answer ended as it should (a script whose answer is complete may finish its work).
    pub(super) answered: bool,
    /// How the body goes to the client, once the head is written.
    pub(super) wire: Option<Encoder>,
    pub(super) close: bool,
    pub(super) keep_alive_10: bool,
    pub(super) head_only: bool,
    /// The client speaks HTTP/1.1 (so a body of unknown length can be chunked).
    pub(super) http11: bool,
    /// The request's Host, and the CGI local redirects followed so far (RFC 3875 §6.2.2).
    pub(super) host: Option<String>,
    pub(super) redirects: u8,
    /// The status sent (for the log), and body bytes sent.
    pub(super) status: u16,
    pub(super) bytes: u64,
    /// Request line, Referer, User-Agent (only when an access log is kept).
    pub(super) log: Option<crate::protocol::http::shared::LogNote>,
    /// Fields the guard adds to the answer (CORS), decided from the request.
    pub(super) guard_headers: Vec<(Text, Text)>,
}

/// A request body streaming from the client into the link.
#[derive(Debug)]
pub(super) struct Upload {
    pub(super) reader: Decoder,
    /// How it goes to the link: re-chunked when the client chunked it, else as it is (the
    /// link's head announced its length).
    pub(super) wire: Encoder,
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred")
            .field("wire", &self.wire)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl HttpSession {
    /// Close the connection with its deferred answer unfinished: the request still gets its
    /// access-log line (with `unanswered` as the status if its answer had not begun), and
    /// dropping the job cancels the upstream request or the script.
    pub(super) fn drop_deferred(&mut self, unanswered: u16) -> Next {
        if let Phase::Deferred(d) = &mut self.phase {
            if d.wire.is_none() {
                d.status = unanswered;
            }
            if let Some(links) = self.links.as_mut() {
                links.close(d.attempt.link);
            }
        }
        self.log_deferred();
        self.phase = Phase::Done;
        self.deadline = None;
        self.stash.clear();
        Next::Close
    }

    /// Start the exchange for a proxied or CGI request: ask the driver for its link, queue the
    /// head (and a collected body), and wait in [`Phase::Deferred`]; a streamed body follows
    /// through [`upload`](Self::upload).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn defer(
        &mut self,
        head: &Head<'_>,
        routed: Routed,
        body: RequestBody,
        reader: Option<Decoder>,
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
                let (log, guard_headers) = self.shared.relay_notes(req, || log_line(req));
                let links = self.links.get_or_insert_with(Box::default);
                let (chunked, script) = (ex.chunked, ex.finish_after_body);
                let host = script.then(|| req.host().map(str::to_string)).flatten();
                let finish = reader.is_none() && script;
                // Only an upstream's head can be sent again, and only before any body.
                let attempt = Attempt::open(links, ex, collected, finish, collected.is_none());
                self.phase = Phase::Deferred(Box::new(Deferred {
                    attempt,
                    upload: reader.map(|reader| Upload {
                        reader,
                        wire: if chunked {
                            Encoder::Chunked
                        } else {
                            Encoder::Unframed
                        },
                    }),
                    finish_after_body: script,
                    answered: false,
                    wire: None,
                    close,
                    keep_alive_10: !close && req.version == Version::Http10,
                    head_only: req.is_head(),
                    http11: req.version == Version::Http11,
                    // Only a script's answer can be a local redirect (RFC 3875 §6.2.2), asked again
                    // with this Host: a proxied request needs no copy.
                    host,
                    redirects: 0,
                    status: 0,
                    bytes: 0,
                    log,
                    guard_headers,
                }));
                // The upstream timeout governs from here (connect, then any silence).
                self.deadline = Some(now + gateway.config().timeout);
                false
            }
        }
    }

    /// Stream what the client has sent of the body (in the stash) into the link, as far as
    /// the link takes it: reading from the client pauses meanwhile ([`Session::reading_paused`]).
    pub(super) fn upload(&mut self, out: &mut Outbox, now: Instant) -> Next {
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
        if !d.attempt.connected || self.stash.is_empty() {
            return cont(self);
        }
        let mut used = 0;
        let mut refused = None;
        let mut done = false;
        while used < self.stash.len() && links.out(d.attempt.link).len() < high {
            let lout = links.out(d.attempt.link);
            let wire = up.wire;
            let fed = up
                .reader
                .decode(&self.stash[used..], &self.shared.limits, |b| {
                    wire.encode(lout, b)
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
            d.attempt.resend = None;
            self.deadline = Some(now + self.shared.limits.body_timeout);
        }
        self.stash.drain(..used);
        if done {
            up.wire.finish(links.out(d.attempt.link));
            if d.finish_after_body {
                links.finish(d.attempt.link);
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
    pub(super) fn upload_refused(&mut self, r: Reject, out: &mut Outbox) -> Next {
        let Phase::Deferred(d) = &mut self.phase else {
            return Next::Close;
        };
        if d.wire.is_some() {
            return self.drop_deferred(r.status);
        }
        if let Some(links) = self.links.as_mut() {
            links.close(d.attempt.link);
        }
        let line = d.log.as_ref().map(|l| l.0.clone()).unwrap_or_default();
        self.stash.clear();
        // The access line is the refusal's (the exchange never answered).
        d.log = None;
        self.answer_error(r, line.as_bytes(), out);
        Next::CloseAfterFlush
    }

    /// Something happened on a link (see [`Session::on_link`]).
    pub(super) fn link_event(
        &mut self,
        id: LinkId,
        ev: LinkEvent,
        out: &mut Outbox,
        now: Instant,
    ) -> Next {
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
        if d.attempt.link != id {
            links.close(id);
            return cont;
        }
        match ev {
            LinkEvent::Connected { reused } => {
                d.attempt.connected(reused);
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
                if d.attempt.ended(&gateway, links, ev) {
                    self.deadline = Some(now + timeout);
                    return Next::Continue {
                        wake_at: self.deadline,
                    };
                }
                self.pump(out, now)
            }
        }
    }

    /// Move what outbound work has produced to the client, as far as the output allows.
    pub(super) fn pump(&mut self, out: &mut Outbox, now: Instant) -> Next {
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
            match d.attempt.pending.poll() {
                Progress::Wait => {
                    // Decide more from what the link has brought, then from its end.
                    let Some(links) = self.links.as_mut() else {
                        return Next::CONTINUE;
                    };
                    if !d.attempt.next_input(links) {
                        return Next::Continue {
                            wake_at: self.deadline,
                        };
                    }
                }
                Progress::Head {
                    mut response,
                    length,
                    bodiless,
                } => {
                    response.headers.append(&mut d.guard_headers);
                    if d.upload.is_some() {
                        // Answered before the whole body came (a 413 from the upstream, say):
                        // the rest of the body is not read, so the connection ends with this.
                        d.close = true;
                        d.keep_alive_10 = false;
                        self.more_may_come = true;
                    }
                    let wire = match length {
                        Some(n) => Encoder::Length(n),
                        None if d.head_only || bodiless => Encoder::Unframed,
                        None if d.http11 => Encoder::Chunked,
                        None => {
                            // An HTTP/1.0 client learns where the body ends from the close.
                            d.close = true;
                            d.keep_alive_10 = false;
                            Encoder::Unframed
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
                    let wire = d.wire.unwrap_or(Encoder::Unframed);
                    if data.len() <= 4096 {
                        // Copied into the outbox's tail beside the head (as push_shared would,
                        // after a Bytes of its own).
                        wire.encode(out, &data);
                    } else {
                        wire.encode_shared(out, bytes::Bytes::from(data));
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
                    let mut raw = response
                        .raw_headers
                        .take()
                        .map(Vec::from)
                        .unwrap_or_default();
                    raw.extend_from_slice(b"Connection: upgrade\r\n");
                    response.raw_headers = Some(bytes::Bytes::from(raw));
                    write_head(
                        out,
                        &self.shared.options,
                        &response,
                        Encoder::Unframed,
                        false,
                        false,
                    );
                    out.push_bytes(&rest);
                    d.status = 101;
                    d.wire = Some(Encoder::Unframed);
                    let link = d.attempt.link;
                    self.log_deferred();
                    self.phase = Phase::Tunnel(link);
                    self.more_may_come = true;
                    return self.tunnel(out, now);
                }
                Progress::End => {
                    if let Some(wire) = d.wire {
                        wire.finish(out);
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
                    let link = d.attempt.link;
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
    pub(super) fn log_deferred(&self) {
        let (Some(log), Phase::Deferred(d)) = (&self.shared.options.access_log, &self.phase) else {
            return;
        };
        let Some((line, referer, ua)) = &d.log else {
            return;
        };
        log.log(&Entry {
            client: self.peer.ip_addr(),
            request_line: &[line.as_bytes()],
            status: d.status,
            bytes: d.bytes,
            referer: referer.as_deref(),
            user_agent: ua.as_deref(),
        });
    }

    /// The deferred answer is complete: go on with whatever was pipelined behind it.
    pub(super) fn finish_deferred(&mut self, out: &mut Outbox, now: Instant) -> Next {
        self.log_deferred();
        let close = match &self.phase {
            Phase::Deferred(d) => {
                // A script whose answer is complete may finish its work; an upstream's
                // connection is kept if the whole exchange went by the rules.
                let script = d.finish_after_body;
                let keep =
                    d.answered && (script || (d.upload.is_none() && d.attempt.pending.reusable()));
                let (link, close) = (d.attempt.link, d.close);
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
    pub(super) fn end_link(&mut self, link: LinkId, keep: bool) {
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
    pub(super) fn local_redirect(&mut self, path: String, out: &mut Outbox, now: Instant) -> Next {
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
        wire::write::request_line(&mut head, method, &path, None, u8::from(d.http11));
        if let Some(h) = &d.host {
            wire::write::field(&mut head, "Host", h.as_bytes());
        }
        if d.close {
            wire::write::field(&mut head, "Connection", b"close");
        } else if d.keep_alive_10 {
            wire::write::field(&mut head, "Connection", b"keep-alive");
        }
        wire::write::end(&mut head);
        // Still the same request: it is counted once.
        self.served = self.served.saturating_sub(1);
        // The script's answer is complete: it may finish its work.
        let link = d.attempt.link;
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
    pub(super) fn after_deferred(&mut self, out: &mut Outbox, now: Instant) -> Next {
        self.run(None, out, now, true)
    }

    /// Move what each side of a tunnel sent to the other, as far as the other takes it: client
    /// input (in the stash) into the link, the link's input to the client. Each side's
    /// reading pauses while the other is behind.
    pub(super) fn tunnel(&mut self, out: &mut Outbox, now: Instant) -> Next {
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
    pub(super) fn exchange_timed_out(&mut self, out: &mut Outbox, now: Instant) -> Next {
        let Some(gateway) = self.shared.options.gateway.clone() else {
            return Next::CONTINUE;
        };
        let (Phase::Deferred(d), Some(links)) = (&mut self.phase, self.links.as_mut()) else {
            return Next::CONTINUE;
        };
        let timeout = gateway.config().timeout;
        if d.attempt.timed_out_unconnected(&gateway, links) {
            self.deadline = Some(now + timeout);
            return Next::Continue {
                wake_at: self.deadline,
            };
        }
        let waiting_on_client = d.attempt.connected
            && d.upload.is_some()
            && links.queued(d.attempt.link) == 0
            && d.wire.is_none()
            && !d.attempt.pending.started();
        if waiting_on_client {
            return self.upload_refused(
                Reject {
                    status: 408,
                    detail: "The request body did not arrive in time.",
                },
                out,
            );
        }
        d.attempt.close_timed_out(links);
        self.pump(out, now)
    }
}
