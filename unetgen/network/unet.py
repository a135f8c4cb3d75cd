"""Plan → ``nn.Module``: the U-Net itself, with module names taken from the plan.

``build(spec)`` plans the spec, then builds a plain PyTorch module whose state-dict keys name the levels
(``encoder.0.convs.conv0.weight``, ``bottleneck``, ``decoder.3.up``, ``head``) exactly as the plan's rows do.
The module works with ``torch.jit.script``, ``torch.export`` and ``torch.compile``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import List, Tuple, Union

import torch
from torch import nn

from ..planning import sizes
from .layers import (
    AttentionGate,
    CentreCrop,
    ConvBlock,
    MirrorPad,
    MultiGate,
    NestedNode,
    NoGate,
    OutputCrop,
    ResidualBlock,
    ResidualBlockD,
    UpConv,
    UpsampleConv,
    modules_under,
    own_module,
)
from ..planning.limits import check_pass_fits, check_weights_fit, memory_limit
from ..planning.plan import Plan, check_input_size, make_plan, pruned_spec
from ..spec.fields import UNetSpec, load_spec


class EncoderLevel(nn.Module):
    """One level of the contracting path: max-pool (below the top level), then the convolution block."""

    def __init__(self, pool: nn.Module | None, convs: nn.Module) -> None:
        """Args:
        pool: the max-pool, or None at the top level.
        convs: the level's block.
        """
        super().__init__()
        self.pool = pool if pool is not None else nn.Identity()
        self.convs = convs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(self.pool(x))


class ResidualEncoderLevel(nn.Module):
    """One level of a residual encoder (nnU-Net's ResEnc): the stem (top level only), then residual blocks, the
    first of which strides."""

    def __init__(self, stem: nn.Module | None, blocks: nn.Module) -> None:
        """Args:
        stem: conv → norm → act at the top level, else None.
        blocks: the level's residual blocks.
        """
        super().__init__()
        self.stem = stem if stem is not None else nn.Identity()
        self.blocks = blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))


class DecoderLevel(nn.Module):
    """One level of the expanding path: up-convolution, centre-crop of the skip (and its attention gate),
    concatenation, convolutions."""

    def __init__(self, up: nn.Module, crop: CentreCrop, convs: nn.Module, head: nn.Module | None = None,
                 gate: nn.Module | None = None, gate_on_up: bool = True, signal: nn.Module | None = None,
                 dsv: nn.Module | None = None) -> None:
        """Args:
        up: the up-convolution.
        crop: the skip connection's centre crop, its margins from the plan.
        convs: the level's block.
        head: the level's auxiliary 1×1 head (deep supervision), or None.
        gate: the skip's attention gate, or None.
        gate_on_up: whether the gate's gating signal is the up-sampled map (MONAI's design) rather than the map
            below (Oktay et al.'s grid gate).
        signal: what the gating signal passes first (``gating_conv``), or None.
        dsv: the level's 1×1 convolution (and up-sampling) fused into the output (``fused_heads``), or None.
        """
        super().__init__()
        self.up = up
        self.crop = crop
        self.gate = gate if gate is not None else NoGate()
        self.gate_on_up: bool = gate_on_up
        self.convs = convs
        self.has_head: bool = head is not None
        self.head = head if head is not None else nn.Identity()
        self.signal = signal if signal is not None else nn.Identity()
        self.has_dsv: bool = dsv is not None
        self.dsv = dsv if dsv is not None else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.up(x)
        skip = self.gate(self.crop(skip), self.signal(up if self.gate_on_up else x))
        return self.convs(torch.cat([skip, up], dim=1))


class UNet(nn.Module):
    """A U-Net built from a plan. Use :func:`build` rather than calling this directly.

    Attributes:
        spec: the spec it was built from.
        plan: the plan at the spec's default input size.
    """

    def __init__(self, plan: Plan) -> None:
        """Args:
        plan: the plan to build: one module per planned layer (:func:`~unetgen.network.layers.make_module`),
            gathered into the blocks the plan names.
        """
        super().__init__()
        dims = len(plan.input_size)
        self.spec = plan.spec
        self.plan = plan
        self.spatial_dims = dims
        self.same_output = plan.same_output
        self._checked: set[tuple[object, ...]] = set()  # input shapes already checked (see check())
        # The lattice of valid core sizes per axis, as plain ints for the same-output arithmetic in forward().
        self.lattice_first: List[int] = [grid.first for grid in plan.lattices]
        self.lattice_step: List[int] = [grid.step for grid in plan.lattices]
        self.lattice_border: List[int] = [grid.border for grid in plan.lattices]
        layers = plan.layers

        def block(prefix: str) -> nn.Module:
            """A level's block (``…convs.``): plain layers in a row, or residual when the plan adds a shortcut."""
            own = modules_under(layers, prefix, dims)
            if prefix + "add" not in names:
                return ConvBlock(own)
            return ResidualBlock(
                nn.Sequential(modules_under(layers, prefix + "body.", dims)),
                own.get("projection"), own["crop"], own["act"], own.get("dropout"),
            )

        names = {layer.name for layer in layers}
        levels: list[nn.Module] = []
        for level in range(plan.depth):
            name = sizes.level_name(level, plan.depth)
            if f"{name}.blocks.0.conv1" in names:  # a residual encoder level (nnU-Net's ResEnc)
                count = sum(f"{name}.blocks.{i}.conv1" in names for i in range(len(layers)))
                blocks = [
                    ResidualBlockD(modules_under(layers, f"{name}.blocks.{i}.", dims),
                                   modules_under(layers, f"{name}.blocks.{i}.skip.", dims))
                    for i in range(count)
                ]
                stem = modules_under(layers, f"{name}.stem.", dims)
                levels.append(ResidualEncoderLevel(nn.Sequential(stem) if stem else None, nn.Sequential(*blocks)))
                continue
            pool = own_module(layers, f"{name}.pool", dims)
            levels.append(EncoderLevel(pool, block(f"{name}.convs.")))
        self.encoder = nn.ModuleList(levels[:-1])
        self.bottleneck = levels[-1]
        # Deepest level first: the order the decoder runs in; the keys still name the levels.
        def up(prefix: str) -> nn.Module:
            """The up-sampling: one module, or its layers in a row."""
            single = own_module(layers, f"{prefix}.up", dims)
            if single is not None:
                return single
            parts = modules_under(layers, f"{prefix}.up.", dims)
            return UpsampleConv(parts) if "upsample" in parts else UpConv(parts)

        decoder: dict[str, nn.Module] = {}
        nested: dict[str, nn.ModuleDict] = {}
        is_nested = any(name.startswith("nested.") for name in names)
        for skip in plan.skips if not is_nested else ():
            prefix = f"decoder.{skip.level}"
            crop = own_module(layers, f"{prefix}.crop", dims)
            head = own_module(layers, f"{prefix}.head", dims)
            gate: nn.Module | None = None
            if f"{prefix}.gate.mul" in names:
                gate = AttentionGate(modules_under(layers, f"{prefix}.gate.", dims))
            elif f"{prefix}.gate.gates.0.mul" in names:  # gates_per_level: 2
                gates = [AttentionGate(modules_under(layers, f"{prefix}.gate.gates.{i}.", dims)) for i in range(2)]
                gate = MultiGate(gates, ConvBlock(modules_under(layers, f"{prefix}.gate.combine.", dims)))
            gate_on_up = not any(f"{prefix}.gate.{part}resample" in names for part in ("", "gates.0."))
            signal = modules_under(layers, f"{prefix}.signal.", dims)
            dsv = modules_under(layers, f"{prefix}.dsv.", dims)
            decoder[str(skip.level)] = DecoderLevel(up(prefix), crop, block(f"{prefix}.convs."), head, gate,
                                                    gate_on_up, ConvBlock(signal) if signal else None,
                                                    nn.Sequential(dsv) if dsv else None)
        for level in reversed(range(plan.depth - 1) if is_nested else ()):  # UNet++'s nodes, bottom row first
            row: dict[str, nn.Module] = {}
            for column in range(1, plan.depth - level):
                prefix = f"nested.{level}.{column}"
                if f"{prefix}.concat" not in names:
                    break
                crops = [own_module(layers, f"{prefix}.crops.{k}", dims) for k in range(column)]
                row[str(column)] = NestedNode(up(prefix), crops, block(f"{prefix}.convs."),
                                              own_module(layers, f"{prefix}.head_crop", dims),
                                              own_module(layers, f"{prefix}.head", dims))
            if row:
                nested[str(level)] = nn.ModuleDict(row)
        self.decoder = nn.ModuleDict(decoder)
        #: UNet++'s nodes (``skips: nested``) by row, then column: ``nested.1.2`` is X(1, 2); empty otherwise.
        self.nested = nn.ModuleDict(nested)
        self.is_nested: bool = bool(nested)
        self.head = own_module(layers, "head", dims)
        #: Whether the output fuses every decoder level's classes (``fused_heads``).
        self.fused_heads: bool = "fused" in names
        self.pad_input = MirrorPad()
        self.crop_output = OutputCrop()
        self.final = own_module(layers, "final", dims) or nn.Identity()
        #: Whether the network has auxiliary heads (deep supervision), and whether eval mode returns them too.
        self.deep_supervision: bool = len(plan.heads) > 1
        self.return_heads: bool = False

    @torch.jit.unused
    def check(self, x: torch.Tensor) -> None:
        """Raise :class:`~unetgen.errors.SizeError` if the network cannot take ``x`` (same message as the plan)."""
        from ..errors import SizeError

        if x.dim() != self.spatial_dims + 2:
            raise SizeError(
                f"input has shape {tuple(x.shape)}; expected (batch, {self.spec.in_channels}, "
                f"{', '.join(['size'] * self.spatial_dims)})"
            )
        if x.shape[1] != self.spec.in_channels:
            raise SizeError(f"input has {x.shape[1]} channels; the network takes {self.spec.in_channels}")
        key = (tuple(int(s) for s in x.shape), x.element_size(), x.device.type, memory_limit())
        if key in self._checked:  # a training loop sees the same shapes again and again
            return
        size = key[0][2:]
        if x.device.type == "cpu":  # the limit is about this machine's memory
            check_pass_fits(make_plan(self.spec, size), batch=key[0][0], bytes_per_value=x.element_size())
        else:
            check_input_size(self.spec, size)
        if len(self._checked) < 1024:
            self._checked.add(key)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Segment ``x`` of shape ``(batch, in_channels, *spatial)``.

        Returns:
            The output; with deep supervision, in training mode (or with ``return_heads`` set), the list of outputs,
            highest resolution first: the main output, then each auxiliary head's (nnU-Net's convention).

        Raises:
            SizeError: (in eager mode) when the network cannot take ``x``'s shape.
            ResourceError: (in eager mode, on the CPU) when the pass would need more memory than the limit.
        """
        if not torch.jit.is_scripting():
            if not (torch.jit.is_tracing() or torch.compiler.is_compiling() or _is_exporting()):
                self.check(x)
        margins: List[Tuple[int, int]] = []
        rounds: List[List[int]] = []
        if self.same_output:
            rounds, margins = self._same_output(x)
        heads = self.deep_supervision and (self.training or self.return_heads)
        outputs = self._run(x, rounds, self.same_output, heads)
        x = outputs[0]
        if self.same_output:
            x = self.crop_output(x, margins)
        if len(outputs) == 1:
            return self.final(x)
        return [self.final(x)] + [self.final(head) for head in outputs[1:]]

    def forward_core(self, x: torch.Tensor) -> torch.Tensor:
        """The network without the mirroring and the output crop of ``output: same``: a valid network that takes the
        sizes of ``plan.lattices`` and returns its output less ``plan.border`` per side (the final activation
        not included). For every network this is what ``forward`` runs on the mirrored input."""
        return self._run(x, [], False, False)[0]

    def _encode(self, x: torch.Tensor, rounds: List[List[int]], mirror: bool
                ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Mirror by ``rounds`` (when ``mirror``), then the contracting path: the bottleneck's map and each encoder
        level's (the skips, top first). The mirrored input is this frame's alone, released once the first level has
        used it."""
        if mirror:
            x = self.pad_input(x, rounds)
        skips: List[torch.Tensor] = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
        return self.bottleneck(x), skips

    def _run(self, x: torch.Tensor, rounds: List[List[int]], mirror: bool, heads: bool) -> List[torch.Tensor]:
        """Mirror by ``rounds`` (when ``mirror``), then the core network: its main output, then (with ``heads``)
        the auxiliary heads' outputs, highest resolution first."""
        if self.is_nested:
            return self._run_nested(x, rounds, mirror, heads)
        x, skips = self._encode(x, rounds, mirror)
        auxiliary: List[torch.Tensor] = []
        fused: List[torch.Tensor] = []
        for level in self.decoder.values():
            # DecoderLevel.forward, inlined so that each tensor is released as soon as it has been used: the
            # map from below once it is up-sampled (and gated), the skip once it is concatenated.
            skip = skips.pop()
            up = level.up(x)
            gated = level.gate(level.crop(skip), level.signal(up if level.gate_on_up else x))
            x = torch.cat([gated, up], dim=1)
            del skip, up, gated
            x = level.convs(x)
            if level.has_dsv:
                fused.append(level.dsv(x))
            if heads and level.has_head:
                auxiliary.append(level.head(x))
        auxiliary.reverse()  # the decoder ran deepest first
        if self.fused_heads:  # Oktay et al.'s deep supervision: every level's classes, the top level's first
            fused.reverse()
            x = torch.cat(fused, dim=1)
            del fused
        return [self.head(x)] + auxiliary

    def _run_nested(self, x: torch.Tensor, rounds: List[List[int]], mirror: bool, heads: bool) -> List[torch.Tensor]:
        """:meth:`_run` for UNet++ (Zhou et al. 2018): the encoder, then the nodes row by row from the bottom, each
        row reading only the row below, which is released node by node; the top row's heads in column order. One
        frame, so that no caller keeps a map the nodes are done with."""
        x, skips = self._encode(x, rounds, mirror)
        auxiliary: List[torch.Tensor] = []
        below_row: List[torch.Tensor] = [x]
        current: List[torch.Tensor] = []
        for row in self.nested.values():
            current = [skips.pop()]
            for node in row.values():
                below = below_row.pop(0)
                x = node(below, current)
                del below
                if heads and node.has_head:
                    auxiliary.append(node.head(node.head_crop(x)))
                current.append(x)
            below_row = current
        current = []
        below_row = []
        return [self.head(x)] + auxiliary

    def pruned(self, columns: int) -> UNet:
        """UNet++ pruned at inference (Zhou et al. 2018, sec. 2.3): the nodes X(i, j) with i + j ≤ ``columns``,
        the output from X(0, ``columns``)'s head: a smaller, faster network that shares this one's weights.

        It is an ordinary network of depth ``columns + 1`` (:func:`~unetgen.planning.plan.pruned_spec`): its own
        plan, sizes, costs, tiling and export. Its main head is this network's head on X(0, ``columns``), which
        deep supervision puts there (``deep_supervision ≥ columns``, or the last column).

        Args:
            columns: the columns to keep, from 1 to ``depth − 1``.

        Returns:
            The pruned network; training it trains this one.

        Raises:
            SpecError: when the network is not nested, or X(0, ``columns``) has no head.
        """
        spec = pruned_spec(self.spec, columns)
        small = UNet(make_plan(spec))
        small.train(self.training)
        for index, level in enumerate(small.encoder):
            small.encoder[index] = self.encoder[index]
        small.bottleneck = self.encoder[columns] if columns < len(self.encoder) else self.bottleneck
        for i, row in small.nested.items():
            for j, node in row.items():
                full = self.nested[i][j]
                node.up, node.convs = full.up, full.convs
                if node.has_head:
                    node.head = full.head
        small.head = self.head if columns == len(self.encoder) else self.nested["0"][str(columns)].head
        small.final = self.final
        return small

    @torch.jit.unused
    def attention_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The attention gates' maps for an input (``skip_gate``): what each gate multiplies its skip by.

        Runs one pass in the network's current mode, without gradients.

        Args:
            x: an input the network takes, ``(batch, in_channels, *spatial)``.

        Returns:
            ``{"decoder.2.gate": map, ...}``, deepest level first: one map of shape ``(batch, 1, *skip size)`` per
            gated level, from 0 to 1, over the (centre-cropped) skip connection it gates. Empty without gates.
        """
        with self.capturing_attention() as maps, torch.no_grad():
            self(x)
        return dict(maps)

    @contextlib.contextmanager
    def capturing_attention(self) -> Iterator[dict[str, torch.Tensor]]:
        """While the block runs, each pass through the network (or its core) puts each attention gate's map into the
        dict yielded (``{"decoder.2.gate": (batch, 1, *skip size)}``, replaced at every pass); empty without gates."""
        maps: dict[str, torch.Tensor] = {}
        handles = []
        for name, level in self.decoder.items():
            gates = {f"decoder.{name}.gate": level.gate} if isinstance(level.gate, AttentionGate) else {
                f"decoder.{name}.gate.gates.{i}": gate for i, gate in enumerate(getattr(level.gate, "gates", ()))}
            for key, gate in gates.items():
                last = gate.resample if not isinstance(gate.resample, nn.Identity) else gate.sigmoid
                handles.append(last.register_forward_hook(
                    lambda module, args, out, key=key: maps.__setitem__(key, out.detach())))
        try:
            yield maps
        finally:
            for handle in handles:
                handle.remove()

    def core(self) -> nn.Module:
        """The core network as a module of its own (see :meth:`forward_core`); it shares this network's weights."""
        return Core(self)

    def _same_output(self, x: torch.Tensor) -> Tuple[List[List[int]], List[Tuple[int, int]]]:
        """Mirror rounds (in ``F.pad`` order) and output crop for ``output: same``, from the plan's arithmetic."""
        per_axis: List[List[Tuple[int, int]]] = []
        margins: List[Tuple[int, int]] = []
        for axis in range(self.spatial_dims):
            size = x.shape[axis + 2]
            pads = sizes.same_output_pads(
                size, self.lattice_first[axis], self.lattice_step[axis], self.lattice_border[axis]
            )
            per_axis.append(sizes.mirror_rounds(size, pads[0], pads[1]))
            margins.append((pads[2], pads[3]))
        count = 0
        for rounds in per_axis:
            count = max(count, len(rounds))
        flat_rounds: List[List[int]] = []
        for index in range(count):
            flat: List[int] = []
            for axis in range(self.spatial_dims - 1, -1, -1):  # F.pad lists the last axis first
                rounds = per_axis[axis]
                if index < len(rounds):
                    flat += [rounds[index][0], rounds[index][1]]
                else:
                    flat += [0, 0]
            flat_rounds.append(flat)
        return flat_rounds, margins


