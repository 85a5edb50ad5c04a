//! The drivers' side of outbound streams ([`crate::protocol::link`]): opening a link without
//! blocking (a non-blocking `connect`, or a child with non-blocking pipes), moving its bytes,
//! the idle pool of kept upstream connections, and reaping children.
//!
//! Every descriptor here is non-blocking and watched by the connection's own poller (event,
//! prefork) or `poll(2)` (threaded, iterative); nothing here waits.
//!
//! - **Kept connections**: a link released after a complete exchange goes to a per-process
//!   pool, at most `keep` per address (the `Dial` says how many), and is given to the next dial
//!   of that address. A kept connection is checked before reuse (a peek that must find nothing
//!   to read: an upstream that closed it, or sent something unasked, loses it; a request that
//!   then meets a closed one is retried, see the HTTP session) and dropped after [`KEEP_IDLE`]
//!   unused, as nginx's upstream `keepalive_timeout`. An event worker keeps its own pool, its
//!   connections still registered with its poller, which reports an upstream's close at once;
//!   those are peeked at only after they sat a second ([`PoolScope::Worker`]). A TLS link
//!   ([`super::link_tls`]) is kept with its TLS session, in a pool of its own per name.
//! - **Children**: each runs in a process group of its own; a link closed before its child
//!   ended kills the group. Every child is waited for by the reaper, a thread the drivers start
//!   in the process that first needs it, so no zombie outlives its request by more than the
//!   reaper's tick, and a child that closed its output but goes on working is given
//!   [`CHILD_LINGER`] to finish, then killed with its group.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use super::link_tls::Stream;
use crate::protocol::{Dial, LinkError, Outbox, ReadBuf, UpstreamTls};

/// Bytes asked for per read from a link.
const READ_CHUNK: usize = 32 * 1024;
/// Reads per readiness report before other work gets a turn.
pub(crate) const READ_BUDGET: usize = 8;
/// A kept connection in a worker's pool idle at least this long is checked for a close before
/// reuse: the worker's poller reports a close, but one may still be on its way (an upstream
/// closes an idle connection after its own keep-alive timeout, seconds; one that closes at
/// once says `Connection: close`, RFC 9112 §9.6).
const RECHECK_AFTER: Duration = Duration::from_secs(1);
/// A kept upstream connection unused this long is closed (nginx: `keepalive_timeout 60s`).
pub(crate) const KEEP_IDLE: Duration = Duration::from_secs(60);
/// A child whose output ended but which has not exited is given this long, then killed.
pub(crate) const CHILD_LINGER: Duration = Duration::from_secs(30);
/// How long after its stdout closes a child is watched for how it ended (a child killed by a
/// signal broke its answer, however complete the output looked).
pub(crate) const EXIT_WAIT: Duration = Duration::from_millis(100);

/// Where a kept connection leads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum PoolKey {
    Tcp(SocketAddr),
    /// TLS to this address, for this name.
    Tls(SocketAddr, String),
    Unix(PathBuf),
}

/// One open link's descriptors.
pub(crate) enum LinkIo {
    Sock {
        fd: Stream,
        key: PoolKey,
        keep: usize,
        /// The non-blocking connect has not completed.
        connecting: bool,
        /// `SHUT_WR` sent.
        write_shut: bool,
    },
    Child {
        child: ChildGuard,
        stdin: Option<File>,
        stdout: Option<File>,
        /// Stdout ended at this instant; the exit status is awaited until `EXIT_WAIT` after.
        out_ended: Option<Instant>,
    },
}

/// The two descriptors a link may have: its socket or a child's stdout (`READ_SIDE`), and a
/// child's stdin (`WRITE_SIDE`).
pub(crate) const READ_SIDE: usize = 0;
pub(crate) const WRITE_SIDE: usize = 1;

/// What opening produced.
pub(crate) struct Opened {
    pub io: LinkIo,
    /// Usable at once (a kept connection, a child, a Unix socket that connected at once).
    pub ready: bool,
    pub reused: bool,
    /// A kept connection from this worker's pool, still registered with its poller for
    /// reading (so nothing needs registering again).
    pub registered: bool,
}

/// Which pool a connection's kept links go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PoolScope {
    /// The process's pool, shared by its threads (the threaded and iterative models, whose
    /// connections each have a thread and a poll(2) of their own): a kept connection is
    /// watched by nobody and checked when taken.
    Shared,
    /// This thread's pool (an event worker): a kept connection stays registered with the
    /// worker's poller, which notices an upstream that closes it, and goes to the worker's
    /// next request without a system call (nginx keeps its upstream connections so, per worker).
    Worker,
}

