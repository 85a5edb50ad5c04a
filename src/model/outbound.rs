//! Outbound work for sessions (a proxied upstream, a CGI child), done by the drivers' side on
//! its own threads so no event loop ever blocks on it.
//!
//! A session asks by [`Outbound::submit`]ting a [`JobSpec`] with its [`Waker`]; a worker from a
//! small bounded pool performs the blocking I/O (connect, write the request bytes the session
//! built, read the answer; or spawn the CGI program, feed its stdin, read its stdout) and streams
//! what it reads back through a [`Receiver`]. The stream is bounded by a byte budget: a worker
//! that is that far ahead of its session blocks until the session takes some (backpressure all
//! the way to the upstream's TCP window or the child's pipe). Every piece pushed wakes the
//! session, which takes the bytes in `on_wake`/`on_drained`; protocols still never touch a socket
//! or a process. Because only the [`Waker`] is used, this works the same under every model.
//!
//! Lifecycles: a job holds one of the pool's slots from [`Outbound::submit`] until it ends or
//! its [`Receiver`] is dropped, whichever comes first, so a session that has its whole answer
//! can submit the next job at once. Dropping the receiver before [`Receiver::complete`] (the
//! connection went away, the answer broke) cancels the job: the upstream connection is shut
//! down at once, the child's whole process group killed. A CGI child whose answer is complete
//! is not killed: it may finish its work, within the timeout, while its further output is
//! read and dropped. Every child runs in a process group of its own, so a timeout or a cancel
//! also ends what it started (`sleep` in a shell script), and every child is waited for (no
//! zombies), on success, failure, timeout and cancel alike.
//!
//! The pool is started lazily, in the process that first submits a job (under prefork that is
//! each worker process; the parent never starts threads it would lose at fork).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::protocol::Waker;

/// Bytes read from an upstream or a child per read.
const READ_CHUNK: usize = 32 * 1024;
/// How often a worker waiting on a silent upstream or child looks whether its session is gone
/// (so a client that hangs up frees the worker and kills the script promptly).
const CANCEL_CHECK: Duration = Duration::from_millis(200);

/// How the pool is sized and how long outbound I/O may stall.
#[derive(Clone, Debug)]
pub struct OutboundConfig {
    /// Jobs running at once (one thread each); a job over this is refused (the session answers
    /// 503) rather than queued behind slow upstreams.
    pub workers: usize,
    /// Connect timeout, and the longest wait for any single read or write (nginx's
    /// `proxy_connect_timeout`/`proxy_read_timeout`/`proxy_send_timeout`, in one number).
    pub timeout: Duration,
    /// Bytes a job may have read and its session not yet taken; the worker blocks above it.
    pub budget: usize,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            workers: 16,
            timeout: Duration::from_secs(60),
            budget: 256 * 1024,
        }
    }
}

/// Where an upstream listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `host:port`, resolved by the worker (name lookups block; that is why they are here).
    Tcp(String),
    /// A Unix-domain stream socket.
    Unix(PathBuf),
}

/// One piece of outbound work.
#[derive(Debug)]
pub enum JobSpec {
    /// Connect to `target`, write `request`, read until the upstream closes.
    Connect { target: Target, request: Vec<u8> },
    /// Run `program` in `cwd` with exactly `env`, write `stdin` to it, read its stdout until EOF.
    Spawn {
        program: PathBuf,
        cwd: PathBuf,
        env: Vec<(OsString, OsString)>,
        stdin: Vec<u8>,
    },
}

/// Why a job ended early. The session maps it to a status when no response head was sent yet.
#[derive(Debug)]
pub enum Failure {
    /// The upstream could not be reached (refused, unreachable, name unknown): 502.
    Connect(String),
    /// Nothing moved for the timeout (connect, read, write, or a silent child): 504.
    Timeout,
    /// The connection or pipe broke: 502.
    Io(String),
    /// The program could not be started: 502.
    Spawn(String),
}

/// What a [`Receiver`] yields, in order: data, then exactly one end.
#[derive(Debug)]
pub enum Event {
    Data(Vec<u8>),
    /// The upstream closed (or the child closed its stdout) normally.
    End,
    Failed(Failure),
}

