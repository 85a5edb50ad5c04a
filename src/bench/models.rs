//! `tincan bench models`: tincan under every model and poller, one table and one chart.

use clap::Args;

use crate::error::{Error, Result};

#[derive(Args, Debug)]
pub struct ModelsArgs {}

pub fn run(_a: ModelsArgs) -> Result<()> {
    Err(Error::Usage(
        "`tincan bench models` is not written yet".into(),
    ))
}
