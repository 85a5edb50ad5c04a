//! Routes that hand requests to other applications (seed 004): `--proxy PREFIX=URL` and
//! `--cgi PREFIX=DIR`. The session asks [`Gateway::route`] for every request head (only when a
//! gateway is configured; the static path pays nothing otherwise); a routed request's body is
//! collected (bounded by `--max-body`), then [`Gateway::start`] builds the outbound job
//! (request bytes for an upstream, program and environment for a CGI script) and submits it to
//! the [`Outbound`] pool. The answer streams back through a [`Pending`], which the session polls
//! in `on_wake`/`on_drained` and re-frames for the client.
//!
//! Routing: the request path is normalized first (the static handler's [`UrlPath`]: one
//! percent-decoding, dot segments resolved, encoded slashes refused), then matched segment by
//! segment against each prefix; the longest prefix wins (`/api` matches `/api` and `/api/x`,
//! never `/apix`). Normalizing before matching means `/api/../secret` is `/secret`, as in
//! nginx's `location` matching.

use std::collections::VecDeque;
use std::path::PathBuf;

use super::cgi::{self, Script};
use super::message::{error_response, Request, Response, Text};
use super::proxy::{self, BodyFraming, ClientInfo, ResponseHead, Upstream, BAD_RESPONSE};
use super::static_files::path::{encode_pchar, UrlPath};
use crate::model::outbound::{Busy, Event, Failure, JobSpec, Outbound, Receiver};
use crate::protocol::{Peer, Waker};

/// Longest response head (upstream status line and headers, or a script's header block).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most header fields in one upstream or CGI response head.
const MAX_RESPONSE_HEADERS: usize = 100;

#[derive(Debug)]
enum Kind {
    Proxy(Upstream),
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

/// Every proxy and CGI route, and the pool that runs their jobs.
#[derive(Debug)]
pub struct Gateway {
    /// Longest prefix first.
    routes: Vec<Route>,
    pool: Outbound,
    /// The static root, against which a CGI request's `PATH_TRANSLATED` is formed.
    doc_root: Option<PathBuf>,
}

/// A request the gateway takes: which route, and the normalized path.
#[derive(Debug)]
pub struct Routed {
    index: usize,
    url: UrlPath,
}

impl Gateway {
    /// Build from `(prefix, upstream URL)` and `(prefix, directory)` pairs; each error is a
    /// sentence naming the bad one.
    pub fn new(
        proxies: &[(String, String)],
        cgis: &[(String, PathBuf)],
        pool: Outbound,
    ) -> Result<Gateway, String> {
        let mut routes = Vec::new();
        let prefix_of = |p: &str, flag: &str| -> Result<(String, Vec<Vec<u8>>), String> {
            if !p.starts_with('/') {
                return Err(format!("--{flag} {p}: the prefix must start with /"));
            }
            let url = UrlPath::parse(p, true)
                .map_err(|_| format!("--{flag} {p}: the prefix is not a valid URL path"))?;
            Ok((url.encoded(), url.segments))
        };
        for (p, url) in proxies {
            let (prefix, segments) = prefix_of(p, "proxy")?;
            let up = Upstream::parse(url).map_err(|e| format!("--proxy {p}={url}: {e}"))?;
            routes.push(Route {
                prefix,
                segments,
                kind: Kind::Proxy(up),
            });
        }
        for (p, dir) in cgis {
            let (prefix, segments) = prefix_of(p, "cgi")?;
            let canon = match std::fs::canonicalize(dir) {
                Ok(d) if d.is_dir() => d,
                Ok(_) => {
                    return Err(format!(
                        "--cgi {p}={}: that is a file; give the directory that holds the scripts",
                        dir.display()
                    ))
                }
                Err(_) => {
                    return Err(format!(
                        "--cgi {p}={}: the script directory does not exist",
                        dir.display()
                    ))
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
                return Err(format!("the prefix {} is routed twice", r.prefix));
            }
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.segments.len()));
        Ok(Gateway {
            routes,
            pool,
            doc_root: None,
        })
    }

