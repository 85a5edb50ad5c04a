"""h2spec's `generic` and `hpack` sections, ported case by case to raw frames.

h2spec (github.com/summerwind/h2spec) has three sections: `http2` (RFC 7540/9113), `hpack`
(RFC 7541) and `generic`. Its `http2` section runs through `httpwg-cli` (an h2spec port in
Rust); the other two are here, with h2spec's case names, byte strings and verdicts: a
connection error passes on a GOAWAY with the expected code or on the connection's close, as
in h2spec's `VerifyConnectionError`.

Usage: python3 h2spec_cases.py PORT [--tls]
Prints one line per case and `N passed, N failed`; exits 1 if any failed.
"""

import socket
import ssl
import struct
import sys
import time

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20
NO_ERROR, COMPRESSION_ERROR, CANCEL = 0x0, 0x9, 0x8
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, \
    MAX_HEADER_LIST_SIZE = range(1, 7)
WAIT = 2.0  # h2spec's default --timeout


class Fail(Exception):
    pass


class Closed(Exception):
    pass


class Conn:
    def __init__(self, port, tls):
        self.port, self.tls = port, tls
        s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            s = ctx.wrap_socket(s, server_hostname="localhost")
            if s.selected_alpn_protocol() != "h2":
                raise Fail("ALPN did not choose h2: %r" % s.selected_alpn_protocol())
        self.s = s
        self.buf = b""
        self.enc = hpack.Encoder()
        self.settings = {}

    def send(self, b):
        self.s.sendall(b)

    def frame(self, kind, flags, stream, payload):
        self.send(struct.pack(">I", len(payload))[1:] + bytes([kind, flags])
                  + struct.pack(">I", stream) + payload)

    def headers(self, stream, block, end_stream=True, end_headers=True, pad=0, prio=None):
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        payload = block
        if prio is not None:
            dep, excl, weight = prio
            flags |= PRIO
            payload = struct.pack(">IB", dep | (0x80000000 if excl else 0), weight) + payload
        if pad:
            flags |= PADDED
            payload = bytes([pad]) + payload + b"\0" * pad
        self.frame(HEADERS, flags, stream, payload)

    def continuation(self, stream, block, end_headers):
        self.frame(CONTINUATION, END_HEADERS if end_headers else 0, stream, block)

    def data(self, stream, payload, end_stream, pad=None):
        flags = END_STREAM if end_stream else 0
        if pad is not None:
            flags |= PADDED
            payload = bytes([len(pad)]) + payload + pad
        self.frame(DATA, flags, stream, payload)

    def priority(self, stream, dep, excl, weight):
        self.frame(PRIORITY, 0, stream, struct.pack(">IB", dep | (0x80000000 if excl else 0), weight))

    def rst(self, stream, code):
        self.frame(RST_STREAM, 0, stream, struct.pack(">I", code))

    def settings_frame(self, *items):
        self.frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in items))

    def ping(self, data):
        self.frame(PING, 0, 0, data)

    def goaway(self, last, code, debug):
        self.frame(GOAWAY, 0, 0, struct.pack(">II", last, code) + debug)

    def window_update(self, stream, inc):
        self.frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", inc))

    def common(self, method="GET"):
        scheme = "https" if self.tls else "http"
        return [(":method", method), (":scheme", scheme), (":path", "/"),
                (":authority", "127.0.0.1:%d" % self.port)]

    def encode(self, fields):
        return self.enc.encode(fields)

    def read_frame(self, deadline):
        """The next frame as (kind, flags, stream, payload); Closed at EOF, Fail at the deadline."""
        while True:
            if len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + n:
                    kind, flags = self.buf[3], self.buf[4]
                    stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
                    payload = self.buf[9:9 + n]
                    self.buf = self.buf[9 + n:]
                    return kind, flags, stream, payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail("timed out waiting for a frame")
            self.s.settimeout(left)
            try:
                b = self.s.recv(65536)
            except socket.timeout:
                raise Fail("timed out waiting for a frame")
            except (ConnectionResetError, ssl.SSLError, OSError):
                raise Closed()
            if not b:
                raise Closed()
            self.buf += b

    def wait(self, want, what):
        """Read frames until `want(frame)` is true; a GOAWAY or close on the way fails."""
        deadline = time.monotonic() + WAIT
        while True:
            try:
                f = self.read_frame(deadline)
            except Closed:
                raise Fail("connection closed; expected %s" % what)
            if want(f):
                return f
            if f[0] == GOAWAY:
                code = struct.unpack(">I", f[3][4:8])[0]
                raise Fail("GOAWAY (error %d); expected %s" % (code, what))

    def handshake(self):
        """Preface and SETTINGS both ways, as h2spec's Conn.Handshake."""
        self.send(PREFACE)
        self.settings_frame()
        got_settings = got_ack = False
        deadline = time.monotonic() + WAIT
        while not (got_settings and got_ack):
            kind, flags, _, payload = self.read_frame(deadline)
            if kind == SETTINGS and flags & ACK:
                got_ack = True
            elif kind == SETTINGS:
                for i in range(0, len(payload), 6):
                    k, v = struct.unpack(">HI", payload[i:i + 6])
                    self.settings[k] = v
                self.frame(SETTINGS, ACK, 0, b"")
                got_settings = True

    # h2spec's verifiers.

    def connection_error(self, code):
        deadline = time.monotonic() + WAIT
        while True:
            try:
                kind, _, _, payload = self.read_frame(deadline)
            except Closed:
                return
            if kind == GOAWAY:
                got = struct.unpack(">I", payload[4:8])[0]
                if got != code:
                    raise Fail("GOAWAY with error %d; expected %d" % (got, code))
                return

    def headers_frame(self, stream):
        self.wait(lambda f: f[0] == HEADERS and f[2] == stream, "HEADERS on stream %d" % stream)

    def ping_ack(self, data):
        self.wait(lambda f: f[0] == PING and f[1] & ACK and f[3] == data, "PING with ACK")

    def ping_or_close(self, data):
        try:
            self.ping_ack(data)
        except Fail as e:
            if "connection closed" not in str(e) and "GOAWAY" not in str(e):
                raise

    def settings_ack(self):
        self.wait(lambda f: f[0] == SETTINGS and f[1] & ACK, "SETTINGS with ACK")

    def data_frame(self):
        self.wait(lambda f: f[0] == DATA, "a DATA frame")

    def stream_close(self, stream):
        self.wait(lambda f: f[0] in (DATA, HEADERS) and f[2] == stream and f[1] & END_STREAM,
                  "END_STREAM on stream %d" % stream)


