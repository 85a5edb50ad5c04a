//! `tincan.toml`: every `tincan serve` flag as a key, so a deployment needs no long command line.
//! Keys are the flag names with `-` written `_`; repeatable flags take arrays; flags given on the
//! command line override the file. Unknown keys are refused with the key named (a typo must not
//! silently fall back to a default). `examples/tincan.toml` documents every key.
//!
//! This module only reads and types the file; the commands merge it with their flags.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::{Model, PollerKind};

/// A byte size: a number of bytes, or text with a `k`/`m`/`g` suffix (`"8k"`, `"1MiB"`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    pub fn bytes(&self) -> std::result::Result<u64, String> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(t) => parse_size(t),
        }
    }
}

/// `"8192"`, `"8k"`, `"8K"`, `"8KiB"`, `"16kb"`, `"1m"`, `"1g"` → bytes (binary multiples, as
/// nginx's `8k`).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| {
        if digits > 0 {
            // Digits that do not fit in 64 bits.
            format!("`{s}` is too large a size")
        } else {
            format!("`{s}` is not a size (a number of bytes, optionally with k, m or g)")
        }
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "`{s}` is not a size (a number of bytes, optionally with k, m or g)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large a size"))
}

/// One value or a list of them (`listen = ":80"` or `listen = [":80", "[::]:80"]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Everything `tincan.toml` may hold. Every field is optional: absent means "the flag's
/// default".
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    // The document root (the DIR argument).
    pub root: Option<PathBuf>,

    // Shared server flags (`crate::cli::ServerArgs`).
    pub listen: Option<OneOrMany>,
    #[serde(default, deserialize_with = "named")]
    pub model: Option<Model>,
    pub workers: Option<usize>,
    #[serde(default, deserialize_with = "named")]
    pub poller: Option<PollerKind>,
    pub max_connections: Option<usize>,
    pub backlog: Option<i32>,
    pub reuse_port: Option<bool>,
    /// Seconds a silent new connection is kept in the kernel (`--defer-accept`).
    pub defer_accept: Option<i64>,
    pub grace: Option<f64>,
    pub send_timeout: Option<f64>,
    /// Microseconds an idle event worker polls before it sleeps (`--busy-poll`).
    pub busy_poll: Option<u64>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub umask: Option<String>,
    /// TLS certificate chains and their keys, in pairs (`--tls-cert`, `--tls-key`).
    pub tls_cert: Option<OneOrMany>,
    pub tls_key: Option<OneOrMany>,
    /// A directory for the self-signed certificate (`--tls-self-signed`).
    pub tls_self_signed: Option<PathBuf>,
    /// Certificates from an ACME CA (`--acme`, `--acme-email`, `--acme-directory`,
    /// `--acme-state`, `--acme-ca`).
    pub acme: Option<OneOrMany>,
    pub acme_email: Option<String>,
    pub acme_directory: Option<String>,
    pub acme_state: Option<PathBuf>,
    pub acme_ca: Option<PathBuf>,
    /// A plain listener redirecting to https (`serve --redirect-http`).
    pub redirect_http: Option<String>,

    // HTTP limits and timeouts (seconds).
    pub max_request_line: Option<Size>,
    pub max_header: Option<Size>,
    pub max_head: Option<Size>,
    pub max_headers: Option<usize>,
    pub max_body: Option<Size>,
    pub head_timeout: Option<f64>,
    pub body_timeout: Option<f64>,
    pub keepalive_timeout: Option<f64>,
    pub max_requests_per_connection: Option<u32>,

    // Responses and logging.
    pub header: Option<OneOrMany>,
    pub access_log: Option<String>,
    /// `false` hides the `Server` header (as nginx's `server_tokens`).
    pub server_tokens: Option<bool>,
    /// The flag's spelling, accepted too: `hide_server = true`.
    pub hide_server: Option<bool>,
    /// Seconds of `Strict-Transport-Security` (`--hsts`; needs TLS).
    pub hsts: Option<u64>,
    /// HTTP/2 on or off (`--http2`), and its concurrent streams (`--h2-max-streams`).
    pub http2: Option<bool>,
    pub h2_max_streams: Option<u32>,

    // Files.
    pub index: Option<OneOrMany>,
    pub listing: Option<bool>,
    pub show_dotfiles: Option<bool>,
    pub follow_symlinks: Option<bool>,
    pub cache_control: Option<OneOrMany>,
    pub compress: Option<bool>,
    /// Open-file cache budget (`"64m"`; 0 turns it off).
    pub file_cache: Option<Size>,
    /// Open descriptors the open-file cache may hold.
    pub file_cache_fds: Option<usize>,
    pub error_page: Option<OneOrMany>,
    pub fallback: Option<String>,
    /// `--upload` prefixes and `--upload-overwrite`.
    pub upload: Option<OneOrMany>,
    pub upload_overwrite: Option<bool>,
    /// Folders offered as `.tar.gz` (`--archives on`).
    pub archives: Option<bool>,

    // Who may ask: `--cors` origins, `--auth-file`, `--auth PREFIX=FILE`.
    pub cors: Option<OneOrMany>,
    pub auth_file: Option<PathBuf>,
    pub auth: Option<OneOrMany>,

    // Proxy and CGI routes.
    pub proxy: Option<OneOrMany>,
    pub cgi: Option<OneOrMany>,
    pub upstream_timeout: Option<f64>,
    pub upstream_keepalive: Option<usize>,
    pub upstream_fail_timeout: Option<f64>,
    pub tunnel_idle_timeout: Option<f64>,
    /// CA certificates for https:// upstreams (`--upstream-ca`).
    pub upstream_ca: Option<PathBuf>,
}

