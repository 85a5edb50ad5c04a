//! HTTP/1.1 (RFC 9110, 9111, 9112) and HTTP/2 (RFC 9113): the connection session (parsing with httparse; framing,
//! limits, keep-alive and pipelining are ours) and the handlers behind it.
//!
//! - [`message`]: the Request/Response/Body/Handler contract between session and handlers.
//! - [`wire`]: the HTTP/1 wire core every part below shares: request heads, limits, the field
//!   policy, and one body decoder and encoder.
//! - [`session`]: [`HttpService`]/[`HttpSession`]: one connection's request loop.
//! - [`shared`]: what that loop and the HTTP/2 session share: the options ([`HttpOptions`],
//!   [`H2Options`]), the handler and limits, the `Date` field.
//! - [`access`]: CORS and Basic authentication, checked before any route.
//! - [`h2`]: HTTP/2 (RFC 9113), the session an [`HttpSession`] becomes for a connection that
//!   opens with the h2c preface or chose `h2` by ALPN; the same handler answers.
//! - [`access_log`]: Combined Log Format lines to a file or stdout.
//! - [`hello`]: the handler behind `tincan hello`: the greeting page.
//! - [`redirect`]: the handler behind `serve --redirect-http` (every answer a 308 to https).
//! - [`static_files`]: the static file handler behind `tincan serve`.
//! - [`gateway`]: routes handed to other applications: [`proxy`] (reverse proxy) and [`cgi`]
//!   (RFC 3875), over links the session's driver opens ([`crate::protocol::link`]).

pub mod access;
pub mod access_log;
pub mod cgi;
pub mod gateway;
pub mod h2;
pub mod hello;
pub mod message;
#[cfg(test)]
mod proptests;
pub mod proxy;
pub mod redirect;
pub mod session;
pub mod shared;
pub mod static_files;
pub mod wire;

pub use access_log::AccessLog;
pub use hello::Hello;
pub use message::{
    Body, BodySink, BodyStream, BodyUse, Handler, Part, Request, Response, Streamed, Version,
};
pub use session::{HttpService, HttpSession};
pub use shared::{H2Options, HttpOptions};
pub use wire::Limits;

/// The ALPN name of HTTP/1.1 (RFC 7301 §6), offered on TLS listeners.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The ALPN name of HTTP/2 over TLS (RFC 9113 §3.2), offered before `http/1.1` unless
/// `--http2 off`.
pub const ALPN_H2: &[u8] = b"h2";

/// The answer to a plaintext HTTP request that reached a TLS port, sent in plaintext before the
/// connection closes (as nginx's 400 "The plain HTTP request was sent to HTTPS port"), so the
/// user reads what to change instead of a broken connection.
pub fn plain_request_on_tls_port() -> bytes::Bytes {
    const BODY: &str = "This port speaks HTTPS: ask for https:// instead of http://.\n";
    bytes::Bytes::from(format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    ))
}
