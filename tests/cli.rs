//! The command line as a user meets it before serving anything: `--help` on every subcommand,
//! the shell completions (driven in bash, zsh and fish themselves) and the manual pages (read
//! by groff and man).

use std::process::Command;
use std::time::Duration;

use crate::support::{require, run_tincan, TempDir};

/// Every subcommand, as a user types it.
const COMMANDS: &[&[&str]] = &[
    &["serve"],
    &["hello"],
    &["echo"],
    &["send"],
    &["chat"],
    &["talk"],
    &["bench"],
    &["bench", "http"],
    &["bench", "echo"],
    &["bench", "chat"],
    &["bench", "selftest"],
    &["bench", "models"],
    &["completions"],
    &["man"],
];

fn help(cmd: &[&str], flag: &str) -> String {
    let mut args = cmd.to_vec();
    args.push(flag);
    let (status, out, err) = run_tincan(&args, b"", Duration::from_secs(10));
    assert!(status.success(), "{args:?}: {err}");
    out
}

#[test]
fn every_subcommand_help_shows_examples_and_no_path_of_the_source_tree() {
    for cmd in COMMANDS {
        for flag in ["-h", "--help"] {
            let out = help(cmd, flag);
            let want = format!("Examples:\n  tincan {}", cmd[0]);
            assert!(out.contains(&want), "tincan {cmd:?} {flag}:\n{out}");
            // An installed binary has no source tree beside it to point at.
            for path in [
                "examples/",
                "bench/",
                "scripts/",
                "contrib/",
                "tests/",
                "src/",
            ] {
                assert!(
                    !out.contains(path),
                    "tincan {cmd:?} {flag} names {path}:\n{out}"
                );
            }
        }
    }
}

#[test]
fn serve_help_groups_its_flags_under_headings_in_the_order_a_user_needs_them() {
    let out = help(&["serve"], "--help");
    let headings: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with(' ') && l.ends_with(':'))
        .collect();
    assert_eq!(
        headings,
        [
            "Arguments:",
            "Options:",
            "Listening:",
            "TLS:",
            "Concurrency:",
            "Privileges:",
            "Files:",
            "Access control:",
            "Limits:",
            "HTTP:",
            "Logging:",
            "Proxy and CGI:",
            "Examples:",
        ]
    );
    // A flag sits under its heading: --max-body among the limits, --proxy with CGI.
    let under = |heading: &str, flag: &str| {
        let from = out.find(&format!("\n{heading}:\n")).unwrap();
        let section = &out[from + 1..];
        let end = section[1..].find("\n\n").map_or(section.len(), |e| e + 1);
        section[..end].contains(flag)
    };
    assert!(under("Limits", "--max-body <SIZE>"), "{out}");
    assert!(under("Proxy and CGI", "--cgi <PREFIX=DIR>"), "{out}");
    assert!(under("TLS", "--tls-self-signed <DIR>"), "{out}");
    assert!(under("Files", "--archives <on|off>"), "{out}");
}

/// The completion script, written where a shell reads it.
fn completion(shell: &str, dir: &TempDir, name: &str) -> String {
    let (status, out, err) = run_tincan(&["completions", shell], b"", Duration::from_secs(10));
    assert!(status.success(), "{err}");
    let path = dir.path().join(name);
    std::fs::write(&path, out).unwrap();
    path.to_str().unwrap().to_string()
}