class Core(nn.Module):
    """A U-Net without the mirroring and output crop of ``output: same`` (:meth:`UNet.core`), final activation
    included: what overlap-tile prediction runs on tiles it mirrors itself."""

    def __init__(self, unet: UNet) -> None:
        """Args:
        unet: the network whose layers (and weights) the core uses.
        """
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet.final(self.unet.forward_core(x))


def _is_exporting() -> bool:
    """Whether torch.export is tracing (non-strict export is neither tracing nor compiling)."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting()) if is_exporting is not None else False


def init_paper(model: nn.Module) -> None:
    """He et al. initialisation as in Ronneberger et al. 2015, sec. 3: normal, std √(2/N), zero biases.

    N is the number of inputs of one neuron: ``in_channels × kernel taps`` for a convolution, and for a transposed
    convolution the taps that reach one output pixel (``in_channels × kernel / stride``, i.e. ``in_channels`` for
    the 2×2 stride-2 up-convolution).
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            fan_in = module.in_channels // module.groups * math.prod(module.kernel_size)
        elif isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            fan_in = module.in_channels * math.prod(module.kernel_size) // math.prod(module.stride)
        else:
            continue
        nn.init.normal_(module.weight, mean=0.0, std=math.sqrt(2.0 / fan_in))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def build(
    spec: UNetSpec | str, input_size: tuple[int, ...] | list[int] | None = None, *, seed: int | None = None
) -> UNet:
    """Build the network a spec describes.

    Args:
        spec: a :class:`~unetgen.spec.UNetSpec`, a preset name or a YAML path.
        input_size: the size to plan at (default: the spec's); the built network takes every valid size.
        seed: makes the initial weights deterministic (without touching the global random state).

    Returns:
        A plain ``nn.Module`` initialised as ``spec.init`` says; ``model.plan`` is its plan.

    Raises:
        SpecError: when the spec is invalid.
        SizeError: when ``input_size`` is not a size the network can take.
        ResourceError: when the weights alone would exceed the memory limit (see ``unetgen.set_memory_limit``).
    """
    plan = make_plan(load_spec(spec), input_size)
    if torch.get_default_device().type != "meta":  # on meta, nothing is allocated
        check_weights_fit(plan)
    if seed is None:
        return _construct(plan)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _construct(plan)


def _construct(plan: Plan) -> UNet:
    model = UNet(plan)
    if plan.spec.init == "paper":
        init_paper(model)
    return model
