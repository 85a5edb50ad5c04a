//! Regressions found by outside-in QA: each test is an input a user or a hostile client gave
//! that once broke something, and the answer it must get now.

use std::time::Duration;

use crate::support::run_tincan;

/// `tincan ARGS` is a usage error: exit 2, nothing on stdout, one line on stderr that contains
/// `needle`.
fn refused_before_binding(args: &[&str], needle: &str) {
    stops_before_binding(args, needle, 2);
}

/// `tincan ARGS` is understood but cannot be carried out here: exit 1, as
/// [`refused_before_binding`] otherwise.
fn fails_before_binding(args: &[&str], needle: &str) {
    stops_before_binding(args, needle, 1);
}

fn stops_before_binding(args: &[&str], needle: &str, code: i32) {
    let (status, out, err) = run_tincan(args, b"", Duration::from_secs(10));
    assert_eq!(status.code(), Some(code), "{args:?}: {err}");
    assert!(!out.contains("listening on"), "{args:?} bound first: {out}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains("running as root"))
        .collect();
    assert_eq!(lines.len(), 1, "{args:?}: {err}");
    assert!(lines[0].starts_with("tincan: "), "{args:?}: {err}");
    assert!(lines[0].contains(needle), "{args:?}: {err}");
}

#[test]
fn a_bad_header_or_access_log_is_refused_before_listening() {
    for cmd in ["serve", "hello"] {
        refused_before_binding(
            &[cmd, "--listen", "127.0.0.1:0", "--header", "NoColon"],
            "--header",
        );
        fails_before_binding(
            &[
                cmd,
                "--listen",
                "127.0.0.1:0",
                "--access-log",
                "/nonexistent/dir/access.log",
            ],
            "access log",
        );
    }
}

#[test]
fn static_file_settings_are_refused_in_the_same_voice_as_other_flags() {
    for (flag, value) in [
        ("--fallback", "index.html"),
        ("--error-page", "404=404.html"),
        ("--index", "../index.html"),
        ("--cache-control", "[=max-age=1"),
    ] {
        let args = ["serve", "--listen", "127.0.0.1:0", flag, value];
        refused_before_binding(&args, flag);
        let (_, _, err) = run_tincan(&args, b"", Duration::from_secs(10));
        let line = err.lines().last().unwrap_or_default();
        assert!(!line.ends_with('.'), "{line}");
        assert!(line.starts_with(&format!("tincan: {flag} ")), "{line}");
    }
}

#[test]
fn talk_explains_an_unreachable_server_without_os_error_numbers() {
    // Port 1 on this host: nothing listens there.
    let (status, _, err) = run_tincan(&["talk", "127.0.0.1:1"], b"", Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        err.trim_end(),
        "tincan: could not reach 127.0.0.1:1: connection refused; is the server running?"
    );
    let (status, _, err) = run_tincan(
        &["talk", "127.0.0.1:1", "--connect-timeout", "0"],
        b"",
        Duration::from_secs(10),
    );
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("--connect-timeout"), "{err}");
}

#[test]
fn every_server_help_states_the_defaults_the_code_uses() {
    let o = tincan::model::ServeOptions::default();
    let backlog = tincan::net::BindOptions::default().backlog;
    let want = [
        format!("[default: {}]", o.model),
        format!("[default: {}]", o.poller),
        format!("[default: {}]", o.max_connections),
        format!("[default: {}]", backlog),
        format!("[default: {}]", o.grace.as_secs()),
        format!("[default: {}]", o.send_timeout.as_secs()),
        format!("[default: {}]", o.busy_poll.as_micros()),
        format!(
            "At most {}. [default: {}]",
            tincan::net::MAX_DEFER_ACCEPT,
            tincan::net::BindOptions::default().defer_accept
        ),
        "serve 8000, hello 8080, echo 7007, chat 4040".to_string(),
    ];
    for cmd in ["serve", "hello", "echo", "chat"] {
        let (status, out, _) = run_tincan(&[cmd, "--help"], b"", Duration::from_secs(10));
        assert!(status.success());
        // clap wraps long lines; compare with the wrapping undone.
        let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
        for w in &want {
            assert!(flat.contains(w.as_str()), "tincan {cmd} --help lacks {w}");
        }
    }
}