CASES = []


def case(section, desc):
    def register(fn):
        CASES.append((section, desc, fn))
        return fn
    return register


def with_rep(c, rep, before=False):
    """The common request's header block with `rep` appended (or put first)."""
    block = c.encode(c.common())
    return rep + block if before else block + rep


# generic/1: Starting HTTP/2

@case("generic/1", "Sends a client connection preface")
def _(c):
    c.send(PREFACE)
    c.settings_frame((INITIAL_WINDOW_SIZE, 65535))
    kind, flags, _, _ = c.read_frame(time.monotonic() + WAIT)
    if kind != SETTINGS or flags & ACK:
        raise Fail("the first frame was not SETTINGS without ACK (type %d)" % kind)


# generic/2: Streams and Multiplexing

@case("generic/2", "Sends a PRIORITY frame on idle stream")
def _(c):
    c.handshake()
    c.priority(1, 0, False, 255)
    c.ping(b"\0" * 8)
    c.ping_ack(b"\0" * 8)


@case("generic/2", "Sends a WINDOW_UPDATE frame on half-closed (remote) stream")
def _(c):
    c.handshake()
    c.settings_frame((INITIAL_WINDOW_SIZE, 0))
    c.headers(1, c.encode(c.common()))
    c.window_update(1, 1)
    c.data_frame()


