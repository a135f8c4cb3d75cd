"""Figures of every preset and a matrix of variants, computed through the public API only.

``python tests/pinned/figures.py`` rewrites ``figures.json`` beside it. It was first run on the code *before* the
plan became the network's only description (issue 12), so ``test_pinned_figures.py`` proves the refactor changed
no number: parameters, shapes, FLOPs, the memory estimate, receptive fields, tiling layouts, state-dict keys.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

import unetgen
from unetgen.summary import render
from unetgen.inference.tiling import plan_tiles
from unetgen.planning.field import edge_margins, reach

HERE = Path(__file__).parent
SMALL = dict(depth=3, width=4, in_channels=2, out_channels=3)

#: name → spec fields (a preset name under "preset").
VARIANTS: dict[str, dict] = {
    **{f"preset-{name}": {"preset": name} for name in ("paper", "modern", "cicek3d", "nnunet")},
    **{
        f"matrix-{p}-{u}-{n}-{o}": dict(SMALL, padding=p, upsampling=u, norm=n, output=o)
        for p in ("valid", "same")
        for u in ("transpose", "upsample_conv")
        for n in ("none", "batch")
        for o in ("crop", "same")
    },
    "linear-valid": dict(SMALL, upsampling="upsample_conv", interpolation="linear"),
    "linear-same-reflect": dict(SMALL, padding="same", upsampling="upsample_conv", interpolation="linear",
                                padding_mode="reflect", output="same"),
    "residual-valid": dict(SMALL, block="residual", norm="batch"),
    "residual-same": dict(SMALL, block="residual", padding="same", norm="group", norm_groups=2, output="same"),
    "residual-samewidth": dict(depth=3, block="residual", channels=[4, 4, 4]),
    "instance-same": dict(SMALL, padding="same", norm="instance", output="same"),
    "layer-valid": dict(SMALL, norm="layer"),
    "gelu-dropout": dict(SMALL, activation="gelu", dropout=0.3, dropout_at="bottleneck"),
    "prelu-every": dict(SMALL, activation="prelu", dropout=0.1, dropout_at="every_level"),
    "elu-silu": dict(SMALL, activation="silu", padding="same"),
    "leaky": dict(SMALL, activation="leaky_relu", negative_slope=0.2, norm="instance"),
    "final-softmax": dict(SMALL, final_activation="softmax", output="same"),
    "final-sigmoid": dict(SMALL, out_channels=1, final_activation="sigmoid"),
    "growth-cap": dict(depth=4, width=16, growth=1.5, max_channels=40, padding="same"),
    "per-conv-keep": dict(depth=3, channels=[[4, 8], 8, [8, 16]], up_channels="keep"),
    "no-bias": dict(SMALL, conv_bias=False, up_bias=False),
    "aniso": dict(depth=3, width=3, pool_sizes=[[1, 2], 2], kernel_sizes=[[1, 3], 3, [3, 1]]),
    "pool3-kernel5": dict(depth=3, width=3, pool_sizes=[3, 2], kernel_sizes=[5, 3, 3]),
    "depth1": dict(depth=1, width=4),
    "depth2-convs3": dict(depth=2, width=4, convs_per_level=3),
    "1d-valid": dict(spatial_dims=1, depth=3, width=2, norm="batch"),
    "1d-same": dict(spatial_dims=1, depth=3, width=2, padding="same", output="same"),
    "3d-valid": dict(spatial_dims=3, depth=3, width=2, norm="batch"),
    "3d-same-linear": dict(spatial_dims=3, depth=2, width=2, padding="same", upsampling="upsample_conv",
                           interpolation="linear", output="same"),
}

TILE_IMAGE = {1: (4096,), 2: (4096, 4096), 3: (300, 260, 200)}


def spec_of(fields: dict) -> unetgen.UNetSpec:
    fields = dict(fields)
    if "preset" in fields:
        return unetgen.preset(fields.pop("preset"))
    return unetgen.UNetSpec(**fields)


def figures(fields: dict) -> dict:
    spec = spec_of(fields)
    plan = unetgen.make_plan(spec)
    cost = unetgen.estimate(plan)
    cost2 = unetgen.estimate(plan, batch=2, bytes_per_value=2)
    with torch.device("meta"):
        model = unetgen.build(spec)
    layout = plan_tiles(spec, TILE_IMAGE[spec.spatial_dims])
    return {
        "input_shape": list(plan.input_shape),
        "output_shape": list(plan.output_shape),
        "core_input_size": list(plan.core_input_size),
        "mirror": [list(m) for m in plan.mirror],
        "output_crop": [list(m) for m in plan.output_crop],
        "blocks": [[b.name, list(b.shape), b.params] for b in plan.blocks],
        "skips": [[s.level, list(s.source), list(s.target), list(s.crop)] for s in plan.skips],
        "lattices": [[g.first, g.step, g.border] for g in plan.lattices],
        "parameters": plan.parameters,
        "norm_parameters": plan.norm_parameters,
        "conv_layers": plan.conv_layers,
        "macs": cost.macs,
        "activation_bytes": cost.activation_bytes,
        "parameter_bytes": cost.parameter_bytes,
        "activation_bytes_b2_half": cost2.activation_bytes,
        "receptive_field": [[f.size, f.exact] for f in unetgen.receptive_field(plan)],
        "reach": [list(r) for r in reach(plan)],
        "edge_margins": [list(m) for m in edge_margins(plan)],
        "tiles": {
            "window": list(layout.window),
            "starts": [list(axis.starts) for axis in layout.axes],
            "batch": layout.batch,
            "mode": layout.mode,
            "peak_bytes": layout.peak_bytes,
        },
        "state_dict": [[key, list(value.shape)] for key, value in model.state_dict().items()],
        "parameters_module": sum(p.numel() for p in model.parameters()),
    }


def words(fields: dict) -> dict:
    """What a user reads: the plan's words per block, the summary table, the drawing. Pinned separately (they may
    be reworded on purpose; the numbers may not)."""
    plan = unetgen.make_plan(spec_of(fields))
    return {
        "blocks": [[b.name, b.operation] for b in plan.blocks],
        "summary": render(plan).splitlines(),
        "draw_sha256": hashlib.sha256(unetgen.draw(plan).encode()).hexdigest(),
    }


def compute() -> dict:
    return {name: {"figures": figures(fields), "words": words(fields)} for name, fields in VARIANTS.items()}


if __name__ == "__main__":
    result = compute()
    (HERE / "figures.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {len(result)} variants", file=sys.stderr)
