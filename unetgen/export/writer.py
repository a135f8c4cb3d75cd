"""Built network → ONNX: export with dynamic sizes, verify against torch with onnxruntime, write one file atomically.

The flow is one way: spec (or checkpoint) → :func:`~unetgen.network.build` → ``torch.export`` → ``torch.onnx``
(the dynamo exporter) → checks → file. Nothing is written until every check has passed.

Sizes in the graph:

* ``output: crop`` networks take any size of the plan's lattice: each spatial axis is exported as the derived
  dimension ``first + step * k`` (the paper: ``188 + 16k``), so torch's shape solver proves every max-pool, crop
  and concatenation for every ``k`` and the graph has no size specialised.
* ``output: same`` networks mirror the input onto the lattice and crop the output back, by amounts
  :meth:`~unetgen.network.UNet.forward` works out in Python per size. For export the same arithmetic is written
  without branches and the mirroring as a gather of reflected indices (:class:`_SameOutputForExport`), which
  equals ``numpy.pad(mode="reflect")`` for every size, however many rounds the module needs; torch.export then
  keeps the spatial sizes symbolic.
* ``static=True`` fixes every dimension, batch included, for runtimes that need fixed shapes.

Whatever torch proves is read back from the exported program and written into the file's metadata with the
plan's size rules (the format: :mod:`unetgen.export.contract`), so :func:`unetgen.onnx_session` can refuse a size
the file cannot take. The file is staged and moved into place by :func:`unetgen.files.staging`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import torch
from torch import nn

from ..errors import ExportError
from ..files import check_target, staging, writing
from ..network.optimization import optimize
from ..network.unet import UNet, build
from ..planning.plan import Plan, make_plan
from ..spec.fields import UNetSpec, load_spec
from ..text import human_bytes, size_text
from ..version import __version__
from .quantize import PrecisionReport, Thresholds, lower_precision, make_request, refusal
from .contract import (
    DEFAULT_OPSET,
    DIM_NAMES,
    INPUT_NAME,
    META_INTENSITY,
    META_SIZE_RULES,
    META_SIZES,
    META_SPEC,
    META_VERSION,
    AxisRule,
    SizesMetadata,
    external_data_name,
    is_external_data_name,
    output_mode,
    output_name,
    head_names,
    shape_words,
    size_rule_lines,
)

log = logging.getLogger(__name__)

#: Verification passes when ``max |onnxruntime − torch| ≤ TOLERANCE × max |torch output|`` at every checked shape.
#: float32 differences between the two are ~1e-7–1e-6 of the scale; a wrong crop, pad or weight is ~1.
TOLERANCE = 1e-4
#: Largest model written as one self-contained file: protobuf cannot serialise 2 GiB; keep a margin for the graph.
INLINE_LIMIT = 2**31 - 2**24


@dataclass(frozen=True)
class SizeCheck:
    """One run of the exported file on onnxruntime, compared with the torch module.

    Attributes:
        input_shape: the input, ``(batch, channels, *size)``.
        expected_shape: the output shape the plan gives.
        output_shape: what onnxruntime returned (None when it failed).
        max_error: ``max |onnxruntime − torch|`` (None when it failed).
        scale: ``max |torch output|``.
        ok: whether the shape is exact and the error within ``TOLERANCE × scale``.
        problem: what went wrong, in one line ('' when ok).
    """

    input_shape: tuple[int, ...]
    expected_shape: tuple[int, ...]
    output_shape: tuple[int, ...] | None
    max_error: float | None
    scale: float | None
    ok: bool
    problem: str = ""

    def describe(self) -> str:
        """One line: shapes, error and verdict."""
        arrow = f"{size_text(self.input_shape)} → {size_text(self.expected_shape)}"
        if self.max_error is None:
            return f"{arrow:<30} FAILED: {self.problem}"
        relative = self.max_error / max(self.scale or 0.0, 1e-12)
        numbers = f"{self.max_error:.1e} / {self.scale:.3g} = {relative:.1e}"
        return f"{arrow:<30} {numbers:<26} {'ok' if self.ok else 'FAILED: ' + self.problem}"


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` did.

    Attributes:
        path: the file written, or None when nothing was written (a failed check with ``raise_on_failure=False``).
        spec: the network's spec.
        opset: the ONNX opset in the file (``opset_import``), always the one requested.
        input_size: the size the network was exported at.
        batch: the fixed batch size of a static file, else None.
        axes: the size rules of each spatial axis.
        verified: whether the checks ran (``verify=True``).
        checks: onnxruntime runs compared with torch (empty with ``verify=False``).
        errors: every failed check, one line each (empty when all passed).
        tolerance: the relative tolerance the numbers were checked with.
        external_data: the weights file beside ``path`` for models over 2 GB, else None.
        file_bytes: size of the ONNX file (plus its external data).
        export_seconds: time spent in torch.export and torch.onnx.
        verify_seconds: time spent checking.
        notes: what a user should know about the file (untrained weights, eval mode, sizes it refuses).
        heads: the auxiliary outputs (deep supervision) written after the main one (``heads=True``).
        precision: the file's precision: ``fp32``, or ``int8`` / ``fp16`` (:mod:`unetgen.export.quantize`).
        lowered: what making and checking the int8 or float16 file measured (None for float32).
    """

    path: Path | None
    spec: UNetSpec
    opset: int
    input_size: tuple[int, ...]
    batch: int | None
    axes: tuple[AxisRule, ...]
    verified: bool = False
    checks: tuple[SizeCheck, ...] = ()
    errors: tuple[str, ...] = ()
    tolerance: float = TOLERANCE
    external_data: Path | None = None
    file_bytes: int = 0
    export_seconds: float = 0.0
    verify_seconds: float = 0.0
    notes: tuple[str, ...] = field(default=())
    heads: tuple[str, ...] = ()
    precision: str = "fp32"
    lowered: PrecisionReport | None = None

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return not self.errors

    @property
    def static(self) -> bool:
        """Whether every dimension of the file is fixed."""
        return self.batch is not None

    @cached_property
    def plan(self) -> Plan:
        """The network's plan at the export size."""
        return make_plan(self.spec, self.input_size)

    def describe(self) -> str:
        """The report as the lines ``unetgen export`` prints."""
        spec, plan = self.spec, self.plan
        lines = [
            f"{spec.name}: exported at {size_text(self.input_size)} by torch.export + torch.onnx (dynamo), "
            f"opset {self.opset}, {'static shapes' if self.static else 'dynamic shapes'}",
            f"input  {INPUT_NAME:<13} float32 {shape_words(plan, self.axes, self.batch, output=False)}",
            f"output {output_name(plan):<13} float32 {shape_words(plan, self.axes, self.batch, output=True)}",
        ]
        for name, head in zip(self.heads, plan.heads[1:]):
            lines.append(f"output {name:<13} float32 (auxiliary head, {size_text(head.shape)} at the export size)")
        lines += [f"  {line}" for line in size_rule_lines(plan, self.axes, self.static)]
        if not self.verified:
            lines.append("checks: skipped (--no-verify)")
        elif self.checks:
            lines.append(f"onnx.checker (full check) ok; opset_import: ai.onnx {self.opset} as requested")
            lines.append(
                f"onnxruntime (CPU) against torch: max |Δ| / max |y| ≤ {self.tolerance:.0e} (y: torch's output)"
            )
            lines += [f"  {check.describe()}" for check in self.checks]
        lines += self.lowered.lines() if self.lowered is not None else []
        shown = {f"{size_text(c.input_shape)}: {c.problem}" for c in self.checks if not c.ok}
        lines += [f"FAILED: {error}" for error in self.errors if error not in shown]
        lines += [f"note: {note}" for note in self.notes]
        if self.path is not None:
            where = "self-contained" if self.external_data is None else f"weights in {self.external_data.name}"
            lines.append(
                f"wrote {self.path} ({human_bytes(self.file_bytes)}, {where}) in "
                f"{self.export_seconds + self.verify_seconds:.1f} s"
            )
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "path": None if self.path is None else str(self.path),
            "name": self.spec.name,
            "opset": self.opset,
            "input_size": list(self.input_size),
            "shapes": "static" if self.static else "dynamic",
            "batch": self.batch,
            "axes": [rule.to_dict() for rule in self.axes],
            "tolerance": self.tolerance,
            "checks": [
                {
                    "input_shape": list(c.input_shape),
                    "expected_shape": list(c.expected_shape),
                    "output_shape": None if c.output_shape is None else list(c.output_shape),
                    "max_error": c.max_error,
                    "scale": c.scale,
                    "ok": c.ok,
                    "problem": c.problem,
                }
                for c in self.checks
            ],
            "errors": list(self.errors),
            "notes": list(self.notes),
            "external_data": None if self.external_data is None else str(self.external_data),
            "file_bytes": self.file_bytes,
            "export_seconds": round(self.export_seconds, 3),
            "verify_seconds": round(self.verify_seconds, 3),
            "precision": self.precision,
            "lower_precision": self.lowered.to_dict() if self.lowered is not None else None,
        }


