//! Flags over `tincan.toml` over the library's defaults, for `serve` (and the HTTP flags
//! `hello` shares): each group of flags becomes the library value it configures (`Limits`,
//! `HttpOptions`, the static handler's settings, the gateway, the access guard), and each
//! refusal is worded with the flag that caused it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::*;

impl GatewayArgs {
    /// The proxy and CGI routes these flags (over `cfg`) ask for; `None` when there are none,
    /// which leaves the static handler exactly as it is without them.
    pub fn gateway(&self, cfg: &Config, root: &std::path::Path) -> Result<Option<Arc<Gateway>>> {
        let list = |flag: &Vec<String>, c: &Option<crate::config::OneOrMany>| {
            if flag.is_empty() {
                c.clone().map(|v| v.into_vec()).unwrap_or_default()
            } else {
                flag.clone()
            }
        };
        let proxies = list(&self.proxy, &cfg.proxy);
        let cgis = list(&self.cgi, &cfg.cgi);
        // Checked even with no route to use them: a bad value is a mistake either way.
        let defaults = GatewayConfig::default();
        let timeout = match self.upstream_timeout.or(cfg.upstream_timeout) {
            Some(v) => seconds("upstream-timeout", v)?,
            None => defaults.timeout,
        };
        let fail_timeout = match self.upstream_fail_timeout.or(cfg.upstream_fail_timeout) {
            Some(v) => seconds("upstream-fail-timeout", v)?,
            None => defaults.fail_timeout,
        };
        let tunnel_idle = match self.tunnel_idle_timeout.or(cfg.tunnel_idle_timeout) {
            Some(v) => seconds("tunnel-idle-timeout", v)?,
            None => defaults.tunnel_idle,
        };
        let keepalive = self
            .upstream_keepalive
            .or(cfg.upstream_keepalive)
            .unwrap_or(defaults.keepalive);
        let upstream_ca = self.upstream_ca.clone().or_else(|| cfg.upstream_ca.clone());
        // As the clients refuse --tls-ca where no TLS is spoken: a CA nothing is checked
        // against is a mistake (an http:// meant as https://), not a setting.
        let unused_ca = || {
            Error::Usage(
                "--upstream-ca is about the upstreams' TLS certificates, and no --proxy upstream \
                 is https://; write the upstream as https://HOST or leave out --upstream-ca"
                    .into(),
            )
        };
        if proxies.is_empty() && cgis.is_empty() {
            return match upstream_ca {
                Some(_) => Err(unused_ca()),
                None => Ok(None),
            };
        }
        let proxies = pairs("proxy", "PREFIX=URL", &proxies)?;
        let cgis: Vec<(String, PathBuf)> = pairs("cgi", "PREFIX=DIR", &cgis)?
            .into_iter()
            .map(|(p, d)| (p, PathBuf::from(d)))
            .collect();
        let https = proxies
            .iter()
            .flat_map(|(_, urls)| urls.split(','))
            .any(|u| {
                u.trim()
                    .get(..8)
                    .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
            });
        if upstream_ca.is_some() && !https {
            return Err(unused_ca());
        }
        let tls = match (&upstream_ca, https) {
            (Some(f), _) => Some(crate::tls::client::config(
                &crate::tls::client::Trust::File(f.clone()),
                &[b"http/1.1"],
            )?),
            (None, true) => Some(crate::tls::client::config(
                &crate::tls::client::Trust::System,
                &[b"http/1.1"],
            )?),
            (None, false) => None,
        };
        let gw = Gateway::new(
            &proxies,
            &cgis,
            GatewayConfig {
                timeout,
                keepalive,
                fail_timeout,
                tunnel_idle,
                tls,
            },
        )
        .map_err(|e| {
            let line = match e.flag() {
                Some(flag) => format!("--{flag} {e}"),
                None => e.to_string(),
            };
            if e.is_missing_file() {
                Error::Setup(line)
            } else {
                Error::Usage(line)
            }
        })?;
        Ok(Some(Arc::new(gw.with_document_root(root))))
    }
}

