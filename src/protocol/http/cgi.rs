//! CGI/1.1 (RFC 3875), sans-I/O: find the script a request names, build its meta-variables,
//! and parse the header block it prints. The child itself is run by
//! a link the session's driver opens ([`crate::protocol::link`]); [`super::gateway`] ties the two together.
//!
//! - The script is the first path segment after the route's prefix, resolved with the static
//!   handler's own rules ([`UrlPath`] then [`locate`]: one decoding, no climbing out of the
//!   directory, no dotfiles, no symlinks leading out): missing → 404, not a regular executable
//!   file → 403. The rest of the path is `PATH_INFO` (decoded, §4.1.5).
//! - The environment is cleared except `PATH`; `HTTP_*` carries the request headers except
//!   `Proxy` (httpoxy, CVE-2016-5385), `Content-Length`/`Content-Type` (their own variables),
//!   `Authorization` (§4.1.18 leaves it out unless the server is configured to pass it),
//!   `Transfer-Encoding` (the body arrives de-chunked) and names with `_` (which would pose
//!   as the `-` spelling).
//! - The response (§6): header lines up to an empty line; `Status:` sets the status, a
//!   `Location:` without `Status:` is a client redirect (302), `Content-Length:` (if the script
//!   gives one) frames the body, everything else but hop-by-hop fields is passed on. A script
//!   that prints none of `Content-Type`, `Location`, `Status` is broken (502).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::message::{Request, Text};
use super::proxy::{push_field, ResponseHead};
use super::static_files::path::{locate, Refusal, UrlPath};
use super::wire::fields::{connection_tokens, content_length, is_hop_by_hop, status_has_body};
use super::wire::Decoder;
use crate::protocol::{Peer, PeerAddr};

/// A script found for a request.
#[derive(Debug, PartialEq, Eq)]
pub struct Script {
    /// The canonical path of the executable.
    pub program: PathBuf,
    /// `SCRIPT_NAME`: the URL path of the script (prefix and script segment).
    pub script_name: String,
    /// `PATH_INFO`: the decoded rest of the path (empty or starting with `/`), as bytes: a
    /// name that is not UTF-8 reaches the script as it is, not with U+FFFD in it.
    pub path_info: OsString,
}

/// Why a request names no runnable script: the status and the sentence for the page.
pub type Refused = (u16, &'static str);

/// Find the script for `url` (already normalized), given that its first `depth` segments
/// matched the route prefix `prefix` and `dir` (canonical) holds the scripts.
pub fn resolve(dir: &Path, prefix: &str, url: &UrlPath, depth: usize) -> Result<Script, Refused> {
    const MISSING: Refused = (404, "There is no such script.");
    const FORBIDDEN: Refused = (403, "That script may not be run.");
    let Some(name) = url.segments.get(depth) else {
        return Err(MISSING);
    };
    let program = match locate(dir, Path::new(OsStr::from_bytes(name)), false, false) {
        Ok(p) => p,
        Err(Refusal::NotFound | Refusal::Hidden) => return Err(MISSING),
        Err(Refusal::Forbidden) => return Err(FORBIDDEN),
        Err(Refusal::Busy) => return Err((503, "The server is short of resources; try again.")),
    };
    let meta = std::fs::metadata(&program).map_err(|_| MISSING)?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(FORBIDDEN);
    }
    let mut script_name = prefix.trim_end_matches('/').to_string();
    script_name.push('/');
    script_name.push_str(&super::static_files::path::encode_segment(name));
    let mut path_info = Vec::new();
    for seg in &url.segments[depth + 1..] {
        path_info.push(b'/');
        path_info.extend_from_slice(seg);
    }
    // §4.1.5: `/env.sh/` has a PATH_INFO of `/` (one void segment), unlike `/env.sh`.
    if url.trailing_slash {
        path_info.push(b'/');
    }
    let path_info = OsString::from_vec(path_info);
    Ok(Script {
        program,
        script_name,
        path_info,
    })
}

