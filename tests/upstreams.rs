//! The reverse proxy on the drivers' own loops: concurrency bounded only by the connection cap,
//! kept upstream connections, failover between upstreams, bodies that stream both ways in
//! bounded memory. Upstreams are real: a keep-alive server written here (it counts the
//! connections it accepts), Python's `ThreadingHTTPServer` and a WSGI app under `wsgiref`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{self, connect, ModelFlags, Server, TempDir, ALL_MODELS};

/// A keep-alive HTTP/1.1 upstream: a thread per connection, any number of requests on each.
/// - `/sink`: reads the body (length or chunked) and answers how many bytes it had;
/// - `/big?n=BYTES`: answers that many bytes;
/// - `/slow?ms=N`: answers after N ms;
/// - anything else: `hello`.
struct KeepAlive {
    addr: SocketAddr,
    /// Connections accepted, in all.
    accepted: Arc<AtomicUsize>,
    /// Connections open now (the proxy has not closed them).
    open: Arc<AtomicUsize>,
}

fn keepalive_upstream() -> KeepAlive {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (count, live) = (Arc::clone(&accepted), Arc::clone(&open));
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            live.fetch_add(1, Ordering::SeqCst);
            let live = Arc::clone(&live);
            std::thread::spawn(move || {
                serve_upstream(s);
                live.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    KeepAlive {
        addr,
        accepted,
        open,
    }
}

fn serve_upstream(s: TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let field = |name: &str| {
            head.lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let mut got = 0u64;
        let mut sink = vec![0u8; 64 * 1024];
        if let Some(len) = field("content-length") {
            let mut left: u64 = len.parse().unwrap();
            while left > 0 {
                let n = r.read(&mut sink[..left.min(65536) as usize]).unwrap();
                assert!(n > 0, "the body ended early");
                left -= n as u64;
                got += n as u64;
            }
        } else if field("transfer-encoding").as_deref() == Some("chunked") {
            loop {
                let mut size = String::new();
                r.read_line(&mut size).unwrap();
                let n = u64::from_str_radix(size.trim(), 16).unwrap();
                let mut left = n + 2;
                while left > 0 {
                    let k = r.read(&mut sink[..left.min(65536) as usize]).unwrap();
                    assert!(k > 0);
                    left -= k as u64;
                }
                got += n;
                // The last chunk's CRLF read above is the end of the (empty) trailer section.
                if n == 0 {
                    break;
                }
            }
        }
        let target = head.split(' ').nth(1).unwrap_or("/").to_string();
        let query = |k: &str| -> u64 {
            target
                .split_once('?')
                .and_then(|(_, q)| q.split('&').find_map(|p| p.strip_prefix(&format!("{k}="))))
                .map_or(0, |v| v.parse().unwrap())
        };
        let ok = if target.starts_with("/up/sink") {
            let body = got.to_string();
            write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        } else if target.starts_with("/up/big") {
            let n = query("n");
            let block = vec![b'z'; 64 * 1024];
            write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n").and_then(|()| {
                let mut left = n;
                while left > 0 {
                    let k = left.min(block.len() as u64) as usize;
                    w.write_all(&block[..k])?;
                    left -= k as u64;
                }
                Ok(())
            })
        } else if target.starts_with("/up/slow") {
            std::thread::sleep(Duration::from_millis(query("ms")));
            w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
        } else {
            w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        };
        if ok.is_err() {
            return;
        }
    }
}

fn serve(m: ModelFlags, root: &TempDir, extra: &[&str]) -> Server {
    Server::start(&support::serve_args(
        root.path().to_str().unwrap(),
        m,
        extra,
    ))
}

/// Status and body of one request on a fresh connection (`Connection: close`).
fn fetch(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: front\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&all)));
    let status = std::str::from_utf8(&all[9..12]).unwrap().parse().unwrap();
    (status, all[end + 4..].to_vec())
}

/// A Python upstream from the standard library, started on 127.0.0.1:0; its first line says
/// where it listens.
struct PyUpstream {
    child: Child,
    addr: SocketAddr,
}