impl Config {
    /// Read and check `path`. Every error is one sentence naming the file (and line, and the
    /// key when one is unknown).
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read config file {}", path.display()), e))?;
        Config::parse(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
    }

    /// Parse config text; the error is `line N: what is wrong`.
    pub fn parse(text: &str) -> std::result::Result<Config, String> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let msg = plain_words(e.message().trim_end_matches('\n')).replace('\n', " ");
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}: {msg}")
                }
                None => msg,
            }
        })
    }
}

/// serde names Rust types in its messages (`expected usize`, `untagged enum OneOrMany`); a
/// user reads what the key takes instead.
fn plain_words(msg: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        (
            "data did not match any variant of untagged enum OneOrMany",
            "expected a string or a list of strings",
        ),
        (
            "data did not match any variant of untagged enum Size",
            "expected a number of bytes or a size such as \"8k\"",
        ),
        ("expected usize", "expected a whole number, 0 or more"),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected u32", "expected a whole number, 0 or more"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number (of seconds)"),
    ];
    let mut m = msg.to_string();
    for (rust, plain) in WORDS {
        m = m.replace(rust, plain);
    }
    m
}

/// A value the config file spells by name (`model = "event"`), parsed as the flag's is.
trait Named: Sized {
    const WHAT: &'static str;
    fn from_name(name: &str) -> Option<Self>;
    fn names() -> Vec<&'static str>;
}

impl Named for Model {
    const WHAT: &'static str = "model";
    fn from_name(name: &str) -> Option<Model> {
        Model::from_name(name)
    }
    fn names() -> Vec<&'static str> {
        Model::ALL.map(Model::name).to_vec()
    }
}

impl Named for PollerKind {
    const WHAT: &'static str = "poller";
    fn from_name(name: &str) -> Option<PollerKind> {
        PollerKind::from_name(name)
    }
    fn names() -> Vec<&'static str> {
        PollerKind::ALL.map(PollerKind::name).to_vec()
    }
}

fn named<'de, D: serde::Deserializer<'de>, T: Named>(
    d: D,
) -> std::result::Result<Option<T>, D::Error> {
    let name = <String as serde::Deserialize>::deserialize(d)?;
    T::from_name(&name).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "`{name}` is not a {}; use one of {}",
            T::WHAT,
            T::names().join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_name_what_the_key_takes_not_a_rust_type() {
        for (text, want) in [
            ("listen = 8000\n", "a string or a list of strings"),
            ("workers = -1\n", "a whole number"),
            ("head_timeout = \"5s\"\n", "a number (of seconds)"),
            ("max_body = true\n", "a size such as"),
            ("max_requests_per_connection = 1.5\n", "a whole number"),
        ] {
            let err = Config::parse(text).unwrap_err();
            assert!(
                err.starts_with("line 1: ") && err.contains(want),
                "{text}: {err}"
            );
            for rust in ["usize", "u32", "f64", "enum", "OneOrMany"] {
                assert!(!err.contains(rust), "{text}: {err}");
            }
        }
    }

    #[test]
    fn every_documented_key_in_the_example_file_parses() {
        let text = include_str!("../examples/tincan.toml");
        // The example is commented out; uncomment every `# key = value` line and parse it.
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let cfg = Config::parse(&uncommented).unwrap();
        assert_eq!(cfg.model, Some(Model::Event));
        assert!(cfg.max_body.is_some() && cfg.cache_control.is_some() && cfg.root.is_some());
    }

    #[test]
    fn unknown_keys_are_refused_by_name_and_line() {
        let err = Config::parse("listen = \":8000\"\nmax_bdy = 5\n").unwrap_err();
        assert!(err.starts_with("line 2: "), "{err}");
        assert!(err.contains("max_bdy"), "{err}");
    }

    #[test]
    fn values_take_their_natural_toml_types() {
        let cfg = Config::parse(
            "listen = [\":80\", \"[::]:80\"]\nmax_body = \"2m\"\nmax_header = 9000\nhead_timeout = 5\nlisting = false\n",
        )
        .unwrap();
        assert_eq!(cfg.listen.unwrap().into_vec().len(), 2);
        assert_eq!(cfg.max_body.unwrap().bytes(), Ok(2 << 20));
        assert_eq!(cfg.max_header.unwrap().bytes(), Ok(9000));
        assert_eq!(cfg.head_timeout, Some(5.0));
        assert_eq!(cfg.listing, Some(false));
        assert!(Config::parse("model = \"fast\"\n").is_err());
    }

    #[test]
    fn sizes_read_like_nginx_sizes() {
        assert_eq!(parse_size("8k"), Ok(8192));
        assert_eq!(parse_size("8KiB"), Ok(8192));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("12x").is_err());
        assert!(parse_size("k").is_err());
        assert!(parse_size("99999999999g").is_err());
    }
}
