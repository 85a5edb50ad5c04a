//! Which of a route's upstreams takes a request: in turn (round robin), one that refused or
//! timed out a connection left out for `fail_timeout`, each tried at most once per request.

use std::sync::atomic::Ordering;

use super::routes::Kind;
use super::Gateway;
use crate::protocol::Dial;

impl Gateway {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The next server of a proxy route to try: in turn, skipping those tried (`tried`, a bit
    /// per server) and those left out after a failure, unless every untried one is.
    pub(super) fn pick(&self, route: usize, tried: u64) -> Option<usize> {
        let Kind::Proxy { servers, next, .. } = &self.routes[route].kind else {
            return None;
        };
        let n = servers.len();
        let start = next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let untried = |i: &usize| *i >= 64 || tried & (1 << i) == 0;
        let order = (0..n).map(|k| (start + k) % n);
        let live = order
            .clone()
            .filter(untried)
            .find(|&i| servers[i].down_until.load(Ordering::Relaxed) <= now);
        // All left out: try one anyway on a first attempt (nginx does the same, rather than
        // answer 502 without asking anyone).
        live.or_else(|| (tried == 0).then(|| order.clone().find(untried)).flatten())
    }

    /// What a failure log line names: the route and the upstream.
    pub(super) fn label(&self, route: usize, server: usize) -> std::sync::Arc<str> {
        let r = &self.routes[route];
        match &r.kind {
            Kind::Proxy { servers, .. } => servers[server].label.clone(),
            Kind::Cgi(_) => r.prefix.clone().into(),
        }
    }

    /// A connection to `server` of `route` failed or timed out: leave it out for the fail
    /// timeout, and name the next one to try (`tried`: a bit per server already tried), with
    /// its label.
    pub fn failover(
        &self,
        route: usize,
        server: usize,
        tried: u64,
    ) -> Option<(usize, Dial, std::sync::Arc<str>)> {
        let Kind::Proxy { servers, .. } = &self.routes[route].kind else {
            return None;
        };
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(self.cfg.fail_timeout.as_millis()).unwrap_or(u64::MAX));
        servers[server]
            .down_until
            .store(until.max(1), Ordering::Relaxed);
        let next = self.pick(route, tried)?;
        Some((next, servers[next].dial.clone(), self.label(route, next)))
    }

    /// How many servers a route has.
    pub fn servers(&self, route: usize) -> usize {
        match &self.routes[route].kind {
            Kind::Proxy { servers, .. } => servers.len(),
            Kind::Cgi(_) => 1,
        }
    }
}
