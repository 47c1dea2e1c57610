#!/bin/bash
# Root CA key update end to end (RFC 9483 4.3.2): `x2sec pki root-update` prepares the new root
# and the link certificates in <ca-dir>/root-update/, `x2sec ca serve` answers `openssl cmp
# -cmd genm -infotype rootCaCert` with a genp rootCaKeyUpdate holding exactly these three
# certificates (OpenSSL 3.0's `-infotype` only takes names it knows as `id-it-<name>`, and 3.0
# has none for id-it-rootCaCert (1.3.6.1.5.5.7.4.20): an OPENSSL_CONF oid_section gives it
# one; the genp is saved with -rspout and compared byte for byte); then `root-update --activate`
# switches the CA to the new root and, after a restart, a client trusting the old root and a
# client trusting the new root both enrol.
#   usage: openssl_cmp_root_update.sh path/to/x2sec
source "$(dirname "$0")/common.sh"
PORT=$(free_port 41)
URL=127.0.0.1:$PORT/.well-known/cmp
$X2SEC pki init-vendor-ca --dir va --name "Vendor A" >/dev/null
$X2SEC pki init-operator-ca --dir op --name Operator --intermediate >/dev/null
$X2SEC pki issue-device --ca-dir va --eui 0023a1b2c3d4 --realm henb.vendor-a.example \
  --out-key dev.key --out-cert dev.pem >/dev/null
ID=0023a1b2c3d4.henb.vendor-a.example
cp op/root.crt old-root.crt

# ---- 1. prepare the update
$X2SEC pki root-update --ca-dir op > ru.log 2>&1 || { cat ru.log; fail "pki root-update"; }
U=op/root-update
check "root-update wrote newwithnew.crt, newwithold.crt, oldwithnew.crt and root.key" \
  test -s $U/newwithnew.crt -a -s $U/newwithold.crt -a -s $U/oldwithnew.crt -a -s $U/root.key
check "the new root key file is 0600" test "$(stat -c %a $U/root.key)" = 600
check "no temporary directory left" test -z "$(ls -A op | grep '^\.' || true)"
check "newWithOld validates under the old root" openssl verify -CAfile old-root.crt $U/newwithold.crt
check "oldWithNew validates under the new root" openssl verify -CAfile $U/newwithnew.crt $U/oldwithnew.crt
check "the old root's CA directory is unchanged" cmp -s old-root.crt op/root.crt
$X2SEC pki root-update --ca-dir op > ru2.log 2>&1 && fail "a second root-update was accepted" ||
  check "a second root-update is refused (\"already prepared\")" grep -q "already prepared" ru2.log

# ---- 2. the server announces it
start_server() {
  $X2SEC ca serve --ca-dir op --vendor-root va/root.crt --store sqlite:$D/ca.db --port $PORT --log-level warn \
    > server.log 2>&1 &
  SRV=$!; PIDS+=($SRV)
  wait_port $PORT || { echo "server did not start"; tail server.log; exit 1; }
}
start_server
cat > oids.cnf <<'EOF'
openssl_conf = openssl_init
[openssl_init]
oid_section = x2sec_oids
[x2sec_oids]
id-it-rootCaCert = 1.3.6.1.5.5.7.4.20
[cmp]
EOF
genm() {  # trusted-root rspout
  OPENSSL_CONF=$D/oids.cnf openssl cmp -cmd genm -infotype rootCaCert -server $URL -cert dev.pem -key dev.key \
    -trusted $1 -rspout $2 > $2.log 2>&1
}
# Hex with coreutils' od (xxd is not in a minimal Debian 12).  An empty conversion must never
# become an empty grep pattern (which matches anything): derhex then prints a marker no hex has.
hex() { od -An -v -tx1 | tr -d ' \n'; }
hexof() { hex < "$1"; }
derhex() {
  local h; h=$(openssl x509 -in "$1" -outform DER | hex)
  if [ -z "$h" ]; then echo "derhex: no DER from $1" >&2; echo "no-der-from-$1"; else echo "$h"; fi
}
check_genp() {  # rspout what
  local g; g=$(hexof $1)
  # id-it-rootCaKeyUpdate 1.3.6.1.5.5.7.4.18: OBJECT IDENTIFIER 06 08 2b 06 01 05 05 07 04 12
  check "$2: genp carries id-it-rootCaKeyUpdate" grep -q "06082b06010505070412" <<<"$g"
  for f in newwithnew newwithold oldwithnew; do
    check "$2: genp holds $f.crt byte for byte" grep -q "$(derhex $U/$f.crt)" <<<"$g"
  done
  # the value is RootCaKeyUpdateContent { newWithNew, [0] newWithOld, [1] oldWithNew } (EXPLICIT)
  check "$2: value is SEQUENCE { newWithNew, [0] newWithOld, [1] oldWithNew }" \
    grep -q "$(derhex $U/newwithnew.crt)a0[0-9a-f]*$(derhex $U/newwithold.crt)a1[0-9a-f]*$(derhex $U/oldwithnew.crt)" <<<"$g"
}
genm old-root.crt genp1.der && pass "openssl cmp -cmd genm -infotype rootCaCert (OpenSSL 3.0 + oid_section)" ||
  { fail "genm rootCaCert"; cat genp1.der.log; }
