"""MONAI → unetgen: the spec of MONAI's ``AttentionUnet`` and ``BasicUNetPlusPlus``, and their weights moved over.

unetgen reproduces both exactly (MONAI 1.6.1; ``tests/test_monai_equivalence.py`` checks the parameter counts and
the outputs, 2D and 3D, with and without deep supervision): :func:`attention_unet_spec` and
:func:`basic_unetplusplus_spec` give the spec of a configuration, :func:`attention_unet_key` and
:func:`basic_unetplusplus_key` map a MONAI state-dict key to unetgen's, and :func:`from_monai` does all of it for a
MONAI module: it reads the configuration from the module itself, refuses by name what unetgen cannot reproduce
(:class:`~unetgen.errors.NotExpressible`), and returns a unetgen network holding MONAI's weights. MONAI is not
imported here: the module is recognised by its class name and read through its attributes and weights.

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

What the specs cannot say: a ``kernel_size`` other than 3 in ``AttentionUnet`` (its merge convolution stays 3×3),
its dropout (MONAI drops after the normalisation, in every block), and ``BasicUNetPlusPlus`` features other than
``(a, a, 2a, 4a, 8a, a)`` (its up-convolutions halve their input but keep it into the top row, which unetgen's
``up_channels: halve`` matches when the widths double below the first level), norms other than MONAI's default
(instance, affine), activations other than leaky ReLU 0.1, up-sampling other than ``deconv``, or dropout. Sizes
MONAI's max-pool would floor are padded by MONAI; unetgen refuses them (or mirrors, with ``output: same``).
``BasicUNetPlusPlus`` builds all four heads with or without deep supervision, so the spec has
``deep_supervision: 3``: in eval mode unetgen returns the last head, as MONAI does without deep supervision; with
``return_heads`` it returns that head first, then X(0, 1) … X(0, 3) (MONAI: X(0, 1) … X(0, 4)).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ..errors import NotExpressible
from ..network.unet import UNet, build
from ..spec.fields import UNetSpec


def attention_unet_spec(spatial_dims: int, in_channels: int, out_channels: int, channels: Sequence[int],
                        strides: Sequence[int], up_kernel_size: int = 3) -> UNetSpec:
    """The unetgen spec of ``monai.networks.nets.AttentionUnet(spatial_dims, in_channels, out_channels, channels,
    strides, kernel_size=3, up_kernel_size, dropout=0.0)``."""
    depth = len(channels)
    return UNetSpec(
        name="monai-attention-unet", spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
        depth=depth, channels=list(channels), pool_sizes=[int(s) for s in strides[: depth - 1]], downsampling="conv",
        padding="same", norm="batch", conv_bias=True, activation="relu", decoder_convs=1, decoder_norm="instance",
        decoder_norm_affine=False, decoder_activation="prelu", up_kernel_size=up_kernel_size, up_norm_act=True,
        skip_gate="attention",
    )


def attention_unet_key(key: str, depth: int) -> str:
    """A MONAI ``AttentionUnet`` state-dict key → unetgen's (the table in this module's docstring).

    Raises:
        KeyError: for a key the map does not know.
    """
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
    if match is None:
        raise KeyError(key)
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


def basic_unetplusplus_spec(spatial_dims: int, in_channels: int, out_channels: int,
                            features: Sequence[int] = (32, 32, 64, 128, 256, 32)) -> UNetSpec:
    """The unetgen spec of ``monai.networks.nets.BasicUNetPlusPlus(spatial_dims, in_channels, out_channels,
    features)`` with its default norm (instance, affine), activation (leaky ReLU 0.1), ``deconv`` up-sampling and no
    dropout, with or without deep supervision (MONAI builds every head either way).

    Raises:
        NotExpressible: for features other than ``(a, a, 2a, 4a, 8a, a)``.
    """
    a = features[0]
    if tuple(features) != (a, a, 2 * a, 4 * a, 8 * a, a):
        raise NotExpressible(
            f"BasicUNetPlusPlus features {tuple(features)}: unetgen reproduces (a, a, 2a, 4a, 8a, a) only (its "
            f"up-convolutions' widths match MONAI's there), e.g. {(a, a, 2 * a, 4 * a, 8 * a, a)}"
        )
    return UNetSpec(
        name="monai-basic-unetplusplus", spatial_dims=spatial_dims, in_channels=in_channels,
        out_channels=out_channels, depth=5, channels=list(features[:5]), padding="same", norm="instance",
        conv_bias=True, activation="leaky_relu", negative_slope=0.1, skips="nested", deep_supervision=3,
    )


def basic_unetplusplus_key(key: str) -> str:
    """A MONAI ``BasicUNetPlusPlus`` state-dict key → unetgen's (the table in this module's docstring).

    Raises:
        KeyError: for a key the map does not know.
    """
    def level(i: str) -> str:
        return "bottleneck" if i == "4" else f"encoder.{i}"

    table: list[tuple[str, Callable[[re.Match[str]], str]]] = [
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


def _attention_spec(model: nn.Module) -> tuple[UNetSpec, Callable[[str], str]]:
    """The spec and key map of a MONAI ``AttentionUnet``, read from its attributes."""
    kernel, dropout = getattr(model, "kernel_size", 3), float(getattr(model, "dropout", 0.0) or 0.0)
    if kernel != 3:
        raise NotExpressible(f"AttentionUnet kernel_size={kernel}: unetgen reproduces kernel_size=3 only (MONAI keeps "
                             "its merge convolution 3×3 whatever kernel_size says)")
    if dropout:
        raise NotExpressible(f"AttentionUnet dropout={dropout}: MONAI drops after every normalisation, which unetgen's "
                             "dropout (after a level's last convolution) does not reproduce; build it with dropout=0.0")
    channels = [int(c) for c in model.channels]
    strides = [int(s) if not isinstance(s, (tuple, list)) else _one(s, "strides") for s in model.strides]
    spec = attention_unet_spec(int(model.dimensions), int(model.in_channels), int(model.out_channels), channels,
                               strides, _one(model.up_kernel_size, "up_kernel_size"))
    return spec, lambda key: attention_unet_key(key, len(channels))


def _one(value: Any, name: str) -> int:
    """A size given as one number or as the same number per axis."""
    values = {int(v) for v in value} if isinstance(value, (tuple, list)) else {int(value)}
    if len(values) != 1:
        raise NotExpressible(f"AttentionUnet {name}={value}: unetgen reproduces one {name} for every axis")
    return values.pop()


def _unetplusplus_spec(model: nn.Module) -> tuple[UNetSpec, Callable[[str], str]]:
    """The spec and key map of a MONAI ``BasicUNetPlusPlus``, read from its weights and modules (MONAI keeps no
    record of its arguments)."""
    state = model.state_dict()
    first = state["conv_0_0.conv_0.conv.weight"]
    dims = first.dim() - 2
    features = [int(state[f"{name}.conv.weight"].shape[0]) for name in (
        "conv_0_0.conv_0", "conv_1_0.convs.conv_0", "conv_2_0.convs.conv_0", "conv_3_0.convs.conv_0",
        "conv_4_0.convs.conv_0", "upcat_0_4.convs.conv_0")]
    modules = list(model.modules())
    norms = {type(m).__name__ for m in modules if "Norm" in type(m).__name__}
    if norms != {f"InstanceNorm{dims}d"} or any(getattr(m, "affine", True) is False for m in modules
                                                 if "Norm" in type(m).__name__):
        raise NotExpressible(f"BasicUNetPlusPlus norm {sorted(norms)}: unetgen reproduces MONAI's default, instance "
                             "norm with affine=True")
    acts = {(type(m).__name__, getattr(m, "negative_slope", None)) for m in modules
            if type(m).__name__ in ("LeakyReLU", "ReLU", "PReLU", "ELU", "GELU", "SiLU", "Mish", "Tanh", "Sigmoid")}
    if acts != {("LeakyReLU", 0.1)}:
        raise NotExpressible(f"BasicUNetPlusPlus activation {sorted(acts)}: unetgen reproduces MONAI's default, "
                             "leaky ReLU with negative slope 0.1")
    if not any(key.startswith("upcat_0_1.upsample.deconv.") for key in state):
        raise NotExpressible("BasicUNetPlusPlus upsample: unetgen reproduces upsample='deconv' (MONAI's default) only")
    if any(type(m).__name__.startswith("Dropout") and getattr(m, "p", 0) for m in modules):
        raise NotExpressible("BasicUNetPlusPlus dropout: unetgen reproduces dropout=0.0 only")
    spec = basic_unetplusplus_spec(dims, int(first.shape[1]), int(state["final_conv_0_4.weight"].shape[0]),
                                   features)
    return spec, basic_unetplusplus_key


#: The MONAI classes :func:`from_monai` takes, by class name.
CLASSES = {"AttentionUnet": _attention_spec, "BasicUNetPlusPlus": _unetplusplus_spec,
           "BasicUnetPlusPlus": _unetplusplus_spec}


def from_monai(model: nn.Module, input_size: Sequence[int] | None = None) -> UNet:
    """The unetgen network that is ``model`` (a MONAI ``AttentionUnet`` or ``BasicUNetPlusPlus``), with its weights.

    Args:
        model: the MONAI module (its weights as they are: trained, or loaded from a MONAI checkpoint).
        input_size: the spatial size the network is described and exported at (default: the spec's).

    Returns:
        A :class:`~unetgen.network.unet.UNet` on the CPU, in the mode ``model`` was in, whose outputs are MONAI's
        (within float rounding): save it, plan it, predict with it, export it.

    Raises:
        NotExpressible: for another class, or a configuration unetgen cannot reproduce exactly (named).
    """
    kind = type(model).__name__
    if kind not in CLASSES:
        raise NotExpressible(f"{kind}: from_monai takes {' or '.join(sorted(set(CLASSES) - {'BasicUnetPlusPlus'}))}; "
                             "for nnU-Net's networks see unetgen.interop.nnunet")
    spec, key_of = CLASSES[kind](model)
    ours = build(spec, input_size)
    source = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    try:
        mapped = {key_of(key): value for key, value in source.items()}
    except KeyError as missing:
        raise NotExpressible(f"{kind}: weight {missing.args[0]!r} has no place in the unetgen network; a MONAI "
                             "version this map does not know (tested with MONAI 1.6.1)") from None
    expected = set(ours.state_dict())
    if len(mapped) != len(source) or set(mapped) != expected:
        unknown = sorted(set(mapped) - expected)[:3] or sorted(expected - set(mapped))[:3]
        raise NotExpressible(f"{kind}: its weights do not match the unetgen network ({', '.join(unknown)}); a MONAI "
                             "version this map does not know (tested with MONAI 1.6.1)")
    ours.load_state_dict(mapped)
    return ours.train(model.training)


__all__ = [
    "CLASSES",
    "attention_unet_spec",
    "attention_unet_key",
    "basic_unetplusplus_spec",
    "basic_unetplusplus_key",
    "from_monai",
]
