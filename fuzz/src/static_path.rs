//! `static_path`: any request path through the static-file resolver
//! (`tincan::protocol::http::static_files::path`).
//!
//! Properties:
//! 1. `UrlPath::parse` never panics;
//! 2. a parsed path is a plain relative path: every component of `relative()` is a normal name
//!    (no `..`, no root, no prefix), no segment is empty, `.` or `..`, and none holds `/`, `\`
//!    or NUL; with dotfiles hidden, no segment starts with `.`;
//! 3. `encoded()` starts with exactly one slash and parses back to the same segments (a
//!    `Location` or a listing link names the same file);
//! 4. `locate` against a small tree with symlinks out of the root, into it, to a dotfile and in
//!    a loop: without `follow_symlinks` a located file is always under the canonical root, and
//!    with dotfiles hidden it never has a dot component below the root.

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use tincan::protocol::http::static_files::path::{locate, UrlPath};

use crate::{byte, spell, Unstructured};

/// Pieces of paths that attacks are made of, for inputs spelled from atoms.
const ATOMS: &[&str] = &[
    "/", ".", "..", "%2e", "%2E", "%2f", "%5c", "%00", "%25", "%", "a", "\\", "%c0%ae", ";", "~",
    "%ff", "b.txt", "in", "out", "up", "cfg", "loop", ".hidden", "%2e%2e", "//", "%41", "\u{e9}",
    "?", "#", " ",
];

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let flags = byte(&mut u);
    let rest = u.take_rest();
    let mut raw = if flags & 4 != 0 {
        spell(rest, ATOMS)
    } else {
        String::from_utf8_lossy(rest).into_owned()
    };
    if flags & 2 != 0 {
        raw.insert(0, '/');
    }
    check(&raw, flags & 1 != 0, flags & 8 != 0);
}

/// All the properties for one path; panics on a violation.
pub fn check(raw: &str, show_dotfiles: bool, touch_disk: bool) {
    let Ok(p) = UrlPath::parse(raw, show_dotfiles) else {
        return;
    };
    let rel = p.relative();
    assert!(
        rel.components().all(|c| matches!(c, Component::Normal(_))),
        "{raw:?} resolved to {rel:?}"
    );
    for s in &p.segments {
        assert!(
            !s.is_empty() && s != b"." && s != b"..",
            "{raw:?}: segment {s:?}"
        );
        assert!(
            !s.iter().any(|b| matches!(b, b'/' | b'\\' | 0)),
            "{raw:?}: segment {s:?} holds a separator or NUL"
        );
        assert!(
            show_dotfiles || s[0] != b'.',
            "{raw:?}: dotfile segment {s:?} while hidden"
        );
    }
    let enc = p.encoded();
    assert!(
        enc.starts_with('/') && !enc.starts_with("//"),
        "{raw:?} encoded as {enc:?}"
    );
    match UrlPath::parse(&enc, show_dotfiles) {
        Ok(back) => assert_eq!(back.segments, p.segments, "{raw:?} -> {enc:?} round trip"),
        Err(e) => panic!("{raw:?} encoded as {enc:?}, which does not parse back: {e:?}"),
    }
    let _ = p.display();
    if touch_disk {
        let root = fixture();
        for follow in [false, true] {
            if let Ok(found) = locate(root, &rel, follow, show_dotfiles) {
                if follow {
                    continue;
                }
                let inside = found
                    .strip_prefix(root)
                    .unwrap_or_else(|_| panic!("{raw:?} located {found:?} outside {root:?}"));
                assert!(
                    show_dotfiles
                        || !inside.components().any(|c| {
                            matches!(c, Component::Normal(n) if n.as_encoded_bytes().first() == Some(&b'.'))
                        }),
                    "{raw:?} located the dotfile {found:?}"
                );
            }
        }
    }
}

/// A document root shared by every run of this process (created once, idempotently, under the
/// temporary directory), canonical as the handler keeps it:
///
/// ```text
/// root/a/b.txt
/// root/.hidden
/// root/in   -> a              (a symlink that stays inside)
/// root/out  -> ..             (a symlink that leads out of the root)
/// root/a/up -> ../..          (out, from a subdirectory)
/// root/cfg  -> .hidden        (a symlink to a dotfile)
/// root/loop -> loop           (a loop: canonicalize fails)
/// ```
pub fn fixture() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = std::env::temp_dir().join("tincan-fuzz-static-root");
        let root = base.join("root");
        let mk = |r: std::io::Result<()>| match r {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("cannot build the fuzz fixture under {base:?}: {e}"),
        };
        mk(std::fs::create_dir_all(root.join("a")));
        mk(std::fs::write(root.join("a/b.txt"), b"b"));
        mk(std::fs::write(root.join(".hidden"), b"secret"));
        mk(std::fs::write(base.join("secret.txt"), b"outside"));
        let link = |target: &str, name: &str| {
            mk(std::os::unix::fs::symlink(target, root.join(name)));
        };
        link("a", "in");
        link("..", "out");
        link("../..", "a/up");
        link(".hidden", "cfg");
        link("loop", "loop");
        std::fs::canonicalize(&root).expect("the fixture root exists")
    })
}
