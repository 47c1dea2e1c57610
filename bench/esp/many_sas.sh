#!/bin/bash
# ESP tunnel throughput with many Child SAs installed: two namespaces (veth 192.0.2.1/24 <->
# 192.0.2.2/24), `x2sec esp` with static keys on TUN devices on both sides; before the measured
# SA (198.51.100.0/24 === 203.0.113.0/24) each side installs N-1 other Child SAs (own SPIs,
# reqids and /32 selectors 10.1.x.y === 10.2.x.y) through the control interface, so the SAD
# (by SPI) and the SPD (by selectors; the measured policy is the last one installed) hold N
# entries each.  Single-stream iperf3 TCP for each N.
# In the same run (unless --no-charon, or strongSwan is not installed) the same through two
# strongSwan charons with kernel-libipsec (user-space ESP on their TUN devices ipsec0): charon A
# initiates N Child SAs with PSK (N-1 /32 host pairs in connections of at most 200 children, each
# its own IKE SA, then 198.51.100.0/24 === 203.0.113.0/24), charon B narrows them from /16s; the
# run waits at most --charon-bound seconds for B to hold all N, then measures what it holds.
# docs/esp.md ("Many SAs") explains it.
#
#   usage: sudo bench/esp/many_sas.sh [--x2sec PATH] [--sas "1 100 10000"] [--seconds S] [--smoke]
#                                     [--no-charon | --no-x2sec] [--charon-bound S]
#   exit: 0 all runs passed traffic, 1 otherwise, 2 usage, 77 cannot run here
set -euo pipefail
X2SEC=build/apps/x2sec SAS="1 100 10000" T=10 SMOKE=0 CHARON=1 CHARON_BOUND=300 X2SEC_RUN=1
while [ $# -gt 0 ]; do
  case "$1" in
    --x2sec) X2SEC=$2; shift ;;
    --sas) SAS=$2; shift ;;
    --seconds) T=$2; shift ;;
    --smoke) SMOKE=1; SAS="1 20"; T=1; CHARON_BOUND=30 ;;
    --no-charon) CHARON=0 ;;
    --no-x2sec) X2SEC_RUN=0 ;;
    --charon-bound) CHARON_BOUND=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
X2SEC=$(readlink -f "$X2SEC")
. "$(dirname "$(readlink -f "$0")")/../../tests/support/charon.sh"
NA=${X2SEC_BENCH_NS_PREFIX:-pb}-ea-$$ NB=${X2SEC_BENCH_NS_PREFIX:-pb}-eb-$$
DIR=$(mktemp -d /tmp/pb-esp.XXXXXX)
PIDS=()
log() { echo "[$(date +%T)] $*" >&2; }
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (network namespaces, TUN)" >&2; exit 77; }
command -v iperf3 >/dev/null || { echo "SKIP: needs iperf3" >&2; exit 77; }
[ -c /dev/net/tun ] || { echo "SKIP: needs /dev/net/tun" >&2; exit 77; }
[ -x "$X2SEC" ] || { echo "x2sec binary not found: $X2SEC" >&2; exit 2; }
stop_pid() {
  local p=$1
  kill -TERM "$p" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}
cleanup() {
  { exec 3>&- 4>&-; } 2>/dev/null || true
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  PIDS=()
  ip netns del $NA 2>/dev/null || true
  ip netns del $NB 2>/dev/null || true
}
trap 'cleanup; [ "${KEEP_DIR:-0}" = 1 ] && log "kept $DIR" || rm -rf $DIR' EXIT
trap 'exit 1' INT TERM

KA=000102030405060708090a0b0c0d0e0f10111213; KB=a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3
# Control commands of one side: N-1 extra Child SAs, then the measured one.
cmds() {  # $1 = A|B, $2 = N
  python3 - "$1" "$2" "$KA" "$KB" <<'PY'
import sys
side, n, ka, kb = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
kin, kout = (kb, ka) if side == "A" else (ka, kb)
for i in range(1, n):
    a, b = f"10.1.{i >> 8}.{i & 255}/32", f"10.2.{i >> 8}.{i & 255}/32"
    l, r = (a, b) if side == "A" else (b, a)
    si, so = (0x100000 + i, 0x200000 + i) if side == "A" else (0x200000 + i, 0x100000 + i)
    print(f"add spi-in={si:x} spi-out={so:x} key-in={kin} key-out={kout} local-ts={l} remote-ts={r} reqid={i + 1}")
l, r = ("198.51.100.0/24", "203.0.113.0/24") if side == "A" else ("203.0.113.0/24", "198.51.100.0/24")
si, so = (0x1001, 0x2002) if side == "A" else (0x2002, 0x1001)
print(f"add spi-in={si:x} spi-out={so:x} key-in={kin} key-out={kout} local-ts={l} remote-ts={r} reqid=1")
print("status-count")
PY
}

