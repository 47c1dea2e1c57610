#!/usr/bin/env bash
# Builds the IKE engine, exchange, adversarial-peer, runtime, CMP server, KDS and bounded stream
# server tests (the attack tests among them) and the IKE/CMP/KDS fuzz-corpus replays with
# AddressSanitizer + UndefinedBehaviorSanitizer (preset "asan": build-asan, Debug) and runs them
# with ctest.  Any sanitizer report fails the run (halt_on_error, UBSan non-recoverable).
#   scripts/sanitize-tests.sh [extra ctest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${JOBS:-$(nproc)}"
TARGETS=(test_ikev2 test_ikev2_keymat test_ikev2_exchange test_adversarial test_runtime
         fuzz_ikev2_decode_corpus fuzz_ikev2_responder_corpus
         fuzz_ikev2_keyed_responder_corpus fuzz_ikev2_keyed_initiator_corpus
         test_cmp test_kds test_kds_revocation test_net fuzz_cmp_server_corpus fuzz_kds_codec_corpus)
cmake --preset asan -DX2SEC_WERROR=ON >/dev/null
cmake --build build-asan -j"$JOBS" --target "${TARGETS[@]}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
# The exchange tests and the adversarial-peer suite (by label), then the unit tests of the
# engine and the runtime, the CMP server (test_cmp: enrolment, HTTP, errors, mutated requests),
# the KDS (codec, server, attacks, revocation), the stream server and the fuzz corpora (by name:
# the unit label spans every module).
status=0
ctest --test-dir build-asan --output-on-failure --timeout 600 -j"$JOBS" -L '^(exchange|adversarial)$' "$@" || status=1
ctest --test-dir build-asan --output-on-failure --timeout 600 -j"$JOBS" \
      -R '^(Auth|ChildProposal|Identity|IkeProposal|IkeRuntime|KeyLog|Keymat|Names|Natt|UdpSocket|Wire[A-Za-z]*)\.|^fuzz_corpus\.fuzz_(ikev2|cmp|kds)' \
      "$@" || status=1
ctest --test-dir build-asan --output-on-failure --timeout 600 -j"$JOBS" \
      -R '^(Fixture|CmpClient|HttpFixture|HttpLoad|ErrFixture|RrFixture|CredFixture|RenewalWindow|Kds[A-Za-z]*|StreamServer[A-Za-z]*)\.' \
      "$@" || status=1
exit $status
