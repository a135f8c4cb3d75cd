"""Plan → text: the block-by-block table ``unetgen build`` prints. Pure formatting, no torch."""

from __future__ import annotations

from .planning.cost import estimate
from .planning.field import receptive_field
from .text import human_bytes
from .planning.plan import Plan


def _fmt(shape: tuple[int, ...]) -> str:
    return "×".join(str(s) for s in shape)


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
    lines.append(f"input {_fmt(plan.input_shape)} → output {_fmt(plan.output_shape)}")
    lines.append("")
    rows = [("block", "operation", "output (C×" + "×".join(_axis_letters(spec.spatial_dims)) + ")", "params")]
    rows += [(b.name, b.operation, _fmt(b.shape), f"{b.params:,}" if b.params else "—") for b in plan.blocks]
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
    lines.append(f"receptive field {_fmt(receptive_field(plan))} pixels")
    grids = plan.lattices
    if spec.output == "same":
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


def _axis_letters(dims: int) -> list[str]:
    return {1: ["L"], 2: ["H", "W"], 3: ["D", "H", "W"]}[dims]
