#!/bin/bash
# `openssl cmp` against `x2sec ca serve --config` with certificate profiles: an O-RAN O-DU
# profile at /.well-known/cmp/p/odu (node identity + iPAddress in its ranges + a URI made from
# the EUI, IP required), a wildcard-DNS profile, and the default path (dNSName identity only);
# `-sans` with DNS, IP and URI values; every refusal a protected answer with its PKIFailureInfo,
# nothing stored for it; and configuration errors refused at start.
source "$(dirname "$0")/common.sh"
PORT=$(free_port 3)
ID=0023a1b2c3d4.henb.vendor-a.example
$X2SEC pki init-vendor-ca --dir va --name "Vendor A" >/dev/null
$X2SEC pki init-operator-ca --dir op --name Operator --intermediate >/dev/null
$X2SEC pki issue-device --ca-dir va --eui 0023a1b2c3d4 --realm henb.vendor-a.example --out-key dev.key --out-cert dev.pem >/dev/null
for k in k1 k2 k3 k4 k5 k6 k7; do $X2SEC pki keygen --out $k.key >/dev/null; done
cat > ca.toml <<EOF
[ca]
dir = "op"
vendor_roots = ["va/root.crt"]
store = "sqlite:$D/ca.db"
[http]
port = $PORT
[profiles.odu]
ip = ["192.0.2.0/24", "2001:db8::/32"]
uri = ["https://{realm}/du/{eui}"]
required = ["ip"]
validity_days = 30
[profiles.lab]
dns = ["{identity}", "*.{realm}"]
EOF
# configuration errors are refused before serving
printf '[profiles.x]\nip = ["192.0.2.0/33"]\n' > bad1.toml
$X2SEC ca serve --config bad1.toml --ca-dir op --vendor-root va/root.crt --port 0 > bad1.log 2>&1 && fail "bad CIDR accepted" || \
  check "config: bad CIDR refused" grep -q "prefix length over 32" bad1.log
printf '[profiles.x]\nsans = ["dns"]\n' > bad2.toml
$X2SEC ca serve --config bad2.toml --ca-dir op --vendor-root va/root.crt --port 0 > bad2.log 2>&1 && fail "unknown key accepted" || \
  check "config: unknown key refused" grep -q "unknown key 'sans'" bad2.log
printf '[profiles.x]\nrequired = ["ip"]\n' > bad3.toml
$X2SEC ca serve --config bad3.toml --ca-dir op --vendor-root va/root.crt --port 0 > bad3.log 2>&1 && fail "required-but-forbidden accepted" || \
  check "config: ip required without ranges refused" grep -q "ip is required but no ip value is permitted" bad3.log

$X2SEC ca serve --config ca.toml --log-level warn > server.log 2>&1 &
PIDS+=($!)
wait_port $PORT || { echo "server did not start"; exit 1; }
BASE=127.0.0.1:$PORT/.well-known/cmp
certs() { sqlite3 $D/ca.db "SELECT COUNT(*) FROM certificates"; }
ir() {  # ir <path> <key> <out> <sans...>
  local path=$1 key=$2 out=$3; shift 3
  openssl cmp -cmd ir -server $BASE$path -cert dev.pem -key dev.key -trusted op/root.crt -newkey $key \
    -subject "/CN=$ID" -sans "$*" -certout $out
}

ir /p/odu k1.key odu.crt "$ID 192.0.2.7 2001:db8::7 https://henb.vendor-a.example/du/0023a1b2c3d4" > odu.log 2>&1 \
  && pass "odu: identity + IPv4 + IPv6 + URI issued" || fail "odu enrolment"
