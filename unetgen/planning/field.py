"""Plan → what each output pixel sees: the receptive field, how far a pixel's input window reaches, and which
pixels of a tile differ from a whole-image pass (what overlap-tile prediction needs). Pure integers.

Everything here follows the plan's layers (:class:`~unetgen.planning.plan.Layer`) one axis at a time, with one rule
per layer kind: an interval of input pixels per pixel (:func:`input_windows`), a bound on it for networks too large
to follow pixel by pixel (:func:`_field_bound`), and the pixels near a tile's edge that its padding spoils
(:func:`edge_margins`).
"""

from __future__ import annotations

import re

from dataclasses import dataclass
from typing import Literal

from .plan import Layer, Plan, make_plan

Mode = Literal["exact", "blend"]
Interval = tuple[int, int]

#: Norms that act on each pixel alone in eval mode (batch norm: a per-channel affine map). The others normalise
#: each tile by its own statistics.
LOCAL_NORMS = frozenset({"batch"})


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


def core_plan(plan: Plan, axis: int | None = None, size: int | None = None) -> Plan:
    """The core network (no mirroring) at the lattices' first sizes, or at ``size`` along ``axis``."""
    first = [grid.first for grid in plan.lattices]
    if axis is not None and size is not None:
        first[axis] = size
    return make_plan(plan.spec, tuple(first), core=True)


def _pads_anything(plan: Plan) -> bool:
    return any(layer.pads_anything for layer in plan.main_layers)


def receptive_field(plan: Plan) -> tuple[Field, ...]:
    """The receptive field along each axis: how many input pixels the widest-seeing output pixel depends on.

    Worked out exactly, by following the interval of input pixels each pixel depends on through every layer, over
    one period of the pooling lattice away from the image border. Networks too large for that (a probe of more
    than ``EXACT_FIELD_LIMIT`` pixels) get a bound from the same rules applied to whole intervals.

    Args:
        plan: any plan of the network.

    Returns:
        One :class:`Field` per axis.
    """
    base = core_plan(plan)
    padded = _pads_anything(base)
    result = []
    for axis, grid in enumerate(base.lattices):
        bound = _field_bound(base, axis)
        if not padded:
            size = grid.at_least(2 * grid.border + grid.step)  # nothing pads: one period of outputs is enough
        else:  # something pads (same convolutions, upsample_conv's far side): keep the period clear of the border
            size = grid.at_least(2 * bound + grid.step)
        if size > EXACT_FIELD_LIMIT:
            result.append(Field(bound, exact=False))
        else:
            windows = input_windows(core_plan(plan, axis, size), axis)
            result.append(Field(max(hi - lo + 1 for lo, hi in windows)))
    return tuple(result)


def _field_bound(plan: Plan, axis: int) -> int:
    """An upper bound on the receptive field: pixel ``i`` of a map with jump ``J`` sees ``[J*i + lo, J*i + hi]``.

    ``J`` is the distance in input pixels between neighbouring pixels of the map; each layer kind maps
    ``(lo, hi, J)`` of its inputs to its output's.
    """
    seen: dict[str, tuple[int, int, int]] = {"input": (0, 0, 1)}
    for layer in plan.main_layers:
        lo, hi, jump = seen[layer.inputs[0]]
        kind = layer.kind
        if kind in ("conv", "max_pool", "avg_pool"):
            k, s = layer.kernel[axis], layer.stride[axis]
            before = layer.pads[axis][0] if layer.pads else 0
            lo, hi, jump = lo - before * jump, hi + (k - 1 - before) * jump, jump * s
        elif kind == "conv_transpose":  # fine pixel o sees coarse pixels (o + p − k + 1)/f to (o + p)/f
            f, k, p = layer.stride[axis], layer.kernel[axis], layer.pads[axis][0] if layer.pads else 0
            jump //= f
            lo, hi = lo + (p - k + 1) * jump, hi + p * jump
        elif kind == "upsample":  # fine pixel o sees coarse pixel o // f
            f = layer.stride[axis]
            jump //= f
            lo -= (f - 1) * jump
            if kind == "upsample" and layer.mode != "nearest":  # and one coarse pixel more on either side
                lo, hi = lo - f * jump, hi + f * jump
        elif kind == "crop":
            lo, hi = lo + layer.crop[axis][0] * jump, hi + layer.crop[axis][0] * jump
        elif kind in ("concat", "add", "mul"):
            others = [seen[name] for name in layer.inputs]
            lo, hi = min(o[0] for o in others), max(o[1] for o in others)
        seen[layer.name] = (lo, hi, jump)
    lo, hi, _ = seen[plan.main_layers[-1].name]
    return hi - lo + 1


