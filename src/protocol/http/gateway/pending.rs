//! An outbound answer in flight: the upstream's or script's response head parsed within its
//! limits, its body's framing removed as it streams, and a failure turned into the page (or
//! the cut-off) the client gets, with one rate-limited log line.

use std::collections::VecDeque;

use super::redirect::RedirectMap;
use crate::logging::{more_like_it, Throttle};
use crate::protocol::http::cgi;
use crate::protocol::http::message::{error_response, Response};
use crate::protocol::http::proxy::{self, ResponseHead, BAD_RESPONSE};
use crate::protocol::http::wire::{Decoder, Limits};
use crate::protocol::LinkError;

/// Longest response head (upstream status line and headers, or a script's header block).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most header fields in one upstream or CGI response head.
const MAX_RESPONSE_HEADERS: usize = 100;

#[derive(Debug, Clone, Copy)]
pub(super) enum Mode {
    Proxy,
    Cgi,
}

#[derive(Debug)]
enum State {
    /// Collecting the response head.
    Head(Vec<u8>),
    /// Relaying the body.
    Body(Decoder),
    Finished,
}

/// What the session does next with an outbound response.
#[derive(Debug)]
pub enum Progress {
    /// Nothing new; more input (or its end) will come.
    Wait,
    /// The response head: write it (announcing `length` when known), then its body follows.
    Head {
        response: Response,
        length: Option<u64>,
        /// The response has no body at all (HEAD, 204, 304, or an empty one).
        bodiless: bool,
    },
    /// Body bytes, framing removed.
    Data(Vec<u8>),
    /// A CGI script asked the server to answer for this path instead (RFC 3875 §6.2.2).
    LocalRedirect(String),
    /// The upstream agreed to switch protocols (101): relay the head, then tunnel bytes both
    /// ways, starting with `rest` (what came after the head).
    Switch {
        response: Response,
        upgrade: String,
        rest: Vec<u8>,
    },
    /// The body ended where its framing said.
    End,
    /// It failed before any head: answer this instead.
    Fail(Response),
    /// It failed mid-body: the client must see a truncated response (close the connection).
    Abort,
}

/// Why an exchange ended early. The session maps it to a status when no response head was sent.
#[derive(Debug)]
pub enum Failure {
    /// The upstream could not be reached (refused, unreachable): 502.
    Connect(String),
    /// Nothing moved for the timeout (connect, read, write, or a silent child): 504.
    Timeout,
    /// The connection or pipe broke: 502.
    Io(String),
    /// The program could not be started: 502.
    Spawn(String),
}

impl From<LinkError> for Failure {
    fn from(e: LinkError) -> Failure {
        match e {
            LinkError::Connect(s) => Failure::Connect(s),
            LinkError::Spawn(s) => Failure::Spawn(s),
            LinkError::Io(s) => Failure::Io(s),
        }
    }
}

/// An outbound response in flight: fed what the link reads, it yields what the client gets.
#[derive(Debug)]
pub struct Pending {
    mode: Mode,
    /// A proxied answer's redirects are rewritten from the upstream's URL to ours.
    redirect: Option<RedirectMap>,
    head_request: bool,
    /// The request asked to switch protocols, so a 101 may come.
    pub(super) upgrading: bool,
    state: State,
    /// Steps decided and not yet handed to the session.
    ready: VecDeque<Progress>,
    /// Bytes of the answer seen (a reused connection that fails before any may be retried).
    seen: u64,
    /// The answer ended where its framing said, and the upstream keeps the connection open.
    reusable: bool,
    /// Upstream keep-alive as its head said (HTTP/1.1 without `Connection: close`).
    keeps: bool,
    /// The route and upstream, for the log line a failure leaves.
    label: std::sync::Arc<str>,
}

/// Where the upstream's body stands after a piece of it.
enum Outcome {
    More,
    End,
    Broken,
}

impl Pending {
    pub(super) fn new(
        mode: Mode,
        redirect: Option<RedirectMap>,
        head_request: bool,
        label: std::sync::Arc<str>,
    ) -> Pending {
        Pending {
            mode,
            redirect,
            head_request,
            upgrading: false,
            state: State::Head(Vec::new()),
            ready: VecDeque::new(),
            seen: 0,
            reusable: false,
            keeps: false,
            label,
        }
    }

    /// The next step, if one is decided.
    pub fn poll(&mut self) -> Progress {
        self.ready.pop_front().unwrap_or(Progress::Wait)
    }

    /// Has any byte of the answer arrived?
    pub fn started(&self) -> bool {
        self.seen > 0
    }

    /// Is the answer complete?
    pub fn finished(&self) -> bool {
        matches!(self.state, State::Finished)
    }

    /// May the connection carry another request (the answer ended by its framing, and the
    /// upstream did not ask to close)?
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// Now on another upstream (a failover): its failures name it.
    pub fn relabel(&mut self, label: std::sync::Arc<str>) {
        self.label = label;
    }

