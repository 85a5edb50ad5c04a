//! One runner per subcommand: turn its flags into a validated configuration, bind, drop
//! privileges, and hand a service to the drivers (or run a client). [`crate::cli`] parses the
//! command line and calls the runner.

pub mod bench;
pub mod chat;
pub mod docs;
pub mod echo;
pub mod hello;
pub mod send;
pub mod serve;
pub mod start;
pub mod talk;
