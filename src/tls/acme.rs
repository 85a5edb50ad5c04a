//! Certificates from an ACME CA (RFC 8555: Let's Encrypt, or any other): obtained when missing,
//! renewed at two thirds of their lifetime, and swapped into the TLS listeners through the same
//! resolver swap as a SIGHUP reload, so no connection is dropped.
//!
//! - The protocol (JWS, nonces, orders) is `instant-acme`'s. It runs on a thread of its own with
//!   a current-thread tokio runtime, so tokio stays off the serving path; its HTTP requests go
//!   through [`Blocking`], a blocking HTTP/1.1 client on this crate's TLS client and HTTP/1 wire
//!   code (so neither hyper nor a second TLS stack is built in).
//! - Challenges: HTTP-01 (RFC 8555 §8.3) when a plain listener can answer on port 80
//!   (`serve --redirect-http`), else TLS-ALPN-01 (RFC 8737) on the TLS listeners. Their answers
//!   are files under `DIR/challenges/` while the order runs, which the redirect handler
//!   ([`http01_answer`]) and the certificate resolver ([`tls_alpn01_certificate`]) read: so
//!   prefork's workers answer what its ACME process asked for.
//! - The state directory keeps `account.json` (the account's key, for the directory it was made
//!   on) and `cert.pem`/`key.pem`: a restart reuses both and orders nothing while the
//!   certificate is good.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;

use crate::error::{Error, Result};
use crate::model::Reload;

/// Let's Encrypt's production directory, the default of `--acme-directory`.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

pub use crate::model::ACME_TLS_ALPN;

/// The largest answer an ACME server may send (a certificate chain is a few KiB).
const MAX_RESPONSE: usize = 1 << 20;

/// Seconds to connect to, and then to wait on, the ACME server.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(30);

/// The first wait after a failed order; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(10);
const RETRY_MAX: Duration = Duration::from_secs(3600);

/// How long the CA may take to validate the challenges, and then to issue.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// What `--acme` and its companions ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeSettings {
    /// The names the certificate is for (one order, one certificate).
    pub domains: Vec<String>,
    pub email: Option<String>,
    /// The directory URL of the CA.
    pub directory: String,
    /// Where the account and the certificate are kept.
    pub state: PathBuf,
    /// A PEM file of CA certificates to trust for the directory's HTTPS (a test CA); else the
    /// system's.
    pub ca: Option<PathBuf>,
}

impl AcmeSettings {
    pub fn cert_file(&self) -> PathBuf {
        self.state.join("cert.pem")
    }
    pub fn key_file(&self) -> PathBuf {
        self.state.join("key.pem")
    }
    fn account_file(&self) -> PathBuf {
        self.state.join("account.json")
    }
}

/// Where the answers of the challenges in flight are kept: `http-01/TOKEN` holds the key
/// authorization, `tls-alpn-01/NAME.pem` the validation certificate and its key.
fn challenges(state: &Path) -> PathBuf {
    state.join("challenges")
}

/// A token or name that can be a file name here: RFC 8555 §8.1 tokens are base64url; names
/// are DNS names. Anything else (a `..`, a `/`) is no pending challenge.
fn safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The body to answer `GET /.well-known/acme-challenge/TOKEN` with, while that token is
/// pending (RFC 8555 §8.3: the key authorization).
pub fn http01_answer(state: &Path, token: &str) -> Option<String> {
    if !safe(token) {
        return None;
    }
    std::fs::read_to_string(challenges(state).join("http-01").join(token)).ok()
}

/// The validation certificate for `name` (RFC 8737 §3), while a TLS-ALPN-01 challenge for it
/// is pending.
pub fn tls_alpn01_certificate(state: &Path, name: &str) -> Option<Arc<CertifiedKey>> {
    let name = name.to_ascii_lowercase();
    if !safe(&name) {
        return None;
    }
    let file = challenges(state)
        .join("tls-alpn-01")
        .join(format!("{name}.pem"));
    let chain = rustls_pki_types::CertificateDer::pem_file_iter(&file)
        .ok()?
        .collect::<std::result::Result<Vec<_>, _>>()
        .ok()?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&file).ok()?;
    let signing = super::provider().key_provider.load_private_key(key).ok()?;
    Some(Arc::new(CertifiedKey::new(chain, signing)))
}

