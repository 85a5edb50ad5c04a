//! Listening sockets: parse `--listen` addresses, bind TCP (v4/v6), Unix and UDP sockets with the
//! right options, and report what was really bound, or take the ones systemd bound
//! ([`activation`]). Then [`privileges`] drops root.

pub mod activation;
pub mod privileges;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::Error;
use crate::protocol::{Peer, PeerAddr};

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

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::AllInterfaces(p) => write!(f, ":{p}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

fn not_an_address(s: &str) -> Error {
    Error::Usage(format!(
        "'{s}' is not a listen address; use HOST:PORT, [V6]:PORT, :PORT or unix:/path"
    ))
}

impl FromStr for ListenAddr {
    type Err = Error;

    fn from_str(s: &str) -> Result<ListenAddr, Error> {
        let t = s.trim();
        if let Some(path) = t.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(not_an_address(s));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if let Some(port) = t.strip_prefix(':') {
            return port
                .parse()
                .map(ListenAddr::AllInterfaces)
                .map_err(|_| not_an_address(s));
        }
        // A bare port keeps the safe default host: loopback, never every interface.
        if let Ok(port) = t.parse::<u16>() {
            return Ok(ListenAddr::Tcp(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                port,
            ))));
        }
        if let Ok(a) = t.parse::<SocketAddr>() {
            return Ok(ListenAddr::Tcp(a));
        }
        let Some((host, port)) = t.rsplit_once(':') else {
            return Err(not_an_address(s));
        };
        let port: u16 = match port.parse::<u64>() {
            Ok(n) => u16::try_from(n).map_err(|_| {
                Error::Usage(format!(
                    "port {n} in '{s}' is out of range; a port is 0 to 65535"
                ))
            })?,
            Err(_) => return Err(not_an_address(s)),
        };
        if host.is_empty() || host.contains(':') || host.contains(char::is_whitespace) {
            return Err(not_an_address(s));
        }
        // Four dot-separated numbers are meant as an IPv4 address, not a name to look up.
        if host.split('.').count() == 4
            && host
                .split('.')
                .all(|p| p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(Error::Usage(format!(
                "'{host}' in '{s}' is not a valid IPv4 address; each of its four numbers is 0 to 255"
            )));
        }
        // `localhost` is loopback IPv4 whatever /etc/hosts lists first, so `localhost:8000`
        // means the same on every machine.
        if host.eq_ignore_ascii_case("localhost") {
            return Ok(ListenAddr::Tcp(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                port,
            ))));
        }
        match (host, port).to_socket_addrs() {
            Ok(mut it) => it
                .next()
                .map(ListenAddr::Tcp)
                .ok_or_else(|| not_an_address(s)),
            Err(_) => Err(Error::Usage(format!(
                "cannot resolve host '{host}' in '{s}'; use an IP address such as 127.0.0.1:{port}"
            ))),
        }
    }
}

/// A client's address with `port` added when it names a host alone: `HOST` → `HOST:PORT`,
/// `[::1]` → `[::1]:PORT`, and a bare IPv6 address gets its brackets (`::1` → `[::1]:PORT`).
pub fn with_default_port(addr: &str, port: u16) -> String {
    if addr.ends_with(']') {
        format!("{addr}:{port}")
    } else if addr.starts_with('[') {
        addr.to_string()
    } else {
        match addr.matches(':').count() {
            0 => format!("{addr}:{port}"),
            1 => addr.to_string(),
            _ => format!("[{addr}]:{port}"),
        }
    }
}

