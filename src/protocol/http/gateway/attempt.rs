//! One exchange's link and what may be tried again on it, the same for an HTTP/1 connection
//! and an HTTP/2 stream: the route's servers tried so far, the request kept while it may be
//! sent again, a kept connection's one retry, and the link's end held until its input is read.

use super::{Exchange, Failure, Gateway, Pending};
use crate::protocol::{Dial, LinkError, LinkEvent, LinkId, Links};

/// The link an exchange goes through, and what a retry or failover needs.
#[derive(Debug)]
pub struct Attempt {
    pub pending: Pending,
    pub link: LinkId,
    /// What the link was opened with, and which route and server it goes to.
    dial: Dial,
    route: usize,
    server: usize,
    /// The route's servers tried so far, a bit each.
    tried: u64,
    /// The request as sent, kept while a retry or failover could send it again: no body byte
    /// has gone since and no answer byte has come.
    pub resend: Option<Vec<u8>>,
    pub connected: bool,
    /// The link is a kept connection (one retry allowed if it fails before any answer).
    reused: bool,
    retried: bool,
    /// The link ended (`None`: by its `Eof`) and `pending` has not been told yet: the input
    /// still in the link goes first.
    link_end: Option<Option<LinkError>>,
}

impl Attempt {
    /// Open the exchange's link and queue its head and `body` (a body known whole), closing
    /// its write side after them when `finish`. With `resend`, what was queued is kept to be
    /// sent again (only an upstream's request: a script's head is empty).
    pub fn open(
        links: &mut Links,
        ex: Exchange,
        body: Option<&[u8]>,
        finish: bool,
        resend: bool,
    ) -> Self {
        let link = links.open(ex.dial.clone());
        links.out(link).push_bytes(&ex.head);
        if let Some(b) = body {
            links.out(link).push_bytes(b);
        }
        if finish {
            links.finish(link);
        }
        let resend = (resend && !ex.head.is_empty()).then(|| {
            let mut r = ex.head;
            r.extend_from_slice(body.unwrap_or_default());
            r
        });
        Attempt {
            pending: ex.pending,
            link,
            dial: ex.dial,
            route: ex.route,
            server: ex.server,
            tried: 1u64.checked_shl(ex.server as u32).unwrap_or(0),
            resend,
            connected: false,
            reused: false,
            retried: false,
            link_end: None,
        }
    }

    /// The link connected (`reused`: a kept connection).
    pub fn connected(&mut self, reused: bool) {
        self.connected = true;
        self.reused = reused;
    }

    /// The link ended (`Eof` or `Failed`). Before any answer, a refused or unconnected link
    /// goes to the route's next upstream, and a kept connection the upstream had closed
    /// meanwhile is tried once more on a fresh one (nginx and Go's transport do the same):
    /// true when the request went out again on a new link. Else the end is held for
    /// [`next_input`](Self::next_input).
    pub fn ended(&mut self, gateway: &Gateway, links: &mut Links, ev: LinkEvent) -> bool {
        let quiet = !self.pending.started() && links.input(self.link).is_empty();
        if quiet && self.resend.is_some() {
            let again = if !self.connected {
                // Refused: the next upstream of the route, if one is left.
                let why = match &ev {
                    LinkEvent::Failed(LinkError::Connect(e)) => {
                        format!("could not be reached: {e}")
                    }
                    LinkEvent::Failed(e) => format!("failed while connecting: {e}"),
                    _ => "closed the connection while it was being made".to_string(),
                };
                self.fail_over(gateway, &why)
            } else if self.reused && !self.retried {
                // A kept connection the upstream had closed meanwhile: once more, on a fresh one.
                self.retried = true;
                Some(self.dial.fresh())
            } else {
                None
            };
            if let Some(dial) = again {
                self.redial(links, dial);
                return true;
            }
        }
        self.link_end = Some(match ev {
            LinkEvent::Failed(e) => Some(e),
            _ => None,
        });
        false
    }

    /// The deadline passed: a link that never connected goes to the route's next upstream, if
    /// one is left (true).
    pub fn timed_out_unconnected(&mut self, gateway: &Gateway, links: &mut Links) -> bool {
        if !self.connected && self.resend.is_some() {
            if let Some(dial) = self.fail_over(gateway, "did not connect in time") {
                self.redial(links, dial);
                return true;
            }
        }
        false
    }

    /// Close the link and make the answer a timeout.
    pub fn close_timed_out(&mut self, links: &mut Links) {
        links.close(self.link);
        self.link_end = None;
        self.pending.fail(Failure::Timeout);
    }

    /// `Progress::Wait`: feed `pending` what the link brought, else tell it the link's end;
    /// false when there is nothing to do until the link says more.
    pub fn next_input(&mut self, links: &mut Links) -> bool {
        let input = links.input(self.link);
        if !input.is_empty() {
            self.pending.feed(input.data());
            input.clear();
            self.resend = None;
            return true;
        }
        match self.link_end.take() {
            Some(None) => self.pending.end(),
            Some(Some(e)) => self.pending.fail(Failure::from(e)),
            None => return false,
        }
        true
    }

    /// The next upstream of the route, if one is left; `why` the current one is left out.
    fn fail_over(&mut self, gateway: &Gateway, why: &str) -> Option<Dial> {
        let (s, dial, label) = gateway.failover(self.route, self.server, self.tried)?;
        self.pending
            .log_left_out(why, gateway.config().fail_timeout, &label);
        self.server = s;
        self.tried |= 1u64.checked_shl(s as u32).unwrap_or(0);
        self.pending.relabel(label);
        Some(dial)
    }

    /// Send the kept request again on a new link.
    fn redial(&mut self, links: &mut Links, dial: Dial) {
        links.close(self.link);
        let link = links.open(dial.clone());
        if let Some(req) = &self.resend {
            links.out(link).push_bytes(req);
        }
        self.link = link;
        self.dial = dial;
        self.connected = false;
        self.reused = false;
    }
}