impl AccessArgs {
    /// The guard these flags (over `cfg`) ask for; `None` when they ask for nothing. `methods`
    /// is what a CORS preflight is told the server accepts.
    pub fn guard(&self, cfg: &Config, methods: &str) -> Result<Option<Arc<Guard>>> {
        let list = |flag: &Vec<String>, c: &Option<crate::config::OneOrMany>| {
            if flag.is_empty() {
                c.clone().map(|v| v.into_vec()).unwrap_or_default()
            } else {
                flag.clone()
            }
        };
        let origins = list(&self.cors, &cfg.cors);
        let cors = if origins.is_empty() {
            None
        } else {
            Some(Cors::new(&origins, methods).map_err(|e| Error::Usage(format!("--cors {e}")))?)
        };
        let mut auth: Vec<(String, PathBuf)> =
            pairs("auth", "PREFIX=FILE", &list(&self.auth, &cfg.auth))?
                .into_iter()
                .map(|(p, f)| (p, PathBuf::from(f)))
                .collect();
        if let Some(f) = self.auth_file.clone().or_else(|| cfg.auth_file.clone()) {
            auth.push(("/".into(), f));
        }
        let guard = Guard::new(cors, &auth).map_err(|e| {
            let flag = if self.auth.is_empty() && cfg.auth.is_none() {
                "--auth-file"
            } else {
                "--auth"
            };
            match e {
                GuardError::Prefix(e) => Error::Usage(format!("{flag}: {e}")),
                GuardError::File(e) => Error::Setup(format!("{flag}: {e}")),
            }
        })?;
        Ok((!guard.is_empty()).then(|| Arc::new(guard)))
    }
}

/// What the file flags and `tincan.toml` ask of the static handler; `None` keeps its default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileSettings {
    pub root: PathBuf,
    pub index: Option<Vec<String>>,
    pub listing: Option<bool>,
    pub show_dotfiles: bool,
    pub follow_symlinks: bool,
    pub cache_control: Vec<(String, String)>,
    pub compress: Option<bool>,
    pub error_pages: Vec<(u16, String)>,
    pub fallback: Option<String>,
    pub file_cache: Option<u64>,
    pub file_cache_fds: Option<usize>,
    /// `--upload` prefixes (none: uploads off) and `--upload-overwrite`.
    pub upload: Vec<String>,
    pub upload_overwrite: bool,
    pub archives: Option<bool>,
}

