//! The prefork model: not written yet.
use std::sync::Arc;

use super::{Ctx, ServeError};
use crate::net::Listener;
use crate::protocol::Service;

pub(crate) fn run<S: Service>(
    _ctx: Arc<Ctx<S>>,
    _listeners: Vec<Listener>,
) -> Result<(), ServeError> {
    Err(ServeError::Refused(
        "the prefork model is not written yet; use --model threaded".into(),
    ))
}
