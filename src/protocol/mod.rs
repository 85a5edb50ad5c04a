//! The seam: protocols are sans-I/O sessions, and this module is the whole contract between them
//! and the drivers in [`crate::model`].
//!
//! A [`Service`] is shared by every connection and makes one [`Session`] per connection. A session
//! is fed the bytes the driver read (a [`ReadBuf`] it consumes from), answers by queueing output in
//! an [`Outbox`] (byte chunks and file regions) and returns [`Next`]: keep going (and when to be
//! woken), close after the output is flushed, or close now. It never blocks, never sleeps, never
//! owns a socket. Cross-connection traffic (a chat broadcast) arrives through the [`Waker`] the
//! driver hands to [`Service::open`]: whoever has something for the session calls `wake()`, and the
//! driver calls [`Session::on_wake`] on the session's own thread.
//!
//! Invariants every session keeps, because drivers rely on them:
//! - input it cannot use yet stays in the `ReadBuf`, but it bounds what it leaves there (a session
//!   whose limit is crossed answers and closes; it never asks the driver to buffer without end);
//! - spurious calls are harmless (`on_wake` with nothing new, `on_timer` before the deadline);
//! - after returning `Next::Close` or `Next::CloseAfterFlush` it is not called again except
//!   `on_drained`/`on_timer` being skipped: the driver drops it.
//!
//! Drivers keep theirs: output leaves in order; reading pauses while the outbox holds more than
//! the high-water mark (so a pipelining or flooding peer cannot grow memory); `on_drained` is
//! called each time the outbox empties after being non-empty.

pub mod chat;
pub mod echo;
pub mod framing;
pub mod http;
pub mod link;
#[cfg(test)]
mod proptests;

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub use link::{Dial, LinkError, LinkEvent, LinkId, Links, UpstreamTls};

/// What a service needs from its driver beyond the seam itself; a driver that cannot give it
/// refuses the service at start with a sentence saying why (see `model::Model::honours`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// What the user calls the service, for that sentence ("the chat room").
    pub name: &'static str,
    /// Every client connected at once (members of a room talk to each other): one connection
    /// at a time will not do.
    pub concurrent: bool,
    /// One memory for every connection (a room's members and order): separate worker
    /// processes will not do.
    pub shared_memory: bool,
}

/// Where a connection comes from (or is accepted on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerAddr {
    Tcp(SocketAddr),
    /// A Unix-domain stream socket; peers of those are unnamed, so this holds the listening path.
    Unix(String),
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(a) => write!(f, "{a}"),
            PeerAddr::Unix(p) => write!(f, "unix:{p}"),
        }
    }
}

/// The connection every unit test's session is opened for: a client at 127.0.0.1:5000 on a
/// listener at 127.0.0.1:80 (one helper, so tests agree on what a log line or a prefix shows).
#[cfg(test)]
pub(crate) fn test_peer() -> Peer {
    Peer {
        remote: PeerAddr::Tcp(([127, 0, 0, 1], 5000).into()),
        local: PeerAddr::Tcp(([127, 0, 0, 1], 80).into()),
    }
}

/// Test inputs kept as a corpus file (`include_str!`): one case a line, with `\r`, `\n` and
/// `\\` escapes; `#` starts a comment line; `\e` alone is the empty input.
#[cfg(test)]
pub(crate) fn test_cases(corpus: &str) -> Vec<Vec<u8>> {
    let mut cases = Vec::new();
    for line in corpus.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut case = Vec::new();
        let mut bytes = line.bytes();
        while let Some(b) = bytes.next() {
            if b != b'\\' {
                case.push(b);
                continue;
            }
            match bytes.next() {
                Some(b'r') => case.push(b'\r'),
                Some(b'n') => case.push(b'\n'),
                Some(b'\\') => case.push(b'\\'),
                Some(b'e') => {}
                other => panic!(
                    "unknown escape \\{:?} in a test corpus",
                    other.map(char::from)
                ),
            }
        }
        cases.push(case);
    }
    cases
}

/// The two ends of one accepted connection.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The client: `ip:port` for TCP.
    pub remote: PeerAddr,
    /// The address the connection was accepted on.
    pub local: PeerAddr,
}

