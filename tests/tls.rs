//! TLS on every listener, under every model: real clients (curl, `openssl s_client`, Python's
//! `ssl`) against certificates from a test CA made here with rcgen.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, connect, read_to_end, ModelFlags, Server, TempDir, ALL_MODELS};

/// A test CA and the server certificates it signed: `a` for localhost and 127.0.0.1 (the
/// first pair, served without SNI), `b` for `b.test` and `*.b.test`, `c` for `a`'s names.
pub(crate) struct Pki {
    dir: TempDir,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = TempDir::new("tls-pki");
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "tincan test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        for (name, sans) in [
            ("a", vec!["localhost", "127.0.0.1"]),
            ("b", vec!["b.test", "*.b.test"]),
            // The names of `a` under another subject: what a renewal looks like.
            ("c", vec!["localhost", "127.0.0.1"]),
        ] {
            let key = KeyPair::generate().unwrap();
            let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
            let mut p = CertificateParams::new(sans).unwrap();
            p.distinguished_name
                .push(DnType::CommonName, format!("{name}.test"));
            let cert = p.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        Pki { dir }
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    /// `--tls-cert a.pem --tls-key a.key --tls-cert b.pem --tls-key b.key`.
    fn flags(&self) -> Vec<String> {
        let mut v = Vec::new();
        for n in ["a", "b"] {
            v.extend([
                "--tls-cert".to_string(),
                self.path(&format!("{n}.pem")),
                "--tls-key".to_string(),
                self.path(&format!("{n}.key")),
            ]);
        }
        v
    }
}

/// Start `tincan ARGS` with TLS; returns it and its port (from `listening on https://...` for
/// HTTP, `listening on tls://...` for echo and chat).
fn start(args: &[&str], pki: &Pki) -> (Server, u16) {
    let flags = pki.flags();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(flags.iter().map(String::as_str));
    let server = Server::start(&all);
    let scheme = match args[0] {
        "serve" | "hello" => "https://",
        _ => "tls://",
    };
    let addr = server.addrs[0]
        .strip_prefix(scheme)
        .unwrap_or_else(|| panic!("not a {scheme} address: {}", server.addrs[0]));
    let port = addr.parse::<SocketAddr>().unwrap().port();
    (server, port)
}

/// curl with the test CA, `localhost` (and `b.test`) resolved to 127.0.0.1, over HTTP/1.1
/// (curl would choose h2 by ALPN; tests/h2.rs covers that).
fn curl(what: &str, pki: &Pki, port: u16, args: &[&str]) -> std::process::Output {
    let ca = pki.path("ca.pem");
    let to_localhost = format!("localhost:{port}:127.0.0.1");
    let to_b = format!("b.test:{port}:127.0.0.1");
    let mut all = vec![
        "--http1.1",
        "--cacert",
        &ca,
        "--resolve",
        &to_localhost,
        "--resolve",
        &to_b,
    ];
    all.extend_from_slice(args);
    support::curl(what, &all)
}

fn site() -> (TempDir, Vec<u8>) {
    let root = TempDir::new("tls-site");
    let big = support::noise(10 << 20, 12345);
    std::fs::write(root.path().join("big.bin"), &big).unwrap();
    std::fs::write(root.path().join("small.txt"), "hello over TLS\n").unwrap();
    (root, big)
}

/// The client's connection is closed by the server within `limit` (EOF or a reset).
fn closed_within(s: &mut std::net::TcpStream, limit: Duration) -> Duration {
    let t = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("the server sent {n} bytes to a silent client"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server did not close a silent client within {limit:?}: {e}"),
    }
    t.elapsed()
}

