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
    let writer = Writer {
        room: Arc::clone(room),
        conn: None,
        instance,
        posted: 0,
        members: HashMap::new(),
        start: Some(start_tx),
        redial_at: Instant::now(),
        backoff: BACKOFF_FIRST,
        refresh_at: Instant::now() + REFRESH,
        last_error: String::new(),
    };
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

/// One local client, as the writer knows it.
struct Known {
    label: String,
    /// Its label is a nick held in Redis (not its address).
    nick: bool,
}

/// One stream entry to post: its kind (`m`essage, `j`oin, `l`eave, `r`ename), who, and text.
struct Entry {
    kind: &'static str,
    from: String,
    text: String,
    /// The member to answer `not delivered` if it cannot be posted (messages only).
    sender: Option<(usize, u64)>,
}

struct Writer {
    room: Arc<Room>,
    conn: Option<Connection>,
    /// Names this process in the stream (`i`), so readers can tell a post sent twice.
    instance: String,
    /// Entries this instance has posted (`n` of the last one).
    posted: u64,
    /// The local clients by serial, with the label their posts carry: every post of a member
    /// passes through here in order, so a message after a `/nick` carries the new name.
    members: HashMap<u64, Known>,
    /// Told to the reader once, after the first connection.
    start: Option<Sender<Start>>,
    redial_at: Instant,
    backoff: Duration,
    refresh_at: Instant,
    /// Why the link last failed, for the answers given while it is down.
    last_error: String,
}

