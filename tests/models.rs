//! The drivers, tested in-process through the library: a small line-upper-casing service runs
//! under each model (and each poller) via `tincan::model::serve_until`, and real clients talk
//! to it over 127.0.0.1. Prefork and privilege dropping fork or setuid the process, so they are
//! tested through the binary (`tincan echo`) instead.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tincan::model::{serve_until, Shutdown};
use tincan::net::{bind, BindOptions, ListenAddr, Listener};
use tincan::{
    Model, Next, Outbox, Peer, PollerKind, ReadBuf, ServeOptions, Service, Session, Waker,
};

// ---------------------------------------------------------------------------------------------
// The test service: each complete line comes back upper-cased. A few lines are commands:
// `TIMER <ms>` asks for a wake-up and answers `TIMER FIRED` from on_timer; `PEER` answers the
// peer address. Wakes answer `WOKEN`. At shutdown a session with half a line buffered finishes
// that line before closing.

#[derive(Default)]
struct Upper {
    wakers: Mutex<Vec<Waker>>,
    /// Sessions alive now (a session is dropped when its connection closes).
    live: Arc<AtomicUsize>,
    /// The largest outbox any session saw after queueing output.
    max_outbox: Arc<AtomicUsize>,
    service_shutdowns: AtomicUsize,
}

struct UpperSession {
    peer: Peer,
    live: Arc<AtomicUsize>,
    max_outbox: Arc<AtomicUsize>,
    finishing: bool,
}

impl Drop for UpperSession {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Service for Upper {
    type Session = UpperSession;

    fn open(&self, peer: &Peer, waker: Waker) -> UpperSession {
        self.wakers.lock().unwrap().push(waker);
        self.live.fetch_add(1, Ordering::SeqCst);
        UpperSession {
            peer: peer.clone(),
            live: Arc::clone(&self.live),
            max_outbox: Arc::clone(&self.max_outbox),
            finishing: false,
        }
    }

    fn on_shutdown(&self) {
        self.service_shutdowns.fetch_add(1, Ordering::SeqCst);
    }
}

impl Upper {
    fn wake_all(&self) {
        for w in self.wakers.lock().unwrap().iter() {
            w.wake();
        }
    }
}

impl Session for UpperSession {
    fn on_input(&mut self, input: &mut ReadBuf, out: &mut Outbox, now: Instant) -> Next {
        let mut next = Next::CONTINUE;
        while let Some(nl) = input.data().iter().position(|b| *b == b'\n') {
            let line = input.data()[..=nl].to_vec();
            input.consume(nl + 1);
            let text = String::from_utf8_lossy(&line);
            if let Some(ms) = text.trim().strip_prefix("TIMER ") {
                let ms: u64 = ms.parse().unwrap_or(10);
                next = Next::wake_at(now + Duration::from_millis(ms));
            } else if text.trim() == "PEER" {
                out.push_bytes(format!("{}\n", self.peer.remote).as_bytes());
            } else {
                out.push_bytes(&line.to_ascii_uppercase());
            }
            self.max_outbox.fetch_max(out.len(), Ordering::SeqCst);
            if self.finishing {
                return Next::CloseAfterFlush;
            }
        }
        // Bound what a line may hold, as every session must.
        if input.len() > 1 << 20 {
            return Next::Close;
        }
        next
    }

    fn on_eof(&mut self, input: &mut ReadBuf, out: &mut Outbox, _now: Instant) -> Next {
        out.push_bytes(&input.data().to_ascii_uppercase());
        input.clear();
        Next::CloseAfterFlush
    }

    fn on_timer(&mut self, out: &mut Outbox, _now: Instant) -> Next {
        out.push_bytes(b"TIMER FIRED\n");
        Next::CONTINUE
    }

    fn on_wake(&mut self, out: &mut Outbox, _now: Instant) -> Next {
        out.push_bytes(b"WOKEN\n");
        Next::CONTINUE
    }

