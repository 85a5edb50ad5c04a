//! The static file handler behind `tincan serve`: a [`Handler`] that maps a request onto a
//! document root and answers with a file region, a listing, a redirect or an error. It never
//! touches a socket; the HTTP session frames what it returns.
//!
//! The pipeline, one step per request, in order:
//!
//! 0. **Method**: GET and HEAD are served; OPTIONS gets 204 with `Allow` whatever the path
//!    (including `*`); PUT under an `--upload` prefix writes a file ([`upload`]), and a
//!    multipart POST to a folder it covers writes the form's files ([`multipart`]); anything
//!    else 405 with `Allow`, before the path is looked at, as nginx does for static locations.
//! 1. **Path** ([`path`]): percent-decode once, refuse NUL, backslashes and encoded slashes
//!    (400), resolve dot segments without climbing above the root, hide dotfiles (404).
//! 2. **Locate** ([`path::locate`]): canonicalize under the root; a symlink leading out is 403
//!    unless `follow_symlinks`; a missing path gets the SPA `fallback` if set, else 404.
//! 3. **Directory**: `/dir` → 301 `/dir/` (query kept); `?download=tar.gz|zip` with `archives`
//!    streams the folder ([`archive`]); the first index file found is served; else a listing ([`listing`], HTML or JSON by `Accept`) if `listing`, else 403 (nginx).
//! 4. **File**: opened once (non-blocking, so a FIFO cannot hang a worker) and `fstat`ed, so size
//!    and mtime describe the very file that is sent; `Content-Type` ([`mime`]); 406 if `Accept`
//!    clearly excludes it.
//! 5. **Representation** ([`encoding`]): a precompressed sidecar, or gzip made on the fly for
//!    compressible types (cached), or the file itself; each with its own ETag, strong but for
//!    gzip made on the fly (weak, and whole: no ranges, as nginx).
//! 6. **Preconditions** ([`conditional`]): RFC 9110 §13.2.2 order, 304 or 412.
//! 7. **Ranges** ([`range`]): 206 (single or `multipart/byteranges`), 416, or the whole thing.
//!    Ranges apply to the selected representation (a sidecar's ranges are ranges of its
//!    coded bytes, consistent with its ETag, §14.1.1).
//! 8. **Headers**: `Cache-Control` by glob ([`cache`]), `Vary: Accept-Encoding` whenever the
//!    answer could have differed by coding, `Accept-Ranges`, `X-Content-Type-Options: nosniff`.
//! 9. **Error pages**: a configured page (`error_pages`) replaces the default body of an error
//!    answer; status and headers stay.

pub mod archive;
pub mod cache;
pub mod conditional;
pub mod encoding;
mod file;
pub mod file_cache;
pub mod listing;
pub mod mime;
pub mod multipart;
pub mod path;
pub mod range;
pub mod upload;

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::error::Result;
use crate::protocol::http::message::{
    error_response, Body, BodySink, BodyUse, Handler, Request, Response, Streamed,
};
use crate::protocol::Peer;
use crate::sys;

use cache::CacheRules;
use conditional::{Conditions, Outcome, Validators};
use encoding::{AcceptEncoding, CacheKey, Coding, GzipCache};
use file_cache::{FileCache, FileId, Fill};
use path::{locate, PathError, Refusal, UrlPath};
use range::{Content, RangeSet};

/// The methods a static path allows (RFC 9110 §10.2.1 `Allow`).
pub const ALLOW: &str = "GET, HEAD, OPTIONS";

/// The methods a path under an `--upload` prefix allows.
pub const ALLOW_UPLOAD: &str = "GET, HEAD, POST, PUT, OPTIONS";