/// The addresses a client's `HOST:PORT` (or `[V6]:PORT`) names, or the sentence that says
/// what is wrong with it: no port, a port out of range, a host that does not resolve.
pub fn resolve_host_port(s: &str) -> std::result::Result<Vec<SocketAddr>, String> {
    let no_port = || format!("'{s}' has no port; give HOST:PORT, e.g. 127.0.0.1:7007");
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(no_port());
    };
    if s.ends_with(']') {
        return Err(no_port());
    }
    if host.contains(':') && !host.starts_with('[') {
        return Err(format!(
            "'{s}': an IPv6 address goes in brackets, e.g. [::1]:7007"
        ));
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!(
            "the port in '{s}' must be a number from 1 to 65535"
        ));
    }
    match s.to_socket_addrs() {
        Ok(it) => {
            let addrs: Vec<SocketAddr> = it.collect();
            if addrs.is_empty() {
                Err(format!("'{s}' resolves to no address"))
            } else {
                Ok(addrs)
            }
        }
        Err(e) => Err(format!(
            "cannot resolve host '{host}' in '{s}': {}",
            lookup_failure(&e)
        )),
    }
}

/// Why a name lookup failed, as the end of a sentence that says what to do: getaddrinfo's own
/// words ("failed to lookup address information: Name or service not known") say neither.
pub fn lookup_failure(e: &std::io::Error) -> String {
    let text = e.to_string();
    if text.contains("Name or service not known") || text.contains("No address associated") {
        "no such name is known; check its spelling, or give an IP address".into()
    } else if text.contains("Temporary failure in name resolution") {
        "the name server did not answer; try again, or give an IP address".into()
    } else {
        let plain = crate::sys::plain(e);
        let plain = plain
            .strip_prefix("failed to lookup address information: ")
            .unwrap_or(&plain);
        format!("{}; give an IP address instead", plain.to_lowercase())
    }
}

/// How listening sockets are set up.
#[derive(Clone, Debug)]
pub struct BindOptions {
    /// The listen(2) backlog (the kernel caps it at net.core.somaxconn, 4096 by default since
    /// Linux 5.4): deep enough that a burst of clients is queued rather than made to retransmit
    /// their SYNs.
    pub backlog: i32,
    /// SO_REUSEPORT: several processes may bind the same address.
    pub reuse_port: bool,
    /// TCP_DEFER_ACCEPT, in seconds (0: off): the kernel hands over a connection once its first
    /// bytes arrive, or after about this long. Until then a silent connection costs no
    /// descriptor and no connection slot, and the server is woken once per connection (with
    /// the request to read) instead of twice. Only for protocols whose client speaks first.
    pub defer_accept: u32,
}

/// The longest `defer_accept` taken: ten minutes, beyond any head timeout worth having.
pub const MAX_DEFER_ACCEPT: u32 = 600;

impl Default for BindOptions {
    fn default() -> Self {
        BindOptions {
            backlog: 4096,
            reuse_port: false,
            defer_accept: 0,
        }
    }
}

/// A bound, listening socket.
#[derive(Debug)]
pub enum Listener {
    /// With the local address of every connection it accepts when it is bound to one address
    /// (not a wildcard), so accepting needs no `getsockname` per connection; and, when it was
    /// bound for prefork's workers ([`bind_per_worker`]), the same address bound again with
    /// SO_REUSEPORT once for each worker after the first (empty otherwise).
    Tcp(TcpListener, Option<SocketAddr>, Vec<TcpListener>),
    Unix(UnixListener, UnixPath),
}

/// The file of a Unix listening socket.
#[derive(Debug)]
pub struct UnixPath {
    pub path: PathBuf,
    /// This process created the file (and removes it at exit); false for one systemd bound.
    pub ours: bool,
}

impl Listener {
    /// What was really bound: `127.0.0.1:43121`, `[::1]:5000`, `unix:/tmp/x.sock`.
    pub fn local_addr_string(&self) -> String {
        match self {
            Listener::Tcp(l, ..) => match l.local_addr() {
                Ok(a) => a.to_string(),
                Err(_) => "?".into(),
            },
            Listener::Unix(_, p) => format!("unix:{}", p.path.display()),
        }
    }

    /// The local address as a [`PeerAddr`] (what accepted connections report as `local`).
    pub fn peer_addr(&self) -> PeerAddr {
        match self {
            Listener::Tcp(l, ..) => PeerAddr::Tcp(
                l.local_addr()
                    .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
            ),
            Listener::Unix(_, p) => PeerAddr::Unix(p.path.display().to_string()),
        }
    }

