//! The command line: one subcommand per service or client. Each subcommand's own flags live
//! beside its runner in [`crate::commands`]; the flags every server shares live here.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::error::Error;
use crate::model::{Model, PollerKind, ServeOptions};
use crate::net::activation::{self, Kind};
use crate::net::privileges::PrivilegeDrop;
use crate::net::{self, BindOptions, ListenAddr, Listener};
use crate::tls::client::Trust;
use crate::tls::{CertFiles, CertSource, TlsApp};

/// A web server and socket-server toolkit.
#[derive(Parser, Debug)]
#[command(
    name = "tincan",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = EXIT_STATUS
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve a directory over HTTP/1.1 (static files, listings, ranges, compression).
    Serve(Box<commands::serve::ServeArgs>),
    /// Echo service (RFC 862, TCP and UDP) with a choice of message framings.
    Echo(commands::echo::EchoArgs),
    /// Send a message to an echo service and print what comes back.
    Send(commands::send::SendArgs),
    /// The tincanchat chat service: every message goes to every connected client.
    Chat(commands::chat::ChatArgs),
    /// Interactive chat client for `tincan chat`.
    Talk(commands::talk::TalkArgs),
    /// A page greeting the client and quoting its request line.
    Hello(commands::hello::HelloArgs),
    /// Load generator and model comparison.
    Bench(commands::bench::BenchArgs),

    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions(commands::docs::CompletionsArgs),
    /// Print a manual page (roff) for tincan or one of its subcommands.
    Man(commands::docs::ManArgs),
}

/// The headings `--help` groups the server flags under, in the order a new user needs them.
pub mod heading {
    pub const LISTENING: &str = "Listening";
    pub const TLS: &str = "TLS";
    pub const FILES: &str = "Files";
    pub const ACCESS: &str = "Access control";
    pub const HTTP: &str = "HTTP";
    pub const LIMITS: &str = "Limits";
    pub const GATEWAY: &str = "Proxy and CGI";
    pub const LOGGING: &str = "Logging";
    pub const CONCURRENCY: &str = "Concurrency";
    pub const PRIVILEGES: &str = "Privileges";
}

/// The exit status contract, shown by `tincan --help` (README "Exit status").
pub const EXIT_STATUS: &str = "\
Exit status:
  0    success (a server stopped by SIGINT/SIGTERM after its grace period)
  1    the command is valid but could not be carried out: a file or directory missing or
       unusable, a port in use, a server that does not answer
  2    the command line or config file is wrong as written (unknown flag or key, bad value)
  130  tincan bench interrupted by Ctrl-C";

