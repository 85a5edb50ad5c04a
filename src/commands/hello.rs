//! `tincan hello`: not written yet.

use clap::Args;

use crate::error::{Error, Result};

#[derive(Args, Debug)]
pub struct HelloArgs {}

pub fn run(_args: HelloArgs) -> Result<()> {
    Err(Error::Usage("`tincan hello` is not written yet".into()))
}
