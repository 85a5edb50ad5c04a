//! `tincan talk`: the interactive tincanchat client (the book's chat client). One thread prints
//! whatever the server sends, one per line, as it arrives; the main thread sends each line typed
//! as a NUL-terminated message. `q` (or the end of input) quits with a shutdown of both
//! directions, as the book's client does. Plain blocking `std::net` I/O: clients are not drivers.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::send::describe;
use crate::error::{Error, Result};
use crate::protocol::framing::Framing;
use crate::tls::client::TlsStream;

/// The tincanchat port (4040, the book's), used when ADDR names only a host.
pub const DEFAULT_PORT: u16 = 4040;

/// Longest line from the server this client will hold while waiting for its NUL. The server
/// relays at most its `--max-message` plus a label, so this is generous; a server sending more
/// is broken, and the connection is dropped rather than buffered without end.
pub const MAX_INCOMING: usize = 16 * 1024 * 1024;

/// `tincan talk --help` opens with these, as every subcommand's help does.
macro_rules! talk_examples {
    () => {
        "\
Examples:
  tincan talk localhost                         the room of `tincan chat` on localhost:4040
  tincan talk 192.0.2.7:5000                    another host and port
  tincan talk localhost --tls --tls-ca cert.pem     a room over TLS (a self-signed cert.pem)
  printf '/nick bot\\nhello\\n' | tincan talk localhost --wait 1    a script: send, read 1 s, quit"
    };
}

/// Interactive chat client for `tincan chat`.
#[derive(Args, Debug)]
#[command(after_help = talk_examples!(), after_long_help = concat!(talk_examples!(), "

Type a line and press enter to send it; what anyone in the room says (you included) is printed
as it arrives. A line that is exactly q, or the end of input (Ctrl-D), quits. Empty lines are
not sent. See `tincan chat --help` for /nick and /who. Control characters in what arrives are
shown escaped (\\u{1b}), and a line break inside a message starts an indented line, so nobody
in the room can drive your terminal or pose as the server.

With --tls, the room's certificate is checked against the system's CA certificates, or those
in --tls-ca FILE (a self-signed server's cert.pem), unless --insecure.

tincan talk connects over TCP; a room listening on a unix: socket is reached with any client
that speaks NUL-terminated lines over it (socat, for one).

With standard input not a terminal, every line is sent and then, with --wait, what arrives is
printed for that many seconds before quitting. Exit status: 0 after a clean quit, 1 (with one
line on stderr) when the server cannot be reached or drops the connection."))]
pub struct TalkArgs {
    /// The chat server: HOST:PORT, [V6]:PORT, or HOST alone for port 4040.
    #[arg(value_name = "ADDR")]
    pub addr: String,

    /// After the last line of non-interactive input, keep printing what arrives for this long.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub wait: f64,

    /// Give up connecting (and the TLS handshake) after this long.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 5.0,
        allow_negative_numbers = true
    )]
    pub connect_timeout: f64,

    /// Speak TLS (to `tincan chat --tls-cert ...`), checking the server's certificate
    /// against the name in ADDR.
    #[arg(long)]
    pub tls: bool,

    #[command(flatten)]
    pub tls_trust: crate::cli::ClientTlsArgs,
}

/// `HOST` → `HOST:4040`; `[::1]` → `[::1]:4040`; a bare IPv6 address gets brackets.
pub fn with_default_port(addr: &str) -> String {
    if addr.ends_with(']') {
        format!("{addr}:{DEFAULT_PORT}")
    } else if addr.starts_with('[') {
        addr.to_string()
    } else {
        match addr.matches(':').count() {
            0 => format!("{addr}:{DEFAULT_PORT}"),
            1 => addr.to_string(),
            _ => format!("[{addr}]:{DEFAULT_PORT}"),
        }
    }
}

/// What the main thread waits for.
enum Event {
    /// A line of input (without its line ending).
    Line(String),
    /// Standard input ended (or failed: treated the same, as the user can type no more).
    InputEnd,
    /// The reader thread lost the server.
    Lost(String),
}

