# Sourced by bench/proxy.sh and bench/callgrind.sh: a scratch directory with the 1 KiB file,
# the servers started (stopped by pid on exit), free ports, and the nginx configurations for
# the upstream and for nginx as the proxy in front of it.
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
scratch proxy

mkdir -p "$WORK/www" "$WORK/empty"
chmod 755 "$WORK" "$WORK/www"
head -c 1024 /dev/urandom | base64 -w0 | head -c 1024 >"$WORK/www/1k.txt"
chmod 644 "$WORK/www/1k.txt"

# nginx_conf NAME PORT LOCATION-BODY [UPSTREAM-BLOCK] [MAIN-DIRECTIVES]: one worker, the
# log off, keep-alive without a request limit; MAIN-DIRECTIVES default to `daemon off;`.
nginx_conf() {
    cat >"$WORK/$1.conf" <<CONF
worker_processes 1;
${5:-daemon off;}
pid $WORK/$1.pid;
error_log $WORK/$1.err warn;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    client_body_temp_path $WORK/$1-body;
    proxy_temp_path $WORK/$1-proxy;
    ${4:-}
    server { listen 127.0.0.1:$2 backlog=4096; $3 }
}
CONF
}

# What the callgrind scripts (callgrind.sh, upstream-cost.sh) run besides tincan.
need_callgrind() {
    need nginx nginx
    need valgrind valgrind
    need callgrind_control valgrind
    need h2load nghttp2-client
}

# The upstream both proxies front: nginx serving $WORK/www on port $UP (run under $1, e.g. a
# taskset prefix, or nothing).
start_upstream() {
    UP=$(free_port)
    nginx_conf upstream "$UP" "root $WORK/www; location / { }"
    "$@" "$(command -v nginx)" -c "$WORK/upstream.conf" -e "$WORK/upstream.err" &
    PIDS+=($!)
    wait_port "$UP"
}

# The idle upstream connections each proxy keeps: nginx's `keepalive N`, tincan's
# --upstream-keepalive N. The same on both sides, and at least the c=50 run's concurrency, or
# the proxy with the smaller pool closes and reopens upstream connections the other keeps.
POOL=${POOL:-64}

# nginx as the proxy: proxy_pass to the upstream with a `keepalive $POOL` pool (HTTP/1.1,
# Connection cleared), on port $NG. With SAME_FIELDS=1 it also sends the fields tincan adds
# (X-Forwarded-For/-Proto/-Host, Forwarded, Via), so both send the upstream the same work.
front_conf() { # [MAIN-DIRECTIVES]
    NG=$(free_port)
    local same=
    [ "${SAME_FIELDS:-0}" = 1 ] && same='proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host; proxy_set_header Forwarded "for=$remote_addr;host=\"$http_host\";proto=$scheme"; proxy_set_header Via "1.1 nginx";'
    nginx_conf front "$NG" \
        "location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; $same }" \
        "upstream up { server 127.0.0.1:$UP; keepalive $POOL; }" "${1:-daemon off;}"
}
