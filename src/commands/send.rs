//! `tincan send`: the echo client. Sends a message (or standard input) in any framing over TCP,
//! a Unix socket or UDP, and prints what comes back; with `--framing null` in a terminal it runs
//! the interactive loop of the book's echo client.
//!
//! Clients are not drivers: this is plain blocking I/O on `std::net`, with a timeout on every
//! operation so a silent server cannot hang it.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::error::{Error, Result};
use crate::protocol::framing::{Decoder, Framing};
use crate::tls::client::TlsStream;
use rustls::pki_types::ServerName;
use std::sync::Arc;

/// The largest UDP payload over IPv4 (65,535 minus the IP and UDP headers).
const MAX_DATAGRAM: usize = 65_507;

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  tincan send 127.0.0.1:7007 hello          send, print the echo, exit
  tincan send 127.0.0.1:7007 --framing close < file    send, half-close, read all
  tincan send 127.0.0.1:7007 --framing null             the book's interactive client (q quits)
  tincan send 127.0.0.1:7007 hi --udp       one datagram there and back
  tincan send localhost:7007 hi --tls --tls-ca cert.pem    to `tincan echo --tls-...`")]
pub struct SendArgs {
    /// Where the server listens: HOST:PORT, [V6]:PORT, :PORT (this host), HOST alone for port
    /// 7007 (where `tincan echo` listens by default) or unix:/path.
    #[arg(value_name = "ADDR")]
    pub addr: String,

    /// The message to send. Without it, standard input is sent (one message per line for null
    /// and line framing); with --framing null in a terminal, you are prompted as the book's
    /// client does.
    #[arg(value_name = "MESSAGE")]
    pub message: Option<String>,

    /// How messages are framed: raw, close, null, line, length or fixed:N.
    #[arg(long, default_value = "raw", value_name = "FRAMING")]
    pub framing: Framing,

    /// Send one UDP datagram and print the datagram that comes back.
    #[arg(long)]
    pub udp: bool,

    /// Seconds to wait for connecting and for each read or write.
    #[arg(
        long,
        default_value_t = 10.0,
        value_name = "SECONDS",
        allow_negative_numbers = true
    )]
    pub timeout: f64,

    /// The longest message sent or reply accepted (bytes; K/M suffixes: 4M = 4 MiB).
    #[arg(long, value_name = "SIZE", value_parser = crate::units::size::<usize>,
        default_value = crate::units::show_size(crate::protocol::echo::DEFAULT_MAX_FRAME as u64))]
    pub max_frame: usize,

    /// Open a new connection for each message (null, line, length or fixed framing), as the
    /// book's client does: its servers answer one message per connection.
    #[arg(long)]
    pub connection_per_message: bool,

    /// Run the interactive loop (null framing) even when standard input is not a terminal.
    #[arg(long)]
    pub interactive: bool,

    /// Speak TLS (to `tincan echo --tls-cert ...`), checking the server's certificate
    /// against the name in ADDR.
    #[arg(long)]
    pub tls: bool,

    #[command(flatten)]
    pub tls_trust: crate::flags::ClientTlsArgs,
}

