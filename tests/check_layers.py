#!/usr/bin/env python3
"""Layers only point down (../shared/DESIGN.md): kernels <- host <- models <- commands.

Every #include "..." of a source file under one of those folders must name a file in the same
layer or a lower one: kernels/ includes only kernels/, host/ includes kernels/ and host/,
models/ adds models/, commands/ may include everything (python/, with its bindings over host/
and models/, sits beside commands). tests/ and bench/ may include anything.

  check_layers.py [ROOT]     check the tree at ROOT (default: this repository)
  check_layers.py --self-test   check that an upward include in a scratch tree is caught
"""
import os
import re
import sys
import tempfile

LAYERS = {"kernels": 0, "host": 1, "models": 2, "commands": 3, "python": 3}
SOURCE = re.compile(r"\.(h|hpp|cuh|c|cc|cpp|cu)$")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def violations(root):
    found = []
    for layer, rank in LAYERS.items():
        for dirpath, _, files in os.walk(os.path.join(root, layer)):
            for name in sorted(files):
                if not SOURCE.search(name):
                    continue
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root)
                with open(path, encoding="utf-8", errors="replace") as f:
                    for lineno, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        target = m.group(1).split("/")[0]
                        if target in LAYERS and LAYERS[target] > rank:
                            found.append(f"{rel}:{lineno}: {layer}/ includes \"{m.group(1)}\", a layer above it")
    return found


def self_test():
    with tempfile.TemporaryDirectory() as root:
        for layer in LAYERS:
            os.makedirs(os.path.join(root, layer))
        with open(os.path.join(root, "host", "ok.h"), "w") as f:
            f.write('#include "kernels/x.h"\n#include "host/y.h"\n#include <vector>\n')
        if violations(root):
            return "a downward include was reported"
        with open(os.path.join(root, "kernels", "bad.cu"), "w") as f:
            f.write('// fine\n  #  include "host/tensor.h"\n')
        found = violations(root)
        if len(found) != 1 or "kernels/bad.cu:2" not in found[0]:
            return f"the injected upward include was not reported as it should be: {found}"
    return None


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        problem = self_test()
        print(f"check_layers self-test: {problem or 'an injected upward include is caught'}")
        sys.exit(1 if problem else 0)
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = violations(root)
    for v in found:
        print(v)
    print(f"check_layers: {len(found)} upward include(s)")
    sys.exit(1 if found else 0)
