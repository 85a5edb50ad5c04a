//! `tincan talk`: not written yet.

use clap::Args;

use crate::error::{Error, Result};

#[derive(Args, Debug)]
pub struct TalkArgs {}

pub fn run(_args: TalkArgs) -> Result<()> {
    Err(Error::Usage("`tincan talk` is not written yet".into()))
}
