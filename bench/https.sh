#!/usr/bin/env bash
# bench/https.sh: HTTPS, tincan vs nginx (OpenSSL 3), the same certificate, one run.
#
#   bench/https.sh [--reps N] [--duration SECONDS] [--out DIR]   (TINCAN=BINARY: no build)
#
# Both serve a 1 KiB file over TLS with one ECDSA P-256 certificate made here (openssl), one
# worker each on CPU 0, wrk on CPU 1: nginx with `ssl_session_cache shared:SSL:1m`, TLS 1.2 and
# 1.3; `tincan serve --tls-cert --tls-key --model event --workers 1` (rustls, `ring`).
# Rows, each from --reps interleaved pairs (nginx, tincan, tincan, nginx, ...):
# - keep-alive: wrk -c50 on kept connections (requests/s, p99);
# - new TLS connections: wrk -c50 with `Connection: close`, so every request is a new TCP
#   connection and a TLS 1.3 handshake. wrk resumes each with the ticket its previous
#   connection got, as a browser would (a capture shows both servers resuming all but a few:
#   an ECDHE key exchange each, no certificate sent, no signature): handshakes/s, p99, and the
#   server's CPU per handshake (utime+stime of the server and its children from /proc, over
#   the requests wrk counted). wrk's side of a connection costs more than the server's, so on
#   CPU 1 alone it is the bottleneck and both servers idle part of CPU 0; hence a third row:
# - new TLS connections, wrk on both CPUs: wrk -t2 on CPUs 0-1, the server still on CPU 0, so
#   the CPU a server leaves unused goes to the client and the rate is bounded by the server.
# - new TLS connections at a fixed rate (open loop, OPEN_RATE a second, 1000 by default: under
#   either server's capacity): `tincan bench http --keepalive off --rate` on CPU 1 (rustls,
#   resuming as wrk does), each connection timed from when it was due to its answer's last
#   byte: connect, handshake, request and answer, with no coordinated omission. Its p99 is
#   what a client opening a connection waits, at a load neither server is behind on.
# wrk times a request from writing it to reading the answer, so with wrk the bottleneck its
# latency is mostly its own queue (bench/README, "The handshake row's latency is wrk's
# queue"). For the two rows of new connections, a second run of 2 s with `tcpdump` (on CPU 1)
# splits each request's time at the wire (bench/wire.py): the server's part, from the request
# packet to the answer packet, is reported as "answer p50/p99 µs".
# The median of the per-pair ratios (tincan / nginx) is reported: pairs share the machine's
# state, so the ratio holds up where absolute figures move. Every server is stopped by its pid.
# MODES="close open" runs those rows alone; OPEN_RATE=1500 sets the open loop's rate;
# TINCAN_ARGS="--busy-poll 50" adds flags to tincan's command line (to try one against nginx).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
parse_args "$@"
need nginx nginx
need wrk wrk
need openssl openssl
need taskset util-linux
need tcpdump tcpdump
tincan_binary
ulimit -n "$(ulimit -Hn)"
scratch https

mkdir -p "$WORK/www" "$OUT"
chmod 755 "$WORK" "$WORK/www"
head -c 1024 /dev/urandom | base64 -w0 | head -c 1024 >"$WORK/www/1k.txt"
chmod 644 "$WORK/www/1k.txt"
self_signed_cert

NG=$(free_port)
cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    client_body_temp_path $WORK/body;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:1m;
    server { listen 127.0.0.1:$NG ssl backlog=4096; root $WORK/www; location / { } }
}
EOF

start_nginx() {
    launch "$NG" - "$(command -v nginx)" -c "$WORK/nginx.conf" -e "$WORK/nginx.err"
    PORT=$NG
}
start_tincan() {
    TP=$(free_port)
    launch "$TP" "$WORK/tincan.err" "$TINCAN" serve "$WORK/www" --listen "127.0.0.1:$TP" \
        --model event --workers 1 --access-log off --max-connections 20000 \
        --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" ${TINCAN_ARGS:-}
    PORT=$TP
}
# cpu_ticks PID: utime+stime of a process and its children (nginx's worker is a child).
cpu_ticks() { proc_total "$1" stat '{ print $14 + $15 }'; }
HZ=$(getconf CLK_TCK)

