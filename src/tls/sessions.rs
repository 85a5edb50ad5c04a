//! The server-side TLS session cache (TLS 1.2 session IDs, RFC 5246 §7.4.1.2), in memory every
//! process of the server shares: a client whose next connection lands on another prefork
//! worker resumes there too, as with nginx's `ssl_session_cache shared`. (Clients with
//! tickets never reach it: those carry their session themselves, see [`super::tickets`].)
//!
//! The cache is a fixed table of slots in an anonymous shared mapping made before the fork
//! ([`crate::sys::SharedCounters`]). Every word of it is an atomic, so processes and threads
//! use it alike, and a reader never sees a torn word. A slot is held through its lock word,
//! which names the holder's pid; a slot held by a process that has died is taken over and
//! emptied. The cache never makes a handshake wait: a slot still held after a short spin is
//! passed over, and a session not stored or not found costs a full handshake, nothing more.
//!
//! A key's slots are one set of [`WAYS`]; when they are full, the oldest gives way. A session
//! is kept [`LIFETIME_SECS`] at most.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::server::StoresServerSessions;

use crate::sys;

const WORD: usize = size_of::<usize>();
/// Words in a slot: 1 KiB with 64-bit words.
const SLOT_WORDS: usize = 128;
/// A slot's words: its lock (the holder's pid, or 0), when its session was stored (seconds
/// since the epoch; 0: empty), the key's and the value's lengths, the key, the value.
const LOCK: usize = 0;
const STORED: usize = 1;
const LENS: usize = 2;
const KEY: usize = 3;
/// The longest key kept: a TLS 1.2 session ID is at most 32 bytes.
const KEY_MAX: usize = 32;
const VALUE: usize = KEY + KEY_MAX / WORD;
/// The longest value kept: rustls's encoding of a session (suite, master secret, SNI name,
/// ALPN protocol, times; no client certificate, which tincan does not ask for) is a few
/// hundred bytes at most. A longer one is not stored.
const VALUE_MAX: usize = (SLOT_WORDS - VALUE) * WORD;
/// Slots a key may occupy.
const WAYS: usize = 4;
/// How long a session may be resumed from the cache: as long as a session ticket's key seals.
pub const LIFETIME_SECS: u64 = 6 * 60 * 60;
/// Tries at a held slot's lock before it is passed over; the holder copies a kilobyte at most.
const SPINS: usize = 2000;

/// The cache (see the module's documentation).
pub struct SharedSessions {
    table: sys::SharedCounters,
    sets: usize,
}

impl std::fmt::Debug for SharedSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSessions")
            .field("slots", &(self.sets * WAYS))
            .finish()
    }
}

/// A slot, held: let go when dropped.
struct Held<'a>(&'a [AtomicUsize]);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0[LOCK].store(0, Ordering::Release);
    }
}

impl Held<'_> {
    /// The slot's value if it holds `key`, stored no earlier than `oldest`.
    fn value_of(&self, key: &[u8], oldest: u64) -> Option<Vec<u8>> {
        let w = self.0;
        let stored = w[STORED].load(Ordering::Relaxed) as u64;
        let lens = w[LENS].load(Ordering::Relaxed);
        let (key_len, value_len) = (lens >> 16, lens & 0xffff);
        if stored == 0 || stored < oldest || key_len != key.len() || value_len > VALUE_MAX {
            return None;
        }
        (read(&w[KEY..VALUE], key_len) == key).then(|| read(&w[VALUE..], value_len))
    }

    fn store(&self, key: &[u8], value: &[u8], now: u64) {
        let w = self.0;
        write(&w[KEY..VALUE], key);
        write(&w[VALUE..], value);
        w[LENS].store(key.len() << 16 | value.len(), Ordering::Relaxed);
        w[STORED].store(now.max(1) as usize, Ordering::Relaxed);
    }
}

/// The first `len` bytes of `words`.
fn read(words: &[AtomicUsize], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len.next_multiple_of(WORD));
    for w in &words[..len.div_ceil(WORD)] {
        out.extend_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
    }
    out.truncate(len);
    out
}

