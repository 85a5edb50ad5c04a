//! `tincan serve DIR` over real sockets, under every model: files, types, validators, ranges,
//! compression, listings, redirects, dotfiles, symlinks, error pages, the traversal corpus sent
//! raw, and real clients (curl, Python's http.client and h11, headless Chromium).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{self, connect, have, ModelFlags, Server, TempDir, ALL_MODELS};

const SECRET: &str = "TOP-SECRET-4f6b1c";
const HELLO: &str = "hello, tincan\n";

/// A document root in a temporary directory, with a secret file NEXT to it (never under it).
struct Site {
    dir: TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = TempDir::new("static");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub/inner")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(dir.path().join("secret.txt"), SECRET).unwrap();
        std::fs::write(
            root.join("index.html"),
            "<!DOCTYPE html><title>home page</title>",
        )
        .unwrap();
        std::fs::write(root.join("hello.txt"), HELLO).unwrap();
        std::fs::write(root.join("page.html"), "<p>page</p>").unwrap();
        std::fs::write(root.join("data.json"), "{\"ok\":true}").unwrap();
        std::fs::write(root.join("pic.png"), b"\x89PNG\r\n\x1a\n0123456789").unwrap();
        std::fs::write(
            root.join("notes.txt"),
            "tincan compresses text. ".repeat(400),
        )
        .unwrap();
        std::fs::write(root.join(".env"), "PASSWORD=hunter2").unwrap();
        std::fs::write(root.join(".git/config"), "[core]").unwrap();
        std::fs::write(root.join("404.html"), "<h1>custom 404 page</h1>").unwrap();
        std::fs::write(root.join("sub/a.txt"), "a").unwrap();
        std::fs::write(root.join("sub/<b>&amp; #%,[x].txt"), "odd name").unwrap();
        std::fs::write(root.join("sub/caf\u{e9} \u{2603}.txt"), "snowman").unwrap();
        let count: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(root.join("count.bin"), count).unwrap();
        symlink("hello.txt", root.join("link-in")).unwrap();
        symlink("../secret.txt", root.join("link-out")).unwrap();
        symlink("..", root.join("dir-out")).unwrap();
        symlink(".env", root.join("env-link")).unwrap();
        Site { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

fn serve(model: ModelFlags, root: &Path, extra: &[&str]) -> Server {
    let root = root.to_str().unwrap();
    let mut args = vec!["serve", root, "--listen", "127.0.0.1:0"];
    args.extend_from_slice(model.0);
    args.extend_from_slice(extra);
    // Printed so a failure says which model it was under.
    eprintln!("tincan {}", args.join(" "));
    Server::start(&args)
}

/// A parsed response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parse one response from everything the server sent before closing.
fn parse_reply(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// One request on its own connection (`Connection: close`), read to the end.
fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut s = connect(addr);
    s.write_all(head.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {target}: send: {e}"));
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {target}: read: {e}"));
    let reply = parse_reply(&raw);
    if method != "HEAD" {
        if let Some(len) = reply.header("Content-Length") {
            assert_eq!(
                len.parse::<usize>().unwrap(),
                reply.body.len(),
                "{method} {target}: Content-Length disagrees with the body"
            );
        }
    }
    reply
}

fn get(addr: SocketAddr, target: &str) -> Reply {
    request(addr, "GET", target, &[])
}

/// Send `raw` bytes as they are and return everything that comes back (lossy text).
fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = connect(addr);
    let _ = s.write_all(raw);
    let mut out = Vec::new();
    // A server may answer and close, or close on a malformed head: either way read to the end.
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

#[test]
fn files_are_served_with_types_validators_and_nosniff_under_every_model() {
    let site = Site::new();
    for &model in ALL_MODELS {
        let server = serve(model, &site.root(), &[]);
        let a = server.addr();
        let r = get(a, "/hello.txt");
        assert_eq!(r.status, 200, "{model}");
        assert_eq!(r.text(), HELLO, "{model}");
        assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
        assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
        assert_eq!(r.header("Accept-Ranges"), Some("bytes"));
        let etag = r.header("ETag").expect("ETag").to_string();
        let lm = r
            .header("Last-Modified")
            .expect("Last-Modified")
            .to_string();
        for (path, ctype) in [
            ("/page.html", "text/html; charset=utf-8"),
            ("/data.json", "application/json; charset=utf-8"),
            ("/pic.png", "image/png"),
            ("/count.bin", "application/octet-stream"),
        ] {
            assert_eq!(
                get(a, path).header("Content-Type"),
                Some(ctype),
                "{model} {path}"
            );
        }
        let head = request(a, "HEAD", "/hello.txt", &[]);
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty(), "{model}: HEAD sent a body");
        assert_eq!(head.header("Content-Length"), Some("14"));
        assert_eq!(head.header("ETag"), Some(etag.as_str()));

        let r = request(a, "GET", "/hello.txt", &[("If-None-Match", &etag)]);
        assert_eq!((r.status, r.body.len()), (304, 0), "{model}");
        assert_eq!(r.header("ETag"), Some(etag.as_str()));
        let r = request(a, "GET", "/hello.txt", &[("If-Modified-Since", &lm)]);
        assert_eq!(r.status, 304, "{model}");
        let r = request(a, "GET", "/hello.txt", &[("If-Match", "\"nope\"")]);
        assert_eq!(r.status, 412, "{model}");
        let r = request(
            a,
            "GET",
            "/hello.txt",
            &[("If-Unmodified-Since", "Sun, 06 Nov 1994 08:49:37 GMT")],
        );
        assert_eq!(r.status, 412, "{model}");

        let r = request(a, "OPTIONS", "/hello.txt", &[]);
        assert_eq!(
            (r.status, r.header("Allow")),
            (204, Some("GET, HEAD, OPTIONS"))
        );
        let r = request(a, "DELETE", "/hello.txt", &[]);
        assert_eq!(
            (r.status, r.header("Allow")),
            (405, Some("GET, HEAD, OPTIONS"))
        );
        let r = request(a, "GET", "/pic.png", &[("Accept", "text/html")]);
        assert_eq!(r.status, 406, "{model}");
        assert_eq!(get(a, "/missing").status, 404);
    }
}

#[test]
fn ranges_give_206_multipart_and_416_under_every_model() {
    let site = Site::new();
    let expected = |a: usize, b: usize| (a..=b).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
    for &model in ALL_MODELS {
        let server = serve(model, &site.root(), &[]);
        let a = server.addr();
        let r = request(a, "GET", "/count.bin", &[("Range", "bytes=1000-1999")]);
        assert_eq!(r.status, 206, "{model}");
        assert_eq!(r.header("Content-Range"), Some("bytes 1000-1999/100000"));
        assert_eq!(r.body, expected(1000, 1999), "{model}");
        let r = request(a, "GET", "/count.bin", &[("Range", "bytes=-10")]);
        assert_eq!(r.body, expected(99_990, 99_999));
        let r = request(a, "GET", "/count.bin", &[("Range", "bytes=99990-")]);
        assert_eq!(r.header("Content-Range"), Some("bytes 99990-99999/100000"));

        let r = request(a, "GET", "/count.bin", &[("Range", "bytes=0-9, 500-509")]);
        assert_eq!(r.status, 206, "{model}");
        let ct = r.header("Content-Type").unwrap().to_string();
        let boundary = ct
            .strip_prefix("multipart/byteranges; boundary=")
            .unwrap_or_else(|| panic!("{ct}"));
        let mut want = Vec::new();
        for (x, y) in [(0, 9), (500, 509)] {
            want.extend_from_slice(
                format!(
                    "\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {x}-{y}/100000\r\n\r\n"
                )
                .as_bytes(),
            );
            want.extend(expected(x, y));
        }
        want.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        assert_eq!(r.body, want, "{model}");

        let r = request(a, "GET", "/count.bin", &[("Range", "bytes=100000-")]);
        assert_eq!(r.status, 416, "{model}");
        assert_eq!(r.header("Content-Range"), Some("bytes */100000"));
        let r = request(a, "GET", "/count.bin", &[("Range", "bytes=9-1")]);
        assert_eq!((r.status, r.body.len()), (200, 100_000), "{model}");

        // The Apache Killer: hundreds of overlapping ranges never amplify the answer.
        let killer = (0..90)
            .map(|i| format!("0-{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let r = request(
            a,
            "GET",
            "/count.bin",
            &[("Range", &format!("bytes={killer}"))],
        );
        assert_eq!(r.status, 206);
        assert_eq!(r.header("Content-Range"), Some("bytes 0-89/100000"));
        let scattered = (0..50)
            .map(|i| format!("{}-{}", i * 100, i * 100 + 1))
            .collect::<Vec<_>>()
            .join(",");
        let r = request(
            a,
            "GET",
            "/count.bin",
            &[("Range", &format!("bytes={scattered}"))],
        );
        assert_eq!((r.status, r.body.len()), (200, 100_000), "{model}");
    }
}

#[test]
fn the_demo_sites_large_file_arrives_whole_and_in_ranges_under_every_model() {
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/site");
    for &model in ALL_MODELS {
        let server = serve(model, &site, &[]);
        let a = server.addr();
        let r = get(a, "/large.bin");
        assert_eq!(r.status, 200, "{model}");
        assert_eq!(r.body.len(), 2 * 1024 * 1024, "{model}");
        assert!(
            r.body.iter().enumerate().all(|(i, b)| *b == i as u8),
            "{model}: large.bin content is not byte n = n mod 256"
        );
        let r = request(
            a,
            "GET",
            "/large.bin",
            &[("Range", "bytes=1048570-1048585")],
        );
        assert_eq!(
            r.body,
            (1_048_570..=1_048_585).map(|i| i as u8).collect::<Vec<_>>()
        );
    }
}

#[test]
fn compression_uses_sidecars_and_gzips_text_on_the_fly_under_every_model() {
    let site = Site::new();
    let root = site.root();
    let js = "function tincan() { return 'compressed'; }\n".repeat(60);
    std::fs::write(root.join("app.js"), &js).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(js.as_bytes()).unwrap();
    let sidecar = gz.finish().unwrap();
    std::fs::write(root.join("app.js.gz"), &sidecar).unwrap();
    std::fs::write(root.join("app.js.zst"), b"zstd sidecar bytes").unwrap();
    let notes = std::fs::read(root.join("notes.txt")).unwrap();
    for &model in ALL_MODELS {
        let server = serve(model, &root, &[]);
        let a = server.addr();
        let plain = get(a, "/app.js");
        assert_eq!(plain.header("Content-Encoding"), None, "{model}");
        assert_eq!(plain.header("Vary"), Some("Accept-Encoding"));
        assert_eq!(plain.text(), js);

        let g = request(a, "GET", "/app.js", &[("Accept-Encoding", "gzip")]);
        assert_eq!(g.header("Content-Encoding"), Some("gzip"), "{model}");
        assert_eq!(g.body, sidecar, "{model}: not the sidecar's bytes");
        assert_eq!(gunzip(&g.body), js.as_bytes());
        let z = request(a, "GET", "/app.js", &[("Accept-Encoding", "gzip, zstd")]);
        assert_eq!(z.header("Content-Encoding"), Some("zstd"), "{model}");
        assert_eq!(z.body, b"zstd sidecar bytes");
        let tags = [&plain, &g, &z].map(|r| r.header("ETag").unwrap().to_string());
        assert!(tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2]);
        let r = request(
            a,
            "GET",
            "/app.js",
            &[("Accept-Encoding", "gzip"), ("If-None-Match", &tags[1])],
        );
        assert_eq!(r.status, 304, "{model}");
        assert_eq!(r.header("Vary"), Some("Accept-Encoding"));

        let fly = request(a, "GET", "/notes.txt", &[("Accept-Encoding", "gzip")]);
        assert_eq!(fly.header("Content-Encoding"), Some("gzip"), "{model}");
        assert!(fly.body.len() < notes.len() / 4);
        assert_eq!(gunzip(&fly.body), notes);
        let head = request(a, "HEAD", "/notes.txt", &[("Accept-Encoding", "gzip")]);
        assert_eq!(
            head.header("Content-Length"),
            Some(fly.body.len().to_string().as_str()),
            "{model}: HEAD and GET disagree on the gzip length"
        );
        let none = request(a, "GET", "/notes.txt", &[("Accept-Encoding", "gzip;q=0")]);
        assert_eq!(none.header("Content-Encoding"), None);
        assert_eq!(none.body, notes);
    }
    // --compress off: no on-the-fly gzip (sidecars still served).
    let server = serve(ALL_MODELS[1], &root, &["--compress", "off"]);
    let r = request(
        server.addr(),
        "GET",
        "/notes.txt",
        &[("Accept-Encoding", "gzip")],
    );
    assert_eq!(r.header("Content-Encoding"), None);
}

#[test]
fn listings_redirects_and_escaping_under_every_model() {
    let site = Site::new();
    for &model in ALL_MODELS {
        let server = serve(model, &site.root(), &[]);
        let a = server.addr();
        let r = get(a, "/sub?sort=size");
        assert_eq!(r.status, 301, "{model}");
        assert_eq!(r.header("Location"), Some("/sub/?sort=size"));
        let r = get(a, "//sub");
        assert_eq!(
            r.header("Location"),
            Some("/sub/"),
            "{model}: open redirect"
        );

        let r = get(a, "/sub/");
        assert_eq!(r.status, 200, "{model}");
        assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
        let page = r.text();
        assert!(page.contains("Index of /sub/"));
        assert!(
            page.contains("href=\"%3Cb%3E%26amp%3B%20%23%25%2C%5Bx%5D.txt\""),
            "{page}"
        );
        assert!(page.contains("&lt;b&gt;&amp;amp; #%,[x].txt"));
        assert!(!page.contains("<b>&amp;"));
        assert!(page.contains("href=\"caf%C3%A9%20%E2%98%83.txt\""));
        assert!(page.contains("caf\u{e9} \u{2603}.txt"));
        assert!(page.contains("href=\"inner/\""));
        assert!(page.contains("href=\"../\""));
        // The links the listing prints lead to the files.
        assert_eq!(
            get(a, "/sub/%3Cb%3E%26amp%3B%20%23%25%2C%5Bx%5D.txt").text(),
            "odd name"
        );
        assert_eq!(get(a, "/sub/caf%C3%A9%20%E2%98%83.txt").text(), "snowman");

        let j = request(a, "GET", "/sub/", &[("Accept", "application/json")]);
        assert_eq!(
            j.header("Content-Type"),
            Some("application/json; charset=utf-8")
        );
        let v: serde_json::Value = serde_json::from_slice(&j.body).expect("JSON listing");
        let names: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "inner",
                "<b>&amp; #%,[x].txt",
                "a.txt",
                "caf\u{e9} \u{2603}.txt"
            ]
        );
        assert_eq!(v[0]["type"], "dir");
        assert_eq!(v[2]["size"], 1);
        assert!(v[2]["modified"].as_str().unwrap().ends_with('Z'));

        let sorted = get(a, "/sub/?sort=size&order=desc").text();
        assert!(sorted.find("caf").unwrap() < sorted.find("a.txt\"").unwrap());
        // The root has an index file: served, not listed.
        assert!(get(a, "/").text().contains("home page"));
    }
    let server = serve(ALL_MODELS[0], &site.root(), &["--listing", "off"]);
    assert_eq!(get(server.addr(), "/sub/").status, 403);
}

