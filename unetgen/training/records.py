"""A run's records: the per-epoch log as CSV and JSON, the curves drawn as SVG (each written atomically), and the
lines ``unetgen train`` prints about the run.

The plot is plain SVG text written here (as :mod:`unetgen.drawing` writes the network's figure): two panels, the
training loss and the validation scores per class, against the epoch; no plotting library is needed.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from ..files import atomic_write

#: Line colours (a colour-blind-safe palette: Okabe & Ito).
_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def write_log(rows: Sequence[dict[str, Any]], csv_path: Path, json_path: Path, config: dict[str, Any]) -> None:
    """Write the per-epoch rows as CSV (one line per epoch) and JSON (the run's settings and the rows).

    Args:
        rows: one dict per epoch (``epoch``, ``loss``, ``dice_<class>``, ...); NaN is written empty / null.
        csv_path: the CSV file.
        json_path: the JSON file.
        config: the run's settings, stored in the JSON.
    """
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_value(row.get(key)) for key in columns})
    data = text.getvalue().encode("utf-8")
    atomic_write(csv_path, lambda handle: handle.write(data))
    document = {"config": config, "epochs": [{key: _json_value(value) for key, value in row.items()} for row in rows]}
    encoded = (json.dumps(document, indent=1) + "\n").encode("utf-8")
    atomic_write(json_path, lambda handle: handle.write(encoded))


def _csv_value(value: Any) -> Any:
    """A value as the CSV shows it: floats to 6 digits, NaN and None empty."""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return "" if value is None else value


def _json_value(value: Any) -> Any:
    """A value as JSON can hold it: NaN and infinities as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def curves_svg(rows: Sequence[dict[str, Any]], title: str) -> str:
    """The training loss and the validation Dice per class against the epoch, as SVG text.

    Args:
        rows: the per-epoch log.
        title: the plot's title (the network's name).

    Returns:
        A standalone SVG document.
    """
    width, panel, gap, left, top = 640, 200, 60, 60, 40
    height = top + 2 * panel + gap + 40
    epochs = [row["epoch"] for row in rows]
    loss = {"training loss": [row.get("loss", math.nan) for row in rows]}
    scores = {_series_name(key): [row.get(key, math.nan) for row in rows] for key in _score_keys(rows)}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="Helvetica, Arial, sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    parts += _panel(epochs, loss, left, top, width - left - 150, panel, None)
    parts.append(f'<text x="{left}" y="{top + panel + gap - 8}" font-weight="bold">validation Dice</text>')
    parts += _panel(epochs, scores, left, top + panel + gap, width - left - 150, panel, (0.0, 1.0))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _series_name(key: str) -> str:
    """``dice_1`` → ``class 1``; ``dice_mean`` → ``mean (foreground)``."""
    suffix = key.split("_", 1)[1]
    return "mean (foreground)" if suffix == "mean" else f"class {suffix}"


def _score_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The per-class Dice columns of the log, in order."""
    keys: list[str] = []
    for row in rows:
        keys += [key for key in row if key.startswith("dice_") and key not in keys]
    return keys


def _panel(
    epochs: list[int], series: dict[str, list[float]], x0: float, y0: float, w: float, h: float,
    fixed: tuple[float, float] | None,
) -> list[str]:
    """One chart: axes, ticks, a line per series, a legend on the right."""
    values = [v for line in series.values() for v in line if isinstance(v, (int, float)) and math.isfinite(v)]
    parts = [f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#888"/>']
    if not values or not epochs:
        parts.append(f'<text x="{x0 + 10}" y="{y0 + 20}" fill="#888">no {"scores" if fixed else "values"} yet</text>')
        return parts
    low, high = fixed if fixed is not None else (min(values), max(values))
    if high <= low:
        low, high = low - 0.5, high + 0.5
    first, last = epochs[0], epochs[-1]
    span = max(last - first, 1)

    def x(epoch: float) -> float:
        """The epoch's horizontal position."""
        return x0 + (epoch - first) / span * w

    def y(value: float) -> float:
        """The value's vertical position."""
        return y0 + h - (value - low) / (high - low) * h

    for k in range(5):
        value = low + (high - low) * k / 4
        parts.append(f'<line x1="{x0 - 4}" y1="{y(value):.1f}" x2="{x0}" y2="{y(value):.1f}" stroke="#888"/>')
        parts.append(f'<text x="{x0 - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.3g}</text>')
    for epoch in sorted({first, last, *epochs[:: max(1, len(epochs) // 5)]}):
        parts.append(f'<text x="{x(epoch):.1f}" y="{y0 + h + 16}" text-anchor="middle">{epoch}</text>')
    parts.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 32}" text-anchor="middle">epoch</text>')
    for index, (name, line) in enumerate(series.items()):
        colour = _COLOURS[index % len(_COLOURS)]
        points = [(x(e), y(v)) for e, v in zip(epochs, line) if isinstance(v, (int, float)) and math.isfinite(v)]
        if len(points) == 1:
            parts.append(f'<circle cx="{points[0][0]:.1f}" cy="{points[0][1]:.1f}" r="3" fill="{colour}"/>')
        elif points:
            text = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            parts.append(f'<polyline points="{text}" fill="none" stroke="{colour}" stroke-width="2"/>')
        ly = y0 + 14 + 18 * index
        parts.append(f'<line x1="{x0 + w + 12}" y1="{ly - 4}" x2="{x0 + w + 32}" y2="{ly - 4}" stroke="{colour}" '
                     'stroke-width="2"/>')
        parts.append(f'<text x="{x0 + w + 38}" y="{ly}">{escape(name)}</text>')
    return parts


def write_curves(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Write :func:`curves_svg` to ``path`` atomically."""
    data = curves_svg(rows, title).encode("utf-8")
    atomic_write(path, lambda handle: handle.write(data))


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """One epoch in words: ``epoch 3/50: loss 0.4172, validation Dice 0.812 (IoU 0.701), 12.3 s, 402.1 MiB``."""
    words = f"epoch {row['epoch']}/{epochs}: loss {row['loss']:.4f}"
    if "dice_mean" in row:
        iou = [row[key] for key in row if key.startswith("iou_") and key != "iou_0"] or [row.get("iou_0", math.nan)]
        finite = [v for v in iou if isinstance(v, float) and math.isfinite(v)]
        mean_iou = sum(finite) / len(finite) if finite else math.nan
        words += f", validation Dice {row['dice_mean']:.3f} (IoU {mean_iou:.3f})"
    return words + f", {row['seconds']:.1f} s, {row['memory_mib']:.1f} MiB"


__all__ = ["write_log", "curves_svg", "write_curves", "epoch_line"]
