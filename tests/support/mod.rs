//! Start `tincan` servers on 127.0.0.1:0 and stop them by pid; the models and pollers every
//! protocol test loops over; small socket helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// Held by the tests that load both cores for seconds (a thousand busy connections, a room
/// chatting at 4 MB/s, CPU-pinned measurements), so they run one at a time rather than on top
/// of each other; the light tests still run beside them.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `tincan` binary cargo built for these tests.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tincan")
}

/// One way of running a server: the flags that select a model (and poller).
#[derive(Clone, Copy, Debug)]
pub struct ModelFlags(pub &'static [&'static str]);

/// Every model, and every poller of the event model: what "every protocol under every model"
/// loops over.
pub const ALL_MODELS: &[ModelFlags] = &[
    ModelFlags(&["--model", "iterative"]),
    ModelFlags(&["--model", "threaded"]),
    ModelFlags(&["--model", "prefork", "--workers", "2"]),
    ModelFlags(&["--model", "event", "--workers", "2", "--poller", "epoll"]),
    ModelFlags(&["--model", "event", "--workers", "2", "--poller", "poll"]),
    ModelFlags(&["--model", "event", "--workers", "2", "--poller", "select"]),
];

/// The models that serve many clients at once (everything but iterative).
pub fn concurrent_models() -> impl Iterator<Item = ModelFlags> {
    ALL_MODELS.iter().copied().skip(1)
}

impl std::fmt::Display for ModelFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

/// A running `tincan` server; killed (by its pid) when dropped.
pub struct Server {
    child: Option<Child>,
    /// Every address it printed as `listening on ADDR`, in order.
    pub addrs: Vec<String>,
    /// Later stdout lines.
    pub stdout: Receiver<String>,
    /// Everything it writes to stderr, in a file (read with [`Server::stderr`]).
    stderr_path: PathBuf,
}

impl Server {
    /// Start `tincan ARGS...`, wait until it printed its first `listening on` line (and as many
    /// as `--listen` flags were given), and return it. Panics with its stderr if it exits first.
    pub fn start(args: &[&str]) -> Server {
        Server::start_in(args, None)
    }

    pub fn start_in(args: &[&str], dir: Option<&Path>) -> Server {
        let mut cmd = Command::new(bin());
        cmd.args(args);
        if let Some(d) = dir {
            cmd.current_dir(d);
        }
        Server::launch(cmd, args)
    }

    /// Start `tincan ARGS...` with at most `nofile` open descriptors (soft and hard limit, so
    /// the server cannot raise it), through util-linux's `prlimit`, which execs it.
    pub fn start_with_nofile(args: &[&str], nofile: u32) -> Server {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(bin())
            .args(args);
        Server::launch(cmd, args)
    }

    fn launch(mut cmd: Command, args: &[&str]) -> Server {
        let listens = args
            .iter()
            .filter(|a| **a == "--listen" || **a == "-l")
            .count()
            .max(1);
        let stderr_path = std::env::temp_dir().join(format!(
            "tincan-test-{}-{}.stderr",
            std::process::id(),
            unique()
        ));
        let stderr = std::fs::File::create(&stderr_path).expect("create stderr file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd.spawn().expect("spawn tincan");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let mut server = Server {
            child: Some(child),
            addrs: Vec::new(),
            stdout: rx,
            stderr_path,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.addrs.len() < listens {
            let left = deadline.saturating_duration_since(Instant::now());
            match server
                .stdout
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening on ") {
                        server.addrs.push(a.trim().to_string());
                    }
                }
                Err(_) => {
                    if let Some(status) = server.try_status() {
                        panic!(
                            "tincan {args:?} exited ({status}) before listening; stderr:\n{}",
                            server.stderr()
                        );
                    }
                    if Instant::now() >= deadline {
                        panic!(
                            "tincan {args:?} printed no `listening on` line in 20 s; stderr:\n{}",
                            server.stderr()
                        );
                    }
                }
            }
        }
        server
    }

    /// The first address it listens on, as a socket address (TCP only), without the scheme
    /// of its start line (`http://`, `https://`, `tls://`).
    pub fn addr(&self) -> SocketAddr {
        tincan::commands::start::StartLine::address(&self.addrs[0])
            .parse()
            .unwrap_or_else(|_| panic!("not a TCP address: {}", self.addrs[0]))
    }

    /// `http://ADDR` for the first address.
    /// The URL of `path` on its first listener: HTTP servers print theirs (`http://...`,
    /// `https://...`); an address without a scheme is taken as plain HTTP.
    pub fn url(&self, path: &str) -> String {
        if self.addrs[0].contains("://") {
            format!("{}{}", self.addrs[0], path)
        } else {
            format!("http://{}{}", self.addrs[0], path)
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Send a signal (e.g. `libc::SIGTERM`) to the server process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().unwrap().try_wait().ok().flatten()
    }

    /// Wait up to `limit` for the server to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

/// Run `tincan ARGS...` to completion with `stdin` as input; (status, stdout, stderr).
pub fn run_tincan(args: &[&str], stdin: &[u8], limit: Duration) -> (ExitStatus, String, String) {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tincan");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    // Drained as it comes: an output past the pipe's 64 KiB would block the child forever
    // (a shell's completion script is that long).
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("tincan {args:?} did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The arguments of `tincan serve ROOT` on a free port, access log off, under model `m`, plus
/// `extra` flags.
pub fn serve_args<'a>(root: &'a str, m: ModelFlags, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "serve",
        root,
        "--listen",
        "127.0.0.1:0",
        "--access-log",
        "off",
    ];
    args.extend_from_slice(m.0);
    args.extend_from_slice(extra);
    args
}

/// Connect with a 10 s read/write timeout (a hung server fails the test instead of hanging it).
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Read until the peer closes (or the timeout fails the read).
pub fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).expect("read to end");
    v
}

