#!/usr/bin/env bash
# Starts nginx (foreground, config /etc/nginx-tracker/nginx.conf) and, once nginx has created
# the ring, the shipper writing into /var/lib/nginx-tracker/events. SIGTERM/SIGINT stop both:
# nginx first (graceful), then the shipper, which commits what it has read.
# Any arguments replace the default shipper options after --ring.
set -euo pipefail

CONF=${NGINX_TRACKER_CONF:-/etc/nginx-tracker/nginx.conf}
RING=${NGINX_TRACKER_RING:-/dev/shm/nginx-tracker.ring}
EVENTS=${NGINX_TRACKER_EVENTS:-/var/lib/nginx-tracker/events}
SHIPPER=${NGINX_TRACKER_SHIPPER:-/usr/local/bin/tracker-shipper}

/usr/sbin/nginx -t -c "$CONF"
/usr/sbin/nginx -c "$CONF" &
nginx_pid=$!

for _ in $(seq 100); do
    [ -e "$RING" ] && break
    kill -0 "$nginx_pid" 2>/dev/null || { wait "$nginx_pid"; exit 1; }
    sleep 0.1
done
[ -e "$RING" ] || { echo "nginx did not create $RING" >&2; kill -QUIT "$nginx_pid"; exit 1; }

mkdir -p "$EVENTS"
if [ "$#" -gt 0 ]; then
    "$SHIPPER" --ring "$RING" "$@" &
else
    "$SHIPPER" --ring "$RING" --sink file --dir "$EVENTS" &
fi
shipper_pid=$!

stop() {
    kill -QUIT "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
    kill -TERM "$shipper_pid" 2>/dev/null || true
    wait "$shipper_pid" 2>/dev/null || true
    exit 0
}
trap stop TERM INT

# Either one exiting on its own stops the container.
set +e
wait -n "$nginx_pid" "$shipper_pid"
status=$?
echo "nginx or the shipper exited (status $status); stopping" >&2
kill -QUIT "$nginx_pid" 2>/dev/null
kill -TERM "$shipper_pid" 2>/dev/null
wait
exit "$status"
