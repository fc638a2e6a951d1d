#!/usr/bin/env python3
"""handgrad vs torch.einsum, side by side, in one run on one device.

Runs bench_einsum (Google Benchmark, JSON out) for the chosen device and times torch.einsum on
exactly the same shapes, row by row: each row is one bench_einsum process for that benchmark
alone and then torch on its shape (the other way round every second round), so the two sides of
a row are measured seconds apart, on the same machine state. On a shared VM that matters: the
bandwidth on offer drifts by tens of percent over minutes, and a working set near the L3's size
(the 33.5 MB 'abcd->abd' row) is cache-hot in some minutes and not in others. It prints one
table with a speedup column (torch time / handgrad time: > 1 means handgrad is faster). With
--repeats N every row is measured N times; times are medians, the speedup is the median of the
N paired ratios.

  bench/compare_pytorch.py --bench build/bench/bench_einsum --device cpu
  bench/compare_pytorch.py --bench stage/bin/bench_einsum --device cuda --json out.json
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

EQUATIONS = {"mul": "abcd,abcd->abcd", "sum": "abcd->abd", "gemm": "abcd,ed->abce", "chain": "ij,jk,kl,lm,mn->in"}


def list_benchmarks(binary, device, extra_filter):
    cmd = [binary, f"--benchmark_filter=BM_{device}_" + (extra_filter or ""), "--benchmark_list_tests=true"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"compare_pytorch: {' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    names = [line.strip() for line in p.stdout.splitlines() if line.strip()]
    if not names:
        sys.exit(f"compare_pytorch: no benchmark matches BM_{device}_{extra_filter or ''}")
    return names


def run_bench(binary, name, min_time):
    """One benchmark, alone in its own process: its Google Benchmark JSON record."""
    cmd = [binary, f"--benchmark_filter=^{re.escape(name)}$", "--benchmark_format=json",
           f"--benchmark_min_time={min_time}"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"compare_pytorch: {' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout)["benchmarks"][0]


def parse_name(name):
    # BM_cuda_gemm/a:4/b:16/c:64/d:1024/e:1024/manual_time
    m = re.match(r"BM_(cpu|cuda)_(\w+)/(.*?)(/manual_time|/real_time)?$", name)
    dev, op, rest = m.group(1), m.group(2), m.group(3)
    args = dict((k, int(v)) for k, v in (kv.split(":") for kv in rest.split("/")))
    return dev, op, args


def torch_inputs(torch, op, args, device):
    g = torch.Generator(device="cpu").manual_seed(0)
    if op == "chain":
        n, s = args["n"], args["s"]
        return [torch.randn(shape, generator=g).to(device) for shape in ((n, s), (s, n), (n, n), (n, s), (s, n))]
    shape = (args["a"], args["b"], args["c"], args["d"])
    a = torch.randn(shape, generator=g).to(device)
    if op == "mul":
        return [a, torch.randn(shape, generator=g).to(device)]
    if op == "gemm":
        return [a, torch.randn((args["e"], args["d"]), generator=g).to(device)]
    return [a]


def time_torch(torch, eq, inputs, device, min_time):
    """Mean milliseconds per call, as Google Benchmark reports handgrad's side (a per-call median
    would drop torch's slow tail but not ours: on the 16 MB product torch's median CPU call is
    ~10% below its mean). On the GPU, CUDA-event time per call, as handgrad's manual time."""
    fn = lambda: torch.einsum(eq, *inputs)
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        t_end = time.perf_counter() + min_time
        while time.perf_counter() < t_end or len(times) < 10:
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        return statistics.mean(times)
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time and calls >= 5:
            return elapsed / calls * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default="build/bench/bench_einsum")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--filter", default="", help="extra benchmark filter after BM_<device>_")
    ap.add_argument("--repeats", type=int, default=3, help="paired runs of both sides per row; medians are shown")
    ap.add_argument("--json", help="write the rows here")
    opt = ap.parse_args()
    try:
        import torch
    except ImportError:
        sys.exit("compare_pytorch: torch is not importable (install python3-torch)")
    if opt.device == "cuda" and not torch.cuda.is_available():
        sys.exit("compare_pytorch: torch sees no CUDA device")
    if opt.device == "cpu":
        torch.set_num_threads(os.cpu_count())  # the same threads handgrad's OpenMP uses

    if opt.repeats < 1:
        sys.exit("compare_pytorch: --repeats must be positive")
    names = list_benchmarks(opt.bench, opt.device, opt.filter)
    samples = {name: [] for name in names}
    for rnd in range(opt.repeats):
        for name in names:
            if samples[name] is None:
                continue  # the benchmark refused this shape in an earlier round
            row = measure_row(torch, opt, name, torch_first=rnd % 2 == 1)
            samples[name] = None if row is None else samples[name] + [row]
    rows = []
    for name in names:
        runs = samples[name]
        if not runs:
            continue
        row = dict(runs[0])
        for key in ("handgrad_ms", "torch_ms", "torch_opt_einsum_ms", "GB/s", "TFLOP/s", "pct_of_copy", "pct_of_cublas"):
            if row.get(key) is not None:
                row[key] = statistics.median(r[key] for r in runs)
        row["speedup"] = statistics.median(r["torch_ms"] / r["handgrad_ms"] for r in runs)
        if row.get("torch_opt_einsum_ms"):
            row["speedup_vs_opt_einsum"] = statistics.median(r["torch_opt_einsum_ms"] / r["handgrad_ms"] for r in runs)
        rows.append(row)
    print_table(torch, opt, rows)


