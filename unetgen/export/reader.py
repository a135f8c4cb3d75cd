"""Reading a unetgen ONNX file: its metadata read back, and an onnxruntime session that checks sizes first.

onnxruntime does not know a U-Net's size rules: a size off the lattice fails deep inside a ``Concat`` (or, with
some exporters, returns a map of the wrong size without a word). :func:`onnx_session` reads the spec and the size
rules that :func:`unetgen.export_onnx` wrote into the file (the format: :mod:`unetgen.export.contract`), rebuilds
the spec, and refuses such a size with the plan's own message (:func:`unetgen.check_input_size`) before
onnxruntime sees it. No torch needed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import ExportError, SizeError, UNetGenError
from ..planning.plan import Plan, check_input_size, make_plan
from ..spec.fields import UNetSpec, spec_from_dict
from ..text import human_bytes, size_text
from ..training.intensity import intensity_from_dict
from .contract import (
    META_INTENSITY, META_SIZES, META_SPEC, META_VERSION, AxisRule, SizesMetadata, shape_words, size_rule_lines,
)
from .contract import META_AGREEMENT, META_CALIBRATION, META_PRECISION


@dataclass(frozen=True)
class OnnxInfo:
    """What a unetgen ONNX file says about itself (its metadata, read back).

    Attributes:
        path: the file.
        spec: the network's spec, validated again.
        version: the unetgen version that wrote the file.
        opset: the file's ``ai.onnx`` opset.
        input_name: the graph input's name (``image``).
        output_name: the graph output's name (``logits``).
        batch: the fixed batch size of a static file, else None.
        export_size: the size it was exported (and first checked) at.
        axes: the size rules of each spatial axis.
        external_data: the files holding its weights beside it (empty when self-contained).
        file_bytes: the size of the file and its external data.
        metadata: every ``metadata_props`` entry, as stored.
        intensity: the intensity normalisation a trained network expects (``unetgen.intensity``, the dict form
            of :mod:`unetgen.training.intensity`), or None: raw values.
    """

    path: Path
    spec: UNetSpec
    version: str
    opset: int | None
    input_name: str
    output_name: str
    batch: int | None
    export_size: tuple[int, ...]
    axes: tuple[AxisRule, ...]
    external_data: tuple[str, ...]
    file_bytes: int
    metadata: dict[str, str]
    intensity: dict[str, Any] | None = None

    @property
    def static(self) -> bool:
        """Whether every dimension of the file is fixed."""
        return self.batch is not None

    @property
    def precision(self) -> str:
        """``fp32``, or ``int8`` / ``fp16`` for a lower-precision file (metadata ``unetgen.precision``)."""
        return self.metadata.get(META_PRECISION, "fp32")

    def lowered(self, key: str) -> dict[str, Any] | None:
        """A lower-precision file's calibration summary (``META_CALIBRATION``) or measured agreement
        (``META_AGREEMENT``), as stored; None when absent.

        Raises:
            ExportError: when the entry is not JSON.
        """
        if key not in self.metadata:
            return None
        try:
            return dict(json.loads(self.metadata[key]))
        except (ValueError, TypeError) as exc:
            raise ExportError(f"{self.path}: unetgen metadata is damaged ({key}: {exc})") from None

    @cached_property
    def plan(self) -> Plan:
        """The network's plan at the export size."""
        return make_plan(self.spec, self.export_size)

    def check(self, shape: Sequence[int]) -> None:
        """Raise a clear error unless the file takes an input of ``shape``.

        The spatial size is checked by the plan of the spec stored in the file (the same message as
        :func:`unetgen.check_input_size` and the torch module give), then against what the file itself takes:
        its fixed shape when static, the smallest size torch.export proved otherwise.

        Args:
            shape: ``(batch, channels, *size)``.

        Raises:
            SizeError: naming the axis and the reason, and saying what to do.
        """
        spec = self.spec
        dims = spec.spatial_dims
        shape = tuple(int(s) for s in shape)
        if len(shape) != dims + 2:
            raise SizeError(
                f"input has shape {shape}; expected (batch, {spec.in_channels}, {', '.join(['size'] * dims)})"
            )
        if shape[1] != spec.in_channels:
            raise SizeError(f"input has {shape[1]} channels; the network takes {spec.in_channels}")
        if shape[0] < 1:
            raise SizeError(f"input has shape {shape}: a batch of {shape[0]}; give at least one image")
        size = shape[2:]
        check_input_size(spec, size)
        shown = f"input {size_text(size)}"
        if self.static:
            if shape[0] != self.batch or size != self.export_size:
                raise SizeError(
                    f"input {size_text(shape)}: {self.path.name} has fixed shapes and takes only "
                    f"{size_text((self.batch, spec.in_channels, *self.export_size))}; export again with "
                    f"--static --input-size {' '.join(map(str, size))}, or without --static for dynamic sizes"
                )
            return
        for rule, s in zip(self.axes, size):
            where = f"{shown}: {rule.name}" if dims > 1 else shown
            if not rule.dynamic and s != rule.minimum:
                raise SizeError(
                    f"{where}: {self.path.name} is fixed at {rule.minimum} along this axis (torch.export specialised "
                    f"it); export again with --static --input-size {' '.join(map(str, size))}"
                )
            if rule.dynamic and s < rule.minimum:
                raise SizeError(
                    f"{where}: {self.path.name} takes sizes from {rule.minimum} up along this axis (its graph is "
                    f"proven from there); export this size with --static --input-size {' '.join(map(str, size))}"
                )

    def describe(self) -> str:
        """The file's description, as ``unetgen inspect`` prints it."""
        spec = self.spec
        where = "self-contained" if not self.external_data else f"weights in {', '.join(self.external_data)}"
        opset = f"opset {self.opset}" if self.opset is not None else "opset unknown"
        lines = [
            f"{self.path.name}: ONNX {opset}, {human_bytes(self.file_bytes)} ({where}), written by unetgen "
            f"{self.version}",
            f"network: {spec.name}" + (f" — {spec.description}" if spec.description else ""),
            f"input  {self.input_name:<13} float32 {shape_words(self.plan, self.axes, self.batch, output=False)}",
            f"output {self.output_name:<13} float32 {shape_words(self.plan, self.axes, self.batch, output=True)}",
            f"sizes ({'static' if self.static else 'dynamic'} shapes, exported at {size_text(self.export_size)}):",
        ]
        lines += [f"  {line}" for line in size_rule_lines(self.plan, self.axes, self.static)]
        if self.intensity is not None:
            lines.append(f"intensities: {intensity_from_dict(self.intensity).describe()} (metadata '{META_INTENSITY}')")
        lines += _precision_lines(self)
        lines.append(f"spec (metadata '{META_SPEC}'; the fields that differ from the defaults):")
        changed = spec.model_dump(mode="json", exclude_defaults=True)
        lines += [
            f"  {key}: {value if isinstance(value, str) else json.dumps(value)}" for key, value in changed.items()
        ]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready data (what ``unetgen inspect --json`` prints)."""
        return {
            "path": str(self.path),
            "unetgen_version": self.version,
            "opset": self.opset,
            "input": self.input_name,
            "output": self.output_name,
            "shapes": "static" if self.static else "dynamic",
            "batch": self.batch,
            "export_size": list(self.export_size),
            "axes": [rule.to_dict() for rule in self.axes],
            "external_data": list(self.external_data),
            "file_bytes": self.file_bytes,
            "spec": self.spec.model_dump(mode="json"),
            "intensity": self.intensity,
            "precision": self.precision,
            "calibration": self.lowered(META_CALIBRATION),
            "agreement": self.lowered(META_AGREEMENT),
        }


def _precision_lines(info: OnnxInfo) -> list[str]:
    """What ``inspect`` says about a lower-precision file: how it was made and what it measured."""
    if info.precision == "fp32":
        return []
    lines = [f"precision: {info.precision} (metadata '{META_PRECISION}')"]
    calibration = info.lowered(META_CALIBRATION)
    if calibration is not None:
        lines.append(
            f"  calibrated ({calibration.get('method')}) on {calibration.get('tiles_used')} of "
            f"{calibration.get('tiles')} tiles ({size_text(calibration.get('tile_size') or [])}) of "
            f"{calibration.get('images')} images from {calibration.get('source')}; {calibration.get('format')}, "
            f"weights {calibration.get('weights')}, activations {calibration.get('activations')}"
            + (", 7-bit weights (reduce_range)" if calibration.get("reduce_range") else "")
            + (f", {calibration['float32_convolutions']} convolution(s) on few channels kept float32"
               if calibration.get("float32_convolutions") else "")
        )
    agreement = info.lowered(META_AGREEMENT)
    if agreement is not None:
        dice = " / ".join("—" if d is None else f"{d:.4f}" for d in agreement.get("dice", []))
        limits = agreement.get("thresholds") or {}
        scale = agreement.get("scale") or 0
        lines.append(
            f"  checked against float32 on {agreement.get('source')}: labels agree on "
            f"{100 * agreement.get('label_agreement', 0):.3f}% of {agreement.get('pixels', 0):,} pixels; Dice per "
            f"class {dice}; max |Δ output| {agreement.get('max_error')} = "
            f"{100 * (agreement.get('max_error') or 0) / max(scale, 1e-12):.2f}% of the scale (needed: agreement ≥ "
            f"{100 * limits.get('min_agreement', 0):.2f}%, Dice ≥ {limits.get('min_dice', 0):.3f})"
        )
    return lines


def read_onnx_info(path: str | Path) -> OnnxInfo:
    """Read a unetgen ONNX file's metadata: spec, version, names and size rules (weights are not loaded).

    Args:
        path: a file written by :func:`unetgen.export_onnx` or ``unetgen export``.

    Returns:
        What the file says about itself.

    Raises:
        ExportError: when the file is missing, not ONNX, or has no (or broken) unetgen metadata.
        SpecError: when the spec in the metadata is not valid for this unetgen.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX file
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{path}: not an ONNX file ({first}); write one with 'unetgen export SPEC --onnx'") from None
    props = {entry.key: entry.value for entry in model.metadata_props}
    if META_SPEC not in props or META_SIZES not in props:
        raise ExportError(
            f"{path}: an ONNX file without unetgen's metadata ({META_SPEC}, {META_SIZES}); only files written by "
            "'unetgen export' carry the size rules"
        )
    try:
        spec_data = json.loads(props[META_SPEC])
        sizes = SizesMetadata.from_json(props[META_SIZES])
    except (ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{path}: unetgen metadata is damaged ({type(exc).__name__}: {exc})") from None
    spec = spec_from_dict(spec_data, source=f"{path} (metadata {META_SPEC})")
    intensity = None
    if META_INTENSITY in props:
        try:
            intensity = json.loads(props[META_INTENSITY])
        except ValueError as exc:
            raise ExportError(f"{path}: unetgen metadata is damaged ({META_INTENSITY}: {exc})") from None
        intensity_from_dict(intensity, f"{path} (metadata {META_INTENSITY})")
    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None)
    locations = sorted(
        {entry.value for tensor in model.graph.initializer for entry in tensor.external_data if entry.key == "location"}
    )
    file_bytes = path.stat().st_size + sum(
        (path.parent / name).stat().st_size for name in locations if (path.parent / name).is_file()
    )
    return OnnxInfo(
        path=path, spec=spec, version=props.get(META_VERSION, "unknown"), opset=opset, input_name=sizes.input,
        output_name=sizes.output, batch=sizes.batch, export_size=sizes.export_size, axes=sizes.axes,
        external_data=tuple(locations), file_bytes=file_bytes, metadata=props, intensity=intensity,
    )


