//! The flags more than one subcommand shares: every server's ([`ServerArgs`], mapped to the
//! library's `ServeOptions`, `BindOptions` and TLS source), the clients' TLS trust
//! ([`ClientTlsArgs`]), and the headings `--help` groups them under. Each subcommand's own
//! flags live beside its runner in [`crate::commands`]; the top-level parser in [`crate::cli`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::error::Error;
use crate::model::{self, Model, PollerKind, ServeOptions};
use crate::net::privileges::{PrivilegeDrop, PrivilegeError};
use crate::net::{self, BindOptions, ListenAddr};
use crate::tls::client::Trust;
use crate::tls::{CertFiles, CertSource};
use crate::units::seconds;

/// `on` or `off`, for a flag whose default is one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

impl Switch {
    pub fn on(self) -> bool {
        self == Switch::On
    }
}

impl From<bool> for Switch {
    fn from(on: bool) -> Switch {
        if on {
            Switch::On
        } else {
            Switch::Off
        }
    }
}

/// The headings `--help` groups the server flags under, in the order `serve --help` shows
/// them: where to listen and whether with TLS first, the rest as a new user needs them. Clap
/// orders headings by their first flag, so the order of the fields decides.
pub mod heading {
    pub const LISTENING: &str = "Listening";
    pub const TLS: &str = "TLS";
    pub const CONCURRENCY: &str = "Concurrency";
    pub const PRIVILEGES: &str = "Privileges";
    pub const FILES: &str = "Files";
    pub const ACCESS: &str = "Access control";
    pub const LIMITS: &str = "Limits";
    pub const HTTP: &str = "HTTP";
    pub const LOGGING: &str = "Logging";
    pub const GATEWAY: &str = "Proxy and CGI";
}

/// Flags shared by every server subcommand.
// The `--help` text is these doc comments as written: `[V6]` is a literal, not a doc link.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address to listen on: HOST:PORT, [V6]:PORT, :PORT (all interfaces) or unix:/path.
    /// Repeat for several. Port 0 picks a free port; the bound address is printed first.
    #[arg(help_heading = heading::LISTENING, long = "listen", short = 'l', value_name = "ADDR")]
    pub listen: Vec<String>,

    // TLS comes second in `--help`, after where to listen: its headings follow the order of
    // the fields.
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

    /// With TLS: hand each connection's records to the kernel (kernel TLS, `TCP_ULP "tls"`)
    /// the first time it sends a file, so files leave with sendfile instead of being read and
    /// encrypted here. Where the kernel has no TLS (no CONFIG_TLS, or the `tls` module is not
    /// loaded and tincan may not load it) nothing changes. [default: on]
    #[arg(help_heading = heading::TLS, long, value_enum, value_name = "on|off")]
    pub kernel_tls: Option<Switch>,

    /// Speak TLS with a self-signed certificate for localhost, 127.0.0.1 and ::1, made at the
    /// first start and kept in DIR as cert.pem and key.pem (reused after). For trying HTTPS
    /// out: clients must be told to trust DIR/cert.pem (curl --cacert DIR/cert.pem).
    #[arg(help_heading = heading::TLS, long, value_name = "DIR", conflicts_with_all = ["tls_cert", "tls_key"])]
    pub tls_self_signed: Option<PathBuf>,

    /// Speak TLS with a certificate for DOMAIN from an ACME CA (Let's Encrypt unless
    /// --acme-directory says otherwise). Repeat for more names on the same certificate. It is
    /// ordered at start when --acme-state holds none, renewed in the background at two thirds
    /// of its lifetime and swapped in without dropping a connection. The CA validates on port
    /// 80 with `serve --redirect-http :80` (HTTP-01), else on port 443 of the TLS --listen
    /// (TLS-ALPN-01); each DOMAIN must resolve to this host.
    #[arg(help_heading = heading::TLS, long, value_name = "DOMAIN", conflicts_with_all = ["tls_cert", "tls_key", "tls_self_signed"])]
    pub acme: Vec<String>,

    // The --acme-* flags do not carry clap's `requires = "acme"`: `acme` may come from
    // tincan.toml, which clap never sees. `tls_source` refuses them without it, after the merge.
    /// With --acme: the contact address the CA writes to about expiring certificates.
    #[arg(help_heading = heading::TLS, long, value_name = "ADDRESS")]
    pub acme_email: Option<String>,

    /// With --acme: the CA's ACME directory URL.
    #[arg(help_heading = heading::TLS, long, value_name = "URL")]
    pub acme_directory: Option<String>,

    /// With --acme: where the account key and the certificate are kept (account.json,
    /// cert.pem, key.pem), reused across restarts. [default: ./acme]
    #[arg(help_heading = heading::TLS, long, value_name = "DIR")]
    pub acme_state: Option<PathBuf>,

    /// With --acme: trust the CA certificates in FILE (PEM) for the directory's HTTPS instead
    /// of the system's (a test CA such as pebble's).
    #[arg(help_heading = heading::TLS, long, value_name = "FILE")]
    pub acme_ca: Option<PathBuf>,

    /// Concurrency model.
    #[arg(help_heading = heading::CONCURRENCY, long, value_parser = model_parser())]
    pub model: Option<Model>,

    /// Worker processes (prefork) or event-loop threads (event). [default: available cores]
    #[arg(help_heading = heading::CONCURRENCY, long, value_name = "N", allow_negative_numbers = true)]
    pub workers: Option<usize>,

    /// Readiness API for the event model.
    #[arg(help_heading = heading::CONCURRENCY, long, value_parser = poller_parser())]
    pub poller: Option<PollerKind>,

    /// Connections served at once by the whole server (all event threads or prefork workers
    /// together); further ones wait in the listen backlog.
    #[arg(help_heading = heading::CONCURRENCY, long, value_name = "N", allow_negative_numbers = true)]
    pub max_connections: Option<usize>,

    /// Listen backlog: connections the kernel queues before they are accepted (Linux caps it
    /// at net.core.somaxconn).
    #[arg(help_heading = heading::LISTENING, long, value_name = "N", allow_negative_numbers = true)]
    pub backlog: Option<i32>,

    /// Event and prefork models: microseconds an idle worker keeps polling before it sleeps,
    /// so that a client on the same machine finds it awake (lower latency for one busy
    /// connection, at the cost of CPU time and system calls). The window adapts: a worker
    /// whose work comes further apart than this does not poll. At most 1000.
    #[arg(help_heading = heading::CONCURRENCY, long, value_name = "MICROSECONDS", allow_negative_numbers = true)]
    pub busy_poll: Option<u64>,

    /// Set SO_REUSEPORT on the listening sockets. Prefork with two workers or more sets it
    /// anyway: it binds each TCP address once per worker, and the kernel spreads connections
    /// over them.
    #[arg(help_heading = heading::LISTENING, long)]
    pub reuse_port: bool,

    /// Seconds the kernel may hold a new TCP connection until its first bytes arrive before
    /// handing it to the server (TCP_DEFER_ACCEPT, nginx's `deferred`; 0: at once). Meanwhile
    /// it takes no descriptor or connection slot, and the server wakes once per connection
    /// instead of twice: less server CPU, but the wake-up no longer overlaps the client's
    /// first write, so one client at a time waits longer. For protocols whose client speaks
    /// first. At most 600.
    #[arg(help_heading = heading::LISTENING, long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub defer_accept: Option<i64>,

    /// Seconds in-flight work may take to finish after SIGINT/SIGTERM.
    #[arg(help_heading = heading::CONCURRENCY, long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub grace: Option<f64>,

    /// Seconds a peer may refuse to accept output before its connection is closed.
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
}

