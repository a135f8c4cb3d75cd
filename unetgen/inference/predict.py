"""Segment an image or volume of any size by overlap-tiles (Ronneberger et al. 2015, sec. 2, Fig. 2): cut, run,
stitch.

:mod:`unetgen.inference.tiling` lays the tiles out (pure integers); this module cuts them from the image (mirroring
it where a tile reaches past its border), runs them in batches through a runner (:mod:`unetgen.inference.runners`:
a torch network's core, or an exported ONNX file), and stitches the outputs into an array the size of the image.

For a network with valid convolutions (and no norm, or batch norm) the stitched result equals one pass over the
whole mirror-padded image: the image mirrored by the network's border plus half the rounding to a valid size on
each side, as ``output: same`` mirrors it. Other networks are blended with a raised-cosine window, so there are no
seams.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from ..errors import ExportError, UNetGenError
from ..planning.field import attention_layers, nearest_on_output
from ..planning.plan import Plan
from ..text import size_text
from ..training.intensity import intensity_from_dict
from .image_checks import Channels, check_image
from .runners import Runner, TorchRunner, load_model
from .tiling import DEFAULT_OVERLAP, TileLayout, plan_tiles, reflect

log = logging.getLogger(__name__)

#: ``predict`` warns when its tiles hold this many times the image's pixels (small tiles are mostly border).
WASTEFUL_TILING = 10.0

Output = Literal["logits", "labels"]


def predict(
    model: Any,
    image: Any,
    *,
    channels: Channels = "first",
    output: Output = "logits",
    tile_size: int | Sequence[int] | None = None,
    memory: int | str | None = None,
    batch_size: int | None = None,
    overlap: float = DEFAULT_OVERLAP,
    progress: bool = False,
    precision: str | None = None,
    attention: bool = False,
) -> Any:
    """Segment an image or volume of any size by overlap-tiles; the output has the image's size.

    Each tile's input is a size the network's core takes and its output the part of the map it predicts; where a
    tile reaches past the image, the image is mirrored, as in Ronneberger et al. 2015 (Fig. 2). A torch network
    runs its core (:meth:`unetgen.UNet.core`) on these tiles whether its output is ``crop`` or ``same``. With valid
    convolutions (and no norm, or batch norm) the result equals one pass of the network over the whole image
    mirrored by its border plus half the rounding to a valid size on each side (what ``output: same`` does);
    otherwise overlapping tiles are blended with a raised-cosine window, so there are no seams. The network runs in
    eval mode (dropout off, batch norm on its running statistics), without gradients.

    An ONNX file holds the whole network, mirroring included: an ``output: same`` file is given tiles of any size
    that lie over the image, which it mirrors itself, and each tile leaves to its neighbours the pixels whose input
    window reaches its edge (:func:`unetgen.planning.field.edge_margins`), as before tiles ran cores.

    Args:
        model: a network from :func:`unetgen.build` or :func:`unetgen.load` (run where its weights are), a
            checkpoint path, or an ONNX file exported by unetgen (run by onnxruntime; the same result to float
            rounding).
        image: ``(C, *spatial)``, ``(*spatial)`` for one channel, or ``(*spatial, C)`` with ``channels="last"``;
            integers or floats, normalised as the network was trained (the checkpoint's or ONNX file's intensity
            normalisation, :mod:`unetgen.training.intensity`), else passed as float32 without rescaling.
        channels: where the channel axis of ``image`` is, ``first`` or ``last``.
        output: ``logits``: float32 ``(out_channels, *spatial)``, what the network outputs (probabilities after a
            final sigmoid or softmax); ``labels``: the class of each pixel, ``(*spatial)``, uint8 (uint16 above 256
            classes); with one output channel, the pixels above 0 (0.5 after a final activation) are 1.
        tile_size: the tile's input size per axis (one value for all), at most; default the largest that fits
            ``memory``. See :func:`unetgen.inference.tiling.plan_tiles`.
        memory: the memory one pass may take (bytes or e.g. ``"2GiB"``), from the plan's estimate; default 1 GiB,
            at most :func:`unetgen.memory_limit`.
        batch_size: tiles per pass; default as many as fit ``memory`` (at most 16).
        overlap: blended networks: the least overlap of neighbouring tiles, a fraction of the tile (0 to 0.5].
        progress: show a progress bar (tqdm) on standard error when it is a terminal.
        precision: ``bf16`` or ``fp16``: run a torch network in that precision (:func:`unetgen.optimize` with
            ``dtype``), where the hardware makes it faster; elsewhere it runs ``fp32`` and a log line says which
            instruction is missing. Default: the network's own precision (an ONNX file's is the one it was
            exported at).
        attention: also return the maps of the network's attention gates (``skip_gate``): what each gate
            multiplied its skip connection by, from 0 to 1, tiled and stitched as the output is (each pixel from the
            tile that owns it) and shown at the image's resolution, each gate pixel over the block of image pixels
            it is nearest to (:func:`unetgen.planning.field.nearest_on_output`). A torch network only (an ONNX file
            outputs the segmentation alone).

    Returns:
        The logits or labels, the image's spatial size; with ``attention=True``, ``(that, maps)``, ``maps`` being
        ``{"decoder.2.gate": float32 (*spatial), ...}``, deepest gate first.

    Raises:
        UNetGenError: for an image the network cannot take (dtype, axes, channels, NaN or infinite values,
            emptiness; one message before any work), bad options, or a model that cannot be opened.
        ResourceError: when even the smallest tile does not fit ``memory``.
    """
    if output not in ("logits", "labels"):
        raise UNetGenError(f"output {output!r}: give 'logits' or 'labels'")
    runner = load_model(model, precision=precision)
    spec = runner.spec
    pixels = check_image(image, spec, channels)
    if runner.intensity is not None:  # the whole image, as in training: its statistics, not a tile's
        pixels = intensity_from_dict(runner.intensity, f"{runner.source}: intensity").apply(pixels)
    size = tuple(int(n) for n in pixels.shape[1:])
    fixed_batch = None
    if runner.fixed is not None:
        fixed_batch, fixed_size = runner.fixed
        tile_size, batch_size = fixed_size, fixed_batch
    layout = plan_tiles(
        spec, size, tile_size=tile_size, memory=memory, batch_size=batch_size, overlap=overlap, whole=runner.whole
    )
    if runner.fixed is not None and layout.window != runner.fixed[1]:
        raise ExportError(
            f"{runner.source}: takes only {size_text(runner.fixed[1])} (static shapes), which cannot tile "
            f"an image of {size_text(size)}; export it with dynamic shapes"
        )
    batch = layout.batch if fixed_batch is None else fixed_batch
    gates = _gates(runner, layout.plan) if attention else {}
    runner.check((batch, spec.in_channels, *layout.window), layout.plan)
    log.info("%s: %s", runner.source, layout.describe())
    passes = layout.count * math.prod(layout.window) / math.prod(size)
    if passes > WASTEFUL_TILING:
        fix = "a larger --tile-size / tile_size=" if tile_size is not None else (
            "a larger memory budget (--memory, memory=)"
        )
        log.warning(
            "%d tiles of %s: each image pixel goes through the network %.0f times (small tiles are mostly border); "
            "%s gives larger tiles", layout.count, size_text(layout.window), passes, fix,
        )
    with runner.running(spare=layout.budget - layout.peak_bytes):
        if not gates:
            return _run(runner, pixels, layout, output, progress, fixed_batch)
        with runner.attending(gates):  # type: ignore[attr-defined]
            values = _run(runner, pixels, layout, "logits", progress, fixed_batch, extra=len(gates))
    classes = layout.plan.output_shape[0]
    result = values[:classes]
    if output == "labels":
        result = _labels(result, 0.0 if layout.plan.final_activation == "none" else 0.5, _label_dtype(classes))
    return result, dict(zip(gates, values[classes:]))


def _gates(runner: Runner, plan: Plan) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Per attention gate of ``plan``, the pixels of its map that each output pixel of a tile shows."""
    if not isinstance(runner, TorchRunner):
        raise UNetGenError(f"{runner.source}: attention=True needs a torch network (a checkpoint or unetgen.build's "
                           "model); an ONNX file outputs the segmentation only")
    layers = attention_layers(plan)
    if not layers:
        raise UNetGenError(f"{runner.source}: has no attention gates (skip_gate: none); attention maps need "
                           "skip_gate: attention or grid_attention")
    return {key: nearest_on_output(plan, name) for key, name in layers.items()}


