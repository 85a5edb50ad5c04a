//! `tincan serve --proxy` and `--cgi` under every model: a tiny upstream written here (answers
//! framed by length, by chunks and by close; slow, garbage and huge answers) and `tincan hello`
//! as a real one; shell CGI scripts in a temporary directory. Raw sockets check the bytes on the
//! wire; curl checks a real client agrees.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{self, connect, free_port, ModelFlags, Server, TempDir, ALL_MODELS};

// ------------------------------------------------------------------------------------------
// A client that reads one response at a time off a (possibly kept-alive) connection.

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Read one response; `head_request` means no body follows whatever the head says.
fn read_reply(r: &mut BufReader<TcpStream>, head_request: bool) -> Reply {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).expect("read a head line");
        assert!(n > 0, "the connection closed inside a head: {head:?}");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status: u16 = head[9..12].parse().expect("a status code");
    let mut reply = Reply {
        status,
        head,
        body: Vec::new(),
    };
    if head_request || status == 204 || status == 304 {
        return reply;
    }
    if reply
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            assert_eq!(&chunk[n..], b"\r\n", "chunk data ends in CRLF");
            if n == 0 {
                break;
            }
            reply.body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(len) = reply.header("content-length") {
        let mut body = vec![0; len.parse().unwrap()];
        r.read_exact(&mut body).unwrap();
        reply.body = body;
    } else {
        r.read_to_end(&mut reply.body)
            .unwrap_or_else(|e| panic!("{e} reading the body after {}", reply.head));
    }
    reply
}

/// One request on a fresh connection.
fn exchange(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut s = connect(addr);
    s.write_all(raw).unwrap();
    let head_request = raw.starts_with(b"HEAD ");
    read_reply(&mut BufReader::new(s), head_request)
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

// ------------------------------------------------------------------------------------------
// The test upstream: one thread per connection, requests one after another on it (the proxy
// keeps connections), every request it saw recorded.

struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

const BIG: usize = 5 << 20;

fn upstream() -> Upstream {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || answer(s, &log));
        }
    });
    Upstream { addr, seen }
}

fn answer(s: TcpStream, log: &Mutex<Vec<String>>) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    // As a real server: one request after another on the connection, until the client closes
    // it or an answer that must end with the connection (by close, cut short, garbled, or
    // saying `Connection: close`) has gone.
    while answer_one(&mut r, &s, log) {}
}

/// Answer one request; false when the connection is done.
fn answer_one(r: &mut BufReader<TcpStream>, s: &TcpStream, log: &Mutex<Vec<String>>) -> bool {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    if head.contains("Transfer-Encoding: chunked\r\n") {
        // A chunked body (the proxy re-chunks a chunked upload): recorded decoded.
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let request = format!("{head}\r\n{}", String::from_utf8_lossy(&body));
    log.lock().unwrap().push(request.clone());
    let target = head.split(' ').nth(1).unwrap_or("");
    let path = target.split('?').next().unwrap_or("").to_string();
    let mut w = s;
    let keeps = ["/echo", "/chunked", "/slow", "/latin", "/big"]
        .iter()
        .any(|p| path.ends_with(p));
    let written = match path.as_str() {
        p if p.ends_with("/len") => w.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\nConnection: close, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nX-End: kept\r\nContent-Type: text/plain\r\n\r\nhello by length",
        ),
        p if p.ends_with("/chunked") => w.write_all(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-End: kept\r\n\r\n5\r\nhello\r\n9;ext=1\r\n by chunk\r\n0\r\nX-Trailer: t\r\n\r\n",
        ),
        p if p.ends_with("/close") => {
            w.write_all(b"HTTP/1.0 200 OK\r\nX-End: kept\r\n\r\nhello until close")
        }
        p if p.ends_with("/echo") => {
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{request}",
                request.len()
            );
            w.write_all(resp.as_bytes())
        }
        p if p.ends_with("/slow") => {
            std::thread::sleep(Duration::from_secs(3));
            w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        }
        p if p.ends_with("/bad") => w.write_all(b"this is not HTTP at all\r\n\r\n"),
        p if p.ends_with("/latin") => {
            w.write_all(b"HTTP/1.1 200 OK\r\nX-Latin: caf\xe9\r\nContent-Length: 2\r\n\r\nok")
        }
        p if p.ends_with("/bighead") => w.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok",
                "a".repeat(70_000)
            )
            .as_bytes(),
        ),
        p if p.ends_with("/short") => {
            w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        }
        p if p.ends_with("/big") => {
            let _ = write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n");
            let block = vec![b'z'; 64 * 1024];
            let mut left = BIG;
            while left > 0 {
                let n = left.min(block.len());
                if w.write_all(&block[..n]).is_err() {
                    return false;
                }
                left -= n;
            }
            Ok(())
        }
        _ => w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    };
    keeps && written.is_ok()
}

