//! Routes that hand requests to other applications: `--proxy PREFIX=URL[,URL...]` and
//! `--cgi PREFIX=DIR`. The session asks [`Gateway::route`] for every request head (only when a
//! gateway is configured; the static path pays nothing otherwise); [`Gateway::start`] turns a
//! routed request into an [`Exchange`]: what the session asks its driver to open (a
//! [`Dial`]: a connection to the upstream, or the script's process), the bytes to send first
//! (the request head), and a [`Pending`] that parses the answer as it arrives. The session
//! streams the request body into the link as it reads it and the answer back to the client as
//! it comes; nothing here owns a socket, a process or a thread.
//!
//! Routing: the request path is normalized first (the static handler's [`UrlPath`]: one
//! percent-decoding, dot segments resolved, encoded slashes refused), then matched segment by
//! segment against each prefix; the longest prefix wins (`/api` matches `/api` and `/api/x`,
//! never `/apix`). Normalizing before matching means `/api/../secret` is `/secret`, as in
//! nginx's `location` matching.
//!
//! Several upstreams on one route are used in turn (round robin); one that refuses or times out
//! a connection is left out for `fail_timeout` (nginx's `max_fails=1 fail_timeout=10s`), and
//! the request goes to the next one, each at most once.

use std::collections::VecDeque;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::cgi::{self, Script};
use super::message::{error_response, Request, Response, Text};
use super::proxy::{self, ClientInfo, RequestBody, ResponseHead, Target, Upstream, BAD_RESPONSE};
use super::static_files::path::{encode_pchar, UrlPath};
use super::wire::{Decoder, Limits};
use crate::protocol::{Dial, LinkError, Peer};

/// Longest response head (upstream status line and headers, or a script's header block).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most header fields in one upstream or CGI response head.
const MAX_RESPONSE_HEADERS: usize = 100;

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
struct Server {
    up: Upstream,
    dial: Dial,
    /// What a failure's log line names: the route and this upstream (made once, at start).
    label: std::sync::Arc<str>,
    /// Left out until this many milliseconds after `Gateway::epoch` (0: never failed).
    down_until: AtomicU64,
}

#[derive(Debug)]
enum Kind {
    Proxy {
        servers: Vec<Server>,
        /// The next server in the round.
        next: AtomicUsize,
        /// What the first server's redirects into itself start with ([`RedirectMap`]).
        redirect_from: std::sync::Arc<str>,
    },
    /// The canonical directory holding the scripts.
    Cgi(PathBuf),
}

#[derive(Debug)]
struct Route {
    /// As configured (`/api`), without a trailing slash.
    prefix: String,
    /// The prefix's decoded segments.
    segments: Vec<Vec<u8>>,
    kind: Kind,
}

/// Every proxy and CGI route.
#[derive(Debug)]
pub struct Gateway {
    /// Longest prefix first.
    routes: Vec<Route>,
    /// The static root, against which a CGI request's `PATH_TRANSLATED` is formed.
    doc_root: Option<PathBuf>,
    cfg: GatewayConfig,
    epoch: Instant,
}

/// A request the gateway takes: which route, and the normalized path.
#[derive(Debug, Clone)]
pub struct Routed {
    index: usize,
    url: UrlPath,
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

    /// Form CGI scripts' `PATH_TRANSLATED` against `root` (the directory served).
    pub fn with_document_root(mut self, root: &std::path::Path) -> Gateway {
        self.doc_root = std::fs::canonicalize(root).ok();
        self
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.cfg
    }

    /// Is `req` for a proxy or CGI route? `None` leaves it to the static handler.
    pub fn route(&self, req: &Request<'_>) -> Option<Routed> {
        // TRACE would echo the client's credentials back through a script or upstream, and
        // no tunnel is opened for CONNECT: both get the static handler's 405, as from nginx.
        if !req.path.starts_with('/') || matches!(req.method, "TRACE" | "CONNECT") {
            return None;
        }
        // A path the static rules refuse (NUL, malformed escape) is refused there too. An
        // encoded slash or backslash stays inside its segment, and goes upstream as it came
        // (as nginx passes `%2F` on); only a proxy route takes it: a CGI route maps segments to
        // files, so there it is refused with the static rules (as Apache does by default).
        let url = UrlPath::parse_keeping_encoded_separators(req.path, true).ok()?;
        let index = self.routes.iter().position(|r| {
            url.segments.len() >= r.segments.len()
                && url.segments[..r.segments.len()] == r.segments[..]
        })?;
        if matches!(self.routes[index].kind, Kind::Cgi(_)) && url.has_encoded_separator() {
            return None;
        }
        Some(Routed { index, url })
    }

