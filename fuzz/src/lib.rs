//! The fuzz targets' bodies: each module turns one fuzzer input (`&[u8]`) into a call of a
//! tincan parser or sans-I/O session and asserts the properties that must hold for *any* input.
//! A failed assertion is a finding, exactly like a panic inside tincan.
//!
//! The bodies live here rather than in `fuzz_targets/` so that two runners share them:
//! - `cargo fuzz run TARGET` (libFuzzer, coverage-guided; the `fuzz_targets/*.rs` one-liners);
//! - `cargo run --bin replay -- TARGET ...` (stable Rust, no libFuzzer: replays a corpus and runs
//!   seeded random and mutated inputs for a bounded time; see `src/bin/replay.rs`).
//!
//! Every module's `run` reads its parameters (framing, limits, split points, flags) from the
//! front of the input with [`Unstructured`] and uses the rest as the payload, so a fuzzer that
//! mutates bytes explores parameters and payload together.

pub use libfuzzer_sys::arbitrary::Unstructured;

pub mod chat_session;
pub mod echo_session;
pub mod framing_decode;
pub mod gateway;
pub mod http_session;
pub mod range_header;
pub mod static_headers;
pub mod static_path;

/// A target's body: one fuzzer input in, a panic if a property fails.
pub type Target = fn(&[u8]);

/// Every target by name, for the replay runner.
pub const TARGETS: &[(&str, Target)] = &[
    ("framing_decode", framing_decode::run),
    ("static_path", static_path::run),
    ("range_header", range_header::run),
    ("echo_session", echo_session::run),
    ("chat_session", chat_session::run),
    ("http_session", http_session::run),
    ("static_headers", static_headers::run),
    ("gateway", gateway::run),
];

/// A byte from the input, or 0 once it is exhausted.
pub fn byte(u: &mut Unstructured<'_>) -> u8 {
    u.arbitrary::<u8>().unwrap_or(0)
}

/// A little-endian u16 from the input, or 0.
pub fn u16_(u: &mut Unstructured<'_>) -> u16 {
    u.arbitrary::<u16>().unwrap_or(0)
}

/// Up to `max` cut points (sorted, deduplicated, each within `0..=len`) that split a payload of
/// `len` bytes into the reads a driver might hand a session. Positions are read as u16 so the
/// choice costs two input bytes each; they are taken modulo `len + 1`.
pub fn cuts(raw: &[u16], len: usize) -> Vec<usize> {
    let mut v: Vec<usize> = raw.iter().map(|&c| c as usize % (len + 1)).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Read up to `max` raw cut positions (a count byte, then two bytes each).
pub fn raw_cuts(u: &mut Unstructured<'_>, max: usize) -> Vec<u16> {
    let n = byte(u) as usize % (max + 1);
    (0..n).map(|_| u16_(u)).collect()
}

/// `payload` cut at `cuts` (as from [`cuts`]): every piece in order, the empty ones included, so
/// a session also sees a read that added nothing new. Always at least one piece.
pub fn pieces<'a>(payload: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut at = 0;
    for &c in cuts {
        out.push(&payload[at..c]);
        at = c;
    }
    out.push(&payload[at..]);
    out
}

/// Turn each payload byte into one of `atoms` (byte modulo their count): a cheap way for the
/// random runner to reach the interesting corners of a text grammar that uniformly random bytes
/// almost never spell.
pub fn spell(payload: &[u8], atoms: &[&str]) -> String {
    payload
        .iter()
        .map(|&b| atoms[b as usize % atoms.len()])
        .collect()
}