/// Flags shared by every server subcommand.
// The `--help` text is these doc comments as written: `[V6]` is a literal, not a doc link.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address to listen on: HOST:PORT, [V6]:PORT, :PORT (all interfaces) or unix:/path.
    /// Repeat for several. Port 0 picks a free port; the bound address is printed first.
    /// [default: 127.0.0.1 on the command's port: serve 8000, hello 8080, echo 7007, chat 4040]
    #[arg(help_heading = heading::LISTENING, long = "listen", short = 'l', value_name = "ADDR")]
    pub listen: Vec<String>,

    /// Concurrency model. [default: event]
    #[arg(help_heading = heading::CONCURRENCY, long, value_parser = model_parser())]
    pub model: Option<Model>,

    /// Worker processes (prefork) or event-loop threads (event). [default: available cores]
    #[arg(help_heading = heading::CONCURRENCY, long, value_name = "N", allow_negative_numbers = true)]
    pub workers: Option<usize>,

    /// Readiness API for the event model. [default: epoll]
    #[arg(help_heading = heading::CONCURRENCY, long, value_parser = poller_parser())]
    pub poller: Option<PollerKind>,

    /// Connections served at once; further ones wait in the listen backlog. [default: 10000]
    #[arg(help_heading = heading::CONCURRENCY, long, value_name = "N", allow_negative_numbers = true)]
    pub max_connections: Option<usize>,

    /// Listen backlog: connections the kernel queues before they are accepted (Linux caps it
    /// at net.core.somaxconn). [default: 4096]
    #[arg(help_heading = heading::LISTENING, long, value_name = "N", allow_negative_numbers = true)]
    pub backlog: Option<i32>,

    /// Event and prefork models: microseconds an idle worker keeps polling before it sleeps,
    /// so that a client on the same machine finds it awake (lower latency for one busy
    /// connection, at the cost of CPU time and system calls). The window adapts: a worker
    /// whose work comes further apart than this does not poll. At most 1000. [default: 0]
    #[arg(help_heading = heading::CONCURRENCY, long, value_name = "MICROSECONDS", allow_negative_numbers = true)]
    pub busy_poll: Option<u64>,

    /// Set SO_REUSEPORT on the listening sockets.
    #[arg(help_heading = heading::LISTENING, long)]
    pub reuse_port: bool,

    /// Seconds the kernel may hold a new TCP connection until its first bytes arrive before
    /// handing it to the server (TCP_DEFER_ACCEPT, nginx's `deferred`; 0: at once). Meanwhile
    /// it takes no descriptor or connection slot, and the server wakes once per connection
    /// instead of twice: less server CPU, but the wake-up no longer overlaps the client's
    /// first write, so one client at a time waits longer. For protocols whose client speaks
    /// first. At most 600. [default: 0]
    #[arg(help_heading = heading::LISTENING, long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub defer_accept: Option<i64>,

    /// Seconds in-flight work may take to finish after SIGINT/SIGTERM. [default: 10]
    #[arg(help_heading = heading::CONCURRENCY, long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub grace: Option<f64>,

    /// Seconds a peer may refuse to accept output before its connection is closed.
    /// [default: 60]
    #[arg(help_heading = heading::CONCURRENCY, long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub send_timeout: Option<f64>,

    /// After binding, switch to this user (by name or uid). Requires starting as root.
    #[arg(help_heading = heading::PRIVILEGES, long, value_name = "NAME")]
    pub user: Option<String>,

    /// After binding, switch to this group (default: the user's primary group).
    #[arg(help_heading = heading::PRIVILEGES, long, value_name = "NAME")]
    pub group: Option<String>,

    /// File-creation mask to set after dropping privileges, in octal (e.g. 007). [default:
    /// unchanged]
    #[arg(help_heading = heading::PRIVILEGES, long, value_name = "OCTAL")]
    pub umask: Option<String>,

    /// Speak TLS (HTTPS for `serve` and `hello`) on every --listen, with this certificate
    /// chain (PEM, leaf first) and the key given by the --tls-key beside it. Repeat the pair
    /// for several certificates: each client gets the one whose names match the name it asks
    /// for (SNI); the first pair serves clients that ask for no name or an unknown one.
    /// SIGHUP rereads them all (a failure keeps the ones in use), dropping no connection.
    #[arg(help_heading = heading::TLS, long, value_name = "FILE")]
    pub tls_cert: Vec<PathBuf>,

    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of the --tls-cert before it.
    #[arg(help_heading = heading::TLS, long, value_name = "FILE")]
    pub tls_key: Vec<PathBuf>,

    /// Speak TLS with a self-signed certificate for localhost, 127.0.0.1 and ::1, made at the
    /// first start and kept in DIR as cert.pem and key.pem (reused after). For trying HTTPS
    /// out: clients must be told to trust DIR/cert.pem (curl --cacert DIR/cert.pem).
    #[arg(help_heading = heading::TLS, long, value_name = "DIR", conflicts_with = "tls_cert")]
    pub tls_self_signed: Option<PathBuf>,

    /// Speak TLS with a certificate for DOMAIN from an ACME CA (Let's Encrypt unless
    /// --acme-directory says otherwise). Repeat for more names on the same certificate. It is
    /// ordered at start when --acme-state holds none, renewed in the background at two thirds
    /// of its lifetime and swapped in without dropping a connection. The CA validates on port
    /// 80 with `serve --redirect-http :80` (HTTP-01), else on port 443 of the TLS --listen
    /// (TLS-ALPN-01); each DOMAIN must resolve to this host.
    #[arg(help_heading = heading::TLS, long, value_name = "DOMAIN", conflicts_with_all = ["tls_cert", "tls_self_signed"])]
    pub acme: Vec<String>,

    /// With --acme: the contact address the CA writes to about expiring certificates.
    #[arg(help_heading = heading::TLS, long, value_name = "ADDRESS", requires = "acme")]
    pub acme_email: Option<String>,

    /// With --acme: the CA's ACME directory URL. [default:
    /// https://acme-v02.api.letsencrypt.org/directory]
    #[arg(help_heading = heading::TLS, long, value_name = "URL", requires = "acme")]
    pub acme_directory: Option<String>,

    /// With --acme: where the account key and the certificate are kept (account.json,
    /// cert.pem, key.pem), reused across restarts. [default: ./acme]
    #[arg(help_heading = heading::TLS, long, value_name = "DIR", requires = "acme")]
    pub acme_state: Option<PathBuf>,

    /// With --acme: trust the CA certificates in FILE (PEM) for the directory's HTTPS instead
    /// of the system's (a test CA such as pebble's).
    #[arg(help_heading = heading::TLS, long, value_name = "FILE", requires = "acme")]
    pub acme_ca: Option<PathBuf>,
}

