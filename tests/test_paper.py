"""The 2015 paper's numbers (Ronneberger et al., Fig. 1 and sec. 2), pinned on the plan and on the built module."""

from __future__ import annotations

import sys

import pytest
import torch

import unetgen

# Ronneberger et al. 2015, Figure 1: the map size after each level's two convolutions.
PAPER_DOWN = [568, 280, 136, 64, 28]
PAPER_UP = [52, 100, 196, 388]  # decoder levels 3, 2, 1, 0
PAPER_CHANNELS = [64, 128, 256, 512, 1024]
PAPER_PARAMETERS = 31_030_658  # 1 input channel, 2 classes
PAPER_CONV_LAYERS = 23  # "In total the network has 23 convolutional layers."


def test_paper_plan_shapes(paper_spec):
    plan = unetgen.make_plan(paper_spec)
    assert plan.input_shape == (1, 572, 572)
    assert plan.output_shape == (2, 388, 388)
    encoder = [plan.block(f"encoder.{i}") for i in range(4)] + [plan.block("bottleneck")]
    assert [b.shape for b in encoder] == [(c, s, s) for c, s in zip(PAPER_CHANNELS, PAPER_DOWN)]
    decoder = [plan.block(f"decoder.{i}.convs") for i in (3, 2, 1, 0)]
    assert [b.shape for b in decoder] == [(c, s, s) for c, s in zip([512, 256, 128, 64], PAPER_UP)]
    # the up-convolutions double exactly: 28 -> 56, 52 -> 104, 100 -> 200, 196 -> 392
    assert [plan.block(f"decoder.{i}.up").shape[1] for i in (3, 2, 1, 0)] == [56, 104, 200, 392]
    assert plan.parameters == PAPER_PARAMETERS
    assert plan.conv_layers == PAPER_CONV_LAYERS


def test_paper_skip_crops_are_central(paper_spec):
    plan = unetgen.make_plan(paper_spec)
    crops = {s.level: (s.source, s.target, s.crop) for s in plan.skips}
    assert crops[3] == ((64, 64), (56, 56), (4, 4))
    assert crops[2] == ((136, 136), (104, 104), (16, 16))
    assert crops[1] == ((280, 280), (200, 200), (40, 40))
    assert crops[0] == ((568, 568), (392, 392), (88, 88))


def test_plan_does_not_import_torch():
    import subprocess

    code = "import sys, unetgen; unetgen.plan('paper'); unetgen.plan('paper', [588, 604]); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_paper_valid_sizes(paper_spec):
    (grid, _) = unetgen.make_plan(paper_spec).lattices
    # the paper network takes 16k + 124 and gives 16k - 60
    for k in range(4, 60):
        assert grid.contains(16 * k + 124)
        assert unetgen.make_plan(paper_spec, [16 * k + 124, 572]).output_size == (16 * k - 60, 388)
    assert grid.first == 188  # 16*4+124: output 4
    assert not grid.contains(172)  # 16*3+124 would leave no pixels
    for bad in (571, 573, 564, 580, 187):
        assert not grid.contains(bad)
        with pytest.raises(unetgen.SizeError):
            unetgen.make_plan(paper_spec, [bad, 572])
    assert grid.nearest(571) == (556, 572)
    assert grid.border == 92


def test_odd_pool_is_an_error_not_a_floor(paper_spec):
    with pytest.raises(unetgen.SizeError) as info:
        unetgen.make_plan(paper_spec, [571, 571])
    message = str(info.value)
    assert "encoder.1 max-pools an odd size (567)" in message
    assert "556, 572" in message
    assert "\n" not in message


def test_paper_module_on_meta(paper_spec):
    with torch.device("meta"):
        model = unetgen.build(paper_spec)
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMETERS
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(convs) == PAPER_CONV_LAYERS
    assert model(torch.empty(1, 1, 572, 572, device="meta")).shape == (1, 2, 388, 388)
    assert model(torch.empty(2, 1, 604, 572, device="meta")).shape == (2, 2, 420, 388)
    with pytest.raises(unetgen.SizeError, match="max-pools an odd size"):
        model(torch.empty(1, 1, 571, 571, device="meta"))


def test_paper_state_dict_names_the_levels(paper_spec):
    with torch.device("meta"):
        keys = list(unetgen.build(paper_spec).state_dict())
    assert keys[0] == "encoder.0.convs.conv0.weight"
    assert "bottleneck.convs.conv1.weight" in keys
    assert "decoder.3.up.weight" in keys and "decoder.0.convs.conv1.bias" in keys
    assert keys[-2:] == ["head.weight", "head.bias"]


def test_paper_real_forward_once(paper_spec):
    # The one real forward pass of the full-size network (about 10 s on 2 cores).
    torch.manual_seed(0)
    model = unetgen.build(paper_spec).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)
    assert torch.isfinite(out).all()


def test_upsample_conv_reading_has_the_same_numbers(paper_spec):
    spec = paper_spec.replace(upsampling="upsample_conv")
    plan = unetgen.make_plan(spec)
    assert plan.output_shape == (2, 388, 388)
    assert plan.parameters == PAPER_PARAMETERS
    assert [plan.block(f"decoder.{i}.up").shape[1] for i in (3, 2, 1, 0)] == [56, 104, 200, 392]
    with torch.device("meta"):
        model = unetgen.build(spec)
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMETERS
    assert model(torch.empty(1, 1, 572, 572, device="meta")).shape == (1, 2, 388, 388)
