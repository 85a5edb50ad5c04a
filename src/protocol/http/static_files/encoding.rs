//! Step 4: content codings (RFC 9110 §12.5.3, §8.4). Parse `Accept-Encoding` with its q-values,
//! pick a precompressed sidecar (`app.js.br`, `.zst`, `.gz`) the client accepts, or gzip a
//! compressible file on the fly, keeping the result in a bounded LRU cache.
//!
//! Choices where the RFC leaves room:
//! - Among acceptable codings the highest q wins; ties go to the smaller format (br, zstd, gzip).
//!   A coding ranked below `identity` (`gzip;q=0.1, identity`) loses to it.
//! - `identity` is always served when nothing else is acceptable, even if the client marked it
//!   `q=0`: §12.5.3 allows it, and a 406 for a plain file helps nobody (nginx does the same).
//! - Sidecars are used whether or not on-the-fly compression is on: putting them there is the
//!   operator's explicit choice, as with nginx's `gzip_static on`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;

/// A content coding we can serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Br,
    Zstd,
    Gzip,
}

impl Coding {
    /// Server preference order for ties.
    pub const ALL: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];

    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    /// The sidecar file's extension.
    pub fn extension(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Zstd => "zst",
            Coding::Gzip => "gz",
        }
    }
}

/// A parsed `Accept-Encoding`: (coding, q) pairs, lowercase, q in thousandths.
#[derive(Clone, Debug, Default)]
pub struct AcceptEncoding {
    entries: Vec<(String, u16)>,
    present: bool,
}

impl AcceptEncoding {
    /// Parse the field (all its lines joined); `None` means the field was absent.
    pub fn parse(value: Option<&str>) -> AcceptEncoding {
        let Some(value) = value else {
            return AcceptEncoding::default();
        };
        let entries = value
            .split(',')
            .filter_map(|item| {
                let mut params = item.split(';');
                let coding = params.next()?.trim().to_ascii_lowercase();
                if coding.is_empty() {
                    return None;
                }
                Some((coding, q_of(params)?))
            })
            .collect();
        AcceptEncoding {
            entries,
            present: true,
        }
    }

    /// The q-value (thousandths) the client gives `coding`: its own entry (or `x-gzip` for
    /// gzip), else `*`, else 0 (§12.5.3: a coding not listed is not acceptable when the field
    /// is present; with no field at all, only identity is assumed, so 0 too).
    pub fn q(&self, coding: Coding) -> u16 {
        let name = coding.token();
        let own = self
            .entries
            .iter()
            .filter(|(c, _)| c == name || (coding == Coding::Gzip && c == "x-gzip"))
            .map(|(_, q)| *q)
            .max();
        if let Some(q) = own {
            return q;
        }
        if !self.present {
            return 0;
        }
        self.entries
            .iter()
            .find(|(c, _)| c == "*")
            .map_or(0, |(_, q)| *q)
    }

    /// The q-value the client gives `identity` by name (its own entry, else `*`'s), or 0 when
    /// it names neither. Identity is still acceptable then (§12.5.3), but a client that ranks
    /// only codings (`br;q=0.5, gzip;q=0.9`) wants one of them, so an unnamed identity ranks
    /// below every coding.
    pub fn identity_q(&self) -> u16 {
        let own = |name: &str| {
            self.entries
                .iter()
                .filter(|(c, _)| c == name)
                .map(|(_, q)| *q)
                .max()
        };
        own("identity").or_else(|| own("*")).unwrap_or(0)
    }

    /// The best coding among `available` (in server preference order) with q > 0 and at
    /// least the q the client gave identity by name (a tie goes to the coding). `None`: send
    /// identity.
    pub fn pick(&self, available: &[Coding]) -> Option<Coding> {
        let floor = self.identity_q().max(1);
        let mut best: Option<(Coding, u16)> = None;
        for &c in available {
            let q = self.q(c);
            if q >= floor && best.is_none_or(|(_, bq)| q > bq) {
                best = Some((c, q));
            }
        }
        best.map(|(c, _)| c)
    }
}

