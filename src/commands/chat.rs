//! `tincan chat`: not written yet.

use clap::Args;

use crate::error::{Error, Result};

#[derive(Args, Debug)]
pub struct ChatArgs {}

pub fn run(_args: ChatArgs) -> Result<()> {
    Err(Error::Usage("`tincan chat` is not written yet".into()))
}
