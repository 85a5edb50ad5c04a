//! The one integration-test binary: every test starts the real `tincan` binary on 127.0.0.1:0
//! (see `support`) and talks to it over real sockets with real clients.

mod acme;
mod activation;
mod bench;
mod chat;
mod chat_redis;
mod cli;
mod echo;
mod h2;
mod h2_conformance;
mod http;
mod models;
mod operator;
mod proxy;
mod qa;
mod sharing;
mod static_files;
mod support;
mod tls;
mod upstreams;
