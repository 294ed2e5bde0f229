#!/usr/bin/env bash
# cargo fuzz (libFuzzer) targets of tracker-core, see fuzz/ and docs/security.md#fuzzing.
#
#   bash scripts/fuzz.sh short            each target FUZZ_SHORT_SECONDS (default 20) seconds
#   bash scripts/fuzz.sh long [SECONDS]   each target SECONDS (default 600) seconds
#   bash scripts/fuzz.sh run TARGET SECONDS
#   bash scripts/fuzz.sh replay TARGET FILE...   run the target once on each file (a crash)
#
# Works on stable Rust: targets are built with `cargo fuzz build -s none` (no sanitizer, which
# would need nightly; libFuzzer's coverage instrumentation uses stable -C flags). cargo-fuzz is
# installed from crates.io into $TOOLS_DIR/cargo-fuzz on first use; if that fails, `short` says so
# and exits 0 (skipped), `long` fails. Corpora live in .cache/fuzz-corpus/TARGET (seeded from
# fuzz/seeds/TARGET), crashes in fuzz/artifacts/TARGET. Prints the executions of each target.
# FUZZ_TARGETS="args landing" restricts the targets.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TOOLS_DIR=${NGINX_TRACKER_TOOLS:-/var/cache/nginx-tracker-tools} # as in scripts/lib.sh
MODE=${1:-short}
ALL_TARGETS="campaign_file landing sign_verify event_decode args ring_reader journal"
TARGETS=${FUZZ_TARGETS:-$ALL_TARGETS}
CARGO_FUZZ_VERSION=0.13.2

case "$MODE" in
    short) SECONDS_EACH=${FUZZ_SHORT_SECONDS:-20} ;;
    long) SECONDS_EACH=${2:-600} ;;
    run) TARGETS=${2:?target}; SECONDS_EACH=${3:-60} ;;
    replay) TARGETS=${2:?target}; shift 2; REPLAY=("$@"); [ ${#REPLAY[@]} -gt 0 ] || { echo "replay: files?" >&2; exit 2; } ;;
    *) echo "usage: $0 short | long [SECONDS] | run TARGET SECONDS | replay TARGET FILE..." >&2; exit 2 ;;
esac

export PATH="$TOOLS_DIR/cargo-fuzz/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS_DIR/cargo-fuzz"
    mkdir -p "$TOOLS_DIR/cargo-fuzz"
    if ! cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$TOOLS_DIR/cargo-fuzz" \
            >"$TOOLS_DIR/cargo-fuzz/install.log" 2>&1; then
        tail -5 "$TOOLS_DIR/cargo-fuzz/install.log" >&2
        if [ "$MODE" = short ]; then
            echo "fuzz: SKIPPED: cargo-fuzz could not be installed ($TOOLS_DIR/cargo-fuzz/install.log)"
            exit 0
        fi
        echo "fuzz: cargo-fuzz could not be installed" >&2
        exit 1
    fi
fi

# Outside the workspace's target/ so that the instrumented build never mixes with the module's.
export CARGO_TARGET_DIR="$ROOT/.cache/fuzz-target"
cd fuzz
start=$(date +%s)
echo "fuzz: building targets (cargo fuzz build -s none -O)"
cargo fuzz build -s none -O 2>&1 | grep -Ev '^\s+(Compiling|Downloaded|Downloading)' || true
[ "${PIPESTATUS[0]}" = 0 ] || { echo "fuzz: build failed" >&2; exit 1; }
if [ "$MODE" = replay ]; then
    files=(); for f in "${REPLAY[@]}"; do case "$f" in /*) files+=("$f") ;; *) files+=("$ROOT/$f") ;; esac; done
    exec cargo fuzz run -s none -O "$TARGETS" "${files[@]}"
fi
echo "fuzz: built in $(( $(date +%s) - start )) s; $SECONDS_EACH s per target"

failed=0
summary=()
for t in $TARGETS; do
    corpus="$ROOT/.cache/fuzz-corpus/$t"
    mkdir -p "$corpus" "artifacts/$t"
    if [ -d "seeds/$t" ]; then cp -n seeds/"$t"/* "$corpus"/ 2>/dev/null || true; fi
    log="$ROOT/.cache/fuzz-corpus/$t.log"
    # -rss_limit_mb and -timeout: a slow input (over 10 s) or a leak counts as a failure too.
    if cargo fuzz run -s none -O "$t" "$corpus" -- \
            -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
            -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed=1
    fi
    rm -f /dev/shm/tracker-fuzz-ring-* "${TMPDIR:-/tmp}"/tracker-fuzz-ring-*   # ring_reader's scratch files
    execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
    if [ -z "$execs" ]; then execs=$(grep -Eo '^Done [0-9]+ runs' "$log" | grep -Eo '[0-9]+' | tail -1); fi
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 || true)
    line=$(printf '%-14s %-6s %12s executions in %ss, %s, corpus %s files' \
        "$t" "$status" "${execs:-?}" "$SECONDS_EACH" "${cov:-cov: ?}" "$(ls "$corpus" | wc -l)")
    echo "fuzz: $line"
    summary+=("$line")
    if [ "$status" = FAILED ]; then
        grep -E 'panicked|SUMMARY|ERROR|Test unit written|Base64' "$log" | head -10 | sed 's/^/    /'
        echo "    log: $log; input in fuzz/artifacts/$t/"
    fi
done

echo "fuzz: summary ($(date -u +%Y-%m-%dT%H:%MZ), $(( $(date +%s) - start )) s in all)"
printf '  %s\n' "${summary[@]}"
if [ "$failed" = 0 ]; then
    echo "fuzz: ${#summary[@]} passed, 0 failed"
else
    echo "fuzz: a target failed" >&2
    exit 1
fi
