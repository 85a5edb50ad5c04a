//! `tincan bench models`: the servers tutorial's table of server designs, redone properly. The tincan binary
//! itself is started under each model (and each poller of the event model) on 127.0.0.1:0, the
//! same load is run at each connection count, and the figures become a Markdown table and an
//! SVG chart (throughput, p99 and starved connections against connections) in `--out`.
//!
//! Every point is bounded: a fresh server, `--duration` of load with capped connect and request
//! timeouts (so the iterative model at 10,000 connections shows up as errors and a long p99,
//! not as a hang), then SIGTERM to the server's process group and SIGKILL if it lingers.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde_json::json;

use crate::bench::echo::EchoLoad;
use crate::bench::http::{build_request, HttpLoad, Url};
use crate::bench::report::fmt_latency;
use crate::bench::svg::{chart, Panel, Series};
use crate::bench::{Load, LoadOptions, Outcome};
use crate::error::{Error, Result};
use crate::protocol::framing::Framing;

/// How long a server may take to print its `listening on` line.
const START_LIMIT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// The file the HTTP load fetches.
const FILE_SIZE: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// GET of a 1 KiB file from `tincan serve`.
    Http,
    /// Line-framed round trips with `tincan echo --framing line`.
    Echo,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  tincan bench models --out /tmp/models              HTTP, 1 to 10,000 connections
  tincan bench models --protocol echo --only event-epoll,threaded --connections 1,100
  tincan bench models --replot /tmp/models/models.json    redraw the chart beside its JSON")]
pub struct ModelsArgs {
    /// Connection counts to measure, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,10,100,1000,10000",
        value_name = "N,N,..."
    )]
    pub connections: Vec<usize>,
    /// Seconds of load at each point.
    #[arg(
        long,
        short = 'd',
        default_value_t = 5.0,
        value_name = "SECONDS",
        allow_negative_numbers = true
    )]
    pub duration: f64,
    /// Where to write models.md, models.json and models.svg [default: a new directory under
    /// the temporary directory, named when the run starts; with --replot, the JSON's own].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// What to load the servers with.
    #[arg(long, value_enum, default_value_t = Protocol::Http)]
    pub protocol: Protocol,
    /// Only these variants (e.g. iterative,event-epoll); default: all six.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub only: Vec<String>,
    /// Worker processes (prefork) and event-loop threads (event) per server.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub workers: usize,
    /// Load threads (default: available cores).
    #[arg(long, short = 't', value_name = "N")]
    pub threads: Option<usize>,
    /// Seconds a request may wait for its reply before it counts as a timeout.
    #[arg(
        long,
        default_value_t = 2.0,
        value_name = "SECONDS",
        allow_negative_numbers = true
    )]
    pub timeout: f64,
    /// Seconds of load before each point's counting starts. The connections open over its first
    /// half, evenly spread (10,000 at once would overflow the listen backlog).
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "SECONDS",
        allow_negative_numbers = true
    )]
    pub warmup: f64,
    /// Measure nothing: redraw models.md and models.svg in --out from this models.json.
    #[arg(long, value_name = "FILE")]
    pub replot: Option<PathBuf>,
    /// Echo message size in bytes.
    #[arg(long, short = 's', default_value_t = 64, value_name = "BYTES")]
    pub size: usize,
    /// Let the scheduler place the server and the load anywhere. By default (with two CPUs or
    /// more) the server runs on CPU 0 and the load on the others: unpinned, the figures swing
    /// by a factor of two between runs with where the threads happen to land.
    #[arg(long)]
    pub no_pin: bool,
}

/// Where the server and the load run: CPU 0 for the server, the rest for the load.
#[derive(Clone, Copy, Debug)]
struct Pinning {
    cpus: usize,
}

impl Pinning {
    /// Pin the calling thread (and so every load thread it starts later) to CPUs 1..n.
    fn choose(a: &ModelsArgs) -> Option<Pinning> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if a.no_pin || cpus < 2 {
            return None;
        }
        let load: Vec<usize> = (1..cpus).collect();
        match crate::sys::pin_to_cpus(0, &load) {
            Ok(()) => Some(Pinning { cpus }),
            Err(e) => {
                eprintln!(
                    "tincan: warning: cannot pin the load to CPUs 1-{}: {e}",
                    cpus - 1
                );
                None
            }
        }
    }

    fn load_threads(&self) -> usize {
        self.cpus - 1
    }
}