fn set_nonblocking(f: &File) -> io::Result<()> {
    // fcntl(O_NONBLOCK): socket2 does it for any descriptor, pipes included.
    SockRef::from(f).set_nonblocking(true)
}

/// Open `dial` without blocking.
/// `forget`: descriptors of kept connections that were closed here (expired), which a poller
/// may still have registered.
pub(crate) fn open(
    dial: Dial,
    scope: PoolScope,
    forget: &mut Vec<RawFd>,
) -> Result<Opened, LinkError> {
    match dial {
        Dial::Tcp {
            addr,
            keep,
            fresh,
            tls: None,
        } => connect(PoolKey::Tcp(addr), keep, fresh, scope, forget, None),
        Dial::Tcp {
            addr,
            keep,
            fresh,
            tls: Some(tls),
        } => {
            let key = PoolKey::Tls(addr, tls.name.to_str().into_owned());
            connect(key, keep, fresh, scope, forget, Some(&tls))
        }
        Dial::Unix { path, keep, fresh } => {
            connect(PoolKey::Unix(path), keep, fresh, scope, forget, None)
        }
        Dial::Spawn { program, cwd, env } => spawn(program, cwd, env),
    }
}

fn connect(
    key: PoolKey,
    keep: usize,
    fresh: bool,
    scope: PoolScope,
    forget: &mut Vec<RawFd>,
    tls: Option<&UpstreamTls>,
) -> Result<Opened, LinkError> {
    if !fresh && keep > 0 {
        let kept = match scope {
            PoolScope::Shared => pool_take(&key).map(|fd| (fd, false)),
            PoolScope::Worker => worker_take(&key, forget),
        };
        if let Some((fd, registered)) = kept {
            return Ok(Opened {
                io: LinkIo::Sock {
                    fd,
                    key,
                    keep,
                    connecting: false,
                    write_shut: false,
                },
                ready: true,
                reused: true,
                registered,
            });
        }
    }
    let err = |e: io::Error| LinkError::Connect(e.to_string());
    let (domain, addr) = match &key {
        PoolKey::Tcp(a) | PoolKey::Tls(a, _) => (Domain::for_address(*a), SockAddr::from(*a)),
        PoolKey::Unix(p) => (Domain::UNIX, SockAddr::unix(p).map_err(err)?),
    };
    // Non-blocking from socket(2) itself (SOCK_NONBLOCK): two fcntl calls fewer per new
    // upstream connection, which a proxy with more requests in flight than it keeps idle makes
    // for many requests.
    let sock = Socket::new(domain, Type::STREAM.cloexec().nonblocking(), None).map_err(err)?;
    if domain != Domain::UNIX {
        // Requests are written whole: no reason to hold their tail back for an ACK.
        let _ = sock.set_nodelay(true);
    }
    let ready = match sock.connect(&addr) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => false,
        // A Unix socket whose listener's backlog is full says EAGAIN: as refused.
        Err(e) => return Err(err(e)),
    };
    let fd = File::from(OwnedFd::from(sock));
    let fd = match tls {
        Some(t) => Stream::tls(fd, t).map_err(err)?,
        None => Stream::plain(fd),
    };
    Ok(Opened {
        io: LinkIo::Sock {
            fd,
            key,
            keep,
            connecting: !ready,
            write_shut: false,
        },
        ready,
        reused: false,
        registered: false,
    })
}

fn spawn(
    program: PathBuf,
    cwd: PathBuf,
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
) -> Result<Opened, LinkError> {
    let mut cmd = Command::new(&program);
    cmd.env_clear()
        .envs(env)
        .current_dir(&cwd)
        // Its own process group, so a kill reaches whatever the script started.
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // The script's complaints go to the server's stderr, as with most CGI hosts.
        .stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .map_err(|e| LinkError::Spawn(format!("{}: {e}", program.display())))?;
    let stdin = child.stdin.take().map(|s| File::from(OwnedFd::from(s)));
    let stdout = child.stdout.take().map(|s| File::from(OwnedFd::from(s)));
    let nb = stdin
        .as_ref()
        .map_or(Ok(()), set_nonblocking)
        .and(stdout.as_ref().map_or(Ok(()), set_nonblocking));
    if let Err(e) = nb {
        kill_group(&mut child);
        reap(child, None, Instant::now());
        return Err(LinkError::Spawn(format!("cannot set up its pipes: {e}")));
    }
    Ok(Opened {
        io: LinkIo::Child {
            child: ChildGuard(Some(child)),
            stdin,
            stdout,
            out_ended: None,
        },
        ready: true,
        reused: false,
        registered: false,
    })
}