pub fn run(args: SendArgs) -> Result<()> {
    crate::units::seconds("--timeout", args.timeout, false)?;
    if args.max_frame == 0 {
        return Err(Error::Usage("--max-frame must be at least 1 byte".into()));
    }
    if args.connection_per_message && matches!(args.framing, Framing::Raw | Framing::Close) {
        return Err(Error::Usage(format!(
            "--connection-per-message needs message boundaries; --framing {} sends everything \
             as one message already",
            args.framing
        )));
    }
    let target = Target::parse(&args.addr)?;
    let tls = match (&target, args.tls) {
        (_, false) => {
            args.tls_trust.unused("add --tls")?;
            None
        }
        (Target::Unix(_), true) => {
            return Err(Error::Usage(
                "--tls is for HOST:PORT: a unix: socket names no host to check a certificate \
                 against"
                    .into(),
            ))
        }
        (Target::Inet(_), true) if args.udp => {
            return Err(Error::Usage(
                "--udp has no TLS (DTLS is not supported); leave out --tls".into(),
            ))
        }
        (Target::Inet(a), true) => Some((
            args.tls_trust.config(&[])?,
            crate::tls::client::server_name(a)?,
        )),
    };
    let client = Client {
        tls,
        target,
        timeout: Duration::from_secs_f64(args.timeout),
        framing: args.framing,
        max_frame: args.max_frame,
        per_message: args.connection_per_message,
    };
    let interactive = args.message.is_none()
        && (args.interactive || (args.framing == Framing::Null && io::stdin().is_terminal()));
    if interactive {
        if args.framing != Framing::Null {
            return Err(Error::Usage(
                "--interactive is the book's client loop and speaks null framing; add --framing null"
                    .into(),
            ));
        }
        if args.udp {
            return Err(Error::Usage(
                "--interactive works over TCP or Unix sockets, not --udp".into(),
            ));
        }
        return client.interactive(&mut io::stdin().lock(), &mut io::stdout().lock());
    }
    let input = match args.message {
        Some(m) => Input::Message(m.into_bytes()),
        None => {
            let mut v = Vec::new();
            io::stdin()
                .read_to_end(&mut v)
                .map_err(|e| Error::io("could not read standard input", e))?;
            Input::Stdin(v)
        }
    };
    let mut stdout = io::stdout().lock();
    let result = if args.udp {
        client.udp(input, &mut stdout)
    } else {
        client.stream(input, &mut stdout)
    };
    result?;
    match stdout.flush() {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(Error::io("could not write to standard output", e))
        }
        _ => Ok(()),
    }
}

/// Where to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    /// `HOST:PORT` or `[V6]:PORT`, resolved at connect time.
    Inet(String),
    Unix(PathBuf),
}

impl Target {
    fn parse(s: &str) -> Result<Target> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(Error::Usage(
                    "unix: needs a socket path, e.g. unix:/tmp/echo.sock".into(),
                ));
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        // `:7007` is this host; `::1` is an IPv6 address without its brackets and port.
        if let Some(port) = s.strip_prefix(':').filter(|p| !p.contains(':')) {
            return Ok(Target::Inet(format!("127.0.0.1:{port}")));
        }
        // A host alone is the echo service on the port `tincan echo` listens on by default.
        let s = &crate::net::with_default_port(s, super::echo::DEFAULT_PORT);
        if s.rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.is_empty())
        {
            return Err(Error::Usage(format!(
                "'{s}' is not an address; use HOST:PORT, [V6]:PORT or unix:/path"
            )));
        }
        Ok(Target::Inet(s.to_string()))
    }

    fn resolve(&self) -> Result<Vec<SocketAddr>> {
        let Target::Inet(s) = self else {
            return Ok(Vec::new());
        };
        crate::net::resolve_host_port(s).map_err(Error::Client)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Inet(s) => f.write_str(s),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A connected stream socket of either family, or TLS over TCP.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(TlsStream),
}