/// How to serve a document root.
#[derive(Clone, Debug)]
pub struct StaticConfig {
    /// The document root (canonicalized by [`StaticFiles::new`]).
    pub root: PathBuf,
    /// Index files tried in order for a directory (`["index.html"]`).
    pub index: Vec<String>,
    /// List directories that have no index file (on by default, unlike nginx: a `tincan serve`
    /// of a folder is most often meant to be browsed).
    pub listing: bool,
    /// Serve and list names starting with `.`.
    pub show_dotfiles: bool,
    /// Serve symlinks whose target is outside the root.
    pub follow_symlinks: bool,
    /// `(glob, Cache-Control value)` rules matched against the URL path; the first match wins.
    pub cache_control: Vec<(String, String)>,
    /// Gzip compressible files on the fly (precompressed sidecars are served either way).
    pub compress: bool,
    /// `(status, URL path under the root)`: pages served as the body of those errors.
    pub error_pages: Vec<(u16, String)>,
    /// URL path of a file served (200) for paths that do not exist (single-page apps).
    pub fallback: Option<String>,
    /// Byte budget of the open-file cache ([`file_cache`]); 0 turns it off.
    pub file_cache: u64,
    /// Open descriptors the cache may hold (`None`: [`file_cache::default_fds`]).
    pub file_cache_fds: Option<usize>,
    /// Where `PUT` may write ([`upload`]); no prefixes: nowhere.
    pub upload: upload::UploadConfig,
    /// Offer each listed folder as a `.tar.gz` ([`archive`]).
    pub archives: bool,
}

impl Default for StaticConfig {
    fn default() -> StaticConfig {
        StaticConfig {
            root: PathBuf::from("."),
            index: vec!["index.html".to_string()],
            listing: true,
            show_dotfiles: false,
            follow_symlinks: false,
            cache_control: Vec::new(),
            compress: true,
            error_pages: Vec::new(),
            fallback: None,
            file_cache: file_cache::DEFAULT_BUDGET,
            file_cache_fds: None,
            upload: upload::UploadConfig::default(),
            archives: false,
        }
    }
}

/// Why a [`StaticConfig`] cannot be served. The messages name the setting's meaning, not a
/// flag: `tincan serve` words them with its own flags.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the document root {0} does not exist")]
    RootMissing(String),
    #[error(
        "the document root {root} cannot be used: {}",
        crate::error::plain(source)
    )]
    RootUnusable { root: String, source: io::Error },
    #[error("the document root {0} is not a directory")]
    RootNotDirectory(String),
    #[error("the index file name `{0}` must be a plain file name, without slashes")]
    IndexName(String),
    #[error("{0}: only 4xx and 5xx statuses have error pages")]
    ErrorPageStatus(u16),
    #[error("the error page `{0}` must be a URL path starting with /")]
    ErrorPagePath(String),
    #[error("the fallback `{0}` must be a URL path starting with /")]
    FallbackPath(String),
    #[error("the Cache-Control pattern `{0}` is not a valid glob ({1})")]
    CacheGlob(String, String),
    #[error("the Cache-Control value for `{0}` must be non-empty text without control characters")]
    CacheValue(String),
}

/// The static file [`Handler`].
#[derive(Debug)]
pub struct StaticFiles {
    cfg: StaticConfig,
    /// `cfg.root`, canonical: every served path must start with it.
    root: PathBuf,
    cache_rules: CacheRules,
    gzip: GzipCache,
    files: FileCache,
}

