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
#   connection and a full handshake (wrk does not resume sessions): handshakes/s, p99, and the
#   server's CPU per handshake (utime+stime of the server and its children from /proc, over
#   the requests wrk counted). wrk's side of a handshake (key exchange, verifying the
#   server's signature) costs more than the server's, so on CPU 1 alone it is the bottleneck
#   and both servers idle part of CPU 0; hence a third row:
# - new TLS connections, wrk on both CPUs: wrk -t2 on CPUs 0-1, the server still on CPU 0, so
#   the CPU a server leaves unused goes to the client and the rate is bounded by the server.
# The median of the per-pair ratios (tincan / nginx) is reported: pairs share the machine's
# state, so the ratio holds up where absolute figures move. Every server is stopped by its pid.
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

# run SERVER MODE -> "rps p99_ms cpu_us_per_request"; MODE keep | close | close-shared
run() {
    "start_$1"
    local hdr=() client=(taskset -c 1 wrk -t1)
    [ "$2" != keep ] && hdr=(-H "Connection: close")
    [ "$2" = close-shared ] && client=(taskset -c 0,1 wrk -t2)
    "${client[@]}" -c50 -d1s "${hdr[@]}" "https://127.0.0.1:$PORT/1k.txt" >/dev/null 2>&1 || true
    local t0 outp t1
    t0=$(cpu_ticks "$SRV")
    outp=$("${client[@]}" -c50 -d"${DUR}s" --latency "${hdr[@]}" "https://127.0.0.1:$PORT/1k.txt" 2>&1)
    t1=$(cpu_ticks "$SRV")
    stop_srv
    local rps p99 reqs
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$outp")
    reqs=$(awk '/requests in/ {print $1}' <<<"$outp")
    p99=$(wrk_p99_ms <<<"$outp")
    awk -v r="$rps" -v p="${p99:-0}" -v d=$((t1 - t0)) -v n="${reqs:-1}" -v hz="$HZ" \
        'BEGIN { printf "%s %s %.1f\n", r, p, d * 1e6 / hz / n }'
}


echo "| HTTPS 1 KiB, 50 connections | nginx req/s | tincan req/s | ratio | nginx p99 ms | tincan p99 ms | nginx CPU µs/req | tincan CPU µs/req |"
echo "|---|---|---|---|---|---|---|---|"
for MODE in keep close close-shared; do
    : >"$WORK/n"; : >"$WORK/t"; : >"$WORK/r"
    for rep in $(seq 1 "$REPS"); do
        if [ $((rep % 2)) -eq 1 ]; then order="nginx tincan"; else order="tincan nginx"; fi
        for s in $order; do
            read -r rps p99 cpu < <(run "$s" "$MODE")
            echo "$rps $p99 $cpu" >>"$WORK/${s:0:1}"
            log "$MODE rep $rep $s: $rps req/s, p99 $p99 ms, CPU $cpu µs/request"
        done
        paste -d' ' "$WORK/n" "$WORK/t" | tail -1 | awk '{ printf "%.4f\n", $4 / $1 }' >>"$WORK/r"
    done
    nr=$(cut -d' ' -f1 "$WORK/n" | median); tr=$(cut -d' ' -f1 "$WORK/t" | median)
    np=$(cut -d' ' -f2 "$WORK/n" | median); tp=$(cut -d' ' -f2 "$WORK/t" | median)
    nc=$(cut -d' ' -f3 "$WORK/n" | median); tc=$(cut -d' ' -f3 "$WORK/t" | median)
    ratio=$(median <"$WORK/r")
    case "$MODE" in
        keep) label="keep-alive" ;;
        close) label="new TLS connection each (full handshake), wrk on CPU 1" ;;
        *) label="new TLS connection each, wrk on CPUs 0-1 (server-bound)" ;;
    esac
    printf '| %s | %.0f | %.0f | %.2fx | %s | %s | %s | %s |\n' \
        "$label" "$nr" "$tr" "$ratio" "$np" "$tp" "$nc" "$tc"
done
