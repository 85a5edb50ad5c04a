//! `tincan echo` and `tincan send` through the real binary: every framing under every model and
//! poller, the limits, UDP, Unix sockets, IPv6, the client, and the seeds' own Python clients.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, connect, read_exact, read_to_end, run_tincan, ModelFlags, Server};

/// The `--max-frame` the framing tests run with: small, so "one byte over" is cheap to send.
const MAX: usize = 32;

/// Each framing under test, with the frame size to use for `fixed`.
const FRAMINGS: &[&str] = &["raw", "close", "null", "line", "length", "fixed:32"];

fn start_echo(model: ModelFlags, extra: &[&str]) -> Server {
    let mut args = vec!["echo", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    args.extend_from_slice(model.0);
    Server::start(&args)
}

/// Frame `msg` the way the framing puts it on the wire (written out here, independently of the
/// library's encoder, so a wrong encoder cannot agree with itself).
fn frame(framing: &str, msg: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    match framing {
        "null" => {
            v.extend_from_slice(msg);
            v.push(0);
        }
        "line" => {
            v.extend_from_slice(msg);
            v.push(b'\n');
        }
        "length" => {
            v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            v.extend_from_slice(msg);
        }
        _ => v.extend_from_slice(msg),
    }
    v
}

/// A message of `len` printable bytes, different for each `seed`.
fn message(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + ((i as u8 + seed) % 26)).collect()
}

/// The length of the test message for a framing (fixed frames have exactly their size).
fn message_len(framing: &str) -> usize {
    match framing.strip_prefix("fixed:") {
        Some(n) => n.parse().expect("fixed size"),
        None => 24,
    }
}

/// Read until the server closes (EOF or reset): what came back before the close.
fn read_until_closed(s: &mut impl Read) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("expected the server to close the connection, got {e}"),
        }
    }
}

/// Poll the server's stderr until it contains `needle` (logging is asynchronous to our reads).
fn wait_for_log(server: &Server, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.stderr().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "stderr never said {needle:?}; it has:\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Send `wire` and check the echo: message framings answer as they go; `close` after the
/// half-close; `raw` as it arrives.
fn echo_roundtrip(addr: SocketAddr, framing: &str, wire: &[u8], byte_by_byte: bool) {
    let mut s = connect(addr);
    s.set_nodelay(true).expect("nodelay");
    if byte_by_byte {
        for b in wire {
            s.write_all(&[*b]).expect("write a byte");
            std::thread::sleep(Duration::from_micros(300));
        }
    } else {
        s.write_all(wire).expect("write");
    }
    if framing == "close" {
        s.shutdown(Shutdown::Write).expect("half-close");
        assert_eq!(read_to_end(&mut s), wire, "{framing}");
    } else {
        assert_eq!(read_exact(&mut s, wire.len()), wire, "{framing}");
    }
}

/// Everything the issue asks of each framing, against one server per framing under `model`.
fn every_framing_works_under(model: ModelFlags) {
    let max = MAX.to_string();
    for &framing in FRAMINGS {
        let server = start_echo(model, &["--framing", framing, "--max-frame", &max]);
        let addr = server.addr();
        let len = message_len(framing);
        let ctx = format!("{framing} under {model}");

        // A message split across many reads.
        echo_roundtrip(addr, framing, &frame(framing, &message(0, len)), true);

        // Many messages in one write (close framing has one message per connection).
        let mut batch = Vec::new();
        let count = if framing == "close" { 1 } else { 20 };
        for i in 0..count {
            batch.extend(frame(framing, &message(i, len)));
        }
        echo_roundtrip(addr, framing, &batch, false);

        // A frame of exactly --max-frame passes.
        echo_roundtrip(addr, framing, &frame(framing, &message(7, MAX)), false);

        // One byte over closes that connection with a logged reason (raw has no messages to
        // refuse, and fixed:N frames cannot be longer than N).
        if matches!(framing, "null" | "line" | "length" | "close") {
            let mut s = connect(addr);
            s.write_all(&frame(framing, &message(1, MAX + 1)))
                .expect("write");
            if framing == "close" {
                let _ = s.shutdown(Shutdown::Write);
            }
            assert!(read_until_closed(&mut s).is_empty(), "{ctx}: no echo");
            drop(s);
            wait_for_log(&server, &format!("exceeded the {MAX}-byte limit"));
            // The server goes on serving others.
            echo_roundtrip(addr, framing, &frame(framing, b"still here"), false);
        }

        if framing == "null" {
            let mut s = connect(addr);
            s.write_all(b"fine\0bad \xff\xfe\0").expect("write");
            assert_eq!(read_until_closed(&mut s), b"fine\0", "{ctx}");
            drop(s);
            wait_for_log(&server, "not valid UTF-8");
            echo_roundtrip(addr, framing, b"after\0", false);
        }
        drop(server);
    }

    // A megabyte through the close framing (exactly 1 MiB is the default limit, and passes).
    let server = start_echo(model, &["--framing", "close"]);
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut s = connect(server.addr());
    let mut w = s.try_clone().expect("clone");
    let data = big.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&data).expect("write a megabyte");
        w.shutdown(Shutdown::Write).expect("half-close");
    });
    let back = read_to_end(&mut s);
    writer.join().expect("writer");
    assert!(back == big, "the megabyte came back altered under {model}");
}

