#!/usr/bin/env python3
"""ctest cli.cgroup_budget: the memory budget in a real memory cgroup (issue 30, finding 12).

Where the machine lets this process make one (root, a writable cgroup v1 memory controller, or
cgroup v2 with the memory controller delegated), it makes a 1 GiB memory cgroup *below the
process's own* (a nested path, as containers have), starts `handgrad einsum` inside it with a
16 GiB output, and requires a clean refusal that names the cgroup (exit 2), not the OOM killer's
SIGKILL; a small einsum in the same cgroup must still run. Exits 77 (skipped) where no cgroup can
be made.

    cli_cgroup_budget.py HANDGRAD_BINARY
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

LIMIT = 1 << 30


def own_cgroup():
    """(mount, path, v1?) of this process's memory cgroup, or None."""
    with open("/proc/self/cgroup") as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f]
    for hid, controllers, path in lines:
        if "memory" in controllers.split(",") and os.path.isdir("/sys/fs/cgroup/memory"):
            return "/sys/fs/cgroup/memory", path, True
    for hid, controllers, path in lines:
        if hid == "0" and controllers == "":
            for mount in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                try:
                    with open(os.path.join(mount, "cgroup.controllers")) as f:
                        if "memory" in f.read().split():
                            return mount, path, False
                except OSError:
                    pass
    return None


def make_cgroup():
    found = own_cgroup()
    if not found:
        return None, "no memory cgroup controller"
    mount, path, v1 = found
    parent = os.path.join(mount, path.lstrip("/"))
    if not os.path.isdir(parent):
        parent = mount  # a cgroup namespace: our path is relative to a root the mount does not show
    group = os.path.join(parent, f"hg-budget-{os.getpid()}")
    try:
        os.mkdir(group)
        with open(os.path.join(group, "memory.limit_in_bytes" if v1 else "memory.max"), "w") as f:
            f.write(str(LIMIT))
    except OSError as e:
        try:
            os.rmdir(group)
        except OSError:
            pass
        return None, f"cannot make a memory cgroup under {parent}: {e.strerror}"
    return group, ""


def run_in(group, cmd, env):
    def enter():
        with open(os.path.join(group, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    return subprocess.run(cmd, env=env, preexec_fn=enter, capture_output=True, text=True, timeout=120)


def main():
    hg = os.path.abspath(sys.argv[1])
    group, why = make_cgroup()
    if not group:
        print(f"SKIP: {why}")
        return 77
    env = {k: v for k, v in os.environ.items() if k not in ("HANDGRAD_MAX_MEMORY", "HANDGRAD_CGROUP_FS",
                                                           "HANDGRAD_PROC_CGROUP")}
    failures = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            a, b, out = (os.path.join(tmp, n) for n in ("a.npy", "b.npy", "huge.npy"))
            np.save(a, np.zeros((65536, 0), np.float32))  # ab,bc->ac: a 65536 x 65536 output, 16 GiB
            np.save(b, np.zeros((0, 65536), np.float32))
            r = run_in(group, [hg, "einsum", "ab,bc->ac", a, b, "-o", out], env)
            print(f"16 GiB output in a {LIMIT >> 20} MiB cgroup ({group}): exit {r.returncode}: {r.stderr.strip()}")
            if r.returncode != 2 or "cgroup" not in r.stderr or "memory budget" not in r.stderr:
                failures.append("the 16 GiB output was not refused with the cgroup's budget named (exit 2)")
            if os.path.exists(out):
                failures.append("the refused einsum left an output")
            small_a, small_b = os.path.join(tmp, "sa.npy"), os.path.join(tmp, "sb.npy")
            np.save(small_a, np.ones((256, 0), np.float32))
            np.save(small_b, np.ones((0, 256), np.float32))
            r = run_in(group, [hg, "einsum", "ab,bc->ac", small_a, small_b, "-o", os.path.join(tmp, "s.npy")], env)
            print(f"a 256 KiB output in the same cgroup: exit {r.returncode}")
            if r.returncode != 0:
                failures.append(f"a small einsum failed in the cgroup: {r.stderr.strip()}")
    finally:
        os.rmdir(group)
    for f in failures:
        print("FAIL:", f)
    print("cgroup budget:", "FAILED" if failures else "ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
