//! Kernel TLS: once rustls has done the handshake, the record layer (encrypt, decrypt, frame)
//! can move into the kernel (`TCP_ULP "tls"`, then `TLS_TX` and `TLS_RX` with the traffic
//! keys rustls hands out), so that a file region leaves with `sendfile` again and plaintext
//! with plain `writev`/`recvmsg`. rustls keeps nothing of the connection after that.
//!
//! - **One probe per process.** The first try that the kernel refuses for want of the `tls`
//!   module (`ENOENT`; the kernels these tests run on are built without `CONFIG_TLS`) marks
//!   kernel TLS absent for the process: no later connection asks, nothing is logged above
//!   debug, and rustls carries every byte as before.
//! - **Keys.** [`crypto_info`] maps rustls's `ExtractedSecrets` onto linux/tls.h's
//!   `tls12_crypto_info_*` for AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305 under TLS 1.2
//!   and 1.3, with the sequence numbers rustls had reached. Other suites stay on rustls.
//! - **Nonces under TLS 1.2 AES-GCM.** rustls makes each record's explicit nonce as a fixed
//!   64-bit value E xor the sequence number; the kernel counts up from the `iv` it is given.
//!   Given E as is, its first record would reuse the nonce of rustls's first (Finished), which
//!   breaks GCM. So the kernel starts past the aligned block of values rustls can have used
//!   ([`tls12_gcm_explicit_start`]) and cannot reach it again in 2^63 records.
//! - **Records that are not data.** `recvmsg` reports each one's type (`TLS_GET_RECORD_TYPE`):
//!   `close_notify` is the peer's EOF, other warnings are skipped as rustls skips them, any
//!   other alert ends the connection, and so does a handshake message (a TLS 1.3 KeyUpdate,
//!   a TLS 1.2 renegotiation), after our `close_notify`: rustls 0.23 offers the
//!   `KernelConnection` that could follow a key update only on its unbuffered connection,
//!   and the buffered `ServerConnection` used here gives out keys with
//!   `dangerous_extract_secrets` alone. Our `close_notify` goes out as an alert record.
//! - **Record limits.** rustls changes keys (TLS 1.3) or closes (TLS 1.2) before a suite's
//!   confidentiality limit (2^24 records for AES-GCM); the kernel does neither, so the
//!   records sent are counted (an upper bound from bytes and calls, checked against the
//!   kernel's own count when it nears the limit) and the connection is closed (with
//!   `close_notify`) before it.
//!
//! The machines tincan is built on lack `CONFIG_TLS`, so there nothing here past [`attach`]'s
//! first system call runs: the key mapping is checked against a software model of the
//! kernel's record layer (tests below) and the socket side (recvmsg with record types, alerts)
//! on a plain socket. `scripts/ktls-vm` runs the integration test (tests/tls.rs, every suite
//! under every model) in a qemu guest whose kernel has TLS, where `/proc/net/tls_stat` proves
//! the connections moved.

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU8, Ordering};

use rustls::{ConnectionTrafficSecrets, ServerConnection, SupportedCipherSuite};
use socket2::Socket;

use crate::model::io::{self as cio, Flushed, ReadOutcome};
use crate::protocol::{Outbox, ReadBuf};
use crate::sys::ktls::{self as sys, CryptoInfo, Direction, RecordType};

/// Kernel TLS in this process: not yet tried.
const UNKNOWN: u8 = 0;
/// The kernel took `TCP_ULP "tls"` once.
const PRESENT: u8 = 1;
/// The kernel has no `tls` upper-layer protocol: never asked again.
const ABSENT: u8 = 2;

/// Whether this process's kernel offers TLS ([`UNKNOWN`], [`PRESENT`], [`ABSENT`]).
static KERNEL: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Suites whose keys the kernel refused (one bit per [`Suite::bit`]): not tried again, since
/// a refusal after rustls gave its keys away costs the connection.
static REFUSED: AtomicU8 = AtomicU8::new(0);

/// Records a TLS record type names (RFC 8446 §5.1).
const ALERT: RecordType = 21;
const HANDSHAKE: RecordType = 22;

