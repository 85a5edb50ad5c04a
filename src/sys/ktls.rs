//! Kernel TLS system calls (linux/tls.h; the kernel's Documentation/networking/tls.rst): attach
//! the `tls` upper-layer protocol to a TCP socket, hand it one direction's record keys, and
//! send and receive the records that are not application data (alerts, handshake messages),
//! whose type travels in a control message. What goes into the keys is decided in
//! `model::tls::kernel`; this file only moves bytes across the system-call boundary.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::cvt;

/// A TLS record type (RFC 8446 §5.1, RFC 5246 §6.2.1).
pub type RecordType = u8;

/// `application_data(23)`: what a record without a `TLS_GET_RECORD_TYPE` message carries.
pub const APPLICATION_DATA: RecordType = 23;

/// One direction's record keys in the kernel's layout (`struct tls12_crypto_info_*`, which
/// TLS 1.2 and 1.3 share). Zeroed when dropped: it holds a traffic key.
pub enum CryptoInfo {
    AesGcm128(libc::tls12_crypto_info_aes_gcm_128),
    AesGcm256(libc::tls12_crypto_info_aes_gcm_256),
    Chacha20Poly1305(libc::tls12_crypto_info_chacha20_poly1305),
}

impl CryptoInfo {
    /// The record sequence number the kernel starts from (big-endian in the struct).
    pub fn rec_seq(&self) -> u64 {
        u64::from_be_bytes(match self {
            CryptoInfo::AesGcm128(i) => i.rec_seq,
            CryptoInfo::AesGcm256(i) => i.rec_seq,
            CryptoInfo::Chacha20Poly1305(i) => i.rec_seq,
        })
    }

    /// The struct's address and size, as setsockopt(2) and getsockopt(2) take them.
    fn raw(&mut self) -> (*mut libc::c_void, usize) {
        match self {
            CryptoInfo::AesGcm128(i) => (std::ptr::from_mut(i).cast(), size_of_val(i)),
            CryptoInfo::AesGcm256(i) => (std::ptr::from_mut(i).cast(), size_of_val(i)),
            CryptoInfo::Chacha20Poly1305(i) => (std::ptr::from_mut(i).cast(), size_of_val(i)),
        }
    }
}

impl Drop for CryptoInfo {
    fn drop(&mut self) {
        let (p, n) = self.raw();
        for i in 0..n {
            // SAFETY: `p..p+n` is the struct this value owns (`raw`), borrowed mutably here;
            // its fields are plain integers and byte arrays, for which zero is a valid value.
            // Volatile, so the compiler cannot drop the writes to memory about to be freed.
            unsafe { std::ptr::write_volatile(p.cast::<u8>().add(i), 0) };
        }
    }
}

/// Which half of the connection a [`CryptoInfo`] is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `TLS_TX`: what the kernel encrypts.
    Tx,
    /// `TLS_RX`: what it decrypts.
    Rx,
}

impl Direction {
    fn optname(self) -> libc::c_int {
        match self {
            Direction::Tx => libc::TLS_TX,
            Direction::Rx => libc::TLS_RX,
        }
    }
}

/// Attach the `tls` upper-layer protocol (`setsockopt(SOL_TCP, TCP_ULP, "tls")`). Until keys
/// are set the socket passes bytes through unchanged. `ENOENT`: the kernel has no `tls`
/// module (or it is not loaded and this process may not load it).
pub fn attach_ulp(fd: BorrowedFd<'_>) -> io::Result<()> {
    const NAME: &[u8] = b"tls";
    // SAFETY: the kernel reads `NAME.len()` bytes from a live static slice; the descriptor is
    // borrowed for the call.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_ULP,
            NAME.as_ptr().cast(),
            NAME.len() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Give the kernel one direction's keys (`setsockopt(SOL_TLS, TLS_TX | TLS_RX)`); from the
/// next byte on, that direction's records are the kernel's.
pub fn set_crypto(fd: BorrowedFd<'_>, dir: Direction, info: &mut CryptoInfo) -> io::Result<()> {
    let (p, n) = info.raw();
    // SAFETY: `p` points at `n` initialised bytes of a struct the kernel only reads; the
    // descriptor is borrowed for the call.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_TLS,
            dir.optname(),
            p,
            n as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Read the kernel's current state of one direction into `info`, which must be of the cipher
/// that was set (the kernel wants the exact size): its `rec_seq` is the next record's number.
pub fn get_crypto(fd: BorrowedFd<'_>, dir: Direction, info: &mut CryptoInfo) -> io::Result<()> {
    let (p, n) = info.raw();
    let mut len = n as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into the struct `p` points at, whose
    // fields take any bit pattern; `len` is a live local.
    cvt(unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_TLS, dir.optname(), p, &mut len) })
        .map(drop)
}

