#!/usr/bin/env python3
"""PyTorch replay oracle for Q2: the same X, Y, W1, W2 and sample indices through
`handgrad mlp` (replay flags) and through a manual-backward PyTorch loop written as the course
writes it, which logs `if iter % 100 == 0` with iter counted from 0:
`At {iter}-th iteration, loss is {loss}`, the loss computed at that iteration before its update.

1. The course's own problem: torch.manual_seed(2024); x, y, W1, W2 ~ randn; one
   torch.randint sample index per iteration; 1e5 iterations at handgrad's default lr. Every
   line of handgrad's Q2_output.txt must be the course loop's line: the same iteration number,
   and the loss printed as Python prints that float32, within float32 rounding of the course's.
2. A second problem (numpy data, lr 1e-4): the logged losses and the trained weights.
On a GPU machine every CUDA implementation is compared the same way."""
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
N, D, H, LOG = 500, 64, 64, 100


def course_loop(X, Y, W1, W2, iters, lr, idx=None):
    """The course's training loop; idx None draws each sample with torch.randint, as the
    course does. Returns the log lines, the trained W1, W2 and the indices used."""
    X, Y = torch.from_numpy(X), torch.from_numpy(Y).reshape(-1, 1)
    W1, W2 = torch.from_numpy(W1.copy()), torch.from_numpy(W2.copy()).reshape(-1, 1)
    lines, used = [], []
    for t in range(iters):
        i = int(torch.randint(0, N, (1,))) if idx is None else int(idx[t])
        used.append(i)
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
        W1 -= lr * dW1                  # SGD
        W2 -= lr * dW2
        if t % LOG == 0:
            lines.append(f"At {t}-th iteration, loss is {loss.item()}")
    return lines, W1.numpy(), W2.numpy().reshape(-1), np.array(used, np.int64)


def rel(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)


def compare_lines(label, got, want, tol):
    """Line by line: the same text up to the loss, which must read back as the float32 it names
    printed as Python prints it. A loss is a squared residual (y' - y)^2, and float32 rounding
    moves the residual, not the loss, by a fixed amount: a loss of 1e-6 may differ by 10%. So
    the residuals sqrt(loss) must agree within `tol` relative to max(1, |residual|) (y ~ N(0, 1))."""
    if len(got) != len(want):
        return [f"{label}: {len(got)} lines, the course loop wrote {len(want)}"]
    worst, bad = 0.0, []
    for g, w in zip(got, want):
        g_head, g_val = g.rsplit(" ", 1)
        w_head, w_val = w.rsplit(" ", 1)
        if g_head != w_head or g_val != f"{float(np.float32(g_val))}":
            bad.append(f"{label}: line {g!r}, the course loop wrote {w!r}")
            continue
        r_got, r_want = np.sqrt(float(g_val)), np.sqrt(float(w_val))
        worst = max(worst, abs(r_got - r_want) / max(1.0, r_want))
    if worst >= tol:
        bad.append(f"{label}: a logged residual is {worst:.2e} from the course's (bound {tol:.0e})")
    print(f"{label}: {len(got)} lines, {got[0]!r} ... {got[-1]!r}; residuals within {worst:.2e}")
    return bad[:5]


def run_handgrad(d, label, dev, impl, arrays, iters, lr):
    paths = {}
    for name, arr in arrays.items():
        paths[name] = os.path.join(d, f"{label}_{name}.npy")
        np.save(paths[name], arr)
    out = os.path.join(d, f"out_{label}_{impl}")
    cmd = [HANDGRAD, "mlp", "--device", dev, "--impl", impl, "--iters", str(iters), "--lr", str(lr),
           "--log-every", str(LOG), "--out-dir", out, "--no-plot", "--save-weights", out]
    for name in paths:
        cmd += [f"--{name}", paths[name]]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        return None, f"{label} {impl}: rc={p.returncode} {p.stderr.strip()}"
    return out, None


info = subprocess.run([HANDGRAD, "info"], capture_output=True, text=True).stdout
runs = [("cpu", "cpu")]
if "--device auto uses: cuda" in info:
    runs += [("cuda", "kernels"), ("cuda", "graph"), ("cuda", "fused")]

# 1. The course's problem, drawn as the course draws it.
COURSE_ITERS, COURSE_LR = 100000, 1e-5
torch.manual_seed(2024)
course = {"x": torch.randn(N, D), "y": torch.randn(N, 1), "w1": torch.randn(D, H), "w2": torch.randn(H, 1)}
course = {k: v.numpy() for k, v in course.items()}
course_lines, _, _, course["indices"] = course_loop(course["x"], course["y"], course["w1"], course["w2"],
                                                    COURSE_ITERS, COURSE_LR)
# 2. A second problem, at a larger lr.
ITERS, LR = 5000, 1e-4
rng = np.random.default_rng(4901)
X = rng.standard_normal((N, D)).astype(np.float32)
Y = rng.standard_normal((N, 1)).astype(np.float32)
W1 = rng.standard_normal((D, H)).astype(np.float32)
W2 = rng.standard_normal((H, 1)).astype(np.float32)
idx = rng.integers(0, N, ITERS).astype(np.int64)
want_lines, want_W1, want_W2, _ = course_loop(X, Y, W1, W2, ITERS, LR, idx)

failures = []
with tempfile.TemporaryDirectory() as d:
    for dev, impl in runs:
        out, err = run_handgrad(d, "course", dev, impl, course, COURSE_ITERS, COURSE_LR)
        if err:
            failures.append(err)
        else:
            got = open(os.path.join(out, "Q2_output.txt")).read().splitlines()
            failures += compare_lines(f"{impl:7s} course problem (seed 2024, lr {COURSE_LR:g})", got, course_lines, 1e-4)
        out, err = run_handgrad(d, "numpy", dev, impl, {"x": X, "y": Y, "w1": W1, "w2": W2, "indices": idx}, ITERS, LR)
        if err:
            failures.append(err)
            continue
        got = open(os.path.join(out, "Q2_output.txt")).read().splitlines()
        failures += compare_lines(f"{impl:7s} numpy problem (lr {LR:g})", got, want_lines, 1e-4)
        e_w1 = rel(np.load(os.path.join(out, "W1.npy")), want_W1)
        e_w2 = rel(np.load(os.path.join(out, "W2.npy")).reshape(-1), want_W2)
        print(f"{impl:7s} numpy problem: trained W1 rel.err {e_w1:.2e}, W2 {e_w2:.2e}")
        if not (e_w1 < 1e-3 and e_w2 < 1e-3):
            failures.append(f"{impl}: trained W1 {e_w1:.2e} W2 {e_w2:.2e}")

for f in failures:
    print("FAIL", f)
print(f"oracle_mlp: {len(runs)} implementation(s) against torch {torch.__version__}, {len(failures)} failure(s)")
sys.exit(1 if failures else 0)
