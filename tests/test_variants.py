"""The variant space (issue 3): presets that pin published numbers, and each option validated, planned and built."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import unetgen
from unetgen.cli import main
from test_plan_matches_module import _check


# ---- Çiçek et al. 2016, 3D U-Net ------------------------------------------------------------------------------

CICEK_PARAMETERS = 19_069_955  # "The architecture has 19069955 parameters in total." (sec. 2)


def test_cicek3d_preset_reproduces_the_paper():
    spec = unetgen.preset("cicek3d")
    plan = unetgen.make_plan(spec)
    assert plan.input_shape == (3, 132, 132, 116)
    assert plan.output_shape == (3, 44, 44, 28)
    # the analysis path doubles inside each block: 32,64 / 64,128 / 128,256 / 256,512
    assert [spec.conv_widths(level) for level in range(4)] == [(32, 64), (64, 128), (128, 256), (256, 512)]
    # the up-convolutions keep their channels: 512 -> 512, then 256 -> 256, 128 -> 128
    assert [plan.block(f"decoder.{i}.up").shape[0] for i in (2, 1, 0)] == [512, 256, 128]
    assert [plan.block(f"decoder.{i}.convs").shape[0] for i in (2, 1, 0)] == [256, 128, 64]
    assert plan.parameters - plan.norm_parameters == CICEK_PARAMETERS
    assert plan.norm_parameters == 2 * sum(sum(spec.conv_widths(level)) for level in range(4)) + 2 * 2 * (256 + 128 + 64)
    with torch.device("meta"):
        model = unetgen.build(spec)
    norm = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm3d) for p in m.parameters())
    assert sum(p.numel() for p in model.parameters()) - norm == CICEK_PARAMETERS
    # batch normalisation before each ReLU
    names = [type(m).__name__ for m in model.encoder[0].convs]
    assert names == ["Conv3d", "BatchNorm3d", "ReLU", "Conv3d", "BatchNorm3d", "ReLU"]
    assert model(torch.empty(1, 3, 132, 132, 116, device="meta")).shape == (1, 3, 44, 44, 28)


def test_cicek3d_summary_shows_both_counts(capsys):
    assert main(["build", "cicek3d"]) == 0
    out = capsys.readouterr().out
    assert "19,074,627 parameters" in out
    assert "19,069,955 parameters without the norms' scale and shift (4,672)" in out
    assert "3×44×44×28" in out


def test_modern_preset_matches_the_common_implementation():
    # The widely used same-padding + BN + transposed-conv U-Net (3 -> 2 channels) has 31,037,698 parameters.
    spec = unetgen.preset("modern")
    plan = unetgen.make_plan(spec, [101, 77])
    assert plan.parameters == 31_037_698
    assert plan.output_shape == (2, 101, 77)
    _check(spec, (256, 256), "meta")


def test_nnunet_preset_is_anisotropic():
    spec = unetgen.preset("nnunet")
    plan = unetgen.make_plan(spec)
    assert plan.output_size == (40, 224, 192)
    # the first pool keeps the thick axis: 40 -> 40 -> 20 -> 10 -> 5
    assert [plan.block(n).shape[1] for n in ("encoder.0", "encoder.1", "encoder.2", "encoder.3", "bottleneck")] == \
        [40, 40, 20, 10, 5]
    assert [plan.block(n).shape[0] for n in ("encoder.0", "encoder.1", "encoder.2", "encoder.3", "bottleneck")] == \
        [32, 64, 128, 256, 320]
    assert plan.lattices[0].step == 8 and plan.lattices[1].step == 16
    with torch.device("meta"):
        model = unetgen.build(spec)
    assert model.encoder[0].convs.conv0.kernel_size == (1, 3, 3)
    assert model.encoder[1].pool.kernel_size == (1, 2, 2)
    assert isinstance(model.encoder[0].convs.norm0, nn.InstanceNorm3d) and model.encoder[0].convs.norm0.affine
    assert isinstance(model.encoder[0].convs.act0, nn.LeakyReLU)
    _check(spec, (40, 224, 192), "meta")
    with pytest.raises(unetgen.SizeError, match="not divisible|odd size"):
        unetgen.make_plan(spec, [40, 224, 200])


# ---- each option ----------------------------------------------------------------------------------------------

SMALL = dict(depth=3, width=4)


@pytest.mark.parametrize("norm,cls", [("batch", nn.BatchNorm2d), ("instance", nn.InstanceNorm2d),
                                      ("group", nn.GroupNorm), ("layer", nn.GroupNorm)])
def test_norms(norm, cls):
    spec = unetgen.UNetSpec(**SMALL, norm=norm, norm_groups=2, padding="same", output="same")
    model = unetgen.build(spec)
    layer = model.encoder[0].convs.norm0
    assert isinstance(layer, cls)
    if norm == "group":
        assert layer.num_groups == 2
    if norm == "layer":
        assert layer.num_groups == 1
    assert model.encoder[0].convs.conv0.bias is None  # the norm's shift makes a bias redundant
    _check(spec, (23, 30))


def test_group_count_is_checked_against_every_width():
    with pytest.raises(unetgen.SpecError, match="norm_groups: 3 groups do not divide the widths 4, 8, 16"):
        unetgen.spec_from_dict({**SMALL, "norm": "group", "norm_groups": 3})


@pytest.mark.parametrize("activation,cls", [("relu", nn.ReLU), ("leaky_relu", nn.LeakyReLU), ("elu", nn.ELU),
                                            ("gelu", nn.GELU), ("silu", nn.SiLU), ("prelu", nn.PReLU)])
def test_activations(activation, cls):
    spec = unetgen.UNetSpec(**SMALL, activation=activation, negative_slope=0.2 if activation == "leaky_relu" else 0.01)
    model = unetgen.build(spec)
    act = model.bottleneck.convs.act1
    assert isinstance(act, cls)
    if activation == "leaky_relu":
        assert act.negative_slope == 0.2
    grid = unetgen.make_plan(spec).lattices[0]
    _check(spec, (grid.first, grid.first))


def test_dropout_placement():
    at_bottleneck = unetgen.build(unetgen.UNetSpec(**SMALL, dropout=0.3, dropout_at="bottleneck"))
    names = [n for n, m in at_bottleneck.named_modules() if isinstance(m, nn.Dropout)]
    assert names == ["bottleneck.convs.dropout"]
    assert at_bottleneck.bottleneck.convs.dropout.p == 0.3
    every = unetgen.build(unetgen.UNetSpec(**SMALL, dropout=0.1, dropout_at="every_level"))
    names = [n for n, m in every.named_modules() if isinstance(m, nn.Dropout)]
    assert len(names) == 2 * 3 - 1
    with pytest.raises(unetgen.SpecError, match="dropout_at: is 'none' but dropout is 0.5"):
        unetgen.spec_from_dict({"dropout": 0.5})
    with pytest.raises(unetgen.SpecError, match="dropout_at: is 'bottleneck' but dropout is 0"):
        unetgen.spec_from_dict({"dropout_at": "bottleneck"})


def test_paper_init_is_he_normal():
    # Ronneberger et al. 2015, sec. 3: std sqrt(2/N), N = inputs of one neuron (9 * 64 for a 3x3 conv over 64 ch).
    model = unetgen.build(unetgen.preset("paper").replace(width=16), seed=0)
    weight = model.encoder[1].convs.conv1.weight  # 32 -> 32 channels, 3x3: N = 288
    assert abs(weight.std().item() - math.sqrt(2 / 288)) < 0.05 * math.sqrt(2 / 288)
    assert abs(weight.mean().item()) < 0.01
    up = model.decoder["3"].up.weight  # transposed 2x2 stride 2 from 256 channels: each output sees 256 inputs
    assert abs(up.std().item() - math.sqrt(2 / 256)) < 0.05 * math.sqrt(2 / 256)
    assert all(torch.count_nonzero(m.bias) == 0 for m in model.modules() if isinstance(m, nn.Conv2d))


def test_seed_makes_weights_deterministic_and_leaves_global_rng_alone():
    spec = unetgen.UNetSpec(**SMALL, init="paper")
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = unetgen.build(spec, seed=7).state_dict()
    b = unetgen.build(spec, seed=7).state_dict()
    c = unetgen.build(spec, seed=8).state_dict()
    assert torch.rand(1).item() == before.item()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["encoder.0.convs.conv0.weight"], c["encoder.0.convs.conv0.weight"])


def test_final_activations():
    x = torch.randn(2, 1, 40, 40)
    soft = unetgen.build(unetgen.UNetSpec(**SMALL, out_channels=3, final_activation="softmax", output="same"))
    torch.testing.assert_close(soft(x).sum(dim=1), torch.ones(2, 40, 40))
    sig = unetgen.build(unetgen.UNetSpec(**SMALL, final_activation="sigmoid", output="same"))
    y = sig(x)
    assert ((y > 0) & (y < 1)).all()


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_residual_blocks(padding):
    spec = unetgen.UNetSpec(**SMALL, block="residual", padding=padding, norm="batch", output="same")
    model = unetgen.build(spec)
    assert isinstance(model.encoder[0].convs.projection, nn.Conv2d)  # 1 -> 4 channels: a 1x1 projection
    assert isinstance(model.decoder["0"].convs.projection, nn.Conv2d)  # 8 -> 4
    same_width = unetgen.build(unetgen.UNetSpec(depth=3, block="residual", channels=[4, 4, 4]))
    assert isinstance(same_width.encoder[1].convs.projection, nn.Identity)
    _check(spec, (29, 34))
    # the shortcut really is added: zeroing the body leaves act(projection(x))
    with torch.no_grad():
        block = model.encoder[0].convs.eval()
        for m in block.body:
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
        x = torch.randn(1, 1, 20, 20)
        shortcut = block.crop(block.projection(x))
        torch.testing.assert_close(block(x), torch.relu(shortcut + block.body(x)))


def test_channel_schedules():
    spec = unetgen.UNetSpec(depth=4, width=16, growth=1.5, max_channels=40, padding="same")
    assert spec.level_channels == (16, 24, 36, 40)
    per_conv = unetgen.UNetSpec(depth=3, channels=[[4, 8], 8, [8, 16]], up_channels="keep")
    assert per_conv.level_channels == (8, 8, 16)
    grid = unetgen.make_plan(per_conv).lattices[0]
    _check(per_conv, (grid.first, grid.first + grid.step))
    with pytest.raises(unetgen.SpecError, match="entry 0 lists 3 widths but convs_per_level is 2"):
        unetgen.spec_from_dict({"depth": 2, "channels": [[1, 2, 3], 4]})


def test_biases_switch():
    spec = unetgen.UNetSpec(**SMALL, conv_bias=False, up_bias=False)
    model = unetgen.build(spec)
    assert model.encoder[0].convs.conv0.bias is None and model.decoder["0"].up.bias is None
    assert sum(p.numel() for p in model.parameters()) == unetgen.make_plan(spec).parameters


def test_anisotropic_2d_pools_and_kernels():
    spec = unetgen.UNetSpec(depth=3, width=3, pool_sizes=[[1, 2], 2], kernel_sizes=[[1, 3], 3, [3, 1]],
                            upsampling="upsample_conv")
    grid_h, grid_w = unetgen.make_plan(spec).lattices
    assert grid_h.step == 2 and grid_w.step == 4
    _check(spec, (grid_h.first + grid_h.step, grid_w.first))
    with pytest.raises(unetgen.SpecError, match="kernel_sizes: entry 1: kernel size 4"):
        unetgen.spec_from_dict({"depth": 2, "kernel_sizes": [3, 4]})
    with pytest.raises(unetgen.SpecError, match="pool_sizes: has 2 entries but depth is 2"):
        unetgen.spec_from_dict({"depth": 2, "pool_sizes": [2, 2]})
    with pytest.raises(unetgen.SpecError, match="entry 0 has 3 sizes but spatial_dims is 2"):
        unetgen.spec_from_dict({"depth": 2, "pool_sizes": [[2, 2, 2]]})
