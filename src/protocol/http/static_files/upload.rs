//! Uploads (`--upload PREFIX`, off by default): `PUT /PREFIX/.../name` writes the request
//! body to that file under the root.
//!
//! - **Names** follow the read rules ([`super::path`]): decoded once, no `..` above the root,
//!   no encoded slash, no dotfile unless dotfiles are shown. The folder must already exist and
//!   lie under the root by its canonical path (a symlink leading out is refused even with
//!   `--follow-symlinks`: following a link to read is one thing, writing through it another).
//! - **Never a half-written file**: the body goes to a temporary file (a dotfile, so neither
//!   listed nor served) in the target folder, is synced to disk, and only then takes the
//!   name: `rename(2)` when replacing is allowed, else `link(2)`, which fails if the name was
//!   taken meanwhile. A body cut short (client gone, timeout, over `--max-body`) leaves
//!   nothing: the temporary file is removed when the upload is dropped.
//! - **Answers**: 201 Created (a new file), 204 No Content (replaced, with
//!   `--upload-overwrite`), 409 Conflict (the name exists and replacing is off, or the
//!   folder does not exist, or a folder has that name), 413 over `--max-body` (the session's),
//!   507 when the disk is full.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::protocol::http::message::{error_response, BodySink, Response};

use super::path::{locate, PathError, Refusal, UrlPath};

/// Where uploads are allowed, and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UploadConfig {
    /// URL prefixes, as decoded segments (empty: the whole root).
    pub prefixes: Vec<Vec<Vec<u8>>>,
    /// Replace a file that exists (else 409).
    pub overwrite: bool,
}

impl UploadConfig {
    /// From `--upload` values (`/`, `/incoming`); the error names the bad one.
    pub fn new(prefixes: &[String], overwrite: bool) -> Result<UploadConfig, String> {
        let mut out = Vec::new();
        for p in prefixes {
            if !p.starts_with('/') {
                return Err(format!("`{p}` must be a URL path starting with /"));
            }
            let url =
                UrlPath::parse(p, true).map_err(|_| format!("`{p}` is not a plain URL path"))?;
            out.push(url.segments);
        }
        Ok(UploadConfig {
            prefixes: out,
            overwrite,
        })
    }

    /// Is a file at `url` under one of the prefixes?
    pub fn covers(&self, url: &UrlPath) -> bool {
        self.prefixes
            .iter()
            .any(|p| url.segments.len() > p.len() && url.segments[..p.len()] == p[..])
    }
}

/// A request to upload to `url`, checked: the sink to write it into, or the answer that
/// refuses it.
pub fn begin(
    root: &Path,
    cfg: &UploadConfig,
    raw_path: &str,
    show_dotfiles: bool,
) -> Option<Result<Upload, Response>> {
    let url = match UrlPath::parse(raw_path, show_dotfiles) {
        Ok(u) => u,
        Err(PathError::Bad(why)) => return Some(Err(error_response(400, why))),
        Err(PathError::Hidden) => {
            return Some(Err(error_response(
                403,
                "Names starting with a dot cannot be uploaded here.",
            )))
        }
    };
    if !cfg.covers(&url) {
        return None;
    }
    if url.trailing_slash {
        return Some(Err(error_response(
            405,
            "An upload names a file; this address is a folder.",
        )));
    }
    let (name, parent) = url.segments.split_last()?;
    let parent_url = UrlPath {
        segments: parent.to_vec(),
        trailing_slash: true,
    };
    let shown_parent = format!("{}/", parent_url.display().trim_end_matches('/'));
    let dir = match locate(root, &parent_url.relative(), false, show_dotfiles) {
        Ok(d) if d.is_dir() => d,
        Ok(_) | Err(Refusal::NotFound) => {
            return Some(Err(error_response(
                409,
                &format!(
                    "The folder {shown_parent} does not exist; uploads do not create folders."
                ),
            )))
        }
        Err(Refusal::Busy) => return Some(Err(error_response(503, "Try again shortly."))),
        Err(_) => {
            return Some(Err(error_response(
                403,
                "This folder may not be written to.",
            )))
        }
    };
    let target = dir.join(std::ffi::OsStr::from_bytes(name));
    let existed = match std::fs::symlink_metadata(&target) {
        Ok(m) if m.is_dir() => {
            return Some(Err(error_response(409, "A folder has this name.")));
        }
        Ok(m) if !m.is_file() && !m.file_type().is_symlink() => {
            return Some(Err(error_response(
                409,
                "Something that is not a file has this name.",
            )));
        }
        Ok(_) if !cfg.overwrite => {
            return Some(Err(error_response(
                409,
                "A file of this name exists, and this server does not replace files.",
            )));
        }
        Ok(_) => true,
        Err(_) => false,
    };
    Some(
        Upload::create(dir, &target, cfg.overwrite, existed, url.encoded())
            .map_err(|e| failed(&e, &target)),
    )
}