SAN=$(openssl x509 -in odu.crt -noout -ext subjectAltName)
check "odu: dNSName is the node identity" grep -q "DNS:$ID" <<<"$SAN"
check "odu: IPv4 SAN" grep -q "IP Address:192.0.2.7" <<<"$SAN"
check "odu: IPv6 SAN" grep -q "IP Address:2001:DB8:0:0:0:0:0:7" <<<"$SAN"
check "odu: URI SAN" grep -q "URI:https://henb.vendor-a.example/du/0023a1b2c3d4" <<<"$SAN"
NB=$(date -d "$(openssl x509 -in odu.crt -noout -startdate | cut -d= -f2)" +%s)
NA=$(date -d "$(openssl x509 -in odu.crt -noout -enddate | cut -d= -f2)" +%s)
check "odu: validity_days = 30 from the profile" test $((NA - NB)) = $((30 * 86400 + 60))
check "store: SANs recorded" grep -q "IP:192.0.2.7" <<<"$(sqlite3 $D/ca.db "SELECT sans FROM certificates")"
ir /p/lab k2.key lab.crt "$ID cell7.henb.vendor-a.example" > lab.log 2>&1 && pass "lab: *.{realm} issued" || fail "lab enrolment"
ir "" k3.key def.crt "$ID" > def.log 2>&1 && pass "default path: the identity issued" || fail "default enrolment"

C0=$(certs)
ir /p/odu k4.key x.crt "$ID 198.51.100.7" > odu_range.log 2>&1 && fail "odu: IP outside the ranges accepted" || \
  check "odu: IP outside the ranges: notAuthorized" grep -q "PKIFailureInfo: notAuthorized.*outside the ranges" odu_range.log
ir /p/odu k4.key x.crt "$ID" > odu_noip.log 2>&1 && fail "odu without IP accepted" || \
  check "odu: no IP: badCertTemplate" grep -q "PKIFailureInfo: badCertTemplate.*requires an iPAddress" odu_noip.log
ir /p/odu k4.key x.crt "$ID 192.0.2.8 https://henb.vendor-a.example/du/001122334455" > odu_uri.log 2>&1 && fail "odu: foreign URI accepted" || \
  check "odu: URI of another node: notAuthorized" grep -q "PKIFailureInfo: notAuthorized" odu_uri.log
ir /p/odu k4.key x.crt "001122334455.henb.vendor-a.example 192.0.2.8" > odu_id.log 2>&1 && fail "odu: foreign identity accepted" || \
  check "odu: foreign dNSName: notAuthorized" grep -q "PKIFailureInfo: notAuthorized" odu_id.log
ir "" k4.key x.crt "$ID 192.0.2.7" > def_ip.log 2>&1 && fail "default path: IP accepted" || \
  check "default path: IP SAN: badCertTemplate" grep -q "PKIFailureInfo: badCertTemplate.*not permitted by the default profile" def_ip.log
ir "" k4.key x.crt "$ID https://henb.vendor-a.example/du/0023a1b2c3d4" > def_uri.log 2>&1 && fail "default path: URI accepted" || \
  check "default path: URI SAN: badCertTemplate" grep -q "PKIFailureInfo: badCertTemplate" def_uri.log
ir /p/lab k4.key x.crt "cell7.henb.vendor-b.example" > lab_bad.log 2>&1 && fail "lab: other realm accepted" || \
  check "lab: name outside the realm: notAuthorized" grep -q "PKIFailureInfo: notAuthorized" lab_bad.log
ir /p/ru k4.key x.crt "$ID" > ru.log 2>&1 && fail "unknown profile accepted" || \
  check "unknown profile: protected error, badRequest" grep -q "received error.*PKIFailureInfo: badRequest.*no certificate profile 'ru'" ru.log
check "refusals wrote no certificate" test "$(certs)" = "$C0"

# genm/genp (RFC 9483 4.3): currentCRL answered, an infoType not served left out
openssl cmp -cmd genm -infotype currentCRL -server $BASE -cert dev.pem -key dev.key -trusted op/root.crt \
  > genm.log 2>&1 && pass "genm currentCRL answered" || fail "genm currentCRL"
check "genp carries id-it-currentCRL" grep -q "genp contains ITAV of type: id-it-currentCRL" genm.log
openssl cmp -cmd genm -infotype signKeyPairTypes -server $BASE -cert dev.pem -key dev.key -trusted op/root.crt \
  > genm2.log 2>&1 && pass "genm signKeyPairTypes answered" || fail "genm signKeyPairTypes"
check "genp without the unsupported infoType" grep -q "genp contains no ITAV" genm2.log

kill -TERM ${PIDS[0]}; wait ${PIDS[0]} || true; PIDS=()
grep -E "cmp.reject" server.log | sed 's/^/  /'
echo "failures: $FAILS"
exit $((FAILS > 0))