#[test]
fn dotfiles_and_symlinks_follow_the_rules_under_every_model() {
    let site = Site::new();
    for &model in ALL_MODELS {
        let server = serve(model, &site.root(), &[]);
        let a = server.addr();
        for p in ["/.env", "/.git/config", "/env-link", "/%2eenv"] {
            assert_eq!(get(a, p).status, 404, "{model} {p}");
        }
        assert_eq!(get(a, "/link-in").text(), HELLO, "{model}");
        for p in ["/link-out", "/dir-out/secret.txt", "/dir-out/"] {
            let r = get(a, p);
            assert_eq!(r.status, 403, "{model} {p}");
            assert!(!r.text().contains(SECRET));
        }
    }
    let server = serve(
        ALL_MODELS[1],
        &site.root(),
        &["--show-dotfiles", "--follow-symlinks"],
    );
    let a = server.addr();
    assert_eq!(get(a, "/.env").text(), "PASSWORD=hunter2");
    assert_eq!(get(a, "/link-out").text(), SECRET);
}

/// Paths that try to leave the root, one a line, sent byte for byte as written (the unit
/// test of `UrlPath` checks the same corpus).
const TRAVERSAL: &str = include_str!("traversal.txt");

#[test]
fn the_traversal_corpus_never_yields_a_byte_from_outside_the_root_under_every_model() {
    let site = Site::new();
    assert!(TRAVERSAL.lines().count() >= 30);
    for &model in ALL_MODELS {
        let server = serve(model, &site.root(), &[]);
        let a = server.addr();
        for path in TRAVERSAL.lines() {
            for accept in ["*/*", "application/json"] {
                let raw = format!(
                    "GET {path} HTTP/1.1\r\nHost: test\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
                );
                let out = raw_exchange(a, raw.as_bytes());
                assert!(
                    !out.contains(SECRET),
                    "{model}: {path} leaked the secret:\n{out}"
                );
                assert!(
                    !out.contains("secret.txt\""),
                    "{model}: {path} listed outside"
                );
                assert!(
                    out.starts_with("HTTP/1.1 4")
                        || out.starts_with("HTTP/1.1 3")
                        || out.is_empty(),
                    "{model}: {path} got {}",
                    out.lines().next().unwrap_or("")
                );
            }
        }
        // The same corpus pipelined on one connection.
        let mut all = String::new();
        for path in TRAVERSAL.lines() {
            all.push_str(&format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"));
        }
        all.push_str("GET /hello.txt HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        let out = raw_exchange(a, all.as_bytes());
        assert!(!out.contains(SECRET), "{model}: pipelined corpus leaked");
    }
}

#[test]
fn error_pages_and_the_spa_fallback_come_from_the_root() {
    let site = Site::new();
    for &model in &ALL_MODELS[..2] {
        let server = serve(model, &site.root(), &["--error-page", "404=/404.html"]);
        let r = get(server.addr(), "/nope");
        assert_eq!(r.status, 404, "{model}");
        assert_eq!(r.text(), "<h1>custom 404 page</h1>");
        let server = serve(model, &site.root(), &["--fallback", "/index.html"]);
        let r = get(server.addr(), "/app/some/route");
        assert_eq!(r.status, 200, "{model}");
        assert!(r.text().contains("home page"));
        assert_eq!(get(server.addr(), "/.env").status, 404);
    }
}

#[test]
fn cache_control_globs_and_index_lists_reach_the_handler() {
    let site = Site::new();
    for &model in &ALL_MODELS[..2] {
        let server = serve(
            model,
            &site.root(),
            &[
                "--cache-control",
                "*.txt=public, max-age=60",
                "--cache-control",
                "/sub/*=no-store",
                "--index",
                "missing.html,a.txt",
            ],
        );
        let a = server.addr();
        let r = get(a, "/hello.txt");
        assert_eq!(
            r.header("Cache-Control"),
            Some("public, max-age=60"),
            "{model}"
        );
        let etag = r.header("ETag").unwrap().to_string();
        let r = request(a, "GET", "/hello.txt", &[("If-None-Match", &etag)]);
        assert_eq!(r.status, 304);
        assert_eq!(
            r.header("Cache-Control"),
            Some("public, max-age=60"),
            "{model}: 304"
        );
        assert_eq!(get(a, "/pic.png").header("Cache-Control"), None);
        // `/sub/` has no index.html but has a.txt, the second index name.
        let r = get(a, "/sub/");
        assert_eq!(r.text(), "a", "{model}");
        assert_eq!(r.header("Cache-Control"), Some("public, max-age=60"));
    }
}

#[test]
fn curl_sees_ranges_compression_and_validators() {
    support::require("command -v curl");
    let site = Site::new();
    let server = serve(ALL_MODELS[3], &site.root(), &[]);
    let curl = |args: &[&str]| crate::support::curl("static files", args).stdout;
    let url = |p: &str| server.url(p);
    assert_eq!(curl(&["-r", "7-12", &url("/hello.txt")]), b"tincan");
    let notes = std::fs::read(site.root().join("notes.txt")).unwrap();
    assert_eq!(curl(&["--compressed", &url("/notes.txt")]), notes);
    let head = String::from_utf8(curl(&["-I", "--compressed", &url("/notes.txt")])).unwrap();
    assert!(
        head.to_ascii_lowercase().contains("content-encoding: gzip"),
        "{head}"
    );
    let etag = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("ETag: ")
                .or_else(|| l.strip_prefix("etag: "))
        })
        .unwrap()
        .trim()
        .to_string();
    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--compressed",
        "-H",
        &format!("If-None-Match: {etag}"),
        &url("/notes.txt"),
    ]);
    assert_eq!(code, b"304");
    // --path-as-is sends the dot segments instead of letting curl squash them.
    let out = curl(&["--path-as-is", &url("/../secret.txt")]);
    assert!(!String::from_utf8_lossy(&out).contains(SECRET));
}

