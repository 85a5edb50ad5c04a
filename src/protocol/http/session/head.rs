//! A complete request head: parsed within the limits, checked by the guard, and sent where it
//! goes (a proxy or CGI route, the handler's body sink, the handler), or refused with its
//! precise status.

use std::time::Instant;

use super::write::write_response;
use super::{BodyTo, HttpSession, Phase};
use crate::protocol::http::access_log::Entry;
use crate::protocol::http::message::{error_response, BodyUse};
use crate::protocol::http::proxy::RequestBody;
use crate::protocol::http::wire::{self, Head, Limits, Reject};
use crate::protocol::{Next, Outbox, ReadBuf};

/// Header storage on the stack for the usual header-count limits.
const STACK_HEADERS: usize = 128;

/// Parse `buf` (a complete head) with header storage sized to the limit, and hand the result
/// to `f`.
pub(super) fn with_head<R>(
    buf: &[u8],
    limits: &Limits,
    f: impl FnOnce(Result<Head<'_>, Reject>) -> R,
) -> R {
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
pub(super) fn request_line(buf: &[u8]) -> Vec<u8> {
    let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
    // The bytes as they came, whatever they are: the log escapes them.
    line[..line.len().min(1024)].to_vec()
}

impl HttpSession {
    /// A complete head arrived. Returns true when the connection closes after what is queued.
    pub(super) fn on_head(
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

    /// Queue the answer to a refused request; the connection closes after it.
    pub(super) fn answer_error(&mut self, r: Reject, line: &[u8], out: &mut Outbox) {
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

    pub(super) fn reject(
        &mut self,
        r: Reject,
        line: &[u8],
        input: &mut ReadBuf,
        out: &mut Outbox,
    ) -> Next {
        self.answer_error(r, line, out);
        input.clear();
        Next::CloseAfterFlush
    }
}
