//! HPACK (RFC 7541) as the server uses it.
//!
//! Decoding is ours: the static table, a dynamic table bounded by [`TABLE_SIZE`] (a client's
//! size update above it is a COMPRESSION_ERROR), integers with overflow checked, and Huffman
//! strings walked through a code tree built once per process (`loona-hpack`, used before,
//! built a hash map of the whole code for every Huffman string: 60% of the server's CPU at
//! 1 KiB answers). Each field goes to a callback, so a header list past our limit is counted,
//! not stored.
//!
//! Encoding is deliberately simple: every response field is a literal *without indexing*
//! (§6.2.2), its name taken from the static table where it is there. The server's encoder then
//! keeps no dynamic table at all, so a client's SETTINGS_HEADER_TABLE_SIZE never needs an
//! answer and no per-connection state grows.

use std::collections::VecDeque;
use std::sync::OnceLock;

use super::hpack_tables::{HUFFMAN, STATIC};

/// The dynamic table size the decoder allows (SETTINGS_HEADER_TABLE_SIZE's default, which the
/// server never raises): a client's size update above it is a COMPRESSION_ERROR.
pub const TABLE_SIZE: usize = 4096;

/// The overhead RFC 9113 §6.5.2 counts per field in SETTINGS_MAX_HEADER_LIST_SIZE, and RFC
/// 7541 §4.1 per dynamic-table entry.
pub const FIELD_OVERHEAD: usize = 32;

/// Why a header block cannot be decoded: each is a COMPRESSION_ERROR (RFC 9113 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the block ends inside a field")]
    Truncated,
    #[error("an integer overflows")]
    IntegerOverflow,
    #[error("index {0} is in neither table")]
    BadIndex(usize),
    #[error("a dynamic table size update above the allowed size")]
    TableTooLarge,
    #[error("a dynamic table size update after the first field of a block")]
    LateSizeUpdate,
    #[error("a Huffman string holds EOS, or padding longer than 7 bits or not all ones")]
    BadHuffman,
}

/// A decoded header list.
#[derive(Debug, Default)]
pub struct Fields {
    /// Names (lowercase as received; checked by the caller) and values.
    pub list: Vec<(String, Vec<u8>)>,
    /// The list crossed `max_list` bytes or `max_fields` fields: the rest was decoded (the
    /// dynamic table must stay in step with the client's) but not kept.
    pub too_large: bool,
    /// A name was not UTF-8.
    pub bad_name: bool,
}

/// One connection's decoder: its dynamic table, newest entry first.
#[derive(Default)]
pub struct Decoder {
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    /// Bytes the table holds, counted as §4.1 counts them.
    size: usize,
    /// The size the client last set (§6.3); at most [`TABLE_SIZE`].
    max: Option<usize>,
}

impl Decoder {
    /// Decode one complete header block. An error is a connection error (COMPRESSION_ERROR,
    /// RFC 9113 §4.3): the table can no longer be trusted.
    pub fn decode(
        &mut self,
        block: &[u8],
        max_list: usize,
        max_fields: usize,
    ) -> Result<Fields, DecodeError> {
        let mut f = Fields::default();
        let mut size = 0usize;
        self.decode_with(block, |name, value| {
            size = size.saturating_add(name.len() + value.len() + FIELD_OVERHEAD);
            if f.too_large || size > max_list || f.list.len() >= max_fields {
                // An HPACK bomb (a few bytes naming a large table entry many times) costs this
                // comparison per field, never memory.
                f.too_large = true;
                return;
            }
            match std::str::from_utf8(name) {
                Ok(n) => f.list.push((n.to_string(), value.to_vec())),
                Err(_) => f.bad_name = true,
            }
        })?;
        Ok(f)
    }

    fn decode_with(
        &mut self,
        mut b: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), DecodeError> {
        let mut first = true;
        while let Some(&octet) = b.first() {
            if octet & 0x80 != 0 {
                // §6.1: an indexed field.
                let i = read_integer(&mut b, 7)?;
                let (n, v) = self.entry(i)?;
                field(n, v);
            } else if octet & 0xe0 == 0x20 {
                // §6.3: a dynamic table size update, only before the block's first field
                // (§4.2).
                if !first {
                    return Err(DecodeError::LateSizeUpdate);
                }
                let max = read_integer(&mut b, 5)?;
                if max > TABLE_SIZE {
                    return Err(DecodeError::TableTooLarge);
                }
                self.max = Some(max);
                self.evict(0);
                continue;
            } else {
                // §6.2: a literal, added to the table (01), not (0000) or never (0001).
                let indexing = octet & 0xc0 == 0x40;
                let prefix = if indexing { 6 } else { 4 };
                let i = read_integer(&mut b, prefix)?;
                let name = match i {
                    0 => read_string(&mut b)?,
                    i => self.entry(i)?.0.to_vec(),
                };
                let value = read_string(&mut b)?;
                field(&name, &value);
                if indexing {
                    self.insert(name, value);
                }
            }
            first = false;
        }
        Ok(())
    }