/// Python's http.client on one keep-alive connection, then h11 (a strict validating client)
/// over ranges, multipart, 304, 416 and HEAD.
const PY_CLIENTS: &str = r#"
import http.client, json, sys
host, port = sys.argv[1], int(sys.argv[2])
def check(c, what):
    if not c:
        print("FAIL:", what); sys.exit(1)
c = http.client.HTTPConnection(host, port, timeout=10)
c.request("GET", "/hello.txt"); r = c.getresponse(); b = r.read()
check(r.status == 200 and b == b"hello, tincan\n", "GET hello")
etag = r.getheader("ETag")
c.request("GET", "/hello.txt", headers={"If-None-Match": etag}); r = c.getresponse(); b = r.read()
check(r.status == 304 and b == b"", "304 on the same connection")
c.request("GET", "/count.bin", headers={"Range": "bytes=5-9"}); r = c.getresponse(); b = r.read()
check(r.status == 206 and b == bytes(range(5, 10)), "206")
c.request("GET", "/sub/", headers={"Accept": "application/json"}); r = c.getresponse()
names = [e["name"] for e in json.loads(r.read())]
check("a.txt" in names, "JSON listing")
c.request("HEAD", "/count.bin"); r = c.getresponse(); b = r.read()
check(r.status == 200 and b == b"" and r.getheader("Content-Length") == "100000", "HEAD")
c.close()
try:
    import h11
