//! One runner per subcommand: turn its flags into a validated configuration, bind, drop
//! privileges, and hand a service to the drivers (or run a client).

pub mod bench;
pub mod chat;
pub mod docs;
pub mod echo;
pub mod hello;
pub mod send;
pub mod serve;
pub mod start;
pub mod talk;

use crate::cli::{Cli, Command};
use crate::error::Result;

/// Run the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(a) => serve::run(*a),
        Command::Echo(a) => echo::run(a),
        Command::Send(a) => send::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Talk(a) => talk::run(a),
        Command::Hello(a) => hello::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Completions(a) => docs::completions(a),
        Command::Man(a) => docs::man(a),
    }
}