/// No worker is free: every one is busy with a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// A bounded, handing-over queue between one worker and one session.
struct Pipe {
    state: Mutex<PipeState>,
    space: Condvar,
    waker: Waker,
    budget: usize,
    pool: Arc<Inner>,
}

#[derive(Default)]
struct PipeState {
    queue: VecDeque<Event>,
    bytes: usize,
    cancelled: bool,
    /// The session had its whole answer before it let go (see [`Receiver::complete`]).
    complete: bool,
    /// The job still counts against the pool's `workers`.
    slot: bool,
    /// A second handle on the upstream connection, shut down when the receiver goes so the
    /// worker's blocking read returns at once.
    upstream: Option<Stream>,
}

impl Pipe {
    fn lock(&self) -> MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hand `data` over, waiting while the session is a budget behind. False: cancelled.
    fn push(&self, data: Vec<u8>) -> bool {
        let mut st = self.lock();
        while st.bytes >= self.budget && !st.cancelled {
            st = self.space.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.cancelled {
            return false;
        }
        st.bytes += data.len();
        st.queue.push_back(Event::Data(data));
        drop(st);
        self.waker.wake();
        true
    }

    fn finish(&self, ev: Event) {
        let mut st = self.lock();
        if st.cancelled {
            return;
        }
        st.queue.push_back(ev);
        drop(st);
        self.waker.wake();
    }

    fn cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Was the job let go after its answer was complete (rather than abandoned)?
    fn completed(&self) -> bool {
        self.lock().complete
    }

    /// Give the job's slot back to the pool, once.
    fn release_slot(&self) {
        let held = std::mem::take(&mut self.lock().slot);
        if held {
            let mut st = self.pool.lock();
            st.active = st.active.saturating_sub(1);
        }
    }
}

/// The session's end of a job. Dropping it cancels the job.
pub struct Receiver {
    pipe: Arc<Pipe>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Receiver")
    }
}

impl Receiver {
    /// The session has the whole answer: dropping the receiver now releases the job rather
    /// than cancelling it (a CGI script is left to exit by itself, within the timeout).
    pub fn complete(&self) {
        self.pipe.lock().complete = true;
    }

    /// The next event, if one is ready (never blocks).
    pub fn try_recv(&self) -> Option<Event> {
        let mut st = self.pipe.lock();
        let ev = st.queue.pop_front()?;
        if let Event::Data(d) = &ev {
            let was_full = st.bytes >= self.pipe.budget;
            st.bytes -= d.len();
            if was_full && st.bytes < self.pipe.budget {
                self.pipe.space.notify_all();
            }
        }
        Some(ev)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut st = self.pipe.lock();
        st.cancelled = true;
        st.queue.clear();
        let upstream = st.upstream.take();
        drop(st);
        self.pipe.space.notify_all();
        if let Some(up) = upstream {
            up.shutdown();
        }
        // The session holds the job no longer: its slot is free for the next request, even
        // while the worker winds it down.
        self.pipe.release_slot();
    }
}

struct Queued {
    spec: JobSpec,
    pipe: Arc<Pipe>,
}

#[derive(Default)]
struct PoolState {
    /// Jobs holding a slot: accepted, not finished, their receiver not dropped.
    active: usize,
    /// Worker threads alive.
    threads: usize,
    /// Worker threads waiting for a job.
    idle: usize,
    /// Workers letting a finished CGI child exit by itself (at most `workers` at once; past
    /// that, a finished child that will not exit is killed at once).
    lingering: usize,
    queue: VecDeque<Queued>,
    /// The process the threads were started in: after a fork they do not exist in the child.
    pid: u32,
}

struct Inner {
    cfg: OutboundConfig,
    state: Mutex<PoolState>,
    work: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The pool of outbound workers. Cheap to clone; shared by every connection.
#[derive(Clone)]
pub struct Outbound {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

impl Outbound {
    pub fn new(cfg: OutboundConfig) -> Outbound {
        Outbound {
            inner: Arc::new(Inner {
                cfg,
                state: Mutex::new(PoolState::default()),
                work: Condvar::new(),
            }),
        }
    }

    pub fn config(&self) -> &OutboundConfig {
        &self.inner.cfg
    }

