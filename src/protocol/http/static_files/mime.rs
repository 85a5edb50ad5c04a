//! Step 3: media types. `Content-Type` from the file extension (mime_guess) with
//! `charset=utf-8` on text, and proactive negotiation against `Accept` (RFC 9110 §12.5.1):
//! a file whose type the client clearly excludes gets 406 (RFC 9110 §12.5.1), and a directory listing
//! picks HTML or JSON.

use std::path::Path;

use super::encoding::q_of;

/// The `Content-Type` for a file at `path`. Unknown extensions are `application/octet-stream`,
/// which browsers download rather than sniff (with `nosniff`, they must not sniff anyway).
pub fn content_type(path: &Path) -> String {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let essence = ext
        .as_deref()
        .and_then(registered)
        .or_else(|| mime_guess::from_path(path).first_raw())
        .unwrap_or("application/octet-stream");
    if inherent_coding(path).is_some() {
        // Gzip bytes: no charset describes them.
        return essence.to_string();
    }
    if wants_charset(essence) {
        format!("{essence}; charset=utf-8")
    } else {
        essence.to_string()
    }
}

/// Types where mime_guess's table is out of date or wrong, as the registrations (and nginx's
/// `mime.types`) now have them.
fn registered(ext: &str) -> Option<&'static str> {
    Some(match ext {
        // RFC 9239: JavaScript is text/javascript, modules included.
        "js" | "mjs" | "cjs" => "text/javascript",
        // RFC 8081.
        "otf" => "font/otf",
        "ttf" => "font/ttf",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ts" | "m2ts" => "video/mp2t",
        "m4a" => "audio/mp4",
        "rpm" => "application/x-redhat-package-manager",
        "diff" | "patch" => "text/x-diff",
        "wasm" => "application/wasm",
        "svgz" => "image/svg+xml",
        _ => return None,
    })
}

/// The content coding a file's bytes carry by their very format (`.svgz` is gzipped SVG):
/// sent as `Content-Encoding` so a browser undoes it, as Apache's `AddEncoding` does.
pub fn inherent_coding(path: &Path) -> Option<&'static str> {
    path.extension()
        .and_then(|e| e.to_str())
        .filter(|e| e.eq_ignore_ascii_case("svgz"))
        .map(|_| "gzip")
}

/// Text formats whose bytes are, on a modern site, UTF-8: say so, or browsers guess
/// (windows-1252 for text/plain) and mangle non-ASCII.
fn wants_charset(essence: &str) -> bool {
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence,
            "application/javascript" | "application/json" | "application/xml" | "image/svg+xml"
        )
}

/// One media-range of an `Accept` field.
#[derive(Debug, PartialEq, Eq)]
struct MediaRange<'a> {
    kind: &'a str,
    subtype: &'a str,
    q: u16,
}

impl MediaRange<'_> {
    fn is_octet_stream(&self) -> bool {
        self.kind.eq_ignore_ascii_case("application")
            && self.subtype.eq_ignore_ascii_case("octet-stream")
    }
}

fn parse_accept(value: &str) -> Vec<MediaRange<'_>> {
    value
        .split(',')
        .filter_map(|item| {
            let mut params = item.split(';');
            let (kind, subtype) = params.next()?.trim().split_once('/')?;
            let (kind, subtype) = (kind.trim(), subtype.trim());
            if kind.is_empty() || subtype.is_empty() || (kind == "*" && subtype != "*") {
                return None;
            }
            let q = q_of(params)?;
            Some(MediaRange { kind, subtype, q })
        })
        .collect()
}

