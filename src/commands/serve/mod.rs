//! `tincan serve [DIR]`: its flags, then the run: merge them with `tincan.toml` (`merge`: flags
//! over the file over the library's defaults, each group turned into the value it configures),
//! build the static-file handler and the HTTP service, bind, and run it under the chosen model.
//! The HTTP flags ([`HttpArgs`]) are shared with `tincan hello`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::flags::{heading, ServerArgs, Switch};
use crate::model::{Model, SELECT_FILE_CACHE_FDS};
use crate::protocol::http::access::{Cors, Guard, GuardError};
use crate::protocol::http::access_log::LogFormat;
use crate::protocol::http::gateway::{Gateway, GatewayConfig};
use crate::protocol::http::static_files;
use crate::protocol::http::{AccessLog, Handler, HttpOptions, HttpService, Limits};

mod merge;

#[cfg(test)]
use merge::http2_key;
use merge::{document_root, static_refusal};
pub use merge::{merge_server_args, parse_header, FileSettings};

/// `--http2`: `on`, `off`, or `only` (HTTP/2 alone, no HTTP/1.1 beside it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Http2Mode {
    On,
    Off,
    Only,
}

/// Where `tincan serve` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";

/// Flags of every HTTP server: limits, timeouts, headers, logging.
#[derive(Args, Debug, Clone, Default)]
pub struct HttpArgs {
    /// Longest request line (bytes, or 8k, 1m); longer gets 414.
    #[arg(help_heading = heading::LIMITS, long, value_name = "SIZE", value_parser = crate::units::size::<u64>)]
    pub max_request_line: Option<u64>,
    /// Longest single header line; longer gets 431. Also bounds the chunk extensions of one
    /// chunked request body, taken together, unless an eighth of its data is more (past
    /// that: 400).
    #[arg(help_heading = heading::LIMITS, long, value_name = "SIZE", value_parser = crate::units::size::<u64>)]
    pub max_header: Option<u64>,
    /// Largest whole request head; larger gets 431.
    #[arg(help_heading = heading::LIMITS, long, value_name = "SIZE", value_parser = crate::units::size::<u64>)]
    pub max_head: Option<u64>,
    /// Most header fields in one request; more gets 431.
    #[arg(help_heading = heading::LIMITS, long, value_name = "N")]
    pub max_headers: Option<usize>,
    /// Largest request body (discarded, or forwarded to a --proxy/--cgi route); larger gets
    /// 413.
    #[arg(help_heading = heading::LIMITS, long, value_name = "SIZE", value_parser = crate::units::size::<u64>)]
    pub max_body: Option<u64>,
    /// Seconds a client has to send a request head; then 408.
    #[arg(help_heading = heading::LIMITS, long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub head_timeout: Option<f64>,
    /// Seconds allowed between two reads of a request body; then 408.
    #[arg(help_heading = heading::LIMITS, long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub body_timeout: Option<f64>,
    /// Seconds an idle keep-alive connection is kept open.
    #[arg(help_heading = heading::LIMITS, long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub keepalive_timeout: Option<f64>,
    /// Requests served on one connection before it is closed.
    #[arg(help_heading = heading::LIMITS, long, value_name = "N")]
    pub max_requests_per_connection: Option<u32>,
    /// Add a header to every response ("Name: value"); repeatable.
    #[arg(help_heading = heading::HTTP, long = "header", value_name = "NAME: VALUE")]
    pub header: Vec<String>,
    /// Access log, one line per response (in --access-log-format): a file (appended), `-` for
    /// stdout, or `off`. [default: -]
    #[arg(help_heading = heading::LOGGING, long, value_name = "PATH|-|off")]
    pub access_log: Option<String>,

