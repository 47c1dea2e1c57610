#!/bin/bash
# Debian's Prometheus scrapes every x2sec daemon of a loopback run: an `ike run` pair with an
# IKE SA, `esp` with a static SA (root: a TUN device), `ca serve` after an enrolment and a
# rejected one, `kds serve` after a key delivery.  Then series are queried through Prometheus's
# HTTP API (/api/v1/query) and their values asserted.  Loopback only; Prometheus gets a temp
# config and TSDB directory and listens on 127.0.0.1.
source "$(dirname "$0")/common.sh"
PROM=$(command -v prometheus || true)
if [ -z "$PROM" ]; then echo "SKIP: Debian's prometheus is not installed (scripts/deps.sh installs it)"; exit 77; fi
BASE=$(free_port 5)
M_A=$((BASE + 10)); M_B=$((BASE + 11)); M_CA=$((BASE + 12)); M_KDS=$((BASE + 13)); M_ESP=$((BASE + 14))
CA_PORT=$((BASE + 20)); KDS_PORT=$((BASE + 21)); ESP_PORT=$((BASE + 22)); PROM_PORT=$((BASE + 30))
for p in $M_A $M_B $M_CA $M_KDS $M_ESP $CA_PORT $KDS_PORT $ESP_PORT $PROM_PORT; do
  ss -ltnu | awk '{print $5}' | grep -q ":$p\$" && { echo "port $p in use"; exit 1; }
done
TARGETS=()

# --- IKE pair with /metrics on each side
ike_pair "$BASE" "$(printf '\n[metrics]\nlisten = "127.0.0.1:%s"' $M_A)" "$(printf '\n[metrics]\nlisten = "127.0.0.1:%s"' $M_B)"
start_ike b || fail "ike b did not start"
start_ike a || fail "ike a did not start"
check "IKE SA established" wait_established a
TARGETS+=("ike-a:$M_A" "ike-b:$M_B")

# --- RA/CA: one enrolment, one rejected (a device certificate from an untrusted vendor)
$X2SEC pki init-vendor-ca --dir va --name "Vendor A" >/dev/null
$X2SEC pki init-vendor-ca --dir rogue --name "Rogue" >/dev/null
$X2SEC pki init-operator-ca --dir op --name Operator >/dev/null
$X2SEC pki issue-device --ca-dir va --eui 0023a1000001 --realm henb.vendor-a.example --out-key dev.key --out-cert dev.pem >/dev/null
$X2SEC pki issue-device --ca-dir rogue --eui 0023a1000002 --realm henb.vendor-a.example --out-key rogue.key --out-cert rogue.pem >/dev/null
$X2SEC ca serve --ca-dir op --vendor-root va/root.crt --store sqlite:$D/ca.db --port $CA_PORT \
  --metrics-listen 127.0.0.1:$M_CA --log-level warn > ca.log 2>&1 &
PIDS+=($!)
wait_port $CA_PORT || fail "ca serve did not start"
check "enrolment accepted" $X2SEC enroll --server http://127.0.0.1:$CA_PORT/.well-known/cmp --vendor-key dev.key \
  --vendor-cert dev.pem --dir node1
$X2SEC enroll --server http://127.0.0.1:$CA_PORT/.well-known/cmp --vendor-key rogue.key --vendor-cert rogue.pem \
  --dir node2 > rogue.log 2>&1 && fail "rogue enrolment accepted" || pass "rogue enrolment rejected"
TARGETS+=("ca:$M_CA")

# --- KDS: two nodes, one relation, one key delivery
$X2SEC pki issue-server --ca-dir op --subject /CN=kds --dns kds.operator.example --out-key kds.key --out-cert kds.pem >/dev/null
for n in a b; do
  $X2SEC pki issue-server --ca-dir op --subject /CN=henb-$n --dns henb-$n.operator.example --out-key henb-$n.key --out-cert henb-$n.pem >/dev/null
