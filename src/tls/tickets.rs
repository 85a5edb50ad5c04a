//! TLS session ticket keys that every process of a server agrees on, now and after each
//! rotation, without talking to each other.
//!
//! A ticket (RFC 8446 §4.6.1, RFC 5077) is the session, sealed with a key only the server
//! knows; a client that offers it back resumes without a key exchange's signature. Under
//! prefork the client's next connection may land on another worker, which must open what its
//! sibling sealed. rustls's own ticketer cannot promise that: each process makes its next key
//! at random when the current one's time is up, and it refuses to open a ticket longer than
//! the longest it has sealed itself, so a worker that has sealed none refuses every ticket.
//!
//! Here the key of each period is derived (HKDF-SHA256, RFC 5869) from one secret drawn at
//! start, before the workers fork: any process computes the same key for the same period, and
//! a worker restarted later opens the tickets of the ones before it. A ticket is accepted in
//! the period it was sealed and the next, and refused past [`MAX_TICKET`] bytes before any
//! decryption is tried. The secret lives in memory only, as nginx's keys do when it makes
//! them: a restart of the whole server starts afresh.

use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf::{self, KeyType, Prk, HKDF_SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

/// How long one key seals new tickets: six hours, as rustls's own ticketer.
const PERIOD_SECS: u64 = 6 * 60 * 60;

/// The longest ticket opened: a session (suite, secret, SNI name up to 255 bytes, ALPN
/// protocol up to 255, times; no client certificates, which tincan does not ask for) is some
/// hundreds of bytes sealed. Anything longer is refused unread, which keeps a forger from
/// probing the key with long ciphertexts (the "partitioning oracle" rustls guards against).
const MAX_TICKET: usize = 2048;

/// A key's name, at the front of each ticket it sealed: a ticket says which period's key opens
/// it without saying when it was made.
const NAME_LEN: usize = 16;

/// Ticket keys derived from one secret (see the module's documentation).
pub struct Tickets {
    secret: Prk,
    /// The keys derived so far: this period's and the one before, at most.
    keys: RwLock<Vec<PeriodKey>>,
}

struct PeriodKey {
    period: u64,
    name: [u8; NAME_LEN],
    key: LessSafeKey,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets").finish_non_exhaustive()
    }
}

/// `len` bytes of HKDF output.
struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl Tickets {
    /// Keys from a secret drawn now from the system's random source.
    pub fn new() -> Result<Tickets, ring::error::Unspecified> {
        let mut secret = [0u8; 32];
        SystemRandom::new().fill(&mut secret)?;
        Ok(Tickets::from_secret(&secret))
    }

    fn from_secret(secret: &[u8; 32]) -> Tickets {
        Tickets {
            secret: hkdf::Salt::new(HKDF_SHA256, b"tincan session tickets").extract(secret),
            keys: RwLock::new(Vec::with_capacity(2)),
        }
    }

    fn derive(&self, period: u64) -> PeriodKey {
        let when = period.to_be_bytes();
        let okm = |label: &[u8], len: usize| {
            let mut out = vec![0u8; len];
            // Fails only for an output longer than 255 hashes (RFC 5869 §2.3).
            self.secret
                .expand(&[label, &when], Len(len))
                .and_then(|okm| okm.fill(&mut out))
                .expect("HKDF output of a key's length");
            out
        };
        let key = UnboundKey::new(
            &CHACHA20_POLY1305,
            &okm(b"key", CHACHA20_POLY1305.key_len()),
        )
        .expect("a key of the AEAD's length");
        let mut name = [0u8; NAME_LEN];
        name.copy_from_slice(&okm(b"name", NAME_LEN));
        PeriodKey {
            period,
            name,
            key: LessSafeKey::new(key),
        }
    }

    /// Run `f` on the key of `period` (`now` or the one before it), derived and kept if it is
    /// not yet; the keys of periods other than `now` and the one before are let go.
    fn with_key<T>(&self, period: u64, now: u64, f: impl FnOnce(&PeriodKey) -> T) -> T {
        {
            let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
            if let Some(k) = keys.iter().find(|k| k.period == period) {
                return f(k);
            }
        }
        let made = self.derive(period);
        let out = f(&made);
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        keys.retain(|k| k.period + 1 >= now && k.period <= now);
        if !keys.iter().any(|k| k.period == period) {
            keys.push(made);
        }
        out
    }

    fn seal(&self, period: u64, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        // Random, as a counter would tell one ticket from the next.
        SystemRandom::new().fill(&mut nonce).ok()?;
        self.with_key(period, period, |k| {
            let mut out = Vec::with_capacity(NAME_LEN + NONCE_LEN + plain.len() + 16);
            out.extend_from_slice(&k.name);
            out.extend_from_slice(&nonce);
            let mut body = plain.to_vec();
            k.key
                .seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&k.name),
                    &mut body,
                )
                .ok()?;
            out.extend_from_slice(&body);
            (out.len() <= MAX_TICKET).then_some(out)
        })
    }

    fn open(&self, period: u64, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() > MAX_TICKET || ticket.len() < NAME_LEN + NONCE_LEN {
            return None;
        }
        let (name, rest) = ticket.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        [period, period.saturating_sub(1)]
            .into_iter()
            .take(if period == 0 { 1 } else { 2 })
            .find_map(|p| {
                self.with_key(p, period, |k| {
                    if k.name[..] != *name {
                        return None;
                    }
                    let mut body = sealed.to_vec();
                    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
                    let n = k
                        .key
                        .open_in_place(nonce, Aad::from(&k.name), &mut body)
                        .ok()?
                        .len();
                    body.truncate(n);
                    Some(body)
                })
            })
    }
}

