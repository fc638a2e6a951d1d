#!/usr/bin/env python3
"""Q3 speed: the adapted ResNet18's training step (forward, backward, SGD-momentum update) at batch
16 and 64, frozen backbone and full fine-tuning, handgrad next to PyTorch eager on the same device.

Every measurement is a whole process, started fresh: handgrad's `transfer train` and a PyTorch
worker (this script with --torch-worker) that does the same work the same way: it loads the real
FashionMNIST into one tensor, draws each batch from a shuffled order, runs WARMUP steps (cuDNN or
oneDNN plans, lazy loading, allocator growth) and then STEPS timed ones. The two alternate, ROUNDS
times (who goes first alternates too), and the medians are reported twice:
  - per step: each process's own steady ms/step (handgrad: q3_summary.json's
    ms_per_step_after_warmup; the worker: the same stretch, timed the same way);
  - whole process: wall time from start to exit (start-up, data loading, warm-up and the steps),
    and peak resident memory (the kernel's ru_maxrss of that process, from wait4).
Both run FP32 convolutions unless --tf32 (GPU), which lets both use TF32 tensor cores.

  bench/compare_transfer.py --handgrad build/handgrad [--device cpu|cuda] [--steps 30] [--rounds 3]
                            [--batch-sizes 16,64] [--tf32] [--cuda-graph] [--json F]
"""
import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

WARMUP = 5  # handgrad's own: ms_per_step_after_warmup in q3_summary.json leaves out its first 5 steps
DATA_DIRS = [os.environ.get("HANDGRAD_DATA", ""), "/usr/share/datasets/fashion-mnist", "data/fashion-mnist"]


