#!/usr/bin/env bash
# Flood test: nginx with the module (2 workers) on 127.0.0.1 only, hit by wrk with several
# hundred thousand requests (FLOOD_REQUESTS, default 300,000) that mix valid tracking requests
# with malformed ones: invalid campaign ids, query strings over tracker_limits query= (4 KB) and
# up to large_client_header_buffers (and over it), arguments over args= (64) and by thousands,
# each limit probed on both sides (t/e2e/flood_load.lua's "edge" kind), several invalid fields
# at once, invalid percent-encoding, binary garbage in values and headers, 20 KB User-Agents,
# POST bodies (Content-Length at and over body= 64k, chunked too) on the postback location,
# other methods, control bytes in the request line, Content-Length with Transfer-Encoding, and
# requests to the limit_req / limit_conn example locations of docs/security.md. The main
# locations have the defaults (tracker_invalid reject, tracker_limits query=4k args=64 value=1k
# body=64k); a third of the malformed requests go instead to their flag-mode twins (/if /cf /cvf
# /vf: tracker_invalid flag, tracker_limits query=64k args=4096), which store them flagged with
# values cut. Each request carries X-Kind and X-N headers; the valid ones a unique dimension n.
#
# Then, with nginx's access log ($tracker_event_id, status, Content-Length and arguments of every
# request) as the ground truth:
#   - flood_limit.py: limit_conn and limit_req refuse requests (503, and 429 as configured)
#     deterministically, and the refused requests reach no tracker;
#   - nginx still answers, its workers are the ones it started with, and the error log has no
#     [alert], [crit], [emerg] and no "exited on signal";
#   - nginx is stopped, the ring drained once (tracker-shipper --once, file sink), and
#     flood_check.py computes for every access log line what the module must have done, with
#     the rules of docs/directives.md (tracker_limits, tracker_invalid) and
#     docs/event-schema.md: either refuse it, for the first failing check in the handler's order
#     (body, query length, argument count, campaign id, click id, value, video event and watch
#     time, dimensions), with no event and the reason's status (413 for the body, else 200 with
#     the GIF on GIF locations, 400 on the others), or store exactly one event with exactly the
#     fields and status the request implies (flag mode: invalid campaign ids stored as "" with
#     invalid_campaign, cut values flagged truncated, invalid values left out and flagged...).
#     So every valid request is stored exactly once and no refused one is; no event lacks its
#     request; the refusals per reason in the log equal the ring header's invalid counters
#     (tracker-shipper stats), and every reason occurs; no dead letters; nothing dropped.
# Takes about 30-50 s on 2 cores. FLOOD_KEEP=1 keeps the work directory; FLOOD_SEED varies the mix.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUESTS=${FLOOD_REQUESTS:-300000}
SEED=${FLOOD_SEED:-1}
UA="Mozilla/5.0 (X11; Linux x86_64) flood"

work=$(mktemp -d /var/tmp/tracker-flood.XXXXXX)
port=$(free_port)
wrk_pid=""

cleanup() {
    kill_quiet KILL "$wrk_pid"
    if [ -f "$work/nginx.pid" ]; then nginx_stop "$work/nginx.pid" TERM 5 2>/dev/null || true; fi
    if [ -z "${FLOOD_KEEP:-}" ]; then rm -rf "$work"; else echo "# kept $work"; fi
}
trap cleanup EXIT

mkdir -p "$work/logs" "$work/tmp" "$work/events"
cat > "$work/campaigns.json" <<'JSON'
[
  {"id": "camp-ok", "status": "active", "landing_url": "https://shop.example.com/l?pub={dim.pub}&c={click_id}"},
  {"id": "camp-paused", "status": "paused", "landing_url": "https://shop.example.com/paused"}
]
JSON

cat > "$work/nginx.conf" <<CONF
$(conf_main 2 "$work/logs/error.log" "$work/nginx.pid")
http {
    access_log off;
    client_body_temp_path $work/tmp/body;
    proxy_temp_path $work/tmp/proxy;
    fastcgi_temp_path $work/tmp/fastcgi;
    uwsgi_temp_path $work/tmp/uwsgi;
    scgi_temp_path $work/tmp/scgi;

    # Room for every event of the run: the ring is drained once, after the load.
    tracker_ring $work/events.ring 512m;
    tracker_campaigns $work/campaigns.json zone=flood_campaigns:1m;
    # Bot classification is tested by t/170-bots.t; flood_check.py predicts every other flag.
    tracker_bots off;

    # The ground truth: every request, with its event id (or "-"), its Content-Length, its
    # arguments as they came, and for the "binval" kind the random User-Agent and Referer it sent.
    map \$http_x_kind \$flood_ua { binval \$http_user_agent; default ""; }
    map \$http_x_kind \$flood_ref { binval \$http_referer; default ""; }
    log_format flood '\$tracker_event_id \$status "\$request_method" "\$uri" "\$http_x_kind" "\$http_x_n" "\$flood_ua" "\$flood_ref" "\$http_content_length" "\$args"';

    # The limit_req / limit_conn example of docs/security.md.
    limit_req_zone  \$binary_remote_addr zone=flood_req:1m rate=50r/s;
    limit_conn_zone \$binary_remote_addr zone=flood_conn:1m;

    server {
        listen 127.0.0.1:$port reuseport;
        access_log $work/logs/access.log flood;
        large_client_header_buffers 4 32k;
        keepalive_requests 1000000;

        tracker_dimension pub  \$arg_pub;
        tracker_dimension n    \$arg_n;
        tracker_dimension xn   \$http_x_n;
        tracker_dimension kind \$http_x_kind;
        tracker_fallback_url "https://fallback.example.com/f?c={campaign}&k={click_id}";

$(conf_tracker_locations)
        location = /c0  { tracker click; tracker_fallback_url off; }
        # The old behaviour, for a third of the malformed requests: stored flagged, values cut;
        # query strings up to 64 KB and 4,096 arguments (the body limit stays 64k).
        location = /if  { tracker impression; tracker_invalid flag; tracker_limits query=64k args=4096; }
        location = /cf  { tracker click; tracker_invalid flag; tracker_limits query=64k args=4096; }
        location = /cvf { tracker conversion; tracker_invalid flag; tracker_limits query=64k args=4096; }
        location = /vf  { tracker video; tracker_invalid flag; tracker_limits query=64k args=4096; }
        location = /lim {
            limit_req zone=flood_req nodelay;
            limit_req_status 429;
            tracker lim_req;
        }
        location = /limc {
            limit_conn flood_conn 1;
            tracker lim_conn;
        }
    }
}
CONF

