"""The README's example, end to end and small: its ``unetgen train`` line (the paper's network and recipe) on two
synthetic images, then its ``predict`` and ``export`` lines on the checkpoint the run wrote, and the exported file
segmenting an image with the intensity normalisation it carries."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import unetgen
from test_docs import blocks, run_cli
from unetgen.training.synthetic import write_cells


pytestmark = pytest.mark.usefixtures("one_thread")


def readme_line(command: str) -> list[str]:
    lines = [line.split("#")[0] for b in blocks("README.md") if b.lang == "bash" for line in b.text.splitlines()]
    return next(shlex.split(line) for line in lines if line.startswith(f"unetgen {command} "))


def test_train_predict_export(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_cells("cells", count=2, size=(64, 64), seed=0)
    train = readme_line("train")
    # small: one epoch, the paper network's smallest patch (188×188 → 4×4)
    status, printed = run_cli(train[1:] + ["--epochs", "1", "--patch-size", "188"], capsys)
    assert status == 0, printed
    assert "network paper: patches 188×188 → 4×4, batch 1" in printed
    checkpoint = f"{train[train.index('--out') + 1]}/last.pt"
    predict = readme_line("predict")
    predict[predict.index("--weights") + 1] = checkpoint
    predict[predict.index("--input") + 1] = "cells/images/cells_000.png"
    status, printed = run_cli(predict[1:], capsys)
    assert status == 0, printed
    assert Path(predict[predict.index("--output") + 1]).is_file()
    export = readme_line("export")
    export[export.index("--weights") + 1] = checkpoint
    status, printed = run_cli(export[1:] + ["--input-size", "188", "188", "--no-verify"], capsys)  # small
    assert status == 0, printed
    onnx = export[export.index("--onnx") + 1]
    assert unetgen.read_onnx_info(onnx).intensity == {"method": "zscore"}
    # the file segments the image as the checkpoint did (the intensities normalised by the file's own metadata)
    image = np.asarray(Image.open("cells/images/cells_000.png"))
    mask = np.asarray(Image.open(predict[predict.index("--output") + 1]))
    assert (unetgen.predict(onnx, image, output="labels") == mask).mean() > 0.99
