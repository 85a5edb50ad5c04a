//! Certificates for the TLS listeners: read PEM certificate chains and keys (checked at start,
//! each error naming its file), choose one per connection by SNI, make and keep a self-signed
//! one, and build the rustls server configuration the drivers use ([`crate::model::TlsSettings`]).
//! [`client`]: the clients' side (`send`, `talk`, `bench`).
//!
//! The configuration: TLS 1.3 and 1.2 only, on rustls's `ring` provider; resumption by tickets
//! (RFC 8446 §4.6.1, RFC 5077; keys every prefork worker shares: [`tickets`]) and by a
//! server-side session cache every prefork worker shares too ([`sessions`]); ALPN as the
//! service asks; 0-RTT off (RFC 8446 §8: early data can
//! be replayed).
//!
//! Certificates can be reread while serving ([`TlsSettings::reload`], on SIGHUP): the new set
//! replaces the old in the resolver, all or nothing, so handshakes after it get the new ones
//! and connections already set up are not touched. The configuration itself, and so its
//! ticket keys, stays: sessions resume across a reload.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::error::{Error, Result};
use crate::model::TlsSettings;

pub mod acme;
pub mod client;
pub mod sessions;
pub mod tickets;

/// Sessions the server-side cache remembers (for TLS 1.2 clients without tickets), in 4 MiB
/// shared by every worker; nginx's `ssl_session_cache shared:SSL:1m` holds about 4000.
const SESSION_CACHE: usize = 4096;

/// One `--tls-cert FILE --tls-key FILE` pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where the certificates come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertSource {
    /// `--tls-cert`/`--tls-key` pairs; the first serves clients without (or with an unknown)
    /// SNI name.
    Files(Vec<CertFiles>),
    /// `--tls-self-signed DIR`: made at first start, kept as `DIR/cert.pem` and `DIR/key.pem`.
    SelfSigned(PathBuf),
    /// `--acme DOMAIN`: from an ACME CA, kept in the state directory; until the first one
    /// arrives, a self-signed stand-in for the domains is served.
    Acme(acme::AcmeSettings),
}

/// What the service on the TLS listeners wants of TLS.
#[derive(Clone, Debug, Default)]
pub struct TlsApp {
    /// ALPN protocols offered, in order of preference (`http/1.1` for HTTP services).
    pub alpn: Vec<Vec<u8>>,
    /// The answer to a plaintext request on a TLS port (see [`TlsSettings::plain_reply`]).
    pub plain_reply: Option<bytes::Bytes>,
    /// Hand a connection's records to the kernel where it offers TLS (`--kernel-tls`, on
    /// unless turned off; see `model::tls::kernel`).
    pub kernel_tls: bool,
}

/// The provider every TLS listener and client uses: rustls's `ring` build, which needs a C
/// compiler alone (aws-lc-rs needs CMake too). rustls 0.23.48 deprecates it for its lack of
/// post-quantum key exchange; X25519, P-256 and P-384 remain.
///
/// Its groups are put in the order curl, OpenSSL and the browsers offer them, X25519 first:
/// the `ring` provider leads with P-384, so a client of ours sent a P-384 key share, which
/// costs both ends many times an X25519 one (an nginx on OpenSSL 3.0 spent 2.6 ms of CPU on
/// each such handshake, against 0.3 ms for curl's). A server answers in the order the client
/// asks (rustls picks from the client's list), so the order is the clients' concern.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
    Arc::new(CryptoProvider {
        kx_groups: vec![X25519, SECP256R1, SECP384R1],
        ..rustls::crypto::ring::default_provider()
    })
}

/// Why webpki could not read a certificate, as a sentence's end (webpki's own `Display` is
/// its `Debug`: "TrailingData(SignedData)").
fn unparsed(e: &webpki::Error) -> String {
    use webpki::Error as E;
    match e {
        E::BadDer | E::TrailingData(_) => {
            "its DER encoding is broken (a file cut short or edited by hand?)".into()
        }
        E::BadDerTime | E::InvalidCertValidity => "its validity dates cannot be read".into(),
        E::UnsupportedCertVersion => "it is not an X.509 version 3 certificate".into(),
        E::UnsupportedCriticalExtension => {
            "it has an extension marked critical that tincan does not know".into()
        }
        E::MalformedExtensions | E::ExtensionValueInvalid => "its extensions are malformed".into(),
        E::InvalidSerialNumber => "its serial number is malformed".into(),
        other => format!("webpki refuses it ({other:?})"),
    }
}
/// Read one certificate chain and its key; `Err` names the file at fault.
pub fn load_pair(files: &CertFiles) -> Result<Arc<CertifiedKey>> {
    let cert = &files.cert;
    let key = &files.key;
    let chain = read_chain(cert)?;
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, "private key", e))?;
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| Error::Setup(format!("cannot use the key in {}: {e}", key.display())))?;
    if let Err(e) = webpki::EndEntityCert::try_from(&chain[0]) {
        return Err(Error::Setup(format!(
            "the first certificate in {} is not a valid X.509 certificate: {}",
            cert.display(),
            unparsed(&e)
        )));
    }
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(Error::Setup(format!(
                "the key in {} does not belong to the certificate in {}",
                key.display(),
                cert.display()
            )))
        }
    }
    Ok(Arc::new(certified))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| pem_error(path, "certificate", e))?;
    if chain.is_empty() {
        return Err(Error::Setup(format!(
            "{} holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")",
            path.display()
        )));
    }
    Ok(chain)
}

