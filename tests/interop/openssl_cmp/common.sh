# Shared helpers for the openssl cmp interop scripts.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../support/ports.sh"
X2SEC=${1:?usage: $0 path/to/x2sec}
D=$(mktemp -d /tmp/x2sec-cmp-interop.XXXXXX)
PIDS=()
cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  if [ $rc -ne 0 ]; then echo "--- FAILED (rc=$rc); logs:"; tail -n 30 "$D"/*.log 2>/dev/null || true; fi
  rm -rf "$D"
}
trap cleanup EXIT
cd "$D"
FAILS=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
