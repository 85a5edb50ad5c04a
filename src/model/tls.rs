//! TLS between the socket and the session: the connection's bytes pass through a rustls
//! `ServerConnection` on their way in and out, so sessions see plaintext and every service runs
//! over TLS under every model. rustls is sans-I/O; this module is the I/O around it.
//!
//! - In: a read of up to 16 KiB from the socket is handed to rustls record by record, and every
//!   byte of plaintext it yields goes at once into the session's [`ReadBuf`]. rustls never keeps
//!   plaintext back, so nothing waits where a level-triggered poller cannot see it.
//! - Out: the outbox's byte chunks and file regions are encrypted a piece at a time
//!   ([`PIECE`], one TLS record) and written with the socket's `send`; a file region is read
//!   with `pread` into a 16 KiB buffer on the stack, never whole. rustls holds at most its
//!   64 KiB of ciphertext ([`BATCH`]) per connection. The per-turn share of [`super::io`]
//!   holds here too.
//! - Kernel TLS ([`kernel`], on unless `--kernel-tls off`): the first time a file region is
//!   to be sent, the record layer moves into the kernel where it offers TLS, and from then on
//!   file regions leave with `sendfile` and plaintext with `writev`/`recvmsg`, as on a plain
//!   connection. Where the kernel has no TLS (these machines: `CONFIG_TLS` is not set) one
//!   refusal per process is remembered and rustls carries every byte as above. Either way the
//!   same bytes arrive. `scripts/ktls-vm` runs the kernel path on a kernel that has TLS.

use std::io::{self, IoSlice, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use socket2::Socket;

use super::io::{Cork, Flushed, ReadOutcome};
use crate::protocol::{Chunk, Outbox, ReadBuf};

pub(crate) mod kernel;

use kernel::{Attached, Framing, KernelTls, Suite};

/// Plaintext encrypted in one step: one full TLS record (RFC 8446 §5.1: at most 2^14 bytes).
const PIECE: usize = 16 * 1024;

/// Plaintext encrypted before the ciphertext is written: four records, which fit rustls's
/// default 64 KiB send buffer, so that a large body leaves in one `writev` per 64 KiB.
const BATCH: usize = 4 * PIECE;

/// Bytes read from the socket in one call.
const READ_CHUNK: usize = 16 * 1024;

/// Socket reads per call to [`TlsLayer::read_into`] that yield no plaintext (a handshake in
/// several packets) before the other connections get a turn.
const HANDSHAKE_READS: usize = 16;

/// The first byte of a TLS record that carries a ClientHello (RFC 8446 §5.1, `handshake(22)`).
const HANDSHAKE_RECORD: u8 = 22;

/// The ALPN protocol of ACME TLS-ALPN-01 validation handshakes (RFC 8737 §6.2). A connection
/// that agrees on it is closed once the handshake is through: it carries no application data
/// (§3), and the session never sees it.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// What a server's TLS listeners use: the rustls configuration (certificates, versions,
/// ALPN, session resumption) and the service's answer to plaintext on a TLS port.
#[derive(Clone)]
pub struct TlsSettings {
    pub config: Arc<rustls::ServerConfig>,
    /// The configuration for a client whose ClientHello offers a session to resume: the same
    /// but for the number of session tickets (see `crate::tls::TICKETS_RESUMED`). rustls sends
    /// one number of tickets whether or not it resumed, so the choice is made here, before
    /// rustls sees the hello.
    pub resumed: Arc<rustls::ServerConfig>,
    /// Sent as is, before closing, to a client whose first byte is a letter rather than a TLS
    /// record (an HTTP request on an HTTPS port: nginx's 400 "The plain HTTP request was sent
    /// to HTTPS port"). `None`: such a client is closed at once.
    pub plain_reply: Option<bytes::Bytes>,
    /// Listeners that speak no TLS (`serve --redirect-http`, which sends plain clients to
    /// https): connections accepted on them skip this layer.
    pub plain: Vec<std::net::SocketAddr>,
    /// Reread every certificate and key (on SIGHUP): `Ok(n)`, the `n` certificates now
    /// served; `Err(why)`, one line, and the old ones stay.
    pub reload: Option<Reload>,
    /// Work that keeps the certificates fresh (the ACME client), started once per server with
    /// the way to make its new certificates serve: the reload itself, or under prefork a
    /// SIGHUP to the supervisor, which rereads and passes it on. `Err`: one line, why it could
    /// not start.
    pub background: Option<Background>,
}

/// See [`TlsSettings::reload`].
pub type Reload = Arc<dyn Fn() -> Result<usize, String> + Send + Sync>;

/// See [`TlsSettings::background`].
pub type Background = Arc<dyn Fn(Reload) -> Result<(), String> + Send + Sync>;

impl TlsSettings {
    /// The settings for a connection accepted as `peer`: `None` on a plain listener.
    pub fn for_peer(&self, peer: &crate::protocol::Peer) -> Option<&TlsSettings> {
        (!peer.accepted_on(&self.plain)).then_some(self)
    }
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("alpn", &self.config.alpn_protocols)
            .field("plain_reply", &self.plain_reply.is_some())
            .field("plain", &self.plain)
            .field("reload", &self.reload.is_some())
            .field("background", &self.background.is_some())
            .finish()
    }
}