fn shell(program: &str, script: &str) -> String {
    let out = Command::new(program)
        .args(["-c", script])
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{program} -c {script}: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn completions_complete_subcommands_flags_and_values_in_bash_zsh_and_fish() {
    require("bash --version");
    require("zsh --version");
    require("fish --version");
    let dir = TempDir::new("completions");
    let bash = completion("bash", &dir, "tincan.bash");
    // bash calls the function with the command, the word and the word before it.
    let words = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let last = words.len() - 1;
        format!(
            "source {bash}; COMP_WORDS=({line}); COMP_CWORD={last}; _tincan tincan {} {}; \
             echo \"${{COMPREPLY[@]}}\"",
            words[last],
            words[last - 1]
        )
    };
    assert_eq!(shell("bash", &words("tincan se")).trim(), "serve send");
    assert_eq!(
        shell("bash", &words("tincan serve --lis")).trim(),
        "--listen --listing"
    );
    let fish = completion("fish", &dir, "tincan.fish");
    let got = shell(
        "fish",
        &format!("source {fish}; complete -C 'tincan serve --model '; complete -C 'tincan man'"),
    );
    for want in ["event\n", "prefork\n", "iterative\n", "threaded\n"] {
        assert!(got.contains(want), "{got}");
    }
    let got = shell("fish", &format!("source {fish}; complete -C 'tincan com'"));
    assert!(got.starts_with("completions\t"), "{got}");
    // zsh: the script registers itself with compinit's table.
    let zsh = completion("zsh", &dir, "_tincan");
    let dump = dir.path().join("zcompdump");
    let got = shell(
        "zsh",
        &format!(
            "autoload -U compinit && compinit -u -d {}; source {zsh}; print $_comps[tincan]",
            dump.display()
        ),
    );
    assert_eq!(got.trim(), "_tincan");
    let (status, _, err) = run_tincan(&["completions", "tcsh"], b"", Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("use one of: bash, elvish, fish, powershell, zsh"),
        "{err}"
    );
}

#[test]
fn man_pages_are_valid_roff_with_every_flag_and_the_examples() {
    require("groff --version");
    require("man --version");
    let dir = TempDir::new("man");
    for cmd in [&[][..], &["serve"], &["bench", "http"], &["chat"]] {
        let mut args = vec!["man"];
        args.extend_from_slice(cmd);
        let (status, page, err) = run_tincan(&args, b"", Duration::from_secs(10));
        assert!(status.success(), "{args:?}: {err}");
        let file = dir.path().join("page.1");
        std::fs::write(&file, &page).unwrap();
        // groff warns about every roff mistake with -ww; -z formats without output.
        let check = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&file)
            .output()
            .unwrap();
        let warnings = String::from_utf8_lossy(&check.stderr);
        assert!(
            check.status.success() && warnings.is_empty(),
            "{args:?}: {warnings}"
        );
        let shown = Command::new("man")
            .args(["-l", "-P", "cat"])
            .arg(&file)
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&shown.stdout);
        let title = std::iter::once("tincan")
            .chain(cmd.iter().copied())
            .collect::<Vec<_>>()
            .join("-")
            .to_uppercase();
        assert!(
            text.starts_with(&format!("{title}(1)")),
            "{args:?}:\n{text}"
        );
        assert!(
            text.contains("\nEXAMPLES\n") || cmd.is_empty(),
            "{args:?}:\n{text}"
        );
        match cmd {
            [] => {
                assert!(text.contains("tincan-serve(1)"), "{text}");
                assert!(text.contains("\nEXIT STATUS\n"), "{text}");
                assert!(
                    text.contains("  2    the command line or config file"),
                    "{text}"
                );
            }
            ["serve"] => {
                assert!(text.contains("--listen <ADDR>"), "{text}");
                // Examples keep their lines, as in --help.
                assert!(
                    text.contains("\n         tincan serve                              the current directory"),
                    "{text}"
                );
            }
            _ => {}
        }
    }
    let (status, _, err) = run_tincan(&["man", "bench", "ftp"], b"", Duration::from_secs(10));
    assert_eq!(status.code(), Some(2));
    assert_eq!(
        err,
        "tincan: `tincan bench` has no subcommand `ftp`; its pages are http, echo, chat, \
         selftest, models\n"
    );
}

