//! The kernel-TLS pieces that can be checked without a kernel that has TLS: the key layout
//! against linux/tls.h, the keys against a software model of the kernel's record layer (both
//! ways, every mapped suite under TLS 1.2 and 1.3), the nonce rule for TLS 1.2 AES-GCM, the
//! record framing, the records that are not data, and the socket side on a plain socket; and,
//! where the kernel has TLS (`scripts/ktls-vm`), the socket side on the kernel's.

use super::*;
use std::io::{Read, Write};
use std::sync::Arc;

use rustls::crypto::ring::cipher_suite as cs;
use rustls::{ClientConfig, ClientConnection, ConnectionCommon, ServerConfig};

#[test]
fn crypto_info_structs_have_the_layout_of_linux_tls_h() {
    use std::mem::{offset_of, size_of};
    type G128 = libc::tls12_crypto_info_aes_gcm_128;
    type G256 = libc::tls12_crypto_info_aes_gcm_256;
    type Cha = libc::tls12_crypto_info_chacha20_poly1305;
    assert_eq!(size_of::<libc::tls_crypto_info>(), 4);
    // (size, iv, key, salt, rec_seq), from the structs in linux/tls.h: a 4-byte
    // tls_crypto_info, then iv, key, salt and rec_seq arrays with no padding.
    macro_rules! layout {
        ($t:ty) => {
            (
                size_of::<$t>(),
                offset_of!($t, iv),
                offset_of!($t, key),
                offset_of!($t, salt),
                offset_of!($t, rec_seq),
            )
        };
    }
    assert_eq!(layout!(G128), (40, 4, 12, 28, 32));
    assert_eq!(layout!(G256), (56, 4, 12, 44, 48));
    assert_eq!(layout!(Cha), (56, 4, 16, 48, 48));
    // The constants the kernel checks.
    assert_eq!(libc::TLS_1_2_VERSION, 0x0303);
    assert_eq!(libc::TLS_1_3_VERSION, 0x0304);
    assert_eq!(
        (
            libc::TLS_CIPHER_AES_GCM_128,
            libc::TLS_CIPHER_AES_GCM_256,
            libc::TLS_CIPHER_CHACHA20_POLY1305
        ),
        (51, 52, 54)
    );
    assert_eq!((libc::SOL_TLS, libc::TLS_TX, libc::TLS_RX), (282, 1, 2));
    assert_eq!(libc::TCP_ULP, 31);
}

/// Every suite the kernel path maps, with its version, as rustls's ring provider has them.
fn mapped_suites() -> Vec<rustls::SupportedCipherSuite> {
    vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
}

/// Server and client configurations that agree on `suite` alone, with a self-signed ECDSA
/// certificate for `localhost`, and ALPN `http/1.1`.
pub(in crate::model::tls) fn configs(
    suite: rustls::SupportedCipherSuite,
) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = made.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
    // The ring provider's key exchanges (X25519, P-256, P-384), as the server's
    // (`crate::tls::provider`); only the suites are narrowed.
    #[allow(deprecated)]
    let ring = rustls::crypto::ring::default_provider();
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![suite],
        ..ring
    });
    let version = suite.version();
    let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.enable_secret_extraction = true;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    (Arc::new(server), Arc::new(client))
}

/// A client for `localhost` under `config`.
pub(in crate::model::tls) fn client(config: Arc<ClientConfig>) -> ClientConnection {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    ClientConnection::new(config, name).unwrap()
}

/// A server and a client that agree on `suite` alone.
fn pair(suite: rustls::SupportedCipherSuite) -> (ServerConnection, ClientConnection) {
    let (server, c) = configs(suite);
    (ServerConnection::new(server).unwrap(), client(c))
}

/// Move what `from` has to send into `to`; returns the bytes moved.
fn carry<A, B>(from: &mut ConnectionCommon<A>, to: &mut ConnectionCommon<B>) -> usize {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).unwrap();
    }
    let mut rd = &wire[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets().unwrap();
    }
    wire.len()
}

/// Everything `conn` has decrypted.
fn plaintext<A>(conn: &mut ConnectionCommon<A>) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.reader().read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    got
}

