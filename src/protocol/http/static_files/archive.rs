//! Folder downloads (`--archives on`, off by default): `GET /dir/?download=tar.gz` answers
//! with the folder as a gzipped POSIX tar, `?download=zip` as a zip ([`Zip`]), made while it
//! is sent.
//!
//! - **Constant memory, no temporary file**: the walk keeps one directory listing per level
//!   and one open file; a piece is produced only when the session asks for one (the client
//!   has taken the last), so a slow client holds a few hundred KiB, not the archive.
//! - **Only what the listing shows**: each folder is read with [`listing::read`] under the
//!   same [`Scope`](listing::Scope), so dotfiles (unless shown), links out of the root (unless
//!   followed), FIFOs, devices and unreadable entries are left out; a folder reached twice
//!   (a symlink loop) is entered once.
//! - **tar.gz format**: ustar headers (POSIX.1-1988), with a pax `path`/`size` record (POSIX.1-2001)
//!   when a name is over 100 bytes or a file over 8 GiB, which every tar reads. A file that
//!   shrinks while it is read is padded with zeros to the size its header announced, so the
//!   archive stays readable.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use flate2::write::GzEncoder;

use super::listing::{self, Entry, Scope};
use crate::protocol::http::message::BodyStream;

/// Bytes read from a file per step.
const READ_PIECE: usize = 64 * 1024;

/// The folders and files under one folder, as the listing shows them, depth first; each
/// folder is listed when it is entered, and one file is open at a time.
pub struct Walk {
    root: PathBuf,
    show_dotfiles: bool,
    follow_symlinks: bool,
    /// Per open level: its path on disk, its path in the archive (ending in `/`), and the
    /// entries not yet given out.
    stack: Vec<(PathBuf, Vec<u8>, std::vec::IntoIter<Entry>)>,
    visited: HashSet<PathBuf>,
    /// The folder entered first, given out before anything in it.
    first: Option<Item>,
}

/// One thing to put in an archive.
enum Item {
    /// A folder: its name in the archive, ending in `/`.
    Dir {
        name: Vec<u8>,
        mtime: Option<SystemTime>,
    },
    File(FileItem),
}

/// A file to put in an archive: its name there, the file opened, its size and time.
struct FileItem {
    name: Vec<u8>,
    file: File,
    size: u64,
    mtime: Option<SystemTime>,
}

impl Walk {
    /// The walk of `dir` (canonical, under `root`), its entries under `name/`.
    pub fn new(
        root: &Path,
        dir: &Path,
        name: &[u8],
        show_dotfiles: bool,
        follow_symlinks: bool,
    ) -> Walk {
        let mut w = Walk {
            root: root.to_path_buf(),
            show_dotfiles,
            follow_symlinks,
            stack: Vec::new(),
            visited: HashSet::new(),
            first: None,
        };
        let mut prefix = name.to_vec();
        prefix.push(b'/');
        w.first = w.enter(dir, prefix);
        w
    }

    /// List a folder and queue its entries; None when it was entered before (a symlink loop)
    /// or cannot be listed.
    fn enter(&mut self, dir: &Path, prefix: Vec<u8>) -> Option<Item> {
        if !self.visited.insert(dir.to_path_buf()) {
            return None;
        }
        let scope = Scope {
            root: &self.root,
            show_dotfiles: self.show_dotfiles,
            follow_symlinks: self.follow_symlinks,
        };
        let (mut entries, _) = listing::read(dir, scope).ok()?;
        listing::sort(&mut entries, listing::Sort::from_query(None));
        let mtime = std::fs::metadata(dir).ok().and_then(|m| m.modified().ok());
        self.stack
            .push((dir.to_path_buf(), prefix.clone(), entries.into_iter()));
        Some(Item::Dir {
            name: prefix,
            mtime,
        })
    }

    /// The next folder or file; None at the end.
    fn next(&mut self) -> Option<Item> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        loop {
            let (dir, prefix, entries) = self.stack.last_mut()?;
            let Some(e) = entries.next() else {
                self.stack.pop();
                continue;
            };
            let path = dir.join(std::ffi::OsStr::from_bytes(&e.name));
            let mut name = prefix.clone();
            name.extend_from_slice(&e.name);
            if e.is_dir {
                let Ok(canon) = std::fs::canonicalize(&path) else {
                    continue;
                };
                name.push(b'/');
                match self.enter(&canon, name) {
                    Some(item) => return Some(item),
                    None => continue,
                }
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let Ok(meta) = file.metadata() else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            return Some(Item::File(FileItem {
                name,
                size: meta.len(),
                mtime: meta.modified().ok(),
                file,
            }));
        }
    }
}