RESULTS=$DIR/results.txt; : >"$RESULTS"
FAILED=0
for N in $([ "$X2SEC_RUN" = 1 ] && echo "$SAS"); do
  cleanup
  ip netns add $NA; ip netns add $NB
  ip link add pbeva netns $NA type veth peer name pbevb netns $NB
  ip -n $NA addr add 192.0.2.1/24 dev pbeva
  ip -n $NB addr add 192.0.2.2/24 dev pbevb
  for x in "$NA pbeva" "$NB pbevb"; do set -- $x; ip -n $1 link set lo up; ip -n $1 link set $2 up; done
  for s in A B; do
    rm -f $DIR/ctl$s; mkfifo $DIR/ctl$s
    if [ $s = A ]; then ns=$NA L=192.0.2.1 R=192.0.2.2 ADDR=198.51.100.1/24 RT=203.0.113.0/24
    else ns=$NB L=192.0.2.2 R=192.0.2.1 ADDR=203.0.113.1/24 RT=198.51.100.0/24; fi
    ip netns exec $ns "$X2SEC" --log-level warn esp --tun pbx0 --tun-addr $ADDR --local $L --remote $R \
      --cipher aes128gcm --route $RT --control <$DIR/ctl$s >$DIR/$s.out 2>$DIR/$s.err &
    PIDS+=($!)
  done
  exec 3>$DIR/ctlA 4>$DIR/ctlB
  cmds A "$N" | grep -v status-count >&3
  cmds B "$N" | grep -v status-count >&4
  # wait until both answered every add ("ok" per command)
  for _ in $(seq 600); do
    a=$(grep -c '^ok' $DIR/A.out 2>/dev/null || true); b=$(grep -c '^ok' $DIR/B.out 2>/dev/null || true)
    [ "${a:-0}" -ge "$N" ] && [ "${b:-0}" -ge "$N" ] && break; sleep 0.1
  done
  if grep -q '^error' $DIR/A.out $DIR/B.out; then log "install failed: $(grep -h '^error' $DIR/*.out | head -2)"; FAILED=1; continue; fi
  ip netns exec $NA ping -c1 -W2 203.0.113.1 >/dev/null || { log "N=$N: tunnel not up"; FAILED=1; continue; }
  RSS_A=$(awk '/^VmRSS:/ {print $2}' /proc/${PIDS[0]}/status)
  ip netns exec $NB iperf3 -s -1 -B 203.0.113.1 >$DIR/iperf-s.log 2>&1 &
  sp=$!
  sleep 0.5
  C0=$(awk '{print $14 + $15}' /proc/${PIDS[0]}/stat)
  ip netns exec $NA iperf3 -c 203.0.113.1 -B 198.51.100.1 -t "$T" -f g >$DIR/iperf-c.log 2>&1 || true
  C1=$(awk '{print $14 + $15}' /proc/${PIDS[0]}/stat)
  wait $sp 2>/dev/null || true
  G=$(awk '/receiver/ {for (i = 1; i <= NF; i++) if ($i == "Gbits/sec") print $(i-1)}' $DIR/iperf-c.log | tail -1)
  echo status >&4
  sleep 0.5
  PKTS=$(grep -o '"esp.rx.packets":[0-9]*' $DIR/B.out | tail -1 | cut -d: -f2)
  NSA=$(grep '"sas"' $DIR/B.out | tail -1 | python3 -c 'import json,sys; print(len(json.loads(sys.stdin.read())["sas"]))' 2>/dev/null || echo "?")
  exec 3>&- 4>&-
  echo "$N ${G:-0} $(awk -v p="${PKTS:-0}" -v t="$T" 'BEGIN {printf "%.0f", p / t}') $NSA $RSS_A $(( (C1 - C0) )) $(cut -d' ' -f1 /proc/loadavg)" >>"$RESULTS"
  log "N=$N: $(tail -1 "$RESULTS")"
  [ -n "$G" ] || FAILED=1
done
cleanup

# ---------------------------------------------------------------- charon with kernel-libipsec
RESULTS_C=$DIR/results-charon.txt; : >"$RESULTS_C"
if [ "$CHARON" = 1 ] && ! charon_available; then
  log "charon: strongSwan with kernel-libipsec not installed, its rows are left out"; CHARON=0
