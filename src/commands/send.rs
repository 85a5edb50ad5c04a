//! `tincan send`: not written yet.

use clap::Args;

use crate::error::{Error, Result};

#[derive(Args, Debug)]
pub struct SendArgs {}

pub fn run(_args: SendArgs) -> Result<()> {
    Err(Error::Usage("`tincan send` is not written yet".into()))
}
