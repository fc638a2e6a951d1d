#!/usr/bin/env python3
"""Q4: the forward- and reverse-mode tables as a PDF, one page per table, for the homework's
function, then the expanded formulation's trace and the answer to the optional question.

  plot_autodiff.py squared.json expanded.json question4.pdf
"""
import json
import re
import sys

from matplotlib.backends.backend_pdf import PdfPages

from plot_common import atomic_pdf, plt


TOKEN = re.compile(r"([vxy])([\u0307\u0304]?)_(\{-?\d+\}|\d+)")


def math(text):
    """Course notation as mathtext: v_{-1} -> $v_{-1}$, v̇_1 -> $\\dot{v}_{1}$, v̄_0 -> $\\bar{v}_{0}$."""
    def sub(m):
        base, accent, idx = m.group(1), m.group(2), m.group(3).strip("{}")
        if accent == "\u0307":
            base = r"\dot{%s}" % base
        elif accent == "\u0304":
            base = r"\bar{%s}" % base
        return "$%s_{%s}$" % (base, idx)
    return TOKEN.sub(sub, text).replace("\u00b7", r"$\cdot$").replace("^2", "$^2$")


def table_page(pdf, title, table, note=""):
    rows = table["rows"]
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(rows) + 1.6))
    ax.axis("off")
    fwd = table["mode"] == "forward"
    header = ["primal trace", "value", "tangent trace" if fwd else "adjoint trace", "value"]
    if not fwd:
        header.append("edge term")
    cells = []
    for r in rows:
        line = [math(r["primal"] or ""), "" if r["value"] is None else f"{r['value']:g}", math(r["derivative"]),
                f"{r['dvalue']:g}"]
        if not fwd:
            line.append("" if r.get("contribution") is None else f"{r['contribution']:g}")
        cells.append(line)
    t = ax.table(cellText=cells, colLabels=header, loc="center", cellLoc="left", colLoc="left")
    t.auto_set_font_size(False)
    t.set_fontsize(9)
    t.scale(1, 1.4)
    ax.set_title(math(title) + ("\n" + note if note else ""), fontsize=11)
    pdf.savefig(fig, bbox_inches="tight")
    plt.close(fig)


def main():
    sq, ex, out = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
    point = ", ".join(f"{v:g}" for v in sq["point"])
    with atomic_pdf(out) as tmp, PdfPages(tmp) as pdf:
        for t in sq["tables"]:
            table_page(pdf, f"Q4 {t['name']}", t, f"y1 = (x1 + x2)^2, y2 = (x1 - x2)^2 at ({point})")
        table_page(pdf, "Q4 (optional): the expanded formulation, forward mode, seed x1", ex["tables"][0],
                   "y1 = x1^2 + 2 x1 x2 + x2^2, y2 = x1^2 - 2 x1 x2 + x2^2")
        fig, ax = plt.subplots(figsize=(11, 4))
        ax.axis("off")
        text = (
            f"Jacobian at ({point}) from the squared form (forward and reverse): {sq['jacobian']}\n"
            f"Jacobian from the expanded form: {ex['jacobian']}\n\n"
            f"The traces differ: {sq['operations']} operations for (x1 +/- x2)^2, {ex['operations']} for the expanded\n"
            "polynomials, with other intermediates (x1^2, x2^2, x1 x2, 2 x1 x2, ...). The derivatives are the same:\n"
            "a Jacobian belongs to the function, not to the graph that computes it; rewriting the expression\n"
            "changes only the cost (more nodes, more adjoint updates) and the rounding, not the value.")
        ax.text(0.0, 0.5, text, fontsize=11, va="center", family="monospace")
        ax.set_title("Q4 (optional): does the formulation change the derivatives?", fontsize=12)
        pdf.savefig(fig, bbox_inches="tight")
        plt.close(fig)


if __name__ == "__main__":
    main()
