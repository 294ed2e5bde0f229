#!/usr/bin/env bash
# The demo: `bash scripts/demo.sh` builds everything (scripts/build.sh), then starts
#   - nginx (/usr/sbin/nginx) with the module on 127.0.0.1:8080, from the template
#     nginx-conf/demo.conf (the @MODULE@ @PREFIX@ @RING@ @CAMPAIGNS@ paths filled in) and the
#     campaigns of nginx-conf/campaigns.demo.json;
#   - the shipper, draining the ring into ./var/events.
# Everything it writes is under ./var (git-ignored). Running it again restarts both cleanly.
#
#   bash scripts/demo.sh          build and (re)start
#   bash scripts/demo.sh stop     stop nginx and the shipper
#   bash scripts/demo.sh status   show what is running
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VAR=$ROOT/var
PREFIX=$VAR/nginx
CONF=$PREFIX/conf/demo.conf
CAMPAIGNS=$PREFIX/conf/campaigns.json
RING=$VAR/nginx-tracker.ring
EVENTS=$VAR/events
NGINX_PID=$PREFIX/logs/nginx.pid
SHIPPER_PID=$VAR/shipper.pid
SHIPPER_LOG=$VAR/shipper.log
NGINX=/usr/sbin/nginx
LISTEN=127.0.0.1:8080

# A pid file whose process is alive and runs the expected program (a stale pid file whose
# number was reused by another program does not count). The executable may show as
# "PATH (deleted)" after a rebuild, hence the prefix match.
pid_alive() { # $1 = pid file
    [ -s "$1" ] || return 1
    local pid exe want
    pid=$(cat "$1")
    case "$1" in "$SHIPPER_PID") want=$SHIPPER_BIN ;; *) want=$NGINX ;; esac
    kill -0 "$pid" 2>/dev/null || return 1
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 0  # cannot tell: trust the pid file
    case "$exe" in "$want"*) return 0 ;; *) return 1 ;; esac
}

wait_gone() { # $1 = pid, $2 = tenths of a second
    local i
    for ((i = 0; i < $2; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

stop_demo() {
    local pid
    if pid_alive "$SHIPPER_PID"; then
        pid=$(cat "$SHIPPER_PID")
        echo "stopping the shipper (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        wait_gone "$pid" 100 || { echo "shipper still running after 10s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
    fi
    rm -f "$SHIPPER_PID"
    if pid_alive "$NGINX_PID"; then
        pid=$(cat "$NGINX_PID")
        echo "stopping nginx (pid $pid)"
        kill -QUIT "$pid" 2>/dev/null || true
        wait_gone "$pid" 100 || { echo "nginx still running after 10s: SIGTERM"; kill -TERM "$pid" 2>/dev/null || true; wait_gone "$pid" 50 || true; }
    fi
}

status_demo() {
    if pid_alive "$NGINX_PID"; then echo "nginx:   running (pid $(cat "$NGINX_PID")) on $LISTEN"; else echo "nginx:   not running"; fi
    if pid_alive "$SHIPPER_PID"; then echo "shipper: running (pid $(cat "$SHIPPER_PID")), log $SHIPPER_LOG"; else echo "shipper: not running"; fi
}

case "${1:-start}" in
    stop) stop_demo; exit 0 ;;
    status) status_demo; exit 0 ;;
    start|restart) ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "usage: bash scripts/demo.sh [start|stop|status]" ;;
esac

bash "$ROOT/scripts/build.sh"

header "demo: (re)starting nginx and the shipper"
stop_demo