/// `close_notify(0)` and `user_canceled(90)` (RFC 8446 §6), and the warning level (§6, RFC
/// 5246 §7.2).
const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;
const WARNING: u8 = 1;

/// How far below a suite's record limit the connection stops: more than one flush can send
/// ([`cio::TURN`] in records of at least 4 KiB, plus one per call).
const LIMIT_MARGIN: u64 = 1 << 16;

/// The kernel's ciphers this maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cipher {
    AesGcm128,
    AesGcm256,
    Chacha20Poly1305,
}

/// A negotiated suite the kernel can take over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Suite {
    tls13: bool,
    cipher: Cipher,
    /// Records one key may protect (rustls's `confidentiality_limit`).
    limit: u64,
}

impl Suite {
    /// The suite rustls negotiated, if the kernel has its cipher.
    pub fn of(suite: SupportedCipherSuite) -> Option<Suite> {
        use rustls::CipherSuite as C;
        let (tls13, limit) = match suite {
            SupportedCipherSuite::Tls12(s) => (false, s.common.confidentiality_limit),
            SupportedCipherSuite::Tls13(s) => (true, s.common.confidentiality_limit),
        };
        let cipher = match suite.suite() {
            C::TLS13_AES_128_GCM_SHA256
            | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => Cipher::AesGcm128,
            C::TLS13_AES_256_GCM_SHA384
            | C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => Cipher::AesGcm256,
            C::TLS13_CHACHA20_POLY1305_SHA256
            | C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => Cipher::Chacha20Poly1305,
            _ => return None,
        };
        Some(Suite {
            tls13,
            cipher,
            limit,
        })
    }

    fn bit(self) -> u8 {
        let c = match self.cipher {
            Cipher::AesGcm128 => 0,
            Cipher::AesGcm256 => 1,
            Cipher::Chacha20Poly1305 => 2,
        };
        1 << (c + 3 * u8::from(self.tls13))
    }

    fn version(self) -> u16 {
        if self.tls13 {
            libc::TLS_1_3_VERSION
        } else {
            libc::TLS_1_2_VERSION
        }
    }

    /// Worth a try in this process: the kernel is not known to lack TLS or this suite.
    pub fn worth_trying(self) -> bool {
        KERNEL.load(Ordering::Relaxed) != ABSENT
            && REFUSED.load(Ordering::Relaxed) & self.bit() == 0
    }
}

/// How [`attach`] ended.
pub(crate) enum Attached {
    /// The kernel has the record layer.
    Kernel(KernelTls),
    /// The kernel declined before rustls gave anything away: go on with rustls.
    Declined(Box<ServerConnection>),
    /// rustls gave its keys away and the kernel then refused them: the connection cannot go
    /// on (nothing holds its keys) and must be closed.
    Broken(io::Error),
}

/// Move `conn`'s record layer into the kernel. The caller has checked what the kernel cannot
/// see: the handshake is done, rustls holds no ciphertext to send (the TLS 1.3 tickets are
/// out) and none received (the bytes it took end on a record boundary), and `suite` is
/// `conn`'s.
pub(crate) fn attach(sock: &Socket, conn: ServerConnection, suite: Suite) -> Attached {
    if let Err(e) = sys::attach_ulp(sock.as_fd()) {
        let absent = matches!(
            e.raw_os_error(),
            // No `tls` module (or no right to load it); a kernel without TCP_ULP at all. Not
            // EOPNOTSUPP: that is a socket that is not TCP (a Unix listener), this one only.
            Some(libc::ENOENT | libc::ENOPROTOOPT)
        );
        if absent && KERNEL.swap(ABSENT, Ordering::Relaxed) != ABSENT {
            tracing::debug!("no kernel TLS here ({e}): rustls encrypts every byte");
        }
        return Attached::Declined(Box::new(conn));
    }
    if KERNEL.swap(PRESENT, Ordering::Relaxed) != PRESENT {
        tracing::debug!("kernel TLS in use: file bodies leave with sendfile");
    }
    let secrets = match conn.dangerous_extract_secrets() {
        Ok(s) => s,
        Err(e) => return Attached::Broken(io::Error::other(e)),
    };
    let tx_seq = secrets.tx.0;
    let keys = [
        (Direction::Tx, crypto_info(suite, Direction::Tx, secrets.tx)),
        (Direction::Rx, crypto_info(suite, Direction::Rx, secrets.rx)),
    ];
    for (dir, info) in keys {
        let set = match info {
            Some(mut info) => sys::set_crypto(sock.as_fd(), dir, &mut info),
            None => Err(io::Error::other("rustls gave keys of another cipher")),
        };
        if let Err(e) = set {
            REFUSED.fetch_or(suite.bit(), Ordering::Relaxed);
            tracing::debug!("the kernel refused the {suite:?} keys ({dir:?}): {e}");
            return Attached::Broken(e);
        }
    }
    Attached::Kernel(KernelTls {
        suite,
        records: tx_seq,
        alert: false,
    })
}

