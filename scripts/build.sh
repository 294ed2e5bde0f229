#!/usr/bin/env bash
# Builds the nginx module and the shipper.
#
#   bash scripts/build.sh             # against Debian's nginx (the nginx the demo and tests run)
#   bash scripts/build.sh --vendored  # against the nginx that nginx-sys builds from nginx-src
#
# Default mode: installs the Debian packages (scripts/deps.sh), prepares a configured copy of
# Debian's nginx source (scripts/nginx-build-dir.sh) and runs
#   NGINX_BUILD_DIR=.cache/nginx-src/objs cargo build --release --workspace
# which gives
#   target/release/libngx_http_tracker_module.so   (load_module it into /usr/sbin/nginx)
#   target/release/tracker-shipper
#
# --vendored: cargo build --release -p nginx-tracker --features vendored, into the separate
# target directory target/vendored (so it never overwrites the default build). nginx-sys then
# configures and compiles the nginx source bundled in the nginx-src crate (no download: the
# NGX_VERSION / OPENSSL_VERSION / PCRE2_VERSION / ZLIB_VERSION variables are cleared) in its
# build script's OUT_DIR; that nginx binary is the only one the vendored module loads into.
# The two paths are printed and written to target/vendored/paths.env
# (VENDORED_MODULE=..., VENDORED_NGINX=...).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mode=system
case "${1:-}" in
    "") ;;
    --vendored) mode=vendored ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (expected nothing or --vendored)" ;;
esac

header "build: system packages"
bash "$ROOT/scripts/deps.sh"

if [ "$mode" = system ]; then
    header "build: configured nginx source for bindgen"
    objs=$(bash "$ROOT/scripts/nginx-build-dir.sh" | tail -n1)
    echo "NGINX_BUILD_DIR=$objs"

    header "build: cargo build --release --workspace"
    # nginx-sys takes NGINX_SOURCE_DIR to be the parent of NGINX_BUILD_DIR when it is unset.
    env -u NGINX_SOURCE_DIR NGINX_BUILD_DIR="$objs" cargo build --release --workspace

    [ -f "$MODULE_SO" ] || die "cargo did not produce $MODULE_SO"
    [ -x "$SHIPPER_BIN" ] || die "cargo did not produce $SHIPPER_BIN"
    echo "module:  $MODULE_SO"
    echo "shipper: $SHIPPER_BIN"
    exit 0
fi

header "build: cargo build --release -p nginx-tracker --features vendored (target/vendored)"
mkdir -p "$VENDORED_TARGET_DIR"
messages=$VENDORED_TARGET_DIR/cargo-messages.json
env -u NGINX_BUILD_DIR -u NGINX_SOURCE_DIR \
    -u NGX_VERSION -u OPENSSL_VERSION -u PCRE2_VERSION -u ZLIB_VERSION \
    cargo build --release -p nginx-tracker --features vendored \
        --target-dir "$VENDORED_TARGET_DIR" \
        --message-format=json-render-diagnostics >"$messages"

module=$VENDORED_TARGET_DIR/release/libngx_http_tracker_module.so
[ -f "$module" ] || die "cargo did not produce $module"

# nginx-sys's build script prints its OUT_DIR in the build-script-executed message; nginx-src
# configures nginx with --builddir=OUT_DIR/objs and runs `make build` there.
out_dir=$(grep '"reason":"build-script-executed"' "$messages" \
    | grep -E '"package_id":"[^"]*nginx-sys[@#]' \
    | grep -o '"out_dir":"[^"]*"' | tail -n1 | sed 's/^"out_dir":"//; s/"$//')
nginx_bin=""
if [ -n "$out_dir" ] && [ -x "$out_dir/objs/nginx" ]; then
    nginx_bin=$out_dir/objs/nginx
else
    # Fallback: the newest nginx-sys OUT_DIR holding a binary.
    nginx_bin=$(ls -t "$VENDORED_TARGET_DIR"/release/build/nginx-sys-*/out/objs/nginx 2>/dev/null | head -n1 || true)
fi
[ -n "$nginx_bin" ] && [ -x "$nginx_bin" ] || die "cannot find the vendored nginx binary under $VENDORED_TARGET_DIR/release/build/nginx-sys-*/out/objs/"

printf 'VENDORED_MODULE=%s\nVENDORED_NGINX=%s\n' "$module" "$nginx_bin" >"$VENDORED_TARGET_DIR/paths.env"
echo "vendored module: $module"
echo "vendored nginx:  $nginx_bin ($("$nginx_bin" -v 2>&1))"
