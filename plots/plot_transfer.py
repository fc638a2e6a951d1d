#!/usr/bin/env python3
"""Q3: training loss against samples seen (one curve per configuration) and test accuracy per
epoch.

  plot_transfer.py train_loss.csv test.csv question3_result.pdf "title"
"""
import csv
import sys
from collections import defaultdict

from plot_common import plt, save_pdf


def main():
    loss_csv, test_csv, pdf, title = sys.argv[1:5]
    curves, acc = defaultdict(list), defaultdict(list)
    for r in csv.DictReader(open(loss_csv)):
        curves[r["config"]].append((int(r["samples_seen"]), float(r["train_loss"])))
    for r in csv.DictReader(open(test_csv)):
        acc[r["config"]].append((int(r["epoch"]), 100 * float(r["test_accuracy"])))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [2.2, 1]})
    for cfg, pts in curves.items():
        xs, ys = zip(*pts)
        ax1.plot(xs, ys, linewidth=1.2, label=cfg)
    ax1.set_xlabel("training samples seen")
    ax1.set_ylabel("training loss (cross-entropy, mean of each logging window)")
    ax1.set_yscale("log")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=7)
    for cfg, pts in acc.items():
        xs, ys = zip(*pts)
        ax2.plot(xs, ys, "o-", label=cfg)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("test accuracy (%)")
    ax2.grid(True, alpha=0.3)
    if not acc:
        ax2.text(0.5, 0.5, "no evaluation (--no-eval)", ha="center", transform=ax2.transAxes)
    fig.suptitle(title, fontsize=10)
    save_pdf(fig, pdf)


if __name__ == "__main__":
    main()
