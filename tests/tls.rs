//! TLS on every listener, under every model: real clients (curl, `openssl s_client`, Python's
//! `ssl`) against certificates from a test CA made here with rcgen.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, connect, read_to_end, ModelFlags, Server, TempDir, ALL_MODELS};

/// A test CA and two server certificates it signed: `a` for localhost and 127.0.0.1 (the
/// first pair, served without SNI), `b` for `b.test` and `*.b.test`.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
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

    fn path(&self, name: &str) -> String {
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

/// Start `tincan ARGS` with TLS; returns it and its port (from `listening on https://...`).
fn start(args: &[&str], pki: &Pki) -> (Server, u16) {
    let flags = pki.flags();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(flags.iter().map(String::as_str));
    let server = Server::start(&all);
    let addr = server.addrs[0]
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("not an https address: {}", server.addrs[0]));
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
    // 10 MiB that no compression or pattern can fake: a simple LCG's bytes.
    let mut x: u32 = 12345;
    let big: Vec<u8> = (0..10 << 20)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
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

/// A Python `ssl` client that sends `size` bytes to an echo server and checks they come back.
const PY_ECHO: &str = r#"
import socket, ssl, sys
ca, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(cafile=ca)
with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        msg = bytes((i * 7) % 251 for i in range(size))
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

/// `openssl s_client` against the server, with `args`; returns what it printed.
fn s_client(pki: &Pki, port: u16, args: &[&str]) -> String {
    let connect = format!("127.0.0.1:{port}");
    let ca = pki.path("ca.pem");
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &connect, "-CAfile", &ca])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
    let args = support::serve_args(
        root.path().to_str().unwrap(),
        ModelFlags(&["--model", "event", "--workers", "1"]),
        &[],
    );
    let (srv, port) = start(&args, &pki);
    for (flag, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let out = s_client(
            &pki,
            port,
            &[flag, "-alpn", "http/1.1", "-servername", "localhost"],
        );
        assert!(
            out.contains(&format!("Protocol  : {name}")) || out.contains(&format!("New, {name}")),
            "{flag}: {out}"
        );
        assert!(out.contains("ALPN protocol: http/1.1"), "{flag}: {out}");
        assert!(out.contains("Verify return code: 0 (ok)"), "{flag}: {out}");
    }
    // SNI picks the second certificate by its names (a wildcard one here); an unknown name
    // and no name at all get the first.
    let out = s_client(
        &pki,
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
        "{out}"
    );
    for args in [
        &["-servername", "nobody.example"][..],
        &["-noservername"][..],
    ] {
        let out = s_client(&pki, port, args);
        assert!(out.contains("CN = a.test"), "{args:?}: {out}");
    }
    // TLS 1.0 and 1.1 are refused.
    let out = s_client(&pki, port, &["-tls1_1"]);
    assert!(
        out.contains("no peer certificate available"),
        "TLS 1.1 was accepted: {out}"
    );
    // Resumption, as Python's `ssl` sees it: a request read whole (so the session ticket
    // has arrived), then a second connection offering that session.
    support::require("python3 -c 'import ssl'");
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
            "{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(srv);
}

#[test]
fn garbage_handshakes_harm_nobody_else() {
    support::require("curl --version");
    let pki = Pki::new();
    let (root, _) = site();
    for m in [ALL_MODELS[0], ALL_MODELS[3]] {
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
    let cases: [(&[&str], &str); 4] = [
        (&["--tls-cert", &missing, "--tls-key", &ak], "missing.pem"),
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