impl StaticFiles {
    /// Check the configuration and canonicalize the root.
    pub fn new(cfg: StaticConfig) -> std::result::Result<StaticFiles, ConfigError> {
        let shown = || cfg.root.display().to_string();
        let root = std::fs::canonicalize(&cfg.root).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ConfigError::RootMissing(shown()),
            _ => ConfigError::RootUnusable {
                root: shown(),
                source: e,
            },
        })?;
        if !root.is_dir() {
            return Err(ConfigError::RootNotDirectory(shown()));
        }
        for name in &cfg.index {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(ConfigError::IndexName(name.clone()));
            }
        }
        for (status, page) in &cfg.error_pages {
            if !(400..=599).contains(status) {
                return Err(ConfigError::ErrorPageStatus(*status));
            }
            if !page.starts_with('/') {
                return Err(ConfigError::ErrorPagePath(page.clone()));
            }
        }
        if let Some(f) = &cfg.fallback {
            if !f.starts_with('/') {
                return Err(ConfigError::FallbackPath(f.clone()));
            }
        }
        // A page that is not there yet is allowed (it may be deployed later), but said.
        let pages = cfg.error_pages.iter().map(|(_, p)| ("error page", p));
        for (what, page) in pages.chain(cfg.fallback.iter().map(|f| ("fallback page", f))) {
            if !root.join(page.trim_start_matches('/')).is_file() {
                tracing::warn!("the {what} {page} is not a file under the document root yet");
            }
        }
        let cache_rules = CacheRules::new(&cfg.cache_control)?;
        Ok(StaticFiles {
            root,
            cache_rules,
            gzip: GzipCache::new(encoding::GZIP_CACHE_BUDGET),
            files: FileCache::new(cfg.file_cache, cfg.file_cache_fds),
            cfg,
        })
    }

    /// The canonical document root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Steps 0 to 8.
    fn respond(&self, req: &Request<'_>) -> Response {
        // Step 0.
        match req.method {
            "GET" | "HEAD" => {}
            "OPTIONS" => return Response::new(204).header("Allow", self.allow(req)),
            // A PUT without a body (an empty file); one with a body went through `body_use`.
            "PUT" => {
                if let Some(begun) = self.upload(req) {
                    return match begun {
                        Ok(up) => Box::new(up).finish(),
                        Err(r) => r,
                    };
                }
                return error_response(405, "This path serves files: use GET or HEAD.")
                    .header("Allow", self.allow(req));
            }
            // A form with no body at all (one with a body went through `body_use`).
            "POST" => {
                return match self.form_upload(req) {
                    Some(Ok(form)) => Box::new(form).finish(),
                    Some(Err(r)) => r,
                    None => error_response(405, "This path serves files: use GET or HEAD.")
                        .header("Allow", self.allow(req)),
                }
            }
            _ => {
                return error_response(405, "This path serves files: use GET or HEAD.")
                    .header("Allow", ALLOW)
            }
        }
        // Step 1.
        let url = match UrlPath::parse(req.path, self.cfg.show_dotfiles) {
            Ok(u) => u,
            Err(PathError::Bad(why)) => return error_response(400, why),
            Err(PathError::Hidden) => return not_found(),
        };
        // Step 2.
        let (target, (file, meta)) = match self.locate_open(&url) {
            Ok(found) => found,
            Err(Refusal::NotFound) => return self.missing(req),
            Err(Refusal::Hidden) => return not_found(),
            Err(Refusal::Forbidden) => return forbidden(),
            Err(Refusal::Busy) => return self.busy(),
        };
        // Step 3.
        if meta.is_dir() {
            return self.directory(req, &url, &target);
        }
        if url.trailing_slash {
            // `/file.txt/` names a directory that is not there (nginx: 404, as open(2) would
            // say ENOTDIR); serving the file would also break its relative links.
            return self.missing(req);
        }
        if !meta.is_file() {
            // Devices, FIFOs, sockets: not documents.
            return forbidden();
        }
        // Steps 4 to 8.
        self.serve_file(req, &url, &target, file, &meta, true)
    }

    /// An upload to the request's path, if uploads are on and the path is under a prefix.
    fn upload(&self, req: &Request<'_>) -> Option<Result<upload::Upload, Response>> {
        if self.cfg.upload.prefixes.is_empty() {
            return None;
        }
        upload::begin(
            &self.root,
            &self.cfg.upload,
            req.path,
            self.cfg.show_dotfiles,
        )
    }

    /// Does `--upload` cover the files of the folder at `url`?
    fn takes_uploads(&self, url: &UrlPath) -> bool {
        !self.cfg.upload.prefixes.is_empty() && self.cfg.upload.covers(&url.child("file"))
    }

    /// The listing's upload form posting to the folder at the request's path: its parser, the
    /// refusal, or None when uploads do not cover it (the POST is then a 405).
    fn form_upload(&self, req: &Request<'_>) -> Option<Result<multipart::FormUpload, Response>> {
        let url = UrlPath::parse(req.path, self.cfg.show_dotfiles).ok()?;
        if !url.trailing_slash && !url.is_root() || !self.takes_uploads(&url) {
            return None;
        }
        // A page on another site may post a form here, and the browser would send the user's
        // password with it: a form from elsewhere (its Origin, RFC 6454) is refused.
        if let Some(origin) = req.header("origin") {
            let host = req.header("host").unwrap_or("");
            let from = origin.split_once("://").map_or("", |(_, h)| h);
            if !from.eq_ignore_ascii_case(host) {
                return Some(Err(error_response(
                    403,
                    "Uploads are taken from this server's own pages only.",
                )));
            }
        }
        let Some(boundary) = req.header("content-type").and_then(multipart::boundary) else {
            return Some(Err(error_response(
                415,
                "A folder takes uploads as multipart/form-data (the listing's form), or a PUT \
                 of each file.",
            )));
        };
        let mut folder = url.encoded();
        if !folder.ends_with('/') {
            folder.push('/');
        }
        Some(Ok(multipart::FormUpload::new(
            &self.root,
            &self.cfg.upload,
            self.cfg.show_dotfiles,
            folder,
            &boundary,
        )))
    }

    /// `Allow` for the request's path: PUT too under an upload prefix.
    fn allow(&self, req: &Request<'_>) -> &'static str {
        let under = !self.cfg.upload.prefixes.is_empty()
            && UrlPath::parse(req.path, true).is_ok_and(|u| self.cfg.upload.covers(&u));
        if under {
            ALLOW_UPLOAD
        } else {
            ALLOW
        }
    }

    fn locate(&self, url: &UrlPath) -> Result<PathBuf, Refusal> {
        locate(
            &self.root,
            &url.relative(),
            self.cfg.follow_symlinks,
            self.cfg.show_dotfiles,
        )
    }

    /// Steps 2 and 3's lookup: where the path leads, opened.
    fn locate_open(&self, url: &UrlPath) -> Result<(PathBuf, (File, Metadata)), Refusal> {
        let target = self.locate(url)?;
        let opened = open(&target, &self.root)?;
        Ok((target, opened))
    }

    /// Nothing at the path: the SPA fallback if configured, else 404.
    fn missing(&self, req: &Request<'_>) -> Response {
        let Some(fallback) = &self.cfg.fallback else {
            return not_found();
        };
        let Ok(url) = UrlPath::parse(fallback, true) else {
            return not_found();
        };
        match self.locate_open(&url) {
            Ok((target, (file, meta))) if meta.is_file() => {
                self.serve_file(req, &url, &target, file, &meta, false)
            }
            _ => not_found(),
        }
    }

    /// Step 3: redirect to the slash form, an index file, or the listing.
    fn directory(&self, req: &Request<'_>, url: &UrlPath, dir: &Path) -> Response {
        if !url.trailing_slash {
            // Built from the normalized path, never from the raw target: `//host/dir` must not
            // become a protocol-relative `Location` (an open redirect).
            let mut loc = url.encoded();
            loc.push('/');
            if let Some(q) = req
                .query
                .filter(|q| !q.bytes().any(|b| b.is_ascii_control()))
            {
                loc.push('?');
                // RFC 3986 §2.1: a URI is ASCII; raw UTF-8 from the request goes out encoded.
                for c in q.chars() {
                    if c.is_ascii() {
                        loc.push(c);
                    } else {
                        let mut b = [0; 4];
                        for byte in c.encode_utf8(&mut b).bytes() {
                            loc.push_str(&format!("%{byte:02X}"));
                        }
                    }
                }
            }
            return error_response(301, "This directory lives at the address with a slash.")
                .header("Location", loc);
        }
        let download = req.query.is_some_and(|q| {
            q.split('&')
                .any(|p| p.strip_prefix("download=").is_some_and(|v| !v.is_empty()))
        });
        if download && self.cfg.archives && self.cfg.listing {
            return self.archive(req, url, dir);
        }
        for name in &self.cfg.index {
            let child = url.child(name);
            match self.locate_open(&child) {
                Ok((target, (file, meta))) if meta.is_file() => {
                    return self.serve_file(req, &child, &target, file, &meta, true)
                }
                Err(Refusal::Forbidden) => return forbidden(),
                Err(Refusal::Busy) => return self.busy(),
                _ => {}
            }
        }
        if !self.cfg.listing {
            return error_response(403, "This directory has no index and listing is off.");
        }
        self.listing(req, url, dir)
    }

    /// `?download=tar.gz` or `?download=zip`: the folder as an archive made while it is sent.
    fn archive(&self, req: &Request<'_>, url: &UrlPath, dir: &Path) -> Response {
        let format = req
            .query
            .unwrap_or("")
            .split('&')
            .find_map(|p| p.strip_prefix("download="));
        let zip = match format {
            Some("tar.gz") => false,
            Some("zip") => true,
            _ => {
                return error_response(
                    400,
                    "Folders are offered as tar.gz and zip: ask for ?download=tar.gz or \
                     ?download=zip.",
                )
            }
        };
        if !crate::sys::may_read(dir, true) {
            return forbidden();
        }
        let name: Vec<u8> = match url.segments.last() {
            Some(n) => n.clone(),
            None => self
                .root
                .file_name()
                .map_or(b"files".to_vec(), |n| n.as_bytes().to_vec()),
        };
        // RFC 6266: an ASCII fallback name, and the real one encoded (RFC 8187).
        let ascii: String = String::from_utf8_lossy(&name)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.+".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let (ext, mime) = if zip {
            ("zip", "application/zip")
        } else {
            ("tar.gz", "application/gzip")
        };
        let disposition = format!(
            "attachment; filename=\"{ascii}.{ext}\"; filename*=UTF-8''{}.{ext}",
            path::encode_segment(&name)
        );
        let (dots, links) = (self.cfg.show_dotfiles, self.cfg.follow_symlinks);
        let walk = archive::Walk::new(&self.root, dir, &name, dots, links);
        let body: Box<dyn crate::protocol::http::message::BodyStream> = if zip {
            Box::new(archive::Zip::new(walk))
        } else {
            Box::new(archive::TarGz::new(walk))
        };
        Response::new(200)
            .header("Content-Type", mime)
            .header("Content-Disposition", disposition)
            .header("X-Content-Type-Options", "nosniff")
            .with_body(Body::Stream(Streamed(body)))
    }

    fn listing(&self, req: &Request<'_>, url: &UrlPath, dir: &Path) -> Response {
        let scope = listing::Scope {
            root: &self.root,
            show_dotfiles: self.cfg.show_dotfiles,
            follow_symlinks: self.cfg.follow_symlinks,
        };
        let (mut entries, truncated) = match listing::read(dir, scope) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return forbidden(),
            Err(e) => {
                tracing::warn!("cannot list {}: {e}", dir.display());
                return error_response(500, "The directory could not be read.");
            }
        };
        // A listing has no validator, so (RFC 9110 §13.1.1, §13.1.2) `If-Match` with a list
        // of tags cannot hold (412), and `If-None-Match: *` fails for a resource that exists
        // (304 for GET and HEAD); the date conditions need a Last-Modified and are ignored.
        if joined(req, "If-Match").is_some_and(|v| v.trim() != "*") {
            return error_response(412, "A precondition in the request does not hold.");
        }
        if joined(req, "If-None-Match").is_some_and(|v| v.split(',').any(|t| t.trim() == "*")) {
            return Response::new(304).header("Vary", "Accept");
        }
        let sort = listing::Sort::from_query(req.query);
        listing::sort(&mut entries, sort);
        let accept = joined(req, "Accept");
        let wants_json = mime::prefers_json(accept.as_deref())
            || req
                .query
                .is_some_and(|q| q.split('&').any(|p| p == "format=json"));
        let mut display = url.display();
        if !url.is_root() {
            display.push('/');
        }
        let (ctype, body) = if wants_json {
            ("application/json; charset=utf-8", listing::json(&entries))
        } else {
            (
                "text/html; charset=utf-8",
                listing::html(
                    &display,
                    &entries,
                    url.is_root(),
                    sort,
                    truncated,
                    self.cfg.archives,
                    self.takes_uploads(url),
                ),
            )
        };
        let mut resp = Response::new(200)
            .header("Content-Type", ctype)
            .header("X-Content-Type-Options", "nosniff")
            // The page needs nothing but its own inline style and its filter script (allowed by
            // hash): even a name that slipped past escaping could not run script or load
            // anything.
            .header(
                "Content-Security-Policy",
                listing::content_security_policy(),
            )
            .header("Vary", "Accept")
            .with_body(Body::Bytes(Bytes::from(body)));
        if let Some(cc) = self.cache_rules.lookup(&display) {
            resp = resp.header("Cache-Control", cc.to_string());
        }
        resp
    }

    /// Step 9: a configured page replaces the default body of an error answer.
    fn with_error_page(&self, mut resp: Response) -> Response {
        if resp.status < 400 {
            return resp;
        }
        let Some((_, page)) = self.cfg.error_pages.iter().find(|(s, _)| *s == resp.status) else {
            return resp;
        };
        let Ok(url) = UrlPath::parse(page, true) else {
            return resp;
        };
        let Ok((file, meta)) = locate(&self.root, &url.relative(), self.cfg.follow_symlinks, true)
            .and_then(|t| open(&t, &self.root))
        else {
            return resp;
        };
        if !meta.is_file() {
            return resp;
        }
        resp.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("Content-Type"));
        resp.headers.push((
            "Content-Type".into(),
            mime::content_type(&url.relative()).into(),
        ));
        resp.body = Body::File {
            file: Arc::new(file),
            offset: 0,
            len: meta.len(),
        };
        resp
    }
}

