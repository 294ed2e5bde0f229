#!/usr/bin/env bash
# The live dashboard (`tracker_stats`, ?format=html, docs/stats.md) in headless Chromium:
# nginx with the module (2 workers) on 127.0.0.1, a known set of tracking requests, then
#
#   1. the page as Chromium renders it after 3.5 s of (virtual) time (--dump-dom): it fetched
#      the JSON every second, and every number it shows (campaign count, events written and
#      dropped, ring fill, the ring's per-type table, every campaign's counters and spend)
#      equals the JSON that curl gets before and after (no traffic in between);
#   2. a screenshot of the page: a PNG of the window's size that is not blank (kept with
#      E2E_KEEP=1, to look at);
#   3. the page under load (wrk on the pixel): it shows non-zero rates per second (and a second
#      screenshot, dashboard-load.png, is kept with the first).
#
# Chromium is Debian's `chromium` (scripts/deps.sh installs it). If it is missing, this script
# tries to install it and SKIPs (exit 0) with a clear message only if that fails. Chromium
# runs with its own profile in the temporary directory and a dead proxy for anything that is
# not loopback, so it reaches nothing but this nginx.
# Env: TEST_NGINX_BINARY, TEST_NGINX_LOAD_MODULES (as scripts/test.sh exports them; defaults:
# /usr/sbin/nginx and target/release/), E2E_KEEP=1 keeps the temporary directory.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WIDTH=1280
HEIGHT=900

find_chromium() {
    local c
    for c in chromium chromium-browser; do
        if command -v "$c" >/dev/null 2>&1; then command -v "$c"; return 0; fi
    done
    return 1
}
CHROMIUM=$(find_chromium || true)
if [ -z "$CHROMIUM" ]; then
    echo "# dashboard: chromium is not installed; trying apt-get install chromium"
    if [ "$(id -u)" -eq 0 ]; then
        { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }; } \
            >/dev/null 2>&1 || true
    fi
    CHROMIUM=$(find_chromium || true)
    if [ -z "$CHROMIUM" ]; then
        echo "SKIP: t/e2e/dashboard.sh: Debian's chromium cannot be installed here (apt-get install chromium failed); the dashboard was not tested in a browser"
        exit 0
    fi
fi

work=$(mktemp -d /tmp/tracker-dashboard.XXXXXX)
port=$(free_port)
base="http://127.0.0.1:$port"
load_pid=""

cleanup() {
    kill_quiet TERM "$load_pid"
    if [ -f "$work/logs/nginx.pid" ]; then
        local pid
        pid=$(cat "$work/logs/nginx.pid")
        nginx_stop "$work/logs/nginx.pid" QUIT 5 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
    fi
    if [ -z "${E2E_KEEP:-}" ]; then rm -rf "$work"; else echo "# kept $work (screenshot: $work/dashboard.png)"; fi
}
trap cleanup EXIT

result() { # $1 = exit status of a check, $2 = what
    if [ "$1" -eq 0 ]; then passes=$((passes + 1)); else not_ok "$2"; fi
}

mkdir -p "$work/logs"
cat > "$work/campaigns.json" <<'JSON'
[
  {"id": "summer-sale", "status": "active", "landing_url": "https://shop.example.com/s?click={click_id}",
   "price_per_click": 0.25, "price_per_mille": 2, "price_per_conversion": 1.5},
  {"id": "app-install", "status": "active", "landing_url": "https://apps.example.com/i"},
  {"id": "winter-teaser", "status": "paused", "landing_url": "https://shop.example.com/w"}
]
JSON
cat > "$work/nginx.conf" <<CONF
$(conf_main 2 "$work/logs/error.log" "$work/logs/nginx.pid")
http {
    access_log off;
    client_body_temp_path $work/tmp;
    tracker_ring $work/events.ring 64m;
    tracker_campaigns $work/campaigns.json zone=campaigns:1m;
    server {
        listen 127.0.0.1:$port;
        keepalive_requests 1000000;
$(conf_tracker_locations)
        location = /tracker/stats { tracker_stats; }
    }
}
CONF
nginx_start "$work/" "$work/nginx.conf"
wait_for 5 curl -s -o /dev/null "$base/tracker/stats" || true

# --- a known set of tracking requests ----------------------------------------------------------
fire() { # $1 = count, $2 = path and query
    local urls=()
    for _ in $(seq "$1"); do urls+=("$base$2"); done
    # A browser's User-Agent: curl's would be flagged bot and not charged (tracker_bots).
    curl -s -A 'Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0' "${urls[@]}" >/dev/null
}
fire 25 '/i?cid=summer-sale'
fire 7  '/c?cid=summer-sale'
fire 3  '/cv?cid=summer-sale&click_id=abc&value=20'
fire 4  '/i?cid=app-install'
fire 3  '/v?cid=app-install&event=q1'
fire 1  '/v?cid=app-install&event=complete'
fire 5  '/i?cid=winter-teaser'
fire 2  '/b?cid=summer-sale'
fire 2  '/c?cid=../x'
fire 1  '/v?cid=app-install&event=bogus'
curl -s "$base/tracker/stats" > "$work/before.json"
written=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ring"]["written"]["total"])' "$work/before.json")
[ "$written" -eq 50 ]; result $? "50 events written before the browser (ring written total $written)"

