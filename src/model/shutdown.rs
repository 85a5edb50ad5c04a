//! The shutdown signal every driver watches: a flag plus a descriptor that becomes readable, for
//! good, when shutdown is triggered (by [`Shutdown::trigger`] or by SIGINT/SIGTERM), so every
//! poll loop can include it and wake at once.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use signal_hook::SigId;

use crate::sys;

/// A shutdown signal shared by a server's threads (clone it freely).
///
/// The descriptor is one end of a socket pair: triggering writes a byte to the other end and
/// nothing ever reads it, so it stays readable (level-triggered) for every poller watching it.
/// A signal handler can do the same write, which is async-signal-safe.
#[derive(Clone)]
pub struct Shutdown(Arc<Inner>);

struct Inner {
    flag: Arc<AtomicBool>,
    rx: UnixStream,
    tx: UnixStream,
    signals: Mutex<Vec<SigId>>,
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A fresh, untriggered signal.
    ///
    /// # Panics
    /// If the process is out of descriptors for the socket pair (nothing could be served then).
    pub fn new() -> Shutdown {
        Shutdown::try_new().expect("cannot create the shutdown socket pair")
    }

    pub fn try_new() -> io::Result<Shutdown> {
        let (rx, tx) = UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        Ok(Shutdown(Arc::new(Inner {
            flag: Arc::new(AtomicBool::new(false)),
            rx,
            tx,
            signals: Mutex::new(Vec::new()),
        })))
    }

    /// Start a graceful shutdown. Idempotent.
    pub fn trigger(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        // A full socket buffer already means "readable"; WouldBlock is success.
        let _ = (&self.0.tx).write(&[1]);
    }

    pub fn is_triggered(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
    }

    /// The process's own shutdown, triggered by SIGINT and SIGTERM. The handlers are installed
    /// by the first call, which servers make before they print `listening on`: a script that
    /// signals as soon as it reads that line gets a graceful stop, never the default action.
    pub fn for_process() -> io::Result<Shutdown> {
        static PROCESS: std::sync::OnceLock<Shutdown> = std::sync::OnceLock::new();
        static INSTALL: Mutex<()> = Mutex::new(());
        let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = PROCESS.get() {
            return Ok(s.clone());
        }
        let s = Shutdown::try_new()?;
        s.on_signals()?;
        let _ = PROCESS.set(s.clone());
        Ok(s)
    }

    /// Make SIGINT and SIGTERM trigger this shutdown. A second SIGINT after the first exits at
    /// once (code 1), for the impatient at a terminal.
    pub fn on_signals(&self) -> io::Result<()> {
        let mut ids = self.0.signals.lock().unwrap_or_else(|e| e.into_inner());
        // Registered before the flag handler, so it sees the flag as the previous signal left it.
        ids.push(signal_hook::flag::register_conditional_shutdown(
            libc::SIGINT,
            1,
            Arc::clone(&self.0.flag),
        )?);
        for sig in [libc::SIGINT, libc::SIGTERM] {
            ids.push(signal_hook::flag::register(sig, Arc::clone(&self.0.flag))?);
            ids.push(signal_hook::low_level::pipe::register(
                sig,
                self.0.tx.try_clone()?,
            )?);
        }
        Ok(())
    }

    /// Undo [`on_signals`](Self::on_signals) (a forked worker installs its own).
    pub(crate) fn forget_signals(&self) {
        let mut ids = self.0.signals.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }

    /// Wait until triggered or `limit` passes; true if triggered.
    pub fn wait_timeout(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.is_triggered() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut fds = [sys::pollfd(self.fd(), libc::POLLIN)];
            match sys::poll(&mut fds, Some(left)) {
                // Readable means a byte was written: by trigger() or by a signal handler whose
                // flag store we may see a moment later; either way it is a shutdown.
                Ok(n) if n > 0 => {
                    self.0.flag.store(true, Ordering::SeqCst);
                    return true;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => std::thread::sleep(left.min(Duration::from_millis(10))),
            }
        }
    }

    /// The descriptor that becomes readable once shutdown is triggered.
    pub fn fd(&self) -> RawFd {
        self.0.rx.as_raw_fd()
    }

    /// Note a readable [`fd`](Self::fd) (the signal handler's byte may arrive before its flag
    /// store is visible to this thread).
    pub(crate) fn mark(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_wakes_a_waiter_on_another_thread() {
        let s = Shutdown::new();
        assert!(!s.wait_timeout(Duration::from_millis(10)));
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.wait_timeout(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        s.trigger();
        assert!(t.join().unwrap());
        assert!(s.is_triggered());
        // Level-triggered: still readable for the next poller.
        let mut fds = [sys::pollfd(s.fd(), libc::POLLIN)];
        assert_eq!(sys::poll(&mut fds, Some(Duration::ZERO)).unwrap(), 1);
    }
}