nginx_start "$work" "$work/nginx.conf"
wait_for 5 port_open "$port" || true
master=$(cat "$work/nginx.pid")
workers_of() { pgrep -P "$master" -f 'worker process' | sort | tr '\n' ' '; }
for _ in $(seq 50); do [ "$(workers_of | wc -w)" -ge 2 ] && break; sleep 0.1; done
workers_before=$(workers_of)

echo "# flood: $REQUESTS requests on 127.0.0.1:$port (2 nginx workers, wrk 2 threads x 16 connections, seed $SEED)"
t0=$SECONDS
mkdir -p "$work/done"
FLOOD_PER_THREAD=$((REQUESTS / 2)) FLOOD_SEED=$SEED FLOOD_DONE_DIR="$work/done" \
    wrk -t2 -c16 -d120s -s "$here/flood_load.lua" "http://127.0.0.1:$port" >"$work/wrk.log" 2>&1 &
wrk_pid=$!
deadline=$((SECONDS + 100))
# wrk's threads stop after their share (each leaves a file in done/), but wrk itself waits out
# -d: stop it (SIGINT prints its summary) once both are done.
while kill -0 "$wrk_pid" 2>/dev/null; do
    sleep 0.2
    if [ "$(find "$work/done" -type f | wc -l)" -ge 2 ] || [ "$SECONDS" -ge "$deadline" ]; then
        sleep 0.2
        kill -INT "$wrk_pid" 2>/dev/null || true
        break
    fi
done
wait "$wrk_pid" || true
wrk_pid=""
load_s=$((SECONDS - t0))
wrk_summary "$work/wrk.log" || true
logged=$(wc -l <"$work/logs/access.log")
if [ "$logged" -ge "$REQUESTS" ]; then
    ok "$logged requests served in ${load_s}s"
else
    not_ok "only $logged of $REQUESTS requests in the access log after ${load_s}s"
fi

# limit_conn / limit_req, deterministically.
if python3 "$here/flood_limit.py" "$port" | diag; then
    ok "limit_conn refuses with 503 and limit_req with 429 (flood_limit.py)"
else
    not_ok "limit_conn / limit_req (flood_limit.py)"
fi

# nginx still answers, with the workers it started with.
answer=$(curl -s -o "$work/final.gif" -w '%{http_code} %{size_download}' -A "$UA" -H 'X-Kind: i' -H 'X-N: 900000099' \
    "http://127.0.0.1:$port/i?cid=camp-ok&pub=news&n=900000099" || true)
if [ "$answer" = "200 43" ]; then ok "nginx still answers (200, 43-byte GIF)"; else not_ok "nginx answer after the flood: $answer"; fi
workers_after=$(workers_of)
if [ "$workers_before" = "$workers_after" ]; then
    ok "the same 2 workers as at start ($workers_after)"
else
    not_ok "workers changed: before $workers_before, after $workers_after"
fi
if grep -qE '\[(alert|crit|emerg)\]|exited on signal' "$work/logs/error.log"; then
    not_ok "alert, crit, emerg or a crashed worker in the error log"
    grep -E '\[(alert|crit|emerg)\]|exited on signal' "$work/logs/error.log" | head -5 | diag
else
    ok "no [alert], [crit], [emerg] or \"exited on signal\" in the error log"
fi

# Stop nginx, drain the ring once.
nginx_stop "$work/nginx.pid"
t1=$SECONDS
if "$SHIPPER" --ring "$work/events.ring" --sink file --dir "$work/events" --once >"$work/shipper.log" 2>&1; then
    ok "shipper --once drained the ring in $((SECONDS - t1))s"
else
    not_ok "shipper --once failed"; tail -n 20 "$work/shipper.log" | diag
fi
"$SHIPPER" --ring "$work/events.ring" stats >"$work/stats.json"
if python3 "$here/flood_check.py" "$work/logs/access.log" "$work/events" "$work/stats.json" | diag; then
    ok "every request the module answered has exactly its event, the others none; no dead letters, no drops"
else
    not_ok "flood_check.py"
fi
echo "flood: $((SECONDS - t0))s, $failures failed"
[ "$failures" -eq 0 ]
