//! Writing heads: one writer for every request line, status line and field line this crate
//! puts on the wire (the session's answers, the proxy's upstream requests, a CGI local
//! redirect's internal request, `tincan bench`'s requests), so the byte layout (RFC 9112 §3,
//! §4 and §5: `token SP target SP version CRLF`, `name: value CRLF`, the empty line) is written
//! in one place.

/// `METHOD TARGET[?QUERY] HTTP/1.MINOR\r\n`.
pub fn request_line(out: &mut Vec<u8>, method: &str, target: &str, query: Option<&str>, minor: u8) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    if let Some(q) = query {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
    out.extend_from_slice(if minor == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
}

/// `HTTP/1.1 STATUS REASON\r\n` (a server answers in its own version, RFC 9110 §6.2).
pub fn status_line(out: &mut Vec<u8>, status: u16, reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal digits, without the formatting machinery (every answer writes a status and a
/// length: `write!` cost about a thousand instructions a request between them).
pub fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// `NAME: VALUE\r\n`. The caller vouches that neither holds CR, LF or NUL.
pub fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The empty line that ends a head.
pub fn end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_laid_out_as_rfc_9112_says() {
        let mut out = Vec::new();
        request_line(&mut out, "GET", "/a", Some("b=1"), 1);
        field(&mut out, "Host", b"h");
        end(&mut out);
        assert_eq!(out, b"GET /a?b=1 HTTP/1.1\r\nHost: h\r\n\r\n");
        let mut out = Vec::new();
        request_line(&mut out, "HEAD", "/", None, 0);
        status_line(&mut out, 404, "Not Found");
        assert_eq!(out, b"HEAD / HTTP/1.0\r\nHTTP/1.1 404 Not Found\r\n");
        for n in [0u64, 7, 10, 200, 1_048_576, u64::MAX] {
            let mut d = Vec::new();
            decimal(&mut d, n);
            assert_eq!(d, n.to_string().as_bytes());
        }
    }
}
