"""Attention gates and nested skips (issue 14): the two papers' presets pin their published parameter counts; plan
== module over a matrix of both families (1D, 2D, 3D, valid and same, odd sizes); UNet++ pruning; the attention maps;
exact overlap-tile prediction for valid networks; TorchScript, torch.export, torch.compile, ONNX and optimize.
MONAI's networks are compared in ``test_monai_equivalence.py``, costs and receptive fields in ``test_cost.py``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import unetgen
from unetgen.inference.predict import predict
from unetgen.inference.tiling import plan_tiles
from unetgen.planning.field import attention_layers, head_grids, nearest_on_output
from unetgen.planning.plan import lattices, pruned_spec
from test_plan_matches_module import _check

U = unetgen.UNetSpec


# --- the papers' configurations ---------------------------------------------------------------------------------

#: Zhou et al. 2018, the authors' Keras code (MrGiovanni/UNetPlusPlus@3e68792, model.py): "Standard UNet++ Total
#: params: 9,041,601"; with the four deep-supervision heads, and the pruned UNet++ L1–L3 (one head each), as the
#: same code builds them.
ZHOU = {"unetpp": 9_041_601, "deep_supervision": 9_041_700, 1: 100_961, 2: 511_105, 3: 2_204_961}

#: Oktay et al. 2018, the authors' code (ozan-oktay/Attention-Gated-Networks, feature_scale 4, 1 → 4 channels):
#: the published unet_CT_multi_att_dsv_3D, and unet_CT_single_att_dsv_3D.
OKTAY_MULTI = 6_473_322
OKTAY_SINGLE = 6_214_151


def test_unetpp_preset_is_zhous_nest_net():
    spec = unetgen.preset("unetpp")
    plan = unetgen.make_plan(spec)
    assert plan.parameters == ZHOU["unetpp"]
    assert unetgen.make_plan(spec.replace(deep_supervision=3)).parameters == ZHOU["deep_supervision"]
    for columns in (1, 2, 3):  # UNet++ L1–L3: the nodes with i + j ≤ columns, one head
        pruned = pruned_spec(spec.replace(deep_supervision=3), columns).replace(deep_supervision=0)
        assert unetgen.make_plan(pruned).parameters == ZHOU[columns]
    # X(i, j) has the width of row i; each node's block reads j earlier nodes and the up-sampled one
    assert plan.block("nested.0.4").shape[0] == 32 and plan.block("nested.3.1").shape[0] == 256
    assert plan.layer("nested.1.3.concat").shape[0] == 64 * 4
    dropouts = [layer for layer in plan.layers if layer.kind == "dropout"]
    assert len(dropouts) == 2 * 15 and {layer.value for layer in dropouts} == {0.5}  # after every convolution


def test_attention_preset_is_oktays_published_network():
    spec = unetgen.preset("attention")
    plan = unetgen.make_plan(spec)
    assert plan.input_shape == (1, 160, 160, 96) and plan.output_shape == (4, 160, 160, 96)
    assert plan.parameters == OKTAY_MULTI  # unet_CT_multi_att_dsv_3D, counted from the authors' code
    gates = [block.name for block in plan.blocks if block.name.endswith(".gate")]
    assert gates == ["decoder.3.gate", "decoder.2.gate", "decoder.1.gate"]  # levels 2–4 in the paper's numbering

    # its parts, as the authors' modules count them: the gating signal UnetGridGatingSignal3(256, 256) (a 1×1×1
    # convolution, batch norm, ReLU) on the bottleneck;
    assert plan.block("decoder.3.signal").params == 256 * 256 + 256 + 2 * 256

    # per gated level (C channels, gated by G): two _GridAttentionBlockND (theta 2×2×2 without bias, phi, psi, W =
    # 1×1×1 convolution + batch norm; inner channels = C) and combine_gates (1×1×1 convolution 2C → C + batch norm);
    def gate(c: int, g: int) -> int:
        return c * c * 8 + (g * c + c) + (c + 1) + (c * c + c + 2 * c)

    def combine(c_in: int, c: int) -> int:
        return c_in * c + c + 2 * c

    for level, (c, g) in zip((3, 2, 1), [(128, 256), (64, 128), (32, 64)]):
        assert plan.block(f"decoder.{level}.gate").params == 2 * gate(c, g) + combine(2 * c, c)
    key = plan.layer("decoder.3.gate.gates.0.key")
    assert key.kernel == key.stride == (2, 2, 2) and not key.bias
    assert plan.layer("decoder.3.gate.gates.0.resample").mode == "trilinear"
    # deep supervision UnetDsv3 (1×1×1 convolutions to 4 classes, up-sampled ×8, ×4, ×2) fused by a final 1×1×1
    # convolution from 4 × 4 channels: the network's output
    assert [plan.block(f"decoder.{level}.dsv").params for level in (3, 2, 1, 0)] == [c * 4 + 4 for c in
                                                                                    (128, 64, 32, 16)]
    assert plan.layer("decoder.3.dsv.up").stride == (8, 8, 8) and plan.layer("fused").shape[0] == 16
    assert plan.block("head").params == 16 * 4 + 4
    # unet_CT_single_att_dsv_3D: one gate per level, still followed by its combining convolution (C → C)
    single = unetgen.make_plan(spec.replace(gates_per_level=1)).parameters
    assert single + sum(combine(c, c) for c in (128, 64, 32)) == OKTAY_SINGLE


@pytest.mark.parametrize("bad,words", [
    (dict(gates_per_level=2), "gates_per_level: is a part of Oktay et al.'s grid gate"),
    (dict(skip_gate="grid_attention", gating_conv=True, gate_levels=[0]), "feeds the deepest gate (level 2), which"),
    (dict(fused_heads=True), "fused_heads: needs padding: same"),
    (dict(fused_heads=True, padding="same", deep_supervision=1), "replaces the auxiliary heads"),
])
def test_oktays_parts_are_refused_where_they_do_not_apply(bad, words):
    with pytest.raises(unetgen.SpecError) as refused:
        unetgen.spec_from_dict({"depth": 4, **bad})
    assert words in str(refused.value) and len(str(refused.value).splitlines()) == 1


# --- plan == module ---------------------------------------------------------------------------------------------

SMALL = dict(depth=3, width=4, in_channels=2, out_channels=3)

MATRIX = [
    dict(skip_gate=gate, padding=padding, output=output, norm=norm)
    for gate in ("attention", "grid_attention")
    for padding in ("valid", "same")
    for output in ("crop", "same")
    for norm in ("none", "batch")
] + [
    dict(skips="nested", padding=padding, output=output, upsampling=upsampling)
    for padding in ("valid", "same")
    for output in ("crop", "same")
    for upsampling in ("transpose", "upsample_conv", "interpolate")
]


def _sizes(spec: U) -> list[tuple[int, ...]]:
    grid = lattices(spec)[0]
    if spec.output == "crop":
        return [(grid.first, grid.first + grid.step)]
    return [(37, 20), (grid.first, grid.first)]


@pytest.mark.parametrize("changes", MATRIX, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_plan_matches_module(changes):
    spec = U(**SMALL, **changes)
    for size in _sizes(spec):
        _check(spec, size)


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("family", [dict(skip_gate="grid_attention", norm="batch"),
                                    dict(skip_gate="attention", padding="same", output="same"),
                                    dict(skips="nested"), dict(skips="nested", padding="same", output="same")])
def test_1d_and_3d(dims, family):
    spec = U(spatial_dims=dims, depth=3, width=2, **family)
    grid = lattices(spec)[0]
    size = (grid.first + grid.step,) * dims if spec.output == "crop" else tuple([23, 18, 17][:dims])
    _check(spec, size)


def test_gates_on_some_levels_and_other_kernels():
    spec = U(depth=4, width=3, skip_gate="grid_attention", gate_levels=[0, 2], pool_sizes=[3, [2, 1], 2],
             kernel_sizes=[5, 3, [3, 1], 3], gate_reduction=3)
    plan = unetgen.make_plan(spec)
    assert [b.name for b in plan.blocks if b.name.endswith("gate")] == ["decoder.2.gate", "decoder.0.gate"]
    assert plan.layer("decoder.2.gate.key").kernel == (2, 2) and plan.layer("decoder.1.up").stride == (2, 1)
    assert plan.layer("decoder.0.gate.key").shape[0] == 1  # 3 channels // 3
    _check(spec, plan.input_size)


def test_nested_deep_supervision_heads():
    spec = U(**SMALL, skips="nested", deep_supervision=1)
    plan = unetgen.make_plan(spec)
    model = unetgen.build(spec, seed=0).eval()
    assert [head.name for head in plan.heads] == ["head", "nested.0.1.head"]
    # every head's output lies over the main output, pixel for pixel (cropped centrally where valid)
    assert all(g.offset == 0 and g.step == 1 for grids in head_grids(plan) for g in grids)
    x = torch.randn(2, 2, *plan.input_size)
    with torch.no_grad():
        main = model(x)
        model.return_heads = True
        outputs = model(x)
    assert [tuple(o.shape) for o in outputs] == [(2, *plan.output_shape)] * 2
    torch.testing.assert_close(outputs[0], main)
    assert sum(p.numel() for p in model.parameters()) == plan.parameters


# --- what the spec refuses --------------------------------------------------------------------------------------


@pytest.mark.parametrize("data,message", [
    ({"skips": "nested", "skip_gate": "attention"}, "skip_gate: gates plain skip connections; it does not combine"),
    ({"gate_levels": [1]}, "gate_levels: has no effect without skip_gate"),
    ({"skip_gate": "attention", "gate_levels": [4]}, "gate_levels: level 4 has no skip connection; levels 0 to 3"),
    ({"skip_gate": "attention", "gate_levels": [1, 1]}, "gate_levels: lists a level twice"),
    ({"gate_reduction": 4}, "gate_reduction: has no effect without skip_gate"),
    ({"up_kernel_size": 3}, "up_kernel_size: needs padding: same"),
    ({"up_kernel_size": 4, "padding": "same"}, "up_kernel_size: must be odd, or the up-sampling factor"),
    ({"up_kernel_size": 3, "upsampling": "upsample_conv"}, "up_kernel_size: sets the transposed up-convolution"),
    ({"upsampling": "interpolate", "up_norm_act": True}, "up_norm_act: has no effect with upsampling 'interpolate'"),
    ({"decoder_norm": "batchnorm"}, "decoder_norm: got 'batchnorm'; expected none, batch, instance, group or layer "
                                    "(did you mean 'batch'?)"),
    ({"decoder_norm_affine": False}, "decoder_norm_affine: has no effect: the decoder has no norm"),
    ({"decoder_norm": "group", "norm_groups": 3}, "decoder_norm: group: norm_groups 3 does not divide"),
    ({"skips": "nested", "deep_supervision": 4}, "4 heads but depth 5 has 3 nodes on the top row before the last"),
    ({"skips": "nested", "deep_supervision": 1, "output": "same"}, "deep_supervision: needs output: crop (the "
                                                                    "auxiliary heads are not cropped back"),
    ({"skip_gate": "grid_attention", "depth": 1}, "skip_gate: needs a skip connection to gate; depth 1 has none"),
])
def test_bad_specs_are_refused_in_one_line(data, message):
    with pytest.raises(unetgen.SpecError) as caught:
        unetgen.spec_from_dict(data)
    text = str(caught.value)
    assert message in text and len(text.splitlines()) == 1, text


def test_pruning_needs_a_nested_network_with_the_head():
    with pytest.raises(unetgen.SpecError, match="pruning keeps the first columns of UNet\\+\\+'s nodes"):
        pruned_spec(U(depth=3), 1)
    with pytest.raises(unetgen.SpecError, match=r"columns 3; a nested network of depth 3 has columns 1 to 2"):
        pruned_spec(U(depth=3, skips="nested"), 3)
    with pytest.raises(unetgen.SpecError, match=r"X\(0, 1\) has no head to output from"):
        unetgen.build(U(depth=3, width=2, skips="nested")).pruned(1)


# --- pruning ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_pruned_network_is_the_full_networks_column_head(padding):
    spec = U(depth=4, width=4, skips="nested", deep_supervision=2, padding=padding, norm="batch")
    full = unetgen.build(spec, seed=0).eval()
    size = unetgen.make_plan(spec).input_size if padding == "valid" else (48, 40)
    x = torch.randn(2, 1, *size)
    full.return_heads = True
    with torch.no_grad():
        heads = full(x)  # X(0, 3) (main), X(0, 1), X(0, 2)
    for columns, expected in ((1, heads[1]), (2, heads[2]), (3, heads[0])):
        small = full.pruned(columns).eval()
        plan = unetgen.make_plan(small.spec, size)
        assert small.spec.depth == columns + 1
        assert sum(p.numel() for p in small.parameters()) == plan.parameters < full.plan.parameters or columns == 3
        with torch.no_grad():
            got = small(x)
        # valid: the pruned network's output is larger (a smaller border); the full one's head is its centre
        margins = [(a - b) // 2 for a, b in zip(got.shape[2:], expected.shape[2:])]
        centre = got[(..., *(slice(m, m + n) for m, n in zip(margins, expected.shape[2:])))]
        torch.testing.assert_close(centre, expected)
    # the same weights: training the pruned network trains the full one
    small = full.pruned(2)
    assert small.head.weight is full.nested["0"]["2"].head.weight
    assert small.nested["1"]["1"].convs.conv0.weight is full.nested["1"]["1"].convs.conv0.weight
    assert small.bottleneck is full.encoder[2]


# --- attention maps ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gate", ["attention", "grid_attention"])
def test_attention_maps_are_what_each_gate_multiplies_by(gate):
    spec = U(depth=4, width=4, skip_gate=gate, norm="batch", gate_levels=[0, 2])
    model = unetgen.build(spec, seed=0).eval()
    plan = unetgen.make_plan(spec)
    x = torch.randn(2, 1, *plan.input_size)
    maps = model.attention_maps(x)
    assert list(maps) == ["decoder.2.gate", "decoder.0.gate"]
    for name, value in maps.items():
        level = int(name.split(".")[1])
        assert tuple(value.shape) == (2, 1, *plan.skips[[s.level for s in plan.skips].index(level)].target)
        assert float(value.min()) > 0 and float(value.max()) < 1
    # the gate's product is the skip times its map: seen on the gate's own multiplication
    seen = {}
    gate_module = model.decoder["2"].gate
    handle = gate_module.register_forward_hook(lambda m, args, out: seen.update(skip=args[0], out=out))
    with torch.no_grad():
        model(x)
    handle.remove()
    product = seen["skip"] * maps["decoder.2.gate"]
    if gate == "grid_attention":  # then Oktay's output transform W: a 1×1 convolution and norm
        product = gate_module.out_norm(gate_module.out(product))
    torch.testing.assert_close(seen["out"], product)
    assert unetgen.build(U(depth=3, width=2)).attention_maps(torch.randn(1, 1, 188, 188)) == {}


# --- overlap-tile prediction --------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes", [
    dict(skip_gate="grid_attention", norm="batch"),
    dict(skip_gate="grid_attention", norm="batch", gates_per_level=2, gating_conv=True),
    dict(skip_gate="attention", upsampling="upsample_conv", interpolation="linear"),
    dict(skips="nested"),
    dict(skips="nested", upsampling="interpolate", interpolation="linear", pool_sizes=[3, 2]),
])
def test_valid_networks_tile_exactly(changes):
    spec = U(width=4, depth=3, init="paper", **changes)
    model = unetgen.build(spec, seed=0)
    whole = unetgen.build(spec.replace(output="same"), seed=0)
    whole.load_state_dict(model.state_dict())
    image = np.random.default_rng(0).standard_normal((150, 207)).astype(np.float32)
    layout = plan_tiles(spec, image.shape, tile_size=100 if "pool_sizes" not in changes else 120)
    assert layout.count > 1 and layout.mode == "exact"
    tiled = predict(model, image, tile_size=100 if "pool_sizes" not in changes else 120)
    with torch.no_grad():
        reference = whole.eval()(torch.from_numpy(image)[None, None]).numpy()[0]
    assert tiled.shape == reference.shape
    assert float(np.abs(tiled - reference).max() / np.abs(reference).max()) <= 1e-5


def test_gate_pixels_shown_at_each_output_pixel_by_hand():
    # depth 3, valid 3×3 convolutions, input 60: level 0 56 → level 1 24 → bottom 8; decoder.1's gate sees the
    # skip cropped to 16 (2 input pixels apart), decoder.0's the skip cropped to 24; the output is 20 pixels.
    # Output pixel k is centred on input pixel k + 20; decoder.1's gate pixel i on 14.5 + 2i (nearest: ⌊k/2 + 3.25⌉),
    # decoder.0's gate pixel i on i + 18 (k + 2).
    plan = unetgen.make_plan(U(depth=3, width=2, skip_gate="grid_attention"), (60, 60))
    layers = attention_layers(plan)
    assert list(layers) == ["decoder.1.gate", "decoder.0.gate"] and plan.output_size == (20, 20)
    deep = nearest_on_output(plan, layers["decoder.1.gate"])
    assert deep[0] == deep[1] == tuple(int(math.floor(k / 2 + 2.75 + 0.5)) for k in range(20))
    assert deep[0][:4] == (3, 3, 4, 4) and deep[0][-1] == 12
    assert nearest_on_output(plan, layers["decoder.0.gate"])[0] == tuple(k + 2 for k in range(20))


@pytest.mark.parametrize("gate", ["attention", "grid_attention"])
def test_predict_returns_the_gates_maps_tiled_as_one_pass_shows_them(gate):
    spec = U(depth=3, width=4, skip_gate=gate, init="paper")
    model = unetgen.build(spec, seed=0)
    image = np.random.default_rng(1).standard_normal((150, 131)).astype(np.float32)
    assert plan_tiles(spec, image.shape, tile_size=70).count > 1
    labels, maps = predict(model, image, output="labels", attention=True, tile_size=70)
    assert labels.shape == image.shape and list(maps) == ["decoder.1.gate", "decoder.0.gate"]
    # one pass over the mirrored image (output: same mirrors as predict does), its maps read at the output's pixels
    whole = unetgen.build(spec.replace(output="same"), seed=0)
    whole.load_state_dict(model.state_dict())
    x = torch.from_numpy(image)[None, None]
    direct = whole.eval().attention_maps(x)
    same = unetgen.make_plan(spec.replace(output="same"), image.shape)
    core = unetgen.make_plan(spec, same.layer("pad_input").shape[1:])  # the network over the mirrored image
    (top, _), (left, _) = same.layer("crop_output").crop
    for key, value in maps.items():
        index = nearest_on_output(core, attention_layers(core)[key])
        expected = direct[key][0, 0].numpy()[np.ix_(*index)]
        expected = expected[top: top + image.shape[0], left: left + image.shape[1]]
        assert value.shape == image.shape and value.dtype == np.float32
        np.testing.assert_allclose(value, expected, atol=1e-5)  # tiles against one pass: float rounding
        assert 0 < value.min() and value.max() < 1


def test_attention_maps_need_gates_and_a_torch_network(tmp_path):
    plain = unetgen.build(U(depth=3, width=2), seed=0)
    with pytest.raises(unetgen.UNetGenError, match="has no attention gates"):
        predict(plain, np.zeros((100, 100), np.float32), attention=True)
    gated = unetgen.build(U(depth=3, width=2, skip_gate="attention"), seed=0)
    unetgen.export_onnx(gated, tmp_path / "gated.onnx", verify=False)
    with pytest.raises(unetgen.UNetGenError, match="needs a torch network"):
        predict(tmp_path / "gated.onnx", np.zeros((100, 100), np.float32), attention=True)


def test_predict_command_writes_the_maps(tmp_path, capsys):
    from unetgen.cli import main

    spec = U(depth=3, width=2, skip_gate="grid_attention")
    unetgen.save(unetgen.build(spec, seed=0), tmp_path / "gated.pt")
    image = np.random.default_rng(0).random((100, 90), dtype=np.float32)
    np.save(tmp_path / "image.npy", image)
    argv = ["predict", "--weights", str(tmp_path / "gated.pt"), "--input", str(tmp_path / "image.npy"), "--output",
            str(tmp_path / "mask.png")]
    assert main([*argv, "--attention", str(tmp_path / "maps.npy")]) == 2
    assert "give a .npz file" in capsys.readouterr().err and not (tmp_path / "mask.png").exists()
    assert main([*argv, "--attention", str(tmp_path / "maps.npz")]) == 0
    saved = np.load(tmp_path / "maps.npz")
    _, maps = predict(unetgen.load(tmp_path / "gated.pt"), image, attention=True)
    assert sorted(saved.files) == sorted(maps) and all(np.array_equal(saved[k], maps[k]) for k in maps)


# --- compile, export, optimize ----------------------------------------------------------------------------------

COMPILED = {
    "monai-attention": U(depth=3, width=2, padding="same", norm="batch", conv_bias=True, downsampling="conv",
                         decoder_convs=1, decoder_norm="instance", decoder_norm_affine=False,
                         decoder_activation="prelu", up_kernel_size=3, up_norm_act=True, skip_gate="attention",
                         output="same"),
    "grid-attention-valid": U(depth=3, width=2, skip_gate="grid_attention", norm="batch"),
    "nested-valid-heads": U(depth=3, width=2, skips="nested", deep_supervision=1),
    "oktay": U(depth=3, width=2, skip_gate="grid_attention", gates_per_level=2, gating_conv=True, fused_heads=True,
               padding="same", norm="batch"),
    "nested-same": U(depth=3, width=2, skips="nested", padding="same", norm="instance", output="same",
                     upsampling="upsample_conv", up_norm_act=True, final_activation="softmax"),
}


def _input(spec: U) -> torch.Tensor:
    if spec.output == "same":
        return torch.randn(2, 1, *[19, 22, 17][: spec.spatial_dims])
    return torch.randn(2, 1, *[g.first + g.step for g in lattices(spec)])


@pytest.mark.parametrize("name", list(COMPILED))
def test_torchscript_export_and_compile(name):
    spec = COMPILED[name]
    model = unetgen.build(spec, seed=0).eval()
    x = _input(spec)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), expected)
        torch.testing.assert_close(torch.export.export(model, (x,)).module()(x), expected)
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        torch.testing.assert_close(compiled(x), expected)
        if spec.deep_supervision:
            model.return_heads = True
            heads = model(x)
            for got, want in zip(torch.jit.script(model)(x), heads):
                torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", ["monai-attention", "grid-attention-valid", "nested-valid-heads"])
def test_onnx_export_is_verified(name, tmp_path):
    spec = COMPILED[name]
    report = unetgen.export_onnx(unetgen.build(spec, seed=0), tmp_path / f"{name}.onnx")
    assert report.ok and report.errors == () and len(report.checks) == 3


def test_pruned_network_exports_and_scripts(tmp_path):
    full = unetgen.build(U(depth=4, width=2, skips="nested", deep_supervision=2, padding="same"), seed=0).eval()
    small = full.pruned(2).eval()
    x = torch.randn(1, 1, 24, 16)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(small)(x), small(x))
    report = unetgen.export_onnx(small, tmp_path / "l2.onnx")
    assert report.ok and unetgen.read_onnx_info(report.path).spec == small.spec


@pytest.mark.parametrize("name", list(COMPILED))
def test_optimized_copy_computes_the_same(name):
    spec = COMPILED[name]
    model = unetgen.build(spec, seed=0).eval()
    with torch.no_grad():
        for module in model.modules():  # trained-looking batch norms, so that folding them matters
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    x = _input(spec)
    fast = unetgen.optimize(model)
    with torch.no_grad():
        expected, got = model(x), fast(x)
    assert float((got - expected).abs().max()) <= 1e-5 * max(float(expected.abs().max()), 1.0)


def test_summary_names_the_gates_and_nodes(capsys):
    from unetgen.cli import main

    assert main(["build", "attention"]) == 0
    out = capsys.readouterr().out
    assert "decoder.3.gate" in out and "2 grid attention gates (Oktay, 128 ch each)" in out
    assert "decoder.3.signal" in out and "decoder.0.dsv" in out and "6,473,322 parameters" in out
    assert main(["build", "unetpp"]) == 0
    out = capsys.readouterr().out
    assert "nested.1.3" in out and "concat X(1, 0), X(1, 1), X(1, 2)" in out and "9,041,601 parameters" in out


def test_the_attention_presets_drawing_shows_its_gates_and_fused_output():
    from unetgen.drawing.draw import draw

    svg = str(draw("attention"))
    assert svg.count('class="gate"') == 3  # levels 1, 2 and 3, two gates each, one circle per skip
    assert "2 grid attention gates (Oktay)" in svg and "deep supervision fused into the output" in svg


def test_predict_returns_both_gates_of_a_level():
    spec = U(depth=3, width=2, skip_gate="grid_attention", gates_per_level=2, gating_conv=True, fused_heads=True,
             padding="same", norm="batch")
    model = unetgen.build(spec, seed=0)
    image = np.random.default_rng(0).random((170, 161), dtype=np.float32)
    _, tiled = predict(model, image, attention=True, tile_size=64)
    _, whole = predict(model, image, attention=True)
    assert list(tiled) == ["decoder.1.gate.gates.0", "decoder.1.gate.gates.1", "decoder.0.gate.gates.0",
                           "decoder.0.gate.gates.1"]
    for key in tiled:  # same padding: each tile leaves its spoilt border to a neighbour, so the maps agree exactly
        assert tiled[key].shape == image.shape
        np.testing.assert_allclose(tiled[key], whole[key], atol=1e-6)