/// The q-value `accept` gives the type `mime` (parameters ignored), taking the most specific
/// matching range as §12.5.1 says; `None` when no range matches.
fn quality(ranges: &[MediaRange<'_>], mime: &str) -> Option<u16> {
    let essence = mime.split(';').next().unwrap_or("").trim();
    let (kind, subtype) = essence.split_once('/')?;
    ranges
        .iter()
        .filter_map(|r| {
            let specificity = if r.kind.eq_ignore_ascii_case(kind)
                && (r.subtype.eq_ignore_ascii_case(subtype) || r.subtype == "*")
            {
                if r.subtype == "*" {
                    1
                } else {
                    2
                }
            } else if r.kind == "*" || r.is_octet_stream() {
                // Every file is a stream of octets: a client asking for
                // `application/octet-stream` (download scripts, GitHub's release API) wants the
                // bytes whatever their type, so it counts as `*/*` would.
                0
            } else {
                return None;
            };
            Some((specificity, r.q))
        })
        // The most specific range decides; among equals, the most generous.
        .max()
        .map(|(_, q)| q)
}

/// May a response of type `mime` be sent to a client that sent `accept`? Absent, empty or
/// unparsable fields accept anything (a 406 must only answer a clear "no").
pub fn acceptable(accept: Option<&str>, mime: &str) -> bool {
    let Some(value) = accept else { return true };
    let ranges = parse_accept(value);
    if ranges.is_empty() {
        return true;
    }
    quality(&ranges, mime).is_some_and(|q| q > 0)
}

/// Does the client prefer JSON to HTML for a directory listing? Only when it ranks
/// `application/json` strictly above `text/html`; browsers (which list `text/html` first, and
/// `*/*` lower) always get HTML.
pub fn prefers_json(accept: Option<&str>) -> bool {
    let Some(value) = accept else { return false };
    let ranges = parse_accept(value);
    let json = quality(&ranges, "application/json").unwrap_or(0);
    let html = quality(&ranges, "text/html").unwrap_or(0);
    json > html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_come_from_extensions_with_utf8_on_text() {
        let table: &[(&str, &str)] = &[
            ("index.html", "text/html; charset=utf-8"),
            ("style.css", "text/css; charset=utf-8"),
            ("app.js", "text/javascript; charset=utf-8"),
            ("data.json", "application/json; charset=utf-8"),
            ("logo.svg", "image/svg+xml; charset=utf-8"),
            ("notes.txt", "text/plain; charset=utf-8"),
            ("pic.png", "image/png"),
            ("app.wasm", "application/wasm"),
            ("archive.gz", "application/gzip"),
            ("README", "application/octet-stream"),
            ("UPPER.HTML", "text/html; charset=utf-8"),
        ];
        for (name, want) in table {
            assert_eq!(content_type(Path::new(name)), *want, "{name}");
        }
    }

    #[test]
    fn accept_excludes_only_when_it_clearly_says_no() {
        let table: &[(Option<&str>, &str, bool)] = &[
            (None, "image/png", true),
            (Some(""), "image/png", true),
            (Some("*/*"), "image/png", true),
            (Some("image/*"), "image/png", true),
            (Some("image/png"), "image/png", true),
            (Some("IMAGE/PNG"), "image/png", true),
            (Some("text/html"), "image/png", false),
            (Some("text/*"), "image/png", false),
            (Some("application/json"), "text/html; charset=utf-8", false),
            (Some("image/png;q=0"), "image/png", false),
            (Some("*/*;q=0"), "image/png", false),
            (Some("*/*;q=0.1, image/png;q=0"), "image/png", false),
            (Some("image/*;q=0, image/png"), "image/png", true),
            (Some("image/*;q=0, image/png"), "image/gif", false),
            (
                Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
                "image/png",
                true,
            ),
            (Some("garbage"), "image/png", true),
            (Some("text/html;level=1;q=0.5"), "text/html", true),
            // `application/octet-stream` asks for the bytes, whatever the type.
            (Some("application/octet-stream"), "application/zip", true),
            (
                Some("Application/Octet-Stream"),
                "text/plain; charset=utf-8",
                true,
            ),
            (
                Some("application/octet-stream;q=0"),
                "application/zip",
                false,
            ),
            (
                Some("application/octet-stream, application/zip;q=0"),
                "application/zip",
                false,
            ),
        ];
        for (accept, mime, want) in table {
            assert_eq!(acceptable(*accept, mime), *want, "{accept:?} / {mime}");
        }
    }

    #[test]
    fn listings_negotiate_json_only_when_preferred() {
        let table: &[(Option<&str>, bool)] = &[
            (None, false),
            (Some("application/json"), true),
            (Some("application/json, text/html;q=0.5"), true),
            (Some("text/html, application/json"), false),
            (Some("*/*"), false),
            (
                Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
                false,
            ),
            (Some("application/*"), true),
        ];
        for (accept, want) in table {
            assert_eq!(prefers_json(*accept), *want, "{accept:?}");
        }
    }
}
