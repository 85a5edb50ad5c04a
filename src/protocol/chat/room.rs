//! The room: its members, their bounded queues and the one global order (every push of every
//! message happens under the room's lock), the wakes, and the flow control that pauses a
//! sender while a reading member is behind (see the module doc of `chat`).

use super::*;

/// What one queued line costs a member: its bytes (shared with the other members' copies)
/// plus the handle its queue keeps. Counting the bytes alone let a member that never reads
/// hold about eight times `--max-queue` in handles when the lines were short.
pub(super) fn queued_cost(line: &Bytes) -> usize {
    line.len() + std::mem::size_of::<Bytes>()
}

/// One connected client, as the room sees it.
pub(super) struct Member {
    pub(super) label: String,
    /// Never reused, unlike its slot: what the Redis link answers names the member by it.
    pub(super) serial: u64,
    pub(super) queue: std::collections::VecDeque<Bytes>,
    /// What `queue` holds, in [`queued_cost`] (bytes plus each line's handle), held under
    /// `ChatConfig::max_queue`.
    pub(super) queued: usize,
    /// The session has been woken (or will look at its queue on its own, on `on_drained`) and
    /// has not yet found the queue empty: further pushes need not wake it again.
    pub(super) wake_pending: bool,
    /// Set when the member was dropped as too slow; its session closes on its next call.
    pub(super) dropped: bool,
    /// When its session last had room to take lines (its socket took what it had): a member
    /// that is behind holds the senders back only while this is recent (`max_stall`).
    pub(super) took: Instant,
    pub(super) waker: Waker,
}

impl Member {
    /// Is this member behind but still reading, so that senders should wait for it?
    pub(super) fn holds_senders(&self, config: &ChatConfig, now: Instant, mark: usize) -> bool {
        !self.dropped
            && self.queued > mark
            && now.saturating_duration_since(self.took) <= config.max_stall
    }
}

#[derive(Default)]
pub(super) struct RoomInner {
    /// Members indexed by id; a freed slot is reused. A slot is freed only when its session is
    /// dropped, so no live session ever shares an id with another.
    pub(super) members: Vec<Option<Member>>,
    pub(super) free: Vec<usize>,
    pub(super) count: usize,
    /// Lines broadcast so far: the position in the global order.
    pub(super) seq: u64,
    pub(super) shutting_down: bool,
    /// Senders paused because a member that reads was behind (ids and wakers), woken when no
    /// member holds them any more.
    pub(super) paused: Vec<(usize, Waker)>,
    /// Bytes handed to the Redis link and not yet posted: past the pause mark, senders wait for
    /// Redis as they wait for a member that is behind.
    pub(super) outgoing: usize,
    pub(super) serials: u64,
}

/// The hub every session of one [`ChatService`] shares.
pub struct Room {
    pub(super) config: ChatConfig,
    pub(super) inner: Mutex<RoomInner>,
    /// With `--redis`, the link every message goes through.
    pub(super) link: Option<Link>,
}

/// Wakers to call once the room lock is released.
pub(super) type Wakes = Vec<Waker>;

impl Room {
    pub(super) fn lock(&self) -> MutexGuard<'_, RoomInner> {
        // A panic while holding the lock leaves plain data (queues, labels) behind, still
        // consistent enough to keep serving everyone else.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `line` for member `id` (under the lock), dropping it if its queue would overflow.
    /// `sender` is the member whose session is running this call: it pulls its own queue before
    /// returning, so it is marked pending but needs no wake-up.
    pub(super) fn push(
        config: &ChatConfig,
        id: usize,
        m: &mut Member,
        line: &Bytes,
        sender: Option<usize>,
        wakes: &mut Wakes,
    ) {
        if m.dropped {
            return;
        }
        if m.queued + queued_cost(line) > config.max_queue {
            m.dropped = true;
            m.queue.clear();
            m.queued = 0;
            tracing::warn!(
                "dropping chat client {} (member {id}): more than {} bytes waited for it to \
                 read (--max-queue); it is not reading fast enough",
                m.label,
                config.max_queue
            );
            // Always wake: a session waiting for `on_drained` on a stalled socket would
            // otherwise never learn it was dropped.
            m.wake_pending = true;
            wakes.push(m.waker.clone());
            return;
        }
        m.queued += queued_cost(line);
        m.queue.push_back(line.clone());
        if !m.wake_pending {
            m.wake_pending = true;
            if sender != Some(id) {
                wakes.push(m.waker.clone());
            }
        }
    }

    /// Send `line` to every member in one step of the global order.
    pub(super) fn broadcast_locked(
        &self,
        inner: &mut RoomInner,
        line: &Bytes,
        sender: Option<usize>,
        wakes: &mut Wakes,
    ) {
        inner.seq += 1;
        for (id, slot) in inner.members.iter_mut().enumerate() {
            if let Some(m) = slot {
                Room::push(&self.config, id, m, line, sender, wakes);
            }
        }
    }

    /// Does a member other than `sender` that still reads have more than `mark` queued?
    pub(super) fn held_locked(
        &self,
        inner: &RoomInner,
        sender: usize,
        now: Instant,
        mark: usize,
    ) -> bool {
        inner.outgoing > mark
            || inner.members.iter().enumerate().any(|(id, m)| {
                id != sender
                    && m.as_ref()
                        .is_some_and(|m| m.holds_senders(&self.config, now, mark))
            })
    }

    /// Note `id` as a paused sender, to be woken by [`Self::release_locked`] (once).
    pub(super) fn register_paused_locked(&self, inner: &mut RoomInner, id: usize) {
        if inner.paused.iter().any(|(p, _)| *p == id) {
            return;
        }
        if let Some(Some(m)) = inner.members.get(id) {
            let waker = m.waker.clone();
            inner.paused.push((id, waker));
        }
    }

