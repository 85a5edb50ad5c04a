//! What a user sharing a folder with others expects from miniserve, static-web-server and
//! Caddy, driven with the clients they would use: CORS for a page on another origin (curl as the
//! browser's fetch), passwords from an htpasswd file made by Apache's `htpasswd`, uploads with
//! `curl -T`, folder downloads unpacked with `tar`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{self, curl, serve_args, Server, TempDir, ALL_MODELS};

/// A small root: a file, a private folder, a dotfile.
fn site() -> TempDir {
    let dir = TempDir::new("sharing");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("private/deeper")).unwrap();
    std::fs::create_dir_all(root.join("public")).unwrap();
    std::fs::write(root.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(root.join("public/open.txt"), "open\n").unwrap();
    std::fs::write(root.join("private/secret.txt"), "secret\n").unwrap();
    std::fs::write(root.join("private/deeper/more.txt"), "more\n").unwrap();
    std::fs::write(root.join(".env"), "TOKEN=1").unwrap();
    dir
}

fn root(dir: &TempDir) -> String {
    dir.path().join("root").to_str().unwrap().to_string()
}

/// curl's `-i` output split into (status, lower-cased head, body).
fn parts(out: &std::process::Output) -> (u16, String, String) {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn cors_allows_the_listed_origin_and_answers_preflights_under_every_model() {
    support::require("command -v curl");
    let dir = site();
    let root = root(&dir);
    for m in ALL_MODELS {
        let server = Server::start(&serve_args(
            &root,
            *m,
            &[
                "--cors",
                "https://app.example",
                "--cors",
                "http://localhost:3000",
            ],
        ));
        let what = format!("{m}");
        let url = server.url("/hello.txt");
        let (status, head, body) = parts(&curl(
            &what,
            &["-i", "-H", "Origin: https://app.example", &url],
        ));
        assert_eq!((status, body.as_str()), (200, "hello\n"), "{what}");
        assert!(
            head.contains("\r\naccess-control-allow-origin: https://app.example"),
            "{what}: {head}"
        );
        assert!(head.contains("\r\nvary: origin"), "{what}: {head}");
        // Another origin gets no permission, but the answer still says it varies by Origin.
        let (_, head, _) = parts(&curl(
            &what,
            &["-i", "-H", "Origin: https://evil.example", &url],
        ));
        assert!(
            !head.contains("access-control-allow-origin"),
            "{what}: {head}"
        );
        assert!(head.contains("\r\nvary: origin"), "{what}: {head}");
        // A preflight, as a browser sends before a PUT with a custom header.
        let (status, head, body) = parts(&curl(
            &what,
            &[
                "-i",
                "-X",
                "OPTIONS",
                "-H",
                "Origin: http://localhost:3000",
                "-H",
                "Access-Control-Request-Method: GET",
                "-H",
                "Access-Control-Request-Headers: X-Token, Content-Type",
                &url,
            ],
        ));
        assert_eq!((status, body.as_str()), (204, ""), "{what}: {head}");
        assert!(
            head.contains("\r\naccess-control-allow-origin: http://localhost:3000"),
            "{what}: {head}"
        );
        assert!(
            head.contains("\r\naccess-control-allow-methods: get, head, options"),
            "{what}: {head}"
        );
        assert!(
            head.contains("\r\naccess-control-allow-headers: x-token, content-type"),
            "{what}: {head}"
        );
        assert!(
            head.contains("\r\naccess-control-max-age: "),
            "{what}: {head}"
        );
        // An error answer carries the permission too, so the page can read why.
        let (status, head, _) = parts(&curl(
            &what,
            &[
                "-i",
                "-H",
                "Origin: https://app.example",
                &server.url("/nope"),
            ],
        ));
        assert_eq!(status, 404, "{what}");
        assert!(
            head.contains("access-control-allow-origin"),
            "{what}: {head}"
        );
    }
}

#[test]
fn cors_star_allows_any_origin_without_vary() {
    support::require("command -v curl");
    let dir = site();
    let root = root(&dir);
    let server = Server::start(&serve_args(&root, ALL_MODELS[3], &["--cors", "*"]));
    let (_, head, _) = parts(&curl(
        "star",
        &[
            "-i",
            "-H",
            "Origin: https://anyone.example",
            &server.url("/hello.txt"),
        ],
    ));
    assert!(
        head.contains("\r\naccess-control-allow-origin: *"),
        "{head}"
    );
    assert!(!head.contains("vary: origin"), "{head}");
}

#[test]
fn a_malformed_cors_origin_is_refused_at_start_in_one_sentence() {
    let dir = site();
    let root = root(&dir);
    let (status, _, err) = support::run_tincan(
        &[
            "serve",
            &root,
            "--listen",
            "127.0.0.1:0",
            "--cors",
            "app.example",
        ],
        b"",
        std::time::Duration::from_secs(10),
    );
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("--cors `app.example` is not an origin"),
        "{err}"
    );
}