/// Hand-shake, then a few records each way, so that neither sequence number is where it
/// started.
fn connected(suite: rustls::SupportedCipherSuite) -> (ServerConnection, ClientConnection) {
    let (mut s, mut c) = pair(suite);
    while s.is_handshaking() || c.is_handshaking() || s.wants_write() || c.wants_write() {
        carry(&mut c, &mut s);
        carry(&mut s, &mut c);
    }
    for i in 0..3 {
        s.writer()
            .write_all(format!("from rustls {i}").as_bytes())
            .unwrap();
        carry(&mut s, &mut c);
        c.writer()
            .write_all(format!("to rustls {i}").as_bytes())
            .unwrap();
        carry(&mut c, &mut s);
    }
    assert_eq!(
        plaintext(&mut c),
        b"from rustls 0from rustls 1from rustls 2"
    );
    assert_eq!(plaintext(&mut s), b"to rustls 0to rustls 1to rustls 2");
    (s, c)
}

/// The kernel's software record layer for one direction, as net/tls/tls.h has it
/// (`tls_fill_prepend`, `tls_make_aad`, `tls_xor_iv_with_seq`, `tls_advance_record_sn`):
/// nonce = salt || iv, xor the sequence number under TLS 1.3 and ChaCha20; under TLS 1.2
/// AES-GCM the iv is the explicit nonce on the wire, one more per record.
struct KernelModel {
    key: ring::aead::LessSafeKey,
    salt: Vec<u8>,
    iv: Vec<u8>,
    seq: u64,
    tls13: bool,
    explicit: bool,
}

impl KernelModel {
    fn new(info: &CryptoInfo) -> KernelModel {
        use ring::aead::{AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305};
        let (alg, version, key, salt, iv, seq): (_, u16, &[u8], &[u8], &[u8], _) = match info {
            CryptoInfo::AesGcm128(i) => (
                &AES_128_GCM,
                i.info.version,
                &i.key,
                &i.salt,
                &i.iv,
                i.rec_seq,
            ),
            CryptoInfo::AesGcm256(i) => (
                &AES_256_GCM,
                i.info.version,
                &i.key,
                &i.salt,
                &i.iv,
                i.rec_seq,
            ),
            CryptoInfo::Chacha20Poly1305(i) => (
                &CHACHA20_POLY1305,
                i.info.version,
                &i.key,
                &i.salt,
                &i.iv,
                i.rec_seq,
            ),
        };
        let tls13 = version == libc::TLS_1_3_VERSION;
        KernelModel {
            key: ring::aead::LessSafeKey::new(ring::aead::UnboundKey::new(alg, key).unwrap()),
            salt: salt.to_vec(),
            iv: iv.to_vec(),
            seq: u64::from_be_bytes(seq),
            tls13,
            explicit: !tls13 && !matches!(info, CryptoInfo::Chacha20Poly1305(_)),
        }
    }

