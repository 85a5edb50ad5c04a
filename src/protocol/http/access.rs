//! Who may ask, and from where: cross-origin reads (CORS, `--cors`) and HTTP Basic
//! authentication against htpasswd files (`--auth-file`, `--auth PREFIX=FILE`). The session
//! consults the [`Guard`] for every parsed request before it is routed, so static files,
//! uploads, archives, proxy and CGI routes are all behind the same door.
//!
//! The order follows the Fetch standard: a CORS preflight (`OPTIONS` with
//! `Access-Control-Request-Method`) is answered before authentication, since browsers never
//! send credentials on one; every other request under a protected prefix needs them.
//!
//! Passwords are checked with bcrypt (`$2y$`, `$2b$`, `$2a$`, as `htpasswd -B` writes them)
//! or argon2 (`$argon2id$`...); both libraries compare the derived hashes in constant time.
//! bcrypt is slow on purpose, and a browser sends the same credentials with every request: a
//! bounded cache of keyed digests of credentials already checked (right or wrong) makes the
//! cost paid once per credential, not once per request. A user name that is not in the file
//! still costs one hash, so timing does not tell which names exist.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;

use super::message::{error_response, Request, Response, Text};
use super::static_files::path::UrlPath;
use crate::protocol::Peer;

/// Where cross-origin reads are allowed from (`--cors`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cors {
    /// `*`: any origin (and then no credentials, Fetch §3.2.5).
    any: bool,
    /// Exact origins (`https://app.example`), compared as the browser sends them.
    origins: Vec<String>,
    /// The methods a preflight is told are allowed.
    methods: String,
}

/// How long a browser may keep a preflight's answer (Chromium caps it at two hours).
pub const PREFLIGHT_MAX_AGE: u32 = 7200;

impl Cors {
    /// `origins` as given to `--cors` (`*` or `scheme://host[:port]` each); `methods` what the
    /// server accepts. The error is a sentence about the one origin that is malformed.
    pub fn new(origins: &[String], methods: &str) -> Result<Cors, String> {
        let mut cors = Cors {
            any: false,
            origins: Vec::new(),
            methods: methods.to_string(),
        };
        for o in origins {
            let o = o.trim();
            if o == "*" {
                cors.any = true;
                continue;
            }
            let o = o.trim_end_matches('/');
            let ok = ["http://", "https://"].iter().any(|s| {
                o.strip_prefix(s).is_some_and(|host| {
                    !host.is_empty()
                        && !host.bytes().any(|b| {
                            matches!(b, b'/' | b'?' | b'#' | b'@') || !b.is_ascii_graphic()
                        })
                })
            });
            if !ok {
                return Err(format!(
                    "`{o}` is not an origin: give `*` or scheme://host[:port], as a browser \
                     sends it (https://app.example)"
                ));
            }
            cors.origins.push(o.to_ascii_lowercase());
        }
        Ok(cors)
    }

