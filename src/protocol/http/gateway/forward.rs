//! What goes upstream besides the head's fields: the path the upstream is asked for (the raw
//! one when normalizing changed nothing) and the client's address for the forwarding fields.

use crate::protocol::http::proxy::Upstream;
use crate::protocol::http::static_files::path::{encode_pchar, UrlPath};
use crate::protocol::Peer;

/// The client's IP as text, written into `buf` (no allocation per request); `unix` for a Unix
/// socket's client.
pub(super) fn client_ip<'a>(peer: &Peer, buf: &'a mut [u8; 48]) -> &'a str {
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

/// The path `up` is asked for: the raw path itself when the upstream names no path of its own
/// and normalization changed nothing (no copy), else built.
pub(super) fn path_for<'a>(
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
pub(super) fn rest_of_path(raw: &str, url: &UrlPath, depth: usize) -> String {
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
pub(super) fn forwarded_path(raw: &str, url: &UrlPath) -> String {
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
