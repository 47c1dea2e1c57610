#!/bin/bash
# SIGHUP on `ca serve`: a changed profile (identity policy), client_auth on the HTTPS listener and
# the HTTP limits are applied to new requests / handshakes, while a keep-alive connection opened
# before the reload keeps being served; a broken or unusable file changes nothing (named error,
# cmp.reload.failed); a setting that needs a restart is left as running with a warning.
source "$(dirname "$0")/common.sh"
command -v openssl >/dev/null || { echo "SKIP: openssl not installed"; exit 77; }
HTTP=$(free_port 11); HTTPS=$(free_port 12)
ID=0023a1b2c3d4.henb.vendor-a.example
$X2SEC pki init-vendor-ca --dir va --name "Vendor A" >/dev/null
$X2SEC pki init-operator-ca --dir op --name Operator --ra-dns localhost >/dev/null
$X2SEC pki issue-device --ca-dir va --eui 0023a1b2c3d4 --realm henb.vendor-a.example --out-key dev.key --out-cert dev.pem >/dev/null
for k in k1 k2 k3 k4 k5 k6; do $X2SEC pki keygen --out $k.key >/dev/null; done
ca_conf() {  # ca_conf ODU_RANGE CLIENT_AUTH MAX_BODY
  cat > ca.toml.new <<TOML
[ca]
dir = "op"
vendor_roots = ["va/root.crt"]
store = "sqlite:$D/ca.db"
[http]
port = $HTTP
keep_alive_idle_ms = 60000
max_body = $3
[https]
port = $HTTPS
client_auth = "$2"
client_ca = "va/root.crt"
[profiles.odu]
ip = ["$1"]
TOML
  mv ca.toml.new ca.toml
}
ca_conf 192.0.2.0/24 none 65536
$X2SEC ca serve --config ca.toml --log-level info > ca.log 2>&1 &
CA=$!
PIDS+=($CA)
wait_port $HTTPS || { fail "ca serve did not start"; finish; }
ir() {  # ir KEY SAN_IP [TLS options...]: over HTTP unless TLS options are given
  local key=$1 ip=$2; shift 2
  local srv=127.0.0.1:$HTTP/.well-known/cmp/p/odu tls=()
  [ $# -gt 0 ] && { srv=127.0.0.1:$HTTPS/.well-known/cmp/p/odu; tls=(-tls_used -tls_trusted op/root.crt -tls_host localhost); }
  openssl cmp -cmd ir -server $srv "${tls[@]}" "$@" -cert dev.pem -key dev.key -trusted op/root.crt -newkey $key \
    -subject "/CN=$ID" -sans "$ID $ip" -certout $key.crt > $key.log 2>&1
}
head_crl() {  # one HEAD /crl on the kept-open connection (fd 3): prints the status code
  printf 'HEAD /crl HTTP/1.1\r\nHost: ca\r\n\r\n' >&3
  local line code=""
  while IFS= read -r -t 5 line <&3; do
    line=${line%$'\r'}
    [ -z "$code" ] && code=$(awk '{print $2}' <<<"$line")
    [ -z "$line" ] && break
  done
  echo "$code"
}
wait_log() { for _ in $(seq 100); do [ "$(grep -c "$1" ca.log)" -ge "$2" ] && return 0; sleep 0.05; done; return 1; }

exec 3<>/dev/tcp/127.0.0.1/$HTTP
check "keep-alive connection opened before the reload: HEAD /crl 200" test "$(head_crl)" = 200
ir k1.key 198.51.100.7 && fail "odu: 198.51.100.7 issued before the reload" || \
  check "odu: 198.51.100.7 outside the profile's range before the reload" grep -q "notAuthorized" k1.key.log
ir k2.key 192.0.2.7 -tls_cert dev.pem -tls_key dev.key && pass "HTTPS before the reload (client_auth none): enrolled" || fail "HTTPS enrolment before the reload"

# 1. the profile's range and client_auth changed
ca_conf 198.51.100.0/24 require 65536
kill -HUP $CA
check "reload applied (logged)" wait_log "SIGHUP: configuration reloaded" 1
check "ca serve still running" kill -0 $CA
ir k3.key 198.51.100.7 && pass "odu: 198.51.100.7 issued under the reloaded profile" || fail "odu after the reload"
check "the certificate carries 198.51.100.7" grep -q "IP Address:198.51.100.7" <<<"$(openssl x509 -in k3.key.crt -noout -ext subjectAltName)"
check "the keep-alive connection from before the reload still served" test "$(head_crl)" = 200
ir k4.key 198.51.100.8 -tls_cert dev.pem -tls_key dev.key && pass "HTTPS with a client certificate after the reload" || fail "HTTPS with client certificate after reload"

openssl cmp -cmd ir -server 127.0.0.1:$HTTPS/.well-known/cmp/p/odu -tls_used -tls_trusted op/root.crt -tls_host localhost \
  -cert dev.pem -key dev.key -trusted op/root.crt -newkey k6.key -subject "/CN=$ID" -sans "$ID 198.51.100.10" \
  -certout k6.crt > notls.log 2>&1 && fail "HTTPS without a client certificate accepted after client_auth = require" || \
  check "new handshakes without a client certificate refused (named)" wait_log "no client certificate (client_auth = require)" 1

# 2. broken and unusable files: nothing changes
printf '[profiles.odu\n' > ca.toml
kill -HUP $CA
check "broken TOML: not reloaded, the error names the file" wait_log "configuration not reloaded.*ca.toml" 1
ca_conf 198.51.100.0/33 require 65536
kill -HUP $CA
check "bad CIDR: not reloaded" wait_log "configuration not reloaded.*prefix length over 32" 1
ca_conf 192.0.2.0/24 require 65536
sed -i 's|client_ca = "va/root.crt"|client_ca = "missing.pem"|' ca.toml
kill -HUP $CA
check "missing client_ca file: not reloaded (the profile change in the same file neither)" wait_log "configuration not reloaded.*missing.pem" 1
ir k1.key 198.51.100.11 && pass "the running profile kept: 198.51.100.11 issued" || fail "old configuration not kept"

# 3. HTTP limits: max_body lowered -> a larger request is refused with 413
ca_conf 198.51.100.0/24 require 512
sed -i "s|^port = $HTTP|port = $HTTP\nthreads = 8|" ca.toml  # default value: no restart warning
kill -HUP $CA
check "second reload applied" wait_log "SIGHUP: configuration reloaded" 2
code=$(head -c 1000 /dev/zero | curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/pkixcmp' --data-binary @- \
  http://127.0.0.1:$HTTP/.well-known/cmp)
check "max_body 512 after the reload: 1000 octets refused with 413" test "$code" = 413
check "the keep-alive connection survived both reloads" test "$(head_crl)" = 200
exec 3>&-
sed -i "s|^port = $HTTP|port = $((HTTP + 1))|" ca.toml
kill -HUP $CA
check "changed port: warned, left as running" wait_log "\[http\] bind/port/threads changed: needs a restart" 1
check "still on the old port" wait_port $HTTP

kill -TERM $CA; wait $CA || true; PIDS=()
check "counted: cmp.reload.ok = 3" grep -q "cmp.reload.ok = 3" ca.log
check "counted: cmp.reload.failed = 3" grep -q "cmp.reload.failed = 3" ca.log
finish
