//! Step 5: validators (ETag, Last-Modified) and conditional requests, evaluated in exactly the
//! order RFC 9110 §13.2.2 gives:
//!
//! 1. `If-Match` (strong comparison) fails → 412;
//! 2. else, without `If-Match`, `If-Unmodified-Since` older than Last-Modified → 412;
//! 3. `If-None-Match` (weak comparison) matches → 304 for GET/HEAD (412 otherwise);
//! 4. else, without `If-None-Match`, for GET/HEAD, `If-Modified-Since` not older than
//!    Last-Modified → 304;
//! 5. `If-Range` (only with a `Range`): a strong ETag match or an exactly equal date lets the
//!    range through; anything else means "send it all" (200).
//!
//! Dates that do not parse are ignored, as §13.1.3 and §13.1.4 require.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The validators of one selected representation.
#[derive(Clone, Debug)]
pub struct Validators {
    /// The entity-tag with its quotes (`"1f-17a..."`), strong unless [`weak`](Self::weak)
    /// made it `W/"..."`.
    pub etag: String,
    /// Modification time, truncated to whole seconds (what HTTP dates can carry).
    pub last_modified: SystemTime,
}

impl Validators {
    /// Validators for content of `size` bytes modified at `mtime`; `suffix` tells encodings
    /// apart (`""` for identity, `"-gzip"`, ...) so a cache never confuses them (§8.8.3.3).
    ///
    /// A modification time in the future is sent as "now" (§8.8.2.1 requires it); the ETag
    /// keeps the real time, so it stays stable.
    pub fn new(size: u64, mtime: SystemTime, suffix: &str) -> Validators {
        let since = mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
        let ns = since.as_nanos();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Validators {
            etag: format!("\"{size:x}-{ns:x}{suffix}\""),
            last_modified: UNIX_EPOCH + Duration::from_secs(since.as_secs().min(now.as_secs())),
        }
    }

    /// The same validators with a weak entity-tag (§8.8.3): for bytes this server makes, such
    /// as gzip on the fly, which another build could make differently. A weak tag still
    /// answers `If-None-Match` (weak comparison) but never `If-Match` or `If-Range`.
    pub fn weak(mut self) -> Validators {
        self.etag.insert_str(0, "W/");
        self
    }

    pub fn http_date(&self) -> String {
        httpdate::fmt_http_date(self.last_modified)
    }
}

/// The conditional header fields of a request (each list header joined over its lines).
#[derive(Clone, Debug, Default)]
pub struct Conditions {
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    pub if_unmodified_since: Option<String>,
    pub if_range: Option<String>,
    pub has_range: bool,
}

/// What the preconditions decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Serve it; honour `Range` only if `use_range`.
    Proceed {
        use_range: bool,
    },
    NotModified,
    PreconditionFailed,
}

/// Evaluate the preconditions (§13.2.2) for a GET or HEAD when `safe`.
pub fn evaluate(c: &Conditions, v: &Validators, safe: bool) -> Outcome {
    // Step 1 and 2.
    if let Some(im) = &c.if_match {
        if !matches_any(im, &v.etag, true) {
            return Outcome::PreconditionFailed;
        }
    } else if let Some(date) = c.if_unmodified_since.as_deref().and_then(parse_date) {
        if v.last_modified > date {
            return Outcome::PreconditionFailed;
        }
    }
    // Step 3 and 4.
    if let Some(inm) = &c.if_none_match {
        if matches_any(inm, &v.etag, false) {
            return if safe {
                Outcome::NotModified
            } else {
                Outcome::PreconditionFailed
            };
        }
    } else if safe {
        if let Some(date) = c.if_modified_since.as_deref().and_then(parse_date) {
            if v.last_modified <= date {
                return Outcome::NotModified;
            }
        }
    }
    // Step 5.
    let use_range = c.has_range
        && match &c.if_range {
            None => true,
            Some(ir) => if_range_matches(ir.trim(), v),
        };
    Outcome::Proceed { use_range }
}

fn parse_date(s: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(s.trim()).ok()
}

/// `If-Range` (§13.1.5): an entity-tag must match strongly; a date must equal Last-Modified.
fn if_range_matches(value: &str, v: &Validators) -> bool {
    if value.starts_with('"') || value.starts_with("W/") {
        match parse_tags(value).as_deref() {
            Some(
                [Tag::Tag {
                    weak: false,
                    opaque,
                }],
            ) => tag_opaque(&v.etag) == Some((false, *opaque)),
            _ => false,
        }
    } else {
        parse_date(value) == Some(v.last_modified)
    }
}

/// One member of an `If-Match` / `If-None-Match` list.
#[derive(Debug, PartialEq, Eq)]
enum Tag<'a> {
    Any,
    Tag { weak: bool, opaque: &'a str },
}