def _label_dtype(classes: int) -> Any:
    return np.uint8 if max(classes, 2) <= 256 else np.uint16 if classes <= 65536 else np.int32


def _run(
    runner: Runner, pixels: np.ndarray, layout: TileLayout, output: Output, progress: bool, fixed_batch: int | None,
    extra: int = 0,
) -> np.ndarray:
    """Cut the tiles, run them in batches and stitch their outputs: each pixel from the tile that owns it (exact)
    or a weighted sum of the tiles over it (blend). ``extra``: channels the runner adds after the network's (the
    attention maps)."""
    size = layout.image_size
    label_dtype = _label_dtype(layout.plan.output_shape[0])
    classes = layout.plan.output_shape[0] + extra
    exact = layout.mode == "exact"
    if exact:  # each pixel is written once, by the tile that owns it
        result = np.empty(size, label_dtype) if output == "labels" else np.empty((classes, *size), np.float32)
        total = weight = None
    else:
        total = np.zeros((classes, *size), np.float32)
        weight = np.zeros(size, np.float32)
        result = None
    windows = [[_indices(axis.starts[k], axis.window, axis.size) for k in range(axis.count)] for axis in layout.axes]
    ramps = [[np.asarray(axis.weights(k), np.float32) for k in range(axis.count)] for axis in layout.axes]
    tiles = list(layout.tiles())
    threshold = 0.0 if layout.plan.final_activation == "none" else 0.5
    # tqdm writes to standard error, and only where it is a terminal (disable=None)
    bar = tqdm(total=layout.count, desc="tiles", unit="tile", file=sys.stderr, disable=None if progress else True)
    pixels_per_tile = math.prod(size) / layout.count
    try:
        for first in range(0, len(tiles), layout.batch):
            group = tiles[first : first + layout.batch]
            batch = np.stack([_cut(pixels, windows, tile) for tile in group])
            if fixed_batch is not None and len(group) < fixed_batch:  # a static file takes only full batches
                batch = np.concatenate([batch, np.repeat(batch[-1:], fixed_batch - len(group), axis=0)])
            outputs = runner(batch)
            expected = (len(batch), classes, *layout.out)
            if tuple(outputs.shape) != expected:
                raise UNetGenError(
                    f"{runner.source}: returned shape {tuple(outputs.shape)} for a batch of "
                    f"{tuple(batch.shape)}; the plan expects {expected}"
                )
            for tile, out in zip(group, outputs):
                if exact:
                    _keep(result, out, layout, tile, output, threshold)
                else:
                    _blend(total, weight, out, layout, tile, ramps)
            bar.update(len(group))
            if not bar.disable:
                rate = pixels_per_tile * bar.n / max(bar.format_dict["elapsed"], 1e-9)
                bar.set_postfix_str(f"{rate / 1e6:.2f} Mpx/s")
    finally:
        bar.close()
    if exact:
        return result
    total /= weight  # every pixel has weight > 0: usable tile outputs cover the image
    return _labels(total, threshold, label_dtype) if output == "labels" else total


