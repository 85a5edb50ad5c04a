//! systemd socket activation, driven by systemd's own `systemd-socket-activate`: it binds the
//! socket, waits for the first client, and starts tincan with the socket as descriptor 3
//! (`LISTEN_FDS`, `LISTEN_PID`). TCP ports are chosen by the OS: a small Python parent binds
//! 127.0.0.1:0 and passes its socket down to `systemd-socket-activate`, which hands on the
//! descriptors it was given itself (sd_listen_fds semantics).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use crate::support::{bin, curl, require, TempDir, ALL_MODELS};

/// Bind `sys.argv[1]` (`tcp` or `udp`) on 127.0.0.1:0, print the port, and exec the rest of
/// the command line with the socket as descriptor 3 and LISTEN_FDS/LISTEN_PID saying so.
const PASS_SOCKET: &str = r#"
import os, socket, sys
kind = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
s.bind(("127.0.0.1", 0))
if kind == socket.SOCK_STREAM:
    s.listen(64)
print(s.getsockname()[1], flush=True)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
os.execvp(sys.argv[2], sys.argv[2:])
"#;

/// A command started under socket activation; its stdout lines arrive on `lines`. Killed by its
/// pid if the test ends first.
struct Activated {
    child: Child,
    lines: Receiver<String>,
    stderr: std::path::PathBuf,
}

impl Activated {
    fn start(cmd: &mut Command, stderr: std::path::PathBuf) -> Activated {
        let err = std::fs::File::create(&stderr).unwrap();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("spawn");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Activated {
            child,
            lines,
            stderr,
        }
    }

    /// A TCP or UDP socket on 127.0.0.1:0 passed to `systemd-socket-activate ARGS`; returns
    /// it and the port.
    fn passing(kind: &str, args: &[&str], dir: &TempDir) -> (Activated, u16) {
        let mut cmd = Command::new("python3");
        cmd.args(["-c", PASS_SOCKET, kind]).args(args);
        let a = Activated::start(&mut cmd, dir.path().join(format!("{kind}.stderr")));
        let port = a.line().parse().expect("the port the helper bound");
        (a, port)
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no line on stdout; stderr:\n{}", self.stderr()))
    }