#[test]
fn every_framing_echoes_under_the_iterative_model() {
    every_framing_works_under(support::ALL_MODELS[0]);
}

#[test]
fn every_framing_echoes_under_the_threaded_model() {
    every_framing_works_under(support::ALL_MODELS[1]);
}

#[test]
fn every_framing_echoes_under_the_prefork_model() {
    every_framing_works_under(support::ALL_MODELS[2]);
}

#[test]
fn every_framing_echoes_under_the_event_model_with_epoll() {
    every_framing_works_under(support::ALL_MODELS[3]);
}

#[test]
fn every_framing_echoes_under_the_event_model_with_poll() {
    every_framing_works_under(support::ALL_MODELS[4]);
}

#[test]
fn every_framing_echoes_under_the_event_model_with_select() {
    every_framing_works_under(support::ALL_MODELS[5]);
}

#[test]
fn a_client_that_vanishes_mid_message_leaves_the_others_unharmed() {
    for &model in support::ALL_MODELS {
        let server = start_echo(model, &["--framing", "null"]);
        let addr = server.addr();
        let mut vanishing = connect(addr);
        vanishing.write_all(b"half a mess").expect("write");
        // Under iterative the next client waits for this one, so check the others only after
        // it is gone there; the concurrent models must serve them meanwhile.
        if !model.0.contains(&"iterative") {
            echo_roundtrip(addr, "null", b"meanwhile\0", false);
        }
        // Vanish with a reset (SO_LINGER 0), the rudest way to go.
        let sock = socket2::Socket::from(vanishing);
        sock.set_linger(Some(Duration::ZERO)).expect("linger");
        drop(sock);
        echo_roundtrip(addr, "null", b"afterwards\0", false);
    }
}

/// `--idle-timeout`: a client that talks keeps its connection; one that falls silent (even in
/// the middle of a message) is closed, so it cannot hold a slot, or the iterative model, for
/// ever.
#[test]
fn a_silent_client_is_closed_at_the_idle_timeout_and_a_talking_one_is_not_under_every_model() {
    for &model in support::ALL_MODELS {
        let server = start_echo(model, &["--framing", "line", "--idle-timeout", "0.5"]);
        let addr = server.addr();
        let mut talking = connect(addr);
        // 0.75 s of talking in all, longer than the timeout.
        for i in 0..3 {
            std::thread::sleep(Duration::from_millis(250));
            talking.write_all(format!("{i}\n").as_bytes()).unwrap();
            assert_eq!(
                read_exact(&mut talking, 2),
                format!("{i}\n").as_bytes(),
                "{model}"
            );
        }
        drop(talking);
        let mut silent = connect(addr);
        silent.write_all(b"half a li").unwrap();
        let t = Instant::now();
        assert_eq!(read_until_closed(&mut silent), b"", "{model}");
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
            "{model}: closed after {waited:?}"
        );
        // The slot is free again (under iterative, the whole service is).
        echo_roundtrip(addr, "line", b"next\n", false);
    }
}

