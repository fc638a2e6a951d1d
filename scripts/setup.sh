#!/usr/bin/env bash
# Installs what handgrad needs to build, test and plot on Debian/Ubuntu (as root, or via sudo).
# Does nothing when everything is already there, so it is cheap to run before every build.
# One line per step on the terminal; apt's own output goes to build/setup.log, whose tail is
# shown only when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
LOG="$(pwd)/build/setup.log"
: > "$LOG"
# step WHAT CMD...: runs CMD into the log, says how long it took, or shows the log's tail.
step() {
  local what=$1 t0 rc=0
  shift
  t0=$(date +%s)
  printf '[setup] %s ... ' "$what"
  "$@" >> "$LOG" 2>&1 || rc=$?
  if [ $rc = 0 ]; then
    echo "done ($(( $(date +%s) - t0 )) s)"
  else
    echo "failed (exit $rc); the end of $LOG:"
    tail -n 20 "$LOG" | sed 's/^/    /'
  fi
  return $rc
}

REQUIRED=(build-essential cmake ninja-build git pkg-config patch
          libgtest-dev libbenchmark-dev libcli11-dev nlohmann-json3-dev zlib1g-dev
          libopenblas-openmp-dev python3 python3-numpy python3-matplotlib
          python3-dev pybind11-dev libdlpack-dev python3-pytest python3-venv)
# The PyTorch oracle, the real FashionMNIST and oneDNN (the fast CPU convolutions): installed
# where the distribution has them (Debian 12 does); elsewhere the tests that need the first two
# skip with a message, and the build falls back to im2col convolutions (saying so).
OPTIONAL=(python3-torch python3-torchvision dataset-fashion-mnist libdnnl-dev)

missing() { for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done; }
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need=$(missing "${REQUIRED[@]}")
want=$(missing "${OPTIONAL[@]}")
if [ -n "$need$want" ]; then
  step "updating the package lists" $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  [ -z "$need" ] || step "installing $(echo $need | wc -w) packages: $(echo $need)" \
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need
  for p in $want; do
    step "installing $p (optional)" $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends "$p" \
      || echo "[setup] note: optional package $p is not available here; the tests that need it will skip"
  done
fi

# CMake >= 3.24 (Ubuntu 22.04 ships 3.22): take a newer one from PyPI if the distribution's is old.
ver=$(cmake --version | head -1 | awk '{print $3}')
if [ "$(printf '%s\n3.24\n' "$ver" | sort -V | head -1)" != "3.24" ]; then
  step "cmake $ver is older than 3.24: installing a newer one with pip" \
    $SUDO python3 -m pip install -q --upgrade 'cmake>=3.24'
fi

if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "[setup] CUDA toolkit found: the CUDA backend will be built"
else
  echo "[setup] no CUDA toolkit (nvcc): handgrad builds its CPU backend only"
fi