impl Conn {
    fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
            Conn::Tls(s) => Conn::Tls(s.try_clone()?),
        })
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.shutdown(how),
            Conn::Unix(s) => s.shutdown(how),
            Conn::Tls(s) => s.shutdown(how),
        }
    }

    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        match self {
            Conn::Tls(s) => {
                s.socket().set_read_timeout(Some(t))?;
                s.socket().set_write_timeout(Some(t))
            }
            Conn::Tcp(s) => {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            }
            Conn::Unix(s) => {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            }
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What to send: a MESSAGE argument is one message; standard input is split into lines for the
/// line-oriented framings.
enum Input {
    Message(Vec<u8>),
    Stdin(Vec<u8>),
}

struct Client {
    /// Speak TLS: the configuration, and the name the certificate must carry.
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    target: Target,
    timeout: Duration,
    framing: Framing,
    max_frame: usize,
    /// A connection per message (`--connection-per-message`).
    per_message: bool,
}

impl Client {
    fn connect(&self) -> Result<Conn> {
        let fail = |e: io::Error| {
            Error::Client(format!(
                "could not connect to {}: {}",
                self.target,
                describe(&e)
            ))
        };
        let conn = match &self.target {
            Target::Unix(p) => Conn::Unix(UnixStream::connect(p).map_err(fail)?),
            Target::Inet(_) => {
                let mut last = None;
                let mut conn = None;
                for a in self.target.resolve()? {
                    match TcpStream::connect_timeout(&a, self.timeout) {
                        Ok(s) => {
                            conn = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                match conn {
                    Some(s) => {
                        // Small messages go out at once (an interactive echo is a ping-pong).
                        let _ = s.set_nodelay(true);
                        match &self.tls {
                            None => Conn::Tcp(s),
                            Some((config, name)) => {
                                // The handshake waits no longer than any other read.
                                let timed = s
                                    .set_read_timeout(Some(self.timeout))
                                    .and_then(|()| s.set_write_timeout(Some(self.timeout)));
                                timed.map_err(|e| Error::io("could not set socket timeouts", e))?;
                                let t = TlsStream::connect(s, name.clone(), config);
                                let target = self.target.to_string();
                                Conn::Tls(t.map_err(|e| crate::flags::tls_failure(&target, &e))?)
                            }
                        }
                    }
                    None => {
                        return Err(fail(last.unwrap_or_else(|| {
                            io::Error::new(io::ErrorKind::NotFound, "no address to try")
                        })))
                    }
                }
            }
        };
        conn.set_timeouts(self.timeout)
            .map_err(|e| Error::io("could not set socket timeouts", e))?;
        Ok(conn)
    }

    /// The error a failed read or write becomes.
    fn broken(&self, e: &io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Client(format!(
                "no answer from {} within {} s (--timeout)",
                self.target,
                self.timeout.as_secs_f64()
            )),
            _ => Error::Client(format!(
                "the connection to {} failed: {}",
                self.target,
                describe(e)
            )),
        }
    }

    /// The messages to send, each unframed.
    fn messages(&self, input: Input) -> Result<Vec<Vec<u8>>> {
        let (bytes, from_stdin) = match input {
            Input::Message(m) => (m, false),
            Input::Stdin(v) => (v, true),
        };
        let msgs: Vec<Vec<u8>> = match self.framing {
            Framing::Raw | Framing::Close | Framing::Length => vec![bytes],
            Framing::Fixed(n) => {
                if bytes.is_empty() || bytes.len() % n != 0 {
                    return Err(Error::Usage(format!(
                        "fixed:{n} framing needs a multiple of {n} bytes; got {}",
                        bytes.len()
                    )));
                }
                bytes.chunks(n).map(<[u8]>::to_vec).collect()
            }
            Framing::Null | Framing::Line if from_stdin => {
                let mut lines: Vec<Vec<u8>> =
                    bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
                if lines.last().is_some_and(Vec::is_empty) {
                    lines.pop();
                }
                lines
            }
            Framing::Null | Framing::Line => vec![bytes],
        };
        if let Some(d) = self.framing.delimiter() {
            if msgs.iter().any(|m| m.contains(&d)) {
                let name = if d == 0 { "a NUL byte" } else { "a newline" };
                return Err(Error::Usage(format!(
                    "a message contains {name}, which {} framing uses to end messages",
                    self.framing
                )));
            }
        }
        if let Some(m) = msgs.iter().find(|m| m.len() > self.max_frame) {
            if !matches!(self.framing, Framing::Raw) {
                return Err(Error::Usage(format!(
                    "a {}-byte message is over --max-frame {}; raise --max-frame if the server \
                     accepts longer ones",
                    m.len(),
                    self.max_frame
                )));
            }
        }
        Ok(msgs)
    }

    /// TCP or Unix: send, then print the answers. A writer thread sends while this thread reads,
    /// because an echo server answers while it still receives: writing everything before
    /// reading would fill both socket buffers and stall both ends.
    fn stream(&self, input: Input, out: &mut impl Write) -> Result<()> {
        let msgs = self.messages(input)?;
        if self.per_message {
            return self.one_per_connection(&msgs, out);
        }
        let conn = self.connect()?;
        let mut writer = conn
            .try_clone()
            .map_err(|e| Error::io("could not clone the socket", e))?;
        let framing = self.framing;
        // Stream framings end the message with the half-close (the socket tutorial's client).
        let half_close = matches!(framing, Framing::Raw | Framing::Close);
        let count = msgs.len();
        let sender = std::thread::spawn(move || -> io::Result<()> {
            let mut wire = Vec::new();
            for m in &msgs {
                wire.clear();
                framing.encode(m, &mut wire);
                writer.write_all(&wire)?;
            }
            if half_close {
                writer.shutdown(Shutdown::Write)?;
            }
            Ok(())
        });
        let mut reader = conn;
        // Text messages print one a line; length-prefixed and fixed frames are bytes (length is
        // the binary-safe framing: `send < big.bin > copy.bin`), printed as they are.
        let newline = matches!(framing, Framing::Null | Framing::Line);
        let read = if half_close {
            self.read_to_end(&mut reader, out)
        } else {
            self.read_replies(&mut reader, count, |m| {
                out.write_all(m)?;
                if newline {
                    out.write_all(b"\n")?;
                }
                Ok(())
            })
        };
        let sent = sender
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the sending thread panicked")));
        // A read error says more than the write error it usually causes (a reset server).
        read?;
        sent.map_err(|e| self.broken(&e))?;
        let _ = reader.shutdown(Shutdown::Both);
        Ok(())
    }

    /// Each message on a connection of its own: connect, send, read its one reply, close.
    fn one_per_connection(&self, msgs: &[Vec<u8>], out: &mut impl Write) -> Result<()> {
        let newline = matches!(self.framing, Framing::Null | Framing::Line);
        let mut wire = Vec::new();
        for m in msgs {
            let mut conn = self.connect()?;
            wire.clear();
            self.framing.encode(m, &mut wire);
            conn.write_all(&wire).map_err(|e| self.broken(&e))?;
            self.read_replies(&mut conn, 1, |reply| {
                out.write_all(reply)?;
                if newline {
                    out.write_all(b"\n")?;
                }
                Ok(())
            })?;
            let _ = conn.shutdown(Shutdown::Both);
        }
        Ok(())
    }

    /// Copy everything the server sends until it closes, or (raw framing, whose servers need not
    /// close on a half-close) until it has answered and then stayed quiet for `--timeout`.
    fn read_to_end(&self, conn: &mut Conn, out: &mut impl Write) -> Result<()> {
        let mut buf = vec![0; 64 * 1024];
        let mut answered = false;
        loop {
            match conn.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    answered = true;
                    write_out(out, &buf[..n])?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if answered
                        && self.framing == Framing::Raw
                        && matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                {
                    return Ok(())
                }
                Err(e) => return Err(self.broken(&e)),
            }
        }
    }

    /// Read `count` framed replies, handing each payload to `each`.
    fn read_replies(
        &self,
        conn: &mut Conn,
        count: usize,
        mut each: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<()> {
        let mut decoder = Decoder::new(self.framing, self.max_frame);
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = vec![0; 64 * 1024];
        let mut got = 0;
        while got < count {
            match decoder.decode(&buf) {
                Ok(Some(f)) => {
                    each(&buf[f.payload.clone()])
                        .or_else(ignore_broken_pipe)
                        .map_err(|e| Error::io("could not write to standard output", e))?;
                    buf.drain(..f.consumed);
                    got += 1;
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(Error::Client(format!(
                        "{} answered badly: {e}",
                        self.target
                    )))
                }
            }
            match conn.read(&mut chunk) {
                Ok(0) => {
                    return Err(Error::Client(format!(
                        "{} closed the connection after {got} of {count} replies",
                        self.target
                    )))
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.broken(&e)),
            }
        }
        Ok(())
    }

    /// The book's echo client: a connection per message, `q` quits.
    fn interactive(&self, input: &mut impl BufRead, out: &mut impl Write) -> Result<()> {
        let say = |out: &mut dyn Write, s: &str| -> Result<()> {
            writeln!(out, "{s}")
                .and_then(|()| out.flush())
                .or_else(ignore_broken_pipe)
                .map_err(|e| Error::io("could not write to standard output", e))
        };
        let mut line = String::new();
        loop {
            let mut conn = self.connect()?;
            say(out, &format!("\nConnected to {}", self.target))?;
            say(out, "Type message, enter to send, 'q' to quit")?;
            line.clear();
            let n = input
                .read_line(&mut line)
                .map_err(|e| Error::io("could not read standard input", e))?;
            let msg = line.trim_end_matches(['\n', '\r']);
            if n == 0 || msg == "q" {
                let _ = conn.shutdown(Shutdown::Both);
                say(out, "Closed connection to server\n")?;
                return Ok(());
            }
            let mut wire = Vec::new();
            Framing::Null.encode(msg.as_bytes(), &mut wire);
            conn.write_all(&wire).map_err(|e| self.broken(&e))?;
            say(out, &format!("Sent message: {msg}"))?;
            let mut reply = String::new();
            self.read_replies(&mut conn, 1, |m| {
                reply = String::from_utf8_lossy(m).into_owned();
                Ok(())
            })?;
            say(out, &format!("Received echo: {reply}"))?;
            let _ = conn.shutdown(Shutdown::Both);
            say(out, "Closed connection to server\n")?;
        }
    }

    /// RFC 862 over UDP: one datagram out, one back.
    fn udp(&self, input: Input, out: &mut impl Write) -> Result<()> {
        if let Target::Unix(_) = self.target {
            return Err(Error::Usage(
                "--udp needs HOST:PORT; Unix datagram sockets are not supported".into(),
            ));
        }
        let mut msg = match input {
            Input::Message(m) => m,
            Input::Stdin(mut v) => {
                // `echo hi | tincan send --udp` means the message "hi".
                if self.framing != Framing::Raw && v.last() == Some(&b'\n') {
                    v.pop();
                }
                v
            }
        };
        if self.framing == Framing::Null {
            msg.push(0);
        }
        if msg.len() > MAX_DATAGRAM {
            return Err(Error::Usage(format!(
                "a {}-byte message does not fit in one UDP datagram ({MAX_DATAGRAM} bytes at most)",
                msg.len()
            )));
        }
        let addr = self.target.resolve()?[0];
        let local: SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let io_err = |e: io::Error| Error::io("could not open a UDP socket", e);
        let sock = UdpSocket::bind(local).map_err(io_err)?;
        // Connected, so only the server's answer is accepted and an ICMP "port unreachable"
        // comes back as ECONNREFUSED.
        sock.connect(addr).map_err(io_err)?;
        sock.set_read_timeout(Some(self.timeout)).map_err(io_err)?;
        sock.send(&msg).map_err(|e| self.udp_failed(&e))?;
        let mut buf = vec![0; 65_536];
        let n = loop {
            match sock.recv(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.udp_failed(&e)),
            }
        };
        let mut reply = &buf[..n];
        if self.framing == Framing::Null {
            reply = reply.strip_suffix(b"\0").unwrap_or(reply);
        }
        write_out(out, reply)?;
        if matches!(
            self.framing,
            Framing::Null | Framing::Line | Framing::Length
        ) {
            write_out(out, b"\n")?;
        }
        Ok(())
    }

    fn udp_failed(&self, e: &io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Client(format!(
                "no answer from {} within {} s; datagrams can be lost, and only a server \
                 started with --udp answers them",
                self.target,
                self.timeout.as_secs_f64()
            )),
            _ => Error::Client(format!(
                "could not reach {} over UDP: {}",
                self.target,
                describe(e)
            )),
        }
    }
}

/// Write to standard output; a closed pipe (`| head`) is not an error.
fn write_out(out: &mut impl Write, bytes: &[u8]) -> Result<()> {
    out.write_all(bytes)
        .or_else(ignore_broken_pipe)
        .map_err(|e| Error::io("could not write to standard output", e))
}

fn ignore_broken_pipe(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(e)
    }
}

