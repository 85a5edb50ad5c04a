//! HTTP/1.1 (RFC 9110, 9111, 9112): the connection session (parsing with httparse; framing,
//! limits, keep-alive and pipelining are ours) and the handlers behind it.
//!
//! - [`message`]: the Request/Response/Body/Handler contract between session and handlers.
//! - [`wire`]: the HTTP/1 wire core every part below shares: request heads, limits, the field
//!   policy, and one body decoder and encoder.
//! - [`session`]: [`HttpService`]/[`HttpSession`]: one connection's request loop.
//! - [`access_log`]: Combined Log Format lines to a file or stdout.
//! - [`hello`]: the handler behind `tincan hello` (seed 003).
//! - [`static_files`]: the static file handler behind `tincan serve`.
//! - [`gateway`]: routes handed to other applications: [`proxy`] (reverse proxy) and [`cgi`]
//!   (RFC 3875), over links the session's driver opens ([`crate::protocol::link`]).

pub mod access_log;
pub mod cgi;
pub mod gateway;
pub mod hello;
pub mod message;
#[cfg(test)]
mod proptests;
pub mod proxy;
pub mod session;
pub mod static_files;
pub mod wire;

pub use access_log::AccessLog;
pub use hello::Hello;
pub use message::{Body, Handler, Part, Request, Response, Version};
pub use session::{HttpOptions, HttpService, HttpSession};
pub use wire::Limits;
