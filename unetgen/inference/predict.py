"""Segment an image or volume of any size by overlap-tiles (Ronneberger et al. 2015, sec. 2, Fig. 2).

:mod:`unetgen.tiling` lays the tiles out (pure integers); this module checks the image, cuts the tiles (mirroring the
image where a tile reaches past its border), runs them in batches on a torch module or an exported ONNX file, and
stitches the outputs into an array the size of the image.

For a network with valid convolutions (and no norm, or batch norm) the stitched result equals one pass over the
whole mirror-padded image, to float rounding: the image mirrored by the network's border plus half the rounding to
a valid size on each side, as ``output: same`` mirrors it. Other networks are blended with a raised-cosine window,
so there are no seams.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np

from ..text import human_bytes
from ..errors import CheckpointError, ExportError, SizeError, UNetGenError
from ..spec.fields import UNetSpec, load_spec
from .tiling import DEFAULT_OVERLAP, TileLayout, plan_tiles, reflect

log = logging.getLogger(__name__)

#: ``predict`` warns when its tiles hold this many times the image's pixels (the paper network's default tiles of a
#: 1024² image: 1.9 times; a 100 KiB budget's 44×44 tiles of a small network: 125 times).
WASTEFUL_TILING = 10.0

Channels = Literal["first", "last"]
Output = Literal["logits", "labels"]

# --- the network: a torch module or an ONNX file -------------------------------------------------------------------


class Runner:
    """Runs batches of tiles through a network: ``runner(batch) → outputs``, numpy float32 in and out.

    Attributes:
        spec: the network's spec.
        source: what the network was loaded from, for messages.
        fixed: ``(batch, tile size)`` when the network only takes one shape (a static ONNX file), else None.
    """

    spec: UNetSpec
    source: str
    fixed: tuple[int, tuple[int, ...]] | None = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def check(self, shape: tuple[int, ...]) -> None:
        """Raise a clear error, before any work, if the network cannot take a batch of ``shape``."""

    @contextmanager
    def running(self, spare: int = 0) -> Iterator[Runner]:
        """Prepare for a run (eval mode) and restore the network afterwards.

        Args:
            spare: bytes of the memory budget a pass leaves unused, which the runner may spend on running faster.
        """
        yield self


class TorchRunner(Runner):
    """A built network (:func:`unetgen.build`, :func:`unetgen.load`), run in eval mode without gradients.

    Where the memory budget has room for a second set of weights beside a pass, tiles go through
    :func:`unetgen.optimize`'s copy of the network (batch norm folded, channels-last maps where exact enough): the
    same outputs within float32 rounding, 1.25× faster for the paper network and 1.7× for ``cicek3d`` on a 2-core
    CPU (``benchmarks/``). Otherwise they go through the network itself.
    """

    def __init__(self, model: Any, source: str = "model") -> None:
        """Args:
        model: a :class:`~unetgen.network.UNet`.
        source: what to call it in messages.
        """
        import torch

        self.torch = torch
        self.model = model
        self.spec = model.spec
        self.source = source
        first = next(model.parameters(), None)
        self.device = first.device if first is not None else torch.device("cpu")
        self.fast: Any = None  # optimize(model), while running() and where the budget has room for it

    @property
    def weight_bytes(self) -> int:
        """Bytes of the network's parameters: what :func:`unetgen.optimize`'s copy adds to a pass, at most."""
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    @contextmanager
    def running(self, spare: int = 0) -> Iterator[Runner]:
        from ..network.optimization import optimize

        was_training = self.model.training
        self.model.eval()  # dropout off, batch norm on its running statistics
        if self.weight_bytes <= spare:
            self.fast = optimize(self.model)
            log.info("%s: running unetgen.optimize's copy (%s)", self.source, ", ".join(self.fast.optimizations))
        else:
            log.info(
                "%s: running the network as it is: optimize's copy (%s of weights) does not fit the memory budget "
                "beside a pass", self.source, human_bytes(self.weight_bytes),
            )
        try:
            with self.torch.inference_mode():
                yield self
        finally:
            self.fast = None
            self.model.train(was_training)

    def check(self, shape: tuple[int, ...]) -> None:
        from ..planning.limits import check_pass_fits
        from ..planning.plan import check_input_size, make_plan

        if self.device.type == "cpu":  # the memory limit is about this machine's memory
            check_pass_fits(make_plan(self.spec, shape[2:]), batch=shape[0])
        else:
            check_input_size(self.spec, shape[2:])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = self.torch.from_numpy(batch).to(self.device)
        return (self.fast if self.fast is not None else self.model)(x).float().cpu().numpy()


class OnnxRunner(Runner):
    """An ONNX file exported by unetgen, run by onnxruntime through :func:`unetgen.runtime.onnx_session` (which
    reads the spec and the size rules from the file's metadata and checks every shape)."""

    def __init__(self, source: str | Path | Any) -> None:
        """Args:
        source: the ``.onnx`` file, or a session from :func:`unetgen.runtime.onnx_session`.

        Raises:
            ExportError: when the file cannot be read, or was not exported by unetgen.
        """
        from ..export.reader import OnnxSession, onnx_session

        self.session = source if isinstance(source, OnnxSession) else onnx_session(source)
        info = self.session.info
        self.spec = info.spec
        self.source = str(info.path)
        if info.static:
            self.fixed = (int(info.batch), tuple(info.export_size))

    def check(self, shape: tuple[int, ...]) -> None:
        self.session.check(shape)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(batch), dtype=np.float32)


