//! `tincan.toml`: every `tincan serve` flag as a key, so a deployment needs no long command line.
//! Keys are the flag names with `-` written `_`; repeatable flags take arrays; flags given on the
//! command line override the file. Unknown keys are refused with the key named and the nearest
//! one suggested (a typo must not silently fall back to a default); a value of the wrong type
//! names its key. `examples/tincan.toml` documents every key.
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
            Size::Text(t) => crate::units::size(t),
        }
    }
}

/// The `http2` key: a boolean, or `"on"`, `"off"`, `"only"` as the flag takes.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Http2Key {
    Bool(bool),
    Text(String),
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

    // Shared server flags (`crate::flags::ServerArgs`).
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
    /// `combined` or `json` (`--access-log-format`).
    #[serde(default, deserialize_with = "named")]
    pub access_log_format: Option<crate::protocol::http::access_log::LogFormat>,
    /// `false` hides the `Server` header (as nginx's `server_tokens`).
    pub server_tokens: Option<bool>,
    /// The flag's spelling, accepted too: `hide_server = true`.
    pub hide_server: Option<bool>,
    /// Seconds of `Strict-Transport-Security` (`--hsts`; needs TLS).
    pub hsts: Option<u64>,
    /// Hand TLS records to the kernel where it offers TLS (`--kernel-tls`; default true).
    pub kernel_tls: Option<bool>,
    /// HTTP/2 on, off or alone (`--http2`: `true`, `false`, `"on"`, `"off"`, `"only"`), and
    /// its concurrent streams (`--h2-max-streams`).
    pub http2: Option<Http2Key>,
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
    /// Folders offered as `.tar.gz` and `.zip` (`--archives on`).
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

    /// Parse config text; the error is `line N: what is wrong`, naming the key. Three passes,
    /// so that each mistake gets its own sentence: is it TOML at all, is every key one we
    /// know (else the nearest one), does every value have its key's type.
    pub fn parse(text: &str) -> std::result::Result<Config, String> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let at = |span: Option<std::ops::Range<usize>>, msg: String| match span {
            Some(s) => format!("line {}: {msg}", line_of(s.start)),
            None => msg,
        };
        let message = |e: &toml::de::Error| {
            plain_words(e.message().trim_end_matches('\n')).replace('\n', " ")
        };
        type Spanned<T> = toml::Spanned<T>;
        let entries: Vec<(Spanned<String>, Spanned<toml::Value>)> = toml::from_str::<
            std::collections::BTreeMap<Spanned<String>, Spanned<toml::Value>>,
        >(text)
        .map_err(|e| {
            at(
                e.span(),
                format!("this is not a TOML file ({})", message(&e)),
            )
        })?
        .into_iter()
        .collect();
        let keys = keys();
        for (k, v) in &entries {
            if !keys.contains(&k.get_ref().as_str()) {
                return Err(at(
                    Some(k.span()),
                    unknown_key(k.get_ref(), v.get_ref(), keys),
                ));
            }
        }
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let msg = message(&e);
            let key = e.span().and_then(|s| {
                (entries.iter())
                    .find(|(_, v)| v.span().contains(&s.start))
                    .map(|(k, _)| k.get_ref().clone())
            });
            match key {
                Some(key) => at(e.span(), wrong_type(&key, &msg)),
                None => at(e.span(), msg),
            }
        })
    }
}

