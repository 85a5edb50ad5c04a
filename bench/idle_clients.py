"""Hold idle keep-alive connections for bench/idle.sh.

    python3 bench/idle_clients.py HOST PORT COUNT PATH RELEASE_FILE

Opens COUNT connections, sends one `GET PATH` on each and reads its whole response (by
Content-Length), then prints `ready N` (N = connections that got a full response) and holds
them, idle, until RELEASE_FILE exists. One process can hold only as many sockets as its
descriptor limit allows, so idle.sh starts several.
"""

import resource
import socket
import sys
import time
import os


def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            return False
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            return False
        body += chunk
    return True


def main():
    host, port, count, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    release = sys.argv[5]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (path, host, port)).encode()
    held = []
    ok = 0
    for _ in range(count):
        try:
            s = socket.create_connection((host, port), timeout=10)
            s.sendall(request)
            if read_response(s):
                ok += 1
            held.append(s)
        except OSError as e:
            print("error %s" % e, file=sys.stderr)
            break
    print("ready %d" % ok, flush=True)
    while not os.path.exists(release):
        time.sleep(0.2)
    for s in held:
        s.close()


if __name__ == "__main__":
    main()
