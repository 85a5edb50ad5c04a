//! SIGHUP rereads the TLS certificates (as nginx's reload does), without stopping anything:
//! the new ones serve the handshakes that follow, and open connections go on with theirs. A
//! reload that fails keeps the certificates in use and says why in one line.
//!
//! Where the reload runs:
//! - iterative, threaded, event: on a thread of its own, woken by the signal (through
//!   signal-hook's self-pipe), so no connection waits for the files to be read;
//! - prefork: the parent checks a flag on its supervisor tick (it must start no thread before
//!   it forks), rereads the files itself (so a worker started later gets the new ones, and a
//!   bad file is reported once, not once per worker), then passes SIGHUP on to every worker,
//!   where the thread above does the same in each process.
//!
//! Without TLS nothing is installed: SIGHUP keeps its default action.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::iterator::{Handle, Signals};
use signal_hook::SigId;

use super::tls::Reload;

/// Reread, and say how it went: `loud`, a line either way; else (a prefork worker, whose
/// parent has said it) only a failure.
pub(crate) fn reload(reload: &Reload, loud: bool) -> bool {
    match reload() {
        Ok(n) => {
            let line = format!(
                "SIGHUP: reread {n} certificate{}; new connections get {}",
                if n == 1 { "" } else { "s" },
                if n == 1 { "it" } else { "them" }
            );
            if loud {
                tracing::info!("{line}");
            } else {
                tracing::debug!("{line}");
            }
            true
        }
        Err(why) => {
            tracing::warn!("SIGHUP: kept the certificates in use, since {why}");
            false
        }
    }
}

/// A thread that rereads the certificates on every SIGHUP, until dropped.
pub(crate) struct Watcher {
    handle: Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    pub fn start(r: &Reload, loud: bool) -> io::Result<Watcher> {
        let mut signals = Signals::new([libc::SIGHUP])?;
        let handle = signals.handle();
        let r = Arc::clone(r);
        let thread = std::thread::Builder::new()
            .name("tincan-sighup".into())
            .spawn(move || {
                for _ in signals.forever() {
                    reload(&r, loud);
                }
            })?;
        Ok(Watcher {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Prefork's parent: SIGHUP sets a flag its supervisor loop takes (see the module's doc).
pub(crate) struct Flag {
    flag: Arc<AtomicBool>,
    id: SigId,
}

impl Flag {
    pub fn install() -> io::Result<Flag> {
        let flag = Arc::new(AtomicBool::new(false));
        let id = signal_hook::flag::register(libc::SIGHUP, Arc::clone(&flag))?;
        Ok(Flag { flag, id })
    }

    /// A SIGHUP arrived since the last call.
    pub fn take(&self) -> bool {
        self.flag.swap(false, Ordering::SeqCst)
    }

    /// A forked worker watches SIGHUP itself: the flag is its parent's business.
    pub fn forget(&self) {
        signal_hook::low_level::unregister(self.id);
    }
}
