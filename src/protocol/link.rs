//! Outbound streams, the seam's second half: a session that needs another connection (a
//! proxied upstream, a CGI child's pipes, a Redis link) asks its driver for one through its
//! [`Links`], and the driver opens it non-blocking, watches it beside the client socket (the
//! same poller under event and prefork, the same `poll(2)` under threaded and iterative) and
//! reports what happens with [`Session::on_link`](super::Session::on_link).
//!
//! The session owns each link's buffers, exactly as the driver owns the client's: it queues
//! bytes to send in [`Links::out`] and consumes what arrived from [`Links::input`]. The driver
//! owns the descriptors. Between session calls the driver looks at the [`Links`] (they are
//! reached through [`Session::links`](super::Session::links)) and carries out what changed:
//! opens dialled links, writes queued output, ends the links the session closed or released.
//!
//! Invariants the driver keeps:
//! - events for a link come only between its [`Links::open`] and its [`Links::close`] or
//!   [`Links::release`], and exactly one of `Failed` or (`Eof` after all `Data`) ends a link
//!   the session did not end itself;
//! - reading from a link stops while the session leaves more than [`LINK_INPUT_MAX`] bytes
//!   unconsumed in its input or has [`Links::pause`]d it (backpressure to the upstream's TCP
//!   window or the child's pipe), and the client socket is not read while the session says
//!   [`reading_paused`](super::Session::reading_paused) (backpressure the other way);
//! - `Drained` follows each time a link's output empties after being non-empty;
//! - a link the session forgets is closed with its connection: sockets are closed, a child's
//!   whole process group is killed and reaped.
//!
//! Timeouts are the session's own (its `wake_at`): the driver sets none on a link.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::{Outbox, ReadBuf};

/// Unconsumed input a link may hold before the driver stops reading it.
pub const LINK_INPUT_MAX: usize = 256 * 1024;

/// TLS on an outbound TCP link (an `https://` upstream): the client configuration (whom to
/// trust) and the name the upstream's certificate must carry, also sent as SNI.
#[derive(Clone, Debug)]
pub struct UpstreamTls {
    pub config: std::sync::Arc<rustls::ClientConfig>,
    pub name: rustls_pki_types::ServerName<'static>,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && std::sync::Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for UpstreamTls {}

/// What to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dial {
    /// A TCP connection. `keep` idle connections to this address may be kept for reuse
    /// ([`Links::release`]); 0 keeps none, and `fresh` never takes a kept one. With `tls`,
    /// the driver speaks TLS over it and the session sees plaintext.
    Tcp {
        addr: SocketAddr,
        keep: usize,
        fresh: bool,
        tls: Option<UpstreamTls>,
    },
    /// A Unix-domain stream socket, kept and reused as a TCP one.
    Unix {
        path: PathBuf,
        keep: usize,
        fresh: bool,
    },
    /// A child process with exactly `env`, in `cwd`, in a process group of its own: the link
    /// writes its stdin and reads its stdout; its stderr is the server's.
    Spawn {
        program: PathBuf,
        cwd: PathBuf,
        env: Vec<(OsString, OsString)>,
    },
}

impl Dial {
    /// A copy that never takes a kept connection (the retry after a kept one failed).
    pub fn fresh(&self) -> Dial {
        let mut d = self.clone();
        match &mut d {
            Dial::Tcp { fresh, .. } | Dial::Unix { fresh, .. } => *fresh = true,
            Dial::Spawn { .. } => {}
        }
        d
    }
}

/// Names one link of one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinkId(pub(crate) u16);

impl LinkId {
    /// The link's slot (drivers index their own state by it).
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Why a link ended badly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// The connection could not be made (refused, unreachable, no descriptors left).
    Connect(String),
    /// The program could not be started.
    Spawn(String),
    /// The connection or pipe broke (reset, a child killed by a signal).
    Io(String),
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Connect(e) => write!(f, "cannot connect: {e}"),
            LinkError::Spawn(e) => write!(f, "cannot start: {e}"),
            LinkError::Io(e) => f.write_str(e),
        }
    }
}

/// What happened on a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// The link is ready to carry bytes. `reused`: it is a kept connection, which the upstream
    /// may have closed in the meantime (a request on it that meets `Eof` or `Failed` before
    /// any answer may be retried on a fresh one).
    Connected { reused: bool },
    /// Bytes arrived: they are in [`Links::input`].
    Data,
    /// Everything queued in [`Links::out`] has been written.
    Drained,
    /// The other side closed (the upstream's FIN, the child's stdout closed and the child
    /// ended normally). Input left in [`Links::input`] is the last.
    Eof,
    /// The link failed and is gone.
    Failed(LinkError),
}

