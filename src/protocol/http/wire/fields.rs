//! The field policy every HTTP/1 message here is read with, requests and responses alike: the
//! token grammar, list fields, `Content-Length` (RFC 9110 §8.6), which statuses carry content
//! (RFC 9110 §6.4.1), and the hop-by-hop fields a gateway never passes on (RFC 9110 §7.6.1).

/// `tchar` (RFC 9110 §5.6.2): the bytes of a token, such as a field name.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The members of every list field named `name` (RFC 9110 §5.6.1): split on commas, trimmed of
/// whitespace, empty members dropped, and the field lines taken together (§5.3). Bytes, not
/// text: a member holding obs-text still counts (as a member that matches nothing), so a
/// `Transfer-Encoding: \xffgzip` line cannot vanish and leave `chunked` looking final.
pub fn list_members<'a>(
    fields: impl Iterator<Item = (&'a str, &'a [u8])> + 'a,
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    fields
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// The field names listed in `Connection` fields, lowercased (they are hop-by-hop too, RFC 9110
/// §7.6.1), and the connection options (`close`, `keep-alive`, `upgrade`).
pub fn connection_tokens<'a>(
    fields: impl Iterator<Item = (&'a str, &'a [u8])> + 'a,
) -> Vec<String> {
    list_members(fields, "connection")
        .map(|t| String::from_utf8_lossy(t).to_ascii_lowercase())
        .collect()
}

/// The members of a message's `Connection` fields as slices of it (nothing copied, nothing
/// allocated for the usual few): the field names listed there are hop-by-hop too (RFC 9110
/// §7.6.1), the others connection options (`close`, `keep-alive`, `upgrade`). Compared without
/// regard to case, as tokens are.
pub struct ConnectionTokens<'a> {
    first: [&'a [u8]; 8],
    n: usize,
    more: Vec<&'a [u8]>,
}

impl<'a> ConnectionTokens<'a> {
    pub fn of(fields: impl Iterator<Item = (&'a str, &'a [u8])> + 'a) -> ConnectionTokens<'a> {
        let mut t = ConnectionTokens {
            first: [&[]; 8],
            n: 0,
            more: Vec::new(),
        };
        for m in list_members(fields, "connection") {
            match t.first.get_mut(t.n) {
                Some(slot) => {
                    *slot = m;
                    t.n += 1;
                }
                None => t.more.push(m),
            }
        }
        t
    }

    /// Is `name` (a field name or an option) among them?
    pub fn contains(&self, name: &str) -> bool {
        self.first[..self.n]
            .iter()
            .chain(&self.more)
            .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// Headers the connection owns; a handler's copies are dropped so framing is never doubled.
pub fn owned_by_session(name: &str) -> bool {
    [
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "date",
        "server",
    ]
    .iter()
    .any(|n| n.eq_ignore_ascii_case(name))
}

/// A field a handler built from outside text must not split the head (CR/LF) or be empty.
pub fn safe_field(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        && !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

/// Hop-by-hop fields (RFC 9110 §7.6.1) and `Proxy-*`: never forwarded in either direction.
/// Nor is `Proxy`, which no standard defines and which CGI-style upstreams turn into
/// `HTTP_PROXY`, their outbound proxy (httpoxy, CVE-2016-5385).
pub fn is_hop_by_hop(name: &str) -> bool {
    const HOP: &[&str] = &[
        "proxy",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
        || name
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("proxy-"))
}

/// Does a response with this status carry content? RFC 9110 §6.4.1: never a 1xx, 204 or 304,
/// whatever its framing fields say (a HEAD request's answer has none either; that is the
/// request's doing, not the status's).
pub fn status_has_body(status: u16) -> bool {
    !(status < 200 || status == 204 || status == 304)
}

/// Why the `Content-Length` of a message cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadLength {
    /// A value that is not `1*DIGIT` or does not fit in 64 bits.
    NotANumber,
    /// Field lines with different values.
    Differing,
}

/// The `Content-Length` of a message from all its field values, by RFC 9110 §8.6:
/// `1*DIGIT` only (no sign, no list, no overflow; leading zeros are digits like any other, so
/// `0005` is 5), repeated identical values are one length, differing ones an error. `Ok(None)`
/// when the message has none. (A request is held stricter still: the session refuses any
/// repeat, as nginx does, so no front end can pick another line than this server.)
pub fn content_length<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<u64>, BadLength> {
    let mut length = None;
    for v in values {
        let n = parse_length(v).ok_or(BadLength::NotANumber)?;
        if length.is_some_and(|l| l != n) {
            return Err(BadLength::Differing);
        }
        length = Some(n);
    }
    Ok(length)
}

/// One `Content-Length` value (see [`content_length`]).
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_digits_and_repeats_must_agree() {
        let one = |v: &'static [u8]| content_length([v]);
        assert_eq!(one(b"5"), Ok(Some(5)));
        assert_eq!(one(b"00000000000000000005"), Ok(Some(5)));
        assert_eq!(one(b"18446744073709551615"), Ok(Some(u64::MAX)));
        let bad = crate::protocol::test_cases(include_str!("../testdata/bad-content-lengths.txt"));
        assert_eq!(bad.len(), 7);
        for bad in &bad {
            assert_eq!(
                content_length([&bad[..]]),
                Err(BadLength::NotANumber),
                "{bad:?}"
            );
        }
        assert_eq!(content_length([&b"5"[..], b"05"]), Ok(Some(5)));
        assert_eq!(content_length([&b"5"[..], b"6"]), Err(BadLength::Differing));
        assert_eq!(content_length([]), Ok(None));
    }

    #[test]
    fn connection_tokens_are_found_across_lines_in_any_case_past_the_first_eight() {
        let many = b"a, b, c, d, e, f, g, h, i, Upgrade";
        let fields = [
            ("Connection", &b" Keep-Alive ,, X-Secret"[..]),
            ("Host", &b"close"[..]),
            ("connection", &many[..]),
        ];
        let t = ConnectionTokens::of(fields.into_iter());
        for yes in [
            "keep-alive",
            "x-secret",
            "a",
            "h",
            "i",
            "upgrade",
            "UPGRADE",
        ] {
            assert!(t.contains(yes), "{yes}");
        }
        for no in ["close", "host", "", "keep"] {
            assert!(!t.contains(no), "{no}");
        }
    }

    #[test]
    fn only_final_statuses_other_than_204_and_304_carry_content() {
        for s in [100, 101, 103, 204, 304] {
            assert!(!status_has_body(s), "{s}");
        }
        for s in [200, 201, 206, 301, 404, 500] {
            assert!(status_has_body(s), "{s}");
        }
    }
}
