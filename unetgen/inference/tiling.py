"""Overlap-tile arithmetic: which windows of an image the network runs on, and which output pixels each one gives.

Pure integers, no torch. Ronneberger et al. 2015 (sec. 2, Fig. 2) segment an image of any size by tiles: each
output tile is predicted from a larger input tile, and the context missing at the image border is mirrored.
:func:`unetgen.predict` runs the tiles this module lays out.

The reference is one pass over the whole image, mirrored as ``output: same`` mirrors it
(:func:`unetgen.planning.sizes.same_output_pads`: the network's border plus half the rounding to the next valid
size on each side). Tiles run the network's core (:meth:`unetgen.UNet.core`, the network without the mirroring
and the output crop of ``output: same``) on windows of the mirrored image, so ``output: same`` and
``output: crop`` networks tile alike. Every tile is placed so that it sees the same max-pooling phase as that
pass: tile windows start a multiple of the lattice step from the reference's origin, and the last one ends where
the reference ends. Then:

* **exact** stitching (valid convolutions, and a norm that acts pixel by pixel: none, or batch norm in eval mode):
  a valid network is translation-equivariant for shifts by the lattice step, so each output pixel is taken from one
  tile that computes it exactly as the whole-image pass does. Pixels a tile computes differently from that pass
  (:func:`unetgen.planning.field.edge_margins`) are left to its neighbour.
* **blend** stitching (same padding, or instance/group/layer norm, which see each tile's statistics): neighbouring
  tiles overlap, and each tile's output is weighted by a separable window that is zero where a pixel's input
  window crosses the tile's inner edge (padded convolutions saw zeros there instead of the image) and rises along a
  raised-cosine ramp to one, so the stitched map has no seams; with no norm or batch norm it equals the whole-image
  pass. At the image border (the reference's edge) a tile keeps full weight.

A runner that holds the whole network (an ONNX file) cannot run the core: an ``output: same`` file mirrors each
tile it is given, so its tiles (``whole=True``) are any size, lie over the image itself, and leave to their
neighbours the pixels whose input window reaches the tile's edge.

All sizes come from the plan's lattices (``first``, ``step``, ``border`` per axis); tile sizes are chosen from the
plan's memory estimate (:func:`unetgen.estimate`) with the overhead a process adds to it, measured
(:func:`unetgen.planning.budget.budgeted_bytes`), so that a budget holds in measured memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import product

from ..errors import ResourceError, SizeError, UNetGenError
from ..planning.budget import budgeted_bytes
from ..planning.cost import estimate
from ..planning.field import Mode, edge_margins, stitching
from ..planning.limits import memory_limit, parse_bytes
from ..planning.plan import Plan, lattices, make_plan
from ..planning.sizes import Lattice, same_output_pads
from ..spec.fields import UNetSpec
from ..text import axis_names, human_bytes, size_text


#: Default memory budget of one pass (weights + activations), capped by :func:`unetgen.memory_limit`.
DEFAULT_MEMORY = 1 << 30
#: Default overlap of blended tiles, as a fraction of the tile's output along each axis.
DEFAULT_OVERLAP = 0.25
#: Most tiles run in one pass when the batch is chosen from the memory budget.
MAX_BATCH = 16


@dataclass(frozen=True)
class AxisTiles:
    """How one spatial axis of the image is cut into tiles.

    Coordinates are image pixels along the axis (0 … ``size`` − 1); a window may reach past the image, where the
    image is mirrored (``numpy.pad(mode="reflect")``, as the paper does).

    Attributes:
        size: the image's size along the axis.
        window: each tile's input size (a size the network takes).
        out: each tile's output size.
        shift: output pixel *i* of a tile lies over pixel ``start + shift + i`` (the border; 0 for a whole
            ``output: same`` network, which mirrors each tile itself).
        step: the lattice step: the distance between tile starts is a multiple of it.
        starts: where each tile's window starts, in image pixels.
        margins: ``(near, far)`` output pixels of each tile left to its neighbours (see :func:`edge_margins`);
            none at the first tile's near side and the last tile's far side, which line up with the reference.
        ramp: blended tiles: the raised-cosine ramp after the margin at each inner edge, in pixels (0: exact).
    """

    size: int
    window: int
    out: int
    shift: int
    step: int
    starts: tuple[int, ...]
    margins: tuple[int, int]
    ramp: int

    @property
    def count(self) -> int:
        """Tiles along the axis."""
        return len(self.starts)

    def covers(self, k: int) -> tuple[int, int]:
        """The image pixels ``[lo, hi)`` tile ``k``'s output lies over (may reach past the image)."""
        lo = self.starts[k] + self.shift
        return lo, lo + self.out

    def usable(self, k: int) -> tuple[int, int]:
        """The pixels ``[lo, hi)`` where tile ``k``'s output equals (exact) or may stand for (blend) the reference."""
        lo, hi = self.covers(k)
        if k > 0:
            lo += self.margins[0]
        if k < self.count - 1:
            hi -= self.margins[1]
        return lo, hi

    def keep(self, k: int) -> tuple[int, int]:
        """Exact stitching: the image pixels ``[lo, hi)`` taken from tile ``k`` (the ranges partition the image)."""
        lo = self._boundary(k - 1) if k > 0 else self.usable(k)[0]
        hi = self._boundary(k) if k < self.count - 1 else self.usable(k)[1]
        return max(lo, 0), min(hi, self.size)

    def _boundary(self, k: int) -> int:
        """Where tile ``k`` hands over to tile ``k + 1``: the middle of the overlap of their usable outputs."""
        return (self.usable(k + 1)[0] + self.usable(k)[1]) // 2

    def weights(self, k: int) -> list[float]:
        """Blend stitching: tile ``k``'s weight at each of its ``out`` output pixels.

        Zero in the margins, ``sin²`` ramps of ``ramp`` pixels at the inner edges, one elsewhere: two neighbouring
        ramps add up to one (sin² + cos²), and the first and last tiles keep full weight at the image border.
        """
        near, far = self.margins
        result = []
        for i in range(self.out):
            w = 1.0
            if k > 0:
                w *= _ramp(i - near, self.ramp)
            if k < self.count - 1:
                w *= _ramp(self.out - 1 - i - far, self.ramp)
            result.append(w)
        return result


