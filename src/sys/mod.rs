//! Every `unsafe` system call in tincan, each wrapped in a safe function with a `// SAFETY:`
//! comment: epoll, poll, select, sendfile, eventfd, timerfd, fork, setuid and friends; `ktls`,
//! the kernel TLS socket options and typed records.
//!
//! The wrappers keep the C conventions out of the rest of the crate: errors come back as
//! `io::Error` (from `errno`), descriptors as `OwnedFd`/`BorrowedFd`, times as `Duration`.
//! `EINTR` is returned to the caller (as `ErrorKind::Interrupted`) so each loop decides whether
//! to retry or to look at its shutdown flag first.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

pub mod ktls;
mod users;

pub use users::*;

/// An OS error as the end of a sentence: "No such file or directory (os error 2)" becomes
/// "no such file or directory". The number helps nobody who reads the line.
pub fn plain(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s);
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Turn a C return value into `io::Result`: `-1` means "look at errno".
fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A poll timeout in milliseconds, rounded *up* so a loop waiting for a deadline 0.4 ms away
/// sleeps 1 ms instead of spinning with a zero timeout; `None` waits forever (`-1`).
pub fn timeout_ms(t: Option<Duration>) -> libc::c_int {
    match t {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            ms.min(libc::c_int::MAX as u128) as libc::c_int
        }
    }
}

// ---------------------------------------------------------------------------------------------
// eventfd: a counter other threads (or a signal handler) can bump to wake a poller.

/// A non-blocking eventfd: [`notify`](Self::notify) makes it readable, [`drain`](Self::drain)
/// resets it.
#[derive(Debug)]
pub struct EventFd(File);

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers; on success it returns a fresh descriptor that
        // nothing else owns, so wrapping it in an OwnedFd (closed exactly once) is sound.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: `fd` was just returned by eventfd and is owned by no one else.
        Ok(EventFd(File::from(unsafe { OwnedFd::from_raw_fd(fd) })))
    }

    /// Add one to the counter (wakes whoever polls it). A full counter (2^64-2) already wakes,
    /// so `WouldBlock` is success too.
    pub fn notify(&self) {
        let _ = (&self.0).write(&1u64.to_ne_bytes());
    }

    /// Reset the counter to zero so the descriptor stops being readable.
    pub fn drain(&self) {
        let mut buf = [0u8; 8];
        let _ = (&self.0).read(&mut buf);
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

// ---------------------------------------------------------------------------------------------
// timerfd: a timer with nanosecond resolution that a poller can watch.

/// A non-blocking timerfd on `CLOCK_MONOTONIC` (the clock of [`std::time::Instant`]): it
/// becomes readable when the time set by [`arm`](Self::arm) comes. epoll's own timeout is
/// whole milliseconds (rounded up), too coarse for a schedule of sends 50 µs apart.
#[derive(Debug)]
pub struct TimerFd(File);

impl TimerFd {
    pub fn new() -> io::Result<TimerFd> {
        // SAFETY: timerfd_create takes no pointers; on success it returns a fresh descriptor
        // that nothing else owns.
        let fd = cvt(unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
            )
        })?;
        // SAFETY: `fd` was just returned by timerfd_create and is owned by no one else.
        Ok(TimerFd(File::from(unsafe { OwnedFd::from_raw_fd(fd) })))
    }

    /// Fire once, `after` from now (at least 1 ns: zero would disarm it), replacing any
    /// earlier setting.
    pub fn arm(&self, after: Duration) -> io::Result<()> {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs().try_into().unwrap_or(libc::time_t::MAX),
                tv_nsec: after.subsec_nanos().into(),
            },
        };
        // SAFETY: a live descriptor, a valid itimerspec to read, and no old value wanted.
        cvt(unsafe { libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut()) })?;
        Ok(())
    }
}

impl AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

// ---------------------------------------------------------------------------------------------
// poll(2)

/// poll(2) over `fds`; returns how many entries have non-zero `revents`.
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    // SAFETY: the pointer and length describe a live, exclusively borrowed slice of pollfd for
    // the whole call; the kernel writes only the `revents` fields within it.
    let n = cvt(unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            timeout_ms(timeout),
        )
    })?;
    Ok(n as usize)
}

