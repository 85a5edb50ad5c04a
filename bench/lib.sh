# bench/lib.sh: helpers the bench scripts share (sourced, not run, from the repository root
# after `cd`): the flags, the tools they need, a scratch directory whose servers are stopped by
# pid on exit, the tincan binary, free ports.

SCRIPT=$(basename "$0")
ROOT=$PWD
# The comparisons' defaults (parse_args reads --reps, --duration, --out into them).
REPS=3
DUR=5
OUT=bench/results

log() { printf '%s\n' "$*" >&2; }

# usage: the script's header comment (from line 2 to the first line that is not a comment).
usage() { awk 'NR == 1 { next } /^#/ { print; next } { exit }' "$0"; }

# parse_args "$@": the flags the comparisons share, into REPS, DUR and OUT (--reps N,
# --duration SECONDS, --out DIR; the script sets their defaults first), and -h/--help. A script
# with flags of its own defines `own_arg FLAG VALUE` first: it sets its variable and returns 0
# when FLAG is its own (VALUE taken too), 1 otherwise.
parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --reps) REPS=$2; shift ;;
            --duration) DUR=$2; shift ;;
            --out) OUT=$2; shift ;;
            -h|--help) usage; exit 0 ;;
            *)
                if declare -F own_arg >/dev/null && own_arg "$1" "${2:-}"; then
                    shift
                else
                    echo "$SCRIPT: unknown argument '$1'" >&2; exit 2
                fi ;;
        esac
        shift
    done
}

# need TOOL PACKAGE: stop with the package to install when TOOL is not on PATH.
need() { command -v "$1" >/dev/null || { log "$SCRIPT needs $1 (apt-get install $2)"; exit 1; }; }

# scratch NAME: a new directory WORK (/tmp/tincan-NAME.*); the pids put in PIDS are killed and
# waited for, and WORK removed, when the script exits or is interrupted.
scratch() {
    WORK=$(mktemp -d "/tmp/tincan-$1.XXXXXX")
    PIDS=()
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}
cleanup() {
    local p
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}

# tincan_binary: TINCAN, or the release build (made now) when it is not set.
tincan_binary() {
    if [ -z "${TINCAN:-}" ]; then
        cargo build --release --quiet
        TINCAN=${CARGO_TARGET_DIR:-$ROOT/target}/release/tincan
    fi
}

# A port the OS chooses on 127.0.0.1 (bound, then let go).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Wait (up to 20 s: a server under callgrind starts slowly) until something accepts on
# 127.0.0.1:PORT.
wait_port() {
    local i
    for i in $(seq 1 400); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    log "nothing listens on $1"; exit 1
}

# The median of the numbers on stdin, one a line.
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# wrk_p99_ms: wrk's --latency output on stdin -> its 99th percentile in milliseconds.
wrk_p99_ms() {
    awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 } print v }'
}

# launch PORT ERR CMD...: start the server CMD on CPU 0 (the load runs on CPU 1) as SRV, its
# stderr into the file ERR (`-`: left as it is), stopped by pid on exit; wait until it
# accepts on 127.0.0.1:PORT.
launch() {
    local port=$1 err=$2
    shift 2
    if [ "$err" = - ]; then
        taskset -c 0 "$@" >/dev/null &
    else
        taskset -c 0 "$@" 2>"$err" >/dev/null &
    fi
    SRV=$!
    PIDS+=($SRV)
    wait_port "$port"
}

# stop_srv: stop the server `launch` started last, and wait for it to go.
stop_srv() { kill "$SRV" 2>/dev/null || true; wait "$SRV" 2>/dev/null || true; }

# proc_total PID FILE AWK: the number AWK reads from /proc/PID/FILE, summed over PID and its
# children (nginx's worker is a child): `stat '{ print $14 + $15 }'` gives CPU ticks (utime +
# stime), `status '/^VmRSS:/ { print $2 }'` resident KiB.
proc_total() {
    local total=0 p
    for p in "$1" $(pgrep -P "$1" || true); do
        total=$((total + $(awk "$3" "/proc/$p/$2" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# self_signed_cert: WORK/cert.pem and WORK/key.pem, one certificate for both servers (P-256,
# as --tls-self-signed makes) naming localhost and 127.0.0.1.
self_signed_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
}
