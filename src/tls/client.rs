//! TLS for the clients (`send`, `talk`, `bench`): rustls's client side on the same `ring`
//! provider as the servers, trusting the system's CA certificates (Debian's ca-certificates
//! bundle), a CA file the user names, or, when asked, nothing at all.
//!
//! [`TlsStream`] is a blocking TLS stream whose two halves may be used from two threads at
//! once (a reader thread beside a writer, as `send` and `talk` run): no lock is held across a
//! blocking socket call, so a writer stalled on a full socket never keeps the reader from
//! draining what the server sends back.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore};

use crate::error::{Error, Result};

/// Debian's bundle of the system's trusted CA certificates (package ca-certificates).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Whom a client trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// The CA certificates in [`SYSTEM_ROOTS`].
    System,
    /// The CA certificates in this PEM file, instead of the system's.
    File(std::path::PathBuf),
    /// Any certificate: the connection is encrypted, but the server is not authenticated.
    Anyone,
}

/// The client configuration for `trust`, offering `alpn` (RFC 7301) in that order.
pub fn config(trust: &Trust, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Setup(format!("cannot set TLS up: {e}")))?;
    let mut cfg = match trust {
        Trust::Anyone => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCheck(super::provider())))
            .with_no_client_auth(),
        Trust::System => builder
            .with_root_certificates(roots(Path::new(SYSTEM_ROOTS))?)
            .with_no_client_auth(),
        Trust::File(f) => builder
            .with_root_certificates(roots(f)?)
            .with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

fn roots(file: &Path) -> Result<RootCertStore> {
    let certs = super::read_chain(file)?;
    let mut store = RootCertStore::empty();
    let (added, _unusable) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(Error::Setup(format!(
            "{} holds no usable CA certificate",
            file.display()
        )));
    }
    Ok(store)
}

/// The name the server's certificate must carry: `host` from `HOST:PORT` or `[V6]:PORT`
/// (an IP address is matched against the certificate's IP addresses, RFC 6125 §1.7.2).
pub fn server_name(host_port: &str) -> Result<ServerName<'static>> {
    let host = match host_port.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host_port,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|_| Error::Usage(format!("{host} is not a host name TLS can check")))
}

/// A `ServerCertVerifier` signature check that is rustls's own function of the same name
/// (`verify_tls12_signature`, `verify_tls13_signature`) with the provider's algorithms.
macro_rules! signature_check {
    ($name:ident) => {
        fn $name(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            let algs = &self.0.signature_verification_algorithms;
            rustls::crypto::$name(message, cert, dss, algs)
        }
    };
}

/// Accepts any certificate, still checking that the server holds its key (the handshake's
/// signatures), so that `--insecure` skips authentication and nothing else.
#[derive(Debug)]
struct NoCheck(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    signature_check!(verify_tls12_signature);
    signature_check!(verify_tls13_signature);

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a handshake failed, as a phrase for a sentence: a certificate error names what was
/// wrong with it.
pub fn describe(e: &io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(c)) => {
            format!("the server's certificate is not trusted ({c:?})")
        }
        Some(other) => format!("TLS failed: {other}"),
        None => e.to_string(),
    }
}

/// A certificate error (as opposed to a network one): the user may have to say whom to trust.
pub fn is_certificate_error(e: &io::Error) -> bool {
    matches!(
        e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidCertificate(_))
    )
}

struct Shared {
    conn: Mutex<ClientConnection>,
    /// Held while ciphertext is taken from `conn` and written, so records leave in order.
    /// Always taken before `conn`.
    wire: Mutex<()>,
}

/// One half of a blocking TLS connection (see the module's doc); [`try_clone`] makes the
/// other.
///
/// [`try_clone`]: TlsStream::try_clone
pub struct TlsStream {
    sock: TcpStream,
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TlsStream {
    /// Handshake over `sock` (blocking, within its timeouts) as a client of `name`.
    pub fn connect(
        mut sock: TcpStream,
        name: ServerName<'static>,
        config: &Arc<ClientConfig>,
    ) -> io::Result<TlsStream> {
        let mut conn = ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)?;
        }
        Ok(TlsStream {
            sock,
            shared: Arc::new(Shared {
                conn: Mutex::new(conn),
                wire: Mutex::new(()),
            }),
        })
    }

    /// The TCP socket beneath (for timeouts and addresses).
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    pub fn try_clone(&self) -> io::Result<TlsStream> {
        Ok(TlsStream {
            sock: self.sock.try_clone()?,
            shared: Arc::clone(&self.shared),
        })
    }

    /// `Write`: send `close_notify` (RFC 8446 §6.1) and half-close; `Read` and `Both`: shut
    /// the socket.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if how == Shutdown::Write {
            let _wire = lock(&self.shared.wire);
            let out = {
                let mut conn = lock(&self.shared.conn);
                conn.send_close_notify();
                pending(&mut conn)?
            };
            (&self.sock).write_all(&out)?;
        }
        self.sock.shutdown(how)
    }

    /// Write what rustls has queued (its answer to something read: an alert, a key update).
    fn flush_queued(&self) -> io::Result<()> {
        let _wire = lock(&self.shared.wire);
        let out = pending(&mut lock(&self.shared.conn))?;
        (&self.sock).write_all(&out)
    }
}

/// Take every queued TLS record out of `conn`.
fn pending(conn: &mut ClientConnection) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out)?;
    }
    Ok(out)
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut raw = [0u8; 16 * 1024];
        loop {
            {
                let mut conn = lock(&self.shared.conn);
                match conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The server closed without close_notify: for these clients, an end like
                    // any other (the framing says whether a message was cut short).
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
            }
            // No lock is held while waiting for the server.
            let n = (&self.sock).read(&mut raw)?;
            let answer = {
                let mut conn = lock(&self.shared.conn);
                if n == 0 {
                    // rustls takes an empty read as the end of the transport.
                    conn.read_tls(&mut &[][..])?;
                } else {
                    let mut data = &raw[..n];
                    while !data.is_empty() {
                        if conn.read_tls(&mut data)? == 0 {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "a TLS record larger than rustls accepts",
                            ));
                        }
                        conn.process_new_packets()
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    }
                }
                conn.wants_write()
            };
            if answer {
                self.flush_queued()?;
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _wire = lock(&self.shared.wire);
        let (n, out) = {
            let mut conn = lock(&self.shared.conn);
            let n = conn.writer().write(buf)?;
            (n, pending(&mut conn)?)
        };
        (&self.sock).write_all(&out)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The group of the first key share a ClientHello offers, and its key's length (RFC 8446
    /// §4.2.8): found as the `key_share` extension (51) whose list length fits its own.
    fn first_key_share(hello: &[u8]) -> Option<(u16, u16)> {
        hello.windows(10).find_map(|w| {
            let be = |i: usize| u16::from_be_bytes([w[i], w[i + 1]]);
            // type, extension length, client_shares length, then the first entry.
            (be(0) == 51 && be(2) == be(4) + 2).then(|| (be(6), be(8)))
        })
    }

    #[test]
    fn a_client_hello_leads_with_an_x25519_key_share() {
        let cfg = config(&Trust::Anyone, &[b"http/1.1"]).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn = ClientConnection::new(cfg, name).unwrap();
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).unwrap();
        // X25519 (29) with its 32-byte key, as curl and the browsers send it; not P-384 (24).
        assert_eq!(first_key_share(&hello), Some((29, 32)), "{hello:02x?}");
    }
}
