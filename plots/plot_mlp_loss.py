#!/usr/bin/env python3
"""Q2: training loss against iteration, log scale, one curve per learning rate: the logged
points (faint) and their moving average (solid). Diverged runs end where they diverged.

  plot_mlp_loss.py mlp_loss.csv question2_result.pdf "title"
"""
import csv
import math
import sys

from plot_common import plt, save_pdf


def main():
    csv_path, pdf_path, title = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(csv_path) as f:
        rows = list(csv.reader(f))
    header, data = rows[0], rows[1:]
    iters = [int(r[0]) for r in data]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    window = max(1, len(data) // 50)
    for col in range(1, len(header)):
        pts = [(it, float(r[col])) for it, r in zip(iters, data)
               if r[col] not in ("", "nan") and math.isfinite(float(r[col])) and float(r[col]) > 0]
        if not pts:
            ax.plot([], [], label=f"{header[col]} (diverged at once)")
            continue
        xs, ys = zip(*pts)
        line, = ax.plot(xs, ys, ".", markersize=2, alpha=0.25)
        avg = [sum(ys[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(ys))]
        diverged = len(pts) < len(data)
        ax.plot(xs, avg, color=line.get_color(), linewidth=1.8,
                label=f"{header[col]}" + (" (diverged)" if diverged else f" (moving avg of {window})"))
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss (squared error, one sample)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save_pdf(fig, pdf_path)


if __name__ == "__main__":
    main()