#[test]
fn start_lines_are_urls_for_http_and_addresses_for_echo_and_chat() {
    use crate::support::{curl, Server};
    require("curl --version");
    let dir = TempDir::new("start-lines");
    let tls = dir.path().join("tls");
    let tls = tls.to_str().unwrap();
    let sock = dir.path().join("s.sock");
    let unix = format!("unix:{}", sock.display());
    let root = dir.path().to_str().unwrap();
    std::fs::write(dir.path().join("a.txt"), "a\n").unwrap();
    let quiet = ["--access-log", "off"];
    for (args, scheme) in [
        (
            vec!["serve", root, "-l", "127.0.0.1:0"],
            "http://127.0.0.1:",
        ),
        (vec!["serve", root, "-l", "[::1]:0"], "http://[::1]:"),
        (vec!["hello", "-l", "127.0.0.1:0"], "http://127.0.0.1:"),
        (
            vec!["serve", root, "-l", "127.0.0.1:0", "--tls-self-signed", tls],
            "https://127.0.0.1:",
        ),
    ] {
        let mut all = args.clone();
        all.extend(quiet);
        let srv = Server::start(&all);
        let url = &srv.addrs[0];
        assert!(url.starts_with(scheme), "{args:?}: {url}");
        // The line is a URL curl takes as it is.
        let cacert = format!("{tls}/cert.pem");
        let mut curl_args = vec!["-o", "/dev/null", "-w", "%{http_code}", "-g"];
        if scheme.starts_with("https") {
            curl_args.extend(["--cacert", &cacert]);
        }
        let target = if args[0] == "serve" {
            format!("{url}/a.txt")
        } else {
            url.clone()
        };
        curl_args.push(&target);
        let out = curl(&format!("{args:?}"), &curl_args);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{args:?}");
    }
    for (args, want) in [
        (vec!["echo", "-l", "127.0.0.1:0"], "127.0.0.1:"),
        (vec!["chat", "-l", "127.0.0.1:0"], "127.0.0.1:"),
        (vec!["echo", "-l", "127.0.0.1:0", "--udp"], "127.0.0.1:"),
        (
            vec!["echo", "-l", "127.0.0.1:0", "--tls-self-signed", tls],
            "tls://127.0.0.1:",
        ),
        (
            vec!["serve", root, "-l", &unix, "--access-log", "off"],
            "unix:/",
        ),
    ] {
        let srv = Server::start(&args);
        let line = &srv.addrs[0];
        assert!(line.starts_with(want), "{args:?}: {line}");
        if !want.starts_with("unix:") {
            // What follows the scheme is HOST:PORT, as nc and tincan send take it.
            let bare = line.strip_prefix("tls://").unwrap_or(line);
            bare.parse::<std::net::SocketAddr>()
                .unwrap_or_else(|e| panic!("{args:?}: {line}: {e}"));
        }
    }
}

