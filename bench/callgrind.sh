#!/usr/bin/env bash
# bench/callgrind.sh: user-space instructions per proxied request, tincan --proxy vs nginx
# proxy_pass, counted by callgrind (repeatable on a busy machine, unlike requests/s).
#
#   bench/callgrind.sh [--requests N] [--connections C] [--only tincan|nginx] [--keep DIR]
#                                                                 (default 3000, 50)
#
# The upstream is nginx serving 1 KiB (as in bench/proxy.sh), run natively. Each proxy runs
# under `valgrind --tool=callgrind`, one worker (tincan --model event --workers 1; nginx
# `master_process off; daemon off;`, upstream `keepalive 64`). A warm-up of 500 requests
# fills the pools, the counters are zeroed (`callgrind_control -z`), then N requests over C
# keep-alive connections (`h2load --h1`), and the counters are dumped: the instructions for
# exactly those N requests, divided by N. --keep DIR keeps the callgrind files (for
# callgrind_annotate).
set -euo pipefail
cd "$(dirname "$0")/.."
N=3000
C=50
ONLY=
KEEP=
own_arg() {
    case "$1" in
        --requests) N=$2 ;;
        --connections) C=$2 ;;
        --only) ONLY=$2 ;;
        --keep) KEEP=$2 ;;
        *) return 1 ;;
    esac
}
# shellcheck source=bench/proxy-lib.sh
. bench/proxy-lib.sh
parse_args "$@"
need_callgrind
tincan_binary

start_upstream
front_conf "master_process off; daemon off;"

# measure NAME PORT VALGRIND-PID: warm up, zero, load, dump; prints instructions per request.
measure() {
    local name=$1 port=$2 vpid=$3 url
    url="http://127.0.0.1:$port/1k.txt"
    h2load --h1 -n 500 -c "$C" "$url" >/dev/null
    callgrind_control -z "$vpid" >/dev/null 2>&1
    local res
    res=$(h2load --h1 -n "$N" -c "$C" "$url")
    grep -q "succeeded, 0 failed" <<<"$(grep '^requests:' <<<"$res")" ||
        log "$name: $(grep '^requests:' <<<"$res")"
    grep -q "status codes: $N 2xx" <<<"$res" || log "$name: $(grep "^status codes" <<<"$res")"
    callgrind_control -d "$vpid" >/dev/null 2>&1
    sleep 0.5
    local f
    f=$(ls -t "$WORK/$name".out.* | grep -v '\.0$' | head -1 || true)
    [ -n "$f" ] || f=$(ls -t "$WORK/$name".out.* | head -1)
    local ir
    ir=$(awk '/^summary:/ {print $2} /^totals:/ {print $2}' "$f" | head -1)
    [ -n "$KEEP" ] && { mkdir -p "$KEEP"; cp "$f" "$KEEP/$name.callgrind"; }
    awk -v ir="$ir" -v n="$N" -v name="$name" 'BEGIN { printf "%s: %.1f M instructions for %d requests, %.0f per request\n", name, ir / 1e6, n, ir / n }'
}

if [ "$ONLY" != nginx ]; then
    TP=$(free_port)
    valgrind --tool=callgrind --callgrind-out-file="$WORK/tincan.out.%p" "$TINCAN" serve "$WORK/empty" \
        --listen "127.0.0.1:$TP" --model event --workers 1 --access-log off \
        --max-connections 20000 --upstream-keepalive "$POOL" --proxy "/=http://127.0.0.1:$UP" >/dev/null 2>"$WORK/tincan.err" &
    V=$!
    PIDS+=($V)
    wait_port "$TP"
    measure tincan "$TP" "$V"
    kill "$V"; wait "$V" 2>/dev/null || true
fi
if [ "$ONLY" != tincan ]; then
    valgrind --tool=callgrind --callgrind-out-file="$WORK/nginx.out.%p" "$(command -v nginx)" \
        -c "$WORK/front.conf" -e "$WORK/front.err" 2>"$WORK/nginx.vg" &
    V=$!
    PIDS+=($V)
    wait_port "$NG"
    measure nginx "$NG" "$V"
    kill "$V"; wait "$V" 2>/dev/null || true
fi
