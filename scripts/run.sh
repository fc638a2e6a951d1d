#!/usr/bin/env bash
# README command 1: install, build, and run the whole homework (`handgrad report`), writing
# results/ in the current folder (the repository's root when run as ./scripts/run.sh). Arguments
# go to `handgrad report` (e.g. --quick, --only q1, --device cpu, --out-dir DIR) and, like any
# command's, relative paths among them are relative to the folder run.sh is started from.
set -euo pipefail
caller=$(pwd)
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
handgrad="$(cd "${HANDGRAD_BUILD_DIR:-build}" && pwd)/handgrad"
cd "$caller"
exec "$handgrad" report "$@"
