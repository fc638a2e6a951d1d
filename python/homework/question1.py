#!/usr/bin/env python3
"""COMP4901Y HW1, Question 1: the three einsum operations, computed by handgrad's kernels.

    python3 question1.py [--quick] [--device auto|cpu|cuda] [--seed N]

Each sub-question is one function; main() runs them on random tensors, prints the results'
shapes and checks each against torch.einsum (in float64) where torch is installed.
Exits 0 when every check passes.
"""
import argparse
import sys

import numpy as np

try:
    import handgrad
except ImportError:
    sys.exit("question1.py needs the handgrad module: `pip install .` in handgrad's repository, "
             "or PYTHONPATH=<handgrad>/build/python")


def question1_1(a, b):
    """Elementwise product: C[a,b,c,d] = A[a,b,c,d] * B[a,b,c,d]."""
    return handgrad.einsum("abcd,abcd->abcd", a, b)


def question1_2(a, b):
    """Contraction over d with a matrix: C[a,b,c,e] = sum_d A[a,b,c,d] * B[e,d]."""
    return handgrad.einsum("abcd,ed->abce", a, b)


def question1_3(a):
    """Sum over c: C[a,b,d] = sum_c A[a,b,c,d]."""
    return handgrad.einsum("abcd->abd", a)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--quick", action="store_true", help="small tensors only")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.add_argument("--seed", type=int, default=2024)
    args = p.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
        print("note: torch is not installed; the results are printed but not checked")

    rng = np.random.default_rng(args.seed)
    sizes = [(2, 3, 4, 5)] if args.quick else [(2, 3, 4, 5), (16, 32, 64, 48)]
    ok = True
    for (a_, b_, c_, d_) in sizes:
        A = rng.standard_normal((a_, b_, c_, d_)).astype(np.float32)
        A2 = rng.standard_normal((a_, b_, c_, d_)).astype(np.float32)
        B = rng.standard_normal((7, d_)).astype(np.float32)
        cases = [("1.1", "abcd,abcd->abcd", question1_1, (A, A2)),
                 ("1.2", "abcd,ed->abce", question1_2, (A, B)),
                 ("1.3", "abcd->abd", question1_3, (A,))]
        for name, eq, fn, ops in cases:
            if args.device == "auto":
                got = fn(*ops)
            else:
                got = handgrad.einsum(eq, *ops, device=args.device)
            line = f"Q{name} {eq:18s} A {str(A.shape):18s} -> {str(got.shape):18s}"
            if torch is not None:
                want = torch.einsum(eq, *[torch.from_numpy(o).double() for o in ops]).numpy()
                err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
                good = got.shape == want.shape and err < 1e-5
                ok = ok and good
                line += f" max rel. error vs torch.einsum {err:.1e}  {'ok' if good else 'MISMATCH'}"
            print(line)
    if A.size <= 120:
        print("\nQ1.3 on the 2x3x4x5 example, C[0, 0, :]:", question1_3(A)[0, 0])
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
