//! The request loop: complete requests answered from the buffered input in order, a body read
//! across reads, pipelined input held back while answering is paused or an answer is deferred,
//! and the move to idle or to closing after each answer.

use std::time::Instant;

use super::head::{request_line, with_head};
use super::{BodyTo, HttpSession, Phase};
use crate::protocol::http::proxy::RequestBody;
use crate::protocol::http::wire::{self, HeadScanner};
use crate::protocol::{Next, Outbox, ReadBuf};

impl HttpSession {
    /// Answer from the stash (if any) and then `input`, keeping their order; set aside what a
    /// pause leaves.
    pub(super) fn run(
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

    /// The answer is complete (or queued whole): go idle, or close after it.
    pub(super) fn next_request(&mut self, close: bool, now: Instant) -> bool {
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
    pub(super) fn closing(&self, nothing_behind: bool) -> Next {
        if nothing_behind && !self.more_may_come {
            Next::CloseAfterReply
        } else {
            Next::CloseAfterFlush
        }
    }
}