/// Copy up to `*left` bytes of `file` (one piece) into `out`, zeros where the file has shrunk
/// since its size was taken, so the size announced holds; returns what was appended.
fn copy_piece<'a>(file: &mut File, left: &mut u64, buf: &'a mut [u8]) -> &'a [u8] {
    let want = (*left).min(buf.len() as u64) as usize;
    let n = loop {
        match file.read(&mut buf[..want]) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break 0,
        }
    };
    if n == 0 {
        // Shrunk (or unreadable) since its header: zeros keep the archive whole.
        buf[..want].fill(0);
        *left -= want as u64;
        return &buf[..want];
    }
    *left -= n as u64;
    &buf[..n]
}

/// A folder being turned into a `.tar.gz`.
pub struct TarGz {
    walk: Walk,
    /// The file being copied: it, the bytes still owed, and the padding after them.
    current: Option<(File, u64, usize)>,
    gz: GzEncoder<Vec<u8>>,
    finished: bool,
    /// The read buffer, on the heap: a threaded model's connection stacks are small.
    buf: Vec<u8>,
}

impl TarGz {
    /// The archive of what `walk` gives out.
    pub fn new(walk: Walk) -> TarGz {
        TarGz {
            walk,
            current: None,
            gz: new_encoder(),
            finished: false,
            buf: vec![0; READ_PIECE],
        }
    }

