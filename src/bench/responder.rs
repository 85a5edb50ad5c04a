//! A trivial HTTP responder in one thread: it answers every request head (anything ending in a
//! blank line) with the same fixed bytes, on keep-alive connections. It does as little per
//! request as a server can, so a load generator that cannot saturate it is the bottleneck, and
//! one that drives it far faster than a real server shows the real server's figures are the
//! server's. Used by `tincan bench selftest` and the load generator's tests.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

/// The response `selftest` uses: 13 bytes of body, keep-alive.
pub const HELLO: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, world!";

/// Output queued for one slow reader before the responder drops it.
const MAX_QUEUED: usize = 1 << 20;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

/// A running responder; stopped and joined when dropped.
pub struct Responder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    waker: Arc<Waker>,
    handle: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("addr", &self.addr)
            .finish()
    }
}

struct Conn {
    stream: TcpStream,
    /// How much of "\r\n\r\n" the bytes so far end with (0..=3).
    matched: u8,
    out: Vec<u8>,
}

impl Responder {
    /// Listen on 127.0.0.1 (a free port) and answer every request with `response`.
    pub fn start(response: &[u8]) -> io::Result<Responder> {
        let mut listener = TcpListener::bind("127.0.0.1:0".parse().expect("literal address"))?;
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let response = response.to_vec();
        let (s, n) = (stop.clone(), served.clone());
        let handle = std::thread::Builder::new()
            .name("responder".into())
            .spawn(move || serve(poll, listener, &response, &s, &n))?;
        Ok(Responder {
            addr,
            stop,
            served,
            waker,
            handle: Some(handle),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn serve(
    mut poll: Poll,
    listener: TcpListener,
    response: &[u8],
    stop: &AtomicBool,
    served: &AtomicU64,
) {
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        for ev in events.iter() {
            match ev.token() {
                WAKER => {}
                LISTENER => loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let i = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            let _ = stream.set_nodelay(true);
                            if poll
                                .registry()
                                .register(
                                    &mut stream,
                                    Token(i),
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .is_ok()
                            {
                                conns[i] = Some(Conn {
                                    stream,
                                    matched: 0,
                                    out: Vec::new(),
                                });
                            } else {
                                free.push(i);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        // Out of descriptors and the like: try again on the next event.
                        Err(_) => break,
                    }
                },
                Token(i) => {
                    let Some(Some(c)) = conns.get_mut(i) else {
                        continue;
                    };
                    if !drive(c, &mut buf, response, served) {
                        conns[i] = None;
                        free.push(i);
                    }
                }
            }
        }
    }
}

/// Read all there is, answer each whole request head, flush. False when the connection is done.
fn drive(c: &mut Conn, buf: &mut [u8], response: &[u8], served: &AtomicU64) -> bool {
    let mut answered = 0;
    loop {
        match c.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                for &b in &buf[..n] {
                    // A four-state matcher for the blank line ending a request head.
                    c.matched = match (c.matched, b) {
                        (0, b'\r') | (2, b'\r') => c.matched + 1,
                        (1, b'\n') => 2,
                        (3, b'\n') => {
                            c.out.extend_from_slice(response);
                            answered += 1;
                            0
                        }
                        (_, b'\r') => 1,
                        _ => 0,
                    };
                }
                if c.out.len() > MAX_QUEUED {
                    return false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    // Counted before the answers go out, so a client that has its answer sees it counted.
    served.fetch_add(answered, Ordering::Relaxed);
    while !c.out.is_empty() {
        match c.stream.write(&c.out) {
            Ok(0) => return false,
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}