def run_measured(cmd):
    """Runs cmd; returns (returncode, stdout, stderr, wall seconds, peak RSS in MB) of that process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return p.returncode, out.read().decode(), err.read().decode(), wall, usage.ru_maxrss / 1024


def find_data():
    for d in DATA_DIRS:
        if d and os.path.exists(os.path.join(d, "train-images-idx3-ubyte.gz")):
            return d
    sys.exit("compare_transfer: FashionMNIST not found (apt-get install dataset-fashion-mnist, or $HANDGRAD_DATA)")


def handgrad_run(hg, device, batch, freeze, steps, tf32, graph, tmp):
    out = os.path.join(tmp, f"{batch}_{freeze}")
    cmd = [hg, "transfer", "train", "--weights", "none", "--device", device, "--batch-size", str(batch),
           "--freeze", freeze, "--max-steps", str(WARMUP + steps), "--no-eval", "--no-plot", "--out-dir", out]
    if tf32:
        cmd.append("--tf32")
    if graph:
        cmd.append("--cuda-graph")
    rc, _, err, wall, rss = run_measured(cmd)
    if rc != 0:
        sys.exit(f"compare_transfer: {' '.join(cmd)} failed: {err.strip()[-500:]}")
    with open(os.path.join(out, "q3_summary.json")) as f:
        return json.load(f)["runs"][0]["ms_per_step_after_warmup"], wall, rss


def torch_run(device, batch, freeze, steps, tf32):
    cmd = [sys.executable, os.path.abspath(__file__), "--torch-worker", "--device", device, "--batch", str(batch),
           "--freeze", freeze, "--steps", str(steps)] + (["--tf32"] if tf32 else [])
    rc, out, err, wall, rss = run_measured(cmd)
    if rc != 0:
        sys.exit(f"compare_transfer: the PyTorch worker failed: {err.strip()[-500:]}")
    return json.loads(out.strip().splitlines()[-1])["ms_per_step"], wall, rss


def torch_model(device, freeze):
    """The adapted ResNet18 (1-channel conv1, 10 classes) in train mode and its SGD-momentum
    optimizer over what trains: conv1 and fc with the backbone frozen, everything otherwise."""
    import torch
    import torchvision
    m = torchvision.models.resnet18(num_classes=10)
    m.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    m = m.to(device).train()
    if freeze == "backbone":
        for name, p in m.named_parameters():
            p.requires_grad = name.startswith("conv1.") or name.startswith("fc.")
    return m, torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01, momentum=0.9)


def torch_worker(device, batch, freeze, steps, tf32):
    """What a PyTorch user writes for Q3, with the data held in memory as handgrad holds it."""
    import numpy as np
    import torch
    if device == "cpu":
        torch.set_num_threads(os.cpu_count())
    torch.backends.cudnn.allow_tf32 = tf32        # convolutions, as handgrad's --tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # handgrad's fc GEMM is FP32 either way
    d = find_data()
    with gzip.open(os.path.join(d, "train-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(os.path.join(d, "train-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    images = torch.from_numpy(images.astype(np.float32) / 255).to(device)
    labels = torch.from_numpy(labels.astype(np.int64)).to(device)
    m, opt = torch_model(device, freeze)
    order = torch.randperm(images.shape[0], device=device)

    def step(i):
        idx = order[i * batch:(i + 1) * batch]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(images[idx]), labels[idx]).backward()
        opt.step()

    for i in range(WARMUP):
        step(i)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(WARMUP, WARMUP + steps):
        step(i)
    if device == "cuda":
        torch.cuda.synchronize()
    print(json.dumps({"ms_per_step": (time.perf_counter() - t0) / steps * 1e3}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--handgrad", default="build/handgrad")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each; medians are reported")
    ap.add_argument("--batch-sizes", default="16,64", help="comma-separated batch sizes (default 16,64)")
    ap.add_argument("--tf32", action="store_true", help="TF32 convolutions in both (GPU)")
    ap.add_argument("--cuda-graph", action="store_true", help="handgrad replays each step from a CUDA graph (GPU)")
    ap.add_argument("--json")
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--freeze", help=argparse.SUPPRESS)
    opt = ap.parse_args()
    if opt.torch_worker:
        return torch_worker(opt.device, opt.batch, opt.freeze, opt.steps, opt.tf32)
    if opt.steps < 1 or opt.rounds < 1:
        sys.exit("compare_transfer: --steps and --rounds must be positive")
    try:
        batch_sizes = [int(b) for b in opt.batch_sizes.split(",")]
    except ValueError:
        batch_sizes = []
    if not batch_sizes or min(batch_sizes) < 1:
        sys.exit(f"compare_transfer: --batch-sizes must be positive integers, got {opt.batch_sizes!r}")
    find_data()
    import torch
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in batch_sizes:
            for freeze in ("backbone", "none"):
                ours, theirs = [], []
                for r in range(opt.rounds):
                    run_ours = lambda: ours.append(handgrad_run(opt.handgrad, opt.device, batch, freeze, opt.steps,
                                                                opt.tf32, opt.cuda_graph, tmp))
                    run_theirs = lambda: theirs.append(torch_run(opt.device, batch, freeze, opt.steps, opt.tf32))
                    for run in ((run_ours, run_theirs) if r % 2 == 0 else (run_theirs, run_ours)):
                        run()
                med = lambda xs, i: statistics.median(x[i] for x in xs)
                row = {"batch": batch, "freeze": freeze,
                       "handgrad_ms": med(ours, 0), "torch_ms": med(theirs, 0),
                       "handgrad_process_s": med(ours, 1), "torch_process_s": med(theirs, 1),
                       "handgrad_peak_rss_mb": med(ours, 2), "torch_peak_rss_mb": med(theirs, 2),
                       "handgrad_ms_runs": [x[0] for x in ours], "torch_ms_runs": [x[0] for x in theirs]}
                row["speedup"] = row["torch_ms"] / row["handgrad_ms"]
                row["process_speedup"] = row["torch_process_s"] / row["handgrad_process_s"]
                row["rss_ratio"] = row["handgrad_peak_rss_mb"] / row["torch_peak_rss_mb"]
                rows.append(row)
                print(f"[compare_transfer] batch {batch} {freeze}: handgrad {row['handgrad_ms']:.1f} ms/step, "
                      f"torch {row['torch_ms']:.1f}", file=sys.stderr)
    precision = "TF32" if opt.tf32 and opt.device == "cuda" else "FP32"
    if opt.cuda_graph and opt.device == "cuda":
        precision += ", handgrad steps replayed from a CUDA graph"
    print(f"\nQ3 ResNet18 training on {opt.device}, {precision} in both; whole processes, {WARMUP} warm-up + "
          f"{opt.steps} timed steps each, median of {opt.rounds} alternating runs (torch {torch.__version__}, "
          f"{os.cpu_count()} CPU threads)")
    print(f"{'batch':>5} {'freeze':>9} | {'handgrad ms':>11} {'torch ms':>9} {'speedup':>8} | "
          f"{'handgrad s':>10} {'torch s':>8} {'speedup':>8} | {'handgrad MB':>11} {'torch MB':>9} {'ratio':>6}")
    print(f"{'':>15} | {'per step (steady)':^30} | {'whole process':^28} | {'peak RSS':^28}")
    for r in rows:
        print(f"{r['batch']:5d} {r['freeze']:>9} | {r['handgrad_ms']:11.1f} {r['torch_ms']:9.1f} {r['speedup']:7.2f}x | "
              f"{r['handgrad_process_s']:10.2f} {r['torch_process_s']:8.2f} {r['process_speedup']:7.2f}x | "
              f"{r['handgrad_peak_rss_mb']:11.0f} {r['torch_peak_rss_mb']:9.0f} {r['rss_ratio']:6.2f}")
    if opt.json:
        with open(opt.json + ".tmp", "w") as f:
            json.dump({"device": opt.device, "precision": precision, "torch": torch.__version__, "steps": opt.steps,
                       "rounds": opt.rounds, "rows": rows}, f, indent=1)
        os.replace(opt.json + ".tmp", opt.json)


if __name__ == "__main__":
    main()
