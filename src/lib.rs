//! tincan: a web server and socket-server toolkit.
//!
//! The crate is built around one seam (see "Design" in the README): protocols are sans-I/O
//! sessions, concurrency models are drivers, and neither knows the other's business.
//!
//! | module | its one job |
//! |---|---|
//! | [`cli`] | the command line (clap): the top-level parser and the dispatch to each subcommand's runner |
//! | [`commands`] | one runner per subcommand, beside its own flags: validate, bind, drop privileges, serve; `commands::start` binds (or takes systemd's sockets), drops privileges and prints the start lines for every server; `commands::bench::models`, tincan under every model and poller |
//! | [`flags`] | the flags several subcommands share: every server's, mapped to the library's types (`ServeOptions`, `BindOptions`, the TLS source), and the clients' TLS trust |
//! | [`units`] | the one parser of seconds and the one of byte sizes, for flags and `tincan.toml` alike |
//! | [`config`] | `tincan.toml`: every `serve`/`hello` flag as a key; flags override it |
//! | [`net`] | parse `--listen` addresses, bind TCP/Unix/UDP sockets, drop root |
//! | [`model`] | the four drivers: iterative, threaded, prefork, event (epoll/poll/select); `link`, the outbound streams they open and watch for sessions (upstream sockets, CGI pipes, kept connections, the child reaper), and `link_tls`, TLS to an https upstream wrapped around a link's socket; `tls`, the rustls layer every driver puts between socket and session (and which tells it the ALPN choice), and `tls::kernel`, which hands the records to kernel TLS where the kernel has it; `udp`, the datagram driver (`protocol::DatagramService`); `shutdown`, signals and graceful stop; the descriptor and select caps (`mod.rs`); buffer pools (`protocol::ReadBuf`/`Outbox`); busy-poll (`event::spin`) |
//! | [`protocol`] | the `Service`/`Session`/`Outbox` seam (and `protocol::link`, its outbound streams), and every protocol on it |
//! | [`protocol::framing`] | message codecs: raw, close, null, line, length, fixed |
//! | [`protocol::echo`] | RFC 862 echo over any framing |
//! | [`protocol::chat`] | the tincanchat room: broadcast with one global order, bounded queues; `chat::redis_link`, one room across instances on a Redis Stream |
//! | [`protocol::http`] | HTTP/1.1: the wire core (`wire`: heads, limits, bodies), static files (`static_files`, with its open-file cache `file_cache` and gzip cache), listings, `hello`; the reverse proxy, CGI and the gateway that routes to them; the access log |
//! | [`protocol::http::h2`] | HTTP/2 (h2 by ALPN, h2c by prior knowledge): frames, HPACK use, streams, flow control, flood limits; answered by the same handler |
//! | [`bench`] | the load generator behind `tincan bench`: `engine` applies the load (one epoll loop per thread, `engine::worker`), the exchanges (`http`, `echo`, `chat`) parse replies; `tincan bench` draws progress and owns Ctrl-C |
//! | [`error`] | the error every command returns; each message is one sentence |
//! | [`logging`] | tracing to stderr; a throttle for warnings a peer can cause at will |
//! | [`tls`] | certificates for the TLS listeners: PEM files checked at start, chosen by SNI, the self-signed one; the rustls server configuration; `tls::acme`, certificates from an ACME CA (instant-acme on a thread of its own); `tls::client`, the clients' side |
//! | [`sys`] | every `unsafe` system call, wrapped safely: epoll, poll, select, sendfile, fork; `sys::users`, the user and group databases and setuid |
//!
//! A custom protocol is a [`protocol::Service`] whose sessions implement [`protocol::Session`];
//! [`model::serve`] runs it under any model. `examples/upper.rs` is the whole of one.

// `unsafe` lives in `sys` alone (fork, setuid, epoll, sendfile...), each block with a SAFETY note.
#![deny(unsafe_code)]
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod flags;
pub mod logging;
pub mod model;
pub mod net;
pub mod protocol;
#[allow(unsafe_code)]
pub mod sys;
pub mod tls;
pub mod units;

pub use error::{Error, Result};
pub use model::{serve, Model, PollerKind, ServeOptions};
pub use protocol::{Chunk, Next, Outbox, Peer, PeerAddr, ReadBuf, Service, Session, Waker};
