#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need. Idempotent and quick when
# everything is there already: it asks dpkg first, and runs `apt-get update` + install only
# for what is missing. Never changes the system's apt sources.
#
# Debian's nginx package would start its service on install: `apt_install` (lib.sh) keeps it
# from starting. A system nginx that runs already is left alone: the demo and the tests start
# their own nginx, on 127.0.0.1 and ports of their own, with their own prefix and pid file.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKAGES=(
    # nginx itself, and its configured source tree + headers for bindgen
    nginx nginx-dev
    # bindgen (nginx-sys) needs libclang; the nginx configure and the vendored build need a
    # C toolchain and the libraries nginx links (nginx-dev pulls in their -dev packages)
    libclang-dev gcc make libc6-dev libpcre2-dev libssl-dev zlib1g-dev
    # the shipper's Kafka client: librdkafka is built from the source bundled in rdkafka-sys
    # (C, make), linked with the system's OpenSSL, found through pkg-config
    pkg-config
    # load generator, HTTP client, process tools for the tests and the demo; systemd-analyze
    # and systemd-tmpfiles for the shipper's service test (t/e2e/shipper-service.sh)
    wrk curl procps systemd
    # headless browser for the stats dashboard test (t/e2e/dashboard.sh), and a font for its
    # screenshot
    chromium fonts-dejavu-core
    # Perl and the modules OpenResty's Test::Nginx (fetched by scripts/test-nginx.sh) uses
    perl libtest-base-perl libipc-run-perl liblist-moreutils-perl libtest-longstring-perl
    liburi-perl libwww-perl libhttp-message-perl libtext-diff-perl
    # fetching Test::Nginx from Debian without touching the system's apt configuration
    debian-archive-keyring
)

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
    case "$status" in
        ii*) ;;
        *) missing+=("$p") ;;
    esac
done
# python3 runs the end-to-end checker; any python3 on PATH will do.
command -v python3 >/dev/null 2>&1 || missing+=(python3)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "deps: all ${#PACKAGES[@]} packages present"
else
    header "deps: installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

command -v cargo >/dev/null 2>&1 || die "cargo is not on PATH (install a Rust toolchain, >= 1.81)"
