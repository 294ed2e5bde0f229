#!/usr/bin/env bash
# Prepares a configured copy of Debian's nginx source (package nginx-dev) for nginx-sys's
# bindgen: copies /usr/share/nginx/src to .cache/nginx-src and runs its ./configure with the
# flags Debian built the packaged nginx with (/usr/share/nginx/src/conf_flags), so that
# .cache/nginx-src/objs holds ngx_auto_config.h, ngx_auto_headers.h and the Makefile whose
# include paths and defines nginx-sys reads. --with-compat and --with-debug are among those
# flags, which is what makes a module built against this tree load into /usr/sbin/nginx.
#
# Skipped when already done for the same nginx-dev version and flags (stamp file).
# Prints the objs directory (NGINX_BUILD_DIR) on its last line of stdout; nginx-sys takes the
# source directory (NGINX_SOURCE_DIR) to be the parent of that.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=/usr/share/nginx/src
DEST=$NGINX_SRC_COPY
STAMP=$DEST/.configured-stamp

[ -f "$SRC/configure" ] || die "$SRC/configure not found: install nginx-dev (bash scripts/deps.sh)"
[ -f "$SRC/conf_flags" ] || die "$SRC/conf_flags not found (nginx-dev too old?)"

# conf_flags is a bash array assignment in Debian (NGX_CONF_FLAGS=( --prefix=... ... )); older
# or other layouts list the flags one per line. Read it without letting it set anything else.
read_conf_flags() {
    if grep -q '^[[:space:]]*NGX_CONF_FLAGS=(' "$SRC/conf_flags"; then
        # shellcheck disable=SC1090
        ( source "$SRC/conf_flags"; printf '%s\n' "${NGX_CONF_FLAGS[@]}" )
    else
        grep -v '^[[:space:]]*\(#\|$\)' "$SRC/conf_flags" | xargs -n1 printf '%s\n'
    fi
}
mapfile -t FLAGS < <(read_conf_flags)
[ "${#FLAGS[@]}" -gt 0 ] || die "no flags read from $SRC/conf_flags"

want="nginx-dev $(nginx_pkg_version) | $(sha256sum "$SRC/conf_flags" | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
    && [ -f "$DEST/objs/ngx_auto_config.h" ] && [ -f "$DEST/objs/Makefile" ]; then
    echo "nginx-build-dir: up to date ($want)" >&2
    echo "$DEST/objs"
    exit 0
fi

echo "nginx-build-dir: configuring a copy of $SRC in $DEST" >&2
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
cp -a "$SRC" "$DEST"
log=$DEST/configure.log
if ! (cd "$DEST" && ./configure "${FLAGS[@]}") >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "nginx ./configure failed (full log: $log)"
fi
for f in ngx_auto_config.h ngx_auto_headers.h Makefile; do
    [ -f "$DEST/objs/$f" ] || die "configure did not write objs/$f (log: $log)"
done
echo "$want" >"$STAMP"
echo "nginx-build-dir: configured with ${#FLAGS[@]} flags (log: $log)" >&2
echo "$DEST/objs"
