//! The `tincan` binary: parse the command line, run it, and turn an error into one line on
//! stderr and a non-zero exit code. Nothing else happens here.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tincan::cli::Cli::parse();
    tincan::logging::init();
    match tincan::commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tincan: {e}");
            ExitCode::FAILURE
        }
    }
}
