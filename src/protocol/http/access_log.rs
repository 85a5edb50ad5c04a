//! The access log: one line per response, to stdout or a file opened for appending, in Combined
//! Log Format (what Apache and nginx write, so every log tool reads it) or as one JSON object
//! (Caddy's field names, for log pipelines that parse JSON). Either way what a client sent is
//! escaped, so no request can write a line of its own.
//!
//! Lines go through one buffered writer behind a mutex. A file is flushed when its buffer fills
//! and at least once a second, by a small flusher thread started lazily in each process (so
//! prefork workers flush their own).
//!
//! Stdout may be a pipe nobody reads (a script that waited for `listening on` and moved on) or a
//! paused terminal: a write there can block for ever. So the serving threads never write it
//! themselves: lines go into a bounded queue that a writer thread (one per process) drains,
//! flushing per line; when the queue is full, lines are dropped and that is said once.
//!
//! A line allocates nothing once the log is warm: it is formatted into a buffer the log keeps
//! (a file) or into one the stdout writer has sent back after writing it.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

/// Lines that may wait for a slow stdout before new ones are dropped (about 1 MiB).
pub const STDOUT_QUEUE_LINES: usize = 4096;

/// A line buffer longer than this is not kept for the next line (a 16 KiB User-Agent would
/// otherwise stay allocated in every buffer it passed through).
const KEEP_LINE_CAPACITY: usize = 1024;

enum Sink {
    /// The queue to this process's stdout writer thread, and the buffers it sends back once
    /// written (`None` until the first line).
    Stdout(Option<(SyncSender<String>, Receiver<String>)>),
    File(BufWriter<File>),
}

struct Inner {
    sink: Sink,
    /// The file sink's line buffer, reused.
    line: String,
    /// The process that runs the flusher or stdout writer thread (a forked worker needs its
    /// own).
    flusher_pid: u32,
    /// Lines dropped because stdout was not being read.
    dropped: u64,
}

/// How each line is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] "GET / HTTP/1.1" 200 2326 "-" "curl/8.0"`.
    #[default]
    Combined,
    /// `{"level":"info","ts":971185336.0,"logger":"http.log.access","msg":"handled request",
    /// "request":{...},"status":200,"size":2326}`, as Caddy writes it.
    Json,
}

impl LogFormat {
    pub const ALL: [LogFormat; 2] = [LogFormat::Combined, LogFormat::Json];

    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Combined => "combined",
            LogFormat::Json => "json",
        }
    }

    pub fn from_name(name: &str) -> Option<LogFormat> {
        LogFormat::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// A shared access log.
pub struct AccessLog {
    format: LogFormat,
    inner: Mutex<Inner>,
    me: Weak<AccessLog>,
    /// Lines queued for stdout and not yet written (for [`AccessLog::flush`]).
    pending: Arc<AtomicUsize>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessLog")
    }
}

/// What one log line says about a request.
#[derive(Debug, Default)]
pub struct Entry<'a> {
    /// The client's address; `None` for a Unix-socket peer (logged as `unix`).
    pub client: Option<IpAddr>,
    /// The request line as received, in parts written with a space between them
    /// (`["GET", "/x", "HTTP/1.1"]`, or the raw line as one part, bytes that are not UTF-8
    /// included); empty if none was parsed.
    pub request_line: &'a [&'a [u8]],
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    pub referer: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

impl AccessLog {
    /// `-` logs to stdout; anything else is a file path, opened for appending (created if
    /// missing).
    pub fn open(spec: &str) -> crate::error::Result<Arc<AccessLog>> {
        AccessLog::open_as(spec, LogFormat::Combined)
    }

    /// [`open`](Self::open), writing lines in `format`.
    pub fn open_as(spec: &str, format: LogFormat) -> crate::error::Result<Arc<AccessLog>> {
        let sink = if spec == "-" {
            Sink::Stdout(None)
        } else {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(Path::new(spec))
                .map_err(|e| {
                    crate::error::Error::io(format!("cannot open access log {spec}"), e)
                })?;
            Sink::File(BufWriter::with_capacity(16 * 1024, f))
        };
        Ok(Arc::new_cyclic(|me| AccessLog {
            format,
            inner: Mutex::new(Inner {
                sink,
                line: String::new(),
                flusher_pid: 0,
                dropped: 0,
            }),
            me: me.clone(),
            pending: Arc::new(AtomicUsize::new(0)),
        }))
    }

