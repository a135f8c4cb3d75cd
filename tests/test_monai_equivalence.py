"""unetgen reproduces MONAI's attention and nested U-Nets exactly: ``AttentionUnet`` and ``BasicUNetPlusPlus``
(MONAI 1.6.1), 2D and 3D, with and without deep supervision. For each: the unetgen spec that is the same network,
MONAI's weights moved onto it by the key map below (every entry, one to one), the same parameter count, and the same
outputs within 1e-5 of their scale, in eval and in training mode. Needs ``monai`` (the ``monai`` extra; skipped
without it).

The key maps, MONAI → unetgen:

``AttentionUnet`` (``P(l)`` = ``model.1`` followed by ``.submodule.1`` l − 1 times, for levels l = 1 … n − 1):

====================================================  ================================================
``model.0.conv.{c}.conv.*`` / ``.adn.N.*``              ``encoder.0.convs.conv{c}.*`` / ``norm{c}.*``
``P(l).submodule.0.conv.{c}.conv.*`` / ``.adn.N.*``     ``encoder.{l}.convs.conv{c}.*`` / ``norm{c}.*``
``P(n−1).submodule.conv.{c}.conv.*`` / ``.adn.N.*``     ``bottleneck.convs.conv{c}.*`` / ``norm{c}.*``
``P(l).upconv.up.conv.*`` / ``.adn.N.*``                ``decoder.{l−1}.up.conv.*`` / ``up.norm.*``
``P(l).attention.W_g.0.conv.*`` / ``W_g.1.*``           ``decoder.{l−1}.gate.query.*`` / ``query_norm.*``
``P(l).attention.W_x.0.conv.*`` / ``W_x.1.*``           ``decoder.{l−1}.gate.key.*`` / ``key_norm.*``
``P(l).attention.psi.0.conv.*`` / ``psi.1.*``           ``decoder.{l−1}.gate.psi.*`` / ``psi_norm.*``
``P(l).merge.conv.*`` / ``P(l).merge.adn.A.weight``     ``decoder.{l−1}.convs.conv0.*`` / ``convs.act0.weight``
``model.2.conv.*``                                      ``head.*``
====================================================  ================================================

``BasicUNetPlusPlus``:

====================================================  ================================================
``conv_0_0.conv_{c}.conv.*`` / ``.adn.N.*``             ``encoder.0.convs.conv{c}.*`` / ``norm{c}.*``
``conv_{i}_0.convs.conv_{c}.conv.*`` / ``.adn.N.*``     ``encoder.{i}.convs.…`` (``bottleneck.convs.…`` for i = 4)
``upcat_{i}_{j}.upsample.deconv.*``                     ``nested.{i}.{j}.up.*``
``upcat_{i}_{j}.convs.conv_{c}.conv.*`` / ``.adn.N.*``  ``nested.{i}.{j}.convs.conv{c}.*`` / ``norm{c}.*``
``final_conv_0_{j}.*``                                  ``nested.0.{j}.head.*`` (``head.*`` for j = 4)
====================================================  ================================================

What the specs cannot say, and so the tests do not use: a ``kernel_size`` other than 3 in ``AttentionUnet`` (its
merge convolution stays 3×3), dropout in training mode (random), and ``BasicUNetPlusPlus`` features other than
``(a, a, 2a, 4a, 8a, a)`` (MONAI's default is one: its up-convolutions halve their input, but keep it into the top
row, which unetgen's ``up_channels: halve`` matches when the widths double below the first level), or sizes its
``max-pool`` would floor (MONAI pads the up-sampled map there; unetgen refuses the size, or mirrors with
``output: same``). MONAI builds all four heads of ``BasicUNetPlusPlus`` with or without deep supervision, so the
spec has ``deep_supervision: 3`` for both; without it MONAI returns the last head's output, which is unetgen's main
output in eval mode.
"""

from __future__ import annotations

import re

import pytest
import torch

import unetgen

nets = pytest.importorskip(
    "monai.networks.nets", reason="monai is not installed (pip install -c .ci/constraints.txt -e '.[monai]')"
)


# --- AttentionUnet ----------------------------------------------------------------------------------------------


def attention_unet_spec(spatial_dims: int, in_channels: int, out_channels: int, channels: tuple[int, ...],
                        strides: tuple[int, ...], up_kernel_size: int = 3) -> unetgen.UNetSpec:
    """The unetgen spec of ``monai.networks.nets.AttentionUnet(spatial_dims, in_channels, out_channels, channels,
    strides, kernel_size=3, up_kernel_size, dropout=0.0)``."""
    depth = len(channels)
    return unetgen.UNetSpec(
        name="monai-attention-unet", spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
        depth=depth, channels=list(channels), pool_sizes=list(strides[: depth - 1]), downsampling="conv",
        padding="same", norm="batch", conv_bias=True, activation="relu", decoder_convs=1, decoder_norm="instance",
        decoder_norm_affine=False, decoder_activation="prelu", up_kernel_size=up_kernel_size, up_norm_act=True,
        skip_gate="attention",
    )