@case("generic/2", "Sends a PRIORITY frame on half-closed (remote) stream")
def _(c):
    c.handshake()
    c.settings_frame((INITIAL_WINDOW_SIZE, 0))
    c.headers(1, c.encode(c.common()))
    c.priority(1, 0, False, 255)
    c.window_update(1, 1)
    c.data_frame()


@case("generic/2", "Sends a RST_STREAM frame on half-closed (remote) stream")
def _(c):
    c.handshake()
    c.headers(1, c.encode(c.common()))
    c.rst(1, CANCEL)
    c.ping(b"\0" * 8)
    c.ping_or_close(b"\0" * 8)


@case("generic/2", "Sends a PRIORITY frame on closed stream")
def _(c):
    c.handshake()
    c.headers(1, c.encode(c.common()))
    c.stream_close(1)
    c.priority(1, 0, False, 255)
    c.ping(b"\0" * 8)
    c.ping_ack(b"\0" * 8)


# generic/3.1: DATA

@case("generic/3.1", "Sends a DATA frame")
def _(c):
    c.handshake()
    c.headers(1, c.encode(c.common("POST")), end_stream=False)
    c.data(1, b"test", True)
    c.headers_frame(1)


@case("generic/3.1", "Sends multiple DATA frames")
def _(c):
    c.handshake()
    c.headers(1, c.encode(c.common("POST")), end_stream=False)
    c.data(1, b"test", False)
    c.data(1, b"test", True)
    c.headers_frame(1)


@case("generic/3.1", "Sends a DATA frame with padding")
def _(c):
    c.handshake()
    c.headers(1, c.encode(c.common("POST")), end_stream=False)
    c.data(1, b"test", True, pad=b"\0" * 5)
    c.headers_frame(1)


# generic/3.2 and 3.3: a GET on stream 1, after `before(c)`, answered with HEADERS.

def answered(before=lambda c: None, **headers_args):
    def run(c):
        c.handshake()
        before(c)
        c.headers(1, c.encode(c.common()), **headers_args)
        c.headers_frame(1)
    return run


for section, desc, before, headers_args in [
    ("generic/3.2", "Sends a HEADERS frame", None, {}),
    ("generic/3.2", "Sends a HEADERS frame with padding", None, {"pad": 8}),
    ("generic/3.2", "Sends a HEADERS frame with priority", None, {"prio": (0, False, 255)}),
    ("generic/3.3", "Sends a PRIORITY frame with priority 1",
     lambda c: c.priority(1, 0, False, 0), {}),
    ("generic/3.3", "Sends a PRIORITY frame with priority 256",
     lambda c: c.priority(1, 0, False, 255), {}),
    ("generic/3.3", "Sends a PRIORITY frame with stream dependency",
     lambda c: c.priority(3, 1, False, 0), {}),
    ("generic/3.3", "Sends a PRIORITY frame with exclusive",
     lambda c: c.priority(1, 0, True, 0), {}),
    ("generic/3.3",
     "Sends a PRIORITY frame for an idle stream, then send a HEADER frame for a lower stream ID",
     lambda c: c.priority(3, 0, False, 255), {}),
]:
    case(section, desc)(answered(before or (lambda c: None), **headers_args))


# generic/3.4: RST_STREAM

@case("generic/3.4", "Sends a RST_STREAM frame")
def _(c):
    c.handshake()
    c.headers(1, c.encode(c.common()), end_stream=False)
    c.rst(1, CANCEL)
    c.ping(b"\0" * 8)
    c.ping_or_close(b"\0" * 8)


# generic/3.5: SETTINGS

@case("generic/3.5", "Sends a SETTINGS frame")
def _(c):
    c.handshake()
    c.settings_frame((HEADER_TABLE_SIZE, 4096), (ENABLE_PUSH, 1), (MAX_CONCURRENT_STREAMS, 100),
                     (INITIAL_WINDOW_SIZE, 65535), (MAX_FRAME_SIZE, 16384),
                     (MAX_HEADER_LIST_SIZE, 100))
    c.settings_ack()


# generic/3.7: PING

@case("generic/3.7", "Sends a PING frame")
def _(c):
    c.handshake()
    c.ping(b"h2spec\0\0")
    c.ping_ack(b"h2spec\0\0")