impl Peer {
    /// The client's IP address as text (`"127.0.0.1"`), or `"unix"` for Unix sockets.
    pub fn ip(&self) -> String {
        self.ip_addr()
            .map_or_else(|| "unix".to_string(), |ip| ip.to_string())
    }

    /// Was this connection accepted on one of `listeners` (addresses as bound; a wildcard
    /// address stands for its port on every address of the machine)?
    pub fn accepted_on(&self, listeners: &[std::net::SocketAddr]) -> bool {
        let PeerAddr::Tcp(local) = &self.local else {
            return false;
        };
        listeners
            .iter()
            .any(|l| l.port() == local.port() && (l.ip().is_unspecified() || l.ip() == local.ip()))
    }

    /// The client's IP address; `None` for Unix sockets.
    pub fn ip_addr(&self) -> Option<std::net::IpAddr> {
        match &self.remote {
            PeerAddr::Tcp(a) => Some(a.ip()),
            PeerAddr::Unix(_) => None,
        }
    }
}

/// A protocol: shared by all connections (and all worker threads), makes one session each.
pub trait Service: Send + Sync + 'static {
    type Session: Session;

    /// A connection was accepted. `waker` wakes this session on its driver's thread; keep it
    /// only if something outside the session (a hub, outbound work) will need to.
    fn open(&self, peer: &Peer, waker: Waker) -> Self::Session;

    /// What this service needs that not every driver gives (nothing, by default).
    fn needs(&self) -> Needs {
        Needs::default()
    }

    /// The server is shutting down: called once, before the drivers call
    /// [`Session::on_shutdown`] on each open session.
    fn on_shutdown(&self) {}

    /// A driver could not accept a connection because the process is out of descriptors:
    /// close any kept only for speed (caches), or nothing may ever free one. Called from the
    /// accepting thread, possibly from several at once.
    fn on_out_of_descriptors(&self) {}

    /// Serving has ended in this process (every session is gone): finish background work that
    /// must outlive the sessions, such as posting their last words elsewhere, before the
    /// process exits. Called once per process, a prefork worker included.
    fn on_stopped(&self) {}
}

/// A datagram protocol (RFC 862 over UDP): each datagram in gets at most one datagram out, so
/// there is no session; the UDP driver (`model::udp`) calls it for every datagram.
pub trait DatagramService: Send + Sync + 'static {
    /// Answer `datagram` from `from` by appending to `out`; leave `out` empty for no answer
    /// (the service says why in its own log line).
    fn answer(&self, from: &PeerAddr, datagram: &[u8], out: &mut Vec<u8>);
}

/// What the driver does after a session call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Keep the connection. If `wake_at` is set and nothing else happens first, the driver calls
    /// [`Session::on_timer`] at (or soon after) that instant.
    Continue { wake_at: Option<Instant> },
    /// Send everything queued, then shut down the write side, discard input briefly (a lingering
    /// close, so the peer reads the answer instead of a reset), and close.
    CloseAfterFlush,
    /// The peer has sent its last message and the session read all of it (an HTTP request
    /// with `Connection: close` and nothing behind it): send everything queued, then close
    /// without the lingering read, as nginx does. It saves a `shutdown`, a `recv` and a trip
    /// through the poller per connection. The driver still lingers if more input may be
    /// waiting unread in the socket, since closing over unread input sends a reset that can
    /// destroy the answer in flight.
    CloseAfterReply,
    /// Close at once; queued output is dropped.
    Close,
}

impl Next {
    /// Keep going with no deadline.
    pub const CONTINUE: Next = Next::Continue { wake_at: None };

    /// Keep going; wake at `at`.
    pub fn wake_at(at: Instant) -> Next {
        Next::Continue { wake_at: Some(at) }
    }

    /// True for the closing variants.
    pub fn is_close(&self) -> bool {
        !matches!(self, Next::Continue { .. })
    }
}

