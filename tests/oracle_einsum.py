#!/usr/bin/env python3
"""PyTorch oracle: random einsum equations and shapes through `handgrad einsum`, compared with
torch.einsum in float64. Relative error (max |ours - torch| / max |torch|) must be < 1e-5.
Runs on the CPU, and on the GPU too (a subset, below) when `handgrad info` finds one."""
import concurrent.futures
import os
import random
import subprocess
import sys
import tempfile
import time

import numpy as np

try:
    import torch
except ImportError:
    print("SKIP: torch is not importable by", sys.executable, "(install python3-torch)")
    sys.exit(77)

HANDGRAD = sys.argv[1]
N_RANDOM = int(os.environ.get("HG_ORACLE_CASES", "120"))
rng = random.Random(4901)

FIXED = [
    ("abcd,abcd->abcd", [(2, 3, 4, 5), (2, 3, 4, 5)]),
    ("abcd,ed->abce", [(2, 3, 4, 5), (6, 5)]),
    ("abcd->abd", [(2, 3, 4, 5)]),
    ("abcd,abcd->abcd", [(7, 1, 9, 33), (7, 1, 9, 33)]),
    ("abcd,ed->abce", [(5, 7, 9, 130), (67, 130)]),
    ("abcd->abd", [(3, 5, 4097, 1)]),
    ("abcd->abd", [(2, 2, 3000, 3)]),
    ("ii->i", [(6, 6)]),
    ("ii", [(6, 6)]),
    ("...ij,...jk->...ik", [(2, 3, 4, 5), (3, 5, 2)]),
    ("a...b,b->a...", [(2, 3, 4), (4,)]),
    ("...,...->...", [(2, 1, 3), (4, 1)]),
    ("ij,ij->ij", [(1, 3), (2, 3)]),
    ("ij,jk", [(2, 1), (3, 4)]),
    ("bij,bjk->bik", [(1, 3, 5), (4, 5, 2)]),
    ("abc,cd,de->abe", [(2, 3, 4), (4, 5), (5, 6)]),
    ("ij,jk->ik", [(2, 0), (0, 3)]),
    ("Ab,bC->AC", [(2, 3), (3, 4)]),
    ("i j , j k -> i k", [(2, 3), (3, 4)]),
    # Many operands, contracted in the planned order (torch: left to right, or opt_einsum's).
    ("ab,cd,bc->ad", [(6, 7), (8, 9), (7, 8)]),
    ("ij,jk,kl,lm,mn->in", [(40, 2), (2, 40), (40, 40), (40, 2), (2, 40)]),
    ("abc,bcd,cde,def,efg->ag", [(3, 4, 5), (4, 5, 3), (5, 3, 2), (3, 2, 4), (2, 4, 3)]),
    # Beyond the old 8-dim cap: an 11-dim broadcast ellipsis, a 7-operand equation whose
    # left-to-right intermediate has 9 labels, a 20-dim permute.
    ("...ij,...jk->...ik", [(2, 1, 3, 1, 2, 1, 1, 2, 1, 3, 4), (1, 2, 1, 1, 1, 2, 1, 1, 1, 4, 2)]),
    ("acdf,jbje,gihb,hfac,gfac,gifabc,hfac",
     [(2, 2, 2, 3), (2, 3, 2, 2), (2, 2, 2, 3), (2, 3, 2, 2), (2, 3, 2, 2), (2, 2, 3, 2, 3, 2), (2, 3, 2, 2)]),
    ("abcdefghijklmnopqrst->tsrqponmlkjihgfedcba", [(2,) * 20]),
]


def random_case():
    letters = "abcdefgAB"
    n_labels = rng.randint(1, 6)
    labels = rng.sample(letters, n_labels)
    size = {l: rng.choice([1, 2, 3, 4, 5, 7, 8, 13]) for l in labels}
    terms, shapes = [], []
    for _ in range(rng.randint(1, 3)):
        rank = rng.randint(0, 4)
        term = "".join(rng.choice(labels) for _ in range(rank))
        terms.append(term)
        shapes.append(tuple(size[c] for c in term))
    eq = ",".join(terms)
    used = sorted(set("".join(terms)))
    if rng.random() < 0.7:
        out = [l for l in used if rng.random() < 0.5]
        rng.shuffle(out)
        eq += "->" + "".join(out)
    return eq, shapes


def devices():
    info = subprocess.run([HANDGRAD, "info"], capture_output=True, text=True).stdout
    return ["cpu", "cuda"] if "--device auto uses: cuda" in info else ["cpu"]


def check(dev, i, eq, shapes):
    """One case through `handgrad einsum` against torch in float64: (error or None, relative error)."""
    arrays = [np.random.default_rng(i * 7 + j).standard_normal(s) for j, s in enumerate(shapes)]
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for j, a in enumerate(arrays):
            paths.append(os.path.join(d, f"in{j}.npy"))
            np.save(paths[-1], a)  # float64: handgrad reads it as float32
        out = os.path.join(d, "out.npy")
        # "--" ends the options: an equation such as "->" must not be read as a flag.
        p = subprocess.run([HANDGRAD, "einsum", "-o", out, "--device", dev, "--", eq, *paths],
                           capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            return f"{dev} {eq} {shapes}: rc={p.returncode} {p.stderr.strip()}", 0.0
        got = np.load(out)
    want = torch.einsum(eq, *[torch.from_numpy(a) for a in arrays]).numpy()
    if got.shape != want.shape:
        return f"{dev} {eq} {shapes}: shape {got.shape} != torch {want.shape}", 0.0
    scale = max(np.abs(want).max(initial=0.0), 1e-30)
    err = np.abs(got.astype(np.float64) - want).max(initial=0.0) / scale
    return (None if err < 1e-5 else f"{dev} {eq} {shapes}: relative error {err:.3e}"), err


# Every case on the CPU. On the GPU, every fixed case (each kernel family: elementwise, GEMM,
# reductions, permutes, diagonals, broadcasts, many operands, > 8 dims) and the first
# $HG_ORACLE_CUDA_CASES random ones: each case is a process with a CUDA context of its own, and
# the CUDA GoogleTests already compare 200 random equations with the CPU in one process.
# Cases run in parallel, one process per core (at most 8).
cases = FIXED + [random_case() for _ in range(N_RANDOM)]
n_cuda = len(FIXED) + int(os.environ.get("HG_ORACLE_CUDA_CASES", "20"))
jobs = [(dev, i, eq, shapes) for dev in devices()
        for i, (eq, shapes) in enumerate(cases if dev == "cpu" else cases[:n_cuda])]
start = time.monotonic()
with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
    results = list(pool.map(lambda job: check(*job), jobs))
failures = [f for f, _ in results if f]
worst = max((err for _, err in results), default=0.0)
per_device = ", ".join(f"{sum(1 for j in jobs if j[0] == d)} on {d}" for d in dict.fromkeys(j[0] for j in jobs))

for f in failures:
    print("FAIL", f)
print(f"oracle_einsum: {len(jobs)} cases ({per_device}) compared with torch {torch.__version__} in "
      f"{time.monotonic() - start:.1f} s, worst relative error {worst:.2e}, {len(failures)} failure(s)")
sys.exit(1 if failures else 0)
