#!/usr/bin/env bash
# The Test::Nginx suite under valgrind memcheck: `bash scripts/valgrind.sh [t/FILE.t ...]`.
#
# Too slow for every CI run: about 3.2 minutes on 2 cores for the 8 Test::Nginx files (454
# tests), 3.3 more with VALGRIND_PLAIN=1 (the 9 plain files); run it by hand or in a nightly
# job. What it does:
#   1. scripts/build.sh (skip with VALGRIND_NO_BUILD=1) and Test::Nginx (scripts/test-nginx.sh),
#      valgrind from Debian if missing;
#   2. the environment of scripts/test.sh's run_prove (127.0.0.1 only, a server root of its own)
#      plus TEST_NGINX_USE_VALGRIND="<memcheck options>": Test::Nginx then starts nginx as
#      `valgrind -q <options> nginx ...` (master_process off, daemon off). The options: full leak
#      check, only definite leaks reported, suppressions from scripts/valgrind.supp (known
#      nginx/glibc noise, each entry commented), one log file per process (--log-file=%p);
#   3. prove over the files given, by default every t/*.t that uses Test::Nginx's run_tests();
#      with VALGRIND_PLAIN=1 also the plain Test::More files (their own nginx through
#      TrackerTest::Nginx, which runs TEST_NGINX_BINARY: here a wrapper that execs nginx under
#      valgrind, workers included). Some of their assertions fail under valgrind for reasons
#      that are not memory errors: TrackerTest::Nginx finds workers by their process title,
#      which nginx cannot set under valgrind ("two workers" in t/070, t/080, t/110, t/120,
#      t/130); the plain files' exit status is printed but does not fail the run;
#   4. reads every valgrind log: each error record (invalid read/write, use of uninitialised
#      values, bad free, overlap, syscall param, definite leak) is counted, and the run FAILS if
#      any record has a frame in the module: ngx_http_tracker_module, tracker_core,
#      nginx_tracker, or libngx_http_tracker_module.so. Those records are printed in full.
#      Records without a module frame (nginx or glibc noise not yet in the suppressions file)
#      are printed as a summary with their suppression, to be reviewed and added.
# Logs are kept in the work directory it prints (VALGRIND_KEEP=1 keeps it on success too);
# VG_SUPP=FILE uses another suppressions file (e.g. an empty one, to review all the noise).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

started=$(date +%s)
if ! command -v valgrind >/dev/null 2>&1; then
    note "installing Debian's valgrind"
    as_root apt-get install -y --no-install-recommends valgrind >/dev/null
fi
[ -n "${VALGRIND_NO_BUILD:-}" ] || bash "$ROOT/scripts/build.sh"
lib=$(bash "$ROOT/scripts/test-nginx.sh" | tail -n1)

work=$(mktemp -d /var/tmp/tracker-valgrind.XXXXXX)
mkdir -p "$work/vg"
keep=${VALGRIND_KEEP:-}
cleanup() {
    if [ -z "$keep" ]; then rm -rf "$work"; else echo "valgrind logs kept in $work"; fi
}
trap cleanup EXIT

# The environment of scripts/test.sh's run_prove (export_test_env).
port=$(perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 0, Listen => 1, ReuseAddr => 1)->sockport')
export PERL5LIB="$lib${PERL5LIB:+:$PERL5LIB}"
export TEST_NGINX_BINARY=/usr/sbin/nginx
export TEST_NGINX_LOAD_MODULES=$MODULE_SO
export TEST_NGINX_SHIPPER=$SHIPPER_BIN
export TEST_NGINX_SERVER_PORT="127.0.0.1:$port"
export TEST_NGINX_CLIENT_PORT=$port
export TEST_NGINX_SERVROOT=$work/servroot
export TEST_NGINX_NO_SHUFFLE=1
unset TEST_NGINX_RANDOMIZE TEST_NGINX_USE_HUP

VG_OPTS="--tool=memcheck --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite"
VG_OPTS+=" --num-callers=50 --keep-debuginfo=yes --gen-suppressions=all"
VG_OPTS+=" --suppressions=${VG_SUPP:-$ROOT/scripts/valgrind.supp} --log-file=$work/vg/%p.log"
# A non-numeric TEST_NGINX_USE_VALGRIND is taken as valgrind's options (Test::Nginx::Util).
export TEST_NGINX_USE_VALGRIND="$VG_OPTS"

