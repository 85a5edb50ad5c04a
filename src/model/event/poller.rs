//! One readiness interface over three kernel APIs: epoll (O(ready) per wait), poll (O(watched))
//! and select (O(FD_SETSIZE), and blind to descriptors at or above FD_SETSIZE). All three are
//! level-triggered here, so a handler may stop early (a read budget, a paused reader) and be told
//! again; spurious readiness is tolerated by the non-blocking I/O behind it.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::model::connection::Interest;
use crate::model::PollerKind;
use crate::sys::{self, Epoll, EpollEvent, FdSet};

/// One readiness report.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Event {
    pub token: u64,
    pub readable: bool,
    pub writable: bool,
    /// Hang-up or error (epoll and poll report these whatever was asked; select cannot).
    pub hup: bool,
}

/// A poller of the kind `--poller` chose.
pub(crate) enum Poller {
    Epoll {
        ep: Epoll,
        buf: Vec<EpollEvent>,
    },
    Poll {
        fds: Vec<libc::pollfd>,
        tokens: Vec<u64>,
        index: HashMap<RawFd, usize>,
    },
    Select {
        /// Indexed by descriptor; every registered descriptor is below FD_SETSIZE.
        entries: Vec<Option<(u64, Interest)>>,
        registered: usize,
    },
}

fn epoll_bits(i: Interest) -> u32 {
    let mut e = 0;
    if i.read {
        e |= libc::EPOLLIN as u32;
    }
    if i.write {
        e |= libc::EPOLLOUT as u32;
    }
    e
}

fn poll_bits(i: Interest) -> libc::c_short {
    let mut e = 0;
    if i.read {
        e |= libc::POLLIN;
    }
    if i.write {
        e |= libc::POLLOUT;
    }
    e
}

/// The error `add` returns for a descriptor select(2) cannot watch.
pub(crate) fn too_high(fd: RawFd) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "descriptor {fd} is at or above FD_SETSIZE ({})",
            sys::FD_SETSIZE
        ),
    )
}

impl Poller {
    pub fn new(kind: PollerKind) -> io::Result<Poller> {
        Ok(match kind {
            PollerKind::Epoll => Poller::Epoll {
                ep: Epoll::new()?,
                buf: Vec::with_capacity(1024),
            },
            PollerKind::Poll => Poller::Poll {
                fds: Vec::new(),
                tokens: Vec::new(),
                index: HashMap::new(),
            },
            PollerKind::Select => Poller::Select {
                entries: vec![None; sys::FD_SETSIZE],
                registered: 0,
            },
        })
    }

    /// Is this epoll (whose listeners are registered EPOLLEXCLUSIVE)?
    pub fn is_epoll(&self) -> bool {
        matches!(self, Poller::Epoll { .. })
    }

    /// Can this poller watch `fd` at all? (Only select has a ceiling.)
    pub fn fits(&self, fd: RawFd) -> bool {
        match self {
            Poller::Select { .. } => FdSet::fits(fd),
            _ => true,
        }
    }

    /// Start watching `fd`. `exclusive`: a listener shared by several epoll workers is woken
    /// in one of them only (EPOLLEXCLUSIVE), not in all (the thundering herd).
    pub fn add(
        &mut self,
        fd: RawFd,
        token: u64,
        interest: Interest,
        exclusive: bool,
    ) -> io::Result<()> {
        match self {
            Poller::Epoll { ep, .. } => {
                let bits = epoll_bits(interest);
                if exclusive {
                    match ep.add(fd, bits | libc::EPOLLEXCLUSIVE as u32, token) {
                        // Kernels before 4.5 do not know the flag: fall back to waking all.
                        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => ep.add(fd, bits, token),
                        r => r,
                    }
                } else {
                    ep.add(fd, bits, token)
                }
            }
            Poller::Poll { fds, tokens, index } => {
                if index.contains_key(&fd) {
                    return Err(io::Error::from_raw_os_error(libc::EEXIST));
                }
                index.insert(fd, fds.len());
                fds.push(sys::pollfd(fd, poll_bits(interest)));
                tokens.push(token);
                Ok(())
            }
            Poller::Select {
                entries,
                registered,
            } => {
                if !FdSet::fits(fd) {
                    return Err(too_high(fd));
                }
                let slot = &mut entries[fd as usize];
                if slot.is_some() {
                    return Err(io::Error::from_raw_os_error(libc::EEXIST));
                }
                *slot = Some((token, interest));
                *registered += 1;
                Ok(())
            }
        }
    }

    /// Change what `fd` is watched for.
    pub fn modify(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        match self {
            Poller::Epoll { ep, .. } => ep.modify(fd, epoll_bits(interest), token),
            Poller::Poll { fds, tokens, index } => {
                let i = *index
                    .get(&fd)
                    .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
                fds[i].events = poll_bits(interest);
                tokens[i] = token;
                Ok(())
            }
            Poller::Select { entries, .. } => {
                match FdSet::fits(fd).then(|| &mut entries[fd as usize]) {
                    Some(Some(e)) => {
                        *e = (token, interest);
                        Ok(())
                    }
                    _ => Err(io::Error::from_raw_os_error(libc::ENOENT)),
                }
            }
        }
    }

