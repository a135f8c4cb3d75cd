"""The pixels a tile computes differently from the whole-image pass, as the plan's layers give them
(``unetgen.planning.field.edge_margins``), against real passes: a tile cut from a larger image at the lattice's
phase, run through the core network in float64, compared with the large image's output."""

from __future__ import annotations

import pytest
import torch

import unetgen
from unetgen.planning.field import edge_margins

SMALL = dict(depth=3, width=3, in_channels=1, out_channels=2)


def _measured(spec: unetgen.UNetSpec) -> tuple[int, int]:
    """Spoilt output pixels at the near and far edge of tiles along the first axis, worst over four phases."""
    torch.manual_seed(0)
    core = unetgen.build(spec).double().eval().core()
    lattices = unetgen.make_plan(spec).lattices
    grid = lattices[0]
    n = grid.at_least(150)
    others = [g.at_least(g.first) for g in lattices[1:]]
    image = torch.randn(1, spec.in_channels, n + 4 * grid.step, *others, dtype=torch.float64)
    near = far = 0
    with torch.no_grad():
        whole = core(image)
        for phase in range(4):
            start = phase * grid.step
            tile = core(image[:, :, start : start + n])
            length = tile.shape[2]
            differs = (tile - whole[:, :, start : start + length]).abs()
            differs = differs.amax(dim=[d for d in range(differs.dim()) if d != 2]) > 1e-9
            spoilt = differs.nonzero().flatten().tolist()
            near = max(near, max((i + 1 for i in spoilt if i < length // 2), default=0))
            far = max(far, max((length - i for i in spoilt if i >= length // 2), default=0))
    return near, far


@pytest.mark.parametrize(
    "fields,expected",
    [
        (dict(padding="valid"), (0, 0)),  # nothing is made up: tiles are exact to their edges
        (dict(padding="valid", upsampling="upsample_conv"), (0, 3)),  # the far-side pad, step − 1
        (dict(padding="valid", upsampling="upsample_conv", interpolation="linear"), (3, 6)),
        (dict(padding="same"), (None, None)),
        (dict(padding="same", upsampling="upsample_conv"), (None, None)),
        (dict(padding="same", norm="batch", spatial_dims=1), (None, None)),
    ],
)
def test_edge_margins_are_what_real_passes_spoil(fields, expected):
    spec = unetgen.UNetSpec(**SMALL, **fields)
    computed = edge_margins(unetgen.make_plan(spec))[0]
    measured = _measured(spec)
    if expected != (None, None):
        assert measured == expected
    # never fewer than a real pass spoils (stitching takes the rest as exact); at most one pixel more
    assert computed[0] >= measured[0] and computed[1] >= measured[1]
    assert computed[0] - measured[0] <= 2 and computed[1] - measured[1] <= 2, (computed, measured)