/// One connection's protocol state. Never blocks, never touches a socket.
pub trait Session: Send + 'static {
    /// The connection was accepted and nothing has been read yet: queue a greeting, or say
    /// when to be woken if the peer never speaks (a head timeout must run from the accept,
    /// or a client that connects and stays silent would hold its connection for ever).
    fn on_open(&mut self, _out: &mut Outbox, _now: Instant) -> Next {
        Next::CONTINUE
    }

    /// The TLS handshake chose `protocol` by ALPN (RFC 7301): called once, before the first
    /// [`on_input`](Self::on_input), on TLS connections where the client and the server
    /// agreed on one. A service offering several (`h2`, `http/1.1`) learns which to speak.
    fn on_alpn(&mut self, _protocol: &[u8], _out: &mut Outbox, _now: Instant) -> Next {
        Next::CONTINUE
    }

    /// Bytes arrived (they are appended to `input`); consume what can be used, queue output.
    fn on_input(&mut self, input: &mut ReadBuf, out: &mut Outbox, now: Instant) -> Next;

    /// True while the session wants no more input (a chat sender held back for a slower
    /// reader): the driver stops reading from the socket, as it does while the outbox is over
    /// its high-water mark, and asks again after every call. A session that pauses must end
    /// the pause itself, from a wake or a timer.
    fn reading_paused(&self) -> bool {
        false
    }

    /// May the peer still be sending part of what the session is reading (a request head or
    /// body cut across segments)? While it may, a read that queues no answer makes the driver
    /// ACK at once, so a peer holding its next bytes for that ACK (Nagle) is not left waiting
    /// out the delayed-ACK timer; once the session has all it needs and waits on something
    /// else (an upstream), the ACK can ride on the answer and the system call is saved.
    fn mid_message(&self) -> bool {
        true
    }

    /// The peer half-closed its side; `input` holds whatever it left unconsumed.
    fn on_eof(&mut self, input: &mut ReadBuf, out: &mut Outbox, now: Instant) -> Next;

    /// The outbox drained after being non-empty: stream the next piece of a large body.
    fn on_drained(&mut self, _out: &mut Outbox, _now: Instant) -> Next {
        Next::CONTINUE
    }

    /// A deadline asked for in [`Next::Continue`] has passed (maybe spuriously early: check).
    fn on_timer(&mut self, _out: &mut Outbox, _now: Instant) -> Next {
        Next::CONTINUE
    }

    /// Someone called this session's [`Waker`]; look at what arrived (maybe nothing).
    fn on_wake(&mut self, _out: &mut Outbox, _now: Instant) -> Next {
        Next::CONTINUE
    }

    /// The session's outbound streams ([`link`]), if it has any: the driver looks at them after
    /// every call and carries out what changed. `None` (the default) for sessions that never
    /// open one.
    fn links(&mut self) -> Option<&mut Links> {
        None
    }

    /// Something happened on one of the session's links.
    fn on_link(&mut self, _id: LinkId, _ev: LinkEvent, _out: &mut Outbox, _now: Instant) -> Next {
        Next::CONTINUE
    }

    /// The server is shutting down gracefully. Finish what is in flight and say so: return a
    /// closing `Next` when the connection can go now, or `Continue` to be given until the grace
    /// period ends (after which the driver closes regardless).
    fn on_shutdown(&mut self, _out: &mut Outbox, _now: Instant) -> Next {
        Next::CloseAfterFlush
    }
}

/// Wakes one session on its driver's thread. Cheap to clone; calling it after the connection
/// closed is harmless.
#[derive(Clone)]
pub struct Waker(Arc<dyn Fn() + Send + Sync>);

impl Waker {
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> Waker {
        Waker(Arc::new(f))
    }

    /// A waker that does nothing, for sessions driven by hand (tests, benches).
    pub fn noop() -> Waker {
        Waker::new(|| {})
    }

    pub fn wake(&self) {
        (self.0)()
    }
}

impl fmt::Debug for Waker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Waker")
    }
}

