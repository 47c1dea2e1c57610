#!/bin/bash
# `openssl cmp` (OpenSSL's CMP client) against `x2sec ca serve`: vendor-certificate ir with
# certConf, ir with implicitConfirm, kur, rr, CRL; negatives: rogue vendor, expired vendor
# certificate, bad POP, reused transactionID, wrong content type, truncated and oversized
# bodies -- each a CMP error or HTTP 4xx, and the store unchanged.
source "$(dirname "$0")/common.sh"
PORT=$(free_port 1)
ID=0023a1b2c3d4.henb.vendor-a.example
$X2SEC pki init-vendor-ca --dir va --name "Vendor A" >/dev/null
$X2SEC pki init-vendor-ca --dir rogue --name "Rogue" >/dev/null
$X2SEC pki init-operator-ca --dir op --name Operator --intermediate --crl-url http://127.0.0.1:$PORT/crl >/dev/null
$X2SEC pki issue-device --ca-dir va --eui 0023a1b2c3d4 --realm henb.vendor-a.example --out-key dev.key --out-cert dev.pem >/dev/null
$X2SEC pki issue-device --ca-dir rogue --eui 0023a1b2c3d4 --realm henb.vendor-a.example --out-key rogue.key --out-cert rogue.pem >/dev/null
NOW=$(date +%s)
$X2SEC pki issue-device --ca-dir va --eui 0023a1b2c3d5 --realm henb.vendor-a.example --out-key old.key --out-cert old.pem \
  --not-before-unix $((NOW - 864000)) --not-after-unix $((NOW - 86400)) >/dev/null
for k in new new2 new3 new4 new5; do $X2SEC pki keygen --out $k.key >/dev/null; done

$X2SEC ca serve --ca-dir op --vendor-root va/root.crt --store sqlite:$D/ca.db --port $PORT \
  --crl-url http://127.0.0.1:$PORT/crl --log-level warn > server.log 2>&1 &
PIDS+=($!)
wait_port $PORT || { echo "server did not start"; exit 1; }
URL=127.0.0.1:$PORT/.well-known/cmp
certs() { sqlite3 $D/ca.db "SELECT COUNT(*) FROM certificates"; }
txns() { sqlite3 $D/ca.db "SELECT COUNT(*) FROM transactions"; }

# 1. ir signed with the vendor certificate, certConf/pkiConf
openssl cmp -cmd ir -server $URL -cert dev.pem -key dev.key -trusted op/root.crt \
  -newkey new.key -subject "/CN=$ID" -sans $ID -certout new.crt -cacertsout capubs.pem \
  -extracertsout extra.pem -reqout ir1.der,cc1.der > ir.log 2>&1 && pass "openssl cmp ir accepted" || fail "openssl cmp ir"
check "new certificate chains to the operator root" openssl verify -CAfile op/root.crt -untrusted op/ca.crt new.crt
check "SAN is the node identity" grep -q "DNS:$ID" <(openssl x509 -in new.crt -noout -ext subjectAltName)
check "keyUsage digitalSignature critical" grep -A1 -q "Key Usage: critical" <(openssl x509 -in new.crt -noout -text)
check "caPubs holds the operator root" cmp <(openssl x509 -in capubs.pem -outform DER) <(openssl x509 -in op/root.crt -outform DER)
check "extraCerts hold the operator root" grep -q "Operator Root CA" <(openssl crl2pkcs7 -nocrl -certfile extra.pem | openssl pkcs7 -print_certs -noout)
check "store: certificate confirmed by certConf" test "$(sqlite3 $D/ca.db "SELECT status FROM transactions")" = confirmed

# 2. ir with implicit confirmation
openssl cmp -cmd ir -server $URL -cert dev.pem -key dev.key -trusted op/root.crt -implicit_confirm \
  -newkey new2.key -subject "/CN=$ID" -sans $ID -certout new2.crt -reqout ir2.der > ir2.log 2>&1 \
  && pass "openssl cmp ir -implicit_confirm accepted" || fail "ir -implicit_confirm"
check "store: implicit confirmation recorded" test "$(sqlite3 $D/ca.db "SELECT COUNT(*) FROM transactions WHERE status='implicit'")" = 1