/// A PEM reading failure as one line naming the file.
fn pem_error(path: &Path, what: &str, e: rustls_pki_types::pem::Error) -> Error {
    use rustls_pki_types::pem::Error as P;
    let why = match e {
        P::Io(io) => return Error::io(format!("cannot read {}", path.display()), io),
        P::NoItemsFound => format!("it holds no PEM {what}"),
        other => format!("it is not valid PEM ({other:?})"),
    };
    Error::Setup(format!("cannot use {}: {why}", path.display()))
}

/// Certificates chosen by the name the client asks for (SNI, RFC 6066 §3), matched against
/// each certificate's own names (wildcards included); the first serves everyone else.
#[derive(Debug)]
struct BySni {
    /// Replaced whole by a reload; a handshake holds the read lock only to clone one `Arc`.
    keys: RwLock<Vec<Arc<CertifiedKey>>>,
    /// Answer TLS-ALPN-01 validation handshakes (RFC 8737) with the pending challenge's
    /// certificate, kept in this ACME state directory.
    acme: Option<PathBuf>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(state) = &self.acme {
            if hello
                .alpn()
                .is_some_and(|mut a| a.any(|p| p == acme::ACME_TLS_ALPN))
            {
                // RFC 8737 §3: the validation certificate for the name asked, or no handshake.
                let name = hello.server_name()?;
                return acme::tls_alpn01_certificate(state, name);
            }
        }
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        if keys.len() > 1 {
            if let Some(name) = hello
                .server_name()
                .and_then(|n| ServerName::try_from(n).ok())
            {
                let fits = |k: &&Arc<CertifiedKey>| {
                    k.end_entity_cert()
                        .ok()
                        .and_then(|c| webpki::EndEntityCert::try_from(c).ok())
                        .is_some_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
                };
                if let Some(k) = keys.iter().find(fits) {
                    return Some(Arc::clone(k));
                }
            }
        }
        keys.first().cloned()
    }
}

/// The certificate files a source stands for, made first if it is a self-signed one not yet
/// made.
pub fn cert_files(source: &CertSource) -> Result<Vec<CertFiles>> {
    match source {
        CertSource::Files(f) => Ok(f.clone()),
        CertSource::SelfSigned(dir) => Ok(vec![self_signed(dir)?]),
        CertSource::Acme(a) => Ok(vec![CertFiles {
            cert: a.cert_file(),
            key: a.key_file(),
        }]),
    }
}

/// The TLS settings for `source` and `app`: every file read and checked now.
pub fn settings(source: &CertSource, app: &TlsApp) -> Result<TlsSettings> {
    let acme = match source {
        CertSource::Acme(a) => Some(a.state.clone()),
        _ => None,
    };
    let is_acme = acme.is_some();
    let resolver = Arc::new(BySni {
        keys: RwLock::new(load_all(source)?),
        acme,
    });
    let mut app = app.clone();
    if is_acme {
        // Last: a client offering it with others gets the service's protocol.
        app.alpn.push(acme::ACME_TLS_ALPN.to_vec());
    }
    let (config, resumed) =
        server_configs(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>, &app)?;
    let source = source.clone();
    let reload = move || -> std::result::Result<usize, String> {
        let keys = load_all(&source).map_err(|e| e.to_string())?;
        let n = keys.len();
        *resolver.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        Ok(n)
    };
    Ok(TlsSettings {
        config,
        resumed,
        plain_reply: app.plain_reply.clone(),
        plain: Vec::new(),
        reload: Some(Arc::new(reload)),
        background: None,
    })
}

/// Every certificate and key of `source`, read and checked; the first error stops it.
fn load_all(source: &CertSource) -> Result<Vec<Arc<CertifiedKey>>> {
    if let CertSource::Acme(a) = source {
        if !a.cert_file().exists() {
            return Ok(vec![stand_in(&a.domains)?]);
        }
    }
    cert_files(source)?.iter().map(load_pair).collect()
}

/// A self-signed certificate for `names`, made in memory: what an ACME site serves until its
/// first certificate arrives (clients are refused it, as they would be refused a connection).
fn stand_in(names: &[String]) -> Result<Arc<CertifiedKey>> {
    let fail = |e: rcgen::Error| Error::Setup(format!("cannot make a stand-in certificate: {e}"));
    let made = rcgen::generate_simple_self_signed(names.to_vec()).map_err(fail)?;
    let der = PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| Error::Setup(format!("cannot use the stand-in key: {e}")))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![made.cert.der().clone()],
        signing,
    )))
}

/// TLS 1.3 session tickets sent after a full handshake: two, so that a client may open two
/// connections at once and resume both (a ticket is used once, RFC 8446 §C.4).
const TICKETS_FULL: usize = 2;
/// After a resumption, one, to replace the ticket just used (as OpenSSL does): the second
/// would cost the client a session to make and keep, and the connection its bytes.
const TICKETS_RESUMED: usize = 1;

