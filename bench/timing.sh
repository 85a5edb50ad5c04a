#!/usr/bin/env bash
# bench/timing.sh: the tests that measure time rather than check behaviour, run alone on a
# quiet machine (release build, one test at a time). They are #[ignore]d in `cargo test`: a
# busy CI machine or a parallel test run moves them by more than their margins, and a red
# correctness suite for a slow neighbour says nothing about the code.
#
#   bench/timing.sh            (about a minute)
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --release --test integration -- --ignored --test-threads 1
