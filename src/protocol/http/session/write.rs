//! Writing responses: the status line and the fields the connection owns (`Date`, `Server`,
//! the framing, `Connection`), then the body as bytes or file regions.

use crate::protocol::http::message::{reason, Body, Part, Request, Response};
use crate::protocol::http::shared::{with_date, HttpOptions};
use crate::protocol::http::wire::fields::{owned_by_session, safe_field};
use crate::protocol::http::wire::{status_has_body, write as head, Encoder};
use crate::protocol::Outbox;

/// The request line as the access log writes it.
pub(super) fn log_line(req: &Request<'_>) -> String {
    format!("{} {} {}", req.method, req.target, req.version.as_str())
}

/// Queue `resp` on the wire. Returns the body bytes queued (0 for HEAD and bodiless statuses).
pub(super) fn write_response(
    out: &mut Outbox,
    opts: &HttpOptions,
    resp: Response,
    head_only: bool,
    close: bool,
    keep_alive_10: bool,
) -> u64 {
    let len = resp.body.len();
    write_head(out, opts, &resp, Encoder::Length(len), close, keep_alive_10);
    if !status_has_body(resp.status) || head_only {
        return 0;
    }
    match resp.body {
        // A stream is sent by the session as the client takes it (`HttpSession::pump`).
        Body::Empty | Body::Stream(_) => {}
        Body::Bytes(bytes) => out.push_shared(bytes),
        Body::File { file, offset, len } => out.push_file(file, offset, len),
        Body::Parts(parts) => {
            for p in parts {
                match p {
                    Part::Bytes(bytes) => out.push_shared(bytes),
                    Part::File { file, offset, len } => out.push_file(file, offset, len),
                }
            }
        }
    }
    len
}

/// Queue the status line and headers of `resp`, with the framing `wire` says.
pub(super) fn write_head(
    out: &mut Outbox,
    opts: &HttpOptions,
    resp: &Response,
    wire: Encoder,
    close: bool,
    keep_alive_10: bool,
) {
    let status = resp.status;
    out.with_tail(|b| {
        let phrase = resp.reason.as_deref().unwrap_or(reason(status));
        head::status_line(b, status, phrase);
        with_date(|d| head::field(b, "Date", d.as_bytes()));
        if opts.server_tokens {
            head::field(b, "Server", b"tincan");
        }
        let extra = opts
            .extra_headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()));
        let from_handler = resp.headers.iter().map(|(n, v)| (n.as_ref(), v.as_ref()));
        for (n, v) in from_handler.chain(extra) {
            if owned_by_session(n) || !safe_field(n, v) {
                continue;
            }
            head::field(b, n, v.as_bytes());
        }
        if let Some(raw) = &resp.raw_headers {
            b.extend_from_slice(raw);
        }
        // RFC 9110 §8.6: HEAD carries the length a GET would have had; 304's is omitted.
        if status_has_body(status) {
            wire.write_field(b);
        }
        if close {
            head::field(b, "Connection", b"close");
        } else if keep_alive_10 {
            head::field(b, "Connection", b"keep-alive");
        }
        head::end(b);
    });
}
