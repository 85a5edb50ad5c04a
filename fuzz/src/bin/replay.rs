//! The stable-Rust runner for the fuzz targets: no libFuzzer, no nightly flags.
//!
//! ```text
//! replay TARGET [--seconds S] [--iterations N] [--seed X] [--max-len L] [CORPUS_DIR_OR_FILE...]
//! ```
//!
//! It first runs every file of the given corpus directories (or single files: a crash artifact
//! from `cargo fuzz`), then, for at most S seconds (default 10) or N iterations, inputs that are
//! either random bytes or a corpus entry mutated (bytes flipped, inserted, removed, spliced with
//! another entry). A failing input is written to `fuzz/artifacts/TARGET/crash-<hash>` before the
//! panic is reported, so it can be replayed alone. It is blind (no coverage feedback): a smoke
//! test and a regression runner, not a substitute for `cargo fuzz run`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tincan_fuzz::TARGETS;

/// SplitMix64: tiny, seedable, good enough to pick bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn usage() -> ! {
    let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    eprintln!(
        "usage: replay TARGET [--seconds S] [--iterations N] [--seed X] [--max-len L] [CORPUS...]\n\
         targets: {}",
        names.join(", ")
    );
    std::process::exit(2);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(name) = args.next() else { usage() };
    let Some(&(_, target)) = TARGETS.iter().find(|(n, _)| *n == name) else {
        usage()
    };
    let mut seconds = 10u64;
    let mut iterations = u64::MAX;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut max_len = 512usize;
    let mut paths = Vec::new();
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> u64 {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("{what} needs a number");
                usage()
            })
        };
        match a.as_str() {
            "--seconds" => seconds = num("--seconds"),
            "--iterations" => iterations = num("--iterations"),
            "--seed" => seed = num("--seed"),
            "--max-len" => max_len = num("--max-len") as usize,
            _ => paths.push(PathBuf::from(a)),
        }
    }

    let mut corpus: Vec<Vec<u8>> = Vec::new();
    for p in &paths {
        collect(p, &mut corpus);
    }
    let started = Instant::now();
    for input in &corpus {
        run_one(&name, target, input);
    }
    let replayed = corpus.len();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }

    println!("{name}: replayed {replayed} corpus inputs; random run seed {seed}");
    let mut rng = Rng(seed);
    let deadline = started + Duration::from_secs(seconds);
    let mut execs = 0u64;
    let mut buf = Vec::new();
    while execs < iterations && (execs & 255 != 0 || Instant::now() < deadline) {
        buf.clear();
        if rng.below(4) == 0 {
            let n = rng.below(max_len + 1);
            buf.extend(rng.bytes(n));
        } else {
            buf.extend_from_slice(&corpus[rng.below(corpus.len())]);
            for _ in 0..=rng.below(8) {
                mutate(&mut rng, &mut buf, &corpus, max_len);
            }
        }
        run_one(&name, target, &buf);
        execs += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{name}: {execs} random inputs in {secs:.1} s ({:.0} execs/s), no failure",
        execs as f64 / secs.max(1e-9)
    );
}

/// Every regular file under `p` (or `p` itself).
fn collect(p: &Path, into: &mut Vec<Vec<u8>>) {
    if p.is_dir() {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for e in entries {
            collect(&e, into);
        }
    } else if let Ok(bytes) = std::fs::read(p) {
        into.push(bytes);
    }
}

/// One libFuzzer-style mutation.
fn mutate(rng: &mut Rng, buf: &mut Vec<u8>, corpus: &[Vec<u8>], max_len: usize) {
    match rng.below(6) {
        0 if !buf.is_empty() => {
            let i = rng.below(buf.len());
            buf[i] ^= 1 << rng.below(8);
        }
        1 if !buf.is_empty() => {
            let i = rng.below(buf.len());
            buf[i] = rng.next() as u8;
        }
        2 if buf.len() < max_len => {
            let i = rng.below(buf.len() + 1);
            let n = 1 + rng.below(8);
            let bytes = rng.bytes(n);
            buf.splice(i..i, bytes);
        }
        3 if !buf.is_empty() => {
            let i = rng.below(buf.len());
            let n = 1 + rng.below((buf.len() - i).min(8));
            buf.drain(i..i + n);
        }
        4 => {
            // Splice a piece of another corpus entry in.
            let other = &corpus[rng.below(corpus.len())];
            if !other.is_empty() {
                let a = rng.below(other.len());
                let b = a + rng.below(other.len() - a + 1);
                let i = rng.below(buf.len() + 1);
                buf.splice(i..i, other[a..b].iter().copied());
            }
        }
        _ if !buf.is_empty() => {
            // Duplicate a run (repetition finds limits and pipelining bugs).
            let a = rng.below(buf.len());
            let b = a + rng.below(buf.len() - a + 1);
            let piece = buf[a..b].to_vec();
            let i = rng.below(buf.len() + 1);
            buf.splice(i..i, piece);
        }
        _ => {
            let n = 1 + rng.below(8);
            buf.extend(rng.bytes(n));
        }
    }
    buf.truncate(max_len.max(1) * 4);
}

/// Run one input; on a panic, save it as an artifact and stop with the panic's message.
fn run_one(name: &str, target: fn(&[u8]), input: &[u8]) {
    if std::panic::catch_unwind(|| target(input)).is_ok() {
        return;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in input {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("artifacts")
        .join(name);
    let file = dir.join(format!("crash-{h:016x}"));
    let saved = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::File::create(&file))
        .and_then(|mut f| f.write_all(input));
    match saved {
        Ok(()) => eprintln!("{name}: failing input saved to {}", file.display()),
        Err(e) => eprintln!("{name}: failing input {input:?} (not saved: {e})"),
    }
    std::process::exit(1);
}