    /// The origin a request comes from, if it is allowed (RFC 6454 §7: one serialized origin).
    fn allowed<'r>(&self, req: &Request<'r>) -> Option<&'r str> {
        let origin = req.header("origin")?.trim();
        (self.any || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))).then_some(origin)
    }

    /// Fields every answer carries: the allowed origin, and `Vary: Origin` whenever the answer
    /// depends on it (a list of origins), so a shared cache does not hand one origin's answer
    /// to another.
    pub fn answer_headers(&self, req: &Request<'_>, headers: &mut Vec<(Text, Text)>) {
        if !self.any {
            headers.push(("Vary".into(), "Origin".into()));
        }
        if let Some(origin) = self.allowed(req) {
            let value = if self.any {
                "*".into()
            } else {
                origin.to_string().into()
            };
            headers.push(("Access-Control-Allow-Origin".into(), value));
        }
    }

    /// The answer to a preflight from an allowed origin (Fetch §3.2.3): 204 with the methods,
    /// the request headers it asked for, and how long to remember it. `None` for anything
    /// else, which is then served as an ordinary request (a refused origin gets no CORS
    /// fields, and the browser refuses the real request).
    fn preflight(&self, req: &Request<'_>) -> Option<Response> {
        if req.method != "OPTIONS" || req.header("access-control-request-method").is_none() {
            return None;
        }
        self.allowed(req)?;
        let mut r = Response::new(204)
            .header("Access-Control-Allow-Methods", self.methods.clone())
            .header("Access-Control-Max-Age", PREFLIGHT_MAX_AGE.to_string());
        // The field names asked for, if they are a plain list of tokens: the origin is trusted,
        // and a list kept here would only break the application's own headers.
        let asked: Vec<&str> = req
            .header_all("access-control-request-headers")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        let token = |h: &&str| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        };
        if !asked.is_empty() && asked.iter().all(token) {
            r = r.header("Access-Control-Allow-Headers", asked.join(", "));
        }
        r.headers
            .push(("Vary".into(), "Access-Control-Request-Headers".into()));
        Some(r)
    }
}

/// A password hash from an htpasswd line.
#[derive(Clone, Debug)]
enum Hash {
    Bcrypt(String),
    Argon2(String),
}

impl Hash {
    fn parse(h: &str) -> Result<Hash, String> {
        if ["$2y$", "$2b$", "$2a$"].iter().any(|p| h.starts_with(p)) {
            return Ok(Hash::Bcrypt(h.to_string()));
        }
        if h.starts_with("$argon2") {
            return Ok(Hash::Argon2(h.to_string()));
        }
        let kind = if h.starts_with("$apr1$") {
            "MD5 ($apr1$)"
        } else if h.starts_with("{SHA}") {
            "SHA-1 ({SHA})"
        } else if h.starts_with("$5$") || h.starts_with("$6$") || h.starts_with("$1$") {
            "crypt(3)"
        } else {
            "an unknown scheme, or not at all"
        };
        Err(format!(
            "is hashed with {kind}; only bcrypt and argon2 are accepted: write it again with \
             `htpasswd -B FILE USER`"
        ))
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
            Hash::Argon2(h) => {
                use argon2::password_hash::PasswordVerifier;
                argon2::Argon2::default()
                    .verify_password(password, h.as_str())
                    .is_ok()
            }
        }
    }
}

/// The users of one htpasswd file, read at start (restart to read it again).
#[derive(Debug)]
pub struct AuthFile {
    path: PathBuf,
    users: Vec<(String, Hash)>,
}

impl AuthFile {
    /// Read `path`: `user:hash` lines, `#` comments and blank lines. The error is a sentence
    /// naming the file and line.
    pub fn load(path: &Path) -> Result<AuthFile, String> {
        let shown = path.display();
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
        let mut users = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(format!(
                    "{shown} line {}: not `user:hash` (make the file with `htpasswd -cB {shown} USER`)",
                    i + 1
                ));
            };
            let hash = Hash::parse(hash.trim())
                .map_err(|e| format!("{shown} line {}: the password of {user:?} {e}", i + 1))?;
            users.push((user.to_string(), hash));
        }
        if users.is_empty() {
            return Err(format!(
                "{shown} has no users; add one with `htpasswd -B {shown} USER`"
            ));
        }
        Ok(AuthFile {
            path: path.to_path_buf(),
            users,
        })
    }
}

/// Credentials checked at most this many, right and wrong each, are remembered; then the
/// memory is cleared and starts again (a flood of made-up passwords cannot grow it).
pub const AUTH_CACHE_ENTRIES: usize = 4096;

/// Remembered outcomes, keyed by a digest of (file, user, password) under a key drawn at
/// start, so the memory holds no password and its digests are useless elsewhere.
#[derive(Debug)]
struct Verified {
    key: ring::hmac::Key,
    right: HashSet<[u8; 32]>,
    wrong: HashSet<[u8; 32]>,
}

