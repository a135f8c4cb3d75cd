"""Lower-precision ONNX files: int8 calibrated on the user's images, float16 for GPU runtimes, checked before written.

:func:`unetgen.export_onnx` writes and checks the float32 file first; with ``quantize="int8"`` or
``precision="fp16"`` it then hands the staged file to :func:`lower_precision`, which makes the file it writes instead:

* **int8** — static quantization by onnxruntime (``quantize_static``): QDQ format, each convolution's weights
  quantized per output channel (int8), activations per tensor (uint8, the u8×s8 pairs VNNI multiplies), their ranges
  calibrated (min–max) on the user's images *tiled as predict tiles them*: the images go through
  :func:`unetgen.predict` itself with a runner that records its tiles (intensity normalisation, mirroring and tile
  sizes included), so calibration sees exactly what the file will be given. Where this CPU has no VNNI the weights
  keep 7 bits (``reduce_range``): AVX2's u8×s8 products are summed in 16 bits, which full 8-bit weights can
  overflow (one log line says so). Convolutions that read few channels (at most :data:`FLOAT_BELOW_CHANNELS`: the
  first one, on the image) stay float32: their dot products are too short for int8 kernels to gain, and
  onnxruntime's int8 3D kernel ran the ``cicek3d`` preset's first convolution (3 channels in) 4.8× slower than its
  float32 one (318 against 66 ms, a third of the whole int8 pass); in 2D (the paper's 1 channel) the two tie.
* **where int8 is no faster** the float32 file is kept, with one log line saying why: the export times a tile
  through both files, and onnxruntime's int8 kernels lose to its float32 ones on some networks (3D maps with few
  channels, measured 1.4× slower), where an int8 file would only lose accuracy.
* **fp16** — every weight and operation in float16 (onnxruntime's converter), the input and output float32.

The new file is checked against the float32 network on held-out images, ones calibration did not see (by default
every fifth image, at least one; or images of the user's choice): both segment them by :func:`unetgen.predict`,
tiles included, and the label maps and outputs are compared — pixel label agreement, Dice of each class between
the two label maps, the largest output error. A file below the thresholds (:class:`Thresholds`) is refused, with
how far it missed, and nothing is written. A calibration set that cannot represent the data (constant images, say)
gives ranges that clip real images, and is refused by this check. The metadata records the precision, a summary
of the calibration and the agreement measured (keys in :mod:`unetgen.export.contract`).

Why a check and not a hope: quantized U-Nets are known to collapse (QNNPACK issue 73, AIMET issue 3041): an
activation range learnt from unrepresentative images clips every real one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import convert_float_to_float16

from ..errors import ExportError
from ..files import Staging
from ..hardware import missing_instructions
from ..inference.image_checks import check_image
from ..inference.images import INPUT_SUFFIXES, read_image
from ..inference.predict import predict
from ..inference.runners import OnnxRunner, Runner
from ..planning.plan import Plan, make_plan
from ..spec.fields import UNetSpec
from ..text import size_text
from .contract import META_AGREEMENT, META_CALIBRATION, META_PRECISION

log = logging.getLogger(__name__)

#: The precisions a file can be written in.
FILE_PRECISIONS = ("fp32", "fp16", "int8")
#: Tiles calibration runs at most, spread evenly over the calibration images: min–max ranges settle within a few
#: dozen tiles, and each costs a pass of the network with every intermediate output kept.
MAX_CALIBRATION_TILES = 32
#: The share of the images held out for the check when no check images are given (at least one image).
DEFAULT_HOLDOUT = 0.2
#: The float32 file is kept when the int8 one runs this many times slower than it, or more: onnxruntime's int8
#: kernels lose to its float32 ones on some networks (3D maps with few channels), and then int8 only costs
#: accuracy. The margin keeps timing noise from deciding when the two are about as fast.
SLOWER = 1.1


@dataclass(frozen=True)
class Thresholds:
    """What a lower-precision file must reach on the held-out images, against the float32 network, to be written.

    Attributes:
        min_agreement: the least share of pixels whose label is the float32 network's (0–1).
        min_dice: the least Dice, per class present in either label map, between the two label maps (0–1).
        max_error: the largest ``max |output − float32 output| / max |float32 output|`` allowed; None: reported,
            not checked.
    """

    min_agreement: float = 0.99
    min_dice: float = 0.95
    max_error: float | None = None

    def __post_init__(self) -> None:
        for name in ("min_agreement", "min_dice"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ExportError(f"{name} {value!r}: give a share from 0 to 1 (e.g. 0.99)")
        if self.max_error is not None and (isinstance(self.max_error, bool) or not self.max_error > 0):
            raise ExportError(f"max_error {self.max_error!r}: give a positive share of the output's scale (e.g. 0.1)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"min_agreement": self.min_agreement, "min_dice": self.min_dice, "max_error": self.max_error}


@dataclass(frozen=True)
class Images:
    """Images read for calibration or checking, each checked against the network.

    Attributes:
        source: where they came from, in words.
        names: one name per image (file names, or ``source[i]``).
        pixels: each image as ``(in_channels, *spatial)``.
    """

    source: str
    names: tuple[str, ...]
    pixels: tuple[np.ndarray, ...]

    def pick(self, indices: Sequence[int], source: str) -> Images:
        """The images at ``indices``, under another description."""
        return Images(source, tuple(self.names[i] for i in indices), tuple(self.pixels[i] for i in indices))


@dataclass(frozen=True)
class Request:
    """What :func:`lower_precision` is asked to make (built and checked by :func:`make_request` before the export).

    Attributes:
        precision: ``int8`` or ``fp16``.
        calibration: the images int8 ranges are calibrated on (None for fp16).
        check: the held-out images the file is checked on (None: fp16 without images, checked on random inputs).
        thresholds: what the check must reach.
        memory: the memory budget of one pass while tiling (as :func:`unetgen.predict`'s ``memory``).
    """

    precision: str
    calibration: Images | None
    check: Images | None
    thresholds: Thresholds
    memory: int | str | None = None


@dataclass(frozen=True)
class Agreement:
    """A lower-precision file against the float32 network on the same images.

    Attributes:
        source: the images, in words (``2 images held out of cells/``).
        images: how many.
        pixels: how many output pixels were compared.
        agreement: the share of pixels with the same label.
        dice: Dice of each class between the two label maps (None where neither has the class).
        max_error: ``max |output − float32 output|`` over every pixel and channel.
        scale: ``max |float32 output|``.
        worst_image: the image with the lowest agreement, and that agreement.
    """

    source: str
    images: int
    pixels: int
    agreement: float
    dice: tuple[float | None, ...]
    max_error: float
    scale: float
    worst_image: tuple[str, float]

    @property
    def relative_error(self) -> float:
        """``max_error / scale``."""
        return self.max_error / max(self.scale, 1e-12)

    def misses(self, thresholds: Thresholds) -> list[str]:
        """What falls short of ``thresholds``, one phrase each, with by how much (empty when nothing does)."""
        found = []
        if self.agreement < thresholds.min_agreement:
            short = 100 * (thresholds.min_agreement - self.agreement)
            found.append(
                f"labels agree on {100 * self.agreement:.2f}% of pixels (needs {100 * thresholds.min_agreement:.2f}%: "
                f"{short:.2f} points short)"
            )
        for label, dice in enumerate(self.dice):
            if dice is not None and dice < thresholds.min_dice:
                found.append(
                    f"Dice of class {label} {dice:.3f} (needs {thresholds.min_dice:.3f}: "
                    f"{thresholds.min_dice - dice:.3f} short)"
                )
        if thresholds.max_error is not None and self.relative_error > thresholds.max_error:
            found.append(
                f"output error {self.relative_error:.3g} of the scale (allowed {thresholds.max_error:.3g}: "
                f"{self.relative_error / thresholds.max_error:.1f}× over)"
            )
        return found

    def describe(self) -> str:
        """One line: agreement, Dice per class, output error."""
        dice = " / ".join("—" if d is None else f"{d:.4f}" for d in self.dice)
        return (
            f"labels agree on {100 * self.agreement:.3f}% of {self.pixels:,} pixels (worst image "
            f"{self.worst_image[0]}: {100 * self.worst_image[1]:.3f}%); Dice per class {dice}; max |Δ output| "
            f"{self.max_error:.3g} = {100 * self.relative_error:.2f}% of the scale ({self.scale:.3g})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (what the metadata ``unetgen.agreement`` holds, with the thresholds)."""
        return {
            "source": self.source,
            "images": self.images,
            "pixels": self.pixels,
            "label_agreement": round(self.agreement, 6),
            "dice": [None if d is None else round(d, 6) for d in self.dice],
            "max_error": float(f"{self.max_error:.4g}"),
            "scale": float(f"{self.scale:.4g}"),
            "worst_image": {"name": self.worst_image[0], "label_agreement": round(self.worst_image[1], 6)},
        }


@dataclass(frozen=True)
class PrecisionReport:
    """What :func:`lower_precision` made and measured.

    Attributes:
        precision: the file's precision: ``int8`` or ``fp16``, or ``fp32`` when int8 ran slower than float32 and
            the float32 file was kept (``fallback`` says so).
        calibration: the calibration summary written to the metadata (empty for fp16).
        agreement: the check against the float32 network (None after a fallback: nothing to check).
        thresholds: what it had to reach.
        errors: what fell short (empty when the file was accepted).
        seconds: time spent quantizing and checking.
        fallback: why the float32 file was kept, in words ('' when it was not).
    """

    precision: str
    calibration: dict[str, Any]
    agreement: Agreement | None
    thresholds: Thresholds
    errors: tuple[str, ...] = ()
    seconds: float = 0.0
    fallback: str = ""

    def lines(self) -> list[str]:
        """The lines ``unetgen export`` prints about it."""
        if self.agreement is None:
            return [f"int8: {self.fallback}"]
        out = []
        if self.calibration:
            c = self.calibration
            out.append(
                f"quantized to int8 ({c['format']}, weights per channel{', 7-bit' if c['reduce_range'] else ''}, "
                f"activations {c['activations']}): calibrated ({c['method']}) on {c['tiles_used']} tiles of "
                f"{c['images']} image{'s' if c['images'] != 1 else ''} from {c['source']}"
                + (f"; {c['float32_convolutions']} convolution(s) on ≤ {FLOAT_BELOW_CHANNELS} channels kept float32"
                   if c.get("float32_convolutions") else "")
            )
        else:
            out.append("converted to float16 (weights and operations; input and output float32)")
        t = self.thresholds
        needs = f"needs ≥ {100 * t.min_agreement:.2f}% agreement, Dice ≥ {t.min_dice:.3f}" + (
            f", error ≤ {t.max_error:.3g}" if t.max_error is not None else ""
        )
        out.append(f"checked against the float32 network on {self.agreement.source} ({needs}):")
        out.append(f"  {self.agreement.describe()}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "precision": self.precision,
            "calibration": self.calibration,
            "agreement": self.agreement.to_dict() if self.agreement is not None else None,
            "thresholds": self.thresholds.to_dict(),
            "errors": list(self.errors),
            "seconds": round(self.seconds, 3),
            "fallback": self.fallback,
        }


# --- the request: images read and checked before the export starts -------------------------------------------


def make_request(
    spec: UNetSpec,
    *,
    quantize: str | None,
    precision: str,
    calibration: Any,
    check_images: Any,
    thresholds: Thresholds | dict[str, Any] | None,
    holdout: float = DEFAULT_HOLDOUT,
    memory: int | str | None = None,
) -> Request | None:
    """Check the options of a lower-precision export and read its images, before any export work.

    Args:
        spec: the network.
        quantize: ``int8``, or None.
        precision: the file's precision, ``fp32`` (default), ``fp16`` or ``int8`` (the same as ``quantize``).
        calibration: int8: a folder of images, an ``.npy`` file of ``(N, C, *spatial)`` (or ``(N, *spatial)`` for
            one channel), or a sequence of arrays.
        check_images: the images to check on, in the same forms; default: held out of ``calibration``.
        thresholds: what the check must reach (:class:`Thresholds` or its fields as a dict).
        holdout: the share of ``calibration`` held out when no ``check_images`` are given.
        memory: the memory budget of one pass while tiling.

    Returns:
        The request, or None for a float32 file.

    Raises:
        ExportError: for contradicting or missing options, unreadable images, or too few of them.
    """
    if quantize is not None and quantize != "int8":
        raise ExportError(f"quantize {quantize!r}: give 'int8' (or leave it out for float32)")
    if precision not in FILE_PRECISIONS:
        raise ExportError(f"precision {precision!r}: give one of {', '.join(FILE_PRECISIONS)}")
    if quantize is not None and precision not in ("fp32", quantize):
        raise ExportError(f"--quantize {quantize} and --precision {precision}: give one of them")
    wanted = quantize or precision
    if wanted == "fp32":
        if calibration is not None or check_images is not None:
            raise ExportError("--calibration / --check-images: calibrate an int8 file; add --quantize int8")
        return None
    if not isinstance(thresholds, Thresholds):
        try:
            thresholds = Thresholds(**(thresholds or {}))
        except TypeError as exc:
            raise ExportError(f"thresholds: {exc}; give min_agreement, min_dice, max_error") from None
    if wanted == "fp16":
        if calibration is not None:
            raise ExportError("--calibration: float16 needs no calibration; give the images to check on with "
                              "--check-images, or leave it out")
        check = _given(read_images(check_images, spec, "check images")) if check_images is not None else None
        return Request("fp16", None, check, thresholds, memory)
    if calibration is None:
        raise ExportError(
            "--quantize int8 needs --calibration DIR_OR_NPY: images like the ones the network will segment (a "
            "folder of images or an .npy stack); their tiles set the int8 ranges"
        )
    images = read_images(calibration, spec, "calibration")
    if check_images is not None:
        return Request("int8", images, _given(read_images(check_images, spec, "check images")), thresholds, memory)
    if not 0 < holdout < 1:
        raise ExportError(f"holdout {holdout!r}: give the share of calibration images held out, above 0 and below 1")
    count = len(images.names)
    if count < 2:
        raise ExportError(
            f"{images.source}: {count} image; give at least 2 (one is held out to check the file on), or the "
            "images to check on with --check-images"
        )
    held = held_out(count, holdout)
    calibrate = [i for i in range(count) if i not in held]
    shown = f"{len(held)} image{'s' if len(held) != 1 else ''} held out of {images.source}"
    return Request(
        "int8", images.pick(calibrate, images.source), images.pick(sorted(held), shown), thresholds, memory
    )


def _given(images: Images) -> Images:
    """Check images the user gave, described for messages: ``5 images from cells/``."""
    count = len(images.names)
    return Images(f"{count} image{'s' if count != 1 else ''} from {images.source}", images.names, images.pixels)


def held_out(count: int, share: float) -> set[int]:
    """The indices held out of ``count`` images: ``round(count · share)`` of them (at least one), spread evenly
    and ending with the last (10 images at 0.2: 4 and 9)."""
    wanted = min(count - 1, max(1, round(count * share)))
    return {count - 1 - int(j * count / wanted) for j in range(wanted)}


def read_images(source: Any, spec: UNetSpec, what: str) -> Images:
    """Read calibration or check images: a folder, an ``.npy`` stack, or a sequence of arrays.

    A folder's files are read in name order (``.npy``, PNG, TIFF, JPEG, BMP; image files channels last, ``.npy``
    channels first); an ``.npy`` file holds ``(N, C, *spatial)``, or ``(N, *spatial)`` for a network with one
    input channel.

    Args:
        source: the folder, the ``.npy`` file, or a list of arrays ``(C, *spatial)``.
        spec: the network the images are for.
        what: what to call them in messages.

    Returns:
        The images, each ``(in_channels, *spatial)``.

    Raises:
        ExportError: when there is nothing to read, or a file cannot be read.
        UNetGenError: for an image the network cannot take (the message names it).
    """
    dims = spec.spatial_dims
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in INPUT_SUFFIXES and p.is_file())
            if not files:
                raise ExportError(f"{path}: no images ({', '.join(INPUT_SUFFIXES)}) in this folder for the {what}")
            pixels = []
            for file in files:
                image = read_image(file)
                layout = "last" if image.channels_last else "first"
                pixels.append(check_image(image.pixels, spec, layout, where=str(file)))
            return Images(f"{path}/", tuple(p.name for p in files), tuple(pixels))
        if path.suffix.lower() != ".npy":
            raise ExportError(f"{path}: give a folder of images or an .npy file of (N, C, *spatial) for the {what}")
        if not path.is_file():
            raise ExportError(f"{path}: no such file")
        try:
            stack = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ExportError(f"{path}: cannot read it as .npy ({exc})") from None
        if stack.ndim == dims + 1 and spec.in_channels == 1:
            stack = stack[:, None]
        if stack.ndim != dims + 2:
            raise ExportError(
                f"{path}: shape {stack.shape}; the {what} .npy holds a stack (N, {spec.in_channels}, "
                f"{', '.join(['size'] * dims)})" + (f" or (N, {', '.join(['size'] * dims)})" if spec.in_channels == 1
                                                    else "")
            )
        names = tuple(f"{path.name}[{i}]" for i in range(len(stack)))
        pixels = tuple(check_image(image, spec, "first", where=name) for name, image in zip(names, stack))
        return Images(str(path), names, pixels)
    if isinstance(source, np.ndarray) or not isinstance(source, Sequence) or not source:
        raise ExportError(f"{what}: give a folder, an .npy file, or a list of arrays (C, *spatial)")
    names = tuple(f"{what}[{i}]" for i in range(len(source)))
    pixels = tuple(check_image(image, spec, "first", where=name) for name, image in zip(names, source))
    return Images(f"{len(pixels)} arrays", names, pixels)


