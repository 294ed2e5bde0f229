#!/usr/bin/env bash
# Installs tracker-shipper as a systemd service (docs/systemd.md). Idempotent: run it again
# after a new build to upgrade (a running service is restarted, which loses no event).
#
#   bash scripts/install-shipper.sh [--ring-group GROUP] [--prefix DIR] [--bin FILE]
#                                   [--root DIR] [--check] [--no-start]
#
#   PREFIX/bin/tracker-shipper                   the binary (PREFIX: --prefix, $PREFIX, or
#                                                /usr/local), from target/release/ (scripts/build.sh)
#   /etc/nginx-tracker/shipper.toml              from shipper/shipper.toml.example, only if
#                                                absent (root:tracker-shipper 0640)
#   /etc/nginx-tracker/shipper.toml.example      always (the reference for the current version)
#   /etc/systemd/system/tracker-shipper.service  from shipper/tracker-shipper.service
#   /etc/tmpfiles.d/nginx-tracker.conf           the ring file (the config's `ring`), created
#                                                empty at boot as root:GROUP 0660; applied now
#   /var/lib/nginx-tracker/events, /var/log/nginx-tracker   owned by tracker-shipper, 0750
#
# and the system user and group `tracker-shipper`, added to the ring file's group
# (--ring-group, default www-data: the group of Debian's nginx workers). Run it again after
# changing `ring` in the config (the tmpfiles.d rule names it).
# Then, if systemd is running: daemon-reload, enable --now (restart if it was running and
# something changed). Without systemd as PID 1 it prints how to start the shipper by hand.
#
#   --root DIR   stage everything under DIR (like DESTDIR) and touch nothing else: no user,
#                no systemctl; files are chowned to tracker-shipper only if that user exists
#                and we are root. For packaging and tests.
#   --check      also run `systemd-analyze verify` on the installed unit (with --root, on a
#                copy whose ExecStart names the staged binary) and check that the installed
#                binary accepts the installed config. Any complaint is an error.
#   --no-start   install and enable nothing in systemd (no daemon-reload / enable / start).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SVC_USER=tracker-shipper
UNIT_NAME=tracker-shipper.service
CONF_DIR=/etc/nginx-tracker
CONF=$CONF_DIR/shipper.toml
STATE_DIR=/var/lib/nginx-tracker
EVENTS_DIR=$STATE_DIR/events
LOG_DIR=/var/log/nginx-tracker
UNIT_DIR=/etc/systemd/system
TMPFILES=/etc/tmpfiles.d/nginx-tracker.conf
# The paths written in shipper/tracker-shipper.service, replaced when they differ.
UNIT_BIN=/usr/local/bin/tracker-shipper
UNIT_GROUP=www-data

prefix=${PREFIX:-/usr/local}
ring_group=www-data
bin=$SHIPPER_BIN
dest=""
check=0
start=1

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --ring-group) [ $# -ge 2 ] || die "--ring-group needs a group name"; ring_group=$2; shift 2 ;;
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
        --bin) [ $# -ge 2 ] || die "--bin needs a file"; bin=$2; shift 2 ;;
        --root) [ $# -ge 2 ] || die "--root needs a directory"; dest=$2; shift 2 ;;
        --check) check=1; shift ;;
        --no-start) start=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