# 2b. HTTP keep-alive: ir + certConf on one persistent connection (-keep_alive 2 makes the
#     client fail if the server closes after the ir)
openssl cmp -cmd ir -server $URL -cert dev.pem -key dev.key -trusted op/root.crt -keep_alive 2 \
  -newkey new5.key -subject "/CN=$ID" -sans $ID -certout new5.crt > ka2.log 2>&1 \
  && pass "openssl cmp ir -keep_alive 2 (persistent connection required)" || fail "ir -keep_alive 2"
openssl cmp -cmd ir -server $URL -cert dev.pem -key dev.key -trusted op/root.crt -keep_alive 1 \
  -newkey new5.key -subject "/CN=$ID" -sans $ID -certout new6.crt > ka1.log 2>&1 \
  && pass "openssl cmp ir -keep_alive 1" || fail "ir -keep_alive 1"
check "store: both keep-alive transactions confirmed" \
  test "$(sqlite3 $D/ca.db "SELECT COUNT(*) FROM transactions WHERE status='confirmed'")" = 3

# 3. kur signed with the operator certificate
openssl cmp -cmd kur -server $URL -cert new.crt -key new.key -untrusted op/ca.crt -trusted op/root.crt \
  -newkey new3.key -certout kur.crt > kur.log 2>&1 && pass "openssl cmp kur accepted" || fail "kur"
check "kur certificate keeps the identity" grep -q "DNS:$ID" <(openssl x509 -in kur.crt -noout -ext subjectAltName)
check "store: kur recorded" test "$(sqlite3 $D/ca.db "SELECT COUNT(*) FROM transactions WHERE body='kur'")" = 1

# 4. rr with a CRLReason (keyCompromise), then the CRL at the cRLDistributionPoints URL lists
#    the serial with that reason
SERIAL=$(openssl x509 -in new2.crt -noout -serial | cut -d= -f2)
openssl cmp -cmd rr -server $URL -cert new2.crt -key new2.key -untrusted op/ca.crt -trusted op/root.crt \
  -oldcert new2.crt -revreason 1 > rr.log 2>&1 && pass "openssl cmp rr -revreason 1 accepted" || fail "rr"
check "store: revocation reason 1 recorded" test "$(sqlite3 $D/ca.db "SELECT reason FROM certificates WHERE revoked = 1")" = 1
CDP=$(openssl x509 -in new.crt -noout -ext crlDistributionPoints | grep -o 'http://[^ ]*')
curl -sf "$CDP" -o crl.der && pass "CRL served at $CDP" || fail "CRL download"
check "CRL lists the revoked serial" grep -qi "$SERIAL" <(openssl crl -inform DER -in crl.der -noout -text | tr -d ':')
openssl crl -inform DER -in crl.der -noout -text | grep -A6 -i "Serial Number: $SERIAL" | grep -q "Key Compromise" \
  && pass "CRL entry carries reason Key Compromise" || fail "CRL entry reason"
check "CRL signed by the issuing CA" openssl crl -inform DER -in crl.der -noout -CAfile <(cat op/ca.crt op/root.crt)

# 4b. p10cr as `openssl cmp -cmd p10cr` sends it (PKCS#10 CSR, certReqId -1 in cp and certConf)
for k in p10 p10w p10m; do $X2SEC pki keygen --out $k.key >/dev/null; done
openssl req -new -key p10.key -subj "/CN=$ID" -addext "subjectAltName=DNS:$ID" -out p10.csr
openssl cmp -cmd p10cr -server $URL -cert dev.pem -key dev.key -trusted op/root.crt -csr p10.csr \
  -certout p10.crt > p10.log 2>&1 && pass "openssl cmp p10cr accepted" || fail "openssl cmp p10cr"
