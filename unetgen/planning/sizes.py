"""Size arithmetic along one spatial axis: pure integers, no torch.

A U-Net's sizes along each axis are independent, so everything here works on one axis at a time:

* :func:`trace` follows one input size through every level (convolutions, max-pools, up-sampling, the centre
  crop of each skip connection) and says exactly where and why a size fails.
* :class:`Lattice` is what the traces add up to: the valid input sizes are ``first + k * step`` (the paper
  network: 16k + 124 from 188 up), and the output is the input less ``2 * border`` (the paper: 92 per side).
* :func:`same_output_io` works out, for ``output: same``, how far to mirror the input and where to crop the
  output so that any size comes back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple


@dataclass(frozen=True)
class AxisGeometry:
    """Everything about a network that matters for sizes along one axis.

    Attributes:
        convs: convolutions per level.
        shrinks: pixels one convolution removes at each level (``kernel - 1`` when unpadded, 0 when padded).
        pools: max-pool (and up-sampling) factor below each level: ``depth - 1`` entries.
        min_conv_inputs: the smallest size a convolution can take at each level (a reflect-padded 3-wide kernel
            needs 2).
        min_map: the smallest map a block may output (2 where the norm refuses a single pixel).
        strided: whether each level below the top down-samples by its first convolution (stride = the factor)
            instead of by pooling.
        kernels: each level's kernel (needed when ``strided``).
        encoder_convs: convolutions of each encoder level, where they differ from ``convs`` (a residual encoder).
        decoder_convs: convolutions of each decoder level, where they differ from ``convs``.
        down: what down-sampling does, in error messages (``max-pools``, ``average-pools``, ``strides over``).
    """

    convs: int
    shrinks: tuple[int, ...]
    pools: tuple[int, ...]
    min_conv_inputs: tuple[int, ...]
    min_map: int = 1
    strided: bool = False
    kernels: tuple[int, ...] = ()
    encoder_convs: tuple[int, ...] = ()
    decoder_convs: int | None = None
    down: str = "max-pools"

    def level_convs(self, level: int, decoder: bool = False) -> int:
        """Convolutions at ``level`` of the encoder (or of the decoder)."""
        if decoder:
            return self.convs if self.decoder_convs is None else self.decoder_convs
        return self.encoder_convs[level] if self.encoder_convs else self.convs

    @property
    def depth(self) -> int:
        """Resolution levels, bottleneck included."""
        return len(self.shrinks)

    @classmethod
    def uniform(cls, depth: int, convs: int, shrink: int, pool: int = 2, min_conv_input: int = 1) -> AxisGeometry:
        """The same kernel and pool factor at every level."""
        return cls(convs, (shrink,) * depth, (pool,) * (depth - 1), (min_conv_input,) * depth)


@dataclass(frozen=True)
class AxisTrace:
    """The sizes of one input size along one axis, level by level.

    Attributes:
        encoder: each encoder level's output, top to bottom; the last entry is the bottleneck's.
        up: each decoder level's up-sampled size, indexed by level (top first).
        crop: pixels cropped from each side of each level's skip connection, indexed by level.
        decoder: each decoder level's output, indexed by level; ``decoder[0]`` is the network's output size.
    """

    encoder: tuple[int, ...]
    up: tuple[int, ...]
    crop: tuple[int, ...]
    decoder: tuple[int, ...]

    @property
    def output(self) -> int:
        """The network's output size along this axis."""
        return self.decoder[0] if self.decoder else self.encoder[-1]


