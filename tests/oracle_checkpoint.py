#!/usr/bin/env python3
"""Checkpoint readers against files written by PyTorch itself: torch.save of a torchvision
ResNet18 state dict (pickle protocols 2 and 4, with a strided and an offset view added) and a
safetensors file written independently here. handgrad must read every tensor exactly; its own
safetensors output must read back exactly; and hostile files must be refused (exit 2, one line).
"""
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

try:
    import torch
    import torchvision
except ImportError:
    print("SKIP: torch/torchvision are not importable by", sys.executable)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(__file__))
from pyhelpers import read_safetensors  # noqa: E402

HANDGRAD = sys.argv[1]
failures = []


def run(args, want_rc=0):
    p = subprocess.run([HANDGRAD] + args, capture_output=True, text=True, timeout=120)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    if p.returncode != want_rc or (want_rc == 2 and len(lines) != 1):
        failures.append(f"{' '.join(args)}: rc={p.returncode} stderr={p.stderr.strip()[:300]}")
    elif want_rc == 2:
        print(f"ok   refused {os.path.basename(args[-1])}: {lines[0][:120]}")
    return p.stdout


def pth_of_pickle(pkl, storages=()):
    """A torch.save-style zip around a pickle, with storages archive/data/<key>."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        for key, data in storages:
            z.writestr(f"archive/data/{key}", data)
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def crafted_pth(key, numel, data, offset, shape, stride):
    """One float tensor 'w' over storage `key` as torch.save writes it, with any numel, offset,
    shape and stride (the pickle made by Python's pickler with torch's own globals)."""
    import collections
    import pickle

    class Storage:
        pass

    class View:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (storage, offset, shape, stride, False, collections.OrderedDict()))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, key, "cpu", numel) if obj is storage else None

    storage = Storage()
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(collections.OrderedDict([("w", View())]))
    return pth_of_pickle(buf.getvalue(), [(key, data)])


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        a = t.detach().contiguous().numpy()
        dt = {np.float32: "F32", np.int64: "I64"}[a.dtype.type]
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


torch.manual_seed(0)
sd = torchvision.models.resnet18().state_dict()
big = torch.randn(40)
sd["extra.transposed"] = torch.randn(3, 5).t()   # strides (1, 5)
sd["extra.offset_view"] = big[7:19].view(3, 4)    # storage offset 7
want = {k: v.detach().contiguous().numpy() for k, v in sd.items()}

with tempfile.TemporaryDirectory() as d:
    def path(n):
        return os.path.join(d, n)

    torch.save(sd, path("p2.pth"))
    torch.save(sd, path("p4.pth"), pickle_protocol=4)
    write_safetensors(path("ref.safetensors"), sd)
    for src in ("p2.pth", "p4.pth", "ref.safetensors"):
        listing = json.loads(run(["inspect", "--json", path(src)]) or "[]")
        names = [e["name"] for e in listing]
        if names != list(want):
            failures.append(f"{src}: names/order differ ({len(names)} vs {len(want)})")
        out = path(src + ".hg.safetensors")
        run(["convert", path(src), out])
        got = read_safetensors(out) if os.path.exists(out) else {}
        bad = [k for k in want if k not in got or got[k].shape != want[k].shape or not np.array_equal(got[k], want[k])]
        print(f"{'ok  ' if not bad else 'FAIL'} {src}: {len(got)} tensors read, {len(bad)} differ")
        if bad:
            failures.append(f"{src}: tensors differ: {bad[:5]}")

    # Hostile and broken files.
    good = open(path("p2.pth"), "rb").read()
    hostile = {}
    hostile["truncated.pth"] = good[: len(good) // 2]
    hostile["empty.pth"] = b""
    evil = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00lsq\x00\x85R."  # os.system('ls')
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", evil)
        z.writestr("archive/version", "3\n")
    hostile["os_system.pth"] = buf.getvalue()
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as zin, zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in zin.infolist():
            z.writestr(i.filename, zin.read(i.filename))
    hostile["deflated.pth"] = buf.getvalue()
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as zin, zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for i in zin.infolist():
            data = zin.read(i.filename)
            if i.filename.endswith("/data/0"):
                data = data[:-8]  # storage shorter than the pickle says
            z.writestr(i.filename, data)
    hostile["short_storage.pth"] = buf.getvalue()
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as zin, zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for i in zin.infolist():
            data = zin.read(i.filename)
            if i.filename.endswith("data.pkl"):
                data = data[: len(data) // 2]  # pickle cut in the middle
            z.writestr(i.filename, data)
    hostile["cut_pickle.pth"] = buf.getvalue()
    ref = open(path("ref.safetensors"), "rb").read()
    n = struct.unpack("<Q", ref[:8])[0]
    hostile["st_header_too_long.safetensors"] = struct.pack("<Q", 1 << 40) + ref[8:]
    hostile["st_truncated.safetensors"] = ref[: len(ref) - 100]
    hostile["st_not_json.safetensors"] = struct.pack("<Q", 5) + b"{{{{{" + ref[8 + n:]
    h = json.loads(ref[8:8 + n])
    first = next(k for k in h if k != "__metadata__")
    h2 = dict(h)
    h2[first] = dict(h[first], dtype="BF16")
    hb = json.dumps(h2).encode()
    hostile["st_bf16.safetensors"] = struct.pack("<Q", len(hb)) + hb + ref[8 + n:]
    h3 = dict(h)
    h3[first] = dict(h[first], data_offsets=[0, 10 ** 12])
    hb = json.dumps(h3).encode()
    hostile["st_offsets.safetensors"] = struct.pack("<Q", len(hb)) + hb + ref[8 + n:]
    # Crafted storages and views (the fuzzing findings of issue 10): a numel whose byte count
    # wraps to the storage's 12 bytes, strides and offsets whose extent overflows int64, a
    # pickle nesting 1,000,000 tuples, a list appended to itself through the memo.
    hostile["numel_wraps.pth"] = crafted_pth("0", 2 ** 62 + 3, b"\0" * 12, 0, (3,), (2 ** 40,))
    hostile["stride_overflows.pth"] = crafted_pth("0", 3, b"\0" * 12, 0, (3,), (2 ** 62,))
    hostile["offset_overflows.pth"] = crafted_pth("0", 3, b"\0" * 12, 2 ** 63 - 1, (2,), (1,))
    hostile["negative_stride.pth"] = crafted_pth("0", 3, b"\0" * 12, 2, (3,), (-1,))
    hostile["deep_tuples.pth"] = pth_of_pickle(b"\x80\x02N" + b"\x85" * 1000000 + b".")
    hostile["self_list.pth"] = pth_of_pickle(b"\x80\x02]q\x00h\x00a.")
    deep = b"[" * 100000 + b"]" * 100000
    hostile["st_deep_header.safetensors"] = struct.pack("<Q", len(deep)) + deep
    for name, content in hostile.items():
        with open(path(name), "wb") as f:
            f.write(content)
        run(["inspect", path(name)], want_rc=2)

for f in failures:
    print("FAIL", f)
print(f"oracle_checkpoint: torch {torch.__version__}, {len(failures)} failure(s)")
sys.exit(1 if failures else 0)