/// An htpasswd file made by Apache's own tool, bcrypt as `-B` writes it (`$2y$`).
fn htpasswd(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    support::require("command -v htpasswd");
    let file = dir.join("users.htpasswd");
    for (i, (user, pass)) in users.iter().enumerate() {
        let mut cmd = Command::new("htpasswd");
        cmd.arg("-bB");
        if i == 0 {
            cmd.arg("-c");
        }
        let out = cmd.arg(&file).arg(user).arg(pass).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(":$2y$"), "{text}");
    file
}

#[test]
fn auth_on_a_prefix_asks_for_the_htpasswd_users_password_under_every_model() {
    support::require("command -v curl");
    let dir = site();
    let root = root(&dir);
    let file = htpasswd(dir.path(), &[("alice", "wonderland"), ("bob", "builder")]);
    let spec = format!("/private={}", file.display());
    for m in ALL_MODELS {
        let what = format!("{m}");
        let server = Server::start(&serve_args(&root, *m, &["--auth", &spec]));
        let secret = server.url("/private/secret.txt");
        // Outside the prefix: no password needed.
        let (status, _, body) = parts(&curl(&what, &["-i", &server.url("/public/open.txt")]));
        assert_eq!((status, body.as_str()), (200, "open\n"), "{what}");
        // Inside: 401 with the challenge a browser turns into a prompt.
        let (status, head, _) = parts(&curl(&what, &["-i", &secret]));
        assert_eq!(status, 401, "{what}");
        assert!(
            head.contains("\r\nwww-authenticate: basic realm=\"tincan\""),
            "{what}: {head}"
        );
        // Wrong password, unknown user, the other user's password: 401.
        for creds in ["alice:guess", "mallory:wonderland", "alice:builder"] {
            let (status, _, _) = parts(&curl(&what, &["-i", "-u", creds, &secret]));
            assert_eq!(status, 401, "{what}: {creds}");
        }
        // Right: served, twice (the second from the cache of verified credentials).
        for _ in 0..2 {
            let (status, _, body) = parts(&curl(&what, &["-i", "-u", "alice:wonderland", &secret]));
            assert_eq!((status, body.as_str()), (200, "secret\n"), "{what}");
        }
        let (status, _, body) = parts(&curl(
            &what,
            &[
                "-i",
                "-u",
                "bob:builder",
                &server.url("/private/deeper/more.txt"),
            ],
        ));
        assert_eq!((status, body.as_str()), (200, "more\n"), "{what}");
        // The prefix cannot be walked around: dot segments, escapes, a doubled slash.
        for sneaky in [
            "/public/../private/secret.txt",
            "/%70rivate/secret.txt",
            "//private/secret.txt",
            "/private",
            "/private/",
        ] {
            let (status, _, _) = parts(&curl(&what, &["-i", "--path-as-is", &server.url(sneaky)]));
            assert_eq!(status, 401, "{what}: {sneaky}");
        }
        // A failed attempt is logged with the user, never the password.
        let log = server.stderr();
        assert!(
            log.contains("authentication failed for user \"alice\""),
            "{what}: {log}"
        );
        assert!(
            !log.contains("guess") && !log.contains("builder\""),
            "{what}: {log}"
        );
    }
}