check "p10cr: certConf answered with pkiConf" grep -q "received PKICONF" p10.log
check "p10cr certificate carries the CSR's key" cmp <(openssl x509 -in p10.crt -noout -pubkey) <(openssl pkey -in p10.key -pubout)
check "p10cr certificate chains to the operator root" openssl verify -CAfile op/root.crt -untrusted op/ca.crt p10.crt
check "store: p10cr confirmed" test "$(sqlite3 $D/ca.db "SELECT status FROM transactions WHERE body='p10cr'")" = confirmed
openssl cmp -cmd p10cr -server $URL -cert dev.pem -key dev.key -trusted op/root.crt -csr p10.csr -implicit_confirm \
  -certout p10i.crt > p10i.log 2>&1 && pass "openssl cmp p10cr -implicit_confirm accepted" || fail "p10cr -implicit_confirm"
check "store: p10cr implicit confirmation" test "$(sqlite3 $D/ca.db "SELECT COUNT(*) FROM transactions WHERE body='p10cr' AND status='implicit'")" = 1
C0=$(certs); T0=$(txns)
openssl req -new -key p10m.key -subj "/CN=001122334455.henb.vendor-a.example" -out p10m.csr
openssl cmp -cmd p10cr -server $URL -cert dev.pem -key dev.key -trusted op/root.crt -csr p10m.csr \
  -certout x.crt > p10m.log 2>&1 && fail "p10cr for a foreign identity accepted" || \
  check "p10cr for a foreign identity: notAuthorized" grep -q "PKIFailureInfo: notAuthorized" p10m.log
openssl req -new -key p10w.key -sha1 -subj "/CN=$ID" -out p10w.csr
openssl cmp -cmd p10cr -server $URL -cert dev.pem -key dev.key -trusted op/root.crt -csr p10w.csr \
  -certout x.crt > p10w.log 2>&1 && fail "SHA-1 signed CSR accepted" || \
  check "p10cr with a SHA-1 CSR signature: badAlg" grep -q "PKIFailureInfo: badAlg" p10w.log
openssl req -in p10.csr -outform DER -out p10.der
python3 -c "import sys; b = bytearray(open('p10.der','rb').read()); b[-3] ^= 1; open('p10bad.der','wb').write(b)"
openssl req -inform DER -in p10bad.der -out p10bad.csr
openssl cmp -cmd p10cr -server $URL -cert dev.pem -key dev.key -trusted op/root.crt -csr p10bad.csr \
  -certout x.crt > p10bad.log 2>&1 && fail "CSR with a broken signature accepted" || \
  check "p10cr with a broken CSR signature: badPOP" grep -q "PKIFailureInfo: badPOP" p10bad.log
check "refused p10cr wrote nothing to the store" test "$(certs)" = "$C0"

C0=$(certs); T0=$(txns)
# 5. negatives
openssl cmp -cmd ir -server $URL -cert rogue.pem -key rogue.key -trusted op/root.crt -newkey new4.key \
  -subject "/CN=$ID" -sans $ID -certout x.crt > rogue.log 2>&1 && fail "rogue vendor accepted" || \
  check "rogue vendor: signerNotTrusted" grep -q signerNotTrusted rogue.log
openssl cmp -cmd ir -server $URL -cert old.pem -key old.key -trusted op/root.crt -newkey new4.key \
  -subject "/CN=0023a1b2c3d5.henb.vendor-a.example" -certout x.crt > expired.log 2>&1 && fail "expired vendor cert accepted" || \
  check "expired vendor certificate: signerNotTrusted (expired)" grep -q "signerNotTrusted" expired.log
openssl cmp -cmd ir -server $URL -cert dev.pem -key dev.key -trusted op/root.crt -newkey new4.key -popo 0 \
  -subject "/CN=$ID" -certout x.crt > pop.log 2>&1 && fail "raVerified POP accepted" || \
  check "bad POP (raVerified from an end entity): badPOP" grep -q badPOP pop.log
openssl cmp -cmd ir -server $URL -cert dev.pem -key dev.key -trusted op/root.crt -reqin ir2.der \
  -newkey new2.key -certout x.crt > tid.log 2>&1 && fail "reused transactionID accepted" || \
  check "reused transactionID: transactionIdInUse" grep -q transactionIdInUse tid.log
openssl cmp -cmd ir -server $URL -cert dev.pem -key dev.key -trusted op/root.crt -newkey new4.key \
  -subject "/CN=001122334455.henb.vendor-a.example" -certout x.crt > id.log 2>&1 && fail "foreign identity accepted" || \
  check "identity mismatch: notAuthorized" grep -q notAuthorized id.log