/// Whom the clients (`send`, `talk`, `bench`) trust when they speak TLS.
#[derive(Args, Debug, Clone, Default)]
pub struct ClientTlsArgs {
    /// With TLS: trust the CA certificates in FILE (PEM) instead of the system's
    /// (/etc/ssl/certs/ca-certificates.crt), e.g. a server's self-signed cert.pem.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub tls_ca: Option<PathBuf>,

    /// With TLS: accept any certificate. The connection is encrypted, but nothing says who
    /// is at the other end: for tests against a server whose certificate you cannot get.
    #[arg(long)]
    pub insecure: bool,
}

impl ClientTlsArgs {
    /// The client configuration these flags ask for, offering `alpn`.
    pub fn config(&self, alpn: &[&[u8]]) -> crate::Result<std::sync::Arc<rustls::ClientConfig>> {
        let trust = match (&self.tls_ca, self.insecure) {
            (_, true) => Trust::Anyone,
            (Some(f), false) => Trust::File(f.clone()),
            (None, false) => Trust::System,
        };
        crate::tls::client::config(&trust, alpn)
    }

    /// `--tls-ca` or `--insecure` given where no TLS is spoken: say so, naming `how` to ask
    /// for it.
    pub fn unused(&self, how: &str) -> crate::Result<()> {
        let flag = match (&self.tls_ca, self.insecure) {
            (Some(_), _) => "--tls-ca",
            (None, true) => "--insecure",
            (None, false) => return Ok(()),
        };
        Err(Error::Usage(format!(
            "{flag} is about the server's TLS certificate, and no TLS is spoken; {how}"
        )))
    }
}

/// How a failed TLS handshake with `target` reads: a certificate error says which flags
/// decide whom to trust.
pub fn tls_failure(target: &str, e: &std::io::Error) -> Error {
    let why = crate::tls::client::describe(e);
    if crate::tls::client::is_certificate_error(e) {
        Error::Client(format!(
            "could not connect to {target}: {why}; give its CA with --tls-ca FILE, or \
             --insecure to skip the check"
        ))
    } else {
        Error::Client(format!("could not connect to {target}: {why}"))
    }
}

/// A flag only the event loops (event, prefork) read, given with a model that has none: say
/// so, once (`serve_options` runs more than once per start), rather than ignore it silently.
fn event_loop_flag(said: &'static std::sync::Once, flag: &str, value: &dyn fmt::Display, m: Model) {
    let how = match m {
        Model::Iterative => "serves one connection at a time",
        Model::Threaded => "runs a thread per connection, each waiting with poll(2)",
        Model::Event | Model::Prefork => return,
    };
    said.call_once(|| {
        tracing::warn!(
            "{flag} is for the event loops (--model event or prefork); --model {m} {how}, so \
             {flag} {value} changes nothing"
        )
    });
}