/// The keys [`Config`] takes, as serde knows them (so they cannot drift from the struct).
pub fn keys() -> &'static [&'static str] {
    use serde::de::{self, Visitor};
    /// A deserializer that only records the field names a struct asks for.
    struct Fields<'a>(&'a std::cell::Cell<&'static [&'static str]>);
    impl<'de> serde::Deserializer<'de> for Fields<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(
            self,
            _: V,
        ) -> std::result::Result<V::Value, Self::Error> {
            Err(de::Error::custom("only the field names are asked for"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> std::result::Result<V::Value, Self::Error> {
            self.0.set(fields);
            Err(de::Error::custom("only the field names are asked for"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    static KEYS: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let cell = std::cell::Cell::new(&[][..]);
        let _ = Config::deserialize(Fields(&cell));
        cell.get()
    })
}

/// The sentence for a key `Config` does not have: the flag spelling (`max-body`), a near miss
/// (`max_bdy`), a section (`[serve]`), or none of these.
fn unknown_key(key: &str, value: &toml::Value, keys: &[&str]) -> String {
    let underscored = key.replace('-', "_");
    if underscored != key && keys.contains(&underscored.as_str()) {
        return format!(
            "`{key}` is the flag's spelling; keys are written with `_`: `{underscored}`"
        );
    }
    if value.is_table() {
        return format!(
            "unknown section [{key}]; tincan.toml has no sections: write its keys at the top"
        );
    }
    // Jaro similarity, as clap's "a similar argument exists", but stricter: `foo` is not a
    // misspelt `follow_symlinks`.
    let nearest = keys
        .iter()
        .map(|k| (strsim::jaro(&underscored, k), *k))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .filter(|(score, _)| *score > 0.8);
    if let Some((_, k)) = nearest {
        return format!("unknown key `{key}`; did you mean `{k}`?");
    }
    format!(
        "unknown key `{key}`; the keys are the `tincan serve` flags with `-` written `_` \
         (see tincan serve --help)"
    )
}

/// A value of the wrong type, said with its key: serde's "invalid type: string \"5s\",
/// expected a number (of seconds)" becomes "`head_timeout` takes a number (of seconds), not
/// the string \"5s\"".
fn wrong_type(key: &str, msg: &str) -> String {
    let found_expected = msg
        .strip_prefix("invalid type: ")
        .or_else(|| msg.strip_prefix("invalid value: "))
        .and_then(|r| r.split_once(", expected "));
    if let Some((found, expected)) = found_expected {
        return format!("`{key}` takes {expected}, not the {found}");
    }
    if let Some(expected) = msg.strip_prefix("expected ") {
        return format!("`{key}` takes {expected}");
    }
    format!("`{key}`: {msg}")
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

impl Named for crate::protocol::http::access_log::LogFormat {
    const WHAT: &'static str = "log format";
    fn from_name(name: &str) -> Option<Self> {
        Self::from_name(name)
    }
    fn names() -> Vec<&'static str> {
        Self::ALL.map(Self::name).to_vec()
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
    fn unknown_keys_are_refused_by_name_and_line_with_the_key_meant() {
        for (text, want) in [
            (
                "listen = \":8000\"\nmax_bdy = 5\n",
                "line 2: unknown key `max_bdy`; did you mean `max_body`?",
            ),
            (
                "max-body = \"5m\"\n",
                "line 1: `max-body` is the flag's spelling; keys are written with `_`: `max_body`",
            ),
            (
                "\n\n[serve]\nlisten = \":1\"\n",
                "line 3: unknown section [serve]; tincan.toml has no sections",
            ),
            (
                "foo = 1\n",
                "line 1: unknown key `foo`; the keys are the `tincan serve` flags",
            ),
        ] {
            let err = Config::parse(text).unwrap_err();
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_wrong_type_names_its_key_and_a_file_that_is_not_toml_says_so() {
        for (text, want) in [
            (
                "listen = \":1\"\nhead_timeout = \"5s\"\n",
                "line 2: `head_timeout` takes a number (of seconds), not the string \"5s\"",
            ),
            (
                "workers = -1\n",
                "line 1: `workers` takes a whole number, 0 or more, not the integer `-1`",
            ),
            (
                "listen = [\n  \":1\",\n  2,\n]\n",
                "`listen` takes a string or a list of strings",
            ),
            (
                "model = \"fast\"\n",
                "line 1: `model`: `fast` is not a model",
            ),
            ("<html>\n", "line 1: this is not a TOML file ("),
            (
                "listen = \":1\"\nlisten = \":2\"\n",
                "line 2: this is not a TOML file (",
            ),
        ] {
            let err = Config::parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn the_key_list_is_the_structs_own() {
        let keys = keys();
        for k in [
            "root",
            "listen",
            "max_body",
            "tunnel_idle_timeout",
            "archives",
        ] {
            assert!(keys.contains(&k), "{k}: {keys:?}");
        }
        // Every key is accepted alone (none is refused as unknown).
        for k in keys {
            let err = Config::parse(&format!("{k} = {{}}\n")).unwrap_err();
            assert!(!err.contains("unknown"), "{k}: {err}");
        }
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
}