/// One way of running the server.
#[derive(Clone, Debug)]
struct Variant {
    name: String,
    flags: Vec<String>,
}

fn variants(workers: usize) -> Vec<Variant> {
    let w = workers.to_string();
    let v = |name: &str, flags: &[&str]| Variant {
        name: name.to_string(),
        flags: flags.iter().map(|s| s.to_string()).collect(),
    };
    vec![
        v("iterative", &["--model", "iterative"]),
        v("threaded", &["--model", "threaded"]),
        v("prefork", &["--model", "prefork", "--workers", &w]),
        v(
            "event-epoll",
            &["--model", "event", "--poller", "epoll", "--workers", &w],
        ),
        v(
            "event-poll",
            &["--model", "event", "--poller", "poll", "--workers", &w],
        ),
        v(
            "event-select",
            &["--model", "event", "--poller", "select", "--workers", &w],
        ),
    ]
}

/// One measured point.
#[derive(Clone, Debug)]
struct Point {
    variant: String,
    connections: usize,
    replies_per_sec: f64,
    p50: Duration,
    p99: Duration,
    replies: u64,
    errors: u64,
    /// Requests still unanswered at the end of the point.
    unfinished: u64,
    /// Connections that got no reply at all during the point.
    starved: u64,
    /// Why there is no figure (the server would not start).
    failed: Option<String>,
}

/// What a Ctrl-C must clean up: the process group of the server being measured (it is in a
/// group of its own, so the terminal's SIGINT does not reach it) and the temporary root.
static LEFT_BEHIND: std::sync::Mutex<(Option<u32>, Option<PathBuf>)> =
    std::sync::Mutex::new((None, None));

fn left_behind() -> std::sync::MutexGuard<'static, (Option<u32>, Option<PathBuf>)> {
    LEFT_BEHIND.lock().unwrap_or_else(|e| e.into_inner())
}

/// On SIGINT or SIGTERM: stop the server being measured (its whole group), remove the
/// temporary root, and exit 130 as an interrupted command does. Without this, Ctrl-C left a
/// `tincan serve` listening and its directory in /tmp.
fn clean_up_on_interrupt() -> Result<()> {
    let stop = crate::model::Shutdown::for_process()
        .map_err(|e| Error::io("could not install the SIGINT/SIGTERM handlers", e))?;
    std::thread::spawn(move || {
        while !stop.wait_timeout(Duration::from_secs(3600)) {}
        // Held to the exit: no server is started (that happens under this lock) after the
        // one stopped here.
        let guard = left_behind();
        if let Some(pid) = guard.0.and_then(|p| libc::pid_t::try_from(p).ok()) {
            let _ = crate::sys::kill(-pid, libc::SIGTERM);
        }
        if let Some(root) = &guard.1 {
            let _ = std::fs::remove_dir_all(root);
        }
        eprintln!("tincan: interrupted; the server under test was stopped");
        std::process::exit(130);
    });
    Ok(())
}

/// A server child in its own process group, stopped (the whole group) when dropped.
struct ServerProc {
    child: Child,
    addr: SocketAddr,
}