    fn nonce(&self) -> ring::aead::Nonce {
        let mut n = [self.salt.as_slice(), self.iv.as_slice()].concat();
        assert_eq!(n.len(), 12);
        if !self.explicit {
            for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
                *b ^= s;
            }
        }
        ring::aead::Nonce::try_assume_unique_for_key(&n).unwrap()
    }

    fn aad(&self, header: [u8; 5], plain_len: usize) -> Vec<u8> {
        if self.tls13 {
            header.to_vec()
        } else {
            let mut a = self.seq.to_be_bytes().to_vec();
            a.extend_from_slice(&[23, 3, 3]);
            a.extend_from_slice(&(plain_len as u16).to_be_bytes());
            a
        }
    }

    fn advance(&mut self) {
        self.seq += 1;
        if self.explicit {
            let next = u64::from_be_bytes(self.iv[..].try_into().unwrap()) + 1;
            self.iv = next.to_be_bytes().to_vec();
        }
    }

    /// One application-data record of `data`, as the kernel would send it.
    fn seal(&mut self, data: &[u8]) -> Vec<u8> {
        let mut body = data.to_vec();
        if self.tls13 {
            body.push(23);
        }
        let wire_len = body.len() + 16 + if self.explicit { 8 } else { 0 };
        let header = [23, 3, 3, (wire_len >> 8) as u8, wire_len as u8];
        let aad = self.aad(header, data.len());
        let explicit = self.iv.clone();
        self.key
            .seal_in_place_append_tag(self.nonce(), ring::aead::Aad::from(aad), &mut body)
            .unwrap();
        let mut record = header.to_vec();
        if self.explicit {
            record.extend_from_slice(&explicit);
        }
        record.extend_from_slice(&body);
        self.advance();
        record
    }

    /// The plaintext of one application-data record, as the kernel would decrypt it.
    fn open(&mut self, record: &[u8]) -> Vec<u8> {
        let header: [u8; 5] = record[..5].try_into().unwrap();
        assert_eq!(header[0], 23, "an application_data record");
        let mut payload = record[5..].to_vec();
        let nonce = if self.explicit {
            let n = [self.salt.as_slice(), &payload[..8]].concat();
            payload.drain(..8);
            ring::aead::Nonce::try_assume_unique_for_key(&n).unwrap()
        } else {
            self.nonce()
        };
        let aad = self.aad(header, payload.len() - 16);
        let plain = self
            .key
            .open_in_place(nonce, ring::aead::Aad::from(aad), &mut payload)
            .expect("the record does not open with the kernel's keys")
            .to_vec();
        self.advance();
        let mut plain = plain;
        if self.tls13 {
            while plain.last() == Some(&0) {
                plain.pop();
            }
            assert_eq!(plain.pop(), Some(23), "inner content type");
        }
        plain
    }
}

/// The keys given to the kernel are the connection's: records the kernel would encrypt with
/// the TX keys are read by the rustls client, and records the client sends open with the RX
/// keys, for every mapped suite under TLS 1.2 and 1.3, after rustls has already sent and
/// received some (so that the sequence numbers carried over matter).
#[test]
fn the_kernel_keys_speak_with_a_rustls_peer_in_every_mapped_suite() {
    for rustls_suite in mapped_suites() {
        let name = format!("{:?}", rustls_suite.suite());
        let suite = Suite::of(rustls_suite).unwrap_or_else(|| panic!("{name} is not mapped"));
        let (server, mut client) = connected(rustls_suite);
        let secrets = server.dangerous_extract_secrets().unwrap();
        let (tx_seq, rx_seq) = (secrets.tx.0, secrets.rx.0);
        assert!(tx_seq >= 3 && rx_seq >= 3, "{name}: seqs {tx_seq} {rx_seq}");
        let tx = crypto_info(suite, Direction::Tx, secrets.tx).unwrap();
        let rx = crypto_info(suite, Direction::Rx, secrets.rx).unwrap();
        assert_eq!((tx.rec_seq(), rx.rec_seq()), (tx_seq, rx_seq), "{name}");
        let (version, cipher) = match &tx {
            CryptoInfo::AesGcm128(i) => (i.info.version, i.info.cipher_type),
            CryptoInfo::AesGcm256(i) => (i.info.version, i.info.cipher_type),
            CryptoInfo::Chacha20Poly1305(i) => (i.info.version, i.info.cipher_type),
        };
        let want_version = if rustls_suite.tls13().is_some() {
            0x0304
        } else {
            0x0303
        };
        assert_eq!(version, want_version, "{name}");
        let want_cipher = match suite.cipher {
            Cipher::AesGcm128 => 51,
            Cipher::AesGcm256 => 52,
            Cipher::Chacha20Poly1305 => 54,
        };
        assert_eq!(cipher, want_cipher, "{name}");

        let mut kernel_tx = KernelModel::new(&tx);
        for part in [&b"sent by the kernel"[..], b", and more"] {
            let record = kernel_tx.seal(part);
            let mut rd = &record[..];
            client.read_tls(&mut rd).unwrap();
            client
                .process_new_packets()
                .unwrap_or_else(|e| panic!("{name}: the client refused the record: {e}"));
        }
        assert_eq!(
            plaintext(&mut client),
            b"sent by the kernel, and more",
            "{name}"
        );

        let mut kernel_rx = KernelModel::new(&rx);
        for part in ["read by the kernel", "again"] {
            client.writer().write_all(part.as_bytes()).unwrap();
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            assert_eq!(kernel_rx.open(&wire), part.as_bytes(), "{name}");
        }
    }
}