    /// The socket file of a Unix listener, when this process made it (and so removes it).
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Listener::Unix(_, p) if p.ours => Some(&p.path),
            _ => None,
        }
    }

    /// Stop listening now, while the descriptor stays open (other threads' pollers still hold
    /// it): shutdown(2) on a listening socket makes the kernel refuse new connections at once
    /// (and reset those still in the backlog), instead of completing handshakes nobody will
    /// accept. Used when a graceful shutdown begins.
    pub fn stop(&self) {
        let _ = socket2::SockRef::from(self).shutdown(std::net::Shutdown::Read);
        if let Listener::Tcp(_, _, more) = self {
            for l in more {
                let _ = socket2::SockRef::from(l).shutdown(std::net::Shutdown::Read);
            }
        }
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Listener::Tcp(l, _, more) => {
                for l in more {
                    l.set_nonblocking(on)?;
                }
                l.set_nonblocking(on)
            }
            Listener::Unix(l, _) => l.set_nonblocking(on),
        }
    }

    /// How many sockets this address was bound with: one per prefork worker
    /// ([`bind_per_worker`]), or 1 for a socket all workers share.
    pub fn spread_over(&self) -> usize {
        match self {
            Listener::Tcp(_, _, more) => 1 + more.len(),
            Listener::Unix(..) => 1,
        }
    }

    /// Close the sockets bound for prefork's further workers, for a driver that watches one
    /// socket per address (a connection the kernel gave one of them would never be accepted).
    pub fn unspread(&mut self) {
        if let Listener::Tcp(_, _, more) = self {
            more.clear();
        }
    }

    /// The socket prefork's worker `i` accepts on, as a listener of its own (a duplicated
    /// descriptor): the `i`-th of those [`bind_per_worker`] bound, or the one socket every
    /// worker shares.
    pub fn for_worker(&self, i: usize) -> io::Result<Listener> {
        match self {
            Listener::Tcp(l, local, more) => {
                let own = match i % (1 + more.len()) {
                    0 => l,
                    k => &more[k - 1],
                };
                Ok(Listener::Tcp(own.try_clone()?, *local, Vec::new()))
            }
            Listener::Unix(l, p) => Ok(Listener::Unix(
                l.try_clone()?,
                UnixPath {
                    path: p.path.clone(),
                    // The process that bound it removes the file.
                    ours: false,
                },
            )),
        }
    }

    /// Accept one connection: the socket (non-blocking, as every driver wants it; TCP_NODELAY
    /// on for TCP, since every protocol here answers in one write and then waits) and who it is.
    pub fn accept(&self) -> io::Result<(Socket, Peer)> {
        match self {
            Listener::Tcp(l, fixed_local, _) => {
                // accept4(SOCK_NONBLOCK | SOCK_CLOEXEC): the socket is born non-blocking, with
                // no ioctl per connection (a measurable share of a connection-per-request load).
                // TCP_NODELAY is inherited from the listening socket (see `listen_tcp`).
                let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
                let (s, remote) = loop {
                    match socket2::SockRef::from(l).accept4(flags) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        r => break r?,
                    }
                };
                let remote = remote.as_socket().ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a TCP peer without an IP address",
                    )
                })?;
                let local = match fixed_local {
                    Some(a) => PeerAddr::Tcp(*a),
                    // A wildcard listener: which of the machine's addresses was reached.
                    None => s
                        .local_addr()
                        .ok()
                        .and_then(|a| a.as_socket())
                        .map(|a| PeerAddr::Tcp(unmapped(a)))
                        .unwrap_or_else(|| self.peer_addr()),
                };
                Ok((
                    s,
                    Peer {
                        remote: PeerAddr::Tcp(unmapped(remote)),
                        local,
                    },
                ))
            }
            Listener::Unix(l, p) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(true)?;
                // Unix peers are unnamed; both ends are reported as the listening path.
                let path = PeerAddr::Unix(p.path.display().to_string());
                Ok((
                    Socket::from(s),
                    Peer {
                        remote: path.clone(),
                        local: path,
                    },
                ))
            }
        }
    }
}