    /// How each access-log line is written: combined (Apache's and nginx's Combined Log
    /// Format) or json (one object a line, with Caddy's field names: request.remote_ip,
    /// request.method, request.uri, request.proto, request.headers, status, size, ts). What a
    /// client sent is escaped either way: control bytes (and in combined every byte past
    /// ASCII) as \xHH, as nginx writes them.
    #[arg(help_heading = heading::LOGGING, long, value_name = "combined|json", value_parser = log_format_parser())]
    pub access_log_format: Option<LogFormat>,
    /// Do not send the `Server: tincan` header.
    #[arg(help_heading = heading::HTTP, long)]
    pub hide_server: bool,
    /// With TLS: tell browsers to use only HTTPS for this host for SECONDS
    /// (`Strict-Transport-Security: max-age=SECONDS`, RFC 6797; 31536000 is a year, 0 makes
    /// them forget). Refused without --tls-cert, --tls-self-signed or --acme: browsers ignore
    /// it over plain HTTP.
    #[arg(help_heading = heading::TLS, long, value_name = "SECONDS")]
    pub hsts: Option<u64>,
    /// Speak HTTP/2 too: `h2` by ALPN on TLS listeners (offered before http/1.1) and h2c with
    /// prior knowledge on plain ones (`Upgrade: h2c` is not offered). `only`: HTTP/2 alone
    /// (ALPN offers only h2; a connection that does not open with the HTTP/2 preface gets
    /// GOAWAY). [default: on]
    #[arg(help_heading = heading::HTTP, long, value_enum, value_name = "on|off|only")]
    pub http2: Option<Http2Mode>,
    /// HTTP/2 streams a client may have open at once on one connection; more are refused
    /// (REFUSED_STREAM).
    #[arg(help_heading = heading::HTTP, long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub h2_max_streams: Option<u32>,
}

/// The `[default: …]` `--help` shows for the HTTP flags (serve's and hello's) whose default is
/// the library's own, by flag id, written from the values `merge` falls back to when neither
/// the flag nor tincan.toml gives one ([`Limits::default`], [`GatewayConfig::default`]...).
pub fn shown_defaults() -> Vec<(&'static str, String)> {
    let size = |n: usize| crate::units::show_size(n as u64);
    let secs = |d: std::time::Duration| d.as_secs_f64().to_string();
    let l = Limits::default();
    let g = GatewayConfig::default();
    vec![
        ("max_request_line", size(l.max_request_line)),
        ("max_header", size(l.max_header)),
        ("max_head", size(l.max_head)),
        ("max_headers", l.max_headers.to_string()),
        ("max_body", crate::units::show_size(l.max_body)),
        ("head_timeout", secs(l.head_timeout)),
        ("body_timeout", secs(l.body_timeout)),
        ("keepalive_timeout", secs(l.keepalive_timeout)),
        (
            "max_requests_per_connection",
            l.max_requests_per_connection.to_string(),
        ),
        ("access_log_format", LogFormat::default().name().to_string()),
        (
            "h2_max_streams",
            crate::protocol::http::H2Options::default()
                .max_streams
                .to_string(),
        ),
        (
            "file_cache",
            crate::units::show_size(static_files::file_cache::DEFAULT_BUDGET),
        ),
        ("upstream_timeout", secs(g.timeout)),
        ("upstream_keepalive", g.keepalive.to_string()),
        ("upstream_fail_timeout", secs(g.fail_timeout)),
        ("tunnel_idle_timeout", secs(g.tunnel_idle)),
    ]
}

/// `--access-log-format`: the formats' names, listed in `--help` and in the error for any other.
fn log_format_parser() -> impl clap::builder::TypedValueParser<Value = LogFormat> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(LogFormat::ALL.map(LogFormat::name))
        .map(|s| LogFormat::from_name(&s).expect("one of the listed names"))
}

