//! `tincan talk`: the interactive tincanchat client (the book's chat client). One thread prints
//! whatever the server sends, one per line, as it arrives; the main thread sends each line typed
//! as a NUL-terminated message. `q` (or the end of input) quits with a shutdown of both
//! directions, as the book's client does. Plain blocking `std::net` I/O: clients are not drivers.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
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
    pub tls_trust: crate::flags::ClientTlsArgs,
}

/// `HOST` → `HOST:4040` (see [`crate::net::with_default_port`]).
pub fn with_default_port(addr: &str) -> String {
    crate::net::with_default_port(addr, DEFAULT_PORT)
}

/// The longest line the editor holds; keys past it are not taken (the room's own limit,
/// `tincan chat --max-message`, is 64 KiB by default).
pub const MAX_TYPED: usize = 64 * 1024;

/// What `/help` prints, here: it is not sent to the room.
const HELP: &[&str] = &[
    "  /nick NAME   be known as NAME in the room",
    "  /who         list who is connected",
    "  /help        this list (answered here, not sent)",
    "  q, Ctrl-D    quit (Ctrl-C too)",
    "  Anything else is a message to everyone, you included.",
];

/// The prompt before the line being typed, in a terminal.
const PROMPT: &str = "> ";

/// What a key did to the line being typed.
#[derive(Debug, PartialEq, Eq)]
enum Key {
    /// The line changed: draw it again.
    Edited,
    /// Enter: the line, to send (the editor is empty again).
    Enter(String),
    Quit,
    /// Nothing to show (an arrow key, a control key with no meaning here).
    Nothing,
}

/// Where the editor is in an escape sequence (arrow keys and the like send `ESC [ ... X`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Escape {
    #[default]
    No,
    Started,
    Csi,
}

/// The line being typed in a terminal, edited key by key (the terminal echoes nothing).
#[derive(Debug, Default)]
struct LineEditor {
    typed: Vec<u8>,
    escape: Escape,
}

impl LineEditor {
    fn key(&mut self, b: u8) -> Key {
        match self.escape {
            Escape::Started => {
                self.escape = if b == b'[' || b == b'O' {
                    Escape::Csi
                } else {
                    Escape::No
                };
                return Key::Nothing;
            }
            // ECMA-48: a control sequence ends at a byte from 0x40 to 0x7E.
            Escape::Csi => {
                if (0x40..=0x7e).contains(&b) {
                    self.escape = Escape::No;
                }
                return Key::Nothing;
            }
            Escape::No => {}
        }
        match b {
            b'\r' | b'\n' => {
                let line = String::from_utf8_lossy(&self.typed).into_owned();
                self.typed.clear();
                Key::Enter(line)
            }
            0x03 => Key::Quit,
            0x04 if self.typed.is_empty() => Key::Quit,
            // Backspace (DEL, or ^H): one character, all its UTF-8 bytes.
            0x7f | 0x08 => {
                while self.typed.pop().is_some_and(|b| b & 0xc0 == 0x80) {}
                Key::Edited
            }
            // ^U: the whole line; ^W: the last word.
            0x15 => {
                self.typed.clear();
                Key::Edited
            }
            0x17 => {
                while self.typed.last() == Some(&b' ') {
                    self.typed.pop();
                }
                while self.typed.last().is_some_and(|&b| b != b' ') {
                    self.typed.pop();
                }
                Key::Edited
            }
            0x1b => {
                self.escape = Escape::Started;
                Key::Nothing
            }
            b if b < 0x20 => Key::Nothing,
            _ if self.typed.len() >= MAX_TYPED => Key::Nothing,
            b => {
                self.typed.push(b);
                Key::Edited
            }
        }
    }
}

/// What `talk` shows: messages as they arrive and, in a terminal, below them the line being
/// typed, drawn again after every message so that nothing that arrives cuts into it.
#[derive(Debug)]
struct Screen {
    /// In a terminal the keys arrive one at a time and the line is drawn here; otherwise
    /// lines are read whole and nothing is drawn.
    editor: Option<LineEditor>,
}

impl Screen {
    /// Print `lines` above the line being typed.
    fn print(&self, lines: &[String]) {
        let mut out = std::io::stdout().lock();
        if self.editor.is_some() {
            let _ = out.write_all(b"\r\x1b[K");
        }
        for l in lines {
            let _ = writeln!(out, "{l}");
        }
        self.draw(&mut out);
    }

    /// The prompt and the line being typed, on the bottom line.
    fn draw(&self, out: &mut impl Write) {
        if let Some(e) = &self.editor {
            let typed = displayable(&String::from_utf8_lossy(&e.typed));
            let _ = write!(out, "\r\x1b[K{PROMPT}{typed}");
        }
        let _ = out.flush();
    }