case "$prefix" in /*) ;; *) die "--prefix must be absolute: $prefix" ;; esac
prefix=${prefix%/}
case "$ring_group" in
    ''|-*|*[!A-Za-z0-9_.-]*) die "bad group name: $ring_group" ;;
esac
if [ -n "$dest" ]; then
    mkdir -p "$dest"
    dest=$(cd "$dest" && pwd)
    [ "$dest" != / ] || die "--root / is the real system: leave --root out instead"
fi
[ -x "$bin" ] || die "$bin is missing: build it first (bash scripts/build.sh)"

header "install-shipper: ${dest:+staging into $dest, }prefix $prefix, ring group $ring_group"

# Runs a command that changes the target: as root on the real system, as we are when
# staging (the staging root is ours).
run() {
    if [ -n "$dest" ]; then "$@"; else as_root "$@"; fi
}

user_exists() { getent passwd "$SVC_USER" >/dev/null 2>&1; }
group_exists() { getent group "$1" >/dev/null 2>&1; }
in_group() { id -nG "$SVC_USER" 2>/dev/null | tr ' ' '\n' | grep -qxF "$1"; }

# chown, when it means something: always on the real system; when staging, only if the user
# exists and we are root (a staged tree is otherwise left owned by whoever ran this).
can_chown() {
    [ -z "$dest" ] && return 0
    [ "$(id -u)" -eq 0 ] && user_exists
}

# Installs $1 (a file) as $2 with mode $3 and owner $4 (user:group, or "" to leave it),
# atomically (a running binary is replaced by a rename, not overwritten). Sets `updated` to 1
# if the file changed, 0 if it was already identical. (Always returns 0: errexit does not
# apply inside a function called as a condition, so failures die explicitly.)
updated=0
install_file() {
    local src=$1 dst=$2 mode=$3 owner=$4 tmp
    if [ -f "$dst" ] && cmp -s "$src" "$dst"; then
        updated=0
        note "unchanged $dst"
    else
        run mkdir -p "$(dirname "$dst")" || die "cannot create $(dirname "$dst")"
        tmp="$(dirname "$dst")/.$(basename "$dst").install-tmp"
        run cp "$src" "$tmp" || die "cannot write $tmp"
        run mv -f "$tmp" "$dst" || die "cannot rename $tmp to $dst"
        updated=1
        note "installed $dst"
    fi
    run chmod "$mode" "$dst" || die "cannot chmod $dst"
    if [ -n "$owner" ] && can_chown; then
        run chown "$owner" "$dst" || die "cannot chown $dst"
    fi
}

changed=0

# --- the user and its groups -----------------------------------------------------------
if [ -n "$dest" ]; then
    # Staging: checks only.
    if user_exists; then
        note "user $SVC_USER exists$(in_group "$ring_group" && echo " and is in $ring_group" || echo ", NOT in $ring_group")"
    else
        note "user $SVC_USER does not exist (not created with --root)"
    fi
    group_exists "$ring_group" || note "warning: group $ring_group does not exist on this system"
else
    group_exists "$ring_group" \
        || die "group $ring_group does not exist: install nginx first, or pass the group of nginx's worker user with --ring-group"
    if user_exists; then
        note "user $SVC_USER exists"
    else
        # A group of the same name: --user-group, or the existing group if a former install
        # left it behind.
        if group_exists "$SVC_USER"; then group_opt=(--gid "$SVC_USER"); else group_opt=(--user-group); fi
        as_root useradd --system --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "${group_opt[@]}" \
            --comment "nginx-tracker shipper" "$SVC_USER"
        note "created the system user $SVC_USER"
        changed=1
    fi
    if in_group "$ring_group"; then
        note "$SVC_USER is in $ring_group"
    else
        as_root usermod --append --groups "$ring_group" "$SVC_USER"
        note "added $SVC_USER to $ring_group (the ring file's group)"
        changed=1
    fi
fi

# --- files -------------------------------------------------------------------------------
work=$(mktemp -d /tmp/install-shipper.XXXXXX)
trap 'rm -rf "$work"' EXIT

install_file "$bin" "$dest$prefix/bin/tracker-shipper" 0755 ""
[ "$updated" -eq 0 ] || changed=1

# The unit, with this install's binary path and ring group.
sed -e "s#^ExecStart=$UNIT_BIN #ExecStart=$prefix/bin/tracker-shipper #" \
    -e "s#^SupplementaryGroups=$UNIT_GROUP\$#SupplementaryGroups=$ring_group#" \
    "$ROOT/shipper/tracker-shipper.service" >"$work/$UNIT_NAME"
grep -q "^ExecStart=$prefix/bin/tracker-shipper --config $CONF\$" "$work/$UNIT_NAME" \
    || die "shipper/tracker-shipper.service: unexpected ExecStart= line"
grep -q "^SupplementaryGroups=$ring_group\$" "$work/$UNIT_NAME" \
    || die "shipper/tracker-shipper.service: unexpected SupplementaryGroups= line"
install_file "$work/$UNIT_NAME" "$dest$UNIT_DIR/$UNIT_NAME" 0644 ""
[ "$updated" -eq 0 ] || changed=1

run mkdir -p "$dest$CONF_DIR"
run chmod 0755 "$dest$CONF_DIR"
install_file "$ROOT/shipper/shipper.toml.example" "$dest$CONF.example" 0644 ""
if [ -e "$dest$CONF" ]; then
    note "kept $dest$CONF (exists; compare with shipper.toml.example after an upgrade)"
else
    # 0640: the [kafka.properties] may hold credentials.
    install_file "$ROOT/shipper/shipper.toml.example" "$dest$CONF" 0640 "root:$SVC_USER"
    changed=1
fi

for d in "$STATE_DIR" "$EVENTS_DIR" "$LOG_DIR"; do
    run mkdir -p "$dest$d"
    run chmod 0750 "$dest$d"
    if can_chown; then run chown "$SVC_USER:$SVC_USER" "$dest$d"; fi
done
if can_chown; then
    note "directories $STATE_DIR, $EVENTS_DIR, $LOG_DIR: $SVC_USER, 0750"
else
    note "directories $STATE_DIR, $EVENTS_DIR, $LOG_DIR: 0750 (not chowned: no user $SVC_USER or not root)"
fi

# --- the ring's owner ---------------------------------------------------------------------
# nginx's master creates the ring as root:root 0660, which the shipper cannot open. A
# tmpfiles.d rule creates it empty at boot (before nginx, which initializes an empty file in
# place and keeps its owner and mode) as root:RING_GROUP 0660, and gives an existing ring that
# owner and mode when applied. The ring path is the config's `ring`.
ring=$(sed -n 's/^ring[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$dest$CONF" 2>/dev/null | head -n1 || true)
[ -n "$ring" ] || ring=/dev/shm/nginx-tracker.ring
case "$ring" in
    /*[[:space:]]*|/*%*) die "ring path unsuitable for tmpfiles.d: $ring" ;;
    /*) ;;
    *) die "the ring path in $dest$CONF is not absolute: $ring" ;;
esac
cat >"$work/tmpfiles.conf" <<EOF
# Written by scripts/install-shipper.sh (docs/systemd.md). The nginx-tracker ring: created
# empty at boot, before nginx starts, in the group of nginx's workers, so that tracker-shipper
# (a member of that group) can open it; nginx initializes the empty file in place.
# type path  mode user group age
f $ring 0660 root $ring_group -
EOF
install_file "$work/tmpfiles.conf" "$dest$TMPFILES" 0644 ""
if [ -z "$dest" ]; then
    if command -v systemd-tmpfiles >/dev/null 2>&1; then
        # Creates the (empty) ring if absent, or gives the existing one its owner and mode.
        as_root systemd-tmpfiles --create "$TMPFILES" || die "systemd-tmpfiles --create $TMPFILES failed"
        note "ring $ring: $(stat -c '%a %U:%G' "$ring")"
    elif [ -e "$ring" ] && [ "$(stat -c %G "$ring")" != "$ring_group" ]; then
        note "warning: ring $ring is $(stat -c '%a %U:%G' "$ring") and systemd-tmpfiles is missing:"
        note "  chgrp $ring_group $ring  (the shipper cannot open it otherwise)"
    fi
fi

# --- checks ------------------------------------------------------------------------------
if [ "$check" -eq 1 ]; then
    command -v systemd-analyze >/dev/null 2>&1 || die "--check needs systemd-analyze (package systemd)"
    unit="$dest$UNIT_DIR/$UNIT_NAME"
    if [ -n "$dest" ]; then
        # verify resolves ExecStart= on the real system: point it at the staged binary.
        mkdir -p "$work/verify"
        sed "s#^ExecStart=$prefix/bin/tracker-shipper #ExecStart=$dest$prefix/bin/tracker-shipper #" \
            "$unit" >"$work/verify/$UNIT_NAME"
        unit="$work/verify/$UNIT_NAME"
    fi
    # verify exits 0 on some complaints (an unknown key is "ignoring"): any output is a failure.
    if out=$(systemd-analyze verify "$unit" 2>&1) && [ -z "$out" ]; then
        note "systemd-analyze verify: ok"
    else
        printf '%s\n' "$out" >&2
        die "systemd-analyze verify $unit failed"
    fi
    # The config must parse: `stats` reads it before it looks for the ring, and a config
    # error is exit status 2 (a missing ring is 1, which is fine here).
    set +e
    out=$("$dest$prefix/bin/tracker-shipper" --config "$dest$CONF" stats --ring "$work/no-such.ring" 2>&1)
    rc=$?
    set -e
    if [ "$rc" -eq 2 ]; then
        printf '%s\n' "$out" >&2
        die "the installed tracker-shipper rejects $dest$CONF: the service would not start"
    fi
    note "tracker-shipper accepts $dest$CONF"
fi

# --- systemd -----------------------------------------------------------------------------
start_cmd="systemctl daemon-reload && systemctl enable --now tracker-shipper"
by_hand="runuser -u $SVC_USER -- $prefix/bin/tracker-shipper --config $CONF"
if [ -n "$dest" ]; then
    note "staged under $dest; nothing was started"
elif [ "$start" -eq 0 ]; then
    note "--no-start: to start it: $start_cmd"
elif [ -d /run/systemd/system ]; then
    was_active=0
    systemctl is-active --quiet tracker-shipper 2>/dev/null && was_active=1
    as_root systemctl daemon-reload
    as_root systemctl enable --now tracker-shipper
    if [ "$was_active" -eq 1 ] && [ "$changed" -eq 1 ]; then
        as_root systemctl restart tracker-shipper
        note "restarted tracker-shipper (it was running and something changed)"
    fi
    note "systemctl status tracker-shipper; journalctl -u tracker-shipper -f"
else
    note "systemd is not running here (PID 1 is $(cat /proc/1/comm 2>/dev/null || echo unknown)): nothing was started."
    note "With systemd: $start_cmd"
    note "Without it, as root (the user's groups come from /etc/group, which has $ring_group):"
    note "  $by_hand"
fi
