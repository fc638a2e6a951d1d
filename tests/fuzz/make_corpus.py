#!/usr/bin/env python3
"""Seed corpus for the fuzz targets (tests/fuzz/fuzz_<name>.cpp), one folder per target: small
valid inputs of every kind the parsers accept, and the reproducers of every finding so far
(issue 10), made here rather than downloaded. Standard library only.

  make_corpus.py OUT_DIR
"""
import gzip
import io
import os
import pickle
import struct
import sys
import types
import zipfile
from collections import OrderedDict

out = sys.argv[1]


def put(target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# --- .npy -------------------------------------------------------------------------------------
def npy(descr, shape, payload, version=1):
    h = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    pre = 10 if version == 1 else 12
    h += " " * ((64 - (pre + len(h) + 1) % 64) % 64) + "\n"
    size = len(h).to_bytes(2 if version == 1 else 4, "little")
    return b"\x93NUMPY" + bytes([version, 0]) + size + h.encode() + payload


put("npy", "f4_2x3", npy("<f4", "(2, 3)", struct.pack("<6f", *range(6))))
put("npy", "f8_3", npy("<f8", "(3,)", struct.pack("<3d", 1, 2, 3)))
put("npy", "i8_scalar", npy("<i8", "()", struct.pack("<q", 7)))
put("npy", "i4_v2", npy("<i4", "(2, 2)", struct.pack("<4i", 1, 2, 3, 4), version=2))
put("npy", "empty_0x3", npy("<f4", "(0, 3)", b""))
put("npy", "zero_then_huge", npy("<f4", "(0, 4294967295, 4294967295)", b""))
put("npy", "fortran", npy("<f4", "(2,)", b"\0" * 8).replace(b"False", b"True "))

# --- IDX --------------------------------------------------------------------------------------
images = struct.pack(">IIII", 2051, 2, 3, 3) + bytes(range(18))
labels = struct.pack(">II", 2049, 2) + bytes([1, 9])
put("idx", "images", images)
put("idx", "images_gz", gzip.compress(images))
put("idx", "labels", labels)
put("idx", "labels_gz", gzip.compress(labels))
put("idx", "zero_images_huge_side", struct.pack(">IIII", 2051, 0, 0xFFFFFFFF, 0xFFFFFFFF))
put("idx", "cut_gzip", gzip.compress(images)[:-6])


# --- torch.save archives and pickles (torch-free: stand-in modules give the pickler torch's
# --- global names) -----------------------------------------------------------------------------
torch_mod, utils_mod = types.ModuleType("torch"), types.ModuleType("torch._utils")


def _rebuild_tensor_v2(*args):
    pass


class FloatStorage:
    pass


_rebuild_tensor_v2.__module__, FloatStorage.__module__ = "torch._utils", "torch"
utils_mod._rebuild_tensor_v2, torch_mod.FloatStorage, torch_mod._utils = _rebuild_tensor_v2, FloatStorage, utils_mod
sys.modules.setdefault("torch", torch_mod)
sys.modules.setdefault("torch._utils", utils_mod)


def state_dict_pickle(numel, offset, shape, stride, protocol=2):
    storage = FloatStorage()

    class View:
        def __reduce__(self):
            return (_rebuild_tensor_v2, (storage, offset, shape, stride, False, OrderedDict()))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", FloatStorage, "0", "cpu", numel) if obj is storage else None

    buf = io.BytesIO()
    Pickler(buf, protocol=protocol).dump(OrderedDict([("w", View())]))
    return buf.getvalue()


def pth(pkl, storage=b"\x01" * 64):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/data/0", storage)
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


pickles = {
    "valid_p2": state_dict_pickle(16, 0, (4, 4), (4, 1)),
    "valid_p4": state_dict_pickle(16, 2, (2, 3), (1, 2), protocol=4),
    "numel_wraps": state_dict_pickle(2 ** 62 + 3, 0, (3,), (2 ** 40,)),
    "stride_overflows": state_dict_pickle(16, 0, (3,), (2 ** 62,)),
    "offset_overflows": state_dict_pickle(16, 2 ** 63 - 1, (2,), (1,)),
    "deep_tuples": b"\x80\x02N" + b"\x85" * 100000 + b".",
    "self_list": b"\x80\x02]q\x00h\x00a.",
    "os_system": b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00lsq\x00\x85R.",
}
for name, pkl in pickles.items():
    put("pickle", name, pkl)
    put("zip", name, pth(pkl, b"\x01" * 12 if name == "numel_wraps" else b"\x01" * 64))
put("zip", "empty", b"")

# --- safetensors ------------------------------------------------------------------------------
def safetensors(header, data):
    h = header.encode()
    return struct.pack("<Q", len(h)) + h + data


put("safetensors", "valid", safetensors('{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}, '
                                        '"__metadata__": {"format": "pt"}}', b"\0" * 16))
put("safetensors", "i64_f64", safetensors('{"a": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}, '
                                          '"b": {"dtype": "F64", "shape": [], "data_offsets": [8, 16]}}', b"\0" * 16))
put("safetensors", "deep_header", safetensors("[" * 20000 + "]" * 20000, b""))
put("safetensors", "offsets_past_end", safetensors('{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 1000000]}}',
                                                   b"\0" * 8))

# --- einsum: [number of operand dims][their sizes][equation] ---------------------------------
for k, (dims, eq) in enumerate([((2, 3, 3, 2), "ij,jk->ik"), ((2, 3, 2, 3), "ij,ij->ij"),
                                ((1, 2, 3, 3), "...ij->...ji"), ((0, 3), "ij->j"), ((3, 3), "ii->i"),
                                ((), ". ..")]):
    put("einsum", f"case{k}", bytes([len(dims)] + list(dims)) + eq.encode())

# --- the contraction-order planner: [operands - 2][64 label sizes][8-byte label masks][output mask]
def order_case(masks, sizes, out_mask=0):
    size_bytes = bytes(sizes.get(l, 100) for l in range(64))
    return bytes([len(masks) - 2]) + size_bytes + b"".join(m.to_bytes(8, "little") for m in masks) + \
        out_mask.to_bytes(2, "little")
put("order", "chain", order_case([3 << i for i in range(12)], {}, 1 | 1 << 12))
# The empty-operand reproducers: a label of size 0 (byte < 16) in every operand, the others 2^40
# (byte 240); three and eleven operands.
for n in (3, 11):
    put("order", f"empty{n}", order_case([1 | 1 << (1 + i) | 1 << (1 + (i + 1) % n) for i in range(n)],
                                         {0: 0, **{l: 240 for l in range(1, 64)}}))
put("order", "same_label_64", order_case([1] * 64, {0: 100}, 1))  # a,a,...,a->a
put("order", "huge", order_case([(1 << 40) - 1 >> i & 0xFFFFFF for i in range(16)], {l: 255 for l in range(64)}))

# --- --expr ---------------------------------------------------------------------------------
for k, text in enumerate(["y1 = (x1 + x2)^2; y2 = (x1 - x2)^2", "y1 = exp(x1) * sin(x2) / log(x3)",
                          "y1 = relu(-x1 + 2.5e-1)^3", "y1 = x99999999999", "y1 = x1^99999999999",
                          "y1 = " + "(" * 2000 + "x1" + ")" * 2000, "y1 = " + "-" * 5000 + "x1"]):
    put("expr", f"case{k}", text)

# --- flag values (--max-memory, --device) ------------------------------------------------------
for k, text in enumerate(["8G", "512M", "100k", "123456", "0", "1.5T", "-1G", "1e400", "nan", "inf", "12X", "",
                          " 4G", "4 G", "9" * 400, "cpu", "cuda", "auto", "tpu", "cuda:1", "\x00"]):
    put("flags", f"case{k}", text)

print(f"make_corpus: seeds for {len(os.listdir(out))} fuzz targets in {out}")
