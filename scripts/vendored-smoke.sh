#!/usr/bin/env bash
# Smoke test of the vendored build: builds the module with --features vendored
# (scripts/build.sh --vendored), starts the nginx that nginx-sys built from nginx-src with a
# minimal config that loads it and serves `location = /i { tracker impression; }` on
# 127.0.0.1 (a free port), requests /i with curl, checks for 200 and the 43-byte GIF, and
# stops nginx. Everything runs in a temporary directory that is removed afterwards
# (VENDORED_SMOKE_KEEP=1 keeps it).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "${VENDORED_SMOKE_NO_BUILD:-}" != 1 ]; then
    bash "$ROOT/scripts/build.sh" --vendored
fi
[ -f "$VENDORED_TARGET_DIR/paths.env" ] || die "no $VENDORED_TARGET_DIR/paths.env: run bash scripts/build.sh --vendored"
# shellcheck disable=SC1091
source "$VENDORED_TARGET_DIR/paths.env"
[ -x "$VENDORED_NGINX" ] || die "vendored nginx $VENDORED_NGINX is missing"
[ -f "$VENDORED_MODULE" ] || die "vendored module $VENDORED_MODULE is missing"

header "vendored smoke: $("$VENDORED_NGINX" -v 2>&1) + $(basename "$VENDORED_MODULE")"

work=$(mktemp -d /tmp/tracker-vendored.XXXXXX)
port=$(perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 0, Listen => 1, ReuseAddr => 1)->sockport')
pidfile=$work/logs/nginx.pid

cleanup() {
    if [ -s "$pidfile" ]; then
        local pid
        pid=$(cat "$pidfile")
        kill -QUIT "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    if [ "${VENDORED_SMOKE_KEEP:-}" = 1 ]; then
        echo "kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

mkdir -p "$work/logs" "$work/conf"
cat >"$work/conf/nginx.conf" <<EOF
load_module $VENDORED_MODULE;
worker_processes 1;
error_log $work/logs/error.log notice;
pid $pidfile;
events { worker_connections 64; }
http {
    access_log off;
    tracker_ring $work/events.ring 1m;
    server {
        listen 127.0.0.1:$port;
        location = /i { tracker impression; }
        location / { return 404; }
    }
}
EOF

fail() {
    echo "not ok - $*"
    echo "--- error.log:"; tail -n 30 "$work/logs/error.log" 2>/dev/null || true
    exit 1
}

"$VENDORED_NGINX" -p "$work" -c "$work/conf/nginx.conf" -t >"$work/nginx-t.log" 2>&1 \
    || { cat "$work/nginx-t.log"; fail "nginx -t with the vendored module"; }
"$VENDORED_NGINX" -p "$work" -c "$work/conf/nginx.conf" || fail "vendored nginx did not start"
for _ in $(seq 50); do
    [ -s "$pidfile" ] && curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.1
done

status=$(curl -sS -o "$work/body" -D "$work/headers" -w '%{http_code}' \
    "http://127.0.0.1:$port/i?cid=smoke&pub=vendored") || fail "curl failed"
size=$(stat -c %s "$work/body")
magic=$(head -c 6 "$work/body")
ctype=$(grep -i '^content-type:' "$work/headers" | tr -d '\r' | awk '{print $2}')

passed=0
check() { # $1 = description, $2.. = test
    local what=$1; shift
    if "$@"; then echo "ok - $what"; passed=$((passed + 1)); else fail "$what"; fi
}
check "status 200 (got $status)" [ "$status" = 200 ]
check "Content-Type image/gif (got $ctype)" [ "$ctype" = image/gif ]
check "a 43-byte body (got $size)" [ "$size" = 43 ]
check "the body is a GIF89a" [ "$magic" = GIF89a ]
if grep -E '\[(alert|crit|emerg)\]' "$work/logs/error.log"; then
    fail "alerts in the error log"
fi
echo "vendored-smoke: $passed passed, 0 failed"
