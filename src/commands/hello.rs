//! `tincan hello`: the greeting-page tutorial's server done properly. Every request, any method and
//! path, gets a page greeting the client and quoting its request (JSON when asked for), over
//! HTTP/1.0 or 1.1, with the same limits, logging and models as `tincan serve`.

use std::sync::Arc;

use clap::Args;

use super::serve::{merge_server_args, HttpArgs};
use crate::config::Config;
use crate::error::Result;
use crate::flags::ServerArgs;
use crate::protocol::http::{Hello, HttpService};

/// Where `tincan hello` listens unless told otherwise: the greeting page tutorial's port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  tincan hello                              greet clients on 127.0.0.1:8080
  curl -H 'Accept: application/json' http://127.0.0.1:8080/    the same as JSON")]
pub struct HelloArgs {
    /// Read settings from a tincan.toml file (only the server and HTTP keys apply).
    #[arg(long, value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub server: ServerArgs,

    #[command(flatten)]
    pub http: HttpArgs,
}

pub fn run(mut args: HelloArgs) -> Result<()> {
    let cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    merge_server_args(&mut args.server, &cfg)?;
    let limits = args.http.limits(&cfg)?;
    // Checked (and the access log opened) before binding: no `listening on` before an error.
    let mut options = args.http.options(
        &cfg,
        args.server.serve_options()?.model,
        args.server.tls_source()?.is_some(),
    )?;
    let (listeners, opts) = super::serve::glue::setup(
        &args.server,
        DEFAULT_LISTEN,
        &[],
        options.http2,
        options.h2.only,
    )?;
    // Answering pauses where the driver stops reading, so a pipelining flood waits in neither.
    options.pipeline_pause = opts.high_water.max(1);
    let service = HttpService::new(Arc::new(Hello), limits, options);
    super::serve::glue::serve(listeners, service, &opts)
}
