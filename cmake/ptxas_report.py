#!/usr/bin/env python3
"""What ptxas made of every CUDA kernel: registers, stack frame, spills, per architecture.

  ptxas_report.py compile DIR NVCC ARGS...   the build's CUDA compiler launcher (CMakeLists.txt):
      runs the compile with --resource-usage, keeps ptxas's lines out of the build log, writes
      them to DIR/<object>.tsv, and fails the compile on a finding for sm_90 (below)
  ptxas_report.py report DIR ARCH SOURCE.cu...   prints every kernel's row for ARCH of the objects
      of these sources (the build's CUDA sources: records of deleted ones are ignored) and fails
      on the same findings, or when a source has no record (ctest cuda.ptxas_report)

Findings: a spill in any kernel (local memory traffic in an inner loop), and any stack frame
in a kernel that takes the 64-dim parameter structs (kernels/einsum/strided.h): those must read
their parameters in place (`const __grid_constant__`), not from a per-thread copy.
"""
import os
import re
import shutil
import subprocess
import sys

CHECKED_ARCH = "90"
PARAM_STRUCTS = ("StridedView", "TransposePlan")
COLUMNS = ("arch", "kernel", "registers", "stack", "spill_stores", "spill_loads")

ENTRY = re.compile(r"ptxas info\s*: Compiling entry function '([^']+)' for 'sm_(\w+)'")
PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
REGS = re.compile(r"ptxas info\s*: Used (\d+) registers")
PTXAS_LINE = re.compile(r"^(ptxas info\s*:|\s+\d+ bytes stack frame)")


def demangle(names):
    if not names or not shutil.which("c++filt"):
        return list(names)
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout
    lines = out.splitlines()
    return lines if len(lines) == len(names) else list(names)


def parse(text):
    """Rows (arch, mangled kernel, registers, stack, spill stores, spill loads) of ptxas's output."""
    rows, current = [], None
    for line in text.splitlines():
        if m := ENTRY.search(line):
            current = {"kernel": m.group(1), "arch": m.group(2)}
        elif current and (m := PROPS.search(line)) and "stack" not in current:
            current["stack"], current["spill_stores"], current["spill_loads"] = map(int, m.groups())
        elif current and (m := REGS.search(line)):
            current["registers"] = int(m.group(1))
            rows.append(current)
            current = None
    return rows


def findings(rows, arch):
    out = []
    for r in rows:
        if r["arch"] != arch:
            continue
        if r["spill_stores"] or r["spill_loads"]:
            out.append(f"{r['kernel']}: spills ({r['spill_stores']} bytes stored, {r['spill_loads']} loaded)")
        if r["stack"] and any(p in r["kernel"] for p in PARAM_STRUCTS):
            out.append(f"{r['kernel']}: {r['stack']}-byte stack frame in a kernel that takes a 64-dim "
                       f"parameter struct (declare it `const __grid_constant__`)")
    return out


def compile_(out_dir, cmd):
    obj = cmd[cmd.index("-o") + 1] if "-o" in cmd else "unknown.o"
    p = subprocess.run(cmd + ["--resource-usage"], capture_output=True, text=True)
    sys.stdout.write(p.stdout)
    sys.stderr.write("".join(l + "\n" for l in p.stderr.splitlines() if not PTXAS_LINE.match(l)))
    if p.returncode != 0:
        return p.returncode
    rows = parse(p.stderr + p.stdout)
    for r, name in zip(rows, demangle([r["kernel"] for r in rows])):
        r["kernel"] = name
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, os.path.basename(obj) + ".tsv")
    with open(path + ".tmp", "w") as f:
        f.write("\t".join(COLUMNS) + "\n")
        for r in rows:
            f.write("\t".join(str(r[c]) for c in COLUMNS) + "\n")
    os.replace(path + ".tmp", path)
    bad = findings(rows, CHECKED_ARCH)
    for b in bad:
        print(f"ptxas report: sm_{CHECKED_ARCH}: {b}", file=sys.stderr)
    return 1 if bad else 0


def report(out_dir, arch, sources):
    rows = []
    for source in sorted(sources):
        path = os.path.join(out_dir, os.path.basename(source) + ".o.tsv")
        if not os.path.exists(path):
            print(f"ptxas report: no record for {source} under {out_dir} (not built through the launcher?)")
            return 1
        with open(path) as f:
            next(f, None)
            for line in f:
                vals = line.rstrip("\n").split("\t")
                r = dict(zip(COLUMNS, vals))
                for c in COLUMNS[2:]:
                    r[c] = int(r[c])
                r["object"] = os.path.basename(path)[: -len(".cu.o.tsv")]
                rows.append(r)
    rows = [r for r in rows if r["arch"] == arch]
    if not rows:
        print(f"ptxas report: no sm_{arch} kernels recorded under {out_dir} (is sm_{arch} among "
              f"CMAKE_CUDA_ARCHITECTURES, and the build done?)")
        return 1
    print(f"{'registers':>9} {'stack':>5} {'spills':>6}  kernel (sm_{arch})")
    for r in sorted(rows, key=lambda r: (r["object"], r["kernel"])):
        spills = r["spill_stores"] + r["spill_loads"]
        name = re.sub(r"\(anonymous namespace\)::|handgrad::", "", r["kernel"])
        print(f"{r['registers']:>9} {r['stack']:>5} {spills:>6}  {r['object']}: {name[:140]}")
    bad = findings(rows, arch)
    for b in bad:
        print("FINDING", b)
    print(f"ptxas report: {len(rows)} kernels for sm_{arch}, {len(bad)} finding(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "compile":
        sys.exit(compile_(sys.argv[2], sys.argv[3:]))
    if len(sys.argv) >= 5 and sys.argv[1] == "report":
        sys.exit(report(sys.argv[2], sys.argv[3], sys.argv[4:]))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
