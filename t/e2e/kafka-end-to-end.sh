#!/usr/bin/env bash
# End-to-end test of the shipper's Kafka sink, on 127.0.0.1 only: a tansu broker (Kafka wire
# protocol, SQLite storage; scripts/tansu.sh), nginx with the module (2 workers), and the
# shipper with both sinks, `--sink kafka --brokers ... --sink file --dir ...`.
#
# wrk sends KAFKA_E2E_REQUESTS (100,000) requests of every type (t/e2e/load.lua, paced by
# KAFKA_E2E_DELAY_MS), and during the load
#   (a) the broker is stopped for KAFKA_E2E_BROKER_DOWN_S (6) seconds, then started again on the
#       same storage, while nginx goes on writing into the ring. It is stopped with SIGKILL
#       (`scripts/tansu.sh kill`, a broker crash): a SIGTERM makes tansu 0.6.0 fail the Produce
#       requests in flight, librdkafka's idempotent producer then bumps its epoch, and the next
#       tansu run panics on that epoch (see scripts/tansu.sh). KAFKA_E2E_BROKER_STOP=stop uses
#       SIGTERM anyway;
#   (b) the shipper is killed with SIGKILL and started again KAFKA_E2E_SHIPPER_KILLS (6) times
#       at random moments: two while the broker is down (the restarted shipper cannot read the
#       partitions' tails and must wait), the others at random points of the load, each after a
#       random 0-700 ms pause (anywhere in the produce / acknowledge / commit cycle). The random
#       seed is printed (KAFKA_E2E_SEED replays a run's schedule).
# Then, once the shipper's consumer cursor has reached the ring's producer cursor and the
# shipper has been stopped with SIGTERM, every topic is read from the beginning
# (shipper/examples/kafka_dump.rs) and checked against nginx's access log, which records
# $tracker_event_id for every request (t/e2e/check_kafka.py): every event in Kafka exactly
# once (0 lost, 0 duplicates, printed per run), none that nginx did not log, each on
# the topic of its type, keyed by its campaign, with its headers, decoding to what its request
# implies and to exactly what the file sink wrote. The file sink must still have every event
# exactly once (t/e2e/check_events.py).
#
# Knobs: KAFKA_E2E_REQUESTS, KAFKA_E2E_PARTITIONS (3), KAFKA_E2E_BROKER_DOWN_S, KAFKA_E2E_BROKER_STOP,
# KAFKA_E2E_SHIPPER_KILLS, KAFKA_E2E_SEED,
# KAFKA_E2E_DRAIN_S (how long the shipper may take to catch up after the load, 180),
# KAFKA_E2E_DELAY_MS (per-connection pause between requests, 2), KAFKA_E2E_KEEP=1 (keep the
# work directory), TANSU_BIN, KAFKA_DUMP (a built kafka_dump; otherwise cargo builds it).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUESTS=${KAFKA_E2E_REQUESTS:-100000}
PARTITIONS=${KAFKA_E2E_PARTITIONS:-3}
BROKER_DOWN_S=${KAFKA_E2E_BROKER_DOWN_S:-6}
DELAY_MS=${KAFKA_E2E_DELAY_MS:-2}
SHIPPER_KILLS=${KAFKA_E2E_SHIPPER_KILLS:-6}
SEED=${KAFKA_E2E_SEED:-$((RANDOM * 32768 + RANDOM))}
[ "$SHIPPER_KILLS" -ge 2 ] || { echo "KAFKA_E2E_SHIPPER_KILLS must be at least 2 (two during the outage)" >&2; exit 2; }
BROKER_STOP=${KAFKA_E2E_BROKER_STOP:-kill}
DRAIN_S=${KAFKA_E2E_DRAIN_S:-180}
case "$BROKER_STOP" in stop | kill) ;; *) echo "KAFKA_E2E_BROKER_STOP must be stop or kill" >&2; exit 2 ;; esac
TOPICS=(tracker.impression tracker.click tracker.conversion tracker.video tracker.custom)
TANSU=(bash "$root/scripts/tansu.sh")

t_start=$SECONDS
log() { echo "# [$((SECONDS - t_start))s] $*"; }
fail() { echo "not ok - kafka e2e: $*"; exit 1; }

