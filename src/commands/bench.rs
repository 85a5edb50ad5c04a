//! `tincan bench`: not written yet.

use clap::Args;

use crate::error::{Error, Result};

#[derive(Args, Debug)]
pub struct BenchArgs {}

pub fn run(_args: BenchArgs) -> Result<()> {
    Err(Error::Usage("`tincan bench` is not written yet".into()))
}