# run SERVER MODE -> "rps p99_ms cpu_us_per_request answer_p50_us answer_p99_us";
# MODE keep | close | close-shared | open (the answer's time at the wire is measured for the
# two close modes)
run() {
    "start_$1"
    if [ "$2" = open ]; then
        run_open
        return
    fi
    local hdr=() client=(taskset -c 1 wrk -t1)
    [ "$2" != keep ] && hdr=(-H "Connection: close")
    [ "$2" = close-shared ] && client=(taskset -c 0,1 wrk -t2)
    local url="https://127.0.0.1:$PORT/1k.txt"
    "${client[@]}" -c50 -d1s "${hdr[@]}" "$url" >/dev/null 2>&1 || true
    local t0 outp t1
    t0=$(cpu_ticks "$SRV")
    outp=$("${client[@]}" -c50 -d"${DUR}s" --latency "${hdr[@]}" "$url" 2>&1)
    t1=$(cpu_ticks "$SRV")
    local wire="- -"
    if [ "$2" = close ] || [ "$2" = close-shared ]; then
        taskset -c 1 tcpdump -Z root -i lo -s 96 -B 32768 -w "$WORK/cap" "tcp port $PORT" \
            2>"$WORK/tcpdump.err" &
        local td=$!
        sleep 0.5
        "${client[@]}" -c50 -d2s "${hdr[@]}" "$url" >/dev/null 2>&1 || true
        kill -INT "$td"
        wait "$td" || true
        grep -h 'dropped by kernel' "$WORK/tcpdump.err" | grep -v '^0 ' >&2 || true
        wire=$(python3 bench/wire.py "$WORK/cap" "$PORT" | awk '$1 == "server" { print $3, $5 }')
    fi
    stop_srv
    local rps p99 reqs
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$outp")
    reqs=$(awk '/requests in/ {print $1}' <<<"$outp")
    p99=$(wrk_p99_ms <<<"$outp")
    awk -v r="$rps" -v p="${p99:-0}" -v d=$((t1 - t0)) -v n="${reqs:-1}" -v hz="$HZ" -v w="$wire" \
        'BEGIN { printf "%s %s %.1f %s\n", r, p, d * 1e6 / hz / n, w }'
}


OPEN_RATE=${OPEN_RATE:-1000}
# run_open: the open-loop row for the server just started (see the header), as `run` prints it.
run_open() {
    local url="https://127.0.0.1:$PORT/1k.txt" t0 t1 outp
    local load=(taskset -c 1 "$TINCAN" bench http "$url" --keepalive off --rate "$OPEN_RATE"
        -c 200 -t 1 --insecure --json)
    t0=$(cpu_ticks "$SRV")
    outp=$("${load[@]}" -d "$DUR" --warmup 1)
    t1=$(cpu_ticks "$SRV")
    stop_srv
    python3 -c '
import json, sys
d = json.loads(sys.argv[1])
n = d["replies"] or 1
# The CPU ticks cover the warm-up second too: count its replies at the same rate.
per = int(sys.argv[2]) * 1e6 / int(sys.argv[3]) / (n + d["replies_per_sec"])
bad = d["errors"]["total"] + d["unfinished"]
print("%.1f %.3f %.1f - -" % (d["replies_per_sec"], d["latency_us"]["p99"] / 1000, per))
if bad > 5:
    print("open loop: %d errors or unanswered connections" % bad, file=sys.stderr)
' "$outp" $((t1 - t0)) "$HZ"
}

echo "| HTTPS 1 KiB, 50 connections | nginx req/s | tincan req/s | ratio | nginx p99 ms | tincan p99 ms | nginx CPU µs/req | tincan CPU µs/req | nginx answer p50/p99 µs | tincan answer p50/p99 µs |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for MODE in ${MODES:-keep close close-shared open}; do
    : >"$WORK/n"; : >"$WORK/t"; : >"$WORK/r"
    for rep in $(seq 1 "$REPS"); do
        if [ $((rep % 2)) -eq 1 ]; then order="nginx tincan"; else order="tincan nginx"; fi
        for s in $order; do
            read -r rps p99 cpu a50 a99 < <(run "$s" "$MODE")
            echo "$rps $p99 $cpu $a50 $a99" >>"$WORK/${s:0:1}"
            log "$MODE rep $rep $s: $rps req/s, p99 $p99 ms, CPU $cpu µs/request, answer p50 $a50 p99 $a99 µs"
        done
        paste -d' ' "$WORK/n" "$WORK/t" | tail -1 | awk '{ printf "%.4f\n", $6 / $1 }' >>"$WORK/r"
    done
    col() { cut -d' ' -f"$2" "$WORK/$1" | median; }
    ratio=$(median <"$WORK/r")
    answers=("-" "-")
    if [ "$MODE" = close ] || [ "$MODE" = close-shared ]; then
        answers=("$(col n 4)/$(col n 5)" "$(col t 4)/$(col t 5)")
    fi
    case "$MODE" in
        keep) label="keep-alive" ;;
        close) label="new TLS connection each, wrk on CPU 1" ;;
        open) label="new TLS connection each, $OPEN_RATE a second (open loop, whole connection)" ;;
        *) label="new TLS connection each, wrk on CPUs 0-1 (server-bound)" ;;
    esac
    printf '| %s | %.0f | %.0f | %.2fx | %s | %s | %s | %s | %s | %s |\n' \
        "$label" "$(col n 1)" "$(col t 1)" "$ratio" "$(col n 2)" "$(col t 2)" "$(col n 3)" \
        "$(col t 3)" "${answers[0]}" "${answers[1]}"
done