    /// Until systemd-socket-activate has bound its socket (it says so on stderr).
    fn wait_for_systemd(&self) {
        for _ in 0..500 {
            if self.stderr().contains("Listening on") {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "systemd-socket-activate did not listen; stderr:\n{}",
            self.stderr()
        );
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..500 {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no exit after SIGTERM; stderr:\n{}", self.stderr());
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn serve_answers_on_the_socket_systemd_passes_under_every_model() {
    require("systemd-socket-activate --version");
    require("python3 --version");
    let dir = TempDir::new("activation-serve");
    std::fs::write(dir.path().join("a.txt"), "activated\n").unwrap();
    let root = dir.path().to_str().unwrap();
    for m in ALL_MODELS {
        let mut args = vec!["systemd-socket-activate", bin(), "serve", root];
        args.extend(m.0);
        args.extend(["--access-log", "off"]);
        let (server, port) = Activated::passing("tcp", &args, &dir);
        // The first client starts it; curl waits in the socket's backlog meanwhile.
        let url = format!("http://127.0.0.1:{port}/a.txt");
        let out = curl(&format!("{m:?}"), &[&url]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "activated\n", "{m:?}");
        assert_eq!(
            server.line(),
            format!("listening on http://127.0.0.1:{port}"),
            "{m:?}"
        );
        let status = server.stop();
        assert!(status.success(), "{m:?}: {status}");
    }
}

#[test]
fn a_unix_socket_from_systemd_is_served_and_its_file_left_to_systemd() {
    require("systemd-socket-activate --version");
    let dir = TempDir::new("activation-unix");
    std::fs::write(dir.path().join("a.txt"), "over unix\n").unwrap();
    let root = dir.path().to_str().unwrap();
    let sock = dir.path().join("web.sock");
    let sock_s = sock.to_str().unwrap();
    let server = Activated::start(
        Command::new("systemd-socket-activate").args(["-l", sock_s, bin(), "serve", root]),
        dir.path().join("unix.stderr"),
    );
    server.wait_for_systemd();
    let out = curl("unix", &["--unix-socket", sock_s, "http://localhost/a.txt"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over unix\n");
    assert_eq!(server.line(), format!("listening on unix:{sock_s}"));
    assert!(server.stop().success());
    // The file is systemd's: tincan did not make it, so it does not remove it.
    assert!(sock.exists());

    // echo takes a passed socket as well.
    let sock = dir.path().join("echo.sock");
    let sock_s = sock.to_str().unwrap();
    let echo = Activated::start(
        Command::new("systemd-socket-activate").args(["-l", sock_s, bin(), "echo"]),
        dir.path().join("echo.stderr"),
    );
    echo.wait_for_systemd();
    let unix = format!("unix:{sock_s}");
    let (status, out, err) =
        crate::support::run_tincan(&["send", &unix, "hello"], b"", Duration::from_secs(10));
    assert!(status.success(), "{err}");
    assert_eq!(out, "hello");
    assert_eq!(echo.line(), format!("listening on {unix}"));
    assert!(echo.stop().success());
}

#[test]
fn udp_echo_takes_a_datagram_socket_from_systemd() {
    require("systemd-socket-activate --version");
    require("python3 --version");
    let dir = TempDir::new("activation-udp");
    let (echo, port) = Activated::passing(
        "udp",
        &[
            "systemd-socket-activate",
            "--datagram",
            bin(),
            "echo",
            "--udp",
        ],
        &dir,
    );
    let to = format!("127.0.0.1:{port}");
    // The datagram that wakes it is the first one answered.
    let (status, out, err) = crate::support::run_tincan(
        &["send", &to, "ping", "--udp"],
        b"",
        Duration::from_secs(10),
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, "ping");
    assert_eq!(echo.line(), format!("listening on {to}"));
    assert!(echo.stop().success());
}

#[test]
fn passed_sockets_that_cannot_be_served_are_refused_in_one_line() {
    require("python3 --version");
    let dir = TempDir::new("activation-refused");
    let root = dir.path().to_str().unwrap();
    for (kind, args, code, want) in [
        (
            "tcp",
            vec![bin(), "serve", root, "--listen", "127.0.0.1:0"],
            2,
            "tincan: systemd passed 1 listening socket (LISTEN_FDS), and --listen (or `listen` \
             in the config file) names addresses too; leave --listen out",
        ),
        (
            "udp",
            vec![bin(), "serve", root],
            1,
            "tincan: socket activation: descriptor 3 is not a listening stream socket; give \
             the .socket unit ListenStream=",
        ),
        (
            "tcp",
            vec![bin(), "echo", "--udp"],
            1,
            "tincan: socket activation: descriptor 3 is not a datagram socket; give the \
             .socket unit ListenDatagram=",
        ),
    ] {
        let (cmd, _) = Activated::passing(kind, &args, &dir);
        let mut child = cmd;
        let status = loop {
            if let Some(st) = child.child.try_wait().unwrap() {
                break st;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = child.stderr();
        assert_eq!(status.code(), Some(code), "{args:?}: {err}");
        assert!(err.starts_with(want), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn the_contrib_unit_files_pass_systemd_analyze_verify() {
    require("systemd-analyze --version");
    let dir = TempDir::new("units");
    let contrib = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib");
    let service = std::fs::read_to_string(format!("{contrib}/tincan.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/local/bin/tincan serve "));
    // Verified against this build, at the path the unit names.
    let service = service.replace("/usr/local/bin/tincan", bin());
    std::fs::write(dir.path().join("tincan.service"), service).unwrap();
    std::fs::copy(
        format!("{contrib}/tincan.socket"),
        dir.path().join("tincan.socket"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "./tincan.socket", "./tincan.service"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.is_empty(), "{err}");
}
