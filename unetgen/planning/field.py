"""Plan → what each output pixel sees: the receptive field, how far a pixel's input window reaches, and which
pixels of a tile differ from a whole-image pass (what overlap-tile prediction needs). Pure integers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from . import sizes
from .plan import Plan, geometry, lattices, make_plan

Mode = Literal["exact", "blend"]


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


def stitching(plan: Plan) -> Mode:
    """How tiles of the network are stitched: ``exact`` or ``blend`` (see the module docstring).

    Args:
        plan: any plan of the network.

    Returns:
        ``exact`` for valid convolutions with no norm or batch norm (eval mode: a per-channel affine map), else
        ``blend``.
    """
    spec = plan.spec
    return "exact" if spec.padding == "valid" and _local_norm(spec) else "blend"


def _local_norm(spec) -> bool:  # type: ignore[no-untyped-def]
    """Whether the norm acts on each pixel alone (none, or batch norm in eval mode: a per-channel affine map)."""
    return spec.norm in ("none", "batch")


def edge_margins(plan: Plan) -> tuple[tuple[int, int], ...]:
    """Output pixels at a tile's near and far edge that may differ from the whole-image pass, per axis.

    * Padded convolutions (``padding: same``) see zeros past a tile's edge where the whole image has pixels: an
      output pixel is the whole-image pass's only when its input window (:func:`reach`) lies inside the tile.
    * ``output: same`` networks mirror every tile they are given, so the same holds for them.
    * ``upsample_conv`` pads its 2×2 convolution by one pixel at the far side (and linear interpolation clamps at
      both ends), so each decoder level spoils the pixels that the level below spoilt, times the factor, plus the
      factor − 1 of its own pad: ``step − 1`` at the far side with nearest interpolation; with linear
      interpolation ``step − 1`` at the near side and ``2·step − 2`` at the far side. ``transpose`` spoils none.

    With instance, group or layer norm no tile output equals the whole-image pass anywhere, and there are none.

    Args:
        plan: any plan of the network.

    Returns:
        ``(near, far)`` pixels of each tile's output to leave to the neighbouring tiles, per axis.
    """
    spec = plan.spec
    if not _local_norm(spec):  # each tile is normalised by its own statistics: no tile is exact anywhere
        return ((0, 0),) * spec.spatial_dims
    margins = []
    windows = reach(plan) if spec.padding == "same" or spec.output == "same" else None
    for axis, grid in enumerate(lattices(spec)):
        near = far = 0
        if spec.upsampling == "upsample_conv":
            if spec.interpolation == "nearest":
                far = grid.step - 1
            else:
                near, far = grid.step - 1, 2 * grid.step - 2
        if windows is not None:
            near, far = near + windows[axis][0], far + windows[axis][1]
        margins.append((near, far))
    return tuple(margins)


def reach(plan: Plan) -> tuple[tuple[int, int], ...]:
    """How far an output pixel's input window reaches before and after the input pixel it lies over, per axis.

    The worst case over the pooling phases, for pixels far from the map's edges (the core network, no mirroring).
    Worked out like :func:`unetgen.receptive_field`, by following each pixel's interval of input pixels through
    every layer; for networks too large for that, the receptive field less one bounds it on each side.

    Args:
        plan: any plan of the network.

    Returns:
        ``(before, after)`` input pixels per axis.
    """
    spec = plan.spec
    grids = lattices(spec)
    fields = receptive_field(make_plan(spec, tuple(grid.first for grid in grids)))
    result = []
    for axis, (grid, field) in enumerate(zip(grids, (f.size for f in fields))):
        # Outputs ``field + step`` from either edge of the probe see no edge; one period of them is enough.
        size = grid.at_least(2 * grid.border + 2 * field + 3 * grid.step)
        if size > _REACH_PROBE_LIMIT or not all(f.exact for f in fields):
            result.append((field - 1, field - 1))  # a window of ``field`` pixels reaches no further to either side
            continue
        windows = input_windows(spec, axis, size)
        before = after = 0
        for index in range(field + grid.step, len(windows) - field - grid.step):
            centre = index + grid.border
            lo, hi = windows[index]
            before, after = max(before, centre - lo), max(after, hi - centre)
        result.append((before, after))
    return tuple(result)


#: Largest probe (pixels along one axis) :func:`reach` follows pixel by pixel; beyond it, the receptive field bounds it.
_REACH_PROBE_LIMIT = 8192
