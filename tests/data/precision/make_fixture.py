"""Train the small network the int8 export tests check a quantized file against (tests/test_quantize.py).

Quantization is only fairly tested on a trained network: an untrained one's logits nearly tie, so rounding flips
labels that a trained network decides by a wide margin. This trains a paper-style network (valid convolutions,
3 levels, 8 channels at the top) with `unetgen train` on unetgen's seeded synthetic cells, and keeps its best
checkpoint here (about 130 KB). Run from the repository root:

    python tests/data/precision/make_fixture.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from unetgen.cli import main
from unetgen.training.synthetic import write_cells

HERE = Path(__file__).resolve().parent
SPEC = """\
name: cells-tiny
description: paper-style U-Net, 3 levels, 8 channels at the top (tests of int8 export)
depth: 3
width: 8
"""


def make() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        write_cells(root / "data", count=16, size=(128, 128), seed=17)
        (root / "spec.yaml").write_text(SPEC)
        status = main([
            "train", str(root / "spec.yaml"), "--images", str(root / "data" / "images"),
            "--masks", str(root / "data" / "masks"), "--val-fraction", "0.25", "--out", str(root / "run"),
            "--recipe", "modern", "--lr", "0.003", "--augment", "none", "--epochs", "12", "--patches-per-image", "4",
            "--seed", "0",
        ])
        if status != 0:
            sys.exit(status)
        shutil.copy(root / "run" / "best.pt", HERE / "cells_tiny.pt")
    print(f"wrote {HERE / 'cells_tiny.pt'}")


if __name__ == "__main__":
    make()
