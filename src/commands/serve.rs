//! `tincan serve`: not written yet.

use clap::Args;

use crate::error::{Error, Result};

#[derive(Args, Debug)]
pub struct ServeArgs {}

pub fn run(_args: ServeArgs) -> Result<()> {
    Err(Error::Usage("`tincan serve` is not written yet".into()))
}
