#!/usr/bin/env bash
# Throughput and worker-CPU benchmark of the tracker module against nginx baselines.
#
#   bash bench/run.sh                 # BENCH_ROUNDS=3 rounds of BENCH_SECONDS=5 s per case
#   BENCH_SHORT=1 bash bench/run.sh   # 1 round of 2 s (CI smoke)
#   BENCH_LATENCY=0 ...               # without the fixed-rate latency phase (oha)
#   BENCH_LATENCY_FRACTION=0.25 ...   # latency at a quarter of empty_gif's req/s (default 0.5)
#   BENCH_THROUGHPUT=0 BENCH_LATENCY_RATE=15000 ...   # the latency phase alone
#   BENCH_MODULE=/path/to/module.so   # another build of the module
#
# Starts Debian's /usr/sbin/nginx (worker_processes 1, its own prefix in a temp dir, config
# generated there) on 127.0.0.1:${BENCH_PORT:-18080} only, with these cases side by side:
#   empty_gif        location with empty_gif and access_log off (the limit)
#   empty_gif+log    empty_gif with a buffered access_log (buffer=64k) of args, UA, referer, IP
#   tracker_pixel    tracker impression (/i), the shipper draining the ring into files
#   tracker_click    tracker click (/c), shipper draining
#   tracker_pixel_noship / tracker_click_noship   the same with the shipper stopped
#   lua_pixel / lua_click   an OpenResty-style Lua peer (Debian's libnginx-mod-http-lua):
#                    args, campaign from a lua_shared_dict, cjson event, rpush to a shared queue
# Each case: wrk -t1 -c64 -d${BENCH_SECONDS}s, rounds interleaved, median reported.
# Then the latency phase: oha at a fixed rate of half empty_gif's median req/s
# (BENCH_LATENCY_RATE), BENCH_LATENCY_SECONDS (10; 2 short) per case and round, with its
# latency correction, the shipper running: p50/p90/p99/p99.9 per case, p99 as ratio to
# empty_gif's (latency.csv, latency-*.json). oha is built once into $TOOLS_DIR/oha by deps.sh.
# Measured per case: req/s, nginx worker CPU (utime+stime of /proc/<worker>/stat) per
# request, both as ratio to empty_gif, and for tracker cases the ring's `written` delta per
# request (for the Lua cases, the queue length delta). Results: bench/results/<timestamp>/
# (raw.csv, summary.csv, summary.json, chart.svg, table.txt, nginx.conf, logs).
# Everything started here is stopped on exit.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

BENCH="$ROOT/bench"
MODULE_SO=${BENCH_MODULE:-$MODULE_SO}   # another build of the module, e.g. to compare two trees
if [ "${BENCH_SHORT:-0}" = 1 ]; then
    SECONDS_PER=${BENCH_SECONDS:-2}; ROUNDS=${BENCH_ROUNDS:-1}
else
    SECONDS_PER=${BENCH_SECONDS:-5}; ROUNDS=${BENCH_ROUNDS:-3}
fi
PORT=${BENCH_PORT:-18080}
# Latency phase (oha at a fixed rate): BENCH_LATENCY=0 skips it.
LATENCY=${BENCH_LATENCY:-1}
if [ "${BENCH_SHORT:-0}" = 1 ]; then
    LAT_SECONDS=${BENCH_LATENCY_SECONDS:-2}; LAT_ROUNDS=${BENCH_LATENCY_ROUNDS:-1}
else
    LAT_SECONDS=${BENCH_LATENCY_SECONDS:-10}; LAT_ROUNDS=${BENCH_LATENCY_ROUNDS:-$ROUNDS}
fi
OHA="$TOOLS_DIR/oha/bin/oha"
LAT_FRACTION=${BENCH_LATENCY_FRACTION:-0.5}   # of empty_gif's median req/s
# BENCH_THROUGHPUT=0 skips the wrk phase (then BENCH_LATENCY_RATE gives the rate).
THROUGHPUT=${BENCH_THROUGHPUT:-1}
CONNS=${BENCH_CONNECTIONS:-64}
RING_SIZE=${BENCH_RING_SIZE:-512m}
NGINX=/usr/sbin/nginx
CAMPAIGNS="$ROOT/nginx-conf/campaigns.demo.json"

