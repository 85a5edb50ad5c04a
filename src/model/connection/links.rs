//! The connection's outbound links, as the driver holds them: opening what the session dialled,
//! writing what it queued, reading what arrives, ending what it let go (into the worker's pool
//! of kept connections, or closed), and telling the driver which descriptors to watch.

use std::os::fd::RawFd;
use std::time::Instant;

use super::{Conn, Interest, State};
use crate::model::link::{self, Ended, LinkIo, PoolScope, READ_SIDE, WRITE_SIDE};
use crate::protocol::link::DriverStep;
use crate::protocol::{LinkError, LinkEvent, Links, Session};

/// Registered for reading only: how a kept connection is watched in a worker's pool.
const READ_ONLY: Interest = Interest {
    read: true,
    write: false,
};

/// Links one connection may hold at once: each has up to two descriptors, and the event
/// driver's token has room for 254 of them.
pub(crate) const MAX_LINKS: usize = 127;

/// The driver's half of a connection's links, allocated with the first: every idle
/// connection carries only its pointer.
#[derive(Default)]
pub(super) struct LinkTable(Option<Box<LinkTableInner>>);

#[derive(Default)]
pub(super) struct LinkTableInner {
    pub(super) sides: Vec<Option<LinkSide>>,
    /// Link descriptors ended since the driver last asked that are still open elsewhere (a
    /// child's output drained by the reaper, a connection in the process's shared pool): a
    /// poller must forget them (one keyed by descriptor before the number is reused).
    pub(super) closed: Vec<RawFd>,
    /// Link descriptors closed since the driver last asked: epoll forgot each with its last
    /// descriptor; a poller keyed by descriptor (poll, select) must still forget it.
    pub(super) gone: Vec<RawFd>,
    /// Link descriptors that went, still registered, to the event worker's pool of kept
    /// connections: the worker now watches them for the pool.
    pub(super) pooled: Vec<RawFd>,
}

thread_local! {
    /// Emptied tables kept for the thread's next connection with a link: a proxied request
    /// would otherwise allocate and free one (and its vectors) each time. The boxes are what
    /// is reused, hence a vector of boxes.
    #[allow(clippy::vec_box)]
    static SPARE: std::cell::RefCell<Vec<Box<LinkTableInner>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Spare tables kept per thread.
const SPARE_KEEP: usize = 32;

fn new_table() -> Box<LinkTableInner> {
    SPARE
        .try_with(|s| s.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

impl LinkTable {
    pub(super) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |t| t.sides.len())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn resize_with(&mut self, n: usize, f: impl FnMut() -> Option<LinkSide>) {
        self.0.get_or_insert_with(new_table).sides.resize_with(n, f);
    }

    pub(super) fn get_mut(&mut self, i: usize) -> Option<&mut Option<LinkSide>> {
        self.0.as_mut()?.sides.get_mut(i)
    }

    pub(super) fn iter(&self) -> std::slice::Iter<'_, Option<LinkSide>> {
        self.0.as_ref().map_or([].iter(), |t| t.sides.iter())
    }

    pub(super) fn gone(&mut self) -> &mut Vec<RawFd> {
        &mut self.table().gone
    }

    pub(super) fn table(&mut self) -> &mut LinkTableInner {
        self.0.get_or_insert_with(new_table)
    }

    /// No link is open: free the table, unless descriptors still wait for the poller to
    /// forget them.
    pub(super) fn shrink(&mut self) {
        if self
            .0
            .as_ref()
            .is_some_and(|t| t.closed.is_empty() && t.gone.is_empty() && t.pooled.is_empty())
        {
            let Some(mut t) = self.0.take() else { return };
            // Every side is ended (the callers check): clearing drops nothing open.
            if t.sides.capacity() <= 4 {
                t.sides.clear();
                // During thread exit the spares may be gone: the table is simply dropped.
                let _ = SPARE.try_with(|s| {
                    let mut s = s.borrow_mut();
                    if s.len() < SPARE_KEEP {
                        s.push(t);
                    }
                });
            }
        }
    }
}

impl std::ops::Index<usize> for LinkTable {
    type Output = Option<LinkSide>;
    fn index(&self, i: usize) -> &Option<LinkSide> {
        &self.0.as_ref().expect("a link table with slots").sides[i]
    }
}

impl std::ops::IndexMut<usize> for LinkTable {
    fn index_mut(&mut self, i: usize) -> &mut Option<LinkSide> {
        &mut self.0.as_mut().expect("a link table with slots").sides[i]
    }
}

/// One open link, as the driver holds it.
pub(super) struct LinkSide {
    pub(super) io: LinkIo,
    /// Interest each side is registered with in the event driver's poller.
    pub(super) reg: [Option<Interest>; 2],
    /// Output was queued since the last `Drained`.
    pub(super) owe_drained: bool,
    /// The read side reached its end (reported, or awaited for a child's exit).
    pub(super) read_eof: bool,
    /// A child's output ended and how it ended is still awaited.
    pub(super) exit_wait: bool,
}

/// One descriptor a driver should watch for a link, and how.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinkWatch {
    /// `1 + 2 * slot + side`: never 0, which is the client socket.
    pub sub: usize,
    pub fd: RawFd,
    pub want: Interest,
    /// The interest it is registered with (event driver), `None` if not registered.
    pub registered: Option<Interest>,
}