    /// Entry `i` of the static table (1 to 61) followed by the dynamic one (§2.3.3).
    fn entry(&self, i: usize) -> Result<(&[u8], &[u8]), DecodeError> {
        if i == 0 {
            return Err(DecodeError::BadIndex(0));
        }
        if let Some((n, v)) = STATIC.get(i - 1) {
            return Ok((n.as_bytes(), v.as_bytes()));
        }
        self.table
            .get(i - 1 - STATIC.len())
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .ok_or(DecodeError::BadIndex(i))
    }

    fn limit(&self) -> usize {
        self.max.unwrap_or(TABLE_SIZE)
    }

    /// §4.4: evict from the oldest end until `room` more bytes fit; an entry larger than the
    /// whole table empties it and is not added.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.limit() {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + FIELD_OVERHEAD,
                None => break,
            }
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let cost = name.len() + value.len() + FIELD_OVERHEAD;
        self.evict(cost);
        if cost <= self.limit() {
            self.size += cost;
            self.table.push_front((name, value));
        }
    }
}

/// An integer with an `n`-bit prefix (§5.1), taken off the front of `b`. Values past 2^28
/// are refused: nothing the server accepts is that long, and the shifts stay in range.
fn read_integer(b: &mut &[u8], n: u8) -> Result<usize, DecodeError> {
    let (&first, rest) = b.split_first().ok_or(DecodeError::Truncated)?;
    *b = rest;
    let max = (1usize << n) - 1;
    let mut v = usize::from(first) & max;
    if v < max {
        return Ok(v);
    }
    let mut shift = 0;
    loop {
        let (&octet, rest) = b.split_first().ok_or(DecodeError::Truncated)?;
        *b = rest;
        v += usize::from(octet & 0x7f) << shift;
        if v > 1 << 28 {
            return Err(DecodeError::IntegerOverflow);
        }
        if octet & 0x80 == 0 {
            return Ok(v);
        }
        shift += 7;
    }
}

/// A string literal (§5.2), Huffman-coded or not, taken off the front of `b`.
fn read_string(b: &mut &[u8]) -> Result<Vec<u8>, DecodeError> {
    let huffman = b.first().ok_or(DecodeError::Truncated)? & 0x80 != 0;
    let len = read_integer(b, 7)?;
    if len > b.len() {
        return Err(DecodeError::Truncated);
    }
    let (s, rest) = b.split_at(len);
    *b = rest;
    if huffman {
        huffman_decode(s)
    } else {
        Ok(s.to_vec())
    }
}

/// The Huffman code as a binary tree: node `k`'s children are `tree[k][0]` and `tree[k][1]`,
/// an index below [`LEAF`] is another node, `LEAF + s` the symbol `s`, 0 no code at all.
const LEAF: u16 = 1 << 10;

fn huffman_tree() -> &'static Vec<[u16; 2]> {
    static TREE: OnceLock<Vec<[u16; 2]>> = OnceLock::new();
    TREE.get_or_init(|| {
        let mut tree = vec![[0u16; 2]];
        for (symbol, &(code, len)) in HUFFMAN.iter().enumerate() {
            let mut node = 0usize;
            for k in (0..len).rev() {
                let bit = ((code >> k) & 1) as usize;
                if k == 0 {
                    tree[node][bit] = LEAF + symbol as u16;
                } else {
                    if tree[node][bit] == 0 {
                        tree.push([0, 0]);
                        tree[node][bit] = (tree.len() - 1) as u16;
                    }
                    node = usize::from(tree[node][bit]);
                }
            }
        }
        tree
    })
}