# --- making the file ---------------------------------------------------------------------------------------------


class _TileRecorder(Runner):
    """A runner that keeps the tiles :func:`unetgen.predict` gives it and returns zeros: calibration sees exactly
    the tiles (normalised, mirrored, sized) that the ONNX file will be given."""

    whole = True  # the file runs the whole network, mirroring included, like OnnxRunner

    def __init__(self, spec: UNetSpec, intensity: dict[str, Any] | None, fixed: Any) -> None:
        """Args:
        spec: the network.
        intensity: the network's intensity normalisation (what predict applies to each image first).
        fixed: ``(batch, size)`` of a static file, else None.
        """
        self.spec = spec
        self.source = "calibration"
        self.intensity = intensity
        self.fixed = fixed
        self.tiles: list[np.ndarray] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.tiles.extend(np.array(tile[None]) for tile in batch)
        plan = make_plan(self.spec, batch.shape[2:])
        return np.zeros((len(batch), *plan.output_shape), np.float32)


class _Tiles(CalibrationDataReader):
    """onnxruntime's calibration reader over recorded tiles."""

    def __init__(self, input_name: str, tiles: Sequence[np.ndarray]) -> None:
        self.feeds = iter([{input_name: tile} for tile in tiles])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def calibration_tiles(
    spec: UNetSpec, images: Images, *, intensity: Any, fixed: Any, memory: int | str | None
) -> tuple[list[np.ndarray], int, tuple[int, ...]]:
    """The tiles :func:`unetgen.predict` would give an ONNX file for ``images``, at most
    :data:`MAX_CALIBRATION_TILES` of them spread evenly.

    Returns:
        The chosen tiles (each ``(1, C, *window)``), how many there were in all, and the largest window.
    """
    recorder = _TileRecorder(spec, intensity, fixed)
    for pixels in images.pixels:
        predict(recorder, pixels, channels="first", memory=memory)
    tiles = recorder.tiles
    total = len(tiles)
    if total > MAX_CALIBRATION_TILES:
        step = total / MAX_CALIBRATION_TILES
        tiles = [tiles[int(i * step)] for i in range(MAX_CALIBRATION_TILES)]
    window = max((tuple(t.shape[2:]) for t in tiles), key=math.prod)
    return tiles, total, window


