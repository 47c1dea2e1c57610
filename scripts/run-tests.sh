#!/usr/bin/env bash
# README command 2: install dependencies, build, run every test (unit, exchange, fuzz corpora,
# interop with strongSwan and openssl cmp, namespace tests; those that need root skip with a
# message when not root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh
cd build
ctest --output-on-failure --timeout 600 -j"$(nproc)" "$@"
