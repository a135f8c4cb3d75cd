"""The paper's weight map (Ronneberger et al. 2015, sec. 3, eq. 2), computed once per training image.

    w(x) = w_c(x) + w0 · exp(−(d1(x) + d2(x))² / (2σ²))

``w_c`` balances the class frequencies; ``d1`` and ``d2`` are the distances to the nearest and the second-nearest
cell. The second term gives the thin background gaps between touching cells a large weight (w0 = 10, σ ≈ 5 pixels in
the paper), so that the network learns to separate them. Cells are the instance labels when a data set has them, or
else the connected components of the foreground.

Choices the paper leaves open, made here:

* ``w_c(x) = N / (K · n_l)`` for the class ``l`` of pixel ``x``, with ``n_l`` the pixels of class ``l`` in the
  image, ``N`` all its pixels and ``K`` the classes present in it: every class weighs as much in total, and the map's
  mean is 1;
* the border term is added to background pixels (label 0) only — the gaps the paper's Fig. 3d highlights; inside a
  cell ``d1`` is 0 and the term would only blur the cell's own weight;
* ``d`` is the Euclidean distance, in pixels, from a pixel's centre to the centre of the nearest pixel of the cell
  (``scipy.ndimage.distance_transform_edt``); where ``d1 + d2`` exceeds ``σ·√(2·ln(w0/10⁻⁶))`` (29 pixels for the
  paper's numbers) the term is below 10⁻⁶ and is left out, which keeps the cost per cell to its neighbourhood.

Works in 1D, 2D and 3D alike. ``tests/test_training_weight_map.py`` checks values worked out by hand.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

#: The paper's w0 and σ (sec. 3: "we set w0 = 10 and σ ≈ 5 pixels").
PAPER_W0 = 10.0
PAPER_SIGMA = 5.0
#: The border term is left out where it is smaller than this.
_NEGLIGIBLE = 1e-6


def cells(labels: np.ndarray, instances: np.ndarray | None = None) -> np.ndarray:
    """The cells the border term separates: ``instances`` when given (0 = none), else the connected components of
    the foreground (``labels > 0``; pixels that share a face are connected).

    Args:
        labels: the class of each pixel.
        instances: an instance label per pixel, or None.

    Returns:
        An int32 map, 0 outside cells and ``1..n`` for the cells.
    """
    if instances is not None:
        return np.asarray(instances).astype(np.int32, copy=False)
    components, _ = ndimage.label(np.asarray(labels) > 0)
    return components.astype(np.int32, copy=False)


def class_weights(labels: np.ndarray) -> np.ndarray:
    """``w_c``: each pixel weighted ``N / (K · n_l)`` by its class ``l`` (see the module's docstring).

    Args:
        labels: the class of each pixel.

    Returns:
        A float32 map of ``labels``' shape, mean 1.
    """
    labels = np.asarray(labels)
    values, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    per_class = labels.size / (len(values) * counts.astype(np.float64))
    return per_class[inverse].reshape(labels.shape).astype(np.float32)


def border_weights(
    instances: np.ndarray, background: np.ndarray, *, w0: float = PAPER_W0, sigma: float = PAPER_SIGMA
) -> np.ndarray:
    """The separation term ``w0 · exp(−(d1 + d2)² / 2σ²)`` on ``background`` pixels.

    Args:
        instances: the cells, 0 outside them (see :func:`cells`).
        background: where the term is added (the pixels of label 0).
        w0: the term's height.
        sigma: its width, in pixels.

    Returns:
        A float32 map; 0 where fewer than two cells exist.
    """
    instances = np.asarray(instances)
    shape = instances.shape
    nearest = np.full(shape, np.inf)
    second = np.full(shape, np.inf)
    if w0 <= 0 or sigma <= 0:
        return np.zeros(shape, np.float32)
    reach = sigma * math.sqrt(2.0 * math.log(max(w0 / _NEGLIGIBLE, 1.0)))
    margin = int(math.ceil(reach)) + 1
    for index, box in enumerate(ndimage.find_objects(instances), start=1):
        if box is None:
            continue
        # d1 + d2 ≤ reach needs both cells within reach: distances beyond the cell's box grown by it are not needed
        grown = tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, shape))
        distance = ndimage.distance_transform_edt(instances[grown] != index)
        near, far = nearest[grown], second[grown]
        far[...] = np.minimum(far, np.maximum(near, distance))
        near[...] = np.minimum(near, distance)
    total = nearest + second
    term = np.where(np.isfinite(total) & (total <= reach) & np.asarray(background, bool),
                    w0 * np.exp(-np.square(np.where(np.isfinite(total), total, 0.0)) / (2.0 * sigma * sigma)), 0.0)
    return term.astype(np.float32)


def weight_map(
    labels: np.ndarray,
    instances: np.ndarray | None = None,
    *,
    w0: float = PAPER_W0,
    sigma: float = PAPER_SIGMA,
) -> np.ndarray:
    """The paper's weight map ``w = w_c + w0 · exp(−(d1 + d2)² / 2σ²)`` (Ronneberger et al. 2015, eq. 2).

    Args:
        labels: the class of each pixel (0 = background), any number of axes.
        instances: the cells, 0 outside them; default the connected components of ``labels > 0``.
        w0: the border term's height (the paper: 10).
        sigma: its width in pixels (the paper: about 5).

    Returns:
        A float32 map of ``labels``' shape.
    """
    labels = np.asarray(labels)
    return class_weights(labels) + border_weights(cells(labels, instances), labels == 0, w0=w0, sigma=sigma)


__all__ = ["PAPER_W0", "PAPER_SIGMA", "cells", "class_weights", "border_weights", "weight_map"]