/// `bytes` into the first words of `words`, the last one padded with zeros.
fn write(words: &[AtomicUsize], bytes: &[u8]) {
    for (w, chunk) in words.iter().zip(bytes.chunks(WORD)) {
        let mut b = [0u8; WORD];
        b[..chunk.len()].copy_from_slice(chunk);
        w.store(usize::from_ne_bytes(b), Ordering::Relaxed);
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_secs())
}

/// Whether the process `pid` is gone (so a lock it holds will never be let go).
fn gone(pid: usize) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    matches!(sys::kill(pid, 0), Err(e) if e.raw_os_error() == Some(libc::ESRCH))
}

impl SharedSessions {
    /// A cache of at least `sessions` slots, in memory that processes forked afterwards share.
    pub fn new(sessions: usize) -> std::io::Result<SharedSessions> {
        let sets = sessions.div_ceil(WAYS).max(1);
        Ok(SharedSessions {
            table: sys::SharedCounters::new(sets * WAYS * SLOT_WORDS)?,
            sets,
        })
    }

    /// The slots `key` may occupy. The set is picked by a hash of the key (FNV-1a); keys the
    /// server makes are random, and one a client makes up chooses only which set is looked in.
    fn set(&self, key: &[u8]) -> impl Iterator<Item = &[AtomicUsize]> {
        let h = key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let first = (h % self.sets as u64) as usize * WAYS * SLOT_WORDS;
        self.table.cells()[first..first + WAYS * SLOT_WORDS].chunks_exact(SLOT_WORDS)
    }

    /// Hold `slot`, or `None` if another holds it still after [`SPINS`] tries. A slot whose
    /// holder has died is taken over, and emptied, as its holder may have left it half written.
    fn hold(slot: &[AtomicUsize]) -> Option<Held<'_>> {
        let me = sys::getpid() as usize;
        for spin in 0..SPINS {
            match slot[LOCK].compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Some(Held(slot)),
                Err(0) => {}
                Err(holder) if spin == SPINS / 2 && holder != me && gone(holder) => {
                    if slot[LOCK]
                        .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        slot[STORED].store(0, Ordering::Relaxed);
                        return Some(Held(slot));
                    }
                }
                Err(_) => {}
            }
            std::hint::spin_loop();
        }
        None
    }

    /// Find `key`'s session, and with `remove`, empty its slot.
    fn find(&self, key: &[u8], remove: bool) -> Option<Vec<u8>> {
        if key.len() > KEY_MAX {
            return None;
        }
        let oldest = now_secs().saturating_sub(LIFETIME_SECS);
        self.set(key).find_map(|slot| {
            let held = Self::hold(slot)?;
            let value = held.value_of(key, oldest)?;
            if remove {
                slot[STORED].store(0, Ordering::Relaxed);
            }
            Some(value)
        })
    }
}

impl StoresServerSessions for SharedSessions {
    /// Into the slot that holds `key` already, else an empty or expired one, else the oldest.
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        if key.len() > KEY_MAX || value.len() > VALUE_MAX {
            return false;
        }
        let now = now_secs();
        let oldest = now.saturating_sub(LIFETIME_SECS);
        let mut victim: Option<(u64, &[AtomicUsize])> = None;
        for slot in self.set(&key) {
            let Some(held) = Self::hold(slot) else {
                continue;
            };
            if held.value_of(&key, oldest).is_some() {
                held.store(&key, &value, now);
                return true;
            }
            // Empty and expired slots count as stored at 0: the first to go.
            let stored = slot[STORED].load(Ordering::Relaxed) as u64;
            let age = if stored < oldest { 0 } else { stored };
            if victim.is_none_or(|(a, _)| age < a) {
                victim = Some((age, slot));
            }
        }
        let Some(held) = victim.and_then(|(_, slot)| Self::hold(slot)) else {
            return false;
        };
        held.store(&key, &value, now);
        true
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.find(key, false)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.find(key, true)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Vec<u8> {
        vec![n; 32]
    }

