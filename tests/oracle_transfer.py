#!/usr/bin/env python3
"""Q3 parity with PyTorch: a randomly initialised adapted torchvision ResNet18 (1-channel conv1,
10-class fc, random BN running statistics), saved with torch.save, must give
  - the same eval-mode logits on real FashionMNIST test images, and
  - after 3 SGD-with-momentum steps in train mode (3 epochs of one batch of 32), the same
    weights, BN running statistics, num_batches_tracked and momentum buffers as PyTorch in
    float64,
with the backbone frozen (the course's setting) and with everything training.

Why float64, small noise images and a chosen seed for the training steps: float32 rounding
decides the branch wherever a ReLU input is within ~1e-6 of zero or two max-pool candidates are
that close. On FashionMNIST's black backgrounds that happens (then even PyTorch float32 and
float64 disagree by 10-50% after 3 steps), and with ~10^6 ReLU inputs per step it happens by
chance too. So the steps run on 8x8 uniform-noise images, batch 32 (the same layers, strides and
downsampling paths, ~20x fewer activations), and the test takes the first data seed for which,
in PyTorch float64, every ReLU input and max-pool runner-up stays at least 5e-6 away from its
branch point during all steps: the comparison then measures handgrad, not which way a coin-flip
of rounding fell. One batch seen three times keeps the set of branch points small enough for
such a seed to exist. Full fine-tuning at 8x8 puts BatchNorm over only 32 values on the 1x1 maps of
layers 2-4, which amplifies rounding: there each tensor must be within 1e-4 of float64 or at
most 3x as far from it as PyTorch's own float32 run is. The forward pass is checked on real
28x28 images by the eval test above."""
import os
import subprocess
import sys
import tempfile

import gzip
import struct

import numpy as np

try:
    import torch
    import torchvision
except ImportError:
    print("SKIP: torch/torchvision are not importable by", sys.executable)
    sys.exit(77)
sys.path.insert(0, os.path.dirname(__file__))
from pyhelpers import fashion_dir, read_idx, read_safetensors  # noqa: E402

HANDGRAD = sys.argv[1]
DATA = fashion_dir()
if DATA is None:
    print("SKIP: FashionMNIST not found (apt-get install dataset-fashion-mnist)")
    sys.exit(77)
torch.set_num_threads(os.cpu_count())
failures = []
info = subprocess.run([HANDGRAD, "info"], capture_output=True, text=True).stdout
DEVICES = ["cpu", "cuda"] if "--device auto uses: cuda" in info else ["cpu"]


def adapted_model(seed):
    torch.manual_seed(seed)
    m = torchvision.models.resnet18(num_classes=10)
    m.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    return m


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max(initial=0) / max(np.abs(b).max(initial=0), 1e-12)


def check(name, got, want, tol, torch_f32=None):
    """got vs want (float64): within tol, or within 3x PyTorch float32's own error."""
    e = rel(got, want)
    bound = tol if torch_f32 is None else max(tol, 3 * rel(torch_f32, want))
    if not e < bound:
        failures.append(f"{name}: relative error {e:.2e} (bound {bound:.1e})")
    return e


BATCH, STEPS, SIDE, MARGIN = 32, 3, 8, 5e-6
test_x = read_idx(os.path.join(DATA, "t10k-images-idx3-ubyte.gz"))[:64].astype(np.float32) / 255


def noise_data(seed):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (BATCH, SIDE, SIDE)).astype(np.uint8),
            rng.integers(0, 10, BATCH).astype(np.uint8))


def reference(freeze, images_u8, labels_u8, dtype=torch.float64):
    """3 SGD steps in PyTorch (float64 by default); returns the model, the optimizer and the
    smallest distance of any ReLU input from 0 / max-pool runner-up from the winner seen."""
    m = adapted_model(7).to(dtype)
    m.train()
    margin = [np.inf]

    def relu_margin(mod, inp):
        margin[0] = min(margin[0], inp[0].abs().min().item())

    def pool_margin(mod, inp):
        x = torch.nn.functional.pad(inp[0], (1, 1, 1, 1), value=-np.inf)
        win = x.unfold(2, 3, 2).unfold(3, 3, 2).reshape(*x.shape[:2], -1, 9)
        top = win.topk(2, dim=-1).values
        gap = (top[..., 0] - top[..., 1])[top[..., 0] > 0]
        if gap.numel():
            margin[0] = min(margin[0], gap[gap > 0].min().item() if (gap > 0).any() else np.inf)

    for mod in m.modules():
        if isinstance(mod, torch.nn.ReLU):
            mod.register_forward_pre_hook(relu_margin)
    m.maxpool.register_forward_pre_hook(pool_margin)
    if freeze == "backbone":
        for name, prm in m.named_parameters():
            prm.requires_grad = name.startswith("conv1.") or name.startswith("fc.")
    opt = torch.optim.SGD([prm for prm in m.parameters() if prm.requires_grad], lr=0.01, momentum=0.9)
    x_all = torch.from_numpy(images_u8.astype(np.float32) / 255).to(dtype)[:, None]
    y_all = torch.from_numpy(labels_u8.astype(np.int64))
    for step in range(STEPS):  # one batch, one step per epoch
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x_all), y_all).backward()
        opt.step()
    return m, opt, margin[0]


