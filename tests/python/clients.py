#!/usr/bin/env python3
"""Talk to a tincan HTTP server with two independent clients and fail loudly on anything odd.

usage: clients.py HOST PORT [--keepalive yes|no]

- http.client (the standard library): GET, HEAD, POST with a body, a chunked POST, on one
  connection when keep-alive is on.
- h11 (a strict, validating HTTP/1.1 state machine): the same requests; h11 raises on any
  framing or syntax error in the responses, and checks connection reuse.

Exit 0: all good. Exit 3: h11 is not installed (the caller prints a skip reason).
"""
import http.client
import sys


def check(cond, what):
    if not cond:
        print("FAIL:", what)
        sys.exit(1)


def with_http_client(host, port, keepalive):
    c = http.client.HTTPConnection(host, port, timeout=10)
    c.request("GET", "/hello?x=1", headers={"Accept": "text/html"})
    r = c.getresponse()
    body = r.read()
    check(r.status == 200, f"GET status {r.status}")
    check(int(r.getheader("Content-Length")) == len(body), "GET Content-Length matches body")
    check(r.getheader("Date") is not None, "Date present")
    check(b"GET /hello?x=1 HTTP/1.1" in body, "request line quoted")

    c.request("HEAD", "/hello?x=1", headers={"Accept": "text/html"})
    r = c.getresponse()
    head_body = r.read()
    check(r.status == 200 and head_body == b"", "HEAD has no body")
    check(int(r.getheader("Content-Length")) > 0, "HEAD carries GET's length")

    c.request("POST", "/form", body=b"a=1&b=2", headers={"Content-Type": "application/x-www-form-urlencoded"})
    r = c.getresponse()
    r.read()
    check(r.status == 200, f"POST status {r.status}")

    def chunks():
        yield b"hello "
        yield b"world"

    c.request("POST", "/chunked", body=chunks(), encode_chunked=True)
    r = c.getresponse()
    r.read()
    check(r.status == 200, f"chunked POST status {r.status}")
    c.request("GET", "/json", headers={"Accept": "application/json"})
    r = c.getresponse()
    body = r.read()
    check(r.getheader("Content-Type") == "application/json", "JSON when asked")
    import json
    check(json.loads(body)["method"] == "GET", "JSON names the method")
    c.close()


def with_h11(host, port, keepalive):
    try:
        import h11
    except ImportError:
        print("h11 is not installed (pip install h11)")
        sys.exit(3)
    import socket

    sock = socket.create_connection((host, port), timeout=10)
    conn = h11.Connection(our_role=h11.CLIENT)

    def send(*events):
        for e in events:
            data = conn.send(e)
            if data:
                sock.sendall(data)

    def receive():
        resp, body = None, b""
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
                continue
            if isinstance(ev, h11.Response):
                resp = ev
            elif isinstance(ev, h11.InformationalResponse):
                continue
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                return resp, body
            elif isinstance(ev, h11.ConnectionClosed):
                check(False, "connection closed mid-response")

    host_hdr = f"{host}:{port}"
    requests = [
        ("GET", "/a", [], None),
        ("HEAD", "/b", [], None),
        ("POST", "/c", [("Content-Length", "5")], b"12345"),
        ("PUT", "/d", [("Transfer-Encoding", "chunked")], b"chunky"),
        ("OPTIONS", "*", [], None),
        # No body is read for this answer, so it comes at once, without a 100, and the
        # connection closes after it (the body may or may not follow): the last request.
        ("GET", "/e", [("Expect", "100-continue"), ("Content-Length", "3")], b"abc"),
    ]
    for i, (method, target, extra, body) in enumerate(requests):
        last = i == len(requests) - 1
        headers = [("Host", host_hdr)] + extra
        send(h11.Request(method=method, target=target, headers=headers))
        if body is not None:
            send(h11.Data(data=body))
        send(h11.EndOfMessage())
        resp, got = receive()
        check(resp.status_code == 200, f"h11 {method} {target}: {resp.status_code}")
        names = {k.lower() for k, _ in resp.headers}
        check(b"date" in names and b"server" in names, "Date and Server present")
        if method == "HEAD":
            check(got == b"", "HEAD body empty")
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            check(not keepalive or last, "server closed a keep-alive connection")
            return
        check(not last, "server kept the connection after an early answer to Expect")
        check(keepalive, "server kept a connection it should close")
        conn.start_next_cycle()
    sock.close()


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    keepalive = "--keepalive" not in sys.argv or sys.argv[sys.argv.index("--keepalive") + 1] == "yes"
    with_http_client(host, port, keepalive)
    with_h11(host, port, keepalive)
    print("ok")


if __name__ == "__main__":
    main()