/// What a read produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TlsRead {
    Io(ReadOutcome),
    /// The client's first byte is not a TLS handshake record; `letter`: it is an ASCII letter
    /// (a plaintext protocol, HTTP most likely).
    NotTls {
        letter: bool,
    },
}

/// One connection's TLS state.
pub(crate) struct TlsLayer {
    engine: Engine,
    /// Nothing has arrived yet: the first byte is looked at before rustls sees it.
    fresh: bool,
    /// `close_notify` is queued (RFC 8446 §6.1).
    notified: bool,
    plain_reply: Option<bytes::Bytes>,
    /// The ALPN choice has been handed to the session.
    alpn_told: bool,
    /// The record framing of the bytes rustls has taken: the kernel may take over only
    /// between records.
    framing: Framing,
    /// Kernel TLS may still be tried on this connection (the configuration lets rustls give
    /// its keys out, and no try has been declined yet).
    kernel_wanted: bool,
    /// What serves a client that offers a session ([`TlsSettings::resumed`]), until the
    /// first bytes show whether this one does.
    resumed: Option<Arc<rustls::ServerConfig>>,
}

/// Who encrypts and decrypts the connection's records.
// The rustls variant is the large one and the usual one; the layer is boxed as a whole.
#[allow(clippy::large_enum_variant)]
enum Engine {
    Rustls(rustls::ServerConnection),
    Kernel(KernelTls),
    /// Between the two, and after the kernel refused the keys rustls gave away: the
    /// connection is being closed.
    Gone,
}

impl TlsLayer {
    pub fn new(settings: &TlsSettings) -> Result<TlsLayer, rustls::Error> {
        Ok(TlsLayer {
            engine: Engine::Rustls(rustls::ServerConnection::new(Arc::clone(&settings.config))?),
            fresh: true,
            notified: false,
            plain_reply: settings.plain_reply.clone(),
            alpn_told: false,
            framing: Framing::default(),
            kernel_wanted: settings.config.enable_secret_extraction,
            resumed: (!Arc::ptr_eq(&settings.config, &settings.resumed))
                .then(|| Arc::clone(&settings.resumed)),
        })
    }

    /// The rustls connection, while rustls has the records.
    fn rustls(&self) -> Option<&rustls::ServerConnection> {
        match &self.engine {
            Engine::Rustls(c) => Some(c),
            _ => None,
        }
    }

    /// The protocol ALPN chose, once, after the handshake (the session is told before it sees
    /// any plaintext); `None` before, after, or when none was agreed.
    pub fn alpn_once(&mut self) -> Option<Vec<u8>> {
        let conn = self.rustls()?;
        if self.alpn_told || conn.is_handshaking() {
            return None;
        }
        let proto = conn.alpn_protocol().map(<[u8]>::to_vec);
        self.alpn_told = true;
        proto
    }

    /// The answer to a plaintext client, if the service has one.
    pub fn plain_reply(&self) -> Option<bytes::Bytes> {
        self.plain_reply.clone()
    }

