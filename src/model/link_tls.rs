//! TLS on an outbound link (an `https://` upstream): the link's socket with a rustls
//! `ClientConnection` over it, read and written like the bare socket, so the link code, the
//! idle pools and the pollers see one descriptor either way. rustls is sans-I/O; this is the
//! I/O around it, as [`super::tls`] is for the client side of the server.
//!
//! - Reads drain ciphertext into rustls and hand out plaintext; a read that yields none (a
//!   handshake message, a session ticket) reports `WouldBlock`, as a socket with nothing to
//!   read does. Handshake answers are written at once.
//! - Writes flush rustls's ciphertext first, then hand it plaintext: a request written before
//!   the handshake is through waits in rustls (at most its 64 KiB buffer), and a slow
//!   upstream bounds what waits here as its TCP window bounds a plain link.
//! - An upstream that closes without `close_notify` ends the stream as a close does: HTTP
//!   framing, not TLS, says whether the answer was whole.
//! - A certificate the upstream cannot prove (untrusted, expired, for another name) fails the
//!   first read with rustls's reason, which the proxy answers with 502 and logs.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;

use rustls::ClientConnection;

use crate::protocol::UpstreamTls;

/// A link's socket, with TLS over it for an https upstream.
pub(crate) struct Stream {
    sock: File,
    tls: Option<Box<ClientConnection>>,
}

impl Stream {
    pub fn plain(sock: File) -> Stream {
        Stream { sock, tls: None }
    }

    /// A client handshake with `tls.name` starts (its first flight goes out on the first
    /// write or read).
    pub fn tls(sock: File, tls: &UpstreamTls) -> io::Result<Stream> {
        let conn = ClientConnection::new(Arc::clone(&tls.config), tls.name.clone())
            .map_err(io::Error::other)?;
        Ok(Stream {
            sock,
            tls: Some(Box::new(conn)),
        })
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// rustls holds ciphertext the socket has not taken yet.
    pub fn tls_pending(&self) -> bool {
        self.tls.as_ref().is_some_and(|c| c.wants_write())
    }

    /// Should the link be watched for writability, `queued` saying whether plaintext waits?
    /// While a handshake runs, queued plaintext cannot leave: only rustls's own flight can.
    pub fn wants_write(&self, queued: bool) -> bool {
        match &self.tls {
            None => queued,
            Some(c) => c.wants_write() || (queued && !c.is_handshaking()),
        }
    }

    /// Write what rustls holds until the socket takes no more.
    fn flush_tls(&mut self) -> io::Result<()> {
        let Some(c) = self.tls.as_mut() else {
            return Ok(());
        };
        while c.wants_write() {
            match c.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The end of what this side sends: `close_notify` under TLS (RFC 8446 §6.1), written as
    /// far as the socket takes it. True if the socket may be shut for writing too (plain, or
    /// nothing left in rustls).
    pub fn finish(&mut self) -> bool {
        let Some(c) = self.tls.as_mut() else {
            return true;
        };
        c.send_close_notify();
        let _ = self.flush_tls();
        !self.tls_pending()
    }
}

/// Why a TLS upstream was refused, as the end of the proxy's log line.
fn refusal(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => {
            let why = match c {
                C::UnknownIssuer => "is signed by no CA trusted for upstreams".to_string(),
                C::Expired | C::ExpiredContext { .. } => "has expired".to_string(),
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    "is not for the host the upstream URL names".to_string()
                }
                other => format!("is refused ({other:?})"),
            };
            format!("TLS: the upstream's certificate {why}")
        }
        other => format!("TLS: {other}"),
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tls.is_none() {
            return self.sock.read(buf);
        }
        loop {
            let c = self.tls.as_mut().expect("checked above");
            match c.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Closed without close_notify: the end, as for a plain socket (see the module).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            let got = c.read_tls(&mut self.sock)?;
            if let Err(e) = c.process_new_packets() {
                // Tell the upstream why (the alert rustls queued), then fail the link.
                let _ = self.flush_tls();
                return Err(io::Error::new(io::ErrorKind::InvalidData, refusal(&e)));
            }
            self.flush_tls()?;
            if got == 0 {
                // The socket ended: the reader now says how (0 after close_notify, else
                // UnexpectedEof), never WouldBlock.
                let c = self.tls.as_mut().expect("checked above");
                return match c.reader().read(buf) {
                    Ok(n) => Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                    Err(e) => Err(e),
                };
            }
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.tls.is_none() {
            return self.sock.write_vectored(bufs);
        }
        self.flush_tls()?;
        if self.tls_pending() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let c = self.tls.as_mut().expect("checked above");
        let n = c.writer().write_vectored(bufs)?;
        self.flush_tls()?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            // rustls's buffer is full (a handshake still running, or a slow upstream).
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()
    }
}
