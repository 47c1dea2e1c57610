#!/bin/bash
# Control commands with --config (socket from [runtime] control_socket) as well as --control,
# the errors without either; the IKE algorithm names in list-sas and the log without empty
# fields ("AES_GCM_16_128//PRF_HMAC_SHA2_256" was printed for AEAD ciphers).
source "$(dirname "$0")/common.sh"
BASE=$(free_port 3)

# 1. Neither --control nor --config: a clear error, no default socket tried.
out=$("$X2SEC" ike list-sas 2>&1) && fail "list-sas without --control/--config succeeded" || true
check "without --control/--config: error names both options" grep -q "give --control SOCKET or --config FILE" <<<"$out"
ike_pair "$BASE"
grep -v '^control_socket' a.toml > nosock.toml
out=$("$X2SEC" ike counters --config nosock.toml 2>&1) && fail "counters with a config without control_socket succeeded" || true
check "config without control_socket: error says so" grep -q "no \[runtime\] control_socket" <<<"$out"
out=$("$X2SEC" ike list-sas --config nosock.toml --control x.sock 2>&1) && fail "--config with --control accepted" || true
check "--config and --control together are refused" grep -qi "excludes" <<<"$out"
printf '[runtime\n' > broken.toml
out=$("$X2SEC" ike list-sas --config broken.toml 2>&1) && fail "list-sas with a broken config succeeded" || true
check "broken config: the parse error names the file" grep -q "broken.toml:" <<<"$out"

# 2. A loopback pair; every control command through --config.
start_ike b || fail "B did not start"
start_ike a || fail "A did not start"
check "A and B establish (list-sas --config)" wait_established a
check "B lists the SA with --config" wait_established b
text=$("$X2SEC" ike list-sas --config a.toml)
echo "$text"
check "list-sas --config and --control print the same" test "$text" = "$("$X2SEC" ike list-sas --control "$D/a.sock")"
check "list-sas: IKE algorithms joined without an empty field" grep -qx "  AES_GCM_16_128/PRF_HMAC_SHA2_256/ECP_256" <<<"$text"
check "list-sas: no '//' anywhere" bash -c "! grep -q '//' <<<\"\$1\"" _ "$text"
check "list-sas: Child SA line" grep -qE "^  x2: #[0-9]+, reqid [0-9]+, INSTALLED, TUNNEL, ESP:AES_GCM_16_128$" <<<"$text"
check "counters --config" bash -c "\"$X2SEC\" ike counters --config a.toml | grep -q '\"ike.event.IKE_SA_UP\": 1'"
check "rekey --config (Child SA)" "$X2SEC" ike rekey --config a.toml --peer peer-b --child x2 --timeout 20
check "terminate --config" "$X2SEC" ike terminate --config a.toml --peer peer-b --timeout 20
check "initiate --config" "$X2SEC" ike initiate --config a.toml --peer peer-b --timeout 20

# 3. The log lines: the IKE_SA_INIT summary without an empty integrity field, no '//' in any
#    line naming algorithms.
check "initiator log: IKE_SA_INIT done: AES_GCM_16_128/PRF_HMAC_SHA2_256/ECP_256" \
  grep -q "IKE_SA_INIT done: AES_GCM_16_128/PRF_HMAC_SHA2_256/ECP_256$" a-ike.log
check "responder log: IKE_SA_INIT ... accepted: AES_GCM_16_128/PRF_HMAC_SHA2_256/ECP_256" \
  grep -q "accepted: AES_GCM_16_128/PRF_HMAC_SHA2_256/ECP_256$" b-ike.log
check "no '//' in the logs" bash -c "! grep -h '//' a-ike.log b-ike.log a-run.log b-run.log"
check "events log no meaningless 'code 0'" bash -c "! grep -h 'event [A-Z_]* code 0' a-ike.log b-ike.log"
check "the Child SA install line names the peer" grep -qE "IKE SA #[0-9]+ \(peer-b\): Child SA x2 installed, SPIs [0-9a-f]{8}_i [0-9a-f]{8}_o, AES_GCM_16_128$" a-ike.log
check "no '{}' left unformatted in the logs" bash -c "! grep -h '{}' a-ike.log b-ike.log"
finish