    /// Wake the paused senders if no member holds them any more (after a member took lines,
    /// or left).
    pub(super) fn release_locked(&self, inner: &mut RoomInner, now: Instant, wakes: &mut Wakes) {
        if inner.paused.is_empty() {
            return;
        }
        // No member is excluded: a paused sender behind on its own queue holds the others too.
        let held = self.held_locked(inner, usize::MAX, now, self.config.resume_mark());
        if !held {
            wakes.extend(inner.paused.drain(..).map(|(_, w)| w));
        }
    }

    /// Send `line` to one member only (answers to `/who`, refusals).
    pub(super) fn send_to_locked(
        &self,
        inner: &mut RoomInner,
        id: usize,
        line: &Bytes,
        wakes: &mut Wakes,
    ) {
        if let Some(Some(m)) = inner.members.get_mut(id) {
            // Only ever called from the asker's own session, which pulls before returning.
            Room::push(&self.config, id, m, line, Some(id), wakes);
        }
    }

    pub(super) fn join(self: &Arc<Room>, label: String, waker: Waker) -> (usize, u64, String) {
        let mut wakes = Wakes::new();
        let (id, serial, label) = {
            let mut inner = self.lock();
            inner.serials += 1;
            let serial = inner.serials;
            let member = Member {
                label,
                serial,
                queue: Default::default(),
                queued: 0,
                // The joiner is woken below like everyone else; if its driver could not deliver
                // a wake this early, the next broadcast wakes it again.
                wake_pending: false,
                dropped: false,
                took: Instant::now(),
                waker,
            };
            let id = match inner.free.pop() {
                Some(id) => {
                    inner.members[id] = Some(member);
                    id
                }
                None => {
                    inner.members.push(Some(member));
                    inner.members.len() - 1
                }
            };
            inner.count += 1;
            let m = inner.members[id].as_mut().expect("just inserted");
            // Unix-socket peers have no address of their own: number them.
            if m.label.is_empty() {
                m.label = format!("unix#{id}");
            }
            let label = m.label.clone();
            if self.config.notices && self.link.is_none() {
                self.broadcast_locked(
                    &mut inner,
                    &wire(&Notice::Joined(&label).to_string()),
                    None,
                    &mut wakes,
                );
            }
            (id, serial, label)
        };
        wakes.iter().for_each(Waker::wake);
        if let Some(link) = &self.link {
            let label = label.clone();
            link.post(self, Post::Join { serial, label });
        }
        (id, serial, label)
    }

    pub(super) fn leave(self: &Arc<Room>, id: usize) {
        let mut wakes = Wakes::new();
        {
            let mut inner = self.lock();
            let Some(m) = inner.members.get_mut(id).and_then(Option::take) else {
                return;
            };
            if let Some(link) = &self.link {
                // Told to the other instances even while this one shuts down: only its own
                // clients are all leaving.
                link.post(self, Post::Leave { serial: m.serial });
            }
            inner.free.push(id);
            inner.count -= 1;
            inner.paused.retain(|(p, _)| *p != id);
            // A member that held the senders may be the one leaving.
            self.release_locked(&mut inner, Instant::now(), &mut wakes);
            // While shutting down everyone is leaving; nobody needs to be told.
            if self.config.notices && !inner.shutting_down && self.link.is_none() {
                self.broadcast_locked(
                    &mut inner,
                    &wire(&Notice::Left(&m.label).to_string()),
                    None,
                    &mut wakes,
                );
            }
        }
        wakes.iter().for_each(Waker::wake);
    }

    /// Run `f` under the lock, then call the wakers it collected.
    pub(super) fn with<R>(&self, f: impl FnOnce(&Room, &mut RoomInner, &mut Wakes) -> R) -> R {
        let mut wakes = Wakes::new();
        let r = {
            let mut inner = self.lock();
            f(self, &mut inner, &mut wakes)
        };
        wakes.iter().for_each(Waker::wake);
        r
    }

    /// The Redis link (only called on the link's own paths, which exist only with one).
    pub(super) fn link(&self) -> &Link {
        self.link.as_ref().expect("a room with a Redis link")
    }

    /// Broadcast `lines` to every member here, in order, as one step of the global order each
    /// (what the Redis reader read, and the link's own notices).
    pub(super) fn announce(&self, lines: &[Bytes]) {
        self.with(|room, inner, wakes| {
            for line in lines {
                room.broadcast_locked(inner, line, None, wakes);
            }
        });
    }

    /// Send `line` to member `id` alone, if it is still the member `serial` (answers from the
    /// Redis writer, which runs on no member's thread, so the member is woken).
    pub(super) fn tell(&self, id: usize, serial: u64, line: &Bytes) {
        self.with(|room, inner, wakes| {
            if let Some(Some(m)) = inner.members.get_mut(id) {
                if m.serial == serial {
                    Room::push(&room.config, id, m, line, None, wakes);
                }
            }
        });
    }

    /// The Redis writer granted member `id` (if still `serial`) the name `name`.
    pub(super) fn renamed(&self, id: usize, serial: u64, name: &str) {
        if let Some(Some(m)) = self.lock().members.get_mut(id) {
            if m.serial == serial {
                m.label = name.to_string();
            }
        }
    }

    /// The Redis writer posted posts costing `cost`: senders paused for it may go on.
    pub(super) fn posted(&self, cost: usize) {
        self.with(|room, inner, wakes| {
            inner.outgoing = inner.outgoing.saturating_sub(cost);
            room.release_locked(inner, Instant::now(), wakes);
        });
    }

    /// Members connected now.
    pub fn len(&self) -> usize {
        self.lock().count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lines broadcast so far.
    pub fn broadcasts(&self) -> u64 {
        self.lock().seq
    }
}