except ImportError:
    print("h11 missing"); sys.exit(3)
import socket
s = socket.create_connection((host, port), timeout=10)
conn = h11.Connection(h11.CLIENT)
def exchange(method, target, headers):
    hs = [("Host", "t")] + headers
    s.sendall(conn.send(h11.Request(method=method, target=target, headers=hs)))
    s.sendall(conn.send(h11.EndOfMessage()))
    resp, body = None, b""
    while True:
        ev = conn.next_event()
        if ev is h11.NEED_DATA:
            conn.receive_data(s.recv(65536)); continue
        if isinstance(ev, h11.Response): resp = ev
        elif isinstance(ev, h11.Data): body += ev.data
        elif isinstance(ev, h11.EndOfMessage): break
    conn.start_next_cycle()
    return resp, body
for method, target, headers, status in [
    ("GET", "/", [], 200),
    ("GET", "/sub/", [], 200),
    ("GET", "/sub", [], 301),
    ("GET", "/count.bin", [("Range", "bytes=0-1,10-11")], 206),
    ("GET", "/count.bin", [("Range", "bytes=200000-")], 416),
    ("GET", "/hello.txt", [("If-None-Match", etag)], 304),
    ("HEAD", "/notes.txt", [("Accept-Encoding", "gzip")], 200),
    ("GET", "/notes.txt", [("Accept-Encoding", "gzip")], 200),
    ("GET", "/missing", [], 404),
    ("GET", "/..%2fsecret.txt", [], 400),
]:
    resp, body = exchange(method, target, headers)
    check(resp.status_code == status, f"h11 {method} {target}: {resp.status_code}")
    check(b"TOP-SECRET" not in body, "no secret")
