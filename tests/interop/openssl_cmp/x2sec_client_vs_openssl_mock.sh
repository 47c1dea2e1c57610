#!/bin/bash
# `x2sec enroll` (x2sec's CMP client) against OpenSSL's mock CMP server (`openssl cmp -port`).
# The 3.0 mock server returns a fixed certificate, so it is pre-issued for the key the client
# will use (--new-key).  Positive: ir with the vendor certificate, operator root learned
# in-band under the 3GPP rule and, separately, provisioned.  Negatives: rogue vendor rejected
# by the mock; a response certificate for another key refused by our certConf check.
source "$(dirname "$0")/common.sh"
PORT=$(free_port 2)
ID=0023a1b2c3d4.henb.vendor-a.example
$X2SEC pki init-vendor-ca --dir va --name "Vendor A" >/dev/null
$X2SEC pki init-vendor-ca --dir rogue --name "Rogue" >/dev/null
$X2SEC pki init-operator-ca --dir op --name Operator >/dev/null
$X2SEC pki issue-device --ca-dir va --eui 0023a1b2c3d4 --realm henb.vendor-a.example --out-key dev.key --out-cert dev.pem >/dev/null
$X2SEC pki issue-device --ca-dir rogue --eui 0023a1b2c3d4 --realm henb.vendor-a.example --out-key rogue.key --out-cert rogue.pem >/dev/null
$X2SEC pki keygen --out new.key >/dev/null
# the certificate the mock will return, issued by the operator CA for new.key
openssl req -new -key new.key -subj "/CN=$ID" -out new.csr 2>/dev/null
cat > ext.cnf <<EOC
[x]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:$ID
EOC
openssl x509 -req -in new.csr -CA op/ca.crt -CAkey op/ca.key -CAcreateserial -days 365 -extfile ext.cnf -extensions x -out rsp.crt 2>/dev/null
openssl x509 -in op/ra.crt -out ra-only.crt
openssl cmp -port $PORT -srv_ref mock-ra -srv_cert ra-only.crt -srv_key op/ra.key -srv_trusted va/root.crt \
  -rsp_cert rsp.crt -rsp_capubs op/root.crt -rsp_extracerts op/root.crt > mock.log 2>&1 &
PIDS+=($!)
wait_port $PORT || { echo "mock server did not start"; exit 1; }
URL=http://127.0.0.1:$PORT/pkix/

$X2SEC enroll --server $URL --vendor-key dev.key --vendor-cert dev.pem --identity $ID --new-key new.key \
  --dir in-band > e1.log 2>&1 && pass "x2sec enroll vs mock: ir accepted (3GPP in-band root)" || fail "enroll in-band"
check "installed certificate is the mock's" cmp <(openssl x509 -in in-band/operator.crt -outform DER) <(openssl x509 -in rsp.crt -outform DER)
check "operator root learned in-band" cmp <(openssl x509 -in in-band/operator-root.crt -outform DER) <(openssl x509 -in op/root.crt -outform DER)
check "operator key written 0600" test "$(stat -L -c %a in-band/operator.key)" = 600
check "installed as one unit behind current" test -L in-band/current -a -f in-band/current/operator.key
check "in-band mode reported" grep -q "learned in-band" e1.log

$X2SEC enroll --server $URL --vendor-key dev.key --vendor-cert dev.pem --identity $ID --new-key new.key \
  --operator-root op/root.crt --dir prov > e2.log 2>&1 && pass "x2sec enroll vs mock: provisioned root" || fail "enroll provisioned"

other=$(mktemp -d "$D/other.XXXX")
$X2SEC pki init-operator-ca --dir $other/op --name Other >/dev/null
$X2SEC enroll --server $URL --vendor-key dev.key --vendor-cert dev.pem --identity $ID --new-key new.key \
  --operator-root $other/op/root.crt --dir wrongroot > e3.log 2>&1 && fail "wrong operator root accepted" || \
  pass "x2sec enroll refuses a server not chaining to the provisioned root"
check "nothing installed with the wrong root" test ! -e wrongroot/operator.crt

$X2SEC enroll --server $URL --vendor-key rogue.key --vendor-cert rogue.pem --identity $ID --new-key new.key \
  --operator-root op/root.crt --dir rogue-out > e4.log 2>&1 && fail "rogue vendor accepted by mock" || \
  check "rogue vendor: clear CMP error" grep -qiE "failed|error" e4.log
check "nothing installed for the rogue" test ! -e rogue-out/operator.crt

$X2SEC pki keygen --out other.key >/dev/null
$X2SEC enroll --server $URL --vendor-key dev.key --vendor-cert dev.pem --identity $ID --new-key other.key \
  --operator-root op/root.crt --dir wrongkey > e5.log 2>&1 && fail "certificate for another key accepted" || \
  check "certificate for another key refused before certConf" grep -qE "does not match our enrollment key|requested public key" e5.log
echo "failures: $FAILS"
exit $((FAILS > 0))
