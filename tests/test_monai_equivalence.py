"""unetgen reproduces MONAI's attention and nested U-Nets exactly: ``AttentionUnet`` and ``BasicUNetPlusPlus``
(MONAI 1.6.1), 2D and 3D, with and without deep supervision. For each: the unetgen spec that is the same network,
MONAI's weights moved onto it by the key map below (every entry, one to one), the same parameter count, and the same
outputs within 1e-5 of their scale, in eval and in training mode. Needs ``monai`` (the ``monai`` extra; skipped
without it).

The key maps and what the specs cannot say: ``unetgen/interop/monai.py`` (its docstring), whose functions these
tests use; ``from_monai`` is tested at the end.
"""

from __future__ import annotations

import pytest
import torch

import unetgen
from unetgen.errors import NotExpressible
from unetgen.interop.monai import (
    attention_unet_key,
    attention_unet_spec,
    basic_unetplusplus_key,
    basic_unetplusplus_spec,
    from_monai,
)

nets = pytest.importorskip(
    "monai.networks.nets", reason="monai is not installed (pip install -c .ci/constraints.txt -e '.[monai]')"
)


# --- the comparison ---------------------------------------------------------------------------------------------


def _randomise(model: torch.nn.Module) -> None:
    """Weights and running statistics far from their initial values, so that every entry of the map matters."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise.abs())
            else:
                tensor.copy_(0.3 * noise)


def _moved(monai_model: torch.nn.Module, ours: torch.nn.Module, key_of) -> None:
    """Load MONAI's weights into ``ours`` through the key map, checking that it is one to one and complete."""
    source = monai_model.state_dict()
    mapped = {key_of(key): value for key, value in source.items()}
    assert len(mapped) == len(source), "two MONAI keys map to one unetgen key"
    assert set(mapped) == set(ours.state_dict()), set(mapped) ^ set(ours.state_dict())
    ours.load_state_dict(mapped)


def _parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """The largest difference, asserted within 1e-5 of the output's scale."""
    difference = (ours - theirs).abs().max().item()
    scale = theirs.abs().max().item()
    assert ours.shape == theirs.shape
    assert difference <= 1e-5 * max(scale, 1.0), (difference, scale)
    return difference


ATTENTION = {
    "2d": dict(dims=2, channels=(8, 16, 32, 64), strides=(2, 2, 2), size=(64, 48), params=124_122),
    "3d": dict(dims=3, channels=(8, 16, 32, 64), strides=(2, 2, 2), size=(32, 24, 16), params=367_338),
    "2d-anisotropic-strides": dict(dims=2, channels=(4, 8, 16, 16), strides=(2, 1, 2), size=(32, 20)),
    "3d-up-kernel-5": dict(dims=3, channels=(4, 8, 16), strides=(2, 2), size=(16, 12, 8), up_kernel=5),
    "2d-stride-3": dict(dims=2, channels=(8, 16, 32), strides=(3, 3), size=(27, 36)),
}


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_attention_unet(name):
    config = ATTENTION[name]
    dims, channels, strides = config["dims"], config["channels"], config["strides"]
    up_kernel = config.get("up_kernel", 3)
    theirs = nets.AttentionUnet(spatial_dims=dims, in_channels=2, out_channels=3, channels=channels,
                                strides=strides, up_kernel_size=up_kernel)
    spec = attention_unet_spec(dims, 2, 3, channels, strides, up_kernel)
    ours = unetgen.build(spec, config["size"])
    assert _parameters(ours) == _parameters(theirs) == unetgen.make_plan(spec, config["size"]).parameters
    if "params" in config:  # the research's figures for MONAI's 2D and 3D examples (1 → 2 channels)
        small = nets.AttentionUnet(spatial_dims=dims, in_channels=1, out_channels=2, channels=channels,
                                   strides=strides)
        assert _parameters(small) == config["params"]
        assert unetgen.make_plan(attention_unet_spec(dims, 1, 2, channels, strides), config["size"]).parameters \
            == config["params"]
    _randomise(theirs)
    _moved(theirs, ours, lambda key: attention_unet_key(key, len(channels)))
    x = torch.randn(2, 2, *config["size"], generator=torch.Generator().manual_seed(1))
    for training in (False, True):
        theirs.train(training)
        ours.train(training)
        with torch.no_grad():
            _close(ours(x), theirs(x))


UNETPP = {
    "2d": dict(dims=2, features=(32, 32, 64, 128, 256, 32), size=(64, 48), params=2_410_312),
    "3d": dict(dims=3, features=(8, 8, 16, 32, 64, 8), size=(32, 32, 48)),
}


