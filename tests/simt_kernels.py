#!/usr/bin/env python3
"""ctest simt.kernels (SIMT builds): every handwritten CUDA kernel runs on the emulator against its
CPU twin, and none is left out.

Runs the CUDA gtests of handgrad_tests (Cuda*, CnnCuda*, MlpCuda*: those needing cuBLAS, cuDNN or
CUDA graphs skip, saying so) on the SIMT emulator in two processes (the MLP trainers' test, the longest,
beside all the others), with HANDGRAD_SIMT_LAUNCHES logging every launch. Then lists each
`__global__` kernel of kernels/**/*.cu with the launch shapes it ran, and fails if a gtest failed or
a kernel never ran.

    simt_kernels.py HANDGRAD_TESTS_BINARY SOURCE_DIR
"""
import collections
import os
import re
import subprocess
import sys
import tempfile
import time

SUITES = "Cuda*:CnnCuda*:MlpCuda*"
LONGEST = "MlpCuda.EveryImplementationMatchesTheCpu"


def kernels_in(source_dir):
    """{name: file} for every __global__ function under kernels/."""
    found = {}
    for root, _, files in os.walk(os.path.join(source_dir, "kernels")):
        for f in sorted(files):
            if not f.endswith(".cu"):
                continue
            path = os.path.join(root, f)
            text = open(path, encoding="utf-8").read()
            text = re.sub(r"//[^\n]*", "", text)
            text = re.sub(r"__launch_bounds__\((?:[^()]|\([^()]*\))*\)", "", text)
            for m in re.finditer(r"__global__\s+void\s+(\w+)\s*\(", text):
                found[m.group(1)] = os.path.relpath(path, source_dir)
    return found


def main():
    binary, source_dir = sys.argv[1], sys.argv[2]
    kernels = kernels_in(source_dir)
    if not kernels:
        print(f"no __global__ kernels found under {source_dir}/kernels", file=sys.stderr)
        return 2
    # The emulator tells a template kernel's __shared__ arrays from host statics by this name.
    misnamed = sorted(k for k in kernels if not k.endswith("_kernel"))
    if misnamed:
        print(f"[simt] FAIL: __global__ functions must be named *_kernel (kernels/simt/simt.cpp relies on it): {misnamed}")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "launches.tsv")
        env = dict(os.environ, HANDGRAD_SIMT_LAUNCHES=log)
        t0 = time.monotonic()
        runs = []
        for flt in (LONGEST, f"{SUITES}:-{LONGEST}"):
            out = open(os.path.join(tmp, f"run{len(runs)}.log"), "w+")
            runs.append((flt, out, subprocess.Popen([binary, f"--gtest_filter={flt}", "--gtest_brief=0"],
                                                    stdout=out, stderr=subprocess.STDOUT, env=env)))
        failed = False
        for flt, out, p in runs:
            rc = p.wait()
            out.seek(0)
            text = out.read()
            summary = [l for l in text.splitlines() if re.match(r"\[ +(OK|FAILED|SKIPPED) +\] \w+\.\w+ \(", l)]
            print(f"--- {flt} (exit {rc})")
            print("\n".join(summary))
            if rc != 0:
                failed = True
                print(text)
        print(f"[simt] gtests ran in {time.monotonic() - t0:.1f} s")
        shapes = collections.defaultdict(list)
        if os.path.exists(log):
            for line in open(log):
                name, shape, count = line.rstrip("\n").split("\t")
                shapes[re.sub(r"<.*", "", name)].append((name, shape, int(count)))

    print(f"[simt] {len(kernels)} kernels in kernels/**/*.cu, the launch shapes each ran (grid x block[ smem bytes]):")
    missing = []
    for name in sorted(kernels):
        runs_of = shapes.get(name, [])
        if not runs_of:
            missing.append(name)
            print(f"  {name} ({kernels[name]}): NEVER RAN")
            continue
        launches = sum(c for _, _, c in runs_of)
        print(f"  {name} ({kernels[name]}): {len(runs_of)} shapes, {launches} launches")
        for full, shape, count in sorted(runs_of):
            tmpl = full[len(name):]
            print(f"      {tmpl + ' ' if tmpl else ''}{shape}  x{count}")
    unknown = sorted(set(shapes) - set(kernels))
    if unknown:
        print(f"[simt] launched but not found in kernels/: {', '.join(unknown)}")
    if missing:
        print(f"[simt] FAIL: {len(missing)} of {len(kernels)} kernels never ran: {', '.join(missing)}")
    if failed:
        print("[simt] FAIL: a CUDA gtest failed on the emulator (its output is above)")
    if missing or failed:
        return 1
    print(f"[simt] all {len(kernels)} kernels ran on the emulator and matched their CPU twins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