/// Put a challenge's answer where the listeners look for it.
fn offer(state: &Path, kind: &str, file: &str, bytes: &[u8]) -> Result<(), String> {
    let dir = challenges(state).join(kind);
    std::fs::create_dir_all(&dir).map_err(|e| {
        format!(
            "cannot create {}: {}",
            dir.display(),
            crate::error::plain(&e)
        )
    })?;
    super::write_private(&dir.join(file), bytes).map_err(|e| e.to_string())
}

/// Start the ACME client's thread: it orders at once when `DIR/cert.pem` is missing or due,
/// then sleeps until the next renewal, calling `reload` after each new certificate. `http01`:
/// answer HTTP-01 challenges (a plain listener serves [`http01_answer`] on port 80); else
/// TLS-ALPN-01.
pub fn start(settings: AcmeSettings, reload: Reload, http01: bool) -> Result<()> {
    // Answers left by a run that was stopped mid-order are stale.
    let _ = std::fs::remove_dir_all(challenges(&settings.state));
    let http = Blocking::new(settings.ca.as_deref())?;
    std::thread::Builder::new()
        .name("tincan-acme".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(
                        "acme: cannot start the ACME client ({e}); no certificate will be ordered"
                    );
                    return;
                }
            };
            rt.block_on(run(settings, http, reload, http01));
        })
        .map_err(|e| Error::io("starting the ACME client's thread", e))?;
    Ok(())
}

