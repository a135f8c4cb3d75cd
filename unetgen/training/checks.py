"""The checks of a training setup against the network, before anything is trained: the patch size (on the
network's lattice, its output inside every image), a batch norm that would see one value, and the memory of a step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import ResourceError, SizeError, UNetGenError
from ..planning.budget import budgeted_bytes
from ..planning.cost import estimate
from ..planning.limits import memory_limit, parse_bytes
from ..planning.plan import Plan, lattices, make_plan
from ..spec.fields import UNetSpec
from ..text import axis_names, human_bytes, size_text
from .sampling import PatchShape


def patch_plan(spec: UNetSpec, sizes: Sequence[tuple[int, ...]], requested: Sequence[int] | None) -> Plan:
    """The plan of the network's core at the training patch's size: the one asked for, checked, or the largest on
    the lattice that is at most the spec's size and whose output fits in every image.

    Args:
        spec: the network.
        sizes: the spatial sizes of the training images.
        requested: ``--patch-size``: one value for every axis, or one per axis; None: choose.

    Returns:
        The plan of the core (``make_plan(spec, patch, core=True)``).

    Raises:
        SizeError: for a size off the lattice, the wrong number of sizes, or an output larger than an image.
    """
    dims = spec.spatial_dims
    grids = lattices(spec)
    smallest = tuple(min(size[axis] for size in sizes) for axis in range(dims))
    if requested is None:
        cap = make_plan(spec).core_input_size
        chosen = []
        for axis, grid in enumerate(grids):
            largest = min(cap[axis], smallest[axis] + 2 * grid.border)
            if largest < grid.first:
                raise SizeError(
                    f"images: the smallest is {smallest[axis]} along {axis_names(dims)[axis]}, and the network's "
                    f"smallest patch ({grid.first}) has an output of {grid.first - 2 * grid.border}; give larger "
                    "images or a network with less border"
                )
            chosen.append(grid.first + (largest - grid.first) // grid.step * grid.step)
        return make_plan(spec, tuple(chosen), core=True)
    patch = tuple(requested) * dims if len(requested) == 1 else tuple(requested)
    shown = " ".join(str(n) for n in requested)
    if len(patch) != dims:
        raise SizeError(f"--patch-size {shown}: give one size, or {dims} (one per axis) for a {dims}D network")
    try:
        plan = make_plan(spec, patch, core=True)
    except SizeError as exc:
        raise SizeError(f"--patch-size {shown}: {str(exc).replace('; or set output: same', '')}") from None
    for axis, (out, least, grid) in enumerate(zip(plan.output_size, smallest, grids)):
        if out > least:
            fits = grid.first + (least + 2 * grid.border - grid.first) // grid.step * grid.step
            fix = f"use --patch-size {fits} or less" if fits >= grid.first else "give larger images"
            where = f" along {axis_names(dims)[axis]}" if dims > 1 else ""
            raise SizeError(
                f"--patch-size {shown}: its output is {size_text(plan.output_size)}, larger than the smallest image "
                f"({least}{where}); {fix}"
            )
    return plan


def patch_shape(plan: Plan) -> PatchShape:
    """The patch's input and output sizes from its plan."""
    return PatchShape(tuple(plan.input_size), tuple(plan.output_size))


def check_batch_norm(plan: Plan, batch: int) -> None:
    """Refuse a batch norm that would normalise a single value per channel (torch raises in training mode).

    Raises:
        SizeError: naming the layer, the batch and the patch, and the fix.
    """
    for layer in plan.layers:
        if layer.kind == "norm" and layer.mode == "batch" and batch * math.prod(layer.shape[1:]) == 1:
            raise SizeError(
                f"--batch-size {batch}: {layer.name} (batch norm) sees one value per channel (a "
                f"{size_text(layer.shape[1:])} map of {batch} sample) at patch {size_text(plan.input_size)}, and "
                "cannot normalise it; use "
                "--batch-size 2 or more, or a larger --patch-size"
            )


