"""nnU-Net ⇄ unetgen: specs from nnU-Net's plans, weights from its checkpoints, and nnU-Net architectures from specs.

nnU-Net (Isensee et al. 2021, Nature Methods) builds its networks with dynamic-network-architectures (DNA):
``PlainConvUNet`` and ``ResidualEncoderUNet`` (BasicBlockD). A configuration of a ``plans.json`` names the class and
its keyword arguments (the ``architecture`` section; before nnU-Net 2.3, flat keys such as ``UNet_class_name``).
:func:`spec_from_plans` turns one into the unetgen spec of the same network, :func:`load_nnunet_weights` moves a
checkpoint's weights into the unetgen network by :func:`key_map`, and :func:`architecture_from_spec` goes back.

Whatever unetgen cannot reproduce exactly is refused by name (:class:`NotExpressible`), never approximated. The
rules (DNA 0.4.4, nnunetv2 2.8.1) and the key map are described in ``docs/nnunet.md``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..errors import CheckpointError, NotExpressible, UNetGenError, did_you_mean
from ..files import check_target, staging, writing
from ..network.checkpoint import save
from ..network.unet import UNet, build
from ..planning.plan import Layer, Plan, make_plan
from ..spec.fields import UNetSpec, load_spec, spec_from_dict


#: The DNA classes unetgen reproduces, by the last part of their names.
NETWORK_CLASSES = {"PlainConvUNet": "plain", "ResidualEncoderUNet": "residual_encoder"}
#: Keyword arguments of each class (DNA 0.4.4), beyond ``input_channels`` and ``num_classes``.
_COMMON_KWARGS = (
    "n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_conv_per_stage_decoder", "conv_bias",
    "norm_op", "norm_op_kwargs", "dropout_op", "dropout_op_kwargs", "nonlin", "nonlin_kwargs", "deep_supervision",
)
_KWARGS = {
    "plain": (*_COMMON_KWARGS, "n_conv_per_stage", "nonlin_first"),
    "residual_encoder": (*_COMMON_KWARGS, "n_blocks_per_stage", "block", "bottleneck_channels", "stem_channels"),
}
#: Keyword arguments that hold a class: nnU-Net's plans name it, and list it in ``_kw_requires_import``.
_CLASS_KWARGS = ("conv_op", "norm_op", "dropout_op", "nonlin", "block")
#: The modules a torch class may be named from (``torch.nn.Conv3d`` or ``torch.nn.modules.conv.Conv3d``).
_TORCH_MODULES = ("torch.nn", "torch.nn.modules.conv", "torch.nn.modules.instancenorm", "torch.nn.modules.batchnorm",
                  "torch.nn.modules.activation")
#: torch activations → unetgen's ``activation``, with the keyword arguments each may have and the values unetgen
#: reproduces (``None``: any value; ``inplace`` changes nothing but memory).
_NONLINS: dict[str, tuple[str, dict[str, Any]]] = {
    "LeakyReLU": ("leaky_relu", {"negative_slope": None, "inplace": None}),
    "ReLU": ("relu", {"inplace": None}),
    "ELU": ("elu", {"alpha": 1.0, "inplace": None}),
    "GELU": ("gelu", {"approximate": "none"}),
    "SiLU": ("silu", {"inplace": None}),
}
#: Norm keyword arguments unetgen reproduces: unetgen's norms are torch's defaults with a learned scale and shift.
_NORM_KWARGS = {
    "instance": {"eps": 1e-5, "affine": True, "momentum": 0.1, "track_running_stats": False},
    "batch": {"eps": 1e-5, "affine": True, "momentum": 0.1, "track_running_stats": True},
}
#: torch's defaults for those keywords (InstanceNorm is not affine by default).
_NORM_DEFAULTS = {
    "instance": {"eps": 1e-5, "affine": False, "momentum": 0.1, "track_running_stats": False},
    "batch": {"eps": 1e-5, "affine": True, "momentum": 0.1, "track_running_stats": True},
}
_NORM_CLASSES = {"InstanceNorm": "instance", "BatchNorm": "batch"}
_NORM_MODULES = {"instance": "torch.nn.modules.instancenorm", "batch": "torch.nn.modules.batchnorm"}
_NORM_NAMES = {"instance": "InstanceNorm", "batch": "BatchNorm"}
_ACTIVATION_CLASSES = {value[0]: name for name, value in _NONLINS.items()}
#: The old (nnunetv2 < 2.3) flat keys of a configuration, converted as nnunetv2's ``ConfigurationManager`` does.
OLD_PLAN_KEYS = ("UNet_class_name", "UNet_base_num_features", "n_conv_per_stage_encoder", "n_conv_per_stage_decoder",
                 "pool_op_kernel_sizes", "conv_kernel_sizes", "unet_max_num_features")


def _show(value: Any) -> str:
    """A value as JSON on one line, cut to 60 characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- nnU-Net's architecture → a unetgen spec -----------------------------------------------------------------------


def _class_name(value: Any, key: str, where: str) -> str:
    """The dotted name of a class given by name or as the class itself."""
    if isinstance(value, str):
        return value
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    raise NotExpressible(f"{where}: {key}: {_show(value)} is neither a class nor the name of one")


def _torch_class(name: str, key: str, where: str) -> str:
    """The short name of a ``torch.nn`` class (``Conv3d``), or a refusal naming ``key``."""
    module, _, short = name.rpartition(".")
    if module not in _TORCH_MODULES:
        raise NotExpressible(f"{where}: {key}: '{name}' is not a torch.nn class unetgen knows")
    return short


def _network_kind(class_name: str, where: str) -> str:
    module, _, short = class_name.rpartition(".")
    if short in NETWORK_CLASSES and (not module or module.startswith("dynamic_network_architectures.architectures")):
        return NETWORK_CLASSES[short]
    raise NotExpressible(
        f"{where}: network_class_name: '{class_name}': unetgen reproduces dynamic_network_architectures' "
        f"PlainConvUNet and ResidualEncoderUNet only{did_you_mean(short, NETWORK_CLASSES)}"
    )


def _per_stage(value: Any, count: int, key: str, where: str) -> list[int]:
    """One integer per stage from an integer or a list (DNA repeats a single integer)."""
    if _is_int(value):
        return [value] * count
    if isinstance(value, (list, tuple)) and len(value) == count and all(_is_int(v) for v in value):
        return list(value)
    raise NotExpressible(f"{where}: {key}: {_show(value)}; expected {count} integers, one per stage")


