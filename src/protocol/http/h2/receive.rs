//! What the client sends, frame by frame (RFC 9113 §6): SETTINGS, WINDOW_UPDATE, RST_STREAM,
//! DATA and the header blocks (HEADERS + CONTINUATION), each checked against its section and
//! the connection's limits, and a request's body routed to where it goes.

use super::*;

impl H2Session {
    pub(super) fn settings(&mut self, f: Frame<'_>, out: &mut Outbox, now: Instant) -> Step {
        let Frame {
            head: h,
            payload: p,
        } = f;
        if h.stream != 0 {
            return Err(ConnError(ErrorCode::ProtocolError, "SETTINGS on a stream"));
        }
        self.spend(now, false)?;
        if h.flags & flag::ACK != 0 {
            if !p.is_empty() {
                return Err(ConnError(
                    ErrorCode::FrameSizeError,
                    "SETTINGS ACK with data",
                ));
            }
            return Ok(());
        }
        if p.len() % 6 != 0 {
            return Err(ConnError(
                ErrorCode::FrameSizeError,
                "SETTINGS not 6-byte items",
            ));
        }
        for item in p.chunks_exact(6) {
            let id = u16::from_be_bytes([item[0], item[1]]);
            let v = u32::from_be_bytes([item[2], item[3], item[4], item[5]]);
            match id {
                setting::ENABLE_PUSH if v > 1 => {
                    return Err(ConnError(
                        ErrorCode::ProtocolError,
                        "ENABLE_PUSH not 0 or 1",
                    ))
                }
                setting::INITIAL_WINDOW_SIZE => {
                    let v = i64::from(v);
                    if v > MAX_WINDOW {
                        return Err(ConnError(
                            ErrorCode::FlowControlError,
                            "INITIAL_WINDOW_SIZE over 2^31-1",
                        ));
                    }
                    // §6.9.2: the change applies to every open stream's window.
                    let delta = v - self.peer_initial_window;
                    self.peer_initial_window = v;
                    for s in self.streams.values_mut() {
                        s.send_window += delta;
                        if s.send_window > MAX_WINDOW {
                            return Err(ConnError(
                                ErrorCode::FlowControlError,
                                "a stream window over 2^31-1",
                            ));
                        }
                    }
                    self.requeue_all();
                }
                setting::MAX_FRAME_SIZE => {
                    let v = v as usize;
                    if !(frame::MIN_MAX_FRAME..=frame::MAX_MAX_FRAME).contains(&v) {
                        return Err(ConnError(
                            ErrorCode::ProtocolError,
                            "MAX_FRAME_SIZE out of range",
                        ));
                    }
                    self.peer_max_frame = v;
                }
                // HEADER_TABLE_SIZE: our encoder uses no dynamic table. MAX_CONCURRENT_STREAMS
                // bounds pushes, which we never make. MAX_HEADER_LIST_SIZE is advisory.
                _ => {}
            }
        }
        out.with_tail(frame::write_settings_ack);
        Ok(())
    }

    pub(super) fn window_update(&mut self, f: Frame<'_>, out: &mut Outbox, now: Instant) -> Step {
        let Frame {
            head: h,
            payload: p,
        } = f;
        if p.len() != 4 {
            return Err(ConnError(
                ErrorCode::FrameSizeError,
                "WINDOW_UPDATE not 4 bytes",
            ));
        }
        self.spend(now, false)?;
        let inc = i64::from(u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff);
        if h.stream == 0 {
            if inc == 0 {
                return Err(ConnError(
                    ErrorCode::ProtocolError,
                    "a zero window increment",
                ));
            }
            self.send_window += inc;
            if self.send_window > MAX_WINDOW {
                return Err(ConnError(
                    ErrorCode::FlowControlError,
                    "the connection window over 2^31-1",
                ));
            }
            return Ok(());
        }
        if h.stream > self.last_stream {
            return Err(ConnError(
                ErrorCode::ProtocolError,
                "WINDOW_UPDATE on an idle stream",
            ));
        }
        let Some(s) = self.streams.get_mut(&h.stream) else {
            // §5.1: a closed stream's late WINDOW_UPDATE is ignored.
            return Ok(());
        };
        if inc == 0 {
            self.reset(h.stream, ErrorCode::ProtocolError, out);
            return Ok(());
        }
        s.send_window += inc;
        if s.send_window > MAX_WINDOW {
            self.reset(h.stream, ErrorCode::FlowControlError, out);
            return Ok(());
        }
        self.requeue(h.stream);
        Ok(())
    }