/// An IPv4 client of a dual-stack `[::]` socket arrives as `[::ffff:1.2.3.4]:port`; report it
/// as the `1.2.3.4:port` it is (logs, chat prefixes and greetings read naturally).
fn unmapped(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => a,
        },
        v4 => v4,
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l, ..) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }
}

impl std::os::fd::AsFd for Listener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Listener::Tcp(l, ..) => l.as_fd(),
            Listener::Unix(l, _) => l.as_fd(),
        }
    }
}

/// Why a listening socket could not be had ([`bind`], [`bind_udp`]): what is wrong and what
/// to do, in this layer's terms. The command line adds which flag would help.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{0} is already in use; stop the other server or pick another port")]
    InUse(ListenAddr),
    #[error("{0} is in use; stop the other server or pick another path")]
    PathInUse(ListenAddr),
    #[error("binding {0} needs root because ports below 1024 are privileged; run as root and drop privileges after binding, or pick a port of 1024 or more")]
    Privileged(ListenAddr),
    #[error("no permission to create {0}; pick a path in a directory you can write")]
    NoPermission(ListenAddr),
    #[error("{0} is not an address of this machine; use 127.0.0.1, ::1, :PORT or one of its interface addresses")]
    NotLocal(ListenAddr),
    #[error("cannot listen on {0}: this machine has no IPv6; use an IPv4 address")]
    NoIpv6(ListenAddr),
    #[error("cannot listen on {addr}: directory {dir} does not exist; create it first")]
    NoDirectory { addr: ListenAddr, dir: String },
    #[error("cannot listen on {0}: the path is too long for a Unix socket (108 bytes at most)")]
    PathTooLong(ListenAddr),
    #[error("{0} exists and is not a socket; remove it or pick another path")]
    NotASocket(ListenAddr),
    #[error("another server is listening on {0}; stop it or pick another path")]
    Taken(ListenAddr),
    #[error("{0}: unix: addresses are for stream sockets; use HOST:PORT")]
    UnixDatagram(ListenAddr),
    #[error("cannot listen on {addr}: {source}")]
    Io { addr: ListenAddr, source: io::Error },
}

/// Name a bind failure.
fn bind_error(addr: &ListenAddr, e: io::Error) -> BindError {
    let unix = matches!(addr, ListenAddr::Unix(_));
    let addr = addr.clone();
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) if unix => BindError::PathInUse(addr),
        Some(libc::EADDRINUSE) => BindError::InUse(addr),
        Some(libc::EACCES) | Some(libc::EPERM) if unix => BindError::NoPermission(addr),
        Some(libc::EACCES) | Some(libc::EPERM) => BindError::Privileged(addr),
        Some(libc::EADDRNOTAVAIL) => BindError::NotLocal(addr),
        Some(libc::EAFNOSUPPORT) => BindError::NoIpv6(addr),
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => match &addr {
            ListenAddr::Unix(p) => BindError::NoDirectory {
                dir: p
                    .parent()
                    .map_or_else(|| ".".into(), |d| d.display().to_string()),
                addr,
            },
            _ => BindError::Io { addr, source: e },
        },
        Some(libc::ENAMETOOLONG) | Some(libc::EINVAL) if unix => BindError::PathTooLong(addr),
        _ => BindError::Io { addr, source: e },
    }
}

fn tcp_socket(
    sa: &SocketAddr,
    kind: Type,
    opts: &BindOptions,
    v6only: Option<bool>,
) -> io::Result<Socket> {
    let proto = if kind == Type::STREAM {
        Protocol::TCP
    } else {
        Protocol::UDP
    };
    let s = Socket::new(Domain::for_address(*sa), kind.cloexec(), Some(proto))?;
    // SO_REUSEADDR lets a restarted server bind while old connections sit in TIME_WAIT.
    s.set_reuse_address(true)?;
    if opts.reuse_port {
        s.set_reuse_port(true)?;
    }
    if let Some(v) = v6only {
        s.set_only_v6(v)?;
    }
    s.bind(&SockAddr::from(*sa))?;
    Ok(s)
}

