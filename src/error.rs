//! The library's top-level error: every variant's message is the one line a user reads.

use crate::model::ServeError;

/// What can stop a `tincan` command. `main` prints it as one line and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or config file asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// A socket could not be bound or a privilege could not be dropped.
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// A client command could not reach or keep its server.
    #[error("{0}")]
    Client(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