#[test]
fn auth_file_guards_every_path_and_a_bad_file_is_refused_with_what_to_do() {
    support::require("command -v curl");
    let dir = site();
    let root = root(&dir);
    let file = htpasswd(dir.path(), &[("alice", "wonderland")]);
    let server = Server::start(&serve_args(
        &root,
        ALL_MODELS[3],
        &["--auth-file", file.to_str().unwrap()],
    ));
    let (status, _, _) = parts(&curl("auth-file", &["-i", &server.url("/hello.txt")]));
    assert_eq!(status, 401);
    let (status, _, body) = parts(&curl(
        "auth-file",
        &["-i", "-u", "alice:wonderland", &server.url("/hello.txt")],
    ));
    assert_eq!((status, body.as_str()), (200, "hello\n"));
    drop(server);

    // An MD5 line, as `htpasswd -m` writes: refused at start, saying how to fix it.
    let md5 = dir.path().join("md5.htpasswd");
    let out = Command::new("htpasswd")
        .args(["-bcm", md5.to_str().unwrap(), "carol", "pw"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let (status, _, err) = support::run_tincan(
        &[
            "serve",
            &root,
            "--listen",
            "127.0.0.1:0",
            "--auth-file",
            md5.to_str().unwrap(),
        ],
        b"",
        std::time::Duration::from_secs(10),
    );
    assert!(!status.success(), "{err}");
    assert!(err.contains("MD5") && err.contains("htpasswd -B"), "{err}");
}

/// Bytes that compress badly and show any reordering or loss.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u32 = 2_463_534_242;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn uploads_with_curl_land_whole_or_not_at_all_under_every_model() {
    support::require("command -v curl");
    let dir = site();
    let root = root(&dir);
    let incoming = dir.path().join("root/incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, incoming.join("out")).unwrap();
    let big = dir.path().join("photo.jpg");
    // Over 1 MiB: curl asks `Expect: 100-continue` first.
    std::fs::write(&big, noise(1_300_000)).unwrap();
    let huge = dir.path().join("huge.bin");
    std::fs::write(&huge, noise(3_000_000)).unwrap();
    let (big_s, huge_s) = (big.to_str().unwrap(), huge.to_str().unwrap());
    for m in ALL_MODELS {
        let what = format!("{m}");
        for f in std::fs::read_dir(&incoming).unwrap() {
            let f = f.unwrap();
            if f.file_name() != "out" {
                std::fs::remove_file(f.path()).unwrap();
            }
        }
        let server = Server::start(&serve_args(
            &root,
            *m,
            &["--upload", "/incoming", "--max-body", "2m"],
        ));
        let code = |args: &[&str]| -> u16 {
            let mut a = vec!["-o", "/dev/null", "-w", "%{http_code}"];
            a.extend_from_slice(args);
            String::from_utf8_lossy(&curl(&what, &a).stdout)
                .parse()
                .unwrap()
        };
        // `curl -T FILE URL/` puts FILE's name at the end of the URL.
        assert_eq!(
            code(&["-T", big_s, &server.url("/incoming/")]),
            201,
            "{what}"
        );
        assert_eq!(
            std::fs::read(incoming.join("photo.jpg")).unwrap(),
            std::fs::read(&big).unwrap(),
            "{what}"
        );
        let got = curl(&what, &[&server.url("/incoming/photo.jpg")]).stdout;
        assert!(
            got == std::fs::read(&big).unwrap(),
            "{what}: served back whole"
        );
        // It exists now: not replaced.
        assert_eq!(
            code(&["-T", huge_s, &server.url("/incoming/photo.jpg")]),
            413,
            "{what}"
        );
        assert_eq!(
            code(&["-T", big_s, &server.url("/incoming/photo.jpg")]),
            409,
            "{what}"
        );
        // Chunked, from a pipe, with a name that needs escaping.
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf 'piped body' | curl -sS --max-time 10 -o /dev/null -w '%{{http_code}}' -T - '{}'",
                server.url("/incoming/a%20note.txt")
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "201", "{what}");
        assert_eq!(
            std::fs::read_to_string(incoming.join("a note.txt")).unwrap(),
            "piped body",
            "{what}"
        );
        // Over --max-body (chunked, so only found mid-way): 413, and nothing left behind.
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cat '{huge_s}' | curl -sS --max-time 10 -o /dev/null -w '%{{http_code}}' -T - '{}'",
                server.url("/incoming/huge.bin")
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "413", "{what}");
        // The same rules as reads: no climbing out, no dotfiles, no symlink out of the root,
        // nothing outside the prefix, no folder made on the way.
        for (path, want) in [
            ("/incoming/../hello2.txt", 405),
            ("/incoming/.profile", 403),
            ("/incoming/out/x.txt", 403),
            ("/public/x.txt", 405),
            ("/incoming/new/x.txt", 409),
        ] {
            assert_eq!(
                code(&["--path-as-is", "-T", big_s, &server.url(path)]),
                want,
                "{what}: {path}"
            );
        }
        assert!(!dir.path().join("root/hello2.txt").exists(), "{what}");
        assert_eq!(names_in(&outside), Vec::<String>::new(), "{what}");
        let mut want = vec!["a note.txt", "out", "photo.jpg"];
        want.sort();
        assert_eq!(names_in(&incoming), want, "{what}: no temporary file left");
    }
}

