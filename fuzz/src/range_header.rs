//! `range_header`: any `Range` field value against any representation length, through
//! `tincan::protocol::http::static_files::range`.
//!
//! Properties:
//! 1. `parse` never panics (whatever UTF-8 a client put in the field);
//! 2. satisfiable ranges are non-empty, inside the representation (`start < end <= len`),
//!    disjoint and not adjacent, and at most `MAX_RANGES` of them;
//!    the parts come in the order of the specs that asked for them (RFC 9110 §14.6), a coalesced
//!    part at the place of its first spec;
//! 3. no amplification: the selected bytes add up to at most `len`, and a multipart body built
//!    from them is at most `len` plus a bounded header per part;
//! 4. the unit is case-insensitive: `BYTES=` answers as `bytes=` does.

use bytes::Bytes;
use tincan::protocol::http::static_files::range::{self, Content, RangeSet, MAX_RANGES};

use crate::{byte, spell, u16_, Unstructured};

const ATOMS: &[&str] = &[
    "0",
    "1",
    "5",
    "9",
    "-",
    "-",
    ",",
    ",",
    " ",
    "\t",
    "bytes=",
    "BYTES=",
    "bYtEs",
    "=",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999",
    "\u{e9}",
    "+",
    "10",
    "100",
    "x",
];

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let flags = byte(&mut u);
    let len = match flags % 5 {
        0 => 0,
        1 => byte(&mut u) as u64,
        2 => u16_(&mut u) as u64,
        3 => u.arbitrary::<u64>().unwrap_or(0),
        _ => u64::MAX,
    };
    let rest = u.take_rest();
    let mut value = if flags & 8 != 0 {
        spell(rest, ATOMS)
    } else {
        String::from_utf8_lossy(rest).into_owned()
    };
    if flags & 16 != 0 {
        value.insert_str(0, "bytes=");
    }
    check(&value, len);
}

/// Bytes a multipart part adds around its content, beyond the boundary and the type:
/// `\r\n--B\r\nContent-Type: T\r\nContent-Range: bytes A-Z/L\r\n\r\n` with three u64s.
const PART_OVERHEAD: u64 = 2 + 2 + 2 + 14 + 2 + 21 + 3 * 20 + 2 + 4;

/// All the properties for one value and length; panics on a violation.
pub fn check(value: &str, len: u64) {
    let got = range::parse(value, len);
    if let RangeSet::Ranges(v) = &got {
        assert!(!v.is_empty(), "{value:?}/{len}: empty range set");
        assert!(v.len() <= MAX_RANGES, "{value:?}/{len}: {} ranges", v.len());
        for &(a, b) in v {
            assert!(a < b && b <= len, "{value:?}/{len}: range {a}..{b}");
        }
        let mut sorted = v.clone();
        sorted.sort_unstable();
        for w in sorted.windows(2) {
            assert!(w[0].1 < w[1].0, "{value:?}/{len}: {w:?} overlap or touch");
        }
        let firsts: Vec<usize> = v.iter().map(|&r| first_spec(value, len, r)).collect();
        assert!(
            firsts.windows(2).all(|w| w[0] < w[1]),
            "{value:?}/{len}: parts {v:?} are not in the order of their specs ({firsts:?})"
        );
        let total: u64 = v.iter().map(|(a, b)| b - a).sum();
        assert!(total <= len, "{value:?}/{len}: {total} bytes selected");
        if len <= 64 * 1024 {
            let content = Content::Bytes(Bytes::from(vec![b'x'; len as usize]));
            let ctype = "text/plain";
            let boundary = range::boundary();
            let body = range::multipart(&content, v, ctype, &boundary);
            let per_part = PART_OVERHEAD + (boundary.len() + ctype.len()) as u64;
            let bound = len + v.len() as u64 * per_part + boundary.len() as u64 + 8;
            assert!(
                body.len() <= bound,
                "{value:?}/{len}: a {}-byte multipart body (bound {bound})",
                body.len()
            );
            for &(a, b) in v {
                assert_eq!(content.slice(a, b).len(), b - a);
            }
        }
    }
    // Case-insensitive unit (RFC 9110 §14.1): the same answer for any spelling of "bytes".
    let trimmed = value.trim();
    if let Some(specs) = trimmed.strip_prefix("bytes=") {
        assert_eq!(
            range::parse(&format!("BYTES={specs}"), len),
            got,
            "{value:?}/{len}: BYTES= differs from bytes="
        );
    }
}

/// The index of the first spec of `value` whose own range lies inside `part`: where RFC 9110
/// §14.6 puts that part. Each spec is resolved alone, as a one-spec header.
fn first_spec(value: &str, len: u64, part: (u64, u64)) -> usize {
    // `parse` answered with ranges, so the value starts with `bytes=` in some spelling.
    let specs = &value.trim()[6..];
    specs
        .split(',')
        .filter(|s| !s.trim_matches([' ', '\t']).is_empty())
        .position(|spec| match range::parse(&format!("bytes={spec}"), len) {
            RangeSet::Ranges(one) => one[0].0 >= part.0 && one[0].1 <= part.1,
            _ => false,
        })
        .unwrap_or_else(|| panic!("{value:?}/{len}: part {part:?} answers no spec"))
}