    /// Bytes of the answer arrived.
    pub fn feed(&mut self, d: &[u8]) {
        if d.is_empty() {
            return;
        }
        self.seen += d.len() as u64;
        match &mut self.state {
            State::Finished => {
                // Bytes after a complete answer: the upstream cannot be trusted with another.
                self.reusable = false;
            }
            State::Head(buf) => {
                // Usually the whole head comes in one read: it is parsed where it lies, and
                // only a partial one is kept for the next.
                let mut held = std::mem::take(buf);
                let data: &[u8] = if held.is_empty() {
                    d
                } else {
                    held.extend_from_slice(d);
                    &held
                };
                match self.parse_head(data) {
                    Ok(None) => {}
                    Ok(Some(used)) if data.len() - used > MAX_RESPONSE_HEAD => {
                        self.fail_with(502, BAD_RESPONSE, "sent a too big header");
                    }
                    Ok(Some(used)) => {
                        if held.is_empty() {
                            held.extend_from_slice(&d[used..]);
                        } else {
                            held.drain(..used);
                        }
                        self.state = State::Head(held);
                    }
                    Err(why) => self.fail_with(502, why, "sent an invalid header"),
                }
            }
            State::Body(framing) => {
                let (data, outcome) = relay(framing, d);
                self.push_body(data, outcome);
            }
        }
    }

    /// The upstream closed (or the script's output ended).
    pub fn end(&mut self) {
        match &self.state {
            State::Finished => {}
            State::Head(_) => {
                let why = match self.mode {
                    Mode::Proxy => {
                        "The upstream server closed the connection without a complete response."
                    }
                    Mode::Cgi => "The script ended without printing a complete CGI header block.",
                };
                self.fail_with(502, why, "closed the connection before a complete header");
            }
            State::Body(framing) => {
                // Only a close-delimited body may end by the upstream closing.
                let clean = framing.ends_at_close();
                self.state = State::Finished;
                self.reusable = false;
                if clean {
                    self.ready.push_back(Progress::End);
                } else {
                    self.log_failure("closed the connection before the whole body");
                    self.ready.push_back(Progress::Abort);
                }
            }
        }
    }

    /// The exchange failed.
    pub fn fail(&mut self, f: Failure) {
        self.reusable = false;
        match &self.state {
            State::Finished => {}
            State::Head(_) => {
                let (status, why, log) = failure_answer(&f, self.mode);
                self.log_failure(&format!("{log}: {}", failure_detail(&f)));
                self.state = State::Finished;
                self.ready
                    .push_back(Progress::Fail(error_response(status, why)));
            }
            State::Body(_) => {
                self.log_failure(&format!("broke off the body: {}", failure_detail(&f)));
                self.state = State::Finished;
                self.ready.push_back(Progress::Abort);
            }
        }
    }

    fn fail_with(&mut self, status: u16, why: &'static str, log: &str) {
        self.log_failure(log);
        self.state = State::Finished;
        self.reusable = false;
        self.ready
            .push_back(Progress::Fail(error_response(status, why)));
    }

    /// One warning line per failure, at most one a second per process (a dead upstream under
    /// load would otherwise flood the log), as nginx's "upstream timed out" lines.
    fn log_failure(&self, what: &str) {
        static FAILED: Throttle = Throttle::new();
        let who = match self.mode {
            Mode::Proxy => "upstream",
            Mode::Cgi => "script",
        };
        if let Some(skipped) = FAILED.admit() {
            tracing::warn!("{}: the {who} {what}{}", self.label, more_like_it(skipped));
        }
    }

    /// An upstream that refused or did not connect in time is left out, and the request goes
    /// to `next`: one line, as nginx's "connect() failed ... while connecting to upstream"
    /// (the client is still answered, so nothing else would tell the operator).
    pub fn log_left_out(&self, why: &str, left_out_for: std::time::Duration, next: &str) {
        static LEFT_OUT: Throttle = Throttle::new();
        if let Some(skipped) = LEFT_OUT.admit() {
            tracing::warn!(
                "{}: the upstream {why}; left out for {} s (--upstream-fail-timeout), the \
                 request goes to {next}{}",
                self.label,
                left_out_for.as_secs_f64(),
                more_like_it(skipped)
            );
        }
    }

    fn push_body(&mut self, data: Vec<u8>, outcome: Outcome) {
        if !data.is_empty() {
            self.ready.push_back(Progress::Data(data));
        }
        match outcome {
            Outcome::More => {}
            Outcome::End => {
                self.state = State::Finished;
                self.reusable = self.keeps;
                self.ready.push_back(Progress::End);
            }
            Outcome::Broken => {
                self.log_failure("sent a broken chunked body");
                self.state = State::Finished;
                self.ready.push_back(Progress::Abort);
            }
        }
    }