pub fn run(args: TalkArgs) -> Result<()> {
    let wait = crate::cli::seconds("--wait", args.wait, true)?;
    let connect_timeout = crate::cli::seconds("--connect-timeout", args.connect_timeout, false)?;
    if args.addr.starts_with("unix:") {
        return Err(Error::Usage(format!(
            "tincan talk connects over TCP only, and {} is a Unix socket; listen the room on a \
             TCP address too (tincan chat -l 127.0.0.1:4040 -l {}), or use socat",
            args.addr, args.addr
        )));
    }
    let target = with_default_port(&args.addr);
    let tls = if args.tls {
        let name = crate::tls::client::server_name(&target)?;
        Some((args.tls_trust.config(&[])?, name))
    } else {
        args.tls_trust.unused("add --tls")?;
        None
    };
    let stream = connect(&target, connect_timeout)?;
    let tls = match tls {
        None => None,
        Some((config, name)) => {
            let setup = |e| Error::io("could not set socket timeouts", e);
            stream
                .set_read_timeout(Some(connect_timeout))
                .map_err(setup)?;
            stream
                .set_write_timeout(Some(connect_timeout))
                .map_err(setup)?;
            let sock = stream.try_clone().map_err(setup)?;
            let t = TlsStream::connect(sock, name, &config)
                .map_err(|e| crate::cli::tls_failure(&target, &e))?;
            stream.set_read_timeout(None).map_err(setup)?;
            stream.set_write_timeout(None).map_err(setup)?;
            Some(t)
        }
    };
    // Both directions, over TLS or not: a reader thread's half and the sender's.
    let halves = || -> std::io::Result<(Box<dyn Read + Send>, Box<dyn Write>)> {
        Ok(match &tls {
            Some(t) => (Box::new(t.try_clone()?), Box::new(t.try_clone()?)),
            None => (Box::new(stream.try_clone()?), Box::new(stream.try_clone()?)),
        })
    };
    let (incoming, mut out) =
        halves().map_err(|e| Error::io("could not share the connection with the reader", e))?;
    let shown = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| target.clone());
    let lost = |why: &str| Error::Client(format!("lost the connection to {shown}: {why}"));

    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("Connected to {shown}. Type messages, enter to send; 'q' to quit.");
    }

    let quitting = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Event>();

    let reader = {
        let quitting = quitting.clone();
        let tx = tx.clone();
        std::thread::spawn(move || {
            let why = print_incoming(incoming);
            if !quitting.load(Ordering::SeqCst) {
                let _ = tx.send(Event::Lost(why));
            }
        })
    };

    // Standard input is read on its own thread so that a lost server is noticed (and reported)
    // even while nobody is typing. The thread is left blocked in read at exit; that is harmless.
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            let mut lock = stdin.lock();
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match lock.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Event::InputEnd);
                        return;
                    }
                    Ok(_) => {
                        while buf.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
                            buf.pop();
                        }
                        let line = String::from_utf8_lossy(&buf).into_owned();
                        if tx.send(Event::Line(line)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    drop(tx);

    let mut frame = Vec::new();
    loop {
        match rx.recv() {
            Ok(Event::Line(line)) if line == "q" => break,
            Ok(Event::Line(line)) => {
                if line.is_empty() {
                    continue;
                }
                if line.contains('\0') {
                    eprintln!("tincan: not sent: a message cannot contain a NUL character");
                    continue;
                }
                frame.clear();
                Framing::Null.encode(line.as_bytes(), &mut frame);
                if let Err(e) = out.write_all(&frame) {
                    return Err(lost(&e.to_string()));
                }
            }
            Ok(Event::InputEnd) => break,
            Ok(Event::Lost(why)) => return Err(lost(&why)),
            Err(_) => break,
        }
    }

    // Non-interactive input is done: keep listening for the time asked, unless the server goes.
    if !interactive && !wait.is_zero() {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(left) {
                Ok(Event::Lost(why)) => return Err(lost(&why)),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(left);
                    break;
                }
            }
        }
    }

    // The book's client: shut down both directions, which also ends the reader's recv.
    quitting.store(true, Ordering::SeqCst);
    let _ = stream.shutdown(Shutdown::Both);
    let _ = reader.join();
    Ok(())
}

