//! Starting a server: take the sockets systemd passed or bind `--listen`, drop privileges,
//! install the stop signals, and print the start lines a script waits for. The flags are read
//! in [`crate::flags`]; this is what the commands do with them.

use std::io::Write;

use crate::error::Error;
use crate::flags::ServerArgs;
use crate::model::ServeOptions;
use crate::net::activation::{self, Kind};
use crate::net::{self, ListenAddr, Listener};
use crate::tls::{CertSource, TlsApp};

impl ServerArgs {
    /// Parse --listen (or default_listen when none given), bind each, drop privileges if
    /// --user, print `listening on ADDR` per listener on stdout (flushed; they are the first
    /// stdout lines, printed once the server can really serve), and build ServeOptions from the
    /// flags (defaults from ServeOptions::default()). ADDR is as [`StartLine::Address`] says.
    pub fn setup(
        &self,
        default_listen: &str,
    ) -> crate::error::Result<(Vec<Listener>, ServeOptions)> {
        self.setup_with(default_listen, &TlsApp::default())
    }

    /// [`setup`](Self::setup) for a service that tells TLS what it speaks (ALPN, its answer to
    /// plaintext on a TLS port). Certificates and keys are read and checked before binding.
    pub fn setup_with(
        &self,
        default_listen: &str,
        app: &TlsApp,
    ) -> crate::error::Result<(Vec<Listener>, ServeOptions)> {
        self.bind_all(default_listen, app, &[], StartLine::Address)
    }

    /// [`setup_with`](Self::setup_with) for an HTTP service, whose start lines are URLs
    /// ([`StartLine::Url`]), and `plain` listeners besides, after the others in the list: with
    /// TLS on, they alone speak none (their start lines say `http://`).
    pub fn setup_with_plain(
        &self,
        default_listen: &str,
        app: &TlsApp,
        plain: &[ListenAddr],
    ) -> crate::error::Result<(Vec<Listener>, ServeOptions)> {
        self.bind_all(default_listen, app, plain, StartLine::Url)
    }

    fn bind_all(
        &self,
        default_listen: &str,
        app: &TlsApp,
        plain: &[ListenAddr],
        start: StartLine,
    ) -> crate::error::Result<(Vec<Listener>, ServeOptions)> {
        let mut opts = self.serve_options()?;
        let source = self.tls_source()?;
        if let Some(src) = &source {
            let app = TlsApp {
                kernel_tls: self.kernel_tls(),
                ..app.clone()
            };
            opts.tls = Some(crate::tls::settings(src, &app)?);
        }
        let bind_opts = self.bind_options();
        // Prefork's workers each get a socket of their own per TCP address (see
        // `net::bind_per_worker`); sockets systemd passed are one each, shared by the workers.
        let workers = match opts.model {
            crate::Model::Prefork => opts.workers,
            _ => 1,
        };
        let mut listeners = match self.activated(Kind::Stream)? {
            Some(sockets) => (sockets.into_iter())
                .map(|s| {
                    activation::listener(s, &bind_opts).map_err(|e| {
                        Error::io("socket activation: cannot set up a passed socket", e)
                    })
                })
                .collect::<crate::error::Result<Vec<Listener>>>()?,
            None => (self.addresses(default_listen)?.iter())
                .map(|a| net::bind_per_worker(a, &bind_opts, workers))
                .collect::<Result<Vec<Listener>, net::BindError>>()?,
        };
        let plain_from = listeners.len();
        for a in plain {
            listeners.push(net::bind_per_worker(a, &bind_opts, workers)?);
        }
        if let Some(tls) = &mut opts.tls {
            tls.plain = listeners[plain_from..]
                .iter()
                .filter_map(|l| match l.peer_addr() {
                    crate::protocol::PeerAddr::Tcp(a) => Some(a),
                    crate::protocol::PeerAddr::Unix(_) => None,
                })
                .collect();
        }
        let paths: Vec<&std::path::Path> = listeners.iter().filter_map(|l| l.unix_path()).collect();
        if let Err(e) = self.privileges().apply(&paths) {
            for p in paths {
                let _ = std::fs::remove_file(p);
            }
            return Err(e.into());
        }
        // Signals must stop us gracefully from the moment a script can see the address.
        crate::model::Shutdown::for_process()
            .map_err(|e| crate::error::Error::io("installing the SIGINT/SIGTERM handlers", e))?;
        let tls = opts.tls.is_some();
        announce(
            listeners
                .iter()
                .enumerate()
                .map(|(i, l)| start.line(&l.local_addr_string(), tls && i < plain_from)),
        )?;
        if let (Some(CertSource::Acme(acme)), Some(tls)) = (&source, &mut opts.tls) {
            if !acme.cert_file().exists() {
                say(&format!(
                    "ordering a certificate for {} from {}; a self-signed stand-in serves \
                     until it arrives",
                    acme.domains.join(", "),
                    acme.directory
                ))?;
            }
            let (acme, http01) = (acme.clone(), !plain.is_empty());
            tls.background = Some(std::sync::Arc::new(move |reload| {
                crate::tls::acme::start(acme.clone(), reload, http01).map_err(|e| e.to_string())
            }));
        }
        if let Some(CertSource::SelfSigned(dir)) = &source {
            let cert = dir.join("cert.pem");
            let c = cert.display();
            // Shown for the first listener, a TLS one (the plain ones come after them).
            let first = listeners[0].local_addr_string();
            let http = app.plain_reply.is_some();
            // HTTP clients take a CA file; other clients are shown with openssl's. A Unix
            // socket is reached by its path, under the name the certificate carries.
            let how = match (first.strip_prefix("unix:"), http) {
                (Some(path), true) => {
                    format!("curl --cacert {c} --unix-socket {path} https://localhost/")
                }
                (Some(path), false) => format!("openssl s_client -unix {path} -CAfile {c}"),
                (None, _) => {
                    let port = first.rsplit_once(':').map_or("", |(_, p)| p);
                    if http {
                        format!("curl --cacert {c} https://localhost:{port}/")
                    } else {
                        format!("openssl s_client -connect localhost:{port} -CAfile {c}")
                    }
                }
            };
            say(&format!(
                "the certificate is self-signed: trust {c} ({how})"
            ))?;
        }
        Ok((listeners, opts))
    }

