#!/usr/bin/env python3
"""A CUDA build opens cuBLAS and cuDNN at their first call, not at start-up (kernels/cuda_libs.h).

- the binary does not name them (nor libcudart: the runtime is linked in) as needed libraries;
- `handgrad info` stays small (peak RSS under 50 MB: linked, cuBLAS alone costs 150 MB);
- where they cannot be found every CPU command still runs, `info` says what is missing, `--device
  auto` picks the CPU, and `--device cuda` ends with one line naming the library (exit 2);
- HANDGRAD_CUDA_LIBRARY_PATH is where they are looked for, and only there; one already loaded wins;
- the Python module does not load them for CPU work either.
Usage: cli_cuda_libs.py HANDGRAD [PYTHONPATH_OF_THE_MODULE]
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HANDGRAD = sys.argv[1]
MODULE_DIR = sys.argv[2] if len(sys.argv) > 2 else ""
failures = []


def check(ok, what, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {what}" + (f"\n       {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(what)


def run(args, env=None):
    """Runs handgrad; returns (exit code, stdout, stderr)."""
    p = subprocess.run([HANDGRAD] + args, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, **(env or {})))
    return p.returncode, p.stdout, p.stderr


def peak_rss_mb(args, env=None):
    """Runs handgrad with its output discarded; returns (exit code, its peak RSS in MB)."""
    pid = os.fork()
    if pid == 0:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.environ.update(env or {})
        os.execv(HANDGRAD, [HANDGRAD] + args)
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024.0


needed = subprocess.run(["readelf", "-d", HANDGRAD], capture_output=True, text=True).stdout
named = re.findall(r"\(NEEDED\).*\[(lib(?:cudart|cublas|cublasLt|cudnn)[^\]]*)\]", needed)
check(not named, "the binary does not need cudart, cuBLAS or cuDNN to start", f"needs {named}")

code, rss = peak_rss_mb(["info"])
check(code == 0 and rss < 50, f"handgrad info: exit {code}, peak RSS {rss:.1f} MB (< 50)")

code, out, err = run(["info"])
found = {m.group(1): m.group(2) for m in re.finditer(r"^(cuBLAS|cuDNN) [^:]*: (/\S+)", out, re.M)}
print("       " + "\n       ".join(l for l in out.splitlines() if l.startswith(("cuBLAS", "cuDNN", "CUDA"))))

with tempfile.TemporaryDirectory() as d:
    np.save(os.path.join(d, "a.npy"), np.arange(12, dtype=np.float32).reshape(3, 4))
    np.save(os.path.join(d, "b.npy"), np.ones((4, 2), np.float32))
    empty = os.path.join(d, "no-cuda-libs")
    os.mkdir(empty)
    none = {"HANDGRAD_CUDA_LIBRARY_PATH": empty}

    code, out, err = run(["info"], none)
    check(code == 0 and re.search(r"^cuBLAS: libcublas\.so\.\d+ is not in HANDGRAD_CUDA_LIBRARY_PATH", out, re.M)
          and re.search(r"^cuDNN: libcudnn\.so\.\d+ is not in HANDGRAD_CUDA_LIBRARY_PATH", out, re.M),
          "info names the missing libraries", out + err)
    check("--device auto uses: cpu" in out, "--device auto falls back to the CPU without them", out)

    c = os.path.join(d, "c.npy")
    code, out, err = run(["einsum", "ij,jk->ik", os.path.join(d, "a.npy"), os.path.join(d, "b.npy"), "-o", c,
                          "--device", "auto"], none)
    check(code == 0 and np.array_equal(np.load(c), np.arange(12, dtype=np.float32).reshape(3, 4) @ np.ones((4, 2))),
          "a CPU command runs without them", err)
    code, out, err = run(["mlp", "--iters", "2000", "--no-plot", "--out-dir", os.path.join(d, "q2")], none)
    check(code == 0, "Q2 runs without them", err[-300:])

    code, out, err = run(["einsum", "ij,jk->ik", os.path.join(d, "a.npy"), os.path.join(d, "b.npy"), "-o", c,
                          "--device", "cuda"], none)
    lines = [l for l in err.splitlines() if l.strip()]
    check(code == 2 and len(lines) == 1, "--device cuda without them: one line, exit 2", err)

    # Only HANDGRAD_CUDA_LIBRARY_PATH's folders are searched when it is set: links to the real
    # libraries in a folder of our own are found there.
    if len(found) == 2:
        own = os.path.join(d, "own-cuda-libs")
        os.mkdir(own)
        for path in found.values():
            os.symlink(path, os.path.join(own, os.path.basename(path)))
        code, out, err = run(["info"], {"HANDGRAD_CUDA_LIBRARY_PATH": own})
        check(code == 0 and all(f": {own}/" in l for l in out.splitlines() if l.startswith(("cuBLAS", "cuDNN"))),
              "HANDGRAD_CUDA_LIBRARY_PATH is where they are looked for", out)
        # A file of the right name that is not the library (another library renamed) is not taken
        # for it.
        impostor = os.path.join(d, "impostor")
        os.mkdir(impostor)
        zlib = next(p for p in ("/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1",
                                "/lib/aarch64-linux-gnu/libz.so.1", "/usr/lib64/libz.so.1") if os.path.exists(p))
        shutil.copy(zlib, os.path.join(impostor, os.path.basename(found["cuDNN"])))
        code, out, err = run(["info"], {"HANDGRAD_CUDA_LIBRARY_PATH": impostor})
        check(code == 0 and re.search(r"^cuDNN: libcudnn\.so\.\d+ at \S+ has no cudnnCreate: not cuDNN", out, re.M),
              "a renamed other library is not taken for cuDNN", out)
        # One already in the process (as PyTorch's is beside the Python module) is the one used,
        # never a second copy from elsewhere.
        code, out, err = run(["info"], {"LD_PRELOAD": os.path.join(own, os.path.basename(found["cuDNN"]))})
        check(code == 0 and re.search(rf"^cuDNN [^:]*: {re.escape(own)}/", out, re.M),
              "a library already loaded is the one used", out)
    else:
        print("note: cuBLAS/cuDNN not found on this machine: the HANDGRAD_CUDA_LIBRARY_PATH case is skipped")

    if MODULE_DIR and os.path.exists(os.path.join(MODULE_DIR, "handgrad", "__init__.py")):
        probe = ("import handgrad, numpy as np\n"
                 "handgrad.einsum('ij,jk->ik', np.ones((3, 4), np.float32), np.ones((4, 5), np.float32))\n"
                 "maps = open('/proc/self/maps').read()\n"
                 "print([n for n in ('libcublas', 'libcudnn') if n in maps])\n")
        p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=MODULE_DIR))
        check(p.returncode == 0 and p.stdout.strip() == "[]", "import handgrad + a CPU einsum load neither",
              p.stdout + p.stderr[-500:])

print(f"cli_cuda_libs: {len(failures)} failure(s)")
sys.exit(1 if failures else 0)