/// A pollfd entry for `fd` asking for `events`.
pub fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

// ---------------------------------------------------------------------------------------------
// epoll(7)

/// An epoll instance.
#[derive(Debug)]
pub struct Epoll(OwnedFd);

pub use libc::epoll_event as EpollEvent;

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: no pointers; a successful return is a new descriptor we alone own.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just created and is owned by nothing else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: data };
        // SAFETY: `ev` lives on the stack for the duration of the call and the kernel only
        // reads it; a bad `fd` is reported through errno, not undefined behaviour.
        cvt(unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut ev) })?;
        Ok(())
    }

    pub fn add(&self, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, data)
    }

    pub fn modify(&self, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, data)
    }

    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Wait for events, replacing the contents of `events` (up to its capacity, at least 1).
    pub fn wait(&self, events: &mut Vec<EpollEvent>, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        if events.capacity() == 0 {
            events.reserve(256);
        }
        let cap = events.capacity().min(libc::c_int::MAX as usize) as libc::c_int;
        // SAFETY: the kernel writes at most `cap` epoll_event values into the vector's spare
        // capacity, which is allocated and exclusively borrowed; `len` is 0 so nothing is
        // overwritten that Rust still considers initialised.
        let n = cvt(unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                cap,
                timeout_ms(timeout),
            )
        })?;
        // SAFETY: epoll_wait initialised exactly `n <= cap` entries at the front.
        unsafe { events.set_len(n as usize) };
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// select(2)

/// `FD_SETSIZE`: select(2) cannot watch a descriptor at or above this.
pub const FD_SETSIZE: usize = libc::FD_SETSIZE;

/// An `fd_set` that refuses descriptors select(2) cannot represent, so no caller can write
/// past its end (the classic select overflow).
pub struct FdSet(libc::fd_set);

impl FdSet {
    pub fn new() -> FdSet {
        // SAFETY: fd_set is a plain bit array; all-zero is a valid (empty) value, and FD_ZERO
        // on an exclusively borrowed set only writes within it.
        let mut set: libc::fd_set = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::FD_ZERO(&mut set) };
        FdSet(set)
    }

    /// Can select(2) watch `fd` at all?
    pub fn fits(fd: RawFd) -> bool {
        fd >= 0 && (fd as usize) < FD_SETSIZE
    }

    /// Add `fd`; false (and nothing written) when it does not fit.
    pub fn insert(&mut self, fd: RawFd) -> bool {
        if !FdSet::fits(fd) {
            return false;
        }
        // SAFETY: 0 <= fd < FD_SETSIZE was checked, so the bit lies inside the set.
        unsafe { libc::FD_SET(fd, &mut self.0) };
        true
    }

    pub fn contains(&self, fd: RawFd) -> bool {
        // SAFETY: the bound is checked first, so the bit read lies inside the set.
        FdSet::fits(fd) && unsafe { libc::FD_ISSET(fd, &self.0) }
    }
}

impl Default for FdSet {
    fn default() -> Self {
        FdSet::new()
    }
}

/// select(2) for readability and writability; returns the number of ready descriptors.
/// `nfds` is one more than the highest descriptor in either set.
pub fn select(
    nfds: RawFd,
    read: &mut FdSet,
    write: &mut FdSet,
    timeout: Option<Duration>,
) -> io::Result<usize> {
    let mut tv = timeout.map(|d| {
        // Round up to the microsecond, as timeout_ms does, so we do not spin.
        let us = d.as_nanos().div_ceil(1000);
        libc::timeval {
            tv_sec: (us / 1_000_000).min(i64::MAX as u128) as libc::time_t,
            tv_usec: (us % 1_000_000) as libc::suseconds_t,
        }
    });
    let tvp = match tv.as_mut() {
        Some(t) => t as *mut libc::timeval,
        None => std::ptr::null_mut(),
    };
    assert!(
        nfds >= 0 && nfds as usize <= FD_SETSIZE,
        "nfds beyond FD_SETSIZE"
    );
    // SAFETY: both sets are exclusively borrowed fd_sets and nfds <= FD_SETSIZE (asserted), so
    // the kernel reads and writes only inside them; `tvp` is null or points at a live timeval.
    let n =
        cvt(unsafe { libc::select(nfds, &mut read.0, &mut write.0, std::ptr::null_mut(), tvp) })?;
    Ok(n as usize)
}