def _conv(maps: list[Interval], kernel: int, stride: int, before: int, after: int) -> list[Interval]:
    """Intervals after a convolution or pooling (a padded one clips its window at the map's edges)."""
    n = len(maps)
    out = []
    for i in range((n + before + after - kernel) // stride + 1):
        start = i * stride - before
        part = maps[max(0, start) : min(n, start + kernel)]
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


def input_windows(plan: Plan, axis: int, layer: str | None = None) -> list[Interval]:
    """The interval of input pixels each output pixel depends on, along ``axis``, at the plan's input size.

    Each layer maps every pixel's interval to the union of the intervals it reads — convolutions and pooling,
    up-sampling (:func:`upsampled_sources`), pads (taken as the edge pixel repeated: a superset for every padding
    mode near that edge), crops, concatenations and sums. :func:`receptive_field` and :func:`reach` read it.

    Args:
        plan: a core plan (``make_plan(..., core=True)``; a mirroring network's mirror and output crop are skipped).
        axis: the spatial axis.
        layer: the layer whose pixels to follow (default: the output).

    Returns:
        ``(first, last)`` input pixel per output pixel.
    """
    maps: dict[str, list[Interval]] = {"input": [(i, i) for i in range(plan.core_input_size[axis])]}
    last = "input"
    for step in plan.layers:
        current = maps[step.inputs[0]]
        kind = step.kind
        if kind in ("mirror", "output_crop"):
            maps[step.name] = current
            continue
        if kind in ("conv", "max_pool", "avg_pool"):
            before, after = step.pads[axis] if step.pads else (0, 0)
            current = _conv(current, step.kernel[axis], step.stride[axis], before, after)
        elif kind == "conv_transpose" and step.pads:  # fine pixel o: coarse pixels (o + p − k + 1)/f to (o + p)/f
            f, k, p = step.stride[axis], step.kernel[axis], step.pads[axis][0]
            spans = [(max(0, -(-(o + p - k + 1) // f)), min(len(current) - 1, (o + p) // f))
                     for o in range(len(current) * f)]
            current = [(min(c[0] for c in current[a : b + 1]), max(c[1] for c in current[a : b + 1]))
                       for a, b in spans]
        elif kind == "conv_transpose":  # kernel = stride = f: fine pixel i comes from coarse pixel i // f
            f = step.stride[axis]
            current = [current[i // f] for i in range(len(current) * f)]
        elif kind == "upsample":
            f = step.stride[axis]
            interpolation = "nearest" if step.mode == "nearest" else "linear"
            sources = [upsampled_sources(i, f, len(current), interpolation) for i in range(len(current) * f)]
            current = [(current[first][0], current[end][1]) for first, end in sources]
        elif kind == "pad":
            before, after = step.pads[axis]
            current = [current[0]] * before + current + [current[-1]] * after
        elif kind == "crop":
            before, after = step.crop[axis]
            current = current[before : len(current) - after]
        elif kind in ("concat", "add", "mul"):
            others = [maps[name] for name in step.inputs]
            current = [(min(o[0] for o in group), max(o[1] for o in group)) for group in zip(*others)]
        maps[step.name] = current
        last = step.name
    return maps[last if layer is None else layer]


def stitching(plan: Plan) -> Mode:
    """How tiles of the network are stitched: ``exact`` or ``blend`` (see :mod:`unetgen.inference.tiling`).

    Args:
        plan: any plan of the network.

    Returns:
        ``exact`` when no convolution pads and every norm acts on each pixel alone (none, or batch norm in eval
        mode), else ``blend``.
    """
    layers = plan.main_layers
    padded = any(layer.kind == "conv" and layer.pads_anything for layer in layers)
    return "exact" if not padded and _local_norms(layers) else "blend"


def _local_norms(layers: tuple[Layer, ...]) -> bool:
    """Whether every norm acts on each pixel alone (in eval mode)."""
    return all(layer.mode in LOCAL_NORMS for layer in layers if layer.kind == "norm")


def edge_margins(plan: Plan) -> tuple[tuple[int, int], ...]:
    """Output pixels at a tile's near and far edge that may differ from the whole-image pass, per axis.

    Followed through the core network's layers: a tile is a window of the (mirrored) image, so its input has no
    spoilt pixel; each layer that makes up pixels past its input's edge (a padded convolution, the far-side pad of
    ``upsample_conv``, linear interpolation's clamping) spoils them, and every later layer spreads the spoilt
    pixels as far as it reads. ``transpose`` up-sampling and valid convolutions spoil none of their own. A network
    that mirrors each tile it is given (``output: same``, run whole) also spoils what its mirror reaches
    (:func:`reach`).

    With instance, group or layer norm no tile output equals the whole-image pass anywhere, and there are none.

    Args:
        plan: any plan of the network; a core plan (``make_plan(..., core=True)``) for tiles run on the core.

    Returns:
        ``(near, far)`` pixels of each tile's output to leave to the neighbouring tiles, per axis.
    """
    base = core_plan(plan)
    if not _local_norms(base.layers):  # each tile is normalised by its own statistics: no tile is exact anywhere
        return ((0, 0),) * len(base.lattices)
    windows = reach(plan) if plan.same_output else None
    margins = []
    for axis, grid in enumerate(base.lattices):
        # A probe wide enough that the spoilt pixels from the two edges never meet.
        probe = core_plan(plan, axis, grid.at_least(2 * grid.border + 4 * _field_bound(base, axis) + 2 * grid.step))
        # Run whole, the network mirrors each tile: every pixel whose window reaches past the tile's edge is
        # spoilt (the reach covers what padded convolutions spoil), plus what pads inside the network spoil.
        near, far = _spoilt(probe, axis, padded_convs=windows is None)
        if windows is not None:
            near, far = near + windows[axis][0], far + windows[axis][1]
        margins.append((near, far))
    return tuple(margins)


def _spoilt(plan: Plan, axis: int, padded_convs: bool = True) -> tuple[int, int]:
    """Pixels at the near and far edge of the output that see a made-up pixel, along ``axis`` (counting the
    padding of convolutions only when ``padded_convs``)."""
    shapes = {"input": plan.core_input_size[axis]}
    spoilt: dict[str, tuple[int, int]] = {"input": (0, 0)}
    for layer in plan.main_layers:
        near, far = spoilt[layer.inputs[0]]
        n = shapes[layer.inputs[0]]
        kind = layer.kind
        if kind in ("conv", "max_pool", "avg_pool"):
            k, s = layer.kernel[axis], layer.stride[axis]
            before, after = layer.pads[axis] if layer.pads else (0, 0)
            out = (n + before + after - k) // s + 1
            # output o reads input pixels [o·s − before, o·s − before + k − 1]: spoilt where that reaches a spoilt
            # pixel, or past the edge into the padding (when that counts)
            if near > 0 or (before > 0 and padded_convs):
                near = min(out, -(-(near + before) // s))
            if far > 0 or (after > 0 and padded_convs):  # the first output that reads pixel n − far or beyond
                far = min(out, out - max(0, -(-(n - far - k + 1 + before) // s)))
        elif kind == "conv_transpose" and layer.pads:
            near, far = _spoilt_transpose(near, far, n, layer, axis, padded_convs)
        elif kind == "conv_transpose" or (kind == "upsample" and layer.mode == "nearest"):
            f = layer.stride[axis]
            near, far = near * f, far * f
        elif kind == "upsample":
            near, far = _spoilt_linear(near, far, n, layer.stride[axis])
        elif kind == "pad":
            before, after = layer.pads[axis]
            near, far = near + before, far + after
        elif kind in ("crop", "output_crop"):
            before, after = layer.crop[axis]
            near, far = max(0, near - before), max(0, far - after)
        elif kind in ("concat", "add", "mul"):
            near = max(spoilt[name][0] for name in layer.inputs)
            far = max(spoilt[name][1] for name in layer.inputs)
        spoilt[layer.name] = (near, far)
        shapes[layer.name] = layer.shape[1 + axis]
    return spoilt[plan.main_layers[-1].name]


def _spoilt_transpose(near: int, far: int, n: int, layer: Layer, axis: int, padded: bool) -> tuple[int, int]:
    """Spoilt pixels after a padded transposed convolution of a map of ``n`` pixels: fine pixel ``o`` reads coarse
    pixels ``(o + p − k + 1)/f`` (rounded up) to ``(o + p)/f`` (rounded down); it is spoilt where those reach a
    spoilt pixel, or past the map's edge (which a whole-image pass has, when padding counts)."""
    f, k, p = layer.stride[axis], layer.kernel[axis], layer.pads[axis][0]
    out = n * f
    new_near = new_far = 0
    if near > 0 or padded:
        low = near  # the first coarse pixel that is neither spoilt nor made up
        while new_near < out and -(-(new_near + p - k + 1) // f) < low:
            new_near += 1
    if far > 0 or padded:
        high = n - far  # the first coarse pixel past the good ones
        while new_far < out and (out - 1 - new_far + p) // f >= high:
            new_far += 1
    return new_near, new_far


def _spoilt_linear(near: int, far: int, n: int, f: int) -> tuple[int, int]:
    """Spoilt pixels after linear up-sampling by ``f`` of a map of ``n`` pixels: those that read a spoilt pixel,
    or a clamped one (the whole-image pass reads a real neighbour there)."""
    out = n * f
    new_near = 0
    for o in range(out):
        numerator = 2 * o + 1 - f
        first, fraction = divmod(numerator, 2 * f) if numerator > 0 else (0, 0)
        if numerator < 0 or first < near:
            new_near = o + 1
        else:
            break
    new_far = 0
    for o in reversed(range(out)):
        numerator = 2 * o + 1 - f
        first, fraction = divmod(numerator, 2 * f)
        reads_past = fraction and first + 1 > n - 1
        last = first + 1 if fraction else first
        if reads_past or last >= n - far:
            new_far = out - o
        else:
            break
    return new_near, new_far


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
    grids = plan.lattices
    fields = receptive_field(plan)
    result = []
    for axis, (grid, field) in enumerate(zip(grids, (f.size for f in fields))):
        # Outputs ``field + step`` from either edge of the probe see no edge; one period of them is enough.
        size = grid.at_least(2 * grid.border + 2 * field + 3 * grid.step)
        if size > _REACH_PROBE_LIMIT or not all(f.exact for f in fields):
            result.append((field - 1, field - 1))  # a window of ``field`` pixels reaches no further to either side
            continue
        windows = input_windows(core_plan(plan, axis, size), axis)
        before = after = 0
        for index in range(field + grid.step, len(windows) - field - grid.step):
            centre = index + grid.border
            lo, hi = windows[index]
            before, after = max(before, centre - lo), max(after, hi - centre)
        result.append((before, after))
    return tuple(result)


#: Largest probe (pixels along one axis) :func:`reach` follows pixel by pixel; beyond it, the receptive field bounds it.
_REACH_PROBE_LIMIT = 8192


@dataclass(frozen=True)
class HeadGrid:
    """Where one output's pixels lie over the main output, along one axis: pixel ``i`` of the output is centred on
    pixel ``offset + i·step`` of the main output's grid (the main output itself: offset 0, step 1).

    Attributes:
        offset: the main-output pixel under the output's pixel 0 (negative where a coarse head sees past it).
        step: main-output pixels between neighbouring pixels of the output (the head's down-sampling).
        first: the first of the output's pixels whose centre lies over the main output.
        count: how many of its pixels do, from ``first`` on.
    """

    offset: int
    step: int
    first: int
    count: int


def head_grids(plan: Plan) -> tuple[tuple[HeadGrid, ...], ...]:
    """For each output (:attr:`Plan.heads`: the main one, then the auxiliary heads of deep supervision), where its
    pixels lie over the main output, per axis: what a deep-supervision loss needs to sample each head's target from
    the main output's (down-sampled for ``same`` networks; cropped consistently for ``valid`` ones).

    Every map of the U is centred on the input (pooling exact sizes and cropping centrally keep centres), so pixel
    ``i`` of an ``m``-pixel head ``J`` input pixels apart is centred at ``(M − 1)/2 + (i − (m − 1)/2)·J`` in the
    ``M``-pixel main output's grid; the target pixel is that centre rounded up, which for ``same`` networks is what
    nnU-Net's ``nearest-exact`` down-sampling picks (``i·J + J/2``).

    Args:
        plan: the network at an input size (``output: crop``; deep supervision needs it).

    Returns:
        One tuple of :class:`HeadGrid` (one per axis) per output.
    """
    result = []
    for head in plan.heads:
        grids = []
        for axis in range(len(plan.lattices)):
            jump = _jump(plan, axis, head.name)
            main, size = plan.output_size[axis], head.shape[1 + axis]
            offset = ((main - 1) - (size - 1) * jump + 1) // 2
            inside = [i for i in range(size) if 0 <= offset + i * jump < main]
            grids.append(HeadGrid(offset, jump, inside[0] if inside else 0, len(inside)))
        result.append(tuple(grids))
    return tuple(result)


def attention_layers(plan: Plan) -> dict[str, str]:
    """The attention gates of ``plan`` (``skip_gate``): ``{"decoder.2.gate": name of the layer whose output is the
    map the gate multiplies its skip by, ...}``, deepest level first (the order the network runs them); with
    ``gates_per_level: 2``, ``decoder.2.gate.gates.0`` and ``decoder.2.gate.gates.1``."""
    return {layer.name[: -len(".mul")]: layer.inputs[1] for layer in plan.layers
            if layer.kind == "mul" and re.search(r"\.gate(\.gates\.\d+)?\.mul$", layer.name)}


def nearest_on_output(plan: Plan, name: str) -> tuple[tuple[int, ...], ...]:
    """For each axis, for each pixel of the main output, the pixel of layer ``name``'s map whose centre is nearest
    (a tie to the later one): how a map of a coarser grid (an attention gate's, say) is shown at the output's
    resolution, block by block.

    Every map of the U is centred on the input (see :func:`head_grids`): pixel ``i`` of an ``m``-pixel map ``J``
    input pixels apart is centred at ``(N − 1)/2 + (i − (m − 1)/2)·J``, and output pixel ``k`` of ``M`` at
    ``(N − 1)/2 + k − (M − 1)/2``; the nearest ``i`` is ``⌊(2k − M + 1 + J·m) / 2J⌋``, clamped to the map. Tiles
    whose inputs lie a multiple of the lattice step apart pick the same pixels, so stitched maps are seamless.

    Args:
        plan: the network at an input size.
        name: a layer of ``plan`` whose map has at most the input's resolution.

    Returns:
        One tuple of indices (as long as the output) per axis.
    """
    shape = plan.layer(name).shape[1:]
    result = []
    for axis, m in enumerate(shape):
        jump, out = _jump(plan, axis, name), plan.output_size[axis]
        result.append(tuple(min(m - 1, max(0, (2 * k - out + 1 + jump * m) // (2 * jump))) for k in range(out)))
    return tuple(result)


def _jump(plan: Plan, axis: int, name: str) -> int:
    """Input pixels between neighbouring pixels of layer ``name``'s output, along ``axis``."""
    jumps: dict[str, int] = {"input": 1}
    for layer in plan.layers:
        jump = jumps[layer.inputs[0]]
        if layer.kind in ("conv", "max_pool", "avg_pool"):
            jump *= layer.stride[axis]
        elif layer.kind in ("conv_transpose", "upsample"):
            jump //= layer.stride[axis]
        jumps[layer.name] = jump
    return jumps[name]