impl<T: Session> Conn<T> {
    /// Carry out what the session changed in its links: open the dialled ones, end the ones it
    /// is done with, write what it queued; then report what that produced (connected at once,
    /// drained, failed), which may change the links again.
    pub(super) fn sync_links(&mut self, now: Instant) {
        if self.syncing || self.is_closed() {
            return;
        }
        self.syncing = true;
        let mut events: Vec<(usize, LinkEvent)> = Vec::new();
        while let Some(links) = self.session.links() {
            if links.is_empty() {
                break;
            }
            if self.links.len() < links.len() {
                self.links.resize_with(links.len(), || None);
            }
            for i in 0..links.len() {
                match links.driver_step(i) {
                    Some(DriverStep::Open(_)) if i >= MAX_LINKS => {
                        links.driver_gone(i);
                        let why = format!("more than {MAX_LINKS} links on one connection");
                        events.push((i, LinkEvent::Failed(LinkError::Connect(why))));
                        continue;
                    }
                    Some(DriverStep::Open(dial)) => {
                        match link::open(dial, self.scope, self.links.gone()) {
                            Ok(o) => {
                                self.links[i] = Some(LinkSide {
                                    io: o.io,
                                    // A kept connection from the worker's pool is still watched.
                                    reg: [o.registered.then_some(READ_ONLY), None],
                                    owe_drained: false,
                                    read_eof: false,
                                    exit_wait: false,
                                });
                                if o.ready {
                                    events.push((i, LinkEvent::Connected { reused: o.reused }));
                                }
                            }
                            Err(e) => {
                                links.driver_gone(i);
                                events.push((i, LinkEvent::Failed(e)));
                                continue;
                            }
                        }
                    }
                    Some(DriverStep::End { released, keep }) => {
                        if let Some(side) = self.links[i].take() {
                            Self::end_side(&mut self.links, self.scope, side, released, keep, now);
                        }
                        continue;
                    }
                    None => {}
                }
                let Some(side) = self.links[i].as_mut() else {
                    continue;
                };
                if side.io.connecting() || !links.is_live(i) {
                    continue;
                }
                let finishing = links.finishing(i);
                let (out, _) = links.buffers(i);
                if !out.is_empty() || side.io.tls_pending() {
                    side.owe_drained |= !out.is_empty();
                    if let Err(e) = side.io.write(out) {
                        let side = self.links[i].take().expect("checked above");
                        Self::end_side(&mut self.links, self.scope, side, false, false, now);
                        links.driver_gone(i);
                        events.push((i, LinkEvent::Failed(LinkError::Io(e.to_string()))));
                        continue;
                    }
                }
                if out.is_empty() {
                    if finishing {
                        side.io.finish_writing();
                    }
                    if side.owe_drained {
                        side.owe_drained = false;
                        events.push((i, LinkEvent::Drained));
                    }
                }
            }
            if events.is_empty() {
                links.shrink_if_idle();
                if self.links.iter().all(Option::is_none) {
                    self.links.shrink();
                }
                break;
            }
            for (i, ev) in events.drain(..) {
                if self.state != State::Open {
                    break;
                }
                let was_empty = self.out.is_empty();
                let next = self.session.on_link(Links::id(i), ev, &mut self.out, now);
                self.apply(next, was_empty, now);
                self.resume_held_input(now);
            }
            if self.state != State::Open {
                break;
            }
        }
        self.syncing = false;
    }