#[test]
fn upload_overwrite_replaces_a_file_with_204() {
    support::require("command -v curl");
    let dir = site();
    let root = root(&dir);
    let server = Server::start(&serve_args(
        &root,
        ALL_MODELS[3],
        &["--upload", "/", "--upload-overwrite"],
    ));
    let out = curl(
        "overwrite",
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "PUT",
            "--data-binary",
            "new\n",
            &server.url("/hello.txt"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "204");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("root/hello.txt")).unwrap(),
        "new\n"
    );
    // Without uploads, PUT is 405 with the methods that are allowed.
    let plain = Server::start(&serve_args(&root, ALL_MODELS[3], &[]));
    let (status, head, _) = parts(&curl(
        "no upload",
        &[
            "-i",
            "-X",
            "PUT",
            "--data-binary",
            "x",
            &plain.url("/hello.txt"),
        ],
    ));
    assert_eq!(status, 405);
    assert!(head.contains("\r\nallow: get, head, options"), "{head}");
}

#[test]
fn a_folder_downloads_as_tar_gz_holding_what_the_listing_shows_under_every_model() {
    support::require("command -v curl && command -v tar && command -v diff");
    let dir = site();
    let root = root(&dir);
    let r = dir.path().join("root");
    std::fs::write(r.join("private/deeper/noise.bin"), noise(700_000)).unwrap();
    let long = "n".repeat(150);
    std::fs::write(r.join(format!("public/{long}.txt")), "long name").unwrap();
    std::fs::write(r.join("public/.hidden"), "no").unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("o.txt"), "outside").unwrap();
    std::os::unix::fs::symlink(&outside, r.join("public/out")).unwrap();
    // A link to its own folder: entered once, not for ever.
    std::os::unix::fs::symlink(".", r.join("private/loop")).unwrap();
    // What the archive of /private/ must hold: the folder without the link that loops back.
    let want = dir.path().join("want/private");
    std::fs::create_dir_all(want.join("deeper")).unwrap();
    std::fs::copy(r.join("private/secret.txt"), want.join("secret.txt")).unwrap();
    std::fs::copy(
        r.join("private/deeper/more.txt"),
        want.join("deeper/more.txt"),
    )
    .unwrap();
    std::fs::copy(
        r.join("private/deeper/noise.bin"),
        want.join("deeper/noise.bin"),
    )
    .unwrap();
    for m in ALL_MODELS {
        let what = format!("{m}");
        let server = Server::start(&serve_args(&root, *m, &["--archives", "on"]));
        let listing = curl(&what, &[&server.url("/private/")]).stdout;
        assert!(
            String::from_utf8_lossy(&listing).contains("href=\"?download=tar.gz\""),
            "{what}"
        );
        let got = dir.path().join("got");
        let _ = std::fs::remove_dir_all(&got);
        std::fs::create_dir_all(&got).unwrap();
        // Twice on one connection: the stream ends properly and the next request is served.
        let url = server.url("/private/?download=tar.gz");
        let tgz = dir.path().join("p.tar.gz");
        let tgz2 = dir.path().join("p2.tar.gz");
        let out = curl(
            &what,
            &[
                "-D",
                "-",
                "-o",
                tgz.to_str().unwrap(),
                &url,
                "-o",
                tgz2.to_str().unwrap(),
                &url,
            ],
        );
        let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(
            head.contains("content-type: application/gzip"),
            "{what}: {head}"
        );
        assert!(
            head.contains("content-disposition: attachment; filename=\"private.tar.gz\""),
            "{what}: {head}"
        );
        assert_eq!(
            std::fs::read(&tgz).unwrap(),
            std::fs::read(&tgz2).unwrap(),
            "{what}"
        );
        let x = Command::new("tar")
            .arg("xzf")
            .arg(&tgz)
            .arg("-C")
            .arg(&got)
            .output()
            .unwrap();
        assert!(
            x.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&x.stderr)
        );
        let d = Command::new("diff")
            .arg("-r")
            .arg(&want)
            .arg(got.join("private"))
            .output()
            .unwrap();
        assert!(
            d.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&d.stdout)
        );
        // The public folder: a long name kept whole; no dotfile, no link out of the root.
        let list = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "curl -sS --max-time 10 '{}' | tar tzf -",
                server.url("/public/?download=tar.gz")
            ))
            .output()
            .unwrap();
        let names = String::from_utf8_lossy(&list.stdout).into_owned();
        assert_eq!(
            names,
            format!("public/\npublic/{long}.txt\npublic/open.txt\n"),
            "{what}"
        );
        // HTTP/1.0: no chunking, the close ends it.
        let list = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "curl -sS --http1.0 --max-time 10 '{}' | tar tzf - | wc -l",
                server.url("/public/?download=tar.gz")
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "3", "{what}");
    }
}

