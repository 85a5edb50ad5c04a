//! systemd socket activation (sd_listen_fds(3)): when systemd (or `systemd-socket-activate`)
//! starts tincan with sockets it bound itself, they arrive as descriptors 3, 4, ... with
//! `LISTEN_FDS` saying how many and `LISTEN_PID` saying for which process. They are taken once,
//! first thing in `main`, before tincan opens any file of its own (so no descriptor of ours
//! can be mistaken for one of them), and the variables are removed so that no child process
//! takes them for its own. The servers then use them instead of binding `--listen`.

use std::ops::Range;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::Mutex;

use socket2::{Domain, Socket, Type};

use super::{Listener, UnixPath};
use crate::error::Error;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const FIRST_FD: RawFd = 3;

/// More than systemd passes to one service (its own limit is the descriptor limit); a
/// `LISTEN_FDS` past it is a mistake, not a list of sockets.
const MOST_FDS: usize = 4096;

/// The sockets received, until a server takes them.
static RECEIVED: Mutex<Option<Received>> = Mutex::new(None);

#[derive(Debug)]
struct Received {
    fds: Vec<OwnedFd>,
    /// `LISTEN_FDNAMES`, for the error lines (`FileDescriptorName=` in the .socket unit).
    names: Vec<String>,
}

/// sd_listen_fds(3)'s rule: the descriptors meant for process `pid`, from the values of
/// `LISTEN_PID` and `LISTEN_FDS`. None when they are not for this process (not activated, or
/// inherited from an activated parent); an error for values that cannot be meant.
pub fn meant_for(
    pid: u32,
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
) -> Result<Option<Range<RawFd>>, String> {
    let (Some(for_pid), Some(count)) = (listen_pid, listen_fds) else {
        return Ok(None);
    };
    let for_pid: u32 = for_pid
        .trim()
        .parse()
        .map_err(|_| format!("LISTEN_PID={for_pid:?} is not a process id"))?;
    if for_pid != pid {
        return Ok(None);
    }
    let n: usize = count
        .trim()
        .parse()
        .ok()
        .filter(|n| *n <= MOST_FDS)
        .ok_or_else(|| format!("LISTEN_FDS={count:?} is not a number of descriptors"))?;
    // MOST_FDS keeps the sum far below RawFd::MAX.
    Ok(Some(FIRST_FD..FIRST_FD + n as RawFd))
}

/// Take the sockets systemd passed, if it passed any to this process, and remove
/// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` from the environment. Call first in `main`,
/// while the process is one thread and has opened nothing.
pub fn receive() -> crate::error::Result<()> {
    let var = |k: &str| std::env::var(k).ok();
    let (pid, fds, names) = (var("LISTEN_PID"), var("LISTEN_FDS"), var("LISTEN_FDNAMES"));
    for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(k);
    }
    let range = meant_for(std::process::id(), pid.as_deref(), fds.as_deref())
        .map_err(|e| Error::Setup(format!("socket activation: {e}")))?;
    let Some(range) = range else {
        return Ok(());
    };
    let fds = range
        .map(|fd| {
            crate::sys::take_inherited_fd(fd).map_err(|e| {
                Error::Setup(format!(
                    "socket activation: descriptor {fd} (of LISTEN_FDS) cannot be used: {}",
                    crate::sys::plain(&e)
                ))
            })
        })
        .collect::<crate::error::Result<Vec<_>>>()?;
    let names = names
        .map(|n| n.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    *RECEIVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(Received { fds, names });
    Ok(())
}

/// How many sockets systemd passed that no server has taken yet.
pub fn pending() -> usize {
    RECEIVED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map_or(0, |r| r.fds.len())
}

/// The sockets passed, checked to be what `want` serves; None when there were none. Each
/// server takes them once.
pub fn take(want: Kind) -> crate::error::Result<Option<Vec<Socket>>> {
    let Some(got) = RECEIVED.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return Ok(None);
    };
    let mut sockets = Vec::with_capacity(got.fds.len());
    for (i, fd) in got.fds.into_iter().enumerate() {
        let s = Socket::from(fd);
        let named = match got.names.get(i).filter(|n| !n.is_empty()) {
            Some(name) => format!("descriptor {} ({name})", FIRST_FD + i as RawFd),
            None => format!("descriptor {}", FIRST_FD + i as RawFd),
        };
        let fits = match want {
            Kind::Stream => {
                s.r#type().ok() == Some(Type::STREAM) && s.is_listener().unwrap_or(false)
            }
            Kind::Datagram => s.r#type().ok() == Some(Type::DGRAM),
        };
        if !fits {
            let (what, unit) = match want {
                Kind::Stream => ("a listening stream socket", "ListenStream="),
                Kind::Datagram => ("a datagram socket", "ListenDatagram="),
            };
            return Err(Error::Setup(format!(
                "socket activation: {named} is not {what}; give the .socket unit {unit}"
            )));
        }
        sockets.push(s);
    }
    Ok(Some(sockets))
}

/// What a server listens with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Stream,
    Datagram,
}

/// A passed listening socket as a [`Listener`], set up as [`super::bind`] sets up its own
/// (TCP_NODELAY, delayed ACKs, TCP_DEFER_ACCEPT); the backlog is the .socket unit's
/// `Backlog=`. A Unix socket's file belongs to systemd, which removes it: never this process.
pub fn listener(s: Socket, opts: &super::BindOptions) -> std::io::Result<Listener> {
    if s.domain()? == Domain::UNIX {
        let local = s.local_addr()?;
        let path = local
            .as_pathname()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_else(|| "(unnamed)".into());
        return Ok(Listener::Unix(s.into(), UnixPath { path, ours: false }));
    }
    super::tcp_listener_options(s, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_taken_only_when_meant_for_this_process() {
        let me = 4242;
        for (pid, fds, want) in [
            (None, None, Ok(None)),
            (Some("4242"), None, Ok(None)),
            (None, Some("1"), Ok(None)),
            // Inherited from an activated parent: its sockets, not ours.
            (Some("1"), Some("2"), Ok(None)),
            (Some("4242"), Some("1"), Ok(Some(3..4))),
            (Some("4242"), Some("3"), Ok(Some(3..6))),
            (Some("4242"), Some("0"), Ok(Some(3..3))),
            (
                Some("x"),
                Some("1"),
                Err("LISTEN_PID=\"x\" is not a process id"),
            ),
            (
                Some("4242"),
                Some("-1"),
                Err("LISTEN_FDS=\"-1\" is not a number of descriptors"),
            ),
            (
                Some("4242"),
                Some("99999999"),
                Err("LISTEN_FDS=\"99999999\" is not a number of descriptors"),
            ),
        ] {
            assert_eq!(
                meant_for(me, pid, fds),
                want.map_err(str::to_string),
                "{pid:?} {fds:?}"
            );
        }
    }
}
