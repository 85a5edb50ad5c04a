//! `--max-connections` for a server whose workers accept on their own: event-loop threads of
//! one process, or prefork's worker processes, whose counts live in a page they share
//! ([`crate::sys::SharedCounters`], mapped before the fork).
//!
//! Each worker counts its own connections in a cell of its own, and the server's count is the
//! sum of the cells. A cell of its own is what lets prefork's supervisor give back the slots of
//! a worker that died (killed, or crashed) without knowing what it held: it zeroes the dead
//! worker's cell, and nobody else writes it.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

/// Attempts [`Cap::try_take`] makes when another worker took the last slot at the same moment.
const TAKE_TRIES: usize = 3;

/// One worker's view of the shared cap.
pub(crate) struct Cap<'a> {
    /// One cell per worker; the server's connections are their sum.
    cells: &'a [AtomicUsize],
    /// This worker's cell.
    mine: usize,
    /// The cap for the whole server.
    max: usize,
    /// The most this worker may hold whatever the others do: what its process's descriptors
    /// hold (prefork), or `max`.
    own_max: usize,
}

impl<'a> Cap<'a> {
    pub(crate) fn new(cells: &'a [AtomicUsize], mine: usize, max: usize, own_max: usize) -> Self {
        assert!(mine < cells.len(), "worker {mine} has no cell");
        Cap {
            cells,
            mine,
            max: max.max(1),
            own_max: own_max.max(1),
        }
    }

    /// Connections open in the whole server.
    fn total(&self) -> usize {
        self.cells.iter().map(|c| c.load(SeqCst)).sum()
    }

    /// There is a slot for one more connection here (a hint: another worker may take it first).
    pub(crate) fn has_room(&self) -> bool {
        self.cells[self.mine].load(SeqCst) < self.own_max && self.total() < self.max
    }

    /// Take a slot for a connection about to be accepted; false at the cap. A slot taken is
    /// given back with [`Cap::give_back`] when the connection ends (or was never accepted).
    ///
    /// Exact, with no lock: a worker adds to its cell first and reads the sum after, keeping
    /// the slot only if the sum is within the cap. Among slots held at once, the one whose
    /// increment came last (SeqCst orders them all) was kept after a read that saw every
    /// other, so their number is within the cap. Two workers racing for the last slot may
    /// both give it back; then the next attempt, or the next look at the listeners, takes it.
    pub(crate) fn try_take(&self) -> bool {
        let mine = &self.cells[self.mine];
        if mine.load(SeqCst) >= self.own_max {
            return false;
        }
        for _ in 0..TAKE_TRIES {
            if self.total() >= self.max {
                return false;
            }
            mine.fetch_add(1, SeqCst);
            if self.total() <= self.max {
                return true;
            }
            mine.fetch_sub(1, SeqCst);
        }
        false
    }

    /// `n` connections this worker held have ended.
    pub(crate) fn give_back(&self, n: usize) {
        if n > 0 {
            self.cells[self.mine].fetch_sub(n, SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_counts_every_workers_connections_and_a_worker_its_own_ceiling() {
        let cells: Vec<AtomicUsize> = (0..2).map(|_| AtomicUsize::new(0)).collect();
        let (a, b) = (Cap::new(&cells, 0, 5, 4), Cap::new(&cells, 1, 5, 4));
        for _ in 0..4 {
            assert!(a.try_take());
        }
        assert!(!a.try_take(), "past its own ceiling");
        assert!(!a.has_room());
        assert!(b.has_room() && b.try_take());
        assert!(!b.try_take(), "past the server's cap");
        a.give_back(1);
        assert!(
            b.try_take(),
            "a slot freed in another worker is free for all"
        );
        // A worker that died: its cell is zeroed, and its slots are everyone's again.
        cells[0].store(0, SeqCst);
        assert_eq!(b.cells[1].load(SeqCst), 2);
        assert!(a.try_take() && a.try_take() && a.try_take());
        assert!(!a.try_take() && !b.try_take());
    }

    /// Many threads hammering one cap never hold more than it, and end with none held.
    #[test]
    fn racing_workers_never_hold_more_than_the_cap() {
        const MAX: usize = 3;
        let cells: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
        let held = AtomicUsize::new(0);
        let worst = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for i in 0..4 {
                let (cells, held, worst) = (&cells, &held, &worst);
                s.spawn(move || {
                    let cap = Cap::new(cells, i, MAX, usize::MAX);
                    for _ in 0..20_000 {
                        if cap.try_take() {
                            let now = held.fetch_add(1, SeqCst) + 1;
                            worst.fetch_max(now, SeqCst);
                            held.fetch_sub(1, SeqCst);
                            cap.give_back(1);
                        }
                    }
                });
            }
        });
        assert!(worst.load(SeqCst) <= MAX, "{} held", worst.load(SeqCst));
        assert_eq!(cells.iter().map(|c| c.load(SeqCst)).sum::<usize>(), 0);
    }
}
