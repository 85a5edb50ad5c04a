#!/usr/bin/env bash
# bench/testssl.sh: Debian's testssl.sh against `tincan serve` over TLS, as bench/README's
# "TLS as testssl.sh sees it" was made.
#
#   bench/testssl.sh [--out DIR]   (TINCAN=BINARY: no build; MODEL="--model prefork --workers 2")
#
# tincan serves a scratch directory with a self-signed ECDSA P-256 certificate
# (--tls-self-signed) and --hsts 31536000, on 127.0.0.1 only. testssl runs every default check
# (protocols, ciphers, server defaults, headers, vulnerabilities, client simulation); its
# full output goes to DIR/testssl.txt, and the lines that matter are printed: what it offers,
# every vulnerability line, and everything it marks "NOT ok" or worse. testssl takes some
# minutes; it is given 15 at most.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
parse_args "$@"
need testssl testssl.sh
tincan_binary
scratch testssl
mkdir -p "$WORK/www" "$OUT"
echo "hello" >"$WORK/www/index.html"
PORT=$(free_port)
# shellcheck disable=SC2086
"$TINCAN" serve "$WORK/www" --listen "127.0.0.1:$PORT" --tls-self-signed "$WORK/tls" \
    --hsts 31536000 --access-log off ${MODEL:---model event --workers 1} >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
wait_port "$PORT"
log "testssl against tincan $(git rev-parse --short HEAD) on 127.0.0.1:$PORT ($(date -u +%H:%M) UTC)"
timeout 900 testssl --quiet --color 0 --warnings off --ip one "https://127.0.0.1:$PORT" \
    >"$OUT/testssl.txt" 2>&1 || true
grep -E "offered|VULNERABLE|NOT ok|not vulnerable|Running client simulations|supported|Strict Transport" \
    "$OUT/testssl.txt" | sed 's/  */ /g' || true
echo "full output: $OUT/testssl.txt"
