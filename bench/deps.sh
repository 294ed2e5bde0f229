#!/usr/bin/env bash
# Installs what the benchmarks need, idempotently: asks dpkg first and runs apt-get only for
# what is missing, through `apt_install` (scripts/lib.sh), so that no packaged service (Debian's
# nginx) starts on install.
#   libnginx-mod-http-lua  the OpenResty-style Lua peer (ndk + lua modules for Debian's nginx)
#   lua-cjson              cjson for the Lua peer (OpenResty bundles it, Debian does not)
#   gnuplot-nox            the SVG chart
#   wrk, valgrind          load generator, callgrind
# With the argument `oha`, also makes sure oha (fixed-rate load with latency percentiles; not
# in Debian, wrk2 neither) is in $TOOLS_DIR/oha/bin (scripts/lib.sh): `cargo install oha --locked`
# the first time (about 10 minutes on 2 cores), reused afterwards. Prints nothing else.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

OHA_VERSION=1.16.0
if [ "${1:-}" = oha ]; then
    OHA="$TOOLS_DIR/oha/bin/oha"
    if [ ! -x "$OHA" ]; then
        note "installing oha $OHA_VERSION into $TOOLS_DIR/oha (cargo install, once)"
        mkdir -p "$TOOLS_DIR/oha"
        cargo install oha --version "$OHA_VERSION" --locked --root "$TOOLS_DIR/oha" \
            --target-dir "$TOOLS_DIR/oha/build" >"$TOOLS_DIR/oha/install.log" 2>&1 \
            || die "cargo install oha failed (see $TOOLS_DIR/oha/install.log)"
        rm -rf "$TOOLS_DIR/oha/build"
    fi
    exit 0
fi

PACKAGES=(nginx libnginx-mod-http-lua lua-cjson gnuplot-nox wrk procps valgrind python3)
missing=()
for p in "${PACKAGES[@]}"; do
    case "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)" in
        ii*) ;;
        *) missing+=("$p") ;;
    esac
done
[ ${#missing[@]} -eq 0 ] && exit 0

note "installing: ${missing[*]}"
apt_install "${missing[@]}"