grep -q "genp contains InfoType" genp1.der.log && grep "genp contains" genp1.der.log | sed 's/^/  /'
check_genp genp1.der "before activation"
$X2SEC pki keygen --out k0.key >/dev/null
openssl cmp -cmd ir -server $URL -cert dev.pem -key dev.key -trusted old-root.crt -newkey k0.key \
  -subject "/CN=$ID" -sans $ID -certout pre.crt > ir0.log 2>&1 || { fail "ir before activation"; tail -n 5 ir0.log; }

# ---- 3. activate, restart: clients trusting either root enrol
kill $SRV; wait $SRV 2>/dev/null || true
$X2SEC pki root-update --ca-dir op --activate > act.log 2>&1 || { cat act.log; fail "root-update --activate"; }
check "root.crt is now the new root" cmp -s op/root.crt $U/newwithnew.crt
check "the old root is kept in root-old/" cmp -s op/root-old/root.crt old-root.crt
check "root.key (new) and root-old/root.key are 0600" \
  test "$(stat -c %a op/root.key) $(stat -c %a op/root-old/root.key)" = "600 600"
check "the issuing CA is certified by the new root" openssl verify -CAfile op/root.crt op/ca.crt
start_server
$X2SEC pki keygen --out k1.key >/dev/null; $X2SEC pki keygen --out k2.key >/dev/null
openssl cmp -cmd ir -server $URL -cert dev.pem -key dev.key -trusted old-root.crt -newkey k1.key \
  -subject "/CN=$ID" -sans $ID -certout old-trust.crt > ir1.log 2>&1 &&
  pass "ir by a client trusting only the old root (server sends newWithOld)" || { fail "ir, old root"; tail -n 5 ir1.log; }
openssl cmp -cmd ir -server $URL -cert dev.pem -key dev.key -trusted op/root.crt -newkey k2.key \
  -subject "/CN=$ID" -sans $ID -certout new-trust.crt > ir2.log 2>&1 &&
  pass "ir by a client trusting the new root" || { fail "ir, new root"; tail -n 5 ir2.log; }
check "the new certificate validates under the new root" openssl verify -CAfile op/root.crt -untrusted op/ca.crt new-trust.crt
cat op/ca.crt $U/newwithold.crt > via-link.pem
check "and under the old root through newWithOld" openssl verify -CAfile old-root.crt -untrusted via-link.pem old-trust.crt
check "a certificate issued before the switch validates under the new root" \
  openssl verify -CAfile op/root.crt -untrusted op/ca.crt pre.crt
$X2SEC pki keygen --out k3.key >/dev/null
openssl cmp -cmd kur -server $URL -cert pre.crt -key k0.key -untrusted op/root-old/ca.crt -trusted old-root.crt \
  -newkey k3.key -certout kur.crt > kur.log 2>&1 &&
  pass "kur with the certificate issued before the switch" || { fail "kur after activation"; tail -n 5 kur.log; }
$X2SEC enroll --server http://$URL --vendor-key dev.key --vendor-cert dev.pem --dir xe-inband > xe1.log 2>&1 &&
  check "x2sec enroll without a provisioned root (3GPP in-band) learns the new root" cmp -s xe-inband/operator-root.crt op/root.crt ||
  { fail "x2sec enroll in-band"; tail -n 3 xe1.log; }
$X2SEC enroll --server http://$URL --vendor-key dev.key --vendor-cert dev.pem --operator-root old-root.crt \
  --dir xe-old > xe2.log 2>&1 && pass "x2sec enroll --operator-root <old root>" || { fail "x2sec enroll, old root"; tail -n 3 xe2.log; }
genm old-root.crt genp2.der || { fail "genm rootCaCert after activation"; cat genp2.der.log; }
check_genp genp2.der "after activation"
echo "failures: $FAILS"
exit $((FAILS > 0))