header "bench: dependencies"
bash "$BENCH/deps.sh"
[ "$LATENCY" = 1 ] && bash "$BENCH/deps.sh" oha
[ -f "$MODULE_SO" ] || die "$MODULE_SO is missing: run bash scripts/build.sh first"
[ -x "$SHIPPER_BIN" ] || die "$SHIPPER_BIN is missing: run bash scripts/build.sh first"
for m in ndk_http_module ngx_http_lua_module; do
    [ -f "/usr/lib/nginx/modules/$m.so" ] || die "/usr/lib/nginx/modules/$m.so missing"
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$BENCH/results/$STAMP"
mkdir -p "$OUT"
TMP=$(mktemp -d /tmp/nginx-tracker-bench.XXXXXX)
chmod 755 "$TMP"   # the worker (an unprivileged user) reads peer.lua
RING=/dev/shm/nginx-tracker-bench.$$.ring
NGINX_PID=""
SHIPPER_PID=""

cleanup() {
    set +e
    stop_shipper
    if [ -n "$NGINX_PID" ] && kill -0 "$NGINX_PID" 2>/dev/null; then
        kill -QUIT "$NGINX_PID"
        for _ in $(seq 50); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$NGINX_PID" 2>/dev/null && kill -KILL "$NGINX_PID"
    fi
    cp -f "$TMP/logs/error.log" "$OUT/nginx-error.log" 2>/dev/null
    cp -f "$TMP/shipper.log" "$OUT/shipper.log" 2>/dev/null
    rm -rf "$TMP" "$RING" "$RING.shipper.lock"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_shipper() {
    [ -n "$SHIPPER_PID" ] && return 0
    "$SHIPPER_BIN" --ring "$RING" --sink file --dir "$TMP/events" >>"$TMP/shipper.log" 2>&1 &
    SHIPPER_PID=$!
    sleep 0.3
    kill -0 "$SHIPPER_PID" 2>/dev/null || die "the shipper did not start (see $TMP/shipper.log)"
}
stop_shipper() {
    [ -n "$SHIPPER_PID" ] || return 0
    kill -TERM "$SHIPPER_PID" 2>/dev/null
    wait "$SHIPPER_PID" 2>/dev/null || true
    SHIPPER_PID=""
}
# ring counter NAME (written, read cursor...) from `tracker-shipper stats`
ring_stats() { "$SHIPPER_BIN" stats --ring "$RING"; }

header "bench: nginx config in $TMP"
mkdir -p "$TMP/logs" "$TMP/events"
cat >"$TMP/nginx.conf" <<CONF
# generated by bench/run.sh
load_module $MODULE_SO;
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;

worker_processes 1;
error_log $TMP/logs/error.log warn;
pid $TMP/logs/nginx.pid;

events { worker_connections 4096; }

http {
    access_log off;
    keepalive_requests 1000000;

    tracker_ring       $RING $RING_SIZE;
    tracker_campaigns  $CAMPAIGNS zone=campaigns:16m;

    log_format bench '\$remote_addr [\$time_local] "\$request" \$status \$body_bytes_sent '
                     'args="\$args" ref="\$http_referer" ua="\$http_user_agent" host=\$host';

    lua_shared_dict lua_campaigns 16m;
    lua_shared_dict events 1024m;
    init_by_lua_block {
        local cjson = require "cjson.safe"
        local f = assert(io.open("$CAMPAIGNS"))
        local list = assert(cjson.decode(f:read("*a")))
        f:close()
        local d = ngx.shared.lua_campaigns
        for _, c in ipairs(list) do
            d:set(c.id, c.status .. " " .. c.landing_url)
        end
    }
    init_worker_by_lua_block {
        math.randomseed(ngx.now() * 1000 + ngx.worker.pid())
    }

    server {
        listen 127.0.0.1:$PORT;
        server_name bench;

        tracker_campaign_id  \$arg_cid;
        tracker_dimension    publisher \$arg_pub;
        tracker_dimension    placement \$arg_plc;
        tracker_ip           anonymize;

        # (a) the limit
        location = /e { empty_gif; }
        # (b) a classic pixel: empty_gif + buffered access log of similar fields
        location = /l { empty_gif; access_log $TMP/logs/pixel.log bench buffer=64k; }
        # (c)/(d) the module
        location = /i { tracker impression; }
        location = /c { tracker click; tracker_fallback_url https://example.com/; }
        # (e) OpenResty-style peer
        location = /li { content_by_lua_file $TMP/peer.lua; }
        location = /lc { set \$peer_type click; content_by_lua_file $TMP/peer.lua; }
        # admin (not measured): queue length / drop of the Lua peer
        location = /_lua_queue {
            content_by_lua_block {
                local q = ngx.shared.events
                local n = q:llen("q") or 0
                if ngx.var.arg_flush then q:delete("q"); q:flush_expired() end
                ngx.say(n)
            }
        }
        location / { return 404; }
    }
}
CONF

cat >"$TMP/peer.lua" <<'LUA'
-- OpenResty-style tracker peer: what a Lua shop would write for the same job.
local cjson = require "cjson.safe"
local campaigns = ngx.shared.lua_campaigns
local queue = ngx.shared.events
local GIF = "GIF89a\1\0\1\0\128\0\0\0\0\0\255\255\255\33\249\4\1\0\0\0\0\44\0\0\0\0\1\0\1\0\0\2\2\68\1\0\59"

local args = ngx.req.get_uri_args(32)
local etype = ngx.var.peer_type or "impression"
local cid = args.cid
local flags
local c = type(cid) == "string" and campaigns:get(cid)
local landing
if not c then
    flags = { "unknown_campaign" }
else
    local status, url = c:match("^(%S+) (.*)$")
    if status ~= "active" then flags = { "inactive_campaign" } else landing = url end
end
local id = string.format("%08x%08x%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff),
                         math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
local ip = ngx.var.remote_addr:gsub("%.%d+$", ".0")
local ev = {
    v = 1, id = id, ts = math.floor(ngx.now() * 1000000), type = etype,
    campaign = cid, dims = { publisher = args.pub, placement = args.plc },
    ip = ip, ua = ngx.var.http_user_agent, referer = ngx.var.http_referer,
    host = ngx.var.host, flags = flags,
}
if etype == "click" then ev.click_id = id end

ngx.header["Cache-Control"] = "no-store, no-cache, must-revalidate, max-age=0"
ngx.header["Pragma"] = "no-cache"
ngx.header["Expires"] = "Thu, 01 Jan 1970 00:00:01 GMT"

if etype == "click" then
    ev.status = landing and 302 or 302
    local ok = queue:rpush("q", cjson.encode(ev))
    if not landing then return ngx.redirect("https://example.com/", 302) end
    local url = landing:gsub("{([%w_.]+)}", function(m)
        if m == "click_id" then return id end
        if m == "campaign" then return ngx.escape_uri(cid) end
        local d = m:match("^dim%.(.+)$")
        if d then return ngx.escape_uri(ev.dims[d] or "") end
    end)
    return ngx.redirect(url, 302)
end

ev.status = 200
queue:rpush("q", cjson.encode(ev))
ngx.header["Content-Type"] = "image/gif"
ngx.print(GIF)
LUA
cp "$TMP/nginx.conf" "$TMP/peer.lua" "$OUT/"

"$NGINX" -t -p "$TMP" -c "$TMP/nginx.conf" 2>&1 | sed 's/^/    /'
"$NGINX" -p "$TMP" -c "$TMP/nginx.conf"
for _ in $(seq 50); do [ -s "$TMP/logs/nginx.pid" ] && break; sleep 0.1; done
NGINX_PID=$(cat "$TMP/logs/nginx.pid")
sleep 0.3
WORKER_PID=$(pgrep -P "$NGINX_PID" | head -n1)
[ -n "$WORKER_PID" ] || die "no nginx worker under master $NGINX_PID"
note "nginx master $NGINX_PID, worker $WORKER_PID, http://127.0.0.1:$PORT"

# Sanity: every case answers as expected before measuring.
check() {  # path expected-status
    local got
    got=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT$1")
    [ "$got" = "$2" ] || die "GET $1: status $got, expected $2"
}
check '/e' 200; check '/l' 200
check '/i?cid=summer-sale&pub=x' 200; check '/c?cid=summer-sale&pub=x' 302
check '/li?cid=summer-sale&pub=x' 200; check '/lc?cid=summer-sale&pub=x' 302
curl -s "http://127.0.0.1:$PORT/_lua_queue?flush=1" >/dev/null

CLK_TCK=$(getconf CLK_TCK)
worker_ticks() { awk '{print $14 + $15}' "/proc/$WORKER_PID/stat"; }
ring_written() { ring_stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["written"]["total"])'; }
ring_lag() { ring_stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["lag_bytes"])'; }

RAW="$OUT/raw.csv"
echo "round,case,path,seconds,requests,errors,status_errors,rps,cpu_ticks,cpu_us_per_req,stored,stored_per_req,p50_us,p99_us,mean_us,shipper" >"$RAW"

# run_case ROUND NAME PATH STORE(ring|lua|none)
run_case() {
    local round=$1 name=$2 path=$3 store=$4 t0 t1 s0=0 s1=0 line
    case "$store" in
        ring) s0=$(ring_written) ;;
        lua) s0=$(curl -s "http://127.0.0.1:$PORT/_lua_queue?flush=1") ; s0=0 ;;
    esac
    t0=$(worker_ticks)
    line=$(BENCH_PATH="$path" wrk -t1 -c"$CONNS" -d"${SECONDS_PER}s" -s "$BENCH/load.lua" \
        "http://127.0.0.1:$PORT" | grep '^BENCH_RESULT')
    t1=$(worker_ticks)
    case "$store" in
        ring) s1=$(ring_written) ;;
        lua) s1=$(curl -s "http://127.0.0.1:$PORT/_lua_queue") ;;
    esac
    python3 - "$round" "$name" "$path" "$((t1 - t0))" "$CLK_TCK" "$store" "$((s1 - s0))" \
        "$([ -n "$SHIPPER_PID" ] && echo on || echo off)" "$line" >>"$RAW" <<'PY'