    /// Is the routed request for a CGI script (whose input must have a known length)?
    pub fn is_cgi(&self, routed: &Routed) -> bool {
        matches!(self.routes[routed.index].kind, Kind::Cgi(_))
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The next server of a proxy route to try: in turn, skipping those tried (`tried`, a bit
    /// per server) and those left out after a failure, unless every untried one is.
    fn pick(&self, route: usize, tried: u64) -> Option<usize> {
        let Kind::Proxy { servers, next, .. } = &self.routes[route].kind else {
            return None;
        };
        let n = servers.len();
        let start = next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let untried = |i: &usize| *i >= 64 || tried & (1 << i) == 0;
        let order = (0..n).map(|k| (start + k) % n);
        let live = order
            .clone()
            .filter(untried)
            .find(|&i| servers[i].down_until.load(Ordering::Relaxed) <= now);
        // All left out: try one anyway on a first attempt (nginx does the same, rather than
        // answer 502 without asking anyone).
        live.or_else(|| (tried == 0).then(|| order.clone().find(untried)).flatten())
    }

    /// Start the exchange for a routed request, whose body comes as `body` says. An `Err` is
    /// the answer to send at once (no such script).
    pub fn start(
        &self,
        routed: Routed,
        req: &Request<'_>,
        peer: &Peer,
        body: RequestBody,
    ) -> Result<Exchange, Box<Response>> {
        let route = &self.routes[routed.index];
        let depth = route.segments.len();
        match &route.kind {
            Kind::Proxy {
                servers,
                redirect_from,
                ..
            } => {
                let mut ipbuf = [0u8; 48];
                let s = self.pick(routed.index, 0).unwrap_or(0);
                let up = &servers[s].up;
                let path = path_for(up, req.path, &routed.url, depth);
                // One Host for the whole route (the first upstream's), as nginx sends the
                // upstream group's name: the head can then go to any of them.
                let host_up = &servers[0].up;
                let head = proxy::build_request(
                    req,
                    host_up,
                    &path,
                    body,
                    &ClientInfo {
                        ip: client_ip(peer, &mut ipbuf),
                    },
                );
                let redirect = Some(redirect_map_from(
                    redirect_from.clone(),
                    host_up,
                    &route.prefix,
                    req.host(),
                ));
                let mut pending = Pending::new(
                    Mode::Proxy,
                    redirect,
                    req.is_head(),
                    self.label(routed.index, s),
                );
                pending.upgrading = proxy::upgrade_request(req).is_some();
                Ok(Exchange {
                    dial: servers[s].dial.clone(),
                    head,
                    pending,
                    chunked: matches!(body, RequestBody::Chunked),
                    finish_after_body: false,
                    route: routed.index,
                    server: s,
                })
            }
            Kind::Cgi(dir) => {
                let script: Script = cgi::resolve(dir, &route.prefix, &routed.url, depth)
                    .map_err(|(status, why)| Box::new(error_response(status, why)))?;
                let len = match body {
                    RequestBody::Length(n) => n,
                    _ => 0,
                };
                let env = cgi::environment(req, &script, peer, len, self.doc_root.as_deref());
                let label = format!("{} (script {})", route.prefix, script.program.display());
                Ok(Exchange {
                    dial: Dial::Spawn {
                        cwd: script
                            .program
                            .parent()
                            .map_or_else(|| dir.clone(), |p| p.to_path_buf()),
                        program: script.program,
                        env,
                    },
                    head: Vec::new(),
                    pending: Pending::new(Mode::Cgi, None, req.is_head(), label.into()),
                    chunked: false,
                    finish_after_body: true,
                    route: routed.index,
                    server: 0,
                })
            }
        }
    }

    /// What a failure log line names: the route and the upstream.
    fn label(&self, route: usize, server: usize) -> std::sync::Arc<str> {
        let r = &self.routes[route];
        match &r.kind {
            Kind::Proxy { servers, .. } => servers[server].label.clone(),
            Kind::Cgi(_) => r.prefix.clone().into(),
        }
    }

    /// A connection to `server` of `route` failed or timed out: leave it out for the fail
    /// timeout, and name the next one to try (`tried`: a bit per server already tried), with
    /// its label.
    pub fn failover(
        &self,
        route: usize,
        server: usize,
        tried: u64,
    ) -> Option<(usize, Dial, std::sync::Arc<str>)> {
        let Kind::Proxy { servers, .. } = &self.routes[route].kind else {
            return None;
        };
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(self.cfg.fail_timeout.as_millis()).unwrap_or(u64::MAX));
        servers[server]
            .down_until
            .store(until.max(1), Ordering::Relaxed);
        let next = self.pick(route, tried)?;
        Some((next, servers[next].dial.clone(), self.label(route, next)))
    }

    /// How many servers a route has.
    pub fn servers(&self, route: usize) -> usize {
        match &self.routes[route].kind {
            Kind::Proxy { servers, .. } => servers.len(),
            Kind::Cgi(_) => 1,
        }
    }
}

/// A routed request, ready to go: what to open, what to send first, how to read the answer.
#[derive(Debug)]
pub struct Exchange {
    pub dial: Dial,
    /// The request head for an upstream; empty for a script.
    pub head: Vec<u8>,
    pub pending: Pending,
    /// The body goes upstream re-chunked (the client sent it chunked).
    pub chunked: bool,
    /// The link's write side closes after the body (a script's stdin).
    pub finish_after_body: bool,
    /// Which route and server, for [`Gateway::failover`].
    pub route: usize,
    pub server: usize,
}

/// The client's IP as text, written into `buf` (no allocation per request); `unix` for a Unix
/// socket's client.
fn client_ip<'a>(peer: &Peer, buf: &'a mut [u8; 48]) -> &'a str {
    use std::io::Write as _;
    let Some(ip) = peer.ip_addr() else {
        return "unix";
    };
    let n = match ip {
        // The usual case, without the formatting machinery.
        std::net::IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                let digits = [o / 100, o / 10 % 10, o % 10];
                let skip = if o >= 100 {
                    0
                } else if o >= 10 {
                    1
                } else {
                    2
                };
                for d in &digits[skip..] {
                    buf[n] = b'0' + d;
                    n += 1;
                }
            }
            n
        }
        std::net::IpAddr::V6(_) => {
            let mut cur = std::io::Cursor::new(&mut buf[..]);
            // 48 bytes hold any IPv6 address's text (at most 45).
            let _ = write!(cur, "{ip}");
            cur.position() as usize
        }
    };
    std::str::from_utf8(&buf[..n]).unwrap_or("unknown")
}