/// One direction's keys in the kernel's layout; `None` if the secrets are not of `suite`'s
/// cipher (rustls and [`Suite::of`] disagree).
pub(crate) fn crypto_info(
    suite: Suite,
    dir: Direction,
    (seq, secrets): (u64, ConnectionTrafficSecrets),
) -> Option<CryptoInfo> {
    let version = suite.version();
    let rec_seq = seq.to_be_bytes();
    // TLS 1.3 and ChaCha20 (RFC 8446 §5.3, RFC 7905 §2): nonce = the 12-byte IV xor the
    // sequence number, which the kernel does from `salt || iv` as rustls does from its IV.
    // TLS 1.2 AES-GCM (RFC 5288 §3): salt = the IV's first 4 bytes; the other 8 are the first
    // explicit nonce the kernel sends.
    let gcm = |iv: &[u8]| -> Option<([u8; 4], [u8; 8])> {
        let salt = iv.get(..4)?.try_into().ok()?;
        let explicit: [u8; 8] = iv.get(4..12)?.try_into().ok()?;
        let explicit = if suite.tls13 || dir == Direction::Rx {
            explicit
        } else {
            tls12_gcm_explicit_start(u64::from_be_bytes(explicit), seq).to_be_bytes()
        };
        Some((salt, explicit))
    };
    let info = |cipher_type| libc::tls_crypto_info {
        version,
        cipher_type,
    };
    Some(match (suite.cipher, secrets) {
        (Cipher::AesGcm128, ConnectionTrafficSecrets::Aes128Gcm { key, iv }) => {
            let (salt, iv) = gcm(iv.as_ref())?;
            CryptoInfo::AesGcm128(libc::tls12_crypto_info_aes_gcm_128 {
                info: info(libc::TLS_CIPHER_AES_GCM_128),
                iv,
                key: key.as_ref().try_into().ok()?,
                salt,
                rec_seq,
            })
        }
        (Cipher::AesGcm256, ConnectionTrafficSecrets::Aes256Gcm { key, iv }) => {
            let (salt, iv) = gcm(iv.as_ref())?;
            CryptoInfo::AesGcm256(libc::tls12_crypto_info_aes_gcm_256 {
                info: info(libc::TLS_CIPHER_AES_GCM_256),
                iv,
                key: key.as_ref().try_into().ok()?,
                salt,
                rec_seq,
            })
        }
        (Cipher::Chacha20Poly1305, ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv }) => {
            CryptoInfo::Chacha20Poly1305(libc::tls12_crypto_info_chacha20_poly1305 {
                info: info(libc::TLS_CIPHER_CHACHA20_POLY1305),
                iv: iv.as_ref().try_into().ok()?,
                key: key.as_ref().try_into().ok()?,
                salt: [],
                rec_seq,
            })
        }
        _ => return None,
    })
}

/// The first explicit nonce the kernel may send under TLS 1.2 AES-GCM, after rustls sent
/// records `0..seq` with the nonces `fixed ^ j`. Those all lie in the block of `fixed`'s
/// value with its low bits (enough to count to `seq`) free; the kernel, which adds one per
/// record, starts just past that block and would need 2^64 minus the block's size records
/// to come back to it.
pub(crate) fn tls12_gcm_explicit_start(fixed: u64, seq: u64) -> u64 {
    let low = seq.checked_next_power_of_two().map_or(u64::MAX, |p| p - 1);
    (fixed | low).wrapping_add(1)
}

