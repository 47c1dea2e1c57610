#!/bin/bash
# TCP throughput through an ESP tunnel between two network namespaces: x2sec (user-space ESP
# on TUN devices, static keys) beside strongSwan charon with kernel-libipsec (user-space ESP on
# its ipsec0 TUN device, IKEv2 PSK), same topology, same run, same iperf3 flags.
#
#   usage: sudo bench/esp/tunnel_throughput.sh [seconds=10] [path/to/x2sec] [cipher=aes128gcm]
#   X2SEC_ESP_ARGS="--no-coalesce" ...   extra options for both `x2sec esp` (A/B comparisons)
#
# Topology: x2sbA veth 192.0.2.1/24 <-> x2sbB veth 192.0.2.2/24; inner 198.51.100.1 (A) and
# 203.0.113.1 (B); Child SA 198.51.100.0/24 === 203.0.113.0/24, AES-GCM-16 in UDP 4500.
# Prints Gbit/s (iperf3 receiver) and ESP packets/s (data direction) for both.
set -euo pipefail
T=${1:-10}
X2SEC=$(readlink -f "${2:-build/apps/x2sec}")
CIPHER=${3:-aes128gcm}
NA=x2sbA NB=x2sbB
DIR=$(mktemp -d /tmp/x2sec-bench.XXXXXX)
PIDS=()
log() { echo "[$(date +%T)] $*" >&2; }
# charon in a namespace: shared with tests/netns/esp/charon_interop.sh
. "$(dirname "$(readlink -f "$0")")/../../tests/support/charon.sh"

stop_pid() {  # stop one process we started (by pid), wait for it
  local p=$1
  kill -TERM "$p" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}
cleanup() {
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  PIDS=()
  for n in A B; do charon_stop $DIR/$n; done
  ip netns del $NA 2>/dev/null || true
  ip netns del $NB 2>/dev/null || true
}
trap 'cleanup; rm -rf $DIR' EXIT

[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, TUN)" >&2; exit 2; }
command -v iperf3 >/dev/null || { echo "needs iperf3 (apt-get install iperf3)" >&2; exit 2; }
[ -x "$X2SEC" ] || { echo "x2sec binary not found: $X2SEC" >&2; exit 2; }

topology() {
  cleanup
  ip netns add $NA; ip netns add $NB
  ip link add x2sbva netns $NA type veth peer name x2sbvb netns $NB
  ip -n $NA addr add 192.0.2.1/24 dev x2sbva
  ip -n $NB addr add 192.0.2.2/24 dev x2sbvb
  for x in "$NA x2sbva" "$NB x2sbvb"; do set -- $x; ip -n $1 link set lo up; ip -n $1 link set $2 up; done
}

iperf() {  # prints receiver Gbit/s
  ip netns exec $NB iperf3 -s -1 -B 203.0.113.1 >$DIR/iperf-s.log 2>&1 &
  local sp=$!
  sleep 0.5
  ip netns exec $NA iperf3 -c 203.0.113.1 -B 198.51.100.1 -t "$T" -f g >$DIR/iperf-c.log 2>&1 || true
  wait $sp 2>/dev/null || true
  awk '/receiver/ {for (i = 1; i <= NF; i++) if ($i == "Gbits/sec") print $(i-1)}' $DIR/iperf-c.log | tail -1
}

# ------------------------------------------------------------------ x2sec
topology
KA=000102030405060708090a0b0c0d0e0f10111213; KB=a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3
if [ "$CIPHER" = aes256gcm ]; then KA=${KA}${KA:0:32}; KB=${KB}${KB:0:32}; fi
ip netns exec $NA "$X2SEC" --log-level warn esp --tun x2s0 --tun-addr 198.51.100.1/24 --local 192.0.2.1 --remote 192.0.2.2 \
  --spi-in 1001 --spi-out 2002 --cipher $CIPHER --key-in $KB --key-out $KA \
  --local-ts 198.51.100.0/24 --remote-ts 203.0.113.0/24 --route 203.0.113.0/24 ${X2SEC_ESP_ARGS:-} >$DIR/x2sec-a.out 2>$DIR/x2sec-a.err &
PA=$!; PIDS+=($PA)
ip netns exec $NB "$X2SEC" --log-level warn esp --tun x2s0 --tun-addr 203.0.113.1/24 --local 192.0.2.2 --remote 192.0.2.1 \
  --spi-in 2002 --spi-out 1001 --cipher $CIPHER --key-in $KA --key-out $KB \
  --local-ts 203.0.113.0/24 --remote-ts 198.51.100.0/24 --route 198.51.100.0/24 ${X2SEC_ESP_ARGS:-} >$DIR/x2sec-b.out 2>$DIR/x2sec-b.err &