/// A socket error as the end of a sentence, with a hint where one helps (`talk` uses it too).
pub(crate) fn describe(e: &io::Error) -> String {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused; is the server running?".into(),
        K::NotFound => "no such socket file; is the server running?".into(),
        K::PermissionDenied => "permission denied".into(),
        K::ConnectionReset => "the server reset the connection".into(),
        K::BrokenPipe => "the server closed the connection".into(),
        K::TimedOut | K::WouldBlock => "timed out".into(),
        // "Network is unreachable (os error 101)" → "network is unreachable".
        _ => crate::error::plain(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(framing: Framing) -> Client {
        Client {
            tls: None,
            target: Target::Inet("127.0.0.1:1".into()),
            timeout: Duration::from_secs(1),
            framing,
            max_frame: 8,
            per_message: false,
        }
    }

    #[test]
    fn addresses_parse_as_inet_unix_or_this_host() {
        assert_eq!(
            Target::parse("[::1]:7").unwrap(),
            Target::Inet("[::1]:7".into())
        );
        assert_eq!(
            Target::parse(":7007").unwrap(),
            Target::Inet("127.0.0.1:7007".into())
        );
        assert_eq!(
            Target::parse("unix:/tmp/e.sock").unwrap(),
            Target::Unix("/tmp/e.sock".into())
        );
        // A host alone: the port `tincan echo` listens on.
        for (host, want) in [
            ("localhost", "localhost:7007"),
            ("127.0.0.1", "127.0.0.1:7007"),
            ("::1", "[::1]:7007"),
            ("[::1]", "[::1]:7007"),
        ] {
            assert_eq!(Target::parse(host).unwrap(), Target::Inet(want.into()));
        }
        assert!(crate::commands::echo::DEFAULT_LISTEN
            .ends_with(&format!(":{}", crate::commands::echo::DEFAULT_PORT)));
        for bad in ["unix:", "host:", ""] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stdin_is_one_message_per_line_for_line_oriented_framings() {
        let m = client(Framing::Null)
            .messages(Input::Stdin(b"a\nbc\n".to_vec()))
            .unwrap();
        assert_eq!(m, vec![b"a".to_vec(), b"bc".to_vec()]);
        let m = client(Framing::Length)
            .messages(Input::Stdin(b"a\nbc\n".to_vec()))
            .unwrap();
        assert_eq!(m, vec![b"a\nbc\n".to_vec()]);
    }

    #[test]
    fn messages_that_cannot_be_framed_are_refused_before_connecting() {
        let c = client(Framing::Line);
        assert!(c.messages(Input::Message(b"a\nb".to_vec())).is_err());
        assert!(c.messages(Input::Message(vec![b'x'; 9])).is_err());
        let f = client(Framing::Fixed(3));
        assert!(f.messages(Input::Message(b"abcd".to_vec())).is_err());
        assert_eq!(
            f.messages(Input::Message(b"abcdef".to_vec()))
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn socket_errors_read_as_the_end_of_a_sentence() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            describe(&refused),
            "connection refused; is the server running?"
        );
        assert_eq!(
            describe(&io::Error::from_raw_os_error(libc::ENETUNREACH)),
            "network is unreachable"
        );
    }
}