def _indices(start: int, length: int, size: int) -> np.ndarray:
    """Pixel indices of a window along one axis, mirrored where it reaches past the image."""
    return np.fromiter((reflect(p, size) for p in range(start, start + length)), dtype=np.intp, count=length)


def _cut(pixels: np.ndarray, windows: list[list[np.ndarray]], tile: tuple[int, ...]) -> np.ndarray:
    """One tile's input, float32 ``(C, *window)``."""
    index = np.ix_(*(windows[axis][k] for axis, k in enumerate(tile)))
    return np.ascontiguousarray(pixels[(slice(None), *index)], dtype=np.float32)


def _labels(values: np.ndarray, threshold: float, dtype: Any) -> np.ndarray:
    """Each pixel's class: the largest channel, or one channel above ``threshold``."""
    if values.shape[0] == 1:
        return (values[0] > threshold).astype(dtype)
    return values.argmax(axis=0).astype(dtype)


def _keep(
    result: np.ndarray, out: np.ndarray, layout: TileLayout, tile: tuple[int, ...], output: Output, threshold: float
) -> None:
    """Exact stitching: copy the pixels this tile owns."""
    source, target = [], []
    for axis, k in zip(layout.axes, tile):
        lo, hi = axis.keep(k)
        if lo >= hi:
            return
        origin = axis.covers(k)[0]
        source.append(slice(lo - origin, hi - origin))
        target.append(slice(lo, hi))
    part = out[(slice(None), *source)]
    if output == "labels":
        result[tuple(target)] = _labels(part, threshold, result.dtype)
    else:
        result[(slice(None), *target)] = part


def _blend(
    total: np.ndarray, weight: np.ndarray, out: np.ndarray, layout: TileLayout, tile: tuple[int, ...],
    ramps: list[list[np.ndarray]],
) -> None:
    """Blend stitching: add this tile's weighted output where it lies over the image."""
    source, target, window = [], [], None
    for axis_index, (axis, k) in enumerate(zip(layout.axes, tile)):
        origin = axis.covers(k)[0]
        lo, hi = max(origin, 0), min(origin + axis.out, axis.size)
        source.append(slice(lo - origin, hi - origin))
        target.append(slice(lo, hi))
        ramp = ramps[axis_index][k][lo - origin : hi - origin]
        shape = [1] * len(layout.axes)
        shape[axis_index] = ramp.size
        ramp = ramp.reshape(shape)
        window = ramp if window is None else window * ramp
    total[(slice(None), *target)] += out[(slice(None), *source)] * window
    weight[tuple(target)] += window


__all__ = ["predict", "WASTEFUL_TILING"]