/// One protected prefix.
#[derive(Debug)]
struct Rule {
    /// Decoded path segments the rule covers (none: everything).
    segments: Vec<Vec<u8>>,
    /// The prefix as given, for the log.
    prefix: String,
    file: std::sync::Arc<AuthFile>,
}

/// What stands before every route: CORS and authentication.
#[derive(Debug, Default)]
pub struct Guard {
    cors: Option<Cors>,
    /// Longest prefix first.
    rules: Vec<Rule>,
    verified: Option<Mutex<Verified>>,
}

/// Why a [`Guard`] could not be built: a prefix written wrong, or an htpasswd file that cannot
/// be read or used.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("{0}")]
    Prefix(String),
    #[error("{0}")]
    File(String),
}

/// The realm browsers show in their password prompt.
pub const REALM: &str = "tincan";

impl Guard {
    /// `auth`: (URL prefix, file) pairs; `/` covers everything.
    pub fn new(cors: Option<Cors>, auth: &[(String, PathBuf)]) -> Result<Guard, GuardError> {
        let mut rules = Vec::new();
        let mut files: Vec<std::sync::Arc<AuthFile>> = Vec::new();
        for (prefix, path) in auth {
            if !prefix.starts_with('/') {
                return Err(GuardError::Prefix(format!(
                    "`{prefix}` must be a URL path starting with /"
                )));
            }
            let url = UrlPath::parse(prefix, true)
                .map_err(|_| GuardError::Prefix(format!("`{prefix}` is not a plain URL path")))?;
            let file = match files.iter().find(|f| f.path == *path) {
                Some(f) => f.clone(),
                None => {
                    let f = std::sync::Arc::new(AuthFile::load(path).map_err(GuardError::File)?);
                    files.push(f.clone());
                    f
                }
            };
            if rules.iter().any(|r: &Rule| r.segments == url.segments) {
                return Err(GuardError::Prefix(format!("`{prefix}` is given twice")));
            }
            rules.push(Rule {
                segments: url.segments,
                prefix: prefix.clone(),
                file,
            });
        }
        rules.sort_by_key(|r| std::cmp::Reverse(r.segments.len()));
        let verified = (!rules.is_empty()).then(|| {
            let rng = ring::rand::SystemRandom::new();
            let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
                .expect("the system's random source");
            Mutex::new(Verified {
                key,
                right: HashSet::new(),
                wrong: HashSet::new(),
            })
        });
        Ok(Guard {
            cors,
            rules,
            verified,
        })
    }

    /// Fields every answer to `req` carries (CORS).
    pub fn answer_headers(&self, req: &Request<'_>, headers: &mut Vec<(Text, Text)>) {
        if let Some(c) = &self.cors {
            c.answer_headers(req, headers);
        }
    }

    /// Nothing to guard: the session need not ask.
    pub fn is_empty(&self) -> bool {
        self.cors.is_none() && self.rules.is_empty()
    }

