#!/usr/bin/env bash
# The admin API's crash test (t/e2e/admin_crash.py, docs/admin-api.md "Persistence"): a stream
# of changes from three clients while kill -9 hits a worker, the master and the workers, or
# the master in the middle of a reload's journal compaction; after each restart every change
# that was answered must be there (and a bulk POST in flight all or nothing). About 20 s.
# Env: TEST_NGINX_BINARY, TEST_NGINX_LOAD_MODULES (see lib.sh), CRASH_ROUNDS (default 6),
# CRASH_SEED (to repeat a run), E2E_KEEP=1 keeps the temporary directory.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

work=$(mktemp -d /tmp/tracker-admin-crash.XXXXXX)
cleanup() { if [ -z "${E2E_KEEP:-}" ]; then rm -rf "$work"; else echo "# kept $work"; fi; }
trap cleanup EXIT
NGINX_BIN=$NGINX MODULE=$MODULE WORK=$work timeout 120 python3 "$here/admin_crash.py"
