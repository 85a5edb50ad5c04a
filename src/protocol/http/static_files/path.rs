//! Step 1 of the pipeline: turn the request's percent-encoded path into a normalized list of
//! segments that cannot name anything above the document root, then find it on disk.
//!
//! The rules, and why:
//! - Percent-decode exactly once (RFC 3986 §2.4). `%252e` becomes the literal name `%2e`, which
//!   simply does not exist; it never becomes `.`.
//! - An encoded slash or backslash (`%2f`, `%5c`) is refused with 400 before decoding: it would
//!   let one segment smuggle a separator past the dot-segment rules (nginx merges them into
//!   separators instead; refusing is simpler to reason about and no link to a file needs them).
//!   A path passed on to a proxy upstream keeps them inside their segment instead
//!   ([`UrlPath::parse_keeping_encoded_separators`]): an API may well name `group%2Fproject`.
//! - A NUL or a backslash anywhere in the decoded path, and malformed escapes (`%zz`, a trailing
//!   `%`), are 400 too: no file name on a Unix root legitimately needs them in a URL.
//! - Dot segments are resolved as RFC 3986 §5.2.4 does, except that `..` at the root stays at the
//!   root (like nginx): `/../x` is `/x`. The result is relative, so joining it to the root can
//!   never climb out.
//! - Any segment that starts with `.` is a dotfile and hidden (404) unless `show_dotfiles`.
//! - On disk, the joined path is canonicalized and must still lie under the (canonical) root,
//!   otherwise a symlink leads out and the answer is 403 unless `follow_symlinks`. The canonical
//!   path is what gets opened, with `openat2(RESOLVE_NO_SYMLINKS)`: a writer inside the root
//!   who swaps a directory for a symlink between the check and the open gets a 403, not the
//!   file the link leads to. (On a kernel before 5.6 the open is plain and that race is open.
//!   A CGI program is still run by path, so the same race exists for a writer in its
//!   directory.)

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Why a request path is refused before the file system is consulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// Malformed or dangerous (400): the sentence says which.
    Bad(&'static str),
    /// A dotfile while dotfiles are hidden (404, as if absent).
    Hidden,
}

/// A request path after decoding and dot-segment resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlPath {
    /// Decoded segments, none empty, `.` or `..`; file names are bytes on Unix.
    pub segments: Vec<Vec<u8>>,
    /// The path named a directory explicitly (`/dir/`, `/dir/.`, `/`).
    pub trailing_slash: bool,
}

