//! One client: its decoder, its place in the room, its commands (`/who`, `/nick`), and the
//! moving of queued lines into its outbox as the driver drains it.

use super::*;

/// One client's state: its decoder and its place in the room. Leaving the room happens when the
/// driver drops the session, however the connection ended.
pub struct ChatSession {
    pub(super) room: Arc<Room>,
    pub(super) id: usize,
    pub(super) serial: u64,
    /// The label its messages carry (`ip:port`, or the name set with `/nick`).
    pub(super) label: String,
    pub(super) decoder: Decoder,
    /// Reused between calls: lines taken from the room queue, pushed after the lock is released.
    pub(super) batch: Vec<Bytes>,
    /// A member that reads is behind: no more input is read from this client until it catches
    /// up (see [`Session::reading_paused`]).
    pub(super) paused: bool,
}

/// What [`ChatSession::pull`] found.
pub(super) enum Pulled {
    Ok,
    Dropped,
}

impl ChatSession {
    /// The label this client's messages carry.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Move queued lines into `out` while it holds less than `target` bytes.
    pub(super) fn pull(&mut self, out: &mut Outbox, target: usize, now: Instant) -> Pulled {
        let mut budget = target.saturating_sub(out.len());
        let mut wakes = Wakes::new();
        {
            let mut guard = self.room.lock();
            let inner = &mut *guard;
            let Some(Some(m)) = inner.members.get_mut(self.id) else {
                return Pulled::Dropped;
            };
            if m.dropped {
                return Pulled::Dropped;
            }
            if budget > 0 && out.len() < OUTBOX_TARGET {
                // Its socket took what it had: it is reading. (A client's own input pulls with
                // no budget limit, and says nothing of whether it reads.)
                m.took = now;
            }
            while budget > 0 {
                let Some(line) = m.queue.pop_front() else {
                    break;
                };
                m.queued -= queued_cost(&line);
                budget = budget.saturating_sub(line.len());
                self.batch.push(line);
            }
            if m.queue.is_empty() && m.queue.capacity() > 64 {
                // A member that caught up gives back what a long wait grew.
                m.queue = std::collections::VecDeque::new();
            }
            // INVARIANT: `wake_pending` is false only when the queue is empty. If lines remain,
            // the outbox is at its target, so the driver will call `on_drained` and we pull then.
            m.wake_pending = !m.queue.is_empty();
            if m.queued <= self.room.config.resume_mark() {
                self.room.release_locked(inner, now, &mut wakes);
            }
        }
        wakes.iter().for_each(Waker::wake);
        for line in self.batch.drain(..) {
            out.push_shared(line);
        }
        Pulled::Ok
    }

    /// A paused sender looks again: it goes on once no member that reads is more than a
    /// quarter behind (the driver then hands it the input it held back). While paused it stays
    /// registered for a wake, and asks for a timer after `max_stall`, when a holder that
    /// stopped reading no longer counts.
    pub(super) fn recheck(&mut self, now: Instant) -> Next {
        if !self.paused {
            return Next::CONTINUE;
        }
        if self.held_back(now, self.room.config.resume_mark()) {
            Next::wake_at(now + self.room.config.max_stall)
        } else {
            Next::CONTINUE
        }
    }

    /// Pull what is queued; close if the room dropped this member.
    pub(super) fn deliver(&mut self, out: &mut Outbox, now: Instant) -> Next {
        match self.pull(out, OUTBOX_TARGET, now) {
            Pulled::Ok => self.recheck(now),
            Pulled::Dropped => {
                // Output already waiting means the socket is not taking any: close now and free
                // it. An empty outbox may still get the reason out.
                if out.is_empty() {
                    out.push_shared(wire(
                        &Notice::Disconnected(
                            "you were not reading; too much waited for you (--max-queue)",
                        )
                        .to_string(),
                    ));
                    Next::CloseAfterFlush
                } else {
                    out.clear();
                    Next::Close
                }
            }
        }
    }