import sys
rnd, name, path, ticks, hz, store, stored, ship, line = sys.argv[1:]
kv = dict(x.split("=") for x in line.split()[1:])
req = int(kv["requests"]); secs = int(kv["duration_us"]) / 1e6
ticks = int(ticks); hz = int(hz)
cpu = ticks * 1e6 / hz / req if req else 0
st = int(stored) if store != "none" else ""
spr = (int(stored) / req) if store != "none" and req else ""
print(",".join(str(x) for x in [rnd, name, path, f"{secs:.3f}", req, kv["errors"], kv["status_errors"],
      f"{req/secs:.1f}", ticks, f"{cpu:.3f}", st, (f"{spr:.4f}" if spr != "" else ""),
      kv["p50_us"], kv["p99_us"], kv["mean_us"], ship]))
PY
    tail -n1 "$RAW" | awk -F, '{printf "    round %s %-22s %9s req/s %7s us/req  stored/req %s\n", $1, $2, $8, $10, $12}'
}

# Waits (up to 60 s) until the shipper has read everything written; prints the seconds taken.
wait_drained() {
    local start end
    start=$(date +%s.%N)
    for _ in $(seq 600); do
        [ "$(ring_lag)" -eq 0 ] && break
        sleep 0.1
    done
    end=$(date +%s.%N)
    python3 -c "print(f'{$end-$start:.2f}')"
}

