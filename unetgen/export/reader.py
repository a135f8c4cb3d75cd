"""Running an exported ONNX file: its metadata read back, and an onnxruntime session that checks sizes first.

onnxruntime does not know a U-Net's size rules: a size off the lattice fails deep inside a ``Concat`` (or, with
some exporters, returns a map of the wrong size without a word). :func:`onnx_session` reads the spec and the size
rules that :func:`unetgen.export.export_onnx` wrote into the file, rebuilds the spec, and refuses such a size with
the plan's own message (:func:`unetgen.plan.check_input_size`) before onnxruntime sees it. No torch needed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..text import human_bytes
from ..errors import ExportError, SizeError, UNetGenError
from ..planning.plan import check_input_size
from ..spec.fields import UNetSpec, spec_from_dict

log = logging.getLogger(__name__)

INPUT_NAME = "image"
#: The opset written by default: the lowest that torch's exporter writes natively (older ones go through a
#: version converter that can fail), run by onnxruntime ≥ 1.14 and most current runtimes.
DEFAULT_OPSET = 18


def output_name(spec: UNetSpec) -> str:
    """The graph output's name: ``logits``, or ``probabilities`` after a final sigmoid or softmax."""
    return "logits" if spec.final_activation == "none" else "probabilities"


@dataclass(frozen=True)
class AxisRule:
    """What one spatial axis of an exported file takes.

    Attributes:
        name: the axis, as the plan names it (``height``).
        first: the plan's smallest valid core size along the axis.
        step: the plan's step between valid core sizes.
        border: pixels the core consumes on each side.
        dynamic: whether the file takes more than one size along the axis.
        minimum: the smallest size the file takes along the axis (its one size when not dynamic).
    """

    name: str
    first: int
    step: int
    border: int
    dynamic: bool
    minimum: int

    def to_dict(self) -> dict[str, Any]:
        """The rule as JSON-ready data (the form stored in the file's metadata)."""
        return dict(self.__dict__)


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

    @property
    def static(self) -> bool:
        """Whether every dimension of the file is fixed."""
        return self.batch is not None

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
        shown = f"input {format_size(size)}"
        if self.static:
            if shape[0] != self.batch or size != self.export_size:
                raise SizeError(
                    f"input {format_size(shape)}: {self.path.name} has fixed shapes and takes only "
                    f"{format_size((self.batch, spec.in_channels, *self.export_size))}; export again with "
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
            f"input  {self.input_name:<13} float32 {shape_words(spec, self.axes, self.batch, output=False)}",
            f"output {self.output_name:<13} float32 {shape_words(spec, self.axes, self.batch, output=True)}",
            f"sizes ({'static' if self.static else 'dynamic'} shapes, exported at {format_size(self.export_size)}):",
        ]
        lines += [f"  {line}" for line in size_rule_lines(spec, self.axes, self.static)]
        lines.append("spec (metadata 'unetgen.spec'; the fields that differ from the defaults):")
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
        }


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
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX file
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{path}: not an ONNX file ({first}); write one with 'unetgen export SPEC --onnx'") from None
    props = {entry.key: entry.value for entry in model.metadata_props}
    if "unetgen.spec" not in props or "unetgen.sizes" not in props:
        raise ExportError(
            f"{path}: an ONNX file without unetgen's metadata (unetgen.spec, unetgen.sizes); only files written by "
            "'unetgen export' carry the size rules"
        )
    try:
        spec_data = json.loads(props["unetgen.spec"])
        sizes = json.loads(props["unetgen.sizes"])
        axes = tuple(AxisRule(**rule) for rule in sizes["axes"])
        batch = sizes["batch"]
        export_size = tuple(int(s) for s in sizes["export_size"])
        input_name, output = str(sizes["input"]), str(sizes["output"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{path}: unetgen metadata is damaged ({type(exc).__name__}: {exc})") from None
    spec = spec_from_dict(spec_data, source=f"{path} (metadata unetgen.spec)")
    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None)
    locations = sorted(
        {entry.value for tensor in model.graph.initializer for entry in tensor.external_data if entry.key == "location"}
    )
    file_bytes = path.stat().st_size + sum(
        (path.parent / name).stat().st_size for name in locations if (path.parent / name).is_file()
    )
    return OnnxInfo(
        path=path, spec=spec, version=props.get("unetgen.version", "unknown"), opset=opset, input_name=input_name,
        output_name=output, batch=batch, export_size=export_size, axes=axes, external_data=tuple(locations),
        file_bytes=file_bytes, metadata=props,
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
    import onnxruntime as ort

    info = read_onnx_info(path)
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        str(info.path), options, providers=list(providers) if providers is not None else ["CPUExecutionProvider"]
    )
    return OnnxSession(info, session)


def size_rule_lines(spec: UNetSpec, axes: Sequence[AxisRule], static: bool) -> list[str]:
    """A file's size rules in words: valid sizes per axis, minimum, border.

    Args:
        spec: the network.
        axes: the file's rules per axis.
        static: whether the file has fixed shapes.

    Returns:
        One line per rule.
    """
    if static:
        fixed = format_size([a.minimum for a in axes])
        return [f"fixed size {fixed}: the file takes no other (exported with --static)"]
    lines = []
    for rule in axes:
        head = f"{rule.name}: " if len(axes) > 1 else ""
        if not rule.dynamic:
            lines.append(f"{head}fixed at {rule.minimum} (torch.export specialised this axis)")
        elif spec.output == "same":
            lines.append(f"{head}any size from {rule.minimum}; output = input (mirrored onto {_lattice(rule)})")
        else:
            lines.append(
                f"{head}{_lattice(rule)} from {rule.minimum}; border {rule.border} per side: "
                f"output = input − {2 * rule.border}"
            )
    return lines


def shape_words(spec: UNetSpec, axes: Sequence[AxisRule], batch: int | None, *, output: bool) -> str:
    """A graph input's or output's shape in words: ``[batch, 1, height = 188+16k, width = 188+16k]``.

    Args:
        spec: the network.
        axes: the file's rules per axis.
        batch: the fixed batch size, or None when dynamic.
        output: the output's shape rather than the input's.

    Returns:
        The shape, bracketed.
    """
    dims: list[str] = [str(batch) if batch is not None else "batch"]
    dims.append(str(spec.out_channels if output else spec.in_channels))
    for rule in axes:
        if not rule.dynamic:
            size = rule.minimum
            dims.append(str(size - 2 * rule.border if output and spec.output == "crop" else size))
        elif spec.output == "same":
            dims.append(rule.name)
        elif output:
            dims.append(f"{rule.name} − {2 * rule.border}" if rule.border else rule.name)
        else:
            dims.append(f"{rule.name} = {_lattice(rule)}")
    return "[" + ", ".join(dims) + "]"


def format_size(size: Sequence[Any]) -> str:
    """``572×572``."""
    return "×".join(str(int(s)) for s in size)


def _lattice(rule: AxisRule) -> str:
    return f"{rule.first}+{rule.step}k" if rule.step > 1 else f"sizes from {rule.first}"


__all__ = [
    "INPUT_NAME",
    "DEFAULT_OPSET",
    "AxisRule",
    "OnnxInfo",
    "OnnxSession",
    "onnx_session",
    "read_onnx_info",
    "output_name",
    "size_rule_lines",
    "shape_words",
    "format_size",
]