work=$(mktemp -d /var/tmp/kafka-e2e.XXXXXX)
nginx_port=$(free_port)
kafka_port=$(free_port)
while [ "$kafka_port" = "$nginx_port" ]; do kafka_port=$(free_port); done
brokers="127.0.0.1:$kafka_port"
ring=$work/events.ring
events=$work/events
shipper_pid=""
wrk_pid=""
nginx_started=""

cleanup() {
    local rc=$?
    set +e
    kill_quiet KILL "$wrk_pid" "$shipper_pid"
    [ -n "$nginx_started" ] && [ -f "$work/nginx.pid" ] && nginx_stop "$work/nginx.pid" TERM 5 2>/dev/null
    "${TANSU[@]}" kill "$work/kafka" >/dev/null 2>&1
    if [ "$rc" -ne 0 ]; then
        for f in "$work/shipper.log" "$work/kafka/tansu.log" "$work/logs/error.log" "$work/kafka_dump.err"; do
            [ -s "$f" ] || continue
            echo "# --- last lines of $f"
            tail -n 25 "$f" | diag
        done
    fi
    sleep 0.3
    if [ -n "${KAFKA_E2E_KEEP:-}${E2E_KEEP:-}" ]; then
        echo "# kept $work"
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- prerequisites: the shipper's Kafka sink, tansu, kafka_dump
"$SHIPPER" --help 2>&1 | grep -q -- '--brokers' \
    || fail "$SHIPPER has no Kafka sink (no --brokers in its --help)"
"${TANSU[@]}" install
if [ -z "${KAFKA_DUMP:-}" ]; then
    log "building kafka_dump (cargo build -p tracker-shipper --example kafka_dump)"
    (cd "$root" && cargo build -q -p tracker-shipper --example kafka_dump) || fail "cannot build kafka_dump"
    KAFKA_DUMP=$root/target/debug/examples/kafka_dump
fi
[ -x "$KAFKA_DUMP" ] || fail "no kafka_dump at $KAFKA_DUMP"

# --- the broker and its topics
"${TANSU[@]}" start "$work/kafka" "$kafka_port" | sed 's/^/# /'
"${TANSU[@]}" create-topics "$work/kafka" "$kafka_port" "$PARTITIONS" "${TOPICS[@]}" | sed 's/^/# /'

# --- nginx, as in end-to-end.sh; custom type "signup" on /b
write_e2e_campaigns "$work/campaigns.json"
mkdir -p "$work/logs"
cat > "$work/nginx.conf" <<CONF
$(conf_main 2 "$work/logs/error.log" "$work/nginx.pid")
http {
    access_log off;
    tracker_ring $ring 64m;
    tracker_campaigns $work/campaigns.json zone=campaigns_kafka:1m;
$(conf_e2e_log_format)
    server {
        listen 127.0.0.1:$nginx_port;
        access_log $work/logs/access.log e2e;
        tracker_dimension publisher \$arg_pub;
        tracker_dimension placement \$arg_plc;
        tracker_dimension n \$arg_n;
$(conf_tracker_locations)
    }
}
CONF
nginx_start "$work" "$work/nginx.conf"
nginx_started=1
touch "$work/logs/access.log"

start_shipper() {
    "$SHIPPER" --ring "$ring" --sink kafka --brokers "$brokers" --sink file --dir "$events" \
        --flush-interval-ms 200 >>"$work/shipper.log" 2>&1 &
    shipper_pid=$!
}
# Waits up to $2 seconds for process $1 to exit; its exit status in $wait_status (timeout: 124).
wait_exit() {
    local pid=$1
    for _ in $(seq $(($2 * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        wait_status=124
        return 0
    fi
    wait_status=0
    wait "$pid" || wait_status=$?
}
served() { grep -vc '^- ' "$work/logs/access.log" || true; }
stats() { "$SHIPPER" stats --ring "$ring"; }
stat_field() { # $1 = python expression on the stats JSON `s`
    stats | python3 -c "import json, sys; s = json.load(sys.stdin); print($1)"
}

start_shipper
log "nginx on 127.0.0.1:$nginx_port, tansu on $brokers ($PARTITIONS partitions per topic), shipper pid $shipper_pid"

# --- the load, paced: load.lua's requests, plus a pause between two requests of a connection
cat > "$work/load.lua" <<LUA
dofile("$here/load.lua")
function delay() return $DELAY_MS end
LUA
threads=2 connections=8
t_load=$SECONDS
TRACKER_REQUESTS_PER_THREAD=$((REQUESTS / threads)) wrk -t$threads -c$connections -d400s \
    -s "$work/load.lua" "http://127.0.0.1:$nginx_port" >"$work/wrk.log" 2>&1 &
wrk_pid=$!

# The schedule: the served-request counts at which the shipper is killed outside the outage
# (random, between 5% and 95% of the load), and the count at which the broker goes down.
RANDOM=$SEED
kill_at=()
for _ in $(seq $((SHIPPER_KILLS - 2))); do
    kill_at+=($((REQUESTS / 20 + (RANDOM * 32768 + RANDOM) % (REQUESTS * 9 / 10))))
done
mapfile -t kill_at < <(printf '%s\n' "${kill_at[@]}" | sort -n)
broker_at=$((REQUESTS / 4 + RANDOM % (REQUESTS / 4)))
log "seed $SEED: shipper SIGKILLs at ${kill_at[*]} requests served and twice during the broker outage at $broker_at"
pause_random() { sleep "0.$(printf '%03d' $((RANDOM % 700)))"; }
kill_shipper() {
    kill -9 "$shipper_pid"
    wait "$shipper_pid" 2>/dev/null || true
    start_shipper
    shipper_kills=$((shipper_kills + 1))
    log "$(served) requests served: shipper SIGKILLed $1, restarted (pid $shipper_pid)"
}

broker_bounced="" shipper_kills=0 next_kill=0 deadline=$((SECONDS + 400))
while kill -0 "$wrk_pid" 2>/dev/null; do
    sleep 0.1
    n=$(served)
    if [ "$n" -ge "$REQUESTS" ] || [ "$SECONDS" -ge "$deadline" ]; then
        break
    fi
    if [ -z "$broker_bounced" ] && [ "$n" -ge "$broker_at" ]; then
        log "$n requests served: stopping the broker ($BROKER_STOP) for ${BROKER_DOWN_S}s"
        "${TANSU[@]}" "$BROKER_STOP" "$work/kafka" | diag
        t_down=$SECONDS
        sleep 1; pause_random
        kill_shipper "during the broker outage"
        sleep 1; pause_random
        kill_shipper "during the broker outage, while it waits to read the partitions' tails"
        sleep $((BROKER_DOWN_S - (SECONDS - t_down) > 0 ? BROKER_DOWN_S - (SECONDS - t_down) : 0))
        during=$(served)
        "${TANSU[@]}" start "$work/kafka" "$kafka_port" | diag
        log "broker back; $((during - n)) requests served while it was down"
        [ "$during" -gt "$n" ] && kill -0 "$wrk_pid" 2>/dev/null && broker_bounced=1 || broker_bounced=late
        continue
    fi
    if [ "$next_kill" -lt "${#kill_at[@]}" ] && [ "$n" -ge "${kill_at[$next_kill]}" ]; then
        pause_random
        kill_shipper "at a random moment"
        next_kill=$((next_kill + 1))
    fi
done
# Kills whose point the load passed too fast (or ended before): now, during the drain.
while [ "$next_kill" -lt "${#kill_at[@]}" ]; do
    pause_random
    kill_shipper "after the load (its point came too late)"
    next_kill=$((next_kill + 1))
done
# wrk's threads stop after their share, but wrk waits out -d: SIGINT makes it print its summary.
kill -INT "$wrk_pid" 2>/dev/null || true
wait "$wrk_pid" || true
wrk_pid=""
t_load=$((SECONDS - t_load))
n_served=$(served)
log "load done in ${t_load}s: $n_served requests served"
wrk_summary "$work/wrk.log" || true

problems=()
[ "$broker_bounced" = 1 ] || problems+=("the broker was not stopped and restarted during the load (${broker_bounced:-never})")
[ "$shipper_kills" -ge "$SHIPPER_KILLS" ] || problems+=("the shipper was killed $shipper_kills times during the load, not $SHIPPER_KILLS")
[ "$n_served" -ge $((REQUESTS * 99 / 100)) ] || problems+=("only $n_served of $REQUESTS requests served")

# --- drain: nginx stops, the shipper catches up with the ring, SIGTERM
nginx_stop "$work/nginx.pid"
nginx_started=""
t_drain=$SECONDS
drained=""
while [ $((SECONDS - t_drain)) -lt "$DRAIN_S" ]; do
    if ! kill -0 "$shipper_pid" 2>/dev/null; then
        wait "$shipper_pid" || true
        problems+=("the shipper exited by itself during the drain")
        shipper_pid=""
        break
    fi
    if [ "$(stat_field 's["consumer_pos"] == s["producer_pos"] and all(c["lag_bytes"] == 0 for c in s.get("sinks", {}).values())')" = True ]; then
        drained=1
        break
    fi
    sleep 0.5
done
t_drain=$((SECONDS - t_drain))
stats >"$work/stats.json"
log "ring after ${t_drain}s: $(python3 -c 'import json, sys; s = json.load(open(sys.argv[1])); print("producer %d, consumer %d, lag %d bytes, written %d, dropped full %d, too large %d, abandoned %d" % (s["producer_pos"], s["consumer_pos"], s["lag_bytes"], s["written"]["total"], s["dropped_full"]["total"], s["dropped_too_large"]["total"], s["abandoned"]))' "$work/stats.json")"
[ -n "$drained" ] || problems+=("the shipper did not reach the ring's producer cursor within $DRAIN_S s")
if [ -n "$shipper_pid" ]; then
    kill -TERM "$shipper_pid"
    wait_exit "$shipper_pid" 60
    [ "$wait_status" = 124 ] && kill -9 "$shipper_pid" 2>/dev/null
    shipper_pid=""
    [ "$wait_status" = 0 ] || problems+=("the shipper's exit status after SIGTERM was $wait_status (124: still running after 60 s)")
fi

# --- read every topic back and check
t_dump=$SECONDS
topics_csv=$(IFS=,; echo "${TOPICS[*]}")
if "$KAFKA_DUMP" --brokers "$brokers" --topics "$topics_csv" --expect-idle-ms 3000 --timeout-ms 180000 \
    >"$work/kafka.jsonl" 2>"$work/kafka_dump.err"; then
    sed 's/^/# /' "$work/kafka_dump.err"
else
    sed 's/^/# /' "$work/kafka_dump.err"
    problems+=("kafka_dump failed")
fi
log "dump: $(wc -l <"$work/kafka.jsonl") messages in $((SECONDS - t_dump))s"

if python3 "$here/check_kafka.py" "$work/logs/access.log" "$work/kafka.jsonl" "$events" >"$work/check_kafka.out"; then
    sed 's/^/# /' "$work/check_kafka.out"
    echo "ok - kafka: every request's event in Kafka exactly once, on its topic, keyed by campaign, with headers"
else
    sed 's/^/# /' "$work/check_kafka.out"
    problems+=("the Kafka messages do not match the requests (check_kafka.py above)")
fi
exactly=$(grep -m1 '^exactly-once:' "$work/check_kafka.out" || echo "exactly-once: not counted")
if python3 "$here/check_events.py" "$work/logs/access.log" "$events" | sed 's/^/# /'; [ "${PIPESTATUS[0]}" -eq 0 ]; then
    echo "ok - file sink next to kafka: one event per request"
else
    problems+=("the file sink does not have exactly one event per request (check_events.py above)")
fi
# Messages the Kafka sink gave up on go to the dead letters (kafka-<ring pos>.jsonl) instead.
if ls "$events"/_dead_letter/kafka-* >/dev/null 2>&1; then
    head -c 2000 "$events"/_dead_letter/kafka-* | diag
    problems+=("the Kafka sink wrote dead letters (events Kafka refused)")
fi
if log_alerts "$work/logs/error.log"; then
    problems+=("alerts in nginx's error log")
fi
if grep -q -a 'panicked' "$work/kafka/tansu.log"; then
    grep -a -m1 -A1 'panicked' "$work/kafka/tansu.log" | diag
    problems+=("tansu panicked (its log: $work/kafka/tansu.log; see scripts/tansu.sh on stop vs kill)")
fi
if grep -E 'panicked|RUST_BACKTRACE' "$work/shipper.log"; then
    problems+=("the shipper panicked")
fi

echo "# summary: $n_served requests in ${t_load}s (broker SIGKILLed and down ${BROKER_DOWN_S}s, shipper SIGKILLed $shipper_kills times, seed $SEED), drain ${t_drain}s, total $((SECONDS - t_start))s; $exactly"
if [ "${#problems[@]}" -gt 0 ]; then
    for f in "${problems[@]}"; do echo "not ok - kafka e2e: $f"; done
    exit 1
fi
echo "kafka e2e: passed"
