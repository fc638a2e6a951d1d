#!/usr/bin/env python3
"""Q2 speed: microseconds per SGD iteration of every handgrad implementation next to a PyTorch
eager loop with the same manual backward, on the same machine in the same run, plus the cost
of a 5-rate learning-rate sweep relative to one rate.

  bench/compare_mlp.py --handgrad build/handgrad [--device cpu|cuda] [--json out.json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SWEEP = "1e-4,3e-5,1e-5,3e-6,1e-6"


def handgrad_us(hg, device, impl, iters, lr, tmp):
    out = os.path.join(tmp, f"{device}_{impl}_{lr.count(',')}")
    cmd = [hg, "mlp", "--device", device, "--impl", impl, "--iters", str(iters), "--lr", lr,
           "--out-dir", out, "--no-plot"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"compare_mlp: {' '.join(cmd)} failed: {p.stderr.strip()}")
    s = json.load(open(os.path.join(out, "mlp_summary.json")))
    return s["us_per_iter"], s["seconds"]


def torch_us(device, iters):
    import torch
    g = torch.Generator().manual_seed(0)
    N, D, H, lr = 500, 64, 64, 1e-5
    X = torch.randn(N, D, generator=g).to(device)
    Y = torch.randn(N, 1, generator=g).to(device)
    W1 = torch.randn(D, H, generator=g).to(device)
    W2 = torch.randn(H, 1, generator=g).to(device)
    idx = torch.randint(0, N, (iters,), generator=g).tolist()

    def run(n):
        nonlocal W1, W2
        for t in range(n):
            i = idx[t]
            x, y = X[i:i + 1], Y[i:i + 1]
            a = x @ W1
            ar = torch.relu(a)
            yp = ar @ W2
            loss = ((yp - y) ** 2).sum()
            dy = 2 * (yp - y)
            dW2 = ar.T @ dy
            da = (dy @ W2.T) * (a >= 0).float()
            dW1 = x.T @ da
            W1 -= lr * dW1
            W2 -= lr * dW2
            if t % 100 == 0:
                loss.item()  # the course logs the loss every 100 iterations (a sync on the GPU)

    run(min(200, iters))
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    run(iters)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--handgrad", default="build/handgrad")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--iters", type=int, default=100000)
    ap.add_argument("--torch-iters", type=int, default=5000)
    ap.add_argument("--json")
    opt = ap.parse_args()
    import torch
    if opt.device == "cpu":
        torch.set_num_threads(os.cpu_count())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        impls = ["cpu"] if opt.device == "cpu" else ["kernels", "graph", "fused"]
        for impl in impls:
            iters = opt.iters if impl != "kernels" else min(opt.iters, 20000)
            us, secs = handgrad_us(opt.handgrad, opt.device, impl, iters, "1e-5", tmp)
            sweep_us, _ = handgrad_us(opt.handgrad, opt.device, impl, iters, SWEEP, tmp)
            rows.append({"impl": f"handgrad {impl}", "iters": iters, "us_per_iter": us,
                         "sweep5_us_per_iter": sweep_us, "sweep5_ratio": sweep_us / us})
        tus = torch_us(opt.device, opt.torch_iters)
        rows.append({"impl": f"torch eager ({opt.device})", "iters": opt.torch_iters, "us_per_iter": tus})
    print(f"\nQ2 MLP (N=500 D=64 H=64, batch-1 SGD) on {opt.device}, torch {torch.__version__}")
    print(f"{'implementation':24} {'iters':>7} {'us/iter':>9} {'1e5 iters':>10} {'vs torch':>9} {'5-lr sweep':>11}")
    for r in rows:
        vs = tus / r["us_per_iter"]
        sweep = f"{r['sweep5_ratio']:.2f}x" if "sweep5_ratio" in r else "-"
        print(f"{r['impl']:24} {r['iters']:7d} {r['us_per_iter']:9.3f} {r['us_per_iter'] * 0.1:9.2f}s {vs:8.1f}x {sweep:>11}")
        r["speedup_vs_torch"] = vs
    if opt.json:
        with open(opt.json + ".tmp", "w") as f:
            json.dump({"device": opt.device, "torch": torch.__version__, "rows": rows}, f, indent=1)
        os.replace(opt.json + ".tmp", opt.json)


if __name__ == "__main__":
    main()