/// Bind a TCP or Unix listening socket.
pub fn bind(addr: &ListenAddr, opts: &BindOptions) -> Result<Listener, BindError> {
    match addr {
        ListenAddr::Tcp(sa) => {
            let v6only = sa.is_ipv6().then_some(true);
            let s = tcp_socket(sa, Type::STREAM, opts, v6only)
                .and_then(|s| listen_tcp(s, opts))
                .map_err(|e| bind_error(addr, e))?;
            Ok(s)
        }
        ListenAddr::AllInterfaces(port) => {
            // One dual-stack socket on [::] (IPV6_V6ONLY off) takes IPv4 too; a machine without
            // IPv6 gets 0.0.0.0 instead.
            let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, *port));
            let s = match tcp_socket(&v6, Type::STREAM, opts, Some(false)) {
                Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                    let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, *port));
                    tcp_socket(&v4, Type::STREAM, opts, None)
                }
                r => r,
            };
            s.and_then(|s| listen_tcp(s, opts))
                .map_err(|e| bind_error(addr, e))
        }
        ListenAddr::Unix(path) => bind_unix(addr, path, opts),
    }
}

/// Listen on a bound TCP socket. Two options are set here once, and Linux copies them to every
/// accepted socket, which saves a `setsockopt` per connection:
/// - TCP_NODELAY: every protocol here answers in one write and then waits, so Nagle's delay
///   would only add latency;
/// - delayed ACKs from the first byte (TCP_QUICKACK off): a request answered at once has its
///   ACK ride on the answer instead of costing a packet of its own, as Linux already does from
///   a connection's second exchange on. A read that leaves nothing to answer sends its ACK at
///   once (see `Conn::on_readable`), so a peer whose Nagle waits for that ACK is not stalled.
///
/// And TCP_DEFER_ACCEPT when `opts.defer_accept` asks for it.
fn listen_tcp(s: Socket, opts: &BindOptions) -> io::Result<Listener> {
    s.listen(opts.backlog)?;
    tcp_listener_options(s, opts)
}

/// [`bind`] for prefork's `workers`: a TCP address is bound once per worker, every socket with
/// SO_REUSEPORT, so the kernel spreads new connections over the workers by a hash of the
/// client's address and port, and a burst of clients is shared as evenly as a steady stream
/// (nginx's `listen ... reuseport`). Bound here, before privileges are dropped, so a port
/// below 1024 works with `--user` too (and SO_REUSEPORT only lets a socket of the same user
/// join). A Unix socket is bound once: Linux spreads no AF_UNIX connections.
pub fn bind_per_worker(
    addr: &ListenAddr,
    opts: &BindOptions,
    workers: usize,
) -> Result<Listener, BindError> {
    if workers < 2 || matches!(addr, ListenAddr::Unix(_)) {
        return bind(addr, opts);
    }
    let opts = BindOptions {
        reuse_port: true,
        ..opts.clone()
    };
    let mut first = bind(addr, &opts)?;
    if let Listener::Tcp(l, _, more) = &mut first {
        // The address really bound (port 0 chose one; `:PORT` may have fallen back to IPv4).
        let local = l.local_addr().map_err(|e| bind_error(addr, e))?;
        let v6only = match addr {
            ListenAddr::AllInterfaces(_) if local.is_ipv6() => Some(false),
            _ => local.is_ipv6().then_some(true),
        };
        for _ in 1..workers {
            let s = tcp_socket(&local, Type::STREAM, &opts, v6only)
                .and_then(|s| listen_tcp(s, &opts))
                .map_err(|e| bind_error(addr, e))?;
            if let Listener::Tcp(s, ..) = s {
                more.push(s);
            }
        }
    }
    Ok(first)
}

/// The options [`listen_tcp`] sets, on a listening socket (ours, or one systemd passed).
fn tcp_listener_options(s: Socket, opts: &BindOptions) -> io::Result<Listener> {
    s.set_nodelay(true)?;
    // After listen(), which resets the delayed-ACK state.
    s.set_quickack(false)?;
    if opts.defer_accept > 0 {
        crate::sys::set_defer_accept(std::os::fd::AsFd::as_fd(&s), opts.defer_accept)?;
    }
    let fixed_local = s
        .local_addr()?
        .as_socket()
        .filter(|a| !a.ip().is_unspecified())
        .map(unmapped);
    Ok(Listener::Tcp(s.into(), fixed_local, Vec::new()))
}

