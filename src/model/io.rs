//! Moving bytes between a socket and a connection's buffers: read into a [`ReadBuf`], flush an
//! [`Outbox`] with `writev` (in-memory chunks) and `sendfile` (file regions). Non-blocking
//! throughout; `EINTR` is retried here, `WouldBlock` is reported to the caller.

use std::io::{self, IoSlice, Read};
use std::os::fd::AsFd;

use socket2::Socket;

use crate::protocol::{Chunk, Outbox, ReadBuf};
use crate::sys;

/// How much a single read asks for: enough for a request head or a chat burst in one call.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// Bytes one connection may send in one turn before the others get theirs: a connection with
/// a large file yields here and the poller reports it writable again in its round, so one large
/// download cannot hold the others' latency (4 MiB: the best p99 at no loss of throughput;
/// bench/README.md, "Fairness between large downloads").
pub(crate) const TURN: usize = 4 << 20;

/// A file region longer than this is corked before its first call: it will not leave in one.
const CORK_AHEAD: u64 = 1 << 20;

/// At most this many chunks go into one writev (Linux allows 1024; more buys nothing).
const MAX_IOVECS: usize = 64;

/// What one read produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadOutcome {
    /// Bytes arrived; `drained` when the read returned less than it asked for, so the socket
    /// is (very likely) empty and a level-triggered poller will say if more arrives: the
    /// caller can skip the read that would only return `WouldBlock`.
    Data {
        n: usize,
        drained: bool,
    },
    Eof,
    WouldBlock,
}