/// Fill the shared server flags the command line left unset from the config file.
///
/// Certificates come from the flags or from the file, never half from each: a source on the
/// command line (`--tls-cert`/`--tls-key`, `--tls-self-signed`, `--acme`) replaces the file's,
/// and the file's `acme_*` keys with it. Otherwise the `acme_*` settings are taken one by one,
/// flag over key, so `acme` in the file and `--acme-email` on the command line make one. Clap
/// never sees the file, so its TLS keys are checked here as clap checks the flags.
pub fn merge_server_args(s: &mut ServerArgs, cfg: &Config) -> Result<()> {
    if s.listen.is_empty() {
        if let Some(l) = &cfg.listen {
            s.listen = l.clone().into_vec();
        }
    }
    s.model = s.model.or(cfg.model);
    s.workers = s.workers.or(cfg.workers);
    s.poller = s.poller.or(cfg.poller);
    s.max_connections = s.max_connections.or(cfg.max_connections);
    s.backlog = s.backlog.or(cfg.backlog);
    s.reuse_port = s.reuse_port || cfg.reuse_port.unwrap_or(false);
    s.defer_accept = s.defer_accept.or(cfg.defer_accept);
    s.grace = s.grace.or(cfg.grace);
    s.send_timeout = s.send_timeout.or(cfg.send_timeout);
    s.busy_poll = s.busy_poll.or(cfg.busy_poll);
    s.user = s.user.clone().or_else(|| cfg.user.clone());
    s.group = s.group.clone().or_else(|| cfg.group.clone());
    s.umask = s.umask.clone().or_else(|| cfg.umask.clone());
    s.kernel_tls = s.kernel_tls.or(cfg.kernel_tls.map(Switch::from));
    tls_keys(cfg)?;
    let flags_source = !s.tls_cert.is_empty()
        || !s.tls_key.is_empty()
        || s.tls_self_signed.is_some()
        || !s.acme.is_empty();
    if !flags_source {
        let paths = |v: &Option<crate::config::OneOrMany>| -> Vec<PathBuf> {
            v.clone()
                .map(|v| v.into_vec().into_iter().map(PathBuf::from).collect())
                .unwrap_or_default()
        };
        s.tls_cert = paths(&cfg.tls_cert);
        s.tls_key = paths(&cfg.tls_key);
        s.tls_self_signed = cfg.tls_self_signed.clone();
        s.acme = cfg.acme.clone().map(|v| v.into_vec()).unwrap_or_default();
    }
    if flags_source && s.acme.is_empty() && cfg.acme.is_some() {
        // The file's ACME certificate was replaced whole by the command line's source.
        return Ok(());
    }
    if s.acme.is_empty() {
        if let Some(key) = acme_key(cfg) {
            return Err(Error::Usage(format!(
                "{key} in the config file is about the certificate `acme` orders, and no acme \
                 domain is given (nor --acme); add acme = \"DOMAIN\" or leave out {key}"
            )));
        }
    }
    s.acme_email = s.acme_email.take().or_else(|| cfg.acme_email.clone());
    s.acme_directory = s
        .acme_directory
        .take()
        .or_else(|| cfg.acme_directory.clone());
    s.acme_state = s.acme_state.take().or_else(|| cfg.acme_state.clone());
    s.acme_ca = s.acme_ca.take().or_else(|| cfg.acme_ca.clone());
    Ok(())
}

/// The TLS keys of the file, checked alone as clap checks the flags (`conflicts_with` in
/// [`ServerArgs`]): one source of certificates, and `tls_cert` and `tls_key` in pairs.
fn tls_keys(cfg: &Config) -> Result<()> {
    let given = [
        ("tls_cert", cfg.tls_cert.is_some()),
        ("tls_key", cfg.tls_key.is_some()),
        ("tls_self_signed", cfg.tls_self_signed.is_some()),
        ("acme", cfg.acme.is_some()),
    ];
    // The pairs clap refuses together on the command line, the later key first as clap says it.
    for (key, other) in [
        ("tls_self_signed", "tls_cert"),
        ("tls_self_signed", "tls_key"),
        ("acme", "tls_cert"),
        ("acme", "tls_key"),
        ("acme", "tls_self_signed"),
    ] {
        let has = |k: &str| given.iter().any(|&(g, on)| g == k && on);
        if has(key) && has(other) {
            return Err(Error::Usage(format!(
                "{key} cannot be used with {other} in the config file: each is a source of \
                 certificates; keep one"
            )));
        }
    }
    let count = |v: &Option<crate::config::OneOrMany>| v.clone().map_or(0, |v| v.into_vec().len());
    let (certs, keys) = (count(&cfg.tls_cert), count(&cfg.tls_key));
    if certs != keys {
        return Err(Error::Usage(format!(
            "tls_cert and tls_key in the config file come in pairs, but it gives {certs} \
             tls_cert and {keys} tls_key"
        )));
    }
    Ok(())
}

/// The first `acme_*` key of the file (each is about the `acme` certificate), if any.
fn acme_key(cfg: &Config) -> Option<&'static str> {
    [
        ("acme_email", cfg.acme_email.is_some()),
        ("acme_directory", cfg.acme_directory.is_some()),
        ("acme_state", cfg.acme_state.is_some()),
        ("acme_ca", cfg.acme_ca.is_some()),
    ]
    .into_iter()
    .find_map(|(key, given)| given.then_some(key))
}

