#!/usr/bin/env bash
# bench/h2.sh: HTTP/2, tincan vs nginx, one run, on loopback, measured with h2load.
#
#   bench/h2.sh [--reps N] [--duration SECONDS] [--out DIR]
#
# Both servers serve the same files over TLS with the same self-signed certificate (ALPN h2):
# nginx `listen ... ssl http2` (1 worker, sendfile on, access_log off) and `tincan serve
# --workers 1 --access-log off --tls-cert/--tls-key` (event model). h2load drives c=50
# connections x m=10 concurrent streams each, for 1 KiB and 100 KiB files; then tincan's h2c
# (prior knowledge on its plain port) beside them, for which nginx has no listener of the same
# kind (nginx's `http2 on` without ssl speaks h2c only, not HTTP/1.1, so it is left out).
# Both may carry a million requests on a connection (nginx `keepalive_requests`, tincan
# `--max-requests-per-connection`): h2load does not reconnect after a GOAWAY, so a default
# of 1000 would cap the figure at 50 x 1000 requests per run rather than measure the server.
# The servers run on CPU 0 and h2load on CPU 1 (taskset). Each row: --reps interleaved pairs
# (nginx, tincan, tincan, nginx, ...); the median requests/s of each and the median of the
# per-pair ratios (tincan / nginx). Every server is stopped by its pid. About 1 minute.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
parse_args "$@"
need nginx nginx
need h2load nghttp2-client
need openssl openssl
need taskset util-linux
tincan_binary
ulimit -n "$(ulimit -Hn)"
scratch h2

mkdir -p "$WORK/www" "$OUT"
chmod 755 "$WORK" "$WORK/www"
head -c 1024 /dev/urandom >"$WORK/www/1k.bin"
head -c 102400 /dev/urandom >"$WORK/www/100k.bin"
chmod 644 "$WORK/www/"*
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
    sendfile on;
    keepalive_requests 1000000;
    http2_max_concurrent_streams 128;
    client_body_temp_path $WORK/body;
    server {
        listen 127.0.0.1:$NG ssl http2 backlog=4096;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        root $WORK/www;
    }
}
EOF

start_nginx() {
    launch "$NG" - "$(command -v nginx)" -c "$WORK/nginx.conf" -e "$WORK/nginx.err"
    URL=https://127.0.0.1:$NG
}
start_tincan() { # start_tincan tls|h2c
    local tp tls=()
    tp=$(free_port)
    [ "$1" = tls ] && tls=(--tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem")
    launch "$tp" "$WORK/tincan.err" "$TINCAN" serve "$WORK/www" --listen "127.0.0.1:$tp" \
        --model event --workers 1 --access-log off --max-connections 20000 "${tls[@]}" \
        --max-requests-per-connection 1000000
    if [ "$1" = tls ]; then URL=https://127.0.0.1:$tp; else URL=http://127.0.0.1:$tp; fi
}

# run SERVER FILE -> "req/s failed"   (SERVER: nginx | tincan | tincan-h2c)
run() {
    case "$1" in
        nginx) start_nginx ;;
        tincan) start_tincan tls ;;
        tincan-h2c) start_tincan h2c ;;
    esac
    local outp rps failed
    # h2load: -D seconds of load after a warm-up second; c=50 connections, m=10 streams.
    outp=$(taskset -c 1 h2load -c 50 -m 10 -t 1 --warm-up-time=1 -D "$DUR" "$URL/$2" 2>&1 || true)
    stop_srv
    rps=$(awk '/^finished in/ { for (i = 1; i <= NF; i++) if ($i ~ /req\/s/) { v = $(i - 1); gsub(/,/, "", v); print v } }' <<<"$outp")
    failed=$(awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^failed/) print $i }' <<<"$outp")
    if [ -z "$rps" ]; then log "$1 $2: no h2load summary:"; log "$outp"; rps=0; fi
    echo "$rps ${failed:-0}"
}

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

{
echo "| HTTP/2, h2load c=50 m=10 | nginx req/s (h2, TLS) | tincan req/s (h2, TLS) | ratio | tincan req/s (h2c) | h2c / nginx | failed (nginx/tincan/h2c) |"
echo "|---|---|---|---|---|---|---|"
for F in 1k.bin 100k.bin; do
    : >"$WORK/n"; : >"$WORK/t"; : >"$WORK/c"; : >"$WORK/r"; : >"$WORK/rc"
    for rep in $(seq 1 "$REPS"); do
        if [ $((rep % 2)) -eq 1 ]; then order="nginx tincan tincan-h2c"; else order="tincan-h2c tincan nginx"; fi
        for s in $order; do
            read -r rps failed < <(run "$s" "$F")
            case "$s" in nginx) f=n ;; tincan) f=t ;; tincan-h2c) f=c ;; esac
            echo "$rps $failed" >>"$WORK/$f"
            log "$F rep $rep $s: $rps req/s, $failed failed"
        done
        paste -d' ' "$WORK/n" "$WORK/t" | tail -1 | awk '{ printf "%.4f\n", ($1 > 0 ? $3 / $1 : 0) }' >>"$WORK/r"
        paste -d' ' "$WORK/n" "$WORK/c" | tail -1 | awk '{ printf "%.4f\n", ($1 > 0 ? $3 / $1 : 0) }' >>"$WORK/rc"
    done
    nr=$(cut -d' ' -f1 "$WORK/n" | median); tr=$(cut -d' ' -f1 "$WORK/t" | median)
    cr=$(cut -d' ' -f1 "$WORK/c" | median)
    nf=$(awk '{ s += $2 } END { print s }' "$WORK/n"); tf=$(awk '{ s += $2 } END { print s }' "$WORK/t")
    cf=$(awk '{ s += $2 } END { print s }' "$WORK/c")
    printf '| %s | %.0f | %.0f | %.2fx | %.0f | %.2fx | %s / %s / %s |\n' \
        "${F%.bin}" "$nr" "$tr" "$(median <"$WORK/r")" "$cr" "$(median <"$WORK/rc")" "$nf" "$tf" "$cf"
done
} | tee "$OUT/h2.md"