done
cat > kds.toml <<TOML
[kds]
listen = "127.0.0.1"
port = $KDS_PORT
certificate = "kds.pem"
private_key = "kds.key"
client_anchors = ["op/root.crt"]
  [[kds.node]]
  name = "henb-a"
  identity = "henb-a.operator.example"
  [[kds.node]]
  name = "henb-b"
  identity = "henb-b.operator.example"
  [[kds.relation]]
  nodes = ["henb-a", "henb-b"]
[metrics]
listen = "127.0.0.1:$M_KDS"
TOML
$X2SEC kds serve --config kds.toml > kds.log 2>&1 &
PIDS+=($!)
wait_port $KDS_PORT || fail "kds serve did not start"
check "key delivered to henb-a" $X2SEC kds fetch-key --server 127.0.0.1:$KDS_PORT --server-name kds.operator.example \
  --cert henb-a.pem --key henb-a.key --trust op/root.crt --requester henb-a.operator.example --peer henb-b.operator.example
TARGETS+=("kds:$M_KDS")

# --- ESP data plane with one static SA (needs a TUN device: root)
ESP=0
if [ "$(id -u)" = 0 ] && [ -c /dev/net/tun ]; then
  K=00112233445566778899aabbccddeeff01020304
  $X2SEC esp --tun nops$(( $$ % 10000 )) --local 127.0.0.1 --remote 127.0.0.1 --port $ESP_PORT --remote-port $((ESP_PORT + 1)) \
    --spi-in 1001 --spi-out 2001 --key-in $K --key-out $K --local-ts 198.51.100.0/24 --remote-ts 203.0.113.0/24 \
    --no-offload --metrics-listen 127.0.0.1:$M_ESP > esp.log 2>&1 &
  PIDS+=($!)
  if wait_port $M_ESP; then
    ESP=1
    TARGETS+=("esp:$M_ESP")
    # An ESP packet for SPI 0x1001 with a wrong ICV: dropped, reason auth.
    printf '\x00\x00\x10\x01\x00\x00\x00\x01AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' > /dev/udp/127.0.0.1/$ESP_PORT
  else
    fail "x2sec esp did not serve /metrics"
  fi
else
  echo "NOTE: x2sec esp not scraped: it needs root and /dev/net/tun for its TUN device (uid $(id -u))"
fi

# --- Prometheus, scraping every second
{
  echo "global:"
  echo "  scrape_interval: 1s"
  echo "  evaluation_interval: 1s"
  echo "scrape_configs:"
  for t in "${TARGETS[@]}"; do
    echo "  - job_name: '${t%%:*}'"
    echo "    static_configs:"
    echo "      - targets: ['127.0.0.1:${t##*:}']"
  done
} > prometheus.yml
"$PROM" --config.file=prometheus.yml --storage.tsdb.path="$D/tsdb" --web.listen-address=127.0.0.1:$PROM_PORT \
  > prometheus.log 2>&1 &