    /// One step of the walk: a header, a piece of a file, or the end.
    fn step(&mut self) -> io::Result<()> {
        if let Some((file, left, pad)) = &mut self.current {
            let piece = copy_piece(file, left, &mut self.buf);
            self.gz.write_all(piece)?;
            if *left == 0 {
                let pad = *pad;
                self.gz.write_all(&[0u8; 512][..pad])?;
                self.current = None;
            }
            return Ok(());
        }
        match self.walk.next() {
            None => {
                // POSIX: the archive ends with two zero blocks.
                self.gz.write_all(&[0u8; 1024])?;
                self.gz.try_finish()?;
                self.finished = true;
            }
            Some(Item::Dir { name, mtime }) => header(&mut self.gz, &name, 0, b'5', 0o755, mtime),
            Some(Item::File(f)) => {
                header(&mut self.gz, &f.name, f.size, b'0', 0o644, f.mtime);
                let pad = ((512 - f.size % 512) % 512) as usize;
                if f.size > 0 {
                    self.current = Some((f.file, f.size, pad));
                }
            }
        }
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

/// Central-directory bytes a `.zip` may gather (a record of 46 bytes plus its name per entry:
/// some 200,000 entries). Past it the archive ends with what it holds, and that is logged:
/// the answer has started, so it cannot become an error.
pub const MAX_ZIP_DIRECTORY: usize = 16 << 20;

/// Sizes and offsets from this on need ZIP64 fields (APPNOTE 4.5.3).
const ZIP32_MAX: u64 = 0xffff_ffff;

/// General purpose flags: bit 3, sizes and CRC in a data descriptor after the data (they are
/// known only once it is read); bit 11, the name is UTF-8.
const FLAG_DESCRIPTOR: u16 = 1 << 3;
const FLAG_UTF8: u16 = 1 << 11;

/// A folder being turned into a `.zip` (PKWARE APPNOTE 6.3), entries stored (no compression:
/// constant CPU, and what folders hold is mostly compressed already; `tar.gz` compresses).
/// Each file is streamed with a data descriptor after it, its CRC-32 computed on the way; the
/// central directory, which a zip must end with, is the one thing that grows with the entry
/// count, bounded by [`MAX_ZIP_DIRECTORY`]. ZIP64 fields are used where a size, an offset or
/// the count passes the 32-bit (16-bit) fields, so large folders stay readable.
pub struct Zip {
    walk: Walk,
    out: Vec<u8>,
    /// Bytes given out before `out`.
    offset: u64,
    central: Vec<u8>,
    entries: u64,
    current: Option<ZipFile>,
    finished: bool,
    buf: Vec<u8>,
    /// The 32-bit limit (lowered by tests to exercise ZIP64 without gigabytes).
    zip32_max: u64,
}

/// The file whose data is being written.
struct ZipFile {
    file: File,
    left: u64,
    size: u64,
    crc: flate2::Crc,
    entry: ZipEntry,
}

/// What the central directory says of one entry.
struct ZipEntry {
    name: Vec<u8>,
    dos: (u16, u16),
    offset: u64,
    dir: bool,
    zip64: bool,
}

impl Zip {
    /// The archive of what `walk` gives out.
    pub fn new(walk: Walk) -> Zip {
        Zip {
            walk,
            out: Vec::new(),
            offset: 0,
            central: Vec::new(),
            entries: 0,
            current: None,
            finished: false,
            buf: vec![0; READ_PIECE],
            zip32_max: ZIP32_MAX,
        }
    }

    fn at(&self) -> u64 {
        self.offset + self.out.len() as u64
    }

    fn step(&mut self) {
        if let Some(f) = &mut self.current {
            let piece = copy_piece(&mut f.file, &mut f.left, &mut self.buf);
            f.crc.update(piece);
            self.out.extend_from_slice(piece);
            if f.left == 0 {
                if let Some(f) = self.current.take() {
                    self.end_file(f);
                }
            }
            return;
        }
        if self.central.len() > MAX_ZIP_DIRECTORY {
            tracing::warn!(
                "a .zip folder download stopped at {} entries, the most its directory holds \
                 ({MAX_ZIP_DIRECTORY} bytes); the archive ends with them",
                self.entries
            );
            return self.finish();
        }
        match self.walk.next() {
            None => self.finish(),
            Some(Item::Dir { name, mtime }) => {
                let entry = self.local_header(name, mtime, true, false);
                self.central_record(&entry, 0, 0);
            }
            Some(Item::File(FileItem {
                name,
                file,
                size,
                mtime,
            })) => {
                let zip64 = size >= self.zip32_max;
                let entry = self.local_header(name, mtime, false, zip64);
                let f = ZipFile {
                    file,
                    left: size,
                    size,
                    crc: flate2::Crc::new(),
                    entry,
                };
                if size == 0 {
                    self.end_file(f);
                } else {
                    self.current = Some(f);
                }
            }
        }
    }

    /// A local file header (APPNOTE 4.3.7); sizes and CRC follow the data, for a file.
    fn local_header(
        &mut self,
        name: Vec<u8>,
        mtime: Option<SystemTime>,
        dir: bool,
        zip64: bool,
    ) -> ZipEntry {
        let entry = ZipEntry {
            dos: dos_time(mtime),
            offset: self.at(),
            dir,
            zip64,
            name,
        };
        let flags = entry.flags();
        let o = &mut self.out;
        o.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        o.extend_from_slice(&entry.version_needed().to_le_bytes());
        o.extend_from_slice(&flags.to_le_bytes());
        o.extend_from_slice(&0u16.to_le_bytes()); // stored
        o.extend_from_slice(&entry.dos.0.to_le_bytes());
        o.extend_from_slice(&entry.dos.1.to_le_bytes());
        // CRC and sizes: in the descriptor (or 0, a folder); a ZIP64 entry's sizes point at its
        // extra field (APPNOTE 4.5.3).
        o.extend_from_slice(&[0u8; 4]);
        let sizes: u32 = if zip64 { u32::MAX } else { 0 };
        o.extend_from_slice(&sizes.to_le_bytes());
        o.extend_from_slice(&sizes.to_le_bytes());
        o.extend_from_slice(&(entry.name.len() as u16).to_le_bytes());
        let extra: u16 = if zip64 { 20 } else { 0 };
        o.extend_from_slice(&extra.to_le_bytes());
        o.extend_from_slice(&entry.name);
        if zip64 {
            // Zero sizes here too; the descriptor has them, in 8 bytes each (APPNOTE 4.3.9.2).
            o.extend_from_slice(&1u16.to_le_bytes());
            o.extend_from_slice(&16u16.to_le_bytes());
            o.extend_from_slice(&[0u8; 16]);
        }
        entry
    }

    /// The data descriptor after a file's data, and its central record.
    fn end_file(&mut self, f: ZipFile) {
        let crc = f.crc.sum();
        let o = &mut self.out;
        o.extend_from_slice(&0x0807_4b50u32.to_le_bytes());
        o.extend_from_slice(&crc.to_le_bytes());
        for _ in 0..2 {
            if f.entry.zip64 {
                o.extend_from_slice(&f.size.to_le_bytes());
            } else {
                o.extend_from_slice(&(f.size as u32).to_le_bytes());
            }
        }
        self.central_record(&f.entry, crc, f.size);
    }

    /// One central directory header (APPNOTE 4.3.12), with a ZIP64 extra field holding what
    /// does not fit in 32 bits.
    fn central_record(&mut self, e: &ZipEntry, crc: u32, size: u64) {
        let big_size = size >= self.zip32_max || e.zip64;
        let big_offset = e.offset >= self.zip32_max;
        let mut extra = Vec::new();
        if big_size {
            extra.extend_from_slice(&size.to_le_bytes());
            extra.extend_from_slice(&size.to_le_bytes());
        }
        if big_offset {
            extra.extend_from_slice(&e.offset.to_le_bytes());
        }
        let c = &mut self.central;
        c.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        // Made by: Unix (3), APPNOTE 4.5.
        c.extend_from_slice(&((3u16 << 8) | 45).to_le_bytes());
        c.extend_from_slice(&e.version_needed().to_le_bytes());
        c.extend_from_slice(&e.flags().to_le_bytes());
        c.extend_from_slice(&0u16.to_le_bytes());
        c.extend_from_slice(&e.dos.0.to_le_bytes());
        c.extend_from_slice(&e.dos.1.to_le_bytes());
        c.extend_from_slice(&crc.to_le_bytes());
        let size32 = if big_size { u32::MAX } else { size as u32 };
        c.extend_from_slice(&size32.to_le_bytes());
        c.extend_from_slice(&size32.to_le_bytes());
        c.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        let extra_len = if extra.is_empty() { 0 } else { extra.len() + 4 };
        c.extend_from_slice(&(extra_len as u16).to_le_bytes());
        c.extend_from_slice(&[0u8; 6]); // comment length, disk number, internal attributes
        let mode: u32 = if e.dir { 0o40755 } else { 0o100644 };
        let dos_dir: u32 = if e.dir { 0x10 } else { 0 };
        c.extend_from_slice(&((mode << 16) | dos_dir).to_le_bytes());
        let offset32 = if big_offset {
            u32::MAX
        } else {
            e.offset as u32
        };
        c.extend_from_slice(&offset32.to_le_bytes());
        c.extend_from_slice(&e.name);
        if !extra.is_empty() {
            c.extend_from_slice(&1u16.to_le_bytes());
            c.extend_from_slice(&(extra.len() as u16).to_le_bytes());
            c.extend_from_slice(&extra);
        }
        self.entries += 1;
    }

    /// The central directory and its end records (ZIP64 ones when the count, its size or its
    /// offset pass the classic fields).
    fn finish(&mut self) {
        let start = self.at();
        let size = self.central.len() as u64;
        let central = std::mem::take(&mut self.central);
        self.out.extend_from_slice(&central);
        let zip64 = self.entries >= 0xffff || size >= self.zip32_max || start >= self.zip32_max;
        let o = &mut self.out;
        if zip64 {
            let record = start + size;
            o.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
            o.extend_from_slice(&44u64.to_le_bytes());
            o.extend_from_slice(&((3u16 << 8) | 45).to_le_bytes());
            o.extend_from_slice(&45u16.to_le_bytes());
            o.extend_from_slice(&[0u8; 8]); // this disk, the directory's disk
            o.extend_from_slice(&self.entries.to_le_bytes());
            o.extend_from_slice(&self.entries.to_le_bytes());
            o.extend_from_slice(&size.to_le_bytes());
            o.extend_from_slice(&start.to_le_bytes());
            // The locator.
            o.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
            o.extend_from_slice(&0u32.to_le_bytes());
            o.extend_from_slice(&record.to_le_bytes());
            o.extend_from_slice(&1u32.to_le_bytes());
        }
        let count = if zip64 { 0xffff } else { self.entries as u16 };
        let clip = |v: u64| if zip64 { u32::MAX } else { v as u32 };
        o.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        o.extend_from_slice(&[0u8; 4]);
        o.extend_from_slice(&count.to_le_bytes());
        o.extend_from_slice(&count.to_le_bytes());
        o.extend_from_slice(&clip(size).to_le_bytes());
        o.extend_from_slice(&clip(start).to_le_bytes());
        o.extend_from_slice(&0u16.to_le_bytes());
        self.finished = true;
    }
}

impl ZipEntry {
    fn flags(&self) -> u16 {
        let utf8 = if std::str::from_utf8(&self.name).is_ok() {
            FLAG_UTF8
        } else {
            0
        };
        if self.dir {
            utf8
        } else {
            utf8 | FLAG_DESCRIPTOR
        }
    }

    fn version_needed(&self) -> u16 {
        if self.zip64 {
            45
        } else {
            20
        }
    }
}

impl BodyStream for Zip {
    fn next_piece(&mut self, want: usize) -> Option<Bytes> {
        loop {
            if self.out.len() >= want || (self.finished && !self.out.is_empty()) {
                let out = std::mem::take(&mut self.out);
                self.offset += out.len() as u64;
                return Some(Bytes::from(out));
            }
            if self.finished {
                return None;
            }
            self.step();
        }
    }
}

/// MS-DOS date and time (APPNOTE 4.4.6), in UTC (a zip has no zone), two-second steps;
/// 1980-01-01 for anything earlier (or unknown), 2107 at the latest.
fn dos_time(t: Option<SystemTime>) -> (u16, u16) {
    let Some(t) = t else {
        return (0, (1 << 5) | 1);
    };
    let (year, month, day, h, mi, s) = crate::protocol::http::message::civil(t);
    if year < 1980 {
        return (0, (1 << 5) | 1);
    }
    let year = year.min(2107) as u32;
    let time = (h << 11) | (mi << 5) | (s / 2);
    let date = ((year - 1980) << 9) | (month << 5) | day;
    (time as u16, date as u16)
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
    mtime: Option<SystemTime>,
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

    /// Python's zipfile reads `zip` back: every name, size and CRC, ZIP64 fields included
    /// when the 32-bit limit is lowered to make them needed without gigabytes.
    fn python_reads(zip: &[u8]) -> String {
        let dir = std::env::temp_dir().join(format!("tincan-zip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("t{}.zip", zip.len()));
        std::fs::write(&file, zip).unwrap();
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys, zipfile\n\
                 z = zipfile.ZipFile(sys.argv[1])\n\
                 assert z.testzip() is None\n\
                 for i in z.infolist(): print(i.filename, i.file_size, z.read(i)[:3])",
            ])
            .arg(&file)
            .output()
            .expect("python3, as the integration tests use it");
        let _ = std::fs::remove_file(&file);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn zip_of(dir: &Path, zip32_max: u64) -> Vec<u8> {
        let mut z = Zip::new(Walk::new(dir, dir, b"top", false, false));
        z.zip32_max = zip32_max;
        let mut all = Vec::new();
        while let Some(piece) = z.next_piece(1000) {
            all.extend_from_slice(&piece);
        }
        all
    }

    #[test]
    fn zips_read_back_with_and_without_zip64_fields() {
        let dir = std::env::temp_dir().join(format!("tincan-zip-src-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.txt"), "hello").unwrap();
        std::fs::write(dir.join("empty"), "").unwrap();
        std::fs::write(dir.join("sub/big.bin"), vec![7u8; 5000]).unwrap();
        std::fs::write(dir.join("caf\u{e9}.txt"), "utf-8 name").unwrap();
        // In the listing's order: folders first.
        let want = "top/ 0 b''\n\
                    top/sub/ 0 b''\n\
                    top/sub/big.bin 5000 b'\\x07\\x07\\x07'\n\
                    top/a.txt 5 b'hel'\n\
                    top/caf\u{e9}.txt 10 b'utf'\n\
                    top/empty 0 b''\n";
        let plain = zip_of(&dir, ZIP32_MAX);
        assert_eq!(python_reads(&plain), want);
        // No ZIP64 record when nothing needs it.
        assert!(!plain.windows(4).any(|w| w == 0x0606_4b50u32.to_le_bytes()));
        // Sizes, offsets and the directory past a lowered limit: ZIP64 fields throughout.
        let big = zip_of(&dir, 100);
        assert!(big.windows(4).any(|w| w == 0x0606_4b50u32.to_le_bytes()));
        assert_eq!(python_reads(&big), want);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dos_times_are_two_second_steps_from_1980() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(971_185_337); // 2000-10-10 13:42:17
        assert_eq!(
            dos_time(Some(t)),
            ((13 << 11) | (42 << 5) | 8, (20 << 9) | (10 << 5) | 10)
        );
        assert_eq!(dos_time(Some(UNIX_EPOCH)), (0, (1 << 5) | 1));
        assert_eq!(dos_time(None), (0, (1 << 5) | 1));
    }

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