    fn on_shutdown(&mut self, _out: &mut Outbox, _now: Instant) -> Next {
        // Half a line in flight: let it finish (the driver allows until the grace period ends).
        self.finishing = true;
        Next::CONTINUE
    }
}

// ---------------------------------------------------------------------------------------------
// Running a server in a thread.

#[derive(Clone, Copy, Debug)]
struct Flavour {
    model: Model,
    poller: PollerKind,
}

const ITERATIVE: Flavour = Flavour {
    model: Model::Iterative,
    poller: PollerKind::Epoll,
};
const THREADED: Flavour = Flavour {
    model: Model::Threaded,
    poller: PollerKind::Epoll,
};

fn event(poller: PollerKind) -> Flavour {
    Flavour {
        model: Model::Event,
        poller,
    }
}

/// Every in-process flavour: the models that do not fork, and every poller.
fn flavours() -> Vec<Flavour> {
    let mut v = vec![ITERATIVE, THREADED];
    v.extend(PollerKind::ALL.iter().map(|p| event(*p)));
    v
}

fn concurrent_flavours() -> Vec<Flavour> {
    flavours().into_iter().skip(1).collect()
}

struct TestServer {
    addr: String,
    shutdown: Shutdown,
    service: Arc<Upper>,
    thread: Option<JoinHandle<Result<(), tincan::model::ServeError>>>,
}

fn options(f: Flavour) -> ServeOptions {
    ServeOptions {
        model: f.model,
        poller: f.poller,
        workers: 2,
        grace: Duration::from_secs(5),
        ..ServeOptions::default()
    }
}

fn start(f: Flavour) -> TestServer {
    start_with(options(f), "127.0.0.1:0")
}

fn start_with(opts: ServeOptions, listen: &str) -> TestServer {
    let listener = bind(&listen.parse().unwrap(), &BindOptions::default()).expect("bind");
    start_on(opts, listener)
}

fn start_on(opts: ServeOptions, listener: Listener) -> TestServer {
    let addr = listener.local_addr_string();
    let service = Arc::new(Upper::default());
    let shutdown = Shutdown::new();
    let (s, sd) = (Arc::clone(&service), shutdown.clone());
    let thread = std::thread::spawn(move || serve_until(vec![listener], s, &opts, sd));
    TestServer {
        addr,
        shutdown,
        service,
        thread: Some(thread),
    }
}

impl TestServer {
    fn sock(&self) -> SocketAddr {
        self.addr.parse().unwrap()
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.sock()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Trigger shutdown and wait for serve_until to return (it must, within the grace period).
    fn stop(mut self) {
        self.shutdown.trigger();
        let t = self.thread.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !t.is_finished() {
            assert!(
                Instant::now() < deadline,
                "serve_until did not return after shutdown"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        t.join().unwrap().expect("serve_until returned an error");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

fn line(r: &mut impl BufRead) -> String {
    let mut s = String::new();
    r.read_line(&mut s).expect("read a line");
    s
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn every_model_answers_a_line_and_closes_after_eof() {
    for f in flavours() {
        let srv = start(f);
        let mut c = srv.connect();
        c.write_all(b"hello\nlast words").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        assert_eq!(got, "HELLO\nLAST WORDS", "{f:?}");
        srv.stop();
    }
}

#[test]
fn concurrent_models_serve_clients_at_the_same_time() {
    for f in concurrent_flavours() {
        let srv = start(f);
        // Both connections are open at once; the second is answered while the first waits.
        let a = srv.connect();
        let mut b = srv.connect();
        b.write_all(b"second\n").unwrap();
        assert_eq!(line(&mut BufReader::new(&mut b)), "SECOND\n", "{f:?}");
        let mut ra = BufReader::new(a.try_clone().unwrap());
        (&a).write_all(b"first\n").unwrap();
        assert_eq!(line(&mut ra), "FIRST\n", "{f:?}");
        srv.stop();
    }
}

#[test]
fn iterative_serves_one_connection_at_a_time() {
    let srv = start(ITERATIVE);
    let mut a = srv.connect();
    a.write_all(b"a\n").unwrap();
    let mut ra = BufReader::new(a.try_clone().unwrap());
    assert_eq!(line(&mut ra), "A\n");
    let mut b = srv.connect();
    b.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    b.write_all(b"b\n").unwrap();
    let mut buf = [0u8; 8];
    assert!(
        b.read(&mut buf).is_err(),
        "the second client was served while the first was open"
    );
    drop(ra);
    drop(a);
    b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(line(&mut BufReader::new(&mut b)), "B\n");
    srv.stop();
}

#[test]
fn messages_split_across_many_reads_are_reassembled() {
    for f in flavours() {
        let srv = start(f);
        let mut c = srv.connect();
        c.set_nodelay(true).unwrap();
        for piece in [&b"sp"[..], b"lit ", b"acr", b"oss\nand ", b"two\n"] {
            c.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut r = BufReader::new(c);
        assert_eq!(line(&mut r), "SPLIT ACROSS\n", "{f:?}");
        assert_eq!(line(&mut r), "AND TWO\n", "{f:?}");
        srv.stop();
    }
}

#[test]
fn a_megabyte_goes_through_and_back_intact() {
    for f in flavours() {
        let srv = start(f);
        let c = srv.connect();
        let payload: Vec<u8> = (0..1_000_000u32)
            .map(|i| b"abcdefghij\n"[i as usize % 11])
            .collect();
        let expect = payload.to_ascii_uppercase();
        let mut w = c.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            w.write_all(&payload).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        (&c).read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert!(
            got == expect,
            "{f:?}: {} bytes back of {}",
            got.len(),
            expect.len()
        );
        srv.stop();
    }
}

fn many_clients(f: Flavour, n: usize) {
    let mut opts = options(f);
    opts.max_connections = 2 * n;
    let srv = start_with(opts, "127.0.0.1:0");
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = srv.connect();
        c.write_all(format!("client {i} says {}\n", "x".repeat(i % 50)).as_bytes())
            .unwrap();
        conns.push(c);
    }
    // Every client is connected (and has spoken) before any answer is read.
    for (i, c) in conns.iter_mut().enumerate() {
        let want = format!("CLIENT {i} SAYS {}\n", "X".repeat(i % 50));
        let mut got = vec![0u8; want.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), want, "{f:?}");
    }
    drop(conns);
    srv.stop();
}

#[test]
fn a_thousand_concurrent_clients_each_get_their_own_bytes_threaded() {
    many_clients(THREADED, 1000);
}

#[test]
fn a_thousand_concurrent_clients_each_get_their_own_bytes_event_epoll() {
    many_clients(event(PollerKind::Epoll), 1000);
}

#[test]
fn a_thousand_concurrent_clients_each_get_their_own_bytes_event_poll() {
    many_clients(event(PollerKind::Poll), 1000);
}

#[test]
fn a_vanishing_client_leaves_the_others_unharmed() {
    for f in concurrent_flavours() {
        let srv = start(f);
        let mut steady = srv.connect();
        let mut r = BufReader::new(steady.try_clone().unwrap());
        {
            // Half a message, then gone with a reset (SO_LINGER 0) and without a goodbye.
            let v = socket2::Socket::from(srv.connect());
            v.set_linger(Some(Duration::ZERO)).unwrap();
            (&v).write_all(b"half a mess").unwrap();
        }
        {
            let v = srv.connect();
            (&v).write_all(b"another half").unwrap();
        }
        steady.write_all(b"still here\n").unwrap();
        assert_eq!(line(&mut r), "STILL HERE\n", "{f:?}");
        assert!(
            wait_until(Duration::from_secs(5), || srv
                .service
                .live
                .load(Ordering::SeqCst)
                == 1),
            "{f:?}: the vanished clients' sessions were not dropped"
        );
        srv.stop();
    }
}

#[test]
fn port_zero_reports_the_port_really_bound() {
    let args = tincan::cli::ServerArgs {
        listen: vec!["127.0.0.1:0".into()],
        model: None,
        workers: None,
        poller: None,
        max_connections: None,
        backlog: None,
        reuse_port: false,
        grace: None,
        send_timeout: None,
        user: None,
        group: None,
        umask: None,
    };
    let (listeners, opts) = args.setup("127.0.0.1:7007").expect("setup");
    assert_eq!(opts.model, Model::Event);
    let addr = listeners[0].local_addr_string();
    let sa: SocketAddr = addr.parse().expect("a socket address");
    assert_eq!(sa.ip().to_string(), "127.0.0.1");
    assert_ne!(sa.port(), 0);
    // Something really listens there.
    TcpStream::connect(sa).expect("connect to the reported address");
}

#[test]
fn ipv6_loopback_is_served() {
    if bind(&"[::1]:0".parse().unwrap(), &BindOptions::default()).is_err() {
        eprintln!("skipped: this machine cannot bind ::1");
        return;
    }
    for f in [THREADED, event(PollerKind::Epoll)] {
        let l = bind(&"[::1]:0".parse().unwrap(), &BindOptions::default()).unwrap();
        let srv = start_on(options(f), l);
        assert!(srv.addr.starts_with("[::1]:"), "{}", srv.addr);
        let mut c = srv.connect();
        c.write_all(b"PEER\n").unwrap();
        assert!(line(&mut BufReader::new(&mut c)).starts_with("[::1]:"));
        srv.stop();
    }
}

#[test]
fn unix_sockets_serve_replace_stale_files_and_refuse_live_ones() {
    let dir = std::env::temp_dir().join(format!("tincan-models-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    // A stale file: a socket nobody listens on any more.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let addr: ListenAddr = format!("unix:{}", path.display()).parse().unwrap();
    let l = bind(&addr, &BindOptions::default()).expect("a stale socket file is replaced");
    assert_eq!(l.local_addr_string(), format!("unix:{}", path.display()));
    let srv = start_on(options(event(PollerKind::Epoll)), l);

    // A live one is refused with a sentence.
    let e = bind(&addr, &BindOptions::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "another server is listening on unix:{}; stop it or pick another path",
            path.display()
        )
    );

    let mut c = UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"over unix\nPEER\n").unwrap();
    let mut r = BufReader::new(c);
    assert_eq!(line(&mut r), "OVER UNIX\n");
    assert_eq!(line(&mut r), format!("unix:{}\n", path.display()));
    drop(r);
    srv.stop();
    assert!(!path.exists(), "the socket file outlived the server");

    // A missing directory says so.
    let e = bind(
        &"unix:/nonexistent-tincan/x.sock".parse().unwrap(),
        &BindOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("directory /nonexistent-tincan does not exist"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_busy_port_is_one_sentence_naming_it() {
    let first = bind(&"127.0.0.1:0".parse().unwrap(), &BindOptions::default()).unwrap();
    let addr = first.local_addr_string();
    let e = bind(&addr.parse().unwrap(), &BindOptions::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "{addr} is already in use; stop the other server or pick another port with --listen"
        )
    );
}

#[test]
fn graceful_shutdown_lets_a_client_mid_conversation_finish() {
    for f in flavours() {
        let srv = start(f);
        let mut c = srv.connect();
        c.write_all(b"warm up\n").unwrap();
        let mut r = BufReader::new(c.try_clone().unwrap());
        assert_eq!(line(&mut r), "WARM UP\n");
        c.write_all(b"half a ").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        srv.shutdown.trigger();
        std::thread::sleep(Duration::from_millis(100));
        // New clients are no longer accepted (the listener is closed or no longer polled).
        c.write_all(b"line\n").unwrap();
        assert_eq!(line(&mut r), "HALF A LINE\n", "{f:?}");
        let mut rest = String::new();
        r.read_to_string(&mut rest).unwrap();
        assert_eq!(
            rest, "",
            "{f:?}: the server did not close after the last line"
        );
        assert_eq!(
            srv.service.service_shutdowns.load(Ordering::SeqCst),
            1,
            "{f:?}"
        );
        srv.stop();
    }
}

#[test]
fn graceful_shutdown_closes_stragglers_when_the_grace_period_ends() {
    for f in [THREADED, event(PollerKind::Epoll)] {
        let mut opts = options(f);
        opts.grace = Duration::from_millis(300);
        let srv = start_with(opts, "127.0.0.1:0");
        let mut c = srv.connect();
        c.write_all(b"never finished").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let t0 = Instant::now();
        srv.stop();
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{f:?}: took {:?}",
            t0.elapsed()
        );
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
    }
}

#[test]
fn a_session_asking_for_a_wake_up_gets_on_timer() {
    for f in flavours() {
        let srv = start(f);
        let mut c = srv.connect();
        let t0 = Instant::now();
        c.write_all(b"TIMER 100\n").unwrap();
        assert_eq!(line(&mut BufReader::new(&mut c)), "TIMER FIRED\n", "{f:?}");
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(100),
            "{f:?}: fired after {took:?}"
        );
        assert!(took < Duration::from_secs(3), "{f:?}: fired after {took:?}");
        srv.stop();
    }
}

#[test]
fn a_waker_called_from_another_thread_reaches_on_wake() {
    for f in concurrent_flavours() {
        let srv = start(f);
        let mut c = srv.connect();
        c.write_all(b"hi\n").unwrap();
        let mut r = BufReader::new(c.try_clone().unwrap());
        assert_eq!(line(&mut r), "HI\n");
        let service = Arc::clone(&srv.service);
        std::thread::spawn(move || service.wake_all())
            .join()
            .unwrap();
        assert_eq!(line(&mut r), "WOKEN\n", "{f:?}");
        srv.stop();
    }
}

#[test]
fn a_client_that_never_reads_cannot_grow_the_outbox_past_the_high_water_mark() {
    for f in concurrent_flavours() {
        let mut opts = options(f);
        opts.high_water = 64 * 1024;
        opts.send_timeout = Duration::from_secs(1);
        opts.grace = Duration::from_millis(200);
        let srv = start_with(opts, "127.0.0.1:0");
        let c = srv.connect();
        c.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
        // Write lines until the server stops reading (our writes time out) and never read.
        let chunk = "y".repeat(1023) + "\n";
        let mut sent = 0usize;
        while sent < 64 << 20 {
            match (&c).write(chunk.as_bytes()) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        assert!(
            sent < 64 << 20,
            "{f:?}: the server kept reading 64 MiB from a client that never reads"
        );
        let max = srv.service.max_outbox.load(Ordering::SeqCst);
        // One read (16 KiB) of output may land on top of the mark, never more.
        assert!(max <= 64 * 1024 + 16 * 1024, "{f:?}: outbox grew to {max}");
        // The send timeout then closes the connection.
        assert!(
            wait_until(Duration::from_secs(5), || srv
                .service
                .live
                .load(Ordering::SeqCst)
                == 0),
            "{f:?}: a peer that took no output for the send timeout was not closed"
        );
        srv.stop();
    }
}

#[test]
fn threaded_stops_accepting_at_max_connections() {
    let mut opts = options(THREADED);
    opts.max_connections = 2;
    let srv = start_with(opts, "127.0.0.1:0");
    let mut a = srv.connect();
    let b = srv.connect();
    a.write_all(b"a\n").unwrap();
    let mut ra = BufReader::new(a.try_clone().unwrap());
    assert_eq!(line(&mut ra), "A\n");
    (&b).write_all(b"b\n").unwrap();
    let mut rb = BufReader::new(b.try_clone().unwrap());
    assert_eq!(line(&mut rb), "B\n");
    let mut c = srv.connect();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    c.write_all(b"c\n").unwrap();
    let mut buf = [0u8; 4];
    assert!(
        c.read(&mut buf).is_err(),
        "a third connection was served over the cap of 2"
    );
    assert_eq!(srv.service.live.load(Ordering::SeqCst), 2);
    drop((ra, a));
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(line(&mut BufReader::new(&mut c)), "C\n");
    drop((rb, b));
    srv.stop();
}