def export_onnx(
    source: UNet | UNetSpec | str | Path = "paper",
    path: str | Path | None = None,
    *,
    input_size: tuple[int, ...] | list[int] | None = None,
    opset: int = DEFAULT_OPSET,
    static: bool = False,
    batch: int = 1,
    verify: bool = True,
    raise_on_failure: bool = True,
    heads: bool = False,
    quantize: str | None = None,
    precision: str = "fp32",
    calibration: Any = None,
    check_images: Any = None,
    thresholds: Thresholds | dict[str, Any] | None = None,
) -> ExportReport:
    """Export a network to one ONNX file, check it with onnxruntime against torch, and write it atomically.

    Args:
        source: a built network (e.g. from :func:`unetgen.load`, with its weights), or a spec, preset name or YAML
            path (built with the spec's initialisation: untrained weights).
        path: the ``.onnx`` file to write; default ``<spec name>.onnx`` in the current folder.
        input_size: the size to export at, one value per spatial axis (default: the spec's). With dynamic shapes
            the file takes other sizes too; with ``static=True`` only this one.
        opset: the ONNX opset to write; the file is refused if torch's exporter writes another one.
        static: fix every dimension (batch included) for runtimes that need fixed shapes.
        batch: the batch size of a static file (dynamic files take any batch).
        verify: run ``onnx.checker`` (full check) and compare onnxruntime with torch at the export size, at two
            other sizes and at batch 2 (static files: at their one shape). On by default.
        raise_on_failure: raise :class:`~unetgen.errors.ExportError` when a check fails; with False, return the
            report (its ``errors`` say what failed, ``path`` is None). Either way no file is written.
        heads: with deep supervision, export every head as a named output (:func:`~unetgen.export.contract.head_names`:
            ``logits``, ``logits_level1``, ...), each checked against torch; by default the main output only.
        quantize: ``"int8"``: write a statically quantized file instead (QDQ, int8 weights per channel),
            calibrated on ``calibration`` and checked against this network on held-out images
            (:mod:`unetgen.export.quantize`); refused, with nothing written, below ``thresholds``.
        precision: ``"fp16"``: write a float16 file (for GPU runtimes), checked the same way; ``"int8"`` is
            ``quantize="int8"``.
        calibration: int8: the images to calibrate on: a folder, an ``.npy`` stack ``(N, C, *spatial)``, or a list
            of arrays; one in five is held out for the check unless ``check_images`` are given.
        check_images: the images to check a lower-precision file on (same forms).
        thresholds: what the check must reach (:class:`~unetgen.export.quantize.Thresholds`, or a dict of its
            fields): label agreement, Dice per class, output error.

    Returns:
        The report: path, opset, size rules, the checks and their errors.

    Raises:
        SpecError: when ``source`` is not a valid spec.
        SizeError: when the network cannot take ``input_size``.
        ExportError: when a check fails (and ``raise_on_failure``), the opset cannot be written, the export size is
            one the dynamic graph does not take, or the file cannot be written (a full disk).
        ResourceError: when the network (or a checking pass) would exceed the memory limit.
        UNetGenError: when ``path`` cannot be written.
    """
    spec = source.spec if isinstance(source, UNet) else load_spec(source)
    plan = make_plan(spec, input_size)
    target = check_target(Path(path) if path is not None else Path(f"{spec.name}.onnx"))
    if target.suffix.lower() != ".onnx":
        raise ExportError(f"{target}: an ONNX file name ends in .onnx; give e.g. {target.with_suffix('.onnx').name}")
    _check_opset(opset)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ExportError(f"batch {batch!r}: give a batch size from 1 up")
    if batch != 1 and not static:
        raise ExportError(f"batch {batch}: a fixed batch size needs static shapes; add --static (or drop --batch)")
    if heads and len(plan.heads) == 1:
        raise ExportError(f"{spec.name}: --heads exports the auxiliary heads of deep supervision, and this network "
                          "has none; set deep_supervision in the spec or leave --heads out")
    request = make_request(spec, quantize=quantize, precision=precision, calibration=calibration,
                           check_images=check_images, thresholds=thresholds)
    if request is not None and not verify:
        raise ExportError(f"--no-verify: a {request.precision} file is always checked against float32; leave it out")
    model = source if isinstance(source, UNet) else build(spec, input_size)
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        # batch norms folded into their convolutions and dropout removed (what every runtime gains from); the
        # checks below compare the file with ``model`` itself
        onnx_model, axes = _export(optimize(model, for_export=True), plan, opset, static, batch, heads)
        export_seconds = time.perf_counter() - started
        for rule, size in zip(axes, plan.input_size):
            if (rule.dynamic and size < rule.minimum) or (not rule.dynamic and size != rule.minimum):
                raise ExportError(
                    f"input {size_text(plan.input_size)}: {rule.name}: the dynamic graph takes "
                    + (f"sizes from {rule.minimum} up" if rule.dynamic else f"only {rule.minimum}")
                    + " along this axis (what torch.export proved); export this size with --static"
                )
        fixed = batch if static else None
        _annotate(onnx_model, plan, axes, fixed, heads, getattr(model, "intensity", None))
        report = ExportReport(
            path=None, spec=spec, opset=opset, input_size=plan.input_size, batch=fixed, axes=axes,
            export_seconds=export_seconds, notes=_notes(source, plan, axes), heads=head_names(plan)[1:] if heads else (),
        )
        return _check_and_write(model, onnx_model, report, target, verify, raise_on_failure, request)
    finally:
        model.train(was_training)


