#!/bin/bash
# Approval and administration: `openssl cmp` (which polls) against a profile with
# approval = "manual"; `x2sec ca list --pending --json`, `approve` (certificate delivered at
# the next poll, certConf), `reject` (rejection with notAuthorized and the reason), `revoke` and
# `crl` on the store while the server runs, and the audit log: `audit verify` intact, an UPDATE
# refused by the append-only trigger, a rewritten and a deleted entry detected.
source "$(dirname "$0")/common.sh"
PORT=$(free_port 5)
ID=0023a1b2c3d4.henb.vendor-a.example
$X2SEC pki init-vendor-ca --dir va --name "Vendor A" >/dev/null
$X2SEC pki init-operator-ca --dir op --name Operator --intermediate >/dev/null
$X2SEC pki issue-device --ca-dir va --eui 0023a1b2c3d4 --realm henb.vendor-a.example --out-key dev.key --out-cert dev.pem >/dev/null
for k in k1 k2 k3; do $X2SEC pki keygen --out $k.key >/dev/null; done
cat > ca.toml <<EOF
[ca]
dir = "op"
vendor_roots = ["va/root.crt"]
store = "sqlite:$D/ca.db"
[http]
port = $PORT
[policy]
poll_interval_s = 1
[profiles.hold]
approval = "manual"
EOF
$X2SEC ca serve --config ca.toml --log-level warn > server.log 2>&1 &
PIDS+=($!)
wait_port $PORT || { echo "server did not start"; exit 1; }
URL=127.0.0.1:$PORT/.well-known/cmp/p/hold
CA="$X2SEC ca"
pending_tid() {  # waits until one request is pending, prints its transactionID
  for _ in $(seq 100); do
    t=$($CA list --config ca.toml --pending --json | python3 -c "import json,sys; p=json.load(sys.stdin)['pending']; print(p[0]['transaction_id'] if p else '')")
    [ -n "$t" ] && { echo "$t"; return 0; }
    sleep 0.1
  done
  return 1
}

# 1. held, approved, delivered at the next poll
openssl cmp -cmd ir -server $URL -cert dev.pem -key dev.key -trusted op/root.crt -newkey k1.key \
  -subject "/CN=$ID" -certout held.crt -total_timeout 60 > held.log 2>&1 &
CLIENT=$!
TID=$(pending_tid) && pass "request held: $TID" || fail "no pending request"
check "nothing issued while pending" test "$(sqlite3 $D/ca.db 'SELECT COUNT(*) FROM certificates')" = 0
sleep 1.5   # at least one pollReq answered with pollRep
$CA approve "$TID" --by alice --reason "site survey done" --config ca.toml > approve.log 2>&1 && pass "x2sec ca approve" || fail "approve"
wait $CLIENT && pass "openssl cmp got the certificate after polling" || fail "openssl cmp after approval"
check "client polled (pollReq/pollRep)" grep -q "received ip/cp/kup after polling" held.log
check "issued certificate chains to the operator root" openssl verify -CAfile op/root.crt -untrusted op/ca.crt held.crt
check "store: confirmed" test "$(sqlite3 $D/ca.db "SELECT status FROM transactions")" = confirmed
check "request state issued" grep -q '"state": "issued"' <($CA show "$TID" --config ca.toml --json)
$CA approve "$TID" --by bob --config ca.toml > again.log 2>&1 && fail "second decision accepted" || \
  check "a decided request cannot be decided again" grep -q "already issued" again.log

# 2. held, rejected: the poll answers a rejection with notAuthorized and the reason
openssl cmp -cmd ir -server $URL -cert dev.pem -key dev.key -trusted op/root.crt -newkey k2.key \
  -subject "/CN=$ID" -certout x.crt -total_timeout 60 > rej.log 2>&1 &