#[test]
fn umask_sets_the_mode_of_unix_socket_files_so_others_can_connect() {
    use std::os::unix::fs::PermissionsExt;
    let dir = crate::support::TempDir::new("qa-umask");
    for (umask, want) in [("000", 0o777), ("007", 0o770)] {
        let path = dir.path().join(format!("s{umask}.sock"));
        let listen = format!("unix:{}", path.display());
        let _server =
            crate::support::Server::start(&["echo", "--listen", &listen, "--umask", umask]);
        let mode = std::fs::metadata(&path)
            .expect("the socket file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, want, "--umask {umask}: {mode:o}");
    }
}

#[test]
fn serving_a_root_the_new_user_cannot_read_is_warned_about_at_start() {
    // SAFETY: geteuid takes nothing and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        crate::support::skip("dropping to nobody needs root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = crate::support::TempDir::new("qa-private-root");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let root = dir.path().to_str().unwrap();
    let server = crate::support::Server::start(&[
        "serve",
        root,
        "--listen",
        "127.0.0.1:0",
        "--user",
        "nobody",
        "--access-log",
        "off",
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !server.stderr().contains("cannot be read") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = server.stderr();
    assert!(
        err.contains("cannot be read after dropping privileges (permission denied)"),
        "{err}"
    );
}

#[test]
fn negative_client_timeouts_are_refused_by_name_not_as_unexpected_arguments() {
    for args in [
        &["send", "127.0.0.1:1", "hi", "--timeout", "-1"][..],
        &["talk", "127.0.0.1:1", "--wait", "-1"],
        &["talk", "127.0.0.1:1", "--connect-timeout", "-2"],
    ] {
        let (status, _, err) = run_tincan(args, b"", Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("tincan: --"), "{args:?}: {err}");
        assert!(!err.contains("unexpected argument"), "{args:?}: {err}");
    }
}

#[test]
fn an_unread_stdout_access_log_never_stalls_the_server_or_its_shutdown() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::{Command, Stdio};
    /// Kills the server if the test fails before it has exited.
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut guard = Reaped(
        Command::new(crate::support::bin())
            .args(["serve", ".", "--listen", "127.0.0.1:0", "--model", "event"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tincan"),
    );
    let child = &mut guard.0;
    // Read the `listening on` line, then never read stdout again (as a script might).
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap()
        .to_string();
    let mut s = crate::support::connect(addr.parse().unwrap());
    // Each request logs ~500 bytes: 900 of them (under the 1000 a connection may make) are far
    // more than a pipe holds (64 KiB).
    let req = format!(
        "GET /nonexistent?{} HTTP/1.1\r\nHost: x\r\nUser-Agent: {}\r\n\r\n",
        "q".repeat(200),
        "u".repeat(200)
    );
    for i in 0..900 {
        s.write_all(req.as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).unwrap_or(0) == 0 {
                panic!("the server stopped answering at request {i}");
            }
            head.push(b[0]);
        }
        let text = String::from_utf8_lossy(&head);
        let len: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        let mut body = vec![0; len];
        s.read_exact(&mut body).unwrap();
    }
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "{st}");
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("tincan did not exit on SIGTERM with its stdout unread");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn shared_server_flags_out_of_range_are_one_short_line_before_binding() {
    let l = ["--listen", "127.0.0.1:0"];
    let case = |extra: &[&str], needle: &str| {
        let mut args = vec!["echo"];
        args.extend_from_slice(&l);
        args.extend_from_slice(extra);
        refused_before_binding(&args, needle);
    };
    // Huge numbers are shown short, negative ones reach our own check (not clap's
    // "unexpected argument"), and a typo'd worker count never forks thousands of processes.
    case(
        &["--grace", "1e300"],
        "--grace 1e300 is not a number of seconds",
    );
    case(&["--grace", "-1"], "--grace -1 is not a number of seconds");
    case(&["--send-timeout", "-2"], "--send-timeout -2 is not");
    case(
        &["--model", "prefork", "--workers", "100000"],
        "--workers 100000 is more than tincan runs",
    );
}

#[test]
fn a_mistyped_flag_or_value_is_one_line_naming_the_help_to_read() {
    for (args, needle) in [
        (
            &["serve", "--lisen", ":80"][..],
            "unknown flag '--lisen' (did you mean '--listen'?); see 'tincan serve --help'",
        ),
        (
            &["echo", "--workers", "-1"][..],
            "invalid value '-1' for '--workers <N>'",
        ),
        (
            &["serve", "--model", "fast"][..],
            "use one of: iterative, threaded, prefork, event",
        ),
        (
            &["send"][..],
            "required arguments were not provided: <ADDR>; see 'tincan send --help'",
        ),
    ] {
        let (status, out, err) = run_tincan(args, b"", Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("tincan: ") && err.contains(needle),
            "{args:?}: {err}"
        );
    }
}

/// From an outside pass over the CLI: error lines carried Rust's and the OS's wording
/// (`(os error 2)`, `invalid digit found in string`, `invalid port value`, clap's `use '-- -1'`
/// for a negative number), or named the wrong fault.
#[test]
fn error_lines_say_what_is_wrong_in_words() {
    for (args, needle) in [
        (
            &[
                "serve",
                "-l",
                "127.0.0.1:0",
                "--access-log",
                "/nonexistent/dir/log",
            ][..],
            "cannot open access log /nonexistent/dir/log: no such file or directory",
        ),
        (
            &["serve", "--grace", "abc"],
            "'--grace <SECONDS>': not a number",
        ),
        (
            &["serve", "--workers", "x"],
            "'--workers <N>': not a whole number",
        ),
        (
            &["bench", "http", "http://127.0.0.1:1/", "-c", "-1"],
            "-c -1: a negative number is not allowed here",
        ),
        (
            &["send", "127.0.0.1:99999", "hi"],
            "the port in '127.0.0.1:99999' must be a number from 1 to 65535",
        ),
        (&["talk", "127.0.0.1:0"], "must be a number from 1 to 65535"),
        (&["bench", "echo", "127.0.0.1"], "'127.0.0.1' has no port"),
        (
            &["serve", "-l", "127.0.0.1:0", "--cgi", "/cgi-bin=Cargo.toml"],
            "that is a file; give the directory that holds the scripts",
        ),
        (
            &["serve", "-l", "127.0.0.1:0", "--upstream-fail-timeout", "0"],
            "--upstream-fail-timeout 0 is not a number of seconds; give more than 0",
        ),
        (
            &["serve", "-l", "127.0.0.1:0", "--proxy", "/api"],
            "\"/api\" is not PREFIX=URL",
        ),
        (
            &["echo", "--framing", "fixed:x"],
            "a frame size in bytes after 'fixed:'",
        ),
        (
            &["serve", "--max-body", "99999999999999999999"],
            "is too large a size",
        ),
    ] {
        let (status, _, err) = run_tincan(args, b"", Duration::from_secs(10));
        assert!(!status.success(), "{args:?}");
        let line = err
            .lines()
            .find(|l| l.starts_with("tincan: "))
            .unwrap_or_default();
        assert!(line.contains(needle), "{args:?}: {err}");
        assert!(!line.contains("os error"), "{args:?}: {err}");
    }
}

/// Flags only the event loops read, given with a model that has none, are said to change
/// nothing (an outside pass found `--workers` and `--busy-poll` silently ignored there).
#[test]
fn event_loop_flags_given_to_another_model_are_said_to_change_nothing() {
    let srv = crate::support::Server::start(&[
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--model",
        "threaded",
        "--workers",
        "4",
        "--busy-poll",
        "100",
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let want = [
        "--workers 4 changes nothing",
        "--busy-poll 100 changes nothing",
    ];
    while !want.iter().all(|w| srv.stderr().contains(w)) {
        assert!(
            std::time::Instant::now() < deadline,
            "stderr: {}",
            srv.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The exit status contract (README "Exit status"): 2 when the command line or config file is
/// wrong as written, 1 when a valid command cannot be carried out on this machine.
#[test]
fn exit_status_is_2_for_a_wrong_command_and_1_for_what_the_machine_refuses() {
    let dir = crate::support::TempDir::new("qa-exit");
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let not_toml = file("not.toml", "listen = \n[[[\n");
    let typo = file("typo.toml", "max_bdy = 5\n");
    let bad_cert = file("cert.pem", "not a certificate\n");
    let empty_auth = file("users", "# nobody\n");
    // A port this test holds, so the server finds it busy.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    let l = "127.0.0.1:0";
    let usage: &[&[&str]] = &[
        &[],
        &["serve", "--lisen", ":80"],
        &["serve", "--tls"],
        &["serve", "--model", "fast"],
        &["serve", "-l", "nowhere"],
        &["serve", "-l", l, "--header", "NoColon"],
        &["serve", "-l", l, "--config", &not_toml],
        &["serve", "-l", l, "--config", &typo],
        &["echo", "-l", l, "--grace", "-1"],
        &["chat", "-l", l, "--model", "prefork"],
        &["send", "127.0.0.1:1", "hi", "--timeout", "0"],
        &["bench", "http", "ftp://x/"],
    ];
    let runtime: &[&[&str]] = &[
        &["serve", "/nonexistent/tincan-root"],
        &["serve", "-l", &busy],
        &["echo", "-l", &busy],
        &["serve", "-l", l, "--config", "/nonexistent/tincan.toml"],
        &[
            "serve",
            "-l",
            l,
            "--tls-cert",
            &bad_cert,
            "--tls-key",
            &bad_cert,
        ],
        &["serve", "-l", l, "--auth-file", &empty_auth],
        &["serve", "-l", l, "--auth-file", "/nonexistent/users"],
        &["serve", "-l", l, "--access-log", "/nonexistent/dir/log"],
        &["send", "127.0.0.1:1", "hi"],
    ];
    for (args, want) in usage
        .iter()
        .map(|a| (a, 2))
        .chain(runtime.iter().map(|a| (a, 1)))
    {
        let (status, out, err) = run_tincan(args, b"", Duration::from_secs(10));
        assert_eq!(status.code(), Some(want), "{args:?}: {err}");
        assert!(!out.contains("listening on"), "{args:?}: {out}");
        if !args.is_empty() {
            assert!(err.starts_with("tincan: "), "{args:?}: {err}");
        }
    }
    let (_, help, _) = run_tincan(&["--help"], b"", Duration::from_secs(10));
    assert!(
        help.contains("Exit status:\n  0 ") && help.contains("\n  2    the command line"),
        "{help}"
    );
}

/// Flags other servers spell otherwise are called unknown and answered with tincan's way, never
/// with clap's "to pass '--tls' as a value, use '-- --tls'".
#[test]
fn an_unknown_flag_is_called_unknown_with_what_to_write_instead() {
    for (args, want) in [
        (
            &["serve", "--tls"][..],
            "tincan: unknown flag '--tls'; TLS is turned on by giving a certificate: \
             --tls-cert FILE --tls-key FILE, --tls-self-signed DIR or --acme DOMAIN; see \
             'tincan serve --help'",
        ),
        (
            &["echo", "--port", "7"],
            "tincan: unknown flag '--port'; give the port with --listen (-l)",
        ),
        (
            &["serve", "--xyzzy"],
            "tincan: unknown flag '--xyzzy'; see 'tincan serve --help'",
        ),
        (
            &["send", "127.0.0.1:7", "--lisen"],
            "tincan: unknown flag '--lisen'; see 'tincan send --help'",
        ),
        (
            &["serve", "-Z"],
            "tincan: unknown flag '-Z'; see 'tincan serve --help'",
        ),
    ] {
        let (status, _, err) = run_tincan(args, b"", Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with(want), "{args:?}: {err}");
        assert!(!err.contains("as a value"), "{args:?}: {err}");
    }
}

/// A config file's mistakes, as a user meets them: the file named, the line, the key.
#[test]
fn config_file_mistakes_name_the_file_line_and_key() {
    let dir = crate::support::TempDir::new("qa-config");
    for (text, want) in [
        (
            "max_bdy = 5\n",
            "line 1: unknown key `max_bdy`; did you mean `max_body`?",
        ),
        (
            "max-body = \"1m\"\n",
            "line 1: `max-body` is the flag's spelling; keys are written with `_`: `max_body`",
        ),
        (
            "head_timeout = \"5s\"\n",
            "line 1: `head_timeout` takes a number (of seconds), not the string \"5s\"",
        ),
        (
            "{\"listen\": 1}\n",
            "line 1: this is not a TOML file (invalid key)",
        ),
    ] {
        let path = dir.path().join("tincan.toml");
        std::fs::write(&path, text).unwrap();
        let p = path.to_str().unwrap();
        let (status, _, err) = run_tincan(&["serve", "--config", p], b"", Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{text:?}: {err}");
        assert_eq!(err, format!("tincan: {p}: {want}\n"), "{text:?}");
    }
}

/// A host that does not resolve is one sentence that says what to do, not getaddrinfo's
/// "failed to lookup address information: Name or service not known", and a failure of this
/// machine's (exit 1), not of the command as written, in every client.
#[test]
fn an_unresolvable_host_is_one_sentence_in_every_client() {
    for args in [
        &["send", "nosuch.invalid:7"][..],
        &["talk", "nosuch.invalid"][..],
        &["bench", "http", "http://nosuch.invalid/", "-d", "1"][..],
    ] {
        let (status, _, err) = run_tincan(args, b"", Duration::from_secs(30));
        assert_eq!(status.code(), Some(1), "{args:?}: {err}");
        let line = err.trim_end();
        assert_eq!(line.lines().count(), 1, "{args:?}: {err}");
        assert!(
            line.starts_with("tincan: cannot resolve host 'nosuch.invalid'"),
            "{args:?}: {line}"
        );
        assert!(line.contains("give an IP address"), "{args:?}: {line}");
        assert!(!line.contains("failed to lookup"), "{args:?}: {line}");
    }
}