    /// Write one line for `e`, stamped now.
    pub fn log(&self, e: &Entry<'_>) {
        let now = SystemTime::now();
        let Ok(mut guard) = self.inner.lock() else {
            return;
        };
        let inner = &mut *guard;
        let pid = std::process::id();
        match &mut inner.sink {
            Sink::Stdout(queue) => {
                if inner.flusher_pid != pid {
                    // First line in this process (threads do not survive a prefork fork).
                    *queue = Some(stdout_writer(self.pending.clone()));
                    inner.flusher_pid = pid;
                }
                let Some((tx, written)) = queue else { return };
                let mut line = written.try_recv().unwrap_or_default();
                self.format_into(&mut line, e, now);
                self.pending.fetch_add(1, Ordering::SeqCst);
                match tx.try_send(line) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                        self.pending.fetch_sub(1, Ordering::SeqCst);
                        inner.dropped += 1;
                        if inner.dropped == 1 {
                            tracing::warn!(
                                "the access log on stdout is not being read; dropping lines until it is (use --access-log PATH or off)"
                            );
                        }
                    }
                }
            }
            Sink::File(w) => {
                inner.line.clear();
                self.format_into(&mut inner.line, e, now);
                if let Err(e) = w.write_all(inner.line.as_bytes()) {
                    tracing::warn!("cannot write the access log: {e}");
                }
                if inner.line.capacity() > KEEP_LINE_CAPACITY {
                    inner.line = String::new();
                }
                if inner.flusher_pid != pid {
                    inner.flusher_pid = pid;
                    let weak = self.me.clone();
                    let _ = std::thread::Builder::new()
                        .name("access-log-flush".into())
                        .spawn(move || flush_every_second(weak));
                }
            }
        }
    }

    fn format_into(&self, s: &mut String, e: &Entry<'_>, now: SystemTime) {
        match self.format {
            LogFormat::Combined => format_into(s, e, now),
            LogFormat::Json => json_into(s, e, now),
        }
    }

    /// Flush buffered lines now (for stdout: wait up to a second for the queue to drain).
    pub fn flush(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while self.pending.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Ok(mut inner) = self.inner.lock() {
            if let Sink::File(w) = &mut inner.sink {
                let _ = w.flush();
            }
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        if let Ok(inner) = self.inner.get_mut() {
            if let Sink::File(w) = &mut inner.sink {
                let _ = w.flush();
            }
        }
    }
}

/// Start this process's stdout writer: it alone may block on a stdout nobody reads. It sends
/// each line's buffer back, emptied, to be written into again.
fn stdout_writer(pending: Arc<AtomicUsize>) -> (SyncSender<String>, Receiver<String>) {
    use std::os::fd::AsFd;
    let (tx, rx) = mpsc::sync_channel::<String>(STDOUT_QUEUE_LINES);
    let (back, written) = mpsc::sync_channel::<String>(STDOUT_QUEUE_LINES);
    // A duplicate of descriptor 1, so that a write blocked here holds no lock of std's `Stdout`
    // (which exiting flushes, and would wait for).
    let dup = io::stdout().as_fd().try_clone_to_owned().map(File::from);
    let _ = std::thread::Builder::new()
        .name("access-log-stdout".into())
        .spawn(move || {
            for mut line in rx {
                let res = match &dup {
                    Ok(f) => (&*f).write_all(line.as_bytes()),
                    Err(_) => {
                        let mut out = io::stdout().lock();
                        out.write_all(line.as_bytes()).and_then(|_| out.flush())
                    }
                };
                if let Err(e) = res {
                    tracing::warn!("cannot write the access log: {e}");
                }
                pending.fetch_sub(1, Ordering::SeqCst);
                if line.capacity() <= KEEP_LINE_CAPACITY {
                    line.clear();
                    let _ = back.try_send(line);
                }
            }
        });
    (tx, written)
}

fn flush_every_second(log: Weak<AccessLog>) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        match log.upgrade() {
            Some(l) => l.flush(),
            None => return,
        }
    }
}

/// `%h - - [%d/%b/%Y:%H:%M:%S +0000] "%r" %>s %b "%{Referer}i" "%{User-Agent}i"`, with quotes,
/// backslashes, control bytes and every byte past ASCII in client-supplied fields escaped as
/// `\xHH` (nginx's `escape=default`), so a client cannot forge log lines and the log stays ASCII
/// whatever bytes arrived.
pub fn format_line(e: &Entry<'_>, now: SystemTime) -> String {
    let mut s = String::new();
    format_into(&mut s, e, now);
    s
}

