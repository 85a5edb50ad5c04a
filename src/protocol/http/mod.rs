//! HTTP/1.1 (RFC 9110, 9111, 9112): the connection session (parsing with httparse; framing,
//! limits, keep-alive and pipelining are ours) and the handlers behind it.
//!
//! - [`message`]: the Request/Response/Body/Handler contract between session and handlers.
//! - [`static_files`]: the static file handler behind `tincan serve`.

pub mod message;
pub mod static_files;

pub use message::{Body, Handler, Part, Request, Response, Version};
