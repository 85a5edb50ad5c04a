//! HTTP/2 against the real binary with real clients: curl (h2c with prior knowledge, and h2 by
//! ALPN over TLS), Python's `h2` package (100 streams on one connection, a 10 MiB body through
//! a 64 KiB window, floods), under every model.

use std::process::Command;

use crate::support::{self, ModelFlags, Server, TempDir, ALL_MODELS};

/// A client on Python's `h2`: `get PORT plain|tls WINDOW PATH...` prints `status sha256 len`
/// per path, all requested at once on one connection; `flood PORT plain|tls ping|reset|settings`
/// floods and prints the GOAWAY's error code (or `closed`).
const PY_CLIENT: &str = r#"
import hashlib, socket, ssl, sys
import h2.config, h2.connection, h2.events, h2.settings
mode, port, tls = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "tls"
s = socket.create_connection(("127.0.0.1", port), timeout=20)
if tls:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    s = ctx.wrap_socket(s, server_hostname="localhost")
    assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
c.initiate_connection()
def hdrs(p):
    return [(":method", "GET"), (":scheme", "https" if tls else "http"), (":authority", "localhost"), (":path", p)]
if mode == "get":
    window, paths = int(sys.argv[4]), sys.argv[5:]
    c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    ids, bodies, status, ended = [], {}, {}, set()
    for p in paths:
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, hdrs(p), end_stream=True)
        ids.append(sid)
        bodies[sid] = bytearray()
    s.sendall(c.data_to_send())
    while len(ended) < len(ids):
        data = s.recv(65536)
        if not data:
            sys.exit("closed before every stream ended")
        for e in c.receive_data(data):
            if isinstance(e, h2.events.ResponseReceived):
                status[e.stream_id] = dict(e.headers)[":status"]
            elif isinstance(e, h2.events.DataReceived):
                bodies[e.stream_id] += e.data
                c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, h2.events.StreamEnded):
                ended.add(e.stream_id)
            elif isinstance(e, h2.events.ConnectionTerminated):
                # A graceful GOAWAY that covers every stream asked for is no failure (the
                # iterative model says it once the answers are out).
                if e.error_code != 0 or e.last_stream_id < ids[-1]:
                    sys.exit(repr(e))
            elif isinstance(e, h2.events.StreamReset):
                sys.exit(repr(e))
        s.sendall(c.data_to_send())
    for i in ids:
        print(status[i], hashlib.sha256(bodies[i]).hexdigest(), len(bodies[i]))
elif mode == "seq":
    # `count` requests one after another on one connection, each sent in full only after its
    # answer ended (a body of `size` bytes, declared): the statuses, counted.
    method, path, count, size = sys.argv[4], sys.argv[5], int(sys.argv[6]), int(sys.argv[7])
    s.sendall(c.data_to_send())
    seen = {}
    for _ in range(count):
        sid = c.get_next_available_stream_id()
        extra = [("content-length", str(size))] if size else []
        c.send_headers(sid, [(":method", method)] + hdrs(path)[1:] + extra, end_stream=not size)
        s.sendall(c.data_to_send())
        status = None
        while status is None:
            data = s.recv(65536)
            if not data:
                sys.exit("closed: %r" % seen)
            for e in c.receive_data(data):
                if isinstance(e, h2.events.ResponseReceived):
                    got = dict(e.headers)[":status"]
                elif isinstance(e, h2.events.DataReceived):
                    c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                elif isinstance(e, h2.events.StreamEnded) and e.stream_id == sid:
                    status = got
                elif isinstance(e, h2.events.StreamReset) and e.stream_id == sid:
                    status = "reset %d" % int(e.error_code)
            s.sendall(c.data_to_send())
        seen[status] = seen.get(status, 0) + 1
        if size and not status.startswith("reset"):
            for k in range(0, size, 16384):
                c.send_data(sid, b"b" * min(16384, size - k), end_stream=k + 16384 >= size)
            s.sendall(c.data_to_send())
    print(" ".join("%s x%d" % kv for kv in sorted(seen.items())))
elif mode == "put-trailers":
    # A PUT of `send` bytes declaring `declared`, ended by trailers: "STATUS BODY" or "RST CODE".
    path, declared, send = sys.argv[4], sys.argv[5], int(sys.argv[6])
    c = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8", validate_outbound_headers=False))
    c.initiate_connection()
    c.send_headers(1, [(":method", "PUT")] + hdrs(path)[1:] + [("content-length", declared)])
    c.send_data(1, b"t" * send)
    c.send_headers(1, [("x-checksum", "none")], end_stream=True)
    s.sendall(c.data_to_send())
    status, body = None, b""
    while True:
        data = s.recv(65536)
        if not data:
            sys.exit("closed before the stream ended")
        events = c.receive_data(data)
        for e in events:
            if isinstance(e, h2.events.ResponseReceived):
                status = dict(e.headers)[":status"]
            elif isinstance(e, h2.events.DataReceived):
                body += e.data
            elif isinstance(e, h2.events.StreamReset):
                print("RST", int(e.error_code))
                sys.exit(0)
        if any(isinstance(e, h2.events.StreamEnded) for e in events):
            print(status, body.decode().strip())
            sys.exit(0)
        s.sendall(c.data_to_send())
