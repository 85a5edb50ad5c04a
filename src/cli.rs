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
    /// Serve a directory over HTTP/1.1 and HTTP/2, plain or HTTPS (listings, ranges, gzip).
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

/// The whole command line's parser: [`Cli`]'s, with each flag whose default is the library's
/// own showing it (`[default: …]`) as the code holds it ([`crate::flags::shown_defaults`],
/// [`commands::serve::shown_defaults`]): one constant for the help and the fallback alike.
pub fn command() -> clap::Command {
    with_defaults(Cli::command(), &shown_defaults())
}

/// Every `[default: …]` [`command`] appends, by flag id: the server flags', the HTTP flags', and
/// `--listen`'s, from each server's own address.
fn shown_defaults() -> Vec<(&'static str, String)> {
    let port = |listen: &'static str| listen.rsplit(':').next().unwrap_or(listen);
    let listen = format!(
        "127.0.0.1 on the command's port: serve {}, hello {}, echo {}, chat {}",
        port(commands::serve::DEFAULT_LISTEN),
        port(commands::hello::DEFAULT_LISTEN),
        port(commands::echo::DEFAULT_LISTEN),
        port(commands::chat::DEFAULT_LISTEN),
    );
    (crate::flags::shown_defaults().into_iter())
        .chain(commands::serve::shown_defaults())
        .chain([("listen", listen)])
        .collect()
}

/// `cmd` and its subcommands, each flag named in `shown` with its default appended to its help.
fn with_defaults(cmd: clap::Command, shown: &[(&str, String)]) -> clap::Command {
    cmd.mut_args(|a| {
        let Some((_, value)) = shown.iter().find(|(id, _)| a.get_id() == *id) else {
            return a;
        };
        // clap drops a one-sentence help's closing period; the sentence keeps it before the
        // default, as the rest of the help writes it.
        let with = |h: &clap::builder::StyledStr| {
            format!(
                "{}. [default: {value}]",
                h.to_string().trim_end_matches('.')
            )
        };
        let (help, long) = (a.get_help().map(with), a.get_long_help().map(with));
        let a = a.help(help.unwrap_or_else(|| format!("[default: {value}]")));
        match long {
            Some(l) => a.long_help(l),
            None => a,
        }
    })
    .mut_subcommands(|c| with_defaults(c, shown))
}

/// Parse the process's arguments with [`command`].
pub fn try_parse() -> std::result::Result<Cli, clap::Error> {
    use clap::FromArgMatches as _;
    command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
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
        Command::Completions(a) => commands::docs::completions(a, command()),
        Command::Man(a) => commands::docs::man(a, command()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A renamed flag must not lose its `[default: …]` silently: every id the tables name is a
    /// flag of `serve` (which has them all), and its help ends with the default the code uses.
    #[test]
    fn every_shown_default_names_a_flag_and_ends_its_help() {
        let serve = command().find_subcommand("serve").unwrap().clone();
        for (id, value) in shown_defaults() {
            let arg = (serve.get_arguments())
                .find(|a| a.get_id() == id)
                .unwrap_or_else(|| panic!("serve has no flag {id}"));
            let help = arg.get_help().unwrap().to_string();
            assert!(
                help.ends_with(&format!(". [default: {value}]")),
                "{id}: {help}"
            );
        }
        let max_body = crate::units::show_size(crate::protocol::http::Limits::default().max_body);
        assert_eq!(max_body, "1m");
    }

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
