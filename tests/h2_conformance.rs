//! h2spec's conformance cases against the real binary, under every model that serves clients
//! at once: its `http2` section (RFC 9113) through `httpwg-cli` (`httpwg`, an h2spec port in
//! Rust; `.ci/run` installs it), its `generic` and `hpack` (RFC 7541) sections through
//! `tests/python/h2spec_cases.py`, over h2c and over TLS (ALPN h2). Every case must pass.
//!
//! The server is `tincan hello --http2 only`: h2spec asks that `GET /` and `POST /` be answered
//! 200 with a body, which `hello` does for any method, and with `only` a connection that does
//! not open with the HTTP/2 preface is the connection error §3.4 names rather than an HTTP/1.1
//! request (the case "Sends invalid connection preface").

use std::process::Command;

use crate::support::{self, Server, TempDir};

/// The python cases' file, beside this crate's other python clients.
fn cases_py() -> String {
    format!(
        "{}/tests/python/h2spec_cases.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn hello(m: support::ModelFlags, extra: &[&str]) -> Server {
    let mut args = vec!["hello", "--listen", "127.0.0.1:0", "--http2", "only"];
    args.extend_from_slice(m.0);
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// The port a server printed (`127.0.0.1:PORT`, or `https://127.0.0.1:PORT` under TLS).
fn port(srv: &Server) -> u16 {
    let a = &srv.addrs[0];
    a.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {a}"))
}

/// `httpwg` prints `Passed N/M tests` (with colour codes around the numbers).
fn httpwg_counts(log: &str) -> Option<(u32, u32)> {
    let line = log.lines().rev().find(|l| l.contains("Passed"))?;
    let plain: String = {
        let mut s = String::new();
        let mut esc = false;
        for c in line.chars() {
            match (esc, c) {
                (false, '\x1b') => esc = true,
                (true, 'm') => esc = false,
                (false, c) => s.push(c),
                _ => {}
            }
        }
        s
    };
    let frac = plain.split_whitespace().find(|w| w.contains('/'))?;
    let (a, b) = frac.split_once('/')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[test]
fn h2spec_http2_section_passes_in_full_under_every_concurrent_model() {
    support::require("httpwg --help 2>&1 | grep -q httpwg");
    for m in support::concurrent_models() {
        let srv = hello(m, &[]);
        let addr = srv.addr().to_string();
        let out = Command::new("httpwg")
            // h2spec's own default wait for a frame is 2 s; httpwg's 250 ms can pass by on a
            // loaded machine before the answer comes.
            .args(["--address", &addr, "--frame-timeout", "2000"])
            .args(["--connect-timeout", "2000"])
            .env("NO_COLOR", "1")
            .output()
            .expect("run httpwg");
        let log = String::from_utf8_lossy(&out.stderr);
        let failed: Vec<&str> = log.lines().filter(|l| l.contains("Test failed")).collect();
        let counts = httpwg_counts(&log);
        assert!(
            out.status.success() && failed.is_empty(),
            "{m}: httpwg failed:\n{}\n{}",
            failed.join("\n"),
            log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
        );
        // The run must have run the whole catalogue, not a filtered or empty one.
        let (passed, total) = counts.unwrap_or_else(|| panic!("{m}: no summary in\n{log}"));
        assert!(
            passed == total && total >= 100,
            "{m}: {passed}/{total} httpwg cases passed"
        );
    }
}

#[test]
fn h2spec_generic_and_hpack_sections_pass_in_full_over_h2c_and_tls() {
    support::require("python3 -c 'import hpack'");
    let certs = TempDir::new("h2spec-certs");
    let certs_s = certs.path().to_str().unwrap();
    for m in support::concurrent_models() {
        for tls in [false, true] {
            let srv = if tls {
                hello(m, &["--tls-self-signed", certs_s])
            } else {
                hello(m, &[])
            };
            let port = port(&srv).to_string();
            let mut args = vec![cases_py(), port];
            if tls {
                args.push("--tls".into());
            }
            let out = Command::new("python3")
                .args(&args)
                .output()
                .expect("run python3");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let fails: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
            assert!(
                out.status.success() && fails.is_empty(),
                "{m} tls={tls}: h2spec cases failed:\n{}\n{}",
                fails.join("\n"),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.contains("h2spec: 52 passed, 0 failed"),
                "{m} tls={tls}: not every case ran:\n{stdout}"
            );
        }
    }
}

/// `--http2 only`: the HTTP/2 preface is required, so an HTTP/1.1 request gets GOAWAY
/// PROTOCOL_ERROR (§3.4), and TLS offers h2 alone by ALPN.
#[test]
fn http2_only_answers_an_http1_request_with_goaway_and_offers_h2_alone() {
    use std::io::{Read, Write};
    let certs = TempDir::new("h2only-certs");
    let m = support::ModelFlags(&["--model", "event"]);
    let srv = hello(m, &[]);
    let mut s = support::connect(srv.addr());
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    // The server's SETTINGS, then GOAWAY (type 7) with PROTOCOL_ERROR (1).
    let goaway = got
        .windows(4)
        .position(|w| w == [0, 0, 8, 7])
        .unwrap_or_else(|| panic!("no GOAWAY in {got:?}"));
    assert_eq!(&got[goaway + 13..goaway + 17], &[0, 0, 0, 1], "{got:?}");

    let tls = hello(m, &["--tls-self-signed", certs.path().to_str().unwrap()]);
    support::require("openssl version");
    let probe = |alpn: &str| {
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{}", port(&tls)),
                "-alpn",
                alpn,
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run openssl");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(probe("h2,http/1.1").contains("ALPN protocol: h2"));
    assert!(!probe("http/1.1").contains("ALPN protocol: http/1.1"));
}