/// A client with Nagle on that writes a line in two parts waits for the ACK of the first part
/// before the second leaves. The server has nothing to echo after the first part, so it must
/// send that ACK at once rather than hold it for an answer to ride on.
#[test]
fn a_line_written_in_two_parts_with_nagle_on_is_not_held_for_a_delayed_ack_under_every_model() {
    for &model in support::ALL_MODELS {
        let server = start_echo(model, &["--framing", "line"]);
        let mut s = connect(server.addr());
        let took = support::median_time(7, || {
            support::split_write(&mut s, b"hel", b"lo\n");
            assert_eq!(read_exact(&mut s, 6), b"hello\n", "{model}");
        });
        assert!(
            took < Duration::from_millis(20),
            "{model}: a round took {took:?}: the second write waited for a delayed ACK"
        );
    }
}

#[test]
fn prefix_peer_answers_with_the_clients_ip_and_port() {
    let server = Server::start(&[
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--framing",
        "null",
        "--prefix-peer",
    ]);
    let mut s = connect(server.addr());
    s.write_all(b"hello\0again\0").expect("write");
    let me = s.local_addr().expect("local addr");
    let want = format!("{me}: hello\0{me}: again\0");
    assert_eq!(read_exact(&mut s, want.len()), want.as_bytes());
}

