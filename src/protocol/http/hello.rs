//! The handler behind `tincan hello` (the greeting page, done properly): every request, whatever its
//! method or path, gets a page greeting the client's address and quoting its request line and
//! headers, escaped; JSON instead when the client's `Accept` prefers it.

use super::message::{html_escape, Body, Handler, Request, Response};
use crate::protocol::{Peer, PeerAddr};

/// Greets every client.
#[derive(Debug, Default, Clone, Copy)]
pub struct Hello;

impl Handler for Hello {
    fn handle(&self, req: &Request<'_>, peer: &Peer) -> Response {
        let version = req.version.as_str();
        let request_line = format!("{} {} {}", req.method, req.target, version);
        let client = match &peer.remote {
            PeerAddr::Tcp(a) => a.to_string(),
            PeerAddr::Unix(p) => format!("unix:{p}"),
        };
        let headers: Vec<(&str, String)> = req
            .headers
            .iter()
            .map(|h| (h.name, String::from_utf8_lossy(h.value).into_owned()))
            .collect();
        let accept = req.header_all("accept").collect::<Vec<_>>().join(",");
        let json = prefers_json(&accept);
        let body = if json {
            let v = serde_json::json!({
                "greeting": format!("Hello, {}!", peer.ip()),
                "client": client,
                "request_line": request_line,
                "method": req.method,
                "target": req.target,
                "version": version,
                "headers": headers.iter().map(|(n, v)| [n.to_string(), v.clone()]).collect::<Vec<_>>(),
            });
            let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
            s.push('\n');
            s
        } else {
            html_page(&peer.ip(), &client, &request_line, &headers)
        };
        let ctype = if json {
            "application/json"
        } else {
            "text/html; charset=utf-8"
        };
        Response::new(200)
            .header("Content-Type", ctype)
            .header("Vary", "Accept")
            .header("Cache-Control", "no-store")
            .header("X-Content-Type-Options", "nosniff")
            .with_body(Body::Bytes(bytes::Bytes::from(body)))
    }
}

fn html_page(ip: &str, client: &str, request_line: &str, headers: &[(&str, String)]) -> String {
    let mut rows = String::new();
    for (n, v) in headers {
        rows.push_str(&format!(
            "<tr><th>{}</th><td>{}</td></tr>\n",
            html_escape(n),
            html_escape(v)
        ));
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Hello, {ip}!</title>\n<style>body{{font-family:system-ui,sans-serif;max-width:50rem;margin:2rem auto;padding:0 1rem}}\
th{{text-align:left;padding-right:1rem;vertical-align:top}}td,pre{{font-family:ui-monospace,monospace;word-break:break-all}}</style></head>\n\
<body><h1>Hello, {ip}!</h1>\n<p>You connected from <code>{client}</code>. Your request was:</p>\n\
<pre>{line}</pre>\n<table>\n{rows}</table>\n</body></html>\n",
        ip = html_escape(ip),
        client = html_escape(client),
        line = html_escape(request_line),
    )
}

/// Does `accept` rank `application/json` above `text/html` (RFC 9110 §12.5.1: the most
/// specific matching range gives each type its q)?
pub fn prefers_json(accept: &str) -> bool {
    if accept.trim().is_empty() {
        return false;
    }
    let q_json = quality(accept, "application", "json");
    let q_html = quality(accept, "text", "html");
    q_json > 0.0 && q_json > q_html
}

/// The q value `accept` gives `ty/sub` (0 when no range matches).
fn quality(accept: &str, ty: &str, sub: &str) -> f32 {
    let mut best: Option<(u8, f32)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim();
        let Some((t, s)) = media.split_once('/') else {
            continue;
        };
        let specificity = match (t.trim(), s.trim()) {
            ("*", "*") => 0,
            (t, "*") if t.eq_ignore_ascii_case(ty) => 1,
            (t, s) if t.eq_ignore_ascii_case(ty) && s.eq_ignore_ascii_case(sub) => 2,
            _ => continue,
        };
        let q = parts
            .filter_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .or_else(|| p.trim().strip_prefix("Q="))
            })
            .find_map(|v| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        if best.is_none_or(|(sp, _)| specificity > sp) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_decides_between_html_and_json() {
        let cases = [
            ("", false),
            ("*/*", false),
            ("application/json", true),
            (
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
                false,
            ),
            ("application/json, text/html;q=0.5", true),
            ("text/html;q=0.5, application/json;q=0.9", true),
            ("application/*", true),
            ("application/json;q=0", false),
            ("text/*, application/json", false),
        ];
        for (accept, want) in cases {
            assert_eq!(prefers_json(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn the_page_quotes_the_request_escaped() {
        let headers = [("X-Evil", "<script>alert(1)</script>".to_string())];
        let page = html_page("127.0.0.1", "127.0.0.1:9", "GET /<b> HTTP/1.1", &headers);
        assert!(page.contains("Hello, 127.0.0.1!"));
        assert!(page.contains("GET /&lt;b&gt; HTTP/1.1"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(!page.contains("<script>"));
    }
}
