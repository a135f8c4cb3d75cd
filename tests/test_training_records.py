"""A run's records: the log as CSV and JSON (NaN empty / null), the curves as SVG, one epoch's line."""

from __future__ import annotations

import csv
import json
import math
import xml.etree.ElementTree as ElementTree

from unetgen.training.records import curves_svg, epoch_line, write_log

ROWS = [
    {"epoch": 1, "loss": 0.5, "lr": 0.01, "dice_0": 0.9, "dice_1": math.nan, "dice_mean": math.nan, "iou_0": 0.8,
     "iou_1": math.nan, "seconds": 1.5, "memory_mib": 300.0},
    {"epoch": 2, "loss": 0.25, "lr": 0.01, "dice_0": 0.95, "dice_1": 0.5, "dice_mean": 0.5, "iou_0": 0.9,
     "iou_1": 1 / 3, "seconds": 1.25, "memory_mib": 301.0},
]


def test_log_files(tmp_path):
    write_log(ROWS, tmp_path / "log.csv", tmp_path / "log.json", {"seed": 0})
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert rows[0]["dice_1"] == "" and rows[1]["iou_1"] == "0.333333" and rows[1]["loss"] == "0.25"
    data = json.loads((tmp_path / "log.json").read_text())
    assert data["config"] == {"seed": 0} and data["epochs"][0]["dice_1"] is None


def test_curves_and_lines():
    svg = curves_svg(ROWS, "net <1>")
    root = ElementTree.fromstring(svg)
    texts = [element.text for element in root.iter() if element.tag.endswith("text")]
    assert "net <1>" in texts and "validation Dice" in texts and "mean (foreground)" in texts
    shapes = [e.tag.split("}")[1] for e in root.iter() if e.tag.endswith(("polyline", "circle"))]
    assert sorted(shapes) == ["circle", "circle", "polyline", "polyline"]  # class 1 and the mean: one epoch each
    assert "no scores yet" in curves_svg([{"epoch": 1, "loss": 0.5}], "net")
    assert epoch_line(ROWS[1], 10) == ("epoch 2/10: loss 0.2500, validation Dice 0.500 (IoU 0.333), 1.2 s, "
                                       "301.0 MiB")