impl ServerProc {
    /// Start `exe ARGS` in `dir`; `pin`: on CPU 0 (set the moment it exists, before it starts
    /// any thread or worker, which inherit it).
    fn start(
        exe: &Path,
        args: &[String],
        dir: &Path,
        pin: bool,
    ) -> std::result::Result<ServerProc, String> {
        // Started and recorded under the lock the interrupt watcher takes: it sees every
        // server that runs.
        let mut recorded = left_behind();
        let mut child = Command::new(exe)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so prefork's workers are stopped with their parent.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        recorded.0 = Some(child.id());
        drop(recorded);
        if pin {
            let pid = libc::pid_t::try_from(child.id()).unwrap_or(0);
            if pid > 0 {
                if let Err(e) = crate::sys::pin_to_cpus(pid, &[0]) {
                    eprintln!("tincan: warning: cannot pin the server to CPU 0: {e}");
                }
            }
        }
        let out = child.stdout.take().ok_or("no stdout pipe")?;
        let err = child.stderr.take().ok_or("no stderr pipe")?;
        // The first stderr line says why a server would not start; keep draining the rest.
        let (etx, erx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(err).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = etx.send(first);
            }
            for _ in lines {}
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let mut proc = ServerProc {
            child,
            addr: "127.0.0.1:0".parse().expect("literal address"),
        };
        match rx.recv_timeout(START_LIMIT) {
            Ok(line) => match line.strip_prefix("listening on ").and_then(|a| {
                crate::commands::start::StartLine::address(a.trim())
                    .parse()
                    .ok()
            }) {
                Some(a) => {
                    proc.addr = a;
                    Ok(proc)
                }
                None => Err(format!(
                    "its first line was not `listening on ADDR`: {line}"
                )),
            },
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let why = erx
                    .recv_timeout(Duration::from_secs(1))
                    .unwrap_or_else(|_| "no reason given".into());
                Err(format!("`tincan {}` exited: {why}", args.join(" ")))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
                "`tincan {}` printed no `listening on` line within {} s",
                args.join(" "),
                START_LIMIT.as_secs()
            )),
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.stop();
        // Forgotten only once it is gone: an interrupt meanwhile stops it too.
        left_behind().0 = None;
    }
}