impl Drop for PyUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python_upstream(code: &str) -> PyUpstream {
    let mut child = Command::new("python3")
        .args(["-c", code])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("python said {line:?}"));
    PyUpstream { child, addr }
}

/// `http.server.ThreadingHTTPServer` whose `/up/slow` answers after one second.
const PY_SLOW: &str = r#"
import http.server, time, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path.startswith("/up/slow"):
            time.sleep(1)
        body = b"slow"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
s = S(("127.0.0.1", 0), H)
print("%s:%d" % s.server_address, flush=True)
s.serve_forever()
"#;

/// A WSGI application under `wsgiref` (one request at a time, HTTP/1.0 answers).
const PY_WSGI: &str = r#"
from wsgiref.simple_server import make_server, WSGIRequestHandler
class Q(WSGIRequestHandler):
    def log_message(self, *a):
        pass
def app(environ, start):
    n = int(environ.get("CONTENT_LENGTH") or 0)
    got = environ["wsgi.input"].read(n) if n else b""
    body = ("%s %s %d" % (environ["REQUEST_METHOD"], environ["PATH_INFO"], len(got))).encode()
    start("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
s = make_server("127.0.0.1", 0, app, handler_class=Q)
print("%s:%d" % s.server_address, flush=True)
s.serve_forever()
"#;

/// The models that serve many clients at once, one event poller each: the proxy's
/// concurrency is theirs.
const CONCURRENT: [usize; 3] = [1, 2, 3];

/// 300 requests in flight at once to an upstream that takes a second each: all answered 200,
/// none refused by a pool (the driver holds each upstream connection like a client's).
#[test]
fn three_hundred_concurrent_slow_requests_are_all_answered() {
    let _heavy = support::heavy();
    let up = python_upstream(PY_SLOW);
    let root = TempDir::new("proxy-many");
    let route = format!("/up=http://{}", up.addr);
    for i in CONCURRENT {
        let m = ALL_MODELS[i];
        let s = serve(m, &root, &["--proxy", &route]);
        let addr = s.addr();
        let t0 = Instant::now();
        let clients: Vec<_> = (0..300)
            .map(|_| std::thread::spawn(move || fetch(addr, "/up/slow").0))
            .collect();
        let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        let ok = statuses.iter().filter(|&&s| s == 200).count();
        assert_eq!(ok, 300, "{m}: {statuses:?}");
        // Concurrent, not one after another (300 s) or sixteen at a time (19 s).
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{m}: {:?}",
            t0.elapsed()
        );
    }
}

/// A proxied connection holds two descriptors, its own and its upstream's: under a descriptor
/// limit of 300, 200 requests in flight to a slow upstream are served in waves of what the
/// limit holds (the rest wait in the backlog), none answered 502 because no descriptor was
/// left to reach the upstream with, and the start says why the cap is lower.
#[test]
fn proxied_connections_past_the_descriptor_limit_wait_instead_of_failing() {
    support::require("prlimit");
    let _heavy = support::heavy();
    let up = python_upstream(PY_SLOW);
    let root = TempDir::new("proxy-nofile");
    let route = format!("/up=http://{}", up.addr);
    for i in CONCURRENT {
        let m = ALL_MODELS[i];
        let s = Server::start_with_nofile(
            &support::serve_args(root.path().to_str().unwrap(), m, &["--proxy", &route]),
            300,
        );
        let addr = s.addr();
        let clients: Vec<_> = (0..200)
            .map(|_| std::thread::spawn(move || fetch(addr, "/up/slow").0))
            .collect();
        let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        let ok = statuses.iter().filter(|&&s| s == 200).count();
        assert_eq!(ok, 200, "{m}: {statuses:?}\n{}", s.stderr());
        assert!(
            s.stderr().contains(
                "the descriptor limit is 300, and a proxied connection holds its upstream's too"
            ),
            "{m}: {}",
            s.stderr()
        );
    }
}

