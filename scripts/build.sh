#!/usr/bin/env bash
# Configures and builds x2sec into ./build (warnings are errors, as in CI).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DX2SEC_WERROR=ON >/dev/null
cmake --build build -j"$(nproc)"