/// The weight among a list member's parameters (`;q=0.5`, RFC 9110 §12.4.2), in
/// thousandths; 1000 without one, `None` when it is malformed (the member is then ignored).
pub fn q_of<'a>(params: impl Iterator<Item = &'a str>) -> Option<u16> {
    let mut q = 1000;
    for p in params {
        if let Some((k, v)) = p.split_once('=') {
            if k.trim().eq_ignore_ascii_case("q") {
                q = parse_q(v.trim())?;
            }
        }
    }
    Some(q)
}

/// A qvalue (§12.4.2): `0`, `1`, `0.xyz`, `1.000`; thousandths. `None` if malformed.
pub fn parse_q(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Is a media type worth compressing (text, and the structured text formats)?
pub fn compressible(mime: &str) -> bool {
    let essence = mime.split(';').next().unwrap_or("").trim();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence,
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "application/wasm"
                | "image/svg+xml"
                | "application/manifest+json"
        )
}

/// Smallest file gzipped on the fly: below this the header overhead eats the gain.
pub const GZIP_MIN_SIZE: u64 = 1024;
/// Largest file gzipped on the fly (bigger ones are sent as they are; ship a `.gz` sidecar).
pub const GZIP_MAX_SIZE: u64 = 8 * 1024 * 1024;
/// Bytes of gzipped output kept in memory across all files.
pub const GZIP_CACHE_BUDGET: usize = 32 * 1024 * 1024;

/// Entries kept at most (each costs at least [`ENTRY_OVERHEAD`] bytes of the budget too).
pub const GZIP_CACHE_MAX_ENTRIES: usize = 4096;
/// What an entry costs beyond its bytes (key, bookkeeping); also what a "does not shrink"
/// marker costs, so markers are bounded by the budget like everything else.
const ENTRY_OVERHEAD: usize = 256;

/// Stack for the thread that runs the deflate compressor: miniz_oxide builds its ~160 KiB
/// hash tables on the stack before boxing them in unoptimized builds, which overflows the
/// small stacks connection threads run on (256 KiB in the threaded model).
const GZIP_STACK_SIZE: usize = 2 * 1024 * 1024;

/// Gzip `raw` on a short-lived thread with a known, ample stack, whatever stack the calling
/// driver thread has. Only cache misses pay for the thread; `None` if it cannot be spawned.
fn gzip_on_own_stack(raw: &[u8]) -> Option<Vec<u8>> {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("tincan-gzip".into())
            .stack_size(GZIP_STACK_SIZE)
            .spawn_scoped(scope, || {
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(raw.len() / 3),
                    flate2::Compression::default(),
                );
                enc.write_all(raw).ok()?;
                enc.finish().ok()
            })
            .ok()?;
        worker.join().ok().flatten()
    })
}

/// Identity of one version of one file: a change in size or mtime is a new key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: u128,
}

/// On-the-fly gzip with a least-recently-used cache bounded by a byte budget.
#[derive(Debug)]
pub struct GzipCache {
    budget: usize,
    inner: Mutex<Lru>,
}

#[derive(Debug, Default)]
struct Lru {
    map: HashMap<CacheKey, (Bytes, u64)>,
    /// use-tick → key, oldest first.
    order: BTreeMap<u64, CacheKey>,
    tick: u64,
    bytes: usize,
}

impl GzipCache {
    pub fn new(budget: usize) -> GzipCache {
        GzipCache {
            budget,
            inner: Mutex::new(Lru::default()),
        }
    }

