#!/usr/bin/env bash
# Fetches OpenResty's Test::Nginx (Debian sid's libtest-nginx-perl, which bookworm lacks) and
# unpacks it into .cache/test-nginx, WITHOUT touching the system's apt configuration: apt runs
# against a private state under .cache/apt-sid (its own sources.list, lists, cache and dpkg
# status), with the same Debian mirror the system uses and Debian's archive keyring.
# Its Perl modules then live in .cache/test-nginx/usr/share/perl5 (print on the last line).
# Skipped when already unpacked. The modules it needs from bookworm come from scripts/deps.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PKG=libtest-nginx-perl
APT_DIR=$CACHE_DIR/apt-sid
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

if [ -f "$TEST_NGINX_LIB/Test/Nginx/Socket.pm" ] && [ -f "$TEST_NGINX_DIR/.version" ]; then
    echo "test-nginx: $PKG $(cat "$TEST_NGINX_DIR/.version") already unpacked" >&2
else
    [ -f "$KEYRING" ] || die "$KEYRING missing: install debian-archive-keyring (bash scripts/deps.sh)"
    mirror=$(debian_mirror)
    echo "test-nginx: fetching $PKG from suite sid of $mirror (private apt state in $APT_DIR)" >&2

    mkdir -p "$APT_DIR"/etc "$APT_DIR"/etc/preferences.d "$APT_DIR"/lists/partial \
             "$APT_DIR"/cache/archives/partial "$APT_DIR"/debs
    cat >"$APT_DIR/etc/sid.sources" <<EOF
Types: deb
URIs: $mirror
Suites: sid
Components: main
Signed-By: $KEYRING
EOF
    : >"$APT_DIR/etc/sources.list"
    [ -f "$APT_DIR/status" ] || : >"$APT_DIR/status"

    # Everything apt reads or writes points into $APT_DIR; the system's sources, lists,
    # preferences, archives and dpkg status are neither read nor changed.
    APT_OPTS=(
        -o "Dir::Etc::SourceList=$APT_DIR/etc/sources.list"
        -o "Dir::Etc::SourceParts=$APT_DIR/etc"
        -o "Dir::Etc::Preferences=/dev/null"
        -o "Dir::Etc::PreferencesParts=$APT_DIR/etc/preferences.d"
        -o "Dir::State=$APT_DIR"
        -o "Dir::State::Lists=$APT_DIR/lists"
        -o "Dir::State::Status=$APT_DIR/status"
        -o "Dir::Cache=$APT_DIR/cache"
        -o "Dir::Cache::Archives=$APT_DIR/cache/archives"
        -o "APT::Get::List-Cleanup=0"
        -o "Acquire::Languages=none"
        -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
        -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
        -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
        -o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"
        -o "Debug::NoLocking=1"
    )
    if ! apt-get "${APT_OPTS[@]}" -q update >"$APT_DIR/update.log" 2>&1; then
        cat "$APT_DIR/update.log" >&2
        die "apt-get update of the private sid state failed"
    fi
    # `apt-get download` writes into the current directory; the sandboxed _apt user may not
    # be able to write there, so run it as the invoking user (root: -o APT::Sandbox::User=root).
    (cd "$APT_DIR/debs" && rm -f ./*.deb \
        && apt-get "${APT_OPTS[@]}" -o APT::Sandbox::User="$(id -un)" -q download "$PKG") \
        >"$APT_DIR/download.log" 2>&1 || { cat "$APT_DIR/download.log" >&2; die "apt-get download $PKG failed"; }
    deb=$(ls "$APT_DIR"/debs/"$PKG"_*.deb 2>/dev/null | head -n1)
    [ -n "$deb" ] || die "no $PKG .deb downloaded (see $APT_DIR/download.log)"

    rm -rf "$TEST_NGINX_DIR"
    mkdir -p "$TEST_NGINX_DIR"
    dpkg-deb -x "$deb" "$TEST_NGINX_DIR"
    dpkg-deb -f "$deb" Version >"$TEST_NGINX_DIR/.version"
    echo "test-nginx: unpacked $(basename "$deb")" >&2
fi

perl -I"$TEST_NGINX_LIB" -MTest::Nginx::Socket -e1 \
    || die "Test::Nginx::Socket does not load from $TEST_NGINX_LIB (missing Perl deps? run scripts/deps.sh)"
echo "$TEST_NGINX_LIB"