/// The rustls server configuration, and the same for a ClientHello that offers a session
/// ([`TlsSettings::resumed`]): they share the certificates, the ticket keys and the session
/// cache, and differ in how many tickets they send.
fn server_configs(
    resolver: Arc<dyn ResolvesServerCert>,
    app: &TlsApp,
) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>)> {
    let setup = |e: rustls::Error| Error::Setup(format!("cannot set TLS up: {e}"));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(setup)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    // Made here, before prefork's fork, for the same reason as the ticket keys below.
    cfg.session_storage = Arc::new(
        sessions::SharedSessions::new(SESSION_CACHE)
            .map_err(|e| Error::Setup(format!("cannot make the TLS session cache: {e}")))?,
    );
    // Ticket keys are derived from a secret drawn here, before prefork's fork: every worker
    // opens every worker's tickets, after each rotation too (`tickets`).
    cfg.ticketer = Arc::new(
        tickets::Tickets::new()
            .map_err(|_| Error::Setup("cannot draw the session ticket secret".into()))?,
    );
    cfg.alpn_protocols = app.alpn.clone();
    cfg.max_early_data_size = 0;
    // Kernel TLS takes the traffic keys from rustls after the handshake
    // (`model::tls::kernel`), where the kernel offers it and it is not turned off; otherwise
    // rustls never gives them out.
    cfg.enable_secret_extraction = app.kernel_tls;
    cfg.send_tls13_tickets = TICKETS_FULL;
    let mut resumed = cfg.clone();
    resumed.send_tls13_tickets = TICKETS_RESUMED;
    Ok((Arc::new(cfg), Arc::new(resumed)))
}

/// The names the self-signed certificate is for.
pub const SELF_SIGNED_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// `DIR/cert.pem` and `DIR/key.pem`, made (ECDSA P-256, for [`SELF_SIGNED_NAMES`]) if either
/// is missing; an existing pair is reused, so a client that trusts it once keeps trusting it.
pub fn self_signed(dir: &Path) -> Result<CertFiles> {
    let files = CertFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let names: Vec<String> = SELF_SIGNED_NAMES.iter().map(|s| s.to_string()).collect();
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| Error::Setup(format!("cannot make a self-signed certificate: {e}")))?;
    write_private(&files.key, made.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&files.cert, made.cert.pem())
        .map_err(|e| Error::io(format!("cannot write {}", files.cert.display()), e))?;
    tracing::info!(
        "made a self-signed certificate for {} in {}",
        SELF_SIGNED_NAMES.join(", "),
        files.cert.display()
    );
    Ok(files)
}

/// Write a key readable by its owner alone.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e| Error::io(format!("cannot write {}", path.display()), e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    f.write_all(bytes).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tincan-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// rustls gives its traffic keys out (for the kernel) only while kernel TLS is on (the
    /// default of `--kernel-tls`); `--kernel-tls off` keeps them in rustls.
    #[test]
    fn traffic_keys_leave_rustls_only_with_kernel_tls() {
        use clap::Parser;
        let dir = temp("ktls");
        let source = CertSource::SelfSigned(dir.clone());
        for (flags, on) in [
            (&[][..], true),
            (&["--kernel-tls", "on"][..], true),
            (&["--kernel-tls", "off"][..], false),
        ] {
            let argv = ["tincan", "serve"].iter().chain(flags);
            let crate::cli::Command::Serve(serve) = crate::cli::Cli::parse_from(argv).command
            else {
                unreachable!()
            };
            let app = TlsApp {
                kernel_tls: serve.server.kernel_tls(),
                ..TlsApp::default()
            };
            let s = settings(&source, &app).unwrap();
            assert_eq!(s.config.enable_secret_extraction, on, "{flags:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_self_signed_certificate_is_made_once_and_reused() {
        let dir = temp("self");
        let first = self_signed(&dir).unwrap();
        let pem = std::fs::read(&first.cert).unwrap();
        load_pair(&first).unwrap();
        let again = self_signed(&dir).unwrap();
        assert_eq!(std::fs::read(&again.cert).unwrap(), pem, "made anew");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&first.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_name_the_file_at_fault() {
        let dir = temp("errors");
        let a = self_signed(&dir.join("a")).unwrap();
        let b = self_signed(&dir.join("b")).unwrap();
        let missing = CertFiles {
            cert: dir.join("nope.pem"),
            key: a.key.clone(),
        };
        let e = load_pair(&missing).unwrap_err().to_string();
        assert!(e.contains("nope.pem") && e.contains("no such file"), "{e}");
        let swapped = CertFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let e = load_pair(&swapped).unwrap_err().to_string();
        assert!(e.contains("does not belong"), "{e}");
        let not_a_key = CertFiles {
            cert: a.cert.clone(),
            key: a.cert.clone(),
        };
        let e = load_pair(&not_a_key).unwrap_err().to_string();
        assert!(e.contains("holds no PEM private key"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
