#!/usr/bin/env bash
# Installs what the benchmarks need, idempotently: asks dpkg first and runs apt-get only for
# what is missing. A /usr/sbin/policy-rc.d answering 101 is put in place first (if there is
# none) so that no packaged service (Debian's nginx) starts on install.
#   libnginx-mod-http-lua  the OpenResty-style Lua peer (ndk + lua modules for Debian's nginx)
#   lua-cjson              cjson for the Lua peer (OpenResty bundles it, Debian does not)
#   gnuplot-nox            the SVG chart
#   wrk, valgrind          load generator, callgrind
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

PACKAGES=(nginx libnginx-mod-http-lua lua-cjson gnuplot-nox wrk procps valgrind python3)
missing=()
for p in "${PACKAGES[@]}"; do
    case "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)" in
        ii*) ;;
        *) missing+=("$p") ;;
    esac
done
[ ${#missing[@]} -eq 0 ] && exit 0

f=/usr/sbin/policy-rc.d
if [ ! -e "$f" ]; then
    note "installing $f (exit 101) so that packaged services do not start"
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$f" >/dev/null
    as_root chmod 755 "$f"
fi
note "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
as_root apt-get update -qq
as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