/// Flags of the static-file handler.
#[derive(Args, Debug, Clone, Default)]
pub struct FileArgs {
    /// Index file names tried for a directory, in order (comma-separated or repeated).
    /// [default: index.html]
    #[arg(help_heading = heading::FILES, long, value_name = "NAME", value_delimiter = ',')]
    pub index: Vec<String>,
    /// List directories that have no index file. [default: on]
    #[arg(help_heading = heading::FILES, long, value_enum, value_name = "on|off")]
    pub listing: Option<Switch>,
    /// Serve and list files whose names start with a dot.
    #[arg(help_heading = heading::FILES, long)]
    pub show_dotfiles: bool,
    /// Serve symlinks that point outside the document root.
    #[arg(help_heading = heading::FILES, long)]
    pub follow_symlinks: bool,
    /// Cache-Control for paths matching a glob: GLOB=VALUE (e.g. "*.css=max-age=3600");
    /// repeatable, the first match wins.
    #[arg(help_heading = heading::FILES, long, value_name = "GLOB=VALUE")]
    pub cache_control: Vec<String>,
    /// Gzip compressible files on the fly. [default: on]
    #[arg(help_heading = heading::FILES, long, value_enum, value_name = "on|off")]
    pub compress: Option<Switch>,
    /// Serve a page from the root as the body of an error: CODE=PATH (e.g. 404=/404.html).
    #[arg(help_heading = heading::FILES, long, value_name = "CODE=PATH")]
    pub error_page: Vec<String>,
    /// Serve this file (a URL path under the root) for paths that do not exist (SPAs).
    #[arg(help_heading = heading::FILES, long, value_name = "PATH")]
    pub fallback: Option<String>,
    /// Memory for the open-file cache (answers to repeated plain GETs, revalidated at most
    /// once a second; 0 turns it off).
    #[arg(help_heading = heading::FILES, long, value_name = "SIZE", value_parser = crate::units::size::<u64>)]
    pub file_cache: Option<u64>,
    /// Open descriptors the file cache may keep for files over 64 KiB, so that the cache
    /// cannot take the descriptors connections need. [default: a quarter of the descriptor
    /// limit, at most 1024]
    #[arg(help_heading = heading::FILES, long, value_name = "N")]
    pub file_cache_fds: Option<usize>,
    /// Accept uploads with PUT into the part of the root under PREFIX (`/` for all of it;
    /// repeatable), e.g. `curl -T photo.jpg http://HOST/PREFIX/`, and from a form on the
    /// folders' listings (a multipart POST, as `curl -F file=@photo.jpg http://HOST/PREFIX/`).
    /// Folders must exist; a file that exists is not replaced (409) without
    /// --upload-overwrite; --max-body bounds the size (raise it: the default is 1m). Off unless
    /// given.
    #[arg(help_heading = heading::FILES, long, value_name = "PREFIX")]
    pub upload: Vec<String>,
    /// Let an upload replace a file that exists (204 instead of 409).
    #[arg(help_heading = heading::FILES, long)]
    pub upload_overwrite: bool,
    /// Offer each listed folder as a .tar.gz and a .zip (links on the listing; GET
    /// /dir/?download=tar.gz or zip), made while it is sent, holding what the listing shows.
    /// [default: off]
    #[arg(help_heading = heading::FILES, long, value_enum, value_name = "on|off")]
    pub archives: Option<Switch>,
}

/// Flags of the routes handed to other applications (reverse proxy, CGI).
#[derive(Args, Debug, Clone, Default)]
pub struct GatewayArgs {
    /// Forward requests under PREFIX to an upstream HTTP server: PREFIX=http://HOST[:PORT][/PATH]
    /// (https:// for TLS to it, or http://unix:/SOCKET[:/PATH]). The prefix is replaced by
    /// PATH when one is given, else the path goes as is. Several URLs, separated by commas,
    /// are used in turn. Repeatable; the longest matching prefix wins.
    #[arg(help_heading = heading::GATEWAY, long, value_name = "PREFIX=URL")]
    pub proxy: Vec<String>,
    /// Run CGI/1.1 scripts from DIR for requests under PREFIX (e.g. /cgi-bin=./cgi-bin): the
    /// next path segment names the script, the rest is PATH_INFO. Repeatable.
    #[arg(help_heading = heading::GATEWAY, long, value_name = "PREFIX=DIR")]
    pub cgi: Vec<String>,
    /// Seconds an upstream or script may take to connect, or between two reads or writes;
    /// then 504 (or a cut-off body).
    #[arg(help_heading = heading::GATEWAY, long, value_name = "SECONDS")]
    pub upstream_timeout: Option<f64>,
    /// Idle connections kept open per upstream for the next requests, per process; 0 opens
    /// a new connection for every request.
    #[arg(help_heading = heading::GATEWAY, long, value_name = "N")]
    pub upstream_keepalive: Option<usize>,
    /// Seconds an upstream that refused or timed out a connection is left out of its route
    /// (requests go to the route's other upstreams meanwhile).
    #[arg(help_heading = heading::GATEWAY, long, value_name = "SECONDS")]
    pub upstream_fail_timeout: Option<f64>,
    /// Seconds an upgraded connection (a WebSocket through --proxy) may carry nothing either
    /// way before it is closed.
    #[arg(help_heading = heading::GATEWAY, long, value_name = "SECONDS")]
    pub tunnel_idle_timeout: Option<f64>,
    /// Trust the CA certificates in FILE (PEM) for https:// upstreams instead of the
    /// system's (/etc/ssl/certs/ca-certificates.crt): an internal CA, or an upstream's
    /// self-signed certificate. An upstream whose certificate fails the check gets 502.
    #[arg(help_heading = heading::GATEWAY, long, value_name = "FILE")]
    pub upstream_ca: Option<PathBuf>,
}

