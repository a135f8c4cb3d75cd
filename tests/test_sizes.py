"""Properties of the pure size arithmetic (hypothesis: thousands of cheap cases)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import unetgen
from unetgen.planning import sizes
from unetgen.network.layers import MirrorPad

@st.composite
def geometries(draw):
    depth = draw(st.integers(1, 6))
    strided = draw(st.booleans())  # down-sampling by the first (strided) convolution of each level
    shrinks = tuple(draw(st.lists(st.sampled_from([0, 2, 4, 6]), min_size=depth, max_size=depth)))
    if strided and any(shrinks):  # valid strided convolutions centre their skip only when kernel − factor is even
        shrinks = (shrinks[0],) * depth
    factors = [1, 3] if strided and any(shrinks) else [1, 2, 2, 3]
    return sizes.AxisGeometry(
        convs=draw(st.integers(1, 3)),
        shrinks=shrinks,
        pools=tuple(draw(st.lists(st.sampled_from(factors), min_size=depth - 1, max_size=depth - 1))),
        min_conv_inputs=tuple(draw(st.lists(st.integers(1, 3), min_size=depth, max_size=depth))),
        min_map=draw(st.sampled_from([1, 2])),
        strided=strided,
        kernels=tuple(s + 1 if s else 3 for s in shrinks),
        decoder_convs=draw(st.sampled_from([None, 1, 2])),
    )


@settings(max_examples=300, deadline=None)
@given(geometries(), st.integers(1, 2000))
def test_lattice_is_exactly_the_valid_sizes(geometry, size):
    grid = sizes.lattice(geometry)
    assert grid.contains(size) == sizes.is_valid(size, geometry)
    if grid.contains(size):
        assert sizes.trace(size, geometry).output == grid.output(size)
        # every crop is central and the same at every valid size
        assert sizes.trace(size, geometry).crop == sizes.trace(grid.first, geometry).crop


@settings(max_examples=300, deadline=None)
@given(geometries(), st.integers(1, 2000))
def test_nearest_sizes_are_valid_and_nearest(geometry, size):
    grid = sizes.lattice(geometry)
    nearest = grid.nearest(size)
    assert all(sizes.is_valid(n, geometry) for n in nearest)
    if not grid.contains(size):
        above = nearest[-1]
        assert above > size and not any(sizes.is_valid(n, geometry) for n in range(size, above))
        if len(nearest) == 2:
            assert nearest[0] < size and not any(sizes.is_valid(n, geometry) for n in range(nearest[0] + 1, size))


@settings(max_examples=300, deadline=None)
@given(geometries(), st.integers(2, 3000))
def test_same_output_covers_any_size(geometry, size):
    grid = sizes.lattice(geometry)
    io = sizes.same_output_io(size, grid)
    assert grid.contains(io.core_input)
    assert size + sum(io.pad) == io.core_input
    assert grid.output(io.core_input) - sum(io.crop) == size
    # output pixel i lies over input pixel i: the mirror before equals border + crop before
    assert io.pad[0] == grid.border + io.crop[0]
    assert min(io.pad) >= grid.border
    # the core is the smallest lattice point that covers the size
    assert grid.output(io.core_input - grid.step) < size or io.core_input == grid.first


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 50), st.integers(0, 400), st.integers(0, 400))
def test_mirror_rounds_equal_numpy_reflect(size, before, after):
    steps = sizes.mirror_rounds(size, before, after)
    assert all(a < size and b < size for a, b in steps)
    assert sum(a for a, _ in steps) == before and sum(b for _, b in steps) == after
    line = np.arange(size, dtype=np.float32)
    x = torch.from_numpy(line)[None, None]
    out = MirrorPad()(x, [[a, b] for a, b in steps])
    np.testing.assert_array_equal(out[0, 0].numpy(), np.pad(line, (before, after), mode="reflect"))


def test_mirror_of_size_one_is_refused():
    with pytest.raises(ValueError):
        sizes.mirror_rounds(1, 3, 3)
    spec = unetgen.UNetSpec(depth=3, width=2, output="same")
    with pytest.raises(unetgen.SizeError, match="smallest size is 2"):
        unetgen.make_plan(spec, [1, 40])


def test_same_output_of_paper_network_at_an_odd_size(paper_spec):
    spec = paper_spec.replace(output="same")
    plan = unetgen.make_plan(spec, [101, 77])
    assert plan.output_size == (101, 77)
    # the core runs on lattice points (16k+124) whose output covers the input
    assert all(plan.lattices[0].contains(c) for c in plan.core_input_size)
    assert plan.core_input_size == (300, 268)
    assert plan.mirror[1] == (95, 96)  # more than 77 - 1: mirrored in more than one round
    assert len(sizes.mirror_rounds(77, *plan.mirror[1])) == 2


def test_same_output_mirrors_never_zero_fills(paper_spec):
    # A valid network with output: same sees mirrored context: its output at the image edge equals the output of
    # the same network run (crop mode) on the numpy-mirrored image.
    torch.manual_seed(0)
    same = unetgen.UNetSpec(depth=3, width=3, output="same")
    model = unetgen.build(same).eval()
    core = unetgen.build(same.replace(output="crop")).eval()
    core.load_state_dict(model.state_dict())
    image = torch.randn(1, 1, 45, 38)
    plan = unetgen.make_plan(same, [45, 38])
    mirrored = np.pad(image.numpy(), [(0, 0), (0, 0), *plan.mirror], mode="reflect")
    with torch.no_grad():
        expected = core(torch.from_numpy(mirrored))
        (h0, h1), (w0, w1) = plan.output_crop
        expected = expected[..., h0 : expected.shape[2] - h1, w0 : expected.shape[3] - w1]
        torch.testing.assert_close(model(image), expected)