def _per_stage_axis(value: Any, count: int, dims: int, key: str, where: str) -> list[list[int]]:
    """One integer per axis per stage, from an integer, a list of integers or a list of lists."""
    if _is_int(value):
        return [[value] * dims for _ in range(count)]
    if isinstance(value, (list, tuple)) and len(value) == count:
        stages = []
        for entry in value:
            if _is_int(entry):
                stages.append([entry] * dims)
            elif isinstance(entry, (list, tuple)) and len(entry) == dims and all(_is_int(v) for v in entry):
                stages.append(list(entry))
            else:
                break
        else:
            return stages
    raise NotExpressible(f"{where}: {key}: {_show(value)}; expected {count} entries (one per stage) of {dims} integers")


def _uniform(values: list[int], key: str, where: str, what: str) -> int:
    if len(set(values)) != 1:
        raise NotExpressible(f"{where}: {key}: {_show(values)}: unetgen has one {what} for every level; "
                             "nnU-Net's planners write the same number for each")
    return values[0]


def _check_kwargs(given: Mapping[str, Any] | None, allowed: dict[str, Any], defaults: dict[str, Any], key: str,
                  where: str) -> dict[str, Any]:
    """The keyword arguments of an op with their defaults filled in; a keyword or value unetgen cannot reproduce is
    refused by name (``allowed`` maps each keyword to the one value unetgen has, or None for any)."""
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise NotExpressible(f"{where}: {key}: {_show(given)} is not a mapping of keyword arguments")
    values = dict(defaults)
    for name, value in given.items():
        if name not in allowed:
            raise NotExpressible(f"{where}: {key}.{name}: unetgen has no such option{did_you_mean(name, allowed)}")
        values[name] = value
    for name, wanted in allowed.items():
        if wanted is not None and name in values and values[name] != wanted:
            shown = "(the default)" if name not in given else ""
            raise NotExpressible(
                f"{where}: {key}.{name}: {_show(values[name])} {shown}".rstrip()
                + f"; unetgen reproduces {_show(wanted)} only"
            )
    return values


def _conv_dims(value: Any, where: str) -> int:
    name = _class_name(value, "conv_op", where)
    short = _torch_class(name, "conv_op", where)
    match = re.fullmatch(r"Conv([123])d", short)
    if not match:
        raise NotExpressible(f"{where}: conv_op: '{name}'; unetgen reproduces torch.nn.Conv1d, Conv2d and Conv3d")
    return int(match.group(1))


def _norm(value: Any, kwargs: Any, dims: int, where: str) -> str:
    if value is None:
        return "none"
    name = _class_name(value, "norm_op", where)
    short = _torch_class(name, "norm_op", where)
    match = re.fullmatch(r"(InstanceNorm|BatchNorm)([123])d", short)
    if not match:
        raise NotExpressible(
            f"{where}: norm_op: '{name}'; unetgen reproduces InstanceNorm and BatchNorm (or none)"
        )
    if int(match.group(2)) != dims:
        raise NotExpressible(f"{where}: norm_op: '{name}' is {match.group(2)}D but conv_op is {dims}D")
    kind = _NORM_CLASSES[match.group(1)]
    _check_kwargs(kwargs, _NORM_KWARGS[kind], _NORM_DEFAULTS[kind], "norm_op_kwargs", where)
    return kind


def _nonlin(value: Any, kwargs: Any, where: str) -> tuple[str, float]:
    if value is None:
        raise NotExpressible(f"{where}: nonlin: null (no activation); unetgen puts an activation after every norm")
    name = _class_name(value, "nonlin", where)
    short = _torch_class(name, "nonlin", where)
    if short not in _NONLINS:
        raise NotExpressible(
            f"{where}: nonlin: '{name}'; unetgen reproduces {', '.join(_NONLINS)}{did_you_mean(short, _NONLINS)}"
        )
    activation, allowed = _NONLINS[short]
    values = _check_kwargs(kwargs, allowed, {"negative_slope": 0.01} if short == "LeakyReLU" else {},
                           "nonlin_kwargs", where)
    slope = values.get("negative_slope", 0.01)
    if isinstance(slope, bool) or not isinstance(slope, (int, float)) or not 0 <= slope <= 1:
        raise NotExpressible(f"{where}: nonlin_kwargs.negative_slope: {_show(slope)}; unetgen takes 0 to 1")
    return activation, float(slope)


def _check_requires_import(kwargs: Mapping[str, Any], requires_import: Any, where: str) -> None:
    """A class named by text must be listed in ``_kw_requires_import``, or nnU-Net would pass the text itself."""
    if requires_import is None:
        return
    if not isinstance(requires_import, (list, tuple)) or not all(isinstance(k, str) for k in requires_import):
        raise NotExpressible(f"{where}: _kw_requires_import: {_show(requires_import)} is not a list of names")
    for key in requires_import:
        if key not in kwargs:
            raise NotExpressible(f"{where}: _kw_requires_import names '{key}', which arch_kwargs does not have")
    for key in _CLASS_KWARGS:
        if isinstance(kwargs.get(key), str) and key not in requires_import:
            raise NotExpressible(
                f"{where}: arch_kwargs.{key} names a class, but _kw_requires_import does not list it (nnU-Net "
                "would pass the text itself)"
            )


def _compact(per_axis: list[int]) -> int | list[int]:
    """``[3, 3, 3]`` → ``3``, as a spec writes a size that is the same on every axis."""
    return per_axis[0] if len(set(per_axis)) == 1 else per_axis


def _widths(features: list[int]) -> dict[str, Any]:
    """``width`` (and ``max_channels``) when they give exactly these widths, else ``channels``."""
    first, cap = features[0], max(features)
    doubling = [first * 2**level for level in range(len(features))]
    if features == [min(w, cap) for w in doubling]:
        return {"width": first} if cap == doubling[-1] else {"width": first, "max_channels": cap}
    return {"channels": list(features)}


