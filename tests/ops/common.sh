# Shared helpers for the operations tests (tests/ops/*.sh): a temp dir, cleanup of the
# processes started, PASS/FAIL lines, loopback ports, and an IKE daemon pair on 127.0.0.1.
set -euo pipefail
X2SEC=${1:?usage: $0 path/to/x2sec}
X2SEC=$(readlink -f "$X2SEC")
BUILD_DIR=${2:+$(readlink -f "$2")}  # the build directory (deb_package.sh)
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$SRC/tests/support/ports.sh"
D=$(mktemp -d /tmp/x2sec-ops.XXXXXX)
PIDS=()
cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ $rc -ne 0 ] || [ "${FAILS:-0}" -ne 0 ]; then echo "--- FAILED (rc=$rc); logs:"; tail -n 40 "$D"/*.log 2>/dev/null || true; fi
  [ "${X2SEC_OPS_KEEP:-0}" = 1 ] && echo "kept $D" || rm -rf "$D"
}
trap cleanup EXIT
cd "$D"
FAILS=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
finish() { if [ "$FAILS" -ne 0 ]; then echo "$FAILS check(s) failed"; exit 1; fi; echo "all checks passed"; exit 0; }
wait_file() { for _ in $(seq 200); do [ -e "$1" ] && return 0; sleep 0.05; done; return 1; }

# ike_pair NAME_A NAME_B PORT_BASE [EXTRA_A] [EXTRA_B]: writes $D/a.toml and $D/b.toml, two
# PSK peers on 127.0.0.1 (IKE ports PORT_BASE..+3), each with a control socket in $D; A
# initiates automatically.  EXTRA_* are appended to the [runtime]-less top (e.g. a [metrics]).
ike_pair() {
  local base=$1 extra_a=${2:-} extra_b=${3:-}
  local side port rport natt rnatt id rid auto extra
  for side in a b; do
    if [ $side = a ]; then port=$base; natt=$((base + 1)); rport=$((base + 2)); rnatt=$((base + 3)); id=a; rid=b; auto=true; extra=$extra_a
    else port=$((base + 2)); natt=$((base + 3)); rport=$base; rnatt=$((base + 1)); id=b; rid=a; auto=false; extra=$extra_b; fi
    cat > $side.toml <<TOML
[runtime]
control_socket = "$D/$side.sock"
log_file = "$D/$side-ike.log"
$extra

[[peer]]
name = "peer-$rid"
local_addr = "127.0.0.1"
remote_addr = "127.0.0.1"
local_port = $port
local_natt_port = $natt
remote_port = $rport
remote_natt_port = $rnatt
local_id = "fqdn:$id.example.org"
remote_id = "$rid.example.org"
auth = "psk"
psk = "hex:00112233445566778899aabbccddeeff"
ike_proposals = ["aes128gcm16-prfsha256-ecp256"]
auto_initiate = $auto

  [[peer.child]]
  name = "x2"
  local_ts = "$( [ $side = a ] && echo 198.51.100.0/24 || echo 203.0.113.0/24 )"
  remote_ts = "$( [ $side = a ] && echo 203.0.113.0/24 || echo 198.51.100.0/24 )"
  esp_proposals = ["aes128gcm16"]
TOML
  done
}
# Starts `ike run` for side a or b (after ike_pair); waits for its control socket.
start_ike() {
  "$X2SEC" ike run --config "$D/$1.toml" > "$D/$1-run.log" 2>&1 &
  PIDS+=($!)
  wait_file "$D/$1.sock"
}
# Waits until side $1 lists an ESTABLISHED IKE SA with an INSTALLED Child SA.
wait_established() {
  for _ in $(seq 100); do
    "$X2SEC" ike list-sas --config "$D/$1.toml" --json 2>/dev/null | grep -q '"INSTALLED"' && return 0
    sleep 0.1
  done
  return 1
}
