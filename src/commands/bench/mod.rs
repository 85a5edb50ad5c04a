//! `tincan bench`: drive load at an HTTP server, an echo server or a chat server and report
//! latency percentiles, throughput and errors; `selftest` proves the generator outruns the
//! servers it measures; `models` compares tincan's own models and pollers.

pub mod models;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};

use crate::bench::chat::ChatLoad;
use crate::bench::echo::EchoLoad;
use crate::bench::http::{build_request, HttpLoad, Url};
use crate::bench::report::{self, Run};
use crate::bench::responder::{Responder, HELLO};
use crate::bench::{self, Load, LoadOptions, Outcome};
use crate::error::{Error, Result};
use crate::protocol::framing::Framing;
use models::ModelsArgs;

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  tincan bench http http://127.0.0.1:8000/ -c 50 -d 10    GET one URL, 50 connections, 10 s
  tincan bench echo 127.0.0.1:7007 --framing line          echo round trips
  tincan bench chat 127.0.0.1:4040 -c 100                  broadcasts in one room
  tincan bench selftest                                    the generator's own ceiling
  tincan bench models --protocol http --out /tmp/models    every model and poller, a chart")]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Load an HTTP server with one repeated request (GET by default).
    ///
    /// Response bodies are counted, not kept: past the first read, a body of known length is
    /// dropped in the kernel without being copied, so a large file measures the server rather
    /// than this generator.
    Http(HttpArgs),
    /// Load an echo server: one framed message out, one framed message back.
    Echo(EchoArgs),
    /// Load a tincanchat server: each message's own broadcast back ends its round trip.
    Chat(ChatArgs),
    /// Drive an in-process trivial HTTP responder: the generator's own ceiling.
    Selftest(SelftestArgs),
    /// Run tincan under every model and poller at several connection counts; write a table and
    /// an SVG chart.
    Models(ModelsArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// How much load, for how long: shared by every load subcommand.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Connections held open at once.
    #[arg(long, short = 'c', value_name = "N", default_value_t = 50)]
    pub connections: usize,
    /// Seconds to run (default 10, unless --requests is given).
    #[arg(
        long,
        short = 'd',
        value_name = "SECONDS",
        allow_negative_numbers = true
    )]
    pub duration: Option<f64>,
    /// Stop after this many requests (with --duration: whichever comes first).
    #[arg(long, short = 'n', value_name = "N")]
    pub requests: Option<u64>,
    /// Open loop: send this many requests per second in total, timing each from when it was
    /// due (no coordinated omission). Default: closed loop.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub rate: Option<f64>,
    /// Load threads (default: available cores; never more than connections).
    #[arg(long, short = 't', value_name = "N")]
    pub threads: Option<usize>,
    /// Seconds a request may wait for its whole reply (or a connect for its answer).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 5.0,
        allow_negative_numbers = true
    )]
    pub timeout: f64,
    /// Off: a new connection for every request.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub keepalive: OnOff,
    /// Seconds of load before counting starts (connections opened, caches warmed). The
    /// connections open over its first half, evenly spread; with none, all at once.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub warmup: f64,
    /// Put the wait of unanswered requests (timed out, or still waiting at the end) into the
    /// latency percentiles too, so a server that starves connections cannot hide it.
    #[arg(long)]
    pub count_unanswered: bool,
    /// Connect from these local addresses in turn (comma-separated, e.g. 127.0.0.2,127.0.0.3).
    /// On loopback, where a client that closes first leaves its port in TIME_WAIT, one
    /// address allows about 14,000 new connections a second; each one more adds as many.
    #[arg(long, value_name = "ADDR,...", value_delimiter = ',')]
    pub source: Vec<std::net::IpAddr>,
    /// Print a progress line on stderr each second even when it is not a terminal.
    #[arg(long)]
    pub progress: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl LoadArgs {
    pub fn options(&self) -> Result<LoadOptions> {
        let secs = |what: &str, v: f64| crate::units::seconds(what, v, false);
        let duration = match (self.duration, self.requests) {
            (Some(d), _) => Some(secs("--duration", d)?),
            (None, Some(_)) => None,
            (None, None) => Some(Duration::from_secs(10)),
        };
        if self.requests == Some(0) {
            return Err(Error::Usage("--requests must be at least 1".into()));
        }
        if self.requests.is_some() && self.warmup > 0.0 {
            // The warm-up would spend the requests before counting began (an outside pass saw
            // `-n 1000 --warmup 1` end in 0.4 s with every request uncounted).
            return Err(Error::Usage(
                "--requests counts every request from the first, so it cannot follow a \
                 --warmup; use --duration with --warmup, or --requests alone"
                    .into(),
            ));
        }
        if self.threads == Some(0) {
            return Err(Error::Usage("--threads must be at least 1".into()));
        }
        let timeout = secs("--timeout", self.timeout)?;
        let defaults = LoadOptions::default();
        Ok(LoadOptions {
            connections: self.connections,
            threads: self.threads.unwrap_or(defaults.threads).max(1),
            duration,
            requests: self.requests,
            rate: self.rate,
            timeout,
            connect_timeout: timeout.min(defaults.connect_timeout),
            keepalive: self.keepalive == OnOff::On,
            progress: self.progress || std::io::stderr().is_terminal(),
            retry_delay: defaults.retry_delay,
            warmup: Duration::try_from_secs_f64(self.warmup).map_err(|_| {
                Error::Usage("--warmup must be a number of seconds, 0 or more".into())
            })?,
            count_unanswered: self.count_unanswered,
            sources: self.source.clone(),
            also: Vec::new(),
            tls: None,
            stop: defaults.stop,
        })
    }
}

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  tincan bench http http://127.0.0.1:8000/ -d 10           closed loop, 50 connections
  tincan bench http http://127.0.0.1:8000/big.bin -c 8 -n 1000    1000 requests, then stop
  tincan bench http http://127.0.0.1:8000/ --rate 20000    open loop: 20,000 requests a second
  tincan bench http https://localhost:8443/ --tls-ca cert.pem -H 'Accept-Encoding: gzip'
  tincan bench http http://127.0.0.1:8000/ --keepalive off --json    a connection per request")]