/// nginx's `proxy_redirect default`: a `Location` or `Refresh` that points into the upstream
/// URL the route forwards to (`http://127.0.0.1:9000/v1/x`) is turned into this server's URL
/// for the same resource (`http://front.example/api/x`), so a client is never sent to an
/// address only the server can reach.
#[derive(Debug)]
struct RedirectMap {
    /// `http://AUTHORITY[/path]` as the upstream would write it.
    from: std::sync::Arc<str>,
    /// The request's host: our URL is absolute when it named one (as nginx writes it), else a
    /// path. (Our URL is made only when a redirect needs it, not for every answer.)
    host: Option<String>,
    /// The route's prefix as our URL's path (empty when the upstream sees the whole path).
    path: Box<str>,
}

#[cfg(test)]
fn redirect_map(up: &Upstream, prefix: &str, host: Option<&str>) -> RedirectMap {
    redirect_map_from(redirect_from(up), up, prefix, host)
}

/// `http://AUTHORITY[/path]`: what an upstream's redirects into itself start with (made once
/// per route).
fn redirect_from(up: &Upstream) -> std::sync::Arc<str> {
    format!(
        "{}://{}{}",
        if up.tls { "https" } else { "http" },
        up.authority,
        up.path.as_deref().unwrap_or("").trim_end_matches('/')
    )
    .into()
}

fn redirect_map_from(
    from: std::sync::Arc<str>,
    up: &Upstream,
    prefix: &str,
    host: Option<&str>,
) -> RedirectMap {
    // Without a path of its own the upstream sees the whole path: only the origin changes.
    let path = if up.path.is_some() {
        prefix.trim_end_matches('/')
    } else {
        ""
    };
    RedirectMap {
        from,
        host: host.map(str::to_string),
        path: path.into(),
    }
}

impl RedirectMap {
    /// `url` in our terms, if it points into the upstream (on a segment boundary).
    fn map(&self, url: &str) -> Option<String> {
        let head = url.get(..self.from.len())?;
        if !head.eq_ignore_ascii_case(&self.from[..]) {
            return None;
        }
        let rest = &url[self.from.len()..];
        if !(rest.is_empty() || rest.starts_with(['/', '?', '#'])) {
            return None;
        }
        let mut out = match &self.host {
            Some(h) => format!("http://{h}{}", self.path),
            None => self.path.to_string(),
        };
        if rest.is_empty() && out.is_empty() {
            out.push('/');
        }
        if out.is_empty() && !rest.starts_with('/') {
            out.push('/');
        }
        out.push_str(rest);
        Some(out)
    }

    fn apply(&self, headers: &mut [(Text, Text)]) {
        for (name, value) in headers.iter_mut() {
            if name.eq_ignore_ascii_case("location") {
                if let Some(v) = self.map(value) {
                    *value = v.into();
                }
            } else if name.eq_ignore_ascii_case("refresh") {
                // `Refresh: 5; url=http://...`
                let lower = value.to_ascii_lowercase();
                if let Some(i) = lower.find("url=") {
                    let (before, url) = value.split_at(i + 4);
                    if let Some(v) = self.map(url.trim()) {
                        *value = format!("{before}{v}").into();
                    }
                }
            }
        }
    }
}

/// The path `up` is asked for: the raw path itself when the upstream names no path of its own
/// and normalization changed nothing (no copy), else built.
fn path_for<'a>(
    up: &Upstream,
    raw: &'a str,
    url: &UrlPath,
    depth: usize,
) -> std::borrow::Cow<'a, str> {
    match up.path {
        None if is_plain(raw) => raw.into(),
        None => forwarded_path(raw, url).into(),
        Some(_) => up.upstream_path("", &rest_of_path(raw, url, depth)).into(),
    }
}

