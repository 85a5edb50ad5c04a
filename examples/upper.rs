//! Seed 001's upper-casing handler as a tincan protocol, served under any model:
//! `cargo run --example upper -- [iterative|threaded|prefork|event] [ADDR]`, then
//! `echo hello | nc 127.0.0.1 9999` prints `HELLO`.
use std::{sync::Arc, time::Instant};
use tincan::{Model, Next, Outbox, Peer, ReadBuf, ServeOptions, Service, Session, Waker};

struct Upper;
struct UpperSession;

impl Service for Upper {
    type Session = UpperSession;
    fn open(&self, _peer: &Peer, _waker: Waker) -> UpperSession {
        UpperSession
    }
}

impl Session for UpperSession {
    fn on_input(&mut self, input: &mut ReadBuf, out: &mut Outbox, _now: Instant) -> Next {
        out.push_bytes(&input.data().to_ascii_uppercase());
        input.clear();
        Next::CONTINUE
    }
    fn on_eof(&mut self, _input: &mut ReadBuf, _out: &mut Outbox, _now: Instant) -> Next {
        Next::CloseAfterFlush
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "event".into());
    let model = Model::from_name(&name).ok_or_else(|| format!("`{name}` is not a model"))?;
    let addr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:9999".into())
        .parse()?;
    let listener = tincan::net::bind(&addr, &Default::default())?;
    println!("listening on {}", listener.local_addr_string());
    let opts = ServeOptions {
        model,
        workers: 2,
        ..ServeOptions::default()
    };
    Ok(tincan::serve(vec![listener], Arc::new(Upper), &opts)?)
}