/// [`format_line`], appended to `s`.
fn format_into(s: &mut String, e: &Entry<'_>, now: SystemTime) {
    match e.client {
        Some(ip) => {
            let _ = write!(s, "{ip}");
        }
        None => s.push_str("unix"),
    }
    s.push_str(" - - [");
    clf_time_into(s, now);
    s.push_str("] \"");
    if e.request_line.iter().all(|p| p.is_empty()) {
        s.push('-');
    } else {
        for (i, part) in e.request_line.iter().enumerate() {
            if i > 0 {
                s.push(' ');
            }
            escape_into(s, part);
        }
    }
    let _ = write!(s, "\" {} ", e.status);
    if e.bytes == 0 {
        s.push('-');
    } else {
        let _ = write!(s, "{}", e.bytes);
    }
    for v in [e.referer, e.user_agent] {
        s.push_str(" \"");
        match v {
            Some(v) => escape_into(s, v.as_bytes()),
            None => s.push('-'),
        }
        s.push('"');
    }
    s.push('\n');
}

/// nginx's `escape=default`: `"`, `\`, bytes below 0x20 and from 0x7F on as `\xHH`.
fn escape_into(s: &mut String, v: &[u8]) {
    for &b in v {
        if b == b'"' || b == b'\\' || !(0x20..0x7F).contains(&b) {
            let _ = write!(s, "\\x{b:02X}");
        } else {
            s.push(char::from(b));
        }
    }
}

/// A client's bytes as JSON string content: text as it is (JSON is UTF-8), and what would
/// not be text, control bytes and bytes that are not UTF-8, as `\xHH` as in the Combined
/// line; serde_json then escapes `"` and `\`.
fn json_text(v: &[u8]) -> String {
    let mut s = String::with_capacity(v.len());
    for chunk in v.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                let mut b = [0; 4];
                for byte in c.encode_utf8(&mut b).bytes() {
                    let _ = write!(s, "\\x{byte:02X}");
                }
            } else {
                s.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(s, "\\x{b:02X}");
        }
    }
    s
}

/// One JSON object, with Caddy's field names (`request.remote_ip`, `request.method`,
/// `request.uri`, `request.proto`, `request.headers`, `status`, `size`, `ts` in seconds since
/// the epoch). A request line that is not `METHOD TARGET VERSION` is `request.line`.
fn json_into(s: &mut String, e: &Entry<'_>, now: SystemTime) {
    use serde_json::{json, Map, Value};
    let mut request = Map::new();
    let ip = e
        .client
        .map_or_else(|| "unix".to_string(), |ip| ip.to_string());
    request.insert("remote_ip".into(), ip.into());
    let line: Vec<u8> = e.request_line.join(&b' ');
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    match parts[..] {
        [method, uri, proto] if !method.is_empty() && !uri.is_empty() => {
            request.insert("proto".into(), json_text(proto).into());
            request.insert("method".into(), json_text(method).into());
            request.insert("uri".into(), json_text(uri).into());
        }
        _ if line.is_empty() => {}
        _ => {
            request.insert("line".into(), json_text(&line).into());
        }
    }
    let mut headers = Map::new();
    for (name, v) in [("Referer", e.referer), ("User-Agent", e.user_agent)] {
        if let Some(v) = v {
            headers.insert(name.into(), json!([json_text(v.as_bytes())]));
        }
    }
    if !headers.is_empty() {
        request.insert("headers".into(), Value::Object(headers));
    }
    let ts = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let obj = json!({
        "level": "info",
        "ts": ts,
        "logger": "http.log.access",
        "msg": "handled request",
        "request": request,
        "status": e.status,
        "size": e.bytes,
    });
    // serde_json escapes every control character, so the object is one line.
    let _ = write!(s, "{obj}");
    s.push('\n');
}

