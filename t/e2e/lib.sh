# shellcheck shell=bash
# Shared helpers of the end-to-end scripts t/e2e/*.sh. Source it after `set -euo pipefail`.
# It sets
#   here     this directory (t/e2e), where the checkers and the wrk scripts are
#   root     the repository root
#   NGINX    TEST_NGINX_BINARY, default /usr/sbin/nginx
#   MODULE   TEST_NGINX_LOAD_MODULES, else MODULE_SO, default target/release/'s module
#   SHIPPER  TEST_NGINX_SHIPPER, else SHIPPER_BIN, default target/release/tracker-shipper
#   passes, failures   the counters of ok, not_ok and summary (0)
# (scripts/test.sh exports the TEST_NGINX_* variables; see export_test_env there.)
# shellcheck disable=SC2034  # the variables are for the scripts that source this file

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
NGINX=${TEST_NGINX_BINARY:-/usr/sbin/nginx}
MODULE=${TEST_NGINX_LOAD_MODULES:-${MODULE_SO:-$root/target/release/libngx_http_tracker_module.so}}
SHIPPER=${TEST_NGINX_SHIPPER:-${SHIPPER_BIN:-$root/target/release/tracker-shipper}}
passes=0
failures=0

# Prints "ok - <text>" and counts a pass.
ok() { echo "ok - $*"; passes=$((passes + 1)); }

# Prints "not ok - <text>" and counts a failure.
not_ok() { echo "not ok - $*"; failures=$((failures + 1)); }

# Prints "$1: N passed, N failed"; fails if any check failed.
summary() { echo "$1: $passes passed, $failures failed"; [ "$failures" -eq 0 ]; }

# Copies stdin to stdout with every line prefixed "#   " (a TAP diagnostic).
diag() { sed 's/^/#   /'; }

# Prints a free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Whether something accepts TCP connections on 127.0.0.1:$1 (a bare connection: nothing logged).
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits until "${@:2}" succeeds, at most $1 seconds (polls every 0.1 s); fails on timeout.
wait_for() {
    local secs=$1; shift
    local deadline=$((SECONDS + secs))
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# Sends signal $1 to each non-empty pid of the rest, quietly; never fails (for EXIT traps).
kill_quiet() {
    local sig=$1 pid; shift
    for pid in "$@"; do
        if [ -n "$pid" ]; then kill "-$sig" "$pid" 2>/dev/null || true; fi
    done
}

# Starts nginx with prefix $1 and config file $2 (it daemonizes: returns once it listens).
nginx_start() { "$NGINX" -p "$1" -c "$2"; }

# Sends signal $2 (default QUIT) to the nginx of pid file $1 and waits at most $3 seconds
# (default 10) for it to remove the pid file; fails if the signal could not be sent.
nginx_stop() {
    local pidfile=$1 sig=${2:-QUIT} secs=${3:-10}
    kill "-$sig" "$(cat "$pidfile")" || return
    wait_for "$secs" test ! -f "$pidfile" || true
}

# Prints the main context of an nginx.conf loading the module: $1 worker processes, error log
# $2 (level notice), pid file $3, $4 connections per worker (default 1024).
conf_main() {
    cat <<CONF
load_module $MODULE;
worker_processes $1;
error_log $2 notice;
pid $3;
events { worker_connections ${4:-1024}; }
CONF
}

# Prints the five tracking locations the scripts serve: /i /c /cv /v, and /b (custom type signup).
conf_tracker_locations() {
    cat <<'CONF'
        location = /i  { tracker impression; }
        location = /c  { tracker click; }
        location = /cv { tracker conversion; }
        location = /v  { tracker video; }
        location = /b  { tracker signup response=empty; }
CONF
}

# Prints the log_format "e2e" that t/e2e/check_events.py reads: event id, status, request URI.
conf_e2e_log_format() {
    cat <<'CONF'
    log_format e2e '$tracker_event_id $status $request_uri';
CONF
}

# Writes to $1 the three campaigns the requests of t/e2e/load.lua name (one of them paused).
write_e2e_campaigns() {
    cat >"$1" <<'JSON'
[
  {"id": "summer-sale", "status": "active", "landing_url": "https://shop.example.com/s?pub={dim.publisher}&click={click_id}"},
  {"id": "app-install", "status": "active", "landing_url": "https://apps.example.com/i?c={campaign}"},
  {"id": "winter-teaser", "status": "paused", "landing_url": "https://shop.example.com/w"}
]
JSON
}

# Prints wrk log $1's summary lines (requests, non-2xx, socket errors) as "#   wrk: " diagnostics;
# fails if it has none.
wrk_summary() { grep -E 'requests in|Non-2xx|Socket errors' "$1" | sed 's/^/#   wrk: /'; }

# Prints the [alert], [crit] and [emerg] lines of nginx error log $1; fails if there are none.
log_alerts() { grep -E '\[(alert|crit|emerg)\]' "$1"; }
