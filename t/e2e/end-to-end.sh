#!/usr/bin/env bash
# End-to-end test: nginx with the module (2 workers) and the shipper writing files, on
# 127.0.0.1 only. Phase 1: 100,000 requests of every type; the files must then hold exactly one
# event per served request, by id, with the right fields. Phase 2: the same while the shipper
# is killed with SIGKILL several times and restarted: still exactly one event per request.
# The ground truth is nginx's access log, which records $tracker_event_id for every request.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
NGINX=${TEST_NGINX_BINARY:-/usr/sbin/nginx}
MODULE=${TEST_NGINX_LOAD_MODULES:-$root/target/release/libngx_http_tracker_module.so}
SHIPPER=${TEST_NGINX_SHIPPER:-$root/target/release/tracker-shipper}
REQUESTS=${E2E_REQUESTS:-100000}
KILLS=${E2E_SHIPPER_KILLS:-5}

work=$(mktemp -d /tmp/tracker-e2e.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
shipper_pid=""
failures=0
passes=0

cleanup() {
    [ -n "$shipper_pid" ] && kill -9 "$shipper_pid" 2>/dev/null || true
    [ -f "$work/nginx.pid" ] && kill -TERM "$(cat "$work/nginx.pid")" 2>/dev/null || true
    sleep 0.3
    if [ -z "${E2E_KEEP:-}" ]; then rm -rf "$work"; else echo "kept $work"; fi
}
trap cleanup EXIT

cat > "$work/campaigns.json" <<'JSON'
[
  {"id": "summer-sale", "status": "active", "landing_url": "https://shop.example.com/s?pub={dim.publisher}&click={click_id}"},
  {"id": "app-install", "status": "active", "landing_url": "https://apps.example.com/i?c={campaign}"},
  {"id": "winter-teaser", "status": "paused", "landing_url": "https://shop.example.com/w"}
]
JSON

write_conf() { # $1 = phase name
    mkdir -p "$work/$1/logs"
    cat > "$work/$1/nginx.conf" <<CONF
load_module $MODULE;
worker_processes 2;
error_log $work/$1/logs/error.log notice;
pid $work/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    tracker_ring $work/$1/events.ring 64m;
    tracker_campaigns $work/campaigns.json zone=campaigns_$1:1m;
    log_format e2e '\$tracker_event_id \$status \$request_uri';
    server {
        listen 127.0.0.1:$port;
        access_log $work/$1/logs/access.log e2e;
        tracker_dimension publisher \$arg_pub;
        tracker_dimension placement \$arg_plc;
        tracker_dimension n \$arg_n;
        location = /i  { tracker impression; }
        location = /c  { tracker click; }
        location = /cv { tracker conversion; }
        location = /v  { tracker video; }
        location = /b  { tracker signup response=empty; }
    }
}
CONF
}

start_shipper() { # $1 = phase
    "$SHIPPER" --ring "$work/$1/events.ring" --sink file --dir "$work/$1/events" \
        --flush-interval-ms 200 >>"$work/$1/shipper.log" 2>&1 &
    shipper_pid=$!
}

phase() { # $1 = name, $2 = shipper kills during the load
    local name=$1 kills=$2
    echo "# e2e phase $name: $REQUESTS requests, $kills shipper kills"
    write_conf "$name"
    "$NGINX" -p "$work/$name" -c "$work/$name/nginx.conf"
    start_shipper "$name"
    TRACKER_REQUESTS_PER_THREAD=$((REQUESTS / 2)) wrk -t2 -c32 -d120s -s "$here/load.lua" \
        "http://127.0.0.1:$port" >"$work/$name/wrk.log" 2>&1 &
    local wrk_pid=$! killed=0 deadline=$((SECONDS + 180))
    # wrk's threads stop after their share of requests, but wrk itself waits out -d: stop it
    # (SIGINT prints its summary) once the access log shows the requests were served.
    while kill -0 "$wrk_pid" 2>/dev/null; do
        sleep 0.$((RANDOM % 3 + 1))
        if [ "$(wc -l <"$work/$name/logs/access.log")" -ge "$REQUESTS" ] || [ "$SECONDS" -ge "$deadline" ]; then
            kill -INT "$wrk_pid" 2>/dev/null || true
            break
        fi
        if [ "$killed" -lt "$kills" ]; then
            kill -9 "$shipper_pid"; wait "$shipper_pid" 2>/dev/null || true
            killed=$((killed + 1))
            start_shipper "$name"
        fi
    done
    wait "$wrk_pid" || true
    grep -E 'requests in|Non-2xx|Socket errors' "$work/$name/wrk.log" | sed 's/^/#   wrk: /'
    # Graceful stop: the shipper commits what it read; then drain what is left.
    kill -TERM "$shipper_pid"; wait "$shipper_pid" || { echo "# shipper exit status $? after SIGTERM"; failures=$((failures + 1)); }
    shipper_pid=""
    kill -QUIT "$(cat "$work/nginx.pid")"
    for _ in $(seq 100); do [ -f "$work/nginx.pid" ] || break; sleep 0.1; done
    "$SHIPPER" --ring "$work/$name/events.ring" --sink file --dir "$work/$name/events" --once >>"$work/$name/shipper.log" 2>&1
    if [ "$killed" -lt "$kills" ]; then
        echo "# only $killed of $kills shipper kills happened during the load"
        failures=$((failures + 1))
    fi
    local served
    served=$(grep -vc '^- ' "$work/$name/logs/access.log" || true)
    if [ "$served" -lt $((REQUESTS * 99 / 100)) ]; then
        echo "not ok - phase $name: only $served requests served"
        failures=$((failures + 1))
    elif python3 "$here/check_events.py" "$work/$name/logs/access.log" "$work/$name/events"; then
        echo "ok - phase $name: one event per request"
        passes=$((passes + 1))
    else
        echo "not ok - phase $name"
        failures=$((failures + 1))
        tail -n 20 "$work/$name/shipper.log" "$work/$name/logs/error.log" | sed 's/^/#   /'
    fi
    if grep -E '\[(alert|crit|emerg)\]' "$work/$name/logs/error.log"; then
        echo "not ok - phase $name: alerts in the error log"
        failures=$((failures + 1))
    fi
}

phase steady 0
phase shipper-killed "$KILLS"
echo "e2e: $passes passed, $failures failed"
[ "$failures" -eq 0 ]
