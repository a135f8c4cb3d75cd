"""unetgen reproduces nnU-Net's networks: DNA's PlainConvUNet and ResidualEncoderUNet (dynamic-network-architectures
0.4.4), built seeded, their weights moved by the key map, give the same parameter count and the same outputs, every
head, in eval and training mode. Needs ``dynamic_network_architectures`` (skipped without it)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import unetgen
from unetgen.interop.nnunet import (
    architecture_from_spec,
    canonical_weights,
    key_map,
    load_nnunet_weights,
    nnunet_weights,
    spec_from_architecture,
)

dna = pytest.importorskip(
    "dynamic_network_architectures.architectures.unet",
    reason="dynamic_network_architectures is not installed (pip install --no-deps dynamic-network-architectures)",
)

#: Small networks (CPU, seconds): 2D and 3D, anisotropic kernels and strides, plain and residual encoders, other
#: norms, activations and bias choices. ``size`` is the input (a multiple of the strides' products).
CONFIGS = {
    "plain2d": dict(
        cls="PlainConvUNet", dims=2, size=(16, 24), features=[4, 8, 16, 16], kernels=[[3, 1], [3, 3], [3, 3], [1, 3]],
        strides=[[1, 1], [2, 1], [2, 2], [1, 2]], counts=[2, 2, 2, 2], decoder=[2, 2, 2],
    ),
    "plain3d": dict(
        cls="PlainConvUNet", dims=3, size=(8, 16, 12), features=[4, 8, 12, 16],
        kernels=[[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]], strides=[[1, 1, 1], [1, 2, 2], [2, 2, 1], [2, 2, 2]],
        counts=[2, 2, 2, 2], decoder=[2, 2, 2],
    ),
    "plain2d_batch_relu_nobias": dict(
        cls="PlainConvUNet", dims=2, size=(16, 16), features=[4, 8, 16], kernels=[[3, 3], [3, 3], [5, 3]],
        strides=[[1, 1], [2, 2], [2, 2]], counts=[3, 3, 3], decoder=[1, 1], norm="batch", nonlin="relu", bias=False,
    ),
    "resenc2d": dict(
        cls="ResidualEncoderUNet", dims=2, size=(16, 24), features=[4, 8, 16, 16],
        kernels=[[3, 1], [3, 3], [3, 3], [1, 3]],
        strides=[[1, 1], [2, 1], [2, 2], [1, 2]], counts=[1, 2, 3, 2], decoder=[1, 1, 1],
    ),
    "resenc3d": dict(
        cls="ResidualEncoderUNet", dims=3, size=(8, 16, 12), features=[4, 8, 12, 16],
        kernels=[[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]], strides=[[1, 1, 1], [1, 2, 2], [2, 2, 1], [2, 2, 2]],
        counts=[1, 2, 2, 2], decoder=[1, 1, 1],
    ),
    "resenc2d_slope_nobias_2dec": dict(
        cls="ResidualEncoderUNet", dims=2, size=(16, 16), features=[4, 4, 8], kernels=[[3, 3], [3, 3], [3, 3]],
        strides=[[1, 1], [2, 2], [2, 2]], counts=[2, 1, 1], decoder=[2, 2], bias=False, slope=0.2,
    ),
}
IN_CHANNELS, CLASSES = 2, 3


def dna_kwargs(config: dict, classes: bool = True) -> dict:
    """DNA's keyword arguments, ops as classes (what nnU-Net passes after pydoc.locate)."""
    dims = config["dims"]
    norm = {"instance": {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}, "batch": {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}}
    nonlin = config.get("nonlin", "leaky_relu")
    kwargs = dict(
        n_stages=len(config["features"]), features_per_stage=config["features"],
        conv_op={2: nn.Conv2d, 3: nn.Conv3d}[dims], kernel_sizes=config["kernels"], strides=config["strides"],
        n_conv_per_stage_decoder=config["decoder"], conv_bias=config.get("bias", True),
        norm_op=norm[config.get("norm", "instance")][dims], norm_op_kwargs={"eps": 1e-5, "affine": True},
        dropout_op=None, dropout_op_kwargs=None,
        nonlin=nn.LeakyReLU if nonlin == "leaky_relu" else nn.ReLU,
        nonlin_kwargs={"inplace": True} | ({"negative_slope": config["slope"]} if "slope" in config else {}),
    )
    kwargs["n_conv_per_stage" if config["cls"] == "PlainConvUNet" else "n_blocks_per_stage"] = config["counts"]
    return kwargs


def build_dna(config: dict, deep_supervision: bool) -> nn.Module:
    """DNA's network, seeded, with nnU-Net's initialisation (and random norm scales and shifts, so that a norm
    mapped to the wrong place shows)."""
    torch.manual_seed(0)
    network = getattr(dna, config["cls"])(
        input_channels=IN_CHANNELS, num_classes=CLASSES, deep_supervision=deep_supervision, **dna_kwargs(config)
    )
    network.apply(network.initialize)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, (nn.InstanceNorm2d, nn.InstanceNorm3d, nn.BatchNorm2d, nn.BatchNorm3d)):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
            if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d)):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return network


