//! `chat_session`: a room of up to four hand-driven clients performing an arbitrary sequence of
//! events (reads of arbitrary bytes, wake-ups, drained outboxes, stalls, half-closes, resets,
//! joins, a server shutdown) against `tincan::protocol::chat` with small limits.
//!
//! Properties:
//! 1. no call panics;
//! 2. everything a client is sent is whole tincanchat lines: each call's output is UTF-8 text
//!    ending in NUL, and every line is a server notice (`"* ..."`) or `"LABEL: text"` where
//!    LABEL is an address the room handed out or a name `check_nick` accepts (so nobody can
//!    forge a notice or another client's label);
//! 3. while a session continues, what it leaves in its `ReadBuf` is at most `max_message`,
//!    or, while it is paused for a slower reader (`reading_paused`), at most that plus the one
//!    read it was handed; a paused session is handed no input, and gets what it held back
//!    once it goes on (as the drivers do);
//! 4. the room counts exactly the live sessions; after a closing `Next` the session is dropped
//!    (as drivers do) and never called again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tincan::protocol::chat::{check_nick, ChatConfig, ChatService, ChatSession};
use tincan::{Outbox, Peer, PeerAddr, ReadBuf, Service, Session, Waker};

use crate::{byte, Unstructured};

/// Byte strings that reach the room's corners: commands, names, separators, bad UTF-8.
const ATOMS: &[&[u8]] = &[
    b"\0",
    b"\0",
    b"hi",
    b"/who",
    b"/nick ",
    b"/nick",
    b"bob",
    b"alice",
    b"*x",
    b":",
    b" ",
    b"\xc3\xa9",
    b"\xff",
    b"\xc3",
    b"127.0.0.1:5001",
    b"\t",
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b"/",
    b"\n",
    b"* ",
];

struct Client {
    session: ChatSession,
    input: ReadBuf,
    out: Outbox,
    woken: Arc<AtomicBool>,
    /// A stalled client's socket takes nothing: its outbox is not emptied.
    stalled: bool,
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let max_message = 1 + byte(&mut u) as usize % 64;
    // `tincan chat` requires room for one longest line (message plus 192 bytes of label).
    let max_queue = max_message + 192 + byte(&mut u) as usize * 8;
    let notices = byte(&mut u) & 1 == 1;
    let svc = ChatService::new(ChatConfig {
        max_message,
        max_queue,
        notices,
        ..ChatConfig::default()
    });
    let now = Instant::now();
    let mut clients: Vec<Client> = Vec::new();
    let mut next_port = 5001u16;
    let mut labels: Vec<String> = Vec::new();

