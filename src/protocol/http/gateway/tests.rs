//! The gateway's routing, path forwarding, redirect rewriting and upstream choice, by hand.

use super::forward::{client_ip, forwarded_path, rest_of_path};
use super::redirect::redirect_map;
use super::*;
use crate::protocol::http::message::Text;
use crate::protocol::http::proxy::{Target, Upstream};
use crate::protocol::http::wire::{parse_head, Limits};

fn gateway() -> Gateway {
    Gateway::new(
        &[
            ("/api".into(), "http://127.0.0.1:9/v1".into()),
            ("/api/admin".into(), "http://127.0.0.1:10".into()),
            ("/".into(), "http://127.0.0.1:11/".into()),
        ],
        &[],
        GatewayConfig::default(),
    )
    .unwrap()
}

/// Route a GET for `path`, and hand `f` the request and where it went.
fn route_get<R>(g: &Gateway, path: &str, f: impl FnOnce(&Request<'_>, Routed) -> R) -> Option<R> {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut storage = [httparse::EMPTY_HEADER; 8];
    let head = parse_head(raw.as_bytes(), &mut storage, &Limits::default()).unwrap();
    let r = g.route(&head.request)?;
    Some(f(&head.request, r))
}

/// Which upstream port a path goes to, and the rest of its path.
fn routed(g: &Gateway, path: &str) -> Option<(String, String)> {
    route_get(g, path, |req, r| forwarded_to(g, req, r)).flatten()
}

fn forwarded_to(g: &Gateway, req: &Request<'_>, r: Routed) -> Option<(String, String)> {
    let route = &g.routes[r.index];
    let Kind::Proxy { servers, .. } = &route.kind else {
        return None;
    };
    let up = &servers[0].up;
    let rest = rest_of_path(req.path, &r.url, route.segments.len());
    let full = forwarded_path(req.path, &r.url);
    let Target::Tcp(addr) = &up.target else {
        return None;
    };
    let port = addr.rsplit(':').next().unwrap_or("").to_string();
    Some((port, up.upstream_path(&full, &rest)))
}

#[test]
fn the_longest_prefix_wins_segment_by_segment_after_normalizing() {
    let g = gateway();
    // Upstream ports: 9 for /api, 10 for /api/admin, 11 for everything else.
    let cases = [
        ("/api/x", "9", "/v1/x", ""),
        ("/api", "9", "/v1", ""),
        ("/api/", "9", "/v1/", ""),
        ("/api/admin/users", "10", "/api/admin/users", ""),
        ("/apix", "11", "/apix", "/apix is not under /api"),
        ("/api/a+b:c", "9", "/v1/a+b:c", "plain paths go as sent"),
        ("/x/../api/y", "9", "/v1/y", "dot segments resolve first"),
        ("/api/../admin", "11", "/admin", ""),
        ("/api//x", "9", "/v1/x", ""),
        ("/api/%2e%2e/secret", "11", "/secret", ""),
        (
            "/api/a%2fb%5Cc",
            "9",
            "/v1/a%2fb%5Cc",
            "an encoded slash or backslash goes upstream as sent",
        ),
        (
            "/api/./@s%2Fn/a+b;c=d",
            "9",
            "/v1/@s%2Fn/a+b;c=d",
            "a path normalized first is escaped no more than pchar needs",
        ),
        (
            "/api%2Fx",
            "11",
            "/api%2Fx",
            "an encoded slash never splits a segment, so /api%2Fx is not under /api",
        ),
        ("/x/../a%2fb", "11", "/a%2Fb", ""),
    ];
    for (path, port, upstream, why) in cases {
        assert_eq!(
            routed(&g, path),
            Some((port.to_string(), upstream.to_string())),
            "{path}: {why}"
        );
    }
}

/// A CGI route maps segments to files: an encoded separator there is left to the static
/// rules (400), as is a NUL or a malformed escape anywhere.
#[test]
fn a_cgi_route_refuses_encoded_separators_a_proxy_route_keeps() {
    let dir = std::env::temp_dir();
    let g = Gateway::new(
        &[("/p".into(), "http://127.0.0.1:9".into())],
        &[("/cgi".into(), dir)],
        GatewayConfig::default(),
    )
    .unwrap();
    let route = |path: &str| route_get(&g, path, |_, r| r.index);
    assert!(route("/cgi/env.sh/a").is_some());
    assert_eq!(route("/cgi/env.sh/a%2Fb"), None);
    assert_eq!(route("/cgi/..%5C..%5Cbin"), None);
    assert!(route("/p/a%2Fb").is_some());
    assert_eq!(route("/p/a%00b"), None);
    assert_eq!(route("/p/a%zzb"), None);
    // Found in review: to an upstream that decodes first, these would climb out of the
    // route's base path.
    for climbing in [
        "/p/..%2Fsecret.txt",
        "/p/%2e%2e%2Fsecret.txt",
        "/p/.%2F..%2Fsecret.txt",
        "/p/x/..%2F..%2F..%2Fsecret.txt",
        "/p/a%5C..%5Cb",
        "/p/a%2F%2Fb",
        "/p/a%2F",
    ] {
        assert_eq!(route(climbing), None, "{climbing}");
    }
}

/// `proxy_redirect default`: redirects into the upstream's URL come back as ours, on
/// segment boundaries only; others are left alone.
#[test]
fn upstream_redirects_are_rewritten_to_this_servers_url() {
    let up = Upstream::parse("http://127.0.0.1:9101/v1").unwrap();
    let m = redirect_map(&up, "/api", Some("front:9180"));
    let mut h: Vec<(Text, Text)> = vec![
        ("Location".into(), "http://127.0.0.1:9101/v1/foo?x=1".into()),
        ("Refresh".into(), "5; url=http://127.0.0.1:9101/v1/".into()),
        ("X-Other".into(), "http://127.0.0.1:9101/v1/foo".into()),
    ];
    m.apply(&mut h);
    assert_eq!(h[0].1, "http://front:9180/api/foo?x=1");
    assert_eq!(h[1].1, "5; url=http://front:9180/api/");
    assert_eq!(h[2].1, "http://127.0.0.1:9101/v1/foo", "only redirects");
    assert_eq!(
        m.map("http://127.0.0.1:9101/v1x"),
        None,
        "not a segment boundary"
    );
    assert_eq!(m.map("http://elsewhere.example/v1/a"), None);
    assert_eq!(m.map("/v1/relative"), None);
    // Without a host, a path; without an upstream path, only the origin changes.
    let m = redirect_map(&up, "/api", None);
    assert_eq!(
        m.map("http://127.0.0.1:9101/v1/a").as_deref(),
        Some("/api/a")
    );
    let whole = Upstream::parse("http://up.internal").unwrap();
    let m = redirect_map(&whole, "/api", Some("front"));
    assert_eq!(
        m.map("http://up.internal/api/a").as_deref(),
        Some("http://front/api/a")
    );
}

#[test]
fn a_prefix_routed_twice_or_without_a_slash_is_refused() {
    let cfg = GatewayConfig::default();
    let twice = [
        ("/a".to_string(), "http://127.0.0.1".to_string()),
        ("/a/".to_string(), "http://127.0.0.1".to_string()),
    ];
    assert!(matches!(
        Gateway::new(&twice, &[], cfg.clone()),
        Err(GatewayError::Twice { .. })
    ));
    let bare = [("a".to_string(), "http://127.0.0.1".to_string())];
    assert!(matches!(
        Gateway::new(&bare, &[], cfg.clone()),
        Err(GatewayError::PrefixSlash { .. })
    ));
    let paths = [(
        "/a".to_string(),
        "http://127.0.0.1:1/x,http://127.0.0.1:2/y".to_string(),
    )];
    assert!(matches!(
        Gateway::new(&paths, &[], cfg.clone()),
        Err(GatewayError::Upstream { .. })
    ));
    let unresolvable = [("/a".to_string(), "http://no-such-host.invalid".to_string())];
    let e = Gateway::new(&unresolvable, &[], cfg).unwrap_err();
    assert!(e.to_string().contains("does not resolve"), "{e}");
}

/// The client's address as forwarding fields write it, made without `format!`.
#[test]
fn client_addresses_are_written_as_their_display_says() {
    use crate::protocol::PeerAddr;
    for a in [
        "0.0.0.0:1",
        "10.20.255.1:2",
        "127.0.0.1:3",
        "[::1]:4",
        "[2001:db8::7]:5",
    ] {
        let sock: std::net::SocketAddr = a.parse().unwrap();
        let peer = Peer {
            remote: PeerAddr::Tcp(sock),
            local: PeerAddr::Tcp(sock),
        };
        let mut buf = [0u8; 48];
        assert_eq!(client_ip(&peer, &mut buf), sock.ip().to_string());
    }
}

/// Several upstreams on a route are used in turn; one that failed is left out for the
/// fail timeout, and a request goes to each at most once.
#[test]
fn upstreams_are_used_in_turn_and_a_failed_one_is_left_out() {
    let g = Gateway::new(
        &[(
            "/a".to_string(),
            "http://127.0.0.1:1,http://127.0.0.1:2,http://127.0.0.1:3".to_string(),
        )],
        &[],
        GatewayConfig::default(),
    )
    .unwrap();
    let picks: Vec<usize> = (0..6).map(|_| g.pick(0, 0).unwrap()).collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    // Server 1 refused: the next untried one is named, and 1 is skipped for a while.
    let (next, _, label) = g.failover(0, 1, 0b010).unwrap();
    assert_ne!(next, 1);
    assert!(label.contains("127.0.0.1:"), "{label}");
    for _ in 0..6 {
        assert_ne!(g.pick(0, 0), Some(1));
    }
    // Every server tried: nothing is left.
    assert_eq!(g.failover(0, 0, 0b111).map(|f| f.0), None);
}