    /// Start `spec`; its results go to the returned receiver, and `waker` is called whenever
    /// something arrives. `Err(Busy)` when every worker is taken.
    pub fn submit(&self, spec: JobSpec, waker: Waker) -> Result<Receiver, Busy> {
        let pipe = Arc::new(Pipe {
            state: Mutex::new(PipeState {
                slot: true,
                ..PipeState::default()
            }),
            space: Condvar::new(),
            waker,
            budget: self.inner.cfg.budget.max(1),
            pool: Arc::clone(&self.inner),
        });
        let mut st = self.inner.lock();
        let pid = std::process::id();
        if st.pid != pid {
            // A fresh process (first use, or a forked worker): no thread of ours runs here.
            *st = PoolState {
                pid,
                ..PoolState::default()
            };
        }
        if st.active >= self.inner.cfg.workers {
            return Err(Busy);
        }
        // Start a thread unless an idle one will take the job (threads still winding down a
        // released job are not idle).
        if st.idle <= st.queue.len() {
            let inner = Arc::clone(&self.inner);
            let spawned = std::thread::Builder::new()
                .name("tincan-outbound".into())
                .spawn(move || worker(inner));
            match spawned {
                Ok(_) => st.threads += 1,
                Err(e) if st.threads == 0 => {
                    tracing::warn!("cannot start an outbound worker: {e}");
                    return Err(Busy);
                }
                // Another worker will get to it when it finishes its job.
                Err(e) => tracing::warn!("cannot start another outbound worker: {e}"),
            }
        }
        st.active += 1;
        st.queue.push_back(Queued {
            spec,
            pipe: Arc::clone(&pipe),
        });
        drop(st);
        self.inner.work.notify_one();
        Ok(Receiver { pipe })
    }
}

/// A worker thread: take jobs until none comes for a while.
fn worker(inner: Arc<Inner>) {
    const IDLE_EXIT: Duration = Duration::from_secs(60);
    loop {
        let job = {
            let mut st = inner.lock();
            st.idle += 1;
            let job = loop {
                if let Some(j) = st.queue.pop_front() {
                    break Some(j);
                }
                let (s, t) = inner
                    .work
                    .wait_timeout(st, IDLE_EXIT)
                    .unwrap_or_else(|e| e.into_inner());
                st = s;
                if t.timed_out() && st.queue.is_empty() {
                    st.threads -= 1;
                    break None;
                }
            };
            st.idle -= 1;
            job
        };
        let Some(job) = job else { return };
        let timeout = inner.cfg.timeout;
        let pipe = job.pipe;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match job.spec {
            JobSpec::Connect { target, request } => {
                connect_job(&target, &request, timeout, &pipe).map(|()| None)
            }
            JobSpec::Spawn {
                program,
                cwd,
                env,
                stdin,
            } => spawn_job(program, cwd, env, stdin, timeout, &pipe),
        }));
        pipe.lock().upstream = None;
        let (ev, linger) = match r {
            Ok(Ok(linger)) => (Event::End, linger),
            Ok(Err(f)) => (Event::Failed(f), None),
            Err(_) => (
                Event::Failed(Failure::Io("the outbound worker panicked".into())),
                None,
            ),
        };
        // The slot is free before the session hears the end, so a client that got its answer
        // and asks again is never refused for its own finished job.
        pipe.release_slot();
        pipe.finish(ev);
        if let Some(l) = linger {
            l.run(&inner);
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A connected upstream stream of either family.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    /// End the connection both ways: a read blocked on it returns at once.
    fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }

    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            }
            Stream::Unix(s) => {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            }
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn open(target: &Target, timeout: Duration) -> Result<Stream, Failure> {
    match target {
        Target::Unix(path) => UnixStream::connect(path)
            .map(Stream::Unix)
            .map_err(|e| Failure::Connect(format!("{}: {e}", path.display()))),
        Target::Tcp(hostport) => {
            let addrs = hostport
                .to_socket_addrs()
                .map_err(|e| Failure::Connect(format!("{hostport}: {e}")))?;
            let mut last = Failure::Connect(format!("{hostport}: no address"));
            for a in addrs {
                match TcpStream::connect_timeout(&a, timeout) {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(Stream::Tcp(s));
                    }
                    Err(e) if is_timeout(&e) => last = Failure::Timeout,
                    Err(e) => last = Failure::Connect(format!("{a}: {e}")),
                }
            }
            Err(last)
        }
    }
}

