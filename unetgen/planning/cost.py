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


@dataclass(frozen=True)
class Field:
    """A receptive field along one axis.

    Attributes:
        size: input pixels the widest-seeing output pixel depends on (an upper bound when not ``exact``).
        exact: False when the network is too large to follow pixel by pixel and ``size`` is a bound.
    """

    size: int
    exact: bool = True

    def __str__(self) -> str:
        return str(self.size) if self.exact else f"≤{self.size}"


#: Largest probe (pixels along one axis) followed pixel by pixel; beyond it the bound is reported.
EXACT_FIELD_LIMIT = 40_000


def receptive_field(plan: Plan) -> tuple[Field, ...]:
    """The receptive field along each axis: how many input pixels the widest-seeing output pixel depends on.

    Worked out exactly, by following the interval of input pixels each pixel depends on through every layer, over
    one period of the pooling lattice away from the image border. Networks too large for that (a probe of more
    than ``EXACT_FIELD_LIMIT`` pixels) get a bound from the same rules applied to whole intervals.

    Args:
        plan: any plan of the network (only its spec is used).

    Returns:
        One :class:`Field` per axis.
    """
    spec = plan.spec
    result = []
    for axis, (geo, grid) in enumerate(zip(geometry(spec), plan.lattices)):
        kernels = [spec.kernel(level)[axis] for level in range(spec.depth)]
        bound = _field_bound(spec, geo, kernels, [s.crop[axis] for s in reversed(plan.skips)])
        if spec.padding == "valid" and spec.upsampling == "transpose":
            size = grid.at_least(2 * grid.border + grid.step)  # nothing pads: one period of outputs is enough
        else:  # something pads (same convolutions, upsample_conv's far side): keep the period clear of the border
            size = grid.at_least(2 * bound + grid.step)
        if size > EXACT_FIELD_LIMIT:
            result.append(Field(bound, exact=False))
        else:
            result.append(Field(max(hi - lo + 1 for lo, hi in input_windows(spec, axis, size))))
    return tuple(result)


def _field_bound(spec, geo: sizes.AxisGeometry, kernels: list[int], crops: list[int]) -> int:  # type: ignore[no-untyped-def]
    """An upper bound on the receptive field: pixel ``i`` of a map with jump ``J`` sees ``[J*i + lo, J*i + hi]``."""
    padded = spec.padding == "same"
    lo = hi = 0
    jump = 1
    skips: list[tuple[int, int]] = []

    def convolve(kernel: int) -> None:
        nonlocal lo, hi
        if padded:
            lo -= (kernel - 1) // 2 * jump
            hi += (kernel - 1) // 2 * jump
        else:
            hi += (kernel - 1) * jump

    for level in range(spec.depth):
        if level > 0:
            factor = geo.pools[level - 1]
            hi += (factor - 1) * jump
            jump *= factor
        for _ in range(spec.convs_per_level):
            convolve(kernels[level])
        skips.append((lo, hi))
    skips.pop()
    for level in reversed(range(spec.depth - 1)):
        factor = geo.pools[level]
        jump //= factor
        lo -= (factor - 1) * jump  # fine pixel o sees coarse pixel o // f
        if spec.upsampling == "upsample_conv":
            hi += (factor - 1) * jump
            if spec.interpolation == "linear":  # and one coarse pixel more on either side
                lo -= factor * jump
                hi += factor * jump
        skip_lo, skip_hi = skips.pop()
        lo, hi = min(lo, skip_lo + crops[level] * jump), max(hi, skip_hi + crops[level] * jump)
        for _ in range(spec.convs_per_level):
            convolve(kernels[level])
    return hi - lo + 1


Interval = tuple[int, int]


def _conv(maps: list[Interval], kernel: int, padded: bool) -> list[Interval]:
    """Intervals after a stride-1 convolution (a padded one clips its window at the map's edges)."""
    n = len(maps)
    pad = (kernel - 1) // 2 if padded else 0
    out_len = n if padded else n - kernel + 1
    out = []
    for i in range(out_len):
        part = maps[max(0, i - pad) : min(n, i - pad + kernel)]
        out.append((min(m[0] for m in part), max(m[1] for m in part)))
    return out


def upsampled_sources(index: int, factor: int, length: int, interpolation: str) -> tuple[int, int]:
    """The first and last pixel of a ``length``-pixel map that pixel ``index`` of its ×``factor`` up-sampling reads.

    ``nearest`` reads pixel ``index // factor``. ``linear`` (PyTorch's, ``align_corners=False``) reads the source
    coordinate ``s = (index + 0.5) / factor − 0.5``, clamped at 0: pixels ``floor(s)`` and ``floor(s) + 1`` (the
    latter capped at the last pixel), or ``floor(s)`` alone where ``s`` is whole (its neighbour's weight is 0;
    float rounding can leave it ~1e-8 for odd factors). In integers: ``s = (2·index + 1 − factor) / (2·factor)``.
    """
    if interpolation != "linear":
        return index // factor, index // factor
    numerator = 2 * index + 1 - factor
    if numerator <= 0:
        return 0, 0
    first, fraction = divmod(numerator, 2 * factor)
    return first, min(first + 1, length - 1) if fraction else first