# generic/3.8: GOAWAY

@case("generic/3.8", "Sends a GOAWAY frame")
def _(c):
    c.handshake()
    c.goaway(0, NO_ERROR, b"h2spec")
    c.ping(b"h2spec\0\0")
    c.ping_or_close(b"h2spec\0\0")


# generic/3.9: WINDOW_UPDATE

@case("generic/3.9", "Sends a WINDOW_UPDATE frame with stream ID 0")
def _(c):
    c.handshake()
    c.window_update(0, 1)
    c.ping(b"\0" * 8)
    c.ping_ack(b"\0" * 8)


@case("generic/3.9", "Sends a WINDOW_UPDATE frame with stream ID 1")
def _(c):
    c.handshake()
    c.headers(1, c.encode(c.common()))
    c.window_update(1, 1)
    c.headers_frame(1)


# generic/3.10: CONTINUATION

@case("generic/3.10", "Sends a CONTINUATION frame")
def _(c):
    c.handshake()
    block = c.encode(c.common())
    c.headers(1, block[:5], end_headers=False)
    c.continuation(1, block[5:], True)
    c.headers_frame(1)


@case("generic/3.10", "Sends multiple CONTINUATION frames")
def _(c):
    c.handshake()
    block = c.encode(c.common())
    c.headers(1, block[:5], end_headers=False)
    c.continuation(1, block[5:10], False)
    c.continuation(1, block[10:], True)
    c.headers_frame(1)


# generic/4: HTTP Message Exchanges

@case("generic/4", "Sends a GET request")
def _(c):
    c.handshake()
    c.headers(1, c.encode(c.common()))
    c.headers_frame(1)


@case("generic/4", "Sends a HEAD request")
def _(c):
    c.handshake()
    c.headers(1, c.encode(c.common("HEAD")))
    c.headers_frame(1)


@case("generic/4", "Sends a POST request")
def _(c):
    c.handshake()
    c.headers(1, c.encode(c.common("POST")), end_stream=False)
    c.data(1, b"test", True)
    c.headers_frame(1)


@case("generic/4", "Sends a POST request with trailers")
def _(c):
    c.handshake()
    c.headers(1, c.encode(c.common("POST") + [("trailer", "x-test")]), end_stream=False)
    c.data(1, b"test", False)
    c.headers(1, c.encode([("x-test", "ok")]))
    c.headers_frame(1)


# generic/5: HPACK (each representation appended to the common request)

GENERIC_HPACK = [
    ("Sends a indexed header field representation", b"\xba"),
    ("Sends a literal header field with incremental indexing - indexed name",
     b"\x40\x87\xb5\x05\xb1\x61\xcc\x5a\x93\x84\x9c\x48\xac\xa4"),
    ("Sends a literal header field with incremental indexing - indexed name (with Huffman coding)",
     b"\x40\x0a\x75\x73\x65\x72\x2d\x61\x67\x65\x6e\x74\x06\x68\x32\x73\x70\x65\x63"),
    ("Sends a literal header field with incremental indexing - new name",
     b"\x40\x06\x78\x2d\x74\x65\x73\x74\x06\x68\x32\x73\x70\x65\x63"),
    ("Sends a literal header field with incremental indexing - new name (with Huffman coding)",
     b"\x40\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4"),
    ("Sends a literal header field without indexing - indexed name",
     b"\x00\x0a\x75\x73\x65\x72\x2d\x61\x67\x65\x6e\x74\x06\x68\x32\x73\x70\x65\x63"),
    ("Sends a literal header field without indexing - indexed name (with Huffman coding)",
     b"\x00\x87\xb5\x05\xb1\x61\xcc\x5a\x93\x84\x9c\x48\xac\xa4"),
    ("Sends a literal header field without indexing - new name",
     b"\x00\x06\x78\x2d\x74\x65\x73\x74\x06\x68\x32\x73\x70\x65\x63"),
    ("Sends a literal header field without indexing - new name (huffman encoded)",
     b"\x00\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4"),
    ("Sends a literal header field never indexed - indexed name",
     b"\x10\x0a\x75\x73\x65\x72\x2d\x61\x67\x65\x6e\x74\x06\x68\x32\x73\x70\x65\x63"),
    ("Sends a literal header field never indexed - indexed name (huffman encoded)",
     b"\x10\x87\xb5\x05\xb1\x61\xcc\x5a\x93\x84\x9c\x48\xac\xa4"),
    ("Sends a literal header field never indexed - new name",
     b"\x10\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4"),
    ("Sends a literal header field never indexed - new name (huffman encoded)",
     b"\x10\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4"),
]