fn period_now() -> u64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    secs / PERIOD_SECS
}

impl ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        true
    }

    /// The lifetime hint sent with each ticket (RFC 8446 §4.6.1): one period, the least a
    /// ticket stays valid (one sealed at a period's end is opened through the next).
    fn lifetime(&self) -> u32 {
        PERIOD_SECS as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal(period_now(), plain)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        self.open(period_now(), ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &[u8] = b"a session's state, as rustls encodes it";

    #[test]
    fn a_sibling_that_sealed_nothing_opens_the_tickets_of_another() {
        let secret = [7u8; 32];
        let (a, b) = (Tickets::from_secret(&secret), Tickets::from_secret(&secret));
        let t = a.seal(100, SESSION).unwrap();
        assert_eq!(b.open(100, &t).as_deref(), Some(SESSION));
        // And each ticket is new: the same session sealed twice differs.
        assert_ne!(a.seal(100, SESSION).unwrap(), t);
    }

    #[test]
    fn a_ticket_is_opened_in_its_period_and_the_next_and_no_later() {
        let k = Tickets::new().unwrap();
        let t = k.seal(100, SESSION).unwrap();
        assert_eq!(k.open(100, &t).as_deref(), Some(SESSION));
        assert_eq!(k.open(101, &t).as_deref(), Some(SESSION));
        assert_eq!(k.open(102, &t), None);
        assert_eq!(k.open(99, &t), None, "not before it was made either");
        // Keys move on: a ticket sealed in the later period is opened with its own key.
        let later = k.seal(101, SESSION).unwrap();
        assert_ne!(later[..NAME_LEN], t[..NAME_LEN]);
        assert_eq!(k.open(101, &later).as_deref(), Some(SESSION));
        assert!(k.keys.read().unwrap().len() <= 2);
    }

    #[test]
    fn forged_altered_or_overlong_tickets_are_refused() {
        let secret = [7u8; 32];
        let k = Tickets::from_secret(&secret);
        let t = k.seal(5, SESSION).unwrap();
        let other = Tickets::from_secret(&[8u8; 32]);
        assert_eq!(other.open(5, &t), None, "another server's key");
        for i in [0, NAME_LEN, NAME_LEN + NONCE_LEN, t.len() - 1] {
            let mut bad = t.clone();
            bad[i] ^= 1;
            assert_eq!(k.open(5, &bad), None, "byte {i} changed");
        }
        assert_eq!(k.open(5, &t[..NAME_LEN + NONCE_LEN + 3]), None);
        assert_eq!(k.open(5, &t[..3]), None);
        let mut long = t.clone();
        long.resize(MAX_TICKET + 1, 0);
        assert_eq!(k.open(5, &long), None);
        assert_eq!(k.seal(5, &[0u8; MAX_TICKET]), None, "too long to seal");
        assert_eq!(
            k.open(0, &k.seal(0, SESSION).unwrap()).as_deref(),
            Some(SESSION)
        );
    }
}