def unique_parameters(module: nn.Module) -> int:
    """Parameters counted once (DNA registers its encoder twice)."""
    return sum(p.numel() for p in module.parameters())


def seg_layer_parameters(network: nn.Module, unused: range) -> int:
    return sum(p.numel() for j in unused for p in network.decoder.seg_layers[j].parameters())


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> float:
    """Within 1e-5 of the outputs' scale; returns the largest difference."""
    assert ours.shape == theirs.shape, f"{what}: shape {tuple(ours.shape)} vs DNA's {tuple(theirs.shape)}"
    difference = (ours - theirs).abs().max().item()
    scale = theirs.abs().max().item()
    assert difference <= 1e-5 * max(scale, 1.0), f"{what}: differs by {difference:.3g} (scale {scale:.3g})"
    return difference


@pytest.mark.parametrize("deep_supervision", [False, True], ids=["ds0", "ds1"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_unetgen_computes_what_dna_computes(name, deep_supervision):
    config = CONFIGS[name]
    stages = len(config["features"])
    network = build_dna(config, deep_supervision)
    spec = spec_from_architecture(
        config["cls"], dna_kwargs(config), in_channels=IN_CHANNELS, out_channels=CLASSES,
        heads=stages - 2 if deep_supervision else 0, input_size=list(config["size"]),
    )
    model = unetgen.build(spec)
    dropped = load_nnunet_weights(model, network.state_dict(), unused_heads=not deep_supervision)

    # Parameters: DNA builds a segmentation layer on every decoder stage even without deep supervision; without it,
    # only the last (full resolution) is used, and unetgen builds only that one.
    unused = range(0 if deep_supervision else stages - 2)
    expected = unique_parameters(network) - seg_layer_parameters(network, unused)
    assert model.plan.parameters == sum(p.numel() for p in model.parameters()) == expected
    assert len(dropped) == 2 * len(unused)

    x = torch.randn(2, IN_CHANNELS, *config["size"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        network.eval()
        model.eval()
        theirs = network(x)
        main = theirs[0] if deep_supervision else theirs
        assert_close(model(x), main, f"{name}: eval, main output")
        if deep_supervision:
            model.return_heads = True
            ours = model(x)
            assert len(ours) == len(theirs) == stages - 1
            for index, (a, b) in enumerate(zip(ours, theirs)):
                assert_close(a, b, f"{name}: eval, head {index}")
            model.return_heads = False
        network.train()
        model.train()
        theirs = network(x)
        ours = model(x)
        if deep_supervision:
            assert isinstance(ours, (list, tuple)) and len(ours) == len(theirs)
            for index, (a, b) in enumerate(zip(ours, theirs)):
                assert_close(a, b, f"{name}: train, head {index}")
        else:
            assert_close(ours, theirs, f"{name}: train, main output")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_way_back_gives_dna_the_same_network(name):
    """unetgen spec → nnU-Net architecture → DNA network with unetgen's weights (reverse key map): same outputs."""
    config = CONFIGS[name]
    stages = len(config["features"])
    spec = spec_from_architecture(
        config["cls"], dna_kwargs(config), in_channels=IN_CHANNELS, out_channels=CLASSES, heads=stages - 2,
        input_size=list(config["size"]),
    )
    model = unetgen.build(spec, seed=3)
    with torch.no_grad():
        for module in model.modules():  # random norm scales and shifts, as above
            if isinstance(module, (nn.InstanceNorm2d, nn.InstanceNorm3d, nn.BatchNorm2d, nn.BatchNorm3d)):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    arch = architecture_from_spec(spec)
    assert arch["network_class_name"] == f"dynamic_network_architectures.architectures.unet.{config['cls']}"
    import pydoc

    kwargs = dict(arch["arch_kwargs"])
    for key in arch["_kw_requires_import"]:
        if kwargs[key] is not None:
            kwargs[key] = pydoc.locate(kwargs[key])
    network = pydoc.locate(arch["network_class_name"])(
        input_channels=IN_CHANNELS, num_classes=CLASSES, deep_supervision=True, **kwargs
    )
    result = network.load_state_dict(nnunet_weights(model), strict=False)
    assert not result.unexpected_keys
    assert all(key.startswith("decoder.encoder.") or ".all_modules." in key for key in result.missing_keys)
    x = torch.randn(1, IN_CHANNELS, *config["size"], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        network.train()
        model.train()
        for index, (a, b) in enumerate(zip(model(x), network(x))):
            assert_close(a, b, f"{name}: back in DNA, head {index}")


def test_the_key_map_covers_dna_canonical_keys_exactly():
    """Every canonical DNA key (aliases dropped) is the image of exactly one unetgen key, for both classes."""
    for name in ("plain3d", "resenc2d"):
        config = CONFIGS[name]
        network = build_dna(config, True)
        spec = spec_from_architecture(config["cls"], dna_kwargs(config), in_channels=IN_CHANNELS,
                                      out_channels=CLASSES, input_size=list(config["size"]))
        model = unetgen.build(spec)
        ours = nnunet_weights(model)
        theirs = canonical_weights(network.state_dict())
        assert sorted(ours) == sorted(theirs)
        assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
        rules = key_map(model.plan)
        assert len({rule.nnunet for rule in rules}) == len(rules)
