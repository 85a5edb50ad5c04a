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
//!
//! The parts, each with one job:
//! - `routes`: the route table built from the configuration ([`GatewayConfig`],
//!   [`GatewayError`]), each upstream resolved once;
//! - `upstreams`: which of a route's upstreams takes a request (round robin, failover);
//! - `forward`: what goes upstream besides the head's fields: the path and the client's address;
//! - `redirect`: an upstream's redirects into itself rewritten to this server's URL;
//! - `pending`: an answer in flight ([`Pending`]): its head parsed, its framing removed, a
//!   failure turned into a page;
//! - `attempt`: the link an exchange goes through ([`Attempt`]): retried once when a kept
//!   connection fails, failed over when an upstream refuses, its end read after its input.

use std::path::PathBuf;
use std::time::Instant;

use super::cgi::{self, Script};
use super::message::{error_response, Request, Response};
use super::proxy::{self, ClientInfo, RequestBody};
use super::static_files::path::UrlPath;
use crate::protocol::{Dial, Peer};

mod attempt;
mod forward;
mod pending;
mod redirect;
mod routes;
#[cfg(test)]
mod tests;
mod upstreams;

pub use attempt::Attempt;
use forward::{client_ip, path_for};
use pending::Mode;
pub use pending::{Failure, Pending, Progress};
use redirect::redirect_map_from;
pub use routes::{GatewayConfig, GatewayError};
use routes::{Kind, Route};

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

impl Gateway {
    /// Form CGI scripts' `PATH_TRANSLATED` against `root` (the directory served).
    pub fn with_document_root(mut self, root: &std::path::Path) -> Gateway {
        self.doc_root = std::fs::canonicalize(root).ok();
        self
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.cfg
    }

    /// Descriptors one connection may hold at once for an exchange here (a proxied request
    /// its upstream socket, a CGI request the script's stdin and stdout pipes), and the idle
    /// upstream connections one pool may keep.
    pub fn descriptors(&self) -> (usize, usize) {
        self.routes
            .iter()
            .fold((0, 0), |(per, kept), r| match &r.kind {
                Kind::Proxy { servers, .. } => {
                    (per.max(1), kept + servers.len() * self.cfg.keepalive)
                }
                Kind::Cgi(_) => (per.max(2), kept),
            })
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