    /// [`setup`](Self::setup) with UDP sockets.
    pub fn setup_udp(
        &self,
        default_listen: &str,
    ) -> crate::error::Result<(Vec<std::net::UdpSocket>, ServeOptions)> {
        let opts = self.serve_options()?;
        if self.tls_source()?.is_some() {
            return Err(Error::Usage(
                "--udp has no TLS (DTLS is not supported); leave out --tls-cert, \
                 --tls-self-signed and --acme"
                    .into(),
            ));
        }
        let sockets = match self.activated(Kind::Datagram)? {
            Some(sockets) => sockets.into_iter().map(std::net::UdpSocket::from).collect(),
            None => {
                let bind_opts = self.bind_options();
                (self.addresses(default_listen)?.iter())
                    .map(|a| net::bind_udp(a, &bind_opts))
                    .collect::<Result<Vec<_>, net::BindError>>()?
            }
        };
        self.privileges().apply(&[])?;
        // Signals must stop us gracefully from the moment a script can see the address.
        crate::model::Shutdown::for_process()
            .map_err(|e| crate::error::Error::io("installing the SIGINT/SIGTERM handlers", e))?;
        announce(sockets.iter().map(net::udp_addr_string))?;
        Ok((sockets, opts))
    }

    /// The sockets systemd passed ([`activation`]), which take the place of --listen.
    fn activated(&self, kind: Kind) -> crate::error::Result<Option<Vec<socket2::Socket>>> {
        let n = activation::pending();
        if n > 0 && !self.listen.is_empty() {
            return Err(Error::Usage(format!(
                "systemd passed {n} listening socket{} (LISTEN_FDS), and --listen (or `listen` \
                 in the config file) names addresses too; leave --listen out: the .socket \
                 unit's ListenStream= says where to listen",
                if n == 1 { "" } else { "s" }
            )));
        }
        activation::take(kind)
    }
}

/// How a server's `listening on` line writes its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartLine {
    /// HTTP: a URL a terminal makes clickable and curl takes as it is (`http://127.0.0.1:8000`,
    /// `https://[::1]:8443`), as Python's http.server, miniserve and Caddy print theirs.
    Url,
    /// Other protocols have no URL a browser or terminal would open, so the address is what
    /// nc, socat and `tincan send`/`talk` take (`127.0.0.1:7007`, as ncat and NATS print
    /// theirs); over TLS it is `tls://127.0.0.1:7007` (as NATS and MQTT clients spell a TLS
    /// address), never `https://` for what is not HTTP.
    Address,
}

impl StartLine {
    /// The text after `listening on ` for a listener at `addr` (`HOST:PORT`, `[V6]:PORT` or
    /// `unix:/path`), speaking TLS or not. A Unix socket stays `unix:/path` (curl
    /// --unix-socket, socat UNIX-CONNECT take the path, no scheme), and over TLS
    /// [`UNIX_TLS`](Self::UNIX_TLS) follows it.
    pub fn line(self, addr: &str, tls: bool) -> String {
        if addr.starts_with("unix:") {
            return if tls {
                format!("{addr}{}", Self::UNIX_TLS)
            } else {
                addr.to_string()
            };
        }
        match (self, tls) {
            (StartLine::Url, false) => format!("http://{addr}"),
            (StartLine::Url, true) => format!("https://{addr}"),
            (StartLine::Address, false) => addr.to_string(),
            (StartLine::Address, true) => format!("tls://{addr}"),
        }
    }

    /// What follows a Unix socket's address in its start line when it speaks TLS: a path has
    /// no scheme to say so with, and the address before it stays whole.
    pub const UNIX_TLS: &'static str = " (TLS)";

    /// The `HOST:PORT` (or `unix:/path`) in a start line's text: what scripts connect to.
    pub fn address(text: &str) -> &str {
        let text = text.strip_suffix(Self::UNIX_TLS).unwrap_or(text);
        ["http://", "https://", "tls://"]
            .iter()
            .find_map(|s| text.strip_prefix(s))
            .unwrap_or(text)
    }
}

/// Print one line on stdout and flush.
fn say(line: &str) -> crate::error::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("writing to stdout", e))
}

/// Print `listening on ADDR` lines and flush, so a script reading stdout sees them at once.
fn announce(addrs: impl Iterator<Item = String>) -> crate::error::Result<()> {
    let mut out = std::io::stdout().lock();
    for a in addrs {
        writeln!(out, "listening on {a}").map_err(|e| Error::io("writing to stdout", e))?;
    }
    out.flush().map_err(|e| Error::io("writing to stdout", e))
}