/// §5.2: decode Huffman-coded octets. The padding after the last symbol must be fewer than 8
/// bits, all ones (the start of EOS); EOS itself in the string is an error.
fn huffman_decode(s: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let tree = huffman_tree();
    let mut out = Vec::with_capacity(s.len() * 8 / 5);
    let mut node = 0usize;
    // Bits read since the last symbol, and whether all of them were ones.
    let (mut pending, mut ones) = (0u32, true);
    for &octet in s {
        for k in (0..8).rev() {
            let bit = usize::from((octet >> k) & 1);
            pending += 1;
            ones &= bit == 1;
            let next = tree[node][bit];
            if next >= LEAF {
                let symbol = next - LEAF;
                if symbol == 256 {
                    return Err(DecodeError::BadHuffman);
                }
                out.push(symbol as u8);
                node = 0;
                (pending, ones) = (0, true);
            } else if next == 0 {
                return Err(DecodeError::BadHuffman);
            } else {
                node = usize::from(next);
            }
        }
    }
    if pending > 7 || !ones {
        return Err(DecodeError::BadHuffman);
    }
    Ok(out)
}

/// Static-table indices of the names a server sends (RFC 7541 Appendix A).
fn static_name(name: &str) -> Option<usize> {
    Some(match name {
        ":status" => 8,
        "accept-ranges" => 18,
        "access-control-allow-origin" => 20,
        "age" => 21,
        "allow" => 22,
        "cache-control" => 24,
        "content-disposition" => 25,
        "content-encoding" => 26,
        "content-language" => 27,
        "content-length" => 28,
        "content-location" => 29,
        "content-range" => 30,
        "content-type" => 31,
        "date" => 33,
        "etag" => 34,
        "expires" => 36,
        "last-modified" => 44,
        "link" => 45,
        "location" => 46,
        "proxy-authenticate" => 48,
        "refresh" => 52,
        "retry-after" => 53,
        "server" => 54,
        "set-cookie" => 55,
        "strict-transport-security" => 56,
        "vary" => 59,
        "via" => 60,
        "www-authenticate" => 61,
        _ => return None,
    })
}

/// An integer with an `n`-bit prefix (RFC 7541 §5.1); `first` holds the bits above the prefix.
fn integer(b: &mut Vec<u8>, first: u8, n: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        b.push(first | v as u8);
        return;
    }
    b.push(first | max as u8);
    v -= max;
    while v >= 128 {
        b.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    b.push(v as u8);
}

/// A string literal without Huffman coding (§5.2).
fn string(b: &mut Vec<u8>, s: &[u8]) {
    integer(b, 0, 7, s.len());
    b.extend_from_slice(s);
}

/// Append `:status`; the common ones are one byte (static-table entries 8 to 14).
pub fn encode_status(b: &mut Vec<u8>, status: u16) {
    let index = match status {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => {
            integer(b, 0, 4, 8);
            string(b, status.to_string().as_bytes());
            return;
        }
    };
    integer(b, 0x80, 7, index);
}

