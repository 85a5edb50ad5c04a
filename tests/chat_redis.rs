//! `tincan chat --redis`: several instances on one real `redis-server` (started here, on a free
//! port of 127.0.0.1, without persistence) serve one room: ordering across instances, nicks and
//! `/who` across them, links killed with `CLIENT KILL`, Redis killed and restarted, prefork, and
//! an instance that fell behind the stream's history.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::chat::Client;
use crate::support::{self, Server};

/// A `redis-server` of the test's own, stopped by pid when dropped.
struct Redis {
    child: Option<Child>,
    port: u16,
    /// While it is killed: a socket bound to its port and not listening, so connects are
    /// refused and no other test's server (bound to port 0 meanwhile) takes the port.
    hold: Option<socket2::Socket>,
}

impl Redis {
    fn start() -> Redis {
        support::require("redis-server --version");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Redis {
            child: None,
            port,
            hold: None,
        };
        r.restart();
        r
    }

    /// Start (again) on the same port; return once it answers.
    fn restart(&mut self) {
        self.hold = None;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command(&["PING"]).is_none() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = c.kill();
        let _ = c.wait();
        let hold = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("a socket");
        // Its own connections may linger in TIME_WAIT on the port.
        hold.set_reuse_address(true).expect("SO_REUSEADDR");
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], self.port).into();
        hold.bind(&addr.into())
            .expect("hold the killed Redis's port");
        self.hold = Some(hold);
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Send one command (as RESP) and return the first line of the reply; `None` if Redis
    /// cannot be reached.
    fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        Some(line.trim_end().to_string())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `tincan chat` of the room `room` on `redis`.
fn instance(redis: &Redis, room: &str, extra: &[&str]) -> Server {
    let url = redis.url();
    let mut args = vec![
        "chat",
        "--listen",
        "127.0.0.1:0",
        "--redis",
        &url,
        "--room",
        room,
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Every client of `clients` sends `each` messages at once (from threads), while `meddle`
/// runs; every client must get every message once, all in one order. Returns that order.
fn everyone_sends(
    clients: Vec<Client>,
    each: usize,
    meddle: impl FnOnce() + Send + 'static,
) -> Vec<String> {
    let n = clients.len();
    let go = Arc::new(Barrier::new(n + 1));
    let labels: Vec<String> = clients.iter().map(|c| c.me.clone()).collect();
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let go = Arc::clone(&go);
            std::thread::spawn(move || {
                let mut w = c.s.try_clone().unwrap();
                let sender = std::thread::spawn(move || {
                    go.wait();
                    for m in 0..each {
                        w.write_all(format!("c{i}-{m}\0").as_bytes()).unwrap();
                        if m % 20 == 0 {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                });
                let mut got = Vec::new();
                while got.len() < n * each {
                    let l = c.line().unwrap_or_else(|| panic!("{}: closed", c.me));
                    assert!(!l.starts_with("* not delivered"), "{}: {l}", c.me);
                    assert!(!l.starts_with("* room offline"), "{}: {l}", c.me);
                    if !l.starts_with("* ") {
                        got.push(l);
                    }
                }
                sender.join().unwrap();
                got
            })
        })
        .collect();
    go.wait();
    meddle();
    let seqs: Vec<Vec<String>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut want: Vec<String> = (0..n)
        .flat_map(|c| (0..each).map(move |m| (c, m)))
        .map(|(c, m)| format!("{}: c{c}-{m}", labels[c]))
        .collect();
    want.sort();
    for (i, s) in seqs.iter().enumerate() {
        let mut got = s.clone();
        got.sort();
        assert_eq!(got, want, "client {i} missed or repeated messages");
        assert_eq!(s, &seqs[0], "clients 0 and {i} saw different orders");
    }
    // Each sender's own messages keep the order it sent them in.
    for (c, label) in labels.iter().enumerate() {
        let mine: Vec<&String> = seqs[0]
            .iter()
            .filter(|l| l.starts_with(&format!("{label}: ")))
            .collect();
        for (m, l) in mine.iter().enumerate() {
            assert_eq!(**l, format!("{label}: c{c}-{m}"));
        }
    }
    seqs.into_iter().next().unwrap()
}

#[test]
fn three_instances_on_one_redis_serve_one_room_in_one_order() {
    let _heavy = support::heavy();
    let redis = Redis::start();
    let servers = [
        instance(&redis, "order", &["--model", "event"]),
        instance(&redis, "order", &["--model", "threaded"]),
        instance(&redis, "order", &["--model", "prefork", "--workers", "2"]),
    ];
    let clients: Vec<Client> = servers
        .iter()
        .flat_map(|s| [Client::join(s.addr()), Client::join(s.addr())])
        .collect();
    everyone_sends(clients, 50, || {});
}

#[test]
fn nicks_are_unique_and_who_lists_everyone_across_instances() {
    let redis = Redis::start();
    let one = instance(&redis, "nicks", &[]);
    let two = instance(&redis, "nicks", &["--model", "threaded"]);
    let mut a = Client::join(one.addr());
    let mut b = Client::join(two.addr());
    // Join notices cross instances.
    a.until(|l| l == format!("* {} joined", b.me));
    a.send("/nick alice");
    let renamed = format!("* {} is now known as alice", a.me);
    a.until(|l| l == renamed);
    b.until(|l| l == renamed);
    for clash in ["alice", "ALICE"] {
        b.send(&format!("/nick {clash}"));
        assert_eq!(
            b.until(|l| l.starts_with("* nick refused")),
            format!("* nick refused: {clash} is taken")
        );
    }
    b.send("/nick bob");
    a.until(|l| l == format!("* {} is now known as bob", b.me));
    b.send("hi from bob");
    assert_eq!(a.message(), "bob: hi from bob");
    assert_eq!(b.message(), "bob: hi from bob");
    b.send("/who");
    assert_eq!(
        b.until(|l| l.contains(" connected: ")),
        "* 2 connected: alice, bob"
    );
    // A name given up is free again, room-wide.
    a.send("/nick carol");
    a.until(|l| l.ends_with("is now known as carol"));
    b.send("/nick alice");
    b.until(|l| l == "* bob is now known as alice");
    drop(b);
    a.until(|l| l == "* alice left");
    a.send("/who");
    assert_eq!(
        a.until(|l| l.contains(" connected: ")),
        "* 1 connected: carol"
    );
}

#[test]
fn redis_links_killed_with_client_kill_lose_nothing_and_keep_order() {
    let _heavy = support::heavy();
    let redis = Redis::start();
    let one = instance(&redis, "kill", &[]);
    let two = instance(&redis, "kill", &["--model", "threaded"]);
    let clients = vec![
        Client::join(one.addr()),
        Client::join(one.addr()),
        Client::join(two.addr()),
    ];
    let port = redis.port;
    everyone_sends(clients, 200, move || {
        let r = Redis {
            child: None,
            port,
            hold: None,
        };
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(40));
            let killed = r.command(&["CLIENT", "KILL", "TYPE", "normal"]);
            assert!(killed.is_some_and(|k| k.starts_with(':')), "CLIENT KILL");
        }
    });
}

