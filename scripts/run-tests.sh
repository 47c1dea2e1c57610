#!/usr/bin/env bash
# README command 2: install dependencies, build, run every test (unit, exchange, fuzz corpora,
# interop with strongSwan and openssl cmp, namespace tests; those that need root skip with a
# message when not root).
#
# Then the IKE engine, exchange, adversarial-peer, runtime and IKE fuzz-corpus tests run again
# under ASan+UBSan (scripts/sanitize-tests.sh, build-asan/); X2SEC_NO_SANITIZE=1 leaves that out.
#
# scripts/lint.sh runs after the build: clang-format over the whole tree (any difference fails the
# run) and clang-tidy on the C++ files changed since the last landing (.ci/lint-base); X2SEC_NO_LINT=1 leaves it out.
#
# With X2SEC_FORBID_SKIPS=1 (CI sets it) a skipped test fails the run unless it is listed, with
# its reason, in tests/allowed-skips.txt: in CI every root, namespace and interop test must run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh
lint_rc=0
if [ "${X2SEC_NO_LINT:-0}" != 1 ]; then
  bash scripts/lint.sh || lint_rc=1
fi
cd build
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
ctest --output-on-failure --timeout 600 -j"$(nproc)" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
if [ "${X2SEC_FORBID_SKIPS:-0}" = 1 ]; then
  # ctest lists skipped tests as "  N - Name (Skipped)" under "The following tests did not run:".
  allowed=$(grep -v '^[[:space:]]*\(#\|$\)' ../tests/allowed-skips.txt | awk '{print $1}')
  bad=()
  while read -r name; do
    grep -qxF "$name" <<<"$allowed" || bad+=("$name")
  done < <(sed -n 's/^[[:space:]]*[0-9]\+ - \(.*\) (Skipped)$/\1/p' "$log")
  if [ ${#bad[@]} -gt 0 ]; then
    echo "run-tests: ${#bad[@]} test(s) skipped that must run here (X2SEC_FORBID_SKIPS=1): ${bad[*]}" >&2
    [ "$rc" -ne 0 ] || rc=1
  fi
fi
if [ "$lint_rc" -ne 0 ]; then
  echo "run-tests: scripts/lint.sh found formatting or clang-tidy findings (see above)" >&2
  rc=1
fi
if [ "${X2SEC_NO_SANITIZE:-0}" != 1 ]; then
  cd ..
  echo "run-tests: the engine, exchange, adversarial and runtime tests again under ASan+UBSan"
  bash scripts/sanitize-tests.sh || rc=1
fi
exit "$rc"
