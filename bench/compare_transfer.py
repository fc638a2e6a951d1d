#!/usr/bin/env python3
"""Q3 speed: milliseconds per training step (forward, backward, SGD-momentum update) of the
adapted ResNet18 at batch 16 and 64, frozen backbone and full fine-tuning, handgrad next to
PyTorch eager on the same device in the same run.

Both are timed the same way: WARMUP steps first (cuDNN handles and plans, lazy module loading,
allocator growth), then STEPS steps between two device synchronisations. Both run FP32
convolutions unless --tf32, which lets both use TF32 tensor cores (PyTorch's own default for
cuDNN convolutions is TF32: it is switched off here for the FP32 rows).

  bench/compare_transfer.py --handgrad build/handgrad [--device cpu|cuda] [--steps 30] [--tf32] [--cuda-graph] [--json F]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

WARMUP = 5  # handgrad's own: ms_per_step_after_warmup in q3_summary.json leaves out its first 5 steps


def handgrad_ms(hg, device, batch, freeze, steps, tf32, graph, tmp):
    out = os.path.join(tmp, f"{batch}_{freeze}")
    cmd = [hg, "transfer", "train", "--weights", "none", "--device", device, "--batch-size", str(batch),
           "--freeze", freeze, "--max-steps", str(WARMUP + steps), "--no-eval", "--no-plot", "--out-dir", out]
    if tf32:
        cmd.append("--tf32")
    if graph:
        cmd.append("--cuda-graph")
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"compare_transfer: {' '.join(cmd)} failed: {p.stderr.strip()[-500:]}")
    return json.load(open(os.path.join(out, "q3_summary.json")))["runs"][0]["ms_per_step_after_warmup"]


def torch_ms(device, batch, freeze, steps, tf32):
    import torch
    import torchvision
    torch.backends.cudnn.allow_tf32 = tf32        # convolutions, as handgrad's --tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # handgrad's fc GEMM is FP32 either way
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

    for _ in range(WARMUP):
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
    ap.add_argument("--tf32", action="store_true", help="TF32 convolutions in both (GPU)")
    ap.add_argument("--cuda-graph", action="store_true", help="handgrad replays each step from a CUDA graph (GPU)")
    ap.add_argument("--json")
    opt = ap.parse_args()
    import torch
    if opt.device == "cpu":
        torch.set_num_threads(os.cpu_count())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (16, 64):
            for freeze in ("backbone", "none"):
                ours = handgrad_ms(opt.handgrad, opt.device, batch, freeze, opt.steps, opt.tf32, opt.cuda_graph, tmp)
                theirs = torch_ms(opt.device, batch, freeze, opt.steps, opt.tf32)
                rows.append({"batch": batch, "freeze": freeze, "handgrad_ms": ours, "torch_ms": theirs,
                             "speedup": theirs / ours})
    precision = "TF32" if opt.tf32 and opt.device == "cuda" else "FP32"
    if opt.cuda_graph and opt.device == "cuda":
        precision += ", handgrad steps replayed from a CUDA graph"
    print(f"\nQ3 ResNet18 training step on {opt.device}, {precision} in both, {WARMUP} warm-up steps then "
          f"{opt.steps} timed (torch {torch.__version__}, {os.cpu_count()} CPU threads)")
    print(f"{'batch':>5} {'freeze':>9} {'handgrad ms':>12} {'torch ms':>9} {'speedup':>8}")
    for r in rows:
        print(f"{r['batch']:5d} {r['freeze']:>9} {r['handgrad_ms']:12.1f} {r['torch_ms']:9.1f} {r['speedup']:7.2f}x")
    if opt.json:
        with open(opt.json + ".tmp", "w") as f:
            json.dump({"device": opt.device, "precision": precision, "torch": torch.__version__, "rows": rows}, f, indent=1)
        os.replace(opt.json + ".tmp", opt.json)


if __name__ == "__main__":
    main()
