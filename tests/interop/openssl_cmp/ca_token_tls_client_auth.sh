#!/bin/bash
# The RA/CA with its CA signing key in a SoftHSM2 token, serving CMP over HTTPS with TLS client
# authentication required (client_ca = the vendor root):
#  * `x2sec pki init-operator-ca --intermediate --key-token`: the issuing CA key is generated in
#    the token (sensitive, never extractable), ca.key holds only its URI;
#  * `openssl cmp -tls_used -tls_cert -tls_key` (the device certificate as TLS client
#    certificate) enrols; the certificate chains to the operator root and is signed by the token
#    key; the CRL (GET /crl) is signed by it too;
#  * no TLS client certificate, or one of another vendor: the handshake is refused, counted
#    (cmp.http.tls.client_cert_missing / client_cert_rejected) and logged with the reason;
#  * `x2sec enroll --tls-cert --tls-key pkcs11:...`: the H(e)NB's TLS client key in its token.
source "$(dirname "$0")/common.sh"
wait_grep() { for _ in $(seq 100); do grep -q "$1" "$2" && return 0; sleep 0.05; done; return 1; }
P11MOD=/usr/lib/softhsm/libsofthsm2.so
if [ ! -f $P11MOD ] || ! command -v softhsm2-util >/dev/null || ! command -v pkcs11-tool >/dev/null; then
  echo "SKIP: softhsm2 / opensc not installed (scripts/deps.sh installs them)"; exit 77
fi
mkdir -p hsm/tokens
printf "directories.tokendir = $D/hsm/tokens\nobjectstore.backend = file\n" > hsm/softhsm2.conf
export SOFTHSM2_CONF=$D/hsm/softhsm2.conf X2SEC_PKCS11_MODULE=$P11MOD
softhsm2-util --init-token --free --label ca --pin 1234 --so-pin 12345678 >/dev/null
softhsm2-util --init-token --free --label henb1 --pin 1234 --so-pin 12345678 >/dev/null
printf 1234 > pin; chmod 600 pin
CA_URI="pkcs11:token=ca;object=issuing?pin-source=file:$D/pin"

HTTP=$(free_port 1); HTTPS=$(free_port 2)
ID=0023a1b2c3d4.henb.vendor-a.example
$X2SEC pki init-vendor-ca --dir va --name "Vendor A" >/dev/null
$X2SEC pki init-vendor-ca --dir vb --name "Vendor B" >/dev/null
$X2SEC pki init-operator-ca --dir op --name Operator --intermediate --ra-dns localhost \
  --crl-url http://127.0.0.1:$HTTP/crl --key-token "$CA_URI" > init.log 2>&1 \
  && pass "init-operator-ca --key-token" || { fail "init-operator-ca --key-token"; cat init.log; exit 1; }
check "ca.key holds the token URI, no key material" bash -c "grep -q '^pkcs11:' op/ca.key && ! grep -q 'PRIVATE KEY' op/ca.key"
check "ca.key is 0600" test "$(stat -c %a op/ca.key)" = 600
pkcs11-tool --module $P11MOD --token-label ca --login --pin 1234 --list-objects --type privkey > objs.log 2>&1
check "token: the CA key is sensitive and never extractable" grep -q "never extractable" objs.log
check "token: the CA key only signs" grep -qE "Usage: +sign$" objs.log
KID=$(awk '/ID:/{print $2; exit}' objs.log)
check "ca.key names that key (CKA_ID)" test "$(sed -n 's/.*id=\([%0-9a-fA-F]*\).*/\1/p' op/ca.key | tr -d % | tr A-F a-f)" = "$KID"
$X2SEC pki issue-device --ca-dir va --eui 0023a1b2c3d4 --realm henb.vendor-a.example --out-key dev.key --out-cert dev.pem >/dev/null
$X2SEC pki issue-device --ca-dir vb --eui 0023a1b2c3d5 --realm henb.vendor-a.example --out-key devb.key --out-cert devb.pem >/dev/null
# the HTTPS server certificate for 127.0.0.1 (x2sec's client checks the address it connects to)
$X2SEC pki issue-server --ca-dir op --subject "/O=Operator/CN=ra-tls" --ip 127.0.0.1 --dns localhost \
  --out-key tls.key --out-cert tls.crt >/dev/null
for k in new1 new2 new3; do $X2SEC pki keygen --out $k.key >/dev/null; done

cat > ca.toml <<TOML
[ca]
dir = "op"
vendor_roots = ["va/root.crt"]
store = "sqlite:$D/ca.db"
[http]
port = $HTTP
[https]
port = $HTTPS
cert = "tls.crt"
key = "tls.key"
client_auth = "require"
client_ca = ["va/root.crt"]
verify_depth = 3
[policy]
crl_url = "http://127.0.0.1:$HTTP/crl"
TOML
$X2SEC ca serve --config ca.toml --log-level info > server.log 2>&1 &
PIDS+=($!)
wait_port $HTTPS || { echo "server did not start"; exit 1; }
BASE=127.0.0.1:$HTTPS/.well-known/cmp
ossl_ir() {  # extra args: TLS client options
  openssl cmp -cmd ir -server $BASE -tls_used -tls_trusted op/root.crt -tls_host localhost \
    -cert dev.pem -key dev.key -trusted op/root.crt -newkey $1 -subject "/CN=$ID" -sans $ID -certout $2 "${@:3}"
}
ossl_ir new1.key tls1.crt -tls_cert dev.pem -tls_key dev.key > ir_tls.log 2>&1 \
  && pass "openssl cmp -tls_used -tls_cert -tls_key against client_auth = require" || fail "openssl cmp with TLS client cert"