/// Connect, write the request, stream the answer back until the upstream closes.
///
/// Sending and reading go on together (poll(2) on both directions, non-blocking sends), as in
/// nginx: an upstream may answer before it has read the whole body, either to refuse it (a
/// 413, after which it may never read the rest) or because it streams (a chunked head
/// first). Its answer is relayed as it comes while the rest of the request still goes out;
/// a send error ends only the sending. `timeout` counts the time without progress either way.
fn connect_job(
    target: &Target,
    request: &[u8],
    timeout: Duration,
    pipe: &Pipe,
) -> Result<(), Failure> {
    let mut s = open(target, timeout)?;
    // A read happens only after poll(2) said readable; the timeout is a backstop, so that no
    // read can ever hold the worker.
    s.set_timeouts(CANCEL_CHECK.min(timeout))
        .map_err(|e| Failure::Io(e.to_string()))?;
    {
        let mut st = pipe.lock();
        if st.cancelled {
            return Ok(());
        }
        st.upstream = s.try_clone().ok();
    }
    let fd = s.as_fd().as_raw_fd();
    let (mut sent, mut sending) = (0, true);
    let mut got_any = false;
    let mut last_progress = Instant::now();
    let mut buf = Vec::new();
    loop {
        if pipe.cancelled() {
            return Ok(());
        }
        sending &= sent < request.len();
        let want = libc::POLLIN | if sending { libc::POLLOUT } else { 0 };
        let mut fds = [crate::sys::pollfd(fd, want)];
        match crate::sys::poll(&mut fds, Some(CANCEL_CHECK.min(timeout))) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Io(e.to_string())),
        }
        let ready = fds[0].revents;
        if ready == 0 {
            if last_progress.elapsed() >= timeout {
                return Err(Failure::Timeout);
            }
            continue;
        }
        let trouble = libc::POLLERR | libc::POLLHUP;
        if sending && ready & (libc::POLLOUT | trouble) != 0 {
            // MSG_DONTWAIT: never block with an answer possibly waiting; MSG_NOSIGNAL: a
            // closed upstream is an EPIPE, not a SIGPIPE.
            let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
            match socket2::SockRef::from(&s).send_with_flags(&request[sent..], flags) {
                Ok(n) => {
                    sent += n;
                    last_progress = Instant::now();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    // It answered early and closed (a 413 for a body it will not read): read
                    // what it said before calling it a failure.
                    tracing::debug!("writing to the upstream failed: {e}");
                    sending = false;
                }
            }
        }
        if ready & (libc::POLLIN | trouble) == 0 {
            continue;
        }
        if buf.is_empty() {
            buf = vec![0; READ_CHUNK];
        }
        // poll(2) said readable (or closed): the read does not wait.
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                got_any = true;
                last_progress = Instant::now();
                buf.truncate(n);
                if !pipe.push(std::mem::take(&mut buf)) {
                    return Ok(());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) => {}
            // A reset after a complete close-delimited answer is still a broken stream.
            Err(e) if got_any => return Err(Failure::Io(e.to_string())),
            Err(e) => return Err(Failure::Io(format!("the upstream closed: {e}"))),
        }
    }
}