/// The meta-variables of RFC 3875 §4.1 for `req`, plus `PATH` (the server's, so `#!/usr/bin/env`
/// scripts work).
pub fn environment(
    req: &Request<'_>,
    script: &Script,
    peer: &Peer,
    body_len: u64,
    doc_root: Option<&Path>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::with_capacity(24 + req.headers.len());
    // §4.1.6: the path-info mapped as the server would map a request for it.
    if let (false, Some(root)) = (script.path_info.is_empty(), doc_root) {
        let mut translated = root.as_os_str().to_os_string();
        translated.push(&script.path_info);
        env.push(("PATH_TRANSLATED".into(), translated));
    }
    let mut set = |k: &str, v: String| env.push((k.into(), v.into()));
    set(
        "PATH",
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
    );
    set("GATEWAY_INTERFACE", "CGI/1.1".into());
    set("SERVER_PROTOCOL", req.version.as_str().into());
    set(
        "SERVER_SOFTWARE",
        concat!("tincan/", env!("CARGO_PKG_VERSION")).into(),
    );
    set("REQUEST_METHOD", req.method.into());
    set("SCRIPT_NAME", script.script_name.clone());
    env.push(("PATH_INFO".into(), script.path_info.clone()));
    // What nginx's fastcgi_params and Apache add beyond RFC 3875, which PHP and other
    // CGI programs expect: the script's file, the document root, the scheme, and the
    // REDIRECT_STATUS a PHP built with force-cgi-redirect requires.
    env.push(("SCRIPT_FILENAME".into(), script.program.clone().into()));
    if let Some(root) = doc_root {
        env.push(("DOCUMENT_ROOT".into(), root.into()));
    }
    let mut set = |k: &str, v: String| env.push((k.into(), v.into()));
    set("REQUEST_SCHEME", "http".into());
    set("REDIRECT_STATUS", "200".into());
    set("QUERY_STRING", req.query.unwrap_or("").into());
    set("REQUEST_URI", req.target.into());
    if body_len > 0 {
        set("CONTENT_LENGTH", body_len.to_string());
    }
    if let Some(ct) = req.header("content-type") {
        set("CONTENT_TYPE", ct.into());
    }
    // §4.1.9: REMOTE_HOST is the client's name, or its address when no name is looked up
    // (none is: a lookup per request would block).
    match &peer.remote {
        PeerAddr::Tcp(a) => {
            set("REMOTE_ADDR", a.ip().to_string());
            set("REMOTE_HOST", a.ip().to_string());
            set("REMOTE_PORT", a.port().to_string());
        }
        PeerAddr::Unix(_) => {
            // Not 127.0.0.1: a script that trusts local addresses must not be fooled by
            // whoever can reach the socket file. "unix", as in the access log and in
            // X-Forwarded-For.
            set("REMOTE_ADDR", peer.ip());
            set("REMOTE_HOST", peer.ip());
        }
    }
    // SERVER_NAME from Host (§4.1.14 allows it), else the address the connection came in on.
    let (local_host, local_port) = match &peer.local {
        PeerAddr::Tcp(a) => (a.ip().to_string(), a.port().to_string()),
        PeerAddr::Unix(_) => ("localhost".to_string(), "0".to_string()),
    };
    let host = req
        .host()
        .map(|h| match h.rsplit_once(':') {
            Some((name, port)) if !name.ends_with(']') || name.starts_with('[') => {
                if port.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty() {
                    name.to_string()
                } else {
                    h.to_string()
                }
            }
            _ => h.to_string(),
        })
        .filter(|h| !h.is_empty())
        .unwrap_or(local_host);
    set("SERVER_NAME", host);
    set("SERVER_PORT", local_port);
    // §4.1.18: request headers as HTTP_*; several fields of one name are joined with ", ",
    // except Cookie, whose pairs are joined with "; " (RFC 6265 §5.4; a comma would glue two
    // cookies into one value).
    let mut http: Vec<(String, Vec<u8>)> = Vec::new();
    for h in req.headers {
        // `X_User` would become the same HTTP_X_USER as `X-User`, letting a client pose as
        // a header a front end strips: names with `_` are dropped (as Apache and nginx do).
        if h.name.contains('_') {
            continue;
        }
        let name = h.name.to_ascii_uppercase().replace('-', "_");
        // TRANSFER_ENCODING: the body on stdin is already de-chunked (CONTENT_LENGTH says
        // how long it is).
        if matches!(
            name.as_str(),
            "PROXY" | "CONTENT_LENGTH" | "CONTENT_TYPE" | "AUTHORIZATION" | "TRANSFER_ENCODING"
        ) {
            continue;
        }
        let key = format!("HTTP_{name}");
        match http.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => {
                v.extend_from_slice(if name == "COOKIE" { b"; " } else { b", " });
                v.extend_from_slice(h.value);
            }
            None => http.push((key, h.value.to_vec())),
        }
    }
    for (k, v) in http {
        env.push((k.into(), OsString::from_vec(v)));
    }
    env
}