/// Room for one `TLS_GET_RECORD_TYPE` message (`CMSG_SPACE(1)`, 24 bytes on 64-bit Linux)
/// and then some; in words, so that it is aligned for `struct cmsghdr`.
const CONTROL_WORDS: usize = 8;

// SAFETY: CMSG_SPACE is arithmetic on a constant.
const RECORD_TYPE_SPACE: usize = unsafe { libc::CMSG_SPACE(1) } as usize;

const _: () = assert!(CONTROL_WORDS * 8 >= RECORD_TYPE_SPACE);

/// What [`recv_record`] read.
#[derive(Debug, PartialEq, Eq)]
pub struct Received {
    /// Bytes of record payload (plaintext) put into the buffer; 0 is the peer's EOF.
    pub len: usize,
    /// The type of the records read (all of one type: the kernel stops where it changes).
    pub record_type: RecordType,
}

/// Receive decrypted records from a kTLS socket (`recvmsg`, with room for the record type).
/// Records that are not application data come one call each, typed by `TLS_GET_RECORD_TYPE`.
pub fn recv_record(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    let mut control = [0u64; CONTROL_WORDS];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut msg = msghdr(&mut iov, &mut control);
    // SAFETY: `msg` points at one iovec over `buf` and at `control`, both exclusively
    // borrowed and live for the call; the kernel writes within their stated lengths.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, 0) };
    let len = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    Ok(Received {
        len,
        record_type: record_type(&msg).unwrap_or(APPLICATION_DATA),
    })
}

/// Send `body` as one record of type `typ` (an alert: `TLS_SET_RECORD_TYPE`), after whatever
/// application data the kernel holds. Returns the bytes of `body` taken.
pub fn send_record(fd: BorrowedFd<'_>, typ: RecordType, body: &[u8]) -> io::Result<usize> {
    let mut control = [0u64; CONTROL_WORDS];
    let mut iov = libc::iovec {
        iov_base: body.as_ptr().cast_mut().cast(),
        iov_len: body.len(),
    };
    let mut msg = msghdr(&mut iov, &mut control);
    put_record_type(&mut msg, typ);
    // SAFETY: `msg` points at one iovec over `body` (which sendmsg only reads, despite the
    // iovec's mutable pointer) and at `control`, holding one complete control message written
    // by `put_record_type`; all live for the call.
    let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// A message header over one iovec and a control buffer.
fn msghdr(iov: &mut libc::iovec, control: &mut [u64; CONTROL_WORDS]) -> libc::msghdr {
    // SAFETY: msghdr is plain data (pointers, lengths, flags; private padding on some libcs,
    // which is why it is not built with a literal); all-zero is its empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(control) as _;
    msg
}

/// Write a `TLS_SET_RECORD_TYPE` control message of `typ` at the start of `msg`'s control
/// buffer (one from [`msghdr`], which has room: see `RECORD_TYPE_SPACE`), and shorten
/// `msg_controllen` to it.
fn put_record_type(msg: &mut libc::msghdr, typ: RecordType) {
    // SAFETY: the control buffer from `msghdr` is aligned for cmsghdr and holds at least
    // CMSG_SPACE(1) bytes (asserted at compile time above), so the first header and its one
    // data byte lie inside it; CMSG_FIRSTHDR is non-null since msg_controllen is that size.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(msg);
        (*c).cmsg_level = libc::SOL_TLS;
        (*c).cmsg_type = libc::TLS_SET_RECORD_TYPE;
        (*c).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(c) = typ;
    }
    msg.msg_controllen = RECORD_TYPE_SPACE as _;
}