else:
    what = sys.argv[4]
    s.sendall(c.data_to_send())
    for i in range(5000):
        if what == "ping":
            c.ping(i.to_bytes(8, "big"))
        elif what == "settings":
            c.update_settings({h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 65536 + i})
        elif what == "reset":
            sid = c.get_next_available_stream_id()
            c.send_headers(sid, hdrs("/small.txt"), end_stream=False)
            c.reset_stream(sid)
    try:
        s.sendall(c.data_to_send())
    except OSError:
        pass
    code = "closed"
    try:
        while True:
            data = s.recv(65536)
            if not data:
                break
            for e in c.receive_data(data):
                if isinstance(e, h2.events.ConnectionTerminated):
                    code = str(int(e.error_code))
            if code != "closed":
                break
    except OSError:
        pass
    print(code)
"#;

fn site() -> (TempDir, Vec<u8>) {
    let root = TempDir::new("h2-site");
    let big = support::noise(10 << 20, 99);
    std::fs::write(root.path().join("big.bin"), &big).unwrap();
    std::fs::write(root.path().join("small.txt"), "hello over HTTP/2\n").unwrap();
    (root, big)
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn python(args: &[&str]) -> String {
    let out = Command::new("python3")
        .args(["-c", PY_CLIENT])
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python h2 {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A plain server and a TLS one (self-signed, in `certs`) on the same root, under `m`.
fn servers(root: &str, certs: &str, m: ModelFlags, extra: &[&str]) -> (Server, Server) {
    let plain = Server::start(&support::serve_args(root, m, extra));
    let mut tls_args = support::serve_args(root, m, extra);
    tls_args.extend(["--tls-self-signed", certs]);
    (plain, Server::start(&tls_args))
}

#[test]
fn curl_speaks_h2c_and_h2_over_tls_under_every_model() {
    support::require("curl --version | grep -q HTTP2");
    let (root, big) = site();
    let certs = TempDir::new("h2-certs");
    let certs_s = certs.path().to_str().unwrap();
    for m in ALL_MODELS.iter().copied() {
        let (plain, tls) = servers(root.path().to_str().unwrap(), certs_s, m, &[]);
        let cacert = certs.path().join("cert.pem");
        let cases = [
            (
                "h2c",
                plain.url("/big.bin"),
                vec!["--http2-prior-knowledge"],
            ),
            (
                "h2",
                format!("{}/big.bin", tls.addrs[0]),
                vec!["--http2", "--cacert", cacert.to_str().unwrap()],
            ),
        ];
        for (name, url, flags) in cases {
            let what = format!("{m} {name}");
            let mut args = flags.clone();
            args.extend(["-w", "%{stderr}%{http_version}", &url]);
            let before = support::tls_stat();
            let out = support::curl(&what, &args);
            assert_eq!(String::from_utf8_lossy(&out.stderr), "2", "{what}");
            assert!(out.stdout == big, "{what}: the 10 MiB body differs");
            // Where the kernel has TLS (scripts/ktls-vm), the h2 connection's file frames
            // moved its records into the kernel (kernel TLS).
            if let (Some(before), Some(after), "h2") = (before, support::tls_stat(), name) {
                assert!(after["TlsTxSw"] > before["TlsTxSw"], "{what}: {after:?}");
                assert_eq!(
                    after["TlsDecryptError"], before["TlsDecryptError"],
                    "{what}"
                );
            }
            // A range, a conditional and an error page come from the same handler.
            let mut args = flags.clone();
            args.extend(["-r", "10-19", "-w", "%{stderr}%{http_code}", &url]);
            let out = support::curl(&what, &args);
            assert_eq!(String::from_utf8_lossy(&out.stderr), "206", "{what}");
            assert_eq!(out.stdout, big[10..20], "{what}");
            let mut args = flags.clone();
            let missing = url.replace("big.bin", "missing");
            args.extend(["-w", "%{stderr}%{http_code}", &missing]);
            let out = support::curl(&what, &args);
            assert_eq!(String::from_utf8_lossy(&out.stderr), "404", "{what}");
        }
        // With --http2 off, prior knowledge gets no HTTP/2 and TLS offers only http/1.1.
        drop((plain, tls));
        let (plain, tls) = servers(
            root.path().to_str().unwrap(),
            certs_s,
            m,
            &["--http2", "off"],
        );
        let out = support::curl(
            &format!("{m} off"),
            &[
                "--http2",
                "--cacert",
                cacert.to_str().unwrap(),
                "-w",
                "%{stderr}%{http_version}",
                &format!("{}/small.txt", tls.addrs[0]),
            ],
        );
        assert_eq!(String::from_utf8_lossy(&out.stderr), "1.1", "{m} off");
        let h2c = Command::new("curl")
            .args(["-sS", "--max-time", "5", "--http2-prior-knowledge"])
            .arg(plain.url("/small.txt"))
            .output()
            .unwrap();
        assert!(!h2c.status.success(), "{m}: h2c answered with --http2 off");
    }
}

#[test]
fn the_access_log_writes_http_2_0() {
    support::require("curl --version | grep -q HTTP2");
    let (root, _) = site();
    // The default access log: stdout, after the listening line.
    let srv = Server::start(&[
        "serve",
        root.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    support::curl("log", &["--http2-prior-knowledge", &srv.url("/small.txt")]);
    let line = srv
        .stdout
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("an access-log line");
    assert!(
        line.contains("\"GET /small.txt HTTP/2.0\" 200 18"),
        "{line}"
    );
}

#[test]
fn python_h2_runs_100_streams_and_a_body_through_a_64k_window_under_every_model() {
    support::require("python3 -c 'import h2'");
    let (root, big) = site();
    let certs = TempDir::new("h2-certs");
    let small = sha256(b"hello over HTTP/2\n");
    let big_sha = sha256(&big);
    for m in ALL_MODELS.iter().copied() {
        let (plain, tls) = servers(
            root.path().to_str().unwrap(),
            certs.path().to_str().unwrap(),
            m,
            &[],
        );
        for (name, port, kind) in [
            ("h2c", plain.addr().port(), "plain"),
            (
                "h2",
                tls.addrs[0].rsplit(':').next().unwrap().parse().unwrap(),
                "tls",
            ),
        ] {
            let port = port.to_string();
            let mut args = vec!["get", &port, kind, "1048576"];
            args.extend(std::iter::repeat_n("/small.txt", 100));
            let out = python(&args);
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines.len(), 100, "{m} {name}");
            for l in lines {
                assert_eq!(l, format!("200 {small} 18"), "{m} {name}");
            }
            let out = python(&["get", &port, kind, "65536", "/big.bin"]);
            assert_eq!(
                out.trim(),
                format!("200 {big_sha} {}", big.len()),
                "{m} {name}: 10 MiB through a 64 KiB window"
            );
        }
    }
}

#[test]
fn floods_end_in_goaway_and_other_connections_do_not_notice() {
    support::require("python3 -c 'import h2'");
    let (root, _) = site();
    for m in [
        ModelFlags(&["--model", "event", "--workers", "1"]),
        ModelFlags(&["--model", "prefork", "--workers", "2"]),
        ModelFlags(&["--model", "threaded"]),
    ] {
        let srv = Server::start(&support::serve_args(root.path().to_str().unwrap(), m, &[]));
        let port = srv.addr().port().to_string();
        for what in ["ping", "settings", "reset"] {
            let out = python(&["flood", &port, "plain", what]);
            // ENHANCE_YOUR_CALM (RFC 9113 §7).
            assert_eq!(out.trim(), "11", "{m}: {what} flood");
            let out = python(&["get", &port, "plain", "65535", "/small.txt"]);
            assert!(
                out.starts_with("200 "),
                "{m}: after the {what} flood: {out}"
            );
        }
    }
}

#[test]
fn nghttp_and_h2load_are_served_over_h2c_and_tls() {
    support::require("nghttp --version");
    support::require("h2load --version");
    let (root, _) = site();
    let certs = TempDir::new("h2-certs");
    for m in [
        ModelFlags(&["--model", "event", "--workers", "2"]),
        ModelFlags(&["--model", "prefork", "--workers", "2"]),
    ] {
        let (plain, tls) = servers(
            root.path().to_str().unwrap(),
            certs.path().to_str().unwrap(),
            m,
            &[],
        );
        for url in [
            plain.url("/small.txt"),
            format!("{}/small.txt", tls.addrs[0]),
        ] {
            // nghttp does not check the certificate; it needs ALPN h2 or prior knowledge.
            let out = Command::new("nghttp").arg("-s").arg(&url).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains(" 200 ") && text.contains("/small.txt"),
                "{m} nghttp {url}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let out = Command::new("h2load")
                .args(["-n", "2000", "-c", "4", "-m", "10", &url])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("2000 succeeded, 0 failed"),
                "{m} h2load {url}: {text}"
            );
        }
    }
}

/// ALPN reaches the session: a client that chose `h2` and then speaks HTTP/1.1 gets the
/// server's SETTINGS and a GOAWAY PROTOCOL_ERROR (RFC 9113 §3.4), not an HTTP/1.1 answer.
#[test]
fn a_client_that_chose_h2_by_alpn_must_send_the_preface() {
    support::require("python3 -c 'import ssl'");
    let (root, _) = site();
    let certs = TempDir::new("h2-certs");
    let mut args = support::serve_args(
        root.path().to_str().unwrap(),
        ModelFlags(&["--model", "event", "--workers", "1"]),
        &[],
    );
    args.extend(["--tls-self-signed", certs.path().to_str().unwrap()]);
    let srv = Server::start(&args);
    let port = srv.addrs[0].rsplit(':').next().unwrap().to_string();
    const PY: &str = r#"
import socket, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["h2"])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10), server_hostname="localhost")
s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
data = b""
while True:
    try:
        d = s.recv(4096)
    except (ssl.SSLError, OSError):
        break
    if not d:
        break
    data += d
print(s.selected_alpn_protocol(), data.hex())
"#;
    let out = Command::new("python3")
        .args(["-c", PY, &port])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (alpn, hex) = text.trim().split_once(' ').expect("two words");
    assert_eq!(alpn, "h2");
    // SETTINGS (type 4) first; then GOAWAY (type 7, 8 bytes) whose code is PROTOCOL_ERROR (1).
    assert_eq!(&hex[6..8], "04", "{hex}");
    assert!(
        hex.contains("000008070000000000") && hex.ends_with("00000001"),
        "{hex}"
    );
}

