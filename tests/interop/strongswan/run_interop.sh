#!/bin/bash
# x2sec <-> strongSwan 5.9 (charon) interop, one case per run:
#
#   run_interop.sh CASE X2SEC_BINARY
#   CASE: fixture-psk|fixture-cert  charon <-> charon through this harness (proves the fixture)
#         psk-initiator        x2sec initiates, PSK
#         psk-responder        charon initiates, PSK
#         cert-initiator       x2sec initiates, ECDSA P-256 certificates from one test CA
#         cert-responder       charon initiates, certificates
#         <case>-esp           also carry traffic: x2sec runs --dataplane tun (user-space ESP
#                              on TUN x2s0 with 198.51.100.1), ping 203.0.113.1 behind charon
#                              after establishment and after each rekey
#         <case>-v6            outer IPv6: the veth carries 2001:db8:1::1 / 2001:db8:1::2 and
#                              IKE (and the UDP-encapsulated ESP) runs over them
#         <case>-frag          IKE fragmentation (RFC 7383) with a 576-octet fragment size on
#                              both ends: the IKE_AUTH messages with certificates are split
#                              and reassembled both ways (checked in charon's log and x2sec's
#                              counters)
#         <case>-pkcs11        (cert cases) the x2sec side's key is generated inside a SoftHSM2
#                              token by `x2sec pki issue-server --key-token` and configured as
#                              a pkcs11: URI: every IKE_AUTH signature of x2sec is made in the
#                              token; pkcs11-tool confirms the key is sensitive and never
#                              extractable
#         <case>-dpd           liveness checks, from the case's initiator:
#                              psk-initiator-dpd: x2sec's DPD every 1 s answered by charon,
#                              then charon is killed and x2sec must declare the peer dead and
#                              remove the SAs;
#                              cert-responder-dpd: charon's DPD every 1 s (retransmission
#                              shortened to 1 s x1.4, 3 tries: ~7 s) answered by x2sec, then
#                              x2sec is killed and charon must give up and drop the IKE SA
#
# Each case: IKE SA + Child SA established (checked on both ends: same IKE SPIs, Child SPIs
# crossed in/out), Child SA rekey, IKE SA rekey, delete; the initiator of the case drives
# every operation, so the other end exercises the responder side.
#
# Topology: two namespaces created here and removed on exit (also on failure):
#   x2sX<pid>: veth 192.0.2.1/24  (x2sec, or a charon for the fixture case)
#   x2sC<pid>: veth 192.0.2.2/24  (charon; kernel-libipsec, so it floats to UDP 4500)
#   Child SA 198.51.100.0/24 <=> 203.0.113.0/24 (no traffic: x2sec has no data plane yet)
# Exit 77 = skipped (not root, no charon, no namespaces, or a capability listed in
# engine_status.txt that the engine cannot do yet); the reason is printed.
set -uo pipefail
CASE=${1:?case}
X2SEC=${2:?x2sec binary}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../../support/charon.sh"
CHARON=/usr/lib/ipsec/charon
TAG=$$
NS_X=x2sX$TAG NS_C=x2sC$TAG
BASE=$(mktemp -d /tmp/x2sec-interop-$CASE-XXXXXX)
KEEP=${X2SEC_INTEROP_KEEP:-0}
TIMEOUT=20

log() { echo "[$(date +%T.%3N)] $*"; }
skip() { echo "SKIP: $*"; exit 77; }
FAILED=0
fail() { echo "FAIL: $*"; FAILED=1; dump; exit 1; }

ESP=0 V6=0 FRAG=0 DPD=0 P11=0
for _ in 1 2 3 4; do
  case "$CASE" in
    *-pkcs11) P11=1; CASE=${CASE%-pkcs11};;
    *-esp) ESP=1; CASE=${CASE%-esp};;
    *-v6) V6=1; CASE=${CASE%-v6};;
    *-frag) FRAG=1; CASE=${CASE%-frag};;
    *-dpd) DPD=1; CASE=${CASE%-dpd};;
  esac
done
# Outer addresses of the x2sec side (X) and of charon (C).
if [ $V6 = 1 ]; then OUT_X=2001:db8:1::1 OUT_C=2001:db8:1::2 PFX=64; else OUT_X=192.0.2.1 OUT_C=192.0.2.2 PFX=24; fi
case "$CASE" in fixture-psk|fixture-cert) MODE=${CASE#fixture-}; ROLE=initiator; CASE=fixture;;
  psk-initiator|psk-responder|cert-initiator|cert-responder) MODE=${CASE%%-*}; ROLE=${CASE#*-};;
  *) echo "unknown case $CASE"; exit 2;; esac
