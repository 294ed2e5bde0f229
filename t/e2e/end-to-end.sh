#!/usr/bin/env bash
# End-to-end test: nginx with the module (2 workers) and the shipper writing files, on
# 127.0.0.1 only. Phase 1: 100,000 requests of every type; the files must then hold exactly one
# event per served request, by id, with the right fields. Phase 2: the same while the shipper
# is killed with SIGKILL several times and restarted: still exactly one event per request.
# The ground truth is nginx's access log, which records $tracker_event_id for every request.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUESTS=${E2E_REQUESTS:-100000}
KILLS=${E2E_SHIPPER_KILLS:-5}

work=$(mktemp -d /tmp/tracker-e2e.XXXXXX)
port=$(free_port)
shipper_pid=""

cleanup() {
    kill_quiet KILL "$shipper_pid"
    if [ -f "$work/nginx.pid" ]; then nginx_stop "$work/nginx.pid" TERM 5 2>/dev/null || true; fi
    if [ -z "${E2E_KEEP:-}" ]; then rm -rf "$work"; else echo "kept $work"; fi
}
trap cleanup EXIT

write_e2e_campaigns "$work/campaigns.json"

write_conf() { # $1 = phase name
    mkdir -p "$work/$1/logs"
    cat > "$work/$1/nginx.conf" <<CONF
$(conf_main 2 "$work/$1/logs/error.log" "$work/nginx.pid")
http {
    access_log off;
    tracker_ring $work/$1/events.ring 64m;
    tracker_campaigns $work/campaigns.json zone=campaigns_$1:1m;
$(conf_e2e_log_format)
    server {
        listen 127.0.0.1:$port;
        access_log $work/$1/logs/access.log e2e;
        tracker_dimension publisher \$arg_pub;
        tracker_dimension placement \$arg_plc;
        tracker_dimension n \$arg_n;
$(conf_tracker_locations)
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
    nginx_start "$work/$name" "$work/$name/nginx.conf"
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
    wrk_summary "$work/$name/wrk.log"
    # A fast machine serves the load before every kill happened: the rest are done now, while
    # the shipper is still draining what the load left in the ring.
    if [ "$killed" -lt "$kills" ]; then
        echo "# $((kills - killed)) of $kills shipper kills after the load (it outran them)"
    fi
    while [ "$killed" -lt "$kills" ]; do
        sleep 0.$((RANDOM % 3 + 1))
        kill -9 "$shipper_pid"; wait "$shipper_pid" 2>/dev/null || true
        killed=$((killed + 1))
        start_shipper "$name"
    done
    # A shipper just restarted needs a moment to install its signal handlers before the SIGTERM.
    sleep 1
    # Graceful stop: the shipper commits what it read; then drain what is left.
    kill -TERM "$shipper_pid"; wait "$shipper_pid" || { echo "# shipper exit status $? after SIGTERM"; failures=$((failures + 1)); }
    shipper_pid=""
    nginx_stop "$work/nginx.pid"
    "$SHIPPER" --ring "$work/$name/events.ring" --sink file --dir "$work/$name/events" --once >>"$work/$name/shipper.log" 2>&1
    local served
    served=$(grep -vc '^- ' "$work/$name/logs/access.log" || true)
    if [ "$served" -lt $((REQUESTS * 99 / 100)) ]; then
        not_ok "phase $name: only $served requests served"
    elif python3 "$here/check_events.py" "$work/$name/logs/access.log" "$work/$name/events"; then
        ok "phase $name: one event per request"
    else
        not_ok "phase $name"
        tail -n 20 "$work/$name/shipper.log" "$work/$name/logs/error.log" | diag
    fi
    if log_alerts "$work/$name/logs/error.log"; then
        not_ok "phase $name: alerts in the error log"
    fi
}

phase steady 0
phase shipper-killed "$KILLS"
summary e2e
