//! The HTTP/1 wire core (RFC 9110, RFC 9112), shared by every side of the server that reads or
//! writes HTTP/1 bytes: the session (requests in, responses out), the gateway (requests to an
//! upstream, its answers and CGI answers back), and the client of `tincan bench`. As in hyper's
//! `proto/h1` and h11, one decoder and one encoder serve both directions.
//!
//! - [`limits`]: the ceilings ([`Limits`]) and the precise answer to crossing each ([`Reject`]).
//! - [`head`]: request heads: the scanner, [`parse_head`] (method, target, `Host`, framing).
//! - [`fields`]: the field policy: `Content-Length`, which statuses carry content, list
//!   fields, hop-by-hop fields.
//! - [`body`]: [`Decoder`] (length, chunked, until close, none) and [`Encoder`] (length,
//!   chunked, unframed).

pub mod body;
pub mod fields;
pub mod head;
pub mod limits;
pub mod write;

pub use body::{Decoder, Encoder};
pub use fields::{content_length, is_hop_by_hop, status_has_body};
pub use head::{
    is_known_method, leading_empty_lines, lower_minor_version, parse_head, Head, HeadScanner,
    KNOWN_METHODS,
};
pub use limits::{Limits, Reject};
