#!/usr/bin/env bash
# A Kafka-compatible broker for the tests of the shipper's Kafka sink: tansu
# (https://github.com/tansu-io/tansu), one process, Apache Kafka's wire protocol, here with its
# SQLite (libsql) storage engine so that its topics survive a broker restart.
#
#   bash scripts/tansu.sh install                 cargo install tansu into $TOOLS_DIR/tansu (once)
#   bash scripts/tansu.sh start DIR PORT          broker on 127.0.0.1:PORT, storage DIR/tansu.db
#   bash scripts/tansu.sh stop DIR                SIGTERM (SIGKILL after 10 s), waits for the exit
#   bash scripts/tansu.sh kill DIR                SIGKILL at once (a broker crash), waits for the exit
#   bash scripts/tansu.sh create-topics DIR PORT PARTITIONS TOPIC...
#   bash scripts/tansu.sh status DIR              "running (pid N)" / "stopped"; exit 0 / 1
#
# install: skipped when the binary is there already ($TANSU_BIN, by default
# $TOOLS_DIR/tansu/bin/tansu, outside the clone: see scripts/lib.sh). Otherwise runs
#   cargo install tansu --version 0.6.0 --locked --features dynostore,libsql \
#       --root $TOOLS_DIR/tansu --target-dir $TOOLS_DIR/tansu-build
# (20 minutes on the 2-core development VM; the build directory, 1.4 GB, is kept so that a
# second install is quick).
#
# start: runs, in DIR (the SQLite path is relative to the broker's working directory),
#   tansu broker --listener-url tcp://127.0.0.1:PORT --advertised-listener-url tcp://127.0.0.1:PORT \
#       --storage-engine sqlite://tansu.db
# in the background, detached from the caller's terminal and pipes, with its output in
# DIR/tansu.log and its pid in DIR/tansu.pid, then waits (up to 30 s) until 127.0.0.1:PORT
# accepts connections. The advertised listener is what the broker's metadata tells clients to
# connect to, so it is the same 127.0.0.1:PORT. Starting again on the same DIR after a stop finds
# the topics and messages of the previous run (tansu.db, with its -wal and -shm files; SQLite
# WAL with synchronous=normal: durable across a broker crash, not across a power loss).
#
# After the start, an index is added to tansu's SQLite schema (python3's sqlite3 module, on the
# live database: WAL mode allows it): `create index if not exists header_topition_offset_id on
# header (topition, offset_id)`. tansu 0.6.0 has none, and its fetch looks up the headers of
# every record it returns with a scan of the whole header table: with headers on every message
# (the shipper's schema_version and event_type), reading back 36,000 messages had not finished
# after more than a minute, the broker at 100% CPU; with the index they are read in about 5 s.
#
# stop vs kill, and tansu 0.6.0 with idempotent producers: on SIGTERM tansu shuts its storage
# down first but goes on answering requests for a few seconds, failing every Produce. librdkafka's
# idempotent producer then fails those messages, sees a gap in its sequence numbers and bumps its
# producer epoch by itself; the next broker run does not know that epoch, and its SQLite engine
# panics in idempotent_message_check ("more or less than one row", lite.rs:503). The panic kills
# the storage task: the process keeps running and answers every request with an error until it is
# restarted, and the producer's next batch kills it again. A SIGKILL (`kill`) only drops the
# connections: librdkafka resends its in-flight batches with the same sequence numbers, and tansu
# acknowledges a batch it had already stored as DuplicateSequenceNumber (no duplicate message).
# So tests that restart the broker under an idempotent producer use `kill`.
#
# create-topics: `tansu topic create --broker tcp://127.0.0.1:PORT --partitions N TOPIC` for each
# topic; a topic that exists already is not an error. Output appended to DIR/tansu-topics.log.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TANSU_VERSION=0.6.0
TANSU_ROOT="$TOOLS_DIR/tansu"
TANSU_BIN=${TANSU_BIN:-$TANSU_ROOT/bin/tansu}

usage() {
    cat >&2 <<'EOF'
usage: bash scripts/tansu.sh install
       bash scripts/tansu.sh start DIR PORT
       bash scripts/tansu.sh stop DIR
       bash scripts/tansu.sh kill DIR
       bash scripts/tansu.sh status DIR
       bash scripts/tansu.sh create-topics DIR PORT PARTITIONS TOPIC...
EOF
    exit 2
}

cmd_install() {
    if [ -x "$TANSU_BIN" ]; then
        echo "tansu: $TANSU_BIN present ($("$TANSU_BIN" --version 2>/dev/null || echo "version unknown"))"
        return 0
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo is not on PATH (install a Rust toolchain)"
    header "tansu: cargo install tansu $TANSU_VERSION into $TANSU_ROOT (takes a while)"
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql \
        --root "$TANSU_ROOT" --target-dir "$TOOLS_DIR/tansu-build"
    [ -x "$TANSU_BIN" ] || die "cargo install tansu did not produce $TANSU_BIN"
}

# The pid in DIR/tansu.pid if that process is alive and is tansu, else nothing.
running_pid() { # $1 = DIR
    local pid
    [ -s "$1/tansu.pid" ] || return 0
    pid=$(cat "$1/tansu.pid")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    case "$(readlink "/proc/$pid/exe" 2>/dev/null || true)" in
        */tansu | */tansu" (deleted)") echo "$pid" ;;
    esac
}