    /// Stop watching `fd` (before it is closed).
    pub fn delete(&mut self, fd: RawFd) -> io::Result<()> {
        match self {
            Poller::Epoll { ep, .. } => ep.delete(fd),
            Poller::Poll { fds, tokens, index } => {
                let i = index
                    .remove(&fd)
                    .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
                fds.swap_remove(i);
                tokens.swap_remove(i);
                if let Some(moved) = fds.get(i) {
                    index.insert(moved.fd, i);
                }
                Ok(())
            }
            Poller::Select {
                entries,
                registered,
            } => match FdSet::fits(fd).then(|| entries[fd as usize].take()) {
                Some(Some(_)) => {
                    *registered -= 1;
                    Ok(())
                }
                _ => Err(io::Error::from_raw_os_error(libc::ENOENT)),
            },
        }
    }

    /// Stop watching `fd` because it is closed or about to be. epoll forgets a descriptor by
    /// itself when its last reference closes, so this costs no system call there (it saves an
    /// `epoll_ctl` per connection). A copy briefly held by a forked child (before its exec
    /// closes it) keeps the registration alive a moment; its reports carry a retired token,
    /// which the event loop ignores.
    pub fn forget_closing(&mut self, fd: RawFd) -> io::Result<()> {
        match self {
            Poller::Epoll { .. } => Ok(()),
            _ => self.delete(fd),
        }
    }

    /// Wait up to `timeout` and put what is ready into `out` (cleared first).
    pub fn wait(&mut self, out: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        out.clear();
        match self {
            Poller::Epoll { ep, buf } => {
                ep.wait(buf, timeout)?;
                let err = (libc::EPOLLHUP | libc::EPOLLERR) as u32;
                out.extend(buf.iter().map(|e| {
                    let bits = e.events;
                    Event {
                        token: e.u64,
                        readable: bits & libc::EPOLLIN as u32 != 0,
                        writable: bits & libc::EPOLLOUT as u32 != 0,
                        hup: bits & err != 0,
                    }
                }));
            }
            Poller::Poll { fds, tokens, .. } => {
                for f in fds.iter_mut() {
                    f.revents = 0;
                }
                sys::poll(fds, timeout)?;
                let err = libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
                for (f, t) in fds.iter().zip(tokens.iter()) {
                    if f.revents != 0 {
                        out.push(Event {
                            token: *t,
                            readable: f.revents & libc::POLLIN != 0,
                            writable: f.revents & libc::POLLOUT != 0,
                            hup: f.revents & err != 0,
                        });
                    }
                }
            }
            Poller::Select { entries, .. } => {
                let mut r = FdSet::new();
                let mut w = FdSet::new();
                let mut nfds = 0;
                for (fd, e) in entries.iter().enumerate() {
                    if let Some((_, i)) = e {
                        let fd = fd as RawFd;
                        if i.read {
                            r.insert(fd);
                            nfds = fd + 1;
                        }
                        if i.write {
                            w.insert(fd);
                            nfds = fd + 1;
                        }
                    }
                }
                sys::select(nfds, &mut r, &mut w, timeout)?;
                for (fd, e) in entries.iter().enumerate().take(nfds as usize) {
                    if let Some((token, _)) = e {
                        let fd = fd as RawFd;
                        let (readable, writable) = (r.contains(fd), w.contains(fd));
                        if readable || writable {
                            out.push(Event {
                                token: *token,
                                readable,
                                writable,
                                hup: false,
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    const R: Interest = Interest {
        read: true,
        write: false,
    };

    #[test]
    fn every_poller_reports_readiness_by_token_and_forgets_deleted_fds() {
        for kind in PollerKind::ALL {
            let mut p = Poller::new(kind).unwrap();
            let (a, mut b) = UnixStream::pair().unwrap();
            let (c, _d) = UnixStream::pair().unwrap();
            p.add(a.as_raw_fd(), 7, R, false).unwrap();
            p.add(c.as_raw_fd(), 9, R, false).unwrap();
            let mut ev = Vec::new();
            p.wait(&mut ev, Some(Duration::from_millis(10))).unwrap();
            assert!(ev.is_empty(), "{kind}: {ev:?}");
            b.write_all(b"x").unwrap();
            p.wait(&mut ev, Some(Duration::from_secs(1))).unwrap();
            assert_eq!(ev.len(), 1, "{kind}");
            assert_eq!(ev[0].token, 7);
            assert!(ev[0].readable);
            // Level-triggered: still ready until read.
            p.wait(&mut ev, Some(Duration::ZERO)).unwrap();
            assert_eq!(ev.len(), 1, "{kind}");
            p.modify(a.as_raw_fd(), 8, Interest::default()).unwrap();
            p.wait(&mut ev, Some(Duration::ZERO)).unwrap();
            assert!(ev.is_empty(), "{kind}: {ev:?}");
            p.modify(a.as_raw_fd(), 8, R).unwrap();
            p.wait(&mut ev, Some(Duration::ZERO)).unwrap();
            assert_eq!(ev[0].token, 8);
            p.delete(a.as_raw_fd()).unwrap();
            p.wait(&mut ev, Some(Duration::ZERO)).unwrap();
            assert!(ev.is_empty(), "{kind}: {ev:?}");
            assert!(p.delete(a.as_raw_fd()).is_err());
        }
    }

    #[test]
    fn select_refuses_a_descriptor_at_fd_setsize_without_touching_memory() {
        let mut p = Poller::new(PollerKind::Select).unwrap();
        let fd = sys::FD_SETSIZE as RawFd;
        assert!(!p.fits(fd));
        let e = p.add(fd, 1, R, false).unwrap_err();
        assert!(e.to_string().contains("FD_SETSIZE"), "{e}");
        assert!(p.modify(fd, 1, R).is_err());
        assert!(p.delete(fd).is_err());
        assert!(Poller::new(PollerKind::Poll).unwrap().fits(fd));
    }
}
