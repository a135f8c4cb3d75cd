"""The unetgen ONNX file format: what the writer puts in a file and the reader expects to find there.

One place for every name both sides agree on: the graph's input and output names, its dimension names, the
metadata keys and the JSON under ``unetgen.sizes``, the size rules of each spatial axis (:class:`AxisRule`) and
their wording, the name of external weights files, and the default opset. :mod:`unetgen.export.writer` and
:mod:`unetgen.export.reader` import from here and never from each other.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..planning.plan import Plan
from ..text import AXIS_NAMES, size_text

#: The graph input's name.
INPUT_NAME = "image"
#: The opset written by default: the lowest that torch's exporter writes natively (older ones go through a
#: version converter that can fail), run by onnxruntime ≥ 1.14 and most current runtimes.
DEFAULT_OPSET = 18
#: The symbolic names of the spatial dimensions in the graph, by ``spatial_dims``: the axes' names as identifiers.
DIM_NAMES = {dims: tuple(name.replace(" ", "") for name in names) for dims, names in AXIS_NAMES.items()}

#: ``metadata_props`` keys: the unetgen version that wrote the file; the spec (JSON); the sizes (JSON: input,
#: output, shapes, batch, output_mode, export_size, axes); the size rules in words.
META_VERSION = "unetgen.version"
META_SPEC = "unetgen.spec"
META_SIZES = "unetgen.sizes"
META_SIZE_RULES = "unetgen.size_rules"
#: ``metadata_props`` key of a trained network's intensity normalisation (JSON, :mod:`unetgen.training.intensity`),
#: which a runtime applies to an image before cutting tiles; absent: raw values.
META_INTENSITY = "unetgen.intensity"
#: Keys of a lower-precision file (:mod:`unetgen.export.quantize`): its precision (``int8``, ``fp16``; absent:
#: ``fp32``); how int8 ranges were calibrated (JSON: images, tiles, method, ...); what it measured against the
#: float32 network on held-out images (JSON: label agreement, Dice per class, output error, thresholds).
META_PRECISION = "unetgen.precision"
META_CALIBRATION = "unetgen.calibration"
META_AGREEMENT = "unetgen.agreement"


def output_name(plan: Plan) -> str:
    """The graph output's name: ``logits``, or ``probabilities`` after a final sigmoid or softmax."""
    return "logits" if plan.final_activation == "none" else "probabilities"


def head_names(plan: Plan) -> tuple[str, ...]:
    """The graph outputs of a file exported with every head: the main output, then one per auxiliary head of deep
    supervision in the plan's order: ``<output>_level<l>`` for decoder level ``l``'s head, ``<output>_column<j>`` for
    UNet++'s top-row node X(0, j)."""
    main = output_name(plan)
    names = [main]
    for layer in plan.heads[1:]:
        parts = layer.name.split(".")  # decoder.<l>.head, or nested.0.<j>.head
        names.append(f"{main}_column{parts[2]}" if parts[0] == "nested" else f"{main}_level{parts[1]}")
    return tuple(names)


def output_mode(plan: Plan) -> str:
    """The ``output_mode`` written under ``unetgen.sizes``: ``same`` or ``crop``."""
    return "same" if plan.same_output else "crop"


def external_data_name(model_name: str) -> str:
    """A new name for a model's external weights file: ``<model file>.<8 hex digits>.data``, never the name of the
    weights an earlier export left beside it."""
    return f"{model_name}.{os.urandom(4).hex()}.data"