pub struct HttpArgs {
    /// The URL to request, e.g. http://127.0.0.1:8080/index.html (https:// speaks TLS, checking
    /// the server's certificate: see --tls-ca and --insecure).
    pub url: String,
    /// Request method.
    #[arg(long, short = 'X', default_value = "GET")]
    pub method: String,
    /// An extra request header, `Name: value`. Repeat for several.
    #[arg(long = "header", short = 'H', value_name = "HEADER")]
    pub headers: Vec<String>,
    #[command(flatten)]
    pub tls: crate::flags::ClientTlsArgs,
    #[command(flatten)]
    pub load: LoadArgs,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  tincan bench echo 127.0.0.1:7007                   64-byte lines, 50 connections, 10 s
  tincan bench echo 127.0.0.1:7007 --framing raw -s 4096 -c 10
  tincan bench echo 127.0.0.1:7007 --framing null -m PING    the book's NUL-ended messages")]
pub struct EchoArgs {
    /// The echo server, HOST:PORT.
    pub addr: String,
    /// Message framing (raw, close, null, line, length, fixed:N).
    #[arg(long, default_value = "line", value_parser = parse_framing)]
    pub framing: Framing,
    /// Message size in bytes (of `x`), unless --message is given.
    #[arg(long, short = 's', value_name = "BYTES", default_value_t = 64)]
    pub size: usize,
    /// The message to send, e.g. PING (the reply may differ: any one framed message counts).
    #[arg(long, short = 'm', value_name = "TEXT")]
    pub message: Option<String>,
    /// The longest reply accepted (bytes; K/M suffixes).
    #[arg(long, value_name = "SIZE", value_parser = crate::units::size::<usize>,
        default_value = crate::units::show_size(crate::protocol::echo::DEFAULT_MAX_FRAME as u64))]
    pub max_frame: usize,
    #[command(flatten)]
    pub load: LoadArgs,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  tincan bench chat 127.0.0.1:4040 -c 100 -d 10      100 clients in one room
  tincan bench chat 127.0.0.1:4040 --target 127.0.0.1:4041 -c 20    across two servers
                                                     of one room (tincan chat --redis)")]
