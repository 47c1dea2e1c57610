#!/bin/bash
# `openssl ocsp` (OpenSSL's OCSP client) against the OCSP responder of `x2sec ca serve`:
# certificates enrolled with `openssl cmp` carry the responder's URL in authorityInfoAccess;
# good, revoked (by rr, and by a change made directly in the store by another process) and
# unknown, with and without nonce, the response verified with -CAfile (chain of the delegated
# signer) and with -VAfile (the signer pinned); GET per RFC 6960 A.1; garbage and truncated
# requests answered malformedRequest and counted.
source "$(dirname "$0")/common.sh"
PORT=$(free_port 3)
OPORT=$(free_port 4)
ID=0023a1b2c3d4.henb.vendor-a.example
OURL=http://127.0.0.1:$OPORT/ocsp
$X2SEC pki init-vendor-ca --dir va --name "Vendor A" >/dev/null
$X2SEC pki init-operator-ca --dir op --name Operator --intermediate >/dev/null
$X2SEC pki issue-device --ca-dir va --eui 0023a1b2c3d4 --realm henb.vendor-a.example --out-key dev.key --out-cert dev.pem >/dev/null
for k in new1 new2 new3; do $X2SEC pki keygen --out $k.key >/dev/null; done

$X2SEC ca serve --ca-dir op --vendor-root va/root.crt --store sqlite:$D/ca.db --port $PORT \
  --ocsp-port $OPORT --ocsp-url $OURL --log-level warn > server.log 2>&1 &
PIDS+=($!)
wait_port $PORT && wait_port $OPORT || { echo "server did not start"; exit 1; }
URL=127.0.0.1:$PORT/.well-known/cmp
for i in 1 2 3; do
  openssl cmp -cmd ir -server $URL -cert dev.pem -key dev.key -trusted op/root.crt -implicit_confirm \
    -newkey new$i.key -subject "/CN=$ID" -sans $ID -certout c$i.crt > ir$i.log 2>&1 || fail "openssl cmp ir $i"
done
check "delegated OCSP signer written: op/ocsp.crt" test -s op/ocsp.crt
check "OCSP signer has id-kp-OCSPSigning" grep -q "OCSP Signing" <(openssl x509 -in op/ocsp.crt -noout -ext extendedKeyUsage)
check "OCSP signer has id-pkix-ocsp-nocheck" grep -q "OCSP No Check" <(openssl x509 -in op/ocsp.crt -noout -text)
check "OCSP signer key 0600" test "$(stat -c %a op/ocsp.key)" = 600
check "issued certificate: authorityInfoAccess OCSP - URI:$OURL" \
  grep -q "OCSP - URI:$OURL" <(openssl x509 -in c1.crt -noout -ext authorityInfoAccess)

q() { openssl ocsp -issuer op/ca.crt -url "$OURL" "$@" 2>&1; }
out=$(q -cert c1.crt -CAfile op/root.crt)
check "good (nonce, -CAfile root)" bash -c "grep -q 'c1.crt: good' <<<'$out' && grep -q 'Response verify OK' <<<'$out'"
out=$(q -cert c1.crt -CAfile op/root.crt -no_nonce)
check "good without nonce" bash -c "grep -q 'c1.crt: good' <<<'$out' && grep -q 'Response verify OK' <<<'$out'"
out=$(q -cert c1.crt -VAfile op/ocsp.crt)
check "good (-VAfile: the delegated signer pinned)" bash -c "grep -q 'c1.crt: good' <<<'$out' && grep -q 'Response verify OK' <<<'$out'"
out=$(q -cert c1.crt -CAfile op/root.crt -resp_text)
check "nonce echoed" grep -q "OCSP Nonce" <<<"$out"
check "responder signs with SHA-256" grep -q "ecdsa-with-SHA256" <<<"$out"
out=$(q -sha256 -cert c1.crt -CAfile op/root.crt)
check "good with a SHA-256 CertID" grep -q "c1.crt: good" <<<"$out"