/// rustls sent its TLS 1.2 AES-GCM records with the explicit nonces `fixed ^ j`; the kernel
/// counts up from the start it is given. The two sets never meet (within 2^40 records, far
/// past the suite's 2^24 limit), whatever the fixed part and however many records rustls sent.
#[test]
fn tls12_gcm_nonces_of_the_kernel_never_repeat_those_of_rustls() {
    use proptest::prelude::*;
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(
            &(any::<u64>(), 1u64..1 << 20, any::<u64>(), 0u64..1 << 40),
            |(fixed, seq, j, k)| {
                let j = j % seq;
                let start = tls12_gcm_explicit_start(fixed, seq);
                prop_assert_ne!(start.wrapping_add(k), fixed ^ j);
                Ok(())
            },
        )
        .unwrap();
    // Given the fixed part as is, the kernel's first nonce would be rustls's first.
    assert_ne!(tls12_gcm_explicit_start(7, 1), 7);
    assert_eq!(tls12_gcm_explicit_start(7, 1), 8);
    assert_eq!(tls12_gcm_explicit_start(0b100, 3), 0b1000);
    assert_eq!(tls12_gcm_explicit_start(u64::MAX, 5), 0);
}

#[test]
fn records_that_are_not_data_end_the_stream_or_are_skipped_as_rustls_would() {
    let cases: &[(bool, u8, &[u8], Control)] = &[
        (true, ALERT, &[1, 0], Control::Closed),
        (false, ALERT, &[1, 0], Control::Closed),
        (true, ALERT, &[2, 0], Control::Closed),
        (false, ALERT, &[1, 100], Control::Skip),
        (true, ALERT, &[1, 90], Control::Skip),
    ];
    for (tls13, typ, body, want) in cases {
        assert_eq!(&control(*tls13, *typ, body), want, "{tls13} {typ} {body:?}");
    }
    let fails: &[(bool, u8, &[u8])] = &[
        (true, ALERT, &[1, 100]),
        (false, ALERT, &[2, 40]),
        (true, ALERT, &[2, 20]),
        (true, ALERT, &[1]),
        (false, ALERT, &[]),
        (true, HANDSHAKE, &[24, 0, 0, 1, 0]),
        (false, HANDSHAKE, &[1, 0, 0, 0]),
        (true, 20, &[1]),
    ];
    for (tls13, typ, body) in fails {
        match control(*tls13, *typ, body) {
            Control::Fail(why) => assert!(!why.is_empty()),
            other => panic!("{tls13} {typ} {body:?}: {other:?}"),
        }
    }
}

#[test]
fn the_framing_is_on_a_boundary_only_between_whole_records() {
    let record = |len: usize| {
        let mut r = vec![23, 3, 3, (len >> 8) as u8, len as u8];
        r.extend(std::iter::repeat_n(0xab, len));
        r
    };
    let stream: Vec<u8> = [record(300), record(0), record(16_401), record(1)].concat();
    let ends = [305, 310, 310 + 5 + 16_401, stream.len()];
    for step in [1, 2, 3, 5, 7, 4096, stream.len()] {
        let mut f = Framing::default();
        assert!(f.at_boundary());
        let mut fed = 0;
        for piece in stream.chunks(step) {
            f.feed(piece);
            fed += piece.len();
            let whole = ends.contains(&fed) || fed == 0;
            assert_eq!(f.at_boundary(), whole, "step {step}, {fed} bytes fed");
        }
    }
    // A real handshake and a few records: rustls took every byte, and all of them whole.
    let (mut s, mut c) = pair(cs::TLS13_AES_128_GCM_SHA256);
    let mut f = Framing::default();
    while s.is_handshaking() || c.is_handshaking() {
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        f.feed(&wire);
        let mut rd = &wire[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
            s.process_new_packets().unwrap();
        }
        carry(&mut s, &mut c);
    }
    assert!(f.at_boundary());
}

