//! Proxy and CGI routes over HTTP/2: a routed stream's request goes to its HTTP/1.1 upstream
//! or script through the same [`Gateway`](crate::protocol::http::gateway::Gateway) exchange
//! (a [`Pending`] and a driver-owned link) the HTTP/1 session uses, one link per stream, and
//! the answer comes back on the stream as HEADERS and DATA within the client's windows.
//!
//! - A request body with a declared `content-length` (at most `--max-body`) streams: the
//!   head goes at once, and each DATA frame's bytes follow it into the link once it is
//!   connected, the stream's window given back only as the link takes them ([`Upload`](super::Upload)). A
//!   body without one is collected (bounded by `--max-body`) and sent with its length once
//!   END_STREAM came, so a script sees `CONTENT_LENGTH` and an upstream a `Content-Length`.
//! - The answer's head becomes HEADERS; connection-specific fields (`Connection`,
//!   `Transfer-Encoding`, `Keep-Alive`, ...) are dropped (RFC 9113 §8.2.2). Its body is queued
//!   on the stream no further than the pause mark ahead of the client's windows: past it the
//!   link's input is left to fill, and the driver stops reading the upstream.
//! - A kept upstream connection that fails before any answer is retried once on a fresh one,
//!   and a refusing upstream fails over to the route's next, as over HTTP/1.1. A failure
//!   before the head is answered (502, 504); after it, the stream is reset (INTERNAL_ERROR),
//!   so the client sees a cut answer, never a complete-looking one.
//! - A client's RST_STREAM, or the connection's end, closes the stream's link (an upstream
//!   request is abandoned, a script is killed).

use std::collections::VecDeque;
use std::time::Instant;

use super::frame::{self, flag, kind, ErrorCode};
use super::{H2Session, Head};
use crate::protocol::http::access_log::Entry;
use crate::protocol::http::gateway::{Attempt, Progress, Routed};
use crate::protocol::http::message::{error_response, Part, Request, Text, Version};
use crate::protocol::http::proxy::RequestBody;
use crate::protocol::{LinkEvent, LinkId, Outbox};

/// A routed request's body, as [`H2Session::start_relay`] gets it.
pub(super) enum RelayBody {
    /// All of it (collected, or none).
    Whole(Vec<u8>),
    /// This many bytes, to come in DATA frames ([`Upload`](super::Upload)).
    Streaming(u64),
}

/// A CGI script redirecting to itself must end somewhere (RFC 3875 §6.2.2).
const MAX_LOCAL_REDIRECTS: u8 = 5;

/// One stream's exchange with an upstream or a script.
#[derive(Debug)]
pub(super) struct Relay {
    attempt: Attempt,
    /// A script: its answer complete, it may finish its work.
    script: bool,
    head_only: bool,
    /// The answer's HEADERS went out.
    headed: bool,
    /// For a CGI local redirect: the request's Host and the redirects followed.
    host: Option<String>,
    redirects: u8,
    /// The link's silence is a 504 after this.
    pub(super) deadline: Instant,
    status: u16,
    bytes: u64,
    /// Request line, Referer, User-Agent (only when an access log is kept).
    log: Option<crate::protocol::http::shared::LogNote>,
    guard_headers: Vec<(Text, Text)>,
}

