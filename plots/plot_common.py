"""Shared helpers of the plot scripts: a headless backend, an atomic PDF save, and a quiet end on
the stop signals handgrad passes on."""
import atexit
import contextlib
import os
import signal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_stopped_by = 0


def _stop(signum, frame):
    """SIGINT/SIGTERM/SIGHUP (passed on by handgrad): unwind through `finally` (no half-written
    temporary stays), print no traceback on handgrad's stderr, then end by the signal itself."""
    global _stopped_by
    _stopped_by = signum
    raise SystemExit(128 + signum)


def _end_by_the_signal():
    if _stopped_by:
        signal.signal(_stopped_by, signal.SIG_DFL)
        os.kill(os.getpid(), _stopped_by)


for _sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    if signal.getsignal(_sig) is not signal.SIG_IGN:  # ignored (nohup) stays ignored
        signal.signal(_sig, _stop)
atexit.register(_end_by_the_signal)


@contextlib.contextmanager
def atomic_pdf(path):
    """A temporary name to write the PDF to: renamed to `path` when the block ends normally,
    removed when it does not, so `path` is written whole or not at all."""
    tmp = path + ".tmp.pdf"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_pdf(fig, path):
    """Write the figure whole or not at all."""
    with atomic_pdf(path) as tmp:
        fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