#[test]
fn redis_killed_and_restarted_tells_senders_and_everyone_once_and_the_room_heals() {
    let mut redis = Redis::start();
    let one = instance(&redis, "heal", &[]);
    let two = instance(&redis, "heal", &["--model", "threaded"]);
    let mut a = Client::join(one.addr());
    let mut b = Client::join(two.addr());
    redis.kill();
    a.send("lost");
    // The sender hears both, in either order: the reader thread may be the one that finds
    // Redis gone and announces it, while the writer answers the post that failed.
    let (mut offline, mut refused) = (None, None);
    while offline.is_none() || refused.is_none() {
        let l = a.line().expect("the instance closed the sender");
        if l.starts_with("* room offline: ") {
            offline = Some(l);
        } else if l.starts_with("* not delivered: ") {
            refused = Some(l);
        }
    }
    let (offline, refused) = (offline.unwrap(), refused.unwrap());
    assert!(
        offline.contains(&format!("cannot reach Redis at {}", redis.url())),
        "{offline}"
    );
    assert!(b
        .until(|l| l.starts_with("* room offline: "))
        .ends_with("messages are not delivered until it is back"));
    assert!(refused.contains("connection refused"), "{refused}");
    a.send("lost too");
    assert!(a.line().unwrap().starts_with("* not delivered: "));
    redis.restart();
    assert_eq!(a.until(|l| l.starts_with("* room ")), "* room back online");
    assert_eq!(b.until(|l| l.starts_with("* room ")), "* room back online");
    a.send("back");
    assert_eq!(b.message(), format!("{}: back", a.me));
    assert_eq!(a.message(), format!("{}: back", a.me));
    // The restarted Redis has forgotten the room's names: the refresh puts them back.
    b.send("/who");
    let who = b.until(|l| l.contains(" connected: "));
    assert!(who.starts_with("* ") && who.contains(&b.me), "{who}");
}

/// Read `client`'s lines until `last`: how many of `sender`'s messages it got, and how many it
/// was told it missed.
fn got_and_missed(client: &mut Client, last: &str) -> (usize, usize) {
    let (mut got, mut missed) = (0, 0);
    loop {
        let l = client.line().unwrap();
        if l == last {
            return (got, missed);
        }
        if let Some(rest) = l.strip_prefix("* missed ") {
            missed += rest.split(' ').next().unwrap().parse::<usize>().unwrap();
        } else if !l.starts_with("* ") {
            got += 1;
        }
    }
}

