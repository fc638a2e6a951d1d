#!/usr/bin/env python3
"""Q5: the FC-layer gradient derivation, typeset with matplotlib's mathtext (no LaTeX needed),
and the gradient-check table.

  plot_fc_gradient.py q5_gradcheck.txt question5.pdf
"""
import os
import sys

from matplotlib.backends.backend_pdf import PdfPages

from plot_common import atomic_pdf, plt

LINES = [
    (r"Q5: the gradient of a fully connected layer", 15),
    (r"$Y = XW,\quad X \in \mathbb{R}^{N\times D},\ W \in \mathbb{R}^{D\times H},\ Y \in \mathbb{R}^{N\times H}$; a scalar loss $L(Y)$.", 12),
    (r"Index notation: $Y_{nh} = \sum_{d} X_{nd}\,W_{dh}$", 12),
    (r"Chain rule: $\dfrac{\partial L}{\partial W_{ij}} = \sum_{n}\sum_{h} \dfrac{\partial L}{\partial Y_{nh}}\,\dfrac{\partial Y_{nh}}{\partial W_{ij}}$", 12),
    (r"$\dfrac{\partial Y_{nh}}{\partial W_{ij}} = \sum_{d} X_{nd}\,\delta_{di}\,\delta_{hj} = X_{ni}\,\delta_{hj}$", 12),
    (r"so only $h = j$ survives: $\dfrac{\partial L}{\partial W_{ij}} = \sum_{n} X_{ni}\,\dfrac{\partial L}{\partial Y_{nj}} = \sum_{n} (X^{\top})_{in} \left(\dfrac{\partial L}{\partial Y}\right)_{nj}$", 12),
    (r"Matrix form: $\dfrac{\partial L}{\partial W} = X^{\top}\,\dfrac{\partial L}{\partial Y}$   $(D\times N)(N\times H) = D\times H$, the shape of $W$", 13),
    (r"Likewise, with $\partial Y_{nh}/\partial X_{ij} = \delta_{ni} W_{jh}$:   $\dfrac{\partial L}{\partial X} = \dfrac{\partial L}{\partial Y}\,W^{\top}$   $(N\times H)(H\times D)$", 13),
    (r"One sample ($N = 1$, Q2): an outer product $x^{\top}\,\partial L/\partial y$; a batch sums the per-sample outer products.", 11),
]


def main():
    check, out = sys.argv[1], sys.argv[2]
    with atomic_pdf(out) as tmp, PdfPages(tmp) as pdf:
        fig = plt.figure(figsize=(11, 8.5))
        y = 0.95
        for text, size in LINES:
            fig.text(0.05, y, text, fontsize=size, va="top")
            y -= 0.075 if size >= 12 else 0.055
        fig.text(0.05, y - 0.02, "Numerical check (handgrad gradcheck):", fontsize=12, va="top")
        body = open(check).read() if os.path.exists(check) else "(not run)"
        fig.text(0.05, y - 0.06, body, fontsize=7.5, va="top", family="monospace")
        pdf.savefig(fig)
        plt.close(fig)


if __name__ == "__main__":
    main()