print("ok")
"#;

#[test]
fn python_http_client_and_h11_accept_every_answer() {
    support::require("python3 -c 'import h11'");
    let site = Site::new();
    for &model in &[ALL_MODELS[1], ALL_MODELS[3]] {
        let server = serve(model, &site.root(), &[]);
        let a = server.addr();
        let mut child = Command::new("python3")
            .args(["-", &a.ip().to_string(), &a.port().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run python3");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(PY_CLIENTS.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        match out.status.code() {
            Some(0) => assert!(text.contains("ok")),
            Some(3) => panic!("{model}: h11 is not installed (.ci/run installs it)"),
            _ => panic!("{model}: python clients failed:\n{text}"),
        }
    }
}

/// Headless Chromium renders the demo site's page (running its precompressed script) and a
/// listing; `--dump-dom` prints the DOM after scripts ran.
#[test]
fn headless_chromium_renders_the_demo_page_and_a_listing() {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| have(b))
        .expect("chromium on PATH (.ci/run installs it)");
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/site");
    for &model in &[ALL_MODELS[1], ALL_MODELS[3]] {
        let server = serve(model, &site, &[]);
        let page = dump_dom(browser, &server.url("/"));
        assert!(
            page.contains("It works: tincan is serving this directory."),
            "{model}: {page}"
        );
        assert!(
            page.contains("data-ok=\"yes\"") && page.contains("Scripts ran: app.js arrived intact"),
            "{model}: app.js did not run:\n{page}"
        );
        let listing = dump_dom(browser, &server.url("/docs/"));
        assert!(listing.contains("Index of /docs/"), "{model}: {listing}");
        assert!(listing.contains("naïve café.txt"), "{listing}");
        assert!(listing.contains("100% [draft], #2.txt"), "{listing}");
        assert!(listing.contains("href=\"drafts/\""), "{listing}");
        // The percent-encoded link the listing prints leads to the file in a real browser.
        let file = dump_dom(
            browser,
            &server.url("/docs/100%25%20%5Bdraft%5D%2C%20%232.txt"),
        );
        assert!(
            file.contains("Percent, brackets, comma and hash in one name."),
            "{file}"
        );
    }
}

