//! One room across many instances (`tincan chat --redis URL --room NAME`): every process on the
//! same Redis and room name serves one room, in the order of one Redis Stream.
//!
//! How a message travels between instances:
//! 1. A session hands what its client said (a message, `/nick`, `/who`) and its joins and leaves
//!    to this instance's **writer** as a [`Post`], through a channel; it never waits for Redis.
//! 2. The writer `XADD`s messages and notices to the stream `tincan:chat:{room}:stream`
//!    (`MAXLEN ~ --redis-history`), pipelining whatever has piled up into one round trip.
//! 3. The **reader** of every instance follows the stream with `XREAD BLOCK` from the last id it
//!    saw and hands each entry to its local [`Room`] as one broadcast. So every client on every
//!    instance gets every line in the stream's order, its own included: a sender sees its
//!    message when it comes back from Redis, not before.
//!
//! Nothing lost, nothing repeated:
//! - A link that breaks is dialled again at once, then with backoff (50 ms doubling to 2 s).
//!   The reader resumes after the last id it saw, so entries added meanwhile still arrive. The
//!   writer posts again what it had in flight; each entry carries its instance and a number
//!   (`i`, `n`), and readers skip an entry whose number that instance has already posted, so a
//!   post whose answer was lost with the link is shown once.
//! - A post that fails on a fresh connection too is answered `* not delivered: …` to its
//!   sender; while the writer cannot reach Redis, every post is. Every client is told once when
//!   the room goes offline (a link failed again after its immediate redial) and once when both
//!   links are back.
//! - The stream keeps about `--redis-history` entries (`MAXLEN ~`). Each entry is numbered
//!   room-wide (`s`, from `INCR` in the same script as its `XADD`, so numbers follow the
//!   stream's order): a reader that finds a number skipped knows that many entries were trimmed
//!   before it could read them, and tells its clients how many they missed, where they missed
//!   them. A number lower than the last one means Redis lost the room (a restart without
//!   persistence) and counting starts again.
//!
//! Who is in the room: the sorted set `tincan:chat:{room}:who` holds `"{instance}/{member}
//! {label}"` scored by an expiry time, and a nick is the key `tincan:chat:{room}:nick:{lowercase
//! name}` (`SET NX EX`), so a nick is unique room-wide without case. The writer refreshes both
//! every [`REFRESH`] while the client is connected; an instance that dies frees its names after
//! [`TTL`] without anyone cleaning up after it.
//!
//! Why threads of the room's own, with the `redis` crate's synchronous API, rather than an
//! outbound stream of the driver (the seam's `Links`): a Redis link belongs to the room, which
//! every session of the process shares, not to one client's session, and a driver's outbound
//! stream lives and dies with the session that asked for it. Two blocking connections (one
//! parked in `XREAD BLOCK`, one posting) on two threads are the whole link; the drivers stay as
//! they are, every model gets the same link, and no tokio is involved (`default-features` off).
//! The threads start with the first client of each process, so a prefork parent stays
//! single-threaded when it forks its workers, and each worker is one more instance.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis::{Connection, RedisError, Value};

use super::{wire, Notice, Room, WHO_MAX_NAMES};

mod reader;
mod writer;

use reader::Reader;
use writer::Writer;

