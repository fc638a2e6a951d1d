#!/usr/bin/env python3
"""Q3 speed: milliseconds per training step (forward, backward, SGD-momentum update) of the
adapted ResNet18 at batch 16 and 64, frozen backbone and full fine-tuning, handgrad next to
PyTorch eager on the same device in the same run.

  bench/compare_transfer.py --handgrad build/handgrad [--device cpu|cuda] [--steps 30] [--json F]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def handgrad_ms(hg, device, batch, freeze, steps, tmp):
    out = os.path.join(tmp, f"{batch}_{freeze}")
    cmd = [hg, "transfer", "train", "--weights", "none", "--device", device, "--batch-size", str(batch),
           "--freeze", freeze, "--max-steps", str(steps), "--no-eval", "--no-plot", "--out-dir", out]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"compare_transfer: {' '.join(cmd)} failed: {p.stderr.strip()[-500:]}")
    run = json.load(open(os.path.join(out, "q3_summary.json")))["runs"][0]
    return run["seconds"] / run["steps"] * 1e3


def torch_ms(device, batch, freeze, steps):
    import torch
    import torchvision
    m = torchvision.models.resnet18(num_classes=10)
    m.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    m = m.to(device).train()
    if freeze == "backbone":
        for name, p in m.named_parameters():
            p.requires_grad = name.startswith("conv1.") or name.startswith("fc.")
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    x = torch.rand(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()

    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--handgrad", default="build/handgrad")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--json")
    opt = ap.parse_args()
    import torch
    if opt.device == "cpu":
        torch.set_num_threads(os.cpu_count())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (16, 64):
            for freeze in ("backbone", "none"):
                ours = handgrad_ms(opt.handgrad, opt.device, batch, freeze, opt.steps, tmp)
                theirs = torch_ms(opt.device, batch, freeze, opt.steps)
                rows.append({"batch": batch, "freeze": freeze, "handgrad_ms": ours, "torch_ms": theirs,
                             "speedup": theirs / ours})
    print(f"\nQ3 ResNet18 training step on {opt.device} (torch {torch.__version__}, {os.cpu_count()} CPU threads)")
    print(f"{'batch':>5} {'freeze':>9} {'handgrad ms':>12} {'torch ms':>9} {'speedup':>8}")
    for r in rows:
        print(f"{r['batch']:5d} {r['freeze']:>9} {r['handgrad_ms']:12.1f} {r['torch_ms']:9.1f} {r['speedup']:7.2f}x")
    if opt.json:
        with open(opt.json + ".tmp", "w") as f:
            json.dump({"device": opt.device, "torch": torch.__version__, "rows": rows}, f, indent=1)
        os.replace(opt.json + ".tmp", opt.json)


if __name__ == "__main__":
    main()
