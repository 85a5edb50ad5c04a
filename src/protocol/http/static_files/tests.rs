//! The whole pipeline in-process: a real directory tree in a temporary directory, requests
//! built by hand, responses inspected down to the body bytes.

use std::io::Write;
use std::os::unix::fs::{symlink, FileExt};
use std::path::PathBuf;

use super::*;
use crate::protocol::http::message::{Part, Version};
use crate::protocol::test_peer as peer;

struct Tree {
    top: PathBuf,
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.top);
    }
}

impl Tree {
    fn root(&self) -> PathBuf {
        self.top.join("root")
    }
}

const SECRET: &str = "TOP-SECRET-f00d";
const HELLO: &str = "hello world\n";

fn tree() -> Tree {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let top = std::env::temp_dir().join(format!(
        "tincan-static-unit-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&top);
    let root = top.join("root");
    std::fs::create_dir_all(root.join("sub/inner")).unwrap();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(top.join("secret.txt"), SECRET).unwrap();
    std::fs::write(
        root.join("index.html"),
        "<!DOCTYPE html><title>home</title>",
    )
    .unwrap();
    std::fs::write(root.join("hello.txt"), HELLO).unwrap();
    std::fs::write(root.join("big.txt"), "compress me, please. ".repeat(300)).unwrap();
    std::fs::write(root.join("app.js"), "console.log('app');\n".repeat(100)).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&std::fs::read(root.join("app.js")).unwrap())
        .unwrap();
    std::fs::write(root.join("app.js.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(root.join("app.js.br"), b"pretend brotli").unwrap();
    std::fs::write(root.join("pic.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    std::fs::write(root.join(".env"), "PASSWORD=x").unwrap();
    std::fs::write(root.join(".git/config"), "[core]").unwrap();
    std::fs::write(root.join("sub/a.txt"), "a").unwrap();
    std::fs::write(root.join("sub/a b#%,[].txt"), "odd").unwrap();
    std::fs::write(root.join("404.html"), "<h1>custom not found</h1>").unwrap();
    symlink("hello.txt", root.join("link-in")).unwrap();
    symlink("../secret.txt", root.join("link-out")).unwrap();
    symlink("..", root.join("dir-out")).unwrap();
    symlink(".env", root.join("env-link")).unwrap();
    Tree { top }
}

fn handler(t: &Tree, f: impl FnOnce(&mut StaticConfig)) -> StaticFiles {
    let mut cfg = StaticConfig {
        root: t.root(),
        ..StaticConfig::default()
    };
    f(&mut cfg);
    StaticFiles::new(cfg).unwrap()
}

fn call(h: &StaticFiles, method: &str, target: &str, headers: &[(&str, &str)]) -> Response {
    let hs: Vec<httparse::Header<'_>> = headers
        .iter()
        .map(|(n, v)| httparse::Header {
            name: n,
            value: v.as_bytes(),
        })
        .collect();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let req = Request {
        method,
        target,
        path,
        query,
        version: Version::Http11,
        headers: &hs,
    };
    h.handle(&req, &peer())
}

fn get(h: &StaticFiles, target: &str) -> Response {
    call(h, "GET", target, &[])
}

fn read_region(file: &File, offset: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0; len as usize];
    file.read_exact_at(&mut v, offset).unwrap();
    v
}

fn body(r: &Response) -> Vec<u8> {
    match &r.body {
        Body::Empty => Vec::new(),
        Body::Bytes(b) => b.to_vec(),
        Body::File { file, offset, len } => read_region(file, *offset, *len),
        Body::Parts(parts) => parts
            .iter()
            .flat_map(|p| match p {
                Part::Bytes(b) => b.to_vec(),
                Part::File { file, offset, len } => read_region(file, *offset, *len),
            })
            .collect(),
        Body::Stream(_) => panic!("a streamed body is read through the session"),
    }
}

fn text(r: &Response) -> String {
    String::from_utf8_lossy(&body(r)).into_owned()
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn a_missing_root_is_refused_in_one_sentence() {
    let err = StaticFiles::new(StaticConfig {
        root: PathBuf::from("/definitely/not/here"),
        ..StaticConfig::default()
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::RootMissing(_)));
    assert!(
        // Read after `tincan: `, in the voice of every other startup error.
        msg.starts_with("the document root /definitely/not/here")
            && !msg.ends_with('.')
            && !msg.contains('\n'),
        "{msg}"
    );
    let t = tree();
    let file_root = StaticFiles::new(StaticConfig {
        root: t.root().join("hello.txt"),
        ..StaticConfig::default()
    });
    assert!(file_root
        .unwrap_err()
        .to_string()
        .contains("not a directory"));
    for (bad, why) in [
        (
            StaticConfig {
                index: vec!["a/b.html".into()],
                ..StaticConfig::default()
            },
            "the index file name `a/b.html` must be a plain file name, without slashes",
        ),
        (
            StaticConfig {
                error_pages: vec![(404, "404.html".into())],
                ..StaticConfig::default()
            },
            "the error page `404.html` must be a URL path starting with /",
        ),
        (
            StaticConfig {
                error_pages: vec![(200, "/x".into())],
                ..StaticConfig::default()
            },
            "200: only 4xx and 5xx statuses have error pages",
        ),
        (
            StaticConfig {
                fallback: Some("index.html".into()),
                ..StaticConfig::default()
            },
            "the fallback `index.html` must be a URL path starting with /",
        ),
        (
            StaticConfig {
                cache_control: vec![("[".into(), "no-cache".into())],
                ..StaticConfig::default()
            },
            "the Cache-Control pattern `[` is not a valid glob",
        ),
    ] {
        let cfg = StaticConfig {
            root: t.root(),
            ..bad
        };
        let msg = StaticFiles::new(cfg).unwrap_err().to_string();
        assert!(msg.starts_with(why), "{msg}");
    }
}

#[test]
fn a_file_is_served_with_type_validators_and_nosniff() {
    let t = tree();
    let h = handler(&t, |_| {});
    let r = get(&h, "/hello.txt");
    assert_eq!(r.status, 200);
    assert_eq!(text(&r), HELLO);
    assert_eq!(
        r.get_header("Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(r.get_header("X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(r.get_header("Accept-Ranges"), Some("bytes"));
    let etag = r.get_header("ETag").unwrap();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let lm = r.get_header("Last-Modified").unwrap();
    let meta = std::fs::metadata(t.root().join("hello.txt")).unwrap();
    let secs = meta
        .modified()
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(
        httpdate::parse_http_date(lm).unwrap(),
        UNIX_EPOCH + std::time::Duration::from_secs(secs)
    );
    assert!(matches!(
        r.body,
        Body::File {
            offset: 0,
            len: 12,
            ..
        }
    ));
    // Text could be compressed (were it bigger, or had it a sidecar): caches must know.
    assert_eq!(r.get_header("Vary"), Some("Accept-Encoding"));
    let png = get(&h, "/pic.png");
    assert_eq!(png.get_header("Content-Type"), Some("image/png"));
    assert_eq!(png.get_header("Vary"), None);
}

#[test]
fn methods_other_than_get_and_head_are_refused_with_allow() {
    let t = tree();
    let h = handler(&t, |_| {});
    let head = call(&h, "HEAD", "/hello.txt", &[]);
    assert_eq!(head.status, 200);
    assert_eq!(head.body.len(), HELLO.len() as u64);
    let opt = call(&h, "OPTIONS", "*", &[]);
    assert_eq!((opt.status, opt.get_header("Allow")), (204, Some(ALLOW)));
    for m in ["POST", "PUT", "DELETE", "PATCH", "TRACE"] {
        let r = call(&h, m, "/hello.txt", &[]);
        assert_eq!((r.status, r.get_header("Allow")), (405, Some(ALLOW)), "{m}");
    }
}

#[test]
fn the_traversal_corpus_never_serves_a_byte_from_outside_the_root() {
    let t = tree();
    for follow in [false, true] {
        let h = handler(&t, |c| c.follow_symlinks = follow);
        for raw in [
            "/..",
            "/../secret.txt",
            "/../../secret.txt",
            "/%2e%2e/secret.txt",
            "/%2E%2E/secret.txt",
            "/.%2e/secret.txt",
            "/%2e./secret.txt",
            "/..%2fsecret.txt",
            "/..%2Fsecret.txt",
            "/..%5csecret.txt",
            "/..\\secret.txt",
            "/%252e%252e/secret.txt",
            "/%c0%ae%c0%ae/secret.txt",
            "/..%00/secret.txt",
            "/secret.txt%00.html",
            "/sub/../../secret.txt",
            "/sub/%2e%2e/%2e%2e/secret.txt",
            "/./.././secret.txt",
            "/....//secret.txt",
            "/..;/secret.txt",
            "/%%32%65%%32%65/secret.txt",
            "//../secret.txt",
            "/sub/inner/../../../secret.txt",
            "/%2e%2e%5csecret.txt",
            "/..%252fsecret.txt",
            "/%u002e%u002e/secret.txt",
            "/%",
            "/sub%2f..%2f..%2fsecret.txt",
            "/hello.txt/../../secret.txt",
            "/hello.txt/..%2f..%2fsecret.txt",
        ] {
            for headers in [&[][..], &[("Accept", "application/json")][..]] {
                let r = call(&h, "GET", raw, headers);
                assert!(
                    !text(&r).contains(SECRET),
                    "{raw} (follow={follow}) leaked the secret"
                );
                assert!(
                    r.status != 200 || raw.starts_with("/.."),
                    "{raw} -> {}",
                    r.status
                );
            }
        }
        // Without follow_symlinks, links out of the root are 403 (not a silent 404).
        if !follow {
            assert_eq!(get(&h, "/link-out").status, 403);
            assert_eq!(get(&h, "/dir-out/secret.txt").status, 403);
            assert_eq!(get(&h, "/dir-out/").status, 403);
        }
    }
}

#[test]
fn dot_dot_at_the_root_stays_at_the_root_like_nginx() {
    let t = tree();
    let h = handler(&t, |_| {});
    let r = get(&h, "/../hello.txt");
    assert_eq!((r.status, text(&r)), (200, HELLO.to_string()));
    assert_eq!(get(&h, "/%2e%2e/%2e%2e/hello.txt").status, 200);
    assert_eq!(get(&h, "/..%2fhello.txt").status, 400);
}

#[test]
fn symlinks_inside_the_root_are_served_and_outside_only_when_followed() {
    let t = tree();
    let h = handler(&t, |_| {});
    let r = get(&h, "/link-in");
    assert_eq!((r.status, text(&r)), (200, HELLO.to_string()));
    assert_eq!(get(&h, "/link-out").status, 403);
    let follow = handler(&t, |c| c.follow_symlinks = true);
    let r = get(&follow, "/link-out");
    assert_eq!((r.status, text(&r)), (200, SECRET.to_string()));
}

/// The race `locate` cannot close alone: between its check and the open, a writer inside the
/// root swaps a directory for a symlink out of it. The open refuses what it would now reach.
#[test]
fn a_directory_swapped_for_a_link_out_after_the_check_is_not_followed() {
    let t = tree();
    let root = std::fs::canonicalize(t.root()).unwrap();
    let target = locate(&root, Path::new("sub/a.txt"), false, false).unwrap();
    std::fs::rename(root.join("sub"), root.join("sub.before")).unwrap();
    std::fs::write(t.top.join("a.txt"), SECRET).unwrap();
    symlink(&t.top, root.join("sub")).unwrap();
    // What a plain open of the checked path now reaches:
    assert_eq!(std::fs::read_to_string(&target).unwrap(), SECRET);
    assert_eq!(open(&target, &root).err(), Some(Refusal::Forbidden));
    // A path with no symlink in it opens as before.
    let (_, meta) = open(&root.join("sub.before/a.txt"), &root).unwrap();
    assert!(meta.is_file());
}

#[test]
fn dotfiles_are_hidden_even_through_symlinks_unless_shown() {
    let t = tree();
    let h = handler(&t, |_| {});
    for p in ["/.env", "/.git/config", "/.git/", "/env-link", "/%2eenv"] {
        assert_eq!(get(&h, p).status, 404, "{p}");
    }
    let listed = handler(&t, |c| c.index.clear());
    let page = text(&get(&listed, "/"));
    assert!(
        page.contains("hello.txt") && !page.contains(".env"),
        "{page}"
    );
    let shown = handler(&t, |c| {
        c.show_dotfiles = true;
        c.index.clear();
    });
    assert_eq!(text(&get(&shown, "/.env")), "PASSWORD=x");
    assert_eq!(text(&get(&shown, "/env-link")), "PASSWORD=x");
    assert!(text(&get(&shown, "/")).contains("href=\".env\""));
}

#[test]
fn a_file_used_as_a_directory_is_not_found() {
    let t = tree();
    let h = handler(&t, |_| {});
    assert_eq!(get(&h, "/hello.txt/").status, 404);
    assert_eq!(get(&h, "/hello.txt/x").status, 404);
}

#[test]
fn bad_paths_are_bad_requests() {
    let t = tree();
    let h = handler(&t, |_| {});
    for p in [
        "/a%00b",
        "/sub%2fa.txt",
        "/sub%5Ca.txt",
        "/sub\\a.txt",
        "/%zz",
        "*",
    ] {
        assert_eq!(get(&h, p).status, 400, "{p}");
    }
}

#[test]
fn directories_redirect_to_the_slash_form_keeping_the_query() {
    let t = tree();
    let h = handler(&t, |_| {});
    let r = get(&h, "/sub?sort=size");
    assert_eq!(r.status, 301);
    assert_eq!(r.get_header("Location"), Some("/sub/?sort=size"));
    // A raw UTF-8 query leaves as ASCII (RFC 3986), its escapes untouched.
    let r = get(&h, "/sub?q=\u{e9}t\u{e9}&r=%20");
    assert_eq!(
        r.get_header("Location"),
        Some("/sub/?q=%C3%A9t%C3%A9&r=%20")
    );
    // Never a protocol-relative Location, whatever the request path looked like.
    let r = get(&h, "//sub");
    assert_eq!(r.get_header("Location"), Some("/sub/"));
    let r = get(&h, "/./sub/inner");
    assert_eq!(r.get_header("Location"), Some("/sub/inner/"));
}

#[test]
fn a_directory_serves_its_index_or_a_listing_or_403() {
    let t = tree();
    let h = handler(&t, |_| {});
    let r = get(&h, "/");
    assert_eq!(r.status, 200);
    assert!(text(&r).contains("<title>home</title>"));
    let r = get(&h, "/sub/");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.get_header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert!(r
        .get_header("Content-Security-Policy")
        .is_some_and(|v| v.starts_with("default-src 'none'")));
    let page = text(&r);
    assert!(page.contains("Index of /sub/"));
    assert!(page.contains("href=\"a%20b%23%25%2C%5B%5D.txt\""), "{page}");
    assert!(page.contains(">a b#%,[].txt</a>"));
    assert!(page.contains("href=\"inner/\""));
    assert!(page.contains("href=\"../\""));
    assert!(page.find("inner/").unwrap() < page.find("a.txt").unwrap());
    let other_index = handler(&t, |c| {
        c.index = vec!["missing.html".into(), "a.txt".into()]
    });
    assert_eq!(text(&get(&other_index, "/sub/")), "a");
    let off = handler(&t, |c| c.listing = false);
    assert_eq!(get(&off, "/sub/").status, 403);
    assert_eq!(get(&off, "/").status, 200);
}

/// A listing links only to what a click would be served: links that lead out of the root,
/// to a hidden file or nowhere, and names the path rules refuse, are left out.
#[test]
fn listings_show_only_entries_that_could_be_served() {
    let t = tree();
    symlink("nothing-here", t.root().join("dangling")).unwrap();
    std::fs::write(t.root().join("back\\slash.txt"), "x").unwrap();
    // Neither a file nor a directory: a FIFO gets 403 and a socket 404, so neither is listed.
    let _sock = std::os::unix::net::UnixListener::bind(t.root().join("sock")).unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(t.root().join("pipe"))
        .status()
        .is_ok_and(|s| s.success());
    let h = handler(&t, |c| c.index.clear());
    let r = call(&h, "GET", "/", &[("Accept", "application/json")]);
    let v: serde_json::Value = serde_json::from_slice(&body(&r)).unwrap();
    let find = |name: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
    };
    let link_in = find("link-in").expect("link-in listed");
    assert_eq!(link_in["size"], HELLO.len());
    assert!(link_in["modified"].is_string());
    assert_eq!(link_in["href"], "link-in");
    for refused in [
        "link-out",
        "dir-out",
        "env-link",
        "dangling",
        "back\\slash.txt",
        "sock",
    ] {
        assert!(find(refused).is_none(), "{refused} is listed");
    }
    assert!(!fifo || find("pipe").is_none(), "a FIFO is listed");
    // Every link of the HTML listing is served.
    let page = text(&get(&h, "/"));
    for href in page
        .split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
    {
        if href.starts_with('?') || href == "../" {
            continue;
        }
        let r = get(&h, &format!("/{href}"));
        assert!(r.status == 200 || r.status == 301, "/{href}: {}", r.status);
    }
    let follow = handler(&t, |c| {
        c.index.clear();
        c.follow_symlinks = true;
    });
    let r = call(&follow, "GET", "/", &[("Accept", "application/json")]);
    let v: serde_json::Value = serde_json::from_slice(&body(&r)).unwrap();
    let out = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "link-out")
        .unwrap();
    assert_eq!(out["size"], SECRET.len());
}

#[test]
fn listings_negotiate_json() {
    let t = tree();
    let h = handler(&t, |_| {});
    let r = call(&h, "GET", "/sub/", &[("Accept", "application/json")]);
    assert_eq!(
        r.get_header("Content-Type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(r.get_header("Vary"), Some("Accept"));
    let v: serde_json::Value = serde_json::from_slice(&body(&r)).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["inner", "a b#%,[].txt", "a.txt"]);
    assert_eq!(v[0]["type"], "dir");
    assert_eq!(v[2]["size"], 1);
    let root = call(&h, "GET", "/dir-out/", &[("Accept", "application/json")]);
    assert_eq!(root.status, 403);
    let by_query = get(&h, "/sub/?format=json");
    assert!(by_query
        .get_header("Content-Type")
        .unwrap()
        .starts_with("application/json"));
}

#[test]
fn validators_give_304_and_412_in_rfc_order() {
    let t = tree();
    let h = handler(&t, |c| {
        c.cache_control = vec![("*.txt".into(), "max-age=60".into())]
    });
    let r = get(&h, "/hello.txt");
    let etag = r.get_header("ETag").unwrap().to_string();
    let lm = r.get_header("Last-Modified").unwrap().to_string();
    assert_eq!(r.get_header("Cache-Control"), Some("max-age=60"));

    let nm = call(&h, "GET", "/hello.txt", &[("If-None-Match", &etag)]);
    assert_eq!(nm.status, 304);
    assert!(nm.body.is_empty());
    assert_eq!(nm.get_header("ETag"), Some(etag.as_str()));
    assert_eq!(nm.get_header("Cache-Control"), Some("max-age=60"));
    let weak = format!("W/{etag}");
    assert_eq!(
        call(&h, "HEAD", "/hello.txt", &[("If-None-Match", &weak)]).status,
        304
    );
    assert_eq!(
        call(&h, "GET", "/hello.txt", &[("If-Modified-Since", &lm)]).status,
        304
    );
    // If-None-Match wins over If-Modified-Since.
    let r = call(
        &h,
        "GET",
        "/hello.txt",
        &[("If-None-Match", "\"other\""), ("If-Modified-Since", &lm)],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        call(&h, "GET", "/hello.txt", &[("If-Match", "\"other\"")]).status,
        412
    );
    assert_eq!(
        call(&h, "GET", "/hello.txt", &[("If-Match", &etag)]).status,
        200
    );
    let old = "Sun, 06 Nov 1994 08:49:37 GMT";
    assert_eq!(
        call(&h, "GET", "/hello.txt", &[("If-Unmodified-Since", old)]).status,
        412
    );
    assert_eq!(
        call(
            &h,
            "GET",
            "/hello.txt",
            &[("If-Match", &etag), ("If-Unmodified-Since", old)]
        )
        .status,
        200
    );
}

#[test]
fn ranges_give_206_multipart_and_416() {
    let t = tree();
    let h = handler(&t, |_| {});
    let r = call(&h, "GET", "/hello.txt", &[("Range", "bytes=0-4")]);
    assert_eq!(r.status, 206);
    assert_eq!(text(&r), "hello");
    assert_eq!(r.get_header("Content-Range"), Some("bytes 0-4/12"));
    let r = call(&h, "GET", "/hello.txt", &[("Range", "bytes=-6")]);
    assert_eq!((r.status, text(&r)), (206, "world\n".to_string()));
    let r = call(&h, "GET", "/hello.txt", &[("Range", "bytes=6-")]);
    assert_eq!((r.status, text(&r)), (206, "world\n".to_string()));

    let r = call(&h, "GET", "/hello.txt", &[("Range", "bytes=0-1,6-7")]);
    assert_eq!(r.status, 206);
    let ct = r.get_header("Content-Type").unwrap().to_string();
    let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
    let b = text(&r);
    assert!(b.contains(&format!("--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 0-1/12\r\n\r\nhe\r\n")));
    assert!(b.contains("Content-Range: bytes 6-7/12\r\n\r\nwo\r\n"));
    assert!(b.ends_with(&format!("--{boundary}--\r\n")));

    let r = call(&h, "GET", "/hello.txt", &[("Range", "bytes=50-")]);
    assert_eq!(r.status, 416);
    assert_eq!(r.get_header("Content-Range"), Some("bytes */12"));
    let r = call(&h, "GET", "/hello.txt", &[("Range", "bytes=5-1")]);
    assert_eq!((r.status, text(&r)), (200, HELLO.to_string()));

    // If-Range with the current ETag honours the range; with another, sends it all.
    let etag = get(&h, "/hello.txt")
        .get_header("ETag")
        .unwrap()
        .to_string();
    let ok = call(
        &h,
        "GET",
        "/hello.txt",
        &[("Range", "bytes=0-0"), ("If-Range", &etag)],
    );
    assert_eq!(ok.status, 206);
    let stale = call(
        &h,
        "GET",
        "/hello.txt",
        &[("Range", "bytes=0-0"), ("If-Range", "\"old\"")],
    );
    assert_eq!(stale.status, 200);
}

#[test]
fn the_apache_killer_gets_at_most_the_file() {
    let t = tree();
    let h = handler(&t, |_| {});
    let len = std::fs::metadata(t.root().join("big.txt")).unwrap().len();
    let overlapping = (0..80)
        .map(|i| format!("0-{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let r = call(
        &h,
        "GET",
        "/big.txt",
        &[("Range", &format!("bytes={overlapping}"))],
    );
    assert_eq!(r.status, 206);
    assert_eq!(
        r.get_header("Content-Range"),
        Some(format!("bytes 0-79/{len}").as_str())
    );
    let scattered = (0..40)
        .map(|i| format!("{}-{}", i * 20, i * 20 + 1))
        .collect::<Vec<_>>()
        .join(",");
    let r = call(
        &h,
        "GET",
        "/big.txt",
        &[("Range", &format!("bytes={scattered}"))],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), len);
}

#[test]
fn sidecars_are_chosen_by_accept_encoding_with_distinct_etags() {
    let t = tree();
    let h = handler(&t, |_| {});
    let plain = get(&h, "/app.js");
    assert_eq!(plain.get_header("Content-Encoding"), None);
    assert_eq!(plain.get_header("Vary"), Some("Accept-Encoding"));
    assert_eq!(
        plain.get_header("Content-Type"),
        Some("text/javascript; charset=utf-8")
    );

    let gz = call(&h, "GET", "/app.js", &[("Accept-Encoding", "gzip")]);
    assert_eq!(gz.get_header("Content-Encoding"), Some("gzip"));
    assert_eq!(
        gz.get_header("Content-Type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(gz.get_header("Vary"), Some("Accept-Encoding"));
    assert_eq!(gunzip(&body(&gz)), body(&plain));
    let on_disk = std::fs::read(t.root().join("app.js.gz")).unwrap();
    assert_eq!(body(&gz), on_disk, "the sidecar itself, not a fresh gzip");

    let br = call(
        &h,
        "GET",
        "/app.js",
        &[("Accept-Encoding", "gzip, deflate, br")],
    );
    assert_eq!(br.get_header("Content-Encoding"), Some("br"));
    assert_eq!(text(&br), "pretend brotli");
    let prefer_gz = call(
        &h,
        "GET",
        "/app.js",
        &[("Accept-Encoding", "br;q=0.1, gzip")],
    );
    assert_eq!(prefer_gz.get_header("Content-Encoding"), Some("gzip"));

    let tags = [&plain, &gz, &br].map(|r| r.get_header("ETag").unwrap().to_string());
    assert!(
        tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2],
        "{tags:?}"
    );
    // A 304 only for the representation whose tag was sent.
    let r = call(
        &h,
        "GET",
        "/app.js",
        &[("Accept-Encoding", "gzip"), ("If-None-Match", &tags[1])],
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.get_header("Vary"), Some("Accept-Encoding"));
    let r = call(
        &h,
        "GET",
        "/app.js",
        &[("Accept-Encoding", "br"), ("If-None-Match", &tags[1])],
    );
    assert_eq!(r.status, 200);
    // Ranges apply to the encoded bytes.
    let r = call(
        &h,
        "GET",
        "/app.js",
        &[("Accept-Encoding", "gzip"), ("Range", "bytes=0-1")],
    );
    assert_eq!((r.status, body(&r)), (206, vec![0x1f, 0x8b]));
}

#[test]
fn compressible_files_are_gzipped_on_the_fly_and_cached() {
    let t = tree();
    let h = handler(&t, |_| {});
    let plain = get(&h, "/big.txt");
    assert_eq!(plain.get_header("Vary"), Some("Accept-Encoding"));
    let gz = call(
        &h,
        "GET",
        "/big.txt",
        &[("Accept-Encoding", "gzip, identity;q=0.8")],
    );
    assert_eq!(gz.get_header("Content-Encoding"), Some("gzip"));
    // Identity ranked above gzip wins (§12.5.3).
    let id = call(
        &h,
        "GET",
        "/big.txt",
        &[("Accept-Encoding", "gzip;q=0.8, identity")],
    );
    assert_eq!(id.get_header("Content-Encoding"), None);
    let bytes = body(&gz);
    assert!(bytes.len() < plain.body.len() as usize / 4);
    assert_eq!(gunzip(&bytes), body(&plain));
    assert_ne!(gz.get_header("ETag"), plain.get_header("ETag"));
    assert!(h.gzip.cached_bytes() >= bytes.len());
    let head = call(&h, "HEAD", "/big.txt", &[("Accept-Encoding", "gzip")]);
    assert_eq!(head.body.len(), bytes.len() as u64);
    assert_eq!(head.get_header("ETag"), gz.get_header("ETag"));
    // Bytes made here: a weak ETag (a 304 still works), no ranges (the whole answer, not a
    // slice another build might not reproduce), and no Accept-Ranges to invite them.
    let etag = gz.get_header("ETag").unwrap().to_string();
    assert!(etag.starts_with("W/\""), "{etag}");
    assert_eq!(gz.get_header("Accept-Ranges"), None);
    assert_eq!(plain.get_header("Accept-Ranges"), Some("bytes"));
    let cond = [
        ("Accept-Encoding", "gzip"),
        ("If-None-Match", etag.as_str()),
    ];
    assert_eq!(call(&h, "GET", "/big.txt", &cond).status, 304);
    let ranged = [("Accept-Encoding", "gzip"), ("Range", "bytes=0-9")];
    let whole = call(&h, "GET", "/big.txt", &ranged);
    assert_eq!(whole.status, 200);
    assert_eq!(body(&whole), bytes);
    let resume = [
        ("Accept-Encoding", "gzip"),
        ("Range", "bytes=10-"),
        ("If-Range", etag.as_str()),
    ];
    assert_eq!(call(&h, "GET", "/big.txt", &resume).status, 200);
    let must = [("Accept-Encoding", "gzip"), ("If-Match", etag.as_str())];
    assert_eq!(call(&h, "GET", "/big.txt", &must).status, 412);

    let refused = call(&h, "GET", "/big.txt", &[("Accept-Encoding", "gzip;q=0")]);
    assert_eq!(refused.get_header("Content-Encoding"), None);
    let off = handler(&t, |c| c.compress = false);
    let r = call(&off, "GET", "/big.txt", &[("Accept-Encoding", "gzip")]);
    assert_eq!(r.get_header("Content-Encoding"), None);
    assert_eq!(r.get_header("Vary"), None);
    // Images are not compressed.
    let png = call(&h, "GET", "/pic.png", &[("Accept-Encoding", "gzip")]);
    assert_eq!(png.get_header("Content-Encoding"), None);
}

#[test]
fn accept_that_excludes_the_type_gets_406() {
    let t = tree();
    let h = handler(&t, |_| {});
    let r = call(&h, "GET", "/pic.png", &[("Accept", "text/html")]);
    assert_eq!(r.status, 406);
    assert!(text(&r).contains("image/png"));
    assert_eq!(
        call(&h, "GET", "/pic.png", &[("Accept", "image/*")]).status,
        200
    );
    assert_eq!(
        call(&h, "GET", "/pic.png", &[("Accept", "text/html,*/*;q=0.8")]).status,
        200
    );
}

#[test]
fn error_pages_and_the_spa_fallback() {
    let t = tree();
    let h = handler(&t, |c| c.error_pages = vec![(404, "/404.html".into())]);
    let r = get(&h, "/nope");
    assert_eq!(r.status, 404);
    assert_eq!(text(&r), "<h1>custom not found</h1>");
    assert_eq!(
        r.get_header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(get(&h, "/link-out").status, 403);

    let spa = handler(&t, |c| c.fallback = Some("/index.html".into()));
    for p in ["/app/route", "/deep/er/path/", "/hello.txt/x"] {
        let r = get(&spa, p);
        assert_eq!(r.status, 200, "{p}");
        assert!(text(&r).contains("<title>home</title>"));
    }
    // Refusals are not "missing": no fallback for dotfiles, traversal or symlinks out.
    assert_eq!(get(&spa, "/.env").status, 404);
    assert_eq!(get(&spa, "/link-out").status, 403);
    assert_eq!(get(&spa, "/a%2fb").status, 400);
}

#[test]
fn special_files_are_not_served_and_do_not_block() {
    let t = tree();
    let fifo = t.root().join("pipe");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "this test needs mkfifo (coreutils)"
    );
    let h = handler(&t, |_| {});
    assert_eq!(get(&h, "/pipe").status, 403);
}

/// The headers of an answer as the session would write them (own and preformatted lines).
fn header_lines(r: &Response) -> String {
    let mut s: String = r
        .headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect();
    if let Some(raw) = &r.raw_headers {
        s.push_str(std::str::from_utf8(raw).unwrap());
    }
    s
}

#[test]
fn a_repeated_plain_get_is_answered_from_the_cache_with_the_same_bytes() {
    let t = tree();
    let h = handler(&t, |_| {});
    let first = get(&h, "/hello.txt");
    assert!(
        first.raw_headers.is_none(),
        "the first answer takes the full path"
    );
    let second = get(&h, "/hello.txt");
    assert!(
        second.raw_headers.is_some(),
        "the second comes from the cache"
    );
    assert!(second.headers.is_empty());
    assert_eq!(second.status, 200);
    assert_eq!(header_lines(&first), header_lines(&second));
    assert_eq!(body(&first), body(&second));
    assert!(
        matches!(second.body, Body::Bytes(_)),
        "a small file is kept in memory"
    );
    assert_eq!(second.get_header("etag"), first.get_header("ETag"));
    // A directory's index is cached under the directory's path.
    get(&h, "/");
    assert!(get(&h, "/").raw_headers.is_some());
}

#[test]
fn requests_that_change_the_answer_bypass_the_cache() {
    let t = tree();
    let h = handler(&t, |_| {});
    get(&h, "/hello.txt");
    let etag = get(&h, "/hello.txt")
        .get_header("ETag")
        .unwrap()
        .to_string();
    let not_modified = call(&h, "GET", "/hello.txt", &[("If-None-Match", &etag)]);
    assert_eq!(not_modified.status, 304);
    let part = call(&h, "GET", "/hello.txt", &[("Range", "bytes=0-4")]);
    assert_eq!((part.status, text(&part).as_str()), (206, "hello"));
    let refused = call(&h, "GET", "/hello.txt", &[("Accept", "image/png")]);
    assert_eq!(refused.status, 406);
    assert_eq!(call(&h, "POST", "/hello.txt", &[]).status, 405);
    // A compressible file asked for with gzip is compressed, never the cached identity.
    get(&h, "/big.txt");
    assert!(get(&h, "/big.txt").raw_headers.is_some());
    let gz = call(&h, "GET", "/big.txt", &[("Accept-Encoding", "gzip")]);
    assert_eq!(gz.get_header("Content-Encoding"), Some("gzip"));
    // So is a file with a precompressed sidecar.
    get(&h, "/app.js");
    let br = call(&h, "GET", "/app.js", &[("Accept-Encoding", "br")]);
    assert_eq!(br.get_header("Content-Encoding"), Some("br"));
    // An incompressible file without sidecars is the same answer whatever the client accepts.
    get(&h, "/pic.png");
    let png = call(&h, "GET", "/pic.png", &[("Accept-Encoding", "gzip, br")]);
    assert!(png.raw_headers.is_some());
}

#[test]
fn a_changed_file_is_served_fresh_once_the_entry_has_expired() {
    let t = tree();
    let h = handler(&t, |_| {});
    get(&h, "/hello.txt");
    assert!(get(&h, "/hello.txt").raw_headers.is_some());
    std::fs::write(t.root().join("hello.txt"), "changed!").unwrap();
    std::thread::sleep(file_cache::VALID_FOR);
    let fresh = get(&h, "/hello.txt");
    assert_eq!(text(&fresh), "changed!");
    assert_eq!(text(&get(&h, "/hello.txt")), "changed!");
    std::fs::remove_file(t.root().join("hello.txt")).unwrap();
    std::thread::sleep(file_cache::VALID_FOR);
    assert_eq!(get(&h, "/hello.txt").status, 404);
}

/// A large file (kept as an open descriptor) overwritten in place keeps its inode: the cached
/// head would describe the old contents while the descriptor reads the new. Found by an
/// outside pass: `cp v2 f` within the second served v1's length and ETag over v2's bytes.
#[test]
fn a_large_file_overwritten_in_place_is_never_served_under_its_old_head() {
    use std::io::Write as _;
    let t = tree();
    let h = handler(&t, |_| {});
    let path = t.root().join("in-place.bin");
    std::fs::write(&path, vec![b'1'; 100_000]).unwrap();
    get(&h, "/in-place.bin");
    let cached = get(&h, "/in-place.bin");
    assert!(
        matches!(cached.body, Body::File { .. }),
        "kept as a descriptor"
    );
    let old_etag = cached.get_header("etag").unwrap().to_string();
    // Overwrite in place (same inode), as cp does: truncate, then write.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.write_all(&[b'2'; 120_000]).unwrap();
    drop(f);
    let fresh = get(&h, "/in-place.bin");
    assert!(fresh.raw_headers.is_none(), "the full path, not the cache");
    assert_eq!(body(&fresh), vec![b'2'; 120_000]);
    assert_ne!(fresh.get_header("ETag").unwrap(), old_etag);
}

#[test]
fn the_cache_keeps_to_its_budget_and_can_be_turned_off() {
    let t = tree();
    let off = handler(&t, |c| c.file_cache = 0);
    get(&off, "/hello.txt");
    assert!(get(&off, "/hello.txt").raw_headers.is_none());
    let small = handler(&t, |c| c.file_cache = 1000);
    get(&small, "/hello.txt");
    get(&small, "/big.txt"); // 6,300 bytes: over the budget, not kept
    assert!(get(&small, "/hello.txt").raw_headers.is_some());
    assert!(get(&small, "/big.txt").raw_headers.is_none());
    assert!(small.files.used() <= 1000);
}

#[test]
fn the_cache_keeps_at_most_its_share_of_descriptors() {
    let t = tree();
    let big = vec![b'x'; 70 * 1024]; // over INLINE_MAX: kept as an open descriptor
    for i in 0..3 {
        std::fs::write(t.root().join(format!("large-{i}.bin")), &big).unwrap();
    }
    let h = handler(&t, |c| c.file_cache_fds = Some(2));
    for i in 0..3 {
        get(&h, &format!("/large-{i}.bin"));
    }
    assert_eq!(h.files.held_fds(), 2);
    assert!(get(&h, "/large-0.bin").raw_headers.is_some());
    assert!(get(&h, "/large-1.bin").raw_headers.is_some());
    assert!(
        get(&h, "/large-2.bin").raw_headers.is_none(),
        "a third descriptor"
    );
    // Small files cost no descriptor and are still kept.
    get(&h, "/hello.txt");
    assert!(get(&h, "/hello.txt").raw_headers.is_some());
    // Out of descriptors, the server asks the handler to let go of them; the rest stays.
    h.release_descriptors();
    assert_eq!(h.files.held_fds(), 0);
    assert!(get(&h, "/large-0.bin").raw_headers.is_none());
    assert!(get(&h, "/hello.txt").raw_headers.is_some());

    // By default: a quarter of the limit, at most 1024.
    assert_eq!(file_cache::default_fds(40), 10);
    assert_eq!(file_cache::default_fds(4096), 1024);
    assert_eq!(file_cache::default_fds(1_048_576), 1024);
    assert_eq!(file_cache::default_fds(3), 0);
}

/// Several ranges of a coded representation would be a multipart body that is not gzip
/// inside a response that says it is: the whole coded answer goes instead (as nginx does). One
/// range of it is still a 206.
#[test]
fn several_ranges_of_a_compressed_answer_get_the_whole_answer() {
    let t = tree();
    let h = handler(&t, |_| {});
    let gz = [("Accept-Encoding", "gzip")];
    let whole = call(&h, "GET", "/app.js", &gz);
    assert_eq!(whole.get_header("Content-Encoding"), Some("gzip"));
    let r = call(&h, "GET", "/app.js", &[gz[0], ("Range", "bytes=0-9,20-29")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.get_header("Content-Encoding"), Some("gzip"));
    assert_eq!(body(&r), body(&whole));
    let r = call(
        &h,
        "GET",
        "/big.txt",
        &[gz[0], ("Range", "bytes=0-9,20-29")],
    );
    assert_eq!(r.status, 200);
    assert!(gunzip(&body(&r)).starts_with(b"compress me"));
    let r = call(&h, "GET", "/app.js", &[gz[0], ("Range", "bytes=0-9")]);
    assert_eq!((r.status, body(&r)), (206, body(&whole)[..10].to_vec()));
    // Without a coding, several ranges stay a multipart 206.
    let r = call(&h, "GET", "/app.js", &[("Range", "bytes=0-9,20-29")]);
    assert_eq!(r.status, 206);
}

/// A listing has no validator: `If-Match` with tags fails (412) and `If-None-Match: *`
/// matches the existing resource (304), RFC 9110 §13.1.1-2; date conditions are ignored.
#[test]
fn listings_answer_preconditions_as_a_resource_without_validators() {
    let t = tree();
    let h = handler(&t, |_| {});
    let status = |hdr: (&str, &str)| call(&h, "GET", "/sub/", &[hdr]).status;
    assert_eq!(status(("If-Match", "\"x\"")), 412);
    assert_eq!(status(("If-Match", "*")), 200);
    assert_eq!(status(("If-None-Match", "*")), 304);
    assert_eq!(status(("If-None-Match", "\"x\"")), 200);
    assert_eq!(
        status(("If-Unmodified-Since", "Sun, 06 Nov 1994 08:49:37 GMT")),
        200
    );
}

/// A sidecar makes the answer depend on Accept-Encoding whatever the type, so even the
/// identity answer of an incompressible file with a sidecar says `Vary`.
#[test]
fn a_sidecar_puts_vary_on_every_answer_for_its_file() {
    let t = tree();
    std::fs::write(t.root().join("data.bin"), vec![1u8; 4000]).unwrap();
    std::fs::write(t.root().join("data.bin.gz"), b"pretend gzip").unwrap();
    let h = handler(&t, |_| {});
    for ae in [None, Some("br"), Some("gzip")] {
        let hs: Vec<(&str, &str)> = ae.map(|v| ("Accept-Encoding", v)).into_iter().collect();
        let r = call(&h, "GET", "/data.bin", &hs);
        assert_eq!(r.get_header("Vary"), Some("Accept-Encoding"), "{ae:?}");
    }
    let r = get(&h, "/pic.png");
    assert_eq!(
        r.get_header("Vary"),
        None,
        "no sidecar, incompressible: no Vary"
    );
}

/// `.svgz` is gzipped SVG: typed as SVG (no charset) with `Content-Encoding: gzip`, never
/// compressed again; and the types mime_guess has out of date come from the registrations.
#[test]
fn types_follow_the_registrations_and_svgz_says_its_coding() {
    let t = tree();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(b"<svg xmlns='http://www.w3.org/2000/svg'/>")
        .unwrap();
    let svgz = gz.finish().unwrap();
    std::fs::write(t.root().join("logo.svgz"), &svgz).unwrap();
    let h = handler(&t, |_| {});
    let r = call(&h, "GET", "/logo.svgz", &[("Accept-Encoding", "gzip")]);
    assert_eq!(r.get_header("Content-Type"), Some("image/svg+xml"));
    assert_eq!(r.get_header("Content-Encoding"), Some("gzip"));
    assert_eq!(body(&r), svgz);
    for (ext, want) in [
        ("js", "text/javascript; charset=utf-8"),
        ("mjs", "text/javascript; charset=utf-8"),
        ("cjs", "text/javascript; charset=utf-8"),
        ("woff", "font/woff"),
        ("otf", "font/otf"),
        ("ts", "video/mp2t"),
        ("m4a", "audio/mp4"),
        ("rpm", "application/x-redhat-package-manager"),
        ("patch", "text/x-diff; charset=utf-8"),
        ("PNG", "image/png"),
    ] {
        assert_eq!(
            mime::content_type(Path::new(&format!("a.{ext}"))),
            want,
            "{ext}"
        );
    }
}
