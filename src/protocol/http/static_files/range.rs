//! Step 6: byte ranges (RFC 9110 §14). Parse `Range: bytes=...`, resolve each spec against the
//! representation's length, and build a 206 body: one region with `Content-Range`, or several as
//! `multipart/byteranges` (§14.6).
//!
//! Defences against the "Apache Killer" (CVE-2011-3192; §14.2 allows refusing such sets): a
//! header with more than [`MAX_RANGE_SPECS`] specs is ignored outright; overlapping or adjacent
//! satisfiable ranges are coalesced (the parts keep the order of the specs); if more than [`MAX_RANGES`] remain, the
//! whole representation is sent with 200. No request can make the answer larger than about the
//! file plus a few part headers.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::protocol::http::message::{Body, Part};

/// Specs in one `Range` header beyond which the header is ignored (parsing stays bounded).
pub const MAX_RANGE_SPECS: usize = 100;
/// Distinct ranges (after coalescing) beyond which the whole file is sent instead.
pub const MAX_RANGES: usize = 16;

/// What a `Range` header asks of a representation `len` bytes long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeSet {
    /// Malformed, another unit, or too greedy: send the whole representation (200).
    Ignore,
    /// Well-formed but no spec overlaps the content: 416 with `bytes */len`.
    Unsatisfiable,
    /// Half-open `[start, end)` ranges, disjoint and not adjacent, in the order of the specs
    /// that asked for them.
    Ranges(Vec<(u64, u64)>),
}

/// Parse and resolve a `Range` field value (§14.1.1, §14.1.2).
pub fn parse(value: &str, len: u64) -> RangeSet {
    let Some(specs) = value.trim().strip_prefix("bytes=") else {
        // The unit token is case-insensitive (§14.1).
        let v = value.trim();
        // Compared as bytes: `v[..6]` would panic when byte 6 falls inside a multi-byte
        // character. A match means those six bytes are ASCII, so `v[6..]` is a char boundary.
        if v.len() > 6 && v.as_bytes()[..6].eq_ignore_ascii_case(b"bytes=") {
            return parse(&format!("bytes={}", &v[6..]), len);
        }
        return RangeSet::Ignore;
    };
    let mut ranges = Vec::new();
    let mut count = 0;
    // §14.1.2: of an empty representation, a non-zero suffix-range is satisfiable; no 206
    // can carry an empty range, so the answer is the whole (empty) representation, 200.
    let mut empty_suffix = false;
    for spec in specs.split(',') {
        let spec = spec.trim_matches([' ', '\t']);
        if spec.is_empty() {
            // Empty list elements are allowed by the list syntax (§5.6.1).
            continue;
        }
        count += 1;
        if count > MAX_RANGE_SPECS {
            return RangeSet::Ignore;
        }
        let Some((first, last)) = spec.split_once('-') else {
            return RangeSet::Ignore;
        };
        let resolved = if first.is_empty() {
            // suffix-range: the last N bytes.
            let Some(n) = number(last) else {
                return RangeSet::Ignore;
            };
            empty_suffix |= n > 0 && len == 0;
            if n == 0 || len == 0 {
                None
            } else {
                Some((len.saturating_sub(n), len))
            }
        } else {
            let Some(a) = number(first) else {
                return RangeSet::Ignore;
            };
            let b = if last.is_empty() {
                None
            } else {
                match number(last) {
                    Some(b) if b >= a => Some(b),
                    // last-pos < first-pos makes the whole header invalid (§14.1.1).
                    _ => return RangeSet::Ignore,
                }
            };
            if a >= len {
                None
            } else {
                let end = b.map_or(len, |b| b.saturating_add(1).min(len));
                Some((a, end))
            }
        };
        if let Some(r) = resolved {
            ranges.push(r);
        }
    }
    if count == 0 {
        return RangeSet::Ignore;
    }
    if ranges.is_empty() {
        return if empty_suffix {
            RangeSet::Ignore
        } else {
            RangeSet::Unsatisfiable
        };
    }
    // Coalesce overlapping and adjacent ranges (§14.6 allows it whatever their order), then
    // send the parts in the order their specs came (§14.6: SHOULD), each coalesced part at
    // the place of its first spec.
    let mut by_start: Vec<(u64, u64, usize)> = ranges
        .into_iter()
        .enumerate()
        .map(|(i, (a, b))| (a, b, i))
        .collect();
    by_start.sort_unstable();
    let mut merged: Vec<(u64, u64, usize)> = Vec::with_capacity(by_start.len());
    for (a, b, i) in by_start {
        match merged.last_mut() {
            Some(last) if a <= last.1 => {
                last.1 = last.1.max(b);
                last.2 = last.2.min(i);
            }
            _ => merged.push((a, b, i)),
        }
    }
    if merged.len() > MAX_RANGES {
        return RangeSet::Ignore;
    }
    merged.sort_unstable_by_key(|&(_, _, i)| i);
    RangeSet::Ranges(merged.into_iter().map(|(a, b, _)| (a, b)).collect())
}