    /// Try to parse the head from `data` (all that came so far): `None` once it is parsed (and
    /// queued, with the body bytes that came with it), or `Some(n)` while it is incomplete, `n`
    /// the bytes of interim (1xx) heads that went before it.
    fn parse_head(&mut self, data: &[u8]) -> Result<Option<usize>, &'static str> {
        let mut at = 0;
        loop {
            let buf = &data[at..];
            let parsed = match self.mode {
                Mode::Proxy => proxy::parse_response_head(
                    buf,
                    self.head_request,
                    self.upgrading,
                    MAX_RESPONSE_HEADERS,
                )?,
                Mode::Cgi => cgi::parse_cgi_head(buf, self.head_request, MAX_RESPONSE_HEADERS)?,
            };
            let Some((n, head)) = parsed else {
                return Ok(Some(at));
            };
            // A head completed by the read that carried it past the limit is still too big
            // (nginx: "upstream sent too big header", 502).
            if n > MAX_RESPONSE_HEAD {
                return Err(BAD_RESPONSE);
            }
            if let Some(to) = head.upgrade {
                // The upstream switched protocols: from here the link is a tunnel.
                let mut response = Response::new(101);
                response.headers = head.headers;
                if !head.raw_headers.is_empty() {
                    response.raw_headers = Some(bytes::Bytes::from(head.raw_headers));
                }
                self.state = State::Finished;
                self.ready.push_back(Progress::Switch {
                    response,
                    upgrade: to,
                    rest: buf[n..].to_vec(),
                });
                return Ok(None);
            }
            if head.status < 200 {
                // An interim response (100, 103): not relayed; the final one follows.
                at += n;
                continue;
            }
            let rest = &buf[n..];
            let ResponseHead {
                status,
                reason,
                headers,
                raw_headers,
                mut framing,
                length,
                local_redirect,
                keep_alive,
                upgrade: _,
            } = head;
            self.keeps = keep_alive;
            if let Some(path) = local_redirect {
                self.state = State::Finished;
                self.ready.push_back(Progress::LocalRedirect(path));
                return Ok(None);
            }
            let mut response = Response::new(status);
            response.reason = reason;
            response.headers = headers;
            if !raw_headers.is_empty() {
                response.raw_headers = Some(bytes::Bytes::from(raw_headers));
            }
            if let Some(map) = &self.redirect {
                map.apply(&mut response.headers);
            }
            let bodiless = framing.is_finished();
            self.ready.push_back(Progress::Head {
                response,
                length,
                bodiless,
            });
            if bodiless {
                self.state = State::Finished;
                // Bytes after a bodiless head are not an answer to anything.
                self.reusable = self.keeps && rest.is_empty();
                return Ok(None);
            }
            // Body bytes that came with the head are relayed first.
            let (data, outcome) = if rest.is_empty() {
                (Vec::new(), Outcome::More)
            } else {
                relay(&mut framing, rest)
            };
            self.state = State::Body(framing);
            self.push_body(data, outcome);
            return Ok(None);
        }
    }
}

fn failure_detail(f: &Failure) -> String {
    match f {
        Failure::Timeout => "timed out".into(),
        Failure::Connect(e) | Failure::Io(e) | Failure::Spawn(e) => e.clone(),
    }
}

/// The status, the page's sentence, and what the log line says.
fn failure_answer(f: &Failure, mode: Mode) -> (u16, &'static str, &'static str) {
    match (f, mode) {
        (Failure::Timeout, Mode::Proxy) => (
            504,
            "The upstream server did not answer in time.",
            "did not answer in time",
        ),
        (Failure::Timeout, Mode::Cgi) => (
            504,
            "The script did not answer in time.",
            "did not answer in time",
        ),
        (Failure::Connect(_), _) => (
            502,
            "The upstream server could not be reached.",
            "could not be reached",
        ),
        (Failure::Spawn(_), _) => (502, "The script could not be started.", "could not start"),
        (Failure::Io(_), _) => (
            502,
            "The upstream connection broke before a response.",
            "broke the connection before a response",
        ),
    }
}

/// Remove the upstream's framing from `d`: the bytes to send, and whether the body is complete
/// (anything after it is dropped) or its framing broken. An answer streams through, so it has
/// no body ceiling; its chunked lines are bounded all the same.
fn relay(framing: &mut Decoder, d: &[u8]) -> (Vec<u8>, Outcome) {
    if framing.ends_at_close() && !framing.is_finished() {
        // Close-delimited: every byte is body.
        return (d.to_vec(), Outcome::More);
    }
    let mut out = Vec::with_capacity(d.len());
    match framing.decode(d, &Limits::streaming(), |b| out.extend_from_slice(b)) {
        Ok((_, true)) => (out, Outcome::End),
        Ok((_, false)) => (out, Outcome::More),
        Err(_) => (out, Outcome::Broken),
    }
}