// ---------------------------------------------------------------------------------------------
// sendfile(2)

/// Send up to `count` bytes of `file` from `*offset` to the socket `out`, advancing `*offset`.
/// Returns the bytes sent; 0 means the file ended before `offset` (it shrank).
pub fn sendfile(
    out: BorrowedFd<'_>,
    file: &File,
    offset: &mut u64,
    count: usize,
) -> io::Result<usize> {
    let mut off = libc::off_t::try_from(*offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))?;
    // Linux sends at most 0x7ffff000 bytes per call anyway.
    let count = count.min(0x7fff_f000);
    // SAFETY: both descriptors are borrowed for the call and stay open; `off` is a live local
    // the kernel updates; no buffer of ours is touched.
    let n = unsafe { libc::sendfile(out.as_raw_fd(), file.as_raw_fd(), &mut off, count) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    *offset = off as u64;
    Ok(n as usize)
}

// ---------------------------------------------------------------------------------------------
// Processes: fork, waitpid, kill.

/// Which side of a fork we are on.
#[derive(Debug)]
pub enum Fork {
    Parent(libc::pid_t),
    Child,
}

/// How many threads this process has, from /proc/self/status.
pub fn thread_count() -> io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no Threads line in /proc/self/status"))
}

/// fork(2), refused unless this process is single-threaded: a child forked from a threaded
/// process inherits locks held by threads that do not exist in it (an allocator lock is enough
/// to deadlock), which is why prefork forks before any thread starts.
pub fn fork() -> io::Result<Fork> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(io::Error::other(format!(
            "refusing to fork a process with {threads} threads"
        )));
    }
    // SAFETY: the process is single-threaded (checked above), so the child gets a consistent
    // copy of every lock and allocator state; fork takes no pointers.
    let pid = cvt(unsafe { libc::fork() })?;
    Ok(if pid == 0 {
        Fork::Child
    } else {
        Fork::Parent(pid)
    })
}

/// Block (`true`) or unblock (`false`) SIGINT, SIGTERM and SIGHUP for the calling thread. Blocked
/// signals stay pending and are delivered on unblocking; a forked child inherits the mask.
pub fn block_stop_signals(block: bool) -> io::Result<()> {
    // SAFETY: `set` is plain data, initialised by sigemptyset before any other use;
    // pthread_sigmask only reads it and is given no old-mask pointer.
    let r = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        let how = if block {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        libc::pthread_sigmask(how, &set, std::ptr::null_mut())
    };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// How a child ended, from waitpid's status word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for ExitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitKind::Code(c) => write!(f, "exit code {c}"),
            ExitKind::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// Reap one exited child without blocking: `Ok(None)` when none has exited.
pub fn try_reap() -> io::Result<Option<(libc::pid_t, ExitKind)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a live local the kernel writes; WNOHANG never blocks.
    let pid = cvt(unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) })?;
    if pid == 0 {
        return Ok(None);
    }
    let kind = if libc::WIFSIGNALED(status) {
        ExitKind::Signal(libc::WTERMSIG(status))
    } else {
        ExitKind::Code(libc::WEXITSTATUS(status))
    };
    Ok(Some((pid, kind)))
}

/// Send `sig` to `pid`.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes no pointers; a wrong pid is an errno, not undefined behaviour.
    cvt(unsafe { libc::kill(pid, sig) })?;
    Ok(())
}

/// Ask the kernel to send `sig` to this process when its parent dies (a worker must not outlive
/// a supervisor killed with SIGKILL). Returns false if the parent is already gone.
pub fn die_with_parent(sig: libc::c_int, parent: libc::pid_t) -> io::Result<bool> {
    // SAFETY: PR_SET_PDEATHSIG takes an integer argument; no pointers are passed.
    cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) })?;
    Ok(std::os::unix::process::parent_id() as libc::pid_t == parent)
}