/// The listing fits its window at a desktop width and at a phone's, even with a 115-character
/// name, and its filter box hides the rows that do not match: a page in the same root holds
/// the listing in frames of each width and writes what it measured into its own DOM, which
/// `--dump-dom` prints. (Chromium is required: `.ci/run` installs it.)
#[test]
fn the_listing_fits_a_phone_and_a_desktop_and_its_filter_works_in_chromium() {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| have(b))
        .expect("chromium on PATH (.ci/run installs it)");
    let root = TempDir::new("listing-width");
    let dir = root.path().join("files");
    std::fs::create_dir(&dir).unwrap();
    let long = format!("{}.txt", "a-very-long-file-name-".repeat(6));
    assert!(long.len() >= 115);
    for name in [long.as_str(), "9.txt", "10.txt", "notes.md", "photo.jpg"] {
        std::fs::write(dir.join(name), "x").unwrap();
    }
    std::fs::write(
        root.path().join("measure.html"),
        r#"<!DOCTYPE html><html><body><div id="out">pending</div>
<iframe id="w1280" src="/files/" width="1280" height="700"></iframe>
<iframe id="w390" src="/files/" width="390" height="700"></iframe>
<script>
var done = 0, report = [];
function measure(id) {
  var f = document.getElementById(id), d = f.contentDocument.documentElement;
  report.push(id + ":" + d.scrollWidth + "/" + d.clientWidth);
  if (id == "w390") {
    var box = f.contentDocument.getElementById("filter");
    box.value = "NOTES";
    box.dispatchEvent(new Event("input"));
    var shown = [];
    f.contentDocument.querySelectorAll("tbody tr").forEach(function (r) {
      if (r.style.display != "none") shown.push(r.querySelector("td.name").textContent);
    });
    report.push("shown:" + shown.join(","));
  }
  if (++done == 2) document.getElementById("out").textContent = report.sort().join(" ");
}
["w1280", "w390"].forEach(function (id) {
  document.getElementById(id).addEventListener("load", function () { measure(id); });
});
</script></body></html>"#,
    )
    .unwrap();
    for &model in &[ALL_MODELS[1], ALL_MODELS[3]] {
        let server = serve(model, root.path(), &[]);
        let page = dump_dom(browser, &server.url("/measure.html"));
        let out = page
            .split("<div id=\"out\">")
            .nth(1)
            .and_then(|r| r.split("</div>").next())
            .unwrap_or_else(|| panic!("{model}: no result in {page}"));
        for width in ["w1280", "w390"] {
            let m = out
                .split(' ')
                .find_map(|p| p.strip_prefix(&format!("{width}:")))
                .unwrap_or_else(|| panic!("{model}: {width} not measured: {out}"));
            let (scroll, client) = m.split_once('/').unwrap();
            let (scroll, client): (u32, u32) = (scroll.parse().unwrap(), client.parse().unwrap());
            assert!(
                scroll <= client,
                "{model}: at {width} the page is {scroll} px wide in a {client} px window"
            );
        }
        // The parent link stays; only the matching file is shown.
        assert!(out.contains("shown:../,notes.md"), "{model}: {out}");
    }
}