    let join = |clients: &mut Vec<Client>, labels: &mut Vec<String>, port: u16, unix: bool| {
        let remote = if unix {
            PeerAddr::Unix("/tmp/chat.sock".into())
        } else {
            PeerAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], port)))
        };
        let peer = Peer {
            remote,
            local: PeerAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 4040))),
        };
        let woken = Arc::new(AtomicBool::new(false));
        let w = woken.clone();
        let session = svc.open(&peer, Waker::new(move || w.store(true, Ordering::SeqCst)));
        labels.push(session.label().to_string());
        clients.push(Client {
            session,
            input: ReadBuf::new(),
            out: Outbox::new(),
            woken,
            stalled: false,
        });
    };
    for _ in 0..2 {
        join(&mut clients, &mut labels, next_port, false);
        next_port += 1;
    }

    let mut steps = 0;
    while !u.is_empty() && steps < 200 {
        steps += 1;
        let op = byte(&mut u);
        if clients.is_empty() && op % 12 != 8 {
            continue;
        }
        let who = if clients.is_empty() {
            0
        } else {
            (op as usize >> 4) % clients.len()
        };
        let next = match op % 12 {
            0..=3 => {
                let n = byte(&mut u) as usize % 48;
                let raw: Vec<u8> = (0..n).map(|_| byte(&mut u)).collect();
                let bytes: Vec<u8> = if op & 0x80 != 0 {
                    raw.clone()
                } else {
                    raw.iter()
                        .flat_map(|&b| ATOMS[b as usize % ATOMS.len()].iter().copied())
                        .collect()
                };
                let c = &mut clients[who];
                if c.session.reading_paused() {
                    // The driver reads nothing from a paused session.
                    None
                } else {
                    c.input.extend(&bytes);
                    let next = c.session.on_input(&mut c.input, &mut c.out, now);
                    // Paused, it may keep what it had (at most a partial message) and this read.
                    check_buffered(c, &next, max_message, max_message + bytes.len());
                    Some(next)
                }
            }
            4 => {
                let c = &mut clients[who];
                c.woken.store(false, Ordering::SeqCst);
                let next = c.session.on_wake(&mut c.out, now);
                Some(resume(c, next, now, max_message))
            }
            5 => {
                // The driver wrote everything out: the stall ends and `on_drained` follows.
                let c = &mut clients[who];
                c.stalled = false;
                if c.out.is_empty() {
                    None
                } else {
                    let bytes = c.out.take_all();
                    check_lines(&bytes, &labels);
                    let next = c.session.on_drained(&mut c.out, now);
                    Some(resume(c, next, now, max_message))
                }
            }
            6 => {
                let c = &mut clients[who];
                Some(c.session.on_eof(&mut c.input, &mut c.out, now))
            }
            7 => {
                // A reset: the driver drops the session without another call.
                clients.remove(who);
                None
            }
            8 => {
                if clients.len() < 4 {
                    join(&mut clients, &mut labels, next_port, op & 0x40 != 0);
                    next_port += 1;
                }
                None
            }
            9 => {
                clients[who].stalled = true;
                None
            }
            10 => {
                // Deliver every pending wake-up, as the drivers do on their threads; a session
                // that closes is dropped.
                let mut closed = Vec::new();
                for (i, c) in clients.iter_mut().enumerate() {
                    if c.woken.swap(false, Ordering::SeqCst) {
                        let next = c.session.on_wake(&mut c.out, now);
                        let next = resume(c, next, now, max_message);
                        flush(c, &labels);
                        if next.is_close() {
                            closed.push(i);
                        }
                    }
                }
                for i in closed.into_iter().rev() {
                    clients.remove(i);
                }
                None
            }
            _ => {
                // Graceful shutdown: the service first, then every session; all of them close.
                svc.on_shutdown();
                for c in clients.iter_mut() {
                    let next = c.session.on_shutdown(&mut c.out, now);
                    assert!(next.is_close(), "chat sessions close at shutdown");
                    c.stalled = false;
                    flush(c, &labels);
                }
                clients.clear();
                assert!(svc.room().is_empty(), "the room empties at shutdown");
                return;
            }
        };
        if let Some(next) = next {
            if who < clients.len() {
                let c = &mut clients[who];
                flush(c, &labels);
                if next.is_close() {
                    clients.remove(who);
                }
            }
        }
        assert_eq!(
            svc.room().len(),
            clients.len(),
            "the room counts live sessions"
        );
    }
    drop(clients);
    assert!(svc.room().is_empty(), "every session left the room");
}

/// Property 3 after `on_input`: at most `max_message` left, or `paused_bound` if it paused.
fn check_buffered(c: &Client, next: &tincan::Next, max_message: usize, paused_bound: usize) {
    if next.is_close() {
        return;
    }
    let bound = if c.session.reading_paused() {
        max_message.max(paused_bound)
    } else {
        max_message
    };
    assert!(
        c.input.len() <= bound,
        "{} bytes left buffered with max_message {max_message} (paused: {})",
        c.input.len(),
        c.session.reading_paused()
    );
}

/// As the drivers do after a session call: a session that held input back and is no longer
/// paused is handed that input again.
fn resume(c: &mut Client, next: tincan::Next, now: Instant, max_message: usize) -> tincan::Next {
    if next.is_close() || c.input.is_empty() || c.session.reading_paused() {
        return next;
    }
    // What it held back is all it is handed: the buffer cannot grow.
    let held = c.input.len();
    let next = c.session.on_input(&mut c.input, &mut c.out, now);
    check_buffered(c, &next, max_message, held);
    next
}

/// The driver writes what it can: everything, unless the client is stalled.
fn flush(c: &mut Client, labels: &[String]) {
    if !c.stalled {
        let bytes = c.out.take_all();
        check_lines(&bytes, labels);
    }
}

/// Property 2 for one batch of output.
fn check_lines(bytes: &[u8], labels: &[String]) {
    if bytes.is_empty() {
        return;
    }
    assert_eq!(
        bytes.last(),
        Some(&0),
        "output ends in the middle of a line"
    );
    for line in bytes[..bytes.len() - 1].split(|&b| b == 0) {
        let text = std::str::from_utf8(line).expect("a chat line is UTF-8");
        if text.starts_with("* ") {
            continue;
        }
        let (label, _) = text
            .split_once(": ")
            .unwrap_or_else(|| panic!("a line that is neither notice nor message: {text:?}"));
        assert!(
            labels.iter().any(|l| l == label) || check_nick(label) == Ok(label),
            "a message under a label nobody has: {text:?}"
        );
    }
}