/// Own descriptor `fd`, which the parent left open for this process (systemd socket
/// activation), after checking that it is open; close-on-exec is set, so that no CGI script or
/// other child inherits a listening socket.
pub fn take_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD reads the descriptor's flags and touches no memory; it fails with EBADF
    // for a number that is not open.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: as above; F_SETFD only changes the descriptor's own flags.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) })?;
    // SAFETY: the descriptor is open (F_GETFD succeeded), and by the sd_listen_fds protocol the
    // parent passed it for this process to own; it is taken before this process opens any
    // file of its own, so nothing else here holds it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn getpid() -> libc::pid_t {
    std::process::id() as libc::pid_t
}

/// Leave a forked child at once: no atexit handlers, no destructors of state that belongs to
/// the parent (such as a Unix socket file it will remove itself).
pub fn exit_child(code: i32) -> ! {
    let _ = io::stdout().flush();
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// Counters in memory shared with the processes this one forks afterwards (an anonymous
/// `MAP_SHARED` mapping): what a forked child stores there, its parent and its siblings see,
/// which is how prefork's workers count their connections against one cap.
pub struct SharedCounters {
    ptr: std::ptr::NonNull<std::sync::atomic::AtomicUsize>,
    len: usize,
}

// SAFETY: the mapping holds atomics only, which any thread may use through `&`; it is unmapped
// once, by the owner's Drop.
unsafe impl Send for SharedCounters {}
// SAFETY: as above: every access goes through `&AtomicUsize`.
unsafe impl Sync for SharedCounters {}

impl SharedCounters {
    /// `n` counters (at least one), all zero.
    pub fn new(n: usize) -> io::Result<SharedCounters> {
        let len = n.max(1);
        let bytes = len * std::mem::size_of::<std::sync::atomic::AtomicUsize>();
        // SAFETY: a fresh anonymous mapping: no address is asked for and no descriptor given,
        // so it overlaps nothing this process has; the result is checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            std::ptr::NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap gave 0"))?;
        Ok(SharedCounters { ptr, len })
    }

    pub fn cells(&self) -> &[std::sync::atomic::AtomicUsize] {
        // SAFETY: the mapping is page-aligned, `len` counters long, zero-filled by the kernel
        // (a valid AtomicUsize is any bit pattern), and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SharedCounters {
    fn drop(&mut self) {
        let bytes = self.len * std::mem::size_of::<std::sync::atomic::AtomicUsize>();
        // SAFETY: exactly the mapping made in `new`, unmapped once; `cells` borrows end with
        // `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), bytes) };
    }
}

// ---------------------------------------------------------------------------------------------
// Resource limits.

/// The soft and hard limits on open descriptors.
fn nofile() -> io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live local the kernel fills in.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    Ok(lim)
}

/// The soft limit on open descriptors: the most this process may hold at once.
pub fn fd_limit() -> io::Result<u64> {
    Ok(nofile()?.rlim_cur)
}

/// Raise the soft limit on open descriptors to the hard limit (every connection costs one or
/// two); returns the limit in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    let lim = nofile()?;
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `want` is a live local the kernel only reads.
        if cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) }).is_ok() {
            return Ok(want.rlim_cur);
        }
    }
    Ok(lim.rlim_cur)
}

/// May this process (its effective ids) read `path`, and search it too when `search`? As
/// `faccessat(AT_EACCESS)`; `false` on any error.
pub fn may_read(path: &std::path::Path, search: bool) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mode = libc::R_OK | if search { libc::X_OK } else { 0 };
    // SAFETY: `c` is a NUL-terminated path that outlives the call; no pointers are kept.
    unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_EACCESS) == 0 }
}