/// The driver's per-connection input buffer: read into the tail, parse by borrowing the filled
/// part, consume by advancing. The session decides how much may accumulate (its limits); the
/// buffer only grows when a session leaves bytes unconsumed.
///
/// INVARIANT: `start <= end <= buf.len()`; `buf[start..end]` is the unconsumed input and
/// `buf[end..]` is initialised spare room, so reading into it needs no zeroing.
#[derive(Default)]
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    pub fn new() -> ReadBuf {
        ReadBuf::default()
    }

    /// A buffer holding `bytes`, for tests and for sessions driven by hand.
    pub fn from_bytes(bytes: &[u8]) -> ReadBuf {
        ReadBuf {
            buf: bytes.to_vec(),
            start: 0,
            end: bytes.len(),
        }
    }

    /// The bytes received and not yet consumed.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The same bytes, to rewrite in place (a session normalising what it is about to parse).
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Mark the first `n` bytes of [`data`](Self::data) as used.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consumed more than was buffered");
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drop everything buffered.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Append bytes (the drivers' slow path, and tests).
    pub fn extend(&mut self, bytes: &[u8]) {
        let spare = self.spare(bytes.len());
        spare[..bytes.len()].copy_from_slice(bytes);
        self.commit(bytes.len());
    }

    /// Driver side: a writable tail of at least `min` bytes to read into; follow with
    /// [`commit`](Self::commit).
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        if self.buf.capacity() == 0 {
            if let Some(b) = pool::take_read() {
                self.buf = b;
            }
        }
        if self.buf.len() - self.end < min {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < min {
                self.buf.resize(self.end + min, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Driver side: `n` bytes were read into the slice [`spare`](Self::spare) returned.
    pub fn commit(&mut self, n: usize) {
        assert!(
            self.end + n <= self.buf.len(),
            "committed past the spare room"
        );
        self.end += n;
    }

    /// Release memory held by an empty buffer (idle keep-alive connections keep nothing). The
    /// buffer goes to this thread's pool, so the next read on any connection reuses it instead
    /// of allocating (and zeroing) a new one.
    pub fn shrink_if_empty(&mut self) {
        if self.is_empty() && self.buf.capacity() > 0 {
            pool::give_read(std::mem::take(&mut self.buf));
            self.start = 0;
            self.end = 0;
        }
    }

    /// Bytes of memory the buffer holds.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        if self.buf.capacity() > 0 {
            pool::give_read(std::mem::take(&mut self.buf));
        }
    }
}

/// Per-thread pools of idle I/O buffers. Connections hand their buffers back when they go idle
/// (and when they close) and take one when they next need it, so an idle connection holds no
/// buffer memory and a busy one allocates nothing per request. Each event worker is one thread,
/// so this is a per-worker free list without locks. Bounded in count and buffer size.
mod pool {
    use std::cell::RefCell;
    use std::collections::VecDeque;

    use super::Chunk;

    /// Buffers of each kind kept per thread.
    const KEEP: usize = 32;
    /// Larger buffers go back to the allocator.
    const BUF_MAX: usize = 64 * 1024;

    thread_local! {
        /// Read buffers keep their length: their bytes are initialised spare room.
        static READ: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
        /// Output buffers, cleared.
        static WRITE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
        /// Empty chunk queues.
        static QUEUES: RefCell<Vec<VecDeque<Chunk>>> = const { RefCell::new(Vec::new()) };
    }

    fn take<T>(pool: &'static std::thread::LocalKey<RefCell<Vec<T>>>) -> Option<T> {
        pool.try_with(|p| p.borrow_mut().pop()).ok().flatten()
    }

    fn give<T>(pool: &'static std::thread::LocalKey<RefCell<Vec<T>>>, item: T) {
        // During thread exit the pool may be gone: then the item is simply dropped.
        let _ = pool.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < KEEP {
                p.push(item);
            }
        });
    }

    pub fn take_read() -> Option<Vec<u8>> {
        take(&READ)
    }

    pub fn give_read(buf: Vec<u8>) {
        // Small buffers (a test's, a stash's) would only be grown again: not worth keeping.
        if (4096..=BUF_MAX).contains(&buf.capacity()) {
            give(&READ, buf);
        }
    }

    pub fn take_write() -> Option<Vec<u8>> {
        take(&WRITE)
    }

    pub fn give_write(mut buf: Vec<u8>) {
        if buf.capacity() > 0 && buf.capacity() <= BUF_MAX {
            buf.clear();
            give(&WRITE, buf);
        }
    }

    pub fn take_queue() -> Option<VecDeque<Chunk>> {
        take(&QUEUES)
    }

    pub fn give_queue(q: VecDeque<Chunk>) {
        if q.is_empty() && q.capacity() > 0 && q.capacity() <= 64 {
            give(&QUEUES, q);
        }
    }
}