/// What became of a link's descriptors when it ended ([`LinkIo::end`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Closed: epoll forgets a descriptor with its last close, and no system call is needed
    /// to tell it.
    Closed,
    /// This one went, still registered for reading, to the worker's pool.
    Pooled(RawFd),
    /// Still open elsewhere (a pool, the reaper): a poller must forget them before anything
    /// else.
    Open,
}

/// What a read from a link found.
pub(crate) enum Got {
    Data { drained: bool },
    Eof,
    WouldBlock,
}

impl LinkIo {
    /// The descriptor on `side`, if it is open.
    pub fn fd(&self, side: usize) -> Option<RawFd> {
        match (self, side) {
            (LinkIo::Sock { fd, .. }, READ_SIDE) => Some(fd.as_raw_fd()),
            (LinkIo::Child { stdout, .. }, READ_SIDE) => stdout.as_ref().map(|f| f.as_raw_fd()),
            (LinkIo::Child { stdin, .. }, WRITE_SIDE) => stdin.as_ref().map(|f| f.as_raw_fd()),
            _ => None,
        }
    }

    pub fn connecting(&self) -> bool {
        matches!(
            self,
            LinkIo::Sock {
                connecting: true,
                ..
            }
        )
    }

    /// The non-blocking connect reported writable: did it succeed? A socket still connecting
    /// is never reported writable (`tcp_poll` gives a SYN_SENT socket no `POLLOUT`), and the
    /// drivers pass on no report older than the descriptor's registration, so no pending
    /// error means connected.
    pub fn finish_connect(&mut self) -> Result<(), LinkError> {
        let LinkIo::Sock { fd, connecting, .. } = self else {
            return Ok(());
        };
        let sock = SockRef::from(&*fd);
        match sock.take_error() {
            Ok(None) => {
                *connecting = false;
                Ok(())
            }
            Ok(Some(e)) | Err(e) => Err(LinkError::Connect(e.to_string())),
        }
    }

    /// Under TLS: ciphertext the socket has not taken yet (it needs writing even when the
    /// session queued nothing).
    pub fn tls_pending(&self) -> bool {
        matches!(self, LinkIo::Sock { fd, .. } if fd.tls_pending())
    }

    /// Should the socket be watched for writability, `queued` saying whether output waits?
    pub fn wants_write(&self, queued: bool) -> bool {
        match self {
            LinkIo::Sock { fd, .. } => fd.wants_write(queued),
            LinkIo::Child { .. } => queued,
        }
    }