/// Bytes left as they are when a name is put back into a URL: RFC 3986 unreserved characters.
/// Everything else is escaped, so `#`, `?`, `%`, `,`, `[`, `]`, `:`, spaces and non-ASCII
/// bytes can never change what a link means.
const URL_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Bytes a forwarded path keeps as they are: RFC 3986 `pchar` (unreserved, sub-delims, `:`
/// and `@`), which is what a client may send unescaped and an upstream expects to see so.
const URL_PCHAR: &percent_encoding::AsciiSet = &URL_SEGMENT
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// Percent-encode one segment of a path passed on to an upstream: only what `pchar` does not
/// allow (`/`, `?`, `#`, `%`, `\\`, spaces, controls, non-ASCII) is escaped.
pub fn encode_pchar(segment: &[u8]) -> String {
    percent_encoding::percent_encode(segment, URL_PCHAR).to_string()
}

/// Percent-encode one path segment (a file name) for use in a URL.
pub fn encode_segment(name: &[u8]) -> String {
    percent_encoding::percent_encode(name, URL_SEGMENT).to_string()
}

impl UrlPath {
    /// Parse the request-target's path (still percent-encoded, starting with `/`).
    pub fn parse(raw: &str, show_dotfiles: bool) -> Result<UrlPath, PathError> {
        UrlPath::parse_with(raw, show_dotfiles, false)
    }

    /// As [`parse`](Self::parse), but an encoded slash or backslash (`%2F`, `%5C`) is kept
    /// inside its segment as a `/` or `\\` byte instead of refused: for a path that is passed
    /// on to an upstream (APIs name `group%2Fproject` or `@scope%2Fname`), never for one that
    /// names a file.
    pub fn parse_keeping_encoded_separators(
        raw: &str,
        show_dotfiles: bool,
    ) -> Result<UrlPath, PathError> {
        UrlPath::parse_with(raw, show_dotfiles, true)
    }

    fn parse_with(raw: &str, show_dotfiles: bool, keep: bool) -> Result<UrlPath, PathError> {
        if !raw.starts_with('/') {
            return Err(PathError::Bad("The request path must start with a slash."));
        }
        if raw.contains('\\') {
            return Err(PathError::Bad("The request path contains a backslash."));
        }
        let mut segments: Vec<Vec<u8>> = Vec::new();
        let mut trailing_slash = true;
        // Split first, then decode each segment: a separator that arrived encoded never splits.
        for raw_seg in raw.as_bytes().split(|&b| b == b'/').skip(1) {
            let seg = decode_once(raw_seg, keep)?;
            if seg.contains(&0) {
                return Err(PathError::Bad("The request path contains a NUL byte."));
            }
            // A kept separator must join names: `..%2F` or `%2F%2F` would be a dot segment
            // or an empty one to an upstream that decodes before it resolves (many do), and
            // could climb out of the path it is given.
            let parts = || seg.split(|&b| b == b'/' || b == b'\\');
            if keep && parts().count() > 1 && parts().any(|p| matches!(p, b"" | b"." | b"..")) {
                return Err(PathError::Bad(
                    "The request path hides a dot segment or an empty one behind an encoded slash.",
                ));
            }
            match &seg[..] {
                b"" | b"." => trailing_slash = true,
                b".." => {
                    // At the root, `..` has nowhere to go and stays put (RFC 3986 §5.2.4 and
                    // nginx agree).
                    segments.pop();
                    trailing_slash = true;
                }
                _ => {
                    segments.push(seg);
                    trailing_slash = false;
                }
            }
        }
        if !show_dotfiles && segments.iter().any(|s| s.first() == Some(&b'.')) {
            return Err(PathError::Hidden);
        }
        Ok(UrlPath {
            segments,
            trailing_slash,
        })
    }

    /// A segment holds a separator that arrived encoded (only after
    /// [`parse_keeping_encoded_separators`](Self::parse_keeping_encoded_separators)).
    pub fn has_encoded_separator(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.iter().any(|&b| b == b'/' || b == b'\\'))
    }

    /// The path relative to the root (empty for the root itself).
    pub fn relative(&self) -> PathBuf {
        self.segments.iter().map(|s| OsStr::from_bytes(s)).collect()
    }

    /// The normalized path, percent-encoded, always with exactly one leading slash (so a
    /// `Location` built from it can never be read as `//other-host/`).
    pub fn encoded(&self) -> String {
        let mut out = String::from("/");
        for (i, s) in self.segments.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.push_str(&encode_segment(s));
        }
        out
    }

    /// The normalized path as text (lossy for names that are not UTF-8): for titles and for
    /// matching `cache_control` globs.
    pub fn display(&self) -> String {
        let mut out = String::from("/");
        for (i, s) in self.segments.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.push_str(&String::from_utf8_lossy(s));
        }
        out
    }

    /// This path with one more segment (an index file inside a directory).
    pub fn child(&self, name: &str) -> UrlPath {
        let mut segments = self.segments.clone();
        segments.push(name.as_bytes().to_vec());
        UrlPath {
            segments,
            trailing_slash: false,
        }
    }

    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }
}

