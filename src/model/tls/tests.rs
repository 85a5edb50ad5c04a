//! The TLS layer against a rustls client over a real socket: when the records may move into
//! the kernel, and that a connection goes on whole whichever side carries them.

use super::kernel::tests::{client, configs};
use super::*;
use rustls::crypto::ring::cipher_suite as cs;
use rustls::ClientConnection;
use std::io::Write;
use std::net::TcpStream;

/// A TLS layer on our end of a loopback TCP connection, a rustls client on theirs.
struct Ends {
    layer: TlsLayer,
    ours: Socket,
    theirs: TcpStream,
    client: ClientConnection,
    input: ReadBuf,
    out: Outbox,
    cork: Cork,
}

impl Ends {
    fn new() -> Ends {
        let (server, c) = configs(cs::TLS13_AES_128_GCM_SHA256);
        let settings = TlsSettings {
            resumed: Arc::clone(&server),
            config: server,
            plain_reply: None,
            plain: Vec::new(),
            reload: None,
            background: None,
        };
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let theirs = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (ours, _) = l.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        // Each write of the client's arrives at once (no Nagle wait for our delayed ACK).
        theirs.set_nodelay(true).unwrap();
        theirs
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        Ends {
            layer: TlsLayer::new(&settings).unwrap(),
            ours: Socket::from(ours),
            theirs,
            client: client(c),
            input: ReadBuf::new(),
            out: Outbox::new(),
            cork: Cork::default(),
        }
    }

    /// What the client has to send, encrypted.
    fn client_wire(&mut self) -> Vec<u8> {
        let mut wire = Vec::new();
        while self.client.wants_write() {
            self.client.write_tls(&mut wire).unwrap();
        }
        wire
    }

    /// The server reads what has arrived (and tells the session's ALPN, as the driver does).
    fn server_reads(&mut self) -> TlsRead {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let r = self.layer.read_into(&self.ours, &mut self.input).unwrap();
        let _ = self.layer.alpn_once();
        r
    }

    /// The server sends what it can.
    fn server_sends(&mut self) -> Flushed {
        self.server_sends_closing(false)
    }

    /// The server sends what it can, `closing` the connection after it or not.
    fn server_sends_closing(&mut self, closing: bool) -> Flushed {
        self.layer
            .flush(
                &self.ours,
                &mut self.out,
                super::super::io::TURN,
                &mut self.cork,
                closing,
            )
            .unwrap()
    }

    /// The client reads until it has `want` bytes of plaintext, or the server's close_notify.
    fn client_reads(&mut self, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while got.len() < want {
            match self.client.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            let n = self.client.read_tls(&mut self.theirs).unwrap();
            assert!(n > 0, "the server closed after {} bytes", got.len());
            self.client.process_new_packets().unwrap();
        }
        got
    }

    /// Hand-shake: the client's flights go over, the server answers. Stops once the server has
    /// the client's Finished (and so has the TLS 1.3 tickets to send) but has not sent them.
    fn handshake(&mut self) {
        let hello = self.client_wire();
        self.theirs.write_all(&hello).unwrap();
        assert_eq!(self.server_reads(), TlsRead::Io(ReadOutcome::WouldBlock));
        self.server_sends();
        while self.client.is_handshaking() {
            self.client.read_tls(&mut self.theirs).unwrap();
            self.client.process_new_packets().unwrap();
        }
        let finished = self.client_wire();
        self.theirs.write_all(&finished).unwrap();
        self.server_reads();
    }
}

#[test]
fn the_kernel_may_take_the_records_only_between_whole_records_with_nothing_left_to_send() {
    let mut e = Ends::new();
    assert!(!e.layer.kernel_ready(), "before the handshake");
    e.handshake();
    assert!(!e.layer.handshaking());
    assert!(e.layer.wants_write(), "the TLS 1.3 session tickets wait");
    assert!(!e.layer.kernel_ready(), "rustls still has tickets to send");
    e.server_sends();
    assert!(e.layer.kernel_ready());

    // A request arrives in two parts: between them rustls holds half a record.
    e.client
        .writer()
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let wire = e.client_wire();
    e.theirs.write_all(&wire[..wire.len() / 2]).unwrap();
    assert_eq!(e.server_reads(), TlsRead::Io(ReadOutcome::WouldBlock));
    assert!(!e.layer.kernel_ready(), "half a record is in rustls");
    e.theirs.write_all(&wire[wire.len() / 2..]).unwrap();
    let r = e.server_reads();
    assert!(
        matches!(r, TlsRead::Io(ReadOutcome::Data { n: 27, .. })),
        "{r:?}"
    );
    assert!(e.layer.kernel_ready());

    e.layer.notify_close();
    assert!(!e.layer.kernel_ready(), "closing");
}

