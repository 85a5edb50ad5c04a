#!/usr/bin/env bash
# bench/syscalls.sh: system calls per keep-alive request for a small cached file, tincan vs
# nginx, counted with `strace -c -f`.
#
#   bench/syscalls.sh [--requests N] [--connections C] [--out DIR]   (default 20000, 10)
#
# Each server runs twice under strace: once for N/4 requests and once for N (the same C
# keep-alive connections, `tincan bench http -n`). The difference of the two totals divided by
# the difference of the request counts is the steady-state cost of one request: start-up,
# accepts and shutdown cancel out. The per-syscall breakdown of that difference is printed too.
# (strace slows the server down a lot; only the counts matter here, not the speed.)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=20000
C=10
OUT=bench/results
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) N=$2; shift ;;
        --connections) C=$2; shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "syscalls.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done
log() { printf '%s\n' "$*" >&2; }
need=()
command -v strace >/dev/null || need+=(strace)
command -v nginx >/dev/null || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
cargo build --release --quiet
TINCAN=${CARGO_TARGET_DIR:-$ROOT/target}/release/tincan

WORK=$(mktemp -d /tmp/tincan-syscalls.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK/www"
chmod 755 "$WORK"  # nginx workers run as nobody
head -c 1024 /dev/urandom >"$WORK/www/1k.bin"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

drive() { # URL REQUESTS
    "$TINCAN" bench http "$1" -c "$C" -n "$2" --threads 1 --timeout 20 --json 2>/dev/null |
        python3 -c 'import sys,json; d=json.load(sys.stdin); print(d["replies"], d["errors"]["total"])'
}

# The child strace started (the server itself), found by its parent's pid.
traced_child() {
    local spid=$1 i c
    for i in $(seq 1 100); do
        c=$(cat /proc/"$spid"/task/*/children 2>/dev/null | awk '{print $1}')
        [ -n "$c" ] && { echo "$c"; return; }
        sleep 0.05
    done
}

# run_tincan REQUESTS OUTFILE
run_tincan() {
    local out=$WORK/tincan.out
    : >"$out"
    strace -c -f -o "$2" "$TINCAN" serve "$WORK/www" --listen 127.0.0.1:0 --workers 1 --access-log off >"$out" 2>"$WORK/tincan.err" &
    local spid=$!
    PIDS+=($spid)
    local i
    for i in $(seq 1 200); do grep -q '^listening on' "$out" && break; sleep 0.05; done
    local addr
    addr=$(sed -n -E 's,^listening on ([a-z]+://)?,,p' "$out" | head -1)
    [ -n "$addr" ] || { log "tincan serve did not start: $(head -3 "$WORK/tincan.err")"; kill $spid; return 1; }
    read -r got errs <<<"$(drive "http://$addr/1k.bin" "$1")"
    log "  tincan: $got replies, $errs errors"
    kill "$(traced_child $spid)" 2>/dev/null || true
    wait $spid 2>/dev/null || true
}

# run_nginx REQUESTS OUTFILE
run_nginx() {
    local port
    port=$(free_port)
    local p=$WORK/nginx
    rm -rf "$p"
    mkdir -p "$p/logs" "$p/tmp"
    cat >"$p/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $p/nginx.pid;
error_log $p/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path $p/tmp/body;
    proxy_temp_path $p/tmp/proxy;
    fastcgi_temp_path $p/tmp/fastcgi;
    uwsgi_temp_path $p/tmp/uwsgi;
    scgi_temp_path $p/tmp/scgi;
    server { listen 127.0.0.1:$port; root $WORK/www; }
}
EOF
    strace -c -f -o "$2" "$NGINX" -p "$p" -c "$p/nginx.conf" &
    local spid=$!
    PIDS+=($spid)
    local i
    for i in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
    read -r got errs <<<"$(drive "http://127.0.0.1:$port/1k.bin" "$1")"
    log "  nginx: $got replies, $errs errors"
    kill -QUIT "$(traced_child $spid)" 2>/dev/null || true
    wait $spid 2>/dev/null || true
}

SMALL=$((N / 4))
for server in tincan nginx; do
    log "$server under strace: $SMALL then $N requests over $C keep-alive connections"
    "run_$server" "$SMALL" "$WORK/$server.small" || continue
    "run_$server" "$N" "$WORK/$server.big" || continue
done

mkdir -p "$OUT"
python3 - "$WORK" "$SMALL" "$N" "$OUT/syscalls.json" <<'EOF'
import json, os, sys
work, small, big, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def parse(path):
    calls = {}
    for line in open(path):
        f = line.split()
        if len(f) < 5 or not f[0][0].isdigit():
            continue
        name = f[-1]
        # % time, seconds, usecs/call, calls, [errors], syscall
        calls[name] = int(f[3])
    return calls

result = {}
print("| server | syscalls per keep-alive request | the calls (per request) |")
print("|---|---:|---|")
for server in ("tincan", "nginx"):
    a, b = os.path.join(work, server + ".small"), os.path.join(work, server + ".big")
    if not (os.path.exists(a) and os.path.exists(b)):
        continue
    ca, cb = parse(a), parse(b)
    per = {k: (cb.get(k, 0) - ca.get(k, 0)) / (big - small) for k in set(ca) | set(cb) if k != "total"}
    per = {k: round(v, 3) for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.01}
    total = (cb.get("total", 0) - ca.get("total", 0)) / (big - small)
    result[server] = {"per_request": round(total, 3), "by_call": per}
    print("| %s | %.2f | %s |" % (server, total, ", ".join("%s %.2f" % kv for kv in per.items())))
json.dump(result, open(out, "w"), indent=1)
print("\nfigures: " + out)
EOF