    /// Nothing has arrived yet: the client's first flight (its ClientHello, whose answer
    /// costs the handshake's key exchange and signature) is still to be read.
    pub fn awaiting_hello(&self) -> bool {
        self.fresh
    }

    /// The handshake is not done: no application data can go out yet.
    pub fn handshaking(&self) -> bool {
        self.rustls().is_some_and(|c| c.is_handshaking())
    }

    /// Ciphertext waits for the socket: rustls's (handshake messages, records, an alert), or
    /// under kernel TLS the `close_notify` alert.
    pub fn wants_write(&self) -> bool {
        match &self.engine {
            Engine::Rustls(c) => c.wants_write(),
            Engine::Kernel(k) => k.wants_write(),
            Engine::Gone => false,
        }
    }

    /// Queue `close_notify` once, before the write side is shut.
    pub fn notify_close(&mut self) -> bool {
        if self.notified {
            return false;
        }
        self.notified = true;
        match &mut self.engine {
            Engine::Rustls(c) => c.send_close_notify(),
            Engine::Kernel(k) => k.notify_close(),
            Engine::Gone => return false,
        }
        true
    }

    /// Read from the socket until plaintext arrives (appended to `input`), the socket is empty,
    /// or the peer has closed. A TLS error (a garbage handshake, a bad record) is an error for
    /// this connection only; rustls's alert is sent on the way out.
    pub fn read_into(&mut self, sock: &Socket, input: &mut ReadBuf) -> io::Result<TlsRead> {
        match &mut self.engine {
            Engine::Rustls(_) => {}
            Engine::Kernel(k) => return k.read_into(sock, input).map(TlsRead::Io),
            Engine::Gone => return Err(gone()),
        }
        let mut buf = [0u8; READ_CHUNK];
        for _ in 0..HANDSHAKE_READS {
            let n = match (&*sock).read(&mut buf) {
                Ok(0) => return Ok(TlsRead::Io(ReadOutcome::Eof)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(TlsRead::Io(ReadOutcome::WouldBlock))
                }
                Err(e) => return Err(e),
            };
            if self.fresh {
                self.fresh = false;
                if buf[0] != HANDSHAKE_RECORD {
                    return Ok(TlsRead::NotTls {
                        letter: buf[0].is_ascii_alphabetic(),
                    });
                }
                if let Some(resumed) = self.resumed.take() {
                    if offers_session(&buf[..n]) {
                        self.engine = Engine::Rustls(
                            rustls::ServerConnection::new(resumed).map_err(io::Error::other)?,
                        );
                    }
                }
            }
            let (got, closed) = self.take_records(sock, &buf[..n], input)?;
            if closed && got == 0 {
                return Ok(TlsRead::Io(ReadOutcome::Eof));
            }
            if got > 0 {
                return Ok(TlsRead::Io(ReadOutcome::Data {
                    n: got,
                    drained: n < READ_CHUNK,
                }));
            }
        }
        // A handshake still arriving: the poller reports the rest.
        Ok(TlsRead::Io(ReadOutcome::WouldBlock))
    }