impl StaticFiles {
    /// The process is out of descriptors: let the cache's go (so the next request can have
    /// one) and answer 503.
    fn busy(&self) -> Response {
        self.files.shed();
        busy()
    }
}

impl Handler for StaticFiles {
    fn handle(&self, req: &Request<'_>, _peer: &Peer) -> Response {
        if let Some(hit) = self.files.get(req, std::time::Instant::now()) {
            return hit;
        }
        let resp = self.respond(req);
        self.with_error_page(resp)
    }

    fn release_descriptors(&self) {
        self.files.shed();
    }

    fn body_use(&self, req: &Request<'_>, _peer: &Peer) -> BodyUse {
        if req.method == "POST" {
            return match self.form_upload(req) {
                Some(Ok(form)) => BodyUse::Take(Box::new(form)),
                Some(Err(r)) => BodyUse::Refuse(self.with_error_page(r)),
                None => BodyUse::Discard,
            };
        }
        if req.method != "PUT" {
            return BodyUse::Discard;
        }
        match self.upload(req) {
            Some(Ok(up)) => BodyUse::Take(Box::new(up)),
            Some(Err(r)) => BodyUse::Refuse(self.with_error_page(r)),
            None => BodyUse::Discard,
        }
    }
}

/// Open what [`locate`] found, read-only and non-blocking (a FIFO would otherwise block until
/// a writer comes), then `fstat` the open file so what is described is what is sent. A target
/// under `root` is opened without following any symlink (`openat2`,
/// [`sys::open_no_symlinks`]): its canonical path has none, so one found now was put there
/// after the check (a directory swapped for a link out of the root), and the answer is 403
/// instead of the file it leads to. A kernel without `openat2` opens it plainly.
fn open(path: &Path, root: &Path) -> Result<(File, Metadata), Refusal> {
    let opened = if path.starts_with(root) {
        match sys::open_no_symlinks(path) {
            Ok(Some(f)) => Ok(f),
            Ok(None) => open_plain(path),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(Refusal::Forbidden),
            Err(e) => Err(e),
        }
    } else {
        open_plain(path)
    };
    let file = opened.map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied => Refusal::Forbidden,
        _ if out_of_resources(&e) => Refusal::Busy,
        _ => Refusal::NotFound,
    })?;
    let meta = file.metadata().map_err(|e| {
        if out_of_resources(&e) {
            Refusal::Busy
        } else {
            Refusal::NotFound
        }
    })?;
    Ok((file, meta))
}