/// Set the file-creation mask; returns the previous one.
pub fn umask(mask: u32) -> u32 {
    // SAFETY: umask cannot fail; integer argument only.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// Receive and drop up to `len` bytes from a TCP socket without copying them (`MSG_TRUNC`,
/// which Linux honours for TCP), without blocking. `Ok(0)` is the peer's EOF.
pub fn recv_discard(fd: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: with MSG_TRUNC on a TCP socket the kernel drops the bytes instead of copying
    // them, so the null buffer is never written.
    let r = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(r).map_err(|_| io::Error::last_os_error())
}

/// Send the ACK a TCP socket owes now, and go on delaying later ones (`TCP_QUICKACK` with 2:
/// Linux flushes a pending ACK for any non-zero value and leaves delayed-ACK mode only for
/// odd ones). Not a TCP socket: an error the caller may ignore.
pub fn ack_now(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_QUICKACK, 2)
}

/// Hand over a listening socket's new connections only once their first bytes arrive, or
/// after about `secs` seconds (`TCP_DEFER_ACCEPT`; 0 turns it off). Meanwhile the kernel keeps
/// the half-accepted connection itself: no descriptor, no wake-up.
pub fn set_defer_accept(fd: BorrowedFd<'_>, secs: u32) -> io::Result<()> {
    set_int_option(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_DEFER_ACCEPT,
        secs.try_into().unwrap_or(libc::c_int::MAX),
    )
}

/// The seconds set by [`set_defer_accept`], as the kernel rounded them (to its SYN-ACK
/// retransmission schedule).
pub fn defer_accept(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a live descriptor, and a c_int with its size for the kernel to fill.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(u32::try_from(val).unwrap_or(0))
}

/// How many connections wait in a listening TCP socket's accept queue: for a socket in the
/// LISTEN state, Linux reports the queue's length as `tcpi_unacked` (and its bound as
/// `tcpi_sacked`). A Unix socket has no such count: `Ok(None)`.
pub fn accept_queue_len(fd: BorrowedFd<'_>) -> io::Result<Option<u32>> {
    // SAFETY: tcp_info is plain integers; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: a live descriptor, and a tcp_info with its size for the kernel to fill.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    match cvt(r) {
        Ok(_) => Ok(Some(info.tcpi_unacked)),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Let a socket bound to an address without a port get its port at `connect`
/// (`IP_BIND_ADDRESS_NO_PORT`), where the whole four-tuple decides whether a port is free.
pub fn bind_address_no_port(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_int_option(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)
}

/// Set an integer socket option at `level`.
fn set_int_option(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    opt: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a live descriptor and a pointer to a c_int of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Open `path` read-only without following a symbolic link in any of its components
/// (`openat2` with `RESOLVE_NO_SYMLINKS`), `O_NONBLOCK | O_NOCTTY | O_CLOEXEC`. A symlink on the
/// way is `ELOOP`. `Ok(None)`: this kernel (before 5.6) or a seccomp filter does not offer
/// `openat2`; the caller opens some other way.
pub fn open_no_symlinks(path: &std::path::Path) -> io::Result<Option<File>> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a path"))?;
    // SAFETY: open_how is plain data; all-zero is valid (no mode, no resolve flags).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS;
    // SAFETY: a NUL-terminated path that outlives the call, and a live open_how with its size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            // No such system call, or a sandbox that forbids it (seccomp answers EPERM or
            // ENOSYS); E2BIG would be an open_how this kernel does not know.
            Some(libc::ENOSYS | libc::EPERM | libc::E2BIG) => Ok(None),
            _ => Err(e),
        };
    }
    let fd = RawFd::try_from(r).map_err(|_| io::Error::other("openat2 returned no descriptor"))?;
    // SAFETY: openat2 just returned this descriptor to us and nothing else owns it.
    Ok(Some(unsafe { File::from_raw_fd(fd) }))
}

/// Restrict `pid` (0: the calling thread) to the CPUs listed. Threads it creates afterwards
/// inherit the mask.
pub fn pin_to_cpus(pid: libc::pid_t, cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if c < libc::CPU_SETSIZE as usize {
            // SAFETY: CPU_SET writes one bit of the live local set; c is below its size.
            unsafe { libc::CPU_SET(c, &mut set) };
        }
    }
    // SAFETY: `set` is a live, initialised cpu_set_t of the size passed.
    cvt(unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) })?;
    Ok(())
}