fn is_iterative(m: ModelFlags) -> bool {
    m.0.contains(&"iterative")
}

fn serve(m: ModelFlags, root: &Path, extra: &[&str]) -> Server {
    Server::start(&support::serve_args(root.to_str().unwrap(), m, extra))
}

// ------------------------------------------------------------------------------------------
// Proxy

#[test]
fn proxied_answers_keep_status_headers_and_bodies_and_drop_hop_by_hop_fields_under_every_model() {
    let up = upstream();
    let root = TempDir::new("proxy-root");
    std::fs::write(root.path().join("file.txt"), "static file\n").unwrap();
    let route = format!("/up=http://{}/base", up.addr);
    let down = format!("/down=http://127.0.0.1:{}", free_port());
    for &m in ALL_MODELS {
        let s = serve(
            m,
            root.path(),
            &[
                "--proxy",
                &route,
                "--proxy",
                &down,
                "--upstream-timeout",
                "0.5",
            ],
        );
        let a = s.addr();

        let r = get(a, "/up/len");
        assert_eq!(r.status, 200, "{m}");
        assert_eq!(r.text(), "hello by length");
        assert_eq!(r.header("content-length"), Some("15"));
        assert_eq!(r.header("x-end"), Some("kept"));
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert!(
            r.header("x-hop").is_none() && r.header("keep-alive").is_none(),
            "{m}: {}",
            r.head
        );
        assert_eq!(
            r.header("server"),
            Some("tincan"),
            "our Server header, not the upstream's"
        );

        let r = get(a, "/up/chunked");
        assert_eq!(
            (r.status, r.text().as_str()),
            (201, "hello by chunk"),
            "{m}"
        );
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));

        let r = get(a, "/up/close");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "hello until close"),
            "{m}"
        );
        assert_eq!(
            r.header("transfer-encoding"),
            Some("chunked"),
            "1.1 clients get chunks"
        );
        let r = exchange(a, b"GET /up/close HTTP/1.0\r\n\r\n");
        assert_eq!(r.text(), "hello until close", "{m}");
        assert!(r.header("transfer-encoding").is_none() && r.header("content-length").is_none());
        assert_eq!(r.header("connection"), Some("close"));

        let r = exchange(
            a,
            b"HEAD /up/len HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(
            (r.status, r.header("content-length")),
            (200, Some("15")),
            "{m}"
        );

        // What the upstream was sent.
        let r = exchange(
            a,
            b"POST /up/echo?q=1 HTTP/1.1\r\nHost: front.test\r\nConnection: close, X-Private\r\nX-Private: 1\r\nTE: trailers\r\nProxy-Authorization: secret\r\nProxy: http://evil.test/\r\nX-Forwarded-For: 203.0.113.9\r\nContent-Length: 11\r\n\r\nhello=world",
        );
        let sent = r.text();
        assert!(
            sent.starts_with("POST /base/echo?q=1 HTTP/1.1\r\n"),
            "{m}: {}\n{sent}",
            r.head
        );
        assert!(sent.contains(&format!("Host: {}\r\n", up.addr)), "{sent}");
        assert!(
            sent.contains("X-Forwarded-For: 203.0.113.9, 127.0.0.1\r\n"),
            "{sent}"
        );
        assert!(sent.contains("X-Forwarded-Proto: http\r\n"));
        assert!(sent.contains("X-Forwarded-Host: front.test\r\n"));
        // A field value that is not UTF-8 (obs-text, RFC 9110 §5.5) goes on byte for byte.
        let mut c = connect(a);
        c.write_all(b"GET /up/latin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut raw = Vec::new();
        let _ = c.read_to_end(&mut raw);
        assert!(
            raw.windows(15).any(|w| w == b"X-Latin: caf\xe9\r\n"),
            "{m}: {}",
            String::from_utf8_lossy(&raw)
        );
        // TRACE would reflect the client's headers; nothing tunnels a CONNECT (and one with a
        // path is no CONNECT at all): neither reaches the upstream.
        let r = exchange(
            a,
            b"TRACE /up/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 405, "{m}: {}", r.head);
        let r = exchange(a, b"CONNECT /up/echo HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(r.status, 400, "{m}: {}", r.head);
        // An encoded slash is part of its segment (an API's `group%2Fproject`): it goes
        // upstream as sent, where a static path would get 400.
        // ...but never as a way out of the route's base path (found in review).
        let r = get(a, "/up/..%2F..%2Fsecret.txt");
        assert_eq!(r.status, 400, "{m}: {}", r.head);
        let r = get(a, "/up/@scope%2Fname/./echo");
        assert!(
            r.text()
                .starts_with("GET /base/@scope%2Fname/echo HTTP/1.1\r\n"),
            "{m}: {}\n{}",
            r.head,
            r.text()
        );
        assert!(sent.contains("Forwarded: for=127.0.0.1;host=front.test;proto=http\r\n"));
        assert!(sent.contains("Via: 1.1 tincan\r\n"));
        // The upstream connection is left to persist (it may be kept for the next request).
        assert!(!sent.contains("Connection:"), "{sent}");
        for gone in [
            "X-Private",
            "TE:",
            "Proxy-Authorization",
            "secret",
            "evil.test",
        ] {
            assert!(!sent.contains(gone), "{m}: {gone} was forwarded: {sent}");
        }
        assert!(
            sent.ends_with("Content-Length: 11\r\n\r\nhello=world"),
            "{sent}"
        );

        // Expect: 100-continue on a proxied upload: the 100 comes before the body is sent,
        // and the upstream gets the body (not the expectation, which was met here).
        let mut c = BufReader::new(connect(a));
        c.get_mut()
            .write_all(b"POST /up/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
            .unwrap();
        let interim = read_reply(&mut c, true);
        assert_eq!(interim.status, 100, "{m}: {}", interim.head);
        c.get_mut().write_all(b"hello").unwrap();
        let sent = read_reply(&mut c, false).text();
        assert!(sent.ends_with("\r\n\r\nhello"), "{m}: {sent}");
        assert!(
            !sent.to_ascii_lowercase().contains("expect:"),
            "{m}: {sent}"
        );

        // The host of an absolute-form target stands for Host (RFC 9112 §3.2.2): it must be
        // valid, and it is the one the upstream hears of.
        let r = exchange(
            a,
            b"GET http://u:p@evil.example:abc/up/len HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 400, "{m}");

        let r = exchange(
            a,
            b"POST http://other.test/up/echo HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(
            r.text().contains("X-Forwarded-Host: other.test\r\n"),
            "{m}: {}",
            r.text()
        );

        // A chunked upload streams to the upstream re-chunked (the upstream here decodes it),
        // never with a length it could not know in advance.
        let r = exchange(
            a,
            b"PUT /up/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nchunk-\r\n4\r\nbody\r\n0\r\n\r\n",
        );
        let sent = r.text();
        assert!(
            sent.contains("Transfer-Encoding: chunked\r\n") && sent.ends_with("chunk-body"),
            "{m}: {sent}"
        );
        assert!(!sent.contains("Content-Length"), "{sent}");

        // Failures: down, garbage, a cut-off body, too slow.
        assert_eq!(get(a, "/down/x").status, 502, "{m}");
        assert_eq!(get(a, "/up/bad").status, 502, "{m}");
        assert_eq!(
            get(a, "/up/bighead").status,
            502,
            "{m}: a 70,000-byte head is over the 64 KiB limit however it arrives"
        );
        let t0 = Instant::now();
        assert_eq!(get(a, "/up/slow").status, 504, "{m}");
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{m}: 504 after {:?}",
            t0.elapsed()
        );
        let mut c = connect(a);
        c.write_all(b"GET /up/short HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got);
        let got = String::from_utf8_lossy(&got);
        assert!(
            got.starts_with("HTTP/1.1 200 ") && got.ends_with("only this"),
            "{m}: {got}"
        );

        // A proxied request and a static one on the same kept-alive connection.
        if !is_iterative(m) {
            let mut c = BufReader::new(connect(a));
            c.get_mut()
                .write_all(b"GET /up/chunked HTTP/1.1\r\nHost: x\r\n\r\nGET /file.txt HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let r1 = read_reply(&mut c, false);
            let r2 = read_reply(&mut c, false);
            assert_eq!(
                (r1.status, r1.text().as_str()),
                (201, "hello by chunk"),
                "{m}"
            );
            assert_eq!(
                (r2.status, r2.text().as_str()),
                (200, "static file\n"),
                "{m}"
            );
            c.get_mut()
                .write_all(b"GET /up/len HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            assert_eq!(read_reply(&mut c, false).text(), "hello by length", "{m}");
        }
        // Paths outside every route are still the static handler's.
        assert_eq!(get(a, "/file.txt").text(), "static file\n");
        assert_eq!(get(a, "/upx").status, 404, "{m}: /upx is not under /up");
    }
    assert!(up.seen.lock().unwrap().len() >= 6 * 9);
}

#[test]
fn tincan_hello_works_as_a_real_upstream_over_tcp_and_unix_sockets() {
    let hello = Server::start(&["hello", "--listen", "127.0.0.1:0", "--access-log", "off"]);
    let root = TempDir::new("proxy-hello");
    let sock = root.path().join("hello.sock");
    let unix_listen = format!("unix:{}", sock.display());
    let unix_hello = Server::start(&["hello", "--listen", &unix_listen, "--access-log", "off"]);
    let tcp_route = format!("/greet={}", hello.url("/"));
    let unix_route = format!("/local=http://unix:{}:/", sock.display());
    for &m in &[ALL_MODELS[0], ALL_MODELS[3]] {
        let s = serve(
            m,
            root.path(),
            &["--proxy", &tcp_route, "--proxy", &unix_route],
        );
        for prefix in ["/greet", "/local"] {
            let raw = format!(
                "GET {prefix}/there?x=1 HTTP/1.1\r\nHost: front.test\r\nUser-Agent: t\r\nConnection: close\r\n\r\n"
            );
            let r = exchange(s.addr(), raw.as_bytes());
            let page = r.text();
            assert_eq!(r.status, 200, "{m} {prefix}: {page}");
            assert!(page.contains("GET /there?x=1 HTTP/1.1"), "{m}: {page}");
            assert!(page.contains("X-Forwarded-For"), "{page}");
        }
    }
    drop(unix_hello);
}

/// An upstream may answer before it has read the whole body. One that refuses it (a 413)
/// may never read the rest: its answer is relayed at once, not turned into a 504 while the
/// proxy waits to send. One that streams (a chunked head first, then it reads the body, then
/// it answers) must still get the whole body: sending goes on while the answer comes.
#[test]
fn an_upstream_answer_before_the_body_is_read_is_relayed_under_every_model() {
    const BODY: usize = 8 << 20;
    // A small receive buffer, so the body cannot all sit in the upstream's kernel.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(8 * 1024).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.listen(16).unwrap();
    let l: TcpListener = sock.into();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                    head.push(b[0]);
                }
                if head.starts_with(b"POST /up/stream ") {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                    let mut got = 0;
                    let mut chunk = vec![0u8; 64 * 1024];
                    while got < BODY {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got += n,
                        }
                    }
                    let msg = format!("received {got}");
                    let _ = write!(s, "{:x}\r\n{msg}\r\n0\r\n\r\n", msg.len());
                    return;
                }
                let _ = s.write_all(
                    b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\n\r\ntoo big\n",
                );
                // Hold the connection open without reading, as a busy application might, for
                // longer than the proxy waits for progress.
                std::thread::sleep(Duration::from_secs(5));
            });
        }
    });
    let root = TempDir::new("proxy-early");
    let route = format!("/up=http://{addr}");
    let post = |path: &str| {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {BODY}\r\n\r\n"
        );
        let mut raw = head.into_bytes();
        raw.resize(raw.len() + BODY, b'u');
        raw
    };
    let (refused, streamed) = (post("/up/upload"), post("/up/stream"));
    for &m in ALL_MODELS {
        let s = serve(
            m,
            root.path(),
            &[
                "--proxy",
                &route,
                "--max-body",
                "16m",
                "--upstream-timeout",
                "1",
            ],
        );
        let r = exchange(s.addr(), &refused);
        assert_eq!((r.status, r.text().as_str()), (413, "too big\n"), "{m}");
        let r = exchange(s.addr(), &streamed);
        assert_eq!(
            (r.status, r.text()),
            (200, format!("received {BODY}")),
            "{m}"
        );
    }
}