port_open() { # $1 = PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# The index tansu's fetch needs (see the top of this file). tansu has created its tables before
# it listens.
add_header_index() { # $1 = the database
    python3 - "$1" <<'PY' || die "cannot add the header index to $1"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=30)
db.execute("create index if not exists header_topition_offset_id on header (topition, offset_id)")
db.commit()
db.close()
PY
}

check_port() { # $1 = PORT
    case "$1" in
        '' | *[!0-9]*) die "bad port: $1" ;;
    esac
    if [ "$1" -lt 1 ] || [ "$1" -gt 65535 ]; then die "bad port: $1"; fi
}

cmd_start() { # DIR PORT
    [ $# -eq 2 ] || usage
    local dir=$1 port=$2 pid
    check_port "$port"
    [ -x "$TANSU_BIN" ] || die "$TANSU_BIN is missing: run bash scripts/tansu.sh install"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    pid=$(running_pid "$dir")
    [ -z "$pid" ] || die "tansu already runs for $dir (pid $pid)"
    if port_open "$port"; then
        die "127.0.0.1:$port is taken already"
    fi
    local url="tcp://127.0.0.1:$port"
    printf '\n=== %s tansu start on %s, storage %s/tansu.db\n' "$(date -u +%FT%TZ)" "$url" "$dir" >>"$dir/tansu.log"
    # setsid: its own session, so that the caller's terminal signals (^C) do not reach it and
    # the caller's job control does not wait for it; every fd redirected, so that a caller
    # reading our output (VAR=$(...)) does not wait for the broker either.
    (
        cd "$dir"
        exec setsid "$TANSU_BIN" broker \
            --listener-url "$url" \
            --advertised-listener-url "$url" \
            --storage-engine "sqlite://tansu.db" \
            </dev/null >>"$dir/tansu.log" 2>&1
    ) &
    pid=$!
    echo "$pid" >"$dir/tansu.pid"
    for _ in $(seq 300); do
        if port_open "$port"; then
            add_header_index "$dir/tansu.db"
            echo "tansu: running on 127.0.0.1:$port (pid $pid, storage $dir/tansu.db, log $dir/tansu.log)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$dir/tansu.log" | sed 's/^/    /' >&2
            rm -f "$dir/tansu.pid"
            die "tansu exited at start (log $dir/tansu.log)"
        fi
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/tansu.pid"
    die "tansu did not listen on 127.0.0.1:$port within 30 s (log $dir/tansu.log)"
}

cmd_stop() { # SIGNAL DIR
    local signal=$1
    shift
    [ $# -eq 1 ] || usage
    local dir=$1 pid
    pid=$(running_pid "$dir")
    if [ -z "$pid" ]; then
        rm -f "$dir/tansu.pid"
        echo "tansu: not running for $dir"
        return 0
    fi
    kill "-$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        note "tansu (pid $pid) still runs 10 s after SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$dir/tansu.pid"
    printf '=== %s tansu stopped (SIG%s, pid %s)\n' "$(date -u +%FT%TZ)" "$signal" "$pid" >>"$dir/tansu.log"
    echo "tansu: stopped (SIG$signal, pid $pid)"
}

cmd_status() { # DIR
    [ $# -eq 1 ] || usage
    local pid
    pid=$(running_pid "$1")
    if [ -n "$pid" ]; then
        echo "running (pid $pid)"
    else
        echo "stopped"
        return 1
    fi
}

cmd_create_topics() { # DIR PORT PARTITIONS TOPIC...
    [ $# -ge 4 ] || usage
    local dir=$1 port=$2 partitions=$3 topic out rc
    shift 3
    check_port "$port"
    case "$partitions" in '' | *[!0-9]* | 0) die "bad partition count: $partitions" ;; esac
    [ -x "$TANSU_BIN" ] || die "$TANSU_BIN is missing: run bash scripts/tansu.sh install"
    mkdir -p "$dir"
    for topic in "$@"; do
        rc=0
        out=$("$TANSU_BIN" topic create --broker "tcp://127.0.0.1:$port" --partitions "$partitions" "$topic" 2>&1) || rc=$?
        printf '=== %s topic create %s --partitions %s: exit %s\n%s\n' \
            "$(date -u +%FT%TZ)" "$topic" "$partitions" "$rc" "$out" >>"$dir/tansu-topics.log"
        if [ "$rc" -ne 0 ]; then
            case "$out" in
                *TopicAlreadyExists* | *"already exists"*) echo "tansu: topic $topic exists already" ;;
                *) printf '%s\n' "$out" | tail -n 5 | sed 's/^/    /' >&2
                   die "tansu topic create $topic failed (exit $rc)" ;;
            esac
        else
            echo "tansu: topic $topic created ($partitions partitions)"
        fi
    done
}

[ $# -ge 1 ] || usage
sub=$1
shift
case "$sub" in
    install) [ $# -eq 0 ] || usage; cmd_install ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop TERM "$@" ;;
    kill) cmd_stop KILL "$@" ;;
    status) cmd_status "$@" ;;
    create-topics) cmd_create_topics "$@" ;;
    *) usage ;;
esac