/// `--FLAG` in seconds, more than 0 (the one rule, [`crate::units::seconds`]).
fn seconds(flag: &str, v: f64) -> Result<Duration> {
    crate::units::seconds(&format!("--{flag}"), v, false)
}

fn size(
    flag: &str,
    flag_v: Option<u64>,
    cfg_v: &Option<crate::config::Size>,
    default: u64,
) -> Result<u64> {
    let v = match (flag_v, cfg_v) {
        (Some(v), _) => v,
        (None, Some(s)) => s.bytes().map_err(|e| {
            let key = flag.replace('-', "_");
            Error::Usage(format!("{key} in the config file: {e}"))
        })?,
        (None, None) => default,
    };
    if v == 0 {
        return Err(Error::Usage(format!("--{flag} must be more than 0")));
    }
    Ok(v)
}

impl HttpArgs {
    /// The limits these flags (over `cfg`, over the defaults) ask for.
    pub fn limits(&self, cfg: &Config) -> Result<Limits> {
        let d = Limits::default();
        let as_usize = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let max_headers = self
            .max_headers
            .or(cfg.max_headers)
            .unwrap_or(d.max_headers);
        if max_headers == 0 {
            return Err(Error::Usage("--max-headers must be more than 0".into()));
        }
        let max_requests = self
            .max_requests_per_connection
            .or(cfg.max_requests_per_connection)
            .unwrap_or(d.max_requests_per_connection);
        if max_requests == 0 {
            return Err(Error::Usage(
                "--max-requests-per-connection must be more than 0".into(),
            ));
        }
        let timeout = |flag: &str, f: Option<f64>, c: Option<f64>, def: Duration| match f.or(c) {
            Some(v) => seconds(flag, v),
            None => Ok(def),
        };
        Ok(Limits {
            max_request_line: as_usize(size(
                "max-request-line",
                self.max_request_line,
                &cfg.max_request_line,
                d.max_request_line as u64,
            )?),
            max_header: as_usize(size(
                "max-header",
                self.max_header,
                &cfg.max_header,
                d.max_header as u64,
            )?),
            max_head: as_usize(size(
                "max-head",
                self.max_head,
                &cfg.max_head,
                d.max_head as u64,
            )?),
            max_headers,
            max_body: size("max-body", self.max_body, &cfg.max_body, d.max_body)?,
            head_timeout: timeout(
                "head-timeout",
                self.head_timeout,
                cfg.head_timeout,
                d.head_timeout,
            )?,
            body_timeout: timeout(
                "body-timeout",
                self.body_timeout,
                cfg.body_timeout,
                d.body_timeout,
            )?,
            keepalive_timeout: timeout(
                "keepalive-timeout",
                self.keepalive_timeout,
                cfg.keepalive_timeout,
                d.keepalive_timeout,
            )?,
            max_requests_per_connection: max_requests,
        })
    }

