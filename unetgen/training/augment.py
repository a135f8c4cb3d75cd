"""Data augmentation as in Ronneberger et al. 2015, sec. 3.1: elastic deformations, shifts, rotations and grey-value
variations, in 1D, 2D and 3D.

A patch is drawn through a sampling grid: each pixel of the network's input window looks up the image at
``centre + R·(x − centre) + u(x)``, where ``R`` rotates about the window's centre and ``u`` is the elastic
displacement — random vectors on a coarse 3×3 grid (3×3×3 in 3D) over the window, drawn from a Gaussian with a
standard deviation of 10 pixels, interpolated to every pixel bicubically ("smooth deformations using random
displacement vectors on a coarse 3 by 3 grid ... sampled from a Gaussian distribution with 10 pixels standard
deviation. Per-pixel displacements are then computed using bicubic interpolation"). The image, its labels and its
weight map are all read through the same grid, so they stay aligned pixel for pixel: the image by cubic splines, the
labels by their nearest pixel (a label cannot be interpolated), the weight map linearly (it stays positive). The
output window's target is the grid's central part, under the output's pixels. Past the image's border the grid reads
the mirrored image, as ``predict`` does. Shifts are the patch's random position; rotations turn the grid (in 3D in
the plane of the last two axes, as microscopy stacks turn); grey values get a random scale and offset per channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Pixels read around a grid's reach for cubic splines: the spline filter's influence falls by 0.268 a pixel, so
#: after 12 pixels the image outside changes a value by less than 10⁻⁶ of its range.
_SPLINE_MARGIN = 12


@dataclass(frozen=True)
class Augmentation:
    """What is varied, and how much.

    Attributes:
        elastic_sigma: the coarse displacements' standard deviation in pixels (the paper: 10; 0: none).
        elastic_grid: the coarse grid's points per axis (the paper: 3).
        rotation: the largest rotation in degrees, either way (180: any angle; 0: none).
        scale: grey values are multiplied by a factor from ``1 ± scale``, per channel.
        offset: and shifted by up to ``± offset`` (in units of the normalised image: standard deviations), per channel.
    """

    elastic_sigma: float = 10.0
    elastic_grid: int = 3
    rotation: float = 180.0
    scale: float = 0.1
    offset: float = 0.1


#: The paper's augmentation (sec. 3.1).
PAPER = Augmentation()


def keys_weights(points: int, nodes: int) -> np.ndarray:
    """Bicubic interpolation weights from ``nodes`` coarse points spread over ``points`` pixels (Keys' cubic
    convolution, a = −0.5, the end nodes repeated past the ends).

    Args:
        points: pixels along the axis.
        nodes: coarse grid points along it, the first on pixel 0 and the last on pixel ``points − 1``.

    Returns:
        ``(points, nodes)``: row ``i`` gives pixel ``i``'s value as a weighted sum of the nodes' (each row sums to 1).
    """
    weights = np.zeros((points, nodes))
    positions = np.linspace(0.0, nodes - 1.0, points) if points > 1 else np.zeros(1)
    for row, t in enumerate(positions):
        base = math.floor(t)
        for node in range(base - 1, base + 3):
            weights[row, min(max(node, 0), nodes - 1)] += _keys(t - node)
    return weights


def _keys(x: float) -> float:
    """Keys' cubic convolution kernel with a = −0.5 (what "bicubic" means in image processing)."""
    x, a = abs(x), -0.5
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def elastic_displacement(window: tuple[int, ...], sigma: float, nodes: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random displacement of every pixel of a window (the paper's elastic deformation).

    Args:
        window: the window's size per axis.
        sigma: the coarse displacements' standard deviation, in pixels.
        nodes: coarse grid points per axis.
        rng: the random source.

    Returns:
        ``(axes, *window)``: the displacement along each axis at each pixel.
    """
    dims = len(window)
    coarse = rng.normal(0.0, sigma, size=(dims, *([nodes] * dims)))
    field = coarse
    for axis, points in enumerate(window):
        weights = keys_weights(points, nodes)
        field = np.moveaxis(np.tensordot(field, weights, axes=([axis + 1], [1])), -1, axis + 1)
    return field


def rotation_matrix(dims: int, angle: float) -> np.ndarray:
    """The rotation by ``angle`` radians in the plane of the last two axes (1D: none)."""
    matrix = np.eye(dims)
    if dims >= 2:
        c, s = math.cos(angle), math.sin(angle)
        matrix[-2:, -2:] = [[c, -s], [s, c]]
    return matrix


def sampling_grid(
    origin: tuple[int, ...], window: tuple[int, ...], augmentation: Augmentation | None, rng: np.random.Generator
) -> np.ndarray | None:
    """Where each pixel of a window starting at ``origin`` reads the image: rotated about the window's centre and
    displaced elastically.

    Args:
        origin: the window's first pixel in the image (may lie outside it).
        window: its size.
        augmentation: what to vary; None: nothing.
        rng: the random source (drawn from in a fixed order: angle, then displacements).

    Returns:
        ``(axes, *window)`` image coordinates, or None when the window is read as it is (no augmentation).
    """
    if augmentation is None or (augmentation.rotation == 0 and augmentation.elastic_sigma == 0):
        return None
    dims = len(window)
    axes = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in window), indexing="ij")
    centre = np.array([(n - 1) / 2.0 for n in window]).reshape(dims, *([1] * dims))
    offsets = np.stack(axes) - centre
    angle = rng.uniform(-1.0, 1.0) * math.radians(augmentation.rotation) if dims >= 2 else 0.0
    grid = np.tensordot(rotation_matrix(dims, angle), offsets, axes=([1], [0])) + centre
    if augmentation.elastic_sigma > 0:
        grid += elastic_displacement(window, augmentation.elastic_sigma, augmentation.elastic_grid, rng)
    return grid + np.array(origin, dtype=np.float64).reshape(dims, *([1] * dims))


def mirror_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Pixel indices ``start … stop − 1`` along an axis of ``size`` pixels, mirrored past its ends as
    ``numpy.pad(mode="reflect")`` (and ``predict``) mirror."""
    positions = np.arange(start, stop)
    if size == 1:
        return np.zeros_like(positions)
    period = 2 * (size - 1)
    positions = np.mod(positions, period)
    return np.where(positions < size, positions, period - positions)


def cut(array: np.ndarray, origin: tuple[int, ...], window: tuple[int, ...]) -> np.ndarray:
    """The window of ``array``'s last axes starting at ``origin``, mirrored where it reaches past the array."""
    dims = len(window)
    size = array.shape[-dims:]
    index = np.ix_(*(mirror_indices(o, o + n, s) for o, n, s in zip(origin, window, size)))
    return array[(Ellipsis, *index)]


def resample(array: np.ndarray, grid: np.ndarray, order: int) -> np.ndarray:
    """Read ``array``'s last axes at the grid's coordinates (mirrored past its border).

    Args:
        array: ``(*size)`` or ``(channels, *size)``.
        grid: ``(axes, *window)`` coordinates.
        order: 0 nearest pixel (labels), 1 linear, 3 cubic spline.

    Returns:
        ``(*window)`` or ``(channels, *window)``, in ``array``'s dtype for ``order`` 0, else float32.
    """
    dims = grid.shape[0]
    size = array.shape[-dims:]
    margin = _SPLINE_MARGIN if order > 1 else 1
    low = [int(math.floor(grid[a].min())) - margin for a in range(dims)]
    high = [int(math.ceil(grid[a].max())) + margin + 1 for a in range(dims)]
    region = cut(array, tuple(low), tuple(h - lo for lo, h in zip(low, high)))
    local = grid - np.array(low, dtype=np.float64).reshape(dims, *([1] * dims))
    dtype = array.dtype if order == 0 else np.float32
    planes = region.reshape(-1, *region.shape[-dims:])
    out = np.stack([
        ndimage.map_coordinates(plane, local, order=order, mode="mirror", prefilter=order > 1, output=dtype)
        for plane in planes
    ])
    return out.reshape(*array.shape[:-dims], *grid.shape[1:])


def vary_grey_values(pixels: np.ndarray, augmentation: Augmentation | None, rng: np.random.Generator) -> np.ndarray:
    """Scale and shift each channel's grey values by random amounts (in place where possible).

    Args:
        pixels: ``(channels, *window)`` float32.
        augmentation: the amounts; None: nothing.
        rng: the random source.

    Returns:
        The varied pixels.
    """
    if augmentation is None or (augmentation.scale == 0 and augmentation.offset == 0):
        return pixels
    channels = pixels.shape[0]
    scale = rng.uniform(1 - augmentation.scale, 1 + augmentation.scale, size=channels).astype(np.float32)
    offset = rng.uniform(-augmentation.offset, augmentation.offset, size=channels).astype(np.float32)
    shape = (channels, *([1] * (pixels.ndim - 1)))
    return pixels * scale.reshape(shape) + offset.reshape(shape)


__all__ = [
    "Augmentation", "PAPER", "keys_weights", "elastic_displacement", "rotation_matrix", "sampling_grid",
    "mirror_indices", "cut", "resample", "vary_grey_values",
]
