//! The reader: follows the room's stream with `XREAD BLOCK` and hands each entry to the local
//! room, skipping repeats and telling clients what was trimmed before they could read it.

use super::*;

pub(super) struct Reader {
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
    pub(super) fn new(room: Arc<Room>, s: Start) -> Reader {
        Reader {
            room,
            conn: None,
            last: s.last,
            seq: s.seq,
            seen: HashMap::new(),
            backoff: BACKOFF_FIRST,
        }
    }

    pub(super) fn run(mut self) {
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
