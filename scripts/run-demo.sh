#!/usr/bin/env bash
# README command 1: install dependencies, build, run the demo (the main job).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh
exec ./build/apps/x2sec demo "$@"
