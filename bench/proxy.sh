#!/usr/bin/env bash
# bench/proxy.sh: the reverse proxy, tincan vs nginx, in front of the same upstream, one run.
#
#   bench/proxy.sh [--reps N] [--duration SECONDS] [--idle N] [--out DIR]
#
# The upstream is nginx serving a 1 KiB file (1 worker, keep-alive without limit). In front of
# it, in turn: nginx `proxy_pass` with an upstream `keepalive 64` pool (HTTP/1.1, Connection
# cleared), and `tincan serve --proxy /=http://UPSTREAM` (event model, 1 worker, upstream
# keep-alive on by default). Both proxies run on CPU 0; wrk and the upstream share CPU 1.
# For each of c=50 and c=500 keep-alive connections: --reps interleaved pairs of wrk runs
# (nginx, tincan, tincan, nginx, ...); reported: median requests/s, median p99, non-2xx
# answers and socket errors, and the median of the per-pair ratios (tincan / nginx).
# Then the memory per idle proxied keep-alive connection: --idle clients each make one
# proxied request and stay open; (RSS after - RSS before) / N for each proxy.
# Every server is stopped by its pid. Default: about 2 minutes.
# TINCAN_ARGS="--busy-poll 50" adds flags to tincan's command line (to try one against nginx).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/proxy-lib.sh
. bench/proxy-lib.sh
IDLE=2000
own_arg() { case "$1" in --idle) IDLE=$2 ;; *) return 1 ;; esac; }
parse_args "$@"
need nginx nginx
need wrk wrk
need taskset util-linux
tincan_binary
ulimit -n "$(ulimit -Hn)"

start_upstream taskset -c 1
front_conf

start_nginx() {
    launch "$NG" - "$(command -v nginx)" -c "$WORK/front.conf" -e "$WORK/front.err"
    PORT=$NG
}
start_tincan() {
    TP=$(free_port)
    launch "$TP" "$WORK/tincan.err" "$TINCAN" serve "$WORK/empty" --listen "127.0.0.1:$TP" \
        --model event --workers 1 --access-log off --max-connections 20000 \
        --upstream-keepalive "$POOL" --proxy "/=http://127.0.0.1:$UP" ${TINCAN_ARGS:-}
    PORT=$TP
}
# rss PID: resident KiB of a process and its children (nginx's worker is a child).
rss() { proc_total "$1" status '/^VmRSS:/ { print $2 }'; }

# run SERVER CONNS -> "rps p99_ms non2xx errors"
run() {
    "start_$1"
    # A warm-up fills the upstream pools.
    taskset -c 1 wrk -t1 -c "$2" -d1s "http://127.0.0.1:$PORT/1k.txt" >/dev/null 2>&1 || true
    local outp
    outp=$(taskset -c 1 wrk -t1 -c "$2" -d"${DUR}s" --latency "http://127.0.0.1:$PORT/1k.txt" 2>&1)
    stop_srv
    local rps p99 non2xx errs
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$outp")
    p99=$(awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 } print v }' <<<"$outp")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$outp")
    errs=$(awk '/Socket errors/ { n = 0; for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) n += $i; print n }' <<<"$outp")
    echo "$rps ${p99:-0} ${non2xx:-0} ${errs:-0}"
}


echo "| proxied 1 KiB | nginx req/s | tincan req/s | ratio | nginx p99 ms | tincan p99 ms | non-2xx (nginx/tincan) | socket errors (nginx/tincan) |"
echo "|---|---|---|---|---|---|---|---|"
for C in 50 500; do
    : >"$WORK/n" ; : >"$WORK/t"; : >"$WORK/r"
    for rep in $(seq 1 "$REPS"); do
        if [ $((rep % 2)) -eq 1 ]; then order="nginx tincan"; else order="tincan nginx"; fi
        for s in $order; do
            read -r rps p99 non errs < <(run "$s" "$C")
            echo "$rps $p99 $non $errs" >>"$WORK/${s:0:1}"
            log "c=$C rep $rep $s: $rps req/s, p99 $p99 ms, non-2xx $non, errors $errs"
        done
        paste -d' ' "$WORK/n" "$WORK/t" | tail -1 | awk '{ printf "%.4f\n", $5 / $1 }' >>"$WORK/r"
    done
    nr=$(cut -d' ' -f1 "$WORK/n" | median); tr=$(cut -d' ' -f1 "$WORK/t" | median)
    np=$(cut -d' ' -f2 "$WORK/n" | median); tp=$(cut -d' ' -f2 "$WORK/t" | median)
    nn=$(awk '{ s += $3 } END { print s }' "$WORK/n"); tn=$(awk '{ s += $3 } END { print s }' "$WORK/t")
    ne=$(awk '{ s += $4 } END { print s }' "$WORK/n"); te=$(awk '{ s += $4 } END { print s }' "$WORK/t")
    ratio=$(median <"$WORK/r")
    printf '| c=%s | %.0f | %.0f | %.2fx | %s | %s | %s / %s | %s / %s |\n' \
        "$C" "$nr" "$tr" "$ratio" "$np" "$tp" "$nn" "$tn" "$ne" "$te"
done

# Memory per idle proxied keep-alive connection.
echo
echo "| idle proxied keep-alive connections ($IDLE) | nginx KiB each | tincan KiB each |"
echo "|---|---|---|"
per=()
for s in nginx tincan; do
    "start_$s"
    sleep 0.3
    before=$(rss "$SRV")
    rm -f "$WORK/release"
    python3 bench/idle_clients.py 127.0.0.1 "$PORT" "$IDLE" /1k.txt "$WORK/release" >"$WORK/idle.out" &
    CL=$!
    for _ in $(seq 1 200); do grep -q ready "$WORK/idle.out" 2>/dev/null && break; sleep 0.1; done
    sleep 0.5
    after=$(rss "$SRV")
    touch "$WORK/release"
    wait "$CL" 2>/dev/null || true
    stop_srv
    per+=("$(awk -v a="$after" -v b="$before" -v n="$IDLE" 'BEGIN { printf "%.2f", (a - b) / n }')")
    log "$s: $(cat "$WORK/idle.out"); RSS $before -> $after KiB"
done
echo "| per connection | ${per[0]} | ${per[1]} |"
