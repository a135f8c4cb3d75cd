"""Data + memory budget → a network: nnU-Net's topology rules, with the patch and batch sized by the exact training
estimate. Pure integers, no torch.

The topology follows nnU-Net v2's planner (Isensee et al. 2021; nnunetv2 2.8.1,
``experiment_planning/experiment_planners/network_topology.py: get_pool_and_conv_props`` and
``default_experiment_planner.py: get_plans_for_configuration``), re-implemented here and checked against it:

* the first patch has the aspect of the voxel spacing (a 256³ or 2048² box in physical units), at most the median
  image along each axis;
* each axis is pooled while its feature map is at least twice the minimum edge (4; three times for a single axis
  left) and its spacing is within 2× of the finest, then the spacing doubles; a convolution's kernel is 1 along an
  axis until its spacing comes within 2× of the finest, then 3; the patch is padded to a multiple of the pooling;
* features start at 32 and double to a cap (320 in 3D, 512 in 2D); strided convolutions, instance norm, leaky ReLU,
  two convolutions per stage, deep supervision on every decoder level but the lowest.

What differs is the sizing. nnU-Net shrinks the patch until a proportional estimate (a sum of feature-map sizes,
calibrated once on a reference GPU) fits, then sets the batch from the ratio. Here the patch is shrunk by the same
rule until the exact training estimate (:func:`unetgen.estimate` with ``training=True``, plus the measured overhead:
:func:`unetgen.planning.budget.budgeted_bytes`) fits at the smallest batch (2), the batch is the largest that fits,
and neighbouring patches (one pooling multiple more or less per axis) are tried while the step fills more of the
budget, never more than all of it: at least :data:`FILL` is the aim, and the search goes past it, since a step's
measured memory is below its budgeted figure (the overhead factor is a bound). :func:`nnunet_reference` computes
nnU-Net's own choice for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import UNetGenError
from ..spec.fields import UNetSpec
from ..text import human_bytes, size_text
from .budget import TRAINING_OVERHEAD, budgeted_bytes
from .cost import estimate, training_macs
from .plan import lattices, make_plan

__all__ = [
    "FILL",
    "Candidate",
    "PlannedNetwork",
    "Topology",
    "fingerprint_inputs",
    "initial_patch",
    "network_spec",
    "nnunet_feature_map_size",
    "nnunet_reference",
    "plan_for",
    "pool_and_conv_props",
]

#: The least share of the budget a planned training step fills (the issue's target).
FILL = 0.85
#: nnU-Net's constants (nnunetv2 2.8.1, ExperimentPlanner.__init__).
MIN_FEATURE_MAP = 4
BASE_FEATURES = 32
MAX_FEATURES = {2: 512, 3: 320}
MIN_BATCH = 2
MAX_DATASET_COVERED = 0.05
ANISOTROPY_THRESHOLD = 3
REFERENCE_VALUE = {2: 85_000_000, 3: 560_000_000}
REFERENCE_BATCH = {2: 12, 3: 2}
REFERENCE_GB = 8
#: The most samples per step the planner considers.
MAX_BATCH = 1024


@dataclass(frozen=True)
class Topology:
    """A U-Net's pooling and kernels for a patch, as nnU-Net's ``get_pool_and_conv_props`` returns them.

    Attributes:
        pools_per_axis: how many times each axis is pooled.
        strides: per stage, the stride per axis (the first stage's all 1).
        kernels: per stage, the kernel per axis.
        patch: the patch, padded to a multiple of ``divisible_by``.
        divisible_by: per axis, ``2 ** pools_per_axis``.
    """

    pools_per_axis: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    kernels: tuple[tuple[int, ...], ...]
    patch: tuple[int, ...]
    divisible_by: tuple[int, ...]

    @property
    def stages(self) -> int:
        return len(self.strides)


def pool_and_conv_props(
    spacing: Sequence[float], patch: Sequence[int], min_feature_map: int = MIN_FEATURE_MAP, max_pools: int = 999999
) -> Topology:
    """nnU-Net's ``get_pool_and_conv_props``: which axes each stage pools, the kernels, and the padded patch.

    Args:
        spacing: voxel spacing per axis.
        patch: the patch per axis.
        min_feature_map: the least edge of a feature map in the bottleneck.
        max_pools: the most poolings of one axis.

    Returns:
        The :class:`Topology`.
    """
    dims = len(spacing)
    current_spacing = [float(s) for s in spacing]
    current_size = [n for n in patch]  # nnU-Net keeps a median's fraction (111.5) until it pads
    strides: list[tuple[int, ...]] = [(1,) * dims]
    kernels: list[tuple[int, ...]] = []
    pools = [0] * dims
    kernel = [1] * dims
    while True:
        valid = [i for i in range(dims) if current_size[i] >= 2 * min_feature_map]
        if not valid:
            break
        finest = min(current_spacing[i] for i in valid)
        valid = [i for i in valid if current_spacing[i] / finest < 2 and pools[i] < max_pools]
        if len(valid) == 1 and current_size[valid[0]] < 3 * min_feature_map:
            break
        if not valid:
            break
        for axis in range(dims):
            if kernel[axis] != 3 and current_spacing[axis] / min(current_spacing) < 2:
                kernel[axis] = 3
        stride = [1] * dims
        for axis in valid:
            stride[axis] = 2
            pools[axis] += 1
            current_spacing[axis] *= 2
            current_size[axis] = math.ceil(current_size[axis] / 2)
        strides.append(tuple(stride))
        kernels.append(tuple(kernel))
    kernels.append((3,) * dims)
    divisible = tuple(2**p for p in pools)
    padded = tuple(int(n + d - n % d) if n % d else int(n) for n, d in zip(patch, divisible))
    return Topology(tuple(pools), tuple(strides), tuple(kernels), padded, divisible)


def initial_patch(spacing: Sequence[float], median_shape: Sequence[float]) -> tuple[int, ...]:
    """nnU-Net's first patch: a 256³ (2D: 2048²) box scaled to the spacing's aspect, at most the median image."""
    inverse = [1 / s for s in spacing]
    side = {3: 256, 2: 2048}[len(spacing)]
    scale = (side ** len(spacing) / math.prod(inverse)) ** (1 / len(spacing))
    return tuple(min(_round(i * scale), m) for i, m in zip(inverse, median_shape))


def _round(value: float) -> int:
    """Python's ``round`` (to even at .5), as nnU-Net's ``round``."""
    return int(round(value))


def _features(stages: int, dims: int) -> list[int]:
    return [min(MAX_FEATURES[dims], BASE_FEATURES * 2**i) for i in range(stages)]


def nnunet_feature_map_size(topology: Topology, in_channels: int, classes: int) -> int:
    """nnU-Net's proportional memory estimate of a PlainConvUNet (dynamic-network-architectures'
    ``compute_conv_feature_map_size``): the sum of the feature maps of every convolution, transposed convolution
    and the segmentation layer, for one sample."""
    dims = len(topology.patch)
    features = _features(topology.stages, dims)
    size = list(topology.patch)
    total = 0
    for stage, stride in enumerate(topology.strides):
        size = [n // s for n, s in zip(size, stride)]
        total += 2 * features[stage] * math.prod(size)  # two convolutions per stage
    skips = []
    size = list(topology.patch)
    for stride in topology.strides[:-1]:
        size = [n // s for n, s in zip(size, stride)]
        skips.append(size)
    for stage in range(topology.stages - 1):
        skip = skips[-(stage + 1)]
        channels = features[-(stage + 2)]
        total += 2 * channels * math.prod(skip) + channels * math.prod(skip)  # two convolutions, the up-convolution
        if stage == topology.stages - 2:
            total += classes * math.prod(skip)
    del in_channels  # nnU-Net's count leaves out the input
    return total


def nnunet_reference(
    spacing: Sequence[float], median_shape: Sequence[float], in_channels: int, classes: int, memory_gb: float = 8,
    voxels: float | None = None,
) -> tuple[Topology, int]:
    """nnU-Net v2's own choice of patch and batch (its ``get_plans_for_configuration``): the first patch shrunk,
    one axis at a time (the one largest against the median image), until the proportional estimate fits the
    reference for batch 2; then the batch from the ratio, at most 5% of the dataset's voxels, at least 2.

    Args:
        spacing: voxel spacing per axis (after nnU-Net's transposition).
        median_shape: the median image in voxels at that spacing.
        in_channels: input channels.
        classes: output channels (labels, background included).
        memory_gb: nnU-Net's GPU memory target (``gpu_memory_target_in_gb``).
        voxels: the dataset's voxels, the 3D median image times the cases (for the 5% cap; also for a 2D
            configuration); None: no cap.

    Returns:
        ``(topology, batch)``.
    """
    dims = len(spacing)
    topology = pool_and_conv_props(spacing, initial_patch(spacing, median_shape))
    reference = REFERENCE_VALUE[dims] * memory_gb / REFERENCE_GB
    batch_reference = REFERENCE_BATCH[dims]
    size = nnunet_feature_map_size(topology, in_channels, classes)
    while size / batch_reference * 2 > reference:
        topology = _shrunk(spacing, median_shape, topology)
        size = nnunet_feature_map_size(topology, in_channels, classes)
    batch = _round(reference / size * batch_reference)
    if voxels is not None:
        batch = min(batch, _round(voxels * MAX_DATASET_COVERED / math.prod(topology.patch)))
    return topology, max(batch, MIN_BATCH)


def _shrunk(spacing: Sequence[float], median_shape: Sequence[float], topology: Topology) -> Topology:
    """nnU-Net's shrinking step: the axis largest against the median image loses one multiple of its pooling (the
    multiple of the patch one step smaller), and the topology is worked out again."""
    ratios = [p / m for p, m in zip(topology.patch, median_shape)]
    axis = sorted(range(len(ratios)), key=lambda i: ratios[i])[-1]  # numpy's argsort: the last of equal ratios
    patch = list(topology.patch)
    smaller = list(patch)
    smaller[axis] -= topology.divisible_by[axis]
    divisible = pool_and_conv_props(spacing, smaller).divisible_by
    patch[axis] -= divisible[axis]
    return pool_and_conv_props(spacing, patch)


def network_spec(topology: Topology, in_channels: int, classes: int, **overrides: Any) -> UNetSpec:
    """nnU-Net's PlainConvUNet for ``topology`` as a unetgen spec (``overrides`` change any field, e.g.
    ``padding="valid"``).

    Raises:
        SpecError: when ``overrides`` make an invalid spec.
    """
    dims = len(topology.patch)
    stages = topology.stages
    fields: dict[str, Any] = dict(
        name="planned", spatial_dims=dims, in_channels=in_channels, out_channels=classes, depth=stages,
        width=BASE_FEATURES, max_channels=MAX_FEATURES[dims], downsampling="conv", padding="same",
        kernel_sizes=[list(k) for k in topology.kernels], pool_sizes=[list(s) for s in topology.strides[1:]],
        upsampling="transpose", norm="instance", conv_bias=True, activation="leaky_relu", negative_slope=0.01,
        deep_supervision=max(stages - 2, 0), output="crop", input_size=list(topology.patch),
    )
    fields.update(overrides)
    return UNetSpec(**fields)


@dataclass(frozen=True)
class Candidate:
    """A patch and batch the planner considered.

    Attributes:
        patch: the patch.
        batch: samples per step.
        estimate_bytes: the training step's peak by the exact estimate.
        budgeted_bytes: with the measured overhead: what is held against the budget.
        flops: floating-point operations of one step (forward and backward convolutions).
        fits: whether it is within the budget.
        why: how the planner came to it.
    """

    patch: tuple[int, ...]
    batch: int
    estimate_bytes: int
    budgeted_bytes: int
    flops: int
    fits: bool
    why: str


@dataclass(frozen=True)
class PlannedNetwork:
    """What :func:`plan_for` chose, and how.

    Attributes:
        spec: the network, its ``input_size`` the patch.
        patch: the training patch.
        batch: samples per step.
        estimate_bytes: the step's peak by the exact estimate.
        budgeted_bytes: with the measured overhead.
        budget: the budget.
        candidates: every patch and batch considered, in order.
        nnunet_patch: nnU-Net's own patch for the same data and memory (its proportional rule).
        nnunet_batch: nnU-Net's own batch.
        options: optimizer, precision and device the step was sized for.
        note: why the budget is not filled to :data:`FILL`, when it is not.
    """

    spec: UNetSpec
    patch: tuple[int, ...]
    batch: int
    estimate_bytes: int
    budgeted_bytes: int
    budget: int
    candidates: tuple[Candidate, ...]
    nnunet_patch: tuple[int, ...]
    nnunet_batch: int
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def fill(self) -> float:
        """The share of the budget the step takes (with the overhead)."""
        return self.budgeted_bytes / self.budget

    def describe(self) -> str:
        """What was chosen, in a few lines."""
        lines = [
            f"patch {size_text(self.patch)}, batch {self.batch}: {human_bytes(self.estimate_bytes)} estimated, "
            f"{human_bytes(self.budgeted_bytes)} with the measured overhead = {self.fill:.0%} of the budget "
            f"({human_bytes(self.budget)})",
            f"nnU-Net's rule for the same data and memory: patch {size_text(self.nnunet_patch)}, batch "
            f"{self.nnunet_batch}",
        ]
        if self.note:
            lines.append(self.note)
        return "\n".join(lines) + "\n"

    def explain(self) -> str:
        """The candidates as a table: patch, batch, memory, FLOPs per step."""
        rows = [("patch", "batch", "estimate", "with overhead", "of budget", "GFLOP/step", "", "how")]
        for c in self.candidates:
            chosen = "← chosen" if (c.patch, c.batch) == (self.patch, self.batch) else ""
            rows.append((size_text(c.patch), str(c.batch), human_bytes(c.estimate_bytes), human_bytes(c.budgeted_bytes),
                         f"{c.budgeted_bytes / self.budget:.0%}", f"{c.flops / 1e9:,.0f}", chosen, c.why))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = []
        for row in rows:
            cells = [f"{cell:>{width}}" if 0 < index < 6 else f"{cell:<{width}}"
                     for index, (cell, width) in enumerate(zip(row, widths))]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines) + "\n"

    def yaml(self) -> str:
        """The spec as YAML, with comments that say how it was chosen."""
        options = self.options
        header = [
            "# Planned by `unetgen plan-for` (docs/planning.md): nnU-Net's topology rules (pooling while an axis's",
            "# spacing is within 2x of the finest and its map at least 8; kernel 1 along axes still too coarse;",
            "# features 32 doubling to a cap), the patch and batch sized by unetgen's exact training estimate.",
            f"# Training step ({options.get('optimizer') or 'no optimizer'}, {options.get('precision')}, "
            f"{options.get('device')}): patch {size_text(self.patch)}, batch {self.batch}: "
            f"{human_bytes(self.estimate_bytes)} estimated,",
            f"# {human_bytes(self.budgeted_bytes)} with the measured overhead (x{TRAINING_OVERHEAD[options['device']]} "
            f"on what the step allocates) = {self.fill:.0%} of {human_bytes(self.budget)}.",
            f"# nnU-Net's own rule: patch {size_text(self.nnunet_patch)}, batch {self.nnunet_batch}.",
            f"# Train with batch size {self.batch} on patches of input_size.",
        ]
        fields = self.spec.model_dump(mode="json", exclude_defaults=True)
        body = yaml.safe_dump(fields, sort_keys=False, default_flow_style=None, allow_unicode=True, width=118)
        return "\n".join(header) + "\n" + body


def fingerprint_inputs(fingerprint: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...], int, int]:
    """nnU-Net's planning inputs from a ``dataset_fingerprint.json``: the target spacing (the median, or for an
    anisotropic axis its 10th percentile), the median image resampled to it, the input channels and the cases;
    axes transposed as nnU-Net does (the coarsest first).

    Raises:
        UNetGenError: when the fingerprint lacks what planning needs.
    """
    try:
        spacings = [[float(s) for s in row] for row in fingerprint["spacings"]]
        shapes = [[int(n) for n in row] for row in fingerprint["shapes_after_crop"]]
        channels = len(fingerprint["foreground_intensity_properties_per_channel"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UNetGenError(f"fingerprint: {exc!r} missing or malformed; give nnU-Net's dataset_fingerprint.json "
                           "(spacings, shapes_after_crop, foreground_intensity_properties_per_channel)") from None
    if not spacings or len(spacings) != len(shapes) or any(len(r) != 3 for r in spacings + shapes):
        raise UNetGenError("fingerprint: spacings and shapes_after_crop must list three values per case")
    target = [_percentile([row[axis] for row in spacings], 50) for axis in range(3)]
    sizes = [_percentile([row[axis] for row in shapes], 50) for axis in range(3)]
    worst = max(range(3), key=lambda axis: target[axis])
    others = [axis for axis in range(3) if axis != worst]
    if target[worst] > ANISOTROPY_THRESHOLD * max(target[a] for a in others) and \
            sizes[worst] * ANISOTROPY_THRESHOLD < min(sizes[a] for a in others):
        tenth = _percentile([row[worst] for row in spacings], 10)
        if tenth < max(target[a] for a in others):
            tenth = max(max(target[a] for a in others), tenth) + 1e-5
        target[worst] = tenth
    resampled = [[_round_half_even(s / t * n) for n, s, t in zip(shape, spacing, target)]
                 for shape, spacing in zip(shapes, spacings)]
    median = [_percentile([row[axis] for row in resampled], 50) for axis in range(3)]
    order = [worst] + [axis for axis in range(3) if axis != worst]
    return tuple(target[axis] for axis in order), tuple(median[axis] for axis in order), channels, len(shapes)


def _percentile(values: Sequence[float], q: float) -> float:
    """numpy's default (linear) percentile."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _round_half_even(value: float) -> int:
    return int(round(value))