/// How long a name (a nick, a place in `/who`) outlives the last refresh of its instance.
pub const TTL: Duration = Duration::from_secs(30);
/// How often the writer refreshes the names of its instance's clients.
pub const REFRESH: Duration = Duration::from_secs(10);
/// How long `XREAD` waits in Redis for new entries before asking again (and looking whether the
/// room is stopping).
const BLOCK: Duration = Duration::from_millis(1000);
/// Entries one `XREAD` returns at most, and posts one pipeline carries at most.
const BATCH: usize = 512;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A reply later than this means the link is broken (the reader's wait adds [`BLOCK`]).
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Where the room lives in Redis (`--redis`, `--room`, `--redis-history`).
#[derive(Clone, Debug)]
pub struct RedisRoom {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// The room's name: instances with the same Redis and name serve one room.
    pub room: String,
    /// Entries the stream keeps, about (`MAXLEN ~`).
    pub history: u64,
}

impl RedisRoom {
    fn key(&self, what: &str) -> String {
        format!("tincan:chat:{}:{what}", self.room)
    }

    fn nick_key(&self, name: &str) -> String {
        self.key(&format!("nick:{}", name.to_lowercase()))
    }
}

/// Connect and `PING`, for the check at start: the error is the sentence a user reads.
pub fn check(room: &RedisRoom) -> Result<(), String> {
    let mut c = connect(&room.url).map_err(|e| unreachable(&room.url, &e))?;
    redis::cmd("PING")
        .query::<Value>(&mut c)
        .map(|_| ())
        .map_err(|e| unreachable(&room.url, &e))
}

/// `"cannot reach Redis at URL: WHY"`, the error at start.
pub fn unreachable(url: &str, e: &RedisError) -> String {
    let hint = if e.is_connection_refusal() {
        "; is redis-server running?"
    } else {
        ""
    };
    format!("cannot reach Redis at {url}: {}{hint}", why(e))
}

/// `"cannot reach Redis at URL (WHY)"`, for the lines clients get while serving.
fn lost(url: &str, why: &str) -> String {
    format!("cannot reach Redis at {url} ({why})")
}

/// A link failure in a few words.
fn why(e: &RedisError) -> String {
    if e.is_connection_refusal() {
        "connection refused".into()
    } else if e.is_timeout() {
        "it did not answer in time".into()
    } else if e.is_connection_dropped() {
        "the connection was closed".into()
    } else {
        e.to_string()
    }
}

/// Is this a failure of the link itself (dial again), rather than an answer from Redis?
fn is_link_failure(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

fn connect(url: &str) -> Result<Connection, RedisError> {
    let client = redis::Client::open(url)?;
    let c = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    c.set_write_timeout(Some(REPLY_TIMEOUT))?;
    c.set_read_timeout(Some(REPLY_TIMEOUT))?;
    Ok(c)
}

/// What a session asks of the writer. `id` and `serial` name the member to answer (a slot id is
/// reused; the serial is not).
pub(super) enum Post {
    Join {
        serial: u64,
        label: String,
    },
    Leave {
        serial: u64,
    },
    Message {
        id: usize,
        serial: u64,
        text: String,
    },
    Nick {
        id: usize,
        serial: u64,
        name: String,
    },
    Who {
        id: usize,
        serial: u64,
    },
}

impl Post {
    /// Bytes this post holds while it waits, counted against the senders' pause mark.
    pub(super) fn cost(&self) -> usize {
        match self {
            Post::Message { text, .. } => text.len() + 64,
            _ => 64,
        }
    }
}

/// Which of the two connections.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Reader,
    Writer,
}

#[derive(Default)]
struct State {
    reader_down: bool,
    writer_down: bool,
    /// The clients were told the room is offline, and not yet that it is back.
    told_offline: bool,
}

/// The threads of one process, started with its first client.
struct Started {
    pid: u32,
    posts: Sender<Post>,
    writer_done: Receiver<()>,
}

/// The room's link to Redis: the reader and writer threads and what they share.
pub(super) struct Link {
    pub(super) cfg: RedisRoom,
    started: Mutex<Option<Started>>,
    state: Mutex<State>,
    stopping: AtomicBool,
}

impl Link {
    pub(super) fn new(cfg: RedisRoom) -> Link {
        Link {
            cfg,
            started: Mutex::new(None),
            state: Mutex::new(State::default()),
            stopping: AtomicBool::new(false),
        }
    }

    /// Hand `post` to the writer, starting the threads if this process has none yet (a prefork
    /// worker inherits a parent's `Link` without its threads; the pid tells them apart).
    pub(super) fn post(&self, room: &Arc<Room>, post: Post) {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        let pid = std::process::id();
        if started.as_ref().is_none_or(|s| s.pid != pid) {
            *started = Some(start(room, pid));
        }
        if let Some(s) = started.as_ref() {
            // The writer only ends once `posts` is dropped, so this cannot fail while we hold it.
            let _ = s.posts.send(post);
        }
    }

    /// The server has stopped: let the writer post what it has (leave notices) for up to
    /// `limit`, and stop the reader.
    pub(super) fn stop(&self, limit: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        let started = self
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(s) = started.filter(|s| s.pid == std::process::id()) {
            drop(s.posts);
            let _ = s.writer_done.recv_timeout(limit);
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// `side` failed again right after a redial: tell every client once that the room is offline.
    fn down(&self, room: &Room, side: Side, e: &RedisError) {
        let tell = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            match side {
                Side::Reader => st.reader_down = true,
                Side::Writer => st.writer_down = true,
            }
            !std::mem::replace(&mut st.told_offline, true)
        };
        if tell {
            let why = lost(&self.cfg.url, &why(e));
            tracing::warn!("chat room {} is offline: {why}", self.cfg.room);
            room.announce(&[wire(&Notice::Offline(&why).to_string())]);
        }
    }

    /// `side` is connected: once both are, tell the clients the room is back (if they were told
    /// it was gone).
    fn up(&self, room: &Room, side: Side) {
        let tell = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            match side {
                Side::Reader => st.reader_down = false,
                Side::Writer => st.writer_down = false,
            }
            let back = st.told_offline && !st.reader_down && !st.writer_down;
            if back {
                st.told_offline = false;
            }
            back
        };
        if tell {
            tracing::info!("chat room {} is back online", self.cfg.room);
            room.announce(&[wire(&Notice::Online.to_string())]);
        }
    }
}

/// Where the reader starts: after the last entry when the writer first connected, and that
/// entry's room-wide number.
struct Start {
    last: StreamId,
    seq: u64,
}

fn start(room: &Arc<Room>, pid: u32) -> Started {
    let (posts, rx) = mpsc::channel();
    let (start_tx, start_rx) = mpsc::channel();
    let (done_tx, writer_done) = mpsc::channel();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let instance = format!("{pid:x}.{nanos:x}");
    let writer = Writer::new(Arc::clone(room), instance, start_tx);
    let r = Arc::clone(room);
    thread::Builder::new()
        .name("chat-redis-writer".into())
        .spawn(move || {
            writer.run(rx);
            let _ = done_tx.send(());
        })
        .expect("spawn the chat room's Redis writer");
    thread::Builder::new()
        .name("chat-redis-reader".into())
        .spawn(move || {
            if let Ok(s) = start_rx.recv() {
                Reader::new(r, s).run();
            }
        })
        .expect("spawn the chat room's Redis reader");
    Started {
        pid,
        posts,
        writer_done,
    }
}

/// A stream entry id, `ms-seq`, ordered as Redis orders them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct StreamId(u64, u64);

impl StreamId {
    fn parse(s: &str) -> Option<StreamId> {
        let (a, b) = s.split_once('-')?;
        Some(StreamId(a.parse().ok()?, b.parse().ok()?))
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Pairs of a flat `[k, v, k, v...]` array (RESP2) or a map (RESP3).
fn pairs(v: &Value) -> Vec<(&Value, &Value)> {
    match v {
        Value::Array(a) => a.chunks_exact(2).map(|p| (&p[0], &p[1])).collect(),
        Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        _ => Vec::new(),
    }
}

/// `XADD` with the entry's room-wide number: `KEYS` = stream, counter; `ARGV` = history, then
/// the entry's fields.
const XADD_NUMBERED: &str = "local s = redis.call('INCR', KEYS[2]) \
    return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 's', s, unpack(ARGV, 2))";

/// The last entry of the stream: where a new reader starts (`0-0` and number 0 if none).
fn last_entry(c: &mut Connection, key: &str) -> Result<Start, RedisError> {
    let v: Value = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(c)?;
    let mut start = Start {
        last: StreamId::default(),
        seq: 0,
    };
    if let Value::Array(entries) = &v {
        if let Some((id, fields)) = entries.first().and_then(entry) {
            start.last = id;
            start.seq = field(fields, "s").and_then(|s| s.parse().ok()).unwrap_or(0);
        }
    }
    Ok(start)
}

/// An entry's id and fields.
fn entry(v: &Value) -> Option<(StreamId, &Value)> {
    let Value::Array(e) = v else { return None };
    let id = text(e.first()?).and_then(|s| StreamId::parse(&s))?;
    Some((id, e.get(1)?))
}

fn field(fields: &Value, name: &str) -> Option<String> {
    pairs(fields)
        .into_iter()
        .find(|(k, _)| text(k).as_deref() == Some(name))
        .and_then(|(_, v)| text(v))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_order_as_redis_orders_them() {
        let a = StreamId::parse("1700000000000-9").unwrap();
        let b = StreamId::parse("1700000000001-0").unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "1700000000000-9");
        assert!(StreamId::parse("x-1").is_none());
        assert!(StreamId::parse("12").is_none());
    }

    #[test]
    fn keys_hold_the_room_and_nicks_without_case() {
        let r = RedisRoom {
            url: "redis://127.0.0.1:6379".into(),
            room: "lobby".into(),
            history: 10,
        };
        assert_eq!(r.key("stream"), "tincan:chat:lobby:stream");
        assert_eq!(r.nick_key("Alice"), "tincan:chat:lobby:nick:alice");
    }
}
