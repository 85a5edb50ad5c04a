#!/usr/bin/env bash
# How prefork's 2 workers share connections: `tincan hello` under --model prefork --workers 2
# on 127.0.0.1, `ab -n N -c C` against it (AB_FLAGS=-k for keep-alive), and the accept4(2)
# calls that returned a connection in each worker, counted by `perf stat` on the
# syscalls:sys_exit_accept4 tracepoint (ab opens a few more connections than requests).
# BIN `nginx` runs nginx with 2 workers instead (`return 200`, default `listen`: one socket
# shared by the workers, accept_mutex off, EPOLLEXCLUSIVE); POLLER is ignored then.
# usage: bench/spread.sh BIN POLLER N C [extra server flags...]
set -euo pipefail
BIN=$1; POLLER=$2; N=${3:-2000}; C=${4:-50}; shift 4 || true
out=$(mktemp); pout=$(mktemp); work=$(mktemp -d)
if [ "$BIN" = nginx ]; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat >"$work/nginx.conf" <<CONF
worker_processes 2;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    server { listen 127.0.0.1:$port; location / { return 200 "hello\n"; } }
}
CONF
    nginx -c "$work/nginx.conf" -g 'daemon off;' &
    srv=$!
    addr=127.0.0.1:$port
    for _ in $(seq 100); do [ "$(cat /proc/$srv/task/*/children | wc -w)" -ge 2 ] && break; sleep 0.05; done
else
    "$BIN" hello --listen 127.0.0.1:0 --access-log off --model prefork --workers 2 --poller "$POLLER" "$@" >"$out" 2>/dev/null &
    srv=$!
    for _ in $(seq 100); do grep -q '^listening on ' "$out" && break; sleep 0.05; done
    addr=$(sed -n -E 's,^listening on ([a-z]+://)?,,p' "$out" | head -1)
fi
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
rm -rf "$out" "$pout" "$work"