    /// The gzipped content of `file` (`key.size` bytes), from the cache or freshly made.
    /// `None` if the file cannot be read in full (it shrank: serve identity and let the
    /// session's short-file rule apply) or compressing does not make it smaller.
    pub fn get(&self, key: &CacheKey, file: &File) -> Option<Bytes> {
        if let Some(hit) = self.lookup(key) {
            // An empty entry records "gzip does not shrink this", so it is not retried.
            return (!hit.is_empty()).then_some(hit);
        }
        // Compress without holding the lock; two racing requests may both compress once.
        let mut raw = vec![0; usize::try_from(key.size).ok()?];
        file.read_exact_at(&mut raw, 0).ok()?;
        let gz = Bytes::from(gzip_on_own_stack(&raw)?);
        if gz.len() as u64 >= key.size {
            self.insert(key.clone(), Bytes::new());
            return None;
        }
        self.insert(key.clone(), gz.clone());
        Some(gz)
    }

    fn lookup(&self, key: &CacheKey) -> Option<Bytes> {
        let mut lru = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        lru.tick += 1;
        let tick = lru.tick;
        let (bytes, old) = {
            let entry = lru.map.get_mut(key)?;
            let old = std::mem::replace(&mut entry.1, tick);
            (entry.0.clone(), old)
        };
        lru.order.remove(&old);
        lru.order.insert(tick, key.clone());
        Some(bytes)
    }

    fn insert(&self, key: CacheKey, gz: Bytes) {
        // One entry may take at most a quarter of the budget, so a single big file cannot
        // flush everything else.
        let cost = gz.len() + ENTRY_OVERHEAD;
        if cost > self.budget / 4 {
            return;
        }
        let mut lru = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        lru.tick += 1;
        let tick = lru.tick;
        if let Some((old, old_tick)) = lru.map.remove(&key) {
            lru.bytes -= old.len() + ENTRY_OVERHEAD;
            lru.order.remove(&old_tick);
        }
        while lru.bytes + cost > self.budget || lru.map.len() >= GZIP_CACHE_MAX_ENTRIES {
            let Some((_, victim)) = lru.order.pop_first() else {
                break;
            };
            if let Some((b, _)) = lru.map.remove(&victim) {
                lru.bytes -= b.len() + ENTRY_OVERHEAD;
            }
        }
        lru.bytes += cost;
        lru.order.insert(tick, key.clone());
        lru.map.insert(key, (gz, tick));
    }