#[test]
fn prefix_peer_is_refused_with_raw_framing_in_one_line() {
    let (status, _, err) = run_tincan(
        &["echo", "--listen", "127.0.0.1:0", "--prefix-peer"],
        b"",
        Duration::from_secs(10),
    );
    assert!(!status.success());
    assert!(err.starts_with("tincan: --prefix-peer"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn port_zero_binds_a_free_port_and_prints_it() {
    let server = Server::start(&["echo", "--listen", "127.0.0.1:0"]);
    let addr = server.addr();
    assert_ne!(addr.port(), 0);
    assert!(addr.ip().is_loopback());
    echo_roundtrip(addr, "raw", b"ping", false);
}

#[test]
fn udp_datagrams_are_answered_with_the_same_bytes() {
    let server = Server::start(&[
        "echo",
        "--udp",
        "--listen",
        "127.0.0.1:0",
        "--framing",
        "null",
        "--max-frame",
        "16",
    ]);
    let addr = server.addr();
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    sock.connect(addr).expect("connect");
    let mut buf = [0; 2048];
    for msg in [&b"hello\0"[..], b"exactly16bytes!!\0"] {
        sock.send(msg).expect("send");
        let n = sock.recv(&mut buf).expect("an answer");
        assert_eq!(&buf[..n], msg);
    }
    // Over the limit, and invalid UTF-8: no answer, a log line each; later datagrams still work.
    sock.send(b"seventeen bytes!!\0").expect("send");
    sock.send(b"\xff\xfe\0").expect("send");
    wait_for_log(&server, "exceeded the 16-byte limit");
    wait_for_log(&server, "not valid UTF-8");
    sock.send(b"next\0").expect("send");
    let n = sock.recv(&mut buf).expect("an answer");
    assert_eq!(
        &buf[..n],
        b"next\0",
        "nothing answered the refused datagrams"
    );
    // A flood of bad datagrams is no flood of log lines: one a second for each reason, with
    // a count of the rest.
    for _ in 0..500 {
        sock.send(b"seventeen bytes!!\0").expect("send");
    }
    // UDP may drop what a full socket buffer cannot hold: ask until answered.
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let answered = (0..50).any(|_| {
        sock.send(b"after\0").expect("send");
        matches!(sock.recv(&mut buf), Ok(n) if &buf[..n] == b"after\0")
    });
    assert!(answered, "the server stopped answering after the flood");
    let lines = server
        .stderr()
        .matches("exceeded the 16-byte limit")
        .count();
    assert!(lines <= 3, "{lines} log lines for 501 bad datagrams");

    let (status, out, err) = run_tincan(
        &[
            "send",
            "--udp",
            "--framing",
            "null",
            &addr.to_string(),
            "by udp",
        ],
        b"",
        Duration::from_secs(10),
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, "by udp\n");

    // Framings that would do nothing to a datagram are refused, not silently ignored.
    let (status, _, err) = run_tincan(
        &[
            "echo",
            "--udp",
            "--framing",
            "fixed:10",
            "-l",
            "127.0.0.1:0",
        ],
        b"",
        Duration::from_secs(10),
    );
    assert!(!status.success());
    assert!(err.contains("does not apply to --udp"), "{err}");
}

#[test]
fn udp_echo_with_prefix_peer_names_the_sender() {
    let server = Server::start(&["echo", "--udp", "--listen", "127.0.0.1:0", "--prefix-peer"]);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    sock.connect(server.addr()).expect("connect");
    sock.send(b"hi\n").expect("send");
    let mut buf = [0; 2048];
    let n = sock.recv(&mut buf).expect("an answer");
    let me = sock.local_addr().expect("local addr");
    assert_eq!(&buf[..n], format!("{me}: hi\n").as_bytes());
}

#[test]
fn unix_socket_echo_works_for_clients_and_tincan_send() {
    let dir = support::TempDir::new("echo-unix");
    let path = dir.path().join("echo.sock");
    let listen = format!("unix:{}", path.display());
    let _server = Server::start(&["echo", "--listen", &listen, "--framing", "line"]);
    let mut s = UnixStream::connect(&path).expect("connect to the Unix socket");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"one\ntwo\n").expect("write");
    let mut buf = [0; 8];
    s.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"one\ntwo\n");

    let (status, out, err) = run_tincan(
        &["send", &listen, "--framing", "line"],
        b"three\nfour\n",
        Duration::from_secs(10),
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, "three\nfour\n");
}

#[test]
fn ipv6_loopback_echo_works_where_available() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        support::skip("::1 is not available on this machine");
        return;
    }
    let server = Server::start(&["echo", "--listen", "[::1]:0", "--framing", "null"]);
    let addr = server.addr();
    assert!(addr.is_ipv6(), "{addr}");
    echo_roundtrip(addr, "null", b"over v6\0", false);
    let (status, out, err) = run_tincan(
        &["send", &addr.to_string(), "--framing", "null", "v6 send"],
        b"",
        Duration::from_secs(10),
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, "v6 send\n");
}

#[test]
fn tincan_send_speaks_every_framing_with_a_message_or_stdin() {
    // (framing, MESSAGE or None for stdin, stdin, expected stdout)
    let cases: &[(&str, Option<&str>, &[u8], &str)] = &[
        ("raw", Some("hello"), b"", "hello"),
        ("raw", None, b"from stdin\n", "from stdin\n"),
        ("close", Some("Hello, world"), b"", "Hello, world"),
        ("close", None, b"a\nb\n", "a\nb\n"),
        ("null", Some("hello"), b"", "hello\n"),
        ("null", None, b"one\ntwo\nthree\n", "one\ntwo\nthree\n"),
        ("line", Some("hello"), b"", "hello\n"),
        ("line", None, b"x\ny", "x\ny\n"),
        // `length` is the binary-safe framing: replies are bytes, nothing added, so
        // `send < big.bin > copy.bin` copies exactly.
        ("length", Some("hello"), b"", "hello"),
        ("length", None, b"two\nlines\n", "two\nlines\n"),
        ("fixed:4", Some("abcdefgh"), b"", "abcdefgh"),
        ("fixed:4", None, b"wxyz", "wxyz"),
    ];
    let mut server: Option<(String, Server)> = None;
    for &(framing, msg, stdin, want) in cases {
        if server.as_ref().is_none_or(|(f, _)| f != framing) {
            server = Some((
                framing.to_string(),
                Server::start(&["echo", "--listen", "127.0.0.1:0", "--framing", framing]),
            ));
        }
        let addr = server.as_ref().expect("started").1.addr().to_string();
        let mut args = vec!["send", &addr, "--framing", framing];
        if let Some(m) = msg {
            args.push(m);
        }
        let (status, out, err) = run_tincan(&args, stdin, Duration::from_secs(10));
        assert!(status.success(), "{framing} {msg:?}: {err}");
        assert_eq!(out, want, "{framing} {msg:?}");
    }
}