#[test]
fn an_instance_held_up_past_the_history_tells_its_clients_how_many_they_missed() {
    let redis = Redis::start();
    // Without notices, every numbered entry of the stream is a message this test counts.
    let flags = ["--redis-history", "10", "--notices", "off"];
    let slow = instance(&redis, "behind", &flags);
    let fast = instance(&redis, "behind", &flags);
    let mut a = Client::join(slow.addr());
    let mut b = Client::join(fast.addr());
    // The slow instance must be following the stream before it is held up: one that starts
    // following later begins at the stream's end, with nothing it could know it missed.
    b.send("ready");
    let ready = format!("{}: ready", b.me);
    while a.line().unwrap() != ready {}
    while b.line().unwrap() != ready {}
    // Hold the slow instance up while 500 messages pass; the stream keeps about 100 of them
    // (`MAXLEN ~` trims whole nodes of 100).
    slow.signal(libc::SIGSTOP);
    for i in 0..500 {
        b.send(&format!("m{i}"));
    }
    b.send("last");
    let last = format!("{}: last", b.me);
    // Even the instance that reads along may lose some to a history this short: it says so.
    let (got, missed) = got_and_missed(&mut b, &last);
    assert_eq!(
        got + missed,
        500,
        "fast: got {got}, told it missed {missed}"
    );
    slow.signal(libc::SIGCONT);
    let (got, missed) = got_and_missed(&mut a, &last);
    assert_eq!(
        got + missed,
        500,
        "slow: got {got}, told it missed {missed}"
    );
    assert!(missed >= 300, "the stream kept {got}");
}

#[test]
fn prefork_is_refused_without_redis_and_runs_with_it() {
    let (status, _, err) = support::run_tincan(
        &["chat", "--listen", "127.0.0.1:0", "--model", "prefork"],
        b"",
        Duration::from_secs(10),
    );
    assert!(
        !status.success() && err.contains("share no memory"),
        "{err}"
    );
    let redis = Redis::start();
    let server = instance(&redis, "pre", &["--model", "prefork", "--workers", "3"]);
    let mut cs: Vec<Client> = (0..6).map(|_| Client::join(server.addr())).collect();
    cs[0].send("to every worker");
    let want = format!("{}: to every worker", cs[0].me);
    for c in &mut cs {
        assert_eq!(c.message(), want);
    }
}

#[test]
fn an_unreachable_redis_is_refused_at_start_in_one_sentence() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let (status, out, err) = support::run_tincan(
        &["chat", "--listen", "127.0.0.1:0", "--redis", &url],
        b"",
        Duration::from_secs(10),
    );
    assert!(!status.success());
    assert!(!out.contains("listening on"), "{out}");
    let last = err.trim().lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!(
            "tincan: cannot reach Redis at {url}: connection refused; is redis-server running?"
        )
    );
    let (_, _, err) = support::run_tincan(
        &["chat", "--redis", "http://127.0.0.1:1"],
        b"",
        Duration::from_secs(10),
    );
    assert!(err.contains("is not a Redis address"), "{err}");
    let (_, _, err) = support::run_tincan(&["chat", "--room", "x"], b"", Duration::from_secs(10));
    assert!(err.contains("--redis"), "{err}");
}

/// The book's Python client on one instance and `tincan talk` on another hear each other.
#[test]
fn the_books_python_client_on_one_instance_talks_with_tincan_talk_on_another() {
    support::require("python3 --version");
    let redis = Redis::start();
    let one = instance(&redis, "book", &[]);
    let two = instance(&redis, "book", &["--model", "threaded"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/chat_client.py");
    // The Python client sends 3 messages and waits for 5: its 3 and talk's 2.
    let mut py = Command::new("python3")
        .args([
            script,
            "127.0.0.1",
            &one.addr().port().to_string(),
            "py",
            "3",
            "5",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python3");
    let mut out = BufReader::new(py.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let me = first
        .strip_prefix("ready ")
        .expect("ready")
        .trim()
        .to_string();
    let mut talk = Command::new(support::bin())
        .args(["talk", &two.addr().to_string(), "--wait", "3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tincan talk");
    let mut tin = talk.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    py.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    tin.write_all(b"hello python\nfrom talk\n").unwrap();
    drop(tin);
    let mut text = String::new();
    out.read_to_string(&mut text).unwrap();
    assert!(py.wait().unwrap().success(), "{text}");
    for want in ["hello python", "from talk", "py-0", "py-1", "py-2"] {
        assert!(text.contains(want), "python missed {want:?}:\n{text}");
    }
    let talked = talk.wait_with_output().unwrap();
    let shown = String::from_utf8_lossy(&talked.stdout);
    for m in 0..3 {
        let want = format!("{me}: py-{m}");
        assert!(shown.contains(&want), "talk missed {want:?}:\n{shown}");
    }
}

/// `tincan bench chat ADDR --target ADDR2` spreads its connections over two instances of one
/// room: every message's own broadcast comes back (through Redis, for a sender on the other
/// instance's room share), with no error.
#[test]
fn bench_chat_runs_across_instances() {
    let redis = Redis::start();
    let a = instance(&redis, "bench", &[]);
    let b = instance(&redis, "bench", &[]);
    let (a, b) = (a.addrs[0].clone(), b.addrs[0].clone());
    let mut args = vec!["bench", "chat", a.as_str(), "--target", b.as_str()];
    args.extend_from_slice(&["-c", "6", "-t", "1", "-n", "300", "--json"]);
    let (status, out, err) = support::run_tincan(&args, b"", Duration::from_secs(60));
    assert!(status.success(), "tincan {args:?} failed: {err}");
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    assert_eq!(v["replies"], 300, "{v}");
    assert_eq!(v["errors"]["total"], 0, "{v}");
}
