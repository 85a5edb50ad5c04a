//! Answering a request: the connection's keep-alive decided, the handler's response written
//! and logged, or a body made while it is sent (a folder archive) streamed a piece at a time
//! as the client takes it.

use std::time::Instant;

use super::write::{log_line, write_head, write_response};
use super::{HttpSession, Phase};
use crate::protocol::http::access_log::Entry;
use crate::protocol::http::message::{Body, Response, Streamed, Version};
use crate::protocol::http::wire::{status_has_body, Encoder, Head};
use crate::protocol::{Next, Outbox};

/// A [`Body::Stream`] answer in progress.
pub(super) struct Streaming {
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

impl HttpSession {
    /// Ask the handler, write its answer. Returns true when the connection closes after it.
    pub(super) fn respond(&mut self, head: &Head<'_>, out: &mut Outbox, now: Instant) -> bool {
        let req = &head.request;
        let resp = self.shared.handler.handle(req, &self.peer);
        self.complete(head, resp, out, now)
    }

    /// Count the request and decide whether the connection closes after its answer.
    pub(super) fn closes_after(&mut self, head: &Head<'_>, resp_close: bool) -> bool {
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
    pub(super) fn complete(
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
    pub(super) fn stream_pump(&mut self, out: &mut Outbox, now: Instant) -> Next {
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
}