/// Sequential requests reuse kept upstream connections instead of opening one each; with
/// `--upstream-keepalive 0` every request opens its own.
#[test]
fn upstream_connections_are_kept_and_reused_under_every_model() {
    let root = TempDir::new("proxy-keep");
    for &m in ALL_MODELS {
        let up = keepalive_upstream();
        let route = format!("/up=http://{}", up.addr);
        let s = serve(m, &root, &["--proxy", &route]);
        for _ in 0..50 {
            assert_eq!(fetch(s.addr(), "/up/x"), (200, b"hello".to_vec()), "{m}");
        }
        let opened = up.accepted.load(Ordering::SeqCst);
        // One per process (prefork: per worker), give or take a worker that got few clients.
        assert!(
            opened <= 4,
            "{m}: 50 requests opened {opened} upstream connections"
        );

        let up = keepalive_upstream();
        let route = format!("/up=http://{}", up.addr);
        let s = serve(m, &root, &["--proxy", &route, "--upstream-keepalive", "0"]);
        for _ in 0..20 {
            assert_eq!(fetch(s.addr(), "/up/x").0, 200, "{m}");
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 20, "{m}");
    }
}

/// `--upstream-keepalive N` at its edge: six requests at once need six upstream connections;
/// once they are answered exactly N stay open (one worker), and the next requests go out on
/// those, opening none.
#[test]
fn the_kept_upstream_connections_stop_at_upstream_keepalive() {
    let root = TempDir::new("proxy-keep-cap");
    let one_worker = [
        ModelFlags(&["--model", "threaded"]),
        ModelFlags(&["--model", "prefork", "--workers", "1"]),
        ModelFlags(&["--model", "event", "--workers", "1", "--poller", "epoll"]),
        ModelFlags(&["--model", "event", "--workers", "1", "--poller", "select"]),
    ];
    for m in one_worker {
        let up = keepalive_upstream();
        let route = format!("/up=http://{}", up.addr);
        let s = serve(m, &root, &["--proxy", &route, "--upstream-keepalive", "2"]);
        let addr = s.addr();
        let clients: Vec<_> = (0..6)
            .map(|_| std::thread::spawn(move || fetch(addr, "/up/slow?ms=400").0))
            .collect();
        for c in clients {
            assert_eq!(c.join().unwrap(), 200, "{m}");
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 6, "{m}");
        let t0 = Instant::now();
        while up.open.load(Ordering::SeqCst) > 2 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(up.open.load(Ordering::SeqCst), 2, "{m}: kept past the cap");
        for _ in 0..4 {
            assert_eq!(fetch(addr, "/up/x").0, 200, "{m}");
        }
        assert_eq!(
            up.accepted.load(Ordering::SeqCst),
            6,
            "{m}: the kept ones unused"
        );
    }
}

/// A route with several upstreams: one that refuses connections is skipped (the request goes
/// to the next, the client never sees it, the log says so); with all of them down the answer is 502 and the
/// reason is logged with the route and the upstream.
#[test]
fn a_refusing_upstream_is_skipped_and_an_all_dead_route_says_why() {
    let root = TempDir::new("proxy-failover");
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead2 = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for i in [0, 1, 3] {
        let m = ALL_MODELS[i];
        let up = keepalive_upstream();
        let route = format!("/up=http://{dead},http://{}", up.addr);
        let s = serve(m, &root, &["--proxy", &route]);
        for _ in 0..10 {
            assert_eq!(fetch(s.addr(), "/up/x"), (200, b"hello".to_vec()), "{m}");
        }
        // The client never saw it, so the log says which upstream was left out and why.
        let err = s.stderr();
        assert!(
            err.contains(&format!(
                "/up (upstream {dead}): the upstream could not be reached: "
            )) && err.contains(&format!(
                "left out for 10 s (--upstream-fail-timeout), the request goes to /up (upstream {})",
                up.addr
            )),
            "{m}: {err}"
        );
        let route = format!("/up=http://{dead},http://{dead2}");
        let s = serve(m, &root, &["--proxy", &route]);
        assert_eq!(fetch(s.addr(), "/up/x").0, 502, "{m}");
        let deadline = Instant::now() + Duration::from_secs(2);
        while !s.stderr().contains("could not be reached") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let err = s.stderr();
        assert!(
            err.contains("/up (upstream 127.0.0.1:") && err.contains("could not be reached"),
            "{m}: {err}"
        );
    }
}

