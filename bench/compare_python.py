#!/usr/bin/env python3
"""What a call from Python costs: handgrad.einsum on 100x100 float32 operands, timed from Python,
beside the same call timed in C++ in the same process (handgrad._core._time_einsum_cpp: no Python
in the loop), torch.einsum and numpy. The bar (issue 20): Python <= 2x C++ + 20 us.

    PYTHONPATH=build/python /usr/bin/python3 bench/compare_python.py [--reps 3000] [--size 100]
"""
import argparse
import statistics
import time

import numpy as np

import handgrad


def per_call_us(fn, reps, rounds=5):
    """Median over rounds of the mean time per call."""
    fn()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        out.append((time.perf_counter() - t0) / reps * 1e6)
    return statistics.median(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=3000)
    p.add_argument("--size", type=int, default=100)
    args = p.parse_args()
    n = args.size
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    rows = []
    for eq in ("ij,jk->ik", "ij,ij->ij", "ij->j"):
        ops = (a, b) if "," in eq else (a,)
        cpp = statistics.median(handgrad._core._time_einsum_cpp(eq, *ops, reps=args.reps) * 1e6 for _ in range(5))
        py = per_call_us(lambda: handgrad.einsum(eq, *ops), args.reps)
        row = {"equation": eq, "cpp_us": cpp, "python_us": py, "bound_us": 2 * cpp + 20}
        try:
            import torch
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            tops = (ta, tb) if "," in eq else (ta,)
            row["python_torch_in_us"] = per_call_us(lambda: handgrad.einsum(eq, *tops), args.reps)
            row["torch_einsum_us"] = per_call_us(lambda: torch.einsum(eq, *tops), args.reps)
        except ImportError:
            pass
        row["numpy_einsum_us"] = per_call_us(lambda: np.einsum(eq, *ops), args.reps)
        rows.append(row)
    print(f"handgrad {handgrad.__version__} ({handgrad._core.commit}), {n}x{n} float32, median of 5 rounds of "
          f"{args.reps} calls")
    print(f"{'equation':12s} {'C++ us':>8s} {'Python us':>10s} {'overhead':>9s} {'bound':>8s} {'ok':>3s} "
          f"{'torch in':>9s} {'torch.einsum':>13s} {'np.einsum':>10s}")
    for r in rows:
        ok = r["python_us"] <= r["bound_us"]
        print(f"{r['equation']:12s} {r['cpp_us']:8.2f} {r['python_us']:10.2f} {r['python_us'] - r['cpp_us']:9.2f} "
              f"{r['bound_us']:8.2f} {'yes' if ok else 'NO':>3s} {r.get('python_torch_in_us', float('nan')):9.2f} "
              f"{r.get('torch_einsum_us', float('nan')):13.2f} {r['numpy_einsum_us']:10.2f}")


if __name__ == "__main__":
    main()