# message-level failures: protected CMP error messages with the specific PKIFailureInfo
openssl cmp -cmd ir -server $URL -cert dev.pem -key dev.key -trusted op/root.crt -newkey new4.key -digest sha1 \
  -subject "/CN=$ID" -sans $ID -certout x.crt > sha1.log 2>&1 && fail "SHA-1 protection accepted" || \
  check "SHA-1 protection and POP: badAlg" grep -q "PKIFailureInfo: badAlg" sha1.log
openssl cmp -cmd ir -server $URL -cert dev.pem -key dev.key -trusted op/root.crt -newkey new4.key -unprotected_requests \
  -subject "/CN=$ID" -sans $ID -certout x.crt > unprot.log 2>&1 && fail "unprotected ir accepted" || \
  check "unprotected ir: badMessageCheck" grep -q "PKIFailureInfo: badMessageCheck" unprot.log
openssl cmp -cmd ir -server $URL -ref 1234 -secret pass:not-a-vendor-cert -trusted op/root.crt -newkey new4.key \
  -subject "/CN=$ID" -certout x.crt > pbm.log 2>&1 && fail "PBM-protected ir accepted" || \
  check "MAC (PBM) protection: wrongIntegrity" grep -q "PKIFailureInfo: wrongIntegrity" pbm.log
# a captured ir with one byte of the (protected) certTemplate flipped (its transactionID is
# spent, but the protection is checked first; -reqin_new_tid would re-sign it)
python3 - ir1.der tampered.der "$ID" <<'PY'
import sys
m = bytearray(open(sys.argv[1], 'rb').read()); ident = sys.argv[3].encode()
i = m.find(ident); i = m.find(ident, i + 1)   # skip the header sender; hit the template subject
m[i] ^= 1; open(sys.argv[2], 'wb').write(m)
PY
openssl cmp -cmd ir -server $URL -cert dev.pem -key dev.key -trusted op/root.crt -reqin tampered.der \
  -newkey new4.key -certout x.crt > tamper.log 2>&1 && fail "tampered ir accepted" || \
  check "tampered ir: badMessageCheck" grep -q "PKIFailureInfo: badMessageCheck" tamper.log
check "reused transactionID answered with a CMP error message" grep -q "received error" tid.log
HTTP="http://127.0.0.1:$PORT/.well-known/cmp"
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
check "wrong content type: 415" test "$(code -H 'Content-Type: text/plain' --data-binary @ir1.der $HTTP)" = 415
check "GET: 405" test "$(code $HTTP)" = 405
head -c 200000 /dev/urandom > big.bin
check "oversized body: 413" test "$(code -H 'Content-Type: application/pkixcmp' --data-binary @big.bin $HTTP)" = 413
head -c 100 ir1.der > trunc.der
check "truncated PKIMessage: 400" test "$(code -H 'Content-Type: application/pkixcmp' --data-binary @trunc.der $HTTP)" = 400
LEN=$(stat -c %s ir1.der)
{ printf 'POST /.well-known/cmp HTTP/1.1\r\nHost: x\r\nContent-Type: application/pkixcmp\r\nContent-Length: %d\r\n\r\n' $LEN
  head -c $((LEN / 2)) ir1.der; } | nc -N -w 10 127.0.0.1 $PORT | head -n1 > trunc_http.txt || true
check "body shorter than Content-Length: 400" grep -q " 400 " trunc_http.txt
check "negatives wrote nothing to the store" test "$(certs)/$(txns)" = "$C0/$T0"

kill -TERM ${PIDS[0]}; wait ${PIDS[0]} || true; PIDS=()
# the two keep-alive transactions sent their certConf on the ir's connection
check "certConf on a reused connection (cmp.http.keepalive.reused >= 2)" \
  test "$(sed -n 's/.*cmp.http.keepalive.reused = //p' server.log)" -ge 2
grep -E "cmp.reject|http.reject|keepalive" server.log | sed 's/^/  /'
echo "failures: $FAILS"
exit $((FAILS > 0))