async fn run(settings: AcmeSettings, http: Blocking, reload: Reload, http01: bool) {
    let names = settings.domains.join(", ");
    let mut retry = RETRY_FIRST;
    loop {
        let due = renewal_due(&settings.cert_file(), &settings.domains);
        let now = SystemTime::now();
        if let Some(at) = due.filter(|at| *at > now) {
            tokio::time::sleep(at.duration_since(now).unwrap_or_default()).await;
            continue;
        }
        if due.is_some() {
            tracing::info!("acme: renewing the certificate for {names}");
        }
        match obtain(&settings, &http, http01).await {
            Ok(until) => {
                retry = RETRY_FIRST;
                tracing::info!(
                    "acme: obtained a certificate for {names} (valid until {}), kept in {}",
                    httpdate::fmt_http_date(until),
                    settings.cert_file().display()
                );
                if let Err(why) = reload() {
                    tracing::warn!("acme: the new certificate cannot be used: {why}");
                }
            }
            Err(why) => {
                tracing::warn!(
                    "acme: no certificate for {names}: {why} (trying again in {} s)",
                    retry.as_secs()
                );
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// When the certificate in `cert` is due for renewal (two thirds into its lifetime); `None`
/// when there is none, it cannot be read, or it lacks one of `names` (the list changed since
/// it was ordered): order now.
fn renewal_due(cert: &Path, names: &[String]) -> Option<SystemTime> {
    let pem = std::fs::read(cert).ok()?;
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .next()?
        .ok()?;
    let ee = webpki::EndEntityCert::try_from(&der).ok()?;
    for n in names {
        let name = rustls_pki_types::ServerName::try_from(n.as_str()).ok()?;
        ee.verify_is_valid_for_subject_name(&name).ok()?;
    }
    let (from, until) = validity(&der)?;
    let life = until.duration_since(from).ok()?;
    Some(from + life * 2 / 3)
}

/// One order, start to end: account, authorizations, challenges, finalization; the key and
/// chain are written to the state directory. `Ok`: the new certificate's end of validity.
/// `Err`: one line saying what failed and what to do.
async fn obtain(s: &AcmeSettings, http: &Blocking, http01: bool) -> Result<SystemTime, String> {
    std::fs::create_dir_all(&s.state).map_err(|e| {
        format!(
            "cannot create {}: {}",
            s.state.display(),
            crate::error::plain(&e)
        )
    })?;
    let account = account(s, http).await?;
    let ids: Vec<Identifier> = s
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .map_err(|e| api("the CA refused the order", &e))?;
    let (kind, label) = if http01 {
        (ChallengeType::Http01, "http-01")
    } else {
        (ChallengeType::TlsAlpn01, "tls-alpn-01")
    };
    let mut auths = order.authorizations();
    while let Some(auth) = auths.next().await {
        let mut auth = auth.map_err(|e| api("cannot read an authorization", &e))?;
        match auth.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(format!("an authorization is {other:?}; order again later")),
        }
        let mut ch = auth.challenge(kind.clone()).ok_or_else(|| {
            format!("the CA offers no {label} challenge; use the other kind (add or drop --redirect-http)")
        })?;
        let name = ch.identifier().to_string();
        let key_auth = ch.key_authorization();
        if http01 {
            if !safe(&ch.token) {
                return Err(format!(
                    "the CA sent a token that is not base64url: {:?}",
                    ch.token
                ));
            }
            offer(&s.state, "http-01", &ch.token, key_auth.as_str().as_bytes())?;
        } else {
            let pem = alpn_certificate(&name, key_auth.digest().as_ref())?;
            offer(
                &s.state,
                "tls-alpn-01",
                &format!("{}.pem", name.to_ascii_lowercase()),
                pem.as_bytes(),
            )?;
        }
        ch.set_ready()
            .await
            .map_err(|e| api("the CA refused the challenge", &e))?;
    }
    let retries = RetryPolicy::new().timeout(ORDER_TIMEOUT);
    let status = order.poll_ready(&retries).await;
    let _ = std::fs::remove_dir_all(challenges(&s.state));
    let how = if http01 {
        "make sure each name resolves to this host and that port 80 reaches --redirect-http"
    } else {
        "make sure each name resolves to this host and that port 443 reaches the TLS --listen"
    };
    match status {
        Ok(OrderStatus::Ready) => {}
        Ok(other) => return Err(format!("the order ended {other:?}; {how}")),
        Err(e) => {
            return Err(format!(
                "{}; {how}",
                api("the CA could not validate the names", &e)
            ))
        }
    }
    let key = rcgen::KeyPair::generate().map_err(|e| format!("cannot make a key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(s.domains.clone())
        .map_err(|e| format!("cannot make a certificate request: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("cannot make a certificate request: {e}"))?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(|e| api("the CA refused to finalize the order", &e))?;
    let chain = order
        .poll_certificate(&retries)
        .await
        .map_err(|e| api("the CA issued no certificate", &e))?;
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()
        .and_then(|c| c.ok())
        .ok_or("the CA's answer holds no certificate")?;
    let (_, until) = validity(&der).ok_or("the CA's certificate cannot be read")?;
    // The key first: a reload between the two writes finds an old certificate whose key no
    // longer matches, refuses it, and keeps what it serves.
    let key_file = s.key_file();
    super::write_private(&key_file, key.serialize_pem().as_bytes()).map_err(|e| e.to_string())?;
    write_atomic(&s.cert_file(), chain.as_bytes())?;
    Ok(until)
}

/// The account in the state directory, if it was made on this directory; else a new one,
/// saved there.
async fn account(s: &AcmeSettings, http: &Blocking) -> Result<Account, String> {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Saved {
        directory: String,
        credentials: AccountCredentials,
    }
    let file = s.account_file();
    if let Ok(text) = std::fs::read(&file) {
        match serde_json::from_slice::<Saved>(&text) {
            Ok(saved) if saved.directory == s.directory => {
                return Account::builder_with_http(Box::new(http.clone()))
                    .from_credentials(saved.credentials)
                    .await
                    .map_err(|e| reach(&s.directory, &e));
            }
            Ok(_) => tracing::info!(
                "acme: {} is an account on another directory; making one on {}",
                file.display(),
                s.directory
            ),
            Err(e) => tracing::warn!(
                "acme: {} cannot be read ({e}); making a new account",
                file.display()
            ),
        }
    }
    let contact: Vec<String> = s.email.iter().map(|e| format!("mailto:{e}")).collect();
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(Box::new(http.clone()))
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            s.directory.clone(),
            None,
        )
        .await
        .map_err(|e| reach(&s.directory, &e))?;
    let saved = Saved {
        directory: s.directory.clone(),
        credentials,
    };
    let json = serde_json::to_vec_pretty(&saved).map_err(|e| e.to_string())?;
    super::write_private(&file, &json).map_err(|e| e.to_string())?;
    tracing::info!(
        "acme: made an account on {}, kept in {}",
        s.directory,
        file.display()
    );
    Ok(account)
}

/// A failure to use the directory: unreachable, or refusing.
fn reach(directory: &str, e: &instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(_) => api(&format!("{directory} refused the account"), e),
        other => {
            let why = match other {
                instant_acme::Error::Other(e) => match e.downcast_ref::<std::io::Error>() {
                    Some(io) => crate::error::plain(io),
                    None => e.to_string(),
                },
                e => e.to_string(),
            };
            format!(
                "cannot reach the ACME directory {directory} ({why}); check --acme-directory, \
                 the network, and --acme-ca for a test CA"
            )
        }
    }
}

/// `what` failed, and the CA's problem document (RFC 8555 §6.7) says why.
fn api(what: &str, e: &instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => {
            let detail = p.detail.as_deref().unwrap_or("no detail given");
            let sub: Vec<String> = p
                .subproblems
                .iter()
                .filter_map(|s| s.detail.clone())
                .collect();
            if sub.is_empty() {
                format!("{what}: {detail}")
            } else {
                format!("{what}: {detail} ({})", sub.join("; "))
            }
        }
        other => format!("{what}: {other}"),
    }
}

/// The self-signed certificate that proves control of `name` (RFC 8737 §3), then its key, in
/// PEM: `name` as its only subject alternative name, and the critical acmeIdentifier
/// extension holding the SHA-256 digest of the key authorization.
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<String, String> {
    let fail = |e: rcgen::Error| format!("cannot make the TLS-ALPN-01 certificate: {e}");
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(fail)?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let cert = params.self_signed(&key).map_err(fail)?;
    Ok(format!("{}{}", cert.pem(), key.serialize_pem()))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("pem.new");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            format!(
                "cannot write {}: {}",
                path.display(),
                crate::error::plain(&e)
            )
        })
}

/// `notBefore` and `notAfter` of an X.509 certificate (RFC 5280 §4.1.2.5), read from its DER.
pub fn validity(cert: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (_, cert, _) = der(cert)?; // Certificate ::= SEQUENCE
    let (_, mut tbs, _) = der(cert)?; // tbsCertificate SEQUENCE
    let (tag, _, rest) = der(tbs)?;
    if tag == 0xa0 {
        tbs = rest; // [0] EXPLICIT version
    }
    // serialNumber, signature, issuer; then validity.
    for _ in 0..3 {
        tbs = der(tbs)?.2;
    }
    let (_, validity, _) = der(tbs)?;
    let (t1, from, rest) = der(validity)?;
    let (t2, until, _) = der(rest)?;
    Some((time(t1, from)?, time(t2, until)?))
}

/// One DER element: its tag, its contents, and what follows it.
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let len = b[..n].iter().fold(0usize, |a, &x| a << 8 | usize::from(x));
        b = &b[n..];
        len
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

/// UTCTime (tag 23, `YYMMDDHHMMSSZ`) or GeneralizedTime (tag 24, `YYYYMMDDHHMMSSZ`).
fn time(tag: u8, v: &[u8]) -> Option<SystemTime> {
    let s = std::str::from_utf8(v).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        23 => {
            let yy: i64 = s.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, s.get(2..)?)
        }
        24 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    if rest.len() != 10 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |i: usize| -> i64 { rest[i..i + 2].parse().unwrap_or(0) };
    let days = days_from_civil(year, n(0), n(2));
    let secs = days * 86_400 + n(4) * 3600 + n(6) * 60 + n(8);
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// instant-acme's HTTP client: one blocking HTTP/1.1 exchange per request over this crate's
/// TLS client, on the ACME thread (nothing else runs on its runtime, so blocking holds up
/// nothing).
#[derive(Clone)]
struct Blocking {
    tls: Arc<rustls::ClientConfig>,
}

impl Blocking {
    fn new(ca: Option<&Path>) -> Result<Blocking> {
        let trust = match ca {
            Some(f) => super::client::Trust::File(f.to_path_buf()),
            None => super::client::Trust::System,
        };
        Ok(Blocking {
            tls: super::client::config(&trust, &[b"http/1.1"])?,
        })
    }

    fn exchange(
        &self,
        req: http::Request<BodyWrapper<bytes::Bytes>>,
    ) -> std::io::Result<BytesResponse> {
        use std::io::{Error as E, ErrorKind as K};
        let uri = req.uri().clone();
        if uri.scheme_str() != Some("https") {
            return Err(E::new(
                K::InvalidInput,
                format!("{uri} is not an https URL"),
            ));
        }
        let host = uri
            .host()
            .ok_or_else(|| E::new(K::InvalidInput, "no host"))?;
        let port = uri.port_u16().unwrap_or(443);
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
        let addr = (host.trim_start_matches('[').trim_end_matches(']'), port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| E::new(K::NotFound, format!("{host} has no address")))?;
        let sock = TcpStream::connect_timeout(&addr, NETWORK_TIMEOUT)?;
        sock.set_read_timeout(Some(NETWORK_TIMEOUT))?;
        sock.set_write_timeout(Some(NETWORK_TIMEOUT))?;
        let name = super::client::server_name(authority)
            .map_err(|e| E::new(K::InvalidInput, e.to_string()))?;
        let mut tls = super::client::TlsStream::connect(sock, name, &self.tls)?;
        let (parts, body) = req.into_parts();
        let body = block_on_body(body)?;
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut head = format!(
            "{} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n",
            parts.method
        );
        for (n, v) in &parts.headers {
            if let Ok(v) = v.to_str() {
                head.push_str(&format!("{n}: {v}\r\n"));
            }
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut wire = head.into_bytes();
        wire.extend_from_slice(&body);
        tls.write_all(&wire)?;
        let mut got = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match tls.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                // A server that closes without close_notify after a complete answer.
                Err(e) if e.kind() == K::UnexpectedEof && !got.is_empty() => break,
                Err(e) => return Err(e),
            }
            if got.len() > MAX_RESPONSE {
                return Err(E::new(K::InvalidData, "the answer is larger than 1 MiB"));
            }
        }
        parse_response(&got, parts.method == http::Method::HEAD)
    }
}

/// The request body instant-acme built (already in memory: polling it once yields it).
fn block_on_body(body: BodyWrapper<bytes::Bytes>) -> std::io::Result<bytes::Bytes> {
    use http_body::Body as _;
    let mut body = std::pin::pin!(body);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut all = Vec::new();
    loop {
        match body.as_mut().poll_frame(&mut cx) {
            std::task::Poll::Ready(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    all.extend_from_slice(&d);
                }
            }
            std::task::Poll::Ready(None) => return Ok(all.into()),
            std::task::Poll::Ready(Some(Err(e))) => match e {},
            std::task::Poll::Pending => {
                return Err(std::io::Error::other("the request body is not ready"))
            }
        }
    }
}

