#!/bin/bash
# SIGHUP: `kds serve` applies a changed configuration (a new node and relation served, a removed
# relation refused, the pair keys of unchanged relations kept) and keeps the running one when
# the new file is broken; `ike run` keeps its IKE and Child SAs (same SPIs) over SIGHUP.
source "$(dirname "$0")/common.sh"
BASE=$(free_port 7)
KDS_PORT=$((BASE + 20)); M_KDS=$((BASE + 21))
$X2SEC pki init-operator-ca --dir op --name Operator >/dev/null
$X2SEC pki issue-server --ca-dir op --subject /CN=kds --dns kds.operator.example --out-key kds.key --out-cert kds.pem >/dev/null
for n in a b c; do
  $X2SEC pki issue-server --ca-dir op --subject /CN=henb-$n --dns henb-$n.operator.example --out-key henb-$n.key --out-cert henb-$n.pem >/dev/null
done
kds_conf() {  # kds_conf "a b c" "a-b a-c"
  {
    printf '[kds]\nlisten = "127.0.0.1"\nport = %s\ncertificate = "kds.pem"\nprivate_key = "kds.key"\nclient_anchors = ["op/root.crt"]\nwipe_after_delivery = false\n' $KDS_PORT
    for n in $1; do printf '  [[kds.node]]\n  name = "henb-%s"\n  identity = "henb-%s.operator.example"\n' $n $n; done
    for r in $2; do printf '  [[kds.relation]]\n  nodes = ["henb-%s", "henb-%s"]\n' ${r%-*} ${r#*-}; done
    printf '[metrics]\nlisten = "127.0.0.1:%s"\n' $M_KDS
  } > kds.toml.new && mv kds.toml.new kds.toml
}
fetch() {  # fetch REQUESTER PEER: prints the key id
  $X2SEC kds fetch-key --server 127.0.0.1:$KDS_PORT --server-name kds.operator.example --cert henb-$1.pem --key henb-$1.key \
    --trust op/root.crt --requester henb-$1.operator.example --peer henb-$2.operator.example 2>&1
}
metric() { curl -sf http://127.0.0.1:$M_KDS/metrics | awk -v n="$1" '$1 == n {print $2}'; }
wait_metric() { for _ in $(seq 100); do [ "$(metric "$1")" = "$2" ] && return 0; sleep 0.05; done; return 1; }

kds_conf "a b" "a-b"
$X2SEC kds serve --config kds.toml > kds.log 2>&1 &
KDS=$!
PIDS+=($KDS)
wait_port $KDS_PORT || fail "kds serve did not start"
k1=$(fetch a b)
check "a-b key delivered before the reload" grep -q '^key [0-9a-f]* delivered$' <<<"$k1"
if fetch c a | grep -q delivered; then fail "c served before it was configured"; else pass "c unknown before the reload"; fi

kds_conf "a b c" "a-b a-c"
kill -HUP $KDS
check "reload counted" wait_metric x2sec_kds_reload_ok_total 1
check "kds serve still running after SIGHUP" kill -0 $KDS
check "new relation a-c served after the reload" grep -q '^key [0-9a-f]* delivered$' <<<"$(fetch c a)"
check "a-b key kept over the reload (same key id)" test "$(fetch b a)" = "$k1"

kds_conf "a b c" "a-c"
kill -HUP $KDS
check "second reload counted" wait_metric x2sec_kds_reload_ok_total 2
check "removed relation a-b refused" grep -q 'UNAUTHORISED\|unauthori' <<<"$(fetch a b)"
check "its key dropped (counted)" test "$(metric x2sec_kds_key_events_total'{event="dropped_by_reload"}')" = 1

printf '[kds\n' > kds.toml
kill -HUP $KDS
check "broken file: reload failure counted" wait_metric x2sec_kds_reload_failed_total 1
check "broken file: still serving the running configuration" grep -q '^key [0-9a-f]* delivered$' <<<"$(fetch c a)"
check "broken file: the log names the file" grep -q "kds.toml.*not reloaded" kds.log

# ike run: SIGHUP keeps the SAs.
ike_pair "$BASE"
start_ike b || fail "ike b did not start"
start_ike a || fail "ike a did not start"
check "IKE SA established" wait_established a
before=$($X2SEC ike list-sas --config a.toml --json | jq -c '[.[] | {spi_i, spi_r, children: [.children[].spi_in]}]')
IKE_A=${PIDS[-1]}
kill -HUP $IKE_A
sleep 1
check "ike run still running after SIGHUP" kill -0 $IKE_A
after=$($X2SEC ike list-sas --config a.toml --json | jq -c '[.[] | {spi_i, spi_r, children: [.children[].spi_in]}]')
check "same IKE and Child SA SPIs after SIGHUP ($after)" test "$before" = "$after"
check "SIGHUP logged" grep -q "SIGHUP" a-ike.log

# ike run: changed peers applied by SIGHUP (ESP proposal now AES-256-GCM on both sides: the next
# Child SA rekey uses it), the IKE SA kept; a peer whose local port changed is left alone.
IKE_B=${PIDS[-2]}
for side in a b; do sed -i 's/esp_proposals = \["aes128gcm16"\]/esp_proposals = ["aes256gcm16"]/' $side.toml; done
kill -HUP $IKE_B $IKE_A
for _ in $(seq 50); do grep -q "SIGHUP: 1 peer(s) applied" a-ike.log && grep -q "SIGHUP: 1 peer(s) applied" b-ike.log && break; sleep 0.1; done
check "A applied the changed peer" grep -q "SIGHUP: 1 peer(s) applied; established SAs kept" a-ike.log
check "B applied the changed peer" grep -q "SIGHUP: 1 peer(s) applied; established SAs kept" b-ike.log
check "reload-crls reaches the reloaded configuration's CRL checker" $X2SEC ike reload-crls --config a.toml
ike_before=$($X2SEC ike list-sas --config a.toml --json | jq -r '.[0].spi_i')
check "Child SA rekey after the reload" $X2SEC ike rekey --config a.toml --peer peer-b --child x2 --timeout 20
text=$($X2SEC ike list-sas --config a.toml)
check "the new Child SA uses the reloaded proposal (AES_GCM_16_256)" grep -q "ESP:AES_GCM_16_256" <<<"$text"
check "the IKE SA is the same one" test "$($X2SEC ike list-sas --config a.toml --json | jq -r '.[0].spi_i')" = "$ike_before"
sed -i "s/^local_port = $BASE\$/local_port = $((BASE + 5))/" a.toml
kill -HUP $IKE_A
for _ in $(seq 50); do grep -q "local address or ports changed" a-ike.log && break; sleep 0.1; done
check "changed local port: left alone with a warning" grep -q "peer 'peer-b' not changed (local address or ports changed): restart" a-ike.log
printf '[runtime\n' > a.toml
kill -HUP $IKE_A
for _ in $(seq 50); do grep -q "not reloaded, the running peers stay" a-ike.log && break; sleep 0.1; done
check "broken file: the running peers stay" grep -q "a.toml not reloaded, the running peers stay" a-ike.log
check "ike run still running after three SIGHUPs" kill -0 $IKE_A
check "SA still listed" $X2SEC ike list-sas --control "$D/a.sock"
finish