DRAIN="$OUT/drain.csv"
echo "round,phase,seconds_to_drain" >"$DRAIN"
[ "$THROUGHPUT" = 1 ] || ROUNDS=0
[ "$THROUGHPUT" = 1 ] && header "bench: $ROUNDS round(s) x 8 cases x ${SECONDS_PER}s, wrk -t1 -c$CONNS"
for round in $(seq "$ROUNDS"); do
    run_case "$round" empty_gif      '/e' none
    run_case "$round" empty_gif_log  '/l' none
    start_shipper
    run_case "$round" tracker_pixel  '/i?cid=summer-sale' ring
    run_case "$round" tracker_click  '/c?cid=summer-sale' ring
    echo "$round,after_shipper_cases,$(wait_drained)" >>"$DRAIN"
    stop_shipper
    run_case "$round" tracker_pixel_noship '/i?cid=summer-sale' ring
    run_case "$round" tracker_click_noship '/c?cid=summer-sale' ring
    # drain what the shipper-less cases left, outside any measurement
    start_shipper
    echo "$round,after_noship_cases,$(wait_drained)" >>"$DRAIN"
    stop_shipper
    run_case "$round" lua_pixel      '/li?cid=summer-sale' lua
    run_case "$round" lua_click      '/lc?cid=summer-sale' lua
    curl -s "http://127.0.0.1:$PORT/_lua_queue?flush=1" >/dev/null