CLIENT=$!
TID2=$(pending_tid) && pass "second request held" || fail "no second pending request"
$CA reject "$TID2" --by alice --reason "unknown site" --config ca.toml > reject.log 2>&1 && pass "x2sec ca reject" || fail "reject"
wait $CLIENT && fail "rejected request enrolled" || \
  check "rejection: notAuthorized with the operator's reason" grep -q "PKIFailureInfo: notAuthorized.*unknown site" rej.log
check "rejected request issued nothing" test "$(sqlite3 $D/ca.db 'SELECT COUNT(*) FROM certificates')" = 1

# 2b. the x2sec client polls too (OpenSSL's client loop, bounded by 3 x --timeout)
$X2SEC enroll --server http://$URL --vendor-key dev.key --vendor-cert dev.pem --operator-root op/root.crt \
  --dir $D/node > enroll.log 2>&1 &
CLIENT=$!
TID3=$(pending_tid) && pass "x2sec enroll: request held" || fail "x2sec enroll: not held"
$CA approve "$TID3" --by alice --config ca.toml > /dev/null 2>&1
wait $CLIENT && pass "x2sec enroll got the certificate after polling" || fail "x2sec enroll after approval"
check "x2sec enroll installed the credential" test -s $D/node/operator.crt

# 3. revoke and CRL from the command line while the server runs
SERIAL=$(openssl x509 -in held.crt -noout -serial | cut -d= -f2)
$CA revoke "$SERIAL" --crl-reason 1 --by alice --reason "key leaked" --config ca.toml > revoke.log 2>&1 && pass "x2sec ca revoke" || fail "revoke"
$CA crl --config ca.toml --out crl.der > crl.log 2>&1 && pass "x2sec ca crl" || fail "crl"
check "CRL lists the serial" grep -qi "$SERIAL" <(openssl crl -inform DER -in crl.der -noout -text | tr -d ':')
check "CRL signed by the issuing CA" openssl crl -inform DER -in crl.der -noout -CAfile <(cat op/ca.crt op/root.crt)
check "list --json: certificate revoked" python3 -c "
import json,subprocess,sys
j=json.loads(subprocess.check_output(['$X2SEC','ca','list','--config','ca.toml','--json']))
sys.exit(0 if j['certificates'][0]['revoked'] and len(j['pending'])==3 else 1)"

# 4. audit log: every decision, hash chain, tampering detected
$CA audit --config ca.toml --json > audit.json
check "audit: hold, approve, issue, hold, reject, revoke" test "$(python3 -c "import json; print(','.join(e['action'] for e in json.load(open('audit.json'))))")" = "hold,approve,issue,hold,reject,hold,approve,issue,revoke"
check "audit: who and why recorded" python3 -c "
import json,sys; e=json.load(open('audit.json'))[1]; sys.exit(0 if e['actor']=='alice' and e['reason']=='site survey done' else 1)"
$CA audit verify --config ca.toml > v1.log 2>&1 && pass "audit verify: intact" || fail "audit verify on an intact log"
sqlite3 $D/ca.db "UPDATE audit SET reason='nothing' WHERE seq=2" 2> upd.log && fail "UPDATE of the audit log accepted" || \
  check "audit UPDATE refused (append-only)" grep -q "append-only" upd.log
kill -TERM ${PIDS[0]}; wait ${PIDS[0]} || true; PIDS=()
cp $D/ca.db tampered.db; cp $D/ca.db deleted.db
sqlite3 tampered.db "DROP TRIGGER audit_no_update; UPDATE audit SET actor='mallory' WHERE seq=2"
RC=0; $CA audit verify --store sqlite:tampered.db > v2.log 2>&1 || RC=$?
check "rewritten entry detected (exit 3)" test $RC = 3
check "rewritten entry named" grep -q "audit entry 2 was modified" v2.log
sqlite3 deleted.db "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq=4"
RC=0; $CA audit verify --store sqlite:deleted.db > v3.log 2>&1 || RC=$?
check "deleted entry detected (exit 3)" test $RC = 3
check "deleted entry named" grep -q "audit entry 4 is missing" v3.log
echo "failures: $FAILS"
exit $((FAILS > 0))
