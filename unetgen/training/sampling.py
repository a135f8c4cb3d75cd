"""Patches on the network's lattice: an input window the network takes, and the target under its output.

A patch's input is a size of the plan's lattice (what the network's core takes); its output is that size less the
border on each side, centred, and the target is the mask's region under the output — the paper's way for networks
with valid convolutions: the input reaches ``border`` pixels past the output on every side, and where that context
lies past the image's edge the image is mirrored, as ``predict`` does (Ronneberger et al. 2015, sec. 2, Fig. 2).
A network with ``output: same`` trains its core the same way. The output window lies inside the image at a random
position (the shifts of sec. 3.1); :mod:`unetgen.training.augment` rotates and deforms it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .augment import Augmentation, cut, resample, sampling_grid, vary_grey_values
from .data import Sample


@dataclass(frozen=True)
class PatchShape:
    """The sizes of one training patch.

    Attributes:
        window: the input's size (on the network's lattice).
        out: the output's size, ``window − 2·border``.
    """

    window: tuple[int, ...]
    out: tuple[int, ...]

    @property
    def border(self) -> tuple[int, ...]:
        """Context pixels on each side of the output, per axis."""
        return tuple((w - o) // 2 for w, o in zip(self.window, self.out))


@dataclass
class Patch:
    """One training example.

    Attributes:
        pixels: the input, float32 ``(channels, *window)``.
        labels: the target, ``(*out)``.
        weights: the weight map under the output, float32 ``(*out)``, or None.
    """

    pixels: np.ndarray
    labels: np.ndarray
    weights: np.ndarray | None


def draw_patch(
    sample: Sample, shape: PatchShape, augmentation: Augmentation | None, rng: np.random.Generator
) -> Patch:
    """A random patch of a sample: its output window inside the image, the input around it.

    Args:
        sample: a normalised training sample (its weight map computed, if the loss uses one).
        shape: the patch's sizes; the output must fit in the image.
        augmentation: how to vary the patch (None: cut as it is).
        rng: the random source, drawn from in a fixed order (position, then the augmentation's draws).

    Returns:
        The patch.
    """
    origin = tuple(int(rng.integers(0, s - o + 1)) for s, o in zip(sample.size, shape.out))
    start = tuple(o - b for o, b in zip(origin, shape.border))
    grid = sampling_grid(start, shape.window, augmentation, rng)
    if grid is None:
        inside = tuple(slice(o, o + n) for o, n in zip(origin, shape.out))
        pixels = np.ascontiguousarray(cut(sample.pixels, start, shape.window), dtype=np.float32)
        labels = sample.labels[inside]
        weights = sample.weights[inside] if sample.weights is not None else None
    else:
        pixels = resample(sample.pixels, grid, order=3)
        under = grid[(slice(None), *(slice(b, b + n) for b, n in zip(shape.border, shape.out)))]
        labels = resample(sample.labels, under, order=0)
        weights = resample(sample.weights, under, order=1) if sample.weights is not None else None
    pixels = vary_grey_values(pixels, augmentation, rng)
    return Patch(np.ascontiguousarray(pixels, dtype=np.float32), np.ascontiguousarray(labels),
                 None if weights is None else np.ascontiguousarray(weights, dtype=np.float32))


__all__ = ["PatchShape", "Patch", "draw_patch"]
