//! Listening sockets: parse `--listen` addresses, bind TCP (v4/v6), Unix and UDP sockets with the
//! right options, and report what was really bound. Then [`privileges`] drops root.

pub mod privileges;

use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

/// One `--listen` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// `HOST:PORT` or `[V6]:PORT`.
    Tcp(SocketAddr),
    /// `:PORT`: every interface, IPv4 and IPv6.
    AllInterfaces(u16),
    /// `unix:/path`.
    Unix(PathBuf),
}

/// A bound, listening socket.
#[derive(Debug)]
pub enum Listener {
    Tcp(std::net::TcpListener),
    Unix(UnixListener, PathBuf),
}