/// A TCP connection on loopback: ours (non-blocking) and theirs.
fn tcp_pair() -> (Socket, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let theirs = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (ours, _) = l.accept().unwrap();
    ours.set_nonblocking(true).unwrap();
    (Socket::from(ours), theirs)
}

fn aes128_tls13() -> Suite {
    Suite::of(cs::TLS13_AES_128_GCM_SHA256).unwrap()
}

/// Under kernel TLS the socket carries plaintext both ways, and the kernel's record types say
/// what is data; a plain socket (no record types: all data) stands in for one here.
#[test]
fn a_kernel_connection_reads_and_sends_plaintext_with_sendfile() {
    let (ours, mut theirs) = tcp_pair();
    let mut k = KernelTls::for_test(aes128_tls13(), 0);
    let mut input = ReadBuf::new();
    assert_eq!(
        k.read_into(&ours, &mut input).unwrap(),
        ReadOutcome::WouldBlock
    );
    theirs.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(matches!(
        k.read_into(&ours, &mut input).unwrap(),
        ReadOutcome::Data { n: 18, .. }
    ));

    let path = std::env::temp_dir().join(format!("tincan-ktls-{}", std::process::id()));
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &body).unwrap();
    let file = Arc::new(std::fs::File::open(&path).unwrap());
    std::fs::remove_file(&path).unwrap();
    let mut out = Outbox::new();
    out.push_bytes(b"head\n");
    out.push_file(file, 1000, 200_000);
    k.notify_close();
    assert!(k.wants_write());
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).unwrap();
        got
    });
    let mut cork = cio::Cork::default();
    let mut sent = 0;
    while !out.is_empty() || k.wants_write() {
        let f = k.flush(&ours, &mut out, cio::TURN, &mut cork).unwrap();
        sent += f.wrote;
        assert!(f.calls >= 1 || f.paused);
    }
    assert_eq!(sent, 5 + 200_000);
    drop(ours);
    let got = reader.join().unwrap();
    let mut want = b"head\n".to_vec();
    want.extend_from_slice(&body[1000..201_000]);
    // On a plain socket the close_notify alert's body goes out as two plain bytes, after
    // everything queued before it.
    want.extend_from_slice(&[WARNING, CLOSE_NOTIFY]);
    assert!(got == want, "{} bytes, not {}", got.len(), want.len());
}

#[test]
fn a_kernel_connection_sees_the_peers_close() {
    let (ours, theirs) = tcp_pair();
    let mut k = KernelTls::for_test(aes128_tls13(), 0);
    theirs.shutdown(std::net::Shutdown::Write).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mut input = ReadBuf::new();
    assert_eq!(k.read_into(&ours, &mut input).unwrap(), ReadOutcome::Eof);
}

/// Far below the limit nothing is asked; near it the kernel is asked for its exact count (a
/// plain socket has none to give, so here the flush fails: the connection would close rather
/// than send past the limit unchecked).
#[test]
fn a_kernel_connection_near_its_record_limit_checks_before_sending_more() {
    let suite = aes128_tls13();
    assert_eq!(suite.limit, 1 << 24);
    let (ours, mut theirs) = tcp_pair();
    let mut cork = cio::Cork::default();
    let mut far = KernelTls::for_test(suite, 1000);
    let mut out = Outbox::new();
    out.push_bytes(b"fine");
    far.flush(&ours, &mut out, cio::TURN, &mut cork).unwrap();
    assert_eq!(
        far.records, 1002,
        "one call of 4 bytes: at most 2 records counted"
    );

    let mut near = KernelTls::for_test(suite, suite.limit - LIMIT_MARGIN - 1);
    out.push_bytes(b"too many");
    let e = near
        .flush(&ours, &mut out, cio::TURN, &mut cork)
        .unwrap_err();
    // getsockopt(SOL_TLS) on a socket without the tls protocol: EOPNOTSUPP.
    assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "{e}");
    let mut got = [0u8; 12];
    theirs.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"finetoo many");

    // ChaCha20 has no such limit: the count never nears it.
    let chacha = Suite::of(cs::TLS13_CHACHA20_POLY1305_SHA256).unwrap();
    assert_eq!(chacha.limit, u64::MAX);
}