pub struct ChatArgs {
    /// The chat server, HOST:PORT.
    pub addr: String,
    /// Another server of the same room (repeatable): the connections are spread over ADDR and
    /// these in turn, so each message's round trip crosses instances (`tincan chat --redis`).
    #[arg(long = "target", value_name = "HOST:PORT")]
    pub targets: Vec<String>,
    /// Message size in bytes (at least the round-trip token).
    #[arg(long, short = 's', value_name = "BYTES", default_value_t = 64)]
    pub size: usize,
    /// The longest broadcast accepted (bytes; K/M suffixes).
    #[arg(long, value_name = "SIZE", value_parser = crate::units::size::<usize>,
        default_value = crate::units::show_size(crate::protocol::chat::ChatConfig::default().max_message as u64))]
    pub max_frame: usize,
    #[command(flatten)]
    pub load: LoadArgs,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  tincan bench selftest                  the generator against its own trivial responder
  tincan bench selftest --responder-only    only the responder, for another generator (wrk)")]
pub struct SelftestArgs {
    /// Only run the responder: print `listening on http://ADDR` and answer until killed (to drive it
    /// with another generator, e.g. wrk, for comparison).
    #[arg(long)]
    pub responder_only: bool,
    #[command(flatten)]
    pub load: LoadArgs,
}

fn parse_framing(s: &str) -> std::result::Result<Framing, String> {
    s.parse()
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.command {
        BenchCommand::Http(a) => http(a),
        BenchCommand::Echo(a) => echo(a),
        BenchCommand::Chat(a) => chat(a),
        BenchCommand::Selftest(a) => selftest(a),
        BenchCommand::Models(a) => models::run(a),
    }
}

/// Raise the descriptor limit and say so if it still cannot hold `connections`.
pub fn check_fd_limit(connections: usize) {
    let limit = bench::raise_fd_limit();
    let need = connections as u64 + 64;
    if limit < need {
        eprintln!(
            "tincan: warning: the open-file limit is {limit}, too low for {connections} connections; \
             raise it (ulimit -n) or expect connect errors"
        );
    }
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    let addrs = crate::net::resolve_host_port(addr).map_err(Error::Usage)?;
    Ok(addrs[0])
}

/// Set by the SIGINT/SIGTERM handler; every run's [`LoadOptions::stop`].
static INTERRUPTED: std::sync::LazyLock<Arc<std::sync::atomic::AtomicBool>> =
    std::sync::LazyLock::new(|| Arc::new(std::sync::atomic::AtomicBool::new(false)));

/// SIGINT (Ctrl-C) or SIGTERM ends the run at once with the figures so far, as `ab` does,
/// instead of losing them; a second SIGINT exits at once (130).
fn stop_early_on_signals() -> Result<()> {
    let flag = std::sync::Arc::clone(&INTERRUPTED);
    let install = || -> std::io::Result<()> {
        signal_hook::flag::register_conditional_shutdown(libc::SIGINT, 130, Arc::clone(&flag))?;
        for sig in [libc::SIGINT, libc::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&flag))?;
        }
        Ok(())
    };
    install().map_err(|e| Error::io("could not install the SIGINT/SIGTERM handlers", e))
}