/// Flags of who may ask: cross-origin reads and passwords.
#[derive(Args, Debug, Clone, Default)]
pub struct AccessArgs {
    /// Let pages from ORIGIN (scheme://host[:port]) read answers with fetch() or
    /// XMLHttpRequest: `Access-Control-Allow-Origin` on every answer, and CORS preflights
    /// (OPTIONS with Access-Control-Request-Method) answered 204. Repeatable; `*` allows any
    /// origin.
    #[arg(help_heading = heading::ACCESS, long, value_name = "ORIGIN")]
    pub cors: Vec<String>,
    /// Ask for a user name and password (HTTP Basic) on every path, checked against an
    /// htpasswd FILE with bcrypt or argon2 hashes (make it with `htpasswd -cB FILE USER`).
    /// Use it with TLS: Basic authentication sends the password readable by anyone on the way.
    #[arg(help_heading = heading::ACCESS, long, value_name = "FILE")]
    pub auth_file: Option<PathBuf>,
    /// As --auth-file, for the paths under PREFIX only: PREFIX=FILE (e.g. /private=users.htpasswd).
    /// Repeatable; the longest matching prefix decides.
    #[arg(help_heading = heading::ACCESS, long, value_name = "PREFIX=FILE")]
    pub auth: Vec<String>,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  tincan serve                              the current directory on 127.0.0.1:8000
  tincan serve ./site -l :8080              a directory on every interface, port 8080
  tincan serve /srv/www -l :80 --user nobody    bind port 80 as root, then drop to nobody
  tincan serve /srv/www -l :443 --tls-cert site.pem --tls-key site.key    HTTPS
  tincan serve --tls-self-signed ~/.tincan/tls    HTTPS on 127.0.0.1:8000, self-signed (localhost)
  tincan serve ./share --auth-file users.htpasswd   passwords (make it: htpasswd -cB users.htpasswd alice)
  tincan serve ./public --cors https://app.example  let a page on that origin fetch() the files
  tincan serve ./share --upload /incoming --max-body 1g    uploads: curl -T f.jpg http://127.0.0.1:8000/incoming/
  tincan serve ./share --archives on        each folder also as .tar.gz and .zip (links on its listing)
  tincan serve -l :443 --tls-cert site.pem --tls-key site.key --redirect-http :80    and http→https
  tincan serve --http2 off                  HTTP/1.1 only (HTTP/2 is on: h2 over TLS, h2c in plain)
  tincan serve --config tincan.toml         every setting from a file (flags override it)")]
pub struct ServeArgs {
    /// The directory to serve. [default: the current directory]
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Read settings from a TOML file whose keys are the flags below with `-` written `_`
    /// (`max_body = "10m"`, `listen = [":80", "[::]:80"]`); flags given as well override it.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub server: ServerArgs,

    // Files and who may read them come before the HTTP limits in `--help`: its headings follow
    // the order of the fields.
    #[command(flatten)]
    pub files: FileArgs,

    /// Boxed, as `gateway`: it keeps `Command`'s variants close in size.
    #[command(flatten)]
    pub access: Box<AccessArgs>,

    #[command(flatten)]
    pub http: HttpArgs,

