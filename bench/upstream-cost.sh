#!/usr/bin/env bash
# bench/upstream-cost.sh: user-space instructions the UPSTREAM spends per proxied request, when
# tincan --proxy fronts it and when nginx proxy_pass does, counted by callgrind (repeatable on
# a busy machine).
#
#   bench/upstream-cost.sh [--requests N]        (default 3000, 50 connections)
#   SAME_FIELDS=1 bench/upstream-cost.sh         nginx sends tincan's forwarding fields too
#
# The upstream is nginx serving 1 KiB (bench/proxy-lib.sh), one process under valgrind
# (`master_process off`); the two proxies run natively in front of it, one worker each, with
# 64 kept upstream connections. For each proxy in turn (twice): a warm-up of 500 requests,
# the counters zeroed, N requests over 50 keep-alive connections (`h2load --h1`), the
# counters dumped. What differs is what each proxy sends the upstream: nginx by default sends
# `Host` and the client's fields; tincan adds X-Forwarded-For, -Proto, -Host, Forwarded and
# Via.
set -euo pipefail
cd "$(dirname "$0")/.."
N=3000
own_arg() { case "$1" in --requests) N=$2 ;; *) return 1 ;; esac; }
# shellcheck source=bench/proxy-lib.sh
. bench/proxy-lib.sh
parse_args "$@"
need_callgrind
tincan_binary

UP=$(free_port)
nginx_conf upstream "$UP" "root $WORK/www; location / { }" "" "master_process off; daemon off;"
valgrind --tool=callgrind --callgrind-out-file="$WORK/up.out.%p" "$(command -v nginx)" \
    -c "$WORK/upstream.conf" -e "$WORK/upstream.err" 2>"$WORK/upstream.vg" &
V=$!
PIDS+=($V)
wait_port "$UP"
front_conf
"$(command -v nginx)" -c "$WORK/front.conf" -e "$WORK/front.err" &
PIDS+=($!)
TP=$(free_port)
"$TINCAN" serve "$WORK/empty" --listen "127.0.0.1:$TP" --model event --workers 1 \
    --access-log off --upstream-keepalive "$POOL" --proxy "/=http://127.0.0.1:$UP" \
    >/dev/null 2>"$WORK/tincan.err" &
PIDS+=($!)
wait_port "$NG"
wait_port "$TP"
for run in nginx:$NG tincan:$TP nginx:$NG tincan:$TP; do
    name=${run%%:*}
    url="http://127.0.0.1:${run##*:}/1k.txt"
    h2load --h1 -n 500 -c 50 "$url" >/dev/null
    callgrind_control -z "$V" >/dev/null 2>&1
    res=$(h2load --h1 -n "$N" -c 50 "$url")
    grep -q "status codes: $N 2xx" <<<"$res" || log "$name: $(grep '^status codes' <<<"$res")"
    callgrind_control -d "$V" >/dev/null 2>&1
    sleep 0.5
    f=$(ls -t "$WORK"/up.out.* | head -1)
    awk -v name="$name" -v n="$N" '/^summary:/ { printf "upstream behind %s: %.0f instructions per request\n", name, $2 / n }' "$f"
done