    /// Form CGI scripts' `PATH_TRANSLATED` against `root` (the directory served).
    pub fn with_document_root(mut self, root: &std::path::Path) -> Gateway {
        self.doc_root = std::fs::canonicalize(root).ok();
        self
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

    /// Start the outbound job for a routed request with its whole `body`. An `Err` is the
    /// answer to send at once (no such script, all workers busy, ...).
    pub fn start(
        &self,
        routed: Routed,
        req: &Request<'_>,
        body: Vec<u8>,
        peer: &Peer,
        waker: Waker,
    ) -> Result<Pending, Box<Response>> {
        let route = &self.routes[routed.index];
        let depth = route.segments.len();
        let mut redirect = None;
        let (spec, mode) = match &route.kind {
            Kind::Proxy(up) => {
                redirect = Some(redirect_map(up, &route.prefix, req.host()));
                let rest = rest_of_path(req.path, &routed.url, depth);
                let full = forwarded_path(req.path, &routed.url);
                let path = up.upstream_path(&full, &rest);
                let bytes =
                    proxy::build_request(req, up, &path, &body, &ClientInfo { ip: &peer.ip() });
                (
                    JobSpec::Connect {
                        target: up.target.clone(),
                        request: bytes,
                    },
                    Mode::Proxy,
                )
            }
            Kind::Cgi(dir) => {
                let script: Script = cgi::resolve(dir, &route.prefix, &routed.url, depth)
                    .map_err(|(status, why)| Box::new(error_response(status, why)))?;
                let env =
                    cgi::environment(req, &script, peer, body.len(), self.doc_root.as_deref());
                (
                    JobSpec::Spawn {
                        cwd: script
                            .program
                            .parent()
                            .map_or_else(|| dir.clone(), |p| p.to_path_buf()),
                        program: script.program,
                        env,
                        stdin: body,
                    },
                    Mode::Cgi,
                )
            }
        };
        let rx = self.pool.submit(spec, waker).map_err(|Busy| {
            Box::new(
                error_response(503, "Every upstream worker is busy; try again in a moment.")
                    .header("Retry-After", "1"),
            )
        })?;
        Ok(Pending {
            rx,
            mode,
            redirect,
            head_request: req.is_head(),
            state: State::Head(Vec::new()),
            ready: VecDeque::new(),
        })
    }
}

/// nginx's `proxy_redirect default`: a `Location` or `Refresh` that points into the upstream
/// URL the route forwards to (`http://127.0.0.1:9000/v1/x`) is turned into this server's URL
/// for the same resource (`http://front.example/api/x`), so a client is never sent to an
/// address only the server can reach.
#[derive(Debug)]
struct RedirectMap {
    /// `http://AUTHORITY[/path]` as the upstream would write it.
    from: String,
    /// Our URL for the route's prefix: absolute when the request named a host (as nginx
    /// writes it), else a path.
    to: String,
}

fn redirect_map(up: &Upstream, prefix: &str, host: Option<&str>) -> RedirectMap {
    let from = format!(
        "http://{}{}",
        up.authority,
        up.path.as_deref().unwrap_or("").trim_end_matches('/')
    );
    // Without a path of its own the upstream sees the whole path: only the origin changes.
    let path = if up.path.is_some() {
        prefix.trim_end_matches('/')
    } else {
        ""
    };
    let to = match host {
        Some(h) => format!("http://{h}{path}"),
        None => path.to_string(),
    };
    RedirectMap { from, to }
}

impl RedirectMap {
    /// `url` in our terms, if it points into the upstream (on a segment boundary).
    fn map(&self, url: &str) -> Option<String> {
        let head = url.get(..self.from.len())?;
        if !head.eq_ignore_ascii_case(&self.from) {
            return None;
        }
        let rest = &url[self.from.len()..];
        if !(rest.is_empty() || rest.starts_with(['/', '?', '#'])) {
            return None;
        }
        let mut out = self.to.clone();
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
    let body = body.strip_suffix('/').unwrap_or(body);
    (body.is_empty()
        || body
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".."))
        && !raw.contains("%2e")
        && !raw.contains("%2E")
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
    Body(BodyFraming),
    Finished,
}

/// What the session does next with an outbound response.
#[derive(Debug)]
pub enum Progress {
    /// Nothing new; a wake will come.
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
    /// The body ended where its framing said.
    End,
    /// It failed before any head: answer this instead.
    Fail(Response),
    /// It failed mid-body: the client must see a truncated response (close the connection).
    Abort,
}

/// An outbound response in flight, as the session sees it.
#[derive(Debug)]
pub struct Pending {
    rx: Receiver,
    mode: Mode,
    /// A proxied answer's redirects are rewritten from the upstream's URL to ours.
    redirect: Option<RedirectMap>,
    head_request: bool,
    state: State,
    /// Steps already decided and not yet handed to the session (the head and the body bytes
    /// that came with it; the last body bytes and the end).
    ready: VecDeque<Progress>,
}

/// Where the upstream's body stands after a piece of it.
enum Outcome {
    More,
    End,
    Broken,
}

impl Pending {
    /// Take the next step. Never blocks.
    pub fn poll(&mut self) -> Progress {
        loop {
            if let Some(p) = self.ready.pop_front() {
                return p;
            }
            if matches!(self.state, State::Finished) {
                return Progress::Wait;
            }
            let Some(ev) = self.rx.try_recv() else {
                return Progress::Wait;
            };
            match (&mut self.state, ev) {
                (State::Finished, _) => return Progress::Wait,
                (State::Head(buf), Event::Data(d)) => {
                    buf.extend_from_slice(&d);
                    match self.parse_head() {
                        Ok(true) => {}
                        Ok(false) => {
                            if matches!(&self.state, State::Head(b) if b.len() > MAX_RESPONSE_HEAD)
                            {
                                return self.fail(502, BAD_RESPONSE);
                            }
                        }
                        Err(why) => return self.fail(502, why),
                    }
                }
                (State::Head(_), Event::End) => {
                    let why = match self.mode {
                        Mode::Proxy => {
                            "The upstream server closed the connection without a complete response."
                        }
                        Mode::Cgi => {
                            "The script ended without printing a complete CGI header block."
                        }
                    };
                    return self.fail(502, why);
                }
                (State::Head(_), Event::Failed(f)) => {
                    let (status, why) = failure_answer(f, self.mode);
                    return self.fail(status, why);
                }
                (State::Body(framing), Event::Data(d)) => {
                    let (data, outcome) = relay(framing, d);
                    self.push_body(data, outcome);
                }
                (State::Body(framing), Event::End) => {
                    // Only a close-delimited body may end by the upstream closing.
                    let clean = matches!(framing, BodyFraming::Close);
                    self.state = State::Finished;
                    return if clean {
                        self.rx.complete();
                        Progress::End
                    } else {
                        Progress::Abort
                    };
                }
                (State::Body(_), Event::Failed(f)) => {
                    tracing::debug!("outbound body broke: {f:?}");
                    self.state = State::Finished;
                    return Progress::Abort;
                }
            }
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
                self.rx.complete();
                self.ready.push_back(Progress::End);
            }
            Outcome::Broken => {
                self.state = State::Finished;
                self.ready.push_back(Progress::Abort);
            }
        }
    }