    /// End a link's descriptors (see [`LinkIo::end`]) and note for the driver which it must
    /// forget and which went, still registered, to its worker's pool.
    fn end_side(
        table: &mut LinkTable,
        scope: PoolScope,
        side: LinkSide,
        released: bool,
        keep: bool,
        now: Instant,
    ) {
        let registered = [READ_SIDE, WRITE_SIDE].map(|s| side.reg[s].and(side.io.fd(s)));
        let read_only = side.reg == [Some(READ_ONLY), None];
        let t = table.table();
        let ended = side.io.end(released, keep, now, scope, read_only);
        for fd in registered.into_iter().flatten() {
            match ended {
                Ended::Pooled(p) if p == fd => t.pooled.push(fd),
                Ended::Closed => t.gone.push(fd),
                Ended::Pooled(_) | Ended::Open => t.closed.push(fd),
            }
        }
    }

    /// Report `ev` on link `i` to the session.
    fn deliver(&mut self, i: usize, ev: LinkEvent, now: Instant) {
        if self.state != State::Open {
            return;
        }
        let was_empty = self.out.is_empty();
        let next = self.session.on_link(Links::id(i), ev, &mut self.out, now);
        self.apply(next, was_empty, now);
        // A link that drained or connected may be what a paused session waited for.
        self.resume_held_input(now);
    }

    /// Link `i` failed: end it and tell the session.
    fn fail_link(&mut self, i: usize, e: LinkError, now: Instant) {
        if let Some(side) = self.links[i].take() {
            Self::end_side(&mut self.links, self.scope, side, false, false, now);
        }
        if let Some(links) = self.session.links() {
            links.driver_gone(i);
        }
        self.deliver(i, LinkEvent::Failed(e), now);
    }

    /// A link descriptor is ready (`sub` as in [`LinkWatch`]).
    pub fn link_ready(
        &mut self,
        sub: usize,
        now: Instant,
        readable: bool,
        writable: bool,
        hup: bool,
    ) {
        if sub == 0 || self.state != State::Open {
            return;
        }
        let (i, side) = ((sub - 1) / 2, (sub - 1) % 2);
        let Some(l) = self.links.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if l.io.connecting() {
            if writable || hup {
                match l.io.finish_connect() {
                    Ok(()) if l.io.connecting() => {}
                    Ok(()) => {
                        self.deliver(i, LinkEvent::Connected { reused: false }, now);
                        // Send what was queued while connecting.
                        self.sync_links(now);
                    }
                    Err(e) => self.fail_link(i, e, now),
                }
            }
            self.progress(now);
            return;
        }
        if side == READ_SIDE && (readable || hup) {
            self.read_link(i, now);
        }
        if writable || (side == WRITE_SIDE && hup) {
            // Writing is what sync does; a child that closed its stdin shows as an error there.
            if side == WRITE_SIDE && hup {
                if let Some(l) = self.links.get_mut(i).and_then(Option::as_mut) {
                    l.io.finish_writing();
                }
                if let Some(links) = self.session.links() {
                    links.buffers(i).0.clear();
                }
            }
            self.sync_links(now);
        }
        self.progress(now);
    }

    fn read_link(&mut self, i: usize, now: Instant) {
        for _ in 0..link::READ_BUDGET {
            if self.state != State::Open {
                return;
            }
            let Some(links) = self.session.links() else {
                return;
            };
            let Some(l) = self.links.get_mut(i).and_then(Option::as_mut) else {
                return;
            };
            if l.read_eof || !links.wants_input(i) {
                return;
            }
            let (_, input) = links.buffers(i);
            match l.io.read(input) {
                Ok(link::Got::Data { drained }) => {
                    self.deliver(i, LinkEvent::Data, now);
                    if drained {
                        return;
                    }
                }
                Ok(link::Got::WouldBlock) => return,
                Ok(link::Got::Eof) => {
                    l.read_eof = true;
                    if matches!(l.io, LinkIo::Child { .. }) {
                        // Its registration goes with the stdout closed here.
                        let forget = l.reg[READ_SIDE].take().and(l.io.fd(READ_SIDE));
                        l.io.output_ended(now);
                        l.exit_wait = true;
                        if let Some(fd) = forget {
                            self.links.gone().push(fd);
                        }
                        self.child_ending(i, now);
                    } else {
                        self.deliver(i, LinkEvent::Eof, now);
                    }
                    return;
                }
                Err(e) => {
                    self.fail_link(i, LinkError::Io(e.to_string()), now);
                    return;
                }
            }
        }
    }

