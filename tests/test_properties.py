"""Property-based tests over the spec space and input sizes (hypothesis): the plan's sizes and parameter counts
equal the built module's (real forward passes at small widths), every size the plan calls valid runs, and every
size it rejects is rejected by the module with the same message."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import unetgen
from test_plan_matches_module import _shapes_by_hook
from unetgen.planning.plan import lattices


@st.composite
def specs(draw) -> unetgen.UNetSpec:
    dims = draw(st.sampled_from([1, 1, 2, 2, 2, 3]))
    depth = draw(st.integers(1, 4 if dims < 3 else 3))
    padding = draw(st.sampled_from(["valid", "same"]))
    upsampling = draw(st.sampled_from(["transpose", "upsample_conv"]))
    per_axis = st.lists(st.sampled_from([1, 2, 2, 3]), min_size=dims, max_size=dims)
    data = dict(
        spatial_dims=dims,
        depth=depth,
        in_channels=draw(st.integers(1, 2)),
        out_channels=draw(st.integers(1, 3)),
        convs_per_level=draw(st.integers(1, 3)),
        padding=padding,
        kernel_sizes=[draw(st.lists(st.sampled_from([1, 3, 3, 5]), min_size=dims, max_size=dims)) for _ in range(depth)],
        pool_sizes=[draw(per_axis) for _ in range(depth - 1)],
        upsampling=upsampling,
        up_channels=draw(st.sampled_from(["halve", "keep"])),
        norm=draw(st.sampled_from(["none", "batch", "instance", "group", "layer"])),
        norm_groups=1,
        activation=draw(st.sampled_from(["relu", "leaky_relu", "elu", "gelu", "silu", "prelu"])),
        block=draw(st.sampled_from(["plain", "residual"])),
        output=draw(st.sampled_from(["crop", "same"])),
        final_activation=draw(st.sampled_from(["none", "sigmoid", "softmax"])),
    )
    if draw(st.booleans()):
        data["channels"] = [draw(st.integers(1, 3)) for _ in range(depth)]
    else:
        data["width"] = draw(st.integers(1, 2))
        data["growth"] = draw(st.sampled_from([1.0, 1.5, 2.0]))
    if upsampling == "upsample_conv":
        data["interpolation"] = draw(st.sampled_from(["nearest", "linear"]))
    if padding == "same" or upsampling == "upsample_conv":
        data["padding_mode"] = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    return unetgen.spec_from_dict(data)


def _sizes(dims: int) -> st.SearchStrategy[tuple[int, ...]]:
    top = {1: 90, 2: 48, 3: 22}[dims]
    return st.lists(st.integers(1, top), min_size=dims, max_size=dims).map(tuple)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_plan_and_module_agree_on_every_size(data):
    spec = data.draw(specs())
    size = data.draw(_sizes(spec.spatial_dims))
    model = unetgen.build(spec).eval()
    assert sum(p.numel() for p in model.parameters()) == unetgen.make_plan(spec, model.plan.input_size).parameters
    x = torch.randn(1, spec.in_channels, *size)
    try:
        plan = unetgen.make_plan(spec, size)
    except unetgen.SizeError as planned:
        event("size rejected")
        with pytest.raises(unetgen.SizeError) as raised:
            model(x)
        assert str(raised.value) == str(planned)
        return
    event(f"size accepted ({spec.output})")
    seen = _shapes_by_hook(model, x, [b.name for b in plan.blocks])
    for block in plan.blocks:
        assert seen[block.name] == block.shape, block.name
    assert seen["<output>"] == plan.output_shape
    if spec.output == "same":
        assert plan.output_size == size


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_lattice_sizes_are_valid_and_others_are_not(data):
    spec = data.draw(specs())
    grids = lattices(spec)
    k = data.draw(st.integers(0, 5))
    good = tuple(g.first + k * g.step for g in grids)
    plan = unetgen.make_plan(spec, good)
    if spec.output == "crop":
        assert plan.output_size == tuple(g.output(n) for g, n in zip(grids, good))
        axis = data.draw(st.integers(0, spec.spatial_dims - 1))
        grid = grids[axis]
        off = data.draw(st.integers(1, grid.step - 1)) if grid.step > 1 else -grid.first
        bad = list(good)
        bad[axis] = good[axis] + off
        if bad[axis] >= 1 and not grid.contains(bad[axis]):
            with pytest.raises(unetgen.SizeError, match="nearest valid sizes"):
                unetgen.make_plan(spec, bad)