/// What a record that is not application data means for the connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Control {
    /// `close_notify`: the peer's EOF.
    Closed,
    /// A warning to skip (TLS 1.2 warnings; `user_canceled`).
    Skip,
    /// The connection cannot go on; why, in words.
    Fail(String),
}

/// Read a record of type `typ` (not application data) with payload `body` (RFC 8446 §6,
/// RFC 5246 §7.2; what rustls does with alerts in `CommonState::process_alert`).
pub(crate) fn control(tls13: bool, typ: RecordType, body: &[u8]) -> Control {
    match (typ, body) {
        (ALERT, &[_, CLOSE_NOTIFY]) => Control::Closed,
        (ALERT, &[WARNING, d]) if !tls13 || d == USER_CANCELED => Control::Skip,
        (ALERT, &[level, d]) => Control::Fail(format!(
            "the peer sent TLS alert {d} (level {level}) and the connection ends"
        )),
        (ALERT, _) => Control::Fail("the peer sent a malformed TLS alert".into()),
        (HANDSHAKE, _) => Control::Fail(
            "the peer sent a TLS handshake message (a key update) after the handshake, which \
             kernel TLS here cannot follow; the connection ends"
                .into(),
        ),
        (t, _) => Control::Fail(format!(
            "the peer sent a TLS record of type {t} after the handshake"
        )),
    }
}

/// A connection whose records the kernel encrypts and decrypts.
pub(crate) struct KernelTls {
    suite: Suite,
    /// Records sent under the current key: an upper bound, made exact when near the limit.
    records: u64,
    /// `close_notify` waits to be sent.
    alert: bool,
}

impl KernelTls {
    /// A connection already in the kernel's hands (tests: a plain socket stands in for one).
    #[cfg(test)]
    pub fn for_test(suite: Suite, records: u64) -> KernelTls {
        KernelTls {
            suite,
            records,
            alert: false,
        }
    }

    /// `close_notify` is queued and not yet sent.
    pub fn wants_write(&self) -> bool {
        self.alert
    }

    /// Queue `close_notify` (sent after the outbox, by [`flush`](Self::flush)).
    pub fn notify_close(&mut self) {
        self.alert = true;
    }