/// Bind a Unix socket, replacing a stale socket file only when nothing listens on it.
fn bind_unix(addr: &ListenAddr, path: &Path, opts: &BindOptions) -> Result<Listener, BindError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            if !meta.file_type().is_socket() {
                return Err(BindError::NotASocket(addr.clone()));
            }
            match UnixStream::connect(path) {
                Ok(_) => return Err(BindError::Taken(addr.clone())),
                // ECONNREFUSED: a socket file nobody listens on, left by a server that died.
                Err(_) => std::fs::remove_file(path).map_err(|e| bind_error(addr, e))?,
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_error(addr, e)),
    }
    let s =
        Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None).map_err(|e| bind_error(addr, e))?;
    let sa = SockAddr::unix(path).map_err(|e| bind_error(addr, e))?;
    s.bind(&sa)
        .and_then(|_| s.listen(opts.backlog))
        .map_err(|e| bind_error(addr, e))?;
    Ok(Listener::Unix(
        s.into(),
        UnixPath {
            path: path.to_path_buf(),
            ours: true,
        },
    ))
}

/// Bind a UDP socket (for `--udp` services).
pub fn bind_udp(addr: &ListenAddr, opts: &BindOptions) -> Result<UdpSocket, BindError> {
    let s = match addr {
        ListenAddr::Tcp(sa) => tcp_socket(sa, Type::DGRAM, opts, sa.is_ipv6().then_some(true)),
        ListenAddr::AllInterfaces(port) => {
            let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, *port));
            match tcp_socket(&v6, Type::DGRAM, opts, Some(false)) {
                Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                    let v4 = SocketAddr::from((IpAddr::V4(Ipv4Addr::UNSPECIFIED), *port));
                    tcp_socket(&v4, Type::DGRAM, opts, None)
                }
                r => r,
            }
        }
        ListenAddr::Unix(_) => return Err(BindError::UnixDatagram(addr.clone())),
    };
    Ok(s.map_err(|e| bind_error(addr, e))?.into())
}