#[test]
fn archives_are_off_by_default_and_stream_in_bounded_memory() {
    support::require("command -v curl && command -v head");
    let dir = site();
    let root = root(&dir);
    let off = Server::start(&serve_args(&root, ALL_MODELS[3], &[]));
    let (status, _, body) = parts(&curl("off", &["-i", &off.url("/public/?download=tar.gz")]));
    assert_eq!(status, 200);
    assert!(
        body.contains("Index of"),
        "off: the listing, not an archive"
    );
    drop(off);
    // 48 MiB that do not compress: held whole, the archive would move RSS by as much.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 50331648 /dev/urandom > '{}'",
            dir.path().join("root/public/big.bin").display()
        ))
        .status()
        .unwrap();
    assert!(out.success());
    let server = Server::start(&serve_args(&root, ALL_MODELS[3], &["--archives", "on"]));
    let before = support::rss_kib(server.pid());
    // Read slowly (20 MB/s), so the server holds what a slow client leaves it.
    let size_of = |format: &str| -> u64 {
        let url = server.url(&format!("/public/?download={format}"));
        let args = [
            "--max-time",
            "120",
            "--limit-rate",
            "20m",
            "-o",
            "/dev/null",
        ];
        let out = curl(
            format,
            &[&args[..], &["-w", "%{size_download}", &url]].concat(),
        );
        String::from_utf8_lossy(&out.stdout).parse().unwrap()
    };
    let size = size_of("tar.gz");
    assert!(size > 50_000_000, "{size}");
    let grew = support::rss_kib(server.pid()).saturating_sub(before);
    assert!(
        grew < 16 * 1024,
        "RSS grew by {grew} KiB for a 48 MiB archive"
    );
    // The zip of the same folder: stored, so a little over 48 MiB, and as little memory.
    let size = size_of("zip");
    assert!(size > 50_331_648, "{size}");
    let grew = support::rss_kib(server.pid()).saturating_sub(before);
    assert!(grew < 16 * 1024, "RSS grew by {grew} KiB for a 48 MiB zip");
}