    /// The answer that ends `req` here (a preflight's 204, a 401, a 400 for a path that cannot
    /// be matched), or `None` to serve it.
    pub fn gate(&self, req: &Request<'_>, peer: &Peer) -> Option<Response> {
        if let Some(r) = self.cors.as_ref().and_then(|c| c.preflight(req)) {
            return Some(r);
        }
        if self.rules.is_empty() || req.path == "*" {
            return None;
        }
        // The same reading of the path every route makes (an encoded slash kept, as a proxy
        // route keeps it, and counted as a separator here so it cannot step around a prefix).
        let Ok(url) = UrlPath::parse_keeping_encoded_separators(req.path, true) else {
            return Some(error_response(400, "The request path is malformed."));
        };
        let segs: Vec<&[u8]> = url
            .segments
            .iter()
            .flat_map(|s| s.split(|&b| b == b'/' || b == b'\\'))
            .collect();
        let rule = self.rules.iter().find(|r| {
            segs.len() >= r.segments.len()
                && r.segments.iter().zip(&segs).all(|(a, b)| a[..] == b[..])
        })?;
        let creds = req
            .header("authorization")
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .and_then(|(_, b64)| {
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .ok()
            });
        let user = match creds {
            Some(c) => {
                let (user, pass) = match c.iter().position(|&b| b == b':') {
                    Some(i) => (&c[..i], &c[i + 1..]),
                    None => (&c[..], &b""[..]),
                };
                if self.check(&rule.file, user, pass) {
                    return None;
                }
                Some(String::from_utf8_lossy(user).into_owned())
            }
            None => None,
        };
        if let Some(user) = user {
            static FAILED: crate::logging::Throttle = crate::logging::Throttle::new();
            if let Some(skipped) = FAILED.admit() {
                tracing::warn!(
                    peer = %peer.remote,
                    "authentication failed for user {user:?} on {} (prefix {}){}",
                    url.display(),
                    rule.prefix,
                    crate::logging::more_like_it(skipped)
                );
            }
        }
        Some(
            error_response(401, "This address needs a user name and password.").header(
                "WWW-Authenticate",
                format!("Basic realm=\"{REALM}\", charset=\"UTF-8\""),
            ),
        )
    }