/// PUT 4 MiB as alice to /over.bin (PORT is argv[1]), sending while the windows allow; print
/// the status, whether the stream was then reset, and the reset's code.
const PY_OVER_LIMIT: &str = r#"
import base64, socket, sys
import h2.connection, h2.events, h2.config
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
c.initiate_connection()
auth = "Basic " + base64.b64encode(b"alice:s3cret").decode()
c.send_headers(1, [(":method", "PUT"), (":scheme", "http"), (":authority", "localhost"),
                   (":path", "/over.bin"), ("authorization", auth)])
left, status, reset = 4 << 20, None, None
while reset is None:
    while left > 0:
        n = min(16384, left, c.local_flow_control_window(1))
        if n <= 0:
            break
        c.send_data(1, b"x" * n)
        left -= n
    s.sendall(c.data_to_send())
    data = s.recv(65536)
    if not data:
        break
    for e in c.receive_data(data):
        if isinstance(e, h2.events.ResponseReceived):
            status = dict(e.headers)[b":status"].decode()
        elif isinstance(e, h2.events.StreamReset):
            reset = e.error_code
print(status, "reset" if reset is not None else "no-reset", int(reset or 0))
"#;

/// `--auth-file`, uploads and folder archives over h2: without credentials the answer is 401
/// with its challenge, with them the file; a PUT stores its body (streamed from its DATA
/// frames) and an over-limit one is 413 with nothing left behind; a folder's `.tar.gz`,
/// made as it is sent, arrives whole. HTTP/2 is on by default with all of them.
#[test]
fn passwords_uploads_and_archives_work_over_h2() {
    support::require("curl --version | grep -q HTTP2");
    support::require("command -v htpasswd");
    let (root, _) = site();
    let users = root.path().join("users.htpasswd");
    let out = Command::new("htpasswd")
        .args(["-cbB", users.to_str().unwrap(), "alice", "s3cret"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let upload = root.path().join("up.bin");
    let sent = support::noise(300_000, 7);
    std::fs::write(&upload, &sent).unwrap();
    std::fs::create_dir_all(root.path().join("box")).unwrap();
    std::fs::write(root.path().join("box/a.txt"), "in the box\n").unwrap();
    let tgz = root.path().join("got.tar.gz");
    for m in [
        ModelFlags(&["--model", "prefork", "--workers", "2"]),
        ModelFlags(&["--model", "event", "--workers", "2", "--poller", "epoll"]),
    ] {
        let mut args = support::serve_args(root.path().to_str().unwrap(), m, &[]);
        args.extend([
            "--auth-file",
            users.to_str().unwrap(),
            "--upload",
            "/",
            "--archives",
            "on",
            "--max-body",
            "1m",
        ]);
        let srv = Server::start(&args);
        let code = |args: &[&str]| {
            let mut all = vec![
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
                "--http2-prior-knowledge",
            ];
            all.extend_from_slice(args);
            String::from_utf8(support::curl("h2 auth", &all).stdout).unwrap()
        };
        let url = srv.url("/small.txt");
        assert_eq!(code(&[&url]), "401 2", "{m}");
        assert_eq!(code(&["-u", "alice:s3cret", &url]), "200 2", "{m}");
        let put = srv.url("/new.bin");
        let _ = std::fs::remove_file(root.path().join("new.bin"));
        assert_eq!(
            code(&["-T", upload.to_str().unwrap(), &put]),
            "401 2",
            "{m}"
        );
        assert!(!root.path().join("new.bin").exists(), "{m}");
        let auth = ["-u", "alice:s3cret"];
        let stored = code(&[auth[0], auth[1], "-T", upload.to_str().unwrap(), &put]);
        assert_eq!(stored, "201 2", "{m}");
        assert!(
            std::fs::read(root.path().join("new.bin")).unwrap() == sent,
            "{m}"
        );
        // Over --max-body: 413, and no partial file. The answer comes before the body is all
        // sent, then RST_STREAM NO_ERROR asks the client to stop (RFC 9113 §8.1); curl 7.88
        // drops the answer on that reset, which the RFC says clients must not, so Python's
        // `h2` sends this one.
        let over = Command::new("python3")
            .args(["-c", PY_OVER_LIMIT, &srv.addr().port().to_string()])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&over.stdout),
            "413 reset 0\n",
            "{m}: {}",
            String::from_utf8_lossy(&over.stderr)
        );
        assert!(!root.path().join("over.bin").exists(), "{m}");
        let dl = srv.url("/box/?download=tar.gz");
        let got = support::curl(
            &format!("{m} archive"),
            &[
                "--http2-prior-knowledge",
                auth[0],
                auth[1],
                "-o",
                tgz.to_str().unwrap(),
                "-w",
                "%{http_code} %{http_version}",
                &dl,
            ],
        );
        assert_eq!(String::from_utf8_lossy(&got.stdout), "200 2", "{m}");
        let list = Command::new("tar")
            .args(["tzf", tgz.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&list.stdout),
            "box/\nbox/a.txt\n",
            "{m}"
        );
    }
}