/// Temporary names are unique within the process; with the pid, across processes.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// An upload in progress: a temporary file beside its target.
#[derive(Debug)]
pub struct Upload {
    file: Option<File>,
    temp: PathBuf,
    target: PathBuf,
    overwrite: bool,
    existed: bool,
    location: String,
    /// The first write that failed (the rest of the body is still read, then answered).
    error: Option<io::Error>,
}

impl Upload {
    fn create(
        dir: PathBuf,
        target: &Path,
        overwrite: bool,
        existed: bool,
        location: String,
    ) -> io::Result<Upload> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(".tincan-upload.{}.{n}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)?;
        Ok(Upload {
            file: Some(file),
            temp,
            target: target.to_path_buf(),
            overwrite,
            existed,
            location,
            error: None,
        })
    }

    fn commit(&mut self) -> io::Result<()> {
        let file = self.file.take().expect("an upload is committed once");
        // The bytes are on disk before the name points at them: a crash leaves the old file or
        // the new one, never a torn one.
        file.sync_data()?;
        drop(file);
        if self.overwrite {
            std::fs::rename(&self.temp, &self.target)?;
        } else {
            // link(2) fails with EEXIST if the name was taken since the check: never replaced.
            std::fs::hard_link(&self.temp, &self.target)?;
            std::fs::remove_file(&self.temp)?;
        }
        Ok(())
    }
}

impl BodySink for Upload {
    fn write(&mut self, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Some(f) = &mut self.file {
            if let Err(e) = f.write_all(data) {
                self.error = Some(e);
            }
        }
    }

    fn finish(mut self: Box<Self>) -> Response {
        if let Some(e) = self.error.take() {
            return failed(&e, &self.target);
        }
        match self.commit() {
            Ok(()) if self.existed => Response::new(204),
            Ok(()) => Response::new(201)
                .header("Location", self.location.clone())
                .header("Content-Type", "text/plain; charset=utf-8")
                .with_body(crate::protocol::http::Body::Bytes(bytes::Bytes::from(
                    format!("Created {}\n", self.location),
                ))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => error_response(
                409,
                "A file of this name appeared while the upload came, and is kept.",
            ),
            Err(e) => failed(&e, &self.target),
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // Unfinished, or a failed commit: the temporary file goes.
        let _ = std::fs::remove_file(&self.temp);
    }
}

/// The answer to a failed write, and a line for the operator.
fn failed(e: &io::Error, target: &Path) -> Response {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
            tracing::warn!("upload to {} failed: the disk is full", target.display());
            error_response(507, "The server has no room for this file.")
        }
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
            error_response(403, "This folder may not be written to.")
        }
        _ => {
            tracing::warn!("upload to {} failed: {e}", target.display());
            error_response(500, "The file could not be written.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "tincan-upload-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(d.join("in/sub")).unwrap();
        std::fs::canonicalize(d).unwrap()
    }

    fn put(root: &Path, cfg: &UploadConfig, path: &str, body: &[u8]) -> Response {
        match begin(root, cfg, path, false) {
            None => Response::new(405),
            Some(Err(r)) => r,
            Some(Ok(up)) => {
                let mut up: Box<dyn BodySink> = Box::new(up);
                up.write(body);
                up.finish()
            }
        }
    }

    #[test]
    fn a_put_creates_then_refuses_to_replace_unless_allowed() {
        let root = root();
        let cfg = UploadConfig::new(&["/in".into()], false).unwrap();
        assert_eq!(put(&root, &cfg, "/in/a.txt", b"one").status, 201);
        assert_eq!(std::fs::read(root.join("in/a.txt")).unwrap(), b"one");
        assert_eq!(put(&root, &cfg, "/in/a.txt", b"two").status, 409);
        assert_eq!(std::fs::read(root.join("in/a.txt")).unwrap(), b"one");
        let cfg = UploadConfig::new(&["/in".into()], true).unwrap();
        assert_eq!(put(&root, &cfg, "/in/a.txt", b"two").status, 204);
        assert_eq!(std::fs::read(root.join("in/a.txt")).unwrap(), b"two");
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(root.join("in")).unwrap().collect();
        assert_eq!(left.len(), 2, "{left:?}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn names_follow_the_read_rules() {
        let root = root();
        let cfg = UploadConfig::new(&["/in".into()], false).unwrap();
        for (path, status) in [
            ("/in/../escape.txt", 405),
            ("/in/%2e%2e/x", 405),
            ("/in/.hidden", 403),
            ("/in/a%2fb", 400),
            ("/in/nodir/x", 409),
            ("/in/sub", 409),
            ("/in/sub/", 405),
            ("/other.txt", 405),
        ] {
            assert_eq!(put(&root, &cfg, path, b"x").status, status, "{path}");
        }
        assert!(!root.join("escape.txt").exists());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn an_upload_dropped_midway_leaves_nothing() {
        let root = root();
        let cfg = UploadConfig::new(&["/".into()], false).unwrap();
        let mut up = begin(&root, &cfg, "/in/big.bin", false).unwrap().unwrap();
        up.write(&[7; 1000]);
        drop(up);
        let left: Vec<_> = std::fs::read_dir(root.join("in")).unwrap().collect();
        assert_eq!(left.len(), 1, "only sub/ remains: {left:?}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
