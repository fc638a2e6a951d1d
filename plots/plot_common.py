"""Shared helpers of the plot scripts: a headless backend and an atomic PDF save."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_pdf(fig, path):
    """Write the figure whole or not at all (temp file + rename)."""
    tmp = path + ".tmp.pdf"
    fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
