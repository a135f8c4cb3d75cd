"""Spec + input size → plan: every block's shape, every crop and pad, the parameter count. Pure integers, no torch.

The plan is worked out before any tensor exists, so describing a network that would not fit in memory is instant,
and a size the network cannot take is refused here with the level and the reason, never deep inside ``torch.cat``.
:mod:`unetgen.network` builds modules whose names are the plan's block names and whose crops come from the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..planning import sizes
from ..errors import SizeError
from ..spec.fields import DEFAULT_SIZE_HINT, UNetSpec

_AXIS_NAMES = {1: ("length",), 2: ("height", "width"), 3: ("axis 0", "axis 1", "axis 2")}


@dataclass(frozen=True)
class Block:
    """One row of the plan: a named module of the built network and what comes out of it.

    Attributes:
        name: the module's name in the built network (``encoder.0``, ``decoder.3.up``, ``head``).
        operation: what it does, in words.
        shape: its output, ``(channels, *spatial)``.
        params: its trainable parameters.
    """

    name: str
    operation: str
    shape: tuple[int, ...]
    params: int


@dataclass(frozen=True)
class Skip:
    """One skip connection: encoder level ``level``'s output, centre-cropped to its decoder level's size.

    Attributes:
        level: the level the skip connects.
        source: spatial size of the encoder output.
        target: spatial size after the crop (the up-sampled size it is concatenated with).
        crop: pixels cropped from each side, per axis (the same on both sides: the crop is central).
    """

    level: int
    source: tuple[int, ...]
    target: tuple[int, ...]
    crop: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    """Everything about one network at one input size, worked out from the spec alone.

    Attributes:
        spec: the spec the plan was made from.
        input_size: spatial input size.
        output_size: spatial output size.
        core_input_size: the size the convolutional core runs on (differs from ``input_size`` only for
            ``output: same``, where the input is mirrored first).
        mirror: mirror padding ``(before, after)`` per axis applied to the input (zeros for ``output: crop``).
        output_crop: pixels ``(before, after)`` per axis cropped from the core's output (``output: same``).
        blocks: the network, module by module, in execution order.
        skips: the skip connections, top level first.
        lattices: valid core input sizes per axis.
        parameters: trainable parameters.
        norm_parameters: the normalisation layers' share of ``parameters`` (their scale and shift), which some
            papers leave out of their counts.
        conv_layers: convolutional layers (block convolutions, up-convolutions and the 1×1 head).
    """

    spec: UNetSpec
    input_size: tuple[int, ...]
    output_size: tuple[int, ...]
    core_input_size: tuple[int, ...]
    mirror: tuple[tuple[int, int], ...]
    output_crop: tuple[tuple[int, int], ...]
    blocks: tuple[Block, ...]
    skips: tuple[Skip, ...]
    lattices: tuple[sizes.Lattice, ...]
    parameters: int
    conv_layers: int
    norm_parameters: int = 0
    axis_names: tuple[str, ...] = field(default=())

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(in_channels, *input_size)``."""
        return (self.spec.in_channels, *self.input_size)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """``(out_channels, *output_size)``."""
        return (self.spec.out_channels, *self.output_size)

    @property
    def same_output(self) -> bool:
        """Whether the network mirrors its input and crops its output to the input's size (``output: same``)."""
        return self.spec.output == "same"

    @property
    def final_activation(self) -> str:
        """What the last block applies to the logits: ``none``, ``sigmoid`` or ``softmax``."""
        return self.spec.final_activation

    @property
    def border(self) -> tuple[int, ...]:
        """Pixels the core network consumes on each side, per axis (92 for the paper network)."""
        return tuple(grid.border for grid in self.lattices)

    def block(self, name: str) -> Block:
        """The block called ``name``.

        Raises:
            KeyError: when there is no such block.
        """
        for block in self.blocks:
            if block.name == name:
                return block
        raise KeyError(name)

    def _repr_svg_(self) -> str | None:
        """The network as the U-Net paper's Figure 1, for Jupyter (see :func:`unetgen.draw`)."""
        from ..drawing.draw import draw
        from ..errors import UNetGenError

        try:
            return draw(self)
        except UNetGenError:  # e.g. a spec whose input_size the network cannot take: the text repr instead
            return None

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (what ``unetgen build --json`` prints)."""
        from ..version import __version__
        from .cost import estimate
        from .field import receptive_field

        cost = estimate(self)
        return {
            "unetgen": __version__,
            "spec": self.spec.model_dump(mode="json"),
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "core_input_size": list(self.core_input_size),
            "mirror": [list(pad) for pad in self.mirror],
            "output_crop": [list(crop) for crop in self.output_crop],
            "blocks": [
                {"name": b.name, "operation": b.operation, "shape": list(b.shape), "params": b.params}
                for b in self.blocks
            ],
            "skips": [
                {"level": s.level, "source": list(s.source), "target": list(s.target), "crop": list(s.crop)}
                for s in self.skips
            ],
            "valid_sizes": [
                {"axis": name, "first": g.first, "step": g.step, "border": g.border}
                for name, g in zip(self.axis_names, self.lattices)
            ],
            "parameters": self.parameters,
            "norm_parameters": self.norm_parameters,
            "flops": cost.flops,
            "activation_bytes": cost.activation_bytes,
            "parameter_bytes": cost.parameter_bytes,
            "receptive_field": [{"size": f.size, "exact": f.exact} for f in receptive_field(self)],
            "conv_layers": self.conv_layers,
        }


def geometry(spec: UNetSpec) -> tuple[sizes.AxisGeometry, ...]:
    """The spec's geometry along each spatial axis.

    Args:
        spec: the network.

    Returns:
        One :class:`~unetgen.sizes.AxisGeometry` per spatial axis.
    """
    axes = []
    for axis in range(spec.spatial_dims):
        kernels = [spec.kernel(level)[axis] for level in range(spec.depth)]
        if spec.padding == "valid":
            shrinks = tuple(k - 1 for k in kernels)
            minimums = (1,) * spec.depth
        else:
            shrinks = (0,) * spec.depth
            minimums = tuple(_min_padded_input(spec.padding_mode, (k - 1) // 2) for k in kernels)
        pools = tuple(spec.pool(level)[axis] for level in range(spec.depth - 1))
        min_map = 2 if _norm_needs_two_pixels(spec) else 1
        axes.append(sizes.AxisGeometry(spec.convs_per_level, shrinks, pools, minimums, min_map))
    return tuple(axes)


def _norm_needs_two_pixels(spec: UNetSpec) -> bool:
    """Whether a one-pixel map breaks the norm: torch refuses to normalise a single value, even in eval mode
    (instance norm always; group and layer norm when a group holds one channel)."""
    if spec.norm == "instance":
        return True
    groups = {"group": spec.norm_groups, "layer": 1}.get(spec.norm)
    if groups is None:
        return False
    widths = {w for level in range(spec.depth) for w in spec.conv_widths(level)}
    return any(width == groups for width in widths)


def _min_padded_input(mode: str, pad: int) -> int:
    """Smallest size a convolution padded by ``pad`` in ``mode`` can take (torch: reflect needs pad < size)."""
    if pad == 0:
        return 1
    return {"zeros": 1, "replicate": 1, "reflect": pad + 1, "circular": pad}[mode]


def lattices(spec: UNetSpec) -> tuple[sizes.Lattice, ...]:
    """Valid core input sizes along each axis (see :class:`~unetgen.sizes.Lattice`)."""
    return tuple(sizes.lattice(axis) for axis in geometry(spec))


def default_input_size(spec: UNetSpec) -> tuple[int, ...]:
    """The spec's ``input_size``, or the smallest valid size from the paper's (572; 132 in 3D) up."""
    if spec.input_size is not None:
        return tuple(spec.input_size)
    hint = DEFAULT_SIZE_HINT[spec.spatial_dims]
    if spec.output == "same":
        return (hint,) * spec.spatial_dims
    return tuple(grid.at_least(hint) for grid in lattices(spec))


def _fmt(size: tuple[int, ...] | list[int]) -> str:
    return "×".join(str(s) for s in size)


def check_input_size(spec: UNetSpec, input_size: tuple[int, ...] | list[int]) -> None:
    """Raise a clear error if the network cannot take ``input_size``.

    Args:
        spec: the network.
        input_size: spatial input size, one value per axis.

    Raises:
        SizeError: naming the axis, the block and the reason, with the nearest valid sizes.
    """
    _resolve_sizes(spec, tuple(input_size))


def _resolve_sizes(
    spec: UNetSpec, input_size: tuple[int, ...], label: str = "input"
) -> tuple[tuple[sizes.Lattice, ...], tuple[sizes.SameOutputIO | None, ...], tuple[sizes.AxisTrace, ...]]:
    dims = spec.spatial_dims
    names = _AXIS_NAMES[dims]
    shown = f"{label} {_fmt(input_size)}"
    if len(input_size) != dims:
        raise SizeError(f"{shown}: gives {len(input_size)} sizes for a {dims}D network; give {dims}")
    grids = lattices(spec)
    ios: list[sizes.SameOutputIO | None] = []
    traces: list[sizes.AxisTrace] = []
    for name, size, grid, axis in zip(names, input_size, grids, geometry(spec)):
        where = f"{shown}: {name}" if dims > 1 else shown
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise SizeError(f"{where}: sizes must be positive integers, got {size!r}")
        if spec.output == "same":
            io = sizes.same_output_io(size, grid)
            if size < 2 and io.pad != (0, 0):
                raise SizeError(f"{where}: a size of 1 cannot be mirrored; the smallest size is 2")
            ios.append(io)
            core = io.core_input
        else:
            ios.append(None)
            core = size
        try:
            traces.append(sizes.trace(core, axis))
        except sizes.AxisSizeError as exc:
            nearest = ", ".join(str(n) for n in grid.nearest(size))
            raise SizeError(
                f"{where}: {exc.where} {exc.reason}; nearest valid sizes: {nearest} "
                f"(valid sizes: {grid.describe()}; or set output: same)"
            ) from None
    return grids, tuple(ios), tuple(traces)


class _ParamCounter:
    """Trainable parameters of each kind of block, as the modules in :mod:`unetgen.layers` have them."""

    def __init__(self, spec: UNetSpec) -> None:
        self.spec = spec
        self.norm_total = 0
        self.projections = 0

    def block(self, cin: int, widths: tuple[int, ...], kernel: tuple[int, ...]) -> int:
        spec = self.spec
        bias = int(spec.uses_conv_bias)
        taps = 1
        for k in kernel:
            taps *= k
        total, channels = 0, cin
        for width in widths:
            total += channels * width * taps + bias * width
            if spec.norm != "none":
                total += 2 * width
                self.norm_total += 2 * width
            if spec.activation == "prelu":
                total += 1
            channels = width
        if spec.block == "residual" and cin != widths[-1]:
            total += cin * widths[-1] + bias * widths[-1]
            self.projections += 1
        return total

    def up(self, cin: int, cout: int, factor: tuple[int, ...]) -> int:
        taps = 1
        for f in factor:
            taps *= f
        return cin * cout * taps + int(self.spec.up_bias) * cout


def _block_words(spec: UNetSpec, level: int, widths: tuple[int, ...]) -> str:
    """E.g. ``2× [conv 3×3 valid, relu]`` or ``[conv 3×3×3 → 32, conv 3×3×3 → 64] (batch norm, relu)``."""
    kernel = _fmt(spec.kernel(level))
    pad = spec.padding + (f" {spec.padding_mode}" if spec.padding == "same" and spec.padding_mode != "zeros" else "")
    parts = [f"conv {kernel} {pad}"]
    if spec.norm != "none":
        parts.append(f"{spec.norm} norm")
    parts.append(spec.activation if spec.activation != "leaky_relu" else f"leaky_relu {spec.negative_slope:g}")
    if len(set(widths)) == 1:
        words = f"{len(widths)}× [{', '.join(parts)}]"
    else:
        words = f"{len(widths)}× [{', '.join(parts)}] → {'/'.join(map(str, widths))} ch"
    if spec.block == "residual":
        words = f"residual {words}"
    if spec.dropout_at == "every_level" or (spec.dropout_at == "bottleneck" and level == spec.depth - 1):
        words += f", dropout {spec.dropout:g}"
    return words


def make_plan(spec: UNetSpec, input_size: tuple[int, ...] | list[int] | None = None) -> Plan:
    """Work out every shape of ``spec`` at ``input_size``, without building anything.

    Args:
        spec: the network.
        input_size: spatial input size, one value per axis; default :func:`default_input_size`.

    Returns:
        The plan.

    Raises:
        SizeError: when the network cannot take ``input_size`` (the message names the level and the reason and
            gives the nearest valid sizes).
    """
    size = default_input_size(spec) if input_size is None else tuple(input_size)
    label = "the spec's input_size" if input_size is None and spec.input_size is not None else "input"
    grids, ios, traces = _resolve_sizes(spec, size, label)
    dims = spec.spatial_dims
    channels = spec.level_channels
    counts = _ParamCounter(spec)

    def spatial(pick: Any) -> tuple[int, ...]:
        return tuple(pick(trace) for trace in traces)

    blocks: list[Block] = []
    mirror = tuple(io.pad if io else (0, 0) for io in ios)
    core_input = tuple(io.core_input if io else s for io, s in zip(ios, size))
    if spec.output == "same":
        pads = ", ".join(f"{a}+{b}" for a, b in mirror)
        blocks.append(
            Block("pad_input", f"mirror (reflect) {pads} → {_fmt(core_input)}", (spec.in_channels, *core_input), 0)
        )
    for level in range(spec.depth):
        cin = spec.in_channels if level == 0 else channels[level - 1]
        words = _block_words(spec, level, spec.conv_widths(level))
        if level > 0:
            words = f"maxpool {_fmt(spec.pool(level - 1))} → {words}"
        shape = (channels[level], *spatial(lambda t, lv=level: t.encoder[lv]))
        params = counts.block(cin, spec.conv_widths(level), spec.kernel(level))
        blocks.append(Block(sizes.level_name(level, spec.depth), words, shape, params))
    skips: list[Skip] = []
    below = channels[-1]
    for level in reversed(range(spec.depth - 1)):
        factor = spec.pool(level)
        cup = channels[level] if spec.up_channels == "halve" else below
        up_size = spatial(lambda t, lv=level: t.up[lv])
        if spec.upsampling == "transpose":
            up_words = f"transposed conv {_fmt(factor)}, stride {_fmt(factor)}"
        else:
            mode = "nearest" if spec.interpolation == "nearest" else {1: "linear", 2: "bilinear", 3: "trilinear"}[dims]
            up_words = f"upsample ×{_fmt(factor)} ({mode}) → conv {_fmt(factor)} (padded at the far side)"
        blocks.append(Block(f"decoder.{level}.up", up_words, (cup, *up_size), counts.up(below, cup, factor)))
        source = spatial(lambda t, lv=level: t.encoder[lv])
        crop = spatial(lambda t, lv=level: t.crop[lv])
        skips.append(Skip(level, source, up_size, crop))
        if any(crop):
            per_side = str(crop[0]) if len(set(crop)) == 1 else "/".join(str(c) for c in crop)
            crop_words = f"centre-crop encoder.{level} {_fmt(source)} → {_fmt(up_size)} ({per_side} per side)"
        else:
            crop_words = f"encoder.{level} as is ({_fmt(source)})"
        blocks.append(Block(f"decoder.{level}.crop", crop_words, (channels[level], *up_size), 0))
        widths = (channels[level],) * spec.convs_per_level
        out = (channels[level], *spatial(lambda t, lv=level: t.decoder[lv]))
        cin = channels[level] + cup
        words = f"concat → {cin} ch, {_block_words(spec, level, widths)}"
        blocks.append(Block(f"decoder.{level}.convs", words, out, counts.block(cin, widths, spec.kernel(level))))
        below = channels[level]
    core_output = spatial(lambda t: t.output)
    head_params = channels[0] * spec.out_channels + spec.out_channels
    blocks.append(Block("head", f"conv {_fmt((1,) * dims)}", (spec.out_channels, *core_output), head_params))
    output_crop = tuple(io.crop if io else (0, 0) for io in ios)
    output_size = tuple(c - a - b for c, (a, b) in zip(core_output, output_crop))
    if spec.output == "same":
        blocks.append(
            Block("crop_output", f"crop to the input's size {_fmt(output_size)}", (spec.out_channels, *output_size), 0)
        )
    if spec.final_activation != "none":
        words = {"sigmoid": "sigmoid", "softmax": "softmax over channels"}[spec.final_activation]
        blocks.append(Block("final", words, (spec.out_channels, *output_size), 0))
    return Plan(
        spec=spec,
        input_size=size,
        output_size=output_size,
        core_input_size=core_input,
        mirror=mirror,
        output_crop=output_crop,
        blocks=tuple(blocks),
        skips=tuple(skips),
        lattices=grids,
        parameters=sum(b.params for b in blocks),
        norm_parameters=counts.norm_total,
        conv_layers=(2 * spec.depth - 1) * spec.convs_per_level + (spec.depth - 1) + 1 + counts.projections,
        axis_names=_AXIS_NAMES[dims],
    )
