//! The tincanchat room (the book's chat protocol): every message a client sends goes, as `"{label}: {msg}\0"`, to
//! every connected client including the sender, in one global order, through bounded queues.
//!
//! How a message travels:
//! 1. A [`ChatSession`] cuts NUL-terminated UTF-8 messages off its input with the shared
//!    [`Decoder`] (`--max-message` bounds what it buffers; invalid UTF-8 or an over-long message
//!    closes that client alone, with a logged reason).
//! 2. It encodes the line once into a shared [`Bytes`] and hands it to the [`Room`], which pushes
//!    it onto every member's queue *while holding the room lock*. Because every push of every
//!    message happens under that one lock, all queues receive messages in the same order: that
//!    is the global order.
//! 3. A member whose queue went from "nothing pending" to "something pending" is woken through
//!    its [`Waker`]; one with a wake already pending is not woken again (coalescing: 200 clients
//!    sending 200 messages must not cost 8 million wake-ups). Wakers are called after the lock
//!    is released, so a driver's waker may take its own locks freely.
//! 4. On [`Session::on_wake`] (and [`Session::on_drained`]) the session moves queued messages
//!    into its [`Outbox`] while the outbox holds less than [`OUTBOX_TARGET`]; the rest wait in the
//!    room queue, which is the bound (`--max-queue`, in bytes). A member whose queue would pass
//!    it is dropped: its queue is freed at once, a warning is logged, and its session closes
//!    (with a final notice if its outbox is empty, i.e. the socket may still take it).
//! 5. Back-pressure on senders: after its own input, a session moves *everything* queued into
//!    its outbox. A client that sends faster than it reads thus has an outbox over the driver's
//!    high-water mark, and the driver stops reading from it until it catches up. A sender
//!    that reads fast but outruns *another* member is paused too ([`Session::reading_paused`]):
//!    while a member that is still reading (it took lines within `--max-stall`) has more than
//!    half of `--max-queue` waiting, no more input is read from the sender, which is woken when
//!    every such member is down to a quarter. So the room runs at the pace of its slowest
//!    reading member instead of dropping it; a member that stops reading holds the room for at
//!    most `--max-stall`, then overflows and is dropped. Per member, memory is bounded by
//!    `--max-queue` (queue) plus `--max-queue` and one driver read (outbox).
//!
//! With `--redis`, the room spans every instance on one Redis and room name: a session hands
//! what its client says to the room's Redis link instead of broadcasting it, and the link's
//! reader broadcasts what comes back from the stream, so steps 2 to 5 hold per instance in the
//! stream's order ([`redis_link`] says how).
//!
//! What the server itself says is defined in one place, [`Notice`]; every such line starts with
//! `"* "`. Commands: a message that is exactly `/who`, or `/nick NAME`; anything else (including
//! other text starting with `/`) is an ordinary message.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::framing::{Decoder, FrameError, Framing};
use super::{Needs, Next, Outbox, Peer, PeerAddr, ReadBuf, Service, Session, Waker};

mod nick;
pub mod redis_link;
mod room;
mod session;
pub use redis_link::RedisRoom;
use redis_link::{Link, Post};

pub use nick::{check_nick, MAX_NICK_CHARS};
pub use room::Room;
use room::*;
pub use session::ChatSession;

/// The session stops moving messages from its room queue into its outbox once the outbox holds
/// this many bytes; the rest follow on `on_drained`. This keeps the per-connection outbox small
/// so that `--max-queue` is the real bound on what a slow reader pins.
pub const OUTBOX_TARGET: usize = 64 * 1024;

/// Names a `/who` answer lists at most, so that the answer of a crowded room stays one modest
/// line (well under the smallest `--max-queue` allowed).
pub const WHO_MAX_NAMES: usize = 100;

/// The room's limits and switches (`tincan chat` flags).
#[derive(Clone, Debug)]
pub struct ChatConfig {
    /// Longest message a client may send, in bytes, NUL excluded (`--max-message`).
    pub max_message: usize,
    /// Bytes of broadcast lines that may wait in one member's queue before the member is dropped
    /// as too slow (`--max-queue`). Counted per member even though the bytes are shared, and
    /// with each line's handle (`queued_cost`).
    pub max_queue: usize,
    /// Announce joins, leaves and renames to the room (`--notices on|off`).
    pub notices: bool,
    /// How long a member that is behind but reading holds the senders back (`--max-stall`):
    /// one that has taken nothing for longer no longer does, and is dropped if its queue
    /// overflows.
    pub max_stall: Duration,
    /// Serve one room with every instance on this Redis and room name (`--redis`, `--room`).
    pub redis: Option<RedisRoom>,
}