/// `tincan ARGS` with `toml` (if any) as its `--config` file, which must refuse to start: exit 2, one
/// line on stderr, nothing bound; returns that line. `DIR/` in `toml` is `dir`.
fn refused(dir: &TempDir, toml: &str, args: &[&str]) -> String {
    let file = dir.path().join("tincan.toml");
    let here = format!("{}/", dir.path().display());
    std::fs::write(&file, toml.replace("DIR/", &here)).unwrap();
    let mut all = args.to_vec();
    if !toml.is_empty() {
        all.extend(["--config", file.to_str().unwrap()]);
    }
    all.extend(["-l", "127.0.0.1:0"]);
    let (status, out, err) = run_tincan(&all, b"", Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{toml:?} {args:?}: {out}{err}");
    assert!(!out.contains("listening on"), "{toml:?} {args:?}: {out}");
    assert_eq!(err.lines().count(), 1, "{toml:?} {args:?}: {err}");
    err
}

#[test]
fn tls_keys_in_the_config_file_are_refused_together_as_their_flags_are() {
    let dir = TempDir::new("tls-keys");
    let root = dir.path().to_str().unwrap();
    for (toml, words) in [
        (
            "tls_cert = \"DIR/c.pem\"\ntls_key = \"DIR/k.pem\"\ntls_self_signed = \"DIR/ss\"\n",
            &["tls_self_signed cannot be used with tls_cert in the config file"][..],
        ),
        (
            "acme = \"example.org\"\ntls_self_signed = \"DIR/ss\"\n",
            &["acme cannot be used with tls_self_signed in the config file"],
        ),
        (
            "acme = \"example.org\"\ntls_cert = \"DIR/c.pem\"\ntls_key = \"DIR/k.pem\"\n",
            &["acme cannot be used with tls_cert in the config file"],
        ),
        (
            "acme_email = \"ops@example.org\"\n",
            &["acme_email in the config file", "no acme domain"],
        ),
        (
            "tls_self_signed = \"DIR/ss\"\nacme_state = \"DIR/st\"\n",
            &["acme_state in the config file", "no acme domain"],
        ),
        (
            "tls_cert = \"DIR/c.pem\"\n",
            &["tls_cert and tls_key in the config file come in pairs"],
        ),
        ("hsts = 60\n", &["--hsts needs TLS"]),
        (
            "redirect_http = \"127.0.0.1:0\"\n",
            &["--redirect-http", "needs TLS"],
        ),
    ] {
        for cmd in [&["serve", root][..], &["hello"]] {
            if cmd[0] == "hello" && toml.starts_with("redirect_http") {
                continue;
            }
            let err = refused(&dir, toml, cmd);
            for w in words {
                assert!(err.contains(w), "{toml:?} {cmd:?}: {err}");
            }
        }
    }
    // The flags as the keys: --acme-email alone, and a key beside another source.
    let err = refused(
        &dir,
        "",
        &["serve", root, "--acme-email", "ops@example.org"],
    );
    assert!(
        err.contains("--acme-email") && err.contains("no --acme"),
        "{err}"
    );
    let err = refused(
        &dir,
        "",
        &[
            "serve",
            root,
            "--tls-self-signed",
            root,
            "--tls-key",
            "k.pem",
        ],
    );
    assert!(err.contains("cannot be used with '--tls-key"), "{err}");
}

#[test]
fn an_acme_domain_in_the_config_file_takes_the_acme_flags_and_the_other_way_round() {
    use crate::support::{free_port, Server};
    let dir = TempDir::new("acme-mixed");
    let root = dir.path().to_str().unwrap();
    let state = dir.path().join("state");
    // No CA answers there: the server starts on its stand-in certificate all the same.
    let nowhere = format!("https://127.0.0.1:{}/dir", free_port());
    let file = dir.path().join("tincan.toml");
    for (toml, flags) in [
        (
            format!("acme = \"x.tincan.test\"\nacme_directory = \"{nowhere}\"\n"),
            vec!["--acme-email", "ops@tincan.test"],
        ),
        (
            format!("acme_email = \"ops@tincan.test\"\nacme_directory = \"{nowhere}\"\n"),
            vec!["--acme", "x.tincan.test"],
        ),
    ] {
        std::fs::write(&file, &toml).unwrap();
        let mut args = vec!["serve", root, "-l", "127.0.0.1:0", "--access-log", "off"];
        args.extend(["--config", file.to_str().unwrap()]);
        args.extend(["--acme-state", state.to_str().unwrap()]);
        args.extend(flags);
        let srv = Server::start(&args);
        assert!(
            srv.addrs[0].starts_with("https://"),
            "{toml}: {:?}",
            srv.addrs
        );
    }
}

#[test]
fn a_refusal_for_want_of_tls_names_every_source_of_certificates_acme_too() {
    let dir = TempDir::new("want-tls");
    let root = dir.path().to_str().unwrap();
    for args in [
        &["serve", root, "--hsts", "60"][..],
        &["hello", "--hsts", "60"],
        &["serve", root, "--redirect-http", "127.0.0.1:0"],
        &["echo", "--udp", "--tls-self-signed", root],
    ] {
        let err = refused(&dir, "", args);
        for source in ["--tls-cert", "--tls-self-signed", "--acme"] {
            assert!(err.contains(source), "{args:?}: {err}");
        }
    }
}

#[test]
fn redirect_http_with_only_unix_listeners_is_refused_before_anything_is_printed() {
    let dir = TempDir::new("redirect-unix");
    let root = dir.path().to_str().unwrap();
    let sock = format!("unix:{}/s.sock", dir.path().display());
    let tls = format!("{root}/tls");
    let (status, out, err) = run_tincan(
        &[
            "serve",
            root,
            "-l",
            &sock,
            "--tls-self-signed",
            &tls,
            "--redirect-http",
            "127.0.0.1:0",
        ],
        b"",
        Duration::from_secs(10),
    );
    assert_eq!(status.code(), Some(2), "{out}{err}");
    assert_eq!(out, "", "{err}");
    assert!(err.contains("every --listen is a Unix socket"), "{err}");
    assert!(!dir.path().join("s.sock").exists());
}

#[test]
fn a_tls_unix_socket_says_so_in_its_start_line_and_its_trust_hint_reaches_it() {
    use crate::support::{curl, Server};
    require("curl --version");
    let dir = TempDir::new("tls-unix");
    let root = dir.path().to_str().unwrap();
    std::fs::write(dir.path().join("a.txt"), "a\n").unwrap();
    let path = format!("{root}/s.sock");
    let unix = format!("unix:{path}");
    let tls = format!("{root}/tls");
    let srv = Server::start(&[
        "serve",
        root,
        "-l",
        &unix,
        "--tls-self-signed",
        &tls,
        "--access-log",
        "off",
    ]);
    assert_eq!(srv.addrs[0], format!("{unix} (TLS)"));
    assert_eq!(
        tincan::commands::start::StartLine::address(&srv.addrs[0]),
        unix
    );
    let hint = srv
        .stdout
        .recv_timeout(Duration::from_secs(5))
        .expect("the self-signed hint");
    let cacert = format!("{tls}/cert.pem");
    let want = format!("curl --cacert {cacert} --unix-socket {path} https://localhost/");
    assert!(hint.ends_with(&format!("({want})")), "{hint}");
    // The line works as printed (with the path of a file under the root).
    let mut args: Vec<&str> = want.split(' ').skip(1).collect();
    args.pop();
    args.extend([
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "https://localhost/a.txt",
    ]);
    let out = curl("the hint", &args);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    // echo's hint is openssl's, reaching the socket by its path too.
    let echo = Server::start(&[
        "echo",
        "-l",
        &unix.replace("s.sock", "e.sock"),
        "--tls-self-signed",
        &tls,
    ]);
    assert!(echo.addrs[0].ends_with("e.sock (TLS)"), "{:?}", echo.addrs);
    let hint = echo.stdout.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        hint.ends_with(&format!(
            "(openssl s_client -unix {root}/e.sock -CAfile {cacert})"
        )),
        "{hint}"
    );
}

