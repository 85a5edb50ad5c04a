#!/usr/bin/env python3
"""bench/wire.py: a request's time on each side of the wire, from a packet capture.

    python3 bench/wire.py CAPTURE.pcap SERVER_PORT [MIN_ANSWER_BYTES]

For connections that each carry one request (wrk with `Connection: close`), read a capture of
the loopback taken with `tcpdump -i lo -w` and print, as `p50 p90 p99` in microseconds:

    server  REQUEST-IN -> ANSWER-OUT: the client's last packet before the answer, to the answer
    client  ANSWER-OUT -> CLIENT'S NEXT PACKET: how long the client took to act on it

The answer is the first packet from the server of at least MIN_ANSWER_BYTES of payload (1100
by default: a 1 KiB body in a TLS record) that follows a packet from the client which itself
follows the server's first flight; with TLS, where every byte is encrypted, sizes are all there
is to go by. A loopback packet is captured as it is sent, so the first figure is the server's
own time, kernel included, and the second the client's: where wrk is the bottleneck, its
latency is mostly the second (bench/README, "The handshake row's latency").
"""
import struct
import sys


def packets(path):
    """Yield (time_s, src_port, dst_port, payload_len) for each IPv4 TCP packet."""
    with open(path, "rb") as f:
        head = f.read(24)
        magic = struct.unpack("<I", head[:4])[0]
        if magic in (0xA1B2C3D4, 0xA1B23C4D):
            endian = "<"
        elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
            endian = ">"
        else:
            sys.exit(f"{path}: not a pcap file (tcpdump -w writes one)")
        nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
        link = struct.unpack(endian + "I", head[20:24])[0]
        # Ethernet (what Linux's lo reports), Linux cooked capture (-i any), raw IP.
        skip = {1: 14, 113: 16, 101: 0}.get(link)
        if skip is None:
            sys.exit(f"{path}: link type {link} is not one this reads (capture on -i lo)")
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                return
            sec, frac, caplen, _ = struct.unpack(endian + "IIII", rec)
            data = f.read(caplen)
            ip = data[skip:]
            if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
                continue
            ihl = (ip[0] & 15) * 4
            total = struct.unpack(">H", ip[2:4])[0]
            tcp = ip[ihl:]
            if len(tcp) < 20:
                continue
            sport, dport = struct.unpack(">HH", tcp[:4])
            payload = total - ihl - (tcp[12] >> 4) * 4
            yield sec + frac / (1e9 if nano else 1e6), sport, dport, payload


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__.strip().splitlines()[2].strip())
    path, port = sys.argv[1], int(sys.argv[2])
    least = int(sys.argv[3]) if len(sys.argv) == 4 else 1100
    conns = {}
    for t, sport, dport, n in packets(path):
        if n == 0:
            continue
        if dport == port:
            conns.setdefault(sport, []).append((t, "c", n))
        elif sport == port:
            conns.setdefault(dport, []).append((t, "s", n))
    server, client = [], []
    for seq in conns.values():
        # The client's hello, the server's first flight, then at least one client packet: only
        # after that can a large server packet be the answer rather than the flight.
        first_flight = next((i for i, p in enumerate(seq) if p[1] == "s"), None)
        if first_flight is None:
            continue
        for i in range(first_flight + 1, len(seq)):
            t, side, n = seq[i]
            if side != "s" or n < least:
                continue
            asked = [p for p in seq[first_flight:i] if p[1] == "c"]
            after = [p for p in seq[i + 1 :] if p[1] == "c"]
            if asked and after:
                server.append((t - asked[-1][0]) * 1e6)
                client.append((after[0][0] - t) * 1e6)
            break
    if not server:
        sys.exit(f"{path}: no answered request on port {port} (is MIN_ANSWER_BYTES right?)")
    for name, v in (("server", server), ("client", client)):
        print(name, len(v), " ".join(f"{pct(v, p):.0f}" for p in (0.5, 0.9, 0.99)))


if __name__ == "__main__":
    main()