/// One read(2) into the buffer's spare room.
pub(crate) fn read_into(sock: &Socket, input: &mut ReadBuf) -> io::Result<ReadOutcome> {
    loop {
        let spare = input.spare(READ_CHUNK);
        let asked = spare.len();
        match (&*sock).read(spare) {
            Ok(0) => return Ok(ReadOutcome::Eof),
            Ok(n) => {
                input.commit(n);
                return Ok(ReadOutcome::Data {
                    n,
                    drained: n < asked,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadOutcome::WouldBlock),
            Err(e) => return Err(e),
        }
    }
}

/// Read and throw away (a lingering close); returns Eof, WouldBlock or the bytes dropped.
pub(crate) fn discard(sock: &Socket) -> io::Result<ReadOutcome> {
    let mut scratch = [0u8; 4096];
    loop {
        match (&*sock).read(&mut scratch) {
            Ok(0) => return Ok(ReadOutcome::Eof),
            Ok(n) => {
                return Ok(ReadOutcome::Data {
                    n,
                    drained: n < scratch.len(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadOutcome::WouldBlock),
            Err(e) => return Err(e),
        }
    }
}

/// A socket's `TCP_CORK` while a file region goes out in several calls: the kernel sends only
/// whole segments until the cork comes off, as nginx's `tcp_nopush` does.
///
/// Without it, each `sendfile` call pushes out its last partial segment: more segments and
/// more tail-loss probes per byte than nginx (bench/README.md, "Corking large files").
///
/// The cork goes on before a region longer than [`CORK_AHEAD`] and after any call that leaves
/// part of a region behind; a reply that leaves in one call costs no extra system calls. It
/// comes off with the region's last bytes, which sends the tail at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Cork {
    #[default]
    Off,
    On,
    /// Not a TCP socket (a Unix socket): not asked again.
    Refused,
}

impl Cork {
    fn set(&mut self, sock: &Socket, on: bool) {
        if *self == Cork::Refused || (*self == Cork::On) == on {
            return;
        }
        *self = match sock.set_cork(on) {
            Ok(()) if on => Cork::On,
            Ok(()) => Cork::Off,
            Err(_) => Cork::Refused,
        };
    }
}

/// What a flush achieved.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Flushed {
    /// Bytes that left.
    pub wrote: usize,
    /// System calls of [`flush_turn`] that moved bytes (under kernel TLS, each made at least
    /// one TLS record).
    pub calls: usize,
    /// Stop here with output still queued: the socket would block, or the connection has had
    /// its turn ([`TURN`]); either way the poller says when to go on.
    pub paused: bool,
}

/// Send as much of `out` as the socket takes now. A file region that ends early (the file
/// shrank under us) is an error: sending fewer bytes than promised would corrupt the stream.
///
/// `closing`: the connection is closed (or half-closed) once `out` is sent. The last bytes are
/// then sent with `MSG_MORE`, so the kernel holds them until the close and the FIN rides in
/// their packet: one packet (and one ACK) fewer per connection, as nginx gets from `TCP_CORK`.
///
/// `cork`: the socket's [`Cork`], kept by the caller between flushes.
pub(crate) fn flush(
    sock: &Socket,
    out: &mut Outbox,
    closing: bool,
    cork: &mut Cork,
) -> io::Result<Flushed> {
    flush_turn(sock, out, closing, cork, TURN)
}

/// [`flush`], sending at most about `turn` bytes.
pub(crate) fn flush_turn(
    sock: &Socket,
    out: &mut Outbox,
    closing: bool,
    cork: &mut Cork,
    turn: usize,
) -> io::Result<Flushed> {
    let mut done = Flushed::default();
    while !out.is_empty() {
        if done.wrote >= turn {
            done.paused = true;
            break;
        }
        // What this call offers the socket: taking less means its buffer is full.
        let mut asked = 0usize;
        let step = if let Some(Chunk::File { file, offset, len }) = out.front() {
            let file = std::sync::Arc::clone(file);
            let (mut off, len) = (*offset, *len);
            let want = usize::try_from(len)
                .unwrap_or(usize::MAX)
                .min(turn - done.wrote);
            asked = want;
            if len > CORK_AHEAD {
                cork.set(sock, true);
            }
            match sys::sendfile(sock.as_fd(), &file, &mut off, want) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was being sent",
                    ))
                }
                Ok(n) => {
                    cork.set(sock, n as u64 != len);
                    Ok(n)
                }
                r => r,
            }
        } else {
            let mut bufs = [IoSlice::new(&[]); MAX_IOVECS];
            let mut n = 0;
            let mut file_next = false;
            let mut all = true;
            for c in out.chunks() {
                match c.unsent() {
                    Some(b) if n < MAX_IOVECS => {
                        bufs[n] = IoSlice::new(b);
                        asked += b.len();
                        n += 1;
                    }
                    Some(_) => {
                        all = false;
                        break;
                    }
                    None => {
                        file_next = true;
                        break;
                    }
                }
            }
            // MSG_NOSIGNAL: a peer gone away is an EPIPE for this connection, never a SIGPIPE
            // for the whole process. MSG_MORE before a file region: the kernel holds a response
            // head back to share packets with the file's first bytes (what nginx gets from
            // TCP_CORK with `tcp_nopush`), instead of sending it in a small packet of its own.
            // The same for the last bytes before a close, to share a packet with the FIN.
            let more = file_next || (closing && all);
            let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
            if n == 1 {
                // One piece (an echo, a chat line): send(2) spares sendmsg(2)'s copy of the
                // message header and iovec from user memory.
                sock.send_with_flags(&bufs[0], flags)
            } else {
                sock.send_vectored_with_flags(&bufs[..n], flags)
            }
        };
        match step {
            Ok(n) => {
                out.advance(n);
                done.wrote += n;
                done.calls += 1;
                if n < asked {
                    // The socket buffer is full: the next call would only say EAGAIN (with a
                    // large file, 4 sendfile calls in 10 did). The level-triggered pollers
                    // report writability again once there is room.
                    done.paused = true;
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                done.paused = true;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// An open file of `len` bytes whose name is already gone.
    fn unlinked_file(name: &str, len: usize) -> Arc<std::fs::File> {
        let path = std::env::temp_dir().join(format!("tincan-{name}-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; len]).unwrap();
        let file = Arc::new(std::fs::File::open(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        file
    }

    /// A file region longer than a turn leaves in turns: one call sends a turn's worth (the
    /// socket has room for more) and says to stop; the next call goes on from there.
    #[test]
    fn a_large_file_is_sent_a_turn_at_a_time() {
        const TURN_HERE: usize = 16 * 1024;
        let file = unlinked_file("turn", 4 * TURN_HERE);
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let sock = Socket::from(std::os::fd::OwnedFd::from(ours));
        let mut out = Outbox::new();
        out.push_file(file, 0, 4 * TURN_HERE as u64);
        let mut cork = Cork::Off;
        let f = flush_turn(&sock, &mut out, false, &mut cork, TURN_HERE).unwrap();
        assert_eq!((f.wrote, f.paused), (TURN_HERE, true));
        assert_eq!(out.len(), 3 * TURN_HERE);
        // A Unix socket has no cork; it is asked once.
        assert_eq!(cork, Cork::Refused);
        let f = flush_turn(&sock, &mut out, false, &mut cork, TURN_HERE).unwrap();
        assert_eq!(f.wrote, TURN_HERE);
        drop(theirs);
    }

    /// A file region that leaves in several calls goes out corked, so the kernel sends whole
    /// segments; the cork comes off with the region's last bytes. A short region that leaves
    /// in one call never touches the cork.
    #[test]
    fn a_file_region_left_behind_is_corked_until_it_is_out() {
        const LEN: usize = 64 * 1024;
        let file = unlinked_file("cork", 4 * LEN);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut theirs = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        let sock = Socket::from(ours);
        let mut cork = Cork::Off;

        let mut out = Outbox::new();
        out.push_file(Arc::clone(&file), 0, 1024);
        flush_turn(&sock, &mut out, false, &mut cork, LEN).unwrap();
        assert!(out.is_empty());
        assert_eq!(cork, Cork::Off);

        out.push_file(file, 0, 4 * LEN as u64);
        let f = flush_turn(&sock, &mut out, false, &mut cork, LEN).unwrap();
        assert!(f.paused && !out.is_empty());
        assert_eq!(cork, Cork::On);
        assert!(sock.cork().unwrap(), "the socket itself is corked");

        let mut sink = vec![0u8; 4 * LEN];
        let mut got = 0;
        while !out.is_empty() {
            flush_turn(&sock, &mut out, false, &mut cork, LEN).unwrap();
            got += std::io::Read::read(&mut theirs, &mut sink).unwrap();
        }
        assert_eq!(cork, Cork::Off);
        assert!(
            !sock.cork().unwrap(),
            "the cork is off once the region is out"
        );
        // Uncorking sent the tail: the peer gets every byte without waiting out the cork's
        // 200 ms.
        theirs
            .set_read_timeout(Some(std::time::Duration::from_millis(100)))
            .unwrap();
        while got < 1024 + 4 * LEN {
            got += std::io::Read::read(&mut theirs, &mut sink).unwrap();
        }
    }
}