def spec_from_architecture(
    network_class_name: str,
    arch_kwargs: Mapping[str, Any],
    *,
    in_channels: int,
    out_channels: int,
    heads: int | None = None,
    requires_import: list[str] | None = None,
    name: str = "nnunet",
    description: str = "",
    input_size: list[int] | None = None,
    where: str = "architecture",
) -> UNetSpec:
    """The unetgen spec of the network DNA builds from a class name and its keyword arguments.

    Args:
        network_class_name: ``PlainConvUNet`` or ``ResidualEncoderUNet``, bare or with DNA's module path (as a plans
            file's ``network_class_name``).
        arch_kwargs: the class's keyword arguments, as in a plans file (ops named by text) or as passed to DNA (ops
            as classes).
        in_channels: DNA's ``input_channels``.
        out_channels: DNA's ``num_classes``.
        heads: auxiliary heads (``deep_supervision``); default ``n_stages - 2``: DNA always builds a segmentation
            layer for every decoder stage, and nnU-Net trains with all of them.
        requires_import: the plans' ``_kw_requires_import``, when the classes are named by text.
        name: the spec's name.
        description: the spec's description.
        input_size: the spec's default input size (nnU-Net's patch size).
        where: what to call the architecture in error messages.

    Returns:
        The validated spec; the network it builds computes what DNA's does, with the weights moved by
        :func:`key_map`.

    Raises:
        NotExpressible: naming the class, keyword or value that unetgen cannot reproduce.
        SpecError: when the spec it would need is invalid (e.g. more levels than unetgen allows).
    """
    kind = _network_kind(_class_name(network_class_name, "network_class_name", where), where)
    if not isinstance(arch_kwargs, Mapping):
        raise NotExpressible(f"{where}: arch_kwargs: {_show(arch_kwargs)} is not a mapping")
    kwargs = dict(arch_kwargs)
    allowed = _KWARGS[kind]
    for key in kwargs:
        if key not in allowed:
            short = network_class_name.rpartition(".")[2]
            raise NotExpressible(f"{where}: arch_kwargs.{key}: not a keyword of {short} that unetgen knows"
                                 f"{did_you_mean(key, allowed)}")
    counts_key = "n_conv_per_stage" if kind == "plain" else "n_blocks_per_stage"
    for key in ("n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", counts_key,
                "n_conv_per_stage_decoder"):
        if key not in kwargs:
            raise NotExpressible(f"{where}: arch_kwargs has no '{key}', which DNA needs")
    _check_requires_import(kwargs, requires_import, where)
    stages = kwargs["n_stages"]
    if not _is_int(stages) or not 2 <= stages <= 12:
        raise NotExpressible(f"{where}: n_stages: {_show(stages)}; unetgen reproduces 2 to 12 stages")
    dims = _conv_dims(kwargs["conv_op"], where)
    features = _per_stage(kwargs["features_per_stage"], stages, "features_per_stage", where)
    kernels = _per_stage_axis(kwargs["kernel_sizes"], stages, dims, "kernel_sizes", where)
    strides = _per_stage_axis(kwargs["strides"], stages, dims, "strides", where)
    if any(s != 1 for s in strides[0]):
        raise NotExpressible(f"{where}: strides[0]: {_show(strides[0])}; unetgen's top level runs at the input's "
                             "resolution (nnU-Net's planners always write 1)")
    for index, kernel in enumerate(kernels):
        if any(k % 2 == 0 for k in kernel):
            raise NotExpressible(f"{where}: kernel_sizes[{index}]: {_show(kernel)}; unetgen's kernels are odd "
                                 "(centred)")
    counts = _per_stage(kwargs[counts_key], stages, counts_key, where)
    decoder = _per_stage(kwargs["n_conv_per_stage_decoder"], stages - 1, "n_conv_per_stage_decoder", where)
    decoder_convs = _uniform(decoder, "n_conv_per_stage_decoder", where, "decoder convolution count")
    conv_bias = kwargs.get("conv_bias", False)
    if not isinstance(conv_bias, bool):
        raise NotExpressible(f"{where}: conv_bias: {_show(conv_bias)}; expected true or false")
    norm = _norm(kwargs.get("norm_op"), kwargs.get("norm_op_kwargs"), dims, where)
    if kwargs.get("dropout_op") is not None:
        raise NotExpressible(
            f"{where}: dropout_op: '{_class_name(kwargs['dropout_op'], 'dropout_op', where)}'; unetgen's dropout "
            "follows a level's block, DNA's every convolution, so unetgen cannot reproduce it"
        )
    activation, slope = _nonlin(kwargs.get("nonlin"), kwargs.get("nonlin_kwargs"), where)
    if kwargs.get("nonlin_first", False) is not False:
        raise NotExpressible(f"{where}: nonlin_first: {_show(kwargs['nonlin_first'])}; unetgen puts the norm before "
                             "the activation")
    if not isinstance(kwargs.get("deep_supervision", False), bool):
        raise NotExpressible(f"{where}: deep_supervision: {_show(kwargs['deep_supervision'])}; expected true or false")
    data: dict[str, Any] = {"name": name}
    if description:
        data["description"] = description
    data.update(spatial_dims=dims, in_channels=in_channels, out_channels=out_channels, depth=stages)
    if kind == "plain":
        data["convs_per_level"] = _uniform(counts, counts_key, where, "convolution count")
        if decoder_convs != data["convs_per_level"]:
            data["decoder_convs"] = decoder_convs
    else:
        block = kwargs.get("block")
        if block is not None:
            block_name = _class_name(block, "block", where)
            if block_name.rpartition(".")[2] != "BasicBlockD" or not block_name.startswith(
                ("BasicBlockD", "dynamic_network_architectures.")
            ):
                raise NotExpressible(f"{where}: block: '{block_name}'; unetgen reproduces BasicBlockD only")
        if kwargs.get("bottleneck_channels") is not None:
            raise NotExpressible(f"{where}: bottleneck_channels: {_show(kwargs['bottleneck_channels'])}; it is "
                                 "for BottleneckD, which unetgen does not reproduce")
        stem = kwargs.get("stem_channels")
        if stem is not None and stem != features[0]:
            raise NotExpressible(f"{where}: stem_channels: {_show(stem)}; unetgen's stem has the first level's "
                                 f"width ({features[0]})")
        data["decoder_convs"] = decoder_convs
        data["encoder_blocks"] = counts
    data.update(_widths(features))
    data["padding"] = "same"
    kernel_entries = [_compact(k) for k in kernels]
    if any(entry != kernel_entries[0] or isinstance(entry, list) for entry in kernel_entries):
        data["kernel_sizes"] = kernel_entries
    elif kernel_entries[0] != 3:
        data["kernel_size"] = kernel_entries[0]
    pool_entries = [_compact(s) for s in strides[1:]]
    if any(entry != 2 for entry in pool_entries):
        data["pool_sizes"] = pool_entries
    data.update(norm=norm, conv_bias=conv_bias)
    if not conv_bias:
        data["up_bias"] = False
    data["activation"] = activation
    if activation == "leaky_relu":
        data["negative_slope"] = slope
    data["downsampling"] = "conv"
    data["deep_supervision"] = stages - 2 if heads is None else heads
    if input_size is not None:
        data["input_size"] = list(input_size)
    return spec_from_dict(data, source=f"{where} (as a unetgen spec)")


# --- plans.json and dataset.json -----------------------------------------------------------------------------------


