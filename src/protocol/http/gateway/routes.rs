//! The route table: built once from the configured prefixes and upstream lists (or script
//! directories), each upstream's address resolved at start, the longest prefix first.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{Duration, Instant};

use super::redirect::redirect_from;
use super::Gateway;
use crate::protocol::http::proxy::{Target, Upstream};
use crate::protocol::http::static_files::path::UrlPath;
use crate::protocol::Dial;

/// How outbound exchanges behave, whatever the route.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Connect timeout, and the longest an upstream or script may leave an exchange without
    /// progress (nginx's `proxy_connect_timeout`/`proxy_read_timeout`/`proxy_send_timeout`,
    /// in one number).
    pub timeout: Duration,
    /// Idle connections kept per upstream for reuse (`--upstream-keepalive`; 0: none).
    pub keepalive: usize,
    /// How long a tunnel (an upgraded connection) may carry nothing either way.
    pub tunnel_idle: Duration,
    /// How long an upstream that refused or timed out a connection is left out.
    pub fail_timeout: Duration,
    /// Whom `https://` upstreams must prove themselves to (the system's CA certificates or
    /// `--upstream-ca`); `None` when no route has one.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            timeout: Duration::from_secs(60),
            keepalive: 32,
            fail_timeout: Duration::from_secs(10),
            tunnel_idle: Duration::from_secs(600),
            tls: None,
        }
    }
}

/// One upstream of a proxy route, resolved at start.
#[derive(Debug)]
pub(super) struct Server {
    pub(super) up: Upstream,
    pub(super) dial: Dial,
    /// What a failure's log line names: the route and this upstream (made once, at start).
    pub(super) label: std::sync::Arc<str>,
    /// Left out until this many milliseconds after `Gateway::epoch` (0: never failed).
    pub(super) down_until: AtomicU64,
}

#[derive(Debug)]
pub(super) enum Kind {
    Proxy {
        servers: Vec<Server>,
        /// The next server in the round.
        next: AtomicUsize,
        /// What the first server's redirects into itself start with
        /// ([`RedirectMap`](super::redirect::RedirectMap)).
        redirect_from: std::sync::Arc<str>,
    },
    /// The canonical directory holding the scripts.
    Cgi(PathBuf),
}

#[derive(Debug)]
pub(super) struct Route {
    /// As configured (`/api`), without a trailing slash.
    pub(super) prefix: String,
    /// The prefix's decoded segments.
    pub(super) segments: Vec<Vec<u8>>,
    pub(super) kind: Kind,
}

/// Why a gateway could not be built from its routes.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the prefix {prefix} must start with /")]
    PrefixSlash { prefix: String },
    #[error("the prefix {prefix} is not a valid URL path")]
    PrefixPath { prefix: String },
    #[error("{prefix}={url}: {why}")]
    Upstream {
        prefix: String,
        url: String,
        why: String,
    },
    #[error("{prefix}={dir}: that is a file; give the directory that holds the scripts")]
    CgiFile { prefix: String, dir: String },
    #[error("{prefix}={dir}: the script directory does not exist")]
    CgiMissing { prefix: String, dir: String },
    #[error("the prefix {prefix} is routed twice")]
    Twice { prefix: String },
}

impl GatewayError {
    /// The flag the route came from (`proxy` or `cgi`), for the user's error line.
    pub fn flag(&self) -> Option<&'static str> {
        match self {
            GatewayError::Upstream { .. } => Some("proxy"),
            GatewayError::CgiFile { .. } | GatewayError::CgiMissing { .. } => Some("cgi"),
            _ => None,
        }
    }

    /// A route that is well formed but names what this machine does not have (a missing
    /// script directory), as opposed to one written wrong.
    pub fn is_missing_file(&self) -> bool {
        matches!(
            self,
            GatewayError::CgiFile { .. } | GatewayError::CgiMissing { .. }
        )
    }
}

