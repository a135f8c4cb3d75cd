"""Plan → text: how the CLI describes a network (``unetgen build``'s table, ``unetgen sizes``' report). Pure
formatting of the plan's numbers, no torch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .planning.cost import Cost, estimate, training_macs
from .planning.field import Field, receptive_field
from .planning.plan import Layer, Plan, default_input_size
from .planning.sizes import Lattice
from .text import AXIS_LETTERS, human_bytes, size_text
from .version import __version__


def render(plan: Plan, source: str | None = None) -> str:
    """The plan as a table: one row per block (name, operation, output shape, parameters), then the totals.

    Args:
        plan: the plan to show.
        source: where the spec came from (a file or preset name), shown in the title.

    Returns:
        The text, ending with a newline.
    """
    spec = plan.spec
    title = spec.name + (f" ({source})" if source and source != spec.name else "")
    lines = [title + (f" — {spec.description}" if spec.description else "")]
    lines.append(f"input {size_text(plan.input_shape)} → output {size_text(plan.output_shape)}")
    lines.append("")
    letters = AXIS_LETTERS[len(plan.input_size)]
    rows = [("block", "operation", "output (C×" + "×".join(letters) + ")", "params")]
    rows += [(b.name, b.operation, size_text(b.shape), f"{b.params:,}" if b.params else "—") for b in plan.blocks]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for name, operation, shape, params in rows:
        lines.append(f"{name:<{widths[0]}}  {operation:<{widths[1]}}  {shape:<{widths[2]}}  {params:>11}".rstrip())
    lines.append("")
    mib = plan.parameters * 4 / 2**20
    lines.append(f"{plan.conv_layers} conv layers · {plan.parameters:,} parameters ({mib:,.1f} MiB as float32)")
    if plan.norm_parameters:
        lines.append(
            f"{plan.parameters - plan.norm_parameters:,} parameters without the norms' scale and shift "
            f"({plan.norm_parameters:,}), the count some papers give"
        )
    cost = estimate(plan)
    lines.append(
        f"one pass at batch 1, float32: {cost.flops / 1e9:,.1f} GFLOP; peak memory ≈ "
        f"{human_bytes(cost.activation_bytes)} of activations + {human_bytes(cost.parameter_bytes)} of weights"
    )
    lines.append(f"receptive field {size_text(receptive_field(plan))} pixels")
    grids = plan.lattices
    if plan.same_output:
        lines.append("takes any input size from 2 per axis; the output has the input's size")
        border = plan.border[0] if len(set(plan.border)) == 1 else "/".join(str(b) for b in plan.border)
        if any(plan.border):
            lines.append(f"the input is mirrored by the network's border ({border} per side) plus any rounding")
    elif len(set(grids)) == 1:
        grid = grids[0]
        lines.append(f"valid input sizes per axis: {grid.describe()}")
        if grid.border:
            lines.append(f"border {grid.border} per side: output = input − {2 * grid.border}")
    else:
        for name, grid in zip(plan.axis_names, grids):
            lines.append(f"valid {name} sizes: {grid.describe()}, border {grid.border}")
    return "\n".join(lines) + "\n"


#: At most this many sizes are listed for a range (a range of a million sizes would print a million).
MAX_LISTED = 200


def size_report(
    plan: Plan,
    near: int | None = None,
    span: Sequence[int] | None = None,
    output_size: int | None = None,
) -> str:
    """The sizes calculator: per group of alike axes, the valid input sizes with their outputs, the minimum, the
    border and the receptive field.

    Args:
        plan: the network's plan (any valid size; only its lattices and receptive field are used).
        near: list the valid sizes around this one (default: the spec's input size).
        span: ``(low, high)``: list the valid sizes from ``low`` to ``high`` (at most ``MAX_LISTED``), instead.
        output_size: say which input size gives this output size, instead of listing sizes.

    Returns:
        The text, ending with a newline.
    """
    same = plan.same_output
    names = plan.axis_names
    centres = default_input_size(plan.spec)
    rule = "output = input" if same else "output = input − 2 × border"
    lines = [f"{plan.spec.name}: valid input sizes per axis ({rule})"]
    groups: dict[tuple[Lattice, Field], list[str]] = {}
    for name, grid, field in zip(names, plan.lattices, receptive_field(plan)):
        groups.setdefault((grid, field), []).append(name)
    for (grid, field), axes in groups.items():
        label = "every axis" if len(groups) == 1 else ", ".join(axes)
        lines.append("")
        if same:
            lines.append(f"{label}: any size from 2; the input is mirrored onto the core lattice {grid.describe()}")
        else:
            lines.append(f"{label}: {grid.describe()} → output {grid.first - 2 * grid.border}+{grid.step}k")
        lines.append(f"  minimum input {2 if same else grid.first}, border {grid.border} per side, "
                     f"receptive field {field}")
        if output_size is not None:
            lines.append(_input_for_output(grid, output_size, same))
        elif not same:
            if span is not None:
                low, high = span
                listed = list(range(grid.at_least(low), high + 1, grid.step)[:MAX_LISTED])  # never a list of billions
            else:
                above = grid.at_least(near if near is not None else centres[names.index(axes[0])])
                around = range(above - 3 * grid.step, above + 3 * grid.step + 1, grid.step)
                listed = [n for n in around if n >= grid.first]
            lines.append("  " + ", ".join(f"{n} → {grid.output(n)}" for n in listed) if listed else "  none in range")
    return "\n".join(lines) + "\n"


def _input_for_output(grid: Lattice, output_size: int, same: bool) -> str:
    """The line that says which input size gives ``output_size``, or the nearest ones when none does."""
    if same:
        return f"  output {output_size} ← input {output_size}"
    options = grid.input_for_output(output_size)
    exact = [n for n in options if grid.output(n) == output_size]
    if exact:
        return f"  output {output_size} ← input {exact[0]}"
    near = ", ".join(f"{n} → {grid.output(n)}" for n in options)
    return f"  output {output_size} is not reachable; nearest: {near}"


def plan_json(plan: Plan) -> dict[str, Any]:
    """The plan as JSON-ready data (what ``unetgen build --json`` prints): every block with its layers."""
    cost = estimate(plan)
    return {
        "unetgen": __version__,
        "spec": plan.spec.model_dump(mode="json"),
        "input_shape": list(plan.input_shape),
        "output_shape": list(plan.output_shape),
        "core_input_size": list(plan.core_input_size),
        "mirror": [list(pad) for pad in plan.mirror],
        "output_crop": [list(crop) for crop in plan.output_crop],
        "blocks": [
            {
                "name": b.name, "operation": b.operation, "shape": list(b.shape), "params": b.params,
                "layers": [_layer_json(layer) for layer in b.layers],
            }
            for b in plan.blocks
        ],
        "skips": [
            {"level": s.level, "source": list(s.source), "target": list(s.target), "crop": list(s.crop)}
            for s in plan.skips
        ],
        "valid_sizes": [
            {"axis": name, "first": g.first, "step": g.step, "border": g.border}
            for name, g in zip(plan.axis_names, plan.lattices)
        ],
        "parameters": plan.parameters,
        "norm_parameters": plan.norm_parameters,
        "flops": cost.flops,
        "activation_bytes": cost.activation_bytes,
        "parameter_bytes": cost.parameter_bytes,
        "receptive_field": [{"size": f.size, "exact": f.exact} for f in receptive_field(plan)],
        "conv_layers": plan.conv_layers,
    }


def _layer_json(layer: Layer) -> dict[str, Any]:
    """One layer as JSON-ready data: its name, kind, inputs, output shape and the fields its kind uses."""
    data: dict[str, Any] = {"name": layer.name, "kind": layer.kind, "inputs": list(layer.inputs),
                            "shape": list(layer.shape)}
    for key in ("params", "kernel", "stride", "pads", "crop", "mode", "bias", "value", "groups"):
        value = getattr(layer, key)
        if value or (key == "bias" and layer.kind in ("conv", "conv_transpose")):
            data[key] = [list(v) for v in value] if key in ("pads", "crop") else list(value) if isinstance(value, tuple) else value
    return data


_PRECISION_WORDS = {"fp32": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}


def _training_memory(cost: Cost) -> Any:
    """The training estimate in ``cost``; callers ask for it only after estimating with ``training=True``."""
    if cost.training is None:
        raise ValueError("this cost was estimated without training=True; estimate(plan, ..., training=True) first")
    return cost.training


def training_text(plan: Plan, cost: Cost, optimizer: str | None, precision: str, device: str,
                  checkpoint: Sequence[int] = ()) -> str:
    """``unetgen build --train``'s lines: one training step's peak memory and its parts (:func:`estimate` with
    ``training=True``), and its FLOPs."""
    memory = _training_memory(cost)
    where = {"forward": "at the end of the forward pass", "backward": "in the backward pass",
             "step": "in the optimizer's update"}[memory.phase]
    levels = f", checkpointing levels {', '.join(map(str, checkpoint))}" if checkpoint else ""
    lines = [
        f"training step, batch {cost.batch}, {optimizer or 'no optimizer'}, {_PRECISION_WORDS[precision]}, on "
        f"{device}{levels}: peak ≈ {human_bytes(memory.peak_bytes)} {where}",
        f"  weights {human_bytes(memory.parameter_bytes)} · gradients {human_bytes(memory.gradient_bytes)} · "
        f"optimizer state {human_bytes(memory.optimizer_bytes)} · input and targets {human_bytes(memory.input_bytes)}",
        f"  saved for backward {human_bytes(memory.saved_bytes)} (what autograd keeps when the forward pass ends)",
        f"  {2 * training_macs(plan, checkpoint) * cost.batch / 1e9:,.1f} GFLOP per step (forward and backward "
        f"convolutions{', the checkpointed levels recomputed' if checkpoint else ''})",
    ]
    return "\n".join(lines) + "\n"


def training_json(plan: Plan, cost: Cost, checkpoint: Sequence[int] = ()) -> dict[str, Any]:
    """``unetgen build --train --json``'s ``training`` entry (``checkpoint``: the checkpointed levels)."""
    memory = _training_memory(cost)
    return {
        "batch": cost.batch, "peak_bytes": memory.peak_bytes, "phase": memory.phase,
        "parameter_bytes": memory.parameter_bytes, "gradient_bytes": memory.gradient_bytes,
        "optimizer_bytes": memory.optimizer_bytes, "input_bytes": memory.input_bytes,
        "saved_bytes": memory.saved_bytes, "flops": 2 * training_macs(plan, checkpoint) * cost.batch,
        "checkpoint": list(checkpoint),
    }
