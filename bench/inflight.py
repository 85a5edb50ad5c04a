#!/usr/bin/env python3
"""bench/inflight.py: N proxied requests in flight at once to a slow upstream, all answered?

    bench/inflight.py TINCAN [--requests N] [--delay S] [--models event,prefork] [--workers W]

The upstream (asyncio, its own process) holds every request for --delay seconds before it
answers 200, and counts how many it holds at once. In front of it, `TINCAN serve --proxy
/=http://UPSTREAM --model M --workers W --max-connections N+100` for each model; then N
clients (asyncio, another process) connect at once and each sends one GET. Reported per
model: the answers by status, the clients that failed (connect or read), the most requests
the upstream held at once (N when all were in flight together), and the time taken.

Descriptors: the proxy holds two per request in flight (the client's and the upstream's), in
one process under event, shared among the workers' processes under prefork; the soft limit is
raised to the hard one (`ulimit -Hn`), and a model whose process cannot hold 2N is run with
the most it can and says so. Bounded: every wait has a timeout; every process is ended by pid.
"""
import argparse
import asyncio
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def clients(port, n, timeout):
    counts = {}
    failed = 0
    errors = {}

    async def one():
        nonlocal failed
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
            w.write(b"GET /slow HTTP/1.1\r\nHost: inflight\r\nConnection: close\r\n\r\n")
            await w.drain()
            data = await asyncio.wait_for(r.read(), timeout)
            w.close()
            status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "none"
            counts[status] = counts.get(status, 0) + 1
        except Exception as e:  # noqa: BLE001 - every failure is counted by its kind
            failed += 1
            k = type(e).__name__
            errors[k] = errors.get(k, 0) + 1

    await asyncio.gather(*(one() for _ in range(n)))
    return counts, failed, errors


def run_clients(port, n, timeout, out_q):
    raise_nofile()
    out_q.put(asyncio.run(clients(port, n, timeout)))


class Upstream:
    """The slow upstream in a process of its own, its peak read through a pipe."""

    def __init__(self, delay):
        # One pipe asks (a byte), the other answers (the peak).
        self.ask_r, self.ask_w = os.pipe()
        self.ans_r, self.ans_w = os.pipe()
        self.proc = multiprocessing.Process(target=self._main, args=(delay,), daemon=True)
        q = multiprocessing.Queue()
        self.q = q
        self.proc.start()
        self.port = q.get(timeout=10)

    def _main(self, delay):
        raise_nofile()
        state = {"held": 0, "peak": 0}

        async def handle(reader, writer):
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    state["held"] += 1
                    state["peak"] = max(state["peak"], state["held"])
                    await asyncio.sleep(delay)
                    state["held"] -= 1
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        async def main():
            srv = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
            self.q.put(srv.sockets[0].getsockname()[1])
            loop = asyncio.get_running_loop()
            # A byte on the pipe asks for the peak (and resets it for the next model).
            ask = asyncio.Event()
            loop.add_reader(self.ask_r, lambda: (os.read(self.ask_r, 1), ask.set()))
            while True:
                await ask.wait()
                ask.clear()
                os.write(self.ans_w, f"{state['peak']}".encode().rjust(16))
                state["peak"] = state["held"]

        asyncio.run(main())

    def peak(self):
        os.write(self.ask_w, b"?")
        data = os.read(self.ans_r, 16)
        return int(data.strip() or 0)

    def stop(self):
        self.proc.kill()
        self.proc.join(5)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tincan")
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--delay", type=float, default=3.0)
    ap.add_argument("--models", default="event,prefork")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=90.0)
    a = ap.parse_args()
    hard = raise_nofile()
    root = tempfile.TemporaryDirectory(prefix="tincan-inflight.")
    up = Upstream(a.delay)
    print(f"| model | workers | in flight asked | 200 | other answers | failed clients | "
          f"upstream held at once | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    try:
        for model in a.models.split(","):
            n = a.requests
            procs = 1 if model == "event" else a.workers
            # Two descriptors per request, spread over `procs` processes, and some to spare.
            room = (hard - 64) * procs // 2
            if n > room:
                print(f"{model}: {hard} descriptors per process hold {room} requests in "
                      f"flight, not {n}: running {room}", file=sys.stderr)
                n = room
            port = free_port()
            srv = subprocess.Popen(
                [a.tincan, "serve", root.name, "--listen", f"127.0.0.1:{port}",
                 "--model", model, "--workers", str(a.workers), "--access-log", "off",
                 "--max-connections", str(n + 100), "--backlog", "4096",
                 "--proxy", f"/=http://127.0.0.1:{up.port}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                preexec_fn=raise_nofile)
            try:
                for _ in range(200):
                    try:
                        socket.create_connection(("127.0.0.1", port), 0.1).close()
                        break
                    except OSError:
                        time.sleep(0.05)
                up.peak()  # reset
                q = multiprocessing.Queue()
                t0 = time.monotonic()
                c = multiprocessing.Process(target=run_clients, args=(port, n, a.timeout, q))
                c.start()
                counts, failed, errors = q.get(timeout=a.timeout + 30)
                took = time.monotonic() - t0
                c.join(5)
                peak = up.peak()
            finally:
                srv.terminate()
                try:
                    _, err = srv.communicate(timeout=15)
                except subprocess.TimeoutExpired:
                    srv.kill()
                    _, err = srv.communicate()
            ok = counts.pop("200", 0)
            other = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "0"
            fails = f"{failed}" + (f" ({errors})" if errors else "")
            print(f"| {model} | {a.workers} | {n} | {ok} | {other} | {fails} | {peak} | "
                  f"{took:.1f} |", flush=True)
            # The server's warnings and errors (not its start-up notes).
            for line in err.decode(errors="replace").splitlines():
                if (" WARN " in line or " ERROR " in line) and "running as root" not in line:
                    print(f"{model}: {line}", file=sys.stderr)
    finally:
        up.stop()


if __name__ == "__main__":
    main()
