"""Deep supervision (issue 13): auxiliary heads planned, built, returned in nnU-Net's order, scripted, exported, and
each head's pixels placed over the main output (what a deep-supervision loss samples its targets at)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unetgen
from unetgen.cli import main
from unetgen.planning.field import head_grids

NNUNET_LIKE = dict(depth=4, width=4, downsampling="conv", padding="same", norm="instance", conv_bias=True,
                   activation="leaky_relu", deep_supervision=2)


def _heads_out(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(x)
    return out if isinstance(out, list) else [out]


@pytest.mark.parametrize("fields,size", [
    (NNUNET_LIKE, (32, 48)),
    (dict(depth=3, width=3, deep_supervision=1), (188, 204)),  # valid: heads see past the main output
    (dict(spatial_dims=3, depth=3, width=2, downsampling="conv", padding="same", deep_supervision=1,
          pool_sizes=[[1, 2, 2], 2], kernel_sizes=[[1, 3, 3], 3, 3]), (8, 16, 16)),
    (dict(depth=4, width=4, downsampling="conv", padding="same", encoder_blocks=[1, 2, 2, 2], decoder_convs=1,
          norm="instance", deep_supervision=2), (32, 32)),
])
def test_heads_are_planned_built_and_returned_highest_resolution_first(fields, size):
    spec = unetgen.UNetSpec(**fields)
    plan = unetgen.make_plan(spec, size)
    assert len(plan.heads) == 1 + spec.deep_supervision
    assert [h.name for h in plan.heads] == ["head"] + [f"decoder.{lv}.head" for lv in range(1, len(plan.heads))]
    model = unetgen.build(spec, seed=0)
    assert sum(p.numel() for p in model.parameters()) == plan.parameters
    x = torch.randn(2, spec.in_channels, *size)
    train = _heads_out(model.train(), x)
    assert [tuple(t.shape[1:]) for t in train] == [h.shape for h in plan.heads]
    evaluated = model.eval()(x)
    assert isinstance(evaluated, torch.Tensor) and tuple(evaluated.shape[1:]) == plan.output_shape
    model.return_heads = True
    asked = _heads_out(model, x)
    assert len(asked) == len(plan.heads) and torch.equal(asked[0], evaluated)


def test_head_grids_are_nnunet_nearest_exact_for_same_networks():
    # nnU-Net down-samples each head's target with interpolate(mode="nearest-exact"): the grids must pick the same
    # pixels (taken here from torch itself, on a map of pixel indices).
    plan = unetgen.make_plan(unetgen.UNetSpec(**NNUNET_LIKE), (32, 48))
    rows = torch.arange(32, dtype=torch.float64).view(1, 1, 32, 1).expand(1, 1, 32, 48)
    for head, grids in zip(plan.heads, head_grids(plan)):
        picked = F.interpolate(rows, size=head.shape[1:], mode="nearest-exact")[0, 0, :, 0]
        grid = grids[0]
        assert picked.tolist() == [grid.offset + i * grid.step for i in range(head.shape[1])]
        assert (grid.first, grid.count) == (0, head.shape[1])


def test_head_grids_of_a_valid_network_crop_to_the_main_output():
    plan = unetgen.make_plan(unetgen.UNetSpec(depth=4, width=4, deep_supervision=2))
    main = plan.output_size[0]
    for head, grids in zip(plan.heads, head_grids(plan)):
        grid = grids[0]
        inside = [grid.offset + i * grid.step for i in range(grid.first, grid.first + grid.count)]
        assert inside[0] >= 0 and inside[-1] < main  # every kept pixel lies over the main output ...
        assert grid.offset + (grid.first - 1) * grid.step < 0  # ... and no pixel over it is left out
        assert grid.offset + (grid.first + grid.count) * grid.step >= main
        # centred: as many main-output pixels before the first kept centre as after the last, within a step
        assert abs(inside[0] - (main - 1 - inside[-1])) < grid.step


def test_scripted_and_exported_networks_keep_the_heads():
    spec = unetgen.UNetSpec(**NNUNET_LIKE)
    model = unetgen.build(spec, seed=0)
    x = torch.randn(1, 1, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(model)
    for mode in (True, False):
        model.train(mode)
        scripted.train(mode)
        for a, b in zip(_heads_out(model, x), _heads_out(scripted, x)):
            torch.testing.assert_close(a, b)
        program = torch.export.export(model, (x,))
        for a, b in zip(_heads_out(model, x), _heads_out(program.module(), x)):
            torch.testing.assert_close(a, b)


def test_onnx_export_of_every_head(tmp_path):
    spec = unetgen.UNetSpec(name="ds", **NNUNET_LIKE)
    model = unetgen.build(spec, (32, 48), seed=0)
    report = unetgen.export_onnx(model, tmp_path / "ds.onnx", input_size=(32, 48), heads=True)
    assert report.ok and report.heads == ("logits_level1", "logits_level2")
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "ds.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "logits_level1", "logits_level2"]
    x = np.random.default_rng(0).standard_normal((1, 1, 40, 24), dtype=np.float32)
    model.eval().return_heads = True
    expected = _heads_out(model, torch.from_numpy(x))
    for got, want in zip(session.run(None, {"image": x}), expected):
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4 * float(want.abs().max()))
    assert unetgen.onnx_session(tmp_path / "ds.onnx").run(x).shape == (1, 2, 40, 24)


def test_heads_refused_where_there_are_none(capsys, tmp_path):
    assert main(["export", "paper", "--heads", "--onnx", str(tmp_path / "p.onnx")]) == 2
    err = capsys.readouterr().err
    assert "has none; set deep_supervision in the spec or leave --heads out" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("fields,message", [
    (dict(depth=3, deep_supervision=2), "deep_supervision: 2 heads but depth 3 has 1 decoder levels below the top"),
    (dict(deep_supervision=1, output="same"), "deep_supervision: needs output: crop"),
    (dict(downsampling="conv"), "downsampling: 'conv' with padding 'valid' needs kernel − factor even"),
    (dict(encoder_blocks=[1, 2, 2, 2, 2]), "encoder_blocks: needs downsampling: conv"),
    (dict(encoder_blocks=[1, 2], downsampling="conv", padding="same"), "encoder_blocks: has 2 entries but depth is 5"),
    (dict(block="residual", downsampling="conv", padding="same"), "downsampling: 'conv' does not combine"),
])
def test_nnunet_family_bad_specs_get_one_line(fields, message):
    with pytest.raises(unetgen.SpecError) as caught:
        unetgen.spec_from_dict(fields, source="x.yaml")
    assert message in str(caught.value) and "\n" not in str(caught.value)