    pub(super) fn rst(&mut self, h: FrameHead, p: &[u8], now: Instant) -> Step {
        if h.stream == 0 {
            return Err(ConnError(
                ErrorCode::ProtocolError,
                "RST_STREAM on stream 0",
            ));
        }
        if p.len() != 4 {
            return Err(ConnError(
                ErrorCode::FrameSizeError,
                "RST_STREAM not 4 bytes",
            ));
        }
        if h.stream > self.last_stream {
            return Err(ConnError(
                ErrorCode::ProtocolError,
                "RST_STREAM on an idle stream",
            ));
        }
        if self.streams.contains_key(&h.stream) {
            self.forget(h.stream);
            self.spend(now, true)?;
        }
        Ok(())
    }

    /// Answer a stream error with RST_STREAM and forget the stream (§5.4.2).
    pub(super) fn reset(&mut self, id: u32, code: ErrorCode, out: &mut Outbox) {
        self.forget(id);
        out.with_tail(|b| frame::write_rst(b, id, code));
    }

    pub(super) fn data(&mut self, f: Frame<'_>, out: &mut Outbox, now: Instant) -> Step {
        let Frame {
            head: h,
            payload: p,
        } = f;
        if h.stream == 0 {
            return Err(ConnError(ErrorCode::ProtocolError, "DATA on stream 0"));
        }
        if h.stream > self.last_stream {
            return Err(ConnError(
                ErrorCode::ProtocolError,
                "DATA on an idle stream",
            ));
        }
        let len = p.len() as i64;
        // §6.9: all of a DATA frame, padding included, counts against the connection window,
        // even on a stream already closed.
        if len > self.recv_window {
            return Err(ConnError(
                ErrorCode::FlowControlError,
                "DATA past the connection window",
            ));
        }
        self.recv_window -= len;
        self.recv_used += len;
        if self.recv_used >= REFILL_AT {
            let n = std::mem::take(&mut self.recv_used);
            self.recv_window += n;
            out.with_tail(|b| frame::write_window_update(b, 0, n as u32));
        }
        let Some(data) = frame::unpad(h.flags, p, 0) else {
            return Err(ConnError(
                ErrorCode::ProtocolError,
                "padding longer than DATA",
            ));
        };
        let end = h.flags & flag::END_STREAM != 0;
        if data.is_empty() && !end {
            self.spend(now, false)?;
        }
        let max_body = self.shared.limits.max_body;
        let Some(s) = self.streams.get_mut(&h.stream) else {
            // Each of these costs a RST_STREAM in answer: counted as a flood would be.
            self.spend(now, false)?;
            out.with_tail(|b| frame::write_rst(b, h.stream, ErrorCode::StreamClosed));
            return Ok(());
        };
        if !s.recv_open {
            self.reset(h.stream, ErrorCode::StreamClosed, out);
            return Ok(());
        }
        if len > s.recv_window {
            self.reset(h.stream, ErrorCode::FlowControlError, out);
            return Ok(());
        }
        s.recv_window -= len;
        s.body_len += data.len() as u64;
        let streaming = s.upload.is_some();
        // A streamed body's window comes back as the link takes it (padding at once).
        s.recv_used += if streaming {
            len - data.len() as i64
        } else {
            len
        };
        let body_len = s.body_len;
        if let Some(u) = s.upload.as_mut() {
            if body_len > u.declared || (end && body_len != u.declared) {
                // §8.1.1: a body that does not match its content-length is malformed; the
                // upstream request is abandoned with the stream.
                self.reset(h.stream, ErrorCode::ProtocolError, out);
                return Ok(());
            }
            u.pending.extend_from_slice(data);
            u.ended = end;
        } else if s.body_len <= max_body {
            if s.collect {
                s.collected.extend_from_slice(data);
            } else if let Some(sink) = s.sink.as_mut() {
                sink.write(data);
            }
        }
        if end {
            s.recv_open = false;
        } else {
            s.refill(h.stream, out);
        }
        if streaming {
            self.relay_upload(h.stream, out, now);
            if end {
                // An exchange answered before the body ended leaves nothing else to close it.
                self.maybe_close(h.stream);
            }
            return Ok(());
        }
        if s.discarding {
            if end {
                self.maybe_close(h.stream);
            }
            return Ok(());
        }
        if s.body_len > max_body {
            s.discarding = true;
            s.head = None;
            s.collected = Vec::new();
            // An upload cut short leaves nothing behind (the sink's Drop).
            s.sink = None;
            let resp = error_response(413, "The request body is larger than this server accepts.");
            self.send_response(h.stream, resp, false, out);
            return Ok(());
        }
        if end {
            // §8.1.1: a body that does not match its Content-Length is malformed.
            if let Some(cl) = s.head.as_ref().and_then(|h| h.content_length) {
                if cl != s.body_len {
                    self.reset(h.stream, ErrorCode::ProtocolError, out);
                    return Ok(());
                }
            }
            self.answer(h.stream, out, now);
        }
        Ok(())
    }