def attention_unet_key(key: str, depth: int) -> str:
    """A MONAI ``AttentionUnet`` state-dict key → unetgen's (the table in this module's docstring)."""
    norm = r"\.adn\.N\."
    simple = [
        (r"^model\.0\.conv\.(\d+)\.conv\.(.+)$", r"encoder.0.convs.conv\1.\2"),
        (rf"^model\.0\.conv\.(\d+){norm}(.+)$", r"encoder.0.convs.norm\1.\2"),
        (r"^model\.2\.conv\.(.+)$", r"head.\1"),
    ]
    for pattern, target in simple:
        if re.match(pattern, key):
            return re.sub(pattern, target, key)
    match = re.match(r"^model\.1((?:\.submodule\.1)*)\.(.+)$", key)
    assert match, key
    level = 1 + match.group(1).count(".submodule.1")
    rest = match.group(2)
    encoder = "bottleneck" if level == depth - 1 else f"encoder.{level}"
    decoder = f"decoder.{level - 1}"
    table = [
        (r"^submodule(?:\.0)?\.conv\.(\d+)\.conv\.(.+)$", rf"{encoder}.convs.conv\1.\2"),
        (rf"^submodule(?:\.0)?\.conv\.(\d+){norm}(.+)$", rf"{encoder}.convs.norm\1.\2"),
        (r"^upconv\.up\.conv\.(.+)$", rf"{decoder}.up.conv.\1"),
        (rf"^upconv\.up{norm}(.+)$", rf"{decoder}.up.norm.\1"),
        (r"^attention\.W_g\.0\.conv\.(.+)$", rf"{decoder}.gate.query.\1"),
        (r"^attention\.W_g\.1\.(.+)$", rf"{decoder}.gate.query_norm.\1"),
        (r"^attention\.W_x\.0\.conv\.(.+)$", rf"{decoder}.gate.key.\1"),
        (r"^attention\.W_x\.1\.(.+)$", rf"{decoder}.gate.key_norm.\1"),
        (r"^attention\.psi\.0\.conv\.(.+)$", rf"{decoder}.gate.psi.\1"),
        (r"^attention\.psi\.1\.(.+)$", rf"{decoder}.gate.psi_norm.\1"),
        (r"^merge\.conv\.(.+)$", rf"{decoder}.convs.conv0.\1"),
        (r"^merge\.adn\.A\.(.+)$", rf"{decoder}.convs.act0.\1"),
    ]
    for pattern, target in table:
        if re.match(pattern, rest):
            return re.sub(pattern, target, rest)
    raise KeyError(key)


# --- BasicUNetPlusPlus ------------------------------------------------------------------------------------------


def basic_unetplusplus_spec(spatial_dims: int, in_channels: int, out_channels: int,
                            features: tuple[int, ...] = (32, 32, 64, 128, 256, 32)) -> unetgen.UNetSpec:
    """The unetgen spec of ``monai.networks.nets.BasicUNetPlusPlus(spatial_dims, in_channels, out_channels,
    features)`` with its default norm (instance, affine), activation (leaky ReLU 0.1), ``deconv`` up-sampling and no
    dropout, with or without deep supervision (MONAI builds every head either way)."""
    a = features[0]
    if tuple(features) != (a, a, 2 * a, 4 * a, 8 * a, a):
        raise ValueError(f"features {features}: unetgen's up_channels matches MONAI's for (a, a, 2a, 4a, 8a, a)")
    return unetgen.UNetSpec(
        name="monai-basic-unetplusplus", spatial_dims=spatial_dims, in_channels=in_channels,
        out_channels=out_channels, depth=5, channels=list(features[:5]), padding="same", norm="instance",
        conv_bias=True, activation="leaky_relu", negative_slope=0.1, skips="nested", deep_supervision=3,
    )


def basic_unetplusplus_key(key: str) -> str:
    """A MONAI ``BasicUNetPlusPlus`` state-dict key → unetgen's (the table in this module's docstring)."""
    def level(i: str) -> str:
        return "bottleneck" if i == "4" else f"encoder.{i}"

    table = [
        (r"^conv_0_0\.conv_(\d+)\.conv\.(.+)$", lambda m: f"encoder.0.convs.conv{m[1]}.{m[2]}"),
        (r"^conv_0_0\.conv_(\d+)\.adn\.N\.(.+)$", lambda m: f"encoder.0.convs.norm{m[1]}.{m[2]}"),
        (r"^conv_(\d+)_0\.convs\.conv_(\d+)\.conv\.(.+)$", lambda m: f"{level(m[1])}.convs.conv{m[2]}.{m[3]}"),
        (r"^conv_(\d+)_0\.convs\.conv_(\d+)\.adn\.N\.(.+)$", lambda m: f"{level(m[1])}.convs.norm{m[2]}.{m[3]}"),
        (r"^upcat_(\d+)_(\d+)\.upsample\.deconv\.(.+)$", lambda m: f"nested.{m[1]}.{m[2]}.up.{m[3]}"),
        (r"^upcat_(\d+)_(\d+)\.convs\.conv_(\d+)\.conv\.(.+)$",
         lambda m: f"nested.{m[1]}.{m[2]}.convs.conv{m[3]}.{m[4]}"),
        (r"^upcat_(\d+)_(\d+)\.convs\.conv_(\d+)\.adn\.N\.(.+)$",
         lambda m: f"nested.{m[1]}.{m[2]}.convs.norm{m[3]}.{m[4]}"),
        (r"^final_conv_0_4\.(.+)$", lambda m: f"head.{m[1]}"),
        (r"^final_conv_0_(\d+)\.(.+)$", lambda m: f"nested.0.{m[1]}.head.{m[2]}"),
    ]
    for pattern, target in table:
        match = re.match(pattern, key)
        if match:
            return target(match)
    raise KeyError(key)


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