def _ramp(position: int, length: int) -> float:
    """sin² from 0 to 1 over ``length`` pixels; 0 before, 1 after."""
    if position < 0:
        return 0.0
    if position >= length:
        return 1.0
    return math.sin(math.pi * (position + 0.5) / (2 * length)) ** 2


@dataclass(frozen=True)
class TileLayout:
    """The tiles one image is segmented by, and what one pass over a batch of them costs.

    Attributes:
        spec: the network.
        image_size: the image's spatial size.
        mode: ``exact`` or ``blend`` stitching (:func:`stitching`).
        axes: the tiles along each axis; the tiles are every combination.
        batch: tiles per pass.
        plan: the plan of what runs on one tile: the network's core at the tile size (the whole network for
            ``whole`` tiles).
        peak_bytes: the memory one pass over ``batch`` tiles takes against the budget: the weights plus the
            activations with the measured overhead (:func:`~unetgen.planning.budget.budgeted_bytes`; float32).
        budget: the memory budget the tile size and batch were chosen for.
        estimate_bytes: the plan's estimate of that pass, live tensors only (weights + activations).
    """

    spec: UNetSpec
    image_size: tuple[int, ...]
    mode: Mode
    axes: tuple[AxisTiles, ...]
    batch: int
    plan: Plan
    peak_bytes: int
    budget: int
    estimate_bytes: int = 0

    @property
    def count(self) -> int:
        """Number of tiles."""
        return math.prod(axis.count for axis in self.axes)

    @property
    def window(self) -> tuple[int, ...]:
        """Each tile's input size."""
        return tuple(axis.window for axis in self.axes)

    @property
    def out(self) -> tuple[int, ...]:
        """Each tile's output size."""
        return tuple(axis.out for axis in self.axes)

    def tiles(self) -> Iterator[tuple[int, ...]]:
        """Every tile's index along each axis, in row-major order."""
        return product(*(range(axis.count) for axis in self.axes))

    def describe(self) -> str:
        """One line: tiles, sizes, batch, stitching and memory."""
        grid = size_text([axis.count for axis in self.axes])
        tiles = "1 tile" if self.count == 1 else f"{self.count} tiles ({grid})"
        how = "exact stitching" if self.mode == "exact" else "blended with a raised-cosine window"
        return (
            f"{tiles} of {size_text(self.window)} → {size_text(self.out)}, {self.batch} per pass, {how}; "
            f"about {human_bytes(self.peak_bytes)} per pass with the measured overhead (budget "
            f"{human_bytes(self.budget)})"
        )