#[test]
fn tincan_send_runs_seed_002s_interactive_loop() {
    let server = Server::start(&["echo", "--listen", "127.0.0.1:0", "--framing", "null"]);
    let addr = server.addr().to_string();
    let (status, out, err) = run_tincan(
        &["send", &addr, "--framing", "null", "--interactive"],
        b"hello world\nq\n",
        Duration::from_secs(10),
    );
    assert!(status.success(), "{err}");
    let want = format!(
        "\nConnected to {addr}\nType message, enter to send, 'q' to quit\n\
         Sent message: hello world\nReceived echo: hello world\nClosed connection to server\n\n\
         \nConnected to {addr}\nType message, enter to send, 'q' to quit\n\
         Closed connection to server\n\n"
    );
    assert_eq!(out, want);
}

#[test]
fn tincan_send_to_a_server_that_is_down_says_so_in_one_line() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let addr = format!("127.0.0.1:{port}");
    let (status, out, err) = run_tincan(
        &["send", &addr, "hello", "--framing", "null"],
        b"",
        Duration::from_secs(10),
    );
    assert!(!status.success());
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!(
            "tincan: could not connect to {addr}: connection refused; is the server running?\n"
        )
    );
}

#[test]
fn tincan_send_reports_a_server_that_resets_in_one_line() {
    // A server that accepts and resets at once: SO_LINGER 0, then close.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let t = std::thread::spawn(move || {
        let (s, _) = listener.accept().expect("accept");
        let mut buf = [0; 64];
        let _ = (&s).read(&mut buf);
        let sock = socket2::Socket::from(s);
        let _ = sock.set_linger(Some(Duration::ZERO));
    });
    let (status, _, err) = run_tincan(
        &["send", &addr, "hello", "--framing", "null"],
        b"",
        Duration::from_secs(10),
    );
    t.join().expect("server thread");
    assert!(!status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("tincan: "), "{err}");
    assert!(
        err.contains("reset") || err.contains("closed"),
        "the line says what happened: {err}"
    );
}