    /// Is `user:pass` right for `file`? Remembered either way.
    fn check(&self, file: &AuthFile, user: &[u8], pass: &[u8]) -> bool {
        let Some(verified) = &self.verified else {
            return false;
        };
        let digest = {
            let v = verified.lock().unwrap_or_else(|e| e.into_inner());
            let mut ctx = ring::hmac::Context::with_key(&v.key);
            ctx.update(file.path.as_os_str().as_encoded_bytes());
            ctx.update(&[0]);
            ctx.update(&(user.len() as u64).to_be_bytes());
            ctx.update(user);
            ctx.update(pass);
            let mut d = [0u8; 32];
            d.copy_from_slice(ctx.sign().as_ref());
            if v.right.contains(&d) {
                return true;
            }
            if v.wrong.contains(&d) {
                return false;
            }
            d
        };
        // The slow part runs without the lock, so one check does not hold up the others.
        let found = file.users.iter().find(|(u, _)| u.as_bytes() == user);
        let ok = match found {
            Some((_, hash)) => hash.verify(pass),
            None => {
                // As long as a real check, so that a missing name does not answer faster.
                let _ = file.users[0].1.verify(pass);
                false
            }
        };
        let mut v = verified.lock().unwrap_or_else(|e| e.into_inner());
        let set = if ok { &mut v.right } else { &mut v.wrong };
        if set.len() >= AUTH_CACHE_ENTRIES {
            set.clear();
        }
        set.insert(digest);
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http::Version;

    fn req<'a>(method: &'a str, path: &'a str, headers: &'a [httparse::Header<'a>]) -> Request<'a> {
        Request {
            method,
            target: path,
            path,
            query: None,
            version: Version::Http11,
            headers,
        }
    }

    fn h<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header {
            name,
            value: value.as_bytes(),
        }
    }

    #[test]
    fn origins_must_be_scheme_and_host() {
        assert!(Cors::new(&["https://a.example".into()], "GET").is_ok());
        assert!(Cors::new(&["*".into()], "GET").is_ok());
        for bad in ["a.example", "https://", "https://a/b", "ftp://a"] {
            assert!(Cors::new(&[bad.into()], "GET").is_err(), "{bad}");
        }
    }

    #[test]
    fn a_listed_origin_is_echoed_with_vary_and_others_get_only_vary() {
        let cors = Cors::new(&["https://a.example".into()], "GET, HEAD, OPTIONS").unwrap();
        let hs = [h("Origin", "https://a.example")];
        let mut out = Vec::new();
        cors.answer_headers(&req("GET", "/", &hs), &mut out);
        assert!(out.contains(&("Vary".into(), "Origin".into())));
        assert!(out.contains(&(
            "Access-Control-Allow-Origin".into(),
            "https://a.example".into()
        )));
        let hs = [h("Origin", "https://evil.example")];
        let mut out = Vec::new();
        cors.answer_headers(&req("GET", "/", &hs), &mut out);
        assert_eq!(out, vec![("Vary".into(), "Origin".into())]);
    }

    #[test]
    fn a_preflight_lists_methods_and_the_asked_headers() {
        let cors = Cors::new(&["*".into()], "GET, HEAD, PUT, OPTIONS").unwrap();
        let hs = [
            h("Origin", "https://x.example"),
            h("Access-Control-Request-Method", "PUT"),
            h("Access-Control-Request-Headers", "content-type, x-token"),
        ];
        let r = cors.preflight(&req("OPTIONS", "/f", &hs)).unwrap();
        assert_eq!(r.status, 204);
        assert_eq!(
            r.get_header("Access-Control-Allow-Methods"),
            Some("GET, HEAD, PUT, OPTIONS")
        );
        assert_eq!(
            r.get_header("Access-Control-Allow-Headers"),
            Some("content-type, x-token")
        );
        // A plain OPTIONS is no preflight.
        assert!(cors.preflight(&req("OPTIONS", "/f", &hs[..1])).is_none());
    }

    #[test]
    fn hashes_other_than_bcrypt_and_argon2_are_refused_with_what_to_do() {
        let e = Hash::parse("$apr1$abc$def").unwrap_err();
        assert!(e.contains("MD5") && e.contains("htpasswd -B"), "{e}");
        assert!(Hash::parse("$2y$05$abcdefghijklmnopqrstuu").is_ok());
    }

    #[test]
    fn argon2_hashes_are_checked_too() {
        use argon2::password_hash::PasswordHasher;
        let phc = argon2::Argon2::default()
            .hash_password_with_salt(b"pw", b"0123456789abcdef")
            .unwrap()
            .to_string();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        let h = Hash::parse(&phc).unwrap();
        assert!(h.verify(b"pw"));
        assert!(!h.verify(b"pW"));
    }

    #[test]
    fn right_credentials_pass_and_are_remembered_wrong_ones_get_401() {
        let dir = std::env::temp_dir().join(format!("tincan-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("users");
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(&file, format!("# users\nalice:{hash}\n")).unwrap();
        let g = Guard::new(None, &[("/private".into(), file.clone())]).unwrap();
        let peer = Peer {
            remote: crate::protocol::PeerAddr::Tcp("127.0.0.1:5000".parse().unwrap()),
            local: crate::protocol::PeerAddr::Tcp("127.0.0.1:80".parse().unwrap()),
        };
        let good = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
        );
        let bad = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:guess")
        );
        assert!(g.gate(&req("GET", "/public/x", &[]), &peer).is_none());
        let r = g.gate(&req("GET", "/private/x", &[]), &peer).unwrap();
        assert_eq!(r.status, 401);
        assert!(r
            .get_header("WWW-Authenticate")
            .unwrap()
            .starts_with("Basic realm="));
        for path in ["/private", "/private/a/b", "/x/../private/", "/%70rivate/x"] {
            let hs = [h("Authorization", &bad)];
            assert_eq!(
                g.gate(&req("GET", path, &hs), &peer).unwrap().status,
                401,
                "{path}"
            );
            let hs = [h("Authorization", &good)];
            assert!(g.gate(&req("GET", path, &hs), &peer).is_none(), "{path}");
        }
        // An encoded slash does not step around the prefix.
        assert_eq!(
            g.gate(&req("GET", "/private%2Fx", &[]), &peer)
                .unwrap()
                .status,
            401
        );
        let v = g.verified.as_ref().unwrap().lock().unwrap();
        assert_eq!((v.right.len(), v.wrong.len()), (1, 1));
        drop(v);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
