"""Plan → cost: the multiply-accumulates and the peak memory of an inference pass, read from the plan's layers.

Pure integers. The memory rule is what eager PyTorch does with gradients off: each layer writes a new tensor unless
it works in place (:attr:`~unetgen.planning.plan.Layer.in_place`: views, in-place activations, dropout in eval
mode); a tensor is freed once the last layer that reads it — or holds it (:attr:`~unetgen.planning.plan.Layer.holds`)
— has run, and never the input, which the caller keeps. ``tests/test_cost.py`` checks the figures against the
bytes of live tensors in real passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .plan import IN_PLACE_ACTIVATIONS, Layer, Plan

__all__ = ["IN_PLACE_ACTIVATIONS", "Cost", "estimate", "layer_macs"]


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


def estimate(plan: Plan, batch: int = 1, bytes_per_value: int = 4) -> Cost:
    """Estimate the compute and memory of one inference pass of ``plan``.

    Args:
        plan: the network at an input size.
        batch: samples per pass (memory scales with it; ``macs`` is per sample).
        bytes_per_value: 4 for float32, 2 for half precision.

    Returns:
        The :class:`Cost`.
    """
    layers = plan.main_layers
    # Batch norm keeps a running mean and variance (approximated as two values per level's width).
    norm_buffers = 0
    if any(layer.kind == "norm" and layer.mode == "batch" for layer in layers):
        norm_buffers = 2 * sum(block.shape[0] for block in plan.blocks if block.name.startswith(("encoder.", "bottleneck")))
    return Cost(
        macs=sum(layer_macs(layer) for layer in layers),
        activation_bytes=peak_activation_values(plan) * batch * bytes_per_value,
        parameter_bytes=(plan.parameters + norm_buffers) * bytes_per_value,
        batch=batch,
    )
