//! `static_headers`: any `Accept-Encoding` and conditional header values through the static
//! handler's parsers (`static_files::encoding`, `static_files::conditional`).
//!
//! Properties:
//! 1. nothing panics, whatever UTF-8 the fields hold;
//! 2. q-values are thousandths in `0..=1000`, and `pick` chooses a coding the client accepts
//!    (q > 0) with the highest q, never one ranked below identity;
//! 3. `evaluate` follows RFC 9110 §13.2.2 on the cases that have one answer whatever the other
//!    fields say: no precondition serves (ranges only if asked); a representation's own ETag in
//!    `If-None-Match` (or `*`) is 304 for GET/HEAD and 412 otherwise; its own strong ETag or
//!    exact date in `If-Range` lets the range through, a weak tag does not.

use std::time::{Duration, UNIX_EPOCH};

use tincan::protocol::http::static_files::conditional::{
    evaluate, Conditions, Outcome, Validators,
};
use tincan::protocol::http::static_files::encoding::{parse_q, AcceptEncoding, Coding};

use crate::{byte, u16_, Unstructured};

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let flags = byte(&mut u);
    let size = u16_(&mut u) as u64;
    let secs = u.arbitrary::<u32>().unwrap_or(0) as u64;
    let text = String::from_utf8_lossy(u.take_rest()).into_owned();
    let mut fields = text.split('\n');
    let mut field = |bit: u8| {
        let f = fields.next().map(str::to_string);
        if flags & bit != 0 {
            f
        } else {
            None
        }
    };
    let accept = field(1);
    let conditions = Conditions {
        if_match: field(2),
        if_none_match: field(4),
        if_modified_since: field(8),
        if_unmodified_since: field(16),
        if_range: field(32),
        has_range: flags & 64 != 0,
    };
    let safe = flags & 128 != 0;

    // 1 and 2: Accept-Encoding.
    let ae = AcceptEncoding::parse(accept.as_deref());
    let qs: Vec<(Coding, u16)> = Coding::ALL.iter().map(|&c| (c, ae.q(c))).collect();
    for &(c, q) in &qs {
        assert!(q <= 1000, "{accept:?}: q {q} for {c:?}");
    }
    let floor = ae.identity_q().max(1);
    match ae.pick(&Coding::ALL) {
        Some(c) => {
            let q = ae.q(c);
            assert!(q > 0, "{accept:?}: picked {c:?} at q=0");
            assert!(q >= floor, "{accept:?}: picked {c:?} below identity");
            assert!(
                qs.iter().all(|&(_, other)| other <= q),
                "{accept:?}: not the best"
            );
        }
        None => assert!(
            qs.iter().all(|&(_, q)| q < floor),
            "{accept:?}: nothing picked"
        ),
    }
    if let Some(a) = &accept {
        for item in a.split([',', ';', '=']) {
            if let Some(q) = parse_q(item.trim()) {
                assert!(q <= 1000, "parse_q({item:?}) = {q}");
            }
        }
    }

    // 3: preconditions.
    let v = Validators::new(size, UNIX_EPOCH + Duration::from_secs(secs), "");
    let _ = evaluate(&conditions, &v, safe);
    assert_eq!(
        evaluate(
            &Conditions {
                has_range: conditions.has_range,
                ..Conditions::default()
            },
            &v,
            safe
        ),
        Outcome::Proceed {
            use_range: conditions.has_range
        },
        "no preconditions"
    );
    for own in [v.etag.clone(), "*".to_string(), format!("W/{}", v.etag)] {
        let c = Conditions {
            if_none_match: Some(own.clone()),
            if_modified_since: conditions.if_modified_since.clone(),
            if_range: conditions.if_range.clone(),
            has_range: conditions.has_range,
            ..Conditions::default()
        };
        let want = if safe {
            Outcome::NotModified
        } else {
            Outcome::PreconditionFailed
        };
        assert_eq!(evaluate(&c, &v, safe), want, "If-None-Match: {own}");
    }
    for (if_range, passes) in [
        (v.etag.clone(), true),
        (v.http_date(), true),
        (format!("W/{}", v.etag), false),
    ] {
        let c = Conditions {
            if_range: Some(if_range.clone()),
            if_modified_since: conditions.if_modified_since.clone(),
            has_range: true,
            ..Conditions::default()
        };
        let got = evaluate(&c, &v, true);
        // If-Modified-Since may answer 304 first (step 4); otherwise the range rule decides.
        if got != Outcome::NotModified {
            assert_eq!(
                got,
                Outcome::Proceed { use_range: passes },
                "If-Range: {if_range}"
            );
        }
    }
}
