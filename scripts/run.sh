#!/usr/bin/env bash
# README command 1: install, build, and run the whole homework (`handgrad report`), writing
# results/. Arguments go to `handgrad report` (e.g. --quick, --only q1, --device cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
exec build/handgrad report "$@"