def check_memory(plan: Plan, batch: int, device: str, optimizer: str, precision: str) -> int:
    """Refuse a batch whose training step cannot fit: the plan's estimate of one step (:func:`unetgen.estimate`
    with ``training=True``: weights, gradients, the optimizer's state, what autograd keeps for the backward pass and
    the backward pass's peak) against the device's memory (a GPU's, or the memory limit on the CPU).

    Args:
        plan: the core's plan at the patch size.
        batch: patches per step (per process).
        device: ``cpu`` or ``cuda``.
        optimizer: ``sgd``, ``adam`` or ``sgd-poly`` (the state each keeps).
        precision: ``fp32``, ``bf16`` or ``fp16``.

    Returns:
        The estimate of one step's peak, in bytes.

    Raises:
        ResourceError: naming the estimate, the memory and the fix.
    """
    cost = estimate(plan, batch=batch, training=True, optimizer="adam" if optimizer == "adam" else "sgd",
                    precision=precision, device=device)
    if device == "cuda":
        limit = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        where = f"the GPU's {human_bytes(limit)}"
    else:
        limit = memory_limit()
        where = f"the memory limit of {human_bytes(limit)}"
    if limit and cost.peak_bytes > limit:
        raise ResourceError(
            f"--batch-size {batch} --patch-size {' '.join(map(str, plan.input_size))}: one training step needs about "
            f"{human_bytes(cost.peak_bytes)}, more than {where}; use a smaller --batch-size or --patch-size"
        )
    return cost.peak_bytes


#: The largest batch ``--memory`` chooses (a step of more patches than this is rarely what a U-Net wants).
MAX_MEMORY_BATCH = 64


def batch_for_memory(plan: Plan, memory: int | str, batch: int | None, device: str, optimizer: str,
                     precision: str, most: int = MAX_MEMORY_BATCH) -> int:
    """The batch of ``--memory``: the largest (up to :data:`MAX_MEMORY_BATCH`) whose training step fits the budget
    with the measured overhead (:func:`unetgen.planning.budget.budgeted_bytes`, what the planner budgets), or
    ``batch`` when given, checked against it.

    Args:
        plan: the core's plan at the patch size.
        memory: the budget of one step, per process (bytes or e.g. ``"4GiB"``).
        batch: the batch asked for, or None to choose it.
        device: ``cpu`` or ``cuda``.
        optimizer: ``sgd``, ``adam`` or ``sgd-poly``.
        precision: ``fp32``, ``bf16`` or ``fp16``.
        most: the largest batch to choose (the patches one process trains on per epoch: more would not be used).

    Returns:
        The batch.

    Raises:
        ResourceError: when the batch asked for, or a batch of one, does not fit, with what it needs.
    """
    budget = memory if isinstance(memory, int) else parse_bytes(str(memory))  # checked by TrainConfig.resolved

    def needs(n: int) -> int:
        cost = estimate(plan, batch=n, training=True, optimizer="adam" if optimizer == "adam" else "sgd",
                        precision=precision, device=device)
        return budgeted_bytes(plan, cost)

    patch = " ".join(map(str, plan.input_size))
    if batch is not None:
        if needs(batch) > budget:
            raise ResourceError(
                f"--batch-size {batch} --patch-size {patch}: one training step needs {human_bytes(needs(batch))} with "
                f"the measured overhead, more than --memory {human_bytes(budget)}; leave out --batch-size to get the "
                "largest that fits, or give a smaller --patch-size"
            )
        return batch
    if needs(1) > budget:
        raise ResourceError(
            f"--memory {human_bytes(budget)}: even a batch of one {size_text(plan.input_size)} patch needs "
            f"{human_bytes(needs(1))} with the measured overhead; give a smaller --patch-size or a larger --memory"
        )
    chosen = 1
    while chosen < min(most, MAX_MEMORY_BATCH) and needs(chosen + 1) <= budget:
        chosen += 1
    return chosen


def check_device(device: str) -> None:
    """Refuse ``cuda`` where torch sees no GPU.

    Raises:
        UNetGenError: with the fix.
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise UNetGenError("--device cuda: torch sees no CUDA device here (torch.cuda.is_available() is False); use "
                           "--device cpu, or install a CUDA build of torch")


__all__ = ["MAX_MEMORY_BATCH", "patch_plan", "patch_shape", "check_batch_norm", "check_memory", "batch_for_memory",
           "check_device"]
