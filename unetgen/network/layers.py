"""Planned layer → torch module: the only place where a layer kind becomes a torch class, and the blocks' modules.

Modules here receive the plan's layers (integers and names), never the spec; every crop and pad comes from the plan.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..planning.plan import Layer

CONV: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_TRANSPOSE: dict[int, type[nn.Module]] = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
MAX_POOL: dict[int, type[nn.Module]] = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
AVG_POOL: dict[int, type[nn.Module]] = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
BATCH_NORM: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
INSTANCE_NORM: dict[int, type[nn.Module]] = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
FINAL: dict[str, Callable[[], nn.Module]] = {"sigmoid": nn.Sigmoid, "softmax": lambda: nn.Softmax(dim=1)}

def make_module(layer: Layer, dims: int) -> nn.Module | None:
    """The torch module of one planned layer (None for kinds that are no module: concat, add, input).

    This is the only place where a layer kind becomes a torch class.

    Args:
        layer: the layer, from the plan.
        dims: spatial dimensions (1, 2 or 3).

    Returns:
        A new module with PyTorch's default initialisation, or None.
    """
    kind = layer.kind
    cout = layer.shape[0]
    if kind == "conv":
        if any(a != b for a, b in layer.pads):
            raise ValueError(f"{layer.name}: torch convolutions pad both sides alike, got {layer.pads}")
        padding = tuple(a for a, _ in layer.pads)
        return CONV[dims](layer.cin, cout, layer.kernel, stride=layer.stride, padding=padding,
                          padding_mode=layer.mode, bias=layer.bias)
    if kind == "conv_transpose":
        if layer.pads:  # a kernel wider than the stride: padding, and output padding at the far end
            padding, extra = tuple(p for p, _ in layer.pads), tuple(e for _, e in layer.pads)
            return CONV_TRANSPOSE[dims](layer.cin, cout, layer.kernel, stride=layer.stride, padding=padding,
                                        output_padding=extra, bias=layer.bias)
        return CONV_TRANSPOSE[dims](layer.cin, cout, layer.kernel, stride=layer.stride, bias=layer.bias)
    if kind == "max_pool":
        return MAX_POOL[dims](layer.kernel, stride=layer.stride)
    if kind == "avg_pool":
        return AVG_POOL[dims](layer.kernel, stride=layer.stride)
    if kind == "upsample":
        align = None if layer.mode == "nearest" else False
        return nn.Upsample(scale_factor=tuple(float(f) for f in layer.stride), mode=layer.mode, align_corners=align)
    if kind == "pad":
        return Pad(list(layer.pads), layer.mode)
    if kind == "crop":
        return CentreCrop(list(layer.crop))
    if kind == "norm":
        return _norm(layer.mode, dims, cout, layer.groups, affine=layer.params > 0)
    if kind == "act":
        return _activation(layer.mode, layer.value)
    if kind == "dropout":
        return nn.Dropout(layer.value)
    if kind == "final":
        return FINAL[layer.mode]()
    if kind == "mirror":
        return MirrorPad()
    if kind == "output_crop":
        return OutputCrop()
    return None


def _norm(kind: str, dims: int, channels: int, groups: int, affine: bool = True) -> nn.Module:
    """A norm with a learned scale and shift (``affine``) when the plan counts parameters for it."""
    if kind == "batch":
        return BATCH_NORM[dims](channels, affine=affine)
    if kind == "instance":
        return INSTANCE_NORM[dims](channels, affine=affine)
    return nn.GroupNorm(groups, channels, affine=affine)  # group, and layer (one group)


def _activation(kind: str, negative_slope: float) -> nn.Module:
    """Activations that can overwrite their input do (``inplace=True``, as hand-written U-Nets do): the map they read
    is the norm's or the convolution's output, which nothing else reads, and a new map is memory the system must
    supply afresh on every pass. The plan (``IN_PLACE_ACTIVATIONS``) and the costs count exactly these as in place.
    """
    table: dict[str, Callable[[], nn.Module]] = {
        "relu": lambda: nn.ReLU(inplace=True),
        "leaky_relu": lambda: nn.LeakyReLU(negative_slope, inplace=True),
        "elu": lambda: nn.ELU(inplace=True),
        "gelu": nn.GELU,
        "silu": lambda: nn.SiLU(inplace=True),
        "prelu": nn.PReLU,
        "sigmoid": nn.Sigmoid,  # an attention gate's map
    }
    return table[kind]()


def modules_under(layers: tuple[Layer, ...], prefix: str, dims: int) -> OrderedDict[str, nn.Module]:
    """The modules of the layers whose names start with ``prefix``, named by the rest of their names."""
    result: OrderedDict[str, nn.Module] = OrderedDict()
    for layer in layers:
        if layer.name.startswith(prefix) and "." not in layer.name[len(prefix):]:
            module = make_module(layer, dims)
            if module is not None:
                result[layer.name[len(prefix):]] = module
    return result


def own_module(layers: tuple[Layer, ...], name: str, dims: int) -> nn.Module | None:
    """The module of the layer called ``name``, or None when the plan has no such layer."""
    for layer in layers:
        if layer.name == name:
            return make_module(layer, dims)
    return None


def crop(x: torch.Tensor, margins: List[Tuple[int, int]]) -> torch.Tensor:
    """Drop ``(before, after)`` pixels along each spatial axis of ``x`` (a view, no copy)."""
    for axis, (before, after) in enumerate(margins):
        if before > 0 or after > 0:
            x = x.narrow(axis + 2, before, x.shape[axis + 2] - before - after)
    return x


class CentreCrop(nn.Module):
    """Crop fixed margins off each spatial axis (the paper's copy-and-crop of a skip connection)."""

    def __init__(self, margins: list[tuple[int, int]]) -> None:
        """Args:
        margins: ``(before, after)`` pixels to drop along each spatial axis, from the plan.
        """
        super().__init__()
        self.margins: List[Tuple[int, int]] = [(int(a), int(b)) for a, b in margins]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return crop(x, self.margins)

    def extra_repr(self) -> str:
        return f"margins={self.margins}"


class Pad(nn.Module):
    """Pad fixed amounts on each spatial axis (the far side of ``upsample_conv``'s convolution)."""

    def __init__(self, pads: list[tuple[int, int]], mode: str) -> None:
        """Args:
        pads: ``(before, after)`` per spatial axis.
        mode: a ``torch.nn.functional.pad`` mode (constant, reflect, replicate, circular).
        """
        super().__init__()
        flat: List[int] = []
        for before, after in reversed(pads):  # F.pad lists the last axis first
            flat += [int(before), int(after)]
        self.flat = flat
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.flat, mode=self.mode)

    def extra_repr(self) -> str:
        return f"pads={self.flat}, mode={self.mode!r}"