#[derive(Debug)]
enum State {
    /// Asked for; the driver has not taken it yet.
    Dialing(Dial),
    /// The driver holds it.
    Live,
    /// The session is done with it; `keep`: nothing was left queued or unread, so it may be
    /// kept for reuse.
    Released { keep: bool },
    /// The session is done with it: close it (kill a child).
    Closed,
    /// The driver has ended it; the slot may be reused.
    Free,
}

struct Slot {
    state: State,
    out: Outbox,
    input: ReadBuf,
    paused: bool,
    /// Close the write side (a child's stdin, the socket's `SHUT_WR`) once `out` is sent.
    finish: bool,
}

impl Slot {
    /// Give the buffers back (to the thread's pools): an ended link keeps no memory.
    fn release_buffers(&mut self) {
        self.out = Outbox::new();
        self.input = ReadBuf::new();
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("state", &self.state)
            .field("out", &self.out.len())
            .field("input", &self.input.len())
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// Emptied slot vectors kept for the thread's next session that opens a link (a proxied
    /// request would otherwise allocate and free one each time).
    static SPARE_SLOTS: std::cell::RefCell<Vec<Vec<Slot>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Spare slot vectors kept per thread.
const SPARE_KEEP: usize = 32;

/// A session's outbound streams. Empty (and costing one pointer's worth) until one is opened.
#[derive(Debug, Default)]
pub struct Links {
    slots: Vec<Slot>,
}

/// What a driver must do about one link slot (see [`Links::driver_step`]).
#[derive(Debug)]
pub enum DriverStep {
    /// Open this.
    Open(Dial),
    /// End it. `released`: the session let it go after a complete exchange (a child may finish
    /// its work); `keep`: a connection may also go to the idle pool (nothing was left queued
    /// or unread).
    End { released: bool, keep: bool },
}

impl Links {
    pub fn new() -> Links {
        Links::default()
    }

    /// Ask for a link. Events for it follow through `on_link`; bytes may be queued at once.
    pub fn open(&mut self, dial: Dial) -> LinkId {
        let slot = Slot {
            state: State::Dialing(dial),
            out: Outbox::new(),
            input: ReadBuf::new(),
            paused: false,
            finish: false,
        };
        let i = match self
            .slots
            .iter()
            .position(|s| matches!(s.state, State::Free))
        {
            Some(i) => {
                self.slots[i] = slot;
                i
            }
            None => {
                if self.slots.capacity() == 0 {
                    if let Some(v) = SPARE_SLOTS
                        .try_with(|s| s.borrow_mut().pop())
                        .ok()
                        .flatten()
                    {
                        self.slots = v;
                    }
                }
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        LinkId(u16::try_from(i).expect("fewer than 65536 links per session"))
    }

    /// The bytes to send on `id`, in order.
    pub fn out(&mut self, id: LinkId) -> &mut Outbox {
        &mut self.slots[id.index()].out
    }

    /// What arrived on `id` and was not consumed yet.
    pub fn input(&mut self, id: LinkId) -> &mut ReadBuf {
        &mut self.slots[id.index()].input
    }

    /// Stop (or resume) reading from `id`.
    pub fn pause(&mut self, id: LinkId, paused: bool) {
        self.slots[id.index()].paused = paused;
    }

    /// Close the write side once the queued output is sent (the end of a CGI script's input).
    pub fn finish(&mut self, id: LinkId) {
        self.slots[id.index()].finish = true;
    }

    /// Done with `id`: close it now, dropping whatever is queued (a child is killed).
    pub fn close(&mut self, id: LinkId) {
        self.end(id, State::Closed);
    }

    /// Done with `id` after a complete exchange: the driver may keep the connection for the
    /// next [`Dial`] to the same place. Anything still queued or unread makes it a close.
    pub fn release(&mut self, id: LinkId) {
        let s = &self.slots[id.index()];
        let keep = s.out.is_empty() && s.input.is_empty() && !s.finish;
        self.end(id, State::Released { keep });
    }

    fn end(&mut self, id: LinkId, to: State) {
        let s = &mut self.slots[id.index()];
        if matches!(s.state, State::Free) {
            return;
        }
        s.state = match s.state {
            // Never handed to the driver: nothing to end.
            State::Dialing(_) => State::Free,
            _ => to,
        };
        s.release_buffers();
    }

    /// Bytes queued on `id` and not yet written.
    pub fn queued(&self, id: LinkId) -> usize {
        self.slots.get(id.index()).map_or(0, |s| s.out.len())
    }

    /// Is `id` still open (asked for, or held by the driver)?
    pub fn is_open(&self, id: LinkId) -> bool {
        self.slots
            .get(id.index())
            .is_some_and(|s| matches!(s.state, State::Dialing(_) | State::Live))
    }

    // Driver side.

    /// Slots to look at (some may be free).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// What the driver must do for slot `i` now, if anything. `Open` moves the slot to live;
    /// `End` frees it.
    pub fn driver_step(&mut self, i: usize) -> Option<DriverStep> {
        let s = self.slots.get_mut(i)?;
        match std::mem::replace(&mut s.state, State::Free) {
            State::Dialing(d) => {
                s.state = State::Live;
                Some(DriverStep::Open(d))
            }
            State::Released { keep } => Some(DriverStep::End {
                released: true,
                keep,
            }),
            State::Closed => Some(DriverStep::End {
                released: false,
                keep: false,
            }),
            other => {
                s.state = other;
                None
            }
        }
    }

    /// The driver ended slot `i` by itself (after reporting `Failed` or when the connection
    /// closes).
    pub fn driver_gone(&mut self, i: usize) {
        if let Some(s) = self.slots.get_mut(i) {
            s.state = State::Free;
            s.release_buffers();
        }
    }

    /// Every link is ended and seen to by the driver: keep no slots (an idle keep-alive
    /// client that once went through a proxy costs nothing for it).
    pub fn shrink_if_idle(&mut self) {
        if self.slots.iter().all(|s| matches!(s.state, State::Free)) {
            let mut v = std::mem::take(&mut self.slots);
            if v.capacity() > 0 && v.capacity() <= 4 {
                // Free slots hold no buffers: clearing them drops nothing of worth.
                v.clear();
                // During thread exit the spares may be gone: the vector is simply dropped.
                let _ = SPARE_SLOTS.try_with(|s| {
                    let mut s = s.borrow_mut();
                    if s.len() < SPARE_KEEP {
                        s.push(v);
                    }
                });
            }
        }
    }

    /// Is slot `i` held by the driver?
    pub fn is_live(&self, i: usize) -> bool {
        self.slots
            .get(i)
            .is_some_and(|s| matches!(s.state, State::Live))
    }

    /// Should the driver read slot `i` now?
    pub fn wants_input(&self, i: usize) -> bool {
        self.slots.get(i).is_some_and(|s| {
            matches!(s.state, State::Live) && !s.paused && s.input.len() < LINK_INPUT_MAX
        })
    }

    /// Slot `i`'s output and input buffers.
    pub fn buffers(&mut self, i: usize) -> (&mut Outbox, &mut ReadBuf) {
        let s = &mut self.slots[i];
        (&mut s.out, &mut s.input)
    }

    /// Has the session asked to close slot `i`'s write side?
    pub fn finishing(&self, i: usize) -> bool {
        self.slots.get(i).is_some_and(|s| s.finish)
    }

    /// The id of slot `i`.
    pub fn id(i: usize) -> LinkId {
        LinkId(u16::try_from(i).expect("fewer than 65536 links per session"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp() -> Dial {
        Dial::Tcp {
            addr: "127.0.0.1:1".parse().unwrap(),
            keep: 4,
            fresh: false,
            tls: None,
        }
    }

    #[test]
    fn a_link_goes_from_dialing_to_live_to_an_end_and_its_slot_is_reused() {
        let mut l = Links::new();
        let a = l.open(tcp());
        l.out(a).push_bytes(b"GET / HTTP/1.1\r\n\r\n");
        assert!(matches!(l.driver_step(0), Some(DriverStep::Open(_))));
        assert!(l.is_live(0) && l.wants_input(0));
        assert!(l.driver_step(0).is_none(), "nothing more to do");
        l.pause(a, true);
        assert!(!l.wants_input(0));
        // Output still queued: a release cannot keep the connection.
        l.release(a);
        assert!(matches!(
            l.driver_step(0),
            Some(DriverStep::End {
                released: true,
                keep: false
            })
        ));
        let b = l.open(tcp());
        assert_eq!(a, b, "the free slot is reused");
        assert!(matches!(l.driver_step(0), Some(DriverStep::Open(_))));
        l.release(b);
        assert!(matches!(
            l.driver_step(0),
            Some(DriverStep::End {
                released: true,
                keep: true
            })
        ));
        assert!(!l.is_open(b));
    }

    #[test]
    fn a_link_closed_before_the_driver_saw_it_needs_nothing_from_the_driver() {
        let mut l = Links::new();
        let a = l.open(tcp());
        l.close(a);
        assert!(l.driver_step(0).is_none());
        assert!(!l.is_open(a));
    }

    #[test]
    fn fresh_never_takes_a_kept_connection() {
        assert!(matches!(tcp().fresh(), Dial::Tcp { fresh: true, .. }));
    }
}