/// `?download=zip`: the same folder as the tar.gz, read back by Python's zipfile (names,
/// sizes, CRCs), under every model; the same dotfile and symlink rules.
#[test]
fn a_folder_downloads_as_zip_that_python_reads_under_every_model() {
    support::require("command -v curl && command -v python3");
    let dir = site();
    let root = root(&dir);
    let r = dir.path().join("root");
    std::fs::write(r.join("private/deeper/noise.bin"), noise(300_000)).unwrap();
    std::fs::write(r.join("public/.hidden"), "no").unwrap();
    std::fs::write(r.join("public/caf\u{e9}.txt"), "utf-8").unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("o.txt"), "outside").unwrap();
    std::os::unix::fs::symlink(&outside, r.join("public/out")).unwrap();
    std::os::unix::fs::symlink(".", r.join("private/loop")).unwrap();
    let read = |zip: &std::path::Path| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sys, zipfile, zlib\n\
                 z = zipfile.ZipFile(sys.argv[1])\n\
                 assert z.testzip() is None\n\
                 for i in z.infolist():\n\
                 \x20   print(i.filename, i.file_size, zlib.crc32(z.read(i)))",
            ])
            .arg(zip)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let crc = crc32;
    let noise_crc = crc(&std::fs::read(r.join("private/deeper/noise.bin")).unwrap());
    for m in ALL_MODELS {
        let what = format!("{m}");
        let server = Server::start(&serve_args(&root, *m, &["--archives", "on"]));
        let listing = curl(&what, &[&server.url("/private/")]).stdout;
        assert!(
            String::from_utf8_lossy(&listing).contains("href=\"?download=zip\""),
            "{what}"
        );
        let zip = dir.path().join("p.zip");
        let out = curl(
            &what,
            &[
                "-D",
                "-",
                "-o",
                zip.to_str().unwrap(),
                &server.url("/private/?download=zip"),
            ],
        );
        let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(
            head.contains("content-type: application/zip"),
            "{what}: {head}"
        );
        assert!(
            head.contains("content-disposition: attachment; filename=\"private.zip\""),
            "{what}: {head}"
        );
        assert_eq!(
            read(&zip),
            format!(
                "private/ 0 0\nprivate/deeper/ 0 0\nprivate/deeper/more.txt 5 {}\n\
                 private/deeper/noise.bin 300000 {noise_crc}\nprivate/secret.txt 7 {}\n",
                crc(b"more\n"),
                crc(b"secret\n")
            ),
            "{what}"
        );
        // No dotfile, no link out of the root; a UTF-8 name kept.
        let zip = dir.path().join("pub.zip");
        curl(
            &what,
            &[
                "-o",
                zip.to_str().unwrap(),
                &server.url("/public/?download=zip"),
            ],
        );
        let names: Vec<String> = read(&zip)
            .lines()
            .map(|l| l.split(' ').next().unwrap_or("").to_string())
            .collect();
        assert_eq!(
            names,
            ["public/", "public/caf\u{e9}.txt", "public/open.txt"],
            "{what}"
        );
    }
}