impl ServerProc {
    fn stop(&mut self) {
        let group = format!("-{}", self.child.id());
        let signal = |sig: &str| {
            let _ = Command::new("kill")
                .args(["-s", sig, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        signal("TERM");
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal("KILL");
        let _ = self.child.wait();
    }
}

/// A temporary document root holding the 1 KiB file; removed when dropped.
struct DocRoot(PathBuf);

impl DocRoot {
    fn new() -> Result<DocRoot> {
        let p = std::env::temp_dir().join(format!("tincan-bench-models-{}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| Error::io("cannot create a temp dir", e))?;
        left_behind().1 = Some(p.clone());
        std::fs::write(p.join("1k.bin"), vec![b'x'; FILE_SIZE])
            .map_err(|e| Error::io("cannot write the 1 KiB file", e))?;
        Ok(DocRoot(p))
    }
}

impl Drop for DocRoot {
    fn drop(&mut self) {
        left_behind().1 = None;
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(mut a: ModelsArgs) -> Result<()> {
    if let Some(file) = a.replot.clone() {
        let (chosen, points) = load_points(&file, &mut a)?;
        let out = match &a.out {
            Some(dir) => out_dir(dir)?,
            None => file
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
        };
        return write_outputs(&a, &out, &chosen, &points, false);
    }
    if a.connections.is_empty() || a.connections.contains(&0) {
        return Err(Error::Usage(
            "--connections needs counts of at least 1, e.g. 1,10,100".into(),
        ));
    }
    let duration = crate::units::seconds("--duration", a.duration, false)?;
    let timeout = crate::units::seconds("--timeout", a.timeout, false)?;
    if Duration::try_from_secs_f64(a.warmup).is_err() {
        return Err(Error::Usage(
            "--warmup must be a number of seconds, 0 or more".into(),
        ));
    }
    if a.workers == 0 {
        return Err(Error::Usage("--workers must be at least 1".into()));
    }
    let mut chosen = variants(a.workers);
    if !a.only.is_empty() {
        for name in &a.only {
            if !chosen.iter().any(|v| &v.name == name) {
                let names: Vec<_> = chosen.iter().map(|v| v.name.as_str()).collect();
                return Err(Error::Usage(format!(
                    "'{name}' is not a variant; use {}",
                    names.join(", ")
                )));
            }
        }
        chosen.retain(|v| a.only.contains(&v.name));
    }
    let most = a.connections.iter().copied().max().unwrap_or(1);
    let limit = crate::bench::raise_fd_limit();
    if limit < most as u64 + 64 {
        eprintln!(
            "tincan: warning: the open-file limit is {limit}, below the {most} connections asked \
             for; the largest points will show connect errors (raise the hard limit: ulimit -Hn)"
        );
    }
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("cannot find the tincan binary itself", e))?;
    clean_up_on_interrupt()?;
    let root = DocRoot::new()?;
    let pin = Pinning::choose(&a);
    // Never into the current directory by default: a run from a checkout must not write over
    // the figures committed there.
    let out = match &a.out {
        Some(dir) => out_dir(dir)?,
        None => fresh_out_dir()?,
    };
    eprintln!("writing the results to {}", out.display());

    let total = chosen.len() * a.connections.len();
    eprintln!(
        "measuring {} variants x {} connection counts, {:.1} s each (about {:.0} s)",
        chosen.len(),
        a.connections.len(),
        a.duration,
        total as f64 * (a.duration + 1.0)
    );
    let rig = Rig {
        exe: &exe,
        root: root.0.as_path(),
        duration,
        timeout,
        pin,
    };
    let mut points = Vec::new();
    for v in &chosen {
        for &c in &a.connections {
            // A server that would not start at all will not start at the next count either.
            if let Some(prev) = points.last().filter(|p: &&Point| {
                p.variant == v.name && p.failed.as_deref().is_some_and(|w| w.contains("exited"))
            }) {
                let mut p: Point = prev.clone();
                p.connections = c;
                points.push(p);
                continue;
            }
            let p = measure(&rig, v, c, &a);
            match &p.failed {
                Some(why) => eprintln!("{:>13} c={c:<6} failed: {why}", v.name),
                None => eprintln!(
                    "{:>13} c={c:<6} {:>10.0} req/s  p50 {:>9}  p99 {:>9}  errors {}  starved connections {}",
                    v.name,
                    p.replies_per_sec,
                    fmt_latency(p.p50),
                    fmt_latency(p.p99),
                    p.errors,
                    p.starved
                ),
            }
            points.push(p);
        }
    }

    write_outputs(&a, &out, &chosen, &points, true)
}

/// Read a models.json back: its points, its variants in order, and its settings into `a`.
fn load_points(file: &Path, a: &mut ModelsArgs) -> Result<(Vec<Variant>, Vec<Point>)> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::io(format!("cannot read {}", file.display()), e))?;
    let bad = || Error::Setup(format!("{} is not a models.json", file.display()));
    let j: serde_json::Value = serde_json::from_str(&text).map_err(|_| bad())?;
    a.protocol = match j["protocol"].as_str() {
        Some("echo") => Protocol::Echo,
        _ => Protocol::Http,
    };
    a.duration = j["duration_s"].as_f64().unwrap_or(a.duration);
    a.workers = j["workers"].as_u64().map_or(a.workers, |w| w as usize);
    let mut chosen: Vec<Variant> = Vec::new();
    let mut points = Vec::new();
    let mut counts = Vec::new();
    for p in j["points"].as_array().ok_or_else(bad)? {
        let variant = p["variant"].as_str().ok_or_else(bad)?.to_string();
        let connections = p["connections"].as_u64().ok_or_else(bad)? as usize;
        if !chosen.iter().any(|v| v.name == variant) {
            chosen.push(Variant {
                name: variant.clone(),
                flags: Vec::new(),
            });
        }
        if !counts.contains(&connections) {
            counts.push(connections);
        }
        let us = |k: &str| Duration::from_secs_f64(p[k].as_f64().unwrap_or(0.0).max(0.0) / 1e6);
        points.push(Point {
            variant,
            connections,
            replies_per_sec: p["replies_per_sec"].as_f64().unwrap_or(0.0),
            p50: us("p50_us"),
            p99: us("p99_us"),
            replies: p["replies"].as_u64().unwrap_or(0),
            errors: p["errors"].as_u64().unwrap_or(0),
            unfinished: p["unfinished"].as_u64().unwrap_or(0),
            starved: p["starved"].as_u64().unwrap_or(0),
            failed: p["failed"].as_str().map(str::to_string),
        });
    }
    counts.sort_unstable();
    a.connections = counts;
    Ok((chosen, points))
}

/// `dir`, created if missing; a file there is a usage error.
fn out_dir(dir: &Path) -> Result<PathBuf> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::Usage(format!(
            "--out {} is a file; give a directory for the table, chart and figures",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    Ok(dir.to_path_buf())
}

/// A new directory of this run's own under the temporary directory.
fn fresh_out_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir();
    for n in 0u32.. {
        let dir = base.join(format!("tincan-models-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => continue,
            Err(e) => return Err(Error::io(format!("cannot create {}", dir.display()), e)),
        }
    }
    unreachable!("the loop returns")
}

fn write_outputs(
    a: &ModelsArgs,
    out: &Path,
    chosen: &[Variant],
    points: &[Point],
    with_json: bool,
) -> Result<()> {
    let what = match a.protocol {
        Protocol::Http => "HTTP GET of a 1 KiB file (tincan serve, keep-alive)".to_string(),
        Protocol::Echo => format!("{}-byte line echo round trips (tincan echo)", a.size),
    };
    let md = markdown(&what, chosen, a, points);
    print!("{md}");
    let write = |name: &str, body: &str| {
        let p = out.join(name);
        std::fs::write(&p, body).map_err(|e| Error::io(format!("cannot write {}", p.display()), e))
    };
    write("models.md", &md)?;
    write("models.svg", &svg(&what, chosen, points))?;
    if !with_json {
        eprintln!("wrote {0}/models.md, {0}/models.svg", out.display());
        return Ok(());
    }
    let j = json!({
        "protocol": format!("{:?}", a.protocol).to_lowercase(),
        "duration_s": a.duration,
        "workers": a.workers,
        "points": points.iter().map(|p| json!({
            "variant": p.variant,
            "connections": p.connections,
            "replies_per_sec": p.replies_per_sec,
            "p50_us": p.p50.as_secs_f64() * 1e6,
            "p99_us": p.p99.as_secs_f64() * 1e6,
            "replies": p.replies,
            "errors": p.errors,
            "unfinished": p.unfinished,
            "starved": p.starved,
            "failed": p.failed,
        })).collect::<Vec<_>>(),
    });
    write("models.json", &format!("{j:#}\n"))?;
    eprintln!(
        "wrote {0}/models.md, {0}/models.svg, {0}/models.json",
        out.display()
    );
    Ok(())
}

/// What every point is measured with.
struct Rig<'a> {
    exe: &'a Path,
    root: &'a Path,
    duration: Duration,
    timeout: Duration,
    pin: Option<Pinning>,
}

fn measure(rig: &Rig<'_>, v: &Variant, connections: usize, a: &ModelsArgs) -> Point {
    let Rig {
        exe,
        root,
        duration,
        timeout,
        pin,
    } = *rig;
    let mut args: Vec<String> = match a.protocol {
        Protocol::Http => vec![
            "serve".into(),
            ".".into(),
            "--access-log".into(),
            "off".into(),
        ],
        Protocol::Echo => vec!["echo".into(), "--framing".into(), "line".into()],
    };
    args.extend(["--listen".to_string(), "127.0.0.1:0".to_string()]);
    args.extend(v.flags.iter().cloned());
    let failed = |why: String| Point {
        variant: v.name.clone(),
        connections,
        replies_per_sec: 0.0,
        p50: Duration::ZERO,
        p99: Duration::ZERO,
        replies: 0,
        errors: 0,
        unfinished: 0,
        starved: 0,
        failed: Some(why),
    };
    let server = match ServerProc::start(exe, &args, root, pin.is_some()) {
        Ok(s) => s,
        Err(why) => return failed(why),
    };
    let opts = LoadOptions {
        connections,
        threads: a
            .threads
            .unwrap_or_else(|| pin.map_or(LoadOptions::default().threads, |p| p.load_threads())),
        duration: Some(duration),
        requests: None,
        rate: None,
        timeout,
        connect_timeout: timeout.min(Duration::from_secs(2)),
        keepalive: true,
        progress: false,
        retry_delay: Duration::from_millis(50),
        warmup: Duration::try_from_secs_f64(a.warmup).unwrap_or(Duration::ZERO),
        // A model that serves one connection while the rest wait must show it in p99.
        count_unanswered: true,
        also: Vec::new(),
        sources: Vec::new(),
        tls: None,
        stop: LoadOptions::default().stop,
    };
    let outcome = match a.protocol {
        Protocol::Http => {
            let url = Url::parse(&format!("http://{}/1k.bin", server.addr)).expect("our own URL");
            let req = build_request("GET", &url, &[], true).expect("a valid request");
            load(server.addr, HttpLoad::new(req, "GET"), &opts)
        }
        Protocol::Echo => load(
            server.addr,
            EchoLoad::new(Framing::Line, &EchoLoad::filler(a.size), 1 << 20),
            &opts,
        ),
    };
    drop(server);
    match outcome {
        Ok(o) => Point {
            variant: v.name.clone(),
            connections,
            replies_per_sec: o.replies_per_sec(),
            p50: o.stats.percentile(50.0),
            p99: o.stats.percentile(99.0),
            replies: o.stats.replies,
            errors: o.stats.errors.total(),
            unfinished: o.stats.unfinished,
            starved: o.stats.starved,
            failed: None,
        },
        Err(e) => failed(e.to_string()),
    }
}

fn load<L: Load>(addr: SocketAddr, l: L, opts: &LoadOptions) -> Result<Outcome> {
    crate::bench::run(addr, Arc::new(l), opts)
}

fn cell<'a>(points: &'a [Point], v: &Variant, c: usize) -> Option<&'a Point> {
    points
        .iter()
        .find(|p| p.variant == v.name && p.connections == c)
}

fn markdown(what: &str, chosen: &[Variant], a: &ModelsArgs, points: &[Point]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## tincan models: {what}\n\n{:.1} s per point, {} worker(s) per prefork/event server, \
         load generator on the same machine ({}; `tincan bench models`). Cells: replies/s · p99 \
         (errors: connect failures and timeouts; starved: connections that got no reply at all). \
         The p99 counts the wait of every unanswered request too (timed out, or still waiting \
         at the end).\n",
        a.duration,
        a.workers,
        if a.no_pin {
            "unpinned"
        } else {
            "server on CPU 0, load on the other CPUs"
        }
    );
    let _ = write!(s, "| model |");
    for c in &a.connections {
        let _ = write!(s, " {c} conn |");
    }
    let _ = write!(s, "\n|---|");
    for _ in &a.connections {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s);
    for v in chosen {
        let _ = write!(s, "| {} |", v.name);
        for &c in &a.connections {
            match cell(points, v, c) {
                Some(p) if p.failed.is_none() => {
                    let _ = write!(s, " {:.0} · {}", p.replies_per_sec, fmt_latency(p.p99));
                    if p.errors > 0 {
                        let _ = write!(s, " ({} err)", p.errors);
                    }
                    if p.starved > 0 {
                        let pct = p.starved as f64 * 100.0 / c.max(1) as f64;
                        if pct < 1.0 {
                            let _ = write!(s, " (<1% starved)");
                        } else {
                            let _ = write!(s, " ({pct:.0}% starved)");
                        }
                    }
                    let _ = write!(s, " |");
                }
                _ => {
                    let _ = write!(s, " failed |");
                }
            }
        }
        let _ = writeln!(s);
    }
    s
}

fn svg(what: &str, chosen: &[Variant], points: &[Point]) -> String {
    let series = |f: &dyn Fn(&Point) -> Option<f64>| -> Vec<Series> {
        chosen
            .iter()
            .map(|v| Series {
                name: v.name.clone(),
                points: points
                    .iter()
                    .filter(|p| p.variant == v.name)
                    .map(|p| {
                        (
                            p.connections as f64,
                            if p.failed.is_some() { None } else { f(p) },
                        )
                    })
                    .collect(),
            })
            .collect()
    };
    let panels = [
        Panel {
            title: "throughput (higher is better)".into(),
            y_label: "replies/s".into(),
            log_y: false,
            series: series(&|p| Some(p.replies_per_sec)),
        },
        Panel {
            title: "p99 latency (lower is better)".into(),
            y_label: "p99, µs (log)".into(),
            log_y: true,
            series: series(&|p| (p.replies > 0).then_some(p.p99.as_secs_f64() * 1e6)),
        },
        Panel {
            // Where a model leaves clients unserved (iterative serving one echo connection while
            // the rest wait, select past FD_SETSIZE) it shows here, even when the replies it does
            // give are fast.
            title: "starved connections, % (lower is better)".into(),
            y_label: "connections with no reply, %".into(),
            log_y: false,
            series: series(&|p| Some(p.starved as f64 * 100.0 / p.connections.max(1) as f64)),
        },
    ];
    chart(
        &format!("tincan models: {what}"),
        "connections (log)",
        &panels,
    )
}