/// The path past the prefix, as forwarded: the raw text when it holds nothing normalization
/// changed (so `+`, `:` and friends reach the upstream as sent), else the normalized path
/// re-encoded.
fn rest_of_path(raw: &str, url: &UrlPath, depth: usize) -> String {
    if is_plain(raw) {
        // Plain means one raw segment per decoded segment.
        let mut rest = String::new();
        for seg in raw.split('/').skip(1 + depth) {
            if !seg.is_empty() {
                rest.push('/');
                rest.push_str(seg);
            }
        }
        if raw.ends_with('/') && url.segments.len() > depth {
            rest.push('/');
        }
        if raw.ends_with('/') && url.segments.len() == depth && depth > 0 {
            rest.push('/');
        }
        return rest;
    }
    let mut rest = String::new();
    for seg in &url.segments[depth..] {
        rest.push('/');
        rest.push_str(&encode_pchar(seg));
    }
    if url.trailing_slash && (url.segments.len() > depth || depth > 0) {
        rest.push('/');
    }
    rest
}

/// The whole path, as forwarded when the upstream URL names no path of its own.
fn forwarded_path(raw: &str, url: &UrlPath) -> String {
    if is_plain(raw) {
        return raw.to_string();
    }
    let mut p = String::new();
    for seg in &url.segments {
        p.push('/');
        p.push_str(&encode_pchar(seg));
    }
    if url.trailing_slash || url.is_root() {
        p.push('/');
    }
    p
}

/// No dot segments, no empty segments, no encoded dots: the raw path is already normal.
fn is_plain(raw: &str) -> bool {
    let body = raw.strip_prefix('/').unwrap_or(raw);
    let body = body.strip_suffix('/').unwrap_or(body).as_bytes();
    (body.is_empty()
        || body
            .split(|&b| b == b'/')
            .all(|s| !matches!(s, b"" | b"." | b"..")))
        && !raw
            .as_bytes()
            .windows(3)
            .any(|w| w[0] == b'%' && w[1] == b'2' && (w[2] | 0x20) == b'e')
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Proxy,
    Cgi,
}

#[derive(Debug)]
enum State {
    /// Collecting the response head.
    Head(Vec<u8>),
    /// Relaying the body.
    Body(Decoder),
    Finished,
}

/// What the session does next with an outbound response.
#[derive(Debug)]
pub enum Progress {
    /// Nothing new; more input (or its end) will come.
    Wait,
    /// The response head: write it (announcing `length` when known), then its body follows.
    Head {
        response: Response,
        length: Option<u64>,
        /// The response has no body at all (HEAD, 204, 304, or an empty one).
        bodiless: bool,
    },
    /// Body bytes, framing removed.
    Data(Vec<u8>),
    /// A CGI script asked the server to answer for this path instead (RFC 3875 §6.2.2).
    LocalRedirect(String),
    /// The upstream agreed to switch protocols (101): relay the head, then tunnel bytes both
    /// ways, starting with `rest` (what came after the head).
    Switch {
        response: Response,
        upgrade: String,
        rest: Vec<u8>,
    },
    /// The body ended where its framing said.
    End,
    /// It failed before any head: answer this instead.
    Fail(Response),
    /// It failed mid-body: the client must see a truncated response (close the connection).
    Abort,
}

/// Why an exchange ended early. The session maps it to a status when no response head was sent.
#[derive(Debug)]
pub enum Failure {
    /// The upstream could not be reached (refused, unreachable): 502.
    Connect(String),
    /// Nothing moved for the timeout (connect, read, write, or a silent child): 504.
    Timeout,
    /// The connection or pipe broke: 502.
    Io(String),
    /// The program could not be started: 502.
    Spawn(String),
}

impl From<LinkError> for Failure {
    fn from(e: LinkError) -> Failure {
        match e {
            LinkError::Connect(s) => Failure::Connect(s),
            LinkError::Spawn(s) => Failure::Spawn(s),
            LinkError::Io(s) => Failure::Io(s),
        }
    }
}

/// An outbound response in flight: fed what the link reads, it yields what the client gets.
#[derive(Debug)]
pub struct Pending {
    mode: Mode,
    /// A proxied answer's redirects are rewritten from the upstream's URL to ours.
    redirect: Option<RedirectMap>,
    head_request: bool,
    /// The request asked to switch protocols, so a 101 may come.
    upgrading: bool,
    state: State,
    /// Steps decided and not yet handed to the session.
    ready: VecDeque<Progress>,
    /// Bytes of the answer seen (a reused connection that fails before any may be retried).
    seen: u64,
    /// The answer ended where its framing said, and the upstream keeps the connection open.
    reusable: bool,
    /// Upstream keep-alive as its head said (HTTP/1.1 without `Connection: close`).
    keeps: bool,
    /// The route and upstream, for the log line a failure leaves.
    label: std::sync::Arc<str>,
}

/// Where the upstream's body stands after a piece of it.
enum Outcome {
    More,
    End,
    Broken,
}

