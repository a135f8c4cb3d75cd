"""The plan and the real modules agree: every block's output shape and the parameter count, over a matrix of
variants (padding × up-sampling × norm × output), at odd and even sizes, in 1D, 2D and 3D."""

from __future__ import annotations

import itertools

import pytest
import torch

import unetgen
from unetgen.planning.plan import lattices


def _shapes_by_hook(model: torch.nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, tuple[int, ...]]:
    seen: dict[str, tuple[int, ...]] = {}
    handles = []
    for name in names:
        module = model.get_submodule(name)
        handles.append(module.register_forward_hook(lambda m, i, o, n=name: seen.__setitem__(n, tuple(o.shape[1:]))))
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    seen["<output>"] = tuple(out.shape[1:])
    return seen


def _check(spec: unetgen.UNetSpec, size: tuple[int, ...], device: str = "cpu") -> None:
    plan = unetgen.make_plan(spec, size)
    with torch.device(device):
        model = unetgen.build(spec).eval()
    assert sum(p.numel() for p in model.parameters()) == plan.parameters
    x = torch.randn(2, spec.in_channels, *size, device=device)
    seen = _shapes_by_hook(model, x, [b.name for b in plan.blocks])
    for block in plan.blocks:
        assert seen[block.name] == block.shape, (block.name, size)
    assert seen["<output>"] == plan.output_shape


MATRIX = list(
    itertools.product(["valid", "same"], ["transpose", "upsample_conv"], ["none", "batch"], ["crop", "same"])
)


@pytest.mark.parametrize("padding,upsampling,norm,output", MATRIX)
def test_matrix_2d(padding, upsampling, norm, output):
    spec = unetgen.UNetSpec(
        depth=3, width=4, in_channels=2, out_channels=3, padding=padding, upsampling=upsampling, norm=norm,
        output=output,
    )
    grid = lattices(spec)[0]
    if output == "crop":
        sizes = [(grid.first, grid.first + grid.step), (grid.first + 3 * grid.step, grid.first + grid.step)]
    else:
        sizes = [(37, 20), (21, 33), (grid.first, grid.first)]  # odd, even and lattice sizes
    for size in sizes:
        _check(spec, size)


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("output", ["crop", "same"])
def test_1d_and_3d(dims, output):
    spec = unetgen.UNetSpec(spatial_dims=dims, depth=3, width=2, padding="valid", output=output, norm="batch")
    grid = lattices(spec)[0]
    size = (grid.first + grid.step,) * dims if output == "crop" else tuple([23, 18, 31][:dims])
    _check(spec, size)


def test_upsample_conv_linear_and_padding_modes():
    for mode in ("reflect", "replicate", "circular", "zeros"):
        spec = unetgen.UNetSpec(depth=3, width=3, padding="same", padding_mode=mode, upsampling="upsample_conv",
                                interpolation="linear", output="same")
        _check(spec, (19, 24))


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_depths_and_explicit_channels(depth):
    spec = unetgen.UNetSpec(depth=depth, channels=[3 + i for i in range(depth)], convs_per_level=3, kernel_size=5)
    grid = lattices(spec)[0]
    _check(spec, (grid.first, grid.first + grid.step))


def test_full_size_variants_on_meta(paper_spec):
    same_bn = paper_spec.replace(padding="same", norm="batch", input_size=[576, 576])
    _check(same_bn, (576, 576), "meta")
    _check(paper_spec.replace(output="same"), (572, 572), "meta")
    _check(paper_spec.replace(output="same"), (101, 77), "meta")
    _check(paper_spec.replace(upsampling="upsample_conv", padding="same", output="same"), (572, 572), "meta")


def test_spec_input_size_that_does_not_fit_is_named(paper_spec):
    with pytest.raises(unetgen.SizeError, match=r"the spec's input_size.*nearest valid sizes: 560, 576"):
        unetgen.build(paper_spec.replace(padding="same"))
