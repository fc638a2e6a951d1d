"""Small readers shared by the Python tests (kept independent of handgrad's own code)."""
import gzip
import json
import os
import struct

import numpy as np

FASHION_DIRS = [os.environ.get("HANDGRAD_DATA", ""), "/usr/share/datasets/fashion-mnist", "data/fashion-mnist"]


def read_safetensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for name, e in h.items():
        if name == "__metadata__":
            continue
        lo, hi = e["data_offsets"]
        dt = {"F32": np.float32, "I64": np.int64}[e["dtype"]]
        out[name] = np.frombuffer(b[8 + n + lo:8 + n + hi], dtype=dt).reshape(e["shape"])
    return out


def fashion_dir():
    for d in FASHION_DIRS:
        if d and os.path.exists(os.path.join(d, "t10k-images-idx3-ubyte.gz")):
            return d
    return None


def read_idx(path):
    b = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    magic, count = struct.unpack(">II", b[:8])
    if magic == 2051:
        rows, cols = struct.unpack(">II", b[8:16])
        return np.frombuffer(b[16:], dtype=np.uint8).reshape(count, rows, cols)
    return np.frombuffer(b[8:], dtype=np.uint8)