/// Request and response bodies stream through in bounded memory: a 256 MiB upload (by length
/// and chunked) and a 256 MiB download leave the server's resident memory within 32 MiB of
/// where it started.
#[test]
fn large_bodies_stream_both_ways_in_bounded_memory() {
    let _heavy = support::heavy();
    const N: u64 = 256 << 20;
    let root = TempDir::new("proxy-stream");
    for i in [1, 2, 3] {
        let m = ALL_MODELS[i];
        let up = keepalive_upstream();
        let route = format!("/up=http://{}", up.addr);
        let s = serve(m, &root, &["--proxy", &route, "--max-body", "1g"]);
        let before = support::rss_tree_kib(s.pid());
        let mut peak = before;
        for chunked in [false, true] {
            let mut c = connect(s.addr());
            c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let framing = if chunked {
                "Transfer-Encoding: chunked".to_string()
            } else {
                format!("Content-Length: {N}")
            };
            write!(
                c,
                "POST /up/sink HTTP/1.1\r\nHost: f\r\nConnection: close\r\n{framing}\r\n\r\n"
            )
            .unwrap();
            let block = vec![b'u'; 1 << 20];
            for k in 0..(N >> 20) {
                if chunked {
                    write!(c, "{:x}\r\n", block.len()).unwrap();
                }
                c.write_all(&block).unwrap();
                if chunked {
                    c.write_all(b"\r\n").unwrap();
                }
                if k % 32 == 0 {
                    peak = peak.max(support::rss_tree_kib(s.pid()));
                }
            }
            if chunked {
                c.write_all(b"0\r\n\r\n").unwrap();
            }
            let mut answer = String::new();
            c.read_to_string(&mut answer).unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{m}: {answer}");
            assert!(answer.ends_with(&format!("\r\n\r\n{N}")), "{m}: {answer}");
        }
        // The download, read slowly at first so the upstream is held back, not buffered.
        let mut c = connect(s.addr());
        write!(
            c,
            "GET /up/big?n={N} HTTP/1.1\r\nHost: f\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let mut got = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        let mut reads = 0;
        loop {
            let n = c.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got += n as u64;
            reads += 1;
            if reads % 64 == 0 {
                peak = peak.max(support::rss_tree_kib(s.pid()));
            }
        }
        assert!(got > N, "{m}: got {got}");
        let grew = peak.saturating_sub(before);
        assert!(grew < 32 * 1024, "{m}: resident memory grew by {grew} KiB");
    }
}

/// A chunked upload that crosses `--max-body` mid-way is refused with 413 (the upstream request
/// is abandoned), and a WSGI app under `wsgiref` gets a body by length whole.
#[test]
fn a_chunked_upload_over_the_limit_gets_413_and_wsgi_apps_get_their_bodies() {
    let root = TempDir::new("proxy-limit");
    let wsgi = python_upstream(PY_WSGI);
    let app = format!("/app=http://{}/", wsgi.addr);
    for &m in ALL_MODELS {
        let up = keepalive_upstream();
        let sink = format!("/up=http://{}", up.addr);
        let s = serve(
            m,
            &root,
            &["--proxy", &sink, "--proxy", &app, "--max-body", "64k"],
        );
        let mut c = connect(s.addr());
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"POST /up/sink HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        let chunk = vec![b'c'; 16 * 1024];
        for _ in 0..8 {
            write!(c, "{:x}\r\n", chunk.len()).unwrap();
            if c.write_all(&chunk).is_err() || c.write_all(b"\r\n").is_err() {
                break;
            }
        }
        let mut answer = Vec::new();
        let _ = c.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413 "), "{m}: {answer}");

        let mut c = connect(s.addr());
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let body = "w".repeat(40_000);
        write!(
            c,
            "PUT /app/thing HTTP/1.1\r\nHost: f\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 "), "{m}: {answer}");
        assert!(answer.ends_with("PUT /thing 40000"), "{m}: {answer}");
    }
}