/// The process remembers a kernel without TLS; a suite the kernel refused is not tried again.
#[test]
fn suites_and_versions_have_bits_of_their_own() {
    let bits: Vec<u8> = mapped_suites()
        .into_iter()
        .map(|s| Suite::of(s).unwrap().bit())
        .collect();
    let mut all = 0u8;
    for b in &bits {
        assert_eq!(b.count_ones(), 1);
        assert_eq!(all & b, 0, "{bits:?}");
        all |= b;
    }
}

/// Where the kernel has TLS (the `tls` module loaded: `scripts/ktls-vm` runs this in a guest
/// whose kernel has it): a connection rustls set up moves into the kernel with [`attach`],
/// and with a rustls client at the other end of a loopback socket, in every mapped suite under
/// TLS 1.2 and 1.3, data goes both ways, the kernel's record count (getsockopt) goes on from
/// rustls's, and `close_notify` travels both ways as a typed record. Elsewhere [`attach`] is
/// declined and there is nothing more to check.
#[test]
fn attached_connections_speak_with_a_rustls_client_where_the_kernel_has_tls() {
    if !std::path::Path::new("/proc/net/tls_stat").exists() {
        // Said, and listed at the end of scripts/test (as tests/support's `skip` does).
        let why = "this kernel offers no TLS (no /proc/net/tls_stat); scripts/ktls-vm runs it";
        eprintln!("skipped: {why}");
        if let Some(path) = std::env::var_os("TINCAN_SKIPPED") {
            let line = format!("model::tls::kernel::tests::attached_connections_...: {why}\n");
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .unwrap();
            f.write_all(line.as_bytes()).unwrap();
        }
        return;
    }
    for rustls_suite in mapped_suites() {
        let name = format!("{:?}", rustls_suite.suite());
        let suite = Suite::of(rustls_suite).unwrap();
        let (server, mut client) = connected(rustls_suite);
        let (ours, mut theirs) = tcp_pair();
        let mut k = match attach(&ours, server, suite) {
            Attached::Kernel(k) => k,
            Attached::Declined(_) => panic!("{name}: the kernel declined TLS"),
            Attached::Broken(e) => panic!("{name}: the kernel refused the keys: {e}"),
        };
        let tx_seq = k.records;
        let mut cork = cio::Cork::default();
        let mut out = Outbox::new();
        out.push_bytes(b"from the kernel");
        while !out.is_empty() {
            k.flush(&ours, &mut out, cio::TURN, &mut cork).unwrap();
        }
        let mut info = blank(suite.cipher);
        sys::get_crypto(ours.as_fd(), Direction::Tx, &mut info).unwrap();
        assert_eq!(info.rec_seq(), tx_seq + 1, "{name}: one record sent");

        // The client reads the kernel's record.
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        while got.len() < 15 {
            let n = theirs.read(&mut buf).unwrap();
            assert!(n > 0, "{name}: closed");
            let mut rd = &buf[..n];
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
            }
            client
                .process_new_packets()
                .unwrap_or_else(|e| panic!("{name}: the client refused the record: {e}"));
            got.extend(plaintext(&mut client));
        }
        assert_eq!(got, b"from the kernel", "{name}");

        // The kernel reads the client's record, then its close_notify as the end.
        client.writer().write_all(b"from rustls").unwrap();
        client.send_close_notify();
        while client.wants_write() {
            client.write_tls(&mut theirs).unwrap();
        }
        let mut input = ReadBuf::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match k.read_into(&ours, &mut input).unwrap() {
                ReadOutcome::Data { .. } => {}
                ReadOutcome::Eof => break,
                ReadOutcome::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "{name}: no EOF");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
        assert_eq!(input.data(), b"from rustls", "{name}");

        // Our close_notify: the client sees a clean end.
        k.notify_close();
        while k.wants_write() {
            k.flush(&ours, &mut out, cio::TURN, &mut cork).unwrap();
        }
        drop(ours);
        let mut wire = Vec::new();
        theirs.read_to_end(&mut wire).unwrap();
        let mut rd = &wire[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
        }
        let state = client.process_new_packets().unwrap();
        assert!(state.peer_has_closed(), "{name}: no close_notify came");
    }
}