/// Resolve an upstream's address once, at start (as nginx resolves `proxy_pass` hosts).
fn dial_for(
    up: &Upstream,
    keep: usize,
    tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
) -> Result<Dial, String> {
    match &up.target {
        Target::Unix(path) => Ok(Dial::Unix {
            path: path.clone(),
            keep,
            fresh: false,
        }),
        Target::Tcp(hostport) => {
            let addr = hostport
                .to_socket_addrs()
                .map_err(|e| format!("its host does not resolve ({e})"))?
                .next()
                .ok_or_else(|| "its host does not resolve to any address".to_string())?;
            let tls = match (up.tls, tls) {
                (false, _) => None,
                (true, None) => return Err("is https, and no TLS client was set up".into()),
                (true, Some(config)) => {
                    // RFC 6125: the certificate must be for the host the URL names.
                    let host = hostport
                        .rsplit_once(':')
                        .map_or(hostport.as_str(), |(h, _)| h);
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let name = rustls_pki_types::ServerName::try_from(host.to_string())
                        .map_err(|_| format!("{host} is not a host name TLS can check"))?;
                    Some(crate::protocol::UpstreamTls {
                        config: std::sync::Arc::clone(config),
                        name,
                    })
                }
            };
            Ok(Dial::Tcp {
                addr,
                keep,
                fresh: false,
                tls,
            })
        }
    }
}

impl Gateway {
    /// Build from `(prefix, upstream URLs)` and `(prefix, directory)` pairs; several upstream
    /// URLs are separated by commas and must share their path.
    pub fn new(
        proxies: &[(String, String)],
        cgis: &[(String, PathBuf)],
        cfg: GatewayConfig,
    ) -> Result<Gateway, GatewayError> {
        let mut routes = Vec::new();
        let prefix_of = |p: &str| -> Result<(String, Vec<Vec<u8>>), GatewayError> {
            if !p.starts_with('/') {
                return Err(GatewayError::PrefixSlash { prefix: p.into() });
            }
            let url = UrlPath::parse(p, true)
                .map_err(|_| GatewayError::PrefixPath { prefix: p.into() })?;
            Ok((url.encoded(), url.segments))
        };
        for (p, urls) in proxies {
            let (prefix, segments) = prefix_of(p)?;
            let bad = |why: String| GatewayError::Upstream {
                prefix: p.clone(),
                url: urls.clone(),
                why,
            };
            let mut servers: Vec<Server> = Vec::new();
            for url in urls.split(',').map(str::trim) {
                let up = Upstream::parse(url).map_err(bad)?;
                if let Some(first) = servers.first() {
                    if first.up.path != up.path {
                        return Err(bad(
                            "the upstreams of one route must all have the same path".into(),
                        ));
                    }
                }
                let dial = dial_for(&up, cfg.keepalive, cfg.tls.as_ref())
                    .map_err(|why| bad(format!("the upstream `{url}`: {why}")))?;
                let label = format!("{} (upstream {})", p.trim_end_matches('/'), up.display());
                servers.push(Server {
                    label: label.into(),
                    up,
                    dial,
                    down_until: AtomicU64::new(0),
                });
            }
            routes.push(Route {
                prefix,
                segments,
                kind: Kind::Proxy {
                    redirect_from: redirect_from(&servers[0].up),
                    servers,
                    next: AtomicUsize::new(0),
                },
            });
        }
        for (p, dir) in cgis {
            let (prefix, segments) = prefix_of(p)?;
            let canon = match std::fs::canonicalize(dir) {
                Ok(d) if d.is_dir() => d,
                Ok(_) => {
                    return Err(GatewayError::CgiFile {
                        prefix: p.clone(),
                        dir: dir.display().to_string(),
                    })
                }
                Err(_) => {
                    return Err(GatewayError::CgiMissing {
                        prefix: p.clone(),
                        dir: dir.display().to_string(),
                    })
                }
            };
            routes.push(Route {
                prefix,
                segments,
                kind: Kind::Cgi(canon),
            });
        }
        for (i, r) in routes.iter().enumerate() {
            if routes[..i].iter().any(|o| o.segments == r.segments) {
                return Err(GatewayError::Twice {
                    prefix: r.prefix.clone(),
                });
            }
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.segments.len()));
        Ok(Gateway {
            routes,
            doc_root: None,
            cfg,
            epoch: Instant::now(),
        })
    }
}