    /// Act on one whole message from this client. False: held back, not acted on (a member
    /// that reads is behind, see [`Self::held_back`]); the message stays in the input.
    pub(super) fn handle(&mut self, msg: &str, now: Instant) -> bool {
        if self.room.link.is_some() {
            return self.handle_linked(msg, now);
        }
        if msg == "/who" {
            self.room.with(|room, inner, wakes| {
                let names: Vec<String> = inner
                    .members
                    .iter()
                    .flatten()
                    .take(WHO_MAX_NAMES)
                    .map(|m| m.label.clone())
                    .collect();
                let who = Notice::Who {
                    total: inner.count,
                    names: &names,
                };
                room.send_to_locked(inner, self.id, &wire(&who.to_string()), wakes);
            });
        } else if msg == "/nick" || msg.starts_with("/nick ") {
            self.nick(
                msg.strip_prefix("/nick")
                    .unwrap_or_default()
                    .strip_prefix(' ')
                    .unwrap_or_default(),
            );
        } else {
            let mut v = Vec::with_capacity(self.label.len() + 2 + msg.len() + 1);
            v.extend_from_slice(self.label.as_bytes());
            v.extend_from_slice(b": ");
            Framing::Null.encode(msg.as_bytes(), &mut v);
            let line = Bytes::from(v);
            let id = self.id;
            let mark = self.room.config.pause_mark();
            // The check and the broadcast under one lock: senders racing on other threads
            // cannot all pass the check and overshoot together.
            let held = self.room.with(|room, inner, wakes| {
                if room.held_locked(inner, id, now, mark) {
                    room.register_paused_locked(inner, id);
                    return true;
                }
                room.broadcast_locked(inner, &line, Some(id), wakes);
                false
            });
            if held {
                self.paused = true;
                return false;
            }
        }
        true
    }

    /// [`Self::handle`] with a Redis link: everything goes to the link, and comes back (to
    /// everyone, or as an answer to this client alone) from there.
    pub(super) fn handle_linked(&mut self, msg: &str, now: Instant) -> bool {
        let (id, serial) = (self.id, self.serial);
        let post = if msg == "/who" {
            Post::Who { id, serial }
        } else if msg == "/nick" || msg.starts_with("/nick ") {
            let name = msg
                .strip_prefix("/nick")
                .unwrap_or_default()
                .strip_prefix(' ')
                .unwrap_or_default();
            let refused = match check_nick(name) {
                Err(why) => Some(why),
                Ok(name) => self.room.with(|_, inner, _| {
                    inner
                        .members
                        .get(id)
                        .and_then(Option::as_ref)
                        .is_some_and(|m| m.label == name)
                        .then(|| format!("you are already {name}"))
                }),
            };
            if let Some(why) = refused {
                self.room.with(|room, inner, wakes| {
                    let line = wire(&Notice::NickRefused(&why).to_string());
                    room.send_to_locked(inner, id, &line, wakes);
                });
                return true;
            }
            Post::Nick {
                id,
                serial,
                name: name.to_string(),
            }
        } else {
            Post::Message {
                id,
                serial,
                text: msg.to_string(),
            }
        };
        let mark = self.room.config.pause_mark();
        let cost = post.cost();
        let held = self.room.with(|room, inner, _| {
            if room.held_locked(inner, id, now, mark) {
                room.register_paused_locked(inner, id);
                return true;
            }
            inner.outgoing += cost;
            false
        });
        if held {
            self.paused = true;
            return false;
        }
        self.room.link().post(&self.room, post);
        true
    }

    /// Is a member that reads more than `mark` behind? Then this sender is (or stays) paused
    /// and registered to be woken when that changes. Back-pressure for a sender faster than a
    /// reader: it waits, instead of overflowing that member's queue and getting it dropped.
    pub(super) fn held_back(&mut self, now: Instant, mark: usize) -> bool {
        let id = self.id;
        let held = self.room.with(|room, inner, _| {
            let held = room.held_locked(inner, id, now, mark);
            if held {
                room.register_paused_locked(inner, id);
            } else {
                inner.paused.retain(|(p, _)| *p != id);
            }
            held
        });
        self.paused = held;
        held
    }

    pub(super) fn nick(&mut self, name: &str) {
        let id = self.id;
        let notices = self.room.config.notices;
        let renamed = self.room.with(|room, inner, wakes| {
            // Names are compared without case, so `Bob` cannot pass for `bob`.
            let same = |a: &str, b: &str| a.to_lowercase() == b.to_lowercase();
            let refused = match check_nick(name) {
                Err(why) => Some(why),
                Ok(name)
                    if inner
                        .members
                        .get(id)
                        .and_then(Option::as_ref)
                        .is_some_and(|m| m.label == name) =>
                {
                    Some(format!("you are already {name}"))
                }
                Ok(name)
                    if inner.members.iter().enumerate().any(|(i, m)| {
                        i != id && m.as_ref().is_some_and(|m| same(&m.label, name))
                    }) =>
                {
                    Some(format!("{name} is taken"))
                }
                Ok(_) => None,
            };
            if let Some(why) = refused {
                room.send_to_locked(
                    inner,
                    id,
                    &wire(&Notice::NickRefused(&why).to_string()),
                    wakes,
                );
                return None;
            }
            let Some(Some(m)) = inner.members.get_mut(id) else {
                return None;
            };
            let old = std::mem::replace(&mut m.label, name.to_string());
            let line = wire(
                &Notice::Renamed {
                    old: &old,
                    new: name,
                }
                .to_string(),
            );
            if notices {
                room.broadcast_locked(inner, &line, Some(id), wakes);
            } else {
                room.send_to_locked(inner, id, &line, wakes);
            }
            Some(old)
        });
        if let Some(old) = renamed {
            tracing::debug!("chat client {old} is now known as {name}");
            self.label = name.to_string();
        }
    }