check "issued certificate chains to the operator root" openssl verify -CAfile op/root.crt -untrusted op/ca.crt tls1.crt
ossl_ir new2.key tls2.crt > ir_notls.log 2>&1 && fail "no TLS client certificate accepted" || pass "no TLS client certificate: refused"
ossl_ir new2.key tls2.crt -tls_cert devb.pem -tls_key devb.key > ir_foreign.log 2>&1 \
  && fail "TLS client certificate of another vendor accepted" || pass "TLS client certificate of another vendor: refused"
check "log: missing client certificate named" wait_grep "no client certificate (client_auth = require)" server.log
check "log: foreign client certificate named" wait_grep "TLS handshake refused: client certificate rejected: self-signed certificate in certificate chain" server.log
curl -s -o crl.der http://127.0.0.1:$HTTP/crl
check "CRL signed by the token CA key" bash -c "openssl crl -inform DER -in crl.der -noout -CAfile op/ca.crt 2>&1 | grep -q 'verify OK'"

# x2sec enroll with the H(e)NB's TLS client key in its token (the vendor certificate is issued for it)
HENB_URI="pkcs11:token=henb1;object=vendor?pin-source=file:$D/pin"
$X2SEC pki issue-device --ca-dir va --eui 0023a1b2c3d6 --realm henb.vendor-a.example --key-token "$HENB_URI" \
  --out-key tdev.key --out-cert tdev.pem >/dev/null
$X2SEC enroll --server https://$BASE --tls-trust op/root.crt --tls-cert tdev.pem --tls-key "$(cat tdev.key)" \
  --vendor-key tdev.key --vendor-cert tdev.pem --dir henb \
  --key-token "pkcs11:token=henb1;object=operator?pin-source=file:$D/pin" > enroll.log 2>&1 \
  && pass "x2sec enroll --tls-key pkcs11: (TLS client key in the token)" || { fail "x2sec enroll with token TLS key"; cat enroll.log; }
check "enrolled certificate chains to the operator root" openssl verify -CAfile op/root.crt -untrusted op/ca.crt henb/operator.crt
$X2SEC enroll --server https://$BASE --tls-trust op/root.crt --vendor-key tdev.key --vendor-cert tdev.pem --dir henb2 \
  > enroll_notls.log 2>&1 && fail "x2sec enroll without TLS client certificate accepted" || pass "x2sec enroll without TLS client certificate: refused"

kill -TERM ${PIDS[0]}; wait ${PIDS[0]} || true; PIDS=()
check "counted: cmp.http.tls.client_cert_missing = 2" grep -q "cmp.http.tls.client_cert_missing = 2" server.log
check "counted: cmp.http.tls.client_cert_rejected = 1" grep -q "cmp.http.tls.client_cert_rejected = 1" server.log
check "store: two certificates" test "$(sqlite3 $D/ca.db "SELECT COUNT(*) FROM certificates")" = 2
check "no private key file for the CA anywhere" bash -c "! grep -rl 'PRIVATE KEY' op/ca.key"

# root CA key update with the new root key in the token (`pki root-update --key-token`), then
# --activate: the issuing CA (its key in the token too) re-certified by the token's new root key
cp op/root.crt old-root.crt
$X2SEC pki root-update --ca-dir op --key-token "pkcs11:token=ca;object=root2?pin-source=file:$D/pin" > ru.log 2>&1 \
  && pass "pki root-update --key-token" || { fail "pki root-update --key-token"; cat ru.log; }
check "root-update/root.key holds the token URI, no key material, 0600" bash -c \
  "grep -q '^pkcs11:.*object=root2' op/root-update/root.key && ! grep -q 'PRIVATE KEY' op/root-update/root.key && test \$(stat -c %a op/root-update/root.key) = 600"
check "newWithOld (signed by the old root key) validates under the old root" \
  openssl verify -CAfile old-root.crt op/root-update/newwithold.crt
check "oldWithNew (signed by the token key) validates under the new root" \
  openssl verify -CAfile op/root-update/newwithnew.crt op/root-update/oldwithnew.crt
$X2SEC pki root-update --ca-dir op --activate > act.log 2>&1 && pass "pki root-update --activate (token keys)" ||
  { fail "root-update --activate with token keys"; cat act.log; }
check "the issuing CA is certified by the new (token) root" openssl verify -CAfile op/root.crt op/ca.crt
check "root.key now holds the new root's token URI" grep -q '^pkcs11:.*object=root2' op/root.key
check "the enrolled certificate chains to the new root" openssl verify -CAfile op/root.crt -untrusted op/ca.crt henb/operator.crt
echo "failures: $FAILS"
exit $((FAILS > 0))
