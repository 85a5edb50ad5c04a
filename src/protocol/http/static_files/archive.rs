//! Folder downloads (`--archives on`, off by default): `GET /dir/?download=tar.gz` answers
//! with the folder as a gzipped POSIX tar, made while it is sent.
//!
//! - **Constant memory, no temporary file**: the walk keeps one directory listing per level
//!   and one open file; a piece is produced only when the session asks for one (the client
//!   has taken the last), so a slow client holds a few hundred KiB, not the archive.
//! - **Only what the listing shows**: each folder is read with [`listing::read`] under the
//!   same [`Scope`](listing::Scope), so dotfiles (unless shown), links out of the root (unless
//!   followed), FIFOs, devices and unreadable entries are left out; a folder reached twice
//!   (a symlink loop) is entered once.
//! - **Format**: ustar headers (POSIX.1-1988), with a pax `path`/`size` record (POSIX.1-2001)
//!   when a name is over 100 bytes or a file over 8 GiB, which every tar reads. A file that
//!   shrinks while it is read is padded with zeros to the size its header announced, so the
//!   archive stays readable.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use flate2::write::GzEncoder;

use super::listing::{self, Entry, Scope};
use crate::protocol::http::message::BodyStream;

/// Bytes read from a file per step.
const READ_PIECE: usize = 64 * 1024;

/// A folder being turned into a `.tar.gz`.
pub struct TarGz {
    root: PathBuf,
    show_dotfiles: bool,
    follow_symlinks: bool,
    /// Per open level: its path on disk, its path in the archive (ending in `/`), and the
    /// entries not yet written.
    stack: Vec<(PathBuf, Vec<u8>, std::vec::IntoIter<Entry>)>,
    /// The file being copied: it, the bytes still owed, and the padding after them.
    current: Option<(File, u64, usize)>,
    gz: GzEncoder<Vec<u8>>,
    visited: HashSet<PathBuf>,
    finished: bool,
    /// The read buffer, on the heap: a threaded model's connection stacks are small.
    buf: Vec<u8>,
}

impl TarGz {
    /// The archive of `dir` (canonical, under `root`), its entries under `name/`.
    pub fn new(
        root: &Path,
        dir: &Path,
        name: &[u8],
        show_dotfiles: bool,
        follow_symlinks: bool,
    ) -> TarGz {
        let mut t = TarGz {
            root: root.to_path_buf(),
            show_dotfiles,
            follow_symlinks,
            stack: Vec::new(),
            current: None,
            gz: new_encoder(),
            visited: HashSet::new(),
            finished: false,
            buf: vec![0; READ_PIECE],
        };
        let mut prefix = name.to_vec();
        prefix.push(b'/');
        t.enter(dir, prefix);
        t
    }

    /// Write a folder's header and queue its entries.
    fn enter(&mut self, dir: &Path, prefix: Vec<u8>) {
        if !self.visited.insert(dir.to_path_buf()) {
            return;
        }
        let scope = Scope {
            root: &self.root,
            show_dotfiles: self.show_dotfiles,
            follow_symlinks: self.follow_symlinks,
        };
        let Ok((mut entries, _)) = listing::read(dir, scope) else {
            return;
        };
        listing::sort(&mut entries, listing::Sort::from_query(None));
        let mtime = std::fs::metadata(dir).ok().and_then(|m| m.modified().ok());
        header(&mut self.gz, &prefix, 0, b'5', 0o755, mtime);
        self.stack
            .push((dir.to_path_buf(), prefix, entries.into_iter()));
    }