    /// Connection options (headers, access log, Server token) for a server running `model`,
    /// over TLS or not.
    pub fn options(&self, cfg: &Config, model: Model, tls: bool) -> Result<HttpOptions> {
        let mut raw = self.header.clone();
        if raw.is_empty() {
            if let Some(h) = &cfg.header {
                raw = h.clone().into_vec();
            }
        }
        let mut extra_headers = raw
            .iter()
            .map(|h| parse_header(h))
            .collect::<Result<Vec<_>>>()?;
        if let Some(age) = self.hsts.or(cfg.hsts) {
            if !tls {
                return Err(Error::Usage(
                    "--hsts needs TLS (--tls-cert, --tls-self-signed or --acme): browsers \
                     ignore Strict-Transport-Security over plain HTTP"
                        .into(),
                ));
            }
            // RFC 6797 §6.1: the header a host sends over a secure transport.
            extra_headers.push((
                "Strict-Transport-Security".to_string(),
                format!("max-age={age}"),
            ));
        }
        let spec = self
            .access_log
            .clone()
            .or_else(|| cfg.access_log.clone())
            .unwrap_or_else(|| "-".into());
        let format = self
            .access_log_format
            .or(cfg.access_log_format)
            .unwrap_or_default();
        let access_log = match spec.as_str() {
            "off" | "" => None,
            s => Some(AccessLog::open_as(s, format)?),
        };
        let server_tokens = !self.hide_server
            && cfg.server_tokens.unwrap_or(true)
            && !cfg.hide_server.unwrap_or(false);
        // One connection at a time cannot hold an idle keep-alive client while others wait.
        let keep_alive = model != Model::Iterative;
        if !keep_alive {
            tracing::info!(
                "the iterative model serves one connection at a time, so keep-alive is off"
            );
        }
        let mode = match (self.http2, &cfg.http2) {
            (Some(m), _) => m,
            (None, Some(k)) => http2_key(k)?,
            (None, None) => Http2Mode::On,
        };
        let http2 = mode != Http2Mode::Off;
        let only = mode == Http2Mode::Only;
        let max_streams = (self.h2_max_streams.or(cfg.h2_max_streams))
            .unwrap_or(crate::protocol::http::H2Options::default().max_streams);
        if max_streams == 0 {
            return Err(Error::Usage(
                "h2_max_streams must be at least 1 in the config file".into(),
            ));
        }
        Ok(HttpOptions {
            server_tokens,
            keep_alive,
            extra_headers,
            access_log,
            http2,
            h2: crate::protocol::http::H2Options { max_streams, only },
            ..HttpOptions::default()
        })
    }
}

/// The `http2` key of tincan.toml: a boolean, or the flag's words.
pub(super) fn http2_key(k: &crate::config::Http2Key) -> Result<Http2Mode> {
    use crate::config::Http2Key;
    match k {
        Http2Key::Bool(true) => Ok(Http2Mode::On),
        Http2Key::Bool(false) => Ok(Http2Mode::Off),
        Http2Key::Text(t) => match t.as_str() {
            "on" => Ok(Http2Mode::On),
            "off" => Ok(Http2Mode::Off),
            "only" => Ok(Http2Mode::Only),
            _ => Err(Error::Usage(format!(
                "http2 = {t:?} in the config file: use true, false, \"on\", \"off\" or \"only\""
            ))),
        },
    }
}

/// `"Name: value"` → (name, value), refusing what would break the response head.
pub fn parse_header(h: &str) -> Result<(String, String)> {
    let bad = || {
        Error::Usage(format!(
            "--header {h:?} is not `Name: value` (a token name, a one-line value)"
        ))
    };
    let (name, value) = h.split_once(':').ok_or_else(bad)?;
    let name = name.trim();
    let value = value.trim();
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty()
        || !name.bytes().all(token)
        || value.bytes().any(|b| b.is_ascii_control() && b != b'\t')
    {
        return Err(bad());
    }
    Ok((name.to_string(), value.to_string()))
}

/// `NAME=VALUE` items of a repeatable flag; `form` is how its help writes them (`PREFIX=URL`).
fn pairs(flag: &str, form: &str, items: &[String]) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|i| {
            i.split_once('=')
                .filter(|(k, v)| !k.trim().is_empty() && !v.trim().is_empty())
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| Error::Usage(format!("--{flag} {i:?} is not {form}")))
        })
        .collect()
}