/// The `[default: …]` `--help` shows for the server flags whose default is the library's own,
/// by flag id, written from the values the code falls back to ([`ServeOptions::default`],
/// [`BindOptions::default`]), so the help cannot state another. `crate::cli::command` appends
/// them to the flags' help.
pub fn shown_defaults() -> Vec<(&'static str, String)> {
    let o = ServeOptions::default();
    let b = BindOptions::default();
    vec![
        ("model", o.model.to_string()),
        ("poller", o.poller.to_string()),
        ("max_connections", o.max_connections.to_string()),
        ("backlog", b.backlog.to_string()),
        ("busy_poll", o.busy_poll.as_micros().to_string()),
        ("defer_accept", b.defer_accept.to_string()),
        ("grace", o.grace.as_secs_f64().to_string()),
        ("send_timeout", o.send_timeout.as_secs_f64().to_string()),
        ("acme_directory", crate::tls::acme::LETS_ENCRYPT.to_string()),
    ]
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
    pub fn config(
        &self,
        alpn: &[&[u8]],
    ) -> crate::error::Result<std::sync::Arc<rustls::ClientConfig>> {
        let trust = match (&self.tls_ca, self.insecure) {
            (_, true) => Trust::Anyone,
            (Some(f), false) => Trust::File(f.clone()),
            (None, false) => Trust::System,
        };
        crate::tls::client::config(&trust, alpn)
    }

    /// `--tls-ca` or `--insecure` given where no TLS is spoken: say so, naming `how` to ask
    /// for it.
    pub fn unused(&self, how: &str) -> crate::error::Result<()> {
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
    /// Kernel TLS is on: `--kernel-tls` (or `kernel_tls` in tincan.toml, merged into it) did
    /// not turn it off.
    pub fn kernel_tls(&self) -> bool {
        self.kernel_tls.is_none_or(Switch::on)
    }

    /// The [`ServeOptions`] these flags ask for (defaults from [`ServeOptions::default`]),
    /// validated before any socket is touched.
    pub fn serve_options(&self) -> crate::error::Result<ServeOptions> {
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
        o.validate().map_err(|e| Error::Usage(option_error(&e)))?;
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

    pub(crate) fn bind_options(&self) -> BindOptions {
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

    pub(crate) fn privileges(&self) -> PrivilegeDrop {
        PrivilegeDrop {
            user: self.user.clone(),
            group: self.group.clone(),
            umask: self.umask.clone(),
        }
    }

    pub(crate) fn addresses(&self, default_listen: &str) -> crate::error::Result<Vec<ListenAddr>> {
        if self.listen.is_empty() {
            Ok(vec![default_listen.parse()?])
        } else {
            self.listen.iter().map(|a| a.parse()).collect()
        }
    }

    /// Where the TLS certificates come from, if the flags ask for TLS.
    pub fn tls_source(&self) -> crate::error::Result<Option<CertSource>> {
        if self.acme.is_empty() {
            if let Some(flag) = self.acme_flag() {
                return Err(Error::Usage(format!(
                    "{flag} is about the certificate --acme DOMAIN orders, and no --acme is \
                     given (nor `acme` in the config file); add --acme DOMAIN or leave out \
                     {flag}"
                )));
            }
        }
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

    /// The first `--acme-*` flag given (each is about the --acme certificate), if any.
    pub(crate) fn acme_flag(&self) -> Option<&'static str> {
        [
            ("--acme-email", self.acme_email.is_some()),
            ("--acme-directory", self.acme_directory.is_some()),
            ("--acme-state", self.acme_state.is_some()),
            ("--acme-ca", self.acme_ca.is_some()),
        ]
        .into_iter()
        .find_map(|(flag, given)| given.then_some(flag))
    }

    /// The `--acme` flags, checked: names a certificate can carry, an https directory.
    pub(crate) fn acme_settings(&self) -> crate::error::Result<crate::tls::acme::AcmeSettings> {
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

/// A listener that could not be had, with the flag that would help where one would.
impl From<net::BindError> for Error {
    fn from(e: net::BindError) -> Error {
        match e {
            net::BindError::InUse(_) => Error::Setup(format!("{e} with --listen")),
            net::BindError::Privileged(addr) => Error::Setup(format!(
                "binding {addr} needs root because ports below 1024 are privileged; run as root \
                 with --user NAME to drop privileges after binding, or pick a port of 1024 or more"
            )),
            net::BindError::UnixDatagram(_) => Error::Usage(format!("{e} with --udp")),
            e => Error::Setup(e.to_string()),
        }
    }
}

/// What went wrong dropping privileges, in terms of `--user`, `--group` and `--umask`.
impl From<PrivilegeError> for Error {
    fn from(e: PrivilegeError) -> Error {
        use PrivilegeError as P;
        let usage = e.is_usage();
        let line = match e {
            P::BadUmask(s) => format!(
                "--umask {s} is not an octal file mode mask; use three octal digits such as 007"
            ),
            P::GroupWithoutUser => "--group needs --user too; tincan switches group and user \
                                    together after binding"
                .into(),
            P::NoSuchUser(name) => format!(
                "there is no user named {name}; give an existing user name or a numeric uid to \
                 --user"
            ),
            P::NoSuchGroup(name) => format!(
                "there is no group named {name}; give an existing group name or a numeric gid \
                 to --group"
            ),
            P::SocketMode { path, mode, source } => format!(
                "cannot set the mode of {} to {mode:03o} (--umask): {source}",
                path.display()
            ),
            P::NotRoot(user) => format!(
                "--user {user} needs tincan to start as root (it binds first, then switches to \
                 {user}); run it as root or leave out --user"
            ),
            P::UserIsRoot(user) => format!(
                "--user {user} is root, which drops nothing; pick an unprivileged user such as \
                 nobody"
            ),
            e @ (P::Chown { .. } | P::Step { .. }) => format!("{e}; refusing to run as root"),
            e @ (P::Unverified { .. } | P::Regained(_)) => format!("{e}; refusing to run"),
            e @ P::Lookup { .. } => e.to_string(),
        };
        if usage {
            Error::Usage(line)
        } else {
            Error::Setup(line)
        }
    }
}

/// The sentence for an option no driver can honour, in terms of the flag that set it.
fn option_error(e: &model::OptionError) -> String {
    use model::OptionError as E;
    match e {
        E::NoWorkers => "--workers must be at least 1".into(),
        E::TooManyWorkers(n) => format!(
            "--workers {n} is more than tincan runs ({}); a few per core is plenty",
            model::MAX_WORKERS
        ),
        E::NoConnections => "--max-connections must be at least 1".into(),
        E::NoSendTimeout => "--send-timeout must be more than 0 seconds".into(),
        E::BusyPollTooLong(us) => format!(
            "--busy-poll {us} is more than {} microseconds; polling longer only burns CPU",
            model::MAX_BUSY_POLL.as_micros()
        ),
        E::NoHighWater => e.to_string(),
    }
}