    /// One step of the walk: a header, a piece of a file, or the end.
    fn step(&mut self) -> io::Result<()> {
        if let Some((file, left, pad)) = &mut self.current {
            let buf = &mut self.buf;
            let want = (*left).min(READ_PIECE as u64) as usize;
            let n = match file.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
                Err(_) => 0,
            };
            if n == 0 {
                // Shrunk (or unreadable) since its header: zeros keep the archive whole.
                let zeros = vec![0u8; want];
                self.gz.write_all(&zeros)?;
                *left -= want as u64;
            } else {
                self.gz.write_all(&buf[..n])?;
                *left -= n as u64;
            }
            if *left == 0 {
                let pad = *pad;
                self.gz.write_all(&[0u8; 512][..pad])?;
                self.current = None;
            }
            return Ok(());
        }
        let Some((dir, prefix, entries)) = self.stack.last_mut() else {
            // POSIX: the archive ends with two zero blocks.
            self.gz.write_all(&[0u8; 1024])?;
            self.gz.try_finish()?;
            self.finished = true;
            return Ok(());
        };
        let Some(e) = entries.next() else {
            self.stack.pop();
            return Ok(());
        };
        let path = dir.join(std::ffi::OsStr::from_bytes(&e.name));
        let mut name = prefix.clone();
        name.extend_from_slice(&e.name);
        if e.is_dir {
            let Ok(canon) = std::fs::canonicalize(&path) else {
                return Ok(());
            };
            name.push(b'/');
            self.enter(&canon, name);
            return Ok(());
        }
        let Ok(file) = File::open(&path) else {
            return Ok(());
        };
        let Ok(meta) = file.metadata() else {
            return Ok(());
        };
        if !meta.is_file() {
            return Ok(());
        }
        let size = meta.len();
        header(&mut self.gz, &name, size, b'0', 0o644, meta.modified().ok());
        let pad = ((512 - size % 512) % 512) as usize;
        if size == 0 {
            return Ok(());
        }
        self.current = Some((file, size, pad));
        Ok(())
    }
}

impl BodyStream for TarGz {
    fn next_piece(&mut self, want: usize) -> Option<Bytes> {
        loop {
            if self.gz.get_ref().len() >= want || (self.finished && !self.gz.get_ref().is_empty()) {
                let out = std::mem::take(self.gz.get_mut());
                return Some(Bytes::from(out));
            }
            if self.finished {
                return None;
            }
            if self.step().is_err() {
                // Writing into memory does not fail; a compressor error ends the body short.
                return None;
            }
        }
    }
}

/// A gzip compressor, built on a thread with an ample stack: miniz_oxide builds its tables on
/// the stack before boxing them in unoptimized builds, more than the threaded model's
/// connection threads have (see `encoding::GZIP_STACK_SIZE`). Built, it runs in little stack.
fn new_encoder() -> GzEncoder<Vec<u8>> {
    let make = || GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("tincan-gzip".into())
            .stack_size(2 * 1024 * 1024)
            .spawn_scoped(scope, make)
            .ok()
            .and_then(|t| t.join().ok())
    })
    .unwrap_or_else(make)
}

/// Write one ustar header (and a pax record before it when the name or size do not fit).
fn header(
    w: &mut impl Write,
    name: &[u8],
    size: u64,
    kind: u8,
    mode: u32,
    mtime: Option<std::time::SystemTime>,
) {
    let mtime = mtime
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let big = size >= 0o77777777777;
    if name.len() > 100 || big {
        let mut records = Vec::new();
        if name.len() > 100 {
            records.extend(pax_record(b"path", name));
        }
        if big {
            records.extend(pax_record(b"size", size.to_string().as_bytes()));
        }
        let block = ustar(b"././@PaxHeader", records.len() as u64, b'x', 0o644, mtime);
        let _ = w.write_all(&block);
        let _ = w.write_all(&records);
        let pad = (512 - records.len() % 512) % 512;
        let _ = w.write_all(&[0u8; 512][..pad]);
    }
    let short = &name[..name.len().min(100)];
    let _ = w.write_all(&ustar(short, if big { 0 } else { size }, kind, mode, mtime));
}

/// `"LEN key=value\n"`, LEN counting itself (POSIX pax).
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // space, '=', newline
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn ustar(name: &[u8], size: u64, kind: u8, mode: u32, mtime: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    let octal = |field: &mut [u8], v: u64| {
        let s = format!("{:0width$o}", v, width = field.len() - 1);
        field[..s.len()].copy_from_slice(s.as_bytes());
    };
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is summed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_lengths_count_themselves() {
        let r = pax_record(b"path", &[b'a'; 95]);
        let len: usize = std::str::from_utf8(&r[..r.iter().position(|&b| b == b' ').unwrap()])
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, r.len());
    }

    #[test]
    fn a_ustar_header_has_a_valid_checksum() {
        let h = ustar(b"dir/a.txt", 5, b'0', 0o644, 0);
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let mut copy = h;
        copy[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, copy.iter().map(|&b| u32::from(b)).sum::<u32>());
    }
}