chrome() { # chromium with our flags, bounded in time; the rest of the arguments are its own
    timeout 90 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
        --user-data-dir="$work/chrome-profile" --no-first-run --no-default-browser-check \
        --disable-background-networking --disable-component-update --disable-sync \
        --disable-extensions --disable-default-apps --mute-audio --hide-scrollbars \
        --proxy-server="http://127.0.0.1:9" --window-size="$WIDTH,$HEIGHT" "$@" \
        2>>"$work/chromium.log"
}

# --- 1. the numbers the page shows = the JSON --------------------------------------------------
page="$base/tracker/stats?format=html"
chrome --virtual-time-budget=3500 --dump-dom "$page" > "$work/dom.html" || true
curl -s "$base/tracker/stats" > "$work/after.json"
python3 - "$work/before.json" "$work/after.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for d in (a, b):
    d.pop("time")
sys.exit(0 if a == b else "the counters changed while the browser ran")
PY
result $? "no counter changed while the browser ran"
# The banker's counters behind the page: the requests above, priced as in campaigns.json.
python3 - "$work/after.json" <<'PY'
import json, sys
items = {it["id"]: it for it in json.load(open(sys.argv[1]))["campaigns"]["items"]}
want = {
    "summer-sale": {"impressions": 25, "clicks": 7, "conversions": 3,
                    "spend_micros": 7 * 250_000 + 25 * 2_000 + 3 * 1_500_000, "value_micros": 60_000_000},
    "app-install": {"impressions": 4, "video_completes": 1, "spend_micros": 0},
    "winter-teaser": {"impressions": 5, "rejected": 5, "spend_micros": 0},
}
bad = [f"{c} {k}: {items.get(c, {}).get(k)} != {v}" for c, kv in want.items() for k, v in kv.items()
       if items.get(c, {}).get(k) != v]
print("\n".join("#   " + b for b in bad))
sys.exit(1 if bad else 0)
PY
result $? "the JSON holds the banker's counters for the requests sent"
if [ -s "$work/dom.html" ]; then
    python3 "$here/check_dashboard.py" static "$work/dom.html" "$work/after.json" | sed 's/^/    /'
    result "${PIPESTATUS[0]}" "the page shows the JSON's numbers"
else
    result 1 "chromium dumped no DOM"
    tail -n 20 "$work/chromium.log" | diag
fi

# --- 2. a screenshot ---------------------------------------------------------------------------
(cd "$work" && chrome --virtual-time-budget=3500 --screenshot="$work/dashboard.png" "$page" >/dev/null) || true
if [ -s "$work/dashboard.png" ]; then
    python3 "$here/check_dashboard.py" png "$work/dashboard.png" "$WIDTH" "$HEIGHT" | sed 's/^/    /'
    result "${PIPESTATUS[0]}" "screenshot"
else
    result 1 "chromium wrote no screenshot"
    tail -n 20 "$work/chromium.log" | diag
fi

# --- 3. rates under load -----------------------------------------------------------------------
# Virtual time makes the page's one-second timers fire at once, so successive samples are
# milliseconds apart in real time: the load must be dense for every interval to see events.
rates_ok=1
for attempt in 1 2 3; do
    if command -v wrk >/dev/null 2>&1; then
        wrk -t1 -c4 -d10s "$base/i?cid=summer-sale" >"$work/wrk.log" 2>&1 &
    else
        (end=$((SECONDS + 10)); while [ $SECONDS -lt $end ]; do fire 20 '/i?cid=summer-sale'; done) &
    fi
    load_pid=$!
    sleep 1
    chrome --virtual-time-budget=5500 --dump-dom "$page" > "$work/dom-load.html" || true
    [ "$attempt" -gt 1 ] || (cd "$work" && chrome --virtual-time-budget=3500 --screenshot="$work/dashboard-load.png" "$page" >/dev/null) || true
    kill "$load_pid" 2>/dev/null || true
    wait "$load_pid" 2>/dev/null || true
    load_pid=""
    if python3 "$here/check_dashboard.py" rates "$work/dom-load.html" summer-sale > "$work/rates.txt"; then
        sed 's/^/    /' "$work/rates.txt"
        rates_ok=0
        break
    fi
    echo "# rates attempt $attempt:"; sed 's/^/#     /' "$work/rates.txt"
done
result "$rates_ok" "the page shows rates per second under load"

if log_alerts "$work/logs/error.log"; then
    result 1 "alerts in the error log"
fi
summary dashboard