/// CRC-32 (IEEE), as zip and Python's zlib.crc32 compute it; written out here so that the
/// test does not check the server's CRC with the server's own code.
fn crc32(b: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &byte in b {
        c ^= u32::from(byte);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// The listing's upload form, as a browser posts it (curl -F builds the same
/// multipart/form-data): several files in one form land whole, the answer sends the browser
/// back to the folder, a form from another site is refused, and the form is shown only where
/// --upload covers the folder.
#[test]
fn the_listing_form_uploads_files_with_a_multipart_post_under_every_model() {
    support::require("command -v curl");
    let dir = site();
    let root = root(&dir);
    let incoming = dir.path().join("root/incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    let a = dir.path().join("a note.txt");
    std::fs::write(&a, "first file\r\n--not a boundary\r\n").unwrap();
    let b = dir.path().join("photo.jpg");
    // Over 1 MiB: curl asks `Expect: 100-continue` first.
    std::fs::write(&b, noise(1_300_000)).unwrap();
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());
    for m in ALL_MODELS {
        let what = format!("{m}");
        for f in std::fs::read_dir(&incoming).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        let server = Server::start(&serve_args(
            &root,
            *m,
            &["--upload", "/incoming", "--max-body", "2m"],
        ));
        let listing = |path: &str| {
            String::from_utf8_lossy(&curl(&what, &[&server.url(path)]).stdout).into_owned()
        };
        assert!(
            listing("/incoming/").contains("enctype=\"multipart/form-data\""),
            "{what}"
        );
        assert!(
            !listing("/public/").contains("<form class=\"upload\""),
            "{what}"
        );
        let url = server.url("/incoming/");
        let out = curl(
            &what,
            &[
                "-i",
                // The head alone, without curl's interim `100 Continue` before it.
                "-H",
                "Expect:",
                "-F",
                &format!("file=@{a_s}"),
                "-F",
                &format!("file=@{b_s}"),
                "-F",
                "note=a field",
                &url,
            ],
        );
        let (status, head, body) = parts(&out);
        assert_eq!(status, 303, "{what}: {head}{body}");
        assert!(head.contains("location: /incoming/"), "{what}: {head}");
        assert_eq!(body, "Uploaded 2 files to /incoming/\n", "{what}");
        assert_eq!(
            std::fs::read(incoming.join("a note.txt")).unwrap(),
            std::fs::read(&a).unwrap(),
            "{what}"
        );
        assert_eq!(
            std::fs::read(incoming.join("photo.jpg")).unwrap(),
            std::fs::read(&b).unwrap(),
            "{what}"
        );
        // The same names again: kept, and said so.
        let (status, _, _) = parts(&curl(&what, &["-i", "-F", &format!("file=@{a_s}"), &url]));
        assert_eq!(status, 409, "{what}");
        // A page elsewhere posting the form: refused before a byte is written.
        let (status, _, _) = parts(&curl(
            &what,
            &[
                "-i",
                "-H",
                "Origin: https://evil.example",
                "-F",
                "file=@/etc/hostname;filename=new.txt",
                &url,
            ],
        ));
        assert_eq!(status, 403, "{what}");
        assert!(!incoming.join("new.txt").exists(), "{what}");
        // Outside --upload, a POST is what it was: not allowed.
        let (status, head, _) = parts(&curl(
            &what,
            &["-i", "-F", &format!("file=@{a_s}"), &server.url("/public/")],
        ));
        assert_eq!(status, 405, "{what}");
        assert!(head.contains("allow: get, head, options"), "{what}: {head}");
        assert_eq!(std::fs::read_dir(&incoming).unwrap().count(), 2, "{what}");
    }
}