    /// Take the line off the screen before quitting, so the shell's prompt starts clean.
    fn clear(&self) {
        if self.editor.is_some() {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(b"\r\x1b[K");
            let _ = out.flush();
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
    let wait = crate::units::seconds("--wait", args.wait, true)?;
    let connect_timeout = crate::units::seconds("--connect-timeout", args.connect_timeout, false)?;
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
                .map_err(|e| crate::flags::tls_failure(&target, &e))?;
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
        eprintln!(
            "Connected to {shown}. Type messages, enter to send; /help for commands, 'q' to quit."
        );
    }
    // In a terminal the keys come one at a time, unechoed, to the line editor; the terminal's
    // settings come back when this guard goes, however `run` ends.
    let keys = interactive
        .then(|| crate::sys::KeyByKey::new(std::io::stdin().as_fd()).ok())
        .flatten();
    let screen = Arc::new(Mutex::new(Screen {
        editor: keys.is_some().then(LineEditor::default),
    }));
    let say = |lines: &[String]| {
        if let Ok(s) = screen.lock() {
            s.print(lines);
        }
    };
    say(&[]);

    let quitting = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Event>();

    let reader = {
        let quitting = quitting.clone();
        let tx = tx.clone();
        let screen = screen.clone();
        std::thread::spawn(move || {
            let why = print_incoming(incoming, &screen);
            if !quitting.load(Ordering::SeqCst) {
                let _ = tx.send(Event::Lost(why));
            }
        })
    };

    // Standard input is read on its own thread so that a lost server is noticed (and reported)
    // even while nobody is typing. The thread is left blocked in read at exit; that is harmless.
    if keys.is_some() {
        let tx = tx.clone();
        let screen = screen.clone();
        std::thread::spawn(move || read_keys(&screen, &tx));
    } else {
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
            Ok(Event::Line(line)) if line.trim() == "/help" => {
                say(&HELP.iter().map(|l| l.to_string()).collect::<Vec<_>>());
            }
            Ok(Event::Line(line)) => {
                if line.is_empty() {
                    continue;
                }
                if line.contains('\0') {
                    say(&["tincan: not sent: a message cannot contain a NUL character".into()]);
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
    if let Ok(s) = screen.lock() {
        s.clear();
    }
    drop(keys);
    Ok(())
}

/// Feed the keys typed in a terminal to the line editor, drawing the line after each edit; a
/// finished line goes to the main thread and leaves the screen (the room's echo of it, with the
/// name the room knows, is what stays), so it is not shown twice.
fn read_keys(screen: &Mutex<Screen>, tx: &mpsc::Sender<Event>) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 256];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => 0,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        if n == 0 {
            let _ = tx.send(Event::InputEnd);
            return;
        }
        let Ok(mut s) = screen.lock() else { return };
        for &b in &buf[..n] {
            let Some(editor) = s.editor.as_mut() else {
                return;
            };
            match editor.key(b) {
                Key::Nothing => {}
                Key::Edited => s.draw(&mut std::io::stdout().lock()),
                Key::Enter(line) => {
                    s.draw(&mut std::io::stdout().lock());
                    if !line.is_empty() && tx.send(Event::Line(line)).is_err() {
                        return;
                    }
                }
                Key::Quit => {
                    let _ = tx.send(Event::InputEnd);
                    return;
                }
            }
        }
    }
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
fn print_incoming(mut stream: Box<dyn Read + Send>, screen: &Mutex<Screen>) -> String {
    let mut data: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut lines = Vec::new();
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => return "the server closed the connection".into(),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return describe(&e),
        };
        data.extend_from_slice(&chunk[..n]);
        // Like the book's recv_msgs: every complete message is printed, the rest is kept.
        let mut start = 0;
        lines.clear();
        while let Some(i) = data[start..].iter().position(|&b| b == 0) {
            let msg = String::from_utf8_lossy(&data[start..start + i]);
            lines.push(displayable(&msg));
            start += i + 1;
        }
        if !lines.is_empty() {
            if let Ok(s) = screen.lock() {
                s.print(&lines);
            }
        }
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
    fn the_line_editor_takes_keys_as_a_terminal_sends_them() {
        let mut e = LineEditor::default();
        let mut feed = |bytes: &[u8]| -> Vec<Key> { bytes.iter().map(|&b| e.key(b)).collect() };
        feed(b"hell");
        // An arrow key (ESC [ D) changes nothing; backspace takes one character, é whole.
        assert_eq!(feed(b"\x1b[D"), [Key::Nothing, Key::Nothing, Key::Nothing]);
        feed("o caf\u{e9}".as_bytes());
        assert_eq!(feed(b"\x7f"), [Key::Edited]);
        assert_eq!(feed(b"\r"), [Key::Enter("hello caf".into())]);
        // ^W takes the last word, ^U the line; control keys with no meaning are ignored.
        feed(b"one two  \x17\x01");
        assert_eq!(feed(b"\n"), [Key::Enter("one ".into())]);
        feed(b"gone\x15");
        assert_eq!(feed(b"\r"), [Key::Enter(String::new())]);
        // Ctrl-D quits on an empty line only; Ctrl-C always.
        assert_eq!(feed(b"x\x04"), [Key::Edited, Key::Nothing]);
        assert_eq!(feed(b"\x03"), [Key::Quit]);
        let mut e = LineEditor::default();
        assert_eq!(e.key(0x04), Key::Quit);
        // The line has a ceiling.
        let mut e = LineEditor::default();
        for _ in 0..MAX_TYPED + 10 {
            e.key(b'a');
        }
        assert_eq!(e.typed.len(), MAX_TYPED);
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
