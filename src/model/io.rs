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

/// What a flush achieved.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Flushed {
    /// Bytes that left.
    pub wrote: usize,
    /// The socket would block with output still queued.
    pub blocked: bool,
}

/// Send as much of `out` as the socket takes now. A file region that ends early (the file
/// shrank under us) is an error: sending fewer bytes than promised would corrupt the stream.
///
/// `closing`: the connection is closed (or half-closed) once `out` is sent. The last bytes are
/// then sent with `MSG_MORE`, so the kernel holds them until the close and the FIN rides in
/// their packet: one packet (and one ACK) fewer per connection, as nginx gets from `TCP_CORK`.
pub(crate) fn flush(sock: &Socket, out: &mut Outbox, closing: bool) -> io::Result<Flushed> {
    let mut done = Flushed::default();
    while !out.is_empty() {
        // What this call offers the socket: taking less means its buffer is full.
        let mut asked = 0usize;
        let step = if let Some(Chunk::File { file, offset, len }) = out.front() {
            let file = std::sync::Arc::clone(file);
            let (mut off, len) = (*offset, *len);
            let want = usize::try_from(len).unwrap_or(usize::MAX);
            asked = want;
            match sys::sendfile(sock.as_fd(), &file, &mut off, want) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was being sent",
                    ))
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
                if n < asked {
                    // The socket buffer is full: the next call would only say EAGAIN (with a
                    // large file, 4 sendfile calls in 10 did). The level-triggered pollers
                    // report writability again once there is room.
                    done.blocked = true;
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                done.blocked = true;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
