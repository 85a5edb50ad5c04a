//! HTTP/1.1 over real sockets under every model: raw bytes for parsing, smuggling, limits,
//! pipelining, keep-alive and timers (against `tincan hello`, which answers every request);
//! real clients (Python http.client and h11, curl, ab) for interoperability; `tincan serve`
//! for the method answers of a static root and the command line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{self, connect, ModelFlags, Server, TempDir, ALL_MODELS};

/// A parsed response.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// One client connection that reads responses one at a time (so pipelined answers can be
/// told apart).
struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn open(server: &Server) -> Conn {
        let s = connect(server.addr());
        Conn {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }

    fn send(&mut self, bytes: &[u8]) -> &mut Conn {
        self.w.write_all(bytes).unwrap();
        self
    }

    /// Read one response; `head` says it answers a HEAD (no body whatever the length says).
    fn response(&mut self, head: bool) -> Resp {
        let mut line = String::new();
        self.r.read_line(&mut line).expect("status line");
        assert!(line.starts_with("HTTP/1.1 "), "bad status line {line:?}");
        let status: u16 = line[9..12].parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            self.r.read_line(&mut l).expect("header line");
            assert!(l.ends_with("\r\n"), "header line without CRLF: {l:?}");
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':').expect("a colon in a header line");
            headers.push((n.to_string(), v.trim().to_string()));
        }
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        let bodiless = head || status < 200 || status == 204 || status == 304;
        if !bodiless {
            let len: usize = resp
                .header("content-length")
                .expect("every response with a body has Content-Length")
                .parse()
                .unwrap();
            resp.body = vec![0; len];
            self.r.read_exact(&mut resp.body).expect("body");
        }
        resp
    }

    /// True if the server closed the connection (EOF with nothing more sent).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.r.read(&mut b), Ok(0))
    }

    fn expect_nothing_more_then_close(&mut self) {
        let mut rest = Vec::new();
        let _ = self.r.read_to_end(&mut rest);
        assert!(
            rest.is_empty(),
            "expected a close, got {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

fn is_iterative(m: ModelFlags) -> bool {
    m.0.contains(&"iterative")
}

/// `tincan hello` on a free port under model `m`, plus `extra` flags.
fn hello(m: ModelFlags, extra: &[&str]) -> Server {
    let mut args = vec!["hello", "--listen", "127.0.0.1:0", "--access-log", "off"];
    args.extend_from_slice(m.0);
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// One request on a fresh connection; the response.
fn once(server: &Server, raw: &[u8]) -> Resp {
    let mut c = Conn::open(server);
    c.send(raw);
    c.response(raw.starts_with(b"HEAD "))
}

/// A request on a fresh connection that must be refused with `status` and a close.
fn refused(server: &Server, raw: &[u8], status: u16, what: &str) {
    let mut c = Conn::open(server);
    c.send(raw);
    let r = c.response(false);
    assert_eq!(r.status, status, "{what}");
    assert!(r.closes(), "{what}: a refusal closes the connection");
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/html"),
        "{what}: an HTML error page"
    );
    assert!(
        !String::from_utf8_lossy(&r.body).contains("Reject {"),
        "{what}: no Debug dump"
    );
    c.expect_nothing_more_then_close();
}

const LIMIT_FLAGS: &[&str] = &[
    "--max-request-line",
    "1024",
    "--max-header",
    "2048",
    "--max-head",
    "8k",
    "--max-headers",
    "20",
    "--max-body",
    "4096",
];

#[test]
fn requests_are_parsed_framed_and_refused_exactly_under_every_model() {
    for &m in ALL_MODELS {
        let s = hello(m, LIMIT_FLAGS);
        let ka = !is_iterative(m);

        // The basics: Date, Server, an exact Content-Length.
        let r = once(&s, b"GET /x?y=1 HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.status, 200, "{m}");
        assert!(r.header("date").unwrap().ends_with(" GMT"));
        assert_eq!(r.header("server"), Some("tincan"));
        assert!(String::from_utf8_lossy(&r.body).contains("GET /x?y=1 HTTP/1.1"));
        assert_eq!(
            r.closes(),
            !ka,
            "{m}: keep-alive is off only under iterative"
        );

        // Absolute-form targets are served by their path.
        let r = once(&s, b"GET http://t/abs HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.status, 200, "{m}");

        // Each head limit: at the edge passes, one over is refused precisely.
        let line = |n: usize| format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(n - 14));
        assert_eq!(
            once(&s, line(1024).as_bytes()).status,
            200,
            "{m}: line at limit"
        );
        refused(&s, line(1025).as_bytes(), 414, "request line one over");
        let hdr = |n: usize| {
            format!(
                "GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
                "v".repeat(n - 3)
            )
        };
        assert_eq!(
            once(&s, hdr(2048).as_bytes()).status,
            200,
            "{m}: header at limit"
        );
        refused(&s, hdr(2049).as_bytes(), 431, "header line one over");
        let count = |n: usize| {
            let mut h = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
            for i in 1..n {
                h += &format!("X-{i}: y\r\n");
            }
            h + "\r\n"
        };
        assert_eq!(
            once(&s, count(20).as_bytes()).status,
            200,
            "{m}: 20 headers"
        );
        refused(&s, count(21).as_bytes(), 431, "21 headers");
        let head = |n: usize| {
            // Host line + filler lines of ≤ 2000 bytes, to exactly n bytes in all.
            let mut h = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
            while n - h.len() - 2 > 2002 {
                h += &format!("F: {}\r\n", "f".repeat(1995));
            }
            let left = n - h.len() - 2 - 2 - 3;
            h += &format!("G: {}\r\n\r\n", "g".repeat(left));
            assert_eq!(h.len(), n);
            h
        };
        assert_eq!(
            once(&s, head(8192).as_bytes()).status,
            200,
            "{m}: head at limit"
        );
        refused(&s, head(8193).as_bytes(), 431, "head one over");

        // Bodies: read and discarded; over the limit → 413.
        let post = |n: usize| {
            let mut v =
                format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n").into_bytes();
            v.extend(std::iter::repeat_n(b'b', n));
            v
        };
        assert_eq!(once(&s, &post(4096)).status, 200, "{m}: body at limit");
        refused(&s, &post(4097), 413, "body one over");
        refused(
            &s,
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1001\r\n",
            413,
            "chunked body over",
        );

        // Smuggling: RFC 9112 §6.1 and §6.3, strictly.
        for (raw, what) in [
            (&b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..], "CL+TE"),
            (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", "TE+CL"),
            (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd", "double CL"),
            (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", "differing CL"),
            (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", "negative CL"),
            (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", "TE gzip"),
            (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n", "TE not ending in chunked"),
            (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc\r\n0\r\n\r\n", "bad chunk"),
            (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n", "bad chunk size"),
        ] {
            refused(&s, raw, 400, what);
        }

        // Methods and versions.
        refused(
            &s,
            b"BREW /pot HTTP/1.1\r\nHost: t\r\n\r\n",
            501,
            "unknown method",
        );
        refused(
            &s,
            b"GET / HTTP/2.0\r\nHost: t\r\n\r\n",
            505,
            "HTTP/2.0 as text",
        );
        refused(&s, b"GET / HTTP/1.1\r\n\r\n", 400, "1.1 without Host");
        refused(
            &s,
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
            "two Hosts",
        );
        refused(
            &s,
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            400,
            "a bad Host",
        );
        refused(
            &s,
            b"GET / HTTP/1.1\r\nBad Header\r\nHost: t\r\n\r\n",
            400,
            "a header without a colon",
        );
        assert_eq!(
            once(&s, b"DELETE /x HTTP/1.1\r\nHost: t\r\n\r\n").status,
            200,
            "{m}: known methods reach the handler"
        );
    }
}

/// A client with Nagle on that writes the head and then the body (Python's http.client does so
/// for a file body) waits for the ACK of the head before the body leaves. The server has
/// nothing to answer until the body is in, so it must send that ACK at once. On a kept-alive
/// connection and on a new one.
#[test]
fn a_body_written_after_its_head_with_nagle_on_is_not_held_for_a_delayed_ack_under_every_model() {
    let head = b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n";
    for &m in ALL_MODELS {
        let s = hello(m, &[]);
        // The iterative model serves one connection at a time and closes it after one answer.
        let mut kept = (!is_iterative(m)).then(|| Conn::open(&s));
        for fresh in [false, true] {
            let took = support::median_time(7, || {
                let mut new;
                let c = match kept.as_mut() {
                    Some(c) if !fresh => c,
                    _ => {
                        new = Conn::open(&s);
                        &mut new
                    }
                };
                support::split_write(&mut c.w, head, b"hello");
                assert_eq!(c.response(false).status, 200, "{m}");
            });
            assert!(
                took < Duration::from_millis(20),
                "{m}: a request on {} took {took:?}: the body waited for a delayed ACK",
                if kept.is_some() && !fresh {
                    "a kept-alive connection"
                } else {
                    "a new connection"
                }
            );
        }
    }
}

#[test]
fn pipelined_requests_and_kept_alive_connections_get_every_answer_in_order_under_every_model() {
    for &m in ALL_MODELS {
        let s = hello(m, &[]);
        let ka = !is_iterative(m);

        // Real browsers' large cookies pass the default limits: an 8 KiB Cookie and 40 KiB of
        // headers in all.
        let mut big = format!(
            "GET /cookies HTTP/1.1\r\nHost: t\r\nCookie: {}\r\n",
            "c=".repeat(4096)
        );
        for i in 0..4 {
            big += &format!("X-Big-{i}: {}\r\n", "v".repeat(8 * 1024));
        }
        big += "\r\n";
        assert!(big.len() > 40 * 1024);
        assert_eq!(once(&s, big.as_bytes()).status, 200, "{m}: large cookies");

        // Three requests in one packet, HEAD in the middle.
        let mut c = Conn::open(&s);
        c.send(b"GET /one HTTP/1.1\r\nHost: t\r\n\r\nHEAD /two HTTP/1.1\r\nHost: t\r\n\r\nGET /three HTTP/1.1\r\nHost: t\r\n\r\n");
        // Iterative keeps no connection open for a next request, but answers every one
        // already sent, the last with `Connection: close`.
        let r1 = c.response(false);
        assert!(
            String::from_utf8_lossy(&r1.body).contains("GET /one "),
            "{m}"
        );
        let r2 = c.response(true);
        assert_eq!(r2.status, 200, "{m}");
        assert!(
            r2.header("content-length")
                .unwrap()
                .parse::<usize>()
                .unwrap()
                > 0
        );
        let r3 = c.response(false);
        assert!(
            String::from_utf8_lossy(&r3.body).contains("GET /three "),
            "{m}: in order"
        );
        assert!(!r1.closes() && !r2.closes(), "{m}");
        if !ka {
            assert!(r3.closes(), "{m}");
            assert!(c.closed(), "{m}: closed after the last request sent");
        }

        // A body (Content-Length, then chunked, split across writes) is discarded and the
        // connection stays usable.
        if ka {
            let mut c = Conn::open(&s);
            c.send(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01234");
            std::thread::sleep(Duration::from_millis(30));
            c.send(b"56789");
            assert_eq!(c.response(false).status, 200, "{m}");
            c.send(b"PUT /q HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab");
            std::thread::sleep(Duration::from_millis(30));
            c.send(b"c\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: t\r\n\r\n");
            assert!(String::from_utf8_lossy(&c.response(false).body).contains("PUT /q "));
            assert!(String::from_utf8_lossy(&c.response(false).body).contains("GET /after "));
        }

        // HTTP/1.0: close by default, kept alive on request.
        let mut c = Conn::open(&s);
        c.send(b"GET /old HTTP/1.0\r\n\r\n");
        let r = c.response(false);
        assert!(r.closes(), "{m}");
        assert!(c.closed());
        let mut c = Conn::open(&s);
        c.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.response(false);
        if ka {
            assert_eq!(r.header("connection"), Some("keep-alive"), "{m}");
            c.send(b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
            assert_eq!(c.response(false).status, 200);
        } else {
            assert!(r.closes());
        }

        // Expect: 100-continue where no body is read (everything but a proxy or CGI route):
        // the final answer comes at once, without a 100 inviting the upload, and the
        // connection closes after it (RFC 9110 §10.1.1). (A proxied upload gets its 100:
        // tests/proxy.rs.)
        let mut c = Conn::open(&s);
        c.send(b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
        let r = c.response(false);
        assert_eq!(r.status, 200, "{m}");
        assert!(r.closes(), "{m}");
        assert!(String::from_utf8_lossy(&r.body).contains("POST /e "), "{m}");
        // A client that sends its body anyway is not reset before it reads the answer.
        c.send(b"abc");
        c.expect_nothing_more_then_close();
        // ... and a declared body over the limit gets 413 without the 100.
        refused(
            &s,
            b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\nExpect: 100-continue\r\n\r\n",
            413,
            "expect over the limit",
        );
    }
}

/// Keep-alive is off under the iterative model (one connection at a time), yet requests a
/// client pipelined in one write are all answered, in order, before the close; one sent after
/// the last answer meets a closed connection.
#[test]
fn the_iterative_model_answers_every_pipelined_request_before_it_closes() {
    let m = ALL_MODELS[0];
    assert!(is_iterative(m));
    let s = hello(m, &[]);
    let mut c = Conn::open(&s);
    c.send(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\nGET /second HTTP/1.1\r\nHost: t\r\n\r\n");
    let r1 = c.response(false);
    assert!(String::from_utf8_lossy(&r1.body).contains("GET /first "));
    assert!(!r1.closes(), "the first answer promised the second");
    let r2 = c.response(false);
    assert!(String::from_utf8_lossy(&r2.body).contains("GET /second "));
    assert!(r2.closes(), "the last answer says the connection closes");
    c.expect_nothing_more_then_close();
    // The next client is served at once: nothing held the server.
    let r = once(&s, b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.closes());
}

#[test]
fn max_requests_per_connection_ends_with_connection_close() {
    for &m in ALL_MODELS.iter().skip(1) {
        let s = hello(m, &["--max-requests-per-connection", "2"]);
        let mut c = Conn::open(&s);
        c.send(&b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(3));
        assert!(!c.response(false).closes(), "{m}");
        assert!(c.response(false).closes(), "{m}");
        c.expect_nothing_more_then_close();
    }
}

#[test]
fn head_body_and_idle_timers_fire_under_every_model() {
    for &m in ALL_MODELS {
        let s = hello(
            m,
            &[
                "--head-timeout",
                "0.5",
                "--body-timeout",
                "0.5",
                "--keepalive-timeout",
                "0.5",
            ],
        );
        let t0 = Instant::now();
        let handles: Vec<_> = [
            (&b"GET / HTTP/1.1\r\nHo"[..], Some(408)),
            (
                b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nab",
                Some(408),
            ),
            (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", Some(200)),
        ]
        .into_iter()
        .map(|(raw, want)| {
            let addr = s.addr();
            std::thread::spawn(move || {
                let st = connect(addr);
                let mut c = Conn {
                    w: st.try_clone().unwrap(),
                    r: BufReader::new(st),
                };
                c.send(raw);
                let r = c.response(false);
                assert_eq!(Some(r.status), want);
                // After the answer (408, or 200 and then the idle timer): closed, silently.
                c.expect_nothing_more_then_close();
            })
        })
        .collect();
        for h in handles {
            h.join()
                .unwrap_or_else(|_| panic!("{m}: a timer did not fire as expected"));
        }
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "{m}: timers too slow"
        );
    }
}

/// A client that connects and never sends a byte is closed when the head timeout runs out,
/// counted from the accept, so silent connections cannot hold every connection slot (or, under
/// `iterative`, the whole server) for ever.
#[test]
fn a_connection_that_never_speaks_is_closed_at_the_head_timeout_under_every_model() {
    for &m in ALL_MODELS {
        let s = hello(m, &["--head-timeout", "0.5", "--max-connections", "1"]);
        let t0 = Instant::now();
        let mut silent = connect(s.addr());
        silent
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut got = Vec::new();
        let closed = silent.read_to_end(&mut got);
        assert!(
            closed.is_ok() && got.is_empty(),
            "{m}: a silent connection was not closed quietly: {closed:?} {got:?}"
        );
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(3),
            "{m}: closed after {took:?}, not at the 0.5 s head timeout"
        );
        // Its slot is free again: the next client is answered.
        let r = once(
            &s,
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200, "{m}");
    }
}

/// A request line without a version (HTTP/0.9's `GET /x`, with or without header lines after
/// it) can never end a head: it is refused with 400 as soon as its line ends, not held until
/// the head timeout for a 408.
#[test]
fn a_request_line_without_a_version_is_refused_at_once_under_every_model() {
    for &m in ALL_MODELS {
        let s = hello(m, &["--head-timeout", "30"]);
        for raw in [&b"GET /x\r\n"[..], b"GET /x\n", b"GET /x\r\nHost: t\r\n"] {
            let what = format!("{m}: {:?}", String::from_utf8_lossy(raw));
            let t0 = Instant::now();
            refused(&s, raw, 400, &what);
            let took = t0.elapsed();
            assert!(
                took < Duration::from_secs(2),
                "{what}: answered after {took:?}, not at once (head timeout 30 s)"
            );
        }
    }
}

#[test]
fn responses_carry_extra_headers_and_can_hide_the_server_token() {
    let s = hello(
        ModelFlags(&["--model", "threaded"]),
        &[
            "--header",
            "X-Frame-Options: DENY",
            "--header",
            "X-Test: 1",
            "--hide-server",
        ],
    );
    let r = once(&s, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-test"), Some("1"));
    assert_eq!(r.header("server"), None);
}

#[test]
fn hello_greets_http10_and_http11_clients_and_speaks_json_when_asked() {
    for &m in ALL_MODELS {
        let s = hello(m, &[]);
        for raw in [
            &b"GET /<b> HTTP/1.0\r\nX-Name: <i>\r\n\r\n"[..],
            b"GET /<b> HTTP/1.1\r\nHost: t\r\nX-Name: <i>\r\n\r\n",
        ] {
            let r = once(&s, raw);
            let page = String::from_utf8(r.body.clone()).unwrap();
            assert!(page.contains("Hello, 127.0.0.1!"), "{m}");
            assert!(
                page.contains("/&lt;b&gt;") && page.contains("&lt;i&gt;"),
                "{m}: escaped"
            );
            assert!(!page.contains("<i>"));
            assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        }
        let r = once(
            &s,
            b"GET /j HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\n\r\n",
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["request_line"], "GET /j HTTP/1.1");
    }
}

#[test]
fn python_http_client_and_h11_validate_every_answer_under_every_model() {
    support::require("python3 -c 'import h11'");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/clients.py");
    for &m in ALL_MODELS {
        let s = hello(m, &[]);
        let addr = s.addr();
        let ka = if is_iterative(m) { "no" } else { "yes" };
        let out = Command::new("python3")
            .args([
                script,
                &addr.ip().to_string(),
                &addr.port().to_string(),
                "--keepalive",
                ka,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_ne!(
            out.status.code(),
            Some(3),
            "{m}: h11 is not installed (.ci/run installs it): {text}"
        );
        assert!(
            out.status.success(),
            "{m}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn curl_talks_http10_and_http11_reuses_connections_and_waits_for_100_continue() {
    support::require("command -v curl");
    for &m in ALL_MODELS {
        let s = hello(m, &[]);
        let url = s.url("/c");
        let run = |args: &[&str]| {
            let out = crate::support::curl(&m.to_string(), args);
            (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        assert!(run(&[&url]).0.contains("GET /c HTTP/1.1"));
        assert!(run(&["--http1.0", &url]).0.contains("GET /c HTTP/1.0"));
        assert!(run(&["-I", &url]).0.starts_with("HTTP/1.1 200 OK"));
        let body = "x".repeat(5000);
        let (out, _) = run(&["-H", "Expect: 100-continue", "--data-binary", &body, &url]);
        assert!(out.contains("POST /c HTTP/1.1"), "{m}");
        let (_, err) = run(&["-v", &url, &url]);
        if !is_iterative(m) {
            assert!(
                err.contains("Re-using") || err.contains("Reusing"),
                "{m}: keep-alive reuse:\n{err}"
            );
        }
    }
}

#[test]
fn apache_bench_completes_without_failures_under_every_model() {
    support::require("command -v ab");
    for &m in ALL_MODELS {
        let s = hello(m, &[]);
        let url = s.url("/ab");
        for args in [&["-i", "-n", "20"][..], &["-k", "-n", "2000", "-c", "50"]] {
            let out = Command::new("ab")
                .args(["-q", "-s", "10"])
                .args(args)
                .arg(&url)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{m}: ab {args:?}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let n = args[args.iter().position(|a| *a == "-n").unwrap() + 1];
            assert!(
                text.contains(&format!("Complete requests:      {n}")),
                "{m}: {text}"
            );
            assert!(text.contains("Failed requests:        0"), "{m}: {text}");
            assert!(!text.contains("Non-2xx responses"), "{m}: {text}");
        }
    }
}

#[test]
fn the_access_log_writes_combined_log_format_to_stdout_and_to_a_file() {
    // Default `-`: stdout, after the listening line.
    let s = Server::start(&["hello", "--listen", "127.0.0.1:0", "--model", "threaded"]);
    let mut c = Conn::open(&s);
    c.send(
        b"GET /logged HTTP/1.1\r\nHost: t\r\nUser-Agent: tester\"x\r\nReferer: http://r/\r\n\r\n",
    );
    c.response(false);
    let line = s
        .stdout
        .recv_timeout(Duration::from_secs(5))
        .expect("an access-log line");
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.contains("] \"GET /logged HTTP/1.1\" 200 "), "{line}");
    assert!(line.ends_with("\"http://r/\" \"tester\\x22x\""), "{line}");

    // A file: appended, flushed within a second or so.
    let dir = TempDir::new("access-log");
    let path = dir.path().join("access.log");
    std::fs::write(&path, "earlier line\n").unwrap();
    let p = path.to_str().unwrap();
    for &m in ALL_MODELS {
        let s = Server::start(
            &[
                &["hello", "--listen", "127.0.0.1:0", "--access-log", p][..],
                m.0,
            ]
            .concat(),
        );
        once(
            &s,
            format!("GET /file-{} HTTP/1.1\r\nHost: t\r\n\r\n", m.0[1]).as_bytes(),
        );
        let deadline = Instant::now() + Duration::from_secs(4);
        loop {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.contains(&format!("\"GET /file-{} HTTP/1.1\" 200 ", m.0[1])) {
                assert!(
                    text.starts_with("earlier line\n"),
                    "appended, not truncated"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{m}: the access log was not flushed:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn serve_refuses_a_missing_directory_and_a_bad_config_in_one_line() {
    let (st, _, err) = support::run_tincan(
        &["serve", "/nonexistent/tincan-x"],
        b"",
        Duration::from_secs(10),
    );
    assert!(!st.success());
    assert_eq!(
        err.trim(),
        "tincan: /nonexistent/tincan-x does not exist; give the directory to serve (tincan serve DIR)"
    );
    let dir = TempDir::new("config");
    let cfg = dir.path().join("tincan.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\nmax_bdy = 5\n").unwrap();
    let (st, _, err) = support::run_tincan(
        &["serve", "--config", cfg.to_str().unwrap()],
        b"",
        Duration::from_secs(10),
    );
    assert!(!st.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("line 2") && err.contains("max_bdy"), "{err}");
}

#[test]
fn serve_reads_tincan_toml_and_flags_override_it() {
    let dir = TempDir::new("serve-config");
    std::fs::write(dir.path().join("a.txt"), "hello file\n").unwrap();
    let cfg = dir.path().join("tincan.toml");
    std::fs::write(
        &cfg,
        format!(
            "root = {:?}\nlisten = \"127.0.0.1:0\"\nmodel = \"threaded\"\naccess_log = \"off\"\nheader = [\"X-From: config\"]\nserver_tokens = false\nmax_request_line = 100\n",
            dir.path().to_str().unwrap()
        ),
    )
    .unwrap();
    let s = Server::start(&[
        "serve",
        "--config",
        cfg.to_str().unwrap(),
        "--max-request-line",
        "200",
    ]);
    let r = once(&s, b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello file\n");
    assert_eq!(r.header("x-from"), Some("config"));
    assert_eq!(r.header("server"), None);
    // The flag's 200 overrides the file's 100.
    let line = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(150));
    assert_eq!(once(&s, line.as_bytes()).status, 404);
}

#[test]
fn serve_answers_methods_a_static_root_does_not_allow_and_sends_files_under_every_model() {
    let dir = TempDir::new("serve-methods");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("big.bin"), &big).unwrap();
    for &m in ALL_MODELS {
        let mut args = vec![
            "serve",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--access-log",
            "off",
        ];
        args.extend_from_slice(m.0);
        let s = Server::start(&args);
        let r = once(&s, b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.status, 200, "{m}");
        assert!(r.body == big, "{m}: the file arrives intact");
        let r = once(&s, b"HEAD /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.header("content-length"), Some("300000"));
        let r = once(&s, b"DELETE /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.status, 405, "{m}");
        assert!(r.header("allow").is_some_and(|a| a.contains("GET")), "{m}");
        let r = once(&s, b"OPTIONS /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(r.header("allow").is_some_and(|a| a.contains("HEAD")), "{m}");
        refused(
            &s,
            b"FROB /big.bin HTTP/1.1\r\nHost: t\r\n\r\n",
            501,
            "unknown method on serve",
        );
    }
}

#[test]
fn shutdown_lets_a_request_in_flight_finish_with_connection_close() {
    for &m in ALL_MODELS.iter().skip(1) {
        let s = hello(m, &[]);
        let mut idle = Conn::open(&s);
        idle.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        idle.response(false);
        let mut busy = Conn::open(&s);
        busy.send(b"GET /late HTTP/1.1\r\nHo");
        std::thread::sleep(Duration::from_millis(100));
        s.signal(libc::SIGTERM);
        std::thread::sleep(Duration::from_millis(200));
        busy.send(b"st: t\r\n\r\n");
        let r = busy.response(false);
        assert_eq!(r.status, 200, "{m}");
        assert!(r.closes(), "{m}: the last answer closes");
        assert!(
            idle.closed(),
            "{m}: an idle keep-alive connection is closed at shutdown"
        );
    }
}

#[test]
fn a_pipelined_flood_larger_than_the_buffers_gets_every_answer_in_order() {
    for &m in ALL_MODELS.iter().skip(1) {
        let s = hello(m, &[]);
        let mut c = Conn::open(&s);
        // 60 requests, each echoed back in a ~9 KB page: well over the drivers' high-water mark,
        // so answering pauses and resumes as output drains.
        let filler = "f".repeat(8 * 1024);
        let mut all = Vec::new();
        for i in 0..60 {
            all.extend(
                format!("GET /n{i} HTTP/1.1\r\nHost: t\r\nX-Fill: {filler}\r\n\r\n").into_bytes(),
            );
        }
        let mut w = c.w.try_clone().unwrap();
        let writer = std::thread::spawn(move || w.write_all(&all).unwrap());
        for i in 0..60 {
            let r = c.response(false);
            assert_eq!(r.status, 200, "{m}");
            let want = format!("GET /n{i} HTTP/1.1");
            assert!(
                String::from_utf8_lossy(&r.body).contains(&want),
                "{m}: answer {i} out of order"
            );
        }
        writer.join().unwrap();
    }
}

/// After reading the answer to EOF, send more and report how the server took it: `true` if
/// the server had already closed (the kernel answers the late bytes with a reset), `false` if
/// it was still reading input away (a lingering close).
fn late_bytes_are_reset(c: &mut Conn) -> bool {
    c.expect_nothing_more_then_close();
    c.r.get_ref()
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let _ = c.w.write_all(b"late bytes");
    std::thread::sleep(Duration::from_millis(100));
    // The reset is reported once: to this write (EPIPE or ECONNRESET) or to the read below.
    if c.w.write_all(b"more late bytes").is_err() {
        return true;
    }
    let mut b = [0u8; 16];
    match c.r.get_mut().read(&mut b) {
        Ok(0) => false,
        Ok(n) => panic!("unexpected bytes after the close: {:?}", &b[..n]),
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
            true
        }
    }
}

#[test]
fn a_connection_close_request_is_closed_at_once_and_a_refusal_lingers_under_every_model() {
    for &m in ALL_MODELS {
        let s = hello(m, &["--max-body", "4096"]);
        // The client said its last word and all of it was read: close at once, as nginx does,
        // with no shutdown and lingering read (the client's late bytes meet a closed socket).
        let mut c = Conn::open(&s);
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let r = c.response(false);
        assert_eq!(r.status, 200, "{m}");
        assert!(r.closes(), "{m}");
        assert!(late_bytes_are_reset(&mut c), "{m}: the server lingered");
        // Refused before its body was read: the body may still be coming, so the server
        // lingers, reading it away, and the client reads the 413 instead of a reset.
        let mut c = Conn::open(&s);
        c.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n");
        let r = c.response(false);
        assert_eq!(r.status, 413, "{m}");
        assert!(
            !late_bytes_are_reset(&mut c),
            "{m}: the refusal did not linger"
        );
        // Bytes pipelined behind the last request are unread input: linger too.
        let mut c = Conn::open(&s);
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /after HTTP/1.1\r\n");
        assert_eq!(c.response(false).status, 200, "{m}");
        assert!(
            !late_bytes_are_reset(&mut c),
            "{m}: closed over unread input"
        );
    }
}

/// A slow client that stops sending gets its 408, and the lingering close after it ends once
/// the client has been silent for half a second rather than after the whole linger (2 s): under
/// the iterative model, which serves one connection at a time, the next client waited the head
/// timeout plus 2 s (found by an outside pass); now the head timeout plus about 0.5 s.
#[test]
fn a_silent_client_after_its_408_holds_the_iterative_server_half_a_second_not_two() {
    let m = ALL_MODELS[0];
    assert!(is_iterative(m));
    let s = hello(m, &["--head-timeout", "1"]);
    let mut slow = Conn::open(&s);
    slow.send(b"GET / HTTP/1.1\r\nHo");
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    let mut next = Conn::open(&s);
    next.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(next.response(false).status, 200);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_millis(2000),
        "the next client waited {waited:?} (head timeout 1 s, then at most 0.5 s of quiet)"
    );
    // The slow one got its answer.
    assert_eq!(slow.response(false).status, 408);
}

/// What a client sends reaches the access log escaped, in both formats: bytes that are not
/// UTF-8, control bytes and quotes as `\xHH` (nginx's way), so no request can write a line of
/// its own; the JSON lines are read back by Python's json module.
#[test]
fn access_log_lines_in_combined_and_json_escape_what_clients_send() {
    support::require("python3 --version");
    let dir = TempDir::new("access-log-formats");
    std::fs::write(dir.path().join("café.txt"), "x").unwrap();
    let root = dir.path().to_str().unwrap();
    let requests: [&[u8]; 4] = [
        b"GET /caf%C3%A9.txt HTTP/1.1\r\nHost: t\r\nUser-Agent: a\"b\tc\xc3\xa9\r\nConnection: close\r\n\r\n",
        b"GET /caf\xc3\xa9.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"GET /\xff\x01x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"GET /\r\n1.2.3.4 - - HTTP/1.1\r\nHost: t\r\n\r\n",
    ];
    for format in ["combined", "json"] {
        let log = dir.path().join(format!("{format}.log"));
        let mut srv = Server::start(&[
            "serve",
            root,
            "--listen",
            "127.0.0.1:0",
            "--access-log",
            log.to_str().unwrap(),
            "--access-log-format",
            format,
        ]);
        for raw in requests {
            let mut s = support::connect(srv.addr());
            s.write_all(raw).unwrap();
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            assert!(answer.starts_with(b"HTTP/1.1 "), "{format}: {raw:?}");
        }
        // SIGTERM flushes the log.
        srv.signal(libc::SIGTERM);
        let status = srv.wait_exit(Duration::from_secs(15));
        assert!(status.is_some_and(|s| s.success()), "{status:?}");
        let text = std::fs::read(&log).unwrap();
        let text = String::from_utf8(text).expect("the log is UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), requests.len(), "{format}:\n{text}");
        if format == "combined" {
            assert!(text.is_ascii(), "{text}");
            let want = [
                "\"GET /caf%C3%A9.txt HTTP/1.1\" 200 1 \"-\" \"a\\x22b\\x09c\\xC3\\xA9\"",
                "\"GET /caf\\xC3\\xA9.txt HTTP/1.1\" 200 1 ",
                "\"GET /\\xFF\\x01x HTTP/1.1\" 400 ",
                "\"GET /\" 400 ",
            ];
            for (line, want) in lines.iter().zip(want) {
                assert!(line.contains(want), "{want}\n{text}");
            }
            continue;
        }
        // Each line is one JSON object; Python prints the fields it reads.
        let read = Command::new("python3")
            .args([
                "-c",
                "import json, sys\n\
                 for line in open(sys.argv[1], encoding='utf-8'):\n\
                 \x20   o = json.loads(line); r = o['request']\n\
                 \x20   print(o['status'], r.get('method'), r.get('uri') or r.get('line'), \
                 r.get('headers', {}).get('User-Agent'), o['logger'])",
                log.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&read.stderr);
        assert!(read.status.success(), "{err}");
        assert_eq!(
            String::from_utf8_lossy(&read.stdout),
            "200 GET /caf%C3%A9.txt ['a\"b\\\\x09cé'] http.log.access\n\
             200 GET /café.txt None http.log.access\n\
             400 GET /\\xFF\\x01x None http.log.access\n\
             400 None GET / None http.log.access\n"
        );
    }
}

/// A client still being sent a file when --grace runs out is cut off, and the server says
/// how many were, in one line per process, under every model.
#[test]
fn connections_cut_off_at_the_end_of_the_grace_period_are_counted_in_one_line() {
    let dir = TempDir::new("grace-cut");
    // Far more than the socket buffers hold: the answer cannot be finished without a reader.
    std::fs::write(dir.path().join("big.bin"), vec![b'x'; 64 << 20]).unwrap();
    let root = dir.path().to_str().unwrap();
    for &m in ALL_MODELS {
        let mut srv = Server::start(&support::serve_args(root, m, &["--grace", "1"]));
        let mut c = connect(srv.addr());
        c.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        // The answer has begun: its head arrives, then the client stops reading.
        let mut first = [0u8; 12];
        c.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"HTTP/1.1 200", "{m:?}");
        srv.signal(libc::SIGTERM);
        let status = srv.wait_exit(Duration::from_secs(20));
        assert!(status.is_some_and(|s| s.success()), "{m:?}: {status:?}");
        let err = srv.stderr();
        let want = "1 connection was still open when the grace period (1 s, --grace) ran out \
                    and was closed unfinished";
        assert_eq!(err.matches(want).count(), 1, "{m:?}: {err}");
    }
}