@dataclass(frozen=True)
class _AxisRules:
    """What tiling one axis depends on: the lattice and edge margins, the stitching, whether the network mirrors
    each tile itself, the image size, the overlap."""

    grid: Lattice
    margins: tuple[int, int]
    mode: Mode
    mirrors: bool
    size: int
    overlap: float

    @property
    def span(self) -> tuple[int, int]:
        """The reference pass's window, ``[lo, hi)`` in image pixels."""
        if self.mirrors:
            return 0, self.size  # the network mirrors what it is given itself
        grid = self.grid
        before, after, _, _ = same_output_pads(self.size, grid.first, grid.step, grid.border)
        return -before, self.size + after

    def out(self, window: int) -> int:
        """A tile's output size."""
        return window if self.mirrors else self.grid.output(window)

    def stride(self, window: int) -> int:
        """The distance between tile starts: the largest multiple of the step that leaves the tiles' usable
        outputs touching (exact) or overlapping by at least ``overlap`` of the output (blend); 0 if none."""
        out = self.out(window)
        room = out - self.margins[0] - self.margins[1]
        if self.mode == "blend":
            room -= max(math.ceil(self.overlap * out) - self.margins[0] - self.margins[1], math.ceil(out / 16), 1)
        return max(room, 0) // self.grid.step * self.grid.step

    def candidates(self) -> list[int]:
        """Tile input sizes, smallest first, that leave room to stitch; the last covers the whole span.

        Cores take the lattice's sizes; a network that mirrors its tiles takes any size, and tiles are the image's
        size less a multiple of the step, so the network mirrors each tile with the reference's phase.
        """
        lo, hi = self.span
        step = self.grid.step
        if self.mirrors:
            first = self.size - ((self.size - 2) // step) * step  # the smallest ≥ 2 congruent to the size
        else:
            first = self.grid.first
        return [n for n in range(first, hi - lo, step) if self.stride(n) >= step] + [hi - lo]

    def tiles(self, window: int) -> AxisTiles:
        """The tiles of input size ``window`` (at most the span; a larger one is the span itself)."""
        lo, hi = self.span
        shift = 0 if self.mirrors else self.grid.border
        step = self.grid.step
        if window >= hi - lo:
            return AxisTiles(self.size, hi - lo, self.out(hi - lo), shift, step, (lo,), self.margins, 0)
        stride = self.stride(window)
        starts = [lo]
        while starts[-1] + window < hi:
            starts.append(min(starts[-1] + stride, hi - window))
        out = self.out(window)
        ramp = out - self.margins[0] - self.margins[1] - stride if self.mode == "blend" else 0
        return AxisTiles(self.size, window, out, shift, step, tuple(starts), self.margins, ramp)


def budget_bytes(memory: int | str | None) -> int:
    """The memory budget of one pass: ``memory`` (bytes or a size like ``"2GiB"``), else :data:`DEFAULT_MEMORY`
    capped by :func:`unetgen.memory_limit`.

    Raises:
        ResourceError: when ``memory`` is not a size, or not positive.
    """
    if memory is None:
        limit = memory_limit()
        return min(DEFAULT_MEMORY, limit) if limit else DEFAULT_MEMORY
    value = parse_bytes(memory) if isinstance(memory, str) else memory
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ResourceError(f"memory {memory!r}: give a positive size in bytes or like '2GiB'")
    return value


def plan_tiles(
    spec: UNetSpec,
    image_size: Sequence[int],
    *,
    tile_size: int | Sequence[int] | None = None,
    memory: int | str | None = None,
    batch_size: int | None = None,
    overlap: float = DEFAULT_OVERLAP,
    whole: bool = False,
) -> TileLayout:
    """Lay out the tiles that segment an image of ``image_size``.

    Without ``tile_size``, the tile is the largest (grown along every axis together) whose pass fits the memory
    budget by :func:`unetgen.estimate` with the measured overhead (:func:`~unetgen.planning.budget.budgeted_bytes`:
    the weights, :data:`~unetgen.planning.budget.INFERENCE_OVERHEAD` × the activations, and the largest layer's
    weights once more); along each axis it is then shrunk to the smallest size that needs no more
    tiles, so that tiles overlap no more than they must. An image that fits one pass is one tile: the reference
    pass itself.

    Args:
        spec: the network.
        image_size: the image's spatial size, one value per axis.
        tile_size: the tile's input size, one value per axis (or one for all): tiles are the largest sizes the
            network takes at most this large (``whole`` tiles of an ``output: same`` network: this size less a
            multiple of the lattice step, so every tile has the whole image's pooling phase). Overrides the memory
            budget for the tile size.
        memory: the memory budget of one pass, bytes or a size like ``"2GiB"``; default :data:`DEFAULT_MEMORY`,
            at most :func:`unetgen.memory_limit`.
        batch_size: tiles per pass; default the most (up to :data:`MAX_BATCH`) that fit the budget.
        overlap: blend stitching: the least overlap of neighbouring tiles, a fraction of the tile's output
            (more than 0, at most 0.5). Exact stitching needs none.
        whole: the tiles run through the whole network rather than its core (an ONNX file): an ``output: same``
            network then mirrors each tile itself. No difference for ``output: crop`` networks.

    Returns:
        The layout.

    Raises:
        SizeError: when the image has the wrong number of axes or an axis of 1 pixel that needs mirroring, or
            ``tile_size`` is smaller than the smallest tile.
        ResourceError: when even the smallest tile does not fit the budget.
        UNetGenError: when ``overlap`` or ``batch_size`` is out of range.
    """
    dims = spec.spatial_dims
    names = axis_names(dims)
    size = tuple(image_size)
    if len(size) != dims:
        raise SizeError(f"image {size_text(size)}: has {len(size)} spatial axes; the network is {dims}D")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0 < overlap <= 0.5:
        raise UNetGenError(f"overlap {overlap!r}: give a fraction of the tile, more than 0 and at most 0.5")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise UNetGenError(f"batch size {batch_size!r}: give a whole number from 1 up")
    grids = lattices(spec)
    firsts = tuple(grid.first for grid in grids)
    mirrors = whole and make_plan(spec, firsts).same_output

    def plan_at(window: tuple[int, ...]) -> Plan:
        """The plan of what runs on one tile: the core, or the whole network that mirrors its tiles."""
        return make_plan(spec, window, core=not mirrors)

    probe = plan_at(firsts)
    mode = stitching(probe)
    rules = [
        _AxisRules(grid, margins, mode, mirrors, n, overlap)
        for grid, margins, n in zip(grids, edge_margins(probe), size)
    ]
    for name, n, rule in zip(names, size, rules):
        if not isinstance(n, int) or n < 1:
            raise SizeError(f"image {size_text(size)}: {name}: sizes must be positive integers")
        lo, hi = rule.span
        if n < 2 and (lo < 0 or hi > n or mirrors):
            raise SizeError(
                f"image {size_text(size)}: {name}: a size of 1 cannot be mirrored; the smallest size is 2"
            )
    options = [rule.candidates() for rule in rules]
    budget = budget_bytes(memory)

    def pass_bytes(window: tuple[int, ...], batch: int = 1) -> int:
        plan = plan_at(window)
        return budgeted_bytes(plan, estimate(plan, batch=batch))

    if tile_size is not None:
        wanted = (tile_size,) * dims if isinstance(tile_size, int) else tuple(tile_size)
        if len(wanted) != dims or any(isinstance(t, bool) or not isinstance(t, int) for t in wanted):
            raise SizeError(f"tile size {tile_size!r}: give one whole number per spatial axis ({dims})")
        window = []
        for name, t, choices in zip(names, wanted, options):
            fitting = [n for n in choices if n <= t]
            if not fitting:
                raise SizeError(
                    f"tile size {size_text(wanted)}: {name}: the smallest tile for this image is {choices[0]}; "
                    f"give at least {choices[0]}"
                )
            window.append(fitting[-1])
        chosen = tuple(window)
    else:
        def at(k: int) -> tuple[int, ...]:
            return tuple(choices[min(k, len(choices) - 1)] for choices in options)

        if pass_bytes(at(0)) > budget:
            raise ResourceError(
                f"image {size_text(size)}: the smallest tile ({size_text(at(0))}) needs about "
                f"{human_bytes(pass_bytes(at(0)))} per pass, more than the memory budget of {human_bytes(budget)}; "
                "give a larger budget (memory=..., --memory)"
            )
        low, high = 0, max(len(choices) for choices in options) - 1
        while low < high:  # the largest k that fits: memory grows with the tile
            middle = (low + high + 1) // 2
            if pass_bytes(at(middle)) <= budget:
                low = middle
            else:
                high = middle - 1
        largest = at(low)
        window = []
        for rule, choices, top in zip(rules, options, largest):
            count = rule.tiles(top).count
            window.append(next(w for w in choices if w <= top and rule.tiles(w).count <= count))
        chosen = tuple(window)
    axes = tuple(rule.tiles(w) for rule, w in zip(rules, chosen))
    window = tuple(axis.window for axis in axes)
    count = math.prod(axis.count for axis in axes)
    if batch_size is None:
        batch = 1
        while batch < min(count, MAX_BATCH) and pass_bytes(window, batch + 1) <= budget:
            batch += 1
    else:
        batch = min(batch_size, count)
    plan = plan_at(window)
    cost = estimate(plan, batch=batch)
    return TileLayout(
        spec=spec, image_size=size, mode=mode, axes=axes, batch=batch, plan=plan,
        peak_bytes=budgeted_bytes(plan, cost), budget=budget, estimate_bytes=cost.peak_bytes,
    )


def reflect(position: int, size: int) -> int:
    """The image pixel mirrored to ``position`` (``numpy.pad(mode="reflect")``: the edge pixel is not repeated).

    Args:
        position: any integer position along an axis.
        size: the image's size along the axis (at least 2 unless ``position`` is inside).

    Returns:
        A pixel index in ``[0, size)``.
    """
    if 0 <= position < size:
        return position
    period = 2 * (size - 1)
    position %= period
    return position if position < size else period - position