#: Convolutions reading this many channels or fewer stay float32 in an int8 file (see the module's docstring).
FLOAT_BELOW_CHANNELS = 4


def few_channel_convolutions(model: onnx.ModelProto) -> list[str]:
    """The convolutions of ``model`` whose weights read at most :data:`FLOAT_BELOW_CHANNELS` channels per group."""
    weights = {tensor.name: tensor for tensor in model.graph.initializer}
    return [node.name for node in model.graph.node
            if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in weights
            and weights[node.input[1]].dims[1] <= FLOAT_BELOW_CHANNELS]


def quantize_int8(source: Path, target: Path, tiles: Sequence[np.ndarray], input_name: str) -> dict[str, Any]:
    """Write the int8 (QDQ) file of the float32 file ``source`` to ``target``, calibrated on ``tiles``.

    Returns:
        What was done, as the metadata's calibration summary records it (without the images' description).
    """
    reason = missing_instructions("int8")
    if reason is not None:
        log.warning(
            "int8: %s (VNNI's 8-bit dot products): weights are kept to 7 bits (reduce_range), since AVX2's u8×s8 "
            "products are summed in 16 bits that full 8-bit weights can overflow", reason,
        )
    rewritten = target.with_name(target.name + ".rewritten.onnx")
    prepared = target.with_name(target.name + ".prepared.onnx")
    try:
        model = onnx.load(str(source))
        ups = up_convolutions_as_convolutions(model)
        moved = shapes_after_activations(model)
        onnx.save(model, str(rewritten))
        # shapes inferred (quantize_static needs them) and constants folded; onnxruntime's symbolic shape
        # inference cannot follow the lattice arithmetic of a dynamic file (floor divisions), ONNX's own suffices
        quant_pre_process(str(rewritten), str(prepared), skip_symbolic_shape=True)
        kept_float = few_channel_convolutions(onnx.load(str(prepared)))
        quantize_static(
            str(prepared), str(target), _Tiles(input_name, tiles), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=reason is not None,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=kept_float,
        )
        quantized = onnx.load(str(target))
        shapes = shapes_of_quantized_tensors(quantized)
        onnx.save(quantized, str(target))
    finally:
        rewritten.unlink(missing_ok=True)
        prepared.unlink(missing_ok=True)
    log.info("int8: %d up-convolutions as 1×1 convolutions and pixel shuffles; %d shapes read after activations, "
             "%d from int8 tensors; %d convolution(s) reading ≤ %d channels kept float32", ups, moved, shapes,
             len(kept_float), FLOAT_BELOW_CHANNELS)
    values = np.concatenate([t.reshape(-1) for t in tiles])
    return {
        "format": "QDQ",
        "weights": "int8 per output channel",
        "float32_convolutions": len(kept_float),
        "activations": "uint8 per tensor",
        "reduce_range": reason is not None,
        "method": "min-max",
        "tiles_used": len(tiles),
        "input_range": [float(f"{values.min():.4g}"), float(f"{values.max():.4g}")],
    }


