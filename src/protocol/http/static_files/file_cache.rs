//! The open-file cache: a finished `200` answer per request path, kept so that a repeated plain
//! `GET` of the same file costs no `open`, `stat`, `readlink` or `close` and no allocation.
//!
//! What is kept, per raw (still percent-encoded) request path: the handler's header lines
//! already formatted (`ETag`, `Last-Modified`, `Content-Type`, ...), and the body: the file's
//! bytes for files up to [`INLINE_MAX`] (they leave in the same `writev` as the head), or the
//! open file for larger ones (sent with `sendfile`). The descriptors it holds are bounded
//! (`--file-cache-fds`; by default a quarter of the process's descriptor limit, at most
//! [`FD_ENTRIES_MAX`]), so the cache cannot take the descriptors connections and the files
//! being sent need.
//!
//! Freshness, as nginx's `open_file_cache_valid 1s`: an entry is used for at most
//! [`VALID_FOR`] after the full lookup (path checks, symlink rules, `open`, `fstat`) that built
//! it; then the next request takes the full path again and rebuilds it (reusing the bytes when
//! device, inode, size and mtime are unchanged). So a changed file is served changed within a
//! second, and every rule of the handler still applies at least once a second.
//!
//! An entry that holds a descriptor is checked with one `fstat` on every hit: a file
//! overwritten in place keeps its inode, and the descriptor would read the new bytes under the
//! old length and ETag. A change sends the request down the full path.
//!
//! Only plain requests use it (GET or HEAD; no `Range`, no `If-*`; no `Accept-Encoding` unless
//! no other coding of that file could be chosen; an `Accept` only if it allows the type), so the
//! answer is byte for byte what the full path gives. Memory is bounded by a byte budget
//! (`--file-cache`, `file_cache` in tincan.toml; 0 turns it off): when full, expired entries are
//! swept (at most once per [`VALID_FOR`]) and new ones are not added until room frees.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::http::message::{Body, Request, Response, Text};

/// How long an entry is trusted without a fresh lookup.
pub const VALID_FOR: Duration = Duration::from_secs(1);

/// Files up to this size are kept in memory; larger ones as an open descriptor.
pub const INLINE_MAX: u64 = 64 * 1024;

/// By default, at most this many entries hold an open descriptor (large files)...
pub const FD_ENTRIES_MAX: usize = 1024;

/// ...and at most this share of the descriptor limit (1/4).
const FD_SHARE: u64 = 4;

/// The descriptors the cache holds by default with a limit of `fd_limit`.
pub fn default_fds(fd_limit: u64) -> usize {
    usize::try_from(fd_limit / FD_SHARE).map_or(FD_ENTRIES_MAX, |n| n.min(FD_ENTRIES_MAX))
}

/// The default budget (`--file-cache`).
pub const DEFAULT_BUDGET: u64 = 64 * 1024 * 1024;

/// Bytes charged per entry beyond its key, head and inline body (map slot, Arc, bookkeeping).
const ENTRY_OVERHEAD: usize = 256;

