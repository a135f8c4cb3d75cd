"""A synthetic data set of touching and overlapping cells, seeded: what the paper's weight map is for, made on the
spot (``docs/training.md``'s examples, the tests, ``benchmarks/weight_map.py``).

Each image holds elliptical cells of random size, orientation and brightness, many of them in clusters where they
touch or overlap (a later cell covers an earlier one). As in the paper's data (Ronneberger et al. 2015, Fig. 3), the
mask marks the border between touching cells as background — a gap two pixels wide — so that separating them is
part of the task, while the image shows that border only faintly. The image is blurred and lit unevenly (a smooth
random field), with Gaussian noise, and written as 8-bit grey. Files: ``images/NAME.png`` (uint8),
``masks/NAME.png`` (0/1), ``instances/NAME.png`` (one value per cell, 0 outside cells; 8-bit, 16-bit above 255
cells).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..inference.images import write_result


@dataclass(frozen=True)
class CellImage:
    """One synthetic image.

    Attributes:
        image: the grey image, uint8.
        mask: 1 on cells, 0 on background and on the borders between touching cells, uint8.
        instances: one value per cell (1, 2, ...), 0 outside, uint16.
    """

    image: np.ndarray
    mask: np.ndarray
    instances: np.ndarray


def make_cells(
    size: tuple[int, int] = (128, 128),
    rng: np.random.Generator | None = None,
    *,
    cells: int | None = None,
    radius: tuple[float, float] = (6.0, 12.0),
    cluster: float = 0.7,
    noise: float = 0.08,
    gap: int = 2,
) -> CellImage:
    """Draw one image of cells.

    Args:
        size: height and width.
        rng: the random source (default: seed 0).
        cells: how many cells to try to place (default: about one per 500 pixels); cells that would fall off the
            image are skipped.
        radius: the range of the ellipses' semi-axes, in pixels.
        cluster: the chance that a cell is placed against an earlier one (touching it or overlapping it by up to
            3 pixels) rather than anywhere.
        noise: the Gaussian noise's standard deviation, as a share of the brightest cell's grey value.
        gap: the width of the background border the mask draws between touching cells: 2 (a pixel on each side)
            or 1 (on the side of the cell drawn later).

    Returns:
        The image, its mask and its instance labels.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    height, width = size
    count = cells if cells is not None else max(1, height * width // 500)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    instances = np.zeros(size, np.uint16)
    brightness = np.zeros(size)
    placed: list[tuple[float, float, float]] = []
    label = 0
    for _ in range(count):
        a, b = rng.uniform(*radius, size=2)
        angle = rng.uniform(0, math.pi)
        if placed and rng.random() < cluster:
            y0, x0, r0 = placed[rng.integers(len(placed))]
            direction = rng.uniform(0, 2 * math.pi)
            distance = r0 + (a + b) / 2 - rng.uniform(-1.0, 3.0)
            y, x = y0 + distance * math.sin(direction), x0 + distance * math.cos(direction)
        else:
            y, x = rng.uniform(0, height), rng.uniform(0, width)
        if not (0 <= y < height and 0 <= x < width):
            continue
        dy, dx = rows - y, cols - x
        u = dy * math.cos(angle) + dx * math.sin(angle)
        v = -dy * math.sin(angle) + dx * math.cos(angle)
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        if not inside.any():
            continue
        label += 1
        instances[inside] = label
        brightness[inside] = rng.uniform(0.55, 1.0) * (1.0 - 0.25 * ((u / a) ** 2 + (v / b) ** 2)[inside])
        placed.append((y, x, (a + b) / 2))
    instances = _relabel(instances)
    border = _touching_border(instances, gap)
    mask = ((instances > 0) & ~border).astype(np.uint8)
    picture = np.where(border, 0.55 * brightness, brightness) + 0.08
    picture = ndimage.gaussian_filter(picture, 1.0)
    picture *= _illumination(size, rng)
    picture += rng.normal(0.0, noise, size)
    image = np.clip(picture * 200.0, 0, 255).round().astype(np.uint8)
    return CellImage(image, mask, instances)


def _relabel(instances: np.ndarray) -> np.ndarray:
    """Number the cells that are still visible 1, 2, ... (a cell wholly covered by later ones disappears)."""
    values = np.unique(instances)
    values = values[values > 0]
    lookup = np.zeros(int(instances.max()) + 1, np.uint16)
    lookup[values] = np.arange(1, len(values) + 1, dtype=np.uint16)
    return lookup[instances]


def _touching_border(instances: np.ndarray, gap: int = 2) -> np.ndarray:
    """Cell pixels that share a face with another cell: the border between touching cells, two pixels wide (both
    sides), or one (the side of the cell with the larger label)."""
    border = np.zeros(instances.shape, bool)
    for axis in range(instances.ndim):
        a = np.moveaxis(instances, axis, 0)
        here, there = a[:-1], a[1:]
        touch = (here > 0) & (there > 0) & (here != there)
        np.moveaxis(border, axis, 0)[:-1] |= touch & ((here > there) | (gap > 1))
        np.moveaxis(border, axis, 0)[1:] |= touch & ((there > here) | (gap > 1))
    return border


def _illumination(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Uneven lighting: a smooth random field from 0.5 to 1.1 of the light (a coarse grid, blurred up)."""
    coarse = rng.uniform(0.5, 1.1, size=(4, 4))
    field = ndimage.zoom(coarse, (size[0] / 4, size[1] / 4), order=3, mode="nearest")[: size[0], : size[1]]
    return np.clip(field, 0.4, 1.2)


def write_cells(
    folder: str | Path, count: int = 12, size: tuple[int, int] = (128, 128), seed: int = 0, prefix: str = "cells",
    gap: int = 2,
) -> list[str]:
    """Write a data set of ``count`` images into ``folder``'s ``images/``, ``masks/`` and ``instances/``.

    Args:
        folder: where to write (made if missing; its parent must exist).
        count: the number of images.
        size: each image's height and width.
        seed: the data set's seed: the same seed writes the same files.
        prefix: the files' names: ``<prefix>_000.png``, ...
        gap: the border between touching cells in the masks, 2 or 1 pixels wide (see :func:`make_cells`).

    Returns:
        The names written (without suffix).
    """
    root = Path(folder)
    for part in ("images", "masks", "instances"):
        (root / part).mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(count):
        cell = make_cells(size, np.random.default_rng([seed, index]), gap=gap)
        name = f"{prefix}_{index:03d}"
        write_result(root / "images" / f"{name}.png", cell.image)
        write_result(root / "masks" / f"{name}.png", cell.mask)
        write_result(root / "instances" / f"{name}.png", cell.instances)
        names.append(name)
    return names


__all__ = ["CellImage", "make_cells", "write_cells"]