/// Run a seed's Python client; `None` (after printing why) if python3 is missing.
fn python(script: &str, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Option<String> {
    support::require("command -v python3");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/").to_string() + script;
    let mut child = Command::new("python3")
        .arg(&path)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("feed stdin");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{script} did not finish in 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn seed_000s_python_client_gets_its_bytes_back_from_the_close_framing() {
    let server = Server::start(&["echo", "--listen", "127.0.0.1:0", "--framing", "close"]);
    let port = server.addr().port().to_string();
    if let Some(out) = python("client.py", &[&port], &[], b"") {
        assert_eq!(out, "Received b'Hello, world'\n");
    }
}

#[test]
fn seed_002s_python_echo_client_converses_with_the_null_framing() {
    let server = Server::start(&["echo", "--listen", "127.0.0.1:0", "--framing", "null"]);
    let port = server.addr().port().to_string();
    let Some(out) = python(
        "1.2-echo_client-uni.py",
        &[],
        &[("TINCAN_PORT", &port)],
        "hello world\nnăstrușnic ✓\nq\n".as_bytes(),
    ) else {
        return;
    };
    let greeting =
        format!("\nConnected to 127.0.0.1:{port}\nType message, enter to send, 'q' to quit\n");
    let want = format!(
        "{greeting}Sent message: hello world\nReceived echo: hello world\n\
         Closed connection to server\n\n\
         {greeting}Sent message: năstrușnic ✓\nReceived echo: năstrușnic ✓\n\
         Closed connection to server\n\n\
         {greeting}Closed connection to server\n\n"
    );
    assert_eq!(out, want);
}

#[test]
fn seed_002s_python_echo_client_sees_the_multithreaded_servers_prefix() {
    let server = Server::start(&[
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--framing",
        "null",
        "--prefix-peer",
        "--model",
        "threaded",
    ]);
    let port = server.addr().port().to_string();
    let Some(out) = python(
        "1.2-echo_client-uni.py",
        &[],
        &[("TINCAN_PORT", &port)],
        b"hello\nq\n",
    ) else {
        return;
    };
    let echo = out
        .lines()
        .find_map(|l| l.strip_prefix("Received echo: "))
        .unwrap_or_else(|| panic!("no echo in:\n{out}"));
    let (peer, msg) = echo.rsplit_once(": ").expect("prefixed");
    assert_eq!(msg, "hello");
    let peer: SocketAddr = peer.parse().expect("the prefix is ip:port");
    assert!(peer.ip().is_loopback() && peer.port() != 0, "{peer}");
}

#[test]
fn graceful_shutdown_lets_a_client_finish_its_message() {
    for &model in support::ALL_MODELS {
        let mut server = start_echo(model, &["--framing", "null", "--grace", "5"]);
        let mut s = connect(server.addr());
        s.write_all(b"first\0").expect("write");
        assert_eq!(read_exact(&mut s, 6), b"first\0");
        s.write_all(b"mid-").expect("write");
        // Let the server read the half message before the signal arrives.
        std::thread::sleep(Duration::from_millis(100));
        server.signal(libc::SIGTERM);
        std::thread::sleep(Duration::from_millis(100));
        s.write_all(b"conversation\0").expect("write");
        assert_eq!(
            read_until_closed(&mut s),
            b"mid-conversation\0",
            "under {model}"
        );
        let status = server
            .wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("still running after SIGTERM under {model}"));
        assert!(status.success(), "{status} under {model}");
    }
}

#[test]
fn a_udp_echo_server_stops_on_sigterm() {
    let mut server = Server::start(&["echo", "--udp", "--listen", "127.0.0.1:0"]);
    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("the UDP server exits after SIGTERM");
    assert!(status.success(), "{status}");
}

#[test]
fn tincan_send_over_udp_to_nobody_says_so_in_one_line() {
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.local_addr().expect("addr").port()
    };
    let addr = format!("127.0.0.1:{port}");
    let (status, _, err) = run_tincan(
        &["send", "--udp", &addr, "anyone?", "--timeout", "2"],
        b"",
        Duration::from_secs(10),
    );
    assert!(!status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("tincan: could not reach {addr} over UDP")),
        "{err}"
    );
}

/// Seed 002's echo servers answer one message per connection (read to the NUL, answer,
/// close), so its client connects for each; `send --connection-per-message` does the same.
/// Pipelined on one connection, the second message was lost or glued to the first.
#[test]
fn send_connects_per_message_for_a_server_that_answers_one_per_connection() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten().take(2) {
            // The seed's server: recv until a chunk holds a NUL, send it back, close.
            let mut s = s;
            let mut msg = Vec::new();
            let mut buf = [0u8; 4096];
            while !msg.contains(&0) {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => msg.extend_from_slice(&buf[..n]),
                }
            }
            let end = msg
                .iter()
                .position(|&b| b == 0)
                .map_or(msg.len(), |i| i + 1);
            let _ = s.write_all(&msg[..end]);
        }
    });
    let (status, out, err) = run_tincan(
        &[
            "send",
            &addr.to_string(),
            "--framing",
            "null",
            "--connection-per-message",
        ],
        b"first\nsecond\n",
        Duration::from_secs(10),
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, "first\nsecond\n");
}
