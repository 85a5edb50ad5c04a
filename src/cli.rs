//! The command line: one subcommand per service or client. Each subcommand's own flags live
//! beside its runner in [`crate::commands`]; the flags every server shares live here.

use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::model::{Model, PollerKind};

/// A web server and socket-server toolkit.
#[derive(Parser, Debug)]
#[command(name = "tincan", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve a directory over HTTP/1.1 (static files, listings, ranges, compression).
    Serve(commands::serve::ServeArgs),
    /// Echo service (RFC 862, TCP and UDP) with a choice of message framings.
    Echo(commands::echo::EchoArgs),
    /// Send a message to an echo service and print what comes back.
    Send(commands::send::SendArgs),
    /// The tincanchat chat service: every message goes to every connected client.
    Chat(commands::chat::ChatArgs),
    /// Interactive chat client for `tincan chat`.
    Talk(commands::talk::TalkArgs),
    /// A page greeting the client and quoting its request (seed 003).
    Hello(commands::hello::HelloArgs),
    /// Load generator and model comparison.
    Bench(commands::bench::BenchArgs),
}

/// Flags shared by every server subcommand.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address to listen on: HOST:PORT, [V6]:PORT, :PORT (all interfaces) or unix:/path.
    /// Repeat for several. Port 0 picks a free port; the bound address is printed first.
    #[arg(long = "listen", short = 'l', value_name = "ADDR")]
    pub listen: Vec<String>,

    /// Concurrency model.
    #[arg(long, value_enum)]
    pub model: Option<Model>,

    /// Worker processes (prefork) or event-loop threads (event). Default: available cores.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Readiness API for the event model.
    #[arg(long, value_enum)]
    pub poller: Option<PollerKind>,

    /// Connections served at once; further ones wait in the listen backlog.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Listen backlog.
    #[arg(long, value_name = "N")]
    pub backlog: Option<i32>,

    /// Set SO_REUSEPORT on the listening sockets.
    #[arg(long)]
    pub reuse_port: bool,

    /// Seconds in-flight work may take to finish after SIGINT/SIGTERM.
    #[arg(long, value_name = "SECONDS")]
    pub grace: Option<f64>,

    /// Seconds a peer may refuse to accept output before its connection is closed.
    #[arg(long, value_name = "SECONDS")]
    pub send_timeout: Option<f64>,

    /// After binding, switch to this user (by name or uid). Requires starting as root.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// After binding, switch to this group (default: the user's primary group).
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,

    /// File-creation mask to set after dropping privileges, in octal (e.g. 007).
    #[arg(long, value_name = "OCTAL")]
    pub umask: Option<String>,
}