def is_external_data_name(model_name: str, name: str) -> bool:
    """Whether ``name`` is one of :func:`external_data_name`'s names for ``model_name`` (ours to remove)."""
    return re.fullmatch(re.escape(model_name) + r"\.[0-9a-f]{8}\.data", name) is not None


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
class SizesMetadata:
    """What the metadata entry ``unetgen.sizes`` holds (as JSON).

    Attributes:
        input: the graph input's name.
        output: the graph output's name.
        batch: the fixed batch size of a static file, else None.
        output_mode: ``same`` or ``crop`` (:func:`output_mode`).
        export_size: the size the file was exported (and first checked) at.
        axes: the size rules of each spatial axis.
        heads: the auxiliary outputs (deep supervision) after the main one, when exported with every head.
    """

    input: str
    output: str
    batch: int | None
    output_mode: str
    export_size: tuple[int, ...]
    axes: tuple[AxisRule, ...]
    heads: tuple[str, ...] = ()

    def to_json(self) -> str:
        """The entry's text."""
        data = {
            "input": self.input,
            "output": self.output,
            "shapes": "dynamic" if self.batch is None else "static",
            "batch": self.batch,
            "output_mode": self.output_mode,
            "export_size": list(self.export_size),
            "axes": [rule.to_dict() for rule in self.axes],
        }
        if self.heads:
            data["heads"] = list(self.heads)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SizesMetadata:
        """Read the entry back.

        Raises:
            ValueError, KeyError, TypeError: when the text is not such an entry (the reader says the metadata is
                damaged).
        """
        data = json.loads(text)
        batch = data["batch"]
        return cls(
            input=str(data["input"]),
            output=str(data["output"]),
            batch=None if batch is None else int(batch),
            output_mode=str(data["output_mode"]),
            export_size=tuple(int(s) for s in data["export_size"]),
            axes=tuple(AxisRule(**rule) for rule in data["axes"]),
            heads=tuple(str(name) for name in data.get("heads", ())),
        )


def size_rule_lines(plan: Plan, axes: Sequence[AxisRule], static: bool) -> list[str]:
    """A file's size rules in words: valid sizes per axis, minimum, border.

    Args:
        plan: the network's plan.
        axes: the file's rules per axis.
        static: whether the file has fixed shapes.

    Returns:
        One line per rule.
    """
    if static:
        return [f"fixed size {size_text([a.minimum for a in axes])}: the file takes no other (exported with --static)"]
    lines = []
    for rule in axes:
        head = f"{rule.name}: " if len(axes) > 1 else ""
        if not rule.dynamic:
            lines.append(f"{head}fixed at {rule.minimum} (torch.export specialised this axis)")
        elif plan.same_output:
            lines.append(f"{head}any size from {rule.minimum}; output = input (mirrored onto {_lattice(rule)})")
        else:
            lines.append(
                f"{head}{_lattice(rule)} from {rule.minimum}; border {rule.border} per side: "
                f"output = input − {2 * rule.border}"
            )
    return lines


def shape_words(plan: Plan, axes: Sequence[AxisRule], batch: int | None, *, output: bool) -> str:
    """A graph input's or output's shape in words: ``[batch, 1, height = 188+16k, width = 188+16k]``.

    Args:
        plan: the network's plan.
        axes: the file's rules per axis.
        batch: the fixed batch size, or None when dynamic.
        output: the output's shape rather than the input's.

    Returns:
        The shape, bracketed.
    """
    dims: list[str] = [str(batch) if batch is not None else "batch"]
    dims.append(str(plan.output_shape[0] if output else plan.input_shape[0]))
    for rule in axes:
        if not rule.dynamic:
            size = rule.minimum
            dims.append(str(size - 2 * rule.border if output and not plan.same_output else size))
        elif plan.same_output:
            dims.append(rule.name)
        elif output:
            dims.append(f"{rule.name} − {2 * rule.border}" if rule.border else rule.name)
        else:
            dims.append(f"{rule.name} = {_lattice(rule)}")
    return "[" + ", ".join(dims) + "]"


def _lattice(rule: AxisRule) -> str:
    """An axis's valid core sizes in words: ``188+16k``."""
    return f"{rule.first}+{rule.step}k" if rule.step > 1 else f"sizes from {rule.first}"


__all__ = [
    "INPUT_NAME",
    "DEFAULT_OPSET",
    "DIM_NAMES",
    "META_VERSION",
    "META_SPEC",
    "META_SIZES",
    "META_SIZE_RULES",
    "META_INTENSITY",
    "META_PRECISION",
    "META_CALIBRATION",
    "META_AGREEMENT",
    "AxisRule",
    "SizesMetadata",
    "output_name",
    "head_names",
    "output_mode",
    "external_data_name",
    "is_external_data_name",
    "size_rule_lines",
    "shape_words",
]