def up_convolutions_as_convolutions(model: onnx.ModelProto) -> int:
    """Rewrite each transposed convolution whose stride equals its kernel (the U-Net's up-convolution: no overlap,
    no padding) as a 1×1 convolution to ``out·∏k`` channels and a pixel shuffle (Reshape, Transpose, Reshape).

    The same products and sums, in an order onnxruntime can run in int8: its CPU provider has no int8
    ``ConvTranspose``, so a quantized one is dequantized, run in float32 and quantized again, on both sides of
    every up-convolution. Reshape and Transpose move int8 values as they are.

    Args:
        model: a float32 model, changed in place.

    Returns:
        How many were rewritten.
    """
    graph = model.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in graph.node:
        kernel = _stride_equals_kernel(node, weights)
        if kernel is None:
            nodes.append(node)
            continue
        count += 1
        name, dims = node.name or f"up{count}", len(kernel)
        weight = onnx.numpy_helper.to_array(weights[node.input[1]])  # (in, out, *kernel)
        cin, cout = weight.shape[:2]
        block = math.prod(kernel)
        # output channel (a, b, ...)·out + o of the 1×1 convolution is channel o at offset (a, b, ...) of each
        # block: in channels-last memory, onnxruntime's layout for int8 convolutions, each pixel's block of
        # outputs is then contiguous, and the shuffle below moves whole runs of channels
        order = (*range(2, 2 + dims), 1, 0)
        conv_weight = weight.transpose(order).reshape(block * cout, cin, *([1] * dims))
        new = [onnx.numpy_helper.from_array(np.ascontiguousarray(conv_weight), f"{name}.conv.weight")]
        inputs = [node.input[0], new[0].name]
        if len(node.input) > 2 and node.input[2]:
            bias = onnx.numpy_helper.to_array(weights[node.input[2]])
            new.append(onnx.numpy_helper.from_array(np.tile(bias, block), f"{name}.conv.bias"))
            inputs.append(new[1].name)
        new += [
            onnx.numpy_helper.from_array(np.array([*kernel, cout], np.int64), f"{name}.blocks"),
            onnx.numpy_helper.from_array(np.array([cout], np.int64), f"{name}.channels"),
            onnx.numpy_helper.from_array(np.array(kernel, np.int64), f"{name}.kernel"),
            onnx.numpy_helper.from_array(np.array([0], np.int64), f"{name}.0"),
            onnx.numpy_helper.from_array(np.array([1], np.int64), f"{name}.1"),
            onnx.numpy_helper.from_array(np.array([2], np.int64), f"{name}.2"),
            onnx.numpy_helper.from_array(np.array([2 + dims], np.int64), f"{name}.end"),
        ]
        graph.initializer.extend(new)
        h = onnx.helper.make_node
        # written channels-last, between a transpose to it and one back: onnxruntime cancels both against the
        # transposes it puts around its channels-last int8 convolutions
        to_last = [0, *range(2, 2 + dims), 1]
        interleave = [0, *(index for axis in range(dims) for index in (1 + axis, 1 + dims + axis)), 1 + 2 * dims]
        to_first = [0, 1 + dims, *range(1, 1 + dims)]
        nodes += [
            h("Conv", inputs, [f"{name}.conv"], name=f"{name}.conv", kernel_shape=[1] * dims),
            h("Shape", [f"{name}.conv"], [f"{name}.shape"], name=f"{name}.shape"),
            h("Slice", [f"{name}.shape", f"{name}.0", f"{name}.1"], [f"{name}.batch"], name=f"{name}.batch"),
            h("Slice", [f"{name}.shape", f"{name}.2", f"{name}.end"], [f"{name}.size"], name=f"{name}.size"),
            h("Concat", [f"{name}.batch", f"{name}.size", f"{name}.blocks"], [f"{name}.split_shape"], axis=0,
              name=f"{name}.split_shape"),
            h("Mul", [f"{name}.size", f"{name}.kernel"], [f"{name}.up_size"], name=f"{name}.up_size"),
            h("Concat", [f"{name}.batch", f"{name}.up_size", f"{name}.channels"], [f"{name}.up_shape"], axis=0,
              name=f"{name}.up_shape"),
            h("Transpose", [f"{name}.conv"], [f"{name}.last"], perm=to_last, name=f"{name}.last"),
            h("Reshape", [f"{name}.last", f"{name}.split_shape"], [f"{name}.split"], name=f"{name}.split"),
            h("Transpose", [f"{name}.split"], [f"{name}.interleaved"], perm=interleave, name=f"{name}.interleave"),
            h("Reshape", [f"{name}.interleaved", f"{name}.up_shape"], [f"{name}.up"], name=f"{name}.shuffle"),
            h("Transpose", [f"{name}.up"], [node.output[0]], perm=to_first, name=f"{name}.first"),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    unused = [tensor for tensor in graph.initializer if tensor.name not in used]
    for tensor in unused:
        graph.initializer.remove(tensor)
    return count


def _stride_equals_kernel(node: onnx.NodeProto, weights: dict[str, Any]) -> tuple[int, ...] | None:
    """The kernel of a ConvTranspose that :func:`up_convolutions_as_convolutions` can rewrite, else None."""
    if node.op_type != "ConvTranspose" or node.input[1] not in weights:
        return None
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    kernel = tuple(weights[node.input[1]].dims[2:])
    plain = (
        tuple(attributes.get("strides", ())) == kernel
        and not any(attributes.get("pads", ())) and not any(attributes.get("output_padding", ()))
        and all(d == 1 for d in attributes.get("dilations", ())) and attributes.get("group", 1) == 1
        and attributes.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET") and "output_shape" not in attributes
        and (len(node.input) < 3 or not node.input[2] or node.input[2] in weights)
    )
    return kernel if plain else None


#: Operators that keep their input's shape and act on each value alone: a ``Shape`` may read their output instead.
_ELEMENTWISE = {"Relu", "LeakyRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "Softplus", "Gelu",
                "PRelu", "Mish", "HardSwish"}


def shapes_after_activations(model: onnx.ModelProto) -> int:
    """Let every ``Shape`` of a tensor that an activation also reads take the activation's output instead; the
    number moved.

    The exporter takes a skip connection's size from the convolution's output, before its (in-place) ReLU. A
    second reader of the convolution's output keeps the quantizer from fusing convolution and ReLU: the output
    is then quantized over its negative values too (half the 8-bit range lost), dequantized, passed through the
    ReLU and quantized again. The shape is the same after the activation.
    """
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    count = 0
    for node in model.graph.node:
        if node.op_type != "Shape":
            continue
        after = [n for n in readers.get(node.input[0], []) if n.op_type in _ELEMENTWISE and n.input[0] == node.input[0]]
        if after:
            node.input[0] = after[0].output[0]
            count += 1
    return count


def shapes_of_quantized_tensors(model: onnx.ModelProto) -> int:
    """Let every ``Shape`` that reads a dequantized tensor read the int8 tensor instead; the number changed.

    The crops of a dynamic file take the skip connection's size at run time (``Shape``); after quantization that
    reads the float32 copy of the map, so the map is dequantized in full for its shape alone, and the copy stops
    onnxruntime from fusing the quantization pairs around the crop and the pooling (measured: a fifth of an int8
    pass of the paper's network). A shape is the same whatever the type.
    """
    produced = {out: node for node in model.graph.node for out in node.output}
    count = 0
    for node in model.graph.node:
        source = produced.get(node.input[0]) if node.op_type == "Shape" else None
        if source is not None and source.op_type == "DequantizeLinear":
            node.input[0] = source.input[0]
            count += 1
    readers = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    dead = [node for node in model.graph.node if node.op_type == "DequantizeLinear" and node.output[0] not in readers]
    for node in dead:
        model.graph.node.remove(node)
    return count


def to_float16(source: Path, target: Path) -> None:
    """Write the float16 file of the float32 file ``source`` to ``target`` (input and output stay float32)."""
    model = onnx.load(str(source))
    onnx.save(convert_float_to_float16(model, keep_io_types=True), str(target))


def _tidy(path: Path, entries: dict[str, str]) -> None:
    """Write metadata entries into the file at ``path``, and drop what the tools left behind: opset imports no
    node uses (onnxruntime's optimizer declares its own domains), and their own metadata."""
    model = onnx.load(str(path))
    used = {node.domain or "" for node in model.graph.node}
    keep = [entry for entry in model.opset_import if (entry.domain or "") in used or entry.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    props = {entry.key: entry.value for entry in model.metadata_props if not entry.key.startswith("onnx.")}
    props.update(entries)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


# --- the check ------------------------------------------------------------------------------------------------


def _labels(values: np.ndarray, plan: Plan) -> np.ndarray:
    """Each pixel's class, as :func:`unetgen.predict` labels it (the largest channel; one channel: above 0, or 0.5
    after a final activation)."""
    if values.shape[0] == 1:
        return (values[0] > (0.0 if plan.final_activation == "none" else 0.5)).astype(np.int32)
    return values.argmax(axis=0)


def measure_agreement(
    reference: Any, candidate: Any, images: Images, plan: Plan, memory: int | str | None
) -> Agreement:
    """Segment ``images`` with both networks (:func:`unetgen.predict`, tiles included) and compare.

    Args:
        reference: the float32 network (a built network, or a runner).
        candidate: the lower-precision file (a runner or a path).
        images: the images.
        plan: the network's plan (its classes and final activation).
        memory: the memory budget of one pass.

    Returns:
        The comparison.
    """
    classes = max(plan.output_shape[0], 2)
    same = pixels = 0
    max_error = scale = 0.0
    both = np.zeros(classes)
    sizes = np.zeros(classes)
    worst = ("", 1.0)
    for name, image in zip(images.names, images.pixels):
        expected = predict(reference, image, channels="first", memory=memory)
        got = predict(candidate, image, channels="first", memory=memory)
        a, b = _labels(expected, plan), _labels(got, plan)
        equal = int(np.count_nonzero(a == b))
        same += equal
        pixels += a.size
        if equal / a.size < worst[1] or not worst[0]:
            worst = (name, equal / a.size)
        max_error = max(max_error, float(np.max(np.abs(got.astype(np.float64) - expected))))
        scale = max(scale, float(np.max(np.abs(expected))))
        for label in range(classes):
            in_a, in_b = a == label, b == label
            both[label] += np.count_nonzero(in_a & in_b)
            sizes[label] += np.count_nonzero(in_a) + np.count_nonzero(in_b)
    dice = tuple(None if sizes[c] == 0 else float(2 * both[c] / sizes[c]) for c in range(classes))
    return Agreement(images.source, len(images.names), pixels, same / max(pixels, 1), dice, max_error, scale, worst)


def _random_images(plan: Plan, count: int = 2) -> Images:
    """Images to check a float16 file on when the user gives none: standard normal values at the export size."""
    generator = np.random.default_rng(0)
    pixels = tuple(generator.standard_normal(plan.input_shape, dtype=np.float32) for _ in range(count))
    return Images(f"{count} random images of {size_text(plan.input_size)}", tuple(f"random[{i}]" for i in range(count)),
                  pixels)


def lower_precision(
    model: Any, staged: Path, stage: Staging, request: Request, plan: Plan, *, input_name: str, fixed: Any
) -> tuple[Path, PrecisionReport]:
    """Make the int8 or float16 file of a staged, checked float32 file, and check it against the float32 network.

    Args:
        model: the float32 network (:class:`~unetgen.network.UNet`), the reference.
        staged: the float32 file, staged.
        stage: the staging folder (the new file is staged beside ``staged``).
        request: what to make (:func:`make_request`).
        plan: the network's plan at the export size.
        input_name: the graph input's name.
        fixed: ``(batch, size)`` of a static file, else None.

    Returns:
        The staged new file, and the report (its ``errors`` say what fell short; the caller refuses the file then).
    """
    started = time.perf_counter()
    target = stage.path(f"{staged.stem}.{request.precision}.onnx")
    intensity = getattr(model, "intensity", None)
    calibration: dict[str, Any] = {}
    images = request.calibration
    if images is not None:  # int8
        tiles, total, window = calibration_tiles(plan.spec, images, intensity=intensity, fixed=fixed,
                                                 memory=request.memory)
        log.info("int8: calibrating on %d of %d tiles (%s) of %d images", len(tiles), total, size_text(window),
                 len(images.names))
        calibration = quantize_int8(staged, target, tiles, input_name)
        calibration.update(source=images.source, images=len(images.names), tiles=total, tile_size=list(window))
        tile = max(tiles, key=lambda t: t.size)
        seconds = pass_seconds((staged, target), tile, input_name)
        if seconds[1] > SLOWER * seconds[0]:
            why = (
                f"onnxruntime ran the int8 file slower than float32 on this CPU ({seconds[1]:.3g} s against "
                f"{seconds[0]:.3g} s for a tile of {size_text(tile.shape[2:])}: its int8 kernels have no fast path "
                "for these convolutions); wrote float32 instead"
            )
            log.warning("int8: %s", why)
            return staged, PrecisionReport("fp32", calibration, None, request.thresholds,
                                           seconds=time.perf_counter() - started, fallback=why)
    else:
        to_float16(staged, target)
    entries = {META_PRECISION: request.precision}
    if calibration:
        entries[META_CALIBRATION] = json.dumps(calibration, separators=(",", ":"))
    _tidy(target, entries)
    check = request.check or _random_images(plan)
    agreement = measure_agreement(model, OnnxRunner(target), check, plan, request.memory)
    errors = agreement.misses(request.thresholds)
    report = PrecisionReport(
        request.precision, calibration, agreement, request.thresholds, tuple(errors), time.perf_counter() - started
    )
    if not errors:
        record = dict(agreement.to_dict(), thresholds=request.thresholds.to_dict())
        _tidy(target, {META_AGREEMENT: json.dumps(record, separators=(",", ":"))})
    return target, report


def pass_seconds(paths: Sequence[Path], tile: np.ndarray, input_name: str, rounds: int = 3) -> list[float]:
    """The fastest of ``rounds`` passes of ``tile`` through each file on onnxruntime (CPU), taken in turns so that
    a busy machine slows each alike; one warm-up pass each first."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = [ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]) for path in paths]
    feed = {input_name: tile}
    for session in sessions:
        session.run(None, feed)
    best = [math.inf] * len(sessions)
    for _ in range(rounds):
        for index, session in enumerate(sessions):
            started = time.perf_counter()
            session.run(None, feed)
            best[index] = min(best[index], time.perf_counter() - started)
    return best


def refusal(path: Path, report: PrecisionReport) -> str:
    """The one line a refused file gets: what fell short, by how much, and what to do."""
    fix = (
        "calibrate on images like the ones it will segment (--calibration), or lower the thresholds "
        "(--min-agreement, --min-dice)"
        if report.precision == "int8" else "lower the thresholds (--min-agreement, --min-dice) or keep float32"
    )
    source = report.agreement.source if report.agreement is not None else "the check images"
    return (
        f"{path}: {report.precision} file refused, nothing written: on {source}, "
        + "; ".join(report.errors) + f"; {fix}"
    )


__all__ = [
    "FILE_PRECISIONS",
    "MAX_CALIBRATION_TILES",
    "DEFAULT_HOLDOUT",
    "Thresholds",
    "Images",
    "Request",
    "Agreement",
    "PrecisionReport",
    "make_request",
    "held_out",
    "read_images",
    "calibration_tiles",
    "quantize_int8",
    "to_float16",
    "measure_agreement",
    "lower_precision",
    "refusal",
]