#[test]
fn a_five_mib_upstream_body_streams_to_a_slow_client_with_bounded_memory() {
    let up = upstream();
    let root = TempDir::new("proxy-big");
    let route = format!("/up=http://{}", up.addr);
    for &m in ALL_MODELS {
        let s = serve(m, root.path(), &["--proxy", &route]);
        // Warm up (threads, pools), then measure while a client holds back.
        assert_eq!(get(s.addr(), "/up/len").status, 200);
        let before = crate::support::rss_kib(s.pid());
        // A small receive window, so the body cannot hide in the kernel's socket buffers.
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(8 * 1024).unwrap();
        sock.connect(&s.addr().into()).unwrap();
        let mut c: TcpStream = sock.into();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(b"GET /up/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut first = [0; 4096];
        let n = c.read(&mut first).unwrap();
        assert!(first[..n].starts_with(b"HTTP/1.1 200 OK"), "{m}");
        std::thread::sleep(Duration::from_millis(400));
        // Under prefork the serving process is a child; the parent's RSS says nothing then.
        let during = crate::support::rss_kib(s.pid());
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        let total = n + rest.len();
        let head_len = first[..n]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap()
            + 4;
        assert_eq!(total - head_len, BIG, "{m}: body length");
        assert!(rest.iter().all(|&b| b == b'z'));
        if !m.0.contains(&"prefork") {
            let grew = during.saturating_sub(before);
            assert!(
                grew < 2 * 1024,
                "{m}: RSS grew {grew} KiB while a 5 MiB body waited"
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// CGI

fn script(dir: &Path, name: &str, body: &str, mode: u32) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every process whose parent is `pid` and that is a zombie.
fn zombies_of(pids: &[i32]) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(after) = stat.rsplit_once(") ") else {
            continue;
        };
        let mut f = after.1.split(' ');
        let (state, ppid) = (f.next(), f.next().and_then(|p| p.parse::<i32>().ok()));
        if state == Some("Z") && ppid.is_some_and(|p| pids.contains(&p)) {
            found.push(stat);
        }
    }
    found
}

/// The server and its worker processes (prefork).
fn family(pid: i32) -> Vec<i32> {
    let mut pids = vec![pid];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) {
            if let Some((_, after)) = stat.rsplit_once(") ") {
                if after.split(' ').nth(1).and_then(|p| p.parse().ok()) == Some(pid) {
                    if let Ok(p) = e.file_name().to_string_lossy().parse() {
                        pids.push(p);
                    }
                }
            }
        }
    }
    pids
}

fn cgi_dir() -> TempDir {
    let t = TempDir::new("cgi");
    let bin = t.path().join("cgi-bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::create_dir(t.path().join("www")).unwrap();
    std::fs::write(t.path().join("www/page.txt"), "a static page\n").unwrap();
    script(
        &bin,
        "local.sh",
        "printf 'Location: /cgi-bin/status.sh\\n\\n'",
        0o755,
    );
    script(
        &bin,
        "tostatic.sh",
        "printf 'Location: /page.txt\\n\\n'",
        0o755,
    );
    script(
        &bin,
        "loop.sh",
        "printf 'Location: /cgi-bin/loop.sh\\n\\n'",
        0o755,
    );
    script(
        &bin,
        "env.sh",
        "printf 'Content-Type: text/plain\\r\\nX-Script: yes\\r\\n\\r\\n'\nenv\necho BODY=$(cat)",
        0o755,
    );
    script(
        &bin,
        "status.sh",
        "printf 'Status: 201 Created\\nContent-Type: text/plain\\nContent-Length: 7\\n\\ncreated'",
        0o755,
    );
    script(
        &bin,
        "redirect.sh",
        "printf 'Location: http://example.test/\\n\\n'",
        0o755,
    );
    script(&bin, "crash.sh", "kill -SEGV $$", 0o755);
    script(
        &bin,
        "midcrash.sh",
        "printf 'Content-Type: text/plain\\n\\n'; echo partial; kill -SEGV $$",
        0o755,
    );
    script(&bin, "garbage.sh", "echo 'no headers here'", 0o755);
    script(&bin, "slow.sh", "exec sleep 5", 0o755);
    script(
        &bin,
        "noexec.sh",
        "echo 'Content-Type: text/plain'; echo; echo ran",
        0o644,
    );
    // Outside the script directory: must never run.
    script(
        t.path(),
        "outside.sh",
        "printf 'Content-Type: text/plain\\n\\nESCAPED'",
        0o755,
    );
    std::os::unix::fs::symlink(t.path().join("outside.sh"), bin.join("link.sh")).unwrap();
    t
}

#[test]
fn cgi_scripts_get_rfc3875_variables_and_their_answers_are_relayed_under_every_model() {
    let t = cgi_dir();
    let route = format!("/cgi-bin={}", t.path().join("cgi-bin").display());
    for &m in ALL_MODELS {
        let s = serve(
            m,
            &t.path().join("www"),
            &["--cgi", &route, "--upstream-timeout", "0.5"],
        );
        let a = s.addr();
        let r = exchange(
            a,
            b"POST /cgi-bin/env.sh/more/path%20here?x=1&y=2 HTTP/1.1\r\nHost: front.test:8080\r\nContent-Type: text/plain\r\nX-Custom: custom value\r\nProxy: http://evil.test/\r\nConnection: close\r\nContent-Length: 12\r\n\r\nposted bytes",
        );
        assert_eq!(r.status, 200, "{m}: {}", r.text());
        assert_eq!(r.header("x-script"), Some("yes"));
        let env = r.text();
        let port = a.port().to_string();
        for want in [
            "GATEWAY_INTERFACE=CGI/1.1",
            "SERVER_PROTOCOL=HTTP/1.1",
            "REQUEST_METHOD=POST",
            "SCRIPT_NAME=/cgi-bin/env.sh",
            "PATH_INFO=/more/path here",
            "QUERY_STRING=x=1&y=2",
            "CONTENT_LENGTH=12",
            "CONTENT_TYPE=text/plain",
            "REMOTE_ADDR=127.0.0.1",
            "SERVER_NAME=front.test",
            &format!("SERVER_PORT={port}"),
            "HTTP_X_CUSTOM=custom value",
            "SERVER_SOFTWARE=tincan/",
            "REMOTE_PORT=",
            "BODY=posted bytes",
        ] {
            assert!(env.contains(want), "{m}: {want} missing from:\n{env}");
        }
        assert!(!env.contains("HTTP_PROXY"), "{m}: httpoxy: {env}");
        assert!(
            !env.contains("HOME=") && !env.contains("CARGO"),
            "{m}: env not cleared: {env}"
        );

        let r = get(a, "/cgi-bin/status.sh");
        assert_eq!((r.status, r.text().as_str()), (201, "created"), "{m}");
        assert_eq!(r.header("content-length"), Some("7"));
        let r = get(a, "/cgi-bin/redirect.sh");
        assert_eq!(
            (r.status, r.header("location")),
            (302, Some("http://example.test/"))
        );
        // Local redirects (RFC 3875 §6.2.2) are answered by the server, not sent to the client.
        let r = get(a, "/cgi-bin/local.sh");
        assert_eq!((r.status, r.text().as_str()), (201, "created"), "{m}");
        let r = get(a, "/cgi-bin/tostatic.sh");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "a static page\n"),
            "{m}"
        );
        assert_eq!(
            get(a, "/cgi-bin/loop.sh").status,
            502,
            "{m}: a redirect loop ends"
        );
        let r = exchange(a, b"GET /cgi-bin/env.sh HTTP/1.0\r\n\r\n");
        assert!(r.text().contains("SERVER_PROTOCOL=HTTP/1.0"), "{m}");
        assert_eq!(r.header("connection"), Some("close"));

        assert_eq!(get(a, "/cgi-bin/missing.sh").status, 404, "{m}");
        assert_eq!(get(a, "/cgi-bin/noexec.sh").status, 403, "{m}");
        assert_eq!(get(a, "/cgi-bin/crash.sh").status, 502, "{m}");
        assert_eq!(get(a, "/cgi-bin/garbage.sh").status, 502, "{m}");
        let t0 = Instant::now();
        assert_eq!(get(a, "/cgi-bin/slow.sh").status, 504, "{m}");
        assert!(t0.elapsed() < Duration::from_secs(4), "{m}");
        for evil in [
            "/cgi-bin/../outside.sh",
            "/cgi-bin/%2e%2e/outside.sh",
            "/cgi-bin/..%2foutside.sh",
            "/cgi-bin/link.sh",
            "/cgi-bin/./../outside.sh",
        ] {
            let r = get(a, evil);
            assert!(
                !r.text().contains("ESCAPED"),
                "{m}: {evil} ran a script outside: {}",
                r.status
            );
            assert!(r.status >= 400, "{m}: {evil} → {}", r.status);
        }
        // Every child was reaped, the killed slow one included.
        std::thread::sleep(Duration::from_millis(100));
        let z = zombies_of(&family(s.pid()));
        assert!(z.is_empty(), "{m}: zombies: {z:?}");
    }
}