/// Strict single percent-decoding: `%` must be followed by two hex digits; `%2f` and `%5c`
/// (either case) are refused because they would hide a separator inside a segment.
fn decode_once(raw: &[u8], keep_separators: bool) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(h), Some(l)) = (
            raw.get(i + 1).and_then(|c| hex(*c)),
            raw.get(i + 2).and_then(|c| hex(*c)),
        ) else {
            return Err(PathError::Bad(
                "The request path has a malformed percent-escape.",
            ));
        };
        let v = h << 4 | l;
        if (v == b'/' || v == b'\\') && !keep_separators {
            return Err(PathError::Bad(
                "The request path contains an encoded slash or backslash.",
            ));
        }
        out.push(v);
        i += 3;
    }
    Ok(out)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Why a normalized path has no servable target on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Nothing there (or a file used as a directory): 404.
    NotFound,
    /// Exists but may not be served (permissions, or a symlink out of the root): 403.
    Forbidden,
    /// Reached through a symlink to a dotfile while dotfiles are hidden: 404.
    Hidden,
    /// The server is out of descriptors or memory right now: 503, never a false 404.
    Busy,
}

/// Find `rel` under `root` (which must already be canonical): the canonical path to open.
pub fn locate(
    root: &Path,
    rel: &Path,
    follow_symlinks: bool,
    show_dotfiles: bool,
) -> Result<PathBuf, Refusal> {
    let canon = match std::fs::canonicalize(root.join(rel)) {
        Ok(p) => p,
        Err(e) => {
            return Err(match e.kind() {
                io::ErrorKind::PermissionDenied => Refusal::Forbidden,
                _ => Refusal::NotFound,
            })
        }
    };
    match canon.strip_prefix(root) {
        Ok(inside) => {
            // A symlink inside the root may point at a dotfile (`cfg -> .env`): the hidden
            // rule is about what is served, not only about how it was named.
            let hidden = inside
                .components()
                .any(|c| matches!(c, Component::Normal(n) if n.as_bytes().first() == Some(&b'.')));
            if hidden && !show_dotfiles {
                return Err(Refusal::Hidden);
            }
            Ok(canon)
        }
        Err(_) if follow_symlinks => Ok(canon),
        Err(_) => Err(Refusal::Forbidden),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> (String, bool) {
        let p = UrlPath::parse(raw, false).unwrap_or_else(|e| panic!("{raw}: {e:?}"));
        (p.display(), p.trailing_slash)
    }

    #[test]
    fn plain_paths_normalize_as_expected() {
        let table: &[(&str, &str, bool)] = &[
            ("/", "/", true),
            ("/a", "/a", false),
            ("/a/", "/a", true),
            ("//a//b", "/a/b", false),
            ("/a/./b", "/a/b", false),
            ("/a/b/..", "/a", true),
            ("/a/b/../c", "/a/c", false),
            ("/a/.", "/a", true),
            ("/a%20b", "/a b", false),
            ("/%E2%98%83", "/\u{2603}", false),
            ("/caf%c3%a9.txt", "/caf\u{e9}.txt", false),
            ("/a+b", "/a+b", false),
            ("/100%25", "/100%", false),
        ];
        for (raw, want, slash) in table {
            assert_eq!(ok(raw), (want.to_string(), *slash), "{raw}");
        }
    }

    /// Every form in the traversal corpus (which the integration tests also send to a running
    /// server) tries to climb above the root. Each must either be refused or resolve to a path
    /// that stays under it (which, being relative with no `..`, it always does).
    const TRAVERSAL: &str = include_str!("../../../../tests/traversal.txt");

    #[test]
    fn the_traversal_corpus_never_climbs_above_the_root() {
        assert!(TRAVERSAL.lines().count() >= 30);
        // Also the root itself by `..` (RFC 3986 §5.2.4 stops at the root), which a server
        // answers with the root and the shared corpus therefore leaves out.
        for raw in TRAVERSAL.lines().chain(["/..", "/../"]) {
            for show in [false, true] {
                match UrlPath::parse(raw, show) {
                    Err(_) => {}
                    Ok(p) => {
                        let rel = p.relative();
                        assert!(
                            rel.components().all(|c| matches!(c, Component::Normal(_))),
                            "{raw} resolved to {rel:?}"
                        );
                        for s in &p.segments {
                            assert!(!s.contains(&b'/') && !s.contains(&b'\\') && !s.contains(&0));
                            assert!(s != b".." && s != b"." && !s.is_empty());
                        }
                    }
                }
            }
        }
    }

    /// Every path of up to four pieces drawn from seventeen dangerous atoms (about 88 000):
    /// whatever parses must be a plain relative path, with no dotfile unless they are shown.
    #[test]
    fn every_combination_of_dangerous_atoms_stays_under_the_root() {
        const ATOMS: &[&str] = &[
            "/", "..", ".", "%2e", "%2E%2e", "%2f", "%5c", "\\", "%00", "%25", "%252e", "a", "%",
            ".a", "%c0%ae", "//", ";",
        ];
        let mut stack = vec![(String::from("/"), 0)];
        let mut checked = 0;
        while let Some((p, depth)) = stack.pop() {
            for show in [false, true] {
                if let Ok(u) = UrlPath::parse(&p, show) {
                    assert!(
                        u.relative()
                            .components()
                            .all(|c| matches!(c, Component::Normal(_))),
                        "{p:?}"
                    );
                    for s in &u.segments {
                        assert!(!s.is_empty() && s != b"." && s != b"..", "{p:?}");
                        assert!(!s.iter().any(|b| matches!(b, b'/' | b'\\' | 0)), "{p:?}");
                        assert!(show || s[0] != b'.', "{p:?} shows a dotfile");
                    }
                }
            }
            checked += 1;
            if depth < 4 {
                for a in ATOMS {
                    stack.push((format!("{p}{a}"), depth + 1));
                }
            }
        }
        assert!(checked > 80_000, "{checked}");
    }

    #[test]
    fn dot_dot_at_the_root_stays_at_the_root() {
        assert_eq!(ok("/../x"), ("/x".into(), false));
        assert_eq!(ok("/%2e%2e/x"), ("/x".into(), false));
        assert_eq!(ok("/.."), ("/".into(), true));
    }

    #[test]
    fn dangerous_bytes_and_bad_escapes_are_bad_requests() {
        for raw in [
            "/a%2fb", "/a%2Fb", "/a%5cb", "/a\\b", "/a%00", "/%zz", "/%", "/%4", "x", "",
        ] {
            assert!(
                matches!(UrlPath::parse(raw, true), Err(PathError::Bad(_))),
                "{raw}"
            );
        }
    }

    #[test]
    fn double_encoding_decodes_only_once() {
        assert_eq!(ok("/%252e%252e/x"), ("/%2e%2e/x".into(), false));
        assert_eq!(ok("/%2525"), ("/%25".into(), false));
    }

    #[test]
    fn dotfiles_are_hidden_unless_shown() {
        for raw in ["/.env", "/a/.git/config", "/.%2fx", "/%2egit/HEAD", "/..."] {
            let r = UrlPath::parse(raw, false);
            assert!(r.is_err(), "{raw}");
        }
        assert!(UrlPath::parse("/.env", true).is_ok());
        // Resolved away before the rule applies: `/a/.` is `/a`.
        assert!(UrlPath::parse("/a/./b", false).is_ok());
    }

    #[test]
    fn encoded_paths_escape_everything_but_unreserved_and_keep_one_leading_slash() {
        let p = UrlPath::parse("//evil.example/a%20b%23%3F%25,[]%C3%A9", false).unwrap();
        assert_eq!(p.encoded(), "/evil.example/a%20b%23%3F%25%2C%5B%5D%C3%A9");
        assert_eq!(UrlPath::parse("/", false).unwrap().encoded(), "/");
    }
}