# ROLE: x2sec's role (fixture: the charon in place of x2sec initiates)

[ "$(id -u)" = 0 ] || skip "needs root (network namespaces, charon); CI runs it as root"
[ -x $CHARON ] && command -v swanctl >/dev/null || skip "strongSwan charon/swanctl not installed (scripts/deps.sh installs them)"
[ -f /usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so ] || skip "kernel-libipsec plugin missing (libcharon-extra-plugins)"
command -v openssl >/dev/null && command -v python3 >/dev/null || skip "needs openssl and python3"
[ "$CASE" = fixture ] || [ -x "$X2SEC" ] || skip "x2sec binary $X2SEC not built"

# Capabilities the engine does not have yet (one "capability: reason" per line); a case that
# reaches one of them stops there and reports SKIP with the reason, after checking all before.
engine_cannot() {  # $1 = capability
  [ "$CASE" = fixture ] && return 1
  grep -q "^$1:" "$HERE/engine_status.txt" 2>/dev/null
}
engine_limit() {  # $1 = capability
  local why; why=$(grep "^$1:" "$HERE/engine_status.txt" | cut -d: -f2-)
  log "stages up to here passed"
  skip "engine cannot yet $1:$why (tests/interop/strongswan/engine_status.txt)"
}

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for f in $BASE/C/run/charon.pid $BASE/X/run/charon.pid; do
    [ -f $f ] && p=$(cat $f) && grep -qx charon /proc/$p/comm 2>/dev/null && kill $p 2>/dev/null
  done
  sleep 0.2
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  ip netns del $NS_X 2>/dev/null; ip netns del $NS_C 2>/dev/null
  if [ "$KEEP" = 1 ] || [ "$FAILED" = 1 ]; then echo "logs kept in $BASE"; else rm -rf "$BASE"; fi
}
trap cleanup EXIT
dump() {
  for f in $BASE/C/charon.log $BASE/X/charon.log $BASE/x2sec.log; do
    [ -f $f ] && { echo "----- tail $f"; tail -40 $f; }
  done
}

ip netns add $NS_X 2>/dev/null || skip "cannot create network namespaces here"
ip netns add $NS_C || fail "netns"
ip link add vx$TAG netns $NS_X type veth peer name vc$TAG netns $NS_C || fail "veth"
if [ $V6 = 1 ]; then
  ip -n $NS_X addr add $OUT_X/$PFX dev vx$TAG nodad; ip -n $NS_C addr add $OUT_C/$PFX dev vc$TAG nodad
else
  ip -n $NS_X addr add $OUT_X/$PFX dev vx$TAG; ip -n $NS_C addr add $OUT_C/$PFX dev vc$TAG
fi
for n in $NS_X $NS_C; do ip -n $n link set lo up; done
# inner addresses inside the traffic selectors (kernel-libipsec installs its routes from them)
[ $ESP = 1 ] || ip -n $NS_X addr add 198.51.100.1/32 dev lo   # with ESP it sits on x2sec's TUN
ip -n $NS_C addr add 203.0.113.1/32 dev lo
ip -n $NS_X link set vx$TAG up; ip -n $NS_C link set vc$TAG up
for _ in $(seq 20); do ip netns exec $NS_X ping -c1 -W1 $OUT_C >/dev/null 2>&1 && break; sleep 0.2; done
ip netns exec $NS_X ping -c1 -W2 $OUT_C >/dev/null 2>&1 || fail "veth $OUT_X <-> $OUT_C does not pass traffic"