impl FileArgs {
    /// What the flags (over `cfg`) ask of the static handler, for the document root `root`.
    pub fn settings(&self, root: PathBuf, cfg: &Config) -> Result<FileSettings> {
        let list = |flag: &Vec<String>, c: &Option<crate::config::OneOrMany>| {
            if flag.is_empty() {
                c.clone().map(|v| v.into_vec()).unwrap_or_default()
            } else {
                flag.clone()
            }
        };
        let index = list(&self.index, &cfg.index);
        let cache_control = pairs(
            "cache-control",
            "GLOB=VALUE",
            &list(&self.cache_control, &cfg.cache_control),
        )?;
        let error_pages = pairs(
            "error-page",
            "CODE=PATH",
            &list(&self.error_page, &cfg.error_page),
        )?
        .into_iter()
        .map(|(code, path)| match code.parse::<u16>() {
            Ok(c) if (400..=599).contains(&c) => Ok((c, path)),
            _ => Err(Error::Usage(format!(
                "--error-page {code}={path}: {code} is not an error status (400-599)"
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
        Ok(FileSettings {
            root,
            index: (!index.is_empty()).then_some(index),
            listing: self.listing.map(Switch::on).or(cfg.listing),
            show_dotfiles: self.show_dotfiles || cfg.show_dotfiles.unwrap_or(false),
            follow_symlinks: self.follow_symlinks || cfg.follow_symlinks.unwrap_or(false),
            cache_control,
            compress: self.compress.map(Switch::on).or(cfg.compress),
            error_pages,
            fallback: self.fallback.clone().or_else(|| cfg.fallback.clone()),
            file_cache: match (self.file_cache, &cfg.file_cache) {
                (Some(v), _) => Some(v),
                (None, Some(s)) => Some(
                    s.bytes()
                        .map_err(|e| Error::Usage(format!("file-cache in the config file: {e}")))?,
                ),
                (None, None) => None,
            },
            file_cache_fds: self.file_cache_fds.or(cfg.file_cache_fds),
            upload: list(&self.upload, &cfg.upload),
            upload_overwrite: self.upload_overwrite || cfg.upload_overwrite.unwrap_or(false),
            archives: self.archives.map(Switch::on).or(cfg.archives),
        })
    }
}

/// The document root: DIR, else `root` from the config file, else `.`; it must be a directory.
pub(super) fn document_root(dir: Option<PathBuf>, cfg: &Config) -> Result<PathBuf> {
    let root = dir
        .or_else(|| cfg.root.clone())
        .unwrap_or_else(|| PathBuf::from("."));
    match std::fs::metadata(&root) {
        Ok(m) if m.is_dir() => Ok(root),
        Ok(_) => Err(Error::Setup(format!(
            "{} is not a directory; give the directory to serve (tincan serve DIR)",
            root.display()
        ))),
        Err(_) => Err(Error::Setup(format!(
            "{} does not exist; give the directory to serve (tincan serve DIR)",
            root.display()
        ))),
    }
}

/// A refused file-serving setting, worded with the flag (and `tincan.toml` key) that sets it:
/// a usage error (exit 2), but for a document root this machine does not have (exit 1).
pub(super) fn static_refusal(e: static_files::ConfigError) -> Error {
    use static_files::ConfigError as C;
    Error::Usage(match &e {
        // A root that is not there is this machine's state, not a mistake in the command.
        C::RootMissing(_) | C::RootUnusable { .. } | C::RootNotDirectory(_) => {
            return Error::Setup(e.to_string())
        }
        C::IndexName(name) => {
            format!("--index `{name}` must be a plain file name, without slashes")
        }
        C::ErrorPageStatus(_) => format!("--error-page {e}"),
        C::ErrorPagePath(p) => format!("--error-page `{p}` must be a URL path starting with /"),
        C::FallbackPath(f) => format!("--fallback `{f}` must be a URL path starting with /"),
        C::CacheGlob(glob, why) => {
            format!("--cache-control pattern `{glob}` is not a valid glob ({why})")
        }
        C::CacheValue(glob) => format!(
            "--cache-control value for `{glob}` must be non-empty text without control characters"
        ),
    })
}