impl Pending {
    fn new(
        mode: Mode,
        redirect: Option<RedirectMap>,
        head_request: bool,
        label: std::sync::Arc<str>,
    ) -> Pending {
        Pending {
            mode,
            redirect,
            head_request,
            upgrading: false,
            state: State::Head(Vec::new()),
            ready: VecDeque::new(),
            seen: 0,
            reusable: false,
            keeps: false,
            label,
        }
    }

    /// The next step, if one is decided.
    pub fn poll(&mut self) -> Progress {
        self.ready.pop_front().unwrap_or(Progress::Wait)
    }

    /// Has any byte of the answer arrived?
    pub fn started(&self) -> bool {
        self.seen > 0
    }

    /// Is the answer complete?
    pub fn finished(&self) -> bool {
        matches!(self.state, State::Finished)
    }

    /// May the connection carry another request (the answer ended by its framing, and the
    /// upstream did not ask to close)?
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// Now on another upstream (a failover): its failures name it.
    pub fn relabel(&mut self, label: std::sync::Arc<str>) {
        self.label = label;
    }

    /// Bytes of the answer arrived.
    pub fn feed(&mut self, d: &[u8]) {
        if d.is_empty() {
            return;
        }
        self.seen += d.len() as u64;
        match &mut self.state {
            State::Finished => {
                // Bytes after a complete answer: the upstream cannot be trusted with another.
                self.reusable = false;
            }
            State::Head(buf) => {
                // Usually the whole head comes in one read: it is parsed where it lies, and
                // only a partial one is kept for the next.
                let mut held = std::mem::take(buf);
                let data: &[u8] = if held.is_empty() {
                    d
                } else {
                    held.extend_from_slice(d);
                    &held
                };
                match self.parse_head(data) {
                    Ok(None) => {}
                    Ok(Some(used)) if data.len() - used > MAX_RESPONSE_HEAD => {
                        self.fail_with(502, BAD_RESPONSE, "sent a too big header");
                    }
                    Ok(Some(used)) => {
                        if held.is_empty() {
                            held.extend_from_slice(&d[used..]);
                        } else {
                            held.drain(..used);
                        }
                        self.state = State::Head(held);
                    }
                    Err(why) => self.fail_with(502, why, "sent an invalid header"),
                }
            }
            State::Body(framing) => {
                let (data, outcome) = relay(framing, d);
                self.push_body(data, outcome);
            }
        }
    }

    /// The upstream closed (or the script's output ended).
    pub fn end(&mut self) {
        match &self.state {
            State::Finished => {}
            State::Head(_) => {
                let why = match self.mode {
                    Mode::Proxy => {
                        "The upstream server closed the connection without a complete response."
                    }
                    Mode::Cgi => "The script ended without printing a complete CGI header block.",
                };
                self.fail_with(502, why, "closed the connection before a complete header");
            }
            State::Body(framing) => {
                // Only a close-delimited body may end by the upstream closing.
                let clean = framing.ends_at_close();
                self.state = State::Finished;
                self.reusable = false;
                if clean {
                    self.ready.push_back(Progress::End);
                } else {
                    self.log_failure("closed the connection before the whole body");
                    self.ready.push_back(Progress::Abort);
                }
            }
        }
    }

    /// The exchange failed.
    pub fn fail(&mut self, f: Failure) {
        self.reusable = false;
        match &self.state {
            State::Finished => {}
            State::Head(_) => {
                let (status, why, log) = failure_answer(&f, self.mode);
                self.log_failure(&format!("{log}: {}", failure_detail(&f)));
                self.state = State::Finished;
                self.ready
                    .push_back(Progress::Fail(error_response(status, why)));
            }
            State::Body(_) => {
                self.log_failure(&format!("broke off the body: {}", failure_detail(&f)));
                self.state = State::Finished;
                self.ready.push_back(Progress::Abort);
            }
        }
    }

    fn fail_with(&mut self, status: u16, why: &'static str, log: &str) {
        self.log_failure(log);
        self.state = State::Finished;
        self.reusable = false;
        self.ready
            .push_back(Progress::Fail(error_response(status, why)));
    }