    /// One read into `input`.
    pub fn read(&mut self, input: &mut ReadBuf) -> io::Result<Got> {
        // Under TLS a short read does not say the socket is empty (a record may follow).
        let tls = matches!(self, LinkIo::Sock { fd, .. } if fd.is_tls());
        let f: &mut dyn Read = match self {
            LinkIo::Sock { fd, .. } => fd,
            LinkIo::Child {
                stdout: Some(f), ..
            } => f,
            LinkIo::Child { .. } => return Ok(Got::Eof),
        };
        loop {
            let spare = input.spare(READ_CHUNK);
            let asked = spare.len();
            match f.read(spare) {
                Ok(0) => return Ok(Got::Eof),
                Ok(n) => {
                    input.commit(n);
                    return Ok(Got::Data {
                        drained: n < asked && !tls,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Got::WouldBlock),
                Err(e) => return Err(e),
            }
        }
    }

    /// Write as much of `out` as the descriptor takes now. A child that stopped reading its
    /// input (EPIPE) is its own business: what it did not take is dropped.
    pub fn write(&mut self, out: &mut Outbox) -> io::Result<usize> {
        let is_child = matches!(self, LinkIo::Child { .. });
        let f: &mut dyn Write = match self {
            LinkIo::Sock { fd, .. } => {
                // TLS records of what was written before go first.
                fd.flush()?;
                fd
            }
            LinkIo::Child { stdin: Some(f), .. } => f,
            LinkIo::Child { .. } => {
                out.clear();
                return Ok(0);
            }
        };
        let mut wrote = 0;
        while !out.is_empty() {
            let mut bufs = [IoSlice::new(&[]); 16];
            let mut n = 0;
            for c in out.chunks().take(16) {
                if let Some(b) = c.unsent() {
                    bufs[n] = IoSlice::new(b);
                    n += 1;
                } else {
                    break;
                }
            }
            if n == 0 {
                // Links carry bytes only; a file region here is a session's mistake.
                return Err(io::Error::other("a file region was queued on a link"));
            }
            match f.write_vectored(&bufs[..n]) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(k) => {
                    out.advance(k);
                    wrote += k;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if is_child && e.kind() == io::ErrorKind::BrokenPipe => {
                    out.clear();
                    self.finish_writing();
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(wrote)
    }

    /// Close the write side: a child's stdin, or the socket's `SHUT_WR`.
    pub fn finish_writing(&mut self) {
        match self {
            LinkIo::Sock { fd, write_shut, .. } => {
                if !*write_shut {
                    *write_shut = true;
                    // Under TLS, close_notify first; the socket is shut only once it left.
                    if fd.finish() {
                        let _ = SockRef::from(&*fd).shutdown(std::net::Shutdown::Write);
                    }
                }
            }
            LinkIo::Child { stdin, .. } => *stdin = None,
        }
    }

    /// Stdout ended: close it, and note when, to learn how the child ended.
    pub fn output_ended(&mut self, now: Instant) {
        if let LinkIo::Child {
            stdout, out_ended, ..
        } = self
        {
            *stdout = None;
            out_ended.get_or_insert(now);
        }
    }

    /// For a child whose output ended: `None` while its ending is still awaited, `Some(Ok)`
    /// once the answer is complete (it exited normally, or it goes on working and is left to
    /// the reaper), `Some(Err)` if a signal killed it.
    pub fn child_outcome(&mut self, now: Instant) -> Option<Result<(), LinkError>> {
        let LinkIo::Child {
            child: ChildGuard(Some(child)),
            out_ended: Some(at),
            ..
        } = self
        else {
            return Some(Ok(()));
        };
        match child.try_wait() {
            Ok(Some(status)) => Some(match status.signal() {
                Some(sig) => Err(LinkError::Io(format!(
                    "the program was killed by signal {sig}"
                ))),
                None => {
                    if !status.success() {
                        tracing::debug!("a CGI program exited: {status}");
                    }
                    Ok(())
                }
            }),
            Ok(None) if now < *at + EXIT_WAIT => None,
            _ => Some(Ok(())),
        }
    }

    /// When [`child_outcome`](Self::child_outcome) should be asked again.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            LinkIo::Child {
                out_ended: Some(at),
                child: ChildGuard(Some(_)),
                ..
            } => Some((*at + Duration::from_millis(2)).min(*at + EXIT_WAIT)),
            _ => None,
        }
    }

    /// End the link: keep a connection for reuse (`keep`), or close it; a child the session
    /// `released` (its answer complete) or whose output ended is left to finish under the
    /// reaper, any other is killed with its group.
    ///
    /// Under [`PoolScope::Worker`], `registered` says the socket is registered with the
    /// worker's poller for reading only; it then stays so in the pool, and its descriptor is
    /// returned for the worker to note as pooled.
    pub fn end(
        self,
        released: bool,
        keep: bool,
        now: Instant,
        scope: PoolScope,
        registered: bool,
    ) -> Ended {
        match self {
            LinkIo::Sock {
                fd,
                key,
                keep: cap,
                connecting,
                write_shut,
            } => {
                if keep && cap > 0 && !connecting && !write_shut {
                    match scope {
                        PoolScope::Shared => pool_put(key, fd, cap, now),
                        PoolScope::Worker => {
                            let raw = fd.as_raw_fd();
                            worker_put(key, fd, cap, registered, now);
                            if registered {
                                return Ended::Pooled(raw);
                            }
                        }
                    }
                    return Ended::Open;
                }
                Ended::Closed
            }
            LinkIo::Child {
                mut child,
                stdout,
                out_ended,
                ..
            } => {
                let Some(mut c) = child.0.take() else {
                    return Ended::Closed;
                };
                if out_ended.is_none() && !released {
                    kill_group(&mut c);
                }
                // The reaper drains what the child still writes: its output stays open there.
                let open = stdout.is_some();
                reap(c, stdout, now + CHILD_LINGER);
                if open {
                    Ended::Open
                } else {
                    Ended::Closed
                }
            }
        }
    }
}

/// A child that is killed (with its group) and reaped if its link is dropped without
/// [`LinkIo::end`] (the connection closed under it).
pub(crate) struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            kill_group(&mut c);
            reap(c, None, Instant::now());
        }
    }
}