/// Append one field as a literal without indexing (§6.2.2). `name` must be lowercase.
pub fn encode_field(b: &mut Vec<u8>, name: &str, value: &[u8]) {
    match static_name(name) {
        Some(i) => integer(b, 0, 4, i),
        None => {
            b.push(0);
            string(b, name.as_bytes());
        }
    }
    string(b, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn pairs(f: &Fields) -> Vec<(&str, &str)> {
        f.list
            .iter()
            .map(|(n, v)| (n.as_str(), std::str::from_utf8(v).unwrap()))
            .collect()
    }

    /// The header blocks (hex) decoded in order by one decoder, as one connection's blocks are:
    /// each later block may refer to the dynamic table the earlier ones built. The decoder is
    /// returned too, for its table.
    fn decode_in_turn(blocks: &[&str]) -> (Decoder, Vec<Vec<(String, String)>>) {
        let mut d = Decoder::default();
        let got = (blocks.iter())
            .map(|b| {
                let f = d.decode(&hex(b), 1 << 16, 100).unwrap();
                (pairs(&f).into_iter())
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect()
            })
            .collect();
        (d, got)
    }

    /// RFC 7541 Appendix C.3 and C.4: three requests on one connection, without and with
    /// Huffman coding; the third depends on the dynamic table the first two built.
    #[test]
    fn the_rfc_7541_request_examples_decode_on_one_connection() {
        let c3 = [
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ];
        let c4 = [
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ];
        for blocks in [c3, c4] {
            let (_, got) = decode_in_turn(&blocks);
            let base = |path: &str, scheme: &str| {
                vec![
                    (":method".to_string(), "GET".to_string()),
                    (":scheme".to_string(), scheme.to_string()),
                    (":path".to_string(), path.to_string()),
                    (":authority".to_string(), "www.example.com".to_string()),
                ]
            };
            assert_eq!(got[0], base("/", "http"));
            let mut second = base("/", "http");
            second.push(("cache-control".into(), "no-cache".into()));
            assert_eq!(got[1], second);
            let mut third = base("/index.html", "https");
            third.push(("custom-key".into(), "custom-value".into()));
            assert_eq!(got[2], third);
        }
    }

    /// RFC 7541 Appendix C.1: integers across prefixes.
    #[test]
    fn integers_encode_as_the_rfc_examples() {
        let mut b = Vec::new();
        integer(&mut b, 0, 5, 10);
        assert_eq!(b, [0x0a]);
        b.clear();
        integer(&mut b, 0, 5, 1337);
        assert_eq!(b, [0x1f, 0x9a, 0x0a]);
        b.clear();
        integer(&mut b, 0, 8, 42);
        assert_eq!(b, [0x2a]);
    }

    #[test]
    fn what_the_server_encodes_decodes_to_the_same_fields() {
        let mut b = Vec::new();
        encode_status(&mut b, 200);
        encode_status(&mut b, 418);
        encode_field(&mut b, "content-type", b"text/html");
        encode_field(&mut b, "x-long", &[b'a'; 300]);
        let f = Decoder::default().decode(&b, 1 << 16, 100).unwrap();
        let long = "a".repeat(300);
        assert_eq!(
            pairs(&f),
            [
                (":status", "200"),
                (":status", "418"),
                ("content-type", "text/html"),
                ("x-long", long.as_str())
            ]
        );
    }

    /// A block that names a large table entry again and again grows no list past the limit.
    #[test]
    fn an_hpack_bomb_is_counted_not_stored() {
        let mut b = Vec::new();
        // Literal with incremental indexing, new name: enters the table as entry 62.
        b.push(0x40);
        string(&mut b, b"x-bomb");
        string(&mut b, &[b'z'; 4000]);
        b.extend(std::iter::repeat_n(0x80 | 62, 10_000));
        let f = Decoder::default().decode(&b, 16 * 1024, 100).unwrap();
        assert!(f.too_large);
        assert!(f.list.len() <= 4);
    }

    /// RFC 7541 Appendix C.5: three responses with the table held to 256 bytes (set here by a
    /// size update in front of the first block), so the third evicts the oldest entries.
    #[test]
    fn the_rfc_7541_response_examples_evict_as_the_rfc_says() {
        let blocks = [
            "3fe101 4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 \
             3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 \
             6d70 6c65 2e63 6f6d",
            "4803 3330 37c1 c0bf",
            "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d \
             54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 \
             5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e \
             3d31",
        ];
        let (d, got) = decode_in_turn(&blocks);
        let field = |n: &str, v: &str| (n.to_string(), v.to_string());
        assert_eq!(got[1][0], field(":status", "307"));
        assert_eq!(got[1][3], field("location", "https://www.example.com"));
        assert_eq!(
            got[2],
            [
                field(":status", "200"),
                field("cache-control", "private"),
                field("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
                field("location", "https://www.example.com"),
                field("content-encoding", "gzip"),
                field(
                    "set-cookie",
                    "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
                ),
            ]
        );
        // §4.1: 215 bytes in three entries, as C.5.3 lists them.
        assert_eq!(d.table.len(), 3);
        assert_eq!(d.size, 215);
    }

    /// §5.2: padding of 8 bits or more, padding that is not all ones, and EOS inside a string.
    #[test]
    fn bad_huffman_strings_are_refused() {
        // "a" is 00011 (5 bits): padded with three ones it is 0x1f.
        assert_eq!(huffman_decode(&[0x1f]).unwrap(), b"a");
        assert_eq!(huffman_decode(&[0x1f, 0xff]), Err(DecodeError::BadHuffman));
        assert_eq!(huffman_decode(&[0x18]), Err(DecodeError::BadHuffman));
        assert_eq!(
            huffman_decode(&[0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::BadHuffman)
        );
    }

    /// §4.2: a size update after a field is refused; at the start it is taken.
    #[test]
    fn a_size_update_is_taken_only_before_the_first_field() {
        let mut b = vec![0x82];
        integer(&mut b, 0x20, 5, 100);
        assert_eq!(
            Decoder::default().decode(&b, 1 << 16, 100).unwrap_err(),
            DecodeError::LateSizeUpdate
        );
        let mut b = Vec::new();
        integer(&mut b, 0x20, 5, 100);
        b.push(0x82);
        assert!(Decoder::default().decode(&b, 1 << 16, 100).is_ok());
    }

    #[test]
    fn a_table_size_over_the_default_is_refused() {
        // Dynamic table size update to 8192 (§6.3), then an indexed field.
        let mut b = Vec::new();
        integer(&mut b, 0x20, 5, 8192);
        b.push(0x82);
        assert!(Decoder::default().decode(&b, 1 << 16, 100).is_err());
    }
}