    /// Read plaintext into `input`. A `close_notify` is the EOF; a warning is skipped; any
    /// other record that is not data is an error for this connection.
    pub fn read_into(&mut self, sock: &Socket, input: &mut ReadBuf) -> io::Result<ReadOutcome> {
        loop {
            let spare = input.spare(cio::READ_CHUNK);
            let asked = spare.len();
            let got = match sys::recv_record(sock.as_fd(), spare) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(ReadOutcome::WouldBlock)
                }
                Err(e) => return Err(e),
            };
            if got.record_type != sys::APPLICATION_DATA {
                // Left in the spare room, uncommitted: the session never sees these bytes.
                match control(self.suite.tls13, got.record_type, &spare[..got.len]) {
                    Control::Closed => return Ok(ReadOutcome::Eof),
                    Control::Skip => continue,
                    Control::Fail(why) => {
                        if got.record_type == HANDSHAKE {
                            // A key update or a renegotiation this connection cannot follow:
                            // say goodbye under the keys the peer still reads.
                            goodbye(sock);
                        }
                        return Err(io::Error::new(io::ErrorKind::InvalidData, why));
                    }
                }
            }
            if got.len == 0 {
                return Ok(ReadOutcome::Eof);
            }
            input.commit(got.len);
            return Ok(ReadOutcome::Data {
                n: got.len,
                drained: got.len < asked,
            });
        }
    }

    /// Send as much of `out` as the socket takes now (at most about `turn` bytes), then the
    /// queued `close_notify`. The kernel frames and encrypts; file regions go with sendfile.
    pub fn flush(
        &mut self,
        sock: &Socket,
        out: &mut Outbox,
        turn: usize,
        cork: &mut cio::Cork,
    ) -> io::Result<Flushed> {
        // Not `closing`: MSG_MORE on the last bytes would hold the kernel's record open; the
        // close_notify after them closes it, but nothing is gained by relying on that.
        let done = cio::flush_turn(sock, out, false, cork, turn)?;
        self.count(sock, &done)?;
        if done.paused || !out.is_empty() || !self.alert {
            return Ok(done);
        }
        loop {
            match sys::send_record(sock.as_fd(), ALERT, &[WARNING, CLOSE_NOTIFY]) {
                Ok(_) => {
                    self.alert = false;
                    return Ok(done);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Flushed {
                        paused: true,
                        ..done
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Count the records `done` sent; near the suite's limit, ask the kernel for its exact
    /// count, and stop the connection before the limit (RFC 8446 §5.5).
    fn count(&mut self, sock: &Socket, done: &Flushed) -> io::Result<()> {
        // A call makes at most one record per 16 KiB it takes, and one more; sendfile's
        // pieces may cut records at page boundaries, hence 4 KiB.
        let most = done.calls as u64 + (done.wrote as u64).div_ceil(4096);
        self.records = self.records.saturating_add(most);
        let stop = self.suite.limit.saturating_sub(LIMIT_MARGIN);
        if self.records < stop {
            return Ok(());
        }
        let mut info = blank(self.suite.cipher);
        sys::get_crypto(sock.as_fd(), Direction::Tx, &mut info)?;
        self.records = info.rec_seq();
        if self.records < stop {
            return Ok(());
        }
        goodbye(sock);
        Err(io::Error::other(
            "the connection has sent as many TLS records as its cipher suite allows under one \
             key, and kernel TLS cannot change keys; closing it",
        ))
    }
}

/// Send `close_notify` before closing a connection that cannot go on, best effort: the peer
/// then knows that what it read was all there is (RFC 8446 §6.1).
fn goodbye(sock: &Socket) {
    let _ = sys::send_record(sock.as_fd(), ALERT, &[WARNING, CLOSE_NOTIFY]);
}

/// An all-zero crypto_info of `cipher`, for the kernel to fill in.
fn blank(cipher: Cipher) -> CryptoInfo {
    let info = libc::tls_crypto_info {
        version: 0,
        cipher_type: 0,
    };
    match cipher {
        Cipher::AesGcm128 => CryptoInfo::AesGcm128(libc::tls12_crypto_info_aes_gcm_128 {
            info,
            iv: [0; 8],
            key: [0; 16],
            salt: [0; 4],
            rec_seq: [0; 8],
        }),
        Cipher::AesGcm256 => CryptoInfo::AesGcm256(libc::tls12_crypto_info_aes_gcm_256 {
            info,
            iv: [0; 8],
            key: [0; 32],
            salt: [0; 4],
            rec_seq: [0; 8],
        }),
        Cipher::Chacha20Poly1305 => {
            CryptoInfo::Chacha20Poly1305(libc::tls12_crypto_info_chacha20_poly1305 {
                info,
                iv: [0; 12],
                key: [0; 32],
                salt: [],
                rec_seq: [0; 8],
            })
        }
    }
}

/// Where the bytes handed to rustls stand in the record framing (RFC 8446 §5.1: a 5-byte
/// header whose last two bytes are the length, then that many bytes). rustls keeps a partial
/// record to itself and offers no way to ask; the kernel can take over only on a boundary,
/// or the bytes rustls holds would be lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Framing {
    /// Header bytes seen of the next record (0..5).
    header: u8,
    /// The length bytes of that header, as far as seen.
    len: [u8; 2],
    /// Payload bytes of the current record still to come.
    left: u16,
}

/// A TLS record header's size.
const HEADER: u8 = 5;

impl Framing {
    /// `bytes` went to rustls after everything before.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.left > 0 {
                let n = bytes.len().min(usize::from(self.left));
                self.left -= n as u16;
                bytes = &bytes[n..];
                continue;
            }
            match self.header {
                3 | 4 => self.len[usize::from(self.header) - 3] = bytes[0],
                _ => {}
            }
            self.header += 1;
            bytes = &bytes[1..];
            if self.header == HEADER {
                self.header = 0;
                self.left = u16::from_be_bytes(self.len);
            }
        }
    }

    /// Every record handed over is whole.
    pub fn at_boundary(&self) -> bool {
        self.header == 0 && self.left == 0
    }
}

#[cfg(test)]
pub(super) mod tests;