PIDS+=($!)
wait_port $PROM_PORT || fail "prometheus did not start"
# value QUERY: the first result's value ("" if none)
value() { curl -sf --get "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$1" | jq -r '.data.result[0].value[1] // empty'; }
count() { curl -sf --get "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$1" | jq -r '.data.result | length'; }
n=${#TARGETS[@]}
for _ in $(seq 120); do [ "$(value 'sum(up)')" = "$n" ] && break; sleep 0.5; done
check "every target up ($n)" test "$(value 'sum(up)')" = "$n"
# Let each target be scraped a few times after the events above.
for _ in $(seq 60); do [ -n "$(value 'x2sec_kds_key_deliveries_total')" ] && break; sleep 0.5; done
sleep 2
expect() {  # expect WHAT QUERY VALUE
  local got; got=$(value "$2")
  if [ "$got" = "$3" ]; then pass "$1: $2 = $got"; else fail "$1: $2 = '$got', expected $3"; fi
}
expect_ge() {
  local got; got=$(value "$2")
  if [ -n "$got" ] && awk -v g="$got" -v m="$3" 'BEGIN{exit !(g >= m)}'; then pass "$1: $2 = $got"; else fail "$1: $2 = '$got', expected >= $3"; fi
}
expect "IKE SA established on A" 'x2sec_ike_sas{job="ike-a",state="ESTABLISHED"}' 1
expect "IKE SA established on B" 'x2sec_ike_sas{job="ike-b",state="ESTABLISHED"}' 1
expect "Child SA installed on B" 'x2sec_child_sas{job="ike-b",state="INSTALLED"}' 1
expect "one setup counted on A" 'x2sec_ike_events_total{job="ike-a",kind="IKE_SA_UP"}' 1
expect "setup latency histogram on A" 'x2sec_ike_setup_seconds_count{job="ike-a"}' 1
expect "setup latency +Inf bucket = count" 'x2sec_ike_setup_seconds_bucket{job="ike-a",le="+Inf"}' 1
expect "per-SA info series" 'count(x2sec_ike_sa_info{peer="peer-b",state="ESTABLISHED"})' 1
expect "one certificate issued" 'x2sec_cmp_certificates_issued_total{job="ca"}' 1
expect_ge "a rejection by failInfo" 'sum(x2sec_cmp_rejections_by_failinfo_total{job="ca"})' 1
expect_ge "CMP request latency observed" 'x2sec_cmp_request_seconds_count{job="ca"}' 3
expect "one key delivered" 'x2sec_kds_key_deliveries_total{job="kds"}' 1
expect "KDS request latency observed" 'x2sec_kds_request_seconds_count{job="kds"}' 1
expect "build info of the KDS" 'x2sec_build_info{job="kds",daemon="kds"}' 1
check "the failInfo label is an RFC 4210 name" bash -c \
  "curl -sf --get http://127.0.0.1:$PROM_PORT/api/v1/query --data-urlencode 'query=x2sec_cmp_rejections_by_failinfo_total' | jq -r '.data.result[].metric.failinfo' | grep -qE '^(badAlg|badMessageCheck|badRequest|signerNotTrusted|notAuthorized|badPOP|wrongAuthority|badCertId)\$'"
if [ $ESP = 1 ]; then
  expect "ESP SA installed" 'x2sec_esp_sas{job="esp"}' 1
  expect "per-Child SA series of the static SA" 'x2sec_child_sa_in_packets_total{job="esp",spi_in="00001001"}' 0
  expect "forged ESP packet dropped (auth)" 'x2sec_esp_drops_total{job="esp",reason="auth"}' 1
fi
# The dashboard's queries are valid PromQL against this Prometheus (Grafana's interval variables
# replaced), and the SA, enrolment and KDS panels have data.
while IFS= read -r expr; do
  q=${expr//\$__rate_interval/1m}; q=${q//\$__range/5m}
  st=$(curl -sf --get "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$q" | jq -r .status)
  [ "$st" = success ] || fail "dashboard query rejected by Prometheus: $q"
done < <(jq -r '.panels[].targets[].expr' "$SRC/docs/grafana-x2sec.json")
pass "every dashboard query accepted by Prometheus"
for q in 'sum by (instance, state) (x2sec_ike_sas)' 'sum by (instance) (increase(x2sec_cmp_certificates_issued_total[5m]))'; do
  check "dashboard query has data: $q" test "$(count "$q")" -gt 0
done
# docs/metrics.md names every family the daemons export.
missing=()
checked=0
for t in "${TARGETS[@]}"; do
  for fam in $(curl -sf "http://127.0.0.1:${t##*:}/metrics" | sed -n 's/^# TYPE \([^ ]*\) .*/\1/p'); do
    checked=$((checked + 1))
    grep -q "\`$fam\`\|\`$fam{" "$SRC/docs/metrics.md" || missing+=("$fam (${t%%:*})")
  done
done
check "families found on the targets ($checked)" test "$checked" -gt 30
if [ ${#missing[@]} = 0 ]; then pass "docs/metrics.md lists every exported family"; else fail "not in docs/metrics.md: ${missing[*]}"; fi
# The exposition itself: the metrics listener answers with the 0.0.4 content type.
check "content type text/plain; version=0.0.4" bash -c \
  "curl -sf -D - -o /dev/null http://127.0.0.1:$M_A/metrics | grep -qi '^Content-Type: text/plain; version=0.0.4'"
finish
