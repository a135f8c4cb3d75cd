"""The building blocks, and the only place where a spec's strings become torch classes.

Modules here receive integers and layer factories, never the spec; every crop and pad amount comes from the plan.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

CONV: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_TRANSPOSE: dict[int, type[nn.Module]] = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
MAX_POOL: dict[int, type[nn.Module]] = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
BATCH_NORM: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
INSTANCE_NORM: dict[int, type[nn.Module]] = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
INTERPOLATION: dict[str, dict[int, str]] = {
    "nearest": {1: "nearest", 2: "nearest", 3: "nearest"},
    "linear": {1: "linear", 2: "bilinear", 3: "trilinear"},
}
#: ``padding_mode`` names → ``torch.nn.functional.pad`` modes.
PAD_MODE: dict[str, str] = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}
FINAL: dict[str, Callable[[], nn.Module]] = {"sigmoid": nn.Sigmoid, "softmax": lambda: nn.Softmax(dim=1)}

Factory = Callable[[int], nn.Module]


def norm_factory(kind: str, dims: int, groups: int) -> Factory | None:
    """A function ``channels → norm module`` for ``norm: kind``, or None for ``none``.

    Every norm has a learned scale and shift (``affine``), as the parameter counts of the plan assume.
    """
    if kind == "none":
        return None
    if kind == "batch":
        return BATCH_NORM[dims]
    if kind == "instance":
        return lambda channels: INSTANCE_NORM[dims](channels, affine=True)
    if kind == "group":
        return lambda channels: nn.GroupNorm(groups, channels)
    if kind == "layer":
        return lambda channels: nn.GroupNorm(1, channels)
    raise ValueError(f"unknown norm {kind!r}")


def activation_factory(kind: str, negative_slope: float) -> Callable[[], nn.Module]:
    """A function ``() → activation module`` for ``activation: kind``.

    Activations that can overwrite their input do (``inplace=True``, as hand-written U-Nets do): the map they read
    is the norm's or the convolution's output, which nothing else reads, and a new map of the paper network's
    first level is 83 MB whose pages the system must supply afresh on every pass (measured: 7% of a 572×572 pass).
    Autograd supports each of them in place (``negative_slope`` is never negative). GELU and PReLU have no in-place
    form. :func:`unetgen.cost.estimate` counts exactly the kinds in ``cost.IN_PLACE_ACTIVATIONS`` as in place.
    """
    table: dict[str, Callable[[], nn.Module]] = {
        "relu": lambda: nn.ReLU(inplace=True),
        "leaky_relu": lambda: nn.LeakyReLU(negative_slope, inplace=True),
        "elu": lambda: nn.ELU(inplace=True),
        "gelu": nn.GELU,
        "silu": lambda: nn.SiLU(inplace=True),
        "prelu": nn.PReLU,
    }
    return table[kind]


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


def conv_stack(
    cin: int,
    widths: tuple[int, ...],
    *,
    conv: type[nn.Module],
    kernel: tuple[int, ...],
    padded: bool,
    padding_mode: str,
    bias: bool,
    norm: Factory | None,
    activation: Callable[[], nn.Module],
    last_activation: bool = True,
) -> OrderedDict[str, nn.Module]:
    """``conv{i} → norm{i} → act{i}`` for each width, named for the state dict."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for index, width in enumerate(widths):
        padding = tuple((k - 1) // 2 for k in kernel) if padded else 0
        layers[f"conv{index}"] = conv(cin, width, kernel, padding=padding, padding_mode=padding_mode, bias=bias)
        if norm is not None:
            layers[f"norm{index}"] = norm(width)
        if last_activation or index < len(widths) - 1:
            layers[f"act{index}"] = activation()
        cin = width
    return layers


class ConvBlock(nn.Sequential):
    """``n`` × [conv → norm → activation] (then dropout): the body of every level (Ronneberger et al. 2015, Fig. 1)."""

    def __init__(self, layers: OrderedDict[str, nn.Module], dropout: float = 0.0) -> None:
        """Args:
        layers: from :func:`conv_stack`.
        dropout: dropout rate after the block (0: none).
        """
        if dropout > 0:
            layers["dropout"] = nn.Dropout(dropout)
        super().__init__(layers)


class ResidualBlock(nn.Module):
    """[conv → norm → act] × (n − 1) → conv → norm, plus the (projected, centre-cropped) input, → act (→ dropout)."""

    def __init__(
        self,
        body: OrderedDict[str, nn.Module],
        projection: nn.Module | None,
        margins: list[tuple[int, int]],
        activation: nn.Module,
        dropout: float = 0.0,
    ) -> None:
        """Args:
        body: from :func:`conv_stack` with ``last_activation=False``.
        projection: a 1×1 convolution when the widths differ, else None.
        margins: centre crop of the shortcut to the body's output (valid convolutions), from the plan.
        activation: applied after the sum.
        dropout: dropout rate after the block (0: none).
        """
        super().__init__()
        self.body = nn.Sequential(body)
        self.projection = projection if projection is not None else nn.Identity()
        self.crop = CentreCrop(margins)
        self.act = activation
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.act(self.body(x) + self.crop(self.projection(x))))


class UpsampleConv(nn.Sequential):
    """×f interpolation, then an f-wide convolution padded by f − 1 at the far side: exactly f times the size."""

    def __init__(
        self, cin: int, cout: int, *, factor: tuple[int, ...], interpolation: str, pad_mode: str, bias: bool
    ) -> None:
        """Args:
        cin: channels in.
        cout: channels out.
        factor: up-sampling factor per axis (the pool factor of the level).
        interpolation: a ``torch.nn.Upsample`` mode.
        pad_mode: a ``torch.nn.functional.pad`` mode for the far-side pad.
        bias: whether the convolution has a bias.
        """
        align = False if interpolation != "nearest" else None
        super().__init__(
            OrderedDict(
                upsample=nn.Upsample(scale_factor=tuple(float(f) for f in factor), mode=interpolation,
                                     align_corners=align),
                pad=Pad([(0, f - 1) for f in factor], pad_mode),
                conv=CONV[len(factor)](cin, cout, factor, bias=bias),
            )
        )


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