done
# ---- latency at a fixed rate ---------------------------------------------------------------
# oha -q RATE (half of empty_gif's median req/s unless BENCH_LATENCY_RATE), with its
# latency correction (a request that should have been sent at t is timed from t, as wrk2
# does), the shipper running, URLs varied like bench/load.lua (--rand-regex-url).
if [ "$LATENCY" = 1 ]; then
    base_rps=$(awk -F, '$2 == "empty_gif" {print $8}' "$RAW" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    if [ -z "${BENCH_LATENCY_RATE:-}" ] && [ -z "$base_rps" ]; then
        die "BENCH_THROUGHPUT=0 needs BENCH_LATENCY_RATE (there is no empty_gif throughput to halve)"
    fi
    RATE=${BENCH_LATENCY_RATE:-$(python3 -c "print(int(float('$base_rps') * $LAT_FRACTION))")}
    header "bench: latency at a fixed $RATE req/s (${BENCH_LATENCY_RATE:+given; }empty_gif's req/s ${base_rps:-not measured} x $LAT_FRACTION), $LAT_ROUNDS round(s) x ${LAT_SECONDS}s, oha -c$CONNS"
    LAT="$OUT/latency.csv"
    echo "round,case,path,rate,seconds,requests,rps,success_rate,p50_us,p90_us,p99_us,p999_us,max_us,non_2xx_3xx" >"$LAT"
    start_shipper
    for round in $(seq "$LAT_ROUNDS"); do
        for c in "empty_gif|/e" "empty_gif_log|/l" "tracker_pixel|/i?cid=summer-sale" \
                 "tracker_click|/c?cid=summer-sale" "lua_pixel|/li?cid=summer-sale" "lua_click|/lc?cid=summer-sale"; do
            IFS='|' read -r name path <<<"$c"
            case "$path" in *\?*) sep='&' ;; *) sep='\?' ;; esac   # a regex: ? is escaped
            url="http://127.0.0.1:$PORT${path/\?/\\?}${sep}pub=site[0-9]{2}&plc=(top|side|footer|inline)&n=[0-9]{7}"
            "$OHA" -z "${LAT_SECONDS}s" -q "$RATE" -c "$CONNS" --latency-correction --no-tui \
                --output-format json --rand-regex-url "$url" \
                -H "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36" \
                -H "Referer: https://news.example.com/articles/2026/11/some-story.html" \
                >"$OUT/latency-$round-$name.json" 2>"$OUT/latency-$round-$name.err" \
                || die "oha failed for $name (see $OUT/latency-$round-$name.err)"
            python3 - "$round" "$name" "$path" "$RATE" "$OUT/latency-$round-$name.json" >>"$LAT" <<'PY'
import json, sys
rnd, name, path, rate, f = sys.argv[1:]
d = json.load(open(f))
s, p = d["summary"], d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
n = sum(codes.values())
bad = sum(v for k, v in codes.items() if not k.startswith(("2", "3")))
us = lambda x: "" if x is None else f"{x * 1e6:.0f}"
print(",".join(str(x) for x in [rnd, name, path, rate, f'{s["total"]:.2f}', n, f'{n / s["total"]:.1f}',
      f'{s["successRate"]:.4f}', us(p.get("p50")), us(p.get("p90")), us(p.get("p99")), us(p.get("p99.9")),
      us(s.get("slowest")), bad]))
PY
            tail -n1 "$LAT" | awk -F, '{printf "    round %s %-16s %8s req/s  p50 %6s us  p99 %6s us  p99.9 %6s us\n", $1, $2, $7, $9, $11, $12}'
        done
    done
    echo "latency,after_latency_cases,$(wait_drained)" >>"$DRAIN"
    stop_shipper
fi

ring_stats >"$OUT/ring-stats.json"
find "$TMP/events" -name '*.gz' -print0 | xargs -0 -r zcat | wc -l >"$OUT/events-shipped.txt"

header "bench: results in ${OUT#"$ROOT"/}"
python3 "$BENCH/report.py" "$OUT" "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
    "$ROUNDS" "$SECONDS_PER" "$CONNS"
if [ "$THROUGHPUT" = 1 ] && command -v gnuplot >/dev/null 2>&1; then
    if gnuplot -e "datafile='$OUT/summary.dat'; outfile='$OUT/chart.svg'" "$BENCH/chart.gp"; then
        note "chart: ${OUT#"$ROOT"/}/chart.svg"
    else
        note "gnuplot failed: no chart"
    fi
fi