/// The `listening on` text of a UDP socket.
pub fn udp_addr_string(s: &UdpSocket) -> String {
    s.local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<ListenAddr, Error> {
        s.parse()
    }

    #[test]
    fn a_clients_address_is_resolved_or_its_fault_named() {
        let err = |s: &str| resolve_host_port(s).unwrap_err();
        assert!(err("127.0.0.1").contains("has no port"));
        assert!(err("[::1]").contains("has no port"));
        assert!(err("127.0.0.1:99999").contains("from 1 to 65535"));
        assert!(err("127.0.0.1:0").contains("from 1 to 65535"));
        assert!(err("[::1]:+7").contains("from 1 to 65535"));
        assert!(err("::1").contains("in brackets"));
        assert_eq!(
            resolve_host_port("[::1]:7").unwrap(),
            vec!["[::1]:7".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(resolve_host_port("127.0.0.1:7").unwrap().len(), 1);
    }

    #[test]
    fn accepted_connections_inherit_nodelay_and_delayed_acks_and_know_their_local_address() {
        let opts = BindOptions::default();
        for (listen, wildcard) in [("127.0.0.1:0", false), (":0", true)] {
            let l = bind(&listen.parse().unwrap(), &opts).unwrap();
            let port = match l.peer_addr() {
                PeerAddr::Tcp(a) => a.port(),
                other => panic!("{other:?}"),
            };
            let Listener::Tcp(_, fixed, _) = &l else {
                panic!("not TCP")
            };
            assert_eq!(fixed.is_none(), wildcard, "{listen}");
            let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let (s, peer) = l.accept().unwrap();
            assert!(
                s.nodelay().unwrap(),
                "{listen}: TCP_NODELAY was not inherited"
            );
            assert!(
                !s.quickack().unwrap(),
                "{listen}: delayed ACKs (TCP_QUICKACK off) were not inherited"
            );
            assert_eq!(
                peer.local,
                PeerAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], port))),
                "{listen}"
            );
        }
    }

    #[test]
    fn a_deferred_listener_hands_over_a_connection_when_its_first_bytes_arrive() {
        use std::io::Write;
        let readable = |l: &Listener, ms: u64| {
            let mut fds = [crate::sys::pollfd(l.as_raw_fd(), libc::POLLIN)];
            crate::sys::poll(&mut fds, Some(std::time::Duration::from_millis(ms))).unwrap();
            fds[0].revents & libc::POLLIN != 0
        };
        for defer in [0, 5] {
            let opts = BindOptions {
                defer_accept: defer,
                ..BindOptions::default()
            };
            let l = bind(&"127.0.0.1:0".parse().unwrap(), &opts).unwrap();
            let Listener::Tcp(tcp, ..) = &l else {
                panic!("not TCP")
            };
            assert_eq!(
                crate::sys::defer_accept(std::os::fd::AsFd::as_fd(tcp)).unwrap() > 0,
                defer > 0
            );
            let port = match l.peer_addr() {
                PeerAddr::Tcp(a) => a.port(),
                other => panic!("{other:?}"),
            };
            // The client's connect() returns at once either way: the handshake is done.
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            if defer == 0 {
                assert!(
                    readable(&l, 2000),
                    "an undeferred connection was not handed over"
                );
                continue;
            }
            assert!(
                !readable(&l, 300),
                "a connection that sent nothing was handed over despite TCP_DEFER_ACCEPT"
            );
            c.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            assert!(readable(&l, 2000), "its first bytes did not hand it over");
            let (s, _) = l.accept().unwrap();
            let mut buf = [0; 64];
            // The bytes that released it are there to read at once (the socket is non-blocking).
            let n = std::io::Read::read(&mut std::net::TcpStream::from(s), &mut buf).unwrap();
            assert_eq!(n, 16);
        }
    }

    #[test]
    fn listen_addresses_parse_in_every_documented_form() {
        assert_eq!(
            p("127.0.0.1:80").unwrap(),
            ListenAddr::Tcp("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            p("[::1]:5000").unwrap(),
            ListenAddr::Tcp("[::1]:5000".parse().unwrap())
        );
        assert_eq!(p(":8080").unwrap(), ListenAddr::AllInterfaces(8080));
        assert_eq!(
            p("localhost:9").unwrap(),
            ListenAddr::Tcp("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(
            p("8000").unwrap(),
            ListenAddr::Tcp("127.0.0.1:8000".parse().unwrap())
        );
        assert_eq!(
            p("unix:/tmp/x.sock").unwrap(),
            ListenAddr::Unix("/tmp/x.sock".into())
        );
    }

    #[test]
    fn ipv4_mapped_peers_are_reported_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        assert_eq!(unmapped(mapped).to_string(), "127.0.0.1:5000");
        let v6: SocketAddr = "[::1]:5000".parse().unwrap();
        assert_eq!(unmapped(v6), v6);
    }

    #[test]
    fn bad_listen_addresses_are_usage_errors_naming_the_forms() {
        assert_eq!(
            p("127.0.0.1:99999").unwrap_err().to_string(),
            "port 99999 in '127.0.0.1:99999' is out of range; a port is 0 to 65535"
        );
        assert_eq!(
            p("300.1.1.1:80").unwrap_err().to_string(),
            "'300.1.1.1' in '300.1.1.1:80' is not a valid IPv4 address; each of its four numbers \
             is 0 to 255"
        );
        for bad in ["foo", ":x", "unix:", "[::1]", "1.2.3.4:"] {
            let e = p(bad).unwrap_err().to_string();
            assert!(
                e.contains("HOST:PORT") || e.contains("resolve"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            p("foo").unwrap_err().to_string(),
            "'foo' is not a listen address; use HOST:PORT, [V6]:PORT, :PORT or unix:/path"
        );
    }
}