fn dump_dom(browser: &str, url: &str) -> String {
    dump_dom_with(browser, url, &[])
}

/// The DOM headless Chromium prints for `url` after scripts ran, with `extra` flags.
pub fn dump_dom_with(browser: &str, url: &str, extra: &[&str]) -> String {
    let profile = TempDir::new("chromium");
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-sync",
            "--virtual-time-budget=3000",
        ])
        .args(extra)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run chromium");
    // The DOM arrives through a thread and a channel, so a renderer process that outlives a
    // killed browser (and keeps the pipe open) cannot hang the test.
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        let _ = tx.send(out);
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s for {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("chromium exited but its output never ended for {url}"))
}

/// The answers to a GET of each of 60 files over 64 KiB (so the open-file cache would keep a
/// descriptor for each), from a server limited to 40 descriptors under model `m`, plus `extra`
/// flags. At 40 the server clamps itself to one connection at a time (its reserve is 64).
fn large_files_with_40_descriptors(dir: &TempDir, m: ModelFlags, extra: &[&str]) -> Vec<u16> {
    let body = vec![b'x'; 70 * 1024];
    for i in 0..60 {
        std::fs::write(dir.path().join(format!("big-{i}.bin")), &body).unwrap();
    }
    let args = support::serve_args(dir.path().to_str().unwrap(), m, extra);
    eprintln!("tincan {}", args.join(" ")); // names the model if a request fails
    let s = Server::start_with_nofile(&args, 40);
    (0..60)
        .map(|i| {
            let r = get(s.addr(), &format!("/big-{i}.bin"));
            if r.status == 503 {
                assert_eq!(r.header("Retry-After"), Some("1"), "{m}");
            }
            r.status
        })
        .collect()
}