/// A Python HTTP/1.1 upstream on 127.0.0.1:0 (it prints its port): `GET` answers
/// `up PATH` (`X-Repeat` times) with `Connection: keep-alive` and `Keep-Alive` fields, which
/// HTTP/2 must not carry; `POST` answers 201 `got N bytes`.
const PY_UPSTREAM: &str = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = (("up %s\n" % self.path) * int(self.headers.get("X-Repeat", "1"))).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "keep-alive")
        self.send_header("Keep-Alive", "timeout=5")
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = b"got %d bytes\n" % len(data)
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_HEAD(self):
        self.send_response(204)
        self.end_headers()
    def do_PUT(self):
        if self.path.endswith("/early"):
            # Answered before the body is read, as an upstream refusing it would.
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            return
        left, n = int(self.headers["Content-Length"]), 0
        while left > 0:
            got = len(self.rfile.read(min(left, 1 << 20)))
            if got == 0:
                break
            n, left = n + got, left - got
        body = b"put %d bytes\n" % n
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(http.server.ThreadingHTTPServer):
    # socketserver's default backlog of 5 drops the SYNs of 50 links dialled at once.
    request_queue_size = 128
s = S(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// A routed request body with a declared length streams over h2: 256 MiB goes to the upstream
/// with the server's resident memory (its workers' under prefork) within 32 MiB of where it
/// started, the client kept at most a window ahead of the upstream. A length over
/// `--max-body` is refused at once, and a body longer than its length resets the stream
/// (RFC 9113 §8.1.1) and harms nothing after it.
#[test]
fn a_routed_upload_streams_over_h2_in_bounded_memory() {
    support::require("curl --version | grep -q HTTP2");
    support::require("nghttp");
    let _heavy = support::heavy();
    let (root, _) = site();
    let up = PyUpstream::start();
    let route = format!("/api=http://127.0.0.1:{}", up.1);
    let big = root.path().join("upload.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let big_arg = big.to_str().unwrap();
    let small = root.path().join("small.bin");
    std::fs::write(&small, vec![b's'; 3 << 20]).unwrap();
    let models = [
        ModelFlags(&["--model", "threaded"]),
        ModelFlags(&["--model", "prefork", "--workers", "1"]),
        ModelFlags(&["--model", "event", "--workers", "1"]),
    ];
    for m in models {
        let s = Server::start(&support::serve_args(
            root.path().to_str().unwrap(),
            m,
            &["--proxy", &route, "--max-body", "1g"],
        ));
        let url = s.url("/api/up");
        let before = support::rss_tree_kib(s.pid());
        let mut curl = Command::new("curl")
            .args(["-sS", "--max-time", "120", "--http2-prior-knowledge"])
            .args(["-w", "%{stderr}%{http_code} %{http_version}", "-T", big_arg])
            .arg(&url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run curl");
        let mut peak = before;
        while curl.try_wait().unwrap().is_none() {
            peak = peak.max(support::rss_tree_kib(s.pid()));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = curl.wait_with_output().unwrap();
        assert_eq!(
            (
                String::from_utf8_lossy(&out.stdout).as_ref(),
                String::from_utf8_lossy(&out.stderr).as_ref()
            ),
            ("put 268435456 bytes\n", "201 2"),
            "{m}"
        );
        assert!(
            peak.saturating_sub(before) < 32 << 10,
            "{m}: resident memory grew from {before} to {peak} KiB"
        );

        let s = Server::start(&support::serve_args(
            root.path().to_str().unwrap(),
            m,
            &["--proxy", &route, "--max-body", "1m"],
        ));
        let h2c = |more: &[&str]| {
            Command::new("curl")
                .args(["-sS", "--max-time", "10", "--http2-prior-knowledge"])
                .args(["-o", "/dev/null", "-w", "%{http_code}"])
                .args(more)
                .arg(s.url("/api/p"))
                .output()
                .expect("run curl")
        };
        // Answered before the body: the stream is then reset with NO_ERROR (§8.1), which
        // curl 7.88 takes for an error, so nghttp reads this one.
        let over = Command::new("nghttp")
            .args(["-v", "-d", small.to_str().unwrap()])
            .arg(s.url("/api/p"))
            .output()
            .expect("run nghttp");
        let over = String::from_utf8_lossy(&over.stdout);
        assert!(over.contains(":status: 413"), "{m}: {over}");
        // At the limit's edge: 1 MiB exactly goes upstream, one byte more is refused.
        let put = |len: usize| {
            let f = root.path().join(format!("edge-{len}.bin"));
            std::fs::write(&f, vec![b'e'; len]).unwrap();
            let out = Command::new("nghttp")
                .args(["-v", "-H", ":method: PUT", "-d", f.to_str().unwrap()])
                .arg(s.url("/api/edge"))
                .output()
                .expect("run nghttp");
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        let at = put(1 << 20);
        assert!(
            at.contains(":status: 201") && at.contains("put 1048576 bytes"),
            "{m}: {at}"
        );
        assert!(put((1 << 20) + 1).contains(":status: 413"), "{m}");
        let longer = h2c(&["--data-binary", "0123456789", "-H", "Content-Length: 4"]);
        assert!(
            !longer.status.success(),
            "{m}: a body longer than its length was answered {}",
            String::from_utf8_lossy(&longer.stdout)
        );
        let fine = h2c(&["--data-binary", "0123"]);
        assert_eq!(String::from_utf8_lossy(&fine.stdout), "201", "{m}");
        // Trailers end a streamed body too: whole, it is answered; short, the stream resets.
        let port = s.addr().port().to_string();
        let trailed = |declared: &str, send: &str| {
            python(&["put-trailers", &port, "plain", "/api/t", declared, send])
        };
        assert_eq!(trailed("1000", "1000"), "201 put 1000 bytes\n", "{m}");
        assert_eq!(trailed("1000", "500"), "RST 1\n", "{m}");
    }
}

/// A relayed answer that ends with its HEADERS (a 204 to HEAD here), or one that comes before
/// the request's body has all been sent, frees its stream once both sides ended: 150 of each
/// one after another on one connection, past `--h2-max-streams` (128), are all answered
/// (leaked streams got REFUSED_STREAM from the 129th on).
#[test]
fn relayed_streams_are_freed_when_the_answer_ends_first() {
    support::require("python3 -c 'import h2'");
    let (root, _) = site();
    let up = PyUpstream::start();
    let route = format!("/api=http://127.0.0.1:{}", up.1);
    for m in [
        ModelFlags(&["--model", "threaded"]),
        ModelFlags(&["--model", "prefork", "--workers", "1"]),
        ModelFlags(&["--model", "event", "--workers", "1"]),
    ] {
        let s = Server::start(&support::serve_args(
            root.path().to_str().unwrap(),
            m,
            &["--proxy", &route],
        ));
        let port = s.addr().port().to_string();
        let seq = |method: &str, path: &str, size: &str| {
            python(&["seq", &port, "plain", method, path, "150", size])
        };
        assert_eq!(seq("HEAD", "/api/h", "0"), "204 x150\n", "{m}");
        assert_eq!(seq("PUT", "/api/early", "30000"), "403 x150\n", "{m}");
    }
}

/// The Python upstream, killed (by its pid) when dropped.
struct PyUpstream(std::process::Child, u16);

impl PyUpstream {
    fn start() -> PyUpstream {
        use std::io::BufRead;
        let mut child = Command::new("python3")
            .args(["-c", PY_UPSTREAM])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the upstream's port");
        PyUpstream(child, port)
    }
}

impl Drop for PyUpstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Proxy and CGI routes over HTTP/2: curl (h2c and h2 over TLS) and Python's `h2` (50
/// streams at once on one connection) through a proxy route to a Python upstream and a CGI
/// script, with request bodies, a large answer, and the upstream's connection-specific fields
/// dropped (RFC 9113 §8.2.2). HTTP/2 stays on by default with routes configured.
#[test]
fn proxy_and_cgi_routes_are_relayed_over_h2_under_the_concurrent_models() {
    support::require("curl --version | grep -q HTTP2");
    support::require("python3 -c 'import h2'");
    let (root, _) = site();
    let up = PyUpstream::start();
    let cgi = TempDir::new("h2-cgi");
    let script = cgi.path().join("hi.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\necho \"cgi $REQUEST_METHOD $CONTENT_LENGTH\"\ncat\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let route = format!("/api=http://127.0.0.1:{}", up.1);
    let cgi_route = format!("/cgi={}", cgi.path().display());
    // An upstream that refuses: a port bound and closed again.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = format!("/down=http://{closed}");
    let certs = TempDir::new("h2-gw-certs");
    let certs_s = certs.path().to_str().unwrap();
    let models = [
        ModelFlags(&["--model", "threaded"]),
        ModelFlags(&["--model", "prefork", "--workers", "2"]),
        ModelFlags(&["--model", "event", "--workers", "2", "--poller", "epoll"]),
    ];
    let body = vec![b'x'; 100 << 10];
    let body_file = root.path().join("body.bin");
    std::fs::write(&body_file, &body).unwrap();
    let body_arg = format!("@{}", body_file.display());
    for m in models {
        let extra = [
            "--proxy",
            route.as_str(),
            "--proxy",
            down.as_str(),
            "--cgi",
            cgi_route.as_str(),
        ];
        let (plain, tls) = servers(root.path().to_str().unwrap(), certs_s, m, &extra);
        let h2c = |path: &str, more: &[&str]| {
            let mut args = vec![
                "--http2-prior-knowledge",
                "-w",
                "%{stderr}%{http_code} %{http_version}",
            ];
            args.extend_from_slice(more);
            let url = plain.url(path);
            args.push(&url);
            let out = support::curl(&format!("{m} {path}"), &args);
            (
                String::from_utf8_lossy(&out.stdout).to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        };
        assert_eq!(
            h2c("/api/x", &[]),
            ("up /api/x\n".into(), "200 2".into()),
            "{m}"
        );
        // No upstream to reach: 502 on the stream. (One URL per curl: curl 7.88 fails to
        // reuse an h2c prior-knowledge connection for a second URL, with nginx as with us.)
        let (_, code) = h2c("/down/x", &["-o", "/dev/null"]);
        assert_eq!(code, "502 2", "{m}");
        let (text, code) = h2c("/api/y", &["-H", "X-Repeat: 20000"]);
        assert_eq!((text.len(), code.as_str()), (20000 * 10, "200 2"), "{m}");
        assert!(text.lines().all(|l| l == "up /api/y"), "{m}");
        let posted = h2c("/api/p", &["--data-binary", &body_arg]);
        assert_eq!(posted, ("got 102400 bytes\n".into(), "201 2".into()), "{m}");
        let ran = h2c("/cgi/hi.sh", &["--data-binary", "cgi body"]);
        assert_eq!(ran, ("cgi POST 8\ncgi body".into(), "200 2".into()), "{m}");
        // §8.2.2: the upstream's Connection and Keep-Alive stay on its HTTP/1.1 hop.
        let (head, _) = h2c("/api/h", &["-D", "-", "-o", "/dev/null"]);
        assert!(head.starts_with("HTTP/2 200"), "{m}: {head}");
        let lower = head.to_ascii_lowercase();
        assert!(
            !lower.contains("keep-alive") && !lower.contains("connection:"),
            "{m}: {head}"
        );
        assert!(lower.contains("content-type: text/plain"), "{m}: {head}");
        // h2 by ALPN: a TLS client gets the routes over HTTP/2 too.
        let tls_url = format!("{}/api/t", tls.addrs[0]);
        let out = support::curl(
            &format!("{m} tls"),
            &[
                "-k",
                "--http2",
                "-w",
                "%{stderr}%{http_code} %{http_version}",
                &tls_url,
            ],
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "up /api/t\n", "{m}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "200 2", "{m}");
        // 50 streams at once on one connection, each relayed on its own link.
        let paths: Vec<String> = (0..50).map(|i| format!("/api/s{i}")).collect();
        let mut args = vec![
            "get".to_string(),
            plain.addr().port().to_string(),
            "plain".into(),
        ];
        args.push("65535".into());
        args.extend(paths.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let got = python(&args);
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines.len(), 50, "{m}: {got}");
        for (line, p) in lines.iter().zip(&paths) {
            let want = format!("up {p}\n");
            assert_eq!(
                *line,
                format!("200 {} {}", sha256(want.as_bytes()), want.len()),
                "{m}: {p}"
            );
        }
    }
}

/// Headless Chromium loads the demo site over h2 (TLS, ALPN): the page renders and its script
/// runs, and the access log shows the page and each of its assets fetched as `HTTP/2.0`.
#[test]
fn chromium_loads_the_demo_site_and_its_assets_over_h2() {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| support::have(b))
        .expect("chromium on PATH (.ci/run installs it)");
    let site = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/site");
    let certs = TempDir::new("h2-chromium-certs");
    for m in [
        ModelFlags(&["--model", "prefork", "--workers", "2"]),
        ModelFlags(&["--model", "event", "--workers", "2", "--poller", "epoll"]),
    ] {
        let mut args = vec!["serve", site.to_str().unwrap(), "--listen", "127.0.0.1:0"];
        args.extend_from_slice(m.0);
        args.extend(["--tls-self-signed", certs.path().to_str().unwrap()]);
        let srv = Server::start(&args);
        let url = format!("{}/", srv.addrs[0]);
        let flags = ["--ignore-certificate-errors", "--disable-quic"];
        let page = crate::static_files::dump_dom_with(browser, &url, &flags);
        assert!(
            page.contains("It works: tincan is serving this directory."),
            "{m}: {page}"
        );
        assert!(
            page.contains("data-ok=\"yes\"") && page.contains("Scripts ran: app.js arrived intact"),
            "{m}: app.js did not run:\n{page}"
        );
        // The access log is stdout (the default): its lines for the page and its assets.
        let mut logged = String::new();
        let want = ["/", "/style.css", "/app.js", "/tincan.png"];
        let line_of = |asset: &str| format!("\"GET {asset} HTTP/2.0\" 200 ");
        while !want.iter().all(|a| logged.contains(&line_of(a))) {
            match srv.stdout.recv_timeout(std::time::Duration::from_secs(10)) {
                Ok(l) => logged.push_str(&(l + "\n")),
                Err(_) => panic!("{m}: the page and its assets are not all in\n{logged}"),
            }
        }
        assert!(
            !logged.contains("HTTP/1.1\""),
            "{m}: an HTTP/1.1 request in\n{logged}"
        );
    }
}

/// Request `/cgi/slow.sh` on stream 1, wait until its child (`sleep MARKER`) runs, reset the
/// stream and print whether the child is gone within 5 s while the connection stays open.
const PY_RESET_CGI: &str = r#"
import socket, subprocess, sys, time
import h2.connection, h2.events, h2.config
port, marker = int(sys.argv[1]), sys.argv[2]
running = lambda: subprocess.run(["pgrep", "-f", "sleep " + marker], capture_output=True).returncode == 0
s = socket.create_connection(("127.0.0.1", port), timeout=10)
c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
c.initiate_connection()
c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "localhost"),
                   (":path", "/cgi/slow.sh")], end_stream=True)
s.sendall(c.data_to_send())
deadline = time.time() + 10
while not running():
    if time.time() > deadline:
        sys.exit("the script never started")
    time.sleep(0.05)
c.reset_stream(1)
c.ping(b"12345678")
s.sendall(c.data_to_send())
acked = False
while not acked:
    for e in c.receive_data(s.recv(65536)):
        acked |= isinstance(e, h2.events.PingAckReceived)
deadline = time.time() + 5
while running() and time.time() < deadline:
    time.sleep(0.05)
print("alive" if running() else "killed")
"#;

/// A client's RST_STREAM on a CGI request over h2 kills the script (its link is closed) while
/// the connection stays open, under prefork and event.
#[test]
fn a_reset_stream_kills_its_cgi_script_over_h2() {
    support::require("python3 -c 'import h2'");
    support::require("command -v pgrep");
    let (root, _) = site();
    let cgi = TempDir::new("h2-cgi-reset");
    for m in [
        ModelFlags(&["--model", "prefork", "--workers", "2"]),
        ModelFlags(&["--model", "event", "--workers", "2", "--poller", "epoll"]),
    ] {
        // A marker no other process carries: this test's pid and the model.
        let marker = format!("{}.{}", std::process::id(), m.0[1].len());
        let script = cgi.path().join("slow.sh");
        std::fs::write(&script, format!("#!/bin/sh\nexec sleep {marker}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let route = format!("/cgi={}", cgi.path().display());
        let srv = Server::start(&support::serve_args(
            root.path().to_str().unwrap(),
            m,
            &["--cgi", &route],
        ));
        let out = Command::new("python3")
            .args(["-c", PY_RESET_CGI, &srv.addr().port().to_string(), &marker])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "killed\n",
            "{m}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A raw HTTP/2 client for the drain test: asks for /big.bin without opening its window past
/// the first 65,535 bytes, says `stalled`, waits for the server's GOAWAY (printing its last
/// stream id), then opens the window and reads stream 1 to its end (printing the bytes).
const PY_DRAIN: &str = r#"
import socket, struct, sys
from hpack import Encoder
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload
head = Encoder().encode([(":method", "GET"), (":scheme", "http"), (":path", "/big.bin"), (":authority", "x")])
s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 5, 1, head))
buf = b""
def next_frame():
    global buf
    while True:
        if len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) >= 9 + n:
                h, p, buf = buf[:9], buf[9:9 + n], buf[9 + n:]
                return h[3], h[4], int.from_bytes(h[5:9], "big") & 0x7fffffff, p
        d = s.recv(65536)
        if not d:
            raise SystemExit("closed early")
        buf += d
got, stalled, ended = 0, False, False
while True:
    kind, flags, stream, p = next_frame()
    if kind == 0 and stream == 1:
        got += len(p)
        ended = bool(flags & 1)
        if ended:
            break
        if got >= 65535 and not stalled:
            stalled = True
            print("stalled", flush=True)
    elif kind == 7:
        print("goaway", int.from_bytes(p[:4], "big") & 0x7fffffff, flush=True)
        up = struct.pack(">I", 1 << 30)
        s.sendall(frame(8, 0, 0, up) + frame(8, 0, 1, up))
    elif kind == 4 and not flags & 1:
        s.sendall(frame(4, 1, 0))
print("complete", got, flush=True)
"#;

/// SIGTERM drains HTTP/2 as RFC 9113 §6.8 asks: GOAWAY names the last stream taken, and a
/// stream in flight (here held by the client's closed window) still finishes within --grace.
#[test]
fn sigterm_sends_goaway_and_lets_the_open_stream_finish() {
    support::require("python3 -c 'import hpack'");
    let (root, big) = site();
    for m in [
        ModelFlags(&["--model", "event", "--workers", "1"]),
        ModelFlags(&["--model", "prefork", "--workers", "1"]),
        ModelFlags(&["--model", "threaded"]),
    ] {
        let mut server = Server::start(&support::serve_args(
            root.path().to_str().unwrap(),
            m,
            &["--grace", "10"],
        ));
        let port = server.addr().port().to_string();
        let mut client = Command::new("python3")
            .args(["-c", PY_DRAIN, &port])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run python3");
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(client.stdout.take().unwrap()));
        let mut next = || lines.next().map(|l| l.unwrap()).unwrap_or_default();
        assert_eq!(next(), "stalled", "{m}");
        server.signal(libc::SIGTERM);
        assert_eq!(next(), "goaway 1", "{m}");
        assert_eq!(next(), format!("complete {}", big.len()), "{m}");
        assert!(client.wait().unwrap().success(), "{m}");
        assert!(
            server
                .wait_exit(std::time::Duration::from_secs(10))
                .is_some(),
            "{m}: the server stops once the stream is done"
        );
    }
}
