//! What the server tells its operator on stderr: the connection cap it settled on, clients
//! left waiting at that cap, and connections a stop cut off when `--grace` ran out.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::support::{connect, Server, TempDir, ALL_MODELS};

/// Poll `server`'s stderr until it contains `what` or `limit` passes.
fn wait_for_line(server: &Server, what: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let err = server.stderr();
        if err.contains(what) || Instant::now() >= deadline {
            return err;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A stop that closes connections still mid-request when the grace period runs out says how
/// many, in one line, under every model (it used to be silent, or a debug line).
#[test]
fn connections_cut_off_by_the_grace_period_are_counted_in_one_line() {
    let t = TempDir::new("grace-cut-off");
    let root = t.path().to_str().unwrap();
    for m in ALL_MODELS.iter().take(4) {
        let mut args = vec!["serve", root, "--listen", "127.0.0.1:0", "--grace", "0.5"];
        args.extend_from_slice(m.0);
        let mut server = Server::start(&args);
        // Mid-request: half a head, so the stop must wait for it and then cut it off.
        let mut c = connect(server.addr());
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        server.signal(libc::SIGTERM);
        assert!(server.wait_exit(Duration::from_secs(10)).is_some(), "{m}");
        let err = server.stderr();
        assert!(
            err.contains("the grace period (0.5 s, --grace) ran out: closed 1 connection that had not finished"),
            "{m}: {err}"
        );
        assert_eq!(err.matches("ran out").count(), 1, "{m}: {err}");
        drop(c);
    }
}

/// A stop with nothing unfinished says nothing of the kind.
#[test]
fn a_clean_stop_reports_no_cut_off() {
    let t = TempDir::new("grace-clean");
    let root = t.path().to_str().unwrap();
    let mut server = Server::start(&["serve", root, "--listen", "127.0.0.1:0", "--grace", "5"]);
    let mut c = connect(server.addr());
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).unwrap();
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
    assert!(!server.stderr().contains("ran out"), "{}", server.stderr());
}

/// At `--max-connections`, clients left in the backlog are reported (throttled), as nginx logs
/// its refused accepts, under the event loop, prefork and threaded.
#[test]
fn clients_waiting_at_the_cap_are_reported() {
    let t = TempDir::new("backlog-notice");
    let root = t.path().to_str().unwrap();
    for model in [
        &["--model", "event", "--workers", "1"][..],
        &["--model", "prefork", "--workers", "1"][..],
        &["--model", "threaded"][..],
    ] {
        let mut args = vec![
            "serve",
            root,
            "--listen",
            "127.0.0.1:0",
            "--max-connections",
            "1",
        ];
        args.extend_from_slice(model);
        let server = Server::start(&args);
        let held = connect(server.addr());
        // Served: the one slot is taken once it answers.
        let mut first = held.try_clone().unwrap();
        first
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 64];
        assert!(first.read(&mut buf).unwrap() > 0);
        let waiting = connect(server.addr());
        let err = wait_for_line(&server, "waiting in the backlog", Duration::from_secs(5));
        assert!(
            err.contains(
                "1 client waiting in the backlog: all 1 connections (--max-connections) are open"
            ),
            "{model:?}: {err}"
        );
        drop((held, waiting));
    }
}

/// A descriptor limit too low for the default cap lowers it, and the start says so.
#[test]
fn a_cap_lowered_by_the_descriptor_limit_is_said_at_start() {
    crate::support::require("prlimit");
    let t = TempDir::new("fd-cap");
    let root = t.path().to_str().unwrap();
    let server = Server::start_with_nofile(&["serve", root, "--listen", "127.0.0.1:0"], 256);
    let err = wait_for_line(&server, "serving at most", Duration::from_secs(2));
    assert!(
        err.contains(
            "connections at once: the descriptor limit is 256 (raise `ulimit -n` for more)"
        ),
        "{err}"
    );
}