def input_windows(spec, axis: int, size: int) -> list[Interval]:  # type: ignore[no-untyped-def]
    """The interval of input pixels each output pixel depends on, along ``axis``, for an input of ``size`` pixels.

    The core network (no mirroring for ``output: same``): each layer maps every pixel's interval to the union of
    the intervals it reads — convolutions, max-pooling, up-sampling (:func:`upsampled_sources`), the far-side pad of
    ``upsample_conv`` (taken as the last pixel repeated: a superset for every padding mode near the far edge), the
    centre-cropped skip connections. :func:`receptive_field` and :func:`unetgen.tiling.reach` both read it.

    Args:
        spec: the network.
        axis: the spatial axis.
        size: the input size along it (a size of the axis's lattice).

    Returns:
        ``(first, last)`` input pixel per output pixel.
    """
    geo = geometry(spec)[axis]
    kernels = [spec.kernel(level)[axis] for level in range(spec.depth)]
    padded = spec.padding == "same"
    current: list[Interval] = [(i, i) for i in range(size)]
    skips: list[list[Interval]] = []
    for level in range(spec.depth):
        if level > 0:
            f = geo.pools[level - 1]
            current = [(current[f * i][0], current[f * i + f - 1][1]) for i in range(len(current) // f)]
        for _ in range(spec.convs_per_level):
            current = _conv(current, kernels[level], padded)
        skips.append(current)
    skips.pop()
    for level in reversed(range(spec.depth - 1)):
        f = geo.pools[level]
        if spec.upsampling == "upsample_conv":  # interpolation, then an f-wide convolution padded at the far side
            up = []
            for i in range(len(current) * f):
                first, last = upsampled_sources(i, f, len(current), spec.interpolation)
                up.append((current[first][0], current[last][1]))
            up = _conv(up + [up[-1]] * (f - 1), f, False)
        else:  # a transposed convolution with kernel and stride f: fine pixel i comes from coarse pixel i // f
            up = [current[i // f] for i in range(len(current) * f)]
        skip = skips.pop()
        margin = (len(skip) - len(up)) // 2
        skip = skip[margin : margin + len(up)]
        current = [(min(a[0], b[0]), max(a[1], b[1])) for a, b in zip(skip, up)]
        for _ in range(spec.convs_per_level):
            current = _conv(current, kernels[level], padded)
    return current


# ---- limits: refuse what cannot fit before allocating it ----------------------------------------------------------

_limit_override: int | None = None
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """``"64GiB"``, ``"512 MB"``, ``"1.5t"`` or a plain number of bytes → bytes (``0`` means no limit).

    Raises:
        ResourceError: when the text is not a size.
    """
    from ..errors import ResourceError

    cleaned = text.strip().lower().replace(" ", "")
    number = cleaned.rstrip("kmgtib")
    unit = cleaned[len(number):]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if value < 0 or unit not in _UNITS or not math.isfinite(value):
        raise ResourceError(f"memory limit '{text}': not a size; write e.g. 64GiB, 512MiB or 0 for no limit")
    return int(value * _UNITS[unit])


def set_memory_limit(limit: int | str | None) -> None:
    """Set the memory unetgen lets one network or one pass take (bytes, a size like ``"64GiB"``, 0 for none).

    ``None`` restores the default: the ``UNETGEN_MAX_MEMORY`` environment variable if set, else the machine's
    physical memory.
    """
    global _limit_override
    _limit_override = parse_bytes(limit) if isinstance(limit, str) else limit


def memory_limit() -> int:
    """The memory limit in bytes (0: no limit). See :func:`set_memory_limit`."""
    import os

    if _limit_override is not None:
        return _limit_override
    env = os.environ.get("UNETGEN_MAX_MEMORY")
    if env:
        return parse_bytes(env)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not on Linux/macOS
        return 0


def human_bytes(nbytes: float) -> str:
    """``1536`` → ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(nbytes) < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


_OVERRIDE = "raise the limit with UNETGEN_MAX_MEMORY=<size> (0: none) or unetgen.set_memory_limit()"


def check_weights_fit(plan: Plan) -> None:
    """Refuse to allocate a network whose weights alone exceed the memory limit.

    Raises:
        ResourceError: with the estimate and how to override the limit.
    """
    from ..errors import ResourceError

    limit = memory_limit()
    needed = plan.parameters * 4
    if limit and needed > limit:
        raise ResourceError(
            f"{plan.spec.name}: {plan.parameters:,} parameters need {human_bytes(needed)} as float32, more than the "
            f"memory limit of {human_bytes(limit)}; reduce width, channels or depth, or {_OVERRIDE}"
        )


def check_pass_fits(plan: Plan, batch: int, bytes_per_value: int = 4) -> None:
    """Refuse a forward pass whose estimated peak memory exceeds the memory limit.

    Raises:
        ResourceError: with the estimate and how to override the limit.
    """
    from ..errors import ResourceError

    limit = memory_limit()
    if not limit:
        return
    cost = estimate(plan, batch=batch, bytes_per_value=bytes_per_value)
    if cost.peak_bytes > limit:
        shape = "×".join(map(str, plan.input_shape))
        raise ResourceError(
            f"input {batch}×{shape}: one pass needs about {human_bytes(cost.peak_bytes)} "
            f"({human_bytes(cost.activation_bytes)} of activations), more than the memory limit of "
            f"{human_bytes(limit)}; use a smaller input or batch (tiled inference: unetgen.predict), or {_OVERRIDE}"
        )