/// One piece of queued output.
pub enum Chunk {
    /// Owned bytes; `pos` bytes of them are already sent.
    Bytes { buf: Vec<u8>, pos: usize },
    /// Shared bytes (a cached file, a broadcast message); `pos` already sent.
    Shared { buf: bytes::Bytes, pos: usize },
    /// A region of a file, sent with `sendfile` where the driver can. A file that turns out
    /// shorter than `len` closes the connection (never a wrong length on the wire).
    File {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
}

impl Chunk {
    /// Bytes of this chunk still to send.
    pub fn remaining(&self) -> usize {
        match self {
            Chunk::Bytes { buf, pos } => buf.len() - pos,
            Chunk::Shared { buf, pos } => buf.len() - pos,
            Chunk::File { len, .. } => *len as usize,
        }
    }

    /// The unsent bytes of an in-memory chunk; `None` for a file region.
    pub fn unsent(&self) -> Option<&[u8]> {
        match self {
            Chunk::Bytes { buf, pos } => Some(&buf[*pos..]),
            Chunk::Shared { buf, pos } => Some(&buf[*pos..]),
            Chunk::File { .. } => None,
        }
    }
}

/// What the driver must send, in order. Small writes coalesce into one buffer, so a response
/// head and a small body leave in one `write`; the buffers are recycled, so a steady stream of
/// small responses allocates nothing.
#[derive(Default)]
pub struct Outbox {
    chunks: VecDeque<Chunk>,
    queued: usize,
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.clear();
        self.shrink_if_empty();
    }
}

impl Outbox {
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Bytes (and file bytes) queued and not yet sent.
    pub fn len(&self) -> usize {
        self.queued
    }

    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Build output in place in the tail buffer (`write!`, `extend_from_slice`); whatever `f`
    /// appends is queued.
    pub fn with_tail<R>(&mut self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        if !matches!(self.chunks.back(), Some(Chunk::Bytes { .. })) {
            let buf = pool::take_write().unwrap_or_default();
            self.push_chunk(Chunk::Bytes { buf, pos: 0 });
        }
        let Some(Chunk::Bytes { buf, .. }) = self.chunks.back_mut() else {
            unreachable!("a Bytes chunk was just ensured at the back")
        };
        let before = buf.len();
        let r = f(buf);
        let after = buf.len();
        self.queued = self.queued + after - before;
        if after == 0 {
            // Nothing was written: do not leave an empty chunk behind.
            if let Some(Chunk::Bytes { buf, .. }) = self.chunks.pop_back() {
                pool::give_write(buf);
            }
        }
        r
    }