/// `10/Oct/2000:13:55:36 +0000` in UTC, appended to `s`.
fn clf_time_into(s: &mut String, t: SystemTime) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, day, h, mi, sec) = super::message::civil(t);
    let _ = write!(
        s,
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        h,
        mi,
        sec
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn lines_are_in_combined_log_format() {
        let t = UNIX_EPOCH + Duration::from_secs(971_185_336); // 2000-10-10 13:42:16 UTC
        let e = Entry {
            client: Some([127, 0, 0, 1].into()),
            request_line: &[b"GET", b"/apache_pb.gif", b"HTTP/1.0"],
            status: 200,
            bytes: 2326,
            referer: Some("http://www.example.com/start.html"),
            user_agent: Some("Mozilla/4.08"),
        };
        assert_eq!(
            format_line(&e, t),
            "127.0.0.1 - - [10/Oct/2000:13:42:16 +0000] \"GET /apache_pb.gif HTTP/1.0\" 200 2326 \"http://www.example.com/start.html\" \"Mozilla/4.08\"\n"
        );
    }

    #[test]
    fn client_text_cannot_forge_a_log_line() {
        let e = Entry {
            client: Some(std::net::Ipv6Addr::LOCALHOST.into()),
            request_line: &[],
            status: 400,
            bytes: 0,
            referer: None,
            user_agent: Some("x\" 200 \n1.2.3.4"),
        };
        let line = format_line(&e, UNIX_EPOCH);
        assert!(
            line.ends_with("\"-\" 400 - \"-\" \"x\\x22 200 \\x0A1.2.3.4\"\n"),
            "{line}"
        );
        assert!(
            line.starts_with("::1 - - [01/Jan/1970:00:00:00 +0000]"),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1);
        // A raw line given whole is escaped the same way; a Unix-socket peer is `unix`.
        let raw = Entry {
            request_line: &[b"GET /\"x HTTP/1.1"],
            ..Entry::default()
        };
        let line = format_line(&raw, UNIX_EPOCH);
        assert!(line.starts_with("unix - - ["), "{line}");
        assert!(line.contains("\"GET /\\x22x HTTP/1.1\""), "{line}");
    }

    #[test]
    fn bytes_past_ascii_and_not_utf8_are_written_as_nginx_writes_them() {
        let e = Entry {
            client: Some([10, 0, 0, 1].into()),
            request_line: &[b"GET /caf\xc3\xa9/\xff\x01\r\n1.2.3.4 - - \"x HTTP/1.1"],
            status: 400,
            user_agent: Some("curl/8 \u{1b}[31m"),
            ..Entry::default()
        };
        let line = format_line(&e, UNIX_EPOCH);
        assert_eq!(
            line,
            "10.0.0.1 - - [01/Jan/1970:00:00:00 +0000] \"GET /caf\\xC3\\xA9/\\xFF\\x01\\x0D\\x0A1.2.3.4 - - \
             \\x22x HTTP/1.1\" 400 - \"-\" \"curl/8 \\x1B[31m\"\n"
        );
        assert!(line.is_ascii());
    }

    fn json_line(e: &Entry<'_>, t: SystemTime) -> serde_json::Value {
        let mut s = String::new();
        json_into(&mut s, e, t);
        assert_eq!(s.matches('\n').count(), 1, "{s}");
        assert!(s.ends_with('\n'));
        serde_json::from_str(&s).unwrap()
    }

    #[test]
    fn json_lines_carry_caddys_fields_and_escape_what_is_not_text() {
        let t = UNIX_EPOCH + Duration::from_millis(971_185_336_500);
        let v = json_line(
            &Entry {
                client: Some([127, 0, 0, 1].into()),
                request_line: &[b"GET", b"/caf\xc3\xa9?q=\"1\"", b"HTTP/1.1"],
                status: 200,
                bytes: 2326,
                referer: Some("http://a.example/"),
                user_agent: Some("x\ny"),
            },
            t,
        );
        assert_eq!(
            v,
            serde_json::json!({
                "level": "info",
                "ts": 971185336.5,
                "logger": "http.log.access",
                "msg": "handled request",
                "request": {
                    "remote_ip": "127.0.0.1",
                    "proto": "HTTP/1.1",
                    "method": "GET",
                    "uri": "/café?q=\"1\"",
                    "headers": {"Referer": ["http://a.example/"], "User-Agent": ["x\\x0Ay"]},
                },
                "status": 200,
                "size": 2326,
            })
        );
        // A line that is not METHOD TARGET VERSION, with bytes that are not UTF-8.
        let v = json_line(
            &Entry {
                request_line: &[b"\xff\xfe junk"],
                status: 400,
                ..Entry::default()
            },
            t,
        );
        assert_eq!(v["request"]["line"], "\\xFF\\xFE junk");
        assert_eq!(v["request"]["remote_ip"], "unix");
        // Nothing parsed at all (a 408 before the first byte).
        let v = json_line(&Entry::default(), t);
        assert_eq!(v["request"], serde_json::json!({"remote_ip": "unix"}));
    }

    #[test]
    fn leap_days_are_dated_right() {
        // 2024-02-29 12:00:00 UTC
        let t = UNIX_EPOCH + Duration::from_secs(1_709_208_000);
        let mut s = String::new();
        clf_time_into(&mut s, t);
        assert_eq!(s, "29/Feb/2024:12:00:00 +0000");
    }
}
