#!/usr/bin/env bash
# The benchmark suite, short, for CI: keeps it working and shows a gross regression in the log.
#
#   bash bench/ci-short.sh
#
# 1. bench/run.sh with BENCH_SHORT=1: every case once for 2 s (empty_gif, access log, tracker
#    pixel/click with and without the shipper, the Lua peer), the ratio table; the fixed-rate
#    latency phase too when oha is already built in $TOOLS_DIR/oha (BENCH_LATENCY=1 builds it,
#    about 10 minutes the first time; BENCH_LATENCY=0 skips it);
# 2. bench/callgrind.sh with CG_REQUESTS=500: instructions per request of empty_gif, the pixel
#    and the click (deterministic: the number to compare between commits).
# It fails only when the setup is broken (a missing build, nginx or the shipper not starting,
# a location answering the wrong status, valgrind failing): never on the figures, which on a
# shared 2-core machine are noise. Ports 127.0.0.1:18083 (run.sh) and 18084 (callgrind).
# Takes about a minute (45 s without the latency phase); results under bench/results/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

t0=$(date +%s)
latency=0
[ -x "$TOOLS_DIR/oha/bin/oha" ] && latency=1
latency=${BENCH_LATENCY:-$latency}

header "bench (short): throughput and CPU per request$([ "$latency" = 1 ] && echo ', latency at a fixed rate')"
BENCH_SHORT=1 BENCH_LATENCY="$latency" BENCH_PORT="${BENCH_PORT:-18083}" bash "$ROOT/bench/run.sh"

header "bench (short): instructions per request (callgrind)"
log=$(mktemp /tmp/nginx-tracker-ci-bench.XXXXXX)
if ! CG_REQUESTS="${CG_REQUESTS:-500}" CG_WARMUP="${CG_WARMUP:-100}" BENCH_PORT="${CG_PORT:-18084}" \
        bash "$ROOT/bench/callgrind.sh" >"$log" 2>&1; then
    cat "$log"
    rm -f "$log"
    die "bench/callgrind.sh failed"
fi
# The summary table and where the full report is.
awk '/^Instructions \(Ir\) per request/ {f = 1} f {print; if ($0 == "" && ++n == 2) exit}' "$log"
grep -E '^==> callgrind: results in' "$log" | sed 's/^==> /    /'
rm -f "$log"

note "bench/ci-short.sh: $(( $(date +%s) - t0 )) s"