def plan_for(
    spacing: Sequence[float],
    median_shape: Sequence[float],
    channels: int,
    classes: int,
    memory: int,
    *,
    dims: int | None = None,
    optimizer: str | None = "sgd",
    precision: str = "fp16",
    device: str = "cuda",
    cases: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> PlannedNetwork:
    """Plan a network for data of ``spacing`` and ``median_shape`` and a training step within ``memory`` bytes.

    Args:
        spacing: voxel spacing per axis (3 values; 2 for 2D data).
        median_shape: the median image in voxels at that spacing.
        channels: input channels.
        classes: output channels (labels, background included).
        memory: the budget of one training step, in bytes (the measured overhead included).
        dims: 2 for a 2D network on 3D data (its last two axes); default the data's.
        optimizer: ``sgd``, ``adam``, ``adamw`` or None.
        precision: ``fp16`` (autocast, as nnU-Net trains: the default), ``bf16`` or ``fp32``.
        device: ``cuda`` or ``cpu``.
        cases: training cases: caps the batch at 5% of the dataset's voxels, as nnU-Net does (None: no cap).
        overrides: spec fields to change (``padding="valid"``, ``norm="batch"``, ...).

    Returns:
        The :class:`PlannedNetwork`.

    Raises:
        UNetGenError: for bad inputs, or a budget too small for the smallest patch at batch 2.
    """
    voxels = math.prod(float(n) for n in median_shape) * cases if cases is not None else None
    spacing, median_shape = _axes(spacing, median_shape, dims)
    if channels < 1 or classes < 1:
        raise UNetGenError(f"channels {channels}, classes {classes}: give at least one of each")
    overrides = dict(overrides or {})
    options = dict(optimizer=optimizer, precision=precision, device=device)
    evaluated: dict[tuple[tuple[int, ...], int], Candidate] = {}
    candidates: list[Candidate] = []

    def spec_at(patch: tuple[int, ...]) -> UNetSpec:
        """nnU-Net's network for ``patch``; a patch the network cannot take (valid padding) grows to the next size
        it takes along each axis."""
        topology = pool_and_conv_props(spacing, patch)
        spec = network_spec(topology, channels, classes, **overrides)
        taken = tuple(n if grid.contains(n) else grid.at_least(n) for n, grid in zip(patch, lattices(spec)))
        return spec if taken == patch else spec.replace(input_size=list(taken))

    specs: dict[tuple[int, ...], UNetSpec] = {}

    def cost(patch: tuple[int, ...], batch: int, why: str) -> Candidate:
        spec = spec_at(patch)
        patch = tuple(spec.input_size or patch)
        specs[patch] = spec
        key = (patch, batch)
        if key not in evaluated:
            plan = make_plan(spec, patch)
            step = estimate(plan, batch, training=True, **options)
            held = budgeted_bytes(plan, step)
            evaluated[key] = Candidate(patch, batch, step.peak_bytes, held, 2 * training_macs(plan) * batch,
                                       held <= memory, why)
            candidates.append(evaluated[key])
        return evaluated[key]

    def most_batch(patch: tuple[int, ...], why: str) -> Candidate | None:
        """The largest batch (from 2) that fits, or None."""
        if not cost(patch, MIN_BATCH, why).fits:
            return None
        batch_cap = MAX_BATCH  # nnU-Net's cap: a batch sees at most 5% of the dataset's voxels
        if voxels is not None:
            batch_cap = max(MIN_BATCH, min(MAX_BATCH, _round(voxels * MAX_DATASET_COVERED / math.prod(patch))))
        one, two = cost(patch, 1, "memory per sample (a probe)"), cost(patch, MIN_BATCH, why)
        per_sample = max(two.budgeted_bytes - one.budgeted_bytes, 1)
        guess = min(batch_cap, max(MIN_BATCH, MIN_BATCH + (memory - two.budgeted_bytes) // per_sample))
        while guess > MIN_BATCH and not cost(patch, guess, why).fits:
            guess -= 1
        while guess < batch_cap and cost(patch, guess + 1, why).fits:
            guess += 1
        return cost(patch, guess, why)

    topology = pool_and_conv_props(spacing, initial_patch(spacing, median_shape))
    best = most_batch(topology.patch, "nnU-Net's first patch")
    while best is None:  # shrink as nnU-Net does, one axis at a time
        smaller = _shrunk(spacing, median_shape, topology)
        if smaller.patch == topology.patch or min(smaller.patch) < 2 * MIN_FEATURE_MAP:
            raise UNetGenError(
                f"memory {human_bytes(memory)}: even a patch of {size_text(topology.patch)} needs "
                f"{human_bytes(cost(topology.patch, MIN_BATCH, '').budgeted_bytes)} at batch {MIN_BATCH}; give a "
                "larger budget, --precision bf16, or a smaller network"
            )
        topology = smaller
        best = most_batch(topology.patch, "shrunk (nnU-Net's rule)")
    # fill the budget: neighbouring patches (one pooling multiple more or less per axis), while it helps; past
    # FILL too, since the measured memory of a step is below its budgeted figure (the overhead is a bound)
    for _ in range(8):
        improved = best
        divisible = pool_and_conv_props(spacing, best.patch).divisible_by
        for deltas in _neighbours(len(best.patch)):
            patch = tuple(p + d * q for p, d, q in zip(best.patch, deltas, divisible))
            if any(n < q for n, q in zip(patch, divisible)) or any(
                    n > max(p, _ceil_to(m, q)) for n, p, m, q in zip(patch, best.patch, median_shape, divisible)):
                continue
            patch = pool_and_conv_props(spacing, patch).patch
            found = most_batch(patch, "a neighbour, to fill the budget")
            if found is not None and found.budgeted_bytes > improved.budgeted_bytes:
                improved = found
        if improved is best:
            break
        best = improved
    note = ""
    if best.budgeted_bytes < FILL * memory:
        note = (f"fills {best.budgeted_bytes / memory:.0%} of the budget (under {FILL:.0%}): no patch up to the median "
                "image" + (" and batch up to 5% of the dataset" if cases is not None else "") + " fills more")
    reference_patch, reference_batch = nnunet_reference(spacing, median_shape, channels, classes,
                                                        memory / 2**30, voxels)
    shape_words = "x".join(f"{n:g}" for n in median_shape)
    spec = specs[best.patch].replace(name="planned", description=(
        f"planned for spacing {'x'.join(f'{s:g}' for s in spacing)} mm, median image {shape_words} voxels, "
        f"{channels} input channel(s), {classes} classes, {human_bytes(memory)} per training step"))
    return PlannedNetwork(spec=spec, patch=best.patch, batch=best.batch, estimate_bytes=best.estimate_bytes,
                          budgeted_bytes=best.budgeted_bytes, budget=memory, candidates=tuple(candidates),
                          nnunet_patch=reference_patch.patch, nnunet_batch=reference_batch, options=options,
                          note=note)


def _axes(spacing: Sequence[float], median_shape: Sequence[float], dims: int | None) -> tuple[
        tuple[float, ...], tuple[float, ...]]:
    """The spacing and median shape of the axes the network sees (``dims=2`` on 3D data: the last two)."""
    spacing, shape = tuple(float(s) for s in spacing), tuple(float(n) for n in median_shape)
    if len(spacing) != len(shape) or len(spacing) not in (2, 3):
        raise UNetGenError(f"spacing {size_text(spacing)} and median shape {size_text(shape)}: give 2 or 3 values "
                           "each, as many of both")
    if any(not math.isfinite(s) or s <= 0 for s in spacing) or any(n < 1 for n in shape):
        raise UNetGenError("spacing and median shape: give positive values")
    if dims is not None and dims not in (2, 3):
        raise UNetGenError(f"dims {dims}: give 2 or 3")
    if dims == 3 and len(spacing) == 2:
        raise UNetGenError("dims 3: the data has two axes; give three spacings and sizes for a 3D network")
    if dims == 2 and len(spacing) == 3 or (dims is None and len(shape) == 3 and shape[0] <= 1):
        return spacing[1:], shape[1:]  # a 2D network on the in-plane axes (nnU-Net's 2d configuration)
    return spacing, shape


def _neighbours(dims: int) -> list[tuple[int, ...]]:
    """Steps of −1, 0 or +1 pooling multiple per axis, at least one +1 (the patch grows somewhere)."""
    steps: list[tuple[int, ...]] = [()]
    for _ in range(dims):
        steps = [s + (d,) for s in steps for d in (-1, 0, 1)]
    return [s for s in steps if 1 in s]


def _ceil_to(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)