def accepted(rep, before=False):
    def run(c):
        c.handshake()
        c.headers(1, with_rep(c, rep, before))
        c.headers_frame(1)
    return run


for desc, rep in GENERIC_HPACK:
    case("generic/5", desc)(accepted(rep))


@case("generic/5", "Sends a dynamic table size update")
def _(c):
    c.handshake()
    c.enc.header_table_size = 128
    c.headers(1, c.encode(c.common()))
    c.headers_frame(1)


case("generic/5", "Sends multiple dynamic table size update")(
    accepted(b"\x3f\x61\x3f\xe1\x1f", before=True))


# hpack: each a decoding error, which HTTP/2 makes a connection error COMPRESSION_ERROR.

def decoding_error(rep, before=False):
    def run(c):
        c.handshake()
        c.headers(1, with_rep(c, rep, before))
        c.connection_error(COMPRESSION_ERROR)
    return run


HPACK_ERRORS = [
    ("hpack/2.3.3", "Sends a indexed header field representation with invalid index", b"\xc6"),
    ("hpack/2.3.3", "Sends a literal header field representation with invalid index",
     b"\x7f\x07\x00"),
    ("hpack/4.2", "Sends a dynamic table size update at the end of header block", b"\x21"),
    ("hpack/5.2",
     "Sends a Huffman-encoded string literal representation with padding longer than 7 bits",
     b"\x00\x85\xf2\xb2\x4a\x84\xff\x84\x49\x50\x9f\xff"),
    ("hpack/5.2", "Sends a Huffman-encoded string literal representation padded by zero",
     b"\x00\x85\xf2\xb2\x4a\x84\xff\x83\x49\x50\x90"),
    ("hpack/5.2",
     "Sends a Huffman-encoded string literal representation containing the EOS symbol",
     b"\x00\x85\xf2\xb2\x4a\x84\xff\x87\x49\x51\xff\xff\xff\xfa\x7f"),
    ("hpack/6.1", "Sends a indexed header field representation with index 0", b"\x80"),
]

for section, desc, rep in HPACK_ERRORS:
    case(section, desc)(decoding_error(rep))


def table_size_update(n):
    """A dynamic table size update (RFC 7541 §6.3) to `n`: a 5-bit prefix integer after 001."""
    if n < 31:
        return bytes([0x20 | n])
    out, n = [0x20 | 31], n - 31
    while n >= 128:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


@case("hpack/6.3",
      "Sends a dynamic table size update larger than the value of SETTINGS_HEADER_TABLE_SIZE")
def _(c):
    c.handshake()
    limit = c.settings.get(HEADER_TABLE_SIZE, 4096)
    c.headers(1, with_rep(c, table_size_update(limit + 1), before=True))
    c.connection_error(COMPRESSION_ERROR)


def main():
    port, tls = int(sys.argv[1]), "--tls" in sys.argv[2:]
    passed = failed = 0
    for section, desc, run in CASES:
        try:
            c = Conn(port, tls)
        except OSError as e:
            print("FAIL %s: %s: could not connect: %s" % (section, desc, e))
            failed += 1
            continue
        try:
            run(c)
            print("ok   %s: %s" % (section, desc))
            passed += 1
        except (Fail, Closed, OSError) as e:
            print("FAIL %s: %s: %s" % (section, desc, e or type(e).__name__))
            failed += 1
        finally:
            c.s.close()
    print("h2spec: %d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