def read_json(path: str | Path, what: str) -> Any:
    """A JSON file's contents; a missing or malformed file is a one-line user error naming ``what`` it should be."""
    path = Path(path)
    if not path.is_file():
        raise UNetGenError(f"{path}: no such file (the {what})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UNetGenError(f"{path}: not text; expected the {what} (JSON)") from None
    except json.JSONDecodeError as exc:
        raise UNetGenError(f"{path}: not JSON ({exc.msg} at line {exc.lineno}); expected the {what}") from None


def configuration(plans: Any, name: str, where: str) -> dict[str, Any]:
    """A configuration of a plans file with its ``inherits_from`` chain resolved (a shallow update of the parent by
    the child, as nnunetv2's ``PlansManager`` does).

    Raises:
        UNetGenError: when there is no such configuration, or the inheritance goes in a circle.
    """
    configurations = plans.get("configurations") if isinstance(plans, dict) else None
    if not isinstance(configurations, dict) or not configurations:
        raise UNetGenError(f"{where}: no 'configurations'; is this an nnU-Net plans file?")
    seen: list[str] = []
    chain: list[dict[str, Any]] = []
    current = name
    while True:
        if current not in configurations:
            names = list(configurations)
            if not seen:
                raise UNetGenError(f"{where}: no configuration '{name}'; the plans have {', '.join(names)}"
                                   f"{did_you_mean(name, names)}")
            raise UNetGenError(f"{where}: configuration '{seen[-1]}' inherits from '{current}', which is missing")
        if current in seen:
            raise UNetGenError(f"{where}: configurations inherit in a circle: {' → '.join(seen + [current])}")
        seen.append(current)
        entry = configurations[current]
        if not isinstance(entry, dict):
            raise UNetGenError(f"{where}: configuration '{current}' is not a mapping")
        chain.append(entry)
        if "inherits_from" not in entry:
            break
        current = entry["inherits_from"]
    resolved: dict[str, Any] = {}
    for entry in reversed(chain):
        resolved.update(entry)
    return resolved


def architecture(config: Mapping[str, Any], where: str) -> tuple[str, dict[str, Any], list[str] | None]:
    """A configuration's network: ``(network_class_name, arch_kwargs, _kw_requires_import)``.

    The ``architecture`` section (nnunetv2 ≥ 2.3), or the old flat keys converted as nnunetv2 2.8.1's
    ``ConfigurationManager`` does (features ``min(base · 2^i, max)``, biased convolutions, affine InstanceNorm with
    eps 1e-5, no dropout, LeakyReLU 0.01).

    Raises:
        NotExpressible: when neither is there or a key is missing.
    """
    if "architecture" in config:
        arch = config["architecture"]
        if not isinstance(arch, dict) or "network_class_name" not in arch or "arch_kwargs" not in arch:
            raise NotExpressible(f"{where}: architecture: expected network_class_name and arch_kwargs")
        return arch["network_class_name"], dict(arch["arch_kwargs"]), arch.get("_kw_requires_import")
    missing = [key for key in (*OLD_PLAN_KEYS, "patch_size") if key not in config]
    if missing:
        raise NotExpressible(f"{where}: neither an 'architecture' section nor the old plan keys (missing "
                             f"{', '.join(missing)})")
    class_name = config["UNet_class_name"]
    if class_name not in NETWORK_CLASSES:
        raise NotExpressible(f"{where}: UNet_class_name: {_show(class_name)}; unetgen reproduces PlainConvUNet and "
                             "ResidualEncoderUNet")
    encoder = config["n_conv_per_stage_encoder"]
    stages = len(encoder) if isinstance(encoder, list) else 0
    dims = len(config["patch_size"])
    base, cap = config["UNet_base_num_features"], config["unet_max_num_features"]
    if not (_is_int(base) and _is_int(cap)):
        raise NotExpressible(f"{where}: UNet_base_num_features and unet_max_num_features must be integers")
    counts = "n_conv_per_stage" if class_name == "PlainConvUNet" else "n_blocks_per_stage"
    kwargs = {
        "n_stages": stages,
        "features_per_stage": [min(base * 2**i, cap) for i in range(stages)],
        "conv_op": f"torch.nn.modules.conv.Conv{dims}d",
        "kernel_sizes": config["conv_kernel_sizes"],
        "strides": config["pool_op_kernel_sizes"],
        counts: encoder,
        "n_conv_per_stage_decoder": config["n_conv_per_stage_decoder"],
        "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    return class_name, kwargs, ["conv_op", "norm_op", "dropout_op", "nonlin"]


@dataclass(frozen=True)
class Labels:
    """What a dataset.json says about a network's input and output channels (nnunetv2's ``LabelManager``).

    Attributes:
        channels: image channels (``channel_names``, or the legacy ``modality``).
        heads: output channels: every label including background, or the foreground regions when a label is a list
            of more than one value (region training, with sigmoid outputs).
        foreground: the foreground labels, which a cascade's second stage also takes as input channels.
        regions: whether the outputs are regions.
    """

    channels: int
    heads: int
    foreground: int
    regions: bool


def dataset_labels(dataset_json: Any, where: str) -> Labels:
    """Channels and classes from a dataset.json, counted as nnunetv2 2.8.1 counts them.

    Raises:
        UNetGenError: when the file has no channel names or labels nnU-Net would accept.
    """
    if not isinstance(dataset_json, dict):
        raise UNetGenError(f"{where}: not a dataset.json (a mapping with channel_names and labels)")
    names = dataset_json.get("modality", dataset_json.get("channel_names"))
    if not isinstance(names, dict) or not names:
        raise UNetGenError(f"{where}: no channel_names; nnU-Net's dataset.json lists one per input channel")
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or "background" not in labels:
        raise UNetGenError(f"{where}: labels: expected a mapping with 'background': 0, as nnU-Net requires")

    def values(value: Any) -> list[int]:
        entries = value if isinstance(value, (list, tuple)) else [value]
        if not entries or not all(_is_int(v) for v in entries):
            raise UNetGenError(f"{where}: labels: {_show(value)} is neither a label nor a list of labels")
        return list(entries)

    used = {name: values(value) for name, value in labels.items() if name != "ignore"}
    regions = any(isinstance(labels[name], (list, tuple)) and len(labels[name]) > 1 for name in used)
    every = sorted({v for entries in used.values() for v in entries})
    foreground = [v for v in every if v != 0]
    if regions:
        heads = sum(1 for entries in used.values() if set(entries) != {0})
    else:
        heads = len(every)
    return Labels(len(names), heads, len(foreground), regions)


def spec_from_plans(
    plans: Any, configuration_name: str, dataset_json: Any, *, where: str = "plans.json",
    dataset_where: str = "dataset.json",
) -> UNetSpec:
    """The unetgen spec of one configuration of an nnU-Net plans file.

    Args:
        plans: the plans file's contents.
        configuration_name: ``2d``, ``3d_fullres``, ``3d_lowres``, ``3d_cascade_fullres`` or any other.
        dataset_json: the dataset.json's contents (input channels and classes).
        where: what to call the plans in messages (its file name).
        dataset_where: what to call the dataset.json in messages.

    Returns:
        The spec: nnU-Net's network with the configuration's patch size as its input size, and deep supervision on
        every decoder level below the top, as nnU-Net trains it.

    Raises:
        NotExpressible: naming what unetgen cannot reproduce.
        UNetGenError: when the plans or the dataset.json are not what nnU-Net would read.
    """
    config = configuration(plans, configuration_name, where)
    place = f"{where}: {configuration_name}"
    class_name, kwargs, requires = architecture(config, place)
    labels = dataset_labels(dataset_json, dataset_where)
    in_channels = labels.channels + (labels.foreground if config.get("previous_stage") else 0)
    dataset = plans.get("dataset_name", "nnunet") if isinstance(plans, dict) else "nnunet"
    plans_name = plans.get("plans_name", "plans") if isinstance(plans, dict) else "plans"
    short = str(class_name).rpartition(".")[2]
    patch = config.get("patch_size")
    input_size = list(patch) if isinstance(patch, list) and all(_is_int(p) for p in patch) else None
    cascade = f", after {config['previous_stage']} (its {labels.foreground} foreground labels as input channels)" if (
        config.get("previous_stage")) else ""
    outputs = "sigmoid regions" if labels.regions else "softmax classes"
    return spec_from_architecture(
        class_name, kwargs, in_channels=in_channels, out_channels=labels.heads, requires_import=requires,
        name=f"{dataset}_{configuration_name}"[:200],
        description=(f"nnU-Net {plans_name} configuration '{configuration_name}' ({short}{cascade}; "
                     f"{labels.heads} {outputs}), imported by unetgen")[:2000],
        input_size=input_size, where=place,
    )


# --- the key map ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRule:
    """One module with weights, under its unetgen name and its name in DNA's canonical state dict.

    Attributes:
        unetgen: the module's path in the unetgen network (``decoder.2.convs.conv0``).
        nnunet: its path in DNA (``decoder.stages.1.convs.0.conv``); the parameter names after it are the same.
        swap: for a decoder level's first convolution, ``(skip channels, up-sampled channels)``: unetgen concatenates
            ``[skip, up-sampled]``, DNA ``(up-sampled, skip)``, so the weight's input channels trade places.
    """

    unetgen: str
    nnunet: str
    swap: tuple[int, int] | None = None


_LEVEL = r"(?:encoder\.(?P<s>\d+)|(?P<bottom>bottleneck))"
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), template) for pattern, template in (
        (rf"^{_LEVEL}\.convs\.(?P<op>conv|norm)(?P<i>\d+)$", "encoder.stages.{s}.0.convs.{i}.{op}"),
        (r"^encoder\.0\.stem\.(?P<op>conv|norm)$", "encoder.stem.convs.0.{op}"),
        (rf"^{_LEVEL}\.blocks\.(?P<b>\d+)\.(?P<op>conv|norm)(?P<i>[12])$",
         "encoder.stages.{s}.blocks.{b}.conv{i}.{op}"),
        (rf"^{_LEVEL}\.blocks\.(?P<b>\d+)\.skip\.(?P<op>conv|norm)$", "encoder.stages.{s}.blocks.{b}.skip.{k}.{op}"),
        (r"^decoder\.(?P<l>\d+)\.up$", "decoder.transpconvs.{j}"),
        (r"^decoder\.(?P<l>\d+)\.convs\.(?P<op>conv|norm)(?P<i>\d+)$", "decoder.stages.{j}.convs.{i}.{op}"),
        (r"^decoder\.(?P<l>\d+)\.head$", "decoder.seg_layers.{j}"),
        (r"^head$", "decoder.seg_layers.{top}"),
    )
)