    /// One warning line per failure, at most one a second per process (a dead upstream under
    /// load would otherwise flood the log), as nginx's "upstream timed out" lines.
    fn log_failure(&self, what: &str) {
        static LAST: AtomicU64 = AtomicU64::new(0);
        static SKIPPED: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if LAST.swap(now, Ordering::Relaxed) == now {
            SKIPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let skipped = SKIPPED.swap(0, Ordering::Relaxed);
        let who = match self.mode {
            Mode::Proxy => "upstream",
            Mode::Cgi => "script",
        };
        if skipped > 0 {
            tracing::warn!(
                "{}: the {who} {what} ({skipped} more failures not logged)",
                self.label
            );
        } else {
            tracing::warn!("{}: the {who} {what}", self.label);
        }
    }

    fn push_body(&mut self, data: Vec<u8>, outcome: Outcome) {
        if !data.is_empty() {
            self.ready.push_back(Progress::Data(data));
        }
        match outcome {
            Outcome::More => {}
            Outcome::End => {
                self.state = State::Finished;
                self.reusable = self.keeps;
                self.ready.push_back(Progress::End);
            }
            Outcome::Broken => {
                self.log_failure("sent a broken chunked body");
                self.state = State::Finished;
                self.ready.push_back(Progress::Abort);
            }
        }
    }

    /// Try to parse the head from `data` (all that came so far): `None` once it is parsed (and
    /// queued, with the body bytes that came with it), or `Some(n)` while it is incomplete, `n`
    /// the bytes of interim (1xx) heads that went before it.
    fn parse_head(&mut self, data: &[u8]) -> Result<Option<usize>, &'static str> {
        let mut at = 0;
        loop {
            let buf = &data[at..];
            let parsed = match self.mode {
                Mode::Proxy => proxy::parse_response_head(
                    buf,
                    self.head_request,
                    self.upgrading,
                    MAX_RESPONSE_HEADERS,
                )?,
                Mode::Cgi => cgi::parse_cgi_head(buf, self.head_request, MAX_RESPONSE_HEADERS)?,
            };
            let Some((n, head)) = parsed else {
                return Ok(Some(at));
            };
            // A head completed by the read that carried it past the limit is still too big
            // (nginx: "upstream sent too big header", 502).
            if n > MAX_RESPONSE_HEAD {
                return Err(BAD_RESPONSE);
            }
            if let Some(to) = head.upgrade {
                // The upstream switched protocols: from here the link is a tunnel.
                let mut response = Response::new(101);
                response.headers = head.headers;
                if !head.raw_headers.is_empty() {
                    response.raw_headers = Some(bytes::Bytes::from(head.raw_headers));
                }
                self.state = State::Finished;
                self.ready.push_back(Progress::Switch {
                    response,
                    upgrade: to,
                    rest: buf[n..].to_vec(),
                });
                return Ok(None);
            }
            if head.status < 200 {
                // An interim response (100, 103): not relayed; the final one follows.
                at += n;
                continue;
            }
            let rest = &buf[n..];
            let ResponseHead {
                status,
                reason,
                headers,
                raw_headers,
                mut framing,
                length,
                local_redirect,
                keep_alive,
                upgrade: _,
            } = head;
            self.keeps = keep_alive;
            if let Some(path) = local_redirect {
                self.state = State::Finished;
                self.ready.push_back(Progress::LocalRedirect(path));
                return Ok(None);
            }
            let mut response = Response::new(status);
            response.reason = reason;
            response.headers = headers;
            if !raw_headers.is_empty() {
                response.raw_headers = Some(bytes::Bytes::from(raw_headers));
            }
            if let Some(map) = &self.redirect {
                map.apply(&mut response.headers);
            }
            let bodiless = framing.is_finished();
            self.ready.push_back(Progress::Head {
                response,
                length,
                bodiless,
            });
            if bodiless {
                self.state = State::Finished;
                // Bytes after a bodiless head are not an answer to anything.
                self.reusable = self.keeps && rest.is_empty();
                return Ok(None);
            }
            // Body bytes that came with the head are relayed first.
            let (data, outcome) = if rest.is_empty() {
                (Vec::new(), Outcome::More)
            } else {
                relay(&mut framing, rest)
            };
            self.state = State::Body(framing);
            self.push_body(data, outcome);
            return Ok(None);
        }
    }
}

fn failure_detail(f: &Failure) -> String {
    match f {
        Failure::Timeout => "timed out".into(),
        Failure::Connect(e) | Failure::Io(e) | Failure::Spawn(e) => e.clone(),
    }
}

/// The status, the page's sentence, and what the log line says.
fn failure_answer(f: &Failure, mode: Mode) -> (u16, &'static str, &'static str) {
    match (f, mode) {
        (Failure::Timeout, Mode::Proxy) => (
            504,
            "The upstream server did not answer in time.",
            "did not answer in time",
        ),
        (Failure::Timeout, Mode::Cgi) => (
            504,
            "The script did not answer in time.",
            "did not answer in time",
        ),
        (Failure::Connect(_), _) => (
            502,
            "The upstream server could not be reached.",
            "could not be reached",
        ),
        (Failure::Spawn(_), _) => (502, "The script could not be started.", "could not start"),
        (Failure::Io(_), _) => (
            502,
            "The upstream connection broke before a response.",
            "broke the connection before a response",
        ),
    }
}

