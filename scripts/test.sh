#!/usr/bin/env bash
# The test command: `bash scripts/test.sh` (CI runs exactly this through .ci/run).
#
#   1. build        scripts/build.sh: Debian packages, configured nginx source, release build of
#                   the module and the shipper; then lint: `cargo fmt --check` and
#                   `cargo clippy --workspace --all-targets -D warnings`
#   2. cargo test   the workspace without the module crate (tracker-core, tracker-shipper): the
#                   module's nginx symbols only resolve inside nginx, so it is tested in nginx;
#                   then the loom models of core's lock-free code (RUSTFLAGS="--cfg loom")
#   3. Test::Nginx  prove -r t/ against /usr/sbin/nginx with the module loaded
#                   (Test::Nginx from scripts/test-nginx.sh)
#   4. end-to-end   every t/e2e/*.sh (first `scripts/tansu.sh install`: the Kafka-compatible
#                   broker of t/e2e/kafka-end-to-end.sh, built once into $TOOLS_DIR/tansu)
#   5. vendored     scripts/vendored-smoke.sh: the module built against nginx-src, in its nginx
#   6. fuzz         scripts/fuzz.sh short: every cargo-fuzz target for 20 s (cargo-fuzz built
#                   into $TOOLS_DIR/cargo-fuzz the first time)
#   7. bench        bench/deps.sh, then bench/ci-short.sh: the benchmark suite, short (about a
#                   minute): prints the ratio table and instructions per request; fails only on
#                   a broken setup, never on the figures (a shared 2-core machine is noisy)
#
# Every stage prints a header and the script stops at the first failure.
# TEST_STAGES="cargo prove" (any of: lint build cargo prove e2e vendored fuzz bench) runs only those stages;
# the build runs whenever prove, e2e or bench do (vendored builds its own). TEST_FILES narrows the
# Test::Nginx stage to the files it names, E2E_FILES the end-to-end stage.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STAGES=${TEST_STAGES:-lint build cargo prove e2e vendored fuzz bench}
want() { case " $STAGES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

started=$(date +%s)
stage_times=()
stage() { # $1 = name, rest = command
    local name=$1; shift
    local t0
    t0=$(date +%s)
    header "test: $name"
    "$@"
    stage_times+=("$name $(( $(date +%s) - t0 ))s")
}

# rustfmt's defaults, and clippy with every warning an error, over the whole workspace.
run_lint() {
    cargo fmt --all -- --check
    env -u NGINX_SOURCE_DIR NGINX_BUILD_DIR="$NGINX_SRC_COPY/objs" \
        cargo clippy --workspace --all-targets -- -D warnings
}

if want build || want prove || want e2e || want bench || want lint; then
    stage "build (scripts/build.sh)" bash "$ROOT/scripts/build.sh"
fi

if want lint; then
    stage "lint (cargo fmt --check, cargo clippy -D warnings)" run_lint
fi

if want cargo; then
    # tracker-core and tracker-shipper unit and integration tests. The test profile (not
    # --release): the release profile's panic=abort means `cargo test --release` would rebuild
    # every dependency anyway, and the test profile compiles much faster.
    stage "cargo test --workspace --exclude nginx-tracker" \
        env -u NGINX_SOURCE_DIR NGINX_BUILD_DIR="$NGINX_SRC_COPY/objs" \
        cargo test --workspace --exclude nginx-tracker
    # The loom models of the lock-free code (core/tests/loom_*.rs): their own target dir, since
    # --cfg loom swaps the atomics of the whole crate.
    stage "loom models (cargo test --cfg loom)" \
        env RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$ROOT/target/loom" \
        cargo test -p tracker-core --release --test 'loom_*'
fi

# The environment the Test::Nginx files and the end-to-end scripts read.
export_test_env() {
    TEST_TMP=$(mktemp -d /tmp/tracker-test.XXXXXX)
    local port
    port=$(perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 0, Listen => 1, ReuseAddr => 1)->sockport')
    export PERL5LIB="$TEST_NGINX_LIB${PERL5LIB:+:$PERL5LIB}"
    export TEST_NGINX_BINARY=/usr/sbin/nginx
    export TEST_NGINX_LOAD_MODULES=$MODULE_SO
    export TEST_NGINX_SHIPPER=$SHIPPER_BIN
    # Test::Nginx writes `listen $TEST_NGINX_SERVER_PORT;` and connects to 127.0.0.1 on
    # $TEST_NGINX_CLIENT_PORT: an address:port here keeps the server on 127.0.0.1 only.
    export TEST_NGINX_SERVER_PORT="127.0.0.1:$port"
    export TEST_NGINX_CLIENT_PORT=$port
    export TEST_NGINX_SERVROOT=$TEST_TMP/servroot
    export TEST_NGINX_NO_SHUFFLE=1
    unset TEST_NGINX_RANDOMIZE TEST_NGINX_USE_HUP TEST_NGINX_USE_VALGRIND
}
cleanup_test_env() {
    if [ -n "${TEST_TMP:-}" ]; then rm -rf "$TEST_TMP"; fi
}
trap cleanup_test_env EXIT

run_prove() {
    local lib
    lib=$(bash "$ROOT/scripts/test-nginx.sh" | tail -n1)
    [ "$lib" = "$TEST_NGINX_LIB" ] || die "unexpected Test::Nginx path $lib"
    export_test_env
    echo "TEST_NGINX_LOAD_MODULES=$TEST_NGINX_LOAD_MODULES"
    echo "TEST_NGINX_SERVER_PORT=$TEST_NGINX_SERVER_PORT"
    # TEST_FILES="t/130-banker.t t/190-duplicates.t" runs only those files.
    # shellcheck disable=SC2086
    prove ${TEST_FILES:--r t/}
}
if want prove; then
    stage "Test::Nginx (prove -r t/)" run_prove
fi

run_e2e() {
    [ -n "${TEST_TMP:-}" ] || export_test_env
    # The Kafka-compatible broker of t/e2e/kafka-end-to-end.sh: installed into $TOOLS_DIR/tansu
    # (outside the clone) the first time (cargo install, 10-20 minutes), then found there.
    bash "$ROOT/scripts/tansu.sh" install
    export TANSU_BIN="$TOOLS_DIR/tansu/bin/tansu"
    local f n=0
    for f in ${E2E_FILES:-"$ROOT"/t/e2e/*.sh}; do
        [ -f "$f" ] || continue
        n=$((n + 1))
        echo "--- $f"
        bash "$f"
    done
    [ "$n" -gt 0 ] || echo "no t/e2e/*.sh scripts"
}
if want e2e; then
    stage "end-to-end (t/e2e/*.sh)" run_e2e
fi

if want vendored; then
    stage "vendored build smoke test (scripts/vendored-smoke.sh)" bash "$ROOT/scripts/vendored-smoke.sh"
fi

if want fuzz; then
    stage "fuzzing, short (scripts/fuzz.sh short)" bash "$ROOT/scripts/fuzz.sh" short
fi

run_bench() {
    bash "$ROOT/bench/deps.sh"
    bash "$ROOT/bench/ci-short.sh"
}
if want bench; then
    stage "benchmarks, short (bench/ci-short.sh)" run_bench
fi

header "test: all stages passed in $(( $(date +%s) - started ))s"
for s in "${stage_times[@]}"; do note "$s"; done
