"""Hand-written U-Nets, written the way people write them, to measure unetgen's networks against.

* :class:`PaperUNet` — Ronneberger et al. 2015, Figure 1: unpadded 3×3 convolutions with ReLU, 2×2 max-pooling,
  2×2 stride-2 transposed convolutions, centre-cropped skip connections, dropout at the end of the contracting
  path, a 1×1 output convolution. 31,030,658 parameters for 1 input channel and 2 classes.
* :class:`ModernUNet` — the most copied 2D U-Net of today (milesial/Pytorch-UNet and many tutorials): padded 3×3
  convolutions without bias, each followed by BatchNorm and an in-place ReLU, transposed convolutions, the map
  from below padded to the skip's size. 31,037,698 parameters for 3 input channels and 2 classes.

Both keep every skip tensor in a local variable until the decoder has used it, as hand-written networks do.
:func:`paper_state_dict` and :func:`modern_state_dict` rename a reference's weights to unetgen's keys
(``encoder.0.convs.conv0.weight`` …), so the benchmark can run both networks with the same weights and check that
they compute the same function.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

# --- Ronneberger et al. 2015 ----------------------------------------------------------------------------------


def double_conv_valid(cin: int, cout: int) -> nn.Sequential:
    """Two unpadded 3×3 convolutions, each followed by a ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, kernel_size=3),
        nn.ReLU(inplace=True),
    )


