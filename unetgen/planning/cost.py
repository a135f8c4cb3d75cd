"""Plan → cost: multiply-accumulates, the peak memory of an inference pass, the receptive field. Pure integers.

These are estimates of what the modules in :mod:`unetgen.layers` do in eager PyTorch with gradients off: every
convolution and norm writes a new tensor, activations in :data:`IN_PLACE_ACTIVATIONS` overwrite their input (the
others write a new tensor), crops are views, the caller keeps the input alive, and each skip connection lives until
its decoder level has used it. ``benchmarks/`` checks them against measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..planning import sizes
from .plan import Plan, geometry

#: ``activation:`` kinds whose modules overwrite their input (:func:`unetgen.layers.activation_factory`).
IN_PLACE_ACTIVATIONS = frozenset({"relu", "leaky_relu", "elu", "silu"})


@dataclass(frozen=True)
class Cost:
    """What one inference pass of a plan costs.

    Attributes:
        macs: multiply-accumulates of the convolutions for one sample (a FLOP count is twice this).
        activation_bytes: peak bytes of the tensors alive at once during one pass, the input included.
        parameter_bytes: bytes of the weights (and norm buffers).
        batch: the batch size the memory figures are for.
    """

    macs: int
    activation_bytes: int
    parameter_bytes: int
    batch: int

    @property
    def flops(self) -> int:
        """Floating-point operations of the convolutions for one sample (2 × macs)."""
        return 2 * self.macs

    @property
    def peak_bytes(self) -> int:
        """Weights plus the activation peak: what one pass needs in memory."""
        return self.activation_bytes + self.parameter_bytes


class _Memory:
    """Tracks the bytes of live tensors and their peak."""

    def __init__(self) -> None:
        self.live: dict[int, int] = {}
        self.peak = 0
        self._next = 0

    def alloc(self, nbytes: int) -> int:
        self._next += 1
        self.live[self._next] = nbytes
        self.peak = max(self.peak, sum(self.live.values()))
        return self._next

    def free(self, handle: int) -> None:
        self.live.pop(handle, None)


def _prod(values: tuple[int, ...] | list[int]) -> int:
    return math.prod(values)


def estimate(plan: Plan, batch: int = 1, bytes_per_value: int = 4) -> Cost:
    """Estimate the compute and memory of one inference pass of ``plan``.

    Args:
        plan: the network at an input size.
        batch: samples per pass (memory scales with it; ``macs`` is per sample).
        bytes_per_value: 4 for float32, 2 for half precision.

    Returns:
        The :class:`Cost`.
    """
    spec = plan.spec
    channels = spec.level_channels
    geo = geometry(spec)
    unit = batch * bytes_per_value
    memory = _Memory()
    macs = 0

    def tensor(chan: int, size: tuple[int, ...]) -> int:
        return memory.alloc(chan * _prod(size) * unit)

    def block(handle: int, cin: int, size: tuple[int, ...], widths: tuple[int, ...], level: int) -> tuple[int, tuple[int, ...]]:
        """The level's convolutions from tensor ``handle`` (kept alive by the caller if it is a skip)."""
        nonlocal macs
        kernel = spec.kernel(level)
        current, current_size, chan = handle, size, cin
        owned = False
        shortcut = None
        for index, width in enumerate(widths):
            out_size = tuple(s - g.shrinks[level] for s, g in zip(current_size, geo))
            out = tensor(width, out_size)
            macs += _prod(out_size) * chan * width * _prod(kernel)
            if owned:
                memory.free(current)
            activated = spec.block == "plain" or index < len(widths) - 1
            steps = (spec.norm != "none") + (activated and spec.activation not in IN_PLACE_ACTIVATIONS)
            for _ in range(steps):  # a norm writes a new tensor, and so does an activation that is not in place
                nxt = tensor(width, out_size)
                memory.free(out)
                out = nxt
            current, current_size, chan, owned = out, out_size, width, True
        if spec.block == "residual":
            if cin != widths[-1]:
                shortcut = tensor(widths[-1], size)
                macs += _prod(size) * cin * widths[-1]
            added = tensor(widths[-1], current_size)
            memory.free(current)
            if shortcut is not None:
                memory.free(shortcut)
            if spec.activation in IN_PLACE_ACTIVATIONS:  # the activation after the sum
                current = added
            else:
                current = tensor(widths[-1], current_size)
                memory.free(added)
        return current, current_size

    x = tensor(spec.in_channels, plan.input_size)
    held = {x}
    size = plan.input_size
    if spec.output == "same" and any(a or b for a, b in plan.mirror):
        size = plan.core_input_size
        padded = tensor(spec.in_channels, size)  # each round of mirroring copies; the last one stays
        current = padded
    else:
        current = x
    skips: list[tuple[int, tuple[int, ...]]] = []
    for level in range(spec.depth):
        cin = spec.in_channels if level == 0 else channels[level - 1]
        if level > 0:
            size = tuple(s // f for s, f in zip(size, spec.pool(level - 1)))
            pooled = tensor(cin, size)
            current = pooled
        out, size = block(current, cin, size, spec.conv_widths(level), level)
        if level > 0 or current not in held:
            if level > 0:
                memory.free(current)
        if level == 0 and current is not x:
            memory.free(current)
        current = out
        if level < spec.depth - 1:
            skips.append((out, size))
    below = channels[-1]
    for level in reversed(range(spec.depth - 1)):
        factor = spec.pool(level)
        cup = channels[level] if spec.up_channels == "halve" else below
        skip, skip_size = skips.pop()
        up_size = tuple(s * f for s, f in zip(size, factor))
        if spec.upsampling == "upsample_conv":
            stretched = tensor(below, up_size)
            padded = tensor(below, tuple(s + f - 1 for s, f in zip(up_size, factor)))
            memory.free(stretched)
            up = tensor(cup, up_size)
            memory.free(padded)
        else:
            up = tensor(cup, up_size)
        macs += _prod(up_size) * below * cup * (_prod(factor) if spec.upsampling == "upsample_conv" else 1)
        joined = tensor(channels[level] + cup, up_size)
        memory.free(current)
        memory.free(up)
        memory.free(skip)
        widths = (channels[level],) * spec.convs_per_level
        current, size = block(joined, channels[level] + cup, up_size, widths, level)
        memory.free(joined)
        below = channels[level]
    head = tensor(spec.out_channels, size)
    macs += _prod(size) * channels[0] * spec.out_channels
    memory.free(current)
    if spec.final_activation != "none":
        tensor(spec.out_channels, plan.output_size)
        memory.free(head)
    norm_buffers = 2 * sum(channels) if spec.norm == "batch" else 0  # running mean and variance (approximate)
    return Cost(
        macs=macs,
        activation_bytes=memory.peak,
        parameter_bytes=(plan.parameters + norm_buffers) * bytes_per_value,
        batch=batch,
    )
