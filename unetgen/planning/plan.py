"""Spec + input size → plan: every layer of the network as data, with its shape. Pure integers, no torch.

The plan is the network's only description: the only reader of the spec's shaping fields. Each block (a row of the
summary: ``encoder.0``, ``decoder.3.up``, ``head``) carries its layers (:class:`Layer`: kind, channels, kernel,
stride, pads, crop, output shape, parameters, and which tensors it reads). The builder (:mod:`unetgen.network`),
the costs, the receptive field, tiling, drawing and export read the layers, never the spec's layer fields.

The plan is worked out before any tensor exists, so describing a network that would not fit in memory is instant,
and a size the network cannot take is refused here with the level and the reason, never deep inside ``torch.cat``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from . import sizes
from ..errors import SizeError, SpecError
from ..spec.fields import DEFAULT_SIZE_HINT, UNetSpec
from ..text import AXIS_NAMES, size_text

_fmt = size_text

#: What each layer kind is. The builder has one torch class per kind that has a module (``layers.py``); the costs
#: have one rule per kind.
LAYER_KINDS = {
    "input": "the network's input (the caller keeps it)",
    "mirror": "reflect-pad the input (``output: same``), in rounds",
    "conv": "convolution (``kernel``, ``stride``, ``pads`` per axis, ``mode`` = padding mode, ``bias``)",
    "conv_transpose": "transposed convolution (``kernel``, ``stride``, ``bias``; ``pads``: its padding and output "
                      "padding per axis, when the kernel is wider than the stride)",
    "max_pool": "max-pooling (``kernel`` = ``stride``)",
    "avg_pool": "average pooling (``kernel`` = ``stride``)",
    "upsample": "interpolation by ``stride`` (``mode``: a torch interpolation mode)",
    "pad": "pad ``pads`` per axis (``mode``: a torch pad mode)",
    "norm": "normalisation (``mode``: batch, instance, group or layer; ``groups``); with ``params`` 0, no learned "
            "scale and shift",
    "act": "activation (``mode``: relu, leaky_relu, elu, gelu, silu, prelu, sigmoid; ``value`` = negative slope)",
    "dropout": "dropout (``value`` = rate); the identity in eval mode",
    "crop": "crop ``crop`` (before, after) per axis: a view",
    "concat": "concatenate the inputs along the channels",
    "add": "add the inputs",
    "mul": "multiply the inputs (an attention gate: the skip by its one-channel map, broadcast over channels)",
    "output_crop": "crop the core's output back to the input's size (``output: same``): a view",
    "final": "sigmoid or softmax over the channels (``mode``)",
}

#: Activations whose modules overwrite their input (autograd supports each in place; ``negative_slope`` is never
#: negative). GELU and PReLU have no in-place form.
IN_PLACE_ACTIVATIONS = frozenset({"relu", "leaky_relu", "elu", "silu"})
#: ``padding_mode`` names → the pad modes of ``torch.nn.functional.pad`` (the pad layer's ``mode``).
PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


@dataclass(frozen=True)
class Layer:
    """One layer of the network, as data.

    Attributes:
        name: its module's path in the built network (``encoder.0.convs.conv0``; a state-dict key is this plus
            ``.weight``), or the path it would have for kinds with no module (``decoder.0.concat``).
        kind: one of :data:`LAYER_KINDS`.
        inputs: the names of the layers whose outputs it reads, in order (``input`` for the network's input).
        shape: its output, ``(channels, *spatial)``.
        cin: channels in (of the first input; a concatenation's is its output's).
        params: its trainable parameters.
        kernel: kernel size per axis (convolutions, pooling).
        stride: stride per axis (convolutions, pooling), or the up-sampling factor.
        pads: ``(before, after)`` per axis: a convolution's zero-or-mode padding, a pad layer's amounts, a mirror's;
            a transposed convolution's ``(padding, output_padding)``.
        crop: ``(before, after)`` per axis that a crop drops.
        mode: the padding mode (convolutions, pads), the norm or activation kind, the interpolation, the final kind.
        bias: whether a convolution has a bias.
        value: an activation's negative slope, a dropout's rate.
        groups: a group norm's groups.
        holds: outputs kept alive until this layer has run, beyond its inputs (what PyTorch keeps while a module
            runs: its call's arguments, a variable the forward still names).
        auxiliary: an auxiliary output (a deep-supervision head): run in training mode, or when the heads are asked
            for; an inference pass skips it.
    """

    name: str
    kind: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    cin: int = 0
    params: int = 0
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    pads: tuple[tuple[int, int], ...] = ()
    crop: tuple[tuple[int, int], ...] = ()
    mode: str = ""
    bias: bool = False
    value: float = 0.0
    groups: int = 0
    holds: tuple[str, ...] = ()
    auxiliary: bool = False

    @property
    def in_place(self) -> bool:
        """Whether the layer's output is its input (a view, an in-place activation, dropout in eval mode)."""
        if self.kind in ("crop", "output_crop", "dropout", "input"):
            return True
        if self.kind == "act":
            return self.mode in IN_PLACE_ACTIVATIONS
        if self.kind == "mirror":
            return not any(a or b for a, b in self.pads)
        return False

    @property
    def pads_anything(self) -> bool:
        """Whether the layer makes up pixels past its input's edge (a padded convolution, a pad layer)."""
        return self.kind in ("conv", "pad") and any(a or b for a, b in self.pads)


@dataclass(frozen=True)
class Block:
    """One row of the plan: a named module of the built network and what comes out of it.

    Attributes:
        name: the module's name in the built network (``encoder.0``, ``decoder.3.up``, ``head``).
        operation: what it does, in words.
        shape: its output, ``(channels, *spatial)``.
        params: its trainable parameters.
        layers: what it does, layer by layer.
    """

    name: str
    operation: str
    shape: tuple[int, ...]
    params: int
    layers: tuple[Layer, ...] = ()


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
    core: bool = True

    @property
    def norms(self) -> frozenset[str]:
        """The kinds of normalisation the network has (``batch``, ``instance``, ``group``, ``layer``)."""
        return frozenset(layer.mode for layer in self.layers if layer.kind == "norm")

    @property
    def depth(self) -> int:
        """Resolution levels, bottleneck included."""
        return len(self.skips) + 1

    @property
    def layers(self) -> tuple[Layer, ...]:
        """Every layer, in the order the network runs them."""
        return tuple(layer for block in self.blocks for layer in block.layers)

    @property
    def main_layers(self) -> tuple[Layer, ...]:
        """The layers an inference pass runs: all but the auxiliary heads."""
        return tuple(layer for layer in self.layers if not layer.auxiliary)

    @property
    def heads(self) -> tuple[Layer, ...]:
        """The outputs, highest resolution first: the main head (before the output crop and final activation), then
        the auxiliary heads of deep supervision by level."""
        heads = [layer for layer in self.layers if layer.auxiliary and layer.kind == "conv"]
        return (self.layer("head"), *sorted(heads, key=lambda layer: _natural(layer.name)))

    def layer(self, name: str) -> Layer:
        """The layer called ``name``.

        Raises:
            KeyError: when there is no such layer.
        """
        for block in self.blocks:
            for layer in block.layers:
                if layer.name == name:
                    return layer
        raise KeyError(name)

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
        """Whether the network mirrors its input and crops its output to the input's size (``output: same``).

        False for the core plan of such a network (``make_plan(..., core=True)``).
        """
        return not self.core

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


def _natural(name: str) -> tuple[Any, ...]:
    """Sort key that orders ``nested.0.10`` after ``nested.0.2``."""
    return tuple(int(part) if part.isdigit() else part for part in name.split("."))


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
        encoder_convs: tuple[int, ...] = ()
        if spec.encoder_blocks is not None:  # a stem, then two convolutions a block
            encoder_convs = tuple(2 * blocks + (level == 0) for level, blocks in enumerate(spec.encoder_blocks))
        axes.append(sizes.AxisGeometry(
            spec.convs_per_level, shrinks, pools, minimums, min_map,
            strided=spec.downsampling == "conv", kernels=tuple(kernels), encoder_convs=encoder_convs,
            decoder_convs=spec.decoder_convs, down=_DOWN_WORDS[spec.downsampling],
        ))
    return tuple(axes)


_DOWN_WORDS = {"maxpool": "max-pools", "avgpool": "average-pools", "conv": "strides over"}


def _norm_needs_two_pixels(spec: UNetSpec) -> bool:
    """Whether a one-pixel map breaks the norm: torch refuses to normalise a single value, even in eval mode
    (instance norm always; group and layer norm when a group holds one channel)."""
    norms = {spec.norm, _decoder_norm(spec)}
    if "instance" in norms:
        return True
    if spec.skip_gate != "none" and norms & {"group", "layer"}:
        return True  # a gate's one-channel map is one group
    widths = {w for level in range(spec.depth) for w in spec.conv_widths(level)}
    for norm in norms:
        groups = {"group": spec.norm_groups, "layer": 1}.get(norm)
        if groups is not None and any(width == groups for width in widths):
            return True
    return False


def _decoder_norm(spec: UNetSpec) -> str:
    """The norm of the decoder's blocks."""
    return spec.norm if spec.decoder_norm is None else spec.decoder_norm


def _decoder_activation(spec: UNetSpec) -> str:
    """The activation of the decoder's blocks."""
    return spec.activation if spec.decoder_activation is None else spec.decoder_activation


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
    spec: UNetSpec, input_size: tuple[int, ...], label: str = "input", same: bool | None = None
) -> tuple[tuple[sizes.Lattice, ...], tuple[sizes.SameOutputIO | None, ...], tuple[sizes.AxisTrace, ...]]:
    dims = spec.spatial_dims
    names = AXIS_NAMES[dims]
    shown = f"{label} {_fmt(input_size)}"
    if len(input_size) != dims:
        given = f"{len(input_size)} size{'s' if len(input_size) != 1 else ''}"
        raise SizeError(f"{shown}: gives {given} for a {dims}D network; give {dims}")
    grids = lattices(spec)
    same = spec.output == "same" if same is None else same
    ios: list[sizes.SameOutputIO | None] = []
    traces: list[sizes.AxisTrace] = []
    for name, size, grid, axis in zip(names, input_size, grids, geometry(spec)):
        where = f"{shown}: {name}" if dims > 1 else shown
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise SizeError(f"{where}: sizes must be positive integers, got {size!r}")
        if same:
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


def _residual_encoder_words(spec: UNetSpec, level: int) -> str:
    """E.g. ``stem conv 3×3, 3× residual block [conv 3×3 stride 2×2, conv 3×3] (instance norm, leaky_relu 0.01)``."""
    kernel = _fmt(spec.kernel(level))
    stride = f" stride {_fmt(spec.pool(level - 1))}" if level > 0 else ""
    extras = (f"{spec.norm} norm, " if spec.norm != "none" else "") + _activation_words(spec)
    count = spec.encoder_blocks[level] if spec.encoder_blocks else 0
    words = f"{count}× residual block [conv {kernel}{stride}, conv {kernel}] ({extras})"
    return f"stem conv {kernel}, {words}" if level == 0 else words


def _activation_words(spec: UNetSpec, activation: str | None = None) -> str:
    activation = spec.activation if activation is None else activation
    return activation if activation != "leaky_relu" else f"leaky_relu {spec.negative_slope:g}"


def _norm_words(spec: UNetSpec, decoder: bool = False) -> str | None:
    """E.g. ``batch norm``, ``instance norm without scale and shift``, or None."""
    norm = _decoder_norm(spec) if decoder else spec.norm
    if norm == "none":
        return None
    return f"{norm} norm" + ("" if spec.decoder_norm_affine or not decoder else " without scale and shift")


def _agree(built: tuple[int, ...], sized: tuple[int, ...], where: str) -> None:
    """The layers' shapes at ``where`` must be the ones ``sizes.py`` worked out; a difference is unetgen's bug."""
    if tuple(built) != tuple(sized):
        raise RuntimeError(f"unetgen bug: {where}'s layers make {built} but the size rules say {sized}; "
                           "please report it with the spec")


def _block_words(spec: UNetSpec, level: int, widths: tuple[int, ...], stride: tuple[int, ...] | None = None,
                 decoder: bool = False) -> str:
    """E.g. ``2× [conv 3×3 valid, relu]`` or ``[conv 3×3×3 → 32, conv 3×3×3 → 64] (batch norm, relu)``."""
    kernel = _fmt(spec.kernel(level))
    pad = spec.padding + (f" {spec.padding_mode}" if spec.padding == "same" and spec.padding_mode != "zeros" else "")
    parts = [f"conv {kernel} {pad}"]
    norm = _norm_words(spec, decoder)
    if norm is not None:
        parts.append(norm)
    parts.append(_activation_words(spec, _decoder_activation(spec) if decoder else None))
    if spec.dropout_at == "every_conv":
        parts.append(f"dropout {spec.dropout:g}")
    if len(set(widths)) == 1:
        words = f"{len(widths)}× [{', '.join(parts)}]"
    else:
        words = f"{len(widths)}× [{', '.join(parts)}] → {'/'.join(map(str, widths))} ch"
    if stride is not None:
        words += f", the first with stride {_fmt(stride)}"
    if spec.block == "residual":
        words = f"residual {words}"
    if spec.dropout_at == "every_level" or (spec.dropout_at == "bottleneck" and level == spec.depth - 1):
        words += f", dropout {spec.dropout:g}"
    return words


class _Layers:
    """Writes down a block's layers in order, each output's shape worked out from the layer's own numbers."""

    def __init__(self, spec: UNetSpec, shapes: dict[str, tuple[int, ...]]) -> None:
        self.spec = spec
        self.shapes = shapes  # every layer's output shape so far, by name
        self.layers: list[Layer] = []

    def add(self, name: str, kind: str, inputs: tuple[str, ...], **fields: Any) -> str:
        """Append a layer reading ``inputs``; returns its name (what the next layer reads)."""
        first = self.shapes[inputs[0]]
        cin = fields.pop("cin", first[0])
        spatial = list(first[1:])
        cout = fields.pop("cout", cin)
        kernel, stride = fields.get("kernel", ()), fields.get("stride", ())
        pads, crop = fields.get("pads", ()), fields.get("crop", ())
        if kind in ("conv", "max_pool", "avg_pool"):
            pads_ = pads or ((0, 0),) * len(spatial)
            spatial = [(n + a + b - k) // s + 1 for n, (a, b), k, s in zip(spatial, pads_, kernel, stride)]
        elif kind in ("conv_transpose", "upsample"):
            spatial = [n * s for n, s in zip(spatial, stride)]
        elif kind in ("pad", "mirror"):
            spatial = [n + a + b for n, (a, b) in zip(spatial, pads)]
        elif kind in ("crop", "output_crop"):
            spatial = [n - a - b for n, (a, b) in zip(spatial, crop)]
        elif kind == "concat":
            cout = sum(self.shapes[name_][0] for name_ in inputs)
            cin = cout
        shape = (cout, *spatial)
        self.shapes[name] = shape
        self.layers.append(Layer(name, kind, inputs, shape, cin=cin, **fields))
        return name

    def unit(self, source: str, width: int, kernel: tuple[int, ...], names: tuple[str, str, str | None],
             stride: tuple[int, ...] | None = None, bias: bool | None = None, decoder: bool = False) -> str:
        """conv → norm → act, named ``names`` (no activation when its name is None); the decoder's norm and
        activation when ``decoder``."""
        spec = self.spec
        dims = len(kernel)
        pads = tuple(((k - 1) // 2,) * 2 for k in kernel) if spec.padding == "same" else ((0, 0),) * dims
        cin = self.shapes[source][0]
        bias = spec.uses_conv_bias if bias is None else bias
        current = self.add(
            names[0], "conv", (source,), cout=width, kernel=kernel, stride=stride or (1,) * dims, pads=pads,
            mode=spec.padding_mode, bias=bias, params=cin * width * math.prod(kernel) + int(bias) * width,
        )
        if (_decoder_norm(spec) if decoder else spec.norm) != "none":
            current = self.norm(names[1], current, decoder=decoder)
        if names[2] is not None:
            current = self.activation(names[2], current, decoder=decoder)
        return current

    def norm(self, name: str, source: str, decoder: bool = False, groups: int | None = None) -> str:
        """The network's norm (the decoder's when ``decoder``), with ``groups`` groups for a group norm."""
        spec = self.spec
        mode = _decoder_norm(spec) if decoder else spec.norm
        affine = spec.decoder_norm_affine or not decoder
        if groups is None:
            groups = {"group": spec.norm_groups, "layer": 1}.get(mode, 0)
        return self.add(name, "norm", (source,), mode=mode, params=2 * self.shapes[source][0] * int(affine),
                        groups=groups if mode in ("group", "layer") else 0)

    def convs(self, prefix: str, source: str, widths: tuple[int, ...], kernel: tuple[int, ...],
              last_activation: bool = True, stride: tuple[int, ...] | None = None, decoder: bool = False) -> str:
        """``conv{i} → norm{i} → act{i}`` for each width (no activation after the last one when told), each
        followed by ``dropout{i}`` with ``dropout_at: every_conv``; the first convolution strides by ``stride``."""
        spec = self.spec
        current = source
        for index, width in enumerate(widths):
            act = f"{prefix}act{index}" if last_activation or index < len(widths) - 1 else None
            current = self.unit(current, width, kernel, (f"{prefix}conv{index}", f"{prefix}norm{index}", act),
                                stride=stride if index == 0 else None, decoder=decoder)
            if spec.dropout_at == "every_conv" and act is not None:
                current = self.add(f"{prefix}dropout{index}", "dropout", (current,), value=spec.dropout)
        return current

    def residual_d(self, prefix: str, source: str, width: int, kernel: tuple[int, ...],
                   stride: tuple[int, ...]) -> str:
        """nnU-Net's BasicBlockD: conv → norm → act → conv → norm, plus the shortcut (average-pooled where the block
        strides, then a 1×1 convolution without bias and a norm where it widens), → act. As
        ``dynamic-network-architectures`` 0.4.4 (``BasicBlockD``): a stride alone gets the pool only."""
        start = len(self.layers)
        body = self.unit(source, width, kernel, (f"{prefix}conv1", f"{prefix}norm1", f"{prefix}act1"), stride=stride)
        body = self.unit(body, width, kernel, (f"{prefix}conv2", f"{prefix}norm2", None))
        shortcut = source
        dims = len(kernel)
        if any(f != 1 for f in stride):
            shortcut = self.add(f"{prefix}skip.pool", "avg_pool", (shortcut,), kernel=stride, stride=stride)
        if self.shapes[source][0] != width:
            shortcut = self.unit(shortcut, width, (1,) * dims, (f"{prefix}skip.conv", f"{prefix}skip.norm", None),
                                 bias=False)
        current = self.add(f"{prefix}add", "add", (body, shortcut))
        current = self.activation(f"{prefix}act2", current)
        self._hold(start, source)
        return current

    def activation(self, name: str, source: str, decoder: bool = False) -> str:
        spec = self.spec
        mode = _decoder_activation(spec) if decoder else spec.activation
        return self.add(name, "act", (source,), mode=mode, value=spec.negative_slope, params=int(mode == "prelu"))

    def block(self, prefix: str, source: str, widths: tuple[int, ...], kernel: tuple[int, ...], dropout: float,
              stride: tuple[int, ...] | None = None, decoder: bool = False) -> str:
        """A level's block, reading ``source``: plain or residual, then dropout; the call holds its input."""
        spec = self.spec
        start = len(self.layers)
        if spec.block == "plain":
            current = self.convs(prefix, source, widths, kernel, stride=stride, decoder=decoder)
        else:
            body = self.convs(f"{prefix}body.", source, widths, kernel, last_activation=False, stride=stride,
                              decoder=decoder)
            shortcut = source
            if self.shapes[source][0] != widths[-1]:
                bias = spec.uses_conv_bias
                cin = self.shapes[source][0]
                dims = len(kernel)
                shortcut = self.add(
                    f"{prefix}projection", "conv", (source,), cout=widths[-1], kernel=(1,) * dims, stride=(1,) * dims,
                    pads=((0, 0),) * dims, mode="zeros", bias=bias, params=cin * widths[-1] + int(bias) * widths[-1],
                )
            margins = tuple(
                (m, m) for m in ((a - b) // 2 for a, b in zip(self.shapes[shortcut][1:], self.shapes[body][1:]))
            )
            shortcut = self.add(f"{prefix}crop", "crop", (shortcut,), crop=margins)
            current = self.add(f"{prefix}add", "add", (body, shortcut))
            current = self.activation(f"{prefix}act", current, decoder=decoder)
        if dropout > 0:
            current = self.add(f"{prefix}dropout", "dropout", (current,), value=dropout)
        self._hold(start, source)
        return current

    def up(self, prefix: str, source: str, cout: int, factor: tuple[int, ...]) -> tuple[str, str]:
        """The up-sampling ``{prefix}.up`` of ``source`` by ``factor`` to ``cout`` channels (a transposed
        convolution, interpolation and a convolution, or interpolation alone), then the network's norm and
        activation with ``up_norm_act``; the call holds its input.

        Returns:
            The output's name and the words for the summary.
        """
        spec = self.spec
        dims = len(factor)
        start = len(self.layers)
        below = self.shapes[source][0]
        mode = "nearest" if spec.interpolation == "nearest" else {1: "linear", 2: "bilinear", 3: "trilinear"}[dims]
        if spec.upsampling == "interpolate":
            return (self.add(f"{prefix}.up", "upsample", (source,), stride=factor, mode=mode),
                    f"upsample ×{_fmt(factor)} ({mode})")
        if spec.upsampling == "transpose":
            # An odd kernel is padded by (k − 1)/2, and by f − 1 more at the far end (torch's output_padding):
            # exactly f times the size (MONAI's UpConv).
            kernel = tuple(f if spec.up_kernel_size is None else spec.up_kernel_size for f in factor)
            padded = spec.up_kernel_size is not None and spec.up_kernel_size % 2 == 1
            pads = tuple(((k - 1) // 2, f - 1) for k, f in zip(kernel, factor))
            words = f"transposed conv {_fmt(kernel)}, stride {_fmt(factor)}" + (" (padded)" if padded else "")
            current = self.add(
                f"{prefix}.up.conv" if spec.up_norm_act else f"{prefix}.up", "conv_transpose", (source,), cout=cout,
                kernel=kernel, stride=factor, pads=pads if padded else (), bias=spec.up_bias,
                params=below * cout * math.prod(kernel) + int(spec.up_bias) * cout,
            )
        else:
            words = f"upsample ×{_fmt(factor)} ({mode}) → conv {_fmt(factor)} (padded at the far side)"
            current = self.add(f"{prefix}.up.upsample", "upsample", (source,), stride=factor, mode=mode)
            current = self.add(f"{prefix}.up.pad", "pad", (current,), pads=tuple((0, f - 1) for f in factor),
                               mode=PAD_MODES[spec.padding_mode])
            current = self.add(f"{prefix}.up.conv", "conv", (current,), cout=cout, kernel=factor, stride=(1,) * dims,
                               pads=((0, 0),) * dims, mode="zeros", bias=spec.up_bias,
                               params=below * cout * math.prod(factor) + int(spec.up_bias) * cout)
        if spec.up_norm_act:
            if spec.norm != "none":
                current = self.norm(f"{prefix}.up.norm", current)
            current = self.activation(f"{prefix}.up.act", current)
            words += ", " + ", ".join(filter(None, (_norm_words(spec), _activation_words(spec))))
        if len(self.layers) - start > 1:
            self._hold(start, source)
        return current, words

    def gate(self, prefix: str, skip: str, below: str, up: str, factor: tuple[int, ...], index: int | None = None) -> str:
        """The additive attention gate ``{prefix}.gate`` on the (cropped) skip ``skip`` (Oktay et al. 2018):
        ``skip × σ(psi(relu(key(skip) + query(g))))``, with MONAI's design (``attention``: g the up-sampled map
        ``up``, every convolution 1×1 and normalised) or Oktay et al.'s grid gate (``grid_attention``: g the map
        below, ``below``; the key strides by ``factor`` onto its grid, the map is linearly up-sampled back, and a
        1×1 convolution and norm follow). Norms in the gate have one group (its map has one channel); the call
        holds both its inputs.

        Returns:
            The gated skip's name.
        """
        spec = self.spec
        dims = len(factor)
        ones = (1,) * dims
        channels = self.shapes[skip][0]
        inner = max(1, channels // spec.gate_reduction)
        name = f"{prefix}.gate." if index is None else f"{prefix}.gate.gates.{index}."  # ``gates_per_level: 2``

        def conv(suffix: str, source: str, cout: int, kernel: tuple[int, ...] = ones, bias: bool = True) -> str:
            cin = self.shapes[source][0]
            return self.add(name + suffix, "conv", (source,), cout=cout, kernel=kernel, stride=kernel,
                            pads=((0, 0),) * dims, mode="zeros", bias=bias,
                            params=cin * cout * math.prod(kernel) + int(bias) * cout)

        def norm(suffix: str, source: str) -> str:
            return source if spec.norm == "none" else self.norm(name + suffix, source, groups=1)

        monai = spec.skip_gate == "attention"
        if monai:
            key = norm("key_norm", conv("key", skip, inner))
            query = norm("query_norm", conv("query", up, inner))
        else:
            key = conv("key", skip, inner, kernel=factor, bias=False)
            query = conv("query", below, inner)
        current = self.add(name + "add", "add", (key, query))
        current = self.add(name + "act", "act", (current,), mode="relu")
        current = conv("psi", current, 1)
        if monai:
            current = norm("psi_norm", current)
        current = self.add(name + "sigmoid", "act", (current,), mode="sigmoid")
        if not monai:
            mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[dims]
            current = self.add(name + "resample", "upsample", (current,), stride=factor, mode=mode)
        current = self.add(name + "mul", "mul", (skip, current))
        if not monai:
            current = norm("out_norm", conv("out", current, channels))
        last = self.layers[-1]
        self.layers[-1] = dataclasses.replace(last, holds=last.holds + (skip, up if monai else below))
        return current

    def _hold(self, start: int, source: str) -> None:
        """The module call that ran ``layers[start:]`` keeps its argument ``source`` alive to its end."""
        last = self.layers[-1]
        self.layers[-1] = dataclasses.replace(last, holds=last.holds + (source,))

    def take(self) -> tuple[Layer, ...]:
        """The layers written since the last call."""
        layers, self.layers = tuple(self.layers), []
        return layers


def _gate_words(spec: UNetSpec, channels: int, factor: tuple[int, ...]) -> str:
    """E.g. ``attention gate (MONAI): skip × σ(1-ch conv of relu(conv skip + conv up-sampled map, 16 ch))``."""
    inner = max(1, channels // spec.gate_reduction)
    ones = _fmt((1,) * len(factor))
    norm = f", {spec.norm} norm" if spec.norm != "none" else ""
    if spec.skip_gate == "attention":
        return (f"attention gate (MONAI): skip × σ(1-ch conv {ones}{norm} of relu(conv skip + conv up-sampled map, "
                f"{inner} ch{norm}))")
    return (f"grid attention gate (Oktay): skip × σ(1-ch conv of relu(conv {_fmt(factor)} stride "
            f"{_fmt(factor)} skip + conv map below, {inner} ch)) ×{_fmt(factor)} linear, then conv {ones}{norm}")


def _nested(write: _Layers, spec: UNetSpec, outputs: list[str], skips: list[Skip], block: Any, dropout_at: Any,
            output_size: tuple[int, ...]) -> str:
    """UNet++'s nodes (Zhou et al. 2018): X(i, j) = H([X(i, 0), ..., X(i, j − 1), U(X(i + 1, j − 1))]), each
    earlier node of the row centre-cropped to the up-sampled map, written row by row from the bottom (each row
    needs only the row below, so two rows are alive at a time). The auxiliary heads of deep supervision sit on
    the top row's first nodes, cropped to the main output. Returns the last node of the top row.
    """
    shapes = write.shapes
    channels = spec.level_channels
    dims = spec.spatial_dims
    ones = (1,) * dims
    rows = {level: [outputs[level]] for level in range(spec.depth)}
    for i in reversed(range(spec.depth - 1)):
        factor = spec.pool(i)
        for j in range(1, spec.depth - i):
            prefix = f"nested.{i}.{j}"
            below = rows[i + 1][j - 1]
            cout = channels[i] if spec.up_channels == "halve" else channels[i + 1]
            up, up_words = write.up(prefix, below, cout, factor)
            crops, margins = [], []
            for k, node in enumerate(rows[i]):
                margin = []
                for axis, (have, need) in enumerate(zip(shapes[node][1:], shapes[up][1:])):
                    if have < need or (have - need) % 2:
                        where = f"axis {AXIS_NAMES[dims][axis]}: " if dims > 1 else ""
                        raise SizeError(
                            f"{where}{prefix} cannot centre-crop X({i}, {k}) ({have}) to the up-sampled map ({need}); "
                            "no input size gives an even margin here: change the kernels or the pool factors"
                        )
                    margin.append(((have - need) // 2,) * 2)
                margins.append(tuple(m[0] for m in margin))
                crops.append(write.add(f"{prefix}.crops.{k}", "crop", (node,), crop=tuple(margin)))
            joined = write.add(f"{prefix}.concat", "concat", (*crops, up))
            widths = (channels[i],) * spec.level_decoder_convs
            current = write.block(f"{prefix}.convs.", joined, widths, spec.kernel(i), dropout_at(i), decoder=True)
            last = write.layers[-1]  # the node's call holds the map below and its row to its end
            write.layers[-1] = dataclasses.replace(last, holds=last.holds + (below, *rows[i]))
            members = ", ".join(f"X({i}, {k})" for k in range(j))
            cropped = " (centre-cropped)" if any(any(m) for m in margins) else ""
            block(prefix, f"{up_words} of X({i + 1}, {j - 1}); concat {members}{cropped} → {shapes[joined][0]} ch, "
                          f"{_block_words(spec, i, widths, decoder=True)}")
            if j == spec.depth - 1 - i:
                skips.append(Skip(i, shapes[outputs[i]][1:], shapes[up][1:], margins[0]))
            rows[i].append(current)
            if i == 0 and j <= spec.deep_supervision:
                trim = tuple(((a - b) // 2,) * 2 for a, b in zip(shapes[current][1:], output_size))
                head = write.add(f"{prefix}.head_crop", "crop", (current,), crop=trim, auxiliary=True)
                write.add(f"{prefix}.head", "conv", (head,), cout=spec.out_channels, kernel=ones, stride=ones,
                          pads=((0, 0),) * dims, mode="zeros", bias=True, auxiliary=True,
                          params=channels[0] * spec.out_channels + spec.out_channels)
                block(f"{prefix}.head", f"conv {_fmt(ones)} of X(0, {j}), auxiliary output (deep supervision)"
                      + (", centre-cropped to the main output" if any(any(t) for t in trim) else ""))
    return rows[0][-1]


def pruned_spec(spec: UNetSpec, columns: int) -> UNetSpec:
    """UNet++ pruned at inference (Zhou et al. 2018, sec. 2.3): the nodes X(i, j) with i + j ≤ ``columns``.

    They are a nested network of depth ``columns + 1`` with the same levels, whose nodes have the same names and
    sizes; its output is the head on X(0, ``columns``) (``UNet.pruned`` shares the full network's weights with it).
    The deep-supervision heads it keeps are the full network's on columns below ``columns``.

    Args:
        spec: a nested network (``skips: nested``).
        columns: the columns to keep, from 1 to ``depth − 1``.

    Returns:
        The pruned network's spec.

    Raises:
        SpecError: when the network is not nested, ``columns`` is out of range, or X(0, ``columns``) has no head.
    """
    last = spec.depth - 1
    if spec.skips != "nested":
        raise SpecError(f"{spec.name}: pruning keeps the first columns of UNet++'s nodes; it needs skips: nested")
    if isinstance(columns, bool) or not isinstance(columns, int) or not 1 <= columns <= last:
        raise SpecError(f"{spec.name}: columns {columns!r}; a nested network of depth {spec.depth} has columns 1 "
                        f"to {last}")
    if columns < last and columns > spec.deep_supervision:
        raise SpecError(
            f"{spec.name}: X(0, {columns}) has no head to output from; deep_supervision puts heads on the first "
            f"{spec.deep_supervision} columns (build with deep_supervision: {columns} or more, and train them)"
        )
    depth = columns + 1
    changes: dict[str, Any] = {"depth": depth, "deep_supervision": min(spec.deep_supervision, columns - 1),
                               "input_size": None}
    for name, keep in (("channels", depth), ("kernel_sizes", depth), ("pool_sizes", depth - 1),
                       ("encoder_blocks", depth)):
        if getattr(spec, name) is not None:
            changes[name] = getattr(spec, name)[:keep]
    if spec.dropout_at == "bottleneck" and columns < last:  # the pruned levels held it
        changes.update(dropout=0.0, dropout_at="none")
    return spec.replace(**changes)


def make_plan(
    spec: UNetSpec, input_size: tuple[int, ...] | list[int] | None = None, *, core: bool = False
) -> Plan:
    """Work out every layer of ``spec`` at ``input_size``, without building anything.

    Args:
        spec: the network.
        input_size: spatial input size, one value per axis; default :func:`default_input_size`.
        core: plan the core network only: for ``output: same``, without the mirroring and the output crop (it then
            takes only the sizes of the lattices, like an ``output: crop`` network).

    Returns:
        The plan.

    Raises:
        SizeError: when the network cannot take ``input_size`` (the message names the level and the reason and
            gives the nearest valid sizes).
    """
    size = default_input_size(spec) if input_size is None else tuple(input_size)
    label = "the spec's input_size" if input_size is None and spec.input_size is not None else "input"
    same = spec.output == "same" and not core
    grids, ios, traces = _resolve_sizes(spec, size, label, same)
    dims = spec.spatial_dims
    channels = spec.level_channels
    shapes: dict[str, tuple[int, ...]] = {"input": (spec.in_channels, *size)}
    write = _Layers(spec, shapes)

    def spatial(pick: Any) -> tuple[int, ...]:
        return tuple(pick(trace) for trace in traces)

    def dropout_at(level: int) -> float:
        if spec.dropout_at == "every_level" or (spec.dropout_at == "bottleneck" and level == spec.depth - 1):
            return spec.dropout
        return 0.0

    blocks: list[Block] = []

    def block(name: str, words: str) -> None:
        layers = write.take()
        blocks.append(Block(name, words, layers[-1].shape, sum(layer.params for layer in layers), layers))

    mirror = tuple(io.pad if io else (0, 0) for io in ios)
    core_input = tuple(io.core_input if io else s for io, s in zip(ios, size))
    current = "input"
    if same:
        pads = ", ".join(f"{a}+{b}" for a, b in mirror)
        current = write.add("pad_input", "mirror", (current,), pads=mirror, mode="reflect")
        block("pad_input", f"mirror (reflect) {pads} → {_fmt(core_input)}")
    outputs: list[str] = []
    for level in range(spec.depth):
        name = sizes.level_name(level, spec.depth)
        source = current
        start = len(write.layers)
        factor = spec.pool(level - 1) if level > 0 else None
        stride = factor if spec.downsampling == "conv" else None
        if spec.encoder_blocks is not None:
            words = _residual_encoder_words(spec, level)
            width, kernel = spec.level_channels[level], spec.kernel(level)
            if level == 0:
                current = write.unit(current, width, kernel, (f"{name}.stem.conv", f"{name}.stem.norm",
                                                               f"{name}.stem.act"))
            stem = current
            for index in range(spec.encoder_blocks[level]):
                current = write.residual_d(f"{name}.blocks.{index}.", current, width, kernel,
                                           stride if index == 0 and stride else (1,) * dims)
            if level == 0:
                write._hold(start, stem)  # the blocks' call keeps the stem's output to its end
        else:
            words = _block_words(spec, level, spec.conv_widths(level), stride)
            if factor is not None and stride is None:
                kind = "max_pool" if spec.downsampling == "maxpool" else "avg_pool"
                words = f"{spec.downsampling} {_fmt(factor)} → {words}"
                current = write.add(f"{name}.pool", kind, (current,), kernel=factor, stride=factor)
            current = write.block(f"{name}.convs.", current, spec.conv_widths(level), spec.kernel(level),
                                  dropout_at(level), stride)
        if level == 0 and source != "input":
            write._hold(0, source)  # the level's call keeps the mirrored input to its end
        _agree(shapes[current][1:], spatial(lambda t, lv=level: t.encoder[lv]), f"encoder.{level}")
        outputs.append(current)
        block(name, words)
    skips: list[Skip] = []
    ones = (1,) * dims
    fused: list[str] = []  # ``fused_heads``: each decoder level's classes at the top level's size
    if spec.skips == "nested":
        current = _nested(write, spec, outputs, skips, block, dropout_at, spatial(lambda t: t.output))
    below = channels[-1]
    for level in reversed(range(spec.depth - 1) if spec.skips == "plain" else ()):
        factor = spec.pool(level)
        cup = channels[level] if spec.up_channels == "halve" else below
        up_size = spatial(lambda t, lv=level: t.up[lv])
        prefix = f"decoder.{level}"
        below_map = current
        up, up_words = write.up(prefix, current, cup, factor)
        _agree(shapes[up][1:], up_size, f"decoder.{level}.up")
        block(f"{prefix}.up", up_words)
        source = spatial(lambda t, lv=level: t.encoder[lv])
        crop = spatial(lambda t, lv=level: t.crop[lv])
        skips.append(Skip(level, source, up_size, crop))
        if any(crop):
            per_side = str(crop[0]) if len(set(crop)) == 1 else "/".join(str(c) for c in crop)
            crop_words = f"centre-crop encoder.{level} {_fmt(source)} → {_fmt(up_size)} ({per_side} per side)"
        else:
            crop_words = f"encoder.{level} as is ({_fmt(source)})"
        cropped = write.add(f"{prefix}.crop", "crop", (outputs[level],), crop=tuple((c, c) for c in crop))
        block(f"{prefix}.crop", crop_words)
        gated, holds = cropped, (below_map,)
        if spec.skip_gate != "none" and (spec.gate_levels is None or level in spec.gate_levels):
            signal = below_map
            if spec.gating_conv and level == spec.depth - 2:  # Oktay et al.'s gating signal, on the bottleneck
                width = shapes[below_map][0]
                signal = write.unit(below_map, width, ones, (f"{prefix}.signal.conv", f"{prefix}.signal.norm",
                                                             f"{prefix}.signal.act"))
                block(f"{prefix}.signal", f"gating signal: conv {_fmt(ones)}, {width} ch")
            if spec.gates_per_level == 1:
                gated = write.gate(prefix, cropped, signal, up, factor)
            else:  # Oktay et al.'s MultiAttentionBlock: two gates, concatenated, combined by a 1×1 convolution
                both = tuple(write.gate(prefix, cropped, signal, up, factor, index) for index in range(2))
                joined_gates = write.add(f"{prefix}.gate.concat", "concat", both)
                gated = write.unit(joined_gates, shapes[cropped][0], ones, (
                    f"{prefix}.gate.combine.conv0", f"{prefix}.gate.combine.norm0", f"{prefix}.gate.combine.act0"))
                # the module's call holds its arguments, its list of the gates' outputs and (the combining block's
                # argument) their concatenation until it returns
                last = write.layers[-1]
                write.layers[-1] = dataclasses.replace(last, holds=last.holds + (*both, joined_gates, cropped, signal))
            holds += (cropped,)  # the encoder's map stays named until the concatenation
            words = _gate_words(spec, write.shapes[gated][0], factor)
            if spec.gates_per_level == 2:  # Oktay et al.'s MultiAttentionBlock
                inner = max(1, write.shapes[gated][0] // spec.gate_reduction)
                words = (f"2 grid attention gates (Oktay, {inner} ch each) on the skip and the map below, "
                         f"concat → conv {_fmt(ones)}, {spec.norm} norm, {spec.activation}")
            block(f"{prefix}.gate", words)
        widths = (channels[level],) * spec.level_decoder_convs
        joined = write.add(f"{prefix}.concat", "concat", (gated, up), holds=holds)
        current = write.block(f"{prefix}.convs.", joined, widths, spec.kernel(level), dropout_at(level),
                              decoder=True)
        _agree(shapes[current][1:], spatial(lambda t, lv=level: t.decoder[lv]), f"decoder.{level}")
        words = f"concat → {shapes[joined][0]} ch, {_block_words(spec, level, widths, decoder=True)}"
        block(f"{prefix}.convs", words)
        if spec.fused_heads:  # Oktay et al.'s deep supervision: this level's classes, at the top level's size
            scale = tuple(math.prod(f) for f in zip(*(spec.pool(lv) for lv in range(level)))) if level else ones
            fused_map = write.add(f"{prefix}.dsv.conv", "conv", (current,), cout=spec.out_channels, kernel=ones,
                                  stride=ones, pads=((0, 0),) * dims, mode="zeros", bias=True,
                                  params=channels[level] * spec.out_channels + spec.out_channels)
            words = f"conv {_fmt(ones)} → {spec.out_channels} ch"
            if level:
                mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[dims]
                fused_map = write.add(f"{prefix}.dsv.up", "upsample", (fused_map,), stride=scale, mode=mode)
                words += f", ×{_fmt(scale)} {mode}"
            fused.append(fused_map)
            block(f"{prefix}.dsv", words + " (fused into the output)")
        if 0 < level <= spec.deep_supervision:
            write.add(f"{prefix}.head", "conv", (current,), cout=spec.out_channels, kernel=(1,) * dims,
                      stride=(1,) * dims, pads=((0, 0),) * dims, mode="zeros", bias=True, auxiliary=True,
                      params=channels[level] * spec.out_channels + spec.out_channels)
            block(f"{prefix}.head", f"conv {_fmt((1,) * dims)}, auxiliary output (deep supervision)")
        below = channels[level]
    head_words = f"conv {_fmt(ones)}"
    if fused:
        current = write.add("fused", "concat", tuple(reversed(fused)))  # the top level's first
        head_words = f"concat the levels' classes → {shapes[current][0]} ch, {head_words}"
    current = write.add("head", "conv", (current,), cout=spec.out_channels, kernel=ones, stride=ones,
                        pads=((0, 0),) * dims, mode="zeros", bias=True,
                        params=shapes[current][0] * spec.out_channels + spec.out_channels)
    block("head", head_words)
    output_crop = tuple(io.crop if io else (0, 0) for io in ios)
    if same:
        current = write.add("crop_output", "output_crop", (current,), crop=output_crop)
        block("crop_output", f"crop to the input's size {_fmt(shapes[current][1:])}")
    if spec.final_activation != "none":
        words = {"sigmoid": "sigmoid", "softmax": "softmax over channels"}[spec.final_activation]
        write.add("final", "final", (current,), mode=spec.final_activation)
        block("final", words)
    layers = [layer for b in blocks for layer in b.layers]
    return Plan(
        spec=spec,
        input_size=size,
        output_size=blocks[-1].shape[1:],
        core_input_size=core_input,
        mirror=mirror,
        output_crop=output_crop,
        blocks=tuple(blocks),
        skips=tuple(skips),
        lattices=grids,
        parameters=sum(b.params for b in blocks),
        norm_parameters=sum(layer.params for layer in layers if layer.kind == "norm"),
        conv_layers=sum(layer.kind in ("conv", "conv_transpose") for layer in layers),
        axis_names=AXIS_NAMES[dims],
        core=not same,
    )
