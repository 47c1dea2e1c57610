#!/bin/bash
# SIGHUP on `esp`: with --ike-config the IKE configuration is reloaded as by `ike run` (peers and
# their Child SA policies applied, [runtime] log_level at once, the SAs kept with the same SPIs;
# a broken file changes nothing); with static keys a SIGHUP is logged and the tunnel goes on
# (before, SIGHUP's default action ended it).  Needs root for the TUN devices.
source "$(dirname "$0")/common.sh"
if [ "$(id -u)" != 0 ] || [ ! -c /dev/net/tun ]; then
  echo "SKIP: x2sec esp needs root and /dev/net/tun for its TUN device (uid $(id -u))"; exit 77
fi
BASE=$(free_port 13)
TUN=s6r$(( $$ % 10000 ))
logs() { cat esp.log a-ike.log 2>/dev/null; }
wait_log() { for _ in $(seq 100); do [ "$(logs | grep -c "$1")" -ge "$2" ] && return 0; sleep 0.05; done; return 1; }

# static keys
K=00112233445566778899aabbccddeeff01020304
$X2SEC esp --tun ${TUN}s --local 127.0.0.1 --remote 127.0.0.1 --port $((BASE + 10)) --remote-port $((BASE + 11)) \
  --spi-in 1001 --spi-out 2001 --key-in $K --key-out $K --local-ts 198.51.100.0/24 --remote-ts 203.0.113.0/24 \
  --no-offload > static.log 2>&1 &
S=$!
PIDS+=($S)
for _ in $(seq 100); do grep -q '^ready' static.log && break; sleep 0.05; done
kill -HUP $S
for _ in $(seq 100); do grep -q "nothing to reload" static.log && break; sleep 0.05; done
check "static keys: SIGHUP logged" grep -q "SIGHUP: static keys from the command line, nothing to reload" static.log
check "static keys: esp still running after SIGHUP" kill -0 $S

# --ike-config: A is `esp` (IKE + ESP data plane in one process), B is `ike run`
ike_pair "$BASE"
start_ike b || fail "ike b did not start"
$X2SEC esp --tun ${TUN}i --local 127.0.0.1 --port $((BASE + 1)) --no-offload --ike-config a.toml > esp.log 2>&1 &
E=$!
PIDS+=($E)
wait_file a.sock || fail "esp --ike-config did not open its control socket"
check "IKE SA with an installed Child SA" wait_established a
spis() { $X2SEC ike list-sas --config ${1:-a.toml} --json | jq -c '[.[] | {spi_i, spi_r, children: [.children[].spi_in]}]'; }
before=$(spis)
sed -i 's/esp_proposals = \["aes128gcm16"\]/esp_proposals = ["aes256gcm16"]/' a.toml
sed -i 's|^\[runtime\]|[runtime]\nlog_level = "debug"|' a.toml
kill -HUP $E
check "esp: changed peer applied, SAs kept" wait_log "SIGHUP: 1 peer(s) applied; established SAs kept" 1
check "esp: log level applied" wait_log "SIGHUP: log level info -> debug" 1
check "esp still running after SIGHUP" kill -0 $E
check "same IKE and Child SA SPIs after SIGHUP" test "$(spis)" = "$before"
check "runtime.reload.ok counted" bash -c "$X2SEC ike counters --config a.toml | grep -q 'runtime.reload.ok.*1'"
cp a.toml a.good
printf '[[peer]\n' > a.toml
kill -HUP $E
check "esp: broken file not reloaded (named)" wait_log "a.toml not reloaded, the running peers stay" 1
check "esp still running after a broken file" kill -0 $E
check "SAs still there after the broken file" test "$(spis a.good)" = "$before"
check "runtime.reload.failed counted" bash -c "$X2SEC ike counters --config a.good | grep -q 'runtime.reload.failed.*1'"
finish