    /// Budget currently used: cached bytes plus per-entry overhead (for tests and metrics).
    pub fn cached_bytes(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_values_parse_strictly() {
        let table: &[(&str, Option<u16>)] = &[
            ("1", Some(1000)),
            ("1.0", Some(1000)),
            ("1.000", Some(1000)),
            ("0", Some(0)),
            ("0.5", Some(500)),
            ("0.05", Some(50)),
            ("0.001", Some(1)),
            ("0.", Some(0)),
            ("1.001", None),
            ("0.0001", None),
            ("2", None),
            ("-1", None),
            ("0.x", None),
            ("", None),
        ];
        for (s, want) in table {
            assert_eq!(parse_q(s), *want, "{s}");
        }
    }

    #[test]
    fn accept_encoding_picks_the_best_acceptable_coding() {
        use Coding::*;
        let all = &Coding::ALL[..];
        let table: &[(Option<&str>, &[Coding], Option<Coding>)] = &[
            (None, all, None),
            (Some(""), all, None),
            (Some("gzip"), all, Some(Gzip)),
            (Some("x-gzip"), all, Some(Gzip)),
            (Some("gzip, deflate, br"), all, Some(Br)),
            (Some("gzip, deflate, br, zstd"), all, Some(Br)),
            (Some("gzip, zstd"), all, Some(Zstd)),
            (Some("br;q=0.5, gzip;q=0.9"), all, Some(Gzip)),
            (Some("br;q=0, gzip;q=0"), all, None),
            (Some("*"), all, Some(Br)),
            (Some("*;q=0.5, br;q=0"), all, Some(Zstd)),
            (Some("*;q=0"), all, None),
            (Some("identity"), all, None),
            (Some("GZIP;Q=0.5"), all, Some(Gzip)),
            (Some("gzip;q=bogus, br"), all, Some(Br)),
            (Some("br, gzip"), &[Gzip], Some(Gzip)),
            (Some("br"), &[Gzip], None),
            (Some("gzip"), &[], None),
            // A coding ranked below identity loses to it; a tie goes to the coding.
            (Some("gzip;q=0.001, identity"), all, None),
            (Some("identity;q=0.5, *;q=0.1"), all, None),
            (Some("identity;q=0.5, gzip;q=0.5"), all, Some(Gzip)),
            (Some("identity;q=0, gzip;q=0.1"), all, Some(Gzip)),
            (Some("*;q=0.5, gzip"), all, Some(Gzip)),
        ];
        for (header, avail, want) in table {
            assert_eq!(
                AcceptEncoding::parse(*header).pick(avail),
                *want,
                "{header:?} of {avail:?}"
            );
        }
    }

    #[test]
    fn compressible_types_are_text_like() {
        for t in [
            "text/html; charset=utf-8",
            "text/css",
            "application/javascript",
            "application/json",
            "image/svg+xml",
            "application/wasm",
            "application/ld+json",
        ] {
            assert!(compressible(t), "{t}");
        }
        for t in [
            "image/png",
            "application/octet-stream",
            "application/gzip",
            "video/mp4",
        ] {
            assert!(!compressible(t), "{t}");
        }
    }

    fn temp_file(content: &[u8]) -> (PathBuf, File) {
        let p = std::env::temp_dir().join(format!(
            "tincan-gz-{}-{}",
            std::process::id(),
            content.len()
        ));
        std::fs::write(&p, content).unwrap();
        let f = File::open(&p).unwrap();
        (p, f)
    }

    #[test]
    fn gzip_cache_round_trips_and_stays_within_its_budget() {
        use std::io::Read;
        let text = "tincan serves text. ".repeat(500);
        let (p, f) = temp_file(text.as_bytes());
        let cache = GzipCache::new(4 * 1024 * 1024);
        let key = |n: u128| CacheKey {
            path: p.clone(),
            size: text.len() as u64,
            mtime_ns: n,
        };
        let gz = cache.get(&key(1), &f).expect("compresses");
        let mut back = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, text);
        let cost = gz.len() + ENTRY_OVERHEAD;
        assert_eq!(cache.cached_bytes(), cost);
        // A hit returns the same bytes without growing the cache.
        assert_eq!(cache.get(&key(1), &f).unwrap(), gz);
        assert_eq!(cache.cached_bytes(), cost);

        // A budget of four entries' worth keeps the newest four and never more.
        let small = GzipCache::new(cost * 4);
        for n in 0..10 {
            small.get(&key(n), &f).unwrap();
            assert!(small.cached_bytes() <= cost * 4);
        }
        assert!(small.lookup(&key(9)).is_some());
        assert!(small.lookup(&key(0)).is_none());
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn gzip_works_from_a_thread_with_a_small_stack() {
        let text = "small stacks, big tables. ".repeat(100);
        let (p, f) = temp_file(text.as_bytes());
        let cache = GzipCache::new(1 << 20);
        let key = CacheKey {
            path: p.clone(),
            size: text.len() as u64,
            mtime_ns: 7,
        };
        let got = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || cache.get(&key, &f).map(|b| b.len()))
            .unwrap()
            .join()
            .unwrap();
        assert!(got.is_some_and(|n| n < text.len()));
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn incompressible_content_is_not_cached() {
        // Pseudo-random bytes do not shrink under gzip.
        let mut x: u64 = 0x1234_5678;
        let data: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let (p, f) = temp_file(&data);
        let cache = GzipCache::new(1 << 20);
        let key = CacheKey {
            path: p.clone(),
            size: data.len() as u64,
            mtime_ns: 0,
        };
        assert!(cache.get(&key, &f).is_none());
        // Only the small "does not shrink" marker is kept, and it answers the next request.
        assert_eq!(cache.cached_bytes(), ENTRY_OVERHEAD);
        assert!(cache.get(&key, &f).is_none());
        assert_eq!(cache.lookup(&key), Some(Bytes::new()));
        let _ = std::fs::remove_file(p);
    }
}
