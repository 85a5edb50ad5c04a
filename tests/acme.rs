//! `--acme` end to end against Debian's pebble (an ACME test CA) with real validation: pebble
//! resolves the test names through pebble-challtestsrv (every A query answers 127.0.0.1, no
//! AAAA) and connects to tincan's own listeners for HTTP-01 and TLS-ALPN-01. Curl then checks
//! the issued certificate against pebble's root.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, free_port, ModelFlags, Server, TempDir};

/// Every model (prefork runs its ACME client in a process of its own, and its workers answer
/// the challenges from the state directory).
const MODELS: &[ModelFlags] = &[
    ModelFlags(&["--model", "iterative"]),
    ModelFlags(&["--model", "threaded"]),
    ModelFlags(&["--model", "prefork", "--workers", "2"]),
    ModelFlags(&["--model", "event", "--workers", "2"]),
];

/// pebble and pebble-challtestsrv, stopped (by pid) when dropped.
struct Pebble {
    dir: TempDir,
    children: Vec<Child>,
    acme: u16,
    management: u16,
}

impl Pebble {
    /// Start a CA that validates on `http_port` and `tls_port` and issues certificates valid
    /// for `validity` seconds.
    fn start(http_port: u16, tls_port: u16, validity: u64) -> Pebble {
        support::require("command -v pebble && command -v pebble-challtestsrv");
        let dir = TempDir::new("pebble");
        // pebble's own HTTPS certificate: a self-signed leaf for 127.0.0.1 (what --acme-ca
        // trusts; webpki takes a leaf as its own anchor, not a CA certificate used as one).
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        let (acme, management, dns, dns_management) =
            (free_port(), free_port(), free_port(), free_port());
        let config = format!(
            r#"{{"pebble": {{
                "listenAddress": "127.0.0.1:{acme}",
                "managementListenAddress": "127.0.0.1:{management}",
                "certificate": "{d}/cert.pem", "privateKey": "{d}/key.pem",
                "httpPort": {http_port}, "tlsPort": {tls_port},
                "ocspResponderURL": "", "externalAccountBindingRequired": false,
                "certificateValidityPeriod": {validity}
            }}}}"#,
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("pebble.json"), config).unwrap();
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv");
        let mut pebble = Command::new("pebble")
            .arg("-config")
            .arg(dir.path().join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            // No random pause before validating; every nonce good; every order validated
            // anew (no authorization reuse), so a renewal is validated too.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble");
        let out = pebble.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        let mut started = false;
        for line in lines.by_ref() {
            if line
                .unwrap_or_default()
                .contains("ACME directory available")
            {
                started = true;
                break;
            }
        }
        // Keep draining its log, or pebble blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let p = Pebble {
            dir,
            children: vec![dns_server, pebble],
            acme,
            management,
        };
        assert!(started, "pebble did not start");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", dns)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pebble-challtestsrv did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme)
    }

    fn ca(&self) -> String {
        self.dir.path().join("cert.pem").display().to_string()
    }

    /// pebble's root (made anew at each start), written to a file for curl's --cacert.
    fn root(&self) -> String {
        let path = self.dir.path().join("root.pem");
        let url = format!("https://127.0.0.1:{}/roots/0", self.management);
        let out = support::curl("pebble root", &["--cacert", &self.ca(), &url]);
        std::fs::write(&path, out.stdout).unwrap();
        path.display().to_string()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Wait until the server's log has `n` lines containing `what`; panics with the log after 60 s.
fn wait_log(srv: &Server, what: &str, n: usize, m: impl std::fmt::Display) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while srv.stderr().matches(what).count() < n {
        assert!(
            Instant::now() < deadline,
            "{m}: no {n}× `{what}` in 60 s; stderr:\n{}",
            srv.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `tincan serve` for `name` on `tls_port` (and `--redirect-http` on `http_port`, if any).
fn acme_server(
    root: &str,
    m: ModelFlags,
    pebble: &Pebble,
    name: &str,
    state: &str,
    tls_port: u16,
    http_port: Option<u16>,
) -> Server {
    let tls = format!("127.0.0.1:{tls_port}");
    let http = http_port.map(|p| format!("127.0.0.1:{p}"));
    let dir = pebble.directory();
    let ca = pebble.ca();
    let mut args = vec!["serve", root, "--listen", &tls, "--access-log", "off"];
    args.extend_from_slice(m.0);
    args.extend(["--acme", name, "--acme-directory", &dir, "--acme-ca", &ca]);
    args.extend(["--acme-state", state, "--acme-email", "ops@tincan.test"]);
    if let Some(h) = &http {
        args.extend(["--redirect-http", h]);
    }
    Server::start(&args)
}

/// curl `https://NAME:PORT/` through 127.0.0.1, trusting pebble's root alone.
fn fetch(m: impl std::fmt::Display, root_pem: &str, name: &str, port: u16) -> String {
    let resolve = format!("{name}:{port}:127.0.0.1");
    let url = format!("https://{name}:{port}/hello.txt");
    let out = support::curl(
        &m.to_string(),
        &["--cacert", root_pem, "--resolve", &resolve, &url],
    );
    String::from_utf8(out.stdout).unwrap()
}

fn site() -> TempDir {
    let d = TempDir::new("acme-site");
    std::fs::write(d.path().join("hello.txt"), "hello over ACME\n").unwrap();
    d
}

#[test]
fn acme_http01_issues_at_start_and_a_restart_reuses_the_state() {
    let site = site();
    let root = site.path().to_str().unwrap();
    for (i, &m) in MODELS.iter().enumerate() {
        let (tls_port, http_port) = (free_port(), free_port());
        let pebble = Pebble::start(http_port, tls_port, 3600);
        let state = TempDir::new("acme-state");
        let st = state.path().to_str().unwrap();
        let name = format!("h{i}.tincan.test");
        let mut srv = acme_server(root, m, &pebble, &name, st, tls_port, Some(http_port));
        wait_log(&srv, "acme: obtained a certificate", 1, m);
        let pem = pebble.root();
        assert_eq!(fetch(m, &pem, &name, tls_port), "hello over ACME\n");
        let cert = std::fs::read(state.path().join("cert.pem")).unwrap();
        assert!(state.path().join("account.json").exists(), "{m}");
        srv.signal(libc::SIGTERM);
        srv.wait_exit(Duration::from_secs(10)).expect("stops");

        // The same state: the kept certificate serves at once, and nothing is ordered.
        let srv = acme_server(root, m, &pebble, &name, st, tls_port, Some(http_port));
        assert_eq!(fetch(m, &pem, &name, tls_port), "hello over ACME\n");
        assert!(!srv.stderr().contains("acme: made an account"), "{m}");
        assert!(!srv.stderr().contains("acme: obtained"), "{m}");
        while let Ok(line) = srv.stdout.try_recv() {
            assert!(!line.contains("ordering a certificate"), "{m}: {line}");
        }
        assert_eq!(
            std::fs::read(state.path().join("cert.pem")).unwrap(),
            cert,
            "{m}"
        );
    }
}

#[test]
fn acme_tls_alpn01_validates_on_the_tls_listener_without_a_redirect_listener() {
    let site = site();
    let root = site.path().to_str().unwrap();
    for (i, &m) in MODELS.iter().enumerate() {
        let tls_port = free_port();
        // Nothing listens on pebble's HTTP port: only TLS-ALPN-01 can succeed.
        let pebble = Pebble::start(free_port(), tls_port, 3600);
        let state = TempDir::new("acme-state");
        let name = format!("t{i}.tincan.test");
        let st = state.path().to_str().unwrap();
        let srv = acme_server(root, m, &pebble, &name, st, tls_port, None);
        wait_log(&srv, "acme: obtained a certificate", 1, m);
        assert_eq!(
            fetch(m, &pebble.root(), &name, tls_port),
            "hello over ACME\n"
        );
    }
}

#[test]
fn acme_renews_a_short_lived_certificate_and_swaps_it_in() {
    let site = site();
    let root = site.path().to_str().unwrap();
    // Under prefork the renewal process's SIGHUP reaches every worker through the supervisor.
    for &m in MODELS {
        // Iterative turns keep-alive off: no connection stays open across its renewal.
        let keeps = !m.0.contains(&"iterative");
        let (tls_port, http_port) = (free_port(), free_port());
        // Valid for 15 s: renewed 10 s after it was issued.
        let pebble = Pebble::start(http_port, tls_port, 15);
        let state = TempDir::new("acme-state");
        let st = state.path().to_str().unwrap();
        let name = "r.tincan.test";
        let srv = acme_server(root, m, &pebble, name, st, tls_port, Some(http_port));
        wait_log(&srv, "acme: obtained a certificate", 1, m);
        let first = std::fs::read(state.path().join("cert.pem")).unwrap();
        // A keep-alive connection on the first certificate, open across the renewal.
        let mut kept = keeps.then(|| KeptTls::open(&pebble.root(), name, tls_port));
        if let Some(kept) = &mut kept {
            assert_eq!(kept.get(), "hello over ACME\n", "{m}");
        }
        wait_log(&srv, "acme: renewing the certificate", 1, m);
        wait_log(&srv, "acme: obtained a certificate", 2, m);
        let second = std::fs::read(state.path().join("cert.pem")).unwrap();
        assert_ne!(first, second, "{m}: the certificate was not replaced");
        // The renewed certificate is the one new connections get (every worker's, under
        // prefork: a few handshakes land on both).
        let leaf = |pem: &[u8]| {
            let text = String::from_utf8_lossy(pem).into_owned();
            let end = "-----END CERTIFICATE-----";
            text[..text.find(end).unwrap() + end.len()].to_string()
        };
        let served = || {
            let out = Command::new("openssl")
                .args(["s_client", "-connect", &format!("127.0.0.1:{tls_port}")])
                .args(["-servername", name])
                .stdin(Stdio::null())
                .output()
                .expect("run openssl");
            String::from_utf8_lossy(&out.stdout).contains(&leaf(&second))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut in_a_row = 0;
        while in_a_row < 6 {
            in_a_row = if served() { in_a_row + 1 } else { 0 };
            assert!(
                Instant::now() < deadline,
                "{m}: the renewed certificate is not served"
            );
        }
        assert_eq!(
            fetch(m, &pebble.root(), name, tls_port),
            "hello over ACME\n"
        );
        if let Some(kept) = &mut kept {
            assert_eq!(
                kept.get(),
                "hello over ACME\n",
                "{m}: the open connection was dropped"
            );
        }
    }
}

/// `echo` takes `--acme` as `serve` does: with no HTTP listener, TLS-ALPN-01 is answered on
/// its TLS listener, and the certificate then carries echo's TLS.
#[test]
fn acme_gives_echo_its_certificate_over_tls_alpn01() {
    support::require("openssl version");
    for (i, m) in [
        ModelFlags(&["--model", "threaded"]),
        ModelFlags(&["--model", "event", "--workers", "2"]),
    ]
    .into_iter()
    .enumerate()
    {
        let tls_port = free_port();
        let pebble = Pebble::start(free_port(), tls_port, 3600);
        let state = TempDir::new("acme-state");
        let name = format!("e{i}.tincan.test");
        let (dir, ca) = (pebble.directory(), pebble.ca());
        let listen = format!("127.0.0.1:{tls_port}");
        // s_client -quiet reads until the server closes: the idle timeout ends it.
        let mut args = vec!["echo", "--listen", &listen, "--idle-timeout", "2"];
        args.extend_from_slice(m.0);
        args.extend(["--acme", &name, "--acme-directory", &dir, "--acme-ca", &ca]);
        args.extend(["--acme-state", state.path().to_str().unwrap()]);
        let srv = Server::start(&args);
        wait_log(&srv, "acme: obtained a certificate", 1, m);
        // Verified against pebble's root alone, by the name ordered: echoed back.
        let root = pebble.root();
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &listen, "-servername", &name])
            .args([
                "-CAfile",
                &root,
                "-verify_return_error",
                "-verify_hostname",
                &name,
            ])
            .args(["-quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(b"echo over acme\n")?;
                c.wait_with_output()
            })
            .expect("run openssl");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "echo over acme\n",
            "{m}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        drop(srv);
    }
}

/// One TLS connection (tincan's own client, trusting pebble's root) for keep-alive requests.
struct KeptTls(tincan::tls::client::TlsStream);

impl KeptTls {
    /// The certificate reaches the workers a moment after the renewal logs it (under prefork
    /// through a SIGHUP the supervisor passes on): until then a handshake may still meet the
    /// self-signed stand-in, so an unknown issuer is tried again for up to 10 s.
    fn open(root_pem: &str, name: &str, port: u16) -> KeptTls {
        use tincan::tls::client::{config, Trust};
        let cfg = config(&Trust::File(root_pem.into()), &[b"http/1.1"]).unwrap();
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            match tincan::tls::client::TlsStream::connect(sock, server.clone(), &cfg) {
                Ok(s) => return KeptTls(s),
                Err(e) if Instant::now() < deadline && e.to_string().contains("UnknownIssuer") => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("no TLS connection on the ACME certificate: {e}"),
            }
        }
    }

    /// GET /hello.txt on this connection: the body.
    fn get(&mut self) -> String {
        use std::io::{Read, Write};
        self.0
            .write_all(b"GET /hello.txt HTTP/1.1\r\nHost: r.tincan.test\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"hello over ACME\n") {
            let n = self.0.read(&mut buf).expect("the connection stays open");
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8(got).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        text[text.find("\r\n\r\n").unwrap() + 4..].to_string()
    }
}

#[test]
fn acme_failures_are_one_line_that_says_what_to_do() {
    let site = site();
    let root = site.path().to_str().unwrap();
    let m = ModelFlags(&["--model", "event", "--workers", "1"]);
    let state = TempDir::new("acme-state");
    let st = state.path().to_str().unwrap();

    // No CA at that address.
    let nothing = format!("https://127.0.0.1:{}/dir", free_port());
    let srv = Server::start(&[
        "serve",
        root,
        "-l",
        "127.0.0.1:0",
        "--acme",
        "x.tincan.test",
        "--acme-state",
        st,
        "--acme-directory",
        &nothing,
    ]);
    wait_log(&srv, "acme: no certificate", 1, m);
    let line = srv
        .stderr()
        .lines()
        .find(|l| l.contains("acme: no certificate"))
        .unwrap()
        .to_string();
    assert!(
        line.contains("cannot reach the ACME directory") && line.contains("check --acme-directory"),
        "{line}"
    );
    drop(srv);

    // A CA that validates on a port where nothing answers.
    let tls_port = free_port();
    let pebble = Pebble::start(free_port(), free_port(), 3600);
    let srv = acme_server(root, m, &pebble, "v.tincan.test", st, tls_port, None);
    wait_log(&srv, "acme: no certificate", 1, m);
    let line = srv
        .stderr()
        .lines()
        .find(|l| l.contains("acme: no certificate"))
        .unwrap()
        .to_string();
    assert!(
        line.contains("could not validate") && line.contains("make sure each name resolves"),
        "{line}"
    );
    assert!(!state.path().join("cert.pem").exists());

    // Refused at start, before anything is bound.
    let (status, _, err) = support::run_tincan(
        &[
            "serve",
            root,
            "-l",
            "127.0.0.1:0",
            "--acme",
            "a.tincan.test",
            "--acme-directory",
            "http://ca.test/dir",
        ],
        b"",
        Duration::from_secs(10),
    );
    assert!(
        !status.success() && err.contains("is an https:// URL"),
        "{err}"
    );
    let (status, _, err) = support::run_tincan(
        &["serve", root, "-l", "127.0.0.1:0", "--acme", "1.2.3.4"],
        b"",
        Duration::from_secs(10),
    );
    assert!(
        !status.success() && err.contains("give a domain name"),
        "{err}"
    );
}
