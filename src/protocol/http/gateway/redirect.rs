//! An upstream's redirects into itself (`Location`, `Refresh`) rewritten to this server's URL
//! for the same resource (nginx's `proxy_redirect default`).

use crate::protocol::http::message::Text;
use crate::protocol::http::proxy::Upstream;

/// nginx's `proxy_redirect default`: a `Location` or `Refresh` that points into the upstream
/// URL the route forwards to (`http://127.0.0.1:9000/v1/x`) is turned into this server's URL
/// for the same resource (`http://front.example/api/x`), so a client is never sent to an
/// address only the server can reach.
#[derive(Debug)]
pub(super) struct RedirectMap {
    /// `http://AUTHORITY[/path]` as the upstream would write it.
    from: std::sync::Arc<str>,
    /// The request's host: our URL is absolute when it named one (as nginx writes it), else a
    /// path. (Our URL is made only when a redirect needs it, not for every answer.)
    host: Option<String>,
    /// The route's prefix as our URL's path (empty when the upstream sees the whole path).
    path: Box<str>,
}

#[cfg(test)]
pub(super) fn redirect_map(up: &Upstream, prefix: &str, host: Option<&str>) -> RedirectMap {
    redirect_map_from(redirect_from(up), up, prefix, host)
}

/// `http://AUTHORITY[/path]`: what an upstream's redirects into itself start with (made once
/// per route).
pub(super) fn redirect_from(up: &Upstream) -> std::sync::Arc<str> {
    format!(
        "{}://{}{}",
        if up.tls { "https" } else { "http" },
        up.authority,
        up.path.as_deref().unwrap_or("").trim_end_matches('/')
    )
    .into()
}

pub(super) fn redirect_map_from(
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
    pub(super) fn map(&self, url: &str) -> Option<String> {
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

    pub(super) fn apply(&self, headers: &mut [(Text, Text)]) {
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