impl ServerArgs {
    /// The [`ServeOptions`] these flags ask for (defaults from [`ServeOptions::default`]),
    /// validated before any socket is touched.
    pub fn serve_options(&self) -> crate::Result<ServeOptions> {
        let mut o = ServeOptions::default();
        if let Some(m) = self.model {
            o.model = m;
        }
        if let Some(w) = self.workers {
            o.workers = w;
            static SAID: std::sync::Once = std::sync::Once::new();
            event_loop_flag(&SAID, "--workers", &w, o.model);
        }
        if let Some(p) = self.poller {
            o.poller = p;
            static SAID: std::sync::Once = std::sync::Once::new();
            event_loop_flag(&SAID, "--poller", &p, o.model);
        }

        if let Some(m) = self.max_connections {
            o.max_connections = m;
        }
        if let Some(g) = self.grace {
            o.grace = seconds("--grace", g, true)?;
        }
        if let Some(t) = self.send_timeout {
            o.send_timeout = seconds("--send-timeout", t, false)?;
        }
        if let Some(us) = self.busy_poll {
            o.busy_poll = Duration::from_micros(us);
            static SAID: std::sync::Once = std::sync::Once::new();
            event_loop_flag(&SAID, "--busy-poll", &us, o.model);
        }
        o.validate().map_err(|e| Error::Usage(e.to_string()))?;
        if self.backlog.is_some_and(|b| b < 1) {
            return Err(Error::Usage("--backlog must be at least 1".into()));
        }
        if let Some(s) = self.defer_accept {
            if !(0..=i64::from(net::MAX_DEFER_ACCEPT)).contains(&s) {
                return Err(Error::Usage(format!(
                    "--defer-accept must be whole seconds from 0 (off) to {}, not {s}",
                    net::MAX_DEFER_ACCEPT
                )));
            }
        }
        self.privileges().validate()?;
        Ok(o)
    }

    fn bind_options(&self) -> BindOptions {
        BindOptions {
            backlog: self.backlog.unwrap_or(BindOptions::default().backlog),
            reuse_port: self.reuse_port,
            // Checked in serve_options(), which setup() calls first.
            defer_accept: self
                .defer_accept
                .and_then(|s| u32::try_from(s).ok())
                .unwrap_or(BindOptions::default().defer_accept),
        }
    }

    fn privileges(&self) -> PrivilegeDrop {
        PrivilegeDrop {
            user: self.user.clone(),
            group: self.group.clone(),
            umask: self.umask.clone(),
        }
    }

    fn addresses(&self, default_listen: &str) -> crate::Result<Vec<ListenAddr>> {
        if self.listen.is_empty() {
            Ok(vec![default_listen.parse()?])
        } else {
            self.listen.iter().map(|a| a.parse()).collect()
        }
    }