# The files given (default: all of t/), split into Test::Nginx ones and plain ones.
[ $# -gt 0 ] || set -- "$ROOT"/t/*.t
files=()
plain=()
for f in "$@"; do
    if grep -q 'run_tests' "$f"; then files+=("$f"); else plain+=("$f"); fi
done

header "valgrind: ${#files[@]} Test::Nginx files under memcheck (logs: $work/vg)"
set +e
prove_rc=0
if [ ${#files[@]} -gt 0 ]; then
    prove "${files[@]}" 2>&1 | tee "$work/prove.log" | grep -vE '^\S*t/\S+ TEST [0-9]+|Retry connecting|Connection refused'
    prove_rc=${PIPESTATUS[0]}
fi
set -e

plain_rc=0
if [ -n "${VALGRIND_PLAIN:-}" ] && [ ${#plain[@]} -gt 0 ]; then
    header "valgrind: ${#plain[@]} plain Test::More files, nginx (master and workers) under memcheck"
    cat >"$work/nginx-valgrind" <<SH
#!/bin/sh
# nginx under valgrind for TrackerTest::Nginx: the master, and the workers it forks.
case " \$* " in *" -t "*) exec /usr/sbin/nginx "\$@" ;; esac
exec valgrind -q $VG_OPTS /usr/sbin/nginx "\$@"
SH
    chmod +x "$work/nginx-valgrind"
    set +e
    TEST_NGINX_BINARY="$work/nginx-valgrind" prove "${plain[@]}" 2>&1 | tee "$work/prove-plain.log"
    plain_rc=${PIPESTATUS[0]}
    set -e
fi

header "valgrind: reading $(find "$work/vg" -name '*.log' | wc -l) logs"
set +e
python3 - "$work/vg" <<'PY'
import glob, os, re, sys

MODULE = re.compile(r"ngx_http_tracker_module|tracker_core|nginx_tracker|libngx_http_tracker_module\.so")
KIND = re.compile(r"^(Invalid (read|write|free)|Conditional jump|Use of uninitialised|Syscall param|"
                  r"Mismatched free|Source and destination overlap|Argument .* of function|"
                  r".* bytes in .* blocks are definitely lost|Invalid .*)")
records, module_records, other = 0, [], []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.log"))):
    text = open(path, errors="replace").read()
    # Records are the "==PID== " lines between blank "==PID== " lines; suppressions ({...}) follow.
    blocks, cur, supp, in_supp = [], [], [], False
    for line in text.splitlines():
        if line.startswith("{"):
            in_supp, supp = True, [line]
            continue
        if in_supp:
            supp.append(line)
            if line.startswith("}"):
                in_supp = False
                if blocks:
                    blocks[-1][1].extend(supp)
            continue
        m = re.match(r"^==\d+== ?(.*)$", line)
        if not m:
            continue
        body = m.group(1)
        if body.strip() == "":
            if cur:
                blocks.append((cur, []))
                cur = []
            continue
        cur.append(body)
    if cur:
        blocks.append((cur, []))
    for lines, s in blocks:
        if not KIND.match(lines[0]):
            continue
        records += 1
        frames = [l for l in lines if re.match(r"^\s+(at|by) 0x", l)]
        entry = (os.path.basename(path), lines, s)
        (module_records if any(MODULE.search(f) for f in frames) else other).append(entry)

print(f"valgrind: {records} error records not suppressed: {len(module_records)} with a frame in the module, "
      f"{len(other)} in nginx or the C library only")
for name, lines, s in module_records:
    print(f"--- {name} (MODULE)")
    print("\n".join("    " + l for l in lines))
for name, lines, s in other[:10]:
    print(f"--- {name} (not the module: add to scripts/valgrind.supp if it is known noise)")
    print("\n".join("    " + l for l in lines[:12]))
    print("\n".join("    " + l for l in s))
sys.exit(1 if module_records else 0)
PY
vg_rc=$?
set -e

elapsed=$(( $(date +%s) - started ))
echo "valgrind: prove exit $prove_rc${VALGRIND_PLAIN:+, plain files exit $plain_rc}, module errors: $([ $vg_rc -eq 0 ] && echo none || echo FOUND), ${elapsed}s"
if [ "$vg_rc" -ne 0 ] || [ "$prove_rc" -ne 0 ]; then
    keep=1
    exit 1
fi
