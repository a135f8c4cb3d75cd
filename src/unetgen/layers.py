"""The building blocks, and the only place where a spec's strings become torch classes.

Modules here receive integers and layer classes, never the spec; every crop and pad amount comes from the plan.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

CONV: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_TRANSPOSE: dict[int, type[nn.Module]] = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
MAX_POOL: dict[int, type[nn.Module]] = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
NORM: dict[str, dict[int, type[nn.Module]]] = {
    "batch": {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d},
}
ACTIVATION: dict[str, type[nn.Module]] = {"relu": nn.ReLU}
INTERPOLATION: dict[str, dict[int, str]] = {
    "nearest": {1: "nearest", 2: "nearest", 3: "nearest"},
    "linear": {1: "linear", 2: "bilinear", 3: "trilinear"},
}
#: ``padding_mode`` names → ``torch.nn.functional.pad`` modes.
PAD_MODE: dict[str, str] = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


class ConvBlock(nn.Sequential):
    """``n`` × [conv → norm → activation], the body of every level (Ronneberger et al. 2015, Fig. 1)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        convs: int,
        conv: type[nn.Module],
        kernel_size: int,
        padding: int,
        padding_mode: str,
        bias: bool,
        norm: type[nn.Module] | None,
        activation: type[nn.Module],
    ) -> None:
        """Args:
            in_channels: channels into the first convolution.
            out_channels: channels out of every convolution.
            convs: number of convolutions.
            conv: the convolution class (``nn.Conv2d``, ...).
            kernel_size: kernel size per axis.
            padding: padding per side (0 for valid convolutions).
            padding_mode: torch's ``padding_mode`` (zeros, reflect, replicate, circular).
            bias: whether the convolutions have a bias.
            norm: the normalisation class, or None.
            activation: the activation class.
        """
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for index in range(convs):
            layers[f"conv{index}"] = conv(
                in_channels if index == 0 else out_channels,
                out_channels,
                kernel_size,
                padding=padding,
                padding_mode=padding_mode,
                bias=bias,
            )
            if norm is not None:
                layers[f"norm{index}"] = norm(out_channels)
            layers[f"act{index}"] = activation()
        super().__init__(layers)


class CentreCrop(nn.Module):
    """Crop fixed margins off each spatial axis (the paper's copy-and-crop of a skip connection)."""

    def __init__(self, margins: list[tuple[int, int]]) -> None:
        """Args:
        margins: ``(before, after)`` pixels to drop along each spatial axis, from the plan.
        """
        super().__init__()
        self.margins = [(int(a), int(b)) for a, b in margins]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return crop(x, self.margins)

    def extra_repr(self) -> str:
        return f"margins={self.margins}"


def crop(x: torch.Tensor, margins: list[tuple[int, int]]) -> torch.Tensor:
    """Drop ``(before, after)`` pixels along each spatial axis of ``x`` (a view, no copy)."""
    for axis, (before, after) in enumerate(margins):
        if before or after:
            x = x.narrow(axis + 2, before, x.shape[axis + 2] - before - after)
    return x


class Pad(nn.Module):
    """Pad fixed amounts on each spatial axis (the far-side pixel of ``upsample_conv``'s 2×2 convolution)."""

    def __init__(self, pads: list[tuple[int, int]], mode: str) -> None:
        """Args:
        pads: ``(before, after)`` per spatial axis.
        mode: a ``torch.nn.functional.pad`` mode (constant, reflect, replicate, circular).
        """
        super().__init__()
        flat: list[int] = []
        for before, after in reversed(pads):  # F.pad lists the last axis first
            flat += [int(before), int(after)]
        self.flat = flat
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.flat, mode=self.mode)

    def extra_repr(self) -> str:
        return f"pads={self.flat}, mode={self.mode!r}"


class UpsampleConv(nn.Sequential):
    """×2 interpolation, then a 2×2 convolution padded by one pixel at the far side: exactly twice the size."""

    def __init__(
        self, in_channels: int, out_channels: int, *, dims: int, interpolation: str, pad_mode: str
    ) -> None:
        """Args:
        in_channels: channels in.
        out_channels: channels out (half of ``in_channels`` in the paper).
        dims: spatial dimensions.
        interpolation: a ``torch.nn.Upsample`` mode.
        pad_mode: a ``torch.nn.functional.pad`` mode for the one-pixel pad.
        """
        align = False if interpolation != "nearest" else None
        super().__init__(
            OrderedDict(
                upsample=nn.Upsample(scale_factor=2.0, mode=interpolation, align_corners=align),
                pad=Pad([(0, 1)] * dims, pad_mode),
                conv=CONV[dims](in_channels, out_channels, 2),
            )
        )


class MirrorPad(nn.Module):
    """Reflect-pad by amounts the plan works out per input size (``output: same``): the paper's mirroring."""

    def forward(self, x: torch.Tensor, steps: list[list[int]]) -> torch.Tensor:
        for flat in steps:
            x = F.pad(x, flat, mode="reflect")
        return x


class OutputCrop(nn.Module):
    """Crop the core's output back to the input's size, by margins the plan works out per input size."""

    def forward(self, x: torch.Tensor, margins: list[tuple[int, int]]) -> torch.Tensor:
        return crop(x, margins)