#[test]
fn https_serves_files_ranges_and_keep_alive_under_every_model() {
    support::require("curl --version");
    let pki = Pki::new();
    let (root, big) = site();
    let root_s = root.path().to_str().unwrap();
    for &m in ALL_MODELS {
        let args = support::serve_args(root_s, m, &["--head-timeout", "1"]);
        let (srv, port) = start(&args, &pki);
        let base = format!("https://localhost:{port}");

        // A silent client (never a ClientHello) is closed at the head timeout, and another
        // is served meanwhile (under iterative, once the silent one is gone).
        let mut silent = connect(SocketAddr::from(([127, 0, 0, 1], port)));
        std::thread::sleep(Duration::from_millis(50));
        let out = curl(&format!("{m}"), &pki, port, &[&format!("{base}/small.txt")]);
        assert_eq!(out.stdout, b"hello over TLS\n", "{m}");
        let took = closed_within(&mut silent, Duration::from_secs(5));
        assert!(
            took < Duration::from_secs(3),
            "{m}: silent client kept {took:?}"
        );

        // A 10 MiB file arrives intact.
        let got = root.path().join("got.bin");
        let got_s = got.to_str().unwrap();
        curl(
            &format!("{m}"),
            &pki,
            port,
            &["-o", got_s, &format!("{base}/big.bin")],
        );
        let body = std::fs::read(&got).unwrap();
        assert!(
            body == big,
            "{m}: the 10 MiB file came back different ({} bytes)",
            body.len()
        );

        // A range of it.
        let out = curl(
            &format!("{m}"),
            &pki,
            port,
            &["-i", "-r", "5000000-5000099", &format!("{base}/big.bin")],
        );
        let text = out.stdout;
        assert!(text.starts_with(b"HTTP/1.1 206"), "{m}: {:?}", &text[..40]);
        assert!(
            text.ends_with(&big[5_000_000..5_000_100]),
            "{m}: wrong range bytes"
        );

        // Two requests on one kept-alive connection (curl reports 0 new connects for the
        // second), with ALPN http/1.1.
        let out = curl(
            &format!("{m}"),
            &pki,
            port,
            &[
                "-w",
                "[%{num_connects} %{http_version}]",
                &format!("{base}/small.txt"),
                &format!("{base}/small.txt"),
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text,
            format!(
                "hello over TLS\n[1 1.1]hello over TLS\n[{} 1.1]",
                u8::from(m.0[1] == "iterative")
            ),
            "{m}: keep-alive"
        );

        // Plain HTTP to the TLS port: a plain 400 that says to use https, then the close.
        let mut plain = connect(SocketAddr::from(([127, 0, 0, 1], port)));
        plain
            .write_all(b"GET /small.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let answer = String::from_utf8_lossy(&read_to_end(&mut plain)).into_owned();
        assert!(
            answer.starts_with("HTTP/1.1 400 ") && answer.contains("https://"),
            "{m}: {answer}"
        );
        drop(srv);
    }
}

/// The suites kernel TLS maps (`model::tls::kernel`), as curl (OpenSSL) names them: the
/// handshake's version flags and cipher flag, and what `curl -v` reports.
const SUITES: &[(&str, &str, &str)] = &[
    ("--tls-max 1.2", "ECDHE-ECDSA-AES128-GCM-SHA256", "TLSv1.2"),
    ("--tls-max 1.2", "ECDHE-ECDSA-AES256-GCM-SHA384", "TLSv1.2"),
    ("--tls-max 1.2", "ECDHE-ECDSA-CHACHA20-POLY1305", "TLSv1.2"),
    ("--tlsv1.3", "TLS_AES_128_GCM_SHA256", "TLSv1.3"),
    ("--tlsv1.3", "TLS_AES_256_GCM_SHA384", "TLSv1.3"),
    ("--tlsv1.3", "TLS_CHACHA20_POLY1305_SHA256", "TLSv1.3"),
];

/// One kept-alive curl run of `transfers` (each a URL and an optional byte range) in the suite
/// `version`/`cipher`: `--next` between them, so each has its own range, on one connection
/// where the model keeps connections alive. Each body is followed by `[connects]`.
fn curl_suite(
    what: &str,
    pki: &Pki,
    port: u16,
    suite: (&str, &str, &str),
    transfers: &[(&str, Option<&str>)],
) -> std::process::Output {
    let (version, cipher, name) = suite;
    let cipher_flag = if name == "TLSv1.3" {
        "--tls13-ciphers"
    } else {
        "--ciphers"
    };
    let ca = pki.path("ca.pem");
    let to_localhost = format!("localhost:{port}:127.0.0.1");
    let mut args: Vec<&str> = vec!["-v"];
    for (i, &(url, range)) in transfers.iter().enumerate() {
        if i > 0 {
            args.push("--next");
        }
        args.extend(["--http1.1", "--cacert", &ca, "--resolve", &to_localhost]);
        args.extend(version.split(' '));
        // Under software emulation (scripts/ktls-vm) 10 MiB takes a while.
        args.extend([cipher_flag, cipher, "--max-time", "120"]);
        args.extend(["-w", "[%{num_connects}]"]);
        if let Some(r) = range {
            args.extend(["-r", r]);
        }
        args.push(url);
    }
    support::curl(what, &args)
}

/// h11, a strict HTTP/1.1 state machine, over Python's `ssl`: a small file, the 10 MiB one, a
/// range of it, HEAD, a 404 and a last request that closes, all on one kept connection (with
/// `keep`; iterative turns keep-alive off, so there each answer ends its connection, with a
/// close_notify). Prints "ok", or what went wrong.
const PY_H11_TLS: &str = r#"
import socket, ssl, sys, h11
ca, port, big_path, keep = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "keep"
big = open(big_path, "rb").read()
ctx = ssl.create_default_context(cafile=ca)
def check(ok, what):
    if not ok:
        print("FAIL:", what); sys.exit(1)
def connect():
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    return ctx.wrap_socket(raw, server_hostname="localhost"), h11.Connection(h11.CLIENT)
s, conn = connect()
def exchange(method, target, headers=()):
    global s, conn
    if conn.our_state is not h11.IDLE:
        if keep:
            conn.start_next_cycle()
        else:
            check(conn.their_state is h11.MUST_CLOSE, f"kept: {conn.states}")
            # The server ends the connection: close_notify, then EOF (SSLEOFError: none).
            check(s.recv(1 << 16) == b"", "bytes after a closing answer")
            s.close()
            s, conn = connect()
    hs = [("Host", "localhost")] + list(headers)
    s.sendall(conn.send(h11.Request(method=method, target=target, headers=hs)))
    s.sendall(conn.send(h11.EndOfMessage()))
    resp, body = None, bytearray()
    while True:
        ev = conn.next_event()
        if ev is h11.NEED_DATA:
            conn.receive_data(s.recv(1 << 16)); continue
        if isinstance(ev, h11.Response): resp = ev
        elif isinstance(ev, h11.Data): body += ev.data
        elif isinstance(ev, h11.EndOfMessage): break
    return resp, bytes(body)
def header(resp, name):
    return dict(resp.headers).get(name.encode().lower(), b"").decode()
r, b = exchange("GET", "/small.txt")
check(r.status_code == 200 and b == b"hello over TLS\n", f"small: {r.status_code}")
r, b = exchange("GET", "/big.bin")
check(r.status_code == 200 and b == big, f"big: {r.status_code}, {len(b)} bytes")
r, b = exchange("GET", "/big.bin", [("Range", "bytes=1000000-1000099")])
check(r.status_code == 206 and b == big[1000000:1000100], f"range: {r.status_code}")
check(header(r, "content-range") == f"bytes 1000000-1000099/{len(big)}", "content-range")
r, b = exchange("HEAD", "/big.bin")
check(r.status_code == 200 and b == b"" and header(r, "content-length") == str(len(big)), "HEAD")
r, b = exchange("GET", "/missing")
check(r.status_code == 404, f"missing: {r.status_code}")
r, b = exchange("GET", "/small.txt", [("Connection", "close")])
check(r.status_code == 200 and conn.their_state is h11.MUST_CLOSE, "close")
check(s.recv(1 << 16) == b"", "bytes after a closing answer")
print("ok")
"#;

#[test]
fn h11_over_tls_keeps_one_connection_through_files_ranges_and_errors_under_every_model() {
    support::require("python3 -c 'import h11'");
    let pki = Pki::new();
    let (root, _) = site();
    let big = root.path().join("big.bin");
    for &m in ALL_MODELS {
        let args = support::serve_args(root.path().to_str().unwrap(), m, &[]);
        let (srv, port) = start(&args, &pki);
        let keep = if m.0.contains(&"iterative") {
            "close"
        } else {
            "keep"
        };
        let port = port.to_string();
        let ca = pki.path("ca.pem");
        support::python_ok(
            &format!("{m}"),
            PY_H11_TLS,
            &[&ca, &port, big.to_str().unwrap(), keep],
        );
        drop(srv);
    }
}

/// N connections over Python's `ssl` ask for /big.bin and read no more than its head; "stalled"
/// once they all have it, and they stay open until standard input closes.
const PY_STALL: &str = r#"
import socket, ssl, sys
ca, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(cafile=ca)
conns = []
for _ in range(n):
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(1024)
    conns.append(s)
print("stalled", flush=True)
sys.stdin.read()
"#;

/// File bodies under TLS are encrypted a piece at a time as the socket takes them: twenty
/// clients that stop reading the 10 MiB file cost the server little memory (all of it held
/// would be 200 MiB), and another client is served meanwhile.
#[test]
fn stalled_tls_downloads_hold_bounded_memory_and_block_nobody() {
    use std::io::BufRead;
    support::require("python3 -c 'import ssl'");
    let pki = Pki::new();
    let (root, _) = site();
    for m in support::concurrent_models() {
        let args = support::serve_args(root.path().to_str().unwrap(), m, &[]);
        let (srv, port) = start(&args, &pki);
        let small = format!("https://localhost:{port}/small.txt");
        // Every worker has served once (its buffers made) before the measure starts.
        for _ in 0..4 {
            let out = curl(&format!("{m}"), &pki, port, &[&small]);
            assert_eq!(out.stdout, b"hello over TLS\n", "{m}");
        }
        let before = support::rss_tree_kib(srv.pid());
        let mut py = Command::new("python3")
            .args(["-c", PY_STALL, &pki.path("ca.pem"), &port.to_string(), "20"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(py.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "stalled", "{m}");
        // Time for the server to fill what the sockets take, and to stop there.
        std::thread::sleep(Duration::from_millis(500));
        let out = curl(&format!("{m}"), &pki, port, &["--max-time", "5", &small]);
        assert_eq!(
            out.stdout, b"hello over TLS\n",
            "{m}: not served beside them"
        );
        let grew = support::rss_tree_kib(srv.pid()).saturating_sub(before);
        assert!(grew < 16 << 10, "{m}: resident memory grew by {grew} KiB");
        drop(py.stdin.take());
        let _ = py.wait();
        drop(srv);
    }
}

/// Kernel TLS (on by default): the first file region on a TLS connection is where the record
/// layer moves into the kernel, where the kernel offers TLS; where it does not (these
/// machines), rustls goes on. Either way, in every suite the kernel maps, TLS 1.2 and 1.3,
/// under every model, a file, a small answer, a range of the file (sent by the kernel from an
/// offset), and the small answer again arrive intact on one kept-alive connection. The file
/// is 10 MiB for one suite under each model (each suite once, each model once: a body that
/// takes many turns and writable waits) and 1 MiB for the others, which keeps the run short
/// under emulation. Where the kernel has TLS, its counters prove each connection moved into
/// it both ways and no record failed to decrypt.
#[test]
fn kernel_tls_files_ranges_and_keep_alive_arrive_intact_in_every_suite_under_every_model() {
    support::require("curl --version");
    let pki = Pki::new();
    let (root, big) = site();
    let mid = support::noise(1 << 20, 777);
    std::fs::write(root.path().join("mid.bin"), &mid).unwrap();
    let root_s = root.path().to_str().unwrap();
    let kernel = support::tls_stat().is_some();
    for (i, &m) in ALL_MODELS.iter().enumerate() {
        let args = support::serve_args(root_s, m, &[]);
        let (srv, port) = start(&args, &pki);
        let base = format!("https://localhost:{port}");
        let small = format!("{base}/small.txt");
        for (j, &(version, cipher, name)) in SUITES.iter().enumerate() {
            let (file, body, range) = if j == i % SUITES.len() {
                (format!("{base}/big.bin"), &big, (1_234_567, 5_000_001))
            } else {
                (format!("{base}/mid.bin"), &mid, (123_457, 654_321))
            };
            let range_s = format!("{}-{}", range.0, range.1);
            let what = format!("{m} {cipher} {file}");
            let before = support::tls_stat();
            let transfers = [
                (file.as_str(), None),
                (small.as_str(), None),
                (file.as_str(), Some(range_s.as_str())),
                (small.as_str(), None),
            ];
            let out = curl_suite(&what, &pki, port, (version, cipher, name), &transfers);
            let log = String::from_utf8_lossy(&out.stderr);
            assert!(
                log.contains(&format!("SSL connection using {name} / {cipher}")),
                "{what}: {log}"
            );
            // iterative serves one request per connection (see the keep-alive check above).
            let keep = u8::from(m.0[1] == "iterative");
            let mut want = Vec::new();
            for (i, body) in [
                &body[..],
                b"hello over TLS\n",
                &body[range.0..=range.1],
                b"hello over TLS\n",
            ]
            .into_iter()
            .enumerate()
            {
                want.extend_from_slice(body);
                let connects = if i == 0 { 1 } else { keep };
                want.extend_from_slice(format!("[{connects}]").as_bytes());
            }
            assert!(
                out.stdout == want,
                "{what}: {} bytes came back, not {}; first difference at byte {:?}",
                out.stdout.len(),
                want.len(),
                out.stdout.iter().zip(&want).position(|(a, b)| a != b)
            );
            if let (Some(before), Some(after)) = (before, support::tls_stat()) {
                let grew = |k: &str| after[k] - before[k];
                // The connections that sent a file: one, or under iterative two.
                let files = 1 + u64::from(keep);
                assert!(
                    grew("TlsTxSw") >= files && grew("TlsRxSw") >= files,
                    "{what}: no connection moved into the kernel: {after:?}"
                );
                assert_eq!(grew("TlsDecryptError"), 0, "{what}: {after:?}");
            }
        }
        drop(srv);
    }
    if !kernel {
        support::skip(
            "the kernel offers no TLS (no /proc/net/tls_stat): the bytes were checked, the \
             kernel path was not; scripts/ktls-vm runs this test on a kernel that has TLS",
        );
    }
}

/// `--kernel-tls off`, and `kernel_tls = false` in tincan.toml: rustls keeps every record even
/// where the kernel has TLS (no connection shows in its counters), and the bytes are the same.
#[test]
fn kernel_tls_off_by_flag_or_toml_keeps_every_record_in_rustls() {
    support::require("curl --version");
    let pki = Pki::new();
    let (root, big) = site();
    let root_s = root.path().to_str().unwrap();
    let toml = root.path().join("tincan.toml");
    std::fs::write(&toml, "kernel_tls = false\n").unwrap();
    let toml_s = toml.to_str().unwrap();
    let m = ALL_MODELS[3];
    for off in [&["--kernel-tls", "off"], &["--config", toml_s]] {
        let args = support::serve_args(root_s, m, off);
        let (srv, port) = start(&args, &pki);
        let file = format!("https://localhost:{port}/big.bin");
        let what = format!("{off:?}");
        let before = support::tls_stat();
        let out = curl_suite(&what, &pki, port, SUITES[3], &[(&file, None)]);
        let mut want = big.clone();
        want.extend_from_slice(b"[1]");
        assert!(out.stdout == want, "{what}: {} bytes", out.stdout.len());
        if let (Some(before), Some(after)) = (before, support::tls_stat()) {
            assert_eq!(after["TlsTxSw"], before["TlsTxSw"], "{what}: {after:?}");
        }
        drop(srv);
    }
}

/// A Python `ssl` client in TLS `version` ("1.2", "1.3"): GET `path` twice on one connection
/// (the second with `Connection: close`), pipelined, then read to the end. Ragged EOFs are not
/// suppressed, so a close without `close_notify` is an error (OpenSSL 3: "unexpected eof").
/// Checks both answers carry the file `body_path`; prints the version.
const PY_CLOSE_NOTIFY: &str = r#"
import socket, ssl, sys
ca, port, version, path, body_path = sys.argv[1:6]
body = open(body_path, "rb").read()
ctx = ssl.create_default_context(cafile=ca)
v = ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3
ctx.minimum_version = ctx.maximum_version = v
with socket.create_connection(("127.0.0.1", int(port)), timeout=120) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as s:
        req = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n".encode()
        s.sendall(req + b"\r\n" + req + b"Connection: close\r\n\r\n")
        got = b""
        while True:
            part = s.recv(1 << 16)
            if not part:
                break
            got += part
        first, second = got[: len(got) - len(body)], got[len(got) - len(body) :]
        assert second == body, f"{len(got)} bytes: the second body differs"
        assert first.startswith(b"HTTP/1.1 200 "), first[:100]
        assert first.count(body) == 1, "the first body is not whole"
        print(s.version())
"#;

/// The server's `close_notify` goes out after the last answer on a connection whose records
/// the kernel has (sent as an alert record), and the client reads a clean end, in TLS 1.2 and
/// 1.3 under every model; the pipelined second request arrives decrypted by the kernel.
#[test]
fn kernel_tls_ends_a_connection_with_close_notify_under_every_model() {
    support::require("python3 -c 'import ssl'");
    let pki = Pki::new();
    let root = TempDir::new("tls-site");
    let mid = support::noise(1 << 20, 778);
    let mid_path = root.path().join("mid.bin");
    std::fs::write(&mid_path, &mid).unwrap();
    let root_s = root.path().to_str().unwrap();
    for &m in ALL_MODELS {
        let args = support::serve_args(root_s, m, &[]);
        let (srv, port) = start(&args, &pki);
        for version in ["1.2", "1.3"] {
            let what = format!("{m} TLS {version}");
            let before = support::tls_stat();
            let out = Command::new("python3")
                .args([
                    "-c",
                    PY_CLOSE_NOTIFY,
                    &pki.path("ca.pem"),
                    &port.to_string(),
                ])
                .args([version, "/mid.bin", mid_path.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let said = String::from_utf8_lossy(&out.stdout);
            assert_eq!(said.trim(), format!("TLSv{version}"), "{what}");
            if let (Some(before), Some(after)) = (before, support::tls_stat()) {
                assert!(after["TlsTxSw"] > before["TlsTxSw"], "{what}: {after:?}");
            }
        }
        drop(srv);
    }
}

/// A TLS 1.3 key update from the client (`openssl s_client`'s `k` command) after a file went
/// out: where rustls has the records it follows it and the next answer comes; where the
/// kernel has them (it cannot take new keys from rustls here) the connection ends, with a
/// `close_notify` under the old keys, and the server goes on serving others.
#[test]
fn kernel_tls_a_key_update_ends_the_connection_where_the_kernel_has_it() {
    support::require("openssl version");
    let pki = Pki::new();
    let root = TempDir::new("tls-site");
    std::fs::write(root.path().join("small.txt"), "hello over TLS\n").unwrap();
    let mid = support::noise(1 << 20, 779);
    std::fs::write(root.path().join("mid.bin"), &mid).unwrap();
    let root_s = root.path().to_str().unwrap();
    // A keep-alive timeout that slow emulation cannot reach between the file and the update.
    let args = support::serve_args(root_s, ALL_MODELS[3], &["--keepalive-timeout", "60"]);
    let (srv, port) = start(&args, &pki);
    let kernel = support::tls_stat().is_some();
    let mut child = spawn_s_client(&pki, port, &["-servername", "localhost", "-tls1_3"]);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0; 1 << 16];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    // Read what s_client prints until `until` is in it, or the pipe closes. Only the new bytes
    // (and the few before them) are searched: a debug build under emulation would otherwise
    // outlast the server's keep-alive timeout.
    let mut seen = Vec::new();
    let read_until = |until: &[u8], seen: &mut Vec<u8>| {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut from = 0;
        while !seen[from..].windows(until.len()).any(|w| w == until) {
            from = seen.len().saturating_sub(until.len());
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(part) => seen.extend_from_slice(&part),
                Err(_) => return false,
            }
        }
        true
    };
    stdin
        .write_all(b"GET /mid.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert!(read_until(&mid[mid.len() - 64..], &mut seen), "the file");
    // `k` alone on a line: s_client sends a KeyUpdate (update_not_requested) instead.
    if let Err(e) = stdin.write_all(b"k\n") {
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let out = String::from_utf8_lossy(&seen);
        panic!(
            "s_client is gone ({e}): {}{err}",
            &out[out.len().saturating_sub(300)..]
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    let _ = stdin.write_all(b"GET /small.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let answered = read_until(b"hello over TLS", &mut seen);
    if kernel {
        assert!(
            !answered,
            "an answer came after the key update under kernel TLS"
        );
        // The server closed: s_client ends by itself, its stdin still open, and says `closed`
        // where it read a close_notify (an EOF without one is an error on its stderr).
        child.wait().unwrap();
        reader.join().unwrap();
        seen.extend(rx.try_iter().flatten());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let out = String::from_utf8_lossy(&seen);
        assert!(
            out.ends_with("closed\n"),
            "{}{err}",
            &out[out.len() - 200..]
        );
        drop(stdin);
    } else {
        assert!(answered, "{}", String::from_utf8_lossy(&seen));
        drop(stdin);
        child.wait().unwrap();
        reader.join().unwrap();
    }
    // The server goes on.
    let out = curl(
        "after the key update",
        &pki,
        port,
        &[&format!("https://localhost:{port}/small.txt")],
    );
    assert_eq!(out.stdout, b"hello over TLS\n");
    drop(srv);
}

/// A Python `ssl` client that sends `size` bytes to an echo server and checks they come back.
const PY_ECHO: &str = r#"
import socket, ssl, sys
ca, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(cafile=ca)
# Made before connecting: the server's --idle-timeout runs from the handshake on, and a slow
# machine (an emulated one, scripts/ktls-vm) can take a second to build it.
msg = bytes((i * 7) % 251 for i in range(size))
with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            part = s.recv(65536)
            if not part:
                break
            got += part
        assert got == msg, f"{len(got)} of {len(msg)} bytes came back"
        print(s.version())
"#;

#[test]
fn echo_speaks_tls_under_every_model() {
    support::require("python3 -c 'import ssl'");
    let pki = Pki::new();
    for &m in ALL_MODELS {
        let mut args = vec!["echo", "--listen", "127.0.0.1:0", "--idle-timeout", "1"];
        args.extend_from_slice(m.0);
        let (srv, port) = start(&args, &pki);
        let out = Command::new("python3")
            .args([
                "-c",
                PY_ECHO,
                &pki.path("ca.pem"),
                &port.to_string(),
                "200000",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{m}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "TLSv1.3",
            "{m}"
        );
        // A client that never starts the handshake is closed at the idle timeout.
        let mut silent = connect(SocketAddr::from(([127, 0, 0, 1], port)));
        let took = closed_within(&mut silent, Duration::from_secs(5));
        assert!(
            took < Duration::from_secs(3),
            "{m}: silent client kept {took:?}"
        );
        drop(srv);
    }
}

/// Two connections, the second offering the first's session: prints whether each was resumed.
const PY_RESUME: &str = r#"
import socket, ssl, sys
ca, port, version = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version)
session, reused = None, []
for _ in range(2):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.sendall(b"GET /small.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            while s.recv(65536):
                pass
            reused.append(s.session_reused)
            session = s.session
print(*reused)
"#;

/// `openssl s_client` started against the server with `args`, trusting the test CA, its
/// standard streams piped.
fn spawn_s_client(pki: &Pki, port: u16, args: &[&str]) -> std::process::Child {
    let connect = format!("127.0.0.1:{port}");
    Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &connect,
            "-CAfile",
            &pki.path("ca.pem"),
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `openssl s_client` against the server, with `args`; returns what it printed.
fn s_client(pki: &Pki, port: u16, args: &[&str]) -> String {
    let mut child = spawn_s_client(pki, port, args);
    // Closing stdin ends the session once the handshake is done.
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn tls_versions_alpn_sni_and_resumption_as_openssl_sees_them() {
    support::require("openssl version");
    let pki = Pki::new();
    let (root, _) = site();
    support::require("python3 -c 'import ssl'");
    for &m in ALL_MODELS {
        let args = support::serve_args(root.path().to_str().unwrap(), m, &[]);
        let (srv, port) = start(&args, &pki);
        versions_alpn_sni_and_resumption(&pki, port, &format!("{m}"));
        drop(srv);
    }
}

/// What `tls_versions_alpn_sni_and_resumption_as_openssl_sees_them` asks of one server.
fn versions_alpn_sni_and_resumption(pki: &Pki, port: u16, m: &str) {
    for (flag, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let out = s_client(
            pki,
            port,
            &[flag, "-alpn", "http/1.1", "-servername", "localhost"],
        );
        assert!(
            out.contains(&format!("Protocol  : {name}")) || out.contains(&format!("New, {name}")),
            "{m} {flag}: {out}"
        );
        assert!(out.contains("ALPN protocol: http/1.1"), "{m} {flag}: {out}");
        assert!(
            out.contains("Verify return code: 0 (ok)"),
            "{m} {flag}: {out}"
        );
    }
    // SNI picks the second certificate by its names (a wildcard one here); an unknown name
    // and no name at all get the first.
    let out = s_client(
        pki,
        port,
        &[
            "-servername",
            "www.b.test",
            "-verify_hostname",
            "www.b.test",
        ],
    );
    assert!(
        out.contains("CN = b.test") && out.contains("Verify return code: 0 (ok)"),
        "{m}: {out}"
    );
    for args in [
        &["-servername", "nobody.example"][..],
        &["-noservername"][..],
    ] {
        let out = s_client(pki, port, args);
        assert!(out.contains("CN = a.test"), "{m} {args:?}: {out}");
    }
    // TLS 1.0 and 1.1 are refused.
    let out = s_client(pki, port, &["-tls1_1"]);
    assert!(
        out.contains("no peer certificate available"),
        "{m}: TLS 1.1 was accepted: {out}"
    );
    // Resumption, as Python's `ssl` sees it: a request read whole (so the session ticket
    // has arrived), then a second connection offering that session.
    for version in ["TLSv1_2", "TLSv1_3"] {
        let out = Command::new("python3")
            .args([
                "-c",
                PY_RESUME,
                &pki.path("ca.pem"),
                &port.to_string(),
                version,
            ])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "False True",
            "{m} {version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `openssl s_client` (with `args`, which name the version) asking for /small.txt on a
/// connection the server then closes: what it printed.
fn s_client_get(pki: &Pki, port: u16, args: &[&str]) -> String {
    let named = ["-servername", "localhost", "-ign_eof"];
    let mut child = spawn_s_client(pki, port, &[&named[..], args].concat());
    // With -ign_eof it reads on until the server closes: every ticket is read and printed.
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"GET /small.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_prefork_worker_resumes_the_sessions_of_the_others() {
    support::require("openssl version");
    let pki = Pki::new();
    let (root, _) = site();
    let dir = TempDir::new("resume");
    let saved = dir.path().join("session.pem");
    let saved = saved.to_str().unwrap();
    let args = support::serve_args(
        root.path().to_str().unwrap(),
        ModelFlags(&["--model", "prefork", "--workers", "2"]),
        &[],
    );
    let (srv, port) = start(&args, &pki);
    // TLS 1.3 sessions travel in tickets (the keys every worker derives alike); TLS 1.2 ones
    // without tickets by session ID, which the worker that made it keeps in the shared cache.
    for (version, flags) in [
        ("TLSv1.3", &["-tls1_3"][..]),
        ("TLSv1.2", &["-tls1_2", "-no_ticket"][..]),
    ] {
        let full = s_client_get(&pki, port, &[flags, &["-sess_out", saved]].concat());
        assert!(full.contains(&format!("New, {version}")), "{full}");
        // Each connection lands on a worker by its port's hash: in ten, both workers are all
        // but sure to be met (one in 2^10 not), and the one that did not make the session has
        // sealed or stored none of its own before the first.
        for i in 0..10 {
            let again = s_client_get(&pki, port, &[flags, &["-sess_in", saved]].concat());
            assert!(
                again.contains(&format!("Reused, {version}")) && again.contains("200 OK"),
                "{version}, connection {i}: {again}"
            );
        }
    }
    drop(srv);
}

#[test]
fn two_session_tickets_after_a_full_handshake_and_one_after_a_resumption() {
    support::require("openssl version");
    let pki = Pki::new();
    let (root, _) = site();
    let dir = TempDir::new("tickets");
    let a = dir.path().join("a.pem");
    let b = dir.path().join("b.pem");
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let tickets = |out: &str| {
        out.matches("Post-Handshake New Session Ticket arrived")
            .count()
    };
    for &m in ALL_MODELS {
        let args = support::serve_args(root.path().to_str().unwrap(), m, &[]);
        let (srv, port) = start(&args, &pki);
        let full = s_client_get(&pki, port, &["-tls1_3", "-sess_out", a]);
        assert!(
            full.contains("New, TLSv1.3") && full.contains("200 OK"),
            "{m}: {full}"
        );
        assert_eq!(tickets(&full), 2, "{m}: {full}");
        // Each resumption is sent one ticket, and the next connection resumes with it.
        let (mut offer, mut keep) = (a, b);
        for round in 0..3 {
            let again = s_client_get(
                &pki,
                port,
                &["-tls1_3", "-sess_in", offer, "-sess_out", keep],
            );
            assert!(again.contains("Reused, TLSv1.3"), "{m} {round}: {again}");
            assert!(again.contains("200 OK"), "{m} {round}: {again}");
            assert_eq!(tickets(&again), 1, "{m} {round}: {again}");
            (offer, keep) = (keep, offer);
        }
        drop(srv);
    }
}

#[test]
fn garbage_handshakes_harm_nobody_else() {
    support::require("curl --version");
    let pki = Pki::new();
    let (root, _) = site();
    for &m in ALL_MODELS {
        let args = support::serve_args(root.path().to_str().unwrap(), m, &[]);
        let (srv, port) = start(&args, &pki);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let garbage: [&[u8]; 3] = [
            // A handshake record whose ClientHello is nonsense.
            b"\x16\x03\x01\x00\x20garbage garbage garbage garbage!",
            // Binary that is no TLS at all.
            b"\x00\x01\x02\x03\xff\xfe",
            // A record header announcing more than a record may hold (RFC 8446 §5.1).
            b"\x16\x03\x03\xff\xff",
        ];
        for g in garbage {
            let mut s = connect(addr);
            s.write_all(g).unwrap();
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
            assert!(!sink.starts_with(b"HTTP/"), "{m}: answered {sink:?}");
        }
        let out = curl(
            &format!("{m}"),
            &pki,
            port,
            &[&format!("https://localhost:{port}/small.txt")],
        );
        assert_eq!(out.stdout, b"hello over TLS\n", "{m}");
        drop(srv);
    }
}

#[test]
fn bad_certificate_files_are_one_line_naming_the_file() {
    let pki = Pki::new();
    let missing = pki.path("missing.pem");
    let (a, ak, bk) = (pki.path("a.pem"), pki.path("a.key"), pki.path("b.key"));
    // A PEM block that holds no certificate: DER for SEQUENCE { INTEGER 0 }.
    let broken = pki.path("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["--tls-cert", &missing, "--tls-key", &ak], "missing.pem"),
        (
            &["--tls-cert", &broken, "--tls-key", &ak],
            "broken.pem is not a valid X.509 certificate: its DER encoding is broken",
        ),
        (&["--tls-cert", &a, "--tls-key", &bk], "b.key"),
        (&["--tls-cert", &a, "--tls-key", &a], "a.pem"),
        (&["--tls-cert", &a], "pairs"),
    ];
    for (flags, named) in cases {
        let mut args = vec!["hello", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(flags);
        let (status, stdout, stderr) = support::run_tincan(&args, b"", Duration::from_secs(10));
        assert!(!status.success(), "{flags:?} started");
        assert!(!stdout.contains("listening"), "{flags:?}: {stdout}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{flags:?}: {stderr}");
        assert!(lines[0].contains(named), "{flags:?}: {stderr}");
    }
}

#[test]
fn a_self_signed_certificate_is_made_once_and_trusted_as_the_start_line_says() {
    support::require("curl --version");
    let dir = TempDir::new("tls-self");
    let keep = dir.path().join("certs");
    let keep_s = keep.to_str().unwrap();
    let mut pems = Vec::new();
    for _ in 0..2 {
        let srv = Server::start(&[
            "hello",
            "--listen",
            "127.0.0.1:0",
            "--access-log",
            "off",
            "--tls-self-signed",
            keep_s,
        ]);
        let addr = srv.addrs[0].clone();
        assert!(addr.starts_with("https://127.0.0.1:"), "{addr}");
        let hint = srv
            .stdout
            .recv_timeout(Duration::from_secs(5))
            .expect("a line on how to trust the certificate");
        assert!(
            hint.contains("--cacert") && hint.contains(&format!("{keep_s}/cert.pem")),
            "{hint}"
        );
        let cert = keep.join("cert.pem");
        for url in [
            format!("{addr}/"),
            addr.replace("127.0.0.1", "localhost") + "/",
        ] {
            let port = addr.rsplit(':').next().unwrap();
            let out = support::curl(
                "self-signed",
                &[
                    "--cacert",
                    cert.to_str().unwrap(),
                    "--resolve",
                    &format!("localhost:{port}:127.0.0.1"),
                    &url,
                ],
            );
            assert!(!out.stdout.is_empty());
        }
        pems.push(std::fs::read(&cert).unwrap());
        drop(srv);
    }
    assert_eq!(
        pems[0], pems[1],
        "the certificate was made anew on the second start"
    );
}

#[test]
fn tincan_toml_takes_the_tls_keys_and_hsts_needs_tls() {
    support::require("curl --version");
    let pki = Pki::new();
    let (root, _) = site();
    let toml = root.path().join("tincan.toml");
    std::fs::write(
        &toml,
        format!(
            "tls_cert = [{:?}, {:?}]\ntls_key = [{:?}, {:?}]\nhsts = 31536000\n\
             access_log = \"off\"\n",
            pki.path("a.pem"),
            pki.path("b.pem"),
            pki.path("a.key"),
            pki.path("b.key")
        ),
    )
    .unwrap();
    let args = [
        "serve",
        root.path().to_str().unwrap(),
        "--config",
        toml.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    let srv = Server::start(&args);
    let port: u16 = srv.addrs[0].rsplit(':').next().unwrap().parse().unwrap();
    assert!(srv.addrs[0].starts_with("https://"), "{}", srv.addrs[0]);
    let out = curl(
        "toml",
        &pki,
        port,
        &["-sI", &format!("https://b.test:{port}/small.txt")],
    );
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        head.contains("strict-transport-security: max-age=31536000"),
        "{head}"
    );
    drop(srv);
    let (status, _, stderr) = support::run_tincan(
        &["hello", "--listen", "127.0.0.1:0", "--hsts", "60"],
        b"",
        Duration::from_secs(10),
    );
    assert!(
        !status.success() && stderr.contains("--hsts needs TLS"),
        "{stderr}"
    );
}

/// `--redirect-http`'s own start line: the address after `listening on http://`.
fn redirect_port(srv: &Server) -> u16 {
    let line = srv
        .stdout
        .recv_timeout(Duration::from_secs(5))
        .expect("a start line for the redirect listener");
    let addr = line
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("not a plain start line: {line}"));
    addr.parse::<SocketAddr>().unwrap().port()
}

#[test]
fn the_redirect_listener_sends_plain_clients_to_https_under_every_model() {
    support::require("curl --version");
    let pki = Pki::new();
    let (root, _) = site();
    let root_s = root.path().to_str().unwrap();
    for &m in ALL_MODELS {
        let extra = ["--redirect-http", "127.0.0.1:0", "--hsts", "60"];
        let args = support::serve_args(root_s, m, &extra);
        let (srv, port) = start(&args, &pki);
        let plain = redirect_port(&srv);
        let to_plain = format!("localhost:{plain}:127.0.0.1");

        // The same path and query, on https at the TLS port, under the name the client used;
        // no Strict-Transport-Security over plain HTTP (RFC 6797 §7.2).
        let out = curl(
            &format!("{m}"),
            &pki,
            port,
            &[
                "-i",
                "--resolve",
                &to_plain,
                &format!("http://localhost:{plain}/small.txt?a=1&b"),
            ],
        );
        let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 308 "), "{m}: {head}");
        assert!(
            head.contains(&format!(
                "\r\nlocation: https://localhost:{port}/small.txt?a=1&b\r\n"
            )),
            "{m}: {head}"
        );
        assert!(!head.contains("strict-transport-security"), "{m}: {head}");

        // A client that follows it gets the file over TLS, HSTS and all; a POST stays a POST.
        let out = curl(
            &format!("{m}"),
            &pki,
            port,
            &[
                "-sL",
                "-D",
                "-",
                "--resolve",
                &to_plain,
                &format!("http://localhost:{plain}/small.txt"),
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(
            text.contains("strict-transport-security: max-age=60")
                && text.ends_with("hello over tls\n"),
            "{m}: {text}"
        );
        let out = curl(
            &format!("{m}"),
            &pki,
            port,
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{redirect_url}",
                "-d",
                "x=1",
                &format!("http://127.0.0.1:{plain}/form"),
            ],
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("308 https://127.0.0.1:{port}/form"),
            "{m}"
        );

        // ACME HTTP-01 challenges are answered on the plain listener, not redirected.
        let out = curl(
            &format!("{m}"),
            &pki,
            port,
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://127.0.0.1:{plain}/.well-known/acme-challenge/token"),
            ],
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "404", "{m}");
        drop(srv);
    }
}

#[test]
fn the_redirect_listener_is_a_toml_key_and_needs_tls() {
    support::require("curl --version");
    let pki = Pki::new();
    let (root, _) = site();
    let toml = root.path().join("tincan.toml");
    std::fs::write(
        &toml,
        "redirect_http = \"127.0.0.1:0\"\naccess_log = \"off\"\n",
    )
    .unwrap();
    let root_s = root.path().to_str().unwrap();
    let toml_s = toml.to_str().unwrap();
    let args = [
        "serve",
        root_s,
        "--config",
        toml_s,
        "--listen",
        "127.0.0.1:0",
    ];
    let (srv, port) = start(&args, &pki);
    let plain = redirect_port(&srv);
    let out = support::curl(
        "toml",
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            &format!("http://127.0.0.1:{plain}/"),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("308 https://127.0.0.1:{port}/")
    );
    drop(srv);
    for args in [
        &[
            "serve",
            root_s,
            "--listen",
            "127.0.0.1:0",
            "--redirect-http",
            "127.0.0.1:0",
        ][..],
        &[
            "serve",
            root_s,
            "--config",
            toml_s,
            "--listen",
            "127.0.0.1:0",
        ][..],
    ] {
        let (status, stdout, stderr) = support::run_tincan(args, b"", Duration::from_secs(10));
        assert!(
            !status.success() && !stdout.contains("listening"),
            "{args:?}"
        );
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(
            lines.len() == 1 && lines[0].contains("--redirect-http") && lines[0].contains("TLS"),
            "{args:?}: {stderr}"
        );
    }
}

/// Keeps one connection open and, for each line on stdin, opens a new one: prints the common
/// name each new connection was served and the status the kept connection still answers with.
const PY_RELOAD: &str = r#"
import socket, ssl, sys
ca, port = sys.argv[1], int(sys.argv[2])
ctx = ssl.create_default_context(cafile=ca)
def connect():
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")
def cn(s):
    return dict(x[0] for x in s.getpeercert()["subject"])["commonName"]
def get(s):
    s.sendall(b"GET /small.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
    got = b""
    while not got.endswith(b"hello over TLS\n"):
        part = s.recv(65536)
        if not part:
            return "closed"
        got += part
    return got.split(b"\r\n", 1)[0].decode()
kept = connect()
print(cn(kept), get(kept), flush=True)
for _ in sys.stdin:
    s = connect()
    print(cn(s), get(kept), flush=True)
    s.close()
"#;

#[test]
fn sighup_rereads_the_certificates_and_open_connections_go_on() {
    use std::io::BufRead;
    support::require("python3 -c 'import ssl'");
    let pki = Pki::new();
    let (root, _) = site();
    let (cert, key) = (root.path().join("live.pem"), root.path().join("live.key"));
    let put = |name: &str| {
        // As certbot does: the new file is renamed over the old, never half written.
        for (from, to) in [(".pem", &cert), (".key", &key)] {
            let tmp = to.with_extension("new");
            std::fs::copy(pki.path(&format!("{name}{from}")), &tmp).unwrap();
            std::fs::rename(&tmp, to).unwrap();
        }
    };
    for m in support::concurrent_models() {
        put("a");
        let tls = [
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ];
        let args = support::serve_args(root.path().to_str().unwrap(), m, &tls);
        let srv = Server::start(&args);
        let port = srv.addrs[0].rsplit(':').next().unwrap().to_string();
        let mut py = Command::new("python3")
            .args(["-c", PY_RELOAD, &pki.path("ca.pem"), &port])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ask = py.stdin.take().unwrap();
        let mut lines = std::io::BufReader::new(py.stdout.take().unwrap()).lines();
        let mut next = || lines.next().expect("a line from python").unwrap();
        assert_eq!(next(), "a.test HTTP/1.1 200 OK", "{m}");

        // Renewed files, then SIGHUP: new connections get the new certificate (in every
        // prefork worker), while the connection opened before goes on.
        put("c");
        srv.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            writeln!(ask, "new").unwrap();
            let line = next();
            if line.starts_with("c.test") {
                break;
            }
            assert_eq!(line, "a.test HTTP/1.1 200 OK", "{m}");
            assert!(Instant::now() < deadline, "{m}: still the old certificate");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..6 {
            writeln!(ask, "new").unwrap();
            assert_eq!(next(), "c.test HTTP/1.1 200 OK", "{m}");
        }
        assert!(srv.stderr().contains("SIGHUP: reread 1 certificate"), "{m}");

        // A reload that fails keeps what is served and says why in one line.
        std::fs::write(&cert, "not a certificate\n").unwrap();
        srv.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !srv.stderr().contains("kept the certificates in use") {
            assert!(Instant::now() < deadline, "{m}: {}", srv.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        let said: Vec<String> = (srv.stderr().lines())
            .filter(|l| l.contains("SIGHUP: kept"))
            .map(str::to_string)
            .collect();
        assert!(
            said.len() == 1 && said[0].contains("live.pem"),
            "{m}: {said:?}"
        );
        for _ in 0..4 {
            writeln!(ask, "new").unwrap();
            assert_eq!(next(), "c.test HTTP/1.1 200 OK", "{m}");
        }
        drop(ask);
        let _ = py.wait();
        drop(srv);
    }

    // Iterative serves one connection at a time, so none stays open across its reload: the
    // connections after the SIGHUP, one by one, get the new certificate.
    put("a");
    let tls = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let args = support::serve_args(root.path().to_str().unwrap(), ALL_MODELS[0], &tls);
    let srv = Server::start(&args);
    let port = srv.addrs[0].rsplit(':').next().unwrap().to_string();
    // PY_RELOAD with nothing on its standard input: one connection, its name and its answer.
    let served = || {
        let out = Command::new("python3")
            .args(["-c", PY_RELOAD, &pki.path("ca.pem"), &port])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(served(), "a.test HTTP/1.1 200 OK");
    put("c");
    srv.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = served();
        if now == "c.test HTTP/1.1 200 OK" {
            break;
        }
        assert_eq!(now, "a.test HTTP/1.1 200 OK");
        assert!(
            Instant::now() < deadline,
            "iterative: still the old certificate"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(srv.stderr().contains("SIGHUP: reread 1 certificate"));
    drop(srv);
}

#[test]
fn send_and_talk_speak_tls_to_echo_and_chat() {
    let pki = Pki::new();
    let ca = pki.path("ca.pem");
    // 300 kB of every byte value: several TLS records each way, written while read.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    for m in [ALL_MODELS[2], ALL_MODELS[3]] {
        let mut args = vec!["echo", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(m.0);
        let (srv, port) = start(&args, &pki);
        let to = format!("localhost:{port}");
        let send = |extra: &[&str], stdin: &[u8]| {
            let mut a = vec!["send", &to, "--tls"];
            a.extend_from_slice(extra);
            support::run_tincan(&a, stdin, Duration::from_secs(20))
        };
        let (status, out, err) = send(&["--tls-ca", &ca, "--framing", "line"], b"a\nb\n");
        assert!(status.success(), "{m}: {err}");
        assert_eq!(out, "a\nb\n", "{m}");
        // Binary, ended by the half-close (close_notify, then FIN): it all comes back.
        let copy = TempDir::new("tls-send");
        let (file, back) = (copy.path().join("in"), copy.path().join("out"));
        std::fs::write(&file, &big).unwrap();
        let cmd = format!(
            "{} send {to} --tls --tls-ca {ca} --framing close --max-frame 1M < {} > {}",
            support::bin(),
            file.display(),
            back.display()
        );
        let ok = Command::new("sh").args(["-c", &cmd]).status().unwrap();
        assert!(ok.success(), "{m}");
        assert!(
            std::fs::read(&back).unwrap() == big,
            "{m}: the echo differs"
        );
        // Without the test CA, the system's CAs do not know the certificate: one line that
        // says what to do; --insecure goes ahead.
        let (status, _, err) = send(&["hi"], b"");
        assert!(!status.success(), "{m}: an unknown CA was accepted");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("not trusted") && err.contains("--tls-ca") && err.contains("--insecure"),
            "{err}"
        );
        let (status, out, err) = send(&["--insecure", "--framing", "line", "hi"], b"");
        assert!(status.success() && out == "hi\n", "{m}: {err}");
        drop(srv);
    }
    let (status, _, err) = support::run_tincan(
        &["send", "127.0.0.1:9", "--insecure", "x"],
        b"",
        Duration::from_secs(20),
    );
    assert!(
        !status.success() && err.contains("--insecure") && err.contains("add --tls"),
        "{err}"
    );

    // Chat: one talk listens, another says hello; both over TLS, under every model chat runs
    // under (iterative and prefork are refused: a room needs every client in one process).
    for m in [ALL_MODELS[1], ALL_MODELS[3], ALL_MODELS[4], ALL_MODELS[5]] {
        let mut args = vec!["chat", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(m.0);
        talk_over_tls(&pki, &args);
    }
}

/// A chat server started with `args`: one `talk --tls` hears what another says, and one that
/// does not trust the test CA is refused with a line naming --tls-ca.
fn talk_over_tls(pki: &Pki, args: &[&str]) {
    let ca = pki.path("ca.pem");
    let m = args.join(" ");
    let (srv, port) = start(args, pki);
    let to = format!("localhost:{port}");
    let listener = {
        let (to, ca) = (to.clone(), ca.clone());
        std::thread::spawn(move || {
            support::run_tincan(
                &["talk", &to, "--tls", "--tls-ca", &ca, "--wait", "3"],
                b"",
                Duration::from_secs(20),
            )
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let (status, out, err) = support::run_tincan(
        &["talk", &to, "--tls", "--tls-ca", &ca, "--wait", "1"],
        b"hello over tls\n",
        Duration::from_secs(20),
    );
    assert!(status.success(), "{m}: {err}");
    assert!(out.contains(": hello over tls"), "{m}: {out}");
    let (status, out, err) = listener.join().unwrap();
    assert!(status.success(), "{m}: {err}");
    assert!(out.contains(": hello over tls"), "{m}: {out}");
    let (status, _, err) = support::run_tincan(
        &["talk", &to, "--tls", "--wait", "1"],
        b"x\n",
        Duration::from_secs(20),
    );
    assert!(!status.success() && err.contains("--tls-ca"), "{m}: {err}");
    drop(srv);
}

/// `tincan bench ARGS --json`, parsed.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["bench", "http"];
    all.extend_from_slice(args);
    all.push("--json");
    let (status, out, err) = support::run_tincan(&all, b"", Duration::from_secs(60));
    assert!(status.success(), "tincan {all:?} failed: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not one JSON object ({e}): {out}"))
}

#[test]
fn bench_http_loads_serve_over_https_with_and_without_keepalive() {
    let pki = Pki::new();
    let ca = pki.path("ca.pem");
    let (root, _) = site();
    for m in [ALL_MODELS[2], ALL_MODELS[3]] {
        let args = support::serve_args(root.path().to_str().unwrap(), m, &[]);
        let (srv, port) = start(&args, &pki);
        let small = format!("https://localhost:{port}/small.txt");
        let v = bench_json(&[&small, "--tls-ca", &ca, "-c", "4", "-t", "1", "-d", "0.5"]);
        let replies = v["replies"].as_u64().unwrap();
        assert!(replies > 0, "{m}: {v}");
        assert_eq!(v["errors"]["total"], 0, "{m}: {v}");
        assert!(
            v["bytes_read"].as_u64().unwrap() >= replies * 15,
            "{m}: {v}"
        );

        // A handshake per request.
        let v = bench_json(&[
            &small,
            "--tls-ca",
            &ca,
            "-c",
            "2",
            "-t",
            "1",
            "-n",
            "50",
            "--keepalive",
            "off",
        ]);
        assert_eq!(v["replies"], 50, "{m}: {v}");
        assert_eq!(v["connects"], 50, "{m}: {v}");
        assert_eq!(v["errors"]["total"], 0, "{m}: {v}");

        // 10 MiB bodies: far more than rustls holds unread at once.
        let big = format!("https://localhost:{port}/big.bin");
        let v = bench_json(&[&big, "--insecure", "-c", "2", "-t", "1", "-n", "4"]);
        assert_eq!(v["replies"], 4, "{m}: {v}");
        assert_eq!(v["errors"]["total"], 0, "{m}: {v}");
        assert!(
            v["bytes_read"].as_u64().unwrap() >= 4 * (10 << 20),
            "{m}: {v}"
        );

        // A certificate nobody said to trust: one line before any load.
        let (status, out, err) = support::run_tincan(
            &["bench", "http", &small, "-n", "1"],
            b"",
            Duration::from_secs(20),
        );
        assert!(!status.success() && out.is_empty(), "{m}: {out}");
        assert_eq!(err.trim().lines().count(), 1, "{m}: {err}");
        assert!(
            err.contains("not trusted") && err.contains("--tls-ca"),
            "{m}: {err}"
        );
        drop(srv);
    }
}
