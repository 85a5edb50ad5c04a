//! The iterative model: one connection at a time, as in the tutorials' `while True: accept`.
//! Others wait in the listen backlog. Simple and fair only to the patient; here for teaching and
//! for comparison.

use super::{blocking, Ctx};
use crate::net::Listener;
use crate::protocol::Service;

use super::ServeError;

pub(crate) fn run<S: Service>(ctx: &Ctx<S>, listeners: Vec<Listener>) -> Result<(), ServeError> {
    while let Some((sock, peer)) = blocking::accept_next(ctx, &listeners)? {
        // A session that panics loses its own connection, not the server.
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            blocking::run_connection(ctx, sock, peer, &|| {
                for l in &listeners {
                    l.stop();
                }
            })
        }));
        if served.is_err() {
            tracing::error!("a session panicked; its connection was closed");
        }
    }
    drop(listeners);
    ctx.begin_shutdown();
    ctx.report_cut_off();
    Ok(())
}