fn kill_group(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // A negative pid names the process group; the child made it, so it is never ours.
        let _ = crate::sys::kill(-pid, libc::SIGKILL);
    }
    let _ = child.kill();
}

// The idle pool.

struct Kept {
    fd: Stream,
    since: Instant,
    /// Registered with this worker's poller (worker pools only).
    registered: bool,
}

fn pool() -> &'static Mutex<HashMap<PoolKey, Vec<Kept>>> {
    static POOL: OnceLock<Mutex<HashMap<PoolKey, Vec<Kept>>>> = OnceLock::new();
    POOL.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A kept connection to `key` that still looks usable: the newest first (the least likely to
/// have been closed by the upstream's own idle timeout).
fn pool_take(key: &PoolKey) -> Option<Stream> {
    let now = Instant::now();
    loop {
        let kept = {
            let mut p = pool().lock().unwrap_or_else(|e| e.into_inner());
            let list = p.get_mut(key)?;
            list.retain(|k| now.duration_since(k.since) < KEEP_IDLE);
            list.pop()?
        };
        // Nobody watched it while it was kept: look whether the upstream closed it since.
        if idle_and_open(&kept.fd) {
            return Some(kept.fd);
        }
    }
}

/// A kept connection must have nothing to read: EOF means the upstream closed it, and bytes
/// nobody asked for would be taken for the next answer.
fn idle_and_open(fd: &Stream) -> bool {
    let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    match SockRef::from(fd).peek(&mut b) {
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        Ok(_) => false,
    }
}

fn pool_put(key: PoolKey, fd: Stream, cap: usize, now: Instant) {
    let mut p = pool().lock().unwrap_or_else(|e| e.into_inner());
    let list = p.entry(key).or_default();
    list.retain(|k| now.duration_since(k.since) < KEEP_IDLE);
    if list.len() >= cap {
        // The oldest goes: it is the likeliest to be closed by the upstream soon.
        list.remove(0);
    }
    list.push(Kept {
        fd,
        since: now,
        registered: false,
    });
}

thread_local! {
    /// An event worker's own kept connections ([`PoolScope::Worker`]), a list per upstream
    /// address. A worker talks to a handful of addresses, so a walk comparing them finds the
    /// list in fewer instructions than hashing the key would, on every proxied request.
    static WORKER_POOL: std::cell::RefCell<Vec<WorkerList>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// An event worker's kept connections to one upstream, newest last, and how many may stay
/// idle (`--upstream-keepalive`). Within one round of the worker's loop the list may hold
/// more: answers that complete early in a round free connections for requests later in it,
/// which would otherwise open new ones while the surplus is closed; [`worker_trim`] closes
/// the surplus before the worker waits again.
struct WorkerList {
    key: PoolKey,
    cap: usize,
    kept: Vec<Kept>,
}

/// Close `k`, telling `forget` if a poller has it.
fn drop_kept(k: Kept, forget: &mut Vec<RawFd>) {
    if k.registered {
        forget.push(k.fd.as_raw_fd());
    }
}

fn worker_take(key: &PoolKey, forget: &mut Vec<RawFd>) -> Option<(Stream, bool)> {
    let now = Instant::now();
    WORKER_POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = &mut p.iter_mut().find(|l| l.key == *key)?.kept;
        while let Some(k) = list.pop() {
            if now.duration_since(k.since) >= KEEP_IDLE {
                drop_kept(k, forget);
                continue;
            }
            // The poller reports a registered one that the upstream closed; one that sat a
            // while may have a close still on its way, as in the shared pool.
            if now.duration_since(k.since) < RECHECK_AFTER || idle_and_open(&k.fd) {
                return Some((k.fd, k.registered));
            }
            drop_kept(k, forget);
        }
        None
    })
}

fn worker_put(key: PoolKey, fd: Stream, cap: usize, registered: bool, now: Instant) {
    WORKER_POOL.with(|p| {
        let mut p = p.borrow_mut();
        let i = match p.iter().position(|l| l.key == key) {
            Some(i) => i,
            None => {
                p.push(WorkerList {
                    key,
                    cap,
                    kept: Vec::new(),
                });
                p.len() - 1
            }
        };
        p[i].cap = cap;
        p[i].kept.push(Kept {
            fd,
            since: now,
            registered,
        });
    });
}