/// The unit tests' allocator: the system's, counting the allocations each thread makes, so a
/// test can say that a path allocates nothing ([`counting_alloc::allocations`] before and after).
#[cfg(test)]
pub(crate) mod counting_alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static COUNT: Cell<u64> = const { Cell::new(0) };
    }

    /// Allocations (and reallocations) made on this thread so far.
    pub fn allocations() -> u64 {
        COUNT.with(Cell::get)
    }

    struct Counting;

    fn count() {
        // `try_with`: a thread being torn down has no counter left, and its allocations are
        // nobody's test.
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
    }

    // SAFETY: every call is passed to `System` unchanged; counting touches only a
    // const-initialised thread-local `Cell`, which itself never allocates.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: the caller's contract is passed on as it is.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: as for `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count();
            // SAFETY: as for `alloc`.
            unsafe { System.realloc(ptr, layout, new_size) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: as for `alloc`.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;
}

// ---------------------------------------------------------------------------------------------
// Terminal modes (termios), for `tincan talk`'s line editor.

/// A terminal switched to read keys one at a time without echoing them; dropping it puts back
/// the settings it found.
#[derive(Debug)]
pub struct KeyByKey {
    fd: RawFd,
    saved: libc::termios,
}

impl KeyByKey {
    /// Switch the terminal on `fd` off its line discipline: no canonical (line) mode, no echo,
    /// no signals from Ctrl-C (the reader sees the byte and quits cleanly, restoring the
    /// terminal); output processing stays on, so `\n` still starts a line.
    pub fn new(fd: BorrowedFd<'_>) -> io::Result<KeyByKey> {
        // SAFETY: termios is plain data that tcgetattr fills; zeroes are a valid value of it.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: the descriptor is borrowed, so open for the call; `t` is a valid termios.
        cvt(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) })?;
        let saved = t;
        t.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
        t.c_cc[libc::VMIN] = 1;
        t.c_cc[libc::VTIME] = 0;
        // SAFETY: as above; `t` is the terminal's own settings with four flags changed.
        cvt(unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &t) })?;
        Ok(KeyByKey {
            fd: fd.as_raw_fd(),
            saved,
        })
    }
}

impl Drop for KeyByKey {
    fn drop(&mut self) {
        // SAFETY: `saved` came from tcgetattr on this descriptor (standard input, open for the
        // life of the process); a failure leaves the terminal as it is, nothing worse.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_so_loops_do_not_spin() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_ms(Some(Duration::from_micros(400))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_millis(1500))), 1500);
    }

    #[test]
    fn fd_set_refuses_descriptors_select_cannot_hold() {
        let mut s = FdSet::new();
        assert!(s.insert(3));
        assert!(s.contains(3));
        assert!(!s.contains(4));
        assert!(!s.insert(FD_SETSIZE as RawFd));
        assert!(!s.insert(-1));
        assert!(!s.contains(FD_SETSIZE as RawFd + 10));
    }

    #[test]
    fn eventfd_becomes_readable_on_notify_and_quiet_after_drain() {
        let e = EventFd::new().unwrap();
        let mut fds = [pollfd(e.as_raw_fd(), libc::POLLIN)];
        assert_eq!(poll(&mut fds, Some(Duration::ZERO)).unwrap(), 0);
        e.notify();
        e.notify();
        assert_eq!(poll(&mut fds, Some(Duration::ZERO)).unwrap(), 1);
        e.drain();
        fds[0].revents = 0;
        assert_eq!(poll(&mut fds, Some(Duration::ZERO)).unwrap(), 0);
    }

    #[test]
    fn root_user_is_found_by_name_and_id() {
        let root = user_by_name("root").unwrap().expect("root exists");
        assert_eq!(root.uid, 0);
        assert_eq!(user_by_id(0).unwrap().unwrap().name, "root");
        assert!(user_by_name("no-such-user-tincan").unwrap().is_none());
    }
}