class OnnxSession:
    """An onnxruntime session on a unetgen ONNX file that checks every input's shape against the file's rules.

    Attributes:
        info: the file's metadata (spec, size rules).
        session: the underlying ``onnxruntime.InferenceSession``.
    """

    def __init__(self, info: OnnxInfo, session: Any) -> None:
        """Args:
        info: from :func:`read_onnx_info`.
        session: an ``onnxruntime.InferenceSession`` on the same file.
        """
        self.info = info
        self.session = session

    @property
    def spec(self) -> UNetSpec:
        """The network's spec."""
        return self.info.spec

    def check(self, shape: Sequence[int]) -> None:
        """Raise :class:`~unetgen.errors.SizeError` unless the file takes an input of ``shape`` (see
        :meth:`OnnxInfo.check`)."""
        self.info.check(shape)

    def run(self, x: Any) -> np.ndarray:
        """Check ``x``'s shape, then run the network on it.

        Args:
            x: ``(batch, in_channels, *size)``: a numpy array, or anything ``numpy.asarray`` takes (a CPU tensor);
                converted to float32.

        Returns:
            The output, ``(batch, out_channels, *output_size)``, float32.

        Raises:
            SizeError: when the file cannot take ``x``'s shape (before onnxruntime runs).
            UNetGenError: when ``x`` is not numeric.
        """
        array = np.asarray(x)
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise UNetGenError(f"input has dtype {array.dtype}; give numbers (the file takes float32)")
        self.check(array.shape)
        feed = {self.info.input_name: array.astype(np.float32, copy=False)}
        (output,) = self.session.run([self.info.output_name], feed)
        return output

    __call__ = run


def onnx_session(
    path: str | Path, *, providers: Sequence[str] | None = None, threads: int | None = None
) -> OnnxSession:
    """Open a unetgen ONNX file in onnxruntime, with size checks from its metadata before every run.

    Args:
        path: a file from :func:`unetgen.export_onnx` or ``unetgen export``.
        providers: onnxruntime execution providers (default: ``["CPUExecutionProvider"]``).
        threads: onnxruntime's intra-op threads (default: onnxruntime's choice, one per core).

    Returns:
        A session: ``session.run(x)`` checks ``x``'s shape, then returns the output.

    Raises:
        ExportError: when the file is missing, not ONNX or not written by unetgen.
        SpecError: when the spec in its metadata is not valid.
    """
    info = read_onnx_info(path)
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        str(info.path), options, providers=list(providers) if providers is not None else ["CPUExecutionProvider"]
    )
    return OnnxSession(info, session)


__all__ = ["OnnxInfo", "OnnxSession", "onnx_session", "read_onnx_info"]