# ------------------------------------------------------------------ credentials
PSK_HEX=$(openssl rand -hex 32)
if [ "$MODE" = cert ]; then
  P=$BASE/pki; mkdir -p $P
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $P/ca.key 2>/dev/null
  openssl req -x509 -new -key $P/ca.key -subj "/C=XX/O=x2sec interop/CN=x2sec Interop Root CA" -days 30 -sha256 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out $P/ca.crt
  for n in x2sec charon; do
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $P/$n.key 2>/dev/null
    openssl req -new -key $P/$n.key -subj "/C=XX/O=x2sec interop/CN=$n.example.org" -out $P/$n.csr
    printf "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:$n.example.org\n" > $P/$n.ext
    openssl x509 -req -in $P/$n.csr -CA $P/ca.crt -CAkey $P/ca.key -CAcreateserial -days 30 -sha256 -extfile $P/$n.ext -out $P/$n.crt 2>/dev/null
  done
  chmod 600 $P/*.key
  log "PKI: ECDSA P-256 CA + x2sec/charon certificates in $P"
fi
X2KEY=$BASE/pki/x2sec.key
if [ $P11 = 1 ]; then
  [ "$MODE" = cert ] || { echo "-pkcs11 needs a cert case"; exit 2; }
  P11MOD=/usr/lib/softhsm/libsofthsm2.so
  [ -f $P11MOD ] && command -v softhsm2-util >/dev/null || skip "softhsm2 not installed (scripts/deps.sh installs it)"
  command -v pkcs11-tool >/dev/null || skip "pkcs11-tool not installed (opensc)"
  H=$BASE/softhsm; mkdir -p $H/tokens
  printf "directories.tokendir = $H/tokens\nobjectstore.backend = file\n" > $H/softhsm2.conf
  echo 1234 > $H/pin; chmod 600 $H/pin
  export SOFTHSM2_CONF=$H/softhsm2.conf X2SEC_PKCS11_MODULE=$P11MOD
  softhsm2-util --init-token --free --label x2sec-ike --pin 1234 --so-pin 12345678 >/dev/null || fail "softhsm2-util --init-token"
  # The x2sec side's key is generated in the token and certified by the interop CA.
  cp $P/ca.crt $P/chain.pem
  rm -f $P/x2sec.key $P/x2sec.crt
  "$X2SEC" pki issue-server --ca-dir $P --subject "/C=XX/O=x2sec interop/CN=x2sec.example.org" --dns x2sec.example.org \
      --days 30 --key-token "pkcs11:token=x2sec-ike;object=ike?pin-source=file:$H/pin" \
      --out-key $P/x2sec.key --out-cert $P/x2sec.crt > $BASE/p11.log 2>&1 || fail "x2sec pki issue-server --key-token: $(cat $BASE/p11.log)"
  X2KEY=$(cat $P/x2sec.key)
  case "$X2KEY" in pkcs11:*) ;; *) fail "the key file does not hold a pkcs11: URI";; esac
  pkcs11-tool --module $P11MOD --login --pin 1234 --token-label x2sec-ike --list-objects --type privkey > $BASE/p11-objects.log 2>&1
  grep -q "never extractable" $BASE/p11-objects.log && grep -q "sensitive" $BASE/p11-objects.log \
    || fail "the token key is not sensitive/never extractable: $(cat $BASE/p11-objects.log)"
  log "x2sec's key in SoftHSM2 token x2sec-ike: $X2KEY (sensitive, never extractable)"
fi

# ------------------------------------------------------------------ charon instances
# $1 = dir name (C or X), $2 local addr, $3 remote addr, $4 local id, $5 remote id,
# $6 local ts, $7 remote ts, $8 cert basename
mk_charon() {
  local d=$BASE/$1
  mkdir -p $d/run $d/swanctl/{x509,x509ca,private}
  # Not $CHARON_PLUGINS: x509, pkcs1 and pkcs8 come before openssl here, and revocation and
  # constraints are loaded.
  local plugins="random nonce pem pkcs1 pkcs8 x509 revocation constraints pubkey openssl kdf"
  charon_write_conf $d --load "$plugins kernel-libipsec kernel-netlink socket-default vici" \
    --swanctl-load "$CHARON_SWANCTL_PLUGINS" \
    --log "time_format = %T" --log "ike_name = yes" --log "default = 1" --log "ike = 2" --log "enc = 1" --log "cfg = 2" \
    --log "flush_line = yes" \
    "fragment_size = $CH_FRAG_SIZE" "install_routes = yes" \
    "retransmit_tries = $CH_RTRIES" "retransmit_timeout = $CH_RTO" "retransmit_base = $CH_RBASE"
  local la lr secrets=""
  if [ "$MODE" = cert ]; then
    cp $BASE/pki/ca.crt $d/swanctl/x509ca/; cp $BASE/pki/$8.crt $d/swanctl/x509/; cp $BASE/pki/$8.key $d/swanctl/private/
    la="auth = pubkey
      certs = $8.crt"
    lr="auth = pubkey"
  else
    la="auth = psk"; lr="auth = psk"
    secrets="secrets {
  ike-x2 {
    id-a = $4
    id-b = $5
    secret = 0x$PSK_HEX
  }
}"
  fi
  cat > $d/swanctl/swanctl.conf <<SEOF
connections {
  x2 {
    version = 2
    local_addrs = $2
    remote_addrs = $3
    encap = yes
    fragmentation = yes
    proposals = aes128gcm16-prfsha256-ecp256
    rekey_time = 0
    dpd_delay = $CH_DPD
    local {
      $la
      id = $4
    }
    remote {
      $lr
      id = $5
    }
    children {
      net {
        mode = tunnel
        local_ts = $6
        remote_ts = $7
        esp_proposals = aes128gcm16
        rekey_time = 0
        start_action = none
      }
    }
  }
}
$secrets
SEOF
}
start_charon() {  # $1 = C|X, $2 = netns
  local d=$BASE/$1
  STRONGSWAN_CONF=$d/strongswan.conf ip netns exec $2 sh -c "mount --bind $d/run /run && exec $CHARON" >$d/charon.stdout 2>&1 </dev/null &
  pids+=($!)
  for _ in $(seq 100); do [ -S $d/run/charon.vici ] && break; sleep 0.05; done
  [ -S $d/run/charon.vici ] || fail "charon $1 did not start: $(cat $d/charon.stdout)"
  sw $1 --load-all --file $d/swanctl/swanctl.conf >$d/load.log 2>&1 || fail "swanctl --load-all ($1): $(cat $d/load.log)"
}
sw() { local n=$1; shift; STRONGSWAN_CONF=$BASE/$n/strongswan.conf swanctl "$@" --uri unix://$BASE/$n/run/charon.vici; }

CH_FRAG_SIZE=$([ $FRAG = 1 ] && echo 576 || echo 1280)
CH_DPD=0  # charon sends no DPD of its own: x2sec's every second keeps it from ever needing to
CH_RTRIES=3 CH_RTO=2.0 CH_RBASE=1.8   # charon gives up after 2+3.6+6.5+11.7 = ~24 s
if [ $DPD = 1 ] && [ "$ROLE" = responder ]; then
  # charon checks liveness every second (x2sec's DPD is off, so charon's is the only one and
  # always due) and gives up on a silent peer after 1+1.4+2.0+2.7 = ~7.1 s.
  CH_DPD=1s CH_RTRIES=3 CH_RTO=1.0 CH_RBASE=1.4
fi
mk_charon C $OUT_C $OUT_X charon.example.org x2sec.example.org 203.0.113.0/24 198.51.100.0/24 charon
start_charon C $NS_C
log "charon up in $NS_C ($OUT_C, ports 500/4500, kernel-libipsec)"

# ------------------------------------------------------------------ x2sec (or a second charon)
CTL=$BASE/x2sec.sock
x2() { "$X2SEC" ike "$@" --control $CTL; }
if [ "$CASE" = fixture ]; then
  mk_charon X $OUT_X $OUT_C x2sec.example.org charon.example.org 198.51.100.0/24 203.0.113.0/24 x2sec
  start_charon X $NS_X
  log "fixture: second charon up in $NS_X ($OUT_X)"
else
  if [ "$MODE" = cert ]; then
    AUTH="auth = \"cert\"
credential = \"me\""
    CRED="[[trust_anchor]]
label = \"interop-ca\"
file = \"$BASE/pki/ca.crt\"

[[credential]]
name = \"me\"
key = \"$X2KEY\"
certs = [\"$BASE/pki/x2sec.crt\"]"
  else
    AUTH="auth = \"psk\"
psk = \"hex:$PSK_HEX\""
    CRED=""
  fi
  X_RTO=$([ $DPD = 1 ] && echo 1s || echo 2s)
  X_DPD=$([ $DPD = 1 ] && [ "$ROLE" = initiator ] && echo '"1s"' || echo 0)
  X_FRAG_SIZE=$([ $FRAG = 1 ] && echo 576 || echo 1280)
  cat > $BASE/x2sec.toml <<TEOF
[runtime]
log_level = "debug"

[engine]
retransmit_timeout = "$X_RTO"
retransmit_tries = 3

$CRED

[[peer]]
name = "charon"
local_addr = "$OUT_X"
remote_addr = "$OUT_C"
local_id = "fqdn:x2sec.example.org"
remote_id = "fqdn:charon.example.org"
$AUTH
ike_proposals = ["aes128gcm16-prfsha256-ecp256"]
ike_rekey = 0
dpd_interval = $X_DPD
fragmentation = true
fragment_size = $X_FRAG_SIZE

  [[peer.child]]
  name = "net"
  local_ts = "198.51.100.0/24"
  remote_ts = "203.0.113.0/24"
  esp_proposals = ["aes128gcm16"]
  rekey = 0
TEOF
  "$X2SEC" ike check-config --config $BASE/x2sec.toml > $BASE/check.log 2>&1 || fail "x2sec ike check-config: $(cat $BASE/check.log)"
  DP=()
  [ $ESP = 1 ] && DP=(--dataplane tun --tun x2s0 --tun-addr 198.51.100.1/32)
  ip netns exec $NS_X "$X2SEC" ike run --config $BASE/x2sec.toml --control $CTL --debug-keylog $BASE/keys "${DP[@]}" \
      > $BASE/x2sec.log 2>&1 &
  X2PID=$!
  pids+=($X2PID)
  for _ in $(seq 100); do [ -S $CTL ] && break; kill -0 $X2PID 2>/dev/null || break; sleep 0.05; done
  if ! [ -S $CTL ]; then
    grep -q "engine is not implemented" $BASE/x2sec.log && skip "engine cannot yet run: $(tail -1 $BASE/x2sec.log)"
    fail "x2sec ike run did not start: $(tail -5 $BASE/x2sec.log)"
  fi
  log "x2sec ike run up in $NS_X ($OUT_X, ports 500/4500), control $CTL"
  if [ $ESP = 1 ]; then
    ip -n $NS_X route replace 203.0.113.0/24 dev x2s0 src 198.51.100.1 || fail "route to 203.0.113.0/24 via x2s0"
    log "x2sec ESP data plane on TUN x2s0 (198.51.100.1), route 203.0.113.0/24 -> x2s0"
  fi
fi
ping_through() {  # $1 = stage
  [ $ESP = 1 ] || return 0
  ip netns exec $NS_X ping -c 3 -i 0.2 -W 2 -I 198.51.100.1 203.0.113.1 > $BASE/ping.log 2>&1 || {
    cat $BASE/ping.log; ip -n $NS_X -s link show x2s0; fail "ping 198.51.100.1 -> 203.0.113.1 through the tunnel ($1)"; }
  # charon must have decrypted them: its inbound Child SA counts packets
  local inpk
  inpk=$(sw C --list-sas 2>/dev/null | awk '$1=="in" {print $5; exit}')
  [ -n "$inpk" ] && [ "$inpk" -gt 0 ] || { sw C --list-sas; fail "charon's inbound Child SA counted no packets ($1)"; }
  log "ping through x2sec ESP <-> charon ESP after $1: $(grep -o '[0-9]* received' $BASE/ping.log), charon decrypted $inpk packets"
}

# ------------------------------------------------------------------ views of both ends
c_sas() { sw C --list-sas 2>/dev/null | python3 $HERE/sas.py charon; }
x_sas() {
  if [ "$CASE" = fixture ]; then sw X --list-sas 2>/dev/null | python3 $HERE/sas.py charon
  else x2 list-sas --json 2>/dev/null | python3 $HERE/sas.py x2sec; fi
}
# Both ends agree: one IKE SA, ESTABLISHED, same SPIs; one Child SA 'net' INSTALLED with the
# SPIs crossed.  Prints "IKESPIS CHILD_IN_AT_X" on success.
consistent() {
  local c x
  c=$(c_sas); x=$(x_sas)
  local ci xi
  ci=$(echo "$c" | awk '$1=="IKE" && $4=="ESTABLISHED"{print $2" "$3}')
  xi=$(echo "$x" | awk '$1=="IKE" && $4=="ESTABLISHED"{print $2" "$3}')
  [ -n "$ci" ] && [ "$ci" = "$xi" ] && [ $(echo "$ci" | wc -l) = 1 ] || return 1
  local cc xc
  cc=$(echo "$c" | awk '$1=="CHILD" && $2=="net" && $5=="INSTALLED"{print $3" "$4}')
  xc=$(echo "$x" | awk '$1=="CHILD" && $2=="net" && $5=="INSTALLED"{print $4" "$3}')
  [ -n "$cc" ] && [ "$cc" = "$xc" ] && [ $(echo "$cc" | wc -l) = 1 ] || return 1
  echo "$ci $(echo $xc | awk '{print $2}')"
}
wait_consistent() {  # $1 = state string that must differ (or ""), $2 = what
  local s
  for _ in $(seq $((TIMEOUT * 5))); do
    s=$(consistent) && [ "$s" != "$1" ] && { echo "$s"; return 0; }
    sleep 0.2
  done
  echo "---- charon:"; sw C --list-sas; echo "---- x2sec side:"; x_sas
  fail "$2: both ends did not agree within ${TIMEOUT}s"
}
wait_gone() {
  for _ in $(seq $((TIMEOUT * 5))); do
    [ -z "$(c_sas)" ] && [ -z "$(x_sas)" ] && return 0
    sleep 0.2
  done
  echo "---- charon:"; sw C --list-sas; echo "---- x2sec side:"; x_sas
  fail "$1: SAs still present after ${TIMEOUT}s"
}

# Operations by the case's initiator.
if [ "$CASE" = fixture ] || [ "$ROLE" = initiator ]; then
  if [ "$CASE" = fixture ]; then
    do_initiate() { sw X --initiate --child net --timeout $TIMEOUT >$BASE/op.log 2>&1; }
    do_rekey_child() { sw X --rekey --child net >$BASE/op.log 2>&1; }
    do_rekey_ike() { sw X --rekey --ike x2 >$BASE/op.log 2>&1; }
    do_terminate() { sw X --terminate --ike x2 --timeout $TIMEOUT >$BASE/op.log 2>&1; }
  else
    do_initiate() { x2 initiate --peer charon --timeout $TIMEOUT >$BASE/op.log 2>&1; }
    do_rekey_child() { x2 rekey --peer charon --child net --timeout $TIMEOUT >$BASE/op.log 2>&1; }
    do_rekey_ike() { x2 rekey --peer charon --timeout $TIMEOUT >$BASE/op.log 2>&1; }
    do_terminate() { x2 terminate --peer charon --timeout $TIMEOUT >$BASE/op.log 2>&1; }
  fi
else
  do_initiate() { sw C --initiate --child net --timeout $TIMEOUT >$BASE/op.log 2>&1; }
  do_rekey_child() { sw C --rekey --child net >$BASE/op.log 2>&1; }
  do_rekey_ike() { sw C --rekey --ike x2 >$BASE/op.log 2>&1; }
  do_terminate() { sw C --terminate --ike x2 --timeout $TIMEOUT >$BASE/op.log 2>&1; }
fi
WHO=$([ "$CASE" = fixture ] && echo "charon X" || ([ "$ROLE" = initiator ] && echo x2sec || echo charon))

# 1. IKE SA + Child SA
engine_cannot establish && engine_limit establish
do_initiate || { cat $BASE/op.log; fail "initiate by $WHO"; }
S1=$(wait_consistent "" "establish") || exit 1
log "established ($MODE, initiated by $WHO): IKE SPIs + Child in-SPI at x2sec side: $S1"
echo "---- swanctl --list-sas (charon, $OUT_C):"; sw C --list-sas 2>/dev/null | sed 's/^/  /'
if [ "$CASE" != fixture ]; then echo "---- x2sec ike list-sas ($OUT_X):"; x2 list-sas 2>/dev/null | sed 's/^/  /'; fi
ping_through "establishment"
if [ "$MODE" = cert ]; then
  grep -q "authentication of 'x2sec.example.org' with ECDSA" $BASE/C/charon.log || \
  grep -q "authentication of 'x2sec.example.org' with .*successful" $BASE/C/charon.log || fail "charon did not log a successful certificate authentication of x2sec.example.org"
fi

if [ $V6 = 1 ]; then
  # The SAs really run over the IPv6 addresses (charon floats to 4500 on them).
  sw C --list-sas 2>/dev/null | grep -q "remote.*@ $OUT_X\[4500\]" || { sw C --list-sas; fail "charon's IKE SA is not on $OUT_X[4500]"; }
  [ "$CASE" = fixture ] || x2 list-sas 2>/dev/null | grep -qF "$OUT_C" || { x2 list-sas; fail "x2sec's IKE SA is not on $OUT_C"; }
  log "IPv6: IKE SA on $OUT_X[4500] <-> $OUT_C[4500] on both ends"
fi
if [ $FRAG = 1 ] && [ "$CASE" != fixture ]; then
  [ "$MODE" = cert ] || fail "the -frag case needs certificates (messages large enough to split)"
  grep -q "reassembled fragmented IKE message" $BASE/C/charon.log || { dump; fail "charon reassembled no fragmented IKE message from x2sec"; }
  grep -q "splitting IKE message" $BASE/C/charon.log || { dump; fail "charon split no IKE message into fragments"; }
  CNT=$(x2 counters 2>/dev/null)
  RX=$(echo "$CNT" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("ike.rx.reassembled",0))')
  TX=$(echo "$CNT" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("ike.tx.fragments",0))')
  [ "${RX:-0}" -ge 1 ] && [ "${TX:-0}" -ge 2 ] || { echo "$CNT"; fail "x2sec counters: ike.rx.reassembled=$RX ike.tx.fragments=$TX"; }
  log "fragmentation at 576: x2sec sent $TX fragments and reassembled $RX message(s); charon split and reassembled too"
fi
if [ $DPD = 1 ] && [ "$CASE" != fixture ] && [ "$ROLE" = responder ]; then
  # (1) charon's liveness checks answered by x2sec.  charon logs "sending DPD request", then
  # "generating INFORMATIONAL request N [ ]" and, once x2sec answers, "parsed INFORMATIONAL
  # response N [ ]"; x2sec counts each empty INFORMATIONAL request it answers.
  n_sent() { grep -c "sending DPD request" $BASE/C/charon.log; }
  n_answered() { grep -c "parsed INFORMATIONAL response [0-9]* \[ \]" $BASE/C/charon.log; }
  x_live() { x2 counters 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("ike.rx.liveness_check",0))' 2>/dev/null || echo 0; }
  for _ in $(seq 75); do  # DPD every 1 s: give a loaded machine up to 15 s for two
    [ "$(n_answered)" -ge 2 ] && [ "$(x_live)" -ge 2 ] && break
    sleep 0.2
  done
  SENT=$(n_sent) ANS=$(n_answered) XL=$(x_live)
  [ "$SENT" -ge 2 ] || { dump; fail "charon sent $SENT DPD request(s) in 15 s, expected at least 2 (dpd_delay = 1s)"; }
  [ "$ANS" -ge 2 ] || { dump; fail "charon sent $SENT DPD requests but parsed only $ANS empty INFORMATIONAL response(s) from x2sec"; }
  [ "$XL" -ge 2 ] || { x2 counters; dump; fail "x2sec counted $XL liveness checks (ike.rx.liveness_check), charon sent $SENT"; }
  XLOG=$(grep -c "liveness check (empty INFORMATIONAL request" $BASE/x2sec.log)
  [ "$XLOG" -ge 2 ] || { dump; fail "x2sec logged $XLOG answered liveness checks, expected at least 2"; }
  S1b=$(consistent) && [ "$S1b" = "$S1" ] || { echo "before: $S1"; echo "after:  ${S1b:-<no agreement>}"; fail "the SAs changed during DPD"; }
  log "DPD: charon sent $SENT liveness checks and parsed $ANS answers; x2sec counted $XL (ike.rx.liveness_check); SAs unchanged"
  # (2) x2sec vanishes: charon's next DPD goes unanswered and it must give up and drop the SA.
  kill -9 $X2PID; wait $X2PID 2>/dev/null
  KILLED_AT=$(date +%s)
  log "x2sec killed (SIGKILL): charon must find the peer dead"
  for _ in $(seq 100); do  # ~1 s DPD delay + ~7.1 s of retransmissions; allow 20 s
    [ -z "$(c_sas)" ] && break
    sleep 0.2
  done
  [ -z "$(c_sas)" ] || { sw C --list-sas; dump; fail "charon kept the IKE SA of a dead x2sec for 20 s"; }
  GAVE_UP=$(grep -m1 "giving up after [0-9]* retransmits" $BASE/C/charon.log) || \
    { dump; fail "charon dropped the SA without logging 'giving up after N retransmits'"; }
  RETX=$(grep -c "retransmit [0-9]* of request with message ID" $BASE/C/charon.log)
  [ "$RETX" -ge 3 ] || { dump; fail "charon gave up after $RETX retransmissions, expected 3 (retransmit_tries)"; }
  log "charon declared x2sec dead $(( $(date +%s) - KILLED_AT )) s after the kill: '$(echo "$GAVE_UP" | sed 's/^[0-9:]* [0-9]*\[[A-Z]*\] //')', $RETX retransmissions, no SA left"
  log "PASS: $CASE ($MODE, $ROLE, DPD)"
  exit 0
fi
if [ $DPD = 1 ] && [ "$CASE" != fixture ]; then
  for _ in $(seq 100); do  # DPD every 2 s: give a loaded machine up to 20 s
    [ $(grep -c "parsed INFORMATIONAL request" $BASE/C/charon.log) -ge 2 ] && break
    sleep 0.2
  done
  grep -q "parsed INFORMATIONAL request" $BASE/C/charon.log || { dump; fail "no DPD (INFORMATIONAL request) from x2sec reached charon"; }
  S1b=$(consistent) && [ "$S1b" = "$S1" ] || fail "the SAs changed during DPD"
  log "DPD: x2sec's liveness checks answered by charon, SAs unchanged"
  CPID=$(cat $BASE/C/run/charon.pid)
  kill -9 $CPID
  log "charon killed: x2sec must find the peer dead"
  for _ in $(seq 150); do [ -z "$(x_sas)" ] && break; sleep 0.2; done
  [ -z "$(x_sas)" ] || { x2 list-sas; fail "x2sec kept the SAs of a dead peer"; }
  grep -q "PEER_DEAD" $BASE/x2sec.log || { tail -20 $BASE/x2sec.log; fail "x2sec logged no PEER_DEAD event"; }
  log "x2sec declared the peer dead and removed the SAs"
  kill -TERM $X2PID; wait $X2PID
  log "PASS: $CASE ($MODE, $ROLE, DPD)"
  exit 0
fi

# 2. Child SA rekey
engine_cannot rekey_child && engine_limit rekey_child
IKE1=$(echo $S1 | cut -d' ' -f1-2)
do_rekey_child || { cat $BASE/op.log; fail "Child SA rekey by $WHO"; }
S2=$(wait_consistent "$S1" "Child SA rekey") || exit 1
[ "$(echo $S2 | cut -d' ' -f1-2)" = "$IKE1" ] || fail "Child SA rekey changed the IKE SA"
log "Child SA rekeyed by $WHO: in-SPI $(echo $S1 | cut -d' ' -f3) -> $(echo $S2 | cut -d' ' -f3)"
ping_through "the Child SA rekey"

# 3. IKE SA rekey (the Child SA moves to the new IKE SA)
engine_cannot rekey_ike && engine_limit rekey_ike
do_rekey_ike || { cat $BASE/op.log; fail "IKE SA rekey by $WHO"; }
S3=$(wait_consistent "$S2" "IKE SA rekey") || exit 1
[ "$(echo $S3 | cut -d' ' -f1-2)" != "$IKE1" ] || fail "IKE SA rekey kept the SPIs"
[ "$(echo $S3 | cut -d' ' -f3)" = "$(echo $S2 | cut -d' ' -f3)" ] || fail "IKE SA rekey lost or replaced the Child SA"
log "IKE SA rekeyed by $WHO: $IKE1 -> $(echo $S3 | cut -d' ' -f1-2)"
ping_through "the IKE SA rekey"

# 4. delete
engine_cannot delete && engine_limit delete
do_terminate || { cat $BASE/op.log; fail "terminate by $WHO"; }
wait_gone "delete"
log "IKE SA deleted by $WHO; no SAs left on either end"

# 5. x2sec exits cleanly on SIGTERM
if [ "$CASE" != fixture ]; then
  if [ -f $BASE/keys/ikev2_decryption_table ]; then
    [ "$(stat -c %a $BASE/keys/ikev2_decryption_table)" = 600 ] || fail "key log is not mode 0600"
    [ $(grep -vc '^#' $BASE/keys/ikev2_decryption_table) -ge 2 ] || fail "key log lacks the rekeyed IKE SA"
    log "debug key log: $(grep -vc '^#' $BASE/keys/ikev2_decryption_table) IKE SA, $(grep -vc '^#' $BASE/keys/esp_sa 2>/dev/null || echo 0) ESP SA records"
  fi
  kill -TERM $X2PID
  for _ in $(seq 50); do kill -0 $X2PID 2>/dev/null || break; sleep 0.1; done
  kill -0 $X2PID 2>/dev/null && fail "x2sec ike run did not exit on SIGTERM"
  wait $X2PID; RC=$?
  [ $RC = 0 ] || fail "x2sec ike run exited with $RC"
fi
log "PASS: $CASE ($MODE, $ROLE$([ $ESP = 1 ] && echo ", ESP traffic")$([ $V6 = 1 ] && echo ", IPv6")$([ $FRAG = 1 ] && echo ", fragmentation"))"