/// The record type in `msg`'s control messages (`SOL_TLS`, `TLS_GET_RECORD_TYPE`), if any.
fn record_type(msg: &libc::msghdr) -> Option<RecordType> {
    // SAFETY: `msg` describes a control buffer of `msg_controllen` bytes that is live for the
    // borrow (the kernel shortened the length to what it wrote); CMSG_FIRSTHDR and CMSG_NXTHDR
    // return only headers that lie whole inside it, or null, and a header's CMSG_DATA byte is
    // read only when its cmsg_len says it has one.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_TLS
                && (*c).cmsg_type == libc::TLS_GET_RECORD_TYPE
                && (*c).cmsg_len as usize >= libc::CMSG_LEN(1) as usize
            {
                return Some(*libc::CMSG_DATA(c));
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An iovec of no bytes: these messages carry control data alone.
    fn no_data() -> libc::iovec {
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }
    }

    /// A header over `control`, as the kernel leaves it after writing `len` bytes of it.
    fn received(
        iov: &mut libc::iovec,
        control: &mut [u64; CONTROL_WORDS],
        len: usize,
    ) -> libc::msghdr {
        let mut msg = msghdr(iov, control);
        msg.msg_controllen = len as _;
        msg
    }

    /// The control message a record type travels in, byte by byte as glibc's x86-64 and
    /// aarch64 layout has it (`struct cmsghdr`: size_t len, int level, int type; data at 16):
    /// the kernel's side of the contract, written out rather than with the CMSG macros.
    #[test]
    #[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
    fn a_record_type_message_has_the_kernel_layout() {
        let mut control = [0u64; CONTROL_WORDS];
        let mut iov = no_data();
        let mut msg = msghdr(&mut iov, &mut control);
        put_record_type(&mut msg, 21);
        assert_eq!(msg.msg_controllen, 24, "CMSG_SPACE(1)");
        let bytes: Vec<u8> = control.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(
            &bytes[..8],
            &17usize.to_ne_bytes(),
            "cmsg_len = CMSG_LEN(1)"
        );
        assert_eq!(&bytes[8..12], &282i32.to_ne_bytes(), "cmsg_level = SOL_TLS");
        assert_eq!(&bytes[12..16], &1i32.to_ne_bytes(), "TLS_SET_RECORD_TYPE");
        assert_eq!(bytes[16], 21);

        // What recvmsg leaves: the same header with TLS_GET_RECORD_TYPE (2).
        let mut control = [0u64; CONTROL_WORDS];
        control[0] = 17;
        let level_and_type = [282i32.to_ne_bytes(), 2i32.to_ne_bytes()].concat();
        control[1] = u64::from_ne_bytes(level_and_type.try_into().unwrap());
        control[2] = 22;
        let mut iov = no_data();
        assert_eq!(record_type(&received(&mut iov, &mut control, 24)), Some(22));
    }

    #[test]
    fn no_control_message_means_application_data() {
        let mut control = [0u64; CONTROL_WORDS];
        let mut iov = no_data();
        assert_eq!(record_type(&received(&mut iov, &mut control, 0)), None);
    }

    #[test]
    fn a_record_type_is_found_after_another_control_message() {
        let mut control = [0u64; CONTROL_WORDS];
        let mut iov = no_data();
        let mut msg = msghdr(&mut iov, &mut control);
        // SAFETY: the buffer holds two CMSG_SPACE(1) messages (48 of its 64 bytes); each
        // header written lies inside it.
        unsafe {
            let first = libc::CMSG_FIRSTHDR(&msg);
            (*first).cmsg_level = libc::SOL_SOCKET;
            (*first).cmsg_type = libc::SO_TIMESTAMP;
            (*first).cmsg_len = libc::CMSG_LEN(1) as _;
            msg.msg_controllen = (2 * libc::CMSG_SPACE(1)) as _;
            let second = libc::CMSG_NXTHDR(&msg, first);
            assert!(!second.is_null());
            (*second).cmsg_level = libc::SOL_TLS;
            (*second).cmsg_type = libc::TLS_GET_RECORD_TYPE;
            (*second).cmsg_len = libc::CMSG_LEN(1) as _;
            *libc::CMSG_DATA(second) = 21;
        }
        assert_eq!(record_type(&msg), Some(21));
    }

    #[test]
    fn a_message_of_another_level_or_type_is_not_a_record_type() {
        for (level, typ) in [
            (libc::SOL_SOCKET, libc::TLS_GET_RECORD_TYPE),
            (libc::SOL_TLS, libc::TLS_SET_RECORD_TYPE),
        ] {
            let mut control = [0u64; CONTROL_WORDS];
            let mut iov = no_data();
            let mut msg = msghdr(&mut iov, &mut control);
            put_record_type(&mut msg, 21);
            // SAFETY: the first header lies inside the buffer (put_record_type wrote it).
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = level;
                (*c).cmsg_type = typ;
            }
            assert_eq!(record_type(&msg), None, "level {level}, type {typ}");
        }
    }

    /// Without the `tls` module (these machines) the upper-layer protocol is refused with
    /// ENOENT; with it, a socket that is not connected is refused (ENOTCONN). Either way
    /// nothing is attached to a fresh socket, and the call itself is well-formed.
    #[test]
    fn attaching_tls_to_an_unconnected_socket_is_refused() {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        use std::os::fd::AsFd;
        let e = attach_ulp(s.as_fd()).unwrap_err();
        assert!(
            matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTCONN)),
            "{e}"
        );
    }
}