    fn fail(&mut self, status: u16, why: &'static str) -> Progress {
        self.state = State::Finished;
        Progress::Fail(error_response(status, why))
    }

    /// Try to parse the head collected so far; true once it is parsed (and queued).
    fn parse_head(&mut self) -> Result<bool, &'static str> {
        let State::Head(buf) = &mut self.state else {
            return Ok(false);
        };
        loop {
            let parsed = match self.mode {
                Mode::Proxy => {
                    proxy::parse_response_head(buf, self.head_request, MAX_RESPONSE_HEADERS)?
                }
                Mode::Cgi => cgi::parse_cgi_head(buf, self.head_request, MAX_RESPONSE_HEADERS)?,
            };
            let Some((n, head)) = parsed else {
                return Ok(false);
            };
            // A head completed by the read that carried it past the limit is still too big
            // (nginx: "upstream sent too big header", 502).
            if n > MAX_RESPONSE_HEAD {
                return Err(BAD_RESPONSE);
            }
            if head.status < 200 {
                // An interim response (100, 103): not relayed; the final one follows.
                buf.drain(..n);
                continue;
            }
            let rest = buf.split_off(n);
            let ResponseHead {
                status,
                reason,
                headers,
                raw_headers,
                mut framing,
                length,
                local_redirect,
            } = head;
            if let Some(path) = local_redirect {
                self.state = State::Finished;
                self.rx.complete();
                self.ready.push_back(Progress::LocalRedirect(path));
                return Ok(true);
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
            let bodiless = matches!(framing, BodyFraming::None);
            self.ready.push_back(Progress::Head {
                response,
                length,
                bodiless,
            });
            if bodiless {
                self.state = State::Finished;
                self.rx.complete();
                return Ok(true);
            }
            // Body bytes that came with the head are relayed first.
            let (data, outcome) = if rest.is_empty() {
                (Vec::new(), Outcome::More)
            } else {
                relay(&mut framing, rest)
            };
            self.state = State::Body(framing);
            self.push_body(data, outcome);
            return Ok(true);
        }
    }
}

fn failure_answer(f: Failure, mode: Mode) -> (u16, &'static str) {
    match (f, mode) {
        (Failure::Timeout, Mode::Proxy) => (504, "The upstream server did not answer in time."),
        (Failure::Timeout, Mode::Cgi) => (504, "The script did not answer in time."),
        (Failure::Connect(e), _) => {
            tracing::warn!("upstream unreachable: {e}");
            (502, "The upstream server could not be reached.")
        }
        (Failure::Spawn(e), _) => {
            tracing::warn!("CGI script could not start: {e}");
            (502, "The script could not be started.")
        }
        (Failure::Io(e), _) => {
            tracing::debug!("outbound I/O failed: {e}");
            (502, "The upstream connection broke before a response.")
        }
    }
}

/// Remove the upstream's framing from `d`: the bytes to send, and whether the body is complete
/// (anything after it is dropped) or its framing broken.
fn relay(framing: &mut BodyFraming, mut d: Vec<u8>) -> (Vec<u8>, Outcome) {
    match framing {
        BodyFraming::None => (Vec::new(), Outcome::End),
        BodyFraming::Close => (d, Outcome::More),
        BodyFraming::Length(rem) => {
            if (d.len() as u64) >= *rem {
                d.truncate(*rem as usize);
                *rem = 0;
                return (d, Outcome::End);
            }
            *rem -= d.len() as u64;
            (d, Outcome::More)
        }
        BodyFraming::Chunked(c) => {
            let mut out = Vec::with_capacity(d.len());
            match c.feed_into(&d, &proxy::chunk_limits(), |b| out.extend_from_slice(b)) {
                Ok((_, true)) => (out, Outcome::End),
                Ok((_, false)) => (out, Outcome::More),
                Err(_) => (out, Outcome::Broken),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::outbound::{OutboundConfig, Target};
    use crate::protocol::http::parse::{parse_head, Limits};

    fn gateway() -> Gateway {
        Gateway::new(
            &[
                ("/api".into(), "http://127.0.0.1:9/v1".into()),
                ("/api/admin".into(), "http://127.0.0.1:10".into()),
                ("/".into(), "http://127.0.0.1:11/".into()),
            ],
            &[],
            Outbound::new(OutboundConfig::default()),
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
        let Kind::Proxy(up) = &route.kind else {
            return None;
        };
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
            Outbound::new(OutboundConfig::default()),
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
        let pool = Outbound::new(OutboundConfig::default());
        let twice = [
            ("/a".to_string(), "http://h".to_string()),
            ("/a/".to_string(), "http://h".to_string()),
        ];
        assert!(Gateway::new(&twice, &[], pool.clone()).is_err());
        let bare = [("a".to_string(), "http://h".to_string())];
        assert!(Gateway::new(&bare, &[], pool).is_err());
    }
}
