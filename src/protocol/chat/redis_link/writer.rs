//! The writer: posts this instance's messages, notices and names to Redis, pipelined, and
//! keeps its nicks and `/who` entries alive (see the parent module for the protocol).

use super::*;

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

pub(super) struct Writer {
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
    pub(super) fn new(room: Arc<Room>, instance: String, start: Sender<Start>) -> Writer {
        Writer {
            room,
            conn: None,
            instance,
            posted: 0,
            members: HashMap::new(),
            start: Some(start),
            redial_at: Instant::now(),
            backoff: BACKOFF_FIRST,
            refresh_at: Instant::now() + REFRESH,
            last_error: String::new(),
        }
    }

    pub(super) fn run(mut self, posts: Receiver<Post>) {
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