@pytest.mark.parametrize("deep_supervision", [False, True], ids=["single", "deep-supervision"])
@pytest.mark.parametrize("name", sorted(UNETPP))
def test_basic_unetplusplus(name, deep_supervision):
    config = UNETPP[name]
    dims, features = config["dims"], config["features"]
    theirs = nets.BasicUNetPlusPlus(spatial_dims=dims, in_channels=2, out_channels=3, features=features,
                                    deep_supervision=deep_supervision)
    spec = basic_unetplusplus_spec(dims, 2, 3, features)
    ours = unetgen.build(spec, config["size"])
    assert _parameters(ours) == _parameters(theirs) == unetgen.make_plan(spec, config["size"]).parameters
    if "params" in config:  # the research's figure for MONAI's 2D example (1 → 2 channels)
        small = nets.BasicUNetPlusPlus(spatial_dims=dims, in_channels=1, out_channels=2, features=features)
        assert _parameters(small) == config["params"]
        assert unetgen.make_plan(basic_unetplusplus_spec(dims, 1, 2, features), config["size"]).parameters \
            == config["params"]
    _randomise(theirs)
    _moved(theirs, ours, basic_unetplusplus_key)
    x = torch.randn(2, 2, *config["size"], generator=torch.Generator().manual_seed(1))
    ours.return_heads = deep_supervision
    for training in (False, True):
        theirs.train(training)
        ours.train(training)
        with torch.no_grad():
            expected = theirs(x)
            got = ours(x)
        if deep_supervision:  # MONAI: X(0, 1) … X(0, 4); unetgen: the main head (X(0, 4)) first, then X(0, 1) …
            assert [tuple(t.shape) for t in got] == [tuple(t.shape) for t in expected]
            got = got[1:] + got[:1]
            for a, b in zip(got, expected):
                _close(a, b)
        else:
            assert len(expected) == 1
            main = got[0] if isinstance(got, list) else got  # training mode returns every head
            _close(main, expected[0])


# --- from_monai ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: nets.AttentionUnet(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2)),
    lambda: nets.AttentionUnet(spatial_dims=3, in_channels=2, out_channels=3, channels=(4, 8, 8), strides=(2, 1),
                               up_kernel_size=5),
    lambda: nets.BasicUNetPlusPlus(spatial_dims=2, in_channels=3, out_channels=2, features=(4, 4, 8, 16, 32, 4)),
    lambda: nets.BasicUNetPlusPlus(spatial_dims=3, in_channels=1, out_channels=2, features=(2, 2, 4, 8, 16, 2),
                                   deep_supervision=True),
], ids=["attention-2d", "attention-3d-up-kernel-5", "unetpp-2d", "unetpp-3d-ds"])
def test_from_monai_reads_the_configuration_and_moves_the_weights(make):
    theirs = make()
    _randomise(theirs)
    theirs.eval()
    ours = from_monai(theirs)
    assert not ours.training and _parameters(ours) == _parameters(theirs)
    size = (32, 32) if ours.spec.spatial_dims == 2 else (32, 32, 32)
    x = torch.randn(1, ours.spec.in_channels, *size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = theirs(x)
        got = ours(x)
    _close(got, expected[-1] if isinstance(expected, (list, tuple)) else expected)


@pytest.mark.parametrize("make,words", [
    (lambda: nets.AttentionUnet(2, 1, 2, channels=(4, 8), strides=(2,), kernel_size=5), "kernel_size=5"),
    (lambda: nets.AttentionUnet(2, 1, 2, channels=(4, 8), strides=(2,), dropout=0.1), "dropout=0.1"),
    (lambda: nets.BasicUNetPlusPlus(2, 1, 2, features=(4, 8, 8, 16, 32, 4)), "features (4, 8, 8, 16, 32, 4)"),
    (lambda: nets.BasicUNetPlusPlus(2, 1, 2, features=(4, 4, 8, 16, 32, 4), norm="batch"), "norm ['BatchNorm2d']"),
    (lambda: nets.BasicUNetPlusPlus(2, 1, 2, features=(4, 4, 8, 16, 32, 4), act="relu"), "activation [('ReLU'"),
    (lambda: nets.BasicUNetPlusPlus(2, 1, 2, features=(4, 4, 8, 16, 32, 4), upsample="nontrainable"),
     "upsample='deconv'"),
    (lambda: nets.UNet(2, 1, 2, channels=(4, 8), strides=(2,)), "UNet: from_monai takes AttentionUnet or"),
])
def test_from_monai_refuses_what_it_cannot_reproduce_by_name(make, words):
    with pytest.raises(NotExpressible) as refused:
        from_monai(make())
    assert words in str(refused.value) and "\n" not in str(refused.value)
