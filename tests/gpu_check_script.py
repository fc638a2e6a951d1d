#!/usr/bin/env python3
"""scripts/gpu-check.sh keeps its deadline: a step that hangs (--inject-hang: it ignores SIGTERM
and has a child) is killed with its children when the deadline comes, recorded as cut, every later
step is recorded as skipped for the deadline, and summary.md is written whole. Runs the script's
dry run (--allow-no-gpu) on this build's binaries.
  gpu_check_script.py PYTHON   (the python3 with torch, for the script's probes)"""
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEADLINE = 20  # the hang starts ~3 s in (probes); 20 leaves the steps before it 13 s on a loaded machine
HUNG = "GoogleTest, CUDA"


def leftovers():
    p = subprocess.run(["pgrep", "-f", "hg-injected-hang"], capture_output=True, text=True)
    return p.stdout.split()


failures = []
with tempfile.TemporaryDirectory() as out:
    env = dict(os.environ, OUT=out, HG_PYTHON=sys.argv[1])
    start = time.monotonic()
    p = subprocess.run([os.path.join(ROOT, "scripts", "gpu-check.sh"), "--allow-no-gpu", "--deadline", str(DEADLINE),
                        "--inject-hang", HUNG], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - start
    summary = open(os.path.join(out, "summary.md")).read() if os.path.exists(os.path.join(out, "summary.md")) else ""
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in summary.splitlines() if line.startswith("| ")}
    if took > DEADLINE + 2:
        failures.append(f"took {took:.1f} s with a {DEADLINE} s deadline")
    if p.returncode != 1:
        failures.append(f"exit status {p.returncode}, want 1 (a step was cut short)")
    if HUNG not in rows or rows[HUNG][2] != "cut: deadline" or "timed out" not in rows[HUNG][1]:
        failures.append(f"the hung step's row: {rows.get(HUNG)}")
    skipped = [name for name, r in rows.items() if r[2] == "skipped: deadline"]
    if len(skipped) < 5:
        failures.append(f"only {len(skipped)} later steps recorded as skipped for the deadline")
    if not summary.rstrip().splitlines() or not summary.rstrip().splitlines()[-1].startswith("INCOMPLETE in "):
        failures.append(f"summary.md does not end with the verdict: {summary[-300:]!r}")
    time.sleep(0.5)
    if leftovers():
        failures.append(f"the hung step's processes outlived it: {leftovers()}")
        subprocess.run(["pkill", "-KILL", "-f", "hg-injected-hang"])

for f in failures:
    print("FAIL", f)
print(p.stdout[-1500:])
print(f"gpu_check_script: {took:.1f} s, {len(failures)} failure(s)")
sys.exit(1 if failures else 0)