fi
# charon A's swanctl.conf: the measured pair, N-1 host pairs, 200 children per connection.
charon_a_conf() {  # $1 = N
  python3 - "$1" <<'PY'
import sys
n = int(sys.argv[1])
# the measured one first, so that it is up even where charon does not bring all N up in the
# bound (libipsec's SPD is ordered by selector specificity, so the /32s come first anyway)
kids = [("net", "198.51.100.0/24", "203.0.113.0/24")]
kids += [(f"h{i}", f"10.1.{i >> 8}.{i & 255}/32", f"10.2.{i >> 8}.{i & 255}/32") for i in range(1, n)]
print("connections {")
for c in range(0, len(kids), 200):
    print(f"""  c{c // 200} {{
    version = 2
    local_addrs = 192.0.2.1
    remote_addrs = 192.0.2.2
    encap = yes
    unique = never
    proposals = aes128gcm16-prfsha256-ecp256
    dpd_delay = 0
    local {{
      auth = psk
      id = a.example.org
    }}
    remote {{
      auth = psk
      id = b.example.org
    }}
    children {{""")
    for name, l, r in kids[c:c + 200]:
        print(f"""      {name} {{
        local_ts = {l}
        remote_ts = {r}
        esp_proposals = aes128gcm16
        start_action = start
      }}""")
    print("    }\n  }")
print("}")
PY
  charon_secrets
}
charon_secrets() {
  cat <<'CONF'
secrets {
  ike-ab {
    id-a = a.example.org
    id-b = b.example.org
    secret = 0sbWFueS1zYXMtYmVuY2gtb25seS1wc2stbm90LWEtc2VjcmV0
  }
}
CONF
}
charon_b_conf() {
  cat <<'CONF'
connections {
  segw {
    version = 2
    local_addrs = 192.0.2.2
    remote_addrs = 192.0.2.1
    encap = yes
    unique = never
    proposals = aes128gcm16-prfsha256-ecp256
    dpd_delay = 0
    local {
      auth = psk
      id = b.example.org
    }
    remote {
      auth = psk
      id = a.example.org
    }
    children {
      hosts {
        local_ts = 10.2.0.0/16
        remote_ts = 10.1.0.0/16
        esp_proposals = aes128gcm16
      }
      net {
        local_ts = 203.0.113.0/24
        remote_ts = 198.51.100.0/24
        esp_proposals = aes128gcm16
      }
    }
  }
}
CONF
  charon_secrets
}
csw() { STRONGSWAN_CONF=$1/strongswan.conf timeout 120 swanctl "${@:2}" --uri "unix://$1/run/charon.vici"; }
charon_children() { grep -c 'CHILD_SA .* established' "$1/charon.log" 2>/dev/null || true; }
for N in $([ "$CHARON" = 1 ] && echo "$SAS"); do
  cleanup
  ip netns add $NA; ip netns add $NB
  ip link add pbeva netns $NA type veth peer name pbevb netns $NB
  ip -n $NA addr add 192.0.2.1/24 dev pbeva
  ip -n $NB addr add 192.0.2.2/24 dev pbevb
  ip -n $NA addr add 198.51.100.1/32 dev lo
  ip -n $NB addr add 203.0.113.1/32 dev lo
  for x in "$NA pbeva" "$NB pbevb"; do set -- $x; ip -n $1 link set lo up; ip -n $1 link set $2 up; done
  # kernel-libipsec installs a policy only where the host holds an address in its local selector
  for i in $(seq 1 $((N - 1))); do echo "addr add 10.1.$((i >> 8)).$((i & 255))/32 dev lo"; done | ip -n $NA -batch -
  for i in $(seq 1 $((N - 1))); do echo "addr add 10.2.$((i >> 8)).$((i & 255))/32 dev lo"; done | ip -n $NB -batch -
  CP=()
  for s in A B; do
    d=$DIR/c$s; rm -rf "$d"
    charon_write_conf "$d" --swanctl-load "$CHARON_SWANCTL_PLUGINS" --log "default = ${CHARON_LOG:-0}" \
      --log "flush_line = yes" "install_routes = no" "ikesa_table_size = 4096" "ikesa_table_segments = 16"
    if [ $s = A ]; then ns=$NA; charon_a_conf "$N" >"$d/swanctl/swanctl.conf"; else ns=$NB; charon_b_conf >"$d/swanctl/swanctl.conf"; fi
    STRONGSWAN_CONF=$d/strongswan.conf ip netns exec $ns \
      sh -c "mount --bind $d/run /run && exec /usr/lib/ipsec/charon" >"$d/charon.out" 2>&1 </dev/null &
    PIDS+=($!); CP+=($!)
  done
  ok=1
  for s in A B; do
    for _ in $(seq 100); do [ -S $DIR/c$s/run/charon.vici ] && break; sleep 0.05; done
    [ -S $DIR/c$s/run/charon.vici ] || { log "charon $s did not start: $(tail -3 $DIR/c$s/charon.out)"; ok=0; }
  done
  [ $ok = 1 ] || { FAILED=1; continue; }
  ip -n $NA link set ipsec0 up; ip -n $NB link set ipsec0 up
  ip -n $NA route add 203.0.113.0/24 dev ipsec0 src 198.51.100.1
  ip -n $NB route add 198.51.100.0/24 dev ipsec0 src 203.0.113.1
  csw $DIR/cB --load-all --file $DIR/cB/swanctl/swanctl.conf >$DIR/cB/load.log 2>&1 || { log "charon B: load failed: $(tail -2 $DIR/cB/load.log)"; FAILED=1; continue; }
  T0=$(date +%s%N)
  csw $DIR/cA --load-all --file $DIR/cA/swanctl/swanctl.conf >$DIR/cA/load.log 2>&1 || { log "charon A: load failed: $(tail -2 $DIR/cA/load.log)"; FAILED=1; continue; }
  # start_action = start: A initiates every child on load; wait until B holds all N (bounded)
  HELD=0
  for k in $(seq $((CHARON_BOUND * 2))); do
    HELD=$(charon_children $DIR/cB); [ "${HELD:-0}" -ge "$N" ] && break; sleep 0.5
    [ $((k % 60)) = 0 ] && log "charon N=$N: B holds $HELD Child SAs after $((k / 2)) s"
  done
  UP_S=$(awk -v a="$T0" -v b="$(date +%s%N)" 'BEGIN {printf "%.1f", (b - a) / 1e9}')
  log "charon N=$N: B holds $HELD Child SAs after $UP_S s"
  if ! ip netns exec $NA ping -c1 -W2 -I 198.51.100.1 203.0.113.1 >/dev/null; then
    log "charon N=$N: measured tunnel not up ($HELD of $N Child SAs within ${CHARON_BOUND} s)"
    echo "$N - - $HELD - - $(cut -d' ' -f1 /proc/loadavg) $UP_S" >>"$RESULTS_C"; FAILED=1; continue
  fi
  RSS_A=$(awk '/^VmRSS:/ {print $2}' /proc/${CP[0]}/status)
  ip netns exec $NB iperf3 -s -1 -B 203.0.113.1 >$DIR/iperf-s.log 2>&1 &
  sp=$!
  sleep 0.5
  R0=$(ip netns exec $NB cat /sys/class/net/ipsec0/statistics/rx_packets)
  C0=$(awk '{print $14 + $15}' /proc/${CP[0]}/stat)
  ip netns exec $NA iperf3 -c 203.0.113.1 -B 198.51.100.1 -t "$T" -f g >$DIR/iperf-c.log 2>&1 || true
  C1=$(awk '{print $14 + $15}' /proc/${CP[0]}/stat)
  R1=$(ip netns exec $NB cat /sys/class/net/ipsec0/statistics/rx_packets)
  wait $sp 2>/dev/null || true
  G=$(awk '/receiver/ {for (i = 1; i <= NF; i++) if ($i == "Gbits/sec") print $(i-1)}' $DIR/iperf-c.log | tail -1)
  HELD=$(charon_children $DIR/cB)
  echo "$N ${G:-0} $(awk -v p="$((R1 - R0))" -v t="$T" 'BEGIN {printf "%.0f", p / t}') $HELD $RSS_A $((C1 - C0)) $(cut -d' ' -f1 /proc/loadavg) $UP_S" >>"$RESULTS_C"
  log "charon N=$N: $(tail -1 "$RESULTS_C")"
  [ -n "$G" ] || FAILED=1
done
cleanup
printf "\nTCP through an ESP tunnel (iperf3 -t %s, one stream, AES-128-GCM in UDP 4500), %s CPUs\n" "$T" "$(nproc)"
printf "  %-16s %-10s %10s %12s %10s %12s %12s %6s %8s\n" "" "Child SAs" "Gbit/s" "ESP pkt/s" "SAs at B" "RSS A (KiB)" "CPU A ticks" "load" "up (s)"
while read -r n g p s r c l; do printf "  %-16s %-10s %10s %12s %10s %12s %12s %6s %8s\n" "x2sec esp" "$n" "$g" "$p" "$s" "$r" "$c" "$l" "-"; done <"$RESULTS"
while read -r n g p s r c l u; do printf "  %-16s %-10s %10s %12s %10s %12s %12s %6s %8s\n" "charon libipsec" "$n" "$g" "$p" "$s" "$r" "$c" "$l" "$u"; done <"$RESULTS_C"
exit $FAILED