    /// Give rustls `bytes` and move the plaintext they carry into `input`. Returns the
    /// plaintext bytes added, and whether the peer sent `close_notify`.
    fn take_records(
        &mut self,
        sock: &Socket,
        mut bytes: &[u8],
        input: &mut ReadBuf,
    ) -> io::Result<(usize, bool)> {
        let Engine::Rustls(conn) = &mut self.engine else {
            return Err(gone());
        };
        let (mut got, mut closed) = (0, false);
        while !bytes.is_empty() {
            // `&[u8]` as `Read` advances the slice past what rustls took.
            let before = bytes;
            let took = conn.read_tls(&mut bytes)?;
            if took == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a TLS record larger than rustls accepts",
                ));
            }
            self.framing.feed(&before[..took]);
            if let Err(e) = conn.process_new_packets() {
                // rustls queued an alert saying why; send it, best effort.
                let _ = conn.write_tls(&mut SendTo(sock));
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            loop {
                let spare = input.spare(PIECE);
                match conn.reader().read(spare) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(k) => {
                        input.commit(k);
                        got += k;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        closed = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok((got, closed))
    }

    /// Encrypt and send as much of `out` as the socket takes now, at most about `turn` bytes
    /// of plaintext. Nothing of `out` goes before the handshake is done; rustls's own output
    /// (handshake, alerts, `close_notify`) always goes first. `cork` is the socket's, for
    /// file regions sent under kernel TLS; `closing`: the connection closes once `out` is
    /// sent.
    pub fn flush(
        &mut self,
        sock: &Socket,
        out: &mut Outbox,
        turn: usize,
        cork: &mut Cork,
        closing: bool,
    ) -> io::Result<Flushed> {
        let mut done = Flushed::default();
        let mut fed = 0usize;
        let mut encrypted_first = false;
        loop {
            let conn = match &mut self.engine {
                Engine::Rustls(c) => c,
                Engine::Kernel(k) => {
                    let more = k.flush(sock, out, turn.saturating_sub(fed).max(1), cork)?;
                    done.wrote += more.wrote;
                    done.calls += more.calls;
                    done.paused = more.paused;
                    return Ok(done);
                }
                Engine::Gone => return Err(gone()),
            };
            // Plaintext that can go now is encrypted behind what rustls already holds (the
            // TLS 1.3 session tickets, say) before anything is written: one send carries both.
            let more = !out.is_empty()
                && !conn.is_handshaking()
                && fed < turn
                && !matches!(out.front(), Some(Chunk::File { .. }));
            if more && !encrypted_first {
                encrypted_first = true;
                fed += self.encrypt_batch(out, closing)?;
                continue;
            }
            while conn.wants_write() {
                match conn.write_tls(&mut SendTo(sock)) {
                    Ok(n) => {
                        done.wrote += n;
                        done.calls += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        done.paused = true;
                        return Ok(done);
                    }
                    Err(e) => return Err(e),
                }
            }
            if out.is_empty() {
                return Ok(done);
            }
            if conn.is_handshaking() || fed >= turn {
                // The poller says when to go on: readable for the handshake, writable else.
                done.paused = true;
                return Ok(done);
            }
            // A file region is what the kernel would carry better (sendfile, no copy into
            // user space): the first one to go is when the kernel is asked to take over.
            if matches!(out.front(), Some(Chunk::File { .. })) && self.hand_to_kernel(sock)? {
                continue;
            }
            fed += self.encrypt_batch(out, closing)?;
        }
    }

    /// Encrypt up to [`BATCH`] bytes of `out`'s plaintext into rustls's send buffer; how many.
    /// `closing`: the connection closes once `out` is sent, so when this empties it the
    /// `close_notify` is queued behind it, to leave in the same send.
    fn encrypt_batch(&mut self, out: &mut Outbox, closing: bool) -> io::Result<usize> {
        let mut batch = 0;
        while batch < BATCH && !out.is_empty() {
            let n = self.encrypt_piece(out)?;
            if n == 0 {
                break;
            }
            out.advance(n);
            batch += n;
        }
        if closing && out.is_empty() {
            self.notify_close();
        }
        Ok(batch)
    }

    /// rustls's state lets the kernel take the records over now: the handshake is done and
    /// the session told its ALPN, rustls holds no ciphertext to send (the TLS 1.3 session
    /// tickets are out), the bytes it took end on a record boundary (so it holds none
    /// received), and no `close_notify` is queued.
    fn kernel_ready(&self) -> bool {
        self.rustls().is_some_and(|c| {
            !c.is_handshaking()
                && !c.wants_write()
                && self.alpn_told
                && !self.notified
                && self.framing.at_boundary()
        })
    }

    /// Hand the record layer to the kernel if it can take it now: rustls holds no ciphertext
    /// to send (the TLS 1.3 session tickets are out) and none received, the suite is one the
    /// kernel has, and this process has not learnt that the kernel lacks TLS. `Ok(true)`: the
    /// kernel has it; `Ok(false)`: rustls goes on; `Err`: the kernel refused keys rustls had
    /// already given away, and the connection must close.
    fn hand_to_kernel(&mut self, sock: &Socket) -> io::Result<bool> {
        if !self.kernel_wanted || !self.kernel_ready() {
            return Ok(false);
        }
        let Some(suite) = self
            .rustls()
            .and_then(|c| c.negotiated_cipher_suite())
            .and_then(Suite::of)
        else {
            self.kernel_wanted = false;
            return Ok(false);
        };
        if !suite.worth_trying() {
            self.kernel_wanted = false;
            return Ok(false);
        }
        let Engine::Rustls(conn) = std::mem::replace(&mut self.engine, Engine::Gone) else {
            return Ok(false);
        };
        match kernel::attach(sock, conn, suite) {
            Attached::Kernel(k) => {
                self.engine = Engine::Kernel(k);
                Ok(true)
            }
            Attached::Declined(conn) => {
                self.engine = Engine::Rustls(*conn);
                self.kernel_wanted = false;
                Ok(false)
            }
            Attached::Broken(e) => Err(e),
        }
    }

    /// Encrypt the next piece of `out` (at most [`PIECE`] bytes); returns the bytes taken.
    fn encrypt_piece(&mut self, out: &Outbox) -> io::Result<usize> {
        let Engine::Rustls(conn) = &mut self.engine else {
            return Err(gone());
        };
        match out.front() {
            Some(Chunk::File { file, offset, len }) => {
                let want = usize::try_from(*len).unwrap_or(usize::MAX).min(PIECE);
                let mut buf = [0u8; PIECE];
                let n = loop {
                    match file.read_at(&mut buf[..want], *offset) {
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the file shrank while it was being sent",
                            ))
                        }
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                };
                conn.writer().write(&buf[..n])
            }
            _ => {
                let mut bufs = [IoSlice::new(&[]); 16];
                let (mut k, mut total) = (0, 0);
                for c in out.chunks() {
                    let Some(b) = c.unsent() else { break };
                    if k == bufs.len() || total >= PIECE {
                        break;
                    }
                    let b = &b[..b.len().min(PIECE - total)];
                    bufs[k] = IoSlice::new(b);
                    total += b.len();
                    k += 1;
                }
                conn.writer().write_vectored(&bufs[..k])
            }
        }
    }
}