    /// Close this client alone, with the reason logged and (if it still reads) told.
    pub(super) fn refuse(&mut self, why: &FrameError, out: &mut Outbox) -> Next {
        let reason = match why {
            FrameError::TooLong { limit } => {
                format!("a message was longer than {limit} bytes (--max-message)")
            }
            FrameError::InvalidUtf8 => "a message was not valid UTF-8".to_string(),
        };
        tracing::warn!("closing chat client {}: {reason}", self.label);
        out.push_shared(wire(&Notice::Disconnected(&reason).to_string()));
        Next::CloseAfterFlush
    }
}

impl Session for ChatSession {
    /// While paused for a member that is behind, the driver reads nothing more from this
    /// client: what is already read is handled, the rest waits in its socket, and TCP slows
    /// the client down.
    fn reading_paused(&self) -> bool {
        self.paused
    }

    fn on_input(&mut self, input: &mut ReadBuf, out: &mut Outbox, now: Instant) -> Next {
        loop {
            if self.paused {
                // What is read stays in `input`; the driver hands it back once we go on.
                break;
            }
            match self.decoder.decode(input.data()) {
                Ok(Some(frame)) => {
                    // The decoder checked the payload is UTF-8; a failure here would be a
                    // decoder bug, answered like bad input rather than with a panic.
                    let Ok(msg) = std::str::from_utf8(&input.data()[frame.payload.clone()]) else {
                        return self.refuse(&FrameError::InvalidUtf8, out);
                    };
                    // Handled straight from the read buffer: the line is built once, in `handle`.
                    if !self.handle(msg, now) {
                        // Held back: it stays in `input`, and the driver hands it back.
                        break;
                    }
                    input.consume(frame.consumed);
                }
                Ok(None) => break,
                Err(e) => {
                    input.clear();
                    return self.refuse(&e, out);
                }
            }
        }
        // Our own messages came back to our queue (unwoken: we pull here). Everything queued
        // goes into the outbox, past OUTBOX_TARGET: a client that sends faster than it reads
        // then has an outbox over the driver's high-water mark, and the driver stops reading its
        // input until it catches up. That is the back-pressure that keeps a fast sender from
        // overflowing its own queue (and everyone else's) instead of being dropped.
        match self.pull(out, usize::MAX, now) {
            Pulled::Ok if self.paused => Next::wake_at(now + self.room.config.max_stall),
            Pulled::Ok => Next::CONTINUE,
            Pulled::Dropped => self.deliver(out, now),
        }
    }

    fn on_eof(&mut self, input: &mut ReadBuf, out: &mut Outbox, now: Instant) -> Next {
        if !input.is_empty() {
            tracing::debug!(
                "chat client {} closed with {} bytes of an unfinished message",
                self.label,
                input.len()
            );
            input.clear();
        }
        match self.deliver(out, now) {
            Next::Continue { .. } => Next::CloseAfterFlush,
            other => other,
        }
    }

    fn on_drained(&mut self, out: &mut Outbox, now: Instant) -> Next {
        self.deliver(out, now)
    }

    fn on_wake(&mut self, out: &mut Outbox, now: Instant) -> Next {
        self.deliver(out, now)
    }

    fn on_timer(&mut self, _out: &mut Outbox, now: Instant) -> Next {
        self.recheck(now)
    }

    fn on_shutdown(&mut self, out: &mut Outbox, now: Instant) -> Next {
        // Everything still queued (bounded by --max-queue) goes out, the farewell last.
        self.paused = false;
        match self.pull(out, usize::MAX, now) {
            Pulled::Ok => Next::CloseAfterFlush,
            Pulled::Dropped => Next::Close,
        }
    }
}

impl Drop for ChatSession {
    fn drop(&mut self) {
        self.room.leave(self.id);
        tracing::debug!("chat client {} left", self.label);
    }
}