#[test]
fn upstream_ca_without_an_https_upstream_is_refused_as_the_clients_refuse_tls_ca() {
    let dir = TempDir::new("upstream-ca");
    let root = dir.path().to_str().unwrap();
    let ca = format!("{root}/ca.pem");
    for extra in [
        &["--proxy", "/api=http://127.0.0.1:9"][..],
        &["--proxy", "/api=http://127.0.0.1:9,http://unix:/tmp/x.sock"],
        &["--cgi", "/cgi-bin=."],
        &[],
    ] {
        let mut args = vec!["serve", root, "--upstream-ca", &ca];
        args.extend(extra);
        let err = refused(&dir, "", &args);
        assert!(
            err.contains("--upstream-ca is about the upstreams' TLS certificates")
                && err.contains("no --proxy upstream is https://"),
            "{extra:?}: {err}"
        );
    }
    // The same from the file.
    let err = refused(
        &dir,
        &format!("upstream_ca = {ca:?}\nproxy = [\"/api=http://127.0.0.1:9\"]\n"),
        &["serve", root],
    );
    assert!(err.contains("no --proxy upstream is https://"), "{err}");
}

#[test]
fn https_shows_in_the_first_screen_of_the_help_and_of_the_changelog() {
    let out = help(&[], "--help");
    let first: String = out.lines().take(24).collect::<Vec<_>>().join("\n");
    assert!(first.contains("HTTPS"), "{first}");
    let serve = out
        .lines()
        .find(|l| l.trim_start().starts_with("serve "))
        .unwrap();
    assert!(
        serve.contains("HTTPS") && serve.contains("HTTP/2"),
        "{serve}"
    );
    let changelog =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/CHANGELOG.md")).unwrap();
    let top: String = changelog.lines().take(40).collect::<Vec<_>>().join("\n");
    for want in ["HTTPS", "--acme", "--tls-self-signed"] {
        assert!(top.contains(want), "{want}:\n{top}");
    }
}