/// What identifies a file's contents for reuse across a rebuild.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl FileId {
    /// The identity of the file `meta` describes.
    pub fn of(meta: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// A cached body.
#[derive(Debug)]
enum Stored {
    Inline(Bytes),
    Open(Arc<File>, u64),
}

/// One cached answer.
#[derive(Debug)]
struct Entry {
    /// The handler's header lines, each `Name: value\r\n`.
    head: Bytes,
    body: Stored,
    content_type: Box<str>,
    /// No `Accept-Encoding` could select anything but this identity answer.
    any_encoding: bool,
    id: FileId,
    built: Instant,
    cost: usize,
}

struct Inner {
    map: HashMap<Box<str>, Arc<Entry>>,
    used: usize,
    fds: usize,
    last_sweep: Option<Instant>,
}

/// The cache; shared by every worker thread.
pub struct FileCache {
    budget: usize,
    /// Descriptors it may hold: as configured, or else [`default_fds`] of the limit in force
    /// when the first one is kept (the server raises the limit after the cache is made).
    fd_cap: OnceLock<usize>,
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for FileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCache")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// What the full path hands over to be cached.
pub struct Fill<'a> {
    pub file: &'a Arc<File>,
    pub id: FileId,
    /// The answer's header fields (all set by the handler; none owned by the session).
    pub headers: &'a [(Text, Text)],
    pub content_type: &'a str,
    pub any_encoding: bool,
}

impl FileCache {
    /// A cache holding at most `budget` bytes (0 disables it) and `fds` open descriptors
    /// (`None`: [`default_fds`]).
    pub fn new(budget: u64, fds: Option<usize>) -> FileCache {
        let fd_cap = OnceLock::new();
        if let Some(n) = fds {
            let _ = fd_cap.set(n);
        }
        FileCache {
            budget: usize::try_from(budget).unwrap_or(usize::MAX),
            fd_cap,
            inner: RwLock::new(Inner {
                map: HashMap::new(),
                used: 0,
                fds: 0,
                last_sweep: None,
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    /// Is `req` a plain request whose answer depends only on its path (and on the entry's
    /// content type and encodings, checked on a hit)? `Accept`'s value is returned for that
    /// check. Such requests may be answered from, and fill, the cache.
    pub fn plain<'r>(req: &Request<'r>) -> Option<Plain<'r>> {
        if req.method != "GET" && req.method != "HEAD" {
            return None;
        }
        let mut plain = Plain::default();
        for h in req.headers {
            let n = h.name;
            // `If-*` and `Range` change the answer (RFC 9110 §13, §14).
            if (n.len() > 3 && n.as_bytes()[..3].eq_ignore_ascii_case(b"if-"))
                || n.eq_ignore_ascii_case("range")
            {
                return None;
            }
            if n.eq_ignore_ascii_case("accept-encoding") {
                plain.encoding = true;
            } else if n.eq_ignore_ascii_case("accept") {
                if plain.accept.is_some() {
                    return None; // several lines: the full path joins them
                }
                plain.accept = Some(std::str::from_utf8(h.value).ok()?);
            }
        }
        Some(plain)
    }

    /// The cached answer for `req`, if there is a fresh one it may use.
    pub fn get(&self, req: &Request<'_>, now: Instant) -> Option<Response> {
        if !self.enabled() {
            return None;
        }
        let plain = Self::plain(req)?;
        let entry = {
            let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
            Arc::clone(inner.map.get(req.path)?)
        };
        if now.saturating_duration_since(entry.built) >= VALID_FOR
            || (plain.encoding && !entry.any_encoding)
            || !accepts(plain.accept, &entry.content_type)
        {
            return None;
        }
        // A descriptor entry's head (length, ETag) was made for the contents it had then. A
        // file overwritten in place (`cp`, `rsync --inplace`) keeps its inode, so the open
        // descriptor now reads other bytes: one `fstat` (no path lookup) tells, and a change
        // takes the full path. (An inline entry holds its own copy of the bytes, which stay
        // consistent with its head.)
        if let Stored::Open(f, _) = &entry.body {
            if !f.metadata().is_ok_and(|m| FileId::of(&m) == entry.id) {
                return None;
            }
        }
        let mut r = Response::new(200);
        r.raw_headers = Some(entry.head.clone());
        r.body = match &entry.body {
            Stored::Inline(b) => Body::Bytes(b.clone()),
            Stored::Open(f, len) => Body::File {
                file: Arc::clone(f),
                offset: 0,
                len: *len,
            },
        };
        Some(r)
    }

    /// Keep the answer the full path just built for `path`.
    pub fn put(&self, path: &str, fill: Fill<'_>, now: Instant) {
        if !self.enabled() {
            return;
        }
        let size = fill.id.size;
        // Reuse the bytes of an unchanged file rather than reading it again.
        let previous = {
            let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
            inner.map.get(path).cloned()
        };
        let body = match previous.as_deref() {
            Some(Entry {
                body: Stored::Inline(b),
                id,
                ..
            }) if *id == fill.id => Stored::Inline(b.clone()),
            _ if size <= INLINE_MAX => match read_all(fill.file, size) {
                Some(b) => Stored::Inline(b),
                None => return,
            },
            _ => Stored::Open(Arc::clone(fill.file), size),
        };
        let mut head = Vec::with_capacity(256);
        for (n, v) in fill.headers {
            head.extend_from_slice(n.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(v.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        let inline = match &body {
            Stored::Inline(b) => b.len(),
            Stored::Open(..) => 0,
        };
        let cost = path.len() + head.len() + fill.content_type.len() + inline + ENTRY_OVERHEAD;
        let entry = Arc::new(Entry {
            head: Bytes::from(head),
            body,
            content_type: fill.content_type.into(),
            any_encoding: fill.any_encoding,
            id: fill.id,
            built: now,
            cost,
        });
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = inner.map.remove(path) {
            inner.forget(&old);
        }
        let is_fd = matches!(entry.body, Stored::Open(..));
        let fd_cap = if is_fd { self.fd_cap() } else { usize::MAX };
        if inner.used + cost > self.budget || (is_fd && inner.fds >= fd_cap) {
            let due = inner
                .last_sweep
                .is_none_or(|t| now.saturating_duration_since(t) >= VALID_FOR);
            if !due {
                return;
            }
            inner.last_sweep = Some(now);
            let expired: Vec<Box<str>> = inner
                .map
                .iter()
                .filter(|(_, e)| now.saturating_duration_since(e.built) >= VALID_FOR)
                .map(|(k, _)| k.clone())
                .collect();
            for k in expired {
                if let Some(old) = inner.map.remove(&k) {
                    inner.forget(&old);
                }
            }
            if inner.used + cost > self.budget || (is_fd && inner.fds >= fd_cap) {
                return;
            }
        }
        inner.used += cost;
        inner.fds += usize::from(is_fd);
        inner.map.insert(path.into(), entry);
    }

    /// Bytes the cache is charged for now (tests).
    pub fn used(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).used
    }

    /// Let go of every open descriptor it holds (the process is out of them); files being sent
    /// keep theirs until they are sent.
    pub fn shed(&self) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner.fds == 0 {
            return;
        }
        let open: Vec<Box<str>> = inner
            .map
            .iter()
            .filter(|(_, e)| matches!(e.body, Stored::Open(..)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &open {
            if let Some(old) = inner.map.remove(k) {
                inner.forget(&old);
            }
        }
        tracing::warn!(
            "out of file descriptors: the file cache closed the {} it held open",
            open.len()
        );
    }

    /// Open descriptors the cache holds now (tests).
    pub fn held_fds(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).fds
    }

    /// The most descriptors it may hold.
    fn fd_cap(&self) -> usize {
        *self.fd_cap.get_or_init(|| {
            default_fds(crate::sys::fd_limit().unwrap_or(FD_ENTRIES_MAX as u64 * FD_SHARE))
        })
    }
}

impl Inner {
    fn forget(&mut self, e: &Entry) {
        self.used -= e.cost;
        self.fds -= usize::from(matches!(e.body, Stored::Open(..)));
    }
}

/// The parts of a plain request the cache checks on a hit.
#[derive(Default)]
pub struct Plain<'r> {
    pub accept: Option<&'r str>,
    pub encoding: bool,
}

/// [`super::mime::acceptable`], without parsing (and allocating) for the usual `*/*`.
fn accepts(accept: Option<&str>, content_type: &str) -> bool {
    match accept {
        None => true,
        Some(a) if a.trim() == "*/*" => true,
        a => super::mime::acceptable(a, content_type),
    }
}

/// Read the whole file (`size` bytes) from offset 0; `None` if it is shorter (it changed).
fn read_all(file: &File, size: u64) -> Option<Bytes> {
    use std::os::unix::fs::FileExt;
    let mut v = vec![0; usize::try_from(size).ok()?];
    file.read_exact_at(&mut v, 0).ok()?;
    Some(Bytes::from(v))
}
