#!/usr/bin/env bash
# How prefork's 2 workers share connections: `tincan hello` under --model prefork --workers 2
# on 127.0.0.1, `ab -n N -c C` against it (AB_FLAGS=-k for keep-alive), and the accept4(2)
# calls that returned a connection in each worker, counted by `perf stat` on the
# syscalls:sys_exit_accept4 tracepoint (ab opens a few more connections than requests).
# usage: bench/spread.sh BIN POLLER N C [extra server flags...]
set -euo pipefail
BIN=$1; POLLER=$2; N=${3:-2000}; C=${4:-50}; shift 4 || true
out=$(mktemp); pout=$(mktemp)
"$BIN" hello --listen 127.0.0.1:0 --access-log off --model prefork --workers 2 --poller "$POLLER" "$@" >"$out" 2>/dev/null &
srv=$!
for _ in $(seq 100); do grep -q '^listening on ' "$out" && break; sleep 0.05; done
addr=$(sed -n -E 's,^listening on ([a-z]+://)?,,p' "$out" | head -1)
sleep 0.3
workers=$(cat /proc/$srv/task/*/children | tr ' ' '\n' | grep . | paste -sd,)
perf stat --per-thread -x, -e syscalls:sys_exit_accept4 --filter "${FILTER:-ret >= 0}" -p "$workers" -o "$pout" &
perf_pid=$!
sleep 0.5
ab -q ${AB_FLAGS:-} -n "$N" -c "$C" "http://$addr/" | grep -E 'Failed requests|Requests per second' | tr -s ' ' | paste -sd';'
sleep 0.2
kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
echo "$POLLER: $(grep accept4 "$pout" | awk -F, '{printf "%s=%s ", $1, $2}')"
kill "$srv"; wait "$srv" 2>/dev/null || true
rm -f "$out" "$pout"