/// The first file region is where the records would move into the kernel. Here the kernel
/// has no TLS: it declines, rustls goes on, and the process does not ask again. On a kernel
/// with TLS the same exchange runs through it: the file, a later request and answer, and the
/// close_notify all reach the rustls client intact either way.
#[test]
fn a_connection_goes_on_whole_whether_or_not_the_kernel_takes_its_records() {
    let mut e = Ends::new();
    e.handshake();
    e.server_sends();
    let body: Vec<u8> = (0..400_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let path = std::env::temp_dir().join(format!("tincan-tls-layer-{}", std::process::id()));
    std::fs::write(&path, &body).unwrap();
    let file = Arc::new(std::fs::File::open(&path).unwrap());
    std::fs::remove_file(&path).unwrap();

    e.out.push_bytes(b"head;");
    e.out.push_file(Arc::clone(&file), 123, 300_000);
    let mut want = b"head;".to_vec();
    want.extend_from_slice(&body[123..300_123]);
    let mut got = Vec::new();
    while !e.out.is_empty() {
        e.server_sends();
        got.extend(e.client_reads(1));
    }
    got.extend(e.client_reads(want.len() - got.len()));
    assert!(got == want, "{} bytes of {}", got.len(), want.len());
    match &e.layer.engine {
        Engine::Rustls(_) => assert!(!e.layer.kernel_wanted, "asked again after a refusal"),
        Engine::Kernel(_) => {}
        Engine::Gone => panic!("the connection lost its keys"),
    }

    // The connection goes on: a request in, an answer out, then the close.
    e.client.writer().write_all(b"again").unwrap();
    let wire = e.client_wire();
    e.theirs.write_all(&wire).unwrap();
    assert!(matches!(
        e.server_reads(),
        TlsRead::Io(ReadOutcome::Data { n: 5, .. })
    ));
    e.out.push_bytes(b"answer");
    e.out.push_file(file, 0, 1000);
    while !e.out.is_empty() {
        e.server_sends();
    }
    // As the driver does: close_notify once the outbox is out.
    assert!(e.layer.notify_close());
    while e.layer.wants_write() {
        e.server_sends();
    }
    let mut want = b"answer".to_vec();
    want.extend_from_slice(&body[..1000]);
    assert_eq!(e.client_reads(usize::MAX), want, "then close_notify");
}

/// The first answer after a TLS 1.3 handshake leaves in one send with the session tickets
/// rustls holds; on a closing connection the close_notify goes in it too (one send instead of
/// three, and one wake-up for the client).
#[test]
fn tickets_answer_and_close_notify_leave_in_one_send() {
    let mut e = Ends::new();
    e.handshake();
    assert!(e.layer.wants_write(), "the TLS 1.3 session tickets wait");
    e.out
        .push_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let f = e.server_sends_closing(true);
    assert_eq!(f.calls, 1, "{f:?}");
    assert!(e.out.is_empty() && !e.layer.wants_write());
    assert!(!e.layer.notify_close(), "close_notify was queued already");
    let want = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    assert_eq!(e.client_reads(usize::MAX), want, "then close_notify");

    // Not closing: the answer still goes with the tickets, and no close_notify follows.
    let mut e = Ends::new();
    e.handshake();
    e.out.push_bytes(b"answer");
    let f = e.server_sends_closing(false);
    assert_eq!(f.calls, 1, "{f:?}");
    assert!(e.layer.notify_close(), "nothing queued the close_notify");
}

#[test]
fn a_hello_offers_a_session_only_with_a_pre_shared_key() {
    let (server, c) = configs(cs::TLS13_AES_128_GCM_SHA256);
    let hello = |client: &mut ClientConnection| {
        let mut wire = Vec::new();
        client.write_tls(&mut wire).unwrap();
        wire
    };
    let mut first = client(Arc::clone(&c));
    let full = hello(&mut first);
    assert!(
        !offers_session(&full),
        "a first hello has no session to offer"
    );
    // A handshake through, and the tickets in: the client's next hello offers one of them.
    let mut srv = rustls::ServerConnection::new(server).unwrap();
    let mut rd = &full[..];
    srv.read_tls(&mut rd).unwrap();
    srv.process_new_packets().unwrap();
    for _ in 0..2 {
        let mut wire = Vec::new();
        while srv.wants_write() {
            srv.write_tls(&mut wire).unwrap();
        }
        let mut rd = &wire[..];
        while !rd.is_empty() {
            first.read_tls(&mut rd).unwrap();
            first.process_new_packets().unwrap();
        }
        let back = hello(&mut first);
        let mut rd = &back[..];
        while !rd.is_empty() {
            srv.read_tls(&mut rd).unwrap();
            srv.process_new_packets().unwrap();
        }
    }
    assert!(!first.is_handshaking() && !srv.is_handshaking());
    let again = hello(&mut client(c));
    assert!(offers_session(&again), "a hello with a ticket offers it");
    // Cut anywhere, the same hello offers nothing that can be read.
    for cut in [0, 1, 5, 9, 43, again.len() / 2, again.len() - 1] {
        assert!(!offers_session(&again[..cut]), "cut at {cut}");
    }
    // Not a ClientHello (a ServerHello's type), or not a handshake at all.
    let mut other = again.clone();
    other[5] = 2;
    assert!(!offers_session(&other));
    assert!(!offers_session(b"GET / HTTP/1.1\r\n\r\n"));
}