def load_model(source: Any, spec: UNetSpec | str | None = None) -> Runner:
    """Open a network to predict with.

    Args:
        source: a built network (:func:`unetgen.build`); a unetgen checkpoint (:func:`unetgen.save`,
            ``unetgen build --save``); a file of weights alone (``torch.save(model.state_dict(), path)``), which
            needs ``spec``; or an ONNX file exported by unetgen (``.onnx``).
        spec: the network's spec (a spec, preset name or YAML path). Needed for a file of weights alone; for a
            checkpoint or an ONNX file, which hold their spec, it must describe the same network.

    Returns:
        A :class:`Runner`.

    Raises:
        CheckpointError: when the weights cannot be read or do not match the spec.
        ExportError: when the ONNX file cannot be read.
        SpecError: when ``spec`` is not valid, or differs from the file's.
    """
    from ..network.unet import UNet

    from ..export.reader import OnnxSession

    if isinstance(source, Runner):
        runner = source
    elif isinstance(source, OnnxSession):
        runner = OnnxRunner(source)
    elif isinstance(source, UNet):
        runner = TorchRunner(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        runner = OnnxRunner(path) if path.suffix.lower() == ".onnx" else _load_weights(path, spec)
    else:
        raise UNetGenError(
            f"model: got {type(source).__name__}; give a network from unetgen.build or unetgen.load, a checkpoint "
            "file or an .onnx file"
        )
    if spec is not None:
        _check_same_network(load_spec(spec), runner)
    return runner


def _load_weights(path: Path, spec: UNetSpec | str | None) -> Runner:
    import torch

    from ..network.checkpoint import FORMAT, load
    from ..network.unet import build

    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated zip, a pickle that needs code, not a torch file at all
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not a readable checkpoint ({first[:160]})") from None
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        return TorchRunner(load(path), str(path))
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(
            f"{path}: neither a unetgen checkpoint nor a state dict (a mapping of names to tensors)"
        )
    if spec is None:
        raise CheckpointError(
            f"{path}: holds weights without a spec; give the spec they belong to (SPEC, or spec=...)"
        )
    network = load_spec(spec)
    model = build(network)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(payload))
    unexpected = sorted(set(payload) - set(expected))
    wrong = [k for k in expected if k in payload and payload[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
        for key in wrong[:3]:
            parts.append(f"{key} has shape {tuple(payload[key].shape)}, the spec needs {tuple(expected[key].shape)}")
        raise CheckpointError(f"{path}: weights do not match the spec '{network.name}': {'; '.join(parts)}")
    model.load_state_dict(payload)
    return TorchRunner(model, str(path))


def _check_same_network(spec: UNetSpec, runner: Runner) -> None:
    from ..errors import SpecError

    ignore = {"name", "description", "input_size"}
    mine = spec.model_dump(exclude=ignore)
    theirs = runner.spec.model_dump(exclude=ignore)
    if mine != theirs:
        fields = [key for key in mine if mine[key] != theirs.get(key)]
        shown = ", ".join(f"{key}: {theirs.get(key)!r} in the file, {mine[key]!r} in the spec" for key in fields[:3])
        raise SpecError(f"{runner.source}: holds another network than the spec '{spec.name}' ({shown})")


# --- the image -----------------------------------------------------------------------------------------------------


def check_image(image: Any, spec: UNetSpec, channels: Channels = "first", where: str = "image") -> np.ndarray:
    """Check an image against the network and return it as ``(channels, *spatial)`` (a view where possible).

    Layout: an image with one axis per spatial axis has one channel; one more axis holds the channels, first
    (``(C, H, W)``, torch's layout) or last (``(H, W, C)``, image files') as ``channels`` says.

    Args:
        image: a numpy array (or a torch tensor) of integers or floats.
        spec: the network.
        channels: where the channel axis is: ``first`` or ``last``.
        where: what to call the image in messages (a file name).

    Returns:
        The image as ``(in_channels, *spatial)``, in its own dtype.

    Raises:
        UNetGenError: for an empty array, a dtype that is not integer or float (bool, complex, object, text),
            NaN or infinite values.
        SizeError: for the wrong number of axes, or a channel count that is not the network's.
    """
    if channels not in ("first", "last"):
        raise UNetGenError(f"channels {channels!r}: give 'first' or 'last'")
    if type(image).__module__.startswith("torch"):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        try:
            image = np.asarray(image)
        except (ValueError, TypeError) as exc:
            raise UNetGenError(f"{where}: not an array ({exc})") from None
    kind = image.dtype.kind
    if kind not in "uif":
        what = {"b": "booleans", "c": "complex numbers", "O": "Python objects", "U": "text", "S": "bytes"}.get(
            kind, f"values of type {image.dtype}"
        )
        raise UNetGenError(f"{where}: holds {what}; give integers or floats (e.g. image.astype('float32'))")
    dims, cin = spec.spatial_dims, spec.in_channels
    spatial = ", ".join(["H", "W"] if dims == 2 else [f"axis {i}" for i in range(dims)] if dims == 3 else ["L"])
    layouts = f"({cin}, {spatial}), or ({spatial}, {cin}) with channels last"
    if cin == 1:
        layouts = f"({spatial}), {layouts}"
    shape = tuple(image.shape)
    if image.ndim == dims:
        if cin != 1:
            raise SizeError(
                f"{where}: shape {shape} has no channel axis; the {dims}D network takes {cin} channels: {layouts}"
            )
        image = image[np.newaxis]
    elif image.ndim == dims + 1:
        if channels == "last":
            image = np.moveaxis(image, -1, 0)
        if image.shape[0] != cin:
            other = shape[0] if channels == "last" else shape[-1]
            hint = ""
            if cin == 1 and image.shape[0] in (3, 4):
                hint = "; convert a colour image to grey first (e.g. Pillow's Image.convert('L'))"
            if other == cin:
                flip = "first" if channels == "last" else "last"
                hint = (
                    f"; its {flip} axis has {cin}: if the channels are {flip}, say so (channels='{flip}', "
                    f"--channels-{flip})"
                )
            raise SizeError(
                f"{where}: shape {shape} has {image.shape[0]} channels (channels {channels}); the network takes "
                f"{cin}{hint}"
            )
    else:
        raise SizeError(f"{where}: shape {shape} has {image.ndim} axes; the {dims}D network takes {layouts}")
    if image.size == 0:
        raise UNetGenError(f"{where}: shape {shape} is empty; give an image with pixels")
    if kind == "f":
        finite = np.isfinite(image)
        if not finite.all():
            bad = image.size - int(finite.sum())
            first = tuple(int(i) for i in np.argwhere(~finite)[0])
            raise UNetGenError(
                f"{where}: {bad} NaN or infinite value{'s' if bad > 1 else ''} (first at {first} in (C, *spatial)); "
                "replace them (e.g. numpy.nan_to_num) before predicting"
            )
        if image.dtype.itemsize > 4 and np.abs(image).max() > np.finfo(np.float32).max:
            raise UNetGenError(f"{where}: values beyond the range of float32, which the network computes in")
    return image


# --- progress ------------------------------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on a terminal: tiles done, pixels per second, time left. Silent elsewhere."""

    def __init__(self, total: int, pixels: int, enabled: bool, stream: TextIO | None = None) -> None:
        """Args:
        total: tiles to run.
        pixels: output pixels in all (for the rate).
        enabled: whether to show anything.
        stream: where (default standard error); nothing is shown unless it is a terminal.
        """
        self.stream = stream if stream is not None else sys.stderr
        self.on = bool(enabled) and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total, self.pixels, self.done = total, pixels, 0
        self.started = time.perf_counter()
        self.shown = 0.0

    def update(self, tiles: int) -> None:
        """Count ``tiles`` more tiles done."""
        self.done += tiles
        now = time.perf_counter()
        if self.on and (now - self.shown > 0.2 or self.done == self.total):
            self.shown = now
            elapsed = now - self.started
            fraction = self.done / max(self.total, 1)
            bar = "#" * int(30 * fraction)
            rate = self.pixels * fraction / max(elapsed, 1e-9)
            left = elapsed / fraction - elapsed if fraction else 0.0
            self.stream.write(
                f"\rtiles {self.done}/{self.total} [{bar:<30}] {100 * fraction:3.0f}%  "
                f"{rate / 1e6:.2f} Mpx/s  {int(left) // 60}:{int(left) % 60:02d} left "
            )
            self.stream.flush()

    def close(self) -> None:
        """End the line."""
        if self.on:
            self.stream.write("\n")
            self.stream.flush()


# --- running and stitching -----------------------------------------------------------------------------------------


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
) -> np.ndarray:
    """Segment an image or volume of any size by overlap-tiles; the output has the image's size.

    Each tile's input is the network's input size and its output the part of the map it predicts; where a tile
    reaches past the image, the image is mirrored, as in Ronneberger et al. 2015 (Fig. 2). With valid convolutions
    (and no norm, or batch norm) the result equals one pass of the network over the whole image mirrored by its
    border plus half the rounding to a valid size on each side (what ``output: same`` does), to float rounding;
    otherwise overlapping tiles are blended with a raised-cosine window, so there are no seams. The network runs in
    eval mode (dropout off, batch norm on its running statistics), without gradients.

    Args:
        model: a network from :func:`unetgen.build` or :func:`unetgen.load` (run where its weights are), a
            checkpoint path, or an ONNX file exported by unetgen (run by onnxruntime; same result).
        image: ``(C, *spatial)``, ``(*spatial)`` for one channel, or ``(*spatial, C)`` with ``channels="last"``;
            integers or floats, passed to the network as float32 without rescaling.
        channels: where the channel axis of ``image`` is, ``first`` or ``last``.
        output: ``logits``: float32 ``(out_channels, *spatial)``, what the network outputs (probabilities after a
            final sigmoid or softmax); ``labels``: the class of each pixel, ``(*spatial)``, uint8 (uint16 above 256
            classes); with one output channel, the pixels above 0 (0.5 after a final activation) are 1.
        tile_size: the tile's input size per axis (one value for all), at most; default the largest that fits
            ``memory``. See :func:`unetgen.tiling.plan_tiles`.
        memory: the memory one pass may take (bytes or e.g. ``"2GiB"``), from the plan's estimate; default 1 GiB,
            at most :func:`unetgen.memory_limit`.
        batch_size: tiles per pass; default as many as fit ``memory`` (at most 16).
        overlap: blended networks: the least overlap of neighbouring tiles, a fraction of the tile (0 to 0.5].
        progress: show a progress bar on standard error when it is a terminal.

    Returns:
        The logits or labels, the image's spatial size.

    Raises:
        UNetGenError: for an image the network cannot take (dtype, axes, channels, NaN or infinite values,
            emptiness; one message before any work), bad options, or a model that cannot be opened.
        ResourceError: when even the smallest tile does not fit ``memory``.
    """
    if output not in ("logits", "labels"):
        raise UNetGenError(f"output {output!r}: give 'logits' or 'labels'")
    runner = load_model(model)
    spec = runner.spec
    pixels = check_image(image, spec, channels)
    size = tuple(int(n) for n in pixels.shape[1:])
    fixed_batch = None
    if runner.fixed is not None:
        fixed_batch, fixed_size = runner.fixed
        tile_size, batch_size = fixed_size, fixed_batch
    layout = plan_tiles(spec, size, tile_size=tile_size, memory=memory, batch_size=batch_size, overlap=overlap)
    if runner.fixed is not None and layout.window != runner.fixed[1]:
        raise ExportError(
            f"{runner.source}: takes only {'×'.join(map(str, runner.fixed[1]))} (static shapes), which cannot tile "
            f"an image of {'×'.join(map(str, size))}; export it with dynamic shapes"
        )
    runner.check((layout.batch if fixed_batch is None else fixed_batch, spec.in_channels, *layout.window))
    log.info("%s: %s", runner.source, layout.describe())
    passes = layout.count * math.prod(layout.window) / math.prod(size)
    if passes > WASTEFUL_TILING:
        fix = "a larger --tile-size / tile_size=" if tile_size is not None else (
            "a larger memory budget (--memory, memory=)"
        )
        log.warning(
            "%d tiles of %s: each image pixel goes through the network %.0f times (small tiles are mostly border); "
            "%s gives larger tiles", layout.count, "×".join(map(str, layout.window)), passes, fix,
        )
    with runner.running(spare=layout.budget - layout.peak_bytes):
        return _run(runner, pixels, layout, output, progress, fixed_batch)


def _run(
    runner: Runner, pixels: np.ndarray, layout: TileLayout, output: Output, progress: bool, fixed_batch: int | None
) -> np.ndarray:
    spec = layout.spec
    size = layout.image_size
    classes = spec.out_channels
    label_dtype = np.uint8 if max(classes, 2) <= 256 else np.uint16 if classes <= 65536 else np.int32
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
    bar = Progress(layout.count, math.prod(size), progress)
    tiles = list(layout.tiles())
    threshold = 0.0 if spec.final_activation == "none" else 0.5
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


__all__ = ["predict", "load_model", "check_image", "Runner", "TorchRunner", "OnnxRunner", "Progress"]