/// Remove the upstream's framing from `d`: the bytes to send, and whether the body is complete
/// (anything after it is dropped) or its framing broken. An answer streams through, so it has
/// no body ceiling; its chunked lines are bounded all the same.
fn relay(framing: &mut Decoder, d: &[u8]) -> (Vec<u8>, Outcome) {
    if framing.ends_at_close() && !framing.is_finished() {
        // Close-delimited: every byte is body.
        return (d.to_vec(), Outcome::More);
    }
    let mut out = Vec::with_capacity(d.len());
    match framing.decode(d, &Limits::streaming(), |b| out.extend_from_slice(b)) {
        Ok((_, true)) => (out, Outcome::End),
        Ok((_, false)) => (out, Outcome::More),
        Err(_) => (out, Outcome::Broken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http::proxy::Target;
    use crate::protocol::http::wire::parse_head;

    fn gateway() -> Gateway {
        Gateway::new(
            &[
                ("/api".into(), "http://127.0.0.1:9/v1".into()),
                ("/api/admin".into(), "http://127.0.0.1:10".into()),
                ("/".into(), "http://127.0.0.1:11/".into()),
            ],
            &[],
            GatewayConfig::default(),
        )
        .unwrap()
    }

    /// Route a GET for `path`, and hand `f` the request and where it went.
    fn route_get<R>(
        g: &Gateway,
        path: &str,
        f: impl FnOnce(&Request<'_>, Routed) -> R,
    ) -> Option<R> {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut storage = [httparse::EMPTY_HEADER; 8];
        let head = parse_head(raw.as_bytes(), &mut storage, &Limits::default()).unwrap();
        let r = g.route(&head.request)?;
        Some(f(&head.request, r))
    }

    /// Which upstream port a path goes to, and the rest of its path.
    fn routed(g: &Gateway, path: &str) -> Option<(String, String)> {
        route_get(g, path, |req, r| forwarded_to(g, req, r)).flatten()
    }

    fn forwarded_to(g: &Gateway, req: &Request<'_>, r: Routed) -> Option<(String, String)> {
        let route = &g.routes[r.index];
        let Kind::Proxy { servers, .. } = &route.kind else {
            return None;
        };
        let up = &servers[0].up;
        let rest = rest_of_path(req.path, &r.url, route.segments.len());
        let full = forwarded_path(req.path, &r.url);
        let Target::Tcp(addr) = &up.target else {
            return None;
        };
        let port = addr.rsplit(':').next().unwrap_or("").to_string();
        Some((port, up.upstream_path(&full, &rest)))
    }

    #[test]
    fn the_longest_prefix_wins_segment_by_segment_after_normalizing() {
        let g = gateway();
        // Upstream ports: 9 for /api, 10 for /api/admin, 11 for everything else.
        let cases = [
            ("/api/x", "9", "/v1/x", ""),
            ("/api", "9", "/v1", ""),
            ("/api/", "9", "/v1/", ""),
            ("/api/admin/users", "10", "/api/admin/users", ""),
            ("/apix", "11", "/apix", "/apix is not under /api"),
            ("/api/a+b:c", "9", "/v1/a+b:c", "plain paths go as sent"),
            ("/x/../api/y", "9", "/v1/y", "dot segments resolve first"),
            ("/api/../admin", "11", "/admin", ""),
            ("/api//x", "9", "/v1/x", ""),
            ("/api/%2e%2e/secret", "11", "/secret", ""),
            (
                "/api/a%2fb%5Cc",
                "9",
                "/v1/a%2fb%5Cc",
                "an encoded slash or backslash goes upstream as sent",
            ),
            (
                "/api/./@s%2Fn/a+b;c=d",
                "9",
                "/v1/@s%2Fn/a+b;c=d",
                "a path normalized first is escaped no more than pchar needs",
            ),
            (
                "/api%2Fx",
                "11",
                "/api%2Fx",
                "an encoded slash never splits a segment, so /api%2Fx is not under /api",
            ),
            ("/x/../a%2fb", "11", "/a%2Fb", ""),
        ];
        for (path, port, upstream, why) in cases {
            assert_eq!(
                routed(&g, path),
                Some((port.to_string(), upstream.to_string())),
                "{path}: {why}"
            );
        }
    }

    /// A CGI route maps segments to files: an encoded separator there is left to the static
    /// rules (400), as is a NUL or a malformed escape anywhere.
    #[test]
    fn a_cgi_route_refuses_encoded_separators_a_proxy_route_keeps() {
        let dir = std::env::temp_dir();
        let g = Gateway::new(
            &[("/p".into(), "http://127.0.0.1:9".into())],
            &[("/cgi".into(), dir)],
            GatewayConfig::default(),
        )
        .unwrap();
        let route = |path: &str| route_get(&g, path, |_, r| r.index);
        assert!(route("/cgi/env.sh/a").is_some());
        assert_eq!(route("/cgi/env.sh/a%2Fb"), None);
        assert_eq!(route("/cgi/..%5C..%5Cbin"), None);
        assert!(route("/p/a%2Fb").is_some());
        assert_eq!(route("/p/a%00b"), None);
        assert_eq!(route("/p/a%zzb"), None);
        // Found in review: to an upstream that decodes first, these would climb out of the
        // route's base path.
        for climbing in [
            "/p/..%2Fsecret.txt",
            "/p/%2e%2e%2Fsecret.txt",
            "/p/.%2F..%2Fsecret.txt",
            "/p/x/..%2F..%2F..%2Fsecret.txt",
            "/p/a%5C..%5Cb",
            "/p/a%2F%2Fb",
            "/p/a%2F",
        ] {
            assert_eq!(route(climbing), None, "{climbing}");
        }
    }

    /// `proxy_redirect default`: redirects into the upstream's URL come back as ours, on
    /// segment boundaries only; others are left alone.
    #[test]
    fn upstream_redirects_are_rewritten_to_this_servers_url() {
        let up = Upstream::parse("http://127.0.0.1:9101/v1").unwrap();
        let m = redirect_map(&up, "/api", Some("front:9180"));
        let mut h: Vec<(Text, Text)> = vec![
            ("Location".into(), "http://127.0.0.1:9101/v1/foo?x=1".into()),
            ("Refresh".into(), "5; url=http://127.0.0.1:9101/v1/".into()),
            ("X-Other".into(), "http://127.0.0.1:9101/v1/foo".into()),
        ];
        m.apply(&mut h);
        assert_eq!(h[0].1, "http://front:9180/api/foo?x=1");
        assert_eq!(h[1].1, "5; url=http://front:9180/api/");
        assert_eq!(h[2].1, "http://127.0.0.1:9101/v1/foo", "only redirects");
        assert_eq!(
            m.map("http://127.0.0.1:9101/v1x"),
            None,
            "not a segment boundary"
        );
        assert_eq!(m.map("http://elsewhere.example/v1/a"), None);
        assert_eq!(m.map("/v1/relative"), None);
        // Without a host, a path; without an upstream path, only the origin changes.
        let m = redirect_map(&up, "/api", None);
        assert_eq!(
            m.map("http://127.0.0.1:9101/v1/a").as_deref(),
            Some("/api/a")
        );
        let whole = Upstream::parse("http://up.internal").unwrap();
        let m = redirect_map(&whole, "/api", Some("front"));
        assert_eq!(
            m.map("http://up.internal/api/a").as_deref(),
            Some("http://front/api/a")
        );
    }

    #[test]
    fn a_prefix_routed_twice_or_without_a_slash_is_refused() {
        let cfg = GatewayConfig::default();
        let twice = [
            ("/a".to_string(), "http://127.0.0.1".to_string()),
            ("/a/".to_string(), "http://127.0.0.1".to_string()),
        ];
        assert!(matches!(
            Gateway::new(&twice, &[], cfg.clone()),
            Err(GatewayError::Twice { .. })
        ));
        let bare = [("a".to_string(), "http://127.0.0.1".to_string())];
        assert!(matches!(
            Gateway::new(&bare, &[], cfg.clone()),
            Err(GatewayError::PrefixSlash { .. })
        ));
        let paths = [(
            "/a".to_string(),
            "http://127.0.0.1:1/x,http://127.0.0.1:2/y".to_string(),
        )];
        assert!(matches!(
            Gateway::new(&paths, &[], cfg.clone()),
            Err(GatewayError::Upstream { .. })
        ));
        let unresolvable = [("/a".to_string(), "http://no-such-host.invalid".to_string())];
        let e = Gateway::new(&unresolvable, &[], cfg).unwrap_err();
        assert!(e.to_string().contains("does not resolve"), "{e}");
    }

    /// The client's address as forwarding fields write it, made without `format!`.
    #[test]
    fn client_addresses_are_written_as_their_display_says() {
        use crate::protocol::PeerAddr;
        for a in [
            "0.0.0.0:1",
            "10.20.255.1:2",
            "127.0.0.1:3",
            "[::1]:4",
            "[2001:db8::7]:5",
        ] {
            let sock: std::net::SocketAddr = a.parse().unwrap();
            let peer = Peer {
                remote: PeerAddr::Tcp(sock),
                local: PeerAddr::Tcp(sock),
            };
            let mut buf = [0u8; 48];
            assert_eq!(client_ip(&peer, &mut buf), sock.ip().to_string());
        }
    }

    /// Several upstreams on a route are used in turn; one that failed is left out for the
    /// fail timeout, and a request goes to each at most once.
    #[test]
    fn upstreams_are_used_in_turn_and_a_failed_one_is_left_out() {
        let g = Gateway::new(
            &[(
                "/a".to_string(),
                "http://127.0.0.1:1,http://127.0.0.1:2,http://127.0.0.1:3".to_string(),
            )],
            &[],
            GatewayConfig::default(),
        )
        .unwrap();
        let picks: Vec<usize> = (0..6).map(|_| g.pick(0, 0).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        // Server 1 refused: the next untried one is named, and 1 is skipped for a while.
        let (next, _, label) = g.failover(0, 1, 0b010).unwrap();
        assert_ne!(next, 1);
        assert!(label.contains("127.0.0.1:"), "{label}");
        for _ in 0..6 {
            assert_ne!(g.pick(0, 0), Some(1));
        }
        // Every server tried: nothing is left.
        assert_eq!(g.failover(0, 0, 0b111).map(|f| f.0), None);
    }
}