fn open_plain(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

fn mtime(meta: &Metadata) -> SystemTime {
    meta.modified().unwrap_or(UNIX_EPOCH)
}

fn mtime_ns(meta: &Metadata) -> u128 {
    (meta.mtime() as i128 * 1_000_000_000 + i128::from(meta.mtime_nsec())).max(0) as u128
}

/// All lines of a list header, joined as one value (RFC 9110 §5.3).
fn joined(req: &Request<'_>, name: &str) -> Option<String> {
    let mut out: Option<String> = None;
    for v in req.header_all(name) {
        match &mut out {
            None => out = Some(v.to_string()),
            Some(s) => {
                s.push_str(", ");
                s.push_str(v);
            }
        }
    }
    out
}

fn not_found() -> Response {
    error_response(404, "Nothing is served at this address.")
}

fn forbidden() -> Response {
    error_response(403, "This address may not be served.")
}

/// EMFILE, ENFILE, ENOMEM: the file is there, the server cannot open it this moment.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)
    )
}

/// A passing shortage (descriptors, memory): 503 and a hint to retry, as RFC 9110 §15.6.4
/// allows, instead of a 404 a cache would keep.
fn busy() -> Response {
    let mut r = error_response(
        503,
        "The server is out of file descriptors for the moment; try again shortly.",
    );
    r.headers.push(("Retry-After".into(), "1".into()));
    r
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