fn connect(target: &str, timeout: Duration) -> Result<TcpStream> {
    let addrs = crate::net::resolve_host_port(target).map_err(Error::Client)?;
    let mut last = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(Error::Client(match last {
        Some(e) => format!("could not reach {target}: {}", describe(&e)),
        None => format!("could not reach {target}: it resolves to no address"),
    }))
}

/// Print each NUL-terminated line as it arrives until the connection ends; returns why it ended.
fn print_incoming(mut stream: Box<dyn Read + Send>) -> String {
    let mut data: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let stdout = std::io::stdout();
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => return "the server closed the connection".into(),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return describe(&e),
        };
        data.extend_from_slice(&chunk[..n]);
        // Like the book's recv_msgs: every complete message is printed, the rest is kept.
        let mut out = stdout.lock();
        let mut start = 0;
        while let Some(i) = data[start..].iter().position(|&b| b == 0) {
            let msg = String::from_utf8_lossy(&data[start..start + i]);
            let _ = writeln!(out, "{}", displayable(&msg));
            start += i + 1;
        }
        let _ = out.flush();
        drop(out);
        data.drain(..start);
        if data.len() > MAX_INCOMING {
            return format!("the server sent a message over {MAX_INCOMING} bytes");
        }
    }
}

/// A message as it may reach a terminal: what anyone in the room typed must not drive the
/// terminal or pose as the server. Control characters (but tab) and the direction overrides
/// are shown escaped (`\u{1b}`), so no escape sequence can recolour the screen, retitle the
/// window or move the cursor; a line break inside a message starts an indented line, so no
/// continuation can look like a line of its own (`* alice left`).
fn displayable(msg: &str) -> String {
    let mut shown = String::with_capacity(msg.len());
    for c in msg.chars() {
        match c {
            '\t' => shown.push(c),
            '\n' => shown.push_str("\n  "),
            c if c.is_control()
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}'
                    | '\u{2066}'..='\u{2069}') =>
            {
                shown.push_str(&c.escape_unicode().to_string());
            }
            c => shown.push(c),
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_others_send_cannot_drive_the_terminal_or_pose_as_the_server() {
        assert_eq!(displayable("bob: hi\tthere"), "bob: hi\tthere");
        assert_eq!(
            displayable("esc \u{1b}[31mRED\u{1b}[0m"),
            "esc \\u{1b}[31mRED\\u{1b}[0m"
        );
        assert_eq!(
            displayable("x: hi\n* 127.0.0.1:1 left"),
            "x: hi\n  * 127.0.0.1:1 left"
        );
        assert_eq!(displayable("\u{1b}]0;PWNED\u{7}"), "\\u{1b}]0;PWNED\\u{7}");
        assert_eq!(displayable("a\rb"), "a\\u{d}b");
        assert_eq!(displayable("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(displayable("abc\u{202e}def"), "abc\\u{202e}def");
        assert_eq!(displayable("x\u{2028}* srv"), "x\\u{2028}* srv");
        assert_eq!(displayable("caf\u{e9} \u{1f600}"), "caf\u{e9} \u{1f600}");
    }

    #[test]
    fn a_host_alone_gets_the_tincanchat_port() {
        assert_eq!(with_default_port("localhost"), "localhost:4040");
        assert_eq!(with_default_port("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(with_default_port("::1"), "[::1]:4040");
        assert_eq!(with_default_port("[::1]"), "[::1]:4040");
        assert_eq!(with_default_port("[::1]:9"), "[::1]:9");
    }
}
