//! `gateway`: the reverse proxy's and CGI's byte-level seams (`http::proxy`, `http::cgi`).
//!
//! Three modes, chosen by the first byte:
//! - an upstream's response head (`proxy::parse_response_head`) and
//! - a script's header block (`cgi::parse_cgi_head`), from arbitrary bytes: never panic; the
//!   head length is within the input; the status is one tincan can send; no hop-by-hop,
//!   `Content-Length` or `Transfer-Encoding` field is passed on, and no value holds a line break;
//!   HEAD and bodiless statuses get no body; the announced length agrees with the framing; a
//!   CGI local redirect is a path (`/x`, never `//host`);
//! - the request sent upstream (`proxy::build_request`) for any request head the session
//!   accepts, with any body: it is exactly one HTTP/1.1 request (httparse reads a complete head,
//!   and head plus `Content-Length` is the whole output: nothing a client sends can smuggle a
//!   second request upstream), with one `Host` (the upstream's), no `Transfer-Encoding`, and
//!   `Connection: close`.

use tincan::protocol::http::cgi::parse_cgi_head;
use tincan::protocol::http::proxy::{
    build_request, parse_response_head, ClientInfo, RequestBody, ResponseHead, Upstream,
};
use tincan::protocol::http::wire::{
    is_hop_by_hop, parse_head, status_has_body, HeadScanner, Limits,
};

use crate::{byte, u16_, Unstructured};

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mode = byte(&mut u);
    let head_request = mode & 4 != 0;
    let max_headers = 1 + byte(&mut u) as usize % 16;
    match mode % 3 {
        0 => {
            let buf = u.take_rest();
            if let Ok(Some((n, head))) = parse_response_head(buf, head_request, false, max_headers)
            {
                assert!(n <= buf.len(), "head length {n} past {} bytes", buf.len());
                assert!(
                    (100..=599).contains(&head.status) && head.status != 101,
                    "status {}",
                    head.status
                );
                check_head(&head, head_request);
            }
        }
        1 => {
            let buf = u.take_rest();
            if let Ok(Some((n, head))) = parse_cgi_head(buf, head_request, max_headers) {
                assert!(n <= buf.len(), "head length {n} past {} bytes", buf.len());
                assert!((200..=599).contains(&head.status), "status {}", head.status);
                if let Some(path) = &head.local_redirect {
                    assert!(
                        path.starts_with('/') && !path.starts_with("//"),
                        "local redirect {path:?}"
                    );
                }
                check_head(&head, head_request);
            }
        }
        _ => {
            let body_len = u16_(&mut u) as usize % 64;
            let rest = u.take_rest();
            let (body, head) = rest.split_at(body_len.min(rest.len()));
            upstream_request(head, body);
        }
    }
}

/// What every parsed response head must satisfy, upstream or CGI.
fn check_head(head: &ResponseHead, head_request: bool) {
    for (name, value) in &head.headers {
        assert!(!is_hop_by_hop(name), "hop-by-hop field {name} passed on");
        assert!(
            !name.eq_ignore_ascii_case("content-length")
                && !name.eq_ignore_ascii_case("transfer-encoding"),
            "framing field {name} passed on"
        );
        assert!(
            !value.contains(['\r', '\n']) && !name.contains(['\r', '\n', ':']),
            "a line break in {name}: {value:?}"
        );
    }
    let bodiless = !status_has_body(head.status);
    match head.framing.remaining() {
        _ if head.framing.is_finished() => {}
        _ if head_request || bodiless => {
            panic!("a body framed for HEAD or status {}", head.status)
        }
        Some(n) => {
            assert_eq!(
                head.length,
                Some(n),
                "announced length differs from framing"
            );
        }
        None => {
            assert_eq!(
                head.length, None,
                "a length announced for an unbounded body"
            );
        }
    }
}

/// The anti-smuggling property of `build_request`.
fn upstream_request(raw: &[u8], body: &[u8]) {
    let limits = Limits::default();
    let mut scanner = HeadScanner::default();
    let Ok(Some(len)) = scanner.scan(raw, &limits) else {
        return;
    };
    let mut storage = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let Ok(head) = parse_head(&raw[..len], &mut storage, &limits) else {
        return;
    };
    let req = &head.request;
    let up = Upstream::parse("http://127.0.0.1:9000/v1").expect("a valid upstream");
    let path = up.upstream_path(req.path, req.path);
    // How the body travels is the caller's choice: by length, re-chunked, or none.
    let framing = match body.first().map(|b| b % 3) {
        Some(0) => RequestBody::Chunked,
        Some(_) => RequestBody::Length(body.len() as u64),
        None => RequestBody::None,
    };
    let out = build_request(req, &up, &path, framing, &ClientInfo { ip: "127.0.0.1" });

    let mut fields = [httparse::EMPTY_HEADER; 256];
    let mut parsed = httparse::Request::new(&mut fields);
    let n = match parsed.parse(&out) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "the upstream request does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(n, out.len(), "bytes after the upstream request head");
    let named = |name: &str| {
        parsed
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        named("host"),
        [b"127.0.0.1:9000".as_slice()],
        "one upstream Host"
    );
    // Only this hop's framing, exactly once: nothing of the client's can smuggle a second.
    let (te, cl) = (named("transfer-encoding"), named("content-length"));
    match framing {
        RequestBody::Chunked => {
            assert_eq!(te, [b"chunked".as_slice()], "Transfer-Encoding: chunked");
            assert!(cl.is_empty(), "Content-Length beside chunked");
        }
        RequestBody::Length(k) => {
            assert!(te.is_empty(), "Transfer-Encoding sent upstream");
            assert_eq!(cl, [k.to_string().as_bytes()], "one Content-Length");
        }
        RequestBody::None => {
            assert!(te.is_empty(), "Transfer-Encoding sent upstream");
            assert!(
                cl.is_empty() || cl == [b"0".as_slice()],
                "a length for no body"
            );
        }
    }
    // The connection persists; only an upgrade the request asked for speaks of it.
    assert!(
        named("connection")
            .iter()
            .all(|v| v.eq_ignore_ascii_case(b"upgrade")),
        "Connection: {:?}",
        named("connection")
    );
}
