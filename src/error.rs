//! The library's top-level error: every variant's message is the one line a user reads.

/// What can stop a `tincan` command. `main` prints it as one line and exits with
/// [`Error::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or config file is wrong as written: fixing the command fixes it.
    #[error("{0}")]
    Usage(String),
    /// The command was understood but this machine cannot carry it out: a socket could not be
    /// bound, a privilege dropped, or a file a flag names (document root, certificate, htpasswd
    /// file, CGI directory) is missing or unusable.
    #[error("{0}")]
    Setup(String),
    /// A driver stopped serving (`model::ServeError`, converted where it is defined, so this
    /// module, which every layer uses, imports none of them).
    #[error(transparent)]
    Serve(Box<dyn std::error::Error + Send + Sync>),
    /// A client command could not reach or keep its server.
    #[error("{0}")]
    Client(String),
    #[error("{context}: {}", plain(source))]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Exit status of a usage error, as clap, grep and curl use it.
pub const EXIT_USAGE: u8 = 2;
/// Exit status of every other failure.
pub const EXIT_FAILURE: u8 = 1;

impl Error {
    /// 2 for a command line or config file that is wrong as written, 1 for a failure to carry
    /// out a valid one (README "Exit status").
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An OS error as the end of a sentence (defined beside the system calls, so the drivers need
/// not import this module, which imports theirs).
pub use crate::sys::plain;

#[cfg(test)]
mod tests {
    #[test]
    fn an_os_error_reads_as_the_end_of_a_sentence() {
        let e = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(super::plain(&e), "no such file or directory");
        let io = super::Error::io("cannot open access log /x/y", e);
        assert_eq!(
            io.to_string(),
            "cannot open access log /x/y: no such file or directory"
        );
    }
}