# revoked by the holder's rr (keyCompromise)
openssl cmp -cmd rr -server $URL -cert c2.crt -key new2.key -untrusted op/ca.crt -trusted op/root.crt \
  -oldcert c2.crt -revreason 1 > rr.log 2>&1 || fail "openssl cmp rr"
out=$(q -cert c2.crt -CAfile op/root.crt)
check "revoked after rr, with reason keyCompromise" \
  bash -c "grep -q 'c2.crt: revoked' <<<'$out' && grep -q 'Reason: keyCompromise' <<<'$out' && grep -q 'Response verify OK' <<<'$out'"
out=$(q -cert c2.crt -CAfile op/root.crt -no_nonce)
check "revoked without nonce" grep -q "c2.crt: revoked" <<<"$out"
# revoked in the store by another process (what a second instance or `x2sec ca revoke` does)
S3=$(openssl x509 -in c3.crt -noout -serial | cut -d= -f2)
check "c3 good before" grep -q "c3.crt: good" <<<"$(q -cert c3.crt -CAfile op/root.crt)"
sqlite3 $D/ca.db "UPDATE certificates SET revoked = 1, revoked_at = strftime('%s','now'), reason = 4 WHERE hex(serial) = upper('$S3')"
out=$(q -cert c3.crt -CAfile op/root.crt)
check "revoked at once after a store change (superseded)" \
  bash -c "grep -q 'c3.crt: revoked' <<<'$out' && grep -q 'Reason: superseded' <<<'$out'"

# unknown: a serial the store never recorded, and a certificate of the CA outside the store
out=$(q -serial 0x0123456789abcdef -CAfile op/root.crt)
check "unknown serial" bash -c "grep -q ': unknown' <<<'$out' && grep -q 'Response verify OK' <<<'$out'"
out=$(q -cert op/ra.crt -CAfile op/root.crt -no_nonce)
check "certificate not in the store: unknown" grep -q "ra.crt: unknown" <<<"$out"

# GET (RFC 6960 A.1): the same request base64 + url-encoded in the path
q -cert c1.crt -no_nonce -reqout req.der -CAfile op/root.crt >/dev/null
B64=$(base64 -w0 req.der | sed 's,/,%2F,g; s,+,%2B,g; s,=,%3D,g')
curl -sf "$OURL/$B64" -o get.der && pass "GET $OURL/<base64>" || fail "GET"
out=$(openssl ocsp -respin get.der -issuer op/ca.crt -cert c1.crt -CAfile op/root.crt 2>&1)
check "GET answer: good, verified" bash -c "grep -q 'c1.crt: good' <<<'$out' && grep -q 'Response verify OK' <<<'$out'"

# bad input: garbage and a truncated request are malformedRequest (unsigned), counted
head -c 300 /dev/urandom > junk.bin
curl -sf -H 'Content-Type: application/ocsp-request' --data-binary @junk.bin "$OURL" -o junk.rsp || fail "POST garbage"
check "garbage: malformedRequest" grep -qi "malformedrequest" <(openssl ocsp -respin junk.rsp -resp_text -noverify 2>&1)
head -c 20 req.der > trunc.der
curl -sf -H 'Content-Type: application/ocsp-request' --data-binary @trunc.der "$OURL" -o trunc.rsp || fail "POST truncated"
check "truncated request: malformedRequest" grep -qi "malformedrequest" <(openssl ocsp -respin trunc.rsp -resp_text -noverify 2>&1)
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
check "wrong content type: 415" test "$(code -H 'Content-Type: text/plain' --data-binary @req.der $OURL)" = 415
check "CMP is not served on the OCSP listener: 404" \
  test "$(code -H 'Content-Type: application/pkixcmp' --data-binary @req.der http://127.0.0.1:$OPORT/.well-known/cmp)" = 404

kill -TERM ${PIDS[0]}; wait ${PIDS[0]} || true; PIDS=()
check "counter ocsp.reject.malformed = 2" grep -q "ocsp.reject.malformed = 2" server.log
grep -E "ocsp\.|http.ok.ocsp" server.log | sed 's/^/  /'
echo "failures: $FAILS"
exit $((FAILS > 0))