/// Kill a child's whole process group (it leads one of its own: what it started dies with
/// it), then reap the child: no zombie is ever left behind.
fn kill_and_reap(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // A negative pid names the process group; the child made it, so it is never ours.
        let _ = crate::sys::kill(-pid, libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// How long a child that closed its stdout is given to report how it ended, before its
/// answer is taken as complete and the child left to exit by itself.
const EXIT_WAIT: Duration = Duration::from_millis(100);

/// A CGI child whose answer is complete but which has not exited: given until `deadline` to
/// finish its work (its further output read and dropped), then killed with its group.
struct Linger {
    child: Child,
    out: Option<std::process::ChildStdout>,
    deadline: Instant,
}

impl Linger {
    /// Linger if the pool has room for another, else kill at once.
    fn start(
        inner: &Inner,
        mut child: Child,
        out: Option<std::process::ChildStdout>,
        timeout: Duration,
    ) -> Option<Linger> {
        let mut st = inner.lock();
        if st.lingering >= inner.cfg.workers {
            drop(st);
            tracing::debug!("too many finished CGI scripts still running; killing one");
            kill_and_reap(&mut child);
            return None;
        }
        st.lingering += 1;
        Some(Linger {
            child,
            out,
            deadline: Instant::now() + timeout,
        })
    }

    fn run(mut self, inner: &Inner) {
        if let Some(mut out) = self.out.take() {
            // Drain, so a script still writing (a body nobody wants, after HEAD) is not killed
            // by SIGPIPE before it is done.
            let fd = out.as_raw_fd();
            let mut sink = vec![0; READ_CHUNK];
            loop {
                let left = self.deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let mut fds = [crate::sys::pollfd(fd, libc::POLLIN)];
                match crate::sys::poll(&mut fds, Some(left)) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
                match out.read(&mut sink) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < self.deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    tracing::debug!("a finished CGI script outlived the timeout; killing it");
                    kill_and_reap(&mut self.child);
                    break;
                }
            }
        }
        let mut st = inner.lock();
        st.lingering = st.lingering.saturating_sub(1);
    }
}

/// Wait up to `limit` for a child to exit.
fn wait_briefly(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(1)),
            _ => return None,
        }
    }
}

