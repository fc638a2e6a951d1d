#!/usr/bin/env python3
"""Contraction orders against opt_einsum's: random einsum problems (3-14 operands, --operands), each planned
by `handgrad einsum --plan` (its FLOPs, opt_einsum's count) and by opt_einsum's 'greedy', and,
up to --exact-max operands, by opt_einsum's exact dynamic programming with outer products allowed.
Prints the geometric mean and the worst ratio of handgrad's cost to each, and every problem where
handgrad costs more.

  PYTHONPATH=<opt_einsum> bench/compare_orders.py --handgrad build/handgrad [--problems 300] [--operands 3-14]

opt_einsum is not a dependency of handgrad: unpack its wheel onto PYTHONPATH for the measurement.
Every label that one operand alone holds is in the output, so neither side sums one beforehand
(handgrad does that for free; opt_einsum would count it).
"""
import argparse
import math
import os
import random
import re
import subprocess
import sys
import tempfile

import numpy as np

try:
    import opt_einsum as oe
except ImportError:
    print("SKIP: opt_einsum is not importable (unpack its wheel onto PYTHONPATH)")
    sys.exit(77)


def problem(rng, n):
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[: rng.randint(3, 12)]
    size = {c: rng.randint(2, 4) for c in letters}
    terms = ["".join(rng.sample(letters, rng.randint(1, min(4, len(letters))))) for _ in range(n)]
    counts = {c: sum(t.count(c) for t in terms) for c in letters}
    out = "".join(c for c in letters if counts[c] == 1 or (counts[c] > 1 and rng.random() < 0.1))
    return ",".join(terms) + "->" + out, [tuple(size[c] for c in t) for t in terms]


def handgrad_flops(exe, eq, shapes, d):
    paths = []
    for i, s in enumerate(shapes):
        paths.append(os.path.join(d, f"in{i}.npy"))
        np.save(paths[-1], np.zeros(s, dtype=np.float32))
    p = subprocess.run([exe, "einsum", "-o", os.path.join(d, "out.npy"), "--plan", "--", eq, *paths],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"{eq}: {p.stderr.strip()}")
    m = re.search(r"order: (.*?): ([0-9.e+]+) FLOPs", p.stdout)
    return float(m.group(2)), m.group(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--handgrad", default="build/handgrad")
    ap.add_argument("--problems", type=int, default=300)
    ap.add_argument("--exact-max", type=int, default=10, help="compare with opt_einsum's exact search up to here")
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--operands", default="3-14", help="the range of operand counts, e.g. 3-14 or 15-40")
    opt = ap.parse_args()
    rng = random.Random(opt.seed)
    lo, hi = (int(x) for x in opt.operands.split("-"))
    vs_greedy, vs_exact, worse = [], [], []
    with tempfile.TemporaryDirectory() as d:
        for k in range(opt.problems):
            n = lo + k % (hi - lo + 1)
            eq, shapes = problem(rng, n)
            ours, method = handgrad_flops(opt.handgrad, eq, shapes, d)
            views = [np.empty(s) for s in shapes]
            greedy = float(oe.contract_path(eq, *views, optimize="greedy")[1].opt_cost)
            vs_greedy.append(ours / max(greedy, 1))
            if ours > greedy:
                worse.append(f"{eq} {shapes}: handgrad {ours:.0f} ({method}) > opt_einsum greedy {greedy}")
            if n <= opt.exact_max:
                exact = float(oe.contract_path(eq, *views, optimize=oe.DynamicProgramming(search_outer=True))[1].opt_cost)
                vs_exact.append(ours / max(exact, 1))
                if ours > exact:
                    worse.append(f"{eq} {shapes}: handgrad {ours:.0f} ({method}) > exact {exact}")
    gmean = lambda xs: math.exp(sum(math.log(x) for x in xs) / len(xs))
    for w in worse:
        print("WORSE", w)
    print(f"compare_orders: {opt.problems} problems of {lo}-{hi} operands (opt_einsum {oe.__version__})")
    print(f"  handgrad / opt_einsum greedy: geometric mean {gmean(vs_greedy):.3f}, worst {max(vs_greedy):.3f}, "
          f"best {min(vs_greedy):.3f}")
    if vs_exact:
        print(f"  handgrad / exact (<= {opt.exact_max} operands, {len(vs_exact)} problems): geometric mean "
              f"{gmean(vs_exact):.4f}, worst {max(vs_exact):.4f}")
    print(f"  {len(worse)} problem(s) where handgrad costs more")
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