/// A non-negative decimal (1*DIGIT) that fits in u64.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `Content-Range` for one satisfied range.
pub fn content_range(start: u64, end: u64, len: u64) -> String {
    format!("bytes {start}-{}/{len}", end - 1)
}

/// The selected representation's content: an open file, or bytes encoded in memory.
#[derive(Clone, Debug)]
pub enum Content {
    File { file: Arc<File>, len: u64 },
    Bytes(Bytes),
}

impl Content {
    pub fn len(&self) -> u64 {
        match self {
            Content::File { len, .. } => *len,
            Content::Bytes(b) => b.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole content as a body.
    pub fn body(&self) -> Body {
        self.slice(0, self.len())
    }

    /// `[start, end)` as a body.
    pub fn slice(&self, start: u64, end: u64) -> Body {
        match self.part(start, end) {
            Part::File { file, offset, len } => Body::File { file, offset, len },
            Part::Bytes(b) => Body::Bytes(b),
        }
    }

    fn part(&self, start: u64, end: u64) -> Part {
        match self {
            Content::File { file, .. } => Part::File {
                file: file.clone(),
                offset: start,
                len: end - start,
            },
            Content::Bytes(b) => Part::Bytes(b.slice(start as usize..end as usize)),
        }
    }
}

/// A boundary unlikely to occur in any file: process, time and a counter, in hex.
pub fn boundary() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mixed = (t ^ (u64::from(std::process::id()) << 32) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    format!("tincan-{mixed:016x}{n:06x}")
}

/// A `multipart/byteranges` body (§14.6): each part has its own `Content-Type` and
/// `Content-Range`; file parts stay file regions so they can leave by `sendfile`.
pub fn multipart(content: &Content, ranges: &[(u64, u64)], ctype: &str, boundary: &str) -> Body {
    let len = content.len();
    let mut parts = Vec::with_capacity(ranges.len() * 2 + 1);
    for &(a, b) in ranges {
        let head = format!(
            "\r\n--{boundary}\r\nContent-Type: {ctype}\r\nContent-Range: {}\r\n\r\n",
            content_range(a, b, len)
        );
        parts.push(Part::Bytes(Bytes::from(head)));
        parts.push(content.part(a, b));
    }
    parts.push(Part::Bytes(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
    Body::Parts(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(v: &[(u64, u64)]) -> RangeSet {
        RangeSet::Ranges(v.to_vec())
    }

    #[test]
    fn range_headers_resolve_against_the_length() {
        let table: &[(&str, u64, RangeSet)] = &[
            ("bytes=0-0", 100, r(&[(0, 1)])),
            ("bytes=0-99", 100, r(&[(0, 100)])),
            ("bytes=0-1000", 100, r(&[(0, 100)])),
            ("bytes=10-", 100, r(&[(10, 100)])),
            ("bytes=-10", 100, r(&[(90, 100)])),
            ("bytes=-1000", 100, r(&[(0, 100)])),
            ("BYTES=1-2", 100, r(&[(1, 3)])),
            ("bytes= 1-2 , 5-6", 100, r(&[(1, 3), (5, 7)])),
            ("bytes=1-2,,5-6", 100, r(&[(1, 3), (5, 7)])),
            ("bytes=99-", 100, r(&[(99, 100)])),
            ("bytes=18446744073709551615-", 100, RangeSet::Unsatisfiable),
            ("bytes=0-18446744073709551615", 100, r(&[(0, 100)])),
            // Unsatisfiable: starts past the end, empty suffix, empty file.
            ("bytes=100-", 100, RangeSet::Unsatisfiable),
            ("bytes=100-200", 100, RangeSet::Unsatisfiable),
            ("bytes=-0", 100, RangeSet::Unsatisfiable),
            ("bytes=0-", 0, RangeSet::Unsatisfiable),
            // §14.1.2: a non-zero suffix of an empty file is satisfiable: the whole, 200.
            ("bytes=-5", 0, RangeSet::Ignore),
            ("bytes=0-0, -1", 0, RangeSet::Ignore),
            ("bytes=-0", 0, RangeSet::Unsatisfiable),
            // One satisfiable spec is enough.
            ("bytes=200-300,0-0", 100, r(&[(0, 1)])),
            // Malformed or another unit: ignored.
            ("bytes=5-1", 100, RangeSet::Ignore),
            ("bytes=a-b", 100, RangeSet::Ignore),
            ("bytes=1", 100, RangeSet::Ignore),
            ("bytes=-", 100, RangeSet::Ignore),
            ("bytes=+1-2", 100, RangeSet::Ignore),
            ("bytes=1-2-3", 100, RangeSet::Ignore),
            ("bytes=", 100, RangeSet::Ignore),
            ("bytes=99999999999999999999-", 100, RangeSet::Ignore),
            ("items=0-1", 100, RangeSet::Ignore),
            ("0-1", 100, RangeSet::Ignore),
            ("", 100, RangeSet::Ignore),
        ];
        for (v, len, want) in table {
            assert_eq!(&parse(v, *len), want, "{v} / {len}");
        }
    }

    #[test]
    fn overlapping_and_adjacent_ranges_are_coalesced_and_parts_keep_the_specs_order() {
        // §14.6: parts in the order of their specs; a coalesced part where its first spec was.
        assert_eq!(
            parse("bytes=50-59,0-9,5-14,15-19,-5", 100),
            r(&[(50, 60), (0, 20), (95, 100)])
        );
        assert_eq!(parse("bytes=100-104,0-4", 200), r(&[(100, 105), (0, 5)]));
        assert_eq!(
            parse("bytes=0-0,-1,100-104", 200),
            r(&[(0, 1), (199, 200), (100, 105)])
        );
        // The Apache Killer: many overlapping ranges collapse into one.
        let killer = (0..90)
            .map(|i| format!("0-{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(parse(&format!("bytes={killer}"), 1000), r(&[(0, 90)]));
    }

    #[test]
    fn too_many_ranges_fall_back_to_the_whole_file() {
        let many = (0..17)
            .map(|i| format!("{}-{}", i * 10, i * 10 + 1))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(parse(&format!("bytes={many}"), 1000), RangeSet::Ignore);
        let sixteen = (0..16)
            .map(|i| format!("{}-{}", i * 10, i * 10 + 1))
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            matches!(parse(&format!("bytes={sixteen}"), 1000), RangeSet::Ranges(v) if v.len() == 16)
        );
        let flood = vec!["0-0"; MAX_RANGE_SPECS + 1].join(",");
        assert_eq!(parse(&format!("bytes={flood}"), 1000), RangeSet::Ignore);
    }

    #[test]
    fn multipart_bodies_frame_every_part() {
        let content = Content::Bytes(Bytes::from_static(b"0123456789"));
        let body = multipart(&content, &[(0, 2), (5, 10)], "text/plain", "XYZ");
        let Body::Parts(parts) = &body else {
            panic!("not parts")
        };
        let mut all = Vec::new();
        for p in parts {
            match p {
                Part::Bytes(b) => all.extend_from_slice(b),
                Part::File { .. } => unreachable!(),
            }
        }
        let text = String::from_utf8(all).unwrap();
        assert_eq!(
            text,
            "\r\n--XYZ\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\n01\
             \r\n--XYZ\r\nContent-Type: text/plain\r\nContent-Range: bytes 5-9/10\r\n\r\n56789\
             \r\n--XYZ--\r\n"
        );
        assert_eq!(body.len(), text.len() as u64);
    }

    #[test]
    fn a_unit_cut_inside_a_multibyte_character_is_ignored_not_a_panic() {
        // Found by fuzz/range_header: byte 6 of "bytes\u{1f600}=0-1" is inside the emoji.
        for v in [
            "bytes\u{1f600}=0-1",
            "bytes\u{e9}=0-1",
            "\u{e9}\u{e9}\u{e9}\u{e9}",
        ] {
            assert_eq!(parse(v, 100), RangeSet::Ignore, "{v}");
        }
        assert_eq!(parse("  ByTeS=0-1", 100), r(&[(0, 2)]));
    }

    /// RFC 2046 §5.1.1: a boundary is 1 to 70 characters from its alphabet; and two
    /// responses made the same instant still get different ones.
    #[test]
    fn boundaries_are_valid_and_differ_between_responses() {
        let made: Vec<String> = (0..1000).map(|_| boundary()).collect();
        for b in &made {
            assert!((1..=70).contains(&b.len()), "{b}");
            assert!(
                b.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"'()+_,-./:=?".contains(&c)),
                "{b}"
            );
        }
        let distinct: std::collections::HashSet<&String> = made.iter().collect();
        assert_eq!(distinct.len(), made.len());
    }
}