class ConvBlock(nn.Sequential):
    """``n`` × [conv → norm → activation] (then dropout): the body of every level (Ronneberger et al. 2015, Fig. 1)."""


class ResidualBlock(nn.Module):
    """[conv → norm → act] × (n − 1) → conv → norm, plus the (projected, centre-cropped) input, → act (→ dropout)."""

    def __init__(
        self, body: nn.Module, projection: nn.Module | None, crop: nn.Module, act: nn.Module, dropout: nn.Module | None
    ) -> None:
        """Args:
        body: conv → norm → act, …, conv → norm (no activation after the last).
        projection: a 1×1 convolution when the widths differ, else None.
        crop: centre crop of the shortcut to the body's output (valid convolutions), margins from the plan.
        act: applied after the sum.
        dropout: after the block, or None.
        """
        super().__init__()
        self.body = body
        self.projection = projection if projection is not None else nn.Identity()
        self.crop = crop
        self.act = act
        self.dropout = dropout if dropout is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.act(self.body(x) + self.crop(self.projection(x))))


class ResidualBlockD(nn.Module):
    """nnU-Net's BasicBlockD (Isensee et al. 2024, ``dynamic-network-architectures``): conv → norm → act → conv →
    norm, plus the shortcut (average pool → 1×1 conv → norm where the block strides or widens), → act."""

    def __init__(self, layers: OrderedDict[str, nn.Module], skip: OrderedDict[str, nn.Module]) -> None:
        """Args:
        layers: ``conv1, norm1, act1, conv2, norm2, act2`` (without the norms when there is none), from the plan.
        skip: the shortcut's ``pool``, ``conv``, ``norm`` (empty: the identity).
        """
        super().__init__()
        self.conv1 = layers["conv1"]
        self.norm1 = layers.get("norm1", nn.Identity())
        self.act1 = layers["act1"]
        self.conv2 = layers["conv2"]
        self.norm2 = layers.get("norm2", nn.Identity())
        self.skip = nn.Sequential(skip) if skip else nn.Identity()
        self.act2 = layers["act2"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        body = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        return self.act2(body + self.skip(x))


class UpsampleConv(nn.Sequential):
    """×f interpolation, then an f-wide convolution padded by f − 1 at the far side: exactly f times the size."""


class UpConv(nn.Sequential):
    """A transposed convolution, then the network's norm and activation (MONAI's AttentionUnet ``UpConv``)."""


class MirrorPad(nn.Module):
    """Reflect-pad in rounds the plan works out per input size (``output: same``): the paper's mirroring."""

    def forward(self, x: torch.Tensor, rounds: List[List[int]]) -> torch.Tensor:
        for flat in rounds:
            x = F.pad(x, flat, mode="reflect")
        return x


class OutputCrop(nn.Module):
    """Crop the core's output back to the input's size, by margins the plan works out per input size."""

    def forward(self, x: torch.Tensor, margins: List[Tuple[int, int]]) -> torch.Tensor:
        return crop(x, margins)


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018): the skip times a one-channel sigmoid map computed from the skip
    and a gating signal, ``x × σ(psi(relu(key(x) + query(g))))``. The plan says which design: MONAI's (the gating
    signal is the up-sampled map; key, query and psi normalised) or Oktay et al.'s grid gate (the gating signal is
    the map below; the key strides onto its grid, the map is up-sampled back, then ``out``, a 1×1 convolution and
    norm). Every size comes from the plan: nothing is resampled to a size worked out here."""

    def __init__(self, layers: OrderedDict[str, nn.Module]) -> None:
        """Args:
        layers: the gate's modules by name, from the plan: ``key``, ``query``, ``act``, ``psi``, ``sigmoid``, and
            as the design has them ``key_norm``, ``query_norm``, ``psi_norm``, ``resample``, ``out``, ``out_norm``.
        """
        super().__init__()
        identity = nn.Identity
        self.key = layers["key"]
        self.key_norm = layers.get("key_norm", identity())
        self.query = layers["query"]
        self.query_norm = layers.get("query_norm", identity())
        self.act = layers["act"]
        self.psi = layers["psi"]
        self.psi_norm = layers.get("psi_norm", identity())
        self.sigmoid = layers["sigmoid"]
        self.resample = layers.get("resample", identity())
        self.out = layers.get("out", identity())
        self.out_norm = layers.get("out_norm", identity())

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Gate the skip ``x`` by the gating signal ``g``."""
        # One expression, so that each intermediate map is freed as soon as it has been read (as the plan counts).
        return self.out_norm(self.out(x * self.map(x, g)))

    def map(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The attention map: one channel, the skip's size, from 0 to 1."""
        return self.resample(self.sigmoid(self.psi_norm(self.psi(
            self.act(self.key_norm(self.key(x)) + self.query_norm(self.query(g)))))))


class MultiGate(nn.Module):
    """Oktay et al.'s MultiAttentionBlock (``gates_per_level: 2``): two attention gates on the same skip and gating
    signal, their outputs concatenated and combined by a 1×1 convolution, norm and activation."""

    def __init__(self, gates: list[AttentionGate], combine: nn.Module) -> None:
        """Args:
        gates: the gates (``gate.gates.0``, ``gate.gates.1``).
        combine: the 1×1 convolution, norm and activation, in a row (``gate.combine``).
        """
        super().__init__()
        self.gates = nn.ModuleList(gates)
        self.combine = combine

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Gate the skip ``x`` by ``g`` with each gate and combine the outputs."""
        gated: List[torch.Tensor] = []
        for gate in self.gates:
            gated.append(gate(x, g))
        return self.combine(torch.cat(gated, dim=1))


class NoGate(nn.Module):
    """The skip as it is (a level without an attention gate)."""

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x


class NestedNode(nn.Module):
    """One node X(i, j) of UNet++ (Zhou et al. 2018): the node below up-sampled, concatenated after every earlier
    node of its row (each centre-cropped by the plan), then the decoder's block; the top row's first nodes carry
    an auxiliary head (deep supervision), applied by the network."""

    def __init__(self, up: nn.Module, crops: list[nn.Module], convs: nn.Module, head_crop: nn.Module | None = None,
                 head: nn.Module | None = None) -> None:
        """Args:
        up: the up-sampling of the node below.
        crops: one centre crop per earlier node of the row, margins from the plan.
        convs: the node's block.
        head_crop: the crop of the node's map to the main output (deep supervision), or None.
        head: the node's auxiliary 1×1 head, or None.
        """
        super().__init__()
        self.up = up
        self.crops = nn.ModuleList(crops)
        self.convs = convs
        self.has_head: bool = head is not None
        self.head_crop = head_crop if head_crop is not None else nn.Identity()
        self.head = head if head is not None else nn.Identity()

    def forward(self, below: torch.Tensor, row: List[torch.Tensor]) -> torch.Tensor:
        up = self.up(below)
        parts: List[torch.Tensor] = []
        for index, crop in enumerate(self.crops):
            parts.append(crop(row[index]))
        parts.append(up)
        x = torch.cat(parts, dim=1)
        del parts, up
        return self.convs(x)
