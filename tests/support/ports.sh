# Loopback ports for the shell tests (sourced by tests/ops/common.sh and
# tests/interop/openssl_cmp/common.sh).
#
# free_port SLOT: a TCP/UDP port derived from the PID and SLOT that no socket uses. It lies below
# Linux's ephemeral range (ip_local_port_range, 32768-60999 by default), where the port-0 sockets
# and outgoing connections of tests running at the same time would otherwise take the port picked
# here before the daemon binds it ("Address already in use" in CI, session 6).
free_port() {
  local lo=20000 span=12000 eph_lo
  eph_lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  if [ "$eph_lo" -le $((lo + span)) ]; then span=$((eph_lo - lo - 1)); fi
  local p=$(( lo + ($$ * 7 + ${1:-0} * 131) % span ))
  # Every state, not only listeners: a connected socket on the port also makes bind() fail.
  while ss -Htanu | awk '{print $5}' | grep -q ":$p\$"; do p=$((p + 1)); done
  echo $p
}
# wait_port PORT [TRIES]: until something listens on TCP PORT (TRIES x 50 ms, default 200).
wait_port() {
  for _ in $(seq "${2:-200}"); do
    ss -Hltn | awk '{print $4}' | grep -q ":$1\$" && return 0
    sleep 0.05
  done
  return 1
}