/// Parse the CGI header block at the start of `buf`. `Ok(None)`: need more output.
pub fn parse_cgi_head(
    buf: &[u8],
    head_request: bool,
    max_headers: usize,
) -> Result<Option<(usize, ResponseHead)>, &'static str> {
    let mut storage = vec![httparse::EMPTY_HEADER; max_headers];
    let (n, fields) = match httparse::parse_headers(buf, &mut storage) {
        Ok(httparse::Status::Complete((n, fields))) => (n, fields),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(BAD_SCRIPT),
    };
    let named = connection_tokens(fields.iter().map(|h| (h.name, h.value)));
    let mut status = None;
    let mut reason = None;
    let mut location = None;
    let mut content_type = false;
    let mut lengths = Vec::new();
    let mut headers = Vec::with_capacity(fields.len());
    let mut raw_headers = Vec::new();
    for h in fields.iter() {
        let lower = h.name.to_ascii_lowercase();
        // A value that is not UTF-8 (a Latin-1 file name) is relayed byte for byte; only the
        // fields read here must be text.
        let Ok(value) = std::str::from_utf8(h.value).map(str::trim) else {
            if matches!(
                lower.as_str(),
                "status" | "content-length" | "location" | "content-type"
            ) {
                return Err(BAD_SCRIPT);
            }
            if !is_hop_by_hop(h.name) && !named.contains(&lower) {
                push_field(&mut headers, &mut raw_headers, h.name, h.value.trim_ascii());
            }
            continue;
        };
        match lower.as_str() {
            "status" => {
                // §6.3.3: `Status: 3DIGIT SP reason-phrase`.
                let (code, phrase) = value.split_once(' ').unwrap_or((value, ""));
                match code.parse::<u16>() {
                    Ok(c) if code.len() == 3 && (200..=599).contains(&c) => {
                        status = Some(c);
                        reason = super::message::foreign_reason(c, phrase);
                    }
                    _ => return Err(BAD_SCRIPT),
                }
                continue;
            }
            "content-length" => {
                lengths.push(value.as_bytes());
                continue;
            }
            "location" => location = Some(value.to_string()),
            "content-type" => content_type = true,
            _ => {}
        }
        if is_hop_by_hop(h.name) || named.contains(&lower) {
            continue;
        }
        headers.push((
            Text::Owned(h.name.to_string()),
            Text::Owned(value.to_string()),
        ));
    }
    if status.is_none() && location.is_none() && !content_type {
        return Err(BAD_SCRIPT);
    }
    // §6.2.2: a path (not a URL) and no status: the server answers for that path itself.
    let local_redirect = match (&location, status) {
        (Some(l), None) if l.starts_with('/') && !l.starts_with("//") => Some(l.clone()),
        _ => None,
    };
    // §6.2.3/§6.2.4: a redirect without a status is a 302.
    let status = status.unwrap_or(if location.is_some() { 302 } else { 200 });
    // RFC 3875 §6.3.2 and RFC 9110 §8.6: the script's own length, if it gave one, ends the
    // body; else its output does.
    let length = content_length(lengths).map_err(|_| BAD_SCRIPT)?;
    let framing = if head_request || !status_has_body(status) {
        Decoder::none()
    } else {
        length.map_or_else(Decoder::until_close, Decoder::length)
    };
    Ok(Some((
        n,
        ResponseHead {
            status,
            reason,
            headers,
            raw_headers,
            framing,
            length,
            local_redirect,
            keep_alive: false,
            upgrade: None,
        },
    )))
}