    /// Boxed: rarely used, and it keeps `Command`'s variants close in size.
    #[command(flatten)]
    pub gateway: Box<GatewayArgs>,

    /// With TLS: also listen on ADDR (HOST:PORT, :80) for plain HTTP, and answer every request
    /// there with 308 to the same path and query over https, on the first --listen's port.
    /// ACME HTTP-01 challenges (/.well-known/acme-challenge/) are not redirected.
    #[arg(help_heading = heading::LISTENING, long, value_name = "ADDR")]
    pub redirect_http: Option<String>,
}

pub fn run(mut args: ServeArgs) -> Result<()> {
    let cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    merge_server_args(&mut args.server, &cfg)?;
    let root = document_root(args.dir.take(), &cfg)?;
    let limits = args.http.limits(&cfg)?;
    let mut files = args.files.settings(root.clone(), &cfg)?;
    let serve_options = args.server.serve_options()?;
    if serve_options.watches_with_select() {
        // Every descriptor a select loop opens must stay below FD_SETSIZE: the file cache
        // keeps to the share the connection cap leaves it.
        let default = || {
            let limit = crate::sys::fd_limit().unwrap_or(crate::sys::FD_SETSIZE as u64);
            crate::protocol::http::static_files::file_cache::default_fds(limit)
        };
        let fds = files.file_cache_fds.unwrap_or_else(default);
        files.file_cache_fds = Some(fds.min(SELECT_FILE_CACHE_FDS));
    }
    let files_upload = files.upload.clone();
    let handler = glue::static_handler(files)?;
    // Every flag is checked (routes, headers, the access log opened) before a socket is bound,
    // so a bad value never follows a `listening on` line.
    let gateway = args.gateway.gateway(&cfg, &root)?;
    let methods = if gateway.is_some() {
        "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
    } else if !files_upload.is_empty() {
        static_files::ALLOW_UPLOAD
    } else {
        static_files::ALLOW
    };
    let guard = args.access.guard(&cfg, methods)?;
    let tls = args.server.tls_source()?.is_some();
    let mut options = args.http.options(&cfg, serve_options.model, tls)?;
    options.guard = guard;
    let redirect = redirect_listener(args.redirect_http.or(cfg.redirect_http.clone()), tls)?;
    // Checked before binding, so that no start line (nor the self-signed hint) comes before
    // the refusal. Sockets systemd passes are known only once taken: they are checked below.
    if !redirect.is_empty() && crate::net::activation::pending() == 0 {
        let addrs = args.server.addresses(DEFAULT_LISTEN)?;
        if addrs
            .iter()
            .all(|a| matches!(a, crate::net::ListenAddr::Unix(_)))
        {
            return Err(no_tcp_listen());
        }
    }
    let (listeners, mut opts) = glue::setup(
        &args.server,
        DEFAULT_LISTEN,
        &redirect,
        options.http2,
        options.h2.only,
    )?;
    // A connection sending a file holds it open: where descriptors are scarce, it counts.
    opts.files_per_connection = 1;
    // And one waiting on an upstream or a script holds those descriptors.
    (opts.links_per_connection, opts.kept_links) =
        gateway.as_ref().map_or((0, 0), |g| g.descriptors());
    if let Err(e) = std::fs::read_dir(&root) {
        let e = match e.kind() {
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        // Typically --user: the new user may not read what root could; every request would be
        // a 403 with no hint why.
        let by_whom = if args.server.user.is_some() {
            "after dropping privileges"
        } else {
            "by this user"
        };
        tracing::warn!(
            "the document root {} cannot be read {by_whom} ({e}); every request will be refused",
            root.display()
        );
    }
    // Answering pauses where the driver stops reading, so a pipelining flood waits in neither.
    options.pipeline_pause = opts.high_water.max(1);
    let redirect_options = HttpOptions {
        // RFC 6797 §7.2: never Strict-Transport-Security over plain HTTP.
        extra_headers: (options.extra_headers.iter())
            .filter(|(n, _)| !n.eq_ignore_ascii_case("strict-transport-security"))
            .cloned()
            .collect(),
        // The redirect answers everyone the same 308: no password asked over plain HTTP.
        guard: None,
        ..options.clone()
    };
    options.gateway = gateway;
    let mut service = HttpService::new(handler, limits, options);
    if !redirect.is_empty() {
        let plain = opts
            .tls
            .as_ref()
            .map(|t| t.plain.clone())
            .unwrap_or_default();
        let port = listeners.iter().find_map(|l| match l.peer_addr() {
            crate::protocol::PeerAddr::Tcp(a) if !plain.contains(&a) => Some(a.port()),
            _ => None,
        });
        let Some(port) = port else {
            return Err(no_tcp_listen());
        };
        let acme = match args.server.tls_source()? {
            Some(crate::tls::CertSource::Acme(a)) => {
                let state = a.state;
                Some(
                    Arc::new(move |token: &str| crate::tls::acme::http01_answer(&state, token))
                        as crate::protocol::http::redirect::AcmeAnswer,
                )
            }
            _ => None,
        };
        let to = Arc::new(crate::protocol::http::redirect::RedirectHttps { port, acme });
        service = service.with_listeners(plain, to, redirect_options);
    }
    glue::serve(listeners, service, &opts)
}

/// `--redirect-http` with every listener a Unix socket: no port to send clients to.
fn no_tcp_listen() -> Error {
    Error::Usage(
        "--redirect-http needs a TCP --listen for TLS to send clients to; every --listen is a \
         Unix socket"
            .into(),
    )
}

/// The `--redirect-http` address, checked: it needs TLS to send clients to, and a TCP address.
fn redirect_listener(addr: Option<String>, tls: bool) -> Result<Vec<crate::net::ListenAddr>> {
    let Some(addr) = addr else {
        return Ok(Vec::new());
    };
    if !tls {
        return Err(Error::Usage(
            "--redirect-http sends clients to https, so it needs TLS: add --tls-cert and \
             --tls-key, --tls-self-signed DIR or --acme DOMAIN"
                .into(),
        ));
    }
    let parsed: crate::net::ListenAddr = addr.parse()?;
    if matches!(parsed, crate::net::ListenAddr::Unix(_)) {
        return Err(Error::Usage(format!(
            "--redirect-http {addr}: give a TCP address (HOST:PORT or :PORT); browsers do not \
             reach Unix sockets"
        )));
    }
    Ok(vec![parsed])
}

/// The calls into the static-file handler and the drivers, in one place.
pub(crate) mod glue {
    use super::*;
    use crate::protocol::http::static_files::upload::UploadConfig;
    use crate::protocol::http::static_files::{StaticConfig, StaticFiles};

    pub fn static_handler(s: FileSettings) -> Result<Arc<dyn Handler>> {
        let d = StaticConfig::default();
        let cfg = StaticConfig {
            root: s.root,
            index: s.index.unwrap_or(d.index),
            listing: s.listing.unwrap_or(d.listing),
            show_dotfiles: s.show_dotfiles,
            follow_symlinks: s.follow_symlinks,
            cache_control: s.cache_control,
            compress: s.compress.unwrap_or(d.compress),
            error_pages: s.error_pages,
            fallback: s.fallback,
            file_cache: s.file_cache.unwrap_or(d.file_cache),
            file_cache_fds: s.file_cache_fds,
            upload: UploadConfig::new(&s.upload, s.upload_overwrite)
                .map_err(|e| Error::Usage(format!("--upload {e}")))?,
            archives: s.archives.unwrap_or(d.archives),
        };
        let files = StaticFiles::new(cfg).map_err(static_refusal)?;
        Ok(Arc::new(files))
    }

    pub fn setup(
        server: &ServerArgs,
        default_listen: &str,
        plain: &[crate::net::ListenAddr],
        http2: bool,
        h2_only: bool,
    ) -> Result<(Vec<crate::net::Listener>, crate::model::ServeOptions)> {
        use crate::protocol::http::{ALPN_H2, ALPN_HTTP11};
        // RFC 7301 §3.2: the server picks by its own order of preference; h2 first.
        let alpn = if !http2 {
            vec![ALPN_HTTP11.to_vec()]
        } else if h2_only {
            vec![ALPN_H2.to_vec()]
        } else {
            vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()]
        };
        let app = crate::tls::TlsApp {
            alpn,
            plain_reply: Some(crate::protocol::http::plain_request_on_tls_port()),
            ..Default::default()
        };
        server.setup_with_plain(default_listen, &app, plain)
    }

    pub fn serve(
        listeners: Vec<crate::net::Listener>,
        service: HttpService,
        opts: &crate::model::ServeOptions,
    ) -> Result<()> {
        crate::model::serve(listeners, Arc::new(service), opts)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn headers_must_be_name_colon_value() {
        assert_eq!(
            parse_header("X-Frame-Options: DENY").unwrap(),
            ("X-Frame-Options".to_string(), "DENY".to_string())
        );
        assert_eq!(parse_header("X-Empty:").unwrap().1, "");
        for bad in ["NoColon", ": v", "Bad Name: v", "X: a\r\nInjected: 1"] {
            assert!(parse_header(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_http2_key_takes_a_boolean_or_the_flags_words() {
        let mode = |text: &str| http2_key(Config::parse(text).unwrap().http2.as_ref().unwrap());
        assert_eq!(mode("http2 = true").unwrap(), Http2Mode::On);
        assert_eq!(mode("http2 = false").unwrap(), Http2Mode::Off);
        assert_eq!(mode("http2 = \"only\"").unwrap(), Http2Mode::Only);
        assert_eq!(mode("http2 = \"off\"").unwrap(), Http2Mode::Off);
        let e = mode("http2 = \"maybe\"").unwrap_err().to_string();
        assert!(e.contains("\"only\"") && e.contains("maybe"), "{e}");
        let cfg = Config::parse("http2 = \"only\"").unwrap();
        let o = HttpArgs::default()
            .options(&cfg, Model::Event, false)
            .unwrap();
        assert!(o.http2 && o.h2.only);
    }

    #[test]
    fn flags_override_the_config_file_which_overrides_defaults() {
        let cfg =
            Config::parse("max_body = \"2m\"\nmax_header = 9000\nhead_timeout = 5\n").unwrap();
        let args = HttpArgs {
            max_header: Some(100),
            ..HttpArgs::default()
        };
        let l = args.limits(&cfg).unwrap();
        assert_eq!(l.max_body, 2 << 20);
        assert_eq!(l.max_header, 100);
        assert_eq!(l.head_timeout, Duration::from_secs(5));
        assert_eq!(l.max_request_line, Limits::default().max_request_line);
        let zero = HttpArgs {
            head_timeout: Some(0.0),
            ..HttpArgs::default()
        };
        assert!(zero.limits(&Config::default()).is_err());
        let huge = HttpArgs {
            keepalive_timeout: Some(1e300),
            ..HttpArgs::default()
        };
        let e = huge.limits(&Config::default()).unwrap_err().to_string();
        assert!(
            e.len() < 120 && e.contains("--keepalive-timeout 1e300 is not a number of seconds"),
            "{e}"
        );
    }

    #[test]
    fn file_flags_become_static_settings() {
        let cfg =
            Config::parse("listing = false\ncache_control = [\"*.css=max-age=60\"]\n").unwrap();
        let args = FileArgs {
            error_page: vec!["404=/404.html".into()],
            compress: Some(Switch::Off),
            ..FileArgs::default()
        };
        let s = args.settings(PathBuf::from("/srv"), &cfg).unwrap();
        assert_eq!(s.listing, Some(false));
        assert_eq!(s.compress, Some(false));
        assert_eq!(s.cache_control, vec![("*.css".into(), "max-age=60".into())]);
        assert_eq!(s.error_pages, vec![(404, "/404.html".into())]);
        let bad = FileArgs {
            error_page: vec!["200=/x".into()],
            ..FileArgs::default()
        };
        assert!(bad.settings(PathBuf::from("/srv"), &cfg).is_err());
    }

    #[test]
    fn a_missing_directory_is_named_in_one_line() {
        let e =
            document_root(Some(PathBuf::from("/nonexistent/x")), &Config::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/nonexistent/x does not exist; give the directory to serve (tincan serve DIR)"
        );
    }
}