# --- export ------------------------------------------------------------------------------------------------


def _check_opset(opset: int) -> None:
    """Refuse an opset this onnx cannot write."""
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not 7 <= opset <= newest:
        raise ExportError(
            f"opset {opset!r}: give an ONNX opset from 7 to {newest} (this onnx's newest); default {DEFAULT_OPSET}"
        )


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """torch.export and torch.onnx warn and log freely (torchvision missing, deprecations): keep them at DEBUG."""
    names = ("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for warning in caught:
            log.debug("exporter warning: %s", warning.message)
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _export(
    model: UNet, plan: Plan, opset: int, static: bool, batch: int, heads: bool = False
) -> tuple[Any, tuple[AxisRule, ...]]:
    """torch.export → torch.onnx; the ONNX IR model and what torch proved about each spatial axis."""
    spec = plan.spec
    ids = DIM_NAMES[spec.spatial_dims]
    grids = plan.lattices
    sample = torch.zeros(batch if static else 2, spec.in_channels, *(plan.input_size if static else _sample_size(plan)))
    module: nn.Module = model
    dynamic: dict[int, Any] = {}
    if not static:
        dynamic[0] = torch.export.Dim("batch", min=1)
        if plan.same_output:
            module = _SameOutputForExport(model)
            for axis in range(spec.spatial_dims):
                dynamic[axis + 2] = torch.export.Dim.AUTO
        else:
            for axis, grid in enumerate(grids):
                dynamic[axis + 2] = grid.step * torch.export.Dim(f"k_{ids[axis]}", min=0) + grid.first
    if heads:
        module = _EveryHead(model)
    log.info("exporting %s at %s (%s)", spec.name, size_text(sample.shape), "static" if static else "dynamic")
    with _quiet_exporter():
        program = torch.export.export(module, (sample,), dynamic_shapes={"x": dynamic} if dynamic else None)
        onnx_program = torch.onnx.export(
            program, (sample,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
            output_names=list(head_names(plan) if heads else [output_name(plan)]), verbose=False, optimize=True,
        )
    axes = []
    for (name, grid), (dynamic_axis, proven) in zip(zip(plan.axis_names, grids), _proven_sizes(program, spec)):
        if not dynamic_axis:  # a static export, or an axis torch.export specialised to its sample size
            rule = AxisRule(name, grid.first, grid.step, grid.border, dynamic=False, minimum=proven)
        elif plan.same_output:
            lowest = max(proven, _same_output_minimum(grid))
            rule = AxisRule(name, grid.first, grid.step, grid.border, dynamic=True, minimum=lowest)
        else:
            # torch takes every symbol to be at least 2 (its 0/1 convention), so it proved k >= 2; the graph has no
            # branch on k, and k = 0 and 1 are among the sizes every export is checked at (see check_shapes).
            rule = AxisRule(name, grid.first, grid.step, grid.border, dynamic=True, minimum=grid.first)
        axes.append(rule)
    return onnx_program.model, tuple(axes)


def _sample_size(plan: Plan) -> tuple[int, ...]:
    """A size to trace a dynamic export at: generic, whatever size the user exports at.

    torch.export specialises a symbol whose sample is 0 or 1, and gives axes of equal size one symbol; so each axis
    gets its own lattice point with ``k = 2 + axis`` (for ``output: same``, an odd size just above it).
    """
    out = []
    for axis, grid in enumerate(plan.lattices):
        core = grid.first + (2 + axis) * grid.step
        out.append(max(3, core - 2 * grid.border + 1) if plan.same_output else core)
    return tuple(out)


def _proven_sizes(program: torch.export.ExportedProgram, spec: UNetSpec) -> list[tuple[bool, int]]:
    """Per spatial axis of the exported input: (dynamic, the smallest size torch.export proved or the fixed size)."""
    user_input = program.graph_signature.user_inputs[0]
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == user_input)
    out = []
    for dim in node.meta["val"].shape[2 : 2 + spec.spatial_dims]:
        if not isinstance(dim, torch.SymInt):
            out.append((False, int(dim)))
            continue
        expr = dim.node.expr
        lowest = {symbol: program.range_constraints[symbol].lower for symbol in expr.free_symbols}
        out.append((True, int(expr.subs(lowest))))
    return out


def _same_output_arithmetic(size: Any, first: int, step: int, border: int) -> tuple[Any, Any, Any]:
    """``(pad_before, core_size, crop_before)`` of ``output: same`` without a branch, for ints and symbolic sizes.

    :func:`unetgen.sizes.same_output_pads` rounds ``size + 2 * border`` up to the lattice with an ``if``, which
    torch.export would specialise; this rounds up with a floor division only, and equals it for every
    ``size >= _same_output_minimum`` (tested).
    """
    core = first + (size + 2 * border - first + step - 1) // step * step
    crop_before = (core - 2 * border - size) // 2
    return border + crop_before, core, crop_before


def _same_output_minimum(grid: Any) -> int:
    """Smallest size from which :func:`_same_output_arithmetic` equals the plan's: size + 2·border > first − step.

    Below it the floor division rounds down past the lattice's first point, where the plan clamps to it.
    """
    return max(2, grid.first - grid.step - 2 * grid.border + 1)


class _EveryHead(nn.Module):
    """The network with every head as an output (deep supervision), main output first, whatever the mode."""

    def __init__(self, model: UNet) -> None:
        """Args:
        model: a network with auxiliary heads.
        """
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.model.return_heads = True
        try:
            return tuple(self.model(x))
        finally:
            self.model.return_heads = False


class _SameOutputForExport(nn.Module):
    """``output: same`` in operations torch.export keeps symbolic: reflected-index gathers and a branch-free crop.

    Runs the wrapped network's core (:meth:`~unetgen.network.UNet.core`: its weights, no mirroring of its own) on
    the mirrored input, then crops its output back to the input's size; the user's module is untouched.
    """

    def __init__(self, model: UNet) -> None:
        """Args:
        model: a network with ``output: same``.
        """
        super().__init__()
        self.core = model.core()
        self.grids = [(g.first, g.step, g.border) for g in model.plan.lattices]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spans = []
        for axis, (first, step, border) in enumerate(self.grids):
            size = x.shape[axis + 2]
            pad_before, core, crop_before = _same_output_arithmetic(size, first, step, border)
            # Index i of the mirrored axis reads pixel reflect(i − pad_before): numpy's "reflect", period 2(n − 1).
            index = torch.arange(core, device=x.device) - pad_before
            period = torch.full((), 2 * (size - 1), dtype=torch.int64, device=x.device)
            index = torch.remainder(index, period)
            index = torch.where(index < size, index, period - index)
            x = x.index_select(axis + 2, index)
            spans.append((crop_before, size))
        y = self.core(x)
        for axis, (start, size) in enumerate(spans):
            y = y.index_select(axis + 2, torch.arange(start, start + size, device=y.device))
        return y


# --- metadata ----------------------------------------------------------------------------------------------


def _annotate(
    onnx_model: Any, plan: Plan, axes: tuple[AxisRule, ...], batch: int | None, heads: bool = False,
    intensity: dict[str, Any] | None = None,
) -> None:
    """Name the dimensions and write the spec, the version, the size rules and a trained network's intensity
    normalisation into the model's metadata."""
    spec = plan.spec
    ids = DIM_NAMES[spec.spatial_dims]
    graph = onnx_model.graph
    batch_dim: Any = batch if batch is not None else ir.SymbolicDim("batch")
    ins, outs = [], []
    for axis, rule in enumerate(axes):
        if not rule.dynamic:
            size = rule.minimum
            ins.append(size)
            outs.append(size if plan.same_output else size - 2 * rule.border)
        elif plan.same_output:
            ins.append(ir.SymbolicDim(ids[axis]))
            outs.append(ir.SymbolicDim(ids[axis]))
        else:
            k = f"k_{ids[axis]}"
            ins.append(ir.SymbolicDim(f"{rule.step}*{k} + {rule.first}"))
            outs.append(ir.SymbolicDim(f"{rule.step}*{k} + {rule.first - 2 * rule.border}"))
    graph.inputs[0].shape = ir.Shape([batch_dim, plan.input_shape[0], *ins])
    graph.outputs[0].shape = ir.Shape([batch_dim, plan.output_shape[0], *outs])
    if heads:  # each head's size is linear in each axis's k too: read it off the plans at k = 0 and k = 1
        firsts = [rule.first if rule.dynamic else rule.minimum for rule in axes]
        at = [make_plan(spec, firsts).heads]
        for axis, rule in enumerate(axes):
            bigger = list(firsts)
            bigger[axis] += rule.step if rule.dynamic else 0
            at.append(make_plan(spec, bigger).heads)
        for index, output in enumerate(graph.outputs[1:], 1):
            dims: list[Any] = []
            for axis, rule in enumerate(axes):
                low, high = at[0][index].shape[1 + axis], at[1 + axis][index].shape[1 + axis]
                dims.append(ir.SymbolicDim(f"{high - low}*k_{ids[axis]} + {low}") if rule.dynamic else low)
            output.shape = ir.Shape([batch_dim, plan.output_shape[0], *dims])
    sizes = SizesMetadata(
        input=INPUT_NAME, output=output_name(plan), batch=batch, output_mode=output_mode(plan),
        export_size=plan.input_size, axes=axes, heads=head_names(plan)[1:] if heads else (),
    )
    props = onnx_model.metadata_props
    props[META_VERSION] = __version__
    props[META_SPEC] = json.dumps(spec.model_dump(mode="json"), separators=(",", ":"))
    props[META_SIZES] = sizes.to_json()
    props[META_SIZE_RULES] = "; ".join(size_rule_lines(plan, axes, batch is not None))
    if intensity is not None:
        props[META_INTENSITY] = json.dumps(intensity, separators=(",", ":"))
    onnx_model.doc_string = (
        f"{spec.name}: U-Net from unetgen {__version__}"
        + (f" ({spec.description})" if spec.description else "")
        + f". {INPUT_NAME} {shape_words(plan, axes, batch, output=False)} → {output_name(plan)} "
        f"{shape_words(plan, axes, batch, output=True)}. Size rules: {props[META_SIZE_RULES]}. "
        "Run it with unetgen.onnx_session(path), which checks sizes first."
    )


def _notes(source: Any, plan: Plan, axes: tuple[AxisRule, ...]) -> tuple[str, ...]:
    """What a user should know about the file: untrained weights, eval mode, sizes the graph does not take."""
    notes = []
    if not isinstance(source, UNet):
        init = "init: paper, He et al." if plan.spec.init == "paper" else "PyTorch's default init"
        notes.append(f"untrained weights ({init}); export a trained checkpoint with --weights model.pt")
    if any(layer.kind == "norm" and layer.mode == "batch" for layer in plan.layers):
        notes.append("exported in eval mode: batch norm, with its running statistics, folded into the convolutions")
    if any(layer.kind == "dropout" and layer.value > 0 for layer in plan.layers):
        notes.append("exported in eval mode: dropout is off")
    if plan.same_output:
        raised: dict[int, list[str]] = {}
        for rule in axes:
            if rule.dynamic and rule.minimum > 2:
                raised.setdefault(rule.minimum, []).append(rule.name)
        for minimum, names in raised.items():
            where = "" if len(axes) == 1 else f" along {', '.join(names)}"
            notes.append(
                f"sizes below {minimum}{where} are refused by onnx_session (the exported graph is exact from "
                f"{minimum} up); export such a size with --static --input-size"
            )
    return tuple(notes)


# --- checks and writing ------------------------------------------------------------------------------------


def _check_and_write(
    model: UNet, onnx_model: Any, report: ExportReport, target: Path, verify: bool, raise_on_failure: bool,
    request: Any = None,
) -> ExportReport:
    """Stage the file beside ``target``, check it, and move it into place only if every check passed."""
    started = time.perf_counter()
    found = {domain or "ai.onnx": version for domain, version in onnx_model.opset_imports.items()}
    if found.get("ai.onnx") != report.opset:
        raise ExportError(
            f"opset {report.opset} was requested, but torch's exporter wrote opset {found.get('ai.onnx')} (its "
            f"converter cannot take this network down to {report.opset}); use --opset {found.get('ai.onnx')}"
        )
    weights = sum(value.const_value.nbytes for value in onnx_model.graph.initializers.values())
    data_name = external_data_name(target.name) if weights > INLINE_LIMIT else None
    with staging(target, ExportError) as stage:
        staged = stage.path(target.name)
        with writing(target, ExportError):
            _save(onnx_model, staged, data_name)
        errors: list[str] = []
        checks: list[SizeCheck] = []
        if verify:
            others = sorted(domain for domain in found if domain != "ai.onnx")
            if others:
                errors.append(f"opset_import: custom domains {', '.join(others)} (other runtimes may not run them)")
            errors += _full_check(staged)
            if not errors:
                checks = _check_shapes(model, staged, report)
                errors += [f"{size_text(c.input_shape)}: {c.problem}" for c in checks if not c.ok]
        done = dataclasses.replace(
            report, verified=verify, checks=tuple(checks), errors=tuple(errors),
            verify_seconds=time.perf_counter() - started,
        )
        if errors:
            if raise_on_failure:
                raise ExportError("\n".join(f"{target}: check failed, nothing written: {e}" for e in errors))
            return done
        if request is not None:  # the int8 or float16 file replaces the float32 one, once it is checked
            fixed = (report.batch, report.input_size) if report.static else None
            staged, lowered = lower_precision(model, staged, stage, request, report.plan, input_name=INPUT_NAME,
                                              fixed=fixed)
            done = dataclasses.replace(done, precision=lowered.precision, lowered=lowered, errors=lowered.errors,
                                       verify_seconds=time.perf_counter() - started)
            if lowered.errors:
                if raise_on_failure:
                    raise ExportError(refusal(target, lowered))
                return done
            if lowered.precision != "fp32":  # a lower-precision file is self-contained
                data_name = None
        old_data = _external_files(target)
        data = target.parent / data_name if data_name is not None else None
        # new weights (under a new name) first, then the model that points at them
        stage.commit(([(data_name, data)] if data is not None else []) + [(staged.name, target)])
    for stale in old_data:  # the previous export's weights (ours, by name): nothing points at them now
        if stale != data:
            with contextlib.suppress(OSError):
                stale.unlink()
    file_bytes = target.stat().st_size + (data.stat().st_size if data is not None else 0)
    log.info("wrote %s (%d bytes)", target, file_bytes)
    return dataclasses.replace(done, path=target, external_data=data, file_bytes=file_bytes)


def _save(onnx_model: Any, path: Path, data_name: str | None) -> None:
    """Write the model to ``path``: self-contained, or with its weights in ``data_name`` beside it."""
    if data_name is None:
        path.write_bytes(ir.to_proto(onnx_model).SerializeToString())
    else:
        ir.save(onnx_model, path, external_data=data_name, size_threshold_bytes=0)


def _external_files(path: Path) -> list[Path]:
    """The external-data files of an earlier unetgen export at ``path`` (named by the contract's rule)."""
    if not path.exists():
        return []
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not an ONNX file (or unreadable): nothing of ours to clean up
        return []
    names = set()
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location" and is_external_data_name(path.name, entry.value):
                names.add(entry.value)
    return [path.parent / name for name in sorted(names)]


def _full_check(model_path: Path) -> list[str]:
    """``onnx.checker`` with its full check: one line per problem (none when the file is valid)."""
    try:
        onnx.checker.check_model(str(model_path), full_check=True)
    except Exception as exc:  # ValidationError, InferenceError: both mean the file is not valid ONNX
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [f"onnx.checker: {first[:300]}"]
    return []


def check_shapes(report: ExportReport) -> list[tuple[int, ...]]:
    """The input shapes :func:`export_onnx` verifies for a report's file.

    Three runs: the export size at batch 1; another size at batch 1 and the smallest sizes the file takes at
    batch 2. For ``output: crop`` those are other lattice points (``k`` = 2, 3, 4 … along the axes, then ``k`` = 0
    and 1 alternating), so no axis repeats another's size; for ``output: same`` they are odd sizes (the smallest
    ones mirror in several rounds). Both are small, so checking costs little beyond the export size. A static
    file has one shape, and that is checked.

    Args:
        report: the export's report (its spec, size and axis rules).

    Returns:
        The ``(batch, channels, *size)`` shapes, none repeated.
    """
    spec = report.spec
    same = report.plan.same_output
    size = tuple(report.input_size)
    if report.static:
        return [(int(report.batch or 1), spec.in_channels, *size)]

    def odd(n: int) -> int:
        return n if n % 2 else n + 1

    size = tuple(s if rule.dynamic else rule.minimum for s, rule in zip(size, report.axes))
    other: list[int] = []
    small: list[int] = []
    for axis, (s, rule) in enumerate(zip(size, report.axes)):
        if not rule.dynamic:  # specialised by torch.export: the file takes only this size along the axis
            other.append(s)
            small.append(s)
        elif same:
            other.append(odd(max(rule.minimum, rule.first - 2 * rule.border + (2 + axis) * rule.step + 1)))
            small.append(odd(rule.minimum + 2 * axis))
        else:
            other.append(rule.minimum + (2 + axis) * rule.step)
            small.append(rule.minimum + (axis % 2) * rule.step)
    shapes = [(1, spec.in_channels, *size)]
    for batch, sizes in ((1, other), (2, small)):
        while tuple(sizes) in {shape[2:] for shape in shapes} and any(r.dynamic for r in report.axes):
            sizes = [n + (2 if same else r.step) * r.dynamic for n, r in zip(sizes, report.axes)]
        shapes.append((batch, spec.in_channels, *sizes))
    return shapes


def _check_shapes(model: UNet, model_path: Path, report: ExportReport) -> list[SizeCheck]:
    """Run the file on onnxruntime (CPU) at each shape of :func:`check_shapes` and compare with torch."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    generator = np.random.default_rng(0)
    checks = []
    for shape in check_shapes(report):
        x = generator.standard_normal(shape, dtype=np.float32)
        expected = (shape[0], report.spec.out_channels, *make_plan(report.spec, shape[2:]).output_size)
        with torch.no_grad():
            model.return_heads = bool(report.heads)
            try:
                references = model(torch.from_numpy(x))
            finally:
                model.return_heads = False
        references = [r.numpy() for r in references] if isinstance(references, list) else [references.numpy()]
        try:
            outputs = session.run(None, {INPUT_NAME: x})
        except Exception as exc:  # onnxruntime's errors are plain RuntimeErrors with a long message
            message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            checks.append(SizeCheck(shape, expected, None, None, None, False, f"onnxruntime failed: {message}"))
            continue
        got, reference = outputs[0], references[0]
        scale = float(np.max(np.abs(reference))) if reference.size else 0.0
        if tuple(got.shape) != expected or tuple(reference.shape) != expected:
            problem = (
                f"output {size_text(got.shape)}, torch {size_text(reference.shape)}, "
                f"the plan {size_text(expected)}"
            )
            checks.append(SizeCheck(shape, expected, tuple(got.shape), None, scale, False, problem))
            continue
        error, problem = 0.0, ""
        for name, out, ref in zip(("output", *report.heads), outputs, references):
            if out.shape != ref.shape:
                problem = f"{name} {size_text(out.shape)}, torch {size_text(ref.shape)}"
                break
            error = max(error, float(np.max(np.abs(out.astype(np.float64) - ref))) if out.size else 0.0)
        if len(outputs) != len(references):
            problem = f"{len(outputs)} outputs, torch {len(references)}"
        ok = not problem and bool(np.isfinite(error)) and error <= TOLERANCE * max(scale, 1e-6)
        if not problem and not ok:
            problem = f"max |Δ| {error:.2e} exceeds {TOLERANCE:.0e} × scale {scale:.3g}"
        checks.append(SizeCheck(shape, expected, tuple(got.shape), error, scale, ok, problem))
    return checks


__all__ = [
    "TOLERANCE",
    "INLINE_LIMIT",
    "SizeCheck",
    "ExportReport",
    "export_onnx",
    "check_shapes",
]