def center_crop(skip: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Crop ``skip`` around its centre to ``target``'s height and width."""
    _, _, h, w = skip.shape
    th, tw = target.shape[2:]
    top, left = (h - th) // 2, (w - tw) // 2
    return skip[:, :, top:top + th, left:left + tw]


class PaperUNet(nn.Module):
    """The 2015 U-Net (Ronneberger, Fischer & Brox, Figure 1): 572×572 in, 388×388 out."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__()
        self.enc1 = double_conv_valid(in_channels, 64)
        self.enc2 = double_conv_valid(64, 128)
        self.enc3 = double_conv_valid(128, 256)
        self.enc4 = double_conv_valid(256, 512)
        self.bottleneck = double_conv_valid(512, 1024)
        self.dropout = nn.Dropout(0.5)
        self.pool = nn.MaxPool2d(2)
        self.up4 = nn.ConvTranspose2d(1024, 512, kernel_size=2, stride=2)
        self.dec4 = double_conv_valid(1024, 512)
        self.up3 = nn.ConvTranspose2d(512, 256, kernel_size=2, stride=2)
        self.dec3 = double_conv_valid(512, 256)
        self.up2 = nn.ConvTranspose2d(256, 128, kernel_size=2, stride=2)
        self.dec2 = double_conv_valid(256, 128)
        self.up1 = nn.ConvTranspose2d(128, 64, kernel_size=2, stride=2)
        self.dec1 = double_conv_valid(128, 64)
        self.out = nn.Conv2d(64, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.enc1(x)
        x2 = self.enc2(self.pool(x1))
        x3 = self.enc3(self.pool(x2))
        x4 = self.enc4(self.pool(x3))
        x5 = self.dropout(self.bottleneck(self.pool(x4)))
        u4 = self.up4(x5)
        d4 = self.dec4(torch.cat([center_crop(x4, u4), u4], dim=1))
        u3 = self.up3(d4)
        d3 = self.dec3(torch.cat([center_crop(x3, u3), u3], dim=1))
        u2 = self.up2(d3)
        d2 = self.dec2(torch.cat([center_crop(x2, u2), u2], dim=1))
        u1 = self.up1(d2)
        d1 = self.dec1(torch.cat([center_crop(x1, u1), u1], dim=1))
        return self.out(d1)


# --- milesial/Pytorch-UNet style ------------------------------------------------------------------------------


class DoubleConv(nn.Module):
    """(convolution → BatchNorm → ReLU) × 2, padded."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class Down(nn.Module):
    """Max-pool, then a double convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Transposed convolution, pad to the skip's size, concatenate, double convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        x1 = self.up(x1)
        diff_y = x2.size()[2] - x1.size()[2]
        diff_x = x2.size()[3] - x1.size()[3]
        x1 = F.pad(x1, [diff_x // 2, diff_x - diff_x // 2, diff_y // 2, diff_y - diff_y // 2])
        x = torch.cat([x2, x1], dim=1)
        return self.conv(x)


class OutConv(nn.Module):
    """The 1×1 output convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ModernUNet(nn.Module):
    """Same-padding U-Net with BatchNorm and transposed convolutions (milesial/Pytorch-UNet, ``bilinear=False``)."""

    def __init__(self, n_channels: int = 3, n_classes: int = 2) -> None:
        super().__init__()
        self.inc = DoubleConv(n_channels, 64)
        self.down1 = Down(64, 128)
        self.down2 = Down(128, 256)
        self.down3 = Down(256, 512)
        self.down4 = Down(512, 1024)
        self.up1 = Up(1024, 512)
        self.up2 = Up(512, 256)
        self.up3 = Up(256, 128)
        self.up4 = Up(128, 64)
        self.outc = OutConv(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x = self.up1(x5, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return self.outc(x)


# --- the same weights under unetgen's names --------------------------------------------------------------------

_PAPER_KEYS = [
    (r"enc(\d)\.0\.", lambda m: f"encoder.{int(m[1]) - 1}.convs.conv0."),
    (r"enc(\d)\.2\.", lambda m: f"encoder.{int(m[1]) - 1}.convs.conv1."),
    (r"bottleneck\.0\.", lambda m: "bottleneck.convs.conv0."),
    (r"bottleneck\.2\.", lambda m: "bottleneck.convs.conv1."),
    (r"up(\d)\.", lambda m: f"decoder.{int(m[1]) - 1}.up."),
    (r"dec(\d)\.0\.", lambda m: f"decoder.{int(m[1]) - 1}.convs.conv0."),
    (r"dec(\d)\.2\.", lambda m: f"decoder.{int(m[1]) - 1}.convs.conv1."),
    (r"out\.", lambda m: "head."),
]

_DOUBLE = {"0": "conv0", "1": "norm0", "3": "conv1", "4": "norm1"}
_MODERN_KEYS = [
    (r"inc\.double_conv\.(\d)\.", lambda m: f"encoder.0.convs.{_DOUBLE[m[1]]}."),
    (r"down4\.maxpool_conv\.1\.double_conv\.(\d)\.", lambda m: f"bottleneck.convs.{_DOUBLE[m[1]]}."),
    (r"down(\d)\.maxpool_conv\.1\.double_conv\.(\d)\.", lambda m: f"encoder.{m[1]}.convs.{_DOUBLE[m[2]]}."),
    (r"up(\d)\.up\.", lambda m: f"decoder.{4 - int(m[1])}.up."),
    (r"up(\d)\.conv\.double_conv\.(\d)\.", lambda m: f"decoder.{4 - int(m[1])}.convs.{_DOUBLE[m[2]]}."),
    (r"outc\.conv\.", lambda m: "head."),
]


def _rename(state: dict[str, torch.Tensor], rules: list) -> dict[str, torch.Tensor]:  # type: ignore[type-arg]
    out = {}
    for key, value in state.items():
        for pattern, name in rules:
            match = re.match(pattern, key)
            if match:
                out[name(match) + key[match.end():]] = value
                break
        else:
            raise KeyError(f"no unetgen name for {key}")
    return out


def paper_state_dict(model: PaperUNet) -> dict[str, torch.Tensor]:
    """``model``'s weights under the keys of ``unetgen.build("paper")``."""
    return _rename(model.state_dict(), _PAPER_KEYS)


def modern_state_dict(model: ModernUNet) -> dict[str, torch.Tensor]:
    """``model``'s weights (and BatchNorm statistics) under the keys of ``unetgen.build("modern")``."""
    return _rename(model.state_dict(), _MODERN_KEYS)
