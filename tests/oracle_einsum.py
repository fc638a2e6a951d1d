#!/usr/bin/env python3
"""PyTorch oracle: random einsum equations and shapes through `handgrad einsum`, compared with
torch.einsum in float64. Relative error (max |ours - torch| / max |torch|) must be < 1e-5.
Runs on the CPU, and on the GPU too when `handgrad info` finds one."""
import os
import random
import subprocess
import sys
import tempfile

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


failures, worst, count = [], 0.0, 0
cases = FIXED + [random_case() for _ in range(N_RANDOM)]
with tempfile.TemporaryDirectory() as d:
    for dev in devices():
        for i, (eq, shapes) in enumerate(cases):
            arrays = [np.random.default_rng(i * 7 + j).standard_normal(s) for j, s in enumerate(shapes)]
            paths = []
            for j, a in enumerate(arrays):
                paths.append(os.path.join(d, f"in{j}.npy"))
                np.save(paths[-1], a)  # float64: handgrad reads it as float32
            out = os.path.join(d, "out.npy")
            # "--" ends the options: an equation such as "->" must not be read as a flag.
            p = subprocess.run([HANDGRAD, "einsum", "-o", out, "--device", dev, "--", eq, *paths],
                               capture_output=True, text=True, timeout=120)
            if p.returncode != 0:
                failures.append(f"{dev} {eq} {shapes}: rc={p.returncode} {p.stderr.strip()}")
                continue
            want = torch.einsum(eq, *[torch.from_numpy(a) for a in arrays]).numpy()
            got = np.load(out)
            count += 1
            if got.shape != want.shape:
                failures.append(f"{dev} {eq} {shapes}: shape {got.shape} != torch {want.shape}")
                continue
            scale = max(np.abs(want).max(initial=0.0), 1e-30)
            err = np.abs(got.astype(np.float64) - want).max(initial=0.0) / scale
            worst = max(worst, err)
            if not err < 1e-5:
                failures.append(f"{dev} {eq} {shapes}: relative error {err:.3e}")

for f in failures:
    print("FAIL", f)
print(f"oracle_einsum: {count} cases compared with torch {torch.__version__}, "
      f"worst relative error {worst:.2e}, {len(failures)} failure(s)")
sys.exit(1 if failures else 0)