    /// Queue bytes, coalescing with the previous in-memory chunk.
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.with_tail(|b| b.extend_from_slice(bytes));
    }

    /// Queue shared bytes without copying (large cached bodies, broadcast messages). Small ones
    /// are copied into the tail buffer instead, which keeps writes few.
    pub fn push_shared(&mut self, bytes: bytes::Bytes) {
        if bytes.is_empty() {
            return;
        }
        if bytes.len() <= 4096 {
            self.push_bytes(&bytes);
            return;
        }
        self.queued += bytes.len();
        self.push_chunk(Chunk::Shared { buf: bytes, pos: 0 });
    }

    /// Queue `len` bytes of `file` from `offset`.
    pub fn push_file(&mut self, file: Arc<File>, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        self.queued += len as usize;
        self.push_chunk(Chunk::File { file, offset, len });
    }

    /// Queue a chunk, taking a pooled queue rather than allocating one.
    fn push_chunk(&mut self, chunk: Chunk) {
        if self.chunks.capacity() == 0 {
            if let Some(q) = pool::take_queue() {
                self.chunks = q;
            }
        }
        self.chunks.push_back(chunk);
    }

    /// Release memory held by an empty outbox (idle keep-alive connections keep nothing): its
    /// buffers go to this thread's pool for the next response on any connection.
    pub fn shrink_if_empty(&mut self) {
        if !self.chunks.is_empty() {
            return;
        }
        if self.chunks.capacity() > 0 {
            pool::give_queue(std::mem::take(&mut self.chunks));
        }
    }

    /// Drop everything queued (a session that decided to close at once).
    pub fn clear(&mut self) {
        while let Some(c) = self.chunks.pop_front() {
            self.recycle(c);
        }
        self.queued = 0;
    }

    /// Driver side: the queued chunks, front first.
    pub fn chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.chunks.iter()
    }

    /// Driver side: the front chunk.
    pub fn front(&self) -> Option<&Chunk> {
        self.chunks.front()
    }

    /// Driver side: `n` bytes were sent from the front.
    pub fn advance(&mut self, mut n: usize) {
        assert!(n <= self.queued, "advanced past the queued output");
        self.queued -= n;
        while n > 0 {
            let front = self.chunks.front_mut().expect("queued bytes imply a chunk");
            let rem = front.remaining();
            if n < rem {
                match front {
                    Chunk::Bytes { pos, .. } | Chunk::Shared { pos, .. } => *pos += n,
                    Chunk::File { offset, len, .. } => {
                        *offset += n as u64;
                        *len -= n as u64;
                    }
                }
                return;
            }
            n -= rem;
            let done = self.chunks.pop_front().expect("checked above");
            self.recycle(done);
        }
    }

    fn recycle(&mut self, chunk: Chunk) {
        if let Chunk::Bytes { buf, .. } = chunk {
            pool::give_write(buf);
        }
    }

    /// Everything queued in memory, concatenated (tests and hand-driven sessions; file regions
    /// are read from their files).
    pub fn take_all(&mut self) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let mut v = Vec::with_capacity(self.queued);
        for c in &self.chunks {
            match c {
                Chunk::File { file, offset, len } => {
                    let start = v.len();
                    v.resize(start + *len as usize, 0);
                    let mut got = 0;
                    while got < *len as usize {
                        match file.read_at(&mut v[start + got..], offset + got as u64) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got += n,
                        }
                    }
                    v.truncate(start + got);
                }
                other => v.extend_from_slice(other.unsent().expect("in-memory chunk")),
            }
        }
        self.clear();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_writes_coalesce_into_one_chunk() {
        let mut out = Outbox::new();
        out.push_bytes(b"HTTP/1.1 200 OK\r\n");
        out.push_bytes(b"\r\n");
        out.push_shared(bytes::Bytes::from_static(b"hello"));
        assert_eq!(out.chunks().count(), 1);
        assert_eq!(out.len(), 24);
        out.advance(20);
        assert_eq!(out.front().unwrap().unsent().unwrap(), b"ello");
        out.advance(4);
        assert!(out.is_empty());
        assert_eq!(out.chunks().count(), 0);
    }

    #[test]
    fn advance_crosses_chunk_boundaries_and_file_regions() {
        let mut out = Outbox::new();
        out.push_bytes(b"ab");
        out.push_shared(bytes::Bytes::from(vec![b'x'; 5000]));
        out.push_bytes(b"cd");
        assert_eq!(out.chunks().count(), 3);
        out.advance(5001);
        assert_eq!(out.front().unwrap().remaining(), 1);
        out.advance(1);
        assert_eq!(out.front().unwrap().unsent().unwrap(), b"cd");
    }

    #[test]
    fn read_buf_consumes_and_compacts() {
        let mut rb = ReadBuf::new();
        rb.extend(b"hello world");
        rb.consume(6);
        assert_eq!(rb.data(), b"world");
        let spare = rb.spare(4);
        spare[..2].copy_from_slice(b"!!");
        rb.commit(2);
        assert_eq!(rb.data(), b"world!!");
        rb.consume(7);
        assert!(rb.is_empty());
    }
}
