"""Measuring a pass or a training step: the peak of the bytes of tensors alive at once, the figure
:func:`unetgen.estimate` predicts (with ``training=True`` for a step: :func:`training_step_peak`).

The tests check the estimates against it exactly, and ``benchmarks/`` reports it beside the process's peak
resident memory (which adds the allocator's and oneDNN's overhead). A training step here is the one the training
estimate assumes: :func:`make_optimizer`'s optimizers, :func:`segmentation_loss`, :func:`training_step`.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from ..planning.plan import make_plan


class LiveBytes(TorchDispatchMode):
    """A dispatch mode that tracks the bytes of the tensor storages alive at once during the ops it sees.

    ``with LiveBytes() as mode: model(x)`` then ``mode.peak``. Storages are counted once each, from the op that
    returns them until they are freed; call :meth:`track` first for tensors made before the mode (the input).

    Attributes:
        live: bytes alive now.
        peak: the most bytes alive at once so far.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.seen: set[int] = set()

    def track(self, tensor: torch.Tensor) -> None:
        """Count ``tensor``'s storage (once) until it is freed."""
        storage = tensor.untyped_storage()
        key = storage._cdata  # the storage itself: unique while alive, also on the meta device (no data)
        if key in self.seen or storage.nbytes() == 0:
            return
        self.seen.add(key)
        self.live += storage.nbytes()
        self.peak = max(self.peak, self.live)

        def gone(key: int = key, nbytes: int = storage.nbytes()) -> None:
            self.seen.discard(key)
            self.live -= nbytes

        weakref.finalize(storage, gone)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.track(tensor)
        return out


#: The optimizers the training estimate knows, as built for a measured step: SGD as nnU-Net trains (momentum 0.99,
#: Nesterov, weight decay 3e-5), Adam and AdamW with PyTorch's defaults.
def make_optimizer(name: str, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer ``name`` (``sgd``, ``adam``, ``adamw``) over ``parameters``, as the training estimate assumes it.

    Raises:
        ValueError: for another name.
    """
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=1e-3)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=1e-3)
    raise ValueError(f"optimizer {name!r}: expected sgd, adam or adamw")


def segmentation_loss(outputs: torch.Tensor | list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    """Cross-entropy over the channels of each output against its integer targets, weighted 1, 1/2, 1/4, ... from
    the highest resolution down and normalised (nnU-Net's deep-supervision weights): the loss the training estimate
    assumes."""
    heads = outputs if isinstance(outputs, list) else [outputs]
    weights = [0.5**i for i in range(len(heads))]
    total = sum(weights)
    losses = [w / total * F.cross_entropy(o, t) for w, o, t in zip(weights, heads, targets)]
    return sum(losses[1:], losses[0])


def random_targets(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Random class targets (int64) for each output of ``model`` on ``x`` in training mode, from the plan at
    ``x``'s size."""
    spec = model.spec  # type: ignore[attr-defined]
    sized = make_plan(spec, tuple(x.shape[2:]))
    shapes = [sized.output_size] + [layer.shape[1:] for layer in sized.heads[1:]]
    classes = spec.out_channels
    return [torch.randint(0, classes, (x.shape[0], *shape), device=x.device) for shape in shapes]


PRECISION_TYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def training_step(model: torch.nn.Module, x: torch.Tensor, targets: list[torch.Tensor],
                  optimizer: torch.optim.Optimizer | None, precision: str = "fp32") -> None:
    """One training step: ``zero_grad(set_to_none=True)``, forward (autocast for bf16/fp16), loss, backward, step."""
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
    else:
        model.zero_grad(set_to_none=True)
    if precision == "fp32":
        loss = segmentation_loss(model(x), targets)
    else:
        with torch.autocast(x.device.type, dtype=PRECISION_TYPES[precision]):
            loss = segmentation_loss(model(x), targets)
    loss.backward()
    del loss
    if optimizer is not None:
        optimizer.step()


def training_step_peak(model: torch.nn.Module, x: torch.Tensor, targets: list[torch.Tensor],
                       optimizer: str | None = "sgd", precision: str = "fp32") -> int:
    """The peak of live tensor bytes in a training step after the first (the optimizer's state exists, the
    gradients are set to None): what :func:`unetgen.estimate` predicts with ``training=True``.

    Weights, buffers, optimizer state, ``x`` and ``targets`` are counted from the start.
    """
    model.train()
    built = make_optimizer(optimizer, model.parameters()) if optimizer else None
    training_step(model, x, targets, built, precision)  # makes the optimizer's state
    if built is not None:
        built.zero_grad(set_to_none=True)
    else:
        model.zero_grad(set_to_none=True)
    mode = LiveBytes()
    for tensor in [*model.parameters(), *model.buffers(), x, *targets]:
        mode.track(tensor)
    if built is not None:
        for state in built.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    mode.track(value)
    with mode:
        training_step(model, x, targets, built, precision)
    return mode.peak
