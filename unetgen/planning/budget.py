"""Memory budgets that hold in measured memory: the estimates of live tensors, plus the overhead a process adds.

The estimates (:func:`unetgen.estimate`) count the bytes of tensors alive at once, exactly. A process needs more:
the CPU's convolution library (oneDNN) writes a convolution's output in its blocked layout and reorders it, and
keeps scratch buffers; glibc's allocator keeps freed blocks resident for reuse. ``benchmarks/memory_budget.py``
and ``benchmarks/training_memory.py`` measure what a pass and a training step add to the process's peak resident
memory against the estimate: a share of it (oneDNN's blocked layouts, the allocator's slack; 2–16% for single
passes of the paper network's tiles, up to 28% measured in ``predict``, 10% for a training step), and a part that
small passes of large networks show (27–31 MiB beside 380² tiles of the paper network): oneDNN copies a
convolution's weights into its blocked layout on each call, so one layer's weights (the largest: 36 MiB in the
paper network's bottleneck) are alive once more. A budget counts the weights, plus the factor below times the
rest, plus the largest layer's weights:

* an inference pass (``predict --memory``, :func:`unetgen.inference.tiling.plan_tiles`): the weights, plus
  :data:`INFERENCE_OVERHEAD` × the activations (input and output included);
* a training step (the planner, :mod:`unetgen.planning.planner`): the weights, the optimizer state and the batch,
  plus :data:`TRAINING_OVERHEAD` (per device) × the rest of the step's peak (activations, what autograd saved,
  gradients); on the CPU also what oneDNN copies (:func:`largest_map_bytes`: in 2D networks without norms, the
  input of the largest convolution followed by an activation, per sample; the paper network's step added 1.10× its
  own estimate for it, networks with norms and 3D networks 0.99–1.02×). This holds for a process whose allocator
  returns freed blocks: by default glibc serves blocks under its dynamic mmap threshold (which rises up to 32 MiB
  as large blocks are freed) from its heap, where freed blocks stay resident and fragment (planned steps used
  102–132% of their budgets that way). ``unetgen train`` therefore fixes the threshold at 1 MiB
  (:func:`unetgen.hardware.return_freed_memory`); a training loop of your own keeps the promise after calling that
  function (or with ``MALLOC_MMAP_THRESHOLD_=1048576`` in the environment).

On a GPU the caching allocator rounds blocks up and cuDNN takes workspaces, and the CUDA context (a few hundred MiB,
outside PyTorch's allocator) comes on top: leave room for it in the budget you give.
"""

from __future__ import annotations

import math

from .cost import Cost
from .plan import Plan

__all__ = ["INFERENCE_OVERHEAD", "TRAINING_OVERHEAD", "budgeted_bytes", "largest_layer_bytes", "largest_map_bytes"]

#: What a pass adds to the process's peak resident memory, as a multiple of its activation estimate: at most 1.16
#: for single passes (paper network, tiles of 380² to 1020², its core and ``unetgen.optimize``'s copy) and 1.28 in
#: ``predict`` (tile cutting, stitching, many passes); rounded up (benchmarks/README.md).
INFERENCE_OVERHEAD = 1.3
#: The same for a training step, over the estimate's step peak less weights, optimizer state and batch, by device:
#: on the CPU, with freed blocks returned (:func:`unetgen.hardware.return_freed_memory`, which ``unetgen train``
#: calls) and oneDNN's copy counted apart (:func:`largest_map_bytes`), 0.995–1.02 measured over eight networks
#: (2D and 3D, with and without norms): 1.03; on CUDA 1.15, not measured on a GPU (none was available; PyTorch's
#: caching allocator rounds blocks up and may fragment too).
TRAINING_OVERHEAD = {"cpu": 1.03, "cuda": 1.15}


def largest_layer_bytes(plan: Plan) -> int:
    """The largest convolution's weights, in fp32 bytes: the copy oneDNN makes of them in its blocked layout."""
    return max((layer.params * 4 for layer in plan.layers if layer.kind in ("conv", "conv_transpose")), default=0)


def largest_map_bytes(plan: Plan) -> int:
    """What oneDNN copies on top of a CPU training step, per sample, in fp32 bytes: in 1D and 2D networks, the input
    of the largest convolution whose output goes straight into an activation (no norm between); 0 in 3D.

    Measured (``benchmarks/cpu_training_overhead.py``; fresh processes, freed blocks returned): the step of a 2D
    network without norms added one such input beyond its estimate (the paper network 76.9 MiB for 79.3; at 512²
    with same padding 128.0 for 128.0; a planned nnU-Net 2D network without its norms 60.0 for 60.0), the same
    networks with instance or batch norm −4 to 10 MiB (at most 0.9% of the step), and 3D networks −3 to 0 MiB with
    or without norms (within :data:`TRAINING_OVERHEAD`'s 3%).
    """
    if len(plan.input_size) > 2:
        return 0
    consumers: dict[str, set[str]] = {}
    for layer in plan.layers:
        for source in layer.inputs:
            consumers.setdefault(source, set()).add(layer.kind)
    shapes = {layer.name: layer.shape for layer in plan.layers}
    return max((math.prod(shapes.get(layer.inputs[0], plan.input_shape)) * 4 for layer in plan.layers
                if layer.kind == "conv" and "act" in consumers.get(layer.name, ())), default=0)


def budgeted_bytes(plan: Plan, cost: Cost) -> int:
    """What a pass or training step of ``plan`` takes against a memory budget: the estimate ``cost``, with the
    measured overhead on what the pass or step allocates (not on the weights, the optimizer state or, for training,
    the batch), and one more copy of the largest layer's weights."""
    memory = cost.training
    extra = largest_layer_bytes(plan)
    if memory is None:
        return cost.parameter_bytes + math.ceil(INFERENCE_OVERHEAD * cost.activation_bytes) + extra
    fixed = memory.parameter_bytes + memory.optimizer_bytes + memory.input_bytes
    if memory.device == "cpu":
        extra += largest_map_bytes(plan) * cost.batch
    return fixed + math.ceil(TRAINING_OVERHEAD[memory.device] * (memory.peak_bytes - fixed)) + extra
