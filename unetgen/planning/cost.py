"""Plan → cost: the multiply-accumulates and the peak memory of a pass, read from the plan's layers.

Pure integers. A training step's memory is replayed by :mod:`unetgen.planning.training`; this module holds the
inference rule. The memory rule is what eager PyTorch does with gradients off: each layer writes a new tensor unless
it works in place (:attr:`~unetgen.planning.plan.Layer.in_place`: views, in-place activations, dropout in eval
mode); a tensor is freed once the last layer that reads it — or holds it (:attr:`~unetgen.planning.plan.Layer.holds`)
— has run, and never the input, which the caller keeps. ``tests/test_cost.py`` checks the figures against the
bytes of live tensors in real passes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .plan import IN_PLACE_ACTIVATIONS, Layer, Plan
from .training import TrainingMemory, recomputed_layers, training_memory

__all__ = ["IN_PLACE_ACTIVATIONS", "Cost", "estimate", "layer_macs", "training_macs"]


@dataclass(frozen=True)
class Cost:
    """What one inference pass (or training step) of a plan costs.

    Attributes:
        macs: multiply-accumulates of the convolutions for one sample of an inference pass (a FLOP count is twice
            this; a training step's are :func:`training_macs`).
        activation_bytes: peak bytes of the tensors alive at once during one pass, the input included. For a
            training step: everything at the step's peak besides the weights and the optimizer state (the input and
            targets, activations, what autograd saved, gradients, temporaries).
        parameter_bytes: bytes of the weights (and norm buffers).
        batch: the batch size the memory figures are for.
        optimizer_bytes: a training step's optimizer state (0 for inference).
        training: a training step's figures in detail (None for inference).
    """

    macs: int
    activation_bytes: int
    parameter_bytes: int
    batch: int
    optimizer_bytes: int = 0
    training: TrainingMemory | None = None

    @property
    def flops(self) -> int:
        """Floating-point operations of the convolutions for one sample (2 × macs)."""
        return 2 * self.macs

    @property
    def peak_bytes(self) -> int:
        """Weights (plus optimizer state) plus the activation peak: what one pass or step needs in memory."""
        return self.activation_bytes + self.parameter_bytes + self.optimizer_bytes


def layer_macs(layer: Layer) -> int:
    """Multiply-accumulates of one layer for one sample (convolutions; every other kind counts 0)."""
    if layer.kind == "conv":
        return math.prod(layer.shape) * layer.cin * math.prod(layer.kernel)
    if layer.kind == "conv_transpose":  # each output pixel gets the taps of one kernel position per stride
        return math.prod(layer.shape) * layer.cin * math.prod(layer.kernel) // math.prod(layer.stride)
    return 0


def peak_activation_values(plan: Plan) -> int:
    """Peak number of values (per sample) alive at once in one pass, by the rule in this module's docstring."""
    layers = plan.main_layers
    buffer_of: dict[str, str] = {"input": "input"}  # tensor → the buffer it lives in (views share their input's)
    sizes: dict[str, int] = {"input": math.prod(plan.input_shape)}
    last_use: dict[str, int] = {}
    for index, layer in enumerate(layers):
        buffer_of[layer.name] = buffer_of[layer.inputs[0]] if layer.in_place else layer.name
        for name in layer.inputs + layer.holds:
            last_use[buffer_of[name]] = index
    live = {"input": sizes["input"]}
    total = peak = sizes["input"]
    for index, layer in enumerate(layers):
        buffer = buffer_of[layer.name]
        if buffer not in live:
            live[buffer] = math.prod(layer.shape)
            total += live[buffer]
            peak = max(peak, total)
        for name in set(buffer_of[n] for n in layer.inputs + layer.holds):
            if last_use.get(name) == index and name != "input" and name in live:
                total -= live.pop(name)
    return peak


def training_macs(plan: Plan, checkpoint: str | Sequence[int] | None = None) -> int:
    """Multiply-accumulates of one training step for one sample: the forward pass (auxiliary heads included), then
    for each convolution its weights' gradient (as many as its forward) and its input's gradient (as many again,
    except where its input needs none: the network's input); with ``checkpoint`` (levels, as
    :func:`estimate` takes them), the checkpointed levels' forward pass once more, recomputed in the backward."""
    recomputed = recomputed_layers(plan, checkpoint)
    total = 0
    for layer in plan.layers:
        macs = layer_macs(layer)
        total += 2 * macs if layer.inputs[0] in ("input", "pad_input") else 3 * macs
        total += macs if layer.name in recomputed else 0
    return total


def estimate(
    plan: Plan,
    batch: int = 1,
    bytes_per_value: int = 4,
    *,
    training: bool = False,
    optimizer: str | None = "sgd",
    precision: str = "fp32",
    device: str = "cuda",
    checkpoint: str | Sequence[int] | None = None,
) -> Cost:
    """Estimate the compute and memory of one inference pass of ``plan``, or of one training step.

    Args:
        plan: the network at an input size (for training: the patch size).
        batch: samples per pass (memory scales with it; ``macs`` is per sample).
        bytes_per_value: inference: 4 for float32, 2 for half precision.
        training: estimate one training step instead (:mod:`unetgen.planning.training`): weights, gradients,
            optimizer state, what autograd saves and the backward pass's peak.
        optimizer: training: ``sgd`` (with momentum), ``adam``, ``adamw``, or None (no state, no update).
        precision: training: ``fp32``, or autocast to ``bf16`` or ``fp16``.
        device: training: ``cuda`` or ``cpu`` (dropout's mask, autocast's op lists and the optimizer's
            implementation differ).
        checkpoint: training: levels run under activation checkpointing (``"levels"`` for every level, or level
            numbers), as :func:`unetgen.network.recompute.checkpoint_levels` runs them.

    Returns:
        The :class:`Cost`.

    Raises:
        UNetGenError: for an unknown optimizer, precision or device, or a level the network does not have.
    """
    if training:
        memory = training_memory(plan, batch, optimizer=optimizer, precision=precision, device=device,
                                 checkpoint=checkpoint)
        return Cost(
            macs=sum(layer_macs(layer) for layer in plan.main_layers),
            activation_bytes=memory.peak_bytes - memory.parameter_bytes - memory.optimizer_bytes,
            parameter_bytes=memory.parameter_bytes,
            batch=batch,
            optimizer_bytes=memory.optimizer_bytes,
            training=memory,
        )
    layers = plan.main_layers
    # Each batch norm keeps a running mean and variance (and a step counter, one value more).
    norm_buffers = sum(2 * layer.shape[0] + 1 for layer in plan.layers if layer.kind == "norm" and layer.mode == "batch")
    return Cost(
        macs=sum(layer_macs(layer) for layer in layers),
        activation_bytes=peak_activation_values(plan) * batch * bytes_per_value,
        parameter_bytes=(plan.parameters + norm_buffers) * bytes_per_value,
        batch=batch,
    )