PB=$!; PIDS+=($PB)
for _ in $(seq 50); do grep -q ready $DIR/x2sec-a.out 2>/dev/null && grep -q ready $DIR/x2sec-b.out 2>/dev/null && break; sleep 0.1; done
ip netns exec $NA ping -c1 -W2 203.0.113.1 >/dev/null || { echo "x2sec tunnel not up" >&2; cat $DIR/x2sec-*.err >&2; exit 1; }
log "x2sec tunnel up; iperf3 -t $T"
X_G=$(iperf)
stop_pid $PA; stop_pid $PB; PIDS=()
X_PKTS=$(grep -o '"esp.rx.packets":[0-9]*' $DIR/x2sec-b.err | tail -1 | cut -d: -f2)
X_GSO=$(grep -o "\"esp.tx.gso_super_packets\":[0-9]*" $DIR/x2sec-a.err | tail -1 | cut -d: -f2)
X_SUPER=$(grep -o '"esp.rx.tun_super_packets":[0-9]*' $DIR/x2sec-b.err | tail -1 | cut -d: -f2)
X_SEGS=$(grep -o '"esp.rx.tun_coalesced_segments":[0-9]*' $DIR/x2sec-b.err | tail -1 | cut -d: -f2)
X_DROPS=$(grep -o '"esp.drop.[a-z_]*":[1-9][0-9]*' $DIR/x2sec-b.err | tr '\n' ' ' || true)

# ------------------------------------------------------------------ charon (kernel-libipsec)
C_G=n/a; C_PKTS=0
if charon_available; then
  topology
  ip -n $NA addr add 198.51.100.1/32 dev lo
  ip -n $NB addr add 203.0.113.1/32 dev lo
  ESP=aes128gcm16; [ "$CIPHER" = aes256gcm ] && ESP=aes256gcm16
  for n in A B; do
    d=$DIR/$n
    if [ $n = A ]; then L=192.0.2.1 R=192.0.2.2 LT=198.51.100.0/24 RT=203.0.113.0/24 LI=a.example.org RI=b.example.org
    else L=192.0.2.2 R=192.0.2.1 LT=203.0.113.0/24 RT=198.51.100.0/24 LI=b.example.org RI=a.example.org; fi
    charon_write_conf $d --log "default = 1" --log "ike = 1"
    # Same IDs on both sides, so the secret's id-a/id-b pair matches either way.
    charon_write_swanctl $d net $L $R $LI $RI $LT $RT $ESP x2sec-benchmark-only-psk yes
    PIDS+=($(charon_start x2sb$n $d))
  done
  sw() { local n=$1; shift; charon_swanctl $DIR/$n "$@"; }
  for n in A B; do charon_load $DIR/$n; done
  if sw A --initiate --child net --timeout 20 >$DIR/initiate.log 2>&1; then
    sleep 0.3
    ip netns exec $NA ping -c1 -W2 -I 198.51.100.1 203.0.113.1 >/dev/null || log "charon tunnel: ping failed"
    log "charon tunnel up; iperf3 -t $T"
    C_G=$(iperf)
    C_PKTS=$(sw B --list-sas 2>/dev/null | awk '/ in  / {for (i = 1; i <= NF; i++) if ($i ~ /^packets/) print $(i-1)}' | head -1)
  else
    log "charon: initiate failed ($(tail -2 $DIR/initiate.log | tr '\n' ' '))"
  fi
  cleanup
else
  log "strongSwan charon with kernel-libipsec not installed: reference skipped"
fi

pps() { awk -v p="${1:-0}" -v t="$T" 'BEGIN { printf "%.0f", p / t }'; }
printf "\nload average at the end: %s\n" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf "TCP through the tunnel, iperf3 %s s, one stream, %s, 2 namespaces on this host (%s CPUs)\n" "$T" "$CIPHER" "$(nproc)"
printf "  %-34s %8s Gbit/s  %9s ESP pkt/s\n" "x2sec esp (TUN TSO, UDP GSO/GRO)" "${X_G:-n/a}" "$(pps "$X_PKTS")"
printf "  %-34s %8s Gbit/s  %9s ESP pkt/s\n" "strongSwan charon kernel-libipsec" "${C_G:-n/a}" "$(pps "$C_PKTS")"
if [ -n "${X_G:-}" ] && [ "$C_G" != n/a ] && [ -n "$C_G" ]; then
  awk -v x="$X_G" -v c="$C_G" 'BEGIN { if (c > 0) printf "  ratio x2sec/charon: %.1fx (goal >= 5x)\n", x / c }'
fi
echo "  x2sec sender: ${X_GSO:-0} TSO super-packets segmented in user space"
echo "  x2sec receiver: ${X_SEGS:-0} decrypted segments written to TUN as ${X_SUPER:-0} TSO super-packets"
[ -n "$X_DROPS" ] && echo "  x2sec receiver drops: $X_DROPS"
exit 0