impl ChatConfig {
    /// A member with more than this queued is behind: senders pause for it while it reads.
    fn pause_mark(&self) -> usize {
        self.max_queue / 2
    }

    /// Paused senders go on once every member that held them has this much or less queued.
    fn resume_mark(&self) -> usize {
        self.max_queue / 4
    }
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            max_message: 64 * 1024,
            max_queue: 2 * 1024 * 1024,
            notices: true,
            max_stall: Duration::from_secs(1),
            redis: None,
        }
    }
}

/// Every line the server itself sends. Each starts with `"* "` so that clients (and people) can
/// tell it from a relayed message, whose label never starts with `*` (see [`check_nick`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice<'a> {
    /// `* 127.0.0.1:5555 joined`, to everyone (with `--notices on`).
    Joined(&'a str),
    /// `* alice left`, to everyone (with `--notices on`).
    Left(&'a str),
    /// `* 127.0.0.1:5555 is now known as alice`, to everyone (with `--notices on`; without, to
    /// the renamed client only, so it knows the name took).
    Renamed { old: &'a str, new: &'a str },
    /// `* 3 connected: alice, bob, 127.0.0.1:5557`, the answer to `/who`, to the asker only.
    /// At most [`WHO_MAX_NAMES`] names are listed, then `… and N more`.
    Who { total: usize, names: &'a [String] },
    /// `* nick refused: …`, to the asker only.
    NickRefused(&'a str),
    /// `* disconnected: …`, the last line a dropped or refused client gets (if it can).
    Disconnected(&'a str),
    /// `* server shutting down`, to everyone, when the server stops gracefully.
    ShuttingDown,
    /// `* not delivered: …`, to a sender whose message could not be posted to Redis.
    NotDelivered(&'a str),
    /// `* room offline: …`, to everyone on this instance, once, when its Redis link is lost.
    Offline(&'a str),
    /// `* room back online`, to everyone on this instance, once the link is back.
    Online,
    /// `* missed 12 messages: …`, when this instance fell further behind than the stream keeps.
    Missed(u64),
}

impl fmt::Display for Notice<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Joined(who) => write!(f, "* {who} joined"),
            Notice::Left(who) => write!(f, "* {who} left"),
            Notice::Renamed { old, new } => write!(f, "* {old} is now known as {new}"),
            Notice::Who { total, names } => {
                write!(f, "* {total} connected: {}", names.join(", "))?;
                if *total > names.len() {
                    write!(f, " and {} more", total - names.len())?;
                }
                Ok(())
            }
            Notice::NickRefused(why) => write!(f, "* nick refused: {why}"),
            Notice::Disconnected(why) => write!(f, "* disconnected: {why}"),
            Notice::ShuttingDown => f.write_str("* server shutting down"),
            Notice::NotDelivered(why) => write!(f, "* not delivered: {why}"),
            Notice::Offline(why) => write!(
                f,
                "* room offline: {why}; messages are not delivered until it is back"
            ),
            Notice::Online => f.write_str("* room back online"),
            Notice::Missed(n) => write!(
                f,
                "* missed {n} message{}: they were older than the room's history (--redis-history) \
                 when this server could read again",
                if *n == 1 { "" } else { "s" }
            ),
        }
    }
}

/// Put one line on the wire: UTF-8 and a NUL (tincanchat framing), encoded once and shared.
pub(crate) fn wire(text: &str) -> Bytes {
    let mut v = Vec::with_capacity(text.len() + 1);
    Framing::Null.encode(text.as_bytes(), &mut v);
    Bytes::from(v)
}

/// The chat service: one [`Room`], one [`ChatSession`] per client.
pub struct ChatService {
    room: Arc<Room>,
}

impl ChatService {
    pub fn new(config: ChatConfig) -> ChatService {
        ChatService {
            room: Arc::new(Room {
                link: config.redis.clone().map(Link::new),
                config,
                inner: Mutex::new(RoomInner::default()),
            }),
        }
    }

    pub fn room(&self) -> &Arc<Room> {
        &self.room
    }
}

impl Service for ChatService {
    type Session = ChatSession;

    fn open(&self, peer: &Peer, waker: Waker) -> ChatSession {
        let label = match &peer.remote {
            PeerAddr::Tcp(a) => a.to_string(),
            PeerAddr::Unix(_) => String::new(),
        };
        let (id, serial, label) = self.room.join(label, waker);
        tracing::debug!("chat client {label} joined (member {id})");
        ChatSession {
            room: self.room.clone(),
            id,
            serial,
            label,
            decoder: Decoder::new(Framing::Null, self.room.config.max_message),
            batch: Vec::new(),
            paused: false,
        }
    }

    /// One room in one memory, every member connected at once; with a Redis link, the room is
    /// in Redis and each process (a prefork worker too) is one more instance of it.
    fn needs(&self) -> Needs {
        Needs {
            name: "the chat room",
            concurrent: true,
            shared_memory: self.room.link.is_none(),
        }
    }

    /// Post what the last sessions left behind (their leave notices) before the process ends.
    fn on_stopped(&self) {
        if let Some(link) = &self.room.link {
            link.stop(Duration::from_secs(2));
        }
    }

    fn on_shutdown(&self) {
        self.room.with(|room, inner, wakes| {
            inner.shutting_down = true;
            room.broadcast_locked(inner, &wire(&Notice::ShuttingDown.to_string()), None, wakes);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A hand-driven client: its session, its outbox, and how often it was woken.
    struct Client {
        s: ChatSession,
        out: Outbox,
        wakes: Arc<AtomicUsize>,
    }

    fn peer(port: u16) -> Peer {
        let a: SocketAddr = ([127, 0, 0, 1], port).into();
        Peer {
            remote: PeerAddr::Tcp(a),
            local: PeerAddr::Tcp(([127, 0, 0, 1], 4040).into()),
        }
    }

    fn join(svc: &ChatService, port: u16) -> Client {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        let s = svc.open(
            &peer(port),
            Waker::new(move || {
                w.fetch_add(1, Ordering::SeqCst);
            }),
        );
        Client {
            s,
            out: Outbox::new(),
            wakes,
        }
    }

    impl Client {
        fn send(&mut self, bytes: &[u8]) -> Next {
            self.send_at(bytes, Instant::now())
        }

        /// Send at `now`: past `max_stall` after a member last read, it holds nobody.
        fn send_at(&mut self, bytes: &[u8], now: Instant) -> Next {
            let mut rb = ReadBuf::from_bytes(bytes);
            self.s.on_input(&mut rb, &mut self.out, now)
        }

        fn wake(&mut self) -> Next {
            self.s.on_wake(&mut self.out, Instant::now())
        }

        /// Wake the session and return the lines it queued, NULs stripped.
        fn lines(&mut self) -> Vec<String> {
            self.wake();
            split(&self.out.take_all())
        }

        fn woken(&self) -> usize {
            self.wakes.load(Ordering::SeqCst)
        }
    }

    fn split(bytes: &[u8]) -> Vec<String> {
        assert!(
            bytes.is_empty() || bytes.ends_with(&[0]),
            "every line ends in NUL"
        );
        bytes
            .split(|&b| b == 0)
            .filter(|l| !l.is_empty())
            .map(|l| String::from_utf8(l.to_vec()).unwrap())
            .collect()
    }

    fn quiet() -> ChatService {
        ChatService::new(ChatConfig {
            notices: false,
            ..ChatConfig::default()
        })
    }

    #[test]
    fn a_message_reaches_every_client_including_the_sender() {
        let svc = quiet();
        let mut a = join(&svc, 5001);
        let mut b = join(&svc, 5002);
        a.send(b"hello\0");
        assert_eq!(split(&a.out.take_all()), vec!["127.0.0.1:5001: hello"]);
        assert_eq!(b.lines(), vec!["127.0.0.1:5001: hello"]);
    }

    #[test]
    fn partial_frames_wait_and_many_frames_in_one_read_come_out_in_order() {
        let svc = quiet();
        let mut a = join(&svc, 5001);
        let mut rb = ReadBuf::new();
        rb.extend(b"one\0tw");
        a.s.on_input(&mut rb, &mut a.out, Instant::now());
        assert_eq!(rb.data(), b"tw", "the partial frame stays in the buffer");
        rb.extend(b"o\0three\0");
        a.s.on_input(&mut rb, &mut a.out, Instant::now());
        assert!(rb.is_empty());
        assert_eq!(
            split(&a.out.take_all()),
            vec![
                "127.0.0.1:5001: one",
                "127.0.0.1:5001: two",
                "127.0.0.1:5001: three"
            ]
        );
    }

    #[test]
    fn interleaved_senders_are_seen_in_the_same_order_by_everyone() {
        let svc = quiet();
        let mut cs: Vec<Client> = (0..5).map(|i| join(&svc, 6000 + i)).collect();
        for round in 0..20 {
            for (i, c) in cs.iter_mut().enumerate() {
                // Leave the sender's own copy queued in the room, like the others'.
                let mut rb = ReadBuf::from_bytes(format!("m{round}-{i}\0").as_bytes());
                let mut scratch = Outbox::new();
                c.s.on_input(&mut rb, &mut scratch, Instant::now());
                c.out.push_bytes(&scratch.take_all());
            }
        }
        let seqs: Vec<Vec<String>> = cs
            .iter_mut()
            .map(|c| {
                let mut v = split(&c.out.take_all());
                v.extend(c.lines());
                v
            })
            .collect();
        assert_eq!(seqs[0].len(), 100);
        for s in &seqs[1..] {
            assert_eq!(s, &seqs[0]);
        }
    }

    #[test]
    fn wake_ups_are_coalesced_until_the_session_empties_its_queue() {
        let svc = quiet();
        let mut a = join(&svc, 5001);
        let b = join(&svc, 5002);
        let before = b.woken();
        for _ in 0..100 {
            a.send(b"x\0");
        }
        assert_eq!(b.woken() - before, 1, "one wake for a burst");
        assert_eq!(a.woken(), 0, "a sender is not woken for its own messages");
        let mut b = b;
        assert_eq!(b.lines().len(), 100);
        a.send(b"y\0");
        assert_eq!(b.woken() - before, 2, "an emptied queue is woken again");
    }

    #[test]
    fn the_outbox_is_filled_to_its_target_and_the_rest_follows_on_drained() {
        let svc = quiet();
        let mut a = join(&svc, 5001);
        let mut b = join(&svc, 5002);
        let msg = vec![b'z'; 1000];
        let mut input = msg.clone();
        input.push(0);
        for _ in 0..200 {
            a.send(&input);
            a.out.take_all();
        }
        b.wake();
        let first = b.out.len();
        assert!(
            (OUTBOX_TARGET..OUTBOX_TARGET + 2000).contains(&first),
            "{first}"
        );
        let mut total = first;
        b.out.take_all();
        while b.s.on_drained(&mut b.out, Instant::now()) == Next::CONTINUE && !b.out.is_empty() {
            total += b.out.len();
            b.out.take_all();
        }
        assert_eq!(total, 200 * ("127.0.0.1:5001: ".len() + 1001));
    }

    #[test]
    fn a_sender_takes_its_whole_queue_into_its_outbox_so_the_driver_throttles_its_input() {
        let svc = quiet();
        let mut a = join(&svc, 5001);
        let mut b = join(&svc, 5002);
        let mut input = vec![b'z'; 1000];
        input.push(0);
        for _ in 0..200 {
            a.send(&input);
            a.out.take_all();
        }
        // b never read: 200 KB wait for it. Its next message takes all of it, past the target.
        b.send(b"me too\0");
        assert!(b.out.len() > 3 * OUTBOX_TARGET, "{}", b.out.len());
        assert!(split(&b.out.take_all())
            .last()
            .unwrap()
            .ends_with(": me too"));
    }

    #[test]
    fn a_client_that_does_not_read_is_dropped_when_its_queue_passes_the_limit() {
        let svc = ChatService::new(ChatConfig {
            max_queue: 10_000,
            notices: false,
            ..ChatConfig::default()
        });
        let mut a = join(&svc, 5001);
        let mut slow = join(&svc, 5002);
        let mut input = vec![b'q'; 500];
        input.push(0);
        // Fill the slow client's outbox to its target first, as a stalled socket would.
        for _ in 0..140 {
            a.send(&input);
            a.out.take_all();
            assert_eq!(slow.wake(), Next::CONTINUE);
        }
        assert!(slow.out.len() >= OUTBOX_TARGET);
        let woken = slow.woken();
        // The slow member, reading until its outbox filled, has paused the sender; past
        // --max-stall, a member whose socket takes nothing holds it no more.
        let later = Instant::now() + Duration::from_secs(2);
        a.s.on_timer(&mut a.out, later);
        assert!(!a.s.reading_paused());
        for _ in 0..30 {
            a.send_at(&input, later);
            assert!(!a.s.reading_paused());
            a.out.take_all();
        }
        assert!(
            slow.woken() > woken,
            "a dropped member is woken even with a wake pending"
        );
        assert_eq!(
            slow.wake(),
            Next::Close,
            "a stalled socket is closed at once"
        );
        assert!(slow.out.is_empty(), "its memory is released");
        // Everyone else carries on.
        a.send(b"still here\0");
        assert_eq!(split(&a.out.take_all()), vec!["127.0.0.1:5001: still here"]);
    }

    /// A burst from one client (a paste) must not cost the room a member that reads, only
    /// slower than the burst arrives: the sender pauses while a reader is behind, and goes on
    /// once it has caught up. Found by an outside pass: 20 messages of 65,000 bytes dropped
    /// every listener under the threaded model.
    /// A room with a 10,000-byte `--max-queue`, a sender, and a second member that pulled at
    /// `t0` (it is reading) but whose socket is now full (its outbox at the target), so lines
    /// wait in its room queue; and a 1,000-byte message (1,017 bytes as a line, 1,049 queued).
    fn room_with_a_full_reader() -> (ChatService, Instant, Client, Client, Vec<u8>) {
        let svc = ChatService::new(ChatConfig {
            max_queue: 10_000,
            notices: false,
            ..ChatConfig::default()
        });
        let a = join(&svc, 5001);
        let mut reader = join(&svc, 5002);
        let t0 = Instant::now();
        reader.s.on_wake(&mut reader.out, t0);
        reader.out.push_bytes(&vec![b'x'; OUTBOX_TARGET]);
        let mut msg = vec![b'q'; 1000];
        msg.push(0);
        (svc, t0, a, reader, msg)
    }

    #[test]
    fn a_sender_pauses_while_a_reading_member_is_behind_and_resumes_when_it_catches_up() {
        let (_svc, t0, mut a, mut reader, msg) = room_with_a_full_reader();
        // Seven messages in one read: five go out (5,245 bytes wait for the reader, past half
        // its queue), then the sender pauses with the last two still in its input, far below
        // the drop at 10,000.
        let mut input = ReadBuf::from_bytes(&msg.repeat(7));
        let next = a.s.on_input(&mut input, &mut a.out, t0);
        assert!(a.s.reading_paused());
        assert_eq!(input.len(), 2 * msg.len(), "the rest waits, unread");
        // It asks to look again after --max-stall.
        assert_eq!(next, Next::wake_at(t0 + Duration::from_secs(1)));
        assert_eq!(split(&a.out.take_all()).len(), 5);
        let woken = a.woken();
        // The reader's socket drains; it pulls below a quarter of the queue: a is woken, and on
        // its wake goes on (the driver then hands it its input again).
        reader.out.take_all();
        assert!(!reader.s.on_drained(&mut reader.out, t0).is_close());
        assert!(a.woken() > woken, "the paused sender is woken");
        assert_eq!(a.s.on_wake(&mut a.out, t0), Next::CONTINUE);
        assert!(!a.s.reading_paused());
        assert_eq!(a.s.on_input(&mut input, &mut a.out, t0), Next::CONTINUE);
        assert!(input.is_empty());
        assert_eq!(split(&reader.out.take_all()).len(), 5);
        assert_eq!(reader.lines().len(), 2);
    }

    /// A sender woken with others but still held (another sender got there first) stays
    /// registered, so the next catch-up wakes it rather than its timer. Found in review.
    #[test]
    fn a_sender_still_held_after_its_wake_is_woken_at_the_next_catch_up() {
        let (svc, t0, mut a, mut reader, msg) = room_with_a_full_reader();
        let mut b = join(&svc, 5003);
        b.lines();
        let mut input = ReadBuf::from_bytes(&msg.repeat(6));
        a.s.on_input(&mut input, &mut a.out, t0);
        let mut b_input = ReadBuf::from_bytes(&msg);
        b.s.on_input(&mut b_input, &mut b.out, t0);
        assert!(a.s.reading_paused() && b.s.reading_paused());
        // The reader catches up; both are woken. a goes first and puts three lines in the
        // reader's queue (3,147 bytes: over a quarter, under half).
        reader.out.take_all();
        reader.s.on_drained(&mut reader.out, t0);
        a.s.on_wake(&mut a.out, t0);
        let mut more = ReadBuf::from_bytes(&msg.repeat(3));
        a.s.on_input(&mut more, &mut a.out, t0);
        assert!(!a.s.reading_paused());
        // b looks: still held. When the reader catches up again, b is woken.
        b.s.on_wake(&mut b.out, t0);
        assert!(b.s.reading_paused());
        let woken = b.woken();
        reader.out.take_all();
        reader.s.on_drained(&mut reader.out, t0);
        assert!(b.woken() > woken, "b was forgotten");
        b.s.on_wake(&mut b.out, t0);
        assert!(!b.s.reading_paused());
    }

    /// `--max-queue` bounds memory, not only text: each queued line also costs the handle its
    /// queue keeps. Counting bytes alone, a member that never read short lines held about eight
    /// times the limit (an outside pass: 840 MB for 100 such members at the default 1 MiB).
    #[test]
    fn short_lines_count_their_queue_handles_against_max_queue() {
        let (_svc, t0, mut a, mut stalled, _) = room_with_a_full_reader();
        let late = t0 + Duration::from_secs(2);
        a.s.on_timer(&mut a.out, late);
        // "127.0.0.1:5001: a" and its NUL: 18 bytes, 50 with the handle; 10,000 hold 200.
        for _ in 0..200 {
            a.send_at(b"a\0", late);
            a.out.take_all();
        }
        assert_eq!(stalled.s.on_wake(&mut stalled.out, late), Next::CONTINUE);
        a.send_at(b"a\0", late);
        assert_eq!(stalled.s.on_wake(&mut stalled.out, late), Next::Close);
    }

    /// A member that stops reading holds the senders only for `max_stall`; after that it is the
    /// one that overflows and is dropped, and the room goes on.
    #[test]
    fn a_member_that_stopped_reading_holds_nobody_past_max_stall() {
        let (_svc, t0, mut a, mut stalled, msg) = room_with_a_full_reader();
        let mut input = ReadBuf::from_bytes(&msg.repeat(6));
        a.s.on_input(&mut input, &mut a.out, t0);
        assert!(a.s.reading_paused());
        // Still within --max-stall: still paused.
        let early = t0 + Duration::from_millis(900);
        assert_eq!(
            a.s.on_timer(&mut a.out, early),
            Next::wake_at(early + Duration::from_secs(1))
        );
        assert!(a.s.reading_paused());
        // Past it, the stalled member no longer counts.
        let late = t0 + Duration::from_millis(1100);
        assert_eq!(a.s.on_timer(&mut a.out, late), Next::CONTINUE);
        assert!(!a.s.reading_paused());
        input.extend(&msg.repeat(4));
        a.s.on_input(&mut input, &mut a.out, late);
        assert!(!a.s.reading_paused());
        assert!(input.is_empty());
        assert_eq!(stalled.s.on_wake(&mut stalled.out, late), Next::Close);
    }

    #[test]
    fn a_dropped_client_with_an_empty_outbox_is_told_why() {
        let svc = ChatService::new(ChatConfig {
            max_queue: 100,
            notices: false,
            ..ChatConfig::default()
        });
        let mut a = join(&svc, 5001);
        let mut slow = join(&svc, 5002);
        let later = Instant::now() + Duration::from_secs(2);
        for _ in 0..10 {
            a.send_at(b"0123456789\0", later);
        }
        assert_eq!(slow.wake(), Next::CloseAfterFlush);
        let lines = split(&slow.out.take_all());
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("* disconnected: "), "{lines:?}");
    }

    #[test]
    fn a_message_at_the_limit_passes_and_one_byte_over_closes_only_its_sender() {
        let svc = ChatService::new(ChatConfig {
            max_message: 10,
            notices: false,
            ..ChatConfig::default()
        });
        let mut a = join(&svc, 5001);
        let mut b = join(&svc, 5002);
        assert_eq!(a.send(b"0123456789\0"), Next::CONTINUE);
        assert_eq!(a.send(b"0123456789X\0"), Next::CloseAfterFlush);
        let lines = split(&a.out.take_all());
        assert_eq!(lines[0], "127.0.0.1:5001: 0123456789");
        assert!(lines[1].contains("longer than 10 bytes"), "{lines:?}");
        assert_eq!(
            b.lines(),
            vec!["127.0.0.1:5001: 0123456789"],
            "b saw nothing odd"
        );
    }

    #[test]
    fn invalid_utf8_closes_its_sender_and_nobody_else_notices() {
        let svc = quiet();
        let mut a = join(&svc, 5001);
        let mut b = join(&svc, 5002);
        assert_eq!(a.send(b"ok\xff\xfe\0"), Next::CloseAfterFlush);
        assert!(split(&a.out.take_all())[0].contains("not valid UTF-8"));
        assert!(b.lines().is_empty());
    }

    #[test]
    fn join_leave_and_rename_notices_go_to_everyone() {
        let svc = ChatService::new(ChatConfig::default());
        let mut a = join(&svc, 5001);
        assert_eq!(a.lines(), vec!["* 127.0.0.1:5001 joined"]);
        let mut b = join(&svc, 5002);
        assert_eq!(a.lines(), vec!["* 127.0.0.1:5002 joined"]);
        assert_eq!(b.lines(), vec!["* 127.0.0.1:5002 joined"]);
        b.send(b"/nick bob\0");
        b.send(b"hi\0");
        assert_eq!(
            a.lines(),
            vec!["* 127.0.0.1:5002 is now known as bob", "bob: hi"]
        );
        drop(b);
        assert_eq!(a.lines(), vec!["* bob left"]);
        assert_eq!(svc.room().len(), 1);
    }

    #[test]
    fn notices_off_keeps_the_room_quiet_but_still_confirms_a_rename_to_its_owner() {
        let svc = quiet();
        let mut a = join(&svc, 5001);
        let mut b = join(&svc, 5002);
        assert!(a.lines().is_empty());
        b.send(b"/nick bob\0");
        assert_eq!(
            split(&b.out.take_all()),
            vec!["* 127.0.0.1:5002 is now known as bob"]
        );
        drop(b);
        assert!(a.lines().is_empty());
    }

    #[test]
    fn who_answers_only_the_asker() {
        let svc = quiet();
        let mut a = join(&svc, 5001);
        let mut b = join(&svc, 5002);
        a.send(b"/nick alice\0");
        b.send(b"/who\0");
        assert_eq!(
            split(&b.out.take_all()),
            vec!["* 2 connected: alice, 127.0.0.1:5002"]
        );
        a.out.take_all();
        assert!(a.lines().is_empty());
    }

    #[test]
    fn who_in_a_crowded_room_lists_the_first_names_and_counts_the_rest() {
        let svc = quiet();
        let mut cs: Vec<Client> = (0..WHO_MAX_NAMES as u16 + 5)
            .map(|i| join(&svc, 7000 + i))
            .collect();
        cs[0].send(b"/who\0");
        let answer = split(&cs[0].out.take_all()).remove(0);
        assert!(answer.starts_with(&format!(
            "* {} connected: 127.0.0.1:7000, ",
            WHO_MAX_NAMES + 5
        )));
        assert!(answer.ends_with(" and 5 more"), "{answer}");
        assert_eq!(answer.matches(", ").count(), WHO_MAX_NAMES - 1);
    }

    #[test]
    fn taking_the_name_one_already_has_announces_nothing() {
        let svc = ChatService::new(ChatConfig::default());
        let mut a = join(&svc, 5001);
        let mut b = join(&svc, 5002);
        a.send(b"/nick bob\0");
        a.out.take_all();
        b.lines();
        a.send(b"/nick bob\0");
        assert_eq!(
            split(&a.out.take_all()),
            vec!["* nick refused: you are already bob"]
        );
        assert!(b.lines().is_empty(), "nobody else hears of it");
    }

    #[test]
    fn bad_and_taken_nicks_are_refused_to_the_asker_only() {
        let svc = quiet();
        let mut a = join(&svc, 5001);
        let mut b = join(&svc, 5002);
        a.send(b"/nick alice\0");
        a.out.take_all();
        for (cmd, why) in [
            ("/nick alice", "alice is taken"),
            ("/nick Alice", "Alice is taken"),
            ("/nick ALICE", "ALICE is taken"),
            ("/nick 127.0.0.1:5002", "':'"),
            ("/nick", "usage"),
            ("/nick ", "usage"),
            ("/nick 127.0.0.1:9", "':'"),
            ("/nick *server", "'*'"),
            ("/nick a\tb", "control"),
            ("/nick a\u{200b}lice", "invisible"),
            ("/nick \u{202e}ecila", "direction"),
            ("/nick x\u{feff}", "invisible"),
            ("/nick  x", "spaces"),
            ("/nick a\u{2028}b", "line breaks"),
            ("/nick \u{ff0a}srv", "look-alike"),
            ("/nick e\u{301}\u{301}\u{301}", "combining"),
        ] {
            let mut input = cmd.as_bytes().to_vec();
            input.push(0);
            b.send(&input);
            let lines = split(&b.out.take_all());
            assert_eq!(lines.len(), 1, "{cmd}: {lines:?}");
            assert!(
                lines[0].starts_with("* nick refused: ") && lines[0].contains(why),
                "{cmd}: {lines:?}"
            );
        }
        let long = format!("/nick {}\0", "é".repeat(MAX_NICK_CHARS + 1));
        b.send(long.as_bytes());
        assert!(split(&b.out.take_all())[0].contains("at most"));
        // Two combining marks on a letter are ordinary writing (Vietnamese has them).
        b.send("/nick e\u{302}\u{301}\0".as_bytes());
        assert!(split(&b.out.take_all())[0].contains("is now known as"));
        let ok = format!("/nick {}\0", "é".repeat(MAX_NICK_CHARS));
        b.send(ok.as_bytes());
        assert!(split(&b.out.take_all())[0].contains("is now known as"));
        assert!(a.lines().is_empty());
        // Text that only looks like a command is a message.
        b.send(b"/nickname\0");
        assert!(a.lines()[0].ends_with(": /nickname"));
    }

    #[test]
    fn shutdown_sends_the_farewell_and_closes_after_flushing() {
        let svc = quiet();
        let mut a = join(&svc, 5001);
        let b = join(&svc, 5002);
        svc.on_shutdown();
        let next = a.s.on_shutdown(&mut a.out, Instant::now());
        assert_eq!(next, Next::CloseAfterFlush);
        assert_eq!(split(&a.out.take_all()), vec!["* server shutting down"]);
        drop(b);
        assert!(a.lines().is_empty(), "no leave notices while shutting down");
    }

    #[test]
    fn eof_mid_message_closes_quietly_and_the_client_leaves() {
        let svc = ChatService::new(ChatConfig::default());
        let mut a = join(&svc, 5001);
        let mut b = join(&svc, 5002);
        a.lines();
        let mut rb = ReadBuf::from_bytes(b"half a mess");
        assert_eq!(
            b.s.on_input(&mut rb, &mut b.out, Instant::now()),
            Next::CONTINUE
        );
        assert_eq!(
            b.s.on_eof(&mut rb, &mut b.out, Instant::now()),
            Next::CloseAfterFlush
        );
        drop(b);
        assert_eq!(a.lines(), vec!["* 127.0.0.1:5002 left"]);
    }

    #[test]
    fn the_room_needs_every_client_at_once_in_one_memory() {
        let n = quiet().needs();
        assert!(n.concurrent && n.shared_memory);
        assert_eq!(n.name, "the chat room");
    }

    /// With Redis holding the room, each process is one more instance: prefork may run it.
    #[test]
    fn a_room_on_redis_needs_no_shared_memory() {
        let n = ChatService::new(ChatConfig {
            redis: Some(RedisRoom {
                url: "redis://127.0.0.1:1".into(),
                room: "lobby".into(),
                history: 10,
            }),
            ..ChatConfig::default()
        })
        .needs();
        assert!(n.concurrent && !n.shared_memory);
    }

    #[test]
    fn freed_member_slots_are_reused() {
        let svc = quiet();
        let a = join(&svc, 5001);
        let id = a.s.id;
        drop(a);
        let b = join(&svc, 5002);
        assert_eq!(b.s.id, id);
        assert_eq!(svc.room().len(), 1);
    }
}