    pub(super) fn headers(&mut self, f: Frame<'_>, out: &mut Outbox, now: Instant) -> Step {
        let Frame {
            head: h,
            payload: p,
        } = f;
        if h.stream == 0 {
            return Err(ConnError(ErrorCode::ProtocolError, "HEADERS on stream 0"));
        }
        let Some(fragment) = frame::unpad(h.flags, p, 5) else {
            return Err(ConnError(
                ErrorCode::ProtocolError,
                "padding longer than HEADERS",
            ));
        };
        // §5.3.1: a stream cannot depend on itself (a stream error, answered once the block is
        // decoded, since the HPACK table must stay in step).
        let self_dependent = h.flags & flag::PRIORITY != 0 && {
            let at = usize::from(h.flags & flag::PADDED != 0);
            u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]) & 0x7fff_ffff == h.stream
        };
        let end_stream = h.flags & flag::END_STREAM != 0;
        if h.flags & flag::END_HEADERS != 0 {
            return self.header_block(h.stream, end_stream, self_dependent, fragment, out, now);
        }
        if fragment.len() > self.shared.limits.max_head {
            return Err(ConnError(
                ErrorCode::EnhanceYourCalm,
                "a header block too large",
            ));
        }
        self.block = Some(Block {
            stream: h.stream,
            end_stream,
            self_dependent,
            buf: fragment.to_vec(),
            frames: 1,
        });
        Ok(())
    }

    pub(super) fn continuation(&mut self, f: Frame<'_>, out: &mut Outbox, now: Instant) -> Step {
        let Frame {
            head: h,
            payload: p,
        } = f;
        let max_head = self.shared.limits.max_head;
        let Some(b) = self.block.as_mut() else {
            return Err(ConnError(
                ErrorCode::ProtocolError,
                "CONTINUATION without HEADERS",
            ));
        };
        if b.stream != h.stream {
            return Err(ConnError(
                ErrorCode::ProtocolError,
                "CONTINUATION on another stream",
            ));
        }
        b.frames += 1;
        // The CONTINUATION flood: a block that never ends, or ends only after too many
        // frames, is refused before it costs memory or time.
        if b.buf.len() + p.len() > max_head || b.frames > MAX_CONTINUATIONS {
            return Err(ConnError(
                ErrorCode::EnhanceYourCalm,
                "a header block too large",
            ));
        }
        b.buf.extend_from_slice(p);
        if h.flags & flag::END_HEADERS == 0 {
            return Ok(());
        }
        let b = self.block.take().expect("checked above");
        self.header_block(b.stream, b.end_stream, b.self_dependent, &b.buf, out, now)
    }

    /// A complete header block for `id`: a new request, or trailers.
    pub(super) fn header_block(
        &mut self,
        id: u32,
        end_stream: bool,
        self_dependent: bool,
        block: &[u8],
        out: &mut Outbox,
        now: Instant,
    ) -> Step {
        let l = &self.shared.limits;
        let fields = self
            .decoder
            .decode(block, l.max_head, l.max_headers)
            .map_err(|_| {
                ConnError(
                    ErrorCode::CompressionError,
                    "an HPACK block that does not decode",
                )
            })?;
        if self_dependent {
            self.last_stream = self.last_stream.max(id);
            self.reset(id, ErrorCode::ProtocolError, out);
            return Ok(());
        }
        if let Some(s) = self.streams.get_mut(&id) {
            // Trailers (§8.1): they must end the stream; their fields are not used.
            if !s.recv_open {
                self.reset(id, ErrorCode::StreamClosed, out);
                return Ok(());
            }
            // §8.1: trailers end the stream and carry no pseudo-header (§8.3).
            if !end_stream || fields.bad_name || fields.list.iter().any(|(n, _)| n.starts_with(':'))
            {
                self.reset(id, ErrorCode::ProtocolError, out);
                return Ok(());
            }
            s.recv_open = false;
            if let Some(u) = s.upload.as_mut() {
                // Trailers end a streamed body: it must have come whole (§8.1.1).
                if s.body_len != u.declared {
                    self.reset(id, ErrorCode::ProtocolError, out);
                } else {
                    u.ended = true;
                    self.relay_upload(id, out, now);
                    self.maybe_close(id);
                }
            } else if s.discarding {
                self.maybe_close(id);
            } else {
                self.answer(id, out, now);
            }
            return Ok(());
        }
        if self.recent.contains(&id) {
            // §5.1: frames after a stream's END_STREAM (or its reset) on a stream that is
            // closed now.
            return Err(ConnError(
                ErrorCode::StreamClosed,
                "HEADERS on a closed stream",
            ));
        }
        if id % 2 == 0 || id <= self.last_stream {
            // §5.1.1: client streams are odd and increasing; a lower id is not a new stream.
            return Err(ConnError(
                ErrorCode::ProtocolError,
                "HEADERS on a lower or server stream id",
            ));
        }
        self.last_stream = id;
        if self.recent.len() == RECENT_STREAMS {
            self.recent.pop_front();
        }
        self.recent.push_back(id);
        if self.going_away {
            // §6.8: streams after the GOAWAY's last id are not processed.
            out.with_tail(|b| frame::write_rst(b, id, ErrorCode::RefusedStream));
            return Ok(());
        }
        if self.streams.len() >= self.shared.options.h2.max_streams as usize {
            // §5.1.2: past SETTINGS_MAX_CONCURRENT_STREAMS.
            out.with_tail(|b| frame::write_rst(b, id, ErrorCode::RefusedStream));
            return self.spend(now, true);
        }
        let mut s = Stream::new(!end_stream, self.peer_initial_window);
        if fields.too_large {
            s.discarding = true;
            self.streams.insert(id, s);
            let resp = error_response(
                431,
                "The request header fields are larger than this server accepts.",
            );
            self.send_response(id, resp, false, out);
            return Ok(());
        }
        match request_head(fields) {
            Some(head) => {
                let refused = if end_stream {
                    None
                } else {
                    self.body_use(&head, &mut s)
                };
                s.head = Some(head);
                let streams = s.upload.is_some();
                self.streams.insert(id, s);
                if let Some((resp, line)) = refused {
                    self.refuse_body(id, resp, &line, out);
                } else if end_stream || streams {
                    // A streamed body goes upstream behind the head, which goes now.
                    self.answer(id, out, now);
                }
            }
            // §8.1.1: a malformed request is a stream error.
            None => out.with_tail(|b| frame::write_rst(b, id, ErrorCode::ProtocolError)),
        }
        Ok(())
    }

    /// A request whose body is coming: decide where it goes before a byte of it is read. A
    /// request the guard stops (401, a preflight) is answered at its end and its body
    /// discarded; a routed one's is kept for its upstream or script; a handler may take it (an
    /// upload) or refuse it, whose answer goes at once (with the request line to log).
    pub(super) fn body_use(&self, head: &Head, s: &mut Stream) -> Option<(Response, String)> {
        let shared = &self.shared;
        with_request(head, |req| {
            if shared
                .options
                .guard
                .as_ref()
                .is_some_and(|g| g.gate(req, &self.peer).is_some())
            {
                return None;
            }
            if shared
                .options
                .gateway
                .as_ref()
                .is_some_and(|g| g.route(req).is_some())
            {
                // A declared length streams (refused at once past the limit, before any of
                // it goes upstream); without one the body is collected to be given one.
                match head.content_length {
                    Some(n) if n > shared.limits.max_body => {
                        let resp = error_response(
                            413,
                            "The request body is larger than this server accepts.",
                        );
                        return Some((resp, format!("{} {}", req.method, req.target)));
                    }
                    Some(declared) => {
                        s.upload = Some(Upload {
                            declared,
                            ..Upload::default()
                        })
                    }
                    None => s.collect = true,
                }
                return None;
            }
            if !matches!(req.method, "PUT" | "POST" | "PATCH") {
                return None;
            }
            match shared.handler.body_use(req, &self.peer) {
                BodyUse::Take(sink) => s.sink = Some(sink),
                BodyUse::Refuse(mut resp) => {
                    if let Some(g) = &shared.options.guard {
                        g.answer_headers(req, &mut resp.headers);
                    }
                    return Some((resp, format!("{} {}", req.method, req.target)));
                }
                BodyUse::Discard => {}
            }
            None
        })
    }

    /// Answer a refused body at once; the rest of it is discarded as it comes.
    pub(super) fn refuse_body(&mut self, id: u32, resp: Response, line: &str, out: &mut Outbox) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.discarding = true;
            s.head = None;
        }
        let status = resp.status;
        let bytes = self.send_response(id, resp, false, out);
        self.served = self.served.saturating_add(1);
        if let Some(log) = &self.shared.options.access_log {
            log.log(&Entry {
                client: self.peer.ip_addr(),
                request_line: &[line.as_bytes(), Version::Http2.as_str().as_bytes()],
                status,
                bytes,
                referer: None,
                user_agent: None,
            });
        }
    }
}