/// A WebSocket echo upstream (the `websockets` package), its address on the first line.
const PY_WS_ECHO: &str = r#"
import asyncio, websockets
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main():
    async with websockets.serve(echo, "127.0.0.1", 0) as s:
        print("%s:%d" % s.sockets[0].getsockname()[:2], flush=True)
        await asyncio.Future()
asyncio.run(main())
"#;

/// A WebSocket client through the proxy: text and a 1 MiB binary message come back whole.
const PY_WS_CLIENT: &str = r#"
import asyncio, sys, websockets
async def main():
    async with websockets.connect(sys.argv[1], max_size=None) as ws:
        for i in range(20):
            await ws.send("hello %d" % i)
            assert await ws.recv() == "hello %d" % i
        big = bytes(range(256)) * 4096
        await ws.send(big)
        assert await ws.recv() == big
    print("ok", flush=True)
asyncio.run(main())
"#;

/// An `Upgrade: websocket` request goes upstream with its `Upgrade` and `Connection` fields;
/// the 101 is relayed and the connection becomes a tunnel both ways. `h2c` is never offered
/// upstream, and an upstream that switches unasked is a 502.
#[test]
fn websocket_upgrades_tunnel_through_the_proxy_under_every_model() {
    support::require("python3 -c 'import websockets'");
    let up = python_upstream(PY_WS_ECHO);
    let root = TempDir::new("proxy-ws");
    let route = format!("/ws=http://{}/", up.addr);
    for &m in ALL_MODELS {
        let s = serve(m, &root, &["--proxy", &route]);
        let url = format!("ws://{}/ws/", s.addr());
        support::python_ok(&format!("{m}"), PY_WS_CLIENT, &[&url]);
    }
    // h2c is not passed on: the upstream sees a plain request (and answers it without a 101).
    let ka = keepalive_upstream();
    let plain = format!("/p=http://{}", ka.addr);
    let s = serve(ALL_MODELS[3], &root, &["--proxy", &plain]);
    let mut c = connect(s.addr());
    c.write_all(
        b"GET /p/x HTTP/1.1\r\nHost: f\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
}

/// 64 clients that ask for a 20 MiB proxied answer and never read it hold nothing that others
/// need (slowhttptest's slow-read attack): every other request is answered at once, as the
/// upstream's connections and the answers' buffers are per request, not from a pool.
#[test]
fn clients_that_never_read_a_large_proxied_answer_keep_nobody_else_waiting() {
    let _heavy = support::heavy();
    let root = TempDir::new("proxy-slowread");
    for i in CONCURRENT {
        let m = ALL_MODELS[i];
        let up = keepalive_upstream();
        let route = format!("/up=http://{}", up.addr);
        let s = serve(m, &root, &["--proxy", &route]);
        let stuck: Vec<TcpStream> = (0..64)
            .map(|_| {
                let mut c = connect(s.addr());
                c.write_all(b"GET /up/big?n=20971520 HTTP/1.1\r\nHost: f\r\n\r\n")
                    .unwrap();
                c
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        for _ in 0..50 {
            assert_eq!(fetch(s.addr(), "/up/x"), (200, b"hello".to_vec()), "{m}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{m}: {:?}",
            t0.elapsed()
        );
        drop(stuck);
    }
}

/// An upstream that closes a kept connection after 200 ms idle (its own keep-alive timeout):
/// the next request, a POST with a body (which is never retried), goes on a live connection
/// under every model, because a kept connection's close is seen (the event worker's poller
/// watches its pool; the others check before reuse) instead of being written into.
#[test]
fn an_upstream_closing_idle_connections_costs_no_request_with_a_body() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                // One request per connection, then the connection sits until the 200 ms
                // idle timeout closes it (no `Connection: close`: the client cannot know).
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                let mut w = s;
                let _ = write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                let _ = w.write_all(&body);
                w.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let _ = r.read(&mut [0u8; 1]);
            });
        }
    });
    let root = TempDir::new("proxy-idle-close");
    let route = format!("/up=http://{addr}");
    for &m in ALL_MODELS {
        let s = serve(m, &root, &["--proxy", &route]);
        for round in 0..3 {
            let mut c = connect(s.addr());
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.write_all(
                b"POST /up/x HTTP/1.1\r\nHost: f\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbody",
            )
            .unwrap();
            let mut answer = String::new();
            c.read_to_string(&mut answer).unwrap();
            assert!(
                answer.starts_with("HTTP/1.1 200 ") && answer.ends_with("body"),
                "{m}, round {round}: {answer}"
            );
            // Past the upstream's idle timeout: the kept connection is closed by now.
            std::thread::sleep(Duration::from_millis(400));
        }
    }
}