#[test]
fn curl_uploads_through_the_proxy_and_runs_cgi_scripts() {
    support::require("command -v curl");
    let up = upstream();
    let t = cgi_dir();
    let proxy = format!("/up=http://{}", up.addr);
    let cgi = format!("/cgi-bin={}", t.path().join("cgi-bin").display());
    let s = serve(
        ALL_MODELS[3],
        &t.path().join("www"),
        &["--proxy", &proxy, "--cgi", &cgi],
    );
    let run = |args: &[&str]| {
        let out = crate::support::curl("proxy/cgi", args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let body = "b".repeat(100_000);
    let sent = run(&["--data-binary", &body, &s.url("/up/echo")]);
    assert!(sent.contains("Content-Length: 100000\r\n") && sent.ends_with(&body));
    let sent = run(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        "chunked by curl",
        &s.url("/up/echo"),
    ]);
    assert!(sent.ends_with("chunked by curl"), "{sent}");
    assert_eq!(run(&[&s.url("/up/chunked")]), "hello by chunk");
    assert_eq!(
        run(&["--http1.0", &s.url("/up/close")]),
        "hello until close"
    );
    let env = run(&["-d", "from curl", &s.url("/cgi-bin/env.sh?k=v")]);
    assert!(
        env.contains("QUERY_STRING=k=v") && env.contains("BODY=from curl"),
        "{env}"
    );
}

#[test]
fn bad_proxy_and_cgi_flags_are_refused_in_one_line() {
    let root = TempDir::new("proxy-flags");
    for (flag, value, says) in [
        ("--proxy", "/api=https://x", "https"),
        ("--proxy", "/api", "PREFIX"),
        ("--proxy", "api=http://x", "must start with /"),
        ("--cgi", "/cgi=/nonexistent/dir", "does not exist"),
    ] {
        let out = Command::new(crate::support::bin())
            .args([
                "serve",
                root.path().to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                flag,
                value,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was accepted");
        // One sentence, and before anything is bound (no start-up chatter first).
        assert!(
            err.starts_with("tincan: ") && err.lines().count() == 1,
            "{err}"
        );
        assert!(
            err.contains(says) || err.contains("KEY=VALUE"),
            "{flag} {value}: {err}"
        );
    }
}

/// Script after script, and local redirects (a second script for the same request): each
/// link is ended with its exchange, none is left to get in the way of the next.
#[test]
fn repeated_cgi_requests_and_local_redirects_are_answered_under_every_model() {
    let t = cgi_dir();
    let route = format!("/cgi-bin={}", t.path().join("cgi-bin").display());
    for &m in ALL_MODELS {
        let s = serve(m, &t.path().join("www"), &["--cgi", &route]);
        for i in 0..10 {
            let r = get(s.addr(), "/cgi-bin/local.sh");
            assert_eq!((i, r.status), (i, 201), "{m}: {:?}", r.body);
            let r = get(s.addr(), "/cgi-bin/status.sh");
            assert_eq!((i, r.status), (i, 201), "{m}");
        }
    }
}

/// A script that dies from a signal after its head broke its answer: the client sees a
/// truncated body (no last chunk) and the connection closes, never a complete-looking reply.
#[test]
fn a_script_that_crashes_mid_body_gives_a_visibly_broken_answer_under_every_model() {
    let t = cgi_dir();
    let route = format!("/cgi-bin={}", t.path().join("cgi-bin").display());
    for &m in ALL_MODELS {
        let s = serve(m, &t.path().join("www"), &["--cgi", &route]);
        let mut c = connect(s.addr());
        c.write_all(b"GET /cgi-bin/midcrash.sh HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got)
            .unwrap_or_else(|e| panic!("{m}: the connection was not closed: {e}"));
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200"), "{m}: {text}");
        assert!(text.contains("partial"), "{m}: {text}");
        assert!(
            !text.ends_with("0\r\n\r\n"),
            "{m}: a crashed script's answer ended like a whole one: {text:?}"
        );
    }
}

/// Children of `pids` whose command name is `comm`.
fn children_named(pids: &[i32], comm: &str) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((left, after)) = stat.rsplit_once(") ") else {
            continue;
        };
        let name = left.split_once(" (").map_or("", |(_, c)| c);
        let ppid = after.split(' ').nth(1).and_then(|p| p.parse::<i32>().ok());
        if name == comm && ppid.is_some_and(|p| pids.contains(&p)) {
            n += 1;
        }
    }
    n
}

#[test]
fn a_client_that_hangs_up_gets_its_cgi_child_killed_and_reaped_promptly() {
    let t = cgi_dir();
    let route = format!("/cgi-bin={}", t.path().join("cgi-bin").display());
    for &m in &[ALL_MODELS[1], ALL_MODELS[2], ALL_MODELS[3]] {
        let s = serve(m, &t.path().join("www"), &["--cgi", &route]);
        let mut c = connect(s.addr());
        c.write_all(b"GET /cgi-bin/slow.sh HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        while children_named(&family(s.pid()), "sleep") == 0 {
            assert!(Instant::now() < deadline, "{m}: the script never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(c);
        let deadline = Instant::now() + Duration::from_secs(3);
        while children_named(&family(s.pid()), "sleep") > 0 {
            assert!(
                Instant::now() < deadline,
                "{m}: the script outlived its client (the timeout is 60 s)"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let z = zombies_of(&family(s.pid()));
        assert!(z.is_empty(), "{m}: zombies: {z:?}");
    }
}

/// A client that pipelines more than one request's worth behind a proxied request that is
/// still being answered is dropped, and that request still gets its access-log line (it got
/// none: an outside pass found it missing, not even a 499).
#[test]
fn a_pipelining_flood_behind_a_proxied_request_is_dropped_and_logged_under_every_model() {
    let up = upstream();
    let root = TempDir::new("proxy-flood");
    let route = format!("/up=http://{}", up.addr);
    let log = root.path().join("access.log");
    for &m in ALL_MODELS {
        let _ = std::fs::remove_file(&log);
        let dir = root.path().to_str().unwrap();
        let mut args = vec!["serve", dir, "--listen", "127.0.0.1:0"];
        args.extend_from_slice(m.0);
        args.extend(["--proxy", &route, "--access-log", log.to_str().unwrap()]);
        let s = Server::start(&args);
        let mut c = connect(s.addr());
        c.write_all(b"GET /up/slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        // Over what is held behind it (a head and a body at the limits: about 1.1 MB).
        let flood = b"GET /file.txt HTTP/1.1\r\nHost: x\r\n\r\n".repeat(40_000);
        let _ = c.write_all(&flood);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("\"GET /up/slow HTTP/1.1\"") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{m}: no log line for the proxied request: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
