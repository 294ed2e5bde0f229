# Shared helpers of the scripts in this directory. Source it; it sets ROOT to the repository
# root and cds there.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

# Where the build puts things (all under the git-ignored .cache/ and target/).
CACHE_DIR="$ROOT/.cache"
NGINX_SRC_COPY="$CACHE_DIR/nginx-src"          # configured copy of Debian's nginx source
TEST_NGINX_DIR="$CACHE_DIR/test-nginx"         # unpacked libtest-nginx-perl
TEST_NGINX_LIB="$TEST_NGINX_DIR/usr/share/perl5"
RELEASE_DIR="$ROOT/target/release"
MODULE_SO="$RELEASE_DIR/libngx_http_tracker_module.so"
SHIPPER_BIN="$RELEASE_DIR/tracker-shipper"
VENDORED_TARGET_DIR="$ROOT/target/vendored"
# Built tools (tansu, oha, cargo-fuzz) live outside the clone, so that a fresh clone on the same
# machine (CI's) reuses them instead of spending 20-30 minutes rebuilding them; each script
# builds its tool there when it is missing. NGINX_TRACKER_TOOLS moves it.
TOOLS_DIR=${NGINX_TRACKER_TOOLS:-/var/cache/nginx-tracker-tools}

# A stage header: "==> text", easy to spot in a long CI log.
header() {
    printf '\n==> %s\n' "$*"
}

note() {
    printf '    %s\n' "$*"
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root for: $*"
    fi
}

# Installs Debian packages without starting their services (Debian's nginx would start on :80):
# while apt runs, a /usr/sbin/policy-rc.d answering 101 ("action forbidden") is in place, and it
# is removed again afterwards, so later upgrades restart services as usual. An existing
# policy-rc.d is left as it is. Nothing that runs already (a system nginx) is stopped.
apt_install() { # packages...
    local f=/usr/sbin/policy-rc.d ours=0 rc=0
    if [ ! -e "$f" ]; then
        printf '#!/bin/sh\n# nginx-tracker: packaged services stay stopped while we install\nexit 101\n' \
            | as_root tee "$f" >/dev/null
        as_root chmod 755 "$f"
        ours=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    { as_root apt-get update -qq && as_root apt-get install -y -qq --no-install-recommends "$@"; } || rc=$?
    if [ "$ours" = 1 ]; then as_root rm -f "$f"; fi
    return "$rc"
}

# The URI of the system's main Debian archive, read from the apt sources (deb822 first, then
# the one-line format). Never hard-coded: it is whatever mirror this machine already uses.
debian_mirror() {
    local f uri=""
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # The first URIs: line of a stanza whose Suites do not end in -security.
        uri=$(awk '
            BEGIN { RS=""; FS="\n" }
            {
                u=""; s=""
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/)   { u=$i; sub(/^URIs:[ \t]*/, "", u); split(u, a, /[ \t]+/); u=a[1] }
                    if ($i ~ /^Suites:/) { s=$i }
                }
                if (u != "" && s !~ /-security/) { print u; exit }
            }' "$f")
        [ -n "$uri" ] && break
    done
    if [ -z "$uri" ]; then
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            uri=$(awk '
                $1 == "deb" {
                    i = 2
                    if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                    if ($(i + 1) !~ /-security/) { print $i; exit }
                }' "$f")
            [ -n "$uri" ] && break
        done
    fi
    [ -n "$uri" ] || die "cannot find a Debian mirror in /etc/apt/sources.list{,.d/}"
    printf '%s\n' "${uri%/}"
}

# Version of the installed Debian nginx package (e.g. 1.22.1-9+deb12u11).
nginx_pkg_version() {
    dpkg-query -W -f='${Version}' nginx-dev 2>/dev/null || true
}