class AxisSizeError(ValueError):
    """One size fails along one axis; ``where`` names the block, ``reason`` says why."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where} {reason}")
        self.where = where
        self.reason = reason


def level_name(level: int, depth: int) -> str:
    """Module name of encoder level ``level``: ``encoder.N``, or ``bottleneck`` for the lowest level."""
    return "bottleneck" if level == depth - 1 else f"encoder.{level}"


def _convolve(size: int, geometry: AxisGeometry, level: int, where: str, convs: int, first: int = 0) -> int:
    shrink, minimum = geometry.shrinks[level], geometry.min_conv_inputs[level]
    for index in range(first, convs):
        if size < minimum:
            raise AxisSizeError(where, f"convolution {index + 1} gets a size of {size}, below its minimum of {minimum}")
        size -= shrink
        if size < 1:
            raise AxisSizeError(where, f"convolution {index + 1} leaves no pixels (size {size + shrink})")
        if size < geometry.min_map:
            raise AxisSizeError(where, f"convolution {index + 1} leaves 1 pixel to normalise; the norm needs 2")
    return size


def _down(size: int, geometry: AxisGeometry, level: int, where: str) -> int:
    """The size after a level's down-sampling: pooling, or its first (strided) convolution. Never floors: a size
    that leaves pixels unused is refused."""
    factor = geometry.pools[level - 1]
    if not geometry.strided or factor == 1 and geometry.shrinks[level] == 0:
        if size % factor:
            what = f"an odd size ({size})" if factor == 2 else f"a size ({size}) not divisible by {factor}"
            raise AxisSizeError(where, f"{geometry.down} {what}")
        return size // factor
    kernel, shrink = geometry.kernels[level], geometry.shrinks[level]
    if shrink == 0:  # padded: the stride must divide the size, as for pooling
        if size % factor:
            what = f"an odd size ({size})" if factor == 2 else f"a size ({size}) not divisible by {factor}"
            raise AxisSizeError(where, f"strides over {what}")
        if size < geometry.min_conv_inputs[level]:
            raise AxisSizeError(where, f"convolution 1 gets a size of {size}, below its minimum of "
                                       f"{geometry.min_conv_inputs[level]}")
        return size // factor
    if size < kernel:
        raise AxisSizeError(where, f"convolution 1 gets a size of {size}, below its kernel ({kernel})")
    if (size - kernel) % factor:
        raise AxisSizeError(where, f"strides {factor} over a size ({size}) that leaves pixels unused; "
                                   f"size − {kernel} must be divisible by {factor}")
    out = (size - kernel) // factor + 1
    if out < geometry.min_map:
        raise AxisSizeError(where, "convolution 1 leaves 1 pixel to normalise; the norm needs 2")
    return out


def trace(size: int, geometry: AxisGeometry) -> AxisTrace:
    """Follow one input size through the network along one axis.

    Args:
        size: the input size along the axis.
        geometry: the network's geometry along the axis.

    Returns:
        Every level's size and every skip connection's crop.

    Raises:
        AxisSizeError: naming the first block where the size fails: a max-pool of a size that does not divide
            (never floored silently), a convolution left with no pixels, or a skip smaller than its up-sampled map.
    """
    if size < 1:
        raise AxisSizeError("input", f"size {size} is not positive")
    encoder: list[int] = []
    current = size
    for level in range(geometry.depth):
        where = level_name(level, geometry.depth)
        first = 0
        if level > 0:
            factor = geometry.pools[level - 1]
            current, first = _down(current, geometry, level, where), int(geometry.strided)
        current = _convolve(current, geometry, level, where, geometry.level_convs(level), first)
        encoder.append(current)
    up = [0] * (geometry.depth - 1)
    crop = [0] * (geometry.depth - 1)
    decoder = [0] * (geometry.depth - 1)
    for level in reversed(range(geometry.depth - 1)):
        where = f"decoder.{level}"
        current *= geometry.pools[level]
        up[level] = current
        margin = encoder[level] - current
        if margin < 0 or margin % 2:
            raise AxisSizeError(
                where, f"cannot centre-crop its skip connection ({encoder[level]}) to the up-sampled size ({current})"
            )
        crop[level] = margin // 2
        current = _convolve(current, geometry, level, where, geometry.level_convs(level, decoder=True))
        decoder[level] = current
    return AxisTrace(encoder=tuple(encoder), up=tuple(up), crop=tuple(crop), decoder=tuple(decoder))


def is_valid(size: int, geometry: AxisGeometry) -> bool:
    """Whether the network (without mirroring) takes ``size`` along this axis."""
    try:
        trace(size, geometry)
    except AxisSizeError:
        return False
    return True


@dataclass(frozen=True)
class Lattice:
    """The valid input sizes along one axis: ``first + k * step`` for k = 0, 1, 2, ...

    Attributes:
        first: the smallest valid input size.
        step: the distance between valid sizes (the product of the pool factors).
        border: pixels the network consumes on each side: output = input - 2 * border.
    """

    first: int
    step: int
    border: int

    def contains(self, size: int) -> bool:
        """Whether ``size`` is a valid input size."""
        return size >= self.first and (size - self.first) % self.step == 0

    def output(self, size: int) -> int:
        """Output size for a valid input size."""
        return size - 2 * self.border

    def at_least(self, size: int) -> int:
        """The smallest valid input size that is ``>= size``."""
        if size <= self.first:
            return self.first
        return self.first + -(-(size - self.first) // self.step) * self.step

    def nearest(self, size: int) -> tuple[int, ...]:
        """The valid sizes nearest ``size``: the one below (if any) and the one above, or ``size`` itself."""
        if self.contains(size):
            return (size,)
        above = self.at_least(size)
        below = above - self.step
        return (below, above) if below >= self.first else (above,)

    def input_for_output(self, output: int) -> tuple[int, ...]:
        """The valid input sizes whose output is nearest ``output``: the exact one, or the one below and above."""
        return tuple(n for n in self.nearest(output + 2 * self.border) if self.output(n) >= 1)

    def describe(self) -> str:
        """E.g. ``188+16k (188, 204, 220, ...)``."""
        if self.step == 1:
            return f"any size from {self.first}"
        first, step = self.first, self.step
        return f"{first}+{step}k ({first}, {first + step}, {first + 2 * step}, ...)"


#: Largest bottleneck size :func:`lattice` tries before it concludes that no size works.
_SEARCH_LIMIT = 4096


def lattice(geometry: AxisGeometry) -> Lattice:
    """Work out the valid input sizes along one axis.

    Every constraint is either a divisibility (one per max-pool, together one residue modulo the product of the pool factors)
    or a lower bound, so the valid sizes are one residue class modulo the product of the pool factors, from its
    smallest member up. The smallest member is
    found from the bottom: the smallest bottleneck size that works, grown back up through the encoder.

    Args:
        geometry: the network's geometry along the axis.

    Returns:
        The lattice of valid sizes and the border.
    """
    step = 1
    for factor in geometry.pools:
        step *= factor
    bottleneck = 1
    while True:
        size = bottleneck
        for level in reversed(range(geometry.depth)):
            strided = geometry.strided and level > 0
            size += (geometry.level_convs(level) - strided) * geometry.shrinks[level]
            if strided and geometry.shrinks[level]:  # the strided valid convolution: (size − kernel) / f + 1
                size = (size - 1) * geometry.pools[level - 1] + geometry.kernels[level]
            elif level > 0:
                size *= geometry.pools[level - 1]
        if is_valid(size, geometry):
            output = trace(size, geometry).output
            return Lattice(first=size, step=step, border=(size - output) // 2)
        bottleneck += 1
        if bottleneck > _SEARCH_LIMIT:  # a geometry no size satisfies (the spec's validation should prevent it)
            raise AxisSizeError("network", "takes no input size: every size fails a crop or a stride")


@dataclass(frozen=True)
class SameOutputIO:
    """How ``output: same`` maps one input size to the core network and back, along one axis.

    Attributes:
        core_input: the mirrored size the core network runs on (a lattice point).
        pad: pixels mirrored onto each side of the input, ``(before, after)``.
        crop: pixels cropped from each side of the core's output, ``(before, after)``.
    """

    core_input: int
    pad: tuple[int, int]
    crop: tuple[int, int]


def same_output_pads(size: int, first: int, step: int, border: int) -> Tuple[int, int, int, int]:
    """Mirror and crop for ``output: same`` along one axis, as plain integers (TorchScript can compile this).

    The core runs on the smallest lattice point whose output covers ``size``; the input is mirrored by the
    network's border plus half the surplus on each side, so output pixel *i* lies over input pixel *i*.

    Args:
        size: the input size.
        first: the lattice's smallest valid size.
        step: the lattice's step.
        border: the network's border per side.

    Returns:
        ``(pad_before, pad_after, crop_before, crop_after)``.
    """
    target = size + 2 * border
    core = first
    if target > first:
        core = first + ((target - first + step - 1) // step) * step
    surplus = core - 2 * border - size
    before = surplus // 2
    pad_before = border + before
    return pad_before, core - size - pad_before, before, surplus - before


def same_output_io(size: int, grid: Lattice) -> SameOutputIO:
    """Mirror padding and output crop that make the output exactly ``size``, for any ``size >= 1``.

    Args:
        size: the input size along the axis.
        grid: the core network's lattice.

    Returns:
        The core size, the padding and the crop (see :func:`same_output_pads`).
    """
    pad_before, pad_after, crop_before, crop_after = same_output_pads(size, grid.first, grid.step, grid.border)
    return SameOutputIO(
        core_input=size + pad_before + pad_after, pad=(pad_before, pad_after), crop=(crop_before, crop_after)
    )


def mirror_rounds(size: int, before: int, after: int) -> List[Tuple[int, int]]:
    """Split a mirror (reflect) padding into rounds that each reflect less than the original size.

    A reflect pad must be smaller than the size it reflects. Larger pads are done in rounds of ``size - 1``: each
    full round ends on a mirror point of the image's periodic reflection, so the next round continues it, and
    the result equals ``numpy.pad(..., mode="reflect")``. Plain integers, so TorchScript can compile it.

    Args:
        size: the size before padding (at least 2 when any padding is needed).
        before: total padding before.
        after: total padding after.

    Returns:
        The ``(before, after)`` padding of each round, in order; empty when no padding is needed.
    """
    rounds: List[Tuple[int, int]] = []
    if (before > 0 or after > 0) and size < 2:
        raise ValueError("a size of 1 cannot be mirrored; the smallest size is 2")
    while before > 0 or after > 0:
        first = min(before, size - 1)
        second = min(after, size - 1)
        rounds.append((first, second))
        before -= first
        after -= second
    return rounds