/// Read exactly `n` bytes.
pub fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    s.read_exact(&mut v).expect("read exact");
    v
}

/// A port the OS chose just now (bound on 127.0.0.1:0, then let go), for a server that must
/// be told its port before it starts (pebble's config names tincan's ports).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Is `prog` on PATH? Tests that need an outside client skip (with a printed reason) without it.
pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Fail the test, with what to install, unless the shell command `check` succeeds: a test
/// whose client is missing must not pass by doing nothing.
/// Skip the rest of a test for what the machine is, not for a missing tool (those fail: see
/// [`require`]): no `::1`, not root, one CPU. Said on stderr, and listed in the summary
/// `scripts/test` prints at the end (it names a file in `TINCAN_SKIPPED` for the lines).
pub fn skip(why: &str) {
    eprintln!("skipped: {why}");
    if let Some(path) = std::env::var_os("TINCAN_SKIPPED") {
        let test = std::thread::current().name().unwrap_or("?").to_string();
        let line = format!("{test}: {why}\n");
        let _ = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
    }
}

pub fn require(check: &str) {
    let ok = Command::new("sh")
        .args(["-c", check])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test needs `{check}` to succeed; .ci/run installs what it needs"
    );
}

/// Run curl (`-sS --max-time 10` plus `args`) and return its output; a failing curl fails the
/// test with `what` (the model, the case) and curl's stderr.
pub fn curl(what: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "{what}: curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The kernel's TLS counters (`/proc/net/tls_stat`, which exists while the `tls` module is
/// loaded): `None` where the kernel offers no TLS (these machines; `scripts/ktls-vm` runs the
/// kernel TLS tests in a guest whose kernel has it).
pub fn tls_stat() -> Option<std::collections::HashMap<String, u64>> {
    let text = std::fs::read_to_string("/proc/net/tls_stat").ok()?;
    Some(
        text.lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((w.next()?.to_string(), w.next()?.parse().ok()?))
            })
            .collect(),
    )
}

/// `python3 -c SCRIPT ARGS...`, a script that prints "ok" when all went well: asserted, with
/// what it wrote to standard error (its traceback, say) when not.
pub fn python_ok(what: &str, script: &str, args: &[&str]) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Resident memory of process `pid` in KiB (VmRSS from /proc).
pub fn rss_kib(pid: i32) -> u64 {
    rss_of(pid).expect("VmRSS in /proc/PID/status")
}

/// Resident memory of process `pid` and its children (prefork's workers) in KiB.
pub fn rss_tree_kib(pid: i32) -> u64 {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    rss_kib(pid)
        + children
            .split_whitespace()
            .filter_map(|c| rss_of(c.parse().ok()?))
            .sum::<u64>()
}

/// VmRSS of `pid`, if it is still there.
fn rss_of(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p =
            std::env::temp_dir().join(format!("tincan-{tag}-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Write `first` and `second` back to back with Nagle's algorithm on. Nagle holds `second`
/// until `first` is acknowledged, so a server that sits on that ACK (delayed ACKs, with nothing
/// to answer yet) stalls the exchange by the delayed-ACK timer: 40 ms or more on Linux.
pub fn split_write(w: &mut TcpStream, first: &[u8], second: &[u8]) {
    w.set_nodelay(false).unwrap();
    w.write_all(first).unwrap();
    w.write_all(second).unwrap();
}

/// The median time `round` takes over `rounds` runs.
pub fn median_time(rounds: usize, mut round: impl FnMut()) -> Duration {
    let mut took: Vec<Duration> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            round();
            t.elapsed()
        })
        .collect();
    took.sort();
    took[rounds / 2]
}

/// `len` bytes no compression or pattern can fake (a simple LCG's, from `seed`): a body whose
/// every byte is checked when it arrives.
pub fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect()
}
