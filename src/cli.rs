//! The command line: the top-level parser, one subcommand per service or client, and the
//! dispatch to its runner. Each subcommand's own flags live beside its runner in
//! [`crate::commands`]; the flags several share in [`crate::flags`].

use clap::{CommandFactory, Parser, Subcommand};

use crate::commands;
use crate::error::Result;

/// A web server and socket-server toolkit.
#[derive(Parser, Debug)]
#[command(
    name = "tincan",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = EXIT_STATUS
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve a directory over HTTP/1.1 (static files, listings, ranges, compression).
    Serve(Box<commands::serve::ServeArgs>),
    /// Echo service (RFC 862, TCP and UDP) with a choice of message framings.
    Echo(commands::echo::EchoArgs),
    /// Send a message to an echo service and print what comes back.
    Send(commands::send::SendArgs),
    /// The tincanchat chat service: every message goes to every connected client.
    Chat(commands::chat::ChatArgs),
    /// Interactive chat client for `tincan chat`.
    Talk(commands::talk::TalkArgs),
    /// A page greeting the client and quoting its request line.
    Hello(commands::hello::HelloArgs),
    /// Load generator and model comparison.
    Bench(commands::bench::BenchArgs),

    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions(commands::docs::CompletionsArgs),
    /// Print a manual page (roff) for tincan or one of its subcommands.
    Man(commands::docs::ManArgs),
}

/// The exit status contract, shown by `tincan --help` (README "Exit status").
pub const EXIT_STATUS: &str = "\
Exit status:
  0    success (a server stopped by SIGINT/SIGTERM after its grace period)
  1    the command is valid but could not be carried out: a file or directory missing or
       unusable, a port in use, a server that does not answer
  2    the command line or config file is wrong as written (unknown flag or key, bad value)
  130  tincan bench interrupted by Ctrl-C";

/// Run the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(a) => commands::serve::run(*a),
        Command::Echo(a) => commands::echo::run(a),
        Command::Send(a) => commands::send::run(a),
        Command::Chat(a) => commands::chat::run(a),
        Command::Talk(a) => commands::talk::run(a),
        Command::Hello(a) => commands::hello::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Completions(a) => commands::docs::completions(a, Cli::command()),
        Command::Man(a) => commands::docs::man(a, Cli::command()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags' defaults, written as text for `--help`, are the library's own constants.
    #[test]
    fn size_flags_take_suffixes_and_default_to_the_library_limits() {
        use crate::protocol::echo::DEFAULT_MAX_FRAME;
        let Command::Echo(echo) = Cli::parse_from(["tincan", "echo"]).command else {
            unreachable!()
        };
        assert_eq!(echo.max_frame, DEFAULT_MAX_FRAME);
        let Command::Send(send) = Cli::parse_from(["tincan", "send", "x:1"]).command else {
            unreachable!()
        };
        assert_eq!(send.max_frame, DEFAULT_MAX_FRAME);
        let Command::Echo(echo) = Cli::parse_from(["tincan", "echo", "--max-frame", "4M"]).command
        else {
            unreachable!()
        };
        assert_eq!(echo.max_frame, 4 << 20);
    }
}