/// Parse `*` or `1#entity-tag` (§8.8.3); `None` when malformed (then nothing matches).
fn parse_tags(s: &str) -> Option<Vec<Tag<'_>>> {
    let s = s.trim();
    if s == "*" {
        return Some(vec![Tag::Any]);
    }
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        let (weak, r) = match rest.strip_prefix("W/") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let r = r.strip_prefix('"')?;
        let end = r.find('"')?;
        out.push(Tag::Tag {
            weak,
            opaque: &r[..end],
        });
        rest = &r[end + 1..];
        let next = rest.trim_start_matches([' ', '\t']);
        if !(next.is_empty() || next.starts_with(',')) {
            return None;
        }
    }
    if out.is_empty() {
        None
    } else {
        Some(out)
    }
}

/// Our own tag, `"opaque"` or `W/"opaque"`: whether it is weak, and its opaque part.
fn tag_opaque(etag: &str) -> Option<(bool, &str)> {
    let (weak, quoted) = match etag.strip_prefix("W/") {
        Some(q) => (true, q),
        None => (false, etag),
    };
    Some((weak, quoted.strip_prefix('"')?.strip_suffix('"')?))
}

/// Does `list` match our `etag`? Strong comparison needs both tags strong (§8.8.3.2).
fn matches_any(list: &str, etag: &str, strong: bool) -> bool {
    let Some((ours_weak, ours)) = tag_opaque(etag) else {
        return false;
    };
    parse_tags(list).is_some_and(|tags| {
        tags.iter().any(|t| match t {
            Tag::Any => true,
            Tag::Tag { weak, opaque } => *opaque == ours && !(strong && (*weak || ours_weak)),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v() -> Validators {
        Validators::new(10, UNIX_EPOCH + Duration::new(1_000_000, 500), "")
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn etags_are_strong_and_differ_by_encoding_suffix() {
        let a = Validators::new(10, UNIX_EPOCH + Duration::new(1, 5), "");
        let b = Validators::new(10, UNIX_EPOCH + Duration::new(1, 5), "-gzip");
        assert!(a.etag.starts_with('"') && a.etag.ends_with('"'));
        assert_ne!(a.etag, b.etag);
        // Sub-second changes change the tag even though Last-Modified cannot show them.
        let c = Validators::new(10, UNIX_EPOCH + Duration::new(1, 6), "");
        assert_ne!(a.etag, c.etag);
        assert_eq!(a.last_modified, c.last_modified);
    }

    #[test]
    fn a_future_modification_time_is_sent_as_now_but_keeps_its_etag() {
        let future = SystemTime::now() + Duration::from_secs(86_400);
        let a = Validators::new(1, future, "");
        let b = Validators::new(1, future, "");
        assert!(a.last_modified <= SystemTime::now());
        assert_eq!(a.etag, b.etag);
    }

    #[test]
    fn entity_tag_lists_parse() {
        assert_eq!(parse_tags("*"), Some(vec![Tag::Any]));
        assert_eq!(
            parse_tags(r#""a", W/"b" ,"c""#),
            Some(vec![
                Tag::Tag {
                    weak: false,
                    opaque: "a"
                },
                Tag::Tag {
                    weak: true,
                    opaque: "b"
                },
                Tag::Tag {
                    weak: false,
                    opaque: "c"
                },
            ])
        );
        assert_eq!(parse_tags("a"), None);
        assert_eq!(parse_tags(r#""a"x"#), None);
        assert_eq!(parse_tags(r#""unterminated"#), None);
        assert_eq!(parse_tags(""), None);
    }

    /// (name, conditions, safe, expected) — the §13.2.2 precedence table.
    #[test]
    fn a_weak_validator_answers_if_none_match_but_never_if_match_or_if_range() {
        let w = v().weak();
        assert!(w.etag.starts_with("W/\""), "{}", w.etag);
        let strong_form = w.etag.trim_start_matches("W/").to_string();
        let with = |f: &dyn Fn(&mut Conditions)| {
            let mut c = Conditions {
                has_range: true,
                ..Conditions::default()
            };
            f(&mut c);
            evaluate(&c, &w, true)
        };
        // §8.8.3.2: weak comparison matches either form; strong comparison neither.
        assert_eq!(
            with(&|c| c.if_none_match = Some(w.etag.clone())),
            Outcome::NotModified
        );
        assert_eq!(
            with(&|c| c.if_none_match = Some(strong_form.clone())),
            Outcome::NotModified
        );
        assert_eq!(
            with(&|c| c.if_match = Some(strong_form.clone())),
            Outcome::PreconditionFailed
        );
        assert_eq!(
            with(&|c| c.if_match = Some("*".into())),
            Outcome::Proceed { use_range: true }
        );
        assert_eq!(
            with(&|c| c.if_range = Some(strong_form.clone())),
            Outcome::Proceed { use_range: false }
        );
    }

    #[test]
    fn preconditions_follow_rfc_9110_precedence() {
        let v = v();
        let tag = v.etag.clone();
        let weak = format!("W/{tag}");
        let lm = 1_000_000u64;
        let c = |f: &dyn Fn(&mut Conditions)| {
            let mut c = Conditions::default();
            f(&mut c);
            c
        };
        let go = Outcome::Proceed { use_range: false };
        let range = Outcome::Proceed { use_range: true };
        let table: Vec<(&str, Conditions, bool, Outcome)> = vec![
            ("nothing", c(&|_| {}), true, go),
            (
                "if-match hit",
                c(&|c| c.if_match = Some(tag.clone())),
                true,
                go,
            ),
            (
                "if-match star",
                c(&|c| c.if_match = Some("*".into())),
                true,
                go,
            ),
            (
                "if-match miss",
                c(&|c| c.if_match = Some("\"x\"".into())),
                true,
                Outcome::PreconditionFailed,
            ),
            (
                "if-match weak never matches",
                c(&|c| c.if_match = Some(weak.clone())),
                true,
                Outcome::PreconditionFailed,
            ),
            (
                "if-unmodified-since older",
                c(&|c| c.if_unmodified_since = Some(date(lm - 1))),
                true,
                Outcome::PreconditionFailed,
            ),
            (
                "if-unmodified-since equal",
                c(&|c| c.if_unmodified_since = Some(date(lm))),
                true,
                go,
            ),
            (
                "if-unmodified-since ignored with if-match",
                c(&|c| {
                    c.if_match = Some(tag.clone());
                    c.if_unmodified_since = Some(date(lm - 1));
                }),
                true,
                go,
            ),
            (
                "if-unmodified-since garbage ignored",
                c(&|c| c.if_unmodified_since = Some("yesterday".into())),
                true,
                go,
            ),
            (
                "if-none-match hit",
                c(&|c| c.if_none_match = Some(tag.clone())),
                true,
                Outcome::NotModified,
            ),
            (
                "if-none-match weak hit",
                c(&|c| c.if_none_match = Some(format!("\"zz\", {weak}"))),
                true,
                Outcome::NotModified,
            ),
            (
                "if-none-match star",
                c(&|c| c.if_none_match = Some("*".into())),
                true,
                Outcome::NotModified,
            ),
            (
                "if-none-match hit unsafe",
                c(&|c| c.if_none_match = Some(tag.clone())),
                false,
                Outcome::PreconditionFailed,
            ),
            (
                "if-none-match miss beats if-modified-since",
                c(&|c| {
                    c.if_none_match = Some("\"x\"".into());
                    c.if_modified_since = Some(date(lm + 10));
                }),
                true,
                go,
            ),
            (
                "if-modified-since later",
                c(&|c| c.if_modified_since = Some(date(lm + 10))),
                true,
                Outcome::NotModified,
            ),
            (
                "if-modified-since equal",
                c(&|c| c.if_modified_since = Some(date(lm))),
                true,
                Outcome::NotModified,
            ),
            (
                "if-modified-since older",
                c(&|c| c.if_modified_since = Some(date(lm - 1))),
                true,
                go,
            ),
            (
                "if-modified-since unsafe ignored",
                c(&|c| c.if_modified_since = Some(date(lm + 10))),
                false,
                go,
            ),
            (
                "if-match fails before if-none-match",
                c(&|c| {
                    c.if_match = Some("\"x\"".into());
                    c.if_none_match = Some(tag.clone());
                }),
                true,
                Outcome::PreconditionFailed,
            ),
            ("range alone", c(&|c| c.has_range = true), true, range),
            (
                "if-range strong tag",
                c(&|c| {
                    c.has_range = true;
                    c.if_range = Some(tag.clone());
                }),
                true,
                range,
            ),
            (
                "if-range weak tag",
                c(&|c| {
                    c.has_range = true;
                    c.if_range = Some(weak.clone());
                }),
                true,
                go,
            ),
            (
                "if-range other tag",
                c(&|c| {
                    c.has_range = true;
                    c.if_range = Some("\"x\"".into());
                }),
                true,
                go,
            ),
            (
                "if-range equal date",
                c(&|c| {
                    c.has_range = true;
                    c.if_range = Some(date(lm));
                }),
                true,
                range,
            ),
            (
                "if-range later date",
                c(&|c| {
                    c.has_range = true;
                    c.if_range = Some(date(lm + 1));
                }),
                true,
                go,
            ),
            (
                "if-range without range",
                c(&|c| c.if_range = Some(tag.clone())),
                true,
                go,
            ),
        ];
        for (name, c, safe, want) in table {
            assert_eq!(evaluate(&c, &v, safe), want, "{name}");
        }
    }
}