/// Run a CGI program: feed stdin (from a helper thread, so a script that writes before it reads
/// cannot deadlock against us), stream stdout back, enforce the timeout, reap the child. A
/// child killed by a signal broke its answer, even after a complete-looking output. Returns the
/// child to wait for when its answer is complete but it has not exited yet.
fn spawn_job(
    program: PathBuf,
    cwd: PathBuf,
    env: Vec<(OsString, OsString)>,
    stdin: Vec<u8>,
    timeout: Duration,
    pipe: &Pipe,
) -> Result<Option<Linger>, Failure> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let mut cmd = Command::new(&program);
    cmd.env_clear()
        .envs(env)
        .current_dir(&cwd)
        // Its own process group, so a kill reaches whatever the script started.
        .process_group(0)
        .stdin(if stdin.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        // The script's complaints go to the server's stderr, as with most CGI hosts.
        .stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .map_err(|e| Failure::Spawn(format!("{}: {e}", program.display())))?;
    if let Some(mut input) = child.stdin.take() {
        let fed = std::thread::Builder::new()
            .name("tincan-cgi-stdin".into())
            .spawn(move || {
                // EPIPE (the script did not read it all) is the script's business.
                let _ = input.write_all(&stdin);
            });
        if let Err(e) = fed {
            kill_and_reap(&mut child);
            return Err(Failure::Spawn(format!(
                "cannot feed the script's input: {e}"
            )));
        }
    }
    let Some(mut out) = child.stdout.take() else {
        kill_and_reap(&mut child);
        return Err(Failure::Spawn("the script has no stdout".into()));
    };
    let inner = &pipe.pool;
    // The session let go: with its whole answer, the script may finish; else it dies.
    let let_go = |mut child: Child, out| {
        if pipe.completed() {
            Linger::start(inner, child, Some(out), timeout)
        } else {
            kill_and_reap(&mut child);
            None
        }
    };
    let fd = out.as_raw_fd();
    let mut last_data = Instant::now();
    loop {
        if pipe.cancelled() {
            return Ok(let_go(child, out));
        }
        let mut fds = [crate::sys::pollfd(fd, libc::POLLIN)];
        match crate::sys::poll(&mut fds, Some(CANCEL_CHECK.min(timeout))) {
            Ok(0) if last_data.elapsed() >= timeout => {
                kill_and_reap(&mut child);
                return Err(Failure::Timeout);
            }
            // Silent so far: look at the session again.
            Ok(0) => continue,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                kill_and_reap(&mut child);
                return Err(Failure::Io(e.to_string()));
            }
        }
        let mut buf = vec![0; READ_CHUNK];
        match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                last_data = Instant::now();
                buf.truncate(n);
                if !pipe.push(buf) {
                    return Ok(let_go(child, out));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                kill_and_reap(&mut child);
                return Err(Failure::Io(e.to_string()));
            }
        }
    }
    drop(out);
    // Stdout is closed: the script has normally just exited. How it ended decides whether
    // its output was a whole answer.
    match wait_briefly(&mut child, EXIT_WAIT) {
        Some(status) => match status.signal() {
            Some(sig) => Err(Failure::Io(format!(
                "the CGI program {} was killed by signal {sig}",
                program.display()
            ))),
            None => {
                if !status.success() {
                    tracing::debug!("CGI program {} exited: {status}", program.display());
                }
                Ok(None)
            }
        },
        // It closed its output and goes on working: the answer is complete.
        None => Ok(Linger::start(inner, child, None, timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn collect(rx: &Receiver, limit: Duration) -> (Vec<u8>, Option<Event>) {
        let deadline = Instant::now() + limit;
        let mut data = Vec::new();
        while Instant::now() < deadline {
            match rx.try_recv() {
                Some(Event::Data(d)) => data.extend(d),
                Some(end) => return (data, Some(end)),
                None => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        (data, None)
    }

    #[test]
    fn a_child_is_fed_its_input_and_its_output_streams_back() {
        let pool = Outbound::new(OutboundConfig::default());
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&wakes);
        let rx = pool
            .submit(
                JobSpec::Spawn {
                    program: "/bin/cat".into(),
                    cwd: "/".into(),
                    env: vec![],
                    stdin: b"hello".to_vec(),
                },
                Waker::new(move || {
                    w.fetch_add(1, Ordering::SeqCst);
                }),
            )
            .unwrap();
        let (data, end) = collect(&rx, Duration::from_secs(5));
        assert_eq!(data, b"hello");
        assert!(matches!(end, Some(Event::End)));
        assert!(wakes.load(Ordering::SeqCst) >= 2);
    }

    #[test]
    fn a_silent_child_times_out_and_a_full_pool_says_busy() {
        let pool = Outbound::new(OutboundConfig {
            workers: 1,
            timeout: Duration::from_millis(200),
            ..OutboundConfig::default()
        });
        let rx = pool
            .submit(
                JobSpec::Spawn {
                    program: "/bin/sh".into(),
                    cwd: "/".into(),
                    env: vec![],
                    stdin: b"exec /bin/sleep 5".to_vec(),
                },
                Waker::noop(),
            )
            .unwrap();
        assert!(pool
            .submit(
                JobSpec::Connect {
                    target: Target::Tcp("127.0.0.1:1".into()),
                    request: vec![]
                },
                Waker::noop()
            )
            .is_err());
        let t0 = Instant::now();
        let (_, end) = collect(&rx, Duration::from_secs(5));
        assert!(
            matches!(end, Some(Event::Failed(Failure::Timeout))),
            "{end:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(3));
    }

    fn sh(script: &str) -> JobSpec {
        JobSpec::Spawn {
            program: "/bin/sh".into(),
            cwd: "/".into(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            stdin: script.as_bytes().to_vec(),
        }
    }

    /// A GET of `/` from an upstream at `addr`.
    fn get_from(addr: std::net::SocketAddr) -> JobSpec {
        JobSpec::Connect {
            target: Target::Tcp(addr.to_string()),
            request: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        }
    }

    /// A process is gone (or a zombie waiting for whoever inherited it).
    fn gone(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z'),
        }
    }

    /// Wait for the job's first output, then let go of it as a session with its whole
    /// answer does.
    fn take_first_data_and_let_go(rx: Receiver) {
        let until = Instant::now() + Duration::from_secs(5);
        while !matches!(rx.try_recv(), Some(Event::Data(_))) {
            assert!(Instant::now() < until, "the job sent nothing");
            std::thread::sleep(Duration::from_millis(2));
        }
        rx.complete();
    }

    fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cond()
    }

    /// A timed-out script is killed with everything it started: no `sleep` it ran in the
    /// background (or the foreground) outlives it.
    #[test]
    fn a_timeout_kills_the_scripts_whole_process_group() {
        let dir = std::env::temp_dir().join(format!("tincan-pgrp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("pid");
        let pool = Outbound::new(OutboundConfig {
            timeout: Duration::from_millis(300),
            ..OutboundConfig::default()
        });
        let rx = pool
            .submit(
                sh(&format!(
                    "sleep 300 & echo $! > {}; sleep 300",
                    pidfile.display()
                )),
                Waker::noop(),
            )
            .unwrap();
        let (_, end) = collect(&rx, Duration::from_secs(5));
        assert!(
            matches!(end, Some(Event::Failed(Failure::Timeout))),
            "{end:?}"
        );
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        assert!(
            wait_for(Duration::from_secs(2), || gone(&pid)),
            "the script's background sleep {pid} survived the kill"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A script killed by a signal broke its answer, even though its output looked whole.
    #[test]
    fn a_script_killed_by_a_signal_fails_its_job() {
        let pool = Outbound::new(OutboundConfig::default());
        let rx = pool
            .submit(sh("echo partial; kill -SEGV $$"), Waker::noop())
            .unwrap();
        let (data, end) = collect(&rx, Duration::from_secs(5));
        assert_eq!(data, b"partial\n");
        assert!(
            matches!(end, Some(Event::Failed(Failure::Io(_)))),
            "{end:?}"
        );
    }

    /// A session that has its whole answer lets go of the job: the script is not killed (it
    /// finishes its work, its late output dropped), and the slot is free at once.
    #[test]
    fn a_complete_answer_frees_its_slot_at_once_and_lets_the_script_finish() {
        let dir = std::env::temp_dir().join(format!("tincan-linger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let done = dir.join("done");
        let pool = Outbound::new(OutboundConfig {
            workers: 1,
            ..OutboundConfig::default()
        });
        let rx = pool
            .submit(
                sh(&format!(
                    "echo answer; sleep 0.3; echo late output; touch {}",
                    done.display()
                )),
                Waker::noop(),
            )
            .unwrap();
        take_first_data_and_let_go(rx);
        // The next job is taken at once, while the first script still runs.
        let next = pool.submit(sh("echo again"), Waker::noop());
        assert!(next.is_ok(), "a finished job kept its slot");
        assert!(
            wait_for(Duration::from_secs(3), || done.exists()),
            "the script was killed after its answer was complete"
        );
        drop(next);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Letting go of an upstream job frees its slot at once, though the upstream keeps the
    /// connection open, and the worker's read ends at once.
    #[test]
    fn a_released_upstream_job_frees_its_slot_at_once() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let held = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            // Wait for the worker to hang up (a read of 0) instead of closing first.
            let mut b = [0u8; 1024];
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let t0 = Instant::now();
            while matches!(c.read(&mut b), Ok(n) if n > 0) {}
            t0.elapsed()
        });
        let pool = Outbound::new(OutboundConfig {
            workers: 1,
            ..OutboundConfig::default()
        });
        let rx = pool.submit(get_from(addr), Waker::noop()).unwrap();
        take_first_data_and_let_go(rx);
        assert!(pool.submit(sh("true"), Waker::noop()).is_ok());
        let waited = held.join().unwrap();
        assert!(
            waited < Duration::from_secs(1),
            "the upstream was held {waited:?}"
        );
    }

    #[test]
    fn a_refused_connection_is_a_connect_failure() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let pool = Outbound::new(OutboundConfig::default());
        let rx = pool.submit(get_from(addr), Waker::noop()).unwrap();
        let (_, end) = collect(&rx, Duration::from_secs(5));
        assert!(
            matches!(end, Some(Event::Failed(Failure::Connect(_)))),
            "{end:?}"
        );
    }

    #[test]
    fn a_worker_blocks_at_the_budget_until_the_session_takes_bytes() {
        let pool = Outbound::new(OutboundConfig {
            budget: 64 * 1024,
            ..OutboundConfig::default()
        });
        let rx = pool
            .submit(
                JobSpec::Spawn {
                    program: "/bin/sh".into(),
                    cwd: "/".into(),
                    env: vec![("PATH".into(), "/usr/bin:/bin".into())],
                    stdin: b"head -c 1000000 /dev/zero".to_vec(),
                },
                Waker::noop(),
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let held = rx.pipe.lock().bytes;
        assert!(held <= 64 * 1024 + READ_CHUNK, "{held} bytes held");
        let (data, end) = collect(&rx, Duration::from_secs(10));
        assert_eq!(data.len(), 1_000_000);
        assert!(matches!(end, Some(Event::End)));
    }
}