def write_idx(path, arr):
    with gzip.open(path, "wb") as f:
        if arr.ndim == 3:
            f.write(struct.pack(">IIII", 2051, *arr.shape) + arr.tobytes())
        else:
            f.write(struct.pack(">II", 2049, arr.shape[0]) + arr.tobytes())

def compare_training(label, out, mom, m, opt, m32, opt32, seed, margin):
    """handgrad's trained state and momentum against PyTorch float64 (m, opt)."""
    got = read_safetensors(out)
    worst = 0.0
    sd32 = m32.state_dict()
    for name, t in m.state_dict().items():
        if name not in got:
            failures.append(f"train {label}: {name} missing from handgrad's checkpoint")
            continue
        worst = max(worst, check(f"train {label}: {name}", got[name], t.numpy(), 1e-4, sd32[name].numpy()))
    got_m = read_safetensors(mom)
    worst_m = 0.0
    p32 = dict(m32.named_parameters())
    for name, prm in m.named_parameters():
        if not prm.requires_grad:
            continue
        buf = opt.state[prm]["momentum_buffer"].numpy()
        if name not in got_m:
            failures.append(f"train {label}: momentum of {name} missing")
            continue
        buf32 = opt32.state[p32[name]]["momentum_buffer"].numpy()
        worst_m = max(worst_m, check(f"train {label}: momentum {name}", got_m[name], buf, 1e-4, buf32))
    torch32 = max(rel(opt32.state[p32[n]]["momentum_buffer"].numpy(), opt.state[q]["momentum_buffer"].numpy())
                  for n, q in m.named_parameters() if q.requires_grad)
    print(f"{label}: {STEPS} SGD steps (data seed {seed}, branch margin {margin:.1e}): worst relative "
          f"error vs float64 {worst:.2e} over {len(got)} state tensors, {worst_m:.2e} over {len(got_m)} "
          f"momentum buffers (PyTorch float32: {torch32:.2e})")


with tempfile.TemporaryDirectory() as d:
    model = adapted_model(7)
    ckpt = os.path.join(d, "adapted.pth")
    torch.save(model.state_dict(), ckpt)

    # 1. Eval-mode logits.
    model.eval()
    with torch.no_grad():
        want_logits = model.double()(torch.from_numpy(test_x[:, None]).double()).numpy()
    for dev in DEVICES:
        logits_path = os.path.join(d, f"logits_{dev}.npy")
        p = subprocess.run([HANDGRAD, "transfer", "eval", "--device", dev, "--checkpoint", ckpt, "--limit", "64",
                            "--dump-logits", logits_path, "--data-dir", DATA], capture_output=True, text=True)
        if p.returncode != 0:
            failures.append(f"eval {dev}: rc={p.returncode} {p.stderr.strip()}")
            continue
        e = check(f"eval logits {dev}", np.load(logits_path), want_logits, 1e-4)
        print(f"{dev}: eval logits (64 test images) vs float64: relative error {e:.2e}")

    # 2. Three training steps, frozen backbone and full fine-tuning, on noise images.
    # The search starts at the first seeds found well-conditioned from 4901 with Debian's torch
    # 1.13 (4912 and 4924), and goes on past them where another torch initialises differently.
    for freeze, first_seed in (("backbone", 4912), ("none", 4924)):
        for seed in range(first_seed, first_seed + 60):
            noise_u8, noise_y = noise_data(seed)
            m, opt, margin = reference(freeze, noise_u8, noise_y)
            if margin > MARGIN:
                m32, opt32, _ = reference(freeze, noise_u8, noise_y, torch.float32)
                break
        else:
            failures.append(f"train {freeze}: no well-conditioned data seed found")
            continue
        noise_dir = os.path.join(d, f"noise_{freeze}")
        os.makedirs(noise_dir)
        write_idx(os.path.join(noise_dir, "train-images-idx3-ubyte.gz"), noise_u8)
        write_idx(os.path.join(noise_dir, "train-labels-idx1-ubyte.gz"), noise_y)
        write_idx(os.path.join(noise_dir, "t10k-images-idx3-ubyte.gz"), noise_u8[:4])
        write_idx(os.path.join(noise_dir, "t10k-labels-idx1-ubyte.gz"), noise_y[:4])
        for dev in DEVICES:
            out = os.path.join(d, f"trained_{freeze}_{dev}.safetensors")
            mom = os.path.join(d, f"momentum_{freeze}_{dev}.safetensors")
            p = subprocess.run([HANDGRAD, "transfer", "train", "--device", dev, "--checkpoint", ckpt, "--freeze", freeze,
                                "--batch-size", str(BATCH), "--epochs", str(STEPS), "--no-shuffle", "--no-eval",
                                "--no-plot", "--lr", "0.01", "--momentum", "0.9", "--log-every", "1", "--data-dir",
                                noise_dir, "--out-dir", os.path.join(d, "out"), "--save-checkpoint", out,
                                "--save-momentum", mom], capture_output=True, text=True)
            if p.returncode != 0:
                failures.append(f"train {freeze} {dev}: rc={p.returncode} {p.stderr.strip()}")
                continue
            compare_training(f"{dev} freeze {freeze}", out, mom, m, opt, m32, opt32, seed, margin)


for f in failures:
    print("FAIL", f)
print(f"oracle_transfer: torch {torch.__version__}, {len(failures)} failure(s)")
sys.exit(1 if failures else 0)