    /// A child's output ended: once it is known how the child ended, report `Eof` (or the
    /// signal that killed it).
    pub(super) fn child_ending(&mut self, i: usize, now: Instant) {
        let Some(l) = self.links.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        match l.io.child_outcome(now) {
            None => {}
            Some(Ok(())) => {
                l.exit_wait = false;
                self.deliver(i, LinkEvent::Eof, now);
            }
            Some(Err(e)) => {
                l.exit_wait = false;
                self.fail_link(i, e, now);
            }
        }
    }

    /// The link descriptors to watch and how; `sub` names each in [`link_ready`]. `f` returns
    /// the interest the descriptor is registered with afterwards (the event driver's poller;
    /// the blocking driver registers nothing and returns what it was given), or an error that
    /// stops the walk.
    pub fn link_watches<E>(
        &mut self,
        mut f: impl FnMut(LinkWatch) -> Result<Option<Interest>, E>,
    ) -> Result<(), E> {
        if self.links.is_empty() {
            return Ok(());
        }
        let open = self.state == State::Open;
        let Some(links) = self.session.links() else {
            return Ok(());
        };
        for i in 0..self.links.len() {
            let Some(l) = self.links.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            for side in [READ_SIDE, WRITE_SIDE] {
                let Some(fd) = l.io.fd(side) else { continue };
                let queued = !links.buffers(i).0.is_empty();
                let want = if !open {
                    Interest::default()
                } else if l.io.connecting() {
                    Interest {
                        read: false,
                        write: true,
                    }
                } else if matches!(l.io, LinkIo::Child { .. }) {
                    Interest {
                        read: side == READ_SIDE && !l.read_eof && links.wants_input(i),
                        write: side == WRITE_SIDE && queued,
                    }
                } else {
                    Interest {
                        read: !l.read_eof && links.wants_input(i),
                        write: l.io.wants_write(queued),
                    }
                };
                l.reg[side] = f(LinkWatch {
                    sub: 1 + 2 * i + side,
                    fd,
                    want,
                    registered: l.reg[side],
                })?;
            }
        }
        Ok(())
    }

    /// Hand `f` each link descriptor that went, still registered, to the worker's pool since
    /// the last call.
    pub fn drain_pooled_fds(&mut self, mut f: impl FnMut(RawFd)) {
        if let Some(t) = self.links.0.as_mut() {
            for fd in t.pooled.drain(..) {
                f(fd);
            }
        }
        if self.links.iter().all(Option::is_none) {
            self.links.shrink();
        }
    }

    /// Hand `f` each link descriptor ended since the last call, for the poller to forget, and
    /// whether it is still open (see [`LinkTableInner::closed`] and [`LinkTableInner::gone`]).
    pub fn drain_closed_fds(&mut self, mut f: impl FnMut(RawFd, bool)) {
        if let Some(t) = self.links.0.as_mut() {
            for fd in t.closed.drain(..) {
                f(fd, true);
            }
            for fd in t.gone.drain(..) {
                f(fd, false);
            }
        }
        if self.links.iter().all(Option::is_none) {
            self.links.shrink();
        }
    }

    /// Every link descriptor still registered (the connection is going: forget them all).
    pub fn registered_link_fds(&self) -> Vec<RawFd> {
        let mut v = Vec::new();
        for l in self.links.iter().flatten() {
            for s in [READ_SIDE, WRITE_SIDE] {
                if let (Some(_), Some(fd)) = (l.reg[s], l.io.fd(s)) {
                    v.push(fd);
                }
            }
        }
        v
    }

    /// Does this connection hold any link?
    pub fn has_links(&self) -> bool {
        !self.links.is_empty()
    }
}