#[test]
fn a_server_out_of_descriptors_answers_503_not_404_under_every_model() {
    // Told to keep up to 1024 descriptors in its cache, far more than its limit allows, the
    // server runs out of descriptors serving one large file after another.
    let dir = TempDir::new("nofile");
    for &m in ALL_MODELS {
        let statuses = large_files_with_40_descriptors(&dir, m, &["--file-cache-fds", "1024"]);
        assert!(statuses.contains(&503), "{m}: never ran out: {statuses:?}");
        assert!(
            statuses.iter().all(|&st| st == 200 || st == 503),
            "{m}: an existing file got another answer: {statuses:?}"
        );
    }
}

#[test]
fn the_file_cache_keeps_only_its_share_of_the_descriptor_limit_under_every_model() {
    // By default it keeps at most a quarter of them (10 of 40), so every file is served.
    let dir = TempDir::new("nofile-share");
    for &m in ALL_MODELS {
        let statuses = large_files_with_40_descriptors(&dir, m, &[]);
        assert!(
            statuses.iter().all(|&st| st == 200),
            "{m}: not every file was served: {statuses:?}"
        );
    }
}

/// With `--defer-accept 5` (TCP_DEFER_ACCEPT) a client that connects and says nothing is kept by
/// the kernel, so it holds no connection slot, and under `--model iterative` does not stall the
/// next client. By default (off) the silent client holds the only slot until it leaves.
#[test]
fn a_silent_connection_holds_no_slot_while_its_accept_is_deferred() {
    let site = Site::new();
    let one_slot: [ModelFlags; 3] = [
        ModelFlags(&["--model", "iterative"]),
        ModelFlags(&["--model", "threaded", "--max-connections", "1"]),
        ModelFlags(&[
            "--model",
            "event",
            "--workers",
            "1",
            "--max-connections",
            "1",
        ]),
    ];
    for m in one_slot {
        for deferred in [true, false] {
            let mut extra = vec!["--access-log", "off", "--head-timeout", "30"];
            if deferred {
                extra.extend(["--defer-accept", "5"]);
            }
            let server = serve(m, &site.root(), &extra);
            let silent = connect(server.addr());
            // Undeferred, the server takes the silent client in well within this.
            std::thread::sleep(Duration::from_millis(200));
            let mut c = connect(server.addr());
            c.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut first = [0u8; 12];
            if deferred {
                // Well before the kernel's five seconds run out for the silent client.
                c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                c.read_exact(&mut first).unwrap_or_else(|e| {
                    panic!("{m}: a silent client kept the request waiting: {e}")
                });
            } else {
                c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let r = c.read(&mut first);
                assert!(
                    r.is_err(),
                    "{m}, not deferred: answered while the silent client held the slot: {r:?}"
                );
                drop(silent);
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                c.read_exact(&mut first).unwrap();
            }
            assert_eq!(&first, b"HTTP/1.1 200", "{m}");
        }
    }
}

/// The file handler refuses a bad setting with a typed error and `tincan serve` words it with
/// the flag that set it, in one line, before anything listens.
#[test]
fn a_refused_file_setting_names_its_flag() {
    let t = TempDir::new("refused-setting");
    let root = t.path().to_str().unwrap();
    for (flag, value, says) in [
        (
            "--index",
            "a/b",
            "--index `a/b` must be a plain file name, without slashes",
        ),
        (
            "--error-page",
            "404=x.html",
            "--error-page `x.html` must be a URL path starting with /",
        ),
        (
            "--fallback",
            "index.html",
            "--fallback `index.html` must be a URL path starting with /",
        ),
        (
            "--cache-control",
            "[=no-cache",
            "--cache-control pattern `[` is not a valid glob",
        ),
    ] {
        let (status, out, err) = crate::support::run_tincan(
            &["serve", root, "--listen", "127.0.0.1:0", flag, value],
            b"",
            Duration::from_secs(10),
        );
        assert_eq!(
            status.code(),
            Some(2),
            "{flag} {value}: a usage error; {out}"
        );
        assert!(
            err.starts_with(&format!("tincan: {says}")),
            "{flag} {value}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!out.contains("listening"), "{out}");
    }
}
