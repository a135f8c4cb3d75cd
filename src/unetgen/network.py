"""Plan → ``nn.Module``: the U-Net itself, with module names taken from the plan.

``build(spec)`` plans the spec, then builds a plain PyTorch module whose state-dict keys name the levels
(``encoder.0.convs.conv0.weight``, ``bottleneck``, ``decoder.3.up``, ``head``) exactly as the plan's rows do.
"""

from __future__ import annotations

import torch
from torch import nn

from . import sizes
from .layers import ACTIVATION, CONV, CONV_TRANSPOSE, MAX_POOL, NORM, PAD_MODE, CentreCrop, ConvBlock, MirrorPad, OutputCrop, UpsampleConv
from .plan import Plan, check_input_size, make_plan
from .spec import UNetSpec, load_spec


class EncoderLevel(nn.Module):
    """One level of the contracting path: max-pool (below the top level), then the convolution block."""

    def __init__(self, pool: nn.Module | None, convs: nn.Module) -> None:
        """Args:
        pool: the max-pool, or None at the top level.
        convs: the level's :class:`~unetgen.layers.ConvBlock`.
        """
        super().__init__()
        self.pool = pool if pool is not None else nn.Identity()
        self.convs = convs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(self.pool(x))


class DecoderLevel(nn.Module):
    """One level of the expanding path: up-convolution, centre-crop of the skip, concatenation, convolutions."""

    def __init__(self, up: nn.Module, crop: CentreCrop, convs: nn.Module) -> None:
        """Args:
        up: the up-convolution (halves the channels, doubles the size).
        crop: the skip connection's centre crop, its margins from the plan.
        convs: the level's :class:`~unetgen.layers.ConvBlock`.
        """
        super().__init__()
        self.up = up
        self.crop = crop
        self.convs = convs

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([self.crop(skip), self.up(x)], dim=1))


class UNet(nn.Module):
    """A U-Net built from a plan. Use :func:`build` rather than calling this directly.

    Attributes:
        spec: the spec it was built from.
        plan: the plan at the spec's default input size.
    """

    def __init__(self, plan: Plan) -> None:
        """Args:
        plan: the plan to build (its spec gives the layer kinds; its skips give the crops).
        """
        super().__init__()
        spec = plan.spec
        dims = spec.spatial_dims
        channels = spec.level_channels
        self.spec = spec
        self.plan = plan
        self.same_output = spec.output == "same"

        def block(cin: int, cout: int) -> ConvBlock:
            return ConvBlock(
                cin,
                cout,
                convs=spec.convs_per_level,
                conv=CONV[dims],
                kernel_size=spec.kernel_size,
                padding=0 if spec.padding == "valid" else (spec.kernel_size - 1) // 2,
                padding_mode=spec.padding_mode,
                bias=spec.uses_conv_bias,
                norm=None if spec.norm == "none" else NORM[spec.norm][dims],
                activation=ACTIVATION[spec.activation],
            )

        levels = []
        for level in range(spec.depth):
            cin = spec.in_channels if level == 0 else channels[level - 1]
            pool = MAX_POOL[dims](2) if level > 0 else None
            levels.append(EncoderLevel(pool, block(cin, channels[level])))
        self.encoder = nn.ModuleList(levels[:-1])
        self.bottleneck = levels[-1]
        # Deepest level first: the order the decoder runs in; the keys still name the levels.
        decoder: dict[str, nn.Module] = {}
        for skip in plan.skips:
            cin, cout = channels[skip.level + 1], channels[skip.level]
            if spec.upsampling == "transpose":
                up: nn.Module = CONV_TRANSPOSE[dims](cin, cout, 2, stride=2)
            else:
                up = UpsampleConv(
                    cin,
                    cout,
                    dims=dims,
                    interpolation=_interpolation(spec.interpolation, dims),
                    pad_mode=PAD_MODE[spec.padding_mode],
                )
            crop = CentreCrop([(c, c) for c in skip.crop])
            decoder[str(skip.level)] = DecoderLevel(up, crop, block(2 * cout, cout))
        self.decoder = nn.ModuleDict(decoder)
        self.head = CONV[dims](channels[0], spec.out_channels, 1)
        if self.same_output:
            self.pad_input = MirrorPad()
            self.crop_output = OutputCrop()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment ``x`` of shape ``(batch, in_channels, *spatial)``.

        Raises:
            SizeError: (outside tracing and scripting) when the network cannot take ``x``'s spatial size.
        """
        if x.dim() != self.spec.spatial_dims + 2:
            from .errors import SizeError

            raise SizeError(
                f"input has shape {tuple(x.shape)}; expected (batch, {self.spec.in_channels}, "
                f"{', '.join(['size'] * self.spec.spatial_dims)})"
            )
        margins: list[tuple[int, int]] = []
        if self.same_output:
            steps, margins = _same_output_plan(self.plan, tuple(int(s) for s in x.shape[2:]))
            x = self.pad_input(x, steps)
        elif not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            check_input_size(self.spec, tuple(int(s) for s in x.shape[2:]))
        skips: list[torch.Tensor] = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
        x = self.bottleneck(x)
        for level in self.decoder.values():
            x = level(x, skips.pop())
        x = self.head(x)
        if self.same_output:
            x = self.crop_output(x, margins)
        return x


def _interpolation(name: str, dims: int) -> str:
    from .layers import INTERPOLATION

    return INTERPOLATION[name][dims]


def _same_output_plan(plan: Plan, size: tuple[int, ...]) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """Mirror steps (in ``F.pad`` order) and the output crop for ``output: same`` at ``size``, from the plan."""
    check_input_size(plan.spec, size)
    ios = [sizes.same_output_io(s, grid) for s, grid in zip(size, plan.lattices)]
    per_axis = [sizes.mirror_steps(s, io.pad) for s, io in zip(size, ios)]
    rounds = max((len(steps) for steps in per_axis), default=0)
    flat_steps: list[list[int]] = []
    for index in range(rounds):
        flat: list[int] = []
        for steps in reversed(per_axis):  # F.pad lists the last axis first
            before, after = steps[index] if index < len(steps) else (0, 0)
            flat += [before, after]
        flat_steps.append(flat)
    return flat_steps, [io.crop for io in ios]


def build(spec: UNetSpec | str, input_size: tuple[int, ...] | list[int] | None = None) -> UNet:
    """Build the network a spec describes.

    Args:
        spec: a :class:`~unetgen.spec.UNetSpec`, a preset name or a YAML path.
        input_size: the size to plan at (default: the spec's); the built network takes every valid size.

    Returns:
        A plain ``nn.Module`` with PyTorch's default initialisation; ``model.plan`` is its plan.

    Raises:
        SpecError: when the spec is invalid.
        SizeError: when ``input_size`` is not a size the network can take.
    """
    return UNet(make_plan(load_spec(spec), input_size))