impl Writer {
    fn run(mut self, posts: Receiver<Post>) {
        self.ensure();
        loop {
            let until = if self.conn.is_some() {
                self.refresh_at
            } else {
                self.refresh_at.min(self.redial_at)
            };
            let wait = until.saturating_duration_since(Instant::now());
            match posts.recv_timeout(wait) {
                Ok(p) => {
                    let mut batch = vec![p];
                    while batch.len() < BATCH {
                        match posts.try_recv() {
                            Ok(p) => batch.push(p),
                            Err(_) => break,
                        }
                    }
                    self.handle(batch);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.conn.is_none() && Instant::now() >= self.redial_at {
                self.ensure();
            }
            if Instant::now() >= self.refresh_at {
                self.refresh();
            }
        }
    }

    /// Dial if not connected and a dial is due; false when there is no link.
    fn ensure(&mut self) -> bool {
        if self.conn.is_some() {
            return true;
        }
        if Instant::now() < self.redial_at {
            return false;
        }
        match self.dial() {
            Ok(()) => true,
            Err(e) => {
                self.failed(&e);
                false
            }
        }
    }

    fn dial(&mut self) -> Result<(), RedisError> {
        let mut c = connect(&self.room.link().cfg.url)?;
        if self.start.is_none() {
            // A Redis that restarted has forgotten this instance's names: give them back
            // before answering anything (a `/who`), rather than at the next refresh.
            if let Err(e) = self.refresh_on(&mut c) {
                tracing::debug!("cannot refresh the chat room's names in Redis: {e}");
            }
        }
        if let Some(tx) = self.start.take() {
            match last_entry(&mut c, &self.room.link().cfg.key("stream")) {
                Ok(start) => {
                    let _ = tx.send(start);
                }
                Err(e) => {
                    self.start = Some(tx);
                    return Err(e);
                }
            }
        }
        self.conn = Some(c);
        self.backoff = BACKOFF_FIRST;
        self.room.link().up(&self.room, Side::Writer);
        Ok(())
    }

    /// A dial failed: the room is offline until one succeeds, tried again after the backoff.
    fn failed(&mut self, e: &RedisError) {
        self.conn = None;
        self.last_error = why(e);
        self.redial_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.room.link().down(&self.room, Side::Writer, e);
    }

    /// Run `f` on the link; a broken link is dialled again at once and `f` run once more (a
    /// post sent twice is shown once, see the module doc). The error is the reason to give.
    fn attempt<R>(
        &mut self,
        mut f: impl FnMut(&mut Connection) -> Result<R, RedisError>,
    ) -> Result<R, String> {
        for _ in 0..2 {
            if self.conn.is_none() {
                if Instant::now() < self.redial_at {
                    // Offline, waiting out the backoff: answer at once.
                    break;
                }
                if let Err(e) = self.dial() {
                    self.failed(&e);
                    break;
                }
            }
            let mut c = self.conn.take().expect("connected above");
            match f(&mut c) {
                Ok(r) => {
                    self.conn = Some(c);
                    return Ok(r);
                }
                Err(e) if is_link_failure(&e) => {
                    tracing::debug!("chat room's Redis link broke: {e}; dialling again");
                    self.last_error = why(&e);
                }
                Err(e) => {
                    self.conn = Some(c);
                    return Err(e.to_string());
                }
            }
        }
        Err(lost(&self.room.link().cfg.url, &self.last_error))
    }

    /// The reason a post is answered `not delivered`.
    fn undelivered(why: &str) -> String {
        format!("{why}; send it again when the room is back")
    }

    fn handle(&mut self, batch: Vec<Post>) {
        let mut entries = Vec::new();
        let mut extra: Vec<redis::Cmd> = Vec::new();
        let cost: usize = batch.iter().map(Post::cost).sum();
        let cfg = self.room.link().cfg.clone();
        let notices = self.room.config.notices;
        for post in batch {
            match post {
                Post::Join { serial, label } => {
                    extra.push(self.who_add(serial, &label));
                    if notices {
                        entries.push(Entry {
                            kind: "j",
                            from: label.clone(),
                            text: String::new(),
                            sender: None,
                        });
                    }
                    self.members.insert(serial, Known { label, nick: false });
                }
                Post::Leave { serial } => {
                    if let Some(k) = self.members.remove(&serial) {
                        extra.push(self.who_remove(serial, &k.label));
                        if k.nick {
                            extra.push(redis::cmd("DEL").arg(cfg.nick_key(&k.label)).clone());
                        }
                        if notices {
                            entries.push(Entry {
                                kind: "l",
                                from: k.label,
                                text: String::new(),
                                sender: None,
                            });
                        }
                    }
                }
                Post::Message { id, serial, text } => {
                    let Some(k) = self.members.get(&serial) else {
                        continue;
                    };
                    entries.push(Entry {
                        kind: "m",
                        from: k.label.clone(),
                        text,
                        sender: Some((id, serial)),
                    });
                }
                // A command needs its answer before what follows it: post what came before.
                Post::Nick { id, serial, name } => {
                    self.post(std::mem::take(&mut entries), std::mem::take(&mut extra));
                    self.nick(id, serial, &name);
                }
                Post::Who { id, serial } => {
                    self.post(std::mem::take(&mut entries), std::mem::take(&mut extra));
                    self.who(id, serial);
                }
            }
        }
        self.post(entries, extra);
        self.room.posted(cost);
    }

    fn xadd(&mut self, e: &Entry, n: u64) -> redis::Cmd {
        let cfg = &self.room.link().cfg;
        redis::cmd("EVAL")
            .arg(XADD_NUMBERED)
            .arg(2)
            .arg(cfg.key("stream"))
            .arg(cfg.key("seq"))
            .arg(cfg.history)
            .arg("i")
            .arg(&self.instance)
            .arg("n")
            .arg(n)
            .arg("k")
            .arg(e.kind)
            .arg("f")
            .arg(&e.from)
            .arg("t")
            .arg(&e.text)
            .clone()
    }

    fn who_member(&self, serial: u64, label: &str) -> String {
        format!("{}/{serial} {label}", self.instance)
    }

    fn who_add(&self, serial: u64, label: &str) -> redis::Cmd {
        redis::cmd("ZADD")
            .arg(self.room.link().cfg.key("who"))
            .arg(now_ms() + TTL.as_millis() as u64)
            .arg(self.who_member(serial, label))
            .clone()
    }

    fn who_remove(&self, serial: u64, label: &str) -> redis::Cmd {
        redis::cmd("ZREM")
            .arg(self.room.link().cfg.key("who"))
            .arg(self.who_member(serial, label))
            .clone()
    }

    /// Post `entries` (and the bookkeeping `extra` commands) in one pipeline.
    fn post(&mut self, entries: Vec<Entry>, extra: Vec<redis::Cmd>) {
        if entries.is_empty() && extra.is_empty() {
            return;
        }
        let first = self.posted + 1;
        self.posted += entries.len() as u64;
        let mut pipe = redis::pipe();
        for (i, e) in entries.iter().enumerate() {
            pipe.add_command(self.xadd(e, first + i as u64)).ignore();
        }
        for c in extra {
            pipe.add_command(c).ignore();
        }
        if let Err(e) = self.attempt(|c| pipe.query::<()>(c)) {
            let why = Writer::undelivered(&e);
            let line = wire(&Notice::NotDelivered(&why).to_string());
            for (id, serial) in entries.iter().filter_map(|e| e.sender) {
                self.room.tell(id, serial, &line);
            }
        }
    }

    fn nick(&mut self, id: usize, serial: u64, name: &str) {
        let Some(old) = self.members.get(&serial).map(|k| (k.label.clone(), k.nick)) else {
            return;
        };
        let cfg = self.room.link().cfg.clone();
        let key = cfg.nick_key(name);
        let owner = format!("{}/{serial}", self.instance);
        let got = self.attempt(|c| {
            let set: Value = redis::cmd("SET")
                .arg(&key)
                .arg(&owner)
                .arg("NX")
                .arg("PX")
                .arg(TTL.as_millis() as u64)
                .query(c)?;
            if set != Value::Nil {
                return Ok(true);
            }
            // Held already: by us (a change of case) is no clash.
            let holder: Option<String> = redis::cmd("GET").arg(&key).query(c)?;
            Ok(holder.as_deref() == Some(owner.as_str()))
        });
        let taken = match got {
            Ok(true) => None,
            Ok(false) => Some(format!("{name} is taken")),
            Err(e) => Some(Writer::undelivered(&e)),
        };
        if let Some(why) = taken {
            self.room
                .tell(id, serial, &wire(&Notice::NickRefused(&why).to_string()));
            return;
        }
        let (old_label, had_nick) = old;
        let mut extra = vec![
            self.who_remove(serial, &old_label),
            self.who_add(serial, name),
        ];
        if had_nick && old_label.to_lowercase() != name.to_lowercase() {
            extra.push(redis::cmd("DEL").arg(cfg.nick_key(&old_label)).clone());
        }
        if let Some(k) = self.members.get_mut(&serial) {
            k.label = name.to_string();
            k.nick = true;
        }
        self.room.renamed(id, serial, name);
        let renamed = Entry {
            kind: "r",
            from: old_label.clone(),
            text: name.to_string(),
            sender: None,
        };
        if self.room.config.notices {
            self.post(vec![renamed], extra);
        } else {
            self.post(Vec::new(), extra);
            let line = Notice::Renamed {
                old: &old_label,
                new: name,
            };
            self.room.tell(id, serial, &wire(&line.to_string()));
        }
    }

    fn who(&mut self, id: usize, serial: u64) {
        let key = self.room.link().cfg.key("who");
        let listed = self.attempt(|c| {
            redis::cmd("ZRANGEBYSCORE")
                .arg(&key)
                .arg(now_ms())
                .arg("+inf")
                .query::<Vec<String>>(c)
        });
        let line = match listed {
            Ok(members) => {
                let mut names: Vec<String> = members
                    .iter()
                    .filter_map(|m| m.split_once(' ').map(|(_, l)| l.to_string()))
                    .collect();
                names.sort();
                let total = names.len();
                names.truncate(WHO_MAX_NAMES);
                Notice::Who {
                    total,
                    names: &names,
                }
                .to_string()
            }
            Err(e) => {
                Notice::NotDelivered(&format!("/who: {}", Writer::undelivered(&e))).to_string()
            }
        };
        self.room.tell(id, serial, &wire(&line));
    }

    /// Keep this instance's names alive, and sweep out those of instances that stopped
    /// refreshing theirs.
    fn refresh(&mut self) {
        self.refresh_at = Instant::now() + REFRESH;
        let Some(mut c) = self.conn.take() else {
            return;
        };
        match self.refresh_on(&mut c) {
            // A broken link is dialled again by the next post, or when the room next refreshes.
            Err(e) if is_link_failure(&e) => {
                tracing::debug!("cannot refresh the chat room's names in Redis: {e}")
            }
            r => {
                if let Err(e) = r {
                    tracing::warn!("cannot refresh the chat room's names in Redis: {e}");
                }
                self.conn = Some(c);
            }
        }
    }

    fn refresh_on(&self, c: &mut Connection) -> Result<(), RedisError> {
        let cfg = &self.room.link().cfg;
        let ttl = TTL.as_millis() as u64;
        let mut pipe = redis::pipe();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(cfg.key("who"))
            .arg("-inf")
            .arg(now_ms())
            .ignore();
        let mut nicks = Vec::new();
        for (serial, k) in &self.members {
            pipe.add_command(self.who_add(*serial, &k.label)).ignore();
            if k.nick {
                pipe.cmd("PEXPIRE").arg(cfg.nick_key(&k.label)).arg(ttl);
                nicks.push((
                    cfg.nick_key(&k.label),
                    format!("{}/{serial}", self.instance),
                ));
            }
        }
        let kept: Vec<i64> = pipe.query(c)?;
        // A name that lapsed while Redis was away is taken back, unless someone holds it now.
        let mut lapsed = redis::pipe();
        for ((key, owner), _) in nicks.iter().zip(kept).filter(|(_, k)| *k == 0) {
            lapsed
                .cmd("SET")
                .arg(key)
                .arg(owner)
                .arg("NX")
                .arg("PX")
                .arg(ttl)
                .ignore();
        }
        lapsed.query::<()>(c)
    }
}

struct Reader {
    room: Arc<Room>,
    conn: Option<Connection>,
    last: StreamId,
    /// The room-wide number of the entry `last`: a jump past the next one is entries trimmed
    /// before this instance read them.
    seq: u64,
    /// The highest `n` seen from each instance: a post sent twice is shown once.
    seen: HashMap<String, u64>,
    backoff: Duration,
}

impl Reader {
    fn new(room: Arc<Room>, s: Start) -> Reader {
        Reader {
            room,
            conn: None,
            last: s.last,
            seq: s.seq,
            seen: HashMap::new(),
            backoff: BACKOFF_FIRST,
        }
    }

    fn run(mut self) {
        let mut failures = 0u32;
        while !self.room.link().stopping() {
            if self.conn.is_none() {
                match connect(&self.room.link().cfg.url) {
                    Ok(c) => {
                        self.conn = Some(c);
                        self.backoff = BACKOFF_FIRST;
                        failures = 0;
                        self.room.link().up(&self.room, Side::Reader);
                    }
                    Err(e) => {
                        failures += 1;
                        // The first redial is at once: a killed connection is not an outage.
                        if failures > 1 {
                            self.room.link().down(&self.room, Side::Reader, &e);
                            thread::sleep(self.backoff);
                            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                        }
                        continue;
                    }
                }
            }
            if let Err(e) = self.read() {
                if is_link_failure(&e) {
                    tracing::debug!("chat room's Redis reader lost its link: {e}; dialling again");
                    self.conn = None;
                } else {
                    tracing::warn!("chat room's Redis reader: {e}");
                    thread::sleep(BACKOFF_MAX);
                }
            }
        }
    }

    fn read(&mut self) -> Result<(), RedisError> {
        let key = self.room.link().cfg.key("stream");
        let c = self.conn.as_mut().expect("connected");
        let v: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&key)
            .arg(self.last.to_string())
            .query(c)?;
        let mut lines = Vec::new();
        for (_, entries) in streams(&v) {
            let Value::Array(entries) = entries else {
                continue;
            };
            for (id, fields) in entries.iter().filter_map(entry) {
                self.last = id;
                if let Some(seq) = field(fields, "s").and_then(|s| s.parse::<u64>().ok()) {
                    if seq > self.seq + 1 && self.seq > 0 {
                        let missed = seq - self.seq - 1;
                        lines.push(wire(&Notice::Missed(missed).to_string()));
                    }
                    self.seq = seq;
                }
                if let Some(line) = self.line(fields) {
                    lines.push(line);
                }
            }
        }
        if !lines.is_empty() {
            self.room.announce(&lines);
        }
        Ok(())
    }

    /// The line an entry shows, or `None` for a post already shown (sent twice) or a notice
    /// this instance keeps quiet (`--notices off`).
    fn line(&mut self, fields: &Value) -> Option<Bytes> {
        let mut f: HashMap<String, String> = HashMap::new();
        for (k, v) in pairs(fields) {
            if let (Some(k), Some(v)) = (text(k), text(v)) {
                f.insert(k, v);
            }
        }
        let get = |k: &str| f.get(k).map(String::as_str).unwrap_or_default();
        if let Ok(n) = get("n").parse::<u64>() {
            let seen = self.seen.entry(get("i").to_string()).or_insert(0);
            if n <= *seen {
                return None;
            }
            *seen = n;
        }
        let notices = self.room.config.notices;
        let from = get("f");
        let text = match get("k") {
            "m" => format!("{from}: {}", get("t")),
            "j" if notices => Notice::Joined(from).to_string(),
            "l" if notices => Notice::Left(from).to_string(),
            "r" if notices => Notice::Renamed {
                old: from,
                new: get("t"),
            }
            .to_string(),
            _ => return None,
        };
        Some(wire(&text))
    }
}

/// The `(key, entries)` pairs of an `XREAD` reply (nil when `BLOCK` ran out).
fn streams(v: &Value) -> Vec<(&Value, &Value)> {
    match v {
        Value::Array(a) => a
            .iter()
            .filter_map(|s| match s {
                Value::Array(kv) if kv.len() == 2 => Some((&kv[0], &kv[1])),
                _ => None,
            })
            .collect(),
        Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        _ => Vec::new(),
    }
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