/// A script whose output is not a CGI response.
pub const BAD_SCRIPT: &str = "The script's output is not a valid CGI response.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgi_heads_set_status_location_and_length() {
        let p = |raw: &[u8]| parse_cgi_head(raw, false, 32);
        let (n, h) = p(b"Content-Type: text/plain\r\n\r\nhi").unwrap().unwrap();
        assert_eq!((n, h.status), (28, 200));
        assert!(h.framing == Decoder::until_close());
        // A Latin-1 file name is relayed byte for byte, not refused as 502.
        let (_, h) =
            p(b"Content-Type: text/plain\nContent-Disposition: a; filename=\"caf\xe9\"\n\n")
                .unwrap()
                .unwrap();
        assert_eq!(
            h.raw_headers,
            b"Content-Disposition: a; filename=\"caf\xe9\"\r\n"
        );
        assert!(p(b"Status: 200 caf\xe9\nContent-Type: text/plain\n\n").is_err());
        let (_, h) = p(b"Status: 404 Not Found\nContent-Type: text/plain\n\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.status, 404);
        assert!(h.headers.iter().all(|(k, _)| k != "Status"));
        let (_, h) = p(b"Location: http://example.com/\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.local_redirect), (302, None));
        let (_, h) = p(b"Location: /other?x=1\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.local_redirect.as_deref(), Some("/other?x=1"));
        let (_, h) = p(b"Status: 301 Moved\r\nLocation: /other\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.local_redirect), (301, None));
        let (_, h) = p(b"Content-Type: a/b\r\nContent-Length: 3\r\n\r\nabc")
            .unwrap()
            .unwrap();
        assert!(h.framing.remaining() == Some(3));
        assert!(p(b"Content-Type: a/b\r\n").unwrap().is_none());
        // The script's own reason phrase is kept.
        let (_, h) = p(b"Status: 418 I am a teapot\r\n\r\n").unwrap().unwrap();
        assert_eq!(
            (h.status, h.reason.as_deref()),
            (418, Some("I am a teapot"))
        );
        let (_, h) = p(b"Status: 404 Not Found\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.reason, None);
        let bad = crate::protocol::test_cases(include_str!("testdata/cgi-bad-heads.txt"));
        assert_eq!(bad.len(), 7);
        for bad in &bad {
            assert!(p(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    /// The meta-variables a request gives: SERVER_NAME from an absolute-form target, the
    /// SHOULD-level PATH_TRANSLATED and REMOTE_HOST, and no HTTP_* variable from a name with
    /// `_` (it would pose as the `-` one) or from the Transfer-Encoding already undone.
    #[test]
    fn the_environment_follows_rfc3875_and_cannot_be_spoofed_with_underscores() {
        let raw = b"POST http://a.example/cgi-bin/run.sh/x HTTP/1.1\r\nHost: b.example\r\nX_Remote_User: admin\r\nX-Multi: 1\r\nX-Multi: 2\r\nCookie: a=1\r\nCookie: b=2\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut storage = [httparse::EMPTY_HEADER; 16];
        let head = super::super::wire::parse_head(
            raw,
            &mut storage,
            &super::super::wire::Limits::default(),
        )
        .unwrap();
        let script = Script {
            program: "/bin/true".into(),
            script_name: "/cgi-bin/run.sh".into(),
            path_info: "/x".into(),
        };
        let peer = Peer {
            remote: PeerAddr::Tcp("192.0.2.7:5000".parse().unwrap()),
            local: PeerAddr::Tcp("127.0.0.1:8000".parse().unwrap()),
        };
        let env = environment(
            &head.request,
            &script,
            &peer,
            3,
            Some(Path::new("/srv/www")),
        );
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.to_string_lossy().into_owned())
        };
        assert_eq!(get("SERVER_NAME").as_deref(), Some("a.example"));
        assert_eq!(get("PATH_TRANSLATED").as_deref(), Some("/srv/www/x"));
        assert_eq!(get("REMOTE_HOST").as_deref(), Some("192.0.2.7"));
        assert_eq!(get("HTTP_X_MULTI").as_deref(), Some("1, 2"));
        assert_eq!(get("HTTP_X_REMOTE_USER"), None);
        assert_eq!(get("HTTP_TRANSFER_ENCODING"), None);
        assert_eq!(get("CONTENT_LENGTH").as_deref(), Some("3"));
        assert_eq!(get("HTTP_COOKIE").as_deref(), Some("a=1; b=2"));
        // Beyond RFC 3875, as nginx's fastcgi_params: what PHP and friends expect.
        assert_eq!(get("SCRIPT_FILENAME").as_deref(), Some("/bin/true"));
        assert_eq!(get("DOCUMENT_ROOT").as_deref(), Some("/srv/www"));
        assert_eq!(get("REQUEST_SCHEME").as_deref(), Some("http"));
        assert_eq!(get("REDIRECT_STATUS").as_deref(), Some("200"));

        // A client on a Unix socket has no address to trust.
        let peer = Peer {
            remote: PeerAddr::Unix("/run/app.sock".into()),
            local: PeerAddr::Unix("/run/app.sock".into()),
        };
        let env = environment(&head.request, &script, &peer, 3, None);
        let remote = env.iter().find(|(n, _)| n == "REMOTE_ADDR").map(|(_, v)| v);
        assert_eq!(remote.and_then(|v| v.to_str()), Some("unix"));
    }

    #[test]
    fn scripts_resolve_inside_their_directory_only() {
        let dir = std::env::temp_dir().join(format!("tincan-cgi-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("run.sh");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("data.txt"), "x").unwrap();
        let dir = std::fs::canonicalize(&dir).unwrap();
        let url = |p: &str| UrlPath::parse(p, false).unwrap();
        let s = resolve(&dir, "/cgi-bin", &url("/cgi-bin/run.sh/a/b%20c"), 1).unwrap();
        assert_eq!(s.script_name, "/cgi-bin/run.sh");
        assert_eq!(s.path_info, "/a/b c");
        // §4.1.5: a PATH_INFO of `/` is one void segment, not none.
        let s = resolve(&dir, "/cgi-bin", &url("/cgi-bin/run.sh/"), 1).unwrap();
        assert_eq!(s.path_info, "/");
        let s = resolve(&dir, "/cgi-bin", &url("/cgi-bin/run.sh"), 1).unwrap();
        assert_eq!(s.path_info, "");
        // A name that is not UTF-8 reaches the script byte for byte.
        let s = resolve(&dir, "/cgi-bin", &url("/cgi-bin/run.sh/caf%E9"), 1).unwrap();
        assert_eq!(s.path_info.as_bytes(), b"/caf\xe9");
        assert_eq!(
            resolve(&dir, "/cgi-bin", &url("/cgi-bin/nope"), 1)
                .unwrap_err()
                .0,
            404
        );
        assert_eq!(
            resolve(&dir, "/cgi-bin", &url("/cgi-bin/data.txt"), 1)
                .unwrap_err()
                .0,
            403
        );
        assert_eq!(
            resolve(&dir, "/cgi-bin", &url("/cgi-bin"), 1)
                .unwrap_err()
                .0,
            404
        );
        // `..` never leaves the route: it is resolved before matching.
        assert!(UrlPath::parse("/cgi-bin/../../bin/sh", false)
            .unwrap()
            .segments
            .iter()
            .all(|s| s != b".."));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