/// Close the kept connections past each list's cap, the oldest first (the likeliest to be
/// closed by the upstream soon), telling `forget` which a poller has. The event worker calls
/// it once a round, before it waits.
pub(crate) fn worker_trim(forget: &mut Vec<RawFd>) {
    WORKER_POOL.with(|p| {
        for l in p.borrow_mut().iter_mut() {
            let surplus = l.kept.len().saturating_sub(l.cap);
            for k in l.kept.drain(..surplus) {
                drop_kept(k, forget);
            }
        }
    });
}

/// A kept connection in this worker's pool stirred (the upstream closed it, or sent what
/// nobody asked for): close it. False if the pool no longer had it.
pub(crate) fn worker_discard(fd: RawFd) -> bool {
    WORKER_POOL.with(|p| {
        for l in p.borrow_mut().iter_mut() {
            if let Some(i) = l.kept.iter().position(|k| k.fd.as_raw_fd() == fd) {
                l.kept.remove(i);
                return true;
            }
        }
        false
    })
}

/// Close this worker's kept connections (out of descriptors), telling `forget` which a poller
/// has.
pub(crate) fn worker_clear(forget: &mut Vec<RawFd>) {
    WORKER_POOL.with(|p| {
        for l in p.borrow_mut().drain(..) {
            for k in l.kept {
                drop_kept(k, forget);
            }
        }
    });
}

/// Close every kept connection (the process is out of descriptors, or a test wants a clean
/// slate).
pub(crate) fn pool_clear() {
    pool().lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// Kept connections, in all.
#[allow(dead_code)]
pub(crate) fn pool_len() -> usize {
    pool()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .map(Vec::len)
        .sum()
}

// The reaper.

struct Reaping {
    child: Child,
    /// Output nobody wants any more, drained so a script still writing is not killed by
    /// SIGPIPE before it is done.
    out: Option<File>,
    deadline: Instant,
}

struct Reaper {
    list: Vec<Reaping>,
    /// The process whose thread is running (after a fork it does not exist in the child).
    running_in: Option<u32>,
}

fn reaper() -> &'static Mutex<Reaper> {
    static REAPER: OnceLock<Mutex<Reaper>> = OnceLock::new();
    REAPER.get_or_init(|| {
        Mutex::new(Reaper {
            list: Vec::new(),
            running_in: None,
        })
    })
}

/// Wait for `child` off the event loop: at once if it has already exited, else on the reaper
/// thread, which kills its group at `deadline`.
fn reap(mut child: Child, out: Option<File>, deadline: Instant) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let mut r = reaper().lock().unwrap_or_else(|e| e.into_inner());
    r.list.push(Reaping {
        child,
        out,
        deadline,
    });
    let pid = std::process::id();
    if r.running_in != Some(pid) {
        let started = std::thread::Builder::new()
            .name("tincan-reaper".into())
            .spawn(reaper_loop);
        match started {
            Ok(_) => r.running_in = Some(pid),
            Err(e) => {
                // Reap what we can now; the next child tries to start the thread again.
                tracing::warn!("cannot start the child reaper: {e}; killing the child now");
                for mut c in r.list.drain(..) {
                    kill_group(&mut c.child);
                    let _ = c.child.wait();
                }
            }
        }
    }
}

fn reaper_loop() {
    const TICK: Duration = Duration::from_millis(10);
    let mut sink = vec![0u8; READ_CHUNK];
    loop {
        {
            let mut r = reaper().lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            r.list.retain_mut(|c| {
                if let Some(out) = &mut c.out {
                    loop {
                        match out.read(&mut sink) {
                            Ok(0) => {
                                c.out = None;
                                break;
                            }
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(_) => {
                                c.out = None;
                                break;
                            }
                        }
                    }
                }
                match c.child.try_wait() {
                    Ok(None) if now < c.deadline => true,
                    Ok(None) => {
                        tracing::debug!("a finished CGI program ran past its time; killing it");
                        kill_group(&mut c.child);
                        let _ = c.child.wait();
                        false
                    }
                    _ => false,
                }
            });
            if r.list.is_empty() {
                r.running_in = None;
                return;
            }
        }
        std::thread::sleep(TICK);
    }
}

/// Children still being waited for (tests).
#[allow(dead_code)]
pub(crate) fn reaping() -> usize {
    reaper()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .list
        .len()
}
