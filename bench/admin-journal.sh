#!/usr/bin/env bash
# Admin changes versus tracking on the same worker (issue 22; figures in docs/performance.md,
# "Admin changes"). Not a test: it prints figures, it asserts none.
#
#   bash bench/admin-journal.sh [CAMPAIGNS [SECS [RATE]]]
#
# For each module to measure (MODULES="label=path.so ...", default this tree's release build
# as "journal"): nginx with ONE worker, CAMPAIGNS campaigns in the file (default 200000, zone
# $ZONE, default 512m), then bench/admin_latency.py: SECS seconds (default 30) of pixels alone, then SECS of
# pixels while PUTs arrive at RATE per second (default 50). Prints one JSON line per module.
# To compare with the whole-file write-through of before, build main and pass it, e.g.
#   MODULES="main=/tmp/main.so journal=target/release/libngx_http_tracker_module.so"
# Everything listens on 127.0.0.1 and is stopped at the end.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
N=${1:-200000}
SECS=${2:-30}
RATE=${3:-50}
ZONE=${ZONE:-512m}   # 1g for a million campaigns
NGINX=${TEST_NGINX_BINARY:-/usr/sbin/nginx}
MODULES=${MODULES:-journal=$root/target/release/libngx_http_tracker_module.so}
tmp=$(mktemp -d /tmp/tracker-admin-bench.XXXXXX)
# The ring in tmpfs, as docs/directives.md advises: a ring file on ext4 makes the pixel's
# writes into its mapping wait for the filesystem's journal commits, which the admin changes'
# fdatasyncs trigger (measured: pixel max 140 ms at 1M campaigns with the ring in /tmp).
ring=/dev/shm/tracker-admin-bench-$$.ring
pidfile=$tmp/nginx.pid
stop() {
    if [ -f "$pidfile" ]; then kill -QUIT "$(cat "$pidfile")" 2>/dev/null || true; fi
    for _ in $(seq 50); do [ -f "$pidfile" ] || break; sleep 0.1; done
}
trap 'stop; rm -rf "$tmp" "$ring"' EXIT

python3 - "$tmp/campaigns.json" "$N" <<'PY'
import json, sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write("[\n")
    for i in range(n):
        c = {"id": f"c{i:07d}", "status": "active",
             "landing_url": f"https://shop.example.com/landing/{i}?k={{click_id}}&src={{dim.pub}}",
             "publishers": ["site1", "site2"], "daily_budget": 100, "price_per_mille": 2.5}
        f.write(("  " if i == 0 else ",\n  ") + json.dumps(c))
    f.write("\n]\n")
PY
cp "$tmp/campaigns.json" "$tmp/campaigns.orig"
echo "# $N campaigns ($(du -h "$tmp/campaigns.json" | cut -f1)), $RATE PUT/s for $SECS s, 1 worker, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

for m in $MODULES; do
    label=${m%%=*}
    so=${m#*=}
    cp "$tmp/campaigns.orig" "$tmp/campaigns.json"
    rm -f "$tmp"/campaigns.json.journal*
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    user=""; [ "$(id -u)" -eq 0 ] && user="user root;"
    cat >"$tmp/nginx.conf" <<CONF
load_module $so;
$user
worker_processes 1;
error_log $tmp/error.log notice;
pid $pidfile;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $tmp/body;
    keepalive_requests 10000000;
    tracker_ring $ring 64m;
    tracker_campaigns $tmp/campaigns.json zone=campaigns:$ZONE;
    server {
        listen 127.0.0.1:$port;
        location = /i { tracker impression; }
        location /a { tracker_admin; }
    }
}
CONF
    "$NGINX" -p "$tmp/" -c "$tmp/nginx.conf"
    for _ in $(seq 1200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    printf '%s ' "$label"
    python3 "$here/admin_latency.py" "$port" "$SECS" "$SECS" "$RATE"
    stop
done
