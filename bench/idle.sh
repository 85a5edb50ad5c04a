#!/usr/bin/env bash
# bench/idle.sh: resident memory per idle keep-alive connection, tincan vs nginx.
#
#   bench/idle.sh [--connections N] [--out DIR]        (default 15000)
#
# For each server (one event worker / one nginx worker, server on CPU 0): measure its RSS after
# one warm-up request, open N connections that each make one request and then sit idle (held by
# several bench/idle_clients.py processes, 5,000 sockets each, so no process nears the
# descriptor limit), measure the RSS again, and report (after - before) / N. While the idle
# connections are held, 50 active keep-alive clients run for a few seconds and their p99 is
# compared with the same load without the idle crowd ("active clients keep their latency").
# RSS is user-space memory (/proc/PID/status VmRSS, summed over the server's processes); the
# kernel's socket buffers are the same for both servers and are not in it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=15000
OUT=bench/results
while [ $# -gt 0 ]; do
    case "$1" in
        --connections) N=$2; shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "idle.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done
log() { printf '%s\n' "$*" >&2; }
command -v nginx >/dev/null || { SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo; $SUDO apt-get update -qq; $SUDO apt-get install -y -qq nginx-light >/dev/null; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
cargo build --release --quiet
TINCAN=${CARGO_TARGET_DIR:-$ROOT/target}/release/tincan
ulimit -n "$(ulimit -Hn)"
log "descriptor limit: $(ulimit -n) per process"
PER_PROC=5000

WORK=$(mktemp -d /tmp/tincan-idle.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK/www"
chmod 755 "$WORK"  # nginx workers run as nobody
head -c 1024 /dev/urandom >"$WORK/www/1k.bin"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# RSS in KiB of a pid and its children (nginx: master + worker).
rss_kib() {
    local pid=$1 total=0 p
    for p in $pid $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
        total=$((total + $(awk '/^VmRSS:/ {print $2}' /proc/"$p"/status 2>/dev/null || echo 0)))
    done
    echo $total
}

# The active clients connect from 127.0.0.2, the idle ones from 127.0.0.1. Both servers close a
# keep-alive connection after 1,000 requests (nginx's `keepalive_requests`, tincan's
# `--max-requests-per-connection`), so the active clients reconnect about 100 times a second;
# from the idle crowd's address each `connect` searched for a free port past its 15,000
# (`__inet_hash_connect` and `__inet_check_established`: 5% of the generator's core in
# `perf record -a`) while the other 49 connections waited, and the p99 "beside the idle ones"
# measured that search (tincan: 2.3-3.1 ms, against 0.9-1.4 ms alone).
active_p99() { # URL -> p99 in µs of 50 keep-alive clients for 3 s
    taskset -c 1 "$TINCAN" bench http "$1" -c 50 -d 3 --threads 1 --source 127.0.0.2 --json 2>/dev/null |
        python3 -c 'import sys,json; d=json.load(sys.stdin); print(d["latency_us"]["p99"], d["replies_per_sec"], d["errors"]["total"])'
}

# measure NAME PID HOST PORT
measure() {
    local name=$1 pid=$2 host=$3 port=$4
    local url="http://$host:$port/1k.bin"
    curl_once() { python3 - "$host" "$port" <<'EOF'
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(b"GET /1k.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
while s.recv(65536): pass
EOF
    }
    curl_once
    read -r base_p99 base_rps base_err <<<"$(active_p99 "$url")"
    sleep 1
    local before after
    before=$(rss_kib "$pid")
    local holders=() left=$N k=0 release=$WORK/release.$name
    rm -f "$release"
    while [ "$left" -gt 0 ]; do
        local n=$((left < PER_PROC ? left : PER_PROC))
        taskset -c 1 python3 "$ROOT/bench/idle_clients.py" "$host" "$port" "$n" /1k.bin "$release" \
            >"$WORK/hold.$name.$k.out" 2>"$WORK/hold.$name.$k.err" &
        holders+=($!)
        PIDS+=($!)
        left=$((left - n))
        k=$((k + 1))
    done
    local ready=0 i j
    for i in $(seq 0 $((k - 1))); do
        for j in $(seq 1 1200); do
            grep -q '^ready' "$WORK/hold.$name.$i.out" 2>/dev/null && break
            sleep 0.1
        done
        ready=$((ready + $(awk '/^ready/ {print $2}' "$WORK/hold.$name.$i.out" 2>/dev/null || echo 0)))
    done
    sleep 1
    after=$(rss_kib "$pid")
    read -r idle_p99 idle_rps idle_err <<<"$(active_p99 "$url")"
    local still
    still=$(ss -Htn state established "( sport = :$port )" 2>/dev/null | wc -l)
    touch "$release"
    for p in "${holders[@]}"; do wait "$p" 2>/dev/null || true; done
    local per
    per=$(python3 -c "print(round(($after - $before) / max($ready, 1) * 1024))")
    log "$name: RSS $before KiB -> $after KiB with $ready idle connections ($still still open at the end): $per bytes each; active p99 ${base_p99} us alone, ${idle_p99} us beside the idle ones"
    printf '{"server":"%s","idle":%d,"open_at_end":%d,"rss_before_kib":%d,"rss_after_kib":%d,"bytes_per_connection":%d,"active_p99_us_alone":%s,"active_p99_us_with_idle":%s,"active_rps_alone":%s,"active_rps_with_idle":%s,"active_errors":%d}\n' \
        "$name" "$ready" "$still" "$before" "$after" "$per" "$base_p99" "$idle_p99" "$base_rps" "$idle_rps" "$((base_err + idle_err))" >>"$WORK/idle.jsonl"
}

: >"$WORK/idle.jsonl"

# tincan: one event worker.
: >"$WORK/t.out"
taskset -c 0 "$TINCAN" serve "$WORK/www" --listen 127.0.0.1:0 --workers 1 --access-log off --keepalive-timeout 300 \
    --max-connections $((N + 1000)) >"$WORK/t.out" 2>"$WORK/t.err" &
TPID=$!
PIDS+=($TPID)
for i in $(seq 1 100); do grep -q '^listening on' "$WORK/t.out" && break; sleep 0.05; done
TADDR=$(sed -n -E 's,^listening on ([a-z]+://)?,,p' "$WORK/t.out" | head -1)
if [ -n "$TADDR" ]; then
    measure tincan $TPID "${TADDR%:*}" "${TADDR##*:}"
else
    log "tincan serve did not start: $(head -3 "$WORK/t.err")"
fi
kill $TPID 2>/dev/null || true
wait $TPID 2>/dev/null || true

# nginx: one worker.
NPORT=$(free_port)
mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections $((N + 1000)); }
http {
    access_log off;
    sendfile on;
    keepalive_timeout 300s;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    server { listen 127.0.0.1:$NPORT; root $WORK/www; }
}
EOF
taskset -c 0 "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
NPID=$!
PIDS+=($NPID)
for i in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$NPORT) 2>/dev/null && break; sleep 0.05; done
measure nginx $NPID 127.0.0.1 $NPORT
kill $NPID 2>/dev/null || true
wait $NPID 2>/dev/null || true

mkdir -p "$OUT"
python3 - "$WORK/idle.jsonl" "$OUT/idle.json" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
json.dump(rows, open(sys.argv[2], "w"), indent=1)
print("| server | idle connections | RSS before | RSS after | bytes per connection | active p99 alone | active p99 with idle |")
print("|---|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print("| {server} | {idle} | {rss_before_kib} KiB | {rss_after_kib} KiB | {bytes_per_connection} | {active_p99_us_alone} µs | {active_p99_us_with_idle} µs |".format(**r))
print("\nfigures: " + sys.argv[2])
EOF
