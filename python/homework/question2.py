#!/usr/bin/env python3
"""COMP4901Y HW1, Question 2: a two-layer ReLU MLP trained by batch-1 SGD without autograd.

    python3 question2.py [--quick] [--lr 1e-5] [--iters 100000] [--device auto|cpu|cuda] [--out DIR]

The model is y' = relu(x W1) W2 with the loss (y' - y)^2. forward() and backward() below state
the math (every derivative by hand); handgrad trains with exactly these steps in its C++/CUDA
kernels. main() trains for --iters iterations, prints the loss every 100 iterations, plots the
loss curve to DIR/question2_result.pdf and replays the first iterations with forward() and
backward() in torch (float32) to check handgrad's losses and weights. Exits 0 when the check
passes.
"""
import argparse
import os
import sys

import numpy as np

try:
    import handgrad
except ImportError:
    sys.exit("question2.py needs the handgrad module: `pip install .` in handgrad's repository, "
             "or PYTHONPATH=<handgrad>/build/python")

N, D, H = 500, 64, 64


def make_data(seed):
    """X [n, d], Y [n], W1 [d, h], W2 [h] from N(0, 1), and the sample of each iteration."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D)).astype(np.float32)
    Y = rng.standard_normal(N).astype(np.float32)
    W1 = rng.standard_normal((D, H)).astype(np.float32)
    W2 = rng.standard_normal(H).astype(np.float32)
    return X, Y, W1, W2, rng


def forward(x, W1, W2):
    """a = x W1, a' = relu(a), y' = a' W2."""
    a = x @ W1
    a_relu = a.clamp(min=0)
    return a, a_relu, a_relu @ W2


def backward(x, y, a, a_relu, y_pred, W2):
    """dL/dy' = 2 (y' - y); dW2 = a'^T dy'; da = (dy' W2^T) * [a >= 0]; dW1 = x^T da."""
    dy = 2 * (y_pred - y)
    dW2 = a_relu * dy
    da = dy * W2 * (a >= 0)
    dW1 = x[:, None] * da[None, :]
    return dW1, dW2


def train(X, Y, W1, W2, indices, lr, iters, device):
    """handgrad's trainer: SGD with batch size 1 over the given sample order."""
    return handgrad.train_mlp(X, Y, W1, W2, indices, lrs=lr, iters=iters, device=device)


def replay_in_torch(X, Y, W1, W2, indices, lr, steps):
    import torch
    W1, W2 = torch.from_numpy(W1.copy()), torch.from_numpy(W2.copy())
    losses = []
    for t in range(steps):
        x, y = torch.from_numpy(X[indices[t]]), torch.tensor(Y[indices[t]])
        a, a_relu, y_pred = forward(x, W1, W2)
        losses.append(float((y_pred - y) ** 2))
        dW1, dW2 = backward(x, y, a, a_relu, y_pred, W2)
        W1, W2 = W1 - lr * dW1, W2 - lr * dW2
    return np.array(losses, np.float32), W1.numpy(), W2.numpy()


def plot(losses, lr, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    t = np.arange(len(losses))
    ax.plot(t, losses, lw=0.3, alpha=0.35, label="loss per iteration")
    k = max(1, len(losses) // 200)
    smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
    ax.plot(t[k - 1:], smooth, lw=1.2, label=f"mean of {k}")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("(y' - y)^2")
    ax.set_title(f"Q2: two-layer MLP, batch-1 SGD, lr {lr:g} (handgrad)")
    ax.legend()
    fig.tight_layout()
    tmp = path + ".tmp.pdf"
    try:  # written whole or not at all: no half-written temporary left by an interruption
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"plot: {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--quick", action="store_true", help="10000 iterations, a 500-step replay")
    p.add_argument("--lr", type=float, default=1e-5, help="1e-5 converges; the course's 0.03 diverges in a few steps")
    p.add_argument("--iters", type=int, default=100000)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--out", default=".", help="folder for question2_result.pdf")
    args = p.parse_args()
    iters = min(args.iters, 10000) if args.quick else args.iters

    X, Y, W1, W2, rng = make_data(args.seed)
    indices = rng.integers(0, N, iters)
    r = train(X, Y, W1, W2, indices, args.lr, iters, args.device)
    m = r["models"][0]
    losses = m["losses"]
    for t in range(0, iters, 100):
        if t % 10000 == 0 or t < 1000 and t % 200 == 0:
            print(f"Iteration {t}: loss {losses[t]:.6f}")
    print(f"trained {iters} iterations on {r['device']} ({r['impl']}) in {r['seconds'] * 1e3:.1f} ms, "
          f"{r['us_per_iter']:.3f} us per iteration; mean loss over the last 1000: {m['last1000_mean']:.4f}")
    if m["diverged_at"] is not None:
        print(f"diverged at iteration {m['diverged_at']}: try a smaller --lr")
    os.makedirs(args.out, exist_ok=True)
    plot(losses, args.lr, os.path.join(args.out, "question2_result.pdf"))

    try:
        import torch  # noqa: F401
    except ImportError:
        print("note: torch is not installed; handgrad's steps are not replayed")
        return 0
    steps = min(iters, 500 if args.quick else 5000)
    ref_losses, ref_W1, ref_W2 = replay_in_torch(X, Y, W1, W2, indices, args.lr, steps)
    check = handgrad.train_mlp(X, Y, W1, W2, indices, lrs=args.lr, iters=steps, device=args.device)["models"][0]
    scale = np.abs(ref_losses).max()
    err_loss = float(np.abs(check["losses"] - ref_losses).max() / scale)
    err_w = float(max(np.abs(check["w1"] - ref_W1).max(), np.abs(check["w2"] - ref_W2).max()))
    ok = err_loss < 1e-4 and err_w < 1e-3
    print(f"replay of {steps} steps with forward()/backward() in torch: max loss error {err_loss:.1e} (relative), "
          f"max weight error {err_w:.1e}: {'ok' if ok else 'MISMATCH'}")
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