[ -f "$ROOT/nginx-conf/demo.conf" ] || die "nginx-conf/demo.conf (the template) is missing"
[ -f "$ROOT/nginx-conf/campaigns.demo.json" ] || die "nginx-conf/campaigns.demo.json is missing"
mkdir -p "$PREFIX/conf" "$PREFIX/logs" "$EVENTS"
cp "$ROOT/nginx-conf/campaigns.demo.json" "$CAMPAIGNS"
# The paths hold no '|' (sed's delimiter here): they are under the repository root.
case "$ROOT" in *'|'*|*'&'*) die "the repository path must not contain '|' or '&': $ROOT" ;; esac
sed -e "s|@MODULE@|$MODULE_SO|g" \
    -e "s|@PREFIX@|$PREFIX|g" \
    -e "s|@RING@|$RING|g" \
    -e "s|@CAMPAIGNS@|$CAMPAIGNS|g" \
    "$ROOT/nginx-conf/demo.conf" >"$CONF"
if grep -n '@[A-Z_]*@' "$CONF"; then
    die "unsubstituted placeholders left in $CONF (see above)"
fi

if ! "$NGINX" -p "$PREFIX" -c "$CONF" -t >"$PREFIX/logs/nginx-t.log" 2>&1; then
    cat "$PREFIX/logs/nginx-t.log"
    die "nginx -t failed for $CONF"
fi
if ! "$NGINX" -p "$PREFIX" -c "$CONF"; then
    tail -n 20 "$PREFIX/logs/error.log" 2>/dev/null || true
    die "nginx did not start (is something else on $LISTEN?)"
fi
for _ in $(seq 50); do pid_alive "$NGINX_PID" && break; sleep 0.1; done
pid_alive "$NGINX_PID" || die "nginx did not write $NGINX_PID (see $PREFIX/logs/error.log)"
echo "nginx:   pid $(cat "$NGINX_PID"), http://$LISTEN, config $CONF, logs in $PREFIX/logs"

# The shipper in its own session, so that it outlives this script and the terminal.
: >>"$SHIPPER_LOG"
nohup setsid "$SHIPPER_BIN" --ring "$RING" --sink file --dir "$EVENTS" \
    >>"$SHIPPER_LOG" 2>&1 </dev/null &
echo $! >"$SHIPPER_PID"
sleep 0.5
if ! pid_alive "$SHIPPER_PID"; then
    tail -n 20 "$SHIPPER_LOG"
    die "the shipper exited at once (log: $SHIPPER_LOG)"
fi
echo "shipper: pid $(cat "$SHIPPER_PID"), ring $RING -> $EVENTS, log $SHIPPER_LOG"

rel() { printf '%s' "${1#"$ROOT"/}"; }
logs="error log $(rel "$PREFIX")/logs/error.log"
if [ -f "$PREFIX/logs/tracked.log" ]; then logs="$logs, tracked requests $(rel "$PREFIX")/logs/tracked.log"; fi
cat <<EOF

Try it:
  curl -si 'http://$LISTEN/i?cid=summer-sale&pub=news'           # impression: 200 + 1x1 GIF
  curl -si 'http://$LISTEN/c?cid=summer-sale&pub=news'           # click: 302 to the landing URL
  curl -si 'http://$LISTEN/cv?cid=summer-sale&click_id=ID&value=9.90'  # conversion (ID: the click= of the Location)
  curl -si 'http://$LISTEN/v?cid=app-install&event=q1&watch_time=7.5'  # video quartile
  curl -si 'http://$LISTEN/b?cid=app-install&pub=mail'           # custom "signup" event: 204
  curl -si 'http://$LISTEN/i?cid=no-such-campaign'               # unknown campaign: still a GIF, flagged

Events land in $(rel "$EVENTS")/type=<type>/date=<date>/hour=<hour>/*.ndjson.gz when the shipper
commits a batch (about a second after the first event). Read them with:
  find $(rel "$EVENTS") -name '*.ndjson.gz' -exec zcat {} +
nginx logs: $logs
Campaigns:  edit $(rel "$CAMPAIGNS"), then reload nginx:
  $NGINX -p $PREFIX -c $CONF -s reload
Stop:       bash scripts/demo.sh stop
EOF
