#!/bin/bash
# `x2sec enroll` against `x2sec ca serve`: enrolment installs the operator credential as one
# unit (versions/<v> behind the `current` symlink, compatibility links, key 0600); then
# `--renew --if-needed` is a no-op with "not due until ..." outside the renewal window, a kur
# inside it (--renew-before larger than the lifetime), and a clear refusal (exit 2) for an
# expired certificate; `--revoke` afterwards shows up in the CRL.
source "$(dirname "$0")/common.sh"
PORT=$(free_port 3)
ID=0023a1b2c3e1.henb.vendor-a.example
URL=http://127.0.0.1:$PORT/.well-known/cmp
$X2SEC pki init-vendor-ca --dir va --name "Vendor A" >/dev/null
$X2SEC pki init-operator-ca --dir op --name Operator --crl-url http://127.0.0.1:$PORT/crl >/dev/null
$X2SEC pki issue-device --ca-dir va --eui 0023a1b2c3e1 --realm henb.vendor-a.example --out-key dev.key --out-cert dev.pem >/dev/null
$X2SEC ca serve --ca-dir op --vendor-root va/root.crt --store sqlite:$D/ca.db --port $PORT --validity-days 365 \
  --crl-url http://127.0.0.1:$PORT/crl --log-level warn > server.log 2>&1 &
PIDS+=($!)
wait_port $PORT || { echo "server did not start"; exit 1; }
serial() { openssl x509 -in "$1" -noout -serial | cut -d= -f2; }

$X2SEC enroll --server $URL --vendor-key dev.key --vendor-cert dev.pem --operator-root op/root.crt --dir cred > e1.log 2>&1 \
  && pass "ir: enrolled" || fail "ir"
check "current is a symlink into versions/" test -L cred/current -a -d cred/current
check "operator.key is a link through current" test "$(readlink cred/operator.key)" = current/operator.key
check "key file 0600" test "$(stat -L -c %a cred/operator.key)" = 600
check "key and certificate match" cmp <(openssl pkey -in cred/operator.key -pubout) <(openssl x509 -in cred/operator.crt -noout -pubkey)
S1=$(serial cred/operator.crt)

$X2SEC enroll --server $URL --dir cred --renew --if-needed --renew-before 30 > r1.log 2>&1 \
  && pass "--renew --if-needed outside the window: exit 0" || fail "renew --if-needed (not due)"
check "not due: says until when" grep -q "not due until" r1.log
check "not due: certificate unchanged" test "$(serial cred/operator.crt)" = "$S1"
check "not due: no kur sent" test "$(sqlite3 $D/ca.db "SELECT COUNT(*) FROM transactions WHERE body='kur'")" = 0

$X2SEC enroll --server $URL --dir cred --renew --if-needed --renew-before 400 > r2.log 2>&1 \
  && pass "--renew --if-needed inside the window (400 days > lifetime): kur" || fail "renew --if-needed (due)"
S2=$(serial cred/operator.crt)
check "renewed: new serial installed" test "$S2" != "$S1"
check "renewed: kur recorded" test "$(sqlite3 $D/ca.db "SELECT COUNT(*) FROM transactions WHERE body='kur'")" = 1
check "renewed: key and certificate match" cmp <(openssl pkey -in cred/operator.key -pubout) <(openssl x509 -in cred/operator.crt -noout -pubkey)
check "renewed: previous version kept, two in total" test "$(ls cred/versions | wc -l)" = 2
check "bad --renew-before rejected" bash -c "! $X2SEC enroll --server $URL --dir cred --renew --if-needed --renew-before soon >/dev/null 2>&1"

# an expired operator certificate (flat legacy layout, as an older install wrote it)
NOW=$(date +%s)
mkdir old
$X2SEC pki issue-device --ca-dir op --eui 0023a1b2c3e2 --realm henb.vendor-a.example --out-key old/operator.key \
  --out-cert old/operator.crt --not-before-unix $((NOW - 864000)) --not-after-unix $((NOW - 86400)) >/dev/null
cp op/root.crt old/operator-root.crt
RC=0; $X2SEC enroll --server $URL --dir old --renew --if-needed > r3.log 2>&1 || RC=$?
check "expired: exit 2" test $RC = 2
check "expired: says so and points to re-enrolment" grep -q "expired at .*re-enrol" r3.log
check "expired: nothing sent" test "$(sqlite3 $D/ca.db "SELECT COUNT(*) FROM transactions WHERE body='kur'")" = 1

$X2SEC enroll --server $URL --dir cred --revoke > rv.log 2>&1 && pass "revoke the renewed certificate" || fail "revoke"
curl -sf http://127.0.0.1:$PORT/crl -o crl.der
check "CRL lists the renewed certificate" grep -qi "$S2" <(openssl crl -inform DER -in crl.der -noout -text | tr -d ':')
kill -TERM ${PIDS[0]}; wait ${PIDS[0]} || true; PIDS=()
echo "failures: $FAILS"
exit $((FAILS > 0))
