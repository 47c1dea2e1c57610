# Shared helpers for the openssl cmp interop scripts.
set -euo pipefail
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
free_port() {  # a port derived from the PID that nothing listens on
  local p=$(( 20000 + ($$ * 7 + ${1:-0} * 131) % 30000 ))
  while ss -ltn | awk '{print $4}' | grep -q ":$p\$"; do p=$((p + 1)); done
  echo $p
}
wait_port() { for _ in $(seq 100); do ss -ltn | awk '{print $4}' | grep -q ":$1\$" && return 0; sleep 0.05; done; return 1; }
