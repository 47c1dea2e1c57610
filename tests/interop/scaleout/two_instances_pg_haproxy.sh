#!/bin/bash
# Two `x2sec ca serve` processes on one PostgreSQL 15 (a private cluster: initdb + pg_ctl on a
# unix socket in a temporary directory) behind HAProxy round-robin on loopback (LB=http, the
# default: balanced request by request, so a certConf usually reaches the other instance than
# its ir and is resumed there from the store; LB=tcp: per connection); N concurrent
# `openssl cmp` and `x2sec enroll` clients; one instance killed with SIGKILL while transactions
# are in flight.  Asserts: no duplicate serial, every certificate a client holds has its store
# record and its confirmation (status confirmed, not revoked), every failed attempt ended with a
# clear error and a retry (a new transaction) succeeded, certificates left unconfirmed by the
# dead instance are revoked by the survivor after the session timeout, CRL numbers never go down
# across the instances and every CRL lists every revocation made before it; with LB=http, that
# transactions were resumed on the instance that did not answer their ir.
#   usage: two_instances_pg_haproxy.sh path/to/x2sec [test|bench]
#   bench: enrolments/s through HAProxy with 1 and with 2 instances (not a timed test)
# Exit 77 (skipped) when haproxy or PostgreSQL 15 is not installed.
source "$(dirname "$0")/../openssl_cmp/common.sh"
MODE=${2:-test}
PGBIN=/usr/lib/postgresql/15/bin
command -v haproxy >/dev/null || { echo "SKIP: haproxy not installed (scripts/deps.sh)"; exit 77; }
[ -x $PGBIN/initdb ] || { echo "SKIP: PostgreSQL 15 not installed (scripts/deps.sh)"; exit 77; }
NCLI=${NCLI:-8}          # concurrent clients
PER=${PER:-4}            # enrolments per client (test mode)
TIMEOUT_S=4              # session timeout of both instances
LB=${LB:-http}           # HAProxy mode: http (per request) or tcp (per connection)
case $LB in http|tcp) ;; *) echo "LB must be http or tcp (got $LB)"; exit 2 ;; esac
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
chmod 755 "$D"
mkdir -p "$D/pg" out
[ "$(id -u)" = 0 ] && chown postgres "$D/pg"
pg_stop() { as_pg $PGBIN/pg_ctl -D "$D/pg/data" -m immediate stop >/dev/null 2>&1 || true; }
trap 'rc=$?; pg_stop; exit $rc' EXIT  # common.sh's cleanup runs on the way out (below)
cleanup_all() { local rc=$?; for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pg_stop; if [ $rc -ne 0 ]; then echo "--- FAILED (rc=$rc); logs:"; tail -n 20 "$D"/*.log 2>/dev/null || true; fi; rm -rf "$D"; }
trap cleanup_all EXIT
as_pg $PGBIN/initdb -A trust -U postgres -D "$D/pg/data" > initdb.log 2>&1 || { echo "initdb failed"; exit 1; }
as_pg $PGBIN/pg_ctl -D "$D/pg/data" -l "$D/pg/pg.log" -w \
  -o "-k $D/pg -c listen_addresses='' -c max_connections=60 -c fsync=on" start > pgctl.log 2>&1 || { echo "pg_ctl failed"; exit 1; }
as_pg $PGBIN/createdb -h "$D/pg" -U postgres x2sec
STORE="postgresql:host=$D/pg dbname=x2sec user=postgres"
psqlq() { $PGBIN/psql -h "$D/pg" -U postgres -d x2sec -At -c "$1"; }

P1=$(free_port 11); P2=$(free_port 12); PH=$(free_port 13); M1=$(free_port 14); M2=$(free_port 15)
$X2SEC pki init-vendor-ca --dir va --name "Vendor A" >/dev/null
$X2SEC pki init-operator-ca --dir op --name Operator --intermediate --crl-url http://127.0.0.1:$PH/crl >/dev/null
for c in $(seq 1 $NCLI); do
  eui=$(printf '0023a1b2%04x' $c)
  $X2SEC pki issue-device --ca-dir va --eui $eui --realm henb.vendor-a.example --out-key dev$c.key --out-cert dev$c.pem >/dev/null
  $X2SEC pki keygen --out new$c.key >/dev/null
done

start_inst() {  # name port metrics-port
  $X2SEC ca serve --ca-dir op --vendor-root va/root.crt --store "$STORE" --port $2 --threads 4 \
    --metrics-listen 127.0.0.1:$3 --session-timeout-s $TIMEOUT_S --crl-url http://127.0.0.1:$PH/crl --log-level warn > inst-$1.log 2>&1 &
  local pid=$!; PIDS+=($pid); eval "PID_$1=$pid"
  wait_port $2 || { echo "instance $1 did not start"; exit 1; }
}
start_haproxy() {  # servers...
  { cat <<EOF
global
  maxconn 512
defaults
  mode $LB
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  retries 2
  option redispatch
$([ "$LB" = http ] && printf '  option http-server-close\n  http-reuse never\n  timeout http-request 10s')
frontend cmp
  bind 127.0.0.1:$PH
  default_backend ras
backend ras
  balance roundrobin
EOF
    for s in "$@"; do echo "  server $s 127.0.0.1:$(eval echo \$P_$s) check inter 250ms fall 1 rise 2"; done; } > haproxy.cfg
  haproxy -f haproxy.cfg -db > haproxy.log 2>&1 &
  HAPROXY=$!; PIDS+=($HAPROXY)
  wait_port $PH || { echo "haproxy did not start"; exit 1; }
}
P_a=$P1; P_b=$P2
URL=127.0.0.1:$PH/.well-known/cmp

# One enrolment of client c (odd: openssl cmp, even: x2sec enroll), attempt k.  Both keep the
# transaction (ir + certConf) on one persistent connection: HAProxy in mode tcp keeps it on one
# instance, in mode http (http-server-close) it balances each request, so the certConf goes to
# the next instance, which resumes the transaction from the store.
enrol() {  # c j k -> 0 and out/<c>-<j>.crt, or 1 and out/<c>-<j>-<k>.log
  local c=$1 j=$2 k=$3 id; id=$(printf '0023a1b2%04x' $c).henb.vendor-a.example
  if [ $((c % 2)) = 1 ]; then
    openssl cmp -cmd ir -server $URL -cert dev$c.pem -key dev$c.key -trusted op/root.crt -keep_alive 1 \
      -msg_timeout 10 -total_timeout 20 -newkey new$c.key -subject "/CN=$id" -sans $id \
      -certout out/$c-$j.crt > out/$c-$j-$k.log 2>&1
  else
    $X2SEC enroll --server http://$URL --vendor-key dev$c.key --vendor-cert dev$c.pem --operator-root op/root.crt \
      --new-key new$c.key --dir out/x$c-$j --keep-alive --timeout 10 > out/$c-$j-$k.log 2>&1 &&
      cp out/x$c-$j/operator.crt out/$c-$j.crt
  fi
}
# What a client may see when its instance dies or is marked down: a transport error, or a CMP
# error naming its PKIFailureInfo.  Anything else is not a clear error.
CLEAR='onnection refused|onnection reset|reset by peer|error reading|end of file|EOF|timed out|timeout|failed to (connect|receive|send|read)|transfer|connect|PKIFailureInfo|failInfo|systemUnavail|systemFailure|badRequest|no open transaction|server response error|HTTP'
client() {  # c: PER enrolments, up to 3 attempts each
  local c=$1 j k
  for j in $(seq 1 $PER); do
    for k in 1 2 3; do
      if enrol $c $j $k; then echo "$c $j ok $k" >> results.txt; break; fi
      echo out/$c-$j-$k.log >> failed.txt
      if grep -Eq "$CLEAR" out/$c-$j-$k.log; then echo "$c $j retry $k" >> results.txt
      else echo "$c $j unclear $k" >> results.txt; fi
      sleep 0.3
    done
  done
}

# x2sec_cmp_sessions_total{event="resumed"} of the instance whose metrics listen on port $1
resumed() {
  curl -sf http://127.0.0.1:$1/metrics | awk '/^x2sec_cmp_sessions_total\{.*event="resumed"/ { n += $NF } END { print n + 0 }'
}

if [ "$MODE" = bench ]; then
  bench() {  # label servers...
    local label=$1; shift
    [ -n "${HAPROXY:-}" ] && { kill $HAPROXY; wait $HAPROXY 2>/dev/null || true; }
    start_haproxy "$@"
    rm -f results.txt; PER=${BENCH_PER:-6}
    local t0 t1; t0=$(date +%s%N)
    for c in $(seq 1 $NCLI); do client $c & done; wait $(jobs -p | grep -v -e "$HAPROXY" -e "$PID_a" -e "$PID_b") 2>/dev/null || true
    t1=$(date +%s%N)
    local ok; ok=$(grep -c ' ok ' results.txt || true)
    awk -v ok=$ok -v ns=$((t1 - t0)) -v l="$label" -v n=$NCLI \
      'BEGIN { printf "%-32s clients %2d  enrolments %4d  %.1f s  %.1f enrol/s\n", l, n, ok, ns/1e9, ok/(ns/1e9) }'
  }
  start_inst a $P1 $M1; start_inst b $P2 $M2
  echo "HAProxy mode $LB; load: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
  bench "HAProxy ($LB) -> 1 instance" a
  bench "HAProxy ($LB) -> 2 instances" a b
  echo "resumed on the other instance: a $(resumed $M1), b $(resumed $M2); load now: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "(clients are openssl cmp / x2sec enroll processes on the same cores: the figures include their start-up)"
  exit 0
fi

start_inst a $P1 $M1; start_inst b $P2 $M2; start_haproxy a b

# ---- 1. CRL numbers across the instances while revocations happen
for c in 1 2 3; do enrol $c 0 1 || fail "warm-up enrolment $c"; done
last=0; mono=1; n=0
for c in 1 2 3; do
  openssl cmp -cmd rr -server $URL -cert out/$c-0.crt -key new$c.key -untrusted op/ca.crt -trusted op/root.crt \
    -oldcert out/$c-0.crt -revreason 4 > rr$c.log 2>&1 || fail "rr $c"
  S=$(openssl x509 -in out/$c-0.crt -noout -serial | cut -d= -f2)
  for port in $P1 $P2 $PH $P2 $P1; do
    curl -sf http://127.0.0.1:$port/crl -o crl.der || { fail "CRL from :$port"; continue; }
    num=$(( $(openssl crl -inform DER -in crl.der -noout -crlnumber | sed 's/.*=//') )); n=$((n + 1))
    [ $num -ge $last ] || mono=0; last=$num
    grep -qi "$S" <(openssl crl -inform DER -in crl.der -noout -text | tr -d ':') || fail "CRL from :$port lacks revoked $S"
  done
done
check "CRL numbers never went down over $n fetches from both instances and the balancer (last $last)" test $mono = 1
check "one CRL number per revocation (3 revocations: $last)" test "$last" -le 4
warm_resumed=$(( $(resumed $M1) + $(resumed $M2) ))
echo "  HAProxy mode $LB: $warm_resumed of the 3 warm-up transactions resumed on the other instance"

# ---- 2. N concurrent clients; instance a killed with SIGKILL in the middle
rm -f results.txt failed.txt
for c in $(seq 1 $NCLI); do client $c & done
sleep ${KILL_AFTER:-2}
kill -9 $PID_a && pass "instance a killed with SIGKILL while $NCLI clients enrol"
wait $(jobs -p | grep -v -e "$HAPROXY" -e "$PID_b") 2>/dev/null || true
total=$((NCLI * PER))
okc=$(grep -c ' ok ' results.txt || true); retries=$(grep -c ' retry ' results.txt || true)
unclear=$(grep -c ' unclear ' results.txt || true)
echo "  enrolments: $okc of $total succeeded, $retries attempts failed with a clear error and were retried, $unclear unclear"
check "every enrolment succeeded (with retries)" test "$okc" = "$total"
check "every failed attempt had a clear error" test "$unclear" = 0
[ "$unclear" = 0 ] || grep -l . out/*-*-*.log | head -3 | xargs -r tail -n 3
grep -v ' ok 1$' results.txt | sed 's/^/  result: /' || true
[ -s failed.txt ] && for f in $(cat failed.txt); do grep -h -E "$CLEAR" $f | tail -n 1 | cut -c1-160; done | sort | uniq -c | sed 's/^/  failure: /' || true

resumed_b=$(resumed $M2)
if [ "$LB" = http ]; then
  check "transactions were resumed on the instance that did not answer their ir (warm-up $warm_resumed, b $resumed_b)" \
    test $((warm_resumed + resumed_b)) -gt 0
else
  echo "  resumed (mode tcp, expected 0): warm-up $warm_resumed, b $resumed_b"
fi

# ---- 3. the store after the kill
sleep $((TIMEOUT_S + 1))
enrol 1 99 1 || fail "enrolment after the session timeout"   # the survivor's next ir sweeps
sleep 0.5
serials=$(for f in out/*-*.crt; do openssl x509 -in $f -noout -serial | cut -d= -f2; done | tr A-F a-f)
check "no duplicate serial among $(wc -l <<<"$serials") certificates held by clients" test -z "$(sort <<<"$serials" | uniq -d)"
check "no duplicate serial in the store" test "$(psqlq 'SELECT COUNT(*) - COUNT(DISTINCT serial) FROM certificates')" = 0
missing=0; unconfirmed=0
for f in out/*-*.crt; do
  sn=$(openssl x509 -in $f -noout -serial | cut -d= -f2 | tr A-F a-f)
  st=$(psqlq "SELECT t.status || ' ' || c.revoked FROM certificates c JOIN transactions t ON t.tid = c.tid WHERE encode(c.serial, 'hex') = '$sn'")
  if [ -z "$st" ]; then missing=$((missing + 1)); echo "  $f ($sn): no store record"; continue; fi
  case $f in out/[123]-0.crt) continue ;; esac  # revoked by rr in step 1
  [ "$st" = "confirmed 0" ] || { unconfirmed=$((unconfirmed + 1)); echo "  $f ($sn): $st"; }
done
check "every certificate a client holds has its store record" test $missing = 0
check "no lost confirmation: every held certificate is confirmed and not revoked (except the 3 revoked by rr)" test $unconfirmed = 0
check "nothing left unconfirmed after the session timeout" test "$(psqlq "SELECT COUNT(*) FROM transactions WHERE status = 'unconfirmed'")" = 0
orphans=$(psqlq "SELECT COUNT(*) FROM transactions WHERE status = 'unconfirmed-timeout'")
check "orphans of the killed instance ($orphans) are revoked" \
  test "$(psqlq "SELECT COUNT(*) FROM certificates c JOIN transactions t ON t.tid = c.tid WHERE t.status = 'unconfirmed-timeout' AND c.revoked = 0")" = 0
echo "  store: $(psqlq 'SELECT COUNT(*) FROM certificates') certificates, $(psqlq "SELECT COUNT(*) FROM transactions WHERE status='confirmed'") confirmed, $orphans unconfirmed-timeout, $(psqlq 'SELECT COUNT(*) FROM certificates WHERE revoked = 1') revoked"

# ---- 4. the killed instance restarts and serves the same (newest) CRL
start_inst a $P1 $M1
curl -sf http://127.0.0.1:$P1/crl -o crl-a.der && curl -sf http://127.0.0.1:$P2/crl -o crl-b.der || fail "CRL after restart"
na=$(( $(openssl crl -inform DER -in crl-a.der -noout -crlnumber | sed 's/.*=//') ))
nb=$(( $(openssl crl -inform DER -in crl-b.der -noout -crlnumber | sed 's/.*=//') ))
check "restarted instance serves the same CRL as the survivor (number $na >= $last)" \
  bash -c "[ $na = $nb ] && [ $na -ge $last ]"
check "the CRL lists the swept orphans too" \
  test "$(openssl crl -inform DER -in crl-a.der -noout -text | grep -c 'Serial Number')" = "$(psqlq 'SELECT COUNT(*) FROM certificates WHERE revoked = 1')"
echo "failures: $FAILS"
exit $((FAILS > 0))