/// An HTTPS upstream: Python's `ThreadingHTTPServer` with its socket wrapped in `ssl`, serving
/// certificate `a` of the test CA (for 127.0.0.1). `/up/count` says how many connections it
/// accepted, `/up/big` is 1 MiB, anything else `hello over tls`.
fn https_upstream(pki: &crate::tls::Pki) -> PyUpstream {
    let code = format!(
        r#"
import http.server, ssl, threading
count = [0]
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        with lock:
            count[0] += 1
        super().setup()
    def do_GET(self):
        if self.path.startswith("/up/count"):
            body = str(count[0]).encode()
        elif self.path.startswith("/up/big"):
            body = bytes(range(256)) * 4096
        else:
            body = b"hello over tls"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("{cert}", "{key}")
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print("%s:%d" % s.server_address, flush=True)
s.serve_forever()
"#,
        cert = pki.path("a.pem"),
        key = pki.path("a.key"),
    );
    python_upstream(&code)
}

/// `--proxy /up=https://…`: TLS to the upstream under every model, its
/// certificate checked against `--upstream-ca`; kept connections are reused (with their TLS
/// sessions); a 1 MiB answer arrives whole; an upstream whose certificate the system's CAs
/// (or another CA) do not vouch for gets 502 and one log line saying why.
#[test]
fn https_upstreams_are_verified_kept_and_refused_with_502_when_untrusted() {
    support::require("python3 -c 'import ssl'");
    let pki = crate::tls::Pki::new();
    let other = crate::tls::Pki::new();
    let root = TempDir::new("proxy-https");
    let models = [
        ModelFlags(&["--model", "event", "--workers", "2"]),
        ModelFlags(&["--model", "prefork", "--workers", "2"]),
        ModelFlags(&["--model", "threaded"]),
        ModelFlags(&["--model", "iterative"]),
    ];
    for m in models {
        let up = https_upstream(&pki);
        let route = format!("/up=https://{}", up.addr);
        let ca = pki.path("ca.pem");
        let s = serve(m, &root, &["--proxy", &route, "--upstream-ca", &ca]);
        for _ in 0..20 {
            assert_eq!(
                fetch(s.addr(), "/up/x"),
                (200, b"hello over tls".to_vec()),
                "{m}"
            );
        }
        let (status, big) = fetch(s.addr(), "/up/big");
        assert_eq!(status, 200, "{m}");
        let want: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        assert!(big == want, "{m}: the 1 MiB answer arrived changed");
        let (_, count) = fetch(s.addr(), "/up/count");
        let opened: usize = String::from_utf8(count).unwrap().parse().unwrap();
        // One per process or worker, give or take one that got few clients.
        assert!(
            opened <= 4,
            "{m}: 22 requests opened {opened} TLS connections"
        );

        for trust in [
            vec![],
            vec!["--upstream-ca".to_string(), other.path("ca.pem")],
        ] {
            let mut extra = vec!["--proxy", &route];
            extra.extend(trust.iter().map(String::as_str));
            let s = serve(m, &root, &extra);
            let (status, _) = fetch(s.addr(), "/up/x");
            assert_eq!(status, 502, "{m} {trust:?}");
            let deadline = Instant::now() + Duration::from_secs(5);
            while !s.stderr().contains("certificate") {
                assert!(
                    Instant::now() < deadline,
                    "{m}: no log line: {}",
                    s.stderr()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let err = s.stderr();
            let said = err.lines().filter(|l| l.contains("certificate")).count();
            assert_eq!(said, 1, "{m}: {err}");
        }
    }
}
