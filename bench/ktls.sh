#!/usr/bin/env bash
# bench/ktls.sh: a 10 MiB file over HTTPS with kernel TLS on and off, tincan alone, one run.
#
#   bench/ktls.sh [--reps N]   (TINCAN=BINARY: no build)
#
# Only telling where the kernel offers TLS (/proc/net/tls_stat exists: the `tls` module is
# loaded); elsewhere both rows are rustls and the script says so. `scripts/ktls-vm` runs it in
# a guest whose kernel has TLS (KTLS_VM_BENCH=1), where the figures are those of software
# emulation: only the ratio between the rows means anything.
# `tincan serve --model event --workers 1` on CPU 0 with `--kernel-tls on` or `off`, curl on
# CPU 1 fetching the file 4 times on one kept-alive connection (TLS 1.3, AES-128-GCM), --reps
# interleaved pairs (off, on, on, off, ...). Rows: the median seconds of the 4 downloads, and
# the server's CPU time for them (utime+stime from /proc: under kernel TLS the encryption is
# the server's system time, inside sendfile). Every server is stopped by its pid.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
parse_args "$@"
need curl curl
need openssl openssl
need taskset util-linux
tincan_binary
scratch ktls

mkdir -p "$WORK/www"
head -c $((10 << 20)) /dev/urandom >"$WORK/www/10m.bin"
self_signed_cert
if [ -r /proc/net/tls_stat ]; then
    log "kernel $(uname -r) offers TLS"
else
    log "kernel $(uname -r) offers no TLS (no /proc/net/tls_stat): both rows are rustls"
fi
tls_count() { awk '$1 == "TlsTxSw" { print $2 }' /proc/net/tls_stat 2>/dev/null || echo 0; }

# run MODE: one server with --kernel-tls MODE; prints "seconds cpu_seconds kernel_conns".
run() {
    local port before after t0 t1 k0 secs
    port=$(free_port)
    launch "$port" "$WORK/err" "$TINCAN" serve "$WORK/www" --listen "127.0.0.1:$port" \
        --model event --workers 1 --access-log off --kernel-tls "$1" \
        --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem"
    local url="https://localhost:$port/10m.bin" args=()
    for _ in 1 2 3 4; do args+=(-o /dev/null "$url"); done
    k0=$(tls_count)
    before=$(proc_total "$SRV" stat '{ print $14 + $15 }')
    t0=$(date +%s.%N)
    taskset -c 1 curl -sS --max-time 600 --cacert "$WORK/cert.pem" --tlsv1.3 \
        --tls13-ciphers TLS_AES_128_GCM_SHA256 "${args[@]}"
    t1=$(date +%s.%N)
    after=$(proc_total "$SRV" stat '{ print $14 + $15 }')
    stop_srv
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    echo "$secs $(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.2f", t / hz }') $(($(tls_count) - k0))"
}

: >"$WORK/off"
: >"$WORK/on"
for i in $(seq 1 "$REPS"); do
    if [ $((i % 2)) -eq 1 ]; then order="off on"; else order="on off"; fi
    for mode in $order; do
        r=$(run "$mode")
        log "rep $i, kernel TLS $mode: $r (seconds, server CPU seconds, kernel TLS connections)"
        echo "$r" >>"$WORK/$mode"
    done
done
off_s=$(awk '{ print $1 }' "$WORK/off" | median)
on_s=$(awk '{ print $1 }' "$WORK/on" | median)
off_cpu=$(awk '{ print $2 }' "$WORK/off" | median)
on_cpu=$(awk '{ print $2 }' "$WORK/on" | median)
on_k=$(awk '{ s += $3 } END { print s }' "$WORK/on")
printf '%-34s %12s %12s\n' "4 x 10 MiB, one connection" "rustls" "kernel TLS"
printf '%-34s %12s %12s   %s\n' "seconds (median of $REPS)" "$off_s" "$on_s" \
    "$(awk -v a="$off_s" -v b="$on_s" 'BEGIN { printf "%.2fx as fast", a / b }')"
printf '%-34s %12s %12s   %s\n' "server CPU seconds (median)" "$off_cpu" "$on_cpu" \
    "$(awk -v a="$off_cpu" -v b="$on_cpu" 'BEGIN { if (b > 0) printf "%.2fx the CPU", b / a }')"
echo "connections kernel TLS took (/proc/net/tls_stat TlsTxSw): $on_k of $REPS"