def measure_row(torch, opt, name, torch_first):
    """One benchmark and torch on its shape, back to back: the row, or None if the benchmark
    refused the shape (too large for this device)."""
    dev, op, args = parse_name(name)
    inputs = torch_inputs(torch, op, args, opt.device)
    oe = getattr(torch.backends, "opt_einsum", None)  # torch >= 1.13; None: always left to right

    def torch_side():
        if op == "chain" and oe is not None:
            # torch's order without opt_einsum (left to right), and with it when it is installed
            oe.enabled = False
            plain = time_torch(torch, EQUATIONS[op], inputs, opt.device, opt.min_time)
            oe.enabled = True
            with_oe = time_torch(torch, EQUATIONS[op], inputs, opt.device, opt.min_time) if oe.is_available() else None
            return plain, with_oe
        return time_torch(torch, EQUATIONS[op], inputs, opt.device, opt.min_time), None

    if torch_first:  # (from the second round on, when the benchmark has run this shape once)
        torch_ms, torch_opt_ms = torch_side()
    b = run_bench(opt.bench, name, opt.min_time)
    if b.get("error_occurred"):
        print(f"skip {name}: {b.get('error_message')}")
        return None
    if not torch_first:
        torch_ms, torch_opt_ms = torch_side()
    del inputs
    if opt.device == "cuda":
        torch.cuda.empty_cache()
    unit = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
    ours_ms = b["real_time"] * unit
    row = {"op": op, "equation": EQUATIONS[op], "shape": args, "handgrad_ms": ours_ms,
           "torch_ms": torch_ms, "speedup": torch_ms / ours_ms}
    if op == "chain":
        row["torch_opt_einsum_ms"] = torch_opt_ms
        row["speedup_vs_opt_einsum"] = torch_opt_ms / ours_ms if torch_opt_ms else None
    for k in ("GB/s", "TFLOP/s", "pct_of_copy", "pct_of_cublas"):
        if k in b:
            row[k] = b[k]
    return row


def print_table(torch, opt, rows):
    dev_name = torch.cuda.get_device_name() if opt.device == "cuda" else f"CPU x{os.cpu_count()}"
    print(f"\nhandgrad vs torch {torch.__version__} einsum on {dev_name} (medians of {opt.repeats} paired runs per row)")
    print(f"{'equation':17} {'shape':28} {'handgrad ms':>11} {'rate':>14} {'of ceiling':>10}"
          f" {'torch ms':>10} {'speedup':>8}")
    for r in rows:
        shape = "x".join(str(v) for v in r["shape"].values())
        if "TFLOP/s" in r:
            rate = f"{r['TFLOP/s']:.2f} TFLOP/s"
        elif "GB/s" in r:
            rate = f"{r['GB/s']:.1f} GB/s"
        else:
            rate = "-"
        ceil = r.get("pct_of_copy", r.get("pct_of_cublas"))
        ceil = f"{ceil:.0f}%" if ceil is not None else "-"
        print(f"{r['equation']:17} {shape:28} {r['handgrad_ms']:11.4f} {rate:>14} {ceil:>10}"
              f" {r['torch_ms']:10.4f} {r['speedup']:7.2f}x")
        if r["op"] == "chain":
            oe = r["torch_opt_einsum_ms"]
            print(f"{'':17} {'(torch with opt_einsum)':28} {'':11} {'':>14} {'':>10} "
                  + (f"{oe:10.4f} {r['speedup_vs_opt_einsum']:7.2f}x" if oe else "  opt_einsum not installed"))
    if opt.json:
        with open(opt.json + ".tmp", "w") as f:
            json.dump({"device": dev_name, "torch": torch.__version__, "rows": rows}, f, indent=1)
        os.replace(opt.json + ".tmp", opt.json)


if __name__ == "__main__":
    main()
