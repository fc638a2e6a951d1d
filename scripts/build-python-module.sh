#!/usr/bin/env bash
# Builds handgrad's Python module on the machine that will import it, from what
# scripts/stage-gpu.sh staged: the core library compiled here (position-independent, CUDA
# included) and module.cpp's compile flags. Only module.cpp is compiled there, against that
# machine's Python and pybind11 (the GPU machine's Python is 3.12, this one's 3.11: a module
# cannot be built here for it). Needs a C++ compiler, Python's headers and pybind11 there.
#   scripts/build-python-module.sh [PYTHON]     -> stage/python/handgrad/ (put stage/python on PYTHONPATH)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${1:-python3}
S=stage/python
for f in "$S/libhandgrad_core.a" "$S/module.flags" "$S/link.libs"; do
  [ -f "$f" ] || { echo "build-python-module: $f is missing: run scripts/stage-gpu.sh first" >&2; exit 2; }
done
py_inc=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$py_inc/Python.h" ] || { echo "build-python-module: no Python.h for $PY (looked in $py_inc)" >&2; exit 2; }
# pybind11's headers: the pip package's, else the system's (Debian's pybind11-dev).
pb_inc=$("$PY" -c 'import pybind11; print(pybind11.get_include())' 2>/dev/null || true)
[ -n "$pb_inc" ] || pb_inc=/usr/include
[ -f "$pb_inc/pybind11/pybind11.h" ] || { echo "build-python-module: no pybind11 headers for $PY" >&2; exit 2; }
ext=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
CXX=${CXX:-c++}
# One argument per line, written with this repository's path as @ROOT@ (the machines' paths differ).
mapfile -t flags < <(sed "s|@ROOT@|$ROOT|g" "$S/module.flags")
mapfile -t libs < <(sed "s|@ROOT@|$ROOT|g" "$S/link.libs")
mkdir -p "$S/handgrad"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
t0=$SECONDS
pb_flags=()
[ "$pb_inc" = /usr/include ] || pb_flags=(-isystem "$pb_inc")  # (the compiler's own folder: never as -isystem)
"$CXX" "${flags[@]}" -I"$ROOT" -I"$ROOT/stage/include" -isystem "$py_inc" "${pb_flags[@]}" \
  -fPIC -fvisibility=hidden -c python/module.cpp -o "$tmp/module.o"
"$CXX" -shared -o "$tmp/_core$ext" "$tmp/module.o" "$S/libhandgrad_core.a" "${libs[@]}"
mv "$tmp/_core$ext" "$S/handgrad/_core$ext"
cp python/handgrad/__init__.py python/handgrad/__init__.pyi python/handgrad/py.typed "$S/handgrad/"
echo "[python-module] $S/handgrad/_core$ext for $("$PY" -c 'import sys; print(sys.version.split()[0])') in $((SECONDS - t0)) s"