/// A whole HTTP/1.1 response (read until the close) as instant-acme's response type.
fn parse_response(got: &[u8], head_request: bool) -> std::io::Result<BytesResponse> {
    use crate::protocol::http::wire::{Decoder, Limits};
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(got) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(bad("the answer ended inside its head")),
        Err(e) => return Err(bad(&format!("the answer's head is malformed ({e})"))),
    };
    let status = resp.code.unwrap_or(0);
    let fields = resp.headers.iter().map(|h| (h.name, h.value));
    let (mut decoder, _) = Decoder::for_response(status, head_request, fields)
        .map_err(|_| bad("the answer's framing cannot be trusted"))?;
    let mut body = Vec::new();
    let limits = Limits::default();
    decoder
        .decode(&got[head_len..], &limits, |b| body.extend_from_slice(b))
        .map_err(|_| bad("the answer's body is malformed"))?;
    let mut builder = http::Response::builder().status(status);
    for h in resp.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let r = builder
        .body(BodyWrapper::from(body))
        .map_err(|e| bad(&e.to_string()))?;
    Ok(BytesResponse::from(r))
}

impl HttpClient for Blocking {
    fn request(
        &self,
        req: http::Request<BodyWrapper<bytes::Bytes>>,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>>
    {
        let r = self
            .exchange(req)
            .map_err(|e| instant_acme::Error::Other(Box::new(e)));
        Box::pin(async move { r })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_is_read_from_the_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["a.test".into()]).unwrap();
        p.not_before = rcgen::date_time_ymd(2024, 2, 29);
        p.not_after = rcgen::date_time_ymd(2051, 1, 1);
        let cert = p.self_signed(&key).unwrap();
        let (from, until) = validity(cert.der()).unwrap();
        let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs(from), 1_709_164_800, "2024-02-29 (UTCTime)");
        assert_eq!(secs(until), 2_556_144_000, "2051-01-01 (GeneralizedTime)");
        assert_eq!(validity(&cert.der()[..40]), None);
    }

    #[test]
    fn renewal_is_due_two_thirds_into_the_lifetime() {
        let dir = std::env::temp_dir().join(format!("tincan-acme-due-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["a.test".into()]).unwrap();
        p.not_before = rcgen::date_time_ymd(2030, 1, 1);
        p.not_after = rcgen::date_time_ymd(2030, 4, 1); // 90 days
        let f = dir.join("cert.pem");
        std::fs::write(&f, p.self_signed(&key).unwrap().pem()).unwrap();
        let (from, _) =
            validity(&rustls_pki_types::CertificateDer::from_pem_file(&f).unwrap()).unwrap();
        let names = ["a.test".to_string()];
        assert_eq!(
            renewal_due(&f, &names),
            Some(from + Duration::from_secs(60 * 86_400))
        );
        assert_eq!(renewal_due(&dir.join("none.pem"), &names), None);
        // A name added to --acme since: the kept certificate does not cover it.
        let more = ["a.test".to_string(), "b.test".to_string()];
        assert_eq!(renewal_due(&f, &more), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_chunked_answer_is_read_whole() {
        let wire = b"HTTP/1.1 201 Created\r\nReplay-Nonce: n1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let r = parse_response(wire, false).unwrap();
        assert_eq!(r.parts.status, 201);
        assert_eq!(r.parts.headers["replay-nonce"], "n1");
    }

    #[test]
    fn the_alpn_certificate_carries_the_name_and_the_critical_acme_extension() {
        let dir = std::env::temp_dir().join(format!("tincan-acme-alpn-{}", std::process::id()));
        let pem = alpn_certificate("a.test", &[7; 32]).unwrap();
        offer(&dir, "tls-alpn-01", "a.test.pem", pem.as_bytes()).unwrap();
        let c = tls_alpn01_certificate(&dir, "A.test").expect("offered");
        assert!(tls_alpn01_certificate(&dir, "b.test").is_none());
        assert!(tls_alpn01_certificate(&dir, "../a.test").is_none());
        let _ = std::fs::remove_dir_all(&dir);
        let der = c.end_entity_cert().unwrap().as_ref().to_vec();
        let has = |needle: &[u8]| der.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"a.test"));
        // id-pe-acmeIdentifier (1.3.6.1.5.5.7.1.31, RFC 8737 §6.1), critical, the digest.
        let oid = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1f];
        let mut ext = oid.to_vec();
        ext.extend_from_slice(&[0x01, 0x01, 0xff, 0x04, 0x22, 0x04, 0x20]);
        ext.extend_from_slice(&[7; 32]);
        assert!(has(&ext), "no critical acmeIdentifier holding the digest");
    }
}
