#!/usr/bin/env python3
"""PyTorch replay oracle for Q2: the same X, Y, W1, W2 and sample indices through
`handgrad mlp --device cpu` (replay flags) and through a manual-backward PyTorch loop written
as the course writes it; the logged losses must agree to fp32 rounding (relative 1e-3) over the
first 5000 iterations, and so must the trained weights. On a GPU machine every CUDA
implementation is compared the same way."""
import os
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
N, D, H, ITERS, LR, LOG = 500, 64, 64, 5000, 1e-4, 100


def torch_reference(X, Y, W1, W2, idx):
    X, Y = torch.from_numpy(X), torch.from_numpy(Y).reshape(-1, 1)
    W1, W2 = torch.from_numpy(W1.copy()), torch.from_numpy(W2.copy()).reshape(-1, 1)
    logged = []
    for t in range(ITERS):
        i = int(idx[t])
        x, y = X[i:i + 1], Y[i:i + 1]
        a = x @ W1                      # forward
        ar = torch.relu(a)
        yp = ar @ W2
        loss = ((yp - y) ** 2).sum()
        dy = 2 * (yp - y)               # backward, by hand
        dW2 = ar.T @ dy
        dar = dy @ W2.T
        da = dar * (a >= 0).float()     # relu'(a) = 1 for a >= 0, as the course defines it
        dW1 = x.T @ da
        W1 -= LR * dW1                  # SGD
        W2 -= LR * dW2
        if (t + 1) % LOG == 0:
            logged.append(loss.item())
    return np.array(logged), W1.numpy(), W2.numpy().reshape(-1)


def parse_output(path):
    out = []
    for line in open(path):
        # At 100-th iteration, loss is 0.5123
        out.append(float(line.rsplit(" ", 1)[1]))
    return np.array(out)


def rel(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)


rng = np.random.default_rng(4901)
X = rng.standard_normal((N, D)).astype(np.float32)
Y = rng.standard_normal((N, 1)).astype(np.float32)
W1 = rng.standard_normal((D, H)).astype(np.float32)
W2 = rng.standard_normal((H, 1)).astype(np.float32)
idx = rng.integers(0, N, ITERS).astype(np.int64)
want_loss, want_W1, want_W2 = torch_reference(X, Y, W1, W2, idx)

info = subprocess.run([HANDGRAD, "info"], capture_output=True, text=True).stdout
runs = [("cpu", "cpu")]
if "--device auto uses: cuda" in info:
    runs += [("cuda", "kernels"), ("cuda", "graph"), ("cuda", "fused")]

failures = []
with tempfile.TemporaryDirectory() as d:
    paths = {}
    for name, arr in [("x", X), ("y", Y), ("w1", W1), ("w2", W2), ("indices", idx)]:
        paths[name] = os.path.join(d, name + ".npy")
        np.save(paths[name], arr)
    for dev, impl in runs:
        out = os.path.join(d, f"out_{impl}")
        cmd = [HANDGRAD, "mlp", "--device", dev, "--impl", impl, "--iters", str(ITERS), "--lr", str(LR),
               "--log-every", str(LOG), "--out-dir", out, "--no-plot", "--save-weights", out]
        for name in paths:
            cmd += [f"--{name}", paths[name]]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            failures.append(f"{impl}: rc={p.returncode} {p.stderr.strip()}")
            continue
        got = parse_output(os.path.join(out, "Q2_output.txt"))
        e_loss = rel(got, np.round(want_loss, 4))  # Q2_output.txt prints 4 decimals
        e_w1 = rel(np.load(os.path.join(out, "W1.npy")), want_W1)
        e_w2 = rel(np.load(os.path.join(out, "W2.npy")).reshape(-1), want_W2)
        print(f"{impl:8s} logged losses rel.err {e_loss:.2e}, W1 {e_w1:.2e}, W2 {e_w2:.2e} ({len(got)} points)")
        if len(got) != ITERS // LOG or not (e_loss < 1e-3 and e_w1 < 1e-3 and e_w2 < 1e-3):
            failures.append(f"{impl}: loss {e_loss:.2e} W1 {e_w1:.2e} W2 {e_w2:.2e}")

for f in failures:
    print("FAIL", f)
print(f"oracle_mlp: {len(runs)} implementation(s) against torch {torch.__version__}, {len(failures)} failure(s)")
sys.exit(1 if failures else 0)
