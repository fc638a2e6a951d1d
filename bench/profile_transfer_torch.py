#!/usr/bin/env python3
"""Where PyTorch's Q3 training step spends its time, grouped into the layer families that
`handgrad transfer train --profile` reports, so the two tables can be read side by side.

torch.profiler's self time per ATen operator over STEPS forward + backward passes after WARMUP
steps, divided by STEPS; the SGD step (whose in-place adds would mix with the residual adds) is
timed on its own, STEPS times. PyTorch runs one convolution backward operator for both
gradients, so "conv backward" is data and filter together; autograd's own bookkeeping lands
in "other".

  bench/profile_transfer_torch.py [--batch 64] [--freeze backbone|none] [--steps 20]
"""
import argparse
import os
import time

WARMUP = 5
FAMILIES = [  # (family, operator names, matched by prefix)
    ("conv forward", ["aten::mkldnn_convolution", "aten::thnn_conv2d", "aten::_slow_conv2d_forward"]),
    ("batchnorm forward", ["aten::native_batch_norm"]),
    ("relu / add", ["aten::relu", "aten::clamp_min", "aten::add", "aten::threshold_backward"]),
    ("pooling", ["aten::max_pool2d", "aten::adaptive_avg_pool2d", "aten::mean", "aten::avg_pool2d"]),
    ("fc + loss", ["aten::addmm", "aten::mm", "aten::linear", "aten::log_softmax", "aten::_log_softmax", "aten::nll_loss",
                   "aten::cross_entropy", "aten::t", "aten::sum"]),
    ("batchnorm backward", ["aten::native_batch_norm_backward"]),
    ("conv backward (data + filter)", ["aten::convolution_backward"]),
    ("zero_grad", ["aten::zero_", "aten::fill_"]),
]


def family_of(name):
    # backward operators first: "aten::native_batch_norm" is a prefix of its backward's name
    for fam, prefixes in sorted(FAMILIES, key=lambda f: -max(len(p) for p in f[1])):
        if any(name.startswith(p) for p in prefixes):
            return fam
    return "other (autograd, allocation, views)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--freeze", choices=["backbone", "none"], default="backbone")
    ap.add_argument("--steps", type=int, default=20)
    opt = ap.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    from compare_transfer import torch_model  # beside this script
    torch.set_num_threads(os.cpu_count())
    m, sgd = torch_model("cpu", opt.freeze)  # the same model and optimizer compare_transfer.py times
    x = torch.rand(opt.batch, 1, 28, 28)
    y = torch.randint(0, 10, (opt.batch,))

    def forward_backward():
        sgd.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()

    for _ in range(WARMUP):
        forward_backward()
        sgd.step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(opt.steps):
            forward_backward()
    totals = {}
    for e in prof.key_averages():
        fam = family_of(e.key)
        totals[fam] = totals.get(fam, 0.0) + e.self_cpu_time_total / 1e3 / opt.steps
    t0 = time.perf_counter()
    for _ in range(opt.steps):
        sgd.step()
    totals["sgd"] = (time.perf_counter() - t0) * 1e3 / opt.steps
    everything = sum(totals.values())
    print(f"PyTorch {torch.__version__}, batch {opt.batch}, freeze {opt.freeze}: ms per step by family "
          f"(profiled, {opt.steps} steps; {os.cpu_count()} threads)")
    for fam, _ in FAMILIES + [("sgd", None), ("other (autograd, allocation, views)", None)]:
        if fam in totals:
            print(f"  {fam:<36} {totals[fam]:8.2f}  {100 * totals[fam] / everything:5.1f}%")
    print(f"  {'(in all)':<36} {everything:8.2f}")


if __name__ == "__main__":
    main()