impl H2Session {
    /// Start the exchange for a routed request on stream `id`; an answer the gateway gives at
    /// once (no such script) goes out as any other.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_relay(
        &mut self,
        id: u32,
        req: &Request<'_>,
        routed: Routed,
        body: RelayBody,
        redirects: u8,
        out: &mut Outbox,
        now: Instant,
    ) {
        let Some(gateway) = self.shared.options.gateway.clone() else {
            return;
        };
        let (body, len, whole) = match body {
            RelayBody::Whole(b) => {
                let n = b.len() as u64;
                (b, n, true)
            }
            RelayBody::Streaming(n) => (Vec::new(), n, false),
        };
        // A body is announced by its length (RFC 9112 §6.2): what the client framed in DATA
        // frames is one piece here.
        let framing = if len > 0 || matches!(req.method, "POST" | "PUT" | "PATCH") {
            RequestBody::Length(len)
        } else {
            RequestBody::None
        };
        let ex = match gateway.start(routed, req, &self.peer, framing) {
            Ok(ex) => ex,
            Err(resp) => {
                let status = resp.status;
                let bytes = self.send_response(id, *resp, req.is_head(), out);
                self.log_request(req, status, bytes);
                return;
            }
        };
        let (log, guard_headers) = self.shared.relay_notes(req, || {
            format!("{} {} {}", req.method, req.target, Version::Http2.as_str())
        });
        let links = self.links.get_or_insert_with(Box::default);
        let script = ex.finish_after_body;
        let host = script.then(|| req.host().map(str::to_string)).flatten();
        // A script's stdin closes after its body: now if it is all here, else when the last
        // of it has gone ([`relay_upload`](Self::relay_upload)).
        let attempt = Attempt::open(links, ex, Some(&body), script && whole, true);
        let link = attempt.link;
        let relay = Relay {
            attempt,
            script,
            head_only: req.is_head(),
            headed: false,
            // Only a script's answer can be a local redirect (RFC 3875 §6.2.2), asked again
            // with this Host: a proxied request needs no copy.
            host,
            redirects,
            deadline: now + gateway.config().timeout,
            status: 0,
            bytes: 0,
            log,
            guard_headers,
        };
        if let Some(s) = self.streams.get_mut(&id) {
            s.relay = Some(Box::new(relay));
            s.body = Some(VecDeque::new());
            s.open = true;
        } else if let Some(links) = self.links.as_mut() {
            links.close(link);
        }
    }

    /// The stream whose relay uses `link`.
    fn relay_stream(&self, link: LinkId) -> Option<u32> {
        self.streams
            .iter()
            .find(|(_, s)| s.relay.as_ref().is_some_and(|r| r.attempt.link == link))
            .map(|(id, _)| *id)
    }

    /// Something happened on a link (see [`Session::on_link`](crate::protocol::Session)).
    pub(crate) fn on_link_event(
        &mut self,
        link: LinkId,
        ev: LinkEvent,
        out: &mut Outbox,
        now: Instant,
    ) {
        let Some(gateway) = self.shared.options.gateway.clone() else {
            return;
        };
        let timeout = gateway.config().timeout;
        self.last_activity = now;
        let Some(id) = self.relay_stream(link) else {
            // A link from a stream already over: it has nothing more to say.
            if let Some(links) = self.links.as_mut() {
                links.close(link);
            }
            return;
        };
        let (Some(links), Some(r)) = (
            self.links.as_mut(),
            self.streams.get_mut(&id).and_then(|s| s.relay.as_mut()),
        ) else {
            return;
        };
        r.deadline = now + timeout;
        match ev {
            LinkEvent::Connected { reused } => {
                r.attempt.connected(reused);
                return self.relay_upload(id, out, now);
            }
            LinkEvent::Drained => self.relay_upload(id, out, now),
            LinkEvent::Data => {}
            LinkEvent::Eof | LinkEvent::Failed(_) => {
                if r.attempt.ended(&gateway, links, ev) {
                    return;
                }
            }
        }
        self.relay_poll(id, out, now);
    }

    /// Relays whose deadline passed: one that never connected goes to the next upstream, any
    /// other fails with 504 (or a reset stream if its answer had begun).
    pub(super) fn relay_timers(&mut self, out: &mut Outbox, now: Instant) {
        let Some(gateway) = self.shared.options.gateway.clone() else {
            return;
        };
        let late: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| s.relay.as_ref().is_some_and(|r| now >= r.deadline))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let (Some(links), Some(r)) = (
                self.links.as_mut(),
                self.streams.get_mut(&id).and_then(|s| s.relay.as_mut()),
            ) else {
                continue;
            };
            r.deadline = now + gateway.config().timeout;
            if r.attempt.timed_out_unconnected(&gateway, links) {
                continue;
            }
            r.attempt.close_timed_out(links);
            self.relay_poll(id, out, now);
        }
    }

    /// The earliest relay deadline.
    pub(super) fn relay_deadline(&self) -> Option<Instant> {
        self.streams
            .values()
            .filter_map(|s| s.relay.as_ref().map(|r| r.deadline))
            .min()
    }

    /// Poll every relay that has room again (after the client took some output).
    pub(super) fn relay_poll_all(&mut self, out: &mut Outbox, now: Instant) {
        let ids: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| s.relay.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.relay_poll(id, out, now);
        }
    }

    /// Move what the stream's link brought into the stream's answer, while the answer queued on
    /// it is under the pause mark.
    fn relay_poll(&mut self, id: u32, out: &mut Outbox, now: Instant) {
        let mark = self.pause_mark();
        loop {
            let (Some(s), Some(links)) = (self.streams.get_mut(&id), self.links.as_mut()) else {
                return;
            };
            let queued: usize = s.body.as_ref().map_or(0, |b| {
                b.iter()
                    .map(|p| match p {
                        Part::Bytes(b) => b.len(),
                        Part::File { len, .. } => usize::try_from(*len).unwrap_or(usize::MAX),
                    })
                    .sum()
            });
            let Some(r) = s.relay.as_mut() else {
                return;
            };
            if queued >= mark {
                // The link's input fills meanwhile, and the driver stops reading it.
                links.pause(r.attempt.link, true);
                return;
            }
            links.pause(r.attempt.link, false);
            match r.attempt.pending.poll() {
                Progress::Wait => {
                    if !r.attempt.next_input(links) {
                        return;
                    }
                }
                Progress::Head {
                    mut response,
                    length,
                    bodiless,
                } => {
                    response.headers.append(&mut r.guard_headers);
                    r.status = response.status;
                    r.headed = true;
                    let end = r.head_only || bodiless;
                    let length = if end { Some(0) } else { length };
                    self.write_head(id, &response, length, end, out);
                    if end {
                        // HEADERS carried END_STREAM: nothing more goes on this stream.
                        if let Some(s) = self.streams.get_mut(&id) {
                            s.open = false;
                        }
                        self.finish_relay(id, true);
                        self.maybe_close(id);
                        return;
                    }
                }
                Progress::Data(data) => {
                    r.bytes += data.len() as u64;
                    if let Some(b) = s.body.as_mut() {
                        b.push_back(Part::Bytes(bytes::Bytes::from(data)));
                    }
                    self.requeue(id);
                }
                Progress::End => {
                    s.open = false;
                    if s.body.as_ref().is_some_and(VecDeque::is_empty) {
                        // Nothing left to carry END_STREAM: an empty DATA frame does.
                        out.with_tail(|b| {
                            frame::write_head(b, 0, kind::DATA, flag::END_STREAM, id)
                        });
                    }
                    self.finish_relay(id, true);
                    self.maybe_close(id);
                    return;
                }
                Progress::Fail(resp) if !r.headed => {
                    let head_only = r.head_only;
                    r.status = resp.status;
                    r.bytes = if head_only { 0 } else { resp.body.len() };
                    self.finish_relay(id, false);
                    if let Some(s) = self.streams.get_mut(&id) {
                        s.open = false;
                    }
                    self.send_response(id, resp, head_only, out);
                    return;
                }
                Progress::LocalRedirect(path) => {
                    self.local_redirect(id, path, out, now);
                    return;
                }
                // A 101 cannot be relayed (HTTP/2 has no Upgrade, §8.6), and a failure after
                // the head leaves a cut answer: the stream is reset, never ended as if whole.
                Progress::Switch { .. } | Progress::Fail(_) | Progress::Abort => {
                    if !r.headed {
                        r.status = 502;
                    }
                    self.finish_relay(id, false);
                    self.reset(id, ErrorCode::InternalError, out);
                    return;
                }
            }
        }
    }

    /// Move what stream `id` received of its streamed body into its link, as far as the link
    /// takes it (up to the pause mark queued), once the link is connected (before, a failover
    /// may still send the head elsewhere); give the window back for what moved. A body whose
    /// exchange is already over (answered early, or failed) is dropped as it comes.
    pub(super) fn relay_upload(&mut self, id: u32, out: &mut Outbox, now: Instant) {
        let mark = self.pause_mark();
        let timeout = self
            .shared
            .options
            .gateway
            .as_ref()
            .map(|g| g.config().timeout);
        let (Some(s), Some(links)) = (self.streams.get_mut(&id), self.links.as_mut()) else {
            return;
        };
        let Some(u) = s.upload.as_mut() else {
            return;
        };
        let moved = match s.relay.as_mut() {
            Some(r) if r.attempt.connected => {
                let link = r.attempt.link;
                let n = mark.saturating_sub(links.queued(link)).min(u.pending.len());
                if n > 0 {
                    links.out(link).push_bytes(&u.pending[..n]);
                    u.pending.drain(..n);
                    // A body byte has gone: the head can no longer be sent again elsewhere.
                    r.attempt.resend = None;
                    if let Some(t) = timeout {
                        r.deadline = now + t;
                    }
                }
                if u.ended && u.pending.is_empty() && r.script {
                    links.finish(link);
                }
                n
            }
            Some(_) => 0,
            None => std::mem::take(&mut u.pending).len(),
        };
        if u.ended && u.pending.is_empty() {
            s.upload = None;
        }
        s.recv_used += moved as i64;
        if s.recv_open {
            s.refill(id, out);
        }
    }

    /// The relay of stream `id` is over: log it, and release its link (`keep`: for reuse, or
    /// to let a script finish) or close it.
    fn finish_relay(&mut self, id: u32, answered: bool) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        // An answer that came before the whole body went leaves the upstream or script
        // mid-request: its link cannot be kept.
        let uploaded = s.upload.is_none();
        let Some(r) = s.relay.take() else {
            return;
        };
        if let Some(links) = self.links.as_mut() {
            if answered && uploaded && (r.script || r.attempt.pending.reusable()) {
                links.release(r.attempt.link);
            } else {
                links.close(r.attempt.link);
            }
        }
        if let (Some(log), Some((line, referer, ua))) = (&self.shared.options.access_log, &r.log) {
            log.log(&Entry {
                client: self.peer.ip_addr(),
                request_line: &[line.as_bytes()],
                status: r.status,
                bytes: r.bytes,
                referer: referer.as_deref(),
                user_agent: ua.as_deref(),
            });
        }
    }

    /// Close the link of a stream that is going away (reset, or the connection ending).
    pub(super) fn drop_relay(&mut self, r: Relay) {
        if let Some(links) = self.links.as_mut() {
            links.close(r.attempt.link);
        }
    }

    /// Answer for `path` instead (RFC 3875 §6.2.2): the same request, as GET (or HEAD), for
    /// the new path, through the routes and the handler.
    fn local_redirect(&mut self, id: u32, path: String, out: &mut Outbox, now: Instant) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        // The rest of a body still coming was for the script, not for the new request.
        let uploading = s.upload.take().is_some();
        s.discarding |= uploading;
        let Some(r) = s.relay.take() else {
            return;
        };
        // The script's answer is complete: it may finish its work, unless its input was
        // still coming.
        if let Some(links) = self.links.as_mut() {
            if uploading {
                links.close(r.attempt.link);
            } else {
                links.release(r.attempt.link);
            }
        }
        if r.redirects >= MAX_LOCAL_REDIRECTS
            || !path.starts_with('/')
            || !path.bytes().all(|b| b.is_ascii_graphic())
        {
            let resp = error_response(502, "The script's local redirect could not be followed.");
            if let Some(s) = self.streams.get_mut(&id) {
                s.open = false;
            }
            self.send_response(id, resp, r.head_only, out);
            return;
        }
        let mut head = Head {
            method: if r.head_only { "HEAD" } else { "GET" }.to_string(),
            path,
            ..Head::default()
        };
        if let Some(h) = r.host {
            head.fields.push(("host".to_string(), h.into_bytes()));
        }
        if let Some(s) = self.streams.get_mut(&id) {
            s.open = false;
            s.body = None;
        }
        self.dispatch(
            id,
            head,
            super::Received::Nothing,
            r.redirects + 1,
            out,
            now,
        );
    }
}