/// One line a second on stderr while `run` goes on; lines of the warm-up say so, and the
/// totals after it count from its end, as the result does.
fn show_progress(run: &bench::engine::Running) {
    let mut last = 0u64;
    // Replies and errors of the warm-up, taken off the totals once counting has begun.
    let mut base: Option<(u64, u64)> = (run.start <= run.launched).then_some((0, 0));
    let mut tick = run.launched;
    let mut printed = false;
    // On a terminal each line overwrites the last; in a log (`--progress` into a file) each
    // is a line of its own.
    let (lead, end) = if std::io::stderr().is_terminal() {
        ("\r", "")
    } else {
        ("", "\n")
    };
    loop {
        tick += Duration::from_secs(1);
        while Instant::now() < tick {
            if run.is_finished() {
                if printed && end.is_empty() {
                    eprintln!();
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (all_replies, all_errors) = run.counts().get();
        // A line within the warm-up (the one at its end included) shows its totals, marked.
        let (warm, (r0, e0)) = match base {
            Some(b) => ("", b),
            None => ("  (warm-up, not counted)", (0, 0)),
        };
        if base.is_none() && tick >= run.start {
            base = Some((all_replies, all_errors));
        }
        let (replies, errors) = (
            all_replies.saturating_sub(r0),
            all_errors.saturating_sub(e0),
        );
        let secs = tick.duration_since(run.launched).as_secs();
        let left = run.deadline.map_or(String::new(), |d| {
            format!(", {} s left", d.saturating_duration_since(tick).as_secs())
        });
        eprint!(
            "{lead}{secs:>4} s  {replies:>10} replies  {:>10} /s  {errors} errors{left}{warm}   {end}",
            all_replies - last
        );
        printed = true;
        last = all_replies;
    }
}

fn execute<L: Load>(
    kind: &str,
    target: &str,
    addr: SocketAddr,
    load: L,
    load_args: &LoadArgs,
    tls: Option<crate::bench::engine::TlsTarget>,
) -> Result<Outcome> {
    execute_with(kind, target, addr, Vec::new(), load, load_args, tls)
}

/// [`execute`], with more servers to spread the connections over.
fn execute_with<L: Load>(
    kind: &str,
    target: &str,
    addr: SocketAddr,
    also: Vec<SocketAddr>,
    load: L,
    load_args: &LoadArgs,
    tls: Option<crate::bench::engine::TlsTarget>,
) -> Result<Outcome> {
    let mut opts = load_args.options()?;
    opts.tls = tls;
    opts.also = also;
    for ip in &opts.sources {
        // A source this machine does not have fails every connect with the same error; say
        // so once, before the run, rather than count a run of connect errors.
        if let Err(e) = std::net::UdpSocket::bind((*ip, 0)) {
            return Err(Error::Usage(format!(
                "cannot use source address {ip}: {}; give addresses of this machine (any \
                 127.x.y.z works on loopback)",
                super::send::describe(&e)
            )));
        }
    }
    check_fd_limit(opts.connections);
    stop_early_on_signals()?;
    opts.stop = Arc::clone(&INTERRUPTED);
    let running = bench::engine::start(addr, Arc::new(load), &opts)?;
    if opts.progress {
        show_progress(&running);
    }
    let outcome = running.join()?;
    let interrupted = INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed);
    if interrupted && outcome.elapsed.is_zero() {
        eprintln!("tincan: interrupted during the warm-up; nothing was measured");
        std::process::exit(130);
    }
    if interrupted {
        eprintln!(
            "tincan: interrupted after {:.1} s; the figures below cover that much",
            outcome.elapsed.as_secs_f64()
        );
    }
    let run = Run {
        kind,
        target,
        opts: &opts,
        outcome: &outcome,
    };
    if load_args.json {
        println!("{}", report::json(&run));
    } else {
        print!("{}", report::table(&run));
    }
    let s = &outcome.stats;
    if s.replies == 0 && s.connects == 0 && s.errors.get(bench::ErrorKind::Connect) > 0 {
        // Every attempt failed to connect: the figures above are all zero, so say why once.
        let why = match std::net::TcpStream::connect_timeout(&addr, opts.connect_timeout) {
            Err(e) => super::send::describe(&e),
            Ok(_) => "every attempt failed, though it answers now".into(),
        };
        return Err(Error::Client(format!(
            "could not connect to {target}: {why}"
        )));
    }
    if s.replies == 0 {
        // Nothing to measure: the figures above are all zero, so say why once, and fail.
        let why = if s.errors.total() == 0 {
            "the run ended before any reply came back; give it more --duration".to_string()
        } else {
            let kinds: Vec<String> = bench::ErrorKind::ALL
                .iter()
                .filter(|k| s.errors.get(**k) > 0)
                .map(|k| format!("{} {} ({})", s.errors.get(*k), k, k.meaning()))
                .collect();
            format!("every request failed: {}", kinds.join(", "))
        };
        return Err(Error::Client(format!("no reply from {target}: {why}")));
    }
    let refused = s.errors.get(bench::ErrorKind::Status);
    if refused == s.replies {
        // Every reply was a 4xx or 5xx: the figures measure an error page, not the target, so
        // a script that checks the exit status must not take them for a result (as `ab`
        // counts them as failures).
        return Err(Error::Client(format!(
            "every reply from {target} had an error status ({refused} of {}); check the URL, \
             the method and the headers",
            s.replies
        )));
    }
    if interrupted {
        // The figures are out; the exit status still says the run did not finish.
        let _ = std::io::Write::flush(&mut std::io::stdout());
        std::process::exit(130);
    }
    Ok(outcome)
}

fn http(a: HttpArgs) -> Result<()> {
    let url = Url::parse(&a.url).map_err(Error::Usage)?;
    let addr = url.resolve().map_err(Error::Client)?;
    let keepalive = a.load.keepalive == OnOff::On;
    let req = build_request(&a.method, &url, &a.headers, keepalive).map_err(Error::Usage)?;
    let load = HttpLoad::new(req, &a.method);
    let tls = if url.tls {
        let config = a.tls.config(&[crate::protocol::http::ALPN_HTTP11])?;
        let name = crate::tls::client::server_name(&url.host)?;
        // One handshake before the run: a certificate the flags do not trust is one line
        // now, not a run of connect errors.
        check_handshake(addr, &config, &name, &a.url)?;
        Some(crate::bench::engine::TlsTarget { config, name })
    } else {
        a.tls.unused("use an https:// URL")?;
        None
    };
    execute("http", &a.url, addr, load, &a.load, tls).map(drop)
}

fn check_handshake(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    name: &rustls::pki_types::ServerName<'static>,
    url: &str,
) -> Result<()> {
    let limit = Duration::from_secs(5);
    let fail = |e: std::io::Error| {
        Error::Client(format!(
            "could not connect to {url}: {}",
            super::send::describe(&e)
        ))
    };
    let sock = std::net::TcpStream::connect_timeout(&addr, limit).map_err(fail)?;
    sock.set_read_timeout(Some(limit)).map_err(fail)?;
    sock.set_write_timeout(Some(limit)).map_err(fail)?;
    crate::tls::client::TlsStream::connect(sock, name.clone(), config)
        .map(drop)
        .map_err(|e| crate::flags::tls_failure(url, &e))
}

fn echo(a: EchoArgs) -> Result<()> {
    let addr = resolve(&a.addr)?;
    let msg = match &a.message {
        Some(m) => m.as_bytes().to_vec(),
        None => EchoLoad::filler(a.size),
    };
    if let Framing::Fixed(n) = a.framing {
        if msg.len() != n {
            return Err(Error::Usage(format!(
                "--framing fixed:{n} needs a {n}-byte message; give --size {n}"
            )));
        }
    }
    if msg.len() > a.max_frame {
        return Err(Error::Usage(format!(
            "the {}-byte message is longer than --max-frame {}, so no reply could be accepted; \
             raise --max-frame",
            msg.len(),
            a.max_frame
        )));
    }
    if a.framing.delimiter().is_some_and(|d| msg.contains(&d)) {
        return Err(Error::Usage(format!(
            "the message contains the {} framing's delimiter",
            a.framing
        )));
    }
    let load = EchoLoad::new(a.framing, &msg, a.max_frame);
    // The close framing ends every message with the connection: say keep-alive off.
    let mut load_args = a.load.clone();
    if a.framing == Framing::Close {
        load_args.keepalive = OnOff::Off;
    }
    execute("echo", &a.addr, addr, load, &load_args, None).map(drop)
}

fn chat(a: ChatArgs) -> Result<()> {
    let addr = resolve(&a.addr)?;
    let also = a
        .targets
        .iter()
        .map(|t| resolve(t))
        .collect::<Result<Vec<_>>>()?;
    let load = ChatLoad::new(a.size, a.max_frame);
    let mut named = a.addr.clone();
    for t in &a.targets {
        named.push_str(", ");
        named.push_str(t);
    }
    execute_with("chat", &named, addr, also, load, &a.load, None).map(drop)
}

fn selftest(a: SelftestArgs) -> Result<()> {
    let responder =
        Responder::start(HELLO).map_err(|e| Error::io("cannot start the responder", e))?;
    if a.responder_only {
        println!("listening on http://{}", responder.addr());
        loop {
            std::thread::park();
        }
    }
    let url = format!("http://{}/", responder.addr());
    let parsed = Url::parse(&url).map_err(Error::Usage)?;
    let req =
        build_request("GET", &parsed, &[], a.load.keepalive == OnOff::On).map_err(Error::Usage)?;
    let outcome = execute(
        "selftest",
        &url,
        responder.addr(),
        HttpLoad::new(req, "GET"),
        &a.load,
        None,
    )?;
    if !a.load.json {
        println!(
            "  the responder (one thread, fixed 13-byte reply) answered {} requests; the \
             generator's ceiling on this machine is at least {:.0} req/s",
            responder.served(),
            outcome.replies_per_sec()
        );
    }
    Ok(())
}