    #[test]
    fn a_session_stored_is_found_replaced_and_taken() {
        let c = SharedSessions::new(16).unwrap();
        assert!(c.put(key(1), b"first".to_vec()));
        assert_eq!(c.get(&key(1)).as_deref(), Some(&b"first"[..]));
        assert_eq!(
            c.get(&key(1)).as_deref(),
            Some(&b"first"[..]),
            "get keeps it"
        );
        assert!(c.put(key(1), b"second, longer than a word".to_vec()));
        assert_eq!(
            c.get(&key(1)).as_deref(),
            Some(&b"second, longer than a word"[..])
        );
        assert_eq!(c.get(&key(2)), None);
        assert_eq!(c.get(&key(1)[..31]), None, "a prefix is another key");
        assert_eq!(
            c.take(&key(1)).as_deref(),
            Some(&b"second, longer than a word"[..])
        );
        assert_eq!(c.get(&key(1)), None, "take removes it");
    }

    #[test]
    fn sizes_past_a_slot_are_refused_and_the_largest_that_fits_is_kept() {
        let c = SharedSessions::new(4).unwrap();
        assert!(!c.put(vec![1; KEY_MAX + 1], b"v".to_vec()));
        assert!(!c.put(key(1), vec![7; VALUE_MAX + 1]));
        assert!(c.put(key(1), vec![7; VALUE_MAX]));
        assert_eq!(c.get(&key(1)), Some(vec![7; VALUE_MAX]));
        assert_eq!(c.get(&[1; KEY_MAX + 1]), None);
        assert!(c.put(Vec::new(), b"an empty key is a key".to_vec()));
        assert_eq!(c.get(&[]).as_deref(), Some(&b"an empty key is a key"[..]));
    }

    #[test]
    fn a_full_set_lets_its_oldest_go_and_expired_sessions_are_not_found() {
        // One set: every key shares the same four slots.
        let c = SharedSessions::new(WAYS).unwrap();
        for n in 1..=WAYS as u8 {
            assert!(c.put(key(n), vec![n]));
        }
        // Make key 2's session the oldest, then store one more.
        let oldest = c
            .set(&key(2))
            .find(|s| read(&s[KEY..VALUE], 32) == key(2))
            .unwrap();
        oldest[STORED].fetch_sub(10, Ordering::Relaxed);
        assert!(c.put(key(9), vec![9]));
        assert_eq!(c.get(&key(2)), None, "the oldest gave way");
        for n in [1, 3, 4, 9] {
            assert_eq!(c.get(&key(n)), Some(vec![n]), "key {n}");
        }
        // Past its lifetime a session is not found, and its slot is the first reused.
        let old = c
            .set(&key(3))
            .find(|s| read(&s[KEY..VALUE], 32) == key(3))
            .unwrap();
        old[STORED].fetch_sub(LIFETIME_SECS as usize + 1, Ordering::Relaxed);
        assert_eq!(c.get(&key(3)), None);
        assert!(c.put(key(10), vec![10]));
        for n in [1, 4, 9, 10] {
            assert_eq!(c.get(&key(n)), Some(vec![n]), "key {n}");
        }
    }

    #[test]
    fn a_slot_held_by_a_live_holder_is_passed_over_and_a_dead_ones_taken_over() {
        let c = SharedSessions::new(WAYS).unwrap();
        assert!(c.put(key(1), vec![1]));
        let slot = c
            .set(&key(1))
            .find(|s| read(&s[KEY..VALUE], 32) == key(1))
            .unwrap();
        // Held by this very process (another thread, say): not found, and no waiting forever.
        slot[LOCK].store(sys::getpid() as usize, Ordering::Relaxed);
        assert_eq!(c.get(&key(1)), None);
        // Held by a process that is gone: taken over, emptied (it may be half written).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id() as usize;
        child.wait().unwrap();
        slot[LOCK].store(dead, Ordering::Relaxed);
        assert_eq!(c.get(&key(1)), None, "emptied");
        assert_eq!(slot[LOCK].load(Ordering::Relaxed), 0, "and let go");
        assert!(c.put(key(1), vec![2]));
        assert_eq!(c.get(&key(1)), Some(vec![2]));
    }
}