def key_map(plan: Plan) -> tuple[KeyRule, ...]:
    """Every module with weights of a planned network, with its name in DNA's canonical state dict.

    Encoder level ``s`` (``bottleneck`` = the last) is DNA's ``encoder.stages.{s}``; decoder level ``l`` (0 = top) is
    DNA's decoder stage ``j = depth − 2 − l`` (DNA counts from the bottleneck up); the main head is the last
    ``seg_layers``, an auxiliary head on level ``l`` is ``seg_layers.{j}``. A block's shortcut projection is
    ``skip.1`` after an average pool, ``skip.0`` without one. A unetgen ``convN``/``normN`` is DNA's ``convs.N.conv``
    / ``convs.N.norm`` (ResEnc blocks: ``conv1`` → ``conv1.conv``, ``norm1`` → ``conv1.norm``).

    Args:
        plan: the network's plan.

    Returns:
        One rule per module with weights (convolutions, transposed convolutions, norms), in the plan's order.

    Raises:
        NotExpressible: for a module DNA has no counterpart of (a residual level's body, a PReLU's weight).
    """
    depth = plan.depth
    names = {layer.name: layer for layer in plan.layers}
    rules = []
    for layer in plan.layers:
        if layer.kind not in ("conv", "conv_transpose", "norm") and not layer.params:
            continue
        for pattern, template in _RULES:
            match = pattern.match(layer.name)
            if match and layer.kind in ("conv", "conv_transpose", "norm"):
                break
        else:
            raise NotExpressible(f"{layer.name}: a {layer.kind} layer nnU-Net's networks have no counterpart of")
        groups = match.groupdict()
        s = str(depth - 1) if groups.get("bottom") else groups.get("s")
        level = groups.get("l")
        j = str(depth - 2 - int(level)) if level is not None else None
        pooled = layer.name.rsplit(".", 1)[0] + ".pool"
        nnunet = template.format(
            s=s, i=groups.get("i"), op=groups.get("op"), b=groups.get("b"), j=j, top=depth - 2,
            k=1 if pooled in names else 0,
        )
        swap = None
        if level is not None and groups.get("op") == "conv" and groups.get("i") == "0":
            concat = names.get(f"decoder.{level}.concat")
            if concat is not None:
                skip, up = (names[source].shape[0] for source in concat.inputs)
                swap = (skip, up)
        rules.append(KeyRule(layer.name, nnunet, swap))
    return tuple(rules)