/// Whether `first`, a client's first bytes, hold a ClientHello that offers a session to
/// resume: one with a `pre_shared_key` extension (RFC 8446 §4.2.11). A hello cut short, split
/// over records, or malformed counts as offering none; rustls judges it either way.
fn offers_session(first: &[u8]) -> bool {
    const CLIENT_HELLO: usize = 1;
    const PRE_SHARED_KEY: usize = 41;
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = b.split_at_checked(n)?;
        *b = rest;
        Some(head)
    }
    fn number(b: &mut &[u8], width: usize) -> Option<usize> {
        Some(
            take(b, width)?
                .iter()
                .fold(0, |n, &x| n << 8 | usize::from(x)),
        )
    }
    /// A vector with a `width`-byte length in front (RFC 8446 §3.4).
    fn vector<'a>(b: &mut &'a [u8], width: usize) -> Option<&'a [u8]> {
        let len = number(b, width)?;
        take(b, len)
    }
    let offers = || -> Option<bool> {
        let mut b = first;
        take(&mut b, 3)?; // content type, legacy record version
        let mut record = vector(&mut b, 2)?;
        if number(&mut record, 1)? != CLIENT_HELLO {
            return Some(false);
        }
        let mut hello = vector(&mut record, 3)?;
        take(&mut hello, 2 + 32)?; // legacy version, random
        vector(&mut hello, 1)?; // legacy session id
        vector(&mut hello, 2)?; // cipher suites
        vector(&mut hello, 1)?; // compression methods
        let mut extensions = vector(&mut hello, 2)?;
        while !extensions.is_empty() {
            let kind = number(&mut extensions, 2)?;
            vector(&mut extensions, 2)?;
            if kind == PRE_SHARED_KEY {
                return Some(true);
            }
        }
        Some(false)
    };
    offers().unwrap_or(false)
}

/// The error of a connection whose keys were given to a kernel that then refused them.
fn gone() -> io::Error {
    io::Error::other("the connection's TLS keys are gone")
}

/// The socket as rustls's output: `send` with `MSG_NOSIGNAL`, so a peer gone away is an
/// `EPIPE` for this connection and never a `SIGPIPE` for the process.
struct SendTo<'a>(&'a Socket);

impl Write for SendTo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send_with_flags(buf, libc::MSG_NOSIGNAL)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