    /// The sockets systemd passed ([`activation`]), which take the place of --listen.
    fn activated(&self, kind: Kind) -> crate::Result<Option<Vec<socket2::Socket>>> {
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

    /// Where the TLS certificates come from, if the flags ask for TLS.
    pub fn tls_source(&self) -> crate::Result<Option<CertSource>> {
        if !self.acme.is_empty() {
            return self.acme_settings().map(|a| Some(CertSource::Acme(a)));
        }
        if let Some(dir) = &self.tls_self_signed {
            return Ok(Some(CertSource::SelfSigned(dir.clone())));
        }
        let (certs, keys) = (&self.tls_cert, &self.tls_key);
        if certs.len() != keys.len() {
            return Err(Error::Usage(format!(
                "--tls-cert and --tls-key come in pairs, but {} {} and {} {} were given",
                certs.len(),
                if certs.len() == 1 {
                    "certificate"
                } else {
                    "certificates"
                },
                keys.len(),
                if keys.len() == 1 { "key" } else { "keys" },
            )));
        }
        if certs.is_empty() {
            return Ok(None);
        }
        let pairs = certs
            .iter()
            .zip(keys)
            .map(|(c, k)| CertFiles {
                cert: c.clone(),
                key: k.clone(),
            })
            .collect();
        Ok(Some(CertSource::Files(pairs)))
    }

    /// The `--acme` flags, checked: names a certificate can carry, an https directory.
    fn acme_settings(&self) -> crate::Result<crate::tls::acme::AcmeSettings> {
        let mut domains = Vec::new();
        for d in &self.acme {
            let d = d.trim().to_ascii_lowercase();
            let ok = !d.is_empty()
                && !d.starts_with('.')
                && d.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
                || d.starts_with("*.") && d.len() > 2;
            if !ok || d.parse::<std::net::IpAddr>().is_ok() {
                return Err(Error::Usage(format!(
                    "--acme {d}: give a domain name (such as example.org) that resolves to \
                     this host"
                )));
            }
            if !domains.contains(&d) {
                domains.push(d);
            }
        }
        let directory = self
            .acme_directory
            .clone()
            .unwrap_or_else(|| crate::tls::acme::LETS_ENCRYPT.to_string());
        if !directory.starts_with("https://") {
            return Err(Error::Usage(format!(
                "--acme-directory {directory}: an ACME directory is an https:// URL \
                 (RFC 8555 §6.1)"
            )));
        }
        if let Some(ca) = &self.acme_ca {
            crate::tls::client::config(&Trust::File(ca.clone()), &[])?;
        }
        Ok(crate::tls::acme::AcmeSettings {
            domains,
            email: self.acme_email.clone(),
            directory,
            state: self
                .acme_state
                .clone()
                .unwrap_or_else(|| PathBuf::from("acme")),
            ca: self.acme_ca.clone(),
        })
    }

    /// Parse --listen (or default_listen when none given), bind each, drop privileges if
    /// --user, print `listening on ADDR` per listener on stdout (flushed; they are the first
    /// stdout lines, printed once the server can really serve), and build ServeOptions from the
    /// flags (defaults from ServeOptions::default()). ADDR is as [`StartLine::Address`] says.
    pub fn setup(&self, default_listen: &str) -> crate::Result<(Vec<Listener>, ServeOptions)> {
        self.setup_with(default_listen, &TlsApp::default())
    }

    /// [`setup`](Self::setup) for a service that tells TLS what it speaks (ALPN, its answer to
    /// plaintext on a TLS port). Certificates and keys are read and checked before binding.
    pub fn setup_with(
        &self,
        default_listen: &str,
        app: &TlsApp,
    ) -> crate::Result<(Vec<Listener>, ServeOptions)> {
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
    ) -> crate::Result<(Vec<Listener>, ServeOptions)> {
        self.bind_all(default_listen, app, plain, StartLine::Url)
    }

    fn bind_all(
        &self,
        default_listen: &str,
        app: &TlsApp,
        plain: &[ListenAddr],
        start: StartLine,
    ) -> crate::Result<(Vec<Listener>, ServeOptions)> {
        let mut opts = self.serve_options()?;
        let source = self.tls_source()?;
        if let Some(src) = &source {
            opts.tls = Some(crate::tls::settings(src, app)?);
        }
        let bind_opts = self.bind_options();
        let mut listeners = match self.activated(Kind::Stream)? {
            Some(sockets) => (sockets.into_iter())
                .map(|s| {
                    activation::listener(s, &bind_opts).map_err(|e| {
                        Error::io("socket activation: cannot set up a passed socket", e)
                    })
                })
                .collect::<crate::Result<Vec<Listener>>>()?,
            None => (self.addresses(default_listen)?.iter())
                .map(|a| net::bind(a, &bind_opts))
                .collect::<crate::Result<Vec<Listener>>>()?,
        };
        let plain_from = listeners.len();
        for a in plain {
            listeners.push(net::bind(a, &bind_opts)?);
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
            return Err(e);
        }
        // Signals must stop us gracefully from the moment a script can see the address.
        crate::model::Shutdown::for_process()
            .map_err(|e| crate::Error::io("installing the SIGINT/SIGTERM handlers", e))?;
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
            let port = listeners.iter().find_map(|l| {
                let a = l.local_addr_string();
                a.rsplit_once(':').map(|(_, p)| p.to_string())
            });
            let port = port.unwrap_or_default();
            let c = cert.display();
            // HTTP clients take a CA file; other clients are shown with openssl's.
            let how = if app.plain_reply.is_some() {
                format!("curl --cacert {c} https://localhost:{port}/")
            } else {
                format!("openssl s_client -connect localhost:{port} -CAfile {c}")
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
    ) -> crate::Result<(Vec<std::net::UdpSocket>, ServeOptions)> {
        let opts = self.serve_options()?;
        if self.tls_source()?.is_some() {
            return Err(Error::Usage(
                "--udp has no TLS (DTLS is not supported); leave out --tls-cert and \
                 --tls-self-signed"
                    .into(),
            ));
        }
        let sockets = match self.activated(Kind::Datagram)? {
            Some(sockets) => sockets.into_iter().map(std::net::UdpSocket::from).collect(),
            None => {
                let bind_opts = self.bind_options();
                (self.addresses(default_listen)?.iter())
                    .map(|a| net::bind_udp(a, &bind_opts))
                    .collect::<crate::Result<Vec<_>>>()?
            }
        };
        self.privileges().apply(&[])?;
        // Signals must stop us gracefully from the moment a script can see the address.
        crate::model::Shutdown::for_process()
            .map_err(|e| crate::Error::io("installing the SIGINT/SIGTERM handlers", e))?;
        announce(sockets.iter().map(net::udp_addr_string))?;
        Ok((sockets, opts))
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
    /// --unix-socket, socat UNIX-CONNECT).
    pub fn line(self, addr: &str, tls: bool) -> String {
        if addr.starts_with("unix:") {
            return addr.to_string();
        }
        match (self, tls) {
            (StartLine::Url, false) => format!("http://{addr}"),
            (StartLine::Url, true) => format!("https://{addr}"),
            (StartLine::Address, false) => addr.to_string(),
            (StartLine::Address, true) => format!("tls://{addr}"),
        }
    }

    /// The `HOST:PORT` (or `unix:/path`) in a start line's text: what scripts connect to.
    pub fn address(text: &str) -> &str {
        ["http://", "https://", "tls://"]
            .iter()
            .find_map(|s| text.strip_prefix(s))
            .unwrap_or(text)
    }
}

/// A flag in seconds as a Duration; negative, NaN or absurd values are usage errors.
pub fn seconds(flag: &str, v: f64, zero_ok: bool) -> crate::Result<Duration> {
    if !v.is_finite() || v < 0.0 || (!zero_ok && v == 0.0) || v > 1e9 {
        let least = if zero_ok { "0 or more" } else { "more than 0" };
        // 1e300 is shown as 1e300, not as its 301 digits.
        let shown = if v.is_finite() && v.abs() < 1e9 {
            v.to_string()
        } else {
            format!("{v:e}")
        };
        let most = if v > 1e9 { " (at most 1e9)" } else { "" };
        return Err(Error::Usage(format!(
            "{flag} {shown} is not a number of seconds; give {least}{most}"
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Print one line on stdout and flush.
fn say(line: &str) -> crate::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("writing to stdout", e))
}

/// Print `listening on ADDR` lines and flush, so a script reading stdout sees them at once.
fn announce(addrs: impl Iterator<Item = String>) -> crate::Result<()> {
    let mut out = std::io::stdout().lock();
    for a in addrs {
        writeln!(out, "listening on {a}").map_err(|e| Error::io("writing to stdout", e))?;
    }
    out.flush().map_err(|e| Error::io("writing to stdout", e))
}

/// `--model`: the drivers' names, listed in `--help` and in the error for any other word.
fn model_parser() -> impl clap::builder::TypedValueParser<Value = Model> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Model::ALL.map(Model::name))
        .map(|s| Model::from_name(&s).expect("one of the listed names"))
}

/// `--poller`: as [`model_parser`].
fn poller_parser() -> impl clap::builder::TypedValueParser<Value = PollerKind> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(PollerKind::ALL.map(PollerKind::name))
        .map(|s| PollerKind::from_name(&s).expect("one of the listed names"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags' defaults, written as text for `--help`, are the library's own constants.
    #[test]
    fn size_flags_take_suffixes_and_default_to_the_library_limits() {
        use crate::protocol::echo::DEFAULT_MAX_FRAME;
        let Command::Echo(echo) = Cli::parse_from(["tincan", "echo"]).command else {
            unreachable!()
        };
        assert_eq!(echo.max_frame, DEFAULT_MAX_FRAME);
        let Command::Send(send) = Cli::parse_from(["tincan", "send", "x:1"]).command else {
            unreachable!()
        };
        assert_eq!(send.max_frame, DEFAULT_MAX_FRAME);
        let Command::Echo(echo) = Cli::parse_from(["tincan", "echo", "--max-frame", "4M"]).command
        else {
            unreachable!()
        };
        assert_eq!(echo.max_frame, 4 << 20);
    }
}
