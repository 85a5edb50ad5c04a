//! HPACK (RFC 7541) as the server uses it. Decoding is `loona-hpack`'s (maintained with the
//! loona HTTP/2 server, successor of fluke-hpack; it bounds the dynamic table a peer may ask
//! for, `set_max_allowed_table_size`, where the older `hpack` crate, unchanged since 2016,
//! does not, and it hands each field to a callback, so a header list past our limit is
//! counted, not stored). Encoding is ours and deliberately simple: every response field is a
//! literal *without indexing* (§6.2.2), its name taken from the static table where it is there.
//! The server's encoder then keeps no dynamic table at all, so a client's
//! SETTINGS_HEADER_TABLE_SIZE never needs an answer and no per-connection state grows.

use loona_hpack::decoder::DecoderError;

/// The dynamic table size the decoder allows (SETTINGS_HEADER_TABLE_SIZE's default, which the
/// server never raises): a client's size update above it is a COMPRESSION_ERROR.
pub const TABLE_SIZE: usize = 4096;

/// The overhead RFC 9113 §6.5.2 counts per field in SETTINGS_MAX_HEADER_LIST_SIZE.
pub const FIELD_OVERHEAD: usize = 32;

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

/// One connection's decoder.
pub struct Decoder {
    inner: loona_hpack::Decoder<'static>,
}

impl Default for Decoder {
    fn default() -> Self {
        let mut inner = loona_hpack::Decoder::new();
        inner.set_max_allowed_table_size(TABLE_SIZE);
        Decoder { inner }
    }
}

impl Decoder {
    /// Decode one complete header block. An error is a connection error (COMPRESSION_ERROR,
    /// RFC 9113 §4.3): the table can no longer be trusted.
    pub fn decode(
        &mut self,
        block: &[u8],
        max_list: usize,
        max_fields: usize,
    ) -> Result<Fields, DecoderError> {
        let mut f = Fields::default();
        let mut size = 0usize;
        self.inner.decode_with_cb(block, |name, value| {
            size = size.saturating_add(name.len() + value.len() + FIELD_OVERHEAD);
            if f.too_large || size > max_list || f.list.len() >= max_fields {
                // An HPACK bomb (a few bytes naming a large table entry many times) costs this
                // comparison per field, never memory.
                f.too_large = true;
                return;
            }
            match String::from_utf8(name.into_owned()) {
                Ok(n) => f.list.push((n, value.into_owned())),
                Err(_) => f.bad_name = true,
            }
        })?;
        Ok(f)
    }
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
            let mut d = Decoder::default();
            let got: Vec<Vec<(String, String)>> = blocks
                .iter()
                .map(|b| {
                    let f = d.decode(&hex(b), 1 << 16, 100).unwrap();
                    pairs(&f)
                        .into_iter()
                        .map(|(n, v)| (n.to_string(), v.to_string()))
                        .collect()
                })
                .collect();
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

    #[test]
    fn a_table_size_over_the_default_is_refused() {
        // Dynamic table size update to 8192 (§6.3), then an indexed field.
        let mut b = Vec::new();
        integer(&mut b, 0x20, 5, 8192);
        b.push(0x82);
        assert!(Decoder::default().decode(&b, 1 << 16, 100).is_err());
    }
}
