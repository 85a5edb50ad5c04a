//! Property tests for the request-path resolver and the `Range` parser: no path climbs out of
//! the root, and a `Range` answer is exactly the union of what was asked, clipped to the file,
//! never more. (The open-ended search on arbitrary bytes is `fuzz/`.)

use std::path::Component;

use proptest::prelude::*;

use super::path::UrlPath;
use super::range::{self, RangeSet, MAX_RANGES};

/// Request paths assembled from the pieces that traversal attacks are made of.
fn hostile_path() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        Just("/"),
        Just(".."),
        Just("."),
        Just("%2e"),
        Just("%2E%2e"),
        Just("%2f"),
        Just("%5c"),
        Just("\\"),
        Just("%00"),
        Just("%25"),
        Just("%"),
        Just("a"),
        Just(".a"),
        Just("%c0%ae"),
        Just("\u{e9}"),
        Just("%ff"),
        Just(";"),
    ];
    (any::<bool>(), proptest::collection::vec(atom, 0..12)).prop_map(|(slash, atoms)| {
        let mut s = if slash {
            String::from("/")
        } else {
            String::new()
        };
        s.extend(atoms);
        s
    })
}

/// One range spec as a client might write it, and whether it is well-formed on its own.
#[derive(Clone, Debug)]
enum Spec {
    /// `a-b` (b >= a)
    Closed(u64, u64),
    /// `a-`
    From(u64),
    /// `-n`
    Suffix(u64),
}

impl Spec {
    fn text(&self) -> String {
        match self {
            Spec::Closed(a, b) => format!("{a}-{b}"),
            Spec::From(a) => format!("{a}-"),
            Spec::Suffix(n) => format!("-{n}"),
        }
    }

    /// The bytes of a `len`-byte representation this spec selects (RFC 9110 §14.1.2).
    fn mark(&self, len: u64, bits: &mut [bool]) {
        let (a, b) = match *self {
            Spec::Closed(a, b) => (a, b.saturating_add(1).min(len)),
            Spec::From(a) => (a, len),
            Spec::Suffix(n) => (len.saturating_sub(n), if n == 0 { 0 } else { len }),
        };
        for bit in bits.iter_mut().take(b as usize).skip(a as usize) {
            *bit = true;
        }
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        (0u64..80, 0u64..40).prop_map(|(a, d)| Spec::Closed(a, a + d)),
        (0u64..80).prop_map(Spec::From),
        (0u64..80).prop_map(Spec::Suffix),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_resolved_path_never_leaves_the_root_and_encodes_back_to_itself(
        raw in hostile_path(),
        show in any::<bool>(),
    ) {
        if let Ok(p) = UrlPath::parse(&raw, show) {
            let rel = p.relative();
            prop_assert!(
                rel.components().all(|c| matches!(c, Component::Normal(_))),
                "{:?} resolved to {:?}", raw, rel
            );
            for s in &p.segments {
                prop_assert!(!s.is_empty() && s != b"." && s != b"..");
                prop_assert!(!s.iter().any(|b| matches!(b, b'/' | b'\\' | 0)));
                prop_assert!(show || s[0] != b'.', "{:?} shows a dotfile", raw);
            }
            let enc = p.encoded();
            prop_assert!(enc.starts_with('/') && !enc.starts_with("//"));
            let back = UrlPath::parse(&enc, show);
            prop_assert_eq!(back.map(|b| b.segments), Ok(p.segments));
        }
    }

    #[test]
    fn a_range_answer_is_the_union_of_the_specs_clipped_and_coalesced(
        specs in proptest::collection::vec(spec(), 1..24),
        len in 0u64..100,
        spaces in any::<bool>(),
    ) {
        let sep = if spaces { " , " } else { "," };
        let value = format!(
            "bytes={}",
            specs.iter().map(Spec::text).collect::<Vec<_>>().join(sep)
        );
        let mut bits = vec![false; len as usize];
        for s in &specs {
            s.mark(len, &mut bits);
        }
        // Maximal runs of selected bytes: coalescing merges overlapping and adjacent ranges.
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for (i, &on) in bits.iter().enumerate() {
            let i = i as u64;
            match runs.last_mut() {
                Some(last) if on && last.1 == i => last.1 = i + 1,
                _ if on => runs.push((i, i + 1)),
                _ => {}
            }
        }
        let empty_suffix = len == 0 && specs.iter().any(|s| matches!(s, Spec::Suffix(n) if *n > 0));
        let want = if runs.is_empty() && empty_suffix {
            // §14.1.2: satisfiable, but no 206 can carry it: the whole empty file.
            RangeSet::Ignore
        } else if runs.is_empty() {
            RangeSet::Unsatisfiable
        } else if runs.len() > MAX_RANGES {
            RangeSet::Ignore
        } else {
            RangeSet::Ranges(runs)
        };
        let got = range::parse(&value, len);
        let RangeSet::Ranges(parts) = &got else {
            prop_assert_eq!(got, want, "{}", value);
            return Ok(());
        };
        // The parts are the runs, in the order of the first spec that selected each (§14.6).
        let mut sorted = parts.clone();
        sorted.sort_unstable();
        prop_assert_eq!(RangeSet::Ranges(sorted), want, "{}", value);
        let first_spec = |&(a, b): &(u64, u64)| {
            specs.iter().position(|s| {
                let mut mine = vec![false; len as usize];
                s.mark(len, &mut mine);
                mine[a as usize..b as usize].iter().any(|&x| x)
            })
        };
        let order: Vec<_> = parts.iter().map(first_spec).collect();
        prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "{} gave {:?}", value, parts);
    }

    #[test]
    fn any_range_value_resolves_inside_the_file_and_selects_at_most_its_length(
        value in "[ bytesBYTES=0-9,\u{e9}\u{1f600}-]{0,40}",
        len in prop_oneof![Just(0u64), 0u64..200, Just(u64::MAX)],
    ) {
        if let RangeSet::Ranges(v) = range::parse(&value, len) {
            prop_assert!(!v.is_empty() && v.len() <= MAX_RANGES);
            prop_assert!(v.iter().all(|&(a, b)| a < b && b <= len));
            // Disjoint and not adjacent, whatever order the specs put them in.
            let mut sorted = v.clone();
            sorted.sort_unstable();
            prop_assert!(sorted.windows(2).all(|w| w[0].1 < w[1].0));
            prop_assert!(v.iter().map(|(a, b)| b - a).sum::<u64>() <= len);
        }
    }
}
