//! The handler behind `serve --redirect-http`: a plain listener whose every answer sends the
//! client to the same path and query over https, on the TLS listener's port.
//!
//! - 308 Permanent Redirect (RFC 9110 §15.4.9), not 301: the client repeats the request with
//!   the same method and body, so a POST stays a POST.
//! - The host is the one the client asked for (RFC 9112 §3.2: `Host`, or an absolute-form
//!   target's authority) with its port replaced; without one, the address the connection
//!   reached.
//! - ACME HTTP-01 challenges (RFC 8555 §8.3: `/.well-known/acme-challenge/TOKEN`, asked over
//!   plain HTTP on port 80 by the CA) are never redirected: a pending token gets its key
//!   authorization, any other 404.

use super::message::{Body, Handler, Request, Response};
use crate::protocol::{Peer, PeerAddr};

/// The path prefix of ACME HTTP-01 challenges (RFC 8555 §8.3).
pub const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// Sends every request to `https://HOST:port/same/path?same=query`.
#[derive(Clone)]
pub struct RedirectHttps {
    /// The TLS listener's port; 443 is left out of the URL (RFC 9110 §4.2.2: the default).
    pub port: u16,
    /// The ACME client's answer to a pending HTTP-01 token, if one runs.
    pub acme: Option<AcmeAnswer>,
}

/// The key authorization for an HTTP-01 token, while it is pending.
pub type AcmeAnswer = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

impl std::fmt::Debug for RedirectHttps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedirectHttps")
            .field("port", &self.port)
            .field("acme", &self.acme.is_some())
            .finish()
    }
}

impl Handler for RedirectHttps {
    fn handle(&self, req: &Request<'_>, peer: &Peer) -> Response {
        if let Some(token) = req.path.strip_prefix(ACME_CHALLENGE) {
            return match self.acme.as_ref().and_then(|answer| answer(token)) {
                Some(key_authorization) => Response::new(200)
                    .header("Content-Type", "application/octet-stream")
                    .with_body(Body::Bytes(bytes::Bytes::from(key_authorization))),
                None => text(404, "No ACME challenge is pending here.\n"),
            };
        }
        let host = match req.host() {
            Some(h) => host_name(h).to_string(),
            None => match &peer.local {
                PeerAddr::Tcp(a) if a.is_ipv6() => format!("[{}]", a.ip()),
                PeerAddr::Tcp(a) => a.ip().to_string(),
                PeerAddr::Unix(_) => "localhost".to_string(),
            },
        };
        let port = match self.port {
            443 => String::new(),
            p => format!(":{p}"),
        };
        // `OPTIONS *` (RFC 9112 §3.2.4) names no resource: the site's root stands for it.
        let path = if req.path.starts_with('/') {
            req.path
        } else {
            "/"
        };
        let query = req.query.map(|q| format!("?{q}")).unwrap_or_default();
        let location = format!("https://{host}{port}{path}{query}");
        let body = format!("This site is served over HTTPS: {location}\n");
        text(308, &body).header("Location", location)
    }
}

fn text(status: u16, body: &str) -> Response {
    Response::new(status)
        .header("Content-Type", "text/plain; charset=utf-8")
        .with_body(Body::Bytes(bytes::Bytes::from(body.to_string())))
}

/// `Host` without its port: `example.org:80` → `example.org`, `[::1]:80` → `[::1]`. The
/// session has already checked the field against RFC 9110 §7.2's grammar.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(target: &str, host: Option<&str>, port: u16) -> Response {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let headers = crate::protocol::http::message::tests::host_field(host);
        let req = Request {
            method: "POST",
            target,
            path,
            query,
            version: super::super::Version::Http11,
            headers: &headers,
        };
        let peer = Peer {
            remote: PeerAddr::Tcp("127.0.0.1:5000".parse().unwrap()),
            local: PeerAddr::Tcp("[::1]:80".parse().unwrap()),
        };
        RedirectHttps { port, acme: None }.handle(&req, &peer)
    }

    #[test]
    fn every_request_goes_to_the_same_path_and_query_on_the_https_port() {
        let cases = [
            (
                "/a/b?x=1&y",
                Some("example.org:8080"),
                8443,
                "https://example.org:8443/a/b?x=1&y",
            ),
            ("/", Some("example.org"), 443, "https://example.org/"),
            ("/x", Some("[::1]:80"), 8443, "https://[::1]:8443/x"),
            ("/x", None, 8443, "https://[::1]:8443/x"),
            ("*", Some("h"), 443, "https://h/"),
        ];
        for (target, host, port, want) in cases {
            let r = answer(target, host, port);
            assert_eq!(r.status, 308, "{target}");
            assert_eq!(r.get_header("location"), Some(want), "{target} {host:?}");
        }
    }

    #[test]
    fn acme_challenges_are_not_redirected() {
        let r = answer("/.well-known/acme-challenge/abc", Some("example.org"), 443);
        assert_eq!(r.status, 404);
        assert_eq!(r.get_header("location"), None);
    }
}
