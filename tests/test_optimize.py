"""`unetgen.optimize`: the same function as the built network, with batch norm folded, dropout gone, in-place
activations and channels-last maps where claimed; the user's model untouched. Speed is measured in benchmarks/."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import unetgen
from unetgen.network.optimization import ToMemoryFormat, WinogradConv2d

U = unetgen.UNetSpec
#: Default optimisations only reorder float32 sums: differences are a few ulps of the output's scale.
TOLERANCE = 1e-5
#: Winograd's algorithm rounds differently (Lavin & Gray 2016): still ~1e-6–1e-5 of the scale.
WINOGRAD_TOLERANCE = 1e-4


def _small(name: str) -> U:
    spec = unetgen.preset(name)
    if spec.channels is not None:  # the 3D U-Net's per-convolution widths
        return spec.replace(channels=[[2, 4], [4, 8], [8, 16], [16, 32]], input_size=None)
    return spec.replace(width=4, input_size=None)


VARIANTS = [
    *(_small(name) for name in ("paper", "modern", "cicek3d")),
    _small("nnunet").replace(input_size=[16, 48, 32]),
    U(width=4, depth=3, norm="batch", block="residual", upsampling="upsample_conv", interpolation="linear"),
    U(width=4, depth=3, norm="batch", padding="same", padding_mode="reflect", output="same", input_size=[37, 50]),
    U(width=4, depth=3, norm="group", norm_groups=2, activation="gelu", final_activation="softmax"),
    U(width=4, depth=3, norm="layer", activation="prelu", padding="same", output="same", input_size=[40, 40]),
    U(width=4, depth=3, norm="instance", activation="elu", dropout=0.5, dropout_at="every_level"),
    U(width=4, depth=2, norm="batch", conv_bias=True, activation="silu", final_activation="sigmoid"),
    U(spatial_dims=1, width=4, depth=3, norm="batch", output="same", input_size=[250]),
    U(spatial_dims=3, width=4, depth=3, norm="batch", padding="same", up_channels="keep", input_size=[16, 24, 16]),
    U(width=4, depth=1),
]


def _trained(spec: U) -> unetgen.UNet:
    """A built network whose batch norms have the statistics and affine transform of a trained one."""
    model = unetgen.build(spec, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator))
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator))
    return model


def _input(spec: U, batch: int = 2) -> torch.Tensor:
    plan = unetgen.make_plan(spec)
    return torch.randn(batch, spec.in_channels, *plan.input_size, generator=torch.Generator().manual_seed(2))


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("spec", VARIANTS, ids=lambda s: f"{s.name}-{s.spatial_dims}d-{s.norm}-{s.padding}")
def test_optimized_network_computes_the_same_function(spec):
    model = _trained(spec).eval()
    fast = unetgen.optimize(model)
    x = _input(spec)
    with torch.no_grad():
        expected = model(x)
        got = fast(x)
    assert got.shape == expected.shape == (2, *unetgen.make_plan(spec).output_shape)
    assert got.is_contiguous() or not expected.is_contiguous()  # output: same crops a view, in both
    assert _relative_error(got, expected) <= TOLERANCE
    assert not fast.training
    assert not any(isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout)) for m in fast.modules())
    assert not any(isinstance(m, nn.modules.instancenorm._InstanceNorm) for m in fast.modules())
    assert not any(p.requires_grad for p in fast.parameters())


@pytest.mark.parametrize("name", ["paper", "modern", "cicek3d"])
def test_batch_norm_folded_and_channels_last(name):
    spec = _small(name)
    fast = unetgen.optimize(_trained(spec))
    layout = torch.channels_last if spec.spatial_dims == 2 else torch.channels_last_3d
    convs = [m for m in fast.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    assert convs and all(conv.weight.is_contiguous(memory_format=layout) for conv in convs)
    if spec.norm == "batch":
        assert all(conv.bias is not None for conv in convs)
        assert any("folded" in words for words in fast.optimizations)
    seen = []
    fast.encoder[0].convs.register_forward_hook(lambda module, args, out: seen.append(out))
    with torch.no_grad():
        y = fast(_input(spec, batch=1))
    assert seen[0].is_contiguous(memory_format=layout) and not seen[0].is_contiguous()
    assert y.is_contiguous()
    first = fast.encoder[0]
    assert isinstance(first.pool, ToMemoryFormat)


def test_per_sample_norms_and_1d_stay_contiguous():
    nnunet = unetgen.optimize(_trained(_small("nnunet")))
    assert not any(isinstance(m, ToMemoryFormat) for m in nnunet.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in nnunet.modules())  # instance norm, as group norm
    one_d = unetgen.optimize(_trained(VARIANTS[-3]))
    assert not any(isinstance(m, ToMemoryFormat) for m in one_d.modules())
    with pytest.raises(unetgen.UNetGenError, match="channels_last applies to 2D and 3D"):
        unetgen.optimize(_trained(VARIANTS[-3]), channels_last=True)


def test_users_model_is_untouched():
    spec = _small("modern")
    model = _trained(spec).train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    kinds = [type(m) for m in model.modules()]
    fast = unetgen.optimize(model)
    assert model.training and fast is not model
    assert [type(m) for m in model.modules()] == kinds
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.is_contiguous() for p in model.parameters())
    assert fast.spec is model.spec and fast.plan is model.plan
    # the remaining layers keep their keys: a subset of the original's, without the norms
    norms = {key for key in model.state_dict() if ".norm" in key}
    biases = {key.replace(".norm", ".conv") for key in norms if key.endswith(".bias")}  # the folded shifts
    assert set(fast.state_dict()) == set(model.state_dict()) - norms | biases


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.* is deprecated")
def test_input_checks_and_torchscript_are_kept():
    spec = _small("paper")
    fast = unetgen.optimize(_trained(spec))
    with pytest.raises(unetgen.SizeError, match="nearest valid sizes"):
        fast(torch.randn(1, 1, 571, 571))
    x = _input(spec, batch=1)
    scripted = torch.jit.script(fast)
    with torch.no_grad():
        assert torch.equal(scripted(x), fast(x))


def test_export_of_an_optimized_network():
    spec = _small("modern").replace(input_size=[64, 64])
    model = _trained(spec).eval()
    fast = unetgen.optimize(model)
    x = _input(spec, batch=1)
    program = torch.export.export(fast, (x,))
    with torch.no_grad():
        assert _relative_error(program.module()(x), model(x)) <= TOLERANCE


def test_for_export_only_folds_and_drops():
    model = _trained(_small("nnunet").replace(norm="batch", dropout=0.5, dropout_at="bottleneck")).eval()
    plain = unetgen.optimize(model, for_export=True)
    removed = (nn.modules.batchnorm._BatchNorm, nn.Dropout, ToMemoryFormat)
    assert not any(isinstance(m, removed) for m in plain.modules())
    flags = [getattr(m, "inplace", None) for m in model.modules() if not isinstance(m, removed)]
    assert [getattr(m, "inplace", None) for m in plain.modules()] == flags  # activations as built
    instance = unetgen.optimize(_trained(_small("nnunet")), for_export=True)
    assert sum(isinstance(m, nn.InstanceNorm3d) for m in instance.modules()) == 18  # one ONNX op each
    with pytest.raises(unetgen.UNetGenError, match="for_export"):
        unetgen.optimize(model, for_export=True, channels_last=True)


def test_only_unetgen_networks():
    with pytest.raises(unetgen.UNetGenError, match="give a network from unetgen.build"):
        unetgen.optimize(nn.Conv2d(1, 1, 3))


@pytest.mark.skipif(not torch.backends.nnpack.is_available(), reason="this PyTorch has no NNPACK")
@pytest.mark.parametrize("spec", [
    U(width=16, depth=3, norm="batch", input_size=[124, 108]),
    U(width=16, depth=3, norm="batch", padding="same", padding_mode="reflect", output="same", input_size=[101, 77]),
    U(width=16, depth=3, norm="group", padding="same", input_size=[96, 96]),
], ids=["valid", "reflect", "group"])
def test_winograd_convolutions_agree(spec):
    model = _trained(spec).eval()
    fast = unetgen.optimize(model, winograd=True)
    winograd = [m for m in fast.modules() if isinstance(m, WinogradConv2d)]
    assert winograd and any("Winograd" in words for words in fast.optimizations)
    x = _input(spec)
    assert winograd[0]._use_winograd(torch.randn(1, 16, 64, 64))  # large maps do take the Winograd path
    with torch.no_grad():
        expected, got = model(x), fast(x)
    assert _relative_error(got, expected) <= WINOGRAD_TOLERANCE
    program = torch.export.export(fast, (x,))  # export sees the ordinary convolution
    assert "nnpack" not in str(program.graph)
    with torch.no_grad():
        assert _relative_error(program.module()(x), expected) <= TOLERANCE
    with pytest.raises(unetgen.UNetGenError, match="contiguous maps"):
        unetgen.optimize(model, winograd=True, channels_last=True)
