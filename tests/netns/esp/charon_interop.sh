#!/bin/bash
# Interop: x2sec esp --ike-config (initiator, namespace x2sxA<id>) against strongSwan charon
# with kernel-libipsec (responder, x2sxB<id>) on a veth pair 192.0.2.1/24 <-> 192.0.2.2/24;
# Child SA 198.51.100.0/24 === 203.0.113.0/24, IKEv2 PSK, AES-GCM-16 in UDP 4500.
# Checks: ping both ways, 2 MB over TCP both ways (sha256), Child SA rekey by charon, then
# ping and TCP again.  Exit 0 = pass, 77 = skipped (no charon/kernel-libipsec), else failure.
#   usage: charon_interop.sh path/to/x2sec
set -u
X=$(readlink -f "$1")
ID=${X2S_ID:-$$}
NA=x2sxA$ID NB=x2sxB$ID
D=$(mktemp -d /tmp/x2sec-interop.XXXXXX)
PIDS=()
fail() { echo "FAIL: $*"; tail -20 $D/x2sec.log; grep -iE "error|fail" $D/charon.log | tail -5; exit 1; }
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  charon_stop $D
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  ip netns del $NA 2>/dev/null; ip netns del $NB 2>/dev/null
  rm -rf $D
}
trap cleanup EXIT
. "$(dirname "$(readlink -f "$0")")/../../support/charon.sh"
charon_available || { echo "SKIP: strongSwan charon with kernel-libipsec not installed"; exit 77; }
command -v nc >/dev/null || { echo "SKIP: nc (netcat-openbsd) not installed"; exit 77; }
ip netns add $NA && ip netns add $NB || { echo "SKIP: cannot create network namespaces"; exit 77; }
ip link add x2sva netns $NA type veth peer name x2svb netns $NB
ip -n $NA addr add 192.0.2.1/24 dev x2sva; ip -n $NB addr add 192.0.2.2/24 dev x2svb
for x in "$NA x2sva" "$NB x2svb"; do set -- $x; ip -n $1 link set lo up; ip -n $1 link set $2 up; done
ip -n $NB addr add 203.0.113.1/32 dev lo
charon_write_conf $D --log "default = 1" --log "ike = 2"
charon_write_swanctl $D x2 192.0.2.2 192.0.2.1 b.example.org a.example.org 203.0.113.0/24 198.51.100.0/24 \
  aes128gcm16 0x00112233445566778899aabbccddeeff yes
PIDS+=($(charon_start $NB $D))
charon_load $D
cat > $D/A.toml <<TOML
[runtime]
control_socket = "$D/A.sock"

[[peer]]
name = "charon"
local_addr = "192.0.2.1"
remote_addr = "192.0.2.2"
local_id = "fqdn:a.example.org"
remote_id = "b.example.org"
auth = "psk"
psk = "hex:00112233445566778899aabbccddeeff"
force_encap = true
auto_initiate = true
ike_proposals = ["aes128gcm16-prfsha256-ecp256"]

  [[peer.child]]
  name = "x2"
  local_ts = "198.51.100.0/24"
  remote_ts = "203.0.113.0/24"
  esp_proposals = ["aes128gcm16"]
TOML
ip netns exec $NA $X esp --tun x2s0 --tun-addr 198.51.100.1/24 --local 192.0.2.1 --route 203.0.113.0/24 --ike-config $D/A.toml > $D/x2sec.log 2>&1 &
PIDS+=($!)
sw() { charon_swanctl $D "$@"; }
ping_both() {
  local ok=0
  for _ in $(seq 15); do ip netns exec $NA ping -c 1 -W 1 203.0.113.1 >/dev/null 2>&1 && { ok=1; break; }; done
  [ $ok = 1 ] || fail "ping x2sec -> charon ($1)"
  ip netns exec $NB ping -c 2 -W 2 -I 203.0.113.1 198.51.100.1 >/dev/null 2>&1 || fail "ping charon -> x2sec ($1)"
  echo "ping both ways: ok ($1)"
}
tcp_both() {
  head -c 2000000 /dev/urandom > $D/data
  local want=$(sha256sum < $D/data)
  ip netns exec $NB sh -c "nc -l 203.0.113.1 5001 > $D/got1" & local l=$!
  sleep 0.3
  timeout 30 ip netns exec $NA nc -N 203.0.113.1 5001 < $D/data || fail "TCP x2sec -> charon connect ($1)"
  wait $l
  [ "$(sha256sum < $D/got1)" = "$want" ] || fail "TCP x2sec -> charon bytes differ ($1)"
  ip netns exec $NA sh -c "nc -l 198.51.100.1 5002 > $D/got2" & l=$!
  sleep 0.3
  timeout 30 ip netns exec $NB nc -N -s 203.0.113.1 198.51.100.1 5002 < $D/data || fail "TCP charon -> x2sec connect ($1)"
  wait $l
  [ "$(sha256sum < $D/got2)" = "$want" ] || fail "TCP charon -> x2sec bytes differ ($1)"
  echo "TCP 2 MB both ways, sha256 equal: ok ($1)"
}
ping_both "first Child SA"
tcp_both "first Child SA"
OLD=$(sw --list-sas 2>/dev/null | awk '/ in  /{print $2; exit}' | tr -d ,)
sw --rekey --child x2 >/dev/null 2>&1 || fail "swanctl --rekey --child x2"
sleep 1
NEW=$(sw --list-sas 2>/dev/null | awk '/ in  /{print $2}' | tr -d , | tr '\n' ' ')
echo "charon inbound SPI before rekey: $OLD, after: $NEW"
grep -q "installed Child SA" $D/x2sec.log || fail "no Child SA installed in x2sec"
[ "$(grep -c 'installed Child SA' $D/x2sec.log)" -ge 2 ] || fail "x2sec did not install the rekeyed Child SA"
ping_both "after rekey"
tcp_both "after rekey"
echo PASS
exit 0
