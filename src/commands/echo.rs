//! `tincan echo`: not written yet.

use clap::Args;

use crate::error::{Error, Result};

#[derive(Args, Debug)]
pub struct EchoArgs {}

pub fn run(_args: EchoArgs) -> Result<()> {
    Err(Error::Usage("`tincan echo` is not written yet".into()))
}
