//! What the server sends: a request's answer dispatched to the handler or a route, its
//! HEADERS and DATA frames written within the peer's windows, the streams taking turns.

use super::*;

impl H2Session {
    /// The request on `id` is complete: answer it.
    pub(super) fn answer(&mut self, id: u32, out: &mut Outbox, now: Instant) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let Some(head) = s.head.take() else {
            return;
        };
        let got = match s.sink.take() {
            Some(sink) => Received::Taken(sink),
            None if s.collect => Received::Collected(std::mem::take(&mut s.collected)),
            None => match &s.upload {
                Some(u) => Received::Streaming(u.declared),
                None => Received::Nothing,
            },
        };
        self.dispatch(id, head, got, 0, out, now);
    }

    /// Ask the guard, then the routes (a relay), then the handler; log and send.
    pub(super) fn dispatch(
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
                        Received::Collected(b) => relay::RelayBody::Whole(b),
                        Received::Streaming(n) => relay::RelayBody::Streaming(n),
                        _ => relay::RelayBody::Whole(Vec::new()),
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
    pub(super) fn log_request(&self, req: &Request<'_>, status: u16, bytes: u64) {
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
    pub(super) fn send_response(
        &mut self,
        id: u32,
        resp: Response,
        head_only: bool,
        out: &mut Outbox,
    ) -> u64 {
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
    pub(super) fn write_head(
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
    pub(super) fn write_header_block(
        &self,
        id: u32,
        block: &[u8],
        end_stream: bool,
        out: &mut Outbox,
    ) {
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
    pub(super) fn maybe_close(&mut self, id: u32) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        if s.done_sending() && !s.recv_open && s.relay.is_none() {
            self.streams.remove(&id);
        }
    }

    pub(super) fn requeue(&mut self, id: u32) {
        if let Some(s) = self.streams.get_mut(&id) {
            let more = s.body.as_ref().is_some_and(|b| !b.is_empty()) || s.streamed.is_some();
            if !s.queued && more {
                s.queued = true;
                self.ready.push_back(id);
            }
        }
    }

    pub(super) fn requeue_all(&mut self) {
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            self.requeue(id);
        }
    }

    /// Send DATA frames, a frame per stream in turn, while the windows and the pause mark
    /// allow.
    pub(super) fn pump(&mut self, out: &mut Outbox) {
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