def canonical_weights(weights: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """DNA's state dict without its aliases: the encoder registered again inside the decoder (``decoder.encoder.``)
    and every conv unit's ``all_modules`` (the same modules in a Sequential). Prefixes that ``DataParallel`` and
    ``torch.compile`` add (``module.``, ``_orig_mod.``) are removed."""
    result = {}
    for key, value in weights.items():
        key = str(key)
        for prefix in ("module.", "_orig_mod."):
            key = key.removeprefix(prefix)
        if key.startswith("decoder.encoder.") or ".all_modules." in key:
            continue
        result[key] = value
    return result


def _swapped(weight: torch.Tensor, first: int) -> torch.Tensor:
    """The weight with its first ``first`` input channels moved after the others."""
    return torch.cat([weight[:, first:], weight[:, :first]], dim=1)


def load_nnunet_weights(
    model: UNet, weights: Mapping[str, Any], *, unused_heads: bool = False, where: str = "weights"
) -> list[str]:
    """Move DNA's weights into a unetgen network by :func:`key_map`, every tensor checked.

    Args:
        model: the network of :func:`spec_from_architecture` (or :func:`spec_from_plans`).
        weights: DNA's state dict (aliases and ``module.`` prefixes are dropped).
        unused_heads: accept segmentation layers the unetgen network has no head for (DNA builds one for every
            decoder stage even without deep supervision), and leave them out.
        where: what to call the weights in messages (the checkpoint's file name).

    Returns:
        The DNA keys left out (unused heads' weights).

    Raises:
        CheckpointError: when a weight is missing, left over, or of another shape, naming it.
    """
    state = canonical_weights(weights)
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    covered: set[str] = set()
    used: set[str] = set()
    missing, wrong = [], []
    for rule in key_map(model.plan):
        prefix = rule.unetgen + "."
        for key in own:
            if not key.startswith(prefix) or "." in key[len(prefix):]:
                continue
            covered.add(key)
            suffix = key[len(prefix):]
            source = f"{rule.nnunet}.{suffix}"
            value = state.get(source)
            if not isinstance(value, torch.Tensor):
                missing.append(source)
                continue
            used.add(source)
            if rule.swap is not None and suffix == "weight" and value.dim() > 1:
                value = _swapped(value, rule.swap[1])
            if value.shape != own[key].shape:
                wrong.append(f"{source} has shape {tuple(value.shape)}, unetgen's {key} needs {tuple(own[key].shape)}")
                continue
            mapped[key] = value
    uncovered = [key for key in own if key not in covered]
    if uncovered:
        raise NotExpressible(f"{where}: DNA has no counterpart of {', '.join(uncovered[:3])}")
    left = [key for key in state if key not in used]
    dropped = [key for key in left if unused_heads and key.startswith("decoder.seg_layers.")]
    left = [key for key in left if key not in dropped]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    if left:
        problems.append(f"unexpected {', '.join(left[:3])}{' ...' if len(left) > 3 else ''}")
    problems += wrong[:3]
    if problems:
        raise CheckpointError(f"{where}: the weights are not those of '{model.spec.name}': {'; '.join(problems)}")
    model.load_state_dict(mapped, strict=True)
    return dropped


def nnunet_weights(model: UNet) -> dict[str, torch.Tensor]:
    """The network's weights under DNA's canonical keys (the reverse of :func:`load_nnunet_weights`): load them into
    the DNA network of :func:`architecture_from_spec` with ``strict=False`` (DNA's aliases are the only keys left
    missing, and the segmentation layers of levels without a unetgen head).

    Raises:
        NotExpressible: for a module DNA has no counterpart of.
    """
    own = model.state_dict()
    result = {}
    for rule in key_map(model.plan):
        prefix = rule.unetgen + "."
        for key, value in own.items():
            if key.startswith(prefix) and "." not in key[len(prefix):]:
                suffix = key[len(prefix):]
                if rule.swap is not None and suffix == "weight" and value.dim() > 1:
                    value = _swapped(value, rule.swap[0])
                result[f"{rule.nnunet}.{suffix}"] = value
    return result


# --- checkpoints ---------------------------------------------------------------------------------------------------


def _numpy_globals() -> list[Any]:
    """The numpy classes an nnU-Net checkpoint pickles (its training log holds numpy scalars), allowed by name so that
    ``torch.load(weights_only=True)`` reads it; under numpy 1 the scalar was ``numpy.core.multiarray.scalar``."""
    try:
        from numpy._core import multiarray  # numpy 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core import multiarray  # type: ignore[no-redef]
    found: list[Any] = [multiarray.scalar, np.dtype, (multiarray.scalar, "numpy.core.multiarray.scalar")]
    dtypes = getattr(np, "dtypes", None)
    for name in ("Float32DType", "Float64DType", "Float16DType", "Int64DType", "Int32DType", "BoolDType"):
        if dtypes is not None and hasattr(dtypes, name):
            found.append(getattr(dtypes, name))
    return found


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """An nnU-Net checkpoint (``checkpoint_final.pth``) read safely: ``torch.load(weights_only=True)``, with only
    the numpy classes of its training log allowed besides torch's own, so no code in the file can run.

    Args:
        path: the file.

    Returns:
        Its contents: ``network_weights`` (the state dict), ``init_args`` (plans, configuration, dataset.json),
        ``trainer_name``, ``current_epoch`` and the rest.

    Raises:
        CheckpointError: when the file is missing, unreadable, or not an nnU-Net checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:  # pragma: no cover - torch < 2.5
        raise CheckpointError(f"{path}: reading an nnU-Net checkpoint safely needs torch 2.5 or later")
    try:
        with safe_globals(_numpy_globals()):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds here: truncated zip, pickle, a global not allowed
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable nnU-Net checkpoint ({first[:160]})") from None
    weights = payload.get("network_weights") if isinstance(payload, dict) else None
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: not an nnU-Net checkpoint (no network_weights)")
    return payload


# --- the import command --------------------------------------------------------------------------------------------


@dataclass
class Imported:
    """An nnU-Net configuration as unetgen has it.

    Attributes:
        spec: the spec.
        configuration: the configuration's name.
        network_class: DNA's class (``PlainConvUNet``).
        model: the network with the checkpoint's weights, or None without a checkpoint.
        checkpoint: what the checkpoint says about itself (trainer, epoch, fold), for the report.
    """

    spec: UNetSpec
    configuration: str
    network_class: str
    model: UNet | None = None
    checkpoint: dict[str, Any] = field(default_factory=dict)


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The path of the first value that differs between two JSON-like values."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            found = _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b)):
            found = _first_difference(x, y, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    return None if a == b else path or "(the whole value)"


def import_nnunet(
    plans_path: str | Path,
    configuration_name: str,
    *,
    dataset_json: str | Path | None = None,
    checkpoint: str | Path | None = None,
) -> Imported:
    """Read an nnU-Net configuration (and its trained weights) as a unetgen spec (and network).

    Args:
        plans_path: the plans file (``nnUNetPlans.json``, or ``plans.json`` of a trained model's folder).
        configuration_name: the configuration.
        dataset_json: the dataset.json; default: the one stored in the checkpoint.
        checkpoint: an nnU-Net checkpoint (``fold_0/checkpoint_final.pth``) of that configuration.

    Returns:
        The spec, and with a checkpoint the network with its weights.

    Raises:
        NotExpressible: naming what unetgen cannot reproduce.
        CheckpointError: when the checkpoint is unreadable or its weights do not fit the plans.
        UNetGenError: when a file is missing or not what nnU-Net writes.
    """
    plans = read_json(plans_path, "nnU-Net plans")
    where = str(plans_path)
    payload = read_checkpoint(checkpoint) if checkpoint is not None else None
    init_args = payload.get("init_args") if isinstance(payload, dict) else None
    init_args = init_args if isinstance(init_args, dict) else {}
    if payload is not None:
        trained = init_args.get("configuration")
        if isinstance(trained, str) and trained != configuration_name:
            raise CheckpointError(f"{checkpoint}: trained as configuration '{trained}', not '{configuration_name}'; "
                                  f"give --configuration {trained}")
        stored = init_args.get("plans")
        if isinstance(stored, dict):
            ours = configuration(plans, configuration_name, where).get("architecture")
            theirs = configuration(stored, configuration_name, f"{checkpoint} (its plans)").get("architecture")
            differs = _first_difference(ours, theirs)
            if differs is not None:
                raise CheckpointError(
                    f"{checkpoint}: trained with another architecture than {where} '{configuration_name}' "
                    f"(architecture.{differs} differs); give the plans.json of the model's folder"
                )
    if dataset_json is not None:
        dataset = read_json(dataset_json, "nnU-Net dataset.json")
        dataset_where = str(dataset_json)
    elif isinstance(init_args.get("dataset_json"), dict):
        dataset, dataset_where = init_args["dataset_json"], f"{checkpoint} (its dataset.json)"
    else:
        raise UNetGenError(f"{where}: the plans do not say the input channels and classes; give --dataset-json "
                           "(the dataset.json beside the plans)")
    spec = spec_from_plans(plans, configuration_name, dataset, where=where, dataset_where=dataset_where)
    config = configuration(plans, configuration_name, where)
    class_name = str(architecture(config, where)[0]).rpartition(".")[2]
    result = Imported(spec, configuration_name, class_name)
    if payload is not None:
        model = build(spec)
        load_nnunet_weights(model, payload["network_weights"], where=str(checkpoint))
        result.model = model
        result.checkpoint = {
            "file": str(checkpoint),
            "trainer": payload.get("trainer_name"),
            "epoch": payload.get("current_epoch"),
            "fold": init_args.get("fold"),
            "tensors": len(canonical_weights(payload["network_weights"])),
        }
    return result


def import_targets(out: str | Path, configuration_name: str) -> tuple[Path, Path]:
    """Where :func:`write_import` writes: ``(spec, checkpoint)``. ``out`` is a ``.yaml`` file (the checkpoint goes
    beside it, ending ``.pt``) or a folder (``<configuration>.yaml`` and ``<configuration>.pt`` in it)."""
    out = Path(out)
    if out.suffix.lower() in (".yaml", ".yml"):
        return out, out.with_suffix(".pt")
    return out / f"{configuration_name}.yaml", out / f"{configuration_name}.pt"


def write_import(imported: Imported, out: str | Path, *, source: str = "") -> list[Path]:
    """Write the spec (and the network's checkpoint) of an import, both or neither.

    Args:
        imported: from :func:`import_nnunet`.
        out: a ``.yaml`` file, or a folder (made if its parent exists): see :func:`import_targets`.
        source: where it came from, for the spec file's first comment line.

    Returns:
        The files written: the spec, then the checkpoint if there is one.

    Raises:
        UNetGenError: when the files cannot be written.
    """
    spec_path, model_path = import_targets(out, imported.configuration)
    if spec_path.parent == Path(out) and not Path(out).is_dir():
        with writing(Path(out)):
            if not Path(out).parent.is_dir():
                raise UNetGenError(f"{out}: folder {Path(out).parent} does not exist; create it first")
            Path(out).mkdir()
    check_target(spec_path)
    text = f"# nnU-Net {imported.network_class}{f' from {source}' if source else ''}, by unetgen import nnunet\n"
    fields = imported.spec.model_dump(mode="json", exclude_defaults=True)
    text += yaml.safe_dump(fields, sort_keys=False, default_flow_style=None, width=120)
    with staging(spec_path) as stage:
        with writing(spec_path):
            stage.path("spec.yaml").write_text(text, encoding="utf-8")
        moves = [("spec.yaml", spec_path)]
        if imported.model is not None:
            save(imported.model, stage.path("model.pt"))
            moves.insert(0, ("model.pt", model_path))
        stage.commit(moves)
    return [spec_path] + ([model_path] if imported.model is not None else [])


# --- a unetgen spec → nnU-Net's architecture ------------------------------------------------------------------------


def _refuse(spec_name: str, what: str) -> NotExpressible:
    return NotExpressible(f"{spec_name}: {what}; nnU-Net's networks cannot express it")


def _level_layers(layers: tuple[Layer, ...], prefix: str, pattern: str) -> list[Layer]:
    """The layers named ``prefix`` followed by ``pattern`` (a regular expression), in order."""
    return [layer for layer in layers if re.fullmatch(re.escape(prefix) + pattern, layer.name)]


def architecture_from_spec(spec: UNetSpec | str | Plan) -> dict[str, Any]:
    """The nnU-Net ``architecture`` section of a plans configuration that builds the same network as a spec.

    Read from the plan's layers. Input channels and classes are not part of it: nnU-Net takes them from the
    dataset.json (``channel_names``, ``labels``), and deep supervision from its trainer (DNA always builds every
    segmentation layer).

    Args:
        spec: a spec, a preset name or YAML path, or a plan.

    Returns:
        ``{"network_class_name", "arch_kwargs", "_kw_requires_import"}`` as nnU-Net's planners write it.

    Raises:
        NotExpressible: one line naming the first thing nnU-Net cannot express (valid padding, max- or
            average-pool down-sampling, interpolating up-sampling, dropout, a final activation, ``output: same``, …).
    """
    plan = spec if isinstance(spec, Plan) else make_plan(load_spec(spec))
    name = plan.spec.name
    layers = plan.layers
    by_name = {layer.name: layer for layer in layers}
    kinds = {layer.kind for layer in layers}
    dims = len(plan.input_size)
    if any(".body." in layer.name or layer.name.endswith(".projection") for layer in layers):
        raise _refuse(name, "block: residual (unetgen's residual levels are not DNA's; nnU-Net's residual encoder "
                            "is encoder_blocks)")
    if plan.same_output:
        raise _refuse(name, "output: same (the network mirrors its input to a size it takes; DNA takes only those "
                            "sizes, nnU-Net's predictor pads the image itself): set output: crop")
    if "max_pool" in kinds:
        raise _refuse(name, "downsampling: maxpool (nnU-Net's encoders stride their first convolution): set "
                            "downsampling: conv")
    if any(layer.kind == "avg_pool" and ".skip." not in layer.name for layer in layers):
        raise _refuse(name, "downsampling: avgpool (nnU-Net's encoders stride their first convolution): set "
                            "downsampling: conv")
    if "upsample" in kinds:
        raise _refuse(name, "upsampling: upsample_conv (nnU-Net up-samples by transposed convolution)")
    if "dropout" in kinds:
        raise _refuse(name, "dropout (DNA puts dropout after every convolution, unetgen after a level's block)")
    if "final" in kinds:
        raise _refuse(name, "final_activation (DNA returns logits; nnU-Net's predictor applies softmax or sigmoid)")
    for layer in layers:
        if layer.kind == "conv" and layer.pads != tuple(((k - 1) // 2,) * 2 for k in layer.kernel):
            raise _refuse(name, f"padding: valid ({layer.name} is unpadded; DNA pads every convolution by kernel // 2)")
        if layer.kind == "conv" and any(layer.pads[axis][0] for axis in range(dims)) and layer.mode != "zeros":
            raise _refuse(name, f"padding_mode: {layer.mode} (DNA pads with zeros)")
        if layer.kind == "norm" and layer.mode not in _NORM_NAMES:
            raise _refuse(name, f"norm: {layer.mode} (DNA's norm_op takes the channels alone: instance or batch)")
        if layer.kind == "act" and layer.mode not in _ACTIVATION_CLASSES:
            raise _refuse(name, f"activation: {layer.mode} (a learned slope per network)")
    residual = "encoder.0.stem.conv" in by_name
    depth = plan.depth
    features, kernels, strides, counts = [], [], [], []
    biases: set[bool] = set()
    for level in range(depth):
        prefix = f"encoder.{level}" if level < depth - 1 else "bottleneck"
        if residual:
            firsts = _level_layers(layers, prefix, r"\.blocks\.\d+\.conv1")
            convs = _level_layers(layers, prefix, r"\.blocks\.\d+\.conv[12]")
            counts.append(len(firsts))
        else:
            firsts = convs = _level_layers(layers, prefix, r"\.convs\.conv\d+")
            counts.append(len(convs))
        widths = {conv.shape[0] for conv in convs}
        if len(widths) != 1:
            raise _refuse(name, f"channels: {prefix}'s convolutions have widths {'/'.join(map(str, sorted(widths)))} "
                                "(DNA gives a stage one width)")
        features.append(convs[0].shape[0])
        kernels.append(list(convs[0].kernel))
        strides.append(list(firsts[0].stride))
        biases |= {conv.bias for conv in convs}
    decoder_counts, up_biases = [], set()
    for level in reversed(range(depth - 1)):
        up = by_name[f"decoder.{level}.up"]
        if up.shape[0] != features[level]:
            raise _refuse(name, f"up_channels: keep (decoder.{level}.up gives {up.shape[0]} channels; DNA's gives "
                                f"the level's {features[level]})")
        convs = _level_layers(layers, f"decoder.{level}", r"\.convs\.conv\d+")
        decoder_counts.append(len(convs))
        biases |= {conv.bias for conv in convs}
        up_biases.add(up.bias)
    if len(biases) != 1:
        raise _refuse(name, "convolutions with and without bias (DNA has one conv_bias)")
    if up_biases != biases:
        raise _refuse(name, f"up_bias: {str(up_biases.pop()).lower()} with conv_bias: {str(biases.pop()).lower()} "
                            "(DNA gives the up-convolutions conv_bias)")
    norms = {layer.mode for layer in layers if layer.kind == "norm"}
    acts = {(layer.mode, layer.value) for layer in layers if layer.kind == "act"}
    (activation, slope), = acts  # one activation everywhere: the spec has one
    kwargs: dict[str, Any] = {
        "n_stages": depth,
        "features_per_stage": features,
        "conv_op": f"torch.nn.modules.conv.Conv{dims}d",
        "kernel_sizes": kernels,
        "strides": strides,
        "n_blocks_per_stage" if residual else "n_conv_per_stage": counts,
        "n_conv_per_stage_decoder": decoder_counts,
        "conv_bias": biases.pop(),
        "norm_op": None,
        "norm_op_kwargs": None,
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": f"torch.nn.{_ACTIVATION_CLASSES[activation]}",
        "nonlin_kwargs": {} if activation == "gelu" else {"inplace": True},
    }
    if norms:
        (norm,) = norms
        kwargs["norm_op"] = f"{_NORM_MODULES[norm]}.{_NORM_NAMES[norm]}{dims}d"
        kwargs["norm_op_kwargs"] = {"eps": 1e-05, "affine": True}
    if activation == "leaky_relu" and slope != 0.01:
        kwargs["nonlin_kwargs"]["negative_slope"] = slope
    class_name = "ResidualEncoderUNet" if residual else "PlainConvUNet"
    result = {
        "network_class_name": f"dynamic_network_architectures.architectures.unet.{class_name}",
        "arch_kwargs": kwargs,
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    # The guard: the spec nnU-Net's architecture gives back must plan the very same layers.
    heads = sum(layer.auxiliary for layer in layers)
    again = spec_from_architecture(
        result["network_class_name"], kwargs, in_channels=plan.input_shape[0], out_channels=plan.output_shape[0],
        heads=heads, requires_import=result["_kw_requires_import"], where=name,
    )
    theirs = make_plan(again, plan.input_size).layers
    for index, ours in enumerate(layers):
        if index >= len(theirs) or ours != theirs[index]:
            raise _refuse(name, f"{ours.name} (the nearest nnU-Net network differs there)")
    if len(theirs) != len(layers):
        raise _refuse(name, f"{theirs[len(layers)].name} (the nearest nnU-Net network has it)")
    return result


__all__ = [
    "NotExpressible", "spec_from_architecture", "spec_from_plans", "configuration", "architecture",
    "dataset_labels", "Labels", "KeyRule", "key_map", "canonical_weights", "load_nnunet_weights", "nnunet_weights",
    "read_checkpoint", "Imported", "import_nnunet", "import_targets", "write_import", "architecture_from_spec",
    "read_json",
]
